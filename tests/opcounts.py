"""Counting work without timing it: the Python steps (opcodes) of one part of the code.

The scaling tests ask whether a call's work grows with a queue; a count of
the steps executed in the files under a path answers that exactly, whatever
else the machine is doing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")


def count_steps(call: Callable[[], T], under: str) -> tuple[T, int]:
    """``call()``'s result and the opcodes executed in files whose path starts with ``under``."""
    steps = 0

    def count(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal steps
        if event == "opcode":
            steps += 1
        return count

    def enter(frame: FrameType, event: str, arg: Any) -> Any:
        if not frame.f_code.co_filename.startswith(under):
            return None  # other code's steps are not counted
        frame.f_trace_lines = False
        frame.f_trace_opcodes = True
        return count

    sys.settrace(enter)
    try:
        result = call()
    finally:
        sys.settrace(None)
    return result, steps
