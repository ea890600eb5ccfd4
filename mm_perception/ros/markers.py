"""RViz ``visualization_msgs/MarkerArray`` outputs for objects, tracks and planned paths.

* :func:`objects_to_markers`: one ``CUBE`` per :class:`~mm_perception.core.types.DetectedObject`
  (pose = box centre + yaw quaternion :func:`~mm_perception.ros.convert_objects.yaw_to_quaternion`,
  scale = size ``(l, w, h)``, colour by class with alpha rising with the score).
* :func:`tracks_to_markers`: per :class:`~mm_perception.core.types.Track` (by default only
  confirmed and coasting ones) a ``CUBE`` (namespace ``<ns>``), a ``TEXT_VIEW_FACING`` label
  ``"<track_id> <class>"`` above the box (``<ns>/label``) and, when the speed is above
  :attr:`MarkerConfig.min_speed_mps`, an ``ARROW`` from the box centre to
  ``centre + velocity * arrow_time_s`` (``<ns>/velocity``).
* :func:`path_to_markers`: a ``LINE_STRIP`` through planned poses ``(x, y, yaw)``.

Marker ids: a track's markers have ``id = track_id mod 2**31`` (``Marker.id`` is int32), so the
same track keeps the same markers from call to call and RViz updates them in place. Objects
have no identity: their id is their index in the input list. The path is id 0.

Stale markers: every array starts with one ``DELETEALL`` marker per namespace it uses, before
the ``ADD`` markers. RViz applies the markers of an array in order, so the ``DELETEALL`` clears
what the previous array drew (e.g. a track that has since been deleted, or the 10th object
when there are now 9) and the ``ADD`` markers redraw the current set, all in one message,
without any bookkeeping of the previous ids. RViz versions differ on whether ``DELETEALL``
clears only its ``ns`` or every marker of the display, so publish each function's array on
its own topic (``~/debug/objects_markers``, ``~/debug/tracks_markers``, ...), each with its
own MarkerArray display. A ``lifetime_s > 0`` additionally lets markers expire when the
publisher stops.

Bad values never reach a message: an object or track with a non-finite number anywhere (box,
score, velocity) and a path pose with a non-finite value are skipped; every function returns
a :class:`MarkerBatch` with the array and the number skipped, for the node's throttled log
line and diagnostics (DESIGN rule 5). Objects in another frame than ``frame_id`` raise
:class:`~mm_perception.core.errors.ConversionError` (as
:func:`~mm_perception.ros.convert_objects.objects_to_msg` does).

The message packages are imported lazily (this module imports without ROS); messages are the
generated rclpy classes. Within one array the markers share one ``Header`` and one
``lifetime`` ``Duration`` object (read-only use).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from mm_perception.core.checks import is_real
from mm_perception.core.errors import ConfigError, ConversionError
from mm_perception.core.types import DetectedObject, ObjectClass, Track, TrackStatus
from mm_perception.eval.overlay import (
    CLASS_COLOURS,
    parse_class_colours,
    parse_track_statuses,
)
from mm_perception.ros.convert_objects import yaw_to_quaternion
from mm_perception.ros.message_factory import NS_PER_S, RclpyFactory, header

#: ``Marker.id`` is int32: track ids are taken modulo this
MARKER_ID_MODULO = 2**31

_FACTORY = RclpyFactory()
RGBA = tuple[float, float, float, float]


class MarkerBatch(NamedTuple):
    """What a ``*_to_markers`` function returns.

    Attributes:
        array: the ``visualization_msgs/msg/MarkerArray`` (rclpy message), ``DELETEALL``
            marker(s) first.
        skipped: number of inputs (objects, tracks, path poses) left out because a value was
            not finite.
    """

    array: Any
    skipped: int


def _check_float(name: str, value: Any, minimum: float, inclusive: bool) -> float:
    ok = is_real(value) and math.isfinite(float(value)) and (
        float(value) >= minimum if inclusive else float(value) > minimum)
    if not ok:
        rel = ">=" if inclusive else ">"
        raise ConfigError(f"MarkerConfig.{name} must be a finite number {rel} {minimum}, "
                          f"got {value!r}")
    return float(value)


def _check_rgba(name: str, value: Any) -> RGBA:
    try:
        vals = tuple(float(c) for c in value)
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 4 or not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in vals):
        raise ConfigError(f"MarkerConfig.{name} must be 4 numbers (r, g, b, a) in [0, 1], "
                          f"got {value!r}")
    return vals[0], vals[1], vals[2], vals[3]


@dataclass(frozen=True)
class MarkerConfig:
    """Marker style.

    Attributes:
        min_alpha: alpha of a score-0 object; alpha = ``min_alpha + (1 - min_alpha) * score``
            (in [0, 1]).
        text_height_m: height of an upper-case letter of the track labels, metres (> 0).
        text_offset_m: label position above the box top, metres (>= 0).
        arrow_time_s: a velocity arrow ends at ``centre + velocity * arrow_time_s``, seconds
            (> 0): the arrow shows where the object will be after that time.
        min_speed_mps: no arrow when ``|velocity| <= min_speed_mps`` (m/s, >= 0).
        arrow_shaft_m, arrow_head_m: arrow shaft diameter and head diameter, metres (> 0);
            the head length is the head diameter.
        path_width_m: line width of the path strip, metres (> 0).
        path_z_m: height of the path strip in ``frame_id``, metres.
        path_colour: ``(r, g, b, a)`` in [0, 1] of the path.
        track_statuses: track statuses drawn (default confirmed and coasting).
        class_colours: class -> ``(R, G, B)`` ints in [0, 255]; classes not listed use
            :data:`~mm_perception.eval.overlay.CLASS_COLOURS` (shared with the camera overlay).
        frame_locked: the markers' ``frame_locked`` flag (re-transform with the frame).

    Raises:
        ConfigError: a value out of range; the message names the field and value.
    """

    min_alpha: float = 0.3
    text_height_m: float = 0.8
    text_offset_m: float = 0.4
    arrow_time_s: float = 1.0
    min_speed_mps: float = 0.2
    arrow_shaft_m: float = 0.15
    arrow_head_m: float = 0.4
    path_width_m: float = 0.15
    path_z_m: float = 0.0
    path_colour: RGBA = (0.1, 0.9, 0.3, 0.9)
    track_statuses: tuple[TrackStatus, ...] = (TrackStatus.CONFIRMED, TrackStatus.COASTING)
    class_colours: Mapping[ObjectClass, tuple[int, int, int]] = field(
        default_factory=lambda: CLASS_COLOURS)
    frame_locked: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        alpha = _check_float("min_alpha", self.min_alpha, 0.0, True)
        if alpha > 1.0:
            raise ConfigError(f"MarkerConfig.min_alpha must be in [0, 1], got {self.min_alpha!r}")
        set_(self, "min_alpha", alpha)
        for name in ("text_height_m", "arrow_time_s", "arrow_shaft_m", "arrow_head_m",
                     "path_width_m"):
            set_(self, name, _check_float(name, getattr(self, name), 0.0, False))
        for name in ("text_offset_m", "min_speed_mps"):
            set_(self, name, _check_float(name, getattr(self, name), 0.0, True))
        set_(self, "path_z_m", _check_float("path_z_m", self.path_z_m, -math.inf, False))
        set_(self, "path_colour", _check_rgba("path_colour", self.path_colour))
        if not isinstance(self.frame_locked, bool):
            raise ConfigError(f"MarkerConfig.frame_locked must be a bool, "
                              f"got {self.frame_locked!r}")
        set_(self, "track_statuses", parse_track_statuses("MarkerConfig", self.track_statuses))
        set_(self, "class_colours", parse_class_colours("MarkerConfig", self.class_colours))

    def rgba(self, cls: ObjectClass, score: float) -> RGBA:
        """Marker colour of a class, alpha from the score (clipped to [0, 1])."""
        r, g, b = self.class_colours.get(cls, CLASS_COLOURS[ObjectClass.UNKNOWN])
        alpha = self.min_alpha + (1.0 - self.min_alpha) * min(max(score, 0.0), 1.0)
        return r / 255.0, g / 255.0, b / 255.0, alpha


# --------------------------------------------------------------------------------------
# Message helpers
# --------------------------------------------------------------------------------------


def _viz() -> Any:
    return importlib.import_module("visualization_msgs.msg")


def _geometry() -> Any:
    return importlib.import_module("geometry_msgs.msg")


def _std() -> Any:
    return importlib.import_module("std_msgs.msg")


def lifetime_duration(lifetime_s: float) -> Any:
    """``builtin_interfaces/msg/Duration`` of ``lifetime_s`` seconds (0 = forever).

    Raises:
        ConfigError: ``lifetime_s`` negative, not finite or past the int32 seconds range.
    """
    if (not is_real(lifetime_s) or not math.isfinite(float(lifetime_s)) or lifetime_s < 0
            or lifetime_s >= 2**31):
        raise ConfigError(f"marker lifetime_s must be a finite number of seconds >= 0 "
                          f"(0 = forever), got {lifetime_s!r}")
    total_ns = round(float(lifetime_s) * NS_PER_S)
    sec, nanosec = divmod(total_ns, NS_PER_S)
    return importlib.import_module("builtin_interfaces.msg").Duration(sec=int(sec),
                                                                       nanosec=int(nanosec))


class _Builder:
    """Marker construction with the header / lifetime shared by one array."""

    def __init__(self, stamp_ns: int, frame_id: str, lifetime_s: float,
                 config: MarkerConfig) -> None:
        self.viz, self.geo, self.std = _viz(), _geometry(), _std()
        self.header = header(stamp_ns, frame_id, _FACTORY)
        self.lifetime = lifetime_duration(lifetime_s)
        self.config = config
        self.markers: list[Any] = []

    def delete_all(self, namespace: str) -> None:
        m = self.viz.Marker
        self.markers.append(m(header=self.header, ns=namespace, id=0, action=m.DELETEALL))

    def colour(self, rgba: RGBA) -> Any:
        # float32 fields: rounded here, so a message equals its decoded copy (as
        # convert_objects does)
        r, g, b, a = (float(np.float32(c)) for c in rgba)
        return self.std.ColorRGBA(r=r, g=g, b=b, a=a)

    def point(self, xyz: Any) -> Any:
        return self.geo.Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))

    def add(self, namespace: str, marker_id: int, marker_type: int, *,
            position: Any = (0.0, 0.0, 0.0), yaw: float = 0.0,
            scale: Any = (1.0, 1.0, 1.0), rgba: RGBA = (1.0, 1.0, 1.0, 1.0),
            points: Sequence[Any] = (), text: str = "") -> None:
        qx, qy, qz, qw = yaw_to_quaternion(yaw)
        pose = self.geo.Pose(position=self.point(position),
                             orientation=self.geo.Quaternion(x=qx, y=qy, z=qz, w=qw))
        m = self.viz.Marker
        self.markers.append(m(
            header=self.header, ns=namespace, id=int(marker_id), type=marker_type,
            action=m.ADD, pose=pose,
            scale=self.geo.Vector3(x=float(scale[0]), y=float(scale[1]), z=float(scale[2])),
            color=self.colour(rgba), lifetime=self.lifetime,
            frame_locked=self.config.frame_locked,
            points=[self.point(p) for p in points], text=text))

    def cube(self, namespace: str, marker_id: int, obj: DetectedObject) -> None:
        box = obj.box
        self.add(namespace, marker_id, self.viz.Marker.CUBE, position=box.center, yaw=box.yaw,
                 scale=box.size, rgba=self.config.rgba(obj.label, obj.score))

    def array(self) -> Any:
        return self.viz.MarkerArray(markers=self.markers)


def _finite_object(obj: DetectedObject) -> bool:
    """Whether every number a marker takes from ``obj`` is finite (and the size positive)."""
    box = obj.box
    vals = [*np.asarray(box.center, np.float64).ravel().tolist(),
            *np.asarray(box.size, np.float64).ravel().tolist(), float(box.yaw),
            float(obj.score)]
    if obj.velocity is not None:
        vals += np.asarray(obj.velocity, np.float64).ravel().tolist()
    return (len(vals) >= 8 and all(math.isfinite(v) for v in vals)
            and bool(np.all(np.asarray(box.size) > 0)))


def _check_frame(frame: str, frame_id: str, what: str) -> None:
    if frame != frame_id:
        raise ConversionError(f"{what} is in frame {frame!r}, the markers in {frame_id!r}; "
                              f"transform it first (Box3D.transformed)")


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def objects_to_markers(objects: Sequence[DetectedObject], stamp_ns: int, frame_id: str,
                       namespace: str = "objects", lifetime_s: float = 0.0,
                       config: MarkerConfig | None = None) -> MarkerBatch:
    """Detected objects -> ``MarkerArray``: ``DELETEALL`` (``namespace``), then one ``CUBE``
    per object.

    Args:
        objects: the objects; every ``box.frame_id`` must be ``frame_id``.
        stamp_ns: header stamp, int ns.
        frame_id: frame of the boxes (``header.frame_id``), e.g. ``base_link``.
        namespace: marker namespace.
        lifetime_s: marker lifetime, seconds (0 = until replaced / deleted).
        config: style (default :class:`MarkerConfig()`).

    Returns:
        :class:`MarkerBatch`; cube ``id`` = index of the object in ``objects``, pose = box
        centre and yaw quaternion, scale = ``(l, w, h)`` m, colour by class with alpha from
        the score. Objects with a non-finite value are skipped and counted.

    Raises:
        ConversionError: an object in another frame, a bad stamp.
        ConfigError: a bad ``lifetime_s``.
    """
    cfg = config if config is not None else MarkerConfig()
    build = _Builder(stamp_ns, frame_id, lifetime_s, cfg)
    build.delete_all(namespace)
    skipped = 0
    for i, obj in enumerate(objects):
        _check_frame(obj.box.frame_id, frame_id, f"object {i}")
        if not _finite_object(obj):
            skipped += 1
            continue
        build.cube(namespace, i, obj)
    return MarkerBatch(build.array(), skipped)


def track_marker_id(track_id: int) -> int:
    """``Marker.id`` (int32, >= 0) of a track's markers: ``track_id mod 2**31``."""
    return int(track_id) % MARKER_ID_MODULO


