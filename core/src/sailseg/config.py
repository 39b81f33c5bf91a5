"""Load and validate ``sailseg.toml``.

Shape (every section optional except ``pipelines``)::

    [store]       url = "sqlite:///.sailseg/sailseg.db"      # or postgresql://...
    [server]      host, port, max_body, admin_token, delivery_process, log_format, header_timeout,
                  body_timeout, max_connections, store_probe_interval
    [delivery]    retry/backoff/dedupe/backlog knobs (see DeliveryConfig)
    [triggers.NAME]   type = "segment.webhook", ...options
    [resolvers.NAME]  type = "identity.graph", ...
    [sinks.NAME]      type = "sailthru.user", concurrency = 32, ...options
    [pipelines.NAME]
    trigger = "NAME" | { type = "...", ... }
    transforms = [ { type = "filter", ... }, "NAME-of-a-[transforms.NAME]", ... ]
    resolver = "NAME" | { type = "...", ... }
    sinks = [ "NAME" | { type = "...", ... }, ... ]
    journal = false                 # optional: no event journal for this pipeline
    [alerts]      rules and notifiers (see sailseg.alerts.config)

Strings may use ``${VAR}`` or ``${VAR:-default}``; a missing variable without default is an
error naming it. Durations accept seconds or ``"500ms" "30s" "15m" "24h" "30d"``.
Errors always say file, pipeline, component and field.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from .alerts.config import AlertsConfig, parse_alerts
from .errors import ConfigError
from .options import convert_options, suggest

__all__ = [
    "ConsoleConfig",
    "ConsoleToken",
    "DeliveryConfig",
    "ServerConfig",
    "StoreConfig",
    "ComponentSpec",
    "PipelineSpec",
    "SailsegConfig",
    "load_config",
    "parse_config",
    "parse_duration",
    "redacted",
    "SECRET_HINTS",
    "UNSET_MARK",
    "redact_url",
]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
SECRET_HINTS = ("key", "secret", "token", "password", "dsn", "auth")


def parse_duration(value: Any, *, where: str = "") -> float:
    """Seconds from a number or a string like ``"24h"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration, got a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and (m := _DUR.match(value)):
        return float(m.group(1)) * _UNITS[m.group(2)]
    raise ConfigError(f"{where}: invalid duration {value!r} (use seconds or e.g. '30s', '15m', '24h', '30d')")


class DeliveryConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Delivery knobs. Durations in seconds (strings like "24h" accepted in the file)."""

    max_attempts: int = 10
    max_age: float = 86400.0
    backoff_base: float = 0.5
    backoff_max: float = 600.0
    dedupe_window: float = 86400.0
    delivered_retention: float = 7 * 86400.0
    park_ttl: float = 30 * 86400.0
    max_backlog: int = 1_000_000
    lease: float = 60.0
    claim_batch: int = 256
    max_inflight: int = 1024
    concurrency: int = 64
    poll_interval: float = 0.25
    shutdown_grace: float = 10.0


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    max_body: int = 1024 * 1024
    admin_token: str | None = None
    #: deliver in a child process (see split.py): ``"auto"`` (default) does when at least two
    #: cores are usable and the store can be shared (a SQLite file, PostgreSQL);
    #: ``serve --delivery-process`` / ``--single-process`` force one or the other
    delivery_process: bool | Literal["auto"] = "auto"
    #: ``text`` or ``json`` (one JSON object a line); ``serve --log-format`` overrides it
    log_format: str = "text"
    #: under a flood, lines of one kind and subject beyond ``log_flood_burst`` per
    #: ``log_flood_window`` seconds are summarised in one line
    log_flood_window: float = 10.0
    log_flood_burst: int = 5
    #: a client must send its request line and headers within this many seconds (slowloris)
    header_timeout: float = 10.0
    #: ... and its whole body within this many seconds of the headers (408 otherwise)
    body_timeout: float = 30.0
    #: open connections per process; above it (or with that many connections' handlers
    #: still running) new requests get 503 (uvicorn's ``limit_concurrency``)
    max_connections: int = 4096
    #: seconds without a commit after which the store health probe writes one row
    store_probe_interval: float = 2.0


class ConsoleToken(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A named console token: ``[console.tokens.NAME] token = "..."``, ``role``."""

    token: str
    role: str = "read"  # read | admin


class ConsoleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The web console at ``/console`` (see ``sailseg/console``): on when a token is set.

    ``read_token`` (name ``read``) may look, ``admin_token`` (name ``admin``) may also act;
    ``SAILSEG_CONSOLE_READ_TOKEN`` / ``SAILSEG_CONSOLE_ADMIN_TOKEN`` fill them when unset.
    The audit trail records the name of the token behind every action.
    """

    enabled: bool = True
    read_token: str | None = None
    admin_token: str | None = None
    tokens: dict[str, ConsoleToken] = {}
    session_ttl: float = 12 * 3600.0
    #: also send the session cookie with ``Secure`` (set when served over HTTPS)
    secure_cookie: bool = False
    #: keep the event journal the console's event lookup reads (one row per accepted item
    #: and per attempt outcome, written with them); false saves that write on the hot path
    journal: bool = True


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = "sqlite:///.sailseg/sailseg.db"


@dataclass
class ComponentSpec:
    """One component use: its registered type, options, and instance name."""

    kind: str  # trigger | transform | resolver | sink
    type: str
    instance: str
    options: dict[str, Any]
    where: str  # "sailseg.toml: pipelines.profiles.sinks[0] (sailthru.user)"
    concurrency: int | None = None


@dataclass
class PipelineSpec:
    name: str
    trigger: ComponentSpec
    transforms: list[ComponentSpec]
    resolver: ComponentSpec | None
    sinks: list[ComponentSpec]
    #: write this pipeline's items to the event journal; None: as ``[console] journal``.
    #: Why per pipeline: a bulk pipeline (an audience backfill, an engagement export) can
    #: skip the journal's two rows per member (W2: ~40% of the store's ingest time) while
    #: the real-time pipelines keep their event lookup.
    journal: bool | None = None

    def journaled(self, default: bool) -> bool:
        """Whether this pipeline's items go to the journal, given ``[console] journal``."""
        return default if self.journal is None else self.journal


@dataclass
class SailsegConfig:
    path: str
    store: StoreConfig = field(default_factory=StoreConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    pipelines: dict[str, PipelineSpec] = field(default_factory=dict)
    #: component instances by kind and instance name (shared when referenced by name)
    components: dict[tuple[str, str], ComponentSpec] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    #: dotted paths whose value came from an environment variable that looks secret
    secret_paths: set[str] = field(default_factory=set)
    #: dotted path -> variable, for ``${VAR}`` left unset (only with ``unset_env="placeholder"``)
    unset_vars: dict[str, str] = field(default_factory=dict)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    def sink_spec(self, name: str) -> ComponentSpec | None:
        """The sink of the ``[sinks.NAME]`` table, also when no pipeline lists it (a sink
        another component calls by name, e.g. an erasure ``deleter``); None if no such
        table."""
        spec = self.components.get(("sink", name))
        if spec is not None:
            return spec
        table = (self.raw.get("sinks") or {}).get(name)
        if not isinstance(table, dict):
            return None
        options = dict(table)
        typ = options.pop("type", None)
        if not isinstance(typ, str) or not typ:
            raise ConfigError(f"{self.path}: sinks.{name}: missing `type` (the component name)")
        options.pop("name", None)
        options.pop("concurrency", None)
        return ComponentSpec(kind="sink", type=typ, instance=name, options=options,
                             where=f"{self.path}: sinks.{name} ({typ})")


_DURATION_FIELDS = {
    "max_age", "backoff_base", "backoff_max", "dedupe_window", "delivered_retention",
    "park_ttl", "lease", "poll_interval", "shutdown_grace", "session_ttl", "log_flood_window",
    "header_timeout", "body_timeout", "store_probe_interval",
}


#: what an unset ``${VAR}`` becomes when a config is loaded with ``unset_env="placeholder"``
UNSET_MARK = "${%s:unset}"


def _interpolate(value: Any, env: dict[str, str], path: str, fname: str, secret_paths: set[str],
                 unset: dict[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}``. An unset variable without default is an error,
    or (``unset`` given: read-only use) the marker :data:`UNSET_MARK` recorded in ``unset``
    under its dotted path."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if any(h in var.lower() for h in SECRET_HINTS):
                secret_paths.add(path)
            if var in env:
                return env[var]
            if default is not None:
                return default
            if unset is not None:
                unset[path] = var
                return UNSET_MARK % var
            raise ConfigError(
                f"{fname}: {path}: environment variable {var} is not set "
                f"(set it, or write ${{{var}:-default}})"
            )

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, f"{path}.{k}" if path else k, fname, secret_paths, unset)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{path}[{i}]", fname, secret_paths, unset)
                for i, v in enumerate(value)]
    return value


