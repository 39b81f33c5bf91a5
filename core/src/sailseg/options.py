"""Convert a component's (or a config section's) options to its msgspec ``Config``, with errors
a user can act on.

Why not msgspec's message alone: ``Object contains unknown field `shared_secrte``` does not
say which fields exist, and ``Invalid enum value 'x' - at `$.mode``` does not say which values
are allowed. :func:`convert_options` keeps msgspec's wording (tests and users grep for it) and
adds the valid fields with the closest match (``difflib``), or the allowed values, after the
location (file, pipeline, component) the caller passes as ``where``.

:func:`unknown_type_message` does the same for an unknown component ``type``: it lists the
installed ones, suggests the closest, and names the distribution to install when the name is
a first-party component (:data:`sailseg.first_party.FIRST_PARTY_COMPONENTS`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from .errors import ConfigError
from .first_party import FIRST_PARTY_COMPONENTS

__all__ = ["convert_options", "explain_validation_error", "type_at", "unknown_type_message"]

S = TypeVar("S")

_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]*)`")
_AT = re.compile(r" - at `(\$[^`]*)`$")
_ENUM = re.compile(r"^Invalid enum value (.*)$")


def _path_parts(path: str) -> list[str]:
    """``$.fields[...].type`` -> ``["fields", "[...]", "type"]``."""
    out: list[str] = []
    for m in re.finditer(r"\.([^.\[]+)|(\[[^\]]*\])", path[1:]):
        out.append(m.group(1) or m.group(2))
    return out


def _structs_in(t: mi.Type) -> list[mi.StructType]:
    if isinstance(t, mi.StructType):
        return [t]
    if isinstance(t, mi.UnionType):
        return [s for m in t.types for s in _structs_in(m)]
    return []


def _step(t: mi.Type, part: str) -> list[mi.Type]:
    """The types reachable from ``t`` by one path part (a field name or ``[...]``)."""
    if isinstance(t, mi.UnionType):
        return [x for m in t.types for x in _step(m, part)]
    if part.startswith("["):
        if isinstance(t, mi.DictType):
            return [t.value_type]
        if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
            return [t.item_type]
        if isinstance(t, mi.TupleType):
            return list(t.item_types)
        return []
    if isinstance(t, mi.StructType):
        return [f.type for f in t.fields if f.encode_name == part or f.name == part]
    return []


def type_at(config_type: Any, path: str) -> list[mi.Type]:
    """The msgspec types at a ValidationError path (``$`` is ``config_type`` itself)."""
    types: list[mi.Type] = [mi.type_info(config_type)]
    for part in _path_parts(path):
        types = [x for t in types for x in _step(t, part)]
    return types


def _literal_values(types: Iterable[mi.Type]) -> list[Any]:
    out: list[Any] = []
    for t in types:
        if isinstance(t, mi.LiteralType):
            out.extend(t.values)
        elif isinstance(t, mi.UnionType):
            out.extend(_literal_values(t.types))
        elif isinstance(t, mi.EnumType):
            out.extend(m.value for m in t.cls)
    return out


def _closest(word: str, choices: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def suggest(unknown: Iterable[str], valid: Iterable[str]) -> str:
    """``"; did you mean `x`?"`` for the first unknown name with a close valid one, else ""."""
    choices = list(valid)
    for name in unknown:
        if (best := _closest(name, choices)) is not None:
            return f"; did you mean `{best}`?"
    return ""


def explain_validation_error(exc: msgspec.ValidationError, config_type: Any) -> str:
    """msgspec's message, plus the valid fields (and the closest one) for an unknown field,
    or the allowed values for an enum/Literal."""
    text = str(exc)
    at = _AT.search(text)
    path = at.group(1) if at else "$"
    head = text[: at.start()] if at else text
    where = "" if path == "$" else f" (at `{path}`)"
    if m := _UNKNOWN.match(head):
        name = m.group(1)
        fields = sorted({f.encode_name for t in type_at(config_type, path)
                         for st in _structs_in(t) for f in st.fields})
        hint = ""
        if (best := _closest(name, fields)) is not None:
            hint = f"; did you mean `{best}`?"
        valid = ", ".join(fields) if fields else "none"
        return f"unknown field `{name}`{where}{hint} (valid fields: {valid})"
    if m := _ENUM.match(head):
        values = _literal_values(type_at(config_type, path))
        field = path.rsplit(".", 1)[-1] if "." in path else path
        allowed = ", ".join(repr(v) for v in values) if values else "see the component's docs"
        return f"field `{field}`: invalid value {m.group(1)}{where} (allowed: {allowed})"
    return text


def convert_options(options: dict[str, Any], config_type: type[S], *, where: str) -> S:
    """``msgspec.convert(options, config_type)``; a ValidationError becomes a ConfigError
    that starts with ``where`` and explains itself (see :func:`explain_validation_error`)."""
    try:
        return msgspec.convert(options, config_type, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {explain_validation_error(exc, config_type)}") from None


def unknown_type_message(kind: str, type_name: str, installed: Iterable[str]) -> str:
    """``unknown sink type 'x'`` with the installed types, the closest one, and, for a
    first-party name that is not installed, the ``pip install`` that provides it."""
    names = sorted(installed)
    msg = f"unknown {kind} type {type_name!r}"
    dist = FIRST_PARTY_COMPONENTS.get((kind, type_name))
    if dist is not None:
        msg += f": it is provided by the {dist} distribution (pip install {dist})"
    elif (best := _closest(type_name, names)) is not None:
        msg += f"; did you mean {best!r}?"
    return f"{msg} (installed: {', '.join(names) or 'none'})"
