"""``sailseg serve --sandbox``: every example pipeline against both vendor emulators, one process.

Why: a fresh clone should reach a working Segment <-> Sailthru sync with one command and no
accounts. The sandbox

- starts the Sailthru and Segment emulators as local HTTP servers (free ports, or the ports in
  ``SAILSEG_SANDBOX_SAILTHRU_PORT`` / ``SAILSEG_SANDBOX_SEGMENT_PORT``);
- sets the environment the example configs read (``SAILTHRU_API_URL``/``KEY``/``SECRET``,
  ``SEGMENT_API_URL``, ``SEGMENT_WRITE_KEY``, ``SEGMENT_WEBHOOK_SECRET``, poll intervals...) to
  point at them, with sandbox-only secrets; the real environment is never used for those;
- loads every ``examples/pipelines/*.toml`` (or ``-c FILE|DIR``) into one runtime (see
  :func:`load_pipeline_files` for how files are merged);
- keeps its data under ``.sailseg/sandbox/`` (SQLite store and ``endpoints.json``, which
  ``sailseg send`` and ``sailseg status`` read);
- points the Sailthru emulator's postbacks at sailseg's postback route;
- prints where to send events and where to look.

The vendor emulators live in plugins; they are imported lazily so core does not depend on them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import SailsegConfig, parse_config
from .errors import ConfigError

__all__ = [
    "SANDBOX_DIR",
    "ENDPOINTS_FILE",
    "SandboxEndpoints",
    "default_pipeline_files",
    "pipeline_files",
    "load_pipeline_files",
    "sandbox_env",
    "read_endpoints",
    "run_sandbox",
]

#: where the sandbox keeps its store and endpoints file (relative to the working directory)
SANDBOX_DIR = Path(".sailseg") / "sandbox"
ENDPOINTS_FILE = "endpoints.json"

#: sandbox-only credentials (they protect nothing: both vendors are local emulators)
SAILTHRU_KEY = "sandbox-sailthru-key"
SAILTHRU_SECRET = "sandbox-sailthru-secret"
SEGMENT_WRITE_KEY = "sandbox-write-key"
SEGMENT_WEBHOOK_SECRET = "sandbox-webhook-secret"
SEGMENT_SPACE_ID = "spa_sandbox"
SEGMENT_PROFILE_TOKEN = "sandbox-profile-token"

_MERGED_SECTIONS = ("triggers", "transforms", "resolvers", "sinks")


def sandbox_dir() -> Path:
    """``$SAILSEG_SANDBOX_DIR`` or ``.sailseg/sandbox`` (relative to the working directory)."""
    return Path(os.environ.get("SAILSEG_SANDBOX_DIR") or SANDBOX_DIR)


# -- pipeline files ------------------------------------------------------------------------
def default_pipeline_files() -> list[Path]:
    """``examples/pipelines/*.toml`` under the working directory, else under the source
    checkout this sailseg is installed from (an editable install in the workspace)."""
    here = Path("examples") / "pipelines"
    candidates = [here, Path(__file__).resolve().parents[3] / "examples" / "pipelines"]
    for d in candidates:
        files = sorted(d.glob("*.toml"))
        if files:
            return files
    raise ConfigError(
        "no example pipelines found (looked for examples/pipelines/*.toml); run from the "
        "repository root or pass -c FILE|DIR"
    )


def pipeline_files(path: str | os.PathLike[str] | None) -> list[Path]:
    """The config files to load: one file, every ``*.toml`` of a directory, or the examples."""
    if path is None:
        return default_pipeline_files()
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.toml"))
        if not files:
            raise ConfigError(f"{p}: no *.toml files in this directory")
        return files
    if not p.exists():
        raise ConfigError(f"{p}: file not found")
    return [p]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def load_pipeline_files(
    files: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None
) -> SailsegConfig:
    """Validate each file on its own, then merge them into one config.

    Merge rules, so that files written to run alone also run together:

    - ``[pipelines.*]``: names must be unique across files;
    - named ``[triggers|transforms|resolvers|sinks.NAME]``: a name may appear in several files
      only with the same definition (then it is one shared component: one route, one sink
      runner); different definitions under one name are an error naming both files;
    - ``[store]``, ``[server]``, ``[delivery]``: merged key by key; conflicting values are an
      error.

    :raises ConfigError: naming the file(s) involved.
    """
    env_d = dict(os.environ) if env is None else dict(env)
    merged: dict[str, Any] = {}
    origin: dict[tuple[str, str], Path] = {}
    for f in (Path(x) for x in files):
        raw = _read_toml(f)
        parse_config(raw, path=str(f), env=env_d)  # errors name this file
        for section, value in raw.items():
            if section == "pipelines":
                for name, spec in value.items():
                    if ("pipelines", name) in origin:
                        raise ConfigError(
                            f"{f}: pipeline {name!r} is already defined in "
                            f"{origin[('pipelines', name)]} (pipeline names must be unique)"
                        )
                    origin[("pipelines", name)] = f
                    merged.setdefault("pipelines", {})[name] = spec
            elif section in _MERGED_SECTIONS:
                for name, spec in value.items():
                    key = (section, name)
                    have = merged.setdefault(section, {})
                    if name in have and have[name] != spec:
                        raise ConfigError(
                            f"{f}: [{section}.{name}] differs from the one in {origin[key]}; "
                            "shared components must be defined identically (or renamed)"
                        )
                    have[name] = spec
                    origin.setdefault(key, f)
            else:
                have = merged.setdefault(section, {})
                for k, v in value.items():
                    if k in have and have[k] != v:
                        raise ConfigError(
                            f"{f}: [{section}] {k} = {v!r} conflicts with {have[k]!r} "
                            f"from {origin[(section, k)]}"
                        )
                    have[k] = v
                    origin.setdefault((section, k), f)
    label = (
        ", ".join(str(Path(x)) for x in files)
        if len(files) <= 1
        else f"{len(files)} files in {_common_dir(files)}"
    )
    return parse_config(merged, path=label, env=env_d)


def _short(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (for copy-paste)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _common_dir(files: Sequence[str | os.PathLike[str]]) -> str:
    try:
        return os.path.commonpath([str(Path(f).parent) for f in files]) or "."
    except ValueError:
        return "."


# -- environment ---------------------------------------------------------------------------
def sandbox_env(*, sailthru_url: str, segment_url: str) -> dict[str, str]:
    """The variables the example configs read, pointing at the sandbox emulators."""
    return {
        "SAILTHRU_API_URL": sailthru_url,
        "SAILTHRU_API_KEY": SAILTHRU_KEY,
        "SAILTHRU_API_SECRET": SAILTHRU_SECRET,
        "SEGMENT_API_URL": segment_url,
        "SEGMENT_WRITE_KEY": SEGMENT_WRITE_KEY,
        "SEGMENT_WEBHOOK_SECRET": SEGMENT_WEBHOOK_SECRET,
        "SEGMENT_PROFILE_API_URL": segment_url,
        "SEGMENT_SPACE_ID": SEGMENT_SPACE_ID,
        "SEGMENT_PROFILE_TOKEN": SEGMENT_PROFILE_TOKEN,
        # pollers: fast enough that a seeded purchase or campaign shows up within seconds
        "SAILTHRU_POLL_INTERVAL": os.environ.get("SAILSEG_SANDBOX_POLL_INTERVAL", "5"),
        "SAILTHRU_JOB_POLL_INTERVAL": "0.2",
    }


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port(var: str, host: str) -> int:
    value = os.environ.get(var)
    if value:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{var} must be a port number, got {value!r}") from None
    return _free_port(host)


# -- endpoints file ------------------------------------------------------------------------
@dataclass
class SandboxEndpoints:
    """What a running sandbox tells ``sailseg send`` / ``sailseg status`` (``endpoints.json``)."""

    sailseg_url: str
    sailthru_url: str
    segment_url: str
    store_url: str
    routes: dict[str, list[str]] = field(default_factory=dict)
    pipelines: list[str] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    pid: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "sailseg_url": self.sailseg_url,
                "sailthru_url": self.sailthru_url,
                "segment_url": self.segment_url,
                "store_url": self.store_url,
                "routes": self.routes,
                "pipelines": self.pipelines,
                "secrets": self.secrets,
                "pid": self.pid,
            },
            indent=2,
        )


def read_endpoints(directory: str | os.PathLike[str] | None = None) -> SandboxEndpoints | None:
    """The endpoints file of the sandbox run from this directory, or None when there is none."""
    path = Path(directory or sandbox_dir()) / ENDPOINTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "sailseg_url" not in data:
        return None
    return SandboxEndpoints(
        sailseg_url=str(data["sailseg_url"]),
        sailthru_url=str(data.get("sailthru_url", "")),
        segment_url=str(data.get("segment_url", "")),
        store_url=str(data.get("store_url", "")),
        routes=dict(data.get("routes") or {}),
        pipelines=list(data.get("pipelines") or []),
        secrets=dict(data.get("secrets") or {}),
        pid=int(data.get("pid") or 0),
    )


def _routes(cfg: SailsegConfig) -> dict[str, list[str]]:
    """Route paths per trigger type (defaults as the plugins define them)."""
    defaults = {"segment.webhook": "/segment/webhook", "sailthru.postback": "/sailthru/postback"}
    out: dict[str, list[str]] = {}
    for (kind, _inst), spec in cfg.components.items():
        if kind != "trigger" or spec.type not in defaults:
            continue
        path = str(spec.options.get("path") or defaults[spec.type])
        if path not in out.setdefault(spec.type, []):
            out[spec.type].append(path)
    return out


def _guide(ep: SandboxEndpoints, files: Sequence[Path], events_dir: Path | None) -> str:
    def cmd(args: str) -> str:
        return f"uv run sailseg {args}"

    lines = [
        "",
        (
            f"sailseg sandbox: {len(ep.pipelines)} pipeline(s) from {len(files)} file(s) in "
            f"{_short(Path(_common_dir(files)))}, Sailthru and Segment emulated locally"
        ),
        f"  store                {ep.store_url}",
        "",
        "Send events to sailseg",
    ]
    for path in ep.routes.get("segment.webhook", []):
        lines.append(
            f"  Segment webhook      POST {ep.sailseg_url}{path}   (X-Signature: HMAC-SHA1, "
            f"secret {ep.secrets.get('segment_webhook_secret')})"
        )
    key = ep.secrets.get("sailthru_api_key")
    for path in ep.routes.get("sailthru.postback", []):
        url = f"{ep.sailseg_url}{path}"
        lines.append(f"  Sailthru postbacks   POST {url}   (api_key {key}, sig md5)")
    samples = sorted(events_dir.glob("*.json")) if events_dir else []
    if events_dir is not None and samples:
        first = next((p for p in samples if p.name == "01a-identify.json"), samples[0])
        lines.append("  signed for you:      " + cmd(f"send {_short(first)}"))
        lines.append(
            "                       "
            + cmd(f"send {_short(events_dir)}/*.json")
            + "   (every sample)"
        )
    lines += [
        "",
        "Look at the results",
        (
            f"  Sailthru emulator    {ep.sailthru_url}/_emulator/state   "
            "(or /_emulator/state/users, events, purchases, sends, lists, jobs)"
        ),
        f"  Segment emulator     {ep.segment_url}/_emulator/messages   (?type=track&event=...)",
        f"  sailseg              {cmd('status')}   |   {ep.sailseg_url}/metrics",
        f"  dead letters         {cmd('dlq list')}",
        "",
        "Ctrl-C stops the sandbox.",
    ]
    return "\n".join(lines)


class _QuietServer:
    """A uvicorn server for an emulator that leaves signal handling to ``serve_runtime``."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self.server = Server(
            uvicorn.Config(
                app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
            )
        )

    async def serve(self) -> None:
        await self.server.serve()

    async def wait_started(self, timeout: float = 10.0) -> None:
        import anyio

        with anyio.fail_after(timeout):
            while not self.server.started:
                if self.server.should_exit:
                    raise ConfigError("an emulator server could not start (is its port taken?)")
                await anyio.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True


def _emulators(host: str, sailseg_url: str, postback_path: str) -> tuple[Any, Any]:
    try:
        from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator
        from sailseg_plugins_segment.emulator import SegmentEmulator
    except ImportError as exc:  # pragma: no cover - the workspace installs both
        raise ConfigError(
            f"the sandbox needs sailseg-plugins-sailthru and sailseg-plugins-segment: {exc}"
        ) from None
    sailthru = SailthruEmulator(
        EmulatorSettings(
            accounts={SAILTHRU_KEY: SAILTHRU_SECRET},
            postback_url=f"{sailseg_url}{postback_path}",
            job_polls_to_complete=1,
        )
    )
    segment = SegmentEmulator(
        write_keys={SEGMENT_WRITE_KEY}, access_tokens={SEGMENT_SPACE_ID: SEGMENT_PROFILE_TOKEN}
    )
    return sailthru, segment


async def run_sandbox(
    config_path: str | None, store_url: str | None, host: str | None, port: int | None
) -> None:
    """Run the sandbox until SIGINT/SIGTERM (see the module docstring)."""
    import anyio

    from .cli_commands import serve_runtime
    from .runtime import Runtime

    host = host or "127.0.0.1"
    port = port or 8080
    files = pipeline_files(config_path)
    data = sandbox_dir()
    data.mkdir(parents=True, exist_ok=True)
    st_port = _port("SAILSEG_SANDBOX_SAILTHRU_PORT", host)
    sg_port = _port("SAILSEG_SANDBOX_SEGMENT_PORT", host)
    url_host = f"[{host}]" if ":" in host else host
    sailseg_url = f"http://{url_host}:{port}"
    sailthru_url = f"http://{url_host}:{st_port}"
    segment_url = f"http://{url_host}:{sg_port}"
    env = {**os.environ, **sandbox_env(sailthru_url=sailthru_url, segment_url=segment_url)}
    cfg = load_pipeline_files(files, env=env)
    cfg.store.url = (
        store_url
        or os.environ.get("SAILSEG_STORE")
        or f"sqlite:///{(data / 'sailseg.db').as_posix()}"
    )
    cfg.server.host, cfg.server.port = host, port
    routes = _routes(cfg)
    postback_path = (routes.get("sailthru.postback") or ["/sailthru/postback"])[0]
    sailthru, segment = _emulators(host, sailseg_url, postback_path)
    endpoints = SandboxEndpoints(
        sailseg_url=sailseg_url,
        sailthru_url=sailthru_url,
        segment_url=segment_url,
        store_url=cfg.store.url,
        routes=routes,
        pipelines=sorted(cfg.pipelines),
        secrets={
            "segment_webhook_secret": SEGMENT_WEBHOOK_SECRET,
            "sailthru_api_key": SAILTHRU_KEY,
            "sailthru_api_secret": SAILTHRU_SECRET,
            "segment_write_key": SEGMENT_WRITE_KEY,
        },
        pid=os.getpid(),
    )
    ep_file = data / ENDPOINTS_FILE
    servers = [_QuietServer(sailthru, host, st_port), _QuietServer(segment, host, sg_port)]
    events_dir = next(
        (d for d in (files[0].parent.parent / "events", Path("examples") / "events") if d.is_dir()),
        None,
    )
    async with anyio.create_task_group() as tg:
        for s in servers:
            tg.start_soon(s.serve)
        try:
            for s in servers:
                await s.wait_started()
            async with Runtime(cfg, env=env) as rt:
                ep_file.write_text(endpoints.to_json(), encoding="utf-8")
                with contextlib.suppress(OSError):
                    ep_file.chmod(0o600)
                await serve_runtime(rt, host, port, banner=_guide(endpoints, files, events_dir))
        finally:
            for s in servers:
                s.stop()