def _section(raw: dict[str, Any], name: str, typ: type[Any], fname: str) -> Any:
    data = raw.get(name, {})
    if not isinstance(data, dict):
        raise ConfigError(f"{fname}: [{name}] must be a table")
    data = dict(data)
    for k in list(data):
        if k in _DURATION_FIELDS:
            data[k] = parse_duration(data[k], where=f"{fname}: {name}.{k}")
    return convert_options(data, typ, where=f"{fname}: [{name}]")


def _component(
    kind: str,
    value: Any,
    *,
    named: dict[str, dict[str, Any]],
    registry_hint: str,
    where: str,
    fname: str,
    default_instance: str,
    cfg: SailsegConfig,
) -> ComponentSpec:
    if isinstance(value, str):
        if value not in named:
            raise ConfigError(
                f"{fname}: {where}: no [{registry_hint}.{value}] table is defined"
            )
        key = (kind, value)
        if key not in cfg.components:
            cfg.components[key] = _component(
                kind, named[value], named={}, registry_hint=registry_hint,
                where=f"{registry_hint}.{value}", fname=fname, default_instance=value, cfg=cfg,
            )
        return cfg.components[key]
    if not isinstance(value, dict):
        raise ConfigError(f"{fname}: {where}: expected a table or the name of a [{registry_hint}.NAME]")
    options = dict(value)
    typ = options.pop("type", None)
    if not isinstance(typ, str) or not typ:
        raise ConfigError(f"{fname}: {where}: missing `type` (the component name, e.g. \"sailthru.user\")")
    instance = options.pop("name", None) or default_instance
    concurrency = options.pop("concurrency", None) if kind == "sink" else None
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ConfigError(f"{fname}: {where} ({typ}): `concurrency` must be a positive integer")
    spec = ComponentSpec(kind=kind, type=typ, instance=str(instance), options=options,
                         where=f"{fname}: {where} ({typ})", concurrency=concurrency)
    known = cfg.components.get((kind, spec.instance))
    if known is None:
        cfg.components[(kind, spec.instance)] = spec
    elif (known.type, known.options, known.concurrency) != (typ, options, concurrency):
        # one instance per name: the second definition's settings would be silently ignored
        raise ConfigError(
            f"{fname}: {where}: a {kind} named {spec.instance!r} is already defined with other "
            f"settings ({known.where}); give this one another `name`, or define it once as "
            f"[{registry_hint}.{spec.instance}] and name it in both places"
        )
    return spec


