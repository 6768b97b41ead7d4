"""DepthLimiter: nested asyncio slots that cannot deadlock where asyncio.Semaphore does."""

from __future__ import annotations

import asyncio
import random
import sys

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
        all_hold = asyncio.Barrier(4)

        async def child():
            async with sem:
                await asyncio.sleep(0)

        async def parent():
            async with sem:
                await all_hold.wait()  # every parent holds a permit before any child asks
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

    both_hold = asyncio.Barrier(2)  # two trees at a time own the two level-1 pools

    async def parent(i):
        async with lim.slot() as tcb:
            log.append(("parent", i, lim.allocator.level_of(tcb)))
            await both_hold.wait()  # both level-1 pools held before any child asks
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
            for _ in range(rng.randint(0, 3)):  # interleave the trees, in a seeded order
                await asyncio.sleep(0)
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


# ------------------------------------------------------------------ anyio
# The same limiter under anyio, on both of its backends, used the way
# anyio.CapacityLimiter is. Ordering comes from events, never from sleeps.
anyio = pytest.importorskip("anyio")  # in the test extra; the base install runs the asyncio tests alone
BACKENDS = ["asyncio", "trio"]


class _Gate:
    """Opens when ``n`` tasks have arrived: an anyio barrier for one round."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.opened = anyio.Event()

    async def arrive(self) -> None:
        self.n -= 1
        if self.n == 0:
            self.opened.set()
        await self.opened.wait()


@pytest.mark.parametrize("backend", BACKENDS)
def test_anyio_capacity_limiter_deadlocks_where_depth_limiter_completes(backend, allocator_cls):
    async def nested(limiter, gate, log):
        async def child(i):
            async with limiter:
                log.append(("child", i))

        async def parent(i):
            async with limiter:
                await gate.arrive()  # every parent holds its slot before any child asks
                async with anyio.create_task_group() as tg:
                    tg.start_soon(child, i)

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(parent, i)

    async def main():
        stuck: list = []
        with anyio.move_on_after(0.5) as scope:  # nothing can move: shown with a timeout
            await nested(anyio.CapacityLimiter(4), _Gate(4), stuck)
        assert scope.cancelled_caught and stuck == []
        # Four slots too, reserved per level: two trees at a time, each with its child's slot.
        lim = DepthLimiter([(2, 1), (2, 1)], allocator_cls=allocator_cls)
        done: list = []
        with anyio.fail_after(WAIT):
            await nested(lim, _Gate(2), done)
        return lim, sorted(done)

    lim, done = anyio.run(main, backend=backend)
    assert done == [("child", i) for i in range(4)]
    assert_idle(lim)


@pytest.mark.parametrize("backend", BACKENDS)
def test_anyio_levels_and_the_capacity_limiter_api(backend, allocator_cls):
    lim = DepthLimiter([(1, 2)] * 2, 1, allocator_cls=allocator_cls)
    seen = []

    async def leaf(tag):
        async with lim.slot() as tcb:
            seen.append((tag, None if tcb is None else lim.allocator.level_of(tcb), lim.borrowed_tokens))

    async def main():
        assert (lim.total_tokens, lim.borrowed_tokens, lim.available_tokens) == (5, 0, 5)
        async with lim:  # like anyio.CapacityLimiter: level 1, a new tree
            seen.append(("root", lim.borrowed_tokens))
            async with anyio.create_task_group() as tg:  # task groups copy the context
                tg.start_soon(leaf, "task")
            await lim.acquire()  # level 2 in this task, until release()
            seen.append(("acquired", lim.borrowed_tokens, lim.available_tokens))
            await leaf("below")  # level 3 > D: admitted without a TCB
            lim.release()
            seen.append(("released", lim.borrowed_tokens))
        with pytest.raises(RuntimeError, match="holds no slot of this limiter"):
            lim.release()
        async with lim.slot():
            with pytest.raises(RuntimeError, match=r"entered with slot\(\): leave its block instead"):
                lim.release()
            assert lim.borrowed_tokens == 1  # still held, by the block

    anyio.run(main, backend=backend)
    assert seen == [
        ("root", 1), ("task", 2, 2), ("acquired", 2, 3), ("below", None, 2), ("released", 1),
    ]  # fmt: skip
    assert_idle(lim)


async def _hold(lim: DepthLimiter, scopes: list, log: list, tag: str) -> None:
    """Enter a slot in a cancel scope of this task's own (``scopes[-1]``), log, and wait there."""
    with anyio.CancelScope() as scope:
        scopes.append(scope)
        async with lim.slot() as tcb:
            log.append((tag, tcb))
            await anyio.sleep_forever()


async def _until(cond) -> None:
    # Let the other tasks run until cond() holds; each pass yields to them once.
    with anyio.fail_after(WAIT):
        while not cond():
            await anyio.lowlevel.checkpoint()


@pytest.mark.parametrize("backend", BACKENDS)
def test_anyio_cancelling_a_task_that_holds_a_slot(backend, allocator_cls):
    lim = DepthLimiter([(1, 1)], allocator_cls=allocator_cls)
    log: list = []

    async def main():
        holder: list = []
        waiter: list = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_hold, lim, holder, log, "holder")
            await _until(lambda: log == [("holder", 0)])
            tg.start_soon(_hold, lim, waiter, log, "waiter")  # another tree: waits for the only slot
            await _until(lambda: lim.allocator.pending() == 1)
            holder[0].cancel()  # cancel the task that holds the slot
            await _until(lambda: len(log) == 2)  # its slot went to the waiter
            assert lim.allocator.holder(0) >= 0 and lim.allocator.pending() == 0
            waiter[0].cancel()

    anyio.run(main, backend=backend)
    assert log == [("holder", 0), ("waiter", 0)]
    assert_idle(lim)


