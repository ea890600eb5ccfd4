"""Execution of action chunks: pure pursuit + speed control at the controller rate.

The VLA planner runs at its own (slow, irregular) rate and produces chunks; the safety filter
passes or replaces each; :class:`ChunkExecutor` cross-fades them into one reference
(:class:`~mm_perception.planning.blending.ChunkBlender`) and tracks it with
:class:`PurePursuitController` on every :meth:`ChunkExecutor.tick`:

- lateral: pure pursuit on the reference path towards the point ``lookahead_min_m +
  lookahead_gain_s * |v|`` further along the path than the closest point (the path is
  extended straight beyond its end); curvature ``2 y / d^2`` of that point in ``base_link``
  becomes a steering angle (kinematic bicycle, ``base_link`` on the rear axle, as in
  :class:`mm_perception.sim.ego_dynamics.BicycleModel`) or a yaw rate (unicycle robot);
- longitudinal: feed-forward of the reference's acceleration at the current time, plus a P
  term on the speed error and a small term on the along-track position error (so the ego
  does not drift behind a timed reference, and does stop at a stop profile's end point);
- no reference, or a reference whose last sample is due: brake to a stop at
  ``stop_decel_mps2``.

Timing: :meth:`ChunkExecutor.tick` must be called at ``rate_hz`` or faster, on the same
clock as the chunk stamps (a simulated clock stepping ``1 / rate_hz``, or real time from a
timer); ticks that come later than 1.5 periods after the previous one are counted
(``late_ticks``). The command is meant to be held until the next tick.

numpy only; planning may import sim types (not the other way round).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.checks import check_numbers
from mm_perception.core.errors import ConfigError
from mm_perception.core.types import EgoState
from mm_perception.planning.blending import ChunkBlender
from mm_perception.planning.observation import ego_pose2
from mm_perception.planning.trajectory import Trajectory
from mm_perception.sim.ego_dynamics import EgoCommand

F64 = npt.NDArray[np.float64]

_NS_PER_S = 1_000_000_000
#: the slowest tick rate that keeps a 0.4 s-spaced chunk tracked smoothly, Hz
MIN_RATE_HZ = 20.0
#: a tick this many periods after the previous one is counted as late
LATE_TICK_PERIODS = 1.5


@dataclass(frozen=True)
class ControllerConfig:
    """Gains and limits of the chunk executor (SI units; validated on construction).

    Defaults are for the car (``EGO_DEFAULTS["vehicle"]`` of the simulator:
    :class:`~mm_perception.sim.ego_dynamics.BicycleModel` limits); :meth:`robot` gives the
    robot's. The acceleration limits are at least the
    :class:`~mm_perception.planning.safety.SafetyConfig` limits (a filtered chunk is
    trackable with feedback to spare) and at most the vehicle's.

    Attributes:
        rate_hz: tick rate, Hz (>= 20).
        lookahead_min_m: pure-pursuit lookahead at standstill, m.
        lookahead_gain_s: extra lookahead per m/s of speed, s.
        speed_gain_1ps: P gain on the speed error, (m/s^2) per (m/s).
        position_gain_1ps2: gain on the along-track position error, (m/s^2) per m (>= 0).
        max_position_error_m: the position error is clipped to this, m (a far-off reference
            must not demand full throttle).
        feedforward_gain: weight of the reference's own acceleration (0 disables, 1 = full).
        wheelbase_m: bicycle wheelbase, m (steering = atan(wheelbase * curvature)).
        max_steer_rad: steering limit, rad (< pi/2).
        max_yaw_rate_rps: yaw-rate limit, rad/s.
        max_accel_mps2: largest commanded acceleration, m/s^2.
        max_decel_mps2: largest commanded deceleration, m/s^2.
        stop_decel_mps2: deceleration used to stop without a reference, m/s^2
            (<= max_decel_mps2; the SafetyConfig comfortable stop).
        blend_s: cross-fade duration between chunks, s (>= 0; 0 switches at once).
        turn_in_place_speed_mps: below this speed a robot turns towards the lookahead point
            on the spot (a yaw rate from curvature would be ~0 there), m/s.
        turn_in_place_gain_1ps: yaw rate per rad of bearing when turning on the spot, 1/s.
        max_jerk_mps3: largest change of the commanded acceleration per second when it
            rises (speeding up, or easing off the brake), m/s^3: a P loop on speed would
            otherwise step the acceleration by several m/s^2 in one tick (a jerk of 100+
            m/s^3 at 20 Hz) whenever a new chunk or a blend changes the reference speed.
        max_brake_jerk_mps3: the same when the acceleration falls (braking harder), m/s^3;
            higher, so that a safety stop reaches full braking within a few ticks.

    Raises:
        ConfigError: naming the field, for a non-number, non-finite or out-of-range value,
            ``rate_hz < 20``, ``max_steer_rad >= pi/2`` or ``stop_decel > max_decel``.
    """

    rate_hz: float = 20.0
    lookahead_min_m: float = 3.0
    lookahead_gain_s: float = 0.5
    speed_gain_1ps: float = 1.5
    position_gain_1ps2: float = 0.3
    max_position_error_m: float = 2.0
    feedforward_gain: float = 1.0
    wheelbase_m: float = 2.8
    max_steer_rad: float = 0.6
    max_yaw_rate_rps: float = 1.0
    max_accel_mps2: float = 3.0
    max_decel_mps2: float = 8.0
    stop_decel_mps2: float = 3.0
    blend_s: float = 0.5
    turn_in_place_speed_mps: float = 0.1
    turn_in_place_gain_1ps: float = 1.5
    max_jerk_mps3: float = 6.0
    max_brake_jerk_mps3: float = 40.0

    def __post_init__(self) -> None:
        check_numbers(self, [f.name for f in fields(self)],
                      may_be_zero=("lookahead_gain_s", "position_gain_1ps2", "feedforward_gain",
                                   "blend_s", "turn_in_place_speed_mps"))
        if self.rate_hz < MIN_RATE_HZ:
            raise ConfigError(f"ControllerConfig.rate_hz must be >= {MIN_RATE_HZ} Hz, got "
                              f"{self.rate_hz!r}")
        if self.max_steer_rad >= math.pi / 2:
            raise ConfigError(f"ControllerConfig.max_steer_rad must be < pi/2, got "
                              f"{self.max_steer_rad!r}")
        if self.stop_decel_mps2 > self.max_decel_mps2:
            raise ConfigError(f"ControllerConfig.stop_decel_mps2 ({self.stop_decel_mps2}) "
                              f"must not exceed max_decel_mps2 ({self.max_decel_mps2})")

    @classmethod
    def robot(cls, **overrides: Any) -> ControllerConfig:
        """Defaults for the simulator's robot (``EGO_DEFAULTS["robot"]``), with overrides."""
        base = cls(lookahead_min_m=0.6, lookahead_gain_s=0.8, wheelbase_m=0.45,
                   max_yaw_rate_rps=1.5, max_accel_mps2=1.0, max_decel_mps2=2.5,
                   stop_decel_mps2=1.0)
        return replace(base, **overrides)

    @property
    def period_s(self) -> float:
        """Tick period, s."""
        return 1.0 / self.rate_hz

    @property
    def max_curvature_1pm(self) -> float:
        """Tightest commandable curvature ``tan(max_steer) / wheelbase``, 1/m."""
        return math.tan(self.max_steer_rad) / self.wheelbase_m


