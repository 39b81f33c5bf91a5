"""``sailseg serve --sandbox``: every example pipeline against the vendor emulators, one process.

Why: a fresh clone should reach a working Segment <-> Sailthru sync with one command and no
accounts. The sandbox

- starts every emulator the installed plugins register (``register_emulators``; the first-party
  Sailthru and Segment plugins register theirs) as a local HTTP server (a free port, or the
  port in the emulator's ``port_variable``, e.g. ``SAILSEG_SANDBOX_SAILTHRU_PORT``);
- sets the environment the example configs read (each emulator's ``sandbox_env``: API URLs,
  sandbox-only credentials, poll intervals...) to point at them; the real environment is never
  used for those;
- loads every ``examples/pipelines/*.toml`` (or ``-c FILE|DIR``) into one runtime (see
  :func:`load_pipeline_files` for how files are merged);
- keeps its data under ``.sailseg/sandbox/``: a SQLite store emptied at each start (the
  emulators keep their state in memory and start empty too, so a sample sent again after a
  restart is delivered again, not dropped as a duplicate; ``--store``/``SAILSEG_STORE`` keep
  a store instead) and ``endpoints.json`` (URLs, routes, the loaded files, the sandbox-only
  environment), through which every other command (``send``, ``status``, ``dlq``, ``run``,
  ``replay``, ``config show``) finds the sandbox's config and store;
- tells each emulator where sailseg listens and which routes it serves (e.g. for postbacks);
- prints where to send events and where to look.

Core names no vendor here: everything vendor-specific comes from the registered emulators.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .components import ComponentContext
from .config import SailsegConfig, parse_config
from .errors import ConfigError
from .runtime import build_component
from .sockets import bind_socket, url_host

if TYPE_CHECKING:
    from .plugins import Registry

__all__ = [
    "SANDBOX_DIR",
    "ENDPOINTS_FILE",
    "SandboxEndpoints",
    "default_pipeline_files",
    "pipeline_files",
    "load_pipeline_files",
    "trigger_routes",
    "read_endpoints",
    "run_sandbox",
]

#: where the sandbox keeps its store and endpoints file (relative to the working directory)
SANDBOX_DIR = Path(".sailseg") / "sandbox"
ENDPOINTS_FILE = "endpoints.json"

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
    files: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None,
    unset_env: str = "error",
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
        parse_config(raw, path=str(f), env=env_d, unset_env=unset_env)  # errors name this file
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
    return parse_config(merged, path=label, env=env_d, unset_env=unset_env)


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


# -- ports ---------------------------------------------------------------------------------
def _port(var: str | None) -> int:
    """The port fixed by ``var`` (e.g. ``SAILSEG_SANDBOX_SAILTHRU_PORT``), else 0 (a free one)."""
    value = os.environ.get(var) if var else None
    if value:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{var} must be a port number, got {value!r}") from None
    return 0


# -- endpoints file ------------------------------------------------------------------------
@dataclass
class SandboxEndpoints:
    """What a running sandbox tells ``sailseg send`` / ``sailseg status`` (``endpoints.json``).

    :param routes: route paths per trigger type.
    :param emulators: each emulator's base URL by its registered name.
    :param env: the sandbox-only environment the pipelines run with (emulator URLs and
        credentials); ``sailseg send`` signs with it. The file is readable by its owner only.
    """

    sailseg_url: str
    store_url: str
    routes: dict[str, list[str]] = field(default_factory=dict)
    emulators: dict[str, str] = field(default_factory=dict)
    pipelines: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: the web console's admin token for this run (``/console``)
    console_token: str = ""
    pid: int = 0
    #: the pipeline files it loaded (absolute), so every command loads the same config
    config_files: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "sailseg_url": self.sailseg_url,
                "store_url": self.store_url,
                "routes": self.routes,
                "emulators": self.emulators,
                "pipelines": self.pipelines,
                "env": self.env,
                "console_token": self.console_token,
                "pid": self.pid,
                "config_files": self.config_files,
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
        store_url=str(data.get("store_url", "")),
        routes=dict(data.get("routes") or {}),
        emulators={str(k): str(v) for k, v in (data.get("emulators") or {}).items()},
        pipelines=list(data.get("pipelines") or []),
        env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
        console_token=str(data.get("console_token") or ""),
        pid=int(data.get("pid") or 0),
        config_files=[str(f) for f in data.get("config_files") or []],
    )


def trigger_routes(
    cfg: SailsegConfig, registry: Registry, env: Mapping[str, str]
) -> dict[str, list[str]]:
    """Route paths per trigger type, from trigger instances built (not started) from ``cfg``."""
    out: dict[str, list[str]] = {}
    for (kind, inst), spec in cfg.components.items():
        if kind != "trigger":
            continue
        trigger = build_component(spec, registry, ComponentContext(instance=inst, env=dict(env)))
        for route in trigger.routes():  # type: ignore[attr-defined]
            if route.path not in out.setdefault(spec.type, []):
                out[spec.type].append(route.path)
    return {k: v for k, v in out.items() if v}


def _fresh_store(db: Path) -> None:
    """Delete the sandbox's own SQLite store (and its WAL files) before a start.

    Why: the emulators keep their state in memory, so they start empty; a store that still
    remembered the samples of the last run would drop them as duplicates (``"duplicates":1``)
    and nothing would show up in the emulators. The banner says the store is fresh.
    """
    for suffix in ("", "-wal", "-shm", ".split-lock"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{db}{suffix}").unlink()


#: the dead-letter example of the guide: (setup, the event that dead-letters, its fix)
DEAD_LETTER_SAMPLES = ("11a-opt-out-ellen.json", "11b-signed-up-opted-out.json",
                       "fixes/11c-opt-ellen-back-in.json")


def _dead_letter_walkthrough(events_dir: Path | None, cmd: Any) -> list[str]:
    """How to make, read, fix and replay a dead letter, when the samples are there."""
    if events_dir is None or not all((events_dir / f).is_file() for f in DEAD_LETTER_SAMPLES):
        return []
    setup, event, fix = (_short(events_dir / f) for f in DEAD_LETTER_SAMPLES)
    return [
        "",
        "Make a dead letter, fix it, replay it (a welcome email to someone who opted out)",
        "  " + cmd(f"send {setup} {event}"),
        "  " + cmd("dlq list") + "   (sailthru.send: Sailthru error 32, opted out of delivery)",
        "  " + cmd(f"send {fix}") + "   (the fix: she opts back in)",
        "  " + cmd("dlq replay --all") + "   (her welcome email is sent now)",
    ]


def _guide(ep: SandboxEndpoints, registry: Registry, files: Sequence[Path],
           events_dir: Path | None, *, fresh: bool = True) -> str:
    def cmd(args: str) -> str:
        return f"uv run sailseg {args}"

    titles = ", ".join(e.title for _, e in sorted(registry.emulators.items())) or "no vendor"
    lines = [
        "",
        (
            f"sailseg sandbox: {len(ep.pipelines)} pipeline(s) from {len(files)} file(s) in "
            f"{_short(Path(_common_dir(files)))}, {titles} emulated locally"
        ),
        f"  store                {ep.store_url} "
        + ("(fresh: emptied at each start, like the emulators)" if fresh
           else "(kept: --store/SAILSEG_STORE given; samples sent before are duplicates now)"),
        "",
        "Send events to sailseg (credentials: the sandbox's own, in "
        f"{_short(sandbox_dir() / ENDPOINTS_FILE)})",
    ]
    for ttype, paths in sorted(ep.routes.items()):
        for path in paths:
            lines.append(f"  {ttype:<20} POST {ep.sailseg_url}{path}")
    samples = sorted(events_dir.glob("*.json")) if events_dir else []
    if events_dir is not None and samples:
        first = next((p for p in samples if p.name == "01a-identify.json"), samples[0])
        lines.append("  signed for you:      " + cmd(f"send {_short(first)}"))
        lines.append(
            "                       "
            + cmd(f"send {_short(events_dir)}/*.json")
            + "   (every sample)"
        )
    lines += _dead_letter_walkthrough(events_dir, cmd)
    lines += ["", "Look at the results"]
    for name, url in sorted(ep.emulators.items()):
        emu = registry.emulators[name]
        for label, text in emu.inspect(url):
            lines.append(f"  {label:<20} {text}")
    lines += [
        f"  {'sailseg':<20} {cmd('status')}   |   {ep.sailseg_url}/metrics",
        f"  {'dead letters':<20} {cmd('dlq list')}",
        (f"  {'web console':<20} {ep.sailseg_url}/console   "
         f"(admin token {ep.console_token})"),
        "",
        "Ctrl-C stops the sandbox.",
    ]
    return "\n".join(lines)


class _QuietServer:
    """A uvicorn server for an emulator that leaves signal handling to ``serve_runtime``."""

    def __init__(self, app: Any, host: str, sock: socket.socket) -> None:
        import uvicorn

        self.sock = sock
        port = sock.getsockname()[1]

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
        await self.server.serve(sockets=[self.sock])

    async def wait_started(self, timeout: float = 10.0) -> None:
        import anyio

        with anyio.fail_after(timeout):
            while not self.server.started:
                if self.server.should_exit:
                    raise ConfigError("an emulator server could not start")
                await anyio.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True


async def run_sandbox(
    config_path: str | None, store_url: str | None, host: str | None, port: int | None
) -> None:
    """Run the sandbox until SIGINT/SIGTERM (see the module docstring)."""
    import anyio

    from .emulators import EmulatorSetup
    from .plugins import build_registry, make_plugin_manager
    from .runtime import Runtime
    from .serving import serve_runtime

    host = host or "127.0.0.1"
    port = 8080 if port is None else port
    files = pipeline_files(config_path)
    registry = build_registry(make_plugin_manager())
    emulators = sorted(registry.emulators.items())
    # bind every port first: a taken one is one error naming how to choose another
    sock = bind_socket(host, port, port_fix="--port N")
    port = sock.getsockname()[1]
    socks: dict[str, socket.socket] = {}
    try:
        for name, emu in emulators:
            fix = (f"{emu.port_variable}=N (or unset it for a free port)" if emu.port_variable
                   else "a free port")
            socks[name] = bind_socket(host, _port(emu.port_variable),
                                      what=f"the sandbox's {emu.title} emulator", port_fix=fix)
    except ConfigError:
        for s_ in (sock, *socks.values()):
            s_.close()
        raise
    data = sandbox_dir()
    data.mkdir(parents=True, exist_ok=True)
    sailseg_url = f"http://{url_host(host)}:{port}"
    urls: dict[str, str] = {}
    sandbox_vars: dict[str, str] = {}
    for name, emu in emulators:
        urls[name] = f"http://{url_host(host)}:{socks[name].getsockname()[1]}"
        sandbox_vars.update(emu.sandbox_env(urls[name]))
    env = {**os.environ, **sandbox_vars}
    cfg = load_pipeline_files(files, env=env)
    own_store = not (store_url or os.environ.get("SAILSEG_STORE"))
    if own_store:
        db = data / "sailseg.db"
        _fresh_store(db)
        cfg.store.url = f"sqlite:///{db.as_posix()}"
    else:
        cfg.store.url = store_url or os.environ["SAILSEG_STORE"]
    cfg.server.host, cfg.server.port = host, port
    # the console: an admin token made up for this run unless one is configured or exported
    console_token = (cfg.console.admin_token or env.get("SAILSEG_CONSOLE_ADMIN_TOKEN")
                     or secrets.token_urlsafe(18))
    cfg.console.admin_token = console_token
    routes = trigger_routes(cfg, registry, env)
    servers = [
        _QuietServer(
            emu.create_app(EmulatorSetup(url=urls[name], env=sandbox_vars,
                                         sailseg_url=sailseg_url, routes=routes)),
            host, socks[name],
        )
        for name, emu in emulators
    ]
    endpoints = SandboxEndpoints(
        sailseg_url=sailseg_url,
        store_url=cfg.store.url,
        routes=routes,
        emulators=urls,
        pipelines=sorted(cfg.pipelines),
        env=sandbox_vars,
        console_token=console_token,
        pid=os.getpid(),
        config_files=[str(f.resolve()) for f in files],
    )
    ep_file = data / ENDPOINTS_FILE
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
            from .logs import add_secrets, config_secrets, secrets_from_env

            add_secrets([*secrets_from_env(env), *config_secrets(cfg, registry)])
            async with Runtime(cfg, registry=registry, env=env, alerts=True) as rt:
                ep_file.touch(mode=0o600)
                with contextlib.suppress(OSError):
                    ep_file.chmod(0o600)
                ep_file.write_text(endpoints.to_json(), encoding="utf-8")
                await serve_runtime(rt, host, port, sock=sock,
                                    banner=_guide(endpoints, registry, files, events_dir,
                                                  fresh=own_store))
        finally:
            for s in servers:
                s.stop()
