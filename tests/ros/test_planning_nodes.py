"""The ``planner`` and ``safety_filter`` nodes over real rclpy and Fast DDS, in-process: a bad
parameter fails configure cleanly naming it, the life cycle releases everything, the planner
publishes the chunk the planning library computes on the same inputs (rules planner, lanes
from the static map), odd instructions never hurt it (VLA), and the safety filter publishes
PASSED / MODIFIED / STOPPED chunks with their reasons, the path, the twist and markers, stops
on stale inputs, re-checks on new tracks, answers a silent planner and survives a missing
odometry.

The nodes run on the wall clock (no ``use_sim_time``): inputs are stamped with the node
clock's ``now``, so the safety filter's freshness checks judge them as live data. Every wait
is a condition with a deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from mm_perception.core.geometry import SE3
from mm_perception.core.types import (
    Box3D,
    DetectedObject,
    EgoState,
    ObjectClass,
    Track,
    TrackStatus,
)
from mm_perception.planning.trajectory import Trajectory

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("mm_perception_msgs.msg")
import mm_perception_msgs.msg as m  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from nav_msgs.msg import Odometry, Path  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from mm_perception.ros.convert_chunk import chunk_to_trajectory, trajectory_to_chunk  # noqa: E402
from mm_perception.ros.convert_objects import tracks_to_msg  # noqa: E402
from mm_perception.ros.convert_odometry import odometry_from_ego_state  # noqa: E402
from mm_perception.ros.message_factory import RclpyFactory, stamp_to_ns  # noqa: E402
from mm_perception.ros.nodes.health import Level  # noqa: E402
from mm_perception.ros.nodes.launcher import node_kinds  # noqa: E402
from mm_perception.ros.nodes.planner_node import PlannerNode  # noqa: E402
from mm_perception.ros.nodes.safety_filter_node import SafetyFilterNode  # noqa: E402
from mm_perception.ros.params import config_dir  # noqa: E402
from tests.ros.lifecycle_checks import NONE, assert_configure_fails  # noqa: E402
from tests.ros.spin import spin_until as _spin_until  # noqa: E402

RIG_FILE = config_dir() / "rigs" / "car.yaml"
MAP_FILE = config_dir() / "scenarios" / "highway_merge.yaml"
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
FACTORY = RclpyFactory()


# ----------------------------------------------------------------------------- helpers
def make(cls: type, context: Any, name: str | None = None,
         params: dict[str, Any] | None = None) -> Any:
    values = {"rig_file": str(RIG_FILE), "diagnostics_period_s": 0.2, **(params or {})}
    overrides = [Parameter(k, value=v) for k, v in values.items()]
    return cls(name, context=context, parameter_overrides=overrides)


def spin_until(executor: Any, condition: Callable[[], bool], timeout_s: float = 15.0,
               what: str = "condition") -> None:
    _spin_until(executor, condition, timeout_s, what)


class Harness:
    """A plain node that publishes inputs and records outputs, plus the executor."""

    def __init__(self, context: Any, node: Any) -> None:
        self.node = rclpy.create_node("planning_test", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.target = node
        for n in (self.node, node):
            self.executor.add_node(n)
        self.pubs: dict[str, Any] = {}

    def now(self) -> int:
        return int(self.target.get_clock().now().nanoseconds)

    def listen(self, msg_type: Any, topic: str) -> list[Any]:
        box: list[Any] = []
        self.node.create_subscription(msg_type, topic, box.append, RELIABLE)
        return box

    def open(self, topic: str, msg_type: Any, qos: QoSProfile = RELIABLE) -> Any:
        """The publisher of ``topic``, once it matched the node's subscription."""
        pub = self.node.create_publisher(msg_type, topic, qos)
        self.pubs[topic] = pub
        spin_until(self.executor, lambda: pub.get_subscription_count() >= 1,
                   what=f"subscribers of {topic}")
        return pub

    def feed(self, topic: str, msg: Any, taken: Callable[[], int]) -> None:
        before = taken()
        self.pubs[topic].publish(msg)
        spin_until(self.executor, lambda: taken() > before, what=f"{topic} taken")

    def wait(self, condition: Callable[[], bool], timeout_s: float = 15.0,
             what: str = "outputs") -> None:
        spin_until(self.executor, condition, timeout_s, what)

    def close(self) -> None:
        label = self.target._state_machine.current_state[1]
        if label == "active":
            self.target.trigger_deactivate()
            label = "inactive"
        if label == "inactive":
            self.target.trigger_cleanup()
        self.target.destroy_node()
        self.executor.shutdown()
        self.node.destroy_node()


