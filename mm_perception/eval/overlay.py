"""Fast camera overlays for live debugging output (numpy + OpenCV, no ROS, no matplotlib).

:func:`draw_overlay` draws onto a copy of an RGB camera image:

* LiDAR / radar points (``base_link``) projected with the camera's lens model and coloured by
  their depth along the optical axis (``z`` of the camera optical frame) with the *turbo*
  colormap over :attr:`OverlayConfig.depth_range_m` (depths outside the range get the end
  colours);
* 3D boxes (``base_link``) as projected wireframes: each of the 12 edges is clipped against
  the near plane ``z = near_m`` of the optical frame, so an edge crossing behind the camera
  is cut where it crosses the plane instead of wrapping round to a garbage position; a box
  entirely behind the plane draws nothing. With a distorting lens each edge is split into
  :attr:`OverlayConfig.edge_subdivisions` pieces so the drawing follows the lens' curvature;
  pieces outside the lens model's valid field of view are dropped;
* tracks (boxes drawn thicker, plus a ``"<id> <class>"`` label at the projected top centre);
* 2D detections as rectangles with a ``"<class> <score>"`` label.

Colours are per class (:data:`CLASS_COLOURS`, RGB). It is meant for live use: a 640x480 image
with 20k points and 30 boxes takes a few milliseconds (see the module's test / benchmark);
:func:`mm_perception.eval.report.plot_camera` (matplotlib) is for reports.

Errors: a wrong image (not a ``numpy`` array, not ``uint8``, not ``(H, W, 3)``, or a size other
than the camera model's) raises ``ValueError`` naming the dtype / both sizes: the overlay
would be silently misplaced otherwise (scale the model with
:meth:`~mm_perception.core.camera.CameraModel.scaled` for a resized image). Everything else
never raises: empty inputs, NaN / infinite points (skipped), points and boxes behind the
camera or outside the image, NaN 2D boxes (skipped).

OpenCV is imported inside the drawing functions, so importing this module (e.g. for
:data:`CLASS_COLOURS`, which the RViz markers share) does not load it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.camera import CameraModel
from mm_perception.core.checks import is_real
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import Box3D, DetectedObject, ObjectClass, Track, TrackStatus

if TYPE_CHECKING:
    from mm_perception.detection.camera.detector import Detections2D

U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]
RGB = tuple[int, int, int]

#: default colour (R, G, B) of each class
CLASS_COLOURS: Mapping[ObjectClass, RGB] = MappingProxyType({
    ObjectClass.CAR: (0, 170, 255),
    ObjectClass.TRUCK: (255, 140, 0),
    ObjectClass.BUS: (255, 215, 0),
    ObjectClass.PEDESTRIAN: (255, 40, 40),
    ObjectClass.CYCLIST: (40, 220, 40),
    ObjectClass.UNKNOWN: (200, 200, 200),
})

#: the 12 edges of a box as index pairs into :meth:`Box3D.corners` (bottom face, top face,
#: verticals)
BOX_EDGES: npt.NDArray[np.intp] = np.array(
    [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
     (0, 4), (1, 5), (2, 6), (3, 7)], dtype=np.intp)

#: pixel coordinates are clipped (in float) to the image grown by this margin before they are
#: rounded to the int32 that OpenCV takes; OpenCV clips the rest itself
_GUARD_PX = 4.0


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"OverlayConfig.{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_float(name: str, value: Any, positive: bool = True) -> float:
    if not is_real(value) or not math.isfinite(float(value)) or (positive and value <= 0):
        what = "a finite number > 0" if positive else "a finite number"
        raise ConfigError(f"OverlayConfig.{name} must be {what}, got {value!r}")
    return float(value)


def _check_colour(owner: str, cls: Any, colour: Any) -> RGB:
    try:
        vals = tuple(colour)
    except TypeError:
        vals = ()
    if (len(vals) != 3 or not all(isinstance(c, int | np.integer) and not isinstance(c, bool)
                                  and 0 <= c <= 255 for c in vals)):
        raise ConfigError(f"{owner}.class_colours[{cls!r}] must be 3 integers in "
                          f"[0, 255] (R, G, B), got {colour!r}")
    return int(vals[0]), int(vals[1]), int(vals[2])


def parse_track_statuses(owner: str, value: Any) -> tuple[TrackStatus, ...]:
    """``track_statuses`` of a drawing config as :class:`TrackStatus` values.

    Raises:
        ConfigError: naming ``owner`` (the config class) and the bad value.
    """
    try:
        return tuple(TrackStatus(s) for s in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}.track_statuses must hold TrackStatus values "
                          f"{[s.value for s in TrackStatus]}, got {value!r}") from None


def parse_class_colours(owner: str, value: Any) -> Mapping[ObjectClass, RGB]:
    """``class_colours`` of a drawing config over the defaults (:data:`CLASS_COLOURS`): keys
    are :class:`ObjectClass` values, colours 3 ints in [0, 255].

    Raises:
        ConfigError: naming ``owner`` (the config class), the key and the bad value.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(f"{owner}.class_colours must be a mapping class -> "
                          f"(R, G, B), got {value!r}")
    colours = dict(CLASS_COLOURS)
    for key, colour in value.items():
        try:
            cls = ObjectClass(key)
        except ValueError:
            raise ConfigError(f"{owner}.class_colours key {key!r} is not an "
                              f"ObjectClass {[c.value for c in ObjectClass]}") from None
        colours[cls] = _check_colour(owner, key, colour)
    return MappingProxyType(colours)


