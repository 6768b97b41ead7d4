"""The simulator layer: `pyresv simulate` on its built-in default config.

Its cost is reported per simulated host operation and relative to SimPy's own
event floor: a process looping ``yield env.timeout(0)``, timed in the same run.
The ratio is of thread CPU time, the best of interleaved rounds of each side:
on a shared machine, wall time and single rounds measure the neighbours.
A run's cost includes building the simulation (its allocators) and its workload.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import simpy

from pyresv.sim import config as pconfig
from pyresv.sim import engine

FLOOR_EVENTS = 20_000
ROUNDS = 9  # the best of 9: single rounds swing 1.5x on a shared machine


def _simpy_floor(n: int = FLOOR_EVENTS, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per ``yield env.timeout(0)`` in a bare SimPy loop."""
    env = simpy.Environment()

    def loop(env: simpy.Environment):
        for _ in range(n):
            yield env.timeout(0)

    env.process(loop(env))
    start = clock()
    env.run()
    return (clock() - start) / n


def _per_op(config: Any, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per completed host operation of one run of ``config``."""
    start = clock()
    result = engine.run(config)
    return (clock() - start) / max(1, result.completed_ops)


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
        """CPU time per simulated host op, in units of SimPy's ``timeout(0)``
        floor: the best of ``ROUNDS`` interleaved rounds of each."""
        floors, ops = [], []
        for _ in range(ROUNDS):
            floors.append(_simpy_floor(clock=time.thread_time))
            ops.append(_per_op(self.config, clock=time.thread_time))
        return min(ops) / min(floors)

    track_cost_per_op_in_simpy_floors.unit = "floors"


class SimPyFloor:
    """SimPy's own floor: one process looping ``yield env.timeout(0)``."""

    def time_timeout0_loop(self) -> None:
        _simpy_floor()
