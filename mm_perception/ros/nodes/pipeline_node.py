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

Threads: input callbacks (one mutually exclusive callback group) only decode messages and
feed the :class:`~mm_perception.core.assembly.SetAssembler`; a timer polls it with the node
clock so that a silent sensor ends in a partial set after the sync timeout. Completed sets go
to a bounded queue that one worker thread drains through
:class:`~mm_perception.fusion.pipeline.PerceptionPipeline`. When the worker falls behind, the
oldest waiting set is dropped and counted (``sets_dropped``): the outputs stay current rather
than falling further and further behind.
"""

from __future__ import annotations

import functools
import threading
import time
import traceback
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

from mm_perception.core.assembly import SetAssembler, sync_config_for_rig
from mm_perception.core.calibration import Rig
from mm_perception.core.errors import ConfigError, ConversionError
from mm_perception.core.sync import SyncConfig
from mm_perception.core.types import SensorKind, SensorSet
from mm_perception.ros.nodes.base import ManagedNode, sensor_qos
from mm_perception.ros.nodes.health import Level, Status
from mm_perception.ros.params import config_dir
from mm_perception.ros.sensor_decoder import SensorDecoder, drop_reason


def resolve_path(value: str) -> Path:
    """A config path as given (absolute or relative to the working directory), else relative
    to the mm_perception config directory (so ``rigs/car.yaml`` works from anywhere)."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return config_dir() / path


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


