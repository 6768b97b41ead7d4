"""pyresv.adapters.dask on real LocalClusters bound to 127.0.0.1.

The tree that stalls plain Dask (every thread holds a parent waiting on its
child) completes through DepthClient with the same threads; random trees give
the expected sums; errors in leaves reach the caller with their traceback;
per-level concurrency, recorded by the tasks, never exceeds the slots.

Two in-process clusters are shared by the module (they start in well under a
second); one test starts worker processes to show that a DepthClient captured
in a closure works in another process.
"""

from __future__ import annotations

import pickle
import random
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import CancelledError
from typing import Any, Callable

import pytest
from distributed import Client, Event, Future, LocalCluster, get_client, get_worker, wait

from pyresv.adapters.dask import (
    DepthClient,
    InlineFuture,
    current_level,
    resource_name,
    worker_resources,
)

LEVELS = [1, 1, 1]  # per worker: one slot per level, three threads
DEADLINE_S = 60.0  # every wait in this module ends by then


def _cluster(n_workers: int, levels: list[int], processes: bool = False) -> LocalCluster:
    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=sum(levels),
        processes=processes,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        resources=worker_resources(levels),
    )


@pytest.fixture(scope="module")
def client():
    """Two in-process workers of 3 threads, each with one slot per level, on 127.0.0.1."""
    with _cluster(2, LEVELS) as cluster, Client(cluster, timeout=DEADLINE_S) as c:
        yield c


@pytest.fixture(scope="module")
def client1():
    """One in-process worker of 3 threads, one slot per level: where every task goes is known."""
    with _cluster(1, LEVELS) as cluster, Client(cluster, timeout=DEADLINE_S) as c:
        yield c


def _until(cond: Callable[[], bool], what: str) -> None:
    """Poll ``cond`` (a state that the cluster reaches by itself) until it holds."""
    end = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"not reached within {DEADLINE_S} s: {what}")
        time.sleep(0.01)


# ------------------------------------------------------------ what the tasks record
_lock = threading.Lock()
_running: dict[tuple[str, str, int], int] = defaultdict(int)  # (run, worker, level) -> now
_peak: dict[tuple[str, str, int], int] = defaultdict(int)  # (run, worker, level) -> most at once
_threads: dict[tuple[str, str], set[str]] = defaultdict(set)  # (run, worker) -> thread names


class _Recorded:
    """Counts the tasks of ``run`` running per (worker, level) while ``fn`` runs."""

    def __init__(self, run: str) -> None:
        self.run = run

    def __enter__(self) -> None:
        self.key = (self.run, get_worker().address, current_level())
        with _lock:
            _running[self.key] += 1
            _peak[self.key] = max(_peak[self.key], _running[self.key])
            _threads[self.key[:2]].add(threading.current_thread().name)

    def __exit__(self, *exc: Any) -> None:
        with _lock:
            _running[self.key] -= 1


def _peaks(run: str) -> dict[tuple[str, int], int]:
    return {(w, lvl): n for (r, w, lvl), n in _peak.items() if r == run}


# ------------------------------------------------------------ worker_resources
def test_worker_resources():
    assert worker_resources([2, 1, 3]) == {"pyresv-depth-1": 2, "pyresv-depth-2": 1, "pyresv-depth-3": 3}
    assert worker_resources(iter([1, 0, 2])) == {"pyresv-depth-1": 1, "pyresv-depth-3": 2}
    assert resource_name(4) == "pyresv-depth-4"


