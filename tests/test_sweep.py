"""Sweeps on Dask: --set parsing, up-front validation, a real LocalCluster on
127.0.0.1, the CSV (columns, order, values), failing points, and an external
scheduler and worker started and stopped by pid."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from pyresv.tools import sweep
from pyresv.tools.cli import main
from pyresv.sim.config import ConfigError, parse, to_toml

# Two clusters, 3 levels, a burst of host operations on two FlashCopy pairs:
# with one TCB per level per cluster the shared pool deadlocks on seeds 1 and
# 2 while the depth pools never do; with two per level neither deadlocks.
SMALL = tomllib.loads((Path(__file__).resolve().parents[1] / "examples" / "small.toml").read_text())
ONE = [[1, 1], [1, 1], [1, 1]]
TWO = [[2, 1], [2, 1], [2, 1]]
SETS = [("controller.policy", ["depth", "shared"]), ("reservation.depths", [ONE, TWO])]
CONNECT_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def client():
    """A LocalCluster of 2 single-threaded worker processes on 127.0.0.1 (the sweep's own)."""
    with sweep.open_client(2) as c:
        yield c


@pytest.fixture
def small_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(to_toml(parse(SMALL)), encoding="utf-8")
    return path


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


# ------------------------------------------------------------ --set values
@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("0,2,4", [0, 2, 4]),
        ("depth,shared", ["depth", "shared"]),
        ("0.5, true", [0.5, True]),
        ('"a,b",c', ["a,b", "c"]),
        ("[[1,1],[1,1]],[[2,1],[2,1]]", [[[1, 1], [1, 1]], [[2, 1], [2, 1]]]),
        ("[[4, 9], [4, 9], [4, 9]]", [[[4, 9], [4, 9], [4, 9]]]),
    ],
)
def test_parse_values(text, values):
    assert sweep.parse_values("k", text) == values


@pytest.mark.parametrize("text", ["1,,2", "", "[1,2", "1 2"])
def test_parse_values_bad(text):
    with pytest.raises(ConfigError, match=r"^workload\.rate_ops_per_s: "):
        sweep.parse_values("workload.rate_ops_per_s", text)


def test_parse_set_needs_key_and_equals():
    assert sweep.parse_set("reservation.unreserved=0,2") == ("reservation.unreserved", [0, 2])
    with pytest.raises(ConfigError, match="expected KEY=V1,V2"):
        sweep.parse_set("reservation.unreserved")


# -------------------------------------------------------------------- plan
def test_plan_order_and_seeds():
    config = parse(SMALL).with_overrides({"controller.seed": 7})
    p = sweep.plan(config, SETS, seeds=2)
    got = [(pt.values, pt.seed) for pt in p.points]
    assert got == [
        (("depth", ONE), 7), (("depth", ONE), 8), (("depth", TWO), 7), (("depth", TWO), 8),
        (("shared", ONE), 7), (("shared", ONE), 8), (("shared", TWO), 7), (("shared", TWO), 8),
    ]
    assert [pt.index for pt in p.points] == list(range(8))
    # Workers get plain data: the full config, with the seed and swept values applied.
    first = p.points[1].config
    assert first["controller"]["seed"] == 8 and first["controller"]["policy"] == "depth"
    assert first["reservation"]["depths"] == ONE
    assert parse(first).workload.rate_ops_per_s == 50000.0


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        ([("reservation.nope", [1])], r"^reservation\.nope: unknown key"),
        ([("nope.key", [1])], r"^nope\.key: unknown table"),
        ([("reservation.unreserved", [0, -1])], r"^reservation\.unreserved: must be >= 0.*unreserved=-1"),
        ([("controller.policy", ["depth", "deep"])], r"^controller\.policy: must be one of"),
        ([("reservation.depths", [[[1, 1], [1, 1]]])], r"^reservation\.depths: .*need 3 depth levels"),
        ([("reservation.unreserved", [1]), ("reservation.unreserved", [2])], "more than one --set"),
    ],
)
def test_plan_rejects_bad_points(sets, match):
    with pytest.raises(ConfigError, match=match):
        sweep.plan(parse(SMALL), sets, seeds=1)


def test_plan_rejects_bad_seeds():
    with pytest.raises(ConfigError, match="--seeds"):
        sweep.plan(parse(SMALL), SETS, seeds=0)


def test_cli_bad_key_exits_2_and_runs_nothing(small_config_file, tmp_path, capsys):
    out = tmp_path / "never.csv"
    rc = main(["sweep", str(small_config_file), "--set", "reservation.unreserved=0,x y",
               "--workers", "0", "--out", str(out)])
    assert rc == 2
    assert "reservation.unreserved" in capsys.readouterr().err
    rc = main(["sweep", str(small_config_file), "--set", "controller.polcy=depth",
               "--workers", "0", "--out", str(out)])
    assert rc == 2
    assert "controller.polcy: unknown key" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------ on the cluster
