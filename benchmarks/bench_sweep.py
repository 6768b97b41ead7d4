"""The sweep layer: simulator runs per wall second through :mod:`pyresv.tools.sweep`,
serially in-process and on a local Dask cluster of 2 worker processes on
127.0.0.1, on one small config (16 runs of about 1000 host operations).

The cluster is started (and warmed up: imports in the workers) in ``setup``,
so the timings are the steady-state cost of a sweep, not the cluster's start.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

from pyresv.tools import sweep
from pyresv.sim.config import parse

SMALL = tomllib.loads((Path(__file__).resolve().parents[1] / "examples" / "small.toml").read_text())
SETS = [("controller.policy", ["depth", "shared"]), ("reservation.unreserved", [0, 2])]
SEEDS = 4


class SweepThroughput:
    """16 runs (2 policies x 2 unreserved sizes x 4 seeds), serial vs 2 workers."""

    params = [0, 2]
    param_names = ["workers"]
    timeout = 300
    number = 1
    repeat = 3

    def setup(self, workers: int) -> None:
        self.configs = [p.config for p in sweep.plan(parse(SMALL), SETS, SEEDS).points]
        self._cm = None
        self.client = None
        if workers:
            self._cm = sweep.open_client(workers)
            self.client = self._cm.__enter__()
            sweep.execute(self.configs[: 2 * workers], self.client, chunk_size=1)  # warm-up

    def teardown(self, workers: int) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)

    def time_sweep(self, workers: int) -> None:
        sweep.execute(self.configs, self.client)

    def track_runs_per_wall_s(self, workers: int) -> float:
        start = time.perf_counter()
        sweep.execute(self.configs, self.client)
        return len(self.configs) / (time.perf_counter() - start)

    track_runs_per_wall_s.unit = "runs/s"


if __name__ == "__main__":  # spawned workers re-import the main module: keep this guard
    for workers in SweepThroughput.params:
        bench = SweepThroughput()
        bench.setup(workers)
        try:
            rates = [bench.track_runs_per_wall_s(workers) for _ in range(3)]
        finally:
            bench.teardown(workers)
        print(f"workers={workers}: {max(rates):.1f} runs/s (best of 3, {len(bench.configs)} runs)")
