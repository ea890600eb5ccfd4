"""A small analytic multi-sensor scene written to a bag, for the demo and the tests.

This is not the simulator (that is :mod:`mm_perception.sim`, built on MuJoCo): it is a
closed-form scene (flat ground, moving upright boxes, an ego on a constant-curvature path)
that exercises every piece of the bag/sync/alignment path with exact, known geometry:

- LiDAR: a spinning multi-beam sensor ray-cast against the ground and the boxes; each column
  is fired at its own time across the sweep, from the ego pose at that time, so a moving ego
  gives real motion distortion; per-point time is written in the field the rig names.
- Radar: returns on the boxes facing the sensor and ground clutter, with Doppler = radial
  velocity of the target relative to the sensor (positive away) and an RCS/amplitude field.
- Camera: sky/ground and the boxes filled in their class colours, rendered through the rig's
  camera model (with its distortion), plus a matching ``CameraInfo``.
- Odometry at 50 Hz and ``/tf_static`` with the rig's extrinsics.

Everything is decided by the seed. Field names and layouts come from the rig, so the same
generator produces the ``x,y,z,vrad,amplitude`` radar / ``x,y,z,intensity,t`` LiDAR layouts
of real drivers, with padding or float64 coordinates on request.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.bag.cloud_layout import LAYOUTS as LIDAR_LAYOUTS
from mm_perception.bag.cloud_layout import rig_cloud_array
from mm_perception.bag.writer import BagWriter, Ros2Storage, Storage, convert_to_ros1
from mm_perception.core.calibration import Rig, SensorSpec
from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import Box3D, EgoState, SensorKind
from mm_perception.ros import conversions as conv

#: colours (RGB) per object class, used by the camera rendering
CLASS_COLOURS = {"car": (200, 30, 30), "truck": (30, 60, 200), "pedestrian": (240, 200, 20),
                 "cyclist": (30, 180, 60)}
#: typical sizes (length, width, height) in metres
CLASS_SIZES = {"car": (4.5, 1.9, 1.6), "truck": (8.0, 2.5, 3.2), "pedestrian": (0.6, 0.6, 1.75),
               "cyclist": (1.8, 0.6, 1.7)}
#: default camera used when the rig takes intrinsics from CameraInfo (the bag must carry one)
DEFAULT_CAMERA = CameraModel(width=640, height=480, fx=500.0, fy=500.0, cx=320.0, cy=240.0,
                             distortion_model="plumb_bob", D=(-0.05, 0.01, 0.0005, -0.0003, 0.0))


@dataclass(frozen=True)
class SyntheticConfig:
    """Scene and sensor timing of the synthetic bag.

    Attributes:
        duration_s: length of the recording, seconds.
        seed: decides the object layout and all noise.
        start_stamp_ns: stamp of the first message, ns (a realistic epoch by default).
        ego_speed_mps: ego forward speed, m/s.
        ego_yaw_rate: ego yaw rate, rad/s (constant-curvature path).
        lidar_hz / radar_hz / camera_hz / odom_hz: sensor rates, Hz.
        lidar_channels / lidar_columns: beams and columns per sweep.
        lidar_max_range_m: maximum LiDAR range, metres.
        lidar_layout: ``packed`` (float32 fields back to back), ``padded`` (a driver-like layout
            with gaps and a 32-byte point step) or ``float64`` (float64 coordinates).
        compressed_camera: write ``CompressedImage`` (jpeg) instead of raw ``Image``.
        num_objects: boxes in the scene.
        moving_objects: False parks every object (zero velocity), e.g. to check deskew
            against static geometry.
    """

    duration_s: float = 3.0
    seed: int = 0
    start_stamp_ns: int = 1_700_000_000_000_000_000
    ego_speed_mps: float = 6.0
    ego_yaw_rate: float = 0.03
    lidar_hz: float = 10.0
    radar_hz: float = 13.0
    camera_hz: float = 15.0
    odom_hz: float = 50.0
    lidar_channels: int = 16
    lidar_columns: int = 720
    lidar_max_range_m: float = 80.0
    lidar_layout: str = "padded"
    compressed_camera: bool = False
    num_objects: int = 6
    moving_objects: bool = True

    def __post_init__(self) -> None:
        checks = {"duration_s": self.duration_s, "lidar_hz": self.lidar_hz,
                  "radar_hz": self.radar_hz, "camera_hz": self.camera_hz,
                  "odom_hz": self.odom_hz, "lidar_max_range_m": self.lidar_max_range_m}
        for key, val in checks.items():
            if not np.isfinite(val) or val <= 0:
                raise ConfigError(f"SyntheticConfig.{key} must be > 0, got {val}")
        for key, ival in {"lidar_channels": self.lidar_channels,
                          "lidar_columns": self.lidar_columns}.items():
            if ival < 1:
                raise ConfigError(f"SyntheticConfig.{key} must be >= 1, got {ival}")
        if self.num_objects < 0:
            raise ConfigError(f"SyntheticConfig.num_objects must be >= 0, got {self.num_objects}")
        if self.lidar_layout not in LIDAR_LAYOUTS:
            raise ConfigError(f"SyntheticConfig.lidar_layout must be one of {LIDAR_LAYOUTS}, "
                              f"got {self.lidar_layout!r}")
        if self.start_stamp_ns < 0:
            raise ConfigError(f"SyntheticConfig.start_stamp_ns must be >= 0, "
                              f"got {self.start_stamp_ns}")


@dataclass(frozen=True)
class SceneObject:
    """A box moving at constant velocity in the world frame (metres, rad, m/s)."""

    label: str
    center0: npt.NDArray[np.float64]  # (3,) world position at t=0 (box centre)
    size: npt.NDArray[np.float64]     # (3,) length, width, height
    yaw: float
    velocity: npt.NDArray[np.float64]  # (3,) world m/s

    def center_at(self, t_s: Any) -> npt.NDArray[np.float64]:
        """``(3,)`` or ``(N, 3)`` world centre at time(s) ``t_s`` seconds after the start."""
        t = np.asarray(t_s, dtype=np.float64)
        return self.center0 + t[..., None] * self.velocity


class SyntheticScene:
    """The analytic world: ego trajectory, objects, and per-sensor measurement functions."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        self.objects = self._make_objects(np.random.default_rng(config.seed))

    def _rng(self, spec: SensorSpec, t_s: float) -> np.random.Generator:
        """Noise generator of one measurement: a function of (seed, sensor, time) only, so a
        measurement is the same whatever else was generated before it."""
        return np.random.default_rng([self.config.seed, zlib.crc32(spec.name.encode()),
                                      round(t_s * 1e6)])

    def _make_objects(self, rng: np.random.Generator) -> list[SceneObject]:
        """Objects on a three-lane road (right-hand traffic): the ego lane (y = 0) and the
        lane to its right carry traffic in the ego's direction, the left lane (y = 3.5 m)
        oncoming traffic; pedestrians cross. Vehicles in the ego lane are at least as fast as
        the ego, and no two objects overlap at the start (rejection sampling, 2 m apart)."""
        labels = list(CLASS_SIZES)
        objs: list[SceneObject] = []
        ego_speed = self.config.ego_speed_mps
        for i in range(self.config.num_objects):
            label = labels[i % len(labels)]
            for _attempt in range(100):
                size = np.array(CLASS_SIZES[label]) * rng.uniform(0.9, 1.1, 3)
                x0 = rng.uniform(10.0, 50.0)
                if label == "pedestrian":  # crossing the road
                    center = np.array([x0, rng.uniform(-6, 6), size[2] / 2])
                    vel = np.array([0.0, rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.6), 0.0])
                    yaw = float(np.sign(vel[1]) * np.pi / 2)
                else:
                    lane = float(rng.choice([-3.5, 0.0, 3.5]))
                    center = np.array([x0, lane, size[2] / 2])
                    if lane > 0:  # oncoming
                        speed = -rng.uniform(4.0, 12.0)
                    elif lane == 0:  # ahead of the ego: never closing in on it
                        speed = ego_speed + rng.uniform(0.0, 3.0)
                    else:
                        speed = rng.uniform(2.0, 10.0)
                    vel = np.array([speed, 0.0, 0.0])
                    yaw = 0.0 if speed >= 0 else np.pi
                radius = float(np.hypot(size[0], size[1]) / 2)
                if all(np.hypot(*(center[:2] - o.center0[:2]))
                       > radius + np.hypot(o.size[0], o.size[1]) / 2 + 2.0 for o in objs):
                    break
            else:
                raise ConfigError(f"cannot place {self.config.num_objects} objects without "
                                  f"overlap; use fewer (SyntheticConfig.num_objects)")
            if not self.config.moving_objects:
                vel = np.zeros(3)
            objs.append(SceneObject(label, center, size, yaw, vel))
        return objs

    # ---------------------------------------------------------------- ego
    def ego_pose(self, t_s: Any) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """World pose of ``base_link`` at time(s) ``t_s`` (s since start).

        Returns:
            rotations ``(N, 3, 3)`` and translations ``(N, 3)`` float64 (``T_world_base``).
        """
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        v, w = self.config.ego_speed_mps, self.config.ego_yaw_rate
        yaw = w * t
        if abs(w) < 1e-9:
            x, y = v * t, np.zeros_like(t)
        else:
            x, y = v / w * np.sin(yaw), v / w * (1 - np.cos(yaw))
        c, s = np.cos(yaw), np.sin(yaw)
        rot = np.zeros((t.size, 3, 3))
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1
        return rot, np.stack([x, y, np.zeros_like(t)], axis=1)

    def ego_state(self, t_s: float, stamp_ns: int) -> EgoState:
        rot, trans = self.ego_pose(t_s)
        return EgoState(stamp_ns=stamp_ns, frame_id="odom", child_frame_id="base_link",
                        pose=SE3(rot[0], trans[0]),
                        linear_velocity=np.array([self.config.ego_speed_mps, 0.0, 0.0]),
                        angular_velocity=np.array([0.0, 0.0, self.config.ego_yaw_rate]))

    # ---------------------------------------------------------------- ray casting
    def raycast(self, origins: npt.NDArray[np.float64], dirs: npt.NDArray[np.float64],
                t_s: npt.NDArray[np.float64], max_range: float,
                ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Distance along unit rays to the first hit (ground z=0 or a box), world frame.

        Args:
            origins, dirs: ``(N, 3)`` world ray origins and unit directions.
            t_s: ``(N,)`` time of each ray (s since start), to place the moving boxes.
            max_range: rays longer than this miss.

        Returns:
            ``(N,)`` float64 range (inf where nothing is hit) and ``(N,)`` int64 hit id
            (-1 miss, 0 ground, k+1 object k).
        """
        n = origins.shape[0]
        best = np.full(n, np.inf)
        hit = np.full(n, -1, dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_ground = np.where(dirs[:, 2] < -1e-9, -origins[:, 2] / dirs[:, 2], np.inf)
        better = t_ground < best
        best[better], hit[better] = t_ground[better], 0
        for k, obj in enumerate(self.objects):
            centers = obj.center_at(t_s)
            c, s = np.cos(obj.yaw), np.sin(obj.yaw)
            rel = origins - centers
            # rays into the box frame (rotation by -yaw about z)
            o = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1],
                          rel[:, 2]], axis=1)
            d = np.stack([c * dirs[:, 0] + s * dirs[:, 1], -s * dirs[:, 0] + c * dirs[:, 1],
                          dirs[:, 2]], axis=1)
            half = obj.size / 2
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = 1.0 / d
                t1, t2 = (-half - o) * inv, (half - o) * inv
            tmin = np.nanmax(np.minimum(t1, t2), axis=1)
            tmax = np.nanmin(np.maximum(t1, t2), axis=1)
            ok = (tmax >= np.maximum(tmin, 0.0)) & (tmin > 0.05)
            cand = np.where(ok, tmin, np.inf)
            better = cand < best
            best[better], hit[better] = cand[better], k + 1
        best[best > max_range] = np.inf
        hit[~np.isfinite(best)] = -1
        return best, hit

    def lidar_sweep(self, spec: SensorSpec, t0_s: float,
                    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                               npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """One sweep starting at ``t0_s``.

        Returns:
            ``xyz (N, 3)`` in the sensor frame at each point's own time, ``intensity (N,)``,
            ``dt (N,)`` seconds since ``t0_s``, ``ring (N,)``.
        """
        cfg = self.config
        assert spec.extrinsics is not None
        n_ch, n_col = cfg.lidar_channels, cfg.lidar_columns
        elev = np.deg2rad(np.linspace(-15.0, 10.0, n_ch))
        az = np.linspace(np.pi, -np.pi, n_col, endpoint=False)  # clockwise spin from the back
        period = 1.0 / cfg.lidar_hz
        col_dt = np.arange(n_col) * period / n_col
        az_g, el_g = np.meshgrid(az, elev, indexing="xy")  # (n_ch, n_col)
        dirs_s = np.stack([np.cos(el_g) * np.cos(az_g), np.cos(el_g) * np.sin(az_g),
                           np.sin(el_g)], axis=-1).reshape(-1, 3)
        dt = np.broadcast_to(col_dt, (n_ch, n_col)).reshape(-1)
        ring = np.broadcast_to(np.arange(n_ch)[:, None], (n_ch, n_col)).reshape(-1)
        rot_wb, trans_wb = self.ego_pose(t0_s + dt)
        ext = spec.extrinsics
        rot_ws = rot_wb @ ext.rotation
        origins = np.einsum("nij,j->ni", rot_wb, ext.translation) + trans_wb
        dirs_w = np.einsum("nij,nj->ni", rot_ws, dirs_s)
        rng_m, hit = self.raycast(origins, dirs_w, t0_s + dt, cfg.lidar_max_range_m)
        noise = self._rng(spec, t0_s)
        keep = np.isfinite(rng_m) & (noise.random(rng_m.size) > 0.02)  # 2 % dropout
        rng_noisy = rng_m[keep] + noise.normal(0.0, 0.01, keep.sum())
        xyz = dirs_s[keep] * rng_noisy[:, None]
        intensity = np.where(hit[keep] == 0, 0.15, 0.7) * np.exp(-rng_noisy / 150.0)
        return xyz, intensity, dt[keep], ring[keep].astype(np.int64)

    def radar_scan(self, spec: SensorSpec, t_s: float,
                   ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                              npt.NDArray[np.float64]]:
        """Radar detections at ``t_s``: ``xyz (N, 3)`` sensor frame, ``doppler (N,)`` m/s
        (radial, positive away), ``rcs (N,)`` dBsm."""
        assert spec.extrinsics is not None
        rot_wb, trans_wb = self.ego_pose(t_s)
        T_wb = SE3(rot_wb[0], trans_wb[0])
        T_ws = T_wb @ spec.extrinsics
        T_sw = T_ws.inverse()
        v_ego_w = rot_wb[0] @ np.array([self.config.ego_speed_mps, 0.0, 0.0])
        omega = np.array([0.0, 0.0, self.config.ego_yaw_rate])
        # sensor velocity in the world: v + omega x r (r = sensor offset, world-rotated)
        v_sensor_w = v_ego_w + np.cross(omega, rot_wb[0] @ spec.extrinsics.translation)
        noise = self._rng(spec, t_s)
        pts_w, vel_w, rcs = [], [], []
        for obj in self.objects:
            center = obj.center_at(t_s)
            n = int(noise.integers(3, 9))
            local = (noise.uniform(-0.5, 0.5, (n, 3)) * obj.size)
            c, s = np.cos(obj.yaw), np.sin(obj.yaw)
            world = np.stack([c * local[:, 0] - s * local[:, 1],
                              s * local[:, 0] + c * local[:, 1], local[:, 2]], 1) + center
            pts_w.append(world)
            vel_w.append(np.broadcast_to(obj.velocity, (n, 3)))
            base_rcs = {"car": 10.0, "truck": 20.0, "pedestrian": -5.0, "cyclist": 0.0}
            rcs.append(base_rcs[obj.label] + noise.normal(0, 2.0, n))
        n_clutter = int(noise.integers(2, 6))
        clutter_s = np.stack([noise.uniform(5, 60, n_clutter),
                              noise.uniform(-20, 20, n_clutter), np.zeros(n_clutter)], 1)
        clutter_w = T_ws.apply(clutter_s)
        clutter_w[:, 2] = 0.0
        pts_w.append(clutter_w)
        vel_w.append(np.zeros((n_clutter, 3)))
        rcs.append(noise.normal(-10.0, 3.0, n_clutter))
        pw, vw, rc = np.concatenate(pts_w), np.concatenate(vel_w), np.concatenate(rcs)
        ps = T_sw.apply(pw)
        rng_m = np.linalg.norm(ps, axis=1)
        az = np.arctan2(ps[:, 1], ps[:, 0])
        keep = (ps[:, 0] > 0.5) & (np.abs(az) < np.deg2rad(60)) & (rng_m < 120.0)
        u_w = (pw - T_ws.translation) / np.maximum(np.linalg.norm(pw - T_ws.translation,
                                                                   axis=1, keepdims=True), 1e-9)
        doppler = np.einsum("ij,ij->i", vw - v_sensor_w, u_w)
        doppler = doppler + noise.normal(0.0, 0.05, doppler.size)
        return ps[keep], doppler[keep], rc[keep]

    def render(self, spec: SensorSpec, camera: CameraModel, t_s: float,
               ) -> npt.NDArray[np.uint8]:
        """``(H, W, 3)`` uint8 RGB image at ``t_s`` through ``camera`` (with distortion)."""
        import cv2  # only the camera rendering needs OpenCV

        assert spec.extrinsics is not None
        h, w = camera.height, camera.width
        rot_wb, trans_wb = self.ego_pose(t_s)
        T_wc = SE3(rot_wb[0], trans_wb[0]) @ spec.extrinsics
        img = self._background(spec, camera).astype(np.float64)
        T_cw = T_wc.inverse()
        order = sorted(self.objects,
                       key=lambda o: -float(np.linalg.norm(o.center_at(t_s) - T_wc.translation)))
        for obj in order:  # painter's algorithm: far to near
            center = obj.center_at(t_s)
            corners = Box3D(center, obj.size, obj.yaw).corners()
            cam_pts = T_cw.apply(corners)
            if np.any(cam_pts[:, 2] < 0.5):
                continue  # behind or too close: skip rather than draw a wrapped polygon
            uv, valid = camera.project(cam_pts)
            if not np.all(valid):
                continue
            hull = cv2.convexHull(np.round(uv).astype(np.int32))
            colour = CLASS_COLOURS[obj.label]
            shade = tuple(int(c * 0.8) for c in colour)
            cv2.fillConvexPoly(img, hull, shade)
            top = np.round(uv[4:]).astype(np.int32)  # lighter roof to give some structure
            cv2.fillConvexPoly(img, cv2.convexHull(top), colour)
        noise = self._rng(spec, t_s).normal(0.0, 3.0, img.shape)
        out: npt.NDArray[np.uint8] = np.clip(img + noise, 0, 255).astype(np.uint8)
        assert out.shape == (h, w, 3)
        return out

    def _background(self, spec: SensorSpec, camera: CameraModel) -> npt.NDArray[np.uint8]:
        cache = getattr(self, "_bg_cache", None)
        if cache is not None and cache[0] == spec.name:
            cached: npt.NDArray[np.uint8] = cache[1]
            return cached
        assert spec.extrinsics is not None
        v, u = np.mgrid[0:camera.height, 0:camera.width]
        rays_c = camera.unproject(np.stack([u.ravel(), v.ravel()], 1).astype(np.float64))
        dirs_b = spec.extrinsics.rotate(rays_c)
        origin_z = spec.extrinsics.translation[2]
        ground = dirs_b[:, 2] < -1e-6
        dist = np.where(ground, origin_z / np.maximum(-dirs_b[:, 2], 1e-9), np.inf)
        ground &= dist < 300.0
        img = np.empty((camera.height * camera.width, 3), dtype=np.float64)
        img[:] = (135, 180, 235)  # sky
        fade = np.clip(dist[ground] / 80.0, 0, 1)[:, None]
        img[ground] = (1 - fade) * np.array([90, 90, 95]) + fade * np.array([150, 150, 150])
        out = img.reshape(camera.height, camera.width, 3).astype(np.uint8)
        self._bg_cache = (spec.name, out)
        return out


def _ticks(rate_hz: float, duration_s: float, phase_s: float) -> Iterator[float]:
    n = int(np.floor((duration_s - phase_s) * rate_hz)) + 1
    for i in range(max(n, 0)):
        t = phase_s + i / rate_hz
        if t <= duration_s:
            yield t


def write_synthetic_bag(path: str | Path, rig: Rig, config: SyntheticConfig | None = None,
                        storage: Storage = "mcap") -> dict[str, int]:
    """Simulate the scene and write every rig sensor's topic to a new bag.

    Args:
        path: bag to create (rosbag2 directory, or ``*.bag`` for ``storage="ros1"``).
        rig: the sensor rig (topics, frames, extrinsics, field names). Extrinsics must be in
            the rig (the bag's ``/tf_static`` is written from them).
        config: scene/timing; defaults to :class:`SyntheticConfig`.
        storage: ``mcap``, ``sqlite3`` or ``ros1``.

    Returns:
        Messages written per topic.
    """
    cfg = config or SyntheticConfig()
    scene = SyntheticScene(cfg)
    unresolved = rig.unresolved_extrinsics()
    if unresolved:
        raise ConfigError(f"synthetic bags need the extrinsics in the rig; {unresolved} are "
                          f"'from_tf'")
    factory = conv.RosbagsFactory()
    ns = 1_000_000_000
    start = cfg.start_stamp_ns

    def stamp(t_s: float) -> int:
        return start + round(t_s * ns)

    events: list[tuple[int, int, str, Any]] = []  # (log_time, order, topic, msg)
    order = 0

    def emit(log_ns: int, topic: str, msg: Any) -> None:
        nonlocal order
        events.append((log_ns, order, topic, msg))
        order += 1

    tf_static = [(rig.base_frame, s.frame_id, start, s.extrinsics)
                 for s in rig.sensors.values()
                 if s.kind is not SensorKind.ODOMETRY and s.extrinsics is not None]
    emit(start, "/tf_static", conv.tf_message(tf_static, factory))

    for spec in rig.sensors.values():
        if spec.kind is SensorKind.ODOMETRY:
            for t in _ticks(cfg.odom_hz, cfg.duration_s, 0.0):
                state = scene.ego_state(t, stamp(t))
                emit(stamp(t) + 1_000_000, spec.topic, conv.odometry_from_ego_state(state, factory))
        elif spec.kind is SensorKind.LIDAR:
            period = 1.0 / cfg.lidar_hz
            for t in _ticks(cfg.lidar_hz, cfg.duration_s - period, 0.0):
                xyz, inten, dt, ring = scene.lidar_sweep(spec, t)
                arr = rig_cloud_array(
                    spec, {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "intensity": inten,
                           "ring": ring}, np.round(dt * 1e9).astype(np.int64), stamp(t),
                    cfg.lidar_layout)
                msg = conv.array_to_pointcloud2(arr, stamp(t), spec.frame_id, factory)
                emit(stamp(t + period) + 5_000_000, spec.topic, msg)  # sent after the sweep
        elif spec.kind is SensorKind.RADAR:
            for t in _ticks(cfg.radar_hz, cfg.duration_s, 0.013):
                xyz, dop, rcs = scene.radar_scan(spec, t)
                arr = rig_cloud_array(spec, {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                                             "doppler": dop, "rcs": rcs})
                msg = conv.array_to_pointcloud2(arr, stamp(t), spec.frame_id, factory)
                emit(stamp(t) + 8_000_000, spec.topic, msg)
        elif spec.kind is SensorKind.CAMERA:
            camera = spec.intrinsics or DEFAULT_CAMERA
            for t in _ticks(cfg.camera_hz, cfg.duration_s, 0.004):
                img = scene.render(spec, camera, t)
                if cfg.compressed_camera:
                    msg = conv.array_to_compressed(img, "rgb8", stamp(t), spec.frame_id,
                                                   factory, fmt="jpeg")
                else:
                    msg = conv.array_to_image(img, "rgb8", stamp(t), spec.frame_id, factory)
                emit(stamp(t) + 12_000_000, spec.topic, msg)
                if spec.camera_info_topic:
                    info = conv.camera_info_from_model(camera, stamp(t), spec.frame_id, factory)
                    emit(stamp(t) + 12_000_000, spec.camera_info_topic, info)

    events.sort(key=lambda e: (e[0], e[1]))
    if storage == "ros1":
        with tempfile.TemporaryDirectory() as tmp:
            counts = _write_events(Path(tmp) / "bag", "mcap", events)
            convert_to_ros1(Path(tmp) / "bag", path)
        return counts
    return _write_events(Path(path), storage, events)


def _write_events(path: Path, storage: Ros2Storage,
                  events: list[tuple[int, int, str, Any]]) -> dict[str, int]:
    with BagWriter(path, storage=storage) as writer:
        for log_ns, _, topic, msg in events:
            writer.write(topic, log_ns, msg)
        return dict(writer.counts)


__all__ = ["DEFAULT_CAMERA", "SyntheticConfig", "SyntheticScene", "write_synthetic_bag"]
