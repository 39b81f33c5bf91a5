"""Bounding a call that takes no timeout of its own with a cancel scope.

When: the accept path passes its deadline down (``ctx.accept(timeout=)`` to
``Store.enqueue(timeout=)`` to the group commit's one timer per batch), which costs nothing per
request. Three callers cannot: a third-party store without ``enqueue_timeout``, an accept
function without a named ``timeout`` parameter, and the once-a-second backlog read. They get a
cancel scope instead, through :func:`within`, so all three fail the same way: a
:class:`~sailseg.errors.CommitTimeout` (a busy store, answered 503), never a bare cancel.
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
    """``await fn(*args, **kwargs)``, given up after ``timeout`` seconds.

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
