"""Fuzzing the pickled state: every loader refuses or builds a sound allocator (issue 11 §1).

Both implementations pickle the same plain state. Starting from states that
real call sequences produce, each case changes it (one entry to an edge
value, a change that keeps a table's sum, a truncated or lengthened array,
swapped entries, a wrong type) and loads it into the core and the reference.
Each must either raise :class:`~pyresv.AllocatorError` (nothing else), or
load an allocator that passes ``check()`` and keeps passing it under a random
sequence of calls. The two must agree on which states they accept, and on
everything an accepted state then does.

``PYRESV_FUZZ_CASES`` scales the number of cases (the checked build in CI
runs more).
"""

from __future__ import annotations

import copy
import os
import pickle
import random
from typing import Any, Callable

import numpy as np
import pytest

from pyresv import AllocatorError, DepthPoolAllocator, QueueFull
from pyresv._validate import SEQ_LIMIT
from pyresv.reference import DepthPoolAllocator as ReferenceAllocator

CASES = int(os.environ.get("PYRESV_FUZZ_CASES", "30"))
NPIDS = 5
SHAPES = [
    ([(2, 2), (1, 3), (2, 1)], 2),
    ([(1, 1), (1, 1)], 0),
    ([(0, 1), (2, 2)], 1),
    ([(0, 1)] * 3, 3),
    ([(2, 3), (0, 2), (1, 2)], 1),
]
EDGES = [-(2**63), -(2**31), -2, -1, 0, 1, 2, 3, NPIDS, 2**31 - 1, 2**62, 2**62 + 1, 2**63 - 1]


def _drive(a: Any, rng: random.Random, steps: int, check: bool) -> list:
    """``steps`` random calls on ``a``; their outcomes (errors as messages)."""
    trace = []
    for _ in range(steps):
        op = rng.randrange(9)
        held = [t for t in range(a.total) if a.holder(t) >= 0]
        try:
            if op <= 2:
                trace.append(a.acquire(rng.randrange(NPIDS), rng.randint(1, a.levels), rng.random() < 0.2))
            elif op <= 4 and held:
                trace.append(a.release(rng.choice(held)))
            elif op == 5:
                trace.append(a.release_all(rng.randrange(NPIDS)))
            elif op == 6:
                trace.append(a.cancel(rng.randrange(NPIDS)))
            elif op == 7:
                n = rng.randint(0, 4)
                got = a.acquire_many([rng.randrange(NPIDS) for _ in range(n)], [1] * n)
                trace.append(got.tolist())
            else:
                trace.append(a.take_grants())
        except (ValueError, AllocatorError) as exc:
            assert (
                not isinstance(exc, AllocatorError) or isinstance(exc, QueueFull) or "depth" in str(exc)
                or str(exc).startswith("request limit reached")
            ), exc
            trace.append(str(exc))
        if check:
            a.check()
    return trace


def _seed_states(rng: random.Random) -> tuple[tuple, dict, dict]:
    """(depths, unreserved, kwargs), and the state after a random run, from both implementations."""
    depths, unreserved = rng.choice(SHAPES)
    kw = {"max_processes": NPIDS, "max_waiters": rng.randint(1, 6), "wake": rng.choice(["deepest", "fifo"])}
    c, r = DepthPoolAllocator(depths, unreserved, **kw), ReferenceAllocator(depths, unreserved, **kw)
    seed = rng.random()
    steps = rng.randint(0, 40)
    assert _drive(c, random.Random(seed), steps, False) == _drive(r, random.Random(seed), steps, False)
    return (depths, unreserved, kw), c.__reduce__()[1][2], r.__reduce__()[1][2]


def _plain(state: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in state.items()}


ARRAYS = ["holder", "pool_nfree", "pool_free", "level_free_pools", "free_pools", "unres_free", "waiters", "grants"]


