"""DepthPoolExecutor: nested submit-and-wait without deadlock, on a bounded set of threads."""

from __future__ import annotations

import functools
import os
import random
import threading
import time
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyresv.reference
from pyresv.adapters.executor import DepthPoolExecutor, LockedAllocator, current_level

WAIT = 10.0  # seconds any single wait in these tests may take before it counts as stuck




def assert_idle(ex: DepthPoolExecutor) -> None:
    """Every TCB free, nothing queued, invariants hold."""
    alloc = ex.allocator
    alloc.check()
    st = alloc.stats()
    assert st["pending_total"] == 0
    assert sum(st["held"]) == 0 and st["unreserved_held"] == 0


def _threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix + "-")]


def _wait_threads_gone(prefix: str) -> None:
    deadline = time.monotonic() + WAIT
    while _threads(prefix) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _threads(prefix) == []


# ------------------------------------------------ the deadlock it removes
def _parent(ex: Executor, gate: threading.Event, patience: float, hold: threading.Event, report: list) -> str:
    """Submit a child and wait ``patience`` seconds for it; keep the thread until ``hold`` is set."""
    assert gate.wait(WAIT)
    child = ex.submit(lambda: "done")
    try:
        outcome = child.result(timeout=patience)
    except TimeoutError:
        outcome = "stuck"
    report.append(outcome)
    assert hold.wait(WAIT)  # still holding its thread, as a real waiter would
    return outcome


def _wait_for(cond) -> None:
    deadline = time.monotonic() + WAIT
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_threadpool_deadlocks_on_nested_submit_and_wait():
    # N parents occupy the N threads (they are queued before any child), each
    # waits for a child that no thread is free to run. Every parent gives up
    # after 0.5 s; then ``hold`` lets them return, so the threads run the
    # children and end, and the test ends.
    n = 4
    gate, hold, report = threading.Event(), threading.Event(), []
    with ThreadPoolExecutor(n) as ex:
        parents = [ex.submit(_parent, ex, gate, 0.5, hold, report) for _ in range(n)]
        gate.set()
        _wait_for(lambda: len(report) == n)
        assert report == ["stuck"] * n  # no child ran while its parent waited
        hold.set()
        assert [f.result(timeout=WAIT) for f in parents] == ["stuck"] * n


def test_depth_pool_completes_with_the_same_threads(allocator_cls):
    n = 4
    gate, hold, report = threading.Event(), threading.Event(), []
    hold.set()
    with DepthPoolExecutor([(2, 1), (2, 1)], allocator_cls=allocator_cls, thread_name_prefix="same-n") as ex:
        assert ex.max_workers == n
        parents = [ex.submit(_parent, ex, gate, WAIT, hold, report) for _ in range(n)]
        gate.set()
        results = [f.result(timeout=WAIT) for f in parents]
        assert len(_threads("same-n")) <= n
    assert results == ["done"] * n
    assert_idle(ex)


# ------------------------------------------------------- random task trees
trees = st.recursive(st.just(()), lambda kids: st.lists(kids, max_size=3).map(tuple), max_leaves=10)
configs = st.tuples(
    st.integers(1, 3),  # levels
    st.integers(1, 2),  # pools per level
    st.integers(1, 2),  # pool size
    st.integers(0, 2),  # unreserved
)


def _run_tree(ex: DepthPoolExecutor, tree: tuple, depth: int, seen: list) -> int:
    seen.append((depth, current_level(), threading.current_thread().name))
    futures = [ex.submit(_run_tree, ex, child, depth + 1, seen) for child in tree]
    return 1 + sum(f.result(timeout=WAIT) for f in futures)


def _size(tree: tuple) -> int:
    return 1 + sum(_size(c) for c in tree)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(forest=st.lists(trees, min_size=1, max_size=3), config=configs)
def test_random_task_trees_complete(allocator_cls, forest, config):
    levels, pools, size, unreserved = config
    seen: list = []
    with DepthPoolExecutor([(pools, size)] * levels, unreserved, allocator_cls=allocator_cls) as ex:
        futures = [ex.submit(_run_tree, ex, tree, 1, seen) for tree in forest]
        assert [f.result(timeout=WAIT) for f in futures] == [_size(t) for t in forest]
    assert all(depth == level for depth, level, _name in seen)  # level == nesting depth
    assert len({name for _d, _l, name in seen if "tcb" in name}) <= ex.max_workers
    assert_idle(ex)


