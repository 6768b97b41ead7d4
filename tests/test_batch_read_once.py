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
from pyresv import reference
from pyresv._core import allocator as core
from pyresv.reference import DepthPoolAllocator as Reference


# Each implementation with its test hook: the reference has the core's twin,
# so the same tests hold both to the rule.
IMPLS = {
    "cython": (DepthPoolAllocator, core._set_batch_read_hook),
    "reference": (Reference, reference._set_batch_read_hook),
}
Hook = Callable[[Callable[[], None] | None], None]


@pytest.fixture(params=sorted(IMPLS))
def impl(request: pytest.FixtureRequest) -> Iterator[tuple[type, Hook]]:
    cls, set_hook = IMPLS[request.param]
    yield cls, set_hook
    set_hook(None)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.intp])
def test_release_many_acts_on_what_it_read(impl: tuple[type, Hook], dtype: type) -> None:
    cls, hook = impl
    a = cls([(2, 4)], 4, max_processes=8, max_waiters=8)
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


def test_release_many_refusal_names_what_it_read(impl: tuple[type, Hook]) -> None:
    cls, hook = impl
    a = cls([(2, 4)], 4, max_processes=8, max_waiters=8)
    tcbs = np.array([a.acquire(1), 7], dtype=np.int32)  # 7 is free
    blob = pickle.dumps(a)

    def mutate() -> None:
        tcbs[1] = tcbs[0]  # would now be a duplicate; the batch read 7

    hook(mutate)
    with pytest.raises(AllocatorError, match="^TCB 7 is free: released twice[?]$"):
        a.release_many(tcbs)
    assert pickle.dumps(a) == blob


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_acquire_many_acts_on_what_it_read(impl: tuple[type, Hook], dtype: type) -> None:
    cls, hook = impl
    a = cls([(2, 2)] * 2, 1, max_processes=4, max_waiters=8)
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
    b = cls([(2, 2)] * 2, 1, max_processes=4, max_waiters=8)
    assert got.tolist() == [b.acquire(1, 1), b.acquire(1, 2), b.acquire(2, 1, True)]
    a.check()
    assert a.stats() == b.stats()


# The hostile report's race (F2), made deterministic: a write to the caller's
# array after the batch read it. The reference used to validate one pass and
# build its requests in a second, so the write got in unvalidated: TCB 0 went
# to pid 5000 of max_processes=1000 (and check() passed), or to pid -3, or an
# IndexError escaped for a depth past the last level.
@pytest.mark.parametrize(
    "write",
    [("pids", 5000), ("pids", -3), ("depths", 3), ("depths", 0)],
    ids=["pid-too-big", "pid-negative", "depth-past-D", "depth-zero"],
)
@pytest.mark.parametrize("layout", ["int64", "int32", "object", "strided"])
def test_a_write_after_the_read_never_reaches_the_state(
    impl: tuple[type, Hook], write: tuple[str, int], layout: str
) -> None:
    cls, hook = impl
    n = 40
    arrays = {"pids": np.ones(n, dtype=np.int64), "depths": np.ones(n, dtype=np.int64)}
    if layout == "int32":
        arrays = {k: v.astype(np.int32) for k, v in arrays.items()}
    elif layout == "object":
        arrays = {k: v.astype(object) for k, v in arrays.items()}
    elif layout == "strided":
        arrays = {k: np.repeat(v, 2)[::2] for k, v in arrays.items()}
    remote = np.array([True] + [False] * (n - 1))
    name, value = write

    def mutate() -> None:
        arrays[name][0] = value

    a = cls([(4, 2)] * 3, 4, max_processes=1000, max_waiters=64)
    hook(mutate)
    got = a.acquire_many(arrays["pids"], arrays["depths"], remote)
    hook(None)
    assert arrays[name][0] == value  # the write happened, during the call
    b = cls([(4, 2)] * 3, 4, max_processes=1000, max_waiters=64)
    assert got.tolist() == [b.acquire(1, 1, True)] + [b.acquire(1, 1) for _ in range(n - 1)]
    a.check()
    assert a.stats() == b.stats()
    assert pickle.dumps(a) == pickle.dumps(b)
    assert sorted({a.holder(t) for t in range(a.total)} - {-1}) == [1]


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
