"""Scenario description: layout, ego, agents with behaviours, lighting (frozen, numpy only).

A :class:`Scenario` is fully determined by its description and a seed: everything random
(agent sizes and colours not given in the file, speed-profile phases, ``random`` lighting) is
drawn at construction from generators seeded by ``(seed, what, agent index)``, and stored in
the scenario. The traffic model then has no randomness of its own.

YAML format (every key but ``layout``, ``ego`` is optional)::

    name: my_scene
    seed: 3                      # overridden by the seed argument of from_yaml / from_dict
    duration_s: 20.0
    description: free text
    layout: {type: straight_road, lanes_per_direction: 2, lane_width: 3.5, length: 400}
    lighting: random             # or a preset (noon, morning, evening, overcast) or
                                 # {sun_direction: [x, y, z<0], diffuse, ambient, sky_rgb}
    ego:
      platform: vehicle          # vehicle | robot
      path: east_1               # a path of the layout
      s0: 40.0                   # start arc length on the path, m
      cruise_speed: 14.0         # m/s
      # optional: speed_variation (fraction), variation_period_s, phase (rad),
      # initial_speed, wheelbase, max_steer (rad), max_accel, max_decel, max_speed,
      # max_yaw_rate
    agents:
      - class: car               # car | truck | bus | pedestrian | cyclist
        size: [4.5, 1.8, 1.5]    # optional (drawn from realistic ranges otherwise)
        colors: {body: [0.7, 0.1, 0.1]}   # optional, per role (see actors.PALETTES)
        behaviour:
          type: lane_follow      # lane_follow | turn | parked | crossing
          path: east_0
          s0: 80.0
          speed: 15.0
          # optional: speed_variation, variation_period_s, phase, initial_speed,
          # stop_at_s or stop_at_time_s, stop_duration_s (default .inf = for good)
      - class: car
        behaviour: {type: turn, approach: w, direction: left, s0: 10, speed: 8}
      - class: car
        behaviour: {type: parked, pose: [10.0, -8.2, 0.0]}   # or spot: 3 | path + s
      - class: pedestrian
        behaviour: {type: crossing, crosswalk: crosswalk_w, reverse: false, speed: 1.4,
                    start_delay_s: 2.0}              # or start: [x, y], end: [x, y]
                    # (on a named crosswalk the walker keeps Layout.crossing_offset to the
                    # right of its centre line)

Errors name the key path, e.g. ``scene.yaml: agents[3].class: unknown class 'tank'
(allowed: car, truck, bus, pedestrian, cyclist)`` (a :class:`KeyedConfigError` whose
``key`` is ``agents[3].class``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from mm_perception.core.checks import is_real
from mm_perception.core.errors import KeyedConfigError
from mm_perception.core.types import ObjectClass
from mm_perception.core.yaml_io import load_yaml_file
from mm_perception.sim.actors import (
    AGENT_CLASSES,
    PALETTES,
    build_actor_model,
    draw_colors,
    draw_size,
    footprints,
    make_ego_model,
    model_colors,
    overlap_matrix,
)
from mm_perception.sim.layouts import ARMS, DIRECTIONS, Layout, Path, intersection_path
from mm_perception.sim.spec import ActorModel, ActorState, Lighting, WorldSpec

F64 = npt.NDArray[np.float64]

PLATFORMS = ("vehicle", "robot")


# ---------------------------------------------------------------------------- validation


def _num(key: str, value: Any, lo: float = -math.inf, hi: float = math.inf,
         lo_open: bool = False, allow_inf: bool = False) -> float:
    if not is_real(value):
        raise KeyedConfigError(key, f"expected a number, got {value!r}")
    out = float(value)
    if math.isnan(out) or (math.isinf(out) and not allow_inf):
        raise KeyedConfigError(key, f"expected a finite number, got {value!r}")
    if out < lo or (lo_open and out == lo):
        raise KeyedConfigError(key, f"must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if out > hi:
        raise KeyedConfigError(key, f"must be <= {hi}, got {value!r}")
    return out


def _opt_num(key: str, value: Any, **kw: Any) -> float | None:
    return None if value is None else _num(key, value, **kw)


def _xy(key: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise KeyedConfigError(key, f"expected [x, y] in m, got {value!r}")
    return (_num(f"{key}[0]", value[0]), _num(f"{key}[1]", value[1]))


def _mapping(key: str, value: Any, what: str = "a mapping") -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise KeyedConfigError(key, f"expected {what}, got {value!r}")
    return value


def _check_keys(key: str, data: Mapping[str, Any], allowed: Sequence[str],
                required: Sequence[str] = ()) -> None:
    prefix = f"{key}." if key else ""
    for name in data:
        if name not in allowed:
            raise KeyedConfigError(f"{prefix}{name}", f"unknown key (allowed: "
                                   f"{', '.join(allowed)})")
    for name in required:
        if name not in data:
            raise KeyedConfigError(f"{prefix}{name}", "missing (required)")


def _rekey(prefix: str, exc: KeyedConfigError) -> KeyedConfigError:
    return KeyedConfigError(f"{prefix}.{exc.key}" if prefix else exc.key, exc.problem)


def _rng(seed: int, *tags: int) -> np.random.Generator:
    """An independent generator per (seed, purpose, index): giving one value in a file does
    not shift any other draw."""
    return np.random.default_rng(np.random.SeedSequence([seed, *tags]))


# ---------------------------------------------------------------------------- behaviours


@dataclass(frozen=True)
class LaneFollow:
    """Follow a layout path (a lane, a turning path through a junction, an aisle).

    Speed target ``speed * (1 + speed_variation * sin(2 pi t / variation_period_s + phase))``
    (m/s, t = scenario time in s); the agent keeps its distance to whatever is in its path
    corridor ahead (IDM). Optional stop: brake to a stop with the centre at ``stop_at_s`` (m
    along the path), or brake at a comfortable deceleration from ``stop_at_time_s`` (s) on;
    stand for ``stop_duration_s`` (``inf`` = for good), then go on. At the end of the path
    the agent stops.

    Attributes:
        path: path name in the layout.
        s0: start arc length, m.
        speed: mean target speed, m/s (> 0).
        speed_variation: relative amplitude of the speed variation, in [0, 0.5].
        variation_period_s: period of the variation, s.
        phase: phase of the variation, rad.
        initial_speed: speed at t = 0 (default: the target speed at t = 0), m/s.
        stop_at_s, stop_at_time_s, stop_duration_s: see above (at most one stop trigger).
    """

    path: str
    s0: float
    speed: float
    speed_variation: float = 0.0
    variation_period_s: float = 20.0
    phase: float = 0.0
    initial_speed: float | None = None
    stop_at_s: float | None = None
    stop_at_time_s: float | None = None
    stop_duration_s: float = math.inf

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise KeyedConfigError("path", f"expected a path name, got {self.path!r}")
        _num("s0", self.s0, lo=0.0)
        _num("speed", self.speed, lo=0.0, hi=60.0, lo_open=True)
        _num("speed_variation", self.speed_variation, lo=0.0, hi=0.5)
        _num("variation_period_s", self.variation_period_s, lo=1.0)
        _num("phase", self.phase)
        _opt_num("initial_speed", self.initial_speed, lo=0.0, hi=60.0)
        _opt_num("stop_at_s", self.stop_at_s, lo=0.0)
        _opt_num("stop_at_time_s", self.stop_at_time_s, lo=0.0)
        _num("stop_duration_s", self.stop_duration_s, lo=0.0, allow_inf=True)
        if self.stop_at_s is not None and self.stop_at_time_s is not None:
            raise KeyedConfigError("stop_at_time_s", "give stop_at_s or stop_at_time_s, "
                                   "not both")
        if self.stop_at_s is not None and self.stop_at_s <= self.s0:
            raise KeyedConfigError("stop_at_s", f"must be ahead of s0 = {self.s0}, got "
                                   f"{self.stop_at_s}")

    def target_speed(self, t_s: float) -> float:
        """Target speed at scenario time ``t_s``, m/s."""
        return self.speed * (1.0 + self.speed_variation * math.sin(
            2 * math.pi * t_s / self.variation_period_s + self.phase))


@dataclass(frozen=True)
class Parked:
    """Stand still at a pose (parked car, cart). ``x, y`` m, ``yaw`` rad, world frame."""

    x: float
    y: float
    yaw: float

    def __post_init__(self) -> None:
        _num("pose[0]", self.x)
        _num("pose[1]", self.y)
        _num("pose[2]", self.yaw)


@dataclass(frozen=True)
class Crossing:
    """Walk (or ride) along a straight line: stand at ``start`` facing ``end`` until
    ``start_delay_s``, then go at ``speed`` (keeping clear of whatever is in the way) and stay
    at ``end``. ``start``/``end`` world ``(x, y)`` m, ``speed`` m/s, delay s."""

    start: tuple[float, float]
    end: tuple[float, float]
    speed: float
    start_delay_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _xy("start", self.start))
        object.__setattr__(self, "end", _xy("end", self.end))
        _num("speed", self.speed, lo=0.0, hi=15.0, lo_open=True)
        _num("start_delay_s", self.start_delay_s, lo=0.0)
        if math.dist(self.start, self.end) < 0.5:
            raise KeyedConfigError("end", f"must be at least 0.5 m from start {self.start}, "
                                   f"got {self.end}")

    def path(self, name: str = "crossing") -> Path:
        """The straight path from start to end."""
        return Path.line(name, self.start, self.end)


Behaviour = LaneFollow | Parked | Crossing
BEHAVIOUR_TYPES = ("lane_follow", "turn", "parked", "crossing")

#: default crossing speeds per class, m/s
_CROSSING_SPEED = {ObjectClass.PEDESTRIAN: 1.4, ObjectClass.CYCLIST: 4.0}


# ---------------------------------------------------------------------------- agents, ego


@dataclass(frozen=True)
class AgentSpec:
    """One agent: persistent id (>= 1), class, body and behaviour."""

    actor_id: int
    object_class: ObjectClass
    model: ActorModel
    behaviour: Behaviour

    def __post_init__(self) -> None:
        if isinstance(self.actor_id, bool) or not isinstance(self.actor_id, int | np.integer) \
                or self.actor_id < 1:
            raise KeyedConfigError("id", f"agent ids must be integers >= 1, got "
                                   f"{self.actor_id!r}")
        object.__setattr__(self, "object_class", ObjectClass(self.object_class))
        if self.model.object_class != self.object_class:
            raise KeyedConfigError("class", f"model class {self.model.object_class.value!r} "
                                   f"differs from {self.object_class.value!r}")
        if not isinstance(self.behaviour, LaneFollow | Parked | Crossing):
            raise KeyedConfigError("behaviour", f"unknown behaviour {self.behaviour!r}")

    def behaviour_path(self, layout: Layout) -> Path | None:
        """The path the agent moves along (None when parked)."""
        if isinstance(self.behaviour, LaneFollow):
            return layout.path(self.behaviour.path)
        if isinstance(self.behaviour, Crossing):
            return self.behaviour.path(f"agent_{self.actor_id}")
        return None

    def initial_state(self, layout: Layout) -> ActorState:
        """The agent's state at t = 0 (z = surface height under it)."""
        b = self.behaviour
        if isinstance(b, LaneFollow):
            path = layout.path(b.path)
            x, y, yaw = path.point_at(b.s0)
            v = b.target_speed(0.0) if b.initial_speed is None else b.initial_speed
            yaw_rate = path.curvature_at(b.s0) * v
        elif isinstance(b, Crossing):
            (x, y), (x1, y1) = b.start, b.end
            yaw = math.atan2(y1 - y, x1 - x)
            v = b.speed if b.start_delay_s == 0 else 0.0
            yaw_rate = 0.0
        else:
            x, y, yaw, v, yaw_rate = b.x, b.y, b.yaw, 0.0, 0.0
        z = float(layout.ground_height(np.array([[x, y]]))[0])
        return ActorState(self.actor_id, x, y, math.remainder(yaw, 2 * math.pi), v, yaw_rate, z)


