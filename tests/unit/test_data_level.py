"""Data-level fusion: projection against OpenCV, z-buffer and radar image against brute-force
loops, painting, and DataLevelFusion on degenerate and de-skewed inputs."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_perception.core.calibration import Rig
from mm_perception.core.camera import CameraModel
from mm_perception.core.ego_motion import OdometryBuffer
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import CameraFrame, EgoState, PointCloud, RadarScan, SensorSet
from mm_perception.fusion.data_level import (
    DataLevelConfig,
    DataLevelFusion,
    Projection,
    depth_image,
    paint_points,
    project_points,
    radar_image,
)

MS = 1_000_000
S = 1_000_000_000

PLUMB_BOB = CameraModel(1280, 720, 1012.6, 1010.9, 647.3, 355.8, "plumb_bob",
                        (-0.2814, 0.0892, 3.1e-4, -2.2e-4, -0.0121))
PINCUSHION = CameraModel(800, 600, 700.0, 705.0, 401.5, 298.0, "plumb_bob",
                         (0.12, -0.25, -0.0008, 0.0012, 0.08))
# strong barrel: the radial mapping folds at r = 0.913 (incidence 42 deg), inside the image
FOLDING = CameraModel(1280, 720, 500.0, 500.0, 640.0, 360.0, "plumb_bob",
                      (-0.4, 0.0, 0.001, -0.001, 0.0))
FISHEYE = CameraModel(1280, 960, 380.0, 381.0, 641.2, 478.9, "equidistant",
                      (0.05, -0.01, 0.002, -0.0005))
# equidistant lens that folds at ~77 deg while the image reaches further
FISHEYE_FOLD = CameraModel(1280, 960, 300.0, 300.0, 640.0, 480.0, "equidistant",
                           (-0.2, 0.0, 0.0, 0.0))
PINHOLE = CameraModel(640, 480, 500.0, 500.0, 319.5, 239.5)

# sensor -> optical frame of a forward camera, with a little of everything
T_CAM_SENSOR = SE3.from_rpy(-math.pi / 2 + 0.03, 0.02, -math.pi / 2 - 0.05, (0.1, 0.4, -0.3))


def cloud_around(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) sensor-frame points all around (360 deg, some behind, near, far, high)."""
    az = rng.uniform(-math.pi, math.pi, n)
    el = rng.uniform(-0.6, 0.6, n)
    r = rng.uniform(0.05, 80.0, n)
    return np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az),
                     r * np.sin(el)], axis=1)


def expected_valid(points: np.ndarray, T: SE3, cam: CameraModel, min_depth: float,
                   max_depth: float = math.inf) -> tuple[np.ndarray, np.ndarray]:
    """Independent validity via CameraModel.project and the nearest-pixel-centre rule."""
    pc = T.apply(np.asarray(points, dtype=np.float64))
    uv, valid = cam.project(pc, min_depth=min_depth)
    with np.errstate(invalid="ignore"):
        valid &= ((uv[:, 0] >= -0.5) & (uv[:, 0] < cam.width - 0.5)
                  & (uv[:, 1] >= -0.5) & (uv[:, 1] < cam.height - 0.5) & (pc[:, 2] <= max_depth))
    return uv, valid


