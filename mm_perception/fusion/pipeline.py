"""The classic perception chain on one synchronised sensor set: detectors, data-level and
output-level fusion, tracking.

Per :meth:`PerceptionPipeline.process` call (one :class:`SensorSet`):

1. **Camera detector** on every camera frame: 2D boxes and a per-pixel class-score map.
2. **Data-level fusion** (:class:`DataLevelFusion`): LiDAR / radar points projected into each
   camera (de-skewed to the camera stamp), sparse depth images, LiDAR points painted with
   colour and the camera's class scores (PointPainting).
3. **Object lists**, every one in ``base_link`` at the set's stamp (each named after what made
   it, :data:`LIST_NAMES`):

   * ``lidar``: the LiDAR detector on the raw points (LiDAR-only baseline);
   * ``radar``: the radar detector (radar-only baseline, with Doppler velocity);
   * ``camera``: 2D boxes lifted to 3D without any range sensor (ground plane and class
     size priors: the camera-only baseline);
   * ``data``: the LiDAR detector on the painted points, class from the painted camera
     scores (data-level fusion's result);
   * ``output``: output-level fusion of the per-sensor lists (LiDAR, radar, and camera boxes
     whose depth comes from the projected LiDAR points);
   * ``feature``: the feature-level (BEV) fusion model
     (:class:`~mm_perception.fusion.feature_level.detector.BevDetector`) on every sensor of
     the set, put in ``base_link`` at the set stamp by
     :func:`~mm_perception.fusion.feature_level.processor.frame_inputs`. Not in the default
     :attr:`PipelineConfig.lists`: it needs trained weights and loads ONNX Runtime (or torch).

   A sensor of several of a kind (two LiDARs) gives one list per sensor, fused with
   output-level fusion into its modality's list. Objects measured at another stamp than
   the set's (radar, camera) are moved to the set stamp: ego motion from odometry, object
   motion from their velocity (:func:`~mm_perception.core.objects.transform_objects`).
4. **Tracking**: one :class:`MultiObjectTracker` per list in :attr:`PipelineConfig.track_lists`,
   in the world-fixed odometry frame (so a moving ego does not move static objects), the
   tracks given back in ``base_link`` at the set stamp. Without odometry the tracker runs in
   ``base_link`` and the result says so in its notes.

Degenerate input never raises: a missing sensor, an empty cloud, a camera-less set, NaN
points, or odometry that does not cover a stamp leave the affected lists empty (or the
objects where they were measured) and are recorded in :attr:`FrameResult.notes`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from mm_perception.core.calibration import Rig, SensorSpec
from mm_perception.core.ego_motion import OdometryBuffer
from mm_perception.core.errors import ConfigError, EgoMotionError
from mm_perception.core.geometry import SE3
from mm_perception.core.objects import transform_objects, transform_tracks
from mm_perception.core.sensor_models import LidarModel, RadarModel
from mm_perception.core.types import (
    DetectedObject,
    EgoState,
    ObjectClass,
    SensorKind,
    SensorSet,
    Track,
)
from mm_perception.detection.lidar import LidarDetector, LidarDetectorConfig
from mm_perception.detection.radar import RadarDetector, RadarDetectorConfig
from mm_perception.fusion.data_level import DataLevelConfig, DataLevelFusion, DataLevelOutput
from mm_perception.fusion.output_level import Coverage, OutputLevelConfig, OutputLevelFusion
from mm_perception.tracking.tracker import MultiObjectTracker, TrackerConfig

if TYPE_CHECKING:  # the camera detector imports torch: loaded only when a camera is used
    from mm_perception.detection.camera.detector import CameraDetector, Detections2D
    from mm_perception.detection.camera.lift import LiftConfig

    # the BEV detector loads ONNX Runtime / torch: imported only when ``feature`` is produced
    from mm_perception.fusion.feature_level.detector import BevDetector, BevDetectorConfig
    from mm_perception.fusion.feature_level.processor import RawFrame

F32 = npt.NDArray[np.float32]

#: every object list the pipeline can produce, in report order
LIST_NAMES: tuple[str, ...] = ("lidar", "radar", "camera", "data", "output", "feature")
#: the lists produced by default: all but ``feature`` (it needs trained BEV weights)
DEFAULT_LISTS: tuple[str, ...] = ("lidar", "radar", "camera", "data", "output")
#: what each list needs from the rig (all of these)
_NEEDS: Mapping[str, tuple[SensorKind, ...]] = MappingProxyType({
    "lidar": (SensorKind.LIDAR,), "radar": (SensorKind.RADAR,), "camera": (SensorKind.CAMERA,),
    "data": (SensorKind.LIDAR, SensorKind.CAMERA), "output": (), "feature": ()})
#: what each list needs from the rig (at least one of these)
_NEEDS_ANY: Mapping[str, tuple[SensorKind, ...]] = MappingProxyType({
    "feature": (SensorKind.CAMERA, SensorKind.LIDAR, SensorKind.RADAR)})


def _names(value: object, key: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, tuple | list):
        raise ConfigError(f"PipelineConfig.{key} must be a list of names from "
                          f"{list(LIST_NAMES)}, got {value!r}")
    bad = [v for v in value if v not in LIST_NAMES]
    if bad:
        raise ConfigError(f"PipelineConfig.{key}: unknown list(s) {bad}; known: "
                          f"{list(LIST_NAMES)}")
    return tuple(dict.fromkeys(value))


@dataclass(frozen=True)
class PipelineConfig:
    """Configuration of :class:`PerceptionPipeline`.

    Attributes:
        lists: object lists to produce (see :data:`LIST_NAMES`); lists whose sensors the rig
            lacks are left out (with a note), never faked.
        track_lists: lists that get a tracker (a subset of ``lists``).
        data_level / lidar / radar / output_level / tracker: the components' configs
            (``output_level.sensor_kinds`` is filled from the rig).
        lift: camera 2D -> 3D lifting config (None: its defaults).
        camera_weights: directory of camera detector weights (None: the committed default).
        tracking_frame: name of the world-fixed frame tracks live in when odometry is there.
        use_cameras: run the camera detector (False: camera frames are only used to paint
            points with colour; the ``camera`` list is empty and output-level fusion fuses
            LiDAR and radar only).
        bev: the feature-level detector of the ``feature`` list (weights folder, runtime
            backend; None: the committed default weights on ONNX Runtime). Only loaded when
            ``feature`` is in ``lists``.
        camera_threads: torch's intra-op CPU threads for the camera detector (None: torch's
            default, one per core). Process-wide in torch. On a small CPU that other
            processes share (a live graph), 1 avoids the pool's threads waiting on each other
            for a core: measured on 2 cores, the live p99 processing time fell from 73 to 52 ms.

    Raises:
        ConfigError: unknown list names, ``track_lists`` not within ``lists``, wrong types.
    """

    lists: tuple[str, ...] = DEFAULT_LISTS
    track_lists: tuple[str, ...] = DEFAULT_LISTS
    data_level: DataLevelConfig = field(default_factory=DataLevelConfig)
    lidar: LidarDetectorConfig = field(default_factory=LidarDetectorConfig)
    radar: RadarDetectorConfig = field(default_factory=RadarDetectorConfig)
    output_level: OutputLevelConfig = field(default_factory=OutputLevelConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    lift: LiftConfig | None = None
    camera_weights: str | None = None
    tracking_frame: str = "odom"
    use_cameras: bool = True
    bev: BevDetectorConfig | None = None
    camera_threads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lists", _names(self.lists, "lists"))
        tracked = _names(self.track_lists, "track_lists")
        extra = [t for t in tracked if t not in self.lists]
        if extra:
            raise ConfigError(f"PipelineConfig.track_lists {extra} are not produced "
                              f"(lists={list(self.lists)})")
        object.__setattr__(self, "track_lists", tracked)
        for key, cls in (("data_level", DataLevelConfig), ("lidar", LidarDetectorConfig),
                         ("radar", RadarDetectorConfig), ("output_level", OutputLevelConfig),
                         ("tracker", TrackerConfig)):
            if not isinstance(getattr(self, key), cls):
                raise ConfigError(f"PipelineConfig.{key} must be a {cls.__name__}, got "
                                  f"{type(getattr(self, key)).__name__}")
        if self.camera_weights is not None and not isinstance(self.camera_weights, str):
            raise ConfigError(f"PipelineConfig.camera_weights must be a path string or None, "
                              f"got {self.camera_weights!r}")
        if not isinstance(self.use_cameras, bool):
            raise ConfigError(f"PipelineConfig.use_cameras must be a bool, got "
                              f"{self.use_cameras!r}")
        if self.camera_threads is not None and (
                isinstance(self.camera_threads, bool) or not isinstance(self.camera_threads, int)
                or self.camera_threads < 1):
            raise ConfigError(f"PipelineConfig.camera_threads must be an integer >= 1 or None, "
                              f"got {self.camera_threads!r}")
        if not isinstance(self.tracking_frame, str) or not self.tracking_frame:
            raise ConfigError(f"PipelineConfig.tracking_frame must be a non-empty string, "
                              f"got {self.tracking_frame!r}")
        if self.bev is not None:
            # imported here: the detector module is light, but keep this module's import
            # graph free of the feature-level package unless a BEV config is given
            from mm_perception.fusion.feature_level.detector import BevDetectorConfig

            if not isinstance(self.bev, BevDetectorConfig):
                raise ConfigError(f"PipelineConfig.bev must be a BevDetectorConfig or None, "
                                  f"got {type(self.bev).__name__}")


@dataclass(frozen=True, eq=False)
class FrameResult:
    """Everything the pipeline made from one sensor set.

    Attributes:
        stamp_ns: the set's stamp, ns.
        objects: list name -> detections, ``base_link`` at ``stamp_ns``.
        tracks: list name -> all live tracks (every status), ``base_link`` at ``stamp_ns``.
        camera_2d: camera name -> its 2D detections.
        data_level: the data-level fusion output (depth images, projections, painted points).
        timings_ms: stage -> wall milliseconds spent on it.
        notes: what was skipped or degraded, and why (one line each).
        ego: the ego state at ``stamp_ns`` when known.
        feature_inputs: the set's sensor data in ``base_link`` at ``stamp_ns`` as the
            feature-level model takes it (None when ``feature`` was not produced); other
            BEV detectors can run on it without recomputing it.
    """

    stamp_ns: int
    objects: Mapping[str, list[DetectedObject]]
    tracks: Mapping[str, list[Track]]
    camera_2d: Mapping[str, Detections2D]
    data_level: DataLevelOutput
    timings_ms: Mapping[str, float]
    notes: tuple[str, ...] = ()
    ego: EgoState | None = None
    feature_inputs: RawFrame | None = None


def sensor_coverage(spec: SensorSpec, camera_range_m: float = 80.0) -> Coverage | None:
    """Which ``base_link`` positions a rig sensor can see (field of view and range), for
    output-level fusion's single-sensor rule; None when the rig does not say (extrinsics
    unresolved, no model)."""
    if spec.extrinsics is None:
        return None
    T_sensor_base = spec.extrinsics.inverse()
    model = spec.sensor_model
    if spec.kind is SensorKind.RADAR and isinstance(model, RadarModel):
        half_fov = np.radians(model.azimuth_fov_deg) / 2.0
        max_range = model.max_range_m

        def radar(xyz: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
            p = T_sensor_base.apply(xyz)
            return ((np.abs(np.arctan2(p[:, 1], p[:, 0])) <= half_fov)
                    & (np.hypot(p[:, 0], p[:, 1]) <= max_range))
        return radar
    if spec.kind is SensorKind.LIDAR and isinstance(model, LidarModel):
        max_range = model.max_range_m

        def lidar(xyz: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
            p = T_sensor_base.apply(xyz)
            return np.asarray(np.hypot(p[:, 0], p[:, 1]) <= max_range)
        return lidar
    if spec.kind is SensorKind.CAMERA and spec.intrinsics is not None:
        camera = spec.intrinsics

        def cam(xyz: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
            p = T_sensor_base.apply(xyz)
            _, ok = camera.project(p, min_depth=0.5, in_image=True)
            return np.asarray(ok & (p[:, 2] <= camera_range_m))
        return cam
    return None


def object_sensor_kinds(rig: Rig) -> dict[str, SensorKind]:
    """Rig sensor name -> kind, for every sensor that produces objects (LiDAR, radar,
    camera): :attr:`OutputLevelConfig.sensor_kinds` of the rig."""
    return {s.name: s.kind for s in rig.sensors.values()
            if s.kind in (SensorKind.LIDAR, SensorKind.RADAR, SensorKind.CAMERA)}


def lidar_detector_for(spec: SensorSpec, config: LidarDetectorConfig) -> LidarDetector:
    """The LiDAR detector of one rig LiDAR: ``config`` with ``sensor_xy_m`` set to where the
    sensor sits in ``base_link`` (it decides which side of an object the LiDAR sees).

    Raises:
        ConfigError: the sensor's extrinsics are unresolved.
    """
    if spec.extrinsics is None:
        raise ConfigError(f"sensor {spec.name!r}: extrinsics unresolved (from_tf)")
    t = spec.extrinsics.translation
    return LidarDetector(replace(config, sensor_xy_m=(float(t[0]), float(t[1]))))


def to_set_stamp(objs: list[DetectedObject], src_ns: int, dst_ns: int,
                 odometry: OdometryBuffer | None, notes: list[str],
                 what: str) -> list[DetectedObject]:
    """Objects in ``base_link`` at ``src_ns`` -> ``base_link`` at ``dst_ns`` (ns): ego motion
    from ``odometry`` (identity when it is missing or does not cover both stamps, with a
    line in ``notes`` naming ``what``), object motion from each object's velocity over
    ``dst_ns - src_ns``. Returns ``objs`` itself when there is nothing to move."""
    if not objs or src_ns == dst_ns:
        return objs
    dt = (dst_ns - src_ns) * 1e-9
    T = SE3.identity()
    if odometry is not None and len(odometry):
        try:
            T = odometry.pose_at(dst_ns).inverse() @ odometry.pose_at(src_ns)
        except EgoMotionError as exc:
            notes.append(f"{what}: ego motion over {dt * 1e3:.0f} ms unknown ({exc}); "
                         f"objects not ego-compensated")
    return transform_objects(objs, T, "base_link", dt_s=dt, stamp_ns=dst_ns)


def ego_at(stamp_ns: int, odometry: OdometryBuffer | None,
           fallback: EgoState | None = None) -> EgoState | None:
    """The ego state at ``stamp_ns`` from ``odometry`` (interpolated / briefly extrapolated),
    else ``fallback`` (e.g. the set's ego state)."""
    if odometry is not None and len(odometry):
        try:
            return odometry.state_at(stamp_ns)
        except EgoMotionError:
            pass
    return fallback


def world_pose(stamp_ns: int, odometry: OdometryBuffer | None, ego: EgoState | None,
               notes: list[str]) -> tuple[SE3 | None, bool]:
    """``T_world_base`` at ``stamp_ns`` for tracking, and whether a pose lookup *failed*.

    From ``odometry`` when it has states (a failed lookup gives ``(None, True)`` and a note),
    else from ``ego`` (``ego.pose``), else ``(None, False)``: no ego motion known at all (a
    parked sensor rig), tracking runs in ``base_link``."""
    if odometry is not None and len(odometry):
        try:
            return odometry.pose_at(stamp_ns), False
        except EgoMotionError as exc:
            notes.append(f"tracking: no ego pose at the set stamp ({exc}); this frame "
                         f"is not tracked")
            return None, True
    if ego is not None:
        return ego.pose, False
    return None, False


def track_step(tracker: MultiObjectTracker, objects: list[DetectedObject], stamp_ns: int,
               T_world_base: SE3 | None, pose_failed: bool,
               world_frame: str) -> list[Track]:
    """One tracker update in the world-fixed frame (see :func:`world_pose`).

    Args:
        tracker: the tracker (its state lives in ``world_frame``).
        objects: detections in ``base_link`` at ``stamp_ns``.
        stamp_ns: the frame's stamp, ns.
        T_world_base: ego pose at ``stamp_ns`` (None: no pose).
        pose_failed: a pose lookup failed: the frame is skipped (``[]``) rather than tracked
            in another frame; without a pose and without a failure the tracker runs in
            ``base_link``.
        world_frame: name of the world-fixed frame (``tracking_frame``).

    Returns:
        All live tracks, boxes in ``base_link`` at ``stamp_ns``.
    """
    if T_world_base is None:
        return [] if pose_failed else tracker.update(objects, stamp_ns)
    world = transform_objects(objects, T_world_base, world_frame)
    live = tracker.update(world, stamp_ns)
    return transform_tracks(live, T_world_base.inverse(), "base_link")


class PerceptionPipeline:
    """Detectors + data-level + output-level fusion + tracking for one rig.

    Args:
        rig: the sensor rig (extrinsics resolved).
        config: see :class:`PipelineConfig`.
        camera_detector: a loaded camera detector to share between pipelines (None: loaded
            from ``config.camera_weights`` on first use when the rig has a camera).
        bev_detector: a loaded BEV detector for the ``feature`` list (None: made from
            ``config.bev`` when ``feature`` is produced).

    Raises:
        FileNotFoundError: ``feature`` is produced and its weights folder lacks a file.
    """

    def __init__(self, rig: Rig, config: PipelineConfig | None = None,
                 camera_detector: CameraDetector | None = None,
                 bev_detector: BevDetector | None = None) -> None:
        cfg = PipelineConfig() if config is None else config
        if not isinstance(cfg, PipelineConfig):
            raise TypeError(f"config must be a PipelineConfig, got {type(cfg).__name__}")
        self._rig = rig
        self._kinds = {s.name: s.kind for s in rig.sensors.values()}
        present = set(self._kinds.values())
        self._notes_static: list[str] = []
        lists = []
        for name in cfg.lists:
            lacking = [k.value for k in _NEEDS[name] if k not in present]
            any_of = _NEEDS_ANY.get(name, ())
            if lacking:
                self._notes_static.append(f"list {name!r} needs a {'/'.join(lacking)} the rig "
                                          f"does not have: not produced")
            elif any_of and not present.intersection(any_of):
                self._notes_static.append(
                    f"list {name!r} needs at least one {' or '.join(k.value for k in any_of)} "
                    f"in the rig: not produced")
            else:
                lists.append(name)
        self._lists = tuple(lists)
        self._cfg = replace(cfg, output_level=replace(cfg.output_level,
                                                      sensor_kinds=object_sensor_kinds(rig)))
        self._use_rig(rig)
        self._radar = RadarDetector(cfg.radar)
        self._fusion = OutputLevelFusion(self._cfg.output_level)
        self._camera_detector = camera_detector
        self._trackers = {name: MultiObjectTracker(cfg.tracker)
                          for name in cfg.track_lists if name in self._lists}
        self._bev = bev_detector
        if self._bev is None and "feature" in self._lists:
            # loaded now rather than on the first set: a missing weights file fails at
            # construction (node configure, eval start), not in the middle of a run
            from mm_perception.fusion.feature_level.detector import BevDetector

            self._bev = BevDetector(cfg.bev)

    def _use_rig(self, rig: Rig) -> None:
        cfg = self._cfg
        self._rig = rig
        self._data = DataLevelFusion(rig, cfg.data_level)
        # one detector per LiDAR: each knows where it sits (which side of an object it sees)
        self._lidar = {s.name: lidar_detector_for(s, cfg.lidar) for s in rig.sensors.values()
                       if s.kind is SensorKind.LIDAR and s.extrinsics is not None}

        self._coverage = {s.name: fn for s in rig.sensors.values()
                          if (fn := sensor_coverage(s)) is not None}

    def use_rig(self, rig: Rig) -> None:
        """Switch to the same rig with its extrinsics resolved (``from_tf`` rigs: after the
        bag's ``/tf_static`` is read). The sensors must be the same."""
        if set(rig.sensors) != set(self._rig.sensors):
            raise ConfigError(f"use_rig: sensors {sorted(rig.sensors)} differ from the "
                              f"pipeline's {sorted(self._rig.sensors)}")
        self._use_rig(rig)

    @property
    def config(self) -> PipelineConfig:
        return self._cfg

    @property
    def lists(self) -> tuple[str, ...]:
        """The object lists this pipeline produces for its rig."""
        return self._lists

    def reset(self) -> None:
        """Forget all tracks (a new bag / scene)."""
        for trk in self._trackers.values():
            trk.reset()

    # ------------------------------------------------------------------ helpers
    def camera_detector(self) -> CameraDetector:
        """The camera detector, loaded on first use."""
        if self._camera_detector is None:
            from mm_perception.detection.camera.detector import CameraDetector

            weights = None if self._cfg.camera_weights is None else Path(self._cfg.camera_weights)
            self._camera_detector = CameraDetector.load(weights,
                                                        threads=self._cfg.camera_threads)
        return self._camera_detector

    @property
    def bev_detector(self) -> BevDetector | None:
        """The BEV detector of the ``feature`` list (None when it is not produced)."""
        return self._bev

    def _to_set_stamp(self, objs: list[DetectedObject], src_ns: int, dst_ns: int,
                      odometry: OdometryBuffer | None, notes: list[str],
                      what: str) -> list[DetectedObject]:
        return to_set_stamp(objs, src_ns, dst_ns, odometry, notes, what)

    def _ego_at(self, stamp_ns: int, sensor_set: SensorSet,
                odometry: OdometryBuffer | None) -> EgoState | None:
        return ego_at(stamp_ns, odometry, sensor_set.ego)

    def _merge_kind(self, per_sensor: dict[str, list[DetectedObject]],
                    stamp_ns: int) -> list[DetectedObject]:
        """One list per modality: a single sensor's list as it is, several fused."""
        if len(per_sensor) == 1:
            return next(iter(per_sensor.values()))
        if not per_sensor:
            return []
        return self._fusion.fuse(per_sensor, stamp_ns)

    # ------------------------------------------------------------------ process
    def process(self, sensor_set: SensorSet,
                odometry: OdometryBuffer | None = None) -> FrameResult:
        """Run the chain on one set (see the module docstring)."""
        stamp = sensor_set.stamp_ns
        notes: list[str] = list(self._notes_static)
        timings: dict[str, float] = {}
        lists = self._lists
        want_camera = self._cfg.use_cameras and any(n in lists
                                                     for n in ("camera", "data", "output"))

        # 1. camera detector
        t0 = time.perf_counter()
        cam2d: dict[str, Detections2D] = {}
        score_maps: dict[str, F32] = {}
        score_classes: tuple[ObjectClass, ...] = ()
        if want_camera:
            for name, frame in sensor_set.cameras.items():
                if frame.encoding not in ("rgb8", "bgr8", "rgba8", "bgra8"):
                    notes.append(f"camera {name!r}: encoding {frame.encoding!r} has no colour; "
                                 f"no camera detections")
                    continue
                out = self.camera_detector().detect(frame.rgb())
                cam2d[name] = out.detections
                score_maps[name] = out.score_map
                score_classes = out.score_classes
        timings["camera_detector"] = (time.perf_counter() - t0) * 1e3

        # 2. data-level fusion
        t0 = time.perf_counter()
        data = self._data.fuse(sensor_set, odometry,
                               class_scores=score_maps if "data" in lists else None)
        notes.extend(data.notes)
        timings["data_level"] = (time.perf_counter() - t0) * 1e3

        # 3. per-sensor object lists
        t0 = time.perf_counter()
        lidar_raw: dict[str, list[DetectedObject]] = {}
        lidar_painted: dict[str, list[DetectedObject]] = {}
        for name, cloud in sensor_set.lidars.items():
            spec = self._rig.sensors.get(name)
            detector = self._lidar.get(name)
            if spec is None or spec.extrinsics is None or detector is None:
                continue
            if "lidar" in lists or "output" in lists:
                lidar_raw[name] = detector.detect(spec.extrinsics.apply(cloud.xyz()), stamp,
                                                     sensor=name)
            if "data" in lists and name in data.painted:
                painted = data.painted[name]
                xyz = np.stack([painted["x"], painted["y"], painted["z"]], axis=1)
                n_cls = len(score_classes)
                scores = (np.stack([painted[f"score_{k}"] for k in range(n_cls)], axis=1)
                          if n_cls and "score_0" in (painted.dtype.names or ()) else None)
                lidar_painted[name] = detector.detect(
                    spec.extrinsics.apply(xyz), stamp, class_scores=scores,
                    score_classes=score_classes if scores is not None else (),
                    sensor=name)
        timings["lidar_detector"] = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        radar: dict[str, list[DetectedObject]] = {}
        if "radar" in lists or "output" in lists:
            for name, scan in sensor_set.radars.items():
                spec = self._rig.sensors.get(name)
                if spec is None or spec.extrinsics is None:
                    continue
                ego = self._ego_at(scan.stamp_ns, sensor_set, odometry)
                if ego is None:
                    notes.append(f"radar {name!r}: no ego state for Doppler compensation; "
                                 f"no radar objects")
                    continue
                objs = self._radar.detect(scan, spec.extrinsics, ego, sensor=name)
                radar[name] = self._to_set_stamp(objs, scan.stamp_ns, stamp, odometry, notes,
                                                 f"radar {name!r}")
        timings["radar_detector"] = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        camera_only: dict[str, list[DetectedObject]] = {}
        camera_depth: dict[str, list[DetectedObject]] = {}
        if cam2d:
            from mm_perception.detection.camera.lift import lift_detections

            for name, dets in cam2d.items():
                spec = self._rig.sensors[name]
                frame = sensor_set.cameras[name]
                model = frame.camera if frame.camera is not None else spec.intrinsics
                if model is None or spec.extrinsics is None:
                    notes.append(f"camera {name!r}: no intrinsics/extrinsics; not lifted to 3D")
                    continue
                if "camera" in lists:
                    objs = lift_detections(dets, model, spec.extrinsics, frame.stamp_ns,
                                           config=self._cfg.lift, sensor=name)
                    camera_only[name] = self._to_set_stamp(objs, frame.stamp_ns, stamp,
                                                           odometry, notes, f"camera {name!r}")
                if "output" in lists:
                    fused_cam = data.cameras.get(name)
                    depth = None if fused_cam is None else fused_cam.depth
                    objs = lift_detections(dets, model, spec.extrinsics, frame.stamp_ns,
                                           depth=depth, config=self._cfg.lift, sensor=name)
                    camera_depth[name] = self._to_set_stamp(objs, frame.stamp_ns, stamp,
                                                            odometry, notes,
                                                            f"camera {name!r}")
        timings["camera_lift"] = (time.perf_counter() - t0) * 1e3

        # 4. lists
        t0 = time.perf_counter()
        objects: dict[str, list[DetectedObject]] = {}
        if "lidar" in lists:
            objects["lidar"] = self._merge_kind(lidar_raw, stamp)
        if "radar" in lists:
            objects["radar"] = self._merge_kind(radar, stamp)
        if "camera" in lists:
            objects["camera"] = self._merge_kind(camera_only, stamp)
        if "data" in lists:
            objects["data"] = self._merge_kind(lidar_painted, stamp)
        if "output" in lists:
            inputs = {**lidar_raw, **radar, **camera_depth}
            objects["output"] = self._fusion.fuse(inputs, stamp, coverage=self._coverage)
        timings["output_level"] = (time.perf_counter() - t0) * 1e3

        # 5. feature-level fusion: one model on all sensors, already at the set stamp
        raw: RawFrame | None = None
        if "feature" in lists and self._bev is not None:
            from mm_perception.fusion.feature_level.processor import frame_inputs

            t0 = time.perf_counter()
            raw = frame_inputs(sensor_set, self._rig, odometry)
            notes.extend(f"feature: {n}" for n in raw.notes)
            objects["feature"] = self._bev.detect_frame(raw, stamp)
            timings["feature_level"] = (time.perf_counter() - t0) * 1e3

        # 6. tracking in the world-fixed frame
        t0 = time.perf_counter()
        ego = self._ego_at(stamp, sensor_set, odometry)
        T_world_base, pose_failed = world_pose(stamp, odometry, ego, notes)
        tracks: dict[str, list[Track]] = {}
        for name, trk in self._trackers.items():
            if name in objects:
                tracks[name] = track_step(trk, objects[name], stamp, T_world_base, pose_failed,
                                          self._cfg.tracking_frame)
        timings["tracking"] = (time.perf_counter() - t0) * 1e3
        return FrameResult(stamp_ns=stamp, objects=MappingProxyType(objects),
                           tracks=MappingProxyType(tracks), camera_2d=MappingProxyType(cam2d),
                           data_level=data, timings_ms=MappingProxyType(timings),
                           notes=tuple(notes), ego=ego, feature_inputs=raw)


__all__ = ["DEFAULT_LISTS", "LIST_NAMES", "FrameResult", "PerceptionPipeline", "PipelineConfig",
           "ego_at", "lidar_detector_for", "object_sensor_kinds", "sensor_coverage", "to_set_stamp",
           "track_step", "world_pose"]
