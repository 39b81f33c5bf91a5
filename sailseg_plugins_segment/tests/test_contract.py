"""Every Segment component passes the standard sailseg contract suites (sailseg.testing),
against the in-process emulator, exactly as a third-party plugin's components would."""

from __future__ import annotations

import sailseg_plugins_segment as plugin
from sailseg.testing import (
    SampleRequest,
    get_identity_resolver_test_class,
    get_sink_test_class,
    get_trigger_test_class,
)
from sailseg_plugins_segment.ingest import SegmentIngest
from sailseg_plugins_segment.profiles import SegmentProfiles
from sailseg_plugins_segment.sinks import (
    SegmentAliasSink,
    SegmentGroupSink,
    SegmentIdentifySink,
    SegmentTrackSink,
)
from sailseg_plugins_segment.testing import (
    SEGMENT_ENV,
    SEGMENT_TEST_SPACE,
    SEGMENT_TEST_WRITE_KEY,
    segment_app,
)
from sailseg_plugins_segment.webhook import SegmentWebhook

COMMON = {"app": segment_app, "env": SEGMENT_ENV, "plugin": plugin}
TRACK = {"type": "track", "userId": "u-1", "event": "Email Opened", "properties": {"email_id": "s-1"}}
IDENTIFY = {"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com", "plan": "pro"}}

TestTrackSink = get_sink_test_class(SegmentTrackSink, events=[TRACK], **COMMON)
TestIdentifySink = get_sink_test_class(SegmentIdentifySink, events=[IDENTIFY], **COMMON)
TestGroupSink = get_sink_test_class(
    SegmentGroupSink, events=[{"type": "group", "userId": "u-1", "groupId": "g-1", "traits": {"name": "Co"}}],
    **COMMON)
TestAliasSink = get_sink_test_class(
    SegmentAliasSink, events=[{"type": "alias", "userId": "u-1", "previousId": "a-1"}], **COMMON)


def seeded_emulator() -> object:
    """The emulator with one profile the sample events resolve to."""
    app = segment_app()
    app.profiles.seed(SEGMENT_TEST_SPACE, external_ids=[  # type: ignore[attr-defined]
        {"type": "user_id", "id": "u-1"}, {"type": "email", "id": "ada@example.com"},
    ], traits={})
    return app


TestProfilesResolver = get_identity_resolver_test_class(
    SegmentProfiles, app=seeded_emulator, env=SEGMENT_ENV, plugin=plugin,
    events=[{"type": "track", "userId": "u-1", "event": "Viewed"}],
)

TestWebhookTrigger = get_trigger_test_class(
    SegmentWebhook, config={"path": "/segment/webhook"}, **COMMON,
    requests=[SampleRequest("/segment/webhook", body=IDENTIFY), SampleRequest("/segment/webhook", body=[TRACK])],
)


def basic(key: str) -> dict[str, str]:
    import base64

    return {"authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


TestIngestTrigger = get_trigger_test_class(
    SegmentIngest, config={"write_keys": [SEGMENT_TEST_WRITE_KEY]}, **COMMON,
    requests=[SampleRequest("/v1/track", body=TRACK, headers=basic(SEGMENT_TEST_WRITE_KEY))],
)
