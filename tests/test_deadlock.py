"""Deadlock detection: the run stops, and the wait-for cycle is reported."""

from __future__ import annotations

import pytest

from pyresv.sim.config import parse
from pyresv.sim.deadlock import Step, describe, find_cycle, wait_for_graph
from pyresv.reference import DepthPoolAllocator
from pyresv.sim.engine import Simulation, run

ESTABLISH = [
    (150.0, 1, 0, "establish", 1, "acquire"),
    (150.0, 0, 1, "establish", 1, "acquire"),
    (250.0, 0, 0, "establish-target", 2, "acquire"),
    (250.0, 1, 1, "establish-target", 2, "acquire"),
    (300.0, 0, 0, "establish-target", 2, "release"),
    (300.0, 1, 1, "establish-target", 2, "release"),
    (350.0, 1, 0, "establish", 1, "release"),
    (350.0, 0, 1, "establish", 1, "release"),
]


def _cross(policy: str) -> dict:
    # [0007] at its smallest: 3 TCBs per cluster (one pool of one per level,
    # or 3 unreserved), 3 target reads on each cluster whose sources are on
    # the other one.
    return {
        "controller": {"policy": policy},
        "reservation": {"depths": [[1, 1]] * 3, "unreserved": 0},
        "volumes": {"count": 4, "tracks": 2},
        "flashcopy": [
            {"source": 1, "target": 0, "background_copy": False},
            {"source": 2, "target": 3, "background_copy": False},
        ],
        "ops": [{"at_s": 1e-3, "op": "read", "volume": v, "track": 0} for v in (0, 3) for _ in range(3)],
        "workload": {"rate_ops_per_s": 0.0, "auto_destage": False},
    }


def test_shared_pool_deadlocks_with_a_cycle(allocator_cls: type) -> None:
    r = run(parse(_cross("shared")), allocator_cls=allocator_cls, trace=True)
    assert r.trace == ESTABLISH + [
        (1000.0, 0, 1, "read", 1, "acquire"),
        (1000.0, 0, 0, "read", 1, "acquire"),
        (1000.0, 0, 2, "read", 1, "acquire"),
        (1000.0, 1, 3, "read", 1, "acquire"),
        (1000.0, 1, 4, "read", 1, "acquire"),
        (1000.0, 1, 5, "read", 1, "acquire"),
        # Every TCB is held by a read; every stage intercept waits.
        (1070.0, 1, 1, "stage-source", 2, "wait"),
        (1070.0, 1, 0, "stage-source", 2, "wait"),
        (1070.0, 1, 2, "stage-source", 2, "wait"),
        (1070.0, 0, 3, "stage-source", 2, "wait"),
        (1070.0, 0, 4, "stage-source", 2, "wait"),
        (1070.0, 0, 5, "stage-source", 2, "wait"),
    ]
    s = r.summary()
    assert s["deadlocked"] is True
    assert s["deadlock_cycle"] == [
        "c0 read pid 0 L1", "c1 stage-source pid 0 L2", "c1 read pid 3 L1", "c0 stage-source pid 3 L2",
    ]
    assert (s["completed_ops"], s["stuck_processes"], s["held_tcbs_at_end"], s["leaked_tcbs"]) == (0, 6, 6, 0)
    assert s["sim_time_s"] == pytest.approx(1070e-6)
    assert s["pit_violations"] == 0 and not s["timed_out"]


def test_depth_pools_complete_the_same_workload(allocator_cls: type) -> None:
    r = run(parse(_cross("depth")), allocator_cls=allocator_cls, trace=True)
    assert r.trace == ESTABLISH + [
        (1000.0, 0, 1, "read", 1, "acquire"),
        (1000.0, 0, 0, "read", 1, "wait"),  # level 1 has one pool of one TCB
        (1000.0, 0, 2, "read", 1, "wait"),
        (1000.0, 1, 3, "read", 1, "acquire"),
        (1000.0, 1, 4, "read", 1, "wait"),
        (1000.0, 1, 5, "read", 1, "wait"),
        (1070.0, 1, 1, "stage-source", 2, "acquire"),  # remote: served from level 2
        (1070.0, 0, 3, "stage-source", 2, "acquire"),
        (1170.0, 1, 1, "stage-source", 2, "release"),
        (1170.0, 0, 3, "stage-source", 2, "release"),
        (1250.0, 0, 1, "read", 1, "release"),
        (1250.0, 1, 3, "read", 1, "release"),
        (1250.0, 0, 0, "read", 1, "grant"),  # the track is copied now: no more stages
        (1250.0, 1, 4, "read", 1, "grant"),
        (1270.0, 0, 0, "read", 1, "release"),
        (1270.0, 1, 4, "read", 1, "release"),
        (1270.0, 0, 2, "read", 1, "grant"),
        (1270.0, 1, 5, "read", 1, "grant"),
        (1290.0, 0, 2, "read", 1, "release"),
        (1290.0, 1, 5, "read", 1, "release"),
    ]
    s = r.summary()
    assert not s["deadlocked"] and s["deadlock_cycle"] == []
    assert (s["completed_ops"], s["leaked_tcbs"], s["held_tcbs_at_end"]) == (6, 0, 0)