#: per-platform defaults of the ego's dynamic limits
EGO_DEFAULTS: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "vehicle": MappingProxyType({"wheelbase": 2.8, "max_steer": 0.6, "max_accel": 3.0,
                                 "max_decel": 8.0, "max_speed": 40.0, "max_yaw_rate": 1.0}),
    "robot": MappingProxyType({"wheelbase": 0.45, "max_steer": 0.6, "max_accel": 1.0,
                               "max_decel": 2.5, "max_speed": 2.0, "max_yaw_rate": 1.5}),
})


@dataclass(frozen=True)
class EgoSpec:
    """The ego (actor id 0): body, the path its autopilot follows, and its dynamic limits.

    Attributes:
        platform: ``vehicle`` (kinematic bicycle) or ``robot`` (unicycle).
        model: body (see :func:`~mm_perception.sim.actors.make_ego_model`); its frame is
            ``base_link``.
        path: layout path the autopilot follows.
        s0: start arc length on the path, m.
        cruise_speed: mean autopilot speed, m/s.
        speed_variation, variation_period_s, phase: autopilot speed variation (as for
            :class:`LaneFollow`).
        initial_speed: speed at t = 0 (default: the cruise target at t = 0), m/s.
        wheelbase: bicycle wheelbase, m (vehicle).
        max_steer: steering limit, rad (vehicle).
        max_accel, max_decel: longitudinal limits, m/s^2 (> 0).
        max_speed: m/s.
        max_yaw_rate: rad/s (robot).
    """

    platform: str
    model: ActorModel
    path: str
    s0: float
    cruise_speed: float
    speed_variation: float = 0.0
    variation_period_s: float = 30.0
    phase: float = 0.0
    initial_speed: float | None = None
    wheelbase: float = 2.8
    max_steer: float = 0.6
    max_accel: float = 3.0
    max_decel: float = 8.0
    max_speed: float = 40.0
    max_yaw_rate: float = 1.0

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise KeyedConfigError("platform", f"unknown platform {self.platform!r} "
                                   f"(allowed: {', '.join(PLATFORMS)})")
        if not isinstance(self.path, str) or not self.path:
            raise KeyedConfigError("path", f"expected a path name, got {self.path!r}")
        _num("s0", self.s0, lo=0.0)
        _num("max_speed", self.max_speed, lo=0.0, hi=70.0, lo_open=True)
        _num("cruise_speed", self.cruise_speed, lo=0.0, hi=self.max_speed, lo_open=True)
        _num("speed_variation", self.speed_variation, lo=0.0, hi=0.5)
        _num("variation_period_s", self.variation_period_s, lo=1.0)
        _num("phase", self.phase)
        _opt_num("initial_speed", self.initial_speed, lo=0.0, hi=self.max_speed)
        _num("wheelbase", self.wheelbase, lo=0.0, hi=10.0, lo_open=True)
        _num("max_steer", self.max_steer, lo=0.0, hi=1.2, lo_open=True)
        _num("max_accel", self.max_accel, lo=0.0, hi=15.0, lo_open=True)
        _num("max_decel", self.max_decel, lo=0.0, hi=15.0, lo_open=True)
        _num("max_yaw_rate", self.max_yaw_rate, lo=0.0, hi=10.0, lo_open=True)

    @classmethod
    def default(cls, platform: str, path: str, s0: float, cruise_speed: float,
                **overrides: Any) -> EgoSpec:
        """An ego with the platform's body and default limits (:data:`EGO_DEFAULTS`)."""
        if platform not in PLATFORMS:
            raise KeyedConfigError("platform", f"unknown platform {platform!r} "
                                   f"(allowed: {', '.join(PLATFORMS)})")
        params = {**EGO_DEFAULTS[platform], **overrides}
        return cls(platform, make_ego_model(platform), path, s0, cruise_speed, **params)

    def target_speed(self, t_s: float) -> float:
        """Autopilot target speed at scenario time ``t_s``, m/s."""
        return self.cruise_speed * (1.0 + self.speed_variation * math.sin(
            2 * math.pi * t_s / self.variation_period_s + self.phase))


