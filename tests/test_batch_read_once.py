"""Batches read the caller's arrays once (DESIGN §4, issue 11 §1).

``release_many`` and ``acquire_many`` run their loops without the GIL, so
another thread may write to the arrays they were given while they run. A
batch must work on the values it read once: a private copy, validated and
then applied. Two tests show it:

* deterministic: the core's test hook runs right after a batch read its
  input, and writes to that input (as a racing thread would). The batch must
  act on what it read, as if the write came after the call. An
  implementation that reads the array again to apply it (the bug: validate
  one pass, release in another) releases a TCB twice here, or one that is
  not an id at all.
* concurrent: threads that flip an array between valid and invalid ids with
  numpy (which drops the GIL) while batches run; whatever the interleaving,
  each batch either raises a clean error with the state unchanged, or is a
  loop over some mix of the values, and ``check()`` passes. This one passes
  with any correct implementation; it cannot prove the absence of a race,
  only that none of the interleavings it met crashed or corrupted the state.
"""

from __future__ import annotations

import os
import pickle
import threading
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from pyresv import AllocatorError, DepthPoolAllocator
from pyresv._core import allocator as core


@pytest.fixture
def hook() -> Iterator[Callable[[Callable[[], None] | None], None]]:
    yield core._set_batch_read_hook
    core._set_batch_read_hook(None)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.intp])
def test_release_many_acts_on_what_it_read(hook: Any, dtype: type) -> None:
    a = DepthPoolAllocator([(2, 4)], 4, max_processes=8, max_waiters=8)
    tcbs = np.array([a.acquire(1), a.acquire(1), a.acquire(2)], dtype=dtype)
    assert tcbs.tolist() == [0, 1, 4]
    calls = []

    def mutate() -> None:
        # Between "read" and "apply": a duplicate of the first id, then an id
        # far out of range (a write past the holder table if it were used).
        calls.append(1)
        tcbs[1] = tcbs[0]
        tcbs[2] = 2**30

    hook(mutate)
    a.release_many(tcbs)
    assert calls == [1]
    a.check()
    assert [a.holder(t) for t in (0, 1, 4)] == [-1, -1, -1]
    assert a.stats()["released"] == 3


def test_release_many_refusal_names_what_it_read(hook: Any) -> None:
    a = DepthPoolAllocator([(2, 4)], 4, max_processes=8, max_waiters=8)
    tcbs = np.array([a.acquire(1), 7], dtype=np.int32)  # 7 is free
    blob = pickle.dumps(a)

    def mutate() -> None:
        tcbs[1] = tcbs[0]  # would now be a duplicate; the batch read 7

    hook(mutate)
    with pytest.raises(AllocatorError, match="^TCB 7 is free: released twice[?]$"):
        a.release_many(tcbs)
    assert pickle.dumps(a) == blob


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_acquire_many_acts_on_what_it_read(hook: Any, dtype: type) -> None:
    a = DepthPoolAllocator([(2, 2)] * 2, 1, max_processes=4, max_waiters=8)
    pids = np.array([1, 1, 2], dtype=dtype)
    depths = np.array([1, 2, 1], dtype=dtype)
    remote = np.array([False, False, True])

    def mutate() -> None:
        pids[:] = 10**6  # out of range, and an index far past the tables
        depths[:] = 10**6
        remote[:] = True

    hook(mutate)
    got = a.acquire_many(pids, depths, remote)
    hook(None)
    b = DepthPoolAllocator([(2, 2)] * 2, 1, max_processes=4, max_waiters=8)
    assert got.tolist() == [b.acquire(1, 1), b.acquire(1, 2), b.acquire(2, 1, True)]
    a.check()
    assert a.stats() == b.stats()


# ---------------------------------------------------------------- threads


def test_batches_with_arrays_written_by_other_threads() -> None:
    # Writers flip the array between held ids and ids far out of range with
    # numpy (which releases the GIL for arrays this big) while batches run.
    n = 1 << 16
    a = DepthPoolAllocator([(1, n)], 0, max_processes=2, max_waiters=4)
    good = np.arange(n, dtype=np.int32)
    bad = np.full(n, 2**30, dtype=np.int32)
    shared = good.copy()
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            np.copyto(shared, bad)
            np.copyto(shared, good)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    outcomes = {"released": 0, "refused": 0}
    try:
        for _ in range(30):
            got = a.acquire_many(np.ones(n, np.int32), np.ones(n, np.int32))
            assert sorted(got.tolist()) == list(range(n))
            before = pickle.dumps(a)
            try:
                a.release_many(shared)
            except AllocatorError as exc:
                # Refused as a whole: nothing was released.
                assert "is not an id of this allocator" in str(exc) or "appears twice" in str(exc)
                assert pickle.dumps(a) == before
                outcomes["refused"] += 1
                a.release_many(good)
            else:
                outcomes["released"] += 1
            a.check()
            assert a.stats()["free"] == [n]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert sum(outcomes.values()) == 30, outcomes
    print(outcomes)


def test_the_build_under_test() -> None:
    # CI runs these tests once more against the checked build (bounds checks,
    # C asserts, AddressSanitizer) and sets PYRESV_EXPECT_CHECKED=1: make
    # sure that is the build imported.
    if os.environ.get("PYRESV_EXPECT_CHECKED") == "1":
        assert core._CHECKED, core.__file__
