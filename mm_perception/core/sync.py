"""Time synchronisation of N sensor streams around one reference stream (pure Python).

The collector turns independently arriving messages (camera frames, LiDAR sweeps, radar
scans...) into *matched sets*: one set per message of the reference stream, holding for every
other stream the message nearest in time. Stamps are ``int`` nanoseconds. Each sensor's stamps
are first put on the common clock by adding its ``time_offsets_ns`` entry (from the rig
calibration); every stamp below (matching, timeouts, ``MatchedSet.stamp_ns``) is such a
*corrected* stamp.

Algorithm
---------
* Each reference message opens a *pending set* at its corrected stamp ``t``. Pending sets are
  kept sorted by ``t``.
* Every other sensor keeps a sorted buffer of its recent messages. For a pending set the
  *candidate* of a sensor is the buffered message with the smallest ``|ts - t|`` that is within
  ``window_ns`` (a tie goes to the earlier message).
* A sensor is *resolved* for the set once no future message can be closer, assuming the
  stream is (mostly) in order: it has a candidate at distance ``d`` and its newest stamp is
  ``>= t + d``; or it has no candidate and its newest stamp is ``> t + window_ns`` (the sensor
  is then definitively *missing*). An **optional** sensor is in addition resolved once the data
  clock is past ``t + window_ns``: it is included when it has a candidate then, but it is never
  waited for beyond the window and its absence never makes a set partial.
* The oldest pending set is emitted when all its sensors are resolved, or when it *times out*:
  the clock (the data clock inside :meth:`SyncCollector.add`, ``max(data clock, now)`` inside
  :meth:`SyncCollector.poll`) is more than ``timeout_ns`` past ``t``. The *data clock* is the
  newest corrected stamp accepted on any stream. At emission each sensor contributes its
  candidate (whatever is buffered then); a required sensor without one is listed in
  ``missing`` and the set is *partial*. Partial sets are emitted or dropped per ``on_timeout``
  (``"emit_partial"`` / ``"drop"``); complete sets are always emitted.
* Sets are emitted strictly in reference-stamp order: a later set never overtakes an earlier
  pending one, even when it is resolved first.
* A message may serve several sets: a camera frame that is the nearest one for two LiDAR sweeps
  is given to both (independent nearest-neighbour matching per set).

Bad or unusual input never raises, it is counted in :class:`SyncStats`:

* unknown sensor names (a bag or a remapped graph can carry topics the config does not know):
  ``unknown_sensor``, dropped;
* stamps that are not ints, negative, or negative after the offset: ``invalid_stamp``, dropped;
* a stamp older than the same sensor's newest by more than ``reset_threshold_ns`` is a clock
  jump backwards (a looped bag, a restarted simulator): every pending set is resolved with what
  is there (per ``on_timeout``), all buffers are cleared, ``clock_jumps`` is counted and the
  message starts the new timeline;
* the same (sensor, corrected stamp) seen again among that sensor's recent messages:
  ``duplicates``, dropped;
* a message that can no longer match any pending or future set: ``late``, dropped. For the
  reference that is a stamp ``<=`` the last emitted set's stamp (emission order would break);
  for another sensor a stamp older than ``last emitted + 1 - window_ns``;
* a message older than its sensor's newest that is still usable: ``out_of_order``, inserted in
  order and used. A set already emitted is not revisited, so an out-of-order message that
  would have been closer to it is only used for later sets;
* a full buffer (``max_buffer`` messages per sensor) evicts its oldest message: ``overflow``.
  For the reference the buffer is the list of pending sets and the oldest pending set is
  resolved early (as on a timeout). Messages that pile up while the reference is silent are
  evicted this way too.

Known limitation: after a clock jump, a message still on the old timeline that arrives late
moves the data clock forward again and the next new-timeline message is seen as a second jump.
"""

from __future__ import annotations

import bisect
import copy
import math
import numbers
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from mm_perception.core.errors import ConfigError

T = TypeVar("T")

#: allowed values of :attr:`SyncConfig.on_timeout`
ON_TIMEOUT_CHOICES: tuple[str, ...] = ("emit_partial", "drop")

#: defaults of the rig YAML ``sync:`` section (seconds), used when a key is absent
DEFAULT_WINDOW_S = 0.05
DEFAULT_TIMEOUT_S = 0.2
DEFAULT_ON_TIMEOUT = "emit_partial"
DEFAULT_MAX_BUFFER = 64
DEFAULT_RESET_THRESHOLD_S = 1.0

_YAML_KEYS = ("reference", "window_s", "timeout_s", "on_timeout", "max_buffer",
              "reset_threshold_s")


