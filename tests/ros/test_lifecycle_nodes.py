"""Lifecycle of the pipeline node over real rclpy: a bad parameter fails configure cleanly
(message names it, nothing held, the node can be configured again), and activate /
deactivate / cleanup create and release subscriptions, timers, the worker thread and
publishers (checked on the node and in the ROS graph)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from mm_perception.ros.nodes.launcher import PlatformConfig, create_nodes  # noqa: E402
from mm_perception.ros.nodes.pipeline_node import PipelineNode  # noqa: E402
from mm_perception.ros.params import config_dir  # noqa: E402

LIDAR_TOPIC = "/sensors/lidar/points"
OUTPUT = "/perception/output/objects"
#: the camera detector is not needed to test the life cycle (and loading it costs seconds)
FAST = {"use_cameras": False, "lists": ["lidar", "radar", "output"]}


def _node(context: Any, **overrides: Any) -> PipelineNode:
    platform = PlatformConfig.from_yaml(config_dir() / "car.yaml")
    node: PipelineNode = create_nodes(platform, context,
                                      extra_parameters={**FAST, **overrides})[0]
    return node


@pytest.fixture
def node(ros_context: Any) -> Iterator[PipelineNode]:
    n = _node(ros_context)
    yield n
    n.destroy_node()


def _state(node: PipelineNode) -> str:
    return str(node._state_machine.current_state[1])


@pytest.mark.parametrize(("name", "value", "needle"), [
    ("tracker.max_coast_s", -1.0, "tracker.max_coast_s"),
    ("sync.window_s", "fast", "sync.window_s"),
    ("lists", ["lidar", "sonar"], "lists"),
    ("qos.sensor_depth", 0, "qos.sensor_depth"),
    ("rig_file", "/nonexistent/rig.yaml", "/nonexistent/rig.yaml"),
    ("primary_list", "camera", "primary_list"),
])
def test_bad_parameter_fails_configure_cleanly(ros_context: Any, name: str, value: Any,
                                               needle: str) -> None:
    node = _node(ros_context, **{name: value})
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert _state(node) == "unconfigured"
        assert node.last_error is not None and needle in node.last_error, node.last_error
        assert node.entities() == {"subscriptions": 0, "timers": 0, "publishers": 0,
                                   "threads": 0}
        assert node.count_publishers(OUTPUT) == 0
        # fixed, the same node configures
        fixed = FAST.get(name, node._schema["properties"][name]["default"])
        if name == "rig_file":
            fixed = str(config_dir() / "rigs" / "car.yaml")
        node.set_parameters([Parameter(name, value=fixed)])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.last_error
        assert _state(node) == "inactive"
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    finally:
        node.destroy_node()


def test_activate_deactivate_cleanup_release_everything(node: PipelineNode) -> None:
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.last_error
    held = node.entities()
    assert held["publishers"] >= 5 and held["subscriptions"] == 0 and held["threads"] == 0
    assert node.count_publishers(OUTPUT) == 1
    assert node.count_subscribers(LIDAR_TOPIC) == 0  # inactive: no inputs yet
    for _ in range(2):  # and again: activate after deactivate works
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS, node.last_error
        active = node.entities()
        # camera (+ camera_info), lidar, radar, odometry inputs; the sync poll, idle flush
        # and diagnostics timers
        assert active["subscriptions"] == 5 and active["timers"] == 3
        assert active["threads"] == 1
        assert node.count_subscribers(LIDAR_TOPIC) == 1  # remapped ~/input/lidar_top
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.entities() == {**held, "subscriptions": 0, "timers": 0, "threads": 0}
        assert node.count_subscribers(LIDAR_TOPIC) == 0
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert node.entities() == {"subscriptions": 0, "timers": 0, "publishers": 0, "threads": 0}
    assert node.count_publishers(OUTPUT) == 0
    assert node.pipeline is None and node.assembler is None and node.health is None
    # shutdown from active releases everything too
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
    assert node.entities() == {"subscriptions": 0, "timers": 0, "publishers": 0, "threads": 0}
    assert _state(node) == "finalized"


def test_pipeline_process_lives_from_configure_to_cleanup(node: PipelineNode) -> None:
    from mm_perception.ros.nodes.pipeline_process import PipelineProcess

    assert node.get_parameter("worker_process").value is True  # the shipped default
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.last_error
    child = node.pipeline
    assert isinstance(child, PipelineProcess) and child.alive()
    assert set(child.lists) == {"lidar", "radar", "output"}
    # both heaps frozen at configure (the node's by the base class, for every node): no
    # full garbage collection stalls a set later
    assert child.frozen_objects > 10_000 and gc.get_freeze_count() > 10_000
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert child.alive()  # inactive keeps the configured components
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert not child.alive() and node.pipeline is None


def test_executor_choice_warns_about_the_multi_threaded_one(
        ros_context: Any, caplog: pytest.LogCaptureFixture) -> None:
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    from mm_perception.core.errors import ConfigError
    from mm_perception.ros.nodes.launcher import make_executor

    with caplog.at_level("WARNING", logger="mm_perception.ros.nodes.launcher"):
        single = make_executor("single", ros_context)
        assert isinstance(single, SingleThreadedExecutor) and not caplog.records
        multi = make_executor("multi", ros_context)
        assert isinstance(multi, MultiThreadedExecutor)
    assert any("starved" in r.getMessage() for r in caplog.records)
    for executor in (single, multi):
        executor.shutdown()
    with pytest.raises(ConfigError, match="executor must be one of"):
        make_executor("events", ros_context)
