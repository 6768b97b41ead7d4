"""FlashCopy flows, one at a time, as whole traces.

Volume i lives on cluster i % 2. Every run starts with initialization
(ready at 150 us: one 100 us attempt plus the peer's 50 us message) and the
establish of each relationship: a step on the source's cluster (L1) and one
on the target's (L2), where the point in time is fixed.
"""

from __future__ import annotations

from typing import Any

import pytest

from pyresv.sim.config import Config, parse
from pyresv.sim.flashcopy import FlashCopyFlows
from pyresv.sim.engine import RunResult, Simulation, run

ESTABLISH_1_TO_0 = [
    (150.0, 1, 0, "establish", 1, "acquire"),
    (250.0, 0, 0, "establish-target", 2, "acquire"),
    (300.0, 0, 0, "establish-target", 2, "release"),
    (350.0, 1, 0, "establish", 1, "release"),
]


def _config(rels: list[dict[str, Any]], ops: list[tuple], *, tracks: int = 4, volumes: int = 3,
            levels: int = 3) -> Config:
    return parse({
        "reservation": {"depths": [[2, 1]] * levels, "unreserved": 2, "system_tcbs": 64},
        "volumes": {"count": volumes, "tracks": tracks},
        "workload": {"rate_ops_per_s": 0.0, "auto_destage": False},
        "flashcopy": rels,
        "ops": [{"at_s": at * 1e-3, "op": op, "volume": v, "track": t} for at, op, v, t in ops],
    })


def _run(config: Config, allocator_cls: type | None = None) -> RunResult:
    result = run(config, allocator_cls=allocator_cls, trace=True)
    s = result.summary()
    assert not s["deadlocked"] and s["leaked_tcbs"] == 0 and s["held_tcbs_at_end"] == 0
    assert s["completed_ops"] == s["issued_ops"]
    return result


REL_1_TO_0 = {"source": 1, "target": 0, "background_copy": False}


def test_stage_intercept(allocator_cls: type) -> None:
    # [0006]: a read of the target's uncopied track stages the source's
    # point-in-time track, although the source was written since.
    r = _run(_config([REL_1_TO_0], [(1, "write", 1, 0), (2, "read", 0, 0), (2.5, "read", 1, 0)]), allocator_cls)
    assert r.trace == ESTABLISH_1_TO_0 + [
        (1000.0, 1, 0, "write", 1, "acquire"),
        (1020.0, 1, 0, "write", 1, "release"),
        (2000.0, 0, 0, "read", 1, "acquire"),
        (2070.0, 1, 0, "stage-source", 2, "acquire"),
        (2170.0, 1, 0, "stage-source", 2, "release"),
        (2250.0, 0, 0, "read", 1, "release"),
        (2500.0, 1, 0, "read", 1, "acquire"),
        (2520.0, 1, 0, "read", 1, "release"),
    ]
    assert (r.pit_violations, r.reads_checked) == (0, 2)
    assert r.relationships[0]["copied"] == 1


def test_destage_intercept_copies_the_old_track_first(allocator_cls: type) -> None:
    r = _run(_config([REL_1_TO_0], [(1, "write", 1, 0), (2, "destage", 1, 0), (3, "read", 0, 0)]), allocator_cls)
    assert r.trace == ESTABLISH_1_TO_0 + [
        (1000.0, 1, 0, "write", 1, "acquire"),
        (1020.0, 1, 0, "write", 1, "release"),
        (2000.0, 1, 0, "destage", 1, "acquire"),
        (2200.0, 0, 0, "copy-target", 2, "acquire"),  # the old track to the target first
        (2230.0, 0, 0, "copy-target", 2, "release"),
        (2280.0, 1, 0, "destage", 1, "release"),
        (3000.0, 0, 0, "read", 1, "acquire"),  # copied: no stage intercept any more
        (3020.0, 0, 0, "read", 1, "release"),
    ]
    assert (r.pit_violations, r.reads_checked) == (0, 1)


def test_partial_target_destage_needs_a_full_stage(allocator_cls: type) -> None:
    # FIG 8 arrow 800.
    r = _run(_config([REL_1_TO_0], [(1, "partial-write", 0, 0), (2, "destage", 0, 0), (3, "read", 0, 0)]),
             allocator_cls)
    assert r.trace == ESTABLISH_1_TO_0 + [
        (1000.0, 0, 0, "partial-write", 1, "acquire"),
        (1020.0, 0, 0, "partial-write", 1, "release"),
        (2000.0, 0, 0, "destage", 1, "acquire"),
        (2200.0, 1, 0, "stage-source", 2, "acquire"),
        (2300.0, 1, 0, "stage-source", 2, "release"),
        (2350.0, 0, 0, "destage", 1, "release"),
        (3000.0, 0, 0, "read", 1, "acquire"),
        (3020.0, 0, 0, "read", 1, "release"),
    ]
    assert (r.pit_violations, r.reads_checked) == (0, 1)


def test_partial_write_is_merged_onto_the_point_in_time_track() -> None:
    # The source is written (version 1) after the target's point in time;
    # the target's partial write (version 2) must land on the staged
    # point-in-time track (0,), not on the source's new content.
    ops = [(0.5, "write", 1, 0), (1, "partial-write", 0, 0), (2, "destage", 0, 0), (3, "read", 0, 0)]
    sim = Simulation(_config([REL_1_TO_0], ops))
    r = sim.run()
    assert sim.volumes[0].disk[0] == (0, 2) and sim.volumes[0].cache[0] is None
    assert sim.volumes[1].cache[0] == (1,)
    assert (r.pit_violations, r.reads_checked) == (0, 1)


