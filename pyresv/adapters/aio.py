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
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Callable, Sequence

from pyresv._factory import Allocator, AllocatorFactory, allocator_class
from pyresv.adapters import WaitBook

__all__ = ["DepthLimiter", "Slot"]


class _Tree:
    """A task tree: its pid (-1 while recycled) and its slots held or waiting."""

    __slots__ = ("pid", "active")

    def __init__(self) -> None:
        self.pid = -1
        self.active = 0


class _Held:
    __slots__ = ("limiter", "tree", "level")

    def __init__(self, limiter: DepthLimiter, tree: _Tree, level: int) -> None:
        self.limiter = limiter
        self.tree = tree
        self.level = level


_current: contextvars.ContextVar[_Held | None] = contextvars.ContextVar("pyresv_aio_slot", default=None)


class Slot:
    """One use of a :class:`DepthLimiter`: ``async with limiter.slot() as tcb``.

    ``tcb`` is the TCB id held, or ``None`` below the deepest level. Leaving
    the block returns the TCB; a cancelled wait leaves nothing behind.
    """

    __slots__ = ("_limiter", "_tcb", "_token", "_tree", "level")

    def __init__(self, limiter: DepthLimiter) -> None:
        self._limiter = limiter
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
        self._token = _current.set(_Held(lim, tree, level))
        return self._tcb

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        token, self._token = self._token, None
        if token is not None:
            _current.reset(token)
        if self._tcb is not None:
            tcb, self._tcb = self._tcb, None
            self._limiter._release(self._tree, tcb)  # type: ignore[arg-type]


class DepthLimiter:
    """Bounds concurrent work like a semaphore of ``allocator.total`` permits, per level.

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

    Use it from one event loop; it is not thread-safe.
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
    def allocator(self) -> Allocator:
        """The allocator holding the slots (TCBs)."""
        return self._alloc

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

    def __repr__(self) -> str:
        return f"<DepthLimiter {self.total} slots, {self._levels} levels, {len(self._book)} waiting>"

    # ------------------------------------------------------------------
    async def _acquire(self, tree: _Tree, level: int) -> int:
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
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._book.add(tree.pid, level, fut)
        try:
            return await fut
        except BaseException:
            # Cancelled (or the task is being torn down) while waiting.
            if fut.done() and not fut.cancelled():
                self._release(tree, fut.result())  # granted just before: give it back
            else:
                if self._book.contains(tree.pid, fut):
                    for other, tcb in self._book.withdraw(tree.pid, fut):
                        other.set_result(tcb)  # never expected: nothing was freed
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
            grants = self._alloc.take_grants()
            if not grants:
                return
            passed = []
            for pid, tcb in grants:
                _level, fut = book.pop(pid, tcb)
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
