# cython: language_level=3
"""Baselines of the benchmark suite (private; benchmarks/bench_allocator.py).

They ship with the package so that ``asv run --python=same`` and CI time them
without a compiler: the core's own C functions in ``nogil`` loops (the limit
of any Python wrapper around them) and two trivial methods with the
allocator's signatures (the floor of one Python call each).
"""

cimport cython
from libc.stdint cimport int32_t

from pyresv._core.allocator cimport (
    DepthPoolAllocator,
    dpa_acquire_many,
    dpa_release_many,
    dpa_t,
    dpa_try_acquire,
    dpa_try_release,
    tcb_t,
)


def pairs_nogil(DepthPoolAllocator alloc, const int32_t[::1] pids, const int32_t[::1] levels):
    """acquire then release of each ``(pids[i], levels[i])`` in C: the per-pair limit.

    Returns the sum of the TCB ids (so nothing is optimized away).
    """
    cdef dpa_t* d = &alloc.core
    cdef Py_ssize_t i, n = pids.shape[0]
    cdef tcb_t t
    cdef long long total = 0
    with nogil:
        for i in range(n):
            t = dpa_try_acquire(d, pids[i], levels[i])
            if t >= 0:
                dpa_try_release(d, t)
            total += t
    return total


def batch_nogil(DepthPoolAllocator alloc, const int32_t[::1] pids, const int32_t[::1] levels, tcb_t[::1] out):
    """``dpa_acquire_many`` then ``dpa_release_many`` over int32 arrays: the batch limit.

    Every request must be served at once (``out`` is then released whole).
    Returns how many were acquired.
    """
    cdef dpa_t* d = &alloc.core
    cdef Py_ssize_t n = pids.shape[0], done = 0
    cdef int code = 0
    if n == 0:
        return 0
    with nogil:
        done = dpa_acquire_many(d, &pids[0], &levels[0], &out[0], n)
        dpa_release_many(d, &out[0], done, &code)
    if code != 0:
        raise RuntimeError(f"batch_nogil: release_many refused with code {code}")
    return done


cdef class Floor:
    """Two trivial methods with the allocator's signatures: the two-call floor."""

    def acquire(self, pid, depth=1, remote=False):
        return 0

    def release(self, tcb):
        return None


cdef class BuiltinFloor:
    """The same two trivial methods as built-in methods (binding=False), as the allocator's are.

    CPython calls a built-in method straight from its eval loop; ``Floor``'s
    methods are Cython function objects, called through a bound method (about
    100 instructions more a call). This is the like-for-like floor of
    ``DepthPoolAllocator.acquire``/``release``.
    """

    @cython.binding(False)
    def acquire(self, pid, depth=1, remote=False):
        return 0

    @cython.binding(False)
    def release(self, tcb):
        return None
