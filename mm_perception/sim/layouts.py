"""Road and floor layouts of the simulator: static geometry, paths and drivable area (numpy only).

A :class:`Layout` holds everything static about a scene: the :class:`~mm_perception.sim.spec.
StaticBox` list the MuJoCo side builds (road slabs, markings, kerbs, walls, shelves), the named
:class:`Path` objects that agents and the ego follow (lanes, turning paths through a junction,
aisles), pedestrian crossing lines, parking spots and the drivable area (for off-road
detection).

Frames and heights (world frame, x east, y north, z up, metres):

- The MuJoCo ground plane lies at z = 0 under everything. Paved surfaces are thin slabs whose
  top is at :data:`ROAD_TOP` (z = 0.01 m) so that they never coincide with the plane; lane
  markings are 2 mm thick with their top at :data:`MARKING_TOP` (z = 0.012 m); sidewalks and
  kerbs are slabs with their top at :data:`KERB_TOP` (z = 0.15 m).
  :meth:`Layout.ground_height` gives the surface height under any point (actors stand on it).
- Traffic drives on the right. A lane path runs along the lane centre in the driving
  direction; lateral offsets are positive to the left of that direction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import KeyedConfigError
from mm_perception.sim.spec import Material, StaticBox

F64 = npt.NDArray[np.float64]
Pose2 = tuple[float, float, float]

#: top of paved slabs (roads, parking lots, warehouse floor), m
ROAD_TOP = 0.01
#: top of lane markings (2 mm thick, lying on the road slab), m
MARKING_TOP = 0.012
#: top of kerbs / sidewalks, m
KERB_TOP = 0.15
#: width of a zebra crossing along the road (its stripes' length), m
CROSSWALK_WIDTH_M = 3.0

_SLAB = 0.02          # thickness of paved slabs, m (bottom below the ground plane)
_MARK = 0.002         # thickness of markings, m
_LINE_W = 0.15        # lane line width, m
_WHITE = (0.92, 0.92, 0.88, 1.0)
_YELLOW = (0.93, 0.76, 0.15, 1.0)


# ---------------------------------------------------------------------------- paths


def _sinc(x: F64) -> F64:
    """sin(x) / x, exact at 0 (numpy's sinc is normalised by pi)."""
    return np.sinc(np.asarray(x, dtype=np.float64) / np.pi)


@dataclass(frozen=True, eq=False)
class Path:
    """A planar path made of straight and circular-arc segments, parameterised by arc length.

    Segment ``i`` starts at ``(x0[i], y0[i])`` with heading ``yaw0[i]``, has length
    ``lengths[i]`` (m) and constant signed curvature ``curvatures[i]`` (1/m, > 0 turns left,
    0 = straight). Chained paths (:meth:`chain`) are continuous in position and heading;
    polylines (:meth:`polyline`) have heading jumps at their vertices.

    Attributes:
        name: name of the path in its layout.
        x0, y0, yaw0, lengths, curvatures: ``(S,)`` float64 per segment (world frame, m, rad).
    """

    name: str
    x0: F64
    y0: F64
    yaw0: F64
    lengths: F64
    curvatures: F64
    _s0: F64 = field(init=False, repr=False)

    def __post_init__(self) -> None:
        arrays = {}
        for key in ("x0", "y0", "yaw0", "lengths", "curvatures"):
            arr = np.array(getattr(self, key), dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(arr)):
                raise KeyedConfigError(f"paths.{self.name}.{key}", "must be finite")
            arrays[key] = arr
        sizes = {a.shape for a in arrays.values()}
        if len(sizes) != 1 or arrays["x0"].size == 0:
            raise KeyedConfigError(f"paths.{self.name}", "needs one or more segments with "
                                   f"matching x0/y0/yaw0/lengths/curvatures, got {sizes}")
        if np.any(arrays["lengths"] <= 0):
            raise KeyedConfigError(f"paths.{self.name}.lengths", "segments must be longer than "
                                   f"0 m, got {arrays['lengths'].tolist()}")
        for key, arr in arrays.items():
            arr.setflags(write=False)
            object.__setattr__(self, key, arr)
        s0 = np.concatenate([[0.0], np.cumsum(arrays["lengths"])[:-1]])
        s0.setflags(write=False)
        object.__setattr__(self, "_s0", s0)

    # -- constructors

    @classmethod
    def chain(cls, name: str, x: float, y: float, yaw: float,
              pieces: Sequence[tuple[float, float]]) -> Path:
        """A continuous path from a start pose and ``(length, curvature)`` pieces."""
        xs, ys, yaws, lens, kappas = [], [], [], [], []
        for length, kappa in pieces:
            xs.append(x)
            ys.append(y)
            yaws.append(yaw)
            lens.append(float(length))
            kappas.append(float(kappa))
            half = kappa * length / 2
            chord = length * float(_sinc(np.array(half)))
            x += chord * math.cos(yaw + half)
            y += chord * math.sin(yaw + half)
            yaw += kappa * length
        return cls(name, np.array(xs), np.array(ys), np.array(yaws), np.array(lens),
                   np.array(kappas))

    @classmethod
    def line(cls, name: str, start: Sequence[float], end: Sequence[float]) -> Path:
        """A straight path from ``start`` ``(x, y)`` to ``end`` ``(x, y)``."""
        return cls.polyline(name, np.array([start, end], dtype=np.float64))

    @classmethod
    def polyline(cls, name: str, points: Any) -> Path:
        """A path through ``(N, 2)`` points (N >= 2) joined by straight segments."""
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 2:
            raise KeyedConfigError(f"paths.{name}", f"a polyline needs (N >= 2, 2) points, got "
                                   f"shape {pts.shape}")
        d = np.diff(pts, axis=0)
        lens = np.hypot(d[:, 0], d[:, 1])
        if np.any(lens <= 1e-9):
            raise KeyedConfigError(f"paths.{name}", "polyline has repeated points")
        return cls(name, pts[:-1, 0], pts[:-1, 1], np.arctan2(d[:, 1], d[:, 0]), lens,
                   np.zeros(len(lens)))

    def transformed(self, name: str, yaw: float, dx: float = 0.0, dy: float = 0.0) -> Path:
        """This path rotated by ``yaw`` about the origin, then shifted by ``(dx, dy)``."""
        c, s = math.cos(yaw), math.sin(yaw)
        return Path(name, c * self.x0 - s * self.y0 + dx, s * self.x0 + c * self.y0 + dy,
                    self.yaw0 + yaw, self.lengths, self.curvatures)

    # -- queries

    @property
    def length(self) -> float:
        """Total arc length, m."""
        return float(self._s0[-1] + self.lengths[-1])

    def _locate(self, s: F64) -> tuple[np.ndarray, F64]:
        s = np.clip(s, 0.0, self.length)
        idx = np.clip(np.searchsorted(self._s0, s, side="right") - 1, 0, len(self._s0) - 1)
        u = np.clip(s - self._s0[idx], 0.0, self.lengths[idx])
        return idx, u

    def poses_at(self, s: Any) -> F64:
        """Poses at arc lengths ``s`` (clipped to ``[0, length]``).

        Args:
            s: ``(N,)`` arc lengths, m.

        Returns:
            ``(N, 3)`` float64 ``x, y, yaw`` (world frame, m, rad).
        """
        idx, u = self._locate(np.asarray(s, dtype=np.float64).reshape(-1))
        kappa = self.curvatures[idx]
        half = kappa * u / 2
        chord = u * _sinc(half)
        yaw0 = self.yaw0[idx]
        return np.stack([self.x0[idx] + chord * np.cos(yaw0 + half),
                         self.y0[idx] + chord * np.sin(yaw0 + half),
                         yaw0 + kappa * u], axis=1)

    def point_at(self, s: float) -> Pose2:
        """``(x, y, yaw)`` at arc length ``s`` (clipped to ``[0, length]``), m and rad."""
        p = self.poses_at(np.array([s]))[0]
        return float(p[0]), float(p[1]), float(p[2])

    def curvatures_at(self, s: Any) -> F64:
        """``(N,)`` signed curvature (1/m) at arc lengths ``s``."""
        idx, _ = self._locate(np.asarray(s, dtype=np.float64).reshape(-1))
        return self.curvatures[idx].copy()

    def curvature_at(self, s: float) -> float:
        """Signed curvature at arc length ``s``, 1/m."""
        return float(self.curvatures_at(np.array([s]))[0])

    def closest_many(self, xy: Any) -> tuple[F64, F64]:
        """Closest path point for each query point.

        Args:
            xy: ``(N, 2)`` world points, m.

        Returns:
            ``s`` ``(N,)`` arc length of the closest path point, and ``lateral`` ``(N,)`` the
            signed offset of the query point from the path (m, > 0 = left of the direction
            of travel).
        """
        p = np.asarray(xy, dtype=np.float64).reshape(-1, 1, 2)       # (N, 1, 2)
        kappa = self.curvatures[None, :]                               # (1, S)
        x0, y0, yaw0 = self.x0[None, :], self.y0[None, :], self.yaw0[None, :]
        length = self.lengths[None, :]
        dx, dy = p[..., 0] - x0, p[..., 1] - y0                        # (N, S)
        cos0, sin0 = np.cos(yaw0), np.sin(yaw0)
        # straight segments: clamped projection
        u_line = np.clip(dx * cos0 + dy * sin0, 0.0, length)
        # arcs: angle of the point around the centre, measured in the travel direction
        is_arc = np.abs(kappa) > 1e-12
        safe_k = np.where(is_arc, kappa, 1.0)
        cx, cy = x0 - sin0 / safe_k, y0 + cos0 / safe_k
        phi0 = np.arctan2(y0 - cy, x0 - cx)
        phi = np.arctan2(p[..., 1] - cy, p[..., 0] - cx)
        ang = np.mod((phi - phi0) * np.sign(safe_k), 2 * np.pi)
        u_arc = ang / np.abs(safe_k)
        # beyond the arc's end: whichever end is nearer (angularly past the end or before 0)
        past = u_arc > length
        nearer_end = np.where(2 * np.pi / np.abs(safe_k) - u_arc < u_arc - length, 0.0, length)
        u_arc = np.where(past, nearer_end, u_arc)
        u = np.where(is_arc, u_arc, u_line)
        half = kappa * u / 2
        chord = u * _sinc(half)
        fx = x0 + chord * np.cos(yaw0 + half)
        fy = y0 + chord * np.sin(yaw0 + half)
        ex, ey = p[..., 0] - fx, p[..., 1] - fy
        dist2 = ex * ex + ey * ey
        best = np.argmin(dist2, axis=1)                                 # first on ties
        rows = np.arange(p.shape[0])
        yaw_f = (yaw0 + kappa * u)[rows, best]
        s = self._s0[best] + u[rows, best]
        lateral = np.cos(yaw_f) * ey[rows, best] - np.sin(yaw_f) * ex[rows, best]
        return s, lateral

    def closest(self, x: float, y: float) -> tuple[float, float]:
        """``(s, lateral)`` of the closest path point to ``(x, y)`` (see :meth:`closest_many`)."""
        s, lat = self.closest_many(np.array([[x, y]]))
        return float(s[0]), float(lat[0])


# ---------------------------------------------------------------------------- layout


def _rects_contain(rects: F64, xy: F64, eps: float = 1e-9) -> np.ndarray:
    """``(N, R)`` bool: point n inside oriented rectangle r (``rects`` rows cx, cy, l, w, yaw)."""
    if rects.shape[0] == 0:
        return np.zeros((xy.shape[0], 0), dtype=bool)
    dx = xy[:, 0:1] - rects[None, :, 0]
    dy = xy[:, 1:2] - rects[None, :, 1]
    c, s = np.cos(rects[None, :, 4]), np.sin(rects[None, :, 4])
    lx, ly = c * dx + s * dy, -s * dx + c * dy
    return (np.abs(lx) <= rects[None, :, 2] / 2 + eps) & (np.abs(ly) <= rects[None, :, 3] / 2 + eps)


def _rect_array(rects: Sequence[Sequence[float]], cols: int) -> F64:
    arr = np.array(rects, dtype=np.float64).reshape(-1, cols)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Layout:
    """The static part of a scene (see the module docstring for frames and heights).

    Attributes:
        kind: layout type (``straight_road``, ``intersection``, ``parking_lot``,
            ``warehouse_aisle``).
        params: the constructor parameters (``Layout.from_dict({"type": kind, **params})``
            rebuilds it).
        paths: name -> :class:`Path` (lanes, turning paths, aisles).
        crossings: name -> ``((x0, y0), (x1, y1))`` pedestrian crossing lines, world m.
        spots: parking spot poses ``(x, y, yaw)`` (yaw = the direction a parked car faces).
        drivable_rects: ``(R, 5)`` ``cx, cy, length, width, yaw`` of paved drivable areas.
        blocked_rects: ``(Q, 5)`` areas cut out of the drivable area (shelves).
        surface_rects: ``(P, 6)`` ``cx, cy, length, width, yaw, top_z`` of walkable slabs.
        boxes: the static boxes handed to the MuJoCo side.
        bounds: ``(xmin, xmax, ymin, ymax)`` of the built geometry, m.
        ground_material: material of the ground plane under the layout.
        crossing_offset: people walking a named crossing keep this far to the right of its
            centre line (so that people crossing in opposite directions pass each other), m;
            0 where the walkway is narrow (between parked cars).
    """

    kind: str
    params: Mapping[str, float | int]
    paths: Mapping[str, Path]
    crossings: Mapping[str, tuple[tuple[float, float], tuple[float, float]]]
    spots: tuple[Pose2, ...]
    drivable_rects: F64
    blocked_rects: F64
    surface_rects: F64
    boxes: tuple[StaticBox, ...]
    bounds: tuple[float, float, float, float]
    ground_material: Material = Material.GRASS
    crossing_offset: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "paths", MappingProxyType(dict(self.paths)))
        object.__setattr__(self, "crossings", MappingProxyType(dict(self.crossings)))

    def static_boxes(self) -> tuple[StaticBox, ...]:
        """Every static box of the layout (unique names)."""
        return self.boxes

    @property
    def half_extent(self) -> float:
        """Half side of a square centred on the origin that holds the layout plus 20 m, m."""
        return float(max(abs(b) for b in self.bounds) + 20.0)

    def path(self, name: str, key: str = "path") -> Path:
        """The path called ``name``.

        Raises:
            KeyedConfigError: (under ``key``) no such path; the message lists the names.
        """
        if not isinstance(name, str) or name not in self.paths:
            raise KeyedConfigError(key, f"unknown path {name!r} in a {self.kind} layout "
                                   f"(available: {', '.join(self.paths)})")
        return self.paths[name]

    def is_drivable(self, xy: Any) -> np.ndarray:
        """Whether points lie on the drivable (paved, unobstructed) area.

        Args:
            xy: ``(N, 2)`` world points, m.

        Returns:
            ``(N,)`` bool.
        """
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        inside = _rects_contain(self.drivable_rects, pts).any(axis=1)
        blocked = _rects_contain(self.blocked_rects, pts, eps=-1e-9).any(axis=1)
        return np.asarray(inside & ~blocked, dtype=bool)

    def ground_height(self, xy: Any) -> F64:
        """``(N,)`` height of the walkable surface under ``(N, 2)`` world points (0 = ground
        plane), m."""
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        inside = _rects_contain(self.surface_rects[:, :5], pts)
        tops = np.where(inside, self.surface_rects[None, :, 5], 0.0)
        return tops.max(axis=1) if tops.shape[1] else np.zeros(pts.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """``{"type": kind, **params}`` (plain Python values)."""
        return {"type": self.kind, **{k: v for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, data: Any, key: str = "layout") -> Layout:
        """Build a layout from ``{"type": ..., params...}``.

        Raises:
            KeyedConfigError: unknown type or parameter, bad value (key path under ``key``).
        """
        if not isinstance(data, Mapping):
            raise KeyedConfigError(key, f"expected a mapping with a 'type', got {data!r}")
        kind = data.get("type")
        if not isinstance(kind, str) or kind not in LAYOUT_TYPES:
            raise KeyedConfigError(f"{key}.type", f"unknown layout type {kind!r} (allowed: "
                                   f"{', '.join(LAYOUT_TYPES)})")
        build, spec = LAYOUT_TYPES[kind]
        params: dict[str, Any] = {}
        for name, value in data.items():
            if name == "type":
                continue
            if name not in spec:
                raise KeyedConfigError(f"{key}.{name}", f"unknown {kind} parameter (allowed: "
                                       f"{', '.join(spec)})")
            params[name] = _check_param(f"{key}.{name}", value, *spec[name])
        try:
            return build(**params)
        except KeyedConfigError as exc:
            raise KeyedConfigError(f"{key}.{exc.key}", exc.problem) from None


def _check_param(key: str, value: Any, kind: type, lo: float, hi: float) -> float | int:
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise KeyedConfigError(key, f"expected an integer, got {value!r}")
        out: float | int = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer |
                                                     np.floating):
            raise KeyedConfigError(key, f"expected a number, got {value!r}")
        out = float(value)
        if not math.isfinite(out):
            raise KeyedConfigError(key, f"expected a finite number, got {value!r}")
    if not lo <= out <= hi:
        raise KeyedConfigError(key, f"must be in [{lo}, {hi}], got {value!r}")
    return out


# ---------------------------------------------------------------------------- building


class _Builder:
    """Accumulates boxes, rectangles and paths of one layout."""

    def __init__(self) -> None:
        self.boxes: list[StaticBox] = []
        self.drivable: list[list[float]] = []
        self.blocked: list[list[float]] = []
        self.surfaces: list[list[float]] = []
        self.paths: dict[str, Path] = {}

    def box(self, name: str, cx: float, cy: float, z_lo: float, z_hi: float, length: float,
            width: float, yaw: float, material: Material,
            rgba: tuple[float, float, float, float] | None = None) -> None:
        self.boxes.append(StaticBox(name, np.array([cx, cy, (z_lo + z_hi) / 2]),
                                    np.array([length, width, z_hi - z_lo]), yaw, material, rgba))

    def slab(self, name: str, cx: float, cy: float, length: float, width: float, yaw: float = 0.0,
             material: Material = Material.ASPHALT, drivable: bool = True) -> None:
        """A paved slab with its top at ROAD_TOP."""
        self.box(name, cx, cy, ROAD_TOP - _SLAB, ROAD_TOP, length, width, yaw, material)
        self.surfaces.append([cx, cy, length, width, yaw, ROAD_TOP])
        if drivable:
            self.drivable.append([cx, cy, length, width, yaw])

    def sidewalk(self, name: str, cx: float, cy: float, length: float, width: float,
                 yaw: float = 0.0) -> None:
        """A raised concrete sidewalk (top at KERB_TOP), not drivable."""
        self.box(name, cx, cy, ROAD_TOP - _SLAB, KERB_TOP, length, width, yaw, Material.CONCRETE)
        self.surfaces.append([cx, cy, length, width, yaw, KERB_TOP])

    def marking(self, name: str, cx: float, cy: float, length: float, width: float,
                yaw: float = 0.0, rgba: tuple[float, float, float, float] = _WHITE) -> None:
        self.box(name, cx, cy, MARKING_TOP - _MARK, MARKING_TOP, length, width, yaw,
                 Material.LANE_MARKING, rgba)

    def dashed(self, name: str, x0: float, x1: float, y: float, dash: float = 3.0,
               period: float = 12.0) -> None:
        """A dashed line along x from x0 to x1 at y (world axis-aligned)."""
        n = max(1, int((x1 - x0 + period - dash) // period))
        start = x0 + ((x1 - x0) - ((n - 1) * period + dash)) / 2
        for k in range(n):
            self.marking(f"{name}_{k}", start + k * period + dash / 2, y, dash, _LINE_W)


def _rot(x: float, y: float, yaw: float) -> tuple[float, float]:
    c, s = math.cos(yaw), math.sin(yaw)
    return c * x - s * y, s * x + c * y


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise KeyedConfigError(name, f"must be a positive number, got {value!r}")


# ---------------------------------------------------------------------------- constructors


def straight_road(lanes_per_direction: int = 2, lane_width: float = 3.5, length: float = 400.0,
                  shoulder_width: float = 2.5, sidewalk_width: float = 2.0) -> Layout:
    """A straight two-way road along x, centred on the origin (x in ``[-length/2, length/2]``).

    Paths: ``east_i`` (heading +x, ``y = -(i + 0.5) * lane_width``, i = 0 next to the centre
    line), ``west_i`` (heading -x, mirrored), ``shoulder_east`` / ``shoulder_west`` (paved
    shoulders outside the outer lanes, for parked or broken-down vehicles). Shoulders are
    drivable; the raised sidewalks beyond them are not.
    """
    if isinstance(lanes_per_direction, bool) or not isinstance(lanes_per_direction, int) \
            or lanes_per_direction < 1:
        raise KeyedConfigError("lanes_per_direction",
                               f"must be an integer >= 1, got {lanes_per_direction!r}")
    _check_positive(lane_width=lane_width, length=length, shoulder_width=shoulder_width,
                    sidewalk_width=sidewalk_width)
    n, lw, L = lanes_per_direction, float(lane_width), float(length)
    H = n * lw
    W = H + shoulder_width
    b = _Builder()
    b.slab("road", 0.0, 0.0, L, 2 * W)
    for side, sign in (("south", -1.0), ("north", 1.0)):
        b.sidewalk(f"sidewalk_{side}", 0.0, sign * (W + sidewalk_width / 2), L, sidewalk_width)
        b.marking(f"edge_line_{side}", 0.0, sign * (H - _LINE_W / 2), L, _LINE_W)
        for k in range(1, n):
            b.dashed(f"lane_line_{side}_{k}", -L / 2, L / 2, sign * k * lw)
    b.marking("centre_line", 0.0, 0.0, L, _LINE_W, rgba=_YELLOW)
    for i in range(n):
        y = (i + 0.5) * lw
        b.paths[f"east_{i}"] = Path.chain(f"east_{i}", -L / 2, -y, 0.0, [(L, 0.0)])
        b.paths[f"west_{i}"] = Path.chain(f"west_{i}", L / 2, y, math.pi, [(L, 0.0)])
    ys = H + shoulder_width / 2
    b.paths["shoulder_east"] = Path.chain("shoulder_east", -L / 2, -ys, 0.0, [(L, 0.0)])
    b.paths["shoulder_west"] = Path.chain("shoulder_west", L / 2, ys, math.pi, [(L, 0.0)])
    half_y = W + sidewalk_width
    return Layout(
        kind="straight_road",
        params={"lanes_per_direction": n, "lane_width": lw, "length": L,
                "shoulder_width": float(shoulder_width), "sidewalk_width": float(sidewalk_width)},
        paths=b.paths, crossings={}, spots=(),
        drivable_rects=_rect_array(b.drivable, 5), blocked_rects=_rect_array([], 5),
        surface_rects=_rect_array(b.surfaces, 6), boxes=tuple(b.boxes),
        bounds=(-L / 2, L / 2, -half_y, half_y), ground_material=Material.GRASS)


#: intersection arms in counter-clockwise order; arm k is the west arm rotated by k * 90 deg
ARMS = ("w", "s", "e", "n")
#: turning movements through the junction
DIRECTIONS = ("left", "right", "straight")


def intersection_path(approach: str, direction: str, lane: int = 0) -> str:
    """Name of the path that enters the junction from arm ``approach`` (``w``, ``s``, ``e``,
    ``n``: the arm the vehicle comes from) and leaves it ``direction`` (``left``, ``right``,
    ``straight``; straight movements exist per lane, turns use the inner (left) or outer
    (right) lane)."""
    return f"{approach}_straight_{lane}" if direction == "straight" else f"{approach}_{direction}"


def intersection(lanes_per_direction: int = 1, lane_width: float = 3.5, arm_length: float = 60.0,
                 corner_radius: float = 6.0, sidewalk_width: float = 3.0) -> Layout:
    """A four-way junction of two two-way roads crossing at the origin.

    The junction is a paved square of half side ``J = lanes_per_direction * lane_width +
    corner_radius``; four arms of ``arm_length`` leave it (``w`` towards -x, ``s`` towards -y,
    ``e``, ``n``). Each arm has sidewalks, a stop line and a zebra crossing.

    Paths (``A`` in ``w``, ``s``, ``e``, ``n``; lane ``i`` = 0 next to the centre line):
    ``A_in_i`` (towards the junction, ends at its edge), ``A_out_i`` (from the junction edge
    outwards), ``A_straight_i`` (through), ``A_left`` (inner lane to the inner exit lane),
    ``A_right`` (outer lane to the outer exit lane): every movement path runs from the far end
    of its approach arm to the far end of its exit arm, the turns being circular arcs.
    Crossings: ``crosswalk_A`` from the right-hand sidewalk (seen from the approaching
    traffic) to the left one.
    """
    if isinstance(lanes_per_direction, bool) or not isinstance(lanes_per_direction, int) \
            or lanes_per_direction < 1:
        raise KeyedConfigError("lanes_per_direction",
                               f"must be an integer >= 1, got {lanes_per_direction!r}")
    _check_positive(lane_width=lane_width, arm_length=arm_length, corner_radius=corner_radius,
                    sidewalk_width=sidewalk_width)
    n, lw, A = lanes_per_direction, float(lane_width), float(arm_length)
    H = n * lw
    J = H + float(corner_radius)
    sw = float(sidewalk_width)
    cw_x = J + 2.5            # crosswalk centre distance from the junction centre
    stop_x = J + 5.0          # stop line
    b = _Builder()
    b.slab("junction", 0.0, 0.0, 2 * J, 2 * J)
    crossings: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {}
    for k, arm in enumerate(ARMS):
        rot = k * math.pi / 2

        def put(fn: Callable[..., None], name: str, x: float, y: float, length: float,
                width: float, rot: float = rot, **kw: Any) -> None:
            # geometry described for the west arm (along x), rotated into place
            cx, cy = _rot(x, y, rot)
            fn(name, cx, cy, length, width, rot, **kw)

        put(b.slab, f"arm_{arm}", -(J + A / 2), 0.0, A, 2 * H)
        for side, sign in (("r", -1.0), ("l", 1.0)):
            put(b.sidewalk, f"sidewalk_{arm}_{side}", -(J + A / 2), sign * (H + sw / 2), A, sw)
        put(b.marking, f"centre_line_{arm}", -(stop_x + J + A) / 2, 0.0, J + A - stop_x,
            _LINE_W, rgba=_YELLOW)
        put(b.marking, f"stop_line_{arm}", -stop_x, -H / 2, 0.4, H)
        for j, y in enumerate(np.arange(-H + 0.5, H - 0.25, 1.0)):
            put(b.marking, f"zebra_{arm}_{j}", -cw_x, float(y), CROSSWALK_WIDTH_M, 0.5)
        for m in range(1, n):
            for sign in (-1.0, 1.0):
                n_d = max(1, int((A - stop_x + J) // 12.0))
                for d in range(n_d):
                    put(b.marking, f"lane_line_{arm}_{m}_{'r' if sign < 0 else 'l'}_{d}",
                        -(stop_x + 6.0 + d * 12.0), sign * m * lw, 3.0, _LINE_W)
        c0 = _rot(-cw_x, -(H + sw / 2), rot)
        c1 = _rot(-cw_x, H + sw / 2, rot)
        crossings[f"crosswalk_{arm}"] = ((c0[0], c0[1]), (c1[0], c1[1]))
        # lanes and movements, described for the west arm then rotated
        west: dict[str, Path] = {}
        for i in range(n):
            y = (i + 0.5) * lw
            west[f"{arm}_in_{i}"] = Path.chain("", -(J + A), -y, 0.0, [(A, 0.0)])
            west[f"{arm}_out_{i}"] = Path.chain("", -J, y, math.pi, [(A, 0.0)])
            west[f"{arm}_straight_{i}"] = Path.chain("", -(J + A), -y, 0.0,
                                                     [(2 * (A + J), 0.0)])
        r_left = J + 0.5 * lw
        west[f"{arm}_left"] = Path.chain("", -(J + A), -0.5 * lw, 0.0, [
            (A, 0.0), (math.pi / 2 * r_left, 1.0 / r_left), (A, 0.0)])
        r_right = J - (n - 0.5) * lw
        west[f"{arm}_right"] = Path.chain("", -(J + A), -(n - 0.5) * lw, 0.0, [
            (A, 0.0), (math.pi / 2 * r_right, -1.0 / r_right), (A, 0.0)])
        for name, path in west.items():
            b.paths[name] = path.transformed(name, rot)
    ext = J + A
    return Layout(
        kind="intersection",
        params={"lanes_per_direction": n, "lane_width": lw, "arm_length": A,
                "corner_radius": float(corner_radius), "sidewalk_width": sw},
        paths=b.paths, crossings=crossings, spots=(),
        drivable_rects=_rect_array(b.drivable, 5), blocked_rects=_rect_array([], 5),
        surface_rects=_rect_array(b.surfaces, 6), boxes=tuple(b.boxes),
        bounds=(-ext, ext, -ext, ext), ground_material=Material.GRASS, crossing_offset=0.6)


def parking_lot(aisles: int = 1, spots_per_row: int = 10, spot_width: float = 2.7,
                spot_length: float = 5.5, aisle_width: float = 7.0,
                sidewalk_width: float = 2.0) -> Layout:
    """A parking lot: ``aisles`` driving aisles along x, each between two rows of spots
    (perpendicular parking), with end driveways of ``aisle_width`` at both x ends.

    Paths: ``aisle_j_east`` / ``aisle_j_west`` (the two directions of aisle j, a quarter of the
    aisle width either side of its centre line). Spots: aisle-major, south row then north row,
    west to east; a spot's yaw faces away from its aisle (nose-in parking). Crossings:
    ``aisle_j_cross_m`` (m = 0, 1, 2 at a quarter, half and three quarters of the row) across
    aisle j from its south edge to its north edge (a spot boundary when the row has a
    multiple of 4 spots; pedestrians wait and arrive clear of the driving lanes). The whole lot
    is drivable; the sidewalk around it is not.
    """
    for name, value in (("aisles", aisles), ("spots_per_row", spots_per_row)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise KeyedConfigError(name, f"must be an integer >= 1, got {value!r}")
    _check_positive(spot_width=spot_width, spot_length=spot_length, aisle_width=aisle_width,
                    sidewalk_width=sidewalk_width)
    sw, sl, aw = float(spot_width), float(spot_length), float(aisle_width)
    row_len = spots_per_row * sw
    block = 2 * sl + aw
    lot_x = row_len + 2 * aw
    lot_y = aisles * block
    b = _Builder()
    b.slab("lot", 0.0, 0.0, lot_x, lot_y)
    side = float(sidewalk_width)
    b.sidewalk("sidewalk_south", 0.0, -(lot_y + side) / 2, lot_x + 2 * side, side)
    b.sidewalk("sidewalk_north", 0.0, (lot_y + side) / 2, lot_x + 2 * side, side)
    b.sidewalk("sidewalk_west", -(lot_x + side) / 2, 0.0, side, lot_y)
    b.sidewalk("sidewalk_east", (lot_x + side) / 2, 0.0, side, lot_y)
    spots: list[Pose2] = []
    crossings: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {}
    for j in range(aisles):
        yc = -lot_y / 2 + (j + 0.5) * block
        for row, sign in (("s", -1.0), ("n", 1.0)):
            y_row = yc + sign * (aw / 2 + sl / 2)
            for k in range(spots_per_row + 1):
                b.marking(f"spot_line_{j}_{row}_{k}", -row_len / 2 + k * sw, y_row, 0.12, sl)
            b.marking(f"row_line_{j}_{row}", 0.0, yc + sign * (aw / 2 + 0.06), row_len, 0.12)
            for k in range(spots_per_row):
                spots.append((-row_len / 2 + (k + 0.5) * sw, y_row, sign * math.pi / 2))
        xa = lot_x / 2
        b.paths[f"aisle_{j}_east"] = Path.chain(f"aisle_{j}_east", -xa, yc - aw / 4, 0.0,
                                                [(lot_x, 0.0)])
        b.paths[f"aisle_{j}_west"] = Path.chain(f"aisle_{j}_west", xa, yc + aw / 4, math.pi,
                                                [(lot_x, 0.0)])
        for m, frac in enumerate((0.25, 0.5, 0.75)):
            x = -row_len / 2 + frac * row_len
            crossings[f"aisle_{j}_cross_{m}"] = ((x, yc - aw / 2), (x, yc + aw / 2))
    hx, hy = lot_x / 2 + side, lot_y / 2 + side
    return Layout(
        kind="parking_lot",
        params={"aisles": aisles, "spots_per_row": spots_per_row, "spot_width": sw,
                "spot_length": sl, "aisle_width": aw, "sidewalk_width": side},
        paths=b.paths, crossings=crossings, spots=tuple(spots),
        drivable_rects=_rect_array(b.drivable, 5), blocked_rects=_rect_array([], 5),
        surface_rects=_rect_array(b.surfaces, 6), boxes=tuple(b.boxes),
        bounds=(-hx, hx, -hy, hy), ground_material=Material.GRASS)


_CARGO_RGBA = ((0.62, 0.47, 0.30, 1.0), (0.70, 0.55, 0.36, 1.0), (0.45, 0.50, 0.55, 1.0))


def warehouse_aisle(length: float = 40.0, aisle_width: float = 3.0, shelf_depth: float = 1.2,
                    shelf_height: float = 4.0, bay_length: float = 2.7,
                    cross_aisle_width: float = 3.0, gap_width: float = 2.0) -> Layout:
    """A warehouse hall for a mobile robot: one long aisle along x between two rows of pallet
    shelves, a walkway gap through both rows at x = 0, cross aisles at both ends, a back
    passage (1.5 m) behind each shelf row and walls all round. Concrete floor (slab top at
    ROAD_TOP); everything on the floor that is not a shelf is drivable.

    Paths: ``aisle`` (y = 0, heading +x, from the west cross aisle to the east one) and
    ``aisle_back`` (the same, heading -x). Crossings: ``gap`` (through the shelf gap at x = 0,
    south back passage to north back passage), ``end_west`` and ``end_east`` (along the
    cross aisles).
    """
    _check_positive(length=length, aisle_width=aisle_width, shelf_depth=shelf_depth,
                    shelf_height=shelf_height, bay_length=bay_length,
                    cross_aisle_width=cross_aisle_width, gap_width=gap_width)
    L, aw, sd, sh = float(length), float(aisle_width), float(shelf_depth), float(shelf_height)
    cw, gw = float(cross_aisle_width), float(gap_width)
    if gw >= L - 2.0:
        raise KeyedConfigError("gap_width", f"must leave shelves (< length - 2), got {gw}")
    back = 1.5
    hx = L / 2 + cw
    hy = aw / 2 + sd + back
    b = _Builder()
    b.slab("floor", 0.0, 0.0, 2 * hx, 2 * hy, material=Material.CONCRETE)
    half_len = (L - gw) / 2
    nb = max(1, round(half_len / bay_length))
    bay = half_len / nb
    levels = np.linspace(0.12, sh - 0.3, 4)
    upright = 0.1
    for row, sign in (("s", -1.0), ("n", 1.0)):
        yc = sign * (aw / 2 + sd / 2)
        for part, x_start in (("w", -L / 2), ("e", gw / 2)):
            xc = x_start + half_len / 2
            b.blocked.append([xc, yc, half_len, sd, 0.0])
            for k in range(nb + 1):
                x = x_start + k * bay
                x = min(max(x, x_start + upright / 2), x_start + half_len - upright / 2)
                b.box(f"upright_{row}{part}_{k}", x, yc, ROAD_TOP, sh, upright, sd, 0.0,
                      Material.SHELF)
            for k in range(nb):
                xb = x_start + (k + 0.5) * bay
                for lv, z in enumerate(levels):
                    b.box(f"board_{row}{part}_{k}_{lv}", xb, yc, float(z), float(z) + 0.05,
                          bay - upright, sd, 0.0, Material.SHELF, (0.85, 0.45, 0.10, 1.0))
                    # cargo on most levels, in a fixed pattern (the layout has no seed)
                    pattern = (k * 7 + lv * 3 + (0 if row == "s" else 5)) % 5
                    if pattern < 3:
                        height = 0.6 + 0.15 * pattern
                        b.box(f"cargo_{row}{part}_{k}_{lv}", xb, yc, float(z) + 0.05,
                              float(z) + 0.05 + height, (bay - upright) * 0.8, sd * 0.85, 0.0,
                              Material.WALL, _CARGO_RGBA[pattern])
    wall_t, wall_h = 0.2, 5.0
    b.box("wall_south", 0.0, -(hy + wall_t / 2), ROAD_TOP, wall_h, 2 * hx + 2 * wall_t, wall_t,
          0.0, Material.WALL)
    b.box("wall_north", 0.0, hy + wall_t / 2, ROAD_TOP, wall_h, 2 * hx + 2 * wall_t, wall_t,
          0.0, Material.WALL)
    b.box("wall_west", -(hx + wall_t / 2), 0.0, ROAD_TOP, wall_h, wall_t, 2 * hy, 0.0,
          Material.WALL)
    b.box("wall_east", hx + wall_t / 2, 0.0, ROAD_TOP, wall_h, wall_t, 2 * hy, 0.0,
          Material.WALL)
    # safety lines on the floor along the aisle edges
    b.marking("aisle_line_s", 0.0, -(aw / 2 - 0.1), L, 0.1, rgba=_YELLOW)
    b.marking("aisle_line_n", 0.0, aw / 2 - 0.1, L, 0.1, rgba=_YELLOW)
    xa = L / 2 + cw / 2
    b.paths["aisle"] = Path.chain("aisle", -xa, 0.0, 0.0, [(2 * xa, 0.0)])
    b.paths["aisle_back"] = Path.chain("aisle_back", xa, 0.0, math.pi, [(2 * xa, 0.0)])
    yb = hy - back / 2
    crossings = {"gap": ((0.0, -yb), (0.0, yb)),
                 "end_west": ((-xa, -yb), (-xa, yb)),
                 "end_east": ((xa, -yb), (xa, yb))}
    return Layout(
        kind="warehouse_aisle",
        params={"length": L, "aisle_width": aw, "shelf_depth": sd, "shelf_height": sh,
                "bay_length": float(bay_length), "cross_aisle_width": cw, "gap_width": gw},
        paths=b.paths, crossings=crossings, spots=(),
        drivable_rects=_rect_array(b.drivable, 5), blocked_rects=_rect_array(b.blocked, 5),
        surface_rects=_rect_array(b.surfaces, 6), boxes=tuple(b.boxes),
        bounds=(-hx - wall_t, hx + wall_t, -hy - wall_t, hy + wall_t),
        ground_material=Material.CONCRETE, crossing_offset=min(0.5, gw / 4))


_F, _I = float, int
#: layout type -> (constructor, {parameter: (type, min, max)}) for :meth:`Layout.from_dict`
LAYOUT_TYPES: Mapping[str, tuple[Callable[..., Layout], Mapping[str, tuple[type, float, float]]]]
LAYOUT_TYPES = MappingProxyType({
    "straight_road": (straight_road, {
        "lanes_per_direction": (_I, 1, 4), "lane_width": (_F, 2.5, 5.0),
        "length": (_F, 50.0, 2000.0), "shoulder_width": (_F, 0.5, 5.0),
        "sidewalk_width": (_F, 0.5, 6.0)}),
    "intersection": (intersection, {
        "lanes_per_direction": (_I, 1, 3), "lane_width": (_F, 2.5, 5.0),
        "arm_length": (_F, 20.0, 500.0), "corner_radius": (_F, 2.0, 20.0),
        "sidewalk_width": (_F, 1.0, 6.0)}),
    "parking_lot": (parking_lot, {
        "aisles": (_I, 1, 6), "spots_per_row": (_I, 1, 40), "spot_width": (_F, 2.2, 4.0),
        "spot_length": (_F, 4.5, 8.0), "aisle_width": (_F, 4.0, 12.0),
        "sidewalk_width": (_F, 0.5, 6.0)}),
    "warehouse_aisle": (warehouse_aisle, {
        "length": (_F, 10.0, 200.0), "aisle_width": (_F, 1.5, 6.0),
        "shelf_depth": (_F, 0.5, 3.0), "shelf_height": (_F, 1.0, 12.0),
        "bay_length": (_F, 1.0, 6.0), "cross_aisle_width": (_F, 1.5, 8.0),
        "gap_width": (_F, 1.0, 10.0)}),
})

__all__ = ["ARMS", "CROSSWALK_WIDTH_M", "DIRECTIONS", "KERB_TOP", "LAYOUT_TYPES",
           "MARKING_TOP", "ROAD_TOP", "Layout", "Path", "intersection", "intersection_path",
           "parking_lot", "straight_road", "warehouse_aisle"]
