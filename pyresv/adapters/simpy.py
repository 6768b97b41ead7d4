"""SimPy's resources over a depth-pool allocator: the same models, and nesting without deadlock.

Swap one line of a SimPy model::

    server = simpy.Resource(env, capacity=6)
    server = DepthResource(env, capacity=6, levels=3)

With the default ``levels=1`` a :class:`DepthResource` is ``simpy.Resource``
to the letter: the same trace, users, queue, event values and timing.
With ``levels=D`` requests nested up to D deep (a process that holds a unit
and waits for a request on the same or another depth resource, directly or
through a sub-process it waits for) cannot deadlock: each deeper level has a
unit held back for it (patent [0019]-[0022], [0038]). The price: top-level
requests get at most ``N - D + 1`` of the N units at once (see
:class:`DepthResource`). :class:`DepthPriorityResource` and
:class:`DepthPreemptiveResource` do the same for ``simpy.PriorityResource``
and ``simpy.PreemptiveResource``.

A request names its pid (task tree) and level implicitly: the calling
process's tree, one level below what that process (or the chain of processes
waiting on it) already holds on any depth resource of the environment (see
:mod:`pyresv.adapters._simpy_tasks`). ``request(pid=..., depth=..., remote=...)``
names them explicitly, as the allocator does. ``DepthResource(env, allocator)``
runs over an allocator of your own (any pools, wake policy, levels).

How SimPy's timing is kept: a release frees the unit at once, but a waiting
request is granted at a *trigger point* only, as in SimPy's
``BaseResource._trigger_put``: when a new request is made, or when a
``Release`` event is processed. The allocator decides who gets the unit
(its wake order); the adapter keeps a plain map from the allocator's request
tickets to the waiting events and triggers them at those points. A new
request joins the queue behind the requests already granted a freed unit
but not yet served, as SimPy appends it to ``put_queue``: it never overtakes
them, even when the allocator has another unit free for it.

When the core is built, the drop-in form (one level, no monitor, over the
compiled allocator) runs its ``request()``, its requests' ``__exit__`` and
its trigger event in ``pyresv._core._simpy_fast``, step for step as the
pure-Python path here, which stays the reference (and serves every other form).

This module uses SimPy's internals (``Environment._active_proc``, ``_now``,
``_queue``, ``_eid``, ``Event._value``/``_ok``); :data:`TESTED_SIMPY` lists the versions they were
checked against, and a test fails when another is installed.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple, Protocol, Sequence, cast, overload

import simpy
from heapq import heappush

from simpy.events import NORMAL as _NORMAL
from simpy.events import PENDING as _PENDING
from simpy.events import Condition, Event, Process
from simpy.resources.resource import Preempted, SortedQueue

from pyresv._factory import Allocator, allocator_class
from pyresv.adapters._simpy_tasks import Family, Task, family_of
from pyresv.errors import AllocatorError

if TYPE_CHECKING:
    from pyresv._core._simpy_fast import FlatCore

try:  # the compiled fast path of the drop-in form (pyresv._core._simpy_fast)
    from pyresv._core import _simpy_fast
    from pyresv._core.allocator import DepthPoolAllocator as _CompiledAllocator
except ImportError:  # the core is not built: the pure-Python path alone
    _simpy_fast = None  # type: ignore[assignment]
    _CompiledAllocator = None  # type: ignore[assignment,misc]

__all__ = [
    "DepthPreemptiveResource",
    "DepthPriorityRequest",
    "DepthPriorityResource",
    "DepthRelease",
    "DepthRequest",
    "DepthResource",
    "LiveList",
    "Monitor",
    "Preempted",
    "Sample",
    "TESTED_SIMPY",
    "TicketAllocator",
    "WaitFor",
    "find_deadlock",
]

#: SimPy versions whose internals this module was checked against.
TESTED_SIMPY = ("4.1.2",)

_names = itertools.count()
_new = object.__new__
_schedule = simpy.Environment.schedule


class _Count:
    """The number of a resource's release/trigger events scheduled and not yet processed."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class TicketAllocator(Allocator, Protocol):
    """The allocator contract the SimPy resources rely on: :class:`pyresv._factory.Allocator`
    (tickets included: ``last_ticket``, ``cancel_request``, ``take_grants(tickets=True)``)
    and the pid bound, to check a priority request's pid before it waits."""

    @property
    def max_processes(self) -> int: ...


# ----------------------------------------------------------------- monitor
class Sample(NamedTuple):
    """One state of a :class:`DepthResource`; index both tuples by level."""

    time: float
    held: tuple[int, ...]  # held[0]: unreserved TCBs held; held[e]: TCBs of level-e pools held
    queued: tuple[int, ...]  # queued[e]: requests pending at level e; queued[0] is always 0


class Monitor:
    """Per-level held TCBs and queue lengths of one resource over simulation time.

    A sample is recorded at every state change of the allocator (request
    served or queued, grant, release, cancel, preemption), so the series are exact step functions of time.
    :attr:`times`, :attr:`held` and :attr:`queued` give them as numpy arrays,
    :meth:`plot` draws them.
    """

    def __init__(self, levels: int) -> None:
        self.levels = levels
        self.samples: list[Sample] = []

    def _record(self, now: float, held: tuple[int, ...], queued: tuple[int, ...]) -> None:
        self.samples.append(Sample(now, held, queued))

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


