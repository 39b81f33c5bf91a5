"""Operator logs: text or JSON lines, scrubbed of secrets and emails, floods summarised.

When: ``sailseg serve`` calls :func:`setup_logging` once at start (``--log-format``,
``--log-level``, ``[server] log_format``); the runtime, the delivery engine and plugins call
the one-line event helpers below (:func:`retry`, :func:`dead_letter`, :func:`lifecycle`,
:func:`store_state`, :func:`rate_limit_wait`, :func:`credential_failure`) at the place the
thing happens.

Why one module: every line an operator reads goes through the same three steps, whatever
logger wrote it (ours, a plugin's, a library's):

1. :class:`Scrubber` replaces every known secret (config values and secret-looking
   environment variables) by ``***`` and every email-looking token by its sha256
   (``sailseg.tracing.hash_email``), in the message and in each structured field;
2. :class:`FloodSummariser` lets the first ``burst`` lines of one kind and subject through
   per ``window`` seconds and then writes one summary ("412 retries of sailthru.user in the
   last 10 s, last error ...") instead of the rest;
3. :class:`JsonFormatter` (one JSON object a line: time, level, logger, message, the event's
   structured fields, trace_id/span_id) or the plain text format.

The event helpers also feed :mod:`sailseg.alerts.signals` (credential failures and rate-limit
waits are not in the store's counters, so the alert engine reads them from there).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .tracing import hash_email

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "FloodSummariser",
    "JsonFormatter",
    "Scrubber",
    "TextFormatter",
    "add_secrets",
    "banner_line",
    "config_secrets",
    "credential_failure",
    "current_format",
    "dead_letter",
    "dead_letters",
    "flush_summaries",
    "is_credential_failure",
    "lifecycle",
    "rate_limit_wait",
    "retry",
    "scrubber",
    "secrets_from_env",
    "setup_logging",
    "store_state",
    "trace_ids",
]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")

ops_log = logging.getLogger("sailseg.ops")

_EMAIL = re.compile(r"[^\s@:,;<>()\[\]\"'=/{}]+@[^\s@:,;<>()\[\]\"'=/{}]+\.[A-Za-z]{2,}")
_SECRET_ENV = ("key", "secret", "token", "password", "dsn", "auth")


class Scrubber:
    """Replaces secrets by ``***`` and emails by their sha256 in text and nested values."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str]) -> None:
        """Remember secret values (shorter than 6 characters are ignored: too many false hits)."""
        new = {v for v in values if isinstance(v, str) and len(v) >= 6} - self._secrets
        if new:
            self._secrets |= new
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def text(self, value: str) -> str:
        if self._pattern is not None:
            value = self._pattern.sub("***", value)
        if "@" in value:
            value = _EMAIL.sub(lambda m: hash_email(m.group(0))[:23], value)
        return value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {str(k): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value


#: the process-wide scrubber every handler set up by :func:`setup_logging` uses
scrubber = Scrubber()


def add_secrets(values: Iterable[str]) -> None:
    """Register secret values (config secrets, tokens) to be masked in every log line."""
    scrubber.add(values)


def secrets_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose name looks secret (``SAILTHRU_API_KEY``...)."""
    env = os.environ if env is None else env
    return [v for k, v in env.items() if any(h in k.lower() for h in _SECRET_ENV) and len(v) >= 6]


def config_secrets(cfg: Any, registry: Any = None) -> list[str]:
    """The config's secret values: whatever ``config show`` redacts (secret-looking keys,
    components' ``secret_fields``, values from secret-looking environment variables)."""
    from .config import redacted

    fields: dict[tuple[str, str], tuple[str, ...]] = {}
    if registry is not None:
        for kind in ("trigger", "transform", "resolver", "sink", "notifier"):
            for name, cls in registry.kind_map(kind).items():
                if getattr(cls, "secret_fields", ()):
                    fields[(kind, name)] = tuple(cls.secret_fields)
    out: list[str] = []

    def walk(raw: Any, red: Any) -> None:
        if red == "***":
            if isinstance(raw, str):
                out.append(raw)
            elif isinstance(raw, dict):
                out.extend(v for v in raw.values() if isinstance(v, str))
            elif isinstance(raw, list):
                out.extend(v for v in raw if isinstance(v, str))
        elif isinstance(raw, dict) and isinstance(red, dict):
            for k, v in raw.items():
                walk(v, red.get(k))
        elif isinstance(raw, list) and isinstance(red, list):
            for a, b in zip(raw, red, strict=False):
                walk(a, b)
        elif isinstance(raw, str) and isinstance(red, str) and raw != red:
            out.extend(p for p in re.findall(r"://[^:/@]+:([^@]+)@", raw))  # URL passwords
    walk(cfg.raw, redacted(cfg, fields))
    return out


def trace_ids(carrier: Mapping[str, str] | None = None) -> dict[str, str]:
    """``trace_id``/``span_id`` of the current span, else of a ``traceparent`` carrier."""
    try:
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}
    except Exception:  # noqa: BLE001,S110 - logging never fails because of tracing
        pass
    tp = (carrier or {}).get("traceparent", "")
    parts = tp.split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return {"trace_id": parts[1], "span_id": parts[2]}
    return {}


