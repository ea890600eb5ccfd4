"""The stack's own perception inside a closed loop: simulator messages -> tracks -> scene.

A planner evaluated in closed loop must see what the stack perceives, not the simulator's
ground truth. :class:`PerceptionLoop` takes the sensor messages of each simulator step in
receive order, assembles them into synchronised sets with the same
:class:`~mm_perception.core.assembly.SetAssembler` the bag replay and the ROS nodes use, runs
:class:`~mm_perception.fusion.pipeline.PerceptionPipeline` on every set and keeps the newest
tracks of one list (``output``: output-level fusion of LiDAR, radar and camera, by default)
in the world (odometry) frame, plus the newest camera image.

:meth:`PerceptionLoop.scene_objects` turns those tracks into the planner's
:class:`~mm_perception.planning.observation.SceneObject` s in ``base_link`` at the planning
stamp (constant-velocity prediction from the tracks' stamp), each with its dominant colour
sampled from the camera image inside the projection of its box; :meth:`world_tracks` gives
the same tracks in the world frame for the safety filter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mm_perception.core.assembly import SetAssembler, sync_config_for_rig
from mm_perception.core.calibration import Rig
from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.objects import transform_tracks
from mm_perception.core.types import (
    CameraFrame,
    EgoState,
    PointCloud,
    RadarScan,
    SensorKind,
    SensorSet,
    Track,
    TrackStatus,
)
from mm_perception.fusion.pipeline import LIST_NAMES, PerceptionPipeline, PipelineConfig
from mm_perception.planning.observation import SceneObject, ego_pose2
from mm_perception.sim.simulator import SensorOutput

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

#: unit-cube corners (x, y, z in {-0.5, 0.5}) scaled by a box's size
_CORNERS = np.array([[sx, sy, sz] for sx in (-0.5, 0.5) for sy in (-0.5, 0.5)
                     for sz in (-0.5, 0.5)], dtype=np.float64)


@dataclass(frozen=True)
class PerceptionLoopConfig:
    """Settings of :class:`PerceptionLoop`.

    Attributes:
        track_list: the pipeline list whose tracks the planner sees (``output``: fused).
        pipeline: the perception pipeline's configuration (must produce and track
            ``track_list``).
        planner_statuses: track statuses handed to the planner as scene objects (the safety
            filter gets every live track, tentative included: it must not ignore a new
            obstacle because the tracker has not confirmed it yet).
        colour_patch: fraction of the projected box's width and height, around its centre,
            whose median colour is the object's colour (the centre part avoids the road and
            the neighbours around the box).
        min_patch_px: fewer pixels than this in the patch: colour unknown (NaN).
    """

    track_list: str = "output"
    pipeline: PipelineConfig = field(default_factory=lambda: PipelineConfig(
        lists=("output",), track_lists=("output",)))
    planner_statuses: tuple[TrackStatus, ...] = (TrackStatus.CONFIRMED, TrackStatus.COASTING)
    colour_patch: float = 0.5
    min_patch_px: int = 4

    def __post_init__(self) -> None:
        if self.track_list not in LIST_NAMES:
            raise ConfigError(f"PerceptionLoopConfig.track_list: unknown list "
                              f"{self.track_list!r}; known: {list(LIST_NAMES)}")
        if self.track_list not in self.pipeline.track_lists:
            raise ConfigError(f"PerceptionLoopConfig.track_list {self.track_list!r} is not "
                              f"tracked by the pipeline (track_lists="
                              f"{list(self.pipeline.track_lists)})")
        if not 0.0 < self.colour_patch <= 1.0:
            raise ConfigError(f"PerceptionLoopConfig.colour_patch must be in (0, 1], got "
                              f"{self.colour_patch!r}")
        if self.min_patch_px < 1:
            raise ConfigError(f"PerceptionLoopConfig.min_patch_px must be >= 1, got "
                              f"{self.min_patch_px!r}")
        object.__setattr__(self, "planner_statuses",
                           tuple(TrackStatus(s) for s in self.planner_statuses))


@dataclass(frozen=True)
class PerceptionSnapshot:
    """The newest perception output.

    Attributes:
        stamp_ns: stamp of the set the tracks come from, ns.
        tracks: live tracks (every status but deleted), world frame, at ``stamp_ns``.
        frame_id: the world frame (the odometry's frame).
        notes: what the pipeline skipped or degraded on that set.
    """

    stamp_ns: int
    tracks: tuple[Track, ...]
    frame_id: str
    notes: tuple[str, ...] = ()


def box_colour(image: U8, camera: CameraModel, T_cam_base: SE3, center_base: F64,
               size: F64, yaw: float, patch: float = 0.5, min_px: int = 4) -> F64:
    """Median colour of the central part of a box's projection into an image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        camera: the camera's intrinsics and distortion.
        T_cam_base: ``base_link`` -> camera optical frame.
        center_base: ``(3,)`` box centre, m, ``base_link``.
        size: ``(3,)`` length, width, height, m.
        yaw: box heading, rad, ``base_link``.
        patch: fraction of the projected box's width / height kept around its centre.
        min_px: fewer pixels than this inside the image: unknown.

    Returns:
        ``(3,)`` float64 RGB in ``[0, 1]``, NaN when the box is behind the camera, outside
        the image or too small. Occlusion is not handled: a box hidden behind another gets
        the occluder's colour (the planner also sees where the box is).
    """
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    corners = (_CORNERS * np.asarray(size, dtype=np.float64)) @ rot.T + np.asarray(
        center_base, dtype=np.float64)
    uv, valid = camera.project(T_cam_base.apply(corners))
    if not valid.all():  # part of the box behind the camera / outside the lens model
        return np.full(3, np.nan)
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    mid, half = (lo + hi) / 2.0, (hi - lo) * patch / 2.0
    h, w = image.shape[:2]
    u0, u1 = int(max(math.floor(mid[0] - half[0]), 0)), int(min(math.ceil(mid[0] + half[0]), w))
    v0, v1 = int(max(math.floor(mid[1] - half[1]), 0)), int(min(math.ceil(mid[1] + half[1]), h))
    if u1 <= u0 or v1 <= v0 or (u1 - u0) * (v1 - v0) < min_px:
        return np.full(3, np.nan)
    pixels = image[v0:v1, u0:u1].reshape(-1, 3)
    return np.asarray(np.median(pixels, axis=0), dtype=np.float64) / 255.0


class PerceptionLoop:
    """Runs the perception pipeline on simulator messages (see the module docstring).

    Args:
        rig: the sensor rig the simulator uses.
        config: see :class:`PerceptionLoopConfig`.
        pipeline: an existing pipeline to use (None: built from ``config.pipeline``);
            sharing one avoids reloading the camera detector per episode.

    Raises:
        ConfigError: the rig has no odometry (tracks must live in a world frame the planner
            and the safety filter share).
    """

    def __init__(self, rig: Rig, config: PerceptionLoopConfig | None = None,
                 pipeline: PerceptionPipeline | None = None) -> None:
        self.config = config if config is not None else PerceptionLoopConfig()
        if not rig.of_kind(SensorKind.ODOMETRY):
            raise ConfigError(f"{rig.source}: closed-loop perception needs an odometry sensor "
                              f"in the rig (tracks live in its world frame)")
        self.rig = rig
        self.pipeline = pipeline if pipeline is not None else PerceptionPipeline(
            rig, self.config.pipeline)
        if self.config.track_list not in self.pipeline.lists:
            raise ConfigError(f"the pipeline does not produce list "
                              f"{self.config.track_list!r} for {rig.source} (it makes "
                              f"{list(self.pipeline.lists)})")
        cams = [s for s in rig.of_kind(SensorKind.CAMERA) if s.intrinsics is not None
                and s.extrinsics is not None]
        #: the camera the planner sees and colours come from (the rig's first camera)
        self.camera_name: str | None = cams[0].name if cams else None
        self._camera: CameraModel | None = None
        self._T_cam_base: SE3 | None = None
        if cams:
            assert cams[0].intrinsics is not None and cams[0].extrinsics is not None
            self._camera = cams[0].intrinsics
            self._T_cam_base = cams[0].extrinsics.inverse()
        self.reset()

    def reset(self) -> None:
        """Start a new episode: empty assembler, pipeline (trackers) and snapshot."""
        self._assembler = SetAssembler(self.rig, sync_config_for_rig(self.rig),
                                       deskew_lidar=True)
        self.pipeline.reset()
        self.snapshot: PerceptionSnapshot | None = None
        self.image: CameraFrame | None = None
        self.sets = 0
        self.partial_sets = 0
        self.processing_ms: list[float] = []

    # ------------------------------------------------------------------ input
    def feed(self, messages: Iterable[tuple[str, CameraFrame | PointCloud | RadarScan | EgoState]]
             ) -> int:
        """Add messages (sensor name, value) in receive order; returns the number of sets
        processed."""
        done = 0
        for sensor, value in messages:
            if sensor == self.camera_name and isinstance(value, CameraFrame):
                self.image = value
            for sset in self._assembler.add(sensor, value):
                self._process(sset)
                done += 1
        return done

    def _process(self, sset: SensorSet) -> None:
        t0 = time.perf_counter()
        result = self.pipeline.process(sset, self._assembler.odometry)
        self.processing_ms.append((time.perf_counter() - t0) * 1e3)
        self.sets += 1
        self.partial_sets += bool(sset.missing)
        ego = result.ego if result.ego is not None else sset.ego
        if ego is None:
            return  # no pose yet: tracks cannot be placed in the world frame
        live = [t for t in result.tracks.get(self.config.track_list, [])
                if t.status is not TrackStatus.DELETED]
        world = transform_tracks(live, ego.pose, ego.frame_id)
        self.snapshot = PerceptionSnapshot(result.stamp_ns, tuple(world), ego.frame_id,
                                           tuple(result.notes))

    # ------------------------------------------------------------------ output
    def world_tracks(self) -> tuple[Track, ...]:
        """Every live track of the newest snapshot, world frame (for the safety filter)."""
        return () if self.snapshot is None else self.snapshot.tracks

    @property
    def stamp_ns(self) -> int | None:
        """Stamp of the newest perception output, ns (None before the first)."""
        return None if self.snapshot is None else self.snapshot.stamp_ns

    def rgb_image(self) -> U8 | None:
        """The newest camera image as ``(H, W, 3)`` uint8 RGB, or None."""
        if self.image is None:
            return None
        try:
            return self.image.rgb()
        except ValueError:  # an encoding without colour: the planner gets no image
            return None

    def scene_objects(self, ego: EgoState) -> tuple[SceneObject, ...]:
        """Planner-status tracks in ``base_link`` at ``ego.stamp_ns``, with colours
        (:func:`scene_objects` of the newest snapshot and camera image)."""
        snap = self.snapshot
        if snap is None:
            return ()
        camera = None
        if self._camera is not None and self._T_cam_base is not None:
            camera = (self._camera, self._T_cam_base)
        return scene_objects(snap.tracks, snap.stamp_ns, snap.frame_id, ego, self.rgb_image(),
                             camera, self.config)


def scene_objects(tracks: Sequence[Track], tracks_stamp_ns: int, frame_id: str,
                  ego: EgoState, image: U8 | None,
                  camera: tuple[CameraModel, SE3] | None,
                  config: PerceptionLoopConfig | None = None) -> tuple[SceneObject, ...]:
    """World-frame tracks as the planner's scene: planner-status tracks in ``base_link`` at
    ``ego.stamp_ns``, with colours from the camera image.

    Tracks are predicted from ``tracks_stamp_ns`` to the ego's stamp with their velocity
    (constant velocity; zero when unknown). Velocities stay ground-relative, expressed in
    ``base_link`` axes. Used by :meth:`PerceptionLoop.scene_objects` (closed loop) and the
    ROS ``planner`` node (live), so both give a planner the same scene.

    Args:
        tracks: live tracks, boxes in ``frame_id`` (world / odometry frame, m, rad).
        tracks_stamp_ns: the stamp the track states are valid at, ns.
        frame_id: the world frame of the tracks; must be ``ego.frame_id``.
        ego: the ego state at the planning instant (``T_world_base``).
        image: ``(H, W, 3)`` uint8 RGB camera image, or None (colours NaN).
        camera: ``(intrinsics, T_cam_base)`` of the camera that took ``image`` (None:
            colours NaN).
        config: which statuses become scene objects and the colour patch (default
            :class:`PerceptionLoopConfig`).

    Raises:
        ValueError: the tracks are in another frame than the ego state.
    """
    cfg = config if config is not None else PerceptionLoopConfig()
    if frame_id != ego.frame_id:
        raise ValueError(f"tracks are in {frame_id!r}, the ego state in {ego.frame_id!r}")
    x0, y0, yaw0 = ego_pose2(ego)
    c, s = math.cos(yaw0), math.sin(yaw0)
    dt = (ego.stamp_ns - tracks_stamp_ns) / 1e9
    out: list[SceneObject] = []
    for track in tracks:
        if track.status not in cfg.planner_statuses:
            continue
        obj = track.object
        vel = np.zeros(3) if obj.velocity is None else np.asarray(obj.velocity, np.float64)
        wx, wy = obj.box.center[0] + vel[0] * dt, obj.box.center[1] + vel[1] * dt
        dx, dy = wx - x0, wy - y0
        xy = np.array([c * dx + s * dy, -s * dx + c * dy])
        v_base = np.array([c * vel[0] + s * vel[1], -s * vel[0] + c * vel[1]])
        yaw = math.remainder(obj.box.yaw - yaw0, 2 * math.pi)
        rgb = np.full(3, np.nan)
        if image is not None and camera is not None:
            centre = np.array([xy[0], xy[1], obj.box.center[2] - ego.pose.translation[2]])
            rgb = box_colour(image, camera[0], camera[1], centre, obj.box.size, yaw,
                             cfg.colour_patch, cfg.min_patch_px)
        out.append(SceneObject(track.track_id, obj.label.value, xy, yaw, obj.box.size,
                               v_base, float(obj.existence_prob), rgb))
    return tuple(out)


def sorted_messages(outputs: Sequence[SensorOutput]
                    ) -> list[tuple[str, CameraFrame | PointCloud | RadarScan | EgoState]]:
    """Simulator outputs as (sensor, value) in receive order (publish time, then stamp), as
    a bag replay feeds them."""
    ordered = sorted(outputs, key=lambda o: (o.publish_ns, o.stamp_ns, o.sensor))
    return [(o.sensor, o.value) for o in ordered]


__all__ = ["PerceptionLoop", "PerceptionLoopConfig", "PerceptionSnapshot", "box_colour",
           "scene_objects", "sorted_messages"]
