"""Figures and the metrics CSV of simulation runs (matplotlib, Agg).

Every figure is a :class:`matplotlib.figure.Figure` drawn on an explicit
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`: no pyplot, no
global backend switch, nothing ever shown; files are written and closed.

* :func:`write_run` (``pyresv simulate --out DIR``): ``metrics.csv`` (per
  sample, cluster and level: TCBs held, queued requests, completed host
  operations), ``utilisation.png``, ``queues.png``, ``latency.png``.
* :func:`write_compare` (``pyresv compare --out DIR``): ``compare.png``,
  latency per policy, each run a dot, deadlocked runs marked.
* :func:`write_demo` (``pyresv demo --out DIR``): ``demo.png``, every patent
  scenario (and the stress workload) under each policy side by side.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from pyresv._extras import require

require("plots", "pyresv.tools.plots")  # before matplotlib: a missing extra is named

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pyresv.sim.metrics import OP_CODES, Timeline

if TYPE_CHECKING:
    from pyresv.sim.engine import RunResult

__all__ = [
    "METRICS_COLUMNS",
    "POLICY_COLORS",
    "out_dir",
    "new_figure",
    "save",
    "write_metrics_csv",
    "plot_utilisation",
    "plot_queues",
    "plot_latency",
    "write_run",
    "plot_demo",
    "write_demo",
    "plot_compare",
    "write_compare",
]

#: Columns of ``metrics.csv``: one row per (sample, cluster, level).
#: ``completed_ops`` counts the cluster's host operations completed by then
#: (the same on every level row of that cluster and sample).
METRICS_COLUMNS = ("time_s", "cluster", "level", "tcbs_held", "queued", "completed_ops")

#: At most this many clusters get their own panel; beyond it they are summed.
MAX_PANELS = 4

#: Line and bar colours of the policies in every figure.
POLICY_COLORS = {"shared": "#d62728", "deepest-first": "#ff7f0e", "depth": "#1f77b4"}


def new_figure(width: float = 8.0, height: float = 4.5) -> Figure:
    """A figure on its own Agg canvas (never a GUI backend)."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG and return its path."""
    p = Path(path)
    fig.savefig(p, format="png")
    return p


def out_dir(out: str | Path) -> Path:
    """Create the ``--out`` directory if needed and return it."""
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise NotADirectoryError(f"--out: {d} exists and is not a directory")
    d.mkdir(parents=True, exist_ok=True)
    return d


# -------------------------------------------------------------- metrics.csv
def write_metrics_csv(timeline: Timeline, path: str | Path) -> Path:
    """Write the timeline in long form (:data:`METRICS_COLUMNS`)."""
    p = Path(path)
    k, c, d = timeline.held.shape
    with p.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(METRICS_COLUMNS)
        for i in range(k):
            t = f"{timeline.times_s[i]:.6f}"
            for cl in range(c):
                done = int(timeline.completed[i, cl])
                for lv in range(d):
                    w.writerow((t, cl, lv + 1, int(timeline.held[i, cl, lv]), int(timeline.queued[i, cl, lv]), done))
    return p


# ------------------------------------------------------------------ figures
def _panels(data: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Per-cluster slices of ``data[k, c, l]`` (summed when there are many clusters)."""
    c = data.shape[1]
    if c <= MAX_PANELS:
        return [(f"cluster {i}", data[:, i, :]) for i in range(c)]
    return [(f"all {c} clusters", data.sum(axis=1))]


def plot_utilisation(timeline: Timeline, tcbs_per_cluster: int, *, title: str = "") -> Figure:
    """Share of each cluster's TCBs held, stacked by the level of the work holding them."""
    panels = _panels(timeline.held)
    fig = new_figure(8.0, 2.6 * len(panels) + 0.6)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    t = timeline.times_s
    levels = timeline.held.shape[2]
    for ax, (name, held) in zip(axes, panels):
        capacity = tcbs_per_cluster * (timeline.held.shape[1] if name.startswith("all") else 1)
        share = held.T * (100.0 / max(1, capacity))
        ax.stackplot(t, share, labels=[f"level {lv + 1}" for lv in range(levels)], step="post")
        ax.set_ylabel("% of TCBs held")
        ax.set_title(name, fontsize="medium")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize="small", ncols=min(levels, 4))
    axes[-1].set_xlabel("simulated time (s)")
    fig.suptitle(title or f"TCB utilisation by level ({tcbs_per_cluster} TCBs per cluster)")
    return fig


