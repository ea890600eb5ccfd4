"""Data-level fusion: LiDAR and radar points meet camera pixels (numpy only).

Points are projected into every camera with its lens model (the formulas of
:mod:`mm_perception.core.camera`, i.e. OpenCV's), producing

- a sparse, z-buffered **depth image** per camera (nearest LiDAR point per pixel),
- a **radar image** per camera (Doppler and RCS of the nearest radar point per pixel,
  optionally splatted to a small square since radar is sparse),
- **painted points** per LiDAR (PointPainting): each point carries the colour of the pixel
  it projects to and, when given, the camera detector's class scores at that pixel.

Conventions (shared by every function here):

- Pixels: ``u`` right, ``v`` down, the centre of the top-left pixel is ``(0, 0)``
  (OpenCV / ROS ``CameraInfo``). A point *belongs* to the pixel whose centre is nearest:
  column ``floor(u + 0.5)``, row ``floor(v + 0.5)``; it is *inside the image* when that pixel
  exists, i.e. ``-0.5 <= u < width - 0.5`` and ``-0.5 <= v < height - 0.5``.
- Depth is the optical-frame ``z`` (metres along the optical axis), not the range.
- Empty pixels of depth and radar images are **NaN** (0 is a valid Doppler, and a NaN can
  not be mistaken for a measurement); use ``np.nan_to_num`` for a network input.
- Points that do not project (behind the camera, outside the lens's valid field of view,
  outside the image, non-finite) are not painted: their features are 0 (the PointPainting
  convention for network inputs) and a ``painted`` mask says which rows are real.

Speed (about 1.3-1.9 ms for 120k LiDAR points into a 1280x720 plumb_bob camera with depth
image and painting on one core, see ``bench/bench_projection.py``): :func:`project_points`
culls before any distortion is computed, in two stages: points behind the camera on the
rotated ``z`` row alone, then points outside a conservative box of undistorted normalized
coordinates that contains everything that can land in the image (computed once per camera
model). For float32 input (what LiDAR drivers publish) the cull runs in float32 with margins
that provably cover its rounding; the few points left are then projected in float64, so
pixel coordinates agree with ``cv2.projectPoints`` to ~1e-9 px and a point is assigned the
same pixel as OpenCV would give it (except within ~1e-9 px of a pixel border). No BLAS (a
threaded 3x3 product costs more in thread wake-up than in arithmetic). The z-buffer is a
plain scatter into a NaN image, then ``np.fmin.at`` for the few points nearer than what their
pixel got (``fmin`` ignores the NaN of empty pixels).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from mm_perception.core.calibration import Rig
from mm_perception.core.camera import CameraModel
from mm_perception.core.checks import is_real
from mm_perception.core.ego_motion import OdometryBuffer, compensate_doppler, deskew_points
from mm_perception.core.errors import ConfigError, EgoMotionError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import CameraFrame, PointCloud, RadarScan, SensorKind, SensorSet

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

#: colour encodings that can paint points (see CameraFrame.rgb)
_COLOUR_ENCODINGS = frozenset({"rgb8", "bgr8", "rgba8", "bgra8", "mono8"})
#: index of the R, G, B bytes of a pixel in each colour encoding
_RGB_CHANNELS: Mapping[str, tuple[int, int, int]] = MappingProxyType({
    "rgb8": (0, 1, 2), "bgr8": (2, 1, 0), "rgba8": (0, 1, 2), "bgra8": (2, 1, 0),
    "mono8": (0, 0, 0)})
#: upper bound of the radar splat radius (a bigger square is a smeared blob, not a point)
_MAX_SPLAT_RADIUS_PX = 32
#: coarse z cull slack, metres: far above float64 rounding of a translation add
_Z_SLACK_M = 1e-6


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class DataLevelConfig:
    """Configuration of :class:`DataLevelFusion`.

    Attributes:
        min_depth_m: points with optical depth ``z <= min_depth_m`` are not projected
            (metres, finite, > 0).
        max_depth_m: points with ``z > max_depth_m`` are not projected (metres, > min_depth_m;
            ``math.inf`` for no limit).
        deskew_to_camera: with an odometry buffer, move LiDAR points from their own time
            (per-point time when the cloud has it, else the cloud stamp) and radar points
            from the scan stamp to the camera's stamp before projecting (static-world ego
            motion compensation). Without odometry nothing is moved.
        paint_rgb: paint LiDAR points with the colour of their pixel.
        paint_scores: paint LiDAR points with the class scores passed to
            :meth:`DataLevelFusion.fuse` (PointPainting).
        radar_splat_radius_px: each radar point fills the ``(2 r + 1)^2`` pixel square around
            its pixel in the radar image (int, 0 .. 32; 0 = its pixel only).
        doppler_ego_compensation: write the Doppler over ground (ego motion removed with
            :func:`~mm_perception.core.ego_motion.compensate_doppler`) into radar images
            instead of the measured Doppler. Needs the ego state (``SensorSet.ego`` or the
            odometry buffer); a scan without one is dropped (counted), never written raw.

    Raises:
        ConfigError: a value of the wrong type or out of range; the message names it.
    """

    min_depth_m: float = 0.1
    max_depth_m: float = 250.0
    deskew_to_camera: bool = True
    paint_rgb: bool = True
    paint_scores: bool = True
    radar_splat_radius_px: int = 2
    doppler_ego_compensation: bool = False

    def __post_init__(self) -> None:
        lo = self.min_depth_m
        if not is_real(lo) or not math.isfinite(float(lo)) or float(lo) <= 0.0:
            raise ConfigError(f"DataLevelConfig.min_depth_m must be a finite number > 0 "
                              f"(metres), got {lo!r}")
        hi = self.max_depth_m
        if not is_real(hi) or math.isnan(float(hi)) or float(hi) <= float(lo):
            raise ConfigError(f"DataLevelConfig.max_depth_m must be a number > min_depth_m="
                              f"{lo!r} (metres, inf allowed), got {hi!r}")
        object.__setattr__(self, "min_depth_m", float(lo))
        object.__setattr__(self, "max_depth_m", float(hi))
        for name in ("deskew_to_camera", "paint_rgb", "paint_scores",
                     "doppler_ego_compensation"):
            value = getattr(self, name)
            if not isinstance(value, bool | np.bool_):
                raise ConfigError(f"DataLevelConfig.{name} must be a bool, got {value!r}")
            object.__setattr__(self, name, bool(value))
        radius = self.radar_splat_radius_px
        if (not isinstance(radius, int | np.integer) or isinstance(radius, bool | np.bool_)
                or not 0 <= radius <= _MAX_SPLAT_RADIUS_PX):
            raise ConfigError(f"DataLevelConfig.radar_splat_radius_px must be an int in "
                              f"[0, {_MAX_SPLAT_RADIUS_PX}] (pixels), got {radius!r}")
        object.__setattr__(self, "radar_splat_radius_px", int(radius))


# ---------------------------------------------------------------------------- lens plan


@dataclass(frozen=True)
class _LensPlan:
    """Per-camera constants of the fast projection (computed once per model).

    ``box``: ``(xmin, xmax, ymin, ymax)`` undistorted normalized coordinates containing every
    valid point that can land inside the image (may be infinite). ``check_domain``: the
    plumb_bob one-to-one test must run per point (the box is not provably inside it).
    """

    box: tuple[float, float, float, float]
    check_domain: bool
    fold_limit: float


def _plumb_bob_det(camera: CameraModel, x: F64, y: F64) -> F64:
    """Determinant of the plumb_bob distortion's Jacobian (as CameraModel computes it)."""
    k1, k2, p1, p2, k3 = camera.D
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    d_radial = k1 + r2 * (2.0 * k2 + r2 * 3.0 * k3)
    a = radial + 2.0 * x * x * d_radial + 2.0 * p1 * y + 6.0 * p2 * x
    b = 2.0 * x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y
    d = radial + 2.0 * y * y * d_radial + 6.0 * p1 * y + 2.0 * p2 * x
    out: F64 = a * d - b * b
    return out


