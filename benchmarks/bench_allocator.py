"""The allocator layer: the Cython core against its limits and the pure-Python allocators.

``Baselines`` reports every headline as a ratio to an honest baseline timed
in the same process, interleaved, in thread CPU time: the core's own C
functions in a nogil loop (the limit of any wrapper), two trivial Cython
method calls (the call floor) and a compact pure-Python allocator (what a
Python user could write); the clarity-first reference is the oracle, not the
yardstick.

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

from .common import IMPLEMENTATIONS, CompactAllocator, best_time, cpu_medians, fig3_depths

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


# ------------------------------------------------------------------ limits

N_PER_CALL = 4096  # pairs per sample of the per-call loops (each sample >= 100 us)


def _random_pairs(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Random pids in [0, 1000) and levels 1..3 (int32): the per-call pattern."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1000, n).astype(np.int32), rng.integers(1, 4, n).astype(np.int32)


def _batch_pattern(n: int, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """n requests in a random order, each pid asking 9 times at one level: all served from pools."""
    k = np.arange(n) // 9
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    return (k[order]).astype(np.int32), (1 + k[order] % 3).astype(np.int32)


def _per_call(alloc, pairs: list[tuple[int, int]]) -> None:
    acquire = alloc.acquire
    release = alloc.release
    for pid, level in pairs:
        release(acquire(pid, level))


class _Paths:
    """The paths ``Baselines`` times, built once."""

    def __init__(self) -> None:
        from pyresv._core import _baselines

        self.base = _baselines
        depths = fig3_depths(3, 4)
        self.core = pyresv.DepthPoolAllocator(depths, 32)
        self.ref = pyresv.reference.DepthPoolAllocator(depths, 32)
        self.compact = CompactAllocator(depths, 32)
        self.floor = _baselines.Floor()
        p, lv = _random_pairs(N_PER_CALL)
        self.pairs = list(zip(p.tolist(), lv.tolist()))
        self.p32, self.l32 = p, lv
        self.batches = {}
        for n in (64, 4096):
            bp, bl = _batch_pattern(n)
            alloc = pyresv.DepthPoolAllocator(fig3_depths(3, n // 27 + 2), 0, max_waiters=n)
            limit = pyresv.DepthPoolAllocator(fig3_depths(3, n // 27 + 2), 0, max_waiters=n)
            self.batches[n] = (alloc, limit, bp, bl, np.empty(n, np.int32), N_PER_CALL // n)

    def batch(self, n: int) -> None:
        alloc, _, bp, bl, _, repeat = self.batches[n]
        acquire_many, release_many = alloc.acquire_many, alloc.release_many
        for _ in range(repeat):
            release_many(acquire_many(bp, bl))

    def limit(self, n: int) -> None:
        _, limit, bp, bl, out, repeat = self.batches[n]
        batch_nogil = self.base.batch_nogil
        for _ in range(repeat):
            batch_nogil(limit, bp, bl, out)

    def measure(self, rounds: int = 9) -> dict[str, float]:
        """Seconds per pair of each path: medians of interleaved rounds, thread CPU time.

        Every sample is 4,096 pairs (the batches: 64 calls of 64, or one of 4,096).
        """
        fns = {
            "core": lambda: _per_call(self.core, self.pairs),
            "floor": lambda: _per_call(self.floor, self.pairs),
            "compact": lambda: _per_call(self.compact, self.pairs),
            "reference": lambda: _per_call(self.ref, self.pairs),
            "c_pairs": lambda: self.base.pairs_nogil(self.core, self.p32, self.l32),
            "batch64": lambda: self.batch(64),
            "batch4096": lambda: self.batch(4096),
            "limit64": lambda: self.limit(64),
            "limit4096": lambda: self.limit(4096),
        }
        return {name: t / N_PER_CALL for name, t in cpu_medians(fns, rounds).items()}


class Baselines:
    """The core's headlines as ratios to its limits (issue 15's goals in brackets).

    One interleaved measurement (``setup_cache``), every figure a ratio of two
    of its medians:

    * ``track_per_call_over_floor``: acquire+release per call, random pids and
      levels, over two trivial Cython method calls with the same signatures
      (<= 1.3).
    * ``track_batch64_over_per_call``: ``acquire_many`` + ``release_many`` of 64
      requests, per pair, over the per-call pair (<= 0.5).
    * ``track_batch4096_over_c_limit``: the same at 4,096 requests over
      ``dpa_acquire_many`` + ``dpa_release_many`` called from C (<= 1.5).
    * ``track_per_call_over_compact_python`` and
      ``track_reference_over_compact_python``: the core's and the reference's
      per-call pair over a compact pure-Python allocator's.
    * ``track_*_ns``: the absolute figures behind them (per pair).
    """

    timeout = 300

    def setup_cache(self) -> dict[str, float]:
        return _Paths().measure()

    def track_per_call_over_floor(self, m: dict[str, float]) -> float:
        return m["core"] / m["floor"]

    def track_per_call_over_c_limit(self, m: dict[str, float]) -> float:
        return m["core"] / m["c_pairs"]

    def track_batch64_over_per_call(self, m: dict[str, float]) -> float:
        return m["batch64"] / m["core"]

    def track_batch64_over_c_limit(self, m: dict[str, float]) -> float:
        return m["batch64"] / m["limit64"]

    def track_batch4096_over_c_limit(self, m: dict[str, float]) -> float:
        return m["batch4096"] / m["limit4096"]

    def track_per_call_over_compact_python(self, m: dict[str, float]) -> float:
        return m["core"] / m["compact"]

    def track_reference_over_compact_python(self, m: dict[str, float]) -> float:
        return m["reference"] / m["compact"]

    def track_per_call_ns(self, m: dict[str, float]) -> float:
        return m["core"] * 1e9

    def track_floor_ns(self, m: dict[str, float]) -> float:
        return m["floor"] * 1e9

    def track_c_limit_pair_ns(self, m: dict[str, float]) -> float:
        return m["c_pairs"] * 1e9

    def track_batch4096_ns(self, m: dict[str, float]) -> float:
        return m["batch4096"] * 1e9

    def track_c_limit_batch4096_ns(self, m: dict[str, float]) -> float:
        return m["limit4096"] * 1e9

    def track_compact_python_ns(self, m: dict[str, float]) -> float:
        return m["compact"] * 1e9


for _name in dir(Baselines):
    if _name.startswith("track_"):
        getattr(Baselines, _name).unit = "ns" if _name.endswith("_ns") else "x"


class CallFloors:
    """The per-call pair over two call floors, in an interleaved measurement of its own.

    ``acquire``/``release`` are built-in methods (binding=False), which CPython
    calls straight from its eval loop; ``Floor``'s trivial methods are Cython
    function objects (Cython's default), each call about 100 instructions
    dearer. ``BuiltinFloor`` has the same trivial methods as built-in methods:
    ``track_per_call_over_builtin_floor`` is the like-for-like ratio, what the
    core's own work costs over a call.
    """

    timeout = 300

    def setup_cache(self) -> dict[str, float]:
        from pyresv._core import _baselines

        core = pyresv.DepthPoolAllocator(fig3_depths(3, 4), 32)
        floor, builtin = _baselines.Floor(), _baselines.BuiltinFloor()
        p, lv = _random_pairs(N_PER_CALL)
        pairs = list(zip(p.tolist(), lv.tolist()))
        fns = {
            "core": lambda: _per_call(core, pairs),
            "floor": lambda: _per_call(floor, pairs),
            "builtin_floor": lambda: _per_call(builtin, pairs),
        }
        return {name: t / N_PER_CALL for name, t in cpu_medians(fns, 9).items()}

    def track_per_call_over_builtin_floor(self, m: dict[str, float]) -> float:
        return m["core"] / m["builtin_floor"]

    def track_builtin_floor_over_floor(self, m: dict[str, float]) -> float:
        return m["builtin_floor"] / m["floor"]

    def track_builtin_floor_ns(self, m: dict[str, float]) -> float:
        return m["builtin_floor"] * 1e9

    track_per_call_over_builtin_floor.unit = "x"
    track_builtin_floor_over_floor.unit = "x"
    track_builtin_floor_ns.unit = "ns"
