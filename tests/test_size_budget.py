"""``pyresv size --budget T``: the best split of exactly T TCBs per cluster.

Every candidate keeps at least one pool of one TCB per level, so it cannot
deadlock ([0021], [0038]); the search looks for the lowest p99 latency and
is not an enumeration of every split.
"""

from __future__ import annotations

import argparse
import json
from math import comb
from pathlib import Path

import pytest

from pyresv.sim.config import load, to_toml
from pyresv.sim.engine import run
from pyresv.tools import sizing
from pyresv.tools.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BUDGET = 32
SEEDS = 2
NEW_FIELDS = {"depths", "unreserved", "wake", "tcbs_per_cluster", "latency_ms", "throughput_ops_per_s",
              "price_of_safety", "tried"}


@pytest.fixture(scope="module")
def stress_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/stress.toml with a 20 ms arrival window (shared deadlocks on every seed)."""
    config = load(EXAMPLES / "stress.toml").with_overrides({"workload.duration_s": 0.02})
    path = tmp_path_factory.mktemp("budget") / "stress.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    return path


def _size(*args: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    parser = argparse.ArgumentParser()
    sizing.add_arguments(parser)
    rc = sizing.run_cli(parser.parse_args(list(args)), out=lines.append)
    return rc, lines


@pytest.fixture(scope="module")
def answer(stress_file: Path) -> dict:
    """``pyresv size stress.toml --budget 32 --seeds 2 --json``, run once."""
    rc, lines = _size(str(stress_file), "--budget", str(BUDGET), "--seeds", str(SEEDS), "--json")
    assert rc == 0 and len(lines) == 1
    return json.loads(lines[0])


def _mean_run(config_file: Path, overrides: dict, seeds: list[int]) -> tuple[int, float]:
    base = load(config_file)
    runs = [run(base.with_overrides({**overrides, "controller.seed": s})).summary() for s in seeds]
    return sum(r["deadlocked"] for r in runs), sum(r["latency_ms"]["p99"] for r in runs) / len(runs)


def test_budget_json_fields(answer: dict) -> None:
    assert NEW_FIELDS <= set(answer)
    # today's fields stay
    assert {"fits_system_tcbs", "system_tcbs", "lower_bound", "seeds"} <= set(answer)
    assert answer["seeds"] == [1, 2]
    assert set(answer["latency_ms"]) == {"p50", "p99"}
    assert set(answer["price_of_safety"]) == {"against", "p50", "p99"}
    assert answer["price_of_safety"]["against"] == "deepest-first"
    assert answer["wake"] in ("deepest", "fifo")


def test_budget_answer_is_exactly_t_with_a_pool_per_level(answer: dict) -> None:
    depths = answer["depths"]
    assert len(depths) == 3
    assert all(pools >= 1 and size == 1 for pools, size in depths)
    assert sum(p * s for p, s in depths) + answer["unreserved"] == BUDGET == answer["tcbs_per_cluster"]
    for t in answer["tried"]:
        assert all(pools >= 1 for pools, _ in t["depths"])
        assert sum(p * s for p, s in t["depths"]) + t["unreserved"] == BUDGET
        assert t["deadlocks"] == 0  # a pool per level: no candidate can deadlock


def test_budget_search_is_not_an_enumeration(answer: dict) -> None:
    tried = answer["tried"]
    keys = [(json.dumps(t["depths"]), t["unreserved"], t["wake"]) for t in tried]
    assert len(set(keys)) == len(keys)  # each candidate run once
    # splits of 32 into 3 levels of >= 1 pool plus >= 0 unreserved, times 2 wake orders: 9,920
    every_split = 2 * comb(BUDGET, 3)
    assert len(tried) <= sizing.BUDGET_MAX_TRIES < every_split / 100
    # it starts at the [0021] bound: one pool of one TCB per level, the rest unreserved
    assert tried[0]["depths"] == [[1, 1]] * 3 and tried[0]["unreserved"] == BUDGET - 3


def test_budget_answer_is_the_lowest_p99_tried(answer: dict) -> None:
    best = min((t for t in answer["tried"] if t["ok"]), key=lambda t: t["latency_ms_p99"])
    assert (best["depths"], best["unreserved"], best["wake"]) == (
        answer["depths"], answer["unreserved"], answer["wake"])
    assert answer["latency_ms"]["p99"] == best["latency_ms_p99"]
    assert answer["latency_ms"]["p99"] <= answer["tried"][0]["latency_ms_p99"]


def test_budget_answer_confirmed_by_simulate(answer: dict, stress_file: Path) -> None:
    dead, p99 = _mean_run(stress_file, {
        "controller.policy": "depth", "reservation.depths": answer["depths"],
        "reservation.unreserved": answer["unreserved"], "reservation.wake": answer["wake"]}, [1, 2])
    assert dead == 0
    assert p99 == pytest.approx(answer["latency_ms"]["p99"], rel=1e-6)


def test_budget_price_of_safety_is_against_deepest_first_with_the_same_tcbs(answer: dict, stress_file: Path) -> None:
    dead, p99 = _mean_run(stress_file, {"controller.policy": "deepest-first", "reservation.depths": [[1, 1]] * 3,
                                         "reservation.unreserved": BUDGET - 3}, [1, 2])
    assert dead == 0
    assert answer["price_of_safety"]["p99"] == pytest.approx(answer["latency_ms"]["p99"] / p99, rel=1e-3)


def test_budget_max_tries_bounds_the_search(stress_file: Path) -> None:
    rc, lines = _size(str(stress_file), "--budget", "12", "--seeds", "1", "--max-tries", "3", "--json")
    assert rc == 0
    out = json.loads(lines[0])
    assert len(out["tried"]) == 3
    assert sum(p for p, _ in out["depths"]) + out["unreserved"] == 12


def test_budget_text_cites_the_patent(stress_file: Path) -> None:
    rc, lines = _size(str(stress_file), "--budget", "6", "--seeds", "1", "--max-tries", "4")
    assert rc == 0
    text = "\n".join(lines)
    assert "[0021]" in text and "[0038]" in text
    assert "answer:" in text and "6 TCBs per cluster" in text
    assert "price of safety" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "2"], "--budget: must be >= 3"),
        (["--budget", "0"], "--budget: must be >= 3"),
        (["--budget", "70000"], "--budget: must be <= 65536"),
        (["--budget", "8", "--max-tries", "0"], "--max-tries: must be >= 1 and <= 10000"),
        (["--budget", "8", "--max-tries", "10001"], "--max-tries: must be >= 1 and <= 10000"),
        (["--budget", "8", "--latency-factor", "2"], "--latency-factor: not used with --budget"),
        (["--budget", "8", "--workers", "2", "--seeds", "1001"], "--seeds: must be an integer in [1, 1000]"),
        (["--budget", "8", "--seeds", "0"], "--seeds: must be"),
    ],
)
def test_budget_bad_input_exits_2_naming_it(
    stress_file: Path, args: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["size", str(stress_file), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