def up(node: Any) -> None:
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.last_error
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS, node.last_error


def received(node: Any, stream: str) -> Callable[[], int]:
    return lambda: node.health.streams[stream].received if node.health else 0


def ego_at(stamp_ns: int, x: float = 0.0, y: float = 0.0, yaw: float = 0.0,
           speed: float = 5.0) -> EgoState:
    return EgoState(stamp_ns, "odom", "base_link", SE3.from_xy_yaw(x, y, yaw, 0.0),
                    np.array([speed, 0.0, 0.0]), np.zeros(3))


def odom_msg(ego: EgoState) -> Any:
    return odometry_from_ego_state(ego, FACTORY)


def car(track_id: int, x: float, y: float, stamp_ns: int, frame: str = "base_link",
        vx: float = 0.0) -> Track:
    box = Box3D(np.array([x, y, 0.75]), np.array([4.5, 1.8, 1.5]), 0.0, frame)
    obj = DetectedObject(box, ObjectClass.CAR, 0.9, stamp_ns=stamp_ns,
                         velocity=np.array([vx, 0.0, 0.0]))
    return Track(track_id, obj, TrackStatus.CONFIRMED, age=5, hits=5)


def straight_chunk(ego: EgoState, source: str = "test", nan_at: int | None = None) -> Any:
    """A chunk that keeps the ego's speed straight ahead (passes every check on an empty
    road); ``nan_at``: that sample's x is NaN."""
    t = np.arange(11) * 0.4
    v = float(ego.linear_velocity[0])
    xy = np.column_stack([ego.pose.translation[0] + v * t, np.full(11, ego.pose.translation[1])])
    if nan_at is not None:
        xy[nan_at, 0] = np.nan
    traj = Trajectory(ego.stamp_ns, "odom", t, xy, np.zeros(11), np.full(11, v), source)
    return trajectory_to_chunk(traj, 0, "", "go")


# ----------------------------------------------------------------------------- life cycle
def test_both_kinds_are_registered() -> None:
    kinds = node_kinds()
    assert kinds["planner"] is PlannerNode and kinds["safety_filter"] is SafetyFilterNode


@pytest.mark.parametrize(("cls", "name", "value", "needles"), [
    (PlannerNode, "planner", "expert", ("'planner'", "ground truth")),
    (PlannerNode, "planner", "vlm", ("'planner'", "vla-no-language")),
    (PlannerNode, "vla.backend", "tensorrt", ("vla.backend",)),
    (PlannerNode, "vla.weights_dir", "/nonexistent/weights", ("vla.weights_dir",
                                                              "/nonexistent/weights")),
    (PlannerNode, "map.file", "/nonexistent/map.yaml", ("map.file", "/nonexistent/map.yaml")),
    (PlannerNode, "camera", "lidar_top", ("camera",)),
    (PlannerNode, "plan_period_s", 0.0, ("plan_period_s",)),
    (SafetyFilterNode, "safety.max_speed_mps", -1.0, ("safety.max_speed_mps",)),
    (SafetyFilterNode, "safety.comfort_decel_mps2", 9.0, ("safety.comfort_decel_mps2",)),
    (SafetyFilterNode, "safety.instruction_required", "yes", ("safety.instruction_required",)),
    (SafetyFilterNode, "chunk_timeout_s", 0.0, ("chunk_timeout_s",)),
])
def test_bad_parameter_fails_configure_cleanly(ros_context: Any, cls: type, name: str,
                                               value: Any, needles: tuple[str, ...]) -> None:
    params: dict[str, Any] = {}
    if cls is PlannerNode and name != "planner":  # rules loads nothing; vla.* need the VLA
        params["planner"] = "vla" if name.startswith("vla.") else "rules"
    node = make(cls, ros_context, params={**params, name: value})
    try:
        assert_configure_fails(node, *needles)
        # fixed, the same node configures
        fixed = "rules" if name == "planner" else node._schema["properties"][name]["default"]
        node.set_parameters([Parameter(name, value=fixed)])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.last_error
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    finally:
        node.destroy_node()


