"""What safety costs: ``pyresv compare``, the policies side by side.

Each policy of :mod:`pyresv.sim.policies` runs the same config over the same
seeds, with the same TCBs per cluster (the depth configuration's total), and
gets one row:

* ``runs``, ``deadlocked_runs``; ``completed_ops`` and ``issued_ops`` summed
  over the runs;
* ``latency_ms`` (``p50``, ``p99``) and ``throughput_ops_per_s``: the mean
  over the runs that did not deadlock, ``None`` when every run deadlocked (a
  deadlocked run's latency counts only the operations that got through before
  it stopped, and would flatter the policy).

The **price of safety** is depth's latency over that of the best other policy
that never deadlocked (the lowest mean p99, then p50): ``against`` names it.
It is ``None`` when there is no such policy or ``depth`` is not compared; the
ratios alone are ``None`` when depth completed no operation.

The runs go through :func:`pyresv.tools.sweep.execute`: serially here, or on
Dask (a local cluster or a scheduler) like ``pyresv sweep``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from pyresv._factory import ALLOCATORS
from pyresv.errors import ConfigError
from pyresv.sim.config import Config, default_config, load
from pyresv.sim.policies import POLICIES
from pyresv.sim.topology import carve
from pyresv.tools.sweep import DEFAULT_TIMEOUT_S, add_dask_arguments, check_dask_arguments, check_sizes

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "CSV_COLUMNS",
    "CompareResult",
    "compare",
    "parse_assignment",
    "parse_policies",
    "policy_row",
    "price_of_safety",
    "tcbs_per_cluster",
    "add_arguments",
    "write_outputs",
    "run_cli",
]

#: Columns of ``compare.csv``: one row per policy, ``latency_ms`` flattened.
CSV_COLUMNS = (
    "policy", "runs", "deadlocked_runs", "completed_ops", "issued_ops",
    "latency_ms_p50", "latency_ms_p99", "throughput_ops_per_s",
)


def parse_policies(text: str) -> tuple[str, ...]:
    """``--policies``: a comma-separated list of known policies, each once, in
    the order given. Raises :class:`ConfigError` naming the bad entry."""
    names = [n.strip() for n in text.split(",")]
    if not any(names) or not all(names):
        raise ConfigError(f"--policies: give a comma-separated list of {', '.join(POLICIES)}, got {text!r}")
    seen: set[str] = set()
    for n in names:
        if n not in POLICIES:
            raise ConfigError(f"--policies: unknown policy {n!r} (known: {', '.join(POLICIES)})")
        if n in seen:
            raise ConfigError(f"--policies: {n!r} given twice")
        seen.add(n)
    return tuple(names)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``--set KEY=VALUE``: one key and one TOML value (a bare word is a string),
    parsed like ``pyresv sweep --set``. Raises :class:`ConfigError` naming the key."""
    from pyresv.tools.sweep import parse_set

    key, values = parse_set(text)
    if len(values) != 1:
        raise ConfigError(f"{key}: --set takes one value here, got {len(values)} ({text!r}); sweep them with pyresv sweep")
    return key, values[0]


def tcbs_per_cluster(config: Config) -> int:
    """The TCBs every policy gets per cluster: the pools that FIGs 2A/2B carve
    from ``reservation.system_tcbs``, plus the unreserved TCBs."""
    r = config.reservation
    return carve(r.depths, r.unreserved, r.system_tcbs).reserved + r.unreserved


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 6) if vals else None


