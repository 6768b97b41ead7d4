"""Argument checks shared by both allocator implementations.

The compiled core and :mod:`pyresv.reference` must refuse the same inputs with
the same messages (the differential tests compare them), so the checks that
run off the hot path (the constructor, the batch calls' array conversions)
live here once. Per-call checks of ``acquire``/``release`` stay in each
implementation: in the core they are C.
"""

from __future__ import annotations

import operator
from typing import Any, Sequence

import numpy as np

from pyresv.errors import AllocatorError

__all__ = [
    "INT32_MAX",
    "WAKE_POLICIES",
    "as_index",
    "is_int",
    "check_depths",
    "validate_shape",
    "batch_arrays",
    "int_array",
    "tcb_array",
    "STATE_VERSION",
    "COUNTERS",
    "SEQ_LIMIT",
    "request_limit_message",
    "bad_state",
    "read_state",
    "check_counters",
]

INT32_MAX = 2**31 - 1  # ids and counts are int32 in the core
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

#: Who gets a freed unreserved TCB: the deepest level then the oldest, or the oldest.
WAKE_POLICIES = ("deepest", "fifo")


def as_index(x: Any) -> int | None:
    """The int ``x`` stands for under the one rule for integer arguments, or None.

    The rule, for pids, depths, levels, TCB ids, tickets and the
    constructor's counts, in the core and the reference alike: an argument is
    accepted exactly when ``operator.index`` accepts it (ints, numpy integer
    scalars, 0-d integer arrays, any object with ``__index__``), except
    bools (``True`` is no pid). Floats are refused, even integral ones
    (``1.0``), as are strings, None and arrays of more than one item. An
    ``__index__`` that raises anything but ``TypeError`` propagates.
    """
    if type(x) is int:
        return x
    if isinstance(x, (bool, np.bool_)):
        return None
    try:
        return int(operator.index(x))
    except TypeError:
        return None


def is_int(x: Any) -> bool:
    """Whether ``x`` is accepted as an integer argument (see :func:`as_index`)."""
    return as_index(x) is not None


def _count(name: str, value: Any, minimum: int) -> int:
    v = as_index(value)
    if v is None:
        raise ValueError(f"{name} must be an int, got {value!r}")
    value = v
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > INT32_MAX:
        raise ValueError(f"{name} must be <= {INT32_MAX}, got {value}")
    return int(value)


def check_depths(value: Any, key: str = "depths") -> tuple[tuple[int, int], ...]:
    """``value`` as ``((pools, pool_size), ...)``, one pair per depth level (FIG 3).

    The one check of a depths list: the allocators' constructors call it, and
    so does every config reader (``key`` is then the dotted config key, such as
    ``reservation.depths``). ``pools >= 0``, ``pool_size >= 1``, both ints that
    fit the core's 32 bits. Raises ``ValueError`` whose message starts with
    ``key`` and the index at fault.
    """
    if isinstance(value, (str, bytes)):
        items = None
    else:
        try:
            items = list(value)
        except TypeError:
            items = None
    if not items:
        raise ValueError(f"{key}: must be a non-empty list of (pools, pool_size) pairs, got {value!r}")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, (str, bytes)):
            item = None
        try:
            pools, size = item
        except (TypeError, ValueError):
            raise ValueError(f"{key}[{i}]: must be a (pools, pool_size) pair (level {i + 1}), got {item!r}") from None
        pools = _count(f"{key}[{i}]: pools (level {i + 1})", pools, 0)
        size = _count(f"{key}[{i}]: pool_size (level {i + 1})", size, 1)
        out.append((pools, size))
    return tuple(out)


def validate_shape(
    depths: Sequence[Sequence[int]], unreserved: Any, max_processes: Any, max_waiters: Any, wake: Any
) -> tuple[tuple[tuple[int, int], ...], int, int, int]:
    """The constructor's arguments, checked: ``(depths, unreserved, max_processes, max_waiters)``.

    Raises ``ValueError`` naming the first bad argument, including the core's
    32-bit limits (ids and the ``pid * levels + level`` table index are int32).
    """
    levels = check_depths(depths)
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


def _private(x: Any) -> np.ndarray:
    """``x`` as an array of our own: the one read of caller memory (DESIGN §4).

    ``np.asarray`` would hand back the caller's array itself, which another
    thread may write while a batch validates and applies it.
    """
    return np.array(x, copy=True)


