"""The lifecycle base every mm_perception node derives from.

Life cycle (``rclpy`` managed node, REP 2000 states):

* construction: every parameter of the node's JSON schema is declared (dynamically typed,
  with its default and description), nothing else is created;
* ``configure``: parameters are read and validated against the schema, then
  :meth:`ManagedNode.configure_node` builds the node's config objects, core components and
  (lifecycle) publishers. Any :class:`ConfigError` / ``ValueError`` / ``OSError`` fails the
  transition with one log line naming the problem, and everything created so far is released:
  the node is back in ``unconfigured`` and can be configured again with fixed parameters;
* ``activate``: publishers start publishing, :meth:`ManagedNode.activate_node` creates the
  input subscriptions and timers (an inactive node receives nothing and costs nothing), and
  the diagnostics timer starts;
* ``deactivate``: subscriptions, timers and worker threads are destroyed / joined;
* ``cleanup``: publishers and every component are released (:meth:`ManagedNode.entities`
  lists what a node holds, so tests can check that nothing is left);
* ``shutdown`` / ``error``: as deactivate + cleanup, from whatever state.

Every node publishes ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``, per-input rate,
staleness and drops, counters, timing percentiles), ``~/debug/processing_time_ms`` and
``~/debug/latency_ms`` (``std_msgs/Float64``; latency is the node clock at publication minus
the input stamp: sim time under a bag replay with ``use_sim_time``).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any, ClassVar

from rclpy.callback_groups import CallbackGroup, MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from mm_perception.core.errors import ConfigError
from mm_perception.core.heap import freeze_heap
from mm_perception.ros.nodes.health import HealthConfig, HealthMonitor, Level, Status
from mm_perception.ros.params import declare_from_schema, load_schema, read_validated

#: sensor-data QoS (best effort, volatile, keep last) with a configurable depth
SENSOR_QOS = qos_profile_sensor_data


def sensor_qos(depth: int, reliable: bool = False) -> QoSProfile:
    """Sensor-data QoS (best effort, volatile) keeping ``depth`` messages; ``reliable``
    asks for reliable delivery instead (only matches reliable publishers, e.g. a bag player:
    a lossless replay, where best effort drops large images under load)."""
    from rclpy.qos import ReliabilityPolicy

    return QoSProfile(depth=depth,
                      reliability=(ReliabilityPolicy.RELIABLE if reliable
                                   else SENSOR_QOS.reliability),
                      durability=SENSOR_QOS.durability, history=SENSOR_QOS.history)


def diagnostic_array(statuses: list[Status], stamp: Any, hardware_id: str) -> Any:
    """:class:`Status` list -> ``diagnostic_msgs/DiagnosticArray``."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    msg = DiagnosticArray()
    msg.header.stamp = stamp
    for status in statuses:
        msg.status.append(DiagnosticStatus(
            level=bytes([int(status.level)]), name=status.name, message=status.message,
            hardware_id=hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in status.values]))
    return msg