@pytest.mark.parametrize("backend", BACKENDS)
def test_anyio_cancelling_a_waiter_and_a_granted_waiter(backend, allocator_cls):
    """A cancelled wait leaves no request; one cancelled right after its grant gives the TCB back."""
    lim = DepthLimiter([(1, 1)], allocator_cls=allocator_cls)
    log: list = []

    async def main():
        first: list = []
        second: list = []
        go = anyio.Event()

        async def holder():
            await lim.acquire()
            log.append("holder")
            await go.wait()
            lim.release()  # grants the slot to the second waiter ...
            second[0].cancel()  # ... which is cancelled before it runs again

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await _until(lambda: log == ["holder"])
            tg.start_soon(_hold, lim, first, log, "first")
            await _until(lambda: lim.allocator.pending() == 1)
            first[0].cancel()  # cancelled while waiting: its request goes, nothing else
            await _until(lambda: lim.allocator.pending() == 0)
            tg.start_soon(_hold, lim, second, log, "second")
            await _until(lambda: lim.allocator.pending() == 1)
            go.set()

    anyio.run(main, backend=backend)
    # anyio, on both backends, lets a wait that was already granted return and
    # cancels at the next checkpoint, inside the block, whose exit gives the TCB
    # back (plain asyncio cancels at the wait itself: the test above).
    assert log == ["holder", ("second", 0)]
    assert_idle(lim)


def test_trio_without_anyio_names_it(monkeypatch):
    """Outside asyncio the limiter waits through anyio: without it, any slot is refused, state unchanged."""
    trio = pytest.importorskip("trio")
    lim = DepthLimiter([(1, 1)])

    async def main():
        async with lim.slot():
            pass

    monkeypatch.setitem(sys.modules, "anyio", None)  # import anyio -> ImportError
    before = lim.allocator.stats()
    with pytest.raises(RuntimeError, match=r"^DepthLimiter outside an asyncio event loop \(trio\) waits through "
                                           r"anyio, which is not installed: pip install anyio$"):
        trio.run(main)
    assert lim.allocator.stats() == before
    assert_idle(lim)


# ------------------------------------------------------------ trust (issue 11)
def test_depths_given_as_a_one_shot_iterator(allocator_cls):
    with pytest.raises(ValueError, match=r"depths\[0\] \(level 1\) has no pool"):
        DepthLimiter(iter([(0, 1), (1, 1)]), 2, allocator_cls=allocator_cls)
    lim = DepthLimiter(iter([iter((1, 1)), (1, 1)]), allocator_cls=allocator_cls)
    assert lim.levels == 2 and lim.total == 2

    async def main():
        async with lim.slot() as a:
            async with lim.slot() as b:
                return lim.allocator.level_of(a), lim.allocator.level_of(b)

    assert asyncio.run(asyncio.wait_for(main(), WAIT)) == (1, 2)
    assert_idle(lim)


def test_the_allocator_is_read_only():
    lim = DepthLimiter([(1, 1)])
    view = lim.allocator
    for name in ("acquire", "release", "cancel", "release_all", "take_grants", "acquire_many", "release_many"):
        assert not hasattr(view, name), name
    assert (view.levels, view.total, view.wake, view.pending(), view.holder(0), view.level_of(0)) == (
        1, 1, "deepest", 0, -1, 1,
    )  # fmt: skip


def test_a_withdrawn_wait_leaves_the_others_of_its_tree_in_place(allocator_cls):
    """Cancelling one of a tree's waits keeps its other waits where they were in the queue.

    Tree X waits twice at level 2 (x2, x3), then tree Y once (y1); x2 is
    cancelled. The freed unreserved slot goes to the oldest waiter at the
    deepest level: x3, which arrived before y1.
    """
    lim = DepthLimiter([(2, 1), (1, 1)], 1, allocator_cls=allocator_cls)
    order: list = []

    async def main():
        release = {name: asyncio.Event() for name in ("x0", "x1", "x3", "y1")}
        tasks = {}

        async def child(name):
            async with lim.slot():
                order.append(name)
                await release[name].wait()

        async def tree_x():
            async with lim.slot():
                for n, name in enumerate(("x0", "x1", "x2", "x3"), start=1):  # x0: the level-2 pool,
                    tasks[name] = asyncio.create_task(child(name))  # x1: the unreserved slot
                    await _yield_until(lambda n=n: len(order) + lim.allocator.pending() == n)
                await asyncio.gather(*(tasks[n] for n in ("x0", "x1", "x3")))

        async def tree_y():
            async with lim.slot():
                tasks["y1"] = asyncio.create_task(child("y1"))
                await tasks["y1"]

        x = asyncio.create_task(tree_x())
        await _yield_until(lambda: lim.allocator.pending() == 2)  # x2 and x3 wait
        y = asyncio.create_task(tree_y())
        await _yield_until(lambda: lim.allocator.pending() == 3)  # then y1
        assert order == ["x0", "x1"]
        tasks["x2"].cancel()
        await _yield_until(lambda: lim.allocator.pending() == 2)
        release["x1"].set()  # frees the unreserved slot
        await _yield_until(lambda: len(order) == 3)
        assert order == ["x0", "x1", "x3"]
        for name in ("x0", "x3", "y1"):
            release[name].set()
        await asyncio.wait_for(asyncio.gather(x, y), WAIT)

    asyncio.run(main())
    assert sorted(order) == ["x0", "x1", "x3", "y1"]
    assert_idle(lim)


async def _yield_until(cond) -> None:
    """Yield to the other tasks until ``cond()`` holds (they run in turn: no clock involved)."""
    for _ in range(10_000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")
