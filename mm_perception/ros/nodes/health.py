"""Rates, staleness, drops and timing statistics behind the nodes' diagnostics (no ROS).

Times are wall-clock seconds from :func:`time.monotonic` unless named ``_ns`` (message stamps,
int nanoseconds). The nodes turn :meth:`HealthMonitor.report` into a
``diagnostic_msgs/DiagnosticArray`` (:mod:`mm_perception.ros.nodes.base`).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from mm_perception.core.errors import ConfigError


class Level(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass(frozen=True)
class Status:
    """One diagnostic status: ``name`` (e.g. ``"pipeline: sensor lidar_top"``), level, a
    one-line message and key/value details (strings)."""

    name: str
    level: Level
    message: str
    values: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HealthConfig:
    """Thresholds of :class:`HealthMonitor`.

    Attributes:
        rate_window_s: rates are computed over the arrivals of the last this many seconds.
        stale_after_s: a stream silent for longer is STALE (ERROR when it is required).
        timing_window: number of recent samples behind the timing percentiles.
    """

    rate_window_s: float = 5.0
    stale_after_s: float = 0.5
    timing_window: int = 500

    def __post_init__(self) -> None:
        if not self.rate_window_s > 0:
            raise ConfigError(f"HealthConfig.rate_window_s must be > 0, got "
                              f"{self.rate_window_s}")
        if not self.stale_after_s > 0:
            raise ConfigError(f"HealthConfig.stale_after_s must be > 0, got "
                              f"{self.stale_after_s}")
        if self.timing_window < 1:
            raise ConfigError(f"HealthConfig.timing_window must be >= 1, got "
                              f"{self.timing_window}")


@dataclass
class StreamState:
    """What one input stream did."""

    required: bool
    received: int = 0
    last_wall_s: float | None = None
    last_stamp_ns: int | None = None
    arrivals: deque[float] = field(default_factory=deque)
    dropped: Counter[str] = field(default_factory=Counter)
    stale_events: int = 0
    was_stale: bool = False


class HealthMonitor:
    """Per-stream rate, staleness and drops; timing percentiles; named counters.

    Args:
        streams: stream name -> required (a stale required stream is an ERROR).
        config: thresholds.
        clock: wall-clock seconds (injectable for tests).
    """

    def __init__(self, streams: dict[str, bool], config: HealthConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or HealthConfig()
        self._clock = clock
        self._start = clock()
        self.streams = {name: StreamState(required) for name, required in streams.items()}
        self.counters: Counter[str] = Counter()
        self._timings: dict[str, deque[float]] = {}
        self.info: dict[str, str] = {}

    def received(self, stream: str, stamp_ns: int | None = None) -> None:
        """A message of ``stream`` arrived (whether or not it turns out usable)."""
        state = self.streams[stream]
        now = self._clock()
        state.received += 1
        state.last_wall_s = now
        if stamp_ns is not None:
            state.last_stamp_ns = stamp_ns
        state.arrivals.append(now)
        self._trim(state, now)

    def dropped(self, stream: str, reason: str) -> None:
        """A message of ``stream`` was dropped for ``reason`` (``encoding``, ``nan``...)."""
        self.streams[stream].dropped[reason] += 1

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += n

    def timing(self, key: str, value_ms: float) -> None:
        """Record one sample of ``key`` (``processing_ms``, ``latency_ms``...)."""
        window = self._timings.setdefault(key, deque(maxlen=self.config.timing_window))
        window.append(float(value_ms))

    def percentiles(self, key: str) -> dict[str, float] | None:
        """p50 / p99 / max of the recent samples of ``key`` (None without samples)."""
        window = self._timings.get(key)
        if not window:
            return None
        arr = np.fromiter(window, dtype=np.float64)
        return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
                "max": float(arr.max())}

    def rate_hz(self, stream: str) -> float:
        """Arrival rate over the rate window, Hz (0 with fewer than two arrivals)."""
        state = self.streams[stream]
        self._trim(state, self._clock())
        if len(state.arrivals) < 2:
            return 0.0
        span = state.arrivals[-1] - state.arrivals[0]
        return (len(state.arrivals) - 1) / span if span > 0 else 0.0

    def age_s(self, stream: str) -> float | None:
        """Seconds since the last message of ``stream`` (None: never received)."""
        last = self.streams[stream].last_wall_s
        return None if last is None else self._clock() - last

    def stale(self, stream: str) -> bool:
        """No message for longer than ``stale_after_s`` (or never, once that long has passed
        since the monitor started)."""
        age = self.age_s(stream)
        if age is None:
            return self._clock() - self._start > self.config.stale_after_s
        return age > self.config.stale_after_s

    def report(self, node: str) -> list[Status]:
        """Diagnostic statuses: one per stream, one for the counters and timings."""
        out: list[Status] = []
        for name, state in self.streams.items():
            stale = self.stale(name)
            if stale and not state.was_stale:
                state.stale_events += 1
            state.was_stale = stale
            age = self.age_s(name)
            values = [("received", str(state.received)),
                      ("rate_hz", f"{self.rate_hz(name):.2f}"),
                      ("age_s", "never" if age is None else f"{age:.3f}"),
                      ("required", str(state.required)),
                      ("stale_events", str(state.stale_events))]
            values += [(f"dropped.{k}", str(v)) for k, v in sorted(state.dropped.items())]
            if stale:
                level = Level.ERROR if state.required else Level.WARN
                message = ("no data yet" if age is None
                           else f"stale: no message for {age:.2f} s")
            elif state.dropped:
                level, message = Level.WARN, f"{sum(state.dropped.values())} messages dropped"
            else:
                level, message = Level.OK, f"{self.rate_hz(name):.1f} Hz"
            out.append(Status(f"{node}: input {name}", level, message, tuple(values)))
        values = [(k, str(v)) for k, v in sorted(self.counters.items())]
        values += sorted(self.info.items())
        for key in sorted(self._timings):
            pct = self.percentiles(key)
            if pct is not None:
                values += [(f"{key}.{p}", f"{v:.2f}") for p, v in pct.items()]
        out.append(Status(f"{node}: processing", Level.OK, "running", tuple(values)))
        return out

    def _trim(self, state: StreamState, now: float) -> None:
        horizon = now - self.config.rate_window_s
        while state.arrivals and state.arrivals[0] < horizon:
            state.arrivals.popleft()


__all__ = ["HealthConfig", "HealthMonitor", "Level", "Status", "StreamState"]