def test_two_targets_at_different_times(allocator_cls: type) -> None:
    # [0008]: Target1 (volume 0) at T1, the source written at T2, Target2
    # (volume 2) at T3. Writing the source again must first destage the T2
    # data (Target2's image), whose destage intercept copies Target1's.
    rels = [REL_1_TO_0, {"source": 1, "target": 2, "at_s": 2e-3, "background_copy": False}]
    ops = [(1, "write", 1, 0), (3, "write", 1, 0), (4, "read", 0, 0), (4, "read", 2, 0)]
    r = _run(_config(rels, ops), allocator_cls)
    assert r.trace == ESTABLISH_1_TO_0 + [
        (1000.0, 1, 0, "write", 1, "acquire"),
        (1020.0, 1, 0, "write", 1, "release"),
        (2000.0, 1, 0, "establish", 1, "acquire"),
        (2100.0, 0, 0, "establish-target", 2, "acquire"),
        (2150.0, 0, 0, "establish-target", 2, "release"),
        (2200.0, 1, 0, "establish", 1, "release"),
        (3000.0, 1, 0, "write", 1, "acquire"),
        (3220.0, 0, 0, "copy-target", 2, "acquire"),
        (3250.0, 0, 0, "copy-target", 2, "release"),
        (3300.0, 1, 0, "write", 1, "release"),
        (4000.0, 0, 0, "read", 1, "acquire"),
        (4000.0, 0, 1, "read", 1, "acquire"),
        (4020.0, 0, 0, "read", 1, "release"),
        (4070.0, 1, 1, "stage-source", 2, "acquire"),
        (4170.0, 1, 1, "stage-source", 2, "release"),
        (4250.0, 0, 1, "read", 1, "release"),
    ]
    assert (r.pit_violations, r.reads_checked) == (0, 2)


def test_cascade_reads_through_two_sources(allocator_cls: type) -> None:
    # 0 (c0) -> 1 (c1) -> 2 (c0): volume 2's image of an uncopied track is
    # volume 1's, which is volume 0's: L1 on c0, L2 on c1, L3 on c0.
    rels = [{"source": 0, "target": 1, "background_copy": False},
            {"source": 1, "target": 2, "at_s": 1e-3, "background_copy": False}]
    ops = [(2, "write", 0, 0), (2, "write", 1, 0), (3, "read", 2, 0)]
    r = _run(_config(rels, ops, levels=4), allocator_cls)
    assert r.trace[8:] == [
        (2000.0, 0, 0, "write", 1, "acquire"),
        (2000.0, 1, 1, "write", 1, "acquire"),
        (2020.0, 0, 0, "write", 1, "release"),
        (2020.0, 1, 1, "write", 1, "release"),
        (3000.0, 0, 1, "read", 1, "acquire"),
        (3070.0, 1, 1, "stage-source", 2, "acquire"),
        (3220.0, 0, 1, "stage-source", 3, "acquire"),
        (3320.0, 0, 1, "stage-source", 3, "release"),
        (3370.0, 1, 1, "stage-source", 2, "release"),
        (3450.0, 0, 1, "read", 1, "release"),
    ]
    assert (r.pit_violations, r.reads_checked) == (0, 1)


def test_background_copy_ends_the_relationship() -> None:
    rels = [{"source": 1, "target": 0, "background_copy": True, "copy_streams": 2}]
    r = _run(_config(rels, [(0.5, "write", 1, 3)], tracks=6))
    rel = r.relationships[0]
    assert rel["state"] == "ended" and rel["copied"] == 6 and rel["ended_us"] > rel["established_us"]
    # Two workers, one TCB per track on the target's cluster.
    copies = [e for e in r.trace if e[3] == "bg-copy" and e[5] == "acquire"]
    assert len(copies) == 6 and {e[2] for e in copies} == {1, 2}


def test_withdraw_removes_the_relationship() -> None:
    rels = [{"source": 1, "target": 0, "background_copy": False, "withdraw_s": 1e-3}]
    r = _run(_config(rels, [(2, "read", 0, 0)]))
    assert r.relationships[0]["state"] == "withdrawn"
    assert [e[3] for e in r.trace[4:8]] == ["withdraw", "withdraw-target", "withdraw-target", "withdraw"]
    assert not any(e[3] == "stage-source" for e in r.trace)  # no relationship, no intercept


def test_the_oracle_catches_a_lost_point_in_time_image(monkeypatch: pytest.MonkeyPatch) -> None:
    # The source is written before the target is established, so the
    # target's image is in the source cache. A second write must destage it
    # first; a flow that skips that overwrites the image, and the target read
    # returns the wrong version.
    rels = [{"source": 1, "target": 0, "at_s": 1e-3, "background_copy": False}]
    config = _config(rels, [(0.5, "write", 1, 0), (2, "write", 1, 0), (3, "read", 0, 0)])
    assert run(config).pit_violations == 0
    monkeypatch.setattr(FlashCopyFlows, "_cache_is_image", lambda self, vol, t: False)
    broken = run(config)
    assert broken.pit_violations == 1
    assert broken.summary()["violations"] == [
        {"volume": 0, "track": 0, "read": [0], "expected": [1], "time_us": 3250}
    ]


def test_pids_are_recycled() -> None:
    ops = [(1 + i, "read", 1, 0) for i in range(5)]
    r = _run(_config([], ops))
    assert {e[2] for e in r.trace} == {0}