@dataclass(frozen=True)
class OverlayConfig:
    """Settings of :func:`draw_overlay`.

    Attributes:
        point_radius_px: radius of a drawn point, pixels; 0 = one pixel, r = a disk of
            ``dx^2 + dy^2 <= r (r + 1)`` (r = 1 is a 3x3 square).
        max_points: at most this many (in-image) points are drawn, evenly subsampled
            (deterministic) when there are more; >= 1.
        depth_range_m: ``(near, far)`` depths (optical-frame ``z``, metres) mapped to the ends
            of the turbo colormap; ``0 <= near < far``.
        line_thickness: wireframe / rectangle line width, pixels (>= 1); tracks use
            ``line_thickness + 1``.
        near_m: near clipping plane of box edges, metres in front of the camera (> 0).
        edge_subdivisions: pieces each box edge is split into for a distorting lens
            (>= 1; a pinhole camera always uses 1: straight edges stay straight).
        font_scale: OpenCV Hershey font scale of the labels (> 0).
        antialias: anti-aliased lines and text (nicer, but pixels are blended colours).
        draw_points, draw_objects, draw_tracks, draw_detections_2d, draw_labels: what to draw
            (``draw_labels``: track ids and 2D detection labels).
        track_statuses: track statuses drawn (default confirmed and coasting).
        class_colours: class -> ``(R, G, B)`` ints in [0, 255]; a class not listed uses the
            :data:`CLASS_COLOURS` default.

    Raises:
        ConfigError: any value out of range; the message names the field and value.
    """

    point_radius_px: int = 1
    max_points: int = 50_000
    depth_range_m: tuple[float, float] = (0.0, 60.0)
    line_thickness: int = 1
    near_m: float = 0.1
    edge_subdivisions: int = 8
    font_scale: float = 0.4
    antialias: bool = False
    draw_points: bool = True
    draw_objects: bool = True
    draw_tracks: bool = True
    draw_detections_2d: bool = True
    draw_labels: bool = True
    track_statuses: tuple[TrackStatus, ...] = (TrackStatus.CONFIRMED, TrackStatus.COASTING)
    class_colours: Mapping[ObjectClass, RGB] = field(default_factory=lambda: CLASS_COLOURS)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "point_radius_px", _check_int("point_radius_px", self.point_radius_px, 0))
        set_(self, "max_points", _check_int("max_points", self.max_points, 1))
        set_(self, "line_thickness", _check_int("line_thickness", self.line_thickness, 1))
        set_(self, "edge_subdivisions",
             _check_int("edge_subdivisions", self.edge_subdivisions, 1))
        set_(self, "near_m", _check_float("near_m", self.near_m))
        set_(self, "font_scale", _check_float("font_scale", self.font_scale))
        try:
            near, far = self.depth_range_m
            near_f = _check_float("depth_range_m", near, positive=False)
            far_f = _check_float("depth_range_m", far, positive=False)
        except (TypeError, ValueError):
            raise ConfigError(f"OverlayConfig.depth_range_m must be two finite numbers "
                              f"(near, far) in metres, got {self.depth_range_m!r}") from None
        if not 0.0 <= near_f < far_f:
            raise ConfigError(f"OverlayConfig.depth_range_m must satisfy 0 <= near < far, "
                              f"got {self.depth_range_m!r}")
        set_(self, "depth_range_m", (near_f, far_f))
        for name in ("antialias", "draw_points", "draw_objects", "draw_tracks",
                     "draw_detections_2d", "draw_labels"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"OverlayConfig.{name} must be a bool, "
                                  f"got {getattr(self, name)!r}")
        set_(self, "track_statuses", parse_track_statuses("OverlayConfig", self.track_statuses))
        set_(self, "class_colours", parse_class_colours("OverlayConfig", self.class_colours))

    def colour(self, cls: ObjectClass) -> RGB:
        """``(R, G, B)`` of a class."""
        return self.class_colours.get(cls, CLASS_COLOURS[ObjectClass.UNKNOWN])


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def depth_lut() -> U8:
    """``(256, 3)`` uint8 RGB turbo colormap (index 0 = near, 255 = far), read-only."""
    import cv2

    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)
    lut = np.ascontiguousarray(bgr[:, 0, ::-1], dtype=np.uint8)
    lut.setflags(write=False)
    return lut


