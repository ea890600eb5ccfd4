"""Rig loading and validation, PointTimeSpec conversions."""

from __future__ import annotations

import copy
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mm_perception.core.calibration import PointTimeSpec, Rig, SensorSpec
from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConfigError, ConversionError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import SensorKind

RIGS = Path(__file__).resolve().parents[2] / "config" / "rigs"
DELETE = object()

BASE: dict[str, Any] = {
    "base_frame": "base_link",
    "sensors": {
        "cam": {
            "type": "camera",
            "topic": "/cam/image_raw",
            "camera_info_topic": "/cam/camera_info",
            "frame_id": "cam_optical",
            "intrinsics": "from_camera_info",
            "extrinsics": {"translation": [1.5, 0.0, 1.6], "rpy_deg": [-90.0, 0.0, -90.0]},
            "time_offset_s": 0.0,
            "required": True,
        },
        "lidar": {
            "type": "lidar",
            "topic": "/lidar/points",
            "frame_id": "lidar_top",
            "extrinsics": {"translation": [0, 0, 1.9], "rpy": [0, 0, 0]},
            "fields": {"x": "x", "y": "y", "z": "z", "intensity": "intensity"},
            "point_time": {"field": "t", "unit": "ns", "reference": "relative"},
        },
        "radar": {
            "type": "radar",
            "topic": "/radar/points",
            "frame_id": "radar_front",
            "extrinsics": {"translation": [3.7, 0, 0.5], "quaternion": [0, 0, 0, 1]},
            "fields": {"x": "x", "y": "y", "z": "z", "doppler": "vrad", "rcs": "amplitude"},
        },
        "odom": {"type": "odometry", "topic": "/odom"},
    },
    "sync": {"reference": "lidar", "window_s": 0.05},
}


