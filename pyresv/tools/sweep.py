"""Parameter sweeps of the simulator on Dask distributed.

A sweep is the product of a few swept config keys (``--set KEY=V1,V2,...``)
times a number of seeds. :func:`plan` validates every point's config in the
client before anything runs (a bad key or value is a
:class:`~pyresv.sim.config.ConfigError` naming it); :func:`execute` runs the
points on a Dask client, batched into chunks so the per-task overhead
(a few ms) stays small next to the simulations, and returns one
:class:`Outcome` per point in plan order, whatever the completion order.

Workers receive plain config dicts (:meth:`Config.to_dict`) and an allocator
*name*, never allocator objects; they run :func:`run_chunk`, a module-level
function, so it is importable in spawned worker processes. A point whose run
raises becomes an outcome with its error; a task that dies (a lost worker)
marks every point of its chunk with the error. Nothing is dropped.

By default the sweep starts a :class:`distributed.LocalCluster` bound to
127.0.0.1 only (scheduler, workers and dashboard); ``--scheduler ADDRESS``
connects to an existing scheduler instead (start its workers with
``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False``: Dask's sampling profiler
slows simulations down about threefold). ``--workers 0`` runs serially in
this process, without Dask.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import itertools
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, overload

from pyresv._extras import require
from pyresv._factory import ALLOCATORS, allocator_class
from pyresv.errors import ConfigError
from pyresv.sim.config import Config, default_config, load, parse_toml, show

if TYPE_CHECKING:
    from distributed import Client

    from pyresv._factory import AllocatorFactory

__all__ = [
    "DESIGN_FIELDS",
    "Point",
    "SweepPlan",
    "Outcome",
    "SweepResult",
    "parse_values",
    "parse_set",
    "plan",
    "simulate_point",
    "run_chunk",
    "execute",
    "open_client",
    "flatten_summary",
    "format_cell",
    "table",
    "write_csv",
    "sweep",
    "add_arguments",
    "run_cli",
]

#: DESIGN section 3's summary fields: the first columns after the swept keys
#: and ``seed`` (``latency_ms`` becomes ``latency_ms_p50``/``latency_ms_p99``).
DESIGN_FIELDS: tuple[str, ...] = (
    "policy",
    "completed_ops",
    "deadlocked",
    "deadlock_cycle",
    "pit_violations",
    "leaked_tcbs",
    "throughput_ops_per_s",
    "latency_ms",
    "sim_time_s",
)

#: Bounds of a sweep, checked before any point is built: runs (points x
#: seeds; each keeps its summary and row, about 8 KB each measured on the
#: default config, until the CSV is written: 20,000 runs about 300 MB), swept
#: combinations (each is validated up front), local worker processes; and the
#: deadline of every wait on a Dask scheduler (connect, handshake, workers).
MAX_SWEEP_RUNS = 20_000
MAX_SWEEP_POINTS = 10_000
MAX_WORKERS = 64
DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 3600.0

# A bare word given as a value (``depth``, ``fifo``) is a string.
_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


# ------------------------------------------------------------ --set parsing
def _split_top_level(text: str) -> list[str]:
    """Split at commas that are outside brackets, braces and quotes."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_values(key: str, text: str) -> list[Any]:
    """The values of ``--set KEY=TEXT``: ``TEXT`` split at commas outside
    brackets and quotes, each part a TOML value (``2``, ``0.5``, ``true``,
    ``"depth"``, ``[[4, 9], [4, 9]]``); a bare word (``depth``) is a string.

    Raises :class:`ConfigError` naming ``key`` for an empty or unparsable value.
    """
    values: list[Any] = []
    for part in _split_top_level(text):
        part = part.strip()
        if not part:
            raise ConfigError(f"{key}: empty value in --set {key}={text}")
        try:
            values.append(parse_toml(f"v = {part}", key)["v"])
        except ConfigError:
            if not _BARE_WORD.fullmatch(part):
                raise ConfigError(f"{key}: cannot parse value {show(part)} as a TOML value") from None
            values.append(part)
    return values


def parse_set(text: str) -> tuple[str, list[Any]]:
    """Parse one ``KEY=V1,V2,...`` option (see :func:`parse_values`)."""
    key, sep, rest = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text}: expected KEY=V1,V2,...")
    return key, parse_values(key, rest)