def _is_int(value: Any) -> bool:
    # numbers.Integral covers int and numpy integers; bool is an int subclass but never a stamp
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int, what: str = "") -> int:
    if not _is_int(value):
        raise ConfigError(f"sync {name} must be an int (ns), got {value!r}")
    if int(value) < minimum:
        raise ConfigError(f"sync {name} must be >= {minimum}{what}, got {value!r}")
    return int(value)


def _seconds_to_ns(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"sync.{key} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0.0:
        raise ConfigError(f"sync.{key} must be a finite number of seconds > 0, got {value!r}")
    return round(seconds * 1e9)


@dataclass(frozen=True)
class SyncConfig:
    """Configuration of :class:`SyncCollector`.

    Attributes:
        reference: sensor whose messages define the sets (normally the main LiDAR).
        sensors: all synchronised streams, the reference included (rig sensor names).
        window_ns: largest ``|t_sensor - t_ref|`` (corrected stamps) for a match, ns, > 0.
        timeout_ns: a set still incomplete when the sync clock is more than this past its
            reference stamp is resolved (emitted partial or dropped), ns, ``>= window_ns``.
        on_timeout: ``"emit_partial"`` or ``"drop"``: what happens to partial sets.
        time_offsets_ns: sensor -> offset added to its incoming stamps to put them on the
            common clock, ns (sensors not listed: 0).
        optional: sensors included when matched but never waited for beyond the window and
            never making a set partial (not the reference).
        max_buffer: per-sensor buffer length (messages; pending sets for the reference), >= 1.
        reset_threshold_ns: a stamp older than that sensor's newest by more than this is a
            backwards clock jump (flush and reset), ns, ``> timeout_ns`` so that a merely late
            message is not taken for a jump.
    """

    reference: str
    sensors: tuple[str, ...]
    window_ns: int
    timeout_ns: int
    on_timeout: str
    time_offsets_ns: Mapping[str, int] = field(default_factory=dict)
    optional: tuple[str, ...] = ()
    max_buffer: int = DEFAULT_MAX_BUFFER
    reset_threshold_ns: int = 1_000_000_000

    def __post_init__(self) -> None:
        sensors = self.sensors
        if isinstance(sensors, str) or not isinstance(sensors, Sequence):
            raise ConfigError(f"sync sensors must be a sequence of names, got {sensors!r}")
        sensors = tuple(sensors)
        if not sensors:
            raise ConfigError("sync sensors must not be empty")
        for name in sensors:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"sync sensor names must be non-empty strings, got {name!r}")
        dupes = sorted({s for s in sensors if sensors.count(s) > 1})
        if dupes:
            raise ConfigError(f"sync sensors lists {dupes} more than once")
        object.__setattr__(self, "sensors", sensors)

        if self.reference not in sensors:
            raise ConfigError(f"sync reference {self.reference!r} is not one of the sensors "
                              f"{list(sensors)}")
        object.__setattr__(self, "window_ns", _check_int("window_ns", self.window_ns, 1))
        object.__setattr__(self, "timeout_ns", _check_int(
            "timeout_ns", self.timeout_ns, self.window_ns, f" (window_ns={self.window_ns})"))
        if self.on_timeout not in ON_TIMEOUT_CHOICES:
            raise ConfigError(f"sync on_timeout must be one of {list(ON_TIMEOUT_CHOICES)}, "
                              f"got {self.on_timeout!r}")

        if not isinstance(self.time_offsets_ns, Mapping):
            raise ConfigError(f"sync time_offsets_ns must be a mapping sensor -> ns, got "
                              f"{self.time_offsets_ns!r}")
        offsets: dict[str, int] = {}
        for name, value in self.time_offsets_ns.items():
            if name not in sensors:
                raise ConfigError(f"sync time_offsets_ns names unknown sensor {name!r}; "
                                  f"sensors: {list(sensors)}")
            if not _is_int(value):
                raise ConfigError(f"sync time_offsets_ns[{name!r}] must be an int (ns), "
                                  f"got {value!r}")
            offsets[name] = int(value)
        object.__setattr__(self, "time_offsets_ns", MappingProxyType(offsets))

        optional = self.optional
        if isinstance(optional, str) or not isinstance(optional, Sequence):
            raise ConfigError(f"sync optional must be a sequence of names, got {optional!r}")
        optional = tuple(optional)
        for name in optional:
            if name not in sensors:
                raise ConfigError(f"sync optional sensor {name!r} is not one of the sensors "
                                  f"{list(sensors)}")
            if name == self.reference:
                raise ConfigError(f"sync reference {name!r} cannot be optional")
            if optional.count(name) > 1:
                raise ConfigError(f"sync optional lists {name!r} more than once")
        object.__setattr__(self, "optional", optional)

        object.__setattr__(self, "max_buffer", _check_int("max_buffer", self.max_buffer, 1))
        object.__setattr__(self, "reset_threshold_ns", _check_int(
            "reset_threshold_ns", self.reset_threshold_ns, self.timeout_ns + 1,
            f" (more than timeout_ns={self.timeout_ns})"))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], sensors: Sequence[str],
                     time_offsets_ns: Mapping[str, int],
                     optional: Sequence[str] = ()) -> SyncConfig:
        """Parse the rig YAML ``sync:`` section.

        Keys (seconds in the YAML, ns in the config): ``reference`` (required unless there is a
        single sensor), ``window_s`` (default 0.05), ``timeout_s`` (default 0.2),
        ``on_timeout`` (default ``"emit_partial"``), ``max_buffer`` (default 64),
        ``reset_threshold_s`` (default 1.0). Unknown keys raise ConfigError naming them.

        Args:
            data: the ``sync:`` mapping (may be empty).
            sensors: names of the synchronised streams.
            time_offsets_ns: sensor -> time offset from the rig calibration, ns.
            optional: sensors that must not make a set partial.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"sync section must be a mapping, got {type(data).__name__}: "
                              f"{data!r}")
        unknown = sorted(str(k) for k in data if k not in _YAML_KEYS)
        if unknown:
            raise ConfigError(f"unknown key(s) in sync section: {unknown}; known keys: "
                              f"{list(_YAML_KEYS)}")
        sensor_names = tuple(sensors)
        reference = data.get("reference")
        if reference is None:
            if len(sensor_names) != 1:
                raise ConfigError(f"sync.reference is required with more than one sensor; "
                                  f"sensors: {list(sensor_names)}")
            reference = sensor_names[0]
        if not isinstance(reference, str):
            raise ConfigError(f"sync.reference must be a sensor name, got {reference!r}")
        max_buffer = data.get("max_buffer", DEFAULT_MAX_BUFFER)
        if not _is_int(max_buffer):
            raise ConfigError(f"sync.max_buffer must be an integer, got {max_buffer!r}")
        return cls(
            reference=reference,
            sensors=sensor_names,
            window_ns=_seconds_to_ns("window_s", data.get("window_s", DEFAULT_WINDOW_S)),
            timeout_ns=_seconds_to_ns("timeout_s", data.get("timeout_s", DEFAULT_TIMEOUT_S)),
            on_timeout=data.get("on_timeout", DEFAULT_ON_TIMEOUT),
            time_offsets_ns=dict(time_offsets_ns),
            optional=tuple(optional),
            max_buffer=int(max_buffer),
            reset_threshold_ns=_seconds_to_ns(
                "reset_threshold_s", data.get("reset_threshold_s", DEFAULT_RESET_THRESHOLD_S)),
        )


@dataclass(frozen=True)
class MatchedSet(Generic[T]):
    """One synchronised set.

    Attributes:
        stamp_ns: the reference message's corrected stamp, ns.
        items: sensor -> (corrected stamp ns, item) for every sensor present, the reference
            included (read-only mapping).
        missing: required sensors absent from the set, sorted.
        partial: ``bool(missing)``.
    """

    stamp_ns: int
    items: Mapping[str, tuple[int, T]]
    missing: tuple[str, ...] = ()
    partial: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", MappingProxyType(dict(self.items)))
        object.__setattr__(self, "missing", tuple(sorted(self.missing)))
        if bool(self.partial) != bool(self.missing):
            raise ValueError(f"MatchedSet partial={self.partial} contradicts missing="
                             f"{self.missing}")


@dataclass
class SyncStats:
    """Counters of a :class:`SyncCollector` (see the module docstring for their meaning).

    Invariant after :meth:`SyncCollector.flush`: ``received[ref] - invalid (ref) - late[ref]
    - duplicates[ref] == complete + partial + dropped_partial``.
    """

    received: dict[str, int] = field(default_factory=dict)
    complete: int = 0
    partial: int = 0
    dropped_partial: int = 0
    out_of_order: dict[str, int] = field(default_factory=dict)
    late: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    clock_jumps: int = 0
    unknown_sensor: int = 0
    invalid_stamp: int = 0
    overflow: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_sensors(cls, sensors: Sequence[str]) -> SyncStats:
        """Zeroed counters with one entry per sensor in every per-sensor dict."""
        def zeros() -> dict[str, int]:
            return dict.fromkeys(sensors, 0)
        return cls(received=zeros(), out_of_order=zeros(), late=zeros(), duplicates=zeros(),
                   overflow=zeros())

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of ints and ``{sensor: int}`` dicts (JSON-serialisable copy)."""
        return {
            "received": dict(self.received),
            "complete": self.complete,
            "partial": self.partial,
            "dropped_partial": self.dropped_partial,
            "out_of_order": dict(self.out_of_order),
            "late": dict(self.late),
            "duplicates": dict(self.duplicates),
            "clock_jumps": self.clock_jumps,
            "unknown_sensor": self.unknown_sensor,
            "invalid_stamp": self.invalid_stamp,
            "overflow": dict(self.overflow),
        }