@dataclass(frozen=True)
class ControlCommand:
    """One controller output, held until the next tick (all finite, inside the limits).

    Attributes:
        acceleration: longitudinal acceleration, m/s^2 (negative brakes).
        steering_angle: front-wheel angle, rad, > 0 turns left (car-like bicycle, base_link
            on the rear axle).
        curvature: commanded path curvature of base_link, 1/m, > 0 turns left.
        yaw_rate: commanded yaw rate, rad/s, > 0 turns left (unicycle robot).
    """

    acceleration: float
    steering_angle: float
    curvature: float
    yaw_rate: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise ValueError(f"ControlCommand.{f.name} must be a finite number, got "
                                 f"{value!r}")
            object.__setattr__(self, f.name, float(value))


def to_ego_command(cmd: ControlCommand, platform: str) -> EgoCommand:
    """The simulator's command for ``platform``: ``"vehicle"`` gets the steering angle,
    ``"robot"`` the yaw rate (as :class:`~mm_perception.sim.ego_dynamics.EgoCommand` needs).

    Raises:
        ValueError: an unknown platform.
    """
    if platform == "vehicle":
        return EgoCommand(cmd.acceleration, steering_angle=cmd.steering_angle)
    if platform == "robot":
        return EgoCommand(cmd.acceleration, yaw_rate=cmd.yaw_rate)
    raise ValueError(f"platform must be 'vehicle' or 'robot', got {platform!r}")


def reference_ended(reference: Trajectory, now_ns: int) -> bool:
    """Whether the last sample of ``reference`` is due before ``now_ns`` (int ns)."""
    return now_ns > reference.stamp_ns + round(float(reference.t_s[-1]) * _NS_PER_S)


