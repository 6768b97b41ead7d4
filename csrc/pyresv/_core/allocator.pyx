# cython: language_level=3
"""The depth-pool allocator in C structs and nogil functions (patent [0019]-[0035]).

One :class:`DepthPoolAllocator` is one cluster's resource manager (118a/118b).
The contract is DESIGN §1; ``pyresv.reference.DepthPoolAllocator`` is its
pure-Python oracle and hands out the same TCB ids for the same calls. The
C-level API (structs, ``dpa_*`` functions, return codes) is documented in
``allocator.pxd``.
"""

cimport cython
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc, PyMem_Realloc
from cpython.number cimport PyIndex_Check, PyNumber_Index
from libc.stdint cimport INT32_MAX, INT64_MAX, INT64_MIN, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.limits cimport LLONG_MAX, LLONG_MIN
from libc.stdlib cimport qsort
from libc.string cimport memcpy, memmove, memset

# C asserts: compiled in only by the checked build (PYRESV_DEBUG=1 drops
# NDEBUG), on the invariants each step relies on. _CHECKED says which build
# this is.
cdef extern from "assert.h":
    void c_assert "assert"(bint condition) noexcept nogil

cdef extern from *:
    """
    #ifdef NDEBUG
    #define PYRESV_CHECKED 0
    #else
    #define PYRESV_CHECKED 1
    #endif
    """
    int PYRESV_CHECKED

import numpy as np

cimport numpy as cnp

cnp.import_array()


from pyresv._validate import (
    COUNTERS,
    as_index,
    STATE_VERSION,
    bad_state,
    batch_arrays,
    check_counters,
    int_array,
    read_state,
    request_limit_message,
    SEQ_LIMIT,
    tcb_array,
    validate_shape,
)
from pyresv.errors import PENDING, AllocatorError, QueueFull

__all__ = ["DepthPoolAllocator", "PENDING", "AllocatorError", "QueueFull"]

# The request limit (pyresv._validate.SEQ_LIMIT), as a C constant for nogil code.
cdef extern from *:
    """
    #define PYRESV_SEQ_LIMIT ((int64_t)1 << 62)
    """
    int64_t PYRESV_SEQ_LIMIT

if PYRESV_SEQ_LIMIT != SEQ_LIMIT:
    raise ImportError("pyresv._core: the C request limit differs from pyresv._validate.SEQ_LIMIT")

#: True in the checked build (bounds checks and C asserts on: PYRESV_DEBUG=1).
_CHECKED = bool(PYRESV_CHECKED)

# A test hook (tests/test_batch_read_once.py): called with the GIL right
# after a batch call has read the caller's arrays, before it validates or
# applies anything. A None check per batch call; never set in production.
cdef object _batch_read_hook = None


def _set_batch_read_hook(hook):
    """Install ``hook()`` (or None): run by every batch call after it read the caller's arrays."""
    global _batch_read_hook
    _batch_read_hook = hook


# Its twin (tests/test_allocator.py): called by check, stats, take_grants and
# pickling while they hold the allocator's _IN_READ mark, i.e. at a point
# where another thread could run (they call numpy, or a gc pass runs Python).
cdef object _read_hook = None


def _set_read_hook(hook):
    """Install ``hook()`` (or None): run by the whole-state reads while they hold their mark."""
    global _read_hook
    _read_hook = hook




# The (pid, level) tables (owned, by_pid_level) are pid-major: one index for both.
cdef inline Py_ssize_t _pl(int32_t levels, proc_t pid, int32_t level) noexcept nogil:
    """Index of ``(pid, level)`` (level 1..levels) in a pid-major table."""
    return <Py_ssize_t>pid * levels + level - 1


# The per-pid rows (pid_unres, owned, q.by_pid_level, q.pid_count) are
# allocated for max_processes pids but set up on first use, one block of
# PID_BLOCK pids at a time: d.pid_ready[pid >> PID_SHIFT] says whether pid's
# block is set up. Rows of a block not set up were never written and are never
# read (its pids hold, own and wait for nothing). Only the pages of the blocks
# in use are touched (a constructor writing all of them took ~2 ms and ~800
# page faults at the default 65,536 pids; setting up every block below a far
# pid took 2.8 s and 430 MB for one acquire at pid 10M).
cdef enum:
    PID_SHIFT = 10
    PID_BLOCK = 1 << PID_SHIFT


cdef void _pid_block_setup(dpa_t* d, Py_ssize_t b) noexcept nogil:
    """Set up the rows of the pids of block ``b`` (not set up yet)."""
    cdef Py_ssize_t lo = b * PID_BLOCK
    cdef Py_ssize_t hi = lo + PID_BLOCK
    c_assert(0 <= lo < d.max_processes and not d.pid_ready[b])
    if hi > d.max_processes:
        hi = d.max_processes
    memset(&d.pid_unres[lo], 0xFF, <size_t>(hi - lo) * sizeof(tcb_t))  # all DPA_NIL
    memset(&d.owned[lo * d.levels], 0xFF, <size_t>(hi - lo) * d.levels * sizeof(pool_t))
    memset(&d.q.by_pid_level[lo * d.levels], 0xFF, <size_t>(hi - lo) * d.levels * sizeof(slot_list_t))
    memset(&d.q.pid_count[lo], 0, <size_t>(hi - lo) * sizeof(int32_t))
    d.pid_ready[b] = 1


cdef inline bint _has_rows(dpa_t* d, proc_t pid) noexcept nogil:
    """Whether ``pid``'s (0 <= pid < max_processes) rows are set up."""
    return d.pid_ready[pid >> PID_SHIFT] != 0


cdef inline void _pid_rows(dpa_t* d, proc_t pid) noexcept nogil:
    """Make sure ``pid`` (0 <= pid < max_processes) has its rows."""
    if d.pid_ready[pid >> PID_SHIFT] == 0:
        _pid_block_setup(d, pid >> PID_SHIFT)


