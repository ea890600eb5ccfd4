"""Sensor models in the rig: defaults, parsing, round trip and errors that name the key."""

from __future__ import annotations

from typing import Any

import pytest

from mm_perception.core.calibration import Rig
from mm_perception.core.errors import ConfigError
from mm_perception.core.sensor_models import (
    CameraStream,
    LidarModel,
    OdometryStream,
    RadarModel,
)
from mm_perception.core.types import SensorKind


def _rig(model: Any, kind: str = "lidar") -> dict[str, Any]:
    sensor: dict[str, Any] = {"type": kind, "topic": "/s", "frame_id": "s",
                              "extrinsics": {"translation": [0, 0, 1], "rpy": [0, 0, 0]},
                              "model": model}
    if kind == "radar":
        sensor["fields"] = {"x": "x", "y": "y", "z": "z", "doppler": "vrad"}
    if kind == "camera":
        sensor["intrinsics"] = {"width": 64, "height": 48, "fx": 50.0, "fy": 50.0, "cx": 32.0,
                                "cy": 24.0}
    return {"base_frame": "base_link", "sensors": {"s": sensor}}


def test_defaults_when_absent() -> None:
    data = _rig({})
    del data["sensors"]["s"]["model"]
    spec = Rig.from_dict(data).sensors["s"]
    assert spec.model is None
    model = spec.sensor_model
    assert isinstance(model, LidarModel) and model.channels == 32 and model.columns == 1024


def test_lidar_channels_and_fov() -> None:
    spec = Rig.from_dict(_rig({"channels": 16, "vertical_fov_deg": [-15, 15], "columns": 512,
                               "rate_hz": 20})).sensors["s"]
    model = spec.sensor_model
    assert isinstance(model, LidarModel)
    assert model.channels == 16 and model.vertical_angles_deg[0] == -15.0
    assert model.vertical_angles_deg[-1] == 15.0 and model.rate_hz == 20.0
    again = Rig.from_dict(Rig.from_dict(_rig({"channels": 16})).to_dict())
    assert again.sensors["s"].sensor_model == Rig.from_dict(_rig({"channels": 16})).sensors[
        "s"].sensor_model


@pytest.mark.parametrize(("kind", "model", "needle"), [
    ("lidar", {"chanels": 16}, "sensors.s.model.chanels: unknown key"),
    ("lidar", {"columns": 0}, "sensors.s.model.columns: must be >= 1"),
    ("lidar", {"vertical_angles_deg": [5, 1]}, "strictly ascending"),
    ("lidar", {"vertical_angles_deg": [1, 2], "channels": 2}, "not both"),
    ("lidar", {"max_range_m": 0.2, "min_range_m": 0.5}, "sensors.s.model.max_range_m"),
    ("lidar", {"dropout": 1.0}, "sensors.s.model.dropout"),
    ("radar", {"azimuth_fov_deg": -3}, "sensors.s.model.azimuth_fov_deg"),
    ("radar", {"rate_hz": "fast"}, "sensors.s.model.rate_hz: expected a number, got 'fast'"),
    ("camera", {"jpeg_quality": 101}, "sensors.s.model.jpeg_quality"),
    ("camera", {"compressed": "yes"}, "sensors.s.model.compressed"),
    ("lidar", [1, 2], "sensors.s.model: expected a mapping"),
])
def test_errors_name_the_key(kind: str, model: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Rig.from_dict(_rig(model, kind), source="rig.yaml")
    assert needle in str(info.value)
    assert str(info.value).startswith("rig.yaml: ")


def test_each_kind_has_its_model_type() -> None:
    assert isinstance(Rig.from_dict(_rig({}, "radar")).sensors["s"].sensor_model, RadarModel)
    assert isinstance(Rig.from_dict(_rig({"rate_hz": 5}, "camera")).sensors["s"].sensor_model,
                      CameraStream)
    odom = {"base_frame": "base_link",
            "sensors": {"o": {"type": "odometry", "topic": "/odom", "model": {"rate_hz": 100}}}}
    model = Rig.from_dict(odom).sensors["o"].sensor_model
    assert isinstance(model, OdometryStream) and model.rate_hz == 100.0
    assert SensorKind.ODOMETRY.value == "odometry"
