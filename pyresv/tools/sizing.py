"""How small can the reserve be? The search behind ``pyresv size``.

The answer is the smallest reservation per cluster, ``pools x pool_size`` per
depth level plus ``unreserved`` TCBs, whose runs (policy ``depth``) over N
seeds have no deadlock, no timeout, and a mean throughput within
``tolerance`` (5%) of the *unconstrained* run's over the same seeds; and,
only when ``latency_factor`` is given, a mean p99 latency at most that many
times the unconstrained run's. Throughput is completed operations over the
simulated time, which includes the arrival window and any late scheduled
event (an establish at 1 s), so on a light workload it hardly moves while
queueing shows in the latency; every trial records its p99 for that reason.

Definitions.

* **Analytic lower bound** ([0021]: each process, local or activated by the
  other cluster, gets enough on that cluster to complete its operation). In
  this model a process holds at most one TCB per (cluster, level) — work on
  its own cluster runs under the TCB it already holds — so ``pool_size = 1``
  at every level, and at least one pool per level; no unreserved TCBs are
  needed. Reserved this way the depth policy cannot deadlock (a level waits
  only on deeper levels and the deepest waits on nothing), but one pool per
  level lets only one process at a time work at that level.
* **Unconstrained**: the same config with ``U`` pools of one TCB per level
  and no unreserved TCBs, ``U`` doubled from 64 until no request ever waited
  for a TCB on any seed (every ``peak_queued`` is 0): TCBs never limit it.
* ``reservation.system_tcbs`` is raised to fit each candidate so the FIG 2
  retry never shrinks what is being measured; the result says whether the
  answer fits the configured budget.

Search (greedy, assuming more TCBs never hurt; everything tried is recorded):

1. the lower bound; done if it passes.
2. the smallest uniform pool count ``p`` (same at every level), doubling then
   bisecting.
3. each level in turn, deepest first (deeper levels see less concurrent
   work), bisects its own pool count down from ``p`` keeping the others.
4. the lower bound plus the fewest unreserved TCBs (doubling, bisecting)
   that passes, kept if it totals fewer TCBs than the answer of step 3.
   ``pool_size`` stays 1: a larger pool is owned by one process that can use
   only one of its TCBs.

``size --budget T`` asks another question: how to split exactly ``T`` TCBs
per cluster (pools of one TCB per level, at least one per level, the rest
unreserved, and the wake order of the unreserved TCBs) for the lowest mean
p99 latency over the seeds. Every such split is deadlock-free by the patent's
argument ([0021], [0038]; :data:`BUDGET_SAFETY`), so the search is about
latency only, and it is priced against ``deepest-first`` with the same ``T``
TCBs (:mod:`pyresv.tools.compare`). The search, never an enumeration of the
``2 * C(T, D)`` splits:

1. the [0021] bound, one pool per level and ``T - D`` unreserved, under both
   wake orders (and deepest-first, in the same batch); the faster order stays;
2. a compass search from there: for each level, ``step`` TCBs more or fewer
   in its pools (from or to the unreserved TCBs); move to the fastest
   neighbour while one is faster, else halve ``step``; ``step`` starts at
   the largest power of two <= ``(T - D) / 2D`` and the search ends below 1,
   or after ``max_tries`` splits. A batch of neighbours runs in parallel on
   Dask when a client is given.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from pyresv._factory import ALLOCATORS
from pyresv.errors import ConfigError
from pyresv.sim.config import Config, default_config, load, show
from pyresv.tools.compare import policy_row
from pyresv.tools.sweep import add_dask_arguments, check_dask_arguments

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "Reservation",
    "Trial",
    "SizeResult",
    "lower_bound",
    "size",
    "BUDGET_MAX",
    "BUDGET_MAX_TRIES",
    "BUDGET_SAFETY",
    "Split",
    "BudgetTrial",
    "BudgetResult",
    "size_budget",
    "check_budget_arguments",
    "add_arguments",
    "run_cli",
]

#: Seeds per candidate (every candidate runs each; the search tries dozens).
MAX_SEEDS = 1000

#: Pools per level of the first unconstrained attempt, and the cap of the doubling.
UNCONSTRAINED_START = 64
UNCONSTRAINED_MAX = 16384


@dataclass(frozen=True)
class Reservation:
    """One cluster's TCBs: ``(pools, pool_size)`` per level and the unreserved TCBs."""

    depths: tuple[tuple[int, int], ...]
    unreserved: int

    @property
    def total(self) -> int:
        """TCBs per cluster."""
        return sum(p * s for p, s in self.depths) + self.unreserved

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``{"depths": [[pools, size], ...], "unreserved": n, "tcbs_per_cluster": t}``."""
        return {"depths": [list(d) for d in self.depths], "unreserved": self.unreserved,
                "tcbs_per_cluster": self.total}


@dataclass(frozen=True)
class Trial:
    """One candidate reservation run over every seed."""

    reservation: Reservation
    stage: str
    deadlocks: int
    timeouts: int
    errors: list[str]
    throughput_ops_per_s: float | None  # mean over the runs that did not deadlock (None: every run did)
    latency_ms_p99: float | None
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        """The ``tried`` entry: depths, unreserved, deadlocks, throughput, ok (and extras)."""
        d: dict[str, Any] = {
            "depths": [list(x) for x in self.reservation.depths],
            "unreserved": self.reservation.unreserved,
            "deadlocks": self.deadlocks,
            "throughput_ops_per_s": self.throughput_ops_per_s,
            "ok": self.ok,
            "stage": self.stage,
            "tcbs_per_cluster": self.reservation.total,
            "timeouts": self.timeouts,
            "latency_ms_p99": self.latency_ms_p99,
        }
        if self.errors:
            d["errors"] = self.errors
        return d


@dataclass
class SizeResult:
    """The answer of :func:`size` and everything it tried."""

    answer: Reservation
    throughput_ops_per_s: float
    lower_bound: Reservation
    unconstrained: Reservation
    unconstrained_throughput_ops_per_s: float
    unconstrained_latency_ms_p99: float | None
    seeds: list[int]
    tolerance: float
    latency_factor: float | None
    system_tcbs: int
    tried: list[Trial] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``size --json`` object."""
        return {
            "depths": [list(d) for d in self.answer.depths],
            "unreserved": self.answer.unreserved,
            "throughput_ops_per_s": self.throughput_ops_per_s,
            "tcbs_per_cluster": self.answer.total,
            "fits_system_tcbs": self.answer.total <= self.system_tcbs,
            "system_tcbs": self.system_tcbs,
            "lower_bound": self.lower_bound.to_dict(),
            "unconstrained": self.unconstrained.to_dict(),
            "unconstrained_throughput_ops_per_s": self.unconstrained_throughput_ops_per_s,
            "unconstrained_latency_ms_p99": self.unconstrained_latency_ms_p99,
            "tolerance": self.tolerance,
            "latency_factor": self.latency_factor,
            "seeds": self.seeds,
            "tried": [t.to_dict() for t in self.tried],
        }


