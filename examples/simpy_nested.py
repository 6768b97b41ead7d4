"""A SimPy model with nested calls across two servers, before and after pyresv.

Requests arrive at two servers, A and B. A request holds a worker of its
server while it calls the other server, whose handler may call back the first
one (A -> B -> A): the nested calls of a storage controller's two clusters
(patent [0007], [0038]), or of two microservices that call each other.

With ``simpy.Resource`` the model stops silently: every worker is held by a
request that waits for a worker of the other server, and ``env.run()`` simply
returns. The only change to make it complete is the line in
``make_server`` (same number of workers per server, now reserved per
nesting level)::

    -    return simpy.Resource(env, capacity=6)
    +    return DepthResource(env, DepthPoolAllocator([(2, 1)] * 3))

Run ``python simpy_nested.py --resource simpy`` and ``--resource depth``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys

import simpy

from pyresv import DepthPoolAllocator
from pyresv.adapters.simpy import DepthResource, find_deadlock

HOPS = 2  # a request's calls: A -> B -> A, three nesting levels


def make_server(env: simpy.Environment, kind: str):
    """One server's pool of workers: the line that changes."""
    if kind == "simpy":
        return simpy.Resource(env, capacity=6)
    return DepthResource(env, DepthPoolAllocator([(2, 1)] * 3))  # 6 workers: 2 per level


# ---- the user's model: unchanged between the two runs --------------------
def handle(env, here, there, hops, rng, log, name):
    """Serve one request on ``here``; with ``hops`` left, call ``there`` while holding a worker."""
    with here.request() as req:
        yield req
        yield env.timeout(rng.expovariate(10.0))  # local work
        if hops:
            yield env.process(handle(env, there, here, hops - 1, rng, log, name))
        yield env.timeout(rng.expovariate(10.0))
    if hops == HOPS:
        log.append((round(env.now, 6), name))


def arrivals(env, here, there, count, rng, log, prefix):
    for i in range(count):
        env.process(handle(env, here, there, HOPS, rng, log, f"{prefix}{i}"))
        yield env.timeout(rng.expovariate(20.0))


def run(kind: str, requests: int = 50, seed: int = 1) -> dict:
    """Run the model with ``requests`` arrivals per server; a summary dict."""
    rng = random.Random(seed)
    env = simpy.Environment()
    a, b = make_server(env, kind), make_server(env, kind)
    a.name, b.name = "A", "B"
    log: list[tuple[float, str]] = []
    env.process(arrivals(env, a, b, requests, rng, log, "a"))
    env.process(arrivals(env, b, a, requests, rng, log, "b"))
    env.run()
    cycle = find_deadlock(env, [a, b])
    return {
        "resource": kind,
        "requests": 2 * requests,
        "completed": len(log),
        "stopped_at": round(env.now, 6),
        "deadlock_cycle": [str(step) for step in cycle],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resource", choices=["simpy", "depth"], default="depth")
    parser.add_argument("--requests", type=int, default=50, help="arrivals per server")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    result = run(args.resource, args.requests, args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['resource']}: {result['completed']} of {result['requests']} requests "
              f"completed; env.run() returned at t={result['stopped_at']}")
        for step in result["deadlock_cycle"]:
            print("  stuck:", step)
    return 0 if result["completed"] == result["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