# ---------------------------------------------------------------------------- lighting


def _fixed_unit(v: Any) -> F64:
    """``v`` normalised to a fixed point of normalisation (so that re-normalising it, as
    :class:`Lighting` does, leaves the bits unchanged and YAML round trips are exact)."""
    d = np.asarray(v, dtype=np.float64)
    for _ in range(8):
        nxt = d / np.linalg.norm(d)
        if np.array_equal(nxt, d):
            break
        d = nxt
    return d


def _lighting(sun: Sequence[float], diffuse: float, ambient: float,
              sky: Sequence[float]) -> Lighting:
    return Lighting(_fixed_unit(sun), float(diffuse), float(ambient),
                    (float(sky[0]), float(sky[1]), float(sky[2])))


#: named lighting presets
LIGHTING_PRESETS: Mapping[str, Lighting] = MappingProxyType({
    "noon": _lighting((0.2, 0.1, -1.0), 0.75, 0.35, (0.55, 0.72, 0.92)),
    "morning": _lighting((0.8, 0.3, -0.45), 0.6, 0.3, (0.72, 0.75, 0.85)),
    "evening": _lighting((-0.85, -0.2, -0.3), 0.5, 0.25, (0.85, 0.62, 0.45)),
    "overcast": _lighting((0.1, 0.1, -1.0), 0.3, 0.55, (0.68, 0.70, 0.72)),
})