def lower_bound(config: Config) -> Reservation:
    """The analytic lower bound ([0021]): one pool of one TCB per level, nothing unreserved.

    One process needs at most one TCB per (cluster, level) in this model, so a
    pool of one TCB is enough for any process to complete at its level.
    """
    return Reservation(tuple((1, 1) for _ in range(config.levels)), 0)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _mean_p99(summaries: Sequence[dict[str, Any]]) -> float | None:
    p99s = [s["latency_ms"]["p99"] for s in summaries if s["latency_ms"]["p99"] is not None]
    return round(_mean(p99s), 6) if p99s else None


class _Search:
    """Runs candidates over the seeds, caching every trial."""

    def __init__(
        self,
        config: Config,
        seeds: int,
        tolerance: float,
        latency_factor: float | None,
        client: Client | None,
        allocator: str,
        log: Callable[[str], None] | None,
    ) -> None:
        self.base = config.with_overrides({"controller.policy": "depth"})
        base_seed = self.base.controller.seed
        self.seeds = [base_seed + i for i in range(seeds)]
        self.tolerance = tolerance
        self.latency_factor = latency_factor
        self.p99_limit: float | None = None
        self.client = client
        self.allocator = allocator
        self.log = log
        self.tried: list[Trial] = []
        self.cache: dict[Reservation, Trial] = {}
        self.target = 0.0

    def configs(self, r: Reservation) -> list[dict[str, Any]]:
        budget = max(self.base.reservation.system_tcbs, r.total)
        return [
            self.base.with_overrides({
                "reservation.depths": [list(d) for d in r.depths],
                "reservation.unreserved": r.unreserved,
                "reservation.system_tcbs": budget,
                "controller.seed": seed,
            }).to_dict()
            for seed in self.seeds
        ]

    def summaries(self, r: Reservation) -> list[Any]:
        from pyresv.tools.sweep import execute

        return execute(self.configs(r), self.client, allocator=self.allocator)

    def unconstrained(self) -> tuple[Reservation, float, float | None]:
        levels = self.base.levels
        pools = UNCONSTRAINED_START
        while pools <= UNCONSTRAINED_MAX:
            r = Reservation(tuple((pools, 1) for _ in range(levels)), 0)
            outcomes = self.summaries(r)
            errors = [o.error for o in outcomes if o.error]
            if errors:
                raise RuntimeError(f"the unconstrained run {r.to_dict()} failed: {errors[0]}")
            sums = [o.summary for o in outcomes]
            queued = any(q for s in sums for lv in s["per_level"] for q in lv["peak_queued"])
            if not queued:
                if any(s["deadlocked"] or s["timed_out"] for s in sums):  # pragma: no cover - a model bug
                    raise RuntimeError(f"the unconstrained run {r.to_dict()} did not complete")
                tp = round(_mean([s["throughput_ops_per_s"] for s in sums]), 3)
                p99 = _mean_p99(sums)
                self.target = (1.0 - self.tolerance) * tp
                if self.latency_factor is not None and p99 is not None:
                    self.p99_limit = self.latency_factor * p99
                if self.log:
                    shown = "-" if p99 is None else f"{p99:.3f}"
                    self.log(f"unconstrained: {r.depths[0][0]} pools of 1 TCB per level, nothing unreserved: "
                             f"{tp:.1f} ops/s, p99 {shown} ms (no request ever waited for a TCB)")
                return r, tp, p99
            pools *= 2
        raise RuntimeError(
            f"requests still wait for TCBs with {UNCONSTRAINED_MAX} pools per level: "
            "the workload is too heavy to define an unconstrained run"
        )

    def trial(self, r: Reservation, stage: str) -> Trial:
        if r in self.cache:
            return self.cache[r]
        outcomes = self.summaries(r)
        errors = [o.error for o in outcomes if o.error]
        sums = [o.summary for o in outcomes if o.summary is not None]
        deadlocks = sum(1 for s in sums if s["deadlocked"])
        timeouts = sum(1 for s in sums if s["timed_out"])
        rates = [s["throughput_ops_per_s"] for s in sums if not s["deadlocked"]]
        tp = round(_mean(rates), 3) if rates else None
        p99 = _mean_p99(sums)
        ok = not errors and deadlocks == 0 and timeouts == 0 and tp is not None and tp >= self.target
        if self.p99_limit is not None:
            ok = ok and p99 is not None and p99 <= self.p99_limit
        t = Trial(r, stage, deadlocks, timeouts, errors, tp, p99, ok)
        self.cache[r] = t
        self.tried.append(t)
        if self.log:
            self.log(_trial_line(t))
        return t

    def smallest(
        self,
        make: Callable[[int], Reservation],
        lo_fail: int,
        hi: int | None,
        stage: str,
        cap: int = UNCONSTRAINED_MAX,
    ) -> int | None:
        """The smallest ``n`` in ``(lo_fail, cap]`` for which ``make(n)`` passes,
        given that ``make(lo_fail)`` fails and ``make(hi)`` passes (``hi=None``:
        unknown, found by doubling). None when even ``cap`` fails."""
        if hi is None:
            n = max(1, lo_fail * 2)
            while True:
                n = min(n, cap)
                if self.trial(make(n), stage).ok:
                    hi = n
                    break
                lo_fail = n
                if n >= cap:
                    return None
                n *= 2
        while hi - lo_fail > 1:
            mid = (lo_fail + hi) // 2
            if self.trial(make(mid), stage).ok:
                hi = mid
            else:
                lo_fail = mid
        return hi


