"""sailseg-plugins-segment: Segment triggers, sinks, Profile API resolver and an API emulator.

Components (details in each module and the README):

- triggers ``segment.webhook`` (:mod:`.webhook`) and ``segment.ingest`` (:mod:`.ingest`)
- sinks ``segment.track``, ``segment.identify``, ``segment.group``, ``segment.alias``
  (:mod:`.sinks`)
- identity resolver ``segment.profiles`` (:mod:`.profiles`)
- CLI ``sailseg segment emulator`` (:mod:`.cli`), emulator app :mod:`.emulator`

This module only holds the hook implementations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sailseg

from .ingest import SegmentIngest
from .profiles import SegmentProfiles
from .sinks import SegmentAliasSink, SegmentGroupSink, SegmentIdentifySink, SegmentTrackSink
from .webhook import SegmentWebhook

if TYPE_CHECKING:
    import click

    from sailseg.emulators import Emulator

__all__ = [
    "register_commands",
    "register_emulators",
    "register_identity_resolvers",
    "register_sinks",
    "register_triggers",
]


@sailseg.hookimpl
def register_triggers(register: sailseg.Register[type[sailseg.Trigger]]) -> None:
    register(SegmentWebhook)
    register(SegmentIngest)


@sailseg.hookimpl
def register_sinks(register: sailseg.Register[type[sailseg.Sink]]) -> None:
    for cls in (SegmentTrackSink, SegmentIdentifySink, SegmentGroupSink, SegmentAliasSink):
        register(cls)


@sailseg.hookimpl
def register_identity_resolvers(register: sailseg.Register[type[sailseg.IdentityResolver]]) -> None:
    register(SegmentProfiles)


# -- start register_emulators --
@sailseg.hookimpl
def register_emulators(register: sailseg.Register[Emulator]) -> None:
    from .emulation import EMULATOR

    register(EMULATOR)
# -- end register_emulators --


# -- start register_commands --
@sailseg.hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import segment_group

    cli.add_command(segment_group)
# -- end register_commands --
