"""The pure-Python reference's work per call does not grow with the queue.

Counted, not timed: the Python steps ``pyresv.reference`` executes for one
call, with a short and a long wait queue. The reference is written for
clarity, but a call that scans every waiter makes a long simulation with the
reference allocator quadratic.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from opcounts import count_steps

from pyresv import PENDING
from pyresv.reference import DepthPoolAllocator as Ref

REFERENCE = str(Path(__file__).resolve().parent.parent / "pyresv" / "reference.py")


def _steps(call: Callable[[], Any]) -> int:
    """Python steps (opcodes) of pyresv/reference.py while ``call()`` runs."""
    return count_steps(call, REFERENCE)[1]


def _pool_handover_steps(waiting: int) -> int:
    """Steps of the release that frees a pool and hands it to the oldest of
    ``waiting`` pids queued for a pool (FIG 6A blocks 604-610)."""
    a = Ref([(1, 2)], 0, max_processes=waiting + 1, max_waiters=2 * waiting + 2)
    assert a.acquire(waiting) == 0 and a.acquire(waiting) == 1  # pid `waiting` owns the one pool
    for pid in range(waiting):  # two requests each: the pool serves both of pid 0's
        assert a.acquire(pid) == PENDING and a.acquire(pid) == PENDING
    a.release(0)  # the owner's pool is not wholly free yet
    steps = _steps(lambda: a.release(1))
    assert a.take_grants() == [(0, 1), (0, 0)]  # pid 0 got the pool and both its requests
    a.check()
    assert a.pending() == 2 * (waiting - 1)
    return steps


def test_a_freed_pool_goes_to_a_waiter_in_steps_independent_of_the_queue() -> None:
    # _drop_seekers_of scanned (and rebuilt) the level's whole seekers deque:
    # about 20 steps per waiting request, 2,487 vs 20,487 here (now 463 both).
    small, big = _pool_handover_steps(100), _pool_handover_steps(1000)
    assert big == small, (small, big)