# -------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Point:
    """One run of the sweep: the swept values, the seed, and the full config as plain data."""

    index: int
    values: tuple[Any, ...]
    seed: int
    config: dict[str, Any]


class Points(Sequence[Point]):
    """The runs of a plan, built on demand: run ``i`` is swept combination
    ``i // seeds`` with seed ``base + i % seeds``. Only the combinations are
    kept (each validated once); a run's config is its combination's with the
    seed replaced: a run's config is built when it is submitted."""

    def __init__(self, combos: Sequence[tuple[tuple[Any, ...], dict[str, Any]]], seeds: int) -> None:
        self._combos = combos
        self._seeds = seeds

    def __len__(self) -> int:
        return len(self._combos) * self._seeds

    def _point(self, i: int) -> Point:
        values, config = self._combos[i // self._seeds]
        seed = config["controller"]["seed"] + i % self._seeds
        return Point(i, values, seed, {**config, "controller": {**config["controller"], "seed": seed}})

    @overload
    def __getitem__(self, i: int) -> Point: ...

    @overload
    def __getitem__(self, i: slice) -> list[Point]: ...

    def __getitem__(self, i: int | slice) -> Point | list[Point]:
        if isinstance(i, slice):
            return [self._point(k) for k in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"run {i} of a plan of {n}")
        return self._point(i)

    def __iter__(self) -> Iterator[Point]:
        return (self._point(i) for i in range(len(self)))


class _Configs(Sequence[dict[str, Any]]):
    """The configs of a plan's runs, built on demand."""

    def __init__(self, points: Points) -> None:
        self._points = points

    def __len__(self) -> int:
        return len(self._points)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):
            return [p.config for p in self._points[i]]
        return self._points[i].config


