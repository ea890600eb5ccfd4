"""Safety filter and trajectory type.

Every scenario is built from closed-form motion (straight lines, circular arcs, constant
acceleration) whose limits are known by hand, and asserts the exact status and reason codes,
so a check that stops firing (or fires for the wrong cause) fails. Every returned trajectory
is also checked against the limits independently of the filter's own code.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import (
    Box3D,
    DetectedObject,
    EgoState,
    ObjectClass,
    Track,
    TrackStatus,
)
from mm_perception.planning.safety import (
    REASON_CODES,
    SafetyConfig,
    SafetyFilter,
    SafetyResult,
    SafetyStatus,
    _obstacles,
    _without_followers,
    predict_boxes,
)
from mm_perception.planning.trajectory import Trajectory

NOW = 1_000_000_000_000  # ns
S = 1_000_000_000  # ns per second
FRAME = "odom"
CFG = SafetyConfig()
FRONT = CFG.ego_length_m / 2  # distance base_link -> front bumper (footprint is centred)
CAR_LEN, CAR_WIDTH = 4.5, 1.8


def ego_state(x: float = 0.0, y: float = 0.0, yaw: float = 0.0, speed: float = 0.0,
              stamp_ns: int = NOW, frame_id: str = FRAME) -> EgoState:
    return EgoState(stamp_ns, frame_id, "base_link", SE3.from_xy_yaw(x, y, yaw),
                    linear_velocity=np.array([speed, 0.0, 0.0]))


def make_traj(t_s: Any, xy: Any, yaw: Any, speed: Any, stamp_ns: int = NOW,
              frame_id: str = FRAME) -> Trajectory:
    return Trajectory(stamp_ns, frame_id, np.asarray(t_s, float), np.asarray(xy, float),
                      np.asarray(yaw, float), np.asarray(speed, float), "test")


def straight(speed: float = 5.0, duration_s: float = 3.0, dt: float = 0.1, x0: float = 0.0,
             stamp_ns: int = NOW, frame_id: str = FRAME) -> Trajectory:
    """Constant speed along +x from (x0, 0)."""
    t = np.arange(round(duration_s / dt) + 1) * dt
    xy = np.stack([x0 + speed * t, np.zeros_like(t)], axis=1)
    return make_traj(t, xy, np.zeros_like(t), np.full_like(t, speed), stamp_ns, frame_id)


def accelerating(v0: float, accel: float, duration_s: float, dt: float = 0.1) -> Trajectory:
    """Constant acceleration along +x from the origin (exact positions)."""
    t = np.arange(round(duration_s / dt) + 1) * dt
    xy = np.stack([v0 * t + accel * t ** 2 / 2, np.zeros_like(t)], axis=1)
    return make_traj(t, xy, np.zeros_like(t), v0 + accel * t)


def arc(speed: float, radius: float, duration_s: float, dt: float = 0.1) -> Trajectory:
    """Constant speed on a left-turning circle of ``radius`` starting at the origin along +x."""
    t = np.arange(round(duration_s / dt) + 1) * dt
    theta = speed * t / radius
    xy = np.stack([radius * np.sin(theta), radius * (1 - np.cos(theta))], axis=1)
    return make_traj(t, xy, theta, np.full_like(t, speed))


def car(x: float, y: float = 0.0, yaw: float = 0.0, velocity: Any = None,
        stamp_ns: int = NOW, frame_id: str = FRAME,
        status: TrackStatus = TrackStatus.CONFIRMED, track_id: int = 1) -> Track:
    box = Box3D(np.array([x, y, 0.75]), np.array([CAR_LEN, CAR_WIDTH, 1.5]), yaw, frame_id)
    vel = None if velocity is None else np.array([velocity[0], velocity[1], 0.0])
    obj = DetectedObject(box, ObjectClass.CAR, 0.9, stamp_ns=stamp_ns, velocity=vel)
    return Track(track_id, obj, status)


def run(filt: SafetyFilter, traj: Trajectory | None, ego: EgoState,
        tracks: list[Track] | None = None, now_ns: int = NOW,
        perception_ns: int | None = NOW, instruction_ns: int | None = NOW) -> SafetyResult:
    result = filt.check(traj, ego, tracks or [], now_ns, perception_ns, instruction_ns)
    assert_within_limits(result, filt.config, ego.frame_id)
    return result


def assert_within_limits(result: SafetyResult, cfg: SafetyConfig, frame_id: str) -> None:
    """The filter's output contract, checked without the filter's code."""
    traj = result.trajectory
    assert traj.frame_id == frame_id
    for arr in (traj.t_s, traj.xy, traj.yaw, traj.speed):
        assert np.isfinite(arr).all()
    assert traj.t_s[0] >= 0.0
    assert (np.diff(traj.t_s) > 0).all()
    assert (traj.speed >= 0.0).all()
    assert (traj.speed <= cfg.max_speed_mps + 1e-9).all()
    accel = np.diff(traj.speed) / np.diff(traj.t_s)
    assert (accel >= -cfg.max_decel_mps2 - 1e-6).all()
    assert (accel <= cfg.max_accel_mps2 + 1e-6).all()
    assert (result.status is SafetyStatus.PASSED) == (result.reasons == ())
    assert set(result.reasons) <= set(REASON_CODES)


def assert_stop(result: SafetyResult, status: SafetyStatus, ego: EgoState,
                decel: float) -> None:
    """A straight stop from the ego pose along its heading at ``decel``."""
    assert result.status is status
    traj = result.trajectory
    v0 = min(max(float(ego.linear_velocity[0]), 0.0), CFG.max_speed_mps)
    assert traj.speed[0] == pytest.approx(v0)
    assert traj.speed[-1] == 0.0
    moving = np.diff(traj.speed) < 0
    accel = np.diff(traj.speed) / np.diff(traj.t_s)
    np.testing.assert_allclose(accel[moving], -decel, rtol=1e-9)
    heading = ego.pose.yaw()
    travel = traj.xy[-1] - ego.pose.translation[:2]
    assert float(np.hypot(*travel)) == pytest.approx(v0 ** 2 / (2 * decel), abs=1e-9)
    if v0 > 0:
        assert math.atan2(travel[1], travel[0]) == pytest.approx(heading, abs=1e-9)
    np.testing.assert_allclose(traj.yaw, heading)
    assert traj.t_s[-1] >= CFG.min_ttc_s  # stands still at least over the collision horizon


# -------------------------------------------------------------------------- trajectory


def test_trajectory_checks_shapes_but_accepts_non_finite_values() -> None:
    traj = make_traj([0.0, 0.1], [[0, 0], [np.nan, np.inf]], [0, 0], [1, -np.inf])
    assert not traj.is_finite()
    assert len(traj) == 2
    assert not traj.xy.flags.writeable
    with pytest.raises(ValueError, match="at least one sample"):
        make_traj([], np.zeros((0, 2)), [], [])
    with pytest.raises(ValueError, match=r"xy must have shape \(2, 2\)"):
        make_traj([0.0, 0.1], [[0, 0, 0], [1, 0, 0]], [0, 0], [1, 1])
    with pytest.raises(ValueError, match="speed must have shape"):
        make_traj([0.0, 0.1], [[0, 0], [1, 0]], [0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="real numbers"):
        Trajectory(NOW, FRAME, np.array(["a"]), np.zeros((1, 2)), np.zeros(1), np.zeros(1))
    with pytest.raises(TypeError, match="stamp_ns"):
        Trajectory(1.5, FRAME, np.zeros(1), np.zeros((1, 2)), np.zeros(1),  # type: ignore[arg-type]
                   np.zeros(1))


def test_trajectory_sample_interpolates_clamps_and_turns_the_short_way() -> None:
    traj = make_traj([0.0, 1.0, 2.0], [[0, 0], [2, 0], [2, 4]],
                     [math.pi - 0.1, -math.pi + 0.1, -math.pi + 0.1], [0.0, 2.0, 4.0])
    got = traj.sample([-1.0, 0.5, 1.5, 9.0])
    np.testing.assert_allclose(got.xy, [[0, 0], [1, 0], [2, 2], [2, 4]])
    np.testing.assert_allclose(got.speed, [0.0, 1.0, 3.0, 4.0])
    # halfway between pi - 0.1 and -pi + 0.1 the short way is pi, not 0
    assert abs(abs(float(got.yaw[1])) - math.pi) < 1e-9
    assert traj.duration_s == 2.0
    with pytest.raises(ValueError, match="non-finite"):
        make_traj([0.0, 1.0], [[0, 0], [1, 0]], [0, 0], [1, np.nan]).sample(0.5)


def test_trajectory_tail_keeps_original_samples() -> None:
    traj = straight(5.0, 1.0)
    assert traj.tail_from(NOW - S) is traj
    tail = traj.tail_from(NOW + 250_000_000)
    assert tail is not None
    assert tail.stamp_ns == NOW + 200_000_000  # the sample being tracked at that time
    assert tail.t_s[0] == 0.0
    np.testing.assert_allclose(tail.xy, traj.xy[2:])
    assert traj.tail_from(NOW + 2 * S) is None


# ---------------------------------------------------------------------- passing / limits


def test_valid_straight_trajectory_passes_unchanged() -> None:
    filt = SafetyFilter()
    traj = straight(5.0)
    result = run(filt, traj, ego_state(speed=5.0), [car(10.0, 4.0)])
    assert result.status is SafetyStatus.PASSED
    assert result.reasons == ()
    assert result.trajectory is traj
    assert not result.intervened


def test_valid_gentle_curve_and_acceleration_pass() -> None:
    filt = SafetyFilter()
    assert run(filt, arc(5.0, 10.0, 2.0), ego_state(speed=5.0)).status is SafetyStatus.PASSED
    assert run(filt, accelerating(2.0, 2.0, 3.0), ego_state(speed=2.0)).reasons == ()
    # braking at the comfortable rate down to standstill, then standing
    t = np.arange(31) * 0.1
    v = np.maximum(6.0 - 2.0 * t, 0.0)
    x = np.where(t < 3.0, 6.0 * t - t ** 2, 9.0)
    braking = make_traj(t, np.stack([x, 0 * t], 1), 0 * t, v)
    assert run(filt, braking, ego_state(speed=6.0)).reasons == ()


@pytest.mark.parametrize(("field", "index", "value"), [
    ("speed", 5, np.nan), ("speed", 0, np.inf), ("xy", 3, np.nan), ("xy", 7, -np.inf),
    ("yaw", 2, np.nan), ("t_s", 4, np.nan), ("t_s", 9, np.inf),
])
def test_non_finite_values_are_rejected(field: str, index: int, value: float) -> None:
    base = straight(5.0)
    arrays = {name: np.array(getattr(base, name)) for name in ("t_s", "xy", "yaw", "speed")}
    arrays[field][index] = value
    traj = make_traj(arrays["t_s"], arrays["xy"], arrays["yaw"], arrays["speed"])
    ego = ego_state(speed=5.0)
    result = run(SafetyFilter(), traj, ego)
    assert result.reasons == ("non_finite",)
    assert_stop(result, SafetyStatus.COMFORTABLE_STOP, ego, CFG.comfort_decel_mps2)


def test_over_speed_rejected_and_stop_starts_at_the_speed_limit() -> None:
    ego = ego_state(speed=20.0)
    result = run(SafetyFilter(), straight(20.0), ego)
    assert result.reasons == ("over_speed",)
    assert_stop(result, SafetyStatus.COMFORTABLE_STOP, ego, CFG.comfort_decel_mps2)
    assert result.trajectory.speed[0] == CFG.max_speed_mps


@pytest.mark.parametrize(("traj", "ego_speed", "reasons"), [
    (accelerating(5.0, 4.0, 2.0), 5.0, ("over_accel",)),       # between samples
    (straight(5.0), 0.0, ("over_accel",)),                     # from the ego's speed
    (accelerating(10.0, -8.0, 1.0), 10.0, ("over_decel",)),    # between samples
    (straight(2.0), 10.0, ("over_decel",)),                    # from the ego's speed
])
def test_acceleration_limits(traj: Trajectory, ego_speed: float,
                             reasons: tuple[str, ...]) -> None:
    result = run(SafetyFilter(), traj, ego_state(speed=ego_speed))
    assert result.reasons == reasons
    assert result.status is SafetyStatus.COMFORTABLE_STOP


def test_small_odometry_speed_noise_is_tolerated() -> None:
    result = run(SafetyFilter(), straight(5.0), ego_state(speed=5.0 + 0.15))
    assert result.status is SafetyStatus.PASSED


def test_jerk_limit() -> None:
    t = np.arange(31) * 0.1
    v = 5.0 + 0.2 * (np.arange(31) % 2)  # +-2 m/s^2 every 0.1 s: jerk 40 m/s^3
    x = np.concatenate([[0.0], np.cumsum((v[:-1] + v[1:]) / 2 * 0.1)])
    traj = make_traj(t, np.stack([x, 0 * t], 1), 0 * t, v)
    assert run(SafetyFilter(), traj, ego_state(speed=5.0)).reasons == ("over_jerk",)


def test_curvature_limit() -> None:
    # radius 3 m: curvature 0.33 > 0.2, lateral accel only 0.33 m/s^2 at 1 m/s
    result = run(SafetyFilter(), arc(1.0, 3.0, 3.0), ego_state(speed=1.0))
    assert result.reasons == ("over_curvature",)


def test_lateral_acceleration_limit() -> None:
    # radius 10 m: curvature 0.1 is allowed, but 8^2 / 10 = 6.4 m/s^2 > 4 is not
    result = run(SafetyFilter(), arc(8.0, 10.0, 2.0), ego_state(speed=8.0))
    assert result.reasons == ("over_lateral_accel",)


def test_sideways_motion_is_a_heading_mismatch() -> None:
    base = straight(2.0)
    traj = make_traj(base.t_s, base.xy[:, ::-1], base.yaw, base.speed)  # moves along +y
    assert run(SafetyFilter(), traj, ego_state(speed=2.0)).reasons == ("heading_mismatch",)


def test_pose_jumps_are_rejected() -> None:
    base = straight(5.0)
    xy = np.array(base.xy)
    xy[10:, 0] += 2.0  # teleports 2 m between samples 9 and 10
    jumped = make_traj(base.t_s, xy, base.yaw, base.speed)
    assert run(SafetyFilter(), jumped, ego_state(speed=5.0)).reasons == ("pose_jump",)
    # starts 5 m away from where the ego is
    away = straight(5.0, x0=5.0)
    assert run(SafetyFilter(), away, ego_state(speed=5.0)).reasons == ("pose_jump",)


def test_bad_times_and_negative_speed() -> None:
    base = straight(5.0)
    t = np.array(base.t_s)
    t[[3, 4]] = t[[4, 3]]
    swapped = make_traj(t, base.xy, base.yaw, base.speed)
    assert run(SafetyFilter(), swapped, ego_state(speed=5.0)).reasons == ("bad_time",)
    negative = make_traj(base.t_s - 0.5, base.xy, base.yaw, base.speed)
    assert run(SafetyFilter(), negative, ego_state(speed=5.0)).reasons == ("bad_time",)
    backwards = make_traj([0.0, 0.1, 0.2], np.zeros((3, 2)), np.zeros(3), [-0.1] * 3)
    assert run(SafetyFilter(), backwards, ego_state()).reasons == ("negative_speed",)


def test_missing_and_out_of_date_trajectories() -> None:
    filt = SafetyFilter()
    assert run(filt, None, ego_state()).reasons == ("empty",)
    old = straight(0.0, stamp_ns=NOW - 2 * S)
    assert run(filt, old, ego_state()).reasons == ("stale_trajectory",)
    future = straight(0.0, stamp_ns=NOW + 1)
    assert run(filt, future, ego_state()).reasons == ("stale_trajectory",)
    over = straight(0.0, duration_s=0.5, stamp_ns=NOW - 800_000_000)  # ended 0.3 s ago
    assert run(filt, over, ego_state()).reasons == ("stale_trajectory",)


# --------------------------------------------------------------------------- collisions


def test_static_car_ahead_gives_collision_and_a_comfortable_stop() -> None:
    ego = ego_state(speed=5.0)
    result = run(SafetyFilter(), straight(5.0, 5.0), ego, [car(20.0)])
    assert result.reasons == ("collision",)
    assert_stop(result, SafetyStatus.COMFORTABLE_STOP, ego, CFG.comfort_decel_mps2)
    # the same car beyond the collision horizon (reached after more than 4 s) is ignored
    far = run(SafetyFilter(), straight(5.0, 5.0), ego, [car(27.0)])
    assert far.status is SafetyStatus.PASSED


def test_close_lead_car_forces_emergency_stop() -> None:
    # 3 m bumper gap at 10 m/s to a lead car doing 5 m/s: comfortable braking closes
    # 4.2 m (collides), emergency braking 2.1 m (inside the 2.7 m gap left by the margin)
    ego = ego_state(speed=10.0)
    lead = car(FRONT + 3.0 + CAR_LEN / 2, velocity=(5.0, 0.0))
    result = run(SafetyFilter(), straight(10.0), ego, [lead])
    assert result.reasons == ("collision",)
    assert_stop(result, SafetyStatus.EMERGENCY_STOP, ego, CFG.max_decel_mps2)


def test_static_car_three_metres_ahead_at_speed_is_unavoidable() -> None:
    ego = ego_state(speed=10.0)
    result = run(SafetyFilter(), straight(10.0), ego, [car(FRONT + 3.0 + CAR_LEN / 2)])
    assert result.reasons == ("collision", "collision_unavoidable")
    assert_stop(result, SafetyStatus.EMERGENCY_STOP, ego, CFG.max_decel_mps2)


def test_moving_objects_are_predicted_into_the_path() -> None:
    ego = ego_state(speed=5.0)
    traj = straight(5.0, 5.0)
    # oncoming at 4 m/s from 30 m: meets the ego after ~2.8 s; as a static object it is
    # only reached after ~5 s, beyond the horizon
    oncoming = car(30.0, yaw=math.pi, velocity=(-4.0, 0.0))
    result = run(SafetyFilter(), traj, ego, [oncoming])
    assert result.reasons == ("collision",)
    assert result.status is SafetyStatus.COMFORTABLE_STOP  # it stays 5 m short at 4 s
    # faster, it reaches even the stopped ego within the horizon
    fast = car(30.0, yaw=math.pi, velocity=(-8.0, 0.0))
    assert run(SafetyFilter(), traj, ego, [fast]).reasons == ("collision",
                                                              "collision_unavoidable")
    assert run(SafetyFilter(), traj, ego, [car(30.0, yaw=math.pi)]).reasons == ()
    # crossing from the right at 5 m/s, into the ego's path at x = 10 m after 2 s
    crossing = car(10.0, -10.0, yaw=math.pi / 2, velocity=(0.0, 5.0))
    assert run(SafetyFilter(), traj, ego, [crossing]).reasons == ("collision",)
    # prediction starts at the track's own stamp: measured 1 s ago, it is already past
    passed = car(10.0, -5.0, yaw=math.pi / 2, velocity=(0.0, 10.0), stamp_ns=NOW - S)
    assert run(SafetyFilter(), traj, ego, [passed]).reasons == ()
    # a tentative track's velocity is not trusted: it blocks where it stands, not where a
    # one-measurement velocity would take it ...
    unsure = car(10.0, -10.0, yaw=math.pi / 2, velocity=(0.0, 5.0),
                 status=TrackStatus.TENTATIVE)
    assert run(SafetyFilter(), traj, ego, [unsure]).reasons == ()
    assert run(SafetyFilter(), traj, ego, [car(20.0, status=TrackStatus.TENTATIVE)]
               ).reasons == ("collision",)
    # ... unless configured otherwise
    trusting = SafetyFilter(SafetyConfig(tentative_static=False))
    assert run(trusting, traj, ego, [unsure]).reasons == ("collision",)


def truck(x: float, y: float, yaw: float, speed: float, yaw_rate: float | None,
          status: TrackStatus = TrackStatus.CONFIRMED) -> Track:
    """An 11.3 x 2.5 m lorry moving along its heading at ``speed`` (m/s), turning at
    ``yaw_rate`` (rad/s)."""
    box = Box3D(np.array([x, y, 1.6]), np.array([11.3, 2.5, 3.2]), yaw, FRAME)
    vel = np.array([speed * math.cos(yaw), speed * math.sin(yaw), 0.0])
    obj = DetectedObject(box, ObjectClass.TRUCK, 0.9, stamp_ns=NOW, velocity=vel,
                         yaw_rate=yaw_rate)
    return Track(7, obj, status)


def test_turning_lorry_tail_swing_is_predicted() -> None:
    """The closed-loop case that hit: an oncoming lorry turning right beside the ego swings
    its tail into the ego's lane. A straight-line prediction keeps its box in its own lane
    (and passes the ego's chunk); the turn-rate prediction sees the tail coming."""
    ego = ego_state(speed=3.0)
    traj = straight(3.0, 5.0)
    lorry = truck(5.0, 3.5, math.pi, 4.0, -0.35)  # oncoming lane, clockwise turn
    straight_only = SafetyFilter(SafetyConfig(turn_horizon_s=0.0))
    assert run(straight_only, traj, ego, [lorry]).status is SafetyStatus.PASSED
    result = run(SafetyFilter(), traj, ego, [lorry])
    assert result.reasons[0] == "collision"
    # the same lorry going straight on (a known zero or an unknown turn rate) does not
    # block the ego; turning left, across the ego's lane, it does
    for rate in (None, 0.0):
        assert run(SafetyFilter(), traj, ego, [truck(5.0, 3.5, math.pi, 4.0, rate)]
                   ).status is SafetyStatus.PASSED, rate
    assert run(SafetyFilter(), traj, ego, [truck(5.0, 3.5, math.pi, 4.0, 0.35)]
               ).reasons[0] == "collision"
    # a tentative track's rate is not trusted any more than its velocity
    assert run(SafetyFilter(), traj, ego, [truck(5.0, 3.5, math.pi, 4.0, -0.35,
                                                  TrackStatus.TENTATIVE)]
               ).status is SafetyStatus.PASSED


def test_small_turn_rates_of_straight_traffic_do_not_stop_the_ego() -> None:
    """A rate inside the dead band (tracker noise of a car going straight) is not followed:
    an oncoming car in the next lane at 10 m/s with 0.14 rad/s towards the ego passes;
    followed (no dead band) the same rate would bend it into the ego's lane."""
    ego = ego_state(speed=10.0)
    traj = straight(10.0, 5.0)
    box = Box3D(np.array([60.0, 3.5, 0.75]), np.array([CAR_LEN, CAR_WIDTH, 1.5]), math.pi,
                FRAME)
    obj = DetectedObject(box, ObjectClass.CAR, 0.9, stamp_ns=NOW,
                         velocity=np.array([-10.0, 0.0, 0.0]), yaw_rate=0.14)
    assert run(SafetyFilter(), traj, ego, [Track(3, obj, TrackStatus.CONFIRMED)]
               ).status is SafetyStatus.PASSED
    low_band = SafetyFilter(SafetyConfig(min_track_yaw_rate_rps=0.0,
                                         min_track_curvature_1pm=0.0))
    assert run(low_band, traj, ego, [Track(3, obj, TrackStatus.CONFIRMED)]
               ).reasons[0] == "collision"


def test_predict_boxes_follows_the_arc_then_goes_straight() -> None:
    xy = np.array([[1.0, 2.0], [0.0, 0.0], [5.0, 5.0]])
    yaw = np.array([0.3, 0.0, 1.0])
    velocity = np.array([[4.0 * math.cos(0.3), 4.0 * math.sin(0.3)], [2.0, 0.0], [0.0, 0.0]])
    rate = np.array([0.4, 0.0, 0.5])   # turning left; straight; standing with a rate
    horizon = 2.0
    dt = np.array([0.0, 0.7, 1.5, 2.0, 3.5, -1.0])[:, None] * np.ones((1, 3))
    centre, heading = predict_boxes(xy, yaw, velocity, rate, dt, horizon, 0.3)
    assert centre.shape == (6, 3, 2) and heading.shape == (6, 3)
    # track 0: on the circle of radius v / w about its turn centre while turning (the
    # arc length v t), then straight along the heading reached, at the same speed
    v, w = 4.0, 0.4
    r = v / w
    pivot = xy[0] + r * np.array([-math.sin(0.3), math.cos(0.3)])
    for k, t in enumerate(dt[:, 0]):
        tau = min(max(t, -horizon), horizon)
        on_arc = pivot + r * np.array([math.sin(0.3 + w * tau), -math.cos(0.3 + w * tau)])
        ahead = (t - tau) * v * np.array([math.cos(0.3 + w * tau), math.sin(0.3 + w * tau)])
        np.testing.assert_allclose(centre[k, 0], on_arc + ahead, atol=1e-12)
        assert heading[k, 0] == pytest.approx(0.3 + w * tau)
    # track 1 (no rate): constant velocity, heading kept
    np.testing.assert_allclose(centre[:, 1], xy[1] + dt[:, 1:2] * velocity[1], atol=1e-12)
    np.testing.assert_allclose(heading[:, 1], 0.0)
    # track 2: standing still, so its rate is clipped to 0.3 / m x 0 m/s: no spin in place
    np.testing.assert_allclose(centre[:, 2], np.broadcast_to(xy[2], (6, 2)))
    np.testing.assert_allclose(heading[:, 2], 1.0)
    # the rate bound scales with speed: 1 rad/s at 2 m/s is followed as 0.6 rad/s
    _, turned = predict_boxes(xy[1:2], yaw[1:2], velocity[1:2], np.array([1.0]),
                              np.array([[1.0]]), horizon, 0.3)
    assert turned[0, 0] == pytest.approx(0.6)
    # the dead band: 0.05 rad/s is noise below 0.1 rad/s, followed above 0.01
    _, quiet = predict_boxes(xy[1:2], yaw[1:2], velocity[1:2], np.array([0.05]),
                             np.array([[1.0]]), horizon, 0.3, 0.1)
    _, heard = predict_boxes(xy[1:2], yaw[1:2], velocity[1:2], np.array([0.05]),
                             np.array([[1.0]]), horizon, 0.3, 0.01)
    assert quiet[0, 0] == 0.0 and heard[0, 0] == pytest.approx(0.05)
    # ... and on curvature: 0.05 rad/s at 2 m/s is 0.025 1/m, noise below 0.04 1/m
    _, wide = predict_boxes(xy[1:2], yaw[1:2], velocity[1:2], np.array([0.05]),
                            np.array([[1.0]]), horizon, 0.3, 0.01, 0.04)
    assert wide[0, 0] == 0.0
    # no turn horizon: every track at constant velocity
    flat, _ = predict_boxes(xy, yaw, velocity, rate, dt, 0.0, 0.3)
    np.testing.assert_allclose(flat, xy[None] + dt[..., None] * velocity[None], atol=1e-12)


def test_car_in_the_adjacent_lane_and_deleted_tracks_do_not_block() -> None:
    ego = ego_state(speed=5.0)
    traj = straight(5.0, 5.0)
    tracks = [car(10.0, 4.0), car(25.0, -4.0, velocity=(5.0, 0.0), track_id=2),
              car(10.0, status=TrackStatus.DELETED, track_id=3)]
    assert run(SafetyFilter(), traj, ego, tracks).status is SafetyStatus.PASSED


def test_rotated_box_overlap_uses_the_box_axes() -> None:
    # a car across the lane, centred 1.5 m beside the path: its length reaches into it
    ego = ego_state(speed=5.0)
    across = car(10.0, 3.0, yaw=math.pi / 2)
    assert run(SafetyFilter(), straight(5.0), ego, [across]).reasons == ("collision",)
    along = car(10.0, 3.0)  # the same box along the lane stays clear
    assert run(SafetyFilter(), straight(5.0), ego, [along]).reasons == ()


# ---------------------------------------------------------------------------- way out

#: emergency braking distance from 5 m/s, m
BRAKE_5 = 5.0 ** 2 / (2 * CFG.max_decel_mps2)
#: the way-out check against every class (the default considers walkers and cyclists only)
WAY_OUT = SafetyConfig(escape_labels=())


def crossing_car(x: float) -> Track:
    """A car crossing the ego's road at ``x`` from the left at 7 m/s: its body reaches the
    ego's footprint (half width + margin) 2.5 s from now."""
    half_ego = CFG.ego_width_m / 2 + CFG.margin_m
    y0 = half_ego + CAR_LEN / 2 + 7.0 * 2.5
    return car(x, y0, yaw=-math.pi / 2, velocity=(0.0, -7.0))


def test_a_trajectory_that_leaves_no_way_out_is_refused() -> None:
    # driving on at 5 m/s clears the crossing before the car arrives (no collision), but
    # braking from where the ego is at the next replan (0.5 s: 2.5 m) ends with its front
    # in the car's way; braking now ends short of it
    ego = ego_state(speed=5.0)
    front_now = FRONT + CFG.margin_m + BRAKE_5
    front_next = front_now + 5.0 * CFG.escape_after_s
    x = (front_now + front_next) / 2 + CAR_WIDTH / 2  # car's near side between the two
    assert front_now < x - CAR_WIDTH / 2 < front_next
    result = run(SafetyFilter(WAY_OUT), straight(5.0, 4.0), ego, [crossing_car(x)])
    assert result.reasons == ("no_escape",)
    assert_stop(result, SafetyStatus.EMERGENCY_STOP, ego, CFG.max_decel_mps2)
    # vehicles left out (the default labels) or the check off: the same trajectory passes
    # (collision-free as planned)
    for off in (SafetyFilter(), SafetyFilter(SafetyConfig(escape_horizon_s=0.0))):
        assert run(off, straight(5.0, 4.0), ego,
                   [crossing_car(x)]).status is SafetyStatus.PASSED
    # a car arriving after the horizon (5 s) does not block
    late = crossing_car(x)
    late_box = late.object.box
    later = Track(1, DetectedObject(Box3D(late_box.center + np.array([0.0, 7.0 * 3.0, 0.0]),
                                          late_box.size, late_box.yaw, FRAME),
                                    ObjectClass.CAR, 0.9, stamp_ns=NOW,
                                    velocity=np.array([0.0, -7.0, 0.0])),
                  TrackStatus.CONFIRMED)
    assert run(SafetyFilter(WAY_OUT), straight(5.0, 4.0), ego,
               [later]).status is SafetyStatus.PASSED


def crossing_walker(x: float, y0: float, speed: float = 1.3,
                    label: ObjectClass = ObjectClass.PEDESTRIAN) -> Track:
    """A walker (0.6 x 0.6 m) at ``(x, y0)`` walking towards the ego's path (-y)."""
    box = Box3D(np.array([x, y0, 0.85]), np.array([0.6, 0.6, 1.7]), -math.pi / 2, FRAME)
    obj = DetectedObject(box, label, 0.9, stamp_ns=NOW,
                         velocity=np.array([0.0, -speed, 0.0]))
    return Track(7, obj, TrackStatus.CONFIRMED)


def test_the_default_way_out_check_stops_before_walkers_reach_the_lane() -> None:
    # 9 m/s, a walker 3 m from the ego's footprint walking into the lane, just beyond the
    # ego's braking distance from now but inside it from the next replan: the ego would
    # pass him before he arrives (no collision as planned), but if it brakes for him
    # later, it stops on his line. The default filter refuses the chunk now.
    ego = ego_state(speed=9.0)
    brake_9 = 9.0 ** 2 / (2 * CFG.max_decel_mps2)
    front_now = FRONT + CFG.margin_m + brake_9
    x = front_now + 0.3 + 0.5 * 9.0 * CFG.escape_after_s
    half_ego = CFG.ego_width_m / 2 + CFG.margin_m
    walker = crossing_walker(x, half_ego + 0.3 + 3.0)
    plan = straight(9.0, 4.0)
    off = SafetyFilter(SafetyConfig(escape_horizon_s=0.0))
    assert run(off, plan, ego, [walker]).status is SafetyStatus.PASSED
    result = run(SafetyFilter(), plan, ego, [walker])
    assert result.reasons == ("no_escape",)
    # braking now (comfortably would overrun him) stops clear: the emergency stop
    assert_stop(result, SafetyStatus.EMERGENCY_STOP, ego, CFG.max_decel_mps2)
    # a cyclist counts the same; a car at the same place does not (vehicles left out)
    cyclist = crossing_walker(x, half_ego + 0.3 + 3.0, label=ObjectClass.CYCLIST)
    assert run(SafetyFilter(), plan, ego, [cyclist]).reasons == ("no_escape",)
    parked_van = crossing_walker(x, half_ego + 0.3 + 3.0, label=ObjectClass.CAR)
    assert run(SafetyFilter(), plan, ego, [parked_van]).status is SafetyStatus.PASSED
    # a walker who arrives after the horizon does not block
    slow = crossing_walker(x, half_ego + 0.3 + 3.0, speed=0.3)
    assert run(SafetyFilter(), plan, ego, [slow]).status is SafetyStatus.PASSED


def test_way_out_brakes_along_the_path_from_the_measured_state() -> None:
    # a chunk whose first waypoint is due 0.4 s after its stamp starts 2 m ahead of the
    # ego: braking "now" starts at the ego, not at that waypoint, so a crossing just past
    # the ego's own braking distance leaves it a way out from now ...
    ego = ego_state(speed=5.0)
    chunk = straight(5.0, 4.0, dt=0.4)
    chunk = make_traj(chunk.t_s[1:], chunk.xy[1:], chunk.yaw[1:], chunk.speed[1:])
    filt = SafetyFilter(SafetyConfig(escape_after_s=0.1, escape_labels=()))
    x_clear = FRONT + CFG.margin_m + BRAKE_5 + 0.5 * 5.0 * 0.1 + CAR_WIDTH / 2 + 0.3
    assert run(filt, chunk, ego, [crossing_car(x_clear)]).status is SafetyStatus.PASSED
    # ... and a crossing inside it does not
    x_in = FRONT + CFG.margin_m + BRAKE_5 + CAR_WIDTH / 2 - 0.2
    assert run(filt, chunk, ego, [crossing_car(x_in)]).reasons[0] == "no_escape"


def test_followers_do_not_count_against_the_way_out() -> None:
    # a car 9 m behind at the ego's speed would run into the braking ego: that is its
    # driver's duty (keeping a safe distance), so the ego may drive on
    ego = ego_state(speed=5.0)
    follower = car(-9.0, velocity=(5.0, 0.0))
    assert run(SafetyFilter(WAY_OUT), straight(5.0, 4.0), ego, [follower]).status is \
        SafetyStatus.PASSED
    # which tracks are followers: behind, faster than 0.5 m/s, within 30 deg of the heading
    ego = ego_state(yaw=0.5)
    heading = np.array([math.cos(0.5), math.sin(0.5)])
    side = np.array([-heading[1], heading[0]])
    cases = {"follower": (-8 * heading, 5 * heading, False),
             "leader": (8 * heading, 5 * heading, True),
             "slow behind": (-8 * heading, 0.3 * heading, True),
             "crossing behind": (-8 * heading, 5 * side, True),
             "oblique behind": (-8 * heading, 5 * (heading * math.cos(0.6)
                                                   + side * math.sin(0.6)), True),
             "beside, just ahead": (4 * side + 0.2 * heading, 5 * heading, True)}
    tracks = [car(xy[0], xy[1], velocity=v, track_id=i)
              for i, (xy, v, _) in enumerate(cases.values())]
    obstacles, _ = _obstacles(tracks, FRAME)
    kept = _without_followers(obstacles, ego)
    expected = [xy for xy, _, keep in cases.values() if keep]
    np.testing.assert_allclose(kept.xy, np.array(expected))
    assert len(kept.stamp_ns) == len(expected)


# -------------------------------------------------------------------------- last valid


def test_last_valid_is_reused_while_safe_and_young() -> None:
    filt = SafetyFilter()
    good = straight(5.0, 3.0)
    assert run(filt, good, ego_state(speed=5.0)).status is SafetyStatus.PASSED
    bad = straight(50.0)
    later = NOW + 200_000_000
    ego = ego_state(x=1.0, speed=5.0, stamp_ns=later)
    result = run(filt, bad, ego, now_ns=later, perception_ns=later)
    assert result.status is SafetyStatus.LAST_VALID
    assert result.reasons == ("over_speed", "over_accel", "pose_jump")
    assert result.trajectory.stamp_ns == later
    np.testing.assert_allclose(result.trajectory.xy, good.xy[2:])
    # still usable a bit later (age measured from the original, not from the tail)
    later2 = NOW + 900_000_000
    ego2 = ego_state(x=4.5, speed=5.0, stamp_ns=later2)
    again = run(filt, None, ego2, now_ns=later2, perception_ns=later2)
    assert again.status is SafetyStatus.LAST_VALID
    # too old now
    later3 = NOW + 1_200_000_000
    ego3 = ego_state(x=6.0, speed=5.0, stamp_ns=later3)
    old = run(filt, None, ego3, now_ns=later3, perception_ns=later3)
    assert old.reasons == ("empty",)
    assert_stop(old, SafetyStatus.COMFORTABLE_STOP, ego3, CFG.comfort_decel_mps2)


def test_last_valid_dropped_when_it_became_unsafe() -> None:
    filt = SafetyFilter()
    assert run(filt, straight(5.0, 3.0), ego_state(speed=5.0)).status is SafetyStatus.PASSED
    later = NOW + 200_000_000
    ego = ego_state(x=1.0, speed=5.0, stamp_ns=later)
    blocker = car(14.0, stamp_ns=later)  # appeared in the old plan's path
    result = run(filt, None, ego, [blocker], now_ns=later, perception_ns=later)
    assert result.reasons == ("empty",)
    assert_stop(result, SafetyStatus.COMFORTABLE_STOP, ego, CFG.comfort_decel_mps2)
    # and it is forgotten, not retried once the blocker has gone
    later2 = NOW + 300_000_000
    ego2 = ego_state(x=1.5, speed=5.0, stamp_ns=later2)
    gone = run(filt, None, ego2, now_ns=later2, perception_ns=later2)
    assert gone.status is SafetyStatus.COMFORTABLE_STOP


def test_last_valid_dropped_when_the_ego_left_it() -> None:
    filt = SafetyFilter()
    assert run(filt, straight(5.0, 3.0), ego_state(speed=5.0)).status is SafetyStatus.PASSED
    later = NOW + 200_000_000
    ego = ego_state(x=1.0, y=2.0, speed=5.0, stamp_ns=later)  # 2 m off the old plan
    result = run(filt, None, ego, now_ns=later, perception_ns=later)
    assert result.status is SafetyStatus.COMFORTABLE_STOP


# -------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(("perception", "instruction", "reasons"), [
    (NOW - 500_000_000, NOW, ("stale_perception",)),
    (None, NOW, ("stale_perception",)),
    (NOW + 1_000_000, NOW, ("stale_perception",)),  # clock went backwards
    (NOW, None, ("stale_instruction",)),
    (NOW, NOW - 3 * S, ("stale_instruction",)),
    (NOW, NOW + 1, ("stale_instruction",)),
    (None, None, ("stale_perception", "stale_instruction")),
])
def test_stale_inputs_stop(perception: int | None, instruction: int | None,
                           reasons: tuple[str, ...]) -> None:
    ego = ego_state(speed=5.0)
    result = run(SafetyFilter(), straight(5.0), ego, perception_ns=perception,
                 instruction_ns=instruction)
    assert result.reasons == reasons
    assert_stop(result, SafetyStatus.COMFORTABLE_STOP, ego, CFG.comfort_decel_mps2)