@functools.lru_cache(maxsize=64)
def _lens_plan(camera: CameraModel) -> _LensPlan:
    """Culling box and domain-check need of one camera model (cached: models are frozen)."""
    model = camera.distortion_model
    # where the radial mapping folds: plumb_bob a normalized radius, equidistant an angle
    angle = camera.max_incidence_angle
    fold = angle
    if model == "plumb_bob":
        fold = math.tan(angle) if angle < math.pi / 2 else math.inf
    # The in-image region is the pixel rectangle [-0.5, W - 0.5] x [-0.5, H - 0.5]. While the
    # lens maps its valid region one-to-one onto a set covering the rectangle, the preimage
    # of the rectangle is bounded by the preimage of its border: sample the border every
    # pixel (between samples the curve strays far less than the margin), undistort, take the
    # bounding box plus a margin of 0.1 % (about a pixel).
    w, h = camera.width, camera.height
    us = np.linspace(-0.5, w - 0.5, w + 1)
    vs = np.linspace(-0.5, h - 0.5, h + 1)
    border = np.concatenate([
        np.stack([us, np.full_like(us, -0.5)], axis=1),
        np.stack([us, np.full_like(us, h - 0.5)], axis=1),
        np.stack([np.full_like(vs, -0.5), vs], axis=1),
        np.stack([np.full_like(vs, w - 0.5), vs], axis=1)])
    xy_d = np.stack([(border[:, 0] - camera.cx) / camera.fx,
                     (border[:, 1] - camera.cy) / camera.fy], axis=1)
    xy = camera.undistort(xy_d)
    if np.all(np.isfinite(xy)):
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        margin = 1e-3 * (hi - lo) + 1e-6
        box = (float(lo[0] - margin[0]), float(hi[0] + margin[0]),
               float(lo[1] - margin[1]), float(hi[1] + margin[1]))
    else:
        # part of the image lies outside the lens's valid region: bound by that region
        r = math.tan(angle) * 1.001 if angle < math.pi / 2 - 1e-12 else math.inf
        box = (-r, r, -r, r)
    check = False
    if model == "plumb_bob":
        check = True
        if all(math.isfinite(b) for b in box):
            corner = max(math.hypot(box[i], box[j]) for i in (0, 1) for j in (2, 3))
            xs = np.linspace(box[0], box[1], 401)
            ys = np.linspace(box[2], box[3], 401)
            gx, gy = np.meshgrid(xs, ys)
            det = _plumb_bob_det(camera, gx, gy)
            step = max(float(np.abs(np.diff(det, axis=0)).max()),
                       float(np.abs(np.diff(det, axis=1)).max()))
            # the determinant is a smooth polynomial: positive with a margin of several grid
            # steps' change everywhere on the grid means positive in between too
            check = not (corner < fold and float(det.min()) > 4.0 * step)
    return _LensPlan(box=box, check_domain=check, fold_limit=float(fold))


# ---------------------------------------------------------------------------- projection


@dataclass(frozen=True, eq=False)
class Projection:
    """Points projected into one camera, stored compactly (valid points only).

    Attributes:
        n_points: number of input points ``N``.
        width, height: image size, pixels.
        index: ``(M,)`` int64 ascending indices (into the input) of the valid points.
        uv_valid: ``(M, 2)`` float64 pixel coordinates of the valid points.
        depth_valid: ``(M,)`` float64 optical depth ``z`` of the valid points, metres.
        pixel: ``(M,)`` int64 flat pixel index ``row * width + col`` of the valid points
            (nearest pixel centre).

    The full-size views :attr:`uv`, :attr:`depth` and :attr:`valid` are built on demand. The
    arrays are made read-only (shared by every consumer of the projection).
    """

    n_points: int
    width: int
    height: int
    index: I64
    uv_valid: F64
    depth_valid: F64
    pixel: I64

    def __post_init__(self) -> None:
        for arr in (self.index, self.uv_valid, self.depth_valid, self.pixel):
            arr.setflags(write=False)

    @property
    def count(self) -> int:
        """``M``, the number of valid points."""
        return int(self.index.shape[0])

    @property
    def valid(self) -> B:
        """``(N,)`` bool: in front (``min_depth < z <= max_depth``), inside the lens's valid
        field of view and inside the image."""
        out = np.zeros(self.n_points, dtype=bool)
        out[self.index] = True
        return out

    @property
    def uv(self) -> F64:
        """``(N, 2)`` float64 pixels; NaN rows for invalid points."""
        out = np.full((self.n_points, 2), np.nan)
        out[self.index] = self.uv_valid
        return out

    @property
    def depth(self) -> F64:
        """``(N,)`` float64 optical depth ``z``, metres; NaN for invalid points."""
        out = np.full(self.n_points, np.nan)
        out[self.index] = self.depth_valid
        return out

    @property
    def rows_cols(self) -> tuple[I64, I64]:
        """``(M,)`` int64 rows and columns of the valid points' pixels."""
        rows, cols = np.divmod(self.pixel, self.width)
        return rows, cols

    @classmethod
    def empty(cls, n_points: int, width: int, height: int) -> Projection:
        """No valid point among ``n_points``."""
        return cls(n_points, width, height, np.zeros(0, np.int64), np.zeros((0, 2)),
                   np.zeros(0), np.zeros(0, np.int64))


