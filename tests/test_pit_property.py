"""Property: random small workloads never violate point-in-time data.

Random controllers (2-3 clusters), relationships (several targets, cascades,
withdraws, background copy with several streams), scripted bursts and Poisson
host operations, under both policies. Every read is checked by the oracle.
Under ``depth`` a run also never deadlocks.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyresv.sim.config import parse
from pyresv.sim.engine import run
from pyresv.sim.topology import levels_needed
from strategies import host_ops, relationships


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    clusters = draw(st.sampled_from([2, 2, 3]))
    nvol = draw(st.integers(2, 5))
    tracks = draw(st.integers(1, 3))
    rels = relationships(draw, nvol, min_tries=1, at_ms=[0.0, 1.0, 1.5, 2.0, 2.5], max_streams=3)
    sources = {r["source"] for r in rels}
    targets = {r["target"] for r in rels}
    for r in rels:
        if r["target"] not in sources and draw(st.integers(0, 4)) == 0:
            r["withdraw_s"] = r["at_s"] + draw(st.sampled_from([0.5, 2.0])) * 1e-3
    levels = levels_needed(clusters, [(r["source"], r["target"]) for r in rels]) + draw(st.integers(0, 1))
    busy = sorted(sources | targets)
    ops = draw(host_ops(st.sampled_from(busy) if busy else st.integers(0, nvol - 1), tracks, 40))
    return {
        "controller": {
            "clusters": clusters,
            "policy": draw(st.sampled_from(["depth", "shared"])),
            "seed": draw(st.integers(0, 9)),
            "message_latency_ms": draw(st.sampled_from([0.0, 0.01, 0.05])),
        },
        "reservation": {
            "depths": [[draw(st.integers(1, 2)), draw(st.integers(1, 2))] for _ in range(levels)],
            "unreserved": draw(st.integers(0, 2)),
            "system_tcbs": 64,
            "wake": draw(st.sampled_from(["deepest", "fifo"])),
        },
        "volumes": {"count": nvol, "tracks": tracks},
        "flashcopy": rels,
        "ops": ops,
        "workload": {
            "duration_s": 0.003,
            "rate_ops_per_s": draw(st.sampled_from([0.0, 3000.0])),
            "read_fraction": 0.5,
            "partial_write_fraction": 0.3,
            "auto_destage": draw(st.booleans()),
        },
        "timing": {
            "destage_delay_us": draw(st.sampled_from([0.0, 100.0, 300.0, 1000.0])),
            "stage_us": draw(st.sampled_from([0.0, 100.0])),
            "copy_us": draw(st.sampled_from([0.0, 30.0])),
        },
    }


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_random_workloads_keep_point_in_time_data(data: dict[str, Any]) -> None:
    config = parse(data)
    s = run(config).summary()
    assert s["pit_violations"] == 0, s.get("violations")
    assert s["leaked_tcbs"] == 0
    assert not s["timed_out"]
    if config.controller.policy == "depth":
        # Each level has a pool: the deepest level waits on nothing, so by
        # induction every level completes (DESIGN section 1).
        assert not s["deadlocked"]
        assert s["completed_ops"] == s["issued_ops"] and s["held_tcbs_at_end"] == 0
    else:
        assert s["deadlocked"] == (s["stuck_processes"] > 0)
