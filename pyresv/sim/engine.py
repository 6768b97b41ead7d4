"""The discrete-event simulation of a multi-cluster controller, on SimPy.

:func:`run` builds the controller of a :class:`~pyresv.sim.config.Config`
(clusters, allocators, volumes, relationships), drives the workload through
the flows of :mod:`pyresv.sim.flashcopy`, detects deadlock and returns a
:class:`RunResult`.

Processes and TCBs. A host operation (or background copy worker, destage,
establish) is one process with one pid for its whole tree across clusters
([0022]: the super process and its sub-processes). It starts at depth 1 on
the cluster it arrives on; each hop to another cluster is a request with
``remote=True`` at the caller's level, served one level deeper (FIG 5A,
[0038]); work on the same cluster runs under the TCB already held. So a
process holds at most one TCB per (cluster, level). Queued requests learn
they were served from ``take_grants()``, drained after every release (the
only call that grants); their SimPy events are succeeded in grant order.
pids of finished processes are recycled (a free list), never while anything
is held or pending.

Speed (issue 15): SimPy's own steps cost more than the model's work, so a
host operation or automatic destage that can (no faults, its cluster ready, a
pid free) starts from its arrival's or timer's callback with no process of
its own: its common path runs as timer callbacks, and only when it must wait
for something else than its service time does it go on as a SimPy process
(the flows' ``*_now`` entries, :meth:`Simulation.new_proc`). The events, their
times and their order are those of one process per operation; the private
SimPy code this needs is in :mod:`pyresv.sim._simpy_private`, and
``Simulation(..., simpy_fork=False)`` runs without it, for comparison.

Deadlock: the event queue empties while processes are unfinished. Livelock
guard: ``controller.max_sim_time_s`` stops the run and flags it.

Faults (a ``[faults]`` table): cluster failures, process deaths and message
faults are injected by :class:`pyresv.sim.faults.FaultInjector`; the rules are in
:mod:`pyresv.sim.faults`. A run without faults takes none of those paths.
"""

from __future__ import annotations

import gc
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generator

import numpy as np
import simpy

from pyresv._factory import allocator_class
from pyresv.sim.config import MAX_PROCESSES, Config
from pyresv.sim.deadlock import Step, describe, find_cycle, wait_for_graph
from pyresv.sim.faults import CallFailed, FaultInjector
from pyresv.sim.flashcopy import FlashCopyFlows
from pyresv.sim.metrics import OP_CODES, MetricsRecorder
from pyresv.sim.policies import allocator_args
from pyresv.sim._simpy_private import Environment, run_before, scheduler, start_task
from pyresv.sim.process import Proc, Task
from pyresv.sim.topology import Cluster, InitResult, Relationship, Volume, carve, home_of

if TYPE_CHECKING:
    from pyresv._factory import AllocatorFactory

__all__ = ["run", "RunResult", "Simulation", "TraceEvent", "MAX_PROCESSES"]

#: One trace record: (time_us, cluster, pid, step, level, event), event one of
#: "acquire" (served at once), "wait" (queued), "grant" (served from the
#: queue), "release".
TraceEvent = tuple[float, int, int, str, int, str]