def tracks_to_markers(tracks: Sequence[Track], stamp_ns: int, frame_id: str,
                      namespace: str = "tracks", lifetime_s: float = 0.0,
                      config: MarkerConfig | None = None) -> MarkerBatch:
    """Tracks -> ``MarkerArray`` with stable ids.

    The array holds ``DELETEALL`` for ``namespace``, ``namespace + "/label"`` and
    ``namespace + "/velocity"``, then per drawn track (status in ``config.track_statuses``):
    a ``CUBE`` (``namespace``), a ``TEXT_VIEW_FACING`` ``"<track_id> <class>"`` placed
    ``text_offset_m`` above the box top (``<namespace>/label``), and an ``ARROW`` with
    ``points = [centre, centre + velocity * arrow_time_s]`` (``<namespace>/velocity``) when
    the track has a velocity with ``|v| > min_speed_mps``. All three have
    ``id = track_marker_id(track_id)``.

    Args:
        tracks: the tracker's output; every box in ``frame_id``.
        stamp_ns, frame_id, namespace, lifetime_s, config: as for :func:`objects_to_markers`.

    Returns:
        :class:`MarkerBatch`; ``skipped`` counts drawn-status tracks with a non-finite value
        (tracks of other statuses are left out silently, not counted).

    Raises:
        ConversionError: a track in another frame, a bad stamp.
        ConfigError: a bad ``lifetime_s``.
    """
    cfg = config if config is not None else MarkerConfig()
    build = _Builder(stamp_ns, frame_id, lifetime_s, cfg)
    ns_label, ns_vel = f"{namespace}/label", f"{namespace}/velocity"
    for ns in (namespace, ns_label, ns_vel):
        build.delete_all(ns)
    marker = build.viz.Marker
    skipped = 0
    for trk in tracks:
        if trk.status not in cfg.track_statuses:
            continue
        obj = trk.object
        _check_frame(obj.box.frame_id, frame_id, f"track {trk.track_id}")
        if not _finite_object(obj):
            skipped += 1
            continue
        mid = track_marker_id(trk.track_id)
        build.cube(namespace, mid, obj)
        box = obj.box
        top = np.array(box.center, dtype=np.float64)
        top[2] += box.size[2] / 2.0 + cfg.text_offset_m
        build.add(ns_label, mid, marker.TEXT_VIEW_FACING, position=top,
                  scale=(0.0, 0.0, cfg.text_height_m), rgba=cfg.rgba(obj.label, 1.0),
                  text=f"{trk.track_id} {obj.label.value}")
        if obj.velocity is not None:
            vel = np.asarray(obj.velocity, dtype=np.float64)
            if float(np.linalg.norm(vel)) > cfg.min_speed_mps:
                start = np.asarray(box.center, dtype=np.float64)
                build.add(ns_vel, mid, marker.ARROW,
                          scale=(cfg.arrow_shaft_m, cfg.arrow_head_m, cfg.arrow_head_m),
                          rgba=cfg.rgba(obj.label, 1.0),
                          points=[start, start + vel * cfg.arrow_time_s])
    return MarkerBatch(build.array(), skipped)


