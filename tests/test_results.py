"""Honest results (issue 11, section 4).

A deadlocked ``simulate`` exits 1, like ``check``; its throughput until the
deadlock is reported as such (``throughput_until_deadlock_ops_per_s``) and
``throughput_ops_per_s`` is null, so a stalled run cannot pass for a healthy
one. A time that never came (a relationship that never ended) is null, not -1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from pyresv.sim.config import load, loads
from pyresv.sim.engine import run
from pyresv.tools.cli import main

STRESS = Path(__file__).resolve().parents[1] / "examples" / "stress.toml"

SMALL = """\
[reservation]
depths = [[2, 2], [2, 2], [2, 2]]
unreserved = 4
[volumes]
count = 4
tracks = 16
[[flashcopy]]
source = 0
target = 1
background_copy = false
[workload]
duration_s = 0.02
rate_ops_per_s = 4000.0
"""


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_a_deadlocked_simulate_exits_1_and_reports_throughput_until_the_deadlock(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate", str(STRESS), "--policy", "shared", "--json"]) == 1
    s = json.loads(capsys.readouterr().out)
    assert s["deadlocked"] is True
    assert "throughput_ops_per_s" in s and s["throughput_ops_per_s"] is None  # DESIGN section 3 keeps the key
    assert s["throughput_until_deadlock_ops_per_s"] == round(s["completed_ops"] / s["sim_time_s"], 3)
    assert s["throughput_until_deadlock_ops_per_s"] > 0
    assert -1.0 not in list(_numbers(s)), "a sentinel -1.0 in the summary"
    assert all(r["ended_us"] is None for r in s["relationships"] if r["state"] != "ended")

    assert main(["simulate", str(STRESS), "--policy", "shared"]) == 1
    text = capsys.readouterr().out
    assert "deadlocked        yes" in text
    assert "until the deadlock" in text


def test_a_run_that_completes_exits_0_with_its_throughput(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    assert main(["simulate", str(cfg), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["deadlocked"] is False
    assert s["throughput_ops_per_s"] == round(s["completed_ops"] / s["sim_time_s"], 3) > 0
    assert s["throughput_until_deadlock_ops_per_s"] is None
    # No background copy: the relationship never ended; it was established.
    (rel,) = s["relationships"]
    assert rel["state"] != "ended" and rel["ended_us"] is None and rel["established_us"] >= 0
    assert -1.0 not in list(_numbers(s))


def test_summaries_of_both_kinds_share_their_keys() -> None:
    healthy = run(loads(SMALL)).summary()
    dead = run(load(STRESS).with_overrides({"controller.policy": "shared"})).summary()
    assert dead["deadlocked"] and not healthy["deadlocked"]
    assert [k for k in healthy if k in dead] == [k for k in dead if k in healthy]
    for key in ("throughput_ops_per_s", "throughput_until_deadlock_ops_per_s"):
        assert key in healthy and key in dead


def test_a_sweep_row_of_a_deadlocked_run_has_no_throughput(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.csv"
    rc = main(["sweep", str(STRESS), "--set", "controller.policy=shared,depth", "--workers", "0",
               "--out", str(out), "--json"])
    assert rc == 0  # no run failed: a deadlock is a result, not an error
    rows = {r["policy"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["shared"]["deadlocked"] and rows["shared"]["throughput_ops_per_s"] is None
    assert rows["shared"]["throughput_until_deadlock_ops_per_s"] > 0
    assert rows["depth"]["throughput_ops_per_s"] > 0
