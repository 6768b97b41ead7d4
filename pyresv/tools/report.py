"""``pyresv report SWEEP.csv --out DIR``: deadlock rate and throughput against reserve size.

Reads a CSV written by ``pyresv sweep`` and aggregates its rows by policy and
an x axis chosen from the columns:

* ``--x COLUMN`` when given;
* else ``tcbs_per_cluster`` (every TCB of a cluster, reserved and
  unreserved: the reserve size, comparable across policies) when it varies;
* else the first swept column (those before ``seed``) that varies; numeric
  when every value is a number, else categorical in order of appearance.

Per (policy, x): runs, failed runs (an ``error``; left out of the rest; see
:func:`fill_failed_x` for their x),
the deadlock rate, and the mean and standard deviation of the throughput of
the runs that did not deadlock (a deadlocked run's throughput only says when
it stopped). Writes ``report.png`` (two panels sharing the x axis) and
``report.csv`` (the aggregated table), and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, cast

import numpy as np

from pyresv.errors import ConfigError
from pyresv.sim.config import read_input

__all__ = ["Group", "read_sweep", "choose_x", "fill_failed_x", "aggregate", "plot_report", "write_report", "add_arguments", "run_cli"]

_TCB_COLUMN = "tcbs_per_cluster"
_X_LABELS = {_TCB_COLUMN: "TCBs per cluster (reserved + unreserved)"}


#: Distinct x values a report plots (one tick or point each).
MAX_X_VALUES = 1000


def read_sweep(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """The columns and rows (strings) of a sweep CSV; :class:`ConfigError` if it is not one.

    The file is read once within the input limit (:func:`pyresv.sim.config.read_input`:
    16 MiB, UTF-8); a field over the csv module's limit (128 KiB) or a row
    whose cell count differs from the header's is refused naming its line.
    """
    p = Path(path)
    reader = csv.reader(io.StringIO(read_input(p), newline=""))
    rows: list[dict[str, str]] = []
    try:
        columns = next(reader, [])
        missing = [c for c in ("seed", "policy", "deadlocked", "throughput_ops_per_s", "error") if c not in columns]
        if missing:
            raise ConfigError(f"{p}: not a sweep CSV (missing columns: {', '.join(missing)})")
        for cells in reader:
            if len(cells) != len(columns):
                raise ConfigError(
                    f"{p}: line {reader.line_num}: {len(cells)} cells, the header has {len(columns)}"
                )
            row = dict(zip(columns, cells))
            _check_row(f"{p}: line {reader.line_num}", row)
            rows.append(row)
    except csv.Error as exc:
        raise ConfigError(f"{p}: line {reader.line_num}: {exc}") from None
    return columns, rows


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _check_row(where: str, row: dict[str, str]) -> None:
    # The cells the report reads are what a sweep writes, or the row is refused.
    if row["deadlocked"] not in ("true", "false", ""):
        raise ConfigError(f"{where}: deadlocked must be true or false, got {row['deadlocked'][:40]!r}")
    tp = row["throughput_ops_per_s"]
    value = _number(tp) if tp else 0.0
    if value is None or value < 0:
        raise ConfigError(f"{where}: throughput_ops_per_s must be a finite number >= 0, got {tp[:40]!r}")
    for column, cell in row.items():
        if _CONTROL.search(cell):
            raise ConfigError(f"{where}: a control character in column {column[:40]!r}")


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def choose_x(columns: Sequence[str], rows: Sequence[dict[str, str]], x: str | None = None) -> str:
    """The x column (see the module docstring)."""
    if x is not None:
        if x not in columns:
            raise ConfigError(f"--x: no column {x!r} in the sweep (columns: {', '.join(columns)})")
        return x
    swept = list(columns[: columns.index("seed")])
    ok_rows = [r for r in rows if not r["error"]]

    def varies(col: str) -> bool:
        return len({r[col] for r in ok_rows}) > 1

    if _TCB_COLUMN in columns and varies(_TCB_COLUMN):
        return _TCB_COLUMN
    for col in swept:
        if varies(col):
            return col
    return swept[0] if swept else _TCB_COLUMN if _TCB_COLUMN in columns else "seed"


@dataclass(frozen=True)
class Group:
    """The runs of one policy at one x value."""

    policy: str
    x: str
    runs: int
    failed: int
    deadlocked: int
    throughput_mean: float | None
    throughput_std: float | None

    @property
    def deadlock_rate(self) -> float | None:
        """Deadlocked runs over runs that did not fail."""
        n = self.runs - self.failed
        return self.deadlocked / n if n else None


def _row_policy(row: dict[str, str]) -> str:
    # A failed row has no summary: its policy is known only when it was swept.
    return row["policy"] or row.get("controller.policy") or "?"


def fill_failed_x(columns: Sequence[str], rows: Sequence[dict[str, str]], x: str) -> list[dict[str, str]]:
    """Rows with the x value of failed runs filled in where it is known.

    A failed run has no summary, so a summary column such as
    ``tcbs_per_cluster`` is empty in its row; it depends on the config only,
    so it is taken from a successful run of the same point (same swept
    values, another seed). Rows whose x stays unknown keep an empty value.
    """
    swept = list(columns[: columns.index("seed")])
    known: dict[tuple[str, ...], str] = {}
    for r in rows:
        if not r["error"] and r[x] != "":
            known.setdefault(tuple(r[c] for c in swept), r[x])
    out = []
    for r in rows:
        if r[x] == "" and r["error"]:
            r = dict(r)
            r[x] = known.get(tuple(r[c] for c in swept), "")
        out.append(r)
    return out


def aggregate(rows: Sequence[dict[str, str]], x: str) -> tuple[list[Group], bool]:
    """Groups by (policy, x value), x values sorted numerically when they are
    all numbers (else in order of appearance); and whether x is numeric.
    Rows without an x value (failed runs, see :func:`fill_failed_x`) are left out."""
    rows = [r for r in rows if r[x] != ""]
    xs = list(dict.fromkeys(r[x] for r in rows))
    numeric = bool(xs) and all(_number(v) is not None for v in xs)
    if numeric:
        # numeric: every x value is a number, so the key is never None.
        xs.sort(key=lambda v: cast(float, _number(v)))
    policies = list(dict.fromkeys(_row_policy(r) for r in rows))
    by_group: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in rows:  # one pass: a sweep of 10^5 rows groups in linear time
        by_group.setdefault((_row_policy(r), r[x]), []).append(r)
    groups: list[Group] = []
    for policy in policies:
        for xv in xs:
            sel = by_group.get((policy, xv), [])
            if not sel:
                continue
            good = [r for r in sel if not r["error"]]
            dead = sum(1 for r in good if r["deadlocked"] == "true")
            tps = [_number(r["throughput_ops_per_s"]) for r in good if r["deadlocked"] != "true"]
            tp = np.array([t for t in tps if t is not None], dtype=float)
            groups.append(Group(
                policy, xv, len(sel), len(sel) - len(good), dead,
                float(tp.mean()) if len(tp) else None,
                float(tp.std()) if len(tp) else None,
            ))
    return groups, numeric


def plot_report(groups: Sequence[Group], x: str, numeric: bool, *, title: str = "") -> Any:
    """Two panels: deadlock rate and throughput (mean +- std) against ``x``, a line per policy."""
    from pyresv.tools.plots import POLICY_COLORS, new_figure

    fig = new_figure(8.0, 6.5)
    ax_dead, ax_tp = fig.subplots(2, 1, sharex=True)
    xs = list(dict.fromkeys(g.x for g in groups))
    pos = {v: (_number(v) if numeric else i) for i, v in enumerate(xs)}
    policies = list(dict.fromkeys(g.policy for g in groups))
    for j, policy in enumerate(policies):
        gs = [g for g in groups if g.policy == policy]
        color = POLICY_COLORS.get(policy, f"C{j + 2}")
        d = [(pos[g.x], g.deadlock_rate * 100) for g in gs if g.deadlock_rate is not None]
        if d:
            ax_dead.plot(*zip(*d), marker="o", color=color, label=policy)
        t = [(pos[g.x], g.throughput_mean, g.throughput_std) for g in gs if g.throughput_mean is not None]
        if t:
            xv, mean, std = zip(*t)
            ax_tp.errorbar(xv, mean, yerr=std, marker="o", capsize=3, color=color, label=policy)
    ax_dead.set_ylabel("runs deadlocked (%)")
    ax_dead.set_ylim(-5, 105)
    ax_tp.set_ylabel("throughput (host ops/s)\nruns without deadlock")
    ax_tp.set_xlabel(_X_LABELS.get(x, x))
    if not numeric:
        ax_tp.set_xticks(range(len(xs)), xs, rotation=20, ha="right", fontsize="small")
        ax_tp.set_xlim(-0.5, len(xs) - 0.5)
    for ax in (ax_dead, ax_tp):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # no lines (every run failed): no legend
            ax.legend(title="policy", fontsize="small")
    fig.suptitle(title or "Deadlock rate and throughput against reserve size")
    return fig


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def write_report(csv_path: str | Path, out: str | Path, x: str | None = None) -> tuple[list[Path], list[str]]:
    """Read a sweep CSV, write ``report.png`` and ``report.csv`` into ``out``;
    returns the paths and the printed table's lines."""
    paths, lines, _xcol, _groups = _write_report(csv_path, out, x)
    return paths, lines


