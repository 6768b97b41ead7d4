"""SimPy resources over the allocator: SimPy's semantics to the letter, and nesting without deadlock.

Tests marked with the ``make`` fixture run the same model on SimPy's own class
and on pyresv's, and assert one literal trace for both: SimPy is the oracle.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Iterator

import matplotlib
import pytest
import simpy
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from simpy.resources.resource import Preempted

import pyresv
import pyresv.adapters.simpy as simpy_adapter
from pyresv.adapters.simpy import (
    TESTED_SIMPY,
    DepthPreemptiveResource,
    DepthPriorityRequest,
    DepthPriorityResource,
    DepthRelease,
    DepthRequest,
    DepthResource,
    Monitor,
    find_deadlock,
)

matplotlib.use("Agg")

SIMPY = {"resource": simpy.Resource, "priority": simpy.PriorityResource, "preemptive": simpy.PreemptiveResource}
DEPTH = {"resource": DepthResource, "priority": DepthPriorityResource, "preemptive": DepthPreemptiveResource}


@contextlib.contextmanager
def python_path() -> Iterator[None]:
    """Resources made inside run the pure-Python path alone (not the compiled drop-in)."""
    saved = simpy_adapter._FlatCore
    simpy_adapter._FlatCore = None
    try:
        yield
    finally:
        simpy_adapter._FlatCore = saved


@pytest.fixture(params=["simpy", "depth", "depth-python"])
def make(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``make(env, capacity, kind="resource")``: SimPy's class, then pyresv's (default levels),
    then pyresv's on the pure-Python path alone."""
    table = SIMPY if request.param == "simpy" else DEPTH

    def build(env: simpy.Environment, capacity: int = 1, kind: str = "resource") -> Any:
        return table[kind](env, capacity=capacity)

    if request.param == "depth-python":
        with python_path():
            yield build
    else:
        yield build


def assert_clean(res: DepthResource) -> None:
    """Nothing left behind: no waiting request, no held TCB, invariants hold."""
    alloc = res.allocator
    alloc.check()
    assert alloc.pending() == 0
    assert all(alloc.holder(t) == -1 for t in range(alloc.total))
    assert res.count == 0 and res.users == [] and len(res.queue) == 0


def test_simpy_version_is_one_the_internals_were_checked_against():
    # The adapter reads SimPy internals (Environment._active_proc, Event._value ...).
    assert simpy.__version__ in TESTED_SIMPY, (
        f"SimPy {simpy.__version__} is not in TESTED_SIMPY {TESTED_SIMPY}: re-run SimPy's resource "
        "tests against pyresv's classes (README, SimPy section) and add it"
    )


# ------------------------------------------------------------ constructor
def test_capacity_form_holds_back_one_unit_per_deeper_level():
    env = simpy.Environment()
    res = DepthResource(env, capacity=6, levels=3)
    alloc = res.allocator
    assert (res.capacity, res.levels, alloc.total, alloc.levels) == (6, 3, 6, 3)
    # [0021]: one pool of one unit for each of levels 2 and 3, none for level 1; 4 unreserved
    assert alloc.depths == [(0, 1), (1, 1), (1, 1)] and alloc.unreserved == 4 and alloc.wake == "deepest"


def test_default_is_one_unit_one_level_like_simpy():
    env = simpy.Environment()
    res = DepthResource(env)
    assert (res.capacity, res.levels, res.allocator.unreserved) == (1, 1, 1)
    assert DepthResource(env, 3).capacity == 3  # positional, as simpy.Resource(env, 3)


@pytest.mark.parametrize("cls", [DepthResource, DepthPriorityResource, DepthPreemptiveResource])
@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive_with_simpys_message(cls, capacity):
    env = simpy.Environment()
    with pytest.raises(ValueError, match=re.escape('"capacity" must be > 0.')):
        cls(env, capacity=capacity)
    with pytest.raises(ValueError, match=re.escape('"capacity" must be > 0.')):
        SIMPY["resource"](env, capacity=capacity)  # the message is SimPy's


def test_capacity_below_levels_names_both():
    env = simpy.Environment()
    with pytest.raises(ValueError, match=r'"capacity" \(2\) must be >= "levels" \(3\)'):
        DepthResource(env, capacity=2, levels=3)
    assert DepthResource(env, capacity=3, levels=3).allocator.unreserved == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 1.5}, '"capacity" must be an int'),
        ({"capacity": "3"}, '"capacity" must be an int'),
        ({"capacity": True}, '"capacity" must be an int'),
        ({"capacity": 3, "levels": 0}, '"levels" must be an int >= 1'),
        ({"capacity": 3, "levels": 2.0}, '"levels" must be an int >= 1'),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DepthResource(simpy.Environment(), **kwargs)


def test_allocator_form_takes_its_levels_from_the_allocator(allocator_cls):
    env = simpy.Environment()
    alloc = allocator_cls([(1, 2)] * 2, 1)
    res = DepthResource(env, alloc)
    assert res.allocator is alloc and res.capacity == 5 and res.levels == 2
    with pytest.raises(ValueError, match="levels comes from the allocator"):
        DepthResource(env, allocator_cls([(1, 1)], 1), levels=2)


# ------------------------------------------------- SimPy's semantics, traces
def test_trace_fifo_and_slots(make):
    env = simpy.Environment()
    res = make(env, 2)
    log = []

    def user(name, hold):
        log.append((env.now, name, "ask"))
        with res.request() as req:
            value = yield req
            log.append((env.now, name, "got", value, res.count, len(res.queue)))
            yield env.timeout(hold)
        log.append((env.now, name, "done"))

    for i, hold in enumerate([3, 1, 1, 1]):
        env.process(user(f"p{i}", hold))
    env.run()
    assert log == [
        (0, "p0", "ask"), (0, "p1", "ask"), (0, "p2", "ask"), (0, "p3", "ask"),
        (0, "p0", "got", None, 2, 2), (0, "p1", "got", None, 2, 2),
        (1, "p1", "done"), (1, "p2", "got", None, 2, 1),
        (2, "p2", "done"), (2, "p3", "got", None, 2, 0),
        (3, "p0", "done"), (3, "p3", "done"),
    ]  # fmt: skip


def test_a_waiter_is_served_at_the_next_trigger_point_not_at_release(make):
    # SimPy frees the unit at release() but grants it to the head of the queue
    # only when the Release event is processed (or a request is made first):
    # an event scheduled between the two runs before the waiter resumes.
    env = simpy.Environment()
    res = make(env, 1)
    log = []

    def holder():
        with res.request() as req:
            yield req
            yield env.timeout(1)
            env.process(observer())  # scheduled before the Release event
        log.append((env.now, "released", res.count, len(res.queue)))

    def observer():
        log.append((env.now, "observer", res.count, len(res.queue)))
        yield env.timeout(0)

    def waiter():
        with res.request() as req:
            yield req
            log.append((env.now, "waiter got", res.count, len(res.queue)))

    env.process(holder())
    env.process(waiter())
    env.run()
    assert log == [
        (1, "released", 0, 1),
        (1, "observer", 0, 1),  # unit free, waiter still queued: its trigger point is later
        (1, "waiter got", 1, 0),
    ]