# ----------------------------------------------------------------- views
class LiveList(Sequence[Any]):
    """A read-only, live view of one of a resource's lists (``users``, ``queue``).

    SimPy's ``users`` and ``queue`` are the resource's own lists, so a
    reference kept by a model sees every later change; this view does the
    same. It compares equal to a list with the same items.
    """

    __slots__ = ("_items", "_len")

    def __init__(self, items: Callable[[], list[Any]], length: Callable[[], int]) -> None:
        self._items = items
        self._len = length

    def __len__(self) -> int:
        return self._len()

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        return self._items()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items())

    def __contains__(self, item: object) -> bool:
        return item in self._items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LiveList):
            other = other._items()
        return self._items() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._items())


# ---------------------------------------------------------------- events
class DepthRequest(Event):
    """A request for one unit of a :class:`DepthResource`: SimPy's ``Request``.

    Triggered (value ``None``) once the unit is granted. As a context manager,
    leaving the ``with`` block cancels the request if it still waits and then
    releases it (``resource.release(request)``), exactly as SimPy's ``Request``
    does; an ``Interrupt`` while waiting leaves it waiting unless the block is
    left. :attr:`tcb` is the allocator's TCB id while the request is a user.
    """

    # Slots for what every request stores (every constructor sets them; the
    # compiled fast path writes them by offset); the optional attributes below
    # live in the instance dict (Event has one) with class defaults, so the
    # hot path stores only what it must.
    __slots__ = (
        "env", "callbacks", "_value", "_ok", "_defused", "resource", "proc", "usage_since", "_tcb", "_ticket",
        "_core",
    )  # fmt: skip

    #: The request's pid (task tree) and level; 0 and 1 on a resource of one level.
    pid: int = 0
    level: int = 1
    #: The simulation time at which the request was granted (SimPy's ``usage_since``).
    usage_since: float | None
    _tcb: int  # the TCB while granted (ready or user), else -1
    _ticket: int  # the allocator's ticket while pending there, else -1
    _core: Any  # the resource's compiled fast path, if it made this request (unset otherwise)
    _task: Task | None = None  # the task of an implicit request

    resource: DepthResource
    proc: Process | None

    def __init__(
        self, resource: DepthResource, pid: int | None = None, depth: int | None = None, remote: bool = False
    ) -> None:
        resource._start(self, pid, depth, remote)

    def _desc(self) -> str:
        return f"{type(self).__name__}(pid={self.pid}, level={self.level})"

    @property
    def tcb(self) -> int | None:
        """The TCB id while the request is one of the resource's users, else ``None``."""
        tcb = self._tcb
        return tcb if tcb >= 0 and self._value is not _PENDING else None

    def __enter__(self) -> DepthRequest:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # SimPy's Request.__exit__: cancel if still waiting, then release,
        # except on generator cleanup. The release is DepthResource.release
        # inlined (this runs once per use of the resource), with the resource's
        # own trigger event in place of a Release event nobody can see; unless
        # the resource's class overrides release() or its environment's
        # schedule() (res._inline_exit): then resource.release(self), as SimPy.
        res = self.resource
        if self._value is _PENDING:
            res._cancel(self)
        if exc_type is GeneratorExit:
            return
        if not res._inline_exit:
            res.release(self)
            return
        tcb = self._tcb
        if tcb >= 0:
            held = res._held
            if held.get(tcb) is self:
                del held[tcb]
                self._tcb = -1
                if res._fast:
                    res._release_tcb(tcb)
                    waiting = res._waiting
                    if waiting:  # _granted, inlined
                        ready = res._ready
                        for _pid, got, ticket in res._take(True):
                            req = waiting.pop(ticket)
                            req._ticket = -1
                            req._tcb = got
                            ready.append(req)
                elif res.monitor is None:  # _free, inlined
                    res._release_tcb(tcb)
                    task = self._task
                    if task is not None:
                        task.levels.remove(self.level)
                        tree = task.tree
                        tree.busy -= 1
                        if tree.live == 0:
                            res._family.maybe_recycle(tree)
                    if res._waiting:
                        res._granted()
                else:
                    res._free(tcb, self)
        res._rel.n += 1
        env = res._env
        heappush(env._queue, (env._now + 0, _NORMAL, next(env._eid), res._trigger_ev))

    if _simpy_fast is not None:
        # The pure-Python __exit__ above stays the reference: the compiled one
        # runs it for every request the compiled fast path did not make.
        _exit_py = __exit__
        __enter__ = _simpy_fast.request_enter  # noqa: F811
        __exit__ = _simpy_fast.request_exit  # noqa: F811

    def cancel(self) -> None:
        """Withdraw the request if it still waits; no effect once granted or withdrawn."""
        if self._value is _PENDING:
            self.resource._cancel(self)


