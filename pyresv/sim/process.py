"""Simulated processes: the record of one pid (:class:`Proc`) and the SimPy
process that runs its flow (:class:`Task`).

A host operation (or background copy worker, destage, establish) is one
process with one pid for its whole tree across clusters ([0022]: the super
process and its sub-processes). :class:`Proc` is plain data that the engine,
the flows, the faults and the deadlock report all read.
"""

from __future__ import annotations

import simpy

__all__ = ["Proc", "Task"]


class Proc:
    """One simulated process (one pid): its held steps and pending request."""

    __slots__ = ("pid", "kind", "start", "steps", "pending", "task", "dead")

    def __init__(self, pid: int, kind: str, start: float) -> None:
        self.pid = pid
        self.kind = kind
        self.start = start
        self.steps: list[tuple[int, int, str, int]] = []  # (cluster, level, name, tcb), outermost first
        self.pending: tuple[int, int, str] | None = None  # (cluster, level, name)
        self.task: simpy.Process | None = None  # its SimPy process (set when faults may interrupt it)
        self.dead = False  # aborted by a fault

    def __repr__(self) -> str:
        return f"Proc(pid={self.pid}, {self.kind}, steps={self.steps}, pending={self.pending})"


class Task(simpy.Process):
    """A SimPy process whose end is not an event.

    :class:`simpy.Process` schedules itself as an event when its generator
    returns, so that other processes may wait for it. Nobody waits for a
    simulated process here, and those events were nearly a quarter of all
    events of a run (profiled), so a task just stops. Everything else is SimPy's
    ``Process._resume``: the same order of events, interrupts work, and an
    exception in a flow propagates out of the run at once.
    """

    def _resume(self, event: simpy.Event) -> None:
        env = self.env
        env._active_proc = self
        gen = self._generator
        while True:
            try:
                if event._ok:
                    event = gen.send(event._value)
                else:  # a failed event or an Interrupt: thrown into the flow
                    event._defused = True
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    event = gen.throw(exc)
            except StopIteration as stop:
                self._ok = True
                self._value = stop.value
                # As in SimPy's own Process._resume: no target once the generator
                # returned, although SimPy types Process._target as a plain Event.
                event = None  # type: ignore[assignment]
                break
            if event.callbacks is not None:
                event.callbacks.append(self._resume)
                break
        self._target = event
        env._active_proc = None