@lru_cache(maxsize=1)
def _nearness_lut() -> U8:
    """``(256, 1, 3)`` uint8 RGB colours indexed by nearness ``255 - depth index``."""
    return np.ascontiguousarray(depth_lut()[::-1, None, :])


@lru_cache(maxsize=16)
def _disk_kernel(radius: int) -> U8:
    """``(2r+1, 2r+1)`` uint8 structuring element ``dx^2 + dy^2 <= r (r + 1)``."""
    r = np.arange(-radius, radius + 1)
    dx, dy = np.meshgrid(r, r)
    return (dx * dx + dy * dy <= radius * (radius + 1)).astype(np.uint8)


def check_image(image: Any, camera: CameraModel) -> U8:
    """The image as an ``(H, W, 3)`` uint8 array matching ``camera``'s size.

    Raises:
        ValueError: not a numpy array, dtype other than uint8, not 3 channels, or a size other
            than the camera model's (the message names both ``W x H`` sizes).
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"overlay image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"overlay image must be uint8 RGB, got dtype {image.dtype} "
                         f"(convert e.g. with np.clip(img * 255, 0, 255).astype(np.uint8))")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"overlay image must have shape (H, W, 3), got {image.shape}")
    h, w = image.shape[:2]
    if (w, h) != (camera.width, camera.height):
        raise ValueError(f"overlay image is {w}x{h} (WxH) but the camera model is "
                         f"{camera.width}x{camera.height}; use CameraModel.scaled() for a "
                         f"resized image")
    return image


def clip_segments(p0: F64, p1: F64, xmin: float, xmax: float, ymin: float,
                  ymax: float) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
    """Clip 2D segments to a rectangle (Liang-Barsky, vectorised, float64).

    Args:
        p0, p1: ``(K, 2)`` float64 segment ends (pixels); non-finite rows are dropped.
        xmin, xmax, ymin, ymax: the rectangle, pixels.

    Returns:
        ``(q0, q1, keep)``: the clipped ends ``(K, 2)`` (meaningful where ``keep``) and a
        ``(K,)`` bool mask of segments with a part inside the rectangle.
    """
    keep = np.all(np.isfinite(p0), axis=1) & np.all(np.isfinite(p1), axis=1)
    a = np.where(keep[:, None], p0, 0.0)
    b = np.where(keep[:, None], p1, 0.0)
    d = b - a
    t0 = np.zeros(a.shape[0])
    t1 = np.ones(a.shape[0])
    for p, q in ((-d[:, 0], a[:, 0] - xmin), (d[:, 0], xmax - a[:, 0]),
                 (-d[:, 1], a[:, 1] - ymin), (d[:, 1], ymax - a[:, 1])):
        keep &= ~((p == 0.0) & (q < 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = q / p
        t0 = np.where(p < 0.0, np.maximum(t0, r), t0)
        t1 = np.where(p > 0.0, np.minimum(t1, r), t1)
    keep &= t0 <= t1
    return a + t0[:, None] * d, a + t1[:, None] * d, keep


def box_segments_cam(corners_cam: F64, near_m: float) -> tuple[F64, F64, npt.NDArray[np.intp]]:
    """The box edges in front of the near plane, clipped to it.

    Args:
        corners_cam: ``(B, 8, 3)`` float64 box corners (:meth:`Box3D.corners` order) in the
            camera optical frame, metres.
        near_m: near plane ``z`` (metres, > 0).

    Returns:
        ``(a, b, box_index)``: ``(E, 3)`` float64 edge ends with ``z >= near_m`` (up to
        rounding) and ``(E,)`` the box each edge belongs to; edges wholly behind the plane
        are dropped, edges crossing it are cut at the plane.
    """
    a = corners_cam[:, BOX_EDGES[:, 0]].reshape(-1, 3)
    b = corners_cam[:, BOX_EDGES[:, 1]].reshape(-1, 3)
    idx = np.repeat(np.arange(corners_cam.shape[0], dtype=np.intp), len(BOX_EDGES))
    za, zb = a[:, 2], b[:, 2]
    keep = np.isfinite(za) & np.isfinite(zb) & ((za >= near_m) | (zb >= near_m))
    a, b, idx, za, zb = a[keep], b[keep], idx[keep], za[keep], zb[keep]
    # one end behind: move it onto the plane (dz != 0 there, since the other end is in front)
    for end, other, z_end, z_other in ((a, b, za, zb), (b, a, zb, za)):
        cut = z_end < near_m
        if np.any(cut):
            t = (near_m - z_end[cut]) / (z_other[cut] - z_end[cut])
            end[cut] = end[cut] + t[:, None] * (other[cut] - end[cut])
            end[cut, 2] = near_m
    return a, b, idx


# --------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------


def _draw_points(out: U8, camera: CameraModel, T_cam_base: SE3, points_base: Any,
                 config: OverlayConfig) -> None:
    import cv2

    pts = np.asarray(points_base, dtype=np.float64)
    if pts.size == 0:
        return
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points_base must have shape (N, 3), got {pts.shape}")
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 in the matmul: NaN rows
        cam = T_cam_base.apply(pts)
    # project() marks non-finite rows, points behind near_m and outside the image invalid
    uv, ok = camera.project(cam, min_depth=config.near_m, in_image=True)
    uv, depth = uv[ok], cam[ok, 2]
    if depth.shape[0] > config.max_points:
        pick = np.linspace(0, depth.shape[0] - 1, config.max_points).round().astype(np.intp)
        uv, depth = uv[pick], depth[pick]
    if depth.shape[0] == 0:
        return
    lo, hi = config.depth_range_m
    idx = np.clip((depth - lo) * (255.0 / (hi - lo)), 0.0, 254.0).astype(np.uint8)
    # "nearness" image: 0 = no point, 255 - idx for a point (1..255). Painting in increasing
    # nearness makes the nearest point of a pixel win; a grey dilation (max) then grows each
    # point to a disk, again with the nearest point on top.
    near = np.uint8(255) - idx
    order = np.argsort(near, kind="stable")  # radix sort on uint8
    h, w = out.shape[:2]
    # in_image guarantees 0 <= uv < size; rounding can reach the size itself
    u = np.minimum(np.rint(uv[order, 0]).astype(np.intp), w - 1)
    v = np.minimum(np.rint(uv[order, 1]).astype(np.intp), h - 1)
    canvas = np.zeros((h, w), dtype=np.uint8)
    canvas.reshape(-1)[v * w + u] = near[order]
    if config.point_radius_px > 0:
        canvas = np.asarray(cv2.dilate(canvas, _disk_kernel(config.point_radius_px)),
                            dtype=np.uint8)
    colour = cv2.applyColorMap(canvas, _nearness_lut())  # (H, W, 3) RGB
    cv2.copyTo(colour, canvas, out)  # in place: only where canvas != 0


def _draw_boxes(out: U8, camera: CameraModel, T_cam_base: SE3, boxes: Sequence[Box3D],
                colours: Sequence[RGB], thickness: int, config: OverlayConfig) -> None:
    """Project and draw box wireframes, each in its colour."""
    import cv2

    if not boxes:
        return
    corners = np.stack([b.corners() for b in boxes])  # (B, 8, 3) base_link
    corners_cam = T_cam_base.apply(corners.reshape(-1, 3)).reshape(-1, 8, 3)
    a, b, idx = box_segments_cam(corners_cam, config.near_m)
    if idx.size == 0:
        return
    steps = 1 if camera.distortion_model == "none" else config.edge_subdivisions
    t = np.linspace(0.0, 1.0, steps + 1)
    pts = a[:, None, :] + t[None, :, None] * (b - a)[:, None, :]  # (E, S+1, 3)
    # clipped ends lie on the plane up to rounding: project with a slightly nearer limit
    uv, ok = camera.project(pts.reshape(-1, 3), min_depth=0.5 * config.near_m)
    uv = uv.reshape(-1, steps + 1, 2)
    ok = ok.reshape(-1, steps + 1)
    p0 = uv[:, :-1].reshape(-1, 2)
    p1 = uv[:, 1:].reshape(-1, 2)
    seg_ok = (ok[:, :-1] & ok[:, 1:]).ravel()
    seg_box = np.repeat(idx, steps)
    h, w = out.shape[:2]
    q0, q1, inside = clip_segments(p0, p1, -_GUARD_PX, w - 1 + _GUARD_PX, -_GUARD_PX,
                                   h - 1 + _GUARD_PX)
    keep = seg_ok & inside
    if not np.any(keep):
        return
    lines = np.stack([q0[keep], q1[keep]], axis=1)
    lines = np.rint(lines).astype(np.int32)  # (K, 2, 2), bounded by the guard rectangle
    seg_box = seg_box[keep]
    line_type = cv2.LINE_AA if config.antialias else cv2.LINE_8
    palette = sorted(set(colours))
    colour_of_box = np.array([palette.index(c) for c in colours], dtype=np.intp)
    seg_colour = colour_of_box[seg_box]
    for k, colour in enumerate(palette):
        segs = lines[seg_colour == k]  # (K, 2, 2): K two-point polylines
        if segs.shape[0]:
            cv2.polylines(out, segs, False, colour, thickness, line_type)


def _put_label(out: U8, text: str, u: float, v: float, colour: RGB,
               config: OverlayConfig) -> None:
    """Text with its bottom-left corner at ``(u, v)`` (pixels), dark outline for contrast."""
    import cv2

    h, w = out.shape[:2]
    if not (math.isfinite(u) and math.isfinite(v)) or not (-w <= u <= 2 * w
                                                           and -h <= v <= 2 * h):
        return
    org = (round(u), round(v))
    line_type = cv2.LINE_AA if config.antialias else cv2.LINE_8
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(out, text, org, font, config.font_scale, (0, 0, 0), 3, line_type)
    cv2.putText(out, text, org, font, config.font_scale, colour, 1, line_type)


def _draw_track_labels(out: U8, camera: CameraModel, T_cam_base: SE3, tracks: Sequence[Track],
                       config: OverlayConfig) -> None:
    if not tracks:
        return
    tops = np.stack([t.object.box.center + np.array([0.0, 0.0, t.object.box.size[2] / 2])
                     for t in tracks])
    uv, ok = camera.project(T_cam_base.apply(tops), min_depth=config.near_m)
    for trk, (u, v), good in zip(tracks, uv.tolist(), ok.tolist(), strict=True):
        if good:
            _put_label(out, f"{trk.track_id} {trk.object.label.value}", u, v - 4.0,
                       config.colour(trk.object.label), config)


def _draw_detections_2d(out: U8, detections: Detections2D, config: OverlayConfig) -> None:
    import cv2

    boxes = np.asarray(detections.boxes, dtype=np.float64).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return
    h, w = out.shape[:2]
    scores = np.asarray(detections.scores, dtype=np.float64).reshape(-1)
    line_type = cv2.LINE_AA if config.antialias else cv2.LINE_8
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        if not all(math.isfinite(c) for c in (x1, y1, x2, y2)):
            continue
        # pixel edges [x1, x2) -> pixel centres x1 .. x2 - 1, clamped near the image
        pt1 = (int(np.clip(round(x1), -1, w)), int(np.clip(round(y1), -1, h)))
        pt2 = (int(np.clip(round(x2) - 1, -1, w)), int(np.clip(round(y2) - 1, -1, h)))
        label = detections.labels[k]
        colour = config.colour(label)
        cv2.rectangle(out, pt1, pt2, colour, config.line_thickness, line_type)
        if config.draw_labels:
            score = scores[k] if k < scores.shape[0] else float("nan")
            _put_label(out, f"{label.value} {score:.2f}", pt1[0], pt1[1] - 3.0, colour, config)


def draw_overlay(image_rgb: U8, camera: CameraModel, T_cam_base: SE3,
                 points_base: npt.ArrayLike | None = None,
                 objects: Sequence[DetectedObject] = (),
                 tracks: Sequence[Track] | None = None,
                 detections_2d: Detections2D | None = None,
                 config: OverlayConfig | None = None) -> U8:
    """Draw points, 3D boxes, tracks and 2D detections onto a copy of a camera image.

    Drawing order (later on top): points, object boxes, track boxes, 2D detections, labels.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB image; ``(W, H)`` must equal ``camera.size``.
            Not modified.
        camera: the camera's intrinsics and lens model.
        T_cam_base: ``base_link -> camera optical frame`` transform (maps base_link points
            into the optical frame; the inverse of the rig's camera extrinsics).
        points_base: ``(N, 3)`` float points in ``base_link``, metres, or None. Non-finite
            rows, points behind the near plane and points outside the image are skipped;
            an empty array of any shape draws nothing.
        objects: 3D detections whose boxes are in ``base_link``.
        tracks: tracks (boxes in ``base_link``); only ``config.track_statuses`` are drawn.
        detections_2d: 2D detections of this image (pixel-edge boxes), or None.
        config: drawing settings (default :class:`OverlayConfig()`).

    Returns:
        a new ``(H, W, 3)`` uint8 RGB image (C-contiguous).

    Raises:
        ValueError: a bad image (see :func:`check_image`) or ``points_base`` with a shape
            other than ``(N, 3)``.
    """
    cfg = config if config is not None else OverlayConfig()
    out = np.array(check_image(image_rgb, camera), dtype=np.uint8, order="C", copy=True)
    if cfg.draw_points and points_base is not None:
        _draw_points(out, camera, T_cam_base, points_base, cfg)
    if cfg.draw_objects and objects:
        _draw_boxes(out, camera, T_cam_base, [o.box for o in objects],
                    [cfg.colour(o.label) for o in objects], cfg.line_thickness, cfg)
    shown: list[Track] = []
    if cfg.draw_tracks and tracks:
        shown = [t for t in tracks if t.status in cfg.track_statuses]
        _draw_boxes(out, camera, T_cam_base, [t.object.box for t in shown],
                    [cfg.colour(t.object.label) for t in shown], cfg.line_thickness + 1, cfg)
    if cfg.draw_detections_2d and detections_2d is not None:
        _draw_detections_2d(out, detections_2d, cfg)
    if cfg.draw_labels and shown:
        _draw_track_labels(out, camera, T_cam_base, shown, cfg)
    return out


__all__ = [
    "BOX_EDGES",
    "CLASS_COLOURS",
    "OverlayConfig",
    "box_segments_cam",
    "check_image",
    "clip_segments",
    "depth_lut",
    "draw_overlay",
]
