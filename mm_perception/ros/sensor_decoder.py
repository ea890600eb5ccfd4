"""One rig sensor's message -> core type, shared by the bag reader and the live nodes.

The same decoding runs on ``rosbags`` messages (offline) and ``rclpy`` messages (live; the
conversions are duck-typed), so a live replay and an offline run see identical core values.
Cameras whose intrinsics are ``from_camera_info`` take their model from the latest
``CameraInfo`` of their info topic; an image before the first one cannot be used (``decode``
returns None and the caller counts a ``no_camera_info`` drop).
"""

from __future__ import annotations

from typing import Any

from mm_perception.core.calibration import Rig
from mm_perception.core.camera import CameraModel
from mm_perception.core.types import CameraFrame, EgoState, PointCloud, RadarScan, SensorKind
from mm_perception.ros import conversions as conv

SensorValue = CameraFrame | PointCloud | RadarScan | EgoState


def drop_reason(exc: Exception) -> str:
    """A short, countable reason for a conversion failure (``encoding``, ``length``, ...)."""
    text = str(exc).lower()
    for key in ("encoding", "endian", "length", "bytes", "field", "nan", "stamp", "jpeg",
                "png", "decode", "step"):
        if key in text:
            return {"bytes": "length", "jpeg": "decode", "png": "decode"}.get(key, key)
    return type(exc).__name__


class SensorDecoder:
    """Decodes messages of a rig's sensors into core types.

    Args:
        rig: the rig (extrinsics need not be resolved: decoding does not use them).
        remove_nans: drop non-finite points from clouds.
    """

    def __init__(self, rig: Rig, remove_nans: bool = True) -> None:
        self.rig = rig
        self.remove_nans = remove_nans
        self._cameras: dict[str, CameraModel | None] = {
            s.name: s.intrinsics for s in rig.of_kind(SensorKind.CAMERA)}

    def camera_model(self, sensor: str) -> CameraModel | None:
        """The model the next frame of camera ``sensor`` gets (None: no CameraInfo yet)."""
        return self._cameras.get(sensor)

    def set_camera_model(self, sensor: str, model: CameraModel) -> None:
        self._cameras[sensor] = model

    def camera_info(self, sensor: str, msg: Any) -> bool:
        """Take a ``CameraInfo`` of camera ``sensor``. Rig intrinsics win (returns False: the
        message is not used); otherwise the model is replaced (returns True).

        Raises:
            ConversionError, ValueError: the message is not a usable camera model.
        """
        spec = self.rig.sensors[sensor]
        if spec.intrinsics is not None:
            return False
        self._cameras[sensor] = conv.camera_model_from_camera_info(msg)
        return True

    def decode(self, sensor: str, msg: Any) -> SensorValue | None:
        """The core value of a data message of rig sensor ``sensor``; None for a camera frame
        that arrived before its first ``CameraInfo``.

        Raises:
            ConversionError, ValueError, KeyError: the message cannot be converted (wrong
                encoding, sizes, missing fields...); see :func:`drop_reason`.
        """
        spec = self.rig.sensors[sensor]
        if spec.kind is SensorKind.CAMERA:
            camera = self._cameras.get(sensor)
            if camera is None:
                return None
            return conv.camera_frame_from_msg(msg, sensor, camera)
        if spec.kind is SensorKind.LIDAR:
            pt = spec.point_time
            return conv.pointcloud_from_msg(
                msg, sensor, spec.fields,
                time_field=pt.field if pt is not None else None,
                time_to_offsets=pt.to_offsets_ns if pt is not None else None,
                remove_nans=self.remove_nans)
        if spec.kind is SensorKind.RADAR:
            return conv.radar_scan_from_msg(msg, sensor, spec.fields)
        return conv.ego_state_from_odometry(msg)


__all__ = ["SensorDecoder", "SensorValue", "drop_reason"]