def parse_config(raw: dict[str, Any], *, path: str = "sailseg.toml", env: dict[str, str] | None = None,
                 unset_env: str = "error") -> SailsegConfig:
    """Validate a parsed TOML document (after ``${ENV}`` interpolation).

    :param unset_env: ``"error"`` (default: what serving needs) or ``"placeholder"``: an
        unset variable becomes :data:`UNSET_MARK` and is listed in
        :attr:`SailsegConfig.unset_vars`, so read-only commands (``status``, ``dlq``,
        ``config show``, ``validate``, dry runs) work without every secret.
    """
    if unset_env not in ("error", "placeholder"):
        raise ValueError(f"unset_env must be 'error' or 'placeholder', got {unset_env!r}")
    fname = path
    env = dict(os.environ) if env is None else env
    allowed = {"store", "server", "delivery", "console", "triggers", "transforms", "resolvers", "sinks",
               "pipelines", "alerts"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{fname}: unknown top-level section(s) {', '.join(unknown)}"
                          f"{suggest(unknown, allowed)} (allowed: {', '.join(sorted(allowed))})")
    secret_paths: set[str] = set()
    unset: dict[str, str] | None = {} if unset_env == "placeholder" else None
    data = _interpolate(raw, env, "", fname, secret_paths, unset)
    cfg = SailsegConfig(path=path, raw=data, secret_paths=secret_paths,
                        unset_vars=dict(unset or {}))
    cfg.store = _section(data, "store", StoreConfig, fname)
    cfg.server = _section(data, "server", ServerConfig, fname)
    for k in ("header_timeout", "body_timeout", "store_probe_interval", "max_connections"):
        if getattr(cfg.server, k) <= 0:
            raise ConfigError(f"{fname}: server.{k} must be positive, got {getattr(cfg.server, k)}")
    cfg.delivery = _section(data, "delivery", DeliveryConfig, fname)
    cfg.console = _section(data, "console", ConsoleConfig, fname)
    if cfg.server.log_format not in ("text", "json"):
        raise ConfigError(f"{fname}: server.log_format must be \"text\" or \"json\", "
                          f"got {cfg.server.log_format!r}")
    cfg.alerts = parse_alerts(data.get("alerts"), fname, parse_duration)
    named = {k: data.get(k, {}) for k in ("triggers", "transforms", "resolvers", "sinks")}
    for k, v in named.items():
        if not isinstance(v, dict) or any(not isinstance(t, dict) for t in v.values()):
            raise ConfigError(f"{fname}: [{k}] must hold tables: [{k}.NAME] with a `type`")
    pipelines = data.get("pipelines")
    if not isinstance(pipelines, dict) or not pipelines:
        raise ConfigError(f"{fname}: no pipelines: add at least one [pipelines.NAME] table")
    for pname, p in pipelines.items():
        w = f"pipelines.{pname}"
        if not isinstance(p, dict):
            raise ConfigError(f"{fname}: {w} must be a table")
        keys = {"trigger", "transforms", "resolver", "sinks", "description", "journal"}
        extra = sorted(set(p) - keys)
        if extra:
            raise ConfigError(f"{fname}: {w}: unknown key(s) {', '.join(extra)}{suggest(extra, keys)} "
                              "(allowed: trigger, transforms, resolver, sinks, description, journal)")
        journal = p.get("journal")
        if journal is not None and not isinstance(journal, bool):
            raise ConfigError(f"{fname}: {w}.journal must be true or false, not {journal!r}")
        if "trigger" not in p:
            raise ConfigError(f"{fname}: {w}: missing `trigger`")
        trigger = _component("trigger", p["trigger"], named=named["triggers"], registry_hint="triggers",
                             where=f"{w}.trigger", fname=fname, default_instance=f"{pname}.trigger", cfg=cfg)
        transforms_raw = p.get("transforms", [])
        if not isinstance(transforms_raw, list):
            raise ConfigError(f"{fname}: {w}.transforms must be an array")
        transforms = [
            _component("transform", t, named=named["transforms"], registry_hint="transforms",
                       where=f"{w}.transforms[{i}]", fname=fname,
                       default_instance=f"{pname}.transforms[{i}]", cfg=cfg)
            for i, t in enumerate(transforms_raw)
        ]
        resolver = None
        if p.get("resolver") is not None:
            resolver = _component("resolver", p["resolver"], named=named["resolvers"],
                                  registry_hint="resolvers", where=f"{w}.resolver", fname=fname,
                                  default_instance=f"{pname}.resolver", cfg=cfg)
        sinks_raw = p.get("sinks")
        if not isinstance(sinks_raw, list) or not sinks_raw:
            raise ConfigError(f"{fname}: {w}: `sinks` must be a non-empty array")
        sinks = [
            _component("sink", s, named=named["sinks"], registry_hint="sinks",
                       where=f"{w}.sinks[{i}]", fname=fname,
                       default_instance=f"{pname}.sinks[{i}]", cfg=cfg)
            for i, s in enumerate(sinks_raw)
        ]
        names = [s.instance for s in sinks]
        if len(set(names)) != len(names):
            raise ConfigError(f"{fname}: {w}: the same sink is listed twice")
        cfg.pipelines[pname] = PipelineSpec(pname, trigger, transforms, resolver, sinks, journal)
    return cfg