def _point_columns(points: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y, z columns of ``(N, 3)`` points: float32 stays float32 (half the memory traffic
    of the cull) and is transposed into contiguous rows (one pass; every later read and
    gather is then contiguous); other dtypes become float64 column views."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {pts.shape}")
    if pts.dtype == np.float32:
        rows = np.ascontiguousarray(pts.T)
        return rows[0], rows[1], rows[2]
    if pts.dtype != np.float64:
        pts = pts.astype(np.float64)
    return pts[:, 0], pts[:, 1], pts[:, 2]


def _dot_row(c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, row: F64, offset: float) -> F64:
    """``row[0] c0 + row[1] c1 + row[2] c2 + offset`` in float64 (float32 columns are
    widened on the fly: the float64 scalars make numpy compute in float64)."""
    out: F64 = np.multiply(c0, np.float64(row[0]), dtype=np.float64)
    tmp = np.multiply(c1, np.float64(row[1]), dtype=np.float64)
    out += tmp
    np.multiply(c2, np.float64(row[2]), out=tmp, dtype=np.float64)
    out += tmp
    if offset:
        out += offset
    return out


def _distort_to_pixels(camera: CameraModel, x: F64, y: F64, r2: F64) -> tuple[F64, F64]:
    """Distorted pixel coordinates of undistorted normalized ``x``, ``y`` (``r2 = x^2 +
    y^2``), in place where possible (``x``/``y`` are consumed)."""
    model = camera.distortion_model
    if model == "plumb_bob":
        k1, k2, p1, p2, k3 = camera.D
        # OpenCV's order: x_d = x radial + p1 a1 + p2 a2, y_d = y radial + p1 a3 + p2 a1,
        # a1 = 2 x y, a2 = r2 + 2 x^2, a3 = r2 + 2 y^2 (so results agree to ~1e-12 px)
        radial = r2 * k3
        radial += k2
        radial *= r2
        radial += k1
        radial *= r2
        radial += 1.0
        a1 = x * y
        a1 += a1
        tmp = x * x
        tmp += tmp
        tmp += r2
        tmp *= p2
        u = x * radial
        u += tmp
        np.multiply(a1, p1, out=tmp)
        u += tmp
        np.multiply(y, y, out=tmp)
        tmp += tmp
        tmp += r2
        tmp *= p1
        v = y
        v *= radial
        v += tmp
        np.multiply(a1, p2, out=tmp)
        v += tmp
    elif model == "equidistant":
        k1, k2, k3, k4 = camera.D
        r = np.sqrt(r2)
        theta = np.arctan(r)
        t2 = theta * theta
        poly = t2 * k4
        poly += k3
        poly *= t2
        poly += k2
        poly *= t2
        poly += k1
        poly *= t2
        poly += 1.0
        poly *= theta  # theta_d
        big = r > 1e-8  # OpenCV's guard: theta_d / r -> 1 on the axis
        scale = np.divide(poly, r, out=np.ones_like(r), where=big)
        u = x * scale
        v = y
        v *= scale
    else:
        u, v = x, y
    u *= camera.fx
    u += camera.cx
    v *= camera.fy
    v += camera.cy
    return u, v


def _cull_float32(c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, T: SE3, plan: _LensPlan,
                  min_depth: float) -> tuple[I64, F32, F32, F32]:
    """Indices (and x, y, z columns) of the float32 points that may be valid: in front and
    inside the culling box, by float32 arithmetic with margins that cover its rounding
    (never drops a valid point).

    Rounding bound: each float32 dot product ``R_i . p + t_i`` is off by less than
    ``E = 1e-6 (|p|_1 + |t|_1)``. A valid point is inside the box (half-width ``B``) with
    ``z > min_depth``, so ``|p|_1 <= sqrt(3) (z sqrt(1 + 2 B^2) + |t|)``; relative to ``z``
    the error is at most ``e = 1e-6 sqrt(3) (sqrt(1 + 2 B^2) + 2 |t| / min_depth)``. The
    depth test allows ``E`` at ``z`` near ``min_depth``; the box tests allow ``(B + 2) e``.
    """
    R = T.rotation
    t = T.translation
    box_half = max(abs(b) for b in plan.box)
    t_norm = sum(abs(c) for c in t.tolist())
    rel = 1e-6 * math.sqrt(3.0) * (math.sqrt(1.0 + 2.0 * box_half**2) + 2.0 * t_norm
                                   / min_depth)
    slack_z = _Z_SLACK_M + 10.0 * rel * min_depth + 1e-6 * abs(min_depth - float(t[2]))
    margin = 1e-6 + 10.0 * (box_half + 2.0) * rel
    R32 = R.astype(np.float32)
    t32 = t.astype(np.float32)

    def row(a: np.ndarray, b: np.ndarray, c: np.ndarray, i: int) -> F32:
        out: F32 = np.multiply(a, R32[i, 0])
        tmp = np.multiply(b, R32[i, 1])
        out += tmp
        np.multiply(c, R32[i, 2], out=tmp)
        out += tmp
        return out

    # stage 1 (all N): in front, on the rotated z alone (NaN compares False)
    z_rot = row(c0, c1, c2, 2)
    cand = np.flatnonzero(z_rot > np.float32(min_depth - float(t[2]) - slack_z))
    if cand.size == 0:
        return cand, z_rot[:0], z_rot[:0], z_rot[:0]
    # stage 2 (in front): inside the box, tested as x >= xmin z etc. (no division)
    q0, q1, q2 = c0.take(cand), c1.take(cand), c2.take(cand)
    z = z_rot.take(cand)
    z += t32[2]
    x = row(q0, q1, q2, 0)
    x += t32[0]
    y = row(q0, q1, q2, 1)
    y += t32[1]
    xmin, xmax, ymin, ymax = plan.box
    lim = np.multiply(z, np.float32(xmin - margin))
    keep = x >= lim
    tmp = np.empty(keep.shape[0], dtype=bool)
    np.multiply(z, np.float32(xmax + margin), out=lim)
    keep &= np.less_equal(x, lim, out=tmp)
    np.multiply(z, np.float32(ymin - margin), out=lim)
    keep &= np.greater_equal(y, lim, out=tmp)
    np.multiply(z, np.float32(ymax + margin), out=lim)
    keep &= np.less_equal(y, lim, out=tmp)
    sel = np.flatnonzero(keep)
    return cand.take(sel), q0.take(sel), q1.take(sel), q2.take(sel)


