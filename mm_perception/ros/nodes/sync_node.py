"""Split ``sync`` node: time synchronisation + data-level fusion of the rig's raw sensors
(parameters: ``config/schema/sync.schema.json``).

Inputs: exactly those of the composed pipeline node (the same
:class:`~mm_perception.ros.nodes.set_input.SetInputNode` code): ``~/input/<sensor>`` for every
rig sensor and ``~/input/<camera>/camera_info``, sensor-data QoS.

Per synchronised set (worker thread, bounded queue ``max_queued_sets``), every output is
published (reliable, ``qos.output_depth``):

* ``~/output/<sensor>`` for every member of the set:

  - camera: ``sensor_msgs/Image`` (always raw, also for a compressed input camera; the
    frame's encoding), header stamp = the frame's stamp **on the common clock** (the
    original header stamp plus the rig's ``time_offset_s`` of that camera: equal to the
    original stamp for a zero offset), ``frame_id`` as received;
  - ``~/output/<camera>/camera_info`` (with ``publish.camera_info``): the camera model the
    frame was decoded with, same header;
  - LiDAR: ``PointCloud2`` with the canonical field names (the rig's ``fields`` map applied;
    unmapped fields kept under their own names), in the LiDAR frame. **De-skewed clouds carry
    the set stamp** (every point moved to the LiDAR pose at the set stamp; the raw per-point
    time field is kept as received, it no longer describes the point positions); clouds that
    could not be de-skewed (no per-point time, no odometry, ``deskew_lidar: false``) keep
    their stamp on the common clock;
  - radar: ``PointCloud2`` with the rig's field names (so a ``radar_detector`` decodes it
    with the same rig), header stamp on the common clock;

* ``~/output/painted/<lidar>``: ``PointCloud2`` of the painted points
  (:class:`~mm_perception.fusion.data_level.DataLevelOutput` ``painted``: ``x, y, z``
  float32 m in the LiDAR frame as in ``~/output/<lidar>``, ``r, g, b`` float32 in [0, 1],
  ``camera`` int16 (-1: not painted), ``index`` uint32 row in the cloud), stamp = the
  cloud's;
* ``~/output/depth/<camera>``: ``sensor_msgs/Image`` ``32FC1`` LiDAR depth along the optical
  axis, metres, NaN = no point, in the camera's frame, stamp = the camera frame's (common
  clock): pair it with ``~/output/<camera>`` by stamp.

No camera detector runs here, so points are painted with colour only (no class scores): the
composed node's ``data`` list has no split counterpart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mm_perception.core.ego_motion import OdometryBuffer
from mm_perception.core.types import SensorKind, SensorSet
from mm_perception.ros.nodes.set_input import SetInputNode, load_live_rig


class SyncNode(SetInputNode):
    """Sync + data-level fusion (see the module docstring)."""

    KIND = "sync"

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.fusion: Any = None
        self._pubs: dict[str, Any] = {}

    def configure_node(self, params: dict[str, Any]) -> None:
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from mm_perception.fusion.data_level import DataLevelConfig, DataLevelFusion

        rig = load_live_rig(params["rig_file"])
        cfg = DataLevelConfig(min_depth_m=float(params["data_level.min_depth_m"]),
                              max_depth_m=float(params["data_level.max_depth_m"]),
                              deskew_to_camera=bool(params["data_level.deskew_to_camera"]))
        self.fusion = DataLevelFusion(rig, cfg)
        self.configure_inputs(rig, params)
        depth = int(params["qos.output_depth"])
        for spec in rig.sensors.values():
            if spec.kind is SensorKind.CAMERA:
                self._pubs[spec.name] = self.publisher(Image, f"~/output/{spec.name}", depth)
                self._pubs[f"depth/{spec.name}"] = self.publisher(
                    Image, f"~/output/depth/{spec.name}", depth)
                if params["publish.camera_info"]:
                    self._pubs[f"{spec.name}/camera_info"] = self.publisher(
                        CameraInfo, f"~/output/{spec.name}/camera_info", depth)
            elif spec.kind in (SensorKind.LIDAR, SensorKind.RADAR):
                self._pubs[spec.name] = self.publisher(PointCloud2, f"~/output/{spec.name}",
                                                       depth)
                if spec.kind is SensorKind.LIDAR:
                    self._pubs[f"painted/{spec.name}"] = self.publisher(
                        PointCloud2, f"~/output/painted/{spec.name}", depth)

    def cleanup_node(self) -> None:
        super().cleanup_node()
        self._pubs = {}
        self.fusion = None

    # ------------------------------------------------------------------ worker thread
    def process_set(self, sensor_set: SensorSet, odometry: OdometryBuffer) -> None:
        """Data-level fusion of the set, then every output (see the module docstring)."""
        from mm_perception.ros.camera_info import camera_info_from_model
        from mm_perception.ros.convert_cloud import (
            array_to_pointcloud2,
            pointcloud_to_msg,
            radar_scan_to_msg,
        )
        from mm_perception.ros.convert_image import array_to_image
        from mm_perception.ros.message_factory import RclpyFactory

        fusion, rig = self.fusion, self.rig
        if fusion is None or rig is None:
            return
        factory = RclpyFactory()
        data = fusion.fuse(sensor_set, odometry)
        for note in data.notes:
            self.get_logger().info(note, throttle_duration_sec=10.0)
        for name, frame in sensor_set.cameras.items():
            self._pubs[name].publish(array_to_image(frame.image, frame.encoding, frame.stamp_ns,
                                                    frame.frame_id, factory))
            info = self._pubs.get(f"{name}/camera_info")
            if info is not None and frame.camera is not None:
                info.publish(camera_info_from_model(frame.camera, frame.stamp_ns,
                                                    frame.frame_id, factory))
        for name, cloud in sensor_set.lidars.items():
            self._pubs[name].publish(pointcloud_to_msg(cloud, factory))
        for name, scan in sensor_set.radars.items():
            self._pubs[name].publish(radar_scan_to_msg(scan, factory,
                                                       dict(rig.sensors[name].fields)))
        for name, painted in data.painted.items():
            cloud = sensor_set.lidars[name]
            self._pubs[f"painted/{name}"].publish(array_to_pointcloud2(
                painted_for_msg(painted), cloud.stamp_ns, cloud.frame_id, factory))
        for name, fused in data.cameras.items():
            frame_id = sensor_set.cameras[name].frame_id
            self._pubs[f"depth/{name}"].publish(array_to_image(
                fused.depth, "32FC1", fused.stamp_ns, frame_id, factory))


def painted_for_msg(painted: np.ndarray) -> np.ndarray:
    """The painted-points array with its int64 ``index`` field as uint32 (``PointField``
    has no 64-bit integers); every other field unchanged. ``(M,)`` structured in, out."""
    names = painted.dtype.names or ()
    if "index" not in names:
        return painted
    assert painted.dtype.fields is not None
    layout = [(n, "<u4" if n == "index" else painted.dtype.fields[n][0]) for n in names]
    out = np.empty(painted.shape, dtype=layout)
    for n in names:
        out[n] = painted[n]
    return out


def main(args: list[str] | None = None) -> None:
    """Console entry point: run one sync node, configured and activated, until Ctrl-C."""
    from mm_perception.ros.nodes.launcher import run_single_node

    run_single_node(SyncNode, args)


__all__ = ["SyncNode", "main", "painted_for_msg"]