def load_config(path: str | os.PathLike[str], *, env: dict[str, str] | None = None,
                unset_env: str = "error") -> SailsegConfig:
    """Read and validate a config file. Raises :class:`ConfigError` with the file name.

    ``unset_env``: see :func:`parse_config`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_config(raw, path=str(p), env=env, unset_env=unset_env)


_SECRET_QUERY = {"password", "sslpassword", "passwd", "secret", "token", "api_key", "apikey", "key"}


def redact_url(value: str) -> str:
    """Hide passwords in URLs: ``user:***@host`` and secret query parameters."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    value = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", value)
    if "://" in value and "?" in value:
        try:
            parts = urlsplit(value)
            query = [(k, "***" if k.lower() in _SECRET_QUERY else v)
                     for k, v in parse_qsl(parts.query, keep_blank_values=True)]
            value = urlunsplit(parts._replace(query=urlencode(query, safe="*")))
        except ValueError:
            pass
    return value


def _secret_name(key: str) -> bool:
    low = key.lower()
    return (any(h in low for h in SECRET_HINTS) or "authorization" in low
            or low.endswith(("key", "keys"))) and low not in ("okey", "key_field", "key", "keys")


def redacted(cfg: SailsegConfig, secret_fields: dict[tuple[str, str], tuple[str, ...]] | None = None) -> dict[str, Any]:
    """The interpolated config with secrets replaced by ``"***"`` (for ``config show``).

    Redacted whole (also when the value is a list or table): component ``secret_fields``,
    keys named like a secret (``*key*``, ``*secret*``, ``*token*``, ``*password*``, ``*dsn*``,
    ``*auth*``), and values that came from an environment variable whose name looks secret.
    Passwords inside URLs (user info and query parameters) are hidden everywhere. Values of
    unset variables (read-only loading) show as their marker, ``${VAR:unset}``.
    """
    secret_fields = secret_fields or {}
    by_type: dict[str, tuple[str, ...]] = {}
    for (_kind, typ), names in secret_fields.items():
        by_type[typ] = by_type.get(typ, ()) + tuple(names)

    def walk(value: Any, path: str, comp_secrets: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            t = value.get("type")
            secrets = by_type.get(t, comp_secrets) if isinstance(t, str) else comp_secrets
            out = {}
            for k, v in value.items():
                sub = f"{path}.{k}" if path else k
                if sub in cfg.unset_vars and isinstance(v, str):
                    out[k] = v  # the unset marker: no secret in it, and it says what to set
                elif k in secrets or _secret_name(k) or sub in cfg.secret_paths:
                    out[k] = "***"
                else:
                    out[k] = walk(v, sub, secrets)
            return out
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]", comp_secrets) for i, v in enumerate(value)]
        if isinstance(value, str):
            if path in cfg.secret_paths:
                return "***"
            return redact_url(value)
        return value

    return walk(cfg.raw, "", ())
