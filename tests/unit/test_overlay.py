"""mm_perception.eval.overlay: pixel-level checks of the live camera overlay."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import Box3D, DetectedObject, ObjectClass, Track, TrackStatus
from mm_perception.detection.camera.detector import Detections2D
from mm_perception.eval.overlay import (
    CLASS_COLOURS,
    OverlayConfig,
    box_segments_cam,
    clip_segments,
    depth_lut,
    draw_overlay,
)

W, H = 640, 480
PINHOLE = CameraModel(W, H, 500.0, 500.0, 319.5, 239.5)
PLUMB_BOB = CameraModel(W, H, 500.0, 500.0, 319.5, 239.5, "plumb_bob",
                        (-0.12, 0.02, 0.001, -0.001, 0.0))
FISHEYE = CameraModel(W, H, 300.0, 300.0, 319.5, 239.5, "equidistant", (0.05, -0.01, 0.0, 0.0))
#: base_link (x forward, y left, z up) -> optical (x right, y down, z forward); camera 1.5 m up
_R = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
T_CAM_BASE = SE3(_R, -_R @ np.array([0.0, 0.0, 1.5]))
CAR = CLASS_COLOURS[ObjectClass.CAR]
PED = CLASS_COLOURS[ObjectClass.PEDESTRIAN]
#: only box wireframes, no labels (for exact colour checks)
BOXES_ONLY = OverlayConfig(draw_labels=False)


def _black() -> np.ndarray:
    return np.zeros((H, W, 3), dtype=np.uint8)


def _obj(center: tuple[float, float, float], label: ObjectClass = ObjectClass.CAR,
         size: tuple[float, float, float] = (4.0, 2.0, 1.6), yaw: float = 0.3,
         score: float = 0.9) -> DetectedObject:
    return DetectedObject(Box3D(np.array(center, float), np.array(size, float), yaw), label,
                          score)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def _has_colour_near(img: np.ndarray, u: float, v: float, colour: tuple[int, int, int],
                     tol: int = 2) -> bool:
    ui, vi = round(u), round(v)
    win = img[max(vi - tol, 0):vi + tol + 1, max(ui - tol, 0):ui + tol + 1]
    return bool(np.any(np.all(win == np.array(colour, np.uint8), axis=2)))


def _point_at(camera: CameraModel, u: float, v: float, depth: float) -> np.ndarray:
    """The base_link point that projects to pixel (u, v) at optical depth ``depth``."""
    p_cam = camera.unproject(np.array([[u, v]]), np.array([depth]))
    return T_CAM_BASE.inverse().apply(p_cam)[0]


# ------------------------------------------------------------------------------- boxes


@pytest.mark.parametrize("camera", [PINHOLE, PLUMB_BOB, FISHEYE], ids=["pinhole", "plumb_bob",
                                                                       "fisheye"])
def test_box_in_front_draws_its_class_colour_at_the_projected_corners(
        camera: CameraModel) -> None:
    obj = _obj((12.0, 1.0, 0.8))
    img = _black()
    out = draw_overlay(img, camera, T_CAM_BASE, objects=[obj], config=BOXES_ONLY)
    uv, ok = camera.project(T_CAM_BASE.apply(obj.box.corners()), in_image=True)
    assert ok.all()
    for u, v in uv:
        assert _has_colour_near(out, u, v, CAR), (u, v)
    changed = _changed(out, img)
    assert changed.sum() > 100
    # every drawn pixel is the class colour (no antialiasing by default), nothing else drawn
    assert np.all(out[changed] == np.array(CAR, np.uint8))
    # nothing far from the box's projected extent
    u0, v0 = uv.min(axis=0) - 3
    u1, v1 = uv.max(axis=0) + 3
    vs, us = np.nonzero(changed)
    assert us.min() >= u0 and us.max() <= u1 and vs.min() >= v0 and vs.max() <= v1
    assert np.array_equal(img, _black()), "the input image must not be modified"


def test_box_colours_follow_the_class_and_config() -> None:
    objs = [_obj((12.0, 3.0, 0.8)), _obj((12.0, -3.0, 0.9), ObjectClass.PEDESTRIAN,
                                         size=(0.6, 0.6, 1.8))]
    out = draw_overlay(_black(), PINHOLE, T_CAM_BASE, objects=objs, config=BOXES_ONLY)
    colours = {tuple(c) for c in out[_changed(out, _black())].tolist()}
    assert colours == {CAR, PED}
    cfg = OverlayConfig(draw_labels=False, class_colours={ObjectClass.CAR: (1, 2, 3)})
    out = draw_overlay(_black(), PINHOLE, T_CAM_BASE, objects=objs[:1], config=cfg)
    assert {tuple(c) for c in out[_changed(out, _black())].tolist()} == {(1, 2, 3)}


@pytest.mark.parametrize("center", [(-10.0, 0.0, 1.0), (-0.5, 0.0, 1.5), (5.0, 60.0, 1.0),
                                    (5.0, 0.0, 80.0)],
                         ids=["behind", "around-camera-but-behind", "left-outside",
                              "above-outside"])
def test_box_behind_or_outside_draws_nothing(center: tuple[float, float, float]) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    size = (0.8, 0.8, 0.8) if center[0] == -0.5 else (4.0, 2.0, 1.6)
    out = draw_overlay(img, PINHOLE, T_CAM_BASE, objects=[_obj(center, size=size)])
    assert np.array_equal(out, img)
    assert out is not img


def test_box_crossing_the_near_plane_is_clipped_not_wrapped() -> None:
    # right of the camera (y = -1), from x = -2 (behind) to x = +2 (in front)
    obj = _obj((0.0, -1.0, 1.5), size=(4.0, 0.5, 1.0), yaw=0.0)
    out = draw_overlay(_black(), PINHOLE, T_CAM_BASE, objects=[obj], config=BOXES_ONLY)
    changed = _changed(out, _black())
    us = np.nonzero(changed)[1]
    assert us.size > 0
    assert np.all(out[changed] == np.array(CAR, np.uint8))
    # a behind corner projected naively would land on the left half (u < cx); clipped edges
    # run from the front corners to the right border instead
    assert us.min() > PINHOLE.cx
    assert us.max() >= W - 2


def test_box_segments_cam_clips_at_the_near_plane() -> None:
    corners = Box3D(np.array([0.0, 0.0, 0.0]), np.array([2.0, 2.0, 2.0]), 0.0).corners()
    a, b, idx = box_segments_cam(corners[None], 0.5)  # z in [-1, 1]: the top face in front
    assert a.shape == b.shape and a.shape[0] == idx.shape[0] == 8  # 4 top + 4 verticals
    assert np.all(a[:, 2] >= 0.5 - 1e-12) and np.all(b[:, 2] >= 0.5 - 1e-12)
    a, b, idx = box_segments_cam(corners[None] - [0, 0, 5.0], 0.5)
    assert idx.size == 0


def test_clip_segments() -> None:
    p0 = np.array([[-10.0, 5.0], [1.0, 1.0], [-5.0, -5.0], [np.nan, 0.0], [2.0, 2.0]])
    p1 = np.array([[20.0, 5.0], [3.0, 3.0], [-1.0, -1.0], [1.0, 1.0], [2.0, 2.0]])
    q0, q1, keep = clip_segments(p0, p1, 0.0, 10.0, 0.0, 10.0)
    assert keep.tolist() == [True, True, False, False, True]
    np.testing.assert_allclose(q0[0], [0.0, 5.0])
    np.testing.assert_allclose(q1[0], [10.0, 5.0])
    np.testing.assert_allclose(q0[1], [1.0, 1.0])
    np.testing.assert_allclose(q1[1], [3.0, 3.0])


# ------------------------------------------------------------------------------ points


def test_points_are_drawn_coloured_by_depth_and_nan_points_are_skipped() -> None:
    cfg = OverlayConfig(point_radius_px=0, depth_range_m=(0.0, 50.0))
    near_pt = _point_at(PINHOLE, 100.0, 120.0, 5.0)
    far_pt = _point_at(PINHOLE, 500.0, 300.0, 40.0)
    pts = np.array([near_pt, [np.nan, 1.0, 1.0], far_pt, [np.inf, 0.0, 0.0],
                    [-5.0, 0.0, 1.0]])  # the last one is behind the camera
    img = _black()
    out = draw_overlay(img, PINHOLE, T_CAM_BASE, pts, config=cfg)
    changed = _changed(out, img)
    assert changed.sum() == 2
    lut = depth_lut()
    assert tuple(out[120, 100]) == tuple(lut[int(5.0 / 50.0 * 255)])
    assert tuple(out[300, 500]) == tuple(lut[int(40.0 / 50.0 * 255)])
    assert tuple(out[120, 100]) != tuple(out[300, 500])


def test_depth_lut_is_turbo_in_rgb_order() -> None:
    lut = depth_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    r0, _, b0 = lut[0].astype(int)
    r1, _, b1 = lut[255].astype(int)
    assert b0 > r0 and r1 > b1  # near = blue-purple, far = red, channels R, G, B


def test_nearest_point_wins_and_radius_grows_the_disk() -> None:
    cfg = OverlayConfig(point_radius_px=1, depth_range_m=(0.0, 50.0))
    pts = np.array([_point_at(PINHOLE, 200.0, 200.0, 30.0), _point_at(PINHOLE, 200.0, 200.0,
                                                                       3.0)])
    out = draw_overlay(_black(), PINHOLE, T_CAM_BASE, pts, config=cfg)
    changed = _changed(out, _black())
    assert changed.sum() == 9  # a 3x3 disk
    assert changed[199:202, 199:202].all()
    near_colour = depth_lut()[int(3.0 / 50.0 * 255)]
    assert np.all(out[199:202, 199:202] == near_colour)


def test_max_points_subsamples() -> None:
    pts = np.array([_point_at(PINHOLE, 50.0 + 20 * k, 240.0, 10.0) for k in range(20)])
    out = draw_overlay(_black(), PINHOLE, T_CAM_BASE, pts,
                       config=OverlayConfig(point_radius_px=0, max_points=5))
    assert _changed(out, _black()).sum() == 5


def test_only_nan_or_behind_points_leave_the_image_unchanged() -> None:
    img = np.full((H, W, 3), 77, np.uint8)
    pts = np.array([[np.nan, np.nan, np.nan], [-3.0, 0.0, 0.0], [1e30, 1e30, -1e30]])
    out = draw_overlay(img, PINHOLE, T_CAM_BASE, pts)
    assert np.array_equal(out, img)


# ---------------------------------------------------------------------- tracks and 2D


def test_tracks_draw_only_confirmed_and_coasting_with_a_label() -> None:
    obj = _obj((12.0, 0.0, 0.8), yaw=0.0)
    tentative = Track(3, obj, TrackStatus.TENTATIVE)
    out = draw_overlay(_black(), PINHOLE, T_CAM_BASE, tracks=[tentative])
    assert np.array_equal(out, _black())
    confirmed = Track(3, obj, TrackStatus.CONFIRMED)
    no_label = draw_overlay(_black(), PINHOLE, T_CAM_BASE, tracks=[confirmed],
                            config=BOXES_ONLY)
    with_label = draw_overlay(_black(), PINHOLE, T_CAM_BASE, tracks=[confirmed])
    assert np.all(no_label[_changed(no_label, _black())] == np.array(CAR, np.uint8))
    # the label adds pixels just above the projected top centre
    top = obj.box.center + np.array([0.0, 0.0, obj.box.size[2] / 2])
    (u, v), = PINHOLE.project(T_CAM_BASE.apply(top[None]))[0]
    extra = _changed(with_label, no_label)
    vs, us = np.nonzero(extra)
    assert us.size > 10
    assert abs(us.min() - u) < 5 and vs.max() <= v
    coasting = Track(3, obj, TrackStatus.COASTING)
    out = draw_overlay(_black(), PINHOLE, T_CAM_BASE, tracks=[coasting], config=BOXES_ONLY)
    assert np.array_equal(out, no_label)


def _dets(boxes: list[list[float]], labels: list[ObjectClass]) -> Detections2D:
    k = len(boxes)
    return Detections2D(np.array(boxes, np.float32).reshape(-1, 4),
                        np.full(k, 0.8, np.float32), tuple(labels),
                        np.full((k, 2), 0.5, np.float32))


def test_detections_2d_are_rectangles_in_class_colour() -> None:
    dets = _dets([[100.0, 50.0, 200.0, 150.0], [np.nan, 0.0, 10.0, 10.0]],
                 [ObjectClass.PEDESTRIAN, ObjectClass.CAR])
    out = draw_overlay(_black(), PINHOLE, T_CAM_BASE, detections_2d=dets, config=BOXES_ONLY)
    changed = _changed(out, _black())
    assert np.all(out[changed] == np.array(PED, np.uint8))
    for u, v in ((100, 50), (199, 50), (100, 149), (199, 149), (150, 50), (100, 100)):
        assert tuple(out[v, u]) == PED, (u, v)
    assert not changed[100, 150]  # inside stays clear
    vs, us = np.nonzero(changed)
    assert (us.min(), us.max(), vs.min(), vs.max()) == (100, 199, 50, 149)


# ------------------------------------------------------------------------- edge cases


def test_empty_inputs_return_an_unchanged_copy() -> None:
    img = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    for points in (None, np.zeros((0, 3)), np.zeros(0)):
        out = draw_overlay(img, PINHOLE, T_CAM_BASE, points, objects=[], tracks=[],
                           detections_2d=_dets([], []))
        assert np.array_equal(out, img)
        assert out is not img and not np.shares_memory(out, img)
        assert out.dtype == np.uint8 and out.flags.c_contiguous


def test_non_contiguous_image_is_accepted() -> None:
    big = np.zeros((H, W * 2, 3), np.uint8)
    view = big[:, ::2]
    out = draw_overlay(view, PINHOLE, T_CAM_BASE, objects=[_obj((12.0, 1.0, 0.8))])
    assert out.shape == (H, W, 3) and _changed(out, _black()).any()
    assert not big.any()


def test_image_of_another_size_raises_naming_both_sizes() -> None:
    with pytest.raises(ValueError, match=r"320x240.*640x480"):
        draw_overlay(np.zeros((240, 320, 3), np.uint8), PINHOLE, T_CAM_BASE)


@pytest.mark.parametrize("image, needle", [
    (np.zeros((H, W, 3), np.float32), "uint8"),
    (np.zeros((H, W), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((H, W, 4), np.uint8), r"\(H, W, 3\)"),
    ([[0]], "numpy array"),
])
def test_bad_images_raise_clear_errors(image: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        draw_overlay(image, PINHOLE, T_CAM_BASE)  # type: ignore[arg-type]


def test_bad_point_shape_raises() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        draw_overlay(_black(), PINHOLE, T_CAM_BASE, np.zeros((4, 2)))


@pytest.mark.parametrize("kwargs, needle", [
    ({"point_radius_px": -1}, "point_radius_px"),
    ({"max_points": 0}, "max_points"),
    ({"line_thickness": 0}, "line_thickness"),
    ({"near_m": 0.0}, "near_m"),
    ({"near_m": float("nan")}, "near_m"),
    ({"depth_range_m": (5.0, 1.0)}, "depth_range_m"),
    ({"depth_range_m": (0.0,)}, "depth_range_m"),
    ({"edge_subdivisions": 0}, "edge_subdivisions"),
    ({"font_scale": -1.0}, "font_scale"),
    ({"draw_points": 1}, "draw_points"),
    ({"track_statuses": ("alive",)}, "track_statuses"),
    ({"class_colours": {ObjectClass.CAR: (0, 0, 256)}}, "class_colours"),
    ({"class_colours": {"spaceship": (0, 0, 0)}}, "spaceship"),
])
def test_config_validation_names_the_bad_value(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        OverlayConfig(**kwargs)  # type: ignore[arg-type]


def test_overlay_imports_without_ros_or_opencv() -> None:
    code = textwrap.dedent("""
        import importlib.abc, sys
        BLOCKED = {"rclpy", "cv2", "visualization_msgs", "std_msgs", "geometry_msgs",
                   "sensor_msgs", "matplotlib"}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked import of {name}")
        sys.meta_path.insert(0, Block())
        import mm_perception.eval.overlay
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