@pytest.mark.parametrize(("cls", "params", "output"), [
    (PlannerNode, {"planner": "rules", "map.file": str(MAP_FILE)},
     "/planner/output/action_chunk"),
    (SafetyFilterNode, {}, "/safety_filter/output/action_chunk"),
])
def test_activate_deactivate_cleanup_release_everything(ros_context: Any, cls: type,
                                                        params: dict[str, Any],
                                                        output: str) -> None:
    node = make(cls, ros_context, params=params)
    kind = cls.KIND  # type: ignore[attr-defined]
    odom_topic = f"/{kind}/input/odom"
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.last_error
        held = node.entities()
        # planner: chunk + 3 base; filter: chunk, path, twist, markers + 3 base
        assert held["publishers"] == (4 if cls is PlannerNode else 7)
        assert held["subscriptions"] == 0 and node.count_publishers(output) == 1
        for _ in range(2):
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            # odom, tracks, image / action chunk, instruction; the plan / command timer
            # and diagnostics
            assert node.entities() == {"subscriptions": 4, "timers": 2, "threads": 0,
                                       "publishers": held["publishers"]}
            assert node.count_subscribers(odom_topic) == 1
            assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            assert node.entities() == {**held, "subscriptions": 0, "timers": 0}
            assert node.count_subscribers(odom_topic) == 0
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.entities() == NONE and node.count_publishers(output) == 0
        assert node.health is None and node.rig is None and node.inputs is None
        if cls is PlannerNode:
            assert node.planner is None and node.layout is None
        else:
            assert node.filter is None
        # shutdown from active releases everything too
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
        assert node.entities() == NONE
    finally:
        node.destroy_node()


# ----------------------------------------------------------------------------- planner
def test_rules_planner_publishes_the_librarys_chunk(ros_context: Any) -> None:
    from mm_perception.core.objects import transform_tracks
    from mm_perception.planning.observation import PlannerObservation, ego_pose2
    from mm_perception.planning.perception_loop import scene_objects
    from mm_perception.planning.rules import RulesPlanner
    from mm_perception.planning.sim_bridge import load_layout, map_lanes
    from mm_perception.ros.conversions import ego_state_from_odometry
    from mm_perception.ros.convert_objects import tracks_from_msg

    node = make(PlannerNode, ros_context, "planner",
                params={"planner": "rules", "map.file": str(MAP_FILE), "plan_period_s": 0.1})
    h = Harness(ros_context, node)
    try:
        out = h.listen(m.ActionChunk, "/planner/output/action_chunk")
        up(node)
        h.open("/planner/input/odom", Odometry)
        h.open("/planner/input/tracks", m.TrackedObjectArray)
        layout = load_layout(MAP_FILE)
        x, y, yaw = layout.paths["east_1"].point_at(60.0)  # the right lane, heading +x
        stamp = h.now()
        odom = odom_msg(ego_at(stamp, x, y, yaw, speed=8.0))
        tracks = tracks_to_msg([car(7, 22.0, 0.0, stamp, vx=4.0),
                                car(8, 10.0, 3.5, stamp)], stamp, "base_link")
        h.feed("/planner/input/odom", odom, received(node, "odom"))
        h.feed("/planner/input/tracks", tracks, received(node, "tracks"))
        # no instruction yet: the node waits for it
        h.wait(lambda: node._counts["waiting"] >= 2, what="waiting plans")
        assert not out and node._waiting == ("instruction",)
        assert node.extra_statuses()[0].level is Level.WARN
        instruction = h.open("/planner/input/instruction", String, LATCHED)
        instruction.publish(String(data="  keep\tyour lane\n"))
        h.wait(lambda: len(out) >= 1, what="a chunk")
        chunk = out[0]
        assert chunk.header.frame_id == "odom" and stamp_to_ns(chunk.header.stamp) == stamp
        assert chunk.source_planner == "rules" and chunk.safety_status == m.ActionChunk.PASSED
        assert chunk.safety_reason == "" and chunk.instruction == "keep your lane"
        got = chunk_to_trajectory(chunk)
        assert got.is_finite() and got.is_time_valid() and len(got) == 11

        # the same observation, built directly: the node plans what the library plans
        ego = ego_state_from_odometry(odom)
        world = transform_tracks(tracks_from_msg(tracks), ego.pose, "odom")
        lanes = map_lanes(layout, ego_pose2(ego))
        assert lanes[0].role == "ego"
        obs = PlannerObservation(stamp, ego, "keep your lane", stamp, None,
                                 scene_objects(world, stamp, "odom", ego, None, None), lanes)
        want = RulesPlanner().plan(obs)
        np.testing.assert_allclose(got.t_s, want.t_s, atol=1e-9)
        np.testing.assert_allclose(got.xy, want.xy, atol=1e-9)
        np.testing.assert_allclose(got.speed, want.speed, rtol=1e-6, atol=1e-6)
        assert np.all(np.abs(np.angle(np.exp(1j * (got.yaw - want.yaw)))) < 1e-9)
        assert want.speed[-1] < 6.0  # it slows for the car ahead: the tracks were used
        assert np.all(np.abs(got.xy[:, 1] - y) < 0.5)  # and it keeps the map's lane
        assert node._lanes[0] == "ego" and node._counts["failed"] == 0
        status = node.extra_statuses()[0]
        assert status.level is Level.OK, status
    finally:
        h.close()


