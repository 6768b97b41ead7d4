"""DepthResource: a SimPy resource over the allocator (whole traces, cancel, FIFO, deadlock report)."""

from __future__ import annotations

import matplotlib
import pytest
import simpy

import pyresv
from pyresv.adapters.simpy import DepthRequest, DepthResource, Monitor, find_deadlock

matplotlib.use("Agg")




def assert_clean(res: DepthResource) -> None:
    """Nothing left behind: no pending request, no held TCB, invariants hold."""
    alloc = res.allocator
    alloc.check()
    assert alloc.pending() == 0
    assert all(alloc.holder(t) == -1 for t in range(alloc.total))
    assert res.count == 0 and res.queue == []


# ----------------------------------------------------------- whole traces
def test_trace_shared_pool_fifo(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(0, 1)], 2), name="R")
    log = []

    def user(name, pid, hold):
        log.append((env.now, name, "ask"))
        with res.request(pid) as req:
            tcb = yield req
            log.append((env.now, name, "got", tcb))
            yield env.timeout(hold)
        log.append((env.now, name, "done"))

    for i, hold in enumerate([3, 1, 1, 1]):
        env.process(user(f"p{i}", i, hold))
    env.run()
    assert log == [
        (0, "p0", "ask"), (0, "p1", "ask"), (0, "p2", "ask"), (0, "p3", "ask"),
        (0, "p0", "got", 0), (0, "p1", "got", 1),
        (1, "p1", "done"), (1, "p2", "got", 1),
        (2, "p2", "done"), (2, "p3", "got", 1),
        (3, "p0", "done"), (3, "p3", "done"),
    ]  # fmt: skip
    assert_clean(res)


def test_trace_pool_ownership_and_seekers(allocator_cls):
    # One level-1 pool of 2 TCBs ([0029]: a whole pool goes to one pid) and no
    # unreserved TCB: pid 0 owns the pool; pids 1 and 2 wait for the whole
    # pool (FIG 6A 606-610), which goes to the oldest of them.
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(1, 2)], 0))
    log = []

    def user(name, pid, start, hold):
        yield env.timeout(start)
        with res.request(pid) as req:
            tcb = yield req
            log.append((env.now, name, tcb))
            yield env.timeout(hold)

    env.process(user("a0", 0, 0, 2))
    env.process(user("b1", 1, 1, 1))
    env.process(user("a1", 0, 1, 2))  # pid 0's second TCB of its own pool
    env.process(user("c2", 2, 1, 1))
    env.process(user("b2", 1, 1, 1))  # pid 1 again: served with b1 once pid 1 owns the pool
    env.run()
    # free TCBs are a LIFO stack: 1 was freed last, so it is handed out first
    assert log == [(0, "a0", 0), (1, "a1", 1), (3, "b1", 1), (3, "b2", 0), (4, "c2", 0)]
    assert_clean(res)


def test_fifo_grant_order_many_waiters(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(0, 1)], 1))
    order = []

    def user(pid, start):
        yield env.timeout(start)
        with res.request(pid) as req:
            yield req
            order.append(pid)
            yield env.timeout(10)

    arrival = [5, 2, 7, 0, 3, 6, 1, 4]  # pid i arrives at arrival[i]
    for pid, start in enumerate(arrival):
        env.process(user(pid, start))
    env.run()
    assert order == sorted(range(8), key=lambda p: arrival[p])
    assert_clean(res)


def test_immediate_request_is_triggered_with_tcb(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(1, 1), (1, 1)], 0))
    req = res.request(3, depth=1, remote=True)  # FIG 5A: served at level 2
    assert isinstance(req, (DepthRequest, simpy.Event))
    assert req.triggered and req.ok and req.value == 1 and req.tcb == 1
    assert req.level == 2 and res.allocator.level_of(1) == 2
    assert res.users == [req] and res.count == 1
    res.release(1)
    assert_clean(res)


