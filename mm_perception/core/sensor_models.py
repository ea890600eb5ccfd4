"""Sensor models of the rig: timing and measurement characteristics of each sensor.

A rig sensor may carry a ``model:`` mapping next to its calibration. The simulator needs it
(beam pattern, rates, noise) and other stages can use it (a LiDAR's vertical angles for range
images, a radar's field of view for gating). Every key has a realistic default, so
``model: {}`` (or no ``model``) is valid; a key that is present is validated and an unknown
key is an error naming it.

YAML, per kind::

    camera:   model: {rate_hz: 10, compressed: false, jpeg_quality: 90}
    lidar:    model: {channels: 32, vertical_fov_deg: [-25.0, 15.0]   # or vertical_angles_deg
                      columns: 1024, rate_hz: 10, min_range_m: 0.5, max_range_m: 100,
                      range_noise_m: 0.02, dropout: 0.01}
    radar:    model: {rate_hz: 13, azimuth_fov_deg: 120, elevation_fov_deg: 10,
                      max_range_m: 150, range_noise_m: 0.15, azimuth_noise_deg: 0.5,
                      velocity_noise_mps: 0.1, false_alarms_per_scan: 2.0,
                      max_detections: 128}
    odometry: model: {rate_hz: 50, position_noise_m: 0.0, velocity_noise_mps: 0.0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

from mm_perception.core.errors import KeyedConfigError
from mm_perception.core.types import SensorKind


def _num(value: Any, key: str, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise KeyedConfigError(key, f"expected a number, got {value!r}")
    val = float(value)
    if not math.isfinite(val):
        raise KeyedConfigError(key, f"expected a finite number, got {value!r}")
    if lo is not None and (val <= lo if lo_open else val < lo):
        raise KeyedConfigError(key, f"must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and val > hi:
        raise KeyedConfigError(key, f"must be <= {hi}, got {value!r}")
    return val


def _int(value: Any, key: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise KeyedConfigError(key, f"expected an integer, got {value!r}")
    if int(value) < lo:
        raise KeyedConfigError(key, f"must be >= {lo}, got {value!r}")
    return int(value)


_M = TypeVar("_M", bound="_Model")


class _Model:
    """Shared YAML handling: ``from_mapping`` checks keys, ``to_dict`` writes them back."""

    @classmethod
    def _keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    @classmethod
    def _check_keys(cls, data: Mapping[str, Any], where: str) -> None:
        if not isinstance(data, Mapping):
            raise KeyedConfigError(where, f"expected a mapping, got {data!r}")
        allowed = cls._keys() + cls._aliases()
        for key in data:
            if key not in allowed:
                raise KeyedConfigError(f"{where}.{key}", f"unknown key (allowed: "
                                                         f"{', '.join(allowed)})")

    @classmethod
    def _aliases(cls) -> tuple[str, ...]:
        return ()

    @classmethod
    def from_mapping(cls: type[_M], data: Mapping[str, Any], where: str) -> _M:
        """Parse the ``model`` mapping at key path ``where`` (errors name ``where.key``)."""
        cls._check_keys(data, where)
        try:
            return cls(**dict(data))
        except KeyedConfigError as exc:
            raise KeyedConfigError(f"{where}.{exc.key}", exc.problem) from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            val = getattr(self, f.name)
            out[f.name] = list(val) if isinstance(val, tuple) else val
        return out


@dataclass(frozen=True)
class CameraStream(_Model):
    """How a camera publishes.

    Attributes:
        rate_hz: frame rate, Hz.
        compressed: publish ``CompressedImage`` (jpeg) instead of raw ``Image``.
        jpeg_quality: 1..100 when compressed.
    """

    rate_hz: float = 10.0
    compressed: bool = False
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        _num(self.rate_hz, "rate_hz", 0.0, 1000.0, lo_open=True)
        if not isinstance(self.compressed, bool):
            raise KeyedConfigError("compressed", f"expected true/false, got {self.compressed!r}")
        if not 1 <= _int(self.jpeg_quality, "jpeg_quality", 1) <= 100:
            raise KeyedConfigError("jpeg_quality", f"must be in 1..100, got {self.jpeg_quality}")


@dataclass(frozen=True)
class LidarModel(_Model):
    """A spinning multi-beam LiDAR.

    Attributes:
        vertical_angles_deg: elevation of each channel, degrees (positive up), ascending.
        columns: firings per revolution (horizontal resolution = 360 / columns degrees).
        rate_hz: revolutions per second; a sweep lasts ``1 / rate_hz`` s.
        min_range_m / max_range_m: valid range, m.
        range_noise_m: standard deviation of the range noise, m.
        dropout: probability that a return is lost, [0, 1).
        start_azimuth_deg: azimuth of the first firing of a sweep, degrees in [-180, 180]
            (0 = +x). The sweep's seam (where its first and last firings meet, 1 / rate_hz
            apart) lies there; 180 puts it behind the vehicle, as automotive drivers do
            (a moving object ahead cut by the seam would show up twice, half a sweep apart).
    """

    vertical_angles_deg: tuple[float, ...] = tuple(np.linspace(-25.0, 15.0, 32).tolist())
    columns: int = 1024
    rate_hz: float = 10.0
    min_range_m: float = 0.5
    max_range_m: float = 100.0
    range_noise_m: float = 0.02
    dropout: float = 0.01
    start_azimuth_deg: float = 180.0

    def __post_init__(self) -> None:
        angles = tuple(float(a) for a in self.vertical_angles_deg)
        if not angles:
            raise KeyedConfigError("vertical_angles_deg", "needs at least one channel")
        for a in angles:
            _num(a, "vertical_angles_deg", -90.0, 90.0)
        if list(angles) != sorted(angles) or len(set(angles)) != len(angles):
            raise KeyedConfigError("vertical_angles_deg",
                                   f"must be strictly ascending, got {list(angles)}")
        object.__setattr__(self, "vertical_angles_deg", angles)
        _int(self.columns, "columns", 1)
        _num(self.rate_hz, "rate_hz", 0.0, 100.0, lo_open=True)
        _num(self.min_range_m, "min_range_m", 0.0)
        if _num(self.max_range_m, "max_range_m", 0.0, lo_open=True) <= self.min_range_m:
            raise KeyedConfigError("max_range_m", f"must be > min_range_m "
                                                  f"({self.min_range_m}), got {self.max_range_m}")
        _num(self.range_noise_m, "range_noise_m", 0.0, 10.0)
        if not 0.0 <= _num(self.dropout, "dropout") < 1.0:
            raise KeyedConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        _num(self.start_azimuth_deg, "start_azimuth_deg", -180.0, 180.0)

    @property
    def channels(self) -> int:
        return len(self.vertical_angles_deg)

    @classmethod
    def _aliases(cls) -> tuple[str, ...]:
        return ("channels", "vertical_fov_deg")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> LidarModel:
        cls._check_keys(data, where)
        args = dict(data)
        channels = args.pop("channels", None)
        fov = args.pop("vertical_fov_deg", None)
        if "vertical_angles_deg" in args:
            if channels is not None or fov is not None:
                raise KeyedConfigError(where, "give either vertical_angles_deg or "
                                              "channels + vertical_fov_deg, not both")
            angles = args["vertical_angles_deg"]
            if not isinstance(angles, list | tuple):
                raise KeyedConfigError(f"{where}.vertical_angles_deg",
                                       f"expected a list of degrees, got {angles!r}")
        elif channels is not None or fov is not None:
            n = _int(channels if channels is not None else 32, f"{where}.channels", 1)
            if fov is None:
                fov = [-25.0, 15.0]
            if not isinstance(fov, list | tuple) or len(fov) != 2:
                raise KeyedConfigError(f"{where}.vertical_fov_deg",
                                       f"expected [lowest, highest] degrees, got {fov!r}")
            lo = _num(fov[0], f"{where}.vertical_fov_deg", -90.0, 90.0)
            hi = _num(fov[1], f"{where}.vertical_fov_deg", -90.0, 90.0)
            if n > 1 and hi <= lo:
                raise KeyedConfigError(f"{where}.vertical_fov_deg",
                                       f"highest must be > lowest, got {fov!r}")
            args["vertical_angles_deg"] = tuple(np.linspace(lo, hi, n).tolist()) if n > 1 \
                else (lo,)
        try:
            return cls(**args)
        except KeyedConfigError as exc:
            raise KeyedConfigError(f"{where}.{exc.key}", exc.problem) from None


@dataclass(frozen=True)
class RadarModel(_Model):
    """An automotive point-cloud radar.

    Attributes:
        rate_hz: scans per second.
        azimuth_fov_deg / elevation_fov_deg: full field of view, degrees.
        max_range_m: m.
        range_noise_m / azimuth_noise_deg / velocity_noise_mps: measurement noise (1 sigma).
        false_alarms_per_scan: mean number of clutter detections per scan (Poisson).
        max_detections: the sensor's detection list length.
    """

    rate_hz: float = 13.0
    azimuth_fov_deg: float = 120.0
    elevation_fov_deg: float = 10.0
    max_range_m: float = 150.0
    range_noise_m: float = 0.15
    azimuth_noise_deg: float = 0.5
    velocity_noise_mps: float = 0.1
    false_alarms_per_scan: float = 2.0
    max_detections: int = 128

    def __post_init__(self) -> None:
        _num(self.rate_hz, "rate_hz", 0.0, 100.0, lo_open=True)
        _num(self.azimuth_fov_deg, "azimuth_fov_deg", 0.0, 360.0, lo_open=True)
        _num(self.elevation_fov_deg, "elevation_fov_deg", 0.0, 180.0, lo_open=True)
        _num(self.max_range_m, "max_range_m", 0.0, lo_open=True)
        for key in ("range_noise_m", "azimuth_noise_deg", "velocity_noise_mps",
                    "false_alarms_per_scan"):
            _num(getattr(self, key), key, 0.0)
        _int(self.max_detections, "max_detections", 1)


@dataclass(frozen=True)
class OdometryStream(_Model):
    """How odometry is published.

    Attributes:
        rate_hz: Hz.
        position_noise_m: 1-sigma noise added to positions, m (0 = exact).
        velocity_noise_mps: 1-sigma noise added to velocities, m/s.
    """

    rate_hz: float = 50.0
    position_noise_m: float = 0.0
    velocity_noise_mps: float = 0.0

    def __post_init__(self) -> None:
        _num(self.rate_hz, "rate_hz", 0.0, 1000.0, lo_open=True)
        _num(self.position_noise_m, "position_noise_m", 0.0)
        _num(self.velocity_noise_mps, "velocity_noise_mps", 0.0)


SensorModel = CameraStream | LidarModel | RadarModel | OdometryStream


def parse_sensor_model(kind: SensorKind, data: Any, where: str) -> SensorModel:
    """The ``model`` mapping of a rig sensor of ``kind`` (``where`` = its key path)."""
    if data is None:
        data = {}
    if kind is SensorKind.CAMERA:
        return CameraStream.from_mapping(data, where)
    if kind is SensorKind.LIDAR:
        return LidarModel.from_mapping(data, where)
    if kind is SensorKind.RADAR:
        return RadarModel.from_mapping(data, where)
    return OdometryStream.from_mapping(data, where)


def default_sensor_model(kind: SensorKind) -> SensorModel:
    """The model a sensor gets when its rig entry has no ``model``."""
    return parse_sensor_model(kind, {}, "model")


__all__ = ["CameraStream", "LidarModel", "OdometryStream", "RadarModel", "SensorModel",
           "default_sensor_model", "parse_sensor_model"]