def _trial_line(t: Trial) -> str:
    r = t.reservation
    depths = " ".join(f"{p}x{s}" for p, s in r.depths)
    p99 = "-" if t.latency_ms_p99 is None else f"{t.latency_ms_p99:.3f}"
    tp = "-" if t.throughput_ops_per_s is None else f"{t.throughput_ops_per_s:.1f}"
    status = "ok" if t.ok else "no"
    extra = f" ({len(t.errors)} errors: {t.errors[0]})" if t.errors else ""
    return (f"  {t.stage:<12} depths {depths:<20} unreserved {r.unreserved:<4} TCBs {r.total:<5} "
            f"deadlocks {t.deadlocks}  throughput {tp:>10}  p99 {p99:>8} ms  "
            f"{status}{extra}")


def size(
    config: Config,
    seeds: int = 3,
    *,
    tolerance: float = 0.05,
    latency_factor: float | None = None,
    client: Client | None = None,
    allocator: str = "auto",
    log: Callable[[str], None] | None = None,
) -> SizeResult:
    """Find the smallest deadlock-free reservation within ``tolerance`` of the
    unconstrained throughput (see the module docstring for the search).

    Runs serially here, or on ``client`` (a Dask client; the seeds of one
    candidate run in parallel). ``log`` receives one line per trial.
    Raises :class:`ConfigError` for bad ``seeds``/``tolerance``/``latency_factor``.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds: must be an integer in [1, {MAX_SEEDS}], got {show(seeds)}")
    if not 0.0 <= tolerance < 1.0:
        raise ConfigError(f"--tolerance: must be in [0, 1), got {tolerance!r}")
    if latency_factor is not None and not 1.0 <= latency_factor < math.inf:
        raise ConfigError(f"--latency-factor: must be a finite number >= 1, got {latency_factor!r}")
    s = _Search(config, seeds, tolerance, latency_factor, client, allocator, log)
    lb = lower_bound(config)
    levels = config.levels
    if log:
        log(f"analytic lower bound ([0021]): {levels} levels x 1 pool of 1 TCB, 0 unreserved "
            f"({lb.total} TCBs per cluster)")
    unc, unc_tp, unc_p99 = s.unconstrained()
    if log:
        p99_rule = "" if s.p99_limit is None else f", mean p99 <= {s.p99_limit:.3f} ms ({latency_factor:g}x)"
        log(f"target: mean throughput >= {s.target:.1f} ops/s ({(1 - tolerance) * 100:g}% of unconstrained)"
            f"{p99_rule}, no deadlock, over seeds {s.seeds}")
        log("tried:")

    best = lb
    if not s.trial(lb, "lower bound").ok:
        # Step 2: uniform pool count.
        def uniform(n: int) -> Reservation:
            return Reservation(tuple((n, 1) for _ in range(levels)), 0)

        p = s.smallest(uniform, 1, None, "uniform")
        if p is None:  # pragma: no cover - the unconstrained reservation passes
            raise RuntimeError("no uniform pool count passes")
        pools = [p] * levels
        # Step 3: trim each level, deepest first.
        for lv in reversed(range(levels)):
            def one_level(n: int, lv: int = lv) -> Reservation:
                trimmed = list(pools)
                trimmed[lv] = n
                return Reservation(tuple((x, 1) for x in trimmed), 0)

            if pools[lv] > 1:
                if s.trial(one_level(1), f"level {lv + 1}").ok:
                    pools[lv] = 1
                else:
                    found = s.smallest(one_level, 1, pools[lv], f"level {lv + 1}")
                    pools[lv] = found if found is not None else pools[lv]
        best = Reservation(tuple((x, 1) for x in pools), 0)
        # Step 4: the lower bound plus unreserved TCBs, if that is smaller.
        cap = best.total - lb.total - 1  # more than this would not be smaller
        if cap >= 1:
            def unreserved(n: int) -> Reservation:
                return Reservation(lb.depths, n)

            u = s.smallest(unreserved, 0, None, "unreserved", cap)
            if u is not None:
                best = unreserved(u)
    answer = s.cache[best]
    assert answer.throughput_ops_per_s is not None  # the answer passed: none of its runs deadlocked
    return SizeResult(
        answer=best,
        throughput_ops_per_s=answer.throughput_ops_per_s,
        lower_bound=lb,
        unconstrained=unc,
        unconstrained_throughput_ops_per_s=unc_tp,
        unconstrained_latency_ms_p99=unc_p99,
        seeds=s.seeds,
        tolerance=tolerance,
        latency_factor=latency_factor,
        system_tcbs=config.reservation.system_tcbs,
        tried=s.tried,
    )


# ------------------------------------------------------------ size --budget
#: ``size --budget T``: the largest T accepted, and the default bound on candidates run.
BUDGET_MAX = 65536
BUDGET_MAX_TRIES = 64
#: The largest ``--max-tries`` accepted.
MAX_TRIES_LIMIT = 10000

#: Why every candidate of ``size --budget`` is deadlock-free (printed with the search).
BUDGET_SAFETY = (
    "every candidate keeps at least one pool of one TCB per level, so none can deadlock: a process "
    "holds at most one TCB per cluster and level, each process gets what it needs to complete at its "
    "level ([0021]), and each hop to another cluster is one level deeper ([0038]), so a level waits "
    "only on deeper ones and the deepest on nothing"
)


@dataclass(frozen=True)
class Split:
    """One candidate of ``size --budget``: the pools per level (of one TCB each;
    the rest of the budget is unreserved) and the wake order of the unreserved TCBs."""

    pools: tuple[int, ...]
    wake: str

    def reservation(self, budget: int) -> Reservation:
        """The split as a :class:`Reservation` of exactly ``budget`` TCBs."""
        return Reservation(tuple((p, 1) for p in self.pools), budget - sum(self.pools))


@dataclass(frozen=True)
class BudgetTrial:
    """One split run over every seed."""

    reservation: Reservation
    wake: str
    stage: str
    deadlocks: int
    timeouts: int
    errors: list[str]
    latency_ms: dict[str, float | None]
    throughput_ops_per_s: float | None
    ok: bool

    @property
    def p99(self) -> float:
        """Mean p99 for ranking (infinite when nothing completed)."""
        p99 = self.latency_ms["p99"]
        return math.inf if p99 is None else p99

    def to_dict(self) -> dict[str, Any]:
        """The ``tried`` entry."""
        d: dict[str, Any] = {
            "depths": [list(x) for x in self.reservation.depths],
            "unreserved": self.reservation.unreserved,
            "wake": self.wake,
            "tcbs_per_cluster": self.reservation.total,
            "deadlocks": self.deadlocks,
            "timeouts": self.timeouts,
            "latency_ms_p50": self.latency_ms["p50"],
            "latency_ms_p99": self.latency_ms["p99"],
            "throughput_ops_per_s": self.throughput_ops_per_s,
            "ok": self.ok,
            "stage": self.stage,
        }
        if self.errors:
            d["errors"] = self.errors
        return d


@dataclass
class BudgetResult:
    """The answer of :func:`size_budget`, the deepest-first runs it is priced
    against, and every split tried."""

    budget: int
    answer: BudgetTrial
    deepest_first: dict[str, Any]
    price_of_safety: dict[str, Any]
    lower_bound: Reservation
    seeds: list[int]
    system_tcbs: int
    splits: int
    tried: list[BudgetTrial] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``size --budget --json`` object: today's fields (those of the
        throughput search are null: no unconstrained run, no tolerance), plus
        ``wake``, ``latency_ms`` and ``price_of_safety``."""
        a = self.answer
        return {
            "depths": [list(d) for d in a.reservation.depths],
            "unreserved": a.reservation.unreserved,
            "wake": a.wake,
            "tcbs_per_cluster": a.reservation.total,
            "latency_ms": dict(a.latency_ms),
            "throughput_ops_per_s": a.throughput_ops_per_s,
            "price_of_safety": self.price_of_safety,
            "tried": [t.to_dict() for t in self.tried],
            "budget": self.budget,
            "deepest_first": self.deepest_first,
            "splits": self.splits,
            "fits_system_tcbs": a.reservation.total <= self.system_tcbs,
            "system_tcbs": self.system_tcbs,
            "lower_bound": self.lower_bound.to_dict(),
            "unconstrained": None,
            "unconstrained_throughput_ops_per_s": None,
            "unconstrained_latency_ms_p99": None,
            "tolerance": None,
            "latency_factor": None,
            "seeds": self.seeds,
        }