def test_a_new_request_is_a_trigger_point_for_the_head(make):
    # The child releases and asks again at once: the other child, waiting at
    # the head, gets the unit when the new request is made (SimPy's
    # test_resource_immediate_requests, as a whole trace).
    env = simpy.Environment()
    res = make(env, 1)
    log = []

    def child(name):
        for _ in range(3):
            with res.request() as req:
                yield req
                log.append((env.now, name))
                yield env.timeout(1)

    env.process(child("a"))
    env.process(child("b"))
    env.run()
    assert log == [(0, "a"), (1, "b"), (2, "a"), (3, "b"), (4, "a"), (5, "b")]


def test_the_head_is_served_when_a_request_is_made_before_the_release_is_processed(make):
    # The holder releases, asks again at once (serving the waiting head then,
    # not when the release is processed), and yields a timeout(0): the head
    # resumes first.
    env = simpy.Environment()
    res = make(env, 1)
    log = []

    def holder():
        first = res.request()
        yield first
        yield env.timeout(1)
        res.release(first)
        again = res.request()  # the head (waiter) is granted here
        yield env.timeout(0)
        log.append((env.now, "holder", again.triggered))
        res.release(again)

    def waiter():
        with res.request() as req:
            yield req
            log.append((env.now, "waiter got"))

    env.process(holder())
    env.process(waiter())
    env.run()
    assert log == [(1, "waiter got"), (1, "holder", False)]


def test_a_new_request_queues_behind_a_waiter_whose_unit_was_freed_but_not_yet_served(make):
    # Both units are released while A waits; B is made before the Release
    # events are processed. SimPy appends B to the queue and serves the head
    # (A) at B's request, and B when the first Release event is processed: B
    # never overtakes A, although a unit is free when B asks.
    env = simpy.Environment()
    res = make(env, 2)
    log = []

    def holder():
        with res.request() as req:
            yield req
            yield env.timeout(1)

    def user(name):
        req = res.request()
        log.append((env.now, name, "ask", res.count, len(res.queue)))
        yield req
        log.append((env.now, name, "got", res.count, len(res.queue)))
        yield env.timeout(1)
        yield res.release(req)

    def spawner():
        env.process(holder())
        env.process(holder())
        yield env.timeout(1)
        env.process(user("A"))  # both units busy: A waits
        yield env.timeout(0)
        env.process(user("B"))  # both holders released, their Release events not processed yet

    env.process(spawner())
    env.run()
    assert log == [
        (1, "A", "ask", 2, 1),
        (1, "B", "ask", 1, 1),  # A is a user now (served at B's request), B queued
        (1, "A", "got", 2, 0),
        (1, "B", "got", 2, 0),
    ]


@pytest.mark.parametrize("cls", [DepthResource, DepthPriorityResource, DepthPreemptiveResource])
def test_with_levels_a_new_request_never_overtakes_an_older_waiter(cls):
    # The same model with levels=2 (two unreserved units, one held back for
    # level 2): the freed unreserved units go to A, then to B, in arrival order.
    env = simpy.Environment()
    res = cls(env, capacity=3, levels=2)
    log = []

    def holder():
        with res.request() as req:
            yield req
            yield env.timeout(1)

    def user(name):
        with res.request() as req:
            yield req
            log.append((env.now, name, req.level))
            yield env.timeout(1)

    def spawner():
        env.process(holder())
        env.process(holder())
        yield env.timeout(1)
        env.process(user("A"))
        yield env.timeout(0)
        env.process(user("B"))

    env.process(spawner())
    env.run()
    assert log == [(1, "A", 1), (1, "B", 1)]
    assert_clean(res)

def test_same_number_of_events_as_simpy(make):
    # SimPy's benchmark model counts events: a request and a release are one
    # event each, like SimPy's Request and Release.
    env = simpy.Environment()
    res = make(env, 2)

    def worker():
        while True:
            with res.request() as req:
                yield req
                yield env.timeout(1)

    for _ in range(5):
        env.process(worker())
    env.run(until=15)
    assert next(env._eid) == 95


def test_request_outside_a_process(make):
    env = simpy.Environment()
    res = make(env, 1)
    first, second = res.request(), res.request()
    assert first.triggered and first.proc is None and not second.triggered
    assert res.users == [first] and list(res.queue) == [second]
    rel = res.release(first)
    assert rel.triggered and not second.triggered  # granted when the release is processed
    env.step()  # first's own event
    assert not second.triggered
    env.step()  # the release: a trigger point
    assert second.triggered and res.users == [second] and list(res.queue) == []


def test_release_returns_a_yieldable_event(make):
    env = simpy.Environment()
    res = make(env, 1)
    log = []

    def user():
        req = res.request()
        got = yield req
        rel = res.release(req)
        done = yield rel
        log.append((env.now, got, done, rel.request is req, rel.triggered, res.count))

    env.process(user())
    env.run()
    assert log == [(0, None, None, True, True, 0)]


def test_release_event_types():
    env = simpy.Environment()
    res = DepthResource(env, capacity=1)
    req = res.request()
    assert isinstance(req, DepthRequest) and isinstance(req, simpy.Event)
    rel = res.release(req)
    assert isinstance(rel, DepthRelease) and rel.resource is res and rel.proc is None
    assert res.get_queue == [] and res.put_queue == [] and res.queue == []


def test_second_release_is_a_no_op(make):
    # Issue 11: the second release of a request freed the unit another process
    # held by then, and a capacity-1 resource served two processes at once.
    env = simpy.Environment()
    res = make(env, 1)
    log = []

    def a():
        req = res.request()
        yield req
        yield env.timeout(1)
        yield res.release(req)
        yield env.timeout(1)  # b holds the unit now
        yield res.release(req)  # again: nothing happens
        log.append((env.now, "a released twice", res.count, len(res.queue)))

    def b():
        with res.request() as req:
            yield req
            log.append((env.now, "b got"))
            yield env.timeout(5)
        log.append((env.now, "b done"))

    def c():
        yield env.timeout(2)
        with res.request() as req:
            yield req
            log.append((env.now, "c got", res.count))

    env.process(a())
    env.process(b())
    env.process(c())
    env.run()
    assert log == [(1, "b got"), (2, "a released twice", 1, 1), (6, "b done"), (6, "c got", 1)]


def test_second_release_leaves_the_allocator_alone(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(0, 1)], 1))
    a = res.request()
    b = res.request()
    res.release(a)
    env.run()
    assert b.triggered and res.users == [b]
    res.release(a)
    res.release(a)
    assert res.users == [b] and res.allocator.holder(b.tcb) >= 0
    res.allocator.check()
    res.release(b)
    env.run()
    assert_clean(res)


def test_release_of_a_waiting_or_foreign_request_is_a_no_op(make):
    env = simpy.Environment()
    res, other = make(env, 1), make(env, 1)
    held, waiting = res.request(), res.request()
    foreign = other.request()
    res.release(waiting)  # SimPy: not a user, nothing happens (it still waits)
    res.release(foreign)
    env.run()
    assert list(res.users) == [held] and list(res.queue) == [waiting] and list(other.users) == [foreign]
    res.release(held)
    env.run()
    assert waiting.triggered and list(res.users) == [waiting]


def test_release_by_tcb_needs_a_user(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(0, 1)], 2), name="R")
    req = res.request(0)
    before = res.allocator.stats()
    with pytest.raises(pyresv.AllocatorError, match="TCB 1 is not held by a user of R"):
        res.release(1)
    assert res.allocator.stats() == before
    res.release(req.tcb)
    assert res.users == [] and req.tcb is None
    assert_clean(res)


