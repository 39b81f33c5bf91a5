# syntax=docker/dockerfile:1
# sailseg container image: every distribution of this repository built as wheels in a
# throw-away stage, installed into a slim runtime stage that runs as a non-root user.
#
#   docker build -t sailseg .
#   docker run -p 8080:8080 -v sailseg-data:/data \
#     -v "$PWD/sailseg.toml:/etc/sailseg/sailseg.toml:ro" \
#     -e SAILTHRU_API_KEY -e SAILTHRU_API_SECRET -e SEGMENT_SHARED_SECRET sailseg
#
# Configuration comes from the environment: SAILSEG_CONFIG (the sailseg.toml to load),
# SAILSEG_STORE (sqlite:////data/sailseg.db by default; a postgresql:// URL for several
# nodes), and the variables the pipelines interpolate (${SAILTHRU_API_KEY} ...).
# .ci/dist-check runs this image's CMD in a fresh venv built from the same wheels.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir uv==0.13.9
COPY . .
# every distribution as a wheel, and one pinned requirement per wheel (the core with its
# postgres and otel extras) for the runtime stage
RUN uv build --all-packages --wheel --out-dir /wheels && python - <<'PY'
from pathlib import Path
lines = []
for whl in sorted(Path("/wheels").glob("*.whl")):
    name, version = whl.name.split("-")[:2]
    if name == "sailseg_plugins_echo":  # the reference plugin for authors, not for production
        continue
    extras = "[postgres,otel]" if name == "sailseg" else ""
    lines.append(f"{name.replace('_', '-')}{extras}=={version}")
Path("/wheels/requirements.txt").write_text("\n".join(lines) + "\n")
PY

FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SAILSEG_CONFIG=/etc/sailseg/sailseg.toml \
    SAILSEG_STORE=sqlite:////data/sailseg.db
RUN groupadd --system --gid 10001 sailseg \
    && useradd --system --uid 10001 --gid sailseg --home-dir /data --shell /usr/sbin/nologin sailseg \
    && mkdir -p /data /etc/sailseg \
    && chown sailseg:sailseg /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --find-links /wheels --requirement /wheels/requirements.txt \
    && rm -rf /wheels
COPY examples/container/sailseg.toml /etc/sailseg/sailseg.toml
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status == 200 else 1)"]
CMD ["sailseg", "serve", "--host", "0.0.0.0", "--port", "8080"]