class SyncCollector(Generic[T]):
    """Collects messages of the configured streams into :class:`MatchedSet` s.

    Not thread-safe: call it from one thread (one ROS callback group / the replay loop).
    """

    def __init__(self, config: SyncConfig) -> None:
        if not isinstance(config, SyncConfig):
            raise TypeError(f"config must be a SyncConfig, got {type(config).__name__}")
        self._config = config
        self._ref = config.reference
        self._others = tuple(s for s in config.sensors if s != config.reference)
        self._optional = frozenset(config.optional)
        # duplicate detection remembers more stamps than a buffer holds
        self._recent_len = max(2 * config.max_buffer, 16)
        self._stats = SyncStats.for_sensors(config.sensors)
        self._clear_timeline()

    # ------------------------------------------------------------------ state
    def _clear_timeline(self) -> None:
        """Forget all messages and clocks (stats are kept)."""
        self._pend_stamps: list[int] = []
        self._pend_items: list[T] = []
        self._buf_stamps: dict[str, list[int]] = {s: [] for s in self._others}
        self._buf_items: dict[str, list[T]] = {s: [] for s in self._others}
        self._newest: dict[str, int | None] = dict.fromkeys(self._config.sensors)
        self._recent: dict[str, OrderedDict[int, None]] = {
            s: OrderedDict() for s in self._config.sensors}
        self._clock: int | None = None
        self._last_emitted: int | None = None

    @property
    def config(self) -> SyncConfig:
        return self._config

    @property
    def stats(self) -> SyncStats:
        """A copy of the counters."""
        return copy.deepcopy(self._stats)

    @property
    def pending(self) -> int:
        """Number of reference messages waiting for their set to be resolved."""
        return len(self._pend_stamps)

    def reset(self) -> None:
        """Discard all pending sets and buffered messages (not emitted) and zero the stats."""
        self._stats = SyncStats.for_sensors(self._config.sensors)
        self._clear_timeline()

    # ------------------------------------------------------------------ input
    def add(self, sensor: str, stamp_ns: int, item: T) -> list[MatchedSet[T]]:
        """Add one message.

        Args:
            sensor: sensor name (unknown names are counted and dropped).
            stamp_ns: the message's own stamp, ns (the sensor's offset is added here).
            item: the payload, returned untouched in the sets.

        Returns:
            Sets that became ready, in reference-stamp order (often empty).
        """
        stats = self._stats
        if not isinstance(sensor, str) or sensor not in stats.received:
            stats.unknown_sensor += 1
            return []
        stats.received[sensor] += 1
        if not _is_int(stamp_ns) or stamp_ns < 0:
            stats.invalid_stamp += 1
            return []
        t = int(stamp_ns) + self._config.time_offsets_ns.get(sensor, 0)
        if t < 0:
            stats.invalid_stamp += 1
            return []

        out: list[MatchedSet[T]] = []
        newest = self._newest[sensor]
        if newest is not None and newest - t > self._config.reset_threshold_ns:
            stats.clock_jumps += 1
            out.extend(self._resolve_all())
            self._clear_timeline()
            newest = None

        recent = self._recent[sensor]
        if t in recent or (sensor == self._ref and self._pending_index(t) is not None):
            stats.duplicates[sensor] += 1
            return out

        if sensor == self._ref:
            if self._last_emitted is not None and t <= self._last_emitted:
                stats.late[sensor] += 1
                return out
            i = bisect.bisect_right(self._pend_stamps, t)
            self._pend_stamps.insert(i, t)
            self._pend_items.insert(i, item)
        else:
            if self._last_emitted is not None and t < self._last_emitted + 1 \
                    - self._config.window_ns:
                stats.late[sensor] += 1
                return out
            stamps = self._buf_stamps[sensor]
            i = bisect.bisect_right(stamps, t)
            stamps.insert(i, t)
            self._buf_items[sensor].insert(i, item)
            if len(stamps) > self._config.max_buffer:
                del stamps[0]
                del self._buf_items[sensor][0]
                stats.overflow[sensor] += 1

        if newest is not None and t < newest:
            stats.out_of_order[sensor] += 1
        else:
            self._newest[sensor] = t
        recent[t] = None
        if len(recent) > self._recent_len:
            recent.popitem(last=False)
        if self._clock is None or t > self._clock:
            self._clock = t

        if len(self._pend_stamps) > self._config.max_buffer:
            stats.overflow[self._ref] += 1
            out.extend(self._emit_head())
        out.extend(self._drain(self._clock))
        self._prune()
        return out

    def poll(self, now_ns: int) -> list[MatchedSet[T]]:
        """Resolve sets that timed out against an external clock.

        Args:
            now_ns: current time on the common clock (wall time or ``/clock``), ns.

        Returns:
            Sets that became ready, in reference-stamp order.
        """
        if not _is_int(now_ns) or now_ns < 0:
            raise ValueError(f"poll(now_ns) needs int nanoseconds >= 0, got {now_ns!r}")
        clock = int(now_ns) if self._clock is None else max(self._clock, int(now_ns))
        out = self._drain(clock)
        self._prune()
        return out

    def flush(self) -> list[MatchedSet[T]]:
        """End of stream: resolve every pending set with what is buffered (per on_timeout)."""
        out = self._resolve_all()
        self._prune()
        return out

    # ------------------------------------------------------------------ matching
    def _pending_index(self, t: int) -> int | None:
        i = bisect.bisect_left(self._pend_stamps, t)
        return i if i < len(self._pend_stamps) and self._pend_stamps[i] == t else None

    def _candidate(self, sensor: str, t: int) -> int | None:
        """Index of the buffered message nearest to ``t`` within the window (ties: earlier)."""
        stamps = self._buf_stamps[sensor]
        i = bisect.bisect_left(stamps, t)
        best: int | None = None
        best_d = self._config.window_ns + 1
        for j in (i - 1, i):
            if 0 <= j < len(stamps):
                d = abs(stamps[j] - t)
                if d < best_d:
                    best, best_d = j, d
        return best

    def _head_ready(self, clock: int | None) -> bool:
        t = self._pend_stamps[0]
        if clock is not None and clock - t > self._config.timeout_ns:
            return True
        window = self._config.window_ns
        for sensor in self._others:
            newest = self._newest[sensor]
            j = self._candidate(sensor, t)
            if newest is not None:
                if j is not None:
                    if newest >= t + abs(self._buf_stamps[sensor][j] - t):
                        continue
                elif newest > t + window:
                    continue
            if sensor in self._optional and clock is not None and clock > t + window:
                continue
            return False
        return True

    def _emit_head(self) -> list[MatchedSet[T]]:
        """Resolve the oldest pending set with what is buffered now."""
        t = self._pend_stamps.pop(0)
        ref_item = self._pend_items.pop(0)
        items: dict[str, tuple[int, T]] = {self._ref: (t, ref_item)}
        missing: list[str] = []
        for sensor in self._others:
            j = self._candidate(sensor, t)
            if j is not None:
                items[sensor] = (self._buf_stamps[sensor][j], self._buf_items[sensor][j])
            elif sensor not in self._optional:
                missing.append(sensor)
        self._last_emitted = t
        if missing:
            if self._config.on_timeout == "drop":
                self._stats.dropped_partial += 1
                return []
            self._stats.partial += 1
        else:
            self._stats.complete += 1
        return [MatchedSet(t, items, tuple(missing), bool(missing))]

    def _drain(self, clock: int | None) -> list[MatchedSet[T]]:
        out: list[MatchedSet[T]] = []
        while self._pend_stamps and self._head_ready(clock):
            out.extend(self._emit_head())
        return out

    def _resolve_all(self) -> list[MatchedSet[T]]:
        out: list[MatchedSet[T]] = []
        while self._pend_stamps:
            out.extend(self._emit_head())
        return out

    def _prune(self) -> None:
        """Drop buffered messages no pending or future set can match.

        Future reference stamps must be > the last emitted one (older ones are late), so a
        message older than ``last_emitted + 1 - window_ns`` is out of reach of every set.
        """
        if self._last_emitted is None:
            return
        lowest = self._last_emitted + 1 - self._config.window_ns
        for sensor in self._others:
            stamps = self._buf_stamps[sensor]
            k = bisect.bisect_left(stamps, lowest)
            if k:
                del stamps[:k]
                del self._buf_items[sensor][:k]


__all__ = [
    "ON_TIMEOUT_CHOICES",
    "MatchedSet",
    "SyncCollector",
    "SyncConfig",
    "SyncStats",
]
