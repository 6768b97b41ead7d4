"""``pyresv compare``: the policies side by side over seeds, and the price of safety."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest

from pyresv.sim.config import load, to_toml
from pyresv.sim.engine import run
from pyresv.tools.cli import main
from pyresv.tools import compare as mod
from pyresv.tools.compare import compare, policy_row, price_of_safety

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
POLICY_KEYS = {
    "policy", "runs", "deadlocked_runs", "completed_ops", "issued_ops", "latency_ms", "throughput_ops_per_s",
}


@pytest.fixture(scope="module")
def stress_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/stress.toml with a 20 ms arrival window: shared deadlocks on every seed."""
    config = load(EXAMPLES / "stress.toml").with_overrides({"workload.duration_s": 0.02})
    path = tmp_path_factory.mktemp("compare") / "stress.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def compared(stress_file: Path) -> dict:
    """``pyresv compare stress.toml --seeds 2 --json``, run once."""
    lines: list[str] = []
    parser = argparse.ArgumentParser()
    mod.add_arguments(parser)
    assert mod.run_cli(parser.parse_args([str(stress_file), "--seeds", "2", "--json"]), out=lines.append) == 0
    assert len(lines) == 1
    return json.loads(lines[0])


def test_compare_json_fields_to_the_letter(compared: dict) -> None:
    assert set(compared) == {"tcbs_per_cluster", "seeds", "policies", "price_of_safety"}
    assert compared["tcbs_per_cluster"] == 32
    assert compared["seeds"] == [1, 2]
    assert [p["policy"] for p in compared["policies"]] == ["shared", "deepest-first", "depth"]
    for p in compared["policies"]:
        assert set(p) == POLICY_KEYS
        assert set(p["latency_ms"]) == {"p50", "p99"}
        assert p["runs"] == 2
    assert set(compared["price_of_safety"]) == {"against", "p50", "p99"}


def test_compare_aggregates_the_runs(compared: dict, stress_file: Path) -> None:
    base = load(stress_file)
    by_policy = {p["policy"]: p for p in compared["policies"]}
    for policy, row in by_policy.items():
        runs = [run(base.with_overrides({"controller.policy": policy, "controller.seed": s})).summary()
                for s in (1, 2)]
        assert row["deadlocked_runs"] == sum(r["deadlocked"] for r in runs)
        assert row["completed_ops"] == sum(r["completed_ops"] for r in runs)
        assert row["issued_ops"] == sum(r["issued_ops"] for r in runs)
        good = [r for r in runs if not r["deadlocked"]]
        if good:
            assert row["latency_ms"]["p99"] == pytest.approx(sum(r["latency_ms"]["p99"] for r in good) / len(good))
            assert row["latency_ms"]["p50"] == pytest.approx(sum(r["latency_ms"]["p50"] for r in good) / len(good))
        else:
            assert row["latency_ms"] == {"p50": None, "p99": None}
    # The status quo deadlocks on both seeds; the other two never do.
    assert by_policy["shared"]["deadlocked_runs"] == 2
    assert by_policy["shared"]["latency_ms"] == {"p50": None, "p99": None}
    assert by_policy["shared"]["throughput_ops_per_s"] is None
    assert by_policy["deepest-first"]["deadlocked_runs"] == by_policy["depth"]["deadlocked_runs"] == 0
    assert by_policy["depth"]["completed_ops"] == by_policy["depth"]["issued_ops"]


def test_compare_price_of_safety_against_deepest_first(compared: dict) -> None:
    by_policy = {p["policy"]: p for p in compared["policies"]}
    pos = compared["price_of_safety"]
    assert pos["against"] == "deepest-first"  # shared deadlocked, so it cannot be the baseline
    for q in ("p50", "p99"):
        want = by_policy["depth"]["latency_ms"][q] / by_policy["deepest-first"]["latency_ms"][q]
        assert pos[q] == pytest.approx(want, rel=1e-3)
    assert pos["p99"] > 1.0  # the configured FIG 3-shaped reservation is slower here


def _row(policy: str, dead: int, p50: float | None, p99: float | None, runs: int = 3) -> dict:
    return {"policy": policy, "runs": runs, "deadlocked_runs": dead, "completed_ops": 0, "issued_ops": 0,
            "latency_ms": {"p50": p50, "p99": p99}, "throughput_ops_per_s": None}


def test_price_of_safety_picks_the_fastest_policy_that_never_deadlocked() -> None:
    rows = [_row("shared", 0, 4.0, 40.0), _row("deepest-first", 0, 2.0, 20.0), _row("depth", 0, 6.0, 50.0)]
    assert price_of_safety(rows) == {"against": "deepest-first", "p50": 3.0, "p99": 2.5}


def test_price_of_safety_skips_a_policy_with_one_deadlocked_run() -> None:
    # deepest-first is faster over the runs that completed, but one run deadlocked.
    rows = [_row("shared", 0, 4.0, 40.0), _row("deepest-first", 1, 2.0, 20.0), _row("depth", 0, 6.0, 50.0)]
    assert price_of_safety(rows) == {"against": "shared", "p50": 1.5, "p99": 1.25}


