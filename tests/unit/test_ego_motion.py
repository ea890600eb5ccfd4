"""Tests of mm_perception.core.ego_motion (odometry buffer, de-skewing, Doppler)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mm_perception.core.ego_motion import (
    OdometryBuffer,
    OdometryBufferConfig,
    compensate_doppler,
    deskew_cloud,
    deskew_points,
)
from mm_perception.core.errors import ConfigError, EgoMotionError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import EgoState, PointCloud, RadarScan

MS = 1_000_000
S = 1_000_000_000

T_BASE_LIDAR = SE3.from_rpy(0.01, 0.02, 0.1, (1.2, 0.3, 1.8))


def unicycle_pose(t_ns: int, v: float, w: float, t_ref_ns: int = 1 * S) -> SE3:
    """Exact pose of an ego driving at speed v (m/s) with yaw rate w (rad/s); identity at
    t_ref_ns."""
    dt = (t_ns - t_ref_ns) / 1e9
    if w == 0.0:
        return SE3.from_xy_yaw(v * dt, 0.0, 0.0)
    yaw = w * dt
    return SE3.from_xy_yaw(v / w * math.sin(yaw), v / w * (1.0 - math.cos(yaw)), yaw)


def unicycle_buffer(v: float, w: float, start_ns: int, end_ns: int, step_ns: int,
                    config: OdometryBufferConfig | None = None) -> OdometryBuffer:
    buf = OdometryBuffer(config)
    for t in range(start_ns, end_ns + 1, step_ns):
        assert buf.add(EgoState(t, "odom", "base_link", unicycle_pose(t, v, w),
                                linear_velocity=np.array([v, 0.0, 0.0]),
                                angular_velocity=np.array([0.0, 0.0, w])))
    return buf


def state(t_ns: int, pose: SE3, lin: tuple[float, float, float] = (0.0, 0.0, 0.0),
          ang: tuple[float, float, float] = (0.0, 0.0, 0.0), frame: str = "odom") -> EgoState:
    return EgoState(t_ns, frame, "base_link", pose, linear_velocity=np.array(lin),
                    angular_velocity=np.array(ang))


def make_cloud(xyz: np.ndarray, stamp_ns: int, offsets: np.ndarray | None,
               dtype: type = np.float32) -> PointCloud:
    pts = np.zeros(len(xyz), dtype=[("x", dtype), ("y", dtype), ("z", dtype),
                                    ("intensity", np.float32)])
    for k, name in enumerate("xyz"):
        pts[name] = xyz[:, k]
    pts["intensity"] = np.arange(len(xyz))
    return PointCloud("lidar", stamp_ns, "lidar", pts, offsets)


# ---------------------------------------------------------------------------- config
def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="max_age_ns"):
        OdometryBufferConfig(max_age_ns=0)
    with pytest.raises(ConfigError, match="max_extrapolation_ns"):
        OdometryBufferConfig(max_extrapolation_ns=-1)
    with pytest.raises(ConfigError, match="max_gap_ns"):
        OdometryBufferConfig(max_gap_ns=0.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- de-skewing
def test_straight_line_sweep_lands_on_the_wall() -> None:
    """A spinning sweep of a static wall x = 40 m (world) taken while driving at 10 m/s."""
    v, wall_x, n = 10.0, 40.0, 3600
    t0, t1 = 1 * S, 1 * S + 100 * MS
    odo = unicycle_buffer(v, 0.0, 900 * MS, 1_300 * MS, 10 * MS)
    times = t0 + (np.arange(n) * (100 * MS) // n).astype(np.int64)
    az = np.radians(-60.0 + 120.0 * np.arange(n) / n)
    elev = np.array([-0.1, 0.0, 0.1])[np.arange(n) % 3]
    rays = np.stack([np.cos(elev) * np.cos(az), np.cos(elev) * np.sin(az), np.sin(elev)], 1)
    world = np.empty((n, 3))
    measured = np.empty((n, 3))
    for i in range(n):  # independent per-point ray casting in the world frame
        T_ws = unicycle_pose(int(times[i]), v, 0.0) @ T_BASE_LIDAR
        d = T_ws.rotate(rays[i])
        world[i] = T_ws.translation + (wall_x - T_ws.translation[0]) / d[0] * d
        measured[i] = T_ws.inverse().apply(world[i])
    cloud = make_cloud(measured, t0, times - t0)
    out = deskew_cloud(cloud, T_BASE_LIDAR, odo, target_stamp_ns=t1)
    T_ws_end = unicycle_pose(t1, v, 0.0) @ T_BASE_LIDAR
    in_world = T_ws_end.apply(out.xyz())
    assert np.max(np.abs(in_world[:, 0] - wall_x)) < 1e-3
    assert np.max(np.linalg.norm(in_world - world, axis=1)) < 1e-3
    # without compensation the sweep start is off by the distance driven (up to 1 m)
    raw = T_ws_end.apply(measured)
    assert np.max(np.abs(raw[:, 0] - wall_x)) > 0.9
    assert out.stamp_ns == t1 and out.frame_id == "lidar"
    assert out.time_offsets_ns is not None and not out.time_offsets_ns.any()
    np.testing.assert_array_equal(out.points["intensity"], cloud.points["intensity"])
    # the result describes the scene at t1: de-skewing it again changes nothing
    again = deskew_cloud(out, T_BASE_LIDAR, OdometryBuffer())
    np.testing.assert_array_equal(again.xyz(), out.xyz())


def test_turning_ego_matches_per_point_se3_loop() -> None:
    v, w, n = 5.0, 0.5, 400
    t0, t1 = 1 * S, 1 * S + 100 * MS
    odo = unicycle_buffer(v, w, 900 * MS, 1_300 * MS, 10 * MS)
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-30, 30, (n, 3))
    times = rng.integers(t0, t1 + 1, n)
    out = deskew_points(xyz, times, T_BASE_LIDAR, odo, t1)
    assert out.dtype == np.float32 and out.shape == (n, 3)

    states = [odo.state_at(t) for t in range(900 * MS, 1_300 * MS + 1, 10 * MS)]
    target = (unicycle_pose(t1, v, w) @ T_BASE_LIDAR).inverse()
    exact = np.empty((n, 3))
    same_algo = np.empty((n, 3))
    for i in range(n):
        # 1) the true trajectory
        exact[i] = (target @ unicycle_pose(int(times[i]), v, w) @ T_BASE_LIDAR).apply(xyz[i])
        # 2) SE3.interpolate between the bracketing odometry states
        k = (int(times[i]) - 900 * MS) // (10 * MS)
        a, b = states[k], states[k + 1]
        alpha = (int(times[i]) - a.stamp_ns) / (b.stamp_ns - a.stamp_ns)
        pose = a.pose.interpolate(b.pose, alpha)
        same_algo[i] = (target @ pose @ T_BASE_LIDAR).apply(xyz[i])
    # chord vs arc between 10 ms samples is a few 1e-5 m at 30 m range
    np.testing.assert_allclose(out, exact, atol=2e-4)
    np.testing.assert_allclose(out, same_algo, atol=2e-5)
    # a wrong compensation would be far off: the ego turns 0.05 rad within the sweep
    assert np.max(np.abs(xyz - exact)) > 0.5


def test_many_points_with_unique_stamps() -> None:
    v, w, n = 8.0, -0.3, 120_000
    t0 = 1 * S
    odo = unicycle_buffer(v, w, 900 * MS, 1_300 * MS, 5 * MS)
    rng = np.random.default_rng(1)
    xyz = rng.uniform(-50, 50, (n, 3)).astype(np.float32)
    times = t0 + np.sort(rng.integers(0, 100 * MS, n))
    out = deskew_points(xyz, times, T_BASE_LIDAR, odo, t0)
    target = (unicycle_pose(t0, v, w) @ T_BASE_LIDAR).inverse()
    for i in rng.choice(n, 50, replace=False):
        T = target @ unicycle_pose(int(times[i]), v, w) @ T_BASE_LIDAR
        np.testing.assert_allclose(out[i], T.apply(xyz[i].astype(np.float64)), atol=3e-4)


def test_whole_cloud_compensation_without_point_times() -> None:
    v, w = 6.0, 0.4
    odo = unicycle_buffer(v, w, 900 * MS, 1_300 * MS, 10 * MS)
    rng = np.random.default_rng(2)
    xyz = rng.uniform(-20, 20, (100, 3))
    cloud = make_cloud(xyz, 1_000 * MS, None, dtype=np.float64)
    out = deskew_cloud(cloud, T_BASE_LIDAR, odo, target_stamp_ns=1_050 * MS)
    T = ((unicycle_pose(1_050 * MS, v, w) @ T_BASE_LIDAR).inverse()
         @ unicycle_pose(1_000 * MS, v, w) @ T_BASE_LIDAR)
    assert out.points.dtype == cloud.points.dtype  # float64 fields stay float64
    assert out.time_offsets_ns is None and out.stamp_ns == 1_050 * MS
    xyz_out = np.stack([out.points[n] for n in "xyz"], 1)
    np.testing.assert_allclose(xyz_out, T.apply(xyz), atol=1e-5)
    # default target: the cloud's own stamp, nothing moves (and no odometry is needed)
    same = deskew_cloud(cloud, T_BASE_LIDAR, OdometryBuffer())
    np.testing.assert_array_equal(np.stack([same.points[n] for n in "xyz"], 1), xyz)


def test_empty_cloud_and_bad_inputs() -> None:
    empty = make_cloud(np.zeros((0, 3)), 5 * S, np.zeros(0, dtype=np.int64))
    out = deskew_cloud(empty, T_BASE_LIDAR, OdometryBuffer(), target_stamp_ns=6 * S)
    assert len(out) == 0 and out.stamp_ns == 6 * S and out.fields == empty.fields
    res = deskew_points(np.zeros((0, 3)), np.zeros(0, dtype=np.int64), T_BASE_LIDAR,
                        OdometryBuffer(), 1)
    assert res.shape == (0, 3) and res.dtype == np.float32
    odo = unicycle_buffer(1.0, 0.0, 1 * S, 2 * S, 100 * MS)
    with pytest.raises(TypeError, match="integer nanoseconds"):
        deskew_points(np.zeros((2, 3)), np.array([1.0e9, 1.1e9]), T_BASE_LIDAR, odo, 1 * S)
    with pytest.raises(ValueError, match="2 entries for 3 points"):
        deskew_points(np.zeros((3, 3)), np.array([1, 2]) * S, T_BASE_LIDAR, odo, 1 * S)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        deskew_points(np.zeros((3, 2)), np.array([1, 1, 1]) * S, T_BASE_LIDAR, odo, 1 * S)
    # points outside the odometry: a clear error, not a silently wrong cloud
    with pytest.raises(EgoMotionError, match="t=2500000000"):
        deskew_points(np.zeros((2, 3)), np.array([1_500, 2_500]) * MS, T_BASE_LIDAR, odo,
                      1 * S)
    with pytest.raises(EgoMotionError, match="no odometry"):
        deskew_points(np.zeros((1, 3)), np.array([1 * S]), T_BASE_LIDAR, OdometryBuffer(), 2)


# ---------------------------------------------------------------------------- odometry
def test_slerp_midway_matches_hand_computed_values() -> None:
    odo = OdometryBuffer()
    odo.add(state(1 * S, SE3.identity(), lin=(1.0, 0.0, 0.0)))
    odo.add(state(2 * S, SE3.from_xy_yaw(2.0, 4.0, math.pi / 2), lin=(3.0, 0.0, 0.0)))
    mid = odo.pose_at(1_500 * MS)
    np.testing.assert_allclose(mid.quaternion(), [0, 0, math.sin(math.pi / 8),
                                                  math.cos(math.pi / 8)], atol=1e-12)
    np.testing.assert_allclose(mid.translation, [1.0, 2.0, 0.0], atol=1e-12)
    assert odo.pose_at(1_250 * MS).yaw() == pytest.approx(math.pi / 8, abs=1e-12)
    st = odo.state_at(1_500 * MS)
    np.testing.assert_allclose(st.linear_velocity, [2.0, 0.0, 0.0])
    assert st.stamp_ns == 1_500 * MS and st.frame_id == "odom"
    # rotation about a general axis: halfway is half the angle about the same axis
    axis = np.array([1.0, 1.0, 0.0]) / math.sqrt(2.0)
    q1 = np.r_[axis * math.sin(0.5), math.cos(0.5)]  # 1 rad
    odo = OdometryBuffer()
    odo.add(state(1 * S, SE3.identity()))
    odo.add(state(2 * S, SE3.from_quaternion(q1)))
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    R_half = np.eye(3) + math.sin(0.5) * K + (1 - math.cos(0.5)) * K @ K  # Rodrigues
    np.testing.assert_allclose(odo.pose_at(1_500 * MS).rotation, R_half, atol=1e-12)
    rot, trans = odo.poses_at(np.array([1 * S, 1_500 * MS, 2 * S]))
    np.testing.assert_allclose(trans, 0.0, atol=0)
    np.testing.assert_allclose(rot[1], R_half, atol=1e-12)
    np.testing.assert_allclose(rot[0], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rot[2], SE3.from_quaternion(q1).rotation, atol=1e-12)


def _twist_exp(omega: np.ndarray, vel: np.ndarray, dt: float) -> np.ndarray:
    """4x4 matrix exponential of a body twist by its Taylor series (test reference)."""
    xi = np.zeros((4, 4))
    xi[:3, :3] = np.array([[0, -omega[2], omega[1]], [omega[2], 0, -omega[0]],
                           [-omega[1], omega[0], 0]]) * dt
    xi[:3, 3] = vel * dt
    out, term = np.eye(4), np.eye(4)
    for k in range(1, 30):
        term = term @ xi / k
        out = out + term
    return out


def test_extrapolation_with_constant_body_twist() -> None:
    v, w = 5.0, 0.5
    odo = unicycle_buffer(v, w, 1 * S, 2 * S, 100 * MS)
    for t in (2_050 * MS, 2_100 * MS, 950 * MS, 900 * MS):  # constant twist: exact
        assert odo.pose_at(t).almost_equal(unicycle_pose(t, v, w), atol=1e-9)
    # a 3-D screw motion, forwards and backwards
    omega, vel = np.array([0.3, -0.2, 0.7]), np.array([4.0, 0.5, -0.3])
    T0 = SE3.from_rpy(0.1, -0.2, 1.0, (5.0, -3.0, 1.0))
    odo = OdometryBuffer()
    odo.add(EgoState(10 * S, "odom", "base_link", T0, linear_velocity=vel,
                     angular_velocity=omega))
    for dt_ns in (80 * MS, -60 * MS):
        expected = T0.as_matrix() @ _twist_exp(omega, vel, dt_ns / 1e9)
        got = odo.pose_at(10 * S + dt_ns).as_matrix()
        np.testing.assert_allclose(got, expected, atol=1e-12)


def test_extrapolation_limits_raise_clear_errors() -> None:
    odo = unicycle_buffer(1.0, 0.0, 1 * S, 2 * S, 100 * MS,
                          OdometryBufferConfig(max_extrapolation_ns=100 * MS))
    odo.pose_at(2_100 * MS)
    odo.pose_at(900 * MS)
    with pytest.raises(EgoMotionError,
                       match=r"t=2200000000 ns.*\[1000000000, 2000000000\].*after its end"):
        odo.pose_at(2_200 * MS)
    with pytest.raises(EgoMotionError, match=r"t=850000000 ns.*before its start"):
        odo.poses_at(np.array([1_500 * MS, 850 * MS]))
    with pytest.raises(EgoMotionError, match="no odometry"):
        OdometryBuffer().pose_at(1)
    with pytest.raises(TypeError, match="int nanoseconds"):
        odo.pose_at(1.5)  # type: ignore[arg-type]
    assert odo.span() == (1 * S, 2 * S) and len(odo) == 11
    assert OdometryBuffer().span() is None


def test_gaps_longer_than_max_gap_raise() -> None:
    odo = OdometryBuffer(OdometryBufferConfig(max_gap_ns=1 * S))
    for t in (10_000, 10_100, 10_200, 12_000, 12_100):
        odo.add(state(t * MS, SE3.from_xy_yaw(t / 1000.0, 0.0, 0.0), lin=(1.0, 0.0, 0.0)))
    with pytest.raises(EgoMotionError, match=r"t=11000000000 ns.*gap of 1800000000 ns"):
        odo.pose_at(11 * S)
    # the states on both sides of the gap and everything between close states still work
    assert odo.pose_at(10_200 * MS).translation[0] == pytest.approx(10.2)
    assert odo.pose_at(12 * S).translation[0] == pytest.approx(12.0)
    assert odo.pose_at(10_150 * MS).translation[0] == pytest.approx(10.15)


def test_out_of_order_duplicates_jumps_and_frames() -> None:
    v, w = 3.0, 0.2
    stamps = list(range(1 * S, 2 * S + 1, 50 * MS))
    states = [EgoState(t, "odom", "base_link", unicycle_pose(t, v, w),
                       linear_velocity=np.array([v, 0, 0]), angular_velocity=np.array([0, 0, w]))
              for t in stamps]
    in_order = OdometryBuffer()
    for s in states:
        in_order.add(s)
    shuffled = OdometryBuffer()
    order = np.random.default_rng(3).permutation(len(states))
    assert all(shuffled.add(states[i]) for i in order)
    assert shuffled.stats["out_of_order"] > 0
    query = np.arange(1 * S, 2 * S, 7 * MS)
    for a, b in zip(in_order.poses_at(query), shuffled.poses_at(query), strict=True):
        np.testing.assert_array_equal(a, b)

    assert not shuffled.add(states[3])  # duplicate stamp: ignored
    assert shuffled.stats["duplicates"] == 1
    assert not shuffled.add(state(3 * S, SE3.identity(), frame="map"))
    assert shuffled.stats["frame_mismatch"] == 1
    # a looped bag: a state far older than the newest restarts the history
    cfg = OdometryBufferConfig(max_age_ns=500 * MS)
    odo = OdometryBuffer(cfg)
    for s in states:
        odo.add(s)
    assert odo.span() == (1_500 * MS, 2 * S)  # aged out beyond max_age
    assert odo.stats["pruned"] == 10
    assert odo.add(states[0])
    assert odo.stats["resets"] == 1 and len(odo) == 1 and odo.span() == (1 * S, 1 * S)


# ---------------------------------------------------------------------------- doppler
def test_compensate_doppler_against_range_rates() -> None:
    v, w = 10.0, 0.5
    T_base_radar = SE3.from_rpy(0.0, 0.0, 0.1, (3.5, 0.2, 0.5))
    t = 1 * S
    rng = np.random.default_rng(4)
    xyz = rng.uniform([5, -20, -1], [60, 20, 2], (50, 3))
    T_ws = unicycle_pose(t, v, w) @ T_base_radar
    world = T_ws.apply(xyz)
    target_vel = np.zeros((50, 3))
    target_vel[25:] = rng.uniform(-15, 15, (25, 3))  # half the targets move

    def ranges(dt: float) -> np.ndarray:  # range at t + dt, numerically
        origin = (unicycle_pose(t + round(dt * 1e9), v, w) @ T_base_radar).translation
        return np.linalg.norm(world + target_vel * dt - origin, axis=1)

    h = 1e-4
    measured = (ranges(h) - ranges(-h)) / (2 * h)
    scan = RadarScan("radar", t, "radar", xyz.astype(np.float32),
                     measured.astype(np.float32), np.zeros(50, np.float32))
    ego = EgoState(t, "odom", "base_link", unicycle_pose(t, v, w),
                   linear_velocity=np.array([v, 0, 0]), angular_velocity=np.array([0, 0, w]))
    comp = compensate_doppler(scan, T_base_radar, ego)
    u_world = (world - T_ws.translation) / np.linalg.norm(world - T_ws.translation, axis=1,
                                                          keepdims=True)
    expected = np.sum(u_world * target_vel, axis=1)
    np.testing.assert_allclose(comp, expected, atol=2e-3)
    assert np.max(np.abs(comp[:25])) < 2e-3 < np.max(np.abs(measured[:25]))


def test_delta_keeps_a_copy_equal_to_the_buffer() -> None:
    """A copy fed deltas (new states only) equals the buffer after every step: appends,
    an out-of-order state, pruning by age and a clock jump backwards (reset)."""
    config = OdometryBufferConfig(max_age_ns=2 * S)
    src = OdometryBuffer(config)
    copy = OdometryBuffer(config)
    v, w = 5.0, 0.2

    def ego(t: int) -> EgoState:
        return EgoState(t, "odom", "base_link", unicycle_pose(t, v, w),
                        linear_velocity=np.array([v, 0.0, 0.0]),
                        angular_velocity=np.array([0.0, 0.0, w]))

    known: set[int] = set()
    steps = [list(range(1 * S, 2 * S, S // 50)), [2 * S + S // 10, 2 * S + S // 20],
             list(range(2 * S + S // 5, 4 * S, S // 50)),  # prunes the first second
             [S // 2, S // 2 + S // 50]]                    # jump back: a reset
    sent = 0
    for batch in steps:
        for t in batch:
            src.add(ego(t))
        delta = src.delta(known)
        sent += len(delta.new_states)
        copy.apply_delta(delta)
        known = set(delta.stamps)
        assert copy.span() == src.span() and len(copy) == len(src)
        assert copy.stats == src.stats
        lo, hi = src.span()  # type: ignore[misc]
        probe = np.linspace(lo, hi, 17).astype(np.int64)
        for a, b in zip(copy.poses_at(probe), src.poses_at(probe), strict=True):
            np.testing.assert_array_equal(a, b)
    # only new states travel: each stamp once
    assert sent == sum(len(b) for b in steps)
    # a delta against stamps the copy does not hold is refused, not silently wrong
    other = OdometryBuffer(config)
    with pytest.raises(ValueError, match="does not hold"):
        other.apply_delta(src.delta({S // 2}))
