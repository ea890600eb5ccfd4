"""Core data types shared by every stage of the stack (numpy only, no ROS).

All stamps are ``int`` nanoseconds (ROS time or sim time). Frames follow REP 103/105:
``base_link`` x forward / y left / z up; camera optical frames z forward / x right / y down.
Arrays are made read-only when a frozen dataclass takes them, so a value passed down the
pipeline cannot be changed behind another stage's back.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.geometry import SE3

if TYPE_CHECKING:
    from mm_perception.core.camera import CameraModel

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def _frozen_array(value: Any, name: str, dtype: Any | None = None,
                  ndim: int | None = None, cols: int | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if cols is not None and (arr.ndim < 2 or arr.shape[1] != cols):
        raise ValueError(f"{name} must have shape (N, {cols}), got {arr.shape}")
    if arr.flags.writeable and arr.base is not None:
        arr = arr.copy()  # do not freeze somebody else's buffer
    arr.setflags(write=False)
    return arr


def _check_stamp(stamp_ns: int, name: str = "stamp_ns") -> None:
    if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, int | np.integer):
        raise TypeError(f"{name} must be int nanoseconds, got {type(stamp_ns).__name__}")
    if stamp_ns < 0:
        raise ValueError(f"{name} must be >= 0 ns, got {stamp_ns}")


class SensorKind(str, enum.Enum):
    """What a rig sensor is; decides which core type its messages become."""

    CAMERA = "camera"
    LIDAR = "lidar"
    RADAR = "radar"
    ODOMETRY = "odometry"


#: image encodings the core understands, with (dtype, channels)
IMAGE_ENCODINGS: Mapping[str, tuple[np.dtype[Any], int]] = MappingProxyType({
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
})


@dataclass(frozen=True)
class CameraFrame:
    """One camera image.

    Attributes:
        sensor: rig sensor name.
        stamp_ns: exposure stamp, ns.
        frame_id: optical frame of the image.
        image: ``(H, W, C)`` for colour (uint8) or ``(H, W)`` for mono/depth, dtype per
            ``encoding`` (see :data:`IMAGE_ENCODINGS`).
        encoding: ROS encoding string of ``image``.
        camera: intrinsics/distortion when known (from the rig or a CameraInfo).
    """

    sensor: str
    stamp_ns: int
    frame_id: str
    image: np.ndarray
    encoding: str
    camera: CameraModel | None = None

    def __post_init__(self) -> None:
        _check_stamp(self.stamp_ns)
        if self.encoding not in IMAGE_ENCODINGS:
            raise ValueError(f"unsupported image encoding {self.encoding!r}; "
                             f"supported: {sorted(IMAGE_ENCODINGS)}")
        dtype, channels = IMAGE_ENCODINGS[self.encoding]
        img = _frozen_array(self.image, "image")
        if img.dtype != dtype:
            raise ValueError(f"image dtype {img.dtype} does not match encoding "
                             f"{self.encoding!r} ({dtype})")
        expect_ndim = 2 if channels == 1 else 3
        if img.ndim != expect_ndim or (channels > 1 and img.shape[2] != channels):
            raise ValueError(f"image shape {img.shape} does not match encoding "
                             f"{self.encoding!r} ({channels} channel(s))")
        object.__setattr__(self, "image", img)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def rgb(self) -> npt.NDArray[np.uint8]:
        """``(H, W, 3)`` uint8 RGB view of a colour or mono8 image."""
        img = self.image
        if self.encoding == "rgb8":
            return img
        if self.encoding == "bgr8":
            return img[:, :, ::-1]
        if self.encoding == "rgba8":
            return img[:, :, :3]
        if self.encoding == "bgra8":
            return img[:, :, 2::-1]
        if self.encoding == "mono8":
            return np.repeat(img[:, :, None], 3, axis=2)
        raise ValueError(f"encoding {self.encoding!r} is not a colour image")


@dataclass(frozen=True)
class PointCloud:
    """A point cloud with any field layout (LiDAR, or a radar cloud before it is typed).

    Attributes:
        sensor: rig sensor name.
        stamp_ns: header stamp, ns (for a spinning LiDAR usually the start or end of sweep).
        frame_id: frame of the points (the sensor frame unless transformed).
        points: ``(N,)`` structured array with at least float fields ``x``, ``y``, ``z``
            (metres, ``frame_id``), plus any other fields (``intensity``, ``ring``, ...).
        time_offsets_ns: ``(N,)`` int64 per-point time relative to ``stamp_ns`` (ns), or None
            when the sensor has no per-point time.
    """

    sensor: str
    stamp_ns: int
    frame_id: str
    points: np.ndarray
    time_offsets_ns: I64 | None = None

    def __post_init__(self) -> None:
        _check_stamp(self.stamp_ns)
        pts = _frozen_array(self.points, "points", ndim=1)
        names = pts.dtype.names or ()
        missing = [n for n in ("x", "y", "z") if n not in names]
        if missing:
            raise ValueError(f"point cloud from {self.sensor!r} lacks field(s) {missing}; "
                             f"has {list(names)}")
        object.__setattr__(self, "points", pts)
        if self.time_offsets_ns is not None:
            times = _frozen_array(self.time_offsets_ns, "time_offsets_ns", np.int64, ndim=1)
            if times.shape[0] != pts.shape[0]:
                raise ValueError(f"time_offsets_ns has {times.shape[0]} entries for "
                                 f"{pts.shape[0]} points")
            object.__setattr__(self, "time_offsets_ns", times)

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.points.dtype.names or ())

    def xyz(self) -> F32:
        """``(N, 3)`` float32 positions in ``frame_id``, metres."""
        out = np.empty((len(self), 3), dtype=np.float32)
        for i, name in enumerate(("x", "y", "z")):
            out[:, i] = self.points[name]
        return out

    def field(self, name: str, dtype: Any = np.float32) -> np.ndarray:
        """``(N,)`` values of one field cast to ``dtype``; KeyError names the fields present."""
        if name not in self.fields:
            raise KeyError(f"cloud from {self.sensor!r} has no field {name!r}; "
                           f"fields: {list(self.fields)}")
        return np.asarray(self.points[name], dtype=dtype)

    def point_stamps_ns(self) -> I64:
        """``(N,)`` int64 absolute stamp of each point (``stamp_ns`` when no per-point time)."""
        if self.time_offsets_ns is None:
            return np.full(len(self), self.stamp_ns, dtype=np.int64)
        return self.time_offsets_ns + np.int64(self.stamp_ns)


@dataclass(frozen=True)
class RadarScan:
    """One radar scan (detections / point-cloud radar).

    Attributes:
        sensor, stamp_ns, frame_id: as for :class:`PointCloud`.
        xyz: ``(N, 3)`` float32 positions, metres, ``frame_id``.
        doppler: ``(N,)`` float32 radial velocity, m/s, positive = moving away from the sensor,
            as measured (not ego-motion compensated).
        rcs: ``(N,)`` float32 radar cross-section or amplitude, dBsm (or the driver's unit).
        velocity: ``(N, 3)`` float32 velocity vectors (m/s, ``frame_id``) when the radar
            reports them, else None.
        extra: other per-point fields kept from the message, ``(N,)`` each.
    """

    sensor: str
    stamp_ns: int
    frame_id: str
    xyz: F32
    doppler: F32
    rcs: F32
    velocity: F32 | None = None
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_stamp(self.stamp_ns)
        xyz = _frozen_array(self.xyz, "xyz", np.float32, ndim=2, cols=3)
        n = xyz.shape[0]
        object.__setattr__(self, "xyz", xyz)
        for name in ("doppler", "rcs"):
            arr = _frozen_array(getattr(self, name), name, np.float32, ndim=1)
            if arr.shape[0] != n:
                raise ValueError(f"radar {name} has {arr.shape[0]} values for {n} points")
            object.__setattr__(self, name, arr)
        if self.velocity is not None:
            vel = _frozen_array(self.velocity, "velocity", np.float32, ndim=2, cols=3)
            if vel.shape[0] != n:
                raise ValueError(f"radar velocity has {vel.shape[0]} rows for {n} points")
            object.__setattr__(self, "velocity", vel)
        extra = {}
        for key, val in self.extra.items():
            arr = _frozen_array(val, f"extra[{key!r}]")
            if arr.shape[:1] != (n,):
                raise ValueError(f"radar extra field {key!r} has shape {arr.shape} for {n} pts")
            extra[key] = arr
        object.__setattr__(self, "extra", MappingProxyType(extra))

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


@dataclass(frozen=True)
class EgoState:
    """Ego pose and velocity from odometry.

    Attributes:
        stamp_ns: ns.
        frame_id: world/odom frame of ``pose``.
        child_frame_id: body frame (normally ``base_link``).
        pose: ``T_world_base`` (SE3).
        linear_velocity: ``(3,)`` float64, m/s, in the body frame (as in nav_msgs/Odometry).
        angular_velocity: ``(3,)`` float64, rad/s, in the body frame.
        pose_covariance: ``(6, 6)`` float64 (x, y, z, roll, pitch, yaw) or None.
        twist_covariance: ``(6, 6)`` float64 or None.
    """

    stamp_ns: int
    frame_id: str
    child_frame_id: str
    pose: SE3
    linear_velocity: F64 = field(default_factory=lambda: np.zeros(3))
    angular_velocity: F64 = field(default_factory=lambda: np.zeros(3))
    pose_covariance: F64 | None = None
    twist_covariance: F64 | None = None

    def __post_init__(self) -> None:
        _check_stamp(self.stamp_ns)
        for name in ("linear_velocity", "angular_velocity"):
            arr = _frozen_array(getattr(self, name), name, np.float64, ndim=1)
            if arr.shape != (3,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must be 3 finite values, got {arr.tolist()}")
            object.__setattr__(self, name, arr)
        for name in ("pose_covariance", "twist_covariance"):
            val = getattr(self, name)
            if val is not None:
                arr = _frozen_array(np.reshape(np.asarray(val, np.float64), (6, 6)), name)
                object.__setattr__(self, name, arr)


@dataclass(frozen=True)
class SensorSet:
    """Time-synchronised measurements of all rig sensors around one reference stamp.

    Every measurement's ``stamp_ns`` is on the common clock (the rig's per-sensor time
    offset already applied), like ``stamp_ns`` itself.

    Attributes:
        stamp_ns: reference stamp (the reference sensor's stamp after its time offset), ns.
        cameras / lidars / radars: rig sensor name -> measurement, only sensors present.
        ego: the ego state at (or interpolated to) ``stamp_ns``, or None without odometry.
        missing: names of rig sensors expected in the set but absent (partial set).
    """

    stamp_ns: int
    cameras: Mapping[str, CameraFrame] = field(default_factory=dict)
    lidars: Mapping[str, PointCloud] = field(default_factory=dict)
    radars: Mapping[str, RadarScan] = field(default_factory=dict)
    ego: EgoState | None = None
    missing: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_stamp(self.stamp_ns)
        for name in ("cameras", "lidars", "radars"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        object.__setattr__(self, "missing", tuple(sorted(self.missing)))

    @property
    def is_complete(self) -> bool:
        return not self.missing

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(sorted([*self.cameras, *self.lidars, *self.radars]))


class ObjectClass(str, enum.Enum):
    """Object classes shared by detectors, fusion, tracking and evaluation."""

    CAR = "car"
    TRUCK = "truck"
    BUS = "bus"
    PEDESTRIAN = "pedestrian"
    CYCLIST = "cyclist"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Box3D:
    """An upright 3D box (yaw only, as in nuScenes / KITTI BEV evaluation).

    Attributes:
        center: ``(3,)`` float64 metres in ``frame_id`` (box centre, not bottom).
        size: ``(3,)`` float64 length (along heading), width, height, metres, all > 0.
        yaw: heading about z, radians, in ``frame_id``.
        frame_id: frame of ``center`` and ``yaw``.
    """

    center: F64
    size: F64
    yaw: float
    frame_id: str = "base_link"

    def __post_init__(self) -> None:
        center = _frozen_array(self.center, "center", np.float64, ndim=1)
        size = _frozen_array(self.size, "size", np.float64, ndim=1)
        if center.shape != (3,) or not np.all(np.isfinite(center)):
            raise ValueError(f"box center must be 3 finite values, got {center.tolist()}")
        if size.shape != (3,) or not np.all(np.isfinite(size)) or np.any(size <= 0):
            raise ValueError(f"box size must be 3 positive values (l, w, h), got "
                             f"{size.tolist()}")
        if not np.isfinite(self.yaw):
            raise ValueError(f"box yaw must be finite, got {self.yaw}")
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "yaw", float(self.yaw))

    def corners(self) -> F64:
        """``(8, 3)`` float64 corners in ``frame_id``: bottom face first, counter-clockwise
        seen from above starting front-left, then the top face in the same order."""
        length, width, height = self.size
        x = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * length / 2
        y = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * width / 2
        z = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * height / 2
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        local = np.stack([c * x - s * y, s * x + c * y, z], axis=1)
        return local + self.center

    def transformed(self, transform: SE3, frame_id: str) -> Box3D:
        """The same box expressed in another frame (``transform`` = ``T_new_old``)."""
        center = transform.apply(self.center)
        heading = transform.rotate(np.array([np.cos(self.yaw), np.sin(self.yaw), 0.0]))
        return Box3D(center, self.size, float(np.arctan2(heading[1], heading[0])), frame_id)


@dataclass(frozen=True)
class DetectedObject:
    """One object from a detector or a fusion level (the shared output type).

    Attributes:
        box: 3D box.
        label: most likely class.
        score: detection confidence in [0, 1].
        class_probs: class name -> probability (sums to ~1), may be empty.
        velocity: ``(3,)`` float64 m/s in ``box.frame_id``, or None when unknown.
        covariance: ``(6, 6)`` float64 over (x, y, z, yaw, vx, vy) or None.
        existence_prob: probability that the object exists, [0, 1].
        sources: names of the sensors/levels that contributed.
        stamp_ns: measurement stamp, ns.
        yaw_rate: rate of turn about ``z`` of ``box.frame_id``, rad/s (counter-clockwise
            positive), or None when unknown (a detector's single frame; a constant-velocity
            track). A tracker's turning estimate, so that a consumer can predict the box
            along an arc (and the box turning with it) instead of a straight line.
    """

    box: Box3D
    label: ObjectClass
    score: float
    stamp_ns: int = 0
    class_probs: Mapping[str, float] = field(default_factory=dict)
    velocity: F64 | None = None
    covariance: F64 | None = None
    existence_prob: float = 1.0
    sources: tuple[str, ...] = ()
    yaw_rate: float | None = None

    def __post_init__(self) -> None:
        _check_stamp(self.stamp_ns)
        object.__setattr__(self, "label", ObjectClass(self.label))
        if self.yaw_rate is not None:
            rate = float(self.yaw_rate)
            if not math.isfinite(rate):
                raise ValueError(f"yaw_rate must be finite (rad/s) or None, got {rate}")
            object.__setattr__(self, "yaw_rate", rate)
        for name in ("score", "existence_prob"):
            val = float(getattr(self, name))
            if not 0.0 <= val <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {val}")
            object.__setattr__(self, name, val)
        if self.velocity is not None:
            vel = _frozen_array(self.velocity, "velocity", np.float64, ndim=1)
            if vel.shape != (3,) or not np.all(np.isfinite(vel)):
                raise ValueError(f"velocity must be 3 finite values, got {vel.tolist()}")
            object.__setattr__(self, "velocity", vel)
        if self.covariance is not None:
            cov = _frozen_array(self.covariance, "covariance", np.float64)
            if cov.shape != (6, 6):
                raise ValueError(f"covariance must be (6, 6), got {cov.shape}")
            object.__setattr__(self, "covariance", cov)
        object.__setattr__(self, "class_probs", MappingProxyType(dict(self.class_probs)))
        object.__setattr__(self, "sources", tuple(self.sources))


class TrackStatus(str, enum.Enum):
    """Track life cycle."""

    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    COASTING = "coasting"
    DELETED = "deleted"


@dataclass(frozen=True)
class Track:
    """A tracked object with a persistent id.

    Attributes:
        track_id: persistent id (unique for the tracker's lifetime).
        object: the current state as a :class:`DetectedObject` (box, velocity, covariance).
        status: life-cycle status.
        age: number of updates since birth.
        hits: number of updates with an associated measurement.
        misses: consecutive updates without a measurement.
    """

    track_id: int
    object: DetectedObject
    status: TrackStatus
    age: int = 0
    hits: int = 0
    misses: int = 0

    def __post_init__(self) -> None:
        if self.track_id < 0:
            raise ValueError(f"track_id must be >= 0, got {self.track_id}")
        object.__setattr__(self, "status", TrackStatus(self.status))


__all__ = [
    "IMAGE_ENCODINGS",
    "Box3D",
    "CameraFrame",
    "DetectedObject",
    "EgoState",
    "ObjectClass",
    "PointCloud",
    "RadarScan",
    "SensorKind",
    "SensorSet",
    "Track",
    "TrackStatus",
]
