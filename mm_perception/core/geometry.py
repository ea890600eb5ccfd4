"""Rigid-body transforms (SE(3)) and rotation conversions, numpy only.

Conventions:
- Quaternions are ``(x, y, z, w)`` (the ROS / ``geometry_msgs`` order), unit norm.
- Roll-pitch-yaw is the ROS fixed-axis convention: ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``
  (the same as ``tf2::Quaternion::setRPY``), angles in radians.
- ``SE3`` named ``T_a_b`` maps points expressed in frame ``b`` into frame ``a``:
  ``p_a = T_a_b.apply(p_b)``; composition ``T_a_c = T_a_b @ T_b_c``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]
_EYE3 = np.eye(3)


def _as_f64(values: Any, shape: tuple[int, ...], name: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf: {arr.tolist()}")
    return arr


def quaternion_to_matrix(q: Any) -> npt.NDArray[np.float64]:
    """Rotation matrix from a quaternion.

    Args:
        q: ``(4,)`` or ``(N, 4)`` quaternion(s) ``(x, y, z, w)``; normalised here, must be
            non-zero.

    Returns:
        ``(3, 3)`` or ``(N, 3, 3)`` float64 rotation matrices.
    """
    quat = np.asarray(q, dtype=np.float64)
    single = quat.ndim == 1
    quat = np.atleast_2d(quat)
    if quat.shape[-1] != 4:
        raise ValueError(f"quaternion must have 4 components (x, y, z, w), got {quat.shape}")
    norm = np.linalg.norm(quat, axis=-1, keepdims=True)
    if np.any(~np.isfinite(norm)) or np.any(norm < 1e-9):
        raise ValueError(f"quaternion must be finite and non-zero, got {quat.tolist()}")
    x, y, z, w = np.moveaxis(quat / norm, -1, 0)
    rot = np.empty((quat.shape[0], 3, 3))
    rot[:, 0, 0] = 1 - 2 * (y * y + z * z)
    rot[:, 0, 1] = 2 * (x * y - z * w)
    rot[:, 0, 2] = 2 * (x * z + y * w)
    rot[:, 1, 0] = 2 * (x * y + z * w)
    rot[:, 1, 1] = 1 - 2 * (x * x + z * z)
    rot[:, 1, 2] = 2 * (y * z - x * w)
    rot[:, 2, 0] = 2 * (x * z - y * w)
    rot[:, 2, 1] = 2 * (y * z + x * w)
    rot[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return rot[0] if single else rot


def matrix_to_quaternion(rot: Any) -> npt.NDArray[np.float64]:
    """Quaternion ``(x, y, z, w)`` with ``w >= 0`` from a ``(3, 3)`` rotation matrix."""
    m = _as_f64(rot, (3, 3), "rotation")
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    # Shepperd's method: pick the largest diagonal term for numerical stability.
    if trace > 0:
        s = np.sqrt(trace + 1.0) * 2
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    quat = np.asarray(q, dtype=np.float64)
    quat /= np.linalg.norm(quat)
    return -quat if quat[3] < 0 else quat


def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> npt.NDArray[np.float64]:
    """``(3, 3)`` rotation ``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (radians, ROS fixed axes)."""
    cr, sr = np.cos(roll), np.sin(roll)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def matrix_to_rpy(rot: Any) -> tuple[float, float, float]:
    """Roll, pitch, yaw (radians) of a ``(3, 3)`` rotation; inverse of :func:`rpy_to_matrix`."""
    m = _as_f64(rot, (3, 3), "rotation")
    pitch = float(np.arcsin(np.clip(-m[2, 0], -1.0, 1.0)))
    if abs(m[2, 0]) < 1 - 1e-9:
        roll = float(np.arctan2(m[2, 1], m[2, 2]))
        yaw = float(np.arctan2(m[1, 0], m[0, 0]))
    else:  # gimbal lock: yaw and roll are coupled; put it all in yaw
        roll = 0.0
        yaw = float(np.arctan2(-m[0, 1], m[1, 1]))
    return roll, pitch, yaw


def yaw_of(rot: Any) -> float:
    """Heading (rotation about z, radians) of a ``(3, 3)`` rotation, from its x axis."""
    m = np.asarray(rot, dtype=np.float64)
    return float(np.arctan2(m[1, 0], m[0, 0]))


def slerp(q0: Any, q1: Any, alpha: Any) -> npt.NDArray[np.float64]:
    """Spherical linear interpolation between two quaternions ``(x, y, z, w)``.

    Args:
        q0, q1: ``(4,)`` unit quaternions.
        alpha: scalar or ``(N,)`` interpolation fractions (0 -> q0, 1 -> q1; values outside
            [0, 1] extrapolate along the same great circle).

    Returns:
        ``(4,)`` or ``(N, 4)`` float64 unit quaternions.
    """
    a = np.asarray(q0, dtype=np.float64) / np.linalg.norm(q0)
    b = np.asarray(q1, dtype=np.float64) / np.linalg.norm(q1)
    t = np.asarray(alpha, dtype=np.float64)
    dot = float(np.dot(a, b))
    if dot < 0.0:  # take the short way round
        b, dot = -b, -dot
    if dot > 1.0 - 1e-9:
        out = a[None, :] + np.atleast_1d(t)[:, None] * (b - a)[None, :]
    else:
        theta = np.arccos(dot)
        tt = np.atleast_1d(t)[:, None]
        out = (np.sin((1 - tt) * theta) * a + np.sin(tt * theta) * b) / np.sin(theta)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out[0] if t.ndim == 0 else out


@dataclass(frozen=True)
class SE3:
    """A rigid transform ``T_a_b`` (rotation + translation, float64).

    Attributes:
        rotation: ``(3, 3)`` float64 orthonormal matrix, det = +1.
        translation: ``(3,)`` float64, metres, origin of ``b`` expressed in ``a``.
    """

    rotation: npt.NDArray[np.float64] = field(default_factory=lambda: np.eye(3))
    translation: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        rot = _as_f64(self.rotation, (3, 3), "rotation")
        trans = _as_f64(self.translation, (3,), "translation")
        # cheap proper-rotation test (SE3 is built in hot loops): orthonormal and det = +1
        (a, b, c), (d, e, f), (g, h, i) = rot.tolist()  # det on floats: np.cross costs 20 us
        if (float(np.abs(rot @ rot.T - _EYE3).max()) > 1e-6
                or a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g) < 0):
            raise ValueError(f"rotation is not a proper rotation matrix: {rot.tolist()}")
        rot.setflags(write=False)
        trans.setflags(write=False)
        object.__setattr__(self, "rotation", rot)
        object.__setattr__(self, "translation", trans)

    @classmethod
    def identity(cls) -> SE3:
        return cls()

    @classmethod
    def from_quaternion(cls, quaternion_xyzw: Any, translation: Any = (0.0, 0.0, 0.0)) -> SE3:
        """From a quaternion ``(x, y, z, w)`` (normalised here) and a translation in metres."""
        return cls(quaternion_to_matrix(_as_f64(quaternion_xyzw, (4,), "quaternion")),
                   _as_f64(translation, (3,), "translation"))

    @classmethod
    def from_rpy(cls, roll: float, pitch: float, yaw: float,
                 translation: Any = (0.0, 0.0, 0.0)) -> SE3:
        """From roll, pitch, yaw (radians, ROS fixed axes) and a translation in metres."""
        return cls(rpy_to_matrix(roll, pitch, yaw), _as_f64(translation, (3,), "translation"))

    @classmethod
    def from_matrix(cls, matrix: Any) -> SE3:
        """From a ``(4, 4)`` homogeneous matrix (last row must be ``0 0 0 1``)."""
        m = _as_f64(matrix, (4, 4), "matrix")
        if not np.allclose(m[3], [0, 0, 0, 1]):
            raise ValueError(f"last row of a homogeneous transform must be 0 0 0 1: {m[3]}")
        return cls(m[:3, :3], m[:3, 3])

    @classmethod
    def from_xy_yaw(cls, x: float, y: float, yaw: float, z: float = 0.0) -> SE3:
        """Planar pose: position (m) and heading about z (rad)."""
        return cls.from_rpy(0.0, 0.0, yaw, (x, y, z))

    def as_matrix(self) -> npt.NDArray[np.float64]:
        """``(4, 4)`` float64 homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation
        return m

    def quaternion(self) -> npt.NDArray[np.float64]:
        """``(4,)`` float64 ``(x, y, z, w)``, ``w >= 0``."""
        return matrix_to_quaternion(self.rotation)

    def rpy(self) -> tuple[float, float, float]:
        return matrix_to_rpy(self.rotation)

    def yaw(self) -> float:
        return yaw_of(self.rotation)

    def inverse(self) -> SE3:
        rot_t = self.rotation.T
        return SE3(rot_t, -rot_t @ self.translation)

    def __matmul__(self, other: SE3) -> SE3:
        if not isinstance(other, SE3):
            return NotImplemented
        return SE3(self.rotation @ other.rotation,
                   self.rotation @ other.translation + self.translation)

    def apply(self, points: Any) -> npt.NDArray[np.float64]:
        """Transform points.

        Args:
            points: ``(N, 3)`` or ``(3,)`` array-like in frame ``b`` (any float dtype).

        Returns:
            Points in frame ``a``, float64, same shape as the input.
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.shape[-1] != 3:
            raise ValueError(f"points must have 3 columns, got shape {pts.shape}")
        return pts @ self.rotation.T + self.translation

    def rotate(self, vectors: Any) -> npt.NDArray[np.float64]:
        """Rotate direction vectors ``(N, 3)`` / ``(3,)`` (no translation), float64."""
        vec = np.asarray(vectors, dtype=np.float64)
        return vec @ self.rotation.T

    def almost_equal(self, other: SE3, atol: float = 1e-9) -> bool:
        return bool(np.allclose(self.rotation, other.rotation, atol=atol)
                    and np.allclose(self.translation, other.translation, atol=atol))

    def interpolate(self, other: SE3, alpha: float) -> SE3:
        """Pose a fraction ``alpha`` of the way to ``other`` (linear translation, slerp)."""
        q = slerp(self.quaternion(), other.quaternion(), alpha)
        t = self.translation + alpha * (other.translation - self.translation)
        return SE3.from_quaternion(q, t)

    def __repr__(self) -> str:
        r, p, y = self.rpy()
        t = self.translation
        return (f"SE3(t=[{t[0]:.4f}, {t[1]:.4f}, {t[2]:.4f}], "
                f"rpy=[{r:.4f}, {p:.4f}, {y:.4f}])")


def batch_apply(rotations: Any, translations: Any, points: Any) -> npt.NDArray[np.float64]:
    """Apply one transform per point.

    Args:
        rotations: ``(N, 3, 3)`` float.
        translations: ``(N, 3)`` float.
        points: ``(N, 3)`` float.

    Returns:
        ``(N, 3)`` float64, ``R_i @ p_i + t_i``.
    """
    rot = np.asarray(rotations, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64)
    return np.einsum("nij,nj->ni", rot, pts) + np.asarray(translations, dtype=np.float64)


def wrap_angle(angle: Any) -> Any:
    """Wrap angle(s) in radians to ``[-pi, pi)``."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def points_in_boxes_bev(points: Any, centers: Any, yaws: Any,
                        half_sizes: Any) -> npt.NDArray[np.bool_]:
    """``(B, P)`` bool: whether box ``i`` contains point ``j`` (edges included), in BEV.

    Args:
        points: ``(P, 2)`` x, y, metres.
        centers: ``(B, 2)`` box centres, metres, same frame.
        yaws: ``(B,)`` box headings, radians (the length axis).
        half_sizes: ``(B, 2)`` half length and half width, metres (grow them for a margin).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    ctr = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    yaw = np.asarray(yaws, dtype=np.float64).reshape(-1)
    half = np.asarray(half_sizes, dtype=np.float64).reshape(-1, 2)
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    rel = pts[None, :, :] - ctr[:, None, :]                        # (B, P, 2)
    along = np.abs(rel[..., 0] * c + rel[..., 1] * s)
    across = np.abs(rel[..., 1] * c - rel[..., 0] * s)
    return np.asarray((along <= half[:, 0:1]) & (across <= half[:, 1:2]), dtype=np.bool_)


__all__ = [
    "SE3",
    "batch_apply",
    "matrix_to_quaternion",
    "matrix_to_rpy",
    "points_in_boxes_bev",
    "quaternion_to_matrix",
    "rpy_to_matrix",
    "slerp",
    "wrap_angle",
    "yaw_of",
]
