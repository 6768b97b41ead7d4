"""The simulator layer: `pyresv simulate` on its built-in default config.

Its cost is reported per simulated host operation and relative to SimPy's own
event floor: a process looping ``yield env.timeout(0)``, timed in the same run.
"""

from __future__ import annotations

import time

import simpy

from pyresv.sim import config as pconfig
from pyresv.sim import engine

FLOOR_EVENTS = 20_000


def _simpy_floor(n: int = FLOOR_EVENTS) -> float:
    """Wall seconds per ``yield env.timeout(0)`` in a bare SimPy loop."""
    env = simpy.Environment()

    def loop(env: simpy.Environment):
        for _ in range(n):
            yield env.timeout(0)

    env.process(loop(env))
    start = time.perf_counter()
    env.run()
    return (time.perf_counter() - start) / n


class FlashCopySimulation:
    """The default workload (2 clusters, FIG 3 pools, several targets and a cascade)."""

    params = ["depth", "shared"]
    param_names = ["policy"]
    timeout = 300
    number = 1
    repeat = 3

    def setup(self, policy: str) -> None:
        self.config = pconfig.default_config().with_overrides({"controller.policy": policy})

    def time_default_config(self, policy: str) -> None:
        engine.run(self.config)

    def track_host_ops_per_wall_s(self, policy: str) -> float:
        start = time.perf_counter()
        result = engine.run(self.config)
        wall = time.perf_counter() - start
        return result.summary()["completed_ops"] / wall

    track_host_ops_per_wall_s.unit = "ops/s"

    def track_cost_per_op_in_simpy_floors(self, policy: str) -> float:
        """Wall time per simulated host op, in units of SimPy's ``timeout(0)`` floor."""
        floor = min(_simpy_floor() for _ in range(3))
        start = time.perf_counter()
        result = engine.run(self.config)
        wall = time.perf_counter() - start
        per_op = wall / max(1, result.summary()["completed_ops"])
        return per_op / floor

    track_cost_per_op_in_simpy_floors.unit = "floors"


class SimPyFloor:
    """SimPy's own floor: one process looping ``yield env.timeout(0)``."""

    def time_timeout0_loop(self) -> None:
        _simpy_floor()