def path_to_markers(poses: npt.ArrayLike, stamp_ns: int, frame_id: str,
                    namespace: str = "path", lifetime_s: float = 0.0,
                    config: MarkerConfig | None = None) -> MarkerBatch:
    """A planned path -> ``MarkerArray``: ``DELETEALL`` (``namespace``), then one
    ``LINE_STRIP`` (id 0) through the poses' positions at height ``config.path_z_m``.

    Args:
        poses: ``(N, 3)`` float ``x, y`` (metres) and ``yaw`` (rad) in ``frame_id``; the yaw
            is not drawn (a strip has no heading). An empty array of any shape is no path.
        stamp_ns, frame_id, namespace, lifetime_s, config: as for :func:`objects_to_markers`.

    Returns:
        :class:`MarkerBatch`; rows with a non-finite value are left out of the strip and
        counted in ``skipped``. With fewer than 2 finite rows there is no strip (RViz needs
        two points), only the ``DELETEALL``.

    Raises:
        ValueError: ``poses`` not of shape ``(N, 3)``.
        ConversionError / ConfigError: a bad stamp / ``lifetime_s``.
    """
    cfg = config if config is not None else MarkerConfig()
    arr = np.asarray(poses, dtype=np.float64)
    if arr.size == 0:
        arr = arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"path poses must have shape (N, 3) (x, y, yaw), got {arr.shape}")
    build = _Builder(stamp_ns, frame_id, lifetime_s, cfg)
    build.delete_all(namespace)
    finite = np.all(np.isfinite(arr), axis=1)
    skipped = int(np.count_nonzero(~finite))
    xy = arr[finite, :2]
    if xy.shape[0] >= 2:
        pts = np.column_stack([xy, np.full(xy.shape[0], cfg.path_z_m)])
        build.add(namespace, 0, build.viz.Marker.LINE_STRIP,
                  scale=(cfg.path_width_m, 0.0, 0.0), rgba=cfg.path_colour, points=list(pts))
    return MarkerBatch(build.array(), skipped)


__all__ = [
    "MARKER_ID_MODULO",
    "MarkerBatch",
    "MarkerConfig",
    "lifetime_duration",
    "objects_to_markers",
    "path_to_markers",
    "track_marker_id",
    "tracks_to_markers",
]