def test_vla_planner_survives_empty_and_huge_instructions(ros_context: Any) -> None:
    from mm_perception.planning.instructions import MAX_INSTRUCTION_CHARS, clean_instruction

    node = make(PlannerNode, ros_context, "planner",
                params={"planner": "vla", "map.file": str(MAP_FILE), "plan_period_s": 0.1})
    h = Harness(ros_context, node)
    try:
        out = h.listen(m.ActionChunk, "/planner/output/action_chunk")
        # an empty instruction, latched before the node even listens (transient local)
        instruction = h.node.create_publisher(String, "/planner/input/instruction", LATCHED)
        instruction.publish(String(data=""))
        up(node)
        h.open("/planner/input/odom", Odometry)
        h.open("/planner/input/tracks", m.TrackedObjectArray)
        layout = load_map()
        x, y, yaw = layout.paths["east_1"].point_at(80.0)
        stamp = h.now()
        h.feed("/planner/input/odom", odom_msg(ego_at(stamp, x, y, yaw, 8.0)),
               received(node, "odom"))
        h.feed("/planner/input/tracks", tracks_to_msg([], stamp, "base_link"),
               received(node, "tracks"))
        h.wait(lambda: len(out) >= 1, timeout_s=30.0, what="a chunk for the empty instruction")
        assert out[0].instruction == "" and out[0].source_planner == "vla"
        assert chunk_to_trajectory(out[0]).is_finite()
        # 10 kB of text with control characters, tabs, zero-width and non-Latin letters
        huge = ("Turn\x07 left\tat the\u200b junction \u6f22\u5b57 \x1b[31m " * 300)[:10_000]
        assert len(huge.encode()) >= 10_000
        instruction.publish(String(data=huge))
        h.wait(lambda: out[-1].instruction != "", timeout_s=30.0,
               what="a chunk for the huge instruction")
        last = out[-1]
        assert last.instruction == clean_instruction(huge)
        assert 0 < len(last.instruction) <= MAX_INSTRUCTION_CHARS
        assert chunk_to_trajectory(last).is_finite()
        assert node.planner.last_instruction == last.instruction
        assert node._counts["failed"] == 0
    finally:
        h.close()


def load_map() -> Any:
    from mm_perception.planning.sim_bridge import load_layout

    return load_layout(MAP_FILE)


