"""Sample event files, as ``sailseg send`` reads them, and who signs them.

A file is either bare JSON that some installed trigger recognises
(:meth:`~sailseg.components.Trigger.sample_matches`, e.g. a Segment message for
``segment.webhook``), or a wrapper naming what it is::

    {"sailseg_send": KIND, "body": ..., "path": "/optional/route", ...}

where ``KIND`` is a trigger type (the body is signed by that trigger,
:meth:`~sailseg.components.Trigger.sign_sample`) or a sample kind a registered emulator sends
(:attr:`sailseg.emulators.Emulator.samples`, e.g. a vendor API call). Core knows no vendor:
every kind comes from the plugins.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .components import ComponentContext, SignedSample, Trigger
from .errors import ConfigError

if TYPE_CHECKING:
    from .emulators import Emulator
    from .plugins import Registry

__all__ = ["Sample", "load_sample", "read_sample_body", "sample_trigger", "sign_sample"]


@dataclass
class Sample:
    """One thing to send, decoded from a sample file.

    :param kind: a trigger type, or an emulator's sample kind (then :attr:`emulator` is set).
    :param body: the JSON body to send.
    :param path: the route path the file asks for, if any.
    :param data: the whole wrapper object (``{}`` for a bare sample), for emulator senders.
    """

    kind: str
    body: Any
    path: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    emulator: Emulator | None = None


def _read(file: str | os.PathLike[str]) -> Any:
    p = Path(file)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{p}: not valid JSON: {exc}") from None


def read_sample_body(file: str | os.PathLike[str]) -> Any:
    """The body of a sample file: the JSON itself, or a wrapper's ``body``."""
    data = _read(file)
    if isinstance(data, dict) and "sailseg_send" in data:
        return data.get("body")
    return data


def load_sample(file: str | os.PathLike[str], registry: Registry) -> Sample:
    """Read and classify a sample file (see the module docstring).

    :raises ConfigError: unreadable JSON, an unknown ``sailseg_send`` kind, or a bare shape no
        installed trigger recognises; naming the file.
    """
    p = Path(file)
    data = _read(p)
    emulator_kinds = {k: e for e in registry.emulators.values() for k in e.samples}
    if isinstance(data, dict) and "sailseg_send" in data:
        kind = data["sailseg_send"]
        known = sorted(t for t in registry.triggers) + sorted(emulator_kinds)
        if kind not in registry.triggers and kind not in emulator_kinds:
            raise ConfigError(
                f"{p}: sailseg_send must name an installed trigger type or sample kind "
                f"({', '.join(known) or 'none installed'}), got {kind!r}"
            )
        if "body" not in data:
            raise ConfigError(f"{p}: a sailseg_send wrapper needs a `body`")
        path = data.get("path")
        return Sample(kind=kind, body=data["body"], path=str(path) if path else None,
                      data=dict(data), emulator=emulator_kinds.get(kind))
    for name in sorted(registry.triggers):
        if registry.triggers[name].sample_matches(data):
            return Sample(kind=name, body=data)
    raise ConfigError(
        f"{p}: no installed trigger recognises this sample (Segment messages, Sailthru "
        'postbacks, ... come from plugins); wrap it as {"sailseg_send": KIND, "body": ...}'
    )


def sample_trigger(kind: str, registry: Registry, env: Mapping[str, str]) -> Trigger:
    """An instance of trigger type ``kind`` with default options and ``env``, not started:
    what ``sailseg send`` asks to sign (its secrets come from ``env``, as in a deployment
    that configures them through the environment)."""
    cls = registry.triggers[kind]
    try:
        config = msgspec.convert({}, cls.Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{kind}: cannot build it with default options to sign: {exc}") from None
    return cls(config, ComponentContext(instance=f"send:{kind}", env=dict(env)))


def sign_sample(sample: Sample, registry: Registry, env: Mapping[str, str]) -> SignedSample:
    """The body and headers to post for a trigger sample, signed by the trigger type.

    :raises ConfigError: the trigger takes no samples, or a secret is missing.
    """
    trigger = sample_trigger(sample.kind, registry, env)
    try:
        return trigger.sign_sample(sample.body)
    except NotImplementedError:
        raise ConfigError(f"{sample.kind}: this trigger does not sign sample events") from None