class ManagedNode(LifecycleNode):
    """Lifecycle node with schema-validated parameters, diagnostics and timing outputs.

    Subclasses set :attr:`KIND` (the schema name, ``config/schema/<KIND>.schema.json``) and
    implement the ``*_node`` hooks. The schema of every node has ``diagnostics_period_s``
    and ``stale_after_s``.

    Args:
        node_name: ROS node name (default: :attr:`KIND`).
        context, cli_args, parameter_overrides, namespace: as for ``rclpy.node.Node``
            (``cli_args`` carries ``--ros-args -r ~/input/x:=/topic --params-file F``).
    """

    KIND: ClassVar[str] = ""

    def __init__(self, node_name: str | None = None, *, context: Any = None,
                 cli_args: list[str] | None = None,
                 parameter_overrides: list[Any] | None = None,
                 namespace: str | None = None) -> None:
        if not self.KIND:
            raise TypeError(f"{type(self).__name__} must set KIND")
        super().__init__(node_name or self.KIND, context=context, cli_args=cli_args,
                         parameter_overrides=parameter_overrides, namespace=namespace,
                         enable_communication_interface=True)
        self._schema = load_schema(self.KIND)
        declare_from_schema(self, self._schema)
        self.params: dict[str, Any] | None = None
        #: why the last configure / activate failed (None after a success)
        self.last_error: str | None = None
        self.health: HealthMonitor | None = None
        self._subscriptions_held: list[Any] = []
        self._timers_held: list[Any] = []
        self._publishers_held: list[Any] = []
        self._threads: list[tuple[threading.Thread, threading.Event]] = []
        self._io_group: CallbackGroup = MutuallyExclusiveCallbackGroup()
        self._diag_pub: Any = None
        self._time_pub: Any = None
        self._latency_pub: Any = None

    # ------------------------------------------------------------------ hooks
    def configure_node(self, params: dict[str, Any]) -> None:
        """Build configs, components and publishers from validated ``params``.

        Raises:
            ConfigError, ValueError, OSError: fails the configure transition (logged).
        """

    def activate_node(self) -> None:
        """Create subscriptions, timers and threads (use :meth:`subscribe`, :meth:`every`,
        :meth:`start_thread`: they are released on deactivate)."""

    def deactivate_node(self) -> None:
        """Extra work on deactivate (subscriptions/timers/threads are released by the base)."""

    def cleanup_node(self) -> None:
        """Release components (publishers made with :meth:`publisher` go by themselves)."""

    def health_streams(self) -> dict[str, bool]:
        """Input streams watched by diagnostics: name -> required."""
        return {}

    def extra_statuses(self) -> list[Status]:
        """Node-specific diagnostic statuses, appended to the health report."""
        return []

    def publish_status(self) -> None:
        """Node-specific periodic status messages, published with the diagnostics."""

    # ------------------------------------------------------------------ helpers
    def publisher(self, msg_type: Any, topic: str, depth: int = 10,
                  qos: QoSProfile | None = None) -> Any:
        """A lifecycle publisher (publishes only while active), released at cleanup."""
        pub = self.create_lifecycle_publisher(msg_type, topic, qos or depth)
        self._publishers_held.append(pub)
        return pub

    def subscribe(self, msg_type: Any, topic: str, callback: Callable[[Any], None],
                  qos: QoSProfile | int) -> Any:
        """A subscription in the node's input callback group, destroyed at deactivate."""
        sub = self.create_subscription(msg_type, topic, callback, qos,
                                       callback_group=self._io_group)
        self._subscriptions_held.append(sub)
        return sub

    def every(self, period_s: float, callback: Callable[[], None], steady: bool = False) -> Any:
        """A timer on the node's ROS clock (follows sim time: it stops when ``/clock`` does),
        or with ``steady`` on the monotonic wall clock; destroyed at deactivate."""
        clock = None
        if steady:
            from rclpy.clock import Clock, ClockType

            clock = Clock(clock_type=ClockType.STEADY_TIME)
        timer = self.create_timer(period_s, callback, callback_group=self._io_group,
                                  clock=clock)
        self._timers_held.append(timer)
        return timer

    def start_thread(self, target: Callable[[threading.Event], None], name: str) -> None:
        """Run ``target(stop_event)`` in a thread; it must return soon after the event is set
        (deactivate sets it and joins)."""
        stop = threading.Event()
        thread = threading.Thread(target=target, args=(stop,), name=f"{self.get_name()}-{name}",
                                  daemon=True)
        self._threads.append((thread, stop))
        thread.start()

    def drop(self, stream: str, reason: str, detail: str) -> None:
        """A message of input ``stream`` was not used: counted per ``reason`` in the
        diagnostics, and one throttled warning (a bad stream must not flood the log)."""
        if self.health is not None:
            self.health.dropped(stream, reason)
        self.get_logger().warning(f"dropped {stream} message ({reason}): {detail}",
                                  throttle_duration_sec=5.0)

    def report_timing(self, processing_ms: float, stamp_ns: int) -> float:
        """Publish and record processing time and stamp-to-output latency; returns latency ms.
        """
        from std_msgs.msg import Float64

        latency_ms = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        if self.health is not None:
            self.health.timing("processing_ms", processing_ms)
            self.health.timing("latency_ms", latency_ms)
        if self._time_pub is not None:
            self._time_pub.publish(Float64(data=float(processing_ms)))
            self._latency_pub.publish(Float64(data=float(latency_ms)))
        return latency_ms

    def entities(self) -> dict[str, int]:
        """How many subscriptions, timers, publishers and threads the node holds now."""
        return {"subscriptions": len(self._subscriptions_held),
                "timers": len(self._timers_held),
                "publishers": len(self._publishers_held),
                "threads": sum(t.is_alive() for t, _ in self._threads)}

    def publish_diagnostics(self) -> None:
        if self.health is None or self._diag_pub is None:
            return
        statuses = self.health.report(self.get_name()) + self.extra_statuses()
        self._diag_pub.publish(diagnostic_array(statuses, self.get_clock().now().to_msg(),
                                                self.get_fully_qualified_name()))
        self.publish_status()

    @property
    def worst_level(self) -> Level:
        """The worst level of the current health report (OK without a monitor)."""
        if self.health is None:
            return Level.OK
        return max((s.level for s in self.health.report(self.get_name())), default=Level.OK)

    # ------------------------------------------------------------------ transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import Float64

        try:
            params = read_validated(self, self._schema, self.KIND)
            self.params = params
            health = HealthConfig(stale_after_s=float(params["stale_after_s"]))
            self.configure_node(params)
            self.health = HealthMonitor(self.health_streams(), health)
            self._diag_pub = self.publisher(DiagnosticArray, "/diagnostics")
            self._time_pub = self.publisher(Float64, "~/debug/processing_time_ms")
            self._latency_pub = self.publisher(Float64, "~/debug/latency_ms")
        except (ConfigError, ValueError, OSError, KeyError) as exc:
            self.last_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            self._release_all()
            return TransitionCallbackReturn.FAILURE
        except Exception:  # a bug, not a bad parameter: say where, then the error transition
            self.last_error = traceback.format_exc()
            self.get_logger().error(f"configure raised:\n{self.last_error}")
            self._release_all()
            return TransitionCallbackReturn.ERROR
        self.last_error = None
        # start-up objects (models, imports) out of the collector's reach: a full collection
        # walking them would stall a callback later (see freeze_heap)
        freeze_heap()
        self.get_logger().info(f"configured ({self.KIND})")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ret = super().on_activate(state)  # lifecycle publishers start publishing
        if ret != TransitionCallbackReturn.SUCCESS:
            return ret
        try:
            assert self.params is not None
            if self.health is not None:
                self.health = HealthMonitor(self.health_streams(), self.health.config)
            self.activate_node()
            self.every(float(self.params["diagnostics_period_s"]), self.publish_diagnostics)
        except (ConfigError, ValueError, OSError) as exc:
            self.last_error = str(exc)
            self.get_logger().error(f"activate failed: {exc}")
            self._release_active()
            super().on_deactivate(state)
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("active")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_active()
        self.deactivate_node()
        self.get_logger().info("inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_all()
        self.get_logger().info("cleaned up")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_active()
        self._release_all()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in state {state.label}: releasing everything")
        self._release_active()
        self._release_all()
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ release
    def _release_active(self) -> None:
        for _thread, stop in self._threads:
            stop.set()
        for thread, _ in self._threads:
            thread.join(timeout=10.0)
            if thread.is_alive():
                self.get_logger().error(f"thread {thread.name} did not stop within 10 s")
        self._threads = [(t, s) for t, s in self._threads if t.is_alive()]
        for sub in self._subscriptions_held:
            self.destroy_subscription(sub)
        self._subscriptions_held = []
        for timer in self._timers_held:
            self.destroy_timer(timer)
        self._timers_held = []

    def _release_all(self) -> None:
        self._release_active()
        try:
            self.cleanup_node()
        finally:
            for pub in self._publishers_held:
                self.destroy_lifecycle_publisher(pub)
            self._publishers_held = []
            self._diag_pub = self._time_pub = self._latency_pub = None
            self.health = None
            self.params = None


__all__ = ["SENSOR_QOS", "ManagedNode", "diagnostic_array", "sensor_qos"]
