"""``sailseg plugins | validate | config show | run``: inspect plugins and pipelines."""

from __future__ import annotations

import json
import tempfile
from typing import Any

import click

from ..errors import ConfigError
from .base import config_option, handle_errors, load, registry, run_async, warn_unset
from .output import flatten, format_reports, json_option

__all__ = ["config_group", "plugins", "run", "validate"]


@click.command()
@json_option
@handle_errors
def plugins(as_json: bool) -> None:
    """List installed plugins and the components they register."""
    from ..plugins import list_plugins, make_plugin_manager

    rows = list_plugins(make_plugin_manager())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'plugin':<10} {'distribution':<26} {'version':<8} components")
    for r in rows:
        comps = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["components"].items()) or "-"
        click.echo(f"{r['name']:<10} {r['distribution']:<26} {r['version']:<8} {comps}")


async def _check_components(cfg: Any) -> list[str]:
    """Convert every component's options to its Config and start the transforms (which
    compiles their expressions) against a throwaway store, so nothing real is touched; then
    check that every pipeline can deliver (:mod:`sailseg.deliverability`)."""
    from ..components import ComponentContext
    from ..deliverability import pipeline_problems
    from ..runtime import build_component, open_store

    reg = registry()
    lines = []
    built = {}
    with tempfile.TemporaryDirectory(prefix="sailseg-validate-") as tmp:
        store = open_store(f"sqlite:///{tmp}/validate.db", reg)
        await store.open()
        try:
            await store.migrate()
            for (kind, inst), spec in cfg.components.items():
                comp = built[(kind, inst)] = build_component(
                    spec, reg, ComponentContext.over_store(store, instance=inst))
                if kind == "transform":
                    try:
                        await comp.start()
                    except ConfigError as exc:
                        raise ConfigError(f"{spec.where}: {exc}") from None
                    finally:
                        await comp.stop()
                lines.append(f"{kind:<9} {inst} ({spec.type})")
        finally:
            await store.close()
    if problems := pipeline_problems(cfg, built):
        raise ConfigError("\n".join(problems))
    return lines


@click.command()
@click.argument("file", type=click.Path(dir_okay=False), default=None, required=False)
@click.option("--require-env", is_flag=True,
              help="Treat an unset ${VAR} as an error, as `sailseg serve` does (default: a "
              "warning, and the rest is still checked).")
@json_option
@handle_errors
def validate(file: str | None, require_env: bool, as_json: bool) -> None:
    """Check a config file: syntax, component types and every component's options.

    Unset ``${VAR}`` variables are warnings here (``sailseg serve`` refuses them): the rest
    of the file is still checked with a placeholder in their place.
    """
    cfg = load(file, read_only=not require_env)
    warn_unset(cfg)
    checked = run_async(_check_components, cfg)
    if as_json:
        click.echo(json.dumps({
            "ok": True, "path": cfg.path, "pipelines": sorted(cfg.pipelines),
            "components": [line.split()[:2] + [line.split()[2].strip("()")] for line in checked],
            "unset_variables": sorted(set(cfg.unset_vars.values())),
        }, indent=2))
        return
    click.echo(f"OK: {cfg.path}: {len(cfg.pipelines)} pipeline(s), {len(cfg.components)} component(s)")


@click.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@config_option
@json_option
@handle_errors
def config_show(config_path: str | None, as_json: bool) -> None:
    """Print the interpolated config (``key = value`` lines, or --json) with every secret
    redacted; an unset variable shows as ``${VAR:unset}``."""
    from ..config import redacted

    cfg = load(config_path, read_only=True)
    reg = registry()
    secrets: dict[tuple[str, str], tuple[str, ...]] = {}
    for kind in ("trigger", "transform", "resolver", "sink", "notifier"):
        for name, cls in reg.kind_map(kind).items():
            if getattr(cls, "secret_fields", ()):
                secrets[(kind, name)] = tuple(cls.secret_fields)
    data = redacted(cfg, secrets)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"# {cfg.path}")
    for line in flatten(data):
        click.echo(line)


@click.command()
@config_option
@click.option("--event", "event_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A JSON file with one Segment-spec message (or an array).")
@click.option("--pipeline", "pipeline_name", default=None, help="Only this pipeline (default: all).")
@json_option
@handle_errors
def run(config_path: str | None, event_file: str, pipeline_name: str | None,
        as_json: bool) -> None:
    """Push one event through pipelines in-process and print each stage and what each sink
    would send. Nothing is sent and nothing is stored in your data directory."""
    from ..events import decode_messages

    cfg = load(config_path, read_only=True)
    warn_unset(cfg)
    with open(event_file, "rb") as fh:
        messages = decode_messages(fh.read())
    names = [pipeline_name] if pipeline_name else list(cfg.pipelines)
    for n in names:
        if n not in cfg.pipelines:
            raise ConfigError(f"{cfg.path}: no pipeline named {n!r} (have: {', '.join(cfg.pipelines)})")
    out = run_async(_dry_run, cfg, names, messages)
    click.echo(json.dumps(out, indent=2, default=str) if as_json else format_reports(out))


async def _dry_run(cfg: Any, names: list[str], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from ..runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="sailseg-run-") as tmp:
        cfg.store.url = f"sqlite:///{tmp}/run.db"
        async with Runtime(cfg, deliver=False) as rt:
            from ..dryrun import trace_event

            results = []
            for msg in messages:
                for n in names:
                    results.append(await trace_event(rt, n, msg))
            return results

