"""sailseg-plugins-identity: identity resolution, consent sync and deletion sync, with an
audit trail.

Components (details in each module and the README):

- resolver ``identity.graph`` (:mod:`.resolver`, graph in :mod:`.graph`)
- transforms ``consent.to_sailthru`` and ``consent.to_segment`` (:mod:`.consent`, ledger in
  :mod:`.ledger`)
- sink ``privacy.delete`` (:mod:`.privacy`)
- console panel ``identity`` (:mod:`.panel`): a person's cluster and consent ledger
- CLI ``sailseg identity show|unmatched``, ``sailseg privacy delete``, ``sailseg audit
  export`` (:mod:`.cli`)

This module only holds the hook implementations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sailseg

if TYPE_CHECKING:
    import click

    from sailseg.console.panels import ConsolePanel

__all__ = [
    "register_commands",
    "register_console_panels",
    "register_identity_resolvers",
    "register_sinks",
    "register_transforms",
]


@sailseg.hookimpl
def register_identity_resolvers(register: sailseg.Register[type[sailseg.IdentityResolver]]) -> None:
    from .resolver import GraphResolver

    register(GraphResolver)


@sailseg.hookimpl
def register_transforms(register: sailseg.Register[type[sailseg.Transform]]) -> None:
    from .consent import ConsentToSailthru, ConsentToSegment

    register(ConsentToSailthru)
    register(ConsentToSegment)


@sailseg.hookimpl
def register_sinks(register: sailseg.Register[type[sailseg.Sink]]) -> None:
    from .privacy import PrivacyDeleteSink

    register(PrivacyDeleteSink)


@sailseg.hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import audit_group, identity_group, privacy_group

    for group in (identity_group, privacy_group, audit_group):
        if group.name not in cli.commands:
            cli.add_command(group)


# -- start register_console_panels --
@sailseg.hookimpl
def register_console_panels(register: sailseg.Register[type[ConsolePanel]]) -> None:
    from .panel import IdentityPanel

    register(IdentityPanel)
# -- end register_console_panels --
