"""Simulated processes: the record of one pid (:class:`Proc`) and the SimPy
process that runs its flow (:class:`Task`).

A host operation (or background copy worker, destage, establish) is one
process with one pid for its whole tree across clusters ([0022]: the super
process and its sub-processes). :class:`Proc` is plain data that the engine,
the flows, the faults and the deadlock report all read.
"""

from __future__ import annotations

import simpy

from pyresv.sim._simpy_private import Task

__all__ = ["Proc", "Task"]


class Proc:
    """One simulated process (one pid): its held steps and pending request."""

    __slots__ = ("pid", "kind", "start", "steps", "pending", "task", "dead", "op", "home")

    def __init__(self, pid: int, kind: str, start: float, op: int = -1, home: int = -1) -> None:
        self.pid = pid
        self.kind = kind
        self.start = start
        self.op = op  # a host operation's OP_CODES index, else -1
        self.home = home  # the cluster it runs on (host operations)
        self.steps: list[tuple[int, int, str, int]] = []  # (cluster, level, name, tcb), outermost first
        self.pending: tuple[int, int, str] | None = None  # (cluster, level, name)
        self.task: simpy.Process | None = None  # its SimPy process (set when faults may interrupt it)
        self.dead = False  # aborted by a fault

    def __repr__(self) -> str:
        return f"Proc(pid={self.pid}, {self.kind}, steps={self.steps}, pending={self.pending})"
