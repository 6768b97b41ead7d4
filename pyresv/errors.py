"""Exceptions and sentinels shared by every allocator implementation."""

from __future__ import annotations

__all__ = ["PENDING", "AllocatorError", "QueueFull"]

#: Returned by ``acquire`` when the request was queued; served later via ``take_grants``.
PENDING: int = -1


class AllocatorError(RuntimeError):
    """A misuse of an allocator (a bad release) or a broken invariant found by ``check()``."""


class QueueFull(AllocatorError):
    """Queuing one more request would exceed the allocator's ``max_waiters``."""
