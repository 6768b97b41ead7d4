"""The patent's scenarios under both policies: shared deadlocks, depth completes."""

from __future__ import annotations

from collections import Counter

import pytest

from pyresv.sim.scenarios import POLICIES, SCENARIOS, get, run_scenario

FIG7_TRACE = [
    # Target1 (volume 2, c0) established from the source (volume 1, c1).
    (150.0, 1, 0, "establish", 1, "acquire"),
    (250.0, 0, 0, "establish-target", 2, "acquire"),
    (300.0, 0, 0, "establish-target", 2, "release"),
    (350.0, 1, 0, "establish", 1, "release"),
    # The source is modified in its cache.
    (1000.0, 1, 0, "write", 1, "acquire"),
    (1020.0, 1, 0, "write", 1, "release"),
    # Target2 (volume 0, c0) established.
    (2000.0, 1, 0, "establish", 1, "acquire"),
    (2100.0, 0, 0, "establish-target", 2, "acquire"),
    (2150.0, 0, 0, "establish-target", 2, "release"),
    (2200.0, 1, 0, "establish", 1, "release"),
    # FIG 7: level 1 on cluster0, level 2 on cluster1, level 3 on cluster0 ...
    (3000.0, 0, 0, "read", 1, "acquire"),
    (3070.0, 1, 0, "stage-source", 2, "acquire"),
    (3370.0, 0, 0, "copy-target", 3, "acquire"),
    # ... released in reverse order.
    (3400.0, 0, 0, "copy-target", 3, "release"),
    (3450.0, 1, 0, "stage-source", 2, "release"),
    (3530.0, 0, 0, "read", 1, "release"),
]

CYCLES = {
    "cross-cluster": [
        "c0 read pid 0 L1", "c1 stage-source pid 0 L2", "c1 read pid 10 L1", "c0 stage-source pid 10 L2",
    ],
    "multi-target": [
        "c0 bg-copy pid 1 L1", "c1 stage-source pid 1 L2", "c0 copy-target pid 1 L3",
        "c0 bg-copy pid 2 L1", "c1 stage-source pid 2 L2", "c0 copy-target pid 2 L3",
    ],
    "fig8": [
        "c0 destage pid 0 L1", "c1 stage-source pid 0 L2", "c0 copy-target pid 0 L3",
        "c0 destage pid 1 L1", "c1 stage-source pid 1 L2", "c0 copy-target pid 1 L3",
    ],
}


def _deepest_paths(trace: list) -> list[tuple]:
    """Per process tree (from its level-1 TCB to its release), the deepest
    stack of (cluster, step, level) it reached; checks releases are LIFO."""
    stacks: dict[int, list] = {}
    deepest: dict[int, list] = {}
    out = []
    for _, c, pid, step, level, event in trace:
        st = stacks.setdefault(pid, [])
        if event in ("acquire", "grant"):
            st.append((c, step, level))
            if len(st) > len(deepest.get(pid, [])):
                deepest[pid] = list(st)
        elif event == "release":
            assert st.pop() == (c, step, level), "TCBs are released in reverse order"
            if not st:
                out.append(tuple(deepest.pop(pid)))
    return out