class PipelineNode(ManagedNode):
    """The whole perception chain in one lifecycle node (see the module docstring)."""

    KIND = "pipeline"

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.rig: Rig | None = None
        self.pipeline: Any = None
        self.assembler: SetAssembler | None = None
        self.decoder: SensorDecoder | None = None
        self._pubs: dict[str, Any] = {}
        self._queue: deque[tuple[SensorSet, Any]] = deque()
        self._wake = threading.Condition()
        self._last_result: Any = None
        self._last_times: tuple[float, float] = (0.0, 0.0)
        self._counts = {"complete": 0, "partial": 0, "dropped": 0, "processed": 0}
        self._primary = "output"
        self._period_s: float | None = None

    # ------------------------------------------------------------------ configure
    def configure_node(self, params: dict[str, Any]) -> None:
        from mm_perception.fusion.pipeline import PerceptionPipeline, PipelineConfig
        from mm_perception.tracking.tracker import TrackerConfig

        rig = Rig.from_yaml(resolve_path(params["rig_file"]))
        unresolved = rig.unresolved_extrinsics()
        if unresolved:
            raise ConfigError(f"rig {rig.source}: sensors {unresolved} take their extrinsics "
                              f"from tf; give them in the rig file for a live graph")
        lists = tuple(params["lists"])
        track_lists = tuple(params["track_lists"])
        cfg = PipelineConfig(
            lists=lists, track_lists=track_lists, use_cameras=params["use_cameras"],
            camera_weights=params["camera_weights_dir"] or None,
            tracking_frame=params["tracking_frame"],
            tracker=replace(TrackerConfig(), confirm_hits=params["tracker.confirm_hits"],
                            max_coast_s=params["tracker.max_coast_s"]))
        pipeline = PerceptionPipeline(rig, cfg)
        cameras = rig.of_kind(SensorKind.CAMERA)
        if params["use_cameras"] and cameras:
            # load the weights and run once now: the first inference (allocator, kernels)
            # takes over a second, which would otherwise be the first frame's latency
            import numpy as np

            size = cameras[0].intrinsics
            shape = (size.height, size.width, 3) if size is not None else (480, 640, 3)
            pipeline.camera_detector().detect(np.zeros(shape, np.uint8))
        self._primary = params["primary_list"]
        if self._primary not in pipeline.lists:
            raise ConfigError(f"parameter 'primary_list' = {self._primary!r} is not produced "
                              f"with this rig and 'lists' (produced: {list(pipeline.lists)})")
        self.rig = rig
        self.pipeline = pipeline
        self.assembler = SetAssembler(rig, sync_with_overrides(rig, params),
                                      params["deskew_lidar"])
        self.decoder = SensorDecoder(rig, params["remove_nans"])
        ref = rig.sensors[self.assembler.sync_config.reference]
        rate = getattr(ref.sensor_model, "rate_hz", 0.0)
        self._period_s = 1.0 / rate if rate else None
        self._make_publishers(params)

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
        if self._primary in self.pipeline.config.track_lists:
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
        self.start_thread(self._work, "worker")

    def deactivate_node(self) -> None:
        self._queue.clear()

    def cleanup_node(self) -> None:
        self._queue.clear()
        self._pubs = {}
        self.pipeline = self.assembler = self.decoder = self.rig = None
        self._last_result = None

    # ------------------------------------------------------------------ input thread
    def _on_camera_info(self, sensor: str, msg: Any) -> None:
        assert self.decoder is not None
        try:
            self.decoder.camera_info(sensor, msg)
        except (ConversionError, ValueError) as exc:
            self._drop(sensor, "camera_info", str(exc))

    def _on_sensor(self, sensor: str, msg: Any) -> None:
        if self.decoder is None or self.assembler is None or self.health is None:
            return  # a callback racing a deactivate
        self.health.received(sensor)
        try:
            value = self.decoder.decode(sensor, msg)
        except (ConversionError, ValueError, KeyError) as exc:
            self._drop(sensor, drop_reason(exc), str(exc))
            return
        if value is None:
            self._drop(sensor, "no_camera_info", "image before the first CameraInfo")
            return
        self._enqueue(self.assembler.add(sensor, value))

    def _poll(self) -> None:
        if self.assembler is None:
            return
        now = self.get_clock().now().nanoseconds
        if now > 0:
            self._enqueue(self.assembler.poll(now))

    def _drop(self, sensor: str, reason: str, detail: str) -> None:
        if self.health is not None:
            self.health.dropped(sensor, reason)
        self.get_logger().warning(f"dropped {sensor} message ({reason}): {detail}",
                               throttle_duration_sec=5.0)

    def _enqueue(self, sets: list[SensorSet]) -> None:
        if not sets:
            return
        assert self.assembler is not None and self.params is not None
        odometry = self.assembler.odometry.snapshot()
        limit = int(self.params["max_queued_sets"])
        with self._wake:
            for sensor_set in sets:
                self._counts["partial" if sensor_set.missing else "complete"] += 1
                if sensor_set.missing:
                    self.get_logger().warning(
                        f"partial set at {sensor_set.stamp_ns}: missing "
                        f"{list(sensor_set.missing)}", throttle_duration_sec=2.0)
                self._queue.append((sensor_set, odometry))
                while len(self._queue) > limit:
                    old, _ = self._queue.popleft()
                    self._counts["dropped"] += 1
                    self.get_logger().warning(f"processing is behind: dropped the set at "
                                           f"{old.stamp_ns}", throttle_duration_sec=2.0)
            self._wake.notify()

    # ------------------------------------------------------------------ worker thread
    def _work(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._wake:
                if not self._queue:
                    self._wake.wait(timeout=0.1)
                if not self._queue:
                    continue
                sensor_set, odometry = self._queue.popleft()
            self._process(sensor_set, odometry)

    def _process(self, sensor_set: SensorSet, odometry: Any) -> None:
        pipeline = self.pipeline
        if pipeline is None:
            return
        t0 = time.perf_counter()
        try:
            result = pipeline.process(sensor_set, odometry)
        except Exception as exc:  # a bad set must never kill the node: counted and logged
            self._counts["dropped"] += 1
            self.get_logger().error(f"set at {sensor_set.stamp_ns} failed ({exc!r}):\n"
                                    f"{traceback.format_exc()}", throttle_duration_sec=2.0)
            return
        self._publish(result)
        processing_ms = (time.perf_counter() - t0) * 1e3
        latency_ms = self.report_timing(processing_ms, sensor_set.stamp_ns)
        self._last_times = (processing_ms, latency_ms)
        self._counts["processed"] += 1
        self._last_result = result
        for note in result.notes:
            self.get_logger().info(note, throttle_duration_sec=10.0)

    def _publish(self, result: Any) -> None:
        from mm_perception.ros.convert_objects import objects_to_msg, tracks_to_msg

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
        from mm_perception.ros.convert_image import array_to_image
        from mm_perception.ros.message_factory import RclpyFactory

        assert self.rig is not None
        frame = self.rig.base_frame
        objects = result.objects.get(self._primary, [])
        tracks = result.tracks.get(self._primary)
        pub = self._pubs.get("markers")
        if pub is not None:
            from mm_perception.ros.markers import objects_to_markers, tracks_to_markers

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
    def extra_statuses(self) -> list[Status]:
        c = self._counts
        values = (("sets_complete", str(c["complete"])), ("sets_partial", str(c["partial"])),
                  ("sets_dropped", str(c["dropped"])), ("sets_processed", str(c["processed"])),
                  ("queued", str(len(self._queue))),
                  ("inference_backend", self._backend))
        level = Level.WARN if c["dropped"] or c["partial"] else Level.OK
        message = (f"{c['partial']} partial, {c['dropped']} dropped of "
                   f"{c['complete'] + c['partial']} sets")
        return [Status(f"{self.get_name()}: sync", level, message, values)]

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
