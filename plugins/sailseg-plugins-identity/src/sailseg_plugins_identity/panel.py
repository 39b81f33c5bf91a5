"""The identity plugin's web console panel: a person's cluster and consent ledger.

Registered through ``register_console_panels``; the console shows it as "Identity" with a
search box taking an email, a userId/anonymousId or ``KIND:VALUE`` (as ``sailseg identity
show``). Read only; the console hashes every email before display.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from sailseg.console.panels import ConsolePanel, Section
from sailseg.store.facades import KV
from sailseg.tracing import hash_email

from .graph import IdentityGraph, parse_id
from .ledger import NS as CONSENT_NS
from .ledger import Entry

__all__ = ["IdentityPanel"]


def _iso(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at)) if at else ""


class IdentityPanel(ConsolePanel):
    """A person: identifiers, the keys sinks get, merge and conflict history, consent."""

    name = "identity"
    title = "Identity"
    prompt = "email, userId, anonymousId or kind:value"

    async def lookup(self, kv: KV, query: str) -> list[Section]:
        graph = IdentityGraph(kv)
        view: dict[str, Any] | None = None
        for kind, value in parse_id(query):
            root = await graph.find(kind, value)
            if root is not None:
                view = await graph.describe(root)
                break
        sections: list[Section] = []
        emails: list[str] = [query.strip().lower()] if "@" in query else []
        if view is not None:
            ids = view["identifiers"]
            emails = sorted(set(emails) | set(ids.get("email", [])))
            sections.append(Section(
                title=f"Cluster {view['cluster']}",
                rows=[{"kind": k, "identifiers": ", ".join(v)} for k, v in sorted(ids.items())],
                note="parked events waiting: " + (", ".join(view["parked"]) or "none"),
            ))
            sections.append(Section(title="Keys sent to the sinks", data=view["keys"]))
            sections.append(Section(
                title="Merge and conflict history (latest by event time wins)",
                rows=[{"at": _iso(float(h.get("at", 0))), "what": h.get("what"),
                       "details": {k: v for k, v in h.items() if k not in ("at", "what")}}
                      for h in view["history"]],
            ))
        consent = []
        for email in emails:
            for key, raw in await kv.scan(CONSENT_NS, f"{hash_email(email)}:"):
                e = msgspec.json.decode(raw, type=Entry)
                consent.append({"email": hash_email(email), "channel": key.split(":")[-1],
                                "state": e.state, "level": e.level, "at": _iso(e.at),
                                "source": e.source, "messageId": e.msg,
                                "written": e.written})
        if consent or view is not None:
            sections.append(Section(title="Consent ledger", rows=consent,
                                    note="one entry per (email, channel); newer event time wins"))
        return sections
