"""Ego-motion compensation: odometry history, pose interpolation and LiDAR de-skewing.

Frames: odometry gives ``T_world_base`` (``EgoState.pose``, world = its ``frame_id``, e.g.
``odom``) and body-frame velocities (``base_link``, as in ``nav_msgs/Odometry``). Time is
``int`` nanoseconds.

Interpolation between two odometry states is linear in translation and slerp in rotation.
Beyond either end of the history a pose is extrapolated for at most ``max_extrapolation_ns``
with the end state's body velocities held constant (a screw motion: the SE(3) exponential of
the body twist). Anything further away, or between two states more than ``max_gap_ns`` apart,
raises :class:`~mm_perception.core.errors.EgoMotionError` naming the requested time and the
covered span: a wrong pose would be a silent wrong answer.
"""

from __future__ import annotations

import bisect
import numbers
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError, EgoMotionError
from mm_perception.core.geometry import SE3, matrix_to_quaternion, quaternion_to_matrix
from mm_perception.core.types import EgoState, PointCloud, RadarScan

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_NS_PER_S = 1e9


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_stamp(value: Any, name: str) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be int nanoseconds, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 ns, got {value}")
    return int(value)


def _as_stamps(stamps_ns: Any, name: str = "stamps_ns") -> I64:
    arr = np.asarray(stamps_ns)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer nanoseconds, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


@dataclass(frozen=True)
class OdometryBufferConfig:
    """Configuration of :class:`OdometryBuffer`.

    Attributes:
        max_age_ns: history kept behind the newest state, ns (> 0). A state older than the
            newest by more than this is a backwards clock jump: the history is reset.
        max_extrapolation_ns: how far beyond either end of the history a pose may be
            extrapolated with constant body velocities, ns (>= 0).
        max_gap_ns: longest interval between two consecutive states that may be interpolated
            across, ns (> 0).
    """

    max_age_ns: int = 10_000_000_000
    max_extrapolation_ns: int = 100_000_000
    max_gap_ns: int = 1_000_000_000

    def __post_init__(self) -> None:
        for name, minimum in (("max_age_ns", 1), ("max_extrapolation_ns", 0),
                              ("max_gap_ns", 1)):
            value = getattr(self, name)
            if not _is_int(value):
                raise ConfigError(f"odometry {name} must be an int (ns), got {value!r}")
            if value < minimum:
                raise ConfigError(f"odometry {name} must be >= {minimum} ns, got {value!r}")
            object.__setattr__(self, name, int(value))


def _hat(v: F64) -> F64:
    """``(K, 3)`` vectors -> ``(K, 3, 3)`` skew-symmetric matrices (``hat(a) @ b = a x b``)."""
    out = np.zeros((v.shape[0], 3, 3))
    out[:, 0, 1], out[:, 0, 2] = -v[:, 2], v[:, 1]
    out[:, 1, 0], out[:, 1, 2] = v[:, 2], -v[:, 0]
    out[:, 2, 0], out[:, 2, 1] = -v[:, 1], v[:, 0]
    return out


def _se3_exp(rot_vec: F64, trans_vec: F64) -> tuple[F64, F64]:
    """SE(3) exponential of twists ``(omega * dt, v * dt)``.

    Args:
        rot_vec: ``(K, 3)`` float64, rotation vectors (rad).
        trans_vec: ``(K, 3)`` float64, linear displacement ``v * dt`` in the moving frame (m).

    Returns:
        ``(K, 3, 3)`` rotations and ``(K, 3)`` translations of the motion over ``dt`` with
        constant body twist, expressed in the frame at the start.
    """
    theta = np.linalg.norm(rot_vec, axis=1)
    theta2 = theta * theta
    small = theta < 1e-4
    safe = np.where(small, 1.0, theta)
    # Taylor series near 0 avoid 0/0; the error of the truncated series is < 1e-17 there
    a = np.where(small, 1.0 - theta2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta2 / 24.0, (1.0 - np.cos(safe)) / (safe * safe))
    c = np.where(small, 1.0 / 6.0 - theta2 / 120.0, (safe - np.sin(safe)) / (safe ** 3))
    K = _hat(rot_vec)
    K2 = K @ K
    eye = np.eye(3)[None]
    R = eye + a[:, None, None] * K + b[:, None, None] * K2
    V = eye + b[:, None, None] * K + c[:, None, None] * K2
    return R, np.einsum("kij,kj->ki", V, trans_vec)


