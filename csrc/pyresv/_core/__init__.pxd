# The cimport API of pyresv's core, re-exported for ``from pyresv._core cimport ...``
# (like numpy/random/__init__.pxd): the class, the state a C caller passes
# around (dpa_t, used through a pointer), the id types, the return codes and
# the documented dpa_* functions. The wait queue's and the grants' internals
# stay in allocator.pxd, where they are documented but not exported.

from pyresv._core.allocator cimport (
    DPA_BAD_ARG,
    DPA_DUPLICATE,
    DPA_LIMIT,
    DPA_NIL,
    DPA_NO_MEMORY,
    DPA_PENDING,
    DPA_QUEUE_FULL,
    DPA_WAKE_DEEPEST,
    DPA_WAKE_FIFO,
    DepthPoolAllocator,
    count_t,
    dpa_acquire,
    dpa_acquire_many,
    dpa_cancel,
    dpa_cancel_request,
    dpa_holder,
    dpa_last_ticket,
    dpa_level_of,
    dpa_owned_pool,
    dpa_pending,
    dpa_pool_of,
    dpa_release,
    dpa_release_all,
    dpa_release_many,
    dpa_t,
    dpa_take_grant,
    dpa_take_grant_ticket,
    dpa_try_acquire,
    dpa_try_release,
    pool_t,
    proc_t,
    seq_t,
    tcb_t,
)
