"""mm_perception.ros.convert_objects: DetectedObject / Track <-> mm_perception_msgs arrays.

Skips (with the reason) when mm_perception_msgs cannot be imported or its type support does
not load (tests/ros/test_interfaces.py fails in that case when the toolchain is present)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_perception.core.errors import ConversionError
from mm_perception.core.types import Box3D, DetectedObject, ObjectClass, Track, TrackStatus
from mm_perception.ros.msgs_env import msgs_import_error

pytest.importorskip("rclpy")
_IMPORT_ERROR = msgs_import_error()
if _IMPORT_ERROR is not None:
    pytest.skip(_IMPORT_ERROR, allow_module_level=True)

from mm_perception_msgs.msg import (  # noqa: E402
    DetectedObject as DetectedObjectMsg,
)
from mm_perception_msgs.msg import (  # noqa: E402
    DetectedObjectArray,
    TrackedObject,
    TrackedObjectArray,
)

from mm_perception.ros.convert_objects import (  # noqa: E402
    objects_from_msg,
    objects_to_msg,
    quaternion_to_yaw,
    tracks_from_msg,
    tracks_to_msg,
)

STAMP = 1_700_000_000_100_000_000
F32 = np.float32


def _cov(seed: int = 0, cross: bool = False) -> np.ndarray:
    """A symmetric positive definite (6, 6) covariance over (x, y, z, yaw, vx, vy); without
    ``cross`` the (x..yaw) x (vx, vy) cross terms are zero (the message does not carry them)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T + 6 * np.eye(6)
    if not cross:
        cov[:4, 4:] = 0.0
        cov[4:, :4] = 0.0
    return cov


def _obj(i: int = 0, *, velocity: bool = True, covariance: bool = True,
         probs: bool = True, sources: tuple[str, ...] = ("lidar_top", "radar_front"),
         frame: str = "base_link", label: ObjectClass = ObjectClass.CAR) -> DetectedObject:
    return DetectedObject(
        box=Box3D(np.array([12.3 + i, -3.7, 0.81]), np.array([4.6, 1.93, 1.57]),
                  0.3 + 0.7 * i, frame),
        label=label, score=0.9123 - 0.01 * i, stamp_ns=STAMP - 7 * i,
        class_probs={"car": 0.7, "truck": 0.2, "bus": 0.1} if probs else {},
        velocity=np.array([8.1, 0.45, -0.01]) if velocity else None,
        covariance=_cov(i) if covariance else None,
        existence_prob=0.8765, sources=sources,
        yaw_rate=-0.3125 + 0.25 * i if velocity else None)


def _assert_same(got: DetectedObject, want: DetectedObject) -> None:
    """Equal up to float32 precision of the float32 fields and the yaw wrapping."""
    assert got.box.frame_id == want.box.frame_id
    np.testing.assert_array_equal(got.box.center, want.box.center)
    np.testing.assert_array_equal(got.box.size, want.box.size)
    dyaw = math.remainder(got.box.yaw - want.box.yaw, 2 * math.pi)
    assert abs(dyaw) < 1e-12
    assert -math.pi <= got.box.yaw <= math.pi
    assert got.label == want.label
    assert got.score == float(F32(want.score))
    assert got.existence_prob == float(F32(want.existence_prob))
    assert got.stamp_ns == want.stamp_ns
    assert dict(got.class_probs) == {k: float(F32(v)) for k, v in want.class_probs.items()}
    if want.velocity is None:
        assert got.velocity is None
    else:
        assert got.velocity is not None
        np.testing.assert_array_equal(got.velocity, want.velocity)
    if want.covariance is None:
        assert got.covariance is None
    else:
        assert got.covariance is not None
        np.testing.assert_array_equal(got.covariance, want.covariance)
    assert got.sources == want.sources
    assert got.yaw_rate == want.yaw_rate


def _serde(msg: Any) -> Any:
    from rclpy.serialization import deserialize_message, serialize_message

    return deserialize_message(serialize_message(msg), type(msg))


# --------------------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("velocity", [True, False])
@pytest.mark.parametrize("covariance", [True, False])
@pytest.mark.parametrize("probs", [True, False])
def test_object_round_trip(velocity: bool, covariance: bool, probs: bool) -> None:
    objs = [_obj(i, velocity=velocity, covariance=covariance, probs=probs) for i in range(3)]
    msg = objects_to_msg(objs, STAMP, "base_link", fusion_level="output")
    assert isinstance(msg, DetectedObjectArray)
    assert msg.header.frame_id == "base_link" and msg.fusion_level == "output"
    assert msg.header.stamp.sec == STAMP // 10**9
    assert msg.header.stamp.nanosec == STAMP % 10**9
    back = objects_from_msg(msg)
    assert len(back) == 3
    for got, want in zip(back, objs, strict=True):
        _assert_same(got, want)