def test_immediate_requests_do_not_enter_the_queue(make):
    env = simpy.Environment()
    res = make(env, 1)
    first = res.request()
    assert first.triggered and len(res.users) == 1 and len(res.queue) == 0
    second = res.request()
    assert not second.triggered and len(res.users) == 1 and len(res.queue) == 1


def test_users_queue_count_over_time(make):
    env = simpy.Environment()
    res = make(env, 1)

    def user():
        with res.request() as req:
            yield req
            yield env.timeout(1)

    procs = [env.process(user()) for _ in range(3)]
    seen = []
    for until in (1, 2, 3):
        env.run(until=until)
        seen.append(([r.proc for r in res.users], [r.proc for r in res.queue], res.count))
    assert seen == [([procs[0]], procs[1:], 1), ([procs[1]], procs[2:], 1), ([procs[2]], [], 1)]
    assert res.capacity == 1


@pytest.mark.parametrize("kind", ["resource", "priority"])
def test_users_and_queue_are_live_like_simpys_lists(make, kind):
    env = simpy.Environment()
    res = make(env, 1, kind)
    users, queue = res.users, res.queue
    assert queue is res.put_queue and len(res.get_queue) == 0
    a = res.request()
    b = res.request()
    assert (list(users), list(queue), len(users), len(queue)) == ([a], [b], 1, 1)
    assert users == [a] and users[0] is a and b in queue and a not in queue
    res.release(a)
    env.run()
    assert (list(users), len(queue)) == ([b], 0)


def test_leaving_the_with_block_cancels_a_waiting_request(make):
    env = simpy.Environment()
    res = make(env, 1)
    log = []

    def holder():
        with res.request() as req:
            yield req
            yield env.timeout(5)

    def impatient():
        with res.request() as req:
            got = yield req | env.timeout(1)
            log.append((env.now, req in got, len(res.queue)))
        log.append((env.now, "left", len(res.queue)))

    def later():
        yield env.timeout(2)
        with res.request() as req:
            yield req
            log.append((env.now, "later got"))

    env.process(holder())
    env.process(impatient())
    env.process(later())
    env.run()
    assert log == [(1, False, 1), (1, "left", 0), (5, "later got")]


def test_interrupt_while_waiting_in_a_with_block_cancels(make):
    env = simpy.Environment()
    res = make(env, 1)
    log = []

    def holder():
        with res.request() as req:
            yield req
            yield env.timeout(5)
        log.append((env.now, "holder done", len(res.queue)))

    def waiter():
        try:
            with res.request() as req:
                yield req
                log.append((env.now, "waiter got"))
        except simpy.Interrupt as exc:
            log.append((env.now, "interrupted", exc.cause, len(res.queue)))

    def boss(victim):
        yield env.timeout(1)
        victim.interrupt("enough")

    env.process(holder())
    env.process(boss(env.process(waiter())))
    env.run()
    assert log == [(1, "interrupted", "enough", 0), (5, "holder done", 0)]


def test_interrupt_outside_a_with_block_keeps_the_request(make):
    # SimPy's test_resource_continue_after_interrupt: the request still waits.
    env = simpy.Environment()
    res = make(env, 1)
    log = []

    def holder():
        with res.request() as req:
            yield req
            yield env.timeout(1)

    def victim():
        req = res.request()
        try:
            yield req
        except simpy.Interrupt:
            log.append((env.now, "interrupted", len(res.queue)))
            yield req
            log.append((env.now, "got it anyway"))
            res.release(req)

    env.process(holder())
    v = env.process(victim())
    env.process((lambda: (v.interrupt(), (yield env.timeout(0))))())  # noqa: PLC3002
    env.run()
    assert log == [(0, "interrupted", 1), (1, "got it anyway")]


def test_interrupt_after_grant_releases_on_leaving(make):
    # The holder's release is processed at t=1 and grants the waiter; the boss,
    # resumed when the holder ends (after that), interrupts the waiter before
    # its request event is processed: leaving the block releases the unit.
    env = simpy.Environment()
    res = make(env, 1)
    seen = []

    def holder():
        with res.request() as req:
            yield req
            yield env.timeout(1)

    def waiter():
        try:
            with res.request() as req:
                yield req
                seen.append("got")
        except simpy.Interrupt:
            seen.append(("interrupted", req.triggered, res.count))
        seen.append(("left", res.count))

    def boss(victim, holding):
        yield holding
        victim.interrupt()

    h = env.process(holder())
    env.process(boss(env.process(waiter()), h))
    env.run()
    assert seen == [("interrupted", True, 0), ("left", 0)]  # granted, and released on leaving


def test_exception_in_the_block_releases(make):
    env = simpy.Environment()
    res = make(env, 1)
    log = []

    def user(name, fail):
        try:
            with res.request() as req:
                yield req
                yield env.timeout(1)
                log.append((env.now, name))
                if fail:
                    raise KeyError(name)
        except KeyError:
            log.append((env.now, "caught", name))

    env.process(user("a", True))
    env.process(user("b", False))
    env.run()
    assert log == [(1, "a"), (1, "caught", "a"), (2, "b")]


def test_cancel_twice_is_harmless():
    env = simpy.Environment()
    res = DepthResource(env, capacity=1)
    held, waiting = res.request(), res.request()
    waiting.cancel()
    waiting.cancel()
    assert res.queue == [] and res.users == [held]
    res.release(held)
    env.run()
    assert not waiting.triggered and res.count == 0


# -------------------------------------------------------- per-request cancel
def test_cancelling_one_request_keeps_the_others_place(allocator_cls):
    # pid 7 has two requests, a then b; pid 8's c arrived after both. Cancelling
    # a leaves b where it was: ahead of c (the allocator cancels just a).
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(0, 1)], 1))
    held = res.request(0)
    a, b, c = res.request(7), res.request(7), res.request(8)
    a.cancel()
    assert res.allocator.pending() == 2 and res.allocator.pending(7) == 1
    assert res.queue == [b, c]
    res.allocator.check()
    res.release(held)
    env.run()
    assert b.triggered and not c.triggered and not a.triggered
    res.release(b)
    env.run()
    assert c.triggered
    res.release(c)
    env.run()
    assert_clean(res)


@pytest.mark.parametrize("wake", ["deepest", "fifo"])
def test_grant_reaches_the_request_the_allocator_served(allocator_cls, wake):
    # One pid waits at two levels; a freed unreserved TCB goes by the wake
    # policy (FIG 6B block 620), and the adapter triggers that request.
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(0, 1), (0, 1)], 1, wake=wake))
    held = res.request(0)
    shallow = res.request(5, depth=1)
    deep = res.request(5, depth=2)
    res.release(held)
    env.run()
    winner, loser = (deep, shallow) if wake == "deepest" else (shallow, deep)
    assert winner.triggered and not loser.triggered
    loser.cancel()
    res.release(winner)
    env.run()
    assert_clean(res)


