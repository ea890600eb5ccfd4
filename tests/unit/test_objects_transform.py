"""Moving object lists between frames and instants (core/objects.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_perception.core.geometry import SE3
from mm_perception.core.objects import transform_objects, transform_tracks
from mm_perception.core.types import Box3D, DetectedObject, ObjectClass, Track, TrackStatus


def _obj(x: float = 10.0, y: float = 2.0, yaw: float = 0.3, vel: tuple[float, ...] | None = (
        5.0, 1.0, 0.0), frame: str = "base_link") -> DetectedObject:
    cov = np.diag([0.25, 0.04, 0.1, 0.01, 1.0, 0.09])
    cov[0, 4] = cov[4, 0] = 0.05
    return DetectedObject(Box3D(np.array([x, y, 0.8]), np.array([4.5, 1.8, 1.5]), yaw, frame),
                          ObjectClass.CAR, 0.9, stamp_ns=5,
                          velocity=None if vel is None else np.array(vel), covariance=cov)


def test_rotation_moves_centre_heading_velocity_and_covariance() -> None:
    T = SE3.from_xy_yaw(100.0, -20.0, math.pi / 2)
    [out] = transform_objects([_obj()], T, "odom")
    assert out.box.frame_id == "odom"
    np.testing.assert_allclose(out.box.center, [100.0 - 2.0, -20.0 + 10.0, 0.8], atol=1e-12)
    assert out.box.yaw == pytest.approx(0.3 + math.pi / 2)
    assert out.velocity is not None and out.covariance is not None
    np.testing.assert_allclose(out.velocity, [-1.0, 5.0, 0.0], atol=1e-12)
    # x variance becomes y variance under a quarter turn, the velocity block likewise
    assert out.covariance[1, 1] == pytest.approx(0.25)
    assert out.covariance[0, 0] == pytest.approx(0.04)
    assert out.covariance[5, 5] == pytest.approx(1.0)
    assert out.covariance[4, 4] == pytest.approx(0.09)
    assert out.covariance[1, 5] == pytest.approx(0.05)  # the x-vx correlation turned too
    assert out.covariance[3, 3] == pytest.approx(0.01)
    np.testing.assert_allclose(out.covariance, out.covariance.T)
    assert out.stamp_ns == 5 and out.label is ObjectClass.CAR and out.score == 0.9


def test_yaw_rate_is_kept_between_upright_frames_and_flips_upside_down() -> None:
    obj = replace(_obj(), yaw_rate=0.3)
    [turned] = transform_objects([obj], SE3.from_xy_yaw(5.0, 1.0, 2.0), "odom")
    assert turned.yaw_rate == pytest.approx(0.3)
    flip = SE3(np.diag([1.0, -1.0, -1.0]), np.zeros(3))  # half a turn about x
    [flipped] = transform_objects([obj], flip, "upside_down")
    assert flipped.yaw_rate == pytest.approx(-0.3)
    [unknown] = transform_objects([_obj()], flip, "upside_down")
    assert unknown.yaw_rate is None


@settings(max_examples=40, deadline=None)
@given(x=st.floats(-50, 50), y=st.floats(-50, 50), yaw=st.floats(-math.pi, math.pi))
def test_round_trip_is_identity(x: float, y: float, yaw: float) -> None:
    T = SE3.from_xy_yaw(x, y, yaw)
    obj = _obj()
    [back] = transform_objects(transform_objects([obj], T, "odom"), T.inverse(), "base_link")
    np.testing.assert_allclose(back.box.center, obj.box.center, atol=1e-9)
    assert math.remainder(back.box.yaw - obj.box.yaw, 2 * math.pi) == pytest.approx(0, abs=1e-9)
    assert back.velocity is not None and obj.velocity is not None
    assert back.covariance is not None and obj.covariance is not None
    np.testing.assert_allclose(back.velocity, obj.velocity, atol=1e-9)
    np.testing.assert_allclose(back.covariance, obj.covariance, atol=1e-9)


def test_time_shift_propagates_with_velocity_and_grows_uncertainty() -> None:
    [out] = transform_objects([_obj()], SE3.identity(), "base_link", dt_s=0.1, stamp_ns=99)
    np.testing.assert_allclose(out.box.center, [10.5, 2.1, 0.8])
    assert out.stamp_ns == 99
    assert out.covariance is not None
    assert out.covariance[0, 0] == pytest.approx(0.25 + 0.01 * 1.0 + 2 * 0.1 * 0.05)
    # without a velocity nothing is known about the motion: the object stays
    [still] = transform_objects([_obj(vel=None)], SE3.identity(), "base_link", dt_s=0.1)
    np.testing.assert_allclose(still.box.center, [10.0, 2.0, 0.8])


def test_empty_and_mixed_frames() -> None:
    assert transform_objects([], SE3.identity(), "odom") == []
    assert transform_tracks([], SE3.identity(), "odom") == []
    with pytest.raises(ValueError, match="several frames"):
        transform_objects([_obj(), _obj(frame="odom")], SE3.identity(), "x")
    with pytest.raises(ValueError, match="finite"):
        transform_objects([_obj()], SE3.identity(), "x", dt_s=math.nan)


def test_tracks_keep_ids_and_status() -> None:
    trk = Track(7, _obj(), TrackStatus.CONFIRMED, age=4, hits=3)
    [out] = transform_tracks([trk], SE3.from_xy_yaw(1.0, 0.0, 0.0), "odom")
    assert (out.track_id, out.status, out.age, out.hits) == (7, TrackStatus.CONFIRMED, 4, 3)
    assert out.object.box.center[0] == pytest.approx(11.0)
