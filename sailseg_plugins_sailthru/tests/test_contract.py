"""Every Sailthru component passes the standard sailseg contract suites (sailseg.testing),
against the in-process emulator, exactly as a third-party plugin's components would."""

from __future__ import annotations

from urllib.parse import urlencode

import sailseg_plugins_sailthru as plugin
from sailseg.testing import SampleRequest, get_sink_test_class, get_trigger_test_class
from sailseg_plugins_sailthru.emulator import build_postback
from sailseg_plugins_sailthru.poll import PollTrigger
from sailseg_plugins_sailthru.postback import PostbackTrigger
from sailseg_plugins_sailthru.sinks import (
    DeleteSink,
    EventSink,
    ListSink,
    PurchaseSink,
    SendSink,
    UserSink,
)
from sailseg_plugins_sailthru.testing import (
    SAILTHRU_ENV,
    SAILTHRU_TEST_KEY,
    SAILTHRU_TEST_SECRET,
    sailthru_app,
)

# -- start sailthru --
EMAIL = {"context": {"traits": {"email": "contract@example.com"}}}
COMMON = {"app": sailthru_app, "env": SAILTHRU_ENV, "plugin": plugin}

TestUserSink = get_sink_test_class(
    UserSink, config={"lists": {"Contract": 1}}, **COMMON,
    events=[{"type": "identify", "userId": "u-1",
             "traits": {"email": "contract@example.com", "name": "Ada", "address": {"city": "Paris"}}}],
)
# -- end sailthru --

TestEventSink = get_sink_test_class(
    EventSink, **COMMON,
    events=[{"type": "track", "userId": "u-1", "event": "Plan Upgraded", "properties": {"plan": "pro"}, **EMAIL}],
)

TestPurchaseSink = get_sink_test_class(
    PurchaseSink, config={"url_template": "https://shop.example/p/{product_id}"}, **COMMON,
    events=[{"type": "track", "userId": "u-1", "event": "Order Completed", **EMAIL,
             "properties": {"order_id": "o-1", "total": 12.5,
                            "products": [{"product_id": "p-1", "name": "Mug", "price": 12.5, "quantity": 1}]}}],
)

TestSendSink = get_sink_test_class(
    SendSink, config={"templates": {"Password Reset": "reset-tpl"}}, **COMMON,
    events=[{"type": "track", "userId": "u-1", "event": "Password Reset",
             "properties": {"email": "contract@example.com", "link": "https://x/r"}}],
)

TestListSink = get_sink_test_class(
    ListSink, **COMMON,
    events=[{"type": "track", "userId": "u-1", "event": "Subscribed",
             "properties": {"list_name": "News", "email": "contract@example.com"}}],
)

TestDeleteSink = get_sink_test_class(
    DeleteSink, **COMMON,
    events=[{"type": "delete", "userId": "u-1", **EMAIL}],
)


# -- start postback --
def postback(fields: dict[str, str]) -> SampleRequest:
    body = urlencode(build_postback(fields, SAILTHRU_TEST_KEY, SAILTHRU_TEST_SECRET)).encode()
    return SampleRequest("/sailthru/postback", body=body,
                         headers={"content-type": "application/x-www-form-urlencoded"})


TestPostbackTrigger = get_trigger_test_class(
    PostbackTrigger, **COMMON,
    requests=[postback({"action": "optout", "email": "contract@example.com", "optout": "1"}),
              postback({"action": "update", "email": "contract@example.com", "vars[plan]": "pro"})],
)
# -- end postback --

# a poller has no routes: the request cases skip (test_triggers.py drives its run())
TestPollTrigger = get_trigger_test_class(PollTrigger, config={"interval": 3600}, **COMMON)
