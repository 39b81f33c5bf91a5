"""The component reference, generated from the installed components' msgspec ``Config``s.

Why generated: the options a component accepts are its ``Config`` struct (unknown keys are
rejected), so the reference is read from there (``msgspec.inspect``: names, types, defaults)
instead of being written by hand and drifting. ``sailseg components [NAME]`` prints it, and
``docs/components.md`` is this module's Markdown (a test fails when the file is stale;
regenerate with ``sailseg components --markdown > docs/components.md`` or
``python -m sailseg.reference > docs/components.md``).

Where an option's documentation comes from, first found wins (a Config's own class first, then
its bases, so shared account options are documented once):

1. ``:param name: text`` in the Config's docstring (continuation lines indented);
2. a ``#: text`` comment on the line(s) above the field;
3. a trailing ``# text`` comment on the field's line.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

import msgspec
import msgspec.inspect as mi

__all__ = ["ComponentDoc", "OptionDoc", "component_docs", "main", "render_markdown", "render_text"]

KINDS = ("trigger", "transform", "resolver", "sink")


@dataclass
class OptionDoc:
    """One option of a component: as written in sailseg.toml."""

    name: str
    type: str
    default: str | None  # None: required
    doc: str = ""


@dataclass
class ComponentDoc:
    kind: str
    name: str
    distribution: str
    description: str
    secret_fields: tuple[str, ...] = ()
    options: list[OptionDoc] = field(default_factory=list)


# -- types and defaults ----------------------------------------------------------------------
def type_name(t: mi.Type) -> str:
    """A short, TOML-minded name for a msgspec type (``list[str]``, ``'a' | 'b'``, ``table``)."""
    if isinstance(t, mi.UnionType):
        return " | ".join(type_name(x) for x in t.types)
    if isinstance(t, mi.LiteralType):
        return " | ".join(repr(v) for v in t.values)
    if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        return f"list[{type_name(t.item_type)}]"
    if isinstance(t, mi.DictType):
        return f"table[{type_name(t.key_type)}, {type_name(t.value_type)}]"
    if isinstance(t, mi.StructType):
        return "table{" + ", ".join(f.encode_name for f in t.fields) + "}"
    simple = {mi.StrType: "str", mi.IntType: "int", mi.FloatType: "float", mi.BoolType: "bool",
              mi.NoneType: "none", mi.AnyType: "any"}
    for cls, name in simple.items():
        if isinstance(t, cls):
            return name
    return type(t).__name__.removesuffix("Type").lower()


def _default(f: mi.Field) -> str | None:
    if f.required:
        return None
    value: Any = f.default
    if value is msgspec.NODEFAULT and f.default_factory is not msgspec.NODEFAULT:
        value = f.default_factory()
    try:
        return msgspec.json.encode(value).decode()
    except TypeError:
        return repr(value)


# -- field docs ------------------------------------------------------------------------------
_PARAM = re.compile(r"^\s*:param\s+(\w+):\s*(.*)$")


def _docstring_params(cls: type) -> dict[str, str]:
    doc = inspect.getdoc(cls) or ""
    out: dict[str, str] = {}
    current: str | None = None
    for line in doc.splitlines():
        if m := _PARAM.match(line):
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and line.startswith((" ", "\t")) and line.strip():
            out[current] += " " + line.strip()
        else:
            current = None
    return out


_FIELD_LINE = re.compile(r"^\s*(\w+)\s*:\s*[^=#]+(?:=[^#]*)?(?:#\s*(.*))?$")


def _comment_docs(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    for line in source.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#:"):
            above.append(stripped[2:].strip())
            continue
        m = _FIELD_LINE.match(line)
        if m and not stripped.startswith(("def ", "class ", "@", "return")):
            text = " ".join(above) or (m.group(2) or "").strip()
            if text:
                out.setdefault(m.group(1), text)
        above = []
    return out


def option_docs(config: type) -> dict[str, str]:
    """Option name -> documentation, from the Config class and its bases (see module doc)."""
    docs: dict[str, str] = {}
    for cls in config.__mro__:
        if cls in (msgspec.Struct, object) or not isinstance(cls, type):
            continue
        for source in (_docstring_params(cls), _comment_docs(cls)):
            for k, v in source.items():
                docs.setdefault(k, v)
    return docs


# -- assembling ------------------------------------------------------------------------------
def component_docs(pm: Any = None) -> list[ComponentDoc]:
    """Every installed component (built-ins and plugins), sorted by kind then name."""
    from .plugins import build_registry, list_plugins, make_plugin_manager

    pm = pm or make_plugin_manager()
    reg = build_registry(pm)
    dist_of = {row["name"]: row["distribution"] for row in list_plugins(pm)}
    out: list[ComponentDoc] = []
    for kind in KINDS:
        for name, cls in sorted(reg.kind_map(kind).items()):
            config = cls.Config
            info = mi.type_info(config)
            docs = option_docs(config)
            options = [OptionDoc(f.encode_name, type_name(f.type), _default(f),
                                 docs.get(f.name, "")) for f in info.fields]  # type: ignore[attr-defined]
            out.append(ComponentDoc(
                kind=kind, name=name,
                distribution=dist_of.get(reg.owner.get((kind, name), ""), "?"),
                description=getattr(cls, "description", "") or "",
                secret_fields=tuple(getattr(cls, "secret_fields", ()) or ()),
                options=options,
            ))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(docs: list[ComponentDoc]) -> str:
    """The whole reference as Markdown (what docs/components.md holds)."""
    lines = [
        "# Component reference",
        "",
        "<!-- Generated by `sailseg components --markdown` from the components' msgspec Configs;",
        "     do not edit by hand (tests/test_reference.py fails when this file is stale). -->",
        "",
        "Every option a component accepts in `sailseg.toml`, with its type and default (no default:",
        "required). Unknown options are errors. Secret options (redacted by `sailseg config show`)",
        "are marked *secret*. `sailseg components NAME` prints one component.",
        "",
    ]
    for kind in KINDS:
        group = [d for d in docs if d.kind == kind]
        if not group:
            continue
        lines += [f"## {kind.capitalize()}s", ""]
        for d in group:
            lines += [f"### `{d.name}`", "", f"{d.description} (distribution `{d.distribution}`)", ""]
            if not d.options:
                lines += ["No options.", ""]
                continue
            lines += ["| option | type | default | description |", "| --- | --- | --- | --- |"]
            for o in d.options:
                default = "*required*" if o.default is None else f"`{_cell(o.default)}`"
                doc = o.doc + (" *secret*" if o.name in d.secret_fields else "")
                lines.append(f"| `{o.name}` | `{_cell(o.type)}` | {default} | {_cell(doc.strip())} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_text(d: ComponentDoc) -> str:
    """One component for the terminal."""
    lines = [f"{d.name} ({d.kind}, {d.distribution})", f"  {d.description}", ""]
    if not d.options:
        lines.append("  no options")
    for o in d.options:
        default = "required" if o.default is None else f"default {o.default}"
        secret = ", secret" if o.name in d.secret_fields else ""
        lines.append(f"  {o.name}: {o.type} ({default}{secret})")
        if o.doc:
            lines += [f"      {w}" for w in textwrap.wrap(o.doc, 88)]
    return "\n".join(lines)


def main() -> None:
    """``python -m sailseg.reference``: print the Markdown reference."""
    print(render_markdown(component_docs()), end="")


if __name__ == "__main__":
    main()