@pytest.mark.parametrize(
    ("levels", "error", "match"),
    [
        ([], ValueError, "1 to 64 depth levels, got 0"),
        ([1] * 65, ValueError, "1 to 64 depth levels, got 65"),
        ([1, -1], ValueError, r"levels\[1\] \(level 2\) must be in 0..4096, got -1"),
        ([1, 5000], ValueError, r"levels\[1\] \(level 2\) must be in 0..4096"),
        ([1, 1.0], TypeError, r"levels\[1\] \(level 2\) must be an int, got 1.0"),
        ([True], TypeError, r"levels\[0\] \(level 1\) must be an int"),
        ([0, 0], ValueError, "every level has 0 slots"),
        ("12", TypeError, "must be a sequence of slot counts"),
        (3, TypeError, "must be a sequence of slot counts"),
    ],
)
def test_worker_resources_refuses(levels, error, match):
    with pytest.raises(error, match=match):
        worker_resources(levels)


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ImportError, match=r"^pyresv.adapters.dask.DepthClient needs the 'dask' extra "
                                          r"\(distributed is not installed\): pip install 'pyresv\[dask\]'$"):
        DepthClient(object(), [1])


# ------------------------------------------------------------ construction
def test_checks_the_cluster(client, monkeypatch):
    with pytest.raises(ValueError, match=r"no worker of the cluster has a slot at level 4 .*'pyresv-depth-4'"):
        DepthClient(client, [1, 1, 1, 1])
    with pytest.raises(TypeError, match="client must be a distributed.Client, got str"):
        DepthClient("tcp://127.0.0.1:1", LEVELS)
    info = client.scheduler_info(n_workers=-1)
    (address, worker), *_ = info["workers"].items()
    worker = dict(worker, nthreads=2)  # 3 depth slots, 2 threads: a slot without a thread
    monkeypatch.setattr(client, "scheduler_info", lambda **kw: dict(info, workers={address: worker}))
    with pytest.raises(ValueError, match=f"worker {address} has 2 threads for 3 depth slots"):
        DepthClient(client, LEVELS)


def test_pickles_to_its_levels(client):
    from dask.base import tokenize

    dc = DepthClient(client, LEVELS)
    back = pickle.loads(pickle.dumps(dc))
    assert back.levels == 3 and back._levels == LEVELS and back._client is None
    assert "worker client" in repr(back)
    assert tokenize(dc) == tokenize(back) != tokenize(DepthClient(client, [1, 1]))  # a pure key is its levels


def test_refuses_dask_placement_options(client):
    dc = DepthClient(client, LEVELS)
    for name in ("resources", "priority", "workers", "allow_other_workers"):
        with pytest.raises(TypeError, match=f"'{name}' is set by the task's depth level"):
            dc.submit(abs, 1, **{name: None})
        with pytest.raises(TypeError, match=f"'{name}' is set by the task's depth level"):
            dc.map(abs, [1], **{name: None})


# ------------------------------------------------------------ the stall and its cure
def _plain_parent(i: int) -> str:
    try:
        return f"child {get_client().submit(_child, i, key=f'plain-child-{i}').result()}"
    except CancelledError:
        return "cancelled"


def _child(i: int) -> int:
    return i + 1


def _depth_parent(dc: DepthClient, i: int, run: str) -> tuple[int, int]:
    with _Recorded(run):
        kid = dc.submit(_depth_child, i, run)
        return current_level(), kid.result()


def _depth_child(i: int, run: str) -> tuple[int, int]:
    with _Recorded(run):
        return current_level(), i + 1


