"""The split ``bev_fusion`` node over real rclpy and Fast DDS, in-process: its objects equal
:meth:`BevDetector.detect` run offline on the same sets, configure with a bad parameter or an
incomplete weights folder fails cleanly naming it, and the life cycle releases everything
(the inference backend included).

The model is a tiny random-weights LiDAR + radar network (no camera network) built and
exported in a temporary folder; the rig is the car rig without its camera, and the messages
come from a small synthetic bag of that rig. Inputs are fed one message at a time, waiting
(with a deadline) until the node took each, so the node builds the same sets as the offline
assembler. The node runs with ``use_sim_time`` and no ``/clock``: its clock is 0, so sync
timeouts never fire.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mm_perception.bag.reader import BagSource
from mm_perception.bag.synthetic import SyntheticConfig, write_synthetic_bag
from mm_perception.core.assembly import SetAssembler
from mm_perception.core.calibration import Rig
from mm_perception.core.ego_motion import OdometryBuffer
from mm_perception.core.types import SensorSet

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_msgs.msg import Float64  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from mm_perception.ros.nodes.bev_fusion_node import BevFusionNode  # noqa: E402
from mm_perception.ros.nodes.launcher import input_remaps, node_kinds  # noqa: E402
from mm_perception.ros.nodes.set_input import sync_with_overrides  # noqa: E402
from mm_perception.ros.params import config_dir, defaults, load_schema  # noqa: E402
from mm_perception.ros.sensor_decoder import SensorDecoder  # noqa: E402
from tests.ros.lifecycle_checks import NONE, assert_configure_fails  # noqa: E402
from tests.ros.spin import spin_until as _spin_until  # noqa: E402

pytest.importorskip("mm_perception_msgs.msg")

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
TYPES = {"sensor_msgs/msg/PointCloud2": PointCloud2, "nav_msgs/msg/Odometry": Odometry}
#: object centres: float64 in the message, the same ONNX Runtime session type on both sides
CENTRE_TOL = 1e-5


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weights LiDAR + radar BEV model folder (weights, ONNX, config, processor).
    """
    import torch

    from mm_perception.fusion.feature_level.config import BevGrid, BevModelConfig
    from mm_perception.fusion.feature_level.detector import ONNX_FILE, save_weights
    from mm_perception.fusion.feature_level.export import export_onnx
    from mm_perception.fusion.feature_level.model import BevFusionNet
    from mm_perception.fusion.feature_level.processor import BevProcessor

    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = BevModelConfig(grid=BevGrid(x_range_m=(-8, 8), y_range_m=(-8, 8), cell_m=1.0),
                            modalities=("lidar", "radar"),
                            # the untrained head sits at the focal-loss prior (score 0.1):
                            # a low threshold so that the comparison is not of empty lists
                            score_threshold=0.05, max_objects=20)
    net = BevFusionNet(config).eval()
    folder = tmp_path_factory.mktemp("bev_weights") / "lr"
    save_weights(folder, net, BevProcessor(config))
    export_onnx(net, folder / ONNX_FILE)
    return folder


class BagData:
    """A camera-less car rig (file and object) and its synthetic bag's messages (rclpy
    messages, bag order)."""

    def __init__(self, folder: Path) -> None:
        data = yaml.safe_load((config_dir() / "rigs" / "car.yaml").read_text())
        del data["sensors"]["cam_front"]
        self.rig_file = folder / "car_no_camera.yaml"
        self.rig_file.write_text(yaml.safe_dump(data, sort_keys=False))
        self.rig = Rig.from_yaml(self.rig_file)
        bag = folder / "bag"
        write_synthetic_bag(bag, self.rig, SyntheticConfig(duration_s=0.6, seed=5,
                                                           lidar_columns=360, num_objects=4))
        topic_sensor = {s.topic: s.name for s in self.rig.sensors.values()}
        self.messages: list[tuple[str, str, Any]] = []  # (sensor, topic, msg)
        with BagSource(bag) as src:
            types = src.topic_types()
            for conn, _, raw in src._reader.messages():
                sensor = topic_sensor.get(conn.topic)
                if sensor is not None:
                    msg = deserialize_message(bytes(raw), TYPES[types[conn.topic]])
                    self.messages.append((sensor, conn.topic, msg))


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> BagData:
    return BagData(tmp_path_factory.mktemp("bev_bag"))


