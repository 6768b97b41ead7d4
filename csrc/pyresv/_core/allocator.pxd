# cython: language_level=3
"""The C-level API of the depth-pool allocator (patent [0019]-[0035], FIGs 2-6).

This file is the documentation of the core. Other Cython code uses it with::

    from pyresv._core cimport DepthPoolAllocator, dpa_t, dpa_acquire, dpa_release
    cdef DepthPoolAllocator a = DepthPoolAllocator([(4, 9)] * 3, 32)
    cdef dpa_t* d = &a.core
    with nogil:
        t = dpa_acquire(d, pid, level)   # a TCB id, or DPA_PENDING

Layout
------
* Pools are numbered level-major (level 1's pools first). Level ``l`` owns
  the pool ids ``first_pool .. first_pool + pools - 1`` and the contiguous TCB
  ids ``base .. end - 1``; pool ``p`` of it owns ``size`` consecutive ids.
  Unreserved TCBs (122a/122b) are the ids ``reserved_total .. total - 1``.
* Free TCBs of a pool and the free pools of a level are array stacks living
  in that pool's/level's own slice of ``pool_stack``/``free_pools``; the free
  unreserved TCBs are a linked stack through ``unres_next``. All of them pop
  the lowest id first initially and are LIFO afterwards (the same ids as
  ``pyresv.reference``).
* The pool a pid owns at a level is ``owned[pid * levels + level - 1]``. The
  owner of a pool is not stored: it is the holder of any of its held TCBs
  (an owned pool always has one, [0029]).
* Memory: 8 bytes per reserved TCB (holder + stack slot), 12 per unreserved
  TCB (holder + two links of the per-pid list of held unreserved TCBs, which
  makes ``release_all`` O(k log k) in the TCBs k the pid holds), 8 per pool,
  plus 12 * levels + 8 bytes per pid and 48 bytes per wait-queue slot (56 to
  64 with the ticket table). The per-pid rows are allocated for
  ``max_processes`` pids but set up on first use, one block of 1,024 pids
  at a time (``pid_ready``, one byte per block): only the pages of the
  blocks of pids in use are touched, wherever those pids are.

Errors
------
Functions that can fail come in two flavours: ``dpa_try_*`` are
``noexcept nogil`` and return a negative code (below) leaving the state
unchanged; ``dpa_*`` take the GIL only to raise the Python exception
(``ValueError``, ``pyresv.AllocatorError``, ``pyresv.QueueFull``,
``MemoryError``) and return their ``except`` value.

Threads: a ``dpa_t`` is not locked. Code that shares one between threads
without the GIL must serialize the calls itself. The Python methods refuse
to run (``AllocatorError``, "busy") while a batch of the same allocator
runs without the GIL on another thread, queries included.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

ctypedef int32_t tcb_t        # a TCB id 0 .. total-1 (negative: a code below)
ctypedef int32_t proc_t       # a process id 0 .. max_processes-1, or DPA_NIL
ctypedef int32_t pool_t       # a pool id 0 .. npools-1, level-major, or DPA_NIL
ctypedef int32_t slot_t       # a wait-queue slot 0 .. max_waiters-1, or DPA_NIL
ctypedef int64_t seq_t        # arrival number of a request; smaller is older
ctypedef int64_t count_t      # an event counter


cdef enum:
    DPA_NIL = -1              # "none" in every id table (free TCB, unowned pool, empty list)
    DPA_PENDING = -1          # acquire: the request was queued; its grant comes later
    DPA_QUEUE_FULL = -2       # try_acquire: max_waiters requests pend; nothing queued
    DPA_BAD_ARG = -3          # try_*: pid/level out of range, TCB not an id or not held
    DPA_NO_MEMORY = -4        # try_release: the grants buffer could not grow
    DPA_DUPLICATE = -5        # release_many: a TCB appears twice in the batch
    DPA_LIMIT = -6            # try_acquire: 2**62 requests were served or queued (the request limit); nothing changed
    DPA_WAKE_DEEPEST = 0      # a freed unreserved TCB goes to the deepest level, then oldest
    DPA_WAKE_FIFO = 1         # a freed unreserved TCB goes to the oldest request


cdef enum:                    # the three lists a waiting request is linked in (waiter_t.prev/next)
    WQ_LEVEL = 0              # its level's arrival list (wake order, FIG 6B block 620)
    WQ_PID_LEVEL = 1          # its (pid, level) list (the owner's own waiters)
    WQ_SEEKERS = 2            # its level's seekers list (pid owns no pool there, FIG 6A block 610)


cdef struct level_info_t:     # one depth level (FIG 3A-3C); index 1..levels, [0] unused
    pool_t  pools             # number of pools at this level (columns of FIG 3)
    int32_t size              # TCBs per pool (rows of FIG 3)
    pool_t  first_pool        # id of the level's first pool
    tcb_t   base              # id of the level's first TCB
    tcb_t   end               # one past the level's last TCB
    pool_t  nfree_pools       # height of the free-pool stack free_pools[first_pool:]
    uint64_t size_magic       # x // size == (x * size_magic) >> size_shift (no division)
    int32_t size_shift        # 32 + ceil(log2(size))


cdef struct waiter_t:         # one pending request in a wait-queue slot
    seq_t   seq               # arrival number (FIFO order)
    proc_t  pid               # the requesting process
    int32_t level             # the level it is served at, 1..levels
    int32_t seeker            # 1 while in the level's seekers list (pid owns no pool there)
    slot_t  prev[3]           # previous in each list (indexed by WQ_*), or DPA_NIL
    slot_t  next[3]           # next in each list, or DPA_NIL; next[WQ_LEVEL] links the free-slot stack when unused


cdef struct slot_list_t:      # a doubly linked list of waiter slots, oldest first
    slot_t head               # oldest request, or DPA_NIL when empty
    slot_t tail               # newest request, or DPA_NIL when empty


cdef struct waitq_t:          # the wait queue of FIG 4 block 412 / FIG 5A block 512
    waiter_t*    slots        # [capacity] request nodes
    slot_t       capacity     # max_waiters
    slot_t       used         # high-water mark: slots >= used were never handed out
    slot_t       free_head    # stack of recycled slots (linked through next[WQ_LEVEL]), or DPA_NIL
    int32_t      npending     # requests queued now
    seq_t        next_seq     # arrival number of the next request
    int32_t      levels       # D, the number of levels
    slot_list_t* by_level     # [levels + 1] each level's requests in arrival order
    slot_list_t* seekers      # [levels + 1] the level's requests from pids owning no pool there
    int32_t*     level_count  # [levels + 1] requests pending per level
    slot_list_t* by_pid_level # [max_processes * levels] a pid's requests at a level (pid*levels + level-1)
    int32_t*     pid_count    # [max_processes] requests pending per pid
    slot_t*      by_ticket    # [ticket_mask + 1] open-addressing table: ticket (seq) -> slot + 1, or 0 (empty)
    int64_t      ticket_mask  # table size - 1 (a power of two >= 2 * capacity: at most half full)


cdef struct grant_t:          # one grant: a queued request was served
    proc_t pid                # the process whose request was served
    tcb_t  tcb                # the TCB it now holds
    seq_t  ticket             # the request's arrival number (its ticket)


cdef struct grants_t:         # grants not yet taken, oldest first (a queue in an array)
    grant_t*   buf            # [cap] PyMem_Raw* memory: it may grow without the GIL
    Py_ssize_t head           # index of the oldest grant not yet taken
    Py_ssize_t len            # one past the newest grant
    Py_ssize_t cap            # allocated entries; kept >= len + npending before a release,
                              # as each grant serves (and removes) one pending request


cdef struct dpa_t:                      # one cluster's resource manager (118a/118b)
    int32_t       levels                # D >= 1
    tcb_t         total                 # all TCBs
    tcb_t         reserved_total        # TCBs in pools; unreserved ids start here
    tcb_t         unreserved            # TCBs in the unreserved pool (122a/122b)
    pool_t        npools                # pools over all levels
    proc_t        max_processes         # pids are 0 .. max_processes-1
    int32_t       wake                  # DPA_WAKE_DEEPEST or DPA_WAKE_FIFO
    level_info_t* level                 # [levels + 1] shape and free-pool count per level
    int32_t*      pool_nfree            # [npools] free TCBs of each pool (height of its stack)
    pool_t*       free_pools            # [npools] per-level stacks of free (unowned) pools
    tcb_t*        pool_stack            # [reserved_total] per-pool stacks of free TCB ids
    proc_t*       holder                # [total] the pid holding each TCB, or DPA_NIL when free
    tcb_t*        unres_next            # [unreserved] next in the free stack or the holder's list (index)
    tcb_t*        unres_prev            # [unreserved] previous in the holder's list (index), or DPA_NIL
    tcb_t         unres_free            # top of the free unreserved stack (index), or DPA_NIL
    tcb_t         unres_nfree           # free unreserved TCBs
    tcb_t*        pid_unres             # [max_processes] first held unreserved TCB (index) of each pid
    pool_t*       owned                 # [max_processes * levels] pool owned by (pid, level), or DPA_NIL
    waitq_t       q                     # pending requests
    grants_t      grants                # grants not yet taken
    count_t       served_pool           # acquires served at once from a pool
    count_t       served_unreserved     # acquires served at once from the unreserved pool
    count_t       queued                # acquires that were queued
    count_t       granted               # queued requests served later
    count_t       cancelled             # queued requests dropped by cancel/release_all
    count_t       released              # TCBs released
    Py_ssize_t    nbytes                # bytes of the fixed C arrays (grants buffer not included)
    uint8_t*      pid_ready             # [ceil(max_processes / 1024)] 1 once the per-pid rows
                                        # (pid_unres, owned, q.by_pid_level, q.pid_count) of the
                                        # block of 1,024 pids pid >> 10 are set up, else 0: a pid
                                        # of a block not set up holds, owns and waits for nothing


cdef class DepthPoolAllocator:
    cdef dpa_t core               # the allocator; C code passes &alloc.core to dpa_* functions
    cdef tuple _depths            # ((pools, pool_size), ...) as constructed
    cdef int _busy                # 0, or who uses the state while other threads may run: a
                                  # batch without the GIL (1), or check/stats/take_grants/
                                  # pickling (2); every Python method then raises AllocatorError
    cdef int32_t* _scratch        # [_scratch_cap] a batch's private copy of its input (read once)
    cdef Py_ssize_t _scratch_cap  # int32 entries allocated in _scratch


# Acquire one TCB for pid at level (1..levels; a remote call is served at
# depth + 1, FIG 5A). Returns the TCB id (>= 0) or DPA_PENDING (queued).
# dpa_acquire raises ValueError (bad pid/level), QueueFull or AllocatorError
# (the request limit: 2**62 requests served or queued over the allocator's
# life, pyresv._validate.SEQ_LIMIT, the most a pickled state counts) and returns -2;
# dpa_try_acquire returns DPA_BAD_ARG, DPA_QUEUE_FULL or DPA_LIMIT instead.
cdef tcb_t dpa_acquire(dpa_t* d, proc_t pid, int32_t level) except -2 nogil
cdef tcb_t dpa_try_acquire(dpa_t* d, proc_t pid, int32_t level) noexcept nogil

# A batch of acquires, all or nothing: request i is (pids[i], levels[i]) and
# out[i] gets its TCB id or DPA_PENDING, exactly as a loop of dpa_try_acquire.
# pids[i] and levels[i] are read once each (checked, then used: another
# thread may write to them meanwhile); out[] is read back to undo, so no
# other thread may write to it during the call.
# Returns n when every request was resolved. Otherwise returns the index i of
# the first request that failed, with out[i] = DPA_QUEUE_FULL (the wait queue
# was full when its turn came), DPA_LIMIT (the request limit) or DPA_BAD_ARG
# (pid or level out of range);
# requests 0..i-1 are then undone, newest first, and the state is exactly as
# before the call (same free-stack order, arrival numbers and counters). It
# needs no memory beyond out[] (acquires never grant, so each undo is exact).
cdef Py_ssize_t dpa_acquire_many(
    dpa_t* d, const proc_t* pids, const int32_t* levels, tcb_t* out, Py_ssize_t n
) noexcept nogil

# Release a held TCB (FIG 6A/6B); it may be granted to a waiter at once.
# Returns 0. dpa_release raises AllocatorError (not an id, or free) or
# MemoryError and returns -1; dpa_try_release returns DPA_BAD_ARG or
# DPA_NO_MEMORY instead. The state is unchanged on any error.
cdef int dpa_release(dpa_t* d, tcb_t tcb) except -1 nogil
cdef int dpa_try_release(dpa_t* d, tcb_t tcb) noexcept nogil

# A batch of releases, all or nothing: every TCB must be held and appear
# once. Returns n with *code = 0 when all were released, in order, as a loop
# of dpa_try_release. Otherwise nothing was released and it returns the index
# of the first TCB that is not held or not an id (*code = DPA_BAD_ARG; this
# comes first), else of the first repeat (*code = DPA_DUPLICATE), or 0 with
# *code = DPA_NO_MEMORY. It reads tcbs[] more than once: no other thread may
# write to it during the call (the Python method passes a private copy).
cdef Py_ssize_t dpa_release_many(dpa_t* d, const tcb_t* tcbs, Py_ssize_t n, int* code) noexcept nogil

# Take the oldest grant not yet taken: 1 and *pid, *tcb set, or 0 when none.
cdef int dpa_take_grant(dpa_t* d, proc_t* pid, tcb_t* tcb) noexcept nogil
# The same, and *ticket set to the ticket of the request it served.
cdef int dpa_take_grant_ticket(dpa_t* d, proc_t* pid, tcb_t* tcb, seq_t* ticket) noexcept nogil

# Tickets name pending requests: a request's ticket is its arrival number
# (unique and increasing per allocator, kept by pickling).
# The ticket of the newest request that was queued (DPA_PENDING), or -1.
cdef seq_t dpa_last_ticket(dpa_t* d) noexcept nogil
# Cancel the one pending request with this ticket; the others keep their
# place. Returns 1 (it was pending, now cancelled), 0 (not pending: granted,
# cancelled or never issued) or DPA_BAD_ARG (a negative ticket). Cancelling
# frees nothing, so it makes no grant. O(1) on average.
cdef int dpa_cancel_request(dpa_t* d, seq_t ticket) noexcept nogil

# Drop pid's pending requests: their number, or DPA_BAD_ARG for a bad pid.
cdef int32_t dpa_cancel(dpa_t* d, proc_t pid) noexcept nogil

# Cancel pid's requests, then release its TCBs, deepest level first,
# unreserved last, each in id order. Returns how many TCBs; raises
# ValueError (bad pid) or MemoryError and returns -1, state unchanged.
cdef int32_t dpa_release_all(dpa_t* d, proc_t pid) except -1 nogil

# Pure queries (no side effects).
cdef proc_t dpa_holder(dpa_t* d, tcb_t tcb) noexcept nogil    # holder pid, DPA_NIL if free, DPA_BAD_ARG if not an id
cdef int32_t dpa_level_of(dpa_t* d, tcb_t tcb) noexcept nogil # 1..levels, 0 if unreserved, DPA_BAD_ARG if not an id
cdef pool_t dpa_pool_of(dpa_t* d, tcb_t tcb) noexcept nogil   # its pool, DPA_NIL if unreserved, DPA_BAD_ARG if not an id
cdef pool_t dpa_owned_pool(dpa_t* d, proc_t pid, int32_t level) noexcept nogil  # pool or DPA_NIL; DPA_BAD_ARG
cdef int32_t dpa_pending(dpa_t* d, proc_t pid) noexcept nogil # pid's pending requests (DPA_NIL: everybody's); DPA_BAD_ARG

# Make room for n more grants: 0, or raises MemoryError and returns -1.
cdef int grants_reserve(grants_t* g, Py_ssize_t n) except -1 nogil
