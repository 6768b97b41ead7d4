"""``pyresv size``: the answer passes, is the smallest that passed, its
neighbours fail, and a follow-up ``simulate`` over the seeds confirms it."""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import pytest

from pyresv.tools import sizing
from pyresv.tools.cli import main
from pyresv.sim.config import ConfigError, default_config, load, parse, to_toml

# examples/small.toml: heavy enough that one pool per level costs throughput (one process at a time
# per level and cluster), small enough to run in a fraction of a second.
SMALL = tomllib.loads((Path(__file__).resolve().parents[1] / "examples" / "small.toml").read_text())
SEEDS = 2


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("size") / "small.toml"
    path.write_text(to_toml(parse(SMALL)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def answer(small_file: Path) -> dict:
    """``pyresv size small.toml --seeds 2 --json``, run once."""
    lines: list[str] = []
    parser = argparse.ArgumentParser()
    sizing.add_arguments(parser)
    rc = sizing.run_cli(parser.parse_args([str(small_file), "--seeds", str(SEEDS), "--json"]), out=lines.append)
    assert rc == 0
    assert len(lines) == 1
    return json.loads(lines[0])


def test_lower_bound_is_one_pool_of_one_per_level():
    lb = sizing.lower_bound(parse(SMALL))
    assert lb.depths == ((1, 1), (1, 1), (1, 1)) and lb.unreserved == 0 and lb.total == 3
    assert sizing.lower_bound(default_config()).depths == ((1, 1),) * default_config().levels


def test_size_json_shape(answer):
    assert {"depths", "unreserved", "throughput_ops_per_s", "tried", "lower_bound",
            "unconstrained_throughput_ops_per_s"} <= set(answer)
    assert answer["seeds"] == [1, 2]
    assert answer["lower_bound"]["depths"] == [[1, 1], [1, 1], [1, 1]]
    for t in answer["tried"]:
        assert {"depths", "unreserved", "deadlocks", "throughput_ops_per_s", "ok"} <= set(t)
    assert answer["tried"][0]["depths"] == [[1, 1], [1, 1], [1, 1]]  # the search starts at the bound
    assert answer["fits_system_tcbs"] is True


def test_size_answer_passes_and_is_the_smallest_that_passed(answer):
    unc = answer["unconstrained_throughput_ops_per_s"]
    assert answer["throughput_ops_per_s"] >= 0.95 * unc
    tried = {(json.dumps(t["depths"]), t["unreserved"]): t for t in answer["tried"]}
    mine = tried[(json.dumps(answer["depths"]), answer["unreserved"])]
    assert mine["ok"] and mine["deadlocks"] == 0
    total = answer["tcbs_per_cluster"]
    assert total == sum(p * s for p, s in answer["depths"]) + answer["unreserved"]
    assert total == min(t["tcbs_per_cluster"] for t in answer["tried"] if t["ok"])
    # On this config one pool per level is too slow: the bound was tried and failed on throughput.
    lb = tried[(json.dumps([[1, 1], [1, 1], [1, 1]]), 0)]
    assert not lb["ok"] and lb["deadlocks"] == 0 and lb["throughput_ops_per_s"] < 0.95 * unc
    assert total > 3
    # One pool fewer at any level was tried and failed.
    for lv, (pools, size) in enumerate(answer["depths"]):
        assert size == 1
        if pools > 1:
            fewer = [list(d) for d in answer["depths"]]
            fewer[lv][0] -= 1
            assert not tried[(json.dumps(fewer), answer["unreserved"])]["ok"]


def test_size_answer_confirmed_by_simulate(answer, small_file, tmp_path, capsys):
    config = load(small_file).with_overrides(
        {"reservation.depths": answer["depths"], "reservation.unreserved": answer["unreserved"]}
    )
    path = tmp_path / "answer.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    throughputs = []
    for seed in answer["seeds"]:
        assert main(["simulate", str(path), "--seed", str(seed), "--json"]) == 0
        s = json.loads(capsys.readouterr().out)
        assert s["policy"] == "depth"
        assert s["deadlocked"] is False and s["deadlock_cycle"] == []
        assert s["completed_ops"] == s["issued_ops"]
        assert s["pit_violations"] == 0 and s["leaked_tcbs"] == 0
        throughputs.append(s["throughput_ops_per_s"])
    assert sum(throughputs) / len(throughputs) == pytest.approx(answer["throughput_ops_per_s"], abs=1e-2)


def test_size_text_output(capsys, tmp_path):
    # A light workload: the analytic lower bound already passes.
    light = parse(SMALL).with_overrides({"workload.rate_ops_per_s": 2000.0})
    path = tmp_path / "light.toml"
    path.write_text(to_toml(light), encoding="utf-8")
    assert main(["size", str(path), "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "analytic lower bound ([0021])" in out
    assert "unconstrained: 64 pools of 1 TCB per level" in out
    assert "lower bound  depths 1x1 1x1 1x1" in out
    assert "answer: depths [[1, 1], [1, 1], [1, 1]], unreserved 0 (3 TCBs per cluster)" in out


def test_size_latency_rule(answer):
    # The same config with a p99 rule as well: the answer can only grow.
    result = sizing.size(parse(SMALL), seeds=SEEDS, latency_factor=1.5)
    assert result.latency_factor == 1.5
    mine = next(t for t in result.tried if t.reservation == result.answer)
    assert mine.ok and mine.deadlocks == 0
    assert mine.latency_ms_p99 <= 1.5 * result.unconstrained_latency_ms_p99
    assert result.throughput_ops_per_s >= 0.95 * result.unconstrained_throughput_ops_per_s
    assert result.answer.total >= answer["tcbs_per_cluster"]
    assert all(not t.ok for t in result.tried if t.reservation.total < result.answer.total)


def test_size_bad_input(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--seeds"):
        sizing.size(parse(SMALL), seeds=0)
    with pytest.raises(ConfigError, match="--tolerance"):
        sizing.size(parse(SMALL), seeds=1, tolerance=1.5)
    with pytest.raises(ConfigError, match="--latency-factor"):
        sizing.size(parse(SMALL), seeds=1, latency_factor=0.5)
    bad = tmp_path / "bad.toml"
    bad.write_text("[reservation]\nunreserved = -1\n", encoding="utf-8")
    assert main(["size", str(bad)]) == 2
    assert "reservation.unreserved" in capsys.readouterr().err
