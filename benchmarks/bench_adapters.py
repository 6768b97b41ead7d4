"""The adapter layer: pyresv's SimPy resources against SimPy's own, in one contention model.

Model: ``PROCS`` SimPy processes share a resource of ``UNITS`` units; each
loops ``ROUNDS`` times over ``with res.request() as req: yield req; yield
env.timeout(1)``, so most requests queue and are served by a release. The
same model runs with no resource at all (``none``): subtracting it leaves the
cost of the request/release pairs alone (the request, its event, the release
and its event, as SimPy counts them).

Variants: ``simpy`` is ``simpy.Resource(env, capacity=UNITS)``; ``depth`` the
drop-in form ``DepthResource(env, capacity=UNITS)`` with ``request()`` (the
one-line change; issue goal: at most 0.4x ``simpy``); ``depth-levels``
``DepthResource(env, capacity=UNITS, levels=2)`` (implicit task trees and
levels); ``depth-explicit`` ``DepthResource`` over an allocator with ``UNITS``
unreserved TCBs and one explicit pid per process; ``depth-pools`` ``UNITS``
level-1 pools of one TCB; ``depth-reference`` the pure-Python allocator;
``priority-simpy`` / ``priority-depth`` ``simpy.PriorityResource`` and
``DepthPriorityResource`` with ``request(priority=pid % 3)``.

``time_*`` benchmarks are parametrized over the variant; ``track_*`` ones
time the variants round-robin inside one process (thread CPU time, best of
``ROUNDS_RATIO`` rounds: the round least disturbed by other work on the
machine) and report ratios of per-pair costs.
"""

from __future__ import annotations

import time

import simpy

import pyresv
import pyresv.reference
from pyresv.adapters.simpy import DepthPriorityResource, DepthResource

PROCS = 16  # processes contending
UNITS = 4  # resource units
ROUNDS = 50  # request/release pairs per process per run
PAIRS = PROCS * ROUNDS
ROUNDS_RATIO = 15  # rounds of the round-robin timing behind each ratio

VARIANTS = [
    "none", "simpy", "depth", "depth-levels", "depth-explicit", "depth-pools", "depth-reference",
    "priority-simpy", "priority-depth",
]  # fmt: skip


def _make(env: simpy.Environment, variant: str):
    if variant == "none":
        return None
    if variant == "simpy":
        return simpy.Resource(env, capacity=UNITS)
    if variant == "depth":
        return DepthResource(env, capacity=UNITS)
    if variant == "depth-levels":
        return DepthResource(env, capacity=UNITS, levels=2)
    if variant == "depth-pools":
        return DepthResource(env, pyresv.DepthPoolAllocator([(UNITS, 1)], 0))
    if variant == "priority-simpy":
        return simpy.PriorityResource(env, capacity=UNITS)
    if variant == "priority-depth":
        return DepthPriorityResource(env, capacity=UNITS)
    cls = pyresv.reference.DepthPoolAllocator if variant == "depth-reference" else pyresv.DepthPoolAllocator
    return DepthResource(env, cls([(0, 1)], UNITS))


def _bare(env, res, pid):
    for _ in range(ROUNDS):
        yield env.timeout(1)


def _implicit(env, res, pid):  # simpy.Resource and DepthResource alike: request()
    for _ in range(ROUNDS):
        with res.request() as req:
            yield req
            yield env.timeout(1)


def _explicit(env, res, pid):
    for _ in range(ROUNDS):
        with res.request(pid) as req:
            yield req
            yield env.timeout(1)


def _priority(env, res, pid):
    prio = pid % 3
    for _ in range(ROUNDS):
        with res.request(priority=prio) as req:
            yield req
            yield env.timeout(1)


_BODY = {
    "none": _bare, "simpy": _implicit, "depth": _implicit, "depth-levels": _implicit,
    "priority-simpy": _priority, "priority-depth": _priority,
}  # fmt: skip


def run_model(variant: str) -> float:
    """Run the contention model once; its thread CPU time in seconds."""
    env = simpy.Environment()
    res = _make(env, variant)
    body = _BODY.get(variant, _explicit)
    for pid in range(PROCS):
        env.process(body(env, res, pid))
    start = time.thread_time()
    env.run()
    return time.thread_time() - start


def pair_costs(variants: list[str], rounds: int = ROUNDS_RATIO) -> dict[str, float]:
    """Seconds per request/release pair of each variant, the model's own cost taken out.

    Variants are timed round-robin, so that machine noise hits all of them
    alike; each variant's cost is its best (least disturbed) of ``rounds``.
    """
    times: dict[str, list[float]] = {v: [] for v in ["none", *variants]}
    for _ in range(rounds):
        for v in times:
            times[v].append(run_model(v))
    none = min(times["none"])
    return {v: (min(times[v]) - none) / PAIRS for v in variants}


class ResourceContention:
    """One run of the contention model per variant (``PAIRS`` pairs)."""

    params = VARIANTS
    param_names = ["resource"]

    def setup(self, resource: str) -> None:
        run_model(resource)  # warm-up: imports, allocator code paths

    def time_contention(self, resource: str) -> None:
        run_model(resource)


class ResourceRatio:
    """pyresv's per-pair cost over SimPy's, timed in one process (goal for the drop-in: <= 0.4)."""

    timeout = 300

    def setup(self) -> None:
        for v in VARIANTS:
            run_model(v)

    def _ratio(self, variant: str, base: str = "simpy") -> float:
        costs = pair_costs([base, variant])
        return costs[variant] / costs[base]

    def track_pair_cost_ratio_dropin(self) -> float:
        """``DepthResource(env, capacity=N)`` + ``request()`` over ``simpy.Resource``: the headline."""
        return self._ratio("depth")

    def track_pair_cost_ratio_levels(self) -> float:
        return self._ratio("depth-levels")

    def track_pair_cost_ratio_explicit(self) -> float:
        return self._ratio("depth-explicit")

    def track_pair_cost_ratio_pools(self) -> float:
        return self._ratio("depth-pools")

    def track_pair_cost_ratio_priority(self) -> float:
        """``DepthPriorityResource`` over ``simpy.PriorityResource``."""
        return self._ratio("priority-depth", "priority-simpy")

    def track_us_per_pair_simpy(self) -> float:
        return pair_costs(["simpy"])["simpy"] * 1e6

    def track_us_per_pair_depth(self) -> float:
        return pair_costs(["depth"])["depth"] * 1e6

    track_pair_cost_ratio_dropin.unit = "x"  # type: ignore[attr-defined]
    track_pair_cost_ratio_levels.unit = "x"  # type: ignore[attr-defined]
    track_pair_cost_ratio_explicit.unit = "x"  # type: ignore[attr-defined]
    track_pair_cost_ratio_pools.unit = "x"  # type: ignore[attr-defined]
    track_pair_cost_ratio_priority.unit = "x"  # type: ignore[attr-defined]
    track_us_per_pair_simpy.unit = "us"  # type: ignore[attr-defined]
    track_us_per_pair_depth.unit = "us"  # type: ignore[attr-defined]


if __name__ == "__main__":  # a quick look without asv: python -m benchmarks.bench_adapters
    costs = pair_costs(VARIANTS[1:], rounds=15)
    for v, c in costs.items():
        base = costs["priority-simpy"] if v.startswith("priority") else costs["simpy"]
        print(f"{v:16s} {c * 1e6:6.2f} us/pair  {c / base:.2f} x SimPy's")
