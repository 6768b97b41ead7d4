"""A SimPy resource backed by a depth-pool allocator: deadlock-free nested resources.

Swap one line of a SimPy model::

    server = simpy.Resource(env, capacity=3)
    server = DepthResource(env, DepthPoolAllocator([(1, 1)] * 3))

and nested requests (a process that holds one resource and asks for another,
directly or through a sub-process it waits for) stop deadlocking: each nesting
level is served from pools reserved for it (patent [0019]-[0022], [0038]).

Two ways to name a request:

* explicit, as in the allocator: ``res.request(pid, depth=1, remote=False)``;
* implicit, SimPy style: ``res.request()``. The pid is the task tree of the
  calling process, and the level is one deeper than the deepest TCB that
  process (or the chain of processes waiting on it) holds, on any
  ``DepthResource`` of the same environment. A sub-process joins its parent's
  tree when the parent is already waiting on it (``yield env.process(...)`` or a
  condition of it) by the time the sub-process makes its first request; one
  started earlier and waited on later starts a tree of its own, so pass the pid
  and depth explicitly there. Do not mix implicit and explicit pids in one
  environment: implicit pids are numbered from 0.

Both forms are SimPy events whose value is the TCB id, usable as::

    with res.request() as req:
        tcb = yield req

Grants are pushed, never polled: each ``release``/``cancel`` takes the
allocator's grants and triggers the waiting events in grant order. The adapter
owns the allocator's grant stream, so do not call ``acquire``/``release`` on the
wrapped allocator directly while the resource is in use.
"""

from __future__ import annotations

import bisect
import itertools
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple, cast

import simpy
from simpy.events import PENDING as _SIMPY_PENDING
from simpy.events import Condition, Event, Process

from pyresv.adapters import Allocator, WaitBook

__all__ = ["DepthResource", "DepthRequest", "Monitor", "Sample", "WaitFor", "find_deadlock"]

_names = itertools.count()


# --------------------------------------------------------------- task trees
class _Tree:
    """A tree of processes that share one pid (implicit requests)."""

    __slots__ = ("pid", "live", "busy")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.live = 0  # registered processes not yet finished
        self.busy = 0  # implicit requests pending or holding their TCB, on every resource


class _Task:
    """One process's place in its tree: its base level and the levels it holds."""

    __slots__ = ("tree", "base", "levels")

    def __init__(self, tree: _Tree, base: int) -> None:
        self.tree = tree
        self.base = base  # level of the chain of processes waiting on this one
        self.levels: list[int] = []  # levels of the TCBs this process holds, ascending

    def top(self) -> int:
        """The deepest level this process is at: where a nested request goes below."""
        return self.levels[-1] if self.levels else self.base

    def hold(self, level: int) -> None:
        """The process now holds a TCB at ``level`` (``levels`` stays ascending)."""
        levels = self.levels
        if levels and level < levels[-1]:
            bisect.insort(levels, level)
        else:
            levels.append(level)


class _Family:
    """Implicit-request state shared by every DepthResource of one environment."""

    def __init__(self) -> None:
        self.tasks: dict[Process, _Task] = {}
        self._free: list[int] = []
        self._next = 0

    def register(self, proc: Process) -> _Task:
        """Give ``proc`` its task: in the tree of the process waiting on it, or a new tree."""
        parent = self._waiting_parent(proc)
        if parent is None:
            task = _Task(_Tree(self.new_pid()), 0)
        else:
            task = _Task(parent.tree, parent.top())
        tree = task.tree
        if tree.pid < 0:  # a finished tree revived by a late process
            tree.pid = self.new_pid()
        tree.live += 1  # so the tree keeps its pid while this process is registered
        self.tasks[proc] = task
        proc.callbacks.append(self._on_exit)  # runs when the process ends
        return task

    def new_pid(self) -> int:
        """A free pid: the last one recycled, else a fresh one."""
        if self._free:
            return self._free.pop()
        pid = self._next
        self._next += 1
        return pid

    def _waiting_parent(self, proc: Process) -> _Task | None:
        """The task of the nearest registered process waiting on ``proc``, if any.

        A process waiting on an event is in its callbacks as the bound method
        ``Process._resume``; a condition (``AllOf``/``AnyOf``) is in them as its
        ``_check``, and its waiter in the condition's callbacks.
        """
        seen: set[int] = set()
        frontier: list[Event] = [proc]
        while frontier:
            nxt: list[Event] = []
            for ev in frontier:
                for cb in ev.callbacks or ():
                    owner = getattr(cb, "__self__", None)
                    if owner is None or id(owner) in seen:
                        continue
                    seen.add(id(owner))
                    if isinstance(owner, Process):
                        task = self.tasks.get(owner)
                        if task is not None:
                            return task
                        nxt.append(owner)
                    elif isinstance(owner, Event):
                        nxt.append(owner)
            frontier = nxt
        return None

    def _on_exit(self, proc: Event) -> None:
        task = self.tasks.pop(proc, None)  # type: ignore[call-overload]
        if task is not None:
            task.tree.live -= 1
            self.maybe_recycle(task.tree)

    def maybe_recycle(self, tree: _Tree) -> None:
        """Free the tree's pid once no process of it lives and it holds and waits for nothing.

        A tree whose processes ended while holding a TCB keeps its pid, so the
        leaked TCB is never taken for a new tree's.
        """
        if tree.live == 0 and tree.busy == 0 and tree.pid >= 0:
            self._free.append(tree.pid)
            tree.pid = -1


