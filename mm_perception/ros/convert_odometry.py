"""``nav_msgs/Odometry`` <-> ``EgoState`` and ``tf2_msgs/TFMessage`` <-> transforms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConversionError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import EgoState
from mm_perception.ros.message_factory import MessageFactory, header, stamp_to_ns

# --------------------------------------------------------------------------------------
# Odometry and TF
# --------------------------------------------------------------------------------------


def _vec(obj: Any, names: str, what: str) -> npt.NDArray[np.float64]:
    try:
        out = np.array([float(getattr(obj, n)) for n in names], dtype=np.float64)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ConversionError(f"{what} has no numeric {', '.join(names)}: {obj!r}") from exc
    if not np.all(np.isfinite(out)):
        values = dict(zip(names, out.tolist(), strict=True))
        raise ConversionError(f"{what} is not finite: {values}")
    return out


def _se3(translation: npt.NDArray[np.float64], quat: npt.NDArray[np.float64],
         what: str) -> SE3:
    norm = float(np.linalg.norm(quat))
    if norm < 1e-6:
        raise ConversionError(f"{what} orientation quaternion (x, y, z, w) = "
                              f"{quat.tolist()} has zero norm")
    return SE3.from_quaternion(quat / norm, translation)


def _covariance(values: Any, what: str) -> npt.NDArray[np.float64]:
    cov = np.asarray(values, dtype=np.float64).reshape(-1)
    if cov.size != 36:
        raise ConversionError(f"{what} covariance has {cov.size} values, expected 36")
    return cov.reshape(6, 6).copy()


def ego_state_from_odometry(msg: Any) -> EgoState:
    """``nav_msgs/Odometry`` -> :class:`EgoState`.

    Pose is ``T_world_base`` (``header.frame_id`` <- ``child_frame_id``); the twist is in
    the child (body) frame, as nav_msgs defines it. Covariances (36, row-major) become
    ``(6, 6)``.

    Raises:
        ConversionError: NaN / Inf in pose or twist, zero quaternion, bad stamp.
    """
    pose = msg.pose.pose
    twist = msg.twist.twist
    position = _vec(pose.position, "xyz", "Odometry pose.position")
    quat = _vec(pose.orientation, "xyzw", "Odometry pose.orientation")
    return EgoState(
        stamp_ns=stamp_to_ns(msg.header.stamp),
        frame_id=str(msg.header.frame_id),
        child_frame_id=str(msg.child_frame_id),
        pose=_se3(position, quat, "Odometry pose"),
        linear_velocity=_vec(twist.linear, "xyz", "Odometry twist.linear"),
        angular_velocity=_vec(twist.angular, "xyz", "Odometry twist.angular"),
        pose_covariance=_covariance(msg.pose.covariance, "Odometry pose"),
        twist_covariance=_covariance(msg.twist.covariance, "Odometry twist"),
    )


def _vector3(values: Any, typename: str, factory: MessageFactory) -> Any:
    x, y, z = (float(v) for v in values)
    return factory(typename, x=x, y=y, z=z)


def _quaternion(transform: SE3, factory: MessageFactory) -> Any:
    x, y, z, w = (float(v) for v in transform.quaternion())
    return factory("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w)


def odometry_from_ego_state(state: EgoState, factory: MessageFactory) -> Any:
    """:class:`EgoState` -> ``nav_msgs/msg/Odometry`` (covariance None -> zeros)."""
    pose_cov = np.zeros(36) if state.pose_covariance is None else \
        np.asarray(state.pose_covariance, dtype=np.float64).reshape(36)
    twist_cov = np.zeros(36) if state.twist_covariance is None else \
        np.asarray(state.twist_covariance, dtype=np.float64).reshape(36)
    pose = factory("geometry_msgs/msg/Pose",
                   position=_vector3(state.pose.translation, "geometry_msgs/msg/Point", factory),
                   orientation=_quaternion(state.pose, factory))
    twist = factory("geometry_msgs/msg/Twist",
                    linear=_vector3(state.linear_velocity, "geometry_msgs/msg/Vector3", factory),
                    angular=_vector3(state.angular_velocity, "geometry_msgs/msg/Vector3",
                                     factory))
    return factory(
        "nav_msgs/msg/Odometry",
        header=header(state.stamp_ns, state.frame_id, factory),
        child_frame_id=str(state.child_frame_id),
        pose=factory("geometry_msgs/msg/PoseWithCovariance", pose=pose,
                     covariance=np.ascontiguousarray(pose_cov)),
        twist=factory("geometry_msgs/msg/TwistWithCovariance", twist=twist,
                      covariance=np.ascontiguousarray(twist_cov)),
    )


def transforms_from_tf_message(msg: Any) -> list[tuple[str, str, int, SE3]]:
    """``tf2_msgs/TFMessage`` -> ``[(parent, child, stamp_ns, T_parent_child), ...]``.

    Raises:
        ConversionError: NaN / Inf, zero quaternion or bad stamp in any transform (the
            text names parent and child).
    """
    out = []
    for ts in msg.transforms:
        parent, child = str(ts.header.frame_id), str(ts.child_frame_id)
        what = f"transform {parent!r} -> {child!r}"
        trans = _vec(ts.transform.translation, "xyz", f"{what} translation")
        quat = _vec(ts.transform.rotation, "xyzw", f"{what} rotation")
        out.append((parent, child, stamp_to_ns(ts.header.stamp), _se3(trans, quat, what)))
    return out


def tf_message(transforms: Sequence[tuple[str, str, int, SE3]],
               factory: MessageFactory) -> Any:
    """``[(parent, child, stamp_ns, T_parent_child), ...]`` -> ``tf2_msgs/msg/TFMessage``."""
    items = []
    for parent, child, stamp_ns, transform in transforms:
        tf = factory("geometry_msgs/msg/Transform",
                     translation=_vector3(transform.translation, "geometry_msgs/msg/Vector3",
                                          factory),
                     rotation=_quaternion(transform, factory))
        items.append(factory("geometry_msgs/msg/TransformStamped",
                             header=header(stamp_ns, parent, factory),
                             child_frame_id=str(child), transform=tf))
    return factory("tf2_msgs/msg/TFMessage", transforms=items)
