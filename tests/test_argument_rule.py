"""One rule for integer arguments, in the core and the reference (issue 11 §1).

pids, depths, levels, TCB ids, tickets and the constructor's counts are
accepted exactly when ``operator.index`` accepts them (ints, numpy integer
scalars, 0-d integer arrays, objects with ``__index__``), except bools.
Floats (even ``1.0``), strings, None and arrays of several items are refused
with a ``ValueError`` (``AllocatorError`` for ``release``) that names the
argument, and the state is unchanged.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable

import numpy as np
import pytest

from pyresv import AllocatorError
from pyresv._validate import as_index


class Index:
    """An object that is an int only through ``__index__``."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __index__(self) -> int:
        return self.v

    def __repr__(self) -> str:
        return f"Index({self.v})"


class NotIndex:
    def __index__(self) -> int:
        raise TypeError("no")

    def __repr__(self) -> str:
        return "NotIndex()"


ACCEPTED: list[Callable[[int], Any]] = [
    int,
    np.int8,
    np.int64,
    np.uint64,
    lambda v: np.array(v),
    lambda v: np.array(v, dtype=np.int16),
    Index,
]
REFUSED = [True, False, np.True_, 1.0, np.float64(1.0), np.array(1.0), "1", None, np.array([1]), [1], NotIndex()]

# Each call with one integer argument x; the value used when x stands for 1.
CALLS: dict[str, Callable[[Any, Any], Any]] = {
    "acquire(pid)": lambda a, x: a.acquire(x),
    "acquire(depth)": lambda a, x: a.acquire(3, x),
    "release": lambda a, x: a.release(x),
    "holder": lambda a, x: a.holder(x),
    "level_of": lambda a, x: a.level_of(x),
    "cancel": lambda a, x: a.cancel(x),
    "release_all": lambda a, x: a.release_all(x),
    "pending": lambda a, x: a.pending(x),
    "owned_pool(pid)": lambda a, x: a.owned_pool(x, 1),
    "owned_pool(level)": lambda a, x: a.owned_pool(1, x),
    "cancel_request": lambda a, x: a.cancel_request(x),
}


def _fresh(cls: type) -> Any:
    a = cls([(1, 2)] * 2, 1, max_processes=4, max_waiters=4)
    assert [a.acquire(1), a.acquire(1), a.acquire(2), a.acquire(3)] == [0, 1, 4, -1]
    return a


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (ValueError, AllocatorError) as exc:
        return (type(exc), str(exc))


def test_as_index_is_the_rule() -> None:
    assert [as_index(f(5)) for f in ACCEPTED] == [5] * len(ACCEPTED)
    assert [as_index(x) for x in REFUSED] == [None] * len(REFUSED)


@pytest.mark.parametrize("make", ACCEPTED, ids=["int", "int8", "int64", "uint64", "0-d", "0-d int16", "__index__"])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_accepted_arguments_act_as_their_int(allocator_cls: type, make: Callable, name: str) -> None:
    a, b = _fresh(allocator_cls), _fresh(allocator_cls)
    assert _outcome(lambda: CALLS[name](a, make(1))) == _outcome(lambda: CALLS[name](b, 1))
    assert pickle.dumps(a) == pickle.dumps(b)
    # Out of range, the message names the int.
    assert _outcome(lambda: CALLS[name](a, make(9))) == _outcome(lambda: CALLS[name](b, 9))


@pytest.mark.parametrize("bad", REFUSED, ids=repr)
@pytest.mark.parametrize("name", sorted(CALLS))
def test_refused_arguments_are_named(allocator_cls: type, bad: Any, name: str) -> None:
    a = _fresh(allocator_cls)
    before = pickle.dumps(a)
    got = _outcome(lambda: CALLS[name](a, bad))
    if name == "pending" and bad is None:
        assert got == 1  # pending(None): everybody's
        return
    assert isinstance(got, tuple), (name, bad, got)
    kind, msg = got
    assert kind is (AllocatorError if name == "release" else ValueError)
    assert msg.endswith(f" {bad!r}") or msg == f"TCB {bad!r} is not an int", msg
    assert pickle.dumps(a) == before


# Ints beyond int64, plain and behind __index__ (hostile report F1: the core's
# cancel_request compared the Index object itself with 0 and raised TypeError).
HUGE = [2**80, -(2**80), 2**63, -(2**63) - 1, Index(2**80), Index(-(2**80)), Index(2**63), np.uint64(2**64 - 1)]


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("x", [*(f(1) for f in ACCEPTED), *(f(7) for f in ACCEPTED), *REFUSED, *HUGE], ids=repr)
def test_both_implementations_agree(name: str, x: Any) -> None:
    from pyresv import DepthPoolAllocator
    from pyresv.reference import DepthPoolAllocator as Reference

    c, r = _fresh(DepthPoolAllocator), _fresh(Reference)
    assert _outcome(lambda: CALLS[name](c, x)) == _outcome(lambda: CALLS[name](r, x))


@pytest.mark.parametrize("value", [Index(2), np.array(2), np.int32(2)], ids=repr)
def test_constructor_counts_follow_the_rule(allocator_cls: type, value: Any) -> None:
    a = allocator_cls([(value, value)], value, max_processes=value, max_waiters=value)
    assert (a.total, a.unreserved, a.max_processes, a.max_waiters) == (6, 2, 2, 2)
    with pytest.raises(ValueError, match="unreserved must be an int, got 2.0"):
        allocator_cls([(1, 1)], 2.0)


def test_owned_pool_refuses_a_float_level(allocator_cls: type) -> None:
    # The two implementations differed here (issue 11).
    a = _fresh(allocator_cls)
    with pytest.raises(ValueError, match=r"^level must be an int, got 1\.0$"):
        a.owned_pool(0, 1.0)


def test_cancel_request_of_a_huge_ticket(allocator_cls: type) -> None:
    a = _fresh(allocator_cls)
    before = pickle.dumps(a)
    assert a.cancel_request(Index(2**80)) is False  # never issued
    assert a.cancel_request(2**80) is False
    with pytest.raises(ValueError, match=r"^ticket -1208925819614629174706176 is negative$"):
        a.cancel_request(Index(-(2**80)))
    assert pickle.dumps(a) == before
