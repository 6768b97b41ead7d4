"""The three TCB policies: ``shared``, ``deepest-first`` and ``depth`` (issue 13).

Every policy gets the same TCBs per cluster (the depth config's total);
``shared`` is the status quo, one strict FIFO queue whatever ``wake`` says;
``deepest-first`` serves the deepest waiting request first and can still
deadlock; ``depth`` is the configured reservation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyresv.sim.config import ConfigError, load, parse
from pyresv.sim.engine import Simulation, run
from pyresv.sim.policies import POLICIES, allocator_args
from pyresv.sim.scenarios import SCENARIOS, run_scenario
from pyresv.tools.modelcheck import CheckConfig, check

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _stress(**overrides: object):
    """examples/stress.toml cut to a 20 ms arrival window (about 800 host operations)."""
    base = load(EXAMPLES / "stress.toml")
    return base.with_overrides({"workload.duration_s": 0.02, **overrides})


def test_the_three_policies_in_order() -> None:
    assert POLICIES == ("shared", "deepest-first", "depth")


@pytest.mark.parametrize("policy", POLICIES)
def test_config_accepts_each_policy(policy: str) -> None:
    assert parse({"controller": {"policy": policy}}).controller.policy == policy


def test_config_rejects_another_policy_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^controller\.policy: must be one of 'shared' \| 'deepest-first' \| 'depth'"):
        parse({"controller": {"policy": "deepest"}})


@pytest.mark.parametrize("wake", ["deepest", "fifo"])
def test_allocator_args_per_policy(wake: str) -> None:
    depths = [(4, 2), (4, 2), (4, 2)]
    assert allocator_args("depth", depths, 8, wake) == (depths, 8, wake)
    # 3 x 4 x 2 + 8 = 32 TCBs, all unreserved; the wake order is the policy's, not the config's.
    assert allocator_args("shared", depths, 8, wake) == ([(0, 1)] * 3, 32, "fifo")
    assert allocator_args("deepest-first", depths, 8, wake) == ([(0, 1)] * 3, 32, "deepest")
    with pytest.raises(ValueError, match="policy"):
        allocator_args("lifo", depths, 8, wake)


@pytest.mark.parametrize("wake", ["deepest", "fifo"])
def test_simulation_builds_each_policys_allocators(wake: str) -> None:
    config = _stress(**{"reservation.wake": wake})
    built = {}
    for policy in POLICIES:
        sim = Simulation(config.with_overrides({"controller.policy": policy}))
        a = sim.allocators[0]
        built[policy] = (sim.tcbs_per_cluster, a.total, a.levels, a.wake, [a.level_of(t) for t in range(a.total)])
    assert built["shared"] == (32, 32, 3, "fifo", [0] * 32)
    assert built["deepest-first"] == (32, 32, 3, "deepest", [0] * 32)
    assert built["depth"][:4] == (32, 32, 3, wake)
    assert built["depth"][4].count(0) == 8  # 8 unreserved, 24 in pools


def test_shared_ignores_wake_deepest_and_deadlocks_where_it_did() -> None:
    # With wake = "deepest" the old shared policy served the deepest waiter
    # first and completed this workload; the status quo is one FIFO queue.
    config = _stress(**{"reservation.wake": "deepest"})
    shared = run(config.with_overrides({"controller.policy": "shared"})).summary()
    deepest = run(config.with_overrides({"controller.policy": "deepest-first"})).summary()
    fifo = run(_stress(**{"reservation.wake": "fifo", "controller.policy": "shared"})).summary()
    assert shared["deadlocked"] and shared["deadlock_cycle"]
    assert shared["completed_ops"] < shared["issued_ops"]
    # The wake key changes nothing under shared: the same run as with wake = "fifo".
    assert {k: v for k, v in shared.items() if k != "relationships"} == {
        k: v for k, v in fifo.items() if k != "relationships"
    }
    assert not deepest["deadlocked"] and deepest["completed_ops"] == deepest["issued_ops"]
    assert shared["tcbs_per_cluster"] == deepest["tcbs_per_cluster"] == 32


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_has_the_depth_configs_total(policy: str) -> None:
    config = _stress(**{"controller.policy": policy, "reservation.depths": [[2, 3], [1, 1], [5, 1]],
                        "reservation.unreserved": 7})
    assert Simulation(config).tcbs_per_cluster == 6 + 1 + 5 + 7


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_deepest_first_deadlocks_the_patents_scenarios_like_shared(name: str) -> None:
    # Serving the deepest request first does not save the patent's examples:
    # every TCB is held at a level that waits on the other cluster.
    shared = run_scenario(name, "shared").summary()
    deepest = run_scenario(name, "deepest-first").summary()
    assert deepest["policy"] == "deepest-first"
    assert deepest["deadlocked"] is shared["deadlocked"] is SCENARIOS[name].shared_deadlocks
    assert deepest["deadlock_cycle"] == shared["deadlock_cycle"]
    assert deepest["pit_violations"] == 0 and deepest["leaked_tcbs"] == 0


def test_model_check_deepest_first_finds_a_deadlock() -> None:
    # Not deadlock-free: 5 operations fill both clusters' TCBs and all wait.
    r = check(CheckConfig(policy="deepest-first"))
    assert r.complete and r.deadlocks > 0 and r.violation is None
    assert r.trace and r.waiting
    assert r.to_json()["wake"] == "deepest"
    assert r.to_json()["tcbs_per_cluster"] == 5


def test_model_check_shared_is_fifo_whatever_the_wake_key() -> None:
    fifo = check(CheckConfig(policy="shared", wake="fifo"))
    deepest = check(CheckConfig(policy="shared", wake="deepest"))
    assert fifo.to_json()["wake"] == deepest.to_json()["wake"] == "fifo"
    assert (fifo.states, fifo.deadlocks, fifo.trace) == (deepest.states, deepest.deadlocks, deepest.trace)
    assert fifo.deadlocks > 0


def test_pyresv_check_policy_deepest_first_prints_a_deadlock(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pyresv", "check", "--policy", "deepest-first"],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert "policy deepest-first" in proc.stdout
    assert "shortest trace to a deadlock" in proc.stdout
    assert "wait forever" in proc.stdout


def test_check_json_policy_values(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pyresv", "check", "--policy", "deepest-first", "--max-ops", "3", "--json"],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )
    out = json.loads(proc.stdout)
    assert out["policy"] == "deepest-first" and out["wake"] == "deepest"


def test_sweep_over_the_three_policies(tmp_path: Path) -> None:
    from pyresv.tools.sweep import parse_set, plan

    config = _stress()
    p = plan(config, [parse_set("controller.policy=shared,deepest-first,depth")], 1)
    assert [pt.config["controller"]["policy"] for pt in p.points] == list(POLICIES)