def random_lighting(rng: np.random.Generator) -> Lighting:
    """Random daylight: sun elevation 15-75 deg at any azimuth, diffuse 0.3-0.85, ambient
    0.2-0.5, sky between clear blue and overcast grey (warmer when the sun is low)."""
    elevation = rng.uniform(math.radians(15), math.radians(75))
    azimuth = rng.uniform(0.0, 2 * math.pi)
    diffuse = rng.uniform(0.3, 0.85)
    ambient = rng.uniform(0.2, 0.5)
    cloud = rng.uniform(0.0, 1.0)
    sun = (-math.cos(elevation) * math.cos(azimuth), -math.cos(elevation) * math.sin(azimuth),
           -math.sin(elevation))
    clear = np.array([0.50, 0.70, 0.95])
    grey = np.array([0.70, 0.72, 0.75])
    warm = np.array([0.90, 0.65, 0.45])
    low = max(0.0, 1.0 - elevation / math.radians(35))
    sky = (1 - cloud) * clear + cloud * grey
    sky = (1 - 0.5 * low) * sky + 0.5 * low * warm
    return _lighting(sun, diffuse, ambient, np.clip(sky, 0, 1).tolist())


def lighting_to_dict(lighting: Lighting) -> dict[str, Any]:
    """Plain-Python form of a :class:`Lighting` (as read by :meth:`Scenario.from_dict`)."""
    return {"sun_direction": [float(v) for v in lighting.sun_direction],
            "diffuse": float(lighting.diffuse), "ambient": float(lighting.ambient),
            "sky_rgb": [float(v) for v in lighting.sky_rgb]}


def _parse_lighting(value: Any, seed: int) -> Lighting:
    rng = _rng(seed, 0)
    if value is None:
        return LIGHTING_PRESETS["noon"]
    if value == "random":
        return random_lighting(rng)
    if isinstance(value, str):
        if value not in LIGHTING_PRESETS:
            raise KeyedConfigError("lighting", f"unknown lighting {value!r} (allowed: random, "
                                   f"{', '.join(LIGHTING_PRESETS)}, or a mapping)")
        return LIGHTING_PRESETS[value]
    data = _mapping("lighting", value, "random, a preset name or a mapping")
    _check_keys("lighting", data, ("sun_direction", "diffuse", "ambient", "sky_rgb"),
                ("sun_direction",))
    sun = data["sun_direction"]
    if not isinstance(sun, list | tuple) or len(sun) != 3:
        raise KeyedConfigError("lighting.sun_direction", f"expected [x, y, z], got {sun!r}")
    sun_v = [_num(f"lighting.sun_direction[{i}]", v) for i, v in enumerate(sun)]
    if sun_v[2] >= 0:
        raise KeyedConfigError("lighting.sun_direction", f"must point down (z < 0), got {sun!r}")
    diffuse = _num("lighting.diffuse", data.get("diffuse", 0.7), lo=0.0, hi=1.0)
    ambient = _num("lighting.ambient", data.get("ambient", 0.35), lo=0.0, hi=1.0)
    sky = data.get("sky_rgb", [0.55, 0.72, 0.92])
    if not isinstance(sky, list | tuple) or len(sky) != 3:
        raise KeyedConfigError("lighting.sky_rgb", f"expected [r, g, b], got {sky!r}")
    sky_v = [_num(f"lighting.sky_rgb[{i}]", v, lo=0.0, hi=1.0) for i, v in enumerate(sky)]
    return _lighting(sun_v, diffuse, ambient, sky_v)


