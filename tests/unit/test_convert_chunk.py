"""Planner trajectories <-> ActionChunk / Path / TwistStamped (mm_perception.ros.convert_chunk),
the static map loader of the planner node (sim_bridge.load_layout) and the safety filter
node's parameters <-> SafetyConfig."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from mm_perception.core.errors import ConfigError
from mm_perception.planning.safety import SafetyConfig, SafetyStatus
from mm_perception.planning.sim_bridge import load_layout, map_lanes
from mm_perception.planning.trajectory import Trajectory
from mm_perception.ros.params import config_dir, defaults, load_schema

REPO = Path(__file__).resolve().parents[2]
STAMP = 1_700_000_000_123_456_789


def _traj(n: int = 11, source: str = "rules") -> Trajectory:
    t = np.arange(n) * 0.4
    yaw = np.linspace(-3.0, 3.5, n)  # crosses +-pi: comes back wrapped
    xy = np.column_stack([100.0 + 5.0 * t, -1.75 + 0.1 * t ** 2])
    speed = 5.0 + 0.123456789 * t
    return Trajectory(STAMP, "odom", t, xy, yaw, speed, source)


# ----------------------------------------------------------------------------- messages
@pytest.fixture
def cc():  # type: ignore[no-untyped-def]
    pytest.importorskip("rclpy")
    pytest.importorskip("mm_perception_msgs.msg")
    from mm_perception.ros import convert_chunk

    return convert_chunk


def test_chunk_round_trip_within_tolerance(cc) -> None:  # type: ignore[no-untyped-def]
    import mm_perception_msgs.msg as m

    traj = _traj()
    msg = cc.trajectory_to_chunk(traj, m.ActionChunk.MODIFIED, "collision,no_escape",
                                 "turn left")
    assert msg.header.frame_id == "odom"
    assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == STAMP
    assert msg.source_planner == "rules" and msg.safety_status == m.ActionChunk.MODIFIED
    assert msg.safety_reason == "collision,no_escape" and msg.instruction == "turn left"
    assert len(msg.poses) == len(msg.time_from_start) == len(msg.speeds_mps) == len(traj)
    back = cc.chunk_to_trajectory(msg)
    assert back.stamp_ns == STAMP and back.frame_id == "odom" and back.source == "rules"
    np.testing.assert_allclose(back.t_s, traj.t_s, atol=1e-9)  # whole ns
    np.testing.assert_array_equal(back.xy, traj.xy)           # float64 positions
    dyaw = np.angle(np.exp(1j * (back.yaw - traj.yaw)))
    assert np.all(np.abs(dyaw) < 1e-12)
    assert np.all((back.yaw > -math.pi) & (back.yaw <= math.pi))
    np.testing.assert_allclose(back.speed, traj.speed, rtol=1e-7)  # float32 speeds
    # twice: stable
    again = cc.chunk_to_trajectory(cc.trajectory_to_chunk(back))
    np.testing.assert_allclose(again.yaw, back.yaw, atol=1e-15)
    np.testing.assert_array_equal(again.speed, back.speed)


def test_non_finite_values_reach_the_filter_unchanged(cc) -> None:  # type: ignore[no-untyped-def]
    traj = _traj(4)
    xy = traj.xy.copy()
    xy[1, 0] = np.nan
    yaw = traj.yaw.copy()
    yaw[2] = np.inf
    speed = np.array([5.0, np.nan, 1e300, -2.0])
    bad = Trajectory(STAMP, "odom", traj.t_s, xy, yaw, speed, "vla")
    back = cc.chunk_to_trajectory(cc.trajectory_to_chunk(bad))
    assert np.isnan(back.xy[1, 0]) and np.isnan(back.yaw[2])  # NaN quaternion -> NaN yaw
    assert np.isnan(back.speed[1]) and back.speed[2] == np.inf and back.speed[3] == -2.0
    assert not back.is_finite()
    times = traj.t_s.copy()
    times[1] = np.nan
    with pytest.raises(ValueError, match=r"t_s\[1\]"):
        cc.trajectory_to_chunk(Trajectory(STAMP, "odom", times, traj.xy, traj.yaw,
                                          traj.speed))


def test_times_signs_and_broken_messages(cc) -> None:  # type: ignore[no-untyped-def]
    t = np.array([-0.3, 0.0, 0.25])
    traj = Trajectory(STAMP, "odom", t, np.zeros((3, 2)), np.zeros(3), np.zeros(3))
    msg = cc.trajectory_to_chunk(traj)
    assert msg.time_from_start[0].sec == -1 and msg.time_from_start[0].nanosec == 700_000_000
    np.testing.assert_allclose(cc.chunk_to_trajectory(msg).t_s, t, atol=1e-9)
    msg.speeds_mps = [0.0, 0.0]
    with pytest.raises(ValueError, match="length"):
        cc.chunk_to_trajectory(msg)
    msg.poses, msg.time_from_start, msg.speeds_mps = [], [], []
    with pytest.raises(ValueError, match="no samples"):
        cc.chunk_to_trajectory(msg)
    assert math.isnan(cc.yaw_from_quaternion(0.0, 0.0, 0.0, 0.0))
    assert math.isnan(cc.yaw_from_quaternion(0.0, 0.0, np.nan, 1.0))
    # not normalised, rotation about z by 1 rad
    assert cc.yaw_from_quaternion(0.0, 0.0, 3 * math.sin(0.5), 3 * math.cos(0.5)) == \
        pytest.approx(1.0)


def test_safety_status_and_reason_fields(cc) -> None:  # type: ignore[no-untyped-def]
    import mm_perception_msgs.msg as m

    codes = {s: cc.safety_status_code(s) for s in SafetyStatus}
    assert codes == {SafetyStatus.PASSED: m.ActionChunk.PASSED,
                     SafetyStatus.LAST_VALID: m.ActionChunk.MODIFIED,
                     SafetyStatus.COMFORTABLE_STOP: m.ActionChunk.STOPPED,
                     SafetyStatus.EMERGENCY_STOP: m.ActionChunk.STOPPED}
    assert cc.safety_reason(()) == ""
    assert cc.safety_reason(("stale_perception", "stale_ego")) == "stale_perception,stale_ego"


def test_path_has_one_pose_per_sample_at_its_due_time(cc) -> None:  # type: ignore[no-untyped-def]
    traj = _traj(5)
    path = cc.trajectory_to_path(traj)
    assert path.header.frame_id == "odom" and len(path.poses) == 5
    for t, (x, y), pose in zip(traj.t_s, traj.xy, path.poses, strict=True):
        stamp = pose.header.stamp.sec * 10**9 + pose.header.stamp.nanosec
        assert stamp == STAMP + round(t * 1e9)
        assert (pose.pose.position.x, pose.pose.position.y) == (x, y)
    nan = Trajectory(STAMP, "odom", traj.t_s, traj.xy * np.nan, traj.yaw, traj.speed)
    with pytest.raises(ValueError, match="not finite"):
        cc.trajectory_to_path(nan)


def test_command_at_samples_speed_and_yaw_rate(cc) -> None:  # type: ignore[no-untyped-def]
    # a circle of radius 20 m at 4 m/s: yaw rate 0.2 rad/s, crossing +-pi on the way
    t = np.arange(0.0, 4.01, 0.1)
    w, r = 0.2, 20.0
    yaw = np.pi - 0.3 + w * t
    xy = np.column_stack([r * np.sin(yaw), -r * np.cos(yaw)])
    speed = np.full(t.shape, 4.0)
    speed[-5:] = [3.0, 2.0, 1.0, 0.5, 0.0]
    traj = Trajectory(STAMP, "odom", t, xy, np.angle(np.exp(1j * yaw)), speed)
    v, rate = cc.command_at(traj, STAMP + 1_000_000_000)
    assert v == pytest.approx(4.0) and rate == pytest.approx(w, rel=1e-6)
    assert cc.command_at(traj, STAMP + 3_850_000_000)[0] == pytest.approx(0.75)
    assert cc.command_at(traj, STAMP + 9 * 10**9) == (0.0, 0.0)  # ended: holds the end
    assert cc.command_at(traj, STAMP - 10**9)[0] == pytest.approx(4.0)
    msg = cc.twist_to_msg(v, rate, STAMP, "base_link")
    assert msg.header.frame_id == "base_link"
    assert (msg.twist.linear.x, msg.twist.angular.z) == (v, rate)


# ----------------------------------------------------------------------------- map
def test_load_layout_reads_scenarios_and_bare_layouts(tmp_path: Path) -> None:
    scenario = load_layout(REPO / "config" / "scenarios" / "highway_merge.yaml")
    assert scenario.kind == "straight_road" and "east_1" in scenario.paths
    bare = tmp_path / "map.yaml"
    bare.write_text("{type: straight_road, lanes_per_direction: 2, lane_width: 3.5, "
                    "length: 600.0}\n")
    only = tmp_path / "only.yaml"
    only.write_text("layout: {type: intersection, lanes_per_direction: 1}\n")
    assert set(load_layout(bare).paths) == set(scenario.paths)
    assert load_layout(only).kind == "intersection"
    # the lanes of the right lane of the scenario's road, ego heading +x
    east_1 = scenario.paths["east_1"].point_at(60.0)
    roles = [lane.role for lane in map_lanes(load_layout(bare), east_1)]
    assert roles[0] == "ego" and "left" in roles


@pytest.mark.parametrize(("text", "needle"), [
    ("[1, 2]\n", "a map file is a scenario"),
    ("{type: moon_base}\n", "type"),
    ("layout: {type: straight_road, lanes: 2}\n", "layout.lanes"),
    ("{type: straight_road\n", "invalid YAML"),
])
def test_load_layout_names_what_is_wrong(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle) as err:
        load_layout(path)
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        load_layout(tmp_path / "none.yaml")


# ----------------------------------------------------------------------------- parameters
def test_safety_filter_schema_covers_every_safety_config_field() -> None:
    props = load_schema("safety_filter")["properties"]
    want = {f"safety.{f.name}": f.default for f in dataclasses.fields(SafetyConfig)}
    # JSON has lists where the dataclass has tuples
    got = {k: tuple(v["default"]) if isinstance(v["default"], list) else v["default"]
           for k, v in props.items() if k.startswith("safety.")}
    assert got == want, "config/schema/safety_filter.schema.json and SafetyConfig disagree"
    assert (config_dir() / "safety_filter.param.yaml").is_file()


def test_safety_config_from_params_names_the_parameter() -> None:
    pytest.importorskip("rclpy")
    from mm_perception.ros.nodes.safety_filter_node import safety_config_from_params

    params = defaults(load_schema("safety_filter"))
    assert safety_config_from_params(params) == SafetyConfig()
    params.update({"safety.max_speed_mps": 8, "safety.instruction_required": False})
    cfg = safety_config_from_params(params)
    assert cfg.max_speed_mps == 8.0 and cfg.instruction_required is False
    params["safety.escape_labels"] = ["pedestrian"]
    assert safety_config_from_params(params).escape_labels == ("pedestrian",)
    params["safety.escape_labels"] = "pedestrian"
    with pytest.raises(ConfigError, match=r"parameter safety\.escape_labels"):
        safety_config_from_params(params)
    params["safety.escape_labels"] = ["pedestrian"]
    params["safety.comfort_decel_mps2"] = 7.0
    with pytest.raises(ConfigError, match=r"parameter safety\.comfort_decel_mps2"):
        safety_config_from_params(params)