_families: weakref.WeakKeyDictionary[simpy.Environment, _Family] = weakref.WeakKeyDictionary()


def _family_of(env: simpy.Environment) -> _Family:
    fam = _families.get(env)
    if fam is None:
        fam = _families[env] = _Family()
    return fam


# ----------------------------------------------------------------- monitor
class Sample(NamedTuple):
    """One state of a :class:`DepthResource`; index both tuples by level."""

    time: float
    held: tuple[int, ...]  # held[0]: unreserved TCBs held; held[e]: TCBs of level-e pools held
    queued: tuple[int, ...]  # queued[e]: requests pending at level e; queued[0] is always 0


class Monitor:
    """Per-level held TCBs and queue lengths of one resource over simulation time.

    A sample is recorded at every state change (request served or queued, grant,
    release, cancel), so the series are exact step functions of time.
    :attr:`times`, :attr:`held` and :attr:`queued` give them as numpy arrays,
    :meth:`plot` draws them.
    """

    def __init__(self, levels: int) -> None:
        self.levels = levels
        self.samples: list[Sample] = []
        self._held = [0] * (levels + 1)
        self._queued = [0] * (levels + 1)

    def _record(self, now: float) -> None:
        self.samples.append(Sample(now, tuple(self._held), tuple(self._queued)))

    @property
    def times(self) -> Any:
        """Sample times, a float array of shape ``(n,)``."""
        import numpy as np

        return np.array([s.time for s in self.samples], dtype=float)

    @property
    def held(self) -> Any:
        """Held TCBs, an int array of shape ``(n, levels + 1)``; column 0 is unreserved."""
        import numpy as np

        return np.array([s.held for s in self.samples], dtype=np.int64).reshape(-1, self.levels + 1)

    @property
    def queued(self) -> Any:
        """Pending requests, an int array of shape ``(n, levels + 1)``; column e is level e."""
        import numpy as np

        return np.array([s.queued for s in self.samples], dtype=np.int64).reshape(-1, self.levels + 1)

    def plot(self, ax: Any = None) -> Any:
        """Step plots of held TCBs and queue length per level; returns the axes."""
        if ax is None:
            import matplotlib.pyplot as plt

            _fig, ax = plt.subplots()
        t, held, queued = self.times, self.held, self.queued
        ax.step(t, held[:, 0], where="post", label="held, unreserved")
        for e in range(1, self.levels + 1):
            ax.step(t, held[:, e], where="post", label=f"held, level {e}")
            ax.step(t, queued[:, e], where="post", linestyle="--", label=f"queued, level {e}")
        ax.set_xlabel("simulation time")
        ax.set_ylabel("TCBs / requests")
        ax.legend()
        return ax


