"""``sailseg send FILE...``: post a sample event, correctly signed, to a running sailseg.

Why: trying a pipeline should not need a hand-computed HMAC or MD5 signature. The file's shape
says what it is:

- a Segment message (an object with ``type``) or a JSON array of them: a **Segment webhook
  delivery**, posted as JSON with ``X-Signature`` = hex HMAC-SHA1 of the body made with the
  webhook's shared secret (for an array, of its first element's text, as Segment does);
- an object with ``action`` (and no ``type``): a **Sailthru postback**, posted form-encoded
  with ``api_key`` and ``sig`` (MD5 of the secret and the sorted values, nested values sent as
  ``vars[name]=...`` bracket keys, as Sailthru does);
- a wrapper ``{"sailseg_send": KIND, ..., "body": ...}`` for anything else:

  ``segment.webhook`` / ``sailthru.postback``  the same, with an optional ``path`` (route)
  ``sailthru.api``       a signed Sailthru API call (``method``, ``endpoint``) to the sandbox's
                         Sailthru emulator (or ``$SAILTHRU_API_URL``): data that sailseg then
                         polls, such as a purchase
  ``sailthru.emulator``  a JSON POST to the sandbox Sailthru emulator's control API (``path``),
                         e.g. seeding a sent campaign with opens and clicks

Where and with which secrets: the running sandbox's ``.sailseg/sandbox/endpoints.json`` (URL,
routes and its sandbox-only secrets), else ``http://127.0.0.1:8080`` and the environment
(``SEGMENT_WEBHOOK_SECRET``, ``SAILTHRU_API_KEY``, ``SAILTHRU_API_SECRET``). With ``--to URL``
the environment's secrets win, so the command also works against a real deployment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import click

from .cli import cli, handle_errors
from .errors import ConfigError, SailsegError

__all__ = [
    "send",
    "Sample",
    "load_sample",
    "segment_webhook_body",
    "sailthru_form",
    "sailthru_api_params",
    "sailthru_sig",
]

KINDS = ("segment.webhook", "sailthru.postback", "sailthru.api", "sailthru.emulator")
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_PATHS = {"segment.webhook": "/segment/webhook", "sailthru.postback": "/sailthru/postback"}


@dataclass
class Sample:
    """One thing to send, decoded from a sample file."""

    kind: str
    body: Any
    path: str | None = None
    method: str = "POST"
    endpoint: str | None = None


def load_sample(file: str | os.PathLike[str]) -> Sample:
    """Read and classify a sample file (see the module docstring).

    :raises ConfigError: unreadable JSON or an unrecognised shape, naming the file.
    """
    p = Path(file)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{p}: not valid JSON: {exc}") from None
    if isinstance(data, dict) and "sailseg_send" in data:
        kind = data["sailseg_send"]
        if kind not in KINDS:
            raise ConfigError(f"{p}: sailseg_send must be one of {', '.join(KINDS)}, got {kind!r}")
        if "body" not in data:
            raise ConfigError(f"{p}: a sailseg_send wrapper needs a `body`")
        if kind == "sailthru.api" and not data.get("endpoint"):
            raise ConfigError(f'{p}: sailthru.api needs an `endpoint` (e.g. "purchase")')
        if kind == "sailthru.emulator" and not data.get("path"):
            raise ConfigError(f'{p}: sailthru.emulator needs a `path` (e.g. "/_emulator/blasts")')
        return Sample(
            kind=kind,
            body=data["body"],
            path=data.get("path"),
            method=str(data.get("method") or "POST").upper(),
            endpoint=data.get("endpoint"),
        )
    if isinstance(data, list) and data and all(isinstance(m, dict) for m in data):
        return Sample(kind="segment.webhook", body=data)
    if isinstance(data, dict) and "type" in data:
        return Sample(kind="segment.webhook", body=data)
    if isinstance(data, dict) and "action" in data:
        return Sample(kind="sailthru.postback", body=data)
    raise ConfigError(
        f"{p}: not a Segment message (no `type`), a batch, a Sailthru postback (no "
        '`action`) or a {"sailseg_send": ...} wrapper'
    )


# -- signing -----------------------------------------------------------------------------
def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def segment_webhook_body(body: Any, secret: str | None) -> tuple[bytes, dict[str, str]]:
    """The raw JSON body and headers of a Segment webhook delivery.

    ``X-Signature`` covers the whole body for one message and only the first element's text
    (cut from the body exactly as sent) for a batch, which is what Segment signs.
    """
    if isinstance(body, list):
        parts = [_compact(m) for m in body]
        text, signed = "[" + ",".join(parts) + "]", parts[0]
    else:
        text = signed = _compact(body)
    headers = {"content-type": "application/json", "user-agent": "sailseg-send"}
    if secret:
        headers["x-signature"] = hmac.new(
            secret.encode(), signed.encode("utf-8"), hashlib.sha1
        ).hexdigest()
    return text.encode("utf-8"), headers


def _leaves(value: Any, prefix: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _leaves(v, f"{prefix}[{k}]" if prefix else str(k), out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _leaves(v, f"{prefix}[{i}]", out)
    elif value is not None:
        out.append((prefix, "1" if value is True else "0" if value is False else str(value)))


def sailthru_sig(values: list[str], secret: str) -> str:
    """Sailthru's signature: MD5 hex of the secret followed by the values sorted by code point."""
    return hashlib.md5((secret + "".join(sorted(values))).encode("utf-8")).hexdigest()


