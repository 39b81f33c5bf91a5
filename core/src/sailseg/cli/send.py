"""``sailseg send FILE...``: post a sample event, correctly signed, to a running sailseg.

Why: trying a pipeline should not need a hand-computed HMAC or MD5 signature. What a file is
and how it is signed comes from the plugins (:mod:`sailseg.samples`): a trigger recognises
and signs the events it receives (:meth:`sailseg.Trigger.sign_sample`); a vendor emulator
sends its own sample kinds (``register_emulators``), such as a vendor API call.

Where and with which secrets: the running sandbox's ``.sailseg/sandbox/endpoints.json`` (URL,
routes, and its sandbox-only environment), else ``http://127.0.0.1:8080`` and the process
environment (``SEGMENT_WEBHOOK_SECRET``, ``SAILTHRU_API_KEY``, ...). With ``--to URL`` the
process environment wins, so the command also works against a real deployment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from ..errors import ConfigError, SailsegError
from .base import handle_errors, registry

if TYPE_CHECKING:
    from ..plugins import Registry
    from ..samples import Sample

__all__ = ["send"]

DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass
class _Target:
    base: str
    explicit_path: str | None
    routes: dict[str, list[str]]
    env: dict[str, str]
    looks: list[str]


def _target(to_url: str | None, reg: Registry) -> _Target:
    from ..sandbox import read_endpoints

    ep = read_endpoints()
    sandbox_env = dict(ep.env) if ep else {}
    explicit_path = None
    if to_url:
        parts = urlsplit(to_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"--to must be an http(s) URL, got {to_url!r}")
        base = f"{parts.scheme}://{parts.netloc}"
        explicit_path = parts.path if parts.path not in ("", "/") else None
        env = {**sandbox_env, **os.environ}
    else:
        base = ep.sailseg_url if ep else DEFAULT_URL
        env = {**os.environ, **sandbox_env}
    looks: list[str] = []
    if ep:
        for name, url in sorted(ep.emulators.items()):
            emu = reg.emulators.get(name)
            for label, text in emu.inspect(url) if emu else []:
                looks.append(f"{label}: {text}")
    return _Target(base=base.rstrip("/"), explicit_path=explicit_path,
                   routes=dict(ep.routes) if ep else {}, env=env, looks=looks)


def _post(method: str, url: str, content: bytes, headers: Any,
          params: Any = None) -> tuple[int, str]:
    import httpx

    try:
        r = httpx.request(method, url, content=content or None, headers=dict(headers or {}),
                          params=params, timeout=30.0)
    except httpx.HTTPError as exc:
        raise SailsegError(
            f"cannot reach {url}: {type(exc).__name__}: {exc} "
            "(is `sailseg serve --sandbox` running?)"
        ) from None
    return r.status_code, r.text


def _deliver(sample: Sample, target: _Target, path_opt: str | None,
             reg: Registry) -> tuple[str, int, str]:
    """Send one sample; return (what, status, response text)."""
    from ..samples import sample_trigger, sign_sample

    if sample.emulator is not None:
        call = sample.emulator.samples[sample.kind](sample.data, target.env)
        status, text = _post(call.method, call.url, call.content, call.headers, call.params)
        return f"{call.method} {call.url}", status, text
    signed = sign_sample(sample, reg, target.env)
    path = path_opt or target.explicit_path or sample.path or signed.path
    if not path:
        known = target.routes.get(sample.kind)
        if known:
            path = known[0]
        else:
            routes = list(sample_trigger(sample.kind, reg, target.env).routes())
            if not routes:
                raise ConfigError(f"{sample.kind} serves no route; pass --path")
            path = routes[0].path
    url = f"{target.base}/{path.lstrip('/')}"
    headers = {"user-agent": "sailseg-send", **signed.headers}
    status, text = _post("POST", url, signed.content, headers)
    return f"POST {url}", status, text


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--to", "to_url", default=None, metavar="URL",
    help="sailseg's base URL, or a full route URL (default: the running sandbox's, else "
    f"{DEFAULT_URL}).",
)
@click.option(
    "--path", "path_opt", default=None, metavar="PATH",
    help="Route path (default: the file's `path`, else the trigger's route).",
)
@handle_errors
def send(files: tuple[str, ...], to_url: str | None, path_opt: str | None) -> None:
    """Post sample events (Segment webhook deliveries, Sailthru postbacks...), signed, to
    sailseg.

    Samples live in examples/events/. Exits 1 when any post is not answered with 2xx.
    """
    from ..samples import load_sample

    reg = registry()
    target = _target(to_url, reg)
    failed = 0
    for f in files:
        sample = load_sample(f, reg)
        what, status, text = _deliver(sample, target, path_opt, reg)
        ok = 200 <= status < 300
        failed += not ok
        click.echo(f"{f}: {sample.kind} -> {what}: {status} {text.strip()[:300]}")
    if failed < len(files):
        for look in target.looks:
            click.echo(f"  look: {look}")
    if failed:
        raise SailsegError(f"{failed} of {len(files)} sample(s) were not accepted")