# ---------------------------------------------------------------------------- scenario


@dataclass(frozen=True, eq=False)
class Scenario:
    """A complete scene description (see the module docstring).

    Two scenarios are equal when their :meth:`to_dict` forms are equal (that form holds every
    drawn value: sizes, colours, phases, lighting).

    Attributes:
        name: scenario name.
        seed: the seed everything random was drawn from.
        layout: road / floor layout.
        ego: the ego.
        agents: the agents, ids 1..N in order.
        lighting: scene lighting.
        duration_s: suggested recording length, s.
        description: free text.
    """

    name: str
    seed: int
    layout: Layout
    ego: EgoSpec
    agents: tuple[AgentSpec, ...]
    lighting: Lighting = field(default_factory=lambda: LIGHTING_PRESETS["noon"])
    duration_s: float = 20.0
    description: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) \
                or self.seed < 0:
            raise KeyedConfigError("seed", f"expected an integer >= 0, got {self.seed!r}")
        if not isinstance(self.name, str) or not self.name:
            raise KeyedConfigError("name", f"expected a non-empty string, got {self.name!r}")
        _num("duration_s", self.duration_s, lo=0.0, lo_open=True)
        object.__setattr__(self, "agents", tuple(self.agents))
        ids = [a.actor_id for a in self.agents]
        for i, aid in enumerate(ids):
            if ids.index(aid) != i:
                raise KeyedConfigError(f"agents[{i}]", f"duplicate actor id {aid}")
        ego_path = self.layout.path(self.ego.path, "ego.path")
        if self.ego.s0 > ego_path.length:
            raise KeyedConfigError("ego.s0", f"beyond the end of path {self.ego.path!r} "
                                   f"({ego_path.length:.1f} m), got {self.ego.s0}")
        for i, agent in enumerate(self.agents):
            b = agent.behaviour
            if isinstance(b, LaneFollow):
                path = self.layout.path(b.path, f"agents[{i}].behaviour.path")
                if b.s0 > path.length:
                    raise KeyedConfigError(f"agents[{i}].behaviour.s0", f"beyond the end of "
                                           f"path {b.path!r} ({path.length:.1f} m), got {b.s0}")
                if b.stop_at_s is not None and b.stop_at_s > path.length:
                    raise KeyedConfigError(f"agents[{i}].behaviour.stop_at_s", f"beyond the "
                                           f"end of path {b.path!r} ({path.length:.1f} m), "
                                           f"got {b.stop_at_s}")
        states = self.initial_states()
        pose = np.array([[s.x, s.y, s.yaw] for s in states])
        half = np.array([self.ego.model.size[:2] / 2] + [a.model.size[:2] / 2
                                                          for a in self.agents])
        corners = footprints(pose, half)
        # the ego and lane-following vehicles start with their whole footprint on the road
        on_road = np.asarray(self.layout.is_drivable(corners.reshape(-1, 2))).reshape(-1, 4)
        on_road = np.all(on_road, axis=1)
        if not on_road[0]:
            raise KeyedConfigError("ego.s0", f"the ego would start off the drivable area (at "
                                   f"x={pose[0, 0]:.2f}, y={pose[0, 1]:.2f}); move it along "
                                   f"its path")
        for i, agent in enumerate(self.agents):
            if isinstance(agent.behaviour, LaneFollow) and not on_road[i + 1] and \
                    agent.object_class in (ObjectClass.CAR, ObjectClass.TRUCK, ObjectClass.BUS):
                raise KeyedConfigError(f"agents[{i}].behaviour.s0",
                                       f"the {agent.object_class.value} would start off the "
                                       f"drivable area (at x="
                                       f"{pose[i + 1, 0]:.2f}, y={pose[i + 1, 1]:.2f}); move it "
                                       f"along its path")
        hits = overlap_matrix(corners)
        if hits.any():
            i, j = (int(k) for k in np.argwhere(np.triu(hits, 1))[0])
            what = "the ego" if i == 0 else f"agents[{i - 1}]"
            raise KeyedConfigError(f"agents[{j - 1}]", f"overlaps {what} at the start "
                                   f"(footprints intersect at x={pose[j, 0]:.2f}, "
                                   f"y={pose[j, 1]:.2f}); move it")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scenario) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    # -- outputs

    def world_spec(self) -> WorldSpec:
        """What the MuJoCo side builds: static boxes, agent models by id, the ego body."""
        return WorldSpec(static=self.layout.static_boxes(),
                         actors={a.actor_id: a.model for a in self.agents},
                         ego=self.ego.model, lighting=self.lighting,
                         ground_material=self.layout.ground_material,
                         half_extent_m=self.layout.half_extent)

    def models(self) -> dict[int, ActorModel]:
        """Actor id -> model for the ego (0) and every agent."""
        return {0: self.ego.model, **{a.actor_id: a.model for a in self.agents}}

    def initial_states(self) -> list[ActorState]:
        """States at t = 0: the ego (id 0) first, then the agents in order."""
        path = self.layout.path(self.ego.path, "ego.path")
        x, y, yaw = path.point_at(self.ego.s0)
        v = self.ego.target_speed(0.0) if self.ego.initial_speed is None \
            else self.ego.initial_speed
        z = float(self.layout.ground_height(np.array([[x, y]]))[0])
        ego = ActorState(0, x, y, math.remainder(yaw, 2 * math.pi), v,
                         path.curvature_at(self.ego.s0) * v, z)
        return [ego] + [a.initial_state(self.layout) for a in self.agents]

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python description that :meth:`from_dict` turns back into an equal scenario
        (sizes, colours, phases and lighting written out)."""
        e = self.ego
        ego: dict[str, Any] = {
            "platform": e.platform, "path": e.path, "s0": float(e.s0),
            "cruise_speed": float(e.cruise_speed), "speed_variation": float(e.speed_variation),
            "variation_period_s": float(e.variation_period_s), "phase": float(e.phase),
            "wheelbase": float(e.wheelbase), "max_steer": float(e.max_steer),
            "max_accel": float(e.max_accel), "max_decel": float(e.max_decel),
            "max_speed": float(e.max_speed), "max_yaw_rate": float(e.max_yaw_rate)}
        if e.initial_speed is not None:
            ego["initial_speed"] = float(e.initial_speed)
        agents = []
        for a in self.agents:
            agents.append({
                "class": a.object_class.value,
                "size": [float(v) for v in a.model.size],
                "colors": {k: [float(c) for c in v] for k, v in model_colors(a.model).items()},
                "behaviour": _behaviour_to_dict(a.behaviour)})
        return {"name": self.name, "seed": int(self.seed), "duration_s": float(self.duration_s),
                "description": self.description, "layout": self.layout.to_dict(),
                "lighting": lighting_to_dict(self.lighting), "ego": ego, "agents": agents}

    def to_yaml(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as YAML."""
        with open(path, "w", encoding="utf-8") as stream:
            yaml.safe_dump(self.to_dict(), stream, sort_keys=False)

    # -- inputs

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], seed: int | None = None) -> Scenario:
        """Load a scenario file (format in the module docstring).

        Args:
            path: YAML file.
            seed: overrides the file's ``seed`` (default: the file's, else 0).

        Raises:
            ConfigError: unreadable file or invalid YAML (message starts with the path);
                :class:`KeyedConfigError` for any invalid value (message ``path: key: ...``).
        """
        source = os.fspath(path)
        data = load_yaml_file(source, "scenario")
        if isinstance(data, Mapping) and "name" not in data:
            data = {"name": os.path.splitext(os.path.basename(source))[0], **data}
        return cls.from_dict(data, source=source, seed=seed)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", seed: int | None = None) -> Scenario:
        """Validate a scenario mapping (parsed YAML) and build the scenario.

        Raises:
            KeyedConfigError: the message is ``source: key.path: problem`` and ``.key`` the key
                path (``agents[3].class``).
        """
        try:
            return _parse_scenario(data, seed)
        except KeyedConfigError as exc:
            err = KeyedConfigError(exc.key, exc.problem)
            err.args = (f"{source}: {exc.key}: {exc.problem}",)
            raise err from None