def test_graph_and_cycle_from_allocators() -> None:
    c0, c1 = DepthPoolAllocator([(0, 1)], 1), DepthPoolAllocator([(0, 1)], 1)
    assert c0.acquire(1) == 0 and c1.acquire(2) == 0
    assert c1.acquire(1) == -1 and c0.acquire(2) == -1
    held = {1: [Step(0, 1, "read", 1, 0)], 2: [Step(1, 1, "read", 2, 0)]}
    pending = {1: Step(1, 1, "stage-source", 1), 2: Step(0, 1, "stage-source", 2)}
    g = wait_for_graph([c0, c1], held, pending)
    assert g.edges == {1: {2: [(1, 0)]}, 2: {1: [(0, 0)]}}
    assert find_cycle(g) == [1, 2]
    assert describe(g, [1, 2]) == [
        "c0 read pid 1 L1", "c1 stage-source pid 1 L1", "c1 read pid 2 L1", "c0 stage-source pid 2 L1",
    ]


def test_a_pool_owner_waits_only_on_its_own_pool_and_unreserved() -> None:
    # pid 1 owns the only level-1 pool (2 TCBs) and asks for a third TCB;
    # pid 2 owns nothing at level 1 and waits for that pool to be freed.
    a = DepthPoolAllocator([(1, 2)], 0)
    assert [a.acquire(1), a.acquire(1), a.acquire(1), a.acquire(2)] == [0, 1, -1, -1]
    held = {1: [Step(0, 1, "x", 1, 0), Step(0, 1, "y", 1, 1)], 2: []}
    pending = {1: Step(0, 1, "z", 1), 2: Step(0, 1, "w", 2)}
    g = wait_for_graph([a], held, pending)
    assert g.edges == {1: {1: [(0, 0), (0, 1)]}, 2: {1: [(0, 0), (0, 1)]}}
    assert find_cycle(g) == [1]  # no cycle through two processes: the self-wait
    assert describe(g, [1]) == ["c0 x pid 1 L1", "c0 y pid 1 L1", "c0 z pid 1 L1"]


def test_no_cycle_when_nothing_waits() -> None:
    g = wait_for_graph([DepthPoolAllocator([(1, 1)], 0)], {}, {})
    assert find_cycle(g) == [] and describe(g, []) == []


def test_livelock_guard_stops_the_run() -> None:
    config = parse({
        "controller": {"max_sim_time_s": 0.05},
        "reservation": {"depths": [[2, 1]] * 3, "unreserved": 2},
        "volumes": {"count": 2, "tracks": 8},
        "workload": {"duration_s": 10.0, "rate_ops_per_s": 1000.0},
    })
    s = run(config).summary()
    assert s["timed_out"] is True and s["deadlocked"] is False
    assert s["sim_time_s"] <= 0.05 and s["issued_ops"] < 100


def test_processes_beyond_the_pid_space_wait_to_start() -> None:
    from pyresv.sim.scenarios import get

    config = get("cross-cluster").config("depth")
    sim = Simulation(config, max_processes=3)
    s = sim.run().summary()
    assert not s["deadlocked"] and s["completed_ops"] == 20 and s["leaked_tcbs"] == 0
    # 18 pids: 10 reads start on c0 and 8 on c1, which deadlock; 2 never start.
    stuck = Simulation(get("cross-cluster").config("shared"), max_processes=18).run().summary()
    assert stuck["deadlocked"] and stuck["stuck_processes"] == 20 and stuck["held_tcbs_at_end"] == 16
