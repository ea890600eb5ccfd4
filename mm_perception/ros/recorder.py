"""Record live topics into a rosbag2 MCAP (``rosbag2_py`` is not available from pip).

Messages are taken *raw* (serialised CDR, never deserialised) and written with their
receive time (wall clock, ns) as the bag's log time, so recording costs little and every field
is kept exactly. Types are discovered from the graph; ``mm_perception_msgs`` definitions are
added to the bag (:func:`~mm_perception.bag.writer.interfaces_typestore`) so that the bag is
readable without ROS.

Stops when ``max_duration_s`` has passed, or ``idle_timeout_s`` after the last message once
something was received, or on Ctrl-C.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_perception.core.errors import BagError, ConfigError

#: what ``mm-perception record`` prints on stderr once every topic is subscribed
READY_LINE = "mm_perception recorder ready:"


@dataclass(frozen=True)
class RecorderConfig:
    """Recording options.

    Attributes:
        topics: topics to record (exact names), at least one.
        discovery_timeout_s: give up when a topic has not appeared in the graph by then.
        idle_timeout_s: stop this long after the last message (once one arrived; 0 = never).
        idle_topics: the topics whose messages count for ``idle_timeout_s`` (empty: all);
            periodic topics such as ``/diagnostics`` would otherwise never let it end.
        max_duration_s: stop after this long in any case (0 = no limit).
        qos_depth: subscription queue depth (reliable, volatile).
    """

    topics: tuple[str, ...]
    discovery_timeout_s: float = 30.0
    idle_timeout_s: float = 0.0
    idle_topics: tuple[str, ...] = ()
    max_duration_s: float = 0.0
    qos_depth: int = 100

    def __post_init__(self) -> None:
        if not self.topics:
            raise ConfigError("RecorderConfig.topics must name at least one topic")
        for key in ("discovery_timeout_s", "idle_timeout_s", "max_duration_s"):
            if getattr(self, key) < 0:
                raise ConfigError(f"RecorderConfig.{key} must be >= 0, got {getattr(self, key)}")
        unknown = [t for t in self.idle_topics if t not in self.topics]
        if unknown:
            raise ConfigError(f"RecorderConfig.idle_topics {unknown} are not among the "
                              f"recorded topics")
        if self.qos_depth < 1:
            raise ConfigError(f"RecorderConfig.qos_depth must be >= 1, got {self.qos_depth}")


@dataclass
class RecordStats:
    """What was recorded."""

    recorded: Counter[str] = field(default_factory=Counter)
    types: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"recorded": dict(self.recorded), "types": dict(self.types)}


def record(out: str | Path, config: RecorderConfig, context: Any = None,
           on_ready: Callable[[], None] | None = None) -> RecordStats:
    """Record ``config.topics`` into the new MCAP bag ``out`` (see the module docstring).

    ``on_ready`` is called once every topic is subscribed (a player started after it loses
    nothing that reaches this process)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from mm_perception.bag.writer import BagWriter, interfaces_typestore
    from mm_perception.ros.player import message_class

    own = context is None
    if own:
        context = rclpy.Context()
        rclpy.init(context=context)
    node = rclpy.create_node("mm_perception_recorder", context=context)
    stats = RecordStats()
    try:
        deadline = time.monotonic() + config.discovery_timeout_s
        while True:
            graph = dict(node.get_topic_names_and_types())
            missing = [t for t in config.topics if t not in graph]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise BagError(f"topics not in the graph after {config.discovery_timeout_s} s: "
                               f"{missing}")
            time.sleep(0.05)
        store = interfaces_typestore()
        qos = QoSProfile(depth=config.qos_depth, reliability=ReliabilityPolicy.RELIABLE)
        last = [0.0]
        idle_topics = set(config.idle_topics or config.topics)
        with BagWriter(out, "mcap", typestore=store) as writer:
            for topic in config.topics:
                typename = graph[topic][0]
                stats.types[topic] = typename

                def on_msg(data: bytes, topic: str = topic, typename: str = typename) -> None:
                    writer.write_raw(topic, typename, time.time_ns(), data)
                    stats.recorded[topic] += 1
                    if topic in idle_topics:
                        last[0] = time.monotonic()

                node.create_subscription(message_class(typename), topic, on_msg, qos, raw=True)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            if on_ready is not None:
                on_ready()
            start = time.monotonic()
            try:
                while True:
                    executor.spin_once(timeout_sec=0.05)
                    now = time.monotonic()
                    if config.max_duration_s and now - start > config.max_duration_s:
                        break
                    if config.idle_timeout_s and last[0] and now - last[0] > config.idle_timeout_s:
                        break
            except KeyboardInterrupt:
                pass
            finally:
                executor.shutdown()
    finally:
        node.destroy_node()
        if own:
            context.try_shutdown()
    return stats


__all__ = ["READY_LINE", "RecordStats", "RecorderConfig", "record"]
