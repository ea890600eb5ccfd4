"""Lifting 2D camera detections to 3D objects in ``base_link`` (numpy only).

A 2D box says in which direction an object is, not how far. Both ways below first find the
depth of the object's *nearest point* and then add the class box's half extent along the
viewing axis (its support ``sum_i half_size_i |axis_i . view|``: for a car seen from behind
that is half its length, seen from the side half its width). That is exact for a box of the
prior's size and yaw, where "the box-centre ray at the surface depth + half the depth
extent" along the (oblique) ray would be off by up to a metre for near objects to the side.
The centre then lies on the box-centre ray at that depth.

1. **Sparse depth** (LiDAR / radar points projected into the camera,
   ``CameraFusion.depth``): the valid depths inside the box shrunk by ``box_shrink`` (its
   border pixels are often background), minus points near the ground plane (road in front
   of or under the object), are clustered along the depth axis (a gap of more than
   ``max(cluster_gap_m, cluster_gap_rel * depth)`` splits clusters), and the *nearest*
   cluster holding at least ``min_cluster_fraction`` of the points is the object's visible
   surface: background points seen past the object's outline are farther and fall in later
   clusters, and a few stray near points are too few to count. The ``near_percentile`` of
   that cluster is the nearest-point depth (optical ``z``); the support is taken along the
   optical axis.
2. **Camera only** (no depth, or too few points): two monocular cues, each giving the
   forward distance ``D`` (along the horizontal projection of the optical axis) of the
   object's nearest point, fused by inverse variance
   ``D = (D_g / s_g^2 + D_h / s_h^2) / (1 / s_g^2 + 1 / s_h^2)``:

   - ground plane: the ray through the bottom-centre of the box meets the ground
     ``z = ground_z`` of ``base_link`` (through the camera's pose): for a level camera the
     lowest image point of a box on the ground is its nearest bottom corner, at
     ``D_g = h_cam / t_bottom`` (``t`` = ray drop per metre forward). Precise near the car,
     error growing as ``D^2``: ``s_g = D^2 / h_cam * (pixel_std / f + pitch_std)``.
     Impossible when the ray does not point below the horizon or the box is cut by the image
     bottom (the contact point is not seen).
   - class height prior: an upright object of height ``H`` spanning the box's top and
     bottom edges is at ``D_h = H / (t_top - t_bottom)`` (the ``Z = f H / h_px`` of a level
     pinhole camera, here through the undistorted rays); relative error the height spread of
     the class (``height_std_rel``) and the pixel error. Unusable when the box is cut by the
     top or bottom image border.

   The centre is at ``D`` + the support along the forward axis, on the box-centre ray, at
   height ``ground_z + H / 2``. With neither cue the object is dropped.

Finally the box is slid sideways (forward distance kept) until the middle of its projection
matches the middle of the detection: for a near object seen obliquely the box middle is not
the projection of the centre.

Size is the class prior (length, width, height). Yaw cannot be read from a 2D box:
``yaw_mode="ego_lane"`` (default) gives yaw 0, aligned with the ego's lane (most vehicles
drive along or against it, and a box is symmetric under yaw + pi); ``"ray"`` makes the box
face along the viewing ray. Either way the yaw variance is large (``yaw_std``).

Position covariance is large along the viewing direction (depth uncertainty) and small across
it (the bearing of a box is precise): ``sigma_along^2 u u^T + sigma_across^2 v v^T +
sigma_z^2 e_z e_z^T`` with ``u`` the horizontal viewing direction; velocity unknown
(``velocity=None``, variance ``velocity_std^2``). Objects whose distance is not in
``[min_depth_m, max_depth_m]`` or whose box cannot be unprojected (outside the lens model)
are dropped; nothing here raises on odd boxes.

Pixel conventions: detections use pixel *edges* (``x2`` = last column + 1); the camera model
uses pixel *centres*, so a box edge ``e`` is the camera coordinate ``e - 0.5``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import Box3D, DetectedObject, ObjectClass
from mm_perception.detection.camera.config import DEFAULT_CLASSES
from mm_perception.detection.camera.detector import Detections2D

F64 = npt.NDArray[np.float64]

#: typical (length, width, height) per class, metres: the middle of the usual real-world
#: ranges (also the simulator's ranges: cars 3.8-5.0 x 1.7-2.0 x 1.4-1.7, ...)
DEFAULT_SIZE_PRIORS: Mapping[ObjectClass, tuple[float, float, float]] = MappingProxyType({
    ObjectClass.CAR: (4.4, 1.85, 1.55),
    ObjectClass.TRUCK: (8.5, 2.5, 3.4),
    ObjectClass.BUS: (11.25, 2.55, 3.15),
    ObjectClass.PEDESTRIAN: (0.58, 0.58, 1.75),
    ObjectClass.CYCLIST: (1.75, 0.62, 1.75),
    ObjectClass.UNKNOWN: (1.0, 1.0, 1.5),
})
#: relative standard deviation of the class height (real spread of the class)
DEFAULT_HEIGHT_STD_REL: Mapping[ObjectClass, float] = MappingProxyType({
    ObjectClass.CAR: 0.08, ObjectClass.TRUCK: 0.10, ObjectClass.BUS: 0.05,
    ObjectClass.PEDESTRIAN: 0.07, ObjectClass.CYCLIST: 0.07, ObjectClass.UNKNOWN: 0.3,
})
YAW_MODES = ("ego_lane", "ray")


def _positive(value: Any, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"LiftConfig.{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"LiftConfig.{name} must be {'>=' if allow_zero else '>'} 0, got "
                          f"{value!r}")
    return float(value)


@dataclass(frozen=True)
class LiftConfig:
    """Settings of :func:`lift_detections` (see the module docstring for the method).

    Attributes:
        size_priors: class -> ``(length, width, height)``, m; must cover every class lifted
            (a class without a prior uses the ``UNKNOWN`` entry).
        height_std_rel: class -> relative std of the height prior.
        box_shrink: fraction of the box width / height removed on each side before reading
            depth points, [0, 0.5).
        min_depth_points: fewest valid depth points to use the depth image.
        cluster_gap_m / cluster_gap_rel: depth gap that separates two surfaces, m / fraction
            of the depth.
        min_cluster_fraction: the nearest cluster with at least this fraction of the points
            is the object surface, (0, 1].
        near_percentile: percentile of that cluster taken as the nearest-point depth, [0, 100]
            (low: the nearest face, robust to single noisy points).
        ground_z: height of the ground plane in ``base_link``, m (0: base_link on the ground).
        ground_clearance_m: depth points lower than ``ground_z`` + this are road, not object.
        border_px: a box edge within this many pixels of the image border is truncated.
        min_depth_m / max_depth_m: accepted distance range, m.
        pixel_std: std of a box edge, pixels.
        pitch_std: std of the camera pitch relative to the road (slope, suspension), rad.
        depth_std_m / depth_std_rel: std of the depth from points: fixed + fraction of depth.
        yaw_mode: ``"ego_lane"`` (yaw 0) or ``"ray"`` (facing along the viewing ray).
        yaw_std: std of the yaw, rad (large: not observable from a box).
        velocity_std: std of the unknown velocity in the covariance, m/s.
        prob_classes: the classes of the columns of ``Detections2D.class_probs`` (the
            detector's ``classes``; default: the default detector's).
    """

    size_priors: Mapping[ObjectClass, tuple[float, float, float]] = field(
        default_factory=lambda: dict(DEFAULT_SIZE_PRIORS))
    height_std_rel: Mapping[ObjectClass, float] = field(
        default_factory=lambda: dict(DEFAULT_HEIGHT_STD_REL))
    box_shrink: float = 0.15
    min_depth_points: int = 3
    cluster_gap_m: float = 0.8
    cluster_gap_rel: float = 0.05
    min_cluster_fraction: float = 0.2
    near_percentile: float = 10.0
    ground_z: float = 0.0
    ground_clearance_m: float = 0.25
    border_px: float = 2.0
    min_depth_m: float = 0.5
    max_depth_m: float = 150.0
    pixel_std: float = 2.0
    pitch_std: float = 0.01
    depth_std_m: float = 0.3
    depth_std_rel: float = 0.02
    yaw_mode: str = "ego_lane"
    yaw_std: float = math.pi / 2
    velocity_std: float = 10.0
    prob_classes: tuple[ObjectClass, ...] = DEFAULT_CLASSES

    def __post_init__(self) -> None:
        priors: dict[ObjectClass, tuple[float, float, float]] = {}
        for cls, size in dict(self.size_priors).items():
            dims = np.asarray(size, dtype=np.float64)
            if dims.shape != (3,) or not np.all(np.isfinite(dims)) or np.any(dims <= 0):
                raise ConfigError(f"LiftConfig.size_priors[{cls!r}] must be 3 positive sizes "
                                  f"(l, w, h), got {size!r}")
            priors[ObjectClass(cls)] = (float(dims[0]), float(dims[1]), float(dims[2]))
        if ObjectClass.UNKNOWN not in priors:
            raise ConfigError("LiftConfig.size_priors needs an 'unknown' entry (the fallback)")
        object.__setattr__(self, "size_priors", MappingProxyType(priors))
        stds = {ObjectClass(c): _positive(v, f"height_std_rel[{c!r}]")
                for c, v in dict(self.height_std_rel).items()}
        object.__setattr__(self, "height_std_rel", MappingProxyType(stds))
        if _positive(self.box_shrink, "box_shrink", allow_zero=True) >= 0.5:
            raise ConfigError(f"LiftConfig.box_shrink must be in [0, 0.5), got "
                              f"{self.box_shrink!r}")
        if (isinstance(self.min_depth_points, bool) or not isinstance(self.min_depth_points, int)
                or self.min_depth_points < 1):
            raise ConfigError(f"LiftConfig.min_depth_points must be an int >= 1, got "
                              f"{self.min_depth_points!r}")
        for name in ("cluster_gap_m", "min_depth_m", "max_depth_m", "pixel_std", "yaw_std",
                     "velocity_std", "depth_std_m"):
            _positive(getattr(self, name), name)
        for name in ("cluster_gap_rel", "ground_clearance_m", "border_px", "pitch_std",
                     "depth_std_rel"):
            _positive(getattr(self, name), name, allow_zero=True)
        if not 0 < _positive(self.min_cluster_fraction, "min_cluster_fraction") <= 1:
            raise ConfigError(f"LiftConfig.min_cluster_fraction must be in (0, 1], got "
                              f"{self.min_cluster_fraction!r}")
        if not 0 <= _positive(self.near_percentile, "near_percentile", allow_zero=True) <= 100:
            raise ConfigError(f"LiftConfig.near_percentile must be in [0, 100], got "
                              f"{self.near_percentile!r}")
        if (isinstance(self.ground_z, bool) or not isinstance(self.ground_z, int | float)
                or not math.isfinite(self.ground_z)):
            raise ConfigError(f"LiftConfig.ground_z must be a finite number, got "
                              f"{self.ground_z!r}")
        if self.max_depth_m <= self.min_depth_m:
            raise ConfigError(f"LiftConfig.max_depth_m ({self.max_depth_m}) must exceed "
                              f"min_depth_m ({self.min_depth_m})")
        try:
            object.__setattr__(self, "prob_classes",
                               tuple(ObjectClass(c) for c in self.prob_classes))
        except (TypeError, ValueError):
            raise ConfigError(f"LiftConfig.prob_classes must be ObjectClass values, got "
                              f"{self.prob_classes!r}") from None
        if self.yaw_mode not in YAW_MODES:
            raise ConfigError(f"LiftConfig.yaw_mode must be one of {YAW_MODES}, got "
                              f"{self.yaw_mode!r}")

    def prior(self, cls: ObjectClass) -> tuple[float, float, float]:
        return self.size_priors.get(cls, self.size_priors[ObjectClass.UNKNOWN])

    def height_rel(self, cls: ObjectClass) -> float:
        return self.height_std_rel.get(cls, self.height_std_rel.get(ObjectClass.UNKNOWN, 0.3))


def _unit_base(T_base_cam: SE3, rays_cam: F64) -> F64:
    """``(N, 3)`` optical-frame rays -> unit rays in base_link (NaN rows stay NaN)."""
    rays = T_base_cam.rotate(rays_cam)
    with np.errstate(invalid="ignore"):
        return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def _drop_per_forward(ray: F64, forward: F64) -> float:
    """Height change per metre travelled along the horizontal ``forward`` axis on ``ray``
    (both base_link); -inf/+inf when the ray does not go forward."""
    ahead = float(ray @ forward)
    return float(ray[2]) / ahead if ahead > 1e-9 else math.copysign(math.inf, ray[2])


def _support(size: tuple[float, float, float], yaw: float, direction: F64) -> float:
    """Half extent of an upright box (``size`` l, w, h, heading ``yaw``) along a unit
    ``direction`` (base_link): how far its centre lies behind its nearest point when seen
    along that direction."""
    c, s = math.cos(yaw), math.sin(yaw)
    axes = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    return float(np.sum(np.asarray(size) / 2 * np.abs(axes @ direction)))


def _surface_depth(values: F64, config: LiftConfig) -> float | None:
    """Nearest-point optical depth (m) of the nearest well-supported cluster of ``values``
    (``near_percentile`` of the cluster), or None."""
    d = np.sort(values)
    if d.size < config.min_depth_points:
        return None
    gaps = np.diff(d) > np.maximum(config.cluster_gap_m, config.cluster_gap_rel * d[:-1])
    bounds = np.concatenate([[0], np.flatnonzero(gaps) + 1, [d.size]])
    need = max(config.min_depth_points, math.ceil(config.min_cluster_fraction * d.size))
    for a, b in itertools.pairwise(bounds):
        if b - a >= need:
            return float(np.percentile(d[a:b], config.near_percentile))
    return None


def _depth_points(boxes: F64, depth: npt.NDArray[np.float32], camera: CameraModel,
                  T_base_cam: SE3, config: LiftConfig) -> list[F64]:
    """Per box of ``boxes`` ``(M, 4)`` (pixel edges, clipped to the image): the optical
    depths of the valid points inside the shrunk box, road points removed. All boxes' pixels
    are unprojected in one call (the undistortion is iterative: per-call overhead dominates
    for the few hundred pixels of a box)."""
    h, w = depth.shape
    uv_parts: list[F64] = []
    z_parts: list[F64] = []
    for x1, y1, x2, y2 in boxes:
        dx, dy = (x2 - x1) * config.box_shrink, (y2 - y1) * config.box_shrink
        c0, c1 = max(math.floor(x1 + dx), 0), min(math.ceil(x2 - dx), w)
        r0, r1 = max(math.floor(y1 + dy), 0), min(math.ceil(y2 - dy), h)
        if c1 <= c0 or r1 <= r0:
            uv_parts.append(np.zeros((0, 2)))
            z_parts.append(np.zeros(0))
            continue
        patch = depth[r0:r1, c0:c1].astype(np.float64)
        rows, cols = np.nonzero(np.isfinite(patch) & (patch > 0))
        z_parts.append(patch[rows, cols])
        uv_parts.append(np.stack([cols + c0, rows + r0], axis=1).astype(np.float64))  # centres
    counts = [z.size for z in z_parts]
    if sum(counts) == 0:
        return [np.zeros(0) for _ in counts]
    z_all = np.concatenate(z_parts)
    pts = T_base_cam.apply(camera.unproject(np.concatenate(uv_parts), z_all))
    keep = np.isfinite(pts).all(axis=1) & (pts[:, 2] > config.ground_z
                                           + config.ground_clearance_m)
    bounds = np.cumsum([0, *counts])
    return [z_all[a:b][keep[a:b]] for a, b in itertools.pairwise(bounds)]


def _covariance(heading: float, sigma_along: float, sigma_across: float, sigma_z: float,
                config: LiftConfig) -> F64:
    """``(6, 6)`` covariance over (x, y, z, yaw, vx, vy) in base_link."""
    u = np.array([math.cos(heading), math.sin(heading), 0.0])
    v = np.array([-u[1], u[0], 0.0])
    cov = np.zeros((6, 6))
    cov[:3, :3] = (sigma_along ** 2 * np.outer(u, u) + sigma_across ** 2 * np.outer(v, v)
                   + sigma_z ** 2 * np.diag([0.0, 0.0, 1.0]))
    cov[3, 3] = config.yaw_std ** 2
    cov[4, 4] = cov[5, 5] = config.velocity_std ** 2
    return cov


def lift_detections(dets: Detections2D, camera: CameraModel, T_base_cam: SE3, stamp_ns: int, *,
                    depth: np.ndarray | None = None, config: LiftConfig | None = None,
                    sensor: str = "camera") -> list[DetectedObject]:
    """3D objects in base_link from 2D detections (method in the module docstring).

    Args:
        dets: detections in pixels of the image ``camera`` describes (pixel edges).
        camera: the camera's intrinsics / distortion (same image size as the detections).
        T_base_cam: pose of the camera *optical* frame in base_link (``p_base = T @ p_cam``).
        stamp_ns: stamp of the image, ns (put on every object).
        depth: optional ``(H, W)`` float32 sparse depth image (metres along the optical axis,
            NaN = no point), from LiDAR / radar projection
            (``mm_perception.fusion.data_level.CameraFusion.depth``).
        config: lifting settings (default :class:`LiftConfig`).
        sensor: name put in ``sources``.

    Returns:
        One :class:`DetectedObject` per detection that could be placed (others dropped), in
        detection order: box centre / class-prior size / yaw in base_link, the detection's
        score (also as ``existence_prob``) and class probabilities, ``velocity=None``,
        a ``(6, 6)`` covariance, ``sources=(sensor,)``.

    Raises:
        ValueError: ``depth`` is not an ``(H, W)`` array of the camera's size, or
            ``class_probs`` columns do not match ``config.prob_classes``.
    """
    cfg = config or LiftConfig()
    if depth is not None:
        depth = np.asarray(depth)
        if depth.shape != (camera.height, camera.width):
            raise ValueError(f"depth must have the camera's shape ({camera.height}, "
                             f"{camera.width}), got {depth.shape}")
    if len(dets) == 0:
        return []
    if dets.class_probs.shape[1] != len(cfg.prob_classes):
        raise ValueError(f"class_probs has {dets.class_probs.shape[1]} columns but "
                         f"LiftConfig.prob_classes names {len(cfg.prob_classes)} classes")
    cam_pos = T_base_cam.translation
    cam_height = float(cam_pos[2]) - cfg.ground_z
    optical_axis = T_base_cam.rotate(np.array([0.0, 0.0, 1.0]))
    level = np.array([optical_axis[0], optical_axis[1], 0.0])
    if np.linalg.norm(level) < 1e-6:  # camera looking straight up/down: no forward axis
        level = np.array([1.0, 0.0, 0.0])
    forward = level / np.linalg.norm(level)
    f = max(camera.fx, camera.fy)

    # boxes that can be placed at all, clipped to the image (pixel edges)
    index: list[int] = []
    clipped: list[tuple[float, float, float, float]] = []
    for k in range(len(dets)):
        box = np.asarray(dets.boxes[k], np.float64)
        if not np.all(np.isfinite(box)):
            continue
        x1, x2 = np.clip(box[[0, 2]], 0.0, camera.width)
        y1, y2 = np.clip(box[[1, 3]], 0.0, camera.height)
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            continue
        index.append(k)
        clipped.append((float(x1), float(y1), float(x2), float(y2)))
    if not index:
        return []
    boxes = np.array(clipped)
    # every unprojection of the method for all boxes at once (see _depth_points): rays
    # (pixel centres) through each box's centre, bottom-centre and top-centre
    u_c = (boxes[:, 0] + boxes[:, 2]) / 2 - 0.5
    v_c = (boxes[:, 1] + boxes[:, 3]) / 2 - 0.5
    uv = np.stack([np.stack([u_c, v_c], axis=1), np.stack([u_c, boxes[:, 3] - 0.5], axis=1),
                   np.stack([u_c, boxes[:, 1] - 0.5], axis=1)], axis=1)
    rays_cam = camera.unproject(uv.reshape(-1, 2))  # (3 M, 3), z = 1
    rays = _unit_base(T_base_cam, rays_cam).reshape(-1, 3, 3)
    rays_cam = rays_cam.reshape(-1, 3, 3)
    z_points = (_depth_points(boxes, depth, camera, T_base_cam, cfg) if depth is not None
                else None)

    # per box: the nearest point's distance, then the centre before the sideways slide
    placed: list[int] = []  # rows of `boxes`
    centres: list[F64] = []
    yaws: list[float] = []
    sigmas: list[tuple[float, float, float, float]] = []  # along, across (nan: later), z, heading
    for m in range(len(index)):
        label = dets.labels[index[m]]
        size = cfg.prior(label)
        x1, y1, x2, y2 = boxes[m]
        if not np.all(np.isfinite(rays[m])) or rays[m, 0] @ forward <= 1e-6:
            continue
        r_centre, r_bottom, r_top = rays[m]
        heading = math.atan2(r_centre[1], r_centre[0])
        yaw = heading if cfg.yaw_mode == "ray" else 0.0
        centre: F64 | None = None
        z_near = _surface_depth(z_points[m], cfg) if z_points is not None else None
        if z_near is not None and z_near > 0:
            behind = _support(size, yaw, optical_axis)
            z_centre = z_near + behind
            ray_cam = rays_cam[m, 0]
            centre = T_base_cam.apply(ray_cam * z_centre)
            rng = z_centre * float(np.linalg.norm(ray_cam))
            sigma_across = rng * cfg.pixel_std / f + 0.1
            sigmas.append((cfg.depth_std_m + cfg.depth_std_rel * z_near + 0.15 * behind,
                           sigma_across, sigma_across + 0.1 * size[2], heading))
        else:
            near, sigma = _monocular_distance(r_bottom, r_top, (y1, y2), camera, cam_height,
                                              size[2], cfg.height_rel(label), f, forward, cfg)
            if near is None:
                continue
            behind = _support(size, yaw, forward)
            centre = cam_pos + r_centre * ((near + behind) / float(r_centre @ forward))
            centre[2] = cfg.ground_z + size[2] / 2
            # the range, hence the sideways sigma, is taken after the slide
            sigmas.append((sigma + 0.15 * behind, math.nan, 0.1 * size[2] + 0.1, heading))
        placed.append(m)
        centres.append(centre)
        yaws.append(yaw)
    if not placed:
        return []
    rows = np.array(placed)
    sizes = np.array([cfg.prior(dets.labels[index[m]]) for m in placed], np.float64)
    slid = _refine_lateral(np.array(centres), sizes, np.array(yaws), u_c[rows], v_c[rows],
                           rays[rows, 0], camera, T_base_cam, forward)

    out: list[DetectedObject] = []
    for j, m in enumerate(placed):
        k = index[m]
        label = dets.labels[k]
        size = cfg.prior(label)
        centre, yaw = slid[j], yaws[j]
        sigma_along, sigma_across, sigma_z, heading = sigmas[j]
        if math.isnan(sigma_across):
            rng = math.hypot(centre[0] - cam_pos[0], centre[1] - cam_pos[1])
            sigma_across = rng * cfg.pixel_std / f + 0.1
        dist = float((centre - cam_pos) @ forward) - _support(size, yaw, forward)
        if not (np.all(np.isfinite(centre)) and cfg.min_depth_m <= dist <= cfg.max_depth_m):
            continue
        probs = {cls.value: float(p) for cls, p in zip(
            cfg.prob_classes, dets.class_probs[k], strict=True)}
        score = float(np.clip(dets.scores[k], 0.0, 1.0))
        out.append(DetectedObject(
            box=Box3D(centre, np.array(size), yaw, "base_link"), label=label, score=score,
            stamp_ns=stamp_ns, class_probs=probs, velocity=None,
            covariance=_covariance(heading, sigma_along, sigma_across, sigma_z, cfg),
            existence_prob=score, sources=(sensor,)))
    return out


def _box_corners(centres: F64, sizes: F64, yaws: F64) -> F64:
    """``(M, 8, 3)`` corners of upright boxes (``Box3D.corners`` for many boxes)."""
    sx = np.array([1, -1, -1, 1, 1, -1, -1, 1], np.float64)
    sy = np.array([1, 1, -1, -1, 1, 1, -1, -1], np.float64)
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1], np.float64)
    x = sx * sizes[:, :1] / 2
    y = sy * sizes[:, 1:2] / 2
    z = sz * sizes[:, 2:3] / 2
    c, s = np.cos(yaws)[:, None], np.sin(yaws)[:, None]
    return np.stack([c * x - s * y, s * x + c * y, z], axis=2) + centres[:, None, :]


def _refine_lateral(centres: F64, sizes: F64, yaws: F64, target_u: F64, v: F64,
                    target_rays: F64, camera: CameraModel, T_base_cam: SE3, forward: F64,
                    iterations: int = 3) -> F64:
    """Slide each box sideways (keeping its forward distance) until its projection's
    horizontal middle matches the detection's; all boxes together, one projection and one
    unprojection per iteration.

    The middle of a 2D box is not the projection of the 3D centre for a near object seen
    obliquely (its near side face widens the box on one side): the box-centre ray misses the
    centre by up to a metre there. Both sides are clipped to the image, so a box cut by the
    border is compared like for like. A box stops moving when it is within 0.05 px, cannot be
    projected or its rays do not point forward (then it keeps its last centre).

    Args:
        centres: ``(M, 3)`` box centres in base_link; sizes ``(M, 3)``, yaws ``(M,)``.
        target_u, v: ``(M,)`` the detections' middle column and row (pixel centres).
        target_rays: ``(M, 3)`` unit base_link rays through ``(target_u, v)``.

    Returns:
        ``(M, 3)`` slid centres.
    """
    cam_pos = T_base_cam.translation
    T_cam_base = T_base_cam.inverse()
    perp = np.array([-forward[1], forward[0], 0.0])
    out = np.array(centres, np.float64, copy=True)
    active = np.ones(out.shape[0], dtype=bool)
    for _ in range(iterations):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        corners = _box_corners(out[idx], sizes[idx], yaws[idx])
        uv, corner_ok = camera.project(T_cam_base.apply(corners.reshape(-1, 3)))
        uv = uv.reshape(-1, 8, 2)
        valid = np.all(corner_ok.reshape(-1, 8), axis=1)
        with np.errstate(invalid="ignore"):
            lo = np.clip(uv[:, :, 0].min(axis=1) + 0.5, 0.0, camera.width)  # edges, clipped
            hi = np.clip(uv[:, :, 0].max(axis=1) + 0.5, 0.0, camera.width)
            proj_u = (lo + hi) / 2 - 0.5
            go = valid & ~(np.abs(proj_u - target_u[idx]) < 0.05) & (hi > lo)
        active[idx[~go]] = False
        idx, proj_u = idx[go], proj_u[go]
        if idx.size == 0:
            break
        r_target = target_rays[idx]
        r_proj = _unit_base(T_base_cam, camera.unproject(np.stack([proj_u, v[idx]], axis=1)))
        ahead_t, ahead_p = r_target @ forward, r_proj @ forward
        with np.errstate(invalid="ignore"):
            ok = (np.isfinite(r_target).all(axis=1) & np.isfinite(r_proj).all(axis=1)
                  & (ahead_t > 1e-6) & (ahead_p > 1e-6))
        active[idx[~ok]] = False
        idx, r_target, r_proj = idx[ok], r_target[ok], r_proj[ok]
        ahead_t, ahead_p = ahead_t[ok], ahead_p[ok]
        slope_diff = (r_target @ perp) / ahead_t - (r_proj @ perp) / ahead_p
        along = (out[idx] - cam_pos) @ forward
        out[idx] = out[idx] + perp * along[:, None] * slope_diff[:, None]
    return out


def _monocular_distance(r_bottom: F64, r_top: F64, rows: tuple[float, float],
                        camera: CameraModel, cam_height: float, height: float,
                        height_rel: float, f: float, forward: F64, cfg: LiftConfig
                        ) -> tuple[float | None, float]:
    """Forward distance of the object's nearest point from the ground plane and the height
    prior, fused by inverse variance; ``(None, inf)`` when neither cue is usable."""
    y1, y2 = rows
    cut_bottom = y2 >= camera.height - cfg.border_px
    cut_top = y1 <= cfg.border_px
    t_bottom, t_top = _drop_per_forward(r_bottom, forward), _drop_per_forward(r_top, forward)
    sigma_t = cfg.pixel_std / f
    estimates: list[tuple[float, float]] = []
    if not cut_bottom and cam_height > 0 and math.isfinite(t_bottom) and t_bottom < -1e-6:
        d_ground = cam_height / -t_bottom
        estimates.append((d_ground, d_ground ** 2 / cam_height * (sigma_t + cfg.pitch_std)))
    span = t_top - t_bottom
    if not (cut_bottom or cut_top) and math.isfinite(span) and span > 1e-6:
        d_height = height / span
        estimates.append((d_height,
                          d_height * math.hypot(height_rel, math.sqrt(2.0) * sigma_t / span)))
    estimates = [(d, s) for d, s in estimates if math.isfinite(d) and d > 0 and s > 0]
    if not estimates:
        return None, math.inf
    weights = np.array([1.0 / s ** 2 for _, s in estimates])
    dist = float(np.sum(weights * np.array([d for d, _ in estimates])) / weights.sum())
    return dist, float(1.0 / math.sqrt(weights.sum()))


__all__ = ["DEFAULT_SIZE_PRIORS", "LiftConfig", "lift_detections"]