def _mutate(state: dict, rng: random.Random) -> str:
    """Change ``state`` in place in one random way; describe the change."""
    kind = rng.randrange(7)
    key = rng.choice(ARRAYS)
    try:
        a = np.array(state[key], dtype=np.int64)
    except (TypeError, ValueError):  # broken by an earlier change already
        return f"{key} left as it is"
    flat = a.reshape(-1)
    if kind == 0 and flat.size:  # one entry to an edge value or a neighbour
        i = rng.randrange(flat.size)
        flat[i] = rng.choice(EDGES + [int(flat[i]) + 1, int(flat[i]) - 1])
        state[key] = a
        return f"{key}[{i}] = {flat[i]}"
    if kind == 1 and flat.size >= 2:  # the sum kept
        i, j = rng.sample(range(flat.size), 2)
        k = rng.choice([1, 2, 5, 2**31, 2**62])
        flat[i] += k
        flat[j] -= k
        state[key] = a
        return f"{key}[{i}] += {k}, [{j}] -= {k}"
    if kind == 2:  # truncated, or one entry repeated
        if flat.size and rng.random() < 0.5:
            state[key] = a[: rng.randrange(len(a))] if len(a) else a
            return f"{key} truncated"
        if len(a):
            state[key] = np.concatenate([a, a[rng.randrange(len(a)) :][:1]])
            return f"{key} with an entry repeated"
    if kind == 3 and flat.size >= 2:  # two entries swapped
        i, j = rng.sample(range(flat.size), 2)
        flat[i], flat[j] = flat[j], flat[i]
        state[key] = a
        return f"{key}[{i}] <-> [{j}]"
    if kind == 4:  # a scalar
        name = rng.choice(["next_seq", "served_pool", "served_unreserved", "queued", "granted", "cancelled", "released"])
        value = rng.choice(EDGES)
        if name == "next_seq":
            state["next_seq"] = value if rng.random() < 0.7 else state["next_seq"] + rng.choice([-1, 1])
        else:
            state["counters"][name] = value if rng.random() < 0.7 else state["counters"][name] + rng.choice([-1, 1])
        return f"{name} changed"
    if kind == 5:  # a wrong type or shape
        state[key] = rng.choice([a.astype(float), a.reshape(1, -1, 1), "x", None, [[1, 2]], a.astype(bool), a.astype(np.uint64)])
        return f"{key} of a wrong type"
    if kind == 6:  # two counters, the sum kept
        x, y = rng.sample(sorted(state["counters"]), 2)
        state["counters"][x] += 1
        state["counters"][y] -= 1
        return f"counters {x} +1, {y} -1"
    state["next_seq"] += 1
    return "next_seq + 1"


def _load(cls: type, shape: tuple, state: dict) -> Any:
    depths, unreserved, kw = shape
    func, (klass, kwargs, _) = cls(depths, unreserved, **kw).__reduce__()
    try:
        return func(klass, kwargs, copy.deepcopy(state))
    except AllocatorError as exc:
        assert str(exc).startswith("inconsistent pickled allocator state: "), exc
        return None


@pytest.mark.parametrize("seed", range(CASES))
def test_a_fuzzed_state_is_refused_or_sound(seed: int) -> None:
    rng = random.Random(seed)
    accepted = refused = 0
    for _ in range(20):
        shape, cstate, rstate = _seed_states(rng)
        # Both implementations pickle the same state after the same calls.
        assert _plain(cstate) == _plain(rstate)
        state = copy.deepcopy(cstate)
        what = _mutate(state, rng)
        if rng.random() < 0.3:
            what += "; " + _mutate(state, rng)
        c, r = _load(DepthPoolAllocator, shape, state), _load(ReferenceAllocator, shape, state)
        assert (c is None) == (r is None), (what, c, r)
        if c is None:
            refused += 1
            continue
        accepted += 1
        c.check()
        r.check()
        assert c.stats() == r.stats(), what
        run = rng.random()
        assert _drive(c, random.Random(run), 30, True) == _drive(r, random.Random(run), 30, True), what
        assert _plain(c.__reduce__()[1][2]) == _plain(r.__reduce__()[1][2])
    assert accepted + refused == 20


@pytest.mark.parametrize("cls", [DepthPoolAllocator, ReferenceAllocator])
def test_unmodified_states_load_back(cls: type) -> None:
    rng = random.Random(1)
    for _ in range(50):
        shape, cstate, _ = _seed_states(rng)
        a = _load(cls, shape, cstate)
        assert a is not None
        a.check()