class Simulation:
    """One run's state and the engine primitives the flows use."""

    # Slots: the run reads these attributes on every step, and an instance
    # dict of more than 30 keys is not shared, which makes each read about
    # twice as slow (CPython 3.11); ``__dict__`` keeps room for others.
    __slots__ = (
        "after", "allocator_cls", "allocators", "auto_destage", "_before", "C", "clusters",
        "completed", "config", "destage_delay", "destage_due", "_destage_timer", "env", "_fast",
        "faults", "flows", "fork", "free", "held", "init", "internal_done", "issued_ops",
        "latency", "levels", "live", "max_processes", "metrics", "next_pid", "peak_held",
        "peak_queued", "pid_waiters", "pit_violations", "Process", "queued", "reads_checked",
        "relationships", "route", "t_last", "tcbs_per_cluster", "timeout", "trace", "version",
        "violations", "volumes", "waiting",
        "__dict__",
    )

    def __init__(
        self,
        config: Config,
        allocator_cls: AllocatorFactory | None = None,
        *,
        trace: bool = False,
        max_processes: int = MAX_PROCESSES,
        simpy_fork: bool = True,
    ) -> None:
        self.config = config
        self.max_processes = max_processes
        self.allocator_cls = allocator_cls or allocator_class("auto")
        self.env = Environment() if simpy_fork else simpy.Environment()
        self.timeout = self.env.timeout
        # simpy_fork=False runs every process as a plain simpy.Process stepped
        # by Environment.step, with no fast start: the same events in the same
        # order, slower; what tests/test_simpy_fork.py checks the fork against.
        self.fork = simpy_fork
        self.Process: type[simpy.Process] = Task if simpy_fork else simpy.Process
        self.after: Callable[..., None] = scheduler(self.env) if simpy_fork else self._plain_after
        c = config.controller
        self.C = c.clusters
        self.levels = config.levels
        self.latency = round(c.message_latency_ms * 1e3, 3)
        self.trace: list[TraceEvent] | None = [] if trace else None

        # FIGs 2A/2B: carve the pools (retrying with smaller ones), then build
        # one allocator per cluster.
        r = config.reservation
        self.init: InitResult = carve(r.depths, r.unreserved, r.system_tcbs)
        self.tcbs_per_cluster = self.init.reserved + r.unreserved
        self.clusters: list[Cluster] = []
        depths, unreserved, wake = allocator_args(c.policy, self.init.depths, r.unreserved, r.wake)
        for cid in range(self.C):
            alloc = self.allocator_cls(depths, unreserved, max_processes=max_processes, wake=wake)
            self.clusters.append(Cluster(cid, alloc, self.env.event()))
        # A failed cluster's entry becomes None; route[c] is the live cluster
        # that does c's work (c itself until it fails).
        self.allocators: list[Any] = [cl.allocator for cl in self.clusters]
        self.route = list(range(self.C))

        v = config.volumes
        self.volumes = [Volume(i, home_of(i, self.C), v.tracks) for i in range(v.count)]
        self.flows = FlashCopyFlows(self)
        self.relationships: list[Relationship] = []
        incoming: dict[int, Relationship] = {}
        for i, fc in enumerate(config.flashcopy):
            rel = Relationship(
                i,
                self.volumes[fc.source],
                self.volumes[fc.target],
                round(fc.at_s * 1e6, 3),
                None if fc.withdraw_s is None else round(fc.withdraw_s * 1e6, 3),
                fc.background_copy,
                fc.copy_streams,
                self.env.event(),
            )
            self.relationships.append(rel)
            incoming[fc.target] = rel
        self._before = {rel.rid: incoming.get(rel.source.vid) for rel in self.relationships}

        # Engine state.
        self.waiting: dict[tuple[int, int], simpy.Event] = {}
        self.live: dict[int, Proc] = {}
        # Finished processes' records, their pids free: the fast start reuses
        # the record, a process started by _process takes its pid only.
        self.free: list[Proc] = []
        self.pid_waiters: deque[simpy.Event] = deque()  # starts waiting for a free pid
        self.next_pid = 0
        self.version = 0
        self.held = [[0] * (self.levels + 1) for _ in range(self.C)]
        self.queued = [[0] * (self.levels + 1) for _ in range(self.C)]
        self.peak_held = [[0] * (self.levels + 1) for _ in range(self.C)]
        self.peak_queued = [[0] * (self.levels + 1) for _ in range(self.C)]
        self.completed = [0] * self.C
        self.issued_ops = 0
        self.internal_done = 0
        self.reads_checked = 0
        self.pit_violations = 0
        self.violations: list[dict[str, Any]] = []
        self.t_last = 0.0
        self.metrics = MetricsRecorder(self.C, self.levels)
        self.auto_destage = config.workload.auto_destage
        self.destage_delay = config.timing.destage_delay_us
        self.faults: FaultInjector | None = (
            FaultInjector(self, config.faults, c.seed) if config.faults.active else None
        )
        self._fast = simpy_fork and self.faults is None  # the fast start may be used
        # wrote() schedules a destage's start as a timer (see there), its
        # callback bound once.
        self._destage_timer = self._fast and self.destage_delay > 0
        self.destage_due = self._destage_due

    def _plain_after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.env.timeout(delay).callbacks.append(lambda _: fn(*args))

    # --------------------------------------------------------- primitives
    def try_acquire(self, proc: Proc, c: int, depth: int, remote: bool, name: str) -> int:
        """Ask cluster ``c`` for a TCB for ``proc``: the TCB when it is served
        at once, else -1 with the request queued; then ``yield from
        granted(proc)`` waits for it. Two calls rather than one generator:
        most requests are served at once, and a generator per request is
        created and finished for nothing then."""
        level = depth + 1 if remote else depth
        tcb = self.allocators[c].acquire(proc.pid, depth, remote)
        if tcb < 0:
            self._queued(proc, c, level, name)
            return -1
        trace = self.trace
        if trace is not None:
            trace.append((self.env.now, c, proc.pid, name, level, "acquire"))
        h = self.held[c]
        n = h[level] = h[level] + 1
        peak = self.peak_held[c]
        if n > peak[level]:
            peak[level] = n
        proc.steps.append((c, level, name, tcb))
        return tcb

    def _queued(self, proc: Proc, c: int, level: int, name: str) -> None:
        # The request was queued: an event to wait for its grant.
        ev = self.env.event()
        self.waiting[(c, proc.pid)] = ev
        proc.pending = (c, level, name)
        q = self.queued[c]
        q[level] += 1
        if q[level] > self.peak_queued[c][level]:
            self.peak_queued[c][level] = q[level]
        self.t_last = self.env.now
        if self.trace is not None:
            self.trace.append((self.env.now, c, proc.pid, name, level, "wait"))

    def granted(self, proc: Proc) -> Generator[Any, Any, int]:
        """Wait until ``proc``'s queued request (see :meth:`try_acquire`) is granted; its TCB."""
        assert proc.pending is not None  # try_acquire queued the request
        c, level, name = proc.pending
        tcb = yield self.waiting[(c, proc.pid)]
        proc.pending = None
        self.queued[c][level] -= 1
        if self.trace is not None:
            self.trace.append((self.env.now, c, proc.pid, name, level, "grant"))
        h = self.held[c]
        h[level] += 1
        if h[level] > self.peak_held[c][level]:
            self.peak_held[c][level] = h[level]
        proc.steps.append((c, level, name, tcb))
        return tcb

    def acquire(
        self, proc: Proc, c: int, depth: int, remote: bool, name: str
    ) -> Generator[Any, Any, int]:
        """Get a TCB on cluster ``c`` for ``proc``, waiting if it is queued."""
        tcb = self.try_acquire(proc, c, depth, remote, name)
        if tcb < 0:
            tcb = yield from self.granted(proc)
        return tcb

    def release(self, proc: Proc, c: int, tcb: int) -> None:
        """Return ``proc``'s innermost TCB on cluster ``c`` and wake whoever it was granted to."""
        alloc = self.allocators[c]
        alloc.release(tcb)
        _, level, name, _ = proc.steps.pop()
        self.held[c][level] -= 1
        if self.trace is not None:
            self.trace.append((self.env.now, c, proc.pid, name, level, "release"))
        waiting = self.waiting
        if waiting:  # with no request queued anywhere, a release grants nothing
            for pid, granted in alloc.take_grants():
                waiting.pop((c, pid)).succeed(granted)

    # The fast start's own acquire and release (see new_proc): a host
    # operation's level-1 TCB on its own cluster, held while it runs as
    # callbacks. Its step is not in ``proc.steps`` then (nothing reads it: no
    # fault can hit such a process, and no deadlock can be reported while its
    # timer is pending); :meth:`hold` records it when the operation goes on as
    # a flow, which releases it with :meth:`release`.
    def take(self, proc: Proc, c: int, name: str) -> int:
        """:meth:`try_acquire` of a level-1 TCB on ``c`` for a fast-started
        operation; a TCB it does not record in ``proc.steps``, or -1 queued
        (then the flow waits with :meth:`granted`, which records it)."""
        tcb = self.allocators[c].acquire(proc.pid, 1, False)
        if tcb < 0:
            self._queued(proc, c, 1, name)
            return tcb
        if self.trace is not None:
            self.trace.append((self.env.now, c, proc.pid, name, 1, "acquire"))
        h = self.held[c]
        n = h[1] = h[1] + 1
        peak = self.peak_held[c]
        if n > peak[1]:
            peak[1] = n
        return tcb

    def hold(self, proc: Proc, c: int, name: str, tcb: int) -> None:
        """Record a TCB got with :meth:`take` in ``proc.steps``: the operation
        goes on as a flow."""
        proc.steps.append((c, 1, name, tcb))

    def end(self, proc: Proc, c: int, name: str, tcb: int) -> None:
        """:meth:`release` of a TCB got with :meth:`take`, then :meth:`finish`:
        the end of an operation served as callbacks, in one call."""
        alloc = self.allocators[c]
        alloc.release(tcb)
        self.held[c][1] -= 1
        if self.trace is not None:
            self.trace.append((self.env.now, c, proc.pid, name, 1, "release"))
        waiting = self.waiting
        if waiting:
            for pid, granted in alloc.take_grants():
                waiting.pop((c, pid)).succeed(granted)
        self.finish(proc)

    def call(
        self,
        proc: Proc,
        c: int,
        level: int,
        dest: int,
        name: str,
        fn: Callable[..., Generator[Any, Any, Any]],
        *args: Any,
    ) -> Generator[Any, Any, Any]:
        """Run ``fn(proc, level, *args)`` on cluster ``dest`` for a step at
        ``level`` on ``c``: inline under the caller's TCB when ``dest == c``,
        else as a request message, a TCB one level deeper (FIG 5A), the work,
        and a reply message. The caller keeps its TCB meanwhile ([0036])."""
        if dest == c:
            return (yield from fn(proc, level, *args))
        if self.faults is not None:
            return (yield from self.faults.call(proc, c, level, dest, name, fn, args))
        yield self.timeout(self.latency)
        cl = self.clusters[dest]
        if not cl.ready:
            yield cl.ready_event
        tcb = self.try_acquire(proc, dest, level, True, name)
        if tcb < 0:
            tcb = yield from self.granted(proc)
        result = yield from fn(proc, level + 1, *args)
        self.release(proc, dest, tcb)
        yield self.timeout(self.latency)
        return result

    def new_version(self) -> int:
        """A fresh write version."""
        self.version += 1
        return self.version

    def check_read(self, vol: Volume, t: int, value: tuple[int, ...]) -> None:
        """The point-in-time oracle: a read must return ``vol.expected[t]``."""
        self.reads_checked += 1
        if value != vol.expected[t]:
            self.violation(vol, t, value)

    def violation(self, vol: Volume, t: int, value: tuple[int, ...]) -> None:
        """A read returned ``value``, not ``vol.expected[t]``: count it (and keep the first 20)."""
        self.pit_violations += 1
        if len(self.violations) < 20:
            self.violations.append(
                {"volume": vol.vid, "track": t, "read": list(value), "expected": list(vol.expected[t]),
                 "time_us": int(self.env.now)}
            )

    def wrote(self, vol: Volume, t: int) -> None:
        """A host write dirtied ``vol``'s track ``t``: schedule its destage."""
        if self.auto_destage and t not in vol.destage_scheduled:
            vol.destage_scheduled.add(t)
            if self._destage_timer:
                # What spawn() does, one event fewer: the timer is the one
                # its process would yield first (no event at that time can be
                # scheduled between this step and that process's start).
                after = self.after  # (a call through a slot holding a function is not specialized)
                after(self.destage_delay, self.destage_due, vol, t)
            else:
                self.spawn("destage", self._auto_destage, vol, t, delay=self.destage_delay)

    def _destage_due(self, vol: Volume, t: int) -> None:
        # The moment the destage's process would have started (see wrote()).
        proc = self.new_proc("destage", -1, -1)
        if proc is None:
            start_task(self.env, self._process("destage", self._auto_destage, (vol, t), 0.0, -1, -1))
        else:
            vol.destage_scheduled.discard(t)
            self.flows.destage_now(proc, vol, t)

    def _auto_destage(self, proc: Proc, vol: Volume, t: int) -> Generator[Any, Any, None]:
        vol.destage_scheduled.discard(t)
        yield from self.flows.host_destage(proc, vol, t)

    # ---------------------------------------------------------- processes
    def spawn(
        self,
        kind: str,
        fn: Callable[..., Generator[Any, Any, Any]],
        *args: Any,
        delay: float = 0.0,
        home: int = -1,
        op: int = -1,
    ) -> None:
        """Start a process running ``fn(proc, *args)`` after ``delay`` us.

        ``home >= 0`` makes it wait until that cluster accepts work; ``op >= 0``
        makes it a host operation of kind ``OP_CODES[op]`` (counted, timed).
        """
        self.Process(self.env, self._process(kind, fn, args, delay, home, op))

    def _process(
        self,
        kind: str,
        fn: Callable[..., Any],
        args: tuple,
        delay: float,
        home: int,
        op: int,
        attempt: int = 0,
        start: float = -1.0,
    ) -> Generator[Any, Any, None]:
        env = self.env
        if delay:
            yield env.timeout(delay)
        if start < 0:
            start = env.now  # a restarted operation keeps its first arrival time
        if home >= 0:
            home = self.route[home]
            cl = self.clusters[home]
            while not cl.ready:  # [0026] block 216: work only after the peers are ready
                yield cl.ready_event
                home = self.route[home]  # failed meanwhile: its survivor
                cl = self.clusters[home]
        if self.free:
            pid = self.free.pop().pid
        elif self.next_pid < self.max_processes:
            pid = self.next_pid
            self.next_pid = pid + 1
        else:  # every pid is in use: start when one is freed
            ev = env.event()
            self.pid_waiters.append(ev)
            pid = yield ev
        proc = Proc(pid, kind, start)
        self.live[pid] = proc
        if self.faults is None:
            yield from fn(proc, *args)
        else:
            proc.task = env.active_process
            try:
                yield from fn(proc, *args)
            except (simpy.Interrupt, CallFailed) as exc:
                self._ended_by_fault(proc, exc, kind, fn, args, home, op, attempt, start)
                return
        del self.live[pid]
        if proc.steps or proc.pending:  # pragma: no cover - a flow bug
            raise RuntimeError(f"pid {pid} ({kind}) finished holding {proc.steps}")
        self._free(proc)
        now = env.now
        self.t_last = now
        if op >= 0:
            self.completed[home] += 1
            self.metrics.record_op(op, home, start, now)
        else:
            self.internal_done += 1

    # The engine's fast start: from an event's callback, at the moment a
    # process would start (an arrival, a destage timer), and when no fault can
    # hit it, its cluster accepts work and a pid is free, an operation takes
    # its pid here and runs its flow's ``*_now`` entry (see flashcopy): no
    # process of its own unless it has to wait for something else than its
    # service time. Its end is :meth:`finish`, the end of :meth:`_process`.
    def new_proc(self, kind: str, op: int, home: int) -> Proc | None:
        """A process record with a fresh pid for the fast start, or None when
        the operation must start as :meth:`_process` instead. Only when the
        fast start may be used (``_fast``: forked SimPy, no faults)."""
        if home >= 0 and not self.clusters[home].ready:  # (no faults: route[home] is home)
            return None
        if self.free:  # a finished process's record, empty: reused with its pid
            proc = self.free.pop()
            proc.kind = kind
            proc.start = self.env.now
            proc.op = op
            proc.home = home
        elif self.next_pid < self.max_processes:
            pid = self.next_pid
            self.next_pid = pid + 1
            proc = Proc(pid, kind, self.env.now, op, home)
        else:
            return None
        self.live[proc.pid] = proc
        return proc

    def run_flow(self, proc: Proc, flow: Generator[Any, Any, Any]) -> None:
        """Go on with ``proc``'s operation as a process running ``flow``,
        started now (from an event's callback); :meth:`finish` at its end."""
        start_task(self.env, flow, self._flow_done, proc)

    def _flow_done(self, task: Task) -> None:
        assert task.proc is not None
        self.finish(task.proc)

    def finish(self, proc: Proc) -> None:
        """The end of a fast-started operation (what :meth:`_process` does
        after its flow)."""
        del self.live[proc.pid]
        if proc.steps or proc.pending:  # pragma: no cover - a flow bug
            raise RuntimeError(f"pid {proc.pid} ({proc.kind}) finished holding {proc.steps}")
        if self.pid_waiters:
            self.pid_waiters.popleft().succeed(proc.pid)
        else:
            self.free.append(proc)
        now = self.t_last = self.env.now
        op = proc.op
        if op >= 0:
            home = proc.home
            self.completed[home] += 1
            start = proc.start
            self.metrics.ops += (op, home, start, now - start)  # metrics.record_op
        else:
            self.internal_done += 1

    def _free(self, proc: Proc) -> None:
        # proc ended: its pid to the first start waiting for one, else free.
        if self.pid_waiters:
            self.pid_waiters.popleft().succeed(proc.pid)
        else:
            self.free.append(proc)

    def _ended_by_fault(
        self, proc: Proc, exc: BaseException, kind: str, fn: Callable[..., Any], args: tuple,
        home: int, op: int, attempt: int, start: float,
    ) -> None:
        # An abort (its TCBs are back already) or a failed call: restart or fail.
        faults = self.faults
        assert faults is not None
        env = self.env

        def restart(delay: float) -> None:
            self.Process(env, self._process(kind, fn, args, delay, home, op, attempt + 1, start))

        failed = faults.ended(proc, exc, op, attempt, restart)
        self._free(proc)
        self.t_last = env.now
        if failed and kind == "establish":
            self.flows.establish_failed(args[0])

    def _init_cluster(self, cl: Cluster) -> Generator[Any, Any, None]:
        # FIG 2A/2B: every attempt takes time; then tell the peers ([0026]).
        yield self.timeout(self.config.timing.init_us * len(self.init.attempts))
        cl.reported.add(cl.cid)
        self.maybe_ready(cl)
        for peer in self.clusters:
            if peer is not cl:
                self.Process(self.env, self._ready_message(cl, peer))

    def _ready_message(self, cl: Cluster, peer: Cluster) -> Generator[Any, Any, None]:
        yield self.timeout(self.latency)
        peer.reported.add(cl.cid)
        self.maybe_ready(peer)

    def maybe_ready(self, cl: Cluster) -> None:
        """``cl`` accepts work once it and every live peer have reported ready."""
        if cl.ready or not cl.alive:
            return
        if all(o.cid in cl.reported for o in self.clusters if o.alive):
            cl.ready = True
            cl.ready_at = self.env.now
            cl.ready_event.succeed()

    def _arrivals(
        self, times: list[float], kinds: list[int], vols: list[int], tracks: list[int]
    ) -> Generator[Any, Any, None]:
        """Start the host operations at their arrival times.

        One timeout per distinct arrival time, as a process looping over
        ``yield env.timeout(...)`` would schedule them, but each timeout's
        callback schedules the next one, then starts that time's operations
        (the fast start, or one process each): no generator to resume per
        arrival, and the events and their order are the same.
        """
        env = self.env
        flows = self.flows
        volumes = self.volumes
        start = self._process
        new_proc = self.new_proc
        Process = self.Process
        fork = self.fork
        quick = self._fast
        after = self.after
        handlers = (flows.host_read, flows.host_write, flows.host_write, flows.host_destage)
        read_now, write_now, destage_now = flows.read_now, flows.write_now, flows.destage_now
        n = len(times)
        i = 0
        now = 0.0

        def arrive(from_timer: bool = False) -> None:
            # From its timer an operation starts at once (the fast start);
            # the first call runs inside a process, at time 0.
            nonlocal i, now
            fast = from_timer and fork
            # From its timer, times[i] is now's (the timer was set for it).
            j = i + 1 if from_timer else i
            while j < n and times[j] <= now:
                j += 1
            if j < n:  # the next arrival time's timeout first, as before
                at = times[j]
                after(at - now, arrive, True)
                now = at
            self.issued_ops = j
            for x in range(i, j):
                k = kinds[x]
                vol = volumes[vols[x]]
                t = tracks[x]
                proc = new_proc(OP_CODES[k], k, vol.home) if from_timer and quick else None
                if proc is not None:
                    if k == 0:
                        read_now(proc, vol, t)
                    elif k == 3:
                        destage_now(proc, vol, t)
                    else:
                        write_now(proc, vol, t, k == 2)
                    continue
                args = (vol, t, k == 2) if k in (1, 2) else (vol, t)
                flow = start(OP_CODES[k], handlers[k], args, 0.0, vol.home, k)
                if fast:
                    start_task(env, flow)
                else:
                    Process(env, flow)
            i = j

        arrive()
        return
        yield  # a generator: it starts (at time 0) where the processes of the first arrival did

    # ----------------------------------------------------------- workload
    def _workload(self) -> tuple[list[float], list[int], list[int], list[int]]:
        """Random host operations (Poisson arrivals) merged with the scripted ``[[ops]]``."""
        w = self.config.workload
        rng = np.random.default_rng(self.config.controller.seed)
        horizon = w.duration_s * 1e6
        times = np.empty(0)
        if w.rate_ops_per_s > 0 and horizon > 0:
            mean = 1e6 / w.rate_ops_per_s
            chunks = []
            last = 0.0
            while last <= horizon:
                gaps = rng.exponential(mean, size=int(horizon / mean * 1.1) + 16)
                arr = last + np.cumsum(gaps)
                chunks.append(arr)
                last = float(arr[-1])
            times = np.concatenate(chunks)
            times = times[times < horizon]
        n = len(times)
        u = rng.random(n)
        p = rng.random(n)
        kinds = np.where(u < w.read_fraction, 0, np.where(p < w.partial_write_fraction, 2, 1))
        vols = rng.integers(0, self.config.volumes.count, n)
        trks = rng.integers(0, self.config.volumes.tracks, n)
        # Times (us), kinds, volumes, tracks, in time order; the random ones
        # are in order already (times only grow).
        at, kind, vol, trk = np.round(times, 3).tolist(), kinds.tolist(), vols.tolist(), trks.tolist()
        if self.config.ops:
            for op in self.config.ops:
                at.append(round(op.at_s * 1e6, 3))
                kind.append(OP_CODES.index(op.op))
                vol.append(op.volume)
                trk.append(op.track)
            order = sorted(range(len(at)), key=at.__getitem__)  # stable: scripted ops keep their order
            at, kind, vol, trk = ([xs[i] for i in order] for xs in (at, kind, vol, trk))
        return at, kind, vol, trk

    # ---------------------------------------------------------------- run
    def run(self) -> RunResult:
        """Run to completion, deadlock or the time limit.

        Python's cyclic garbage collector is paused meanwhile (and restored):
        the run makes no reference cycle per event, and its collections were
        about a tenth of a run's time (profiled)."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if collecting:
                gc.enable()

    def _run(self) -> RunResult:
        env = self.env
        for cl in self.clusters:
            self.Process(env, self._init_cluster(cl))
        for rel in self.relationships:
            self.spawn("establish", self.flows.establish, rel, self._before[rel.rid],
                       delay=rel.at_us, home=rel.source.home)
            if rel.withdraw_us is not None:
                self.spawn("withdraw", self.flows.withdraw, rel,
                           delay=rel.withdraw_us, home=rel.source.home)
        self.Process(env, self._arrivals(*self._workload()))
        if self.faults is not None:
            self.faults.start()

        dt = self.config.metrics.sample_interval_ms * 1e3
        limit = self.config.controller.max_sim_time_s * 1e6
        next_sample = 0.0
        timed_out = False
        metrics = self.metrics
        record = metrics.sample
        capacity = metrics.capacity
        # Our own loop rather than env.run(until=...): the run must end the
        # moment the queue empties (a deadlock leaves it empty).
        step_before = run_before if self.fork else _step_before
        while True:
            if not step_before(env, next_sample):
                record(env.now, self.held, self.queued, self.completed)  # the final state
                break
            record(next_sample, self.held, self.queued, self.completed)
            if next_sample >= limit:
                timed_out = True
                break
            if metrics.samples >= capacity:  # full: every other sample, at half the rate
                metrics.thin()
                dt *= 2
                next_sample = metrics.last_sample_us
            next_sample = min(next_sample + dt, limit)
        end = self.t_last
        return self._result(end, timed_out)

    def _result(self, end: float, timed_out: bool) -> RunResult:
        live = self.live
        deadlocked = bool(live or self.pid_waiters) and not timed_out
        cycle: list[str] = []
        if deadlocked:
            held_steps = {
                pid: [Step(c, lv, nm, pid, tcb) for c, lv, nm, tcb in p.steps] for pid, p in live.items()
            }
            pending = {
                pid: Step(p.pending[0], p.pending[1], p.pending[2], pid)
                for pid, p in live.items() if p.pending is not None
            }
            graph = wait_for_graph(self.allocators, held_steps, pending)
            cycle = describe(graph, find_cycle(graph))
        held_end = 0
        leaked = 0
        for alloc in self.allocators:
            if alloc is None:  # a failed cluster
                continue
            alloc.check()
            for t in range(alloc.total):
                h = alloc.holder(t)
                if h >= 0:
                    held_end += 1
                    if h not in live:
                        leaked += 1
        return RunResult(
            config=self.config,
            completed_ops=sum(self.completed),
            issued_ops=self.issued_ops,
            internal_ops=self.internal_done,
            deadlocked=deadlocked,
            deadlock_cycle=cycle,
            stuck_processes=len(live) + len(self.pid_waiters),
            timed_out=timed_out,
            pit_violations=self.pit_violations,
            reads_checked=self.reads_checked,
            violations=list(self.violations),
            leaked_tcbs=leaked,
            held_tcbs_at_end=held_end,
            sim_time_us=end,
            latencies_us=np.asarray(self.metrics.latencies_us, dtype=float),
            peak_held=[row[1:] for row in self.peak_held],
            peak_queued=[row[1:] for row in self.peak_queued],
            tcbs_per_cluster=self.tcbs_per_cluster,
            init=self.init,
            ready_us=[_when(cl.ready_at) for cl in self.clusters],
            relationships=[
                {"source": r.source.vid, "target": r.target.vid, "state": r.state,
                 "copied": r.ncopied, "established_us": _when(r.established_us), "ended_us": _when(r.ended_us)}
                for r in self.relationships
            ],
            trace=self.trace,
            metrics=self.metrics,
            faults=None if self.faults is None else self.faults.summary(),
        )


def _step_before(env: simpy.Environment, until: float) -> bool:
    """:func:`run_before` with SimPy's own ``Environment.step`` (no fork)."""
    while env.peek() < until:
        env.step()
    return env.peek() < float("inf")


