"""Engage (Personas) recognition: tag audience and computed-trait payloads for later stages.

Engage's event names ("Audience Entered", "Trait Computed", ...) are configurable per
destination, so recognition keys on ``context.personas`` only, using the same rule as
Segment's own ``engageAudienceMembership``: a ``computation_class`` of ``audience`` or
``journey_step`` with a ``computation_key``; the membership value is ``traits[key]`` (identify,
group) or ``properties[key]`` (track) and counts only when it is a boolean.

The annotation is written to ``context.sailseg`` of the message (the only place a trigger can
leave it, since it hands plain Segment-spec dicts to the runtime)::

    {"engage": "audience", "audience_key": "first_time_shopper", "value": true,
     "computation_class": "audience", "computation_id": "aud_...", "space_id": "spa_..."}
    {"engage": "computed_trait", "trait_key": "total_revenue_180_days", "value": 450.0,
     "computation_class": "trait", "computation_id": "tra_...", "space_id": "spa_..."}

Filters downstream use e.g. ``context.sailseg.engage == 'audience'``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AUDIENCE_CLASSES", "TRAIT_CLASSES", "annotate_engage", "engage_annotation"]

AUDIENCE_CLASSES = frozenset({"audience", "journey_step"})
#: the docs say "trait"; one action-destinations test uses "computed_trait"
TRAIT_CLASSES = frozenset({"trait", "computed_trait"})


def _value_source(message: dict[str, Any]) -> dict[str, Any]:
    src = message.get("properties") if message.get("type") == "track" else message.get("traits")
    return src if isinstance(src, dict) else {}


def engage_annotation(message: dict[str, Any]) -> dict[str, Any] | None:
    """The ``context.sailseg`` annotation for an Engage payload, or None if it is not one."""
    ctx = message.get("context")
    if not isinstance(ctx, dict):
        return None
    personas = ctx.get("personas")
    if not isinstance(personas, dict):
        return None
    klass = personas.get("computation_class")
    key = personas.get("computation_key")
    src = _value_source(message)
    note: dict[str, Any] = {
        "computation_class": klass,
        "computation_id": personas.get("computation_id"),
        "space_id": personas.get("space_id") or personas.get("namespace"),
    }
    if klass in AUDIENCE_CLASSES:
        if not key and message.get("type") == "track":
            key = src.get("audience_key")
        value = src.get(key) if key else None
        note.update(engage="audience", audience_key=key, value=value if isinstance(value, bool) else None)
    elif klass in TRAIT_CLASSES:
        if not key and message.get("type") == "track":
            key = src.get("trait_key")
        note.update(engage="computed_trait", trait_key=key, value=src.get(key) if key else None)
    else:
        note.update(engage=str(klass) if klass else "unknown", key=key)
    return note


def annotate_engage(message: dict[str, Any]) -> bool:
    """Set ``context.sailseg`` on an Engage payload (in place). True if it was one."""
    note = engage_annotation(message)
    if note is None:
        return False
    ctx = message["context"]
    existing = ctx.get("sailseg")
    ctx["sailseg"] = {**existing, **note} if isinstance(existing, dict) else note
    return True