class _BudgetSearch:
    """Runs batches of splits over the seeds (on Dask when given a client), caching every trial."""

    def __init__(self, config: Config, budget: int, seeds: int, client: Client | None, allocator: str,
                 max_tries: int, log: Callable[[str], None] | None) -> None:
        self.budget = budget
        self.base = config.with_overrides({
            "controller.policy": "depth",
            "reservation.system_tcbs": max(config.reservation.system_tcbs, budget),
        })
        self.seeds = [self.base.controller.seed + i for i in range(seeds)]
        self.client = client
        self.allocator = allocator
        self.max_tries = max_tries
        self.log = log
        self.cache: dict[Split, BudgetTrial] = {}
        self.tried: list[BudgetTrial] = []

    def _configs(self, policy: str, r: Reservation, wake: str) -> list[dict[str, Any]]:
        return [
            self.base.with_overrides({
                "controller.policy": policy,
                "reservation.depths": [list(d) for d in r.depths],
                "reservation.unreserved": r.unreserved,
                "reservation.wake": wake,
                "controller.seed": seed,
            }).to_dict()
            for seed in self.seeds
        ]

    def run(
        self, splits: Sequence[Split], stage: str, extra: Sequence[dict[str, Any]] = ()
    ) -> tuple[list[BudgetTrial], list[Any]]:
        """Run the splits not tried yet (at most what ``max_tries`` leaves) and
        the ``extra`` configs in one batch; the trials of ``splits`` that ran or
        were cached, and the extra outcomes."""
        from pyresv.tools.sweep import execute

        todo: list[Split] = []
        for s in splits:
            if s not in self.cache and s not in todo and len(self.tried) + len(todo) < self.max_tries:
                todo.append(s)
        configs = [c for s in todo for c in self._configs("depth", s.reservation(self.budget), s.wake)]
        outcomes = execute([*configs, *extra], self.client, allocator=self.allocator)
        n = len(self.seeds)
        for i, s in enumerate(todo):
            got = outcomes[i * n : (i + 1) * n]
            errors = [o.error for o in got if o.error]
            sums = [o.summary for o in got if o.summary is not None]
            deadlocks = sum(1 for x in sums if x["deadlocked"])
            timeouts = sum(1 for x in sums if x["timed_out"])
            row = policy_row("depth", sums)
            t = BudgetTrial(s.reservation(self.budget), s.wake, stage, deadlocks, timeouts, errors,
                            row["latency_ms"], row["throughput_ops_per_s"],
                            not errors and deadlocks == 0 and timeouts == 0)
            self.cache[s] = t
            self.tried.append(t)
            if self.log:
                self.log(_budget_line(t))
        return [self.cache[s] for s in splits if s in self.cache], outcomes[len(configs):]


