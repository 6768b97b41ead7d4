"""Adapters that put a depth-pool allocator under other runtimes.

* :mod:`pyresv.adapters.simpy`: ``DepthResource``, a SimPy resource.
* :mod:`pyresv.adapters.executor`: ``DepthPoolExecutor``, a ``concurrent.futures`` executor.
* :mod:`pyresv.adapters.aio`: ``DepthLimiter``, an asyncio limiter.
* :mod:`pyresv.adapters.dask`: ``DepthClient``, nested Dask tasks; the levels
  are Dask worker resources, so Dask's scheduler does the queueing there.

The first three queue requests in the allocator and learn that a request was served
from the allocator's grants (``take_grants()``). :class:`WaitBook` is the shared
piece that maps each grant ``(pid, tcb)`` back to the waiter the allocator
served, and withdraws one waiter exactly although ``allocator.cancel(pid)``
drops every pending request of the pid.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol

from pyresv._factory import Allocator, AllocatorFactory

__all__ = ["Allocator", "AllocatorFactory", "AllocatorView", "WaitBook", "materialize_depths"]


def materialize_depths(depths: Any) -> Any:
    """``depths`` read once into a list, each level a tuple (an iterator works, as a list does).

    An adapter hands the result to the allocator and then checks it itself, so
    both see the same levels. What cannot be read as a sequence is returned as
    given, for the allocator to refuse with its own message.
    """
    if isinstance(depths, (str, bytes)) or not hasattr(depths, "__iter__"):
        return depths
    return [tuple(d) if hasattr(d, "__iter__") and not isinstance(d, (str, bytes)) else d for d in depths]


class _Queries(Protocol):
    """The read-only part of the allocator contract (what :class:`AllocatorView` forwards)."""

    @property
    def levels(self) -> int: ...

    @property
    def total(self) -> int: ...

    def level_of(self, tcb: int) -> int: ...

    def holder(self, tcb: int) -> int: ...

    def pending(self, pid: int | None = None) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    def check(self) -> None: ...


class AllocatorView:
    """An adapter's allocator, read-only: its queries, none of the calls that change it.

    The adapters own their allocator's state (every pending request has a
    waiter in a :class:`WaitBook`); a request or release made behind their back
    would hand a grant to no waiter. They expose this view instead.
    """

    __slots__ = ("_alloc",)

    def __init__(self, allocator: _Queries) -> None:
        self._alloc = allocator

    @property
    def levels(self) -> int:
        """Number of depth levels D."""
        return self._alloc.levels

    @property
    def total(self) -> int:
        """Number of TCBs."""
        return self._alloc.total

    @property
    def wake(self) -> str:
        """The wake policy for unreserved TCBs."""
        return str(getattr(self._alloc, "wake", "deepest"))

    def level_of(self, tcb: int) -> int:
        """The level of the TCB's pool, 0 for unreserved."""
        return self._alloc.level_of(tcb)

    def holder(self, tcb: int) -> int:
        """The pid holding the TCB, or -1."""
        return self._alloc.holder(tcb)

    def pending(self, pid: int | None = None) -> int:
        """Pending requests, of ``pid`` or of all."""
        return self._alloc.pending(pid)

    def stats(self) -> dict[str, Any]:
        """The allocator's ``stats()``."""
        return self._alloc.stats()

    def check(self) -> None:
        """The allocator's ``check()``: raises ``pyresv.AllocatorError`` on a broken invariant."""
        self._alloc.check()

    def __repr__(self) -> str:
        return f"AllocatorView({self._alloc!r})"


