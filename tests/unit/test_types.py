"""Core types: validation, immutability and helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mm_perception.core.geometry import SE3
from mm_perception.core.types import (
    Box3D,
    CameraFrame,
    DetectedObject,
    EgoState,
    ObjectClass,
    PointCloud,
    RadarScan,
    SensorSet,
    Track,
    TrackStatus,
)


def _cloud(n: int = 5) -> np.ndarray:
    arr = np.zeros(n, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
    arr["x"] = np.arange(n)
    return arr


def test_point_cloud_fields_xyz_and_times() -> None:
    cloud = PointCloud("lidar", 100, "lidar_top", _cloud(), time_offsets_ns=np.arange(5) * 10)
    assert cloud.fields == ("x", "y", "z", "intensity")
    assert cloud.xyz().dtype == np.float32 and cloud.xyz().shape == (5, 3)
    np.testing.assert_array_equal(cloud.point_stamps_ns(), 100 + np.arange(5) * 10)
    with pytest.raises(KeyError, match="ring"):
        cloud.field("ring")
    with pytest.raises(ValueError):
        cloud.points["x"][0] = 3  # frozen buffer


def test_point_cloud_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['z'\]"):
        PointCloud("l", 0, "f", np.zeros(3, dtype=[("x", "f4"), ("y", "f4")]))
    with pytest.raises(ValueError, match="time_offsets_ns has 2 entries for 5 points"):
        PointCloud("l", 0, "f", _cloud(), time_offsets_ns=np.zeros(2))
    with pytest.raises(ValueError, match=">= 0"):
        PointCloud("l", -1, "f", _cloud())
    with pytest.raises(TypeError, match="int nanoseconds"):
        PointCloud("l", 1.5, "f", _cloud())  # type: ignore[arg-type]


def test_camera_frame_checks_encoding() -> None:
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 0] = 10
    frame = CameraFrame("cam", 1, "cam_optical", img, "bgr8")
    assert (frame.width, frame.height) == (6, 4)
    assert frame.rgb()[0, 0, 2] == 10  # BGR -> RGB swaps channels
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        CameraFrame("cam", 1, "f", img, "yuv422")
    with pytest.raises(ValueError, match="does not match encoding 'mono16'"):
        CameraFrame("cam", 1, "f", img, "mono16")
    with pytest.raises(ValueError, match="1 channel"):
        CameraFrame("cam", 1, "f", img, "mono8")


def test_radar_scan_lengths() -> None:
    scan = RadarScan("radar", 1, "radar", np.zeros((3, 3)), np.ones(3), np.zeros(3),
                     extra={"snr": np.ones(3)})
    assert len(scan) == 3 and scan.xyz.dtype == np.float32
    with pytest.raises(ValueError, match="doppler has 2 values for 3 points"):
        RadarScan("radar", 1, "radar", np.zeros((3, 3)), np.ones(2), np.zeros(3))
    with pytest.raises(ValueError, match="extra field 'snr'"):
        RadarScan("radar", 1, "radar", np.zeros((3, 3)), np.ones(3), np.zeros(3),
                  extra={"snr": np.ones(4)})


def test_ego_state_validation() -> None:
    state = EgoState(5, "odom", "base_link", SE3(), [1, 0, 0], [0, 0, 0.1],
                     pose_covariance=np.eye(6).ravel())
    assert state.pose_covariance is not None and state.pose_covariance.shape == (6, 6)
    with pytest.raises(ValueError, match="linear_velocity"):
        EgoState(5, "odom", "base_link", SE3(), [np.nan, 0, 0])


def test_box_corners_and_transform() -> None:
    box = Box3D(np.array([10.0, 0.0, 1.0]), np.array([4.0, 2.0, 2.0]), math.pi / 2)
    corners = box.corners()
    assert corners.shape == (8, 3)
    # rotated 90 deg: length along y
    np.testing.assert_allclose(corners[:, 1].max() - corners[:, 1].min(), 4.0)
    np.testing.assert_allclose(corners[:, 2].min(), 0.0)
    moved = box.transformed(SE3.from_xy_yaw(0, 0, math.pi / 2), "world")
    np.testing.assert_allclose(moved.center, [0, 10, 1], atol=1e-12)
    assert moved.yaw == pytest.approx(math.pi) or moved.yaw == pytest.approx(-math.pi)
    with pytest.raises(ValueError, match="positive"):
        Box3D(np.zeros(3), np.array([1.0, 0.0, 1.0]), 0.0)


def test_detected_object_and_track() -> None:
    box = Box3D(np.zeros(3), np.ones(3), 0.0)
    obj = DetectedObject(box, ObjectClass.CAR, 0.9, velocity=np.array([1.0, 0, 0]),
                         covariance=np.eye(6), sources=["lidar"])
    assert obj.sources == ("lidar",)
    assert DetectedObject(box, "pedestrian", 0.5).label is ObjectClass.PEDESTRIAN  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"score must be in \[0, 1\]"):
        DetectedObject(box, ObjectClass.CAR, 1.5)
    with pytest.raises(ValueError, match="covariance must be"):
        DetectedObject(box, ObjectClass.CAR, 0.5, covariance=np.eye(3))
    assert obj.yaw_rate is None
    assert DetectedObject(box, ObjectClass.CAR, 0.5, yaw_rate=np.float32(0.25)).yaw_rate == 0.25
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="yaw_rate must be finite"):
            DetectedObject(box, ObjectClass.CAR, 0.5, yaw_rate=bad)
    track = Track(3, obj, "confirmed", age=4, hits=3)  # type: ignore[arg-type]
    assert track.status is TrackStatus.CONFIRMED
    with pytest.raises(ValueError):
        Track(-1, obj, TrackStatus.TENTATIVE)


def test_sensor_set_missing_and_present() -> None:
    cloud = PointCloud("lidar", 1, "l", _cloud())
    sset = SensorSet(1, lidars={"lidar": cloud}, missing=("radar", "cam"))
    assert not sset.is_complete
    assert sset.missing == ("cam", "radar")
    assert sset.present == ("lidar",)
    with pytest.raises(TypeError):
        sset.lidars["x"] = cloud  # type: ignore[index]
