"""sailseg: durable, plugin-based real-time sync between Segment and Sailthru.

Public API for plugin authors: :data:`hookimpl`, the component base classes, :class:`Event`,
the store facades a component gets (:class:`KV`, :class:`Audit`), the errors, and
:mod:`sailseg.testing` (the pytest harness).
"""

import sys as _sys

# httpx imports its command-line client whenever click, rich and pygments are installed (rich
# is, for sailseg's progress bars): about 5 MB of memory and 0.25 s at start in every process
# that imports sailseg, the serve process and its delivery child included, for a client sailseg
# never runs. A None entry makes that optional import fail the way httpx expects (``httpx.main``
# then only prints how to install the CLI; the ``httpx`` command runs in its own process). Any
# program importing sailseg before httpx gets that too: import httpx first to keep its CLI.
if "httpx" not in _sys.modules:
    _sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from .checks import Check
from .components import (
    AcceptResult,
    BatchVerdict,
    ComponentContext,
    EmptyConfig,
    IdentityResolver,
    Register,
    SignedSample,
    Sink,
    SinkResult,
    Transform,
    Trigger,
)
from .errors import (
    Backpressure,
    CommitTimeout,
    ConfigError,
    DeliveryError,
    FatalError,
    InputError,
    ParkEvent,
    PluginError,
    RetryableError,
    SailsegError,
    SkipEvent,
    StoreError,
    StoreUnavailable,
)
from .events import Event
from .hookspecs import hookimpl
from .http import Request, Response, Route, error_response, json_response
from .store.base import AuditRecord
from .store.facades import KV, Audit

__all__ = [
    "hookimpl",
    "Trigger",
    "Transform",
    "IdentityResolver",
    "Sink",
    "SinkResult",
    "BatchVerdict",
    "ComponentContext",
    "KV",
    "Audit",
    "AuditRecord",
    "AcceptResult",
    "EmptyConfig",
    "Register",
    "SignedSample",
    "Check",
    "Event",
    "Request",
    "Response",
    "Route",
    "json_response",
    "error_response",
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
__version__ = "0.1.0"
