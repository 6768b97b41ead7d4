"""Timeline recorder of a simulation run.

Per cluster and depth level over simulated time: TCBs held and requests
queued (both by the level a request was made at, so ``shared`` and ``depth``
runs compare level by level), and host operations completed per cluster;
plus one latency per completed host operation. :meth:`MetricsRecorder.timeline`
turns it into numpy arrays for CSV files and plots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pyresv.sim.config import MAX_TIMELINE_CELLS

__all__ = ["MetricsRecorder", "Timeline", "OP_CODES"]

#: Host operation kinds, in the order of :attr:`Timeline.op_kind` codes.
OP_CODES: tuple[str, ...] = ("read", "write", "partial-write", "destage")


@dataclass(frozen=True)
class Timeline:
    """The recorded run as arrays. Times are in seconds, latencies in ms.

    ``held[k, c, l]`` and ``queued[k, c, l]`` are TCBs held and requests
    queued on cluster ``c`` at level ``l + 1`` at sample ``k``;
    ``completed[k, c]`` counts host operations of cluster ``c`` completed by
    then. ``op_*`` have one entry per completed host operation, in completion
    order; ``op_kind`` indexes :data:`OP_CODES`.
    """

    times_s: np.ndarray
    held: np.ndarray
    queued: np.ndarray
    completed: np.ndarray
    op_kind: np.ndarray
    op_cluster: np.ndarray
    op_start_s: np.ndarray
    op_latency_ms: np.ndarray


class MetricsRecorder:
    """Collects samples and operation latencies during a run (cheap appends)."""

    def __init__(self, clusters: int, levels: int, capacity: int | None = None) -> None:
        self.clusters = clusters
        self.levels = levels
        #: Samples the timeline holds (:data:`pyresv.sim.config.MAX_TIMELINE_CELLS`
        #: values); the run thins it (:meth:`thin`) and halves its sampling rate when full.
        self.capacity = capacity if capacity is not None else max(
            2, MAX_TIMELINE_CELLS // (2 * clusters * levels + clusters)
        )
        self._times: list[float] = []
        self._held: list[list[int]] = []
        self._queued: list[list[int]] = []
        self._completed: list[list[int]] = []
        # kind, cluster, start_us, latency_us of each completed host
        # operation, one after the other: one list extended per operation
        # (the simulator's hot path), of numbers only (nothing for the cyclic
        # garbage collector to track).
        self.ops: list[float] = []

    def sample(
        self,
        t_us: float,
        held: list[list[int]],
        queued: list[list[int]],
        completed: list[int],
    ) -> None:
        """Record the state at simulated time ``t_us``.

        ``held[c][l]`` and ``queued[c][l]`` are indexed by level ``l`` in
        ``1..levels`` (index 0 unused).
        """
        self._times.append(t_us)
        self._held.append([x for row in held for x in row[1:]])
        self._queued.append([x for row in queued for x in row[1:]])
        self._completed.append(list(completed))

    @property
    def samples(self) -> int:
        """Samples recorded so far."""
        return len(self._times)

    @property
    def last_sample_us(self) -> float:
        """Time of the latest sample kept."""
        return self._times[-1]

    def thin(self) -> None:
        """Keep every other sample (the first, the third, ...): the timeline of a
        run that outlives its scheduled work keeps its memory bounded and its
        samples evenly spaced, at twice the period."""
        self._times = self._times[::2]
        self._held = self._held[::2]
        self._queued = self._queued[::2]
        self._completed = self._completed[::2]

    def record_op(self, kind: int, cluster: int, start_us: float, end_us: float) -> None:
        """One host operation of kind ``OP_CODES[kind]`` completed."""
        self.ops += (kind, cluster, start_us, end_us - start_us)

    @property
    def latencies_us(self) -> list[float]:
        """Latency of each completed host operation, in microseconds."""
        return self.ops[3::4]

    def _column(self, i: int, dtype: Any) -> np.ndarray:
        return np.asarray(self.ops[i::4], dtype=dtype)

    def timeline(self) -> Timeline:
        """The recording as numpy arrays."""
        k, c, d = len(self._times), self.clusters, self.levels
        return Timeline(
            times_s=np.asarray(self._times, dtype=float) * 1e-6,
            held=np.asarray(self._held, dtype=np.int64).reshape(k, c, d),
            queued=np.asarray(self._queued, dtype=np.int64).reshape(k, c, d),
            completed=np.asarray(self._completed, dtype=np.int64).reshape(k, c),
            op_kind=self._column(0, np.int8),
            op_cluster=self._column(1, np.int32),
            op_start_s=self._column(2, float) * 1e-6,
            op_latency_ms=self._column(3, float) * 1e-3,
        )
