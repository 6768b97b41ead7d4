"""Stress: a long randomized differential run of the compiled allocator against the reference.

Both implementations get the same long stream of calls (10^5 by default,
10^6 with ``PYRESV_STRESS=1``) over several allocator shapes, from FIG 3's
3 x (4 pools x 9) + 32 unreserved down to a few TCBs that are always
contended. Every return value, error (type and message) and grant must be
equal, and so must ``stats()`` after every call; a batch refused with
``QueueFull`` must leave both pickled states as they were; ``check()``,
holders and pool ownership are compared periodically. ``PYRESV_STRESS_SEED``
changes the seed. The thread hammer on the guarded allocator lives with the executor's tests.
"""

from __future__ import annotations

import os
import pickle
import random
import time
from collections import Counter, deque
from typing import Any, Callable

import numpy as np

from pyresv import PENDING, AllocatorError
from pyresv._core.allocator import DepthPoolAllocator as Core
from pyresv.reference import DepthPoolAllocator as Reference

LONG = os.environ.get("PYRESV_STRESS", "") not in ("", "0")
TOTAL_OPS = 1_000_000 if LONG else 100_000
SEED = int(os.environ.get("PYRESV_STRESS_SEED", "8"))
CHECK_EVERY = 997  # full check(), holders and ownership (prime: drifts across phases)
PICKLE_EVERY = 9_973
SEGMENT = 20_000  # calls per allocator; segment j uses SHAPES[j % len(SHAPES)]

# (depths, unreserved, wake, max_processes, max_waiters)
SHAPES: list[tuple[list[tuple[int, int]], int, str, int, int]] = [
    ([(4, 9)] * 3, 32, "deepest", 64, 4096),  # FIG 3
    ([(2, 1), (1, 1), (2, 1)], 2, "fifo", 16, 64),  # pools of one TCB, always contended
    ([(0, 1)] * 3, 12, "deepest", 16, 32),  # the shared (unreserved-only) baseline
    ([(3, 2), (0, 3), (2, 1), (1, 4)], 3, "fifo", 24, 8),  # uneven levels, a tiny wait queue
    ([(5, 3)], 0, "deepest", 32, 128),  # one level, no unreserved pool
]


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        result = call()
    except (ValueError, AllocatorError) as exc:  # QueueFull is an AllocatorError
        return ("error", type(exc).__name__, str(exc))
    if isinstance(result, np.ndarray):
        return ("array", str(result.dtype), result.tolist())
    return result


class _Lockstep:
    """The two allocators of one segment, the TCBs known held, and a log of recent calls."""

    def __init__(self, shape: tuple, rng: random.Random) -> None:
        depths, unreserved, wake, nproc, nwait = shape
        kw = {"max_processes": nproc, "max_waiters": nwait, "wake": wake}
        self.core = Core(depths, unreserved, **kw)
        self.ref = Reference(depths, unreserved, **kw)
        self.rng = rng
        self.nproc, self.nwait, self.levels = nproc, nwait, len(depths)
        self.held: list[int] = []  # TCBs known held (grants may add more), for O(1) sampling
        self.index: dict[int, int] = {}
        self.log: deque = deque(maxlen=12)
        self.counts: Counter = Counter()

    # ---------------------------------------------------------- bookkeeping
    def _hold(self, tcb: int) -> None:
        if tcb not in self.index:
            self.index[tcb] = len(self.held)
            self.held.append(tcb)

    def _drop(self, tcb: int) -> None:
        i = self.index.pop(tcb, None)
        if i is None:
            return
        last = self.held.pop()
        if last != tcb:
            self.held[i] = last
            self.index[last] = i

    def _resync(self) -> None:
        # After release_all or a batch: rebuild from the reference's holders.
        self.held, self.index = [], {}
        for t in range(self.ref.total):
            if self.ref.holder(t) >= 0:
                self._hold(t)

    def both(self, method: str, *args: Any) -> Any:
        self.log.append((method, args))
        got = _outcome(lambda: getattr(self.core, method)(*args))
        want = _outcome(lambda: getattr(self.ref, method)(*args))
        assert got == want, f"{method}{args}: core {got!r} != reference {want!r}"
        if isinstance(want, tuple) and want and want[0] == "error":
            self.counts[f"error:{want[1]}"] += 1
        return want

    # --------------------------------------------------------------- calls
    def acquire(self) -> None:
        rng = self.rng
        if rng.random() < 0.01:  # out of range: pid, depth, or remote at the last level
            pid, depth = rng.choice([(-1, 1), (self.nproc, 1), (0, 0), (0, self.levels + 1)])
            self.both("acquire", pid, depth, rng.random() < 0.5)
            return
        pid = rng.randrange(self.nproc)
        remote = self.levels > 1 and rng.random() < 0.5
        depth = rng.randint(1, self.levels - 1 if remote else self.levels)
        r = self.both("acquire", pid, depth, remote)
        if r == PENDING:
            self.counts["pending"] += 1
        elif isinstance(r, int):
            self._hold(r)
            self.counts["served"] += 1

    def release(self) -> None:
        if not self.held:
            return self.acquire()
        tcb = self.held[self.rng.randrange(len(self.held))]
        self.both("release", tcb)
        self._drop(tcb)
        self.counts["release"] += 1

    def take_grants(self) -> None:
        grants = self.both("take_grants")
        for pid, tcb in grants:
            # A grant may be stale (its TCB released by release_all since).
            if self.ref.holder(tcb) == pid:
                self._hold(tcb)
        self.counts["granted"] += len(grants)

    def bad_release(self) -> None:
        free = [t for t in (self.rng.randrange(self.ref.total) for _ in range(3)) if self.ref.holder(t) < 0]
        tcb = free[0] if free else self.rng.choice([-1, self.ref.total, self.ref.total + 7])
        self.both("release", tcb)

    def cancel(self) -> None:
        self.counts["cancelled"] += self.both("cancel", self.rng.randrange(self.nproc))

    def release_all(self) -> None:
        self.counts["released_all"] += self.both("release_all", self.rng.randrange(self.nproc))
        self._resync()

    def acquire_many(self) -> None:
        rng = self.rng
        n = rng.randint(0, 6)
        pids = [rng.randrange(self.nproc) for _ in range(n)]
        depths = [rng.randint(1, self.levels) for _ in range(n)]
        remote = [d < self.levels and rng.random() < 0.5 for d in depths]
        before = pickle.dumps(self.core), pickle.dumps(self.ref)
        got = self.both("acquire_many", pids, depths, remote)
        if got[:2] == ("error", "QueueFull"):
            # All or nothing: the requests before the one that found the
            # queue full were undone, to the last free-stack slot.
            assert (pickle.dumps(self.core), pickle.dumps(self.ref)) == before, "a refused batch changed the state"
            self.counts["batch_undone"] += 1
        self._resync()

    def release_many(self) -> None:
        k = min(len(self.held), self.rng.randint(0, 4))
        tcbs = self.rng.sample(self.held, k)
        if self.rng.random() < 0.2:  # a bad batch: a duplicate or a free TCB; nothing is released
            tcbs.append(tcbs[0] if tcbs else self.ref.total)
        self.both("release_many", tcbs)
        self._resync()

    def round_trip(self) -> None:
        self.log.append(("pickle", ()))
        self.core = pickle.loads(pickle.dumps(self.core))
        self.ref = pickle.loads(pickle.dumps(self.ref))
        self.counts["pickled"] += 1

    # ------------------------------------------------------------ compares
    def compare_stats(self) -> None:
        got, want = self.core.stats(), self.ref.stats()
        assert got == want, f"stats differ: core {got} != reference {want}"

    def compare_all(self) -> None:
        self.core.check()
        self.ref.check()
        self.compare_stats()
        for t in range(self.ref.total):
            assert (self.core.holder(t), self.core.level_of(t)) == (self.ref.holder(t), self.ref.level_of(t)), t
        for pid in range(self.nproc):
            assert self.core.pending(pid) == self.ref.pending(pid), pid
            for level in range(1, self.levels + 1):
                assert self.core.owned_pool(pid, level) == self.ref.owned_pool(pid, level), (pid, level)