def test_release_wakes_in_grant_order_without_polling(allocator_cls):
    # One release hands a wholly free pool to a seeker, which serves several
    # of its requests at once: the events trigger in the allocator's grant order.
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(1, 3)], 0))
    first = res.request(0)
    reqs = [res.request(1) for _ in range(3)]
    assert not any(r.triggered for r in reqs)
    res.release(first.value)
    grants = [r.value for r in reqs]
    assert grants == [0, 1, 2]
    assert [r.triggered for r in reqs] == [True] * 3
    for t in grants:
        res.release(t)
    assert_clean(res)


# ------------------------------------------------------ interrupt, cancel
def test_interrupt_while_waiting_cancels(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(0, 1)], 1))
    log = []

    def holder():
        with res.request(0) as req:
            yield req
            yield env.timeout(5)
        log.append((env.now, "holder done"))

    def waiter():
        try:
            with res.request(1) as req:
                yield req
                log.append((env.now, "waiter got"))
        except simpy.Interrupt as exc:
            log.append((env.now, "interrupted", exc.cause, res.allocator.pending()))

    def boss(victim):
        yield env.timeout(1)
        victim.interrupt("enough")

    env.process(holder())
    w = env.process(waiter())
    env.process(boss(w))
    env.run()
    assert log == [(1, "interrupted", "enough", 0), (5, "holder done")]
    assert_clean(res)


def test_interrupt_after_grant_releases(allocator_cls):
    # The holder releases at t=1 and the waiter's request is triggered; an
    # interrupt reaches the waiter at t=1 before it resumes: leaving the block
    # must release the TCB it was granted.
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(0, 1)], 1))
    seen = []

    def holder():
        with res.request(0) as req:
            yield req
            yield env.timeout(1)

    def waiter():
        try:
            with res.request(1) as req:
                yield req
                seen.append("got")
        except simpy.Interrupt:
            seen.append(("interrupted", req.triggered, res.count))

    def boss(victim):
        yield env.timeout(0.5)
        yield env.timeout(0.5)  # created after the holder's timeout: fires after it at t=1
        victim.interrupt()

    env.process(holder())
    w = env.process(waiter())
    env.process(boss(w))
    env.run()
    # granted before the interrupt reached it, and released when the block exited
    assert seen == [("interrupted", True, 0)]
    assert_clean(res)


def test_cancel_is_exact_with_sibling_requests_of_one_pid(allocator_cls):
    # pid 7 has two requests pending; allocator.cancel(7) drops both, so the
    # adapter issues the survivor again: it stays pending and is served later,
    # behind pid 8's request that arrived in between.
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(0, 1)], 1))
    held = res.request(0)
    a = res.request(7)
    c = res.request(8)
    b = res.request(7)
    assert res.allocator.pending() == 3 and res.allocator.pending(7) == 2
    a.cancel()
    assert res.allocator.pending() == 2 and res.allocator.pending(7) == 1
    assert res.queue == [c, b]
    res.allocator.check()
    res.release(held.value)
    assert c.triggered and not b.triggered and not a.triggered
    res.release(c.value)
    assert b.triggered and b.value == 0
    res.release(b.value)
    assert_clean(res)


@pytest.mark.parametrize("wake", ["deepest", "fifo"])
def test_grant_finds_the_right_request_of_a_pid_pending_at_two_levels(allocator_cls, wake):
    # An unreserved TCB goes by the wake policy (FIG 6B block 620): the adapter
    # must trigger the request the allocator served, not just any of the pid's.
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(0, 1), (0, 1)], 1, wake=wake))
    held = res.request(0)
    shallow = res.request(5, depth=1)
    deep = res.request(5, depth=2)
    res.release(held.value)
    winner, loser = (deep, shallow) if wake == "deepest" else (shallow, deep)
    assert winner.triggered and not loser.triggered
    loser.cancel()
    res.release(winner.value)
    assert_clean(res)