def _behaviour_to_dict(b: Behaviour) -> dict[str, Any]:
    if isinstance(b, LaneFollow):
        out: dict[str, Any] = {"type": "lane_follow", "path": b.path, "s0": float(b.s0),
                               "speed": float(b.speed),
                               "speed_variation": float(b.speed_variation),
                               "variation_period_s": float(b.variation_period_s),
                               "phase": float(b.phase)}
        for key in ("initial_speed", "stop_at_s", "stop_at_time_s"):
            value = getattr(b, key)
            if value is not None:
                out[key] = float(value)
        if b.stop_at_s is not None or b.stop_at_time_s is not None:
            out["stop_duration_s"] = float(b.stop_duration_s)
        return out
    if isinstance(b, Parked):
        return {"type": "parked", "pose": [float(b.x), float(b.y), float(b.yaw)]}
    return {"type": "crossing", "start": list(b.start), "end": list(b.end),
            "speed": float(b.speed), "start_delay_s": float(b.start_delay_s)}


_FOLLOW_KEYS = ("s0", "speed", "speed_variation", "variation_period_s", "phase",
                "initial_speed", "stop_at_s", "stop_at_time_s", "stop_duration_s")


def _parse_follow(key: str, data: Mapping[str, Any], path: str, rng: np.random.Generator
                  ) -> LaneFollow:
    phase = rng.uniform(0.0, 2 * math.pi)  # drawn always: other draws never shift
    if "speed" not in data:
        raise KeyedConfigError(f"{key}.speed", "missing (required)")
    kwargs: dict[str, Any] = {"s0": data.get("s0", 0.0), "speed": data["speed"],
                              "phase": data.get("phase", phase)}
    for name in ("speed_variation", "variation_period_s", "initial_speed", "stop_at_s",
                 "stop_at_time_s", "stop_duration_s"):
        if name in data:
            kwargs[name] = data[name]
    try:
        return LaneFollow(path, **kwargs)
    except KeyedConfigError as exc:
        raise _rekey(key, exc) from None