def _slerp_batch(q0: F64, q1: F64, alpha: F64) -> F64:
    """Row-wise slerp of ``(K, 4)`` unit quaternions ``(x, y, z, w)`` by ``(K,)`` fractions."""
    dot = np.einsum("ki,ki->k", q0, q1)
    q1 = np.where(dot[:, None] < 0.0, -q1, q1)  # the short way round
    dot = np.clip(np.abs(dot), 0.0, 1.0)
    theta = np.arccos(dot)
    near = dot > 1.0 - 1e-9  # (almost) the same rotation: normalised lerp is exact enough
    sin_theta = np.where(near, 1.0, np.sin(theta))
    w0 = np.where(near, 1.0 - alpha, np.sin((1.0 - alpha) * theta) / sin_theta)
    w1 = np.where(near, alpha, np.sin(alpha * theta) / sin_theta)
    out = w0[:, None] * q0 + w1[:, None] * q1
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


@dataclass(frozen=True)
class OdometryDelta:
    """:meth:`OdometryBuffer.delta`: the stamps (ns, in order) of a buffer, the states among
    them the receiver lacks, the buffer's counters and frames."""

    stamps: tuple[int, ...]
    new_states: tuple[EgoState, ...]
    stats: dict[str, int]
    frames: tuple[str, str] | None


