"""Tickets: naming one pending request, and cancelling just that one (issue 14 §4).

A request's ticket is its arrival number: unique and increasing per
allocator, kept by pickling. ``last_ticket`` is the ticket of the newest
request that returned PENDING; ``cancel_request(ticket)`` drops that request
only (the others keep their place); ``take_grants(tickets=True)`` says which
request each grant served. Both implementations, the same answers.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from pyresv import PENDING, DepthPoolAllocator


def make(cls: type, depths: Any = ((1, 1),), unreserved: int = 0, **kw: Any) -> Any:
    kw.setdefault("max_processes", 8)
    kw.setdefault("max_waiters", 8)
    return cls(list(depths), unreserved, **kw)


def test_last_ticket_counts_queued_requests_only(allocator_cls: type) -> None:
    a = make(allocator_cls, unreserved=1)
    assert a.last_ticket == -1
    assert (a.acquire(0), a.acquire(1)) == (0, 1)  # served at once: no ticket
    assert a.last_ticket == -1
    assert a.acquire(2) == PENDING
    assert a.last_ticket == 0
    assert a.acquire(3) == PENDING
    assert a.last_ticket == 1


def test_cancel_request_keeps_the_others_in_place(allocator_cls: type) -> None:
    # One pool of one TCB, held by pid 0; pids 1, 2, 3 wait in that order.
    a = make(allocator_cls)
    assert a.acquire(0) == 0
    tickets = []
    for pid in (1, 2, 3):
        assert a.acquire(pid) == PENDING
        tickets.append(a.last_ticket)
    assert tickets == [0, 1, 2]
    assert a.cancel_request(tickets[1]) is True
    assert (a.pending(), a.pending(2), a.stats()["cancelled"]) == (2, 0, 1)
    a.check()
    a.release(0)  # FIG 6A block 610: the freed pool goes to the oldest waiter, pid 1
    assert a.take_grants(tickets=True) == [(1, 0, tickets[0])]
    a.release(0)  # then pid 3: pid 2's request is gone, pid 3 kept its place
    assert a.take_grants(tickets=True) == [(3, 0, tickets[2])]
    a.check()


def test_cancel_request_of_one_of_a_pids_requests(allocator_cls: type) -> None:
    # cancel(pid) drops all of a pid's requests; cancel_request just one.
    a = make(allocator_cls, [(1, 2)])
    assert (a.acquire(0), a.acquire(0)) == (0, 1)
    assert [a.acquire(0), a.acquire(0), a.acquire(0)] == [PENDING] * 3
    assert a.cancel_request(1) is True
    assert a.pending(0) == 2
    a.release(0)
    a.release(1)
    assert a.take_grants(tickets=True) == [(0, 0, 0), (0, 1, 2)]
    a.check()


def test_cancel_request_of_what_is_not_pending(allocator_cls: type) -> None:
    a = make(allocator_cls)
    assert a.acquire(0) == 0
    assert a.acquire(1) == PENDING
    t = a.last_ticket
    a.release(0)
    assert a.take_grants(tickets=True) == [(1, 0, t)]
    before = pickle.dumps(a)
    assert a.cancel_request(t) is False  # granted
    assert a.cancel_request(t + 1) is False  # never issued
    assert a.cancel_request(2**70) is False  # never issued, beyond int64
    assert pickle.dumps(a) == before
    assert a.acquire(2) == PENDING
    assert a.cancel_request(a.last_ticket) is True
    assert a.cancel_request(a.last_ticket) is False  # cancelled already
    assert a.stats()["cancelled"] == 1


@pytest.mark.parametrize(
    ("ticket", "match"),
    [
        (-1, "ticket -1 is negative"),
        (-(2**70), "ticket -1180591620717411303424 is negative"),
        (1.0, "ticket must be an int, got 1.0"),
        ("0", "ticket must be an int, got '0'"),
        (None, "ticket must be an int, got None"),
        (True, "ticket must be an int, got True"),
    ],
)
def test_cancel_request_refuses_bad_tickets(allocator_cls: type, ticket: Any, match: str) -> None:
    a = make(allocator_cls)
    assert a.acquire(0) == 0 and a.acquire(1) == PENDING
    before = pickle.dumps(a)
    with pytest.raises(ValueError, match=f"^{match}$"):
        a.cancel_request(ticket)
    assert pickle.dumps(a) == before


def test_cancel_request_takes_numpy_ints(allocator_cls: type) -> None:
    a = make(allocator_cls)
    assert a.acquire(0) == 0 and a.acquire(1) == PENDING
    assert a.cancel_request(np.int64(a.last_ticket)) is True


def test_acquire_many_last_ticket_is_the_last_queued(allocator_cls: type) -> None:
    a = make(allocator_cls, [(1, 2)])
    got = a.acquire_many([0, 1, 0, 2, 3], [1, 1, 1, 1, 1])
    assert got.tolist() == [0, PENDING, 1, PENDING, PENDING]
    assert a.last_ticket == 2  # pids 1, 2, 3 queued with tickets 0, 1, 2
    assert a.cancel_request(1) is True
    a.release_many([0, 1])  # pool wholly free: to pid 1 (ticket 0); pid 3 waits on
    assert a.take_grants(tickets=True) == [(1, 1, 0)]
    assert a.pending(3) == 1


def test_an_undone_batch_gives_its_tickets_back(allocator_cls: type) -> None:
    from pyresv import QueueFull

    a = make(allocator_cls, max_waiters=2)
    assert a.acquire(0) == 0 and a.acquire(1) == PENDING
    with pytest.raises(QueueFull):
        a.acquire_many([2, 3], [1, 1])
    assert a.last_ticket == 0
    assert a.acquire(2) == PENDING and a.last_ticket == 1


def test_tickets_survive_pickling(allocator_cls: type) -> None:
    a = make(allocator_cls, [(1, 1)], 1)
    assert (a.acquire(0), a.acquire(1)) == (0, 1)
    for pid in (2, 3, 4):
        assert a.acquire(pid) == PENDING
    a.release(1)  # unreserved: to pid 2's request (ticket 0)
    b = pickle.loads(pickle.dumps(a))
    assert b.last_ticket == a.last_ticket == 2
    assert b.take_grants(tickets=True) == a.take_grants(tickets=True) == [(2, 1, 0)]
    assert b.cancel_request(1) is True and b.cancel_request(0) is False
    b.release(0)
    assert b.take_grants(tickets=True) == [(4, 0, 2)]
    b.check()


def test_take_grants_with_tickets_drains_like_without(allocator_cls: type) -> None:
    a = make(allocator_cls, [(1, 1)], 1)
    assert (a.acquire(0), a.acquire(1)) == (0, 1)
    assert a.acquire(2) == PENDING and a.acquire(3) == PENDING
    a.release(0)
    a.release(1)
    assert a.take_grants(tickets=True) == [(2, 0, 0), (3, 1, 1)]
    assert a.take_grants() == a.take_grants(tickets=True) == []


def test_many_tickets_cancelled_in_any_order() -> None:
    # The core's ticket table (open addressing) under churn: cancel every
    # other request of a long queue, in a scrambled order, then serve the rest.
    n = 5000
    a = DepthPoolAllocator([(1, 1)], 0, max_processes=n + 1, max_waiters=n)
    assert a.acquire(n) == 0
    assert all(a.acquire(p) == PENDING for p in range(n))
    rng = np.random.default_rng(7)
    order = rng.permutation(np.arange(0, n, 2))
    assert all(a.cancel_request(int(t)) for t in order)
    a.check()
    assert a.pending() == n // 2
    served = []
    for _ in range(n // 2):
        a.release(0)
        (pid, tcb, ticket), = a.take_grants(tickets=True)
        served.append(ticket)
        assert pid == ticket  # pid p asked with ticket p
    assert served == list(range(1, n, 2))
    a.check()


@pytest.mark.parametrize("n", [1000, 10_000, 60_000])
def test_ticket_table_runs_stay_short_with_a_long_queue(n: int) -> None:
    # Tickets are consecutive arrival numbers. Hashed as ``ticket & mask`` the
    # pending requests filled one contiguous run of the core's ticket table,
    # and removing one (a grant to the head of the queue) walked the whole
    # run: n probes per release. A deletion walks at most to the end of its
    # run, so the longest run bounds the work of every grant and cancel.
    from pyresv._core.allocator import _ticket_runs

    a = DepthPoolAllocator([(1, 1)], 1, max_processes=n + 2, max_waiters=n)
    assert a.acquire(0) == 0
    t = a.acquire(1)
    assert t == 1  # the unreserved TCB
    assert all(a.acquire(p) == PENDING for p in range(2, n + 2))
    entries, longest = _ticket_runs(a)
    assert entries == n
    assert longest <= 64, longest  # was n
    # Serve the head and queue the served pid again at the tail, n times over:
    # every ticket 0 .. 2n-1 went through the table once.
    for _ in range(n):
        a.release(t)
        (pid, t), = a.take_grants()
        assert a.acquire(pid) == PENDING
    entries, longest = _ticket_runs(a)
    assert entries == n and longest <= 64, longest
    a.check()
    assert pickle.loads(pickle.dumps(a)).stats() == a.stats()
    assert _ticket_runs(pickle.loads(pickle.dumps(a))) == (entries, longest)  # rebuilt, same hash


def test_consecutive_tickets_stay_on_few_pages_of_the_ticket_table() -> None:
    # The table is calloc'ed (mapped lazily): a hash scattering consecutive
    # tickets over it (a Fibonacci hash, tried) touched a new page for almost
    # every request of a new allocator, about 250 page faults in the drop-in
    # SimPy resource's 800-request benchmark run against 16 before. Every
    # other entry, 600 consecutive tickets stay within 1,200 entries (4.8 KB).
    from pyresv._core.allocator import _ticket_entries

    a = DepthPoolAllocator([(1, 1)], 0)  # 65,536 waiters: a table of 131,072 entries
    assert a.acquire(0) == 0
    assert all(a.acquire(p) == PENDING for p in range(1, 601))
    entries = _ticket_entries(a)
    assert len(entries) == 600
    assert entries[-1] - entries[0] < 1200, (entries[0], entries[-1])
