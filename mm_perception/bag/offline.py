"""Offline, deterministic replay: bag -> synchronised, ego-motion-compensated SensorSets.

The same pipeline that runs live is fed here straight from the bag, in receive-time order,
with the sync collector's data clock (never the wall clock) deciding timeouts, so two runs
over the same bag give identical sets. No DDS, no ROS installation needed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from mm_perception.bag.reader import BagSource, ReadStats
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


@dataclass(frozen=True)
class OfflineConfig:
    """Offline replay options.

    Attributes:
        deskew_lidar: ego-motion compensate LiDAR clouds with per-point time to the set's
            reference stamp (needs odometry in the rig).
        remove_nans: drop non-finite points when converting clouds.
        max_sets: stop after this many sets (0 = all).
    """

    deskew_lidar: bool = True
    remove_nans: bool = True
    max_sets: int = 0

    def __post_init__(self) -> None:
        if self.max_sets < 0:
            raise ConfigError(f"OfflineConfig.max_sets must be >= 0, got {self.max_sets}")


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
class OfflineSummary:
    """What an offline run did, JSON-ready through :meth:`as_dict`."""

    sets: int = 0
    complete: int = 0
    partial: int = 0
    missing: Counter[str] = field(default_factory=Counter)
    deskewed: Counter[str] = field(default_factory=Counter)
    deskew_failed: Counter[str] = field(default_factory=Counter)
    ego_missing: int = 0
    odometry: dict[str, Any] = field(default_factory=dict)
    sync: dict[str, Any] = field(default_factory=dict)
    read: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"sets": self.sets, "complete_sets": self.complete,
                "partial_sets": self.partial, "missing_in_partial_sets": dict(self.missing),
                "deskewed_clouds": dict(self.deskewed),
                "deskew_failed": dict(self.deskew_failed),
                "sets_without_ego_state": self.ego_missing, "odometry": self.odometry,
                "sync": self.sync, "read": self.read}


class OfflineReplay:
    """Feeds a bag through sync + ego-motion compensation, deterministically."""

    def __init__(self, rig: Rig, config: OfflineConfig | None = None,
                 sync: SyncConfig | None = None) -> None:
        self.rig = rig
        self.config = config or OfflineConfig()
        self.sync_config = sync or sync_config_for_rig(rig)
        self.summary = OfflineSummary()
        self.read_stats = ReadStats()
        self._odom = OdometryBuffer(OdometryBufferConfig())
        self._collector: SyncCollector[CameraFrame | PointCloud | RadarScan] = \
            SyncCollector(self.sync_config)

    @property
    def odometry(self) -> OdometryBuffer:
        """The ego poses received so far (every odometry message up to the last set yielded,
        on the common clock): what de-skewing and tracking in a world frame need."""
        return self._odom

    def run(self, bag: BagSource) -> Iterator[SensorSet]:
        """Yield every synchronised set of the bag, in reference-stamp order."""
        rig = bag.resolve_rig(self.rig)
        self.rig = rig
        emitted = 0
        try:
            for msg in bag.sensor_messages(rig, self.read_stats, self.config.remove_nans):
                if isinstance(msg.value, EgoState):
                    offset = rig.sensors[msg.sensor].time_offset_ns
                    state = msg.value if not offset else replace(
                        msg.value, stamp_ns=msg.value.stamp_ns + offset)
                    self._odom.add(state)
                    continue
                for matched in self._collector.add(msg.sensor, msg.stamp_ns, msg.value):
                    yield self._to_set(matched)
                    emitted += 1
                    if self.config.max_sets and emitted >= self.config.max_sets:
                        return
            for matched in self._collector.flush():
                yield self._to_set(matched)
                emitted += 1
                if self.config.max_sets and emitted >= self.config.max_sets:
                    return
        finally:
            self._finish()

    def _finish(self) -> None:
        self.summary.sync = self._collector.stats.as_dict()
        self.summary.odometry = dict(self._odom.stats)
        self.summary.read = self.read_stats.as_dict()

    def _to_set(self, matched: MatchedSet[CameraFrame | PointCloud | RadarScan]) -> SensorSet:
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
        if not self.config.deskew_lidar or cloud.time_offsets_ns is None or not len(self._odom):
            return cloud
        spec = self.rig.sensors[name]
        assert spec.extrinsics is not None  # resolved by resolve_rig
        try:
            out = deskew_cloud(cloud, spec.extrinsics, self._odom, target_ns)
        except EgoMotionError as exc:
            # kept as measured, but counted and reported: the caller sees deskew_failed
            self.summary.deskew_failed[name] += 1
            LOG.warning("cloud of %s at %d not deskewed: %s", name, cloud.stamp_ns, exc)
            return cloud
        self.summary.deskewed[name] += 1
        return out


__all__ = ["OfflineConfig", "OfflineReplay", "OfflineSummary", "sync_config_for_rig"]
