"""Shared fixtures: the allocator implementations under test."""

from __future__ import annotations

import pytest

from pyresv import DepthPoolAllocator
from pyresv.reference import DepthPoolAllocator as ReferenceAllocator

ALLOCATORS = {"cython": DepthPoolAllocator, "reference": ReferenceAllocator}


@pytest.fixture(params=sorted(ALLOCATORS))
def allocator_cls(request: pytest.FixtureRequest) -> type:
    """Each allocator class in turn: the Cython core and the pure-Python reference."""
    return ALLOCATORS[request.param]