def mutated(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


def assert_same(a: Any, b: Any) -> None:
    """Recursive equality with float tolerance."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, float):
        assert b == pytest.approx(a, abs=1e-12)
    else:
        assert a == b


# ---------------------------------------------------------------------------- loading


def test_car_rig_loads() -> None:
    rig = Rig.from_yaml(RIGS / "car.yaml")
    assert rig.source.endswith("car.yaml")
    assert rig.base_frame == "base_link"
    assert list(rig.sensors) == ["cam_front", "lidar_top", "radar_front", "odom"]
    kinds = [s.kind for s in rig.sensors.values()]
    assert kinds == [SensorKind.CAMERA, SensorKind.LIDAR, SensorKind.RADAR, SensorKind.ODOMETRY]
    cam = rig["cam_front"]
    assert cam.intrinsics is not None and cam.intrinsics.width == 640
    assert cam.camera_info_topic == "/sensors/camera/front/camera_info"
    assert cam.extrinsics is not None
    # rpy_deg [-90, 0, -90] is the optical frame: z forward, x right, y down in base_link
    np.testing.assert_allclose(cam.extrinsics.rotate([0, 0, 1]), [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(cam.extrinsics.rotate([1, 0, 0]), [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(cam.extrinsics.rotate([0, 1, 0]), [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(cam.extrinsics.translation, [0.6, 0.0, 1.45])
    radar = rig["radar_front"]
    assert radar.time_offset_ns == -2_000_000 and radar.required is False
    assert dict(radar.fields)["doppler"] == "vrad"
    lidar = rig["lidar_top"]
    assert lidar.point_time == PointTimeSpec("t", "ns", "relative")
    assert rig["odom"].extrinsics is not None and rig["odom"].frame_id == ""
    assert dict(rig.sync) == {"reference": "lidar_top", "window_s": 0.05}
    assert rig.unresolved_extrinsics() == []


def test_robot_rig_loads() -> None:
    rig = Rig.from_yaml(str(RIGS / "robot.yaml"))
    assert [s.kind.value for s in rig.sensors.values()] == ["camera", "lidar", "odometry"]
    cam = rig["cam_head"]
    assert isinstance(cam.intrinsics, CameraModel)
    assert cam.intrinsics.distortion_model == "plumb_bob" and cam.intrinsics.width == 640
    assert cam.camera_info_topic is None
    assert cam.extrinsics is not None
    # optical axis tilted 15 degrees down
    np.testing.assert_allclose(cam.extrinsics.rotate([0, 0, 1]),
                               [math.cos(math.radians(15)), 0, -math.sin(math.radians(15))],
                               atol=1e-12)
    assert rig["lidar"].point_time == PointTimeSpec("timestamp", "s", "absolute")


@pytest.mark.parametrize("name", ["car.yaml", "car_surround.yaml", "robot.yaml"])
def test_round_trip_to_dict_from_dict_and_yaml(name: str) -> None:
    rig = Rig.from_yaml(RIGS / name)
    data = rig.to_dict()
    again = Rig.from_dict(data)
    assert_same(again.to_dict(), data)
    for spec, spec2 in zip(rig.sensors.values(), again.sensors.values(), strict=True):
        assert spec.extrinsics is not None and spec2.extrinsics is not None
        assert spec.extrinsics.almost_equal(spec2.extrinsics, atol=1e-12)
        assert spec.intrinsics == spec2.intrinsics
        assert spec.time_offset_ns == spec2.time_offset_ns
        assert dict(spec.fields) == dict(spec2.fields)
        assert spec.point_time == spec2.point_time
    # plain types only: survives YAML
    via_yaml = Rig.from_dict(yaml.safe_load(yaml.safe_dump(data, sort_keys=False)))
    assert_same(via_yaml.to_dict(), data)


def test_surround_rig_sees_every_bearing_and_is_car_yaml_otherwise() -> None:
    car = Rig.from_yaml(RIGS / "car.yaml")
    sur = Rig.from_yaml(RIGS / "car_surround.yaml")
    cams = sur.of_kind(SensorKind.CAMERA)
    assert len(cams) == 6
    covered = np.zeros(360, bool)
    for cam in cams:
        assert cam.intrinsics is not None and cam.extrinsics is not None
        half = math.degrees(math.atan2(cam.intrinsics.width / 2, cam.intrinsics.fx))
        axis = cam.extrinsics.rotate([0.0, 0.0, 1.0])  # optical axis in base_link
        assert abs(axis[2]) < 1e-9  # level
        yaw = math.degrees(math.atan2(axis[1], axis[0]))
        bearings = np.arange(360)
        covered |= np.abs((bearings - yaw + 180.0) % 360.0 - 180.0) <= half
    assert covered.all()
    # LiDAR, radar and odometry are car.yaml's
    others = {n: s for n, s in car.to_dict()["sensors"].items() if s["type"] != "camera"}
    assert {n: s for n, s in sur.to_dict()["sensors"].items() if s["type"] != "camera"} == others


def test_queries() -> None:
    rig = Rig.from_dict(BASE)
    topics = rig.topics()
    assert [(s.name, role) for s, role in topics["/cam/camera_info"]] == [("cam", "camera_info")]
    assert [(s.name, role) for s, role in topics["/cam/image_raw"]] == [("cam", "data")]
    assert [s.name for s in rig.by_topic("/cam/camera_info")] == ["cam"]
    assert [s.name for s in rig.by_topic("/lidar/points")] == ["lidar"]
    assert rig.by_topic("/nothing") == []
    assert [s.name for s in rig.of_kind("radar")] == ["radar"]
    assert [s.name for s in rig.of_kind(SensorKind.ODOMETRY)] == ["odom"]
    with pytest.raises(ConfigError, match="'sonar'"):
        rig.of_kind("sonar")
    with pytest.raises(KeyError, match="'nope'"):
        rig["nope"]
    # read-only views
    with pytest.raises(TypeError):
        rig.sensors["x"] = rig["cam"]  # type: ignore[index]
    with pytest.raises(TypeError):
        rig.sync["x"] = 1  # type: ignore[index]


def test_extrinsics_from_tf_and_resolution() -> None:
    rig = Rig.from_dict(mutated("sensors.cam.extrinsics", "from_tf"))
    assert rig.unresolved_extrinsics() == ["cam"]
    cam = rig["cam"]
    assert cam.extrinsics is None and cam.extrinsics_from_tf
    T = SE3.from_rpy(-math.pi / 2, 0, -math.pi / 2, (1.0, 0.0, 1.5))
    resolved = rig.with_extrinsics("cam", T)
    assert resolved.unresolved_extrinsics() == []
    assert resolved["cam"].extrinsics is T and not resolved["cam"].extrinsics_from_tf
    assert rig.unresolved_extrinsics() == ["cam"]  # the original is unchanged
    assert resolved.to_dict()["sensors"]["cam"]["extrinsics"]["translation"] == [1.0, 0.0, 1.5]
    assert rig.to_dict()["sensors"]["cam"]["extrinsics"] == "from_tf"
    with pytest.raises(ConfigError, match="'radar2'"):
        rig.with_extrinsics("radar2", T)
    with pytest.raises(ConfigError, match="SE3"):
        rig.with_extrinsics("cam", np.eye(4))  # type: ignore[arg-type]
    # a second sensor in the same frame must agree with the resolved pose
    data = mutated("sensors.cam.extrinsics", "from_tf")
    data["sensors"]["cam2"] = dict(data["sensors"]["cam"], topic="/cam2/image_raw",
                                   camera_info_topic="/cam2/camera_info",
                                   extrinsics={"translation": [0, 0, 0], "rpy": [0, 0, 0]})
    with pytest.raises(ConfigError, match="cam_optical"):
        Rig.from_dict(data).with_extrinsics("cam", T)


def test_defaults() -> None:
    data = mutated("sensors.lidar.fields", DELETE)
    del data["sensors"]["lidar"]["point_time"]
    del data["sensors"]["cam"]["intrinsics"]
    del data["sync"]
    rig = Rig.from_dict(data)
    assert dict(rig["lidar"].fields) == {"x": "x", "y": "y", "z": "z"}
    assert rig["lidar"].point_time is None
    assert rig["cam"].intrinsics is None  # from_camera_info (camera_info_topic given)
    assert dict(rig.sync) == {}
    assert rig["lidar"].required is True and rig["lidar"].time_offset_ns == 0


# ---------------------------------------------------------------------------- validation

INVALID = [
    # unknown keys at every level, with a hint
    ("sensor", {}, ["<top level>", "unknown key 'sensor'", "did you mean 'sensors'"]),
    ("sensors.cam.topci", "/x", ["sensors.cam", "'topci'", "did you mean 'topic'"]),
    ("sensors.lidar.extrinsics.rpy_degs", [0, 0, 0],
     ["sensors.lidar.extrinsics", "'rpy_degs'"]),
    ("sensors.cam.intrinsics", {"width": 640, "height": 480, "fx": 500, "fy": 500, "cx": 320,
                                "cy": 240, "fxx": 1},
     ["sensors.cam.intrinsics", "'fxx'"]),
    ("sensors.lidar.point_time.units", "ns", ["sensors.lidar.point_time", "'units'"]),
    ("sensors.lidar.intrinsics", "from_camera_info", ["sensors.lidar", "'intrinsics'"]),
    ("sensors.cam.point_time", {"field": "t", "unit": "ns", "reference": "relative"},
     ["sensors.cam", "'point_time'"]),
    ("sensors.odom.fields", {"x": "x"}, ["sensors.odom", "'fields'"]),
    ("sensors.lidar.fields.intensty", "i",
     ["sensors.lidar.fields", "'intensty'", "did you mean 'intensity'"]),
    # missing keys
    ("base_frame", DELETE, ["<top level>", "missing required key 'base_frame'"]),
    ("sensors", DELETE, ["<top level>", "missing required key 'sensors'"]),
    ("sensors.cam.type", DELETE, ["sensors.cam", "'type'"]),
    ("sensors.cam.topic", DELETE, ["sensors.cam", "missing required key 'topic'"]),
    ("sensors.lidar.frame_id", DELETE, ["sensors.lidar", "missing required key 'frame_id'"]),
    ("sensors.radar.extrinsics", DELETE, ["sensors.radar", "missing required key 'extrinsics'"]),
    ("sensors.cam.extrinsics.translation", DELETE,
     ["sensors.cam.extrinsics", "missing required key 'translation'"]),
    ("sensors.radar.fields", DELETE, ["sensors.radar", "'fields'", "doppler"]),
    ("sensors.lidar.point_time.reference", DELETE,
     ["sensors.lidar.point_time", "missing required key 'reference'"]),
    # wrong types and values
    ("base_frame", "/base_link", ["base_frame", "'/base_link'"]),
    ("sensors", [], ["sensors", "got []"]),
    ("sensors", {}, ["sensors", "got {}"]),
    ("sync", [1, 2], ["sync", "[1, 2]"]),
    ("sensors.cam.type", "camra", ["sensors.cam.type", "'camra'", "camera"]),
    ("sensors.cam.topic", 3, ["sensors.cam.topic", "got 3"]),
    ("sensors.cam.topic", "/has space", ["sensors.cam.topic", "'/has space'"]),
    ("sensors.lidar.topic", "/lidar/2d", ["sensors.lidar.topic", "'/lidar/2d'"]),
    ("sensors.cam.frame_id", "/cam_optical", ["sensors.cam.frame_id", "'/cam_optical'"]),
    ("sensors.cam.frame_id", "", ["sensors.cam.frame_id", "''"]),
    ("sensors.cam.time_offset_s", "1e-3", ["sensors.cam.time_offset_s", "'1e-3'", "1.0e-3"]),
    ("sensors.cam.time_offset_s", math.nan, ["sensors.cam.time_offset_s", "nan"]),
    ("sensors.cam.time_offset_s", True, ["sensors.cam.time_offset_s", "True"]),
    ("sensors.cam.required", "yes", ["sensors.cam.required", "'yes'"]),
    ("sensors.cam.camera_info_topic", "/cam/image_raw",
     ["sensors.cam.camera_info_topic", "'/cam/image_raw'"]),
    # kind-specific rules
    ("sensors.radar.fields.doppler", 3, ["sensors.radar.fields.doppler",
                                         "expected a string field name, got 3"]),
    ("sensors.radar.fields", {"x": "x", "y": "y", "z": "z"},
     ["sensors.radar.fields", "'doppler'"]),
    ("sensors.lidar.fields", {"x": "x", "y": "y"}, ["sensors.lidar.fields", "'z'"]),
    ("sensors.lidar.fields", {"x": "x", "y": "x", "z": "z"},
     ["sensors.lidar.fields.y", "'x'", "already mapped"]),
    ("sensors.radar.fields.vx", "vx", ["sensors.radar.fields", "vx, vy, vz"]),
    ("sensors.lidar.fields", "xyz", ["sensors.lidar.fields", "'xyz'"]),
    ("sensors.lidar.point_time.unit", "sec", ["sensors.lidar.point_time.unit", "'sec'"]),
    ("sensors.lidar.point_time.reference", "rel",
     ["sensors.lidar.point_time.reference", "'rel'"]),
    ("sensors.lidar.point_time.field", 7, ["sensors.lidar.point_time.field", "7"]),
    ("sensors.cam.camera_info_topic", DELETE,
     ["sensors.cam.intrinsics", "from_camera_info", "camera_info_topic"]),
    ("sensors.cam.intrinsics", "from_caminfo", ["sensors.cam.intrinsics", "'from_caminfo'"]),
    ("sensors.cam.intrinsics", {"width": 640, "height": 480, "fx": -5, "fy": 500, "cx": 320,
                                "cy": 240}, ["sensors.cam.intrinsics.fx", "-5"]),
    ("sensors.cam.intrinsics", {"width": 0, "height": 480, "fx": 5, "fy": 500, "cx": 320,
                                "cy": 240}, ["sensors.cam.intrinsics.width", "got 0"]),
    ("sensors.cam.intrinsics", {"width": 640, "height": 480, "fx": 5, "fy": 500, "cx": 320,
                                "cy": 240, "distortion_model": "plumb_bob", "D": [0.1, 0.2]},
     ["sensors.cam.intrinsics.D", "plumb_bob", "[0.1, 0.2]"]),
    ("sensors.cam.intrinsics", {"width": 640, "height": 480, "fx": 5, "fy": 500, "cx": 320,
                                "cy": 240, "distortion_model": "fisheye"},
     ["sensors.cam.intrinsics.distortion_model", "'fisheye'"]),
    ("sensors.cam.intrinsics", {"width": 640, "fx": 5, "fy": 500, "cx": 320, "cy": 240},
     ["sensors.cam.intrinsics", "missing required key 'height'"]),
    # extrinsics
    ("sensors.cam.extrinsics", "from_tff", ["sensors.cam.extrinsics", "'from_tff'"]),
    ("sensors.cam.extrinsics", [1, 2, 3], ["sensors.cam.extrinsics", "[1, 2, 3]"]),
    ("sensors.lidar.extrinsics.translation", [1, 2],
     ["sensors.lidar.extrinsics.translation", "[1, 2]"]),
    ("sensors.lidar.extrinsics.translation", [1, math.inf, 2],
     ["sensors.lidar.extrinsics.translation[1]", "inf"]),
    ("sensors.lidar.extrinsics.quaternion", [0, 0, 0, 1],
     ["sensors.lidar.extrinsics", "exactly one", "'rpy'", "'quaternion'"]),
    ("sensors.lidar.extrinsics.rpy", DELETE, ["sensors.lidar.extrinsics", "exactly one"]),
    ("sensors.radar.extrinsics.quaternion", [0, 0, 0, 0],
     ["sensors.radar.extrinsics.quaternion", "zero norm", "[0.0, 0.0, 0.0, 0.0]"]),
    ("sensors.radar.extrinsics.quaternion", [0, 0, 90, 1],
     ["sensors.radar.extrinsics.quaternion", "unit norm", "[0.0, 0.0, 90.0, 1.0]"]),
    ("sensors.lidar.extrinsics.rpy", [0, 0, 90],
     ["sensors.lidar.extrinsics.rpy", "degrees", "rpy_deg", "[0.0, 0.0, 90.0]"]),
    ("sensors.lidar.extrinsics.rpy", [0, "a", 0], ["sensors.lidar.extrinsics.rpy[1]", "'a'"]),
    # cross-sensor rules
    ("sensors.radar.topic", "/lidar/points",
     ["sensors.radar.topic", "'/lidar/points'", "lidar sensor 'lidar'"]),
    ("sensors.cam.camera_info_topic", "/odom",
     ["sensors.cam.camera_info_topic", "sensors.odom.topic", "'/odom'"]),
    ("sensors.radar.frame_id", "lidar_top",
     ["sensors.radar.extrinsics", "'lidar_top'", "different pose"]),
    ("sensors.radar.frame_id", "base_link", ["sensors.radar.extrinsics", "'base_link'"]),
]


@pytest.mark.parametrize(("path", "value", "needles"), INVALID,
                         ids=[f"{p}={v!r}"[:60] for p, v, _ in INVALID])
def test_invalid_rig_names_file_key_and_value(path: str, value: Any, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        Rig.from_dict(mutated(path, value), source="car.yaml")
    message = str(info.value)
    assert message.startswith("car.yaml: "), message
    for needle in needles:
        assert needle in message, message


def test_invalid_sensor_name() -> None:
    data = copy.deepcopy(BASE)
    data["sensors"]["cam front"] = data["sensors"].pop("cam")
    with pytest.raises(ConfigError, match=r"car\.yaml: sensors: .*'cam front'"):
        Rig.from_dict(data, source="car.yaml")


def test_same_kind_may_share_a_topic() -> None:
    # e.g. two lidar specs reading different fields of one merged cloud
    data = copy.deepcopy(BASE)
    data["sensors"]["lidar2"] = dict(data["sensors"]["lidar"], frame_id="lidar_top")
    rig = Rig.from_dict(data)
    assert [s.name for s in rig.by_topic("/lidar/points")] == ["lidar", "lidar2"]


def test_top_level_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"x\.yaml: <top level>: .*got \[1\]"):
        Rig.from_dict([1], source="x.yaml")
    with pytest.raises(ConfigError, match="got None"):
        Rig.from_dict(None, source="x.yaml")


def test_yaml_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: rig file not found"):
        Rig.from_yaml(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_frame: base_link\nsensors: {cam: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML") as info:
        Rig.from_yaml(bad)
    assert "line" in str(info.value)
    dup = tmp_path / "dup.yaml"
    # "odom" twice inside "sensors" (PyYAML alone would keep the last one silently)
    text = yaml.safe_dump({"base_frame": "base_link", "sensors": BASE["sensors"]},
                          sort_keys=False)
    dup.write_text(text + "  odom:\n    type: odometry\n    topic: /odom2\n")
    with pytest.raises(ConfigError, match=r"(?s)dup\.yaml: invalid YAML.*duplicate key 'odom'"):
        Rig.from_yaml(dup)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"empty\.yaml: <top level>: .*got None"):
        Rig.from_yaml(empty)
    typo = tmp_path / "car.yaml"
    text = yaml.safe_dump(BASE, sort_keys=False).replace("doppler: vrad", "doppler: 3")
    typo.write_text(text)
    with pytest.raises(ConfigError) as info:
        Rig.from_yaml(typo)
    assert str(info.value) == (f"{typo}: sensors.radar.fields.doppler: expected a string "
                               f"field name, got 3")


def test_direct_sensor_spec_validation() -> None:
    lidar = SensorSpec("l", SensorKind.LIDAR, "/l", "l_frame", SE3())
    assert dict(lidar.fields) == {"x": "x", "y": "y", "z": "z"}
    with pytest.raises(ConfigError, match=r"sensors\.l\.fields.*'y'"):
        SensorSpec("l", SensorKind.LIDAR, "/l", "l_frame", SE3(), fields={"x": "x", "z": "z"})
    with pytest.raises(ConfigError, match=r"sensors\.r\.fields.*'doppler'"):
        SensorSpec("r", SensorKind.RADAR, "/r", "r_frame", SE3())
    with pytest.raises(ConfigError, match=r"sensors\.c\.extrinsics.*None"):
        SensorSpec("c", SensorKind.CAMERA, "/c", "c", None, camera_info_topic="/ci")
    with pytest.raises(ConfigError, match=r"sensors\.c\.extrinsics"):
        SensorSpec("c", SensorKind.CAMERA, "/c", "c", SE3(), extrinsics_from_tf=True,
                   camera_info_topic="/ci")
    with pytest.raises(ConfigError, match=r"sensors\.c\.type.*'sonar'"):
        SensorSpec("c", "sonar", "/c", "c", SE3())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"sensors\.c\.time_offset_s.*0\.5"):
        SensorSpec("c", SensorKind.CAMERA, "/c", "c", SE3(), time_offset_ns=0.5,  # type: ignore[arg-type]
                   camera_info_topic="/ci")
    with pytest.raises(ConfigError, match=r"sensors\.o\.intrinsics"):
        SensorSpec("o", SensorKind.ODOMETRY, "/o", "", SE3(),
                   intrinsics=CameraModel(10, 10, 1.0, 1.0, 5.0, 5.0))
    with pytest.raises(ConfigError, match=r"sensors\.o\.point_time"):
        SensorSpec("o", SensorKind.ODOMETRY, "/o", "", SE3(),
                   point_time=PointTimeSpec("t", "ns", "relative"))
    spec = SensorSpec("c", "camera", "/c", "c", SE3(), camera_info_topic="/ci")  # type: ignore[arg-type]
    assert spec.kind is SensorKind.CAMERA
    with pytest.raises(ConfigError, match=r"sensors.*'rig'"):
        Rig("base_link", {"rig": lidar})


# ---------------------------------------------------------------------------- point time

STAMP = 1_700_000_000_123_456_789


@pytest.mark.parametrize(("unit", "scale"), [("s", 10**9), ("ms", 10**6), ("us", 10**3),
                                             ("ns", 1)])
def test_relative_integer_offsets_all_units(unit: str, scale: int) -> None:
    spec = PointTimeSpec("t", unit, "relative")
    values = np.array([0, 1, 7, -3], dtype=np.int32)
    out = spec.to_offsets_ns(values, STAMP)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, values.astype(np.int64) * scale)


@pytest.mark.parametrize(("unit", "scale"), [("s", 1e9), ("ms", 1e6), ("us", 1e3), ("ns", 1.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relative_float_offsets_all_units(unit: str, scale: float, dtype: Any) -> None:
    spec = PointTimeSpec("t", unit, "relative")
    offsets_ns = np.array([0, 1_000, 49_999_872, 99_999_744])  # exact in float32 seconds too
    values = (offsets_ns / scale).astype(dtype)
    out = spec.to_offsets_ns(values, STAMP)
    expected = np.rint(values.astype(np.float64) * scale).astype(np.int64)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(out, offsets_ns, atol=8)  # float32 rounding of the input


def test_relative_unsigned_ns() -> None:
    # e.g. Ouster's uint32 't' field
    out = PointTimeSpec("t", "ns", "relative").to_offsets_ns(
        np.array([0, 4_000_000_000], dtype=np.uint32), STAMP)
    np.testing.assert_array_equal(out, [0, 4_000_000_000])


@pytest.mark.parametrize(("unit", "scale"), [("s", 10**9), ("ms", 10**6), ("us", 10**3),
                                             ("ns", 1)])
def test_absolute_integer_stamps_all_units(unit: str, scale: int) -> None:
    spec = PointTimeSpec("t", unit, "absolute")
    base = STAMP // scale
    values = np.array([base - 2, base, base + 5], dtype=np.int64)
    out = spec.to_offsets_ns(values, STAMP)
    np.testing.assert_array_equal(out, values * scale - STAMP)
    if unit == "ns":
        np.testing.assert_array_equal(out, [-2, 0, 5])


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_absolute_float64_keeps_float64_precision(unit: str) -> None:
    spec = PointTimeSpec("t", unit, "absolute")
    scale = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    offsets_ns = np.array([-5_000_000, 0, 123_456, 99_999_999])
    values = (Decimal(STAMP) + np.array([Decimal(int(o)) for o in offsets_ns])) / scale
    floats = np.array([float(v) for v in values])
    out = spec.to_offsets_ns(floats, STAMP)
    # exact offset of each float64 value from the stamp, in ns
    exact = np.array([float(Decimal(f) * scale - STAMP) for f in floats])
    np.testing.assert_allclose(out, exact, atol=0.5 + 1e-6)
    # and the float64 representation is the only loss (float64 ulp of the value)
    ulp_ns = np.spacing(floats) * scale
    assert np.all(np.abs(out - offsets_ns) <= ulp_ns + 1)
    if unit == "s":
        # a naive "values * 1e9 - stamp" loses far more than one ulp of the seconds value
        naive = floats * 1e9 - STAMP
        assert np.max(np.abs(naive - exact)) > 10


def test_point_time_errors() -> None:
    with pytest.raises(ConversionError, match="float32"):
        PointTimeSpec("t", "s", "absolute").to_offsets_ns(np.array([1.7e9], np.float32), STAMP)
    with pytest.raises(ConversionError, match="1 NaN"):
        PointTimeSpec("t", "s", "relative").to_offsets_ns(np.array([0.1, np.nan]), STAMP)
    with pytest.raises(ConversionError, match="1-D"):
        PointTimeSpec("t", "s", "relative").to_offsets_ns(np.zeros((2, 2)), STAMP)
    with pytest.raises(ConversionError, match="int64"):
        PointTimeSpec("t", "s", "relative").to_offsets_ns(np.array([2**62], np.int64), STAMP)
    with pytest.raises(ConversionError, match="int64"):
        PointTimeSpec("t", "s", "relative").to_offsets_ns(np.array([1e20]), STAMP)
    with pytest.raises(ConversionError, match="numeric"):
        PointTimeSpec("t", "s", "relative").to_offsets_ns(np.array(["a"]), STAMP)
    with pytest.raises(ConversionError, match="header_stamp_ns"):
        PointTimeSpec("t", "s", "relative").to_offsets_ns(np.zeros(2), 1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"point_time\.unit.*'sec'"):
        PointTimeSpec("t", "sec", "relative")
    with pytest.raises(ConfigError, match=r"point_time\.reference.*'start'"):
        PointTimeSpec("t", "s", "start")
    with pytest.raises(ConfigError, match=r"point_time\.field.*''"):
        PointTimeSpec("", "s", "relative")
    empty = PointTimeSpec("t", "ns", "absolute").to_offsets_ns(np.zeros(0, np.int64), STAMP)
    assert empty.shape == (0,) and empty.dtype == np.int64
