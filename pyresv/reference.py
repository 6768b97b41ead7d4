"""Pure-Python reference implementation of the depth-pool allocator.

This is the oracle of the differential tests and the baseline of the benchmarks.
It implements exactly the contract of :class:`pyresv.DepthPoolAllocator` (the
Cython core) and is written for clarity, not speed.

Terminology (patent text, paragraphs [0019]-[0035]):

* A *TCB* is one unit resource, named by an integer id ``0 .. total-1``.
* Level ``l`` (1..D) has ``pools`` reserved pools of ``pool_size`` TCBs each
  (FIG 3A-3C). A whole pool is owned by one process at a time ([0029]).
* The *unreserved* pool (122a/122b) holds TCBs anybody may take.
* A request of ``pid`` at ``depth`` is served at level ``depth + 1`` when it
  comes from another cluster (FIG 5A block 502) and at ``depth`` otherwise
  (FIG 5B block 514).

Id layout and tie-breaking (shared with the Cython core so that both hand out
the same ids for the same calls):

* Pools are numbered level-major: level 1's pools first. Pool ``p`` owns the
  contiguous TCB ids ``base[p] .. base[p] + size - 1``; unreserved TCBs come
  after every reserved one.
* Free TCBs of a pool, the free pools of a level and the free unreserved TCBs
  are LIFO stacks that initially pop the lowest id first.
"""

from __future__ import annotations

import operator
from bisect import bisect_right
from collections import deque
from typing import Any, Callable, Iterable, Literal, Sequence, overload

import numpy as np

from pyresv._validate import (
    STATE_VERSION,
    bad_state,
    batch_arrays,
    check_counters,
    int_array,
    as_index,
    read_state,
    request_limit_message,
    SEQ_LIMIT,
    tcb_array,
    validate_shape,
)
from pyresv.errors import PENDING, AllocatorError, QueueFull

__all__ = ["DepthPoolAllocator", "PENDING", "AllocatorError", "QueueFull"]

# A test hook (tests/test_batch_read_once.py), the twin of the core's: called
# right after a batch call has read the caller's arrays (into its private
# copy), before it applies anything; the test writes to those arrays there, as
# a racing thread would. Never set in production.
_batch_read_hook: Callable[[], None] | None = None


def _set_batch_read_hook(hook: Callable[[], None] | None) -> None:
    """Install ``hook()`` (or None): run by every batch call after it read the caller's arrays."""
    global _batch_read_hook
    _batch_read_hook = hook


class _Request:
    """One pending request: ``pid`` asked for one TCB at ``level``."""

    __slots__ = ("pid", "level", "seq", "alive")

    def __init__(self, pid: int, level: int, seq: int) -> None:
        self.pid = pid
        self.level = level
        self.seq = seq
        self.alive = True  # False once granted or cancelled (lazy deletion)

    # Explicit state: pickle protocols 0 and 1 refuse __slots__ classes without it.
    def __getstate__(self) -> tuple[int, int, int, bool]:
        return (self.pid, self.level, self.seq, self.alive)

    def __setstate__(self, state: tuple[int, int, int, bool]) -> None:
        self.pid, self.level, self.seq, self.alive = state


