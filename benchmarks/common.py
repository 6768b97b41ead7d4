"""Shared helpers of the benchmark suite: allocator factories and a ratio timer."""

from __future__ import annotations

import statistics
import time
import timeit
from collections import deque
from typing import Callable

import pyresv
import pyresv.reference

IMPLEMENTATIONS = {
    "core": pyresv.DepthPoolAllocator,
    "reference": pyresv.reference.DepthPoolAllocator,
}


def fig3_depths(levels: int, pools: int, size: int = 9) -> list[tuple[int, int]]:
    """``levels`` levels of ``pools`` pools of ``size`` TCBs (FIG 3 is 3 x (4, 9))."""
    return [(pools, size)] * levels


def best_time(fn: Callable[[], object], number: int = 1, repeat: int = 7) -> float:
    """Best-of-``repeat`` wall time of ``number`` calls of ``fn``, in seconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def cpu_medians(fns: dict[str, Callable[[], object]], rounds: int = 7) -> dict[str, float]:
    """Median thread CPU time of each ``fn``, in seconds, over ``rounds`` interleaved rounds.

    Interleaving (one call of each per round) and CPU time keep a ratio of two
    of them steady on a shared machine, where wall times swing by 1.5x.
    """
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.thread_time()
            fn()
            samples[name].append(time.thread_time() - t0)
    return {name: statistics.median(v) for name, v in samples.items()}


class CompactAllocator:
    """A compact pure-Python depth-pool allocator: the baseline a Python user could write.

    The same resolution order as DESIGN §1 (own pool, a free pool, the
    unreserved pool, else wait) and the same release hand-offs (the owner's
    own waiters, a wholly free pool to the oldest waiter without one, an
    unreserved TCB to the deepest waiter), written for speed: flat lists and
    dicts, no validation, no counters, no pickling. It is what the core's
    speed is honestly compared with (the reference is written for clarity).
    """

    def __init__(self, depths: list[tuple[int, int]], unreserved: int = 0) -> None:
        self.levels = len(depths)
        self.pool_of: list[int] = []  # TCB -> pool (-1 unreserved)
        self.level_of: list[int] = []  # pool -> level
        self.pool_free: list[list[int]] = []
        self.pool_size: list[int] = []
        self.free_pools: list[list[int]] = [[] for _ in range(self.levels + 1)]
        tcb = 0
        for level, (pools, size) in enumerate(depths, start=1):
            for _ in range(pools):
                p = len(self.pool_free)
                self.level_of.append(level)
                self.pool_size.append(size)
                self.pool_free.append(list(range(tcb + size - 1, tcb - 1, -1)))
                self.pool_of.extend([p] * size)
                tcb += size
            first = len(self.pool_free) - pools
            self.free_pools[level] = list(range(first + pools - 1, first - 1, -1))
        self.unres = list(range(tcb + unreserved - 1, tcb - 1, -1))
        self.pool_of.extend([-1] * unreserved)
        self.holder = [-1] * len(self.pool_of)
        self.owner = [-1] * len(self.pool_free)
        self.owned: dict[tuple[int, int], int] = {}
        self.waiting: list[deque[tuple[int, int]]] = [deque() for _ in range(self.levels + 1)]
        self.grants: list[tuple[int, int]] = []

    def acquire(self, pid: int, depth: int = 1, remote: bool = False) -> int:
        level = depth + 1 if remote else depth
        p = self.owned.get((pid, level), -1)
        if p >= 0:
            free = self.pool_free[p]
            if free:
                t = free.pop()
                self.holder[t] = pid
                return t
        elif self.free_pools[level]:
            p = self.free_pools[level].pop()
            self.owned[(pid, level)] = p
            self.owner[p] = pid
            t = self.pool_free[p].pop()
            self.holder[t] = pid
            return t
        if self.unres:
            t = self.unres.pop()
            self.holder[t] = pid
            return t
        self.waiting[level].append((pid, level))
        return -1

    def release(self, tcb: int) -> None:
        self.holder[tcb] = -1
        p = self.pool_of[tcb]
        if p < 0:
            for level in range(self.levels, 0, -1):
                if self.waiting[level]:
                    pid, _ = self.waiting[level].popleft()
                    self.holder[tcb] = pid
                    self.grants.append((pid, tcb))
                    return
            self.unres.append(tcb)
            return
        level, owner = self.level_of[p], self.owner[p]
        q = self.waiting[level]
        for i, (pid, _) in enumerate(q):
            if pid == owner:
                del q[i]
                self.holder[tcb] = pid
                self.grants.append((pid, tcb))
                return
        free = self.pool_free[p]
        free.append(tcb)
        if len(free) < self.pool_size[p]:
            return
        del self.owned[(owner, level)]
        self.owner[p] = -1
        for i, (pid, _) in enumerate(q):
            if (pid, level) not in self.owned:
                del q[i]
                self.owned[(pid, level)] = p
                self.owner[p] = pid
                t = free.pop()
                self.holder[t] = pid
                self.grants.append((pid, t))
                return
        self.free_pools[level].append(p)