class OdometryBuffer:
    """Sorted history of :class:`EgoState` s with vectorised pose look-up.

    ``stats`` counts: ``added`` (states stored), ``out_of_order`` (stored although older than
    the newest), ``duplicates`` (same stamp as a stored state: ignored), ``resets`` (backwards
    jumps beyond ``max_age_ns``: history cleared), ``frame_mismatch`` (``frame_id`` /
    ``child_frame_id`` differ from the stored states: ignored), ``pruned`` (aged out).
    """

    def __init__(self, config: OdometryBufferConfig | None = None) -> None:
        config = OdometryBufferConfig() if config is None else config
        if not isinstance(config, OdometryBufferConfig):
            raise TypeError(f"config must be an OdometryBufferConfig, got "
                            f"{type(config).__name__}")
        self._config = config
        self._stats = dict.fromkeys(
            ("added", "out_of_order", "duplicates", "resets", "frame_mismatch", "pruned"), 0)
        self._clear()

    def _clear(self) -> None:
        self._stamps: list[int] = []
        self._states: list[EgoState] = []
        self._quats: list[F64] = []
        self._frames: tuple[str, str] | None = None
        self._cache: tuple[I64, F64, F64, F64, F64] | None = None

    @property
    def config(self) -> OdometryBufferConfig:
        return self._config

    @property
    def stats(self) -> dict[str, int]:
        """A copy of the counters (see the class docstring)."""
        return dict(self._stats)

    @property
    def frame_id(self) -> str | None:
        """World frame of the stored poses, None while empty."""
        return None if self._frames is None else self._frames[0]

    @property
    def child_frame_id(self) -> str | None:
        """Body frame of the stored poses, None while empty."""
        return None if self._frames is None else self._frames[1]

    def __len__(self) -> int:
        return len(self._stamps)

    def span(self) -> tuple[int, int] | None:
        """``(oldest, newest)`` stamp in ns, or None while empty."""
        return (self._stamps[0], self._stamps[-1]) if self._stamps else None

    def clear(self) -> None:
        """Forget every state (stats are kept)."""
        self._clear()

    def snapshot(self) -> OdometryBuffer:
        """An independent copy of the current history (O(M) list copies, states shared:
        they are immutable). A live node hands one to its processing thread so that poses
        keep arriving on the input thread while a set is processed."""
        out = OdometryBuffer(self._config)
        out._stats = dict(self._stats)
        out._stamps = list(self._stamps)
        out._states = list(self._states)
        out._quats = list(self._quats)
        out._frames = self._frames
        out._cache = self._cache
        return out

    def delta(self, known: AbstractSet[int]) -> OdometryDelta:
        """What a copy of this buffer that holds the states stamped ``known`` needs to become
        equal to it (:meth:`apply_delta`): the stamps in order plus only the states it
        lacks. A live node keeps a copy in its processing process this way, sending a few
        states per set instead of the whole history."""
        return OdometryDelta(tuple(self._stamps),
                             tuple(s for t, s in zip(self._stamps, self._states, strict=True)
                                   if t not in known),
                             dict(self._stats), self._frames)

    def apply_delta(self, delta: OdometryDelta) -> None:
        """Become equal to the buffer ``delta`` was taken from.

        Raises:
            ValueError: a stamp of the delta is neither among its states nor held here (the
                delta was taken against other ``known`` stamps than this buffer holds).
        """
        by_stamp = dict(zip(self._stamps, self._states, strict=True))
        by_stamp.update((int(s.stamp_ns), s) for s in delta.new_states)
        missing = [t for t in delta.stamps if t not in by_stamp]
        if missing:
            raise ValueError(f"odometry delta refers to {len(missing)} states this buffer "
                             f"does not hold (first: {missing[0]} ns)")
        quats = dict(zip(self._stamps, self._quats, strict=True))
        self._states = [by_stamp[t] for t in delta.stamps]
        self._quats = [quats[t] if t in quats else matrix_to_quaternion(s.pose.rotation)
                       for t, s in zip(delta.stamps, self._states, strict=True)]
        self._stamps = list(delta.stamps)
        self._stats = dict(delta.stats)
        self._frames = delta.frames
        self._cache = None

    def add(self, state: EgoState) -> bool:
        """Insert a state in stamp order.

        Returns:
            True when the state was stored: newer than the newest, or older but within
            ``max_age_ns`` (counted ``out_of_order``), or older by more than ``max_age_ns``
            (a clock jump backwards: the history is reset to this state, counted ``resets``).
            False for a duplicate stamp or a frame mismatch (counted, ignored).
        """
        if not isinstance(state, EgoState):
            raise TypeError(f"OdometryBuffer.add needs an EgoState, got {type(state).__name__}")
        stamp = int(state.stamp_ns)
        frames = (state.frame_id, state.child_frame_id)
        if self._stamps and self._stamps[-1] - stamp > self._config.max_age_ns:
            self._stats["resets"] += 1
            self._clear()
        if self._frames is not None and frames != self._frames:
            self._stats["frame_mismatch"] += 1
            return False
        i = bisect.bisect_left(self._stamps, stamp)
        if i < len(self._stamps) and self._stamps[i] == stamp:
            self._stats["duplicates"] += 1
            return False
        if i < len(self._stamps):
            self._stats["out_of_order"] += 1
        self._stamps.insert(i, stamp)
        self._states.insert(i, state)
        self._quats.insert(i, matrix_to_quaternion(state.pose.rotation))
        self._frames = frames
        self._stats["added"] += 1
        # age out what is older than max_age behind the newest state
        k = bisect.bisect_left(self._stamps, self._stamps[-1] - self._config.max_age_ns)
        if k:
            del self._stamps[:k], self._states[:k], self._quats[:k]
            self._stats["pruned"] += k
        self._cache = None
        return True

    def _arrays(self) -> tuple[I64, F64, F64, F64, F64]:
        """Stamps ``(M,)`` int64, quaternions ``(M, 4)``, translations, linear and angular
        velocities ``(M, 3)`` float64 of the stored states (cached until the next add)."""
        if self._cache is None:
            if not self._stamps:
                raise EgoMotionError("no odometry received yet: cannot look up an ego pose")
            self._cache = (
                np.asarray(self._stamps, dtype=np.int64),
                np.asarray(self._quats, dtype=np.float64),
                np.asarray([s.pose.translation for s in self._states], dtype=np.float64),
                np.asarray([s.linear_velocity for s in self._states], dtype=np.float64),
                np.asarray([s.angular_velocity for s in self._states], dtype=np.float64),
            )
        return self._cache

    def _locate(self, t: I64) -> tuple[I64, F64, npt.NDArray[np.bool_], F64]:
        """For each time: segment/anchor index, interpolation fraction, extrapolation mask and
        extrapolation interval (s). Raises EgoMotionError for uncovered times."""
        S = self._arrays()[0]
        m = S.shape[0]
        max_ext = self._config.max_extrapolation_ns
        lo, hi = int(S[0]), int(S[-1])
        bad = (t < lo - max_ext) | (t > hi + max_ext)
        if np.any(bad):
            first = int(t[np.argmax(bad)])
            where = (f"{lo - first} ns before its start" if first < lo
                     else f"{first - hi} ns after its end")
            raise EgoMotionError(
                f"no ego pose for t={first} ns: odometry covers [{lo}, {hi}] ns ({m} states), "
                f"the request is {where}, more than max_extrapolation_ns={max_ext}; "
                f"{int(bad.sum())} of {t.shape[0]} requested time(s) in "
                f"[{int(t.min())}, {int(t.max())}] ns are not covered")
        ext = (t < lo) | (t >= hi)
        # segment i holds S[i] <= t < S[i + 1]; extrapolation anchors on the first/last state
        idx = np.searchsorted(S, t, side="right") - 1
        idx = np.where(t < lo, 0, np.where(t >= hi, m - 1, idx))
        alpha = np.zeros(t.shape[0])
        dt = np.zeros(t.shape[0])
        inner = ~ext
        if np.any(inner):
            i = idx[inner]
            seg = S[i + 1] - S[i]
            off = t[inner] - S[i]
            gap = (off > 0) & (seg > self._config.max_gap_ns)
            if np.any(gap):
                g = int(np.argmax(gap))
                raise EgoMotionError(
                    f"no ego pose for t={int(t[inner][g])} ns: it falls in an odometry gap of "
                    f"{int(seg[g])} ns between states at {int(S[i[g]])} and "
                    f"{int(S[i[g] + 1])} ns, longer than max_gap_ns="
                    f"{self._config.max_gap_ns} (odometry covers [{lo}, {hi}] ns)")
            alpha[inner] = off / seg
        dt[ext] = (t[ext] - S[idx[ext]]) / _NS_PER_S
        return idx, alpha, ext, dt

    def poses_at(self, stamps_ns: Any) -> tuple[F64, F64]:
        """``T_world_base`` at many times.

        Args:
            stamps_ns: ``(N,)`` integer ns.

        Returns:
            ``(N, 3, 3)`` float64 rotations and ``(N, 3)`` float64 translations (m, world
            frame).

        Raises:
            EgoMotionError: a time beyond ``max_extrapolation_ns`` from the history, inside a
                gap longer than ``max_gap_ns``, or no odometry at all.
        """
        t = _as_stamps(stamps_ns)
        n = t.shape[0]
        if n == 0:
            return np.zeros((0, 3, 3)), np.zeros((0, 3))
        _, Q, P, V, W = self._arrays()
        idx, alpha, ext, dt = self._locate(t)
        rot = np.empty((n, 3, 3))
        trans = np.empty((n, 3))
        inner = ~ext
        if np.any(inner):
            i, a = idx[inner], alpha[inner]
            rot[inner] = quaternion_to_matrix(_slerp_batch(Q[i], Q[i + 1], a))
            trans[inner] = P[i] + a[:, None] * (P[i + 1] - P[i])
        if np.any(ext):
            j, d = idx[ext], dt[ext]
            R0 = quaternion_to_matrix(Q[j])
            dR, dp = _se3_exp(W[j] * d[:, None], V[j] * d[:, None])
            rot[ext] = R0 @ dR
            trans[ext] = P[j] + np.einsum("kij,kj->ki", R0, dp)
        return rot, trans

    def pose_at(self, stamp_ns: int) -> SE3:
        """``T_world_base`` at one time (see :meth:`poses_at`)."""
        stamp = _check_stamp(stamp_ns, "stamp_ns")
        rot, trans = self.poses_at(np.array([stamp], dtype=np.int64))
        return SE3(rot[0], trans[0])

    def state_at(self, stamp_ns: int) -> EgoState:
        """Ego state at one time: pose as :meth:`pose_at`, body velocities interpolated
        linearly (held constant when extrapolating), covariances of the nearest state."""
        stamp = _check_stamp(stamp_ns, "stamp_ns")
        t = np.array([stamp], dtype=np.int64)
        rot, trans = self.poses_at(t)
        _, _, _, V, W = self._arrays()
        idx, alpha, ext, _ = self._locate(t)
        i, a = int(idx[0]), float(alpha[0])
        if ext[0]:
            lin, ang, nearest = V[i], W[i], i
        else:
            lin = V[i] + a * (V[i + 1] - V[i])
            ang = W[i] + a * (W[i + 1] - W[i])
            nearest = i if a <= 0.5 else i + 1
        ref = self._states[nearest]
        return EgoState(stamp_ns=stamp, frame_id=ref.frame_id,
                        child_frame_id=ref.child_frame_id, pose=SE3(rot[0], trans[0]),
                        linear_velocity=lin.copy(), angular_velocity=ang.copy(),
                        pose_covariance=ref.pose_covariance,
                        twist_covariance=ref.twist_covariance)


