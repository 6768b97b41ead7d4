"""The C-level API is part of the package: a downstream .pyx cimports it and runs it.

Like numpy's ``test_extending.py::test_cython``: a tiny extension is compiled
in a temporary folder against the *installed* pyresv (its ``.pxd`` files,
found through :func:`pyresv.get_include`) and then acquires and releases TCBs
inside ``with nogil``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pyresv

pytest.importorskip("Cython")
pytest.importorskip("setuptools")

DOWNSTREAM_PYX = """\
# cython: language_level=3
from libc.stdint cimport int32_t
from pyresv._core cimport (
    DPA_BAD_ARG, DPA_DUPLICATE, DPA_PENDING, DPA_QUEUE_FULL, DepthPoolAllocator, dpa_acquire,
    dpa_acquire_many, dpa_cancel_request, dpa_holder, dpa_last_ticket, dpa_level_of,
    dpa_release, dpa_release_many, dpa_t, dpa_take_grant, dpa_take_grant_ticket,
    dpa_try_acquire, proc_t, seq_t, tcb_t,
)


def churn(int n):
    '''n acquire+release pairs without the GIL; the sum of the TCB ids.'''
    cdef DepthPoolAllocator a = DepthPoolAllocator([(2, 3), (1, 1)], 1)
    cdef dpa_t* d = &a.core
    cdef long total = 0
    cdef int i
    cdef tcb_t t, u
    with nogil:
        for i in range(n):
            t = dpa_acquire(d, i % 4, 1)
            u = dpa_acquire(d, (i + 1) % 4, 1)
            total += t + u
            dpa_release(d, t)
            dpa_release(d, u)
    a.check()
    return total


def handoff():
    '''A queued request served by a release, seen through the grants queue.'''
    cdef DepthPoolAllocator a = DepthPoolAllocator([(1, 1)], 0, max_processes=8, max_waiters=4)
    cdef dpa_t* d = &a.core
    cdef tcb_t first, queued, bad, granted_tcb = -1
    cdef proc_t granted_pid = -1
    cdef int got, none_left
    with nogil:
        first = dpa_acquire(d, 1, 1)
        queued = dpa_acquire(d, 2, 1)
        bad = dpa_try_acquire(d, 99, 1)
        dpa_release(d, first)
        got = dpa_take_grant(d, &granted_pid, &granted_tcb)
        none_left = dpa_take_grant(d, &granted_pid, &granted_tcb)
    a.check()
    return (
        first, queued == DPA_PENDING, bad == DPA_BAD_ARG, got, none_left,
        granted_pid, granted_tcb, dpa_holder(d, granted_tcb), dpa_level_of(d, granted_tcb),
        a.pending(),
    )


def batch():
    '''dpa_acquire_many: all or nothing; a refused batch leaves no trace.'''
    cdef DepthPoolAllocator a = DepthPoolAllocator([(2, 1)], 0, max_processes=8, max_waiters=1)
    cdef proc_t pids[4]
    cdef int32_t levels[4]
    cdef tcb_t out[4]
    cdef Py_ssize_t refused_at, done
    cdef tcb_t refused_code
    pids[:] = [1, 2, 3, 4]
    levels[:] = [1, 1, 1, 1]
    with nogil:
        refused_at = dpa_acquire_many(&a.core, pids, levels, out, 4)  # the 4th finds the queue full
        refused_code = out[refused_at]
    a.check()
    before = (a.pending(), a.stats()["served_pool"], a.stats()["queued"])
    with nogil:
        done = dpa_acquire_many(&a.core, pids, levels, out, 3)
    a.check()
    return (
        refused_at, refused_code == DPA_QUEUE_FULL, before,
        done, [out[0], out[1], out[2] == DPA_PENDING], a.pending(),
    )


def tickets():
    '''Name pending requests, cancel one, see which request each grant served.'''
    cdef DepthPoolAllocator a = DepthPoolAllocator([(1, 1)], 0, max_processes=8, max_waiters=4)
    cdef dpa_t* d = &a.core
    cdef seq_t t1, t2, t3, ticket = -1
    cdef proc_t pid = -1
    cdef tcb_t tcb = -1
    cdef int c_ok, c_again, c_neg, got
    with nogil:
        dpa_acquire(d, 1, 1)
        dpa_acquire(d, 2, 1)
        t1 = dpa_last_ticket(d)
        dpa_acquire(d, 3, 1)
        t2 = dpa_last_ticket(d)
        dpa_acquire(d, 4, 1)
        t3 = dpa_last_ticket(d)
        c_ok = dpa_cancel_request(d, t2)
        c_again = dpa_cancel_request(d, t2)
        c_neg = dpa_cancel_request(d, -1)
        dpa_release(d, 0)
        got = dpa_take_grant_ticket(d, &pid, &tcb, &ticket)
    a.check()
    return (t1, t2, t3, c_ok, c_again, c_neg == DPA_BAD_ARG, got, pid, tcb, ticket, a.pending())


