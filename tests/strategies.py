"""Hypothesis building blocks shared by the simulator's property tests."""

from __future__ import annotations

from typing import Any, Sequence

from hypothesis import strategies as st

#: Host operations a scripted burst draws from (reads twice as likely).
OPS = ("read", "read", "write", "partial-write", "destage")


def relationships(
    draw: st.DrawFn, nvol: int, *, min_tries: int, at_ms: Sequence[float], max_streams: int
) -> list[dict[str, Any]]:
    """Random FlashCopy relationships among ``nvol`` volumes, establish times ascending.

    A volume is the target of one relationship, and a target before it is a
    source (a cascade is established in order).
    """
    rels: list[dict[str, Any]] = []
    sources: set[int] = set()
    targets: set[int] = set()
    at = 0.0
    for _ in range(draw(st.integers(min_tries, 3))):
        s = draw(st.integers(0, nvol - 1))
        t = draw(st.integers(0, nvol - 1))
        if s == t or t in targets or t in sources:
            continue
        at = max(at, draw(st.sampled_from(list(at_ms))) * 1e-3)
        rels.append({
            "source": s, "target": t, "at_s": at,
            "background_copy": draw(st.booleans()), "copy_streams": draw(st.integers(1, max_streams)),
        })
        sources.add(s)
        targets.add(t)
    return rels


def host_ops(volumes: st.SearchStrategy[int], tracks: int, max_size: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Scripted host operations in the first 4 ms, on 0.25 ms ticks."""
    return st.lists(
        st.fixed_dictionaries({
            "at_s": st.integers(1, 16).map(lambda k: k * 0.25e-3),
            "op": st.sampled_from(OPS),
            "volume": volumes,
            "track": st.integers(0, tracks - 1),
        }),
        max_size=max_size,
    )
