"""DepthPoolExecutor: a thread pool where nested submit-and-wait cannot deadlock.

``ThreadPoolExecutor(N)`` deadlocks as soon as N running tasks each submit a
subtask and wait for it: every thread waits and none is left to run the
subtasks. :class:`DepthPoolExecutor` keeps the thread bound (one worker thread
per TCB of a depth-pool allocator, never more) and reserves workers per
nesting level, as the patent reserves TCBs per depth level ([0019]-[0022]):

* a top-level ``submit`` starts a new *task tree*; its pid names the tree and
  its task runs at level 1;
* a ``submit`` made from inside a task at level d asks for a TCB at level d+1
  of the same tree (``acquire(pid, depth=d + 1)``, local: the executor is one
  node, a level is a nesting depth; [0038]);
* a ``submit`` from inside a task at the deepest level D runs the function
  inline, in the caller, and returns a completed future.

A task at level d waits only on work at levels > d, and level D waits on
nothing, so by induction every task completes, provided every level has at
least one pool (checked at construction).

The allocator is shared by the worker threads and the submitting threads; a
:class:`LockedAllocator` guards it.
"""

from __future__ import annotations

import contextvars
import itertools
import queue
import threading
import weakref
from concurrent.futures import Executor, Future
from typing import Any, Callable, Sequence

from pyresv._factory import Allocator, AllocatorFactory, allocator_class
from pyresv.adapters import AllocatorView, WaitBook, materialize_depths
from pyresv.errors import AllocatorError

__all__ = ["DepthPoolExecutor", "LockedAllocator", "current_level"]


class LockedAllocator:
    """An allocator whose every call holds one lock: safe to share between threads.

    ``lock`` is that lock (a plain ``threading.Lock``, not reentrant) and
    ``raw`` the wrapped allocator: code that needs several calls to be atomic
    (release, then take the grants it made) holds ``lock`` and calls ``raw``.
    """

    def __init__(self, allocator: Allocator) -> None:
        self.raw = allocator
        self.lock = threading.Lock()

    @property
    def levels(self) -> int:
        """Number of depth levels D."""
        return self.raw.levels

    @property
    def total(self) -> int:
        """Number of TCBs."""
        return self.raw.total

    @property
    def wake(self) -> str:
        """The wrapped allocator's wake policy (``"deepest"`` if it does not say)."""
        return getattr(self.raw, "wake", "deepest")

    def acquire(self, pid: int, depth: int = 1, remote: bool = False) -> int:
        """``raw.acquire`` under the lock."""
        with self.lock:
            return self.raw.acquire(pid, depth, remote)

    def release(self, tcb: int) -> None:
        """``raw.release`` under the lock."""
        with self.lock:
            self.raw.release(tcb)

    def cancel(self, pid: int) -> int:
        """``raw.cancel`` under the lock."""
        with self.lock:
            return self.raw.cancel(pid)

    def release_all(self, pid: int) -> int:
        """``raw.release_all`` under the lock."""
        with self.lock:
            return self.raw.release_all(pid)  # type: ignore[attr-defined]

    def take_grants(self, tickets: bool = False) -> Any:
        """``raw.take_grants`` under the lock."""
        with self.lock:
            return self.raw.take_grants(tickets)  # type: ignore[call-overload]

    @property
    def last_ticket(self) -> int:
        """``raw.last_ticket`` under the lock."""
        with self.lock:
            return self.raw.last_ticket

    def cancel_request(self, ticket: int) -> bool:
        """``raw.cancel_request`` under the lock."""
        with self.lock:
            return self.raw.cancel_request(ticket)

    def level_of(self, tcb: int) -> int:
        """``raw.level_of`` under the lock."""
        with self.lock:
            return self.raw.level_of(tcb)

    def holder(self, tcb: int) -> int:
        """``raw.holder`` under the lock."""
        with self.lock:
            return self.raw.holder(tcb)

    def pending(self, pid: int | None = None) -> int:
        """``raw.pending`` under the lock."""
        with self.lock:
            return self.raw.pending(pid)

    def stats(self) -> dict[str, Any]:
        """``raw.stats`` under the lock: a consistent snapshot."""
        with self.lock:
            return self.raw.stats()

    def check(self) -> None:
        """``raw.check`` under the lock."""
        with self.lock:
            self.raw.check()

    def acquire_many(self, pids: Any, depths: Any, remote: Any = None) -> Any:
        """``raw.acquire_many`` under the lock."""
        with self.lock:
            return self.raw.acquire_many(pids, depths, remote)  # type: ignore[attr-defined]

    def release_many(self, tcbs: Any) -> None:
        """``raw.release_many`` under the lock."""
        with self.lock:
            self.raw.release_many(tcbs)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"LockedAllocator({self.raw!r})"