# ----------------------------------------------------------------------------- safety filter
class FilterRig:
    """A safety filter node with its input publishers and output recorders."""

    def __init__(self, context: Any, params: dict[str, Any]) -> None:
        self.node = make(SafetyFilterNode, context, "safety_filter", params=params)
        self.h = Harness(context, self.node)
        base = "/safety_filter/output/"
        self.chunks = self.h.listen(m.ActionChunk, base + "action_chunk")
        self.paths = self.h.listen(Path, base + "path")
        self.twists = self.h.listen(TwistStamped, base + "twist")
        self.markers = self.h.listen(MarkerArray, "/safety_filter/debug/markers")
        up(self.node)
        for topic, msg_type in (("odom", Odometry), ("tracks", m.TrackedObjectArray),
                                ("action_chunk", m.ActionChunk)):
            self.h.open(f"/safety_filter/input/{topic}", msg_type)
        self.instruction = self.h.open("/safety_filter/input/instruction", String, LATCHED)

    def instruct(self, text: str = "go") -> None:
        n = self.node.health.counters["instructions_received"]
        self.instruction.publish(String(data=text))
        self.h.wait(lambda: self.node.health.counters["instructions_received"] > n,
                    what="instruction taken")

    def odom(self, ego: EgoState) -> None:
        self.h.feed("/safety_filter/input/odom", odom_msg(ego), received(self.node, "odom"))

    def tracks(self, tracks: list[Track], stamp: int, frame: str = "base_link") -> None:
        self.h.feed("/safety_filter/input/tracks", tracks_to_msg(tracks, stamp, frame),
                    received(self.node, "tracks"))

    def chunk(self, msg: Any) -> Any:
        """Send a chunk, return the filter's answer."""
        n = len(self.chunks)
        self.h.feed("/safety_filter/input/action_chunk", msg,
                    received(self.node, "action_chunk"))
        self.h.wait(lambda: len(self.chunks) > n, what="the filtered chunk")
        return self.chunks[-1]

    def fresh(self, speed: float = 5.0) -> EgoState:
        """Odometry and an empty track list stamped now; returns the ego state."""
        ego = ego_at(self.h.now(), speed=speed)
        self.odom(ego)
        self.tracks([], ego.stamp_ns)
        return ego


@pytest.fixture
def filter_rig(ros_context: Any, request: pytest.FixtureRequest) -> Any:
    # no chunk timeout unless a test asks for one: a slow machine must not add answers
    rig = FilterRig(ros_context, {"chunk_timeout_s": 60.0, **getattr(request, "param", {})})
    try:
        yield rig
    finally:
        rig.h.close()


@pytest.mark.parametrize("filter_rig", [{"safety.perception_timeout_s": 3.0}], indirect=True)
def test_nan_chunk_stops_and_a_good_chunk_passes(filter_rig: FilterRig) -> None:
    r = filter_rig
    r.instruct()
    ego = r.fresh()
    bad = r.chunk(straight_chunk(ego, nan_at=3))
    assert bad.safety_status == m.ActionChunk.STOPPED and bad.safety_reason == "non_finite"
    assert bad.source_planner == "safety/comfortable_stop" and bad.instruction == "go"
    stop = chunk_to_trajectory(bad)
    assert stop.is_finite() and stop.speed[-1] == 0.0
    r.h.wait(lambda: len(r.paths) >= 1 and len(r.twists) >= 1 and len(r.markers) >= 1)

    good_msg = straight_chunk(ego)
    good = r.chunk(good_msg)
    assert good.safety_status == m.ActionChunk.PASSED and good.safety_reason == ""
    assert good.source_planner == "test" and good.header.frame_id == "odom"
    sent, got = chunk_to_trajectory(good_msg), chunk_to_trajectory(good)
    np.testing.assert_array_equal(got.xy, sent.xy)  # passed unchanged
    np.testing.assert_array_equal(got.speed, sent.speed)
    r.h.wait(lambda: len(r.paths) >= 2 and len(r.markers) >= 2, what="path and markers")
    path = r.paths[-1]
    assert path.header.frame_id == "odom" and len(path.poses) == 11
    assert path.poses[-1].pose.position.x == pytest.approx(5.0 * 4.0)
    strip = [mk for mk in r.markers[-1].markers if mk.type == mk.LINE_STRIP]
    assert len(strip) == 1 and len(strip[0].points) == 11
    # the twist: the command due now, in the base frame
    n = len(r.twists)
    r.h.wait(lambda: len(r.twists) >= n + 2, what="periodic twists")
    twist = r.twists[-1]
    assert twist.header.frame_id == "base_link"
    assert twist.twist.linear.x == pytest.approx(5.0) and twist.twist.angular.z == 0.0
    values = dict(r.node.extra_statuses()[0].values)
    assert values["status.passed"] == "1" and values["status.comfortable_stop"] == "1"
    assert values["reason.non_finite"] == "1" and values["interventions"] == "1"
    assert values["reason.collision"] == "0"


