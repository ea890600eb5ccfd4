"""The perception pipeline on degenerate and hand-made sensor sets (no ROS, no bags)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mm_perception.core.calibration import Rig
from mm_perception.core.ego_motion import OdometryBuffer
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import (
    CameraFrame,
    EgoState,
    PointCloud,
    RadarScan,
    SensorSet,
    TrackStatus,
)
from mm_perception.fusion.pipeline import (
    DEFAULT_LISTS,
    LIST_NAMES,
    PerceptionPipeline,
    PipelineConfig,
)

RIG = Path(__file__).resolve().parents[2] / "config" / "rigs" / "car.yaml"


@pytest.fixture(scope="module")
def rig() -> Rig:
    return Rig.from_yaml(RIG)


@pytest.fixture(scope="module")
def pipeline(rig: Rig) -> PerceptionPipeline:
    return PerceptionPipeline(rig)


def _car_points(rig: Rig, center: tuple[float, float], rng: np.random.Generator,
                ground: bool = True) -> np.ndarray:
    """Points of a 4.5 x 1.8 x 1.5 m box's two faces seen from the ego plus a road, in the
    LiDAR frame (float32)."""
    cx, cy = center
    face_x = np.column_stack([np.full(600, cx - 2.25), rng.uniform(cy - 0.9, cy + 0.9, 600),
                              rng.uniform(0.3, 1.5, 600)])
    side_y = cy - 0.9 if cy > 0 else cy + 0.9
    face_y = np.column_stack([rng.uniform(cx - 2.25, cx + 2.25, 900), np.full(900, side_y),
                              rng.uniform(0.3, 1.5, 900)])
    pts = [face_x, face_y]
    if ground:
        pts.append(np.column_stack([rng.uniform(-30, 60, 6000), rng.uniform(-20, 20, 6000),
                                    rng.normal(0.0, 0.02, 6000)]))
    base = np.vstack(pts)
    T_lidar_base = rig.sensors["lidar_top"].extrinsics.inverse()  # type: ignore[union-attr]
    return T_lidar_base.apply(base).astype(np.float32)


def _cloud(xyz: np.ndarray, stamp: int = 1_000_000_000) -> PointCloud:
    pts = np.zeros(xyz.shape[0], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    pts["x"], pts["y"], pts["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    return PointCloud("lidar_top", stamp, "lidar_top", pts)


def _ego(stamp: int = 1_000_000_000, speed: float = 0.0) -> EgoState:
    return EgoState(stamp, "odom", "base_link", SE3.identity(),
                    linear_velocity=np.array([speed, 0.0, 0.0]))


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="unknown list"):
        PipelineConfig(lists=("lidar", "nonsense"))
    with pytest.raises(ConfigError, match="track_lists"):
        PipelineConfig(lists=("lidar",), track_lists=("radar",))
    with pytest.raises(ConfigError, match="tracking_frame"):
        PipelineConfig(tracking_frame="")
    for threads in (0, 1.5, True):
        with pytest.raises(ConfigError, match="camera_threads"):
            PipelineConfig(camera_threads=threads)  # type: ignore[arg-type]
    # every list but the BEV model's (it needs trained weights), in report order
    assert PipelineConfig().lists == DEFAULT_LISTS == LIST_NAMES[:-1]
    assert PipelineConfig().track_lists == DEFAULT_LISTS


def test_empty_set_gives_empty_lists(pipeline: PerceptionPipeline) -> None:
    pipeline.reset()
    res = pipeline.process(SensorSet(1_000_000_000, missing=("cam_front", "lidar_top")))
    assert set(res.objects) == set(DEFAULT_LISTS)
    assert all(v == [] for v in res.objects.values())
    assert all(v == [] for v in res.tracks.values())


def test_camera_less_set_detects_the_car_with_lidar(rig: Rig) -> None:
    pipe = PerceptionPipeline(rig)
    rng = np.random.default_rng(0)
    odom = OdometryBuffer()
    for k in range(12):
        odom.add(_ego(k * 100_000_000))
    result = None
    for k in range(1, 8):  # several frames: tracks get confirmed
        stamp = k * 100_000_000
        sset = SensorSet(stamp, lidars={"lidar_top": _cloud(_car_points(rig, (15.0, 3.0), rng),
                                                            stamp)},
                         ego=_ego(stamp), missing=("cam_front",))
        result = pipe.process(sset, odom)
    assert result is not None
    cars = [o for o in result.objects["lidar"] if np.hypot(*(o.box.center[:2]
                                                              - [15.0, 3.0])) < 1.5]
    assert cars, result.objects["lidar"]
    assert result.objects["camera"] == []
    assert result.camera_2d == {}
    # the output level has the LiDAR objects although the camera is missing
    assert any(np.hypot(*(o.box.center[:2] - [15.0, 3.0])) < 1.5
               for o in result.objects["output"])
    confirmed = [t for t in result.tracks["lidar"] if t.status is TrackStatus.CONFIRMED]
    assert confirmed and confirmed[0].object.box.frame_id == "base_link"
    assert np.hypot(*(confirmed[0].object.box.center[:2] - [15.0, 3.0])) < 1.5


def test_without_any_ego_motion_tracks_in_base_link(rig: Rig) -> None:
    """No odometry messages (an empty buffer, as a bag without /odom gives) and no ego state:
    the rig is taken as parked and the objects are still tracked."""
    pipe = PerceptionPipeline(rig, PipelineConfig(lists=("lidar",), track_lists=("lidar",)))
    rng = np.random.default_rng(3)
    result = None
    for k in range(1, 6):
        stamp = k * 100_000_000
        sset = SensorSet(stamp, lidars={"lidar_top": _cloud(_car_points(rig, (15.0, 3.0), rng),
                                                            stamp)})
        result = pipe.process(sset, OdometryBuffer())
    assert result is not None
    assert any(t.status is TrackStatus.CONFIRMED for t in result.tracks["lidar"])


def test_nan_points_and_empty_cloud_do_not_raise(rig: Rig,
                                                 pipeline: PerceptionPipeline) -> None:
    pipeline.reset()
    rng = np.random.default_rng(1)
    xyz = _car_points(rig, (12.0, -2.0), rng)
    xyz[::7] = np.nan
    res = pipeline.process(SensorSet(1_000_000_000, lidars={"lidar_top": _cloud(xyz)},
                                     ego=_ego()))
    assert any(np.hypot(*(o.box.center[:2] - [12.0, -2.0])) < 1.5 for o in res.objects["lidar"])
    res = pipeline.process(SensorSet(1_100_000_000, lidars={
        "lidar_top": _cloud(np.zeros((0, 3), np.float32), 1_100_000_000)}, ego=_ego()))
    assert res.objects["lidar"] == [] and res.objects["output"] == []


def test_radar_only_set(rig: Rig, pipeline: PerceptionPipeline) -> None:
    pipeline.reset()
    # a target 30 m ahead of the radar driving away at 5 m/s over ground while the ego
    # drives 10 m/s: the radar sees it approach at 5 m/s
    xyz = np.array([[30.0, 0.3, 0.0], [30.2, -0.4, 0.1], [30.1, 0.8, 0.0]], np.float32)
    scan = RadarScan("radar_front", 1_000_000_000, "radar_front", xyz,
                     doppler=np.full(3, -5.0, np.float32), rcs=np.full(3, 15.0, np.float32))
    res = pipeline.process(SensorSet(1_000_000_000, radars={"radar_front": scan},
                                     ego=_ego(speed=10.0)))
    radar = res.objects["radar"]
    assert len(radar) >= 1
    obj = min(radar, key=lambda o: abs(o.box.center[1]))
    assert obj.velocity is not None
    assert obj.velocity[0] == pytest.approx(5.0, abs=1.0)
    assert res.objects["output"], "radar-only objects survive output-level fusion"
    # without any ego state radar objects cannot be compensated: none, and a note says so
    res = pipeline.process(SensorSet(1_100_000_000, radars={"radar_front": scan}))
    assert res.objects["radar"] == []
    assert any("radar" in n and "ego" in n for n in res.notes)


def test_camera_frame_with_objects_at_the_border(rig: Rig) -> None:
    """A camera frame (random image) together with LiDAR: camera lists are produced without
    exceptions whatever the detector finds, and every object is finite, in base_link."""
    pipe = PerceptionPipeline(rig)
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    image[:, :40] = 255  # a bright stripe on the border
    cam = CameraFrame("cam_front", 1_000_000_000, "cam_front_optical", image, "rgb8")
    # a car partly behind the camera's image plane and one right beside the ego
    xyz = np.vstack([_car_points(rig, (1.0, 4.0), rng), _car_points(rig, (20.0, 0.0), rng,
                                                                     ground=False)])
    sset = SensorSet(1_000_000_000, cameras={"cam_front": cam},
                     lidars={"lidar_top": _cloud(xyz)}, ego=_ego())
    res = pipe.process(sset)
    for name in DEFAULT_LISTS:
        for obj in res.objects[name]:
            assert obj.box.frame_id == "base_link"
            assert np.all(np.isfinite(obj.box.center))
    assert "cam_front" in res.camera_2d
    assert res.data_level.cameras["cam_front"].depth.shape == (480, 640)
    # the LiDAR-only list finds the car in front; in the painted list the camera, which
    # sees only noise there, can only make it less certain (PointPainting: the camera's
    # "background" demotes a cluster, it never invents one)
    lidar = [o for o in res.objects["lidar"] if np.hypot(*(o.box.center[:2] - [20.0, 0.0])) < 1.5]
    assert lidar
    for obj in res.objects["data"]:
        if np.hypot(*(obj.box.center[:2] - [20.0, 0.0])) < 1.5:
            assert obj.score <= lidar[0].score + 1e-9


@pytest.mark.parametrize(("threads", "expected"), [(1, 1), (3, 3), (0, None)])
def test_inference_threads_parameter_reaches_the_camera_detector(
        rig: Rig, threads: int, expected: int | None) -> None:
    """The nodes' ``inference_threads`` (0 = the library default) becomes the pipeline's
    camera_threads, which the camera detector applies to torch when it is loaded."""
    import torch

    from mm_perception.ros.nodes.pipeline_config import pipeline_from_params
    from mm_perception.ros.params import defaults, load_schema

    params = {**defaults(load_schema("pipeline")), "rig_file": str(RIG),
              "inference_threads": threads}
    built = pipeline_from_params(rig, params)
    assert built.config.camera_threads == expected
    before = torch.get_num_threads()
    try:
        built.camera_detector()
        assert torch.get_num_threads() == (before if expected is None else expected)
    finally:
        torch.set_num_threads(before)