@pytest.mark.parametrize("policy", POLICIES)
def test_fig7_whole_trace(policy: str, allocator_cls: type) -> None:
    r = run_scenario("fig7", policy, allocator_cls=allocator_cls, trace=True)
    assert r.trace == FIG7_TRACE
    s = r.summary()
    assert s["scenario"] == "fig7" and s["policy"] == policy
    assert not s["deadlocked"] and s["pit_violations"] == 0 and s["leaked_tcbs"] == 0


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_depth_completes_every_scenario(name: str, allocator_cls: type) -> None:
    r = run_scenario(name, "depth", allocator_cls=allocator_cls)
    s = r.summary()
    assert s["deadlocked"] is False and s["deadlock_cycle"] == []
    assert s["completed_ops"] == s["issued_ops"] > 0
    assert (s["leaked_tcbs"], s["held_tcbs_at_end"], s["stuck_processes"]) == (0, 0, 0)
    assert s["pit_violations"] == 0 and not s["timed_out"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_shared_deadlocks_where_the_patent_says(name: str, allocator_cls: type) -> None:
    r = run_scenario(name, "shared", allocator_cls=allocator_cls)
    s = r.summary()
    assert s["deadlocked"] is get(name).shared_deadlocks
    assert s["deadlock_cycle"] == CYCLES.get(name, [])
    assert s["pit_violations"] == 0 and s["leaked_tcbs"] == 0
    if s["deadlocked"]:
        # Every TCB of the cluster the cycle waits on is held by a stuck process.
        assert s["held_tcbs_at_end"] == 2 * s["tcbs_per_cluster"]
        assert s["stuck_processes"] > s["tcbs_per_cluster"]


def test_same_tcbs_under_both_policies() -> None:
    for name, scenario in SCENARIOS.items():
        depth, shared = scenario.config("depth"), scenario.config("shared")
        assert depth.reservation == shared.reservation, name


def test_fig8_flows_are_the_patents_three_levels() -> None:
    # [0039]: destage of a partial target track (L1, c0) -> stage intercept
    # destages the source (L2, c1) -> its destage intercept protects Target1
    # (L3, c0). Each of the ten destages is of its own track, so each
    # takes the whole path.
    r = run_scenario("fig8", "depth", trace=True)
    paths = Counter(_deepest_paths(r.trace))
    three = ((0, "destage", 1), (1, "stage-source", 2), (0, "copy-target", 3))
    assert paths[three] == 10
    assert paths[((0, "partial-write", 1),)] == 10
    assert paths[((1, "write", 1),)] == 10


def test_multi_target_copy_workers_go_three_levels_deep() -> None:
    r = run_scenario("multi-target", "depth", trace=True)
    paths = Counter(_deepest_paths(r.trace))
    assert paths[((0, "bg-copy", 1), (1, "stage-source", 2), (0, "copy-target", 3))] == 10
    assert r.summary()["relationships"][1]["state"] == "ended"


def test_cross_cluster_reads_go_two_levels_deep() -> None:
    r = run_scenario("cross-cluster", "depth", trace=True)
    paths = Counter(_deepest_paths(r.trace))
    assert paths[((0, "read", 1), (1, "stage-source", 2))] == 10
    assert paths[((1, "read", 1), (0, "stage-source", 2))] == 10


def test_unknown_scenario() -> None:
    with pytest.raises(KeyError, match="unknown scenario 'fig9'"):
        get("fig9")


def test_metrics_timeline_of_a_deadlock() -> None:
    r = run_scenario("cross-cluster", "shared")
    tl = r.metrics.timeline()
    assert tl.times_s[0] == 0.0 and tl.times_s[-1] == pytest.approx(r.sim_time_s)
    assert tl.held.shape == tl.queued.shape == (len(tl.times_s), 2, 3)
    # At the end every TCB is held by a level-1 read; 2 reads per cluster wait
    # at level 1 and 8 stage intercepts at level 2.
    assert tl.held[-1].tolist() == [[8, 0, 0], [8, 0, 0]]
    assert tl.queued[-1].tolist() == [[2, 8, 0], [2, 8, 0]]
    assert tl.completed[-1].tolist() == [0, 0] and len(tl.op_latency_ms) == 0


def test_metrics_timeline_of_a_completed_run() -> None:
    r = run_scenario("cross-cluster", "depth")
    tl = r.metrics.timeline()
    assert tl.held[-1].sum() == 0 and tl.queued[-1].sum() == 0
    assert tl.completed[-1].tolist() == [10, 10]
    assert len(tl.op_latency_ms) == 20 and (tl.op_latency_ms > 0).all()
    assert sorted(set(tl.op_cluster.tolist())) == [0, 1] and set(tl.op_kind.tolist()) == {0}
    s = r.summary()
    assert [lv["peak_held"] for lv in s["per_level"]] == [[4, 4], [2, 2], [0, 0]]