# ----------------------------------------------------------------- request
class DepthRequest(Event):
    """A request for one TCB of a :class:`DepthResource`; its value is the TCB id.

    Made by :meth:`DepthResource.request`. As a context manager, leaving the
    block releases the TCB if it was served, or cancels the request if it is
    still waiting (an ``Interrupt`` while waiting cancels it).
    """

    # Slots: on this interpreter a slot store costs a fraction of a __dict__
    # store, and a request is built and triggered on every use of the resource.
    # Event's own attributes are slots here too (``_ok``/``_defused`` are left
    # unset until used, as SimPy expects).
    __slots__ = ("env", "callbacks", "_value", "_ok", "_defused", "resource", "proc", "pid", "level", "_task", "_seq")

    def __init__(
        self,
        resource: DepthResource,
        pid: int | None = None,
        depth: int | None = None,
        remote: bool = False,
    ) -> None:
        # Event.__init__ inlined, as SimPy does for its own hot events.
        env = resource._env
        self.env = env
        self.callbacks = []
        self.resource = resource
        #: The process that made the request (None outside any process).
        self.proc = proc = env._active_proc
        task = None
        if pid is None:
            # Implicit: the pid of the calling process's tree, one level below it.
            # No "proc is not None" test: None is never a key, so a request made
            # outside any process gets None here and _register rejects it.
            task = resource._tasks.get(proc)  # type: ignore[arg-type]
            if task is None:
                task = _register(resource, proc)
            tree = task.tree
            pid = tree.pid  # >= 0: a tree with a registered process keeps its pid
            if depth is None:
                held = task.levels  # ascending, so the last is the deepest
                depth = (held[-1] if held else task.base) + 1
                remote = False
                if depth > resource._levels:
                    raise ValueError(
                        f"pid {pid}: a request nested at level {depth} on {resource.name}, "
                        f"which has only {resource._levels} levels"
                    )
        elif depth is None:
            depth = 1
        self.pid: int = pid
        #: The level the request is served at (depth + 1 when remote).
        self.level: int = (level := depth + 1 if remote else depth)
        tcb = resource._alloc.acquire(pid, depth, remote)  # raises before any state change
        self._task = task
        if task is not None:
            tree.busy += 1
        if tcb >= 0:
            self._ok = True
            self._value = tcb
            env.schedule(self)
            resource._held[tcb] = self
            if task is not None:  # _Task.hold, inlined
                levels = task.levels
                if levels and level < levels[-1]:
                    bisect.insort(levels, level)
                else:
                    levels.append(level)
            if resource.monitor is not None:
                resource._monitor_served(tcb)
        else:
            self._value = _SIMPY_PENDING
            self._seq = next(resource._arrivals)  # arrival order among queued requests
            book = resource._book  # WaitBook.add, inlined
            entries = book.by_pid.get(pid)
            if entries is None:
                book.by_pid[pid] = [(level, self)]
            else:
                entries.append((level, self))
            book.count += 1
            if resource.monitor is not None:
                resource._monitor_queued(level, 1)

    def _desc(self) -> str:
        return f"DepthRequest(pid={self.pid}, level={self.level})"

    @property
    def tcb(self) -> int | None:
        """The TCB id once served, else ``None``."""
        value = self._value
        return None if value is _SIMPY_PENDING else value

    def __enter__(self) -> DepthRequest:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        value = self._value
        if value is _SIMPY_PENDING:
            self.resource._cancel(self)
        elif exc_type is not GeneratorExit:  # like SimPy: no release on generator cleanup
            res = self.resource
            held = res._held
            if held.get(value) is self:  # not released inside the block already
                if res.monitor is not None:
                    res.release(value)
                    return
                # DepthResource.release, inlined: this runs once per use of the resource.
                alloc = res._alloc
                alloc.release(value)
                del held[value]
                task = self._task
                if task is not None:  # _task_released, inlined
                    task.levels.remove(self.level)
                    tree = task.tree
                    tree.busy -= 1
                    if tree.live == 0:
                        res._family.maybe_recycle(tree)
                book = res._book
                if book.count:  # _trigger_grants, inlined
                    waiting = book.by_pid
                    schedule = res._env.schedule
                    for pid, tcb in alloc.take_grants():
                        entries = waiting[pid]
                        if len(entries) == 1:
                            del waiting[pid]
                            book.count -= 1
                            req = entries[0][1]
                        else:
                            req = book.pop(pid, tcb)[1]
                        req._ok = True
                        req._value = tcb
                        schedule(req)
                        held[tcb] = req
                        task = req._task
                        if task is not None:  # _Task.hold, inlined
                            levels = task.levels
                            if levels and req.level < levels[-1]:
                                bisect.insort(levels, req.level)
                            else:
                                levels.append(req.level)

    def cancel(self) -> None:
        """Withdraw the request if it is still waiting; no effect once served."""
        if self._value is _SIMPY_PENDING:
            self.resource._cancel(self)


_new_event = object.__new__
_start_request = DepthRequest.__init__


def _register(resource: DepthResource, proc: Process | None) -> _Task:
    if proc is None:
        raise ValueError("request() without a pid must be made from inside a SimPy process")
    return resource._family.register(proc)