def plot_queues(timeline: Timeline, *, title: str = "") -> Figure:
    """Requests waiting for a TCB, per cluster and level, over time."""
    panels = _panels(timeline.queued)
    fig = new_figure(8.0, 2.6 * len(panels) + 0.6)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    t = timeline.times_s
    for ax, (name, queued) in zip(axes, panels):
        for lv in range(queued.shape[1]):
            ax.step(t, queued[:, lv], where="post", label=f"level {lv + 1}")
        ax.set_ylabel("queued requests")
        ax.set_title(name, fontsize="medium")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize="small", ncols=min(queued.shape[1], 4))
    axes[-1].set_xlabel("simulated time (s)")
    fig.suptitle(title or "Wait-queue length by level")
    return fig


def plot_latency(timeline: Timeline, *, title: str = "") -> Figure:
    """Histogram of host-operation latency (log-spaced bins), stacked by operation kind."""
    fig = new_figure(8.0, 4.5)
    ax = fig.subplots()
    lat = timeline.op_latency_ms
    if len(lat) == 0:
        ax.text(0.5, 0.5, "no host operation completed", ha="center", va="center", transform=ax.transAxes)
    else:
        positive = lat[lat > 0]
        lo = float(positive.min()) if len(positive) else 1e-3
        hi = float(lat.max())
        hi = max(hi, lo * 1.01)
        bins = np.geomspace(lo, hi, 40)
        clipped = np.clip(lat, lo, hi)
        kinds = [k for k in range(len(OP_CODES)) if np.any(timeline.op_kind == k)]
        ax.hist(
            [clipped[timeline.op_kind == k] for k in kinds],
            # matplotlib's stubs type bins as a Sequence[float]; an ndarray works.
            bins=bins,  # type: ignore[arg-type]
            stacked=True,
            label=[OP_CODES[k] for k in kinds],
        )
        ax.set_xscale("log")
        for q, style in ((50, "--"), (99, ":")):
            v = float(np.percentile(lat, q))
            ax.axvline(max(v, lo), color="black", linestyle=style, linewidth=1, label=f"p{q} {v:.3f} ms")
        ax.legend(fontsize="small")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("host operations")
    ax.grid(alpha=0.3)
    fig.suptitle(title or f"Host-operation latency ({len(lat)} operations)")
    return fig


def write_run(result: RunResult, out: str | Path) -> list[Path]:
    """``simulate --out DIR``: write ``metrics.csv`` and the three PNGs; returns the paths."""
    d = out_dir(out)
    tl = result.metrics.timeline()
    policy = result.policy
    paths = [write_metrics_csv(tl, d / "metrics.csv")]
    figures = {
        "utilisation.png": plot_utilisation(
            tl, result.tcbs_per_cluster,
            title=f"TCB utilisation by level, {policy} policy ({result.tcbs_per_cluster} TCBs per cluster)",
        ),
        "queues.png": plot_queues(tl, title=f"Wait-queue length by level, {policy} policy"),
        "latency.png": plot_latency(
            tl, title=f"Host-operation latency, {policy} policy ({len(tl.op_latency_ms)} operations)"
        ),
    }
    for name, fig in figures.items():
        paths.append(save(fig, d / name))
    return paths