class DepthPoolAllocator:
    """One cluster's resource manager (118a/118b): depth-level reserved pools.

    Parameters
    ----------
    depths:
        One ``(pools, pool_size)`` pair per depth level 1..D; ``pools >= 0``,
        ``pool_size >= 1``.
    unreserved:
        Number of TCBs in the unreserved pool (122a/122b).
    max_processes:
        pids are ints in ``[0, max_processes)``.
    max_waiters:
        At most this many requests pend at once; one more raises
        :class:`~pyresv.QueueFull`.
    wake:
        Who gets a freed unreserved TCB: ``"deepest"`` (highest level, then
        oldest) or ``"fifo"`` (oldest).

    Integer arguments (pids, depths, levels, TCB ids, tickets, the counts
    above) are what ``operator.index`` accepts, bools excepted
    (:func:`pyresv._validate.as_index`), as in the core.

    Raises
    ------
    ValueError
        On any bad argument; the message names it.
    """

    def __init__(
        self,
        depths: Sequence[Sequence[int]],
        unreserved: int = 0,
        *,
        max_processes: int = 65536,
        max_waiters: int = 65536,
        wake: str = "deepest",
    ) -> None:
        levels, unreserved, max_processes, max_waiters = validate_shape(
            depths, unreserved, max_processes, max_waiters, wake
        )
        self._depths = levels
        self._levels = len(levels)
        self._unreserved_n = unreserved
        self._max_processes = max_processes
        self._max_waiters = max_waiters
        self._wake = wake

        # Pools, level-major (FIG 3A..3C). pool_level[p] is 1-based.
        self._pool_level: list[int] = []
        self._pool_base: list[int] = []
        self._pool_size: list[int] = []
        base = 0
        for level, (pools, size) in enumerate(levels, start=1):
            for _ in range(pools):
                self._pool_level.append(level)
                self._pool_base.append(base)
                self._pool_size.append(size)
                base += size
        self._reserved_total = base
        self._total = base + unreserved

        # Free TCB stacks (pop from the end; lowest id pops first).
        self._pool_free: list[list[int]] = [
            list(range(b + s - 1, b - 1, -1))
            for b, s in zip(self._pool_base, self._pool_size)
        ]
        self._unres_free: list[int] = list(range(self._total - 1, base - 1, -1))
        # Free pools per level (stack; lowest pool id pops first).
        self._free_pools: list[list[int]] = [[] for _ in range(self._levels + 1)]
        for p in range(len(self._pool_level) - 1, -1, -1):
            self._free_pools[self._pool_level[p]].append(p)

        self._holder: list[int] = [-1] * self._total
        self._pool_owner: list[int] = [-1] * len(self._pool_level)
        self._owned: dict[tuple[int, int], int] = {}  # (pid, level) -> pool

        # Wait queue: one deque per level in arrival order, one per (pid, level),
        # and one of "seekers" per level (requests of pids owning no pool there).
        self._seq = 0
        self._npending = 0
        self._pending_of: dict[int, int] = {}
        self._by_level: list[deque[_Request]] = [deque() for _ in range(self._levels + 1)]
        self._by_pid_level: dict[tuple[int, int], deque[_Request]] = {}
        self._seekers: list[deque[_Request]] = [deque() for _ in range(self._levels + 1)]
        self._tickets: dict[int, _Request] = {}  # ticket (arrival number) -> pending request
        self._grants: list[tuple[int, int, int]] = []  # (pid, tcb, ticket)
        self._counters = {
            "served_pool": 0,
            "served_unreserved": 0,
            "queued": 0,
            "granted": 0,
            "cancelled": 0,
            "released": 0,
        }

    # ------------------------------------------------------------------ props
    @property
    def levels(self) -> int:
        """Number of depth levels D."""
        return self._levels

    @property
    def total(self) -> int:
        """Number of TCBs, reserved and unreserved."""
        return self._total

    @property
    def depths(self) -> list[tuple[int, int]]:
        """The ``(pools, pool_size)`` of each level, as constructed."""
        return list(self._depths)

    @property
    def unreserved(self) -> int:
        """Number of TCBs in the unreserved pool."""
        return self._unreserved_n

    @property
    def max_processes(self) -> int:
        """pids must be below this."""
        return self._max_processes

    @property
    def max_waiters(self) -> int:
        """Capacity of the wait queue."""
        return self._max_waiters

    @property
    def wake(self) -> str:
        """Wake policy for freed unreserved TCBs."""
        return self._wake

    # ---------------------------------------------------------------- acquire
    def _level_for(self, pid: Any, depth: Any, remote: bool) -> int:
        self._check_pid(pid)
        d = as_index(depth)
        if d is None:
            raise ValueError(f"depth must be an int, got {depth!r}")
        if not 1 <= d <= self._levels:
            raise ValueError(f"depth {d} out of range [1, {self._levels}]")
        level = d + 1 if remote else d
        if level > self._levels:
            raise ValueError(
                f"remote call at depth {d} needs level {level}, "
                f"but there are only {self._levels} levels"
            )
        return level

    def acquire(self, pid: int, depth: int = 1, remote: bool = False) -> int:
        """Ask for one TCB for ``pid``.

        The level is ``depth + 1`` for a call from another cluster
        (``remote=True``, FIG 5A) and ``depth`` otherwise (FIG 5B). Returns the
        TCB id, or :data:`~pyresv.PENDING` when the request was queued; it is
        later served through :meth:`take_grants`.

        Raises ``ValueError`` for a bad pid or depth,
        :class:`~pyresv.QueueFull` when the queue is full and
        :class:`~pyresv.AllocatorError` at the request limit (2**62 requests
        served or queued, ``pyresv._validate.SEQ_LIMIT``); the state is then
        unchanged.
        """
        level = self._level_for(pid, depth, bool(remote))
        return self._acquire(operator.index(pid), level)

    def _acquire(self, pid: int, level: int) -> int:
        c = self._counters
        # The request limit keeps every counter and ticket picklable (SEQ_LIMIT).
        if c["served_pool"] + c["served_unreserved"] + c["queued"] >= SEQ_LIMIT:
            raise AllocatorError(request_limit_message(pid, level))
        pool = self._owned.get((pid, level), -1)
        if pool >= 0:
            # FIG 5B blocks 514/516: the pid's own pool at this level.
            if self._pool_free[pool]:
                tcb = self._pool_free[pool].pop()
                self._holder[tcb] = pid
                self._counters["served_pool"] += 1
                return tcb
        elif self._free_pools[level]:
            # FIG 4 block 400 / FIG 5A block 502 / FIG 5B block 518: a whole pool.
            pool = self._free_pools[level].pop()
            self._pool_owner[pool] = pid
            self._owned[(pid, level)] = pool
            tcb = self._pool_free[pool].pop()
            self._holder[tcb] = pid
            self._counters["served_pool"] += 1
            return tcb
        # FIG 4 block 408 / FIG 5A block 508: the unreserved pool.
        if self._unres_free:
            tcb = self._unres_free.pop()
            self._holder[tcb] = pid
            self._counters["served_unreserved"] += 1
            return tcb
        # FIG 4 block 412 / FIG 5A block 512: wait, keeping arrival order.
        if self._npending >= self._max_waiters:
            raise QueueFull(
                f"wait queue full ({self._max_waiters} requests pending); "
                f"pid {pid} at level {level} not queued"
            )
        req = _Request(pid, level, self._seq)
        self._seq += 1
        self._tickets[req.seq] = req
        self._by_level[level].append(req)
        self._by_pid_level.setdefault((pid, level), deque()).append(req)
        if pool < 0:
            self._seekers[level].append(req)
        self._npending += 1
        self._pending_of[pid] = self._pending_of.get(pid, 0) + 1
        self._counters["queued"] += 1
        return PENDING

    # ------------------------------------------------------------ wait queue
    @staticmethod
    def _head(q: deque[_Request]) -> _Request | None:
        while q and not q[0].alive:
            q.popleft()
        return q[0] if q else None

    def _remove(self, req: _Request) -> None:
        """Mark ``req`` as no longer pending (lazy deletion from the deques)."""
        req.alive = False
        del self._tickets[req.seq]
        self._npending -= 1
        left = self._pending_of[req.pid] - 1
        if left:
            self._pending_of[req.pid] = left
        else:
            del self._pending_of[req.pid]
        key = (req.pid, req.level)
        q = self._by_pid_level[key]
        if self._head(q) is None:
            del self._by_pid_level[key]

    def _grant(self, req: _Request, tcb: int) -> None:
        self._remove(req)
        self._holder[tcb] = req.pid
        self._grants.append((req.pid, tcb, req.seq))
        self._counters["granted"] += 1

    def _oldest_of(self, pid: int, level: int) -> _Request | None:
        q = self._by_pid_level.get((pid, level))
        return self._head(q) if q is not None else None

    def _wake_unreserved(self) -> _Request | None:
        """The request a freed unreserved TCB goes to (FIG 6B block 620)."""
        if self._wake == "deepest":
            for level in range(self._levels, 0, -1):
                req = self._head(self._by_level[level])
                if req is not None:
                    return req
            return None
        best: _Request | None = None
        for level in range(1, self._levels + 1):
            req = self._head(self._by_level[level])
            if req is not None and (best is None or req.seq < best.seq):
                best = req
        return best

    # ---------------------------------------------------------------- release
    def _check_held(self, tcb: Any) -> int:
        t = as_index(tcb)
        if t is None:
            raise AllocatorError(f"TCB {tcb!r} is not an int")
        tcb = t
        if not 0 <= tcb < self._total:
            raise AllocatorError(f"TCB {tcb} is not an id of this allocator (0..{self._total - 1})")
        if self._holder[tcb] < 0:
            raise AllocatorError(f"TCB {tcb} is free: released twice?")
        return tcb

    def release(self, tcb: int) -> None:
        """Return a held TCB (FIG 6A/6B); it may be granted to a waiter at once.

        Raises :class:`~pyresv.AllocatorError` if ``tcb`` is free or not an id
        of this allocator; the state is then unchanged.
        """
        self._release(self._check_held(tcb))

    def _release(self, tcb: int) -> None:
        self._counters["released"] += 1
        self._holder[tcb] = -1
        if tcb >= self._reserved_total:
            # FIG 6B blocks 612-620: an unreserved TCB goes to a waiter if any.
            req = self._wake_unreserved()
            if req is not None:
                self._grant(req, tcb)
            else:
                self._unres_free.append(tcb)
            return
        pool = self._pool_of(tcb)
        level = self._pool_level[pool]
        owner = self._pool_owner[pool]
        # The owner's own waiters at this level come first: the pool is theirs.
        req = self._oldest_of(owner, level)
        if req is not None:
            self._grant(req, tcb)
            return
        # FIG 6A block 602: back to its pool.
        free = self._pool_free[pool]
        free.append(tcb)
        if len(free) < self._pool_size[pool]:
            return
        # FIG 6A blocks 604/606: wholly free, so the pool is disowned ...
        self._pool_owner[pool] = -1
        del self._owned[(owner, level)]
        # ... and blocks 608/610: handed to the oldest waiter without a pool here.
        seeker = self._head_seeker(level)
        if seeker is None:
            self._free_pools[level].append(pool)
            return
        pid = seeker.pid
        self._pool_owner[pool] = pid
        self._owned[(pid, level)] = pool
        # Its requests at this level are now the pool owner's: grant them
        # oldest first while the pool has free TCBs; the rest wait on the pool.
        for req in list(self._by_pid_level[(pid, level)]):
            if not req.alive:
                continue
            if free:
                self._grant(req, free.pop())
            # The rest are no longer seekers: pid owns a pool here now, and
            # _head_seeker skips them (lazy deletion).

    def _head_seeker(self, level: int) -> _Request | None:
        """The oldest pending request at ``level`` of a pid owning no pool there, or None.

        Lazy deletion, as :meth:`_head`: entries leave the seekers deque when
        they reach its head, if granted or cancelled, or if their pid owns a
        pool at ``level`` now (it got one with its requests there pending).
        A pid loses that pool only when it is wholly free, i.e. after its own
        requests there were all served, so no entry becomes a seeker again.
        """
        q = self._seekers[level]
        while q and (not q[0].alive or (q[0].pid, level) in self._owned):
            q.popleft()
        return q[0] if q else None

    def _pool_of(self, tcb: int) -> int:
        # Pools are contiguous and level-major: the last pool whose base is <= tcb.
        return bisect_right(self._pool_base, tcb) - 1

    # ------------------------------------------------------------------ misc
    @property
    def last_ticket(self) -> int:
        """The ticket of the newest request that returned PENDING, or -1 before any.

        Tickets are arrival numbers: unique and increasing per allocator,
        kept by pickling. After :meth:`acquire_many`, the ticket of the
        batch's last queued request.
        """
        return self._seq - 1

    def cancel_request(self, ticket: int) -> bool:
        """Cancel the pending request with this ticket; True if it was pending.

        Other requests keep their place. False when the ticket is not pending
        (granted, cancelled, or never issued). Raises ``ValueError`` for a
        negative ticket or one that is not an int. Cancelling frees nothing,
        so it makes no grant.
        """
        t = as_index(ticket)
        if t is None:
            raise ValueError(f"ticket must be an int, got {ticket!r}")
        if t < 0:
            raise ValueError(f"ticket {t} is negative")
        req = self._tickets.get(t)
        if req is None:
            return False
        self._remove(req)
        self._counters["cancelled"] += 1
        return True

    @overload
    def take_grants(self, tickets: Literal[False] = False) -> list[tuple[int, int]]: ...
    @overload
    def take_grants(self, tickets: Literal[True]) -> list[tuple[int, int, int]]: ...

    def take_grants(self, tickets: bool = False) -> list[tuple[int, int]] | list[tuple[int, int, int]]:
        """Return and clear the grants made to queued requests, oldest first.

        Each is ``(pid, tcb)``, or ``(pid, tcb, ticket)`` with
        ``tickets=True`` (the ticket of the request it served).
        """
        grants, self._grants = self._grants, []
        if tickets:
            return grants
        return [(pid, tcb) for pid, tcb, _ in grants]

    def _check_pid(self, pid: Any) -> int:
        p = as_index(pid)
        if p is None:
            raise ValueError(f"pid must be an int, got {pid!r}")
        pid = p
        if not 0 <= pid < self._max_processes:
            raise ValueError(f"pid {pid} out of range [0, {self._max_processes})")
        return pid

    def cancel(self, pid: int) -> int:
        """Drop every pending request of ``pid``; return how many."""
        pid = self._check_pid(pid)
        n = 0
        for level in range(1, self._levels + 1):
            q = self._by_pid_level.get((pid, level))
            if q is None:
                continue
            for req in list(q):
                if req.alive:
                    self._remove(req)
                    n += 1
        self._counters["cancelled"] += n
        return n

    def release_all(self, pid: int) -> int:
        """Cancel ``pid``'s requests, then release every TCB it holds.

        Reserved TCBs go first, deepest level first, then the unreserved ones
        (owner death, withdraw). Returns how many TCBs were released.
        """
        pid = self._check_pid(pid)
        self.cancel(pid)
        n = 0
        for level in range(self._levels, 0, -1):
            pool = self._owned.get((pid, level), -1)
            if pool < 0:
                continue
            base = self._pool_base[pool]
            for tcb in range(base, base + self._pool_size[pool]):
                if self._holder[tcb] == pid:
                    self._release(tcb)
                    n += 1
        for tcb in range(self._reserved_total, self._total):
            if self._holder[tcb] == pid:
                self._release(tcb)
                n += 1
        return n

    def level_of(self, tcb: int) -> int:
        """The level of the TCB's pool, 0 for an unreserved TCB."""
        tcb = self._check_id(tcb)
        if tcb >= self._reserved_total:
            return 0
        return self._pool_level[self._pool_of(tcb)]

    def holder(self, tcb: int) -> int:
        """The pid holding ``tcb``, or -1 when it is free."""
        return self._holder[self._check_id(tcb)]

    def _check_id(self, tcb: Any) -> int:
        t = as_index(tcb)
        if t is None:
            raise ValueError(f"TCB {tcb!r} is not an int")
        tcb = t
        if not 0 <= tcb < self._total:
            raise ValueError(f"TCB {tcb} is not an id of this allocator (0..{self._total - 1})")
        return tcb

    def pending(self, pid: int | None = None) -> int:
        """Number of pending requests, of ``pid`` or of everybody."""
        if pid is None:
            return self._npending
        return self._pending_of.get(self._check_pid(pid), 0)

    def owned_pool(self, pid: int, level: int) -> int:
        """The pool ``pid`` owns at ``level``, or -1."""
        pid = self._check_pid(pid)
        lv = as_index(level)
        if lv is None:
            raise ValueError(f"level must be an int, got {level!r}")
        if not 1 <= lv <= self._levels:
            raise ValueError(f"level {lv} out of range [1, {self._levels}]")
        return self._owned.get((pid, lv), -1)

    def stats(self) -> dict[str, Any]:
        """A snapshot of plain ints and lists; two equal states compare ``==``."""
        D = self._levels
        free_tcbs = [0] * D
        held_tcbs = [0] * D
        free_pools = [0] * D
        for p, level in enumerate(self._pool_level):
            free = len(self._pool_free[p])
            free_tcbs[level - 1] += free
            held_tcbs[level - 1] += self._pool_size[p] - free
        for level in range(1, D + 1):
            free_pools[level - 1] = len(self._free_pools[level])
        pending = [0] * D
        for level in range(1, D + 1):
            pending[level - 1] = sum(1 for r in self._by_level[level] if r.alive)
        unres_free = len(self._unres_free)
        return {
            "levels": D,
            "total": self._total,
            "free": free_tcbs,
            "held": held_tcbs,
            "free_pools": free_pools,
            "owned_pools": [
                self._depths[level - 1][0] - free_pools[level - 1] for level in range(1, D + 1)
            ],
            "unreserved_free": unres_free,
            "unreserved_held": self._unreserved_n - unres_free,
            "pending": pending,
            "pending_total": self._npending,
            **self._counters,
        }

    # ----------------------------------------------------------------- check
    def check(self) -> None:
        """Verify every invariant; raise :class:`~pyresv.AllocatorError` naming the first that fails."""
        # Every TCB is free (-1) or held by a pid, and pids are in [0, max_processes).
        for t, pid in enumerate(self._holder):
            if not -1 <= pid < self._max_processes:
                raise AllocatorError(f"TCB {t} held by pid {pid}, out of range [0, {self._max_processes})")
        for level in range(1, self._levels + 1):
            for r in self._by_level[level]:
                if r.alive and not 0 <= r.pid < self._max_processes:
                    raise AllocatorError(
                        f"pid {r.pid} waits at level {level}, out of range [0, {self._max_processes})"
                    )
        held_by_pool: dict[int, set[int]] = {}
        for p in range(len(self._pool_level)):
            base, size = self._pool_base[p], self._pool_size[p]
            free = self._pool_free[p]
            if len(set(free)) != len(free) or any(not base <= t < base + size for t in free):
                raise AllocatorError(f"pool {p}: free stack corrupt")
            for t in free:
                if self._holder[t] != -1:
                    raise AllocatorError(f"TCB {t} is on pool {p}'s free stack but held by pid {self._holder[t]}")
            holders = {self._holder[t] for t in range(base, base + size) if self._holder[t] >= 0}
            nheld = sum(1 for t in range(base, base + size) if self._holder[t] >= 0)
            if nheld + len(free) != size:
                raise AllocatorError(f"pool {p}: {nheld} held + {len(free)} free != size {size}")
            owner = self._pool_owner[p]
            if (owner >= 0) != (nheld > 0):
                raise AllocatorError(f"pool {p}: owned by {owner} with {nheld} TCBs held")
            if holders and holders != {owner}:
                raise AllocatorError(f"pool {p} owned by pid {owner} has TCBs held by {sorted(holders)}")
            held_by_pool[p] = holders
            level = self._pool_level[p]
            in_free = p in self._free_pools[level]
            if in_free == (owner >= 0):
                raise AllocatorError(f"pool {p}: owner {owner} but on free-pool stack: {in_free}")
            if owner >= 0 and self._owned.get((owner, level)) != p:
                raise AllocatorError(f"pool {p}: owner {owner} does not list it at level {level}")
        for (pid, level), p in self._owned.items():
            if self._pool_owner[p] != pid or self._pool_level[p] != level:
                raise AllocatorError(f"pid {pid} level {level}: ownership table names pool {p} wrongly")
        for t in self._unres_free:
            if not self._reserved_total <= t < self._total or self._holder[t] != -1:
                raise AllocatorError(f"unreserved free stack holds bad TCB {t}")
        if len(set(self._unres_free)) != len(self._unres_free):
            raise AllocatorError("unreserved free stack has duplicates")
        nheld_unres = sum(1 for t in range(self._reserved_total, self._total) if self._holder[t] >= 0)
        if nheld_unres + len(self._unres_free) != self._unreserved_n:
            raise AllocatorError("unreserved TCBs are neither free nor held")
        # Wait-queue consistency and no lost wake-up.
        alive = [r for level in range(1, self._levels + 1) for r in self._by_level[level] if r.alive]
        if len(alive) != self._npending:
            raise AllocatorError(f"{len(alive)} requests queued but pending count is {self._npending}")
        if self._npending > self._max_waiters:
            raise AllocatorError("more requests pend than max_waiters")
        if len(self._tickets) != len(alive) or any(self._tickets.get(r.seq) is not r for r in alive):
            raise AllocatorError(f"{len(self._tickets)} tickets in the ticket table but {len(alive)} requests pend")
        if alive and self._unres_free:
            raise AllocatorError(
                f"lost wake-up: {len(self._unres_free)} unreserved TCBs free while {len(alive)} requests pend"
            )
        for r in alive:
            pool = self._owned.get((r.pid, r.level), -1)
            if pool < 0:
                if self._free_pools[r.level]:
                    raise AllocatorError(
                        f"lost wake-up: pid {r.pid} waits at level {r.level} with no pool "
                        f"while pool {self._free_pools[r.level][-1]} is free"
                    )
                if r not in self._seekers[r.level]:
                    raise AllocatorError(f"pid {r.pid} waits at level {r.level} without a pool but is not a seeker")
            elif self._pool_free[pool]:
                raise AllocatorError(
                    f"lost wake-up: pid {r.pid} waits at level {r.level} while its pool {pool} has a free TCB"
                )

    # -------------------------------------------------------------- batches
    def acquire_many(
        self,
        pids: Iterable[int],
        depths: Iterable[int],
        remote: Iterable[bool] | None = None,
    ) -> np.ndarray:
        """:meth:`acquire` for each ``(pid, depth, remote)``; an ``int32`` array of results.

        The same as the loop ``[acquire(p, d, r) for ...]``, but all or
        nothing: if a request of the loop would raise, the batch raises that
        error and the state is as before the call. Arguments are validated
        first (``ValueError`` for bad shapes or values; ``pids`` and
        ``depths`` are integer arrays, or object arrays of ints). If the
        queue fills up, :class:`~pyresv.QueueFull` names the request that
        found it full, after the requests before it were undone.
        """
        # Read once (DESIGN §4): batch_arrays copies the caller's arrays; each
        # request is validated and built from that copy in one pass, so a
        # write to the caller's arrays meanwhile changes nothing done here.
        p, d, r = batch_arrays(pids, depths, remote)
        pv = int_array("pids", p).tolist()
        dv = int_array("depths", d).tolist()
        rv = np.asarray(r, dtype=bool).tolist()
        requests: list[tuple[int, int]] = []
        for i, (pid, depth, rem) in enumerate(zip(pv, dv, rv)):
            if not 0 <= pid < self._max_processes:
                raise ValueError(f"pid {p[i]} out of range [0, {self._max_processes})")
            if not 1 <= depth <= self._levels:
                raise ValueError(f"depth {d[i]} out of range [1, {self._levels}]")
            if rem and depth == self._levels:
                raise ValueError(
                    f"remote call at depth {d[i]} needs level {int(d[i]) + 1}, "
                    f"but there are only {self._levels} levels"
                )
            requests.append((pid, depth + 1 if rem else depth))
        if _batch_read_hook is not None:
            _batch_read_hook()
        out = np.empty(len(requests), dtype=np.int32)
        for i, (pid, level) in enumerate(requests):
            try:
                out[i] = self._acquire(pid, level)
            except AllocatorError as exc:  # QueueFull, or the request limit
                # All or nothing (DESIGN §1: the state is unchanged after an
                # error): undo the requests before this one, newest first.
                for j in range(i - 1, -1, -1):
                    self._undo_acquire(*requests[j], int(out[j]))
                raise type(exc)(
                    f"{exc} (request {i} of a batch of {len(requests)}; the batch was undone)"
                ) from None
        return out

    def _undo_acquire(self, pid: int, level: int, tcb: int) -> None:
        """Take back the newest acquire of ``pid`` at ``level``, which returned ``tcb``.

        Exact only when nothing else changed the state since: a batch of
        acquires undone newest first (acquires never grant, so nothing else
        moved). Every pop is pushed back, so the stacks keep their order.
        """
        if tcb == PENDING:
            # Queued: the newest request of all, so at the tail of its deques.
            req = self._by_level[level].pop()
            del self._tickets[req.seq]
            key = (pid, level)
            q = self._by_pid_level[key]
            q.pop()
            if not q:  # created by this request (a live deque is never empty)
                del self._by_pid_level[key]
            seekers = self._seekers[level]
            if seekers and seekers[-1] is req:
                seekers.pop()
            self._npending -= 1
            left = self._pending_of[pid] - 1
            if left:
                self._pending_of[pid] = left
            else:
                del self._pending_of[pid]
            self._seq -= 1
            self._counters["queued"] -= 1
            return
        self._holder[tcb] = -1
        if tcb >= self._reserved_total:
            self._unres_free.append(tcb)
            self._counters["served_unreserved"] -= 1
            return
        pool = self._pool_of(tcb)
        free = self._pool_free[pool]
        free.append(tcb)
        self._counters["served_pool"] -= 1
        if len(free) == self._pool_size[pool]:
            # Wholly free again, so this acquire took the whole pool ([0029]).
            self._pool_owner[pool] = -1
            del self._owned[(pid, level)]
            self._free_pools[level].append(pool)

    def release_many(self, tcbs: Iterable[int]) -> None:
        """:meth:`release` for each TCB, in order.

        All must be held and distinct, else :class:`~pyresv.AllocatorError`
        and nothing is released.
        """
        t, _ = tcb_array(tcbs)  # a private copy (read once, DESIGN §4)
        if _batch_read_hook is not None:
            _batch_read_hook()
        ids = [self._check_held(x) for x in t]
        if len(set(ids)) != len(ids):
            seen: set[int] = set()
            for x in ids:
                if x in seen:
                    raise AllocatorError(f"TCB {x} appears twice in one release_many batch")
                seen.add(x)
        for x in ids:
            self._release(x)

    # ------------------------------------------------------------ pickling
    # The same plain state as the core's (``pyresv._validate``): validated
    # entry by entry on loading, then check()ed; see _rebuild.
    def __reduce__(self) -> tuple[Any, ...]:
        kwargs = {
            "depths": list(self._depths),
            "unreserved": self._unreserved_n,
            "max_processes": self._max_processes,
            "max_waiters": self._max_waiters,
            "wake": self._wake,
        }
        # A subclass's own attributes travel as the pickle's state (set on
        # the rebuilt object); the allocator's are in _state().
        extra = {k: v for k, v in vars(self).items() if k not in _BASE_ATTRS}
        if extra:
            return (_rebuild, (self.__class__, kwargs, self._state()), extra)
        return (_rebuild, (self.__class__, kwargs, self._state()))

    def _state(self) -> dict[str, Any]:
        """The whole state as plain ints and arrays, free-stack order included."""
        alive = sorted(
            (r for level in range(1, self._levels + 1) for r in self._by_level[level] if r.alive),
            key=lambda r: r.seq,
        )
        return {
            "version": STATE_VERSION,
            "holder": np.array(self._holder, dtype=np.int32),
            "pool_nfree": np.array([len(f) for f in self._pool_free], dtype=np.int32),
            "pool_free": np.array([t for f in self._pool_free for t in f], dtype=np.int32),
            "level_free_pools": np.array(
                [len(self._free_pools[lv]) for lv in range(1, self._levels + 1)], dtype=np.int32
            ),
            "free_pools": np.array(
                [p for lv in range(1, self._levels + 1) for p in self._free_pools[lv]], dtype=np.int32
            ),
            "unres_free": np.array(self._unres_free, dtype=np.int32),
            "waiters": np.array([(r.pid, r.level, r.seq) for r in alive], dtype=np.int64).reshape(-1, 3),
            "next_seq": self._seq,
            "grants": np.array(self._grants, dtype=np.int64).reshape(-1, 3),
            "counters": dict(self._counters),
        }

    def _load(self, state: Any) -> None:
        """Replace the (fresh) state by a pickled one: validated, built, checked."""
        st = read_state(state, self._depths, self._unreserved_n, self._max_processes, self._max_waiters)
        self._holder = st["holder"].tolist()
        nfree = st["pool_nfree"].tolist()
        pool_free = st["pool_free"].tolist()
        k = 0
        for p, n in enumerate(nfree):
            self._pool_free[p] = pool_free[k:k + n]
            k += n
        free_pools = st["free_pools"].tolist()
        k = 0
        for lv, n in enumerate(st["level_free_pools"].tolist(), start=1):
            self._free_pools[lv] = free_pools[k:k + n]
            k += n
        self._unres_free = st["unres_free"].tolist()
        # Ownership: the pid holding a pool's TCBs owns it (check() verifies one pid).
        self._pool_owner = [-1] * len(self._pool_level)
        self._owned = {}
        for p, (base, size) in enumerate(zip(self._pool_base, self._pool_size)):
            for t in range(base, base + size):
                if self._holder[t] >= 0:
                    self._pool_owner[p] = self._holder[t]
                    self._owned[(self._holder[t], self._pool_level[p])] = p
                    break
        for pid, level, seq in st["waiters"].tolist():
            req = _Request(pid, level, seq)
            self._by_level[level].append(req)
            self._by_pid_level.setdefault((pid, level), deque()).append(req)
            if (pid, level) not in self._owned:
                self._seekers[level].append(req)
            self._tickets[seq] = req
            self._npending += 1
            self._pending_of[pid] = self._pending_of.get(pid, 0) + 1
        self._seq = st["next_seq"]
        self._grants = [(pid, tcb, seq) for pid, tcb, seq in st["grants"].tolist()]
        self._counters = dict(st["counters"])
        try:
            self.check()
        except AllocatorError as exc:
            raise bad_state(str(exc)) from None
        check_counters(st)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(depths={self.depths}, unreserved={self._unreserved_n}, "
            f"wake={self._wake!r}) pending={self._npending}"
        )


def _rebuild(cls: type[DepthPoolAllocator], kwargs: dict[str, Any], state: Any) -> DepthPoolAllocator:
    """Unpickle: a fresh allocator, then the saved state (validated and checked).

    Fresh for sure: made by this class's ``__init__``, not by ``cls``'s, so
    that a subclass whose ``__init__`` already uses the allocator cannot mix
    what it did into the saved state (the core's ``_rebuild`` does the same).
    """
    obj = cls.__new__(cls)
    DepthPoolAllocator.__init__(obj, **kwargs)
    obj._load(state)
    return obj


#: The attributes of the allocator itself (the rest of an instance's are a subclass's).
_BASE_ATTRS = frozenset(vars(DepthPoolAllocator([(0, 1)])))