class _Bucket:
    __slots__ = ("kind", "last", "level", "passed", "start", "subject", "suppressed")

    def __init__(self, start: float, kind: str, subject: str, level: int) -> None:
        self.start = start
        self.passed = 0
        self.suppressed = 0
        self.last = ""
        self.kind = kind
        self.subject = subject
        self.level = level


_NOUNS = {"retry": "retries", "dead_letter": "dead letters", "rate_limit_wait": "rate-limit waits",
          "credential_failure": "credential failures", "store": "store errors"}


class FloodSummariser(logging.Filter):
    """Lets ``burst`` lines of one (kind, subject) through per ``window``; summarises the rest.

    Only records carrying an ``ops`` dict with a ``kind`` are counted (the event helpers'
    lines); every other record passes. Summaries are written by :meth:`flush`, called when a
    window ends (by the next line of that kind, and by a background timer every second).
    """

    def __init__(self, window: float = 10.0, burst: int = 5, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.burst = burst
        self.clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()
        self._timer: threading.Thread | None = None
        self._stop = threading.Event()

    def filter(self, record: logging.LogRecord) -> bool:
        ops = getattr(record, "ops", None)
        if not isinstance(ops, dict) or "kind" not in ops or ops.get("summary"):
            return True
        key = (str(ops["kind"]), str(ops.get("sink") or ops.get("component") or ops.get("pipeline") or "-"))
        now = self.clock()
        due: list[_Bucket] = []
        with self._lock:
            b = self._buckets.get(key)
            if b is not None and now - b.start >= self.window:
                due.append(self._buckets.pop(key))
                b = None
            if b is None:
                b = self._buckets[key] = _Bucket(now, key[0], key[1], record.levelno)
            b.level = max(b.level, record.levelno)
            if b.passed < self.burst:
                b.passed += 1
                ok = True
            else:
                b.suppressed += 1
                b.last = str(ops.get("error") or record.getMessage())
                ok = False
        for old in due:
            self._summarise(old)
        return ok

    def flush(self, *, force: bool = False) -> None:
        """Write the summary of every window that ended (all of them with ``force``)."""
        now = self.clock()
        with self._lock:
            due = [k for k, b in self._buckets.items() if force or now - b.start >= self.window]
            buckets = [self._buckets.pop(k) for k in due]
        for b in buckets:
            self._summarise(b)

    def _summarise(self, b: _Bucket) -> None:
        if not b.suppressed:
            return
        n = b.passed + b.suppressed
        noun = _NOUNS.get(b.kind, b.kind.replace("_", " ") + " lines")
        secs = max(1, round(min(self.clock() - b.start, self.window)))
        msg = (f"{n} {noun} of {b.subject} in the last {secs} s ({b.suppressed} not logged one by "
               f"one), last error: {b.last}")
        ops_log.log(b.level, msg, extra={"ops": {"kind": b.kind, "summary": True, "subject": b.subject,
                                                 "count": n, "suppressed": b.suppressed}})

    def start_timer(self) -> None:
        """Flush ended windows every second from a daemon thread (quiet systems too)."""
        if self._timer is not None:
            return

        def loop() -> None:
            while not self._stop.wait(1.0):
                try:
                    self.flush()
                except Exception:  # noqa: BLE001,S110 - never kill the timer (nowhere to log to)
                    pass

        self._timer = threading.Thread(target=loop, name="sailseg-log-flood", daemon=True)
        self._timer.start()

    def stop_timer(self) -> None:
        self._stop.set()


_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC ISO 8601), level, logger, message, fields, trace ids."""

    def __init__(self, scrub: Scrubber | None = None) -> None:
        super().__init__()
        self.scrub = scrub or scrubber

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.scrub.text(record.getMessage()),
        }
        ops = getattr(record, "ops", None)
        if isinstance(ops, dict):
            for k, v in ops.items():
                if v is not None:
                    out[k] = self.scrub.value(v)
        for k, v in record.__dict__.items():  # other `extra=` fields
            if k not in _STD_ATTRS and k != "ops" and k not in out and not k.startswith("_"):
                try:
                    json.dumps(v)
                except (TypeError, ValueError):
                    v = repr(v)
                out[k] = self.scrub.value(v)
        if "trace_id" not in out:
            out.update(trace_ids())
        if record.exc_info:
            out["exception"] = self.scrub.text(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message`` plus ``key=value`` structured fields, scrubbed."""

    def __init__(self, scrub: Scrubber | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.scrub = scrub or scrubber

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ops = getattr(record, "ops", None)
        if isinstance(ops, dict):
            fields = " ".join(f"{k}={v}" for k, v in ops.items()
                              if v is not None and k not in ("kind", "summary", "error"))
            if fields:
                text = f"{text} [{fields}]"
        return self.scrub.text(text)


_handler: logging.Handler | None = None
_flood: FloodSummariser | None = None
_format = "text"


def setup_logging(level: str = "info", fmt: str = "text", *, flood_window: float = 10.0,
                  flood_burst: int = 5, stream: Any = None) -> logging.Handler:
    """Install the one root handler (replacing an earlier one of ours); idempotent.

    Also registers the secret-looking environment variables' values with the scrubber.
    """
    global _handler, _flood, _format
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r} (use one of {', '.join(LOG_LEVELS)})")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (use text or json)")
    add_secrets(secrets_from_env())
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    if _flood is not None:
        _flood.stop_timer()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    _flood = FloodSummariser(window=flood_window, burst=flood_burst)
    handler.addFilter(_flood)
    _flood.start_timer()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # one line per HTTP request is noise at info (and may quote URLs); debug shows them
    for noisy in ("httpx", "httpcore", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level.lower() == "debug" else logging.WARNING)
    _handler = handler
    _format = fmt
    return handler


