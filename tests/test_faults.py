"""Fault injection: cluster failover, process death, lost and delayed messages.

Every fault run must end (never hang), keep point-in-time data correct,
leak no TCB and leave no waiter stranded: every live allocator has nothing
pending and passes ``check()``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyresv.tools.cli import main
from pyresv.sim.config import ConfigError, load, loads, parse, to_toml
from pyresv.sim.faults import COUNTS, FaultInjector
from pyresv.sim.scenarios import FAULT_SCENARIOS, SCENARIOS, get_fault, run_fault_scenario
from pyresv.sim.engine import Simulation
from pyresv.sim.topology import levels_needed
from strategies import host_ops, relationships

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

REL_1_TO_0 = {"source": 1, "target": 0, "background_copy": False}


def _config(faults: dict[str, Any], ops: list[tuple] = (), rels: list[dict] = (REL_1_TO_0,), **extra: Any):
    data = {
        "reservation": {"depths": [[2, 1]] * 3, "unreserved": 2, "system_tcbs": 64},
        "volumes": {"count": 3, "tracks": 4},
        "workload": {"rate_ops_per_s": 0.0, "auto_destage": False},
        "flashcopy": list(rels),
        "ops": [{"at_s": at * 1e-3, "op": op, "volume": v, "track": t} for at, op, v, t in ops],
        "faults": faults,
    }
    data.update(extra)
    return parse(data)


def _run(config) -> tuple[Simulation, dict[str, Any]]:
    sim = Simulation(config, trace=True)
    s = sim.run().summary()
    return sim, s


def _assert_clean(sim: Simulation, s: dict[str, Any]) -> None:
    """Ended, no point-in-time violation, no leak, no stranded waiter, every
    host operation completed or failed (counted)."""
    assert not s["deadlocked"] and not s["timed_out"]
    assert s["pit_violations"] == 0, s.get("violations")
    assert s["leaked_tcbs"] == 0 and s["held_tcbs_at_end"] == 0 and s["stuck_processes"] == 0
    assert s["completed_ops"] + s["faults"]["ops_failed"] == s["issued_ops"]
    assert s["faults"]["stranded_waiters"] == 0 and not sim.waiting
    for alloc in sim.allocators:
        if alloc is not None:
            assert alloc.pending() == 0
            alloc.check()
    assert all(not any(row) for row in sim.held) and all(not any(row) for row in sim.queued)


def _in_flight(trace: list, at: float) -> dict[int, list[tuple[int, int, str]]]:
    """Per pid, its steps (cluster, level, name) held or waited for just before ``at``."""
    steps: dict[int, list[tuple[int, int, str]]] = {}
    for t, c, pid, name, level, event in trace:
        if t >= at:
            break
        if event in ("acquire", "wait"):
            steps.setdefault(pid, []).append((c, level, name))
        elif event == "release":
            steps[pid].pop()
    return {pid: s for pid, s in steps.items() if s}


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ({"bogus": 1}, r"^faults\.bogus: unknown key"),
        ({"message_loss": 1.5}, r"^faults\.message_loss: must be <= 1"),
        ({"message_loss": "often"}, r"^faults\.message_loss: must be a number"),
        ({"message_delay_ms": [0.2, 0.1]}, r"^faults\.message_delay_ms: max 0\.1 is below min 0\.2"),
        ({"message_delay_ms": 0.1}, r"^faults\.message_delay_ms: must be a \[min, max\] pair"),
        ({"message_delay_ms": [-1, 1]}, r"^faults\.message_delay_ms\[0\]: must be >= 0"),
        ({"message_timeout_ms": 0}, r"^faults\.message_timeout_ms: must be > 0"),
        ({"message_retries": -1}, r"^faults\.message_retries: must be >= 0"),
        ({"op_retries": 1.5}, r"^faults\.op_retries: must be an integer"),
        ({"cluster_fail": {"cluster": 1}}, r"^faults\.cluster_fail: must be an array of tables"),
        ({"cluster_fail": [{"cluster": 2}]}, r"^faults\.cluster_fail\[0\]\.cluster: cluster 2 does not exist"),
        ({"cluster_fail": [{"cluster": 1, "when": 1}]}, r"^faults\.cluster_fail\[0\]\.when: unknown key"),
        ({"cluster_fail": [{"cluster": 1, "at_s": -1}]}, r"^faults\.cluster_fail\[0\]\.at_s: must be >= 0"),
        ({"cluster_fail": [{"cluster": 1}, {"cluster": 1, "at_s": 1}]},
         r"^faults\.cluster_fail\[1\]\.cluster: cluster 1 already fails in faults\.cluster_fail\[0\]"),
        ({"cluster_fail": [{"cluster": 1}, {"cluster": 0}]},
         r"^faults\.cluster_fail\[1\]\.cluster: every cluster would fail"),
        ({"process_death": [{"at_s": 1}]}, r"^faults\.process_death\[0\]: give either pid, or cluster and level"),
        ({"process_death": [{"pid": 1, "cluster": 0, "level": 1}]}, r"^faults\.process_death\[0\]: give either"),
        ({"process_death": [{"cluster": 0}]}, r"^faults\.process_death\[0\]\.level: cluster and level go together"),
        ({"process_death": [{"level": 1}]}, r"^faults\.process_death\[0\]\.cluster: cluster and level go together"),
        ({"process_death": [{"cluster": 0, "level": 4}]}, r"^faults\.process_death\[0\]\.level: level 4 does not"),
        ({"process_death": [{"cluster": 3, "level": 1}]}, r"^faults\.process_death\[0\]\.cluster: cluster 3 does"),
        ({"process_death": [{"pid": 70000}]}, r"^faults\.process_death\[0\]\.pid: must be < 65536"),
        ({"process_death": [{"pid": -1}]}, r"^faults\.process_death\[0\]\.pid: must be >= 0"),
    ],
)
def test_fault_config_errors_name_the_key(faults: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse({"faults": faults})


def test_fault_config_round_trips_and_is_off_by_default() -> None:
    c = parse({"faults": {
        "message_loss": 0.1, "message_delay_ms": [0.0, 0.2], "op_retries": 2,
        "cluster_fail": [{"cluster": 1, "at_s": 0.5}],
        "process_death": [{"at_s": 0.1, "pid": 3}, {"at_s": 0.2, "cluster": 0, "level": 2}],
    }})
    assert c.faults.active and c.faults.cluster_fail[0].cluster == 1
    assert c.faults.process_death[1].level == 2 and c.faults.process_death[0].cluster is None
    assert loads(to_toml(c)) == c and parse(c.to_dict()) == c
    assert "[[faults.cluster_fail]]" in to_toml(c)
    assert not parse({}).faults.active
    assert not parse({"faults": {"message_retries": 5, "message_timeout_ms": 3.0}}).faults.active
    assert parse({}).with_overrides({"faults.message_loss": 0.5}).faults.message_loss == 0.5


def test_a_bad_faults_table_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[[faults.cluster_fail]]\ncluster = 7\n")
    assert main(["simulate", str(cfg), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "faults.cluster_fail[0].cluster: cluster 7 does not exist" in captured.err


def test_no_faults_no_faults_object() -> None:
    _, s = _run(_config({}, [(1, "read", 0, 0)]))
    assert "faults" not in s
    _, s = _run(_config({"message_loss": 0.0, "message_retries": 9}, [(1, "read", 0, 0)]))
    assert "faults" not in s


# ------------------------------------------------------------ owner death
OWNER_DEATH_TRACE = [
    (150.0, 1, 0, "establish", 1, "acquire"),
    (250.0, 0, 0, "establish-target", 2, "acquire"),
    (300.0, 0, 0, "establish-target", 2, "release"),
    (350.0, 1, 0, "establish", 1, "release"),
    # Reads A (pid 0), B (pid 1), C (pid 2) of uncopied target tracks.
    (1000.0, 0, 0, "read", 1, "acquire"),
    (1000.0, 0, 1, "read", 1, "acquire"),
    (1000.0, 0, 2, "read", 1, "wait"),  # both L1 pools of c0 are owned
    (1070.0, 1, 0, "stage-source", 2, "acquire"),  # c1's only L2 pool
    (1070.0, 1, 1, "stage-source", 2, "wait"),
    # A dies holding both pools: release_all on every cluster ...
    (1100.0, 0, 0, "read", 1, "abort"),
    (1100.0, 1, 0, "stage-source", 2, "abort"),
    # ... and each pool goes to the request waiting for it (FIG 6A 606/610).
    (1100.0, 0, 2, "read", 1, "grant"),
    (1100.0, 1, 1, "stage-source", 2, "grant"),
    (1170.0, 1, 2, "stage-source", 2, "wait"),
    (1200.0, 0, 0, "read", 1, "wait"),  # A restarts, 0.1 ms later, as pid 0 again
    (1200.0, 1, 1, "stage-source", 2, "release"),
    (1200.0, 1, 2, "stage-source", 2, "grant"),
    (1280.0, 0, 1, "read", 1, "release"),
    (1280.0, 0, 0, "read", 1, "grant"),
    (1300.0, 1, 2, "stage-source", 2, "release"),
    (1350.0, 1, 0, "stage-source", 2, "acquire"),
    (1380.0, 0, 2, "read", 1, "release"),
    (1450.0, 1, 0, "stage-source", 2, "release"),
    (1530.0, 0, 0, "read", 1, "release"),
]


def test_owner_death_hands_its_pools_to_the_waiters(allocator_cls: type) -> None:
    sim = Simulation(get_fault("owner-death").config(), allocator_cls, trace=True)
    result = sim.run()
    assert result.trace == OWNER_DEATH_TRACE
    s = result.summary()
    _assert_clean(sim, s)
    assert {k: v for k, v in s["faults"].items() if v and k != "messages_sent"} == {
        "process_deaths": 1, "aborted_ops": 1, "retried_ops": 1,
        "released_tcbs": 2, "regranted_tcbs": 2, "regranted_pools": 2,
    }
    assert s["completed_ops"] == s["issued_ops"] == 3 and s["reads_checked"] == 3
    # A's latency counts from its first arrival (1.0 ms) to 1.53 ms.
    assert max(result.latencies_us) == 530.0


def test_death_by_pid_and_a_missed_death() -> None:
    by_pid = get_fault("owner-death").config().with_overrides(
        {"faults.process_death": [{"at_s": 1.1e-3, "pid": 0}, {"at_s": 1.1e-3, "pid": 99}]}
    )
    sim, s = _run(by_pid)
    assert sim.trace == OWNER_DEATH_TRACE
    assert (s["faults"]["process_deaths"], s["faults"]["deaths_missed"]) == (1, 1)
    _assert_clean(sim, s)


def test_a_death_beyond_the_retries_fails_the_operation() -> None:
    config = get_fault("owner-death").config().with_overrides({"faults.op_retries": 0})
    sim, s = _run(config)
    _assert_clean(sim, s)
    f = s["faults"]
    assert (f["aborted_ops"], f["retried_ops"], f["ops_failed"]) == (1, 0, 1)
    assert (s["completed_ops"], s["issued_ops"]) == (2, 3)


# --------------------------------------------------------- cluster failure
def test_cluster_failover_aborts_what_ran_there_and_moves_the_work() -> None:
    sim, s = _run(get_fault("cluster-failover").config())
    _assert_clean(sim, s)
    trace = sim.trace
    # The victims: every process with a step on cluster 1 at 3 ms.
    flight = _in_flight(trace, 3000.0)
    victims = {pid for pid, steps in flight.items() if any(c == 1 for c, _, _ in steps)}
    assert len(victims) == 9
    f = s["faults"]
    assert f["aborted_ops"] + f["aborted_internal"] == len(victims)
    assert (f["retried_ops"], f["retried_internal"]) == (f["aborted_ops"], f["aborted_internal"])
    assert f["ops_failed"] == f["internal_failed"] == 0
    aborted = [e for e in trace if e[5] == "abort"]
    assert {e[2] for e in aborted} == victims and {e[0] for e in aborted} == {3000.0}
    # What they held on the survivor came back with release_all.
    assert f["released_tcbs"] == sum(1 for e in aborted if e[1] == 0) == 8
    # Afterwards everything runs on cluster 0, at level 1: no cross-cluster hop.
    after = [e for e in trace if e[0] > 3000.0]
    assert after and {e[1] for e in after} == {0} and {e[4] for e in after} == {1}
    assert sim.allocators[1] is None and [v.home for v in sim.volumes] == [0, 0, 0, 0]
    assert (f["cluster_failures"], f["failed_over_volumes"]) == (1, 2)
    assert s["completed_ops"] == s["issued_ops"] == 132
    assert [r["state"] for r in s["relationships"]] == ["ended", "active"]


def test_three_clusters_fail_over_to_the_next_live_one() -> None:
    # Volume i lives on cluster i % 3; cluster 1 fails: volumes 1 and 4 go to
    # cluster 2, and 0 -> 4 still crosses clusters (0 -> 2).
    rels = [{"source": 0, "target": 4, "background_copy": True}, {"source": 2, "target": 1}]
    ops = [(0.5 + 0.1 * i, kind, v, i % 4) for i in range(12) for kind, v in (("read", 4), ("write", 1))]
    config = _config({"cluster_fail": [{"cluster": 1, "at_s": 1e-3}]}, ops, rels,
                     controller={"clusters": 3}, volumes={"count": 6, "tracks": 4})
    sim, s = _run(config)
    _assert_clean(sim, s)
    assert [v.home for v in sim.volumes] == [0, 2, 2, 0, 2, 2] and sim.route == [0, 2, 2]
    after = [e for e in sim.trace if e[0] > 1000.0]
    assert {e[1] for e in after} == {0, 2} and max(e[4] for e in after) == 2  # hops between 0 and 2
    assert s["faults"]["failed_over_volumes"] == 2


def test_a_cluster_failing_before_it_is_ready() -> None:
    # Cluster 1 fails at 0: cluster 0 accepts work once it has reported
    # itself (100 us), without waiting for the dead peer; a host op that
    # arrived at cluster 1 is routed to cluster 0.
    config = _config({"cluster_fail": [{"cluster": 1, "at_s": 0.0}]}, [(0.0, "read", 1, 0), (0.05, "read", 0, 1)])
    sim, s = _run(config)
    _assert_clean(sim, s)
    assert s["init"]["ready_us"] == [100.0, None]  # never ready: null, not a sentinel
    assert {e[1] for e in sim.trace} == {0} and s["completed_ops"] == 2


# ---------------------------------------------------------------- messages
class _Script:
    """Scripted message losses: the n-th message is lost when ``lost[n]``."""

    def __init__(self, lost: list[bool]) -> None:
        self.lost: Iterator[bool] = iter(lost)

    def __call__(self, injector: FaultInjector) -> bool:
        injector.counts["messages_sent"] += 1
        lost = next(self.lost, False)
        injector.counts["messages_lost"] += lost
        return lost


def test_a_lost_reply_is_answered_from_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    # The establish's request arrives, its reply is lost: the sender notices
    # 0.5 ms after the reply was sent and resends; the target's cluster has
    # the request id done and answers without doing the work again.
    script = _Script([False, True, False, False])
    monkeypatch.setattr(FaultInjector, "_lost", lambda self: script(self))
    config = _config({"message_loss": 0.5, "message_timeout_ms": 0.5})
    sim, s = _run(config)
    assert sim.trace == [
        (150.0, 1, 0, "establish", 1, "acquire"),
        (250.0, 0, 0, "establish-target", 2, "acquire"),  # once
        (300.0, 0, 0, "establish-target", 2, "release"),
        (900.0, 1, 0, "establish", 1, "release"),  # reply lost at 300, resent at 800, answered at 850
    ]
    f = s["faults"]
    assert (f["messages_sent"], f["messages_lost"], f["messages_retried"], f["duplicate_requests"]) == (4, 1, 1, 1)
    assert sim.volumes[1].gen == 1 and s["relationships"][0]["established_us"] == 300.0
    _assert_clean(sim, s)


def test_a_call_out_of_retries_fails_its_operation_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    # The establish gets through; every message of the read's stage
    # intercept is lost: three attempts 0.5 ms apart, then the read fails
    # and its TCB on cluster 0 comes back.
    script = _Script([False, False] + [True] * 3)
    monkeypatch.setattr(FaultInjector, "_lost", lambda self: script(self))
    config = _config({"message_loss": 0.5, "message_timeout_ms": 0.5, "message_retries": 2},
                     [(1, "read", 0, 0), (1, "read", 2, 0)])
    sim, s = _run(config)
    assert sim.trace[4:] == [
        (1000.0, 0, 0, "read", 1, "acquire"),
        (1000.0, 0, 1, "read", 1, "acquire"),
        (1020.0, 0, 1, "read", 1, "release"),  # volume 2: no relationship, no intercept
        (2520.0, 0, 0, "read", 1, "abort"),  # sent at 1020, 1520, 2020; the last lost at 2520
    ]
    f = s["faults"]
    assert (f["messages_sent"], f["messages_lost"], f["messages_retried"], f["calls_failed"]) == (5, 3, 2, 1)
    assert (f["ops_failed"], f["released_tcbs"], f["retried_ops"]) == (1, 1, 0)
    assert (s["completed_ops"], s["issued_ops"], s["reads_checked"]) == (1, 2, 1)
    _assert_clean(sim, s)


def test_total_message_loss_fails_the_establishes_not_the_reads() -> None:
    # Every message is lost: each establish fails after 1 + 3 attempts, so
    # the relationships never exist and the reads are local and correct.
    config = _config({"message_loss": 1.0}, [(5, "read", 0, 0), (5, "read", 3, 1)],
                     [REL_1_TO_0, {"source": 2, "target": 3}], volumes={"count": 4, "tracks": 4})
    sim, s = _run(config)
    _assert_clean(sim, s)
    f = s["faults"]
    assert (f["messages_sent"], f["messages_lost"], f["calls_failed"], f["internal_failed"]) == (8, 8, 2, 2)
    assert [r["state"] for r in s["relationships"]] == ["failed", "failed"]
    assert s["completed_ops"] == s["issued_ops"] == 2 and s["reads_checked"] == 2


def test_message_loss_scenario_counts() -> None:
    sim, s = _run(get_fault("message-loss").config())
    _assert_clean(sim, s)
    f = s["faults"]
    # Each lost message is resent or, on the last attempt, fails its call.
    assert f["messages_lost"] == f["messages_retried"] + f["calls_failed"] > 0
    assert f["calls_failed"] == f["ops_failed"] + f["internal_failed"]
    assert f["duplicate_requests"] > 0 and f["ops_failed"] > 0
    assert f["released_tcbs"] >= f["ops_failed"]
    assert f["aborted_ops"] == f["cluster_failures"] == f["process_deaths"] == 0


# ----------------------------------------------------------- all scenarios
@pytest.mark.parametrize("name", sorted(FAULT_SCENARIOS))
def test_fault_scenarios_recover_under_depth(name: str) -> None:
    sim = Simulation(get_fault(name).config("depth"))
    s = sim.run().summary()
    _assert_clean(sim, s)
    assert list(s["faults"]) == [*COUNTS, "stranded_waiters"]


@pytest.mark.parametrize("name", sorted(FAULT_SCENARIOS))
def test_fault_runs_are_deterministic(name: str) -> None:
    a = json.dumps(run_fault_scenario(name).summary(), sort_keys=False)
    b = json.dumps(run_fault_scenario(name).summary(), sort_keys=False)
    assert a == b
    other = get_fault(name).config().with_overrides({"controller.seed": 2})
    if name == "message-loss":  # the seed draws the losses
        assert json.dumps(Simulation(other).run().summary()) != a


def test_cli_faults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["faults", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["scenario"] for r in runs] == list(FAULT_SCENARIOS)
    assert all(r["policy"] == "depth" and r["pit_violations"] == 0 and "faults" in r for r in runs)
    assert main(["faults", "owner-death"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("owner-death (depth): 3/3 host ops completed") and "regranted_pools 2" in out
    assert main(["faults", "nope"]) == 2
    assert "unknown fault scenario 'nope'" in capsys.readouterr().err
    assert not set(FAULT_SCENARIOS) & set(SCENARIOS)  # demo stays the four patent scenarios


def test_example_faults_toml() -> None:
    sim = Simulation(load(EXAMPLES / "faults.toml"))
    s = sim.run().summary()
    _assert_clean(sim, s)
    f = s["faults"]
    assert (f["cluster_failures"], f["process_deaths"], f["deaths_missed"]) == (1, 2, 0)
    assert f["messages_lost"] > 0 and s["completed_ops"] == s["issued_ops"]


# ------------------------------------------------------------ stress example
def test_stress_example_deadlocks_shared_not_depth(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(EXAMPLES / "stress.toml")
    assert main(["simulate", path, "--json", "--policy", "shared"]) == 1  # a deadlock exits 1
    shared = json.loads(capsys.readouterr().out)
    assert shared["deadlocked"] and shared["deadlock_cycle"]
    assert shared["completed_ops"] < shared["issued_ops"] and shared["pit_violations"] == 0
    assert main(["simulate", path, "--json"]) == 0
    depth = json.loads(capsys.readouterr().out)
    assert depth["policy"] == "depth" and not depth["deadlocked"] and depth["deadlock_cycle"] == []
    assert depth["completed_ops"] == depth["issued_ops"] == shared["issued_ops"] > 1500
    assert depth["pit_violations"] == 0 and depth["leaked_tcbs"] == 0
    assert depth["tcbs_per_cluster"] == shared["tcbs_per_cluster"] == 32


# -------------------------------------------------------------- property
@st.composite
def faulty_configs(draw: st.DrawFn) -> dict[str, Any]:
    clusters = draw(st.sampled_from([2, 2, 3]))
    nvol = draw(st.integers(2, 5))
    tracks = draw(st.integers(1, 3))
    rels = relationships(draw, nvol, min_tries=0, at_ms=[0.0, 1.0, 2.0], max_streams=2)
    levels = levels_needed(clusters, [(r["source"], r["target"]) for r in rels])
    # Fault times: 0 .. 4 ms, often just after a burst of operations arrived.
    times = st.builds(lambda k, dt: round(k * 0.25e-3 + dt, 6),
                      st.integers(0, 16), st.sampled_from([0.0, 0.01e-3, 0.03e-3, 0.08e-3, 0.15e-3]))
    fail = draw(st.lists(st.integers(0, clusters - 1), max_size=clusters - 1, unique=True))
    deaths = draw(st.lists(
        st.one_of(
            st.fixed_dictionaries({"at_s": times, "pid": st.integers(0, 6)}),
            st.fixed_dictionaries({"at_s": times, "cluster": st.integers(0, clusters - 1),
                                   "level": st.integers(1, levels)}),
        ),
        max_size=3,
    ))
    return {
        "controller": {"clusters": clusters, "seed": draw(st.integers(0, 9)),
                       "message_latency_ms": draw(st.sampled_from([0.0, 0.05])), "max_sim_time_s": 60.0},
        "reservation": {"depths": [[draw(st.integers(1, 2)), 1] for _ in range(levels)],
                        "unreserved": draw(st.integers(0, 2)), "system_tcbs": 64},
        "volumes": {"count": nvol, "tracks": tracks},
        "flashcopy": rels,
        "ops": draw(host_ops(st.integers(0, nvol - 1), tracks, 30)),
        "workload": {"duration_s": 0.003, "rate_ops_per_s": draw(st.sampled_from([0.0, 3000.0])),
                     "auto_destage": draw(st.booleans())},
        "timing": {"destage_delay_us": draw(st.sampled_from([0.0, 300.0]))},
        "faults": {
            "cluster_fail": [{"cluster": c, "at_s": draw(times)} for c in fail],
            "process_death": deaths,
            "message_loss": draw(st.sampled_from([0.0, 0.2, 0.6])),
            "message_delay_ms": draw(st.sampled_from([[0.0, 0.0], [0.0, 0.1]])),
            "message_timeout_ms": draw(st.sampled_from([0.1, 0.5])),
            "message_retries": draw(st.integers(0, 2)),
            "op_retries": draw(st.integers(0, 2)),
        },
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(faulty_configs())
def test_random_faults_never_break_depth_runs(data: dict[str, Any]) -> None:
    config = parse(data)
    sim = Simulation(config)
    s = sim.run().summary()
    if "faults" not in s:  # nothing injected after all
        s["faults"] = {"ops_failed": 0, "stranded_waiters": 0}
    _assert_clean(sim, s)
