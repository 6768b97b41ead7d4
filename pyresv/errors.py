"""Exceptions and sentinels shared by every allocator implementation."""

from __future__ import annotations

__all__ = ["PENDING", "AllocatorError", "QueueFull", "ConfigError"]

#: Returned by ``acquire`` when the request was queued; served later via ``take_grants``.
PENDING: int = -1


class AllocatorError(RuntimeError):
    """A misuse of an allocator (a bad release) or a broken invariant found by ``check()``."""


class QueueFull(AllocatorError):
    """Queuing one more request would exceed the allocator's ``max_waiters``."""


class ConfigError(ValueError):
    """A bad configuration value or key; the message starts with the dotted key it is about.

    The one error type of every config reader (the simulator's TOML config, the
    model check's, sweep and sizing arguments), so callers catch one class.
    """