class DepthPriorityRequest(DepthRequest):
    """A request with SimPy's ``priority`` (lower is more important) and ``preempt`` flag.

    ``key`` orders the queue as SimPy's ``PriorityRequest.key``:
    ``(priority, time, not preempt)``.
    """

    __slots__ = ("priority", "preempt", "time", "key")

    priority: int
    preempt: bool
    time: float
    key: tuple[Any, float, bool]

    def __init__(
        self,
        resource: DepthPriorityResource,
        priority: int = 0,
        preempt: bool = True,
        *,
        pid: int | None = None,
        depth: int | None = None,
        remote: bool = False,
    ) -> None:
        resource._start_priority(self, priority, preempt, pid, depth, remote)


def _trigger_event(env: simpy.Environment) -> Event:
    """A resource's trigger point for releases made by leaving a ``with`` block.

    It stands in for the Release event SimPy would schedule there (nobody can
    hold that event), at the same place in the event queue; one object per
    resource, scheduled once per release and re-armed when processed. It is
    a ``Timeout`` of delay 0 with its attributes set in ``Timeout.__init__``'s
    order, never scheduled as one: ``Environment.step`` reads its attributes
    as it reads every timeout's, where CPython specializes the access (an
    event class of its own there costs about 450 instructions per release).
    """
    trig = _new(simpy.events.Timeout)
    trig.env = env
    trig.callbacks = []
    trig._value = None
    trig._delay = 0
    trig._ok = True
    return cast(Event, trig)


# The compiled fast path: a FlatCore per drop-in resource (DepthResource.__init__).
_FlatCore = None
if _simpy_fast is not None:
    _simpy_fast.setup(DepthRequest, _PENDING, _NORMAL, DepthRequest._exit_py)
    _FlatCore = _simpy_fast.FlatCore


class DepthRelease(Event):
    """The release of a request: SimPy's ``Release``, triggered at once (value ``None``).

    When it is processed, a waiting request may be granted (a trigger point,
    as in SimPy).
    """

    __slots__ = ("env", "callbacks", "_value", "_ok", "_defused", "resource", "request", "proc")

    resource: DepthResource
    request: Any
    proc: Process | None

    def __enter__(self) -> DepthRelease:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        return None

    def cancel(self) -> None:
        """Nothing to cancel: a release is never queued."""