def _write_report(
    csv_path: str | Path, out: str | Path, x: str | None
) -> tuple[list[Path], list[str], str, list[Group]]:
    columns, rows = read_sweep(csv_path)
    if not rows:
        raise ConfigError(f"{csv_path}: the sweep has no rows")
    xcol = choose_x(columns, rows, x)
    rows = fill_failed_x(columns, rows, xcol)
    groups, numeric = aggregate(rows, xcol)
    xs = len({g.x for g in groups})
    if xs > MAX_X_VALUES:
        raise ConfigError(
            f"--x: {xs:,} distinct values of {xcol}; a report plots at most {MAX_X_VALUES:,} (choose another --x)"
        )
    from pyresv.tools.plots import out_dir, save

    d = out_dir(out)
    table = [("policy", xcol, "runs", "failed", "deadlock rate", "throughput mean", "throughput std")]
    for g in groups:
        table.append((g.policy, g.x, str(g.runs), str(g.failed), _fmt(g.deadlock_rate, ".3f"),
                      _fmt(g.throughput_mean, ".1f"), _fmt(g.throughput_std, ".1f")))
    report_csv = d / "report.csv"
    with report_csv.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(table)
    png = save(plot_report(groups, xcol, numeric), d / "report.png")
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    unplaced = sum(1 for r in rows if r[xcol] == "")
    if unplaced:
        lines.append(f"{unplaced} failed runs left out: their {xcol} is unknown")
    return [png, report_csv], lines, xcol, groups


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``pyresv report``."""
    p.add_argument("sweep_csv", metavar="SWEEP.csv", help="a CSV written by pyresv sweep")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for report.png and report.csv")
    p.add_argument("--x", metavar="COLUMN",
                   help="x axis column (default: tcbs_per_cluster when it varies, else the first swept column that varies)")
    p.add_argument("--json", action="store_true",
                   help="print the table as JSON: {\"x\", \"groups\": [...], \"wrote\": [...]}")


def run_cli(args: argparse.Namespace, *, out: Callable[[str], None] = print) -> int:
    """``pyresv report``: write the figure and table, print the table (or it as JSON)."""
    paths, lines, xcol, groups = _write_report(args.sweep_csv, args.out, args.x)
    if getattr(args, "json", False):
        out(json.dumps({
            "x": xcol,
            "groups": [
                {"policy": g.policy, "x": g.x, "runs": g.runs, "failed": g.failed, "deadlocked": g.deadlocked,
                 "deadlock_rate": g.deadlock_rate, "throughput_mean": g.throughput_mean,
                 "throughput_std": g.throughput_std}
                for g in groups
            ],
            "wrote": [str(p) for p in paths],
        }, indent=2))
        return 0
    for line in lines:
        out(line)
    out("wrote " + ", ".join(str(p) for p in paths))
    return 0