def current_format() -> str:
    """The format :func:`setup_logging` installed (``text`` before it ran)."""
    return _format


def banner_line(text: str) -> str:
    """The start-up banner as printed: as is in text mode, one JSON object in JSON mode (so
    every line of a JSON log parses; secrets in it are masked then)."""
    if _format != "json":
        return text
    record = logging.LogRecord("sailseg.serve", logging.INFO, __file__, 0, text, None, None)
    return JsonFormatter().format(record)


def flush_summaries() -> None:
    """Write pending flood summaries now (at shutdown)."""
    if _flood is not None:
        _flood.flush(force=True)


# -- event helpers (one call at the place the thing happens) -----------------------------------

def is_credential_failure(error_type: str, response: Any = None, status: int | None = None) -> bool:
    """401/403, or an error class named like an authentication failure (``SailthruAuthError``)."""
    if status in (401, 403):
        return True
    if isinstance(response, Mapping) and response.get("status") in (401, 403):
        return True
    low = error_type.lower()
    return "autherror" in low or "credential" in low or "unauthori" in low or "forbidden" in low


def retry(*, pipeline: str, sinks: Iterable[str], message_id: str, attempt: int, error: str,
          error_class: str, next_at: float, trace: Mapping[str, str] | None = None,
          status: int | None = None) -> None:
    """One line per retry scheduled (INFO; WARNING from the third attempt on)."""
    names = list(sinks)
    sink = ",".join(names)
    when = dt.datetime.fromtimestamp(next_at, tz=dt.UTC).isoformat(timespec="seconds")
    level = logging.WARNING if attempt >= 3 else logging.INFO
    ops_log.log(level, "retry %d of %s in pipeline %s scheduled for %s: %s",
                attempt, sink, pipeline, when, error,
                extra={"ops": {"kind": "retry", "outcome": "retry", "pipeline": pipeline, "sink": sink,
                               "message_id": message_id, "attempt": attempt, "error_class": error_class,
                               "error": error, "next_retry_at": when, **trace_ids(trace)}})
    if is_credential_failure(error_class, status=status):
        for s in names:
            credential_failure(component=s, error=error, pipeline=pipeline)
    if "ratelimit" in error_class.lower():
        from .alerts.signals import record_rate_limited

        for s in names:
            record_rate_limited(s)