# -------------------------------------------------------------- resources
class DepthResource:
    """SimPy's ``Resource`` over a depth-pool allocator: nested requests up to ``levels`` deep never deadlock.

    ``DepthResource(env, capacity=N)`` is ``simpy.Resource(env, N)`` to the
    letter. ``DepthResource(env, capacity=N, levels=D)`` holds ``D - 1`` of
    the N units back, one for each level below the top (a pool of one unit
    per deeper level, the minimum of patent [0021]), and leaves the other
    ``N - D + 1`` unreserved; a freed unreserved unit goes to the deepest
    waiting request first. **Top-level requests therefore get at most
    N - D + 1 units at once**: while a top-level holder may still nest, those
    D - 1 units must stay out of its reach, and no scheme that lets requests
    nest D deep on N units without deadlock can give top-level requests more
    (a Banker's argument). A request nested deeper than D is served at level
    D, where the guarantee no longer holds (it may wait forever, as in SimPy).

    Parameters
    ----------
    env:
        The SimPy environment.
    capacity:
        The number of units N (``int``, > 0), or an allocator
        (``pyresv.DepthPoolAllocator``, ``pyresv.reference.DepthPoolAllocator``)
        for full control of pools, levels and wake policy; then ``levels``
        must be left out and ``capacity`` is ``allocator.total``.
    levels:
        The nesting depth D to make deadlock-free (1 <= D <= N; default 1).
    name:
        Used in messages and in :func:`find_deadlock` reports.
    monitor:
        Record a :class:`Monitor` sample at every state change (``res.monitor``).

    Raises
    ------
    ValueError
        ``'"capacity" must be > 0.'`` as SimPy; ``capacity < levels``, naming
        both; a non-int capacity or levels; ``levels`` given with an allocator.
    """

    def __init__(
        self,
        env: simpy.Environment,
        capacity: int | TicketAllocator = 1,
        levels: int | None = None,
        *,
        name: str | None = None,
        monitor: bool = False,
    ) -> None:
        alloc: TicketAllocator
        if hasattr(capacity, "acquire"):
            if levels is not None:
                raise ValueError("levels comes from the allocator: leave it out with DepthResource(env, allocator)")
            alloc = cast(TicketAllocator, capacity)
            self._capacity = alloc.total
            # Implicit requests out of the allocator's range raise: the caller chose its levels.
            self._clamp = False
        else:
            n, d = _check_capacity(capacity, 1 if levels is None else levels)
            # [0021]: one pool of one unit per level below the top; the rest unreserved.
            alloc = cast(
                TicketAllocator,
                allocator_class("auto")([(0, 1)] + [(1, 1)] * (d - 1), n - d + 1, wake="deepest"),
            )
            self._capacity = n
            self._clamp = True  # nesting deeper than D is served at level D, as SimPy would
        self._env = env
        self._alloc = alloc
        self._levels = alloc.levels
        self._acquire = alloc.acquire
        self._take = alloc.take_grants
        self._held: dict[int, DepthRequest] = {}  # tcb -> the user it serves, in grant order
        self._waiting: dict[int, DepthRequest] = {}  # ticket -> request pending in the allocator
        self._ready: deque[DepthRequest] = deque()  # granted, triggered at the next trigger point
        # Release events scheduled and not yet processed: _rel.n (the compiled
        # fast path keeps the count, when there is one).
        self._rel: _Count | FlatCore = _Count()
        # A single level of unreserved units only: every request is alike, so the
        # pid is 0 and no task tree is kept; one waiter is served per trigger point.
        st = alloc.stats()
        self._flat = self._levels == 1 and st["free"][0] + st["held"][0] == 0
        self._family: Family = family_of(env)
        self._tasks = self._family.tasks
        self._on_release = self._release_processed  # bound once: a callback of every Release
        self._release_tcb = alloc.release
        trig = self._trigger_ev = _trigger_event(env)
        self._trigger_cbs: list[Callable[[Any], None]] = [self._trigger_processed]
        trig.callbacks = self._trigger_cbs
        self.name = name if name is not None else f"{type(self).__name__}#{next(_names)}"
        held = self._held
        self._users_view = LiveList(lambda: list(held.values()), held.__len__)
        self._queue_view: Any = LiveList(self._queue_list, self._queue_len)
        self._no_releases = LiveList(list, int)
        self.monitor: Monitor | None = Monitor(self._levels) if monitor else None
        # The fast paths: one level of unreserved units, nothing to record.
        self._fast = self._flat and self.monitor is None
        # Events are pushed onto SimPy's event queue directly (Environment.schedule
        # inlined) only when the environment's class keeps SimPy's schedule(): an
        # environment overriding it (tracing, checking) sees every event of the
        # resource go through it, as with simpy.Resource.
        self._direct = (
            getattr(type(env), "schedule", None) is _schedule and type(getattr(env, "_queue", None)) is list
        )
        # Leaving a with block releases inline (no Release event, the trigger
        # event instead) only when nobody could see the difference: release()
        # not overridden (SimPy's Request.__exit__ calls resource.release) and
        # events pushed directly.
        self._inline_exit = self._direct and type(self).release is DepthResource.release
        if self.monitor is not None:
            self._note()
        elif (
            self._fast
            and self._inline_exit
            and _FlatCore is not None
            and type(alloc) is _CompiledAllocator
            and type(self).request is DepthResource.request
            and type(self)._trigger_processed is DepthResource._trigger_processed
        ):
            # Compiled: request() (an instance attribute, before the method), the
            # requests' __exit__ and the trigger event's processing.
            core = self._rel = _FlatCore(self, env, alloc, self._held, self._waiting, self._ready, trig)
            self._trigger_cbs = trig.callbacks = core.trigger_callbacks
            self.request = core.request  # type: ignore[method-assign]

    # SimPy's surface -----------------------------------------------------
    @property
    def env(self) -> simpy.Environment:
        """The environment the resource lives in."""
        return self._env

    @property
    def allocator(self) -> TicketAllocator:
        """The allocator underneath."""
        return self._alloc

    @property
    def capacity(self) -> int:
        """Number of units N."""
        return self._capacity

    @property
    def levels(self) -> int:
        """Nesting depth D that cannot deadlock."""
        return self._levels

    @property
    def count(self) -> int:
        """Number of users (granted requests not yet released)."""
        return len(self._held)

    @property
    def users(self) -> LiveList:
        """The granted requests not yet released, in grant order (live, like SimPy's list)."""
        return self._users_view

    @property
    def queue(self) -> Any:
        """The waiting requests, in the order they will be served (live, like SimPy's list)."""
        return self._queue_view

    @property
    def put_queue(self) -> Any:
        """The same object as :attr:`queue`, as in SimPy."""
        return self._queue_view

    @property
    def get_queue(self) -> LiveList:
        """Always empty: a release never waits (as in SimPy)."""
        return self._no_releases

    def _queue_list(self) -> list[DepthRequest]:
        return [*self._ready, *self._waiting.values()]

    def _queue_len(self) -> int:
        return len(self._ready) + len(self._waiting)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {self.count} users, {len(self.queue)} queued>"

    # requests ------------------------------------------------------------
    def request(self, pid: int | None = None, depth: int | None = None, remote: bool = False) -> DepthRequest:
        """Request a unit: SimPy's ``request()``, an event triggered once the unit is granted.

        Without arguments the pid and level are implicit (module docstring).
        ``request(pid, depth=1, remote=False)`` names them: level ``depth + 1``
        if ``remote`` (FIG 5A), else ``depth`` (FIG 5B). Raises ``ValueError``
        for a bad pid or depth and ``pyresv.QueueFull`` when the allocator's
        wait queue is full; nothing changes then.
        """
        req = _new(DepthRequest)
        if pid is None and depth is None and self._flat:
            # The drop-in form of simpy.Resource.request(), inlined: pid 0, level 1
            # (the class defaults).
            env = self._env
            req.env = env
            req.callbacks = []
            req.resource = self
            req.proc = env._active_proc
            req.usage_since = None
            req._tcb = req._ticket = -1
            tcb = self._acquire(0)
            ready = self._ready
            if tcb >= 0 and not ready:
                req._ok = True
                req._value = None
                req._tcb = tcb
                req.usage_since = now = env._now
                self._held[tcb] = req
                if self._direct:  # env.schedule(req), inlined
                    heappush(env._queue, (now + 0, _NORMAL, next(env._eid), req))
                else:
                    env.schedule(req)
            else:
                req._value = _PENDING
                if tcb >= 0:  # behind the granted waiters: see _queue_behind
                    req._tcb = tcb
                    ready.append(req)
                else:
                    req._ticket = ticket = self._alloc.last_ticket
                    self._waiting[ticket] = req
                if ready:  # a trigger point: the oldest granted waiter goes first (_serve_one)
                    first = ready.popleft()
                    first._ok = True
                    first._value = None
                    first.usage_since = now = env._now
                    self._held[first._tcb] = first
                    if self._direct:
                        heappush(env._queue, (now + 0, _NORMAL, next(env._eid), first))
                    else:
                        env.schedule(first)
                    if ready and not self._rel.n:
                        self._serve(False)
            if self.monitor is not None:
                self._note()
            return req
        if pid is None and depth is None and self.monitor is None:
            self._start_implicit(req)
        else:
            self._start(req, pid, depth, remote)
        return req

    def _start_implicit(self, req: DepthRequest) -> None:
        """``request()`` with task trees (``levels > 1``): :meth:`_start` and :meth:`_name`, inlined."""
        env = self._env
        req.env = env
        req.callbacks = []
        req.resource = self
        req.proc = proc = env._active_proc
        req.usage_since = None
        req._tcb = req._ticket = -1
        task = self._tasks.get(proc)  # type: ignore[arg-type]  # None is never a key
        if task is None:
            task = self._family.register(proc) if proc is not None else self._family.orphan()
        tree = task.tree
        held = task.levels  # ascending
        level = (held[-1] if held else task.base) + 1
        pid = tree.pid
        if level > self._levels:
            if not self._clamp:
                raise ValueError(
                    f"pid {pid}: a request nested at level {level} on {self.name}, "
                    f"which has only {self._levels} levels"
                )
            level = self._levels
        req.pid = pid
        req.level = level
        req._task = task
        try:
            tcb = self._acquire(pid, level)  # raises before any change
        except BaseException:
            self._family.maybe_recycle(tree)  # a request's own tree, if it was one
            raise
        tree.busy += 1
        if tcb >= 0:
            if held and level < held[-1]:
                task.hold(level)
            else:
                held.append(level)
            if self._ready:
                self._queue_behind(req, tcb)
                return
            req._ok = True
            req._value = None
            req._tcb = tcb
            req.usage_since = now = env._now
            self._held[tcb] = req
            if self._direct:  # env.schedule(req), inlined
                heappush(env._queue, (now + 0, _NORMAL, next(env._eid), req))
            else:
                env.schedule(req)
        else:
            req._value = _PENDING
            req._ticket = ticket = self._alloc.last_ticket
            self._waiting[ticket] = req
            if self._ready:
                self._serve(self._flat)

    def _start(self, req: DepthRequest, pid: int | None, depth: int | None, remote: bool) -> None:
        env = self._env
        req.env = env
        req.callbacks = []
        req.resource = self
        req.proc = env._active_proc
        req.usage_since = None
        req._tcb = req._ticket = -1
        task, pid, depth, remote = self._name(req, pid, depth, remote)
        try:
            tcb = self._acquire(pid, depth, remote)  # raises before any change
        except BaseException:
            if task is not None:
                self._family.maybe_recycle(task.tree)  # a request's own tree, if it was one
            raise
        if task is not None:
            task.tree.busy += 1
        if tcb >= 0 and self._ready:
            if task is not None:
                task.hold(req.level)
            self._queue_behind(req, tcb)
        elif tcb >= 0:
            if task is not None:
                task.hold(req.level)
            req._ok = True
            req._value = None
            req._tcb = tcb
            req.usage_since = env._now
            self._held[tcb] = req
            env.schedule(req)
        else:
            req._value = _PENDING
            req._ticket = ticket = self._alloc.last_ticket
            self._waiting[ticket] = req
            if self._ready:
                self._serve(self._flat)
        if self.monitor is not None:
            self._note()

    def _name(
        self, req: DepthRequest, pid: int | None, depth: int | None, remote: bool
    ) -> tuple[Task | None, int, int, bool]:
        """Set ``req``'s pid and level; ``(task, pid, depth, remote)`` to ask the allocator with."""
        task = None
        if pid is None:
            if self._flat:
                pid, depth, remote = 0, (1 if depth is None else depth), remote
            else:
                proc = req.proc
                task = self._tasks.get(proc) if proc is not None else None
                if task is None:
                    task = self._family.register(proc) if proc is not None else self._family.orphan()
                pid = task.tree.pid
                if depth is None:
                    depth = task.top() + 1
                    remote = False
                    if depth > self._levels:
                        if not self._clamp:
                            raise ValueError(
                                f"pid {pid}: a request nested at level {depth} on {self.name}, "
                                f"which has only {self._levels} levels"
                            )
                        depth = self._levels
        elif depth is None:
            depth = 1
        req.pid = pid
        req.level = depth + 1 if remote else depth
        req._task = task
        return task, pid, depth, remote

    def release(self, request: DepthRequest | int) -> DepthRelease:
        """Release a request: SimPy's ``release(request)``; returns the (triggered) release event.

        A user gives its unit back; the unit goes to a waiting request at the
        next trigger point (when this event is processed, or a request is
        made first). Anything else (a waiting request, one released already,
        another resource's) changes nothing, as in SimPy: a second release is
        a no-op. An ``int`` names a user by its TCB (for
        ``DepthResource(env, allocator)``); one that no user holds raises
        ``pyresv.AllocatorError`` and nothing changes.
        """
        held = self._held
        if type(request) is int:
            user = held.get(request)
            if user is None:
                raise AllocatorError(f"TCB {request} is not held by a user of {self.name}")
            request = user
        env = self._env
        rel = _new(DepthRelease)
        rel.env = env
        rel.callbacks = [self._on_release]
        rel._ok = True
        rel._value = None
        rel.resource = self
        rel.request = request
        rel.proc = env._active_proc
        tcb = getattr(request, "_tcb", -1)
        if tcb >= 0 and held.get(tcb) is request:
            del held[tcb]
            request._tcb = -1
            self._free(tcb, request)
        self._rel.n += 1
        env.schedule(rel)
        return rel

    # bookkeeping ---------------------------------------------------------
    def _free(self, tcb: int, req: DepthRequest) -> None:
        """Give ``req``'s TCB back to the allocator; what it grants waits for a trigger point."""
        self._alloc.release(tcb)
        task = req._task
        if task is not None:
            task.levels.remove(req.level)
            self._family.done(task)
        if self._waiting:
            self._granted()
        if self.monitor is not None:
            self._note()

    def _granted(self) -> None:
        """Move the requests the allocator granted to the ready queue, in grant order."""
        waiting = self._waiting
        ready = self._ready
        for _pid, tcb, ticket in self._take(True):
            req = waiting.pop(ticket)
            req._ticket = -1
            req._tcb = tcb
            ready.append(req)
            if req._task is not None:
                req._task.hold(req.level)

    def _queue_behind(self, req: DepthRequest, tcb: int) -> None:
        """A new request the allocator served at once, while granted requests wait for a trigger point.

        SimPy appends a new request to ``put_queue`` and serves the head, so
        it never overtakes an older waiter whose unit was freed but whose
        trigger point has not come (the freed unit is the waiter's; the one
        the allocator gave ``req`` is the one SimPy would serve it with
        later). ``req`` joins the granted requests at the tail and this is a
        trigger point: the head is served (all of them with levels, where the
        new one comes last).
        """
        req._value = _PENDING
        req._tcb = tcb
        self._ready.append(req)
        self._serve(self._flat)

    def _serve_one(self) -> None:
        """Trigger the oldest ready request: it becomes a user."""
        req = self._ready.popleft()
        req._ok = True
        req._value = None
        env = self._env
        req.usage_since = env._now
        self._held[req._tcb] = req
        env.schedule(req)

    def _serve(self, one: bool) -> None:
        """A trigger point: serve one ready request (SimPy's head), or all of them.

        All of them when ``one`` is false (nesting, where SimPy defines no
        order) or when no release event is left to serve the rest: no granted
        unit waits for a trigger point that will not come.
        """
        self._serve_one()
        if self._ready and (not one or not self._rel.n):
            while self._ready:
                self._serve_one()

    def _release_processed(self, event: Event) -> None:
        """A release event is processed: a trigger point, as SimPy's ``_trigger_put``."""
        self._rel.n -= 1
        if self._ready:
            self._serve(self._flat)

    def _trigger_processed(self, event: Event) -> None:
        """The trigger event is processed: re-arm it, then the same trigger point."""
        event.callbacks = self._trigger_cbs
        self._rel.n -= 1
        if self._ready:
            self._serve(self._flat)

    def _cancel(self, req: DepthRequest) -> None:
        """Withdraw a request that was not triggered yet: waiting, or granted but not served."""
        ticket = req._ticket
        if ticket >= 0:
            del self._waiting[ticket]
            req._ticket = -1
            self._alloc.cancel_request(ticket)
            if req._task is not None:
                self._family.done(req._task)
            if self.monitor is not None:
                self._note()
        elif req._tcb >= 0:
            self._ready.remove(req)
            tcb = req._tcb
            req._tcb = -1
            self._free(tcb, req)  # the next waiter gets it at a trigger point
            if self._ready and (not self._flat or not self._rel.n):
                self._serve(False)

    def _note(self) -> None:
        """Record a monitor sample of the allocator's state and the waiting requests."""
        st = self._alloc.stats()
        queued = [0] * (self._levels + 1)
        for req in self._waiters():
            queued[req.level] += 1
        self.monitor._record(self._env.now, (st["unreserved_held"], *st["held"]), tuple(queued))  # type: ignore[union-attr]

    def _waiters(self) -> Iterable[DepthRequest]:
        """The requests waiting for a unit (no TCB yet)."""
        return self._waiting.values()

    def _holders(self) -> Iterator[tuple[int, DepthRequest]]:
        """``(tcb, request)`` of every TCB held through this resource (users, then ready)."""
        yield from self._held.items()
        for req in self._ready:
            yield req._tcb, req


