"""The sailseg hook specifications: registration hooks only.

Hooks declare what a plugin provides; they never run per-event work (the runtime calls the
registered component classes under anyio). Every hook is documented the same way: **When
called**, **Arguments**, **Return**, **Semantics**. docs/plugin-hooks.md repeats each signature;
a test fails if one is missing there or has no ``test_hook_<name>`` test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    import click

    from .alerts.notifiers import Notifier
    from .components import IdentityResolver, Register, Sink, Transform, Trigger
    from .console.panels import ConsolePanel
    from .emulators import Emulator
    from .store.base import Store

hookspec = HookspecMarker("sailseg")
hookimpl = HookimplMarker("sailseg")


@hookspec
def register_triggers(register: Register[type[Trigger]]) -> None:
    """Declare the trigger classes this plugin provides.

    When called: once, synchronously, whenever a component registry is assembled
    (``sailseg serve``, ``sailseg plugins``, ``sailseg validate``, the test fixtures).

    :param register: call ``register(TriggerClass)`` once per trigger; ``TriggerClass.name``
        must be unique among all installed plugins.
    :return: nothing (ignored).

    Semantics: all implementations are called; a duplicate name is an error naming both plugins.
    """


@hookspec
def register_transforms(register: Register[type[Transform]]) -> None:
    """Declare the transform classes this plugin provides.

    When called: once, synchronously, whenever a component registry is assembled.

    :param register: call ``register(TransformClass)`` once per transform; names are unique.
    :return: nothing (ignored).

    Semantics: all implementations are called; order in a pipeline comes from sailseg.toml.
    """


@hookspec
def register_identity_resolvers(register: Register[type[IdentityResolver]]) -> None:
    """Declare the identity resolver classes this plugin provides.

    When called: once, synchronously, whenever a component registry is assembled.

    :param register: call ``register(ResolverClass)`` once per resolver; names are unique.
    :return: nothing (ignored).

    Semantics: all implementations are called; a pipeline names at most one resolver.
    """


@hookspec
def register_sinks(register: Register[type[Sink]]) -> None:
    """Declare the sink classes this plugin provides.

    When called: once, synchronously, whenever a component registry is assembled.

    :param register: call ``register(SinkClass)`` once per sink; names are unique.
    :return: nothing (ignored).

    Semantics: all implementations are called; a duplicate name is an error naming both plugins.
    """


@hookspec
def register_stores(register: Register[tuple[str, type[Store]]]) -> None:
    """Declare store backends by URL scheme.

    When called: once, synchronously, when a store URL is opened (``serve``, ``db upgrade``,
    the dlq/replay/status commands).

    :param register: call ``register(("scheme", StoreClass))``; ``StoreClass(url)`` must build
        an unopened store for a URL with that scheme (``sqlite``, ``postgresql``).
    :return: nothing (ignored).

    Semantics: all implementations are called; a scheme claimed twice is an error.
    """


@hookspec
def register_emulators(register: Register[Emulator]) -> None:
    """Declare vendor emulators for the sandbox, ``sailseg send`` and the test harness.

    When called: once, synchronously, whenever a component registry is assembled; used by
    ``sailseg serve --sandbox`` (starts every registered emulator and points the example
    configs at it), ``sailseg send`` (sample kinds an emulator sends) and the test harness
    (``sailseg.testing.emulator_app``/``route_emulator``).

    :param register: call ``register(sailseg.emulators.Emulator(...))`` once per emulator;
        ``Emulator.name`` must be unique among all installed plugins.
    :return: nothing (ignored).

    Semantics: all implementations are called; a duplicate name is an error naming both
    plugins. Production code never imports an emulator: ``create_app`` imports it lazily.
    """


@hookspec
def register_notifiers(register: Register[type[Notifier]]) -> None:
    """Declare alert notifier classes (``[alerts.notifiers.NAME] type = "..."``).

    When called: once, synchronously, whenever a component registry is assembled (``sailseg
    serve`` builds the configured notifiers from it; ``sailseg alerts test`` too).

    :param register: call ``register(NotifierClass)`` once per notifier; ``NotifierClass`` is
        a :class:`sailseg.alerts.Notifier` with a unique ``name`` and a ``Config``.
    :return: nothing (ignored).

    Semantics: all implementations are called; a duplicate name is an error naming both
    plugins. A notifier receives :class:`sailseg.alerts.Notification` objects that hold no
    personal data (names, numbers, error classes; emails hashed) and must not add any.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``sailseg`` CLI.

    When called: once, when the ``sailseg`` command group is first used (listing or running a
    command), not when ``sailseg.cli`` is imported.

    :param cli: the root ``click.Group``; add commands or groups with ``@cli.command()`` /
        ``@cli.group()``.
    :return: nothing (ignored).

    Semantics: all implementations are called; a plugin should namespace its commands under a
    group named after itself (``sailseg sailthru emulator``). The helpers core commands use
    are public in ``sailseg.cli`` (``handle_errors``, ``config_option``, ``store_option``,
    ``load``, ``store_for``, ``resolve_config_path``, ``run_async``, ``parse_since``).
    """


@hookspec
def register_console_panels(register: Register[type[ConsolePanel]]) -> None:
    """Add read-only panels (a search box and its answer) to the web console.

    When called: once, synchronously, whenever a component registry is assembled (the
    console lists the registered panels in its navigation).

    :param register: call ``register(PanelClass)`` once per panel; ``PanelClass`` subclasses
        :class:`sailseg.console.panels.ConsolePanel` and its ``name`` is unique.
    :return: nothing (ignored).

    Semantics: all implementations are called; a duplicate name is an error naming both
    plugins. The console instantiates each panel once and calls ``await panel.lookup(kv,
    query)`` per request (``kv``: :class:`sailseg.KV` over the node's store); every email in the answer is hashed before display.
    """
