"""Bounding a call that takes no timeout of its own with a cancel scope.

Why: the accept path passes its deadline down (``ctx.accept(timeout=)`` to
``Store.enqueue(timeout=)`` to the group commit's one timer per batch), which costs nothing per
request. Three callers cannot pass it down: a third-party store without ``enqueue_timeout``, an
accept function without a named ``timeout`` parameter, and the once-a-second backlog read. They
use :func:`within` instead, so all three fail the same way when their own deadline passes: a
:class:`~sailseg.errors.CommitTimeout` (a busy store, answered 503). A cancellation from outside
(shutdown, a client gone) is not turned into one; it propagates as it came.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from .errors import CommitTimeout

__all__ = ["within"]

T = TypeVar("T")


async def within(timeout: float, what: str, fn: Callable[..., Awaitable[T]], *args: Any,
                 **kwargs: Any) -> T:
    """``await fn(*args, **kwargs)``, cancelled once ``timeout`` seconds have passed.

    The cancel lands at the call's next cancellable await. A call inside a shielded wait (a
    thread anyio does not abandon) finishes that wait first; if it then returns without
    awaiting again, its result is returned, late.

    :raises CommitTimeout: ``"<what> within <timeout> s"`` when the scope ran out first (the
        call was cancelled; a write it had started may still commit, as with the group
        commit's own deadline).
    """
    done = False
    with anyio.move_on_after(timeout):
        result = await fn(*args, **kwargs)
        done = True
    if not done:
        raise CommitTimeout(f"{what} within {timeout:g} s")
    return result