def test_inline_beyond_the_deepest_level(allocator_cls):
    def deepest():
        caller = threading.current_thread()
        fut = ex.submit(lambda: (current_level(), threading.current_thread()))
        assert fut.done()  # ran inline, before submit returned
        level, thread = fut.result()
        bad = ex.submit(lambda: 1 / 0)
        assert isinstance(bad.exception(timeout=0), ZeroDivisionError)  # not raised in the caller
        return current_level(), level, thread is caller

    with DepthPoolExecutor([(1, 1), (1, 1)], allocator_cls=allocator_cls) as ex:
        top = ex.submit(lambda: ex.submit(deepest).result(timeout=WAIT))
        assert top.result(timeout=WAIT) == (2, 3, True)
    assert current_level() == 0
    assert_idle(ex)


# ------------------------------------------------------------ thread bound
def test_one_thread_per_tcb_never_more(allocator_cls):
    prefix = "bound"
    peak = []
    wrong = []

    def leaf():
        name = threading.current_thread().name
        tcb = int(name.rsplit("tcb", 1)[1])
        if ex.allocator.holder(tcb) < 0:  # the thread of TCB i only runs tasks holding TCB i
            wrong.append(name)
        peak.append(len(_threads(prefix)))
        time.sleep(0.002)
        return 1

    def parent():
        kids = [ex.submit(leaf) for _ in range(3)]
        leaf()
        return sum(k.result(timeout=WAIT) for k in kids)

    with DepthPoolExecutor([(2, 2), (2, 1)], 1, allocator_cls=allocator_cls, thread_name_prefix=prefix) as ex:
        assert ex.max_workers == 7
        assert _threads(prefix) == []  # started on first use
        assert sum(f.result(timeout=WAIT) for f in [ex.submit(parent) for _ in range(20)]) == 60
        assert max(peak) <= 7
        assert 1 <= len(_threads(prefix)) <= 7
    assert wrong == []
    _wait_threads_gone(prefix)
    assert_idle(ex)


# -------------------------------------------------------------- exceptions
def test_exceptions_reach_the_future_and_tcbs_come_back(allocator_cls):
    def boom(msg):
        raise ValueError(msg)

    def parent():
        return ex.submit(boom, "child").result(timeout=WAIT)

    with DepthPoolExecutor([(1, 1), (1, 1)], allocator_cls=allocator_cls) as ex:
        f = ex.submit(boom, "top")
        with pytest.raises(ValueError, match="top"):
            f.result(timeout=WAIT)
        assert_idle(ex)  # the TCB is back before the future completes
        g = ex.submit(parent)
        with pytest.raises(ValueError, match="child"):
            g.result(timeout=WAIT)
        assert_idle(ex)
        assert ex.submit(lambda: 7).result(timeout=WAIT) == 7


def test_map_including_nested(allocator_cls):
    with DepthPoolExecutor([(2, 2), (2, 2)], allocator_cls=allocator_cls) as ex:
        assert list(ex.map(lambda x: x * x, range(10), timeout=WAIT)) == [x * x for x in range(10)]
        nested = ex.submit(lambda: list(ex.map(lambda x: (x, current_level()), range(4), timeout=WAIT)))
        assert nested.result(timeout=WAIT) == [(x, 2) for x in range(4)]
    assert_idle(ex)


# --------------------------------------------------------------- shutdown
def test_shutdown_semantics(allocator_cls):
    ex = DepthPoolExecutor([(1, 1)], allocator_cls=allocator_cls, thread_name_prefix="sd")
    assert isinstance(ex, Executor)
    gate = threading.Event()
    running = ex.submit(lambda: gate.wait(WAIT))
    queued = [ex.submit(lambda: "never") for _ in range(3)]
    assert ex.allocator.pending() == 3
    ex.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(lambda: 0)
    assert all(f.cancelled() for f in queued)
    assert ex.allocator.pending() == 0
    assert not running.done()
    gate.set()
    assert running.result(timeout=WAIT) is True
    _wait_threads_gone("sd")
    assert_idle(ex)


def test_shutdown_waits_and_accepts_nested_work_of_accepted_trees(allocator_cls):
    gate = threading.Event()

    def parent():
        assert gate.wait(WAIT)
        return ex.submit(lambda: "nested after shutdown").result(timeout=WAIT)

    ex = DepthPoolExecutor([(1, 1), (1, 1)], allocator_cls=allocator_cls, thread_name_prefix="sw")
    f = ex.submit(parent)
    waiter = threading.Thread(target=ex.shutdown, kwargs={"wait": True})
    waiter.start()
    _wait_for(lambda: ex._core.shutdown)  # the waiter is inside shutdown(), and stays there:
    assert waiter.is_alive() and not f.done()  # shutdown(wait=True) waits for the tree
    gate.set()
    waiter.join(WAIT)
    assert not waiter.is_alive()
    assert f.result(timeout=0) == "nested after shutdown"
    assert _threads("sw") == []  # wait=True joined the workers
    assert_idle(ex)