@dataclass(frozen=True)
class SweepPlan:
    """Every run of a sweep, in (point, seed) order (built on demand: :class:`Points`)."""

    keys: tuple[str, ...]
    seeds: int
    points: Points


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_sizes(combinations: int, seeds: int) -> None:
    """Refuse a sweep larger than :data:`MAX_SWEEP_POINTS` combinations or
    :data:`MAX_SWEEP_RUNS` runs, before anything is built."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SWEEP_RUNS:
        raise ConfigError(f"--seeds: must be an integer in [1, {MAX_SWEEP_RUNS:,}], got {show(seeds)}")
    if combinations > MAX_SWEEP_POINTS:
        raise ConfigError(
            f"--set: {combinations:,} combinations of the swept values; a sweep validates at most "
            f"{MAX_SWEEP_POINTS:,} (its runs: at most {MAX_SWEEP_RUNS:,})"
        )
    if combinations * seeds > MAX_SWEEP_RUNS:
        raise ConfigError(
            f"--seeds: {combinations:,} combinations x {seeds:,} seeds is {combinations * seeds:,} runs; "
            f"a sweep runs at most {MAX_SWEEP_RUNS:,}"
        )


def plan(config: Config, sets: Sequence[tuple[str, Sequence[Any]]], seeds: int = 1) -> SweepPlan:
    """Validate and expand a sweep: the product of the ``sets`` values, each
    run with ``seeds`` seeds (seed ``i`` is the point's ``controller.seed`` + i).

    Every combination's config is built and validated here, so a bad key or
    value raises :class:`ConfigError` naming it before anything runs; so does
    a sweep over the bounds (:func:`check_sizes`). The runs themselves are
    built on demand (:class:`Points`).
    """
    keys = tuple(k for k, _ in sets)
    seen: set[str] = set()
    for key, values in sets:
        if key in seen:
            raise ConfigError(f"{key}: given in more than one --set")
        seen.add(key)
        if not values:
            raise ConfigError(f"{key}: no values")
    check_sizes(math.prod(len(v) for _, v in sets), seeds)
    combos: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for combo in itertools.product(*(list(v) for _, v in sets)):
        assignment = dict(zip(keys, combo))
        try:
            cfg = config.with_overrides(assignment)
        except ConfigError as exc:
            shown = ", ".join(f"{k}={_short(format_cell(v))}" for k, v in assignment.items())
            raise ConfigError(f"{exc} (in the sweep point {shown})") from None
        combos.append((tuple(combo), cfg.to_dict()))
    return SweepPlan(keys, seeds, Points(combos, seeds))


# ----------------------------------------------------------------- workers
def _allocator_cls(name: str) -> AllocatorFactory:
    return allocator_class(name)


def simulate_point(config: dict[str, Any], allocator: str = "auto") -> dict[str, Any]:
    """Parse a plain-data config, simulate it and return its summary (raises on failure)."""
    from pyresv.sim.config import parse
    from pyresv.sim.engine import run

    return run(parse(config), allocator_cls=_allocator_cls(allocator)).summary()


def run_chunk(
    chunk: Sequence[tuple[int, dict[str, Any]]], allocator: str = "auto"
) -> list[tuple[int, dict[str, Any] | None, str]]:
    """The Dask task: simulate each ``(index, config)`` of a chunk.

    Returns ``(index, summary, "")`` per point, or ``(index, None, error)``
    when its run raised: one failing point never loses the others.
    """
    out: list[tuple[int, dict[str, Any] | None, str]] = []
    for index, config in chunk:
        try:
            out.append((index, simulate_point(config, allocator), ""))
        except Exception as exc:  # reported in the point's row, never lost
            out.append((index, None, f"{type(exc).__name__}: {exc}"))
    return out


@dataclass(frozen=True)
class Outcome:
    """The result of one point: its summary, or the error it failed with."""

    index: int
    summary: dict[str, Any] | None
    error: str


def _chunks(configs: Sequence[dict[str, Any]], size: int) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    # Built as they are submitted: a plan's runs are never all in memory at once.
    for start in range(0, len(configs), size):
        yield [(i, configs[i]) for i in range(start, min(start + size, len(configs)))]


def _progress(total: int, show: bool | None) -> Any:
    require("sweep", "a sweep's progress bar")
    from tqdm import tqdm

    if show is None:
        show = sys.stderr.isatty()
    return tqdm(total=total, disable=not show, unit="run", desc="sweep", file=sys.stderr)


def execute(
    configs: Sequence[dict[str, Any]],
    client: Client | None = None,
    *,
    chunk_size: int | None = None,
    allocator: str = "auto",
    progress: bool | None = False,
) -> list[Outcome]:
    """Run every config (plain data) and return one :class:`Outcome` each, in order.

    With a ``client`` the configs are batched into chunks of ``chunk_size``
    (default: about four chunks per worker thread, at most 64 points each)
    and submitted as :func:`run_chunk` tasks, at most four chunks per worker
    thread in flight (the next chunk is built when one completes); without
    one they run serially here. ``configs`` may build each config on demand
    (:class:`Points`). ``progress``: a tqdm bar on stderr (``None``: only on a
    terminal).
    """
    if allocator not in ALLOCATORS:
        raise ValueError(f"allocator: must be one of {', '.join(ALLOCATORS)}, got {allocator!r}")
    n = len(configs)
    results: dict[int, Outcome] = {}
    bar = _progress(n, progress)
    try:
        if client is None:
            for chunk in _chunks(configs, 1):
                for index, summary, error in run_chunk(chunk, allocator):
                    results[index] = Outcome(index, summary, error)
                bar.update(len(chunk))
        else:
            from distributed import as_completed

            threads = sum(client.nthreads().values()) or 1
            if chunk_size is None:
                chunk_size = max(1, min(64, math.ceil(n / (4 * threads))))
            if chunk_size < 1:
                raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
            pending = _chunks(configs, chunk_size)
            by_key: dict[Any, list[tuple[int, dict[str, Any]]]] = {}
            inflight: dict[Any, Any] = {}

            def submit() -> Any:
                chunk = next(pending, None)
                if chunk is None:
                    return None
                future = client.submit(run_chunk, chunk, allocator, pure=False)
                by_key[future.key] = chunk
                inflight[future.key] = future
                return future

            first = [f for f in (submit() for _ in range(4 * threads)) if f is not None]
            running = as_completed(first)
            try:
                for future in running:
                    chunk = by_key.pop(future.key)
                    del inflight[future.key]
                    try:
                        done = future.result()
                    except Exception as exc:  # the task itself died: every point of it is an error
                        done = [(i, None, f"task failed: {type(exc).__name__}: {exc}") for i, _ in chunk]
                    for index, summary, error in done:
                        results[index] = Outcome(index, summary, error)
                    bar.update(len(chunk))
                    nxt = submit()
                    if nxt is not None:
                        running.add(nxt)
            finally:
                client.cancel(list(inflight.values()))
    finally:
        bar.close()
    return [results[i] for i in range(n)]


#: Schemes of a scheduler address another process can reach (``inproc://`` cannot).
SCHEDULER_SCHEMES = ("tcp", "tls", "ws", "wss")
_HOST = re.compile(r"[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\]")
_MAX_ADDRESS = 300


def check_scheduler_address(address: str) -> str:
    """``address`` if it is a Dask scheduler address (``[SCHEME://]HOST:PORT``,
    scheme one of :data:`SCHEDULER_SCHEMES`, port 1..65535); else
    :class:`ConfigError` naming ``--scheduler`` and what is wrong."""
    if not address:
        raise ConfigError("--scheduler: an empty address (expected tcp://HOST:PORT)")
    if len(address) > _MAX_ADDRESS:
        raise ConfigError(f"--scheduler: address too long ({len(address):,} characters; at most {_MAX_ADDRESS})")
    scheme, sep, location = address.partition("://")
    if not sep:
        scheme, location = "tcp", address
    if scheme not in SCHEDULER_SCHEMES:
        raise ConfigError(
            f"--scheduler: {show(address)}: scheme {show(scheme)} is not one of {', '.join(SCHEDULER_SCHEMES)}"
        )
    host, colon, port = location.rpartition(":")
    if not colon or not host or host.endswith(":") and not host.startswith("["):
        raise ConfigError(f"--scheduler: {show(address)}: expected {scheme}://HOST:PORT (no port given)")
    if not _HOST.fullmatch(host):
        raise ConfigError(f"--scheduler: {show(address)}: {show(host)} is not a host name or address")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"--scheduler: {show(address)}: port {show(port)} is not in 1..65535")
    return address


def check_timeout(timeout: Any) -> float:
    """A network deadline in seconds: finite, > 0 and at most :data:`MAX_TIMEOUT_S`."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise ConfigError(f"--timeout: must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], got {show(timeout)}")
    return float(timeout)


def _reach(address: str, timeout: float) -> None:
    # Connect and complete Dask's handshake within the deadline. Client()'s own
    # timeout covers the TCP connect only: a listener that accepts and never
    # writes holds its handshake read forever (distributed 2026.8, comm.core.connect).
    import asyncio

    from distributed.comm import connect

    async def handshake() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
        await comm.close()

    def run() -> None:  # its own thread: a caller may already run an event loop
        asyncio.run(handshake())

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            pool.submit(run).result()
        except (TimeoutError, asyncio.TimeoutError):
            raise ConfigError(f"--scheduler: cannot connect to {address} within {timeout:g} s (no answer)") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--scheduler: cannot connect to {address} within {timeout:g} s: {exc}") from None


@contextlib.contextmanager
def open_client(
    workers: int = 2, scheduler: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S
) -> Iterator[Client]:
    """A Dask client: connected to ``scheduler`` when given, else to a new
    :class:`LocalCluster` of ``workers`` single-threaded worker processes bound
    to 127.0.0.1 (its dashboard too: the default would bind every interface).
    The client is closed before the cluster.

    Every wait on a ``scheduler`` has the deadline ``timeout`` (seconds): the
    connect, Dask's handshake and the first worker. A malformed address, or a
    scheduler that does not answer or has no worker in time, is a
    :class:`ConfigError` naming the address and the deadline; nothing has run.
    """
    require("sweep", "a Dask client")
    timeout = check_timeout(timeout)
    if scheduler is not None:
        check_scheduler_address(scheduler)
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        _reach(scheduler, timeout)
        try:
            client = Client(scheduler, timeout=timeout)
        except OSError as exc:  # TimeoutError included: nothing has run
            raise ConfigError(f"--scheduler: cannot connect to {scheduler} within {timeout:g} s: {exc}") from None
        with client:
            try:  # tasks would wait forever on a scheduler without workers
                client.wait_for_workers(1, timeout=timeout)
            except TimeoutError:
                raise ConfigError(f"--scheduler: no worker connected to {scheduler} within {timeout:g} s") from None
            yield client
        return
    if workers < 1:
        raise ValueError(f"--workers: must be >= 1 for a local cluster, got {workers}")
    # The workers' statistical profiler samples the deep SimPy generator
    # stacks every 10 ms and triples the time of a simulation: off. The
    # nannies copy the config when they are created.
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )
    with cluster:
        with Client(cluster, timeout=timeout) as client:
            yield client


