"""The contract between the scenario side of the simulator and its MuJoCo side.

The scenario side (:mod:`~mm_perception.sim.scenario`, layouts, traffic) decides *what* is in
the world and how it moves, in plain numpy; the MuJoCo side (:mod:`~mm_perception.sim.world`
and the sensor models) builds the physics model once from a :class:`WorldSpec` and then only
receives poses (:class:`ActorState`) each step. Neither side imports the other.

Frames: the world frame is ENU-like (x east, y north, z up), ground at z = 0. An actor's
frame has its origin at the centre of its footprint on the ground, x forward, y left, z up
(REP 103), so its box of size ``(l, w, h)`` spans ``z in [0, h]`` in that frame. For the ego
the actor frame is ``base_link``. Units: metres, radians, m/s.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.core.types import ObjectClass

F64 = npt.NDArray[np.float64]


class Material(str, enum.Enum):
    """Surface material: decides LiDAR intensity and radar reflectivity (and a default colour)."""

    ASPHALT = "asphalt"
    LANE_MARKING = "lane_marking"
    CONCRETE = "concrete"
    GRASS = "grass"
    WALL = "wall"
    SHELF = "shelf"
    VEHICLE_PAINT = "vehicle_paint"
    GLASS = "glass"
    TIRE = "tire"
    METAL = "metal"
    CLOTH = "cloth"
    SKIN = "skin"


@dataclass(frozen=True)
class MaterialProps:
    """Sensor-relevant properties of a material.

    Attributes:
        lidar_reflectivity: diffuse reflectivity in [0, 1] (LiDAR intensity before range
            and incidence falloff).
        radar_rcs_dbsm_per_m2: radar cross-section density, dBsm for 1 m^2 seen head-on.
        rgba: default colour, each in [0, 1].
    """

    lidar_reflectivity: float
    radar_rcs_dbsm_per_m2: float
    rgba: tuple[float, float, float, float]


#: properties per material (values chosen from typical automotive LiDAR/radar literature
#: ranges: retro-reflective lane paint is bright for LiDAR, metal dominates radar)
MATERIALS: Mapping[Material, MaterialProps] = MappingProxyType({
    Material.ASPHALT: MaterialProps(0.08, -25.0, (0.25, 0.25, 0.27, 1.0)),
    Material.LANE_MARKING: MaterialProps(0.75, -25.0, (0.92, 0.92, 0.88, 1.0)),
    Material.CONCRETE: MaterialProps(0.25, -15.0, (0.62, 0.62, 0.60, 1.0)),
    Material.GRASS: MaterialProps(0.35, -20.0, (0.25, 0.45, 0.20, 1.0)),
    Material.WALL: MaterialProps(0.30, -5.0, (0.70, 0.68, 0.62, 1.0)),
    Material.SHELF: MaterialProps(0.45, 5.0, (0.20, 0.35, 0.65, 1.0)),
    Material.VEHICLE_PAINT: MaterialProps(0.40, 10.0, (0.60, 0.10, 0.10, 1.0)),
    Material.GLASS: MaterialProps(0.10, 0.0, (0.15, 0.20, 0.25, 1.0)),
    Material.TIRE: MaterialProps(0.05, -5.0, (0.05, 0.05, 0.05, 1.0)),
    Material.METAL: MaterialProps(0.50, 15.0, (0.55, 0.55, 0.58, 1.0)),
    Material.CLOTH: MaterialProps(0.30, -12.0, (0.20, 0.25, 0.50, 1.0)),
    Material.SKIN: MaterialProps(0.35, -12.0, (0.85, 0.65, 0.50, 1.0)),
})

SHAPES = ("box", "cylinder", "sphere", "capsule")


def _vec(value: Any, n: int, name: str, positive: bool = False) -> F64:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} must be {n} finite numbers, got {value!r}")
    if positive and np.any(arr <= 0):
        raise ConfigError(f"{name} must be positive, got {arr.tolist()}")
    arr.setflags(write=False)
    return arr


def _rgba(value: Any, name: str) -> tuple[float, float, float, float]:
    arr = _vec(value, 4, name)
    if np.any(arr < 0) or np.any(arr > 1):
        raise ConfigError(f"{name} components must be in [0, 1], got {arr.tolist()}")
    return (float(arr[0]), float(arr[1]), float(arr[2]), float(arr[3]))


@dataclass(frozen=True)
class StaticBox:
    """A static, upright box of the world (road surface, marking, kerb, wall, shelf).

    Attributes:
        name: unique within the world.
        center: ``(3,)`` world position of the box centre, m.
        size: ``(3,)`` full extents along its own x, y, z, m, all > 0.
        yaw: rotation about z, rad.
        material: surface material.
        rgba: colour; None = the material's default.
    """

    name: str
    center: F64
    size: F64
    yaw: float
    material: Material
    rgba: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", _vec(self.center, 3, f"{self.name}.center"))
        object.__setattr__(self, "size", _vec(self.size, 3, f"{self.name}.size", True))
        object.__setattr__(self, "material", Material(self.material))
        if self.rgba is not None:
            object.__setattr__(self, "rgba", _rgba(self.rgba, f"{self.name}.rgba"))


@dataclass(frozen=True)
class ActorPart:
    """One rigid part of an actor, in the actor frame (see the module docstring).

    Attributes:
        shape: ``box`` (size = full extents), ``cylinder`` (size = (diameter, diameter,
            length) with the axis along ``axis``), ``sphere`` (size[0] = diameter),
            ``capsule`` (like cylinder, rounded ends).
        center: ``(3,)`` part centre in the actor frame, m.
        size: ``(3,)`` m, all > 0 (see ``shape``).
        axis: ``x``, ``y`` or ``z``: cylinder/capsule axis (wheels use ``y``).
        material: surface material.
        rgba: colour; None = the material's default.
    """

    shape: str
    center: F64
    size: F64
    material: Material
    axis: str = "z"
    rgba: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ConfigError(f"part shape must be one of {SHAPES}, got {self.shape!r}")
        if self.axis not in ("x", "y", "z"):
            raise ConfigError(f"part axis must be x, y or z, got {self.axis!r}")
        object.__setattr__(self, "center", _vec(self.center, 3, "part.center"))
        object.__setattr__(self, "size", _vec(self.size, 3, "part.size", True))
        object.__setattr__(self, "material", Material(self.material))
        if self.rgba is not None:
            object.__setattr__(self, "rgba", _rgba(self.rgba, "part.rgba"))


@dataclass(frozen=True)
class ActorModel:
    """The look and size of an actor (an agent or the ego).

    Attributes:
        object_class: class reported in ground truth (the ego uses ``UNKNOWN``).
        size: ``(3,)`` length, width, height of the ground-truth box, m; every part lies
            inside it (checked).
        parts: the parts it is built from (several, coloured).
    """

    object_class: ObjectClass
    size: F64
    parts: tuple[ActorPart, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "object_class", ObjectClass(self.object_class))
        object.__setattr__(self, "size", _vec(self.size, 3, "actor size", True))
        if not self.parts:
            raise ConfigError(f"a {self.object_class.value} needs at least one part")
        half = self.size / 2
        lo = np.array([-half[0], -half[1], 0.0]) - 1e-6
        hi = np.array([half[0], half[1], self.size[2]]) + 1e-6
        for i, part in enumerate(self.parts):
            ext = _part_half_extents(part)
            if np.any(part.center - ext < lo) or np.any(part.center + ext > hi):
                raise ConfigError(
                    f"{self.object_class.value} part {i} ({part.shape} at "
                    f"{part.center.tolist()}, size {part.size.tolist()}) sticks out of the "
                    f"box {self.size.tolist()}")
        object.__setattr__(self, "parts", tuple(self.parts))


def _part_half_extents(part: ActorPart) -> F64:
    """Axis-aligned half extents of a part in the actor frame."""
    if part.shape == "box":
        return part.size / 2
    if part.shape == "sphere":
        return np.full(3, part.size[0] / 2)
    radius, length = part.size[0] / 2, part.size[2] / 2
    if part.shape == "capsule":
        length += radius
    ext = np.full(3, radius)
    ext["xyz".index(part.axis)] = length
    return ext


@dataclass(frozen=True)
class Lighting:
    """Scene lighting.

    Attributes:
        sun_direction: ``(3,)`` direction the light travels (pointing down), normalised.
        diffuse: directional light intensity in [0, 1].
        ambient: ambient intensity in [0, 1].
        sky_rgb: background colour, each in [0, 1].
    """

    sun_direction: F64 = field(default_factory=lambda: np.array([0.3, 0.2, -1.0]))
    diffuse: float = 0.7
    ambient: float = 0.35
    sky_rgb: tuple[float, float, float] = (0.55, 0.72, 0.92)

    def __post_init__(self) -> None:
        d = _vec(self.sun_direction, 3, "lighting.sun_direction")
        if d[2] >= 0:
            raise ConfigError(f"lighting.sun_direction must point down (z < 0), got {d}")
        d = d / np.linalg.norm(d)
        d.setflags(write=False)
        object.__setattr__(self, "sun_direction", d)
        for name in ("diffuse", "ambient"):
            val = float(getattr(self, name))
            if not 0.0 <= val <= 1.0:
                raise ConfigError(f"lighting.{name} must be in [0, 1], got {val}")
        for c in self.sky_rgb:
            if not 0.0 <= c <= 1.0:
                raise ConfigError(f"lighting.sky_rgb components must be in [0, 1], "
                                  f"got {self.sky_rgb}")


@dataclass(frozen=True)
class WorldSpec:
    """Everything the MuJoCo side needs to build the model once.

    Attributes:
        static: static boxes (road surface, markings, kerbs, walls, shelves, parked props).
        actors: actor id -> model, for every agent (ids are persistent, >= 1).
        ego: the ego's body (actor id 0 in :class:`ActorState` lists).
        lighting: scene lighting.
        ground_material: material of the infinite ground plane under everything.
        half_extent_m: the world is ``[-half_extent, half_extent]^2`` (ground plane size).
    """

    static: tuple[StaticBox, ...]
    actors: Mapping[int, ActorModel]
    ego: ActorModel
    lighting: Lighting = field(default_factory=Lighting)
    ground_material: Material = Material.GRASS
    half_extent_m: float = 200.0

    def __post_init__(self) -> None:
        names = [s.name for s in self.static]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"static box names must be unique, repeated: {sorted(dup)}")
        if any(int(k) < 1 for k in self.actors):
            raise ConfigError(f"actor ids must be >= 1 (0 is the ego), got {sorted(self.actors)}")
        object.__setattr__(self, "actors", MappingProxyType(dict(self.actors)))
        object.__setattr__(self, "ground_material", Material(self.ground_material))
        if not self.half_extent_m > 0:
            raise ConfigError(f"half_extent_m must be > 0, got {self.half_extent_m}")


@dataclass(frozen=True)
class ActorState:
    """Pose and motion of one actor at one instant (world frame).

    Attributes:
        actor_id: 0 = ego, >= 1 = agents (as in :attr:`WorldSpec.actors`).
        x, y: footprint centre, m.
        yaw: heading, rad.
        speed: forward speed along the heading, m/s (negative = reversing).
        yaw_rate: rad/s.
        z: ground contact height (0 on flat ground), m.
    """

    actor_id: int
    x: float
    y: float
    yaw: float
    speed: float = 0.0
    yaw_rate: float = 0.0
    z: float = 0.0

    def velocity(self) -> F64:
        """``(3,)`` world velocity of the actor frame origin, m/s."""
        return np.array([self.speed * np.cos(self.yaw), self.speed * np.sin(self.yaw), 0.0])

    def point_velocity(self, points_world: F64) -> F64:
        """``(N, 3)`` world velocity of rigid points of this actor (v + omega x r), m/s."""
        r = np.asarray(points_world, dtype=np.float64) - np.array([self.x, self.y, self.z])
        # omega x r with omega = (0, 0, w), written out term by term as np.cross computes it
        # (same signed zeros; np.cross costs ~30 us on a few points)
        w = self.yaw_rate
        x, y, z = r[..., 0], r[..., 1], r[..., 2]
        spin = np.stack([0.0 * z - w * y, w * x - 0.0 * z, 0.0 * y - 0.0 * x], axis=-1)
        return self.velocity() + spin


__all__ = ["MATERIALS", "SHAPES", "ActorModel", "ActorPart", "ActorState", "Lighting",
           "Material", "MaterialProps", "StaticBox", "WorldSpec"]
