"""The ``pyresv`` command line.

Each subcommand is a pair of small functions registered in :data:`COMMANDS`:
``_args_<name>(parser)`` adds its options and ``_cmd_<name>(args) -> int``
runs it. A :class:`~pyresv.sim.config.ConfigError` (or an unknown scenario) is
reported on stderr with exit status 2, before anything runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pyresv import __version__
from pyresv.tools import modelcheck
from pyresv._extras import MissingExtra, require
from pyresv._factory import ALLOCATORS, allocator_class
from pyresv.errors import ConfigError
from pyresv.sim.config import Config, default_config, load, to_toml
from pyresv.sim.policies import POLICIES

if TYPE_CHECKING:
    from pyresv._factory import AllocatorFactory

__all__ = ["build_parser", "main", "COMMANDS"]


def _allocator_cls(name: str) -> AllocatorFactory:
    return allocator_class(name)


def _add_allocator(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default="auto",
        help="allocator implementation (default: the compiled core when built)",
    )


# -------------------------------------------------------------------- demo
def _args_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list of run summaries")
    p.add_argument("--out", metavar="DIR", help="also write the figure demo.png (every policy per scenario) into DIR")
    _add_allocator(p)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _demo_cell(s: dict[str, Any]) -> str:
    done = f"{s['completed_ops']}/{s['issued_ops']}"
    if s["deadlocked"]:
        return f"{done} DEADLOCK"
    p99 = s["latency_ms"]["p99"]
    return done if p99 is None else f"{done} p99 {p99:.3g} ms"


def _cmd_demo(args: argparse.Namespace) -> int:
    from pyresv.sim.scenarios import POLICIES, SCENARIOS, WORKLOADS, get, run_scenario

    cls = _allocator_cls(args.allocator)
    names = [*SCENARIOS, *WORKLOADS]
    summaries = [run_scenario(name, policy, allocator_cls=cls).summary() for name in names for policy in POLICIES]
    if args.out:
        from pyresv.tools.plots import write_demo

        _wrote(write_demo(summaries, args.out))
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    by_key = {(s["scenario"], s["policy"]): s for s in summaries}
    _table(("scenario", "from", *POLICIES),
           [(name, get(name).cites, *(_demo_cell(by_key[name, p]) for p in POLICIES)) for name in names])
    print()
    print("Each cell: host operations completed of those issued, and their p99 latency when the")
    print("run did not deadlock. Every policy has the same TCBs per cluster in a row: shared is one")
    print("FIFO pool, deepest-first one pool serving the deepest waiting request first, depth the")
    print("reserved pools per level. Establishes, background copies and write-back destages are")
    print("not host operations, so a run can deadlock after every host operation completed.")
    bad = [s for s in summaries if s["pit_violations"] or (s["policy"] == "depth" and s["leaked_tcbs"])]
    if bad:
        for s in bad:
            print(f"{s['scenario']} ({s['policy']}): {s['pit_violations']} point-in-time violations, "
                  f"{s['leaked_tcbs']} leaked TCBs")
    else:
        print(f"No run returned a wrong point-in-time track; no depth run leaked a TCB ({len(summaries)} runs).")
    cycles: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for s in summaries:
        if s["deadlock_cycle"]:
            cycles.setdefault((s["scenario"], tuple(s["deadlock_cycle"])), []).append(s["policy"])
    for (name, cycle), policies in cycles.items():
        print(f"{name} ({', '.join(policies)}) wait-for cycle: " + " -> ".join(cycle))
    return 0


# ---------------------------------------------------------------- simulate
def _args_simulate(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", metavar="CONFIG", help="TOML config (default: the built-in one)")
    p.add_argument("--policy", choices=POLICIES, help="override controller.policy")
    p.add_argument("--seed", type=int, help="override controller.seed")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.add_argument("--print-config", action="store_true", help="print the effective config as TOML and exit")
    p.add_argument("--out", metavar="DIR", help="also write metrics.csv and PNG figures into DIR")
    _add_allocator(p)


def _simulate_config(args: argparse.Namespace) -> Config:
    config = load(args.config) if args.config else default_config()
    overrides: dict[str, Any] = {}
    if args.policy is not None:
        overrides["controller.policy"] = args.policy
    if args.seed is not None:
        overrides["controller.seed"] = args.seed
    return config.with_overrides(overrides) if overrides else config


def _cmd_simulate(args: argparse.Namespace) -> int:
    from pyresv.sim.engine import run

    config = _simulate_config(args)
    if args.print_config:
        print(to_toml(config), end="")
        return 0
    t0 = time.perf_counter()
    result = run(config, allocator_cls=_allocator_cls(args.allocator))
    wall = time.perf_counter() - t0
    s = result.summary()
    if args.out:
        from pyresv.tools.plots import write_run

        _wrote(write_run(result, args.out))
    # Exit 1 for a deadlock, as check does (DESIGN section 3): the output is the same.
    status = 1 if s["deadlocked"] else 0
    if args.json:
        print(json.dumps(s, indent=2))  # no wall-clock values: byte-identical per config and seed
        return status
    lat = s["latency_ms"]
    print(f"policy            {s['policy']} ({s['levels']} levels, {s['tcbs_per_cluster']} TCBs per cluster)")
    print(f"host operations   {s['completed_ops']} completed of {s['issued_ops']} issued")
    print(f"deadlocked        {'yes' if s['deadlocked'] else 'no'}")
    for step in s["deadlock_cycle"]:
        print(f"    {step}")
    if s["timed_out"]:
        print(f"timed out         controller.max_sim_time_s reached with {s['stuck_processes']} processes unfinished")
    print(f"pit violations    {s['pit_violations']} in {s['reads_checked']} checked reads")
    print(f"leaked TCBs       {s['leaked_tcbs']}")
    if s["deadlocked"]:
        print(f"throughput        {s['throughput_until_deadlock_ops_per_s']:.1f} host ops per simulated second "
              "until the deadlock")
    else:
        print(f"throughput        {s['throughput_ops_per_s']:.1f} host ops per simulated second")
    if lat["p50"] is not None:
        print(f"latency           p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms")
    print(f"simulated time    {s['sim_time_s']:.6f} s")
    rate = s["completed_ops"] / wall if wall > 0 else 0.0
    print(f"wall time         {wall:.2f} s ({rate:,.0f} simulated host ops per wall second)")
    return status


def _wrote(paths: list[Any]) -> None:
    # stderr, so that --json output stays one JSON document
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)


# ------------------------------------------------------------------ faults
def _args_faults(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="SCENARIO",
                   help="fault scenarios to run (default: all; see pyresv.sim.scenarios.FAULT_SCENARIOS)")
    p.add_argument("--policy", choices=POLICIES, default="depth", help="TCB policy (default: depth)")
    p.add_argument("--json", action="store_true", help="print a JSON list of run summaries (each with 'faults')")
    _add_allocator(p)


def _cmd_faults(args: argparse.Namespace) -> int:
    from pyresv.sim.scenarios import FAULT_SCENARIOS, run_fault_scenario

    names = args.names or list(FAULT_SCENARIOS)
    unknown = [n for n in names if n not in FAULT_SCENARIOS]
    if unknown:
        print(f"pyresv: unknown fault scenario {unknown[0]!r} (known: {', '.join(FAULT_SCENARIOS)})",
              file=sys.stderr)
        return 2
    cls = _allocator_cls(args.allocator)
    summaries = [run_fault_scenario(n, args.policy, allocator_cls=cls).summary() for n in names]
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    for s in summaries:
        print(f"{s['scenario']} ({s['policy']}): {s['completed_ops']}/{s['issued_ops']} host ops completed, "
              f"deadlocked {'yes' if s['deadlocked'] else 'no'}, pit violations {s['pit_violations']}, "
              f"leaked TCBs {s['leaked_tcbs']}")
        injected = {k: v for k, v in s["faults"].items() if v}
        print("    " + (", ".join(f"{k} {v}" for k, v in injected.items()) or "nothing injected"))
    return 0


# --------------------------------------- compare / sweep / size / report
# Their options and logic live in pyresv.tools.compare, .sweep, .sizing and .report.
def _args_sweep(p: argparse.ArgumentParser) -> None:
    from pyresv.tools.sweep import add_arguments

    add_arguments(p)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pyresv.tools.sweep import run_cli

    return run_cli(args)


def _args_compare(p: argparse.ArgumentParser) -> None:
    from pyresv.tools.compare import add_arguments

    add_arguments(p)


def _cmd_compare(args: argparse.Namespace) -> int:
    from pyresv.tools.compare import run_cli

    return run_cli(args)


def _args_size(p: argparse.ArgumentParser) -> None:
    from pyresv.tools.sizing import add_arguments

    add_arguments(p)


def _cmd_size(args: argparse.Namespace) -> int:
    from pyresv.tools.sizing import run_cli

    return run_cli(args)


def _args_report(p: argparse.ArgumentParser) -> None:
    from pyresv.tools.report import add_arguments

    add_arguments(p)


def _cmd_report(args: argparse.Namespace) -> int:
    from pyresv.tools.report import run_cli

    return run_cli(args)


# ---------------------------------------------------------------- registry
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

#: name -> (help, add-arguments, run). Add a subcommand by adding an entry.
COMMANDS: dict[str, Command] = {
    "demo": ("run every patent scenario and the stress example under each policy", _args_demo, _cmd_demo),
    "simulate": ("simulate a workload (built-in default config when none is given)", _args_simulate, _cmd_simulate),
    "faults": ("run the fault-injection scenarios (cluster failover, owner death, message loss)",
               _args_faults, _cmd_faults),
    "compare": ("run each policy over seeds with the same TCBs per cluster: what safety costs",
                _args_compare, _cmd_compare),
    "sweep": ("run the product of config values x seeds on Dask, one CSV row per run", _args_sweep, _cmd_sweep),
    "size": ("find the smallest deadlock-free reservation within 5 percent of unconstrained throughput, "
             "or with --budget T the split of T TCBs with the lowest p99",
             _args_size, _cmd_size),
    "report": ("plot deadlock rate and throughput against reserve size from a sweep CSV",
               _args_report, _cmd_report),
    "check": ("exhaustive model check: every interleaving of a small controller",
              modelcheck.add_arguments, modelcheck.run_cli),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="pyresv",
        description="Depth-level resource reservation: deadlock-free nested cross-cluster work.",
    )
    parser.add_argument("--version", action="version", version=f"pyresv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


#: Commands whose ``--out`` writes figures (matplotlib: the ``plots`` extra).
PLOTTING = frozenset({"simulate", "demo", "compare", "report"})


def extras_needed(args: argparse.Namespace) -> list[str]:
    """The extras a parsed command line needs (see :mod:`pyresv._extras`)."""
    needed = []
    if args.command == "sweep" or getattr(args, "workers", 0) or getattr(args, "scheduler", None):
        needed.append("sweep")
    if args.command in PLOTTING and getattr(args, "out", None):
        needed.append("plots")
    return needed


#: Commands whose ``--out`` is a file; every other ``--out`` is a directory to fill.
OUT_FILES = frozenset({"sweep"})

#: Exit status after the reader of stdout went away (``pyresv faults --json | head``):
#: 128 + SIGPIPE, what a shell reports for a command a closed pipe stopped.
EXIT_CLOSED_PIPE = 141


def check_out(path: str, kind: str = "dir") -> None:
    """Refuse an ``--out`` that cannot be written, before any work: raise
    :class:`ConfigError` naming it.

    ``kind`` is ``"dir"`` (a directory the command creates or fills) or
    ``"file"``. Nothing is left behind: an existing file is opened for
    appending (not truncated), and where the path does not exist yet a
    temporary directory is made and removed in its nearest existing ancestor.
    """
    if not path:
        raise ConfigError("--out: an empty path")
    p = Path(path)
    try:
        if p.exists():
            if kind == "dir":
                if not p.is_dir():
                    raise ConfigError(f"--out: {p} exists and is not a directory")
                os.rmdir(tempfile.mkdtemp(dir=p, prefix=".pyresv-"))
            else:
                if p.is_dir():
                    raise ConfigError(f"--out: {p} is a directory, not a file")
                with p.open("a"):
                    pass
            return
        ancestor = p.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise ConfigError(f"--out: {p}: {ancestor} is not a directory")
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".pyresv-"))
    except OSError as exc:
        raise ConfigError(f"--out: {p}: cannot write: {exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> int:
    """Run the ``pyresv`` command line; returns the exit status.

    Writing to a closed pipe ends quietly with :data:`EXIT_CLOSED_PIPE`
    (Python's recipe: stdout is pointed at ``os.devnull`` so the interpreter's
    final flush does not fail again).
    """
    try:
        status = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_CLOSED_PIPE
    return status


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for extra in extras_needed(args):  # before any work: nothing runs without them
            require(extra, f"pyresv {args.command}")
        if getattr(args, "out", None) is not None:
            check_out(args.out, "file" if args.command in OUT_FILES else "dir")
        return args.handler(args)
    except ConfigError as exc:
        print(f"pyresv: config error: {exc}", file=sys.stderr)
        return 2
    except MissingExtra as exc:
        print(f"pyresv: error: {exc}", file=sys.stderr)
        return 2