def _closest_arc_length(xy: F64, cum: F64, x: float, y: float) -> float:
    """Arc length (m) of the point of polyline ``xy`` ``(N, 2)`` closest to ``(x, y)``."""
    if xy.shape[0] < 2:
        return 0.0
    seg = np.diff(xy, axis=0)
    len2 = (seg * seg).sum(axis=1)
    rel = np.array([x, y]) - xy[:-1]
    # zero-length segments (a stopped stretch) project onto their start point
    u = np.clip((rel * seg).sum(axis=1) / np.where(len2 > 1e-18, len2, 1.0), 0.0, 1.0)
    d2 = ((rel - u[:, None] * seg) ** 2).sum(axis=1)
    k = int(np.argmin(d2))
    return float(cum[k] + u[k] * (cum[k + 1] - cum[k]))


def _point_at(xy: F64, cum: F64, end_yaw: float, s: float) -> tuple[float, float]:
    """Point at arc length ``s`` (m) of the polyline, extended straight along ``end_yaw``
    beyond its end (a short chunk still gives a lookahead point ahead of the ego)."""
    if s >= cum[-1]:
        extra = s - float(cum[-1])
        return (float(xy[-1, 0]) + extra * math.cos(end_yaw),
                float(xy[-1, 1]) + extra * math.sin(end_yaw))
    return float(np.interp(s, cum, xy[:, 0])), float(np.interp(s, cum, xy[:, 1]))


class PurePursuitController:
    """Pure pursuit + speed control on a world-frame reference (see the module docstring).

    Stateless: every call depends only on its arguments (the executor keeps the state).
    """

    def __init__(self, config: ControllerConfig | None = None) -> None:
        self.config = config if config is not None else ControllerConfig()

    def command(self, ego: EgoState, reference: Trajectory | None, now_ns: int
                ) -> ControlCommand:
        """The command for the coming period.

        Args:
            ego: current ego state (pose of base_link in ``reference.frame_id``, forward speed
                ``linear_velocity[0]`` in m/s).
            reference: finite, time-valid reference (a filtered or blended chunk), or None.
            now_ns: current time, int ns, same clock as ``reference.stamp_ns``.

        Returns:
            A command clipped to the limits; a braking command without steering when there is
            no reference, and braking while following the path's extension when it has ended.

        Raises:
            ValueError: the reference is in another frame than ``ego`` or not executable.
        """
        cfg = self.config
        v = float(ego.linear_velocity[0])
        if reference is None:
            return ControlCommand(self._stop_accel(v), 0.0, 0.0, 0.0)
        if reference.frame_id != ego.frame_id:
            raise ValueError(f"reference frame {reference.frame_id!r} is not the ego's "
                             f"{ego.frame_id!r}")
        if not (reference.is_finite() and reference.is_time_valid()):
            raise ValueError(f"reference from {reference.source!r} is not executable (NaN or "
                             "bad times)")
        x, y, yaw = ego_pose2(ego)
        xy = reference.xy
        seg_len = np.hypot(*np.diff(xy, axis=0).T) if xy.shape[0] > 1 else np.zeros(0)
        cum = np.concatenate([[0.0], np.cumsum(seg_len)])
        s_here = _closest_arc_length(xy, cum, x, y)
        t = (now_ns - reference.stamp_ns) / _NS_PER_S
        ended = reference_ended(reference, now_ns)

        # lateral: curvature of the circle through base_link, tangent to the heading, that
        # passes through the lookahead point
        look = cfg.lookahead_min_m + cfg.lookahead_gain_s * abs(v)
        tx, ty = _point_at(xy, cum, float(reference.yaw[-1]), s_here + look)
        c, s = math.cos(yaw), math.sin(yaw)
        lx, ly = c * (tx - x) + s * (ty - y), -s * (tx - x) + c * (ty - y)
        d2 = lx * lx + ly * ly
        kappa = 2.0 * ly / d2 if d2 > 1e-12 else 0.0
        kmax = cfg.max_curvature_1pm
        kappa = float(np.clip(kappa, -kmax, kmax))
        steer = math.atan(cfg.wheelbase_m * kappa)  # within max_steer as |kappa| <= kmax

        if ended:
            accel = self._stop_accel(v)
            v_ref = 0.0
        else:
            ts = reference.t_s
            v_ref = float(np.interp(t, ts, reference.speed))
            s_ref = float(np.interp(t, ts, cum))
            # the reference's own acceleration on the interval containing t (0 outside)
            a_ff = 0.0
            if ts.shape[0] > 1 and ts[0] <= t < ts[-1]:
                k = int(np.searchsorted(ts, t, side="right")) - 1
                a_ff = float((reference.speed[k + 1] - reference.speed[k]) / (ts[k + 1] - ts[k]))
            pos_err = float(np.clip(s_ref - s_here, -cfg.max_position_error_m,
                                    cfg.max_position_error_m))
            accel = (cfg.feedforward_gain * a_ff + cfg.speed_gain_1ps * (v_ref - v)
                     + cfg.position_gain_1ps2 * pos_err)
            accel = float(np.clip(accel, -cfg.max_decel_mps2, cfg.max_accel_mps2))

        if abs(v) < cfg.turn_in_place_speed_mps:
            # a robot at (near) standstill turns on the spot towards the lookahead point, but
            # only when the reference wants it to move
            moving = v_ref > cfg.turn_in_place_speed_mps
            yaw_rate = cfg.turn_in_place_gain_1ps * math.atan2(ly, lx) if moving else 0.0
        else:
            yaw_rate = kappa * v
        yaw_rate = float(np.clip(yaw_rate, -cfg.max_yaw_rate_rps, cfg.max_yaw_rate_rps))
        return ControlCommand(accel, steer, kappa, yaw_rate)

    def _stop_accel(self, v: float) -> float:
        """Braking at stop_decel that lands on 0 m/s within one tick instead of reversing."""
        return -min(self.config.stop_decel_mps2, max(v, 0.0) * self.config.rate_hz)