def _segment(shape: tuple, n_ops: int, seed: int) -> Counter:
    rng = random.Random(seed)
    s = _Lockstep(shape, rng)
    total = s.ref.total
    rare: list[tuple[float, Callable[[], None]]] = [
        (0.004, s.bad_release),
        (0.003, s.cancel),
        (0.002, s.release_all),
        (0.004, s.acquire_many),
        (0.004, s.release_many),
    ]
    for i in range(n_ops):
        try:
            x = rng.random()
            # Load swings: phases that fill the allocator (queues grow, releases
            # become grants) alternate with phases that drain it (pools come
            # wholly free and go back to the free stacks or to seekers).
            filling = (i // 1500) % 2 == 0 and s.ref.pending() < min(s.nwait - 1, total)
            if x < 0.1:
                s.take_grants()
            elif x < 0.12:
                for p, call in rare:
                    if rng.random() < p / 0.02:
                        call()
                        break
            elif x < (0.62 if filling else 0.36):
                s.acquire()
            else:
                s.release()
            s.compare_stats()
            if i % CHECK_EVERY == 0:
                s.compare_all()
            if i % PICKLE_EVERY == PICKLE_EVERY - 1:
                s.round_trip()
        except AssertionError as exc:
            raise AssertionError(
                f"shape {shape}, seed {seed}, call {i}: {exc}\nlast calls: {list(s.log)}"
            ) from None
    s.take_grants()
    s.compare_all()
    s.counts["calls"] = n_ops
    return s.counts


def test_differential_stress_against_the_reference() -> None:
    t0 = time.perf_counter()
    totals: Counter = Counter()
    for j in range(-(-TOTAL_OPS // SEGMENT)):
        shape = SHAPES[j % len(SHAPES)]
        c = _segment(shape, min(SEGMENT, TOTAL_OPS - totals["calls"]), SEED * 1000 + j)
        # Every segment ran into contention: requests queued and grants came back.
        assert c["served"] and c["release"] and c["pending"] and c["granted"], (shape, c)
        totals += c
        print(shape, dict(sorted(c.items())))
    elapsed = time.perf_counter() - t0
    assert totals["calls"] == TOTAL_OPS
    for what in (
        "error:QueueFull", "error:AllocatorError", "error:ValueError", "pickled", "released_all", "cancelled",
        "batch_undone",
    ):
        assert totals[what] > 0, what
    print(f"\n{TOTAL_OPS} calls in {elapsed:.1f} s: {dict(sorted(totals.items()))}")