def test_explicit_release_inside_block_is_not_repeated(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(0, 1)], 1))

    def user():
        with res.request(0) as req:
            tcb = yield req
            res.release(tcb)
            yield env.timeout(1)

    env.process(user())
    env.run()
    assert_clean(res)


# ------------------------------------------------------------ bad input
def test_bad_requests_leave_state_unchanged(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(1, 1)], 1))
    keep = res.request(0)
    before = res.allocator.stats()
    with pytest.raises(ValueError, match="pid"):
        res.request(-1)
    with pytest.raises(ValueError, match="depth"):
        res.request(0, depth=2)
    with pytest.raises(ValueError, match="depth"):
        res.request(0, depth=1, remote=True)  # level 2 of a 1-level allocator
    with pytest.raises(ValueError, match="inside a SimPy process"):
        res.request()
    assert res.allocator.stats() == before and res.users == [keep] and res.queue == []
    with pytest.raises(pyresv.AllocatorError, match="1"):
        res.release(1)  # free
    assert res.allocator.stats() == before
    res.release(keep.value)
    assert_clean(res)


def test_implicit_nesting_too_deep_names_the_level(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(1, 1)], 0), name="R")
    errors = []

    def user():
        with res.request() as outer:
            yield outer
            try:
                res.request()
            except ValueError as exc:
                errors.append(str(exc))

    env.process(user())
    env.run()
    assert len(errors) == 1 and "level 2" in errors[0] and "R" in errors[0]
    assert_clean(res)


# ----------------------------------------------------- implicit pid/level
def test_implicit_levels_follow_nesting(allocator_cls):
    env = simpy.Environment()
    a = DepthResource(env, allocator_cls([(2, 1)] * 3, 0), name="A")
    b = DepthResource(env, allocator_cls([(2, 1)] * 3, 0), name="B")
    log = []

    def leaf(res, tag):
        with res.request() as req:
            tcb = yield req
            log.append((tag, res.name, req.pid, req.level, res.allocator.level_of(tcb)))
            yield env.timeout(1)

    def root(tag):
        with a.request() as req:
            yield req
            log.append((tag, "A", req.pid, req.level, 1))
            # nested through a sub-process, then in the same process (yield from)
            yield env.process(leaf(b, tag + ".sub"))
            with b.request() as inner:
                yield inner
                log.append((tag + ".inline", "B", inner.pid, inner.level, 2))
                # two sub-processes waited on together: both one level deeper
                yield env.all_of([env.process(leaf(a, tag + ".x")), env.process(leaf(b, tag + ".y"))])
        # sequential, not nested: back at level 1
        yield from leaf(b, tag + ".after")

    env.process(root("r"))
    env.run()
    assert log == [
        ("r", "A", 0, 1, 1),
        ("r.sub", "B", 0, 2, 2),
        ("r.inline", "B", 0, 2, 2),
        ("r.x", "A", 0, 3, 3),
        ("r.y", "B", 0, 3, 3),
        ("r.after", "B", 0, 1, 1),
    ]
    assert_clean(a) and assert_clean(b)


def test_implicit_pids_are_per_tree_and_recycled(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(4, 1)], 0))
    pids = []

    def tree(start):
        yield env.timeout(start)
        with res.request() as req:
            yield req
            pids.append((env.now, req.pid))
            yield env.timeout(1)

    for start in [0, 0, 2, 2, 2, 5]:
        env.process(tree(start))
    env.run()
    # two trees at t=0 (pids 0, 1), both finished by t=2: their pids are reused,
    # last freed first (pid 2 ended last at t=3)
    assert sorted(pids) == [(0, 0), (0, 1), (2, 0), (2, 1), (2, 2), (5, 2)]
    assert_clean(res)