# ---------------------------------------------------------------- resource
class DepthResource:
    """A SimPy resource whose units are the TCBs of a depth-pool allocator.

    Parameters
    ----------
    env:
        The SimPy environment.
    allocator:
        A ``pyresv.DepthPoolAllocator`` or ``pyresv.reference.DepthPoolAllocator``
        (anything with that contract). ``res.allocator`` is it.
    name:
        Used in messages and in :func:`find_deadlock` reports.
    monitor:
        Record a :class:`Monitor` sample at every state change (``res.monitor``).
    """

    def __init__(
        self,
        env: simpy.Environment,
        allocator: Allocator,
        *,
        name: str | None = None,
        monitor: bool = False,
    ) -> None:
        self._env = env
        self._alloc = allocator
        self._levels = allocator.levels
        self._book = WaitBook(allocator)
        self._held: dict[int, DepthRequest] = {}  # tcb -> the request it serves
        self._arrivals = itertools.count()  # numbers queued requests, for `queue`
        self._family = _family_of(env)
        self._tasks = self._family.tasks
        self.name = name if name is not None else f"DepthResource#{next(_names)}"
        self.monitor: Monitor | None = Monitor(self._levels) if monitor else None
        if self.monitor is not None:
            self.monitor._record(env.now)

    # SimPy-like surface --------------------------------------------------
    @property
    def env(self) -> simpy.Environment:
        """The environment the resource lives in."""
        return self._env

    @property
    def allocator(self) -> Allocator:
        """The wrapped allocator."""
        return self._alloc

    @property
    def capacity(self) -> int:
        """Number of TCBs (``allocator.total``)."""
        return self._alloc.total

    @property
    def count(self) -> int:
        """Number of TCBs held through this resource."""
        return len(self._held)

    @property
    def users(self) -> list[DepthRequest]:
        """The served requests still holding their TCB."""
        return list(self._held.values())

    @property
    def queue(self) -> list[DepthRequest]:
        """The pending requests, oldest first."""
        return sorted((w for _p, _l, w in self._book.entries()), key=lambda r: r._seq)

    def __repr__(self) -> str:
        return f"<DepthResource {self.name}: {self.count} held, {len(self._book)} queued>"

    # requests ------------------------------------------------------------
    def request(self, pid: int | None = None, depth: int | None = None, remote: bool = False) -> DepthRequest:
        """Ask for one TCB; a SimPy event whose value is the TCB id.

        ``request(pid, depth=1, remote=False)`` asks at level ``depth + 1`` if
        ``remote`` (FIG 5A) else ``depth`` (FIG 5B). ``request()`` names the
        calling process's task tree and nesting level (module docstring). A
        request served at once is triggered at once; a queued one is triggered
        when a release or cancel makes the allocator grant it.

        Raises ``ValueError`` for a bad pid or depth (or nesting deeper than the
        allocator's levels) and ``pyresv.QueueFull`` when the wait queue is full;
        nothing changes then.
        """
        # DepthRequest(self, ...) without the type call: one interpreter frame less.
        req = _new_event(DepthRequest)
        _start_request(req, self, pid, depth, remote)
        return req

    def release(self, tcb: int | DepthRequest) -> None:
        """Return a held TCB; waiting requests it serves are triggered in grant order.

        Like ``simpy.Resource.release(request)``, the request itself is accepted
        too: a served one gives its TCB back, a waiting one is cancelled.
        Raises ``pyresv.AllocatorError`` if the TCB is not held; nothing changes then.
        """
        if isinstance(tcb, DepthRequest):
            if tcb.resource is not self:
                raise ValueError(f"{tcb!r} is a request of {tcb.resource.name}, not of {self.name}")
            if tcb._value is _SIMPY_PENDING:
                tcb.cancel()
                return
            tcb = cast(int, tcb._value)  # a served request's value is its TCB
        alloc = self._alloc
        alloc.release(tcb)
        req = self._held.pop(tcb, None)
        if req is not None and req._task is not None:
            _task_released(self, req._task, req.level)
        if self.monitor is not None:
            self._monitor_released(tcb)
        if self._book.count:
            _trigger_grants(self, alloc.take_grants())

    # bookkeeping ---------------------------------------------------------
    def _cancel(self, req: DepthRequest) -> None:
        served = self._book.withdraw(req.pid, req)
        if req._task is not None:
            _tree_idle(self._family, req._task.tree)
        if self.monitor is not None:
            self._monitor_queued(req.level, -1)
        for other, tcb in served:  # never expected: see WaitBook.withdraw
            other._ok = True
            other._value = tcb
            self._env.schedule(other)
            self._held[tcb] = other
            if other._task is not None:
                other._task.hold(other.level)
            if self.monitor is not None:
                self._monitor_queued(other.level, -1, record=False)
                self._monitor_served(tcb)
        if self._book.count:
            _trigger_grants(self, self._alloc.take_grants())

    def _monitor_served(self, tcb: int) -> None:
        mon = self.monitor
        mon._held[self._alloc.level_of(tcb)] += 1  # type: ignore[union-attr]
        mon._record(self._env._now)  # type: ignore[union-attr]

    def _monitor_released(self, tcb: int) -> None:
        mon = self.monitor
        mon._held[self._alloc.level_of(tcb)] -= 1  # type: ignore[union-attr]
        mon._record(self._env._now)  # type: ignore[union-attr]

    def _monitor_queued(self, level: int, delta: int, record: bool = True) -> None:
        mon = self.monitor
        mon._queued[level] += delta  # type: ignore[union-attr]
        if record:
            mon._record(self._env._now)  # type: ignore[union-attr]