def _project_columns(c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, T: SE3,
                     camera: CameraModel, min_depth: float, max_depth: float) -> Projection:
    """Project points given as x, y, z columns (``(N,)`` each, float32 or float64, any
    strides, sensor frame) with ``T = T_cam_sensor``.

    No BLAS: a 3x3-by-3xN product is memory bound, and a threaded BLAS call this small costs
    more in thread wake-up (and its jitter) than the arithmetic.
    """
    n = int(c0.shape[0])
    w, h = camera.width, camera.height
    if n == 0:
        return Projection.empty(0, w, h)
    plan = _lens_plan(camera)
    R = T.rotation
    tx, ty, tz = T.translation.tolist()
    xmin, xmax, ymin, ymax = plan.box
    boxed = math.isfinite(max(abs(b) for b in plan.box))
    # non-finite points are culled below; inf * 0 = NaN warnings are expected
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if c0.dtype == np.float32 and boxed:
            # cull in float32 (half the memory traffic), then everything exact in float64 on
            # the few points left
            index, q0, q1, q2 = _cull_float32(c0, c1, c2, T, plan, min_depth)
            if index.size == 0:
                return Projection.empty(n, w, h)
            x = _dot_row(q0, q1, q2, R[0], tx)
            y = _dot_row(q0, q1, q2, R[1], ty)
            z = _dot_row(q0, q1, q2, R[2], tz)
            inv_z = np.divide(1.0, z)
            x *= inv_z  # OpenCV multiplies by 1/z as well
            y *= inv_z
        else:
            # stage 1 (all N): in front, on the rotated z alone (NaN compares False)
            zr = _dot_row(c0, c1, c2, R[2], 0.0)
            cand = np.flatnonzero(zr > min_depth - tz - _Z_SLACK_M)
            if cand.size == 0:
                return Projection.empty(n, w, h)
            q0, q1, q2 = c0.take(cand), c1.take(cand), c2.take(cand)
            x = _dot_row(q0, q1, q2, R[0], tx)
            y = _dot_row(q0, q1, q2, R[1], ty)
            z = zr.take(cand)
            z += tz
            inv_z = np.divide(1.0, z)
            x *= inv_z
            y *= inv_z
            # stage 2 (in front): the culling box (or at least finite coordinates)
            if boxed:
                keep = (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)
            else:
                keep = np.isfinite(x) & np.isfinite(y)
            sel = np.flatnonzero(keep)
            index = cand.take(sel)
            x, y, z = x.take(sel), y.take(sel), z.take(sel)
    # stage 3 (in the box): exact depth limits, lens validity, distortion, image bounds
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ok = z > min_depth
        tmp = np.empty(ok.shape[0], dtype=bool)
        ok &= np.less_equal(z, max_depth, out=tmp) if math.isfinite(max_depth) \
            else np.less(z, math.inf, out=tmp)
        r2 = x * x
        r2 += y * y
        if camera.distortion_model == "plumb_bob" and plan.check_domain:
            ok &= np.hypot(x, y) < plan.fold_limit
            ok &= _plumb_bob_det(camera, x, y) > 0.0
        elif camera.distortion_model == "equidistant" and plan.fold_limit < math.pi / 2:
            ok &= np.arctan(np.sqrt(r2)) < plan.fold_limit
        u, v = _distort_to_pixels(camera, x, y, r2)
        ok &= np.greater_equal(u, -0.5, out=tmp)
        ok &= np.less(u, w - 0.5, out=tmp)
        ok &= np.greater_equal(v, -0.5, out=tmp)
        ok &= np.less(v, h - 0.5, out=tmp)
    sel = np.flatnonzero(ok)
    if sel.size != u.shape[0]:
        index = index.take(sel)
        u, v, z = u.take(sel), v.take(sel), z.take(sel)
    # nearest pixel centre: floor(u + 0.5), and u + 0.5 >= 0 here so truncation is floor
    col = (u + 0.5).astype(np.int64)
    pixel = (v + 0.5).astype(np.int64)
    pixel *= w
    pixel += col
    return Projection(n, w, h, index, np.stack([u, v], axis=1), z, pixel)


def project_points(points_sensor: Any, T_cam_sensor: SE3, camera: CameraModel,
                   min_depth: float = 1e-3, max_depth: float = math.inf) -> Projection:
    """Project sensor points into a camera (with its lens distortion), fully vectorised.

    Args:
        points_sensor: ``(N, 3)`` points in the sensor frame, metres, any float dtype
            (float64 is used inside). Non-finite rows are never valid.
        T_cam_sensor: sensor -> camera optical frame (``T_base_cam^-1 @ T_base_sensor``).
        camera: intrinsics and distortion.
        min_depth: points with optical depth ``z <= min_depth`` (metres) are invalid.
        max_depth: points with ``z > max_depth`` are invalid.

    Returns:
        A :class:`Projection`: ``uv`` agrees with ``cv2.projectPoints`` (plumb_bob, none) /
        ``cv2.fisheye.projectPoints`` (equidistant) to ~1e-9 px; ``valid`` is True for points
        in front, inside the lens's valid field of view (as :meth:`CameraModel.project`) and
        inside the image (module docstring).

    Raises:
        ValueError: ``points_sensor`` is not ``(N, 3)``.
        TypeError: ``T_cam_sensor`` is not an SE3 or ``camera`` not a CameraModel.
    """
    if not isinstance(T_cam_sensor, SE3):
        raise TypeError(f"T_cam_sensor must be an SE3, got {type(T_cam_sensor).__name__}")
    if not isinstance(camera, CameraModel):
        raise TypeError(f"camera must be a CameraModel, got {type(camera).__name__}")
    c0, c1, c2 = _point_columns(points_sensor)
    return _project_columns(c0, c1, c2, T_cam_sensor, camera, float(min_depth),
                            float(max_depth))


# ---------------------------------------------------------------------------- images


def _image_size(projections: Sequence[Projection], height: int | None,
                width: int | None) -> tuple[int, int]:
    if not projections:
        if height is None or width is None:
            raise ValueError("height and width are needed when no projection is given")
        return int(height), int(width)
    h, w = projections[0].height, projections[0].width
    for p in projections:
        if (p.height, p.width) != (h, w):
            raise ValueError(f"projections for different image sizes: {w}x{h} and "
                             f"{p.width}x{p.height}")
    if (height is not None and int(height) != h) or (width is not None and int(width) != w):
        raise ValueError(f"image size {width}x{height} does not match the projection's "
                         f"{w}x{h}")
    return h, w