def test_object_fields_follow_the_msg() -> None:
    obj = _obj(0)
    m = objects_to_msg([obj], STAMP, "base_link").objects[0]
    q = m.pose.pose.orientation
    assert (q.x, q.y) == (0.0, 0.0)
    assert q.z == pytest.approx(math.sin(0.15)) and q.w == pytest.approx(math.cos(0.15))
    assert (m.size.x, m.size.y, m.size.z) == (4.6, 1.93, 1.57)
    assert m.pose.pose.position.x == 12.3
    pose_cov = np.asarray(m.pose.covariance).reshape(6, 6)
    vel_cov = np.asarray(m.velocity.covariance).reshape(6, 6)
    assert obj.covariance is not None
    idx = [0, 1, 2, 5]
    np.testing.assert_array_equal(pose_cov[np.ix_(idx, idx)], obj.covariance[:4, :4])
    assert not pose_cov[3:5].any() and not pose_cov[:, 3:5].any()
    np.testing.assert_array_equal(vel_cov[:2, :2], obj.covariance[4:, 4:])
    assert np.count_nonzero(vel_cov) == np.count_nonzero(obj.covariance[4:, 4:])
    assert m.has_pose_covariance and m.has_velocity and m.has_velocity_covariance
    assert m.velocity.twist.linear.x == 8.1 and m.velocity.twist.angular.z == -0.3125
    # an unknown yaw rate is sent as 0 and comes back unknown
    unknown = objects_to_msg([replace(obj, yaw_rate=None)], STAMP, "base_link")
    assert unknown.objects[0].velocity.twist.angular.z == 0.0
    assert objects_from_msg(unknown)[0].yaw_rate is None
    cls = [(c.label_name, c.label) for c in m.classification]
    assert cls == [("car", 1), ("truck", 2), ("bus", 3)]  # most likely first
    assert m.label == m.classification[0].label and m.label_name == "car"
    assert m.source_sensors == DetectedObjectMsg.SOURCE_LIDAR | DetectedObjectMsg.SOURCE_RADAR
    assert list(m.source_names) == ["lidar_top", "radar_front"]
    assert m.stamp.sec * 10**9 + m.stamp.nanosec == STAMP


def test_probs_sorted_most_likely_first() -> None:
    obj = DetectedObject(Box3D(np.zeros(3), np.ones(3), 0.0), ObjectClass.PEDESTRIAN, 0.5,
                         class_probs={"cyclist": 0.25, "unknown": 0.05, "pedestrian": 0.7})
    m = objects_to_msg([obj], STAMP, "base_link").objects[0]
    assert [c.label_name for c in m.classification] == ["pedestrian", "cyclist", "unknown"]
    assert [c.label for c in m.classification] == [4, 5, 0]
    assert dict(objects_from_msg(objects_to_msg([obj], STAMP, "base_link"))[0].class_probs) \
        == {"cyclist": float(F32(0.25)), "unknown": float(F32(0.05)),
            "pedestrian": float(F32(0.7))}


@pytest.mark.parametrize(("sources", "bits"), [
    ((), 0),
    (("lidar",), 1),
    (("radar",), 2),
    (("camera",), 4),
    (("cam_front",), 4),
    (("lidar_top", "lidar_rear", "Radar_Front", "cam_front"), 7),
    (("lidar_top", "tracker", "odom"), 1),  # unknown names: no bit, still listed
    (("fused",), 0),
])
def test_source_bits(sources: tuple[str, ...], bits: int) -> None:
    obj = _obj(0, sources=sources)
    msg = objects_to_msg([obj], STAMP, "base_link")
    assert msg.objects[0].source_sensors == bits
    assert tuple(msg.objects[0].source_names) == sources
    assert objects_from_msg(msg)[0].sources == sources


def test_all_labels_round_trip() -> None:
    objs = [_obj(i, label=c, probs=False) for i, c in enumerate(ObjectClass)]
    back = objects_from_msg(objects_to_msg(objs, STAMP, "base_link"))
    assert [o.label for o in back] == list(ObjectClass)


def test_empty_lists_give_empty_arrays() -> None:
    msg = objects_to_msg([], STAMP, "base_link", "lidar")
    assert list(msg.objects) == [] and msg.fusion_level == "lidar"
    assert objects_from_msg(msg) == []
    tmsg = tracks_to_msg([], STAMP, "base_link", period_s=0.1)
    assert list(tmsg.objects) == []
    assert tracks_from_msg(tmsg) == []