def test_price_of_safety_is_null_when_every_other_policy_deadlocked() -> None:
    rows = [_row("shared", 3, None, None), _row("deepest-first", 2, 2.0, 20.0), _row("depth", 0, 6.0, 50.0)]
    assert price_of_safety(rows) == {"against": None, "p50": None, "p99": None}


def test_price_of_safety_is_null_without_depth() -> None:
    rows = [_row("shared", 0, 4.0, 40.0), _row("deepest-first", 0, 2.0, 20.0)]
    assert price_of_safety(rows) == {"against": None, "p50": None, "p99": None}


def test_price_of_safety_ratio_is_null_when_depth_completed_nothing() -> None:
    rows = [_row("deepest-first", 0, 2.0, 20.0), _row("depth", 0, None, None)]
    assert price_of_safety(rows) == {"against": "deepest-first", "p50": None, "p99": None}


def test_policy_row_means_over_the_runs_that_did_not_deadlock() -> None:
    def summary(dead: bool, done: int, p50: float | None, p99: float | None, tp: float) -> dict:
        return {"deadlocked": dead, "completed_ops": done, "issued_ops": 10,
                "latency_ms": {"p50": p50, "p99": p99}, "throughput_ops_per_s": tp}

    row = policy_row("depth", [summary(False, 10, 1.0, 3.0, 100.0), summary(True, 4, 9.0, 99.0, 7.0),
                               summary(False, 10, 2.0, 5.0, 300.0)])
    assert row == {"policy": "depth", "runs": 3, "deadlocked_runs": 1, "completed_ops": 24, "issued_ops": 30,
                   "latency_ms": {"p50": 1.5, "p99": 4.0}, "throughput_ops_per_s": 200.0}


def test_compare_text_table_and_out_dir(stress_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", str(stress_file), "--seeds", "2", "--policies", "deepest-first,shared",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["policy", "runs", "deadlocked"]
    assert lines[2].split()[0] == "deepest-first" and lines[3].split()[0] == "shared"
    assert "price of safety" in text  # and why there is none: depth was not compared
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (out / "compare.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["policy"] for r in rows] == ["deepest-first", "shared"]
    assert rows[1]["deadlocked_runs"] == "2" and rows[1]["latency_ms_p99"] == ""
    assert rows[0]["deadlocked_runs"] == "0" and float(rows[0]["latency_ms_p99"]) > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policies", "shared,lifo"], "--policies: unknown policy 'lifo'"),
        (["--policies", "depth,depth"], "--policies: 'depth' given twice"),
        (["--policies", ""], "--policies"),
        (["--seeds", "0"], "--seeds: must be"),
        (["--workers", "-1"], "--workers: must be >= 0"),
    ],
)
def test_compare_bad_input_exits_2_naming_it(
    stress_file: Path, args: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["compare", str(stress_file), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_compare_on_dask_gives_the_serial_answer(stress_file: Path, compared: dict) -> None:
    result = compare(load(stress_file), seeds=2, workers=1)
    assert result.to_dict() == compared


def test_compare_set_overrides_the_config(stress_file: Path, capsys: pytest.CaptureFixture) -> None:
    # The split `size --budget 32` finds on this file, given on the command line.
    args = ["compare", str(stress_file), "--seeds", "1", "--policies", "depth", "--json",
            "--set", "reservation.depths=[[3,1],[5,1],[1,1]]", "--set", "reservation.unreserved=23",
            "--set", "reservation.wake=deepest"]
    assert main(args) == 0
    got = json.loads(capsys.readouterr().out)
    want = run(load(stress_file).with_overrides({
        "reservation.depths": [[3, 1], [5, 1], [1, 1]], "reservation.unreserved": 23,
        "reservation.wake": "deepest"})).summary()
    assert got["tcbs_per_cluster"] == 32
    assert got["policies"][0]["latency_ms"] == want["latency_ms"]
    assert got["price_of_safety"] == {"against": None, "p50": None, "p99": None}


def test_compare_text_says_why_there_is_no_price(stress_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", str(stress_file), "--seeds", "1", "--policies", "depth"]) == 0
    assert "price of safety: not computed (no other policy was compared)" in capsys.readouterr().out
    assert main(["compare", str(stress_file), "--seeds", "1", "--policies", "shared,depth"]) == 0
    assert "price of safety: none to pay: every other policy deadlocked at least once" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("reservation.unreserved=1,2", "reservation.unreserved: --set takes one value here, got 2"),
        ("reservation.unreservd=3", "reservation.unreservd: unknown key"),
        ("reservation.wake=lifo", "reservation.wake: must be one of"),
    ],
)
def test_compare_bad_set_exits_2(stress_file: Path, value: str, message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", str(stress_file), "--set", value]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