def test_local_cluster_binds_loopback_only(client):
    info = client.scheduler_info()
    assert client.scheduler.address.startswith("tcp://127.0.0.1:")
    assert len(info["workers"]) == 2
    assert all(addr.startswith("tcp://127.0.0.1:") for addr in info["workers"])
    assert all(w["nthreads"] == 1 for w in info["workers"].values())
    assert client.dashboard_link.startswith("http://127.0.0.1:")


def test_sweep_csv_on_local_cluster(client, tmp_path):
    config = parse(SMALL)
    # One point per task: completions come back in any order, rows must not.
    result = sweep.sweep(config, SETS, seeds=2, client=client, chunk_size=1)
    path = tmp_path / "sweep.csv"
    sweep.write_csv(path, result.columns, result.rows)
    columns, rows = read_csv(path)

    assert columns[:3] == ["controller.policy", "reservation.depths", "seed"]
    assert columns[3:13] == [
        "policy", "completed_ops", "deadlocked", "deadlock_cycle", "pit_violations", "leaked_tcbs",
        "throughput_ops_per_s", "latency_ms_p50", "latency_ms_p99", "sim_time_s",
    ]
    assert columns[-1] == "error"
    assert {"issued_ops", "tcbs_per_cluster", "per_level"} <= set(columns)
    assert "seed" not in columns[3:]  # the summary's seed is the row's seed
    assert len(rows) == 8
    assert [(r["controller.policy"], r["reservation.depths"], r["seed"]) for r in rows] == [
        (pol, json.dumps(d, separators=(",", ":")), str(seed))
        for pol in ("depth", "shared") for d in (ONE, TWO) for seed in (1, 2)
    ]
    assert all(r["error"] == "" for r in rows)
    for r in rows:
        assert r["policy"] == r["controller.policy"]
        assert r["pit_violations"] == "0" and r["leaked_tcbs"] == "0"
        assert r["tcbs_per_cluster"] == ("3" if r["reservation.depths"] == "[[1,1],[1,1],[1,1]]" else "6")
        assert (r["deadlock_cycle"] != "") == (r["deadlocked"] == "true")
        if r["deadlocked"] == "false":
            assert r["completed_ops"] == r["issued_ops"]
            assert float(r["throughput_ops_per_s"]) > 0
    dead = [(r["controller.policy"], r["reservation.depths"]) for r in rows if r["deadlocked"] == "true"]
    # The shared pool deadlocks with one TCB per level; the depth pools never do.
    assert ("shared", "[[1,1],[1,1],[1,1]]") in dead
    assert all(policy == "shared" for policy, _ in dead)
    cycle = next(r["deadlock_cycle"] for r in rows if r["deadlocked"] == "true")
    assert " -> " in cycle

    # Same rows as a serial run: results do not depend on where or in what order they ran.
    serial = sweep.sweep(config, SETS, seeds=2, workers=0)
    assert serial.rows == result.rows


def test_failing_point_is_a_row(client, tmp_path):
    p = sweep.plan(parse(SMALL), SETS, seeds=2)
    configs = [pt.config for pt in p.points]
    # A worker that cannot run point 5 (e.g. a different pyresv there): its
    # config is rejected in the worker; the exception becomes that row's error.
    configs[5] = json.loads(json.dumps(configs[5]))
    configs[5]["reservation"]["pool_count"] = 3
    outcomes = sweep.execute(configs, client, chunk_size=3)
    assert [o.index for o in outcomes] == list(range(8))
    assert [bool(o.error) for o in outcomes] == [False] * 5 + [True] + [False] * 2
    assert outcomes[5].summary is None
    assert outcomes[5].error.startswith("ConfigError: reservation.pool_count: unknown key")
    columns, rows = sweep.table(p, outcomes)
    path = tmp_path / "with_error.csv"
    sweep.write_csv(path, columns, rows)
    _, back = read_csv(path)
    assert len(back) == 8
    bad = back[5]
    assert (bad["controller.policy"], bad["reservation.depths"], bad["seed"]) == ("shared", "[[1,1],[1,1],[1,1]]", "2")
    assert bad["error"].startswith("ConfigError: reservation.pool_count")
    assert bad["completed_ops"] == "" and bad["deadlocked"] == ""
    assert all(r["error"] == "" and r["completed_ops"] for i, r in enumerate(back) if i != 5)


def test_run_chunk_catches_each_point():
    good = parse(SMALL).to_dict()
    out = sweep.run_chunk([(0, {"controller": {"clusters": 1}}), (1, good)])
    assert out[0][0] == 0 and out[0][1] is None and out[0][2].startswith("ConfigError: controller.clusters")
    assert out[1][0] == 1 and out[1][2] == "" and out[1][1]["completed_ops"] > 0


def test_cli_serial_sweep(small_config_file, tmp_path, capsys):
    out = tmp_path / "cli.csv"
    rc = main(["sweep", str(small_config_file), "--set", "reservation.unreserved=0,2",
               "--set", "controller.policy=shared", "--seeds", "2", "--workers", "0", "--out", str(out)])
    assert rc == 0
    assert "4 runs (2 points x 2 seeds) serially" in capsys.readouterr().out
    columns, rows = read_csv(out)
    assert columns[:3] == ["reservation.unreserved", "controller.policy", "seed"]
    assert [(r["reservation.unreserved"], r["seed"]) for r in rows] == [("0", "1"), ("0", "2"), ("2", "1"), ("2", "2")]
    assert [r["tcbs_per_cluster"] for r in rows] == ["9", "9", "11", "11"]


