"""Shared helpers of the benchmark suite: allocator factories and a ratio timer."""

from __future__ import annotations

import timeit
from typing import Callable

import pyresv
import pyresv.reference

IMPLEMENTATIONS = {
    "core": pyresv.DepthPoolAllocator,
    "reference": pyresv.reference.DepthPoolAllocator,
}


def fig3_depths(levels: int, pools: int, size: int = 9) -> list[tuple[int, int]]:
    """``levels`` levels of ``pools`` pools of ``size`` TCBs (FIG 3 is 3 x (4, 9))."""
    return [(pools, size)] * levels


def best_time(fn: Callable[[], object], number: int = 1, repeat: int = 7) -> float:
    """Best-of-``repeat`` wall time of ``number`` calls of ``fn``, in seconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number
