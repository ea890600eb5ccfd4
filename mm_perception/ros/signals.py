"""Ctrl-C / SIGTERM as a flag for the long-running ROS entry points (``mm-perception run``,
``replay`` and each node's console script).

Why not Python's default KeyboardInterrupt: raised in whatever the main thread is doing, it
can land inside rclpy's executor wait generator or a lifecycle transition and be swallowed
there (seen under load: a node kept spinning after Ctrl-C, and a graph never wrote its
summary), or interrupt the clean-up in a ``finally``. A flag is checked where stopping is
safe: the spin loop, the player's timing loop.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: the signals that ask a process to stop
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Inside the block, SIGINT and SIGTERM set the yielded event instead of raising; the
    previous handlers come back on exit. Off the main thread (where Python cannot install
    handlers) the event is still yielded and signals keep their old behaviour."""
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["STOP_SIGNALS", "stop_on_signals"]