def _trigger_grants(res: DepthResource, grants: list[tuple[int, int]]) -> None:
    """Trigger the requests the allocator granted, in grant order: pushed, never polled."""
    book = res._book
    held = res._held
    waiting = book.by_pid
    schedule = res._env.schedule
    for pid, tcb in grants:
        entries = waiting[pid]
        if len(entries) == 1:  # WaitBook.pop, inlined for a pid's sole request
            del waiting[pid]
            book.count -= 1
            req = entries[0][1]
        else:
            req = book.pop(pid, tcb)[1]
        req._ok = True
        req._value = tcb
        schedule(req)
        held[tcb] = req
        if req._task is not None:
            req._task.hold(req.level)
        if res.monitor is not None:
            res._monitor_queued(req.level, -1, record=False)
            res._monitor_served(tcb)


def _task_released(res: DepthResource, task: _Task, level: int) -> None:
    """An implicit request's TCB went back: the task is no longer at ``level``."""
    task.levels.remove(level)
    tree = task.tree
    tree.busy -= 1
    if tree.live == 0:
        res._family.maybe_recycle(tree)


def _tree_idle(family: _Family, tree: _Tree) -> None:
    """One implicit request of ``tree`` is over (released or cancelled)."""
    tree.busy -= 1
    if tree.live == 0:
        family.maybe_recycle(tree)


# ----------------------------------------------------------- deadlock report
@dataclass(frozen=True)
class WaitFor:
    """One step of a wait-for cycle: ``process`` holds ``holds`` and waits for ``blocked_by``.

    ``name`` is the process's generator function name with ``#k``, a number
    unique within one report.
    """

    process: Process = field(repr=False)
    name: str
    pid: int | None  # the pid of its pending request or held TCBs (None for simpy.Resource)
    holds: tuple[str, ...]  # e.g. "A tcb 0 (level 1)"
    waits_for: str  # what it waits on, e.g. "B level 2" or "process call_b"
    blocked_by: str  # name of the next process in the cycle

    def __str__(self) -> str:
        held = ", ".join(self.holds) if self.holds else "nothing"
        pid = "" if self.pid is None else f" (pid {self.pid})"
        text = f"{self.name}{pid} holds {held}; waits for {self.waits_for}"
        if not self.waits_for.startswith(("process ", "AllOf ", "AnyOf ")):
            text += f", held by {self.blocked_by}"
        return text


def _res_name(res: Any) -> str:
    name = getattr(res, "name", None)
    return name if isinstance(name, str) else f"{type(res).__name__}@{id(res):#x}"


