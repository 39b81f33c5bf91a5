"""Segment spec -> Sailthru request building blocks: var names, flattening, cents, identity,
products, and the ``map`` overrides.

Why here and not in the sinks: the rules (Sailthru var-name rules, nested-trait flattening,
price conversion) are shared by several sinks and are the part most worth unit-testing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import sailseg

__all__ = [
    "RESERVED_VAR_NAMES",
    "MERGED_FIELDS",
    "sanitize_var_name",
    "flatten_vars",
    "to_cents",
    "find_email",
    "user_id",
    "user_ref",
    "apply_overrides",
    "product_item",
    "order_key",
]

#: profile fields that cannot be vars (sailthru-api.md §6); a var with such a name is prefixed
RESERVED_VAR_NAMES = frozenset({
    "keys", "lists", "optout_email", "engagement", "activity", "lifetime", "purchases",
    "purchase_incomplete", "smart_lists", "device", "sid", "cookie", "extid", "vars",
})
#: request fields whose override is merged key by key instead of replaced
MERGED_FIELDS = frozenset({"vars", "lists", "keys", "fields", "purchase_keys", "options",
                           "optout_templates"})

_CAMEL1 = re.compile(r"(.)([A-Z][a-z]+)")
_CAMEL2 = re.compile(r"([a-z0-9])([A-Z])")
_INVALID = re.compile(r"[^A-Za-z0-9_]")


@functools.lru_cache(maxsize=4096)
def _clean_part(name: str, snake: bool) -> str:
    # cached: the same few trait names come with every event, and the four regex passes were
    # ~15% of the W1 delivery CPU (cProfile); bounded, so odd keys cannot grow it
    s = name.strip()
    if snake:
        s = _CAMEL2.sub(r"\1_\2", _CAMEL1.sub(r"\1_\2", s)).lower()
    return _INVALID.sub("", re.sub(r"\s+", "_", s))


def sanitize_var_name(name: str, *, snake: bool = True, reserved_prefix: str = "seg_") -> str | None:
    """A Sailthru-safe var name, or None when nothing usable is left.

    Rules (sailthru-api.md §6): spaces become ``_``; ``% - . $`` and every other special
    character are stripped; a name cannot start with a digit (``v_`` is prefixed); reserved
    profile field names get ``reserved_prefix``. With ``snake``, camelCase becomes snake_case
    (``firstName`` -> ``first_name``), Sailthru's recommended lowercase convention.
    """
    s = _clean_part(str(name), snake)
    if not s:
        return None
    if s[0].isdigit():
        s = "v_" + s
    if s in RESERVED_VAR_NAMES:
        s = reserved_prefix + s
    return s


@functools.lru_cache(maxsize=4096)
def _top_var_name(name: str, snake: bool) -> str | None:
    # flatten_vars names every top-level trait of every event: the same few names each time
    return sanitize_var_name(name, snake=snake)


def flatten_vars(
    data: Mapping[str, Any],
    *,
    sep: str = "_",
    snake: bool = True,
    exclude: frozenset[str] | set[str] = frozenset(),
    flatten_arrays: bool = False,
) -> dict[str, Any]:
    """Nested objects become ``parent_child`` vars with sanitised names; arrays stay arrays
    (Sailthru stores array vars) unless ``flatten_arrays`` (``a_0``, ``a_1``...)."""
    out: dict[str, Any] = {}
    _walk(out, data, "", sep, snake, exclude, flatten_arrays)
    return out


def _walk(out: dict[str, Any], obj: Mapping[str, Any], prefix: str, sep: str, snake: bool,
          exclude: frozenset[str] | set[str], flatten_arrays: bool) -> None:
    """:func:`flatten_vars`'s walk, a module function: a nested recursive ``walk`` held its
    own closure cell, so each call left a cycle (the function, its closure and 6 cells) for
    the garbage collector, ~8 objects of cyclic garbage per W1 event (the delivery
    process's only cyclic garbage; gc callbacks at W1 saturation)."""
    for k, v in obj.items():
        if not prefix and k in exclude:
            continue
        key = k if type(k) is str else str(k)
        if prefix:
            part = _clean_part(key, snake)
            name = f"{prefix}{sep}{part}" if part else None
        else:
            name = _top_var_name(key, snake)
        if not name:
            continue
        # JSON's scalars first, by exact type: most traits are one, and for them the
        # Mapping ABC check below cost as much as the rest of the walk (W1's identify:
        # 11.4 -> 5.7 us in a micro-benchmark); subclasses take the general path
        kind = type(v)
        if kind is str or kind is int or kind is float or kind is bool or v is None:
            out[name] = v
            continue
        if kind is dict or isinstance(v, Mapping):
            if v:
                _walk(out, v, name, sep, snake, exclude, flatten_arrays)
            continue
        if isinstance(v, (list, tuple)) and flatten_arrays:
            _walk(out, {str(i): x for i, x in enumerate(v)}, name, sep, snake, exclude,
                  flatten_arrays)
            continue
        out[name] = list(v) if isinstance(v, tuple) else v


def to_cents(value: Any, *, field: str = "price") -> int:
    """Currency units -> integer cents, rounding half up (``19.999`` -> ``2000``).

    :raises sailseg.FatalError: naming the field when the value is not a number.
    """
    if isinstance(value, bool) or value is None:
        raise sailseg.FatalError(f"`{field}` must be a number, got {value!r}")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise sailseg.FatalError(f"`{field}` must be a number, got {value!r}") from None
    if not d.is_finite():
        raise sailseg.FatalError(f"`{field}` must be a finite number, got {value!r}")
    return int((d * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def find_email(event: sailseg.Event) -> str | None:
    """identity.email, else traits.email, context.traits.email, properties.email."""
    email = event.identity.get("email")
    if email:
        return str(email).strip()
    p = event.payload
    for where in _EMAIL_HOLDERS:
        holder = p.get(where) if where != "context.traits" else (p.get("context") or {}).get("traits")
        if isinstance(holder, dict):
            v = holder.get("email")
            if isinstance(v, str) and v.strip():
                return v.strip()
    return None


#: where :func:`find_email` looks, in order (each only when the ones before had none)
_EMAIL_HOLDERS = ("traits", "context.traits", "properties")


def user_id(event: sailseg.Event) -> str | None:
    v = event.identity.get("extid") or event.identity.get("userId") or event.payload.get("userId")
    return str(v) if v not in (None, "") else None


def user_ref(event: sailseg.Event, key: str = "email", *, fallback_to_extid: bool = True) -> tuple[str, str]:
    """``(id, key)`` naming the Sailthru profile: ``key`` preferred (email, extid or sid),
    falling back to extid (userId) when the email is unknown.

    :raises sailseg.SkipEvent: when no usable identifier is known.
    """
    email = find_email(event)
    extid = user_id(event)
    sid = event.identity.get("sid")
    if key == "sid" and sid:
        return str(sid), "sid"
    if key == "extid" and extid:
        return extid, "extid"
    if email:
        return email, "email"
    if fallback_to_extid and extid:
        return extid, "extid"
    if sid:
        return str(sid), "sid"
    raise sailseg.SkipEvent("no email, userId or sid known for this event")


def _mapping(value: Any) -> bool:
    """``isinstance(value, Mapping)``, a plain dict (JSON's objects) told by its type first:
    the ABC check costs a call into ``ABCMeta`` each time."""
    return type(value) is dict or isinstance(value, Mapping)


def apply_overrides(request: dict[str, Any], overrides: Any) -> dict[str, Any]:
    """Merge ``event.meta["sailthru"]`` into a computed request.

    Dict fields in :data:`MERGED_FIELDS` are merged key by key; any other field is replaced; a
    top-level ``None`` removes the field.

    :raises sailseg.FatalError: when the overrides are not an object.
    """
    if not overrides:
        return request
    if type(overrides) is not dict and not isinstance(overrides, Mapping):
        raise sailseg.FatalError(f"meta.sailthru must be an object, got {type(overrides).__name__}")
    out = dict(request)
    for k, v in overrides.items():
        if v is None:
            out.pop(k, None)
        elif k in MERGED_FIELDS and _mapping(v) and _mapping(out.get(k)):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def product_item(product: Mapping[str, Any], *, index: int, url_template: str | None,
                 snake: bool = True) -> dict[str, Any]:
    """One Segment product -> one Sailthru purchase item.

    ``qty`` <- quantity (1), ``title`` <- name, ``price`` <- price in cents, ``id`` <-
    product_id or sku, ``url`` <- url or ``url_template`` formatted with the product's fields,
    ``tags`` <- category and brand, ``images.full.url`` <- image_url, ``vars`` <- sku,
    variant, brand, category, coupon, position.
    """
    if not isinstance(product, Mapping):
        raise sailseg.FatalError(f"products[{index}] must be an object")
    pid = product.get("product_id") or product.get("sku") or product.get("id")
    if pid in (None, ""):
        raise sailseg.FatalError(f"products[{index}] has no product_id or sku")
    url = product.get("url")
    if not url and url_template:
        try:
            url = url_template.format_map(_Default({k: v for k, v in product.items()}))
        except (ValueError, IndexError) as exc:
            raise sailseg.FatalError(f"url_template cannot be formatted: {exc}") from None
    if not url:
        raise sailseg.FatalError(
            f"products[{index}] has no url and no `url_template` is configured (Sailthru requires "
            "a url per item)"
        )
    qty = product.get("quantity", 1)
    try:
        qty_i = int(qty)
    except (TypeError, ValueError):
        raise sailseg.FatalError(f"products[{index}].quantity must be a number, got {qty!r}") from None
    item: dict[str, Any] = {
        "qty": qty_i,
        "title": str(product.get("name") or pid),
        "price": to_cents(product.get("price", 0), field=f"products[{index}].price"),
        "id": str(pid),
        "url": str(url),
    }
    tags = [str(product[k]) for k in ("category", "brand") if product.get(k)]
    if tags:
        item["tags"] = tags
    if product.get("image_url"):
        item["images"] = {"full": {"url": str(product["image_url"])}}
    extra = {k: product[k] for k in ("sku", "variant", "brand", "category", "coupon", "position")
             if product.get(k) not in (None, "")}
    if extra:
        item["vars"] = flatten_vars(extra, snake=snake)
    return item


class _Default(dict):
    def __missing__(self, key: str) -> str:
        return ""


def order_key(properties: Mapping[str, Any], message_id: str | None) -> str | None:
    """The purchase key: order_id, else checkout_id, else the messageId (Segment's own rule)."""
    for k in ("order_id", "checkout_id"):
        v = properties.get(k)
        if v not in (None, ""):
            return str(v)
    return message_id