def _pid_blocks_ready(DepthPoolAllocator alloc):
    """A test hook: the blocks of PID_BLOCK pids whose rows are set up, in order."""
    cdef dpa_t* d = &alloc.core
    cdef Py_ssize_t b
    return [b for b in range((d.max_processes + PID_BLOCK - 1) // PID_BLOCK) if d.pid_ready[b]]


# ============================================================== wait queue
# Every pending request is one slot linked in three doubly linked lists, so
# appending and removing are O(1): its level's arrival list (the wake order of
# FIG 6B block 620), its (pid, level) list (the owner's own waiters, served
# first by a TCB of its pool) and, while its pid owns no pool at that level,
# the level's seekers list (who gets a wholly freed pool, FIG 6A block 610).

cdef inline void _list_append(waitq_t* q, slot_t s, slot_list_t* L, int k) noexcept nogil:
    """Link slot ``s`` at the tail of ``L``, one of its lists ``k`` (a WQ_* constant)."""
    c_assert(0 <= s < q.used)
    q.slots[s].prev[k] = L.tail
    q.slots[s].next[k] = DPA_NIL
    if L.tail == DPA_NIL:
        L.head = s
    else:
        q.slots[L.tail].next[k] = s
    L.tail = s


cdef inline void _list_unlink(waitq_t* q, slot_t s, slot_list_t* L, int k) noexcept nogil:
    """Unlink slot ``s`` from ``L``, its list ``k``."""
    cdef slot_t prev = q.slots[s].prev[k]
    cdef slot_t nxt = q.slots[s].next[k]
    c_assert(0 <= s < q.used and prev < q.used and nxt < q.used)
    if prev == DPA_NIL:
        L.head = nxt
    else:
        q.slots[prev].next[k] = nxt
    if nxt == DPA_NIL:
        L.tail = prev
    else:
        q.slots[nxt].prev[k] = prev


# Tickets: a request is named by its arrival number (seq). An open-addressing
# table (linear probing, at most half full) maps a pending request's ticket
# to its slot, so cancelling one request is O(1) on average. An entry holds
# slot + 1 and 0 when empty: the table is calloc'ed. A ticket's home entry is
# ``2 * ticket & mask``: consecutive tickets (arrival numbers) land on every
# other entry, so an empty entry follows each of them and a backward-shift
# deletion stops at once. With ``ticket & mask`` the pending requests sat in
# one contiguous run of entries, which every deletion walked to its end (a
# grant to the head of a queue of n requests probed n entries). Two pending
# tickets share a home only when they are ``(mask + 1) / 2 >= capacity``
# apart; and a run of consecutive tickets stays on consecutive pages (512
# tickets a 4 KB page): a hash that scatters them (tried: Fibonacci) takes a
# page fault per page it touches in a new allocator's table.

cdef inline int64_t _ticket_home(waitq_t* q, seq_t ticket) noexcept nogil:
    """The home entry of ``ticket`` in the ticket table."""
    return <int64_t>((<uint64_t>ticket << 1) & <uint64_t>q.ticket_mask)


cdef inline void _ticket_insert(waitq_t* q, slot_t s) noexcept nogil:
    cdef int64_t i = _ticket_home(q, q.slots[s].seq)
    c_assert(q.npending < q.capacity)  # so the table is at most half full
    while q.by_ticket[i] != 0:
        i = (i + 1) & q.ticket_mask
    q.by_ticket[i] = s + 1


cdef inline void _ticket_remove(waitq_t* q, slot_t s) noexcept nogil:
    """Drop slot ``s`` from the ticket table (backward-shift deletion, no tombstones)."""
    cdef int64_t i = _ticket_home(q, q.slots[s].seq)
    cdef int64_t j, home
    while q.by_ticket[i] != s + 1:
        i = (i + 1) & q.ticket_mask
    j = i
    while True:
        j = (j + 1) & q.ticket_mask
        if q.by_ticket[j] == 0:
            break
        home = _ticket_home(q, q.slots[q.by_ticket[j] - 1].seq)
        # Entry j may move back to i unless its home lies cyclically in (i, j].
        if (i <= j and i < home <= j) or (i > j and (home > i or home <= j)):
            continue
        q.by_ticket[i] = q.by_ticket[j]
        i = j
    q.by_ticket[i] = 0


cdef inline slot_t waitq_find(waitq_t* q, seq_t ticket) noexcept nogil:
    """The slot of the pending request with this ticket, or DPA_NIL."""
    cdef int64_t i = _ticket_home(q, ticket)
    cdef slot_t s = q.by_ticket[i] - 1  # an empty entry (0) reads DPA_NIL
    while s != DPA_NIL:
        if q.slots[s].seq == ticket:
            return s
        i = (i + 1) & q.ticket_mask
        s = q.by_ticket[i] - 1
    return DPA_NIL


def _ticket_runs(DepthPoolAllocator alloc):
    """A test hook: ``(entries, longest run)`` of the ticket table.

    A run is a maximal stretch of occupied entries (cyclic); deleting an
    entry walks to the end of its run, finding one walks at most its run.
    """
    cdef waitq_t* q = &alloc.core.q
    cdef int64_t size = q.ticket_mask + 1, i, start = -1, run = 0, longest = 0, count = 0
    for i in range(size):  # start just after an empty entry (one exists: at most half full)
        if q.by_ticket[i] == 0:
            start = i
            break
    for i in range(1, size + 1):
        if q.by_ticket[(start + i) & q.ticket_mask] != 0:
            count += 1
            run += 1
            if run > longest:
                longest = run
        else:
            run = 0
    return count, longest


def _ticket_entries(DepthPoolAllocator alloc):
    """A test hook: the indices of the ticket table's occupied entries, ascending."""
    cdef waitq_t* q = &alloc.core.q
    cdef int64_t i
    return [i for i in range(q.ticket_mask + 1) if q.by_ticket[i] != 0]


cdef inline slot_t waitq_push(waitq_t* q, proc_t pid, int32_t level, bint seeker) noexcept nogil:
    """Queue a request of ``pid`` at ``level`` at the tail of its lists.

    Returns its slot, or DPA_QUEUE_FULL (nothing changed) when ``capacity``
    requests pend already.
    """
    cdef slot_t s
    cdef waiter_t* w
    if q.npending >= q.capacity:
        return DPA_QUEUE_FULL
    if q.free_head != DPA_NIL:
        s = q.free_head
        q.free_head = q.slots[s].next[WQ_LEVEL]
    else:
        s = q.used
        q.used += 1
    w = &q.slots[s]
    w.seq = q.next_seq
    q.next_seq += 1
    _ticket_insert(q, s)
    w.pid = pid
    w.level = level
    w.seeker = seeker
    _list_append(q, s, &q.by_level[level], WQ_LEVEL)
    _list_append(q, s, &q.by_pid_level[_pl(q.levels, pid, level)], WQ_PID_LEVEL)
    if seeker:
        _list_append(q, s, &q.seekers[level], WQ_SEEKERS)
    else:
        w.prev[WQ_SEEKERS] = DPA_NIL
        w.next[WQ_SEEKERS] = DPA_NIL
    q.npending += 1
    q.level_count[level] += 1
    q.pid_count[pid] += 1
    return s


cdef inline void waitq_unseek(waitq_t* q, slot_t s) noexcept nogil:
    """Take request ``s`` off its level's seekers list (its pid now owns a pool there)."""
    if q.slots[s].seeker:
        _list_unlink(q, s, &q.seekers[q.slots[s].level], WQ_SEEKERS)
        q.slots[s].seeker = 0


cdef inline void waitq_remove(waitq_t* q, slot_t s) noexcept nogil:
    """Unlink request ``s`` from every list and recycle its slot (granted or cancelled)."""
    cdef waiter_t* w = &q.slots[s]
    cdef proc_t pid = w.pid
    cdef int32_t level = w.level
    _ticket_remove(q, s)
    _list_unlink(q, s, &q.by_level[level], WQ_LEVEL)
    _list_unlink(q, s, &q.by_pid_level[_pl(q.levels, pid, level)], WQ_PID_LEVEL)
    waitq_unseek(q, s)
    q.npending -= 1
    q.level_count[level] -= 1
    q.pid_count[pid] -= 1
    w.next[WQ_LEVEL] = q.free_head
    q.free_head = s


cdef inline slot_t waitq_wake(waitq_t* q, int32_t policy) noexcept nogil:
    """The request a freed unreserved TCB goes to (FIG 6B block 620), or DPA_NIL.

    ``DPA_WAKE_DEEPEST``: the oldest request of the highest non-empty level;
    ``DPA_WAKE_FIFO``: the oldest request, the least ``seq`` of the level heads.
    O(levels) either way.
    """
    cdef int32_t level
    cdef slot_t s, best = DPA_NIL
    if q.npending == 0:
        return DPA_NIL
    if policy == DPA_WAKE_DEEPEST:
        for level in range(q.levels, 0, -1):
            s = q.by_level[level].head
            if s != DPA_NIL:
                return s
        return DPA_NIL
    for level in range(1, q.levels + 1):
        s = q.by_level[level].head
        if s != DPA_NIL and (best == DPA_NIL or q.slots[s].seq < q.slots[best].seq):
            best = s
    return best


# ================================================================== grants

cdef int _grants_grow(grants_t* g, Py_ssize_t n) noexcept nogil:
    """Make room for ``n`` more grants: 0, or -1 if out of memory (grants unchanged)."""
    cdef Py_ssize_t live = g.len - g.head
    cdef Py_ssize_t cap = g.cap
    cdef grant_t* buf
    if g.len + n <= g.cap:
        return 0
    if g.head > 0:  # drained from the front: slide down before growing
        memmove(g.buf, g.buf + g.head, live * sizeof(grant_t))
        g.head = 0
        g.len = live
        if live + n <= g.cap:
            return 0
    if cap < 16:
        cap = 16
    while cap < live + n:
        cap *= 2
    buf = <grant_t*>PyMem_RawRealloc(g.buf, <size_t>cap * sizeof(grant_t))
    if buf == NULL:
        return -1
    g.buf = buf
    g.cap = cap
    return 0


cdef int grants_reserve(grants_t* g, Py_ssize_t n) except -1 nogil:
    if _grants_grow(g, n) < 0:
        with gil:
            raise MemoryError(f"cannot grow the grants buffer to {g.len - g.head + n} entries")
    return 0


cdef inline void _grants_push(grants_t* g, proc_t pid, tcb_t tcb, seq_t ticket) noexcept nogil:
    # Room is reserved before every release (cap >= len + npending).
    c_assert(g.len < g.cap)
    g.buf[g.len].pid = pid
    g.buf[g.len].tcb = tcb
    g.buf[g.len].ticket = ticket
    g.len += 1


cdef int dpa_take_grant(dpa_t* d, proc_t* pid, tcb_t* tcb) noexcept nogil:
    cdef seq_t ticket
    return dpa_take_grant_ticket(d, pid, tcb, &ticket)


cdef int dpa_take_grant_ticket(dpa_t* d, proc_t* pid, tcb_t* tcb, seq_t* ticket) noexcept nogil:
    cdef grants_t* g = &d.grants
    if g.head == g.len:
        return 0
    pid[0] = g.buf[g.head].pid
    tcb[0] = g.buf[g.head].tcb
    ticket[0] = g.buf[g.head].ticket
    g.head += 1
    if g.head == g.len:
        g.head = 0
        g.len = 0
    return 1


# ============================================================== allocator

cdef inline pool_t _locate(dpa_t* d, tcb_t tcb, int32_t* level, tcb_t* base) noexcept nogil:
    """Pool of a reserved TCB id; sets its level and the pool's first TCB id. O(levels).

    Branch-free: the level is 1 + the number of levels that end at or before
    ``tcb`` (a loop whose branch depends on the level mispredicts on a random
    pattern), and ``(tcb - base) // size`` is a multiply and a shift (exact
    for 32-bit operands; a division costs more than the rest of a release).
    """
    cdef int32_t l, lv = 1
    cdef level_info_t* L
    cdef pool_t k
    for l in range(1, d.levels):
        lv += tcb >= d.level[l].end
    L = &d.level[lv]
    k = <pool_t>((<uint64_t>(tcb - L.base) * L.size_magic) >> L.size_shift)
    level[0] = lv
    base[0] = L.base + k * L.size
    return L.first_pool + k


cdef void _set_magic(level_info_t* L) noexcept nogil:
    """size_magic and size_shift such that x // size == (x * magic) >> shift for x < 2**32.

    shift = 32 + ceil(log2(size)) and magic = 2**shift // size + 1: the
    error magic * size - 2**shift is below size, so times x < 2**32 it stays
    below 2**shift, and x * magic < 2**31 * 2**33 fits 64 bits.
    """
    cdef int32_t b = 0
    while (<int64_t>1 << b) < L.size:
        b += 1
    L.size_shift = 32 + b
    L.size_magic = ((<uint64_t>1) << L.size_shift) // <uint64_t>L.size + 1


cdef inline tcb_t _pool_base(dpa_t* d, pool_t p, int32_t level) noexcept nogil:
    cdef level_info_t* L = &d.level[level]
    return L.base + (p - L.first_pool) * L.size


cdef inline void _unres_hold(dpa_t* d, tcb_t u, proc_t pid) noexcept nogil:
    """Push unreserved index ``u`` on ``pid``'s list of held unreserved TCBs."""
    cdef tcb_t head = d.pid_unres[pid]
    d.unres_prev[u] = DPA_NIL
    d.unres_next[u] = head
    if head != DPA_NIL:
        d.unres_prev[head] = u
    d.pid_unres[pid] = u


cdef inline void _unres_unhold(dpa_t* d, tcb_t u, proc_t pid) noexcept nogil:
    cdef tcb_t prev = d.unres_prev[u]
    cdef tcb_t nxt = d.unres_next[u]
    if prev == DPA_NIL:
        d.pid_unres[pid] = nxt
    else:
        d.unres_next[prev] = nxt
    if nxt != DPA_NIL:
        d.unres_prev[nxt] = prev


cdef inline tcb_t _pool_pop(dpa_t* d, pool_t p, int32_t level, proc_t pid) noexcept nogil:
    cdef int32_t n = d.pool_nfree[p] - 1
    c_assert(0 <= p < d.npools and 0 <= n < d.level[level].size)
    cdef tcb_t t = d.pool_stack[_pool_base(d, p, level) + n]
    d.pool_nfree[p] = n
    d.holder[t] = pid
    return t


cdef inline void _grant(dpa_t* d, slot_t s, tcb_t tcb) noexcept nogil:
    """Serve queued request ``s`` with ``tcb`` and record the grant."""
    cdef proc_t pid = d.q.slots[s].pid
    cdef seq_t ticket = d.q.slots[s].seq
    waitq_remove(&d.q, s)
    d.holder[tcb] = pid
    if tcb >= d.reserved_total:
        _unres_hold(d, tcb - d.reserved_total, pid)
    _grants_push(&d.grants, pid, tcb, ticket)
    d.granted += 1


cdef inline tcb_t _dpa_acquire(dpa_t* d, proc_t pid, int32_t level) noexcept nogil:
    """Resolve one request; pid and level are valid and pid has its rows (_pid_rows).

    Returns a TCB id, DPA_PENDING (queued), DPA_QUEUE_FULL or DPA_LIMIT
    (nothing changed). The two pool paths are inline (short and branch-light:
    what a caller inlines); the unreserved pool and the wait queue are
    :func:`_acquire_unpooled`.
    """
    cdef pool_t* own = &d.owned[_pl(d.levels, pid, level)]
    cdef pool_t p = own[0]
    cdef level_info_t* L = &d.level[level]
    cdef int32_t n
    cdef tcb_t t
    c_assert(0 <= pid < d.max_processes and _has_rows(d, pid) and 1 <= level <= d.levels)
    # Every counter and ticket is at most the requests served or queued
    # (granted, cancelled <= queued; released <= served + granted), so this
    # one bound keeps every state re-picklable (pyresv._validate.SEQ_LIMIT).
    if d.served_pool + d.served_unreserved + d.queued >= PYRESV_SEQ_LIMIT:
        return DPA_LIMIT
    if p != DPA_NIL:
        # FIG 5B blocks 514/516: a TCB of the pid's own pool at this level.
        n = d.pool_nfree[p] - 1
        if n < 0:
            return _acquire_unpooled(d, pid, level, p)
    else:
        if L.nfree_pools == 0:
            return _acquire_unpooled(d, pid, level, p)
        # FIG 4 block 400, FIG 5A blocks 502/506, FIG 5B blocks 518/522:
        # a whole pool goes to this pid ([0029]). A free pool is wholly free.
        L.nfree_pools -= 1
        p = d.free_pools[L.first_pool + L.nfree_pools]
        own[0] = p
        n = L.size - 1
        c_assert(d.pool_nfree[p] == L.size)
    c_assert(0 <= p - L.first_pool < L.pools and 0 <= n < L.size)
    t = d.pool_stack[L.base + (p - L.first_pool) * L.size + n]
    d.pool_nfree[p] = n
    d.holder[t] = pid
    d.served_pool += 1
    return t


cdef tcb_t _acquire_unpooled(dpa_t* d, proc_t pid, int32_t level, pool_t p) noexcept nogil:
    """The rest of :func:`_dpa_acquire`: no TCB of a pool for pid (``p``: the pool it owns, or DPA_NIL)."""
    cdef tcb_t u = d.unres_free
    if u != DPA_NIL:
        # FIG 4 block 408, FIG 5A block 508: the unreserved pool.
        d.unres_free = d.unres_next[u]
        d.unres_nfree -= 1
        d.holder[d.reserved_total + u] = pid
        _unres_hold(d, u, pid)
        d.served_unreserved += 1
        return d.reserved_total + u
    # FIG 4 block 412, FIG 5A block 512: wait, keeping arrival order.
    if waitq_push(&d.q, pid, level, p == DPA_NIL) == DPA_QUEUE_FULL:
        return DPA_QUEUE_FULL
    d.queued += 1
    return DPA_PENDING


cdef inline void _dpa_release(dpa_t* d, tcb_t tcb) noexcept nogil:
    """Release held ``tcb``; the grants buffer has room for ``npending`` grants.

    Inline, the common case: a reserved TCB while nothing pends, so nobody
    can be granted it (FIG 6A blocks 602-608 with no waiter). Everything
    else is :func:`_release_general`.
    """
    cdef proc_t owner = d.holder[tcb]
    cdef int32_t lv = 1, l, n
    cdef level_info_t* L
    cdef pool_t k
    cdef tcb_t base
    c_assert(0 <= tcb < d.total and 0 <= owner < d.max_processes)
    if d.q.npending != 0 or tcb >= d.reserved_total:
        _release_general(d, tcb)
        return
    d.holder[tcb] = DPA_NIL
    d.released += 1
    # _locate, spelled out so that the level's record is at hand.
    for l in range(1, d.levels):
        lv += tcb >= d.level[l].end
    L = &d.level[lv]
    k = <pool_t>((<uint64_t>(tcb - L.base) * L.size_magic) >> L.size_shift)
    base = L.base + k * L.size
    k += L.first_pool
    # FIG 6A block 602: back to its pool.
    n = d.pool_nfree[k]
    d.pool_stack[base + n] = tcb
    n += 1
    d.pool_nfree[k] = n
    if n == L.size:
        # Blocks 604/606: wholly free, so the pool is disowned; 608: nobody
        # waits, so it goes back on its level's free-pool stack.
        d.owned[_pl(d.levels, owner, lv)] = DPA_NIL
        d.free_pools[L.first_pool + L.nfree_pools] = k
        L.nfree_pools += 1


cdef void _release_general(dpa_t* d, tcb_t tcb) noexcept nogil:
    """Release held ``tcb``, any case (the grants buffer has room for ``npending`` grants)."""
    cdef proc_t owner = d.holder[tcb]
    cdef proc_t pid
    cdef int32_t level = 0
    cdef tcb_t base = 0, u
    cdef pool_t p
    cdef slot_t s, nxt
    cdef level_info_t* L
    c_assert(0 <= tcb < d.total and 0 <= owner < d.max_processes)
    c_assert(d.grants.len + d.q.npending <= d.grants.cap)
    d.holder[tcb] = DPA_NIL
    d.released += 1
    if tcb >= d.reserved_total:
        # FIG 6A block 612, FIG 6B blocks 614-620: a waiter by the wake
        # policy gets the unreserved TCB, else it is free again.
        u = tcb - d.reserved_total
        _unres_unhold(d, u, owner)
        s = waitq_wake(&d.q, d.wake)
        if s != DPA_NIL:
            _grant(d, s, tcb)
        else:
            d.unres_next[u] = d.unres_free
            d.unres_free = u
            d.unres_nfree += 1
        return
    p = _locate(d, tcb, &level, &base)
    # The owner's own waiters at this level come first: the pool is theirs.
    if d.q.level_count[level] != 0:
        s = d.q.by_pid_level[_pl(d.levels, owner, level)].head
        if s != DPA_NIL:
            _grant(d, s, tcb)
            return
    # FIG 6A block 602: back to its pool.
    d.pool_stack[base + d.pool_nfree[p]] = tcb
    d.pool_nfree[p] += 1
    L = &d.level[level]
    if d.pool_nfree[p] < L.size:  # block 604: not wholly free yet
        return
    # Block 606: wholly free, so the pool is disowned ...
    d.owned[_pl(d.levels, owner, level)] = DPA_NIL
    # ... and blocks 608/610: handed to the oldest waiter without a pool here.
    s = d.q.seekers[level].head
    if s == DPA_NIL:
        d.free_pools[L.first_pool + L.nfree_pools] = p
        L.nfree_pools += 1
        return
    pid = d.q.slots[s].pid
    # All of pid's requests at this level were seekers; they are now the pool
    # owner's: granted oldest first while the pool has free TCBs, the rest
    # wait on the pool.
    s = d.q.by_pid_level[_pl(d.levels, pid, level)].head
    while s != DPA_NIL:
        nxt = d.q.slots[s].next[WQ_PID_LEVEL]
        waitq_unseek(&d.q, s)
        if d.pool_nfree[p] > 0:
            d.pool_nfree[p] -= 1
            _grant(d, s, d.pool_stack[base + d.pool_nfree[p]])
        s = nxt
    d.owned[_pl(d.levels, pid, level)] = p


cdef inline int _release_ready(dpa_t* d) noexcept nogil:
    """Room for every grant a release can make (each serves one pending request)."""
    if d.grants.len + d.q.npending <= d.grants.cap:
        return 0
    return _grants_grow(&d.grants, d.q.npending)


cdef inline int _release_held(dpa_t* d, tcb_t tcb) noexcept nogil:
    """Release held ``tcb``: 0, or DPA_NO_MEMORY (the grants buffer could not grow; nothing changed)."""
    # Nothing pending: no grant can follow (and len <= cap always).
    if d.q.npending != 0 and _release_ready(d) < 0:
        return DPA_NO_MEMORY
    _dpa_release(d, tcb)
    return 0


# ------------------------------------------------------------ public C API

cdef tcb_t dpa_try_acquire(dpa_t* d, proc_t pid, int32_t level) noexcept nogil:
    # One unsigned compare each: a negative value wraps to a huge one.
    if <uint32_t>pid >= <uint32_t>d.max_processes or <uint32_t>(<uint32_t>level - 1) >= <uint32_t>d.levels:
        return DPA_BAD_ARG
    _pid_rows(d, pid)
    return _dpa_acquire(d, pid, level)


cdef tcb_t dpa_acquire(dpa_t* d, proc_t pid, int32_t level) except -2 nogil:
    cdef tcb_t t
    if pid < 0 or pid >= d.max_processes:
        with gil:
            raise ValueError(f"pid {pid} out of range [0, {d.max_processes})")
    if level < 1 or level > d.levels:
        with gil:
            raise ValueError(f"level {level} out of range [1, {d.levels}]")
    _pid_rows(d, pid)
    t = _dpa_acquire(d, pid, level)
    if t == DPA_QUEUE_FULL:
        with gil:
            _raise_full(d, pid, level)
    if t == DPA_LIMIT:
        with gil:
            _raise_limit(pid, level)
    return t


cdef inline void _undo_acquire(dpa_t* d, tcb_t t) noexcept nogil:
    """Take back the newest acquire, which returned ``t`` (a TCB id or DPA_PENDING).

    Exact only when nothing else changed the state since: a batch of
    acquires undone newest first (acquires never grant, so nothing else
    moved). Its pid and level come from the state, not from the caller's
    arrays (read once): a TCB's holder and pool, or the newest request.
    Every pop is pushed back (the stacks are LIFO, so their order is
    restored) and every counter rolled back.
    """
    cdef waitq_t* q = &d.q
    cdef slot_t s = DPA_NIL
    cdef int32_t l = 0
    cdef tcb_t base = 0, u
    cdef pool_t p
    cdef proc_t pid
    cdef level_info_t* L
    if t == DPA_PENDING:
        # Queued: the newest request of the whole queue (arrival number
        # next_seq - 1), so the tail of its level's list.
        for l in range(1, d.levels + 1):
            s = q.by_level[l].tail
            if s != DPA_NIL and q.slots[s].seq == q.next_seq - 1:
                break
        waitq_remove(q, s)
        if s == q.used - 1 and q.slots[s].next[WQ_LEVEL] == DPA_NIL:
            # It may have come from the high-water mark: hand it back there
            # (when it came off a one-slot free stack this is the same state
            # up to slot numbering, which nothing observes).
            q.free_head = DPA_NIL
            q.used -= 1
        q.next_seq -= 1
        d.queued -= 1
        return
    pid = d.holder[t]
    d.holder[t] = DPA_NIL
    if t >= d.reserved_total:
        # Back on the unreserved free stack, off the pid's list of held ones.
        u = t - d.reserved_total
        _unres_unhold(d, u, pid)
        d.unres_next[u] = d.unres_free
        d.unres_free = u
        d.unres_nfree += 1
        d.served_unreserved -= 1
        return
    p = _locate(d, t, &l, &base)
    d.pool_stack[base + d.pool_nfree[p]] = t
    d.pool_nfree[p] += 1
    d.served_pool -= 1
    L = &d.level[l]
    if d.pool_nfree[p] == L.size:
        # Wholly free again, so this acquire took the whole pool ([0029]):
        # disown it and push it back on its level's free-pool stack.
        d.owned[_pl(d.levels, pid, l)] = DPA_NIL
        d.free_pools[L.first_pool + L.nfree_pools] = p
        L.nfree_pools += 1


cdef Py_ssize_t dpa_acquire_many(
    dpa_t* d, const proc_t* pids, const int32_t* levels, tcb_t* out, Py_ssize_t n
) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef proc_t pid
    cdef int32_t level
    cdef tcb_t t = 0
    for i in range(n):
        # Each input read once, checked and used (another thread may write them).
        pid = pids[i]
        level = levels[i]
        if pid < 0 or pid >= d.max_processes or level < 1 or level > d.levels:
            t = DPA_BAD_ARG
        else:
            _pid_rows(d, pid)  # not undone: rows set up are no state
            t = _dpa_acquire(d, pid, level)
        if t < DPA_PENDING:
            # All or nothing (DESIGN §1: the state is unchanged after an
            # error): undo the requests before this one, newest first.
            for j in range(i - 1, -1, -1):
                _undo_acquire(d, out[j])
            out[i] = t
            return i
        out[i] = t
    return n


cdef int dpa_try_release(dpa_t* d, tcb_t tcb) noexcept nogil:
    if <uint32_t>tcb >= <uint32_t>d.total or d.holder[tcb] == DPA_NIL:
        return DPA_BAD_ARG
    return _release_held(d, tcb)


cdef Py_ssize_t dpa_release_many(dpa_t* d, const tcb_t* tcbs, Py_ssize_t n, int* code) noexcept nogil:
    cdef Py_ssize_t i, bad = -1, dup = -1
    cdef tcb_t t
    # One pass: every id held (the first that is not is the error) and
    # distinct, by marking each holder negative (-2 - pid); then restore.
    for i in range(n):
        t = tcbs[i]
        if t < 0 or t >= d.total or d.holder[t] == DPA_NIL:
            bad = i
            break
        if d.holder[t] < DPA_NIL:
            if dup < 0:
                dup = i
        else:
            d.holder[t] = -2 - d.holder[t]
    for i in range(n if bad < 0 else bad):
        t = tcbs[i]
        if d.holder[t] < DPA_NIL:
            d.holder[t] = -2 - d.holder[t]
    if bad >= 0:
        code[0] = DPA_BAD_ARG
        return bad
    if dup >= 0:
        code[0] = DPA_DUPLICATE
        return dup
    if _release_ready(d) < 0:
        code[0] = DPA_NO_MEMORY
        return 0
    for i in range(n):
        _dpa_release(d, tcbs[i])
    code[0] = 0
    return n


cdef int dpa_release(dpa_t* d, tcb_t tcb) except -1 nogil:
    cdef int rc = dpa_try_release(d, tcb)
    if rc == DPA_BAD_ARG:
        with gil:
            _raise_bad_release(d, tcb)
    elif rc == DPA_NO_MEMORY:
        with gil:
            raise MemoryError("cannot grow the grants buffer")
    return 0


cdef int32_t dpa_cancel(dpa_t* d, proc_t pid) noexcept nogil:
    cdef int32_t n = 0, level
    cdef slot_t s, nxt
    if pid < 0 or pid >= d.max_processes:
        return DPA_BAD_ARG
    if not _has_rows(d, pid) or d.q.pid_count[pid] == 0:
        return 0
    for level in range(1, d.levels + 1):
        s = d.q.by_pid_level[_pl(d.levels, pid, level)].head
        while s != DPA_NIL:
            nxt = d.q.slots[s].next[WQ_PID_LEVEL]
            waitq_remove(&d.q, s)
            n += 1
            s = nxt
    d.cancelled += n
    return n


cdef int dpa_cancel_request(dpa_t* d, seq_t ticket) noexcept nogil:
    cdef slot_t s
    if ticket < 0:
        return DPA_BAD_ARG
    s = waitq_find(&d.q, ticket)
    if s == DPA_NIL:
        return 0
    # Removing a request frees nothing, so by the no-lost-wake-up invariant
    # no other waiter can now be served: no grant results.
    waitq_remove(&d.q, s)
    d.cancelled += 1
    return 1


cdef seq_t dpa_last_ticket(dpa_t* d) noexcept nogil:
    # Every queued request takes the next arrival number, and an undone
    # batch hands its numbers back: the newest is next_seq - 1.
    return d.q.next_seq - 1


cdef int _cmp_tcb(const void* a, const void* b) noexcept nogil:
    cdef tcb_t x = (<const tcb_t*>a)[0]
    cdef tcb_t y = (<const tcb_t*>b)[0]
    return (x > y) - (x < y)


cdef int32_t dpa_release_all(dpa_t* d, proc_t pid) except -1 nogil:
    cdef int32_t n = 0, level, k = 0, i
    cdef tcb_t u, t, base
    cdef tcb_t* order = NULL
    cdef pool_t p
    if pid < 0 or pid >= d.max_processes:
        with gil:
            raise ValueError(f"pid {pid} out of range [0, {d.max_processes})")
    _pid_rows(d, pid)
    # Get every buffer first, so that running out of memory changes nothing.
    u = d.pid_unres[pid]
    while u != DPA_NIL:
        k += 1
        u = d.unres_next[u]
    if k > 0:
        order = <tcb_t*>PyMem_RawMalloc(<size_t>k * sizeof(tcb_t))
        if order == NULL:
            with gil:
                raise MemoryError(f"release_all({pid}): no memory to order {k} TCBs")
    if _release_ready(d) < 0:
        PyMem_RawFree(order)
        with gil:
            raise MemoryError("cannot grow the grants buffer")
    dpa_cancel(d, pid)
    # Reserved TCBs, deepest level first (a deeper level's work finishes first).
    for level in range(d.levels, 0, -1):
        p = d.owned[_pl(d.levels, pid, level)]
        if p == DPA_NIL:
            continue
        base = _pool_base(d, p, level)
        for t in range(base, base + d.level[level].size):
            if d.holder[t] == pid:
                _dpa_release(d, t)
                n += 1
    # Then the unreserved ones, in id order.
    if k > 0:
        u = d.pid_unres[pid]
        for i in range(k):
            order[i] = u
            u = d.unres_next[u]
        qsort(order, k, sizeof(tcb_t), _cmp_tcb)
        for i in range(k):
            _dpa_release(d, d.reserved_total + order[i])
        n += k
        PyMem_RawFree(order)
    return n


cdef proc_t dpa_holder(dpa_t* d, tcb_t tcb) noexcept nogil:
    if tcb < 0 or tcb >= d.total:
        return DPA_BAD_ARG
    return d.holder[tcb]


cdef int32_t dpa_level_of(dpa_t* d, tcb_t tcb) noexcept nogil:
    cdef int32_t level = 0
    cdef tcb_t base
    if tcb < 0 or tcb >= d.total:
        return DPA_BAD_ARG
    if tcb >= d.reserved_total:
        return 0
    _locate(d, tcb, &level, &base)
    return level


cdef pool_t dpa_pool_of(dpa_t* d, tcb_t tcb) noexcept nogil:
    cdef int32_t level
    cdef tcb_t base
    if tcb < 0 or tcb >= d.total:
        return DPA_BAD_ARG
    if tcb >= d.reserved_total:
        return DPA_NIL
    return _locate(d, tcb, &level, &base)


cdef pool_t dpa_owned_pool(dpa_t* d, proc_t pid, int32_t level) noexcept nogil:
    if pid < 0 or pid >= d.max_processes or level < 1 or level > d.levels:
        return DPA_BAD_ARG
    if not _has_rows(d, pid):
        return DPA_NIL
    return d.owned[_pl(d.levels, pid, level)]


cdef int32_t dpa_pending(dpa_t* d, proc_t pid) noexcept nogil:
    if pid == DPA_NIL:
        return d.q.npending
    if pid < 0 or pid >= d.max_processes:
        return DPA_BAD_ARG
    if not _has_rows(d, pid):
        return 0
    return d.q.pid_count[pid]


# ========================================================= Python helpers

cdef extern from *:
    """
    /* An exact int of one digit (|v| < 2**30, every id in practice) read
       in place: 1 and *out set, else 0 (then take the general path). */
    #if defined(__GNUC__) || defined(__clang__)
    #define PYRESV_LIKELY(x) __builtin_expect(!!(x), 1)
    #else
    #define PYRESV_LIKELY(x) (x)
    #endif
    static inline int pyresv_small_int(PyObject* o, long long* out) {
        if (!PYRESV_LIKELY(PyLong_CheckExact(o))) return 0;
    #if PY_VERSION_HEX >= 0x030C0000
        if (PYRESV_LIKELY(PyUnstable_Long_IsCompact((PyLongObject*)o))) {
            *out = (long long)PyUnstable_Long_CompactValue((PyLongObject*)o);
            return 1;
        }
        return 0;
    #else
        /* Size -1, 0 or 1: the value is size * digit[0] (CPython's own
           medium_value; an int always has one digit allocated). */
        Py_ssize_t size = Py_SIZE(o);
        if (PYRESV_LIKELY((size_t)size + 1U < 3U)) {
            *out = (long long)size * (long long)((PyLongObject*)o)->ob_digit[0];
            return 1;
        }
        return 0;
    #endif
    }
    """
    int pyresv_small_int(object o, long long* out)


cdef extern from *:
    """
    /* The ids a method returns, boxed once (as CPython shares -5..256):
       pyresv_boxed[v + 1] is the int v for -1 (PENDING) <= v < PYRESV_NBOXED. */
    #define PYRESV_NBOXED 1024
    static PyObject* pyresv_boxed[PYRESV_NBOXED + 1];

    static int pyresv_box_init(void) {
        int i;
        if (pyresv_boxed[0] != NULL) return 0;
        for (i = 0; i <= PYRESV_NBOXED; i++) {
            PyObject* o = PyLong_FromLong(i - 1);
            if (o == NULL) return -1;
            pyresv_boxed[i] = o;
        }
        return 0;
    }

    /* A new reference to the int v, or NULL (an exception set). */
    static inline PyObject* pyresv_box(int32_t v) {
        uint32_t i = (uint32_t)v + 1u;
        if (i <= PYRESV_NBOXED) {
            PyObject* o = pyresv_boxed[i];
            Py_INCREF(o);
            return o;
        }
        return PyLong_FromLong(v);
    }
    """
    int pyresv_box_init() except -1
    object pyresv_box(int32_t v)


pyresv_box_init()


cdef inline int _int_arg(object o, long long* out) except -1:
    """Read an int argument: 0 (``*out`` set), 1 (an int beyond long long; ``*out`` is
    LLONG_MAX or LLONG_MIN by its sign) or 2 (not an int).

    The one rule of ``pyresv._validate.as_index``: what ``operator.index``
    accepts, but bools. Small ints are read in place (no call, no reference
    taken); everything else goes to :func:`_int_arg_slow`, through a
    local of its own, so that the caller's variable never has its address
    taken and stays in a register.
    """
    cdef long long v
    cdef int rc
    if pyresv_small_int(o, out):
        return 0
    rc = _int_arg_slow(o, &v)
    out[0] = v
    return rc


cdef int _int_arg_slow(object o, long long* out) except -1:
    cdef int overflow = 0
    out[0] = 0
    if not PyLong_CheckExact(o):
        if isinstance(o, (bool, np.bool_)) or not PyIndex_Check(o):
            return 2
        try:
            o = PyNumber_Index(o)  # e.g. an array of two items has __index__ but refuses
        except TypeError:
            return 2
    out[0] = PyLong_AsLongLongAndOverflow(o, &overflow)
    if overflow:
        # Beyond long long: *out saturates, so a caller learns the sign from
        # it without reading the argument again (an __index__ runs once).
        out[0] = LLONG_MAX if overflow > 0 else LLONG_MIN
        return 1
    return 0


# Messages name the int an argument stands for (as the reference's do).

cdef int _raise_bad_pid(object pid, proc_t max_processes) except -1:
    v = as_index(pid)
    if v is None:
        raise ValueError(f"pid must be an int, got {pid!r}")
    raise ValueError(f"pid {v} out of range [0, {max_processes})")


cdef int _raise_bad_depth(object depth, int32_t levels) except -1:
    v = as_index(depth)
    if v is None:
        raise ValueError(f"depth must be an int, got {depth!r}")
    raise ValueError(f"depth {v} out of range [1, {levels}]")


cdef int _raise_bad_remote(object depth, int32_t levels) except -1:
    v = as_index(depth)
    raise ValueError(
        f"remote call at depth {v} needs level {v + 1}, "
        f"but there are only {levels} levels"
    )


cdef int _raise_full(dpa_t* d, proc_t pid, int32_t level, Py_ssize_t index=-1, Py_ssize_t n=0) except -1:
    msg = f"wait queue full ({d.q.capacity} requests pending); pid {pid} at level {level} not queued"
    if index >= 0:
        msg += f" (request {index} of a batch of {n}; the batch was undone)"
    raise QueueFull(msg)


cdef int _raise_limit(proc_t pid, int32_t level, Py_ssize_t index=-1, Py_ssize_t n=0) except -1:
    msg = request_limit_message(pid, level)
    if index >= 0:
        msg += f" (request {index} of a batch of {n}; the batch was undone)"
    raise AllocatorError(msg)


cdef int _raise_bad_release(dpa_t* d, object tcb) except -1:
    v = as_index(tcb)
    if v is None:
        raise AllocatorError(f"TCB {tcb!r} is not an int")
    if v < 0 or v >= d.total:
        raise AllocatorError(f"TCB {v} is not an id of this allocator (0..{d.total - 1})")
    raise AllocatorError(f"TCB {v} is free: released twice?")


# DepthPoolAllocator._busy: who is using the state while other threads may run.
cdef enum:
    _IDLE = 0
    _IN_BATCH = 1     # a batch runs without the GIL
    _IN_READ = 2      # check/stats/take_grants/pickling, which may let other threads run
                      # (numpy drops the GIL to zero big arrays; a gc pass runs Python code)


cdef inline int _idle(int busy) except -1:
    """The one busy check of every method: AllocatorError unless ``busy`` is _IDLE."""
    if busy:
        _raise_busy(busy)
    return 0


cdef int _raise_busy(int why) except -1:
    if why == _IN_READ:
        raise AllocatorError(
            "allocator is busy: another thread is reading its whole state "
            "(check, stats, take_grants or pickling)"
        )
    raise AllocatorError("allocator is busy: a batch is running on another thread")


cdef inline proc_t _pid_arg(dpa_t* d, object pid) except -2:
    cdef long long v = 0
    if _int_arg(pid, &v) != 0 or v < 0 or v >= d.max_processes:
        _raise_bad_pid(pid, d.max_processes)
    return <proc_t>v


cdef tcb_t _id_arg(dpa_t* d, object tcb) except -2:
    """A TCB id argument of a query: ValueError unless it is an id of this allocator."""
    cdef long long v = 0
    cdef int rc = _int_arg(tcb, &v)
    if rc == 2:
        raise ValueError(f"TCB {tcb!r} is not an int")
    if rc == 1 or v < 0 or v >= d.total:
        raise ValueError(f"TCB {as_index(tcb)} is not an id of this allocator (0..{d.total - 1})")
    return <tcb_t>v


cdef object _int32_copy(const int32_t* src, Py_ssize_t n):
    out = np.empty(n, dtype=np.int32)
    cdef int32_t[::1] view = out
    if n > 0:
        memcpy(&view[0], src, n * sizeof(int32_t))
    return out


cdef void* _alloc(dpa_t* d, Py_ssize_t n, size_t item, bint zero=False) except NULL:
    """PyMem_Malloc (``zero``: PyMem_Calloc) ``n`` items (at least one byte); counts them in ``nbytes``."""
    cdef size_t size = <size_t>n * item
    cdef void* p = PyMem_Calloc(size if size > 0 else 1, 1) if zero else PyMem_Malloc(size if size > 0 else 1)
    if p == NULL:
        raise MemoryError(f"cannot allocate {size} bytes for the allocator")
    d.nbytes += <Py_ssize_t>size
    return p


cdef bint _int_buffer(object obj, Py_buffer* view) except -1:
    """Fill ``view`` if ``obj`` exports a 1-d C-contiguous int32 or int64 buffer; else False.

    The caller releases the view. Anything else (other dtypes, lists,
    strided arrays) takes the converting path.
    """
    cdef const char* f
    if not PyObject_CheckBuffer(obj):
        return False
    try:
        PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
    except (BufferError, TypeError, ValueError):
        return False
    f = view.format
    if f != NULL and (f[0] == b"@" or f[0] == b"="):
        f += 1
    if (view.ndim == 1 and f != NULL and f[1] == 0 and (
            (view.itemsize == 4 and (f[0] == b"i" or (f[0] == b"l" and sizeof(long) == 4)))
            or (view.itemsize == 8 and (f[0] == b"q" or (f[0] == b"l" and sizeof(long) == 8))))):
        return True
    PyBuffer_Release(view)
    return False


cdef bint _bool_buffer(object obj, Py_buffer* view) except -1:
    """Fill ``view`` if ``obj`` exports a 1-d C-contiguous bool buffer; else False."""
    if not PyObject_CheckBuffer(obj):
        return False
    try:
        PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
    except (BufferError, TypeError, ValueError):
        return False
    if view.ndim == 1 and view.itemsize == 1 and view.format != NULL and view.format[0] == b"?" and view.format[1] == 0:
        return True
    PyBuffer_Release(view)
    return False


cdef inline int64_t _int_at(const void* buf, int wide, Py_ssize_t i) noexcept nogil:
    """Item ``i`` of an int64 (``wide``) or int32 array."""
    if wide:
        return (<const int64_t*>buf)[i]
    return (<const int32_t*>buf)[i]


cdef object _shown(int64_t value, object arr, Py_ssize_t i):
    """A refused value for its message: the value read, or arr[i] if it was clipped to int64."""
    if arr is not None and (value == INT64_MAX or value == INT64_MIN):
        return arr[i]
    return value


cdef int _scratch_reserve(DepthPoolAllocator a, Py_ssize_t n) except -1:
    """Make the allocator's scratch buffer hold ``n`` int32 (the private copy of a batch)."""
    cdef int32_t* p
    if n <= a._scratch_cap:
        return 0
    p = <int32_t*>PyMem_Realloc(a._scratch, <size_t>n * sizeof(int32_t))
    if p == NULL:
        raise MemoryError(f"cannot allocate {n * sizeof(int32_t)} bytes for a batch")
    a._scratch = p
    a._scratch_cap = n
    return 0


# ========================================================= the cdef class

cdef class DepthPoolAllocator:
    # The first line of the docstring, up to the "--" line, is the class's
    # __text_signature__ (what inspect.signature reads for a built-in type);
    # Python strips it from __doc__. It must match __cinit__'s signature.
    """DepthPoolAllocator(depths, unreserved=0, *, max_processes=65536, max_waiters=65536, wake='deepest')
--

    One cluster's resource manager (118a/118b): depth-level reserved pools.

    ``depths`` is one ``(pools, pool_size)`` per depth level 1..D
    (``pools >= 0``, ``pool_size >= 1``); ``unreserved`` TCBs anybody may
    take; pids are ints in ``[0, max_processes)``; at most ``max_waiters``
    requests pend at once; ``wake`` says who gets a freed unreserved TCB
    (``"deepest"`` level, then oldest, or ``"fifo"``, the oldest). The
    contract is DESIGN §1 and the TCB ids are those of
    :class:`pyresv.reference.DepthPoolAllocator`. Integer arguments (pids,
    depths, levels, TCB ids, tickets) are what ``operator.index`` accepts,
    bools excepted (``pyresv._validate.as_index``).

    Every array is allocated once here (about 8 bytes per reserved TCB, 12
    per unreserved TCB, 8 per pool, ``12 * D + 8`` per pid and 56 to 64
    per wait-queue slot; see :attr:`nbytes`). Raises ``ValueError`` on a bad
    argument, naming it, and ``MemoryError`` if the arrays do not fit.
    """

    def __cinit__(
        self,
        depths,
        unreserved=0,
        *,
        max_processes=65536,
        max_waiters=65536,
        wake="deepest",
    ):
        cdef dpa_t* d = &self.core
        cdef int32_t l, i
        cdef pool_t p, first = 0
        cdef tcb_t base = 0, b, s, u
        cdef int64_t tsize
        cdef level_info_t* L
        levels, n_unres, n_procs, n_wait = validate_shape(
            depths, unreserved, max_processes, max_waiters, wake
        )
        reserved = sum(pools * size for pools, size in levels)
        npools = sum(pools for pools, _ in levels)
        self._depths = levels
        d.levels = len(levels)
        d.reserved_total = reserved
        d.unreserved = n_unres
        d.total = reserved + n_unres
        d.npools = npools
        d.max_processes = n_procs
        d.wake = DPA_WAKE_DEEPEST if wake == "deepest" else DPA_WAKE_FIFO
        d.nbytes = 0

        # Levels and pools, level-major (FIG 3A-3C).
        d.level = <level_info_t*>_alloc(d, d.levels + 1, sizeof(level_info_t))
        memset(d.level, 0, (d.levels + 1) * sizeof(level_info_t))
        d.pool_nfree = <int32_t*>_alloc(d, npools, sizeof(int32_t))
        d.free_pools = <pool_t*>_alloc(d, npools, sizeof(pool_t))
        d.pool_stack = <tcb_t*>_alloc(d, reserved, sizeof(tcb_t))
        for l in range(1, d.levels + 1):
            L = &d.level[l]
            L.pools = levels[l - 1][0]
            L.size = levels[l - 1][1]
            L.first_pool = first
            L.base = base
            L.end = base + L.pools * L.size
            L.nfree_pools = L.pools
            _set_magic(L)
            for i in range(L.pools):
                # Stacks pop from the top: lowest pool id and lowest TCB id first.
                d.free_pools[first + i] = first + L.pools - 1 - i
                p = first + i
                b = base + i * L.size
                d.pool_nfree[p] = L.size
                for s in range(L.size):
                    d.pool_stack[b + s] = b + L.size - 1 - s
            first += L.pools
            base = L.end

        # TCBs: holders, and the unreserved free stack (122a/122b).
        d.holder = <proc_t*>_alloc(d, d.total, sizeof(proc_t))
        memset(d.holder, 0xFF, d.total * sizeof(proc_t))  # all DPA_NIL
        d.unres_next = <tcb_t*>_alloc(d, n_unres, sizeof(tcb_t))
        d.unres_prev = <tcb_t*>_alloc(d, n_unres, sizeof(tcb_t))
        for u in range(d.unreserved):
            d.unres_next[u] = u + 1 if u + 1 < d.unreserved else DPA_NIL
            d.unres_prev[u] = DPA_NIL
        d.unres_free = 0 if d.unreserved > 0 else DPA_NIL
        d.unres_nfree = d.unreserved

        # Per-pid tables, their rows set up on first use, a block at a time (_pid_rows).
        d.pid_ready = <uint8_t*>_alloc(d, (n_procs + PID_BLOCK - 1) // PID_BLOCK, 1, True)  # none (0)
        d.pid_unres = <tcb_t*>_alloc(d, n_procs, sizeof(tcb_t))
        d.owned = <pool_t*>_alloc(d, <Py_ssize_t>n_procs * d.levels, sizeof(pool_t))

        # The wait queue. Slots are handed out from a high-water mark, so the
        # (large, mostly unused) slot array is never touched up front.
        d.q.capacity = n_wait
        d.q.levels = d.levels
        d.q.used = 0
        d.q.free_head = DPA_NIL
        d.q.npending = 0
        d.q.next_seq = 0
        d.q.slots = <waiter_t*>_alloc(d, n_wait, sizeof(waiter_t))
        tsize = 2
        while tsize < 2 * <int64_t>n_wait:
            tsize *= 2
        d.q.ticket_mask = tsize - 1
        d.q.by_ticket = <slot_t*>_alloc(d, tsize, sizeof(slot_t), True)  # all empty (0)
        d.q.by_level = <slot_list_t*>_alloc(d, d.levels + 1, sizeof(slot_list_t))
        memset(d.q.by_level, 0xFF, (d.levels + 1) * sizeof(slot_list_t))
        d.q.seekers = <slot_list_t*>_alloc(d, d.levels + 1, sizeof(slot_list_t))
        memset(d.q.seekers, 0xFF, (d.levels + 1) * sizeof(slot_list_t))
        d.q.level_count = <int32_t*>_alloc(d, d.levels + 1, sizeof(int32_t))
        memset(d.q.level_count, 0, (d.levels + 1) * sizeof(int32_t))
        d.q.by_pid_level = <slot_list_t*>_alloc(d, <Py_ssize_t>n_procs * d.levels, sizeof(slot_list_t))
        d.q.pid_count = <int32_t*>_alloc(d, n_procs, sizeof(int32_t))

        # Grants: PyMem_Raw* so that a release may grow it without the GIL.
        d.grants.buf = <grant_t*>PyMem_RawMalloc(16 * sizeof(grant_t))
        if d.grants.buf == NULL:
            raise MemoryError("cannot allocate the grants buffer")
        d.grants.cap = 16
        d.grants.head = 0
        d.grants.len = 0

    def __dealloc__(self):
        cdef dpa_t* d = &self.core
        PyMem_Free(d.level)
        PyMem_Free(d.pool_nfree)
        PyMem_Free(d.free_pools)
        PyMem_Free(d.pool_stack)
        PyMem_Free(d.holder)
        PyMem_Free(d.unres_next)
        PyMem_Free(d.unres_prev)
        PyMem_Free(d.pid_ready)
        PyMem_Free(d.pid_unres)
        PyMem_Free(d.owned)
        PyMem_Free(d.q.slots)
        PyMem_Free(d.q.by_level)
        PyMem_Free(d.q.seekers)
        PyMem_Free(d.q.level_count)
        PyMem_Free(d.q.by_pid_level)
        PyMem_Free(d.q.pid_count)
        PyMem_Free(d.q.by_ticket)
        PyMem_RawFree(d.grants.buf)
        PyMem_Free(self._scratch)

    # -------------------------------------------------------------- props
    @property
    def levels(self) -> int:
        """Number of depth levels D."""
        return self.core.levels

    @property
    def total(self) -> int:
        """Number of TCBs, reserved and unreserved."""
        return self.core.total

    @property
    def depths(self) -> list:
        """The ``(pools, pool_size)`` of each level, as constructed."""
        return list(self._depths)

    @property
    def unreserved(self) -> int:
        """Number of TCBs in the unreserved pool."""
        return self.core.unreserved

    @property
    def max_processes(self) -> int:
        """pids must be below this."""
        return self.core.max_processes

    @property
    def max_waiters(self) -> int:
        """Capacity of the wait queue."""
        return self.core.q.capacity

    @property
    def wake(self) -> str:
        """Wake policy for freed unreserved TCBs: ``"deepest"`` or ``"fifo"``."""
        return "deepest" if self.core.wake == DPA_WAKE_DEEPEST else "fifo"

    @property
    def nbytes(self) -> int:
        """Bytes of C arrays this allocator holds (the grants buffer included)."""
        return self.core.nbytes + self.core.grants.cap * sizeof(grant_t) + self._scratch_cap * sizeof(int32_t)

    # ------------------------------------------------------------ acquire
    # acquire and release are built-in methods (binding=False), not Cython
    # function objects: CPython calls a built-in method straight from its
    # eval loop (a specialized call), where a Cython function object goes
    # through a bound method and two vectorcall hops, about 100 instructions
    # a call, more than the rest of either method. The first docstring lines,
    # up to "--", are the __text_signature__ that inspect.signature reads.
    @cython.binding(False)
    @cython.embedsignature(False)
    def acquire(self, pid, depth=1, remote=False):
        """acquire($self, pid, depth=1, remote=False)
--

        Ask for one TCB for ``pid``; the TCB id, or :data:`~pyresv.PENDING` when queued.

        The level is ``depth + 1`` for a call from another cluster
        (``remote=True``, FIG 5A) and ``depth`` otherwise (FIG 5B). A queued
        request is served later through :meth:`take_grants`. Raises
        ``ValueError`` for a bad pid or depth, :class:`~pyresv.QueueFull`
        when the queue is full and :class:`~pyresv.AllocatorError` at the
        request limit (2**62 requests served or queued,
        ``pyresv._validate.SEQ_LIMIT``); the state is then unchanged.
        """
        cdef dpa_t* d = &self.core
        cdef long long p = 0, dep = 0
        cdef int32_t level
        cdef tcb_t t
        # Arguments first (an __index__ or __bool__ may run Python code and
        # let another thread start a batch), then the one flag test, then
        # the state, with nothing in between that could let a thread run.
        # A range check is one unsigned compare (a negative value wraps).
        if _int_arg(pid, &p) != 0 or <uint64_t>p >= <uint64_t>d.max_processes:
            _raise_bad_pid(pid, d.max_processes)
        if _int_arg(depth, &dep) != 0 or <uint64_t>(<uint64_t>dep - 1) >= <uint64_t>d.levels:
            _raise_bad_depth(depth, d.levels)
        level = <int32_t>dep
        if remote is not False and remote:  # the default skips the truth test
            level += 1
            if level > d.levels:
                _raise_bad_remote(depth, d.levels)
        _idle(self._busy)
        _pid_rows(d, <proc_t>p)
        t = _dpa_acquire(d, <proc_t>p, level)  # dpa_try_acquire, the arguments checked above
        if t < DPA_PENDING:  # DPA_QUEUE_FULL or DPA_LIMIT
            if t == DPA_LIMIT:
                _raise_limit(<proc_t>p, level)
            _raise_full(d, <proc_t>p, level)
        return pyresv_box(t)

    @cython.binding(False)
    @cython.embedsignature(False)
    def release(self, tcb):
        """release($self, tcb)
--

        Return a held TCB (FIG 6A/6B); it may be granted to a waiter at once.

        Raises :class:`~pyresv.AllocatorError` if ``tcb`` is free or not an
        id of this allocator; the state is then unchanged.
        """
        cdef dpa_t* d = &self.core
        cdef long long t = 0
        cdef int rc = _int_arg(tcb, &t)
        _idle(self._busy)
        # dpa_try_release, spelled out: not an id, or free (DPA_BAD_ARG) ...
        if rc != 0 or <uint64_t>t >= <uint64_t>d.total or d.holder[t] == DPA_NIL:
            _raise_bad_release(d, tcb)
        # ... or DPA_NO_MEMORY.
        if _release_held(d, <tcb_t>t) != 0:
            raise MemoryError("cannot grow the grants buffer")

    @property
    def last_ticket(self) -> int:
        """The ticket of the newest request that returned PENDING, or -1 before any.

        Tickets are arrival numbers: unique and increasing per allocator,
        kept by pickling. After :meth:`acquire_many`, the ticket of the
        batch's last queued request (the batch's queued requests have the
        consecutive tickets up to it).
        """
        _idle(self._busy)
        return dpa_last_ticket(&self.core)

    def cancel_request(self, ticket):
        """Cancel the pending request with this ticket; True if it was pending.

        Other requests keep their place. False when the ticket is not pending
        (granted, cancelled, or never issued). Raises ``ValueError`` for a
        negative ticket or one that is not an int. Cancelling frees nothing,
        so it makes no grant.
        """
        cdef long long v = 0
        cdef int rc = _int_arg(ticket, &v)
        if rc == 2:
            raise ValueError(f"ticket must be an int, got {ticket!r}")
        # Beyond int64 (rc == 1), v saturated: negative, or never issued.
        if v < 0:
            raise ValueError(f"ticket {as_index(ticket)} is negative")
        _idle(self._busy)
        return dpa_cancel_request(&self.core, <seq_t>v) == 1

    def take_grants(self, tickets=False):
        """Return and clear the grants made to queued requests, oldest first.

        Each is ``(pid, tcb)``, or ``(pid, tcb, ticket)`` with
        ``tickets=True`` (the ticket of the request it served).
        """
        cdef dpa_t* d = &self.core
        cdef grants_t* g = &self.core.grants
        cdef proc_t pid
        cdef tcb_t t
        cdef seq_t ticket
        cdef bint with_tickets = tickets
        cdef Py_ssize_t i
        _idle(self._busy)
        # Under the mark: building the tuples may run a gc pass, and with it
        # another thread.
        self._busy = _IN_READ
        try:
            if _read_hook is not None:
                _read_hook()
            out = [None] * (g.len - g.head)
            for i in range(len(out)):
                dpa_take_grant_ticket(d, &pid, &t, &ticket)
                if with_tickets:
                    out[i] = (pid, t, ticket)
                else:
                    out[i] = (pid, t)
        finally:
            self._busy = _IDLE
        return out

    def cancel(self, pid):
        """Drop every pending request of ``pid``; return how many."""
        cdef proc_t p = _pid_arg(&self.core, pid)
        _idle(self._busy)
        return dpa_cancel(&self.core, p)

    def release_all(self, pid):
        """Cancel ``pid``'s requests, then release every TCB it holds; return how many TCBs.

        Reserved TCBs go first, deepest level first, then the unreserved ones,
        each in id order (owner death, withdraw).
        """
        cdef proc_t p = _pid_arg(&self.core, pid)
        _idle(self._busy)
        return dpa_release_all(&self.core, p)

    def level_of(self, tcb):
        """The level of the TCB's pool, 0 for an unreserved TCB."""
        cdef tcb_t t = _id_arg(&self.core, tcb)
        _idle(self._busy)
        return dpa_level_of(&self.core, t)

    def holder(self, tcb):
        """The pid holding ``tcb``, or -1 when it is free."""
        cdef tcb_t t = _id_arg(&self.core, tcb)
        _idle(self._busy)
        return dpa_holder(&self.core, t)

    def pending(self, pid=None):
        """Number of pending requests, of ``pid`` or of everybody."""
        cdef proc_t p = DPA_NIL  # everybody's
        if pid is not None:
            p = _pid_arg(&self.core, pid)
        _idle(self._busy)
        return dpa_pending(&self.core, p)

    def owned_pool(self, pid, level):
        """The pool ``pid`` owns at ``level``, or -1."""
        cdef proc_t p = _pid_arg(&self.core, pid)
        cdef long long v = 0
        cdef int rc = _int_arg(level, &v)
        if rc == 2:
            raise ValueError(f"level must be an int, got {level!r}")
        if rc == 1 or v < 1 or v > self.core.levels:
            raise ValueError(f"level {as_index(level)} out of range [1, {self.core.levels}]")
        _idle(self._busy)
        return dpa_owned_pool(&self.core, p, <int32_t>v)

    def stats(self):
        """A snapshot of plain ints and lists; two equal states compare ``==``."""
        _idle(self._busy)
        self._busy = _IN_READ
        try:
            if _read_hook is not None:
                _read_hook()
            return _stats(&self.core)
        finally:
            self._busy = _IDLE

    def check(self):
        """Verify every invariant of DESIGN §1 and the internal tables.

        Raises :class:`~pyresv.AllocatorError` naming the first that fails.
        """
        _idle(self._busy)
        self._busy = _IN_READ
        try:
            if _read_hook is not None:
                _read_hook()
            msg = _find_broken(self)
        finally:
            self._busy = _IDLE
        if msg is not None:
            raise AllocatorError(msg)

    # ------------------------------------------------------------ batches
    # Read once (DESIGN §4): a batch copies the caller's arrays into this
    # allocator's scratch buffer in one pass, validating as it goes, and then
    # works on the copy only; another thread writing to those arrays meanwhile
    # changes nothing the batch does. The scratch is used under the _IN_BATCH
    # mark, so no two calls share it.

    def acquire_many(self, pids, depths, remote=None):
        """:meth:`acquire` for each ``(pid, depth, remote)``; an ``int32`` array of results.

        The same as the loop ``[acquire(p, d, r) for ...]``, run without the
        GIL, but all or nothing: if a request of the loop would raise, the
        batch raises that error and the state is as before the call.
        Arguments are validated first (``ValueError`` for bad shapes or
        values; ``pids`` and ``depths`` are integer arrays, or object arrays
        of ints). If the queue fills up, :class:`~pyresv.QueueFull` names the
        request that found it full, after the requests before it were undone.
        Each array is read once; 1-d C-contiguous int32 or int64 arrays (what
        this returns) are read in place, without a conversion.
        """
        cdef dpa_t* d = &self.core
        cdef Py_buffer pb, db, rb
        cdef bint got_p = False, got_d = False, got_r = False, marked = False
        cdef Py_ssize_t i, n, bad = -1
        cdef int why = 0, pw, dw
        cdef int64_t x = 0, y = 0
        cdef int32_t rem
        cdef int32_t* pid_out
        cdef int32_t* lev_out
        cdef const uint8_t* rv = NULL
        cdef int32_t* ov = NULL
        cdef cnp.npy_intp dims
        p = dd = None
        try:
            got_p = _int_buffer(pids, &pb)
            got_d = got_p and _int_buffer(depths, &db)
            if remote is not None and got_d:
                got_r = _bool_buffer(remote, &rb)
            if not (got_d and (remote is None or got_r) and db.shape[0] == pb.shape[0]
                    and (not got_r or rb.shape[0] == pb.shape[0])):
                # The general path: any array-like, converted (a private
                # copy unless it already is a contiguous int64 array).
                if got_r:
                    PyBuffer_Release(&rb)
                    got_r = False
                if got_d:
                    PyBuffer_Release(&db)
                    got_d = False
                if got_p:
                    PyBuffer_Release(&pb)
                    got_p = False
                p, dd, r = batch_arrays(pids, depths, remote)
                got_p = _int_buffer(int_array("pids", p), &pb)
                got_d = _int_buffer(int_array("depths", dd), &db)
                if remote is not None:
                    got_r = _bool_buffer(np.ascontiguousarray(r, dtype=bool), &rb)
                if not (got_p and got_d and (remote is None or got_r)):  # cannot happen
                    raise AllocatorError("acquire_many: could not read the converted arrays")
            n = pb.shape[0]
            pw = pb.itemsize == 8
            dw = db.itemsize == 8
            if got_r:
                rv = <const uint8_t*>rb.buf
            dims = n
            out = cnp.PyArray_EMPTY(1, &dims, cnp.NPY_INT32, 0)  # np.empty(n, np.int32), no Python call
            ov = <int32_t*>cnp.PyArray_DATA(out)
            _idle(self._busy)
            if n == 0:
                return out
            _scratch_reserve(self, 2 * n)
            self._busy = _IN_BATCH
            marked = True
            pid_out = self._scratch
            lev_out = self._scratch + n
            with nogil:
                for i in range(n):
                    x = _int_at(pb.buf, pw, i)
                    y = _int_at(db.buf, dw, i)
                    rem = 0 if rv == NULL else rv[i] != 0
                    if x < 0 or x >= d.max_processes:
                        why = 1
                    elif y < 1 or y > d.levels:
                        why = 2
                    elif y + rem > d.levels:
                        why = 3
                    if why:
                        bad = i
                        break
                    pid_out[i] = <int32_t>x
                    lev_out[i] = <int32_t>(y + rem)
            if _batch_read_hook is not None:
                _batch_read_hook()
            if why:
                self._busy = _IDLE
                marked = False
                if why == 1:
                    _raise_bad_pid(_shown(x, p, bad), d.max_processes)
                if why == 2:
                    _raise_bad_depth(_shown(y, dd, bad), d.levels)
                _raise_bad_remote(_shown(y, dd, bad), d.levels)
            with nogil:
                bad = dpa_acquire_many(d, pid_out, lev_out, ov, n)
            self._busy = _IDLE
            marked = False
            if bad < n:
                if ov[bad] == DPA_LIMIT:
                    _raise_limit(pid_out[bad], lev_out[bad], bad, n)
                if ov[bad] != DPA_QUEUE_FULL:  # cannot happen: validated above
                    raise AllocatorError(f"acquire_many: request {bad} refused with code {ov[bad]}")
                _raise_full(d, pid_out[bad], lev_out[bad], bad, n)
            return out
        finally:
            if marked:  # only the mark this call set (a refused call leaves the other's)
                self._busy = _IDLE
            if got_r:
                PyBuffer_Release(&rb)
            if got_d:
                PyBuffer_Release(&db)
            if got_p:
                PyBuffer_Release(&pb)

    def release_many(self, tcbs):
        """:meth:`release` for each TCB, in order; the loop runs without the GIL.

        All must be held and distinct, else :class:`~pyresv.AllocatorError`
        and nothing is released. The array is read once; a 1-d C-contiguous
        int32 or int64 array is read in place, without a conversion.
        """
        cdef dpa_t* d = &self.core
        cdef Py_buffer tb
        cdef bint got = False, marked = False
        cdef Py_ssize_t i, n, done, oob = -1
        cdef int tw, code = 0
        cdef int64_t x = 0, xoob = 0
        cdef tcb_t* ids
        t = None
        try:
            got = _int_buffer(tcbs, &tb)
            if not got:
                t, tv = tcb_array(tcbs)
                got = _int_buffer(tv, &tb)
                if not got:  # cannot happen
                    raise AllocatorError("release_many: could not read the converted array")
            n = tb.shape[0]
            tw = tb.itemsize == 8
            _idle(self._busy)
            if n == 0:
                return
            _scratch_reserve(self, n)
            self._busy = _IN_BATCH
            marked = True
            ids = self._scratch
            # The private copy (an id out of range becomes -1, the first one
            # kept for its message), then the documented batch on it.
            with nogil:
                for i in range(n):
                    x = _int_at(tb.buf, tw, i)
                    if x < 0 or x >= d.total:
                        if oob < 0:
                            oob = i
                            xoob = x
                        x = DPA_NIL
                    ids[i] = <tcb_t>x
            if _batch_read_hook is not None:
                _batch_read_hook()
            with nogil:
                done = dpa_release_many(d, ids, n, &code)
            if code == DPA_BAD_ARG:
                _raise_bad_release(d, _shown(xoob, t, oob) if done == oob else ids[done])
            if code == DPA_DUPLICATE:
                raise AllocatorError(f"TCB {ids[done]} appears twice in one release_many batch")
            if code == DPA_NO_MEMORY:
                raise MemoryError("cannot grow the grants buffer")
        finally:
            if marked:  # only the mark this call set (a refused call leaves the other's)
                self._busy = _IDLE
            if got:
                PyBuffer_Release(&tb)

    # ----------------------------------------------------------- pickling
    def __reduce__(self):
        _idle(self._busy)
        kwargs = {
            "depths": list(self._depths),
            "unreserved": self.core.unreserved,
            "max_processes": self.core.max_processes,
            "max_waiters": self.core.q.capacity,
            "wake": self.wake,
        }
        self._busy = _IN_READ  # _getstate calls numpy functions written in Python
        try:
            if _read_hook is not None:
                _read_hook()
            state = _getstate(self)
        finally:
            self._busy = _IDLE
        # A subclass's own attributes travel as the pickle's state (set on
        # the rebuilt object); the allocator's are in ``state``.
        extra = getattr(self, "__dict__", None)
        if extra:
            return (_rebuild, (type(self), kwargs, state), dict(extra))
        return (_rebuild, (type(self), kwargs, state))

    def __repr__(self):
        # Never raises: while a batch runs the pending count is not settled.
        pending = "<busy>" if self._busy else self.core.q.npending
        return (
            f"{type(self).__name__}(depths={self.depths}, unreserved={self.core.unreserved}, "
            f"wake={self.wake!r}) pending={pending}"
        )


# ================================================================ pickling

def _rebuild(cls, kwargs, state):
    """Unpickle: a fresh allocator, then the saved state (validated and checked).

    Fresh for sure: made by ``__cinit__`` alone (``cls.__new__``), so that a
    subclass whose ``__init__`` already uses the allocator cannot mix what it
    did into the saved state (the reference's ``_rebuild`` does the same).
    """
    cdef DepthPoolAllocator obj = cls.__new__(cls, **kwargs)
    _setstate(obj, state)
    return obj


cdef dict _getstate(DepthPoolAllocator a):
    """The whole state as plain ints and numpy arrays (free-stack order included)."""
    cdef dpa_t* d = &a.core
    cdef int32_t l
    cdef pool_t p
    cdef Py_ssize_t i, k
    cdef tcb_t u, base
    cdef slot_t s
    cdef level_info_t* L
    cdef int32_t[::1] v32
    cdef int64_t[:, ::1] w
    # Each pool's free stack, bottom to top, concatenated in pool order.
    k = 0
    for p in range(d.npools):
        k += d.pool_nfree[p]
    pool_free = np.empty(k, dtype=np.int32)
    v32 = pool_free
    k = 0
    for l in range(1, d.levels + 1):
        L = &d.level[l]
        for p in range(L.first_pool, L.first_pool + L.pools):
            base = _pool_base(d, p, l)
            for i in range(d.pool_nfree[p]):
                v32[k] = d.pool_stack[base + i]
                k += 1
    # Each level's free-pool stack, bottom to top.
    k = 0
    for l in range(1, d.levels + 1):
        k += d.level[l].nfree_pools
    free_pools = np.empty(k, dtype=np.int32)
    level_free_pools = np.empty(d.levels, dtype=np.int32)
    v32 = free_pools
    k = 0
    for l in range(1, d.levels + 1):
        L = &d.level[l]
        level_free_pools[l - 1] = L.nfree_pools
        for i in range(L.nfree_pools):
            v32[k] = d.free_pools[L.first_pool + i]
            k += 1
    # The unreserved free stack, bottom to top.
    unres_free = np.empty(d.unres_nfree, dtype=np.int32)
    v32 = unres_free
    u = d.unres_free
    for i in range(d.unres_nfree - 1, -1, -1):
        v32[i] = d.reserved_total + u
        u = d.unres_next[u]
    # Pending requests (pid, level, seq), oldest first.
    waiters = np.empty((d.q.npending, 3), dtype=np.int64)
    w = waiters
    k = 0
    for l in range(1, d.levels + 1):
        s = d.q.by_level[l].head
        while s != DPA_NIL:
            w[k, 0] = d.q.slots[s].pid
            w[k, 1] = l
            w[k, 2] = d.q.slots[s].seq
            k += 1
            s = d.q.slots[s].next[WQ_LEVEL]
    waiters = waiters[np.argsort(waiters[:, 2], kind="stable")]
    grants = np.empty((d.grants.len - d.grants.head, 3), dtype=np.int64)
    w = grants
    for i in range(d.grants.head, d.grants.len):
        w[i - d.grants.head, 0] = d.grants.buf[i].pid
        w[i - d.grants.head, 1] = d.grants.buf[i].tcb
        w[i - d.grants.head, 2] = d.grants.buf[i].ticket
    return {
        "version": STATE_VERSION,
        "holder": _int32_copy(d.holder, d.total),
        "pool_nfree": _int32_copy(d.pool_nfree, d.npools),
        "pool_free": pool_free,
        "level_free_pools": level_free_pools,
        "free_pools": free_pools,
        "unres_free": unres_free,
        "waiters": waiters,
        "next_seq": d.q.next_seq,
        "grants": grants,
        "counters": {
            "served_pool": d.served_pool,
            "served_unreserved": d.served_unreserved,
            "queued": d.queued,
            "granted": d.granted,
            "cancelled": d.cancelled,
            "released": d.released,
        },
    }


cdef int _bad_state(str msg) except -1:
    raise bad_state(msg)


cdef int _setstate(DepthPoolAllocator a, object state) except -1:
    """Load ``_getstate`` output into a fresh allocator of the same shape.

    ``read_state`` validates every entry and bound first (DESIGN §4); this
    only reads what it accepted. The invariants are then verified by
    ``check()`` and the counters by ``check_counters``. Raises
    AllocatorError on a bad state.
    """
    cdef dpa_t* d = &a.core
    cdef int32_t l, level
    cdef pool_t p
    cdef Py_ssize_t i, k, n
    cdef tcb_t t, u, base
    cdef proc_t pid
    cdef slot_t s
    cdef level_info_t* L
    cdef const int64_t[::1] hv
    cdef const int64_t[::1] v
    cdef const int64_t[::1] nf
    cdef const int64_t[:, ::1] w
    st = read_state(
        state, a._depths, d.unreserved, d.max_processes, d.q.capacity
    )
    hv = st["holder"]
    for t in range(d.total):
        d.holder[t] = <proc_t>hv[t]
    # Pools' free stacks, bottom to top, in pool order.
    nf = st["pool_nfree"]
    v = st["pool_free"]
    k = 0
    for l in range(1, d.levels + 1):
        L = &d.level[l]
        for p in range(L.first_pool, L.first_pool + L.pools):
            n = nf[p]
            base = _pool_base(d, p, l)
            for i in range(n):
                d.pool_stack[base + i] = <tcb_t>v[k]
                k += 1
            d.pool_nfree[p] = <int32_t>n
    # Each level's free-pool stack, bottom to top.
    nf = st["level_free_pools"]
    v = st["free_pools"]
    k = 0
    for l in range(1, d.levels + 1):
        L = &d.level[l]
        for i in range(nf[l - 1]):
            d.free_pools[L.first_pool + i] = <pool_t>v[k]
            k += 1
        L.nfree_pools = <pool_t>nf[l - 1]
    # Ownership: the pid holding a pool's TCBs owns it (check() verifies one pid).
    for l in range(1, d.levels + 1):
        L = &d.level[l]
        for p in range(L.first_pool, L.first_pool + L.pools):
            base = _pool_base(d, p, l)
            for t in range(base, base + L.size):
                if d.holder[t] != DPA_NIL:
                    _pid_rows(d, d.holder[t])
                    d.owned[_pl(d.levels, d.holder[t], l)] = p
                    break
    # The unreserved free stack, bottom to top; held ones on their holder's list.
    v = st["unres_free"]
    d.unres_free = DPA_NIL
    for i in range(v.shape[0]):
        u = <tcb_t>v[i] - d.reserved_total
        d.unres_next[u] = d.unres_free
        d.unres_free = u
    d.unres_nfree = <tcb_t>v.shape[0]
    for t in range(d.reserved_total, d.total):
        if d.holder[t] != DPA_NIL:
            _pid_rows(d, d.holder[t])
            _unres_hold(d, t - d.reserved_total, d.holder[t])
    # Pending requests in arrival order, with their tickets.
    w = st["waiters"]
    for i in range(w.shape[0]):
        pid = <proc_t>w[i, 0]
        level = <int32_t>w[i, 1]
        d.q.next_seq = w[i, 2]  # the request's ticket, as saved
        _pid_rows(d, pid)
        waitq_push(&d.q, pid, level, d.owned[_pl(d.levels, pid, level)] == DPA_NIL)
    d.q.next_seq = st["next_seq"]
    # Grants not yet taken.
    w = st["grants"]
    if _grants_grow(&d.grants, w.shape[0]) < 0:
        raise MemoryError("cannot allocate the grants buffer")
    for i in range(w.shape[0]):
        _grants_push(&d.grants, <proc_t>w[i, 0], <tcb_t>w[i, 1], w[i, 2])
    counters = st["counters"]
    d.served_pool = counters["served_pool"]
    d.served_unreserved = counters["served_unreserved"]
    d.queued = counters["queued"]
    d.granted = counters["granted"]
    d.cancelled = counters["cancelled"]
    d.released = counters["released"]
    msg = _find_broken(a)
    if msg is not None:
        _bad_state(msg)
    check_counters(st)
    return 0


cdef dict _stats(dpa_t* d):
    """DepthPoolAllocator.stats(): counts per level and the counters."""
    cdef int32_t l
    cdef pool_t p
    cdef long long nfree
    cdef level_info_t* L
    free, held, free_pools, owned_pools, pending = [], [], [], [], []
    for l in range(1, d.levels + 1):
        L = &d.level[l]
        nfree = 0
        for p in range(L.first_pool, L.first_pool + L.pools):
            nfree += d.pool_nfree[p]
        free.append(nfree)
        held.append(<long long>L.pools * L.size - nfree)
        free_pools.append(L.nfree_pools)
        owned_pools.append(L.pools - L.nfree_pools)
        pending.append(d.q.level_count[l])
    return {
        "levels": d.levels,
        "total": d.total,
        "free": free,
        "held": held,
        "free_pools": free_pools,
        "owned_pools": owned_pools,
        "unreserved_free": d.unres_nfree,
        "unreserved_held": d.unreserved - d.unres_nfree,
        "pending": pending,
        "pending_total": d.q.npending,
        "served_pool": d.served_pool,
        "served_unreserved": d.served_unreserved,
        "queued": d.queued,
        "granted": d.granted,
        "cancelled": d.cancelled,
        "released": d.released,
    }


# =================================================================== check

cdef object _find_broken(DepthPoolAllocator a):
    """The first broken invariant as a message, or None (DESIGN §1 ``check()``)."""
    cdef dpa_t* d = &a.core
    cdef waitq_t* q = &a.core.q
    cdef int32_t l, size, nfree, nheld
    cdef pool_t p, op, pool
    cdef level_info_t* L
    cdef waiter_t* w
    cdef tcb_t t, base, u, prev
    cdef proc_t owner, pid
    cdef slot_t s, sp
    cdef Py_ssize_t i, count, total_pending, nheld_unres, nseek, nfree_slots, b, nblocks
    cdef int64_t last_seq
    cdef int32_t[::1] cnt
    cdef int64_t[::1] slot
    cdef uint8_t[::1] mark = np.zeros(max(d.total, d.npools, 1), dtype=np.uint8)
    cdef uint8_t[::1] in_free = np.zeros(max(d.npools, 1), dtype=np.uint8)

    nblocks = (d.max_processes + PID_BLOCK - 1) // PID_BLOCK
    for b in range(nblocks):
        if d.pid_ready[b] > 1:
            return f"per-pid rows of block {b}: ready mark {d.pid_ready[b]}"
    # Every TCB free or held by a pid in [0, max_processes) (the checks below
    # index per-pid tables by holder).
    for t in range(d.total):
        if d.holder[t] < DPA_NIL or d.holder[t] >= d.max_processes:
            return f"TCB {t} held by pid {d.holder[t]}, out of range [0, {d.max_processes})"
        if d.holder[t] != DPA_NIL and not _has_rows(d, d.holder[t]):
            return f"TCB {t} held by pid {d.holder[t]}, whose rows are not set up"
    # Free-pool stacks: pools of their level, each once.
    for l in range(1, d.levels + 1):
        L = &d.level[l]
        if L.nfree_pools < 0 or L.nfree_pools > L.pools:
            return f"level {l}: {L.nfree_pools} free pools of {L.pools}"
        for i in range(L.nfree_pools):
            p = d.free_pools[L.first_pool + i]
            if p < L.first_pool or p >= L.first_pool + L.pools or in_free[p]:
                return f"level {l}: free-pool stack corrupt (pool {p})"
            in_free[p] = 1
    # Pools: every TCB free or held; owned iff a TCB is held, by its owner.
    for l in range(1, d.levels + 1):
        L = &d.level[l]
        size = L.size
        for p in range(L.first_pool, L.first_pool + L.pools):
            base = _pool_base(d, p, l)
            nfree = d.pool_nfree[p]
            if nfree < 0 or nfree > size:
                return f"pool {p}: free stack corrupt ({nfree} free of {size})"
            for i in range(nfree):
                t = d.pool_stack[base + i]
                if t < base or t >= base + size or mark[t]:
                    return f"pool {p}: free stack corrupt"
                mark[t] = 1
                if d.holder[t] != DPA_NIL:
                    return f"TCB {t} is on pool {p}'s free stack but held by pid {d.holder[t]}"
            nheld = 0
            owner = DPA_NIL
            for t in range(base, base + size):
                if d.holder[t] != DPA_NIL:
                    nheld += 1
                    if owner == DPA_NIL:
                        owner = d.holder[t]
                    elif d.holder[t] != owner:
                        return (
                            f"pool {p} owned by pid {owner} has TCB {t} held by pid {d.holder[t]}"
                        )
            if nheld + nfree != size:
                return f"pool {p}: {nheld} held + {nfree} free != size {size}"
            if (nheld > 0) == in_free[p]:
                return f"pool {p}: {nheld} TCBs held but on the free-pool stack: {bool(in_free[p])}"
            if nheld > 0 and d.owned[_pl(d.levels, owner, l)] != p:
                return f"pool {p}: owner {owner} does not list it at level {l}"
    # Ownership table: a pid owns at most one pool per level, an owned one.
    # (Pids without their rows own nothing.)
    for b in range(nblocks):  # the pids of the blocks set up
        if not d.pid_ready[b]:
            continue
        for pid in range(b * PID_BLOCK, min(b * PID_BLOCK + PID_BLOCK, d.max_processes)):
            for l in range(1, d.levels + 1):
                p = d.owned[_pl(d.levels, pid, l)]
                if p == DPA_NIL:
                    continue
                L = &d.level[l]
                if p < L.first_pool or p >= L.first_pool + L.pools:
                    return f"pid {pid} level {l}: ownership table names pool {p} of another level"
                base = _pool_base(d, p, l)
                owner = DPA_NIL
                for t in range(base, base + L.size):
                    if d.holder[t] != DPA_NIL:
                        owner = d.holder[t]
                        break
                if owner != pid:
                    return f"pid {pid} level {l}: ownership table names pool {p} wrongly (holder {owner})"
    # Unreserved: the free stack holds distinct free TCBs; the rest are held
    # and on their holder's list.
    count = 0
    u = d.unres_free
    while u != DPA_NIL:
        if u < 0 or u >= d.unreserved or count >= d.unreserved:
            return "unreserved free stack corrupt"
        t = d.reserved_total + u
        if mark[t]:
            return f"unreserved free stack has duplicates (TCB {t})"
        mark[t] = 1
        if d.holder[t] != DPA_NIL:
            return f"unreserved free stack holds bad TCB {t} (held by pid {d.holder[t]})"
        count += 1
        u = d.unres_next[u]
    if count != d.unres_nfree:
        return f"unreserved free stack has {count} TCBs but the count is {d.unres_nfree}"
    nheld_unres = 0
    for t in range(d.reserved_total, d.total):
        if d.holder[t] != DPA_NIL:
            nheld_unres += 1
    if nheld_unres + count != d.unreserved:
        return "unreserved TCBs are neither free nor held"
    count = 0
    for b in range(nblocks):  # the pids of the blocks set up
        if not d.pid_ready[b]:
            continue
        for pid in range(b * PID_BLOCK, min(b * PID_BLOCK + PID_BLOCK, d.max_processes)):
            u = d.pid_unres[pid]
            prev = DPA_NIL
            while u != DPA_NIL:
                if u < 0 or u >= d.unreserved or count >= nheld_unres:
                    return f"pid {pid}: list of held unreserved TCBs corrupt"
                if d.holder[d.reserved_total + u] != pid or d.unres_prev[u] != prev:
                    return f"pid {pid}: list of held unreserved TCBs names TCB {d.reserved_total + u} wrongly"
                count += 1
                prev = u
                u = d.unres_next[u]
    if count != nheld_unres:
        return f"{nheld_unres} unreserved TCBs held but {count} on the holders' lists"

    # Wait queue: three consistent lists per request, counts that add up.
    # cnt: requests per pid of the blocks set up, at slot[pid >> PID_SHIFT] * PID_BLOCK + pid % PID_BLOCK.
    slot = np.full(max(nblocks, 1), -1, dtype=np.int64)
    count = 0
    for b in range(nblocks):
        if d.pid_ready[b]:
            slot[b] = count
            count += 1
    cnt = np.zeros(max(count, 1) * PID_BLOCK, dtype=np.int32)
    total_pending = 0
    nseek = 0
    for l in range(1, d.levels + 1):
        count = 0
        last_seq = -1
        s = q.by_level[l].head
        sp = DPA_NIL
        while s != DPA_NIL:
            if s < 0 or s >= q.used or count > q.capacity:
                return f"level {l}: wait list corrupt"
            w = &q.slots[s]
            if w.level != l or w.prev[WQ_LEVEL] != sp or w.seq <= last_seq or w.pid < 0 or w.pid >= d.max_processes or not _has_rows(d, w.pid):
                return f"level {l}: wait list corrupt at slot {s}"
            pool = d.owned[_pl(d.levels, w.pid, l)]
            if w.seeker != (pool == DPA_NIL):
                return f"pid {w.pid} waits at level {l} with pool {pool} but seeker={w.seeker}"
            if w.seeker:
                nseek += 1
            cnt[slot[w.pid >> PID_SHIFT] * PID_BLOCK + (w.pid & (PID_BLOCK - 1))] += 1
            last_seq = w.seq
            count += 1
            sp = s
            s = w.next[WQ_LEVEL]
        if q.by_level[l].tail != sp:
            return f"level {l}: wait list tail corrupt"
        if count != q.level_count[l]:
            return f"level {l}: {count} requests queued but the count is {q.level_count[l]}"
        total_pending += count
    if total_pending != q.npending:
        return f"{total_pending} requests queued but pending count is {q.npending}"
    if q.npending > q.capacity:
        return "more requests pend than max_waiters"
    nfree_slots = 0
    s = q.free_head
    while s != DPA_NIL:
        if s < 0 or s >= q.used or nfree_slots > q.capacity:
            return "free-slot stack corrupt"
        nfree_slots += 1
        s = q.slots[s].next[WQ_LEVEL]
    if nfree_slots + q.npending != q.used:
        return f"{q.used} slots used but {nfree_slots} free + {q.npending} pending"
    # (Pids without their rows wait for nothing: no request above names one.)
    for b in range(nblocks):  # the pids of the blocks set up
        if not d.pid_ready[b]:
            continue
        for pid in range(b * PID_BLOCK, min(b * PID_BLOCK + PID_BLOCK, d.max_processes)):
            i = slot[b] * PID_BLOCK + (pid & (PID_BLOCK - 1))
            if cnt[i] != q.pid_count[pid]:
                return f"pid {pid}: {cnt[i]} requests queued but its count is {q.pid_count[pid]}"
            for l in range(1, d.levels + 1):
                count = 0
                last_seq = -1
                s = q.by_pid_level[_pl(d.levels, pid, l)].head
                sp = DPA_NIL
                while s != DPA_NIL:
                    if s < 0 or s >= q.used or count > cnt[i]:
                        return f"pid {pid} level {l}: wait list corrupt"
                    w = &q.slots[s]
                    if w.pid != pid or w.level != l or w.prev[WQ_PID_LEVEL] != sp or w.seq <= last_seq:
                        return f"pid {pid} level {l}: wait list corrupt at slot {s}"
                    last_seq = w.seq
                    count += 1
                    sp = s
                    s = w.next[WQ_PID_LEVEL]
                if q.by_pid_level[_pl(d.levels, pid, l)].tail != sp:
                    return f"pid {pid} level {l}: wait list tail corrupt"
                cnt[i] -= count
            if cnt[i] != 0:
                return f"pid {pid}: requests missing from its (pid, level) lists"
    for l in range(1, d.levels + 1):
        last_seq = -1
        s = q.seekers[l].head
        sp = DPA_NIL
        while s != DPA_NIL:
            if s < 0 or s >= q.used or nseek < 0:
                return f"level {l}: seekers list corrupt"
            w = &q.slots[s]
            if not w.seeker or w.level != l or w.prev[WQ_SEEKERS] != sp or w.seq <= last_seq:
                return f"pid {w.pid} waits at level {l} without a pool but is not a seeker"
            nseek -= 1
            last_seq = w.seq
            sp = s
            s = w.next[WQ_SEEKERS]
        if q.seekers[l].tail != sp:
            return f"level {l}: seekers list tail corrupt"
    if nseek != 0:
        return "a request of a pid owning no pool is missing from the seekers lists"

    # Tickets: every pending request, and nothing else, is in the ticket table.
    count = 0
    for i in range(q.ticket_mask + 1):
        s = q.by_ticket[i] - 1
        if s != DPA_NIL:
            if s < 0 or s >= q.used:
                return f"ticket table corrupt at entry {i}"
            count += 1
    if count != q.npending:
        return f"{count} tickets in the ticket table but {q.npending} requests pend"
    for l in range(1, d.levels + 1):
        s = q.by_level[l].head
        while s != DPA_NIL:
            if waitq_find(q, q.slots[s].seq) != s:
                return f"the request with ticket {q.slots[s].seq} is missing from the ticket table"
            if q.slots[s].seq < 0 or q.slots[s].seq >= q.next_seq:
                return f"ticket {q.slots[s].seq} is not below next_seq {q.next_seq}"
            s = q.slots[s].next[WQ_LEVEL]

    # No lost wake-up: nothing pends while a resource it may use is free.
    if q.npending and d.unres_nfree:
        return (
            f"lost wake-up: {d.unres_nfree} unreserved TCBs free while "
            f"{q.npending} requests pend"
        )
    for l in range(1, d.levels + 1):
        s = q.by_level[l].head
        while s != DPA_NIL:
            w = &q.slots[s]
            op = d.owned[_pl(d.levels, w.pid, l)]
            if op == DPA_NIL:
                if d.level[l].nfree_pools > 0:
                    return (
                        f"lost wake-up: pid {w.pid} waits at level {l} with no pool "
                        f"while pool {d.free_pools[d.level[l].first_pool + d.level[l].nfree_pools - 1]} is free"
                    )
            elif d.pool_nfree[op] > 0:
                return (
                    f"lost wake-up: pid {w.pid} waits at level {l} while its pool {op} "
                    f"has a free TCB"
                )
            s = w.next[WQ_LEVEL]
    if not (0 <= d.grants.head <= d.grants.len <= d.grants.cap):
        return "grants buffer corrupt"
    return None
