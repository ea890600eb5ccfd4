"""SE(3), quaternion and roll-pitch-yaw conversions, checked against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_perception.core.geometry import (
    SE3,
    batch_apply,
    matrix_to_quaternion,
    points_in_boxes_bev,
    quaternion_to_matrix,
    rpy_to_matrix,
    slerp,
    wrap_angle,
)

angles = st.floats(-math.pi, math.pi, allow_nan=False)
coords = st.floats(-100, 100, allow_nan=False)


def _rx(a: float) -> np.ndarray:
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def _ry(a: float) -> np.ndarray:
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def _rz(a: float) -> np.ndarray:
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def test_rpy_is_fixed_axis_zyx() -> None:
    r, p, y = 0.1, -0.4, 2.0
    np.testing.assert_allclose(rpy_to_matrix(r, p, y), _rz(y) @ _ry(p) @ _rx(r), atol=1e-12)


def test_quaternion_known_values() -> None:
    # 90 degrees about z: x axis -> y axis
    q = [0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)]
    np.testing.assert_allclose(quaternion_to_matrix(q) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    # camera optical frame from base_link (REP 103): z forward = base x, x right = -base y
    T = SE3.from_rpy(-math.pi / 2, 0.0, -math.pi / 2)
    np.testing.assert_allclose(T.rotate([0, 0, 1]), [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(T.rotate([1, 0, 0]), [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(T.rotate([0, 1, 0]), [0, 0, -1], atol=1e-12)


@given(angles, st.floats(-1.5, 1.5), angles)
@settings(max_examples=200, deadline=None)
def test_quaternion_matrix_round_trip(r: float, p: float, y: float) -> None:
    rot = rpy_to_matrix(r, p, y)
    q = matrix_to_quaternion(rot)
    assert q[3] >= 0
    np.testing.assert_allclose(np.linalg.norm(q), 1.0, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(q), rot, atol=1e-9)
    rr, pp, yy = SE3(rot).rpy()
    np.testing.assert_allclose(rpy_to_matrix(rr, pp, yy), rot, atol=1e-9)


@given(angles, st.floats(-1.5, 1.5), angles, coords, coords, coords,
       angles, st.floats(-1.5, 1.5), angles, coords, coords, coords)
@settings(max_examples=100, deadline=None)
def test_compose_and_invert(r1: float, p1: float, y1: float, x1: float, yy1: float, z1: float,
                            r2: float, p2: float, y2: float, x2: float, yy2: float,
                            z2: float) -> None:
    a = SE3.from_rpy(r1, p1, y1, (x1, yy1, z1))
    b = SE3.from_rpy(r2, p2, y2, (x2, yy2, z2))
    pts = np.array([[1.0, 2.0, 3.0], [-4.0, 0.5, 9.0]])
    # composition agrees with 4x4 matrix multiplication
    np.testing.assert_allclose((a @ b).as_matrix(), a.as_matrix() @ b.as_matrix(), atol=1e-9)
    np.testing.assert_allclose((a @ b).apply(pts), a.apply(b.apply(pts)), atol=1e-9)
    assert (a @ a.inverse()).almost_equal(SE3.identity(), atol=1e-9)
    np.testing.assert_allclose(a.inverse().apply(a.apply(pts)), pts, atol=1e-9)


def test_from_quaternion_normalises_and_rejects_bad() -> None:
    T = SE3.from_quaternion([0, 0, 2.0, 0], [1, 2, 3])  # 180 deg about z, not unit
    np.testing.assert_allclose(T.apply([1, 0, 0]), [0, 2, 3], atol=1e-12)
    with pytest.raises(ValueError, match="non-zero"):
        SE3.from_quaternion([0, 0, 0, 0])
    with pytest.raises(ValueError, match="NaN"):
        SE3.from_quaternion([0, 0, 0, 1], [np.nan, 0, 0])
    with pytest.raises(ValueError, match="shape"):
        SE3.from_quaternion([0, 0, 1])
    with pytest.raises(ValueError, match="proper rotation"):
        SE3(np.diag([1.0, 1.0, -1.0]))


def test_from_matrix_and_xy_yaw() -> None:
    T = SE3.from_xy_yaw(1.0, 2.0, math.pi / 2)
    np.testing.assert_allclose(SE3.from_matrix(T.as_matrix()).apply([1, 0, 0]), [1, 3, 0],
                               atol=1e-12)
    assert T.yaw() == pytest.approx(math.pi / 2)
    bad = T.as_matrix()
    bad[3, 0] = 1
    with pytest.raises(ValueError, match="last row"):
        SE3.from_matrix(bad)


def test_slerp_midpoint_and_interpolate() -> None:
    q0 = SE3.from_rpy(0, 0, 0.0).quaternion()
    q1 = SE3.from_rpy(0, 0, 1.0).quaternion()
    mid = slerp(q0, q1, 0.5)
    assert SE3.from_quaternion(mid).yaw() == pytest.approx(0.5)
    many = slerp(q0, q1, np.array([0.0, 0.25, 1.0]))
    assert many.shape == (3, 4)
    assert SE3.from_quaternion(many[1]).yaw() == pytest.approx(0.25)
    a, b = SE3.from_xy_yaw(0, 0, 0), SE3.from_xy_yaw(2, 4, 1.0)
    c = a.interpolate(b, 0.25)
    np.testing.assert_allclose(c.translation, [0.5, 1.0, 0.0])
    assert c.yaw() == pytest.approx(0.25)


def test_batch_apply_matches_loop() -> None:
    rng = np.random.default_rng(1)
    rots = np.stack([rpy_to_matrix(*rng.uniform(-1, 1, 3)) for _ in range(20)])
    trans = rng.normal(size=(20, 3))
    pts = rng.normal(size=(20, 3))
    expect = np.stack([rots[i] @ pts[i] + trans[i] for i in range(20)])
    np.testing.assert_allclose(batch_apply(rots, trans, pts), expect, atol=1e-12)


def test_wrap_angle() -> None:
    np.testing.assert_allclose(wrap_angle(np.array([3 * math.pi, -3.5 * math.pi, 0.1])),
                               [-math.pi, 0.5 * math.pi, 0.1], atol=1e-12)


def test_se3_is_immutable() -> None:
    T = SE3.from_xy_yaw(1, 2, 0.3)
    with pytest.raises(ValueError):
        T.translation[0] = 5.0


def test_points_in_boxes_bev() -> None:
    # box 0: 4 x 2 m at the origin along x; box 1: the same turned 90 deg, centred at (10, 0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0]])
    half = np.array([[2.0, 1.0], [2.0, 1.0]])
    pts = np.array([[1.9, 0.9], [2.0, 1.0], [2.1, 0.0], [0.0, 1.1],
                    [10.9, 1.9], [11.1, 0.0], [10.0, -2.0]])
    got = points_in_boxes_bev(pts, centers, np.array([0.0, math.pi / 2]), half)
    assert got.shape == (2, 7)
    np.testing.assert_array_equal(got[0], [True, True, False, False, False, False, False])
    np.testing.assert_array_equal(got[1], [False, False, False, False, True, False, True])
    assert points_in_boxes_bev(np.zeros((0, 2)), centers, np.zeros(2), half).shape == (2, 0)