def test_tree_that_stalls_plain_dask_completes_with_depth_client(client):
    """Six parents on six threads, each waiting on its child: plain Dask stalls, DepthClient does not."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    threads = sum(w["nthreads"] for w in workers.values())
    assert threads == 6
    parents = [client.submit(_plain_parent, i, key=f"plain-parent-{i}") for i in range(threads)]

    def stalled() -> bool:  # every thread runs a parent; every child waits for a thread
        state = client.run_on_scheduler(
            lambda dask_scheduler: {
                k: ts.state for k, ts in dask_scheduler.tasks.items() if str(k).startswith("plain-")
            }
        )
        return len(state) == 2 * threads and all(s == "processing" for s in state.values())

    _until(stalled, "every parent and every child processing")
    executing = client.run(lambda dask_worker: sorted(str(ts.key) for ts in dask_worker.state.executing))
    assert sorted(k for keys in executing.values() for k in keys) == sorted(f"plain-parent-{i}" for i in range(6))
    with pytest.raises(TimeoutError):
        wait(parents, timeout=0.5)  # nothing can move: shown with a timeout
    # Clean up: cancelling the children ends the parents' waits.
    client.cancel([Future(f"plain-child-{i}", client) for i in range(threads)])
    assert client.gather(parents) == ["cancelled"] * threads

    dc = DepthClient(client, LEVELS)
    futures = [dc.submit(_depth_parent, dc, i, "cure") for i in range(threads)]
    assert [f.result(timeout=DEADLINE_S) for f in futures] == [(1, (2, i + 1)) for i in range(threads)]
    assert max(_peaks("cure").values()) == 1  # one slot per level per worker, never more
    assert all(len(names) <= 3 for (r, _w), names in _threads.items() if r == "cure")


def _wait_event(name: str, value: int) -> int:
    Event(name).wait(DEADLINE_S)
    return value


def _leaf_value(v: int) -> int:
    return v


def _hol_mid(dc: DepthClient, tag: str) -> int:
    """Level 2: hold the only level-3 slot with a leaf that waits, then queue a second leaf."""
    hold = dc.submit(_wait_event, f"{tag}-release", 1, pure=False)
    worker = get_worker()
    _until(lambda: getattr(worker.state.tasks.get(hold.key), "state", None) == "executing", "hold runs")
    leaf = dc.submit(_leaf_value, 2, key=f"{tag}-queued-leaf")
    return hold.result() + leaf.result()


def _hol_top(dc: DepthClient, tag: str) -> int:
    """Level 1: start the level-2 task; when told, submit a level-2 sibling (newer than the leaf)."""
    mid = dc.submit(_hol_mid, dc, tag)
    Event(f"{tag}-go").wait(DEADLINE_S)
    sibling = dc.submit(_leaf_value, 10, key=f"{tag}-sibling")
    return mid.result() + sibling.result()


def _constrained(c: Client) -> list[str]:
    out = c.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.constrained.sorted()])
    return [k for keys in out.values() for k in keys]


def test_deeper_levels_start_first_on_a_worker(client1):
    """A queued level-2 task never blocks a queued level-3 task of the same worker.

    Dask starts only the top constrained task of a worker, and among equals
    the newest. Here a level-2 sibling arrives after a level-3 leaf while the
    only level-2 slot is held by the leaf's parent: were the sibling first, it
    would wait for that slot forever and the leaf behind it would never start.
    """
    dc = DepthClient(client1, LEVELS)
    top = dc.submit(_hol_top, dc, "hol")
    _until(lambda: _constrained(client1) == ["hol-queued-leaf"], "the second leaf queued")
    Event("hol-go", client1).set()
    _until(lambda: len(_constrained(client1)) == 2, "the sibling queued")
    assert _constrained(client1) == ["hol-queued-leaf", "hol-sibling"]  # deeper first
    Event("hol-release", client1).set()
    assert top.result(timeout=DEADLINE_S) == 1 + 2 + 10


# ------------------------------------------------------------ random trees
def _node(dc: DepthClient, shape: tuple, run: str) -> int:
    """A tree node: its value plus its children's sums, the children submitted as tasks."""
    value, children = shape
    with _Recorded(run) if current_level() <= len(LEVELS) else _NoRecord():
        futures = [dc.submit(_node, dc, child, run) for child in children]
        return value + sum(f.result() for f in futures)


class _NoRecord:
    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: Any) -> None:
        pass


def _random_shape(rng: random.Random, depth: int) -> tuple:
    n = rng.randint(0, 3) if depth < 5 else 0  # 5 deep: levels 4 and 5 run inline
    return (rng.randint(-100, 100), tuple(_random_shape(rng, depth + 1) for _ in range(n)))