def find_deadlock(env: simpy.Environment, resources: Iterable[Any]) -> list[WaitFor]:
    """The wait-for cycle among processes stuck on ``resources``, or ``[]``.

    Call it after ``env.run()`` returned with requests still pending (SimPy
    itself stops silently). ``resources`` may mix :class:`DepthResource` and
    ``simpy.Resource`` (or its subclasses). A process waits for the processes
    holding a unit its pending request could be served with, or for the
    process (or the processes of a condition) it yielded; a cycle of such waits
    among live processes can never resolve. The cycle starts at the process of
    the oldest pending request on it. Processes are named by their generator
    function.
    """
    del env  # the state lives in the resources and processes
    resources = list(resources)
    holds: dict[Process, list[str]] = {}
    pid_of: dict[Process, int] = {}
    # (process, waits_for description, [holder processes]) per pending request
    request_waits: dict[Event, tuple[str, list[Process]]] = {}
    order: list[Process] = []

    for res in resources:
        if isinstance(res, DepthResource):
            _depth_resource_waits(res, holds, pid_of, request_waits, order)
        elif isinstance(res, simpy.resources.resource.Resource):
            _simpy_resource_waits(res, holds, request_waits, order)
        else:
            raise TypeError(f"find_deadlock: {res!r} is neither a DepthResource nor a simpy.Resource")

    labels: dict[Process, str] = {}

    def label(proc: Process) -> str:
        name = labels.get(proc)
        if name is None:
            name = labels[proc] = f"{proc.name}#{len(labels)}"
        return name

    for proc in order:
        label(proc)
    for proc in holds:
        label(proc)

    def waits(proc: Process) -> tuple[str, list[Process]]:
        if not proc.is_alive:
            return "", []
        target = proc.target
        if target in request_waits:
            return request_waits[target]
        if isinstance(target, Process):
            return f"process {label(target)}", [target]
        if isinstance(target, Condition):
            procs = [e for e in target._events if isinstance(e, Process) and not e.triggered]
            return f"{type(target).__name__} of {', '.join(label(p) for p in procs)}", procs
        return "", []

    # Depth-first search for a cycle, from the first pending request on.
    state: dict[Process, int] = {}  # 1: on the path, 2: explored
    for start in order:
        if state.get(start):
            continue
        stack: list[tuple[Process, Iterator[Process]]] = [(start, iter(waits(start)[1]))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            s = state.get(nxt, 0)
            if s == 1:
                return _report(path[path.index(nxt):], waits, label, holds, pid_of, order)
            if s == 0:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(waits(nxt)[1])))
    return []


def _report(
    cycle: list[Process], waits: Any, label: Any, holds: dict, pid_of: dict, order: list[Process]
) -> list[WaitFor]:
    rank = {p: i for i, p in enumerate(order)}
    first = min(range(len(cycle)), key=lambda i: rank.get(cycle[i], len(order)))
    cycle = cycle[first:] + cycle[:first]
    out = []
    for i, proc in enumerate(cycle):
        nxt = cycle[(i + 1) % len(cycle)]
        out.append(
            WaitFor(
                process=proc,
                name=label(proc),
                pid=pid_of.get(proc),
                holds=tuple(holds.get(proc, ())),
                waits_for=waits(proc)[0],
                blocked_by=label(nxt),
            )
        )
    return out


def _depth_resource_waits(
    res: DepthResource,
    holds: dict[Process, list[str]],
    pid_of: dict[Process, int],
    request_waits: dict[Event, tuple[str, list[Process]]],
    order: list[Process],
) -> None:
    alloc = res.allocator
    level_of = [alloc.level_of(t) for t in range(alloc.total)]
    holder = [alloc.holder(t) for t in range(alloc.total)]
    proc_of: dict[int, Process | None] = {}
    for tcb, req in res._held.items():
        proc_of[tcb] = req.proc
        if req.proc is not None:
            holds.setdefault(req.proc, []).append(f"{res.name} tcb {tcb} (level {level_of[tcb]})")
            pid_of.setdefault(req.proc, req.pid)
    for req in res.queue:
        if req.proc is None:
            continue
        owns_pool = any(holder[t] == req.pid and level_of[t] == req.level for t in range(alloc.total))
        usable = [
            t
            for t in range(alloc.total)
            if holder[t] >= 0
            and (level_of[t] == 0 or (level_of[t] == req.level and (holder[t] == req.pid or not owns_pool)))
        ]
        procs: list[Process] = []
        for t in usable:
            p = proc_of.get(t)
            if p is not None and p not in procs:
                procs.append(p)
        request_waits[req] = (f"{res.name} level {req.level}", procs)
        pid_of[req.proc] = req.pid
        if req.proc not in order:
            order.append(req.proc)


def _simpy_resource_waits(
    res: Any,
    holds: dict[Process, list[str]],
    request_waits: dict[Event, tuple[str, list[Process]]],
    order: list[Process],
) -> None:
    name = _res_name(res)
    users: list[Process] = []
    for i, req in enumerate(res.users):
        if req.proc is not None:
            holds.setdefault(req.proc, []).append(f"{name} unit {i}")
            if req.proc not in users:
                users.append(req.proc)
    for req in res.queue:
        if req.proc is None:
            continue
        request_waits[req] = (name, list(users))
        if req.proc not in order:
            order.append(req.proc)