def test_shutdown_wait_from_inside_a_task_is_refused(allocator_cls):
    with DepthPoolExecutor([(1, 1)], allocator_cls=allocator_cls) as ex:
        f = ex.submit(ex.shutdown)
        with pytest.raises(RuntimeError, match="wait for itself"):
            f.result(timeout=WAIT)


def test_context_manager_shuts_down(allocator_cls):
    with DepthPoolExecutor([(1, 2)], allocator_cls=allocator_cls, thread_name_prefix="cm") as ex:
        f = ex.submit(time.sleep, 0.05)
    assert f.done()
    assert _threads("cm") == []
    with pytest.raises(RuntimeError):
        ex.submit(print)


def test_pids_of_finished_trees_are_recycled(allocator_cls):
    # Only 2 pids exist: 50 trees in a row need their pids back.
    with DepthPoolExecutor([(1, 1)] * 2, allocator_cls=functools.partial(allocator_cls, max_processes=2)) as ex:
        for i in range(50):
            assert ex.submit(lambda i=i: ex.submit(lambda: i).result(timeout=WAIT)).result(timeout=WAIT) == i
    assert_idle(ex)


def test_bad_configuration_is_rejected(allocator_cls):
    with pytest.raises(ValueError, match="level 2"):
        DepthPoolExecutor([(1, 1), (0, 1)], 4, allocator_cls=allocator_cls)
    with pytest.raises(ValueError):
        DepthPoolExecutor([], allocator_cls=allocator_cls)


def test_depths_given_as_a_one_shot_iterator(allocator_cls):
    """The levels are read once: the allocator and the pool check see the same ones."""
    with pytest.raises(ValueError, match=r"depths\[1\] \(level 2\) has no pool"):
        DepthPoolExecutor(iter([(1, 1), (0, 1)]), 4, allocator_cls=allocator_cls)
    with DepthPoolExecutor(iter([iter((1, 1)), (1, 1)]), allocator_cls=allocator_cls) as ex:
        assert (ex.levels, ex.max_workers) == (2, 2)
        nested = ex.submit(lambda: ex.submit(current_level).result(timeout=WAIT))
        assert nested.result(timeout=WAIT) == 2
    assert_idle(ex)


# ----------------------------------------- the allocator behind the executor's back
def test_the_allocator_is_read_only():
    with DepthPoolExecutor([(1, 1)]) as ex:
        view = ex.allocator
        for name in ("acquire", "release", "cancel", "release_all", "take_grants", "acquire_many", "release_many"):
            assert not hasattr(view, name), name
        assert (view.levels, view.total, view.pending(), view.holder(0), view.level_of(0)) == (1, 1, 0, -1, 1)
        view.check()


def _keeping(handle: list):
    """An allocator factory that keeps a handle on what it builds, as a user's might."""

    def factory(depths, unreserved):
        alloc = pyresv.DepthPoolAllocator(depths, unreserved)
        handle.append(alloc)
        return alloc

    return factory


def test_a_release_behind_its_back_fails_the_future_and_the_executor_keeps_serving():
    handle: list = []
    with DepthPoolExecutor([(1, 1)], allocator_cls=_keeping(handle), thread_name_prefix="behind") as ex:
        gate = threading.Event()
        running = ex.submit(gate.wait, WAIT)
        _wait_for(lambda: ex.allocator.holder(0) >= 0)
        handle[0].release(0)  # the running task's TCB, from outside
        gate.set()
        with pytest.raises(pyresv.AllocatorError, match="TCB 0"):
            running.result(timeout=WAIT)  # the error reaches the task's future ...
        assert [t.is_alive() for t in _threads("behind")] == [True]  # ... the worker lives on
        assert ex.submit(current_level).result(timeout=WAIT) == 1
    assert_idle(ex)


