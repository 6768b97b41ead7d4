"""DepthLimiter: nested asyncio slots that cannot deadlock where asyncio.Semaphore does."""

from __future__ import annotations

import asyncio
import random

import pytest

from pyresv.adapters.aio import DepthLimiter

WAIT = 10.0




def assert_idle(lim: DepthLimiter) -> None:
    alloc = lim.allocator
    alloc.check()
    st = alloc.stats()
    assert st["pending_total"] == 0 and sum(st["held"]) == 0 and st["unreserved_held"] == 0


# ---------------------------------------------------- the deadlock it removes
def test_semaphore_deadlocks_on_nested_acquire():
    async def main():
        sem = asyncio.Semaphore(4)

        async def child():
            async with sem:
                await asyncio.sleep(0)

        async def parent():
            async with sem:
                await asyncio.sleep(0.01)  # every parent holds a permit before any child asks
                await child()

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(parent() for _ in range(4))), 0.5)
        return sem.locked()

    # wait_for cancelled the parents: their permits came back
    assert asyncio.run(main()) is False


def test_depth_limiter_completes_with_the_same_count(allocator_cls):
    lim = DepthLimiter([(2, 1), (2, 1)], allocator_cls=allocator_cls)
    assert lim.total == 4
    log = []

    async def child(i):
        async with lim.slot() as tcb:
            log.append(("child", i, lim.allocator.level_of(tcb)))
            await asyncio.sleep(0)

    async def parent(i):
        async with lim.slot() as tcb:
            log.append(("parent", i, lim.allocator.level_of(tcb)))
            await asyncio.sleep(0.01)
            await child(i)

    async def main():
        await asyncio.wait_for(asyncio.gather(*(parent(i) for i in range(4))), WAIT)

    asyncio.run(main())
    assert sorted(log) == [("child", i, 2) for i in range(4)] + [("parent", i, 1) for i in range(4)]
    assert_idle(lim)


# ---------------------------------------------------------------- levels
def test_levels_follow_nesting_in_tasks_and_in_one_task(allocator_cls):
    lim = DepthLimiter([(1, 2)] * 3, allocator_cls=allocator_cls)
    seen = []

    async def leaf(tag):
        async with lim.slot() as tcb:
            seen.append((tag, lim.allocator.level_of(tcb)))

    async def main():
        async with lim.slot() as a:
            seen.append(("root", lim.allocator.level_of(a)))
            await asyncio.gather(leaf("task-1"), leaf("task-2"))  # tasks copy the context
            async with lim.slot() as b:  # nested in the same task
                seen.append(("inner", lim.allocator.level_of(b)))
                async with lim.slot() as c:
                    seen.append(("innermost", lim.allocator.level_of(c)))
                    async with lim.slot() as d:  # below level D: admitted without a TCB
                        seen.append(("beyond", d))
            async with lim.slot() as e:  # sequential: back to level 2
                seen.append(("again", lim.allocator.level_of(e)))
        await leaf("new tree")

    asyncio.run(asyncio.wait_for(main(), WAIT))
    assert seen == [
        ("root", 1), ("task-1", 2), ("task-2", 2), ("inner", 2), ("innermost", 3),
        ("beyond", None), ("again", 2), ("new tree", 1),
    ]  # fmt: skip
    assert_idle(lim)


def test_random_trees_complete(allocator_cls):
    rng = random.Random(5)

    def tree(depth):
        return [] if depth > 4 or rng.random() < 0.35 else [tree(depth + 1) for _ in range(rng.randint(1, 3))]

    forest = [tree(1) for _ in range(12)]

    def size(t):
        return 1 + sum(size(c) for c in t)

    lim = DepthLimiter([(2, 1), (2, 2), (1, 2)], 1, allocator_cls=allocator_cls)

    async def run(t):
        async with lim.slot():
            await asyncio.sleep(rng.random() * 0.002)
            counts = await asyncio.gather(*(run(c) for c in t))
        return 1 + sum(counts)

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(run(t) for t in forest)), WAIT)

    assert asyncio.run(main()) == [size(t) for t in forest]
    assert_idle(lim)


# --------------------------------------------------------- cancellation
def test_cancelled_wait_leaves_nothing_behind(allocator_cls):
    lim = DepthLimiter([(1, 1)], allocator_cls=allocator_cls)

    async def main():
        hold = asyncio.Event()

        async def holder():
            async with lim.slot():
                await hold.wait()

        h = asyncio.create_task(holder())
        await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_enter(lim), 0.05)
        assert lim.allocator.pending() == 0
        hold.set()
        await h
        assert await asyncio.wait_for(_enter(lim), WAIT) == 0

    asyncio.run(main())
    assert_idle(lim)


async def _enter(lim):
    async with lim.slot() as tcb:
        return tcb


def test_cancel_one_of_a_trees_waiters_keeps_the_others(allocator_cls):
    # Two child tasks of one tree wait at level 2 (one pid, two requests);
    # cancelling one must not drop the other's request.
    lim = DepthLimiter([(1, 1), (1, 1)], allocator_cls=allocator_cls)
    out = []

    async def main():
        release = asyncio.Event()

        async def child(tag):
            async with lim.slot():
                out.append(tag)
                await release.wait()

        async with lim.slot():
            first = asyncio.create_task(child("first"))
            await asyncio.sleep(0)  # first holds level 2's only TCB
            a = asyncio.create_task(child("a"))
            b = asyncio.create_task(child("b"))
            await asyncio.sleep(0)
            assert lim.allocator.pending() == 2
            a.cancel()
            await asyncio.sleep(0)
            assert lim.allocator.pending() == 1
            release.set()
            await asyncio.wait_for(asyncio.gather(first, b), WAIT)
            assert a.cancelled()

    asyncio.run(main())
    assert out == ["first", "b"]
    assert_idle(lim)


def test_task_cancelled_after_its_grant_gives_the_tcb_back(allocator_cls):
    lim = DepthLimiter([(1, 1)], allocator_cls=allocator_cls)

    async def main():
        async def waiter():
            async with lim.slot():
                await asyncio.sleep(WAIT)

        w = asyncio.create_task(waiter())  # created outside any slot: a tree of its own
        async with lim.slot():  # taken before w first runs
            await asyncio.sleep(0)
            assert lim.allocator.pending() == 1
        # the slot was granted to w; cancel w before it runs again
        w.cancel()
        with pytest.raises(asyncio.CancelledError):
            await w

    asyncio.run(main())
    assert_idle(lim)


def test_bad_configuration_and_reentry(allocator_cls):
    with pytest.raises(ValueError, match="level 1"):
        DepthLimiter([(0, 1)], 3, allocator_cls=allocator_cls)
    lim = DepthLimiter([(1, 1)], allocator_cls=allocator_cls)

    async def main():
        slot = lim.slot()
        async with slot:
            with pytest.raises(RuntimeError, match="already entered"):
                await slot.__aenter__()

    asyncio.run(main())
    assert_idle(lim)
