"""Path following with a speed profile: the motion primitive of the expert, the rules baseline
and the VLM adapter.

:func:`lane_trajectory` turns a path (a lane centreline, a movement through a junction, the
shoulder) given in ``base_link`` into an action chunk:

1. **Geometry.** The path is resampled every :data:`REF_STEP_M` m, lightly smoothed (a path
   given as a coarse polyline would otherwise put all its turning into its vertices) and
   extended straight past its ends. The ego's lateral offset ``d0`` from the path and its
   heading relative to it are blended out over ``L`` metres by a quintic (offset, slope and
   curvature continuous at both ends), so a lane change or a pull-over is the same call as
   lane keeping with a larger ``d0``. ``L`` grows with ``sqrt(|d0|)`` and with speed so that
   the blend's lateral acceleration stays near ``blend_lateral_accel_mps2``.
2. **Speed caps along the path.** The target speed, a curvature limit
   ``sqrt(max_lateral_accel / |kappa|)`` and a stop point (``stop_at_m``), each propagated
   backwards at ``comfort_decel_mps2`` so that the ego slows down in time.
3. **Obstacles.** Each object is predicted at constant velocity over ``predict_horizon_s``; the
   first predicted position whose footprint enters the corridor (the ego's half width plus
   the object's half extent across the path plus ``lateral_margin_m``) makes it a leader:
   at the current time with its speed along the path (car following), later as a standing
   obstacle (someone crossing towards the path: wait for them).
4. **Longitudinal rollout.** Speed control towards the caps and the Intelligent Driver Model
   (IDM) against each leader, integrated every ``sim_dt_s`` with acceleration in
   ``[-max_decel_mps2, max_accel_mps2]`` and jerk at most ``max_jerk_mps3``; the ego's
   position along the path and its speed are sampled on the chunk's time grid.

With the default config the chunks pass the kinematic checks of
:class:`~mm_perception.planning.safety.SafetyFilter` (defaults of
:class:`~mm_perception.planning.safety.SafetyConfig`): every limit here is below its limit there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from mm_perception.core.checks import check_numbers
from mm_perception.core.errors import ConfigError
from mm_perception.planning.observation import (
    ChunkSpec,
    PlannerObservation,
    SceneObject,
    chunk_to_world,
)
from mm_perception.planning.trajectory import Trajectory

F64 = npt.NDArray[np.float64]

#: resampling step of the reference path, m
REF_STEP_M = 0.5
#: half window of the moving-average smoothing of the reference path, samples
_SMOOTH_HALF = 4
#: peak |d''| of the unit quintic blend (1 - 10t^3 + 15t^4 - 6t^5) is 10/sqrt(3) / L^2
_BLEND_PEAK = 10.0 / math.sqrt(3.0)
#: labels predicted over the shorter vehicle horizon
_VEHICLES = frozenset({"car", "truck", "bus"})
#: the largest relative heading taken into the blend's initial slope, rad
_MAX_REL_HEADING = 0.5


@dataclass(frozen=True)
class LaneFollowConfig:
    """Limits and gains of :func:`lane_trajectory` (SI units).

    Attributes:
        cruise_speed_mps: speed of a planner that has no other target (the rules baseline).
        max_speed_mps: no target above this, m/s.
        max_accel_mps2: largest planned acceleration.
        comfort_decel_mps2: braking for stop points and curves (the caps' slopes).
        max_decel_mps2: strongest planned braking (car following, sudden obstacles).
        max_jerk_mps3: largest |jerk| of the rollout.
        max_lateral_accel_mps2: curve speed limit ``v^2 |kappa| <= this``.
        time_headway_s: IDM time headway.
        standstill_gap_m: IDM gap kept to a standing leader, bumper to bumper, m.
        ego_length_m / ego_width_m: ego footprint centred on base_link, m.
        lateral_margin_m: clearance added to the corridor half width, m.
        blend_lateral_accel_mps2: lateral acceleration of the offset blend at the ego's speed.
        blend_max_curvature_1pm: curvature of the offset blend at standstill.
        blend_min_m: shortest blend, m.
        predict_horizon_s: people (pedestrians, cyclists, unknown) are predicted this far
            ahead (constant velocity), s.
        vehicle_predict_horizon_s: vehicles (car, truck, bus) are predicted only this far:
            they follow curved lanes, and a straight-line prediction of a turning car
            crosses half the junction.
        predict_step_s: prediction time step, s.
        sim_dt_s: rollout time step, s.
        speed_gain_1ps: proportional gain from speed error to acceleration, 1/s.
    """

    cruise_speed_mps: float = 9.0
    max_speed_mps: float = 14.5
    max_accel_mps2: float = 1.5
    comfort_decel_mps2: float = 2.0
    max_decel_mps2: float = 3.0
    max_jerk_mps3: float = 6.0
    max_lateral_accel_mps2: float = 2.0
    time_headway_s: float = 1.2
    standstill_gap_m: float = 3.0
    ego_length_m: float = 4.6
    ego_width_m: float = 1.9
    lateral_margin_m: float = 0.4
    blend_lateral_accel_mps2: float = 1.5
    blend_max_curvature_1pm: float = 0.1
    blend_min_m: float = 10.0
    predict_horizon_s: float = 3.0
    vehicle_predict_horizon_s: float = 2.0
    predict_step_s: float = 0.25
    sim_dt_s: float = 0.05
    speed_gain_1ps: float = 1.5

    def __post_init__(self) -> None:
        check_numbers(self, [f.name for f in fields(self)])
        if self.comfort_decel_mps2 > self.max_decel_mps2:
            raise ConfigError(f"LaneFollowConfig.comfort_decel_mps2 ({self.comfort_decel_mps2})"
                              f" must not exceed max_decel_mps2 ({self.max_decel_mps2})")
        if self.cruise_speed_mps > self.max_speed_mps:
            raise ConfigError(f"LaneFollowConfig.cruise_speed_mps ({self.cruise_speed_mps}) "
                              f"must not exceed max_speed_mps ({self.max_speed_mps})")


# ---------------------------------------------------------------------------- geometry


def _arc(pts: F64) -> F64:
    d = np.diff(pts, axis=0)
    return np.concatenate([[0.0], np.cumsum(np.hypot(d[:, 0], d[:, 1]))])


def _clean(path: F64) -> F64:
    """Drop repeated points (a polyline with zero-length segments has no direction)."""
    keep = np.concatenate([[True], np.hypot(*np.diff(path, axis=0).T) > 1e-6])
    return path[keep]


def _resample(path: F64, s_from: float, s_to: float) -> tuple[F64, F64]:
    """Points every REF_STEP_M of arc length from ``s_from`` to ``s_to`` (arc length of the
    polyline, may lie outside it: extended straight), and their arc lengths."""
    s = _arc(path)
    grid = np.arange(s_from, s_to + 1e-9, REF_STEP_M)
    x = np.interp(grid, s, path[:, 0])
    y = np.interp(grid, s, path[:, 1])
    pts = np.stack([x, y], axis=1)
    d0 = (path[1] - path[0]) / max(s[1], 1e-9)
    d1 = (path[-1] - path[-2]) / max(s[-1] - s[-2], 1e-9)
    before, after = grid < 0.0, grid > s[-1]
    pts[before] = path[0] + grid[before, None] * d0
    pts[after] = path[-1] + (grid[after, None] - s[-1]) * d1
    return pts, grid


def _smooth(pts: F64) -> F64:
    """Moving average over 2 * _SMOOTH_HALF + 1 samples (ends padded by extrapolation)."""
    h = _SMOOTH_HALF
    if pts.shape[0] < 2 * h + 2:
        return pts
    head = pts[0] - (pts[1] - pts[0]) * np.arange(h, 0, -1)[:, None]
    tail = pts[-1] + (pts[-1] - pts[-2]) * np.arange(1, h + 1)[:, None]
    padded = np.vstack([head, pts, tail])
    kernel = np.ones(2 * h + 1) / (2 * h + 1)
    return np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(2)], axis=1)


def _tangents(pts: F64) -> F64:
    t = np.gradient(pts, axis=0)
    n = np.hypot(t[:, 0], t[:, 1])
    return t / np.where(n > 1e-12, n, 1.0)[:, None]


def _project_origin(pts: F64, s: F64) -> tuple[float, float]:
    """Arc length and signed lateral offset (> 0: origin left of the path) of the origin."""
    seg = np.diff(pts, axis=0)
    lens = np.hypot(seg[:, 0], seg[:, 1])
    u = np.clip((-(pts[:-1] * seg).sum(axis=1)) / np.maximum(lens ** 2, 1e-12), 0.0, 1.0)
    foot = pts[:-1] + u[:, None] * seg
    k = int(np.argmin(np.hypot(foot[:, 0], foot[:, 1])))
    t = seg[k] / max(lens[k], 1e-12)
    lateral = float(t[0] * (0.0 - foot[k, 1]) - t[1] * (0.0 - foot[k, 0]))
    return float(s[k] + u[k] * lens[k]), lateral


def _blend(u: F64, d0: float, m0: float, length: float) -> F64:
    """Quintic Hermite offset: ``d(0) = d0, d'(0) = m0, d''(0) = 0``, zero value, slope and
    curvature at ``u = length`` and beyond."""
    t = np.clip(u / length, 0.0, 1.0)
    h0 = 1 - 10 * t ** 3 + 15 * t ** 4 - 6 * t ** 5
    h1 = t - 6 * t ** 3 + 8 * t ** 4 - 3 * t ** 5
    return np.asarray(d0 * h0 + m0 * length * h1, dtype=np.float64)


@dataclass(frozen=True)
class _Reference:
    """The path the ego will drive, from its current position (base_link)."""

    xy: F64        # (N, 2) points, m
    sigma: F64     # (N,) arc length from the ego, m
    tangent: F64   # (N, 2) unit tangents
    v_cap: F64     # (N,) speed cap, m/s


def _reference(path_base: F64, v_now: float, target: float, stop_at_m: float | None,
               cfg: LaneFollowConfig, spec: ChunkSpec) -> _Reference:
    path = _clean(path_base)
    if path.shape[0] < 2:
        raise ValueError("path_base needs at least 2 distinct points")
    reach = spec.horizon_s * cfg.max_speed_mps + 20.0
    s_raw, _ = _project_origin(path, _arc(path))
    margin = (2 * _SMOOTH_HALF + 4) * REF_STEP_M
    smooth = _smooth(_resample(path, s_raw - margin, s_raw + reach + 80.0)[0])
    # offset and heading are measured against the smoothed path the reference is built on
    # (the smoothing moves a curve inwards a little: measured against the raw path, the
    # first reference point would not be where the ego is)
    s_smooth = _arc(smooth)
    s0, d0 = _project_origin(smooth, s_smooth)
    base, grid = _resample(smooth, s0, s0 + reach + 60.0)
    tan = _tangents(base)
    normal = np.stack([-tan[:, 1], tan[:, 0]], axis=1)
    u = grid - s0
    rel_heading = -math.atan2(tan[0, 1], tan[0, 0])  # ego heading (0) minus path heading
    m0 = math.tan(float(np.clip(rel_heading, -_MAX_REL_HEADING, _MAX_REL_HEADING)))
    v_ref = v_now  # the blend is driven at about the current speed (slow in a turn)
    # sized by the offset alone: a length that also grew with the heading error would let
    # the slope term (m0 * L) carry the ego ever further away before it turns back
    mag = abs(d0)
    length = max(cfg.blend_min_m, math.sqrt(_BLEND_PEAK * mag / cfg.blend_max_curvature_1pm),
                 v_ref * math.sqrt(_BLEND_PEAK * mag / cfg.blend_lateral_accel_mps2))
    offset = _blend(u, d0, m0, length)
    xy = base + offset[:, None] * normal
    xy[0] = (0.0, 0.0)  # the rollout starts exactly at the ego (equal up to rounding)
    sigma = _arc(xy)
    tangent = _tangents(xy)
    heading = np.unwrap(np.arctan2(tangent[:, 1], tangent[:, 0]))
    # curvature over a 2 m baseline: robust to the residual kinks of the polyline
    w = 2
    kappa = np.zeros_like(sigma)
    if sigma.size > 2 * w:
        kappa[w:-w] = (heading[2 * w:] - heading[:-2 * w]) / np.maximum(
            sigma[2 * w:] - sigma[:-2 * w], 1e-6)
        kappa[:w], kappa[-w:] = kappa[w], kappa[-w - 1]
    cap = np.minimum(np.sqrt(cfg.max_lateral_accel_mps2 / np.maximum(np.abs(kappa), 1e-6)),
                     min(target, cfg.max_speed_mps))
    if stop_at_m is not None:
        cap = np.minimum(cap, np.sqrt(2 * cfg.comfort_decel_mps2
                                      * np.maximum(stop_at_m - sigma, 0.0)))
    # slow down in time for every cap ahead (backward pass at the comfortable deceleration)
    for i in range(cap.size - 2, -1, -1):
        cap[i] = min(cap[i], math.sqrt(cap[i + 1] ** 2 + 2 * cfg.comfort_decel_mps2
                                       * (sigma[i + 1] - sigma[i])))
    return _Reference(xy, sigma, tangent, cap)


# ---------------------------------------------------------------------------- obstacles


@dataclass(frozen=True)
class Leader:
    """An obstacle on the path ahead.

    Attributes:
        gap_m: free distance from the ego's front to the obstacle's near edge along the path
            at ``t = 0`` (for a standing obstacle: where it will be), m.
        speed_mps: its speed along the path (>= 0), m/s.
        object_id: the object it comes from.
    """

    gap_m: float
    speed_mps: float
    object_id: int


def _leaders(ref: _Reference, obstacles: Sequence[SceneObject], cfg: LaneFollowConfig
             ) -> list[Leader]:
    out = []
    normal = np.stack([-ref.tangent[:, 1], ref.tangent[:, 0]], axis=1)
    half_len = cfg.ego_length_m / 2
    for obj in obstacles:
        k_now = int(np.argmin(np.hypot(ref.xy[:, 0] - obj.xy[0], ref.xy[:, 1] - obj.xy[1])))
        if k_now == 0:
            continue  # behind the ego now (e.g. catching up from behind): not ours to avoid
        horizon = (cfg.vehicle_predict_horizon_s if obj.label in _VEHICLES
                   else cfg.predict_horizon_s)
        taus = np.arange(0.0, horizon + 1e-9, cfg.predict_step_s)
        hl, hw = float(obj.size[0]) / 2, float(obj.size[1]) / 2
        if not (np.isfinite(obj.xy).all() and np.isfinite(obj.velocity).all()):
            continue
        for tau in taus:
            c = obj.xy + obj.velocity * tau
            k = int(np.argmin(np.hypot(ref.xy[:, 0] - c[0], ref.xy[:, 1] - c[1])))
            if k == 0 or k == ref.sigma.size - 1:
                continue  # behind the ego or beyond the reference: not on the path ahead
            lateral = abs(float((c - ref.xy[k]) @ normal[k]))
            rel = obj.yaw - math.atan2(ref.tangent[k, 1], ref.tangent[k, 0])
            across = abs(hl * math.sin(rel)) + abs(hw * math.cos(rel))
            along = abs(hl * math.cos(rel)) + abs(hw * math.sin(rel))
            if lateral > cfg.ego_width_m / 2 + across + cfg.lateral_margin_m:
                continue
            gap = float(ref.sigma[k]) - along - half_len
            if gap < -cfg.ego_length_m:
                break  # alongside or behind the ego's front: not ahead of it
            v_along = float(obj.velocity @ ref.tangent[k]) if tau == 0.0 else 0.0
            out.append(Leader(max(gap, 0.0), max(v_along, 0.0), obj.object_id))
            break
    return out


# ---------------------------------------------------------------------------- rollout


def _rollout(ref: _Reference, v0: float, target: float, leaders: Sequence[Leader],
             stop_at_m: float | None, cfg: LaneFollowConfig, spec: ChunkSpec
             ) -> tuple[F64, F64]:
    """Arc length and speed at ``spec.times_s`` (s), from the ego at ``(0, v0)``; never
    past ``stop_at_m`` (the cap's last creeping centimetres end there)."""
    dt = cfg.sim_dt_s
    n = math.ceil(spec.horizon_s / dt)
    t_grid = np.arange(n + 1) * dt
    sig = np.zeros(n + 1)
    vel = np.zeros(n + 1)
    vel[0] = v0
    a_prev: float | None = None
    v_des = max(min(target, cfg.max_speed_mps), 0.1)
    sqrt_ab = math.sqrt(cfg.max_accel_mps2 * cfg.comfort_decel_mps2)
    for i in range(n):
        s, v, t = sig[i], vel[i], t_grid[i]
        cap = float(np.interp(s, ref.sigma, ref.v_cap))
        # feed-forward along the cap profile (-b on a braking ramp) plus feedback on the
        # error: without it the speed lags a ramp by b / gain and overshoots stop points
        slope = (float(np.interp(s + 0.5, ref.sigma, ref.v_cap)) - cap) / 0.5
        a = cfg.speed_gain_1ps * (cap - v) + min(slope, 0.0) * v
        for lead in leaders:
            gap = lead.gap_m + lead.speed_mps * t - s
            s_star = cfg.standstill_gap_m + max(0.0, v * cfg.time_headway_s
                                                + v * (v - lead.speed_mps) / (2 * sqrt_ab))
            a_idm = cfg.max_accel_mps2 * (1 - (v / v_des) ** 4 - (s_star / max(gap, 0.1)) ** 2)
            a = min(a, a_idm)
        a = float(np.clip(a, -cfg.max_decel_mps2, cfg.max_accel_mps2))
        if a_prev is not None:
            step = cfg.max_jerk_mps3 * dt
            a = float(np.clip(a, a_prev - step, a_prev + step))
        v_next = v + a * dt
        if v_next < 0.0:  # stop within the step; standing still is not braking
            v_next = 0.0
            a = -v / dt
        s_next = s + (v + v_next) / 2 * dt
        if stop_at_m is not None and s_next >= stop_at_m:
            s_next, v_next, a = max(stop_at_m, s), 0.0, 0.0
        sig[i + 1] = s_next
        vel[i + 1] = v_next
        a_prev = 0.0 if v_next == 0.0 and a < 0 else a
    times = spec.times_s
    return np.interp(times, t_grid, sig), np.interp(times, t_grid, vel)


def lane_trajectory(obs: PlannerObservation, path_base: npt.ArrayLike, target_speed_mps: float,
                    *, stop_at_m: float | None = None, obstacles: Sequence[SceneObject] = (),
                    config: LaneFollowConfig | None = None, spec: ChunkSpec | None = None,
                    source: str = "lane_follow") -> Trajectory:
    """An action chunk that follows ``path_base`` (see the module docstring).

    Args:
        obs: the observation (its ego state is the chunk's start; its stamp the chunk's).
        path_base: ``(P, 2)`` float path points along the direction of travel, m,
            ``base_link`` at ``obs``; extended straight past both ends.
        target_speed_mps: desired speed, m/s (>= 0; clipped to ``config.max_speed_mps``).
        stop_at_m: stop with base_link at this arc length along the driven path from the
            ego (m), or None.
        obstacles: objects in ``base_link`` at ``obs`` to follow or stop for.
        config: limits (default :class:`LaneFollowConfig`).
        spec: chunk time grid (default :class:`ChunkSpec`).
        source: planner name written into the trajectory.

    Returns:
        A world-frame :class:`Trajectory` of ``spec.steps + 1`` samples (see
        :func:`~mm_perception.planning.observation.chunk_to_world`).

    Raises:
        ValueError: a path with fewer than 2 distinct points or non-finite values, or a
            negative / non-finite target speed.
    """
    cfg = config if config is not None else LaneFollowConfig()
    grid = spec if spec is not None else ChunkSpec()
    path = np.asarray(path_base, dtype=np.float64)
    if path.ndim != 2 or path.shape[1] != 2 or path.shape[0] < 2:
        raise ValueError(f"path_base must have shape (P >= 2, 2), got {path.shape}")
    if not np.isfinite(path).all():
        raise ValueError("path_base contains NaN or Inf")
    if not (math.isfinite(target_speed_mps) and target_speed_mps >= 0.0):
        raise ValueError(f"target_speed_mps must be finite and >= 0, got {target_speed_mps!r}")
    v0 = max(float(obs.ego.linear_velocity[0]), 0.0)
    target = min(float(target_speed_mps), cfg.max_speed_mps)
    ref = _reference(path, v0, target, stop_at_m, cfg, grid)
    leaders = _leaders(ref, obstacles, cfg)
    sig, speed = _rollout(ref, v0, target, leaders, stop_at_m, cfg, grid)
    x = np.interp(sig, ref.sigma, ref.xy[:, 0])
    y = np.interp(sig, ref.sigma, ref.xy[:, 1])
    return chunk_to_world(obs.ego, np.stack([x, y], axis=1), speed, grid, source)


def straight_path(length_m: float = 60.0, step_m: float = 2.0) -> F64:
    """``(N, 2)`` a straight path along base_link x from the ego, m (no lane known)."""
    n = max(2, math.ceil(length_m / step_m) + 1)
    return np.stack([np.linspace(0.0, length_m, n), np.zeros(n)], axis=1)


def path_leaders(obs_path_base: npt.ArrayLike, obstacles: Sequence[SceneObject],
                 config: LaneFollowConfig | None = None) -> list[Leader]:
    """The obstacles :func:`lane_trajectory` would follow or stop for on ``obs_path_base``
    when the ego stands on it (for diagnostics and tests)."""
    cfg = config if config is not None else LaneFollowConfig()
    path = np.asarray(obs_path_base, dtype=np.float64)
    ref = _reference(path, 0.0, cfg.cruise_speed_mps, None, cfg, ChunkSpec())
    return _leaders(ref, obstacles, cfg)


__all__ = ["REF_STEP_M", "LaneFollowConfig", "Leader", "lane_trajectory", "path_leaders",
           "straight_path"]
