"""A static check run by ``sailseg validate``: can each pipeline's events ever reach its sinks?

Why: a plain ``sailthru.postback -> segment.track`` pipeline whose trigger emitted events with
an email but no ``userId``/``anonymousId`` dead-lettered every event ("track needs userId or
anonymousId"); that is knowable from the config, so it is reported before anything runs.

How, kept deliberately simple: components declare identifier names (``"userId"``,
``"anonymousId"``, ``"email"``, or any key a resolver fills):

- a trigger: :meth:`~sailseg.components.Trigger.emitted_identifiers`, what every event it
  emits carries (None: unknown, e.g. a webhook relaying whatever the sender sent);
- a transform or resolver: ``added_identifiers``, what it may add (None: unknown);
- a sink: :meth:`~sailseg.components.Sink.required_identifiers`, of which an event must carry
  at least one (None: no requirement).

A pipeline is reported only when it is *proven* undeliverable: the trigger and every transform
and resolver declared what they provide, and for some sink none of its required identifiers is
among them. Anything undeclared makes the check stay quiet rather than guess.
"""

from __future__ import annotations

from collections.abc import Mapping

from .components import Component
from .config import SailsegConfig

__all__ = ["pipeline_problems"]


def pipeline_problems(cfg: SailsegConfig, instances: Mapping[tuple[str, str], Component]) -> list[str]:
    """One line per (pipeline, sink) that can never deliver, naming what is missing and where
    the fix goes. ``instances`` are the built components by ``(kind, instance)``."""
    problems: list[str] = []
    for name, p in cfg.pipelines.items():
        trigger = instances.get(("trigger", p.trigger.instance))
        have = _declared(trigger, "emitted_identifiers")
        if have is None:
            continue
        known = set(have)
        steps = [("transform", t.instance) for t in p.transforms]
        if p.resolver is not None:
            steps.append(("resolver", p.resolver.instance))
        for key in steps:
            comp = instances.get(key)
            added = _declared(comp, "added_identifiers")
            if added is None:
                known = set()
                break
            known |= added
        else:
            for s in p.sinks:
                sink = instances.get(("sink", s.instance))
                need = _declared(sink, "required_identifiers")
                if need and not (need & known):
                    problems.append(
                        f"{s.where}: can never deliver: it needs {_names(need, 'or')} but events "
                        f"from {p.trigger.where.split(': ', 1)[-1]} carry only "
                        f"{_names(frozenset(known), 'and') or 'no identifier'} (pipeline {name!r}); "
                        "configure the trigger to add one (e.g. anonymous_id = \"email_sha256\"), "
                        "add a resolver, or map one with a `map` step"
                    )
    return problems


def _declared(comp: Component | None, method: str) -> frozenset[str] | None:
    fn = getattr(comp, method, None)
    result = fn() if fn is not None else None
    return frozenset(result) if result is not None else None


def _names(names: frozenset[str], joiner: str) -> str:
    items = sorted(names)
    if len(items) <= 1:
        return "".join(f"`{n}`" for n in items)
    return ", ".join(f"`{n}`" for n in items[:-1]) + f" {joiner} `{items[-1]}`"
