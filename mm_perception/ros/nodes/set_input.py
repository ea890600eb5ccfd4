"""The sensor-set input shared by the nodes that synchronise raw rig sensors (the composed
pipeline node and the split ``sync`` node), and small input helpers of every split node.

:class:`SetInputNode` is a :class:`~mm_perception.ros.nodes.base.ManagedNode` that

* subscribes ``~/input/<sensor>`` for every rig sensor (``Image`` / ``CompressedImage`` per the
  rig's camera model, ``PointCloud2`` for LiDAR and radar, ``Odometry``) and
  ``~/input/<camera>/camera_info`` for cameras with a CameraInfo topic, all with sensor-data
  QoS (``qos.sensor_depth``, ``qos.reliable_inputs``);
* decodes each message (:class:`~mm_perception.ros.sensor_decoder.SensorDecoder`; a bad one
  is dropped with a reason, counted per input, and logged throttled) and feeds the
  :class:`~mm_perception.core.assembly.SetAssembler`;
* polls the assembler with the node clock (``poll_period_s``) so that a silent sensor ends in
  a partial set after the sync timeout (not before the node clock is set: under sim time,
  before the first ``/clock``), and flushes it when no sensor message came for
  :data:`IDLE_FLUSH_S` of wall time: at the end of a replayed bag ``/clock`` stops, and the
  last sets (waiting for a sensor or for odometry) would otherwise never come out; the
  offline replay flushes at the end of the bag the same way;
* hands every set, with a snapshot of the odometry, to a bounded :class:`WorkQueue`
  (``max_queued_sets``; the oldest waiting set is dropped and counted when the worker falls
  behind) drained by one worker thread that calls :meth:`SetInputNode.process_set`;
* reports the sync counters (``sets_complete``, ``sets_partial``, ``sets_dropped``,
  ``sets_processed``, ``queued``) as one diagnostic status and processing time / latency
  (stamp = the set's reference stamp) through :meth:`ManagedNode.report_timing`.

A subclass's schema must have the parameters ``rig_file``, ``sync.reference``,
``sync.window_s``, ``sync.timeout_s``, ``sync.on_timeout``, ``deskew_lidar``,
``remove_nans``, ``poll_period_s``, ``max_queued_sets``, ``qos.sensor_depth`` and
``qos.reliable_inputs``; its ``configure_node`` calls :meth:`SetInputNode.configure_inputs`.
"""

from __future__ import annotations

import functools
import time
import traceback
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from mm_perception.core.assembly import SetAssembler, sync_config_for_rig
from mm_perception.core.calibration import Rig
from mm_perception.core.ego_motion import OdometryBuffer, OdometryBufferConfig
from mm_perception.core.errors import ConfigError, ConversionError
from mm_perception.core.sync import SyncConfig
from mm_perception.core.types import EgoState, SensorKind, SensorSet
from mm_perception.ros.nodes.base import ManagedNode, sensor_qos
from mm_perception.ros.nodes.health import HealthMonitor, Level, Status
from mm_perception.ros.nodes.work_queue import WorkQueue
from mm_perception.ros.params import config_dir
from mm_perception.ros.sensor_decoder import SensorDecoder, drop_reason

#: wall time without any sensor message after which pending sets are flushed, s
IDLE_FLUSH_S = 1.0


