"""mm_perception_msgs (interfaces/mm_perception_msgs), as scripts/setup.sh builds it: every
message builds, its constants match the core's enums, it survives rclpy's CDR
(de)serialisation and rosbags' (the bag library reads the same bytes with the .msg text),
and a DetectedObjectArray and an ActionChunk cross real Fast DDS between two nodes.

Skips only when the build toolchain (colcon, cmake, a C++ compiler) is missing; a missing or
broken build with the toolchain present fails every test with the reason."""

from __future__ import annotations

import importlib
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mm_perception.core.types import ObjectClass, SensorKind, TrackStatus
from mm_perception.fusion import output_level
from mm_perception.ros.msgs_env import DEFAULT_PREFIX, msgs_import_error

rclpy = pytest.importorskip("rclpy")

#: every message of the package (a test checks this against the installed .msg files)
MESSAGES = ("ActionChunk", "DetectedObject", "DetectedObjectArray", "FusionStatus",
            "ObjectClassification", "SensorStatus", "TrackedObject", "TrackedObjectArray")


def _missing_toolchain() -> list[str]:
    """Build tools scripts/setup.sh needs for the interfaces that are not on PATH."""
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    return [tool for tool in ("colcon", "cmake", "c++") if shutil.which(tool, path=path) is None]


_IMPORT_ERROR = msgs_import_error()
if _IMPORT_ERROR is not None and _missing_toolchain():
    pytest.skip(f"mm_perception_msgs is not built and cannot be: {_missing_toolchain()} not "
                f"installed ({_IMPORT_ERROR})", allow_module_level=True)


@pytest.fixture(autouse=True)
def _msgs_built() -> None:
    """With the toolchain present, a missing build is a failure, not a skip."""
    if _IMPORT_ERROR is not None:
        pytest.fail(_IMPORT_ERROR)


def _msgs() -> Any:
    """The generated ``mm_perception_msgs.msg`` module (untyped: generated code)."""
    return importlib.import_module("mm_perception_msgs.msg")


def _stamp(ns: int) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


def _detected_object(i: int = 0) -> Any:
    """A DetectedObject with every field set to a non-default value (float32 fields hold
    values a float32 represents exactly, so a round trip compares equal)."""
    from geometry_msgs.msg import (
        Point,
        Pose,
        PoseWithCovariance,
        Quaternion,
        Twist,
        TwistWithCovariance,
        Vector3,
    )

    m = _msgs()
    yaw = 0.3 + i
    pose = Pose(position=Point(x=12.5 + i, y=-3.25, z=0.8),
                orientation=Quaternion(z=math.sin(yaw / 2), w=math.cos(yaw / 2)))
    pose_cov = [0.0] * 36
    for k, var in zip((0, 7, 14, 35), (0.04, 0.09, 0.01, 0.002), strict=True):
        pose_cov[k] = var
    vel_cov = [0.0] * 36
    vel_cov[0], vel_cov[7], vel_cov[1], vel_cov[6] = 0.25, 0.36, 0.05, 0.05
    cls = m.ObjectClassification
    return m.DetectedObject(
        stamp=_stamp(1_700_000_000_123_456_789 + i),
        pose=PoseWithCovariance(pose=pose, covariance=pose_cov),
        has_pose_covariance=True,
        size=Vector3(x=4.5, y=1.9, z=1.6),
        label=cls.CAR, label_name=ObjectClass.CAR.value,
        classification=[cls(label=cls.CAR, label_name="car", probability=0.875),
                        cls(label=cls.TRUCK, label_name="truck", probability=0.125)],
        existence_probability=0.96875, score=0.90625,
        velocity=TwistWithCovariance(twist=Twist(linear=Vector3(x=8.0, y=0.5),
                                                 angular=Vector3(z=0.02)),
                                     covariance=vel_cov),
        has_velocity=True, has_velocity_covariance=True,
        source_sensors=m.DetectedObject.SOURCE_LIDAR | m.DetectedObject.SOURCE_RADAR,
        source_names=["top_lidar", "front_radar"])


def _detected_array(n: int = 3) -> Any:
    from std_msgs.msg import Header

    m = _msgs()
    return m.DetectedObjectArray(
        header=Header(stamp=_stamp(1_700_000_000_100_000_000), frame_id="base_link"),
        objects=[_detected_object(i) for i in range(n)], fusion_level="output")