def test_other_frame_is_refused() -> None:
    objs = [_obj(0), _obj(1, frame="lidar_top")]
    with pytest.raises(ValueError, match=r"object 1.*'lidar_top'.*'base_link'"):
        objects_to_msg(objs, STAMP, "base_link")
    tracks = [Track(3, _obj(0, frame="odom"), TrackStatus.CONFIRMED)]
    with pytest.raises(ValueError, match=r"track 0 \(id 3\).*'odom'.*'base_link'"):
        tracks_to_msg(tracks, STAMP, "base_link")


def test_frame_of_the_array_is_the_boxes_frame() -> None:
    back = objects_from_msg(objects_to_msg([_obj(0, frame="odom")], STAMP, "odom"))
    assert back[0].box.frame_id == "odom"


@pytest.mark.parametrize("where", ["covariance", "class_probs"])
def test_nan_in_object_is_refused(where: str) -> None:
    good = _obj(0)
    if where == "covariance":
        cov = _cov(1)
        cov[2, 2] = np.nan
        bad = _obj(1, covariance=False)
        bad = DetectedObject(bad.box, bad.label, bad.score, covariance=cov)
    else:
        bad = DetectedObject(good.box, good.label, good.score,
                             class_probs={"car": float("nan")})
    with pytest.raises(ValueError, match=rf"object 1 .*{where}.*not finite"):
        objects_to_msg([good, bad], STAMP, "base_link")


@pytest.mark.parametrize("field", ["x", "score", "covariance", "velocity"])
def test_non_finite_in_message_is_refused(field: str) -> None:
    msg = objects_to_msg([_obj(0), _obj(1)], STAMP, "base_link")
    m = msg.objects[1]
    if field == "x":
        m.pose.pose.position.x = float("inf")
    elif field == "score":
        m.score = float("nan")
    elif field == "covariance":
        cov = np.array(m.pose.covariance)
        cov[35] = np.nan
        m.pose.covariance = cov
    else:
        m.velocity.twist.linear.y = float("nan")
    with pytest.raises(ValueError, match=r"object 1 .*not finite"):
        objects_from_msg(msg)


def test_tilted_or_zero_quaternion_is_refused() -> None:
    msg = objects_to_msg([_obj(0)], STAMP, "base_link")
    msg.objects[0].pose.pose.orientation.x = 0.2
    with pytest.raises(ConversionError, match="not a rotation about z"):
        objects_from_msg(msg)
    msg.objects[0].pose.pose.orientation.x = 0.0
    msg.objects[0].pose.pose.orientation.z = 0.0
    msg.objects[0].pose.pose.orientation.w = 0.0
    with pytest.raises(ConversionError, match="zero norm"):
        objects_from_msg(msg)


def test_unknown_label_is_refused() -> None:
    msg = objects_to_msg([_obj(0)], STAMP, "base_link")
    msg.objects[0].label = 99
    with pytest.raises(ConversionError, match="label 99"):
        objects_from_msg(msg)


def test_cross_terms_are_not_carried() -> None:
    obj = _obj(0)
    full = DetectedObject(obj.box, obj.label, obj.score, covariance=_cov(3, cross=True))
    back = objects_from_msg(objects_to_msg([full], STAMP, "base_link"))[0]
    assert back.covariance is not None and full.covariance is not None
    np.testing.assert_array_equal(back.covariance[:4, :4], full.covariance[:4, :4])
    np.testing.assert_array_equal(back.covariance[4:, 4:], full.covariance[4:, 4:])
    assert not back.covariance[:4, 4:].any() and not back.covariance[4:, :4].any()


# --------------------------------------------------------------------------------------
# Tracks
# --------------------------------------------------------------------------------------


def _tracks() -> list[Track]:
    return [Track(track_id=i * 1000 + 7, object=_obj(i, velocity=i % 2 == 0), status=s,
                  age=10 + i, hits=8 + i, misses=i)
            for i, s in enumerate(TrackStatus)]