@pytest.fixture(scope="module")
def offline(bag: BagData) -> list[tuple[SensorSet, OdometryBuffer]]:
    """The sets the node must build: the same assembler fed in bag order."""
    params = defaults(load_schema("bev_fusion"))
    assembler = SetAssembler(bag.rig, sync_with_overrides(bag.rig, params), True)
    decoder = SensorDecoder(bag.rig, True)
    out = []
    for sensor, _, msg in bag.messages:
        value = decoder.decode(sensor, msg)
        assert value is not None
        out += [(s, assembler.odometry.snapshot()) for s in assembler.add(sensor, value)]
    assert len(out) >= 3
    return out


# ----------------------------------------------------------------------------- ROS helpers
def make(context: Any, bag: BagData, weights: Path | str,
         params: dict[str, Any] | None = None) -> BevFusionNode:
    values = {"rig_file": str(bag.rig_file), "weights_dir": str(weights),
              "diagnostics_period_s": 0.2, **(params or {})}
    overrides = [Parameter(k, value=v) for k, v in values.items()]
    overrides.append(Parameter("use_sim_time", value=True))
    return BevFusionNode("bev_fusion", context=context, parameter_overrides=overrides,
                         cli_args=["--ros-args", *input_remaps(bag.rig)])


def spin_until(executor: Any, condition: Callable[[], bool], timeout_s: float = 20.0,
               what: str = "condition") -> None:
    _spin_until(executor, condition, timeout_s, what)


def received(node: BevFusionNode, stream: str) -> Callable[[], int]:
    return lambda: node.health.streams[stream].received if node.health else 0


def matched(pub: Any) -> bool:
    return bool(pub.get_subscription_count() >= 1)


def grew(count: Callable[[], int], before: int) -> bool:
    return count() > before


def bev_status(node: BevFusionNode) -> dict[str, str]:
    statuses = {s.name: s for s in node.extra_statuses()}
    return dict(statuses[f"{node.get_name()}: bev"].values)


# ----------------------------------------------------------------------------- tests
def test_bev_fusion_is_a_node_kind() -> None:
    assert node_kinds()["bev_fusion"] is BevFusionNode


