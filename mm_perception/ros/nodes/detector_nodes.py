"""Split per-sensor detector nodes: one rig sensor's data in, its objects out.

Every node has a parameter ``sensor`` (a rig sensor of the node's kind: extrinsics,
intrinsics and field names come from ``rig_file``) and publishes ``~/output/objects``
(``mm_perception_msgs/DetectedObjectArray``, reliable): objects in the rig's base frame,
``header.stamp`` = the input message's stamp, ``fusion_level`` = the modality
(``lidar`` / ``radar`` / ``camera``), each object's ``sources`` = the sensor name. The
detectors are exactly the composed pipeline's calls
(:class:`~mm_perception.fusion.pipeline.PerceptionPipeline` step 3):

* ``lidar_detector`` (:class:`LidarDetectorNode`): ``~/input/points`` (``PointCloud2``) ->
  :class:`~mm_perception.detection.lidar.LidarDetector` (``sensor_xy_m`` from the rig) on the
  cloud's ``x, y, z`` moved to ``base_link``. The cloud's ``x, y, z`` are read through the
  rig's field map, or under their canonical names when the message has those (the ``sync``
  node's ``~/output/<lidar>``).
* ``radar_detector`` (:class:`RadarDetectorNode`): ``~/input/points`` (``PointCloud2`` with the
  rig's radar field names) + ``~/input/odom`` (``Odometry``) ->
  :meth:`~mm_perception.detection.radar.RadarDetector.detect` with the ego state at the scan
  stamp (Doppler ego compensation). A scan newer than the odometry waits up to
  ``odom_wait_s`` for it, then is dropped (``no_ego``).
* ``camera_detector`` (:class:`CameraDetectorNode`): ``~/input/image`` (``Image``, or
  ``CompressedImage`` with ``compressed_input``) + ``~/input/camera_info`` (used when the rig
  has no intrinsics for the camera) + ``~/input/depth`` (``32FC1``, the ``sync`` node's
  ``~/output/depth/<camera>``, with ``use_depth``) ->
  :class:`~mm_perception.detection.camera.detector.CameraDetector` and
  :func:`~mm_perception.detection.camera.lift.lift_detections` (with the depth image of the
  same stamp when it arrives within ``depth_wait_s``; else without, counted ``no_depth``).

Stamps are used as they arrive: the ``sync`` node's outputs are on the common clock (rig time
offsets applied); raw driver topics fed directly are taken as they are (the rig's time
offsets are not applied here).

Inputs are decoded in the callback (a bad message is dropped with a reason and counted per
input); detection runs in one worker thread behind a bounded queue (``max_queued_msgs``; the
oldest waiting message is dropped and counted when it falls behind). A detector error drops
that message (``failed``, logged with its traceback), never the node.
"""

from __future__ import annotations

import functools
import threading
import time
import traceback
from abc import ABCMeta, abstractmethod
from typing import Any, ClassVar

import numpy as np

from mm_perception.core.errors import ConfigError, ConversionError
from mm_perception.core.types import CameraFrame, DetectedObject, RadarScan, SensorKind
from mm_perception.ros.nodes.base import ManagedNode, sensor_qos
from mm_perception.ros.nodes.health import Level, Status
from mm_perception.ros.nodes.set_input import OdometryInput, load_live_rig, rig_sensor
from mm_perception.ros.nodes.work_queue import WorkQueue
from mm_perception.ros.sensor_decoder import SensorDecoder, drop_reason

#: one unit of detector work: (input stamp ns, decoded input)
WorkItem = tuple[int, Any]

_COLOUR = ("rgb8", "bgr8", "rgba8", "bgra8")


