"""Fault injection: cluster failures, process deaths, lost and delayed messages.

A ``[faults]`` table (:class:`pyresv.sim.config.FaultsConfig`) turns them on; a
run without it never touches this module. The rules, and what the run
summary's ``faults`` object counts:

* **Cluster failure** (``[[faults.cluster_fail]]``). At ``at_s`` the cluster
  fails: its allocator is gone, and its volumes move to the next live cluster
  (the survivor), whose NVS is assumed to hold their cached data and
  relationship tables (see :mod:`pyresv.sim.topology`). Every process with a step
  on it (a TCB held there, or a request pending there) is aborted: its
  pending requests are cancelled and ``release_all(pid)`` on every surviving
  allocator gives back what it held elsewhere; the grants that frees are
  delivered at once, so no waiter is stranded. Then its SimPy process is
  interrupted. Messages already on their way to the failed cluster are
  delivered to the survivor; a call whose survivor is the caller's own
  cluster runs inline there (with two clusters, no cross-cluster hop is left).
* **Process death** (``[[faults.process_death]]``). At ``at_s`` the process
  ``pid``, or the one with a step at ``level`` on ``cluster`` (the lowest pid
  when several), dies: the same abort. ``release_all`` on every cluster gives
  its TCBs back, and a pool it owned, once wholly free, goes to the oldest
  request waiting for a pool at that level (FIG 6A blocks 606/610, [0034]).
  A sub-operation runs under its caller's pid ([0022]), so the caller waiting
  on it gets the error too: the whole operation aborts.
* An **aborted** operation (host op or internal work: a destage, a
  background-copy worker, an establish or withdraw) starts again from the
  beginning, as a new process, ``retry_delay_ms`` later, at most
  ``op_retries`` times; then it has failed. A host operation's latency counts
  from its first arrival. The flows make every mutation at one instant and
  re-check after every wait, so an abort leaves no half-done change and a
  restart is safe (an establish that already made its table entries stops).
* **Messages** (``message_loss``, ``message_delay_ms``,
  ``message_timeout_ms``, ``message_retries``). A call to another cluster is a
  request message and a reply message; each is lost with probability
  ``message_loss`` and delivered after ``controller.message_latency_ms`` plus
  a uniform extra delay. The receiver acknowledges a request it works on, so
  only a loss is taken for one: the sender notices it ``message_timeout_ms``
  after the lost message was sent, and sends the request again with the same
  request id. Completed requests are kept by id (in a table the survivor of a
  failover inherits), so a resent request whose work was done (its reply was
  lost) is answered from the table without doing the work twice. After
  ``message_retries`` resends the call fails: the operation fails cleanly
  (``release_all`` on every live cluster) and is not restarted. The
  initialization handshake is not subject to message faults.

Counts (the ``faults`` object of the run summary):

``cluster_failures``, ``failed_over_volumes``; ``process_deaths``,
``deaths_missed`` (no process matched at that time); ``aborted_ops`` /
``aborted_internal`` (host / internal operations aborted), ``retried_ops`` /
``retried_internal`` (restarts), ``ops_failed`` / ``internal_failed`` (failed
for good: aborts beyond ``op_retries``, or calls out of message retries);
``released_tcbs`` (by ``release_all``), ``cancelled_requests``,
``regranted_tcbs`` and ``regranted_pools`` (grants, and whole pools changing
hands, that those releases made); ``messages_sent``, ``messages_lost``,
``messages_retried`` (resent requests), ``duplicate_requests`` (resent
requests answered from the table), ``calls_failed``, ``rerouted_calls``
(requests that arrived at a failed cluster); ``stranded_waiters`` (requests
still pending at the end: 0 unless the run deadlocked).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable, Generator

from pyresv.sim.config import FaultsConfig
from pyresv.sim.process import Proc

if TYPE_CHECKING:
    from pyresv.sim.engine import Simulation

__all__ = ["CallFailed", "Fault", "FaultInjector", "COUNTS"]

#: The keys of the summary's ``faults`` object, in order.
COUNTS = (
    "cluster_failures", "failed_over_volumes", "process_deaths", "deaths_missed",
    "aborted_ops", "aborted_internal", "retried_ops", "retried_internal", "ops_failed", "internal_failed",
    "released_tcbs", "cancelled_requests", "regranted_tcbs", "regranted_pools",
    "messages_sent", "messages_lost", "messages_retried", "duplicate_requests", "calls_failed",
    "rerouted_calls",
)


class Fault:
    """The cause of an abort (the ``cause`` of the SimPy ``Interrupt``)."""

    __slots__ = ("kind", "detail")

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind  # "cluster-failure" | "process-death"
        self.detail = detail

    def __repr__(self) -> str:
        return f"Fault({self.kind}: {self.detail})"


class CallFailed(RuntimeError):
    """A call to another cluster got no reply within its message retries."""


class FaultInjector:
    """The faults of one run: their timed events, the abort path and the
    message protocol. Created by :class:`~pyresv.sim.engine.Simulation` when
    the config injects faults."""

    def __init__(self, sim: Simulation, config: FaultsConfig, seed: int) -> None:
        self.sim = sim
        self.config = config
        self.counts = dict.fromkeys(COUNTS, 0)
        self.rng = random.Random(f"pyresv-faults-{seed}")
        self.loss = config.message_loss
        lo, hi = config.message_delay_ms
        self.delay_lo, self.delay_hi = lo * 1e3, hi * 1e3
        self.timeout_us = round(config.message_timeout_ms * 1e3, 3)
        self.retry_delay_us = round(config.retry_delay_ms * 1e3, 3)
        self.next_rid = 0
        self.replies: dict[int, Any] = {}  # completed request id -> its result

    # ------------------------------------------------------------ schedule
    def start(self) -> None:
        """Start one timer process per configured fault."""
        env = self.sim.env
        for cf in self.config.cluster_fail:
            self.sim.Process(env, self._at(round(cf.at_s * 1e6, 3), self.fail_cluster, cf.cluster))
        for i, pd in enumerate(self.config.process_death):
            self.sim.Process(env, self._at(round(pd.at_s * 1e6, 3), self.kill, i))

    def _at(self, at_us: float, action: Callable[..., None], arg: int) -> Generator[Any, Any, None]:
        yield self.sim.env.timeout(at_us)
        action(arg)

    # --------------------------------------------------------------- abort
    def abort(self, victims: list[Proc], cause: Fault | None) -> None:
        """Abort ``victims`` at once: cancel their requests, ``release_all``
        on every live allocator, deliver the grants that makes, then
        interrupt their processes with ``cause`` (they restart or fail, see
        :meth:`Simulation._process`). ``cause=None``: a process cleaning up
        after itself (a failed call), nothing to interrupt."""
        sim = self.sim
        counts = self.counts
        now = sim.env.now
        trace = sim.trace
        # The live clusters' allocators; a failing cluster's is dropped as it is.
        allocs = [(c, a) for c, a in enumerate(sim.allocators) if a is not None and sim.clusters[c].alive]
        # First every victim's requests go, so that no release below grants
        # a TCB to another victim.
        for proc in victims:
            pid = proc.pid
            proc.dead = True
            del sim.live[pid]
            for c, level, name, _ in proc.steps:
                sim.held[c][level] -= 1
                if trace is not None:
                    trace.append((now, c, pid, name, level, "abort"))
            proc.steps.clear()
            if proc.pending is not None:
                c, level, name = proc.pending
                sim.queued[c][level] -= 1
                sim.waiting.pop((c, pid), None)
                if trace is not None:
                    trace.append((now, c, pid, name, level, "cancel"))
                proc.pending = None
            for _, alloc in allocs:
                counts["cancelled_requests"] += alloc.cancel(pid)
        for proc in victims:
            for _, alloc in allocs:
                counts["released_tcbs"] += alloc.release_all(proc.pid)
        for c, alloc in allocs:
            grants = alloc.take_grants()
            pools = set()
            for pid, tcb in grants:
                sim.waiting.pop((c, pid)).succeed(tcb)
                level = alloc.level_of(tcb)
                if level:  # a pid owns one pool per level: (pid, level) names it
                    pools.add((pid, level))
            counts["regranted_tcbs"] += len(grants)
            counts["regranted_pools"] += len(pools)
        if cause is not None:
            for proc in victims:
                # A live process runs under faults, so Simulation set its task.
                assert proc.task is not None
                proc.task.interrupt(cause)

    def ended(
        self, proc: Proc, exc: BaseException, op: int, attempt: int, restart: Callable[[float], None]
    ) -> bool:
        """A process ended by ``exc``: an abort (an ``Interrupt``; its TCBs
        are back already) restarts after ``retry_delay_ms`` unless it has
        used its ``op_retries``; a failed call (:class:`CallFailed`) releases
        what it holds and fails for good. Returns whether it failed for good."""
        host = op >= 0
        if isinstance(exc, CallFailed):
            self.abort([proc], None)
        else:
            self.counts["aborted_ops" if host else "aborted_internal"] += 1
            if attempt < self.config.op_retries:
                self.counts["retried_ops" if host else "retried_internal"] += 1
                restart(self.retry_delay_us)
                return False
        self.counts["ops_failed" if host else "internal_failed"] += 1
        return True

    # -------------------------------------------------------------- faults
    def fail_cluster(self, cid: int) -> None:
        """Cluster ``cid`` fails now (see the module docstring)."""
        sim = self.sim
        counts = self.counts
        counts["cluster_failures"] += 1
        failed = sim.clusters[cid]
        failed.alive = False
        n = sim.C
        survivor = next(sim.clusters[(cid + k) % n] for k in range(1, n) if sim.clusters[(cid + k) % n].alive)
        route = sim.route
        for c in range(n):
            if route[c] == cid:
                route[c] = survivor.cid
        for vol in sim.volumes:
            if vol.home == cid:
                vol.home = survivor.cid
                counts["failed_over_volumes"] += 1
        victims = [
            p for pid, p in sorted(sim.live.items())
            if any(s[0] == cid for s in p.steps) or (p.pending is not None and p.pending[0] == cid)
        ]
        self.abort(victims, Fault("cluster-failure", f"c{cid}"))
        failed.allocator = None
        sim.allocators[cid] = None
        if not failed.ready_event.triggered:  # whoever waits for it re-routes
            failed.ready_event.succeed()
        for cl in sim.clusters:
            sim.maybe_ready(cl)  # a peer that never reported no longer counts

    def kill(self, index: int) -> None:
        """The ``index``-th ``[[faults.process_death]]`` happens now."""
        sim = self.sim
        pd = self.config.process_death[index]
        victim = None
        if pd.pid is not None:
            victim = sim.live.get(pd.pid)
        else:
            for pid in sorted(sim.live):
                p = sim.live[pid]
                if any(c == pd.cluster and lv == pd.level for c, lv, _, _ in p.steps):
                    victim = p
                    break
        if victim is None:
            self.counts["deaths_missed"] += 1
            return
        self.counts["process_deaths"] += 1
        self.abort([victim], Fault("process-death", f"pid {victim.pid}"))

    # ------------------------------------------------------------ messages
    def _lost(self) -> bool:
        self.counts["messages_sent"] += 1
        if self.loss and self.rng.random() < self.loss:
            self.counts["messages_lost"] += 1
            return True
        return False

    def _transit(self) -> float:
        if self.delay_hi:
            return self.sim.latency + round(self.rng.uniform(self.delay_lo, self.delay_hi), 3)
        return self.sim.latency

    def call(
        self, proc: Proc, c: int, level: int, dest: int, name: str,
        fn: Callable[..., Generator[Any, Any, Any]], args: tuple,
    ) -> Generator[Any, Any, Any]:
        """:meth:`Simulation.call` under message faults and failover."""
        sim = self.sim
        timeout = sim.timeout
        counts = self.counts
        rid = self.next_rid
        self.next_rid += 1
        replies = self.replies
        for attempt in range(self.config.message_retries + 1):
            if attempt:
                counts["messages_retried"] += 1
            if self._lost():  # the request
                yield timeout(self.timeout_us)
                continue
            yield timeout(self._transit())
            cl = sim.clusters[dest]
            while not cl.alive or not cl.ready:
                if cl.alive:
                    yield cl.ready_event  # succeeds on failure too
                    continue
                counts["rerouted_calls"] += 1  # it arrived at a failed cluster
                dest = sim.route[dest]
                cl = sim.clusters[dest]
            if rid in replies:  # a resent request whose work is done
                counts["duplicate_requests"] += 1
                result = replies[rid]
            elif dest == c:  # failed over onto the caller's own cluster
                result = yield from fn(proc, level, *args)
                replies[rid] = result
            else:
                tcb = sim.try_acquire(proc, dest, level, True, name)
                if tcb < 0:
                    tcb = yield from sim.granted(proc)
                result = yield from fn(proc, level + 1, *args)
                sim.release(proc, dest, tcb)
                replies[rid] = result
            if dest == c:  # no reply message within one cluster
                del replies[rid]
                return result
            if self._lost():  # the reply
                yield timeout(self.timeout_us)
                continue
            yield timeout(self._transit())
            del replies[rid]  # the sender's next message acknowledges it
            return result
        counts["calls_failed"] += 1
        replies.pop(rid, None)
        raise CallFailed(f"pid {proc.pid}: {name} on c{dest} got no reply after {attempt + 1} attempts")

    def summary(self) -> dict[str, int]:
        """The counts, plus the requests still pending on live allocators."""
        out = dict(self.counts)
        out["stranded_waiters"] = sum(a.pending() for a in self.sim.allocators if a is not None)
        return out
