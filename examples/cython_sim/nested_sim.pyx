# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A small discrete-event simulator in Cython on pyresv's C API.

Operations arrive at the clusters of a controller. An operation is a chain of
``hops`` nested steps: step k runs on cluster ``(home + k - 1) % clusters``,
holds one TCB there at level k while it works and while it waits for step
k+1 (a call to the next cluster is one level deeper, patent [0038]), and
releases it when step k+1 has returned. The whole event loop runs without the
GIL on fixed C arrays, calling the allocator through ``dpa_*``: one
``cimport`` is all a Cython simulator needs.

Policies: ``depth`` reserves ``pools`` pools of one TCB per level (plus
``unreserved`` shared TCBs); ``shared`` gives every cluster the same number of
TCBs, all unreserved, and deadlocks once every TCB is held by a step waiting
for a TCB on another cluster.
"""

from libc.math cimport log
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc

from pyresv._core cimport DPA_PENDING, DepthPoolAllocator, dpa_acquire, dpa_release, dpa_t, dpa_take_grant, proc_t, tcb_t

cdef enum:
    EV_ARRIVE = 0      # the operation starts step 1 on its home cluster
    EV_CALL = 1        # a call reaches the next cluster: step k asks for a TCB there
    EV_WORKED = 2      # step k finished its own work
    EV_RETURN = 3      # step k+1 returned to step k: step k ends


cdef struct event_t:   # one scheduled event
    double t           # simulation time
    long   seq         # scheduling order: ties at one time go first-scheduled first
    int    op          # the operation (also its pid)
    int    kind        # EV_*
    int    step        # the step it concerns, 1..hops


cdef struct heap_t:    # a binary min-heap of events on (t, seq)
    event_t* ev
    long     n
    long     cap
    long     seq


cdef struct op_t:      # one operation
    double start       # arrival time
    int    home        # its home cluster
    tcb_t* tcb         # [hops + 1] TCB held at each step (index 1..hops), -1 if none


cdef inline bint ev_less(event_t* a, event_t* b) noexcept nogil:
    return a.t < b.t or (a.t == b.t and a.seq < b.seq)


cdef int heap_push(heap_t* h, double t, int op, int kind, int step) except -1 nogil:
    cdef long i, parent
    cdef event_t tmp
    if h.n == h.cap:
        with gil:
            raise MemoryError("event heap full")
    i = h.n
    h.n += 1
    h.ev[i].t = t
    h.ev[i].seq = h.seq
    h.ev[i].op = op
    h.ev[i].kind = kind
    h.ev[i].step = step
    h.seq += 1
    while i > 0:
        parent = (i - 1) // 2
        if not ev_less(&h.ev[i], &h.ev[parent]):
            break
        tmp = h.ev[i]
        h.ev[i] = h.ev[parent]
        h.ev[parent] = tmp
        i = parent
    return 0


cdef event_t heap_pop(heap_t* h) noexcept nogil:
    cdef event_t top = h.ev[0], tmp
    cdef long i = 0, child
    h.n -= 1
    h.ev[0] = h.ev[h.n]
    while True:
        child = 2 * i + 1
        if child >= h.n:
            break
        if child + 1 < h.n and ev_less(&h.ev[child + 1], &h.ev[child]):
            child += 1
        if not ev_less(&h.ev[child], &h.ev[i]):
            break
        tmp = h.ev[i]
        h.ev[i] = h.ev[child]
        h.ev[child] = tmp
        i = child
    return top


cdef inline double expo(uint64_t* state, double mean) noexcept nogil:
    """An exponential variate from a xorshift64* generator (deterministic per seed)."""
    state[0] ^= state[0] >> 12
    state[0] ^= state[0] << 25
    state[0] ^= state[0] >> 27
    cdef double u = ((state[0] * <uint64_t>2685821657736338717) >> 11) * (1.0 / 9007199254740992.0)
    return -mean * log(1.0 - u)


cdef struct sim_t:     # the whole simulation state
    int      clusters
    int      hops
    dpa_t**  d         # [clusters] each cluster's allocator
    op_t*    ops       # [nops]
    int      nops
    heap_t   heap
    uint64_t rng
    double   work      # mean work per step
    double   latency   # one-way message latency between clusters
    double   now
    long     events
    int      completed
    double   latency_sum


cdef inline int cluster_of(sim_t* s, int op, int step) noexcept nogil:
    return (s.ops[op].home + step - 1) % s.clusters


cdef int granted(sim_t* s, int op, int step, tcb_t tcb) except -1 nogil:
    """Step ``step`` of ``op`` holds ``tcb``: it starts its work."""
    s.ops[op].tcb[step] = tcb
    heap_push(&s.heap, s.now + expo(&s.rng, s.work), op, EV_WORKED, step)
    return 0


cdef int ask(sim_t* s, int op, int step) except -1 nogil:
    """Step ``step`` asks its cluster for a TCB at level ``step`` (FIG 5A/5B)."""
    cdef tcb_t t = dpa_acquire(s.d[cluster_of(s, op, step)], op, step)
    if t != DPA_PENDING:
        granted(s, op, step, t)
    return 0  # else the grant comes through dpa_take_grant on some release


cdef int end_step(sim_t* s, int op, int step) except -1 nogil:
    """Step ``step`` is over: its TCB goes back (FIG 6A/6B) and it returns to its caller."""
    cdef int c = cluster_of(s, op, step)
    cdef proc_t pid
    cdef tcb_t tcb
    dpa_release(s.d[c], s.ops[op].tcb[step])
    s.ops[op].tcb[step] = -1
    # Each pid has at most one request pending (its deepest step): a grant names it.
    while dpa_take_grant(s.d[c], &pid, &tcb):
        granted(s, pid, hop_waiting(s, pid), tcb)
    if step > 1:
        heap_push(&s.heap, s.now + s.latency, op, EV_RETURN, step - 1)
    else:
        s.completed += 1
        s.latency_sum += s.now - s.ops[op].start
    return 0


cdef inline int hop_waiting(sim_t* s, int op) noexcept nogil:
    """The step of ``op`` that waits for a TCB: the first without one."""
    cdef int k = 1
    while s.ops[op].tcb[k] >= 0:
        k += 1
    return k


cdef int simulate(sim_t* s) except -1 nogil:
    cdef event_t ev
    while s.heap.n:
        ev = heap_pop(&s.heap)
        s.now = ev.t
        s.events += 1
        if ev.kind == EV_ARRIVE:
            ask(s, ev.op, 1)
        elif ev.kind == EV_CALL:
            ask(s, ev.op, ev.step)
        elif ev.kind == EV_WORKED:
            if ev.step < s.hops:
                heap_push(&s.heap, s.now + s.latency, ev.op, EV_CALL, ev.step + 1)
            else:
                end_step(s, ev.op, ev.step)
        else:  # EV_RETURN
            end_step(s, ev.op, ev.step)
    return 0


def run(str policy="depth", int clusters=2, int hops=3, int ops=20000, int pools=2,
        int unreserved=2, double rate=2000.0, double work=0.001, double latency=0.0001,
        unsigned long long seed=1):
    """Simulate ``ops`` operations; a dict of results.

    ``completed < ops`` means the run deadlocked: the event heap emptied with
    steps still waiting for TCBs (``stuck`` of them).
    """
    if policy not in ("depth", "shared"):
        raise ValueError(f"policy must be 'depth' or 'shared', got {policy!r}")
    if clusters < 1 or hops < 1 or ops < 1 or pools < 1 or unreserved < 0:
        raise ValueError("clusters, hops, ops and pools must be >= 1, unreserved >= 0")
    per_cluster = pools * hops + unreserved
    allocs = []
    for _ in range(clusters):
        if policy == "depth":
            allocs.append(DepthPoolAllocator([(pools, 1)] * hops, unreserved, max_processes=ops, max_waiters=ops))
        else:
            allocs.append(DepthPoolAllocator([(0, 1)] * hops, per_cluster, max_processes=ops, max_waiters=ops))

    cdef sim_t s
    cdef int i, k
    cdef double t = 0.0
    s.clusters = clusters
    s.hops = hops
    s.nops = ops
    s.rng = seed * <uint64_t>0x9E3779B97F4A7C15 + 1
    s.work = work
    s.latency = latency
    s.now = 0.0
    s.events = 0
    s.completed = 0
    s.latency_sum = 0.0
    s.d = <dpa_t**>malloc(clusters * sizeof(dpa_t*))
    s.ops = <op_t*>malloc(ops * sizeof(op_t))
    s.heap.cap = 2 * ops + 16  # at most one arrival and one event per operation pend at once
    s.heap.ev = <event_t*>malloc(s.heap.cap * sizeof(event_t))
    s.heap.n = 0
    s.heap.seq = 0
    cdef tcb_t* tcbs = <tcb_t*>malloc(ops * (hops + 1) * sizeof(tcb_t))
    if s.d == NULL or s.ops == NULL or s.heap.ev == NULL or tcbs == NULL:
        free(s.d); free(s.ops); free(s.heap.ev); free(tcbs)
        raise MemoryError()
    try:
        for i in range(clusters):
            s.d[i] = &(<DepthPoolAllocator>allocs[i]).core
        for i in range(ops):
            t += expo(&s.rng, 1.0 / rate)
            s.ops[i].start = t
            s.ops[i].home = i % clusters
            s.ops[i].tcb = tcbs + i * (hops + 1)
            for k in range(hops + 1):
                s.ops[i].tcb[k] = -1
            heap_push(&s.heap, t, i, EV_ARRIVE, 1)
        with nogil:
            simulate(&s)
        stuck = sum(alloc.pending() for alloc in allocs)
        held = sum(alloc.total - sum(alloc.stats()["free"]) - alloc.stats()["unreserved_free"] for alloc in allocs)
        for alloc in allocs:
            alloc.check()
        return {
            "policy": policy,
            "ops": ops,
            "completed": s.completed,
            "deadlocked": s.completed < ops,
            "stuck": stuck,
            "held_at_end": held,
            "tcbs_per_cluster": per_cluster,
            "events": s.events,
            "sim_time": s.now,
            "mean_latency": s.latency_sum / s.completed if s.completed else float("nan"),
        }
    finally:
        free(s.d)
        free(s.ops)
        free(s.heap.ev)
        free(tcbs)
