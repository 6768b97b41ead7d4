"""Controller topology: clusters, volumes and their caches, initialization.

* A controller has C >= 2 clusters (FIG 1: cluster0 115a, cluster1 115b); each
  has its own allocator (resource manager 118a/118b) and cache (124a/124b).
* Volume ``i`` lives on cluster ``i % C``: that cluster's cache holds its
  tracks and every step touching its data runs there.
* Initialization (FIGs 2A/2B): each cluster carves N1..ND TCBs for the depth
  pools out of its budget; when that fails it retries with smaller pools
  ([0027]) and accepts work only after its live peers report ready ([0026]).
* Failover (``[faults]``): when a cluster fails, its volumes move to the next
  live cluster (:attr:`Volume.home` changes). Their cache and relationship
  tables survive: the model assumes the survivor holds a copy of the failed
  cluster's modified data in its non-volatile storage (NVS), as a
  two-cluster controller's NVS does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from pyresv.errors import ConfigError

#: A track's content: the versions of the writes that made it.
Content = tuple[int, ...]
#: The content of a track nobody has written.
BLANK: Content = (0,)

__all__ = [
    "BLANK", "Content", "InitAttempt", "InitResult", "carve", "levels_needed", "home_of", "Volume", "Cluster",
    "Relationship", "PENDING_REL", "ACTIVE", "ENDED", "WITHDRAWN", "FAILED",
]


def home_of(volume: int, clusters: int) -> int:
    """The cluster that owns ``volume``'s data."""
    return volume % clusters