def test_cancelling_a_granted_but_unserved_request_passes_the_unit_on(allocator_cls):
    # b is granted at release but served only when the release is processed;
    # cancelled before that, its unit goes to c at that trigger point.
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(0, 1)], 1))
    a, b, c = res.request(0), res.request(1), res.request(2)
    res.release(a)
    b.cancel()
    assert res.queue == [c] and not c.triggered
    env.run()
    assert c.triggered and not b.triggered and res.users == [c]
    res.release(c)
    env.run()
    assert_clean(res)


def test_release_wakes_a_whole_pool_in_grant_order(allocator_cls):
    # One release hands a wholly free pool to a seeker, which serves several
    # of its requests at once (FIG 6A 606-610); they trigger in grant order.
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(1, 3)], 0))
    first = res.request(0)
    reqs = [res.request(1) for _ in range(3)]
    res.release(first)
    env.run()
    assert [r.tcb for r in reqs] == [0, 1, 2] and res.users == reqs
    for r in reqs:
        res.release(r)
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
    assert res.allocator.stats() == before and res.users == [keep] and res.queue == []
    res.release(keep)
    env.run()
    assert_clean(res)


def test_priority_bad_requests_leave_state_unchanged():
    env = simpy.Environment()
    res = DepthPriorityResource(env, capacity=2, levels=2)
    keep = res.request(priority=1)
    before = res.allocator.stats()
    for kwargs, match in [
        ({"pid": -1}, "pid -1 out of range"),
        ({"pid": 0, "depth": 3}, "depth 3 out of range"),
        ({"pid": 0, "depth": 2, "remote": True}, "needs level 3"),
    ]:
        with pytest.raises(ValueError, match=match):
            res.request(**kwargs)
    assert res.allocator.stats() == before and res.users == [keep] and res.queue == []


def test_implicit_nesting_too_deep_raises_on_an_allocator_of_your_own(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(1, 1)], 1), name="R")
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


def test_nesting_deeper_than_levels_is_served_at_the_deepest_level():
    env = simpy.Environment()
    res = DepthResource(env, capacity=3, levels=2)
    levels = []

    def nest(k):
        with res.request() as req:
            yield req
            levels.append(req.level)
            if k:
                yield env.process(nest(k - 1))

    env.process(nest(2))
    env.run()
    assert levels == [1, 2, 2]
    assert_clean(res)


# ----------------------------------------------------- implicit pid/level
def test_implicit_levels_follow_nesting(allocator_cls):
    env = simpy.Environment()
    a = DepthResource(env, allocator_cls([(2, 1)] * 3, 0), name="A")
    b = DepthResource(env, allocator_cls([(2, 1)] * 3, 0), name="B")
    log = []

    def leaf(res, tag):
        with res.request() as req:
            yield req
            log.append((tag, res.name, req.pid, req.level, res.allocator.level_of(req.tcb)))
            yield env.timeout(1)

    def root(tag):
        with a.request() as req:
            yield req
            log.append((tag, "A", req.pid, req.level, 1))
            # nested through a sub-process, then in the same process
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
    assert_clean(a)
    assert_clean(b)


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
    assert sorted(pids) == [(0, 0), (0, 1), (2, 0), (2, 1), (2, 2), (5, 2)]
    assert_clean(res)


def test_requests_outside_a_process_have_their_own_owner():
    env = simpy.Environment()
    res = DepthResource(env, capacity=4, levels=2)
    a, b = res.request(), res.request()
    assert a.pid != b.pid and a.level == b.level == 1
    res.release(a)
    res.release(b)
    env.run()
    c = res.request()
    assert c.pid in (a.pid, b.pid)  # recycled once released
    res.release(c)
    env.run()
    assert_clean(res)


def test_interrupted_nested_request_leaves_nothing_behind(allocator_cls):
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


# ------------------------------------------ random models: SimPy is the oracle
#: One use of the resource by a process: how it asks, holds, gives up and releases.
_USE = st.fixed_dictionaries({
    # "with": a with block; "release"/"release-nowait": res.release(req), yielded or not;
    # "cancel-only": on reneging only req.cancel() (a unit granted in the same step leaks, as in SimPy).
    "mode": st.sampled_from(["with", "release", "release-nowait", "cancel-only"]),
    "hold": st.sampled_from([None, 0, 1, 2]),  # None: released without yielding
    "patience": st.sampled_from([None, None, 0, 1, 2]),  # reneging: yield req | env.timeout(patience)
    "gap": st.sampled_from([None, 0, 1]),  # a timeout before the next use
    "priority": st.integers(0, 2),
    "preempt": st.booleans(),
})
#: A process: when the spawner starts it (None: in the same step as the previous one,
#: 0: after a timeout(0)), and its uses one after the other.
_USER = st.tuples(st.sampled_from([None, 0, 1, 2]), st.lists(_USE, min_size=1, max_size=3))


def _run_random_model(
    cls: Any, kind: str, capacity: int, users: list[Any], environment: Callable[[], Any] = simpy.Environment
) -> list[tuple[Any, ...]]:
    """The whole trace of a random model: every ask, grant, renege, preemption and release,
    with the resource's users and queue (as the requests' tags) at that moment."""
    env = environment()
    res = cls(env, capacity=capacity)
    log: list[tuple[Any, ...]] = []
    names: dict[Any, str] = {}  # process -> name
    tags: dict[Any, str] = {}  # request -> tag

    def note(tag: str, *what: Any) -> None:
        users = tuple(tags.get(u, "?") for u in res.users)
        log.append((env.now, tag, *what, users, tuple(tags.get(q, "?") for q in res.queue)))

    def ask(use: dict[str, Any], tag: str) -> Any:
        if kind == "resource":
            req = res.request()
        else:
            req = res.request(priority=use["priority"], preempt=use["preempt"])
        tags[req] = tag
        return req

    def wait(tag: str, req: Any, patience: int | None) -> Any:
        if patience is None:
            yield req
            return True
        got = yield req | env.timeout(patience)
        if req in got:
            return True
        note(tag, "reneged")
        return False

    def hold(tag: str, use: dict[str, Any]) -> Any:
        note(tag, "got")
        try:
            if use["hold"] is not None:
                yield env.timeout(use["hold"])
        except simpy.Interrupt as ir:
            note(tag, "preempted", names.get(ir.cause.by), ir.cause.usage_since)

    def user(name: str, uses: list[dict[str, Any]]) -> Any:
        try:
            for i, use in enumerate(uses):
                tag = f"{name}{i}"
                mode = use["mode"]
                if mode == "with":
                    with ask(use, tag) as req:
                        note(tag, "ask")
                        if (yield from wait(tag, req, use["patience"])):
                            yield from hold(tag, use)
                else:
                    req = ask(use, tag)
                    note(tag, "ask")
                    if (yield from wait(tag, req, use["patience"])):
                        yield from hold(tag, use)
                    else:
                        req.cancel()
                        if mode == "cancel-only":
                            continue
                    if mode == "release-nowait":
                        res.release(req)
                    else:
                        yield res.release(req)
                note(tag, "released")
                if use["gap"] is not None:
                    yield env.timeout(use["gap"])
        except simpy.Interrupt as ir:  # preempted while holding a leaked unit
            note(name, "interrupted", names.get(ir.cause.by))

    def spawner() -> Any:
        for i, (start, uses) in enumerate(users):
            if start is not None:
                yield env.timeout(start)
            name = chr(ord("a") + i)
            names[env.process(user(name, uses))] = name

    env.process(spawner())
    try:
        env.run()
    except RuntimeError as e:
        # The model preempted a unit leaked by a process that ended (or by the
        # preemptor itself): SimPy crashes, and so must the drop-in. What is
        # left of a crashed environment is no part of SimPy's contract.
        log.append(("error", re.sub(r"0x[0-9a-f]+", "0x..", str(e))))
    else:
        note("end")
    return log


