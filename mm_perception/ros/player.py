"""Live bag replay into a ROS 2 graph, with ``/clock`` (sim time).

Messages are published as the bag's serialised CDR bytes (ROS 1 bags are converted to CDR
first), so nothing is deserialised on the way and every field arrives exactly as recorded.
Publishing needs the message's Python type only to create the publisher: a topic whose
message package is not installed (for example ``tf2_msgs`` without a ROS install) is skipped
and reported, never silently lost.

Timing: message ``i`` with receive time ``t_i`` is published at wall time
``w0 + (t_i - t_start) / rate``; ``/clock`` carries the bag time and is also published every
``1 / clock_hz`` seconds while waiting, so sim-time timers keep running between messages.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_perception.bag.reader import BagSource
from mm_perception.core.errors import BagError, ConfigError

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlayerConfig:
    """Live replay options.

    Attributes:
        rate: playback speed factor (1.0 = real time), > 0.
        loop: start again at the end (until interrupted or ``max_loops``).
        max_loops: with ``loop``, stop after this many passes (0 = forever).
        start_offset_s: skip this many seconds from the start of the bag.
        clock_hz: ``/clock`` publication rate while waiting between messages, Hz (0 = only
            with messages).
        topics: topics to publish (empty = all).
        wait_for_subscribers: before starting, wait until every publisher has at least this
            many subscribers (0 = do not wait).
        wait_timeout_s: give up waiting for subscribers after this long (raises BagError).
        qos_depth: publisher queue depth.
        ack_timeout_s: at the end, wait this long for subscribers to acknowledge the last
            messages (reliable QoS) before returning.
        lead_in_s: after the subscribers are there, publish ``/clock`` at the bag's start
            time for this long before the first message: sim-time nodes start their clocks,
            and transports that open their data channels on first use (Fast DDS
            ``LARGE_DATA``: TCP) have them open before the sensor data comes.
        mute: ``(topic, start_s, end_s)`` windows, seconds from the bag's start, in which
            that topic is not published (a sensor dropping out, to test the graph's partial
            sets and diagnostics); muted messages are counted in ``PlayStats.muted``.
    """

    rate: float = 1.0
    loop: bool = False
    max_loops: int = 0
    start_offset_s: float = 0.0
    clock_hz: float = 100.0
    topics: tuple[str, ...] = ()
    wait_for_subscribers: int = 0
    wait_timeout_s: float = 30.0
    qos_depth: int = 100
    ack_timeout_s: float = 5.0
    lead_in_s: float = 0.0
    mute: tuple[tuple[str, float, float], ...] = ()

    def __post_init__(self) -> None:
        for window in self.mute:
            if (len(window) != 3 or not isinstance(window[0], str)
                    or not 0 <= window[1] < window[2]):
                raise ConfigError(f"PlayerConfig.mute entries are (topic, start_s, end_s) "
                                  f"with 0 <= start_s < end_s, got {window!r}")
        if not self.rate > 0:
            raise ConfigError(f"PlayerConfig.rate must be > 0, got {self.rate}")
        if self.start_offset_s < 0:
            raise ConfigError(f"PlayerConfig.start_offset_s must be >= 0, "
                              f"got {self.start_offset_s}")
        if not 0 <= self.lead_in_s <= 60:
            raise ConfigError(f"PlayerConfig.lead_in_s must be in [0, 60], got {self.lead_in_s}")
        if self.clock_hz < 0:
            raise ConfigError(f"PlayerConfig.clock_hz must be >= 0, got {self.clock_hz}")
        if self.max_loops < 0 or self.wait_for_subscribers < 0 or self.qos_depth < 1:
            raise ConfigError(f"PlayerConfig: max_loops ({self.max_loops}) and "
                              f"wait_for_subscribers ({self.wait_for_subscribers}) must be >= 0 "
                              f"and qos_depth ({self.qos_depth}) >= 1")


@dataclass
class PlayStats:
    """What a replay published."""

    published: Counter[str] = field(default_factory=Counter)
    clock_messages: int = 0
    muted: Counter[str] = field(default_factory=Counter)
    skipped_topics: dict[str, str] = field(default_factory=dict)
    loops: int = 0
    errors: list[str] = field(default_factory=list)
    #: the replay ended early because its ``stop`` event was set
    stopped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"published": dict(self.published), "clock_messages": self.clock_messages,
                "muted": dict(self.muted),
                "skipped_topics": dict(self.skipped_topics), "loops": self.loops,
                "errors": list(self.errors), "stopped": self.stopped}


def message_class(typename: str) -> Any:
    """The rclpy message class for ``pkg/msg/Name``; ImportError when not installed."""
    pkg, _, name = typename.partition("/msg/")
    if not name:
        raise ImportError(f"not a message type name: {typename!r}")
    module = importlib.import_module(f"{pkg}.msg")
    try:
        return getattr(module, name)
    except AttributeError as exc:
        raise ImportError(f"{pkg}.msg has no {name}") from exc


class BagPlayer:
    """Publishes a bag on a live ROS 2 graph.

    Args:
        bag_path: the bag (anything :class:`~mm_perception.bag.reader.BagSource` opens).
        config: replay options.
        node: an rclpy node to publish from (created, and destroyed at the end, when None).
        stop: when set (from a signal handler or another thread), the replay ends at the next
            message or within 10 ms of waiting (``PlayStats.stopped``).
    """

    def __init__(self, bag_path: str | Path, config: PlayerConfig | None = None,
                 node: Any | None = None, stop: threading.Event | None = None) -> None:
        self.bag_path = Path(bag_path)
        self.config = config or PlayerConfig()
        self._node = node
        self._stop = stop or threading.Event()
        self.stats = PlayStats()

    def play(self) -> PlayStats:
        import rclpy
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        own_node = self._node is None
        if own_node:
            if not rclpy.ok():
                rclpy.init()
            self._node = rclpy.create_node("mm_perception_player")
        node = self._node
        assert node is not None
        try:
            with BagSource(self.bag_path) as bag:
                types = bag.topic_types()
                wanted = [t for t in types if not self.config.topics or t in self.config.topics]
                unknown = [t for t in self.config.topics if t not in types]
                if unknown:
                    raise BagError(f"topics not in the bag: {unknown}; it has {sorted(types)}")
                publishers: dict[str, Any] = {}
                for topic in wanted:
                    try:
                        cls = message_class(types[topic])
                    except ImportError as exc:
                        self.stats.skipped_topics[topic] = f"{types[topic]}: {exc}"
                        LOG.warning("not replaying %s: message type %s is not installed (%s)",
                                    topic, types[topic], exc)
                        continue
                    latched = topic == "/tf_static"
                    qos = QoSProfile(
                        depth=1 if latched else self.config.qos_depth,
                        reliability=ReliabilityPolicy.RELIABLE,
                        durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                                    else DurabilityPolicy.VOLATILE))
                    publishers[topic] = node.create_publisher(cls, topic, qos)
                from rosgraph_msgs.msg import Clock

                clock_pub = node.create_publisher(Clock, "/clock", 10)
                self._wait_for_subscribers(list(publishers.values()))
                self._lead_in(bag, clock_pub, Clock)
                passes = 0
                while not self._stopping():
                    self._one_pass(bag, publishers, clock_pub, Clock)
                    passes += 1
                    self.stats.loops = passes
                    if not self.config.loop or (self.config.max_loops
                                                and passes >= self.config.max_loops):
                        break
                self._wait_for_acks([*publishers.values(), clock_pub])
        finally:
            if own_node:
                node.destroy_node()
                self._node = None
        return self.stats

    def _stopping(self) -> bool:
        if self._stop.is_set():
            self.stats.stopped = True
        return self.stats.stopped

    def _wait_for_subscribers(self, publishers: list[Any]) -> None:
        need = self.config.wait_for_subscribers
        if not need:
            return
        deadline = time.monotonic() + self.config.wait_timeout_s
        while any(p.get_subscription_count() < need for p in publishers):
            if self._stopping():
                return
            if time.monotonic() > deadline:
                lacking = [p.topic_name for p in publishers if p.get_subscription_count() < need]
                raise BagError(f"no subscriber after {self.config.wait_timeout_s} s on: "
                               f"{lacking}")
            time.sleep(0.01)

    def _lead_in(self, bag: BagSource, clock_pub: Any, clock_cls: Any) -> None:
        """``/clock`` held at the start time for ``lead_in_s`` (see :class:`PlayerConfig`)."""
        if not self.config.lead_in_s:
            return
        t0 = bag.start_ns + round(self.config.start_offset_s * 1e9)
        period = 1.0 / self.config.clock_hz if self.config.clock_hz else 0.05
        end = time.monotonic() + self.config.lead_in_s
        while time.monotonic() < end and not self._stopping():
            self._publish_clock(clock_pub, clock_cls, t0)
            time.sleep(period)

    def _wait_for_acks(self, publishers: list[Any]) -> None:
        """Reliable publishers: wait until subscribers acknowledged everything, so the last
        messages are not lost when the process exits right after publishing them."""
        from rclpy.duration import Duration

        for pub in publishers:
            if not pub.wait_for_all_acked(Duration(seconds=self.config.ack_timeout_s)):
                self.stats.errors.append(f"{pub.topic_name}: not every subscriber acknowledged "
                                         f"the last messages within "
                                         f"{self.config.ack_timeout_s} s")

    def _publish_clock(self, clock_pub: Any, clock_cls: Any, t_ns: int) -> None:
        msg = clock_cls()
        msg.clock.sec, msg.clock.nanosec = divmod(int(t_ns), 1_000_000_000)
        clock_pub.publish(msg)
        self.stats.clock_messages += 1

    def _one_pass(self, bag: BagSource, publishers: dict[str, Any], clock_pub: Any,
                  clock_cls: Any) -> None:
        start_ns = bag.start_ns + round(self.config.start_offset_s * 1e9)
        rate = self.config.rate
        clock_period = 1.0 / self.config.clock_hz if self.config.clock_hz else None
        wall0: float | None = None
        last_clock_wall = 0.0
        for topic, log_ns, cdr in bag.raw_messages(list(publishers), start_ns=start_ns,
                                                    errors=self.stats.errors):
            if wall0 is None:
                wall0 = time.monotonic()
            due = wall0 + (log_ns - start_ns) / 1e9 / rate
            while True:
                if self._stopping():
                    return
                now = time.monotonic()
                if now >= due:
                    break
                if clock_period is not None and now - last_clock_wall >= clock_period:
                    bag_now = start_ns + round((now - wall0) * rate * 1e9)
                    self._publish_clock(clock_pub, clock_cls, min(bag_now, log_ns))
                    last_clock_wall = now
                time.sleep(min(due - now, clock_period or 0.01, 0.01))
            self._publish_clock(clock_pub, clock_cls, log_ns)
            last_clock_wall = time.monotonic()
            t_rel = (log_ns - bag.start_ns) / 1e9
            if any(topic == m_topic and lo <= t_rel < hi for m_topic, lo, hi in self.config.mute):
                self.stats.muted[topic] += 1
                continue
            publishers[topic].publish(cdr)
            self.stats.published[topic] += 1


def play_bag(bag_path: str | Path, config: PlayerConfig | None = None) -> PlayStats:
    """Initialise rclpy, replay the bag on its own node, and shut rclpy down again."""
    import rclpy

    rclpy.init()
    try:
        return BagPlayer(bag_path, config).play()
    finally:
        if rclpy.ok():
            rclpy.shutdown()


__all__ = ["BagPlayer", "PlayStats", "PlayerConfig", "message_class", "play_bag"]