def _action_chunk() -> Any:
    from builtin_interfaces.msg import Duration
    from geometry_msgs.msg import Point, Pose, Quaternion
    from std_msgs.msg import Header

    m = _msgs()
    steps = 5
    return m.ActionChunk(
        header=Header(stamp=_stamp(1_700_000_000_100_000_000), frame_id="base_link"),
        time_from_start=[Duration(sec=0, nanosec=200_000_000 * (k + 1)) for k in range(steps)],
        poses=[Pose(position=Point(x=1.5 * (k + 1)), orientation=Quaternion(w=1.0))
               for k in range(steps)],
        speeds_mps=[7.5, 7.0, 6.5, 6.0, 5.5],
        source_planner="vla", safety_status=m.ActionChunk.MODIFIED,
        safety_reason="pedestrian within 8 m: speed capped",
        instruction="follow the lane and stop at the crossing")


def _all_messages() -> dict[str, Any]:
    """One fully populated instance of every message of the package."""
    from std_msgs.msg import Header

    m = _msgs()
    header = Header(stamp=_stamp(1_700_000_001_000_000_000), frame_id="base_link")
    tracked = m.TrackedObject(track_id=2**63 + 7, state=m.TrackedObject.COASTING, age=42,
                              age_s=4.25, hits=40, misses=2, object=_detected_object())
    sensors = [m.SensorStatus(name="front_camera", rate_hz=29.75, staleness_s=0.0625, ok=True),
               m.SensorStatus(name="front_radar", rate_hz=0.0, staleness_s=1.75, ok=False,
                              message="no message for 1.75 s (timeout 0.5 s)")]
    return {
        "ObjectClassification": m.ObjectClassification(
            label=m.ObjectClassification.PEDESTRIAN, label_name="pedestrian",
            probability=0.75),
        "DetectedObject": _detected_object(),
        "DetectedObjectArray": _detected_array(),
        "TrackedObject": tracked,
        "TrackedObjectArray": m.TrackedObjectArray(header=header, objects=[tracked],
                                                   fusion_level="output"),
        "ActionChunk": _action_chunk(),
        "SensorStatus": sensors[1],
        "FusionStatus": m.FusionStatus(
            header=header, sensors=sensors, sets_complete=1200, sets_partial=14,
            sets_dropped=2, inference_backend="onnxruntime", processing_time_ms=38.5,
            latency_ms=61.25),
    }


def test_every_message_of_the_package_is_tested() -> None:
    share = Path(_msgs().__file__).resolve()
    names = {p.stem for p in (share.parents[5] / "share" / "mm_perception_msgs" / "msg")
             .glob("*.msg")}
    assert names == set(MESSAGES) == set(_all_messages())


def test_class_constants_cover_the_core_classes() -> None:
    cls = _msgs().ObjectClassification
    values = {c: getattr(cls, c.name) for c in ObjectClass}  # AttributeError names a gap
    assert len(set(values.values())) == len(values)
    assert cls.UNKNOWN == 0  # a zero-initialised message means "unknown"


def test_track_states_match_the_core_statuses() -> None:
    tracked = _msgs().TrackedObject
    values = {s: getattr(tracked, s.name) for s in TrackStatus}
    assert sorted(values.values()) == list(range(len(TrackStatus)))
    assert tracked.TENTATIVE == 0  # a new track, as a zero-initialised message says


def test_source_bits_follow_the_output_level_fusion_order() -> None:
    """Bit i of output-level fusion's ``contrib`` is input list i in fusion order; with one
    sensor per kind that is the kind's SOURCE_* bit."""
    obj = _msgs().DetectedObject
    order = output_level._FUSE_ORDER
    assert set(order) == {SensorKind.LIDAR, SensorKind.RADAR, SensorKind.CAMERA}
    for kind, position in order.items():
        assert getattr(obj, f"SOURCE_{kind.name}") == 1 << position


@pytest.mark.parametrize("name", MESSAGES)
def test_rclpy_serialization_round_trip(name: str) -> None:
    from rclpy.serialization import deserialize_message, serialize_message

    msg = _all_messages()[name]
    raw = serialize_message(msg)
    back = deserialize_message(raw, type(msg))
    assert back == msg
    # again from the decoded copy (not byte-equal: CDR alignment padding is not zeroed)
    assert deserialize_message(serialize_message(back), type(msg)) == msg


