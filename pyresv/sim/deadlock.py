"""Deadlock detection: the wait-for graph of a stuck run and a readable cycle.

A run is deadlocked when requests pend and no event can fire any more (the
SimPy queue is empty while operations are unfinished; SimPy itself just
returns). Then every unfinished process is blocked on a TCB request. The
wait-for graph has an edge A -> B when A's pending request (cluster c, level
e) could be served by a TCB that B holds:

* A owns a pool at e on c: the TCBs of that pool (A's own) and the
  unreserved ones;
* otherwise: every TCB of every pool at level e on c (a pool is freed only
  when its owner returns all of it, FIG 6A) and the unreserved ones.

Waiting is an OR over those holders; with no event left, every one of them
is itself blocked, so the graph has cycles. The one reported is a shortest
cycle through at least two processes when there is one, written as the steps
of each process from the step holding the contested TCB down to its pending
request, e.g. ``c0 read pid 0 L1 -> c1 stage-source pid 0 L2 -> c1 read pid 4
L1 -> c0 stage-source pid 4 L2`` (pid 0 waits on c1 for pid 4, which waits on
c0 for pid 0).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["Step", "WaitFor", "wait_for_graph", "find_cycle", "describe"]


@dataclass(frozen=True)
class Step:
    """One step of a process: on ``cluster`` at ``level``; ``tcb`` is -1 for a pending request."""

    cluster: int
    level: int
    name: str
    pid: int
    tcb: int = -1

    def __str__(self) -> str:
        return f"c{self.cluster} {self.name} pid {self.pid} L{self.level}"


@dataclass(frozen=True)
class WaitFor:
    """The wait-for graph: ``edges[a]`` maps each holder pid to the TCBs
    (cluster, tcb) a is waiting for that it holds."""

    edges: dict[int, dict[int, list[tuple[int, int]]]]
    held_steps: dict[int, list[Step]]
    pending: dict[int, Step]


def wait_for_graph(
    allocators: Sequence[Any],
    held_steps: Mapping[int, Sequence[Step]],
    pending: Mapping[int, Step],
) -> WaitFor:
    """Build the wait-for graph from the allocators' ownership (``holder``,
    ``level_of``) and, per pid, its held steps (outermost first) and pending
    request. A ``None`` allocator is a failed cluster's."""
    # Per cluster: the level and holder of every TCB (level 0: unreserved).
    tables: list[list[tuple[int, int]]] = []
    for alloc in allocators:
        if alloc is None:  # a failed cluster: nothing is held or pending there
            tables.append([])
            continue
        tables.append([(alloc.level_of(t), alloc.holder(t)) for t in range(alloc.total)])
    edges: dict[int, dict[int, list[tuple[int, int]]]] = {}
    for pid in sorted(pending):
        req = pending[pid]
        table = tables[req.cluster]
        owns_pool = any(lv == req.level and h == pid for lv, h in table)
        out: dict[int, list[tuple[int, int]]] = {}
        for tcb, (lv, h) in enumerate(table):
            if h < 0:
                continue
            if lv == 0 or (lv == req.level and (h == pid or not owns_pool)):
                out.setdefault(h, []).append((req.cluster, tcb))
        edges[pid] = out
    return WaitFor(edges, {p: list(s) for p, s in held_steps.items()}, dict(pending))


def find_cycle(graph: WaitFor, max_starts: int = 64) -> list[int]:
    """A shortest cycle of pids (each waiting for the next), preferring one of
    two or more processes; ``[]`` when there is none."""
    blocked = set(graph.pending)
    succ = {a: sorted(b for b in out if b in blocked) for a, out in graph.edges.items()}
    best: list[int] = []
    self_loop: list[int] = []
    for start in sorted(blocked)[:max_starts]:
        if not self_loop and start in succ.get(start, ()):
            self_loop = [start]
        # BFS from start back to start through other processes.
        parent: dict[int, int] = {}
        frontier: deque[int] = deque()
        for b in succ.get(start, ()):
            if b != start and b not in parent:
                parent[b] = start
                frontier.append(b)
        found = -1
        while frontier and found < 0:
            a = frontier.popleft()
            for b in succ.get(a, ()):
                if b == start:
                    found = a
                    break
                if b not in parent:
                    parent[b] = a
                    frontier.append(b)
        if found >= 0:
            path = [found]
            while path[-1] != start:
                path.append(parent[path[-1]])
            cycle = path[::-1]
            if not best or len(cycle) < len(best):
                best = cycle
                if len(best) == 2:
                    break
    return best or self_loop


def describe(graph: WaitFor, cycle: list[int]) -> list[str]:
    """The cycle as readable steps: per process, from the step holding the TCB
    its predecessor waits for down to its own pending request."""
    out: list[str] = []
    n = len(cycle)
    for i, pid in enumerate(cycle):
        waiter = cycle[i - 1] if n > 1 else pid
        wanted = {tcb for (c, tcb) in graph.edges[waiter].get(pid, [])}
        cluster = graph.pending[waiter].cluster
        steps = graph.held_steps.get(pid, [])
        first = 0
        for k, s in enumerate(steps):
            if s.cluster == cluster and s.tcb in wanted:
                first = k
                break
        out.extend(str(s) for s in steps[first:])
        out.append(str(graph.pending[pid]))
    return out