def _budget_line(t: BudgetTrial) -> str:
    r = t.reservation
    pools = " ".join(str(p) for p, _ in r.depths)
    p99 = "-" if t.latency_ms["p99"] is None else f"{t.latency_ms['p99']:.3f}"
    p50 = "-" if t.latency_ms["p50"] is None else f"{t.latency_ms['p50']:.3f}"
    status = "ok" if t.ok else "no"
    extra = f" ({len(t.errors)} errors: {t.errors[0]})" if t.errors else ""
    return (f"  {t.stage:<8} pools per level {pools:<14} unreserved {r.unreserved:<5} wake {t.wake:<8} "
            f"deadlocks {t.deadlocks}  p50 {p50:>9} ms  p99 {p99:>9} ms  {status}{extra}")


def check_budget_arguments(config: Config, budget: Any, seeds: Any, max_tries: Any) -> None:
    """Refuse bad ``size --budget`` arguments with a :class:`ConfigError` naming
    the option: ``levels <= budget <= BUDGET_MAX``, ``1 <= seeds <= MAX_SEEDS``,
    ``1 <= max_tries <= MAX_TRIES_LIMIT``."""
    levels = config.levels
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < levels:
        raise ConfigError(f"--budget: must be >= {levels} (one pool of one TCB per level, [0021]), got {budget!r}")
    if budget > BUDGET_MAX:
        raise ConfigError(f"--budget: must be <= {BUDGET_MAX}, got {budget}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds: must be an integer in [1, {MAX_SEEDS}], got {show(seeds)}")
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or not 1 <= max_tries <= MAX_TRIES_LIMIT:
        raise ConfigError(f"--max-tries: must be >= 1 and <= {MAX_TRIES_LIMIT}, got {max_tries!r}")


