"""Camera intrinsics and lens distortion (numpy only), compatible with OpenCV.

Conventions:
- Points are in the camera *optical* frame (REP 103): z forward, x right, y down, metres.
- Pixel coordinates follow OpenCV / ROS ``CameraInfo``: ``u`` to the right, ``v`` down,
  the centre of the top-left pixel is ``(0, 0)``.
- "Normalized" coordinates are ``(x / z, y / z)`` before distortion (undistorted) or after
  it (distorted); pixels are ``u = fx * x_d + cx``, ``v = fy * y_d + cy`` (no skew).

Distortion models (the same formulas as OpenCV, so ``project`` matches
``cv2.projectPoints`` / ``cv2.fisheye.projectPoints``):

- ``"none"``: pinhole, ``D = ()``.
- ``"plumb_bob"``: Brown-Conrady, ``D = (k1, k2, p1, p2, k3)``::

      r2 = x^2 + y^2,  radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3
      x_d = x radial + 2 p1 x y + p2 (r2 + 2 x^2)
      y_d = y radial + p1 (r2 + 2 y^2) + 2 p2 x y

- ``"equidistant"``: OpenCV fisheye, ``D = (k1, k2, k3, k4)``::

      r = |(x, y)|,  theta = atan(r)
      theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)
      (x_d, y_d) = (theta_d / r) (x, y)

Valid field of view: a polynomial lens model is only meaningful while its radial mapping is
monotonic. Past the first point where ``d r_d / d r`` (plumb_bob, in the normalized radius
``r``) or ``d theta_d / d theta`` (equidistant) reaches zero, the mapping folds back and points
far outside the real field of view would land inside the image. :meth:`CameraModel.project`
marks such points invalid, and :meth:`CameraModel.undistort` only returns solutions inside
that region. Tangential terms (``p1``, ``p2``) are not part of this check; they are small for
real lenses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.checks import is_real
from mm_perception.core.errors import ConfigError

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

#: distortion model name -> number of coefficients in ``D``
DISTORTION_MODELS: dict[str, int] = {"none": 0, "plumb_bob": 5, "equidistant": 4}
_COEFF_NAMES = {"none": "", "plumb_bob": "k1, k2, p1, p2, k3", "equidistant": "k1, k2, k3, k4"}

#: Newton iterations for the inverse distortion (quadratic convergence: a handful are used)
_MAX_ITER = 60
#: a row of :meth:`CameraModel.undistort` is accepted when re-distorting it reproduces the
#: input within this (normalized) distance; otherwise it is NaN
_ACCEPT_RESIDUAL = 1e-10


def _smallest_positive_root(coeffs_low_to_high: list[float]) -> float:
    """Smallest positive real root of ``sum(c_i s^i)`` (``c_0 = 1``), or ``inf`` if none."""
    coeffs = list(coeffs_low_to_high)
    # A negligible leading coefficient only adds a root at an enormous s (far outside any
    # lens's field of view) and would overflow the companion matrix (e.g. 5e-324).
    while len(coeffs) > 1 and abs(coeffs[-1]) < 1e-12:
        coeffs.pop()
    if len(coeffs) <= 1:
        return math.inf
    roots = np.roots(coeffs[::-1])
    real = roots[np.abs(roots.imag) <= 1e-9 * np.maximum(1.0, np.abs(roots))].real
    positive = real[real > 0.0]
    return float(positive.min()) if positive.size else math.inf


def _as_points(values: Any, cols: int, name: str) -> F64:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != cols:
        raise ValueError(f"{name} must have shape (N, {cols}), got {arr.shape}")
    return arr


@dataclass(frozen=True)
class CameraModel:
    """A calibrated camera: pinhole intrinsics plus an OpenCV-compatible distortion model.

    Attributes:
        width, height: image size, pixels (> 0).
        fx, fy: focal lengths, pixels (> 0).
        cx, cy: principal point, pixels.
        distortion_model: ``"none"``, ``"plumb_bob"`` or ``"equidistant"``.
        D: distortion coefficients; exactly 0 / 5 ``(k1, k2, p1, p2, k3)`` /
            4 ``(k1, k2, k3, k4)`` values for the models above.

    Raises:
        ConfigError: on a non-positive size or focal length, a non-finite value, an unknown
            model or a wrong coefficient count; the message names the field and value.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "none"
    D: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            val = getattr(self, name)
            if not isinstance(val, int | np.integer) or isinstance(val, bool) or val <= 0:
                raise ConfigError(f"CameraModel.{name} must be a positive integer (pixels), "
                                  f"got {val!r}")
            object.__setattr__(self, name, int(val))
        for name in ("fx", "fy", "cx", "cy"):
            val = getattr(self, name)
            if not is_real(val) or not math.isfinite(float(val)):
                raise ConfigError(f"CameraModel.{name} must be a finite number, got {val!r}")
            if name in ("fx", "fy") and float(val) <= 0.0:
                raise ConfigError(f"CameraModel.{name} must be > 0 pixels, got {val!r}")
            object.__setattr__(self, name, float(val))
        model = self.distortion_model
        if model not in DISTORTION_MODELS:
            raise ConfigError(f"CameraModel.distortion_model must be one of "
                              f"{sorted(DISTORTION_MODELS)}, got {model!r}")
        try:
            coeffs = tuple(self.D)
        except TypeError:
            raise ConfigError(f"CameraModel.D must be a sequence of numbers, "
                              f"got {self.D!r}") from None
        for c in coeffs:
            if not is_real(c) or not math.isfinite(float(c)):
                raise ConfigError(f"CameraModel.D must hold finite numbers, got {list(coeffs)!r}")
        expected = DISTORTION_MODELS[model]
        if len(coeffs) != expected:
            what = f" ({_COEFF_NAMES[model]})" if expected else ""
            raise ConfigError(f"CameraModel.D: distortion model {model!r} needs exactly "
                              f"{expected} coefficient(s){what}, got {len(coeffs)}: "
                              f"{list(coeffs)!r}")
        object.__setattr__(self, "D", tuple(float(c) for c in coeffs))

    # ------------------------------------------------------------------ properties

    @property
    def K(self) -> F64:  # noqa: N802 (the literature's name)
        """``(3, 3)`` float64 intrinsic matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels (the OpenCV ``dsize`` order)."""
        return self.width, self.height

    @cached_property
    def _fold_limit(self) -> float:
        """Where the radial mapping stops being monotonic.

        plumb_bob: normalized radius ``r`` (``inf`` if never); equidistant: incidence angle
        ``theta`` in radians, at most pi/2 (z > 0); none: ``inf``.
        """
        if self.distortion_model == "plumb_bob":
            k1, k2, _, _, k3 = self.D
            # d/dr [r (1 + k1 r^2 + k2 r^4 + k3 r^6)] = 1 + 3 k1 s + 5 k2 s^2 + 7 k3 s^3, s = r^2
            s = _smallest_positive_root([1.0, 3 * k1, 5 * k2, 7 * k3])
            return math.sqrt(s)
        if self.distortion_model == "equidistant":
            k1, k2, k3, k4 = self.D
            s = _smallest_positive_root([1.0, 3 * k1, 5 * k2, 7 * k3, 9 * k4])
            return min(math.sqrt(s), math.pi / 2)
        return math.inf

    @property
    def max_incidence_angle(self) -> float:
        """Largest angle (radians) between a ray and the optical axis for which the lens model
        is valid (monotonic); pi/2 when only ``z > 0`` limits it."""
        if self.distortion_model == "plumb_bob":
            return float(math.atan(self._fold_limit))
        if self.distortion_model == "equidistant":
            return self._fold_limit
        return math.pi / 2

    # ------------------------------------------------------------------ distortion

    def distort(self, xy_norm: Any) -> F64:
        """Apply lens distortion to normalized coordinates.

        Args:
            xy_norm: ``(N, 2)`` undistorted normalized coordinates ``(x/z, y/z)``.

        Returns:
            ``(N, 2)`` float64 distorted normalized coordinates (no validity check; see
            :meth:`project` for that). NaN in, NaN out.
        """
        xy = _as_points(xy_norm, 2, "xy_norm")
        if self.distortion_model == "none":
            return xy.copy()
        x, y = xy[:, 0], xy[:, 1]
        if self.distortion_model == "plumb_bob":
            k1, k2, p1, p2, k3 = self.D
            r2 = x * x + y * y
            radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
            xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
            yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
            return np.stack([xd, yd], axis=1)
        r = np.hypot(x, y)
        theta_d = self._theta_d(np.arctan(r))
        # same small-radius guard as OpenCV (theta_d / r -> 1 as r -> 0)
        big = r > 1e-8
        scale = np.divide(theta_d, r, out=np.ones_like(r), where=big)
        return xy * scale[:, None]

    def _theta_d(self, theta: F64) -> F64:
        k1, k2, k3, k4 = self.D
        t2 = theta * theta
        return theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))

    def _dtheta_d(self, theta: F64) -> F64:
        k1, k2, k3, k4 = self.D
        t2 = theta * theta
        return 1.0 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))

    def undistort(self, xy_dist: Any) -> F64:
        """Invert the lens distortion (iteratively) for normalized coordinates.

        Only solutions inside the model's valid region are returned (see the module
        docstring); a row is accepted when re-distorting the result reproduces the input to
        1e-10 (normalized units).

        Args:
            xy_dist: ``(N, 2)`` distorted normalized coordinates
                ``((u - cx) / fx, (v - cy) / fy)``.

        Returns:
            ``(N, 2)`` float64 undistorted normalized coordinates; rows that are non-finite,
            outside the valid region or did not converge are NaN (never a wrong value).
        """
        xy_d = _as_points(xy_dist, 2, "xy_dist")
        if self.distortion_model == "none":
            return xy_d.copy()
        if self.distortion_model == "equidistant":
            return self._undistort_fisheye(xy_d)
        return self._undistort_plumb_bob(xy_d)

    def _undistort_fisheye(self, xy_d: F64) -> F64:
        # 1-D problem in the incidence angle: theta_d(theta) = |xy_d| on [0, theta_max],
        # where theta_d is monotonic; safeguarded Newton (falls back to bisection).
        theta_max = self._fold_limit
        target = np.hypot(xy_d[:, 0], xy_d[:, 1])
        finite = np.isfinite(target)
        target = np.where(finite, target, 0.0)
        lo = np.zeros_like(target)
        hi = np.full_like(target, theta_max)
        theta = np.clip(target, 0.0, theta_max)
        for _ in range(_MAX_ITER * 2):
            g = self._theta_d(theta) - target
            if np.all(np.abs(g) <= 1e-15 * (1.0 + target)):
                break
            lo = np.where(g < 0.0, theta, lo)
            hi = np.where(g > 0.0, theta, hi)
            dg = self._dtheta_d(theta)
            with np.errstate(divide="ignore", invalid="ignore"):
                newton = theta - g / dg
            inside = np.isfinite(newton) & (newton > lo) & (newton < hi)
            theta = np.where(inside, newton, 0.5 * (lo + hi))
        residual = np.abs(self._theta_d(theta) - target)
        ok = finite & (residual <= _ACCEPT_RESIDUAL) & (theta < theta_max)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(target > 1e-8, np.tan(theta) / target, 1.0)
        out = xy_d * scale[:, None]
        out[~ok] = np.nan
        return out

    def _plumb_bob_jacobian(self, xy: F64) -> tuple[F64, F64, F64]:
        """Entries ``a = dxd/dx, b = dxd/dy = dyd/dx, d = dyd/dy`` of the (symmetric) Jacobian
        of the plumb_bob distortion at ``xy`` ``(N, 2)``."""
        k1, k2, p1, p2, k3 = self.D
        x, y = xy[:, 0], xy[:, 1]
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial = k1 + r2 * (2.0 * k2 + r2 * 3.0 * k3)  # d radial / d r2
        a = radial + 2.0 * x * x * d_radial + 2.0 * p1 * y + 6.0 * p2 * x
        b = 2.0 * x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y
        d = radial + 2.0 * y * y * d_radial + 6.0 * p1 * y + 2.0 * p2 * x
        return a, b, d

    def _plumb_bob_in_domain(self, xy: F64) -> B:
        """``(N,)`` bool: ``xy`` lies where the plumb_bob mapping is one-to-one: inside the
        radial fold (``r < r_max``) and, because the tangential terms can move the fold a
        little inwards, where the Jacobian determinant is still positive. NaN -> False."""
        a, b, d = self._plumb_bob_jacobian(xy)
        with np.errstate(invalid="ignore"):
            return (np.hypot(xy[:, 0], xy[:, 1]) < self._fold_limit) & (a * d - b * b > 0.0)

    def _undistort_plumb_bob(self, xy_d: F64) -> F64:
        # 2-D Newton with an analytic Jacobian and a backtracking line search that keeps the
        # iterate inside the monotonic region and makes the residual decrease.
        finite = np.all(np.isfinite(xy_d), axis=1)
        target = np.where(finite[:, None], xy_d, 0.0)
        xy = target.copy()
        for _ in range(64):  # start inside the valid region (the origin always is)
            outside = ~self._plumb_bob_in_domain(xy)
            if not np.any(outside):
                break
            xy[outside] *= 0.5

        res = self.distort(xy) - target
        norm = np.hypot(res[:, 0], res[:, 1])
        stalled = np.zeros(xy.shape[0], dtype=bool)  # no further decrease possible
        for _ in range(_MAX_ITER):
            active = (norm > 1e-14 * (1.0 + np.abs(target).max(axis=1))) & ~stalled
            if not np.any(active):
                break
            a, b, d = self._plumb_bob_jacobian(xy)
            det = a * d - b * b  # the Jacobian is symmetric
            with np.errstate(divide="ignore", invalid="ignore"):
                step = -np.stack([d * res[:, 0] - b * res[:, 1],
                                  a * res[:, 1] - b * res[:, 0]], axis=1) / det[:, None]
            step[~active | ~np.all(np.isfinite(step), axis=1)] = 0.0
            todo = active & np.any(step != 0.0, axis=1)
            stalled |= active & ~todo
            for _ in range(40):
                if not np.any(todo):
                    break
                cand = xy[todo] + step[todo]
                cand_res = self.distort(cand) - target[todo]
                cand_norm = np.hypot(cand_res[:, 0], cand_res[:, 1])
                good = self._plumb_bob_in_domain(cand) & (cand_norm < norm[todo])
                idx = np.flatnonzero(todo)
                take = idx[good]
                xy[take] = cand[good]
                res[take] = cand_res[good]
                norm[take] = cand_norm[good]
                todo[take] = False
                step[todo] *= 0.5
            stalled |= todo
        ok = finite & (norm <= _ACCEPT_RESIDUAL) & self._plumb_bob_in_domain(xy)
        out = xy.copy()
        out[~ok] = np.nan
        return out

    # ------------------------------------------------------------------ projection

    def project(self, points_cam: Any, min_depth: float = 1e-3,
                in_image: bool = False) -> tuple[F64, B]:
        """Project 3D points to pixels (with distortion).

        Args:
            points_cam: ``(N, 3)`` points in the camera optical frame, metres (any float dtype).
            min_depth: points with ``z <= min_depth`` (metres) are invalid.
            in_image: also require ``0 <= u < width`` and ``0 <= v < height``.

        Returns:
            ``uv``: ``(N, 2)`` float64 pixels; NaN rows where the projection is undefined
            (non-finite point, ``z <= min_depth``, outside the lens model's valid field of
            view). With ``in_image`` rows outside the image keep their finite ``uv``.
            ``valid``: ``(N,)`` bool, True where ``uv`` is a trustworthy image position (and,
            with ``in_image``, inside the image).
        """
        pts = _as_points(points_cam, 3, "points_cam")
        z = pts[:, 2]
        valid = np.all(np.isfinite(pts), axis=1) & (z > min_depth)
        xy = np.full((pts.shape[0], 2), np.nan)
        np.divide(pts[:, :2], z[:, None], out=xy, where=valid[:, None])
        if self.distortion_model == "plumb_bob":
            valid &= self._plumb_bob_in_domain(xy)
        elif self.distortion_model == "equidistant":
            valid &= np.arctan(np.hypot(xy[:, 0], xy[:, 1])) < self._fold_limit
        xy[~valid] = np.nan
        xy_d = self.distort(xy)
        uv = np.stack([self.fx * xy_d[:, 0] + self.cx, self.fy * xy_d[:, 1] + self.cy], axis=1)
        if in_image:
            with np.errstate(invalid="ignore"):
                valid &= ((uv[:, 0] >= 0.0) & (uv[:, 0] < self.width)
                          & (uv[:, 1] >= 0.0) & (uv[:, 1] < self.height))
        return uv, valid

    def unproject(self, uv: Any, depth: Any | None = None) -> F64:
        """Back-project pixels to rays or points in the optical frame.

        Args:
            uv: ``(N, 2)`` pixel coordinates.
            depth: None for rays, or ``(N,)`` depths along the optical axis (``z``), metres.

        Returns:
            ``(N, 3)`` float64 in the optical frame: unit-z rays ``(x, y, 1)`` when ``depth`` is
            None, else the points ``depth * (x, y, 1)``. Rows whose pixel cannot be undistorted
            (outside the valid lens region, non-finite) are NaN.
        """
        pix = _as_points(uv, 2, "uv")
        xy_d = np.stack([(pix[:, 0] - self.cx) / self.fx, (pix[:, 1] - self.cy) / self.fy],
                        axis=1)
        xy = self.undistort(xy_d)
        rays = np.concatenate([xy, np.ones((xy.shape[0], 1))], axis=1)
        rays[np.isnan(xy).any(axis=1)] = np.nan
        if depth is None:
            return rays
        d = np.asarray(depth, dtype=np.float64)
        if d.shape != (pix.shape[0],):
            raise ValueError(f"depth must have shape ({pix.shape[0]},), got {d.shape}")
        return rays * d[:, None]

    def scaled(self, factor: float) -> CameraModel:
        """The same camera for an image resized by ``factor`` (as ``cv2.resize`` does).

        The new size is ``round(width * factor) x round(height * factor)``; the exact per-axis
        ratios of new to old size are used, and the principal point keeps the pixel-centre
        convention: ``cx' = (cx + 0.5) * sx - 0.5``. Distortion coefficients are unchanged
        (they act on normalized coordinates).

        Raises:
            ConfigError: ``factor`` not positive and finite, or the image would vanish.
        """
        if not is_real(factor) or not math.isfinite(float(factor)) or factor <= 0:
            raise ConfigError(f"scale factor must be a positive finite number, got {factor!r}")
        new_w, new_h = round(self.width * factor), round(self.height * factor)
        if new_w < 1 or new_h < 1:
            raise ConfigError(f"scale factor {factor!r} shrinks the {self.width}x{self.height} "
                              f"image to nothing")
        sx, sy = new_w / self.width, new_h / self.height
        return CameraModel(new_w, new_h, self.fx * sx, self.fy * sy,
                           (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                           self.distortion_model, self.D)


__all__ = ["DISTORTION_MODELS", "CameraModel"]