@pytest.mark.parametrize("filter_rig", [{"safety.perception_timeout_s": 1.0}], indirect=True)
def test_stale_tracks_stop_and_new_tracks_are_monitored(filter_rig: FilterRig) -> None:
    r = filter_rig
    r.instruct()
    now = r.h.now()
    ego = ego_at(now)
    r.odom(ego)
    r.tracks([], now - 3_000_000_000, frame="odom")  # 3 s old
    stale = r.chunk(straight_chunk(ego))
    assert stale.safety_status == m.ActionChunk.STOPPED
    assert stale.safety_reason == "stale_perception"
    # fresh inputs: the next chunk passes
    ego = r.fresh()
    assert r.chunk(straight_chunk(ego)).safety_status == m.ActionChunk.PASSED
    # a car appears 12 m ahead between two chunks: the monitor stops at once
    n = len(r.chunks)
    stamp = r.h.now()
    r.odom(ego_at(stamp))
    r.tracks([car(3, 12.0, 0.0, stamp)], stamp)
    r.h.wait(lambda: len(r.chunks) > n, what="the monitor's stop")
    assert r.chunks[-1].safety_status == m.ActionChunk.STOPPED
    assert r.chunks[-1].safety_reason == "collision"
    assert r.node._counts["monitor_stops"] == 1
    assert r.node.extra_statuses()[0].level >= Level.WARN


@pytest.mark.parametrize("filter_rig", [{"safety.perception_timeout_s": 5.0,
                                         "chunk_timeout_s": 0.3}], indirect=True)
def test_a_silent_planner_gets_the_last_valid_chunk_then_a_stop(filter_rig: FilterRig) -> None:
    r = filter_rig
    r.instruct()
    ego = r.fresh()
    assert r.chunk(straight_chunk(ego)).safety_status == m.ActionChunk.PASSED
    n = len(r.chunks)
    r.h.wait(lambda: len(r.chunks) > n, what="the answer to a silent planner")
    late = r.chunks[n]
    assert late.safety_reason == "empty"
    # within last_valid_max_age_s the rest of the last valid chunk (MODIFIED) is reused
    assert late.safety_status in (m.ActionChunk.MODIFIED, m.ActionChunk.STOPPED)
    if late.safety_status == m.ActionChunk.MODIFIED:
        assert late.source_planner == "test"
    # once it is too old: a stop, reason empty again
    r.h.wait(lambda: any(c.safety_status == m.ActionChunk.STOPPED for c in r.chunks[n:]),
             what="a stop for the silent planner")
    assert r.node._counts["chunk_timeouts"] >= 1
    assert all(c.safety_reason == "empty" for c in r.chunks[n:])


def test_missing_odometry_gives_no_output_and_a_diagnostic(filter_rig: FilterRig) -> None:
    r = filter_rig
    r.instruct()
    stamp = r.h.now()
    r.h.feed("/safety_filter/input/action_chunk", straight_chunk(ego_at(stamp)),
             received(r.node, "action_chunk"))
    r.h.wait(lambda: r.node._counts["no_odometry"] == 1, what="the unanswered chunk")
    assert not r.chunks and not r.twists
    status = r.node.extra_statuses()[0]
    assert status.level is Level.ERROR and "no odometry" in status.message
    # tracks without odometry cannot be placed: dropped with a reason, node alive
    r.tracks([car(1, 10.0, 0.0, stamp)], stamp)
    assert r.node.health.streams["tracks"].dropped["no_pose"] == 1
    assert r.node._state_machine.current_state[1] == "active"
    # odometry arrives: the next chunk is answered
    ego = r.fresh()
    assert r.chunk(straight_chunk(ego)).safety_status in (m.ActionChunk.PASSED,
                                                          m.ActionChunk.STOPPED)