def test_rosbags_reads_the_rclpy_bytes() -> None:
    """The bag library (rosbags, used by mm_perception.bag) decodes the CDR rclpy writes,
    with types registered from the installed .msg text: recorded outputs can be read back
    without ROS."""
    from rclpy.serialization import serialize_message
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    share = Path(_msgs().__file__).resolve().parents[5] / "share" / "mm_perception_msgs"
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for path in sorted((share / "msg").glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"mm_perception_msgs/msg/{path.stem}"))
    store.register(types)

    sent = _detected_array()
    got: Any = store.deserialize_cdr(serialize_message(sent),
                                     "mm_perception_msgs/msg/DetectedObjectArray")
    assert got.fusion_level == "output" and len(got.objects) == len(sent.objects)
    first, ref = got.objects[0], sent.objects[0]
    assert got.header.stamp.sec == sent.header.stamp.sec
    assert first.pose.pose.position.x == ref.pose.pose.position.x
    assert list(first.pose.covariance) == list(ref.pose.covariance)
    assert first.source_names == list(ref.source_names)
    assert first.source_sensors == 3
    assert [c.label_name for c in first.classification] == ["car", "truck"]
    chunk = _action_chunk()
    got_chunk: Any = store.deserialize_cdr(serialize_message(chunk),
                                           "mm_perception_msgs/msg/ActionChunk")
    assert list(got_chunk.speeds_mps) == pytest.approx(list(chunk.speeds_mps))
    assert got_chunk.safety_status == 1 and got_chunk.safety_reason == chunk.safety_reason


def _exchange(context: Any, msg_type: Any, topic: str, make: Callable[[], Any],
              timeout_s: float = 20.0) -> tuple[Any, Any]:
    """Publish ``make()`` from one node until another node's subscription gets it (or the
    deadline passes); returns (sent, received or None)."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    talker = rclpy.create_node("iface_talker", context=context)
    listener = rclpy.create_node("iface_listener", context=context)
    received: list[Any] = []
    listener.create_subscription(msg_type, topic, received.append, qos)
    publisher = talker.create_publisher(msg_type, topic, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    sent = make()
    try:
        deadline = time.monotonic() + timeout_s
        # discovery takes a moment: wait for the match, then publish until it arrives
        while publisher.get_subscription_count() < 1 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.02)
        next_publish = 0.0
        while not received and time.monotonic() < deadline:
            if time.monotonic() >= next_publish:
                publisher.publish(sent)
                next_publish = time.monotonic() + 0.5
            executor.spin_once(timeout_sec=0.02)
    finally:
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
    return sent, (received[0] if received else None)


def test_detected_object_array_over_fast_dds(ros_context: Any) -> None:
    sent, got = _exchange(ros_context, _msgs().DetectedObjectArray,
                          "/perception/objects", _detected_array)
    assert got is not None, "no DetectedObjectArray arrived within 20 s"
    assert got == sent
    assert got.objects[1].pose.pose.position.x == pytest.approx(13.5)
    assert got.objects[0].velocity.covariance[1] == pytest.approx(0.05)


def test_action_chunk_over_fast_dds(ros_context: Any) -> None:
    sent, got = _exchange(ros_context, _msgs().ActionChunk, "/planning/action_chunk",
                          _action_chunk)
    assert got is not None, "no ActionChunk arrived within 20 s"
    assert got == sent
    assert [d.nanosec for d in got.time_from_start] == [200_000_000 * k for k in range(1, 6)]
    assert got.safety_status == _msgs().ActionChunk.MODIFIED


def test_install_prefix_is_the_one_imported() -> None:
    """The venv imports the build scripts/setup.sh made (not a stale copy elsewhere)."""
    assert Path(_msgs().__file__).resolve().is_relative_to(DEFAULT_PREFIX.resolve())


def test_the_venv_needs_no_environment() -> None:
    """With the ROS 2 wheels, a venv interpreter started with none of the interfaces' paths
    in its environment (as a user's shell starts it) loads the messages and their type
    support: scripts/setup.sh linked them into the venv (see mm_perception.ros.msgs_env)."""
    if os.environ.get("ROS_DISTRO"):
        pytest.skip("a sourced system ROS 2 has no wheel bootstrapper: the install's lib must "
                    "be on LD_LIBRARY_PATH (the Makefile exports it)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_LIBRARY_PATH", "PYTHONPATH", "AMENT_PREFIX_PATH",
                        "_ROS_WHEELS_BOOTSTRAP_COMPLETE")}
    code = ("from mm_perception.ros.msgs_env import msgs_import_error\n"
            "reason = msgs_import_error()\n"
            "assert reason is None, reason\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