# ------------------------------------------------------- external scheduler
def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_for(predicate, what: str, procs: list[subprocess.Popen], timeout: float = CONNECT_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"{what}: {p.args[1:3]} exited with {p.returncode}")
        time.sleep(0.2)
    pytest.fail(f"{what}: not ready after {timeout} s")


def test_sweep_on_external_scheduler(small_config_file, tmp_path, request):
    dask_cli = [sys.executable, "-m", "dask"]
    # Run from tmp_path: `python -m` puts the working directory first on sys.path, and from
    # the repository root that would import the source folder instead of the installed package.
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED="False")
    sched_file = tmp_path / "scheduler.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    log_files = [(logs / "scheduler.log").open("w"), (logs / "worker.log").open("w")]

    def stop_all() -> None:
        for p in reversed(procs):  # worker first, then the scheduler
            _stop(p)
        for f in log_files:
            f.close()

    request.addfinalizer(stop_all)
    # Every listener on 127.0.0.1: --no-dashboard alone still serves HTTP on all interfaces.
    procs.append(subprocess.Popen(
        [*dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)],
        stdout=subprocess.DEVNULL, stderr=log_files[0], env=env, cwd=tmp_path,
        start_new_session=True,
    ))

    def address() -> str | None:
        try:
            return json.loads(sched_file.read_text())["address"]
        except (OSError, ValueError, KeyError):
            return None

    addr = _wait_for(address, "scheduler", procs)
    assert addr.startswith("tcp://127.0.0.1:")
    # No worker yet: a clear error rather than tasks waiting forever.
    with pytest.raises(ConfigError, match="^--scheduler: no worker connected to tcp://127.0.0.1:.* within 1 s"):
        with sweep.open_client(scheduler=addr, timeout=1.0):
            pytest.fail("a sweep started without workers")
    procs.append(subprocess.Popen(
        [*dask_cli, "worker", addr, "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
         "--no-nanny", "--no-dashboard", "--dashboard-address", "127.0.0.1:0", "--death-timeout", "60"],
        stdout=subprocess.DEVNULL, stderr=log_files[1], env=env, cwd=tmp_path,
        start_new_session=True,
    ))

    from distributed import Client

    with Client(addr, timeout=CONNECT_TIMEOUT_S) as c:
        c.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        worker_addrs = list(c.scheduler_info()["workers"])
    assert len(worker_addrs) == 1 and worker_addrs[0].startswith("tcp://127.0.0.1:")

    out = tmp_path / "external.csv"
    rc = main(["sweep", str(small_config_file), "--set", "controller.policy=depth,shared",
               "--set", "reservation.depths=[[1,1],[1,1],[1,1]]", "--seeds", "2",
               "--scheduler", addr, "--out", str(out)])
    assert rc == 0
    _, rows = read_csv(out)
    assert [(r["controller.policy"], r["seed"], r["error"]) for r in rows] == [
        ("depth", "1", ""), ("depth", "2", ""), ("shared", "1", ""), ("shared", "2", ""),
    ]
    assert [r["deadlocked"] for r in rows[:2]] == ["false", "false"]
    assert "true" in [r["deadlocked"] for r in rows[2:]]
    stop_all()
    assert all(p.poll() is not None for p in procs)
    assert all(p.returncode in (0, -signal.SIGTERM, -signal.SIGKILL) for p in procs)


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(ConfigError, match="^--scheduler: cannot connect to tcp://127.0.0.1:9"):
        with sweep.open_client(scheduler="tcp://127.0.0.1:9", timeout=1.0):
            pytest.fail("connected to a closed port")


def test_progress_bar_only_when_asked_or_on_a_terminal(capsys):
    configs = [pt.config for pt in sweep.plan(parse(SMALL), [("controller.policy", ["depth"])], seeds=2).points]
    sweep.execute(configs, None, progress=True)
    err = capsys.readouterr().err
    assert "sweep" in err and "2/2" in err
    sweep.execute(configs, None, progress=None)  # stderr is not a terminal under pytest
    assert capsys.readouterr().err == ""


def test_sweep_json_prints_the_rows(small_config_file, tmp_path, capsys):
    out = tmp_path / "s.csv"
    rc = main(["sweep", str(small_config_file), "--set", "controller.policy=depth,shared",
               "--seeds", "2", "--workers", "0", "--out", str(out), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["runs"], doc["points"], doc["seeds"], doc["failed"]) == (4, 2, 2, 0)
    columns, rows = read_csv(out)
    assert doc["columns"] == columns
    assert [(r["controller.policy"], r["seed"]) for r in doc["rows"]] == [
        (r["controller.policy"], int(r["seed"])) for r in rows
    ]
    assert [r["completed_ops"] for r in doc["rows"]] == [int(r["completed_ops"]) for r in rows]