@pytest.mark.parametrize("filter_rig", [{"safety.perception_timeout_s": 5.0,
                                         "safety.instruction_timeout_s": 0.5}], indirect=True)
def test_instruction_is_fresh_while_its_latched_publisher_lives(filter_rig: FilterRig) -> None:
    r = filter_rig
    ego = r.fresh()
    none_yet = r.chunk(straight_chunk(ego))
    assert none_yet.safety_status == m.ActionChunk.STOPPED
    assert none_yet.safety_reason == "stale_instruction"
    r.instruct()
    r.h.wait(lambda: r.h.now() - r.node.inputs.instruction_received_ns > 1_000_000_000,
             what="the instruction to be older than its timeout")
    ego = r.fresh()
    # older than instruction_timeout_s, but its publisher lives: still in force
    assert r.chunk(straight_chunk(ego)).safety_status == m.ActionChunk.PASSED
    r.h.node.destroy_publisher(r.instruction)
    r.h.wait(lambda: r.node.inputs.instruction_publishers() == 0, what="publisher gone")
    ego = r.fresh()
    gone = r.chunk(straight_chunk(ego))
    assert gone.safety_status == m.ActionChunk.STOPPED
    assert "stale_instruction" in gone.safety_reason.split(",")
    assert math.isfinite(chunk_to_trajectory(gone).speed[0])


def test_planner_without_lanes_in_another_frame_and_with_camera_images(ros_context: Any
                                                                       ) -> None:
    from sensor_msgs.msg import Image

    from mm_perception.ros.convert_image import array_to_image

    node = make(PlannerNode, ros_context, "planner",
                params={"planner": "rules", "map.file": str(MAP_FILE), "map.frame": "map",
                        "require_instruction": False, "plan_period_s": 0.1})
    h = Harness(ros_context, node)
    try:
        out = h.listen(m.ActionChunk, "/planner/output/action_chunk")
        up(node)
        for topic, msg_type in (("odom", Odometry), ("tracks", m.TrackedObjectArray),
                                ("image", Image)):
            h.open(f"/planner/input/{topic}", msg_type)
        stamp = h.now()
        # a car right ahead, painted red in the image where the camera sees it
        rgb = np.zeros((480, 640, 3), dtype=np.uint8)
        rgb[:, :] = (0, 90, 0)
        rgb[180:300, 240:400] = (200, 10, 10)
        h.feed("/planner/input/image", array_to_image(rgb, "rgb8", stamp, "cam_front_optical",
                                                      FACTORY), received(node, "image"))
        h.feed("/planner/input/odom", odom_msg(ego_at(stamp, 60.0, -5.25, 0.0, 8.0)),
               received(node, "odom"))
        h.feed("/planner/input/tracks", tracks_to_msg([car(1, 15.0, 0.0, stamp)], stamp,
                                                      "base_link"), received(node, "tracks"))
        h.wait(lambda: len(out) >= 1, what="a chunk without lanes")
        # the odometry is in odom, the map in "map": no lanes, said in the diagnostics
        assert node._lanes == () and node._counts["map_frame_mismatch"] >= 1
        status = node.extra_statuses()[0]
        assert status.level is Level.WARN and "no lane" in status.message
        assert chunk_to_trajectory(out[-1]).is_finite()
        # the image was decoded once and gives the car its colour
        from mm_perception.planning.observation import SceneObject

        obs = node.observation(node.inputs.ego())
        (obj,) = obs.objects
        assert isinstance(obj, SceneObject) and obs.image is not None
        np.testing.assert_allclose(obj.rgb, np.array([200, 10, 10]) / 255.0, atol=0.02)
        # a broken frame is dropped with a reason; the planner goes on without an image
        bad = array_to_image(rgb, "rgb8", stamp, "cam_front_optical", FACTORY)
        bad.data = bad.data[:1000]
        h.feed("/planner/input/image", bad, received(node, "image"))
        assert node.image_rgb() is None
        assert sum(node.health.streams["image"].dropped.values()) == 1
        n = len(out)
        h.wait(lambda: len(out) > n + 1, what="plans after the bad frame")
        assert node._counts["failed"] == 0
    finally:
        h.close()