# Each named unsound state is refused with a message naming its problem; the
# reference refuses it too.
def _state_of(a: Any) -> dict:
    return copy.deepcopy(a.__reduce__()[1][2])


def _queued() -> DepthPoolAllocator:
    a = DepthPoolAllocator([(1, 2)], 0, max_processes=4, max_waiters=4)
    assert [a.acquire(1), a.acquire(1), a.acquire(2), a.acquire(3)] == [0, 1, -1, -1]
    return a


def _granted() -> DepthPoolAllocator:
    a = _queued()
    a.release(0)
    a.release(1)
    return a


def _near_the_limit(cls: type, left: int) -> Any:
    """An allocator ``left`` requests short of the request limit (a crafted pickle).

    ``[(1, 1)]`` with one unreserved TCB; pid 0 holds TCB 0 (served from its
    pool) and SEQ_LIMIT - 1 - left requests were queued, granted and released.
    """
    a = cls([(1, 1)], 1, max_processes=4, max_waiters=4)
    assert a.acquire(0) == 0
    if left < 0:
        return a
    func, (klass, kwargs, state) = a.__reduce__()
    state = copy.deepcopy(state)
    n = SEQ_LIMIT - 1 - left
    state["next_seq"] = n
    state["counters"].update(queued=n, granted=n, released=n)
    return func(klass, kwargs, state)


CASES_NAMED: list[tuple[str, Callable[[], Any], Callable[[dict], Any], str]] = [
    # A negative count after a big one keeps the sum: the first read used to
    # run past the end of pool_free (valgrind); now each entry is checked first.
    ("negative count", lambda: DepthPoolAllocator([(2, 3)], 0, max_processes=4),
     lambda s: s.update(pool_nfree=np.array([5, -2])), "pool 0 has 5 free TCBs of 3"),
    ("arrival number negative", _queued,
     lambda s: s["waiters"].__setitem__((0, 2), -5), "request 0 has arrival number -5 out of order"),
    ("next_seq near int64 max", _queued,
     lambda s: s.update(next_seq=2**63 - 1), "next_seq = 9223372036854775807 out of range"),
    ("arrival numbers near int64 max", _queued,
     lambda s: (s.update(next_seq=2**62 + 2), s["waiters"].__setitem__((slice(None), 2), [2**62, 2**62 + 1])),
     "next_seq = 4611686018427387906 out of range"),
    ("negative counter", _queued,
     lambda s: s["counters"].update(released=-1), "counter released = -1 out of range"),
    ("counters that do not add up", _queued,
     lambda s: s["counters"].update(queued=5), "counters: queued 5 != granted 0"),
    ("held TCBs not served", _queued,
     lambda s: s["counters"].update(served_pool=1), r"counters: served 1 \+ 0 \+ granted 0 - released 0 != 2"),
    ("a grant of a request still pending", _granted,
     lambda s: s.update(waiters=np.array([[3, 1, 0]]), next_seq=2),
     "request 0 has arrival number 0|grant 0 has ticket 0, not one of a served request"),
    ("a grant of a TCB that is no id", _granted,
     lambda s: s["grants"].__setitem__((0, 1), 7), "grant 0 names pid 2 and TCB 7"),
    ("more grants than were made", _granted,
     lambda s: s["counters"].update(granted=0), "1 grants not taken but 0 were made"),
    # The hostile report's F3 state: next_seq at the limit and one acquire
    # served besides, so one request past it.
    ("requests served or queued past the limit", lambda: _near_the_limit(DepthPoolAllocator, 0),
     lambda s: s.update(next_seq=SEQ_LIMIT) or s["counters"].update(queued=SEQ_LIMIT, granted=SEQ_LIMIT,
                                                                    released=SEQ_LIMIT),
     "counters: 4611686018427387905 requests served or queued, beyond the limit of 4611686018427387904"),
    ("a truncated holder table", _queued,
     lambda s: s.update(holder=s["holder"][:1]), "array lengths"),
    ("floats", _queued,
     lambda s: s.update(holder=s["holder"].astype(float)), "holder must hold integers"),
    ("an unknown key", _queued, lambda s: s.update(extra=1), r"keys missing \[\], unknown \['extra'\]"),
]


