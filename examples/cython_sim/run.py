"""Run the Cython example simulator under both policies (build it first, see README.md)."""

from __future__ import annotations

import argparse
import json
import time

import nested_sim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--json", action="store_true", help="one JSON object per policy")
    args = parser.parse_args()
    for policy in ("shared", "depth"):
        start = time.perf_counter()
        result = nested_sim.run(policy, ops=args.ops)
        wall = time.perf_counter() - start
        if args.json:
            print(json.dumps(result))
            continue
        status = "DEADLOCKED" if result["deadlocked"] else "completed"
        print(
            f"{policy:6s}: {result['completed']}/{result['ops']} ops {status} "
            f"({result['stuck']} requests stuck), {result['tcbs_per_cluster']} TCBs per cluster, "
            f"{result['events']} events in {wall * 1e3:.1f} ms wall "
            f"({wall / max(1, result['events']) * 1e9:.0f} ns/event)"
        )


if __name__ == "__main__":
    main()