class ChunkExecutor:
    """Chunk blending + tracking: :meth:`submit` chunks whenever the planner has one,
    :meth:`tick` at ``config.rate_hz`` or faster (same clock as the stamps).

    Raises (from :meth:`submit`): ValueError for a chunk that did not pass the safety filter
    (NaN, bad times, negative speeds) or is in another frame; chunks stamped older than the
    newest accepted one are ignored and counted.
    """

    def __init__(self, config: ControllerConfig | None = None) -> None:
        self.config = config if config is not None else ControllerConfig()
        self.controller = PurePursuitController(self.config)
        # blend samples at the tick period or finer, so the blended path is tracked as built
        self.blender = ChunkBlender(self.config.blend_s, min(self.config.period_s, 0.05))
        self.reset()

    def reset(self) -> None:
        """Forget the reference, the clock and all counters (a new episode / clock restart)."""
        self.blender.reset()
        self._ticks = 0
        self._stop_ticks = 0
        self._late_ticks = 0
        self._last_tick_ns: int | None = None
        self._last_accel: float | None = None

    @property
    def reference(self) -> Trajectory | None:
        """The reference being tracked (world frame), or None."""
        return self.blender.reference

    def submit(self, traj: Trajectory, now_ns: int, immediate: bool = False) -> Trajectory:
        """Hand over a chunk that passed the safety filter; returns the reference in force
        (see :meth:`ChunkBlender.submit`; ``immediate`` skips the blend, for safety stops)."""
        return self.blender.submit(traj, now_ns, immediate)

    def tick(self, ego: EgoState, now_ns: int) -> ControlCommand:
        """The command for the next ``1 / rate_hz`` s.

        Args:
            ego: current ego state (world frame of the chunks).
            now_ns: current time, int ns, never earlier than the previous tick.

        Raises:
            ValueError: the clock went backwards (call :meth:`reset` after a clock restart),
                or the ego is in another frame than the reference.
            TypeError: ``now_ns`` is not an int.
        """
        if isinstance(now_ns, bool) or not isinstance(now_ns, int | np.integer):
            raise TypeError(f"now_ns must be int nanoseconds, got {type(now_ns).__name__}")
        now_ns = int(now_ns)
        if self._last_tick_ns is not None:
            if now_ns < self._last_tick_ns:
                raise ValueError(f"clock went backwards: tick at {now_ns} ns after "
                                 f"{self._last_tick_ns} ns; call reset() on a clock restart")
            if now_ns - self._last_tick_ns > LATE_TICK_PERIODS * self.config.period_s * 1e9:
                self._late_ticks += 1
        dt_s = (self.config.period_s if self._last_tick_ns is None
                else (now_ns - self._last_tick_ns) / 1e9)
        self._last_tick_ns = now_ns
        ref = self.reference
        cmd = self.controller.command(ego, ref, now_ns)
        if self._last_accel is not None:
            lo = self._last_accel - self.config.max_brake_jerk_mps3 * dt_s
            hi = self._last_accel + self.config.max_jerk_mps3 * dt_s
            accel = min(max(cmd.acceleration, lo), hi)
            if accel != cmd.acceleration:
                cmd = replace(cmd, acceleration=accel)
        self._last_accel = cmd.acceleration
        self._ticks += 1
        if ref is None or reference_ended(ref, now_ns):
            self._stop_ticks += 1
        return cmd

    def counts(self) -> dict[str, int]:
        """Chunks received / taken as is / blended / ignored (stale) / rejected, ticks,
        ticks without a live reference (braking to a stop) and late ticks."""
        chunks = self.blender.counts()
        out = {f"chunks_{k}": v for k, v in chunks.items()}
        out.update({"ticks": self._ticks, "stop_ticks": self._stop_ticks,
                    "late_ticks": self._late_ticks})
        return out


__all__ = ["MIN_RATE_HZ", "ChunkExecutor", "ControlCommand", "ControllerConfig",
           "PurePursuitController", "reference_ended", "to_ego_command"]
