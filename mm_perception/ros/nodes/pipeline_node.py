"""The composed pipeline node: sync + data-level fusion + detectors + output-level fusion +
tracking in one process (one lifecycle node, parameters: ``config/schema/pipeline.schema.json``).

Inputs (remap them to the rig's topics; ``mm-perception run`` and the launch files do):
``~/input/<sensor>`` for every rig sensor (``Image`` or ``CompressedImage`` per the rig's
camera model, ``PointCloud2`` for LiDAR and radar, ``Odometry``) with sensor-data QoS, and
``~/input/<camera>/camera_info`` for cameras whose intrinsics come from ``CameraInfo``.

Outputs: ``~/output/objects`` (``mm_perception_msgs/DetectedObjectArray``, the primary list,
``output`` by default), ``~/output/objects/<list>`` (every other list, with
``publish.all_lists``), ``~/output/tracks`` (``TrackedObjectArray`` of the primary list),
``~/output/status`` (``FusionStatus``), ``~/debug/markers`` (``MarkerArray``),
``~/debug/overlay/<camera>`` (``Image``, with ``publish.overlay``), ``~/debug/depth/<camera>``
(``32FC1`` ``Image``, with ``publish.depth_images``), plus the base node's diagnostics and
timing topics.

Threads (the input side is :class:`~mm_perception.ros.nodes.set_input.SetInputNode`, shared
with the split ``sync`` node): input callbacks (one mutually exclusive callback group) only
decode messages and feed the :class:`~mm_perception.core.assembly.SetAssembler`; a timer
polls it with the node clock so that a silent sensor ends in a partial set after the sync
timeout. Completed sets go to a bounded queue that one worker thread drains through
:class:`~mm_perception.fusion.pipeline.PerceptionPipeline`: by default in a child process
(``worker_process``; :mod:`~mm_perception.ros.nodes.pipeline_process`), so that the chain
does not share the GIL with the input thread, which made it 2-3 times slower live. The worker
thread publishes the results. When the worker falls behind, the oldest waiting set is dropped
and counted (``sets_dropped``, ``max_queued_sets``): the outputs stay current rather than
falling further and further behind.
"""

from __future__ import annotations

from typing import Any

from mm_perception.core.ego_motion import OdometryBuffer
from mm_perception.core.errors import ConfigError
from mm_perception.core.types import SensorKind, SensorSet

# imported here, not on the first set: an import holds the GIL (and the import lock) for
# hundreds of milliseconds, which the input thread would wait out while sensor data queues up
from mm_perception.ros.convert_image import array_to_image
from mm_perception.ros.convert_objects import objects_to_msg, tracks_to_msg
from mm_perception.ros.markers import objects_to_markers, tracks_to_markers
from mm_perception.ros.message_factory import RclpyFactory
from mm_perception.ros.nodes.pipeline_config import pipeline_from_params
from mm_perception.ros.nodes.pipeline_process import PipelineProcess, warm_up
from mm_perception.ros.nodes.set_input import (
    SetInputNode,
    load_live_rig,
    resolve_path,
    sync_with_overrides,
)


