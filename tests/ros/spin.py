"""Waiting on a condition while spinning an executor, with a deadline (never fixed sleeps)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def spin_until(executor: Any, condition: Callable[[], bool], timeout_s: float,
               what: str = "condition") -> None:
    """Spin ``executor`` in 10 ms slices until ``condition()`` holds.

    Raises:
        AssertionError: naming ``what``, when it still does not hold after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        executor.spin_once(timeout_sec=0.01)