def cv2_uv(points: np.ndarray, T: SE3, cam: CameraModel) -> np.ndarray:
    rvec, _ = cv2.Rodrigues(T.rotation)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 1, 3)
    if cam.distortion_model == "equidistant":
        uv, _ = cv2.fisheye.projectPoints(pts, rvec, T.translation, cam.K, np.asarray(cam.D))
    else:
        uv, _ = cv2.projectPoints(pts, rvec, T.translation, cam.K, np.asarray(cam.D))
    return np.asarray(uv).reshape(-1, 2)


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(("kwargs", "needles"), [
    ({"min_depth_m": 0.0}, ["min_depth_m", "0.0"]),
    ({"min_depth_m": math.nan}, ["min_depth_m", "nan"]),
    ({"min_depth_m": "1"}, ["min_depth_m", "'1'"]),
    ({"max_depth_m": 0.05}, ["max_depth_m", "0.05"]),
    ({"max_depth_m": math.nan}, ["max_depth_m", "nan"]),
    ({"deskew_to_camera": 1}, ["deskew_to_camera", "1"]),
    ({"paint_rgb": "yes"}, ["paint_rgb", "'yes'"]),
    ({"radar_splat_radius_px": -1}, ["radar_splat_radius_px", "-1"]),
    ({"radar_splat_radius_px": 1.5}, ["radar_splat_radius_px", "1.5"]),
    ({"radar_splat_radius_px": 33}, ["radar_splat_radius_px", "33"]),
    ({"doppler_ego_compensation": None}, ["doppler_ego_compensation", "None"]),
])
def test_config_errors_name_key_and_value(kwargs: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        DataLevelConfig(**kwargs)
    for needle in needles:
        assert needle in str(err.value)


def test_config_accepts_infinite_max_depth() -> None:
    assert DataLevelConfig(max_depth_m=math.inf).max_depth_m == math.inf


# ---------------------------------------------------------------------------- projection


@pytest.mark.parametrize("cam", [PLUMB_BOB, PINCUSHION, FOLDING, FISHEYE, FISHEYE_FOLD,
                                 PINHOLE], ids=["barrel", "pincushion", "folding", "fisheye",
                                                "fisheye_fold", "pinhole"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_projection_matches_opencv(cam: CameraModel, dtype: type) -> None:
    rng = np.random.default_rng(1)
    pts: np.ndarray = cloud_around(rng, 40_000).astype(dtype)
    proj = project_points(pts, T_CAM_SENSOR, cam, min_depth=0.1, max_depth=60.0)
    _, valid = expected_valid(pts, T_CAM_SENSOR, cam, 0.1, 60.0)
    assert valid.sum() > 500  # the test sees enough of the image
    np.testing.assert_array_equal(proj.valid, valid)
    ref = cv2_uv(pts[proj.index], T_CAM_SENSOR, cam)
    np.testing.assert_allclose(proj.uv_valid, ref, rtol=0, atol=1e-6)
    depth = T_CAM_SENSOR.apply(pts.astype(np.float64))[proj.index, 2]
    np.testing.assert_allclose(proj.depth_valid, depth, rtol=1e-12, atol=1e-12)
    rows = np.floor(ref[:, 1] + 0.5).astype(np.int64)
    cols = np.floor(ref[:, 0] + 0.5).astype(np.int64)
    np.testing.assert_array_equal(proj.pixel, rows * cam.width + cols)


def test_folding_lens_rejects_points_opencv_folds_back_into_the_image() -> None:
    """Beyond the fold cv2 happily maps points into the image; they must not be valid."""
    cam = FOLDING
    angle = np.radians(np.linspace(45.0, 80.0, 50))  # all beyond the 42 deg fold
    pc = np.stack([np.tan(angle) * 5.0, np.zeros(50), np.full(50, 5.0)], axis=1)
    uv = cv2_uv(pc, SE3.identity(), cam)
    assert np.any((uv[:, 0] >= 0) & (uv[:, 0] < cam.width))  # cv2 folds some into view
    assert project_points(pc, SE3.identity(), cam).count == 0


def test_full_size_views_and_invalid_rows() -> None:
    pts = np.array([[0.0, 0.0, 10.0], [0.0, 0.0, -10.0], [np.nan, 0.0, 5.0],
                    [1e3, 0.0, 1.0], [np.inf, 0.0, 1.0], [0.5, -0.2, 4.0]])
    proj = project_points(pts, SE3.identity(), PINHOLE, min_depth=0.1)
    np.testing.assert_array_equal(proj.valid, [True, False, False, False, False, True])
    np.testing.assert_array_equal(proj.index, [0, 5])
    assert proj.uv.shape == (6, 2) and proj.depth.shape == (6,)
    assert np.all(np.isnan(proj.uv[1:5])) and np.all(np.isnan(proj.depth[1:5]))
    np.testing.assert_allclose(proj.uv[0], [319.5, 239.5])
    np.testing.assert_allclose(proj.depth[[0, 5]], [10.0, 4.0])
    rows, cols = proj.rows_cols
    np.testing.assert_array_equal(rows, [240, 215])
    np.testing.assert_array_equal(cols, [320, 382])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_depth_limits(dtype: type) -> None:
    """min_depth < z <= max_depth, exactly (neighbouring floats of the limits)."""
    lo, hi = dtype(0.1), dtype(50.0)
    z = [lo, np.nextafter(lo, dtype(1)), hi, np.nextafter(hi, dtype(100))]
    pts: np.ndarray = np.array([[0.0, 0.0, zz] for zz in z], dtype=dtype)
    proj = project_points(pts, SE3.identity(), PINHOLE, float(lo), float(hi))
    assert proj.index.tolist() == [1, 2]


def test_image_border_pixels() -> None:
    """Nearest-pixel-centre rule: u in [-0.5, W - 0.5) is inside, the far edge is not."""
    cam = PINHOLE
    z = 2.0

    def at(u: float, v: float) -> list[float]:
        return [(u - cam.cx) / cam.fx * z, (v - cam.cy) / cam.fy * z, z]

    pts = np.array([at(-0.5, 100.0), at(-0.5001, 100.0), at(639.4999, 100.0),
                    at(639.5, 100.0), at(100.0, -0.5), at(100.0, 479.4999),
                    at(100.0, 479.5), at(0.0, 0.0), at(639.0, 479.0)])
    proj = project_points(pts, SE3.identity(), cam)
    assert proj.index.tolist() == [0, 2, 4, 5, 7, 8]
    rows, cols = proj.rows_cols
    assert cols.tolist() == [0, 639, 100, 100, 0, 639]
    assert rows.tolist() == [100, 100, 0, 479, 0, 479]


def test_empty_and_all_invalid_inputs() -> None:
    for pts in (np.zeros((0, 3)), np.zeros((0, 3), np.float32),
                np.full((5, 3), np.nan), np.array([[0.0, 0.0, -1.0]] * 3)):
        proj = project_points(pts, T_CAM_SENSOR, PLUMB_BOB)
        assert proj.count == 0 and proj.n_points == len(pts)
        assert proj.uv.shape == (len(pts), 2)
        assert np.all(np.isnan(depth_image(proj)))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        project_points(np.zeros((4, 2)), T_CAM_SENSOR, PLUMB_BOB)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1),
       cam=st.sampled_from([PLUMB_BOB, PINCUSHION, FOLDING, FISHEYE, PINHOLE]),
       min_depth=st.sampled_from([1e-3, 0.1, 2.0]))
def test_float32_cull_never_drops_a_valid_point(seed: int, cam: CameraModel,
                                                min_depth: float) -> None:
    """float32 input takes the float32 cull; the same values as float64 take the exact
    path. Points are concentrated at the depth limit and on the image border."""
    rng = np.random.default_rng(seed)
    n = 3000
    roll, pitch, yaw = rng.uniform(-math.pi, math.pi, 3)
    T = SE3.from_rpy(roll, pitch, yaw, rng.uniform(-5, 5, 3))
    # optical-frame points on the image border / at the depth limit, then to the sensor
    u = np.where(rng.random(n) < 0.5, rng.choice([-0.5, cam.width - 0.5], n),
                 rng.uniform(-1, cam.width, n)) + rng.normal(0, 1e-3, n)
    v = np.where(rng.random(n) < 0.5, rng.choice([-0.5, cam.height - 0.5], n),
                 rng.uniform(-1, cam.height, n)) + rng.normal(0, 1e-3, n)
    z = np.where(rng.random(n) < 0.5, min_depth * (1 + rng.normal(0, 1e-6, n)),
                 rng.uniform(0.0, 100.0, n))
    rays = cam.unproject(np.stack([u, v], axis=1))
    ok = np.all(np.isfinite(rays), axis=1)
    pc = rays[ok] * z[ok, None]
    pts32 = T.inverse().apply(pc).astype(np.float32)
    fast = project_points(pts32, T, cam, min_depth)
    exact = project_points(pts32.astype(np.float64), T, cam, min_depth)
    np.testing.assert_array_equal(fast.index, exact.index)
    np.testing.assert_array_equal(fast.uv_valid, exact.uv_valid)


# ---------------------------------------------------------------------------- images


def brute_depth(proj: Projection) -> np.ndarray:
    img = np.full((proj.height, proj.width), np.nan, dtype=np.float32)
    rows, cols = proj.rows_cols
    for r, c, d in zip(rows, cols, proj.depth_valid.astype(np.float32), strict=True):
        if np.isnan(img[r, c]) or d < img[r, c]:
            img[r, c] = d
    return img


def test_depth_image_matches_a_per_pixel_loop() -> None:
    cam = CameraModel(40, 30, 35.0, 36.0, 19.3, 14.8, "plumb_bob", (-0.2, 0.05, 0.0, 0.0, 0.0))
    rng = np.random.default_rng(3)
    pc = np.stack([rng.uniform(-1, 1, 3000), rng.uniform(-1, 1, 3000),
                   rng.uniform(-1.0, 5.0, 3000)], axis=1)
    proj = project_points(pc, SE3.identity(), cam, 0.1)
    assert proj.count > 1000  # many points per pixel: the z-buffer matters
    img = depth_image(proj, cam.height, cam.width)
    assert img.dtype == np.float32 and img.shape == (30, 40)
    np.testing.assert_array_equal(img, brute_depth(proj))
    # several projections merge into one z-buffer
    half = project_points(pc[:1500], SE3.identity(), cam, 0.1)
    rest = project_points(pc[1500:], SE3.identity(), cam, 0.1)
    np.testing.assert_array_equal(depth_image([half, rest]), img)
    with pytest.raises(ValueError, match="size"):
        depth_image(proj, 31, 40)
    assert depth_image([], 3, 4).shape == (3, 4)


def brute_radar(proj: Projection, doppler: np.ndarray, rcs: np.ndarray,
                radius: int) -> np.ndarray:
    best: dict[tuple[int, int], tuple[float, int]] = {}
    rows, cols = proj.rows_cols
    for k in range(proj.count):
        for dr in range(-radius, radius + 1):
            for dc in range(-radius, radius + 1):
                r, c = int(rows[k]) + dr, int(cols[k]) + dc
                if 0 <= r < proj.height and 0 <= c < proj.width:
                    key = (float(proj.depth_valid[k]), int(proj.index[k]))
                    if (r, c) not in best or key < best[(r, c)]:
                        best[(r, c)] = key
    out = np.full((proj.height, proj.width, 2), np.nan, dtype=np.float32)
    for (r, c), (_, i) in best.items():
        out[r, c] = doppler[i], rcs[i]
    return out


@pytest.mark.parametrize("radius", [0, 1, 3])
def test_radar_image_matches_a_loop(radius: int) -> None:
    cam = CameraModel(48, 32, 40.0, 40.0, 23.5, 15.5)
    rng = np.random.default_rng(4)
    n = 120
    pc = np.stack([rng.uniform(-1, 1, n), rng.uniform(-0.7, 0.7, n),
                   rng.choice([2.0, 3.0, 4.0], n)], axis=1)  # equal depths: index ties
    pc[5] = pc[6]  # the very same point twice: the lower index wins
    doppler = rng.normal(0, 5, n).astype(np.float32)
    rcs = rng.uniform(-10, 20, n).astype(np.float32)
    proj = project_points(pc, SE3.identity(), cam)
    img = radar_image(proj, doppler, rcs, radius)
    assert img.shape == (32, 48, 2) and img.dtype == np.float32
    np.testing.assert_array_equal(img, brute_radar(proj, doppler, rcs, radius))
    with pytest.raises(ValueError, match="doppler"):
        radar_image(proj, doppler[:-1], rcs)
    with pytest.raises(ValueError, match="radius"):
        radar_image(proj, doppler, rcs, -1)


def test_paint_points() -> None:
    cam = CameraModel(64, 48, 50.0, 50.0, 31.5, 23.5)
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    scores = rng.random((48, 64, 4)).astype(np.float32)
    pc = np.stack([rng.uniform(-3, 3, 500), rng.uniform(-3, 3, 500),
                   rng.uniform(-2, 6, 500)], axis=1)
    proj = project_points(pc, SE3.identity(), cam, 0.1)
    feats, painted = paint_points(proj, image, scores)
    assert feats.shape == (500, 7) and feats.dtype == np.float32
    np.testing.assert_array_equal(painted, proj.valid)
    uv = proj.uv
    for i in range(500):
        if not painted[i]:
            assert not feats[i].any()
            continue
        r, c = math.floor(float(uv[i, 1]) + 0.5), math.floor(float(uv[i, 0]) + 0.5)
        np.testing.assert_array_equal(feats[i, :3], image[r, c].astype(np.float32) / 255)
        np.testing.assert_array_equal(feats[i, 3:], scores[r, c])
    # a stride-4 score map is read at the scaled pixel position
    small = rng.random((12, 16, 2)).astype(np.float32)
    feats_s, _ = paint_points(proj, image, small)
    for j in np.flatnonzero(painted):
        r = min(math.floor((float(uv[j, 1]) + 0.5) / 4), 11)
        c = min(math.floor((float(uv[j, 0]) + 0.5) / 4), 15)
        np.testing.assert_array_equal(feats_s[j, 3:], small[r, c])
    assert paint_points(proj, image)[0].shape == (500, 3)
    with pytest.raises(ValueError, match="uint8"):
        paint_points(proj, image.astype(np.float32))
    with pytest.raises(ValueError, match="class_scores"):
        paint_points(proj, image, scores[:, :, 0])


# ---------------------------------------------------------------------------- fusion

CAM_W, CAM_H = 320, 240
RIG: dict[str, Any] = {
    "base_frame": "base_link",
    "sensors": {
        "cam_front": {
            "type": "camera", "topic": "/cam_front/image", "frame_id": "cam_front",
            "intrinsics": {"width": CAM_W, "height": CAM_H, "fx": 200.0, "fy": 200.0,
                           "cx": 159.5, "cy": 119.5, "distortion_model": "plumb_bob",
                           "D": [-0.1, 0.01, 0.0, 0.0, 0.0]},
            "extrinsics": {"translation": [1.5, 0.0, 1.2], "rpy_deg": [-90.0, 0.0, -90.0]}},
        "cam_left": {  # looks 45 deg left: overlaps cam_front
            "type": "camera", "topic": "/cam_left/image", "frame_id": "cam_left",
            "intrinsics": {"width": CAM_W, "height": CAM_H, "fx": 200.0, "fy": 200.0,
                           "cx": 159.5, "cy": 119.5, "distortion_model": "none", "D": []},
            "extrinsics": {"translation": [1.5, 0.3, 1.2], "rpy_deg": [-90.0, 0.0, -45.0]}},
        "cam_noint": {
            "type": "camera", "topic": "/cam_noint/image", "frame_id": "cam_noint",
            "camera_info_topic": "/cam_noint/info",
            "extrinsics": {"translation": [0.0, 0.0, 1.2], "rpy_deg": [-90.0, 0.0, 90.0]}},
        "lidar": {
            "type": "lidar", "topic": "/lidar", "frame_id": "lidar",
            "extrinsics": {"translation": [0.0, 0.0, 1.8], "rpy_deg": [0.0, 0.0, 0.0]}},
        "radar": {
            "type": "radar", "topic": "/radar", "frame_id": "radar",
            "fields": {"x": "x", "y": "y", "z": "z", "doppler": "v"},
            "extrinsics": {"translation": [3.6, 0.0, 0.5], "rpy_deg": [0.0, 0.0, 0.0]}},
    },
}
STAMP = 5 * S


def rig() -> Rig:
    return Rig.from_dict(RIG)


def ext(name: str) -> SE3:
    """T_base_sensor of a rig sensor."""
    pose = rig().sensors[name].extrinsics
    assert pose is not None
    return pose


def intr(name: str) -> CameraModel:
    model = rig().sensors[name].intrinsics
    assert model is not None
    return model


def frame(name: str, stamp: int = STAMP, seed: int = 0) -> CameraFrame:
    img = np.random.default_rng(seed).integers(0, 256, (CAM_H, CAM_W, 3), dtype=np.uint8)
    return CameraFrame(name, stamp, name, img, "rgb8")


def lidar_cloud(xyz: np.ndarray, stamp: int = STAMP,
                offsets: np.ndarray | None = None) -> PointCloud:
    pts = np.zeros(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                    ("intensity", "<f4")])
    for k, name in enumerate("xyz"):
        pts[name] = xyz[:, k]
    return PointCloud("lidar", stamp, "lidar", pts, offsets)


