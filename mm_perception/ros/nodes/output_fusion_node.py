"""Split ``output_fusion`` node: output-level fusion of the per-sensor object lists of one
sensor set (parameters: ``config/schema/output_fusion.schema.json``).

Inputs: ``~/input/objects/<sensor>`` (``mm_perception_msgs/DetectedObjectArray``, reliable,
``qos.input_depth``) for every object-producing rig sensor in ``sensors`` (default: every
LiDAR, radar and camera of the rig), e.g. the detector nodes' ``~/output/objects``; and
``~/input/odom`` (``nav_msgs/Odometry``, sensor-data QoS).

Grouping: the per-sensor arrays are matched into sets by the same
:class:`~mm_perception.core.sync.SyncCollector` the ``sync`` node uses, on the arrays'
``header.stamp`` (already on the common clock: no time offsets are applied here). Each array
of the reference sensor (``sync.reference``; default the rig's sync reference) opens a set at
its stamp; every other sensor contributes its array nearest in stamp within ``sync.window_s``
(default: the rig's window). A set is fused as soon as every sensor is resolved (its array is
there and no closer one can come, or it is definitely missing). When a required sensor's
array has not arrived ``sync.timeout_s`` after the set's stamp (node clock, polled every
``poll_period_s``; also pushed forward by newer arrays), the set is fused **partial** with
what is there, counted in ``sets_partial`` and logged. Rig sensors marked ``required: false``
are optional: included when present, never waited for beyond the window, never making a set
partial.

Per set: each array is moved from its stamp to the set's stamp
(:func:`~mm_perception.fusion.pipeline.to_set_stamp`: ego motion from the odometry, object
motion from their velocity), then :meth:`OutputLevelFusion.fuse` with every sensor's field of
view (:func:`~mm_perception.fusion.pipeline.sensor_coverage`), as
:class:`~mm_perception.fusion.pipeline.PerceptionPipeline` builds its ``output`` list.
Output: ``~/output/objects`` (``DetectedObjectArray``, ``fusion_level`` ``output``, base
frame, header stamp = the set's stamp).
"""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from typing import Any

from mm_perception.core.errors import ConfigError, ConversionError
from mm_perception.core.sync import MatchedSet, SyncCollector, SyncConfig
from mm_perception.core.types import DetectedObject
from mm_perception.ros.nodes.base import ManagedNode, sensor_qos
from mm_perception.ros.nodes.health import Level, Status
from mm_perception.ros.nodes.set_input import OdometryInput, load_live_rig
from mm_perception.ros.sensor_decoder import drop_reason

ObjectList = list[DetectedObject]


