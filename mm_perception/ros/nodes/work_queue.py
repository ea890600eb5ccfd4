"""A bounded hand-over queue between a node's input callbacks and its worker thread (no ROS).

Input callbacks :meth:`WorkQueue.put` items (sensor sets, decoded messages); one worker
thread runs :meth:`WorkQueue.serve` and hands each item to the node's handler. When the
worker falls behind, the *oldest* waiting item is evicted and given back to the caller to
count and log: the outputs stay current instead of falling further and further behind.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from mm_perception.core.errors import ConfigError

T = TypeVar("T")


class WorkQueue(Generic[T]):
    """Bounded FIFO with a condition variable, drained by one worker thread.

    Args:
        limit: most items waiting; putting more evicts the oldest (>= 1).

    Raises:
        ConfigError: ``limit`` < 1.
    """

    def __init__(self, limit: int = 1) -> None:
        self._items: deque[T] = deque()
        self._wake = threading.Condition()
        self.limit = 1
        self.set_limit(limit)

    def set_limit(self, limit: int) -> None:
        """Change the bound (takes effect at the next :meth:`put`)."""
        if int(limit) < 1:
            raise ConfigError(f"work queue limit must be >= 1, got {limit}")
        self.limit = int(limit)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, items: Iterable[T]) -> list[T]:
        """Append ``items`` in order and wake the worker.

        Returns:
            the items evicted to stay within :attr:`limit` (oldest first), for the caller
            to count as dropped.
        """
        evicted: list[T] = []
        with self._wake:
            for item in items:
                self._items.append(item)
                while len(self._items) > self.limit:
                    evicted.append(self._items.popleft())
            self._wake.notify()
        return evicted

    def clear(self) -> None:
        """Forget every waiting item."""
        with self._wake:
            self._items.clear()

    def serve(self, stop: threading.Event, handler: Callable[[T], None],
              poll_s: float = 0.1) -> None:
        """Worker-thread loop: hand each item to ``handler`` until ``stop`` is set (checked
        at least every ``poll_s`` seconds). ``handler`` must not raise (a raise ends the
        loop); the nodes' handlers catch and count their errors."""
        while not stop.is_set():
            with self._wake:
                if not self._items:
                    self._wake.wait(timeout=poll_s)
                if not self._items:
                    continue
                item = self._items.popleft()
            handler(item)


__all__ = ["WorkQueue"]