@pytest.mark.parametrize("name", [c[0] for c in CASES_NAMED])
@pytest.mark.parametrize("cls", [DepthPoolAllocator, ReferenceAllocator])
def test_unsound_states_are_refused(cls: type, name: str) -> None:
    _, make, edit, match = next(c for c in CASES_NAMED if c[0] == name)
    a = make()
    state = _state_of(a)
    edit(state)
    func, (klass, kwargs, _) = cls(**{**_kwargs(a)}).__reduce__()
    with pytest.raises(AllocatorError, match="inconsistent pickled allocator state: (" + match + ")"):
        func(klass, kwargs, state)


def _kwargs(a: Any) -> dict:
    return a.__reduce__()[1][1]


def test_pickles_refused_before_any_read() -> None:
    # The over-read of issue 11, end to end through pickle.loads.
    a = DepthPoolAllocator([(2, 3)], 0, max_processes=4)
    func, (klass, kwargs, state) = a.__reduce__()
    state["pool_nfree"] = np.array([6, 0])  # the sum kept after a -3 ... a +3
    state["pool_nfree"] = np.array([9, -3])
    blob = pickle.dumps((func, klass, kwargs, state))
    f, k, kw, st = pickle.loads(blob)
    with pytest.raises(AllocatorError, match="pool 0 has 9 free TCBs of 3"):
        f(k, kw, st)


# The request limit (hostile report F3): a state accepted at the ticket limit
# could not be pickled again after one more request. Now the loader accepts
# at most SEQ_LIMIT requests served or queued, and acquire refuses the one
# that would pass it, so every accepted state re-pickles after any calls.
LIMIT_MSG = r"^request limit reached: 4611686018427387904 requests served or queued, the most an allocator counts; "


@pytest.mark.parametrize("cls", [DepthPoolAllocator, ReferenceAllocator])
def test_acquire_refuses_past_the_request_limit(cls: type) -> None:
    a = _near_the_limit(cls, 0)
    a.check()
    blob = pickle.dumps(a)
    for call in (lambda: a.acquire(1), lambda: a.acquire(0), lambda: a.acquire(2, 1)):
        with pytest.raises(AllocatorError, match=LIMIT_MSG + "pid [012] at level 1 not served$"):
            call()
        assert pickle.dumps(a) == blob
    with pytest.raises(AllocatorError, match=LIMIT_MSG + r"pid 3 at level 1 not served \(request 0 of a batch of 2"):
        a.acquire_many([3, 1], [1, 1])
    assert pickle.dumps(a) == blob
    # Everything but acquiring still works, and every state re-pickles.
    a.release(0)
    assert a.cancel(1) == 0 and a.release_all(0) == 0 and a.cancel_request(5) is False
    b = pickle.loads(pickle.dumps(a))
    b.check()
    assert b.stats() == a.stats()


@pytest.mark.parametrize("cls", [DepthPoolAllocator, ReferenceAllocator])
def test_a_batch_that_reaches_the_limit_is_undone(cls: type) -> None:
    a = _near_the_limit(cls, 2)
    blob = pickle.dumps(a)
    with pytest.raises(AllocatorError, match=LIMIT_MSG + r"pid 3 at level 1 not served \(request 2 of a batch of 3; "):
        a.acquire_many([1, 2, 3], [1, 1, 1])
    assert pickle.dumps(a) == blob
    assert a.acquire_many([1, 2], [1, 1]).tolist() == [1, -1]  # the last two requests
    pickle.loads(pickle.dumps(a)).check()


@pytest.mark.parametrize("seed", range(10))
def test_states_near_the_limit_re_pickle_after_any_calls(seed: int) -> None:
    c, r = _near_the_limit(DepthPoolAllocator, 3), _near_the_limit(ReferenceAllocator, 3)
    rng_c, rng_r = random.Random(seed), random.Random(seed)
    for _ in range(12):
        assert _drive(c, rng_c, 3, True) == _drive(r, rng_r, 3, True)
        for a in (c, r):
            b = pickle.loads(pickle.dumps(a))
            b.check()
            assert b.stats() == a.stats()
    assert c.stats() == r.stats()