def policy_row(policy: str, summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One policy's row of ``compare --json`` from its runs' summaries."""
    good = [s for s in summaries if not s["deadlocked"]]
    return {
        "policy": policy,
        "runs": len(summaries),
        "deadlocked_runs": len(summaries) - len(good),
        "completed_ops": sum(s["completed_ops"] for s in summaries),
        "issued_ops": sum(s["issued_ops"] for s in summaries),
        "latency_ms": {q: _mean([s["latency_ms"][q] for s in good]) for q in ("p50", "p99")},
        "throughput_ops_per_s": _mean([s["throughput_ops_per_s"] for s in good]),
    }


def price_of_safety(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"against", "p50", "p99"}``: depth's mean latency over that of the
    fastest other policy (lowest p99, then p50) with no deadlocked run."""
    none: dict[str, Any] = {"against": None, "p50": None, "p99": None}
    depth = next((r for r in rows if r["policy"] == "depth"), None)
    others = [
        r for r in rows
        if r["policy"] != "depth" and r["runs"] > 0 and r["deadlocked_runs"] == 0
        and r["latency_ms"]["p99"] is not None
    ]
    if depth is None or not others:
        return none

    def speed(r: dict[str, Any]) -> tuple[float, float]:
        p50 = r["latency_ms"]["p50"]
        return r["latency_ms"]["p99"], math.inf if p50 is None else p50

    best = min(others, key=speed)
    out: dict[str, Any] = {"against": best["policy"]}
    for q in ("p50", "p99"):
        mine, theirs = depth["latency_ms"][q], best["latency_ms"][q]
        out[q] = round(mine / theirs, 4) if mine is not None and theirs else None
    return out


@dataclass
class CompareResult:
    """The rows of ``pyresv compare`` and every run behind them."""

    tcbs_per_cluster: int
    seeds: list[int]
    rows: list[dict[str, Any]]
    price_of_safety: dict[str, Any]
    #: policy -> its runs' summaries, in seed order (for the figure)
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The ``compare --json`` object (DESIGN.md section 3)."""
        return {
            "tcbs_per_cluster": self.tcbs_per_cluster,
            "seeds": list(self.seeds),
            "policies": self.rows,
            "price_of_safety": self.price_of_safety,
        }


def compare(
    config: Config,
    policies: Sequence[str] = POLICIES,
    seeds: int = 3,
    *,
    client: Client | None = None,
    workers: int = 0,
    scheduler: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    allocator: str = "auto",
    progress: bool | None = False,
) -> CompareResult:
    """Run ``config`` under each of ``policies`` with seeds ``controller.seed + 0 .. seeds-1``.

    ``client``: a Dask client to use; otherwise ``scheduler`` (an address) or
    a local cluster of ``workers`` processes is opened here; ``workers=0``
    without a scheduler runs serially. Raises :class:`ConfigError` for bad
    arguments (before anything runs) and ``RuntimeError`` when a run failed.
    """
    from pyresv.tools.sweep import execute, open_client

    check_sizes(1, seeds)
    policies = parse_policies(",".join(policies))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"--workers: must be >= 0, got {workers!r}")
    if allocator not in ALLOCATORS:
        raise ConfigError(f"--allocator: must be one of {', '.join(ALLOCATORS)}, got {allocator!r}")
    seed_list = [config.controller.seed + i for i in range(seeds)]
    configs = [
        config.with_overrides({"controller.policy": p, "controller.seed": s}).to_dict()
        for p in policies for s in seed_list
    ]
    t0 = time.perf_counter()
    if client is not None or (workers == 0 and scheduler is None):
        outcomes = execute(configs, client, allocator=allocator, progress=progress)
    else:
        with open_client(workers, scheduler, timeout=timeout) as opened:
            outcomes = execute(configs, opened, allocator=allocator, progress=progress)
    wall = time.perf_counter() - t0
    failed = [o for o in outcomes if o.error]
    if failed:
        o = failed[0]
        policy, seed = policies[o.index // seeds], seed_list[o.index % seeds]
        raise RuntimeError(f"{len(failed)} runs failed; the first ({policy}, seed {seed}): {o.error}")
    summaries: list[dict[str, Any]] = []
    for o in outcomes:
        assert o.summary is not None  # no run failed
        summaries.append(o.summary)
    runs = {p: summaries[i * seeds : (i + 1) * seeds] for i, p in enumerate(policies)}
    rows = [policy_row(p, runs[p]) for p in policies]
    return CompareResult(tcbs_per_cluster(config), seed_list, rows, price_of_safety(rows), runs, wall)


def write_outputs(result: CompareResult, out: str | Path) -> list[Path]:
    """``compare --out DIR``: ``compare.png`` (:func:`pyresv.tools.plots.write_compare`)
    and ``compare.csv`` (one row per policy, :data:`CSV_COLUMNS`); returns the paths."""
    from pyresv.tools.plots import out_dir, write_compare
    from pyresv.tools.sweep import flatten_summary, write_csv

    paths = write_compare(result.rows, result.runs, result.price_of_safety, result.tcbs_per_cluster, out)
    csv_path = out_dir(out) / "compare.csv"
    write_csv(csv_path, CSV_COLUMNS, [flatten_summary(r) for r in result.rows])
    return [*paths, csv_path]


# --------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``pyresv compare``."""
    p.epilog = (
        "Every policy gets the same TCBs per cluster: the depth configuration's total. Latency and "
        "throughput are means over the runs that did not deadlock ('-' when every run did). The price "
        "of safety is depth's latency over that of the fastest other policy that never deadlocked."
    )
    p.add_argument("config", nargs="?", metavar="CONFIG", help="TOML config (default: the built-in one)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable; the value is TOML, a bare word a string), "
                        "e.g. --set 'reservation.depths=[[3,1],[5,1],[1,1]]' --set reservation.wake=deepest")
    p.add_argument("--policies", default=",".join(POLICIES), metavar="P1,P2,...",
                   help=f"policies to compare, in this order (default {','.join(POLICIES)})")
    p.add_argument("--seeds", type=int, default=3, help="runs per policy: controller.seed + 0 .. N-1 (default 3)")
    p.add_argument("--workers", type=int, default=0,
                   help="run on a local Dask cluster of this many processes on 127.0.0.1 (default 0: serially here)")
    add_dask_arguments(p)
    p.add_argument("--json", action="store_true",
                   help='print {"tcbs_per_cluster", "seeds", "policies": [...], "price_of_safety"}')
    p.add_argument("--out", metavar="DIR", help="also write compare.png and compare.csv into DIR")
    p.add_argument("--allocator", choices=ALLOCATORS, default="auto",
                   help="allocator implementation (default: the compiled core when built)")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _price_line(result: CompareResult) -> str:
    pos = result.price_of_safety
    if "depth" not in result.runs:
        return "price of safety: not computed (depth was not compared)"
    if len(result.runs) == 1:
        return "price of safety: not computed (no other policy was compared)"
    if pos["against"] is None:
        return "price of safety: none to pay: every other policy deadlocked at least once"
    if pos["p99"] is None:
        return f"price of safety: depth completed no operation (against {pos['against']})"
    return (f"price of safety: depth's p99 latency is {pos['p99']:.2f}x {pos['against']}'s "
            f"(p50 {_fmt(pos['p50'], '.2f')}x), {pos['against']} being the fastest policy that never deadlocked")


def run_cli(args: argparse.Namespace, *, out: Callable[[str], None] = print) -> int:
    """``pyresv compare``: the table (or JSON); exit 0, or 1 when a run failed."""
    check_dask_arguments(args)
    config = load(args.config) if args.config else default_config()
    if args.sets:
        config = config.with_overrides(dict(parse_assignment(a) for a in args.sets))
    policies = parse_policies(args.policies)
    try:
        result = compare(config, policies, args.seeds, workers=args.workers, scheduler=args.scheduler,
                         timeout=args.timeout, allocator=args.allocator, progress=None)
    except RuntimeError as exc:
        print(f"pyresv compare: {exc}", file=sys.stderr)
        return 1
    if args.out:
        paths = write_outputs(result, args.out)
        print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    if args.json:
        out(json.dumps(result.to_dict(), indent=2))
        return 0
    header = ("policy", "runs", "deadlocked", "completed", "p50 ms", "p99 ms", "throughput ops/s")
    rows = [
        (r["policy"], str(r["runs"]), str(r["deadlocked_runs"]), f"{r['completed_ops']}/{r['issued_ops']}",
         _fmt(r["latency_ms"]["p50"]), _fmt(r["latency_ms"]["p99"]), _fmt(r["throughput_ops_per_s"], ".1f"))
        for r in result.rows
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, tuple("-" * w for w in widths), *rows):
        out("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    seeds = result.seeds
    out("")
    out(f"{result.tcbs_per_cluster} TCBs per cluster under every policy; seeds {seeds[0]}..{seeds[-1]}. "
        "'completed' sums the host operations of every run; latency and throughput are means over "
        "the runs that did not deadlock.")
    out(_price_line(result))
    return 0
