"""``DetectedObject`` / ``Track`` <-> ``mm_perception_msgs`` object messages.

Core :class:`~mm_perception.core.types.DetectedObject` lists become
``mm_perception_msgs/msg/DetectedObjectArray`` and :class:`~mm_perception.core.types.Track`
lists ``mm_perception_msgs/msg/TrackedObjectArray`` (see the ``.msg`` files in
``interfaces/mm_perception_msgs/msg`` for every field, frame and unit). The mapping:

* box centre (m) -> ``pose.pose.position``; yaw (rad, about z) -> ``pose.pose.orientation``
  ``(0, 0, sin(yaw / 2), cos(yaw / 2))``; size (l, w, h, m) -> ``size`` (x, y, z). Back,
  the yaw is ``atan2`` of the quaternion, so it comes back wrapped to ``(-pi, pi]``; a
  quaternion that is not a rotation about z only (upright box) is refused.
* core ``covariance`` ``(6, 6)`` over (x, y, z, yaw, vx, vy): its (x, y, z, yaw) block goes
  to rows/cols 0, 1, 2, 5 of ``pose.covariance`` and its (vx, vy) block to rows/cols 0, 1 of
  ``velocity.covariance``; both ``has_*_covariance`` flags are set (even without a velocity,
  so the velocity block survives a round trip). The cross terms between (x, y, z, yaw) and
  (vx, vy) are not carried by the message (it says so) and come back as zeros. Back, a
  block whose flag is false comes back as zeros (the message's "all zeros"), and with both
  flags false the covariance is None.
* ``velocity`` ``(3,)`` m/s -> ``velocity.twist.linear`` with ``has_velocity``; ``yaw_rate``
  (rad/s) -> ``angular.z``, 0 when unknown (None), and back: a 0 comes back as None.
* ``label`` -> ``label`` (``ObjectClassification`` constant of the same name) and
  ``label_name``; ``class_probs`` -> ``classification``, most likely first (float32).
* ``sources`` -> ``source_names`` (duplicates dropped, order of first appearance) and the
  ``source_sensors`` bitmask: a name starting with ``lidar`` / ``radar`` / ``cam``
  (``camera``) sets ``SOURCE_LIDAR`` / ``SOURCE_RADAR`` / ``SOURCE_CAMERA`` (case-insensitive,
  as the rig names ``lidar_top``, ``radar_front``, ``cam_front`` and the list names
  ``lidar``/``radar``/``camera``); any other name sets no bit but is still listed.
* ``score`` / ``existence_prob`` -> ``score`` / ``existence_probability`` (float32), the
  object's ``stamp_ns`` -> ``stamp``.

Round trips are exact up to the float32 rounding of the float32 fields and the yaw's
wrapping and quaternion rounding (~1e-16 rad). Every problem raises
:class:`~mm_perception.core.errors.ConversionError` (a ``ValueError``) naming the object's
index and the bad values: an object whose ``box.frame_id`` is not the array's frame,
non-finite numbers, unknown classes or track states, counts out of the message's range.

The messages are built with the generated rclpy classes, imported lazily (this module
imports without ROS); the ``*_from_msg`` functions read any object with the message's
fields (rclpy messages, ``rosbags`` dataclasses).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConversionError
from mm_perception.core.types import (
    Box3D,
    DetectedObject,
    ObjectClass,
    SensorKind,
    Track,
    TrackStatus,
)
from mm_perception.ros.message_factory import RclpyFactory, header, ns_to_stamp, stamp_to_ns

#: name prefix (lower case) -> sensor kind, for the ``source_sensors`` bits
SOURCE_PREFIXES: Mapping[str, SensorKind] = MappingProxyType({
    "lidar": SensorKind.LIDAR,
    "radar": SensorKind.RADAR,
    "camera": SensorKind.CAMERA,
    "cam": SensorKind.CAMERA,
})
#: core covariance index -> pose covariance index (x, y, z, yaw -> x, y, z, rot z)
_POSE_IDX = (0, 1, 2, 5)
#: core covariance index of (vx, vy); they are rows/cols 0, 1 of the twist covariance
_VEL_IDX = (4, 5)
#: a quaternion's x, y (after normalising) above this is not a rotation about z only
_UPRIGHT_TOL = 1e-6
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1

_FACTORY = RclpyFactory()


def _msgs() -> Any:
    """The generated ``mm_perception_msgs.msg`` module (untyped: generated code)."""
    try:
        return importlib.import_module("mm_perception_msgs.msg")
    except ImportError as exc:
        raise ConversionError(f"mm_perception_msgs is not importable ({exc}); "
                              f"scripts/setup.sh builds it") from exc


def _geometry() -> Any:
    return importlib.import_module("geometry_msgs.msg")


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def source_kind(name: str) -> SensorKind | None:
    """The sensor kind a source name stands for (by its prefix, case-insensitive), or None
    when the name starts with none of :data:`SOURCE_PREFIXES`."""
    low = name.lower()
    for prefix, kind in SOURCE_PREFIXES.items():
        if low.startswith(prefix):
            return kind
    return None


def source_bits(names: Sequence[str]) -> int:
    """``source_sensors`` bitmask (``DetectedObject.SOURCE_*``) of the named sources."""
    obj = _msgs().DetectedObject
    bits = 0
    for name in names:
        kind = source_kind(name)
        if kind is not None:
            bits |= int(getattr(obj, f"SOURCE_{kind.name}"))
    return bits


def yaw_to_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """Rotation by ``yaw`` (rad) about z as a unit quaternion ``(x, y, z, w)``."""
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


def quaternion_to_yaw(x: float, y: float, z: float, w: float, what: str = "quaternion") -> float:
    """Yaw (rad, ``(-pi, pi]``) of a rotation about z given as a quaternion ``(x, y, z, w)``
    (need not be normalised).

    Raises:
        ConversionError: non-finite or zero quaternion, or one that also tilts (roll/pitch:
            the box would not be upright).
    """
    q = np.array([x, y, z, w], dtype=np.float64)
    if not np.all(np.isfinite(q)):
        raise ConversionError(f"{what} (x, y, z, w) = {q.tolist()} is not finite")
    norm = float(np.linalg.norm(q))
    if norm < 1e-9:
        raise ConversionError(f"{what} (x, y, z, w) = {q.tolist()} has zero norm")
    q /= norm
    if abs(q[0]) > _UPRIGHT_TOL or abs(q[1]) > _UPRIGHT_TOL:
        raise ConversionError(f"{what} (x, y, z, w) = {(q * norm).tolist()} is not a rotation "
                              f"about z only; boxes are upright (yaw only)")
    return math.atan2(2.0 * q[2] * q[3], 1.0 - 2.0 * q[2] * q[2])


def _check_finite(values: Any, what: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ConversionError(f"{what} is not finite: {arr.tolist()}")
    return arr


def _f32(value: float, what: str) -> float:
    """``value`` rounded to float32, as a float32 message field carries it (rclpy keeps the
    Python float until serialisation: rounding here makes a message equal to its decoded
    copy). Raises ConversionError when it is not finite in float32."""
    with np.errstate(over="ignore"):
        out = float(np.float32(value))
    if not math.isfinite(out):
        raise ConversionError(f"{what} = {value} is not finite in float32")
    return out


def _check_count(value: int, name: str, maximum: int, what: str) -> int:
    value = int(value)
    if not 0 <= value <= maximum:
        raise ConversionError(f"{what} {name} = {value} is outside the message's range "
                              f"[0, {maximum}]")
    return value


def _label_constant(cls: ObjectClass) -> int:
    return int(getattr(_msgs().ObjectClassification, cls.name))


def _label_from_msg(label: int, label_name: str, what: str) -> ObjectClass:
    """The :class:`ObjectClass` of a message label; ``label_name`` (when set) must agree."""
    constants = _msgs().ObjectClassification
    for cls in ObjectClass:
        if int(getattr(constants, cls.name)) == int(label):
            if label_name and str(label_name) != cls.value:
                raise ConversionError(f"{what} label {int(label)} is {cls.value!r} but "
                                      f"label_name is {str(label_name)!r}")
            return cls
    known = {c.value: int(getattr(constants, c.name)) for c in ObjectClass}
    raise ConversionError(f"{what} label {int(label)} ({str(label_name)!r}) is not an "
                          f"ObjectClass; known: {known}")


# --------------------------------------------------------------------------------------
# DetectedObject
# --------------------------------------------------------------------------------------


def _object_to_msg(obj: DetectedObject, frame_id: str, what: str) -> Any:
    """One core object -> ``mm_perception_msgs/msg/DetectedObject`` (frame already checked)."""
    m, g = _msgs(), _geometry()
    box = obj.box
    center = _check_finite(box.center, f"{what} box center")
    size = _check_finite(box.size, f"{what} box size")
    yaw = float(_check_finite(box.yaw, f"{what} box yaw"))
    for name in ("score", "existence_prob"):
        _check_finite(getattr(obj, name), f"{what} {name}")

    pose_cov = np.zeros((6, 6), dtype=np.float64)
    vel_cov = np.zeros((6, 6), dtype=np.float64)
    has_cov = obj.covariance is not None
    if obj.covariance is not None:
        cov = _check_finite(obj.covariance, f"{what} covariance")
        pose_cov[np.ix_(_POSE_IDX, _POSE_IDX)] = cov[np.ix_(range(4), range(4))]
        vel_cov[:2, :2] = cov[np.ix_(_VEL_IDX, _VEL_IDX)]
    linear = np.zeros(3, dtype=np.float64)
    if obj.velocity is not None:
        linear = _check_finite(obj.velocity, f"{what} velocity")
    yaw_rate = 0.0 if obj.yaw_rate is None else float(_check_finite(obj.yaw_rate,
                                                                    f"{what} yaw_rate"))

    probs = []
    for name, prob in obj.class_probs.items():
        try:
            cls = ObjectClass(name)
        except ValueError as exc:
            raise ConversionError(f"{what} class_probs key {name!r} is not an ObjectClass; "
                                  f"known: {[c.value for c in ObjectClass]}") from exc
        probs.append((cls, float(_check_finite(prob, f"{what} class_probs[{name!r}]"))))
    probs.sort(key=lambda item: -item[1])  # stable: ties keep their order

    names = list(dict.fromkeys(str(s) for s in obj.sources))
    qx, qy, qz, qw = yaw_to_quaternion(yaw)
    pose = g.Pose(position=g.Point(x=float(center[0]), y=float(center[1]), z=float(center[2])),
                  orientation=g.Quaternion(x=qx, y=qy, z=qz, w=qw))
    twist = g.Twist(linear=g.Vector3(x=float(linear[0]), y=float(linear[1]),
                                     z=float(linear[2])),
                    angular=g.Vector3(x=0.0, y=0.0, z=yaw_rate))
    return m.DetectedObject(
        stamp=ns_to_stamp(obj.stamp_ns, _FACTORY),
        pose=g.PoseWithCovariance(pose=pose, covariance=pose_cov.reshape(36)),
        has_pose_covariance=has_cov,
        size=g.Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2])),
        label=_label_constant(obj.label), label_name=obj.label.value,
        classification=[
            m.ObjectClassification(label=_label_constant(cls), label_name=cls.value,
                                   probability=_f32(prob, f"{what} class_probs[{cls.value!r}]"))
            for cls, prob in probs],
        existence_probability=_f32(obj.existence_prob, f"{what} existence_prob"),
        score=_f32(obj.score, f"{what} score"),
        velocity=g.TwistWithCovariance(twist=twist, covariance=vel_cov.reshape(36)),
        has_velocity=obj.velocity is not None, has_velocity_covariance=has_cov,
        source_sensors=source_bits(names), source_names=names)


def _object_from_msg(msg: Any, frame_id: str, what: str) -> DetectedObject:
    """One ``DetectedObject`` message -> core object in ``frame_id``."""
    pose = msg.pose.pose
    p, q, s = pose.position, pose.orientation, msg.size
    center = _check_finite([p.x, p.y, p.z], f"{what} pose.position")
    size = _check_finite([s.x, s.y, s.z], f"{what} size")
    if np.any(size <= 0):
        raise ConversionError(f"{what} size (l, w, h) must be > 0, got {size.tolist()}")
    yaw = quaternion_to_yaw(float(q.x), float(q.y), float(q.z), float(q.w),
                            f"{what} pose.orientation")

    has_pose_cov, has_vel_cov = bool(msg.has_pose_covariance), bool(msg.has_velocity_covariance)
    covariance = None
    if has_pose_cov or has_vel_cov:
        covariance = np.zeros((6, 6), dtype=np.float64)
        if has_pose_cov:
            pose_cov = _check_finite(msg.pose.covariance, f"{what} pose.covariance")
            if pose_cov.size != 36:
                raise ConversionError(f"{what} pose.covariance has {pose_cov.size} values, "
                                      f"expected 36")
            covariance[:4, :4] = pose_cov.reshape(6, 6)[np.ix_(_POSE_IDX, _POSE_IDX)]
        if has_vel_cov:
            vel_cov = _check_finite(msg.velocity.covariance, f"{what} velocity.covariance")
            if vel_cov.size != 36:
                raise ConversionError(f"{what} velocity.covariance has {vel_cov.size} values, "
                                      f"expected 36")
            covariance[np.ix_(_VEL_IDX, _VEL_IDX)] = vel_cov.reshape(6, 6)[:2, :2]
    velocity = None
    yaw_rate = None
    if msg.has_velocity:
        lin = msg.velocity.twist.linear
        velocity = _check_finite([lin.x, lin.y, lin.z], f"{what} velocity.twist.linear")
        # zero is what the message holds for "unknown": read back as None (a known zero
        # turn rate and an unknown one predict the same straight motion)
        rate = float(_check_finite(msg.velocity.twist.angular.z,
                                   f"{what} velocity.twist.angular.z"))
        yaw_rate = rate if rate != 0.0 else None

    class_probs: dict[str, float] = {}
    for k, entry in enumerate(msg.classification):
        cls = _label_from_msg(entry.label, entry.label_name, f"{what} classification[{k}]")
        if cls.value in class_probs:
            raise ConversionError(f"{what} classification lists {cls.value!r} twice")
        class_probs[cls.value] = float(_check_finite(
            entry.probability, f"{what} classification[{k}].probability"))
    score = float(_check_finite(msg.score, f"{what} score"))
    existence = float(_check_finite(msg.existence_probability,
                                    f"{what} existence_probability"))
    try:
        return DetectedObject(
            box=Box3D(center, size, yaw, frame_id),
            label=_label_from_msg(msg.label, msg.label_name, what),
            score=score, stamp_ns=stamp_to_ns(msg.stamp), class_probs=class_probs,
            velocity=velocity, covariance=covariance, existence_prob=existence,
            sources=tuple(str(n) for n in msg.source_names), yaw_rate=yaw_rate)
    except ConversionError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"{what}: {exc}") from exc


def objects_to_msg(objects: Sequence[DetectedObject], stamp_ns: int, frame_id: str,
                   fusion_level: str = "") -> Any:
    """Core objects -> ``mm_perception_msgs/msg/DetectedObjectArray`` (rclpy message).

    Args:
        objects: the objects; every ``box.frame_id`` must be ``frame_id``.
        stamp_ns: the sensor set's reference stamp, int ns (``header.stamp``; each object
            keeps its own ``stamp_ns`` in ``stamp``).
        frame_id: frame of every object's pose, size and velocity (``header.frame_id``).
        fusion_level: which list this is (``"lidar"``, ``"output"``, ... see the .msg).

    Returns:
        the ``DetectedObjectArray``, one ``DetectedObject`` per object in order (empty for
        no objects). Mapping: see the module docstring.

    Raises:
        ConversionError (a ValueError): an object in another frame (the text names its
            index and both frames), non-finite values, a class_probs key that is not an
            :class:`ObjectClass`, a bad stamp.
    """
    msgs = []
    for i, obj in enumerate(objects):
        if obj.box.frame_id != frame_id:
            raise ConversionError(f"object {i} is in frame {obj.box.frame_id!r}, the array "
                                  f"in {frame_id!r}; transform it first (Box3D.transformed)")
        msgs.append(_object_to_msg(obj, frame_id, f"object {i}"))
    return _msgs().DetectedObjectArray(header=header(stamp_ns, frame_id, _FACTORY),
                                       objects=msgs, fusion_level=str(fusion_level))


def objects_from_msg(msg: Any) -> list[DetectedObject]:
    """``mm_perception_msgs/msg/DetectedObjectArray`` -> core objects, boxes in
    ``header.frame_id`` (the inverse of :func:`objects_to_msg`; ``source_sensors`` is not
    read: ``sources`` come from ``source_names``).

    Raises:
        ConversionError (a ValueError): non-finite values, a zero or tilted orientation,
            non-positive size, unknown labels, a bad stamp (the text names the index).
    """
    frame_id = str(msg.header.frame_id)
    return [_object_from_msg(o, frame_id, f"object {i}") for i, o in enumerate(msg.objects)]


# --------------------------------------------------------------------------------------
# Track
# --------------------------------------------------------------------------------------


def tracks_to_msg(tracks: Sequence[Track], stamp_ns: int, frame_id: str,
                  period_s: float | None = None, fusion_level: str = "") -> Any:
    """Core tracks -> ``mm_perception_msgs/msg/TrackedObjectArray`` (rclpy message).

    Args:
        tracks: the tracks after one update; every ``object.box.frame_id`` must be
            ``frame_id``.
        stamp_ns: the update's sensor set stamp, int ns (``header.stamp``).
        frame_id: frame of every track's geometry (``header.frame_id``).
        period_s: the tracker's update period, seconds; ``age_s = age * period_s``. None:
            unknown, ``age_s`` is 0.
        fusion_level: which object list was tracked (``"output"``, ``"lidar"``, ...).

    Returns:
        the ``TrackedObjectArray``, one ``TrackedObject`` per track in order: ``track_id``,
        ``state`` (the ``TrackedObject`` constant named as the :class:`TrackStatus`),
        ``age``, ``age_s``, ``hits``, ``misses`` and ``object`` as in
        :func:`objects_to_msg`.

    Raises:
        ConversionError (a ValueError): a track in another frame (names its index and both
            frames), non-finite values or ``period_s``, negative ``period_s``, ids or counts
            outside the message's unsigned ranges.
    """
    m = _msgs()
    if period_s is not None and (not math.isfinite(period_s) or period_s < 0):
        raise ConversionError(f"period_s must be a finite number >= 0 s, got {period_s}")
    out = []
    for i, track in enumerate(tracks):
        what = f"track {i} (id {track.track_id})"
        if track.object.box.frame_id != frame_id:
            raise ConversionError(f"{what} is in frame {track.object.box.frame_id!r}, the "
                                  f"array in {frame_id!r}; transform it first")
        age = _check_count(track.age, "age", UINT32_MAX, what)
        out.append(m.TrackedObject(
            track_id=_check_count(track.track_id, "track_id", UINT64_MAX, what),
            state=int(getattr(m.TrackedObject, track.status.name)),
            age=age, age_s=0.0 if period_s is None else _f32(age * period_s, f"{what} age_s"),
            hits=_check_count(track.hits, "hits", UINT32_MAX, what),
            misses=_check_count(track.misses, "misses", UINT32_MAX, what),
            object=_object_to_msg(track.object, frame_id, what)))
    return m.TrackedObjectArray(header=header(stamp_ns, frame_id, _FACTORY), objects=out,
                                fusion_level=str(fusion_level))


def tracks_from_msg(msg: Any) -> list[Track]:
    """``mm_perception_msgs/msg/TrackedObjectArray`` -> core tracks, boxes in
    ``header.frame_id`` (the inverse of :func:`tracks_to_msg`; ``age_s`` is not read, the
    core counts ``age`` in updates).

    Raises:
        ConversionError (a ValueError): an unknown ``state``, or any problem of
            :func:`objects_from_msg` (the text names the track's index and id).
    """
    constants = _msgs().TrackedObject
    by_value = {int(getattr(constants, s.name)): s for s in TrackStatus}
    frame_id = str(msg.header.frame_id)
    out = []
    for i, entry in enumerate(msg.objects):
        what = f"track {i} (id {int(entry.track_id)})"
        status = by_value.get(int(entry.state))
        if status is None:
            raise ConversionError(f"{what} state {int(entry.state)} is not a TrackStatus; "
                                  f"known: { {s.value: v for v, s in by_value.items()} }")
        out.append(Track(track_id=int(entry.track_id),
                         object=_object_from_msg(entry.object, frame_id, what),
                         status=status, age=int(entry.age), hits=int(entry.hits),
                         misses=int(entry.misses)))
    return out


__all__ = [
    "SOURCE_PREFIXES",
    "objects_from_msg",
    "objects_to_msg",
    "quaternion_to_yaw",
    "source_bits",
    "source_kind",
    "tracks_from_msg",
    "tracks_to_msg",
    "yaw_to_quaternion",
]