# ------------------------------------------------------------------ state
class _Tree:
    """One task tree: its pid and how many of its tasks have not finished."""

    __slots__ = ("pid", "live")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.live = 0


class _Item:
    """One submitted call, waiting for or running on a TCB.

    While it runs, the item itself is the value of the ``_running`` context
    variable: its ``core``, ``tree`` and ``level`` say where nested submits go.
    """

    __slots__ = ("core", "future", "fn", "args", "kwargs", "tree", "level")

    def __init__(
        self, core: _Core, future: Future, fn: Callable, args: tuple, kwargs: dict, tree: _Tree, level: int
    ) -> None:
        self.core = core
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.tree = tree
        self.level = level


_running: contextvars.ContextVar[_Item | None] = contextvars.ContextVar("pyresv_executor_task", default=None)


def current_level() -> int:
    """The nesting level of the DepthPoolExecutor task running here, 0 outside any."""
    ctx = _running.get()
    return 0 if ctx is None else ctx.level


_STOP = None  # sentinel put in a worker's slot to end it


class _Core:
    """The executor's state, shared with its worker threads (they do not keep the executor alive)."""

    def __init__(self, allocator: Allocator, prefix: str) -> None:
        self.locked = LockedAllocator(allocator)
        self.alloc = allocator
        self.lock = self.locked.lock
        self.levels = allocator.levels
        self.book = WaitBook(allocator)
        self.total = allocator.total
        self.slots: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(self.total)]
        self.threads: list[threading.Thread | None] = [None] * self.total
        self.prefix = prefix
        self.free_pids: list[int] = []
        self.next_pid = 0
        self.outstanding = 0  # accepted tasks (not inline) not yet finished
        self.shutdown = False
        self.stopped = False
        self.idle = threading.Condition(self.lock)

    # Called with the lock held -------------------------------------------
    def _new_tree(self) -> _Tree:
        pid = self.free_pids.pop() if self.free_pids else self._fresh_pid()
        return _Tree(pid)

    def _fresh_pid(self) -> int:
        pid = self.next_pid
        self.next_pid += 1
        return pid

    def _hand(self, tcb: int, item: _Item) -> None:
        """Give ``item`` to the worker bound to ``tcb``, starting it on first use."""
        if self.threads[tcb] is None:
            t = threading.Thread(target=_worker, args=(self, tcb), name=f"{self.prefix}-tcb{tcb}")
            self.threads[tcb] = t
            t.start()
        self.slots[tcb].put(item)

    def _task_done(self, tree: _Tree) -> None:
        tree.live -= 1
        if tree.live == 0:  # every task of the tree finished: it holds nothing, recycle its pid
            self.free_pids.append(tree.pid)
        self.outstanding -= 1
        if self.outstanding == 0 and self.shutdown:  # only shutdown waits for idle
            self.idle.notify_all()
            self._stop()

    def _stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            for tcb, t in enumerate(self.threads):
                if t is not None:
                    self.slots[tcb].put(_STOP)

    # Public operations ---------------------------------------------------
    def submit(self, item: _Item) -> None:
        """Queue ``item`` in the allocator; hand it to a worker if served at once."""
        with self.lock:
            tcb = self.alloc.acquire(item.tree.pid, item.level, False)  # raises: nothing changed
            item.tree.live += 1
            self.outstanding += 1
            if tcb >= 0:
                self._hand(tcb, item)
            else:
                self.book.add(item.tree.pid, item.level, item)

    def finish(self, tcb: int, item: _Item) -> tuple[_Item | None, BaseException | None]:
        """Return ``tcb`` after ``item`` ran; start what it was granted to.

        Returns the item granted this same TCB, for the calling worker to run
        next without a round trip through its slot, and the error the
        allocator raised, if any, for ``item``'s future. Errors come only from
        use of the allocator behind the executor's back (through an
        ``allocator_cls`` that kept a handle): the TCB was released already,
        or a grant went to a request the executor did not make. The worker
        reports it and keeps serving; every grant it can match is handed on.
        """
        mine = None
        error: BaseException | None = None
        with self.lock:
            try:
                self.alloc.release(tcb)
            except BaseException as exc:
                error = exc
            for pid, t, ticket in self.alloc.take_grants(tickets=True):
                try:
                    _level, granted = self.book.pop(ticket)
                except KeyError:
                    if error is None:
                        error = AllocatorError(
                            f"grant of TCB {t} to pid {pid} (ticket {ticket}), a request this executor "
                            f"did not make: its allocator was used behind its back"
                        )
                    continue
                if t == tcb:
                    mine = granted
                else:
                    self._hand(t, granted)
            self._task_done(item.tree)
        return mine, error

    def cancel_pending(self) -> list[_Item]:
        """Withdraw every queued item (``shutdown(cancel_futures=True)``)."""
        with self.lock:
            items = [item for _level, item in self.book.drop_all()]
            for item in items:
                self._task_done(item.tree)
        return items


