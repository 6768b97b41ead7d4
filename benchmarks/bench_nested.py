"""The nested-task adapters on other runtimes: DepthClient on Dask, DepthLimiter on anyio.

Dask: per-task overhead of ``DepthClient.submit`` against plain
``client.submit`` on one in-process LocalCluster (scheduler and workers in this
process, TCP on 127.0.0.1), ``TASKS`` trivial tasks submitted and gathered.
The scheduler, the workers and the client all run in this process, so its
CPU time is the whole cost of a task; the ``track_*`` ratio times both ways
round-robin in one cluster and divides the fastest rounds (goal: at most 1.2).
The fastest, not the median: on a shared machine the noise (other processes,
a garbage collection) only ever adds time, and a round here is short.

anyio: ``DepthLimiter`` against ``anyio.CapacityLimiter`` with the same number
of slots, ``SLOTS`` tasks each entering one (flat use, where both work), on
anyio's asyncio and trio backends.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import anyio
from distributed import Client, LocalCluster, worker_client

from pyresv.adapters.aio import DepthLimiter
from pyresv.adapters.dask import DepthClient, worker_resources

LEVELS = [2, 2]  # slots per level on each worker: 4 threads
TASKS = 200
ROUNDS = 11


def _inc(x: int) -> int:
    return x + 1


def _start() -> tuple[LocalCluster, Client]:
    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=sum(LEVELS),
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        resources=worker_resources(LEVELS),
    )
    return cluster, Client(cluster)


def _burst(submit: Callable[..., Any], client: Client) -> None:
    futures = [submit(_inc, i, pure=False) for i in range(TASKS)]
    client.gather(futures)


def dask_overhead_ratio(rounds: int = ROUNDS) -> float:
    """Fastest CPU time of TASKS tasks through DepthClient.submit over client.submit's, round-robin."""
    cluster, client = _start()
    try:
        dc = DepthClient(client, LEVELS)
        ways = {"client.submit": client.submit, "DepthClient.submit": dc.submit}
        for submit in ways.values():
            _burst(submit, client)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(rounds):
            for name, submit in ways.items():
                start = time.process_time()
                _burst(submit, client)
                times[name].append(time.process_time() - start)
        return min(times["DepthClient.submit"]) / min(times["client.submit"])
    finally:
        client.close()
        cluster.close()


class DaskSubmitOverhead:
    """``TASKS`` trivial tasks submitted, then gathered, on one in-process worker."""

    params = ["client.submit", "DepthClient.submit"]
    param_names = ["submit"]
    timeout = 120
    number = 1
    repeat = 5

    def setup(self, submit: str) -> None:
        self.cluster, self.client = _start()
        dc = DepthClient(self.client, LEVELS)
        self.submit = dc.submit if submit == "DepthClient.submit" else self.client.submit
        _burst(self.submit, self.client)  # warm-up

    def teardown(self, submit: str) -> None:
        self.client.close()
        self.cluster.close()

    def time_tasks(self, submit: str) -> None:
        _burst(self.submit, self.client)


class DaskRatio:
    """DepthClient.submit over client.submit, CPU time per task, one cluster."""

    timeout = 300

    def track_overhead_ratio(self) -> float:
        return dask_overhead_ratio()

    track_overhead_ratio.unit = "x"


def _thread_name(_i: int) -> str:
    return threading.current_thread().name


def _depth_parent(dc: DepthClient, i: int) -> list[str]:
    kids = [dc.submit(_thread_name, 4 * i + j, pure=False) for j in range(4)]
    return [f.result() for f in kids] + [threading.current_thread().name]


def _seceding_parent(i: int) -> list[str]:
    with worker_client() as c:  # secedes: the worker starts another thread while this one waits
        names = c.gather([c.submit(_thread_name, 4 * i + j, pure=False) for j in range(4)])
    return list(names) + [threading.current_thread().name]