class WaitBook:
    """The pending requests of one allocator, so that grants find their waiters.

    A waiter is any object (a SimPy event, a future, a work item). Each pending
    request is recorded as ``(level, waiter)`` under its pid, in arrival order.

    Which of a pid's requests a grant ``(pid, tcb)`` served follows from the
    allocator contract:

    * a reserved TCB (``level_of(tcb) = e > 0``) serves the pid's oldest request
      at level e: the owner's own waiters are served oldest first (FIG 6A), and
      a pool handed to a seeker serves its requests at e oldest first
      (FIG 6A blocks 608/610);
    * an unreserved TCB (level 0) goes by the wake policy (FIG 6B block 620):
      ``"deepest"`` serves the deepest level that has a waiter, so the pid's
      request at its deepest pending level, oldest first; ``"fifo"`` serves the
      oldest request, so the pid's oldest.

    Invariant: for every pid, the book lists exactly the allocator's pending
    requests of that pid, in the allocator's arrival order.
    """

    __slots__ = ("_alloc", "by_pid", "_wake", "count")

    #: ``pid -> [(level, waiter), ...]`` in arrival order. Hot paths may add an
    #: entry, or take a pid's sole entry, directly, keeping :attr:`count` in step.
    by_pid: dict[int, list[tuple[int, Any]]]

    def __init__(self, allocator: Allocator, wake: str | None = None) -> None:
        self._alloc = allocator
        if wake is None:
            wake = getattr(allocator, "wake", "deepest")
        if wake not in ("deepest", "fifo"):
            raise ValueError(f"wake must be 'deepest' or 'fifo', got {wake!r}")
        self._wake = wake
        self.by_pid = {}
        #: Number of pending requests in the book.
        self.count = 0

    def add(self, pid: int, level: int, waiter: Any) -> None:
        """Record that ``pid``'s request at ``level`` is pending for ``waiter``."""
        entries = self.by_pid.get(pid)
        if entries is None:
            self.by_pid[pid] = [(level, waiter)]
        else:
            entries.append((level, waiter))
        self.count += 1

    def pop(self, pid: int, tcb: int) -> tuple[int, Any]:
        """The ``(level, waiter)`` that the grant ``(pid, tcb)`` served; removed from the book.

        Raises ``KeyError`` naming the pid when the book has no request of it
        (the allocator was used behind the adapter's back).
        """
        entries = self.by_pid.get(pid)
        if entries is None:
            raise KeyError(f"grant of TCB {tcb} to pid {pid}, which has no request in this book")
        if len(entries) == 1:
            del self.by_pid[pid]
            self.count -= 1
            return entries[0]
        i = self._served_index(entries, tcb)
        self.count -= 1
        return entries.pop(i)

    def _served_index(self, entries: list[tuple[int, Any]], tcb: int) -> int:
        level = self._alloc.level_of(tcb)
        if level > 0:
            for i, (lvl, _w) in enumerate(entries):
                if lvl == level:
                    return i
            raise KeyError(f"grant of TCB {tcb} (level {level}) matches no pending request")
        if self._wake == "fifo":
            return 0
        deepest = max(lvl for lvl, _w in entries)
        for i, (lvl, _w) in enumerate(entries):
            if lvl == deepest:
                return i
        raise AssertionError("unreachable")  # pragma: no cover

    def contains(self, pid: int, waiter: Any) -> bool:
        """Whether ``waiter`` still has a pending request of ``pid`` in the book."""
        entries = self.by_pid.get(pid)
        return entries is not None and any(w is waiter for _lvl, w in entries)

    def withdraw(self, pid: int, waiter: Any) -> list[tuple[Any, int]]:
        """Withdraw ``waiter``'s pending request and leave the pid's others pending.

        ``allocator.cancel(pid)`` drops every pending request of the pid, so the
        others are issued again, in their arrival order, at their levels. They
        keep their order among themselves but go behind requests of other pids
        that arrived meanwhile (the price of an exact cancel). Nothing was freed,
        so they pend again; should one be served at once, it is returned as
        ``(waiter, tcb)`` for the caller to hand over. Raises ``KeyError`` when
        the waiter is not in the book.
        """
        entries = self.by_pid.get(pid)
        index = -1
        if entries is not None:
            for i, (_lvl, w) in enumerate(entries):
                if w is waiter:
                    index = i
                    break
        if index < 0:
            raise KeyError(f"pid {pid} has no pending request for {waiter!r}")
        assert entries is not None  # index >= 0: the waiter was found in entries
        del entries[index]
        self.count -= 1
        dropped = self._alloc.cancel(pid)
        if dropped != len(entries) + 1:
            raise RuntimeError(
                f"pid {pid}: allocator cancelled {dropped} requests, book had {len(entries) + 1}"
            )
        if not entries:
            del self.by_pid[pid]
            return []
        served: list[tuple[Any, int]] = []
        keep: list[tuple[int, Any]] = []
        for lvl, w in entries:
            tcb = self._alloc.acquire(pid, lvl, False)  # depth=lvl, local: level lvl
            if tcb >= 0:
                served.append((w, tcb))
                self.count -= 1
            else:
                keep.append((lvl, w))
        if keep:
            self.by_pid[pid] = keep
        else:
            del self.by_pid[pid]
        return served

    def drop_pid(self, pid: int) -> list[tuple[int, Any]]:
        """Cancel every pending request of ``pid``; return their ``(level, waiter)``."""
        entries = self.by_pid.pop(pid, [])
        if entries:
            self._alloc.cancel(pid)
            self.count -= len(entries)
        return entries

    def pids(self) -> list[int]:
        """The pids with pending requests."""
        return list(self.by_pid)

    def entries(self) -> Iterator[tuple[int, int, Any]]:
        """``(pid, level, waiter)`` of every pending request, pid by pid."""
        for pid, entries in self.by_pid.items():
            for lvl, w in entries:
                yield pid, lvl, w

    def __len__(self) -> int:
        return self.count