def _worker(core: _Core, tcb: int) -> None:
    """The thread bound to TCB ``tcb``: runs what the allocator grants that TCB."""
    get = core.slots[tcb].get
    finish = core.finish
    while True:
        item = get()
        if item is _STOP:
            return
        while item is not None:
            future = item.future
            if future.set_running_or_notify_cancel():
                token = _running.set(item)
                try:
                    result = item.fn(*item.args, **item.kwargs)
                    exc = None
                except BaseException as e:  # reaches the future, like ThreadPoolExecutor
                    result, exc = None, e
                finally:
                    _running.reset(token)
                # The TCB goes back before the future completes: whoever waits
                # on the result finds the allocator already without this task.
                nxt, error = finish(tcb, item)
                if error is not None and exc is None:
                    exc = error
                if exc is None:
                    future.set_result(result)
                else:
                    future.set_exception(exc)
                    exc = None  # break the traceback -> frame -> exc cycle
                result = None
            else:  # cancelled while queued: just give the TCB back
                nxt, _error = finish(tcb, item)  # a cancelled future has no one to tell
            item = nxt


class DepthPoolExecutor(Executor):
    """A ``concurrent.futures.Executor`` with one worker thread per TCB, per-level reserved.

    Parameters
    ----------
    depths:
        ``(pools, pool_size)`` per nesting level 1..D, as for
        ``DepthPoolAllocator``; each level needs at least one pool. A tree
        owns one pool per level, so ``pool_size`` is how many of one tree's
        tasks run at once at that level; ``pools`` how many trees.
    unreserved:
        TCBs any level may use.
    allocator_cls:
        Called as ``allocator_cls(depths, unreserved)``; default the compiled
        ``pyresv.DepthPoolAllocator`` (``pyresv.reference.DepthPoolAllocator``
        works too).
    thread_name_prefix:
        Worker threads are named ``f"{prefix}-tcb{i}"``; worker ``i`` only ever
        runs tasks holding TCB ``i``.

    Exactly ``allocator.total`` worker threads at most, started on first use.
    Nested submits (from a task of this executor) are accepted after
    ``shutdown`` so accepted trees can finish; top-level ones raise
    ``RuntimeError``.
    """

    def __init__(
        self,
        depths: Sequence[Sequence[int]],
        unreserved: int = 0,
        *,
        allocator_cls: AllocatorFactory | None = None,
        thread_name_prefix: str = "",
    ) -> None:
        if allocator_cls is None:
            allocator_cls = allocator_class("auto")
        depths = materialize_depths(depths)  # read once: the allocator and the check see the same levels
        allocator = allocator_cls(depths, unreserved)
        pools = [int(p) for p, _size in depths]
        for level, p in enumerate(pools, start=1):
            if p < 1:
                raise ValueError(
                    f"depths[{level - 1}] (level {level}) has no pool: nested submits at level "
                    f"{level} could wait forever; give every level at least one pool"
                )
        prefix = thread_name_prefix or f"DepthPoolExecutor-{next(_executor_ids)}"
        self._core = _Core(allocator, prefix)
        _live_cores.add(self._core)
        weakref.finalize(self, _stop_when_idle, self._core)

    @property
    def allocator(self) -> AllocatorView:
        """The executor's allocator, read-only (its queries, under its lock).

        A request or release made behind the executor's back would hand a
        grant to no task, so the calls that change it are not exposed.
        """
        return AllocatorView(self._core.locked)

    @property
    def max_workers(self) -> int:
        """The thread bound: one per TCB."""
        return self._core.total

    @property
    def levels(self) -> int:
        """Nesting levels D; deeper submits run inline."""
        return self._core.levels

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)``; return its future.

        From inside a task at level d of this executor it runs at level d+1 of
        the same tree, or inline (a completed future) when d is the deepest
        level. Raises ``RuntimeError`` for a top-level submit after ``shutdown``.
        """
        core = self._core
        ctx = _running.get()
        if ctx is not None and ctx.core is core:
            level = ctx.level + 1
            if level > core.levels:
                return _run_inline(core, ctx.tree, level, fn, args, kwargs)
            future: Future = Future()
            core.submit(_Item(core, future, fn, args, kwargs, ctx.tree, level))
            return future
        future = Future()
        with core.lock:
            if core.shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            tree = core._new_tree()
            item = _Item(core, future, fn, args, kwargs, tree, 1)
            try:
                tcb = core.alloc.acquire(tree.pid, 1, False)
            except BaseException:
                core.free_pids.append(tree.pid)
                raise
            tree.live = 1
            core.outstanding += 1
            if tcb >= 0:
                core._hand(tcb, item)
            else:
                core.book.add(tree.pid, 1, item)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting top-level work; workers end once every accepted task finished.

        ``cancel_futures`` cancels the tasks still queued for a TCB. ``wait``
        blocks until every task finished and every worker thread ended; it
        raises ``RuntimeError`` when called from a task of this executor with
        ``wait=True`` (it would wait for itself).
        """
        core = self._core
        ctx = _running.get()
        if wait and ctx is not None and ctx.core is core:
            raise RuntimeError("shutdown(wait=True) from inside a task of this executor would wait for itself")
        with core.lock:
            core.shutdown = True
        if cancel_futures:
            for item in core.cancel_pending():
                item.future.cancel()
        with core.lock:
            if core.outstanding == 0:
                core._stop()
            if not wait:
                return
            while core.outstanding:
                core.idle.wait()
            threads = [t for t in core.threads if t is not None]
        for t in threads:
            t.join()

    def __repr__(self) -> str:
        core = self._core
        return (
            f"<DepthPoolExecutor {core.prefix}: {core.total} threads max, {core.levels} levels, "
            f"{core.outstanding} tasks outstanding>"
        )


def _run_inline(core: _Core, tree: _Tree, level: int, fn: Callable, args: tuple, kwargs: dict) -> Future:
    """Below the deepest level: run in the caller, at ``level``, and return a done future."""
    future: Future = Future()
    future.set_running_or_notify_cancel()
    token = _running.set(_Item(core, future, fn, args, kwargs, tree, level))
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)
    finally:
        _running.reset(token)
    return future


_executor_ids = itertools.count()
_live_cores: weakref.WeakSet[_Core] = weakref.WeakSet()


def _stop_when_idle(core: _Core) -> None:
    """The executor was dropped or the interpreter exits: end the workers once idle."""
    with core.lock:
        core.shutdown = True
        if core.outstanding == 0:
            core._stop()


def _python_exit() -> None:
    # Like concurrent.futures.thread: let accepted work finish, then end the workers,
    # before the interpreter joins its non-daemon threads.
    cores = list(_live_cores)
    for core in cores:
        _stop_when_idle(core)
    for core in cores:
        for t in core.threads:
            if t is not None:
                t.join()


if hasattr(threading, "_register_atexit"):
    threading._register_atexit(_python_exit)
else:  # pragma: no cover
    import atexit

    atexit.register(_python_exit)