def _deskew_f64(xyz: Any, stamps_ns: Any, T_base_sensor: SE3, odometry: OdometryBuffer,
                target_stamp_ns: int) -> F64:
    pts = np.asarray(xyz)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"xyz must have shape (N, 3), got {pts.shape}")
    pts = pts.astype(np.float64, copy=False)
    stamps = _as_stamps(stamps_ns)
    if stamps.shape[0] != pts.shape[0]:
        raise ValueError(f"stamps_ns has {stamps.shape[0]} entries for {pts.shape[0]} points")
    target = _check_stamp(target_stamp_ns, "target_stamp_ns")
    if not isinstance(T_base_sensor, SE3):
        raise TypeError(f"T_base_sensor must be an SE3, got {type(T_base_sensor).__name__}")
    if pts.shape[0] == 0:
        return np.zeros((0, 3))
    # one pose per distinct stamp: a spinning LiDAR has far fewer firing times than points
    uniq, inverse = np.unique(stamps, return_inverse=True)
    inverse = inverse.reshape(-1)
    if uniq.shape[0] == 1 and int(uniq[0]) == target:
        return pts.copy()  # nothing moves: exact whatever the odometry
    R_u, t_u = odometry.poses_at(uniq)
    R_t, t_t = odometry.poses_at(np.array([target], dtype=np.int64))
    R_bs, t_bs = T_base_sensor.rotation, T_base_sensor.translation
    # A = T_sensor_base @ T_world_base(target)^-1, B_k = T_world_base(t_k) @ T_base_sensor
    R_A = R_bs.T @ R_t[0].T
    t_A = -R_A @ t_t[0] - R_bs.T @ t_bs
    R_rel = R_A @ R_u @ R_bs
    t_rel = (R_u @ t_bs + t_u) @ R_A.T + t_A
    return np.einsum("nij,nj->ni", R_rel[inverse], pts) + t_rel[inverse]