def resolve_path(value: str) -> Path:
    """A config path as given (absolute or relative to the working directory), else relative
    to the mm_perception config directory (so ``rigs/car.yaml`` works from anywhere)."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return config_dir() / path


def load_live_rig(rig_file: str) -> Rig:
    """The rig of parameter ``rig_file`` with every extrinsic given in the file.

    Raises:
        ConfigError, OSError: unreadable rig, or sensors that take their extrinsics from tf
            (a live graph has no bag ``/tf_static`` to resolve them from).
    """
    rig = Rig.from_yaml(resolve_path(rig_file))
    unresolved = rig.unresolved_extrinsics()
    if unresolved:
        raise ConfigError(f"rig {rig.source}: sensors {unresolved} take their extrinsics "
                          f"from tf; give them in the rig file for a live graph")
    return rig


def sync_with_overrides(rig: Rig, params: dict[str, Any]) -> SyncConfig:
    """The rig's sync config with the node's non-default ``sync.*`` parameters applied
    (``""`` / ``0`` keep the rig's value)."""
    base = sync_config_for_rig(rig)
    changes: dict[str, Any] = {}
    if params["sync.reference"]:
        changes["reference"] = params["sync.reference"]
    if params["sync.window_s"] > 0:
        changes["window_ns"] = round(params["sync.window_s"] * 1e9)
    if params["sync.timeout_s"] > 0:
        changes["timeout_ns"] = round(params["sync.timeout_s"] * 1e9)
    if params["sync.on_timeout"]:
        changes["on_timeout"] = params["sync.on_timeout"]
    if not changes:
        return base
    optional = tuple(o for o in base.optional if o != changes.get("reference", base.reference))
    return replace(base, optional=optional, **changes)


def rig_sensor(rig: Rig, name: str, kinds: tuple[SensorKind, ...], parameter: str = "sensor"
               ) -> Any:
    """The rig's :class:`SensorSpec` called ``name``, which must be of one of ``kinds``.

    Raises:
        ConfigError: naming ``parameter``, the value and the rig's sensors of those kinds.
    """
    spec = rig.sensors.get(name)
    if spec is None or spec.kind not in kinds:
        fitting = [s.name for s in rig.sensors.values() if s.kind in kinds]
        raise ConfigError(f"parameter {parameter!r} = {name!r} is not a "
                          f"{'/'.join(k.value for k in kinds)} of rig {rig.source} "
                          f"(it has {fitting})")
    return spec


class OdometryInput:
    """``nav_msgs/Odometry`` -> an :class:`OdometryBuffer` on the common clock (the rig's
    ``time_offset_s`` of its odometry sensor added to each stamp, as the
    :class:`SetAssembler` does), with bad messages dropped through the node's
    :meth:`ManagedNode.drop` (counted and logged).

    Args:
        rig: the rig (the offset of its first odometry sensor is used; none: 0).
        drop: the node's :meth:`ManagedNode.drop`.
        stream: the health stream name (``odom``).
    """

    def __init__(self, rig: Rig, drop: Callable[[str, str, str], None],
                 stream: str = "odom") -> None:
        odom = rig.of_kind(SensorKind.ODOMETRY)
        self.offset_ns = odom[0].time_offset_ns if odom else 0
        self.stream = stream
        self.buffer = OdometryBuffer(OdometryBufferConfig())
        self._drop = drop

    def add(self, msg: Any, health: HealthMonitor | None) -> bool:
        """Take one message (counted as received on ``health``); False when it was dropped."""
        from mm_perception.ros.conversions import ego_state_from_odometry

        if health is not None:
            health.received(self.stream)
        try:
            state: EgoState = ego_state_from_odometry(msg)
            if self.offset_ns:
                state = replace(state, stamp_ns=state.stamp_ns + self.offset_ns)
        except (ConversionError, ValueError, KeyError) as exc:
            self._drop(self.stream, drop_reason(exc), str(exc))
            return False
        if not self.buffer.add(state):
            self._drop(self.stream, "stamp",
                       f"odometry at {state.stamp_ns} not accepted (out of order)")
            return False
        return True

    def snapshot(self) -> OdometryBuffer:
        """A copy the worker thread can read while the input thread adds."""
        return self.buffer.snapshot()


class SetInputNode(ManagedNode, metaclass=ABCMeta):
    """A lifecycle node fed with synchronised :class:`SensorSet` s of the rig's raw sensors
    (see the module docstring). Subclasses implement :meth:`process_set`."""

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.rig: Rig | None = None
        self.assembler: SetAssembler | None = None
        self.decoder: SensorDecoder | None = None
        self._queue: WorkQueue[tuple[SensorSet, OdometryBuffer]] = WorkQueue()
        self._last_times: tuple[float, float] = (0.0, 0.0)
        self._counts = {"complete": 0, "partial": 0, "dropped": 0, "processed": 0}
        self._period_s: float | None = None
        self._last_input = 0.0  # time.monotonic() of the last sensor message, 0: none yet

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def process_set(self, sensor_set: SensorSet, odometry: OdometryBuffer) -> None:
        """Work on one set in the worker thread (publish its results). An exception drops
        the set (counted in ``sets_dropped``, logged with its traceback), never the node."""

    def sync_status_values(self) -> tuple[tuple[str, str], ...]:
        """Extra key/values appended to the sync diagnostic status."""
        return ()

    # ------------------------------------------------------------------ configure
    def configure_inputs(self, rig: Rig, params: dict[str, Any]) -> None:
        """Build the assembler and decoder of ``rig`` from the node's parameters.

        Raises:
            ConfigError: bad ``sync.*`` overrides (named by the sync config).
        """
        self.assembler = SetAssembler(rig, sync_with_overrides(rig, params),
                                      params["deskew_lidar"])
        self.decoder = SensorDecoder(rig, params["remove_nans"])
        self._queue.set_limit(int(params["max_queued_sets"]))
        ref = rig.sensors[self.assembler.sync_config.reference]
        rate = getattr(ref.sensor_model, "rate_hz", 0.0)
        self._period_s = 1.0 / rate if rate else None
        self.rig = rig

    def health_streams(self) -> dict[str, bool]:
        if self.rig is None:
            return {}
        return {s.name: s.required for s in self.rig.sensors.values()}

    # ------------------------------------------------------------------ activate
    def activate_node(self) -> None:
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

        assert self.rig is not None and self.params is not None
        assert self.assembler is not None
        self.assembler.reset()
        self._queue.clear()
        self._counts = dict.fromkeys(self._counts, 0)
        self._last_input = 0.0
        qos = sensor_qos(int(self.params["qos.sensor_depth"]),
                         reliable=bool(self.params["qos.reliable_inputs"]))
        for spec in self.rig.sensors.values():
            if spec.kind is SensorKind.CAMERA:
                msg_type = (CompressedImage if getattr(spec.sensor_model, "compressed", False)
                            else Image)
            elif spec.kind is SensorKind.ODOMETRY:
                msg_type = Odometry
            else:
                msg_type = PointCloud2
            self.subscribe(msg_type, f"~/input/{spec.name}",
                           functools.partial(self._on_sensor, spec.name), qos)
            if spec.kind is SensorKind.CAMERA and spec.camera_info_topic:
                # also with rig intrinsics (then the messages are only counted): a player
                # waiting for subscribers on every rig topic sees this one too
                self.subscribe(CameraInfo, f"~/input/{spec.name}/camera_info",
                               functools.partial(self._on_camera_info, spec.name), qos)
        self.every(float(self.params["poll_period_s"]), self._poll)
        self.every(IDLE_FLUSH_S / 4, self._flush_when_idle, steady=True)
        self.start_thread(functools.partial(self._queue.serve, handler=self._process_item),
                          "worker")

    def deactivate_node(self) -> None:
        self._queue.clear()

    def cleanup_node(self) -> None:
        self._queue.clear()
        self.assembler = self.decoder = self.rig = None

    # ------------------------------------------------------------------ input thread
    def _on_camera_info(self, sensor: str, msg: Any) -> None:
        if self.decoder is None:
            return  # a callback racing a deactivate
        try:
            self.decoder.camera_info(sensor, msg)
        except (ConversionError, ValueError) as exc:
            self.drop(sensor, "camera_info", str(exc))

    def _on_sensor(self, sensor: str, msg: Any) -> None:
        if self.decoder is None or self.assembler is None or self.health is None:
            return  # a callback racing a deactivate
        self.health.received(sensor)
        self._last_input = time.monotonic()
        try:
            value = self.decoder.decode(sensor, msg)
        except (ConversionError, ValueError, KeyError) as exc:
            self.drop(sensor, drop_reason(exc), str(exc))
            return
        if value is None:
            self.drop(sensor, "no_camera_info", "image before the first CameraInfo")
            return
        self._enqueue(self.assembler.add(sensor, value))

    def _poll(self) -> None:
        if self.assembler is None:
            return
        now = self.get_clock().now().nanoseconds
        if now > 0:
            self._enqueue(self.assembler.poll(now))

    def _flush_when_idle(self) -> None:
        # on the steady clock: under sim time the node clock stops with the bag
        if (self.assembler is not None and self._last_input and self.assembler.pending
                and time.monotonic() - self._last_input > IDLE_FLUSH_S):
            self._enqueue(self.assembler.flush())

    def _enqueue(self, sets: list[SensorSet]) -> None:
        if not sets:
            return
        assert self.assembler is not None
        odometry = self.assembler.odometry.snapshot()
        for sensor_set in sets:
            self._counts["partial" if sensor_set.missing else "complete"] += 1
            if sensor_set.missing:
                self.get_logger().warning(
                    f"partial set at {sensor_set.stamp_ns}: missing "
                    f"{list(sensor_set.missing)}", throttle_duration_sec=2.0)
        for old, _ in self._queue.put((s, odometry) for s in sets):
            self._counts["dropped"] += 1
            self.get_logger().warning(f"processing is behind: dropped the set at "
                                      f"{old.stamp_ns}", throttle_duration_sec=2.0)

    # ------------------------------------------------------------------ worker thread
    def _process_item(self, item: tuple[SensorSet, OdometryBuffer]) -> None:
        sensor_set, odometry = item
        if self.rig is None:
            return  # cleaned up under us
        t0 = time.perf_counter()
        try:
            self.process_set(sensor_set, odometry)
        except Exception as exc:  # a bad set must never kill the node: counted and logged
            self._counts["dropped"] += 1
            self.get_logger().error(f"set at {sensor_set.stamp_ns} failed ({exc!r}):\n"
                                    f"{traceback.format_exc()}", throttle_duration_sec=2.0)
            return
        processing_ms = (time.perf_counter() - t0) * 1e3
        latency_ms = self.report_timing(processing_ms, sensor_set.stamp_ns)
        self._last_times = (processing_ms, latency_ms)
        self._counts["processed"] += 1

    # ------------------------------------------------------------------ status
    def extra_statuses(self) -> list[Status]:
        c = self._counts
        values = (("sets_complete", str(c["complete"])), ("sets_partial", str(c["partial"])),
                  ("sets_dropped", str(c["dropped"])), ("sets_processed", str(c["processed"])),
                  ("queued", str(len(self._queue))), *self.sync_status_values())
        level = Level.WARN if c["dropped"] or c["partial"] else Level.OK
        message = (f"{c['partial']} partial, {c['dropped']} dropped of "
                   f"{c['complete'] + c['partial']} sets")
        return [Status(f"{self.get_name()}: sync", level, message, values)]


__all__ = ["IDLE_FLUSH_S", "OdometryInput", "SetInputNode", "load_live_rig", "resolve_path",
           "rig_sensor", "sync_with_overrides"]