def sailthru_form(fields: Mapping[str, Any], api_key: str, secret: str) -> bytes:
    """A signed, form-encoded Sailthru postback (nested data as ``name[key]`` fields)."""
    pairs: list[tuple[str, str]] = []
    _leaves({k: v for k, v in fields.items() if k not in ("api_key", "sig")}, "", pairs)
    pairs.append(("api_key", api_key))
    pairs.append(("sig", sailthru_sig([v for _, v in pairs], secret)))
    return urlencode(pairs).encode("ascii")


def sailthru_api_params(data: Any, api_key: str, secret: str) -> dict[str, str]:
    """The wire parameters of a Sailthru API call: ``api_key``, ``format``, ``json``, ``sig``."""
    js = _compact(data)
    return {
        "api_key": api_key,
        "format": "json",
        "json": js,
        "sig": sailthru_sig([api_key, "json", js], secret),
    }


# -- targets -----------------------------------------------------------------------------
@dataclass
class _Target:
    base: str
    explicit_path: str | None
    routes: dict[str, list[str]]
    secrets: dict[str, str]
    sailthru_url: str | None
    hint_sailthru: str | None
    hint_segment: str | None


def _target(to_url: str | None) -> _Target:
    from .sandbox import read_endpoints

    ep = read_endpoints()
    env = os.environ
    env_secrets = {
        k: v
        for k, v in {
            "segment_webhook_secret": env.get("SEGMENT_WEBHOOK_SECRET"),
            "sailthru_api_key": env.get("SAILTHRU_API_KEY"),
            "sailthru_api_secret": env.get("SAILTHRU_API_SECRET"),
        }.items()
        if v
    }
    ep_secrets = dict(ep.secrets) if ep else {}
    explicit_path = None
    if to_url:
        parts = urlsplit(to_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"--to must be an http(s) URL, got {to_url!r}")
        base = f"{parts.scheme}://{parts.netloc}"
        explicit_path = parts.path if parts.path not in ("", "/") else None
        secrets = {**ep_secrets, **env_secrets}
    else:
        base = ep.sailseg_url if ep else DEFAULT_URL
        secrets = {**env_secrets, **ep_secrets}
    sailthru_url = (
        (ep.sailthru_url if ep and not to_url else None)
        or env.get("SAILTHRU_API_URL")
        or (ep.sailthru_url if ep else None)
    )
    return _Target(
        base=base.rstrip("/"),
        explicit_path=explicit_path,
        routes=dict(ep.routes) if ep else {},
        secrets=secrets,
        sailthru_url=sailthru_url,
        hint_sailthru=f"{ep.sailthru_url}/_emulator/state" if ep else None,
        hint_segment=f"{ep.segment_url}/_emulator/messages" if ep else None,
    )


