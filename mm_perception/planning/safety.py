"""Rule-based safety filter: always the last stage between any planner and the controller.

:meth:`SafetyFilter.check` either passes the planner's :class:`Trajectory` unchanged or
replaces it by a fallback, in this order:

1. the last trajectory that passed, if younger than ``last_valid_max_age_s`` and still safe
   when re-checked now against the current tracks (its part still to execute);
2. a comfortable stop (straight along the ego's heading, ``comfort_decel_mps2``), if it is
   predicted free of collisions;
3. an emergency stop (``max_decel_mps2``), always returned: it is inside the limits by
   construction.

A trajectory must also keep a way out (``escape_horizon_s`` > 0; by default against
pedestrians and cyclists only, ``escape_labels``): braking hard along its own path from where
it will be at the next replan (``escape_after_s`` from now) must be predicted free of
collisions while the ego then stands still, up to ``escape_horizon_s`` from now (reason
``no_escape``). The ego is only committed to a chunk until the planner's next one, and a
planner that always plans "slow now, fast later" never executes its fast part: without this
check it creeps, chunk by passed chunk, into a crossing lane where every fallback stop stands
in the way of the crossing traffic. The same holds for walkers at a crossing: a planner that
keeps its speed until they are a few metres from its lane and only then brakes stops on
their line (in the closed-loop suite the VLA did, and hit one); with the check, the chunk
that would take the ego past the point where it can still stop clear of them is refused one
replan earlier. Traffic from behind in the ego's direction (within
``FOLLOWER_MAX_ANGLE_RAD`` of its heading) is left out of this check: not running into a
braking vehicle is the follower's duty, and counting it would forbid braking whenever a car
follows.

Stale or clock-inconsistent inputs (perception, instruction, odometry) or tracks in another
frame skip the planner's trajectory and go straight to 2/3. Every result is counted by status
and every intervention by each of its reasons (:meth:`SafetyFilter.report`).

Whatever the planner outputs (NaN, Inf, huge values, broken times), the returned trajectory
is finite, has strictly increasing times, speeds in ``[0, max_speed_mps]`` and accelerations
in ``[-max_decel_mps2, max_accel_mps2]``.

Tracks are predicted with constant turn rate and velocity for the first ``turn_horizon_s``
and straight on after that (:func:`predict_boxes`; a track without a yaw rate: constant
velocity), so the box of a turning vehicle turns, and its tail swings, in the prediction.

Geometry is planar (BEV) in the ego state's world/odom frame. The ego footprint is a
``ego_length_m x ego_width_m`` rectangle grown by ``margin_m`` on every side and centred on
the trajectory pose (the ``base_link`` origin): a vehicle whose ``base_link`` is on the rear
axle should enlarge ``ego_length_m`` to cover its overhang.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from mm_perception.core.checks import check_numbers
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import wrap_angle
from mm_perception.core.types import EgoState, Track, TrackStatus
from mm_perception.planning.trajectory import Trajectory

F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_NS_PER_S = 1_000_000_000
#: float slack on limit comparisons, so a profile exactly at a limit passes
_TOL = 1e-9
#: steps shorter than this (m) are skipped by the curvature / heading checks: the heading
#: change over a near-zero distance is noise, not curvature
MIN_CURVATURE_STEP_M = 0.05
#: largest angle (rad) between the direction of travel of a step and the sample headings;
#: a car cannot move sideways, and without this check a zig-zag path with a constant yaw
#: would pass the (yaw-based) curvature limit
MAX_HEADING_ERROR_RAD = 0.35
#: sample period (s) of the stop trajectories the filter generates
STOP_PROFILE_DT_S = 0.1
#: an obstacle behind the ego moving within this angle (rad) of its heading is a follower:
#: left out of the way-out check (see the module docstring)
FOLLOWER_MAX_ANGLE_RAD = math.radians(30.0)
#: obstacles slower than this (m/s) are never followers: they cannot run into the ego
FOLLOWER_MIN_SPEED_MPS = 0.5

#: every reason code a :class:`SafetyResult` can carry
REASON_CODES: tuple[str, ...] = (
    "empty",                  # no trajectory from the planner (None)
    "frame_mismatch",         # trajectory or a track not in the ego state's frame
    "non_finite",             # NaN/Inf anywhere in the trajectory
    "bad_time",               # t_s negative or not strictly increasing
    "stale_trajectory",       # planned too long ago, in the future, or already over
    "negative_speed",         # a speed < 0 (no reversing)
    "over_speed",             # a speed > max_speed_mps
    "over_accel",             # acceleration > max_accel_mps2 (also from the ego's speed)
    "over_decel",             # deceleration > max_decel_mps2 (also from the ego's speed)
    "over_jerk",              # |jerk| > max_jerk_mps3
    "over_curvature",         # curvature (heading or path) > max_curvature_1pm
    "over_lateral_accel",     # speed^2 * curvature > max_lateral_accel_mps2
    "heading_mismatch",       # direction of travel far from the headings (sideways motion)
    "pose_jump",              # consecutive poses (or ego -> first) inconsistent with speed
    "collision",              # predicted footprint overlap within min_ttc_s
    "no_escape",              # braking from the next replan would be predicted to collide
    "stale_perception",       # perception stamp missing, too old or in the future
    "stale_instruction",      # instruction stamp missing, too old or in the future
    "stale_ego",              # ego state too old or in the future
    "clock_backwards",        # now_ns earlier than at the previous check
    "collision_unavoidable",  # even the emergency stop is predicted to collide
)


@dataclass(frozen=True)
class SafetyConfig:
    """Limits of the safety filter (SI units; validated on construction).

    Attributes:
        max_speed_mps: largest allowed speed, m/s.
        max_accel_mps2: largest allowed acceleration, m/s^2.
        max_decel_mps2: largest allowed deceleration (the emergency braking), m/s^2.
        comfort_decel_mps2: deceleration of the comfortable stop, m/s^2 (<= max_decel).
        max_jerk_mps3: largest allowed |jerk|, m/s^3 (between planned samples only).
        max_curvature_1pm: largest allowed |curvature|, 1/m.
        max_lateral_accel_mps2: largest allowed speed^2 * |curvature|, m/s^2.
        ego_length_m / ego_width_m: ego footprint, metres, centred on ``base_link``.
        margin_m: clearance added on every side of the ego footprint, metres (>= 0).
        min_ttc_s: horizon (s after now) within which a predicted overlap is a collision.
        perception_timeout_s: largest age of the perception (tracks) and ego state, s.
        instruction_timeout_s: largest age of the instruction, s.
        instruction_required: whether a missing/stale instruction forces a stop.
        max_pose_jump_m: largest difference between the distance of consecutive poses and
            mean speed * dt, metres (also between the ego position and the first sample).
        last_valid_max_age_s: largest age of a trajectory (planned or re-used), s.
        speed_tolerance_mps: odometry speed noise allowed between the ego's measured speed
            and the trajectory's first speed on top of the acceleration limits, m/s (>= 0).
        tentative_static: predict tentative tracks as standing still. A tentative track's
            velocity rests on one or two measurements (a split cluster easily gets 5+ m/s
            sideways) and predicting it 4 s ahead stops the ego for nothing; it still
            blocks where it is.
        escape_after_s: when the ego must still be able to brake clear, s after now: the
            planner's replanning period (the ego is committed to a chunk until the next).
        escape_horizon_s: how long after now the ego braking (``max_decel_mps2``) along the
            trajectory's path from ``escape_after_s`` and then standing still must be
            predicted free of collisions, s; 0 switches the way-out check off. It must
            cover the time crossing traffic takes to arrive from where it is first tracked
            (5 s: a walker at 1.3 m/s crosses a 3.5-m lane and a kerb in about 4 s).
        escape_labels: the object classes (labels) the way-out check considers; empty: all.
            Pedestrians and cyclists by default. Vehicles are left out because the check
            also refuses a turn that merges ahead of traffic with a safe gap (braking hard
            after the merge would be "hit" by the vehicle then behind, which is not yet a
            follower by heading): with every class, the closed-loop suite had no collision
            at all, but the privileged expert's turns stalled inside the junction (see the
            README).
        turn_horizon_s: how long a track's yaw rate is followed in its prediction, s: the
            box moves along the arc of its turn rate (constant turn rate and velocity) and
            turns with it for at most this long, then straight on along its predicted
            heading; 0 predicts every track at constant velocity. A turning lorry swings
            its tail sideways, which a straight-line prediction of its box never shows. The
            bound keeps a small error of the estimated rate from bending a long
            prediction by metres.
        max_track_curvature_1pm: the turn rate used is at most this times the track's
            speed, 1/m (a vehicle turns no tighter than its steering allows; a standing
            track with a noisy rate estimate does not spin in place).
        min_track_yaw_rate_rps / min_track_curvature_1pm: the dead band of the turn
            rate, rad/s and 1/m: a rate below either this rate or this curvature times the
            track's speed (in magnitude) is taken as the estimation noise of a track going
            straight and predicted as 0. The tracker's rate of a car going straight
            scatters by about 0.06 rad/s (0.05 rad heading noise at 10 Hz); at 10 m/s an
            error of 0.1 rad/s followed for 2 s and then held as a heading would put an
            oncoming car in the next lane 3 m into the ego's. Junction turns are 0.3-0.5
            rad/s at curvatures of 0.07-0.15 1/m.

    Raises:
        ConfigError: naming the field, for a non-number, a non-finite or non-positive value
            (negative for the fields that may be 0), or comfort_decel > max_decel.
    """

    max_speed_mps: float = 15.0
    max_accel_mps2: float = 2.5
    max_decel_mps2: float = 6.0
    comfort_decel_mps2: float = 3.0
    max_jerk_mps3: float = 10.0
    max_curvature_1pm: float = 0.2
    max_lateral_accel_mps2: float = 4.0
    ego_length_m: float = 4.6
    ego_width_m: float = 1.9
    margin_m: float = 0.3
    min_ttc_s: float = 4.0
    perception_timeout_s: float = 0.3
    instruction_timeout_s: float = 2.0
    instruction_required: bool = True
    max_pose_jump_m: float = 1.0
    last_valid_max_age_s: float = 1.0
    speed_tolerance_mps: float = 0.2
    tentative_static: bool = True
    escape_after_s: float = 0.5
    escape_horizon_s: float = 5.0
    escape_labels: tuple[str, ...] = ("pedestrian", "cyclist")
    turn_horizon_s: float = 2.0
    max_track_curvature_1pm: float = 0.3
    min_track_yaw_rate_rps: float = 0.15
    min_track_curvature_1pm: float = 0.04

    def __post_init__(self) -> None:
        flags = ("instruction_required", "tentative_static")
        for name in flags:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"SafetyConfig.{name} must be a bool, got "
                                  f"{getattr(self, name)!r}")
        labels = self.escape_labels
        if (not isinstance(labels, tuple | list)
                or not all(isinstance(x, str) and x for x in labels)):
            raise ConfigError(f"SafetyConfig.escape_labels must be a list of class labels, "
                              f"got {labels!r}")
        object.__setattr__(self, "escape_labels", tuple(labels))
        skip = (*flags, "escape_labels")
        check_numbers(self, [f.name for f in fields(self) if f.name not in skip],
                      may_be_zero=("margin_m", "speed_tolerance_mps", "escape_horizon_s",
                                   "turn_horizon_s", "min_track_yaw_rate_rps",
                                   "min_track_curvature_1pm"))
        if self.comfort_decel_mps2 > self.max_decel_mps2:
            raise ConfigError(f"SafetyConfig.comfort_decel_mps2 ({self.comfort_decel_mps2}) "
                              f"must not exceed max_decel_mps2 ({self.max_decel_mps2})")


class SafetyStatus(str, enum.Enum):
    """What the filter returned."""

    PASSED = "passed"                      # the planner's trajectory, unchanged
    LAST_VALID = "last_valid"              # the rest of the last passed trajectory
    COMFORTABLE_STOP = "comfortable_stop"  # stop at comfort_decel_mps2
    EMERGENCY_STOP = "emergency_stop"      # stop at max_decel_mps2


@dataclass(frozen=True)
class SafetyResult:
    """Outcome of one :meth:`SafetyFilter.check`.

    Attributes:
        trajectory: what to execute: finite, strictly increasing times, inside the limits.
        status: which trajectory it is.
        reasons: reason codes (see :data:`REASON_CODES`) of the intervention, in check
            order; empty when ``status`` is PASSED.
    """

    trajectory: Trajectory
    status: SafetyStatus
    reasons: tuple[str, ...] = ()

    @property
    def intervened(self) -> bool:
        return self.status is not SafetyStatus.PASSED


class _Obstacles(NamedTuple):
    """Tracks as arrays for the vectorised collision test (``T`` tracks, world frame)."""

    xy: F64          # (T, 2) box centres at stamp_ns, metres
    velocity: F64    # (T, 2) m/s (zeros for a track without velocity: static)
    yaw: F64         # (T,) radians
    half: F64        # (T, 2) half length, half width, metres
    stamp_ns: list[int]  # (T,) stamps as Python ints (exact differences)
    labels: list[str]    # (T,) object class labels
    yaw_rate: F64    # (T,) rad/s (zeros for a track without one: straight on)

    def subset(self, keep: BoolArray) -> _Obstacles:
        """The obstacles where ``keep`` ((T,) bool) is True."""
        return _Obstacles(self.xy[keep], self.velocity[keep], self.yaw[keep], self.half[keep],
                          [s for s, k in zip(self.stamp_ns, keep, strict=True) if k],
                          [x for x, k in zip(self.labels, keep, strict=True) if k],
                          self.yaw_rate[keep])


def _obstacles(tracks: Sequence[Track], frame_id: str,
               tentative_static: bool = False) -> tuple[_Obstacles, bool]:
    """Arrays of the live tracks in ``frame_id``, and whether every live track was in it
    (``tentative_static``: tentative tracks get zero velocity)."""
    rows = []
    frames_ok = True
    for track in tracks:
        if track.status is TrackStatus.DELETED:
            continue
        obj = track.object
        if obj.box.frame_id != frame_id:
            frames_ok = False  # never guess a transform: the caller must fix the frames
            continue
        velocity = obj.velocity
        if velocity is None or (tentative_static and track.status is TrackStatus.TENTATIVE):
            vel, rate = (0.0, 0.0), 0.0
        else:
            vel, rate = (velocity[0], velocity[1]), obj.yaw_rate or 0.0
        rows.append((obj.box.center[0], obj.box.center[1], vel[0], vel[1], obj.box.yaw,
                     obj.box.size[0] / 2, obj.box.size[1] / 2, rate, obj.stamp_ns, obj.label))
    arr = np.array([r[:8] for r in rows], dtype=np.float64).reshape(-1, 8)
    return _Obstacles(arr[:, 0:2], arr[:, 2:4], arr[:, 4], arr[:, 5:7],
                      [int(r[8]) for r in rows], [r[9].value for r in rows],
                      arr[:, 7]), frames_ok


def predict_boxes(xy: F64, yaw: F64, velocity: F64, yaw_rate: F64, dt_s: F64,
                  turn_horizon_s: float, max_curvature_1pm: float,
                  min_yaw_rate_rps: float = 0.0, min_curvature_1pm: float = 0.0,
                  ) -> tuple[F64, F64]:
    """Box centres and headings of ``T`` tracks ``dt_s`` seconds after their stamps.

    Constant turn rate and velocity for the first ``turn_horizon_s`` (either way in time),
    then straight on along the heading reached: the centre moves along the chord of its
    arc, ``v t sinc(w t / 2)`` towards the mid-turn direction (exact, and smooth through
    ``w = 0``, where it is the constant-velocity step ``v t``), and the box turns by
    ``w t``. A rate below ``min_yaw_rate_rps`` or ``min_curvature_1pm`` times the speed
    in magnitude counts as 0; the rate is clipped to ``max_curvature_1pm`` times the speed.

    Args:
        xy: ``(T, 2)`` box centres, m; yaw: ``(T,)`` box headings, rad.
        velocity: ``(T, 2)`` over-ground velocities of the centres, m/s.
        yaw_rate: ``(T,)`` rad/s (0: straight on).
        dt_s: ``(S, T)`` seconds after each track's stamp (may be negative).
        turn_horizon_s: longest time the turn is followed, s (>= 0).
        max_curvature_1pm: bound of ``|yaw_rate| / speed``, 1/m.
        min_yaw_rate_rps, min_curvature_1pm: dead band of the rate, rad/s and 1/m (>= 0).

    Returns:
        ``(S, T, 2)`` centres (m) and ``(S, T)`` headings (rad, not wrapped), same frame.
    """
    speed = np.hypot(velocity[:, 0], velocity[:, 1])                    # (T,)
    course = np.arctan2(velocity[:, 1], velocity[:, 0])                  # (T,)
    bound = max_curvature_1pm * speed
    quiet = np.abs(yaw_rate) < np.maximum(min_yaw_rate_rps, min_curvature_1pm * speed)
    rate = np.where(quiet, 0.0,
                    np.clip(yaw_rate, -bound, bound))                   # (T,)
    tau = np.clip(dt_s, -turn_horizon_s, turn_horizon_s)                 # (S, T)
    straight = dt_s - tau
    half_turn = rate * tau / 2
    chord = speed * tau * np.sinc(half_turn / np.pi)  # np.sinc(x) = sin(pi x) / (pi x)
    mid, end = course + half_turn, course + 2 * half_turn
    step = (chord[..., None] * np.stack([np.cos(mid), np.sin(mid)], axis=-1)
            + (speed * straight)[..., None] * np.stack([np.cos(end), np.sin(end)], axis=-1))
    return xy[None] + step, yaw[None] + 2 * half_turn


def _overlaps(ego_xy: F64, ego_yaw: F64, ego_half: tuple[float, float],
              obj_xy: F64, obj_yaw: F64, obj_half: F64) -> BoolArray:
    """Separating-axis test between ``S`` ego rectangles and ``S x T`` object rectangles.

    Args:
        ego_xy: ``(S, 2)`` ego centres; ego_yaw: ``(S,)``; ego_half: half length, width.
        obj_xy: ``(S, T, 2)`` object centres at the same times; obj_yaw: ``(S, T)`` (or
            ``(T,)``, the same at every time); obj_half: ``(T, 2)`` half lengths and
            widths. All metres/radians, one frame.

    Returns:
        ``(S, T)`` bool, True where the rectangles overlap or touch. Non-finite centres
        count as overlapping (no axis can prove them apart): the safe answer.
    """
    ca, sa = np.cos(ego_yaw), np.sin(ego_yaw)
    a1 = np.stack([ca, sa], axis=-1)[:, None, :]   # (S, 1, 2) ego forward axis
    a2 = np.stack([-sa, ca], axis=-1)[:, None, :]  # ego left axis
    obj_yaw = np.broadcast_to(obj_yaw, obj_xy.shape[:2])
    cb, sb = np.cos(obj_yaw), np.sin(obj_yaw)
    b1 = np.stack([cb, sb], axis=-1)                # (S, T, 2) object forward axis
    b2 = np.stack([-sb, cb], axis=-1)
    d = obj_xy - ego_xy[:, None, :]                 # (S, T, 2)
    hl_a, hw_a = ego_half
    hl_b, hw_b = obj_half[None, :, 0], obj_half[None, :, 1]  # (1, T)

    def dot(u: F64, v: F64) -> F64:
        return np.asarray((u * v).sum(axis=-1), dtype=np.float64)

    c11, c12 = np.abs(dot(a1, b1)), np.abs(dot(a1, b2))
    c21, c22 = np.abs(dot(a2, b1)), np.abs(dot(a2, b2))
    separated = ((np.abs(dot(d, a1)) > hl_a + hl_b * c11 + hw_b * c12)
                 | (np.abs(dot(d, a2)) > hw_a + hl_b * c21 + hw_b * c22)
                 | (np.abs(dot(d, b1)) > hl_b + hl_a * c11 + hw_a * c21)
                 | (np.abs(dot(d, b2)) > hw_b + hl_a * c12 + hw_a * c22))
    return np.asarray(~separated, dtype=np.bool_)


class SafetyFilter:
    """Checks trajectories against kinematic limits, input freshness and predicted
    collisions, and falls back to safe trajectories (see the module docstring).

    Stateful: remembers the last passed trajectory, the previous ``now_ns`` and the counters;
    call :meth:`reset` when the clock restarts (e.g. a replayed bag loops).
    """

    def __init__(self, config: SafetyConfig | None = None) -> None:
        self.config = config if config is not None else SafetyConfig()
        self.reset()

    def reset(self) -> None:
        """Forget the last valid trajectory, the previous clock value and all counters."""
        self._last_valid: Trajectory | None = None
        self._executing: tuple[Trajectory, SafetyStatus] | None = None
        self._last_now_ns: int | None = None
        self._checks = 0
        self._status_counts: Counter[SafetyStatus] = Counter()
        self._reason_counts: Counter[str] = Counter()
        self._last_intervention: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------- public

    def check(self, trajectory: Trajectory | None, ego: EgoState, tracks: Sequence[Track],
              now_ns: int, perception_stamp_ns: int | None,
              instruction_stamp_ns: int | None) -> SafetyResult:
        """Decide what to execute now.

        Args:
            trajectory: the planner's output (None when the planner produced nothing).
            ego: current ego state; its ``frame_id`` is the frame everything must be in.
            tracks: tracked objects (boxes and velocities in ``ego.frame_id``); DELETED
                tracks are ignored, all others (tentative included) are obstacles.
            now_ns: current time, same clock as every stamp.
            perception_stamp_ns: stamp of the perception output ``tracks`` came from, or
                None when there is none.
            instruction_stamp_ns: stamp of the current instruction, or None.

        Returns:
            A :class:`SafetyResult` whose trajectory is always safe to hand to a controller.
        """
        with np.errstate(all="ignore"):  # huge/NaN planner outputs must not spam warnings
            result = self._decide(trajectory, ego, tracks, now_ns, perception_stamp_ns,
                                  instruction_stamp_ns)
        self._count(result, now_ns)
        self._executing = (result.trajectory, result.status)
        return result

    def monitor(self, ego: EgoState, tracks: Sequence[Track], now_ns: int,
                perception_stamp_ns: int | None,
                instruction_stamp_ns: int | None) -> SafetyResult | None:
        """Between two planner outputs: re-check what is being executed against newer inputs.

        The trajectory is the last one :meth:`check` (or this method) returned. Only the
        input freshness and the predicted collisions of its part still ahead are checked:
        its kinematics were checked when it was returned, and re-checking them against the
        ego's state now would only measure the controller's tracking lag. Call it at the
        perception rate so that an obstacle appearing between two plans is reacted to
        without waiting for the planner.

        Args:
            ego / tracks / now_ns / perception_stamp_ns / instruction_stamp_ns: as for
                :meth:`check`.

        Returns:
            None when the executed trajectory is still safe (nothing counted, nothing to
            change), or the stop to execute instead (counted as an intervention). An
            emergency stop in progress is never replaced: nothing brakes harder.
        """
        if self._executing is None:
            return None
        current, status = self._executing
        if status is SafetyStatus.EMERGENCY_STOP:
            return None
        with np.errstate(all="ignore"):
            obstacles, frames_ok = _obstacles(tracks, ego.frame_id, self.config.tentative_static)
            reasons = self._input_reasons(ego, now_ns, perception_stamp_ns,
                                          instruction_stamp_ns)
            if not frames_ok:
                reasons.append("frame_mismatch")
            if not reasons:
                tail = current.tail_from(now_ns)
                if tail is None or not self._collides(tail, obstacles, now_ns):
                    self._last_now_ns = now_ns
                    return None
                reasons = ["collision"]
            if status is SafetyStatus.COMFORTABLE_STOP and reasons != ["collision"]:
                # already stopping for stale inputs: starting a new stop changes nothing
                self._last_now_ns = now_ns
                return None
            self._last_valid = None  # it is no longer safe to fall back to
            result = self._stop(ego, obstacles, now_ns, reasons)
        self._count(result, now_ns)
        self._executing = (result.trajectory, result.status)
        return result

    def counts(self) -> dict[str, int]:
        """Number of checks, of interventions, and of results per status (by value)."""
        out = {"checks": self._checks,
               "interventions": self._checks - self._status_counts[SafetyStatus.PASSED]}
        out.update({s.value: self._status_counts[s] for s in SafetyStatus})
        return out

    def report(self) -> dict[str, Any]:
        """JSON-ready summary: checks, interventions, per-status and per-reason counts
        (every code of :data:`REASON_CODES`, zeros included) and the last intervention."""
        counts = self.counts()
        return {
            "checks": counts["checks"],
            "interventions": counts["interventions"],
            "status": {s.value: counts[s.value] for s in SafetyStatus},
            "reasons": {code: self._reason_counts[code] for code in REASON_CODES},
            "last_intervention": (None if self._last_intervention is None
                                  else dict(self._last_intervention)),
        }

    # ---------------------------------------------------------------------------- decision

    def _decide(self, trajectory: Trajectory | None, ego: EgoState, tracks: Sequence[Track],
                now_ns: int, perception_stamp_ns: int | None,
                instruction_stamp_ns: int | None) -> SafetyResult:
        obstacles, frames_ok = _obstacles(tracks, ego.frame_id, self.config.tentative_static)
        input_reasons = self._input_reasons(ego, now_ns, perception_stamp_ns,
                                            instruction_stamp_ns)
        if not frames_ok:
            input_reasons.append("frame_mismatch")
        if input_reasons:
            # the planner's view of the world cannot be trusted: do not even look at it
            return self._stop(ego, obstacles, now_ns, input_reasons)
        if trajectory is None:
            reasons = ["empty"]
        else:
            reasons = self._trajectory_reasons(trajectory, ego, obstacles, now_ns)
        if not reasons and trajectory is not None:
            self._last_valid = trajectory
            return SafetyResult(trajectory, SafetyStatus.PASSED, ())
        tail = self._reusable_last_valid(ego, obstacles, now_ns)
        if tail is not None:
            return SafetyResult(tail, SafetyStatus.LAST_VALID, tuple(reasons))
        return self._stop(ego, obstacles, now_ns, reasons)

    def _input_reasons(self, ego: EgoState, now_ns: int, perception_stamp_ns: int | None,
                       instruction_stamp_ns: int | None) -> list[str]:
        cfg = self.config
        reasons = []
        if self._last_now_ns is not None and now_ns < self._last_now_ns:
            reasons.append("clock_backwards")
            self._last_valid = None  # its age can no longer be trusted
        if not _fresh(perception_stamp_ns, now_ns, cfg.perception_timeout_s):
            reasons.append("stale_perception")
        if cfg.instruction_required and not _fresh(instruction_stamp_ns, now_ns,
                                                   cfg.instruction_timeout_s):
            reasons.append("stale_instruction")
        if not _fresh(ego.stamp_ns, now_ns, cfg.perception_timeout_s):
            reasons.append("stale_ego")
        return reasons

    def _reusable_last_valid(self, ego: EgoState, obstacles: _Obstacles,
                             now_ns: int) -> Trajectory | None:
        """The still-to-execute part of the last passed trajectory if it is young enough
        and passes every check now; otherwise None (and it is forgotten)."""
        last, self._last_valid = self._last_valid, None
        if last is None or not _fresh(last.stamp_ns, now_ns, self.config.last_valid_max_age_s):
            return None
        tail = last.tail_from(now_ns)
        if tail is None or len(tail) < 2:
            return None
        if self._trajectory_reasons(tail, ego, obstacles, now_ns):
            return None
        self._last_valid = last  # keep the original: its age must keep growing
        return tail

    def _stop(self, ego: EgoState, obstacles: _Obstacles, now_ns: int,
              reasons: list[str]) -> SafetyResult:
        comfortable = self._stop_trajectory(ego, now_ns, self.config.comfort_decel_mps2,
                                            "safety/comfortable_stop")
        if not self._collides(comfortable, obstacles, now_ns):
            return SafetyResult(comfortable, SafetyStatus.COMFORTABLE_STOP, tuple(reasons))
        emergency = self._stop_trajectory(ego, now_ns, self.config.max_decel_mps2,
                                          "safety/emergency_stop")
        if self._collides(emergency, obstacles, now_ns):
            reasons = [*reasons, "collision_unavoidable"]
        return SafetyResult(emergency, SafetyStatus.EMERGENCY_STOP, tuple(reasons))

    def _count(self, result: SafetyResult, now_ns: int) -> None:
        self._last_now_ns = now_ns
        self._checks += 1
        self._status_counts[result.status] += 1
        if result.intervened:
            self._reason_counts.update(result.reasons)
            self._last_intervention = {"now_ns": now_ns, "status": result.status.value,
                                       "reasons": list(result.reasons)}

    # ------------------------------------------------------------------------------ checks

    def _trajectory_reasons(self, traj: Trajectory, ego: EgoState, obstacles: _Obstacles,
                            now_ns: int) -> list[str]:
        """Reason codes of every check ``traj`` fails (empty list: it is safe)."""
        cfg = self.config
        # structural failures make every later check meaningless: report them alone
        if traj.frame_id != ego.frame_id:
            return ["frame_mismatch"]
        if not traj.is_finite():
            return ["non_finite"]
        if not traj.is_time_valid():
            return ["bad_time"]
        age_s = (now_ns - traj.stamp_ns) / _NS_PER_S
        if age_s < 0 or age_s > cfg.last_valid_max_age_s or traj.t_s[-1] < age_s:
            return ["stale_trajectory"]
        reasons = self._kinematic_reasons(traj, ego)
        if self._collides(traj, obstacles, now_ns):
            reasons.append("collision")
        elif self._escape_blocked(traj, ego, obstacles, now_ns):
            reasons.append("no_escape")
        return reasons

    def _kinematic_reasons(self, traj: Trajectory, ego: EgoState) -> list[str]:
        cfg = self.config
        t, v, xy, yaw = traj.t_s, traj.speed, traj.xy, traj.yaw
        dt = np.diff(t)
        accel = np.diff(v) / dt
        # the ego's measured state is the start of the profile: the first sample must be
        # reachable from it within the limits (dt0 may be 0: then only the tolerance helps)
        v_ego = max(float(ego.linear_velocity[0]), 0.0)  # no reversing in this planner
        dt0 = abs((traj.stamp_ns - ego.stamp_ns) / _NS_PER_S + float(t[0]))
        dv0 = float(v[0]) - v_ego
        steps = np.diff(xy, axis=0)
        ds = np.hypot(steps[:, 0], steps[:, 1])
        moving = ds >= MIN_CURVATURE_STEP_M

        reasons = []
        if (v < 0).any():
            reasons.append("negative_speed")
        if (v > cfg.max_speed_mps + _TOL).any():
            reasons.append("over_speed")
        if ((accel > cfg.max_accel_mps2 + _TOL).any()
                or dv0 > cfg.max_accel_mps2 * dt0 + cfg.speed_tolerance_mps):
            reasons.append("over_accel")
        if ((accel < -cfg.max_decel_mps2 - _TOL).any()
                or dv0 < -cfg.max_decel_mps2 * dt0 - cfg.speed_tolerance_mps):
            reasons.append("over_decel")
        if len(t) >= 3:
            mid_t = (t[:-1] + t[1:]) / 2
            jerk = np.diff(accel) / np.diff(mid_t)
            if (np.abs(jerk) > cfg.max_jerk_mps3 + _TOL).any():
                reasons.append("over_jerk")

        # curvature two ways: heading change per distance (steps), and change of the
        # direction of travel between consecutive steps per distance (geometric path)
        dyaw = np.abs(wrap_angle(np.diff(yaw)))
        kappa_yaw = np.where(moving, dyaw / np.where(moving, ds, 1.0), 0.0)
        v_step = np.maximum(v[:-1], v[1:])
        lat = v_step ** 2 * kappa_yaw
        travel = np.arctan2(steps[:, 1], steps[:, 0])
        if len(t) >= 3:
            both = moving[:-1] & moving[1:]
            turn = np.abs(wrap_angle(np.diff(travel)))
            mean_ds = (ds[:-1] + ds[1:]) / 2
            kappa_path = np.where(both, turn / np.where(both, mean_ds, 1.0), 0.0)
            lat_path = v[1:-1] ** 2 * kappa_path
        else:
            kappa_path = lat_path = np.zeros(0)
        if ((kappa_yaw > cfg.max_curvature_1pm + _TOL).any()
                or (kappa_path > cfg.max_curvature_1pm + _TOL).any()):
            reasons.append("over_curvature")
        if ((lat > cfg.max_lateral_accel_mps2 + _TOL).any()
                or (lat_path > cfg.max_lateral_accel_mps2 + _TOL).any()):
            reasons.append("over_lateral_accel")
        # on an arc the chord points along the mean of the end headings
        mean_heading = yaw[:-1] + wrap_angle(np.diff(yaw)) / 2
        heading_err = np.abs(wrap_angle(travel - mean_heading))
        if (moving & (heading_err > MAX_HEADING_ERROR_RAD)).any():
            reasons.append("heading_mismatch")

        expected = (v[:-1] + v[1:]) / 2 * dt
        ego_xy = ego.pose.translation[:2]
        d0 = float(np.hypot(*(xy[0] - ego_xy)))
        expected0 = (v_ego + float(v[0])) / 2 * dt0
        if ((np.abs(ds - expected) > cfg.max_pose_jump_m).any()
                or abs(d0 - expected0) > cfg.max_pose_jump_m):
            reasons.append("pose_jump")
        return reasons

    def _collides(self, traj: Trajectory, obstacles: _Obstacles, now_ns: int) -> bool:
        """Whether the ego footprint along ``traj`` overlaps any obstacle predicted
        (:func:`predict_boxes`) to the same time, for samples due up to ``min_ttc_s`` after
        now (samples already past are kept: being wrong there is only conservative)."""
        due_s = (traj.stamp_ns - now_ns) / _NS_PER_S + traj.t_s
        return self._hits(traj.xy, traj.yaw, due_s, obstacles, now_ns, self.config.min_ttc_s,
                          self.config.margin_m)

    def _hits(self, xy: F64, yaw: F64, due_s: F64, obstacles: _Obstacles, now_ns: int,
              horizon_s: float, margin_m: float) -> bool:
        """Whether the ego footprint grown by ``margin_m`` at ``(S, 2)`` positions / ``(S,)``
        headings (world frame, m / rad), due ``due_s`` seconds after ``now_ns``, overlaps
        any obstacle predicted (:func:`predict_boxes`) to the same time; samples due after
        ``horizon_s`` are ignored."""
        cfg = self.config
        if obstacles.xy.shape[0] == 0:
            return False
        keep = due_s <= horizon_s
        if not keep.any():
            return False
        # seconds from each track's stamp to each sample: (S, T); int difference first so
        # large stamps lose no precision
        offset_s = np.array([(now_ns - s) / _NS_PER_S for s in obstacles.stamp_ns])
        dt = due_s[keep][:, None] + offset_s[None, :]
        obj_xy, obj_yaw = predict_boxes(obstacles.xy, obstacles.yaw, obstacles.velocity,
                                        obstacles.yaw_rate, dt, cfg.turn_horizon_s,
                                        cfg.max_track_curvature_1pm,
                                        cfg.min_track_yaw_rate_rps,
                                        cfg.min_track_curvature_1pm)
        ego_half = (cfg.ego_length_m / 2 + margin_m, cfg.ego_width_m / 2 + margin_m)
        hit = _overlaps(xy[keep], yaw[keep], ego_half, obj_xy, obj_yaw, obstacles.half)
        return bool(hit.any())

    def _escape_blocked(self, traj: Trajectory, ego: EgoState, obstacles: _Obstacles,
                        now_ns: int) -> bool:
        """Whether ``traj`` (finite, valid times, not stale) leaves the ego without a way
        out at the next replan while it has one now (see the module docstring)."""
        cfg = self.config
        if cfg.escape_horizon_s <= 0.0 or obstacles.xy.shape[0] == 0:
            return False
        ahead = _without_followers(obstacles, ego)
        if cfg.escape_labels:
            ahead = ahead.subset(np.array([x in cfg.escape_labels for x in ahead.labels],
                                          dtype=np.bool_).reshape(-1))
        # the path from the ego's measured state on: the trajectory's samples may start
        # ahead of it (a chunk's first waypoint is due one step after its stamp)
        elapsed_s = (now_ns - traj.stamp_ns) / _NS_PER_S
        later = traj.t_s > elapsed_s
        path = Trajectory(traj.stamp_ns, traj.frame_id,
                          np.concatenate([[elapsed_s], traj.t_s[later]]),
                          np.concatenate([ego.pose.translation[None, :2], traj.xy[later]]),
                          np.concatenate([[ego.pose.yaw()], traj.yaw[later]]),
                          np.concatenate([[max(float(ego.linear_velocity[0]), 0.0)],
                                          traj.speed[later]]), traj.source)
        return self._braking_hits(path, elapsed_s + cfg.escape_after_s, ahead, now_ns,
                                  cfg.margin_m)

    def _braking_hits(self, traj: Trajectory, from_s: float, obstacles: _Obstacles,
                      now_ns: int, margin_m: float) -> bool:
        """Whether braking at ``max_decel_mps2`` along ``traj``'s path from its state at
        ``from_s`` (s after ``traj.stamp_ns``; clamped to its end), then standing still,
        collides (footprint grown by ``margin_m``) before ``escape_horizon_s`` after
        ``now_ns``."""
        cfg = self.config
        start = traj.sample(from_s)
        v0 = min(max(float(start.speed[0]), 0.0), cfg.max_speed_mps)
        later = traj.t_s > from_s
        pts = np.concatenate([start.xy, traj.xy[later]])
        yaws = np.unwrap(np.concatenate([start.yaw, traj.yaw[later]]))
        seg = np.hypot(*np.diff(pts, axis=0).T)
        keep = np.concatenate([[True], seg > 1e-6])  # np.interp needs increasing arc lengths
        pts, yaws = pts[keep], yaws[keep]
        arc = np.concatenate([[0.0], np.cumsum(seg[seg > 1e-6])])
        t_stop = v0 / cfg.max_decel_mps2
        due_s = (traj.stamp_ns - now_ns) / _NS_PER_S + from_s
        tau = np.arange(0.0, max(cfg.escape_horizon_s - due_s, 0.0) + STOP_PROFILE_DT_S,
                        STOP_PROFILE_DT_S)
        s = np.where(tau < t_stop, v0 * tau - cfg.max_decel_mps2 * tau ** 2 / 2,
                     v0 * t_stop / 2)
        # past the end of the path: straight on along its last heading
        beyond = np.maximum(s - arc[-1], 0.0)
        xy = np.stack([np.interp(s, arc, pts[:, 0]) + beyond * math.cos(yaws[-1]),
                       np.interp(s, arc, pts[:, 1]) + beyond * math.sin(yaws[-1])], axis=1)
        yaw = np.asarray(wrap_angle(np.interp(s, arc, yaws)), dtype=np.float64)
        return self._hits(xy, yaw, due_s + tau, obstacles, now_ns, cfg.escape_horizon_s,
                          margin_m)

    # ------------------------------------------------------------------------ fallbacks

    def _stop_trajectory(self, ego: EgoState, now_ns: int, decel: float,
                         source: str) -> Trajectory:
        """Straight stop along the ego's heading at constant ``decel`` (m/s^2), stamped
        ``now_ns``, then standing still until at least ``min_ttc_s``.

        Starts at the ego position extrapolated to ``now_ns`` (by at most
        ``perception_timeout_s``) with the ego's forward speed clamped to
        ``[0, max_speed_mps]``, so it is finite and inside the limits by construction.
        """
        cfg = self.config
        v0 = min(max(float(ego.linear_velocity[0]), 0.0), cfg.max_speed_mps)
        heading = ego.pose.yaw()
        direction = np.array([math.cos(heading), math.sin(heading)])
        lag_s = min(max((now_ns - ego.stamp_ns) / _NS_PER_S, 0.0), cfg.perception_timeout_s)
        start = ego.pose.translation[:2] + direction * v0 * lag_s
        t_stop = v0 / decel
        grid = np.arange(math.ceil(t_stop / STOP_PROFILE_DT_S)) * STOP_PROFILE_DT_S
        # drop grid points just before the stop time: a tiny last interval would turn
        # rounding errors of the speeds into large accelerations
        t_move = np.append(grid[grid < t_stop - 1e-3], t_stop)  # [0.0] when standing
        n_hold = max(1, math.ceil((cfg.min_ttc_s - t_stop) / STOP_PROFILE_DT_S) + 1)
        t_s = np.concatenate([t_move, t_stop + STOP_PROFILE_DT_S * np.arange(1, n_hold + 1)])
        moving = t_s < t_stop
        speed = np.clip(np.where(moving, v0 - decel * t_s, 0.0), 0.0, v0)
        dist = np.where(moving, v0 * t_s - decel * t_s ** 2 / 2, v0 * t_stop / 2)
        return Trajectory(now_ns, ego.frame_id, t_s, start + dist[:, None] * direction,
                          np.full(t_s.shape, heading), speed, source)


def _without_followers(obstacles: _Obstacles, ego: EgoState) -> _Obstacles:
    """``obstacles`` less those behind the ego moving along its heading (followers: within
    :data:`FOLLOWER_MAX_ANGLE_RAD`, faster than :data:`FOLLOWER_MIN_SPEED_MPS`)."""
    heading = ego.pose.yaw()
    forward = np.array([math.cos(heading), math.sin(heading)])
    behind = (obstacles.xy - ego.pose.translation[:2]) @ forward < 0.0
    speed = np.hypot(obstacles.velocity[:, 0], obstacles.velocity[:, 1])
    along = obstacles.velocity @ forward > speed * math.cos(FOLLOWER_MAX_ANGLE_RAD)
    return obstacles.subset(~(behind & along & (speed > FOLLOWER_MIN_SPEED_MPS)))


def _fresh(stamp_ns: int | None, now_ns: int, timeout_s: float) -> bool:
    """Whether an input stamped ``stamp_ns`` is usable at ``now_ns``: present, not from the
    future (a clock that went backwards), and at most ``timeout_s`` old."""
    if stamp_ns is None:
        return False
    age_ns = now_ns - stamp_ns
    return 0 <= age_ns <= timeout_s * _NS_PER_S


__all__ = [
    "FOLLOWER_MAX_ANGLE_RAD",
    "FOLLOWER_MIN_SPEED_MPS",
    "MAX_HEADING_ERROR_RAD",
    "MIN_CURVATURE_STEP_M",
    "REASON_CODES",
    "STOP_PROFILE_DT_S",
    "SafetyConfig",
    "SafetyFilter",
    "SafetyResult",
    "SafetyStatus",
    "predict_boxes",
]
