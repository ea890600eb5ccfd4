"""Keeping full garbage collections off a latency-sensitive process's critical path."""

from __future__ import annotations

import gc


def freeze_heap() -> None:
    """Collect, then move every object alive now out of the garbage collector's reach
    (``gc.freeze``).

    Why: after start-up a process holds hundreds of thousands of long-lived objects (modules,
    torch, rclpy, the models). CPython's full (generation 2) collection walks all of them,
    some 80 ms in the pipeline's child process, landing on whichever sensor set is being
    processed at the time. Frozen objects are never walked again, so later full collections
    only see what the process allocated since. Call it at the end of start-up (a node's
    configure, a worker after its warm-up); objects frozen are never freed, which is what
    start-up objects are anyway.
    """
    gc.collect()
    gc.freeze()


__all__ = ["freeze_heap"]