class InputDropped(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by :meth:`DetectorNode.detect` for an input that cannot be used (no ego state,
    no intrinsics): it is dropped with ``reason`` on input ``stream`` and nothing is
    published (an empty list would claim the sensor looked and saw nothing)."""

    def __init__(self, stream: str, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.stream, self.reason = stream, reason


class DetectorNode(ManagedNode, metaclass=ABCMeta):
    """Shared life cycle of the per-sensor detector nodes (see the module docstring).

    Subclasses set :attr:`SENSOR_KIND` and :attr:`MODALITY` and implement
    :meth:`build` (core components, at configure), :meth:`subscribe_inputs` (at activate),
    :meth:`detect` (worker thread) and :meth:`health_streams`.
    """

    SENSOR_KIND: ClassVar[SensorKind] = SensorKind.LIDAR
    MODALITY: ClassVar[str] = ""

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.rig: Any = None
        self.spec: Any = None
        self._pub: Any = None
        self.detector: Any = None
        self.decoder: Any = None
        self._queue: WorkQueue[WorkItem] = WorkQueue()
        self._counts = {"processed": 0, "dropped_behind": 0, "failed": 0}

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def build(self, params: dict[str, Any]) -> None:
        """Create the core components (detector, decoder) for :attr:`spec`."""

    @abstractmethod
    def subscribe_inputs(self, qos: Any) -> None:
        """Create the input subscriptions (with :meth:`ManagedNode.subscribe`)."""

    @abstractmethod
    def detect(self, item: Any) -> list[DetectedObject]:
        """The objects of one decoded input (``base_link``). Raising drops it (``failed``)."""

    def release(self) -> None:
        """Drop the core components (cleanup)."""

    # ------------------------------------------------------------------ life cycle
    def configure_node(self, params: dict[str, Any]) -> None:
        import mm_perception_msgs.msg as m

        rig = load_live_rig(params["rig_file"])
        spec = rig_sensor(rig, params["sensor"], (self.SENSOR_KIND,))
        if spec.extrinsics is None:
            raise ConfigError(f"parameter 'sensor' = {spec.name!r}: no extrinsics in the rig")
        self.rig, self.spec = rig, spec
        self._queue.set_limit(int(params["max_queued_msgs"]))
        self.build(params)
        self._pub = self.publisher(m.DetectedObjectArray, "~/output/objects",
                                   int(params["qos.output_depth"]))

    def activate_node(self) -> None:
        assert self.params is not None
        self._queue.clear()
        self._counts = dict.fromkeys(self._counts, 0)
        self.subscribe_inputs(sensor_qos(int(self.params["qos.sensor_depth"]),
                                         reliable=bool(self.params["qos.reliable_inputs"])))
        self.start_thread(functools.partial(self._queue.serve, handler=self._work), "worker")

    def deactivate_node(self) -> None:
        self._queue.clear()

    def cleanup_node(self) -> None:
        self._queue.clear()
        self.release()
        self.rig = self.spec = self._pub = None

    # ------------------------------------------------------------------ helpers
    def _submit(self, stamp_ns: int, item: Any) -> None:
        for old_stamp, _ in self._queue.put([(stamp_ns, item)]):
            self._counts["dropped_behind"] += 1
            self.get_logger().warning(f"detection is behind: dropped the input at "
                                      f"{old_stamp}", throttle_duration_sec=2.0)

    def _work(self, work: WorkItem) -> None:
        from mm_perception.ros.convert_objects import objects_to_msg

        stamp_ns, item = work
        rig, pub = self.rig, self._pub
        if rig is None or pub is None:
            return  # cleaned up under us
        t0 = time.perf_counter()
        try:
            objects = self.detect(item)
            msg = objects_to_msg(objects, stamp_ns, rig.base_frame, self.MODALITY)
        except InputDropped as drop:
            self.drop(drop.stream, drop.reason, f"input at {stamp_ns}: {drop}")
            return
        except Exception as exc:  # a bad input must never kill the node
            self._counts["failed"] += 1
            self.get_logger().error(f"input at {stamp_ns} failed ({exc!r}):\n"
                                    f"{traceback.format_exc()}", throttle_duration_sec=2.0)
            return
        pub.publish(msg)
        self.report_timing((time.perf_counter() - t0) * 1e3, stamp_ns)
        self._counts["processed"] += 1

    def extra_statuses(self) -> list[Status]:
        c = self._counts
        values = (*((k, str(v)) for k, v in c.items()), ("queued", str(len(self._queue))))
        level = Level.WARN if c["dropped_behind"] or c["failed"] else Level.OK
        return [Status(f"{self.get_name()}: detector", level,
                       f"{c['processed']} processed, {c['dropped_behind']} dropped behind, "
                       f"{c['failed']} failed", values)]


class LidarDetectorNode(DetectorNode):
    """``lidar_detector``: LiDAR clouds -> objects (see the module docstring)."""

    KIND = "lidar_detector"
    SENSOR_KIND = SensorKind.LIDAR
    MODALITY = "lidar"

    def build(self, params: dict[str, Any]) -> None:
        from mm_perception.detection.lidar import LidarDetectorConfig
        from mm_perception.fusion.pipeline import lidar_detector_for

        self.detector = lidar_detector_for(self.spec, LidarDetectorConfig())
        self._remove_nans = bool(params["remove_nans"])

    def release(self) -> None:
        self.detector = None

    def health_streams(self) -> dict[str, bool]:
        return {"points": True}

    def subscribe_inputs(self, qos: Any) -> None:
        from sensor_msgs.msg import PointCloud2

        self.subscribe(PointCloud2, "~/input/points", self._on_points, qos)

    def _on_points(self, msg: Any) -> None:
        from mm_perception.ros.convert_cloud import pointcloud_from_msg

        if self.health is None or self.spec is None:
            return  # a callback racing a deactivate
        self.health.received("points")
        names = [str(f.name) for f in msg.fields]
        fields = {k: self.spec.fields.get(k, k) for k in ("x", "y", "z")}
        if not all(v in names for v in fields.values()):
            fields = {k: k for k in ("x", "y", "z")}  # canonical names (the sync node's)
        try:
            cloud = pointcloud_from_msg(msg, self.spec.name, fields,
                                        remove_nans=self._remove_nans)
        except (ConversionError, ValueError, KeyError) as exc:
            self.drop("points", drop_reason(exc), str(exc))
            return
        self._submit(cloud.stamp_ns, cloud)

    def detect(self, item: Any) -> list[DetectedObject]:
        detector, spec = self.detector, self.spec
        if detector is None or spec is None:
            return []
        result: list[DetectedObject] = detector.detect(spec.extrinsics.apply(item.xyz()),
                                                       item.stamp_ns, sensor=spec.name)
        return result


class RadarDetectorNode(DetectorNode):
    """``radar_detector``: radar scans + odometry -> objects (see the module docstring)."""

    KIND = "radar_detector"
    SENSOR_KIND = SensorKind.RADAR
    MODALITY = "radar"

    def build(self, params: dict[str, Any]) -> None:
        from mm_perception.detection.radar import RadarDetector, RadarDetectorConfig

        self.detector = RadarDetector(RadarDetectorConfig())
        self.decoder = SensorDecoder(self.rig, remove_nans=True)
        self.odometry: Any = None  # a fresh history per activation (subscribe_inputs)
        # notified on every odometry message: the worker waits on it for odometry that covers
        # a scan's stamp instead of polling
        self._odom_lock = threading.Condition()
        self._odom_wait_s = float(params["odom_wait_s"])

    def release(self) -> None:
        self.detector = self.decoder = self.odometry = None

    def health_streams(self) -> dict[str, bool]:
        return {"points": True, "odom": True}

    def subscribe_inputs(self, qos: Any) -> None:
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import PointCloud2

        self.odometry = OdometryInput(self.rig, self.drop)
        self.subscribe(PointCloud2, "~/input/points", self._on_points, qos)
        self.subscribe(Odometry, "~/input/odom", self._on_odom, qos)

    def _on_odom(self, msg: Any) -> None:
        odometry = self.odometry
        if odometry is None:
            return
        with self._odom_lock:
            odometry.add(msg, self.health)
            self._odom_lock.notify_all()

    def _on_points(self, msg: Any) -> None:
        if self.health is None or self.decoder is None or self.spec is None:
            return
        self.health.received("points")
        try:
            scan = self.decoder.decode(self.spec.name, msg)
        except (ConversionError, ValueError, KeyError) as exc:
            self.drop("points", drop_reason(exc), str(exc))
            return
        self._submit(scan.stamp_ns, scan)

    def _ego(self, stamp_ns: int) -> Any:
        """The ego state at ``stamp_ns``, waiting up to ``odom_wait_s`` for odometry that
        covers it (worker thread)."""
        from mm_perception.fusion.pipeline import ego_at

        deadline = time.monotonic() + self._odom_wait_s
        # the check and the wait under one lock: a message added in between is not missed
        with self._odom_lock:
            while True:
                odometry = self.odometry
                if odometry is None:
                    return None
                ego = ego_at(stamp_ns, odometry.snapshot())
                left = deadline - time.monotonic()
                if ego is not None or left <= 0:
                    return ego
                self._odom_lock.wait(timeout=left)  # until the next odometry message

    def detect(self, item: Any) -> list[DetectedObject]:
        scan: RadarScan = item
        detector, spec = self.detector, self.spec
        if detector is None or spec is None:
            return []
        ego = self._ego(scan.stamp_ns)
        if ego is None:
            raise InputDropped("points", "no_ego",
                               f"no ego state at the scan stamp {scan.stamp_ns} (odometry "
                               f"missing or not covering it within odom_wait_s): no Doppler "
                               f"ego compensation")
        result: list[DetectedObject] = detector.detect(scan, spec.extrinsics, ego,
                                                       sensor=spec.name)
        return result


class CameraDetectorNode(DetectorNode):
    """``camera_detector``: images (+ depth) -> lifted 3D objects (see the module
    docstring)."""

    KIND = "camera_detector"
    SENSOR_KIND = SensorKind.CAMERA
    MODALITY = "camera"
    #: depth images kept for pairing (by stamp)
    DEPTH_BUFFER = 8

    def build(self, params: dict[str, Any]) -> None:
        from pathlib import Path

        from mm_perception.detection.camera.detector import CameraDetector

        weights = params["camera_weights_dir"] or None
        self.detector = CameraDetector.load(Path(weights) if weights else None,
                                            threads=int(params["inference_threads"]) or None)
        model = self.spec.intrinsics
        shape = (model.height, model.width, 3) if model is not None else (480, 640, 3)
        self.detector.detect(np.zeros(shape, np.uint8))  # warm-up: the first run is slow
        self.decoder = SensorDecoder(self.rig, remove_nans=True)
        self._use_depth = bool(params["use_depth"])
        self._depth_wait_s = float(params["depth_wait_s"])
        self._compressed = bool(params["compressed_input"])
        self._pending: dict[int, tuple[CameraFrame, float]] = {}
        self._depths: dict[int, np.ndarray] = {}
        self._counts["no_depth"] = 0
        self._counts["with_depth"] = 0

    def release(self) -> None:
        self.detector = self.decoder = None
        self._pending = {}
        self._depths = {}

    def health_streams(self) -> dict[str, bool]:
        streams = {"image": True}
        if self.spec is not None and self.spec.intrinsics is None:
            streams["camera_info"] = True  # the camera model comes from it
        if self.params is not None and self.params["use_depth"]:
            streams["depth"] = False
        return streams

    def subscribe_inputs(self, qos: Any) -> None:
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        self._pending, self._depths = {}, {}
        self._counts.update(no_depth=0, with_depth=0)
        self.subscribe(CompressedImage if self._compressed else Image, "~/input/image",
                       self._on_image, qos)
        self.subscribe(CameraInfo, "~/input/camera_info", self._on_camera_info, qos)
        if self._use_depth:
            self.subscribe(Image, "~/input/depth", self._on_depth, qos)
            self.every(0.02, self._expire)

    def _on_camera_info(self, msg: Any) -> None:
        if self.health is None or self.decoder is None or self.spec is None:
            return
        if "camera_info" in self.health.streams:
            self.health.received("camera_info")
        try:
            self.decoder.camera_info(self.spec.name, msg)
        except (ConversionError, ValueError) as exc:
            self.drop("image", "camera_info", str(exc))

    def _on_image(self, msg: Any) -> None:
        if self.health is None or self.decoder is None or self.spec is None:
            return
        self.health.received("image")
        try:
            frame = self.decoder.decode(self.spec.name, msg)
        except (ConversionError, ValueError, KeyError) as exc:
            self.drop("image", drop_reason(exc), str(exc))
            return
        if frame is None:
            self.drop("image", "no_camera_info", "image before the first CameraInfo")
            return
        if frame.encoding not in _COLOUR:
            self.drop("image", "encoding", f"encoding {frame.encoding!r} has no colour; "
                                            f"the detector needs one of {list(_COLOUR)}")
            return
        if not self._use_depth:
            self._submit(frame.stamp_ns, (frame, None))
            return
        depth = self._depths.pop(frame.stamp_ns, None)
        if depth is not None:
            self._counts["with_depth"] += 1
            self._submit(frame.stamp_ns, (frame, depth))
        else:
            self._pending[frame.stamp_ns] = (frame, time.monotonic())

    def _on_depth(self, msg: Any) -> None:
        from mm_perception.ros.convert_image import image_to_array
        from mm_perception.ros.message_factory import stamp_to_ns

        if self.health is None:
            return
        self.health.received("depth")
        try:
            arr, encoding = image_to_array(msg)
            if encoding != "32FC1":
                raise ConversionError(f"depth encoding {encoding!r}: expected 32FC1")
            stamp = stamp_to_ns(msg.header.stamp)
        except (ConversionError, ValueError) as exc:
            self.drop("depth", drop_reason(exc), str(exc))
            return
        pending = self._pending.pop(stamp, None)
        if pending is not None:
            self._counts["with_depth"] += 1
            self._submit(stamp, (pending[0], arr))
            return
        self._depths[stamp] = arr
        while len(self._depths) > self.DEPTH_BUFFER:
            self._depths.pop(min(self._depths))

    def _expire(self) -> None:
        """Images that waited ``depth_wait_s`` for their depth go on without one."""
        now = time.monotonic()
        for stamp in sorted(self._pending):
            frame, since = self._pending[stamp]
            if now - since >= self._depth_wait_s:
                del self._pending[stamp]
                self._counts["no_depth"] += 1
                self._submit(stamp, (frame, None))

    def detect(self, item: Any) -> list[DetectedObject]:
        from mm_perception.detection.camera.lift import lift_detections

        frame, depth = item
        detector, spec = self.detector, self.spec
        if detector is None or spec is None:
            return []
        model = frame.camera if frame.camera is not None else spec.intrinsics
        if model is None:
            raise InputDropped("image", "no_intrinsics",
                               f"camera {spec.name!r}: no intrinsics; not lifted to 3D")
        out = detector.detect(frame.rgb())
        result: list[DetectedObject] = lift_detections(
            out.detections, model, spec.extrinsics, frame.stamp_ns, depth=depth,
            sensor=spec.name)
        return result


def main_lidar(args: list[str] | None = None) -> None:
    """Console entry point: one ``lidar_detector`` node until Ctrl-C."""
    from mm_perception.ros.nodes.launcher import run_single_node

    run_single_node(LidarDetectorNode, args)


def main_radar(args: list[str] | None = None) -> None:
    """Console entry point: one ``radar_detector`` node until Ctrl-C."""
    from mm_perception.ros.nodes.launcher import run_single_node

    run_single_node(RadarDetectorNode, args)


def main_camera(args: list[str] | None = None) -> None:
    """Console entry point: one ``camera_detector`` node until Ctrl-C."""
    from mm_perception.ros.nodes.launcher import run_single_node

    run_single_node(CameraDetectorNode, args)


__all__ = ["CameraDetectorNode", "DetectorNode", "InputDropped", "LidarDetectorNode",
           "RadarDetectorNode", "main_camera", "main_lidar", "main_radar"]