def dead_letter(*, pipeline: str, sink: str, sink_type: str, message_id: str, attempt: int, error: str,
                error_class: str, response: Any = None, trace: Mapping[str, str] | None = None) -> None:
    """One ERROR line per dead letter written (and a credential-failure line when it is one)."""
    ops_log.error("dead letter: %s in pipeline %s gave up on message %s after %d attempt(s): %s",
                  sink, pipeline, message_id, attempt, error,
                  extra={"ops": {"kind": "dead_letter", "outcome": "dead", "pipeline": pipeline,
                                 "sink": sink, "sink_type": sink_type, "message_id": message_id, "attempt": attempt,
                                 "error_class": error_class, "error": error, **trace_ids(trace)}})
    if is_credential_failure(error_class, response):
        credential_failure(component=sink, error=error, pipeline=pipeline)


def dead_letters(outcome: Any, sink_types: Mapping[str, str]) -> None:
    """:func:`dead_letter` for each dead letter of a recorded :class:`~sailseg.store.base.Outcome`."""
    item = outcome.item
    for d in outcome.dead:
        dead_letter(pipeline=item.pipeline, sink=d.sink, sink_type=sink_types.get(d.sink, "-"),
                    message_id=str(item.event.payload.get("messageId", "")), attempt=item.attempt,
                    error=d.error, error_class=d.error_type, response=d.response, trace=item.event.trace)


def lifecycle(what: str, name: str, state: str, **fields: Any) -> None:
    """Start/stop of a pipeline (``what="pipeline"``) or trigger route (``"trigger"``)."""
    detail = " ".join(f"{k}={v}" for k, v in fields.items())
    ops_log.info("%s %s %s%s", what, name, state, f" ({detail})" if detail else "",
                 extra={"ops": {"event": f"{what}.{state}", what: name, **fields}})


def store_state(state: str, url: str, error: str | None = None) -> None:
    """``connected`` / ``reconnected`` (INFO) or ``lost`` (WARNING, once until reconnected)."""
    level = logging.WARNING if state == "lost" else logging.INFO
    ops_log.log(level, "store %s: %s%s", state, url, f" ({error})" if error else "",
                extra={"ops": {"event": f"store.{state}", "store": url, "error": error}})


def rate_limit_wait(*, component: str, endpoint: str, seconds: float) -> None:
    """A rate-limit wait: logged (WARNING) when above a second, always fed to the alerts."""
    from .alerts.signals import record_rate_wait

    record_rate_wait(component, seconds)
    if seconds > 1.0:
        ops_log.warning("%s waited %.1f s for the rate limit of %s", component, seconds, endpoint,
                        extra={"ops": {"kind": "rate_limit_wait", "component": component,
                                       "endpoint": endpoint, "waited_s": round(seconds, 3)}})


def credential_failure(*, component: str, error: str, pipeline: str | None = None) -> None:
    """An ERROR line for a refused credential (401/403, auth error code); feeds the alerts."""
    from .alerts.signals import record_credential_failure

    record_credential_failure(component, scrubber.text(error))
    ops_log.error("credential failure in %s: %s", component, error,
                  extra={"ops": {"kind": "credential_failure", "component": component, "sink": component,
                                 "pipeline": pipeline, "error": error}})