def _check_capacity(capacity: Any, levels: Any) -> tuple[int, int]:
    """The ``(N, D)`` of the SimPy-style constructor, checked (SimPy's message for capacity)."""
    if type(capacity) is not int:
        if isinstance(capacity, (int, float)) and not isinstance(capacity, bool) and capacity <= 0:
            raise ValueError('"capacity" must be > 0.')
        raise ValueError(f'"capacity" must be an int, got {capacity!r}')
    if capacity <= 0:
        raise ValueError('"capacity" must be > 0.')
    if type(levels) is not int or levels < 1:
        raise ValueError(f'"levels" must be an int >= 1, got {levels!r}')
    if capacity < levels:
        raise ValueError(
            f'"capacity" ({capacity}) must be >= "levels" ({levels}): '
            f"levels - 1 units are held back for nested requests and at least one serves the top level"
        )
    return capacity, levels


class DepthPriorityResource(DepthResource):
    """SimPy's ``PriorityResource`` over a depth-pool allocator; nesting up to ``levels`` cannot deadlock.

    ``request(priority=0, preempt=True)`` as in SimPy: waiting requests are
    served by ``key = (priority, time, not preempt)``, lower first. Units are
    reserved as in :class:`DepthResource` (same constructor, same
    ``N - D + 1`` rule); with ``levels > 1`` a waiting request that no free
    unit can serve (a top-level one while only held-back units are free) is
    passed over for the next one by key that can be served.

    Waiting requests are kept here, in ``put_queue`` (SimPy's ``SortedQueue``:
    set ``put_queue.maxlen`` to bound it), not in the allocator: a request
    is granted by asking the allocator for it at a trigger point.
    """

    _preemptive = False

    def __init__(
        self,
        env: simpy.Environment,
        capacity: int | TicketAllocator = 1,
        levels: int | None = None,
        *,
        name: str | None = None,
        monitor: bool = False,
    ) -> None:
        self._pqueue: SortedQueue = SortedQueue()
        super().__init__(env, capacity, levels, name=name, monitor=monitor)
        self._queue_view = self._pqueue

    @property
    def queue(self) -> SortedQueue:
        """The waiting requests, sorted by key: SimPy's ``SortedQueue`` (``maxlen`` bounds it)."""
        return self._pqueue

    @property
    def put_queue(self) -> SortedQueue:
        """The same object as :attr:`queue`, as in SimPy."""
        return self._pqueue

    def request(  # type: ignore[override]
        self,
        priority: int = 0,
        preempt: bool = True,
        *,
        pid: int | None = None,
        depth: int | None = None,
        remote: bool = False,
    ) -> DepthPriorityRequest:
        """Request a unit with SimPy's ``priority`` (lower first) and ``preempt`` flag.

        Raises ``RuntimeError('Cannot append event. Queue is full.')`` when
        ``put_queue.maxlen`` is reached, as SimPy; ``ValueError`` for a bad
        pid or depth. Nothing changes then.
        """
        req = _new(DepthPriorityRequest)
        self._start_priority(req, priority, preempt, pid, depth, remote)
        return req

    def _start_priority(
        self, req: DepthPriorityRequest, priority: int, preempt: bool, pid: int | None, depth: int | None,
        remote: bool,
    ) -> None:
        env = self._env
        req.env = env
        req.callbacks = []
        req.resource = self
        req.proc = env._active_proc
        req._value = _PENDING
        req.usage_since = None
        req._tcb = req._ticket = -1
        task, pid, depth, remote = self._name(req, pid, depth, remote)
        req.priority = priority
        req.preempt = preempt
        req.time = env._now
        req.key = (priority, req.time, not preempt)
        try:
            self._check_named(pid, depth, remote)
            self._pqueue.append(req)  # SimPy's SortedQueue: raises when full, before any change
        except BaseException:
            if task is not None:
                self._family.maybe_recycle(task.tree)  # a request's own tree, if it was one
            raise
        if task is not None:
            task.tree.busy += 1
        self._trigger()
        if self.monitor is not None:
            self._note()

    def _check_named(self, pid: int, depth: int, remote: bool) -> None:
        """The allocator's checks of ``acquire(pid, depth, remote)``, without acquiring."""
        if type(pid) is not int or not 0 <= pid < self._alloc.max_processes:
            raise ValueError(f"pid {pid!r} out of range [0, {self._alloc.max_processes})")
        if type(depth) is not int or not 1 <= depth <= self._levels:
            raise ValueError(f"depth {depth!r} out of range [1, {self._levels}]")
        if remote and depth + 1 > self._levels:
            raise ValueError(
                f"remote call at depth {depth} needs level {depth + 1}, but there are only {self._levels} levels"
            )

    def _trigger(self) -> None:
        """A trigger point: grant waiting requests by key, as SimPy's ``_trigger_put``.

        SimPy looks at the head of the queue only; so does a flat resource.
        With levels, a head that cannot be served is passed over, and every
        request that can be served is (a unit freed for a deeper level is
        never left idle while a request at that level waits).
        """
        queue = self._pqueue
        flat = self._flat
        i = 0
        while i < len(queue):
            req = queue[i]
            if self._try_grant(req) or (self._preemptive and req.preempt and self._try_preempt(req)):
                del queue[i]
                if flat:
                    return
                continue
            if flat:
                return
            i += 1

    def _try_grant(self, req: DepthPriorityRequest) -> bool:
        """Grant ``req`` a unit if the allocator has one for it now."""
        if len(self._held) >= self._capacity:
            return False
        alloc = self._alloc
        tcb = self._acquire(req.pid, req.level)
        if tcb < 0:
            alloc.cancel_request(alloc.last_ticket)  # only asking: nothing waits in the allocator
            return False
        self._make_user(req, tcb)
        return True

    def _make_user(self, req: DepthPriorityRequest, tcb: int) -> None:
        req._tcb = tcb
        if req._task is not None:
            req._task.hold(req.level)
        req._ok = True
        req._value = None
        env = self._env
        req.usage_since = env._now
        self._held[tcb] = req
        env.schedule(req)

    def _try_preempt(self, req: DepthPriorityRequest) -> bool:
        return False

    def _release_processed(self, event: Event) -> None:
        self._rel.n -= 1
        if self._pqueue:
            self._trigger()

    def _trigger_processed(self, event: Event) -> None:
        event.callbacks = self._trigger_cbs
        self._rel.n -= 1
        if self._pqueue:
            self._trigger()

    def _free(self, tcb: int, req: DepthRequest) -> None:
        # Nothing waits in the allocator: the unit stays free until a trigger point.
        self._alloc.release(tcb)
        task = req._task
        if task is not None:
            task.levels.remove(req.level)
            self._family.done(task)
        if self.monitor is not None:
            self._note()

    def _cancel(self, req: DepthRequest) -> None:
        try:
            self._pqueue.remove(req)
        except ValueError:
            return  # withdrawn already
        if req._task is not None:
            self._family.done(req._task)
        if self.monitor is not None:
            self._note()

    def _waiters(self) -> Iterable[DepthRequest]:
        return self._pqueue

    def _holders(self) -> Iterator[tuple[int, DepthRequest]]:
        yield from self._held.items()