def _when(t_us: float) -> float | None:
    # The model marks a time that never came with -1.0; a summary says null.
    return None if t_us < 0 else t_us


@dataclass
class RunResult:
    """The outcome of one run. :meth:`summary` is the ``--json`` object."""

    config: Config
    completed_ops: int
    issued_ops: int
    internal_ops: int
    deadlocked: bool
    deadlock_cycle: list[str]
    stuck_processes: int
    timed_out: bool
    pit_violations: int
    reads_checked: int
    violations: list[dict[str, Any]]
    leaked_tcbs: int
    held_tcbs_at_end: int
    sim_time_us: float
    latencies_us: np.ndarray
    peak_held: list[list[int]]
    peak_queued: list[list[int]]
    tcbs_per_cluster: int
    init: InitResult
    ready_us: list[float | None]
    relationships: list[dict[str, Any]]
    trace: list[TraceEvent] | None
    metrics: MetricsRecorder
    faults: dict[str, int] | None = None
    scenario: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def policy(self) -> str:
        """``shared``, ``deepest-first`` or ``depth`` (:mod:`pyresv.sim.policies`)."""
        return self.config.controller.policy

    @property
    def sim_time_s(self) -> float:
        """Simulated time of the last event that did something."""
        return self.sim_time_us * 1e-6

    def summary(self) -> dict[str, Any]:
        """DESIGN section 3's JSON fields, then extras. Deterministic: no wall-clock values."""
        lat = self.latencies_us
        if len(lat):
            p50, p99 = (float(x) * 1e-3 for x in np.percentile(lat, [50, 99]))
            latency: dict[str, float | None] = {"p50": round(p50, 6), "p99": round(p99, 6)}
        else:
            latency = {"p50": None, "p99": None}
        sim_s = self.sim_time_s
        rate = round(self.completed_ops / sim_s, 3) if sim_s > 0 else 0.0
        out: dict[str, Any] = {}
        if self.scenario is not None:
            out["scenario"] = self.scenario
        out.update(
            policy=self.policy,
            completed_ops=self.completed_ops,
            deadlocked=self.deadlocked,
            deadlock_cycle=list(self.deadlock_cycle),
            pit_violations=self.pit_violations,
            leaked_tcbs=self.leaked_tcbs,
            # A deadlocked run's rate only says when it stopped: null here, and
            # reported as what it is in throughput_until_deadlock_ops_per_s.
            throughput_ops_per_s=None if self.deadlocked else rate,
            latency_ms=latency,
            sim_time_s=round(sim_s, 9),
            # extras
            throughput_until_deadlock_ops_per_s=rate if self.deadlocked else None,
            seed=self.config.controller.seed,
            issued_ops=self.issued_ops,
            internal_ops=self.internal_ops,
            stuck_processes=self.stuck_processes,
            held_tcbs_at_end=self.held_tcbs_at_end,
            timed_out=self.timed_out,
            reads_checked=self.reads_checked,
            clusters=self.config.controller.clusters,
            levels=self.config.levels,
            tcbs_per_cluster=self.tcbs_per_cluster,
            per_level=[
                {"level": lv + 1,
                 "peak_held": [row[lv] for row in self.peak_held],
                 "peak_queued": [row[lv] for row in self.peak_queued]}
                for lv in range(self.config.levels)
            ],
            init={
                "attempts": [a.to_dict() for a in self.init.attempts],
                "depths": [list(d) for d in self.init.depths],
                "ready_us": self.ready_us,
            },
            relationships=self.relationships,
        )
        if self.faults is not None:  # only when the config injects faults
            out["faults"] = dict(self.faults)
        if self.violations:
            out["violations"] = self.violations
        out.update(self.extra)
        return out


def run(
    config: Config, *, allocator_cls: AllocatorFactory | None = None, trace: bool = False
) -> RunResult:
    """Simulate ``config``; ``allocator_cls`` defaults to the compiled
    :class:`pyresv.DepthPoolAllocator` (the pure-Python reference when the core
    is not built). ``trace=True`` records every TCB event in ``result.trace``."""
    return Simulation(config, allocator_cls, trace=trace).run()
