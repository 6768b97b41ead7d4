"""Differential test: the Cython allocator and the pure-Python reference in lock-step.

A Hypothesis ``RuleBasedStateMachine`` makes the same calls on both and
requires the same outcomes: the same TCB ids (the id layout and LIFO order
are part of the contract), hence the same ``(pid, level)`` of every grant,
the same errors with the same messages, the same ``stats()``, holders,
pending counts and pool ownership, and ``check()`` passing on both after
every rule.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable

import numpy as np
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pyresv import AllocatorError, DepthPoolAllocator, QueueFull
from pyresv.reference import DepthPoolAllocator as ReferenceAllocator

NPIDS = 6

# (depths, unreserved): levels without pools, no unreserved TCBs, the
# shared (unreserved-only) baseline, pools of size 1, uneven levels.
SHAPES = [
    ([(2, 2), (1, 3), (2, 1)], 2),
    ([(1, 1), (1, 1)], 0),
    ([(0, 1), (2, 2)], 1),
    ([(0, 1)] * 3, 3),
    ([(3, 2)], 0),
    ([(2, 3), (0, 2), (1, 2), (2, 1)], 1),
    ([(1, 2)] * 3, 0),
]


def outcome(call: Callable[[], Any]) -> Any:
    """The result of ``call``, or the type and message of the error it raised."""
    try:
        result = call()
    except (ValueError, AllocatorError) as exc:  # QueueFull is an AllocatorError
        return (type(exc), str(exc))
    if isinstance(result, np.ndarray):
        return ("array", str(result.dtype), result.tolist())
    return result


class AllocatorLockstep(RuleBasedStateMachine):
    """Drive both implementations with the same calls; they must agree exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.impls: list[Any] = []

    @initialize(
        shape=st.sampled_from(SHAPES),
        wake=st.sampled_from(["deepest", "fifo"]),
        max_waiters=st.integers(1, 8),
    )
    def build(self, shape: tuple, wake: str, max_waiters: int) -> None:
        depths, unreserved = shape
        kw = {"max_processes": NPIDS, "max_waiters": max_waiters, "wake": wake}
        self.impls = [DepthPoolAllocator(depths, unreserved, **kw), ReferenceAllocator(depths, unreserved, **kw)]

    @property
    def levels(self) -> int:
        return self.impls[0].levels

    def both(self, method: str, *args: Any) -> Any:
        got = [outcome(lambda a=a: getattr(a, method)(*args)) for a in self.impls]
        assert got[0] == got[1], (method, args, got)
        return got[0]

    def held(self) -> list[int]:
        ref = self.impls[1]
        return [t for t in range(ref.total) if ref.holder(t) >= 0]

    # ------------------------------------------------------------- rules
    @rule(pid=st.integers(0, NPIDS - 1), depth=st.integers(1, 4))
    def acquire_local(self, pid: int, depth: int) -> None:
        self.both("acquire", pid, depth)

    @rule(pid=st.integers(0, NPIDS - 1), depth=st.integers(1, 4))
    def acquire_remote(self, pid: int, depth: int) -> None:
        self.both("acquire", pid, depth, True)

    @rule(pid=st.integers(-1, NPIDS), depth=st.integers(0, 5), remote=st.booleans())
    def acquire_any(self, pid: int, depth: int, remote: bool) -> None:
        self.both("acquire", pid, depth, remote)

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data())
    def release_held(self, data: st.DataObject) -> None:
        self.both("release", data.draw(st.sampled_from(self.held())))

    @rule(tcb=st.integers(-2, 24))
    def release_any(self, tcb: int) -> None:
        self.both("release", tcb)

    @rule(pid=st.integers(0, NPIDS - 1))
    def cancel(self, pid: int) -> None:
        self.both("cancel", pid)

    @rule(pid=st.integers(0, NPIDS - 1))
    def release_all(self, pid: int) -> None:
        self.both("release_all", pid)

    @rule(
        ops=st.lists(
            st.tuples(st.integers(0, NPIDS - 1), st.integers(1, 4), st.booleans()), max_size=6
        )
    )
    def acquire_many(self, ops: list[tuple[int, int, bool]]) -> None:
        pids = [o[0] for o in ops]
        depths = [o[1] for o in ops]
        remote = [o[2] for o in ops]
        self.both("acquire_many", pids, depths, remote)

    @rule(
        ops=st.lists(
            st.tuples(st.integers(0, NPIDS - 1), st.integers(1, 4), st.booleans()), min_size=1, max_size=10
        )
    )
    def acquire_many_is_the_loop_or_nothing(self, ops: list[tuple[int, int, bool]]) -> None:
        # Valid requests only, often more than the small queue holds: the
        # batch is the loop of acquire() when the loop would not hit
        # QueueFull, else it raises that QueueFull and changes nothing.
        ops = [op for op in ops if op[1] + op[2] <= self.levels]
        columns = [[op[k] for op in ops] for k in range(3)]
        got = []
        for a in self.impls:
            before = pickle.dumps(a)
            loop = pickle.loads(before)
            results, failure = [], None
            for i, op in enumerate(ops):
                try:
                    results.append(loop.acquire(*op))
                except QueueFull as exc:
                    failure = f"{exc} (request {i} of a batch of {len(ops)}; the batch was undone)"
                    break
            result = outcome(lambda a=a: a.acquire_many(*columns))
            if failure is None:
                assert result == ("array", "int32", results)
                assert pickle.dumps(a) == pickle.dumps(loop)
            else:
                assert result == (QueueFull, failure)
                assert pickle.dumps(a) == before
            got.append(result)
        assert got[0] == got[1]
        event("batch undone" if got[0][0] is QueueFull else "batch served")

    @rule(data=st.data())
    def release_many(self, data: st.DataObject) -> None:
        held = self.held()
        tcbs = data.draw(st.lists(st.sampled_from(held), unique=True) if held else st.just([]))
        if data.draw(st.booleans()):  # sometimes a bad batch: a duplicate or a stranger
            tcbs = tcbs + [data.draw(st.integers(-1, self.impls[0].total))]
        self.both("release_many", tcbs)

    @rule()
    def take_grants(self) -> None:
        self.both("take_grants")

    @rule()
    def take_grants_with_tickets(self) -> None:
        self.both("take_grants", True)

    @rule(data=st.data())
    def cancel_request(self, data: st.DataObject) -> None:
        # Any ticket issued so far (pending, granted or cancelled), one never
        # issued, or a negative one.
        last = self.impls[1].last_ticket
        self.both("cancel_request", data.draw(st.integers(-2, last + 2)))

    @rule()
    def pickle_round_trip(self) -> None:
        self.impls = [pickle.loads(pickle.dumps(a)) for a in self.impls]

    # -------------------------------------------------------- invariants
    @invariant()
    def agree_and_check(self) -> None:
        if not self.impls:
            return
        c, r = self.impls
        c.check()
        r.check()
        assert c.stats() == r.stats()
        assert c.pending() == r.pending()
        assert c.last_ticket == r.last_ticket
        for t in range(r.total):
            assert (c.holder(t), c.level_of(t)) == (r.holder(t), r.level_of(t))
        for pid in range(NPIDS):
            assert c.pending(pid) == r.pending(pid)
            for level in range(1, self.levels + 1):
                assert c.owned_pool(pid, level) == r.owned_pool(pid, level)


AllocatorLockstep.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAllocatorLockstep = AllocatorLockstep.TestCase