def test_a_grant_to_an_outside_request_fails_the_future_and_the_executor_keeps_serving():
    handle: list = []
    with DepthPoolExecutor([(1, 1)], allocator_cls=_keeping(handle), thread_name_prefix="foreign") as ex:
        gate = threading.Event()
        running = ex.submit(gate.wait, WAIT)
        _wait_for(lambda: ex.allocator.holder(0) >= 0)
        assert handle[0].acquire(7) == pyresv.PENDING  # an outside request, queued behind the task
        gate.set()
        with pytest.raises(pyresv.AllocatorError, match="grant of TCB 0 to pid 7.*used behind its back"):
            running.result(timeout=WAIT)
        assert handle[0].holder(0) == 7
        handle[0].release(0)  # the outsider gives it back
        assert [t.is_alive() for t in _threads("foreign")] == [True]
        assert ex.submit(lambda: "still serving").result(timeout=WAIT) == "still serving"
    assert_idle(ex)


# ------------------------------------------------- the guarded allocator
STRESS = os.environ.get("PYRESV_STRESS", "") not in ("", "0")
HAMMER_THREADS = 8


def test_locked_allocator_hammer(allocator_cls):
    """8 threads share one guarded allocator: invariants hold and every TCB is conserved.

    8 threads x 10^5 operations on the compiled core (a few seconds); on the
    pure-Python reference 10^5 operations in all, unless PYRESV_STRESS=1.
    """
    full = STRESS or allocator_cls is not pyresv.reference.DepthPoolAllocator
    HAMMER_OPS = HAMMER_THREADS * 10**5 if full else 10**5  # in total, over all threads
    pids_per_thread = 6
    locked = LockedAllocator(allocator_cls([(4, 3), (4, 2), (2, 2)], 6, max_processes=HAMMER_THREADS * pids_per_thread))
    total = locked.total
    owner: list[int | None] = [None] * total  # who holds each TCB, as the threads see it
    inbox = [deque() for _ in range(HAMMER_THREADS)]  # grants routed to the thread owning the pid
    errors: list[str] = []
    tallies = [dict(acquires=0, immediate=0, granted=0, cancelled=0) for _ in range(HAMMER_THREADS)]
    start = threading.Barrier(HAMMER_THREADS, timeout=WAIT)

    def route(grants):
        for pid, tcb in grants:
            inbox[pid // pids_per_thread].append(tcb)

    def take(t, tcb, held):
        if owner[tcb] is not None:
            errors.append(f"TCB {tcb} handed to thread {t} while thread {owner[tcb]} holds it")
        owner[tcb] = t
        held.append(tcb)

    def worker(t):
        rng = random.Random(t)
        mine = range(t * pids_per_thread, (t + 1) * pids_per_thread)
        tally = tallies[t]
        held: list[int] = []
        start.wait()
        for i in range(HAMMER_OPS // HAMMER_THREADS):
            while inbox[t]:
                tally["granted"] += 1
                take(t, inbox[t].popleft(), held)
            r = rng.random()
            if r < 0.4:
                tally["acquires"] += 1
                tcb = locked.acquire(rng.choice(mine), rng.randint(1, 3), False)
                if tcb >= 0:
                    tally["immediate"] += 1
                    take(t, tcb, held)
            elif r < 0.9 and held:
                tcb = held.pop(rng.randrange(len(held)))
                owner[tcb] = None
                locked.release(tcb)
                route(locked.take_grants())
            elif r < 0.96:
                tally["cancelled"] += locked.cancel(rng.choice(mine))
            else:
                route(locked.take_grants())
            if t == 0 and i % 2000 == 0:
                locked.check()
        # wind down: drop what is queued, give back what is held
        for pid in mine:
            tally["cancelled"] += locked.cancel(pid)
        route(locked.take_grants())
        while inbox[t]:
            tally["granted"] += 1
            take(t, inbox[t].popleft(), held)
        for tcb in held:
            owner[tcb] = None
            locked.release(tcb)
        route(locked.take_grants())

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(HAMMER_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not any(th.is_alive() for th in threads)
    assert errors == []
    # Grants made by the last releases of other threads may still sit in inboxes.
    for t in range(HAMMER_THREADS):
        while inbox[t]:
            tallies[t]["granted"] += 1
            tcb = inbox[t].popleft()
            locked.release(tcb)
    assert locked.take_grants() == []
    locked.check()
    st = locked.stats()
    assert st["pending_total"] == 0 and sum(st["held"]) == 0 and st["unreserved_held"] == 0
    assert sum(st["free"]) + st["unreserved_free"] == total
    # every request was served at once, granted later, or cancelled; every TCB handed out came back
    for tally in tallies:
        assert tally["acquires"] == tally["immediate"] + tally["granted"] + tally["cancelled"]
    served = sum(t["immediate"] + t["granted"] for t in tallies)
    assert st["served_pool"] + st["served_unreserved"] + st["granted"] == served == st["released"]
    assert served > HAMMER_OPS // 20  # the hammer did real work
