"""Which distribution provides each first-party component, as data.

Why here: core must not import vendor plugins, yet ``unknown trigger type 'segment.webhook'``
should tell the user what to install. A test (tests/test_config_errors.py) checks this table
against the components the installed first-party plugins actually register, so it cannot
drift.
"""

from __future__ import annotations

__all__ = ["FIRST_PARTY_COMPONENTS"]

_SAILTHRU = "sailseg-plugins-sailthru"
_SEGMENT = "sailseg-plugins-segment"
_IDENTITY = "sailseg-plugins-identity"
_ECHO = "sailseg-plugins-echo"

#: (kind, component name) -> the distribution that registers it
FIRST_PARTY_COMPONENTS: dict[tuple[str, str], str] = {
    ("trigger", "sailthru.postback"): _SAILTHRU,
    ("trigger", "sailthru.poll"): _SAILTHRU,
    ("sink", "sailthru.user"): _SAILTHRU,
    ("sink", "sailthru.list"): _SAILTHRU,
    ("sink", "sailthru.event"): _SAILTHRU,
    ("sink", "sailthru.purchase"): _SAILTHRU,
    ("sink", "sailthru.send"): _SAILTHRU,
    ("sink", "sailthru.delete"): _SAILTHRU,
    ("trigger", "segment.webhook"): _SEGMENT,
    ("trigger", "segment.ingest"): _SEGMENT,
    ("resolver", "segment.profiles"): _SEGMENT,
    ("sink", "segment.track"): _SEGMENT,
    ("sink", "segment.identify"): _SEGMENT,
    ("sink", "segment.group"): _SEGMENT,
    ("sink", "segment.alias"): _SEGMENT,
    ("resolver", "identity.graph"): _IDENTITY,
    ("sink", "privacy.delete"): _IDENTITY,
    ("transform", "consent.to_sailthru"): _IDENTITY,
    ("transform", "consent.to_segment"): _IDENTITY,
    ("trigger", "echo"): _ECHO,
    ("transform", "echo"): _ECHO,
    ("resolver", "echo"): _ECHO,
    ("sink", "echo"): _ECHO,
}