# --------------------------------------------------------------------- CSV
def format_cell(value: Any) -> str:
    """A CSV cell: ``true``/``false``, compact JSON for lists and tables, empty for none.

    Swept values written this way can be given back to ``--set`` as they are.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def flatten_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """One run summary as flat columns: ``latency_ms`` as ``latency_ms_p50`` and
    ``latency_ms_p99``, ``deadlock_cycle`` joined with `` -> ``; other nested
    fields are kept whole (written as compact JSON)."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if key == "latency_ms" and isinstance(value, dict):
            out["latency_ms_p50"] = value.get("p50")
            out["latency_ms_p99"] = value.get("p99")
        elif key == "deadlock_cycle":
            out[key] = " -> ".join(value)
        else:
            out[key] = value
    return out


def _design_columns() -> list[str]:
    cols: list[str] = []
    for name in DESIGN_FIELDS:
        cols.extend(["latency_ms_p50", "latency_ms_p99"] if name == "latency_ms" else [name])
    return cols


def table(sweep_plan: SweepPlan, outcomes: Sequence[Outcome]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of a sweep: the swept keys (named as given), ``seed``,
    DESIGN's summary fields, the other summary fields in the order they
    appear, and ``error`` (empty when the run succeeded). One row per point."""
    if len(outcomes) != len(sweep_plan.points):
        raise ValueError(f"{len(outcomes)} outcomes for {len(sweep_plan.points)} points")
    fixed = [*sweep_plan.keys, "seed"]
    summary_cols = _design_columns()
    rows: list[dict[str, Any]] = []
    for point, outcome in zip(sweep_plan.points, outcomes):
        row: dict[str, Any] = dict(zip(sweep_plan.keys, point.values))
        row["seed"] = point.seed
        if outcome.summary is not None:
            for key, value in flatten_summary(outcome.summary).items():
                if key in fixed:  # the summary's own seed equals the row's
                    continue
                if key not in summary_cols:
                    summary_cols.append(key)
                row[key] = value
        row["error"] = outcome.error
        rows.append(row)
    return [*fixed, *summary_cols, "error"], rows


def write_csv(path: str | Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Write rows (cells formatted by :func:`format_cell`) to ``path``."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True)
    with p.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([format_cell(row.get(c)) for c in columns])


# ---------------------------------------------------------------- the sweep
@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its plan, one outcome per point, and the CSV table."""

    plan: SweepPlan
    outcomes: list[Outcome]
    columns: list[str]
    rows: list[dict[str, Any]]
    wall_s: float

    @property
    def errors(self) -> int:
        """How many points failed."""
        return sum(1 for o in self.outcomes if o.error)


def sweep(
    config: Config,
    sets: Sequence[tuple[str, Sequence[Any]]],
    seeds: int = 1,
    *,
    client: Client | None = None,
    workers: int = 2,
    scheduler: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    chunk_size: int | None = None,
    allocator: str = "auto",
    progress: bool | None = False,
) -> SweepResult:
    """Plan (validating every point) and run a sweep.

    ``client``: an existing Dask client to use; otherwise ``scheduler``
    (an address) or a local cluster of ``workers`` processes is opened and
    closed here; ``workers=0`` runs serially without Dask.
    """
    sweep_plan = plan(config, sets, seeds)
    configs = _Configs(sweep_plan.points)
    t0 = time.perf_counter()
    if client is not None or (workers == 0 and scheduler is None):
        outcomes = execute(configs, client, chunk_size=chunk_size, allocator=allocator, progress=progress)
    else:
        with open_client(workers, scheduler, timeout=timeout) as opened:
            outcomes = execute(configs, opened, chunk_size=chunk_size, allocator=allocator, progress=progress)
    wall = time.perf_counter() - t0
    columns, rows = table(sweep_plan, outcomes)
    return SweepResult(sweep_plan, outcomes, columns, rows, wall)


# --------------------------------------------------------------------- CLI
SET_HELP = (
    "a swept config key and its values, KEY=V1,V2,... (repeatable; the sweep is the product). "
    "Values are split at commas outside brackets and quotes; each is a TOML value (2, 0.5, true, "
    '"x", [[1,1],[1,1]]) and a bare word is a string, so lists need no other separator: '
    "--set 'reservation.depths=[[1,1],[1,1],[1,1]],[[2,1],[2,1],[2,1]]' is two values"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``pyresv sweep``."""
    p.epilog = (
        "Columns: the swept keys as given, seed, the run summary fields (latency_ms as latency_ms_p50 "
        "and latency_ms_p99, deadlock_cycle joined with ' -> ', nested fields as JSON) and error (empty "
        "when the run succeeded). Rows are in (point, seed) order. Every point's config is validated "
        "before anything runs (exit status 2 naming the key); exit status 1 when a run failed."
    )
    p.add_argument("config", nargs="?", metavar="CONFIG", help="TOML config (default: the built-in one)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=V1,V2,...", help=SET_HELP)
    p.add_argument("--seeds", type=int, default=1, help="seeds per point: controller.seed + 0 .. N-1 (default 1)")
    p.add_argument(
        "--workers", type=int, default=2,
        help=f"worker processes of the local Dask cluster, on 127.0.0.1 (default 2, at most {MAX_WORKERS}; "
             "0: serial, no Dask)",
    )
    add_dask_arguments(p)
    p.add_argument("--chunk-size", type=int, help="points per Dask task (default: about 4 tasks per worker thread)")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="CSV file: one row per (point, seed)")
    p.add_argument(
        "--allocator", choices=ALLOCATORS, default="auto",
        help="allocator implementation the workers use (default: the compiled core when built)",
    )
    p.add_argument(
        "--json", action="store_true",
        help='also print the rows as JSON: {"runs", "points", "seeds", "failed", "out", "columns", "rows"}',
    )


def add_dask_arguments(p: argparse.ArgumentParser) -> None:
    """``--scheduler`` and ``--timeout``, shared by ``sweep`` and ``size``."""
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="use this Dask scheduler ([tcp://]HOST:PORT) instead of a local cluster")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"deadline of every wait on the scheduler: connect, handshake, first worker "
                        f"(default {DEFAULT_TIMEOUT_S:g}; a scheduler that does not answer in time exits 2)")


def check_dask_arguments(args: argparse.Namespace) -> None:
    """Refuse bad ``--workers``, ``--scheduler`` and ``--timeout`` before any work."""
    if args.workers < 0:
        raise ConfigError(f"--workers: must be >= 0, got {show(args.workers)}")
    if args.workers > MAX_WORKERS:
        raise ConfigError(f"--workers: must be <= {MAX_WORKERS} local processes, got {show(args.workers)}")
    if args.scheduler is not None:
        check_scheduler_address(args.scheduler)
    check_timeout(args.timeout)


def run_cli(args: argparse.Namespace, *, out: Callable[[str], None] = print) -> int:
    """``pyresv sweep``: write the CSV; exit status 0, or 1 when some point
    failed (its row has the error). A bad config, key, value or option
    raises :class:`ConfigError` before anything runs."""
    check_dask_arguments(args)
    if args.chunk_size is not None and not 1 <= args.chunk_size <= MAX_SWEEP_RUNS:
        raise ConfigError(f"--chunk-size: must be in [1, {MAX_SWEEP_RUNS:,}], got {show(args.chunk_size)}")
    check_sizes(1, args.seeds)
    config = load(args.config) if args.config else default_config()
    sets = [parse_set(s) for s in args.sets]
    result = sweep(
        config,
        sets,
        args.seeds,
        workers=args.workers,
        scheduler=args.scheduler,
        timeout=args.timeout,
        chunk_size=args.chunk_size,
        allocator=args.allocator,
        progress=None,
    )
    write_csv(args.out, result.columns, result.rows)
    if args.scheduler:
        where = f"on {args.scheduler}"
    elif args.workers == 0:
        where = "serially"
    else:
        where = f"on {args.workers} local workers"
    n_points = len(result.plan.points) // result.plan.seeds
    if getattr(args, "json", False):
        out(json.dumps({
            "runs": len(result.rows), "points": n_points, "seeds": result.plan.seeds,
            "failed": result.errors, "out": str(args.out), "columns": result.columns, "rows": result.rows,
        }, indent=2))
        return 1 if result.errors else 0
    out(
        f"{len(result.rows)} runs ({n_points} points x {result.plan.seeds} seeds) {where} "
        f"in {result.wall_s:.2f} s; {result.errors} failed; wrote {args.out}"
    )
    return 1 if result.errors else 0
