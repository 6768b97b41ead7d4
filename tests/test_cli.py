"""The command line, in-process and through subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyresv.tools.cli import COMMANDS, build_parser, main
from pyresv.sim.config import default_config, loads

DESIGN_FIELDS = {
    "policy", "completed_ops", "deadlocked", "deadlock_cycle", "pit_violations", "leaked_tcbs",
    "throughput_ops_per_s", "latency_ms", "sim_time_s",
}

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
[workload]
duration_s = 0.05
rate_ops_per_s = 4000.0
"""


def _pyresv(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # From a neutral folder, so ``-m`` imports the installed package, not a source tree.
    return subprocess.run(
        [sys.executable, "-m", "pyresv", *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def test_demo_json_parses(tmp_path: Path) -> None:
    proc = _pyresv(tmp_path, "demo", "--json")
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    assert [(r["scenario"], r["policy"]) for r in runs] == [
        (name, policy)
        for name in ("cross-cluster", "multi-target", "fig7", "fig8", "stress")
        for policy in ("shared", "deepest-first", "depth")
    ]
    for r in runs:
        assert DESIGN_FIELDS <= set(r)
        assert set(r["latency_ms"]) == {"p50", "p99"}
        assert r["pit_violations"] == 0
        if r["scenario"] == "stress":  # serving the deepest request first gets the random workload through
            assert r["deadlocked"] == (r["policy"] == "shared")
        else:  # but not the patent's examples
            assert r["deadlocked"] == (r["policy"] != "depth" and r["scenario"] != "fig7")
        assert bool(r["deadlock_cycle"]) == r["deadlocked"]
        if r["policy"] == "depth":
            assert r["leaked_tcbs"] == 0
            assert r["completed_ops"] == r["issued_ops"]
    tcbs = {(r["scenario"], r["policy"]): r["tcbs_per_cluster"] for r in runs}
    assert {tcbs[name, p] for name in ("fig8", "stress") for p in ("shared", "deepest-first", "depth")} == {8, 32}


def test_demo_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    header, rule, *rows = out.splitlines()
    assert header.split() == ["scenario", "from", "shared", "deepest-first", "depth"]
    assert rows[0].split() == ["cross-cluster", "[0007]", "0/20", "DEADLOCK", "0/20", "DEADLOCK",
                               "20/20", "p99", "0.75", "ms"]
    # the fifth row: examples/stress.toml, each policy's completion and p99
    stress = rows[4].split()
    assert stress[:4] == ["stress", "examples/stress.toml", "379/2021", "DEADLOCK"]
    assert stress[4:6] == ["2021/2021", "p99"] and stress[8:10] == ["2021/2021", "p99"]
    assert float(stress[6]) < float(stress[10])  # deepest-first is faster than the FIG 3-shaped reservation
    assert "fig8 (shared, deepest-first) wait-for cycle: c0 destage pid 0 L1 -> c1 stage-source pid 0 L2" in out
    assert "stress (shared) wait-for cycle: " in out


def test_simulate_json_is_deterministic(tmp_path: Path) -> None:
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    first = _pyresv(tmp_path, "simulate", str(cfg), "--json", "--seed", "7")
    second = _pyresv(tmp_path, "simulate", str(cfg), "--json", "--seed", "7")
    assert first.returncode == second.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    s = json.loads(first.stdout)
    assert DESIGN_FIELDS <= set(s)
    assert s["seed"] == 7 and s["policy"] == "depth" and s["completed_ops"] == s["issued_ops"] > 100
    other = _pyresv(tmp_path, "simulate", str(cfg), "--json", "--seed", "8")
    assert json.loads(other.stdout)["issued_ops"] != s["issued_ops"]


def test_simulate_default_config_json(tmp_path: Path) -> None:
    proc = _pyresv(tmp_path, "simulate", "--json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["policy"] == "depth" and s["levels"] == 4 and not s["deadlocked"]
    assert s["completed_ops"] == s["issued_ops"] > 9000
    assert s["pit_violations"] == 0 and s["leaked_tcbs"] == 0
    assert s["reads_checked"] > 4000


def test_simulate_policy_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    assert main(["simulate", str(cfg), "--policy", "shared", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "shared"
    assert main(["simulate", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "host operations" in out and "simulated host ops per wall second" in out


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[controller]\nclusterz = 2\n", "controller.clusterz: unknown key"),
        ("[reservation]\ndepths = [[4, 9], [4, 0]]\n", "reservation.depths[1]: pool_size (level 2) must be >= 1"),
        ('[controller]\npolicy = "both"\n', "controller.policy: must be one of"),
        ("[workload]\nread_fraction = 2\n", "workload.read_fraction: must be <= 1"),
    ],
)
def test_config_errors_exit_2_and_run_nothing(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    proc = _pyresv(tmp_path, "simulate", str(cfg), "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert key in proc.stderr


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(tmp_path / "nope.toml")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "cannot read" in captured.err


def test_print_config_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--print-config"]) == 0
    assert loads(capsys.readouterr().out) == default_config()
    assert main(["simulate", "--print-config", "--policy", "shared", "--seed", "3"]) == 0
    c = loads(capsys.readouterr().out)
    assert (c.controller.policy, c.controller.seed) == ("shared", 3)


def test_parser_registers_every_command() -> None:
    parser = build_parser()
    assert {"demo", "simulate"} <= set(COMMANDS)
    usage = parser.format_help()
    for name in COMMANDS:
        assert name in usage
    assert parser.parse_args(["simulate", "x.toml"]).config == "x.toml"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([])
    assert exc.value.code == 2


def test_console_script() -> None:
    script = Path(sys.executable).parent / "pyresv"
    if not script.exists():  # pragma: no cover - the package is always installed with its script
        pytest.fail(f"console script not installed next to {sys.executable}")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("pyresv ")
