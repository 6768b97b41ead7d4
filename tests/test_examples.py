"""The examples run as users run them: the SimPy model and the Cython simulator."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _simpy_model(resource: str, tmp_path: Path) -> tuple[int, list[dict]]:
    run = _run([str(EXAMPLES / "simpy_nested.py"), "--resource", resource, "--json"], tmp_path)
    return run.returncode, [json.loads(line) for line in run.stdout.splitlines()]


def test_simpy_model_stops_silently_with_simpys_resources(tmp_path: Path) -> None:
    code, results = _simpy_model("simpy", tmp_path)
    assert code == 1
    assert [r["kind"] for r in results] == ["resource", "priority", "preemptive"]
    for result in results:
        assert result["completed"] < result["requests"] == 100
        cycle = result["deadlock_cycle"]
        assert len(cycle) >= 2
        # the cycle runs through both servers: a worker of each is held by a waiting step
        assert any("holds A unit" in step for step in cycle) and any("holds B unit" in step for step in cycle)
        assert any("waits for A," in step or "waits for B," in step for step in cycle)


def test_simpy_model_completes_with_depth_resources(tmp_path: Path) -> None:
    code, results = _simpy_model("depth", tmp_path)
    assert code == 0
    assert [r["kind"] for r in results] == ["resource", "priority", "preemptive"]
    for result in results:
        assert result["completed"] == result["requests"] == 100
        assert result["deadlock_cycle"] == []
    assert results[2]["preempted"] > 0  # top-level requests did preempt nested ones


def test_simpy_model_differs_by_one_line() -> None:
    # The model calls only request() and `with`: the two runs differ in make_server's return lines.
    source = (EXAMPLES / "simpy_nested.py").read_text()
    returns = [line.strip() for line in source.splitlines() if line.strip().startswith("return") and "Resource(env" in line]
    assert returns == [
        "return simpy.PriorityResource(env, capacity=6)",
        "return simpy.PreemptiveResource(env, capacity=6)",
        "return simpy.Resource(env, capacity=6)",
        "return DepthPriorityResource(env, capacity=6, levels=3)",
        "return DepthPreemptiveResource(env, capacity=6, levels=3)",
        "return DepthResource(env, capacity=6, levels=3)",
    ]


@pytest.mark.slow
def test_cython_simulator_builds_and_runs(tmp_path: Path) -> None:
    pytest.importorskip("Cython")
    src = tmp_path / "cython_sim"
    shutil.copytree(EXAMPLES / "cython_sim", src)
    build = _run(["setup.py", "build_ext", "--inplace"], src, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    run = _run(["run.py", "--json", "--ops", "5000"], src)
    assert run.returncode == 0, run.stdout + run.stderr
    shared, depth = (json.loads(line) for line in run.stdout.splitlines())
    assert shared["policy"] == "shared" and depth["policy"] == "depth"
    assert shared["tcbs_per_cluster"] == depth["tcbs_per_cluster"] == 8
    # all TCBs unreserved: every one ends up held by a step waiting on the other cluster
    assert shared["deadlocked"] and shared["stuck"] > 0 and shared["held_at_end"] == 2 * 8
    # reserved per level: every operation completes, nothing is left held or queued
    assert not depth["deadlocked"] and depth["completed"] == 5000
    assert depth["stuck"] == 0 and depth["held_at_end"] == 0
    assert depth["events"] == 5000 * (3 * 3 - 1)  # arrive, 3 works, 2 calls, 2 returns per op


def test_stress_example_is_the_demos_stress_workload() -> None:
    from pyresv.sim.config import load, loads
    from pyresv.sim.scenarios import STRESS_TOML, get

    assert load(EXAMPLES / "stress.toml") == loads(STRESS_TOML) == get("stress").config("depth")


def test_heavy_example_three_clusters_four_levels_shared_deadlocks_depth_completes() -> None:
    # examples/heavy.toml, the README's "What safety costs" workload (seed 1 only, to stay quick).
    from pyresv.sim.config import load
    from pyresv.sim.engine import run

    config = load(EXAMPLES / "heavy.toml")
    assert (config.controller.clusters, config.levels) == (3, 4)
    runs = {p: run(config.with_overrides({"controller.policy": p})).summary()
            for p in ("shared", "deepest-first", "depth")}
    assert {r["tcbs_per_cluster"] for r in runs.values()} == {48}
    assert runs["shared"]["deadlocked"] and runs["shared"]["deadlock_cycle"]
    for p in ("deepest-first", "depth"):
        assert not runs[p]["deadlocked"] and runs[p]["completed_ops"] == runs[p]["issued_ops"] > 5000
        assert runs[p]["pit_violations"] == 0
