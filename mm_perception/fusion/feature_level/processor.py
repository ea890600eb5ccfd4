"""Pre- and post-processing of the BEV fusion model (numpy; shared by every backend).

Three steps, each its own function so that training, inference and export use the same code:

1. :func:`frame_inputs`: a synchronised :class:`SensorSet` -> :class:`RawFrame`, the
   sensor data in one frame and time: LiDAR points and radar returns in ``base_link`` at the
   set stamp (radar moved from its scan time by the ego motion, its Doppler made a radial
   velocity over ground, with the position of the radar that measured each return), camera
   images with the transform from ``base_link`` at the set stamp to the camera at its
   exposure. Problems (no odometry for the radar compensation, a
   camera without colour or calibration) leave the sensor out with a note, never a guess.
2. :meth:`BevProcessor.encode`: :class:`RawFrame` -> the model's named inputs
   (:data:`INPUT_NAMES`). Every modality is a variable-size set: ``P`` LiDAR points,
   ``Q`` radar returns, ``K`` cameras; an absent modality is an empty set (0 rows, 0
   cameras) *and* a 0 in ``present``, so the model is told what is missing instead of being
   fed zero images. Point features are normalised with the processor's state (saved with the
   weights).
3. :meth:`BevProcessor.decode`: the model's output maps -> :class:`DetectedObject` list in
   ``base_link`` at the set stamp (peaks of the class heatmaps, top-k, BEV distance NMS).

Model inputs (``P``, ``Q``, ``K`` dynamic; ``nx``, ``ny``, ``Z`` from the config):

- ``lidar_pillars`` ``(P, S, 9)`` float32: the points of each of the ``P`` occupied BEV
  cells ("pillars"; at most ``S = lidar_points_per_pillar``, the first ones in cloud order,
  zero rows after the last): x, y, z scaled to ~[-1, 1], intensity / scale, offset from the
  cell centre and from the pillar's point mean (x, y in cells, z in m);
- ``lidar_mask`` ``(P, S, 1)`` float32: 1 for a real point, 0 for padding;
- ``lidar_cells`` ``(P,)`` int64 flat BEV cell index ``i * ny + j`` of each pillar (unique);
- ``radar_pillars`` / ``radar_mask`` / ``radar_cells``: the same for radar returns
  (``S = radar_points_per_pillar``), features x, y, z scaled, radial velocity over ground /
  scale, standardised RCS, offset from the cell centre (cells), unit direction (x, y);

This is PointPillars' dense layout: the network max-pools each pillar over its ``S`` rows
and writes one feature vector per (unique) cell, a scatter without reduction that ONNX
Runtime and TensorRT both run.
- ``images`` ``(K, 3, H_in, W_in)`` float32 normalised like the camera detector's input;
- ``cam_grid`` ``(K, Z * nx, ny, 2)`` float32: where each BEV cell at each lift height lies
  in the image, in ``grid_sample`` coordinates (-1..1 across the image, pixel edges;
  ``-2`` where the point is behind the camera or outside the lens model);
- ``cam_depth`` ``(K, 1, Z * nx, ny)`` float32: its depth along the optical axis, m;
- ``present`` ``(3,)`` float32: 1 where camera, LiDAR, radar (:data:`MODALITIES` order) is
  present in this frame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.ndimage import maximum_filter

from mm_perception.core.calibration import Rig
from mm_perception.core.camera import CameraModel
from mm_perception.core.ego_motion import OdometryBuffer, compensate_doppler
from mm_perception.core.errors import ConfigError, EgoMotionError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import Box3D, DetectedObject, EgoState, SensorSet
from mm_perception.fusion.feature_level.config import (
    CLASSES,
    LIDAR_POINT_FEATURES,
    MODALITIES,
    RADAR_POINT_FEATURES,
    BevModelConfig,
)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: names of the model inputs, in the order of the network's ``forward`` arguments
INPUT_NAMES: tuple[str, ...] = ("lidar_pillars", "lidar_mask", "lidar_cells", "radar_pillars",
                                "radar_mask", "radar_cells", "images", "cam_grid", "cam_depth",
                                "present")
#: names of the model outputs (see :mod:`~mm_perception.fusion.feature_level.model`)
OUTPUT_NAMES: tuple[str, ...] = ("heatmap", "offset", "z", "size", "rot", "velocity")
#: grid coordinate of an invalid camera lookup (outside [-1, 1]: grid_sample gives zeros)
OUTSIDE = -2.0


@dataclass(frozen=True, eq=False)
class RawFrame:
    """One set's sensor data in ``base_link`` at the set stamp (see the module docstring).

    Attributes:
        lidar: ``(N, 4)`` float32 x, y, z (m), intensity of every LiDAR of the set.
        radar: ``(M, 5)`` float32 x, y, z (m), radial velocity over ground (m/s, positive
            away from the radar), RCS (dBsm).
        images: ``(H, W, 3)`` uint8 RGB per camera (any size: resized by the processor).
        cameras: the camera model of each image, at the size it was calibrated for.
        T_cam_base: ``(4, 4)`` float64 per camera: ``base_link`` at the set stamp -> camera
            optical frame at its exposure.
        has_lidar / has_radar: the modality is in the set (it may still have 0 points).
        notes: why a sensor of the set was left out.
        radar_origins: ``(M, 3)`` float32, per radar return the position (m) of the radar
            that measured it, in ``base_link`` at the set stamp (the origin of the return's
            line of sight, along which its radial velocity is measured); None when not
            known (frames of a training dataset), read as the ``base_link`` origin.
    """

    lidar: F32
    radar: F32
    images: tuple[npt.NDArray[np.uint8], ...] = ()
    cameras: tuple[CameraModel, ...] = ()
    T_cam_base: tuple[F64, ...] = ()
    has_lidar: bool = True
    has_radar: bool = True
    notes: tuple[str, ...] = ()
    radar_origins: F32 | None = None

    def __post_init__(self) -> None:
        for name, cols in (("lidar", 4), ("radar", 5)):
            arr = np.asarray(getattr(self, name), np.float32)
            if arr.ndim != 2 or arr.shape[1] != cols:
                raise ValueError(f"RawFrame.{name} must be (N, {cols}), got {arr.shape}")
            object.__setattr__(self, name, arr)
        if self.radar_origins is not None:
            org = np.asarray(self.radar_origins, np.float32)
            if org.shape != (len(self.radar), 3):
                raise ValueError(f"RawFrame.radar_origins must be ({len(self.radar)}, 3) "
                                 f"like radar, got {org.shape}")
            object.__setattr__(self, "radar_origins", org)
        if not len(self.images) == len(self.cameras) == len(self.T_cam_base):
            raise ValueError("RawFrame: images, cameras and T_cam_base differ in length")

    @property
    def present(self) -> dict[str, bool]:
        """Modality -> present (a camera counts when at least one image is there)."""
        return {"camera": bool(self.images), "lidar": self.has_lidar, "radar": self.has_radar}

    def without(self, *modalities: str) -> RawFrame:
        """The same frame with ``modalities`` removed (absent, not zero-filled)."""
        bad = [m for m in modalities if m not in MODALITIES]
        if bad:
            raise ValueError(f"unknown modalities {bad}; known {list(MODALITIES)}")
        cam = "camera" in modalities
        return RawFrame(
            lidar=self.lidar[:0] if "lidar" in modalities else self.lidar,
            radar=self.radar[:0] if "radar" in modalities else self.radar,
            images=() if cam else self.images, cameras=() if cam else self.cameras,
            T_cam_base=() if cam else self.T_cam_base,
            has_lidar=self.has_lidar and "lidar" not in modalities,
            has_radar=self.has_radar and "radar" not in modalities, notes=self.notes,
            radar_origins=(self.radar_origins[:0] if "radar" in modalities
                           and self.radar_origins is not None else self.radar_origins))


def _base_motion(odometry: OdometryBuffer | None, src_ns: int, dst_ns: int,
                 notes: list[str], what: str) -> SE3:
    """``base_link`` at ``src_ns`` -> ``base_link`` at ``dst_ns`` from odometry; identity
    (with a note) when odometry does not cover both stamps."""
    if src_ns == dst_ns:
        return SE3.identity()
    if odometry is None or not len(odometry):
        notes.append(f"{what}: no odometry; {abs(dst_ns - src_ns) / 1e6:.0f} ms of ego motion "
                     f"not compensated")
        return SE3.identity()
    try:
        return odometry.pose_at(dst_ns).inverse() @ odometry.pose_at(src_ns)
    except EgoMotionError as exc:
        notes.append(f"{what}: ego motion not compensated ({exc})")
        return SE3.identity()


def _ego_state(odometry: OdometryBuffer | None, stamp_ns: int,
               fallback: EgoState | None) -> EgoState | None:
    if odometry is not None and len(odometry):
        try:
            return odometry.state_at(stamp_ns)
        except EgoMotionError:
            pass
    return fallback


def frame_inputs(sensor_set: SensorSet, rig: Rig,
                 odometry: OdometryBuffer | None = None) -> RawFrame:
    """A synchronised set -> :class:`RawFrame` (see the module docstring).

    Args:
        sensor_set: the set (LiDAR clouds already de-skewed to its stamp, as the assembler
            makes them).
        rig: the rig (extrinsics, camera intrinsics when frames carry none).
        odometry: ego poses and velocities on the set's clock (radar Doppler compensation,
            motion between sensor stamps and the set stamp).
    """
    stamp = sensor_set.stamp_ns
    notes: list[str] = []
    lidar_parts: list[F32] = []
    for name, cloud in sensor_set.lidars.items():
        spec = rig.sensors.get(name)
        if spec is None or spec.extrinsics is None:
            notes.append(f"lidar {name!r}: no extrinsics; left out")
            continue
        xyz = spec.extrinsics.apply(cloud.xyz())
        inten = (cloud.field("intensity") if "intensity" in cloud.fields
                 else np.zeros(len(xyz), np.float32))
        pts = np.concatenate([xyz, inten[:, None]], axis=1).astype(np.float32)
        lidar_parts.append(pts[np.all(np.isfinite(pts), axis=1)])
    radar_parts: list[F32] = []
    origin_parts: list[F32] = []
    for name, scan in sensor_set.radars.items():
        spec = rig.sensors.get(name)
        if spec is None or spec.extrinsics is None:
            notes.append(f"radar {name!r}: no extrinsics; left out")
            continue
        ego = _ego_state(odometry, scan.stamp_ns, sensor_set.ego)
        if ego is None:
            notes.append(f"radar {name!r}: no ego state for Doppler compensation; left out")
            continue
        vr = compensate_doppler(scan, spec.extrinsics, ego)
        T = _base_motion(odometry, scan.stamp_ns, stamp, notes, f"radar {name!r}")
        T_base_radar = T @ spec.extrinsics
        xyz = T_base_radar.apply(scan.xyz)
        pts = np.concatenate([xyz, vr[:, None], scan.rcs[:, None]], axis=1).astype(np.float32)
        finite = np.all(np.isfinite(pts), axis=1)
        radar_parts.append(pts[finite])
        origin_parts.append(np.tile(T_base_radar.translation.astype(np.float32),
                                    (int(finite.sum()), 1)))
    images: list[npt.NDArray[np.uint8]] = []
    cameras: list[CameraModel] = []
    transforms: list[F64] = []
    for name, frame in sensor_set.cameras.items():
        spec = rig.sensors.get(name)
        model = frame.camera if frame.camera is not None else (
            spec.intrinsics if spec is not None else None)
        if spec is None or spec.extrinsics is None or model is None:
            notes.append(f"camera {name!r}: no intrinsics/extrinsics; left out")
            continue
        if frame.encoding not in ("rgb8", "bgr8", "rgba8", "bgra8"):
            notes.append(f"camera {name!r}: encoding {frame.encoding!r} has no colour; "
                         f"left out")
            continue
        motion = _base_motion(odometry, stamp, frame.stamp_ns, notes, f"camera {name!r}")
        images.append(frame.rgb())
        cameras.append(model)
        transforms.append((spec.extrinsics.inverse() @ motion).as_matrix())
    has_lidar = bool(lidar_parts)
    has_radar = bool(radar_parts)
    return RawFrame(
        lidar=np.concatenate(lidar_parts) if lidar_parts else np.zeros((0, 4), np.float32),
        radar=np.concatenate(radar_parts) if radar_parts else np.zeros((0, 5), np.float32),
        images=tuple(images), cameras=tuple(cameras), T_cam_base=tuple(transforms),
        has_lidar=has_lidar, has_radar=has_radar, notes=tuple(notes),
        radar_origins=(np.concatenate(origin_parts) if origin_parts
                       else np.zeros((0, 3), np.float32)))


@dataclass(frozen=True)
class ProcessorState:
    """Normalisation constants, measured on the training data and saved with the weights.

    Attributes:
        position_scale_m: x, y divided by this (half the grid's extent).
        height_scale_m: z divided by this.
        intensity_scale: LiDAR intensity divided by this (its 99th percentile).
        velocity_scale_mps: radar radial velocity divided by this.
        rcs_mean_dbsm / rcs_std_dbsm: RCS standardisation.
        image_mean / image_std: camera normalisation (the camera detector's, RGB in [0, 1]).
    """

    position_scale_m: float = 50.0
    height_scale_m: float = 4.0
    intensity_scale: float = 255.0
    velocity_scale_mps: float = 10.0
    rcs_mean_dbsm: float = 0.0
    rcs_std_dbsm: float = 10.0
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        for key in ("position_scale_m", "height_scale_m", "intensity_scale",
                    "velocity_scale_mps", "rcs_std_dbsm"):
            val = getattr(self, key)
            if not isinstance(val, int | float) or not math.isfinite(val) or val <= 0:
                raise ConfigError(f"ProcessorState.{key} must be a positive number, got "
                                  f"{val!r}")
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ConfigError("ProcessorState.image_mean / image_std must be 3 numbers "
                              "(std > 0)")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ProcessorState:
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"cannot read the BEV processor state {path}: {exc}") from exc


@dataclass
class _LiftCache:
    key: bytes = b""
    grid: F32 = field(default_factory=lambda: np.zeros((0,), np.float32))
    depth: F32 = field(default_factory=lambda: np.zeros((0,), np.float32))


class BevProcessor:
    """Encodes :class:`RawFrame` s for the model and decodes its outputs (module docstring).

    Args:
        config: the model config (grid, lift, decoding).
        state: normalisation constants.
        image_size: ``(W_in, H_in)`` network input size of the camera images.
    """

    def __init__(self, config: BevModelConfig, state: ProcessorState | None = None,
                 image_size: tuple[int, int] = (320, 240)) -> None:
        self.config = config
        self.state = state or ProcessorState()
        self.image_size = image_size
        g = config.grid
        self._xc = (g.x_range_m[0] + (np.arange(g.nx) + 0.5) * g.cell_m).astype(np.float64)
        self._yc = (g.y_range_m[0] + (np.arange(g.ny) + 0.5) * g.cell_m).astype(np.float64)
        heights = np.asarray(config.lift_heights_m, np.float64)
        zz, xx, yy = np.meshgrid(heights, self._xc, self._yc, indexing="ij")
        #: (Z * nx * ny, 3) lift sample points, base_link
        self._lift_points = np.stack([xx, yy, zz], axis=-1).reshape(-1, 3)
        self._lift: dict[int, _LiftCache] = {}
        self._mean = np.asarray(self.state.image_mean, np.float32)
        self._std = np.asarray(self.state.image_std, np.float32)

    # ------------------------------------------------------------------ encoding
    def cells(self, xyz: F32) -> tuple[I64, npt.NDArray[np.bool_]]:
        """Flat cell index ``i * ny + j`` of ``(N, 3)`` points and the in-grid mask
        (inside x / y range and z range)."""
        g = self.config.grid
        i = np.floor((xyz[:, 0] - g.x_range_m[0]) / g.cell_m).astype(np.int64)
        j = np.floor((xyz[:, 1] - g.y_range_m[0]) / g.cell_m).astype(np.int64)
        inside = ((i >= 0) & (i < g.nx) & (j >= 0) & (j < g.ny)
                  & (xyz[:, 2] >= g.z_range_m[0]) & (xyz[:, 2] < g.z_range_m[1]))
        return np.where(inside, i * g.ny + j, 0), inside

    def _centre_offsets(self, xyz: F32, cells: I64) -> F32:
        g = self.config.grid
        i, j = np.divmod(cells, g.ny)
        return np.stack([(xyz[:, 0] - self._xc[i]) / g.cell_m,
                         (xyz[:, 1] - self._yc[j]) / g.cell_m], axis=1).astype(np.float32)

    def pillarize(self, feats: F32, cells: I64, per_pillar: int,
                  ) -> tuple[F32, F32, I64]:
        """Per-point features ``(N, F)`` + cells ``(N,)`` -> ``(pillars (P, S, F), mask
        (P, S, 1), unique cells (P,))``; the first ``S`` points of a cell (cloud order)."""
        order = np.argsort(cells, kind="stable")
        sc = cells[order]
        uniq, start, counts = np.unique(sc, return_index=True, return_counts=True)
        pillar = np.repeat(np.arange(len(uniq)), counts)
        rank = np.arange(len(sc)) - start[pillar]
        keep = rank < per_pillar
        out = np.zeros((len(uniq), per_pillar, feats.shape[1]), np.float32)
        mask = np.zeros((len(uniq), per_pillar, 1), np.float32)
        out[pillar[keep], rank[keep]] = feats[order[keep]]
        mask[pillar[keep], rank[keep]] = 1.0
        return out, mask, uniq.astype(np.int64)

    def lidar_features(self, lidar: F32) -> tuple[F32, I64]:
        """``(N, 4)`` LiDAR points -> ``(P, 9)`` features, ``(P,)`` cells (in-grid only)."""
        pts = lidar[np.all(np.isfinite(lidar), axis=1)]
        cells, inside = self.cells(pts[:, :3])
        pts, cells = pts[inside], cells[inside]
        if not len(pts):
            return np.zeros((0, LIDAR_POINT_FEATURES), np.float32), cells
        s = self.state
        n_cells = self.config.grid.nx * self.config.grid.ny
        count = np.bincount(cells, minlength=n_cells).astype(np.float64)
        mean = np.stack([np.bincount(cells, pts[:, k].astype(np.float64), minlength=n_cells)
                         for k in range(3)], axis=1) / np.maximum(count, 1.0)[:, None]
        m = mean[cells]
        cell = self.config.grid.cell_m
        feats = np.concatenate([
            pts[:, :2] / s.position_scale_m, pts[:, 2:3] / s.height_scale_m,
            pts[:, 3:4] / s.intensity_scale, self._centre_offsets(pts[:, :3], cells),
            (pts[:, :2] - m[:, :2]) / cell, pts[:, 2:3] - m[:, 2:3]], axis=1)
        return feats.astype(np.float32), cells

    def radar_features(self, radar: F32) -> tuple[F32, I64]:
        """``(M, 5)`` radar returns -> ``(Q, 9)`` features, ``(Q,)`` cells (in-grid only)."""
        pts = radar[np.all(np.isfinite(radar), axis=1)]
        cells, inside = self.cells(pts[:, :3])
        pts, cells = pts[inside], cells[inside]
        s = self.state
        rng = np.maximum(np.hypot(pts[:, 0], pts[:, 1]), 1e-3)[:, None]
        feats = np.concatenate([
            pts[:, :2] / s.position_scale_m, pts[:, 2:3] / s.height_scale_m,
            pts[:, 3:4] / s.velocity_scale_mps, (pts[:, 4:5] - s.rcs_mean_dbsm) / s.rcs_std_dbsm,
            self._centre_offsets(pts[:, :3], cells), pts[:, :2] / rng], axis=1)
        return feats.astype(np.float32).reshape(-1, RADAR_POINT_FEATURES), cells

    def normalize_image(self, image: npt.NDArray[np.uint8]) -> F32:
        """``(H, W, 3)`` uint8 RGB (any size) -> ``(3, H_in, W_in)`` float32."""
        import cv2

        w, h = self.image_size
        img: np.ndarray = image
        if img.shape[:2] != (h, w):
            interp = cv2.INTER_AREA if img.shape[1] > w else cv2.INTER_LINEAR
            img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=interp)
        x = (img.astype(np.float32) / np.float32(255.0) - self._mean) / self._std
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def lift_geometry(self, camera: CameraModel, T_cam_base: F64, slot: int = 0,
                      ) -> tuple[F32, F32]:
        """Where every BEV cell at every lift height lies in the camera.

        Returns:
            ``grid`` ``(Z * nx, ny, 2)`` float32 grid_sample coordinates (:data:`OUTSIDE`
            where invalid) and ``depth`` ``(1, Z * nx, ny)`` float32 optical-axis depth, m.
            Cached per camera slot while the camera and transform do not change.
        """
        key = repr(camera).encode() + np.asarray(T_cam_base, np.float64).tobytes()
        cache = self._lift.setdefault(slot, _LiftCache())
        if cache.key == key:
            return cache.grid, cache.depth
        T = np.asarray(T_cam_base, np.float64)
        pc = self._lift_points @ T[:3, :3].T + T[:3, 3]
        uv, valid = camera.project(pc)
        gx = (uv[:, 0] + 0.5) / camera.width * 2.0 - 1.0
        gy = (uv[:, 1] + 0.5) / camera.height * 2.0 - 1.0
        grid = np.stack([gx, gy], axis=1)
        grid[~valid] = OUTSIDE
        depth = np.where(valid, pc[:, 2], 0.0)
        z = len(self.config.lift_heights_m)
        g = self.config.grid
        cache.key = key
        cache.grid = grid.reshape(z * g.nx, g.ny, 2).astype(np.float32)
        cache.depth = depth.reshape(1, z * g.nx, g.ny).astype(np.float32)
        return cache.grid, cache.depth

    def encode(self, raw: RawFrame) -> dict[str, np.ndarray]:
        """:class:`RawFrame` -> model inputs (:data:`INPUT_NAMES`, see the module docstring).

        Modalities the model has no encoder for are given as empty sets with
        ``present = 0``."""
        mods = self.config.modalities
        w, h = self.image_size
        g = self.config.grid
        z = len(self.config.lift_heights_m)
        present = raw.present
        cfg = self.config
        lp, lc = (self.lidar_features(raw.lidar) if "lidar" in mods and present["lidar"]
                  else (np.zeros((0, LIDAR_POINT_FEATURES), np.float32), np.zeros(0, np.int64)))
        rp, rc = (self.radar_features(raw.radar) if "radar" in mods and present["radar"]
                  else (np.zeros((0, RADAR_POINT_FEATURES), np.float32), np.zeros(0, np.int64)))
        lidar = self.pillarize(lp, lc, cfg.lidar_points_per_pillar)
        radar = self.pillarize(rp, rc, cfg.radar_points_per_pillar)
        use_cam = "camera" in mods and present["camera"]
        k = len(raw.images) if use_cam else 0
        images = np.zeros((k, 3, h, w), np.float32)
        grid = np.zeros((k, z * g.nx, g.ny, 2), np.float32)
        depth = np.zeros((k, 1, z * g.nx, g.ny), np.float32)
        for c in range(k):
            images[c] = self.normalize_image(raw.images[c])
            grid[c], depth[c] = self.lift_geometry(raw.cameras[c], raw.T_cam_base[c], slot=c)
        flags = np.asarray([float(m in mods and present[m]) for m in MODALITIES], np.float32)
        return {"lidar_pillars": lidar[0], "lidar_mask": lidar[1], "lidar_cells": lidar[2],
                "radar_pillars": radar[0], "radar_mask": radar[1], "radar_cells": radar[2],
                "images": images, "cam_grid": grid, "cam_depth": depth, "present": flags}

    def depth_targets(self, raw: RawFrame, feature_hw: tuple[int, int]) -> I64:
        """Depth-bin targets of the camera features from the LiDAR points (training).

        Returns:
            ``(K, h, w)`` int64: the bin of the nearest LiDAR point projecting into each
            feature cell, -1 where none (or outside the depth range)."""
        h, w = feature_hw
        cfg = self.config
        out = np.full((len(raw.images), h, w), -1, np.int64)
        xyz = raw.lidar[:, :3].astype(np.float64)
        for c, (cam, T) in enumerate(zip(raw.cameras, raw.T_cam_base, strict=True)):
            pc = xyz @ T[:3, :3].T + T[:3, 3]
            uv, valid = cam.project(pc, min_depth=cfg.depth_min_m, in_image=True)
            d = pc[valid, 2]
            bins = np.floor((d - cfg.depth_min_m) / cfg.depth_step_m).astype(np.int64)
            ok = bins < cfg.depth_bins
            col = np.floor(uv[valid, 0] * w / cam.width).astype(np.int64)[ok]
            row = np.floor(uv[valid, 1] * h / cam.height).astype(np.int64)[ok]
            flat = np.clip(row, 0, h - 1) * w + np.clip(col, 0, w - 1)
            best = np.full(h * w, np.iinfo(np.int64).max)
            np.minimum.at(best, flat, bins[ok])
            best[best == np.iinfo(np.int64).max] = -1
            out[c] = best.reshape(h, w)
        return out

    # ------------------------------------------------------------------ decoding
    def decode(self, outputs: Mapping[str, np.ndarray], stamp_ns: int,
               sources: Sequence[str] = ("feature",)) -> list[DetectedObject]:
        """Model outputs (batch 1) -> objects in ``base_link`` at ``stamp_ns``.

        Args:
            outputs: :data:`OUTPUT_NAMES` -> ``(1, ., nx, ny)`` float32 maps: ``heatmap``
                class probabilities, ``offset`` centre in the cell (cells, 0..1), ``z`` box
                centre height (m), ``size`` log(length, width, height) (log m), ``rot``
                (sin, cos) of the yaw, ``velocity`` (vx, vy) over ground (m/s).
            stamp_ns: the set stamp.
            sources: the ``sources`` of every object.
        """
        cfg = self.config
        g = cfg.grid
        hm = np.asarray(outputs["heatmap"], np.float32)[0]
        if not np.all(np.isfinite(hm)):
            raise ValueError("BEV model produced non-finite heatmap values")
        peak = (hm == maximum_filter(hm, size=(1, 3, 3), mode="constant", cval=-1.0))
        score = np.where(peak & (hm >= cfg.score_threshold), hm, 0.0)
        flat = score.reshape(-1)
        n = int(np.count_nonzero(flat))
        if n == 0:
            return []
        top = np.argsort(-flat, kind="stable")[:min(n, cfg.max_objects * 2)]
        cls, cell = np.divmod(top, g.nx * g.ny)
        i, j = np.divmod(cell, g.ny)
        off = np.asarray(outputs["offset"], np.float32)[0][:, i, j]
        x = g.x_range_m[0] + (i + off[0]) * g.cell_m
        y = g.y_range_m[0] + (j + off[1]) * g.cell_m
        # greedy BEV-distance NMS over classes: one object per place
        keep: list[int] = []
        for k in range(len(top)):
            if all(math.hypot(x[k] - x[q], y[k] - y[q]) > cfg.nms_radius_m for q in keep):
                keep.append(k)
                if len(keep) >= cfg.max_objects:
                    break
        zc = np.asarray(outputs["z"], np.float32)[0][0, i, j]
        size = np.exp(np.clip(np.asarray(outputs["size"], np.float32)[0][:, i, j], -3.0, 3.5))
        rot = np.asarray(outputs["rot"], np.float32)[0][:, i, j]
        vel = np.asarray(outputs["velocity"], np.float32)[0][:, i, j]
        cov = np.diag([cfg.position_std_m ** 2] * 3 + [cfg.yaw_std_rad ** 2]
                      + [cfg.velocity_std_mps ** 2] * 2)
        objs = []
        for k in keep:
            probs = hm[:, i[k], j[k]].astype(np.float64)
            probs = probs / max(float(probs.sum()), 1e-9)
            objs.append(DetectedObject(
                box=Box3D(center=np.array([x[k], y[k], zc[k]], np.float64),
                          size=size[:, k].astype(np.float64),
                          yaw=float(math.atan2(rot[0, k], rot[1, k])), frame_id="base_link"),
                label=CLASSES[int(cls[k])], score=float(min(max(flat[top[k]], 0.0), 1.0)),
                stamp_ns=stamp_ns,
                class_probs={c.value: float(p) for c, p in zip(CLASSES, probs, strict=True)},
                velocity=np.array([vel[0, k], vel[1, k], 0.0], np.float64), covariance=cov,
                existence_prob=float(min(max(flat[top[k]], 0.0), 1.0)),
                sources=tuple(sources)))
        return objs


__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "OUTSIDE", "BevProcessor", "ProcessorState",
           "RawFrame", "frame_inputs"]