def test_track_round_trip_every_status() -> None:
    tracks = _tracks()
    msg = tracks_to_msg(tracks, STAMP, "base_link", period_s=0.1, fusion_level="output")
    assert isinstance(msg, TrackedObjectArray) and msg.fusion_level == "output"
    assert [t.state for t in msg.objects] == [TrackedObject.TENTATIVE, TrackedObject.CONFIRMED,
                                             TrackedObject.COASTING, TrackedObject.DELETED]
    assert [t.age_s for t in msg.objects] == [float(F32(t.age * 0.1)) for t in tracks]
    back = tracks_from_msg(msg)
    assert len(back) == len(tracks)
    for got, want in zip(back, tracks, strict=True):
        assert (got.track_id, got.status, got.age, got.hits, got.misses) == \
            (want.track_id, want.status, want.age, want.hits, want.misses)
        _assert_same(got.object, want.object)


def test_track_age_s_unknown_without_period_and_big_id() -> None:
    track = Track(2**63 + 5, _obj(0), TrackStatus.CONFIRMED, age=3)
    msg = tracks_to_msg([track], STAMP, "base_link")
    assert msg.objects[0].age_s == 0.0
    assert tracks_from_msg(_serde(msg))[0].track_id == 2**63 + 5


def test_track_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="period_s"):
        tracks_to_msg(_tracks(), STAMP, "base_link", period_s=float("nan"))
    with pytest.raises(ValueError, match=r"track 0 .*age_s.*not finite in float32"):
        tracks_to_msg(_tracks(), STAMP, "base_link", period_s=1e300)
    with pytest.raises(ValueError, match=r"track 0 .*age"):
        tracks_to_msg([Track(1, _obj(0), TrackStatus.TENTATIVE, age=2**32)], STAMP,
                      "base_link")
    msg = tracks_to_msg(_tracks(), STAMP, "base_link")
    msg.objects[2].state = 9
    with pytest.raises(ValueError, match=r"track 2 \(id 2007\) state 9"):
        tracks_from_msg(msg)
    msg = tracks_to_msg(_tracks(), STAMP, "base_link")
    msg.objects[1].object.size.y = float("nan")
    with pytest.raises(ValueError, match=r"track 1 \(id 1007\) size.*not finite"):
        tracks_from_msg(msg)


# --------------------------------------------------------------------------------------
# Serialisation and properties
# --------------------------------------------------------------------------------------


def test_serialization_round_trip() -> None:
    objs = [_obj(0), _obj(1, velocity=False, probs=False, sources=("cam_front",)),
            _obj(2, covariance=False, sources=())]
    msg = objects_to_msg(objs, STAMP, "base_link", fusion_level="output")
    back_msg = _serde(msg)
    assert back_msg == msg
    for got, want in zip(objects_from_msg(back_msg), objs, strict=True):
        _assert_same(got, want)
    tmsg = tracks_to_msg(_tracks(), STAMP, "base_link", period_s=0.05)
    tback = _serde(tmsg)
    assert tback == tmsg
    assert [t.status for t in tracks_from_msg(tback)] == list(TrackStatus)


_finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(yaw=st.floats(min_value=-50.0, max_value=50.0, allow_nan=False),
       lower=st.lists(_finite, min_size=21, max_size=21),
       with_velocity=st.booleans())
def test_yaw_and_covariance_round_trip(yaw: float, lower: list[float],
                                       with_velocity: bool) -> None:
    cov = np.zeros((6, 6))
    cov[np.tril_indices(6)] = lower
    cov = cov + cov.T  # symmetric, any values: the mapping must not care
    cov[:4, 4:] = 0.0
    cov[4:, :4] = 0.0
    obj = DetectedObject(Box3D(np.array([1.0, 2.0, 0.5]), np.array([4.0, 2.0, 1.5]), yaw),
                         ObjectClass.CAR, 0.5, covariance=cov,
                         velocity=np.array([1.0, -2.0, 0.0]) if with_velocity else None)
    back = objects_from_msg(_serde(objects_to_msg([obj], STAMP, "base_link")))[0]
    assert back.covariance is not None
    np.testing.assert_array_equal(back.covariance, cov)
    assert abs(math.remainder(back.box.yaw - yaw, 2 * math.pi)) < 1e-12
    assert -math.pi <= back.box.yaw <= math.pi
    assert (back.velocity is None) == (not with_velocity)


@given(yaw=st.floats(min_value=-math.pi, max_value=math.pi, allow_nan=False),
       scale=st.floats(min_value=1e-3, max_value=1e3), sign=st.sampled_from([1.0, -1.0]))
def test_quaternion_to_yaw_any_scale_and_sign(yaw: float, scale: float, sign: float) -> None:
    k = sign * scale
    got = quaternion_to_yaw(0.0, 0.0, k * math.sin(yaw / 2), k * math.cos(yaw / 2))
    assert abs(math.remainder(got - yaw, 2 * math.pi)) < 1e-12