def _parse_behaviour(key: str, value: Any, cls: ObjectClass, layout: Layout,
                     rng: np.random.Generator) -> Behaviour:
    data = _mapping(key, value, "a mapping with a 'type'")
    kind = data.get("type")
    if kind not in BEHAVIOUR_TYPES:
        raise KeyedConfigError(f"{key}.type", f"unknown behaviour {kind!r} (allowed: "
                               f"{', '.join(BEHAVIOUR_TYPES)})")
    vehicle = cls in (ObjectClass.CAR, ObjectClass.TRUCK, ObjectClass.BUS)
    if kind == "lane_follow":
        _check_keys(key, data, ("type", "path", *_FOLLOW_KEYS), ("path",))
        path = data["path"]
        layout.path(path, f"{key}.path")
        return _parse_follow(key, data, path, rng)
    if kind == "turn":
        _check_keys(key, data, ("type", "approach", "direction", "lane", *_FOLLOW_KEYS),
                    ("approach", "direction"))
        if layout.kind != "intersection":
            raise KeyedConfigError(f"{key}.type", f"'turn' needs an intersection layout, not "
                                   f"{layout.kind!r}")
        if data["approach"] not in ARMS:
            raise KeyedConfigError(f"{key}.approach", f"unknown approach {data['approach']!r} "
                                   f"(allowed: {', '.join(ARMS)})")
        if data["direction"] not in DIRECTIONS:
            raise KeyedConfigError(f"{key}.direction", f"unknown direction "
                                   f"{data['direction']!r} (allowed: {', '.join(DIRECTIONS)})")
        lane = data.get("lane", 0)
        n = int(layout.params["lanes_per_direction"])
        if isinstance(lane, bool) or not isinstance(lane, int) or not 0 <= lane < n:
            raise KeyedConfigError(f"{key}.lane", f"expected a lane index in 0..{n - 1}, got "
                                   f"{lane!r}")
        if "lane" in data and data["direction"] != "straight":
            raise KeyedConfigError(f"{key}.lane", "only straight movements choose a lane "
                                   "(left turns use the inner lane, right turns the outer)")
        path = intersection_path(data["approach"], data["direction"], lane)
        return _parse_follow(key, data, path, rng)
    if kind == "parked":
        _check_keys(key, data, ("type", "pose", "spot", "path", "s"))
        given = [k for k in ("pose", "spot", "path") if k in data]
        if len(given) != 1:
            raise KeyedConfigError(key, f"a parked agent needs exactly one of pose, spot or "
                                   f"path (+ s), got {given or 'none'}")
        try:
            if "pose" in data:
                pose = data["pose"]
                if not isinstance(pose, list | tuple) or len(pose) != 3:
                    raise KeyedConfigError("pose", f"expected [x, y, yaw_rad], got {pose!r}")
                return Parked(*pose)
            if "spot" in data:
                spot = data["spot"]
                if isinstance(spot, bool) or not isinstance(spot, int) \
                        or not 0 <= spot < len(layout.spots):
                    raise KeyedConfigError("spot", f"expected a spot index in 0.."
                                           f"{len(layout.spots) - 1} of this layout, got "
                                           f"{spot!r}" if layout.spots else
                                           f"this {layout.kind} layout has no parking spots")
                return Parked(*layout.spots[spot])
            path_obj = layout.path(data["path"], "path")
            s = _num("s", data.get("s", 0.0), lo=0.0, hi=path_obj.length)
            return Parked(*path_obj.point_at(s))
        except KeyedConfigError as exc:
            raise _rekey(key, exc) from None
    # crossing
    _check_keys(key, data, ("type", "start", "end", "crosswalk", "reverse", "speed",
                            "start_delay_s"))
    if vehicle:
        raise KeyedConfigError(f"{key}.type", f"'crossing' is for pedestrians and cyclists, "
                               f"not a {cls.value}")
    if "crosswalk" in data:
        if "start" in data or "end" in data:
            raise KeyedConfigError(f"{key}.crosswalk", "give a crosswalk or start/end, not both")
        name = data["crosswalk"]
        if name not in layout.crossings:
            raise KeyedConfigError(f"{key}.crosswalk", f"unknown crossing {name!r} in a "
                                   f"{layout.kind} layout (available: "
                                   f"{', '.join(layout.crossings) or 'none'})")
        start, end = layout.crossings[name]
        reverse = data.get("reverse", False)
        if not isinstance(reverse, bool):
            raise KeyedConfigError(f"{key}.reverse", f"expected true/false, got {reverse!r}")
        if reverse:
            start, end = end, start
        # keep right: people crossing in opposite directions pass each other
        (x0, y0), (x1, y1) = start, end
        length = math.hypot(x1 - x0, y1 - y0)
        keep = layout.crossing_offset
        rx, ry = (y1 - y0) / length * keep, -(x1 - x0) / length * keep
        start, end = (x0 + rx, y0 + ry), (x1 + rx, y1 + ry)
    else:
        for name in ("start", "end"):
            if name not in data:
                raise KeyedConfigError(f"{key}.{name}", "missing (give start and end, or a "
                                       "crosswalk)")
        start, end = _xy(f"{key}.start", data["start"]), _xy(f"{key}.end", data["end"])
    try:
        return Crossing(start, end, data.get("speed", _CROSSING_SPEED[cls]),
                        data.get("start_delay_s", 0.0))
    except KeyedConfigError as exc:
        raise _rekey(key, exc) from None


