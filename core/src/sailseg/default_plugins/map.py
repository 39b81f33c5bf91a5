"""Built-in ``map`` transform: set fields from JMESPath expressions, with type coercion.

Each entry of ``fields`` maps a *target path* to an expression (or a table with ``expr``,
``type``, ``default``, ``required``). Targets are dotted paths into the payload
(``traits.plan``); ``meta.<...>`` writes into ``event.meta`` (how pipelines override a sink's
request, e.g. ``meta.sailthru.vars.plan``) and ``identity.<...>`` into ``event.identity``.
All expressions read the event *before* this step, so entries do not see each other.

Example::

    { type = "map", nulls = "drop", flatten = ["traits.address"], fields = {
        "traits.plan" = "properties.plan_name",
        "meta.sailthru.vars.ltv" = { expr = "traits.ltv", type = "float", default = 0 },
        "traits.signup_date" = { expr = "traits.created_at", type = "date" },
    } }

Missing and null source values (why: a partial identify must not wipe what it does not carry;
writing ``null`` for every missing trait cleared Sailthru vars and put ``None`` in ``lists``):

- a source field that is **absent** (and has no ``default``) leaves its target untouched: it is
  not written, so nothing downstream sees a ``null`` the source never sent;
- a source field that is **explicitly null** is written as ``null`` with ``nulls = "clear"``
  (the default: the sender asked to clear it, e.g. a Sailthru var) and is not written with
  ``nulls = "drop"``;
- with ``nulls = "drop"`` the target is also removed from the payload when its value is null
  or absent (the former ``drop_nulls = true``, still accepted as an alias).

Absent versus null is told apart for plain field paths (``traits.plan``); any other JMESPath
expression that yields null counts as absent.

``type``: ``str``, ``int``, ``float``, ``bool``, ``date`` (YYYY-MM-DD), ``datetime`` (ISO 8601
UTC), ``json`` (unchanged). A value that cannot be coerced is a mapping failure
(:class:`FatalError`, dead-lettered with the field named). ``remove`` deletes paths;
``flatten`` turns nested objects at the given paths into ``parent_child`` keys (separator
configurable).
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any, Literal

import msgspec

from ..components import Register, Transform
from ..errors import ConfigError, FatalError
from ..events import Event
from ..hookspecs import hookimpl
from .expressions import Expr, compile_expr

__all__ = ["Map", "coerce", "flatten_object"]

Kind = Literal["str", "int", "float", "bool", "date", "datetime", "json"]
NullMode = Literal["clear", "drop"]
#: payload fields that identify a person (for :meth:`Map.added_identifiers`)
IDENTIFIERS = frozenset({"userId", "anonymousId", "email"})


class FieldSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    expr: str
    type: Kind | None = None
    default: Any = None
    required: bool = False


_TRUE = {"true", "1", "yes", "y", "on", "t"}
_FALSE = {"false", "0", "no", "n", "off", "f", ""}


def _to_datetime(value: Any) -> dt.datetime:
    if isinstance(value, bool):
        raise ValueError("boolean is not a date")
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 1e11 else value  # epoch ms or s
        return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        parsed = dt.datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)
    raise ValueError(f"cannot read a date from {type(value).__name__}")


def coerce(value: Any, kind: Kind | None) -> Any:
    """Coerce ``value`` to ``kind``; None stays None. Raises ValueError when impossible."""
    if value is None or kind is None or kind == "json":
        return value
    if kind == "str":
        if isinstance(value, (dict, list)):
            return msgspec.json.encode(value).decode()
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    if kind == "int":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{value!r} is not a whole number")
            return int(value)
        if isinstance(value, str):
            f = float(value.strip())
            if not f.is_integer():
                raise ValueError(f"{value!r} is not a whole number")
            return int(f)
        if isinstance(value, int):
            return value
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        if isinstance(value, bool):
            return float(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return value != 0
        if isinstance(value, str):
            low = value.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"{value!r} is not a boolean")
    if kind == "date":
        return _to_datetime(value).date().isoformat()
    if kind == "datetime":
        return _to_datetime(value).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise ValueError(f"cannot convert {type(value).__name__} to {kind}")


def flatten_object(obj: dict[str, Any], sep: str = "_", prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a_b": 1}`` (lists are kept as values)."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten_object(v, sep, key))
        else:
            out[key] = v
    return out


def _set_path(root: dict[str, Any], parts: list[str], value: Any) -> None:
    node = root
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[parts[-1]] = value


def _set_path_cow(root: dict[str, Any], parts: list[str], value: Any, fresh: set[int]) -> None:
    """``_set_path`` on a shallow copy: every dict on the way is copied once (ids in
    ``fresh``) before it is written, so the input event's objects are never changed."""
    node = root
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            fresh.add(id(nxt))
        elif id(nxt) not in fresh:
            nxt = dict(nxt)
            fresh.add(id(nxt))
        node[p] = nxt
        node = nxt
    node[parts[-1]] = value


def _del_path(root: dict[str, Any], parts: list[str]) -> None:
    node: Any = root
    for p in parts[:-1]:
        node = node.get(p) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def _get_path(root: dict[str, Any], parts: list[str]) -> Any:
    node: Any = root
    for p in parts:
        if not isinstance(node, dict):
            return None
        node = node.get(p)
    return node


