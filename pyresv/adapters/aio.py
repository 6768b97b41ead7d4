"""DepthLimiter: an asyncio concurrency limit that nested use cannot deadlock.

``asyncio.Semaphore(N)`` deadlocks when N tasks hold a permit and each waits
for a child task that needs a permit too. :class:`DepthLimiter` hands out the
same number of slots, reserved per nesting level (patent [0019]-[0022])::

    limiter = DepthLimiter([(2, 1), (2, 1)])

    async def child():
        async with limiter.slot():          # level 2 of the parent's tree
            ...

    async def parent():
        async with limiter.slot():          # level 1, a new tree
            await asyncio.gather(child(), child())

The level lives in a context variable. A ``slot()`` entered outside any slot
of this limiter starts a new task tree (its pid) at level 1; one entered inside
a slot at level d, in the same task or in a task created inside that slot
(asyncio copies the context), is at level d+1 of the same tree. Deeper than the
deepest level D, ``slot()`` admits at once without a TCB (the work runs under
its caller's slot), so level D never waits and every level completes.

It runs under anyio too, on both of its backends, and is used the way
``anyio.CapacityLimiter`` is (``async with limiter:``, ``acquire()`` and
``release()``, ``total_tokens``/``borrowed_tokens``/``available_tokens``),
with the same nesting rule: anyio's task groups start their tasks with a copy
of the spawning task's context on asyncio and on trio alike. On an asyncio loop
a waiter is an asyncio future; on any other loop (trio) it is an
``anyio.Event``, imported only then: anyio is needed only to run outside
asyncio.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Callable, Sequence

from pyresv._factory import AllocatorFactory, allocator_class
from pyresv.adapters import AllocatorView, WaitBook, materialize_depths

__all__ = ["DepthLimiter", "Slot"]


class _Tree:
    """A task tree: its pid (-1 while recycled) and its slots held or waiting."""

    __slots__ = ("pid", "active")

    def __init__(self) -> None:
        self.pid = -1
        self.active = 0


class _Held:
    """The value of ``_current`` inside a slot: whose slot, which tree, which level."""

    __slots__ = ("limiter", "tree", "level", "slot")

    def __init__(self, limiter: DepthLimiter, tree: _Tree, level: int, slot: Slot) -> None:
        self.limiter = limiter
        self.tree = tree
        self.level = level
        self.slot = slot


def _anyio() -> Any:
    """anyio, or a ``RuntimeError`` that says it is needed here and how to install it."""
    try:
        import anyio
    except ImportError:
        raise RuntimeError(
            "DepthLimiter outside an asyncio event loop (trio) waits through anyio, which is not "
            "installed: pip install anyio"
        ) from None
    return anyio


class _EventWaiter:
    """A waiter outside asyncio (trio, through anyio): an ``anyio.Event`` and the TCB granted.

    It answers the calls the limiter makes on an asyncio future waiter.
    """

    __slots__ = ("event", "tcb")

    def __init__(self) -> None:
        self.event = _anyio().Event()
        self.tcb = -1

    def set_result(self, tcb: int) -> None:
        self.tcb = tcb
        self.event.set()

    def cancelled(self) -> bool:
        # A cancelled wait takes its request out of the book before anything else
        # runs (trio delivers cancellation at the wait), so no grant finds it gone.
        return False

    def granted(self) -> int:
        return self.tcb


_current: contextvars.ContextVar[_Held | None] = contextvars.ContextVar("pyresv_aio_slot", default=None)


class Slot:
    """One use of a :class:`DepthLimiter`: ``async with limiter.slot() as tcb``.

    ``tcb`` is the TCB id held, or ``None`` below the deepest level. Leaving
    the block returns the TCB; a cancelled wait leaves nothing behind.
    """

    __slots__ = ("_limiter", "_tcb", "_token", "_tree", "level", "_acquired")

    def __init__(self, limiter: DepthLimiter, acquired: bool = False) -> None:
        self._limiter = limiter
        self._acquired = acquired  # entered by limiter.acquire(): limiter.release() may leave it
        self._tcb: int | None = None
        self._token: contextvars.Token | None = None
        self._tree: _Tree | None = None
        #: The level this slot was entered at (0 before entering).
        self.level = 0

    async def __aenter__(self) -> int | None:
        if self._token is not None:
            raise RuntimeError("this slot is already entered; call limiter.slot() for another")
        lim = self._limiter
        held = _current.get()
        if held is not None and held.limiter is lim:
            tree, level = held.tree, held.level + 1
        else:
            tree, level = _Tree(), 1
        self._tree, self.level = tree, level
        if level > lim._levels:
            self._tcb = None  # below the deepest level: runs under the caller's slot
        else:
            self._tcb = await lim._acquire(tree, level)
        self._token = _current.set(_Held(lim, tree, level, self))
        return self._tcb

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._exit()

    def _exit(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            _current.reset(token)
        if self._tcb is not None:
            tcb, self._tcb = self._tcb, None
            self._limiter._release(self._tree, tcb)  # type: ignore[arg-type]


class DepthLimiter:
    """Bounds concurrent work like a semaphore of ``allocator.total`` permits, per level.

    ``async with limiter.slot():`` or, as with ``anyio.CapacityLimiter``,
    ``async with limiter:`` (or ``await limiter.acquire()`` ...
    ``limiter.release()`` in the same task) holds one slot one level below the
    caller's. Runs on asyncio, and on anyio's asyncio and trio backends.

    Parameters
    ----------
    depths:
        ``(pools, pool_size)`` per nesting level 1..D; every level needs a pool.
        A tree owns one pool per level, so ``pool_size`` is how many slots of
        one tree are held at once at that level.
    unreserved:
        Slots any level may use.
    allocator_cls:
        Called as ``allocator_cls(depths, unreserved)``; default the compiled
        ``pyresv.DepthPoolAllocator``.

    Use it from one event loop; it is not thread-safe. ``depths`` is read
    once (an iterator works). Raises ``ValueError`` naming the level that has no
    pool, and the allocator's errors for bad shapes.
    """

    def __init__(
        self,
        depths: Sequence[Sequence[int]],
        unreserved: int = 0,
        *,
        allocator_cls: AllocatorFactory | None = None,
    ) -> None:
        if allocator_cls is None:
            allocator_cls = allocator_class("auto")
        depths = materialize_depths(depths)  # read once: the allocator and the check see the same levels
        self._alloc = allocator_cls(depths, unreserved)
        for level, (pools, _size) in enumerate(depths, start=1):
            if int(pools) < 1:
                raise ValueError(
                    f"depths[{level - 1}] (level {level}) has no pool: nested slots at level "
                    f"{level} could wait forever; give every level at least one pool"
                )
        self._levels = self._alloc.levels
        self._book = WaitBook(self._alloc)
        self._free_pids: list[int] = []
        self._next_pid = 0

    @property
    def allocator(self) -> AllocatorView:
        """The allocator holding the slots (TCBs), read-only: its queries, none of its changes."""
        return AllocatorView(self._alloc)

    @property
    def levels(self) -> int:
        """Number of nesting levels D."""
        return self._levels

    @property
    def total(self) -> int:
        """Number of slots."""
        return self._alloc.total

    def slot(self) -> Slot:
        """A slot one level below the caller's (level 1 outside any slot)."""
        return Slot(self)

    # The anyio.CapacityLimiter way ---------------------------------------
    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.release()

    async def acquire(self) -> None:
        """Hold a slot one level below the caller's until :meth:`release` in the same task."""
        await Slot(self, acquired=True).__aenter__()

    def release(self) -> None:
        """Give back the slot the current task took last with :meth:`acquire` (or ``async with``).

        Raises ``RuntimeError`` when the task holds no slot of this limiter, or
        when its innermost slot is one entered with ``slot()`` (leave that block).
        """
        held = _current.get()
        if held is None or held.limiter is not self:
            raise RuntimeError("this task holds no slot of this limiter to release")
        if not held.slot._acquired:
            raise RuntimeError("the innermost slot of this task was entered with slot(): leave its block instead")
        held.slot._exit()

    @property
    def total_tokens(self) -> int:
        """Slots in all (read-only here: the depth pools fix it)."""
        return self._alloc.total

    @property
    def borrowed_tokens(self) -> int:
        """Slots held now."""
        st = self._alloc.stats()
        return int(sum(st["held"]) + st["unreserved_held"])

    @property
    def available_tokens(self) -> int:
        """Slots free now (a free slot of a level serves only that level)."""
        return self.total_tokens - self.borrowed_tokens

    def __repr__(self) -> str:
        return f"<DepthLimiter {self.total} slots, {self._levels} levels, {len(self._book)} waiting>"

    # ------------------------------------------------------------------
    async def _acquire(self, tree: _Tree, level: int) -> int:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio: trio, through anyio (checked before anything changes)
            loop = None
            _anyio()
        if tree.pid < 0:
            tree.pid = self._free_pids.pop() if self._free_pids else self._fresh_pid()
        try:
            tcb = self._alloc.acquire(tree.pid, level, False)
        except BaseException:
            self._maybe_recycle(tree)
            raise
        tree.active += 1
        if tcb >= 0:
            return tcb
        fut: asyncio.Future[int] | _EventWaiter = loop.create_future() if loop is not None else _EventWaiter()
        ticket = self._book.add(tree.pid, level, fut)
        try:
            if isinstance(fut, _EventWaiter):
                await fut.event.wait()
                return fut.tcb
            return await fut
        except BaseException:
            # Cancelled (or the task is being torn down) while waiting.
            granted = _granted(fut)
            if granted >= 0:
                self._release(tree, granted)  # granted just before: give it back
            else:
                if self._book.contains(ticket):
                    self._book.withdraw(ticket)  # the tree's other waits keep their place
                # else: a grant found the future cancelled and passed the TCB on
                tree.active -= 1
                self._maybe_recycle(tree)
            raise

    def _release(self, tree: _Tree, tcb: int) -> None:
        self._alloc.release(tcb)
        tree.active -= 1
        self._maybe_recycle(tree)
        if self._book.count:
            self._dispatch()

    def _dispatch(self) -> None:
        """Wake the waiters the allocator granted, in grant order."""
        book = self._book
        while True:
            grants = self._alloc.take_grants(tickets=True)
            if not grants:
                return
            passed = []
            for _pid, tcb, ticket in grants:
                _level, fut = book.pop(ticket)
                if fut.cancelled():
                    passed.append(tcb)  # its task left; its cleanup sees it gone from the book
                else:
                    fut.set_result(tcb)
            for tcb in passed:
                self._alloc.release(tcb)

    def _maybe_recycle(self, tree: _Tree) -> None:
        if tree.active == 0 and tree.pid >= 0:
            self._free_pids.append(tree.pid)
            tree.pid = -1

    def _fresh_pid(self) -> int:
        pid = self._next_pid
        self._next_pid += 1
        return pid


def _granted(waiter: asyncio.Future[int] | _EventWaiter) -> int:
    """The TCB a waiter was granted, -1 if none (yet, or its future was cancelled)."""
    if isinstance(waiter, _EventWaiter):
        return waiter.granted()
    return waiter.result() if waiter.done() and not waiter.cancelled() else -1