def test_stale_input_with_a_close_obstacle_gives_emergency_stop() -> None:
    ego = ego_state(speed=10.0)
    lead = car(FRONT + 3.0 + CAR_LEN / 2, velocity=(5.0, 0.0))
    result = run(SafetyFilter(), straight(10.0), ego, [lead], perception_ns=None)
    assert result.reasons == ("stale_perception",)
    assert_stop(result, SafetyStatus.EMERGENCY_STOP, ego, CFG.max_decel_mps2)


def test_instruction_can_be_optional() -> None:
    filt = SafetyFilter(SafetyConfig(instruction_required=False))
    assert run(filt, straight(5.0), ego_state(speed=5.0),
               instruction_ns=None).status is SafetyStatus.PASSED


def test_stale_or_future_ego_state_stops() -> None:
    for stamp in (NOW - S, NOW + 1):  # odometry 1 s old, or from the future
        result = run(SafetyFilter(), straight(5.0), ego_state(speed=5.0, stamp_ns=stamp))
        assert result.reasons == ("stale_ego",)
        assert result.status is SafetyStatus.COMFORTABLE_STOP


def test_clock_going_backwards_between_checks_stops_once_and_forgets_last_valid() -> None:
    filt = SafetyFilter()
    assert run(filt, straight(5.0), ego_state(speed=5.0)).status is SafetyStatus.PASSED
    back = NOW - 100_000_000
    ego = ego_state(speed=5.0, stamp_ns=back)
    result = run(filt, straight(5.0, stamp_ns=back), ego, now_ns=back, perception_ns=back,
                 instruction_ns=back)
    assert result.reasons == ("clock_backwards",)
    assert result.status is SafetyStatus.COMFORTABLE_STOP
    # the next check on the new clock is judged normally; the old plan is gone
    nxt = back + 100_000_000
    ego2 = ego_state(x=0.5, speed=5.0, stamp_ns=nxt)
    after = run(filt, None, ego2, now_ns=nxt, perception_ns=nxt, instruction_ns=nxt)
    assert after.status is SafetyStatus.COMFORTABLE_STOP
    assert after.reasons == ("empty",)