def _as_list(projection: Projection | Sequence[Projection]) -> list[Projection]:
    return [projection] if isinstance(projection, Projection) else list(projection)


def depth_image(projection: Projection | Sequence[Projection], height: int | None = None,
                width: int | None = None) -> F32:
    """Sparse z-buffered depth image: the nearest point's depth in each pixel.

    Args:
        projection: one projection, or several (e.g. several LiDARs) into the same camera,
            merged into one z-buffer.
        height, width: optional image size check (must equal the projections'); required
            when ``projection`` is an empty sequence.

    Returns:
        ``(H, W)`` float32 optical depth ``z``, metres; **NaN** where no point projects.
    """
    projs = _as_list(projection)
    h, w = _image_size(projs, height, width)
    img = np.full(h * w, np.nan, dtype=np.float32)
    projs = [p for p in projs if p.count]
    if projs:
        pixel = np.concatenate([p.pixel for p in projs]) if len(projs) > 1 else projs[0].pixel
        depth = np.concatenate([p.depth_valid for p in projs]).astype(np.float32)
        # A plain scatter leaves one of each pixel's depths there (the last written); only
        # points nearer than what their pixel got (a few: most pixels hold one point) need
        # the scatter-min, where fmin treats the NaN of an empty pixel as missing.
        img[pixel] = depth
        nearer = np.flatnonzero(img.take(pixel) > depth)
        if nearer.size:
            np.fmin.at(img, pixel.take(nearer), depth.take(nearer))
    return img.reshape(h, w)


def _splat(projection: Projection, radius: int) -> tuple[I64, I64]:
    """Pixels covered by each valid point's ``(2 r + 1)^2`` square, clipped to the image:
    ``(K,)`` flat pixel indices and ``(K,)`` positions (into the valid points) of the owner."""
    rows, cols = projection.rows_cols
    owner = np.arange(projection.count, dtype=np.int64)
    if radius == 0:
        return projection.pixel, owner
    offs = np.arange(-radius, radius + 1, dtype=np.int64)
    dr, dc = (a.ravel() for a in np.meshgrid(offs, offs, indexing="ij"))
    rr = (rows[:, None] + dr[None, :]).ravel()
    cc = (cols[:, None] + dc[None, :]).ravel()
    own = np.repeat(owner, dr.shape[0])
    inside = (rr >= 0) & (rr < projection.height) & (cc >= 0) & (cc < projection.width)
    return (rr * projection.width + cc)[inside], own[inside]


def radar_image(projection: Projection, doppler: Any, rcs: Any, radius_px: int = 0) -> F32:
    """Radar image: Doppler and RCS of the nearest radar point per pixel.

    Args:
        projection: projection of the radar points into the camera.
        doppler: ``(N,)`` radial velocity of every input point, m/s.
        rcs: ``(N,)`` radar cross-section of every input point (dBsm or the driver's unit).
        radius_px: each point fills the ``(2 r + 1)^2`` square of pixels around its own
            (clipped to the image); where squares overlap the nearest point (smallest depth)
            wins, ties going to the lower point index.

    Returns:
        ``(H, W, 2)`` float32: channel 0 Doppler, channel 1 RCS; **NaN** where no point.

    Raises:
        ValueError: ``doppler`` / ``rcs`` not ``(N,)``, or a negative radius.
    """
    dop = np.asarray(doppler, dtype=np.float32)
    cs = np.asarray(rcs, dtype=np.float32)
    for name, arr in (("doppler", dop), ("rcs", cs)):
        if arr.shape != (projection.n_points,):
            raise ValueError(f"{name} must have shape ({projection.n_points},), got "
                             f"{arr.shape}")
    if isinstance(radius_px, bool) or not isinstance(radius_px, int | np.integer) \
            or radius_px < 0:
        raise ValueError(f"radius_px must be an int >= 0, got {radius_px!r}")
    h, w = projection.height, projection.width
    out = np.full((h * w, 2), np.nan, dtype=np.float32)
    if projection.count:
        pix, own = _splat(projection, int(radius_px))
        # sort by pixel, then depth, then point index; the first of each pixel wins
        order = np.lexsort((own, projection.depth_valid[own], pix))
        pix, own = pix[order], own[order]
        first = np.ones(pix.shape[0], dtype=bool)
        first[1:] = pix[1:] != pix[:-1]
        pts = projection.index[own[first]]
        out[pix[first], 0] = dop[pts]
        out[pix[first], 1] = cs[pts]
    return out.reshape(h, w, 2)


def _check_scores(scores: Any, name: str) -> F32:
    arr = np.asarray(scores)
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be (H, W, C) scores, got shape {arr.shape}")
    return arr.astype(np.float32, copy=False)


def _score_pixels(projection: Projection, scores: F32) -> I64:
    """Flat index into a ``(h, w, C)`` score map (possibly a lower resolution than the image,
    e.g. a detector's stride-4 output) of each valid point's pixel."""
    sh, sw = scores.shape[:2]
    if (sh, sw) == (projection.height, projection.width):
        return projection.pixel
    # the same pixel-centre convention as CameraModel.scaled: c' = (c + 0.5) s - 0.5
    uv = projection.uv_valid
    col = np.floor(uv[:, 0] * (sw / projection.width) + 0.5 * (sw / projection.width))
    row = np.floor(uv[:, 1] * (sh / projection.height) + 0.5 * (sh / projection.height))
    col = np.clip(col, 0, sw - 1).astype(np.int64)
    row = np.clip(row, 0, sh - 1).astype(np.int64)
    out: I64 = row * sw + col
    return out


class Painted(NamedTuple):
    """Result of :func:`paint_points`.

    Attributes:
        features: ``(N, 3 + C)`` float32: R, G, B in [0, 1] then the C class scores; zeros
            for points that are not painted.
        painted: ``(N,)`` bool, True where the point projects into the image.
    """

    features: F32
    painted: B