class Map(Transform):
    name = "map"
    description = "Set fields from JMESPath expressions with type coercion, defaults, flattening"
    # copy on write (below): the payload it gets is never changed, only replaced
    edits_payload_in_place = False

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        """:param fields: target path -> JMESPath expression, or ``{expr, type, default,
            required}``.
        :param nulls: what an explicit ``null`` in the source does: ``"clear"`` writes null
            (clears the target, e.g. a Sailthru var); ``"drop"`` writes nothing and removes the
            target. An absent source field is never written either way.
        :param drop_nulls: deprecated alias: ``true`` is ``nulls = "drop"``.
        :param remove: payload paths to delete.
        :param flatten: payload paths whose nested objects become ``parent_child`` keys.
        :param separator: the separator ``flatten`` uses.
        """

        fields: dict[str, str | FieldSpec] = {}
        nulls: NullMode | None = None
        drop_nulls: bool | None = None
        remove: list[str] = []
        flatten: list[str] = []
        separator: str = "_"

    async def start(self) -> None:
        cfg = self.config
        if cfg.nulls is not None and cfg.drop_nulls is not None and \
                (cfg.nulls == "drop") != cfg.drop_nulls:
            raise ConfigError(f"`drop_nulls = {str(cfg.drop_nulls).lower()}` contradicts "
                              f"`nulls = {cfg.nulls!r}`; keep only `nulls` (drop_nulls is its "
                              "deprecated alias)")
        self._drop = (cfg.nulls or ("drop" if cfg.drop_nulls else "clear")) == "drop"
        self._fields: list[tuple[str, list[str], Expr, FieldSpec]] = []
        for target, spec in self.config.fields.items():
            if isinstance(spec, str):
                spec = FieldSpec(expr=spec)
            parts = target.split(".")
            if not all(parts):
                raise ConfigError(f"`fields`: invalid target path {target!r}")
            if parts[0] in ("meta", "identity") and len(parts) < 2:
                raise ConfigError(f"`fields`: target {target!r} needs a key after {parts[0]!r}")
            self._fields.append((target, parts, compile_expr(spec.expr, field=f"fields.{target}"), spec))
        #: some target is in the payload (not ``meta.*`` or ``identity.*``): it gets a copy
        self._payload_targets = any(parts[0] not in ("meta", "identity") for _t, parts, _e, _s in self._fields)

    def added_identifiers(self) -> frozenset[str]:
        """The identifiers a ``fields`` target may set: a top-level ``userId``/``anonymousId``
        or any ``identity.<key>`` (and ``meta.<vendor>.userId``-style overrides)."""
        out: set[str] = set()
        for target in self.config.fields:
            parts = target.split(".")
            if parts[0] == "identity" and len(parts) == 2:
                out.add(parts[1])
            elif parts[-1] in IDENTIFIERS and (len(parts) == 1 or parts[0] == "meta"):
                out.add(parts[-1])
        return frozenset(out)

    async def process(self, event: Event) -> Event | None:
        # (target, parts, value, write): write is False for an absent source (never written)
        values: list[tuple[str, list[str], Any, bool]] = []
        for target, parts, expr, spec in self._fields:
            present, value = expr.lookup(event)
            if value is None and spec.default is not None:
                present, value = True, spec.default
            if value is None and spec.required:
                raise FatalError(f"map: required field {target!r} is missing (expression {spec.expr!r})")
            try:
                value = coerce(value, spec.type)
            except (ValueError, TypeError, OverflowError) as exc:
                raise FatalError(f"map: field {target!r}: cannot convert to {spec.type}: {exc}") from None
            values.append((target, parts, value, present))
        # Copy on write: only the dicts on the written paths are copied (a deepcopy of every
        # payload was ~10% of the W1 delivery CPU); remove/flatten/drop_nulls edit anywhere,
        # so they still work on a deep copy.
        cfg = self.config
        drop = self._drop
        # dropping nulls edits only payload targets (meta and identity ones are skipped)
        deep = bool(cfg.remove or cfg.flatten or (drop and self._payload_targets))
        # no payload target and nothing to remove or flatten: the payload stays the object
        # it was (delivery then knows by identity that the sinks got it as stored), and is
        # not marked fresh, so a meta target holding it (``"meta.raw": "@"``) and one below
        # it (``"meta.raw.tag"``) copy it before writing
        payload = (copy.deepcopy(event.payload) if deep
                   else dict(event.payload) if self._payload_targets else event.payload)
        meta = dict(event.meta)
        fresh = {id(meta)} if payload is event.payload else {id(payload), id(meta)}
        identity = dict(event.identity)
        for _target, parts, value, present in values:
            if not present or (value is None and drop):
                continue
            if parts[0] == "meta":
                _set_path_cow(meta, parts[1:], value, fresh)
            elif parts[0] == "identity":
                if value is not None:
                    identity[parts[1]] = str(value)
            elif deep:
                _set_path(payload, parts, value)
            else:
                _set_path_cow(payload, parts, value, fresh)
        for path in self.config.remove:
            _del_path(payload, path.split("."))
        for path in self.config.flatten:
            parts = path.split(".")
            obj = _get_path(payload, parts)
            if isinstance(obj, dict):
                _set_path(payload, parts, flatten_object(obj, self.config.separator))
        if drop:
            for _t, parts, value, _present in values:
                if value is None and parts[0] not in ("meta", "identity"):
                    _del_path(payload, parts)
        event.payload = payload
        event.meta = meta
        event.identity = identity
        return event


@hookimpl
def register_transforms(register: Register[type[Transform]]) -> None:
    register(Map)
