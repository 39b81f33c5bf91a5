"""The Sailthru sinks, one module each."""

from __future__ import annotations

from .delete import DeleteSink
from .event import EventSink
from .lists import ListSink
from .purchase import PurchaseSink
from .send import SendSink
from .user import UserSink

__all__ = ["UserSink", "EventSink", "PurchaseSink", "SendSink", "ListSink", "DeleteSink", "ALL_SINKS"]

ALL_SINKS = (UserSink, EventSink, PurchaseSink, SendSink, ListSink, DeleteSink)