def size_budget(
    config: Config,
    budget: int,
    seeds: int = 3,
    *,
    client: Client | None = None,
    allocator: str = "auto",
    max_tries: int = BUDGET_MAX_TRIES,
    log: Callable[[str], None] | None = None,
) -> BudgetResult:
    """The split of exactly ``budget`` TCBs per cluster into pools per level
    (one TCB each, at least one per level) plus unreserved TCBs, and the wake
    order, with the lowest mean p99 latency over the seeds and no deadlock.

    A compass search, not an enumeration (see the module docstring, ``size
    --budget``); at most ``max_tries`` splits run. Raises :class:`ConfigError`
    for bad arguments before anything runs, ``RuntimeError`` when no split
    completed on every seed.
    """
    levels = config.levels
    check_budget_arguments(config, budget, seeds, max_tries)
    s = _BudgetSearch(config, budget, seeds, client, allocator, max_tries, log)
    bound = (1,) * levels
    lb = Reservation(tuple((1, 1) for _ in range(levels)), 0)
    if log:
        log(f"budget: {budget} TCBs per cluster over {levels} levels, split into pools of one TCB per level "
            "plus unreserved TCBs")
        log(f"{BUDGET_SAFETY[0].upper()}{BUDGET_SAFETY[1:]}.")
        log("tried:")
    # Stage 1: the [0021] bound, the rest unreserved, under both wake orders;
    # deepest-first with the same TCBs runs in the same batch.
    df_configs = s._configs("deepest-first", Split(bound, "deepest").reservation(budget), "deepest")
    first, df_outcomes = s.run([Split(bound, "deepest"), Split(bound, "fifo")], "bound", df_configs)
    df_errors = [o.error for o in df_outcomes if o.error]
    if df_errors:
        raise RuntimeError(f"a deepest-first run failed: {df_errors[0]}")
    deepest_first = policy_row("deepest-first", [o.summary for o in df_outcomes])
    ok = [t for t in first if t.ok]
    if not ok:
        raise RuntimeError(f"the bound {lb.to_dict()} did not complete on every seed: {_budget_line(first[0])}")
    best = min(ok, key=lambda t: t.p99)
    wake = best.wake
    x = bound
    # Stage 2: compass search over the pools per level, moving `step` TCBs
    # between a level's pools and the unreserved TCBs; the step halves when no
    # neighbour is faster.
    step = 1
    while step * 2 <= (budget - levels) // (2 * levels):
        step *= 2
    while step >= 1 and len(s.tried) < max_tries:
        neighbours = []
        for lv in range(levels):
            for d in (step, -step):
                y = list(x)
                y[lv] += d
                if y[lv] >= 1 and sum(y) <= budget:
                    neighbours.append(Split(tuple(y), wake))
        trials, _ = s.run(neighbours, f"step {step}")
        better = [t for t in trials if t.ok and t.p99 < best.p99]
        if better:
            best = min(better, key=lambda t: t.p99)
            x = tuple(p for p, _ in best.reservation.depths)
        else:
            step //= 2
    price = {"against": "deepest-first", "p50": None, "p99": None}
    if deepest_first["deadlocked_runs"] == 0:
        for q in ("p50", "p99"):
            mine, theirs = best.latency_ms[q], deepest_first["latency_ms"][q]
            price[q] = round(mine / theirs, 4) if mine is not None and theirs else None
    return BudgetResult(
        budget=budget,
        answer=best,
        deepest_first=deepest_first,
        price_of_safety=price,
        lower_bound=lb,
        seeds=s.seeds,
        system_tcbs=config.reservation.system_tcbs,
        splits=2 * math.comb(budget, levels),
        tried=s.tried,
    )


