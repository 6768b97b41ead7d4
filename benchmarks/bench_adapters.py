"""The adapter layer: ``DepthResource`` against ``simpy.Resource`` in one contention model.

Model: ``PROCS`` SimPy processes share a resource of ``UNITS`` units; each
loops ``ROUNDS`` times over ``with res.request() as req: yield req; yield
env.timeout(1)``, so most requests queue and are served by a release. The
same model runs with no resource at all (``none``): subtracting it leaves the
cost of the request/release pairs alone. ``time_*`` benchmarks are
parametrized over the resource; ``track_*`` ones time every variant inside
one process and report the ratio of per-pair costs (DepthResource over
simpy.Resource; the target is at most 0.5).

Variants: ``simpy`` is ``simpy.Resource(env, UNITS)``; ``depth`` a
``DepthResource`` over the compiled allocator with ``UNITS`` unreserved TCBs
and one explicit pid per process (``res.request(pid)``); ``depth-implicit``
the same with ``res.request()`` (pid and level from the process, the
one-line-change form); ``depth-pools`` ``UNITS`` level-1 pools of one TCB;
``depth-reference`` the pure-Python allocator.
"""

from __future__ import annotations

import time

import simpy

import pyresv
import pyresv.reference
from pyresv.adapters.simpy import DepthResource

PROCS = 16  # processes contending
UNITS = 4  # resource units (TCBs)
ROUNDS = 50  # request/release pairs per process per run
PAIRS = PROCS * ROUNDS

VARIANTS = ["none", "simpy", "depth", "depth-implicit", "depth-pools", "depth-reference"]


def _make(env: simpy.Environment, variant: str):
    if variant == "none":
        return None
    if variant == "simpy":
        return simpy.Resource(env, capacity=UNITS)
    if variant == "depth-pools":
        return DepthResource(env, pyresv.DepthPoolAllocator([(UNITS, 1)], 0))
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


_BODY = {"none": _bare, "simpy": _implicit, "depth-implicit": _implicit}


def run_model(variant: str) -> float:
    """Run the contention model once; its wall time in seconds."""
    env = simpy.Environment()
    res = _make(env, variant)
    body = _BODY.get(variant, _explicit)
    for pid in range(PROCS):
        env.process(body(env, res, pid))
    start = time.perf_counter()
    env.run()
    return time.perf_counter() - start


def pair_costs(variants: list[str], repeat: int = 7) -> dict[str, float]:
    """Seconds per request/release pair of each variant, the model's own cost taken out.

    Variants are timed round-robin, best of ``repeat``, so that machine noise
    hits all of them alike.
    """
    best = {v: float("inf") for v in ["none", *variants]}
    for _ in range(repeat):
        for v in best:
            best[v] = min(best[v], run_model(v))
    return {v: (best[v] - best["none"]) / PAIRS for v in variants}


class ResourceContention:
    """One run of the contention model per variant (``PAIRS`` pairs)."""

    params = VARIANTS
    param_names = ["resource"]

    def setup(self, resource: str) -> None:
        run_model(resource)  # warm-up: imports, allocator code paths

    def time_contention(self, resource: str) -> None:
        run_model(resource)


class ResourceRatio:
    """DepthResource's per-pair cost over simpy.Resource's, timed in one process."""

    timeout = 120

    def setup(self) -> None:
        for v in VARIANTS:
            run_model(v)

    def _ratio(self, variant: str) -> float:
        costs = pair_costs(["simpy", variant])
        return costs[variant] / costs["simpy"]

    def track_pair_cost_ratio_explicit(self) -> float:
        return self._ratio("depth")

    def track_pair_cost_ratio_implicit(self) -> float:
        return self._ratio("depth-implicit")

    def track_pair_cost_ratio_pools(self) -> float:
        return self._ratio("depth-pools")

    def track_us_per_pair_simpy(self) -> float:
        return pair_costs(["simpy"])["simpy"] * 1e6

    def track_us_per_pair_depth(self) -> float:
        return pair_costs(["depth"])["depth"] * 1e6

    track_pair_cost_ratio_explicit.unit = "x"
    track_pair_cost_ratio_implicit.unit = "x"
    track_pair_cost_ratio_pools.unit = "x"
    track_us_per_pair_simpy.unit = "us"
    track_us_per_pair_depth.unit = "us"


if __name__ == "__main__":  # a quick look without asv: python -m benchmarks.bench_adapters
    costs = pair_costs(VARIANTS[1:], repeat=15)
    for v, c in costs.items():
        print(f"{v:16s} {c * 1e6:6.2f} us/pair  {c / costs['simpy']:.2f} x simpy.Resource")
