"""Live replay over real Fast DDS: `mm-perception replay` in another process publishes a
generated bag with /clock; a subscriber here (use_sim_time) must receive every message with
its recorded stamp, and its clock must follow the bag's time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from mm_perception.bag.reader import BagSource
from mm_perception.bag.synthetic import SyntheticConfig, write_synthetic_bag
from mm_perception.core.calibration import Rig

rclpy = pytest.importorskip("rclpy")
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
         "sensor_msgs/msg/PointCloud2": PointCloud2, "nav_msgs/msg/Odometry": Odometry}


def _expected(bag: Path) -> tuple[dict[str, list[int]], dict[str, str], int]:
    """Header stamps per topic (for the types this test subscribes to), types, last time."""
    stamps: dict[str, list[int]] = defaultdict(list)
    with BagSource(bag) as src:
        types = src.topic_types()
        reader = src._reader
        for conn, _, raw in reader.messages():
            if types[conn.topic] in TYPES:
                msg: Any = reader.deserialize(raw, conn.msgtype)
                stamps[conn.topic].append(msg.header.stamp.sec * 10**9
                                          + msg.header.stamp.nanosec)
        return dict(stamps), types, src.end_ns


@pytest.mark.parametrize("storage", ["mcap", "ros1"])
def test_replay_over_fast_dds_into_another_process(storage: str, tmp_path: Path,
                                                   ros_context: Any, domain_id: int) -> None:
    """ROS 1 bags are converted to CDR on the fly (Header.seq dropped) and arrive the same."""
    bag = tmp_path / ("bag.bag" if storage == "ros1" else "bag")
    write_synthetic_bag(bag, Rig.from_yaml(REPO / "config" / "rigs" / "car.yaml"),
                        SyntheticConfig(duration_s=1.0, lidar_columns=360),
                        storage=storage)  # type: ignore[arg-type]
    expected, types, end_ns = _expected(bag)

    node = rclpy.create_node(
        "replay_listener", context=ros_context,
        parameter_overrides=[Parameter("use_sim_time", value=True)])
    received: dict[str, list[int]] = defaultdict(list)
    clock_seen: list[int] = []
    qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    for topic in expected:
        def callback(msg: Any, topic: str = topic) -> None:
            received[topic].append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
            clock_seen.append(node.get_clock().now().nanoseconds)

        node.create_subscription(TYPES[types[topic]], topic, callback, qos)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)

    out = tmp_path / "play"
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id),
           "RMW_IMPLEMENTATION": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mm_perception.cli", "replay", str(bag), "--rate", "2.0",
         "--topics", *expected, "--wait-for-subscribers", "1", "--wait-timeout", "60",
         "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def done() -> bool:
            return all(len(received[t]) >= len(s) for t, s in expected.items())

        deadline = time.monotonic() + 90.0
        while not done() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            if proc.poll() is not None:
                # the player waits for acknowledgements before it exits: whatever is still
                # in flight is in our queue, give it a short grace period
                deadline = min(deadline, time.monotonic() + 5.0)
        # the player finishes right after its last publish: wait for it with a deadline
        _stdout, stderr = proc.communicate(timeout=60)
        # the last /clock equals the last message's receive time; wait until it is here
        last_log = end_ns - 1
        deadline = time.monotonic() + 10.0
        while node.get_clock().now().nanoseconds < last_log and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        final_clock = node.get_clock().now().nanoseconds
    finally:
        if proc.poll() is None:
            proc.kill()
        executor.shutdown()
        node.destroy_node()
    assert proc.returncode == 0, stderr
    stats = json.loads((out / "play_stats.json").read_text())
    for topic, stamps in expected.items():
        assert sorted(received[topic]) == sorted(stamps), f"{topic}: missing messages"
        assert stats["published"][topic] == len(stamps)
    assert stats["clock_messages"] >= sum(len(s) for s in expected.values())
    # the subscriber's clock is the bag's time (sim time), not the wall clock
    assert final_clock == last_log
    sim_times = [c for c in clock_seen if c > 0]  # 0 = before the first /clock arrived
    assert len(sim_times) > 0.9 * len(clock_seen)
    first_stamp = min(min(s) for s in expected.values())
    assert all(first_stamp - 10**9 <= c <= last_log for c in sim_times)
