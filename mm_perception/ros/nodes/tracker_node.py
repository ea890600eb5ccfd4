"""Split ``tracker`` node: multi-object tracking of one object list (parameters:
``config/schema/tracker.schema.json``).

Inputs: ``~/input/objects`` (``mm_perception_msgs/DetectedObjectArray`` in the rig's base
frame, reliable, ``qos.input_depth``; e.g. the ``output_fusion`` node's ``~/output/objects``)
and ``~/input/odom`` (``nav_msgs/Odometry``, sensor-data QoS).

Per array: the composed pipeline's tracking step
(:func:`~mm_perception.fusion.pipeline.world_pose` and
:func:`~mm_perception.fusion.pipeline.track_step`): the objects are moved into the world-fixed
``tracking_frame`` with the odometry pose at the array's stamp, the
:class:`~mm_perception.tracking.tracker.MultiObjectTracker` is updated there, and the live
tracks are given back in the base frame at that stamp. Without any odometry the tracker runs
in the base frame; when odometry is there but does not cover the stamp, the array is not
tracked (an empty track list is published and the reason logged). An array whose stamp is not
newer than the previous one is dropped (``out_of_order``).

Outputs: ``~/output/tracks`` (``TrackedObjectArray``: every live track, base frame, header
stamp = the input's, ``age_s`` from the rig's sync reference period, ``fusion_level`` copied
from the input) and ``~/debug/markers`` (``MarkerArray``, with ``publish.markers``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from mm_perception.core.errors import ConversionError
from mm_perception.core.types import DetectedObject, Track
from mm_perception.ros.nodes.base import ManagedNode, sensor_qos
from mm_perception.ros.nodes.health import Level, Status
from mm_perception.ros.nodes.set_input import OdometryInput, load_live_rig
from mm_perception.ros.sensor_decoder import drop_reason


class TrackerNode(ManagedNode):
    """Object arrays + odometry -> tracks (see the module docstring)."""

    KIND = "tracker"

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.rig: Any = None
        self.tracker: Any = None
        self.odometry: OdometryInput | None = None
        self._pubs: dict[str, Any] = {}
        self._period_s: float | None = None
        self._last_stamp: int | None = None
        self._counts = {"tracked": 0, "untracked": 0}

    def configure_node(self, params: dict[str, Any]) -> None:
        import mm_perception_msgs.msg as m
        from visualization_msgs.msg import MarkerArray

        from mm_perception.core.assembly import sync_config_for_rig
        from mm_perception.tracking.tracker import MultiObjectTracker, TrackerConfig

        rig = load_live_rig(params["rig_file"])
        self.tracker = MultiObjectTracker(replace(
            TrackerConfig(), confirm_hits=params["tracker.confirm_hits"],
            max_coast_s=params["tracker.max_coast_s"]))
        ref = rig.sensors[sync_config_for_rig(rig).reference]
        rate = getattr(ref.sensor_model, "rate_hz", 0.0)
        self._period_s = 1.0 / rate if rate else None
        self.rig = rig
        depth = int(params["qos.output_depth"])
        self._pubs = {"tracks": self.publisher(m.TrackedObjectArray, "~/output/tracks", depth)}
        if params["publish.markers"]:
            self._pubs["markers"] = self.publisher(MarkerArray, "~/debug/markers", depth)

    def health_streams(self) -> dict[str, bool]:
        return {"objects": True, "odom": False}

    def activate_node(self) -> None:
        import mm_perception_msgs.msg as m
        from nav_msgs.msg import Odometry

        assert self.params is not None and self.tracker is not None
        self.tracker.reset()
        self._last_stamp = None
        self._counts = dict.fromkeys(self._counts, 0)
        self.odometry = OdometryInput(self.rig, self.drop)
        self.subscribe(m.DetectedObjectArray, "~/input/objects", self._on_objects,
                       int(self.params["qos.input_depth"]))
        self.subscribe(Odometry, "~/input/odom", self._on_odom,
                       sensor_qos(int(self.params["qos.sensor_depth"])))

    def deactivate_node(self) -> None:
        self.odometry = None

    def cleanup_node(self) -> None:
        self.tracker = self.rig = self.odometry = None
        self._pubs = {}

    # ------------------------------------------------------------------ callbacks
    def _on_odom(self, msg: Any) -> None:
        if self.odometry is not None:
            self.odometry.add(msg, self.health)

    def track(self, objects: list[DetectedObject], stamp_ns: int) -> tuple[list[Track],
                                                                          list[str]]:
        """One tracker update (the composed pipeline's step 5); returns the live tracks in
        the base frame at ``stamp_ns`` and notes on what was degraded."""
        from mm_perception.fusion.pipeline import ego_at, track_step, world_pose

        assert self.tracker is not None and self.params is not None
        notes: list[str] = []
        odometry = self.odometry.buffer if self.odometry is not None else None
        ego = ego_at(stamp_ns, odometry)
        T_world_base, pose_failed = world_pose(stamp_ns, odometry, ego, notes)
        tracks = track_step(self.tracker, objects, stamp_ns, T_world_base, pose_failed,
                            str(self.params["tracking_frame"]))
        self._counts["untracked" if pose_failed else "tracked"] += 1
        return tracks, notes

    def _on_objects(self, msg: Any) -> None:
        from mm_perception.ros.convert_objects import objects_from_msg, tracks_to_msg
        from mm_perception.ros.message_factory import stamp_to_ns

        if self.health is None or self.tracker is None or self.rig is None:
            return  # a callback racing a deactivate
        self.health.received("objects")
        t0 = time.perf_counter()
        frame = str(msg.header.frame_id)
        if frame != self.rig.base_frame:
            self.drop("objects", "frame", f"objects in {frame!r}, expected the rig's base "
                                           f"frame {self.rig.base_frame!r}")
            return
        try:
            objects = objects_from_msg(msg)
            stamp = stamp_to_ns(msg.header.stamp)
        except (ConversionError, ValueError) as exc:
            self.drop("objects", drop_reason(exc), str(exc))
            return
        if self._last_stamp is not None and stamp <= self._last_stamp:
            self.drop("objects", "out_of_order", f"stamp {stamp} is not after the previous "
                                                  f"{self._last_stamp}")
            return
        try:
            tracks, notes = self.track(objects, stamp)
            out = tracks_to_msg(tracks, stamp, self.rig.base_frame, self._period_s,
                                str(msg.fusion_level))
        except (ConversionError, ValueError) as exc:  # e.g. non-finite objects
            self.drop("objects", drop_reason(exc), str(exc))
            return
        self._last_stamp = stamp
        for note in notes:
            self.get_logger().warning(note, throttle_duration_sec=5.0)
        self._pubs["tracks"].publish(out)
        pub = self._pubs.get("markers")
        if pub is not None:
            from mm_perception.ros.markers import tracks_to_markers

            batch = tracks_to_markers(tracks, stamp, self.rig.base_frame)
            if batch.skipped:
                self.health.count("markers_skipped_non_finite", batch.skipped)
            pub.publish(batch.array)
        self.report_timing((time.perf_counter() - t0) * 1e3, stamp)

    def extra_statuses(self) -> list[Status]:
        c = self._counts
        level = Level.WARN if c["untracked"] else Level.OK
        return [Status(f"{self.get_name()}: tracking", level,
                       f"{c['tracked']} frames tracked, {c['untracked']} without an ego pose",
                       tuple((k, str(v)) for k, v in c.items()))]


def main(args: list[str] | None = None) -> None:
    """Console entry point: run one tracker node, configured and activated, until Ctrl-C."""
    from mm_perception.ros.nodes.launcher import run_single_node

    run_single_node(TrackerNode, args)


__all__ = ["TrackerNode", "main"]