def _route(sample: Sample, target: _Target, path_opt: str | None) -> str:
    path = path_opt or target.explicit_path or sample.path
    if not path:
        known = target.routes.get(sample.kind) or [DEFAULT_PATHS[sample.kind]]
        path = known[0]
    return f"{target.base}/{path.lstrip('/')}"


def _post(url: str, content: bytes, headers: dict[str, str]) -> tuple[int, str]:
    import httpx

    try:
        r = httpx.post(url, content=content, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        raise SailsegError(
            f"cannot reach {url}: {type(exc).__name__}: {exc} "
            "(is `sailseg serve --sandbox` running?)"
        ) from None
    return r.status_code, r.text


def _deliver(
    sample: Sample, target: _Target, path_opt: str | None
) -> tuple[str, int, str, str | None]:
    """Send one sample; return (what, status, response text, where to look)."""
    s = target.secrets
    if sample.kind == "segment.webhook":
        url = _route(sample, target, path_opt)
        body, headers = segment_webhook_body(sample.body, s.get("segment_webhook_secret"))
        status, text = _post(url, body, headers)
        return f"POST {url}", status, text, target.hint_sailthru
    if sample.kind == "sailthru.postback":
        key, secret = s.get("sailthru_api_key"), s.get("sailthru_api_secret")
        if not key or not secret:
            raise ConfigError(
                "signing a Sailthru postback needs SAILTHRU_API_KEY and SAILTHRU_API_SECRET "
                "(or a running sandbox)"
            )
        url = _route(sample, target, path_opt)
        status, text = _post(
            url,
            sailthru_form(sample.body, key, secret),
            {"content-type": "application/x-www-form-urlencoded", "user-agent": "sailseg-send"},
        )
        return f"POST {url}", status, text, target.hint_segment
    if not target.sailthru_url:
        raise ConfigError(
            f"{sample.kind}: no Sailthru URL known: start the sandbox or set SAILTHRU_API_URL"
        )
    if sample.kind == "sailthru.emulator":
        url = f"{target.sailthru_url.rstrip('/')}/{str(sample.path).lstrip('/')}"
        status, text = _post(
            url, _compact(sample.body).encode(), {"content-type": "application/json"}
        )
        return f"POST {url}", status, text, target.hint_segment
    key, secret = s.get("sailthru_api_key"), s.get("sailthru_api_secret")
    if not key or not secret:
        raise ConfigError(
            "a Sailthru API call needs SAILTHRU_API_KEY and SAILTHRU_API_SECRET "
            "(or a running sandbox)"
        )
    url = f"{target.sailthru_url.rstrip('/')}/{str(sample.endpoint).strip('/')}"
    params = sailthru_api_params(sample.body, key, secret)
    import httpx

    try:
        if sample.method == "GET":
            r = httpx.get(url, params=params, timeout=30.0)
        else:
            r = httpx.request(sample.method, url, data=params, timeout=30.0)
    except httpx.HTTPError as exc:
        raise SailsegError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
    return f"{sample.method} {url}", r.status_code, r.text, target.hint_segment


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--to",
    "to_url",
    default=None,
    metavar="URL",
    help="sailseg's base URL, or a full route URL (default: the running sandbox's, else "
    f"{DEFAULT_URL}).",
)
@click.option(
    "--path",
    "path_opt",
    default=None,
    metavar="PATH",
    help="Route path (default: the file's `path`, else /segment/webhook or /sailthru/postback).",
)
@handle_errors
def send(files: tuple[str, ...], to_url: str | None, path_opt: str | None) -> None:
    """Post sample events (Segment webhook deliveries, Sailthru postbacks), signed, to sailseg.

    Samples live in examples/events/. Exits 1 when any post is not answered with 2xx.
    """
    target = _target(to_url)
    failed = 0
    hints: list[str] = []
    for f in files:
        sample = load_sample(f)
        what, status, text, hint = _deliver(sample, target, path_opt)
        ok = 200 <= status < 300
        failed += not ok
        click.echo(f"{f}: {sample.kind} -> {what}: {status} {text.strip()[:300]}")
        if ok and hint and hint not in hints:
            hints.append(hint)
    for h in hints:
        click.echo(f"  look: {h}")
    if failed:
        raise SailsegError(f"{failed} of {len(files)} sample(s) were not accepted")
