"""Personal data other plugins keep in the store's kv, found through the person index.

The convention (docs/plugin-hooks.md, "Personal data in the store"): a plugin that stores an
entry about a person in kv namespace ``<ns>`` under key ``<key>`` also writes an index entry
in namespace ``person:<sha256 hex of the normalised email>`` with key ``<ns>|<key>``. The
erase scans that namespace and deletes every referenced entry, then the index entry. So the
identity plugin needs to know nothing about the other plugins' layouts.
"""

from __future__ import annotations

import hashlib

from sailseg import KV

__all__ = ["forget_person", "index_entry", "person_ns"]


def person_ns(email: str) -> str:
    """``person:<sha256 hex of the trimmed, lower-cased email>``."""
    return "person:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def index_entry(ns: str, key: str) -> str:
    return f"{ns}|{key}"


async def forget_person(kv: KV, email: str) -> int:
    """Delete every kv entry indexed for ``email`` and the index; return entries deleted."""
    pns = person_ns(email)
    n = 0
    for ref, _ in await kv.scan(pns):
        ns, sep, key = ref.partition("|")
        if sep and ns and not ns.startswith("person:"):
            n += bool(await kv.delete(ns, key))
        await kv.delete(pns, ref)
    return n
