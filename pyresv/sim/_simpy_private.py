"""The simulator's fork of SimPy: every read or write of SimPy's private state.

The engine runs tens of thousands of processes per simulated second, and a
few of SimPy's own steps cost more than the model's work (profiled, see
``benchmarks/bench_simulator.py``). What this module does instead mirrors
SimPy 4.1's private code, so it breaks when that code changes; the
``pyproject`` pins ``simpy>=4.1,<5``, and ``tests/test_simpy_fork.py`` runs the
same flows under plain SimPy and under this module and compares their event
traces, so an upgrade that breaks the fork fails there. No other module of
``pyresv.sim`` reads SimPy's private attributes (a test checks it); the SimPy
adapter (:mod:`pyresv.adapters.simpy`) keeps its own, with the SimPy versions
they were checked against.

What it mirrors:

* :class:`Task`: ``Process._resume`` (SimPy's ``events.py``), without the
  event SimPy schedules when a process ends (nobody waits for one here).
* :func:`start_task`: ``Process.__init__`` and its ``Initialize`` event, run
  at once when called from an event's callback.
* :func:`call_after` / :func:`scheduler` / :class:`Timer`: ``Environment.schedule``
  of a ``Timeout`` (the heap entry ``(time, priority, eid, event)``).
* :func:`run_before`: ``Environment.step`` in a loop.
* :class:`Environment`: ``Environment.now``, as a slot.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, Any, Callable, Generator

import simpy
from simpy.events import NORMAL

if TYPE_CHECKING:
    from pyresv.sim.process import Proc

__all__ = ["Environment", "Task", "Timer", "call_after", "run_before", "scheduler", "start_task"]


class Environment(simpy.Environment):
    """:class:`simpy.Environment` whose ``now`` is read as fast as an attribute.

    SimPy's ``now`` is a property, which CPython 3.11 does not specialize: every
    read is a generic attribute lookup and a call (several per simulated
    operation, profiled). Here ``_now`` is a slot, and ``now`` is the same
    slot under a second name, a plain member read (set below the class).
    """

    __slots__ = ("_now",)
    now: float


# The slot's own descriptor as ``now``: reads the slot that ``_now`` writes.
Environment.now = Environment.__dict__["_now"]


class Task(simpy.Process):
    """A SimPy process whose end is not an event.

    :class:`simpy.Process` schedules itself as an event when its generator
    returns, so that other processes may wait for it. Nobody waits for a
    simulated process here, and those events were nearly a quarter of all
    events of a run (profiled), so a task just stops, and calls ``on_exit``
    (when set) with itself. Everything else is SimPy's ``Process._resume``:
    the same order of events, interrupts work, and an exception in a flow
    propagates out of the run at once.
    """

    #: Called with the task when its generator returns (None: nothing).
    on_exit: Callable[[Task], None] | None = None
    #: What ``on_exit`` needs (the engine's :class:`Proc`).
    proc: Proc | None = None

    def _resume(self, event: simpy.Event) -> None:
        # SimPy 4.1's Process._resume, but for the end of the generator.
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
                self._target = None  # type: ignore[assignment]
                env._active_proc = None
                if self.on_exit is not None:
                    self.on_exit(self)
                return
            if event.callbacks is not None:
                event.callbacks.append(self._resume)
                break
        self._target = event
        env._active_proc = None


class _Started:
    """What a task started at once is resumed with: a triggered event's value None."""

    _ok = True
    _value = None


_STARTED = _Started()
_new = object.__new__


def start_task(
    env: simpy.Environment,
    generator: Generator[Any, Any, Any],
    on_exit: Callable[[Task], None] | None = None,
    proc: Proc | None = None,
) -> Task:
    """Start ``generator`` as a :class:`Task` now, from an event's callback.

    ``Task(env, generator)`` schedules an ``Initialize`` event (urgent, at the
    current time) whose callback runs the generator's first step. Called from
    the callback of an event being processed, that event would be the next one
    processed (no urgent event is pending then: they all go before a normal
    one), so running the first step at once is the same order, one event
    fewer. Do not call it from inside a process.
    """
    task = _new(Task)
    task.env = env
    task.callbacks = []
    task._generator = generator
    if on_exit is not None:
        task.on_exit = on_exit
        task.proc = proc
    task._resume(_STARTED)  # type: ignore[arg-type]
    return task


