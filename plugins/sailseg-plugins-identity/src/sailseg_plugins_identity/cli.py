"""CLI commands: ``sailseg identity show|unmatched``, ``sailseg privacy delete``,
``sailseg audit export``. Attached by the plugin's ``register_commands`` hook.

Outbound HTTP (the deleter's vendor calls) uses the transport found in the click context
object (``CliRunner().invoke(cli, args, obj=transport)``: how tests route it to an
emulator), else the default."""

from __future__ import annotations

import functools
import getpass
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import httpx

from sailseg import KV, Audit, ComponentContext, Sink
from sailseg.errors import ConfigError, SailsegError
from sailseg.store.base import Store

from . import audit
from .graph import IdentityGraph, parse_id
from .timeutil import iso

__all__ = ["audit_group", "identity_group", "parse_id", "privacy_group"]


F = TypeVar("F", bound=Callable[..., Any])


# ``sailseg.cli`` loads plugin commands while it is imported, so its helpers are reached at
# call time, never at import time (importing this module first must not be circular).
def handle_errors(fn: F) -> F:
    """``sailseg.cli.handle_errors`` (one-line errors, exit codes), applied at call time."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sailseg.cli import handle_errors as core_handle_errors

        return core_handle_errors(fn)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def config_option(f: F) -> F:
    return click.option("-c", "--config", "config_path", default=None, metavar="FILE",
                        help="Pipeline config (default: $SAILSEG_CONFIG or ./sailseg.toml).")(f)


def store_option(f: F) -> F:
    return click.option("--store", "store_url", default=None, metavar="URL",
                        help="Store URL; overrides the config and $SAILSEG_STORE.")(f)


def _run(fn: Callable[[Store], Awaitable[Any]], config_path: str | None, store_url: str | None) -> Any:
    import anyio

    from sailseg.cli import store_for

    async def main() -> Any:
        store = store_for(config_path, store_url)
        await store.open()
        try:
            await store.check_schema(auto_migrate=store.url.startswith("sqlite"))
            return await fn(store)
        finally:
            await store.close()

    return anyio.run(main)


@click.group("identity")
def identity_group() -> None:
    """Inspect the identity graph and events that never resolved."""


@identity_group.command("show")
@click.argument("identifier")
@config_option
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def identity_show(identifier: str, config_path: str | None, store_url: str | None, as_json: bool) -> None:
    """Show the person IDENTIFIER belongs to: identifiers, sink keys, history of conflicts.

    IDENTIFIER is an email, a userId/anonymousId, or KIND:VALUE (e.g. sid:57b4...).
    """

    async def show(store: Store) -> dict[str, Any] | None:
        graph = IdentityGraph(KV(store))
        for kind, value in parse_id(identifier):
            root = await graph.find(kind, value)
            if root is not None:
                return await graph.describe(root)
        return None

    view = _run(show, config_path, store_url)
    if view is None:
        raise SailsegError(f"no person known for {identifier!r}")
    if as_json:
        click.echo(json.dumps(view, indent=2, sort_keys=True))
        return
    click.echo(f"cluster {view['cluster']}")
    for kind, values in sorted(view["identifiers"].items()):
        click.echo(f"  {kind:12} {', '.join(values)}")
    click.echo(f"  sailthru key: {json.dumps(view['keys']['sailthru'], sort_keys=True)}")
    click.echo(f"  segment key:  {json.dumps(view['keys']['segment'], sort_keys=True)}")
    if view["parked"]:
        click.echo(f"  parked:       {', '.join(view['parked'])}")
    if view["history"]:
        click.echo("history (policy: latest by event time wins, history kept):")
        for h in view["history"]:
            rest = {k: v for k, v in h.items() if k not in ("at", "what")}
            click.echo(f"  {iso(float(h.get('at', 0)))}  {h.get('what')}  {json.dumps(rest, sort_keys=True)}")


@identity_group.command("unmatched")
@config_option
@store_option
@click.option("--expire/--no-expire", default=True, show_default=True,
              help="First turn parked events past their expiry into unmatched ones.")
@click.option("--older-than", "older_than", default="1h", show_default=True, metavar="DURATION",
              help="Also list events still parked that have waited at least this long "
                   "(30s, 15m, 24h, 7d; 0 lists every parked event).")
@click.option("--limit", default=100, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@handle_errors
def identity_unmatched(config_path: str | None, store_url: str | None, expire: bool, older_than: str,
                       limit: int, as_json: bool) -> None:
    """Events whose identity has not resolved: those still parked for longer than
    --older-than (state ``parked``), and those whose parking time ran out (``unmatched``),
    each with the reason."""
    import time

    from sailseg.config import parse_duration

    age = parse_duration(older_than, where="--older-than")

    async def collect(store: Store) -> list[dict[str, Any]]:
        now = time.time()
        if expire:
            await store.expire_parked(now=now)
        out: list[dict[str, Any]] = []
        # parked items come oldest first, so the first `limit` hold every one old enough
        for pk in await store.list_parked(limit=limit):
            if now - pk.parked_at >= age:
                out.append(_row(pk.item.id, pk.item.pipeline, pk.parked_at, pk.item.event.payload,
                                pk.reason, state="parked", waited=now - pk.parked_at))
        offset = 0
        while len(out) < limit:
            page = await store.list_dead_letters(limit=500, offset=offset)
            if not page:
                break
            offset += len(page)
            for d in page:
                if d.error_type == "Unmatched":
                    out.append(_row(d.id, d.pipeline, d.created_at, d.event.payload, d.error,
                                    state="unmatched", waited=None))
        return out[:limit]

    rows = _run(collect, config_path, store_url)
    for r in rows:
        if as_json:
            click.echo(json.dumps(r, sort_keys=True))
        else:
            who = f"anonymousId={r['anonymousId']}" if r["anonymousId"] else f"userId={r['userId']}"
            what = r["event"] or r["type"]
            waited = f" (waiting {r['waited']:.0f}s)" if r["waited"] is not None else ""
            click.echo(f"{r['id']}  {r['state']}{waited}  {r['at']}  {r['pipeline']}  {what}  {who}  "
                       f"reason: {r['reason']}")
    if not rows and not as_json:
        click.echo("no unmatched events")


def _row(id_: str, pipeline: str, at: float, p: dict[str, Any], reason: str, *, state: str,
         waited: float | None) -> dict[str, Any]:
    return {"id": id_, "state": state, "pipeline": pipeline, "at": iso(at), "waited": waited,
            "type": p.get("type"), "event": p.get("event"), "userId": p.get("userId"),
            "anonymousId": p.get("anonymousId"), "messageId": p.get("messageId"), "reason": reason}


@click.group("privacy")
def privacy_group() -> None:
    """Privacy operations (erasure)."""


#: the deleter used when neither ``--deleter`` nor a configured ``privacy.delete`` names one
DEFAULT_DELETER = "sailthru.delete"


def _deleter_name(cfg: Any, name: str | None) -> str:
    """``--deleter``, else the ``deleter`` of the config's first ``privacy.delete`` sink,
    else :data:`DEFAULT_DELETER`."""
    if name:
        return name
    specs = list(cfg.components.values()) if cfg is not None else []
    erase = next((s for s in specs if s.type == "privacy.delete"), None)
    if erase is not None:
        return str(erase.options.get("deleter", ""))
    return DEFAULT_DELETER


async def _start_deleter(cfg: Any, name: str, store: Store, transport: Any,
                         resources: dict[str, Any]) -> Sink:
    """Build and start the deleter sink: the config's ``[sinks.NAME]`` table, else the sink
    type NAME with no options (its account then comes from the environment)."""
    from sailseg.config import ComponentSpec
    from sailseg.plugins import build_registry, make_plugin_manager
    from sailseg.runtime import build_component

    spec = cfg.sink_spec(name) if cfg is not None else None
    if spec is None:
        spec = ComponentSpec(kind="sink", type=name, instance=name, options={},
                             where=f"--deleter {name}")
    ctx = ComponentContext.over_store(store, instance=name, transport=transport,
                                      env=dict(os.environ), resources=resources)
    comp = build_component(spec, build_registry(make_plugin_manager()), ctx)
    if not isinstance(comp, Sink):
        raise ConfigError(f"--deleter {name}: not a sink")
    await comp.start()
    return comp


@privacy_group.command("delete")
@click.option("--email", default=None, help="The person's email.")
@click.option("--user-id", default=None, help="The person's userId.")
@click.option("--deleter", default=None, metavar="NAME",
              help="Sink that deletes in the vendor: a [sinks.NAME] of the config, or a sink "
                   "type (default: the configured privacy.delete's deleter, else "
                   f"{DEFAULT_DELETER}).")
@click.option("--no-deleter", "--no-sailthru", "no_deleter", is_flag=True,
              help="Only purge sailseg's store (no vendor call).")
@config_option
@store_option
@handle_errors
def privacy_delete(email: str | None, user_id: str | None, deleter: str | None,
                   no_deleter: bool, config_path: str | None, store_url: str | None) -> None:
    """Delete a person in the vendor (through the deleter sink) and purge sailseg's copy (the
    audit record is kept, with the email hashed). Not-found in the vendor counts as done."""
    if bool(email) == bool(user_id):
        raise click.UsageError("give exactly one of --email or --user-id")
    from pathlib import Path

    from sailseg.cli import load, resolve_config_path

    from .privacy import Eraser

    cfg = load(config_path, store_url) if Path(resolve_config_path(config_path)).exists() else None
    name = "" if no_deleter else _deleter_name(cfg, deleter)
    transport = click.get_current_context().find_object(httpx.AsyncBaseTransport)

    async def erase(store: Store) -> dict[str, Any]:
        import anyio

        resources: dict[str, Any] = {}
        sink = await _start_deleter(cfg, name, store, transport, resources) if name else None
        try:
            ctx = ComponentContext.over_store(store, instance="privacy delete",
                                              env=dict(os.environ))
            given = {"email": email} if email else {"userId": str(user_id)}
            return dict(await Eraser(ctx, sink).erase(
                given, actor=f"cli:{_user()}", system="cli", request=None))
        finally:
            with anyio.CancelScope(shield=True):
                if sink is not None:
                    await sink.stop()
                for res in resources.values():
                    aclose = getattr(res, "aclose", None)
                    if aclose is not None:
                        await aclose()

    res = _run(erase, config_path, store_url)
    click.echo(json.dumps(res, sort_keys=True))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


@click.group("audit")
def audit_group() -> None:
    """The audit trail of consent changes and deletions."""


@audit_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True,
              help="One JSON object per line, or CSV with a header row.")
@click.option("--since", default="0", show_default=True,
              help="ISO date/time, unix time, or a duration ago (24h, 30d).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to a file instead of stdout.")
@config_option
@store_option
@handle_errors
def audit_export(fmt: str, since: str, output: str | None, config_path: str | None, store_url: str | None) -> None:
    """Export audit records at or after --since (oldest first)."""
    from sailseg.cli import parse_since

    t = 0.0 if since in ("0", "") else parse_since(since)

    async def fetch(store: Store) -> Any:
        return await Audit(store).since(t)

    records = _run(fetch, config_path, store_url)
    text = audit.export_jsonl(records) if fmt == "jsonl" else audit.export_csv(records)
    if output:
        with open(output, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        click.echo(f"{len(records)} record(s) written to {output}", err=True)
    else:
        click.echo(text, nl=False)