# ----------------------------------------------------------- initialization
@dataclass(frozen=True)
class InitAttempt:
    """One pass through FIG 2A/2B blocks 200-210."""

    depths: tuple[tuple[int, int], ...]
    ok: bool
    failed_level: int = 0  # the level whose N_l did not fit (0: none)
    needed: int = 0  # N_l of that level
    available: int = 0  # TCBs left in the budget when it failed

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the run summary."""
        d: dict[str, Any] = {"depths": [list(x) for x in self.depths], "ok": self.ok}
        if not self.ok:
            d.update(failed_level=self.failed_level, needed=self.needed, available=self.available)
        return d


@dataclass(frozen=True)
class InitResult:
    """Every attempt made and the depths finally carved."""

    attempts: tuple[InitAttempt, ...]
    depths: tuple[tuple[int, int], ...]

    @property
    def reserved(self) -> int:
        """TCBs carved for the depth pools."""
        return sum(p * s for p, s in self.depths)


def carve(
    depths: Sequence[tuple[int, int]], unreserved: int, system_tcbs: int
) -> InitResult:
    """Carve N1..ND = pools * pool_size per level from ``system_tcbs - unreserved``.

    FIG 2A/2B: levels are allocated in order; when one does not fit the
    initialization fails (block 218) and is retried with smaller pools
    ([0027]): every level's pool count is halved, keeping at least one pool per
    level that had any. Raises :class:`~pyresv.sim.config.ConfigError` (naming
    ``reservation.system_tcbs``) when even that cannot fit.
    """
    budget = system_tcbs - unreserved
    attempt = tuple((int(p), int(s)) for p, s in depths)
    attempts: list[InitAttempt] = []
    while True:
        remaining = budget
        failure: tuple[int, int, int] | None = None
        for level, (pools, size) in enumerate(attempt, start=1):
            n = pools * size
            if n > remaining:  # blocks 202/206/210: allocation failed
                failure = (level, n, remaining)
                break
            remaining -= n
        if failure is None:
            attempts.append(InitAttempt(attempt, True))
            return InitResult(tuple(attempts), attempt)
        attempts.append(InitAttempt(attempt, False, *failure))
        smaller = tuple((max(1, p // 2) if p else 0, s) for p, s in attempt)
        if smaller == attempt:
            level, n, left = failure
            raise ConfigError(
                f"reservation.system_tcbs: {system_tcbs} TCBs minus {unreserved} unreserved cannot "
                f"hold even one pool per level (level {level} needs {n}, {left} left after "
                f"{len(attempts)} attempts)"
            )
        attempt = smaller


# ------------------------------------------------------------------ levels
def levels_needed(clusters: int, relationships: Sequence[tuple[int, int]]) -> int:
    """Depth levels the flows need for these ``(source, target)`` relationships.

    The longest chain of cross-cluster hops any flow of :mod:`pyresv.sim.flashcopy`
    can make, every hop one level deeper ([0038]); work on the same cluster
    stays at its level. It mirrors the flows:

    * a target read stages the track from its source (stage intercept);
    * the stage first destages the source's track when the point-in-time image
      is in the source cache, and reads the source's own disk image, which for
      a cascaded source is itself staged from *its* source;
    * a destage copies the old track to every target still needing it
      (destage intercept), and a partial target track is staged first.

    Non-cascaded copies need at most 3 levels ([0038]); cascades add levels.
    """
    incoming = {t: s for s, t in relationships}
    outgoing: dict[int, list[int]] = {}
    for s, t in relationships:
        outgoing.setdefault(s, []).append(t)

    def hop(level: int, a: int, b: int) -> int:
        return level + (a % clusters != b % clusters)

    @lru_cache(maxsize=None)
    def pit_read(target: int, caller: int, level: int) -> int:
        # A step on the source's cluster (stage-source).
        src = incoming[target]
        lv = hop(level, caller, src)
        return max(lv, destage(src, lv), disk_read(src, lv))

    @lru_cache(maxsize=None)
    def destage(vol: int, level: int) -> int:
        deepest = level
        if vol in incoming:  # FIG 8 arrow 800: a partial target track is staged first
            deepest = max(deepest, pit_read(vol, vol, level))
        for tgt in outgoing.get(vol, ()):  # destage intercept: copy-target on each target
            deepest = max(deepest, disk_read(vol, level), hop(level, vol, tgt))
        return deepest

    @lru_cache(maxsize=None)
    def disk_read(vol: int, level: int) -> int:
        return pit_read(vol, vol, level) if vol in incoming else level

    need = 1
    for vol in set(incoming) | set(outgoing):
        need = max(need, destage(vol, 1), disk_read(vol, 1))  # host read, write, destage
    for s, t in relationships:
        need = max(need, pit_read(t, t, 1), hop(1, s, t))  # background copy, establish
    return need


# ----------------------------------------------------------------- volumes
class Volume:
    """One volume's tracks: disk image, cache, and the relationship tables.

    Per track (Python lists, for cheap scalar access on the hot path):

    Contents are tuples of write versions (see :mod:`pyresv.sim.flashcopy`).

    * ``disk[t]``: content on the volume's disk. For a FlashCopy target whose
      track is not yet copied, the logical image lives on the source instead.
    * ``cache[t]``: content of the dirty cache copy, ``None`` when clean; for
      a partial track, only the partial writes not yet merged.
    * ``stamp[t]``: ``gen`` when the dirty copy was written.
    * ``partial[t]``: the dirty copy is a partial track not yet merged with a
      full one (FIG 8 arrow 800).
    * ``expected[t]``: the oracle: the content a read must return (the last
      writes, or the source's content at establish time for a target).

    ``gen`` counts relationships established from this volume; a relationship
    remembers the ``gen`` it got, so a dirty track written before it was
    established (``stamp < rel.gen``) holds its point-in-time image.
    ``out_rels`` is the source's relationship table and ``in_rel`` the
    target's ([0004]); both live on the volume's home cluster.
    """

    __slots__ = (
        "vid", "home", "disk", "cache", "stamp", "partial", "expected", "gen",
        "out_rels", "in_rel", "destage_scheduled",
    )

    def __init__(self, vid: int, home: int, tracks: int) -> None:
        self.vid = vid
        self.home = home
        self.disk: list[Content] = [BLANK] * tracks
        self.cache: list[Content | None] = [None] * tracks
        self.stamp: list[int] = [0] * tracks
        self.partial: list[bool] = [False] * tracks
        self.expected: list[Content] = [BLANK] * tracks
        self.gen = 0
        self.out_rels: list[Relationship] = []
        self.in_rel: Relationship | None = None
        self.destage_scheduled: set[int] = set()

    def __repr__(self) -> str:
        return f"Volume({self.vid}, home=c{self.home})"


class Cluster:
    """One cluster: its allocator, whether it accepts work yet ([0026]) and
    whether it is alive (a failed cluster has no allocator any more)."""

    __slots__ = ("cid", "allocator", "ready", "ready_event", "ready_at", "reported", "alive")

    def __init__(self, cid: int, allocator: Any, ready_event: Any) -> None:
        self.cid = cid
        self.allocator = allocator
        self.ready = False
        self.ready_event = ready_event  # succeeds when the live peers have reported ready
        self.ready_at = -1.0
        self.reported: set[int] = set()  # clusters (itself included) that reported ready to it
        self.alive = True

    def __repr__(self) -> str:
        state = "" if self.alive else ", failed"
        return f"Cluster(c{self.cid}, ready={self.ready}{state})"


# Relationship states ([0004]-[0006]).
PENDING_REL = "pending"
ACTIVE = "active"
ENDED = "ended"
WITHDRAWN = "withdrawn"
FAILED = "failed"  # its establish failed for good (faults); never established


class Relationship:
    """One FlashCopy relationship ([0004]): entries in the source's and the
    target's relationship tables, and a per-track copied bitmap."""

    __slots__ = (
        "rid", "source", "target", "at_us", "withdraw_us", "background", "streams",
        "gen", "copied", "ncopied", "state", "established", "established_us", "ended_us",
    )

    def __init__(
        self,
        rid: int,
        source: Volume,
        target: Volume,
        at_us: float,
        withdraw_us: float | None,
        background: bool,
        streams: int,
        established: Any,
    ) -> None:
        self.rid = rid
        self.source = source
        self.target = target
        self.at_us = at_us
        self.withdraw_us = withdraw_us
        self.background = background
        self.streams = streams
        self.gen = 0
        self.copied = bytearray()
        self.ncopied = 0
        self.state = PENDING_REL
        self.established = established  # a SimPy event, succeeded at establish time
        self.established_us = -1.0
        self.ended_us = -1.0

    def __repr__(self) -> str:
        return f"Relationship({self.rid}: v{self.source.vid} -> v{self.target.vid}, {self.state})"