def deskew_points(xyz: Any, stamps_ns: Any, T_base_sensor: SE3, odometry: OdometryBuffer,
                  target_stamp_ns: int) -> F32:
    """Move points measured at their own times into the sensor frame at one time.

    ``p' = T_base_sensor^-1 · T_world_base(target)^-1 · T_world_base(t_i) · T_base_sensor · p``

    Args:
        xyz: ``(N, 3)`` float, metres, sensor frame at each point's time. NaN points stay NaN.
        stamps_ns: ``(N,)`` integer absolute time of each point, ns.
        T_base_sensor: mounting of the sensor (``base_link`` <- sensor).
        odometry: ego poses covering every point time and the target (within its limits).
        target_stamp_ns: time whose sensor frame the points are expressed in, ns.

    Returns:
        ``(N, 3)`` float32, metres, sensor frame at ``target_stamp_ns``.

    Raises:
        EgoMotionError: the odometry does not cover a needed time.
    """
    return _deskew_f64(xyz, stamps_ns, T_base_sensor, odometry,
                       target_stamp_ns).astype(np.float32)


def deskew_cloud(cloud: PointCloud, T_base_sensor: SE3, odometry: OdometryBuffer,
                 target_stamp_ns: int | None = None) -> PointCloud:
    """Ego-motion compensate a point cloud.

    Each point is moved from the sensor frame at its own time (``cloud.point_stamps_ns()``)
    into the sensor frame at ``target_stamp_ns`` (default ``cloud.stamp_ns``). A cloud without
    ``time_offsets_ns`` is moved as a whole from ``cloud.stamp_ns`` to the target.

    Returns:
        A new cloud: same sensor, frame_id and fields, ``stamp_ns = target_stamp_ns``, ``x``,
        ``y``, ``z`` replaced (computed in float64, stored in the input fields' dtype). Since
        every point now describes the scene at the target time, ``time_offsets_ns`` becomes all
        zeros (None stays None): de-skewing the result again is a no-op, and moving it to
        another time is a correct whole-cloud move. An empty cloud is returned empty (no
        odometry needed).

    Raises:
        EgoMotionError: the odometry does not cover a needed time.
        ValueError: ``x``/``y``/``z`` are not float fields.
    """
    if not isinstance(cloud, PointCloud):
        raise TypeError(f"deskew_cloud needs a PointCloud, got {type(cloud).__name__}")
    target = cloud.stamp_ns if target_stamp_ns is None else _check_stamp(
        target_stamp_ns, "target_stamp_ns")
    dtypes = cloud.points.dtype
    for name in ("x", "y", "z"):
        field_dtype = dtypes.fields[name][0] if dtypes.fields else None
        if field_dtype is None or field_dtype.kind != "f":
            raise ValueError(f"cloud from {cloud.sensor!r}: field {name!r} must be float to be "
                             f"de-skewed, got {field_dtype}")
    points = np.array(cloud.points, copy=True)
    if len(cloud):
        xyz = np.stack([cloud.points[n] for n in ("x", "y", "z")], axis=1)
        moved = _deskew_f64(xyz, cloud.point_stamps_ns(), T_base_sensor, odometry, target)
        for k, name in enumerate(("x", "y", "z")):
            points[name] = moved[:, k]  # numpy casts to the field's dtype
    offsets = None if cloud.time_offsets_ns is None else np.zeros(len(cloud), dtype=np.int64)
    return PointCloud(sensor=cloud.sensor, stamp_ns=target, frame_id=cloud.frame_id,
                      points=points, time_offsets_ns=offsets)