def test_objects_equal_the_offline_detector(ros_context: Any, bag: BagData, weights: Path,
                                            offline: list[tuple[SensorSet, OdometryBuffer]]
                                            ) -> None:
    import mm_perception_msgs.msg as m

    from mm_perception.fusion.feature_level.detector import BevDetector, BevDetectorConfig
    from mm_perception.ros.convert_objects import objects_from_msg, objects_to_msg
    from mm_perception.ros.message_factory import stamp_to_ns

    node = make(ros_context, bag, weights, {"qos.reliable_inputs": True,
                                            "qos.output_depth": 50, "max_queued_sets": 20})
    helper = rclpy.create_node("bev_test", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    for n in (node, helper):
        executor.add_node(n)
    got: dict[str, list[Any]] = {}
    for key, msg_type, topic in (
            ("objects", m.DetectedObjectArray, "/bev_fusion/output/objects"),
            ("markers", MarkerArray, "/bev_fusion/debug/markers"),
            ("time", Float64, "/bev_fusion/debug/processing_time_ms"),
            ("latency", Float64, "/bev_fusion/debug/latency_ms"),
            ("diagnostics", DiagnosticArray, "/diagnostics")):
        got[key] = []
        helper.create_subscription(msg_type, topic, got[key].append, RELIABLE)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.last_error
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS, node.last_error
        pubs = {}
        for _, topic, msg in bag.messages:
            if topic not in pubs:
                pub = helper.create_publisher(type(msg), topic, RELIABLE)
                pubs[topic] = pub
                spin_until(executor, functools.partial(matched, pub),
                           what=f"subscriber of {topic}")
        for sensor, topic, msg in bag.messages:
            taken = received(node, sensor)
            before = taken()
            pubs[topic].publish(msg)
            spin_until(executor, functools.partial(grew, taken, before),
                       what=f"{topic} taken")
        n = len(offline)
        spin_until(executor, lambda: min(len(got[k]) for k in ("objects", "markers", "time",
                                                                "latency")) >= n,
                   what=f"{n} sets published")
        assert node._counts["processed"] == n and node._counts["dropped"] == 0

        detector = BevDetector(BevDetectorConfig(weights=str(weights)))
        total = 0
        for (sensor_set, odometry), msg in zip(offline, got["objects"], strict=True):
            assert stamp_to_ns(msg.header.stamp) == sensor_set.stamp_ns
            assert msg.header.frame_id == "base_link" and msg.fusion_level == "feature"
            want, _ = detector.detect(sensor_set, bag.rig, odometry)
            want = objects_from_msg(objects_to_msg(want, sensor_set.stamp_ns, "base_link"))
            objects = objects_from_msg(msg)
            assert len(objects) == len(want), (sensor_set.stamp_ns, len(objects), len(want))
            for a, b in zip(objects, want, strict=True):
                assert a.label == b.label and a.stamp_ns == b.stamp_ns
                np.testing.assert_allclose(a.box.center, b.box.center, atol=CENTRE_TOL)
                assert abs(a.score - b.score) <= 1e-5
            total += len(want)
        assert total > 0  # the random model does decode objects: not a vacuous comparison
        detector.close()
        assert all(np.isfinite(t.data) and t.data > 0 for t in got["time"])

        status = bev_status(node)
        assert status["inference_backend"] == "onnxruntime"
        assert (status["device"], status["precision"]) == ("cpu", "fp32")
        assert status["model_modalities"] == "lidar,radar"
        assert "lidar" in status["modalities_present"].split(",")
        assert "lidar" in status["modalities_used"].split(",")
        # the diagnostics timer runs on the node clock (sim time, no /clock here): publish
        node.publish_diagnostics()
        spin_until(executor, lambda: any(
            s.name == "bev_fusion: bev" and any(
                kv.key == "inference_backend" and kv.value == "onnxruntime" for kv in s.values)
            for d in got["diagnostics"] for s in d.status), what="bev diagnostics")
        names = {s.name for d in got["diagnostics"] for s in d.status}
        assert {"bev_fusion: input lidar_top", "bev_fusion: input radar_front",
                "bev_fusion: sync"} <= names, names
    finally:
        label = node._state_machine.current_state[1]
        if label == "active":
            node.trigger_deactivate()
            label = "inactive"
        if label == "inactive":
            node.trigger_cleanup()
        node.destroy_node()
        executor.shutdown()
        helper.destroy_node()


def test_weights_folder_missing_the_onnx_file_fails_configure_naming_it(
        ros_context: Any, bag: BagData, weights: Path, tmp_path: Path) -> None:
    incomplete = tmp_path / "no_onnx"
    shutil.copytree(weights, incomplete)
    (incomplete / "bev_fusion.onnx").unlink()
    node = make(ros_context, bag, incomplete)
    try:
        assert_configure_fails(node, "bev_fusion.onnx")
        assert node.detector is None
        # fixed: configures
        node.set_parameters([Parameter("weights_dir", value=str(weights))])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.last_error
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    finally:
        node.destroy_node()


@pytest.mark.parametrize(("params", "needles"), [
    ({"backend": "tflite"}, ["'backend'", "tflite"]),
    ({"device": "npu"}, ["'device'", "npu"]),
    ({"precision": "fp16"}, ["'precision'", "fp16"]),  # TensorRT only
    ({"drop_modalities": ["lidar", "sonar"]}, ["'drop_modalities'", "sonar"]),
    ({"drop_modalities": ["lidar", "radar"]}, ["drop_modalities", "nothing left"]),
    ({"weights_dir": "/nonexistent/bev"}, ["'weights_dir'", "/nonexistent/bev"]),
])
def test_bad_parameter_fails_configure_cleanly(ros_context: Any, bag: BagData, weights: Path,
                                               params: dict[str, Any], needles: list[str]
                                               ) -> None:
    node = make(ros_context, bag, weights, params)
    try:
        assert_configure_fails(node, *needles)
        assert node.detector is None
    finally:
        node.destroy_node()


def test_activate_deactivate_cleanup_release_everything(ros_context: Any, bag: BagData,
                                                        weights: Path) -> None:
    node = make(ros_context, bag, weights)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.last_error
        held = node.entities()
        # objects, markers, diagnostics, processing time, latency
        assert held == {**NONE, "publishers": 5}
        backend = node.detector.backend
        assert backend.name == "onnxruntime"
        # lidar, radar, odometry; the sync poll, idle flush and diagnostics timers; the worker
        active = {"subscriptions": 3, "timers": 3, "threads": 1, "publishers": 5}
        for _ in range(2):
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            assert node.entities() == active
            assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            assert node.entities() == held
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.entities() == NONE
        assert node.detector is None and node.health is None and node.rig is None
        assert backend._session is None  # BevDetector.close released the ONNX session
    finally:
        node.destroy_node()
