#!/usr/bin/env bash
# Build and test sailseg-plugins-hello exactly as an outside author would, outside the uv
# workspace: a fresh virtual environment in a temp dir, sailseg installed from a wheel built
# from this checkout (never the workspace's editable install), the plugin built into its own
# wheel and installed from it, then its pytest run from a copy of its folder.
# Exits non-zero when any step or test fails. Needs uv (or python3 -m venv + pip) and PyPI.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sailseg-hello-ci.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
unset VIRTUAL_ENV PYTHONPATH
export UV_NO_CONFIG=1 UV_PYTHON_DOWNLOADS=never

echo "--- copy the plugin out of the checkout: $WORK/hello"
mkdir "$WORK/hello"
tar -C "$HERE" --exclude=.venv --exclude=dist --exclude=__pycache__ --exclude=.pytest_cache \
    --exclude=ci.sh -cf - . | tar -C "$WORK/hello" -xf -

if command -v uv >/dev/null 2>&1; then
  echo "--- build wheels (uv build): sailseg from core/, the plugin from its copy"
  uv build -q --wheel --out-dir "$WORK/dist" "$ROOT/core"
  (cd "$WORK/hello" && uv build -q --wheel --out-dir "$WORK/dist" .)
  uv venv -q --python python3 "$WORK/venv"
  install() { uv pip install -q --python "$WORK/venv/bin/python" "$@"; }
else
  echo "--- build wheels (pip wheel)"
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q --upgrade pip
  "$WORK/venv/bin/pip" wheel -q --no-deps -w "$WORK/dist" "$ROOT/core" "$WORK/hello"
  install() { "$WORK/venv/bin/pip" install -q "$@"; }
fi

SAILSEG_WHL="$(ls "$WORK"/dist/sailseg-*.whl)"
HELLO_WHL="$(ls "$WORK"/dist/sailseg_plugins_hello-*.whl)"
echo "--- install $(basename "$SAILSEG_WHL") and $(basename "$HELLO_WHL") into a fresh venv"
install "sailseg[testing] @ file://$SAILSEG_WHL"
install "sailseg-plugins-hello[test] @ file://$HELLO_WHL"

PY="$WORK/venv/bin/python"
echo "--- check: sailseg comes from the wheel, not the workspace"
"$PY" - <<'PY'
import sailseg, sailseg_plugins_hello
for mod in (sailseg, sailseg_plugins_hello):
    assert "site-packages" in mod.__file__, f"{mod.__name__} imported from {mod.__file__}"
print("sailseg:", sailseg.__file__)
PY

echo "--- pytest (from the plugin's folder)"
cd "$WORK/hello"
"$PY" -m pytest -q -p no:cacheprovider