#: A plain use: ask in a with block, release at once.
_PLAIN = {"mode": "with", "hold": None, "patience": None, "gap": None, "priority": 0, "preempt": False}


@pytest.mark.parametrize("kind", ["resource", "priority", "preemptive"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capacity=st.integers(1, 3), users=st.lists(_USER, min_size=1, max_size=7))
# The smallest model this test found before new requests queued behind the
# granted waiters (b1 overtook c0); run every time.
@example(capacity=2, users=[(None, [_PLAIN]), (None, [_PLAIN] * 3), (None, [_PLAIN])])
def test_random_models_give_simpys_trace(kind, capacity, users):
    # Random arrivals (several in one step, some after a timeout(0)), holds,
    # releases by leaving a with block or by release(), reneging with
    # req | env.timeout(x), preemption: the whole trace is SimPy's.
    expected = _run_random_model(SIMPY[kind], kind, capacity, users)
    assert _run_random_model(DEPTH[kind], kind, capacity, users) == expected
    if kind == "resource":  # the drop-in's pure-Python path too (the compiled one runs above)
        with python_path():
            assert _run_random_model(DepthResource, kind, capacity, users) == expected


# ------------------------------------------------------- the compiled drop-in
try:
    from pyresv._core import _simpy_fast  # noqa: F401

    COMPILED = True
except ImportError:
    COMPILED = False


@pytest.mark.skipif(not COMPILED, reason="the core is not built")
def test_the_drop_in_form_runs_compiled_and_nothing_else_does():
    # DepthResource(env, capacity=N) over the compiled core: request(), the requests'
    # __exit__ and the trigger event run in pyresv._core._simpy_fast. Every other form
    # (levels, a monitor, the priority classes, another allocator class, a subclass
    # with its own request or release, an environment with its own schedule) keeps
    # the pure-Python path.
    env = simpy.Environment()
    res = DepthResource(env, capacity=2)
    assert type(res._rel).__name__ == "FlatCore" and res.request.__self__ is res._rel
    req = res.request()
    assert req._core is res._rel and req.tcb == 0 and res.users == [req]
    explicit = res.request(0)  # a named pid: the pure-Python path, on the same resource
    assert not hasattr(explicit, "_core") and res.users == [req, explicit]

    class Counting(DepthResource):
        calls = 0

        def request(self, pid=None, depth=None, remote=False):
            Counting.calls += 1
            return super().request(pid, depth, remote)

    class OwnRelease(DepthResource):
        def release(self, request):
            return super().release(request)

    class OwnSchedule(simpy.Environment):
        def schedule(self, event, priority=1, delay=0):
            super().schedule(event, priority, delay)

    others = [
        OwnRelease(env, capacity=2),
        DepthResource(OwnSchedule(), capacity=2),
        DepthResource(env, capacity=2, levels=2),
        DepthResource(env, capacity=2, monitor=True),
        DepthPriorityResource(env, capacity=2),
        DepthPreemptiveResource(env, capacity=2),
        DepthResource(env, pyresv.reference.DepthPoolAllocator([(0, 1)], 2)),
        Counting(env, capacity=2),
    ]
    for other in others:
        assert type(other._rel).__name__ == "_Count", other
    with others[-1].request():
        pass
    assert Counting.calls == 1


@pytest.mark.skipif(not COMPILED, reason="the core is not built")
def test_the_compiled_request_is_refused_while_the_allocator_is_busy():
    # The compiled request() calls the allocator's C functions, past the method's
    # busy check: it makes that check itself (AllocatorError, nothing changed).
    from pyresv._core import allocator as core

    env = simpy.Environment()
    res = DepthResource(env, capacity=1)
    user = res.request()
    errors: list[str] = []

    def once() -> None:
        core._set_read_hook(None)
        with pytest.raises(pyresv.AllocatorError, match="busy") as info:
            res.request()
        errors.append(str(info.value))

    core._set_read_hook(once)
    try:
        res.allocator.take_grants()
    finally:
        core._set_read_hook(None)
    assert len(errors) == 1 and res.users == [user] and len(res.queue) == 0
    assert res.allocator.pending() == 0 and res.request() in res.queue


_TIMES = st.sampled_from([0, 1, 2, 0.0, 1.0, 1.5, -0.0, float("nan"), float("inf"), True, 10**30])


@pytest.mark.skipif(not COMPILED, reason="the core is not built")
@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.one_of(st.tuples(_TIMES, st.sampled_from([0, 1, 1.0]), st.integers(0, 3)),
                              st.just("pop"), st.just("odd")), max_size=60))
def test_the_compiled_push_is_heapqs(ops):
    # SimPy's event queue takes the fast path's pushes and heapq's pops: the push must
    # leave the list exactly as heapq.heappush would, whatever the entries (ints,
    # floats, NaN, the same time object, equal keys, other shapes compared by Python).
    import heapq

    from pyresv._core._simpy_fast import heappush

    nan = float("nan")
    ours: list[Any] = []
    theirs: list[Any] = []
    eid = 0
    for op in ops:
        if op == "pop":
            if theirs:
                assert heapq.heappop(ours) is heapq.heappop(theirs)
            continue
        if op == "odd":
            entry: Any = (eid,)  # another shape: compared as a whole
        else:
            time, prio, dup = op
            if time != time:
                time = nan  # one NaN object: equal to itself by identity, as in a tuple compare
            entry = (time, prio, eid - dup if dup else eid, eid)
        eid += 1
        try:
            heapq.heappush(theirs, entry)
        except TypeError:
            with pytest.raises(TypeError):
                heappush(ours, entry)
            return
        heappush(ours, entry)
        assert [id(e) for e in ours] == [id(e) for e in theirs]


def _request_attributes(python: bool) -> list[tuple[Any, ...]]:
    """What a model sees of its requests at every step, on one path of the drop-in form."""
    log: list[tuple[Any, ...]] = []

    def user(env: simpy.Environment, res: Any, i: int) -> Any:
        for k in range(3):
            with res.request() as req:
                log.append((env.now, i, "ask", req.triggered, req.tcb, req.usage_since, req.pid, req.level))
                yield req
                log.append((env.now, i, "got", req.value, req.ok, req.tcb, req.usage_since, res.count,
                            len(res.queue), [u.tcb for u in res.users]))
                yield env.timeout(k % 2)
            log.append((env.now, i, "out", req.tcb, req.usage_since, res.count, len(res.queue)))

    with python_path() if python else contextlib.nullcontext():
        env = simpy.Environment()
        res = DepthResource(env, capacity=2)
    for i in range(5):
        env.process(user(env, res, i))
    env.run()
    assert_clean(res)
    return log


def test_the_compiled_and_python_paths_make_the_same_requests():
    # Not only the trace: every attribute a model can read of its requests.
    assert _request_attributes(python=False) == _request_attributes(python=True)