class PipelineNode(SetInputNode):
    """The whole perception chain in one lifecycle node (see the module docstring)."""

    KIND = "pipeline"

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.pipeline: Any = None
        self._pubs: dict[str, Any] = {}
        self._last_result: Any = None
        self._primary = "output"

    # ------------------------------------------------------------------ configure
    def configure_node(self, params: dict[str, Any]) -> None:
        rig = load_live_rig(params["rig_file"])
        self._primary = params["primary_list"]
        if params["worker_process"]:
            # the chain in a child process, out of the executor thread's GIL
            self.pipeline = PipelineProcess(
                params, keep_debug=params["publish.overlay"] or params["publish.depth_images"])
            note = self.pipeline.warm_up_note
            # the classes of the results the child sends back (the warm-up sample brought
            # the rest; without it, the first results import them)
            import mm_perception.fusion.pipeline
        else:
            # the same construction as an offline run of this node (live_run.offline_objects)
            self.pipeline = pipeline_from_params(rig, params)
            note, _ = warm_up(self.pipeline, rig, params)
        if note:
            self.get_logger().warning(note)
        if params["publish.overlay"]:
            import mm_perception.eval.overlay  # noqa: F401  (cv2: seconds on the first set)
        self.configure_inputs(rig, params)
        self._make_publishers(params)
        self._warm_up_outputs()

    def _make_publishers(self, params: dict[str, Any]) -> None:
        from mm_perception.ros.msgs_env import msgs_import_error

        problem = msgs_import_error()
        if problem:
            raise ConfigError(f"mm_perception_msgs is not importable ({problem}); run "
                              f"scripts/setup.sh or source the workspace that built it")
        import mm_perception_msgs.msg as m
        from sensor_msgs.msg import Image
        from visualization_msgs.msg import MarkerArray

        depth = int(params["qos.output_depth"])
        assert self.pipeline is not None and self.rig is not None
        self._pubs = {"objects": self.publisher(m.DetectedObjectArray, "~/output/objects",
                                                depth),
                      "status": self.publisher(m.FusionStatus, "~/output/status", depth)}
        if self._primary in params["track_lists"]:
            self._pubs["tracks"] = self.publisher(m.TrackedObjectArray, "~/output/tracks",
                                                  depth)
        if params["publish.all_lists"]:
            for name in self.pipeline.lists:
                if name != self._primary:
                    self._pubs[f"objects/{name}"] = self.publisher(
                        m.DetectedObjectArray, f"~/output/objects/{name}", depth)
        if params["publish.markers"]:
            self._pubs["markers"] = self.publisher(MarkerArray, "~/debug/markers", depth)
        for cam in self.rig.of_kind(SensorKind.CAMERA):
            if params["publish.overlay"]:
                self._pubs[f"overlay/{cam.name}"] = self.publisher(
                    Image, f"~/debug/overlay/{cam.name}", 2)
            if params["publish.depth_images"]:
                self._pubs[f"depth/{cam.name}"] = self.publisher(
                    Image, f"~/debug/depth/{cam.name}", 2)

    def _warm_up_outputs(self) -> None:
        """Convert one made-up object and track to every output message type (nothing is
        published): the first conversions build the message classes' type support and cost
        some 15 ms more than later ones, which the first real set would otherwise pay in its
        latency (its live p99 at 100 sets)."""
        import numpy as np

        from mm_perception.core.types import Box3D, DetectedObject, ObjectClass, Track, TrackStatus

        assert self.rig is not None
        frame = self.rig.base_frame
        obj = DetectedObject(Box3D(np.array([10.0, 0.0, 0.8]), np.array([4.4, 1.8, 1.5]), 0.0,
                                   frame), ObjectClass.CAR, 0.9, class_probs={"car": 1.0},
                             velocity=np.zeros(3), covariance=np.eye(6), sources=("warm_up",))
        track = Track(0, obj, TrackStatus.CONFIRMED, age=3, hits=3)
        objects_to_msg([obj], 0, frame, self._primary)
        tracks_to_msg([track], 0, frame, 0.1, self._primary)
        objects_to_markers([obj], 0, frame)
        tracks_to_markers([track], 0, frame)

    def cleanup_node(self) -> None:
        super().cleanup_node()
        self._pubs = {}
        if isinstance(self.pipeline, PipelineProcess):
            self.pipeline.close()
        self.pipeline = None
        self._last_result = None

    # ------------------------------------------------------------------ worker thread
    def process_set(self, sensor_set: SensorSet, odometry: OdometryBuffer) -> None:
        """The whole chain on one set, then every enabled output."""
        pipeline = self.pipeline
        if pipeline is None:
            return
        result = pipeline.process(sensor_set, odometry)
        self._publish(result)
        self._last_result = result
        for note in result.notes:
            self.get_logger().info(note, throttle_duration_sec=10.0)

    def _publish(self, result: Any) -> None:

        assert self.rig is not None
        frame = self.rig.base_frame
        stamp = result.stamp_ns
        self._pubs["objects"].publish(objects_to_msg(result.objects.get(self._primary, []),
                                                     stamp, frame, self._primary))
        for key, pub in self._pubs.items():
            if key.startswith("objects/"):
                name = key.split("/", 1)[1]
                pub.publish(objects_to_msg(result.objects.get(name, []), stamp, frame, name))
        if "tracks" in self._pubs:
            self._pubs["tracks"].publish(tracks_to_msg(result.tracks.get(self._primary, []),
                                                       stamp, frame, self._period_s,
                                                       self._primary))
        self._publish_debug(result)

    def _publish_debug(self, result: Any) -> None:
        """Markers, overlays and depth images (only the ones enabled by parameters)."""

        assert self.rig is not None
        frame = self.rig.base_frame
        objects = result.objects.get(self._primary, [])
        tracks = result.tracks.get(self._primary)
        pub = self._pubs.get("markers")
        if pub is not None:

            batch = (tracks_to_markers(tracks, result.stamp_ns, frame) if tracks is not None
                     else objects_to_markers(objects, result.stamp_ns, frame))
            if batch.skipped and self.health is not None:
                self.health.count("markers_skipped_non_finite", batch.skipped)
            pub.publish(batch.array)
        for name, fused in result.data_level.cameras.items():
            spec = self.rig.sensors[name]
            pub = self._pubs.get(f"depth/{name}")
            if pub is not None:
                pub.publish(array_to_image(fused.depth, "32FC1", fused.stamp_ns,
                                           spec.frame_id, RclpyFactory()))
            pub = self._pubs.get(f"overlay/{name}")
            if pub is not None and fused.rgb is not None:
                pub.publish(array_to_image(self._overlay(name, fused, result), "rgb8",
                                           fused.stamp_ns, spec.frame_id, RclpyFactory()))

    def _overlay(self, name: str, fused: Any, result: Any) -> Any:
        """The camera image with LiDAR points, primary-list boxes (or tracks) and 2D
        detections drawn on it."""
        import numpy as np

        from mm_perception.eval.overlay import draw_overlay

        assert self.rig is not None
        spec = self.rig.sensors[name]
        assert spec.extrinsics is not None
        model = (self.decoder.camera_model(name) if self.decoder is not None
                 else spec.intrinsics)
        if model is None:
            raise ConfigError(f"camera {name!r}: no camera model for the overlay")
        points = []
        for lidar, painted in result.data_level.painted.items():
            extrinsics = self.rig.sensors[lidar].extrinsics
            if extrinsics is not None:
                xyz = np.stack([painted["x"], painted["y"], painted["z"]], axis=1)
                points.append(extrinsics.apply(xyz.astype(np.float64)))
        tracks = result.tracks.get(self._primary)
        return draw_overlay(fused.rgb, model, spec.extrinsics.inverse(),
                            np.concatenate(points) if points else None,
                            objects=() if tracks is not None
                            else result.objects.get(self._primary, []),
                            tracks=tracks, detections_2d=result.camera_2d.get(name))

    # ------------------------------------------------------------------ status
    def sync_status_values(self) -> tuple[tuple[str, str], ...]:
        return (("inference_backend", self._backend),)

    @property
    def _backend(self) -> str:
        """The model backend in use ("" without a model: the camera detector is the only
        one, on torch)."""
        return "torch" if self.params and self.params["use_cameras"] else ""

    def publish_status(self) -> None:
        """``~/output/status`` (``FusionStatus``), on the diagnostics period."""
        import mm_perception_msgs.msg as m

        pub = self._pubs.get("status")
        if pub is None or self.health is None:
            return
        msg = m.FusionStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        for name in self.health.streams:
            age = self.health.age_s(name)
            stale = self.health.stale(name)
            msg.sensors.append(m.SensorStatus(
                name=name, rate_hz=float(self.health.rate_hz(name)),
                staleness_s=float(age if age is not None else -1.0), ok=not stale,
                message=("" if not stale else "no data yet" if age is None
                         else f"stale for {age:.2f} s")))
        msg.sets_complete = self._counts["complete"]
        msg.sets_partial = self._counts["partial"]
        msg.sets_dropped = self._counts["dropped"]
        msg.inference_backend = self._backend
        msg.processing_time_ms = float(self._last_times[0])
        msg.latency_ms = float(self._last_times[1])
        pub.publish(msg)


def main(args: list[str] | None = None) -> None:
    """Console entry point: run one pipeline node, configured and activated, until Ctrl-C."""
    from mm_perception.ros.nodes.launcher import run_single_node

    run_single_node(PipelineNode, args)


__all__ = ["PipelineNode", "main", "resolve_path", "sync_with_overrides"]