def test_frame_mismatch_is_never_silently_accepted() -> None:
    ego = ego_state(speed=5.0)
    wrong_traj = run(SafetyFilter(), straight(5.0, frame_id="map"), ego)
    assert wrong_traj.reasons == ("frame_mismatch",)
    assert_stop(wrong_traj, SafetyStatus.COMFORTABLE_STOP, ego, CFG.comfort_decel_mps2)
    # a track in another frame stops even with a valid plan and a valid last plan
    filt = SafetyFilter()
    assert run(filt, straight(5.0), ego).status is SafetyStatus.PASSED
    wrong_track = run(filt, straight(5.0), ego, [car(30.0, 4.0, frame_id="base_link")])
    assert wrong_track.reasons == ("frame_mismatch",)
    assert wrong_track.status is SafetyStatus.COMFORTABLE_STOP


# -------------------------------------------------------------------------- counters


def test_counts_and_report() -> None:
    filt = SafetyFilter()
    ego = ego_state(speed=5.0)
    run(filt, straight(5.0), ego)
    run(filt, straight(5.0), ego, perception_ns=None)                      # stop
    run(filt, make_traj([0.0], [[0.0, 0.0]], [0.0], [np.nan]), ego)       # last valid
    run(filt, straight(10.0), ego_state(speed=10.0),
        [car(FRONT + 3.0 + CAR_LEN / 2)])                                 # emergency
    assert filt.counts() == {"checks": 4, "interventions": 3, "passed": 1, "last_valid": 1,
                             "comfortable_stop": 1, "emergency_stop": 1}
    report = filt.report()
    json.dumps(report)
    assert report["checks"] == 4
    assert report["interventions"] == 3
    assert report["status"] == {"passed": 1, "last_valid": 1, "comfortable_stop": 1,
                                "emergency_stop": 1}
    assert set(report["reasons"]) == set(REASON_CODES)
    nonzero = {k: v for k, v in report["reasons"].items() if v}
    # the emergency case: the new plan collides, the last valid no longer fits the ego
    assert nonzero == {"stale_perception": 1, "non_finite": 1, "collision": 1,
                       "collision_unavoidable": 1}
    assert report["last_intervention"] == {"now_ns": NOW, "status": "emergency_stop",
                                           "reasons": ["collision", "collision_unavoidable"]}
    filt.reset()
    assert filt.counts()["checks"] == 0
    assert filt.report()["last_intervention"] is None


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(("field", "value"), [
    ("max_speed_mps", 0.0), ("max_accel_mps2", -1.0), ("max_decel_mps2", math.nan),
    ("max_jerk_mps3", math.inf), ("max_curvature_1pm", "0.2"), ("ego_length_m", True),
    ("margin_m", -0.1), ("min_ttc_s", 0), ("perception_timeout_s", None),
    ("instruction_required", 1), ("last_valid_max_age_s", -1.0),
    ("speed_tolerance_mps", math.nan), ("escape_horizon_s", -1.0),
    ("escape_labels", "pedestrian"), ("escape_labels", ("car", "")), ("escape_labels", (1,)),
    ("escape_labels", 3),
])
def test_config_errors_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field):
        SafetyConfig(**{field: value})


