"""``sailseg components [NAME]``: every installed component's options (types, defaults, docs),
generated from their msgspec Configs by :mod:`sailseg.reference`."""

from __future__ import annotations

import dataclasses
import json

import click

from ..errors import ConfigError
from .base import handle_errors

__all__ = ["add_components_command", "components"]


@click.command("components")
@click.argument("name", required=False)
@click.option("--kind", type=click.Choice(["trigger", "transform", "resolver", "sink"]),
              default=None, help="Only components of this kind (a NAME can exist per kind).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--markdown", is_flag=True,
              help="The whole reference as Markdown (what docs/components.md holds).")
@handle_errors
def components(name: str | None, kind: str | None, as_json: bool, markdown: bool) -> None:
    """List installed components, or one component's options with types, defaults and
    docs. Regenerate the docs with: sailseg components --markdown > docs/components.md"""
    from ..reference import component_docs, render_markdown, render_text

    docs = component_docs()
    if kind:
        docs = [d for d in docs if d.kind == kind]
    if name:
        docs = [d for d in docs if d.name == name]
        if not docs:
            from ..options import unknown_type_message

            installed = {d.name for d in component_docs() if not kind or d.kind == kind}
            raise ConfigError(unknown_type_message(kind or "component", name, installed))
    if markdown:
        click.echo(render_markdown(docs), nl=False)
    elif as_json:
        click.echo(json.dumps([dataclasses.asdict(d) for d in docs], indent=2))
    elif name:
        click.echo("\n\n".join(render_text(d) for d in docs))
    else:
        for d in docs:
            click.echo(f"{d.kind:<9} {d.name:<22} {d.description}")
        click.echo("\nDetails: sailseg components NAME")


def add_components_command(group: click.Group) -> None:
    """Attach the ``components`` command to ``group`` (the root ``sailseg`` group does this
    in :mod:`sailseg.cli`)."""
    group.add_command(components)