_TOP_KEYS = ("name", "seed", "duration_s", "description", "layout", "lighting", "ego", "agents")
_EGO_KEYS = ("platform", "path", "s0", "cruise_speed", "speed_variation", "variation_period_s",
             "phase", "initial_speed", "wheelbase", "max_steer", "max_accel", "max_decel",
             "max_speed", "max_yaw_rate")
_AGENT_KEYS = ("class", "size", "colors", "behaviour")


def _parse_scenario(data: Any, seed_arg: int | None) -> Scenario:
    top = _mapping("<top level>", data, "a mapping with layout, ego and agents")
    _check_keys("", top, _TOP_KEYS, ("layout", "ego"))
    seed = top.get("seed", 0) if seed_arg is None else seed_arg
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise KeyedConfigError("seed", f"expected an integer >= 0, got {seed!r}")
    seed = int(seed)
    name = top.get("name", "scenario")
    if not isinstance(name, str) or not name:
        raise KeyedConfigError("name", f"expected a non-empty string, got {name!r}")
    description = top.get("description", "")
    if not isinstance(description, str):
        raise KeyedConfigError("description", f"expected a string, got {description!r}")
    duration = _num("duration_s", top.get("duration_s", 20.0), lo=0.0, lo_open=True)
    layout = Layout.from_dict(top["layout"], "layout")
    lighting = _parse_lighting(top.get("lighting"), seed)

    ego_data = _mapping("ego", top["ego"])
    _check_keys("ego", ego_data, _EGO_KEYS, ("platform", "path", "cruise_speed"))
    platform = ego_data["platform"]
    if platform not in PLATFORMS:
        raise KeyedConfigError("ego.platform", f"unknown platform {platform!r} (allowed: "
                               f"{', '.join(PLATFORMS)})")
    layout.path(ego_data["path"], "ego.path")
    ego_phase = _rng(seed, 1).uniform(0.0, 2 * math.pi)
    overrides = {k: v for k, v in ego_data.items()
                 if k not in ("platform", "path", "s0", "cruise_speed")}
    overrides.setdefault("phase", ego_phase)
    try:
        ego = EgoSpec.default(platform, ego_data["path"], ego_data.get("s0", 0.0),
                              ego_data["cruise_speed"], **overrides)
    except KeyedConfigError as exc:
        raise _rekey("ego", exc) from None

    raw_agents = top.get("agents") or []
    if not isinstance(raw_agents, list):
        raise KeyedConfigError("agents", f"expected a list of agents, got {raw_agents!r}")
    agents = []
    for i, raw in enumerate(raw_agents):
        key = f"agents[{i}]"
        item = _mapping(key, raw)
        _check_keys(key, item, _AGENT_KEYS, ("class", "behaviour"))
        cls_name = item["class"]
        allowed = [c.value for c in AGENT_CLASSES]
        if cls_name not in allowed:
            raise KeyedConfigError(f"{key}.class", f"unknown class {cls_name!r} (allowed: "
                                   f"{', '.join(allowed)})")
        cls = ObjectClass(cls_name)
        size_rng, color_rng, behaviour_rng = (_rng(seed, 2, i, k) for k in range(3))
        size = item.get("size")
        drawn_size = draw_size(cls, size_rng).tolist()
        drawn_colors = draw_colors(cls, color_rng)
        colors_in = item.get("colors") or {}
        colors_in = _mapping(f"{key}.colors", colors_in)
        for role in colors_in:
            if role not in PALETTES[cls]:
                raise KeyedConfigError(f"{key}.colors.{role}", f"unknown colour role for a "
                                       f"{cls.value} (allowed: {', '.join(PALETTES[cls])})")
        colors = {**drawn_colors, **colors_in}
        model = build_actor_model(cls, drawn_size if size is None else size, colors,
                                  key=key)
        behaviour = _parse_behaviour(f"{key}.behaviour", item["behaviour"], cls, layout,
                                     behaviour_rng)
        agents.append(AgentSpec(i + 1, cls, model, behaviour))
    return Scenario(name=name, seed=seed, layout=layout, ego=ego, agents=tuple(agents),
                    lighting=lighting, duration_s=duration, description=description)


__all__ = ["BEHAVIOUR_TYPES", "EGO_DEFAULTS", "LIGHTING_PRESETS", "PLATFORMS",
           "AgentSpec", "Behaviour", "Crossing", "EgoSpec", "LaneFollow", "Parked", "Scenario",
           "lighting_to_dict", "random_lighting"]
