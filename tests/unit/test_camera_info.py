"""CameraInfo <-> CameraModel, with rosbags messages (CDR round trip) and duck-typed objects."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConversionError
from mm_perception.ros.camera_info import camera_info_from_model, camera_model_from_camera_info

TS = get_typestore(Stores.ROS2_KILTED)
TYPE = "sensor_msgs/msg/CameraInfo"


def factory(typename: str, **fields: Any) -> Any:
    return TS.types[typename](**fields)


MODELS = [
    CameraModel(1280, 720, 900.0, 910.0, 640.3, 359.7, "plumb_bob",
                (-0.3, 0.1, 0.001, -0.002, -0.02)),
    CameraModel(1280, 960, 380.0, 381.0, 641.2, 478.9, "equidistant",
                (0.05, -0.01, 0.002, -0.0005)),
    CameraModel(640, 480, 525.0, 525.0, 319.5, 239.5),
]


def info(**overrides: Any) -> SimpleNamespace:
    """A duck-typed CameraInfo (what an rclpy or rosbags message looks like)."""
    fields: dict[str, Any] = {
        "width": 640, "height": 480, "distortion_model": "plumb_bob",
        "d": [0.1, -0.05, 0.001, 0.002, 0.01],
        "k": [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0],
        "r": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
        "p": [500.0, 0, 320.0, 0, 0, 510.0, 240.0, 0, 0, 0, 1.0, 0],
        "binning_x": 0, "binning_y": 0,
        "roi": SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False),
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.distortion_model)
def test_round_trip_through_cdr(model: CameraModel) -> None:
    stamp_ns = 1_700_000_000_123_456_789
    msg = camera_info_from_model(model, stamp_ns, "cam_front_optical", factory)
    raw = TS.serialize_cdr(msg, TYPE)
    back: Any = TS.deserialize_cdr(raw, TYPE)
    assert back.header.stamp.sec == 1_700_000_000
    assert back.header.stamp.nanosec == 123_456_789
    assert back.header.frame_id == "cam_front_optical"
    np.testing.assert_array_equal(back.k.reshape(3, 3), model.K)
    np.testing.assert_array_equal(back.r, np.eye(3).reshape(-1))
    np.testing.assert_array_equal(back.p.reshape(3, 4)[:, :3], model.K)
    assert back.roi.width == 0 and back.binning_x == 0
    assert camera_model_from_camera_info(back) == model


def test_message_fields_and_dtypes() -> None:
    model = MODELS[2]
    msg = camera_info_from_model(model, 5, "cam", factory)
    # an undistorted camera is written as plumb_bob with five zeros (camera_calibration)
    assert msg.distortion_model == "plumb_bob"
    for name in ("d", "k", "r", "p"):
        arr = getattr(msg, name)
        assert isinstance(arr, np.ndarray) and arr.dtype == np.float64
    np.testing.assert_array_equal(msg.d, np.zeros(5))
    assert (msg.width, msg.height) == (640, 480)


def test_factory_receives_every_field() -> None:
    calls: dict[str, set[str]] = {}

    def recording(typename: str, **fields: Any) -> Any:
        calls[typename] = set(fields)
        return factory(typename, **fields)

    camera_info_from_model(MODELS[0], 0, "cam", recording)
    for typename, got in calls.items():
        expected = {f.name for f in dataclasses.fields(TS.types[typename])  # type: ignore[arg-type]
                    if not f.name.startswith("__")}
        assert got == expected, typename
    assert set(calls) == {"builtin_interfaces/msg/Time", "std_msgs/msg/Header",
                          "sensor_msgs/msg/RegionOfInterest", TYPE}


def test_bad_stamp_rejected() -> None:
    with pytest.raises(ConversionError, match="-1"):
        camera_info_from_model(MODELS[0], -1, "cam", factory)
    with pytest.raises(ConversionError, match=r"1\.5"):
        camera_info_from_model(MODELS[0], 1.5, "cam", factory)  # type: ignore[arg-type]


def test_duck_typed_plumb_bob() -> None:
    cam = camera_model_from_camera_info(info())
    assert cam == CameraModel(640, 480, 500.0, 510.0, 320.0, 240.0, "plumb_bob",
                              (0.1, -0.05, 0.001, 0.002, 0.01))


@pytest.mark.parametrize(
    ("overrides", "model", "coeffs"),
    [
        ({"distortion_model": "", "d": []}, "none", ()),
        ({"distortion_model": "", "d": [0.0] * 5}, "none", ()),
        ({"distortion_model": "none", "d": []}, "none", ()),
        ({"distortion_model": "plumb_bob", "d": []}, "none", ()),
        ({"distortion_model": "plumb_bob", "d": [0.0] * 5}, "none", ()),
        ({"distortion_model": "rational_polynomial", "d": [0.1, 0.2, 0.01, 0.02, 0.3, 0, 0, 0]},
         "plumb_bob", (0.1, 0.2, 0.01, 0.02, 0.3)),
        ({"distortion_model": "equidistant", "d": [0.1, 0.2, 0.3, 0.4]},
         "equidistant", (0.1, 0.2, 0.3, 0.4)),
        ({"distortion_model": "equidistant", "d": []}, "equidistant", (0.0,) * 4),
        ({"d": np.array([0.1, -0.05, 0.001, 0.002, 0.01], dtype=np.float32)}, "plumb_bob",
         tuple(np.array([0.1, -0.05, 0.001, 0.002, 0.01], dtype=np.float32).tolist())),
    ],
)
def test_distortion_model_mapping(overrides: dict[str, Any], model: str,
                                  coeffs: tuple[float, ...]) -> None:
    cam = camera_model_from_camera_info(info(**overrides))
    assert cam.distortion_model == model
    assert coeffs == cam.D


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        ({"k": [0.0] * 9}, ["all zero", "not calibrated"]),
        ({"k": [500.0, 1.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]}, ["skew", "1.0"]),
        ({"k": [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 2.0]}, ["k", "2.0"]),
        ({"k": [500.0, 0.0, 320.0]}, ["9", "3"]),
        ({"k": [500.0, 0.0, 320.0, 0.0, -510.0, 240.0, 0.0, 0.0, 1.0]}, ["fy", "-510"]),
        ({"k": [np.nan, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]}, ["k", "nan"]),
        ({"distortion_model": "rational_polynomial", "d": [0.1, 0.2, 0, 0, 0.3, 0.5, 0, 0]},
         ["rational_polynomial", "unsupported", "0.5"]),
        ({"distortion_model": "plumb_bob", "d": [0.1, 0.2, 0.0, 0.0]},
         ["plumb_bob", "5", "4"]),
        ({"distortion_model": "equidistant", "d": [0.1, 0.2, 0.0, 0.0, 0.0]},
         ["equidistant", "4", "5"]),
        ({"distortion_model": "", "d": [0.1, 0.0, 0.0, 0.0, 0.0]}, ["''", "0.1"]),
        ({"distortion_model": "fisheye_weird", "d": [0.1]}, ["'fisheye_weird'", "unsupported"]),
        ({"width": 0}, ["width", "0"]),
        ({"roi": SimpleNamespace(x_offset=600, y_offset=0, width=100, height=100,
                                 do_rectify=False)}, ["roi", "600", "640x480"]),
        ({"binning_x": 3}, ["binning", "3", "640x480"]),
    ],
)
def test_invalid_camera_info(overrides: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(ConversionError) as exc:
        camera_model_from_camera_info(info(**overrides))
    for needle in needles:
        assert needle in str(exc.value)


def test_not_a_camera_info() -> None:
    with pytest.raises(ConversionError, match="not a CameraInfo"):
        camera_model_from_camera_info(SimpleNamespace(width=1))


def test_roi_and_binning_follow_image_geometry() -> None:
    full = camera_model_from_camera_info(info())
    msg = info(binning_x=2, binning_y=2,
               roi=SimpleNamespace(x_offset=100, y_offset=40, width=400, height=300,
                                   do_rectify=False))
    cam = camera_model_from_camera_info(msg)
    assert (cam.width, cam.height) == (200, 150)
    # image_geometry: cx' = (cx - x_offset) / binning_x, fx' = fx / binning_x
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (250.0, 255.0, 110.0, 100.0)
    # the same 3D point lands at (u_full - x_offset) / binning in the binned ROI image
    pts = np.array([[0.1, 0.05, 2.0], [-0.2, 0.1, 3.0]])
    uv_full, _ = full.project(pts)
    uv, _ = cam.project(pts)
    np.testing.assert_allclose(uv, (uv_full - [100, 40]) / 2, atol=1e-9)


def test_rosbags_message_without_roi_attributes_still_works() -> None:
    msg = info()
    del msg.roi, msg.binning_x, msg.binning_y
    assert camera_model_from_camera_info(msg).width == 640


def test_rclpy_message_if_available() -> None:
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    msg = sensor_msgs.CameraInfo()
    msg.width, msg.height = 640, 480
    msg.distortion_model = "equidistant"
    msg.d = [0.1, 0.01, 0.001, 0.0001]
    msg.k = [400.0, 0.0, 320.0, 0.0, 401.0, 240.0, 0.0, 0.0, 1.0]
    cam = camera_model_from_camera_info(msg)
    assert cam == CameraModel(640, 480, 400.0, 401.0, 320.0, 240.0, "equidistant",
                              (0.1, 0.01, 0.001, 0.0001))


def test_ros1_camera_info_with_uppercase_arrays() -> None:
    """ROS 1 CameraInfo (from a ROS 1 bag) names its arrays D, K, R, P."""
    ts = get_typestore(Stores.ROS1_NOETIC)
    types = ts.types
    header = types["std_msgs/msg/Header"](seq=3, stamp=types["builtin_interfaces/msg/Time"](
        sec=1, nanosec=2), frame_id="cam")
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                    do_rectify=False)
    msg = types["sensor_msgs/msg/CameraInfo"](
        header=header, height=480, width=640, distortion_model="plumb_bob",
        D=np.array([0.1, -0.05, 0.001, 0.002, 0.0]),
        K=np.array([500.0, 0, 320, 0, 510.0, 240, 0, 0, 1]), R=np.eye(3).ravel(),
        P=np.array([500.0, 0, 320, 0, 0, 510.0, 240, 0, 0, 0, 1, 0]), binning_x=0,
        binning_y=0, roi=roi)
    raw = ts.serialize_ros1(msg, "sensor_msgs/msg/CameraInfo")
    model = camera_model_from_camera_info(ts.deserialize_ros1(raw, "sensor_msgs/msg/CameraInfo"))
    assert (model.fx, model.fy, model.cx, model.cy) == (500.0, 510.0, 320.0, 240.0)
    assert model.distortion_model == "plumb_bob" and model.D[0] == pytest.approx(0.1)
