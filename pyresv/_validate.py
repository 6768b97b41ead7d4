"""Argument checks shared by both allocator implementations.

The compiled core and :mod:`pyresv.reference` must refuse the same inputs with
the same messages (the differential tests compare them), so the checks that
run off the hot path (the constructor, the batch calls' array conversions)
live here once. Per-call checks of ``acquire``/``release`` stay in each
implementation: in the core they are C.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pyresv.errors import AllocatorError

__all__ = [
    "INT32_MAX",
    "WAKE_POLICIES",
    "is_int",
    "validate_shape",
    "batch_arrays",
    "int_array",
    "tcb_array",
]

INT32_MAX = 2**31 - 1  # ids and counts are int32 in the core
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

#: Who gets a freed unreserved TCB: the deepest level then the oldest, or the oldest.
WAKE_POLICIES = ("deepest", "fifo")


def is_int(x: Any) -> bool:
    """An int or numpy integer, but not a bool (``True`` is no pid)."""
    return type(x) is int or (isinstance(x, (int, np.integer)) and not isinstance(x, bool))


def _count(name: str, value: Any, minimum: int) -> int:
    if not is_int(value):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > INT32_MAX:
        raise ValueError(f"{name} must be <= {INT32_MAX}, got {value}")
    return int(value)


def _depths(depths: Any) -> tuple[tuple[int, int], ...]:
    try:
        items = list(depths)
    except TypeError:
        raise ValueError(f"depths must be a sequence of (pools, pool_size), got {depths!r}") from None
    if not items:
        raise ValueError("depths must name at least one level")
    out = []
    for i, item in enumerate(items, start=1):
        try:
            pools, size = item
        except (TypeError, ValueError):
            raise ValueError(f"depths[{i - 1}] (level {i}) must be (pools, pool_size), got {item!r}") from None
        pools = _count(f"depths[{i - 1}] pools (level {i})", pools, 0)
        size = _count(f"depths[{i - 1}] pool_size (level {i})", size, 1)
        out.append((pools, size))
    return tuple(out)


def validate_shape(
    depths: Sequence[Sequence[int]], unreserved: Any, max_processes: Any, max_waiters: Any, wake: Any
) -> tuple[tuple[tuple[int, int], ...], int, int, int]:
    """The constructor's arguments, checked: ``(depths, unreserved, max_processes, max_waiters)``.

    Raises ``ValueError`` naming the first bad argument, including the core's
    32-bit limits (ids and the ``pid * levels + level`` table index are int32).
    """
    levels = _depths(depths)
    unreserved = _count("unreserved", unreserved, 0)
    max_processes = _count("max_processes", max_processes, 1)
    max_waiters = _count("max_waiters", max_waiters, 1)
    if wake not in WAKE_POLICIES:
        raise ValueError(f"wake must be 'deepest' or 'fifo', got {wake!r}")
    total = sum(pools * size for pools, size in levels) + unreserved
    if total > INT32_MAX - 1:
        raise ValueError(f"{total} TCBs in all; at most {INT32_MAX - 1} are supported")
    if max_processes * len(levels) > INT32_MAX:
        raise ValueError(
            f"max_processes * levels = {max_processes} * {len(levels)} = "
            f"{max_processes * len(levels)}; at most {INT32_MAX} are supported"
        )
    return levels, unreserved, max_processes, max_waiters


def batch_arrays(pids: Any, depths: Any, remote: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arguments of ``acquire_many`` as 1-d arrays of one length (ValueError otherwise)."""
    p = np.asarray(pids)
    d = np.asarray(depths)
    r = np.zeros(p.shape, dtype=bool) if remote is None else np.asarray(remote)
    if p.ndim != 1 or d.shape != p.shape or r.shape != p.shape:
        raise ValueError(
            f"pids, depths and remote must be 1-d of one length, got shapes "
            f"{p.shape}, {d.shape}, {r.shape}"
        )
    return p, d, r


def _clip64(a: np.ndarray) -> np.ndarray:
    """Integers (an integer array, or ints in an object array) as a contiguous int64 array.

    Values beyond int64 are clipped: they are out of every range, and error
    messages name the original value.
    """
    if a.dtype.kind == "u" and a.dtype.itemsize == 8:
        return np.ascontiguousarray(np.minimum(a, _INT64_MAX), dtype=np.int64)
    if a.dtype.kind == "O":
        return np.array([min(max(int(x), _INT64_MIN), _INT64_MAX) for x in a], dtype=np.int64)
    return np.ascontiguousarray(a, dtype=np.int64)


def int_array(name: str, a: np.ndarray) -> np.ndarray:
    """1-d ``a`` as a contiguous int64 array; ValueError unless it holds integers.

    Integer dtypes are accepted, and object arrays whose items are all ints
    (not bools); floats, bools and anything else are refused.
    """
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind == "O":
        for i, x in enumerate(a):
            if not is_int(x):
                raise ValueError(f"{name} must be integers, got {x!r} at index {i}")
    elif a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, got dtype {a.dtype}")
    return _clip64(a)


def tcb_array(tcbs: Any) -> tuple[np.ndarray, np.ndarray]:
    """The argument of ``release_many``: (the 1-d array, it as int64); like :func:`int_array`.

    ValueError unless 1-d; :class:`~pyresv.AllocatorError` naming the first
    item that is no integer.
    """
    t = np.asarray(tcbs)
    if t.ndim != 1:
        raise ValueError(f"tcbs must be 1-d, got shape {t.shape}")
    if t.size == 0:
        return t, np.zeros(0, dtype=np.int64)
    if t.dtype.kind == "O":
        for x in t:
            if not is_int(x):
                raise AllocatorError(f"TCB {x!r} is not an int")
    elif t.dtype.kind not in "iu":
        raise AllocatorError(f"TCB {t[0]!r} is not an int")
    return t, _clip64(t)
