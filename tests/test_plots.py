"""Figures and CSVs: ``simulate --out``, ``demo --out``, ``report``; PNGs exist and are not blank."""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from pyresv.tools import plots, sweep
from pyresv.tools.cli import main
from pyresv.tools import report
from pyresv.sim.config import ConfigError, parse, to_toml
from pyresv.sim.metrics import MetricsRecorder

SMALL = tomllib.loads((Path(__file__).resolve().parents[1] / "examples" / "small.toml").read_text())
SMALL["reservation"]["depths"] = [[2, 1], [2, 1], [2, 1]]
SMALL["metrics"] = {"sample_interval_ms": 1.0}


def assert_not_blank(path: Path) -> None:
    """The PNG exists, decodes, and has real content (variance, many colours)."""
    assert path.is_file() and path.stat().st_size > 1000, path
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    rgb = img[..., :3]
    assert float(rgb.var()) > 1e-3, f"{path.name} is blank"
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20, f"{path.name} has almost no colours"


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(to_toml(parse(SMALL)), encoding="utf-8")
    return path


def test_simulate_out_writes_metrics_and_figures(small_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", str(small_file), "--json", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # stdout stays one JSON document
    assert "wrote" in captured.err and "metrics.csv" in captured.err
    for name in ("utilisation.png", "queues.png", "latency.png"):
        assert_not_blank(out / name)

    columns, rows = read_csv(out / "metrics.csv")
    assert tuple(columns) == plots.METRICS_COLUMNS
    clusters, levels = 2, 3
    assert len(rows) % (clusters * levels) == 0
    samples = len(rows) // (clusters * levels)
    assert samples >= summary["sim_time_s"] / 1e-3  # one sample per ms
    first = rows[: clusters * levels]
    assert [(r["cluster"], r["level"]) for r in first] == [
        (str(c), str(lv)) for c in range(clusters) for lv in range(1, levels + 1)
    ]
    times = [float(r["time_s"]) for r in rows[:: clusters * levels]]
    assert times == sorted(times) and times[0] == 0.0
    tcbs = summary["tcbs_per_cluster"]
    assert all(0 <= int(r["tcbs_held"]) <= tcbs and int(r["queued"]) >= 0 for r in rows)
    assert any(int(r["tcbs_held"]) > 0 for r in rows) and any(int(r["queued"]) > 0 for r in rows)
    # Completed host operations by the last sample add up to the run's.
    last = rows[-clusters * levels:]
    done = {r["cluster"]: int(r["completed_ops"]) for r in last}
    assert sum(done.values()) == summary["completed_ops"]
    # The peaks in the CSV are the run's peaks.
    for lv in range(1, levels + 1):
        for c in range(clusters):
            held = max(int(r["tcbs_held"]) for r in rows if r["level"] == str(lv) and r["cluster"] == str(c))
            assert held <= summary["per_level"][lv - 1]["peak_held"][c]


def test_demo_out_writes_the_figure(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    assert "demo.png" in capsys.readouterr().err
    assert_not_blank(out / "demo.png")


def test_latency_figure_without_operations(tmp_path):
    rec = MetricsRecorder(2, 3)
    rec.sample(0.0, [[0] * 4, [0] * 4], [[0] * 4, [0] * 4], [0, 0])
    path = plots.save(plots.plot_latency(rec.timeline()), tmp_path / "empty.png")
    assert_not_blank(path)


def test_out_must_be_a_directory(small_file, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="--out"):
        plots.out_dir(f)


@pytest.fixture
def sweep_csv(tmp_path: Path) -> Path:
    """A serial sweep: policy x one/two TCBs per level x 2 seeds, plus one failed row."""
    sets = [("controller.policy", ["depth", "shared"]),
            ("reservation.depths", [[[1, 1]] * 3, [[2, 1]] * 3])]
    result = sweep.sweep(parse(SMALL), sets, seeds=2, workers=0)
    outcomes = list(result.outcomes)
    outcomes.append(sweep.Outcome(len(outcomes), None, "RuntimeError: lost"))
    p = result.plan
    extra = sweep.Point(len(p.points), ("depth", [[1, 1]] * 3), 3, {})
    plan = sweep.SweepPlan(p.keys, p.seeds, (*p.points, extra))
    columns, rows = sweep.table(plan, outcomes)
    path = tmp_path / "sweep.csv"
    sweep.write_csv(path, columns, rows)
    return path


def test_report_writes_figure_and_table(sweep_csv, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(sweep_csv), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:3] == ["policy", "tcbs_per_cluster", "runs"]
    assert_not_blank(out / "report.png")
    _, rows = read_csv(out / "report.csv")
    got = {(r["policy"], r["tcbs_per_cluster"]): r for r in rows}
    assert set(got) == {("depth", "3"), ("depth", "6"), ("shared", "3"), ("shared", "6")}
    assert got[("depth", "3")]["runs"] == "3" and got[("depth", "3")]["failed"] == "1"
    assert all(float(r["deadlock rate"]) == 0.0 for k, r in got.items() if k[0] == "depth")
    assert float(got[("shared", "3")]["deadlock rate"]) > 0.0
    # Depth pools trade throughput for safety at the smallest size.
    assert float(got[("depth", "3")]["throughput mean"]) < float(got[("depth", "6")]["throughput mean"])


def test_report_json_matches_the_table(sweep_csv, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(sweep_csv), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["x"] == "tcbs_per_cluster"
    assert doc["wrote"] == [str(out / "report.png"), str(out / "report.csv")]
    _, rows = read_csv(out / "report.csv")
    table = {(r["policy"], r["tcbs_per_cluster"]): r for r in rows}
    got = {(g["policy"], g["x"]): g for g in doc["groups"]}
    assert set(got) == set(table)
    for key, g in got.items():
        assert (g["runs"], g["failed"]) == (int(table[key]["runs"]), int(table[key]["failed"]))
        assert g["deadlock_rate"] == pytest.approx(float(table[key]["deadlock rate"]), abs=5e-4)
    assert got[("depth", "3")]["deadlocked"] == 0 and got[("shared", "3")]["deadlocked"] > 0


def test_report_categorical_x(sweep_csv, tmp_path):
    paths, lines = report.write_report(sweep_csv, tmp_path / "r2", x="reservation.depths")
    assert_not_blank(paths[0])
    assert lines[0].split()[:2] == ["policy", "reservation.depths"]


def test_report_bad_input(tmp_path, capsys):
    bogus = tmp_path / "bogus.csv"
    bogus.write_text("a,b\n1,2\n")
    assert main(["report", str(bogus), "--out", str(tmp_path / "r")]) == 2
    assert "not a sweep CSV" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--x: no column 'nope'"):
        report.choose_x(["seed", "policy"], [], "nope")
