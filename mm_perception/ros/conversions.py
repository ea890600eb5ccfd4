"""ROS message <-> core type conversions (duck-typed, no ROS import at module import time).

The functions read any object that has the fields of the ROS message (rclpy messages in a
live node, ``rosbags`` dataclasses from a bag or a test), so this module imports neither
``rclpy`` nor message packages. Messages are *built* through a :class:`MessageFactory`
(:class:`RosbagsFactory` for bags and tests, :class:`RclpyFactory` for publishing), and the
conversion code always passes every field of each message it builds, because ``rosbags``
dataclasses have no defaults.

Byte buffers (``uint8[]`` fields) arrive as ``np.ndarray`` (rosbags), ``array.array('B')``
(rclpy), ``bytes`` or ``memoryview``; all of them are read with ``np.frombuffer`` (no copy)
and every array handed back owns its memory, because the message buffer is not ours.

Every problem with a message raises :class:`~mm_perception.core.errors.ConversionError`
with the offending values in the text.
"""

from mm_perception.ros.camera_info import camera_info_from_model, camera_model_from_camera_info
from mm_perception.ros.convert_cloud import (
    POINTFIELD_DTYPES,
    array_to_pointcloud2,
    pointcloud2_dtype,
    pointcloud2_to_array,
    pointcloud2_to_xyz,
    pointcloud_from_msg,
    pointcloud_to_msg,
    radar_scan_from_msg,
    radar_scan_to_msg,
)
from mm_perception.ros.convert_image import (
    IMAGE_ENCODING_ALIASES,
    array_to_compressed,
    array_to_image,
    camera_frame_from_msg,
    compressed_to_array,
    image_to_array,
)
from mm_perception.ros.convert_odometry import (
    ego_state_from_odometry,
    odometry_from_ego_state,
    tf_message,
    transforms_from_tf_message,
)
from mm_perception.ros.message_factory import (
    MessageFactory,
    RclpyFactory,
    RosbagsFactory,
    header,
    ns_to_stamp,
    stamp_to_ns,
)

__all__ = [
    "IMAGE_ENCODING_ALIASES",
    "POINTFIELD_DTYPES",
    "MessageFactory",
    "RclpyFactory",
    "RosbagsFactory",
    "array_to_compressed",
    "array_to_image",
    "array_to_pointcloud2",
    "camera_frame_from_msg",
    "camera_info_from_model",
    "camera_model_from_camera_info",
    "compressed_to_array",
    "ego_state_from_odometry",
    "header",
    "image_to_array",
    "ns_to_stamp",
    "odometry_from_ego_state",
    "pointcloud2_dtype",
    "pointcloud2_to_array",
    "pointcloud2_to_xyz",
    "pointcloud_from_msg",
    "pointcloud_to_msg",
    "radar_scan_from_msg",
    "radar_scan_to_msg",
    "stamp_to_ns",
    "tf_message",
    "transforms_from_tf_message",
]
