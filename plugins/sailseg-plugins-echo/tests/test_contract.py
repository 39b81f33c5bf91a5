"""The echo plugin passes every standard contract suite (as any third-party plugin would)."""

from __future__ import annotations

import sailseg_plugins_echo as echo
from sailseg.testing import (
    SampleRequest,
    get_identity_resolver_test_class,
    get_sink_test_class,
    get_transform_test_class,
    get_trigger_test_class,
)

IDENTIFY = {"type": "identify", "userId": "u-1", "messageId": "m-1",
            "traits": {"email": "ada@example.com", "name": "Ada"}}
TRACK = {"type": "track", "userId": "u-1", "event": "Signed Up", "messageId": "m-2"}

TestEchoSink = get_sink_test_class(echo.EchoSink, events=[IDENTIFY, TRACK], plugin=echo)

TestEchoTransform = get_transform_test_class(
    echo.EchoTransform,
    config={"key": "tagged", "value": "yes"},
    events=[TRACK],
    expected=[{**TRACK, "context": {"tagged": "yes"}}],
    plugin=echo,
)

TestEchoResolver = get_identity_resolver_test_class(echo.EchoResolver, events=[IDENTIFY, TRACK], plugin=echo)

TestEchoTrigger = get_trigger_test_class(
    echo.EchoTrigger,
    config={"path": "/in"},
    requests=[SampleRequest("/in", body=IDENTIFY), SampleRequest("/in", body=[TRACK])],
    plugin=echo,
)

