"""The sensor rig: which sensors exist, their topics, frames, extrinsics and time offsets.

A rig is loaded from YAML (:meth:`Rig.from_yaml`) or a mapping (:meth:`Rig.from_dict`)
and validated strictly: every error is a :class:`~mm_perception.core.errors.ConfigError`
whose message names the file, the key path and the bad value, e.g.
``car.yaml: sensors.radar_front.fields.doppler: expected a string field name, got 3``.

YAML format::

    base_frame: base_link                 # required; frame all extrinsics are expressed in
    sensors:                              # required, non-empty, insertion ordered
      cam_front:                          # sensor name: [A-Za-z_][A-Za-z0-9_]*
        type: camera                      # camera | lidar | radar | odometry
        topic: /sensors/camera/front/image_raw        # sensor_msgs/Image or CompressedImage
        camera_info_topic: /sensors/camera/front/camera_info   # optional (camera only)
        frame_id: cam_front_optical       # required except for odometry (there optional:
                                          #   the body frame the odometry reports)
        intrinsics: from_camera_info      # (camera only) or a mapping:
                                          #   {width, height, fx, fy, cx, cy,
                                          #    distortion_model: none|plumb_bob|equidistant,
                                          #    D: [...]}  (pixels; D as in OpenCV)
                                          # default: from_camera_info when camera_info_topic
                                          # is given, else required
        extrinsics:                       # T_base_sensor (maps sensor-frame points into
          translation: [1.5, 0.0, 1.6]    #   base_frame); metres
          rpy_deg: [-90.0, 0.0, -90.0]    # exactly one of rpy_deg / rpy (radians) /
                                          #   quaternion [x, y, z, w] (unit norm within 1e-2)
                                          # or the string "from_tf": resolved later from the
                                          # bag's /tf_static (Rig.with_extrinsics)
                                          # required for camera/lidar/radar; odometry:
                                          # optional, default identity
        time_offset_s: 0.0                # added to this sensor's stamps to put them on the
                                          #   common clock (default 0)
        required: true                    # a sync set without it is partial (default true)
      lidar_top:
        type: lidar
        topic: /sensors/lidar/points
        frame_id: lidar_top
        extrinsics: {translation: [0, 0, 1.9], rpy: [0, 0, 0]}
        fields: {x: x, y: y, z: z, intensity: intensity}
            # canonical name -> PointCloud2 field name. lidar canonical names:
            # x, y, z (required), intensity, ring; default {x: x, y: y, z: z}
        point_time: {field: t, unit: ns, reference: relative}
            # optional (lidar/radar): per-point time field; unit s|ms|us|ns;
            # reference relative (offset to the header stamp) | absolute (a stamp)
      radar_front:
        type: radar
        topic: /sensors/radar/points
        frame_id: radar_front
        extrinsics: {translation: [3.7, 0, 0.5], rpy_deg: [0, 0, 0]}
        fields: {x: x, y: y, z: z, doppler: vrad, rcs: amplitude}
            # radar canonical names: x, y, z, doppler (required), rcs, vx, vy, vz
            # (velocity: all three or none); fields is required for radar
      odom:
        type: odometry                    # nav_msgs/Odometry
        topic: /odom
    sync:                                 # optional; kept raw here and parsed by
      reference: lidar_top                #   mm_perception.core.sync
      window_s: 0.05

Checks: unknown keys at every level (with a "did you mean" hint), wrong types, missing
required keys, non-finite numbers, enums (type, unit, reference, distortion model),
kind-specific rules (lidar/radar fields, radar doppler, valid camera intrinsics,
``from_camera_info`` needs ``camera_info_topic``), a topic used by sensors of different
kinds (a ``camera_info_topic`` counts as well), a frame given two different extrinsics, a
zero or far-from-unit quaternion, ``rpy`` angles beyond 2 pi (degrees written as radians),
duplicate YAML keys, invalid YAML and a missing file.

Note: YAML 1.1 (PyYAML) reads ``1e-3`` as a *string*; write ``1.0e-3``. The error message
says so.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.camera import DISTORTION_MODELS, CameraModel
from mm_perception.core.checks import is_real
from mm_perception.core.errors import ConfigError, ConversionError, KeyedConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.sensor_models import SensorModel, default_sensor_model, parse_sensor_model
from mm_perception.core.types import SensorKind
from mm_perception.core.yaml_io import load_yaml_file

I64 = npt.NDArray[np.int64]

#: per-point time units -> nanoseconds per unit
TIME_UNITS: Mapping[str, int] = MappingProxyType(
    {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1})
#: per-point time references
TIME_REFERENCES: tuple[str, ...] = ("relative", "absolute")

#: canonical point field names per kind (lidar/radar), and the ones that must be mapped
CANONICAL_FIELDS: Mapping[SensorKind, tuple[str, ...]] = MappingProxyType({
    SensorKind.LIDAR: ("x", "y", "z", "intensity", "ring"),
    SensorKind.RADAR: ("x", "y", "z", "doppler", "rcs", "vx", "vy", "vz"),
})
REQUIRED_FIELDS: Mapping[SensorKind, tuple[str, ...]] = MappingProxyType({
    SensorKind.LIDAR: ("x", "y", "z"),
    SensorKind.RADAR: ("x", "y", "z", "doppler"),
})
_DEFAULT_LIDAR_FIELDS = {"x": "x", "y": "y", "z": "z"}

_COMMON_KEYS = ("type", "topic", "frame_id", "extrinsics", "time_offset_s", "required",
                "model")
_SENSOR_KEYS: Mapping[SensorKind, tuple[str, ...]] = MappingProxyType({
    SensorKind.CAMERA: (*_COMMON_KEYS, "camera_info_topic", "intrinsics"),
    SensorKind.LIDAR: (*_COMMON_KEYS, "fields", "point_time"),
    SensorKind.RADAR: (*_COMMON_KEYS, "fields", "point_time"),
    SensorKind.ODOMETRY: _COMMON_KEYS,
})
_TOP_KEYS = ("base_frame", "sensors", "sync")
_INTRINSICS_KEYS = ("width", "height", "fx", "fy", "cx", "cy", "distortion_model", "D")
_EXTRINSICS_KEYS = ("translation", "rpy_deg", "rpy", "quaternion")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# ROS 2 topic: tokens of [A-Za-z0-9_] not starting with a digit, separated by single '/'
_TOPIC_RE = re.compile(r"^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
# tf2 frame id: no leading '/', no whitespace
_FRAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$")

_QUATERNION_NORM_TOL = 1e-2


#: a ConfigError about one key path; :meth:`Rig.from_dict` prefixes the source
_KeyedError = KeyedConfigError


def _show(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Mapping):
        value = dict(value)
    return repr(value)


def _got(problem: str, value: Any) -> str:
    return f"{problem}, got {_show(value)}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


# ---------------------------------------------------------------------------- point time


@dataclass(frozen=True)
class PointTimeSpec:
    """Where a point cloud keeps per-point time and how to read it.

    Attributes:
        field: name of the PointCloud2 field holding the time.
        unit: ``"s"``, ``"ms"``, ``"us"`` or ``"ns"``.
        reference: ``"relative"`` (offset to the header stamp) or ``"absolute"`` (a stamp on
            the same clock as the header stamp).
    """

    field: str
    unit: str
    reference: str

    def __post_init__(self) -> None:
        if not isinstance(self.field, str) or not self.field:
            raise _KeyedError("point_time.field", _got("expected a non-empty field name",
                                                       self.field))
        if self.unit not in TIME_UNITS:
            raise _KeyedError("point_time.unit", _got(f"expected one of {', '.join(TIME_UNITS)}",
                                                      self.unit))
        if self.reference not in TIME_REFERENCES:
            raise _KeyedError("point_time.reference",
                              _got(f"expected one of {', '.join(TIME_REFERENCES)}",
                                   self.reference))

    def to_offsets_ns(self, values: Any, header_stamp_ns: int) -> I64:
        """Per-point time offsets relative to the header stamp.

        Args:
            values: ``(N,)`` raw values of :attr:`field` (any int or float dtype), in
                :attr:`unit`.
            header_stamp_ns: the cloud's header stamp, int ns (used for ``absolute``).

        Returns:
            ``(N,)`` int64 offsets in ns (``point stamp - header stamp``), rounded to the
            nearest ns. Integer input is converted exactly; for float input the header stamp
            is subtracted in the value's unit (exact integer parts) before scaling, so the
            result is as precise as the float64 value itself (absolute float64 seconds: about
            0.2 us today).

        Raises:
            ConversionError: not 1-D, non-numeric, NaN/Inf values, a result beyond int64, or
                absolute stamps in a float type narrower than float64 (which cannot hold them).
        """
        if isinstance(header_stamp_ns, bool) or not _is_int(header_stamp_ns):
            raise ConversionError(_got("header_stamp_ns must be int nanoseconds",
                                       header_stamp_ns))
        stamp = int(header_stamp_ns)
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise ConversionError(f"point time field {self.field!r} must be 1-D, got shape "
                                  f"{arr.shape}")
        scale = TIME_UNITS[self.unit]
        absolute = self.reference == "absolute"
        if arr.dtype.kind in "iu":
            int64_max = int(np.iinfo(np.int64).max)
            limit = int64_max // scale
            if arr.size and (int(arr.max()) > limit or int(arr.min()) < -limit):
                raise ConversionError(f"point time field {self.field!r} ({self.unit}) has values "
                                      f"beyond the int64 ns range: [{arr.min()}, {arr.max()}]")
            out = arr.astype(np.int64) * np.int64(scale)
            return out - np.int64(stamp) if absolute else out
        if arr.dtype.kind != "f":
            raise ConversionError(f"point time field {self.field!r} must be numeric, got dtype "
                                  f"{arr.dtype}")
        if absolute and arr.dtype.itemsize < 8:
            raise ConversionError(f"point time field {self.field!r} holds absolute stamps in "
                                  f"{arr.dtype}, which cannot represent them (float64 needed)")
        vals = arr.astype(np.float64)
        if not np.all(np.isfinite(vals)):
            bad = int(np.count_nonzero(~np.isfinite(vals)))
            raise ConversionError(f"point time field {self.field!r} has {bad} NaN/Inf value(s)")
        if absolute:
            # Subtract the stamp in the value's unit: its integer part as the nearest float
            # (the difference of close floats is exact) and the rest as exact integers.
            base_units = stamp // scale
            base_f = float(base_units)
            rest_ns = (base_units - int(base_f)) * scale + (stamp - base_units * scale)
            ns = (vals - base_f) * float(scale) - float(rest_ns)
        else:
            ns = vals * float(scale)
        if ns.size and float(np.abs(ns).max()) >= 2.0**62:
            raise ConversionError(f"point time field {self.field!r} ({self.unit}, "
                                  f"{self.reference}) gives offsets beyond the int64 ns range")
        return np.rint(ns).astype(np.int64)


# ---------------------------------------------------------------------------- sensor


def _check_topic(key: str, value: Any) -> None:
    if not isinstance(value, str) or not _TOPIC_RE.match(value):
        raise _KeyedError(key, _got("expected a ROS topic name like /sensors/lidar/points",
                                    value))


@dataclass(frozen=True, eq=False)
class SensorSpec:
    """One rig sensor.

    Attributes:
        name: rig sensor name (``[A-Za-z_][A-Za-z0-9_]*``).
        kind: what the sensor is.
        topic: data topic (Image/CompressedImage, PointCloud2, Odometry).
        frame_id: sensor frame (camera: optical frame); may be ``""`` for odometry only.
        extrinsics: ``T_base_sensor`` (sensor frame -> base frame), or None iff
            ``extrinsics_from_tf`` is True and not resolved yet.
        extrinsics_from_tf: the extrinsics come from the bag's ``/tf_static``.
        time_offset_ns: added to this sensor's stamps to put them on the common clock, ns.
        required: a sync set without this sensor is partial.
        camera_info_topic: camera only: its CameraInfo topic, or None.
        intrinsics: camera only: the model, or None when it comes from CameraInfo.
        fields: lidar/radar: canonical name -> PointCloud2 field name (lidar default
            ``{x: x, y: y, z: z}``); empty for camera/odometry.
        point_time: lidar/radar: per-point time, or None.
        model: timing and measurement model (rates, beam pattern, noise; see
            :mod:`mm_perception.core.sensor_models`); None = the kind's defaults, see
            :attr:`sensor_model`.

    Equality is identity (``eq=False``): compare :meth:`Rig.to_dict` outputs instead.

    Raises:
        ConfigError: a field breaks the rules in the module docstring; the message names the
            sensor, key and value.
    """

    name: str
    kind: SensorKind
    topic: str
    frame_id: str
    extrinsics: SE3 | None
    extrinsics_from_tf: bool = False
    time_offset_ns: int = 0
    required: bool = True
    camera_info_topic: str | None = None
    intrinsics: CameraModel | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    point_time: PointTimeSpec | None = None
    model: SensorModel | None = None

    @property
    def sensor_model(self) -> SensorModel:
        """The sensor's model, or its kind's default model when the rig gives none."""
        return self.model if self.model is not None else default_sensor_model(self.kind)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise _KeyedError("sensors", _got("sensor name must match [A-Za-z_][A-Za-z0-9_]*",
                                              self.name))
        where = f"sensors.{self.name}"
        try:
            kind = SensorKind(self.kind)
        except ValueError:
            raise _KeyedError(f"{where}.type", _got(
                f"expected one of {', '.join(k.value for k in SensorKind)}", self.kind)) from None
        object.__setattr__(self, "kind", kind)
        _check_topic(f"{where}.topic", self.topic)
        if not isinstance(self.frame_id, str) or not (
                _FRAME_RE.match(self.frame_id) or (kind is SensorKind.ODOMETRY
                                                   and self.frame_id == "")):
            raise _KeyedError(f"{where}.frame_id", _got(
                "expected a tf frame id (no leading '/', no spaces)", self.frame_id))
        self._check_extrinsics(where)
        if not _is_int(self.time_offset_ns):
            raise _KeyedError(f"{where}.time_offset_s",
                              _got("time_offset_ns must be int nanoseconds", self.time_offset_ns))
        object.__setattr__(self, "time_offset_ns", int(self.time_offset_ns))
        if not isinstance(self.required, bool | np.bool_):
            raise _KeyedError(f"{where}.required", _got("expected true or false", self.required))
        object.__setattr__(self, "required", bool(self.required))
        self._check_camera(where, kind)
        self._check_fields(where, kind)
        if self.point_time is not None:
            if kind not in CANONICAL_FIELDS:
                raise _KeyedError(f"{where}.point_time",
                                  f"only lidar and radar sensors have per-point time, "
                                  f"this sensor is a {kind.value}")
            if not isinstance(self.point_time, PointTimeSpec):
                raise _KeyedError(f"{where}.point_time",
                                  _got("expected a PointTimeSpec", self.point_time))

    def _check_extrinsics(self, where: str) -> None:
        if not isinstance(self.extrinsics_from_tf, bool):
            raise _KeyedError(f"{where}.extrinsics",
                              _got("extrinsics_from_tf must be a bool", self.extrinsics_from_tf))
        if self.extrinsics_from_tf:
            if self.extrinsics is not None:
                raise _KeyedError(f"{where}.extrinsics",
                                  "extrinsics must be None while extrinsics_from_tf is set")
        elif not isinstance(self.extrinsics, SE3):
            raise _KeyedError(f"{where}.extrinsics", _got(
                "expected an SE3 T_base_sensor (or extrinsics_from_tf)", self.extrinsics))

    def _check_camera(self, where: str, kind: SensorKind) -> None:
        if kind is not SensorKind.CAMERA:
            for key in ("camera_info_topic", "intrinsics"):
                if getattr(self, key) is not None:
                    raise _KeyedError(f"{where}.{key}",
                                      f"only cameras have {key}, this sensor is a {kind.value}")
            return
        if self.camera_info_topic is not None:
            _check_topic(f"{where}.camera_info_topic", self.camera_info_topic)
            if self.camera_info_topic == self.topic:
                raise _KeyedError(f"{where}.camera_info_topic",
                                  _got("must differ from the image topic", self.camera_info_topic))
        if self.intrinsics is None:
            if self.camera_info_topic is None:
                raise _KeyedError(f"{where}.intrinsics",
                                  "'from_camera_info' needs camera_info_topic; give "
                                  "camera_info_topic or an intrinsics mapping")
        elif not isinstance(self.intrinsics, CameraModel):
            raise _KeyedError(f"{where}.intrinsics",
                              _got("expected a CameraModel", self.intrinsics))

    def _check_fields(self, where: str, kind: SensorKind) -> None:
        if not isinstance(self.fields, Mapping):
            raise _KeyedError(f"{where}.fields", _got("expected a mapping", self.fields))
        fields = dict(self.fields)
        if kind not in CANONICAL_FIELDS:
            if fields:
                raise _KeyedError(f"{where}.fields",
                                  f"only lidar and radar sensors have fields, this sensor is a "
                                  f"{kind.value}")
            object.__setattr__(self, "fields", MappingProxyType({}))
            return
        if kind is SensorKind.LIDAR and not fields:
            fields = dict(_DEFAULT_LIDAR_FIELDS)
        allowed = CANONICAL_FIELDS[kind]
        seen: dict[str, str] = {}
        for canonical, msg_field in fields.items():
            if canonical not in allowed:
                raise _KeyedError(f"{where}.fields",
                                  _unknown_key(canonical, allowed, f"{kind.value} field"))
            if not isinstance(msg_field, str) or not msg_field:
                raise _KeyedError(f"{where}.fields.{canonical}",
                                  _got("expected a string field name", msg_field))
            if msg_field in seen:
                raise _KeyedError(f"{where}.fields.{canonical}", _got(
                    f"message field is already mapped to {seen[msg_field]!r}", msg_field))
            seen[msg_field] = canonical
        missing = [name for name in REQUIRED_FIELDS[kind] if name not in fields]
        if missing:
            raise _KeyedError(f"{where}.fields", _got(
                f"a {kind.value} must map {', '.join(repr(m) for m in missing)} "
                f"(canonical name -> message field)", fields))
        velocity = [name for name in ("vx", "vy", "vz") if name in fields]
        if velocity and len(velocity) != 3:
            raise _KeyedError(f"{where}.fields",
                              _got("velocity needs all of vx, vy, vz or none", fields))
        object.__setattr__(self, "fields", MappingProxyType(fields))

    def to_dict(self) -> dict[str, Any]:
        """Plain-type mapping in the YAML format (see the module docstring)."""
        out: dict[str, Any] = {"type": self.kind.value, "topic": self.topic}
        if self.frame_id:
            out["frame_id"] = self.frame_id
        if self.kind is SensorKind.CAMERA:
            if self.camera_info_topic is not None:
                out["camera_info_topic"] = self.camera_info_topic
            cam = self.intrinsics
            out["intrinsics"] = "from_camera_info" if cam is None else {
                "width": cam.width, "height": cam.height, "fx": cam.fx, "fy": cam.fy,
                "cx": cam.cx, "cy": cam.cy, "distortion_model": cam.distortion_model,
                "D": list(cam.D)}
        if self.extrinsics is None:
            out["extrinsics"] = "from_tf"
        else:
            out["extrinsics"] = {
                "translation": [float(v) for v in self.extrinsics.translation],
                "quaternion": [float(v) for v in self.extrinsics.quaternion()]}
        out["time_offset_s"] = self.time_offset_ns / 1e9
        out["required"] = self.required
        if self.kind in CANONICAL_FIELDS:
            out["fields"] = dict(self.fields)
            if self.point_time is not None:
                out["point_time"] = {"field": self.point_time.field, "unit": self.point_time.unit,
                                     "reference": self.point_time.reference}
        if self.model is not None:
            out["model"] = self.model.to_dict()
        return out


# ---------------------------------------------------------------------------- parsing


def _unknown_key(key: Any, allowed: tuple[str, ...], what: str = "key") -> str:
    hint = difflib.get_close_matches(str(key), allowed, n=1)
    did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
    return f"unknown {what} {_show(key)} (allowed: {', '.join(allowed)}){did_you_mean}"


def _mapping(value: Any, key: str, what: str = "a mapping") -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _KeyedError(key, _got(f"expected {what}", value))
    for k in value:
        if not isinstance(k, str):
            raise _KeyedError(key, _got("keys must be strings", k))
    return dict(value)


def _check_keys(m: Mapping[str, Any], key: str, allowed: tuple[str, ...],
                required: tuple[str, ...] = ()) -> None:
    for k in m:
        if k not in allowed:
            raise _KeyedError(key, _unknown_key(k, allowed))
    for k in required:
        if k not in m:
            raise _KeyedError(key, f"missing required key {k!r}")


def _number(value: Any, key: str) -> float:
    if not is_real(value):
        hint = ""
        if isinstance(value, str):
            try:
                float(value)
                hint = " (YAML 1.1 reads numbers like 1e-3 as strings: write 1.0e-3)"
            except ValueError:
                pass
        raise _KeyedError(key, _got(f"expected a number{hint}", value))
    if not math.isfinite(float(value)):
        raise _KeyedError(key, _got("expected a finite number", value))
    return float(value)


def _vector(value: Any, key: str, n: int) -> list[float]:
    if not isinstance(value, list | tuple | np.ndarray) or len(value) != n:
        raise _KeyedError(key, _got(f"expected a list of {n} numbers", value))
    return [_number(v, f"{key}[{i}]") for i, v in enumerate(value)]


def _parse_extrinsics(value: Any, key: str) -> tuple[SE3 | None, bool]:
    if isinstance(value, str):
        if value == "from_tf":
            return None, True
        raise _KeyedError(key, _got("expected a mapping {translation, rpy_deg | rpy | "
                                    "quaternion} or the string 'from_tf'", value))
    m = _mapping(value, key, "a mapping {translation, rpy_deg | rpy | quaternion} or 'from_tf'")
    _check_keys(m, key, _EXTRINSICS_KEYS, ("translation",))
    rotations = [k for k in ("rpy_deg", "rpy", "quaternion") if k in m]
    if len(rotations) != 1:
        raise _KeyedError(key, _got("needs exactly one of rpy_deg / rpy / quaternion",
                                    rotations))
    translation = _vector(m["translation"], f"{key}.translation", 3)
    rot_key = rotations[0]
    if rot_key == "quaternion":
        quat = np.asarray(_vector(m[rot_key], f"{key}.quaternion", 4))
        norm = float(np.linalg.norm(quat))
        if norm < 1e-9:
            raise _KeyedError(f"{key}.quaternion",
                              _got("quaternion [x, y, z, w] has zero norm", quat.tolist()))
        if abs(norm - 1.0) > _QUATERNION_NORM_TOL:
            raise _KeyedError(f"{key}.quaternion", _got(
                f"quaternion [x, y, z, w] must have unit norm (it has {norm:.6g}); "
                f"angles belong in rpy_deg / rpy", quat.tolist()))
        return SE3.from_quaternion(quat, translation), False
    angles = _vector(m[rot_key], f"{key}.{rot_key}", 3)
    if rot_key == "rpy":
        if any(abs(a) > 2 * math.pi for a in angles):
            raise _KeyedError(f"{key}.rpy", _got(
                "rpy is in radians; angles beyond 2*pi look like degrees (use rpy_deg)", angles))
    else:
        angles = [math.radians(a) for a in angles]
    return SE3.from_rpy(angles[0], angles[1], angles[2], translation), False


def _parse_intrinsics(value: Any, key: str) -> CameraModel | None:
    if isinstance(value, str):
        if value == "from_camera_info":
            return None
        raise _KeyedError(key, _got("expected a mapping {width, height, fx, fy, cx, cy, "
                                    "distortion_model, D} or 'from_camera_info'", value))
    m = _mapping(value, key, "a mapping {width, height, fx, fy, cx, cy, distortion_model, D} "
                             "or 'from_camera_info'")
    _check_keys(m, key, _INTRINSICS_KEYS, ("width", "height", "fx", "fy", "cx", "cy"))
    size = {}
    for name in ("width", "height"):
        if not _is_int(m[name]) or m[name] <= 0:
            raise _KeyedError(f"{key}.{name}", _got("expected a positive integer (pixels)",
                                                    m[name]))
        size[name] = int(m[name])
    vals = {name: _number(m[name], f"{key}.{name}") for name in ("fx", "fy", "cx", "cy")}
    for name in ("fx", "fy"):
        if vals[name] <= 0:
            raise _KeyedError(f"{key}.{name}", _got("expected a focal length > 0 (pixels)",
                                                    m[name]))
    model = m.get("distortion_model", "none")
    if model not in DISTORTION_MODELS:
        raise _KeyedError(f"{key}.distortion_model",
                          _got(f"expected one of {', '.join(DISTORTION_MODELS)}", model))
    raw_d = m.get("D", [])
    if not isinstance(raw_d, list | tuple | np.ndarray):
        raise _KeyedError(f"{key}.D", _got("expected a list of numbers", raw_d))
    coeffs = [_number(v, f"{key}.D[{i}]") for i, v in enumerate(raw_d)]
    try:
        return CameraModel(size["width"], size["height"], vals["fx"], vals["fy"], vals["cx"],
                           vals["cy"], model, tuple(coeffs))
    except ConfigError as exc:
        message = str(exc)
        if message.startswith("CameraModel.D: "):
            raise _KeyedError(f"{key}.D", message.removeprefix("CameraModel.D: ")) from None
        raise _KeyedError(key, message) from None


def _parse_fields(value: Any, key: str) -> dict[str, str]:
    m = _mapping(value, key, "a mapping canonical name -> message field name")
    for canonical, msg_field in m.items():
        if not isinstance(msg_field, str) or not msg_field:
            raise _KeyedError(f"{key}.{canonical}", _got("expected a string field name",
                                                         msg_field))
    return m


def _parse_point_time(value: Any, key: str) -> PointTimeSpec:
    m = _mapping(value, key, "a mapping {field, unit, reference}")
    _check_keys(m, key, ("field", "unit", "reference"), ("field", "unit", "reference"))
    try:
        return PointTimeSpec(m["field"], m["unit"], m["reference"])
    except _KeyedError as exc:
        raise _KeyedError(f"{key}.{exc.key.split('.', 1)[1]}", exc.problem) from None


def _parse_sensor(name: Any, value: Any) -> SensorSpec:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _KeyedError("sensors", _got("sensor name must match [A-Za-z_][A-Za-z0-9_]*", name))
    where = f"sensors.{name}"
    m = _mapping(value, where)
    if "type" not in m:
        raise _KeyedError(where, "missing required key 'type' (camera | lidar | radar | "
                                 "odometry)")
    try:
        kind = SensorKind(m["type"])
    except ValueError:
        raise _KeyedError(f"{where}.type", _got(
            f"expected one of {', '.join(k.value for k in SensorKind)}", m["type"])) from None
    required = ("type", "topic") if kind is SensorKind.ODOMETRY else (
        "type", "topic", "frame_id", "extrinsics")
    _check_keys(m, where, _SENSOR_KEYS[kind], required)
    extrinsics: SE3 | None
    if kind is SensorKind.ODOMETRY and "extrinsics" not in m:
        extrinsics, from_tf = SE3.identity(), False
    else:
        extrinsics, from_tf = _parse_extrinsics(m["extrinsics"], f"{where}.extrinsics")
    offset_s = _number(m.get("time_offset_s", 0.0), f"{where}.time_offset_s")
    intrinsics = None
    if kind is SensorKind.CAMERA and "intrinsics" in m:
        intrinsics = _parse_intrinsics(m["intrinsics"], f"{where}.intrinsics")
    fields = _parse_fields(m["fields"], f"{where}.fields") if "fields" in m else {}
    if kind is SensorKind.RADAR and "fields" not in m:
        raise _KeyedError(where, "missing required key 'fields' (a radar must map x, y, z, "
                                 "doppler)")
    point_time = (_parse_point_time(m["point_time"], f"{where}.point_time")
                  if "point_time" in m else None)
    model = parse_sensor_model(kind, m["model"], f"{where}.model") if "model" in m else None
    return SensorSpec(
        name=name, kind=kind, topic=m["topic"], frame_id=m.get("frame_id", ""),
        extrinsics=extrinsics, extrinsics_from_tf=from_tf,
        time_offset_ns=round(offset_s * 1e9), required=m.get("required", True),
        camera_info_topic=m.get("camera_info_topic"), intrinsics=intrinsics,
        fields=fields, point_time=point_time, model=model)


# ---------------------------------------------------------------------------- YAML




# ---------------------------------------------------------------------------- rig


@dataclass(frozen=True, eq=False)
class Rig:
    """The sensor rig.

    Attributes:
        base_frame: frame all extrinsics map into (normally ``base_link``).
        sensors: sensor name -> spec, in file order (read-only mapping).
        sync: the raw ``sync`` section (read-only top level, parsed by ``core.sync``); may be
            empty.
        source: where the rig came from (file path or ``"<dict>"``), used in error messages.

    Equality is identity (``eq=False``): compare :meth:`to_dict` outputs instead.
    """

    base_frame: str
    sensors: Mapping[str, SensorSpec]
    sync: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<rig>"

    def __post_init__(self) -> None:
        src = self.source
        if not isinstance(self.base_frame, str) or not _FRAME_RE.match(self.base_frame):
            raise ConfigError(f"{src}: base_frame: " + _got(
                "expected a tf frame id (no leading '/', no spaces)", self.base_frame))
        if not isinstance(self.sensors, Mapping) or not self.sensors:
            raise ConfigError(f"{src}: sensors: " + _got(
                "expected a non-empty mapping of sensor name -> sensor", self.sensors))
        sensors: dict[str, SensorSpec] = {}
        for name, spec in self.sensors.items():
            if not isinstance(spec, SensorSpec) or spec.name != name:
                raise ConfigError(f"{src}: sensors.{name}: " + _got(
                    f"expected a SensorSpec named {name!r}", spec))
            sensors[name] = spec
        object.__setattr__(self, "sensors", MappingProxyType(sensors))
        if not isinstance(self.sync, Mapping):
            raise ConfigError(f"{src}: sync: " + _got("expected a mapping", self.sync))
        object.__setattr__(self, "sync", MappingProxyType(copy.deepcopy(dict(self.sync))))
        self._check_topics()
        self._check_frames()

    def _check_topics(self) -> None:
        users: dict[str, tuple[SensorSpec, str]] = {}
        for spec in self.sensors.values():
            for topic, role in self._roles(spec):
                other = users.get(topic)
                if other is None:
                    users[topic] = (spec, role)
                    continue
                other_spec, other_role = other
                if other_spec.kind is not spec.kind or other_role != role:
                    key = "topic" if role == "data" else "camera_info_topic"
                    other_key = "topic" if other_role == "data" else "camera_info_topic"
                    raise ConfigError(
                        f"{self.source}: sensors.{spec.name}.{key}: " + _got(
                            f"topic is already the {other_role} topic of "
                            f"{other_spec.kind.value} sensor {other_spec.name!r} "
                            f"(sensors.{other_spec.name}.{other_key})", topic))

    def _check_frames(self) -> None:
        poses: dict[str, tuple[str, SE3]] = {self.base_frame: ("base_frame", SE3.identity())}
        for spec in self.sensors.values():
            # odometry reports a body frame that normally *is* the base frame: not checked
            if (spec.extrinsics is None or not spec.frame_id
                    or spec.kind is SensorKind.ODOMETRY):
                continue
            known = poses.get(spec.frame_id)
            if known is None:
                poses[spec.frame_id] = (spec.name, spec.extrinsics)
            elif not known[1].almost_equal(spec.extrinsics, atol=1e-9):
                raise ConfigError(
                    f"{self.source}: sensors.{spec.name}.extrinsics: frame "
                    f"{spec.frame_id!r} already has a different pose from {known[0]!r} "
                    f"({known[1]!r}), got {spec.extrinsics!r}")

    @staticmethod
    def _roles(spec: SensorSpec) -> list[tuple[str, str]]:
        roles = [(spec.topic, "data")]
        if spec.camera_info_topic is not None:
            roles.append((spec.camera_info_topic, "camera_info"))
        return roles

    # -------------------------------------------------------------- construction

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Rig:
        """Load and validate a rig file (format in the module docstring).

        Raises:
            ConfigError: file missing or unreadable, invalid YAML, duplicate keys, or any
                rule broken; the message starts with the path.
        """
        source = os.fspath(path)
        data = load_yaml_file(source, "rig")
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> Rig:
        """Validate a rig mapping (the parsed YAML) and build the rig.

        Raises:
            ConfigError: any rule broken; the message starts with ``source``.
        """
        try:
            top = _mapping(data, "<top level>", "a mapping with base_frame and sensors")
            _check_keys(top, "<top level>", _TOP_KEYS, ("base_frame", "sensors"))
            base_frame = top["base_frame"]
            if not isinstance(base_frame, str) or not _FRAME_RE.match(base_frame):
                raise _KeyedError("base_frame", _got(
                    "expected a tf frame id (no leading '/', no spaces)", base_frame))
            raw_sensors = top["sensors"]
            if not isinstance(raw_sensors, Mapping) or not raw_sensors:
                raise _KeyedError("sensors", _got(
                    "expected a non-empty mapping of sensor name -> settings", raw_sensors))
            sensors = {name: _parse_sensor(name, value) for name, value in raw_sensors.items()}
            sync = top.get("sync") or {}
            if not isinstance(sync, Mapping):
                raise _KeyedError("sync", _got("expected a mapping", sync))
        except _KeyedError as exc:
            raise ConfigError(f"{source}: {exc.key}: {exc.problem}") from None
        return cls(base_frame=base_frame, sensors=sensors, sync=sync, source=source)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type mapping in the YAML format; ``Rig.from_dict(rig.to_dict())`` gives the
        same rig (extrinsics written as translation + quaternion)."""
        return {
            "base_frame": self.base_frame,
            "sensors": {name: spec.to_dict() for name, spec in self.sensors.items()},
            "sync": copy.deepcopy(dict(self.sync)),
        }

    def with_extrinsics(self, name: str, T_base_sensor: SE3) -> Rig:
        """A new rig where sensor ``name`` has the given (e.g. tf-resolved) extrinsics.

        Raises:
            ConfigError: unknown sensor, not an SE3, or the pose conflicts with another
                sensor's pose for the same frame.
        """
        if name not in self.sensors:
            raise ConfigError(f"{self.source}: sensors: " + _got(
                f"no sensor named {name!r} (sensors: {', '.join(self.sensors)})", name))
        if not isinstance(T_base_sensor, SE3):
            raise ConfigError(f"{self.source}: sensors.{name}.extrinsics: " + _got(
                "expected an SE3", T_base_sensor))
        sensors = dict(self.sensors)
        sensors[name] = dataclasses.replace(sensors[name], extrinsics=T_base_sensor,
                                            extrinsics_from_tf=False)
        return Rig(self.base_frame, sensors, self.sync, self.source)

    # -------------------------------------------------------------- queries

    def unresolved_extrinsics(self) -> list[str]:
        """Names of sensors whose extrinsics still have to come from ``/tf_static``."""
        return [name for name, spec in self.sensors.items() if spec.extrinsics_from_tf]

    def topics(self) -> dict[str, list[tuple[SensorSpec, str]]]:
        """Topic -> ``[(sensor, role)]`` with role ``"data"`` or ``"camera_info"``."""
        out: dict[str, list[tuple[SensorSpec, str]]] = {}
        for spec in self.sensors.values():
            for topic, role in self._roles(spec):
                out.setdefault(topic, []).append((spec, role))
        return out

    def by_topic(self, topic: str) -> list[SensorSpec]:
        """Sensors that read ``topic`` (as data or as their camera_info topic)."""
        return [spec for spec, _ in self.topics().get(topic, [])]

    def of_kind(self, kind: SensorKind | str) -> list[SensorSpec]:
        """Sensors of one kind, in rig order.

        Raises:
            ConfigError: unknown kind.
        """
        try:
            wanted = SensorKind(kind)
        except ValueError:
            raise ConfigError(_got(f"sensor kind must be one of "
                                   f"{', '.join(k.value for k in SensorKind)}", kind)) from None
        return [spec for spec in self.sensors.values() if spec.kind is wanted]

    def __getitem__(self, name: str) -> SensorSpec:
        try:
            return self.sensors[name]
        except KeyError:
            raise KeyError(f"{self.source}: no sensor named {name!r} "
                           f"(sensors: {', '.join(self.sensors)})") from None


__all__ = [
    "CANONICAL_FIELDS",
    "REQUIRED_FIELDS",
    "TIME_REFERENCES",
    "TIME_UNITS",
    "PointTimeSpec",
    "Rig",
    "SensorSpec",
]