def batch_arrays(pids: Any, depths: Any, remote: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arguments of ``acquire_many`` as 1-d arrays of one length (ValueError otherwise).

    Private copies: the caller's arrays are read here, once, and never again.
    """
    p = _private(pids)
    d = _private(depths)
    r = np.zeros(p.shape, dtype=bool) if remote is None else _private(remote)
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
        return np.array([min(max(operator.index(x), _INT64_MIN), _INT64_MAX) for x in a], dtype=np.int64)
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
    item that is no integer. The array is a private copy (read once).
    """
    t = _private(tcbs)
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


# ------------------------------------------------------------------ pickles
# Both implementations pickle the same plain state (``state_of`` in each) and
# load it through ``read_state`` and ``check_counters``: every entry and bound
# is validated before the loader reads anything, and a state is accepted only
# if it is one the calls could have produced (DESIGN §4): it passes check()
# and stays sound under any sequence of calls.

#: Version of the pickled state. 2: grants carry the ticket of the request they served.
STATE_VERSION = 2
#: The state's counters, in ``stats()`` order.
COUNTERS = ("served_pool", "served_unreserved", "queued", "granted", "cancelled", "released")
#: The request limit: at most this many requests are served or queued over an
#: allocator's life (``acquire`` then raises AllocatorError, nothing changed),
#: and a pickled state may count at most this many. Every counter and ticket
#: is bounded by that count (granted and cancelled <= queued, released <=
#: served + granted), so a state the loader accepts stays picklable after any
#: sequence of calls, and no counter can overflow int64 in the core. At a
#: billion requests a second the limit is 146 years away.
SEQ_LIMIT = 2**62
_STATE_KEYS = frozenset(
    ("version", "holder", "pool_nfree", "pool_free", "level_free_pools", "free_pools",
     "unres_free", "waiters", "next_seq", "grants", "counters")
)


def request_limit_message(pid: int, level: int) -> str:
    """The message of an acquire refused at the request limit (:data:`SEQ_LIMIT`)."""
    return (
        f"request limit reached: {SEQ_LIMIT} requests served or queued, the most "
        f"an allocator counts; pid {pid} at level {level} not served"
    )


def bad_state(msg: str) -> AllocatorError:
    """The error of a refused pickled state."""
    return AllocatorError(f"inconsistent pickled allocator state: {msg}")


def _state_ints(state: dict, key: str, cols: int = 0) -> np.ndarray:
    """``state[key]`` as an int64 array: 1-d, or 2-d with ``cols`` columns (refused otherwise)."""
    value = state[key]
    try:
        a = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a refusal
        raise bad_state(f"{key}: {type(exc).__name__}: {exc}") from None
    if a.size == 0 and a.dtype.kind in "iuf":
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise bad_state(f"{key} must hold integers, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.size and int(a.max()) > _INT64_MAX:
        raise bad_state(f"{key} holds {int(a.max())}, beyond int64")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if cols:
        if a.size == 0:
            a = a.reshape(0, cols)
        if a.ndim != 2 or a.shape[1] != cols:
            raise bad_state(f"{key} must have shape (n, {cols}), got {a.shape}")
    elif a.ndim != 1:
        raise bad_state(f"{key} must be 1-d, got shape {a.shape}")
    return a


def _state_int(value: Any, name: str, lo: int, hi: int) -> int:
    if not is_int(value):
        raise bad_state(f"{name} must be an int, got {value!r}")
    if not lo <= value <= hi:
        raise bad_state(f"{name} = {value} out of range [{lo}, {hi}]")
    return int(value)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def read_state(
    state: Any, depths: Sequence[tuple[int, int]], unreserved: int, max_processes: int, max_waiters: int
) -> dict[str, Any]:
    """Validate a pickled state, entry by entry, against the allocator's shape.

    Returns the state as int64 arrays and ints, every id and count in range
    and every stack's entries distinct and consistent with ``holder``; raises
    :class:`~pyresv.AllocatorError` ("inconsistent pickled allocator state:
    ...") naming the first problem. The loader then builds the allocator,
    runs ``check()`` and :func:`check_counters`.
    """
    if not isinstance(state, dict):
        raise bad_state(f"a dict is needed, got {type(state).__name__}")
    if state.get("version") != STATE_VERSION:
        raise bad_state(f"unknown version {state.get('version')!r}")
    if set(state) != _STATE_KEYS:
        missing, extra = sorted(_STATE_KEYS - set(state)), sorted(set(state) - _STATE_KEYS)
        raise bad_state(f"keys missing {missing}, unknown {extra}")
    sizes = np.array([size for pools, size in depths for _ in range(pools)], dtype=np.int64)  # per pool
    npools, levels = len(sizes), len(depths)
    pool_base = np.concatenate(([0], np.cumsum(sizes)))[:-1] if npools else np.zeros(0, np.int64)
    reserved = int(sizes.sum())
    total = reserved + unreserved

    holder = _state_ints(state, "holder")
    nfree = _state_ints(state, "pool_nfree")
    level_nfree = _state_ints(state, "level_free_pools")
    if len(holder) != total or len(nfree) != npools or len(level_nfree) != levels:
        raise bad_state("array lengths do not match the allocator's shape")
    bad = (holder < -1) | (holder >= max_processes)
    if bad.any():
        t = _first(bad)
        raise bad_state(f"TCB {t} held by pid {holder[t]}, out of range")
    free = holder == -1

    # Pools: each free stack holds distinct free TCBs of its own pool (that
    # every free TCB is on one is check()'s).
    bad = (nfree < 0) | (nfree > sizes)
    if bad.any():
        p = _first(bad)
        raise bad_state(f"pool {p} has {nfree[p]} free TCBs of {sizes[p]}")
    pool_free = _state_ints(state, "pool_free")
    if len(pool_free) != int(nfree.sum()):
        raise bad_state("pool free stacks do not match pool_nfree")
    seen = np.zeros(max(total, 1), dtype=bool)
    k = 0
    for p in range(npools):
        base, n = int(pool_base[p]), int(nfree[p])
        for t in pool_free[k:k + n].tolist():
            if not base <= t < base + sizes[p] or seen[t] or not free[t]:
                raise bad_state(f"pool {p}'s free stack holds TCB {t}")
            seen[t] = True
        k += n

    # Free pools: wholly free pools of their level, each once.
    free_pools = _state_ints(state, "free_pools")
    pools_of = [p for p, _ in depths]
    first = 0
    k = 0
    seen_pool = np.zeros(max(npools, 1), dtype=bool)
    for lv in range(1, levels + 1):
        n = int(level_nfree[lv - 1])
        if not 0 <= n <= pools_of[lv - 1] or k + n > len(free_pools):
            raise bad_state(f"level {lv} lists {n} free pools")
        for p in free_pools[k:k + n].tolist():
            if not first <= p < first + pools_of[lv - 1] or seen_pool[p] or nfree[p] != sizes[p]:
                raise bad_state(f"level {lv}'s free-pool stack holds pool {p}")
            seen_pool[p] = True
        k += n
        first += pools_of[lv - 1]
    if k != len(free_pools):
        raise bad_state("free-pool stacks do not match level_free_pools")

    # Unreserved: the free stack holds distinct free unreserved TCBs.
    unres_free = _state_ints(state, "unres_free")
    for t in unres_free.tolist():
        if not reserved <= t < total or seen[t] or not free[t]:
            raise bad_state(f"unreserved free stack holds TCB {t}")
        seen[t] = True

    # Pending requests (pid, level, ticket) in arrival order; tickets below next_seq.
    next_seq = _state_int(state["next_seq"], "next_seq", 0, SEQ_LIMIT)
    waiters = _state_ints(state, "waiters", 3)
    if len(waiters) > max_waiters:
        raise bad_state(f"{len(waiters)} requests pend but max_waiters is {max_waiters}")
    for i, (pid, lv, seq) in enumerate(waiters.tolist()):
        if not (0 <= pid < max_processes and 1 <= lv <= levels):
            raise bad_state(f"request {i} names pid {pid} at level {lv}")
        if not 0 <= seq < next_seq or (i and seq <= waiters[i - 1, 2]):
            raise bad_state(f"request {i} has arrival number {seq} out of order")

    # Grants not yet taken: (pid, tcb, ticket) of requests no longer pending.
    grants = _state_ints(state, "grants", 3)
    pending_tickets = set(waiters[:, 2].tolist())
    tickets: set[int] = set()
    for i, (pid, t, seq) in enumerate(grants.tolist()):
        if not (0 <= pid < max_processes and 0 <= t < total):
            raise bad_state(f"grant {i} names pid {pid} and TCB {t}")
        if not 0 <= seq < next_seq or seq in pending_tickets or seq in tickets:
            raise bad_state(f"grant {i} has ticket {seq}, not one of a served request")
        tickets.add(seq)

    counters_in = state["counters"]
    if not isinstance(counters_in, dict) or set(counters_in) != set(COUNTERS):
        raise bad_state(f"counters must be a dict of {list(COUNTERS)}")
    counters = {name: _state_int(counters_in[name], f"counter {name}", 0, SEQ_LIMIT) for name in COUNTERS}
    served = counters["served_pool"] + counters["served_unreserved"] + counters["queued"]
    if served > SEQ_LIMIT:
        # Past the request limit: the calls could not have made it.
        raise bad_state(f"counters: {served} requests served or queued, beyond the limit of {SEQ_LIMIT}")
    if len(grants) > counters["granted"]:
        raise bad_state(f"{len(grants)} grants not taken but {counters['granted']} were made")
    return {
        "holder": holder, "pool_nfree": nfree, "pool_free": pool_free, "level_free_pools": level_nfree,
        "free_pools": free_pools, "unres_free": unres_free, "waiters": waiters, "next_seq": next_seq,
        "grants": grants, "counters": counters,
    }


def check_counters(loaded: dict[str, Any]) -> None:
    """The counters of a state :func:`read_state` accepted add up (run after ``check()``).

    Every queued request was granted, cancelled or still pends, and every
    TCB held was served or granted and not released since.
    """
    c = loaded["counters"]
    pending = len(loaded["waiters"])
    if c["queued"] != c["granted"] + c["cancelled"] + pending:
        raise bad_state(
            f"counters: queued {c['queued']} != granted {c['granted']} + cancelled "
            f"{c['cancelled']} + pending {pending}"
        )
    held = int((loaded["holder"] >= 0).sum())
    if c["served_pool"] + c["served_unreserved"] + c["granted"] - c["released"] != held:
        raise bad_state(
            f"counters: served {c['served_pool']} + {c['served_unreserved']} + granted "
            f"{c['granted']} - released {c['released']} != {held} TCBs held"
        )
    if loaded["next_seq"] != c["queued"]:
        # Each queued request took the next arrival number.
        raise bad_state(f"next_seq {loaded['next_seq']} != the {c['queued']} requests queued")
