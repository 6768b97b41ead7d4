"""The TCB policies a cluster can run, and what each one gives its allocator.

Every policy gets the same TCBs per cluster: the depth configuration's total
(the pools carved by FIGs 2A/2B plus the unreserved TCBs), so runs compare
like for like (DESIGN.md section 2, "Policies").

* ``shared``: the status quo. One pool per cluster, every TCB unreserved, one
  strict FIFO queue whatever ``reservation.wake`` says. It deadlocks when every
  TCB of two clusters is held by work waiting on the other ([0007]).
* ``deepest-first``: one pool, every TCB unreserved, a freed TCB goes to the
  deepest waiting request, oldest first among equals (what a user would pick
  instead; Linux's block layer gives its bio_set rescuers' work this order).
  Deeper work finishes first, yet it is not deadlock-free: when every TCB is
  held by work that waits, no TCB is ever freed (``pyresv check --policy
  deepest-first`` prints such a state).
* ``depth``: the configured reservation, pools per depth level plus the
  unreserved TCBs woken by ``reservation.wake`` ([0019]-[0039]).
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["POLICIES", "allocator_args"]

#: The policies, in the order tables and figures show them.
POLICIES: tuple[str, ...] = ("shared", "deepest-first", "depth")


def allocator_args(
    policy: str, depths: Sequence[tuple[int, int]], unreserved: int, wake: str
) -> tuple[list[tuple[int, int]], int, str]:
    """``(depths, unreserved, wake)`` of one cluster's ``DepthPoolAllocator``
    under ``policy``, for the depth configuration ``depths`` + ``unreserved``
    woken by ``wake``. Raises ``ValueError`` for an unknown policy.

    The one-pool policies keep the levels (a request still says its depth,
    FIG 5A) but reserve nothing: ``[(0, 1)] * D`` and every TCB unreserved.
    """
    depths = [(int(p), int(s)) for p, s in depths]
    if policy == "depth":
        return depths, unreserved, wake
    total = sum(p * s for p, s in depths) + unreserved
    if policy == "shared":
        return [(0, 1)] * len(depths), total, "fifo"
    if policy == "deepest-first":
        return [(0, 1)] * len(depths), total, "deepest"
    raise ValueError(f"policy: must be one of {', '.join(POLICIES)}, got {policy!r}")
