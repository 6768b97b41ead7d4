"""Every bad input is a clean refusal before any work (issue 11, sections 2-3).

Each case runs the command line in-process with the simulator's run loop
replaced by one that fails the test: a refusal must come before any run.
It must exit 2 with one line on stderr that names the key, argument or file,
and no traceback. The hostile inputs are the classes found by probing the CLI:
files that are not UTF-8 or never end, nesting deep enough to exhaust the
recursion limit, sizes whose product a run cannot hold, outputs that cannot be
written, malformed scheduler addresses, over-long CSV fields.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from pyresv.sim import config as config_mod
from pyresv.sim.engine import Simulation
from pyresv.tools.cli import main

SMALL = """\
[reservation]
depths = [[1, 1], [1, 1], [1, 1]]
unreserved = 0
[volumes]
count = 4
tracks = 16
[[flashcopy]]
source = 0
target = 1
[workload]
duration_s = 0.001
rate_ops_per_s = 5000.0
"""


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any simulation run fails the test: refusals come before the work."""

    def ran(self: Simulation) -> None:
        raise AssertionError("a simulation ran before the input was refused")

    monkeypatch.setattr(Simulation, "run", ran)


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], *names: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def _write(tmp_path: Path, name: str, data: str | bytes) -> str:
    p = tmp_path / name
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data)
    return str(p)