def test_config_comfort_decel_must_not_exceed_max_decel() -> None:
    with pytest.raises(ConfigError, match="comfort_decel_mps2"):
        SafetyConfig(comfort_decel_mps2=7.0, max_decel_mps2=6.0)
    assert SafetyConfig(margin_m=0, speed_tolerance_mps=0).margin_m == 0.0


# -------------------------------------------------------------------------- property

_wild = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300, 1e-300, -0.0]),
                  st.floats(allow_nan=True, allow_infinity=True))


def _stamp(draw: st.DrawFn, now: int, allow_none: bool = False) -> Any:
    """Mostly ``now`` (fresh inputs, so the trajectory checks are reached), else anything
    from 3 s old to 0.1 s in the future, or missing."""
    kind = draw(st.integers(0, 9))
    if kind < 7:
        return now
    if kind == 9 and allow_none:
        return None
    return now + draw(st.integers(-3 * S, S // 10))


@st.composite
def _scenario(draw: st.DrawFn, now: int) -> dict[str, Any]:
    h = draw(st.integers(1, 12))
    dt = draw(st.floats(0.01, 1.0))
    speed = draw(st.floats(0.0, 30.0))
    t = np.arange(h) * dt
    arrays = {"t_s": t, "xy": np.stack([speed * t, 0 * t], 1), "yaw": 0 * t,
              "speed": np.full(h, speed)}
    for _ in range(draw(st.integers(0, 3))):  # corrupt a few entries arbitrarily
        name = draw(st.sampled_from(sorted(arrays)))
        flat = arrays[name].reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(
            st.one_of(_wild, st.floats(-100.0, 100.0)))
    traj = Trajectory(_stamp(draw, now), draw(st.sampled_from([FRAME] * 9 + ["map"])),
                      arrays["t_s"], arrays["xy"], arrays["yaw"], arrays["speed"], "fuzz")
    ego_speed = draw(st.one_of(st.just(speed), st.floats(-40.0, 1e6)))
    ego = ego_state(draw(st.one_of(st.just(0.0), st.floats(-1e6, 1e6))), 0.0,
                    draw(st.one_of(st.just(0.0), st.floats(-10.0, 10.0))), ego_speed,
                    stamp_ns=_stamp(draw, now))
    tracks = [car(draw(st.floats(-60.0, 60.0)), draw(st.floats(-20.0, 20.0)),
                  draw(st.floats(-4.0, 4.0)),
                  draw(st.one_of(st.none(), st.tuples(st.floats(-40.0, 40.0),
                                                      st.floats(-40.0, 40.0)))),
                  stamp_ns=_stamp(draw, now),
                  frame_id=draw(st.sampled_from([FRAME] * 9 + ["map"])), track_id=i)
              for i in range(draw(st.integers(0, 3)))]
    return {"traj": traj, "ego": ego, "tracks": tracks,
            "perception": _stamp(draw, now, allow_none=True),
            "instruction": _stamp(draw, now, allow_none=True)}


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_scenario(NOW), _scenario(NOW + 100_000_000))
def test_any_input_gives_an_output_inside_the_limits(first: dict[str, Any],
                                                     second: dict[str, Any]) -> None:
    filt = SafetyFilter()
    # the first check may leave a last valid trajectory behind for the second to reuse
    for now, case in ((NOW, first), (NOW + 100_000_000, second)):
        result = filt.check(case["traj"], case["ego"], case["tracks"], now,
                            case["perception"], case["instruction"])
        assert_within_limits(result, filt.config, case["ego"].frame_id)
    assert filt.counts()["checks"] == 2


# ------------------------------------------------------------------ monitor (between plans)

def test_monitor_keeps_a_safe_trajectory_and_counts_nothing() -> None:
    filt = SafetyFilter()
    assert filt.monitor(ego_state(speed=5.0), [], NOW, NOW, NOW) is None  # nothing executed
    run(filt, straight(5.0, 5.0), ego_state(speed=5.0))
    later = NOW + S // 10
    # the ego lags its reference (kinematic checks against it would fail): not re-checked
    ego = ego_state(x=0.3, speed=3.0, stamp_ns=later)
    assert filt.monitor(ego, [car(0.5, 5.0)], later, later, later) is None
    assert filt.counts()["checks"] == 1


def test_monitor_stops_for_an_obstacle_that_appeared_after_the_plan() -> None:
    filt = SafetyFilter()
    run(filt, straight(5.0, 5.0), ego_state(speed=5.0))
    later = NOW + S // 10
    ego = ego_state(x=0.5, speed=5.0, stamp_ns=later)
    stop = filt.monitor(ego, [car(20.0, stamp_ns=later)], later, later, later)
    assert stop is not None and stop.reasons == ("collision",)
    assert_stop(stop, SafetyStatus.COMFORTABLE_STOP, ego, CFG.comfort_decel_mps2)
    assert filt.counts()["interventions"] == 1
    # the car comes closer: the comfortable stop now collides, the monitor brakes harder
    ego2 = ego_state(x=1.0, speed=4.6, stamp_ns=later + S // 10)
    harder = filt.monitor(ego2, [car(8.0, stamp_ns=later + S // 10)], later + S // 10,
                          later + S // 10, later + S // 10)
    assert harder is not None and harder.status is SafetyStatus.EMERGENCY_STOP
    # nothing brakes harder than an emergency stop: it is never replaced
    assert filt.monitor(ego2, [car(6.0, stamp_ns=later + S // 5)], later + S // 5,
                        later + S // 5, later + S // 5) is None
    assert filt.counts()["interventions"] == 2
    # and the stopped trajectory is not reused as the last valid one
    assert run(filt, None, ego2, now_ns=later + S // 5, perception_ns=later + S // 5,
               instruction_ns=later + S // 5).status is not SafetyStatus.LAST_VALID


def test_monitor_stops_when_perception_goes_stale_once() -> None:
    filt = SafetyFilter()
    run(filt, straight(5.0, 5.0), ego_state(speed=5.0))
    now = NOW + S  # perception last at NOW: 1 s old
    ego = ego_state(x=5.0, speed=5.0, stamp_ns=now)
    stop = filt.monitor(ego, [], now, NOW, now)
    assert stop is not None and stop.reasons == ("stale_perception",)
    assert stop.status is SafetyStatus.COMFORTABLE_STOP
    # already stopping for it: no new intervention per perception tick
    assert filt.monitor(ego, [], now + S // 10, NOW, now + S // 10) is None
    assert filt.counts()["interventions"] == 1
