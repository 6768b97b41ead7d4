"""The engine's work per operation does not grow with the number of waiting operations.

A burst of host operations arriving at once queues almost all of them behind
the TCBs; every release then grants the head of a long queue. The engine's
own bookkeeping for a grant (the waiting events, the pid free list, the
waiters for a pid, the timers) must stay O(1) per operation, or a big burst
becomes quadratic. Counted, not timed: the Python steps the simulator's own
code executes per completed operation, with a small and a large burst.
"""

from __future__ import annotations

from pathlib import Path

from opcounts import count_steps

from pyresv.sim.config import default_config
from pyresv.sim.engine import Simulation

SIM = str(Path(__file__).resolve().parent.parent / "pyresv" / "sim")


def _burst(ops: int) -> tuple[float, int]:
    """Python steps of ``pyresv.sim`` per completed host op, and the longest
    queue, for ``ops`` host operations arriving within one microsecond."""
    config = default_config().with_overrides({
        "workload.rate_ops_per_s": ops * 1e6, "workload.duration_s": 1e-6, "flashcopy": [],
    })
    result, steps = count_steps(Simulation(config).run, SIM)  # the simulator's own steps only
    assert not result.deadlocked and result.completed_ops == result.issued_ops
    return steps / result.completed_ops, max(max(row) for row in result.peak_queued)


def test_a_bigger_burst_costs_the_engine_no_more_per_operation() -> None:
    small, small_queue = _burst(300)
    big, big_queue = _burst(3000)
    assert big_queue >= 8 * small_queue > 0  # the big burst really waits in a long queue
    # A scan of the waiters per release would add about big_queue / 2 steps
    # to every operation of the big burst (hundreds); the fixed costs spread
    # over more operations make it cheaper instead.
    assert big <= small * 1.05, (small, big)