def _sum(shape: tuple) -> int:
    value, children = shape
    return value + sum(_sum(c) for c in children)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_trees(client, seed):
    rng = random.Random(seed)
    shapes = [_random_shape(rng, 1) for _ in range(8)]
    dc = DepthClient(client, LEVELS)
    run = f"random-{seed}"
    futures = [dc.submit(_node, dc, shape, run) for shape in shapes]
    assert [f.result(timeout=DEADLINE_S) for f in futures] == [_sum(s) for s in shapes]
    peaks = _peaks(run)
    assert peaks and max(peaks.values()) == 1  # recorded by the tasks: one slot per level per worker
    assert {lvl for (_w, lvl) in peaks} == {1, 2, 3}
    assert all(len(names) <= sum(LEVELS) for (r, _w), names in _threads.items() if r == run)


def test_wider_slots_are_used_and_respected():
    """Two slots at level 2: up to two level-2 tasks of one worker at once, never three."""
    levels = [1, 2]
    with _cluster(1, levels) as cluster, Client(cluster, timeout=DEADLINE_S) as c:
        dc = DepthClient(c, levels)
        top = dc.submit(_fan, dc, 6, "wide")
        assert top.result(timeout=DEADLINE_S) == 6
    peaks = _peaks("wide")
    assert {lvl: n for (_w, lvl), n in peaks.items()} == {1: 1, 2: 2}


def _fan(dc: DepthClient, n: int, run: str) -> int:
    with _Recorded(run):
        gate = f"{run}-gate"
        futures = [dc.submit(_gated, gate, run, pure=False) for _ in range(n)]
        # both level-2 slots taken before any finishes: the peak of 2 is reached
        _until(lambda: _running[(run, get_worker().address, 2)] == 2, "two level-2 tasks running")
        Event(gate).set()
        return sum(f.result() for f in futures)


def _gated(gate: str, run: str) -> int:
    with _Recorded(run):
        Event(gate).wait(DEADLINE_S)
        return 1


# ------------------------------------------------------------ errors, inline, futures
def _raise_in_leaf(dc: DepthClient, bad: int) -> int:
    if current_level() == len(LEVELS):
        if bad == 0:
            raise ValueError(f"leaf failed at level {current_level()}")
        return 1
    return sum(f.result() for f in [dc.submit(_raise_in_leaf, dc, bad - 1) for _ in range(2)])


def test_exception_in_a_leaf_reaches_the_caller(client):
    dc = DepthClient(client, LEVELS)
    ok = dc.submit(_raise_in_leaf, dc, 5)
    bad = dc.submit(_raise_in_leaf, dc, 2)
    assert ok.result(timeout=DEADLINE_S) == 4
    with pytest.raises(ValueError, match="leaf failed at level 3"):
        bad.result(timeout=DEADLINE_S)
    assert bad.status == "error"
    assert isinstance(bad.exception(), ValueError)
    names = []
    tb = bad.traceback()
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert names.count("_raise_in_leaf") >= 1


def _deepest(dc: DepthClient) -> dict:
    inner = dc.submit(lambda: (current_level(), dc.submit(current_level).result()))
    boom = dc.submit(_fail)
    chained = dc.submit(lambda a, b: a + b, dc.submit(lambda: 1), 2)
    failed_dep = dc.submit(lambda x: x, boom)
    mapped = dc.map(lambda x, y: (current_level(), x * y), [1, 2, 3], [4, 5, 6])
    return {
        "types": {type(f).__name__ for f in [inner, boom, chained, failed_dep, *mapped]},
        "inner": inner.result(),
        "boom": (boom.status, str(boom.exception()), boom.traceback() is not None, boom.cancel()),
        "chained": chained.result(),
        "failed_dep": str(failed_dep.exception()),
        "mapped": [f.result() for f in mapped],
        "level": current_level(),
    }


