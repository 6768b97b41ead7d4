"""Implicit pids and levels for SimPy requests: which task tree a process belongs to.

A request made without a pid names the calling process's *task tree* (its
pid) and goes one level below the deepest TCB that process, or the chain of
processes waiting on it, holds on any depth resource of the same environment
(patent [0038]: each nested call is one level deeper). A sub-process joins its
parent's tree when the parent is already waiting on it (``yield
env.process(...)`` or a condition of it) by the time the sub-process makes its
first request; one started earlier and waited on later starts a tree of its
own.

Every depth resource of one environment shares one :class:`Family`, so the
levels a process holds on one resource count on the others.
"""

from __future__ import annotations

import bisect
import weakref

import simpy
from simpy.events import Event, Process

__all__ = ["Family", "Task", "Tree", "family_of"]


class Tree:
    """A tree of processes that share one pid (implicit requests)."""

    __slots__ = ("pid", "live", "busy")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.live = 0  # registered processes not yet finished
        self.busy = 0  # implicit requests pending or holding their TCB, on every resource


class Task:
    """One process's place in its tree: its base level and the levels it holds."""

    __slots__ = ("tree", "base", "levels")

    def __init__(self, tree: Tree, base: int) -> None:
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


class Family:
    """Implicit-request state shared by every depth resource of one environment.

    Invariant: a tree keeps its pid while a process of it is registered or a
    request of it pends or holds a TCB (``live + busy > 0``); then the pid is
    recycled, last freed first.
    """

    def __init__(self) -> None:
        self.tasks: dict[Process, Task] = {}
        self._free: list[int] = []
        self._next = 0

    def register(self, proc: Process) -> Task:
        """Give ``proc`` its task: in the tree of the process waiting on it, or a new tree."""
        parent = self._waiting_parent(proc)
        if parent is None:
            task = Task(Tree(self.new_pid()), 0)
        else:
            task = Task(parent.tree, parent.top())
        tree = task.tree
        if tree.pid < 0:  # a finished tree revived by a late process
            tree.pid = self.new_pid()
        tree.live += 1  # so the tree keeps its pid while this process is registered
        self.tasks[proc] = task
        proc.callbacks.append(self._on_exit)  # runs when the process ends
        return task

    def orphan(self) -> Task:
        """A task of its own for a request made outside any process (a tree of one request)."""
        return Task(Tree(self.new_pid()), 0)

    def new_pid(self) -> int:
        """A free pid: the last one recycled, else a fresh one."""
        if self._free:
            return self._free.pop()
        pid = self._next
        self._next += 1
        return pid

    def _waiting_parent(self, proc: Process) -> Task | None:
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

    def done(self, task: Task) -> None:
        """One request of ``task``'s tree is over (released or cancelled)."""
        tree = task.tree
        tree.busy -= 1
        if tree.live == 0:
            self.maybe_recycle(tree)

    def maybe_recycle(self, tree: Tree) -> None:
        """Free the tree's pid once no process of it lives and it holds and waits for nothing.

        A tree whose processes ended while holding a TCB keeps its pid, so the
        leaked TCB is never taken for a new tree's.
        """
        if tree.live == 0 and tree.busy == 0 and tree.pid >= 0:
            self._free.append(tree.pid)
            tree.pid = -1


_families: weakref.WeakKeyDictionary[simpy.Environment, Family] = weakref.WeakKeyDictionary()


def family_of(env: simpy.Environment) -> Family:
    """The family shared by the depth resources of ``env``."""
    fam = _families.get(env)
    if fam is None:
        fam = _families[env] = Family()
    return fam