# ------------------------------------------------------------ config files
def _bad_files(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(what, path, text the message must contain)."""
    yield "binary", _write(tmp_path, "binary.toml", b"\xff\xfe\x00garbage\x80"), "UTF-8"
    yield "latin-1", _write(tmp_path, "latin1.toml", "[controller]\n# caf\xe9\n".encode("latin-1")), "UTF-8"
    yield "/dev/zero", "/dev/zero", "larger than"
    big = tmp_path / "big.toml"
    with big.open("wb") as fh:  # sparse: no disk used
        fh.truncate(config_mod.MAX_INPUT_BYTES + 1)
    yield "over the size limit", str(big), "larger than"
    yield "nested arrays", _write(tmp_path, "deep.toml", "x = " + "[" * 5000 + "]" * 5000 + "\n"), "nested"
    yield "nested tables", _write(tmp_path, "deept.toml", "a = " + "{b = " * 3000 + "1" + "}" * 3000), "nested"


@pytest.mark.parametrize("command", [
    ["simulate"], ["check"], ["sweep", "--workers", "0", "--out", "OUT/s.csv"], ["size"],
])
def test_unreadable_config_files_are_refused(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    for what, path, expect in _bad_files(tmp_path):
        argv = [command[0], path, *[a.replace("OUT", str(tmp_path)) for a in command[1:]]]
        line = _refused(capsys, argv, expect)
        assert path in line, (what, line)


def test_a_long_cascade_is_refused_by_its_levels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    # A chain of 3000 relationships once recursed through levels_needed until
    # RecursionError; it needs more levels than any run may have.
    chain = "".join(f"[[flashcopy]]\nsource = {i}\ntarget = {i + 1}\nat_s = {i * 0.001}\n" for i in range(3000))
    levels = str([[1, 1]] * 3100)
    for body in (chain, f"[reservation]\ndepths = {levels}\nsystem_tcbs = 100000\n" + chain):
        path = _write(tmp_path, "cascade.toml", "[volumes]\ncount = 3001\ntracks = 1\n" + body)
        _refused(capsys, ["simulate", path], str(config_mod.MAX_LEVELS))


# ---------------------------------------------------------- size-like keys
def _with(table: str, body: str) -> str:
    """SMALL with ``body`` replacing (or added as) ``[table]``."""
    kept: list[str] = []
    skipping = False
    for line in SMALL.splitlines():
        if line.startswith("["):
            skipping = line == f"[{table}]"
        if not skipping:
            kept.append(line)
    return "\n".join(kept) + f"\n[{table}]\n{body}\n"


SIZES = [
    # (what, table, body, the key the message names)
    ("tracks 2^20 x 2^24", "volumes", f"count = {1 << 20}\ntracks = {1 << 24}", "volumes.tracks"),
    ("tracks 4 x 2^24", "volumes", f"count = 4\ntracks = {1 << 24}", "volumes.tracks"),
    ("arrivals 1e9/s x 1000 s", "workload", "duration_s = 1000.0\nrate_ops_per_s = 1e9", "workload.rate_ops_per_s"),
    ("arrivals 1e12/s", "workload", "duration_s = 0.001\nrate_ops_per_s = 1e12", "workload.rate_ops_per_s"),
    ("duration 1e308 s", "workload", "duration_s = 1e308", "workload.duration_s"),
    ("duration 1e9 s", "workload", "duration_s = 1e9\nrate_ops_per_s = 0.0", "workload.duration_s"),
    ("TCBs 2^31 per cluster", "reservation",
     f"depths = [[{2**16}, {2**15}], [1, 1], [1, 1]]\nunreserved = 0\nsystem_tcbs = {2**40}", "reservation.system_tcbs"),
    ("unreserved 2^32", "reservation",
     f"depths = [[1, 1], [1, 1], [1, 1]]\nunreserved = {2**32}\nsystem_tcbs = {2**40}", "reservation.unreserved"),
    ("system_tcbs 2^63", "reservation", f"depths = [[1, 1], [1, 1], [1, 1]]\nsystem_tcbs = {2**63}",
     "reservation.system_tcbs"),
    ("pools 2^40", "reservation", f"depths = [[{2**40}, 1], [1, 1], [1, 1]]", "reservation.depths[0]"),
    ("3000 levels", "reservation", f"depths = {[[1, 1]] * 3000}\nsystem_tcbs = 100000", "reservation.depths"),
    ("sample every 1e-9 ms", "metrics", "sample_interval_ms = 1e-9", "metrics.sample_interval_ms"),
    ("sample every 5e-324 ms", "metrics", "sample_interval_ms = 5e-324", "metrics.sample_interval_ms"),
    ("latency 1e308 ms", "controller", "message_latency_ms = 1e308", "controller.message_latency_ms"),
    ("max_sim_time 1e308 s", "controller", "max_sim_time_s = 1e308", "controller.max_sim_time_s"),
    ("read 1e308 us", "timing", "read_us = 1e308", "timing.read_us"),
    ("message delay 1e308 ms", "faults", "message_delay_ms = [1e308, 1e308]", "faults.message_delay_ms"),
]


@pytest.mark.parametrize("what,table,body,key", SIZES, ids=[s[0] for s in SIZES])
def test_sizes_a_run_cannot_hold_are_refused(
    what: str, table: str, body: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    path = _write(tmp_path, "c.toml", _with(table, body))
    _refused(capsys, ["simulate", path, "--json"], key)


def test_the_limits_are_the_documented_ones() -> None:
    # The README's config table states each limit; they are the constants checked.
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for name, value in config_mod.LIMITS.items():
        assert f"`{name}`" in readme, name
        shown = f"{int(value):,}" if float(value).is_integer() else str(value)
        assert shown in readme, (name, shown)


def test_a_sample_interval_within_the_limit_still_runs(tmp_path: Path) -> None:
    # The bound refuses only what cannot be held: 1 ms samples of a 0.05 s run are fine.
    cfg = config_mod.loads(_with("metrics", "sample_interval_ms = 1.0"))
    assert cfg.metrics.sample_interval_ms == 1.0


# --------------------------------------------------------- outputs (--out)
def _unwritable(tmp_path: Path) -> Iterator[str]:
    afile = tmp_path / "afile"
    afile.write_text("x")
    yield "/proc/pyresv-cannot-write-here"  # procfs refuses new entries, even to root
    yield str(afile)  # an existing file where a directory is wanted
    yield "/dev/null/x"  # under a non-directory


def test_simulate_and_demo_refuse_an_out_they_cannot_write_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    cfg = _write(tmp_path, "c.toml", SMALL)
    for out in _unwritable(tmp_path):
        _refused(capsys, ["simulate", cfg, "--out", out], "--out", out)
        _refused(capsys, ["demo", "--out", out], "--out", out)


def test_sweep_refuses_an_out_it_cannot_write_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    cfg = _write(tmp_path, "c.toml", SMALL)
    adir = tmp_path / "adir"
    adir.mkdir()
    for out in ["/proc/pyresv-x.csv", str(adir), "/dev/null/x.csv"]:
        _refused(capsys, ["sweep", cfg, "--workers", "0", "--out", out], "--out", out)


def test_report_refuses_an_out_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = _write(tmp_path, "s.csv", "controller.policy,seed,policy,deadlocked,throughput_ops_per_s,error\n"
                                         "depth,1,depth,false,100.0,\n")
    for out in _unwritable(tmp_path):
        _refused(capsys, ["report", csv_path, "--out", out], "--out", out)


# ------------------------------------------------------------- sweep, size
def test_sweep_sizes_are_bounded_before_any_point_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    cfg = _write(tmp_path, "c.toml", SMALL)
    out = str(tmp_path / "s.csv")
    base = ["sweep", cfg, "--workers", "0", "--out", out]
    _refused(capsys, [*base, "--seeds", str(10**12)], "--seeds")
    _refused(capsys, [*base, "--seeds", str(2**70)], "--seeds")
    many = ",".join(str(i) for i in range(1000))
    _refused(capsys, [*base, "--set", f"controller.seed={many}", "--set", f"timing.read_us={many}",
                      "--set", f"timing.write_us={many}"], "runs")
    _refused(capsys, [*base, "--set", "controller.seed=" + "[" * 5000 + "]" * 5000], "controller.seed")
    _refused(capsys, ["sweep", cfg, "--workers", str(10**6), "--out", out], "--workers")
    _refused(capsys, [*base, "--chunk-size", str(10**12)], "--chunk-size")
    _refused(capsys, ["size", cfg, "--seeds", str(10**12)], "--seeds")
    _refused(capsys, ["size", cfg, "--workers", str(10**6)], "--workers")
    _refused(capsys, ["size", cfg, "--latency-factor", "inf"], "--latency-factor")
    assert not Path(out).exists()


def test_sweep_points_are_built_on_demand() -> None:
    # A plan of 20,000 runs is validated per swept combination and yields its
    # points lazily: only the combinations are built, never every point.
    from pyresv.tools import sweep

    cfg = config_mod.loads(SMALL)
    p = sweep.plan(cfg, [("controller.policy", ["depth", "shared"])], seeds=10_000)
    assert len(p.points) == sweep.MAX_SWEEP_RUNS == 20_000
    last = p.points[-1]
    assert (last.index, last.values, last.seed) == (19_999, ("shared",), 10_000)
    assert last.config["controller"]["seed"] == 10_000
    assert not isinstance(p.points, (list, tuple))


@pytest.mark.parametrize("address,expect", [
    ("foo", "foo"),
    ("tcp://", "tcp://"),
    ("tcp://127.0.0.1:99999", "port"),
    ("tcp://127.0.0.1:-1", "port"),
    ("tcp://127.0.0.1", "port"),
    ("http://127.0.0.1:1", "http"),
    ("tcp://[::1", "[::1"),
    ("inproc://x", "inproc"),
    ("", "empty"),
    ("tcp://" + "a" * 5000 + ":1", "long"),
])
def test_malformed_scheduler_addresses_are_refused(
    address: str, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    cfg = _write(tmp_path, "c.toml", SMALL)
    line = _refused(capsys, ["sweep", cfg, "--scheduler", address, "--out", str(tmp_path / "s.csv")],
                    "--scheduler", expect)
    assert len(line) < 400
    _refused(capsys, ["size", cfg, "--scheduler", address], "--scheduler", expect)
    _refused(capsys, ["compare", cfg, "--scheduler", address], "--scheduler", expect)


@pytest.fixture
def silent_scheduler() -> Iterator[str]:
    """A TCP listener on 127.0.0.1 that accepts connections and never writes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        server.close()
        for c in accepted:
            c.close()


@pytest.mark.parametrize("command", ["sweep", "size", "compare"])
def test_a_silent_scheduler_is_refused_at_the_deadline(
    command: str, silent_scheduler: str, tmp_path: Path
) -> None:
    # A subprocess, so that a regression shows as a failed test (the timeout
    # below) rather than a hung suite; the deadline itself is the --timeout given.
    cfg = _write(tmp_path, "c.toml", SMALL)
    argv = [command, cfg, "--scheduler", silent_scheduler, "--timeout", "0.5"]
    if command == "sweep":
        argv += ["--out", str(tmp_path / "s.csv")]
    proc = subprocess.run([sys.executable, "-m", "pyresv", *argv], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert silent_scheduler in lines[0] and "0.5 s" in lines[0], lines[0]
    assert not (tmp_path / "s.csv").exists()


def test_the_network_deadline_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_run: None) -> None:
    cfg = _write(tmp_path, "c.toml", SMALL)
    for bad in ["0", "-1", "nan", "inf"]:
        _refused(capsys, ["size", cfg, "--scheduler", "tcp://127.0.0.1:8786", "--timeout", bad], "--timeout")


# ------------------------------------------------------------------ report
HEADER = "controller.seed,seed,policy,deadlocked,throughput_ops_per_s,error\n"


@pytest.mark.parametrize("what,data,expect", [
    ("over-long field", HEADER + "1,1,depth,false,1.0," + "x" * 200_000 + "\n", "line 2"),
    ("binary", b"\xff\xfe\x00garbage\x80\n", "UTF-8"),
    ("ragged row", HEADER + "1,1,depth\n", "line 2"),
    ("row too long", HEADER + "1,1,depth,false,1.0,,extra\n", "line 2"),
])
def test_report_refuses_a_csv_it_cannot_read(
    what: str, data: str | bytes, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "s.csv", data)
    out = tmp_path / "r"
    line = _refused(capsys, ["report", path, "--out", str(out)], path, expect)
    assert len(line) < 400
    assert not (out / "report.png").exists()


def test_report_refuses_dev_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(capsys, ["report", "/dev/zero", "--out", str(tmp_path / "r")], "/dev/zero", "larger than")


# ------------------------------------------------------------------- check
@pytest.mark.parametrize("argv,expect", [
    (["--max-ops", str(10**6)], "check.max_ops"),
    (["--max-ops", str(2**40)], "check.max_ops"),
    (["--max-states", str(2**70)], "check.max_states"),
])
def test_check_refuses_sizes_it_cannot_hold(argv: list[str], expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(capsys, ["check", *argv], expect)


@pytest.mark.parametrize("body,expect", [
    (f"[controller]\nclusters = {2**40}\n", "controller.clusters"),
    ("[reservation]\ndepths = " + str([[1, 1]] * 3000) + "\n", "reservation.depths"),
    (f"[reservation]\ndepths = [[{2**40}, 1], [1, 1], [1, 1]]\n", "reservation.depths"),
    (f"[reservation]\nunreserved = {2**40}\n", "reservation.unreserved"),
])
def test_check_refuses_a_model_it_cannot_hold(
    body: str, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused(capsys, ["check", _write(tmp_path, "c.toml", body)], expect)


# ------------------------------------------------------------ closed pipes
@pytest.mark.parametrize("argv", [["faults", "--json"], ["simulate"], ["demo", "--json"]])
def test_writing_to_a_closed_pipe_ends_quietly(argv: list[str], tmp_path: Path) -> None:
    # The reader is gone before the command writes: like `pyresv faults --json | head -0`.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "pyresv", *argv], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=300, cwd=tmp_path)
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 141  # 128 + SIGPIPE, what the shell reports for `yes | head`


# ------------------------------------------------------- bounded timelines
def test_a_run_that_outlives_its_scheduled_work_keeps_a_bounded_timeline(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1 us samples of a 1 ms window pass the static bound, but the writes'
    # destages then take 1000 simulated seconds: 10^9 samples once, forever in
    # practice. The timeline thins itself instead (every other sample, half the rate).
    from pyresv.sim import metrics
    from pyresv.sim.engine import run

    monkeypatch.setattr(metrics, "MAX_TIMELINE_CELLS", 1400)  # 100 samples of 14 values
    cfg = config_mod.loads(SMALL.replace("rate_ops_per_s = 5000.0", "rate_ops_per_s = 5000.0\nread_fraction = 0.0")
                           + "[metrics]\nsample_interval_ms = 0.001\n[timing]\ndestage_us = 1e9\n")
    result = run(cfg)
    times = result.metrics.timeline().times_s
    assert result.completed_ops > 0 and not result.deadlocked
    assert result.sim_time_s > 1000
    assert len(times) <= 101  # the capacity, plus the final state
    gaps = set(round(float(g), 9) for g in times[1:-1] - times[:-2])
    assert len(gaps) == 1, gaps  # evenly spaced
    assert times[-1] >= result.sim_time_s


# ------------------------------------------------------------ check's progress
def _check_with_stderr_on_a_terminal(tmp_path: Path, *argv: str) -> tuple[int, str]:
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # a new pty is 0 x 0
    try:
        proc = subprocess.Popen([sys.executable, "-m", "pyresv", "check", *argv], stdout=subprocess.PIPE,
                                stderr=slave, cwd=tmp_path)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        proc.communicate(timeout=300)
    finally:
        os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def test_check_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    rc, err = _check_with_stderr_on_a_terminal(tmp_path, "--max-ops", "3")
    assert rc == 0
    assert "check" in err and "state" in err, err
    proc = subprocess.run([sys.executable, "-m", "pyresv", "check", "--max-ops", "3"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""


def test_check_stops_at_its_state_cap_with_exit_3_and_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    from pyresv.tools import modelcheck

    assert 0 < modelcheck.DEFAULT_MAX_STATES <= 1_000_000  # about 700 bytes a state: under 1 GB
    assert main(["check", "--max-ops", "6", "--max-states", "5000", "--json"]) == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out)["complete"] is False
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "state cap" in lines[0] and "5,000" in lines[0]


@pytest.mark.parametrize("row,expect", [
    ("1,1,depth,maybe,1.0,\n", "deadlocked"),
    ("1,1,depth,false,nan,\n", "throughput_ops_per_s"),
    ("1,1,depth,false,-1e400,\n", "throughput_ops_per_s"),
    ("1,1,de\x00pth,false,1.0,\n", "control character"),
])
def test_report_refuses_cells_a_sweep_never_writes(
    row: str, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "s.csv", HEADER + "1,1,depth,false,2.0,\n" + row)
    _refused(capsys, ["report", path, "--out", str(tmp_path / "r")], path, "line 3", expect)


def test_a_named_pipe_without_a_writer_does_not_block(tmp_path: Path) -> None:
    # open() of a FIFO blocks until a writer comes; the reader opens it
    # non-blocking, so nobody writing reads as an empty file (the defaults).
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "pyresv", "simulate", str(fifo), "--print-config"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == config_mod.to_toml(config_mod.loads(""))
