"""A SimPy model with nested calls across two servers, before and after pyresv.

Requests arrive at two servers, A and B. A request holds a worker of its
server while it calls the other server, whose handler calls back the first
one (A -> B -> A): the nested calls of a storage controller's two clusters
(patent [0007], [0038]), or of two microservices that call each other.

With SimPy's resources the model stops silently: every worker is held by a
request that waits for a worker of the other server, and ``env.run()`` simply
returns. The only change that makes it complete is the line in
``make_server`` (the same 6 workers per server; 2 of them now held back for
the two nested levels, so at most 4 top-level requests run at once)::

    -    return simpy.Resource(env, capacity=6)
    +    return DepthResource(env, capacity=6, levels=3)

The same holds for ``simpy.PriorityResource`` (top-level requests first) and
``simpy.PreemptiveResource`` (top-level requests preempt nested ones, which
start over) against ``DepthPriorityResource`` and ``DepthPreemptiveResource``.

Run ``python simpy_nested.py --resource simpy`` and ``--resource depth``, each
with ``--kind resource|priority|preemptive``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys

import simpy

from pyresv.adapters.simpy import DepthPreemptiveResource, DepthPriorityResource, DepthResource, find_deadlock

HOPS = 2  # a request's calls: A -> B -> A, three nesting levels
KINDS = ("resource", "priority", "preemptive")


def make_server(env: simpy.Environment, resource: str, kind: str):
    """One server's pool of workers: the line that changes."""
    if resource == "simpy":
        if kind == "priority":
            return simpy.PriorityResource(env, capacity=6)
        if kind == "preemptive":
            return simpy.PreemptiveResource(env, capacity=6)
        return simpy.Resource(env, capacity=6)
    if kind == "priority":
        return DepthPriorityResource(env, capacity=6, levels=3)
    if kind == "preemptive":
        return DepthPreemptiveResource(env, capacity=6, levels=3)
    return DepthResource(env, capacity=6, levels=3)


# ---- the user's model: unchanged between the two runs --------------------
def handle(env, here, there, hops, rng, log, name, kind):
    """Serve one request on ``here``; with ``hops`` left, call ``there`` while holding a worker.

    Top-level requests have priority 0 (most important), nested calls 1 and
    2. A preempted handler starts over.
    """
    ask = {} if kind == "resource" else {"priority": HOPS - hops}
    while True:
        try:
            with here.request(**ask) as req:
                yield req
                yield env.timeout(rng.expovariate(10.0))  # local work
                if hops:
                    yield env.process(handle(env, there, here, hops - 1, rng, log, name, kind))
                yield env.timeout(rng.expovariate(10.0))
            break
        except simpy.Interrupt:
            log.append((round(env.now, 6), name, "preempted", hops))
    if hops == HOPS:
        log.append((round(env.now, 6), name, "done", hops))


def arrivals(env, here, there, count, rng, log, prefix, kind):
    for i in range(count):
        env.process(handle(env, here, there, HOPS, rng, log, f"{prefix}{i}", kind))
        yield env.timeout(rng.expovariate(20.0))


def run(resource: str, kind: str = "resource", requests: int = 50, seed: int = 1) -> dict:
    """Run the model with ``requests`` arrivals per server; a summary dict."""
    rng = random.Random(seed)
    env = simpy.Environment()
    a, b = make_server(env, resource, kind), make_server(env, resource, kind)
    a.name, b.name = "A", "B"
    log: list[tuple[float, str, str, int]] = []
    env.process(arrivals(env, a, b, requests, rng, log, "a", kind))
    env.process(arrivals(env, b, a, requests, rng, log, "b", kind))
    env.run()
    cycle = find_deadlock(env, [a, b])
    return {
        "resource": resource,
        "kind": kind,
        "requests": 2 * requests,
        "completed": sum(1 for entry in log if entry[2] == "done"),
        "preempted": sum(1 for entry in log if entry[2] == "preempted"),
        "stopped_at": round(env.now, 6),
        "deadlock_cycle": [str(step) for step in cycle],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resource", choices=["simpy", "depth"], default="depth")
    parser.add_argument("--kind", choices=[*KINDS, "all"], default="all")
    parser.add_argument("--requests", type=int, default=50, help="arrivals per server")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print each summary as one line of JSON")
    args = parser.parse_args(argv)
    kinds = KINDS if args.kind == "all" else (args.kind,)
    ok = True
    for kind in kinds:
        result = run(args.resource, kind, args.requests, args.seed)
        ok &= result["completed"] == result["requests"]
        if args.json:
            print(json.dumps(result))
            continue
        print(f"{result['resource']} {kind}: {result['completed']} of {result['requests']} requests "
              f"completed ({result['preempted']} preemptions); env.run() returned at t={result['stopped_at']}")
        for step in result["deadlock_cycle"]:
            print("  stuck:", step)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
