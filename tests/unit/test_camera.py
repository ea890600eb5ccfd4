"""CameraModel: validation, projection and (un)distortion against OpenCV."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConfigError

PLUMB_BOB_SETS = [
    (-0.3, 0.1, 0.001, -0.002, -0.02),  # barrel, typical automotive
    (0.12, -0.25, -0.0008, 0.0012, 0.08),  # pincushion-ish
    (-0.05, 0.0, 0.0, 0.0, 0.0),
]
EQUIDISTANT_SETS = [
    (0.05, -0.01, 0.002, -0.0005),
    (-0.02, 0.004, -0.001, 0.0002),
    (0.0, 0.0, 0.0, 0.0),
]
CRIT = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 1000, 1e-15)


def plumb_bob(coeffs: tuple[float, ...] = PLUMB_BOB_SETS[0]) -> CameraModel:
    return CameraModel(1280, 720, 900.0, 910.0, 640.3, 359.7, "plumb_bob", coeffs)


def fisheye(coeffs: tuple[float, ...] = EQUIDISTANT_SETS[0]) -> CameraModel:
    return CameraModel(1280, 960, 380.0, 381.0, 641.2, 478.9, "equidistant", coeffs)


def random_points(rng: np.random.Generator, n: int, max_angle: float) -> np.ndarray:
    """(n, 3) optical-frame points with incidence angle below max_angle, depth 0.5..50 m."""
    angle = rng.uniform(0.0, max_angle, n)
    azimuth = rng.uniform(-np.pi, np.pi, n)
    z = rng.uniform(0.5, 50.0, n)
    r = np.tan(angle) * z
    return np.stack([r * np.cos(azimuth), r * np.sin(azimuth), z], axis=1)


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"width": 0}, ["width", "0"]),
        ({"height": -5}, ["height", "-5"]),
        ({"width": 640.0}, ["width", "640.0"]),
        ({"fx": 0.0}, ["fx", "0.0"]),
        ({"fy": -1.0}, ["fy", "-1.0"]),
        ({"cx": math.nan}, ["cx", "nan"]),
        ({"fx": math.inf}, ["fx", "inf"]),
        ({"distortion_model": "fisheye"}, ["distortion_model", "'fisheye'"]),
        ({"distortion_model": "plumb_bob", "D": (0.1, 0.0, 0.0, 0.0)},
         ["plumb_bob", "5", "k1, k2, p1, p2, k3", "4"]),
        ({"distortion_model": "equidistant", "D": (0.1, 0.0, 0.0, 0.0, 0.0)},
         ["equidistant", "4", "k1, k2, k3, k4", "5"]),
        ({"distortion_model": "none", "D": (0.1,)}, ["none", "0", "0.1"]),
        ({"distortion_model": "plumb_bob", "D": (0.1, math.nan, 0.0, 0.0, 0.0)}, ["D", "nan"]),
    ],
)
def test_invalid_parameters_raise_config_error_naming_the_value(
        kwargs: dict[str, object], needles: list[str]) -> None:
    params: dict[str, object] = {"width": 640, "height": 480, "fx": 500.0, "fy": 500.0,
                                 "cx": 320.0, "cy": 240.0}
    params.update(kwargs)
    with pytest.raises(ConfigError) as info:
        CameraModel(**params)  # type: ignore[arg-type]
    for needle in needles:
        assert needle in str(info.value)


def test_normalises_types_and_is_hashable() -> None:
    coeffs: Any = [0, 0.1, 0, 0, 0]  # a list on purpose: stored as a tuple of floats
    width: Any = np.int64(640)
    cam = CameraModel(width, 480, 500, 501, 320, 240, "plumb_bob", coeffs)
    assert isinstance(cam.width, int) and isinstance(cam.fx, float)
    assert cam.D == (0.0, 0.1, 0.0, 0.0, 0.0)
    assert cam == CameraModel(640, 480, 500.0, 501.0, 320.0, 240.0, "plumb_bob",
                              (0.0, 0.1, 0.0, 0.0, 0.0))
    assert hash(cam) == hash(CameraModel(640, 480, 500.0, 501.0, 320.0, 240.0, "plumb_bob",
                                         (0.0, 0.1, 0.0, 0.0, 0.0)))
    np.testing.assert_array_equal(cam.K, [[500, 0, 320], [0, 501, 240], [0, 0, 1]])
    assert cam.K.dtype == np.float64


# ---------------------------------------------------------------------------- projection


def test_pinhole_projection_hand_computed() -> None:
    cam = CameraModel(640, 480, 500.0, 400.0, 320.0, 240.0)
    pts = np.array([[0.0, 0.0, 2.0], [1.0, -0.5, 2.0], [0.2, 0.3, 4.0]])
    uv, valid = cam.project(pts)
    np.testing.assert_allclose(uv, [[320, 240], [570, 140], [345, 270]])
    assert valid.all()
    rays = cam.unproject(uv)
    np.testing.assert_allclose(rays, pts / pts[:, 2:], atol=1e-12)
    np.testing.assert_allclose(cam.unproject(uv, depth=pts[:, 2]), pts, atol=1e-12)


@pytest.mark.parametrize("coeffs", PLUMB_BOB_SETS)
def test_plumb_bob_project_matches_opencv(coeffs: tuple[float, ...]) -> None:
    cam = plumb_bob(coeffs)
    rng = np.random.default_rng(1)
    pts = random_points(rng, 2000, min(0.95 * cam.max_incidence_angle, math.radians(70)))
    uv, valid = cam.project(pts)
    assert valid.all()
    ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), cam.K, np.array(cam.D))
    np.testing.assert_allclose(uv, ref[:, 0], atol=1e-3)


@pytest.mark.parametrize("coeffs", EQUIDISTANT_SETS)
def test_equidistant_project_matches_opencv(coeffs: tuple[float, ...]) -> None:
    cam = fisheye(coeffs)
    rng = np.random.default_rng(2)
    pts = random_points(rng, 2000, min(0.95 * cam.max_incidence_angle, math.radians(85)))
    uv, valid = cam.project(pts)
    assert valid.all()
    ref, _ = cv2.fisheye.projectPoints(pts[:, None, :], np.zeros(3), np.zeros(3), cam.K,
                                       np.array(cam.D))
    np.testing.assert_allclose(uv, ref[:, 0], atol=1e-3)


@pytest.mark.parametrize("coeffs", PLUMB_BOB_SETS)
def test_plumb_bob_undistort_matches_opencv(coeffs: tuple[float, ...]) -> None:
    cam = plumb_bob(coeffs)
    rng = np.random.default_rng(3)
    pts = random_points(rng, 1000, min(0.9 * cam.max_incidence_angle, math.radians(60)))
    uv, valid = cam.project(pts, in_image=True)
    uv = uv[valid]
    assert len(uv) > 100
    ref = cv2.undistortPoints(uv[:, None, :], cam.K, np.array(cam.D), None, None, None,
                              CRIT)[:, 0]
    xy_d = (uv - [cam.cx, cam.cy]) / [cam.fx, cam.fy]
    ours = cam.undistort(xy_d)
    # 1e-3 px expressed in normalized units, and the ground truth itself
    np.testing.assert_allclose(ours, ref, atol=1e-3 / cam.fx)
    np.testing.assert_allclose(ours, pts[valid, :2] / pts[valid, 2:], atol=1e-9)


@pytest.mark.parametrize("coeffs", EQUIDISTANT_SETS)
def test_equidistant_undistort_matches_opencv(coeffs: tuple[float, ...]) -> None:
    cam = fisheye(coeffs)
    rng = np.random.default_rng(4)
    pts = random_points(rng, 1000, min(0.9 * cam.max_incidence_angle, math.radians(80)))
    uv, _ = cam.project(pts)
    ref = cv2.fisheye.undistortPoints(uv[:, None, :], cam.K, np.array(cam.D),
                                      criteria=CRIT)[:, 0]
    ours = cam.unproject(uv)[:, :2]
    np.testing.assert_allclose(ours, ref, atol=1e-3 / cam.fx)
    np.testing.assert_allclose(ours, pts[:, :2] / pts[:, 2:], atol=1e-9)


def test_points_behind_too_close_or_nonfinite_are_invalid_and_nan() -> None:
    cam = plumb_bob()
    pts = np.array([[0.0, 0.0, -2.0], [0.1, 0.1, 5e-4], [np.nan, 0.0, 3.0],
                    [0.0, np.inf, 3.0], [0.0, 0.0, 3.0]])
    uv, valid = cam.project(pts)
    np.testing.assert_array_equal(valid, [False, False, False, False, True])
    assert np.isnan(uv[:4]).all() and np.isfinite(uv[4]).all()
    _, valid = cam.project(pts, min_depth=5.0)
    assert not valid.any()


def test_points_beyond_the_lens_fold_do_not_wrap_into_the_image() -> None:
    # Strong barrel: the radial mapping folds back at r = 1/sqrt(3*0.4) ~ 0.913 (42.4 deg);
    # OpenCV maps a point at r = 1.6 (58 deg) back to near the image centre.
    cam = CameraModel(1280, 720, 600.0, 600.0, 640.0, 360.0, "plumb_bob",
                      (-0.4, 0.0, 0.0, 0.0, 0.0))
    assert cam.max_incidence_angle == pytest.approx(math.atan(1 / math.sqrt(1.2)))
    far = np.array([[1.6, 0.0, 1.0]])
    ref, _ = cv2.projectPoints(far, np.zeros(3), np.zeros(3), cam.K, np.array(cam.D))
    assert 0 <= ref[0, 0, 0] < cam.width  # the wrap-around that must not happen here
    uv, valid = cam.project(far)
    assert not valid[0] and np.isnan(uv[0]).all()
    inside = np.array([[math.tan(math.radians(40)), 0.0, 1.0]])
    assert cam.project(inside)[1][0]
    # the inverse refuses distorted radii no lens point reaches
    r_max = 1 / math.sqrt(1.2)
    rd_max = r_max * (1 - 0.4 * r_max**2)
    out = cam.undistort(np.array([[rd_max * 1.01, 0.0], [rd_max * 0.99, 0.0]]))
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()
    assert abs(out[1, 0]) < r_max


def test_fisheye_fold_and_range() -> None:
    # theta_d = theta (1 - 0.2 theta^2): folds at theta = 1/sqrt(0.6) ~ 1.29 rad (74 deg)
    cam = fisheye((-0.2, 0.0, 0.0, 0.0))
    assert cam.max_incidence_angle == pytest.approx(1 / math.sqrt(0.6))
    pts = np.array([[math.tan(math.radians(a)), 0.0, 1.0] for a in (70.0, 78.0)])
    _, valid = cam.project(pts)
    np.testing.assert_array_equal(valid, [True, False])
    theta_max = 1 / math.sqrt(0.6)
    td_max = theta_max * (1 - 0.2 * theta_max**2)
    out = cam.undistort(np.array([[0.0, td_max * 1.001], [0.0, td_max * 0.98]]))
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()
    # without a fold the model covers the whole front hemisphere (z > 0)
    assert fisheye().max_incidence_angle == pytest.approx(math.pi / 2)


def test_in_image_flag_keeps_uv_but_clears_valid() -> None:
    cam = CameraModel(640, 480, 500.0, 500.0, 320.0, 240.0)
    pts = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [-0.64, -0.48, 1.0], [0.64, 0.0, 1.0]])
    uv, valid = cam.project(pts, in_image=True)
    np.testing.assert_array_equal(valid, [True, False, True, False])
    assert np.isfinite(uv).all()
    np.testing.assert_allclose(uv[1], [820.0, 240.0])


def test_bad_shapes_are_rejected() -> None:
    cam = plumb_bob()
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        cam.project(np.zeros(3))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        cam.unproject(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="depth"):
        cam.unproject(np.zeros((4, 2)), depth=np.ones(3))


def test_undistort_nonfinite_rows_are_nan() -> None:
    for cam in (plumb_bob(), fisheye()):
        out = cam.undistort(np.array([[np.nan, 0.0], [0.1, 0.1]]))
        assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


def test_scaled_matches_a_resized_image() -> None:
    cam = plumb_bob()
    half = cam.scaled(0.5)
    assert (half.width, half.height) == (640, 360)
    rng = np.random.default_rng(5)
    pts = random_points(rng, 100, math.radians(30))
    uv, _ = cam.project(pts)
    uv_half, _ = half.project(pts)
    # cv2.resize: dst pixel centre i maps to src (i + 0.5) / s - 0.5
    np.testing.assert_allclose(uv_half, (uv + 0.5) * 0.5 - 0.5, atol=1e-9)
    assert half.D == cam.D
    with pytest.raises(ConfigError, match="-1"):
        cam.scaled(-1)
    with pytest.raises(ConfigError, match="nothing"):
        cam.scaled(1e-5)


# ---------------------------------------------------------------------------- properties

@st.composite
def plumb_bob_cameras(draw: st.DrawFn) -> CameraModel:
    d = (draw(st.floats(-0.5, 0.5)),
         draw(st.floats(-0.3, 0.3)), draw(st.floats(-0.01, 0.01)),
         draw(st.floats(-0.01, 0.01)), draw(st.floats(-0.1, 0.1)))
    return CameraModel(1920, 1080, draw(st.floats(300, 2000)), draw(st.floats(300, 2000)),
                       draw(st.floats(800, 1100)), draw(st.floats(400, 700)), "plumb_bob", d)


@st.composite
def fisheye_cameras(draw: st.DrawFn) -> CameraModel:
    d = (draw(st.floats(-0.1, 0.1)), draw(st.floats(-0.05, 0.05)),
         draw(st.floats(-0.01, 0.01)), draw(st.floats(-0.005, 0.005)))
    return CameraModel(1920, 1080, draw(st.floats(200, 800)), draw(st.floats(200, 800)),
                       draw(st.floats(800, 1100)), draw(st.floats(400, 700)), "equidistant", d)


def _round_trip(cam: CameraModel, frac: float, azimuth: float, z: float,
                cap_deg: float) -> None:
    angle = frac * min(0.9 * cam.max_incidence_angle, math.radians(cap_deg))
    r = math.tan(angle) * z
    p = np.array([[r * math.cos(azimuth), r * math.sin(azimuth), z]])
    uv, valid = cam.project(p)
    assert valid[0]
    back = cam.unproject(uv, depth=p[:, 2])
    np.testing.assert_allclose(back, p, atol=1e-6 * max(1.0, float(np.linalg.norm(p))))
    ray = cam.unproject(uv)
    np.testing.assert_allclose(ray[0, :2], p[0, :2] / z, atol=1e-6)
    assert ray[0, 2] == 1.0


@settings(max_examples=150, deadline=None)
@given(plumb_bob_cameras(), st.floats(0.0, 1.0), st.floats(-math.pi, math.pi),
       st.floats(0.2, 80.0))
def test_plumb_bob_round_trip(cam: CameraModel, frac: float, azimuth: float, z: float) -> None:
    _round_trip(cam, frac, azimuth, z, cap_deg=60.0)


@settings(max_examples=150, deadline=None)
@given(fisheye_cameras(), st.floats(0.0, 1.0), st.floats(-math.pi, math.pi),
       st.floats(0.2, 80.0))
def test_equidistant_round_trip(cam: CameraModel, frac: float, azimuth: float,
                                z: float) -> None:
    _round_trip(cam, frac, azimuth, z, cap_deg=80.0)


@settings(max_examples=100, deadline=None)
@given(plumb_bob_cameras(), st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1)),
                                     min_size=1, max_size=20))
def test_undistort_never_returns_a_wrong_value(cam: CameraModel,
                                               xy: list[tuple[float, float]]) -> None:
    # Arbitrary distorted coordinates (some unreachable): every finite answer must
    # re-distort to the input and lie inside the valid region; the rest must be NaN rows.
    xy_d = np.array(xy)
    out = cam.undistort(xy_d)
    ok = np.isfinite(out).all(axis=1)
    assert np.isnan(out[~ok]).all()
    np.testing.assert_allclose(cam.distort(out[ok]), xy_d[ok], atol=1e-9)
    rays = np.concatenate([out[ok], np.ones((int(ok.sum()), 1))], axis=1)
    assert cam.project(rays)[1].all()