def threads_used(way: str, parents: int = 16) -> int:
    """Distinct threads that ran a tree of ``parents`` x 4 children on one worker of sum(LEVELS) threads."""
    cluster, client = _start()
    try:
        if way == "DepthClient":
            dc = DepthClient(client, LEVELS)
            futures = [dc.submit(_depth_parent, dc, i, pure=False) for i in range(parents)]
        else:
            futures = [client.submit(_seceding_parent, i, pure=False) for i in range(parents)]
        return len({name for names in client.gather(futures) for name in names})
    finally:
        client.close()
        cluster.close()


class DaskThreads:
    """Threads a nested tree runs on: DepthClient (no secede) against worker_client (secedes)."""

    params = ["DepthClient", "worker_client"]
    param_names = ["way"]
    timeout = 120

    def track_threads(self, way: str) -> int:
        return threads_used(way)

    track_threads.unit = "threads"


# ------------------------------------------------------------------ anyio
SLOTS = 1000
DEPTHS = [(3, 1), (2, 1), (1, 1)]  # 6 reserved slots over 3 levels ...
UNRESERVED = 2  # ... plus 2 unreserved: 8, like the CapacityLimiter
TOTAL = 8


async def _flat(limiter: Any) -> None:
    async def one() -> None:
        async with limiter:
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for _ in range(SLOTS):
            tg.start_soon(one)


def _limiter(name: str) -> Any:
    if name == "anyio.CapacityLimiter":
        return anyio.CapacityLimiter(TOTAL)
    lim = DepthLimiter(DEPTHS, UNRESERVED)
    assert lim.total_tokens == TOTAL
    return lim


def _run(name: str, backend: str) -> float:
    """CPU time of one flat run on a fresh limiter; the limiter is made inside the loop (anyio's needs it)."""

    async def main() -> float:
        limiter = _limiter(name)
        start = time.process_time()
        await _flat(limiter)
        return time.process_time() - start

    return float(anyio.run(main, backend=backend))


def anyio_overhead_ratio(backend: str, rounds: int = ROUNDS) -> float:
    """Fastest CPU time of SLOTS slots through DepthLimiter over anyio.CapacityLimiter's, round-robin."""
    names = ["anyio.CapacityLimiter", "DepthLimiter"]
    for name in names:
        _run(name, backend)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            times[name].append(_run(name, backend))
    return min(times["DepthLimiter"]) / min(times["anyio.CapacityLimiter"])


class AnyioLimiterOverhead:
    """``SLOTS`` tasks each entering one of 8 slots, on each anyio backend."""

    params = (["anyio.CapacityLimiter", "DepthLimiter"], ["asyncio", "trio"])
    param_names = ["limiter", "backend"]

    def setup(self, limiter: str, backend: str) -> None:
        # Built once: a DepthLimiter's allocator sizes its tables for 65,536 pids
        # (about 12 ms), which is not the per-slot cost measured here.
        self.limiter = _limiter(limiter)
        self.time_slots(limiter, backend)  # warm-up

    def time_slots(self, limiter: str, backend: str) -> None:
        async def main() -> None:
            await _flat(self.limiter)

        anyio.run(main, backend=backend)


class AnyioRatio:
    """DepthLimiter over anyio.CapacityLimiter, CPU time, per backend."""

    params = ["asyncio", "trio"]
    param_names = ["backend"]
    timeout = 120

    def track_overhead_ratio(self, backend: str) -> float:
        return anyio_overhead_ratio(backend)

    track_overhead_ratio.unit = "x"


def _range(what: str, ratio: Callable[[], float]) -> None:
    runs = sorted(ratio() for _ in range(3))
    print(f"{what} (CPU time): {runs[0]:.2f}-{runs[-1]:.2f} over 3 runs ({', '.join(f'{r:.2f}' for r in runs)})")


if __name__ == "__main__":  # a quick look without asv: python -m benchmarks.bench_nested
    for way in DaskThreads.params:
        print(f"threads that ran 16 parents x 4 children on a worker of {sum(LEVELS)} threads, {way}: "
              f"{threads_used(way)}")
    _range("DepthClient.submit / client.submit", dask_overhead_ratio)
    for b in ("asyncio", "trio"):
        _range(f"DepthLimiter / anyio.CapacityLimiter on {b}", lambda: anyio_overhead_ratio(b))