# --------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``pyresv size``."""
    p.epilog = (
        "Candidates run under the depth policy over N seeds. A candidate passes with no deadlock, no "
        "timeout and a mean throughput within the tolerance of the unconstrained run's (U pools of one "
        "TCB per level, U doubled from 64 until no request ever waits for a TCB). The search starts at "
        "the analytic lower bound ([0021]: one pool of one TCB per level, which lets every process "
        "complete), then finds the smallest uniform pool count, trims each level deepest first, and "
        "tries the lower bound plus unreserved TCBs; everything tried is printed. Throughput counts the "
        "whole simulated time, so a light workload may pass at the bound while its latency grows: "
        "--latency-factor adds a p99 rule. With --budget T it finds instead the split of exactly T TCBs "
        "per cluster (pools of one TCB per level, at least one per level, the rest unreserved, and the "
        "wake order) with the lowest mean p99 latency: a compass search from the [0021] bound, at most "
        "--max-tries splits, priced against deepest-first with the same T TCBs."
    )
    p.add_argument("config", nargs="?", metavar="CONFIG", help="TOML config (default: the built-in one)")
    p.add_argument("--budget", type=int, metavar="T",
                   help="instead: the split of exactly T TCBs per cluster (pools per level, unreserved, wake) "
                        "with the lowest p99 latency, priced against deepest-first with T TCBs")
    p.add_argument("--max-tries", type=int, default=BUDGET_MAX_TRIES, metavar="N",
                   help=f"--budget: run at most N splits (default {BUDGET_MAX_TRIES})")
    p.add_argument("--seeds", type=int, default=3, help="seeds per candidate: controller.seed + 0 .. N-1 (default 3)")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="allowed throughput loss against the unconstrained run (default 0.05)")
    p.add_argument("--latency-factor", type=float, metavar="F",
                   help="also require a mean p99 latency <= F x the unconstrained run's (default: no latency rule)")
    p.add_argument("--workers", type=int, default=0,
                   help="run the seeds on a local Dask cluster of this many processes on 127.0.0.1 "
                        "(default 0: serially here)")
    add_dask_arguments(p)
    p.add_argument("--json", action="store_true", help="print the answer and everything tried as JSON")
    p.add_argument("--allocator", choices=ALLOCATORS, default="auto",
                   help="allocator implementation (default: the compiled core when built)")


