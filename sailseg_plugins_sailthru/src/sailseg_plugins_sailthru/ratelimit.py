"""The account-wide Sailthru rate budget, one bucket per endpoint+method.

Why: Sailthru counts requests per account, endpoint and method in calendar minutes and answers
429 / error 43 once the minute's allowance is spent; retrying inside the same minute only burns
attempts. The budget is fed by the ``X-Rate-Limit-Limit/-Remaining/-Reset`` headers of every
response and is consulted *before* every request: when it says the request would be refused,
the caller waits for the reset (bounded) or gets a :class:`SailthruRateLimited` with
``retry_after`` set to the reset.

It lives on the shared :class:`~sailseg_plugins_sailthru.client.SailthruClient`, so every sink
and trigger of one account in the process draws on the same budget.

Accounting per bucket: ``remaining`` is our estimate of requests still allowed in the current
window; each send takes one; each response lowers it to ``server remaining - other requests in
flight`` (never raises it inside a window, so concurrent responses arriving out of order cannot
over-grant). A new window (a larger reset) restarts from the server's figures. Until the first
headers of a bucket's window are known (at start, and after each reset), only
``probe_concurrency`` requests go out. A bucket whose responses carry no rate-limit headers at
all (a proxy or stub in front of the API, or an endpoint that is not metered) is *unmetered*:
with nothing to pace by, it does not throttle, until a response brings the headers back.

After a 429 the bucket is *refused*: its window is treated as spent, but one probe request
goes out every ``probe_interval`` seconds until the reset, and the first success restores the
server's own figures. Why: a 429 can be transient (a gateway hiccup, a burst refused by the
vendor while its counters say otherwise); the earlier rule "spent until the reset, then one
probe" let a burst of N 429s stall the backlog for N whole windows (issue 18 item 1: a burst
of 30 stalled 1,000 identifies for minutes). Against a genuinely exhausted account the probes
cost at most ``60 / probe_interval`` refused requests per minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio

from sailseg.logs import rate_limit_wait

from .errors import SailthruRateLimited

__all__ = ["BucketState", "RateBudget"]


@dataclass
class BucketState:
    """What the budget knows about one endpoint+method."""

    limit: int | None = None
    remaining: int | None = None
    reset: float = 0.0
    inflight: int = 0
    sent: int = 0
    waited: float = 0.0
    #: False once a response came back without any rate-limit header (see the module doc)
    metered: bool = True
    #: a 429 refused this window: probe every ``probe_interval`` until a success or the reset
    refused: bool = False
    next_probe: float = 0.0
    refusals: int = 0


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(float(raw))
    except ValueError:
        return None


def _header_float(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


class RateBudget:
    """Pre-emptive, header-fed rate budget.

    :param clock: ``time.time``-like (Sailthru's reset is a unix epoch).
    :param max_wait: longest wait for a reset before giving up with ``retry_after``.
    :param reset_margin: extra seconds after the reset before sending (clock skew).
    :param probe_concurrency: requests allowed on a bucket whose limits are still unknown.
    :param safety: requests per window left unused (headroom for other processes).
    :param probe_interval: seconds between probes of a bucket refused by a 429 (module doc).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_wait: float = 5.0,
        reset_margin: float = 0.05,
        probe_concurrency: int = 1,
        safety: int = 0,
        probe_interval: float = 1.0,
    ) -> None:
        self.clock = clock
        self.max_wait = max_wait
        self.reset_margin = reset_margin
        self.probe_concurrency = max(1, probe_concurrency)
        self.safety = max(0, safety)
        self.probe_interval = max(0.01, probe_interval)
        self.buckets: dict[tuple[str, str], BucketState] = {}

    def state(self, endpoint: str, method: str) -> BucketState:
        key = (endpoint, method.upper())
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = BucketState()
        return b

    async def acquire(self, endpoint: str, method: str, *, max_wait: float | None = None) -> None:
        """Take one request from the bucket, waiting (bounded) for a reset if it is spent.

        :raises SailthruRateLimited: when the wait would exceed ``max_wait``.
        """
        b = self.state(endpoint, method)
        limit_wait = self.max_wait if max_wait is None else max_wait
        waited = 0.0
        while True:
            if not b.metered:
                break
            now = self.clock()
            if b.reset and now >= b.reset + self.reset_margin:
                # the window passed: probe the new one (its first response gives the real
                # figures), so a server window of any length or phase is followed exactly
                b.remaining = None
                b.reset = 0.0
                b.refused = False
            if b.remaining is None:
                if b.inflight < self.probe_concurrency:
                    break
                delay = 0.002
            elif b.remaining > 0:
                b.remaining -= 1
                break
            elif b.refused and now >= b.next_probe and b.inflight < self.probe_concurrency:
                b.next_probe = now + self.probe_interval
                break
            else:
                delay = max(0.0, b.reset + self.reset_margin - now)
                if b.refused:
                    delay = min(delay, max(0.002, b.next_probe - now))
            if waited + delay > limit_wait:
                retry_after = max(delay, 0.001)
                raise SailthruRateLimited(
                    f"Sailthru rate budget for {method.upper()} /{endpoint} is spent until the "
                    f"reset in {retry_after:.2f}s",
                    status=None,
                    code=43,
                    retry_after=retry_after,
                    response={"local_budget": True, "reset": b.reset},
                )
            await anyio.sleep(delay)
            waited += delay
            b.waited += delay
        if waited > 0.05:
            rate_limit_wait(component="sailthru", endpoint=f"{method.upper()} /{endpoint}", seconds=waited)
        b.inflight += 1
        b.sent += 1

    def release(self, endpoint: str, method: str, headers: Mapping[str, str] | None, *,
                status: int | None = None) -> None:
        """Record the outcome of an acquired request (``headers`` None on network failure)."""
        b = self.state(endpoint, method)
        b.inflight = max(0, b.inflight - 1)
        if not headers:
            # an answer without any rate-limit header: nothing to pace by. Without this the
            # bucket stayed in its probe state and let one request out at a time (W1 against
            # a header-less stub: 1 in flight, the other sends polling every 2 ms)
            if status is not None and status < 500 and status != 429:
                b.metered = False
            return
        b.metered = True
        limit = _header_int(headers, "x-rate-limit-limit")
        remaining = _header_int(headers, "x-rate-limit-remaining")
        reset = _header_float(headers, "x-rate-limit-reset")
        if status == 429 and reset is not None:
            if reset >= b.reset:
                b.reset = reset
                b.remaining = 0
                b.refusals += 1
                if not b.refused:
                    b.refused = True
                    b.next_probe = self.clock() + self.probe_interval
                if limit is not None:
                    b.limit = limit
            return
        if limit is None or remaining is None or reset is None:
            return
        estimate = remaining - b.inflight - self.safety
        if b.refused and reset >= b.reset and status is not None and status < 400:
            # the probe after a 429 got through: the server's figures are the truth again
            b.refused = False
            b.limit, b.reset = limit, reset
            b.remaining = max(0, estimate)
        elif reset > b.reset:
            b.limit, b.reset = limit, reset
            b.remaining = max(0, estimate)
        elif reset == b.reset:
            b.limit = limit
            b.remaining = max(0, estimate if b.remaining is None else min(b.remaining, estimate))
        # a stale window's headers (reset < ours) carry nothing new

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        """Bucket states for status pages and tests."""
        return {
            f"{m} /{e}": {"limit": b.limit, "remaining": b.remaining, "reset": b.reset,
                          "inflight": b.inflight, "sent": b.sent, "waited": round(b.waited, 3),
                          "refusals": b.refusals}
            for (e, m), b in self.buckets.items()
        }