class OutputFusionNode(ManagedNode):
    """Per-sensor object lists of one set -> one fused list (see the module docstring)."""

    KIND = "output_fusion"

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.rig: Any = None
        self.sync_config: SyncConfig | None = None
        self.fusion: Any = None
        self.collector: SyncCollector[ObjectList] | None = None
        self.odometry: OdometryInput | None = None
        self._coverage: dict[str, Any] = {}
        self._pub: Any = None
        self._counts = {"complete": 0, "partial": 0, "fused": 0, "failed": 0}

    # ------------------------------------------------------------------ configure
    def configure_node(self, params: dict[str, Any]) -> None:
        import mm_perception_msgs.msg as m

        from mm_perception.core.assembly import sync_config_for_rig
        from mm_perception.fusion.output_level import OutputLevelConfig, OutputLevelFusion
        from mm_perception.fusion.pipeline import object_sensor_kinds, sensor_coverage

        rig = load_live_rig(params["rig_file"])
        kinds = object_sensor_kinds(rig)
        sensors = list(params["sensors"]) or list(kinds)
        bad = [s for s in sensors if s not in kinds]
        if bad:
            raise ConfigError(f"parameter 'sensors' = {sensors}: {bad} are not LiDAR, radar or "
                              f"camera sensors of rig {rig.source} (those are {list(kinds)})")
        if not sensors:
            raise ConfigError(f"parameter 'sensors': rig {rig.source} has no object-producing "
                              f"sensor")
        base = sync_config_for_rig(rig)
        reference = params["sync.reference"] or (base.reference if base.reference in sensors
                                                 else sensors[0])
        if reference not in sensors:
            raise ConfigError(f"parameter 'sync.reference' = {reference!r} is not one of the "
                              f"fused sensors {sensors}")
        window_ns = (round(params["sync.window_s"] * 1e9) if params["sync.window_s"] > 0
                     else base.window_ns)
        timeout_ns = round(params["sync.timeout_s"] * 1e9)
        if timeout_ns < window_ns:
            raise ConfigError(f"parameter 'sync.timeout_s' = {params['sync.timeout_s']} is "
                              f"shorter than the window ({window_ns * 1e-9} s)")
        optional = tuple(s for s in sensors
                         if not rig.sensors[s].required and s != reference)
        self.sync_config = SyncConfig(
            reference=reference, sensors=tuple(sensors), window_ns=window_ns,
            timeout_ns=timeout_ns, on_timeout="emit_partial", optional=optional,
            reset_threshold_ns=max(1_000_000_000, timeout_ns + 1))
        self.fusion = OutputLevelFusion(replace(OutputLevelConfig(), sensor_kinds=kinds))
        self._coverage = {s.name: fn for s in rig.sensors.values()
                          if (fn := sensor_coverage(s)) is not None}
        self.rig = rig
        self._pub = self.publisher(m.DetectedObjectArray, "~/output/objects",
                                   int(params["qos.output_depth"]))

    def health_streams(self) -> dict[str, bool]:
        if self.rig is None or self.sync_config is None:
            return {}
        streams = {s: (s not in self.sync_config.optional) for s in self.sync_config.sensors}
        streams["odom"] = False
        return streams

    # ------------------------------------------------------------------ activate
    def activate_node(self) -> None:
        import mm_perception_msgs.msg as m
        from nav_msgs.msg import Odometry

        assert self.params is not None and self.sync_config is not None
        self.collector = SyncCollector(self.sync_config)
        self.odometry = OdometryInput(self.rig, self.drop)
        self._counts = dict.fromkeys(self._counts, 0)
        depth = int(self.params["qos.input_depth"])
        for sensor in self.sync_config.sensors:
            self.subscribe(m.DetectedObjectArray, f"~/input/objects/{sensor}",
                           functools.partial(self._on_objects, sensor), depth)
        self.subscribe(Odometry, "~/input/odom", self._on_odom,
                       sensor_qos(int(self.params["qos.sensor_depth"])))
        self.every(float(self.params["poll_period_s"]), self._poll)

    def deactivate_node(self) -> None:
        self.collector = None

    def cleanup_node(self) -> None:
        self.collector = self.odometry = self.fusion = self.rig = self.sync_config = None
        self._pub = None
        self._coverage = {}

    # ------------------------------------------------------------------ callbacks
    def _on_odom(self, msg: Any) -> None:
        if self.odometry is not None:
            self.odometry.add(msg, self.health)

    def _on_objects(self, sensor: str, msg: Any) -> None:
        from mm_perception.ros.convert_objects import objects_from_msg
        from mm_perception.ros.message_factory import stamp_to_ns

        if self.collector is None or self.health is None or self.rig is None:
            return  # a callback racing a deactivate
        self.health.received(sensor)
        frame = str(msg.header.frame_id)
        if frame != self.rig.base_frame:
            self.drop(sensor, "frame", f"objects in {frame!r}, expected the rig's base "
                                        f"frame {self.rig.base_frame!r}")
            return
        try:
            objects = objects_from_msg(msg)
            stamp = stamp_to_ns(msg.header.stamp)
        except (ConversionError, ValueError) as exc:
            self.drop(sensor, drop_reason(exc), str(exc))
            return
        self._fuse(self.collector.add(sensor, stamp, objects))

    def _poll(self) -> None:
        if self.collector is None:
            return
        now = self.get_clock().now().nanoseconds
        if now > 0:
            self._fuse(self.collector.poll(now))

    # ------------------------------------------------------------------ fusion
    def fuse_set(self, matched: MatchedSet[ObjectList]) -> tuple[ObjectList, list[str]]:
        """The fused list of one matched set (every list moved to the set stamp first) and
        notes on what was degraded. Pure apart from reading the odometry."""
        from mm_perception.fusion.pipeline import to_set_stamp

        assert self.fusion is not None and self.odometry is not None
        notes: list[str] = []
        odometry = self.odometry.buffer
        lists = {name: to_set_stamp(objs, stamp, matched.stamp_ns, odometry, notes,
                                    f"objects of {name!r}")
                 for name, (stamp, objs) in matched.items.items()}
        fused: ObjectList = self.fusion.fuse(lists, matched.stamp_ns, coverage=self._coverage)
        return fused, notes

    def _fuse(self, sets: list[MatchedSet[ObjectList]]) -> None:
        from mm_perception.ros.convert_objects import objects_to_msg

        for matched in sets:
            if self.rig is None or self._pub is None:
                return
            t0 = time.perf_counter()
            self._counts["partial" if matched.partial else "complete"] += 1
            if matched.partial:
                self.get_logger().warning(f"partial fusion at {matched.stamp_ns}: missing "
                                          f"{list(matched.missing)}", throttle_duration_sec=2.0)
            try:
                fused, notes = self.fuse_set(matched)
                msg = objects_to_msg(fused, matched.stamp_ns, self.rig.base_frame, "output")
            except Exception as exc:  # never die on one set: counted and logged
                self._counts["failed"] += 1
                self.get_logger().error(f"fusion of the set at {matched.stamp_ns} failed: "
                                        f"{exc!r}", throttle_duration_sec=2.0)
                continue
            for note in notes:
                self.get_logger().info(note, throttle_duration_sec=10.0)
            self._pub.publish(msg)
            self._counts["fused"] += 1
            self.report_timing((time.perf_counter() - t0) * 1e3, matched.stamp_ns)

    # ------------------------------------------------------------------ status
    def extra_statuses(self) -> list[Status]:
        c = self._counts
        values = [("sets_complete", str(c["complete"])), ("sets_partial", str(c["partial"])),
                  ("sets_fused", str(c["fused"])), ("sets_failed", str(c["failed"]))]
        if self.collector is not None:
            values += [(f"sync.{k}", str(v)) for k, v in
                       sorted(self.collector.stats.as_dict().items())]
        level = Level.WARN if c["partial"] or c["failed"] else Level.OK
        message = (f"{c['partial']} partial, {c['failed']} failed of "
                   f"{c['complete'] + c['partial']} sets")
        return [Status(f"{self.get_name()}: sets", level, message, tuple(values))]


def main(args: list[str] | None = None) -> None:
    """Console entry point: run one output_fusion node, configured and activated, until
    Ctrl-C."""
    from mm_perception.ros.nodes.launcher import run_single_node

    run_single_node(OutputFusionNode, args)


__all__ = ["OutputFusionNode", "main"]
