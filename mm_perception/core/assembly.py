"""Converted sensor messages -> synchronised, ego-motion-compensated :class:`SensorSet` s.

One class serves the offline replay (:mod:`mm_perception.bag.offline`, messages in bag order,
the sync collector's data clock deciding timeouts) and the live ROS nodes (messages as they
arrive, plus :meth:`SetAssembler.poll` with the node clock so that a silent sensor still ends
in a partial set within the timeout). Because both paths run this code, a live replay and an
offline run of the same bag build the same sets whenever the messages arrive in the same
order.

Per message: odometry goes into an :class:`OdometryBuffer` (with the sensor's rig time
offset); camera frames, clouds and radar scans go into a :class:`SyncCollector`. Each matched
set is completed with every value re-stamped on the common clock, LiDAR clouds de-skewed to
the set stamp (when they carry per-point time and odometry is there) and the ego state at the
set stamp.

A matched set of a rig with odometry is *held* until the odometry covers it: until a pose
stamped at or after its newest time (the latest member stamp, or the end of a LiDAR sweep
that is de-skewed) has arrived, or, when odometry is late or gone, until the clock (data
clock, or the node clock given to :meth:`SetAssembler.poll`) is ``odometry_wait_ns`` past
that time (counted ``odometry_late``; the set then uses what is there, extrapolated within
the odometry buffer's limit). Why: a LiDAR sweep's last points are stamped just before the
sweep's message is sent, and the pose for that instant comes a few milliseconds later. A set
emitted at once would de-skew with an extrapolated pose, or with none under load (the
sweep then stays distorted: over a metre at 25 m/s), and a live replay, whose odometry can
arrive after the sweep, would not build the sets of the offline run. Held sets keep their
order.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from numbers import Integral
from typing import Any

from mm_perception.core.calibration import Rig
from mm_perception.core.ego_motion import OdometryBuffer, OdometryBufferConfig, deskew_cloud
from mm_perception.core.errors import ConfigError, EgoMotionError
from mm_perception.core.sync import MatchedSet, SyncCollector, SyncConfig
from mm_perception.core.types import (
    CameraFrame,
    EgoState,
    PointCloud,
    RadarScan,
    SensorKind,
    SensorSet,
)

LOG = logging.getLogger(__name__)

SyncedValue = CameraFrame | PointCloud | RadarScan


def sync_config_for_rig(rig: Rig) -> SyncConfig:
    """The rig's ``sync:`` section as a :class:`SyncConfig` over its camera/LiDAR/radar sensors.

    Without a ``reference`` the first LiDAR is used (else the first radar, else the first
    camera): the slowest, most informative stream is the usual choice.
    """
    streams = [s for s in rig.sensors.values() if s.kind is not SensorKind.ODOMETRY]
    if not streams:
        raise ConfigError(f"{rig.source}: the rig has no camera, lidar or radar to synchronise")
    section: dict[str, Any] = dict(rig.sync)
    if "reference" not in section:
        for kind in (SensorKind.LIDAR, SensorKind.RADAR, SensorKind.CAMERA):
            first = [s.name for s in streams if s.kind is kind]
            if first:
                section["reference"] = first[0]
                break
    return SyncConfig.from_mapping(
        section, sensors=[s.name for s in streams],
        time_offsets_ns={s.name: s.time_offset_ns for s in streams},
        optional=[s.name for s in streams if not s.required])


@dataclass
class AssemblySummary:
    """What the assembler did, JSON-ready through :meth:`as_dict`."""

    sets: int = 0
    complete: int = 0
    partial: int = 0
    missing: Counter[str] = field(default_factory=Counter)
    deskewed: Counter[str] = field(default_factory=Counter)
    deskew_failed: Counter[str] = field(default_factory=Counter)
    ego_missing: int = 0
    odometry_late: int = 0
    odometry: dict[str, Any] = field(default_factory=dict)
    sync: dict[str, Any] = field(default_factory=dict)
    read: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"sets": self.sets, "complete_sets": self.complete,
                "partial_sets": self.partial, "missing_in_partial_sets": dict(self.missing),
                "deskewed_clouds": dict(self.deskewed),
                "deskew_failed": dict(self.deskew_failed),
                "sets_without_ego_state": self.ego_missing,
                "sets_before_odometry": self.odometry_late, "odometry": self.odometry,
                "sync": self.sync, "read": self.read}


class SetAssembler:
    """Builds :class:`SensorSet` s from converted messages of a resolved rig's sensors.

    Args:
        rig: the rig, with every extrinsic resolved (a bag's ``from_tf`` filled in).
        sync: the synchroniser's config (default: :func:`sync_config_for_rig`).
        deskew_lidar: ego-motion compensate LiDAR clouds with per-point time to the set's
            reference stamp (needs odometry).
        odometry_wait_ns: how long past its newest time a matched set waits for odometry
            that covers it (see the module docstring), ns; ignored for a rig without an
            odometry sensor (sets are emitted at once).
    """

    def __init__(self, rig: Rig, sync: SyncConfig | None = None,
                 deskew_lidar: bool = True, odometry_wait_ns: int = 100_000_000) -> None:
        if odometry_wait_ns < 0:
            raise ConfigError(f"odometry_wait_ns must be >= 0, got {odometry_wait_ns}")
        self.rig = rig
        self.sync_config = sync or sync_config_for_rig(rig)
        self.deskew_lidar = deskew_lidar
        self.odometry_wait_ns: int | None = (odometry_wait_ns
                                             if rig.of_kind(SensorKind.ODOMETRY) else None)
        self.summary = AssemblySummary()
        self._odom = OdometryBuffer(OdometryBufferConfig())
        self._collector: SyncCollector[SyncedValue] = SyncCollector(self.sync_config)
        # matched sets waiting for odometry, in emission order, with the time they need
        self._held: deque[tuple[MatchedSet[SyncedValue], int]] = deque()
        self._clock_ns: int | None = None  # newest stamp added, common clock

    @property
    def odometry(self) -> OdometryBuffer:
        """The ego poses received so far, on the common clock."""
        return self._odom

    @property
    def pending(self) -> int:
        """Sets opened by the reference sensor and not yet emitted (held for odometry
        included)."""
        return self._collector.pending + len(self._held)

    def add(self, sensor: str, value: SyncedValue | EgoState) -> list[SensorSet]:
        """Take one converted message of rig sensor ``sensor``; return the sets it completed.

        Odometry never completes a set. Unknown sensors and bad stamps are counted by the
        sync collector (``summary.sync``), never raised.
        """
        spec = self.rig.sensors.get(sensor)
        offset = spec.time_offset_ns if spec is not None else 0
        if isinstance(value, EgoState):
            self._odom.add(value if not offset else replace(value,
                                                            stamp_ns=value.stamp_ns + offset))
            self._advance_clock(value.stamp_ns, offset)
            return self._release(self._clock_ns)
        jumps = self._collector.stats.clock_jumps
        matched = self._collector.add(sensor, value.stamp_ns, value)
        if self._collector.stats.clock_jumps > jumps:
            # a new timeline: what was held belongs to the old one and is emitted as it is
            self._clock_ns = None
            out = self._release(None, force=True)
            self._advance_clock(value.stamp_ns, offset)
            self._hold(matched)
            return out + self._release(self._clock_ns)
        self._advance_clock(value.stamp_ns, offset)
        self._hold(matched)
        return self._release(self._clock_ns)

    def poll(self, now_ns: int) -> list[SensorSet]:
        """Sets whose timeout passed by ``now_ns`` (common clock, ns): a silent sensor's set is
        emitted partial (or dropped, per the sync config) instead of waiting for data; a set
        held for odometry is emitted once ``now_ns`` is ``odometry_wait_ns`` past its time."""
        self._hold(self._collector.poll(now_ns))
        return self._release(now_ns if self._clock_ns is None else max(now_ns, self._clock_ns))

    def flush(self) -> list[SensorSet]:
        """End of stream: every pending set, with what is buffered."""
        self._hold(self._collector.flush())
        return self._release(None, force=True)

    def reset(self) -> None:
        """Forget every buffered message, pose and count (a new stream starts)."""
        self.summary = AssemblySummary()
        self._odom = OdometryBuffer(OdometryBufferConfig())
        self._collector = SyncCollector(self.sync_config)
        self._held.clear()
        self._clock_ns = None

    def finish(self) -> AssemblySummary:
        """Copy the sync and odometry statistics into :attr:`summary` and return it."""
        self.summary.sync = self._collector.stats.as_dict()
        self.summary.odometry = dict(self._odom.stats)
        return self.summary

    # ------------------------------------------------------------------ internals
    def _advance_clock(self, stamp_ns: Any, offset_ns: int) -> None:
        # a stamp the sync collector rejects as invalid (not an int) does not move the clock
        if isinstance(stamp_ns, Integral) and not isinstance(stamp_ns, bool):
            t = int(stamp_ns) + offset_ns
            if self._clock_ns is None or t > self._clock_ns:
                self._clock_ns = t

    def _needed_ns(self, matched: MatchedSet[SyncedValue]) -> int:
        """The newest time a set's processing looks the ego pose up at: its members' stamps
        and, for a LiDAR sweep that is de-skewed, the sweep's last point."""
        needed = matched.stamp_ns
        for stamp, value in matched.items.values():
            needed = max(needed, stamp)
            offsets = getattr(value, "time_offsets_ns", None)
            if self.deskew_lidar and offsets is not None and len(offsets):
                needed = max(needed, stamp + int(offsets.max()))
        return needed

    def _hold(self, matched: list[MatchedSet[SyncedValue]]) -> None:
        self._held.extend((m, self._needed_ns(m)) for m in matched)

    def _release(self, clock_ns: int | None, force: bool = False) -> list[SensorSet]:
        """Emit held sets, in order, while the head is covered by odometry, or ``clock_ns``
        is ``odometry_wait_ns`` past its time, or ``force``."""
        out: list[SensorSet] = []
        while self._held:
            matched, needed = self._held[0]
            if self.odometry_wait_ns is not None:
                span = self._odom.span()
                # poses of another timeline (before a clock jump) do not cover it
                covered = span is not None and span[0] <= needed <= span[1]
                if not covered:
                    timed_out = (clock_ns is not None
                                 and clock_ns > needed + self.odometry_wait_ns)
                    if not (force or timed_out):
                        break
                    self.summary.odometry_late += 1
            self._held.popleft()
            out.append(self._to_set(matched))
        return out

    def _to_set(self, matched: MatchedSet[SyncedValue]) -> SensorSet:
        cameras: dict[str, CameraFrame] = {}
        lidars: dict[str, PointCloud] = {}
        radars: dict[str, RadarScan] = {}
        for name, (stamp, raw_value) in matched.items.items():
            # every value of a set carries its stamp on the common clock (rig offset applied)
            value = raw_value if raw_value.stamp_ns == stamp else replace(raw_value,
                                                                            stamp_ns=stamp)
            if isinstance(value, CameraFrame):
                cameras[name] = value
            elif isinstance(value, RadarScan):
                radars[name] = value
            else:
                lidars[name] = self._maybe_deskew(name, value, matched.stamp_ns)
        ego: EgoState | None = None
        if len(self._odom):
            try:
                ego = self._odom.state_at(matched.stamp_ns)
            except EgoMotionError as exc:
                LOG.debug("no ego state for set at %d: %s", matched.stamp_ns, exc)
        if ego is None:
            self.summary.ego_missing += 1
        self.summary.sets += 1
        if matched.missing:
            self.summary.partial += 1
            self.summary.missing.update(matched.missing)
        else:
            self.summary.complete += 1
        return SensorSet(stamp_ns=matched.stamp_ns, cameras=cameras, lidars=lidars,
                         radars=radars, ego=ego, missing=matched.missing)

    def _maybe_deskew(self, name: str, cloud: PointCloud, target_ns: int) -> PointCloud:
        if not self.deskew_lidar or cloud.time_offsets_ns is None or not len(self._odom):
            return cloud
        spec = self.rig.sensors[name]
        if spec.extrinsics is None:
            raise ConfigError(f"sensor {name!r}: extrinsics unresolved (from_tf) when "
                              f"de-skewing; resolve the rig first")
        try:
            out = deskew_cloud(cloud, spec.extrinsics, self._odom, target_ns)
        except EgoMotionError as exc:
            # kept as measured, but counted and reported: the caller sees deskew_failed
            self.summary.deskew_failed[name] += 1
            LOG.warning("cloud of %s at %d not deskewed: %s", name, cloud.stamp_ns, exc)
            return cloud
        self.summary.deskewed[name] += 1
        return out


__all__ = ["AssemblySummary", "SetAssembler", "SyncedValue", "sync_config_for_rig"]