def _fail() -> None:
    raise KeyError("deep")


def test_below_the_deepest_level_runs_inline(client):
    dc = DepthClient(client, [1])  # one level: every nested submit runs inline
    out = dc.submit(_deepest, dc).result(timeout=DEADLINE_S)
    assert out == {
        "types": {"InlineFuture"},
        "inner": (2, 3),
        "boom": ("error", "'deep'", True, False),
        "chained": 3,
        "failed_dep": "'deep'",
        "mapped": [(2, 4), (2, 10), (2, 18)],
        "level": 1,
    }


def test_map_levels_keys_and_purity(client):
    dc = DepthClient(client, LEVELS)
    futures = dc.map(_level_times, [1, 2, 3], [10, 20, 30])
    assert client.gather(futures) == [(1, 10), (1, 40), (1, 90)]
    assert dc.map(_level_times, [1, 2, 3], [10, 20, 30])[0].key == futures[0].key  # pure: same key
    assert dc.map(_level_times, [1], [1], pure=False)[0].key != dc.map(_level_times, [1], [1], pure=False)[0].key
    named = dc.map(_level_times, [1, 2], [1, 1], key=["a-1", "a-2"])
    assert [f.key for f in named] == ["a-1", "a-2"]
    assert dc.map(_level_times, [], []) == []
    with pytest.raises(ValueError, match="2 keys for 1 calls"):
        dc.map(_level_times, [1], [1], key=["x", "y"])
    nested = dc.submit(lambda: [f.result() for f in dc.map(_level_times, [5], [5])])
    assert nested.result(timeout=DEADLINE_S) == [(2, 25)]


def _level_times(a: int, b: int) -> tuple[int, int]:
    return current_level(), a * b


def _same_call(dc: DepthClient, x: int) -> int:
    if current_level() < len(LEVELS):
        return dc.submit(_same_call, dc, x).result() + 1
    return x


def test_the_same_pure_call_at_two_levels_is_two_tasks(client):
    """Without the level in the key, the nested call would be its own parent and wait for itself."""
    dc = DepthClient(client, LEVELS)
    assert dc.submit(_same_call, dc, 7).result(timeout=DEADLINE_S) == 9


def test_result_timeout_and_cancel(client1):
    dc = DepthClient(client1, LEVELS)
    running = dc.submit(_wait_event, "cancel-running", 1, pure=False)
    queued = dc.submit(_wait_event, "cancel-running", 2, pure=False)  # waits for the level-1 slot
    _until(lambda: running.status == "pending" and _worker_executing(client1) == [running.key], "running")
    with pytest.raises(TimeoutError):
        running.result(timeout=0.05)
    queued.cancel()
    assert queued.cancelled() and queued.status == "cancelled"
    with pytest.raises(CancelledError):
        queued.result(timeout=DEADLINE_S)
    Event("cancel-running", client1).set()
    assert running.result(timeout=DEADLINE_S) == 1
    after = dc.submit(_leaf_value, 5)  # the slot was given back
    assert after.result(timeout=DEADLINE_S) == 5


def _worker_executing(c: Client) -> list[str]:
    out = c.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing])
    return [k for keys in out.values() for k in keys]


def test_closure_captured_client_in_worker_processes():
    """A DepthClient in a task's closure unpickles in a worker process and nests from there."""
    levels = [1, 1]
    with _cluster(1, levels, processes=True) as cluster, Client(cluster, timeout=DEADLINE_S) as c:
        dc = DepthClient(c, levels)

        def parent(x: int) -> tuple[int, int, list]:
            import os

            kids = dc.submit(lambda y: (current_level(), os.getpid(), y * 2), x)
            level, pid, value = kids.result()
            return current_level(), level, [value, pid == os.getpid()]

        assert dc.submit(parent, 21).result(timeout=DEADLINE_S) == (1, 2, [42, True])
