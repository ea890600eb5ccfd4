"""The split nodes (sync, per-sensor detectors, output_fusion, tracker) over real rclpy and
Fast DDS, in-process: configure with a bad parameter fails cleanly naming it, the life cycle
releases everything, each node's output equals the core function called directly on the same
data, and the chained graph matches the composed pipeline's ``output`` list.

Messages come from a small synthetic bag (:mod:`mm_perception.bag.synthetic`, car rig). Inputs
are fed one message at a time and the test waits (with a deadline) until the node has taken
each one, so that the nodes see the same order as the direct calls. The nodes run with
``use_sim_time`` and no ``/clock`` unless a test publishes one: their clock is 0, so sync
timeouts never fire on the wall clock (the bag's stamps are in the past).
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mm_perception.bag.reader import BagSource
from mm_perception.bag.synthetic import SyntheticConfig, write_synthetic_bag
from mm_perception.core.assembly import SetAssembler
from mm_perception.core.calibration import Rig
from mm_perception.core.ego_motion import OdometryBuffer, OdometryBufferConfig
from mm_perception.core.geometry import SE3
from mm_perception.core.types import DetectedObject, PointCloud, RadarScan, SensorSet, Track

rclpy = pytest.importorskip("rclpy")
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, PointCloud2  # noqa: E402

from mm_perception.ros.nodes.detector_nodes import (  # noqa: E402
    CameraDetectorNode,
    LidarDetectorNode,
    RadarDetectorNode,
)
from mm_perception.ros.nodes.launcher import input_remaps  # noqa: E402
from mm_perception.ros.nodes.output_fusion_node import OutputFusionNode  # noqa: E402
from mm_perception.ros.nodes.set_input import sync_with_overrides  # noqa: E402
from mm_perception.ros.nodes.sync_node import SyncNode  # noqa: E402
from mm_perception.ros.nodes.tracker_node import TrackerNode  # noqa: E402
from mm_perception.ros.params import config_dir, defaults, load_schema  # noqa: E402
from mm_perception.ros.sensor_decoder import SensorDecoder  # noqa: E402
from tests.ros.lifecycle_checks import NONE, assert_configure_fails  # noqa: E402
from tests.ros.spin import spin_until as _spin_until  # noqa: E402

pytest.importorskip("mm_perception_msgs.msg")

RIG_FILE = config_dir() / "rigs" / "car.yaml"
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage,
         "sensor_msgs/msg/PointCloud2": PointCloud2, "nav_msgs/msg/Odometry": Odometry}
#: float32 message fields (scores, probabilities) after a round trip; geometry is float64
TOL = 1e-6


# ----------------------------------------------------------------------------- data
class BagData:
    """The synthetic bag's messages (rclpy messages, bag order) and the rig."""

    def __init__(self, path: Path) -> None:
        self.rig = Rig.from_yaml(RIG_FILE)
        topic_sensor = {s.topic: s.name for s in self.rig.sensors.values()}
        self.messages: list[tuple[str, str, Any]] = []  # (sensor, topic, msg)
        with BagSource(path) as src:
            types = src.topic_types()
            reader = src._reader
            for conn, _, raw in reader.messages():
                sensor = topic_sensor.get(conn.topic)
                if sensor is None:
                    continue  # camera_info (rig intrinsics), tf_static
                msg = deserialize_message(bytes(raw), TYPES[types[conn.topic]])
                self.messages.append((sensor, conn.topic, msg))

    def of(self, sensor: str) -> list[Any]:
        return [m for s, _, m in self.messages if s == sensor]


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> BagData:
    path = tmp_path_factory.mktemp("split") / "bag"
    rig = Rig.from_yaml(RIG_FILE)
    write_synthetic_bag(path, rig, SyntheticConfig(duration_s=1.0, seed=3, lidar_columns=360,
                                                   num_objects=4))
    return BagData(path)


@pytest.fixture(scope="module")
def offline(bag: BagData) -> list[tuple[SensorSet, OdometryBuffer]]:
    """The sets the sync node must build: the same assembler fed in bag order."""
    params = defaults(load_schema("sync"))
    assembler = SetAssembler(bag.rig, sync_with_overrides(bag.rig, params), True)
    decoder = SensorDecoder(bag.rig, True)
    out = []
    for sensor, _, msg in bag.messages:
        value = decoder.decode(sensor, msg)
        assert value is not None
        sets = assembler.add(sensor, value)
        out += [(s, assembler.odometry.snapshot()) for s in sets]
    assert len(out) >= 5
    return out


def ext(rig: Rig, name: str) -> SE3:
    """The rig sensor's extrinsics (resolved in the car rig)."""
    extrinsics = rig.sensors[name].extrinsics
    assert extrinsics is not None
    return extrinsics