def test_implicit_pid_is_kept_while_its_tree_lives(allocator_cls):
    # The request path reads a registered process's pid without checking that
    # its tree was recycled: a tree keeps its pid while any process of it lives,
    # however many other trees come and go (and have their pids recycled).
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(2, 1)] * 2, 0))
    seen = []

    def use(tag, hold):
        with res.request() as req:
            yield req
            seen.append((tag, req.pid, req.level))
            yield env.timeout(hold)

    def root():
        for k in range(3):
            with res.request() as req:
                yield req
                seen.append(("root", req.pid, req.level))
                yield env.process(use(f"child{k}", 1))  # joins the root's tree
            env.process(use(f"other{k}", 0))  # a tree of its own, recycled at once
            yield env.timeout(1)

    env.process(root())
    env.run()
    assert seen == [
        ("root", 0, 1), ("child0", 0, 2), ("other0", 1, 1),
        ("root", 0, 1), ("child1", 0, 2), ("other1", 1, 1),
        ("root", 0, 1), ("child2", 0, 2), ("other2", 1, 1),
    ]  # fmt: skip
    assert_clean(res)


# --------------------------------------------------------------- monitor
def test_monitor_matches_allocator_stats(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(1, 1), (1, 1)], 1), monitor=True)
    mismatches = []

    def snapshot():
        st = res.allocator.stats()
        held = (st["unreserved_held"], *st["held"])
        queued = (0, *st["pending"])
        return held, queued

    def user(pid, depth, start, hold):
        yield env.timeout(start)
        with res.request(pid, depth) as req:
            yield req
            yield env.timeout(hold)

    def checker():
        for _ in range(12):
            last = res.monitor.samples[-1]
            if (last.held, last.queued) != snapshot():
                mismatches.append((env.now, last, snapshot()))
            yield env.timeout(0.5)

    for pid, (depth, start, hold) in enumerate([(1, 0, 2), (1, 0, 3), (2, 1, 1), (1, 1, 1), (2, 1, 2)]):
        env.process(user(pid, depth, start, hold))
    env.process(checker())
    env.run()
    assert mismatches == []
    mon = res.monitor
    assert isinstance(mon, Monitor)
    n = len(mon.samples)
    assert mon.times.shape == (n,) and mon.held.shape == (n, 3) and mon.queued.shape == (n, 3)
    assert list(mon.times) == sorted(mon.times)
    assert mon.queued[:, 1].max() >= 1  # somebody waited at level 1
    assert mon.held[-1].tolist() == [0, 0, 0] and mon.queued[-1].tolist() == [0, 0, 0]
    ax = mon.plot()
    assert len(ax.lines) == 1 + 2 * 2
    assert_clean(res)


# ----------------------------------------------------------- deadlocks
def _nested_model(env, a, b, n):
    def handle(here, there, hops):
        with here.request() as req:
            yield req
            yield env.timeout(1)
            if hops:
                yield env.process(handle(there, here, hops - 1))

    for _ in range(n):
        env.process(handle(a, b, 1))
        env.process(handle(b, a, 1))


def test_find_deadlock_names_the_cycle_of_simpy_resources():
    env = simpy.Environment()
    a, b = simpy.Resource(env, capacity=1), simpy.Resource(env, capacity=1)
    a.name, b.name = "A", "B"
    _nested_model(env, a, b, 1)
    env.run()
    cycle = find_deadlock(env, [a, b])
    assert [(w.name, w.holds, w.waits_for) for w in cycle] == [
        ("handle#0", (), "A"),
        ("handle#2", ("A unit 0",), "process handle#1"),
        ("handle#1", (), "B"),
        ("handle#3", ("B unit 0",), "process handle#0"),
    ]
    assert [w.blocked_by for w in cycle] == ["handle#2", "handle#1", "handle#3", "handle#0"]
    assert all(w.process.is_alive for w in cycle)
    assert str(cycle[0]) == "handle#0 holds nothing; waits for A, held by handle#2"


