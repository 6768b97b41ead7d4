"""The allocator layer: the Cython core against the pure-Python reference.

Every speed claim of the README is a ratio of two numbers taken in one run of
this suite: ``time_*`` benchmarks are parametrized over the implementation, and
the ``track_speedup_*`` benchmarks time both inside one process and report the
ratio directly.
"""

from __future__ import annotations

import threading

import numpy as np

import pyresv
import pyresv.reference

from .common import IMPLEMENTATIONS, best_time, fig3_depths

PAIRS = 2000  # acquire+release pairs per timed call: keeps each sample >= 100 us


def _churn(alloc, pids: list[int]) -> None:
    """Uncontended churn: each pid takes one TCB at level 1 and gives it back."""
    acquire = alloc.acquire
    release = alloc.release
    for pid in pids:
        release(acquire(pid, 1))


def _contended(alloc, owners: list[int], waiters: list[int], held: list[int]) -> None:
    """Every TCB held, every acquire queues, every release grants it to the oldest waiter.

    ``held`` is the list of TCBs held by ``owners``; after one round the TCBs
    belong to ``waiters`` and the roles swap on the next call.
    """
    acquire = alloc.acquire
    release = alloc.release
    take = alloc.take_grants
    for pid in waiters:
        acquire(pid, 1)
    for tcb in held:
        release(tcb)
    grants = take()
    held[:] = [tcb for _pid, tcb in grants]


class AllocatorChurn:
    """acquire+release pairs called one by one from Python, nothing queues."""

    params = (["core", "reference"], [1, 3], [4, 64])
    param_names = ["implementation", "levels", "pools"]

    def setup(self, implementation: str, levels: int, pools: int) -> None:
        self.alloc = IMPLEMENTATIONS[implementation](fig3_depths(levels, pools), 32)
        self.pids = [i % 1000 for i in range(PAIRS)]
        _churn(self.alloc, self.pids)  # warm-up

    def time_churn(self, implementation: str, levels: int, pools: int) -> None:
        _churn(self.alloc, self.pids)


class WaitQueueFifo:
    """Contended churn: every request queues and is served by a grant on release."""

    params = (["core", "reference"], ["deepest", "fifo"])
    param_names = ["implementation", "wake"]

    def setup(self, implementation: str, wake: str) -> None:
        n = PAIRS // 2
        # Unreserved only, so each release hands the TCB to the oldest waiter (FIG 6B).
        self.alloc = IMPLEMENTATIONS[implementation]([(0, 1)], n, wake=wake, max_waiters=n)
        self.owners = list(range(n))
        self.waiters = list(range(n, 2 * n))
        self.held = [self.alloc.acquire(pid, 1) for pid in self.owners]
        self._round()  # warm-up

    def _round(self) -> None:
        _contended(self.alloc, self.owners, self.waiters, self.held)
        self.owners, self.waiters = self.waiters, self.owners

    def time_contended(self, implementation: str, wake: str) -> None:
        self._round()