class DepthPreemptiveResource(DepthPriorityResource):
    """SimPy's ``PreemptiveResource`` over a depth-pool allocator; nesting up to ``levels`` cannot deadlock.

    A waiting request with ``preempt=True`` takes the unit of the user with
    the greatest key above its own, as SimPy does, but only a unit it could
    have been granted had that user released it (an unreserved unit, or one
    held back for its own level). The preempted user's process gets an
    ``Interrupt`` whose cause is SimPy's ``Preempted(by, usage_since,
    resource)``.
    """

    _preemptive = True

    def _try_preempt(self, req: DepthPriorityRequest) -> bool:
        """Preempt the user with the greatest key above ``req``'s whose unit ``req`` could take."""
        key = req.key
        victims = [u for u in cast(Iterable[DepthPriorityRequest], self._held.values()) if u.key > key]
        if not victims:
            return False
        if self._flat:  # SimPy: the first user with the greatest key
            order = [max(victims, key=lambda u: u.key)]
        else:  # greatest key first, ties in grant order (sorted is stable)
            order = sorted(victims, key=lambda u: u.key, reverse=True)
        alloc = self._alloc
        for victim in order:
            tcb = victim._tcb
            alloc.release(tcb)  # nothing waits in the allocator: the unit is free
            got = self._acquire(req.pid, req.level)
            if got >= 0:
                del self._held[tcb]
                victim._tcb = -1
                task = victim._task
                if task is not None:
                    task.levels.remove(victim.level)
                    self._family.done(task)
                if victim.proc is not None:
                    try:
                        victim.proc.interrupt(Preempted(by=req.proc, usage_since=victim.usage_since, resource=self))  # type: ignore[arg-type]
                    except BaseException:
                        # SimPy's order: the victim lost its unit before the interrupt
                        # raised (its process ended, or it is the preemptor's own);
                        # the unit stays free and req stays queued for the next trigger point.
                        alloc.release(got)
                        if self.monitor is not None:
                            self._note()
                        raise
                self._make_user(req, got)
                if self.monitor is not None:
                    self._note()
                return True
            # Not a unit req could have been granted: give it back to the victim.
            alloc.cancel_request(alloc.last_ticket)
            back = self._acquire(victim.pid, victim.level)
            assert back >= 0, "a unit freed a moment ago serves its holder again"
            if back != tcb:  # another free TCB of the same kind: keep the books on it
                del self._held[tcb]
                victim._tcb = back
                self._held[back] = victim
        return False


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
    itself stops silently). ``resources`` may mix :class:`DepthResource` (and
    its priority and preemptive kinds) and ``simpy.Resource`` (or its
    subclasses). A process waits for the processes
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
    for tcb, req in res._holders():
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
