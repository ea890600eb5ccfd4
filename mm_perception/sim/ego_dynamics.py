"""Ego motion: kinematic bicycle (vehicle) and unicycle (robot) models, trajectory tracking,
the recording autopilot, and collision / off-road helpers (numpy only).

Reference point: both models move the actor frame origin, which is ``base_link`` = the centre
of the footprint (:mod:`~mm_perception.sim.spec`). The bicycle model is the rear-axle
kinematic bicycle with its rear axle *placed at base_link*: the origin then never slips
sideways, so an :class:`ActorState` (speed along the heading plus yaw rate) describes the
body's motion exactly (``v + omega x r``, which the radar Doppler model uses). The price is
that the body pivots about its centre instead of its physical rear axle, which a kinematic
simulator can afford; the turning radius of base_link is ``wheelbase / tan(steering)``.

Integration is exact for inputs held constant over ``dt``: the speed follows ``v0 + a t``
until it reaches a speed limit (then stays), the bicycle moves along a circular arc of
curvature ``tan(delta) / L`` for the distance travelled, and the unicycle position is the
closed-form integral of ``v(t) * exp(i (yaw0 + omega t))``.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mm_perception.sim.actors import (
    boxes_overlap,
    find_collisions,
    footprint,
    footprints,
    overlap_matrix,
)
from mm_perception.sim.spec import ActorModel, ActorState
from mm_perception.sim.traffic import EGO_DRIVER, idm_acceleration

if TYPE_CHECKING:
    from mm_perception.sim.layouts import Layout
    from mm_perception.sim.scenario import EgoSpec, Scenario
    from mm_perception.sim.traffic import TrafficModel

F64 = npt.NDArray[np.float64]


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
            or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _positive(name: str, value: Any) -> float:
    out = _finite(name, value)
    if out <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return out


@dataclass(frozen=True)
class EgoCommand:
    """One control input, held for a step.

    Attributes:
        acceleration: longitudinal acceleration, m/s^2 (negative brakes).
        steering_angle: front-wheel angle, rad, > 0 turns left (vehicle); None = straight.
        yaw_rate: rad/s, > 0 turns left (robot); None = 0.
    """

    acceleration: float
    steering_angle: float | None = None
    yaw_rate: float | None = None

    def __post_init__(self) -> None:
        _finite("acceleration", self.acceleration)
        if self.steering_angle is not None:
            _finite("steering_angle", self.steering_angle)
        if self.yaw_rate is not None:
            _finite("yaw_rate", self.yaw_rate)
        if self.steering_angle is not None and self.yaw_rate is not None:
            raise ValueError("give steering_angle (vehicle) or yaw_rate (robot), not both")


@dataclass(frozen=True, eq=False)
class TrajectoryCommand:
    """A timed trajectory to follow (a planner's output).

    Attributes:
        times_s: ``(N,)`` float64 times relative to the moment the command is given (0 =
            now), strictly increasing, N >= 2.
        xy: ``(N, 2)`` float64 world positions of base_link, m.
        speeds: ``(N,)`` float64 speeds, m/s.
    """

    times_s: F64
    xy: F64
    speeds: F64

    def __post_init__(self) -> None:
        t = np.array(self.times_s, dtype=np.float64).reshape(-1)
        xy = np.array(self.xy, dtype=np.float64)
        v = np.array(self.speeds, dtype=np.float64).reshape(-1)
        if t.size < 2 or xy.shape != (t.size, 2) or v.shape != t.shape:
            raise ValueError(f"trajectory needs N >= 2 times, (N, 2) xy and (N,) speeds, got "
                             f"{t.shape}, {xy.shape}, {v.shape}")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(xy)) and np.all(np.isfinite(v))):
            raise ValueError("trajectory contains NaN or Inf")
        if np.any(np.diff(t) <= 0):
            raise ValueError("trajectory times_s must be strictly increasing")
        for name, arr in (("times_s", t), ("xy", xy), ("speeds", v)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)


def _advance_speed(v0: float, a: float, dt: float, v_min: float, v_max: float
                   ) -> tuple[float, float, float]:
    """Speed under constant acceleration, held at the limit once reached.

    Returns:
        ``(t1, v1, ds)``: time spent accelerating (s), final speed (m/s), signed distance
        travelled over ``dt`` (m).
    """
    if a > 0 and v0 < v_max:
        t1 = min(dt, (v_max - v0) / a)
    elif a < 0 and v0 > v_min:
        t1 = min(dt, (v_min - v0) / a)
    else:
        t1 = 0.0
    v1 = v0 + a * t1
    ds = v0 * t1 + 0.5 * a * t1 * t1 + v1 * (dt - t1)
    return t1, v1, ds


def _polyline_closest(pts: F64, x: float, y: float) -> tuple[float, F64]:
    """Arc length of the closest point of a polyline to (x, y), and the cumulative lengths."""
    seg = np.diff(pts, axis=0)
    lens = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(lens)])
    safe = np.where(lens > 1e-12, lens, 1.0)
    u = np.clip(((x - pts[:-1, 0]) * seg[:, 0] + (y - pts[:-1, 1]) * seg[:, 1]) / safe ** 2,
                0.0, 1.0)
    fx, fy = pts[:-1, 0] + u * seg[:, 0], pts[:-1, 1] + u * seg[:, 1]
    k = int(np.argmin((fx - x) ** 2 + (fy - y) ** 2))
    return float(cum[k] + u[k] * lens[k]), cum


def _polyline_point(pts: F64, cum: F64, s: float) -> tuple[float, float]:
    """Point at arc length s along a polyline, extrapolated along the end segments."""
    if s >= cum[-1]:
        d = pts[-1] - pts[-2]
        n = float(np.hypot(*d)) or 1.0
        e = pts[-1] + d / n * (s - cum[-1])
        return float(e[0]), float(e[1])
    k = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(pts) - 2))
    seg_len = cum[k + 1] - cum[k]
    u = (s - cum[k]) / seg_len if seg_len > 0 else 0.0
    p = pts[k] + u * (pts[k + 1] - pts[k])
    return float(p[0]), float(p[1])


def _pursuit(state: ActorState, tx: float, ty: float) -> tuple[float, float]:
    """Pure-pursuit curvature towards a target point, and its bearing in the body frame."""
    dx, dy = tx - state.x, ty - state.y
    c, s = math.cos(state.yaw), math.sin(state.yaw)
    lx, ly = c * dx + s * dy, -s * dx + c * dy
    d2 = lx * lx + ly * ly
    if d2 < 1e-9:
        return 0.0, 0.0
    return 2.0 * ly / d2, math.atan2(ly, lx)


class _Model(abc.ABC):
    """Shared trajectory tracking of both models."""

    max_accel: float
    max_decel: float
    max_speed: float
    lookahead_min: float
    lookahead_gain: float

    @abc.abstractmethod
    def _curvature_command(self, state: ActorState, kappa: float, bearing: float
                           ) -> EgoCommand:
        """The command that steers along curvature ``kappa`` (1/m) towards ``bearing``."""

    def track(self, state: ActorState, trajectory: TrajectoryCommand, t: float = 0.0
              ) -> EgoCommand:
        """Pure pursuit + speed P-control towards a timed trajectory.

        Args:
            state: current ego state.
            trajectory: the trajectory (times relative to its issue).
            t: time since the trajectory was issued, s.

        Returns:
            The command for this step (limits are applied by :meth:`step`).
        """
        pts = trajectory.xy
        s_here, cum = _polyline_closest(pts, state.x, state.y)
        look = max(self.lookahead_min, self.lookahead_gain * abs(state.speed))
        tx, ty = _polyline_point(pts, cum, s_here + look)
        kappa, bearing = _pursuit(state, tx, ty)
        v_ref = float(np.interp(t, trajectory.times_s, trajectory.speeds))
        s_ref = float(np.interp(t, trajectory.times_s, cum))
        accel = 1.5 * (v_ref - state.speed) + 0.3 * (s_ref - s_here)
        cmd = self._curvature_command(state, kappa, bearing)
        return EgoCommand(float(np.clip(accel, -self.max_decel, self.max_accel)),
                          cmd.steering_angle, cmd.yaw_rate)


class BicycleModel(_Model):
    """Kinematic bicycle with its rear axle at base_link (see the module docstring).

    Args:
        wheelbase: m (> 0).
        max_steer: steering limit, rad (> 0).
        max_accel: m/s^2 (> 0).
        max_decel: m/s^2 (> 0), braking limit.
        max_speed: m/s (> 0).
        max_reverse_speed: m/s (>= 0); 0 = braking stops at standstill, no reversing.
    """

    def __init__(self, wheelbase: float = 2.8, max_steer: float = 0.6, max_accel: float = 3.0,
                 max_decel: float = 8.0, max_speed: float = 40.0,
                 max_reverse_speed: float = 0.0) -> None:
        self.wheelbase = _positive("wheelbase", wheelbase)
        self.max_steer = _positive("max_steer", max_steer)
        if self.max_steer >= math.pi / 2:
            raise ValueError(f"max_steer must be < pi/2, got {max_steer!r}")
        self.max_accel = _positive("max_accel", max_accel)
        self.max_decel = _positive("max_decel", max_decel)
        self.max_speed = _positive("max_speed", max_speed)
        self.max_reverse_speed = _finite("max_reverse_speed", max_reverse_speed)
        if self.max_reverse_speed < 0:
            raise ValueError(f"max_reverse_speed must be >= 0, got {max_reverse_speed!r}")
        self.lookahead_min = 3.0
        self.lookahead_gain = 0.8

    def _curvature_command(self, state: ActorState, kappa: float, bearing: float
                           ) -> EgoCommand:
        return EgoCommand(0.0, steering_angle=math.atan(self.wheelbase * kappa))

    def step(self, state: ActorState, command: EgoCommand | TrajectoryCommand, dt: float
             ) -> ActorState:
        """Advance the ego by ``dt`` s under ``command`` (clamped to the limits).

        A :class:`TrajectoryCommand` is tracked with :meth:`track` at ``t = 0``.

        Raises:
            ValueError: bad ``dt``, or a command with ``yaw_rate`` (a robot command).
        """
        dt = _positive("dt", dt)
        if isinstance(command, TrajectoryCommand):
            command = self.track(state, command, 0.0)
        if command.yaw_rate is not None:
            raise ValueError("BicycleModel takes steering_angle, not yaw_rate (a robot command)")
        delta = float(np.clip(command.steering_angle or 0.0, -self.max_steer, self.max_steer))
        accel = float(np.clip(command.acceleration, -self.max_decel, self.max_accel))
        _, v1, ds = _advance_speed(state.speed, accel, dt, -self.max_reverse_speed,
                                   self.max_speed)
        kappa = math.tan(delta) / self.wheelbase
        half = kappa * ds / 2
        chord = ds * (math.sin(half) / half if abs(half) > 1e-12 else 1.0)
        x = state.x + chord * math.cos(state.yaw + half)
        y = state.y + chord * math.sin(state.yaw + half)
        yaw = math.remainder(state.yaw + kappa * ds, 2 * math.pi)
        return ActorState(state.actor_id, x, y, yaw, v1, kappa * v1, state.z)


def _j0(w: float, T: float) -> complex:
    """Integral of exp(i w t) over [0, T]."""
    h = w * T / 2
    return T * complex(math.cos(h), math.sin(h)) * (math.sin(h) / h if abs(h) > 1e-12 else 1.0)


def _j1(w: float, T: float) -> complex:
    """Integral of t exp(i w t) over [0, T] (series for small w T: no cancellation)."""
    wt = w * T
    if abs(wt) < 1e-3:
        return T * T * complex(0.5 - wt * wt / 8, wt / 3 - wt ** 3 / 30)
    e = complex(math.cos(wt), math.sin(wt))
    return -1j * T * e / w + (e - 1) / (w * w)


class UnicycleModel(_Model):
    """Unicycle (differential-drive robot): commanded acceleration and yaw rate.

    Args:
        max_accel: m/s^2 (> 0).
        max_yaw_rate: rad/s (> 0).
        max_speed: m/s (> 0).
        max_decel: m/s^2 (> 0); default = max_accel.
        max_reverse_speed: m/s (>= 0); 0 = no reversing.
    """

    def __init__(self, max_accel: float = 1.0, max_yaw_rate: float = 1.5,
                 max_speed: float = 2.0, max_decel: float | None = None,
                 max_reverse_speed: float = 0.0) -> None:
        self.max_accel = _positive("max_accel", max_accel)
        self.max_yaw_rate = _positive("max_yaw_rate", max_yaw_rate)
        self.max_speed = _positive("max_speed", max_speed)
        self.max_decel = self.max_accel if max_decel is None else _positive("max_decel",
                                                                             max_decel)
        self.max_reverse_speed = _finite("max_reverse_speed", max_reverse_speed)
        if self.max_reverse_speed < 0:
            raise ValueError(f"max_reverse_speed must be >= 0, got {max_reverse_speed!r}")
        self.lookahead_min = 0.8
        self.lookahead_gain = 1.0

    def _curvature_command(self, state: ActorState, kappa: float, bearing: float
                           ) -> EgoCommand:
        if abs(state.speed) > 0.1:
            return EgoCommand(0.0, yaw_rate=kappa * state.speed)
        return EgoCommand(0.0, yaw_rate=1.5 * bearing)  # turn on the spot towards the target

    def step(self, state: ActorState, command: EgoCommand | TrajectoryCommand, dt: float
             ) -> ActorState:
        """Advance the robot by ``dt`` s under ``command`` (clamped to the limits).

        Raises:
            ValueError: bad ``dt``, or a command with ``steering_angle`` (a vehicle command).
        """
        dt = _positive("dt", dt)
        if isinstance(command, TrajectoryCommand):
            command = self.track(state, command, 0.0)
        if command.steering_angle is not None:
            raise ValueError("UnicycleModel takes yaw_rate, not steering_angle (a vehicle "
                             "command)")
        w = float(np.clip(command.yaw_rate or 0.0, -self.max_yaw_rate, self.max_yaw_rate))
        accel = float(np.clip(command.acceleration, -self.max_decel, self.max_accel))
        t1, v1, _ = _advance_speed(state.speed, accel, dt, -self.max_reverse_speed,
                                   self.max_speed)
        a_used = (v1 - state.speed) / t1 if t1 > 0 else 0.0
        e0 = complex(math.cos(state.yaw), math.sin(state.yaw))
        e1 = complex(math.cos(state.yaw + w * t1), math.sin(state.yaw + w * t1))
        z = e0 * (state.speed * _j0(w, t1) + a_used * _j1(w, t1)) + e1 * v1 * _j0(w, dt - t1)
        yaw = math.remainder(state.yaw + w * dt, 2 * math.pi)
        return ActorState(state.actor_id, state.x + z.real, state.y + z.imag, yaw, v1, w,
                          state.z)


def make_dynamics(ego: EgoSpec) -> BicycleModel | UnicycleModel:
    """The ego's motion model with the limits of its spec."""
    if ego.platform == "vehicle":
        return BicycleModel(ego.wheelbase, ego.max_steer, ego.max_accel, ego.max_decel,
                            ego.max_speed)
    return UnicycleModel(ego.max_accel, ego.max_yaw_rate, ego.max_speed, ego.max_decel)


class Autopilot:
    """The recording ego's driver: follows its scenario path at the cruise speed (with the
    spec's slow variation), stops at the end of the path, and keeps its distance / gives way
    exactly as the agents do (through :meth:`TrafficModel.ego_constraint`).

    Args:
        scenario: the scenario (its ``ego`` spec and layout).
    """

    def __init__(self, scenario: Scenario) -> None:
        self.spec = scenario.ego
        self.path = scenario.layout.path(scenario.ego.path, "ego.path")
        self.dynamics = make_dynamics(scenario.ego)
        self.driver = EGO_DRIVER[scenario.ego.platform]
        self.half_length = float(scenario.ego.model.size[0] / 2)

    def command(self, ego: ActorState, traffic: TrafficModel | None = None,
                t_s: float | None = None) -> EgoCommand:
        """The command for the next step.

        Args:
            ego: current ego state.
            traffic: the agents (for obstacles and right of way); None = empty road.
            t_s: scenario time, s (default: ``traffic.time_s``, else 0).
        """
        t = t_s if t_s is not None else (traffic.time_s if traffic is not None else 0.0)
        s, _ = self.path.closest(ego.x, ego.y)
        dyn = self.dynamics
        look = max(dyn.lookahead_min, dyn.lookahead_gain * abs(ego.speed))
        tx, ty, _ = self.path.point_at(s + look)
        if s + look > self.path.length:  # extend the path straight on beyond its end
            ex, ey, eyaw = self.path.point_at(self.path.length)
            extra = s + look - self.path.length
            tx, ty = ex + extra * math.cos(eyaw), ey + extra * math.sin(eyaw)
        kappa, bearing = _pursuit(ego, tx, ty)
        steer = dyn._curvature_command(ego, kappa, bearing)
        d = self.driver
        gap, vobs = traffic.ego_constraint(ego) if traffic is not None else (math.inf, 0.0)
        # stop 1 m short of the end of the path (the paved area ends there)
        line = self.path.length - self.half_length - 1.0 - s + d.min_gap
        v = np.array([max(ego.speed, 0.0)] * 2)
        acc = idm_acceleration(v, np.full(2, self.spec.target_speed(t)), np.array([gap, line]),
                               np.array([v[0] - vobs, v[0]]), np.full(2, d.max_accel),
                               np.full(2, d.comfort_decel), np.full(2, d.min_gap),
                               np.full(2, d.time_headway))
        accel = float(np.clip(acc.min(), -dyn.max_decel, dyn.max_accel))
        return EgoCommand(accel, steer.steering_angle, steer.yaw_rate)


def off_road(state: ActorState, model: ActorModel, layout: Layout) -> bool:
    """Whether any footprint corner of the actor lies outside the drivable area."""
    return bool(not np.all(layout.is_drivable(footprint(state, model))))


__all__ = ["Autopilot", "BicycleModel", "EgoCommand", "TrajectoryCommand", "UnicycleModel",
           "boxes_overlap", "find_collisions", "footprint", "footprints", "make_dynamics",
           "off_road", "overlap_matrix"]