@pytest.mark.skipif(not COMPILED, reason="the core is not built")
def test_the_compiled_exit_refuses_another_type_as_self():
    # DepthRequest.__exit__ is a compiled module function, not a method: it checks
    # self's type itself before reading its slots (a method descriptor's TypeError).
    env = simpy.Environment()
    theirs = simpy.Resource(env, capacity=1)
    req = theirs.request()
    for other in (object(), req):
        with pytest.raises(TypeError, match=f"doesn't apply to a '{type(other).__name__}' object"):
            DepthRequest.__exit__(other, None, None, None)
    assert theirs.users == [req]
    # A subclass of DepthRequest is one (its base's slots stay where they are).
    res = DepthPriorityResource(env, capacity=1)
    with res.request() as mine:
        assert res.users == [mine]
    assert res.users == []


@pytest.mark.parametrize("core", [object(), None, "del"])
def test_a_request_whose_core_was_replaced_leaves_through_the_python_path(core):
    # _core is a slot a model can write: anything but the resource's own compiled
    # path makes __exit__ the pure-Python one, which does not read it.
    env = simpy.Environment()
    res = DepthResource(env, capacity=1)
    first, second = res.request(), res.request()
    if core == "del":
        del first._core
    else:
        first._core = core
    first.__exit__(None, None, None)
    env.run()
    assert res.users == [second] and second.triggered and len(res.queue) == 0
    second.__exit__(None, None, None)
    env.run()
    assert_clean(res)