class Timer(tuple[Any, ...]):
    """``(fn, args)``: a timeout whose only callback is ``fn(*args)``.

    What ``env.timeout(delay).callbacks.append(lambda _: fn(*args))`` does,
    for the engine's callback steps, without a SimPy event, a callback list or
    a closure per timeout (built by ``tuple.__new__``, no Python call).
    :func:`run_before` calls it directly; to ``Environment.step`` it still
    looks like a triggered SimPy event.
    """

    __slots__ = ()
    _ok = True
    _value = None

    @property
    def callbacks(self) -> list[Callable[[Any], None]]:
        """For ``Environment.step``: one callback, the call."""
        fn, args = self
        return [lambda _: fn(*args)]

    @callbacks.setter
    def callbacks(self, _value: Any) -> None:
        pass


_timer = tuple.__new__


def call_after(env: simpy.Environment, delay: float, fn: Callable[..., None], *args: Any) -> None:
    """Call ``fn(*args)`` ``delay`` from now, as a timeout created now would
    (the same place among the events of that time)."""
    if delay < 0:
        raise ValueError(f"Negative delay {delay}")
    queue: list[Any] = env._queue  # SimPy types its entries as holding an Event
    heappush(queue, (env._now + delay, NORMAL, next(env._eid), _timer(Timer, (fn, args))))


def scheduler(env: simpy.Environment) -> Callable[..., None]:
    """:func:`call_after` bound to ``env``, for a caller whose delays are
    never negative (checked where they are configured) and whose run is
    :func:`run_before`'s: the same place in the heap, without the check, the
    binding of ``env`` per call, or the :class:`Timer` (its timer is the plain
    tuple ``(fn, args)``, which ``Environment.step`` cannot run)."""
    queue: list[Any] = env._queue
    eid = env._eid

    def after(delay: float, fn: Callable[..., None], *args: Any) -> None:
        heappush(queue, (env._now + delay, NORMAL, next(eid), (fn, args)))

    return after


class _Until:
    """:func:`run_before`'s mark in the heap."""


#: Before every event of its time: SimPy's priorities are URGENT (0) and NORMAL (1).
_MARK_PRIORITY = -1


def run_before(env: simpy.Environment, until: float) -> bool:
    """Process every event scheduled before ``until``; whether any event is left.

    ``Environment.step`` in a loop, inlined (the run's hottest loop), which
    calls a timer (of :func:`scheduler` or a :class:`Timer`) at once. Rather
    than compare every event's time with ``until``, it puts a mark in the heap
    at ``until``, before the events of that time, and stops when it comes out.
    A :class:`simpy.core.StopSimulation` raised by a callback is not handled:
    the simulator raises none."""
    queue: list[Any] = env._queue
    mark = (until, _MARK_PRIORITY, 0, _Until)
    heappush(queue, mark)
    try:
        while True:
            now, _, _, event = heappop(queue)
            if event.__class__ is tuple:  # a scheduler() timer
                env._now = now
                fn, args = event
                fn(*args)
                continue
            if event is _Until:
                return bool(queue)
            env._now = now
            if event.__class__ is Timer:
                fn, args = event
                fn(*args)
                continue
            callbacks, event.callbacks = event.callbacks, None
            for callback in callbacks:
                callback(event)
            if not event._ok and not hasattr(event, "_defused"):
                exc = type(event._value)(*event._value.args)
                exc.__cause__ = event._value
                raise exc
    except BaseException:
        # Out of the run with an exception: the mark leaves the heap too.
        for k, entry in enumerate(queue):
            if entry is mark:
                queue[k] = queue[-1]
                queue.pop()
                heapify(queue)
                break
        raise
