"""The one exception hierarchy of sailseg.

::

    SailsegError                    root; the CLI turns it into one line and ``exit_code``
    ├── ConfigError                 sailseg.toml or a component Config is wrong (names where),
    │                               or the machine refuses it (port in use, host not bindable)
    ├── PluginError                 a plugin failed to load, or two components claim one name
    ├── StoreError                  the store cannot be used (unreachable, unwritable, schema)
    ├── InputError                  untrusted input is malformed (HTTP 400 naming the field)
    ├── Backpressure                the backlog bound is reached (HTTP 503 + Retry-After)
    │   └── StoreUnavailable        the store did not commit (disk full, database gone)
    └── DeliveryError               raised by transforms, resolvers and sinks for one event
        ├── RetryableError          transient: network, timeout, 429, 5xx; retried with backoff
        ├── FatalError              permanent: bad request, mapping failure; dead-lettered at once
        ├── SkipEvent               nothing to do for this event; recorded, not delivered
        └── ParkEvent               identity not resolvable yet; parked until it is (or expiry)

Components *raise* these; the runtime owns backoff, dead-lettering and span status, so no
plugin writes its own retry loop.

Exit codes of the CLI (``exit_code``): 2 when the user must change something (the config, an
option, the port, the store URL or its schema), 1 when an operation failed otherwise.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SailsegError",
    "ConfigError",
    "PluginError",
    "StoreError",
    "InputError",
    "Backpressure",
    "StoreUnavailable",
    "CommitTimeout",
    "DeliveryError",
    "RetryableError",
    "FatalError",
    "SkipEvent",
    "ParkEvent",
]


class SailsegError(Exception):
    """Root of every error sailseg raises on purpose."""

    #: the CLI's exit code for this error (2: the user must change something; 1: it failed)
    exit_code: int = 1


class ConfigError(SailsegError):
    """Configuration is invalid. The message names the file, pipeline, component and field."""

    exit_code = 2


class PluginError(SailsegError):
    """A plugin failed to load or registered a conflicting component. Names the plugin."""


class StoreError(SailsegError):
    """The store cannot be used as asked (unreachable, not writable, its schema version is
    unknown). The message names the store (password redacted) and what to change."""

    exit_code = 2


class InputError(SailsegError):
    """Untrusted input is malformed. ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Backpressure(SailsegError):
    """The queue backlog passed its bound; callers should come back after ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(Backpressure):
    """The store could not commit an accept (disk full, database dropped or unreachable,
    privileges revoked): nothing was stored, so the caller must send again later.

    Why a :class:`Backpressure`: every trigger already answers that with 503 and
    ``Retry-After``, which is what a sender must see here too (Segment retries 503, and a
    500 would read as a bug on our side). ``__cause__`` is the store's own exception.
    """


class CommitTimeout(TimeoutError):
    """An accept's ``timeout`` passed before the store committed it (the store is busy, not
    failing): answer 503, the messages may still be committed, and a retry is deduplicated.

    Why a class of its own: a database driver raises a plain :class:`TimeoutError` when it
    cannot connect, which is a store failure (:class:`StoreUnavailable`, and the store is
    reported failing); the runtime lets only this one through unchanged.
    """


class DeliveryError(SailsegError):
    """Base of the per-event outcomes a component can raise.

    :param response: the last response seen from the vendor (status, body excerpt), kept
        with a dead letter so an operator can see why. Never include secrets.
    """

    def __init__(self, message: str, *, response: Any = None) -> None:
        super().__init__(message)
        self.response = response


class RetryableError(DeliveryError):
    """A transient failure. ``retry_after`` (seconds), when known, is a lower bound on the wait
    (from Retry-After or a rate-limit reset)."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, response: Any = None
    ) -> None:
        super().__init__(message, response=response)
        self.retry_after = retry_after


class FatalError(DeliveryError):
    """A permanent failure: retrying cannot help. The event goes to the dead letters at once."""


class SkipEvent(DeliveryError):
    """The component has nothing to do with this event. Recorded as skipped, not an error."""


class ParkEvent(DeliveryError):
    """The event cannot be delivered yet because its identity is not resolved.

    The runtime parks it until a later event resolves the identity, or until it expires.
    ``keys`` names the identifiers (``{"anonymousId": "..."}``) that, once linked to the
    missing key, release it.
    """

    def __init__(self, message: str, *, keys: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.keys = keys or {}