class TracingEnv(simpy.Environment):
    """An environment that logs every schedule() call: the event's kind (SimPy's
    class name, ``Depth`` left out), its priority and delay, and the time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[tuple[Any, ...]] = []

    def schedule(self, event: Any, priority: Any = 1, delay: Any = 0) -> None:
        kind = type(event).__name__.replace("Depth", "").replace("PriorityRequest", "Request")
        self.log.append((self._now, kind, priority, delay))
        super().schedule(event, priority, delay)


@pytest.mark.parametrize("kind", ["resource", "priority", "preemptive"])
def test_an_environment_overriding_schedule_sees_every_event_as_with_simpy(make, kind):
    # A tracing (or checking) environment sees each event of the resource through
    # its schedule(), as with simpy.Resource; the drop-in pushes onto the event
    # queue itself only for an environment that keeps SimPy's schedule().
    def run(build: Callable[..., Any]) -> list[tuple[Any, ...]]:
        env = TracingEnv()
        res = build(env, 2, kind)

        def user(i: int) -> Any:
            yield env.timeout(i % 2)
            with res.request() as req:
                yield req
                yield env.timeout(1)
            req = res.request()
            yield req
            yield res.release(req)

        for i in range(5):
            env.process(user(i))
        env.run()
        return env.log

    theirs = run(lambda env, capacity, kind: SIMPY[kind](env, capacity=capacity))
    assert len(theirs) == 40
    assert run(make) == theirs


# Same random models as test_random_models_give_simpys_trace, in a tracing environment.
@pytest.mark.parametrize("kind", ["resource", "priority"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capacity=st.integers(1, 3), users=st.lists(_USER, min_size=1, max_size=6))
def test_random_models_schedule_simpys_events_in_an_environment_overriding_schedule(kind, capacity, users):
    def run(cls: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        envs: list[TracingEnv] = []

        def tracing() -> TracingEnv:
            envs.append(TracingEnv())
            return envs[-1]

        trace = _run_random_model(cls, kind, capacity, users, tracing)
        return trace, envs[0].log

    expected = run(SIMPY[kind])
    assert run(DEPTH[kind]) == expected
    if kind == "resource":
        with python_path():
            assert run(DepthResource) == expected


@pytest.mark.parametrize("kind", ["resource", "priority", "preemptive"])
def test_a_subclass_overriding_release_sees_every_with_exit(make, kind):
    # SimPy's Request.__exit__ calls resource.release(request): a subclass that
    # overrides release() sees every release, by with block or by hand.
    def run(build: Callable[..., Any]) -> list[tuple[Any, ...]]:
        env = simpy.Environment()
        base = type(build(env, 1, kind))
        log: list[tuple[Any, ...]] = []
        names: dict[Any, str] = {}

        class Counting(base):  # type: ignore[misc,valid-type]
            def release(self, request: Any) -> Any:
                log.append((env.now, names[request], request.triggered))
                return super().release(request)

        res = Counting(env, capacity=1)

        def user(i: int) -> Any:
            with res.request() as req:
                names[req] = f"w{i}"
                yield req
                yield env.timeout(1)
            req = res.request()
            names[req] = f"r{i}"
            yield req
            yield res.release(req)

        for i in range(3):
            env.process(user(i))
        env.run()
        assert res.count == 0 and len(res.queue) == 0
        return log

    theirs = run(lambda env, capacity, kind: SIMPY[kind](env, capacity=capacity))
    assert len(theirs) == 6
    assert run(make) == theirs


@pytest.mark.parametrize("kind", ["resource", "priority", "preemptive"])
@pytest.mark.parametrize("initial_time", [-0.0, True, 0.0, 2, float("inf")])
def test_events_are_scheduled_at_now_plus_zero_as_simpy_does(make, kind, initial_time):
    # Environment.schedule(event) pushes now + 0: from initial_time=-0.0 the clock
    # reads 0.0 after the first step, from True it reads 1. Every push of the resource
    # (a request granted at once, one served by a new request, a with-exit release)
    # is made at now, before any step.
    env = simpy.Environment(initial_time)
    res = make(env, 1, kind)
    first, second = res.request(), res.request()
    first.__exit__(None, None, None)  # second's unit is freed; served by the next request
    third = res.request()
    usage = [repr(r.usage_since) for r in (first, second, third)]
    seen = []
    while env.peek() < float("inf") or env._queue:
        env.step()
        seen.append((repr(env.now), type(env.now).__name__))
    theirs = simpy.Environment(initial_time)
    ref = SIMPY[kind](theirs, capacity=1)
    rfirst, rsecond = ref.request(), ref.request()
    rfirst.__exit__(None, None, None)
    rthird = ref.request()
    expected = []
    while theirs._queue:
        theirs.step()
        expected.append((repr(theirs.now), type(theirs.now).__name__))
    assert (usage, seen) == ([repr(r.usage_since) for r in (rfirst, rsecond, rthird)], expected)


def test_a_nested_resources_events_are_scheduled_at_now_plus_zero():
    # levels=2 requests (the implicit task-tree path) too: a -0.0 clock reads 0.0 after a step.
    for python in (False, True):
        with python_path() if python else contextlib.nullcontext():
            env = simpy.Environment(-0.0)
            res = DepthResource(env, capacity=2, levels=2)
            res.request()
            env.step()
            assert repr(env.now) == "0.0"


# ----------------------------------------------------------------- levels=D
@pytest.mark.parametrize("cls", [DepthResource, DepthPriorityResource, DepthPreemptiveResource])
@pytest.mark.parametrize(("capacity", "levels"), [(6, 3), (4, 1), (5, 5), (3, 2)])
def test_top_level_concurrency_is_exactly_n_minus_d_plus_1(cls, capacity, levels):
    env = simpy.Environment()
    res = cls(env, capacity=capacity, levels=levels)
    running = []
    peak = [0]

    def top():
        with res.request() as req:
            yield req
            running.append(1)
            peak[0] = max(peak[0], len(running))
            yield env.timeout(1)
            running.pop()

    for _ in range(3 * capacity):
        env.process(top())
    env.run()
    assert peak[0] == capacity - levels + 1
    assert env.now == -(-3 * capacity // (capacity - levels + 1))  # ceil: never fewer at once either


def _tree_strategy(depth: int) -> st.SearchStrategy[Any]:
    """A nested call tree: (resource index, hold, [children]) with at most ``depth`` levels."""
    leaf = st.tuples(st.integers(0, 1), st.integers(0, 2), st.just([]))
    if depth == 1:
        return leaf
    return st.tuples(st.integers(0, 1), st.integers(0, 2), st.lists(_tree_strategy(depth - 1), max_size=3))


def _run_trees(kind: str, cls: Any, capacity: int, levels: int, trees: list[Any], starts: list[int]):
    env = simpy.Environment()
    extra = {"levels": levels} if cls in DEPTH.values() else {}
    res = [cls(env, capacity=capacity, **extra) for _ in range(2)]
    done = []
    ask = {} if kind == "resource" else {"priority": 0, "preempt": False}

    def call(node, tag):
        r, hold, children = node
        with res[r].request(**ask) as req:
            yield req
            yield env.timeout(hold)
            if children:  # waits on all its sub-calls while holding its unit
                yield env.all_of([env.process(call(c, f"{tag}.{i}")) for i, c in enumerate(children)])
        done.append(tag)

    def root(node, start, tag):
        yield env.timeout(start)
        yield env.process(call(node, tag))

    for i, (node, start) in enumerate(zip(trees, starts)):
        env.process(root(node, start, str(i)))
    env.run()
    return env, res, done


def _count_nodes(node: Any) -> int:
    return 1 + sum(_count_nodes(c) for c in node[2])


@pytest.mark.parametrize("kind", ["resource", "priority"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_nested_trees_up_to_levels_deep_always_complete(kind, data):
    levels = data.draw(st.integers(1, 3), label="levels")
    capacity = data.draw(st.integers(levels, levels + 2), label="capacity")
    trees = data.draw(st.lists(_tree_strategy(levels), min_size=1, max_size=8), label="trees")
    starts = data.draw(st.lists(st.integers(0, 2), min_size=len(trees), max_size=len(trees)), label="starts")
    cls = DepthResource if kind == "resource" else DepthPriorityResource
    env, res, done = _run_trees(kind, cls, capacity, levels, trees, starts)
    assert len(done) == sum(_count_nodes(t) for t in trees), find_deadlock(env, res)
    for r in res:
        assert_clean(r)


def test_simpy_deadlocks_on_a_tree_that_depth_resource_completes():
    # Two trees, each holding a unit of one resource while its sub-call waits
    # for the other: with two units each, SimPy's classes stop; levels=2 completes.
    trees = [(0, 1, [(1, 1, [])]), (1, 1, [(0, 1, [])]), (0, 1, [(1, 1, [])]), (1, 1, [(0, 1, [])])]
    for kind in ("resource", "priority"):
        env, res, done = _run_trees(kind, SIMPY[kind], 2, 2, trees, [0, 0, 0, 0])
        assert done == [] and find_deadlock(env, res) != []
        env, res, done = _run_trees(kind, DEPTH[kind], 2, 2, trees, [0, 0, 0, 0])
        assert sorted(done) == ["0", "0.0", "1", "1.0", "2", "2.0", "3", "3.0"]


def _nested_priority_model(cls: Any, **kwargs: Any) -> tuple[list[tuple[Any, ...]], float]:
    """Two servers of two units; two top-level requests (priority 0) on each call the other
    server (priority 1, preempt=True) while holding their unit."""
    env = simpy.Environment()
    a, b = cls(env, capacity=2, **kwargs), cls(env, capacity=2, **kwargs)
    log: list[tuple[Any, ...]] = []

    def call(name, here, there, nested):
        try:
            with here.request(priority=1 if nested else 0) as req:
                yield req
                log.append((env.now, name, "got"))
                yield env.timeout(1)
                if not nested:
                    yield env.process(call(name + ".c", there, here, True))
            log.append((env.now, name, "done"))
        except simpy.Interrupt:
            log.append((env.now, name, "preempted"))

    for i in range(2):
        env.process(call(f"a{i}", a, b, False))
        env.process(call(f"b{i}", b, a, False))
    env.run()
    return log, env.now


@pytest.mark.parametrize("kind", ["priority", "preemptive"])
def test_nested_priority_and_preemption_trace_simpy_stops_pyresv_completes(kind):
    log, end = _nested_priority_model(SIMPY[kind])
    # every unit is held by a top-level request whose call waits for the other server
    assert (log, end) == ([(0, "a0", "got"), (0, "b0", "got"), (0, "a1", "got"), (0, "b1", "got")], 1)
    log, end = _nested_priority_model(DEPTH[kind], levels=2)
    # one unit per server for top-level requests (N - D + 1 = 1), one held back for the calls
    assert (log, end) == ([
        (0, "a0", "got"), (0, "b0", "got"),
        (1, "a0.c", "got"), (1, "b0.c", "got"),
        (2, "a0.c", "done"), (2, "b0.c", "done"), (2, "a0", "done"), (2, "b0", "done"),
        (2, "a1", "got"), (2, "b1", "got"),
        (3, "a1.c", "got"), (3, "b1.c", "got"),
        (4, "a1.c", "done"), (4, "b1.c", "done"), (4, "a1", "done"), (4, "b1", "done"),
    ], 4)  # fmt: skip


# --------------------------------------------------- priority and preemption
def test_priority_trace(make):
    env = simpy.Environment()
    res = make(env, 1, "priority")
    log = []

    def user(name, delay, prio):
        yield env.timeout(delay)
        with res.request(priority=prio) as req:
            yield req
            log.append((env.now, name))
            yield env.timeout(5)

    env.process(user("p0", 0, 2))
    env.process(user("p1", 2, 3))
    env.process(user("p2", 2, 3))  # same priority: arrival order
    env.process(user("p3", 4, 1))
    env.run()
    assert log == [(0, "p0"), (5, "p3"), (10, "p1"), (15, "p2")]


def test_priority_queue_maxlen(make):
    env = simpy.Environment()
    res = make(env, 1, "priority")
    res.put_queue.maxlen = 1
    res.request(priority=1)  # served at once: never in the queue
    waiting = res.request(priority=1)
    with pytest.raises(RuntimeError, match="Cannot append event. Queue is full."):
        res.request(priority=0)
    assert list(res.queue) == [waiting] and res.put_queue is res.queue


def test_priority_request_attributes():
    env = simpy.Environment()
    res = DepthPriorityResource(env, capacity=1)
    env.run(until=3)
    req = res.request(priority=4, preempt=False)
    assert isinstance(req, DepthPriorityRequest)
    assert (req.priority, req.preempt, req.time, req.key, req.usage_since) == (4, False, 3, (4, 3, True), 3)


def test_mixed_preemption_trace(make):
    # SimPy's test_mixed_preemption, as a whole trace with the Preempted cause.
    env = simpy.Environment()
    res = make(env, 1, "preemptive")
    log = []

    def p(i, delay, prio, preempt):
        yield env.timeout(delay)
        with res.request(priority=prio, preempt=preempt) as req:
            try:
                yield req
                yield env.timeout(2)
                log.append((env.now, i))
            except simpy.Interrupt as ir:
                cause = ir.cause
                assert isinstance(cause, Preempted)
                log.append((env.now, i, cause.by, cause.usage_since, cause.resource is res))

    env.process(p(0, 0, 2, True))
    env.process(p(1, 0, 2, True))
    env.process(p(2, 1, 1, False))
    p3 = env.process(p(3, 3, 0, True))
    env.process(p(4, 4, 3, True))
    env.run()
    assert log == [(2, 0), (3, 2, p3, 2, True), (5, 3), (7, 1), (9, 4)]


def test_only_the_head_may_preempt_on_a_flat_resource(make):
    # SimPy looks at the head of the queue only: a waiting non-preempting head
    # keeps a preempting request behind it from preempting.
    env = simpy.Environment()
    res = make(env, 1, "preemptive")
    log = []

    def p(name, delay, prio, preempt):
        yield env.timeout(delay)
        try:
            with res.request(priority=prio, preempt=preempt) as req:
                yield req
                log.append((env.now, name, "got"))
                yield env.timeout(3)
        except simpy.Interrupt:
            log.append((env.now, name, "preempted"))

    env.process(p("low", 0, 5, True))
    env.process(p("head", 1, 0, False))
    env.process(p("behind", 2, 1, True))
    env.run()
    assert log == [(0, "low", "got"), (3, "head", "got"), (6, "behind", "got")]


def test_a_preemption_whose_interrupt_raises_frees_the_unit_and_keeps_the_preemptor_queued(make):
    # SimPy takes the victim's unit, then interrupts its process; when that
    # raises (the process ended holding the unit), the unit stays free, the
    # preemptor stays queued and the next trigger point serves it.
    env = simpy.Environment()
    res = make(env, 1, "preemptive")

    def leaker():
        yield res.request(priority=1)  # ends holding its unit

    def preemptor():
        yield res.request(priority=0)

    env.process(leaker())
    env.run()
    env.process(preemptor())
    with pytest.raises(RuntimeError, match="has terminated and cannot be interrupted"):
        env.run()
    (waiting,) = res.queue
    assert res.count == 0 and waiting.priority == 0
    later = res.request(priority=5)  # a trigger point: the head is served
    assert res.users == [waiting] and list(res.queue) == [later]

def test_a_preemptor_takes_only_a_unit_it_could_have_been_granted():
    # capacity 3, levels 2: two unreserved units, one held back for level 2.
    # B.c, a nested low-priority call, holds the held-back unit. T, an urgent
    # top-level request, may not take it (it could never have been granted
    # it): it waits. A.c, an urgent nested call, may: B.c is preempted.
    env = simpy.Environment()
    res = DepthPreemptiveResource(env, capacity=3, levels=2)
    log = []

    def top(name, prio, call_at, call_prio, hold_after):
        with res.request(priority=prio) as req:
            yield req
            log.append((env.now, name, "got", req.level))
            if call_at is not None:
                yield env.timeout(call_at)
                yield env.process(call(name + ".c", call_prio))
            yield env.timeout(hold_after)

    def call(name, prio):
        try:
            with res.request(priority=prio) as req:
                yield req
                log.append((env.now, name, "got", req.level))
                yield env.timeout(1 if name == "A.c" else 10)
        except simpy.Interrupt as ir:
            log.append((env.now, name, "preempted by", ir.cause.by.name, ir.cause.usage_since))

    def urgent():
        yield env.timeout(1)
        with res.request(priority=1) as req:
            yield req
            log.append((env.now, "T", "got", req.level))

    env.process(top("A", 0, 2, 1, 0))
    env.process(top("B", 0, 0, 5, 5))
    env.process(urgent())
    env.run()
    assert log == [
        (0, "A", "got", 1),
        (0, "B", "got", 1),
        (0, "B.c", "got", 2),
        (2, "B.c", "preempted by", "call", 0),  # by A.c at 2, not by T at 1
        (2, "A.c", "got", 2),
        (3, "T", "got", 1),  # when A released its unreserved unit
    ]
    assert_clean(res)


def test_a_preemptor_passes_over_a_user_whose_unit_it_could_not_take():
    # capacity 2, levels 2. U (priority 3) holds the unreserved unit, its call
    # C (priority 5) the held-back one. T (priority 0, top level) cannot take
    # C's unit although C has the greatest key: it preempts U instead.
    env = simpy.Environment()
    res = DepthPreemptiveResource(env, capacity=2, levels=2)
    log = []

    def user():
        try:
            with res.request(priority=3) as req:
                yield req
                log.append((env.now, "U", "got", req.level))
                yield env.process(call())
        except simpy.Interrupt as ir:
            log.append((env.now, "U", "preempted by", ir.cause.by.name))

    def call():
        with res.request(priority=5) as req:
            yield req
            log.append((env.now, "C", "got", req.level))
            yield env.timeout(10)
        log.append((env.now, "C", "done"))

    def urgent():
        yield env.timeout(1)
        with res.request(priority=0) as req:
            yield req
            log.append((env.now, "T", "got", req.level))

    env.process(user())
    env.process(urgent())
    env.run()
    assert log == [
        (0, "U", "got", 1),
        (0, "C", "got", 2),
        (1, "U", "preempted by", "urgent"),
        (1, "T", "got", 1),
        (10, "C", "done"),
    ]
    assert_clean(res)


def test_simpy_lets_the_same_top_level_request_preempt_a_nested_call():
    # The contrast: with no unit held back, T preempts B.c at once.
    env = simpy.Environment()
    res = simpy.PreemptiveResource(env, capacity=3)
    log = []

    def holder(name, prio):
        try:
            with res.request(priority=prio) as req:
                yield req
                yield env.timeout(10)
        except simpy.Interrupt:
            log.append((env.now, name, "preempted"))

    def urgent():
        yield env.timeout(1)
        with res.request(priority=1) as req:
            yield req
            log.append((env.now, "T", "got"))

    for name, prio in [("A", 0), ("B", 0), ("B.c", 5)]:
        env.process(holder(name, prio))
    env.process(urgent())
    env.run()
    assert log[:2] == [(1, "B.c", "preempted"), (1, "T", "got")]


# ----------------------------------------------------------------- monitor
def test_monitor_matches_allocator_stats(allocator_cls):
    env = simpy.Environment()
    res = DepthResource(env, allocator_cls([(1, 1), (1, 1)], 1), monitor=True)
    mismatches = []

    def snapshot():
        st_ = res.allocator.stats()
        return (st_["unreserved_held"], *st_["held"]), (0, *st_["pending"])

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


@pytest.mark.parametrize("kind", ["resource", "priority", "preemptive"])
def test_find_deadlock_on_simpys_classes_and_none_on_ours(kind):
    env = simpy.Environment()
    a, b = SIMPY[kind](env, capacity=1), SIMPY[kind](env, capacity=1)
    a.name, b.name = "A", "B"
    _nested_model(env, a, b, 1)
    env.run()
    assert len(find_deadlock(env, [a, b])) == 4
    env = simpy.Environment()
    a, b = DEPTH[kind](env, capacity=2, levels=2, name="A"), DEPTH[kind](env, capacity=2, levels=2, name="B")
    _nested_model(env, a, b, 3)
    env.run()
    assert find_deadlock(env, [a, b]) == []
    assert_clean(a)
    assert_clean(b)