# --------------------------------------------------------------------- demo
def plot_demo(summaries: Sequence[dict[str, Any]]) -> Figure:
    """Share of host operations completed per scenario and policy;
    deadlocked runs are hatched and labelled."""
    scenarios = list(dict.fromkeys(s["scenario"] for s in summaries))
    policies = list(dict.fromkeys(s["policy"] for s in summaries))
    by_key = {(s["scenario"], s["policy"]): s for s in summaries}
    fig = new_figure(8.0, 4.5)
    ax = fig.subplots()
    width = 0.8 / max(1, len(policies))
    x = np.arange(len(scenarios))
    for j, policy in enumerate(policies):
        for i, name in enumerate(scenarios):
            s = by_key.get((name, policy))
            if s is None:
                continue
            issued = s.get("issued_ops") or 0
            share = 100.0 * s["completed_ops"] / issued if issued else 100.0
            xpos = x[i] + (j - (len(policies) - 1) / 2) * width
            ax.bar(
                xpos, share, width,
                color=POLICY_COLORS.get(policy, f"C{j}"),
                hatch="//" if s["deadlocked"] else None,
                edgecolor="black",
                label=policy if i == 0 else None,
            )
            note = f"{s['completed_ops']}/{issued}"
            if s["deadlocked"]:
                note += "  DEADLOCK"
            ax.text(xpos, share + 1.5, note, ha="center", va="bottom", fontsize="x-small", rotation=90,
                    color="#d62728" if s["deadlocked"] else "black",
                    fontweight="bold" if s["deadlocked"] else "normal")
    ax.set_xticks(x, scenarios)
    ax.set_ylim(0, 150)
    ax.set_ylabel("host operations completed (%)")
    ax.legend(title="policy (hatched: deadlocked)", loc="upper left", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Patent scenarios: one shared pool vs depth-level pools (same TCBs per cluster)")
    return fig


def write_demo(summaries: Sequence[dict[str, Any]], out: str | Path) -> list[Path]:
    """``demo --out DIR``: write ``demo.png``; returns the paths."""
    d = out_dir(out)
    return [save(plot_demo(summaries), d / "demo.png")]


# ------------------------------------------------------------------ compare
def plot_compare(
    rows: Sequence[dict[str, Any]],
    runs: dict[str, list[dict[str, Any]]],
    price: dict[str, Any],
    tcbs_per_cluster: int,
) -> Figure:
    """Mean p50 and p99 latency per policy (bars, over the runs that did not
    deadlock), each run's p99 as a dot; a deadlocked run is a red cross at the
    p99 of the operations it completed (at 0 when none) and its policy is
    labelled with how many runs deadlocked."""
    fig = new_figure(8.0, 4.5)
    ax = fig.subplots()
    x = np.arange(len(rows))
    width = 0.35
    top = 0.0
    for i, r in enumerate(rows):
        policy = r["policy"]
        color = POLICY_COLORS.get(policy, f"C{i}")
        lat = r["latency_ms"]
        for k, (q, alpha) in enumerate((("p50", 0.45), ("p99", 1.0))):
            if lat[q] is not None:
                ax.bar(x[i] + (k - 0.5) * width, lat[q], width, color=color, alpha=alpha, edgecolor="black",
                       label=q if i == 0 else None)
                top = max(top, lat[q])
        for s in runs.get(policy, []):
            p99 = s["latency_ms"]["p99"]
            y = 0.0 if p99 is None else p99
            top = max(top, y)
            if s["deadlocked"]:
                ax.plot(x[i] + 0.5 * width, y, marker="x", color="#d62728", markersize=9, mew=2, linestyle="none")
            else:
                ax.plot(x[i] + 0.5 * width, y, marker="o", color="black", markersize=4, linestyle="none")
    for i, r in enumerate(rows):
        if r["deadlocked_runs"]:
            ax.text(x[i], top * 1.04 if top else 1.0, f"{r['deadlocked_runs']}/{r['runs']} runs\nDEADLOCKED",
                    ha="center", va="bottom", color="#d62728", fontweight="bold", fontsize="small")
    ax.set_xticks(x, [r["policy"] for r in rows])
    ax.set_ylim(0, (top or 1.0) * 1.25)
    ax.set_ylabel("host-operation latency (ms)")
    ax.legend(title="mean over runs that completed; dots: each run's p99, x: deadlocked",
              fontsize="small", title_fontsize="small", loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    title = f"Latency per policy, {tcbs_per_cluster} TCBs per cluster"
    if price.get("p99") is not None:
        title += f": depth's p99 is {price['p99']:.2f}x {price['against']}'s"
    fig.suptitle(title)
    return fig


def write_compare(
    rows: Sequence[dict[str, Any]],
    runs: dict[str, list[dict[str, Any]]],
    price: dict[str, Any],
    tcbs_per_cluster: int,
    out: str | Path,
) -> list[Path]:
    """``compare --out DIR``: write ``compare.png``; returns the paths."""
    d = out_dir(out)
    return [save(plot_compare(rows, runs, price, tcbs_per_cluster), d / "compare.png")]