def release_batch():
    '''dpa_release_many: all or nothing, the first bad id, then a repeat.'''
    cdef DepthPoolAllocator a = DepthPoolAllocator([(1, 3)], 0, max_processes=8)
    cdef tcb_t ids[3]
    cdef Py_ssize_t r1, r2, r3
    cdef int c1, c2, c3
    with nogil:
        ids[0] = dpa_acquire(&a.core, 1, 1)
        ids[1] = dpa_acquire(&a.core, 1, 1)
        ids[2] = ids[0]
        r1 = dpa_release_many(&a.core, ids, 3, &c1)  # TCB 0 twice
        ids[2] = 2
        r2 = dpa_release_many(&a.core, ids, 3, &c2)  # TCB 2 is free
        r3 = dpa_release_many(&a.core, ids, 2, &c3)
    a.check()
    return (r1, c1 == DPA_DUPLICATE, r2, c2 == DPA_BAD_ARG, r3, c3, a.stats()["released"])


def holder_out_of_range():
    '''check() names a holder that is no pid (C code can write one; the checks index per-pid tables by it).'''
    cdef DepthPoolAllocator a = DepthPoolAllocator([(1, 1)], 1, max_processes=8)
    a.acquire(1)
    a.core.holder[0] = 5000
    try:
        a.check()
        msg = None
    except RuntimeError as exc:
        msg = str(exc)
    a.core.holder[0] = 1
    a.check()
    return msg


def bad_level():
    '''dpa_acquire raises from nogil code.'''
    cdef DepthPoolAllocator a = DepthPoolAllocator([(1, 1)], 0)
    with nogil:
        dpa_acquire(&a.core, 0, 2)
"""

SETUP_PY = """\
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    name="downstream",
    ext_modules=cythonize(
        [Extension("downstream", ["downstream.pyx"])],
        include_path=[{include!r}],
        compiler_directives={{"language_level": 3}},
    ),
    script_args=["build_ext", "--inplace", "--quiet"],
)
"""

RUN_PY = """\
import downstream

print(downstream.churn(1000))
print(downstream.handoff())
print(downstream.batch())
print(downstream.tickets())
print(downstream.release_batch())
print(downstream.holder_out_of_range())
try:
    downstream.bad_level()
except ValueError as exc:
    print("ValueError:", exc)
"""


def test_the_pxd_files_ship_with_the_package() -> None:
    core = Path(pyresv.get_include()) / "pyresv" / "_core"
    assert (core / "__init__.pxd").is_file()
    assert (core / "allocator.pxd").is_file()


def test_downstream_cython_cimports_and_runs_nogil(tmp_path: Path) -> None:
    (tmp_path / "downstream.pyx").write_text(DOWNSTREAM_PYX)
    (tmp_path / "setup.py").write_text(SETUP_PY.format(include=pyresv.get_include()))
    (tmp_path / "run.py").write_text(RUN_PY)
    build = subprocess.run(
        [sys.executable, "setup.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run(
        [sys.executable, "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # churn: two pids at a time take the two level-1 pools, whose first TCBs
    # are 0 and 3: 3 per pair of acquires.
    assert run.stdout.splitlines() == textwrap.dedent(
        """\
        3000
        (0, True, True, 1, 0, 2, 0, 2, 1, 0)
        (3, True, (0, 0, 0), 3, [0, 1, True], 1)
        (0, 1, 2, 1, 0, True, 1, 2, 0, 0, 1)
        (2, True, 2, True, 2, 0, 2)
        TCB 0 held by pid 5000, out of range [0, 8)
        ValueError: level 2 out of range [1, 1]
        """
    ).splitlines()


# The cimport surface is narrow (numpy's random/__init__.pxd): the functions,
# codes, typedefs and the class, not the wait queue's or the grants' internals.
@pytest.mark.parametrize("name", ["waitq_t", "waiter_t", "slot_list_t", "WQ_LEVEL", "grants_reserve", "grants_t"])
def test_internals_are_not_exported(tmp_path: Path, name: str) -> None:
    from Cython.Build import cythonize
    from Cython.Compiler.Errors import CompileError

    (tmp_path / "peek.pyx").write_text(f"from pyresv._core cimport {name}\n")
    with pytest.raises(CompileError):
        cythonize(str(tmp_path / "peek.pyx"), include_path=[pyresv.get_include()], quiet=True)


def test_the_exported_api_compiles(tmp_path: Path) -> None:
    from Cython.Build import cythonize

    names = [
        "DepthPoolAllocator", "dpa_t", "tcb_t", "proc_t", "pool_t", "seq_t", "count_t",
        "DPA_NIL", "DPA_PENDING", "DPA_QUEUE_FULL", "DPA_BAD_ARG", "DPA_NO_MEMORY", "DPA_DUPLICATE", "DPA_LIMIT",
        "DPA_WAKE_DEEPEST", "DPA_WAKE_FIFO", "dpa_acquire", "dpa_try_acquire", "dpa_acquire_many",
        "dpa_release", "dpa_try_release", "dpa_release_many", "dpa_take_grant", "dpa_take_grant_ticket",
        "dpa_last_ticket", "dpa_cancel", "dpa_cancel_request", "dpa_release_all", "dpa_holder",
        "dpa_level_of", "dpa_pool_of", "dpa_owned_pool", "dpa_pending",
    ]
    (tmp_path / "api.pyx").write_text(f"from pyresv._core cimport {', '.join(names)}\n")
    cythonize(str(tmp_path / "api.pyx"), include_path=[pyresv.get_include()], quiet=True)