def odometry_of(bag: BagData) -> OdometryBuffer:
    from mm_perception.ros.conversions import ego_state_from_odometry

    buf = OdometryBuffer(OdometryBufferConfig())
    for msg in bag.of("odom"):
        buf.add(ego_state_from_odometry(msg))
    return buf


# ----------------------------------------------------------------------------- ROS helpers
def make(cls: type, context: Any, name: str | None = None, remaps: list[str] | None = None,
         params: dict[str, Any] | None = None, **more: Any) -> Any:
    values = {"rig_file": str(RIG_FILE), "diagnostics_period_s": 0.2, **(params or {}), **more}
    overrides = [Parameter(k, value=v) for k, v in values.items()]
    overrides.append(Parameter("use_sim_time", value=True))
    args = ["--ros-args", *(remaps or [])] if remaps else None
    return cls(name, context=context, cli_args=args, parameter_overrides=overrides)


def spin_until(executor: Any, condition: Callable[[], bool], timeout_s: float = 10.0,
               what: str = "condition") -> None:
    _spin_until(executor, condition, timeout_s, what)


class Harness:
    """A plain node that publishes inputs and records outputs, plus the executor."""

    def __init__(self, context: Any, nodes: list[Any]) -> None:
        self.node = rclpy.create_node("split_test", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.nodes = nodes
        for n in [self.node, *nodes]:
            self.executor.add_node(n)
        self.pubs: dict[str, Any] = {}
        self.got: dict[str, list[Any]] = {}

    def listen(self, msg_type: Any, topic: str) -> list[Any]:
        box: list[Any] = []
        self.got[topic] = box
        self.node.create_subscription(msg_type, topic, box.append, RELIABLE)
        return box

    def publish(self, topic: str, msg: Any) -> None:
        if topic not in self.pubs:
            self.pubs[topic] = self.node.create_publisher(type(msg), topic, RELIABLE)
        self.pubs[topic].publish(msg)

    def open(self, topic: str, msg_type: Any, subscribers: int = 1) -> None:
        """Create the publisher of ``topic`` and wait until it matched the subscribers (a
        message published before would be lost: volatile durability)."""
        pub = self.node.create_publisher(msg_type, topic, RELIABLE)
        self.pubs[topic] = pub
        spin_until(self.executor, lambda: pub.get_subscription_count() >= subscribers,
                   what=f"subscribers of {topic}")

    def feed(self, topic: str, msg: Any, taken: Callable[[], int]) -> None:
        """Publish and wait until ``taken()`` grows (the node's callback ran)."""
        before = taken()
        self.publish(topic, msg)
        spin_until(self.executor, lambda: taken() > before, what=f"{topic} taken")

    def wait(self, condition: Callable[[], bool], timeout_s: float = 15.0,
             what: str = "outputs") -> None:
        spin_until(self.executor, condition, timeout_s, what)

    def close(self) -> None:
        for n in self.nodes:
            label = n._state_machine.current_state[1]
            if label == "active":
                n.trigger_deactivate()
                label = "inactive"
            if label == "inactive":
                n.trigger_cleanup()
            n.destroy_node()
        self.executor.shutdown()
        self.node.destroy_node()


def up(*nodes: Any) -> None:
    for n in nodes:
        assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS, n.last_error
        assert n.trigger_activate() == TransitionCallbackReturn.SUCCESS, n.last_error


def received(node: Any, stream: str) -> Callable[[], int]:
    return lambda: node.health.streams[stream].received if node.health else 0


def roundtrip(objects: list[DetectedObject], stamp: int, frame: str = "base_link"
              ) -> list[DetectedObject]:
    from mm_perception.ros.convert_objects import objects_from_msg, objects_to_msg

    return objects_from_msg(objects_to_msg(objects, stamp, frame))


def assert_objects_close(got: list[DetectedObject], want: list[DetectedObject],
                         tol: float = TOL) -> None:
    assert len(got) == len(want), (len(got), len(want))
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        what = f"object {i}"
        assert a.label == b.label and a.sources == b.sources, what
        assert a.stamp_ns == b.stamp_ns, what
        np.testing.assert_allclose(a.box.center, b.box.center, atol=tol, err_msg=what)
        np.testing.assert_allclose(a.box.size, b.box.size, atol=tol, err_msg=what)
        assert abs(np.angle(np.exp(1j * (a.box.yaw - b.box.yaw)))) <= tol, what
        assert abs(a.score - b.score) <= tol and abs(a.existence_prob - b.existence_prob) <= tol
        assert (a.velocity is None) == (b.velocity is None), what
        if a.velocity is not None and b.velocity is not None:
            np.testing.assert_allclose(np.asarray(a.velocity, np.float64),
                                       np.asarray(b.velocity, np.float64), atol=tol,
                                       err_msg=what)
        if b.covariance is not None:
            assert a.covariance is not None
            np.testing.assert_allclose(np.asarray(a.covariance, np.float64),
                                       np.asarray(b.covariance, np.float64), atol=tol,
                                       rtol=tol, err_msg=what)
        assert set(a.class_probs) == set(b.class_probs), what
        for k, p in b.class_probs.items():
            assert abs(a.class_probs[k] - p) <= tol, what


def assert_tracks_close(got: list[Track], want: list[Track]) -> None:
    assert [(t.track_id, t.status, t.hits, t.misses, t.age) for t in got] == \
        [(t.track_id, t.status, t.hits, t.misses, t.age) for t in want]
    assert_objects_close([t.object for t in got], [t.object for t in want])


# ----------------------------------------------------------------------------- life cycle
@pytest.mark.parametrize(("cls", "name", "value", "needle"), [
    (SyncNode, "sync.window_s", "wide", "sync.window_s"),
    (SyncNode, "rig_file", "/nonexistent/rig.yaml", "/nonexistent/rig.yaml"),
    (LidarDetectorNode, "sensor", "radar_front", "sensor"),
    (RadarDetectorNode, "odom_wait_s", 5.0, "odom_wait_s"),
    (CameraDetectorNode, "sensor", "cam_rear", "sensor"),
    (OutputFusionNode, "sensors", ["lidar_top", "odom"], "sensors"),
    (OutputFusionNode, "sync.timeout_s", 0.01, "sync.timeout_s"),
    (TrackerNode, "tracker.confirm_hits", 0, "tracker.confirm_hits"),
])
def test_bad_parameter_fails_configure_cleanly(ros_context: Any, cls: type, name: str,
                                               value: Any, needle: str) -> None:
    node = make(cls, ros_context, params={name: value})
    try:
        assert_configure_fails(node, needle)
    finally:
        node.destroy_node()


@pytest.mark.parametrize(("cls", "active"), [
    (SyncNode, {"subscriptions": 5, "timers": 3, "threads": 1}),
    (LidarDetectorNode, {"subscriptions": 1, "timers": 1, "threads": 1}),
    (RadarDetectorNode, {"subscriptions": 2, "timers": 1, "threads": 1}),
    (CameraDetectorNode, {"subscriptions": 3, "timers": 2, "threads": 1}),
    (OutputFusionNode, {"subscriptions": 4, "timers": 2, "threads": 0}),
    (TrackerNode, {"subscriptions": 2, "timers": 1, "threads": 0}),
])
def test_activate_deactivate_cleanup_release_everything(ros_context: Any, cls: type,
                                                        active: dict[str, int]) -> None:
    node = make(cls, ros_context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.last_error
        held = node.entities()
        assert held["publishers"] >= 4 and held["subscriptions"] == 0
        for _ in range(2):
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            assert node.entities() == {**active, "publishers": held["publishers"]}
            assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            assert node.entities() == {**held, "subscriptions": 0, "timers": 0, "threads": 0}
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.entities() == NONE
        assert node.health is None and node.rig is None
    finally:
        node.destroy_node()


# ----------------------------------------------------------------------------- sync
def test_sync_node_publishes_the_assembled_sets_and_data_level_outputs(
        ros_context: Any, bag: BagData,
        offline: list[tuple[SensorSet, OdometryBuffer]]) -> None:
    from sensor_msgs.msg import CameraInfo

    from mm_perception.fusion.data_level import DataLevelFusion
    from mm_perception.ros.convert_cloud import pointcloud2_to_array
    from mm_perception.ros.convert_image import image_to_array
    from mm_perception.ros.message_factory import stamp_to_ns

    node = make(SyncNode, ros_context, "sync", input_remaps(bag.rig),
                params={"qos.reliable_inputs": True, "qos.output_depth": 50, "max_queued_sets": 20})
    h = Harness(ros_context, [node])
    try:
        out = {k: h.listen(t, f"/sync/output/{k}") for k, t in (
            ("lidar_top", PointCloud2), ("radar_front", PointCloud2), ("cam_front", Image),
            ("cam_front/camera_info", CameraInfo), ("painted/lidar_top", PointCloud2),
            ("depth/cam_front", Image))}
        up(node)
        for _, topic, msg in bag.messages:
            if topic not in h.pubs:
                h.open(topic, type(msg))
        for sensor, topic, msg in bag.messages:
            h.feed(topic, msg, received(node, sensor))
        n = len(offline)
        h.wait(lambda: len(out["depth/cam_front"]) >= n and len(out["lidar_top"]) >= n,
               what=f"{n} sets")
        assert node._counts["processed"] == n and node._counts["dropped"] == 0

        fusion = DataLevelFusion(bag.rig)
        by_stamp = {k: {stamp_to_ns(m.header.stamp): m for m in v} for k, v in out.items()}
        for sensor_set, odometry in offline:
            data = fusion.fuse(sensor_set, odometry)
            cloud = sensor_set.lidars["lidar_top"]
            assert cloud.stamp_ns == sensor_set.stamp_ns  # de-skewed to the set stamp
            got = pointcloud2_to_array(by_stamp["lidar_top"][cloud.stamp_ns])
            for f in ("x", "y", "z"):
                np.testing.assert_array_equal(got[f], cloud.points[f])
            painted = pointcloud2_to_array(by_stamp["painted/lidar_top"][cloud.stamp_ns])
            for f in ("x", "y", "z", "r", "g", "b", "camera"):
                np.testing.assert_array_equal(painted[f], data.painted["lidar_top"][f])
            frame = sensor_set.cameras["cam_front"]
            img, enc = image_to_array(by_stamp["cam_front"][frame.stamp_ns])
            assert enc == frame.encoding and np.array_equal(img, frame.image)
            assert frame.stamp_ns in by_stamp["cam_front/camera_info"]
            depth, enc = image_to_array(by_stamp["depth/cam_front"][frame.stamp_ns])
            assert enc == "32FC1"
            np.testing.assert_array_equal(depth, data.cameras["cam_front"].depth)
            assert np.isfinite(depth).sum() > 100
            scan = sensor_set.radars.get("radar_front")
            if scan is not None:
                got_r = pointcloud2_to_array(by_stamp["radar_front"][scan.stamp_ns])
                np.testing.assert_array_equal(got_r["vrad"], scan.doppler)
                np.testing.assert_array_equal(got_r["x"], scan.xyz[:, 0])
        statuses = {s.name: s for s in node.extra_statuses()}
        assert dict(statuses["sync: sync"].values)["sets_complete"] == str(n)
        # a bad message is dropped with a reason, the node lives on
        bad = copy.deepcopy(bag.of("lidar_top")[0])
        bad.fields = [f for f in bad.fields if f.name != "x"]
        h.feed("/sensors/lidar/points", bad, received(node, "lidar_top"))
        assert sum(node.health.streams["lidar_top"].dropped.values()) == 1
        assert node._state_machine.current_state[1] == "active"
    finally:
        h.close()


# ----------------------------------------------------------------------------- detectors
def test_lidar_detector_equals_the_core_detector(ros_context: Any, bag: BagData) -> None:
    import mm_perception_msgs.msg as m

    from mm_perception.detection.lidar import LidarDetectorConfig
    from mm_perception.fusion.pipeline import lidar_detector_for
    from mm_perception.ros.convert_objects import objects_from_msg

    node = make(LidarDetectorNode, ros_context, "lidar_detector",
                params={"qos.reliable_inputs": True, "max_queued_msgs": 20})
    h = Harness(ros_context, [node])
    try:
        out = h.listen(m.DetectedObjectArray, "/lidar_detector/output/objects")
        up(node)
        msgs = bag.of("lidar_top")[2:5]
        h.open("/lidar_detector/input/points", type(msgs[0]))
        for msg in msgs:
            h.feed("/lidar_detector/input/points", msg, received(node, "points"))
        h.wait(lambda: len(out) == len(msgs))
        spec = bag.rig.sensors["lidar_top"]
        detector = lidar_detector_for(spec, LidarDetectorConfig())
        decoder = SensorDecoder(bag.rig)
        total = 0
        for msg, got in zip(msgs, out, strict=True):
            cloud = decoder.decode("lidar_top", msg)
            assert isinstance(cloud, PointCloud)
            want = detector.detect(ext(bag.rig, "lidar_top").apply(cloud.xyz()), cloud.stamp_ns,
                                   sensor="lidar_top")
            assert got.header.frame_id == "base_link" and got.fusion_level == "lidar"
            assert got.header.stamp == msg.header.stamp
            assert_objects_close(objects_from_msg(got), roundtrip(want, cloud.stamp_ns))
            total += len(want)
        assert total > 0
    finally:
        h.close()


def test_radar_detector_equals_the_core_detector(ros_context: Any, bag: BagData) -> None:
    import mm_perception_msgs.msg as m

    from mm_perception.detection.radar import RadarDetector
    from mm_perception.fusion.pipeline import ego_at
    from mm_perception.ros.convert_objects import objects_from_msg

    node = make(RadarDetectorNode, ros_context, "radar_detector",
                params={"qos.reliable_inputs": True, "max_queued_msgs": 20})
    h = Harness(ros_context, [node])
    try:
        out = h.listen(m.DetectedObjectArray, "/radar_detector/output/objects")
        up(node)
        odom = bag.of("odom")
        h.open("/radar_detector/input/odom", type(odom[0]))
        for msg in odom:
            h.feed("/radar_detector/input/odom", msg, received(node, "odom"))
        h.wait(lambda: node.odometry is not None and len(node.odometry.buffer) == len(odom),
               what="odometry")
        msgs = bag.of("radar_front")[3:6]
        h.open("/radar_detector/input/points", type(msgs[0]))
        for msg in msgs:
            h.feed("/radar_detector/input/points", msg, received(node, "points"))
        h.wait(lambda: len(out) == len(msgs))
        decoder, detector, buf = SensorDecoder(bag.rig), RadarDetector(), odometry_of(bag)
        total = 0
        for msg, got in zip(msgs, out, strict=True):
            scan = decoder.decode("radar_front", msg)
            assert isinstance(scan, RadarScan)
            want = detector.detect(scan, ext(bag.rig, "radar_front"), ego_at(scan.stamp_ns, buf),
                                   sensor="radar_front")
            assert_objects_close(objects_from_msg(got), roundtrip(want, scan.stamp_ns))
            total += len(want)
        assert total > 0
        # no odometry covering the stamp: dropped (no_ego), nothing published
        late = copy.deepcopy(bag.of("radar_front")[0])
        late.header.stamp.sec += 100
        h.feed("/radar_detector/input/points", late, received(node, "points"))
        h.wait(lambda: node.health.streams["points"].dropped.get("no_ego", 0) == 1,
               what="no_ego drop")
        assert len(out) == len(msgs)
    finally:
        h.close()


def test_radar_detector_waits_for_odometry_that_covers_the_scan(ros_context: Any,
                                                               bag: BagData) -> None:
    """A scan that arrives before the odometry covering it is held (up to odom_wait_s) and
    detected once that odometry comes, not dropped."""
    import mm_perception_msgs.msg as m

    node = make(RadarDetectorNode, ros_context, "radar_detector",
                params={"qos.reliable_inputs": True, "odom_wait_s": 2.0})
    h = Harness(ros_context, [node])
    try:
        out = h.listen(m.DetectedObjectArray, "/radar_detector/output/objects")
        up(node)
        scan = bag.of("radar_front")[3]

        def stamp(msg: Any) -> int:
            return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)

        # just the odometry around the scan: few messages, well within odom_wait_s
        odom = [o for o in bag.of("odom") if abs(stamp(o) - stamp(scan)) < 200_000_000]
        h.open("/radar_detector/input/points", type(scan))
        h.open("/radar_detector/input/odom", type(odom[0]))
        h.feed("/radar_detector/input/points", scan, received(node, "points"))
        assert out == []  # waiting: no odometry yet
        for msg in odom:
            h.feed("/radar_detector/input/odom", msg, received(node, "odom"))
        h.wait(lambda: len(out) == 1, what="the held scan's objects")
        assert out[0].header.stamp == scan.header.stamp
        assert node.health.streams["points"].dropped.get("no_ego", 0) == 0
    finally:
        h.close()


def test_camera_detector_with_depth_equals_detect_and_lift(
        ros_context: Any, bag: BagData,
        offline: list[tuple[SensorSet, OdometryBuffer]]) -> None:
    import mm_perception_msgs.msg as m

    from mm_perception.detection.camera.detector import CameraDetector
    from mm_perception.detection.camera.lift import lift_detections
    from mm_perception.fusion.data_level import DataLevelFusion
    from mm_perception.ros.convert_image import array_to_image
    from mm_perception.ros.convert_objects import objects_from_msg
    from mm_perception.ros.message_factory import RclpyFactory

    node = make(CameraDetectorNode, ros_context, "camera_detector",
                params={"qos.reliable_inputs": True, "depth_wait_s": 1.0, "max_queued_msgs": 20})
    h = Harness(ros_context, [node])
    try:
        out = h.listen(m.DetectedObjectArray, "/camera_detector/output/objects")
        up(node)
        sensor_set, odometry = offline[2]
        frame = sensor_set.cameras["cam_front"]
        depth = DataLevelFusion(bag.rig).fuse(sensor_set, odometry).cameras["cam_front"].depth
        f = RclpyFactory()
        h.open("/camera_detector/input/depth", Image)
        h.open("/camera_detector/input/image", Image)
        h.feed("/camera_detector/input/depth",
               array_to_image(depth, "32FC1", frame.stamp_ns, frame.frame_id, f),
               received(node, "depth"))
        h.feed("/camera_detector/input/image",
               array_to_image(frame.image, frame.encoding, frame.stamp_ns, frame.frame_id, f),
               received(node, "image"))
        h.wait(lambda: len(out) == 1, timeout_s=20.0)
        assert node._counts["with_depth"] == 1 and node._counts["no_depth"] == 0
        spec = bag.rig.sensors["cam_front"]
        dets = CameraDetector.load(None).detect(frame.rgb()).detections
        assert spec.intrinsics is not None
        want = lift_detections(dets, spec.intrinsics, ext(bag.rig, "cam_front"), frame.stamp_ns,
                               depth=depth, sensor="cam_front")
        assert_objects_close(objects_from_msg(out[0]), roundtrip(want, frame.stamp_ns))
        assert len(want) > 0
    finally:
        h.close()


# ----------------------------------------------------------------------------- fusion
def _detect_set(bag: BagData, sensor_set: SensorSet, odometry: OdometryBuffer
                ) -> dict[str, tuple[int, list[DetectedObject]]]:
    """Per-sensor objects of a set as the detector nodes make them (round-tripped)."""
    from mm_perception.detection.lidar import LidarDetectorConfig
    from mm_perception.detection.radar import RadarDetector
    from mm_perception.fusion.pipeline import ego_at, lidar_detector_for

    lidar = bag.rig.sensors["lidar_top"]
    cloud = sensor_set.lidars["lidar_top"]
    out = {"lidar_top": (cloud.stamp_ns, roundtrip(lidar_detector_for(
        lidar, LidarDetectorConfig()).detect(ext(bag.rig, "lidar_top").apply(cloud.xyz()),
                                             cloud.stamp_ns, sensor="lidar_top"),
        cloud.stamp_ns))}
    scan = sensor_set.radars["radar_front"]
    objs = RadarDetector().detect(scan, ext(bag.rig, "radar_front"),
                                  ego_at(scan.stamp_ns, odometry), sensor="radar_front")
    out["radar_front"] = (scan.stamp_ns, roundtrip(objs, scan.stamp_ns))
    return out


def test_output_fusion_groups_moves_and_fuses(
        ros_context: Any, bag: BagData,
        offline: list[tuple[SensorSet, OdometryBuffer]]) -> None:
    import mm_perception_msgs.msg as m
    from rosgraph_msgs.msg import Clock

    from mm_perception.fusion.output_level import OutputLevelConfig, OutputLevelFusion
    from mm_perception.fusion.pipeline import (
        object_sensor_kinds,
        sensor_coverage,
        to_set_stamp,
    )
    from mm_perception.ros.convert_objects import objects_from_msg, objects_to_msg
    from mm_perception.ros.message_factory import RclpyFactory, ns_to_stamp, stamp_to_ns

    node = make(OutputFusionNode, ros_context, "output_fusion",
                sensors=["lidar_top", "radar_front", "cam_front"])
    h = Harness(ros_context, [node])
    try:
        out = h.listen(m.DetectedObjectArray, "/output_fusion/output/objects")
        up(node)
        buf = odometry_of(bag)
        odom = bag.of("odom")
        h.open("/output_fusion/input/odom", type(odom[0]))
        for msg in odom:
            h.feed("/output_fusion/input/odom", msg, received(node, "odom"))
        sets = [s for s in offline if "radar_front" in s[0].radars][:2]
        per_set = [_detect_set(bag, s, buf) for s, _ in sets]
        topic = "/output_fusion/input/objects/"
        for sensor in ("lidar_top", "radar_front", "cam_front"):
            h.open(topic + sensor, m.DetectedObjectArray)
        for lists in per_set:  # lidar and radar lists; the camera never comes
            for sensor, (stamp, objs) in lists.items():
                h.feed(topic + sensor, objects_to_msg(objs, stamp, "base_link", "x"),
                       received(node, sensor))
        assert not out  # cam_front is required: the sets wait for it (or the timeout)
        clock = h.node.create_publisher(Clock, "/clock", 10)
        now = ns_to_stamp(sets[-1][0].stamp_ns + 2 * 10**9, RclpyFactory())
        deadline = time.monotonic() + 10.0
        while len(out) < len(sets):  # sim time past the timeout: the sets go partial
            assert time.monotonic() < deadline, "no partial sets after the timeout"
            clock.publish(Clock(clock=now))
            h.executor.spin_once(timeout_sec=0.02)
        assert node._counts["partial"] == len(sets) and node._counts["complete"] == 0
        status = dict(node.extra_statuses()[0].values)
        assert status["sets_partial"] == str(len(sets))

        kinds = object_sensor_kinds(bag.rig)
        fusion = OutputLevelFusion(OutputLevelConfig(sensor_kinds=kinds))
        coverage = {s.name: fn for s in bag.rig.sensors.values()
                    if (fn := sensor_coverage(s)) is not None}
        for (sensor_set, _), lists, got in zip(sets, per_set, out, strict=True):
            assert stamp_to_ns(got.header.stamp) == sensor_set.stamp_ns
            moved = {n: to_set_stamp(o, st, sensor_set.stamp_ns, buf, [], n)
                     for n, (st, o) in lists.items()}
            want = fusion.fuse(moved, sensor_set.stamp_ns, coverage=coverage)
            assert want
            assert_objects_close(objects_from_msg(got), roundtrip(want, sensor_set.stamp_ns))
    finally:
        h.close()


def test_tracker_equals_the_pipeline_tracking_step(ros_context: Any, bag: BagData,
                                                   offline: list[tuple[SensorSet,
                                                                       OdometryBuffer]]
                                                   ) -> None:
    import mm_perception_msgs.msg as m
    from visualization_msgs.msg import MarkerArray

    from mm_perception.fusion.pipeline import ego_at, track_step, world_pose
    from mm_perception.ros.convert_objects import (
        objects_to_msg,
        tracks_from_msg,
        tracks_to_msg,
    )
    from mm_perception.tracking.tracker import MultiObjectTracker, TrackerConfig

    node = make(TrackerNode, ros_context, "tracker")
    h = Harness(ros_context, [node])
    try:
        out = h.listen(m.TrackedObjectArray, "/tracker/output/tracks")
        markers = h.listen(MarkerArray, "/tracker/debug/markers")
        up(node)
        buf = odometry_of(bag)
        odom = bag.of("odom")
        h.open("/tracker/input/odom", type(odom[0]))
        for msg in odom:
            h.feed("/tracker/input/odom", msg, received(node, "odom"))
        inputs = [(s.stamp_ns, _detect_set(bag, s, o)["lidar_top"][1]) for s, o in offline]
        h.open("/tracker/input/objects", m.DetectedObjectArray)
        for stamp, objs in inputs:
            h.feed("/tracker/input/objects", objects_to_msg(objs, stamp, "base_link", "lidar"),
                   received(node, "objects"))
        h.wait(lambda: len(out) == len(inputs) and len(markers) == len(inputs))
        tracker = MultiObjectTracker(TrackerConfig())
        period = 0.1
        for (stamp, objs), got in zip(inputs, out, strict=True):
            T, failed = world_pose(stamp, buf, ego_at(stamp, buf), [])
            want = track_step(tracker, objs, stamp, T, failed, "odom")
            assert got.fusion_level == "lidar"
            assert_tracks_close(tracks_from_msg(got),
                                tracks_from_msg(tracks_to_msg(want, stamp, "base_link",
                                                              period)))
        assert len(out[-1].objects) > 0
        # an array not newer than the last is dropped with a reason
        h.feed("/tracker/input/objects", objects_to_msg([], inputs[0][0], "base_link"),
               received(node, "objects"))
        assert node.health.streams["objects"].dropped["out_of_order"] == 1
    finally:
        h.close()


# ----------------------------------------------------------------------------- chain
def _all_grew(counters: list[Callable[[], int]], before: list[int]) -> bool:
    return all(c() > b for c, b in zip(counters, before, strict=True))


def _chain_settled(sync: Any, detectors: tuple[Any, ...], fusion: Any) -> bool:
    """No set waits in the sync node, every detector input is done with, and output_fusion
    has taken every list the detectors published."""
    c = sync._counts
    if c["processed"] + c["dropped"] != c["complete"] + c["partial"]:
        return False
    for det in detectors:
        d, points = det._counts, det.health.streams["points"]
        if (d["processed"] + d["failed"] + d["dropped_behind"] + sum(points.dropped.values())
                != points.received):
            return False
        if fusion.health.streams[det.spec.name].received != d["processed"]:
            return False
    return True


@pytest.fixture
def chain(ros_context: Any, bag: BagData) -> Iterator[tuple[Harness, list[Any]]]:
    remaps = {
        "sync": input_remaps(bag.rig),
        "lidar_detector": ["-r", "~/input/points:=/sync/output/lidar_top"],
        "radar_detector": ["-r", "~/input/points:=/sync/output/radar_front",
                           "-r", "~/input/odom:=/odom"],
        "output_fusion": ["-r", "~/input/objects/lidar_top:=/lidar_detector/output/objects",
                          "-r", "~/input/objects/radar_front:=/radar_detector/output/objects",
                          "-r", "~/input/odom:=/odom"],
        "tracker": ["-r", "~/input/objects:=/output_fusion/output/objects",
                    "-r", "~/input/odom:=/odom"],
    }
    nodes = [
        make(SyncNode, ros_context, "sync", remaps["sync"],
             params={"qos.reliable_inputs": True, "max_queued_sets": 20}),
        make(LidarDetectorNode, ros_context, "lidar_detector", remaps["lidar_detector"],
             params={"qos.reliable_inputs": True, "max_queued_msgs": 20}),
        make(RadarDetectorNode, ros_context, "radar_detector", remaps["radar_detector"],
             params={"qos.reliable_inputs": True, "max_queued_msgs": 20}),
        make(OutputFusionNode, ros_context, "output_fusion", remaps["output_fusion"],
             sensors=["lidar_top", "radar_front"]),
        make(TrackerNode, ros_context, "tracker", remaps["tracker"]),
    ]
    h = Harness(ros_context, nodes)
    try:
        yield h, nodes
    finally:
        h.close()


def test_chain_matches_the_composed_pipeline(chain: tuple[Harness, list[Any]], bag: BagData,
                                             offline: list[tuple[SensorSet, OdometryBuffer]]
                                             ) -> None:
    import mm_perception_msgs.msg as m

    from mm_perception.fusion.pipeline import PerceptionPipeline, PipelineConfig
    from mm_perception.ros.convert_objects import objects_from_msg, tracks_from_msg
    from mm_perception.ros.message_factory import stamp_to_ns

    h, (sync, lidar, radar, fusion, _tracker) = chain
    fused = h.listen(m.DetectedObjectArray, "/output_fusion/output/objects")
    tracks = h.listen(m.TrackedObjectArray, "/tracker/output/tracks")
    up(*reversed(h.nodes))  # consumers first: nothing published is lost
    for _, topic, msg in bag.messages:
        if topic not in h.pubs:
            h.open(topic, type(msg), 3 if topic == "/odom" else 1)
    for sensor, topic, msg in bag.messages:
        if topic == "/odom":
            counters = [received(n, "odom") for n in (sync, radar, fusion)]
            before = [c() for c in counters]
            h.publish(topic, msg)
            h.wait(functools.partial(_all_grew, counters, before), what="odom taken")
        else:
            h.feed(topic, msg, received(sync, sensor))
            # the next input only once this one went through: fed faster than real time,
            # a slow radar detector's list would reach output_fusion after the next LiDAR
            # list had already resolved the set it belongs to (the radar is optional there)
            h.wait(functools.partial(_chain_settled, sync, (lidar, radar), fusion),
                   what="the chain settled")
    # every set but the last is fused (the radar is optional: a set is resolved once a
    # newer list arrives)
    n = len(offline)
    h.wait(lambda: len(fused) >= n - 1 and len(tracks) >= n - 1, timeout_s=20.0,
           what=f"{n - 1} fused sets")

    pipeline = PerceptionPipeline(bag.rig, PipelineConfig(
        lists=("lidar", "radar", "output"), track_lists=("output",), use_cameras=False))
    by_stamp = {stamp_to_ns(msg.header.stamp): msg for msg in fused}
    compared = 0
    for sensor_set, odometry in offline[:n - 1]:
        result = pipeline.process(sensor_set, odometry)
        got = by_stamp[sensor_set.stamp_ns]
        want = roundtrip(result.objects["output"], sensor_set.stamp_ns)
        # not bit-exact: the split path fuses the detectors' lists after a message round
        # trip, so their float32 fields (score, existence, class probabilities) enter the
        # fusion arithmetic rounded to float32 (measured: <= 6e-8 on score / existence);
        # geometry and covariances are float64 on both paths
        assert_objects_close(objects_from_msg(got), want, tol=1e-6)
        compared += len(want)
    assert compared > 0
    assert any(len(t.objects) for t in tracks)
    last = tracks_from_msg(tracks[-1])
    assert last and all(t.object.box.frame_id == "base_link" for t in last)
    assert fusion._counts["partial"] == 0 and sync._counts["dropped"] == 0
    assert lidar._counts["processed"] == n and radar._counts["failed"] == 0


def test_odometry_input_drops_bad_messages_through_the_node() -> None:
    """OdometryInput: the rig's odometry offset applied; a NaN pose and a repeated stamp go
    to the node's drop (reason named), the buffer keeps only the good message."""
    from nav_msgs.msg import Odometry

    from mm_perception.ros.nodes.set_input import OdometryInput

    rig = Rig.from_yaml(RIG_FILE)
    drops: list[tuple[str, str, str]] = []
    odometry = OdometryInput(rig, lambda *d: drops.append(d))
    good = Odometry()
    good.header.frame_id, good.child_frame_id = "odom", "base_link"
    good.header.stamp.sec = 5
    good.pose.pose.orientation.w = 1.0
    assert odometry.add(good, None)
    bad = copy.deepcopy(good)
    bad.header.stamp.sec = 6
    bad.pose.pose.position.x = float("nan")
    assert not odometry.add(bad, None)
    assert not odometry.add(copy.deepcopy(good), None)  # same stamp again
    assert [(stream, reason) for stream, reason, _ in drops] == [("odom", drops[0][1]),
                                                                ("odom", "stamp")]
    assert drops[0][1] and drops[0][2]  # a reason and a detail for the NaN pose
    assert len(odometry.buffer) == 1
    assert odometry.buffer.span() == (5 * 10**9 + odometry.offset_ns,) * 2