def wall_points(n: int = 4000, x: float = 12.0) -> np.ndarray:
    """A wall x m ahead of the LiDAR, plus points all around (and behind) the car; float32
    values (as the cloud stores them) in a float64 array."""
    rng = np.random.default_rng(7)
    wall = np.stack([np.full(n, x), rng.uniform(-8, 8, n), rng.uniform(-1.7, 2.0, n)], axis=1)
    return np.concatenate([wall, cloud_around(rng, n)]).astype(np.float32).astype(np.float64)


def radar_scan(xyz: np.ndarray, stamp: int = STAMP) -> RadarScan:
    n = len(xyz)
    return RadarScan("radar", stamp, "radar", xyz.astype(np.float32),
                     np.linspace(-5, 5, n).astype(np.float32),
                     np.linspace(0, 10, n).astype(np.float32))


def test_fuse_lidar_camera_radar() -> None:
    fusion = DataLevelFusion(rig(), DataLevelConfig(radar_splat_radius_px=1))
    xyz = wall_points()
    radar_xyz = np.array([[8.4, 0.0, 0.5], [20.0, -3.0, 0.0], [-5.0, 0.0, 0.0]])
    sset = SensorSet(STAMP, cameras={"cam_front": frame("cam_front"),
                                     "cam_left": frame("cam_left", seed=1)},
                     lidars={"lidar": lidar_cloud(xyz)}, radars={"radar": radar_scan(radar_xyz)})
    out = fusion.fuse(sset)
    assert out.camera_names == ("cam_front", "cam_left") and not out.drops
    front = out.cameras["cam_front"]
    T = ext("cam_front").inverse() @ ext("lidar")
    proj = project_points(xyz, T, intr("cam_front"), 0.1, 250.0)
    np.testing.assert_array_equal(front.depth, depth_image(proj))
    assert np.count_nonzero(~np.isnan(front.depth)) > 1000
    # radar: two of three points in front of cam_front, 3x3 squares each
    T_r = ext("cam_front").inverse() @ ext("radar")
    rproj = project_points(radar_xyz, T_r, intr("cam_front"), 0.1, 250.0)
    assert rproj.count == 2
    np.testing.assert_array_equal(front.radar, radar_image(rproj, np.linspace(-5, 5, 3),
                                                           np.linspace(0, 10, 3), 1))
    assert np.count_nonzero(~np.isnan(front.radar[:, :, 0])) == 18
    assert front.rgbdr().shape == (CAM_H, CAM_W, 6)
    assert not np.isnan(front.rgbdr()).any()
    # painting: structured array in input order with the painting camera's colour
    painted = out.painted["lidar"]
    assert painted.dtype.names == ("x", "y", "z", "r", "g", "b", "camera", "index")
    np.testing.assert_array_equal(painted["index"], np.arange(len(xyz)))
    by_front = painted["camera"] == 0
    assert by_front.sum() > 1000 and (painted["camera"] == 1).sum() > 100
    img = sset.cameras["cam_front"].image
    rows, cols = proj.rows_cols
    pos = np.full(len(xyz), -1)
    pos[proj.index] = np.arange(proj.count)
    k = pos[by_front]
    assert np.all(k >= 0)
    np.testing.assert_array_equal(
        np.stack([painted["r"], painted["g"], painted["b"]], axis=1)[by_front],
        img[rows[k], cols[k]].astype(np.float32) / 255)
    unpainted = painted["camera"] == -1
    assert unpainted.sum() > 1000 and not painted["r"][unpainted].any()


