"""FlashCopy relationships and the operation flows that use TCBs.

Every flow is a generator run inside one simulated process (one pid, see
:class:`pyresv.sim.engine.Simulation`). A step runs on the cluster owning the
data and holds one TCB while it runs and while it waits on a sub-operation
sent to another cluster; each hop is one level deeper ([0038], FIG 5A).

Data model (per track, see :class:`pyresv.sim.topology.Volume`): a track's
content is a tuple of write versions: ``(v,)`` after a full-track write ``v``,
and a partial write ``p`` appends ``p`` to the content it is merged with, so
the oracle also sees what a partial write was merged onto. For an active relationship R and a track it has not copied yet, R's
point-in-time image is, by invariant,

* the source's dirty cache copy when it was written before R was established
  (``stamp < R.gen``), else
* the source's disk image (for a cascaded source: *its* source's image).

Every mutation keeps that true, and happens at one simulated instant right
after the checks that justify it (the flows loop and re-check after every
wait), so concurrent flows cannot break a point-in-time image:

* a destage first copies the old disk track to every target that still needs
  it (destage intercept, [0006]), and commits only when none does;
* a host write over a dirty track that is some relationship's image destages
  it first ([0009]);
* a copied track is installed on a target only while the relationship is
  active and the track still uncopied.

The same property makes the flows safe to abort at any wait (faults: a
cluster failure or a process death interrupts a process there, or a call
fails after its message retries): an aborted flow has made each of its
mutations completely or not at all, and a restarted one re-checks. Establish
is idempotent: a restart finds the relationship established and stops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Generator

from pyresv.sim.topology import (
    ACTIVE,
    ENDED,
    FAILED,
    PENDING_REL,
    WITHDRAWN,
    Content,
    Relationship,
    Volume,
)
from pyresv.sim.process import Proc

if TYPE_CHECKING:
    from pyresv.sim.engine import Simulation

__all__ = ["Relationship", "FlashCopyFlows", "PENDING_REL", "ACTIVE", "ENDED", "WITHDRAWN", "FAILED"]

Flow = Generator[Any, Any, Any]

#: A host flow's ``tcb`` when it starts from the beginning.
START = -2


class FlashCopyFlows:
    """The host operations and FlashCopy flows of one simulation."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        t = sim.config.timing
        self.t_read = t.read_us
        self.t_write = t.write_us
        self.t_stage = t.stage_us
        self.t_destage = t.destage_us
        self.t_copy = t.copy_us
        self.t_establish = t.establish_us
        self.tracks = sim.config.volumes.tracks
        # The fast entries' timers: their callbacks bound once (CPython 3.11
        # makes a bound method on every read of one, unspecialized).
        self.read_served = self._read_served
        self.write_served = self._write_served
        self.destage_served = self._destage_served

    # ------------------------------------------------------------ host ops
    # Each host operation is a generator flow (run inside a process, see
    # Simulation) and, for the engine's fast start, a ``*_now`` entry run from
    # an event's callback: its common path (served at once, nothing to stage or
    # copy) as callbacks, with no process of its own; anything else continues
    # as the flow, started at that point (``tcb``: -1 queued, >= 0 held and
    # its service time done). Both take the same steps at the same instants.
    def host_read(self, proc: Proc, vol: Volume, t: int, tcb: int = START) -> Flow:
        """A host read; a target's uncopied track is staged from the source
        first (stage intercept, [0006]). The result is checked by the oracle."""
        sim = self.sim
        c = vol.home
        if tcb < 0:
            if tcb == START:
                tcb = sim.try_acquire(proc, c, 1, False, "read")
            if tcb < 0:
                tcb = yield from sim.granted(proc)
            yield sim.timeout(self.t_read)
        while True:
            value = self._read_value(vol, t)
            if value is not None:
                break
            rel = vol.in_rel
            assert rel is not None  # only an uncopied target track is staged
            img = yield from sim.call(
                proc, c, 1, rel.source.home, "stage-source", self._stage_source, rel, t
            )
            if img is not None:
                yield sim.timeout(self.t_copy)
                self.install(rel, t, img)
        sim.check_read(vol, t, value)
        sim.release(proc, c, tcb)

    def read_now(self, proc: Proc, vol: Volume, t: int) -> None:
        """:meth:`host_read` from an event's callback (see above)."""
        sim = self.sim
        c = vol.home
        tcb = sim.take(proc, c, "read")
        if tcb < 0:
            sim.run_flow(proc, self.host_read(proc, vol, t, tcb))
        else:
            after = sim.after  # a call through an attribute holding a function is not specialized
            after(self.t_read, self.read_served, proc, vol, t, c, tcb)

    def _read_served(self, proc: Proc, vol: Volume, t: int, c: int, tcb: int) -> None:
        value = vol.cache[t]
        if vol.in_rel is not None:  # a target: _read_value decides
            value = self._read_value(vol, t)
            if value is None:  # to be staged: the flow goes on from here
                self.sim.hold(proc, c, "read", tcb)
                self.sim.run_flow(proc, self.host_read(proc, vol, t, tcb))
                return
        elif value is None:
            value = vol.disk[t]
        sim = self.sim
        sim.reads_checked += 1  # sim.check_read
        if value != vol.expected[t]:
            sim.violation(vol, t, value)
        sim.end(proc, c, "read", tcb)

    def _read_value(self, vol: Volume, t: int) -> Content | None:
        """What a read of ``vol``'s track ``t`` returns now; None while an
        uncopied target track must be staged from the source first."""
        rel = vol.in_rel
        uncopied = rel is not None and not rel.copied[t]
        value = vol.cache[t]
        if value is not None and not (uncopied and vol.partial[t]):
            return value
        if uncopied:
            return None
        return vol.disk[t]

    def host_write(self, proc: Proc, vol: Volume, t: int, partial: bool, tcb: int = START) -> Flow:
        """A host write into the cache (write-back; destaged later)."""
        sim = self.sim
        c = vol.home
        if tcb < 0:
            if tcb == START:
                tcb = sim.try_acquire(proc, c, 1, False, "partial-write" if partial else "write")
            if tcb < 0:
                tcb = yield from sim.granted(proc)
            yield sim.timeout(self.t_write)
        # [0009]: a dirty track that is a relationship's point-in-time image
        # must reach the disk before it is overwritten.
        while vol.cache[t] is not None and self._cache_is_image(vol, t):
            yield from self.destage_track(proc, vol, t, 1)
        self._write(vol, t, partial)
        sim.release(proc, c, tcb)
        sim.wrote(vol, t)

    def write_now(self, proc: Proc, vol: Volume, t: int, partial: bool) -> None:
        """:meth:`host_write` from an event's callback (see above)."""
        sim = self.sim
        c = vol.home
        tcb = sim.take(proc, c, "partial-write" if partial else "write")
        if tcb < 0:
            sim.run_flow(proc, self.host_write(proc, vol, t, partial, tcb))
        else:
            after = sim.after
            after(self.t_write, self.write_served, proc, vol, t, partial, c, tcb)

    def _write_served(self, proc: Proc, vol: Volume, t: int, partial: bool, c: int, tcb: int) -> None:
        sim = self.sim
        if vol.out_rels and vol.cache[t] is not None and self._cache_is_image(vol, t):  # [0009] first
            sim.hold(proc, c, "partial-write" if partial else "write", tcb)
            sim.run_flow(proc, self.host_write(proc, vol, t, partial, tcb))
            return
        self._write(vol, t, partial)
        # host_write releases, then schedules the destage: the same events in
        # the same order (the destage's start is a later timer, or, with no
        # delay, an urgent event, before every other of this instant).
        sim.wrote(vol, t)
        sim.end(proc, c, "partial-write" if partial else "write", tcb)

    def _write(self, vol: Volume, t: int, partial: bool) -> None:
        """A write's new version into ``vol``'s cache (and the oracle)."""
        sim = self.sim
        version = sim.version = sim.version + 1  # sim.new_version()
        if not partial:
            vol.cache[t] = (version,)
            vol.partial[t] = False
            vol.expected[t] = (version,)
        else:
            cached = vol.cache[t]
            rel = vol.in_rel
            if cached is not None:  # onto the dirty data (full track, or pending partials)
                vol.cache[t] = cached + (version,)
            elif rel is not None and not rel.copied[t]:
                # FIG 8 arrow 800: no full track to merge with until it is staged.
                vol.cache[t] = (version,)
                vol.partial[t] = True
            else:  # merged with the track on this cluster's disk
                vol.cache[t] = vol.disk[t] + (version,)
            vol.expected[t] = vol.expected[t] + (version,)
        vol.stamp[t] = vol.gen

    def host_destage(self, proc: Proc, vol: Volume, t: int, tcb: int = START) -> Flow:
        """A destage of one track, as a super process of its own ([0029])."""
        sim = self.sim
        c = vol.home
        if tcb < 0:
            if tcb == START:
                if vol.cache[t] is None:
                    return
                tcb = sim.try_acquire(proc, c, 1, False, "destage")
            if tcb < 0:
                tcb = yield from sim.granted(proc)
            yield from self.destage_track(proc, vol, t, 1)
        else:
            yield from self.destage_track(proc, vol, t, 1, served=True)
        sim.release(proc, c, tcb)

    def destage_now(self, proc: Proc, vol: Volume, t: int) -> None:
        """:meth:`host_destage` from an event's callback (see above)."""
        sim = self.sim
        if vol.cache[t] is None:
            sim.finish(proc)
            return
        c = vol.home
        tcb = sim.take(proc, c, "destage")
        if tcb < 0:
            sim.run_flow(proc, self.host_destage(proc, vol, t, tcb))
        else:  # destage_track's first step: the track is dirty (checked above)
            after = sim.after
            after(self.t_destage, self.destage_served, proc, vol, t, c, tcb)

    def _destage_served(self, proc: Proc, vol: Volume, t: int, c: int, tcb: int) -> None:
        sim = self.sim
        if not self._commit(vol, t):  # something to stage or copy first
            sim.hold(proc, c, "destage", tcb)
            sim.run_flow(proc, self.host_destage(proc, vol, t, tcb))
            return
        sim.end(proc, c, "destage", tcb)

    # -------------------------------------------------------------- flows
    def _cache_is_image(self, vol: Volume, t: int) -> bool:
        stamp = vol.stamp[t]
        for r in vol.out_rels:
            if stamp < r.gen and not r.copied[t]:
                return True
        return False

    def _needs_old_track(self, vol: Volume, t: int) -> Relationship | None:
        """The first relationship from ``vol`` whose target still needs the old
        track ``t`` (its point-in-time image is on ``vol``'s disk)."""
        stamp = vol.stamp[t]
        for r in vol.out_rels:
            if stamp >= r.gen and not r.copied[t]:
                return r
        return None

    def _commit(self, vol: Volume, t: int) -> bool:
        """Destage ``vol``'s track ``t`` now if nothing must happen first:
        True when it is clean (now or already), False when a partial target
        track must be staged or a target still needs the old track."""
        dirty = vol.cache[t]
        if dirty is None:
            return True
        rel = vol.in_rel
        if rel is not None and vol.partial[t] and not rel.copied[t]:
            return False
        if vol.out_rels and self._needs_old_track(vol, t) is not None:
            return False
        vol.disk[t] = dirty
        vol.cache[t] = None
        vol.partial[t] = False
        if rel is not None and not rel.copied[t]:
            self._mark_copied(rel, t)  # a full target track is now hardened ([0004])
        return True

    def destage_track(self, proc: Proc, vol: Volume, t: int, level: int, served: bool = False) -> Flow:
        """Write ``vol``'s dirty track to disk, on ``vol``'s cluster, under the
        caller's TCB at ``level`` (``served``: its service time is done)."""
        sim = self.sim
        c = vol.home
        if not served:
            if vol.cache[t] is None:
                return
            yield sim.timeout(self.t_destage)
        while not self._commit(vol, t):
            rel = vol.in_rel
            if rel is not None and vol.partial[t] and not rel.copied[t]:
                # FIG 8 arrow 800: a partial target track needs the full
                # track staged before it can be destaged.
                img = yield from sim.call(
                    proc, c, level, rel.source.home, "stage-source", self._stage_source, rel, t
                )
                if img is not None:
                    self.install(rel, t, img)
                continue
            # Destage intercept ([0006]; FIG 8 arrows 820/830): the old
            # track goes to the target that still needs it, first.
            need = self._needs_old_track(vol, t)
            assert need is not None  # _commit said so; nothing yielded since
            img = yield from self.disk_read(proc, vol, t, level)
            if img is not None:
                yield from sim.call(
                    proc, c, level, need.target.home, "copy-target", self._copy_target, need, t, img
                )

    def disk_read(self, proc: Proc, vol: Volume, t: int, level: int) -> Flow:
        """``vol``'s disk image of track ``t``; for a cascaded target whose
        track is not copied yet, its source's point-in-time image. ``None``
        when that changed meanwhile (the caller re-checks)."""
        rel = vol.in_rel
        if rel is not None and not rel.copied[t]:
            return (
                yield from self.sim.call(
                    proc, vol.home, level, rel.source.home, "stage-source", self._stage_source, rel, t
                )
            )
        return vol.disk[t]

    def _stage_source(self, proc: Proc, level: int, rel: Relationship, t: int) -> Flow:
        """On the source's cluster: read ``rel``'s point-in-time image of
        track ``t`` (stage intercept). ``None`` when the track got copied or
        the relationship ended meanwhile."""
        src = rel.source
        yield self.sim.timeout(self.t_stage)
        while True:
            if rel.state is not ACTIVE or rel.copied[t]:
                return None
            if src.cache[t] is not None and src.stamp[t] < rel.gen:
                # FIG 8 arrow 810 / [0009]: the image is still in the source
                # cache; destage it to the source volume first.
                yield from self.destage_track(proc, src, t, level)
                continue
            img = yield from self.disk_read(proc, src, t, level)
            if img is not None:
                return img

    def _copy_target(self, proc: Proc, level: int, rel: Relationship, t: int, img: Content) -> Flow:
        """On the target's cluster: harden a copied track (FIG 8 arrow 830)."""
        yield self.sim.timeout(self.t_copy)
        self.install(rel, t, img)
        return None

    def install(self, rel: Relationship, t: int, img: Content) -> None:
        """Put the point-in-time image on the target, unless it got there already."""
        if rel.state is ACTIVE and not rel.copied[t]:
            tgt = rel.target
            tgt.disk[t] = img
            if tgt.partial[t]:  # pending partial writes are merged with the full track now
                partials = tgt.cache[t]
                assert partials is not None  # a partial track has its partial writes cached
                tgt.cache[t] = img + partials
                tgt.partial[t] = False
            self._mark_copied(rel, t)

    def _mark_copied(self, rel: Relationship, t: int) -> None:
        rel.copied[t] = 1
        rel.ncopied += 1
        if rel.ncopied == self.tracks:
            # [0004]: both entries go once every track has been copied.
            self._end(rel, ENDED)

    def _end(self, rel: Relationship, state: str) -> None:
        rel.state = state
        rel.ended_us = self.sim.env.now
        rel.source.out_rels.remove(rel)
        rel.target.in_rel = None

    # --------------------------------------------------- establish/withdraw
    def establish(self, proc: Proc, rel: Relationship, before: Relationship | None) -> Flow:
        """Establish ``rel`` ([0004]): an entry in the source's table, then in
        the target's, where the point in time is fixed. ``before`` is the
        relationship that makes ``rel``'s source a target (a cascade), which
        must be established first."""
        if before is not None and before.state is PENDING_REL:
            yield before.established
        if rel.state is not PENDING_REL:  # a restart after the table entries were made
            return
        yield from self._table_step(proc, rel, "establish", self._establish_target)

    def _table_step(self, proc: Proc, rel: Relationship, name: str, on_target: Callable[..., Flow]) -> Flow:
        """A relationship-table change ([0004]): the source's entry under a
        level-1 TCB on its cluster, then a call to the target's cluster."""
        sim = self.sim
        c = rel.source.home
        tcb = sim.try_acquire(proc, c, 1, False, name)
        if tcb < 0:
            tcb = yield from sim.granted(proc)
        yield sim.timeout(self.t_establish)
        yield from sim.call(proc, c, 1, rel.target.home, f"{name}-target", on_target, rel)
        sim.release(proc, c, tcb)

    def _establish_target(self, proc: Proc, level: int, rel: Relationship) -> Flow:
        yield self.sim.timeout(self.t_establish)
        if rel.state is not PENDING_REL:  # a duplicate request (faults): done already
            return None
        src, tgt = rel.source, rel.target
        src.gen += 1
        rel.gen = src.gen
        rel.copied = bytearray(self.tracks)
        rel.state = ACTIVE
        rel.established_us = self.sim.env.now
        src.out_rels.append(rel)
        tgt.in_rel = rel
        # The target's old content is gone: its image is now the source's.
        n = self.tracks
        tgt.cache = [None] * n
        tgt.partial = [False] * n
        tgt.expected = src.expected.copy()  # the oracle's point-in-time snapshot
        rel.established.succeed()
        if rel.background:
            for k in range(rel.streams):
                self.sim.spawn("bg-copy", self.background_copy, rel, k)
        return None

    def establish_failed(self, rel: Relationship) -> None:
        """The establish of ``rel`` failed for good (faults): it never
        becomes active, and whoever waits for it (a cascade, a withdraw) goes on."""
        if rel.state is PENDING_REL:
            rel.state = FAILED
            rel.established.succeed()

    def withdraw(self, proc: Proc, rel: Relationship) -> Flow:
        """Withdraw ``rel``: both table entries go; uncopied target tracks
        keep whatever the target volume holds."""
        if rel.state is PENDING_REL:
            yield rel.established
        if rel.state is not ACTIVE:
            return
        yield from self._table_step(proc, rel, "withdraw", self._withdraw_target)

    def _withdraw_target(self, proc: Proc, level: int, rel: Relationship) -> Flow:
        yield self.sim.timeout(self.t_establish)
        if rel.state is not ACTIVE:
            return None
        tgt = rel.target
        for t in range(self.tracks):
            if not rel.copied[t]:
                # No point-in-time promise any more: a read returns what is there.
                if tgt.partial[t]:
                    partials = tgt.cache[t]
                    assert partials is not None  # a partial track has its partial writes cached
                    tgt.cache[t] = tgt.disk[t] + partials
                    tgt.partial[t] = False
                cached = tgt.cache[t]
                tgt.expected[t] = cached if cached is not None else tgt.disk[t]
        self._end(rel, WITHDRAWN)
        return None

    # ---------------------------------------------------- background copy
    def background_copy(self, proc: Proc, rel: Relationship, stream: int) -> Flow:
        """Copy every ``streams``-th track from ``stream`` on, one TCB per
        track on the target's cluster; the last copy ends the relationship."""
        sim = self.sim
        source, target = rel.source, rel.target
        for t in range(stream, self.tracks, rel.streams):
            if rel.state is not ACTIVE:
                return
            if rel.copied[t]:
                continue
            c = target.home  # read per track: a failover moves volumes
            src_home = source.home
            tcb = sim.try_acquire(proc, c, 1, False, "bg-copy")
            if tcb < 0:
                tcb = yield from sim.granted(proc)
            img = yield from sim.call(proc, c, 1, src_home, "stage-source", self._stage_source, rel, t)
            if img is not None:
                yield sim.timeout(self.t_copy)
                self.install(rel, t, img)
            sim.release(proc, c, tcb)
