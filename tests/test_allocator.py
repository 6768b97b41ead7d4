"""The allocator contract (DESIGN §1), run against the Cython core and the reference."""

from __future__ import annotations

import pyresv


def test_package_exports_the_compiled_core() -> None:
    from pyresv._core.allocator import DepthPoolAllocator

    assert pyresv.DepthPoolAllocator is DepthPoolAllocator


def test_smoke(allocator_cls: type) -> None:
    a = allocator_cls([(4, 9)] * 3, 2)
    assert (a.levels, a.total) == (3, 110)
    assert a.acquire(1) == 0
    assert a.acquire(1, 1, remote=True) == 36
    a.release(0)
    a.release(36)
    a.check()