def _run_budget(
    config: Config, args: argparse.Namespace, budget: int, log: Callable[[str], None] | None,
    out: Callable[[str], None],
) -> int:
    """``pyresv size --budget T``."""
    def search(client: Client | None) -> BudgetResult:
        return size_budget(config, budget, args.seeds, client=client, allocator=args.allocator,
                           max_tries=args.max_tries, log=log)

    # Bad arguments are refused before a Dask cluster starts.
    check_budget_arguments(config, budget, args.seeds, args.max_tries)
    if args.latency_factor is not None:
        raise ConfigError("--latency-factor: not used with --budget (the budget search ranks splits by p99 alone)")
    try:
        if args.scheduler is not None or args.workers > 0:
            from pyresv.tools.sweep import open_client

            with open_client(args.workers or 1, args.scheduler, timeout=args.timeout) as client:
                result = search(client)
        else:
            result = search(None)
    except RuntimeError as exc:
        print(f"pyresv size: {exc}", file=sys.stderr)
        return 1
    if args.json:
        out(json.dumps(result.to_dict(), indent=2))
        return 0
    a, df = result.answer, result.deepest_first

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f} ms"

    out("")
    out(f"answer: depths {[list(d) for d in a.reservation.depths]}, unreserved {a.reservation.unreserved}, "
        f"wake {a.wake!r} ({a.reservation.total} TCBs per cluster): p50 {ms(a.latency_ms['p50'])}, "
        f"p99 {ms(a.latency_ms['p99'])}, no deadlock over seeds {result.seeds}")
    out(f"deepest-first with the same {result.budget} TCBs: p50 {ms(df['latency_ms']['p50'])}, "
        f"p99 {ms(df['latency_ms']['p99'])}, {df['deadlocked_runs']} of {df['runs']} runs deadlocked")
    pos = result.price_of_safety
    if pos["p99"] is None:
        out("price of safety: none to pay: deepest-first deadlocked (or completed nothing)")
    else:
        out(f"price of safety: p99 {pos['p99']:.3f}x deepest-first's (p50 "
            f"{'-' if pos['p50'] is None else format(pos['p50'], '.3f')}x)")
    out(f"searched {len(result.tried)} of {result.splits:,} splits (compass search from the [0021] bound)")
    if a.reservation.total > result.system_tcbs:
        out(f"warning: the answer needs {a.reservation.total} TCBs, more than reservation.system_tcbs = "
            f"{result.system_tcbs}")
    return 0


def run_cli(args: argparse.Namespace, *, out: Callable[[str], None] = print) -> int:
    """``pyresv size``: print what was tried and the answer (or JSON); with
    ``--budget T`` the best split of T TCBs (exit 1 when no split completed)."""
    check_dask_arguments(args)
    config = load(args.config) if args.config else default_config()
    log = None if args.json else out
    budget = getattr(args, "budget", None)
    if budget is not None:
        return _run_budget(config, args, budget, log, out)
    if log and config.controller.policy != "depth":
        log(f"note: controller.policy is {config.controller.policy!r}; sizing is for the depth policy")
    if args.scheduler is not None or args.workers > 0:
        from pyresv.tools.sweep import open_client

        with open_client(args.workers or 1, args.scheduler, timeout=args.timeout) as client:
            result = size(config, args.seeds, tolerance=args.tolerance,
                          latency_factor=args.latency_factor, client=client,
                          allocator=args.allocator, log=log)
    else:
        result = size(config, args.seeds, tolerance=args.tolerance, latency_factor=args.latency_factor,
                      allocator=args.allocator, log=log)
    if args.json:
        out(json.dumps(result.to_dict(), indent=2))
        return 0
    a = result.answer
    share = (result.throughput_ops_per_s / result.unconstrained_throughput_ops_per_s * 100
             if result.unconstrained_throughput_ops_per_s else 0.0)
    out("")
    p99 = next(t.latency_ms_p99 for t in result.tried if t.reservation == a)
    p99_text = "-" if p99 is None else f"{p99:.3f}"
    unc_p99 = result.unconstrained_latency_ms_p99
    unc_text = "-" if unc_p99 is None else f"{unc_p99:.3f}"
    out(f"answer: depths {[list(d) for d in a.depths]}, unreserved {a.unreserved} "
        f"({a.total} TCBs per cluster): {result.throughput_ops_per_s:.1f} ops/s "
        f"({share:.1f}% of unconstrained), p99 {p99_text} ms (unconstrained {unc_text} ms), "
        f"no deadlock over seeds {result.seeds}")
    lb = result.lower_bound
    out(f"analytic lower bound: depths {[list(d) for d in lb.depths]}, unreserved 0 ({lb.total} TCBs per cluster)")
    if a.total > result.system_tcbs:
        out(f"warning: the answer needs {a.total} TCBs, more than reservation.system_tcbs = {result.system_tcbs}")
    return 0
