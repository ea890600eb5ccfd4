"""Extended Kalman filters for bird's-eye-view object motion, batched over objects.

Both motion models share one 6-element state layout so that a bank of filters can hold
tracks of either model in the same arrays (the tracker picks the model per class):

==========  =====  =====  =====  ==========  ====================  =====================
model       0      1      2      3           4                     5
==========  =====  =====  =====  ==========  ====================  =====================
CV          x (m)  y (m)  z (m)  yaw (rad)   vx (m/s)              vy (m/s)
CTRV        x (m)  y (m)  z (m)  yaw (rad)   v (m/s, along yaw)    yaw rate (rad/s)
==========  =====  =====  =====  ==========  ====================  =====================

Positions are in the tracking frame (a fixed world / odom frame, or ``base_link`` of a
static ego). The first four entries mean the same in both models, so a pose measurement
``(x, y, z, yaw)`` has the same linear ``H`` for both; only a velocity measurement is
nonlinear (for CTRV). :func:`to_output` turns either into the stack's object convention
``(x, y, z, yaw, vx, vy)`` with the matching ``(6, 6)`` covariance (``J P J^T``).

* CV: constant velocity in x/y (continuous white-noise acceleration), ``z`` and ``yaw``
  random walks (the box heading need not follow the velocity, e.g. pedestrians).
* CTRV: constant turn rate and velocity; continuous white noise on the speed (longitudinal
  acceleration) and on the yaw rate (yaw acceleration), ``z`` a random walk. The prediction
  uses the exact arc written with ``sinc`` so it is smooth through ``yaw_rate = 0``.

Every noise parameter is an intensity: the listed std is what the driven quantity's std
grows by over one second (``q * dt`` variance per step), so results do not depend on the
frame rate.

Updates use the Joseph form ``P = (I-KH) P (I-KH)^T + K R K^T`` (stays symmetric positive
definite with suboptimal gains and rounding). Angle components of the innovation are
wrapped to ``[-pi, pi)``. Measurements or covariances that are not finite, or an
innovation covariance that is not positive definite, are rejected per row: that row is
left unchanged and counted (``BatchEKF.rejected``), the others are applied.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
I64 = npt.NDArray[np.int64]

STATE_DIM = 6
IX, IY, IZ, IYAW, I4, I5 = range(6)
#: output / DetectedObject covariance convention
OUTPUT_LABELS = ("x", "y", "z", "yaw", "vx", "vy")


class MotionModel(enum.Enum):
    """Which motion model a filter row runs."""

    CV = "cv"
    CTRV = "ctrv"


def _check_positive(obj: object) -> None:
    for f in fields(obj):  # type: ignore[arg-type]
        val = getattr(obj, f.name)
        if isinstance(val, bool) or not isinstance(val, int | float):
            raise ConfigError(f"{type(obj).__name__}.{f.name} must be a number, got {val!r}")
        if not math.isfinite(val) or val <= 0:
            raise ConfigError(f"{type(obj).__name__}.{f.name} must be finite and > 0, "
                              f"got {val!r}")


@dataclass(frozen=True)
class CVConfig:
    """Constant-velocity model (state ``x, y, z, yaw, vx, vy``).

    Attributes:
        accel_std: white-noise acceleration intensity per axis, m/s per sqrt(s) (the
            velocity std grows by this much in one second without measurements).
        yaw_rate_std: yaw random walk, rad per sqrt(s).
        z_rate_std: height random walk, m per sqrt(s).
        init_speed_std: std of each velocity component of a new track without a velocity
            measurement, m/s (should cover the class's plausible speeds).
    """

    model: ClassVar[MotionModel] = MotionModel.CV

    accel_std: float = 2.0
    yaw_rate_std: float = 1.0
    z_rate_std: float = 0.1
    init_speed_std: float = 10.0

    def __post_init__(self) -> None:
        _check_positive(self)

    def noise_params(self) -> tuple[float, float, float]:
        """(accel, yaw, z) intensities as the batched filter stores them."""
        return (self.accel_std, self.yaw_rate_std, self.z_rate_std)


@dataclass(frozen=True)
class CTRVConfig:
    """Constant turn rate and velocity model (state ``x, y, z, yaw, v, yaw_rate``).

    Attributes:
        accel_std: longitudinal acceleration noise intensity, m/s per sqrt(s).
        yaw_accel_std: yaw acceleration noise intensity, rad/s per sqrt(s).
        z_rate_std: height random walk, m per sqrt(s).
        init_speed_std: std of the speed of a new track without a velocity measurement, m/s.
        init_yaw_rate_std: std of the yaw rate of a new track, rad/s.
    """

    model: ClassVar[MotionModel] = MotionModel.CTRV

    accel_std: float = 2.0
    yaw_accel_std: float = 0.5
    z_rate_std: float = 0.1
    init_speed_std: float = 10.0
    init_yaw_rate_std: float = 0.5

    def __post_init__(self) -> None:
        _check_positive(self)

    def noise_params(self) -> tuple[float, float, float]:
        """(accel, yaw, z) intensities as the batched filter stores them."""
        return (self.accel_std, self.yaw_accel_std, self.z_rate_std)


MotionConfig = CVConfig | CTRVConfig


class MeasurementModel(enum.Enum):
    """Measurement models; all map the state to the named components (object convention).

    POSITION ``(x, y)``; POSE ``(x, y, z, yaw)``; VELOCITY ``(vx, vy)`` (radar Doppler
    velocity, nonlinear for CTRV); POSE_VELOCITY ``(x, y, z, yaw, vx, vy)``.
    """

    POSITION = "position"
    POSE = "pose"
    VELOCITY = "velocity"
    POSE_VELOCITY = "pose_velocity"

    @property
    def dim(self) -> int:
        return {"position": 2, "pose": 4, "velocity": 2, "pose_velocity": 6}[self.value]


def wrap_angle(angle: npt.ArrayLike) -> F64:
    """Angles wrapped to ``[-pi, pi)``, float64."""
    return np.asarray((np.asarray(angle, dtype=np.float64) + np.pi) % (2.0 * np.pi) - np.pi)


def resolve_yaw_ambiguity(measured: npt.ArrayLike, predicted: npt.ArrayLike) -> F64:
    """A box heading known only modulo pi (L-shape fits, symmetric clusters), moved to
    whichever of ``measured`` / ``measured + pi`` is nearer ``predicted``; radians."""
    meas = np.asarray(measured, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    delta = (meas - pred + 0.5 * np.pi) % np.pi - 0.5 * np.pi  # in [-pi/2, pi/2)
    return wrap_angle(pred + delta)


def _sinc_and_derivative(u: F64) -> tuple[F64, F64]:
    """``S(u) = sin(u)/u`` and ``dS/du``, accurate through ``u = 0``."""
    s = np.sinc(u / np.pi)
    small = np.abs(u) < 1e-3
    safe = np.where(small, 1.0, u)
    ds = np.where(small, -u / 3.0 + u**3 / 30.0, (safe * np.cos(safe) - np.sin(safe)) / safe**2)
    return s, ds


def congruence_rows(cov: F64, rows: slice | list[int], jrows: F64) -> F64:
    """``J P J^T`` for Jacobians ``J`` that equal the identity except on the rows ``rows``.

    Args:
        cov: ``(K, n, n)`` covariances ``P``.
        rows: the state rows where ``J`` differs from the identity (a slice or a list).
        jrows: ``(K, r, n)`` those rows of ``J``.

    Returns:
        ``(K, n, n)`` float64 ``J P J^T`` (a new array). Only the listed rows and columns
        change, so two thin ``(r, n)`` products replace two full ``(n, n)`` ones and no
        ``(K, n, n)`` identity stack is built (the other entries are copied, exactly what
        the product with identity rows gives for finite ``P``).
    """
    out = cov.copy()
    out[:, rows, :] = jrows @ cov
    # the right-hand side is evaluated before the assignment, so updating in place is safe
    out[:, :, rows] = out @ np.swapaxes(jrows, 1, 2)
    return out


def cv_transition(mean: F64, dt: float) -> tuple[F64, F64]:
    """Constant-velocity prediction: ``((N, 6) new means, (N, 6, 6) Jacobians F)``."""
    new = mean.copy()
    new[:, IX] += mean[:, I4] * dt
    new[:, IY] += mean[:, I5] * dt
    jac = np.broadcast_to(np.eye(STATE_DIM), (mean.shape[0], STATE_DIM, STATE_DIM)).copy()
    jac[:, IX, I4] = dt
    jac[:, IY, I5] = dt
    return new, jac


def ctrv_transition(mean: F64, dt: float) -> tuple[F64, F64]:
    """CTRV prediction on the exact arc: ``((N, 6) new means, (N, 6, 6) Jacobians F)``.

    ``x' = x + v dt cos(yaw + w dt/2) S(w dt/2)`` (and ``sin`` for ``y``) with
    ``S(u) = sin(u)/u``; this equals the textbook ``v/w (sin(yaw + w dt) - sin(yaw))`` and
    has no special case at ``w = 0``.
    """
    yaw, v, w = mean[:, IYAW], mean[:, I4], mean[:, I5]
    u = 0.5 * w * dt
    phi = yaw + u
    s, ds = _sinc_and_derivative(u)
    c, sn = np.cos(phi), np.sin(phi)
    new = mean.copy()
    new[:, IX] += v * dt * c * s
    new[:, IY] += v * dt * sn * s
    new[:, IYAW] = wrap_angle(yaw + w * dt)
    jac = np.broadcast_to(np.eye(STATE_DIM), (mean.shape[0], STATE_DIM, STATE_DIM)).copy()
    jac[:, IX, IYAW] = -v * dt * sn * s
    jac[:, IX, I4] = dt * c * s
    jac[:, IX, I5] = 0.5 * v * dt * dt * (c * ds - sn * s)
    jac[:, IY, IYAW] = v * dt * c * s
    jac[:, IY, I4] = dt * sn * s
    jac[:, IY, I5] = 0.5 * v * dt * dt * (c * s + sn * ds)
    jac[:, IYAW, I5] = dt
    return new, jac


#: state rows where the motion model's Jacobian differs from the identity
MOTION_ROWS = [IX, IY, IYAW]


def transition_rows(mean: F64, is_ctrv: B, dt: float) -> tuple[F64, F64]:
    """:func:`transition` with the Jacobian given by its rows :data:`MOTION_ROWS` only
    (``z`` and the velocity components are constant): ``((N, 6) new means, (N, 3, 6)
    rows of F)``, for :func:`congruence_rows`."""
    yaw, a, b = mean[:, IYAW], mean[:, I4], mean[:, I5]
    w = np.where(is_ctrv, b, 0.0)
    u = 0.5 * w * dt
    phi = yaw + u
    s, ds = _sinc_and_derivative(u)
    c, sn = np.cos(phi), np.sin(phi)
    vdt = a * dt
    new = mean.copy()
    new[:, IX] += np.where(is_ctrv, vdt * c * s, vdt)
    new[:, IY] += np.where(is_ctrv, vdt * sn * s, b * dt)
    new[:, IYAW] = np.where(is_ctrv, wrap_angle(yaw + w * dt), yaw)
    jrows = np.zeros((mean.shape[0], len(MOTION_ROWS), STATE_DIM))
    jrows[:, (0, 1, 2), MOTION_ROWS] = 1.0
    half = 0.5 * a * dt * dt
    jrows[:, 0, IYAW] = np.where(is_ctrv, -vdt * sn * s, 0.0)
    jrows[:, 0, I4] = np.where(is_ctrv, dt * c * s, dt)
    jrows[:, 0, I5] = np.where(is_ctrv, half * (c * ds - sn * s), 0.0)
    jrows[:, 1, IYAW] = np.where(is_ctrv, vdt * c * s, 0.0)
    jrows[:, 1, I4] = np.where(is_ctrv, dt * sn * s, 0.0)
    jrows[:, 1, I5] = np.where(is_ctrv, half * (c * s + sn * ds), dt)
    jrows[:, 2, I5] = np.where(is_ctrv, dt, 0.0)
    return new, jrows


def transition(mean: F64, is_ctrv: B, dt: float) -> tuple[F64, F64]:
    """:func:`cv_transition` on CV rows and :func:`ctrv_transition` on CTRV rows, in one
    pass over all rows (no row gathers): ``((N, 6) new means, (N, 6, 6) Jacobians F)``."""
    new, jrows = transition_rows(mean, is_ctrv, dt)
    jac = np.broadcast_to(np.eye(STATE_DIM), (mean.shape[0], STATE_DIM, STATE_DIM)).copy()
    jac[:, MOTION_ROWS, :] = jrows
    return new, jac


def process_noise(mean: F64, is_ctrv: B, noise: F64, dt: float) -> F64:
    """``(N, 6, 6)`` discretised process noise for ``dt`` seconds.

    Args:
        mean: ``(N, 6)`` states before the prediction (CTRV uses their heading).
        is_ctrv: ``(N,)`` which rows run CTRV.
        noise: ``(N, 3)`` intensities (accel, yaw, z) from :meth:`CVConfig.noise_params` /
            :meth:`CTRVConfig.noise_params`.
    """
    n = mean.shape[0]
    qa, qy, qz = noise[:, 0] ** 2, noise[:, 1] ** 2, noise[:, 2] ** 2
    t1, t2, t3 = dt, dt * dt / 2.0, dt**3 / 3.0
    q = np.zeros((n, STATE_DIM, STATE_DIM))
    q[:, IZ, IZ] = qz * t1
    # CV: integrated white acceleration along x and y, yaw a random walk.
    # CTRV: the same along the heading e = (cos yaw, sin yaw) into (x, y, v), and white
    # yaw acceleration into (yaw, yaw rate).
    yaw = mean[:, IYAW]
    ex = np.where(is_ctrv, np.cos(yaw), 1.0)
    ey = np.where(is_ctrv, np.sin(yaw), 1.0)
    a3, a2 = qa * t3, qa * t2
    q[:, IX, IX] = a3 * ex * ex
    q[:, IY, IY] = a3 * ey * ey
    q[:, IX, IY] = q[:, IY, IX] = np.where(is_ctrv, a3 * ex * ey, 0.0)
    q[:, IX, I4] = q[:, I4, IX] = a2 * ex
    q[:, IY, I4] = q[:, I4, IY] = np.where(is_ctrv, a2 * ey, 0.0)
    q[:, IY, I5] = q[:, I5, IY] = np.where(is_ctrv, 0.0, a2)
    q[:, I4, I4] = qa * t1
    q[:, IYAW, IYAW] = qy * np.where(is_ctrv, t3, t1)
    q[:, IYAW, I5] = q[:, I5, IYAW] = np.where(is_ctrv, qy * t2, 0.0)
    q[:, I5, I5] = np.where(is_ctrv, qy, qa) * t1
    return q


def measurement(model: MeasurementModel, mean: F64, is_ctrv: B) -> tuple[F64, F64, tuple[int, ...]]:
    """Predicted measurement, its Jacobian and its angle components.

    Args:
        model: which measurement.
        mean: ``(K, 6)`` states.
        is_ctrv: ``(K,)`` rows that run CTRV (velocity is ``v (cos yaw, sin yaw)`` there).

    Returns:
        ``h`` ``(K, m)``, ``H`` ``(K, m, 6)``, indices of angle components of ``h``.
    """
    k = mean.shape[0]
    if model in (MeasurementModel.POSITION, MeasurementModel.POSE):
        idx = [IX, IY] if model is MeasurementModel.POSITION else [IX, IY, IZ, IYAW]
        sel = np.eye(STATE_DIM)[idx]
        angles = (3,) if model is MeasurementModel.POSE else ()
        return mean[:, idx].copy(), np.broadcast_to(sel, (k, len(idx), STATE_DIM)).copy(), angles
    yaw, a, b = mean[:, IYAW], mean[:, I4], mean[:, I5]
    c, s = np.cos(yaw), np.sin(yaw)
    hv = np.where(is_ctrv[:, None], np.stack([a * c, a * s], 1), np.stack([a, b], 1))
    jv = np.zeros((k, 2, STATE_DIM))
    jv[:, 0, I4] = np.where(is_ctrv, c, 1.0)
    jv[:, 1, I5] = np.where(is_ctrv, 0.0, 1.0)
    jv[:, 1, I4] = np.where(is_ctrv, s, 0.0)
    jv[:, 0, IYAW] = np.where(is_ctrv, -a * s, 0.0)
    jv[:, 1, IYAW] = np.where(is_ctrv, a * c, 0.0)
    if model is MeasurementModel.VELOCITY:
        return hv, jv, ()
    h = np.concatenate([mean[:, :4], hv], axis=1)
    jac = np.zeros((k, 6, STATE_DIM))
    jac[:, :4, :4] = np.eye(4)
    jac[:, 4:, :] = jv
    return h, jac, (3,)


def ekf_update(mean: F64, cov: F64, z: F64, R: F64, h: F64 | None, H: F64 | None,
               angle_dims: Sequence[int] = (),
               state_angle_dims: Sequence[int] = (IYAW,),
               select: Sequence[int] | None = None) -> tuple[F64, F64, B, F64]:
    """Batched EKF update with the Joseph-form covariance.

    Args:
        mean: ``(K, n)``; cov: ``(K, n, n)``; z: ``(K, m)`` measurements; R: ``(K, m, m)``
        their covariances; h: ``(K, m)`` predicted measurements; H: ``(K, m, n)`` Jacobians;
        angle_dims: components of ``z`` that are angles (innovation wrapped).
        state_angle_dims: state components that are angles (wrapped after the update).
        select: a measurement of the state components ``select`` (``H = I[select]``, ``h``
            and ``H`` are then ignored and may be None): the products become slices.

    Returns:
        ``(mean, cov, applied, nis)``: updated copies, ``(K,)`` bool rows applied (False for
        non-finite inputs or a non positive-definite innovation covariance; those rows are
        returned unchanged) and ``(K,)`` normalised innovation squared (NaN where rejected).
    """
    k, n = mean.shape
    m = z.shape[1]
    sel = None if select is None else list(select)
    if sel is not None:
        h, H = mean[:, sel], None
    if h is None:
        raise ValueError("h (and H) are needed without select")
    parts = [z, h, R.reshape(k, m * m)]
    if H is not None:
        parts.append(H.reshape(k, m * n))
    nis: F64 = np.full(k, np.nan)
    ok: B = np.asarray(np.isfinite(np.concatenate(parts, axis=1)).all(axis=1))
    if not ok.any():
        return mean.copy(), cov.copy(), ok, nis
    everything = bool(ok.all())  # the common case: no row copies
    P, Rm = (cov, R) if everything else (cov[ok], R[ok])
    Hm = None if H is None else (H if everything else H[ok])
    y = z - h if everything else z[ok] - h[ok]
    dims = list(angle_dims)
    if dims:
        y[:, dims] = wrap_angle(y[:, dims])
    if Hm is None:
        PHt = P[:, :, sel]  # (k, n, m)
        S = P[:, sel, :][:, :, sel] + Rm
    else:
        PHt = P @ np.swapaxes(Hm, 1, 2)
        S = Hm @ PHt + Rm
    S = 0.5 * (S + np.swapaxes(S, 1, 2))
    try:
        np.linalg.cholesky(S)  # positive-definiteness check of every row at once
    except np.linalg.LinAlgError:
        # rare: find the offending rows, keep the others
        pd = np.array([bool(np.all(np.linalg.eigvalsh(s) > 0)) for s in S])
        ok[np.flatnonzero(ok)[~pd]] = False
        if not pd.any():
            return mean.copy(), cov.copy(), ok, nis
        everything = False
        P, Rm, y, PHt, S = P[pd], Rm[pd], y[pd], PHt[pd], S[pd]
        Hm = None if Hm is None else Hm[pd]
    s_inv = np.linalg.inv(S)
    gain = PHt @ s_inv  # (k, n, m)
    nis_ok = (y[:, None, :] @ s_inv @ y[..., None])[:, 0, 0]
    upd = (mean if everything else mean[ok]) + (gain @ y[..., None])[..., 0]
    sdims = list(state_angle_dims)
    if sdims:
        upd[:, sdims] = wrap_angle(upd[:, sdims])
    if Hm is None:
        a = np.broadcast_to(np.eye(n), P.shape).copy()
        a[:, :, sel] -= gain
    else:
        a = np.eye(n) - gain @ Hm
    kt = np.swapaxes(gain, 1, 2)
    p_new = a @ P @ np.swapaxes(a, 1, 2) + gain @ Rm @ kt
    p_new = 0.5 * (p_new + np.swapaxes(p_new, 1, 2))
    if everything:
        return upd, p_new, ok, nis_ok
    new_mean, new_cov = mean.copy(), cov.copy()
    nis[ok] = nis_ok
    new_mean[ok] = upd
    new_cov[ok] = p_new
    return new_mean, new_cov, ok, nis


def to_output(mean: F64, cov: F64, is_ctrv: B) -> tuple[F64, F64]:
    """States in the object convention ``(x, y, z, yaw, vx, vy)``: ``((N, 6), (N, 6, 6))``.

    CV rows are already in it; CTRV rows map ``(v, w)`` to ``v (cos yaw, sin yaw)`` with
    the covariance ``J P J^T`` (the yaw-rate variance has no place in that convention).
    """
    out_m, out_p = mean.copy(), cov.copy()
    if is_ctrv.any():
        every = bool(is_ctrv.all())  # the common case: no row gathers / scatters
        m = mean if every else mean[is_ctrv]
        yaw, v = m[:, IYAW], m[:, I4]
        c, s = np.cos(yaw), np.sin(yaw)
        vc, vs = v * c, v * s
        # rows I4, I5 of the Jacobian: d(v cos yaw, v sin yaw) / d(yaw, v)
        jrows = np.zeros((m.shape[0], 2, STATE_DIM))
        jrows[:, 0, IYAW], jrows[:, 0, I4] = -vs, c
        jrows[:, 1, IYAW], jrows[:, 1, I4] = vc, s
        p = congruence_rows(cov if every else cov[is_ctrv], slice(I4, I5 + 1), jrows)
        p = 0.5 * (p + np.swapaxes(p, 1, 2))
        if every:
            out_m[:, I4], out_m[:, I5], out_p = vc, vs, p
        else:
            out_m[is_ctrv, I4] = vc
            out_m[is_ctrv, I5] = vs
            out_p[is_ctrv] = p
    return out_m, out_p


def heading_unresolved(mean: F64, cov: F64, is_ctrv: B) -> B:
    """``(N,)`` CTRV rows whose speed is not significant (``v^2 < 9 var(v)``).

    At ``v ~ 0`` the linearised CTRV velocity ``v (cos yaw, sin yaw)`` has no uncertainty
    across the heading, so a measured velocity across it could neither be gated in nor
    turn the heading; such rows are handled in Cartesian form (:func:`velocity_prior`,
    :meth:`BatchEKF.release_heading`)."""
    return np.asarray(is_ctrv & (mean[:, I4] ** 2 < 9.0 * cov[:, I4, I4]))


def velocity_prior(mean: F64, cov: F64, is_ctrv: B) -> tuple[F64, F64]:
    """``((N, 2), (N, 2, 2))`` velocity ``(vx, vy)`` and its covariance, for gating a
    measured velocity. Rows with an unresolved heading (:func:`heading_unresolved`) get the
    speed variance in every direction."""
    out_m, out_p = to_output(mean, cov, is_ctrv)
    vel, vcov = out_m[:, I4:], out_p[:, I4:, I4:].copy()
    loose = heading_unresolved(mean, cov, is_ctrv)
    if loose.any():
        vcov[loose] += cov[loose, I4, I4][:, None, None] * np.eye(2)
    return vel, vcov


def output_to_ctrv(mean: F64, cov: F64, init_yaw_rate_std: F64) -> tuple[F64, F64]:
    """Object-convention states ``(x, y, z, yaw, vx, vy)`` to CTRV ``(.., v, w=0)``.

    Where the velocity is significant (speed above 3 std of its uncertainty) the heading is
    taken from it (``yaw = atan2(vy, vx)``, ``v = |(vx, vy)|``, covariance by the polar
    Jacobian) because a CTRV filter cannot recover a wrong heading while its speed is near
    zero; elsewhere the box yaw stays and ``v`` is the velocity projected on it.
    ``init_yaw_rate_std`` ``(N,)`` sets the new yaw-rate variance.
    """
    n = mean.shape[0]
    vx, vy = mean[:, I4], mean[:, I5]
    speed = np.hypot(vx, vy)
    vel_var = 0.5 * (cov[:, I4, I4] + cov[:, I5, I5])
    polar = speed**2 > 9.0 * np.maximum(vel_var, 1e-12)
    yaw = np.where(polar, np.arctan2(vy, vx), mean[:, IYAW])
    c, s = np.cos(yaw), np.sin(yaw)
    safe = np.where(polar, speed, 1.0)
    out = mean.copy()
    out[:, IYAW] = wrap_angle(yaw)
    out[:, I4] = np.where(polar, speed, vx * c + vy * s)
    out[:, I5] = 0.0
    # rows IYAW, I4, I5 of the Jacobian (the others are the identity's); row I5 is zero
    # (the yaw rate is reset below).
    # polar rows: yaw from (vx, vy); projection rows: keep yaw, v = vx cos + vy sin
    jrows = np.zeros((n, 3, STATE_DIM))
    jrows[:, 0, IYAW] = np.where(polar, 0.0, 1.0)
    jrows[:, 0, I4] = np.where(polar, -vy / safe**2, 0.0)
    jrows[:, 0, I5] = np.where(polar, vx / safe**2, 0.0)
    jrows[:, 1, IYAW] = np.where(polar, 0.0, -vx * s + vy * c)
    jrows[:, 1, I4] = c
    jrows[:, 1, I5] = s
    p = congruence_rows(cov, slice(IYAW, I5 + 1), jrows)
    p[:, I5, :] = 0.0
    p[:, :, I5] = 0.0
    p[:, I5, I5] = np.asarray(init_yaw_rate_std, dtype=np.float64) ** 2
    return out, 0.5 * (p + np.swapaxes(p, 1, 2))


#: measurement models that pick state components (``H = I[indices]``)
_SELECTORS: dict[MeasurementModel, tuple[int, ...]] = {
    MeasurementModel.POSITION: (IX, IY),
    MeasurementModel.POSE: (IX, IY, IZ, IYAW),
}


class BatchEKF:
    """``N`` filters of either motion model in shared arrays (rows = tracks).

    Attributes:
        mean: ``(N, 6)`` float64 states (layout in the module docstring).
        cov: ``(N, 6, 6)`` float64 covariances.
        is_ctrv: ``(N,)`` bool, rows running CTRV.
        noise: ``(N, 3)`` float64 process-noise intensities (accel, yaw, z).
        rejected: measurements rejected so far (non-finite, non positive-definite).
    """

    def __init__(self) -> None:
        self.mean: F64 = np.zeros((0, STATE_DIM))
        self.cov: F64 = np.zeros((0, STATE_DIM, STATE_DIM))
        self.is_ctrv: B = np.zeros(0, dtype=bool)
        self.noise: F64 = np.zeros((0, 3))
        self.rejected = 0

    def __len__(self) -> int:
        return int(self.mean.shape[0])

    def append_output_states(self, mean: F64, cov: F64,
                             configs: Sequence[MotionConfig]) -> None:
        """Add rows given in the object convention (``(K, 6)``, ``(K, 6, 6)``), converted
        to each row's model (see :func:`output_to_ctrv` for CTRV rows)."""
        if mean.shape[0] != len(configs):
            raise ValueError(f"{mean.shape[0]} states for {len(configs)} configs")
        if mean.shape[0] == 0:
            return
        ctrv = np.array([cfg.model is MotionModel.CTRV for cfg in configs], dtype=bool)
        mean, cov = mean.astype(np.float64, copy=True), cov.astype(np.float64, copy=True)
        if ctrv.any():
            yaw_rate_std = np.array([cfg.init_yaw_rate_std for cfg in configs
                                     if isinstance(cfg, CTRVConfig)])
            mean[ctrv], cov[ctrv] = output_to_ctrv(mean[ctrv], cov[ctrv], yaw_rate_std)
        self.mean = np.concatenate([self.mean, mean])
        self.cov = np.concatenate([self.cov, cov])
        self.is_ctrv = np.concatenate([self.is_ctrv, ctrv])
        self.noise = np.concatenate([self.noise,
                                     np.array([cfg.noise_params() for cfg in configs])])

    def keep(self, mask: B) -> None:
        """Drop the rows where ``mask`` is False."""
        self.mean, self.cov = self.mean[mask], self.cov[mask]
        self.is_ctrv, self.noise = self.is_ctrv[mask], self.noise[mask]

    def set_config(self, rows: I64, configs: Sequence[MotionConfig]) -> int:
        """Give ``rows`` new motion configs; rows whose model changes are converted
        (through the object convention). Returns how many rows changed model."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return 0
        self.noise[rows] = np.array([cfg.noise_params() for cfg in configs])
        want = np.array([cfg.model is MotionModel.CTRV for cfg in configs], dtype=bool)
        change = want != self.is_ctrv[rows]
        if not change.any():
            return 0
        sel = rows[change]
        out_m, out_p = to_output(self.mean[sel], self.cov[sel], self.is_ctrv[sel])
        to_ctrv = want[change]
        if to_ctrv.any():
            std = np.array([cfg.init_yaw_rate_std for cfg, c in zip(configs, change, strict=True)
                            if c and isinstance(cfg, CTRVConfig)])
            out_m[to_ctrv], out_p[to_ctrv] = output_to_ctrv(out_m[to_ctrv], out_p[to_ctrv], std)
        self.mean[sel], self.cov[sel] = out_m, out_p
        self.is_ctrv[sel] = want[change]
        return int(change.sum())

    def release_heading(self, rows: I64) -> I64:
        """Switch the rows of ``rows`` with an unresolved heading (:func:`heading_unresolved`)
        to the CV layout with an isotropic velocity covariance, so that a velocity
        measurement can set the direction of motion. Returns the rows switched; give them
        back their CTRV config with :meth:`set_config` after the update (the heading is then
        taken from the velocity where it is significant, see :func:`output_to_ctrv`)."""
        rows = np.asarray(rows, dtype=np.int64)
        loose = rows[heading_unresolved(self.mean[rows], self.cov[rows], self.is_ctrv[rows])]
        if loose.size == 0:
            return loose
        speed_var = self.cov[loose, I4, I4].copy()
        out_m, out_p = to_output(self.mean[loose], self.cov[loose], self.is_ctrv[loose])
        out_p[:, I4:, I4:] += speed_var[:, None, None] * np.eye(2)
        self.mean[loose], self.cov[loose] = out_m, out_p
        self.is_ctrv[loose] = False
        return loose

    def predict(self, dt: float) -> None:
        """Propagate every row by ``dt`` seconds (``dt >= 0``; 0 is a no-op)."""
        if not math.isfinite(dt) or dt < 0:
            raise ValueError(f"dt must be finite and >= 0 s, got {dt}")
        if dt == 0 or len(self) == 0:
            return
        q = process_noise(self.mean, self.is_ctrv, self.noise, dt)
        new_mean, jrows = transition_rows(self.mean, self.is_ctrv, dt)
        p = congruence_rows(self.cov, MOTION_ROWS, jrows) + q  # F P F^T + Q
        self.mean = new_mean
        self.cov = 0.5 * (p + np.swapaxes(p, 1, 2))

    def update(self, rows: npt.ArrayLike, z: npt.ArrayLike, R: npt.ArrayLike,
               model: MeasurementModel | npt.ArrayLike) -> B:
        """Update ``rows`` with one measurement each.

        Args:
            rows: ``(K,)`` distinct row indices.
            z: ``(K, m)`` measurements; R: ``(K, m, m)`` their covariances.
            model: a :class:`MeasurementModel`, or a linear ``(m, 6)`` matrix ``H`` (applied
                to the raw state of every row; no angle wrapping).

        Returns:
            ``(K,)`` bool, the measurements applied; the others were rejected (counted in
            :attr:`rejected`).
        """
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        zz = np.asarray(z, dtype=np.float64)
        rr = np.asarray(R, dtype=np.float64)
        if isinstance(model, MeasurementModel):
            m = model.dim
        else:
            hmat = np.asarray(model, dtype=np.float64)
            if hmat.ndim != 2 or hmat.shape[1] != STATE_DIM:
                raise ValueError(f"H must be (m, {STATE_DIM}), got {hmat.shape}")
            m = hmat.shape[0]
        if zz.shape != (idx.size, m) or rr.shape != (idx.size, m, m):
            raise ValueError(f"expected z ({idx.size}, {m}) and R ({idx.size}, {m}, {m}), "
                             f"got {zz.shape} and {rr.shape}")
        if idx.size == 0:
            return np.zeros(0, dtype=bool)
        mean, cov = self.mean[idx], self.cov[idx]
        angles: tuple[int, ...]
        if isinstance(model, MeasurementModel) and model in _SELECTORS:
            # a plain pick of state components: same for both models, products are slices
            angles = (3,) if model is MeasurementModel.POSE else ()
            new_mean, new_cov, ok, _ = ekf_update(mean, cov, zz, rr, None, None, angles,
                                                  select=_SELECTORS[model])
        else:
            if isinstance(model, MeasurementModel):
                h, H, angles = measurement(model, mean, self.is_ctrv[idx])
            else:
                h = mean @ hmat.T
                H, angles = np.broadcast_to(hmat, (idx.size, m, STATE_DIM)), ()
            new_mean, new_cov, ok, _ = ekf_update(mean, cov, zz, rr, h, np.asarray(H), angles)
        self.mean[idx], self.cov[idx] = new_mean, new_cov
        self.rejected += int((~ok).sum())
        return ok

    def output(self) -> tuple[F64, F64]:
        """All rows in the object convention, see :func:`to_output`."""
        return to_output(self.mean, self.cov, self.is_ctrv)


class EKF:
    """One object's filter (a :class:`BatchEKF` of one row), for single-target use.

    Args:
        config: motion model and its noise.
        mean: ``(6,)`` initial state in the **object convention** ``(x, y, z, yaw, vx, vy)``.
        cov: ``(6, 6)`` its covariance.
    """

    def __init__(self, config: MotionConfig, mean: npt.ArrayLike, cov: npt.ArrayLike) -> None:
        m = np.asarray(mean, dtype=np.float64).reshape(1, STATE_DIM)
        p = np.asarray(cov, dtype=np.float64).reshape(1, STATE_DIM, STATE_DIM)
        if not (np.isfinite(m).all() and np.isfinite(p).all()):
            raise ValueError("initial mean and covariance must be finite")
        self.config = config
        self._bank = BatchEKF()
        self._bank.append_output_states(m, p, [config])

    @property
    def state(self) -> F64:
        """``(6,)`` raw state in the model's own layout."""
        return self._bank.mean[0].copy()

    @property
    def covariance(self) -> F64:
        """``(6, 6)`` raw state covariance."""
        return self._bank.cov[0].copy()

    @property
    def rejected(self) -> int:
        return self._bank.rejected

    def predict(self, dt: float) -> None:
        """Propagate by ``dt`` seconds."""
        self._bank.predict(dt)

    def update(self, z: npt.ArrayLike, R: npt.ArrayLike,
               model: MeasurementModel | npt.ArrayLike = MeasurementModel.POSE) -> bool:
        """Apply one measurement ``z`` ``(m,)`` with covariance ``R`` ``(m, m)``; False (and
        counted) when rejected."""
        zz = np.asarray(z, dtype=np.float64).reshape(1, -1)
        rr = np.asarray(R, dtype=np.float64).reshape(1, zz.shape[1], zz.shape[1])
        return bool(self._bank.update(np.zeros(1, dtype=np.int64), zz, rr, model)[0])

    def output(self) -> tuple[F64, F64]:
        """``((6,), (6, 6))`` in the object convention ``(x, y, z, yaw, vx, vy)``."""
        m, p = self._bank.output()
        return m[0], p[0]


__all__ = [
    "EKF",
    "MOTION_ROWS",
    "OUTPUT_LABELS",
    "STATE_DIM",
    "BatchEKF",
    "CTRVConfig",
    "CVConfig",
    "MeasurementModel",
    "MotionConfig",
    "MotionModel",
    "congruence_rows",
    "ctrv_transition",
    "cv_transition",
    "ekf_update",
    "heading_unresolved",
    "measurement",
    "output_to_ctrv",
    "process_noise",
    "resolve_yaw_ambiguity",
    "to_output",
    "transition",
    "transition_rows",
    "velocity_prior",
    "wrap_angle",
]