def test_find_deadlock_on_a_shared_depth_resource(allocator_cls):
    # All TCBs unreserved (the status quo): DepthResource deadlocks too, and says why.
    env = simpy.Environment()
    a = DepthResource(env, allocator_cls([(0, 1)] * 2, 1), name="A")
    b = DepthResource(env, allocator_cls([(0, 1)] * 2, 1), name="B")
    _nested_model(env, a, b, 1)
    env.run()
    cycle = find_deadlock(env, [a, b])
    # the child of B's request (pid 1) waits at level 2 of A, held by A's
    # request (pid 0), which waits for its child, which waits for B ...
    assert [(w.pid, w.holds, w.waits_for) for w in cycle] == [
        (1, (), "A level 2"),
        (0, ("A tcb 0 (level 0)",), f"process {cycle[2].name}"),
        (0, (), "B level 2"),
        (1, ("B tcb 0 (level 0)",), f"process {cycle[0].name}"),
    ]
    assert a.allocator.pending() == 1 and b.allocator.pending() == 1


def test_depth_resource_completes_the_same_model(allocator_cls):
    env = simpy.Environment()
    a = DepthResource(env, allocator_cls([(1, 1)] * 2, 0), name="A")
    b = DepthResource(env, allocator_cls([(1, 1)] * 2, 0), name="B")
    _nested_model(env, a, b, 3)
    env.run()
    assert find_deadlock(env, [a, b]) == []
    # each server's one level-1 pool serves its three top-level requests in
    # turn, each for 2 time units (1 local, 1 nested on the other server)
    assert env.now == 3 * 2
    assert_clean(a)
    assert_clean(b)


def test_find_deadlock_rejects_other_objects():
    env = simpy.Environment()
    with pytest.raises(TypeError, match="neither"):
        find_deadlock(env, [object()])


def test_find_deadlock_reports_a_process_waiting_on_itself(allocator_cls):
    # pid 0 owns the only level-1 pool (one TCB) and asks for a second TCB at
    # level 1: it waits for its own pool, which only it can free.
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(1, 1)], 0), name="R")

    def greedy():
        with res.request(0) as first:
            yield first
            with res.request(0) as second:
                yield second

    env.process(greedy())
    env.run()
    cycle = find_deadlock(env, [res])
    assert [(w.name, w.pid, w.holds, w.waits_for, w.blocked_by) for w in cycle] == [
        ("greedy#0", 0, ("R tcb 0 (level 1)",), "R level 1", "greedy#0")
    ]


def test_interrupted_nested_request_leaves_nothing_behind(allocator_cls):
    # Implicit mode: a sub-process waiting at level 2 is interrupted; its tree
    # drops the request, the parent carries on, and the tree's pid is reused.
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(1, 1), (1, 1)], 0))
    log = []

    def child():
        try:
            with res.request() as req:
                yield req
                log.append("child got")
        except simpy.Interrupt:
            log.append((env.now, "child interrupted", res.allocator.pending()))

    def parent():
        with res.request() as req:
            yield req
            c = env.process(child())
            yield env.timeout(1)  # the child's level-2 request waits on the blocker
            c.interrupt()
            yield c
        log.append((env.now, "parent done", req.pid))

    def blocker():  # another tree holds the only level-2 pool for a while
        with res.request(7, depth=2) as req:
            yield req
            yield env.timeout(5)

    def later():
        yield env.timeout(10)
        with res.request() as req:
            yield req
            log.append((env.now, "later", req.pid))

    env.process(blocker())
    env.process(parent())
    env.process(later())
    env.run()
    assert log == [(1, "child interrupted", 0), (1, "parent done", 0), (10, "later", 0)]
    assert_clean(res)


def test_release_accepts_the_request_like_simpy(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(0, 1)], 1), name="R")
    other = DepthResource(env, allocator_cls([(0, 1)], 1), name="S")
    served = res.request(0)
    waiting = res.request(1)
    with pytest.raises(ValueError, match="not of S"):
        other.release(served)
    res.release(waiting)  # still waiting: cancelled
    assert res.allocator.pending() == 0 and not waiting.triggered
    res.release(served)
    with pytest.raises(pyresv.AllocatorError):
        res.release(served)  # released twice
    assert_clean(res)
