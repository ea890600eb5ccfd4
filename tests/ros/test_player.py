"""BagPlayer options over real DDS: loop, start offset, topic selection, rate, /clock."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mm_perception.bag.reader import BagSource
from mm_perception.bag.synthetic import SyntheticConfig, write_synthetic_bag
from mm_perception.core.calibration import Rig
from mm_perception.core.errors import BagError, ConfigError
from mm_perception.ros.player import BagPlayer, PlayerConfig

rclpy = pytest.importorskip("rclpy")
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402

RIG = {"base_frame": "base_link",
       "sensors": {"odom": {"type": "odometry", "topic": "/odom"},
                   "lidar": {"type": "lidar", "topic": "/points", "frame_id": "lidar",
                             "extrinsics": {"translation": [0, 0, 1.8], "rpy": [0, 0, 0]}}}}


def _odom_times(bag: Path) -> list[tuple[int, int]]:
    """(receive time, header stamp) of every odometry message, ns."""
    rig = Rig.from_dict(RIG)
    with BagSource(bag) as src:
        return [(m.log_time_ns, m.stamp_ns) for m in src.sensor_messages(rig)
                if m.sensor == "odom"]


def test_loop_and_start_offset(tmp_path: Path, ros_context: Any) -> None:
    bag = tmp_path / "bag"
    write_synthetic_bag(bag, Rig.from_dict(RIG),
                        SyntheticConfig(duration_s=0.6, lidar_channels=4, lidar_columns=90))
    times = _odom_times(bag)
    with BagSource(bag) as src:
        start = src.start_ns
    expected_per_pass = [stamp for log, stamp in times if log >= start + 200_000_000]

    listener = rclpy.create_node("listener", context=ros_context)
    stamps: list[int] = []
    clocks: list[int] = []
    qos = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
    listener.create_subscription(
        Odometry, "/odom",
        lambda m: stamps.append(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec), qos)
    listener.create_subscription(
        Clock, "/clock", lambda m: clocks.append(m.clock.sec * 10**9 + m.clock.nanosec), qos)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)

    player_node = rclpy.create_node("player", context=ros_context)
    config = PlayerConfig(rate=4.0, loop=True, max_loops=2, start_offset_s=0.2,
                          topics=("/odom",), wait_for_subscribers=1, wait_timeout_s=30.0)
    player = BagPlayer(bag, config, node=player_node)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.setdefault("stats", player.play()))
    thread.start()
    deadline = time.monotonic() + 60.0
    while (thread.is_alive() or len(stamps) < 2 * len(expected_per_pass)) \
            and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.02)
    thread.join(timeout=10)
    executor.shutdown()
    listener.destroy_node()
    player_node.destroy_node()

    stats = result["stats"]
    assert stats.loops == 2
    assert stats.published["/odom"] == 2 * len(expected_per_pass)
    assert "/points" not in stats.published  # not selected
    # the first 0.2 s are skipped, in both passes, and the odometry stamps repeat per pass
    odom_stamps = sorted(stamps)
    assert odom_stamps == sorted(expected_per_pass * 2)
    assert clocks and min(clocks) >= start + 200_000_000 - 10**7  # /clock starts at the offset
    assert stats.errors == []


def test_unknown_topic_is_an_error(tmp_path: Path, ros_context: Any) -> None:
    bag = tmp_path / "bag"
    write_synthetic_bag(bag, Rig.from_dict(RIG),
                        SyntheticConfig(duration_s=0.2, lidar_channels=2, lidar_columns=10))
    node = rclpy.create_node("player", context=ros_context)
    try:
        with pytest.raises(BagError, match="topics not in the bag"):
            BagPlayer(bag, PlayerConfig(topics=("/nope",)), node=node).play()
    finally:
        node.destroy_node()


@pytest.mark.parametrize("kwargs", [{"rate": 0.0}, {"start_offset_s": -1.0},
                                    {"clock_hz": -5.0}, {"qos_depth": 0},
                                    {"lead_in_s": -0.5}, {"lead_in_s": 120.0}])
def test_player_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        PlayerConfig(**kwargs)  # type: ignore[arg-type]


def test_lead_in_holds_the_clock_at_the_start_before_the_first_message(
        tmp_path: Path, ros_context: Any) -> None:
    bag = tmp_path / "bag"
    write_synthetic_bag(bag, Rig.from_dict(RIG),
                        SyntheticConfig(duration_s=0.2, lidar_channels=2, lidar_columns=10))
    with BagSource(bag) as src:
        start = src.start_ns
    listener = rclpy.create_node("listener", context=ros_context)
    events: list[tuple[str, int, float]] = []  # (topic, stamp ns, receive time s)
    qos = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
    listener.create_subscription(Odometry, "/odom", lambda m: events.append(
        ("odom", m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, time.monotonic())), qos)
    listener.create_subscription(Clock, "/clock", lambda m: events.append(
        ("clock", m.clock.sec * 10**9 + m.clock.nanosec, time.monotonic())), qos)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    player_node = rclpy.create_node("player", context=ros_context)
    config = PlayerConfig(topics=("/odom",), wait_for_subscribers=1, lead_in_s=0.5)
    player = BagPlayer(bag, config, node=player_node)
    thread = threading.Thread(target=player.play)
    thread.start()
    deadline = time.monotonic() + 60.0
    while thread.is_alive() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.02)
    thread.join(timeout=10)
    executor.spin_once(timeout_sec=0.1)
    executor.shutdown()
    listener.destroy_node()
    player_node.destroy_node()

    first_odom = next(i for i, e in enumerate(events) if e[0] == "odom")
    lead = [e for e in events[:first_odom] if e[0] == "clock" and e[1] == start]
    # /clock held at the start time for about the lead-in, before any sensor message
    assert events[0][:2] == ("clock", start), events[:3]
    assert lead[-1][2] - lead[0][2] >= 0.4, (lead[0], lead[-1])
    assert all(e[1] >= start for e in events if e[0] == "clock")