def compensate_doppler(scan: RadarScan, T_base_sensor: SE3, ego: EgoState) -> F32:
    """Remove the ego motion from radar radial velocities.

    A static target seen from a sensor moving with velocity ``v_s`` has radial velocity
    ``-u · v_s`` (``u`` the unit direction to the target); adding ``u · v_s`` back leaves the
    radial component of the target's own velocity over ground.

    Args:
        scan: radar scan (``xyz`` sensor frame, ``doppler`` m/s, positive = moving away).
        T_base_sensor: mounting of the radar (``base_link`` <- radar).
        ego: ego state at the scan time (body-frame velocities), e.g.
            ``odometry.state_at(scan.stamp_ns)``.

    Returns:
        ``(N,)`` float32 m/s, radial velocity over ground (positive = moving away). NaN for a
        point at range 0 (no direction).
    """
    if not isinstance(scan, RadarScan):
        raise TypeError(f"compensate_doppler needs a RadarScan, got {type(scan).__name__}")
    # sensor velocity in the base frame: v + omega x r, then rotated into the sensor frame
    v_base = ego.linear_velocity + np.cross(ego.angular_velocity, T_base_sensor.translation)
    v_sensor = T_base_sensor.rotation.T @ v_base
    xyz = scan.xyz.astype(np.float64)
    rng = np.linalg.norm(xyz, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        radial = (xyz @ v_sensor) / rng
    radial[rng == 0.0] = np.nan
    return (scan.doppler.astype(np.float64) + radial).astype(np.float32)


__all__ = [
    "OdometryBuffer",
    "OdometryBufferConfig",
    "OdometryDelta",
    "compensate_doppler",
    "deskew_cloud",
    "deskew_points",
]