def _gather_rgb(image: Any, pixel: I64, channels: tuple[int, int, int] = (0, 1, 2)) -> F32:
    """``(M, 3)`` float32 colour in [0, 1] of flat pixels of an ``(H, W, K)`` uint8 image."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    flat = np.ascontiguousarray(img).reshape(-1, img.shape[2])
    rows = np.take(flat, pixel, axis=0)
    if channels != tuple(range(3)) or rows.shape[1] != 3:
        rows = rows[:, list(channels)]
    out: F32 = np.divide(rows, np.float32(255.0), dtype=np.float32)
    return out


def _scatter_rows(out: F32, index: I64, rows: F32) -> None:
    """``out[index] = rows`` for ``(N, K)`` / ``(M, K)`` float32, as one 1-D scatter of
    ``4 K``-byte items (a 2-D fancy assignment copies element by element)."""
    item = np.dtype((np.void, 4 * out.shape[1]))
    src = np.ascontiguousarray(rows, dtype=np.float32)
    np.put(out.view(item).reshape(-1), index, src.view(item).reshape(-1))


def paint_points(projection: Projection, image: Any, class_scores: Any | None = None) -> Painted:
    """PointPainting: colour (and class scores) of the pixel each point projects to.

    Every point that projects is painted, occluded or not (as in PointPainting).

    Args:
        projection: the points' projection into the camera.
        image: ``(H, W, 3)`` uint8 RGB image of that camera (the projection's size).
        class_scores: ``(h, w, C)`` float scores of the camera detector, or None. A map
            smaller than the image (a strided detector output) is looked up at the scaled
            pixel position.

    Returns:
        :class:`Painted` with ``(N, 3 + C)`` features (``C = 0`` without scores).

    Raises:
        ValueError: the image is not ``(H, W, 3)`` uint8 of the projection's size, or the
            scores are not ``(h, w, C)``.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.shape != (projection.height, projection.width, 3):
        raise ValueError(f"image must be ({projection.height}, {projection.width}, 3) uint8, "
                         f"got {img.shape} {img.dtype}")
    scores = None if class_scores is None else _check_scores(class_scores, "class_scores")
    n_cls = 0 if scores is None else int(scores.shape[2])
    feats = np.zeros((projection.n_points, 3 + n_cls), dtype=np.float32)
    painted = np.zeros(projection.n_points, dtype=bool)
    if projection.count:
        idx = projection.index
        painted[idx] = True
        rows = _gather_rgb(img, projection.pixel)
        if scores is not None:
            vals = np.take(scores.reshape(-1, n_cls), _score_pixels(projection, scores), axis=0)
            rows = np.concatenate([rows, vals], axis=1)
        _scatter_rows(feats, idx, rows)
    return Painted(feats, painted)


# ---------------------------------------------------------------------------- fusion


@dataclass(frozen=True, eq=False)
class CameraFusion:
    """Everything data-level fusion made for one camera.

    Attributes:
        sensor: camera name.
        stamp_ns: the camera frame's stamp, ns (points were moved to it when de-skewing).
        depth: ``(H, W)`` float32 z-buffered LiDAR depth (metres, NaN = no point), all LiDARs.
        radar: ``(H, W, 2)`` float32 radar image (Doppler m/s, RCS; NaN = no point), all
            radars.
        rgb: ``(H, W, 3)`` uint8 RGB view of the frame, or None for a non-colour encoding.
        projections: sensor name -> :class:`Projection` of that LiDAR / radar's (finite)
            points into this camera (indices refer to the finite points, see
            :attr:`DataLevelOutput.point_index`).
    """

    sensor: str
    stamp_ns: int
    depth: F32
    radar: F32
    rgb: npt.NDArray[np.uint8] | None
    projections: Mapping[str, Projection]

    def __post_init__(self) -> None:
        self.depth.setflags(write=False)
        self.radar.setflags(write=False)

    def rgbdr(self) -> F32:
        """``(H, W, 6)`` float32 network input: R, G, B in [0, 1] (0 without colour), depth
        (m), Doppler, RCS, with 0 for empty pixels."""
        h, w = self.depth.shape
        out = np.zeros((h, w, 6), dtype=np.float32)
        if self.rgb is not None:
            out[:, :, :3] = self.rgb
            out[:, :, :3] *= np.float32(1.0 / 255.0)
        out[:, :, 3] = np.nan_to_num(self.depth, nan=0.0)
        out[:, :, 4:] = np.nan_to_num(self.radar, nan=0.0)
        return out


@dataclass(frozen=True, eq=False)
class DataLevelOutput:
    """Result of :meth:`DataLevelFusion.fuse`.

    Attributes:
        stamp_ns: the sensor set's stamp, ns.
        camera_names: cameras in the order their ids are used in ``painted['camera']``.
        cameras: camera name -> :class:`CameraFusion` (cameras that could be used).
        painted: LiDAR name -> ``(M,)`` structured array, one row per finite input point, in
            input order: ``x``, ``y``, ``z`` (float32, metres, the LiDAR frame as measured),
            ``r``, ``g``, ``b`` (float32 in [0, 1]), ``score_0`` .. ``score_{C-1}`` (float32,
            present when class scores were given), ``camera`` (int16 index into
            ``camera_names``, -1 = not painted), ``index`` (int64 row in the input cloud).
            Unpainted rows (and rows painted by a camera without scores) have zero features.
            Where several cameras see a point, the one seeing it closest to its optical axis
            paints it.
        point_index: sensor name -> ``(M,)`` int64 indices of the finite points of each LiDAR
            and radar in its input (``Projection.index`` refers to these rows).
        drops: reason -> count of dropped inputs (points, sensors, sensor pairs), e.g.
            ``nan_points``, ``camera_without_intrinsics``, ``deskew_unavailable``.
        notes: human-readable messages about each drop (for a throttled log / diagnostics).
    """

    stamp_ns: int
    camera_names: tuple[str, ...]
    cameras: Mapping[str, CameraFusion]
    painted: Mapping[str, np.ndarray]
    point_index: Mapping[str, I64]
    drops: Mapping[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass
class _Source:
    """One LiDAR / radar prepared for projection."""

    name: str
    T_base_sensor: SE3
    xyz: np.ndarray  # (M, 3) float32 / float64 finite points, sensor frame
    keep: I64  # (M,) rows in the input
    stamps: I64  # (M,) absolute point time, ns
    stamp_ns: int
    moved: dict[int, np.ndarray] = field(default_factory=dict)  # stamp -> de-skewed xyz


class DataLevelFusion:
    """Projects every LiDAR and radar of a sensor set into every camera.

    Args:
        rig: the sensor rig (extrinsics ``T_base_sensor``, camera intrinsics).
        config: see :class:`DataLevelConfig`.

    :meth:`fuse` never raises for degenerate sensor data (empty clouds, no cameras, NaN
    points, points behind a camera, missing intrinsics/extrinsics, odometry that does not
    cover a stamp): what cannot be used is dropped and counted in ``DataLevelOutput.drops``.
    """

    def __init__(self, rig: Rig, config: DataLevelConfig | None = None) -> None:
        if not isinstance(rig, Rig):
            raise TypeError(f"rig must be a Rig, got {type(rig).__name__}")
        cfg = DataLevelConfig() if config is None else config
        if not isinstance(cfg, DataLevelConfig):
            raise TypeError(f"config must be a DataLevelConfig, got {type(cfg).__name__}")
        self._rig = rig
        self._config = cfg

    @property
    def config(self) -> DataLevelConfig:
        return self._config

    # -------------------------------------------------------------- helpers

    def _spec_pose(self, name: str, kind: SensorKind, drops: dict[str, int],
                   notes: list[str]) -> SE3 | None:
        spec = self._rig.sensors.get(name)
        if spec is None or spec.kind is not kind:
            _count(drops, notes, "unknown_sensor",
                   f"{kind.value} {name!r} is not a {kind.value} of the rig: ignored")
            return None
        if spec.extrinsics is None:
            _count(drops, notes, "no_extrinsics",
                   f"{name!r} has no extrinsics yet (from_tf unresolved): ignored")
            return None
        return spec.extrinsics

    def _source(self, name: str, T: SE3, xyz_raw: np.ndarray, stamps: I64, stamp_ns: int,
                drops: dict[str, int], notes: list[str]) -> _Source:
        finite = np.isfinite(xyz_raw).all(axis=1)
        n_bad = int(finite.shape[0] - np.count_nonzero(finite))
        if n_bad:
            _count(drops, notes, "nan_points", f"{name!r}: {n_bad} non-finite point(s) dropped",
                   n_bad)
            keep = np.flatnonzero(finite)
            return _Source(name, T, xyz_raw[keep], keep, stamps[keep], stamp_ns)
        return _Source(name, T, xyz_raw, np.arange(finite.shape[0], dtype=np.int64), stamps,
                       stamp_ns)

    def _points_at(self, src: _Source, target_ns: int, odometry: OdometryBuffer | None,
                   camera: str, drops: dict[str, int], notes: list[str]) -> np.ndarray | None:
        """The source's points in its own frame at ``target_ns`` (de-skewed when enabled)."""
        if not self._config.deskew_to_camera or odometry is None or src.xyz.shape[0] == 0:
            return src.xyz
        if target_ns not in src.moved:
            try:
                src.moved[target_ns] = deskew_points(
                    src.xyz, src.stamps, src.T_base_sensor, odometry, target_ns)
            except EgoMotionError as exc:
                _count(drops, notes, "deskew_unavailable",
                       f"{src.name!r} -> {camera!r}: not projected, {exc}")
                return None
        return src.moved[target_ns]

    # -------------------------------------------------------------- fuse

    def fuse(self, sensor_set: SensorSet, odometry: OdometryBuffer | None = None,
             class_scores: Mapping[str, Any] | None = None) -> DataLevelOutput:
        """Data-level fusion of one synchronised sensor set.

        Args:
            sensor_set: the measurements.
            odometry: ego poses for de-skewing (``config.deskew_to_camera``) and Doppler
                compensation, or None.
            class_scores: camera name -> ``(h, w, C)`` float class scores of the camera
                detector (same ``C`` for every camera), or None.

        Returns:
            See :class:`DataLevelOutput`.

        Raises:
            ValueError: class score maps that are not ``(h, w, C)`` or disagree on ``C``
                (a caller bug, not a sensor fault).
        """
        cfg = self._config
        drops: dict[str, int] = {}
        notes: list[str] = []
        scores = self._check_class_scores(class_scores, sensor_set) if cfg.paint_scores \
            else {}
        n_cls = next(iter(scores.values())).shape[2] if scores else 0

        lidars: list[_Source] = []
        for name, cloud in sensor_set.lidars.items():
            T = self._spec_pose(name, SensorKind.LIDAR, drops, notes)
            if T is not None:
                lidars.append(self._source(name, T, _cloud_xyz(cloud), cloud.point_stamps_ns(),
                                           cloud.stamp_ns, drops, notes))
        radars: list[tuple[_Source, RadarScan, F32]] = []
        for name, scan in sensor_set.radars.items():
            T = self._spec_pose(name, SensorKind.RADAR, drops, notes)
            if T is None:
                continue
            doppler = self._radar_doppler(name, scan, T, sensor_set, odometry, drops, notes)
            if doppler is None:
                continue
            src = self._source(name, T, scan.xyz,
                               np.full(len(scan), scan.stamp_ns, np.int64), scan.stamp_ns,
                               drops, notes)
            radars.append((src, scan, doppler))

        cams: list[tuple[str, CameraFrame, CameraModel, SE3]] = []
        for name, frame in sensor_set.cameras.items():
            T_bc = self._spec_pose(name, SensorKind.CAMERA, drops, notes)
            if T_bc is None:
                continue
            model = frame.camera if frame.camera is not None else \
                self._rig.sensors[name].intrinsics
            if model is None:
                _count(drops, notes, "camera_without_intrinsics",
                       f"camera {name!r}: no intrinsics (rig or CameraInfo): ignored")
                continue
            if (model.width, model.height) != (frame.width, frame.height):
                _count(drops, notes, "image_size_mismatch",
                       f"camera {name!r}: image {frame.width}x{frame.height} but intrinsics "
                       f"for {model.width}x{model.height}: ignored")
                continue
            cams.append((name, frame, model, T_bc))
        camera_names = tuple(c[0] for c in cams)

        painted = {src.name: _painted_array(src, n_cls) for src in lidars}
        best_r2 = {src.name: np.full(src.xyz.shape[0], np.inf) for src in lidars}
        outputs: dict[str, CameraFusion] = {}
        for cam_id, (name, frame, model, T_bc) in enumerate(cams):
            T_cb = T_bc.inverse()
            projections: dict[str, Projection] = {}
            for src in lidars:
                pts = self._points_at(src, frame.stamp_ns, odometry, name, drops, notes)
                if pts is None:
                    continue
                proj = project_points(pts, T_cb @ src.T_base_sensor, model, cfg.min_depth_m,
                                      cfg.max_depth_m)
                projections[src.name] = proj
                self._paint(painted[src.name], best_r2[src.name], proj, model, frame,
                            scores.get(name), cam_id)
            depth = depth_image([projections[s.name] for s in lidars if s.name in projections],
                                model.height, model.width)
            radar_projs: list[Projection] = []
            radar_vals: list[tuple[F32, F32]] = []
            for src, scan, doppler in radars:
                pts = self._points_at(src, frame.stamp_ns, odometry, name, drops, notes)
                if pts is None:
                    continue
                proj = project_points(pts, T_cb @ src.T_base_sensor, model, cfg.min_depth_m,
                                      cfg.max_depth_m)
                projections[src.name] = proj
                radar_projs.append(proj)
                radar_vals.append((doppler[src.keep], scan.rcs[src.keep]))
            # all radars in one z-buffer: the nearest point wins whichever radar saw it
            merged = _concat_projections(radar_projs, model.width, model.height)
            radar = radar_image(
                merged, np.concatenate([d for d, _ in radar_vals] or [np.zeros(0, np.float32)]),
                np.concatenate([c for _, c in radar_vals] or [np.zeros(0, np.float32)]),
                cfg.radar_splat_radius_px)
            rgb = frame.rgb() if frame.encoding in _COLOUR_ENCODINGS else None
            outputs[name] = CameraFusion(name, frame.stamp_ns, depth, radar, rgb,
                                         MappingProxyType(projections))

        for arr in painted.values():
            arr.setflags(write=False)
        point_index = {src.name: src.keep for src in lidars}
        point_index.update({src.name: src.keep for src, _, _ in radars})
        return DataLevelOutput(
            stamp_ns=sensor_set.stamp_ns, camera_names=camera_names,
            cameras=MappingProxyType(outputs), painted=MappingProxyType(painted),
            point_index=MappingProxyType(point_index), drops=MappingProxyType(drops),
            notes=tuple(notes))

    def _paint(self, out: np.ndarray, best_r2: F64, proj: Projection, model: CameraModel,
               frame: CameraFrame, scores: F32 | None, cam_id: int) -> None:
        """Paint the points this camera sees more centrally than any camera before.

        Centrality: the squared distorted normalized radius
        ``((u - cx) / fx)^2 + ((v - cy) / fy)^2`` (monotonic in the incidence angle inside
        the lens's valid region), so a point in the overlap of two cameras takes the colour
        of the one with less distortion and blur.
        """
        if proj.count == 0:
            return
        uv = proj.uv_valid
        r2 = np.square((uv[:, 0] - model.cx) / model.fx)
        r2 += np.square((uv[:, 1] - model.cy) / model.fy)
        sel = np.flatnonzero(r2 < best_r2[proj.index])
        if sel.size == 0:
            return
        idx = proj.index[sel]
        best_r2[idx] = r2[sel]
        out["camera"][idx] = cam_id
        pixel = proj.pixel[sel]
        if self._config.paint_rgb and frame.encoding in _RGB_CHANNELS:
            rgb = _gather_rgb(frame.image, pixel, _RGB_CHANNELS[frame.encoding])
            for k, ch in enumerate("rgb"):
                out[ch][idx] = rgb[:, k]
        else:  # a later camera may take over a point from one that had colour
            for ch in "rgb":
                out[ch][idx] = 0.0
        n_cls = sum(1 for n in out.dtype.names or () if n.startswith("score_"))
        if n_cls:
            if scores is None:
                vals = np.zeros((idx.shape[0], n_cls), dtype=np.float32)
            else:
                sub = Projection(proj.n_points, proj.width, proj.height, idx,
                                 uv[sel], proj.depth_valid[sel], pixel)
                vals = np.take(scores.reshape(-1, n_cls), _score_pixels(sub, scores), axis=0)
            for k in range(n_cls):
                out[f"score_{k}"][idx] = vals[:, k]

    def _check_class_scores(self, class_scores: Mapping[str, Any] | None,
                            sensor_set: SensorSet) -> dict[str, F32]:
        if not class_scores:
            return {}
        out = {name: _check_scores(val, f"class_scores[{name!r}]")
               for name, val in class_scores.items() if name in sensor_set.cameras}
        channels = {name: int(v.shape[2]) for name, v in out.items()}
        if len(set(channels.values())) > 1:
            raise ValueError(f"class score maps disagree on the number of classes: {channels}")
        return out

    def _radar_doppler(self, name: str, scan: RadarScan, T: SE3, sensor_set: SensorSet,
                       odometry: OdometryBuffer | None, drops: dict[str, int],
                       notes: list[str]) -> F32 | None:
        if not self._config.doppler_ego_compensation:
            return scan.doppler
        ego = None
        if odometry is not None:
            try:
                ego = odometry.state_at(scan.stamp_ns)
            except EgoMotionError:
                ego = None
        if ego is None:
            ego = sensor_set.ego  # synchronised with the scan: the best estimate there is
        if ego is None:
            _count(drops, notes, "radar_without_ego",
                   f"radar {name!r}: Doppler compensation needs the ego state: scan ignored")
            return None
        return compensate_doppler(scan, T, ego)


def _count(drops: dict[str, int], notes: list[str], reason: str, message: str,
           count: int = 1) -> None:
    drops[reason] = drops.get(reason, 0) + count
    notes.append(message)


def _cloud_xyz(cloud: PointCloud) -> np.ndarray:
    """``(N, 3)`` positions of a cloud, metres, its frame: float32 when the x, y, z fields
    all are (the fast projection path), else float64."""
    dtype = cloud.points.dtype
    f32 = all(dtype[n] == np.float32 for n in ("x", "y", "z"))
    out = np.empty((len(cloud), 3), dtype=np.float32 if f32 else np.float64)
    for k, name in enumerate(("x", "y", "z")):
        out[:, k] = cloud.points[name]
    return out


def _concat_projections(projs: Sequence[Projection], width: int, height: int) -> Projection:
    """One projection of the concatenated inputs of several (same camera)."""
    if len(projs) == 1:
        return projs[0]
    if not projs:
        return Projection.empty(0, width, height)
    offsets = np.cumsum([0] + [p.n_points for p in projs[:-1]])
    return Projection(
        int(sum(p.n_points for p in projs)), width, height,
        np.concatenate([p.index + off for p, off in zip(projs, offsets, strict=True)]),
        np.concatenate([p.uv_valid for p in projs]),
        np.concatenate([p.depth_valid for p in projs]),
        np.concatenate([p.pixel for p in projs]))


def _painted_array(src: _Source, n_cls: int) -> np.ndarray:
    """Unpainted structured array of a LiDAR's finite points (see DataLevelOutput)."""
    names = ["x", "y", "z", "r", "g", "b", *(f"score_{k}" for k in range(n_cls)), "camera",
             "index"]
    formats = ["<f4"] * (6 + n_cls) + ["<i2", "<i8"]
    out = np.zeros(src.xyz.shape[0], dtype=np.dtype({"names": names, "formats": formats}))
    for k, name in enumerate(("x", "y", "z")):
        out[name] = src.xyz[:, k]
    out["camera"] = -1
    out["index"] = src.keep
    return out


__all__ = [
    "CameraFusion",
    "DataLevelConfig",
    "DataLevelFusion",
    "DataLevelOutput",
    "Painted",
    "Projection",
    "depth_image",
    "paint_points",
    "project_points",
    "radar_image",
]
