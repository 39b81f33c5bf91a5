"""sailseg-plugins-sailthru: Sailthru sinks, triggers, client and API emulator for sailseg.

This module only registers the components; see the submodules for the work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sailseg

from .poll import PollTrigger
from .postback import PostbackTrigger
from .sinks import ALL_SINKS

if TYPE_CHECKING:
    import click

    from sailseg.emulators import Emulator

__all__ = ["register_commands", "register_emulators", "register_notifiers", "register_sinks",
           "register_triggers"]


@sailseg.hookimpl
def register_sinks(register: sailseg.Register[type[sailseg.Sink]]) -> None:
    for cls in ALL_SINKS:
        register(cls)


@sailseg.hookimpl
def register_triggers(register: sailseg.Register[type[sailseg.Trigger]]) -> None:
    register(PostbackTrigger)
    register(PollTrigger)


@sailseg.hookimpl
def register_emulators(register: sailseg.Register[Emulator]) -> None:
    from .emulation import EMULATOR

    register(EMULATOR)


@sailseg.hookimpl
def register_notifiers(register: sailseg.Register[type[Any]]) -> None:
    from .notifier import SailthruEmailNotifier

    register(SailthruEmailNotifier)


@sailseg.hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import register

    register(cli)