class BatchChurn:
    """``acquire_many`` + ``release_many``: the whole loop runs in C without the GIL."""

    params = (["core", "reference"], [1_000, 100_000])
    param_names = ["implementation", "batch"]

    def setup(self, implementation: str, batch: int) -> None:
        if implementation == "reference" and batch > 1_000:
            raise NotImplementedError("the reference is too slow for the large batch")
        # Nine requests per pid: each pid fills one FIG 3 pool of 9 at level 1.
        self.alloc = IMPLEMENTATIONS[implementation](
            fig3_depths(3, batch // 9 + 1), 0, max_waiters=batch
        )
        self.pids = np.arange(batch, dtype=np.int32) // 9
        self.depths = np.ones(batch, dtype=np.int32)
        self._pair()

    def _pair(self) -> None:
        self.alloc.release_many(self.alloc.acquire_many(self.pids, self.depths))

    def time_batch(self, implementation: str, batch: int) -> None:
        self._pair()


class AllocatorMemory:
    """Memory of the core's fixed arrays at 1M and 10M TCBs."""

    params = [1_000_000, 10_000_000]
    param_names = ["tcbs"]
    timeout = 120

    @staticmethod
    def _make(tcbs: int) -> pyresv.DepthPoolAllocator:
        size = 33
        pools = tcbs // (3 * size)
        return pyresv.DepthPoolAllocator([(pools, size)] * 3, tcbs - 3 * pools * size)

    def peakmem_construct(self, tcbs: int) -> None:
        self._make(tcbs)

    def track_bytes_per_tcb(self, tcbs: int) -> float:
        """Marginal bytes per TCB: the per-pid and per-waiter tables are fixed, so subtract them."""
        small = self._make(3 * 33)
        alloc = self._make(tcbs)
        return (alloc.nbytes - small.nbytes) / (alloc.total - small.total)

    def track_bytes_per_tcb_with_tables(self, tcbs: int) -> float:
        """All C arrays over all TCBs, fixed tables for 65536 pids and waiters included."""
        alloc = self._make(tcbs)
        return alloc.nbytes / alloc.total

    track_bytes_per_tcb.unit = "bytes"
    track_bytes_per_tcb_with_tables.unit = "bytes"


class GilRelease:
    """Batch calls from 2 threads against 1, each thread on its own allocator.

    With the GIL released, 2 threads do twice the work in about the same wall
    time on a 2-core machine; ``track_thread_scaling`` reports work/time of 2
    threads over 1 (ideal 2.0, no scaling 1.0).
    """

    params = [1, 2]
    param_names = ["threads"]
    batch = 200_000

    def setup(self, threads: int) -> None:
        self.allocs = [
            pyresv.DepthPoolAllocator(fig3_depths(1, self.batch // 9 + 1), 0, max_waiters=self.batch)
            for _ in range(2)
        ]
        self.pids = np.arange(self.batch, dtype=np.int32) // 9
        self.depths = np.ones(self.batch, dtype=np.int32)

    def _work(self, alloc) -> None:
        for _ in range(5):
            alloc.release_many(alloc.acquire_many(self.pids, self.depths))

    def _run(self, threads: int) -> None:
        workers = [threading.Thread(target=self._work, args=(a,)) for a in self.allocs[:threads]]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def time_batch_threads(self, threads: int) -> None:
        self._run(threads)

    def track_thread_scaling(self, threads: int) -> float:
        one = best_time(lambda: self._run(1), repeat=3)
        many = best_time(lambda: self._run(threads), repeat=3)
        return threads * one / many

    track_thread_scaling.unit = "x"


class Speedup:
    """Core over reference, timed in one process: the README's ratios."""

    def setup(self) -> None:
        self.impls = {name: cls for name, cls in IMPLEMENTATIONS.items()}

    def _ratio(self, make, run) -> float:
        times = {}
        for name, cls in self.impls.items():
            state = make(cls)
            run(state)
            times[name] = best_time(lambda: run(state))
        return times["reference"] / times["core"]

    def track_speedup_per_call(self) -> float:
        pids = [i % 1000 for i in range(PAIRS)]
        return self._ratio(lambda cls: cls(fig3_depths(3, 4), 32), lambda a: _churn(a, pids))

    def track_speedup_contended(self) -> float:
        n = PAIRS // 2

        def make(cls):
            alloc = cls([(0, 1)], n, max_waiters=n)
            held = [alloc.acquire(pid, 1) for pid in range(n)]
            return {"alloc": alloc, "owners": list(range(n)), "waiters": list(range(n, 2 * n)), "held": held}

        def run(s):
            _contended(s["alloc"], s["owners"], s["waiters"], s["held"])
            s["owners"], s["waiters"] = s["waiters"], s["owners"]

        return self._ratio(make, run)

    def track_speedup_batch(self) -> float:
        batch = 1000
        pids = np.arange(batch, dtype=np.int32) // 9
        depths = np.ones(batch, dtype=np.int32)
        return self._ratio(
            lambda cls: cls(fig3_depths(3, batch // 9 + 1), 0),
            lambda a: a.release_many(a.acquire_many(pids, depths)),
        )

    def track_ns_per_pair_core(self) -> float:
        alloc = pyresv.DepthPoolAllocator(fig3_depths(3, 4), 32)
        pids = [i % 1000 for i in range(PAIRS)]
        _churn(alloc, pids)
        return best_time(lambda: _churn(alloc, pids)) / PAIRS * 1e9

    def track_ns_per_pair_batch(self) -> float:
        batch = 100_000
        alloc = pyresv.DepthPoolAllocator(fig3_depths(3, batch // 9 + 1), 0, max_waiters=batch)
        pids = np.arange(batch, dtype=np.int32) // 9
        depths = np.ones(batch, dtype=np.int32)
        run = lambda: alloc.release_many(alloc.acquire_many(pids, depths))  # noqa: E731
        run()
        return best_time(run) / batch * 1e9

    track_speedup_per_call.unit = "x"
    track_speedup_contended.unit = "x"
    track_speedup_batch.unit = "x"
    track_ns_per_pair_core.unit = "ns"
    track_ns_per_pair_batch.unit = "ns"