def test_overlap_is_painted_by_the_more_central_camera() -> None:
    fusion = DataLevelFusion(rig())
    # 12 deg left of cam_front (33 deg right of cam_left's axis), 32 deg left of cam_front
    # (13 deg right of cam_left's axis), and one behind; LiDAR frame (1.8 m above base)
    a, b = math.radians(12.0), math.radians(32.0)
    xyz = np.array([[1.5 + 20 * math.cos(a), 20 * math.sin(a), -0.6],
                    [1.5 + 20 * math.cos(b), 20 * math.sin(b), -0.6], [-10.0, 0.0, 0.0]])
    sset = SensorSet(STAMP, cameras={"cam_front": frame("cam_front"),
                                     "cam_left": frame("cam_left", seed=1)},
                     lidars={"lidar": lidar_cloud(xyz)})
    out = fusion.fuse(sset)
    assert out.cameras["cam_front"].projections["lidar"].valid[:2].all()
    assert out.cameras["cam_left"].projections["lidar"].valid[:2].all()
    assert out.painted["lidar"]["camera"].tolist() == [0, 1, -1]


def test_class_scores_are_painted() -> None:
    fusion = DataLevelFusion(rig())
    xyz = wall_points(500)
    scores = np.random.default_rng(2).random((CAM_H // 4, CAM_W // 4, 3)).astype(np.float32)
    sset = SensorSet(STAMP, cameras={"cam_front": frame("cam_front"),
                                     "cam_left": frame("cam_left")},
                     lidars={"lidar": lidar_cloud(xyz)})
    out = fusion.fuse(sset, class_scores={"cam_front": scores})
    painted = out.painted["lidar"]
    assert painted.dtype.names is not None and "score_2" in painted.dtype.names
    front = painted["camera"] == 0
    assert front.any() and np.all(painted["score_0"][front] > 0)
    # points painted by cam_left (no score map) have zero scores
    assert not painted["score_0"][painted["camera"] == 1].any()
    no_scores = DataLevelFusion(rig(), DataLevelConfig(paint_scores=False)).fuse(
        sset, class_scores={"cam_front": scores})
    assert "score_0" not in (no_scores.painted["lidar"].dtype.names or ())
    with pytest.raises(ValueError, match="classes"):
        fusion.fuse(sset, class_scores={"cam_front": scores, "cam_left": scores[:, :, :2]})


def test_degenerate_sets_never_raise() -> None:
    fusion = DataLevelFusion(rig())
    cams = {"cam_front": frame("cam_front")}
    # empty cloud
    out = fusion.fuse(SensorSet(STAMP, cameras=cams, lidars={"lidar": lidar_cloud(
        np.zeros((0, 3)))}))
    assert out.painted["lidar"].shape == (0,)
    assert np.all(np.isnan(out.cameras["cam_front"].depth))
    assert np.all(np.isnan(out.cameras["cam_front"].radar))
    # no cameras: nothing painted, all points kept
    xyz = wall_points(300)
    out = fusion.fuse(SensorSet(STAMP, lidars={"lidar": lidar_cloud(xyz)}))
    assert out.cameras == {} and out.camera_names == ()
    assert np.all(out.painted["lidar"]["camera"] == -1)
    # radar only
    out = fusion.fuse(SensorSet(STAMP, cameras=cams,
                                radars={"radar": radar_scan(np.array([[10.0, 0.0, 0.0]]))}))
    cam = out.cameras["cam_front"]
    assert np.all(np.isnan(cam.depth)) and np.count_nonzero(~np.isnan(cam.radar[:, :, 0])) == 25
    assert out.painted == {}
    # empty set, and an empty radar scan
    assert fusion.fuse(SensorSet(STAMP)).cameras == {}
    out = fusion.fuse(SensorSet(STAMP, cameras=cams, radars={"radar": radar_scan(
        np.zeros((0, 3)))}))
    assert np.all(np.isnan(out.cameras["cam_front"].radar))
    # everything behind the cameras
    behind = np.array([[-5.0, 0.0, 0.0], [-20.0, 3.0, 1.0]])
    out = fusion.fuse(SensorSet(STAMP, cameras=cams, lidars={"lidar": lidar_cloud(behind)}))
    assert np.all(np.isnan(out.cameras["cam_front"].depth))
    assert np.all(out.painted["lidar"]["camera"] == -1)


def test_nan_points_are_dropped_and_counted() -> None:
    fusion = DataLevelFusion(rig())
    xyz = wall_points(400)
    bad = xyz.copy()
    bad[::7, 1] = np.nan
    bad[3, 2] = np.inf
    n_bad = int((~np.isfinite(bad).all(axis=1)).sum())
    cams = {"cam_front": frame("cam_front")}
    out = fusion.fuse(SensorSet(STAMP, cameras=cams, lidars={"lidar": lidar_cloud(bad)}))
    assert out.drops["nan_points"] == n_bad
    painted = out.painted["lidar"]
    keep = np.flatnonzero(np.isfinite(bad).all(axis=1))
    np.testing.assert_array_equal(painted["index"], keep)
    np.testing.assert_array_equal(out.point_index["lidar"], keep)
    clean = fusion.fuse(SensorSet(STAMP, cameras=cams, lidars={"lidar": lidar_cloud(
        xyz[keep])}))
    np.testing.assert_array_equal(out.cameras["cam_front"].depth,
                                  clean.cameras["cam_front"].depth)


def test_object_at_the_image_border() -> None:
    """A box straddling the left image border: the part inside is in the depth image up to
    column 0, the rest is dropped."""
    fusion = DataLevelFusion(rig())
    cam = intr("cam_front")
    # optical-frame points of a surface at 10 m spanning u = -40 .. +40 px around column 0
    us = np.linspace(-40.25, 39.75, 161)  # no point within 0.25 px of a pixel border
    vs = np.linspace(100.0, 140.0, 41)
    uu, vv = np.meshgrid(us, vs)
    rays = cam.unproject(np.stack([uu.ravel(), vv.ravel()], axis=1))
    pc = rays * 10.0
    T_lidar_cam = ext("lidar").inverse() @ ext("cam_front")
    xyz = T_lidar_cam.apply(pc)
    out = fusion.fuse(SensorSet(STAMP, cameras={"cam_front": frame("cam_front")},
                                lidars={"lidar": lidar_cloud(xyz)}))
    depth = out.cameras["cam_front"].depth
    filled = np.argwhere(~np.isnan(depth))
    assert filled[:, 1].min() == 0 and filled[:, 1].max() == 40
    np.testing.assert_allclose(depth[~np.isnan(depth)], 10.0, rtol=1e-5)
    inside = (uu.ravel() >= -0.5)
    np.testing.assert_array_equal(out.painted["lidar"]["camera"] == 0, inside)


def test_unusable_sensors_are_counted() -> None:
    fusion = DataLevelFusion(rig())
    xyz = wall_points(100)
    sset = SensorSet(STAMP, cameras={"cam_noint": frame("cam_noint"),
                                     "cam_front": CameraFrame(
                                         "cam_front", STAMP, "cam_front",
                                         np.zeros((10, 10, 3), np.uint8), "rgb8"),
                                     "cam_unknown": frame("cam_unknown")},
                     lidars={"lidar": lidar_cloud(xyz)})
    out = fusion.fuse(sset)
    assert out.cameras == {}
    assert out.drops == {"camera_without_intrinsics": 1, "image_size_mismatch": 1,
                         "unknown_sensor": 1}
    assert len(out.notes) == 3 and any("cam_noint" in n for n in out.notes)
    # the CameraInfo model on the frame makes cam_noint usable
    model = CameraModel(CAM_W, CAM_H, 200.0, 200.0, 159.5, 119.5)
    with_info = CameraFrame("cam_noint", STAMP, "cam_noint", frame("cam_noint").image, "rgb8",
                            camera=model)
    out = fusion.fuse(SensorSet(STAMP, cameras={"cam_noint": with_info},
                                lidars={"lidar": lidar_cloud(xyz)}))
    assert "cam_noint" in out.cameras and not out.drops
    # mono and bgr images paint; a depth image (32FC1) does not
    bgr = CameraFrame("cam_front", STAMP, "cam_front", frame("cam_front").image, "bgr8")
    out = fusion.fuse(SensorSet(STAMP, cameras={"cam_front": bgr},
                                lidars={"lidar": lidar_cloud(wall_points(300))}))
    painted = out.painted["lidar"]
    proj = out.cameras["cam_front"].projections["lidar"]
    rows, cols = proj.rows_cols
    i = int(proj.index[0])
    np.testing.assert_array_equal([painted["r"][i], painted["b"][i]],
                                  bgr.image[rows[0], cols[0]][[2, 0]] / np.float32(255))
    depth_cam = CameraFrame("cam_front", STAMP, "cam_front",
                            np.ones((CAM_H, CAM_W), np.float32), "32FC1")
    out = fusion.fuse(SensorSet(STAMP, cameras={"cam_front": depth_cam},
                                lidars={"lidar": lidar_cloud(wall_points(300))}))
    painted = out.painted["lidar"]
    assert (painted["camera"] == 0).any() and not painted["r"].any()
    assert out.cameras["cam_front"].rgb is None


# ---------------------------------------------------------------------------- de-skew


def driving_buffer(v: float, start: int, end: int) -> OdometryBuffer:
    buf = OdometryBuffer()
    for t in range(start, end + 1, 10 * MS):
        pose = SE3.from_xy_yaw(v * (t - STAMP) / 1e9, 0.0, 0.0)
        buf.add(EgoState(t, "odom", "base_link", pose, linear_velocity=np.array([v, 0, 0])))
    return buf


def test_deskew_to_the_camera_stamp() -> None:
    """A static wall scanned over 100 ms while driving at 15 m/s, seen by a camera 60 ms after
    the sweep starts: de-skewed points land where the camera sees the wall."""
    v = 15.0
    odo = driving_buffer(v, STAMP - 200 * MS, STAMP + 300 * MS)
    T_bl, T_bc = ext("lidar"), ext("cam_front")
    rng = np.random.default_rng(8)
    n = 3000
    world = np.stack([np.full(n, 14.0), rng.uniform(-6, 6, n), rng.uniform(0.2, 3.0, n)],
                     axis=1)  # wall at x = 14 m in the odom frame
    offsets = np.sort(rng.integers(0, 100 * MS, n)).astype(np.int64)
    measured = np.empty_like(world)
    for i in range(n):
        T_w_lidar = odo.pose_at(STAMP + int(offsets[i])) @ T_bl
        measured[i] = T_w_lidar.inverse().apply(world[i])
    cam_stamp = STAMP + 60 * MS
    T_cam_world = (odo.pose_at(cam_stamp) @ T_bc).inverse()
    expect = project_points(world, T_cam_world, intr("cam_front"), 0.1, 250.0)
    expected_depth = depth_image(expect)

    sset = SensorSet(STAMP, cameras={"cam_front": frame("cam_front", cam_stamp)},
                     lidars={"lidar": lidar_cloud(measured, STAMP, offsets)})
    out = DataLevelFusion(rig()).fuse(sset, odometry=odo)
    depth = out.cameras["cam_front"].depth
    both = ~np.isnan(depth) & ~np.isnan(expected_depth)
    assert both.sum() > 0.9 * np.count_nonzero(~np.isnan(expected_depth))
    np.testing.assert_allclose(depth[both], expected_depth[both], atol=2e-4)
    # without de-skewing the wall is up to 0.9 m off (15 m/s x 60 ms)
    raw = DataLevelFusion(rig(), DataLevelConfig(deskew_to_camera=False)).fuse(
        sset, odometry=odo).cameras["cam_front"].depth
    both_raw = ~np.isnan(raw) & ~np.isnan(expected_depth)
    assert np.abs(raw[both_raw] - expected_depth[both_raw]).max() > 0.5
    # odometry that does not cover the camera stamp: counted, not raised
    short = driving_buffer(v, STAMP - 200 * MS, STAMP + 20 * MS)
    late = SensorSet(STAMP, cameras={"cam_front": frame("cam_front", STAMP + 900 * MS)},
                     lidars={"lidar": lidar_cloud(measured, STAMP, offsets)})
    out = DataLevelFusion(rig()).fuse(late, odometry=short)
    assert out.drops == {"deskew_unavailable": 1}
    assert np.all(np.isnan(out.cameras["cam_front"].depth))


def test_radar_doppler_compensation() -> None:
    v = 10.0
    odo = driving_buffer(v, STAMP - 200 * MS, STAMP + 200 * MS)
    # a static target straight ahead: measured Doppler -v, over ground 0
    scan = RadarScan("radar", STAMP, "radar", np.array([[10.0, 0.0, 0.0]], np.float32),
                     np.array([-v], np.float32), np.array([5.0], np.float32))
    sset = SensorSet(STAMP, cameras={"cam_front": frame("cam_front")}, radars={"radar": scan})
    cfg = DataLevelConfig(doppler_ego_compensation=True, radar_splat_radius_px=0)
    img = DataLevelFusion(rig(), cfg).fuse(sset, odometry=odo).cameras["cam_front"].radar
    vals = img[~np.isnan(img[:, :, 0])]
    np.testing.assert_allclose(vals, [[0.0, 5.0]], atol=1e-5)
    raw = DataLevelFusion(rig()).fuse(sset).cameras["cam_front"].radar
    assert np.nanmin(raw[:, :, 0]) == pytest.approx(-v)
    out = DataLevelFusion(rig(), cfg).fuse(sset)  # no odometry, no ego: dropped, counted
    assert out.drops == {"radar_without_ego": 1}
    assert np.all(np.isnan(out.cameras["cam_front"].radar))
    # the set's ego state serves when there is no odometry
    ego = EgoState(STAMP, "odom", "base_link", SE3.identity(), linear_velocity=np.array([v, 0, 0]))
    with_ego = SensorSet(STAMP, cameras=sset.cameras, radars=sset.radars, ego=ego)
    img = DataLevelFusion(rig(), cfg).fuse(with_ego).cameras["cam_front"].radar
    np.testing.assert_allclose(img[~np.isnan(img[:, :, 0])], [[0.0, 5.0]], atol=1e-5)


def test_two_radars_share_one_z_buffer() -> None:
    """Where two radars' points land on the same pixels, the nearer point wins."""
    radar_2 = {**RIG["sensors"]["radar"], "topic": "/radar_2", "frame_id": "radar_2",
               "extrinsics": {"translation": [2.6, 0.0, 0.5], "rpy_deg": [0.0, 0.0, 0.0]}}
    two = Rig.from_dict({"base_frame": "base_link", "sensors": {
        "cam_front": RIG["sensors"]["cam_front"], "radar": RIG["sensors"]["radar"],
        "radar_2": radar_2}})
    # both targets on cam_front's optical axis (base y = 0, z = 1.2): 20 m and 10 m ahead
    far = radar_scan(np.array([[21.5 - 3.6, 0.0, 0.7]]))
    near = RadarScan("radar_2", STAMP, "radar_2", np.array([[11.5 - 2.6, 0.0, 0.7]],
                                                           np.float32),
                     np.array([3.0], np.float32), np.array([7.0], np.float32))
    cams = {"cam_front": frame("cam_front")}
    fusion = DataLevelFusion(two, DataLevelConfig(radar_splat_radius_px=3))
    out = fusion.fuse(SensorSet(STAMP, cameras=cams, radars={"radar": far, "radar_2": near}))
    radar = out.cameras["cam_front"].radar
    filled = radar[~np.isnan(radar[:, :, 0])]
    assert filled.shape[0] == 49  # both 7x7 squares on the same pixels
    np.testing.assert_array_equal(np.unique(filled, axis=0), [[3.0, 7.0]])
    # the order of the radars does not matter
    out = fusion.fuse(SensorSet(STAMP, cameras=cams, radars={"radar_2": near, "radar": far}))
    np.testing.assert_array_equal(out.cameras["cam_front"].radar, radar)
    only_far = fusion.fuse(SensorSet(STAMP, cameras=cams, radars={"radar": far}))
    np.testing.assert_allclose(np.nanmax(only_far.cameras["cam_front"].radar[:, :, 0]), -5.0)
