"""sailseg: durable, plugin-based real-time sync between Segment and Sailthru.

Public API for plugin authors: :data:`hookimpl`, the component base classes, :class:`Event`,
the errors, and :mod:`sailseg.testing` (the pytest harness).
"""

from .components import (
    AcceptResult,
    ComponentContext,
    EmptyConfig,
    IdentityResolver,
    Register,
    SignedSample,
    Sink,
    Transform,
    Trigger,
)
from .errors import (
    Backpressure,
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
)
from .events import Event
from .hookspecs import hookimpl
from .http import Request, Response, Route, error_response, json_response

__all__ = [
    "hookimpl",
    "Trigger",
    "Transform",
    "IdentityResolver",
    "Sink",
    "ComponentContext",
    "AcceptResult",
    "EmptyConfig",
    "Register",
    "SignedSample",
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
    "DeliveryError",
    "RetryableError",
    "FatalError",
    "SkipEvent",
    "ParkEvent",
]
__version__ = "0.1.0"
