"""From the simulator's state to what a planner sees: map lanes, ground truth, ego state.

The closed-loop evaluation and the data generation use this module: it turns a
:class:`~mm_perception.sim.simulator.SimStep` (world-frame actor states) into a
:class:`~mm_perception.planning.observation.PlannerObservation` (everything in ``base_link``
at the observation stamp). The live ``planner`` node uses :func:`load_layout` and
:func:`map_lanes` for its static map, so that a planner sees the same lanes live as in the
simulator.

Map lanes (:func:`map_lanes`) are resampled on a fixed arc-length grid so that a learned
policy always sees the same number of points per lane: from :data:`LANE_BEHIND_M` behind the
ego's projection on the lane to :data:`LANE_AHEAD_M` ahead of it, :data:`LANE_STEP_M` apart
(:data:`LANE_POINTS` points). A lane shorter than that window is extended straight along its
end headings.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError, KeyedConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import (
    Box3D,
    DetectedObject,
    EgoState,
    ObjectClass,
    Track,
    TrackStatus,
)
from mm_perception.planning.observation import (
    LANE_ROLES,
    LanePolyline,
    PlannerObservation,
    SceneObject,
    to_base,
)
from mm_perception.sim.actors import model_colors
from mm_perception.sim.layouts import Layout, Path
from mm_perception.sim.spec import ActorState

if TYPE_CHECKING:
    from mm_perception.planning.suite import Episode
    from mm_perception.sim.scenario import Scenario
    from mm_perception.sim.simulator import SimStep

F64 = npt.NDArray[np.float64]

#: lane window behind the ego's projection, m
LANE_BEHIND_M = 4.0
#: lane window ahead of the ego's projection, m
LANE_AHEAD_M = 46.0
#: spacing of the lane points, m
LANE_STEP_M = 2.0
#: points per lane: (LANE_BEHIND_M + LANE_AHEAD_M) / LANE_STEP_M + 1 = 26
LANE_POINTS = round((LANE_BEHIND_M + LANE_AHEAD_M) / LANE_STEP_M) + 1
#: a path is a lane candidate only if its heading at the ego's projection is this close to
#: the ego's heading, rad
HEADING_GATE_RAD = math.radians(45.0)
#: a path is the ego's lane only if the ego is at most this far from it, m
EGO_LANE_MAX_OFFSET_M = 3.0
#: the junction movements are shown while the ego is at most this far from the end of its
#: inbound lane, m
JUNCTION_LOOKAHEAD_M = 60.0
#: the simulator's default scenario start stamp (SimConfig.start_stamp_ns), ns
DEFAULT_START_STAMP_NS = 1_700_000_000_000_000_000


def _is_movement(name: str) -> bool:
    """Whether a path is a movement through a junction (``A_left``, ``A_right``,
    ``A_straight_i``) rather than a lane."""
    return "_straight_" in name or name.endswith(("_left", "_right"))


def _is_shoulder(name: str) -> bool:
    return name.startswith("shoulder")


def path_points(path: Path, s: F64) -> F64:
    """World ``(N, 2)`` points of ``path`` at arc lengths ``s`` (m), extended straight beyond
    both ends along the end headings (so a fixed window never runs out of lane)."""
    s = np.asarray(s, dtype=np.float64).reshape(-1)
    poses = path.poses_at(np.clip(s, 0.0, path.length))
    xy = poses[:, :2].copy()
    over = s - np.clip(s, 0.0, path.length)  # < 0 before the start, > 0 past the end
    xy[:, 0] += over * np.cos(poses[:, 2])
    xy[:, 1] += over * np.sin(poses[:, 2])
    return xy


def _wrap(a: float) -> float:
    return math.remainder(a, 2 * math.pi)


def _project(path: Path, x: float, y: float) -> tuple[float, float, float]:
    """``(s, lateral, heading)`` of the closest point of ``path`` (heading at that s)."""
    s, lat = path.closest(x, y)
    return s, lat, path.point_at(s)[2]


def _window(path: Path, s: float, ego: tuple[float, float, float], role: str) -> LanePolyline:
    grid = s + np.linspace(-LANE_BEHIND_M, LANE_AHEAD_M, LANE_POINTS)
    world = path_points(path, grid)
    x0, y0, yaw = ego
    c, sn = math.cos(yaw), math.sin(yaw)
    d = world - (x0, y0)
    base = np.stack([c * d[:, 0] + sn * d[:, 1], -sn * d[:, 0] + c * d[:, 1]], axis=1)
    return LanePolyline(role, base)


def ego_lane_name(layout: Layout, ego_xy_yaw: tuple[float, float, float],
                  route: Sequence[str] | None = None) -> str | None:
    """Name of the path the ego is in, or None.

    Candidates are paths whose heading at the ego's projection is within
    :data:`HEADING_GATE_RAD` of the ego's heading and that are at most
    :data:`EGO_LANE_MAX_OFFSET_M` away (the ego may not be past a path's end). Lanes win
    over shoulders, shoulders over junction movements (movements coincide with lanes on
    the arms); among equals a path of ``route`` wins, then the nearest.
    """
    x, y, yaw = ego_xy_yaw
    best: tuple[tuple[int, float, int, int, float], str] | None = None
    route_set = set(route or ())
    for name, path in layout.paths.items():
        s, lat, heading = _project(path, x, y)
        if abs(_wrap(heading - yaw)) > HEADING_GATE_RAD or abs(lat) > EGO_LANE_MAX_OFFSET_M:
            continue
        # the projection is clamped at the ends: a point beyond an end is not "on" the path
        hx, hy, _ = path.point_at(s)
        if math.hypot(x - hx, y - hy) > abs(lat) + 1e-6:
            continue
        tier = 2 if _is_movement(name) else 1 if _is_shoulder(name) else 0
        # coinciding paths (movements on their common approach) tie on the offset: then a
        # route path wins, else going straight (a map without a route implies no turn)
        key = (tier, round(abs(lat), 2), 0 if name in route_set else 1,
               0 if "_straight_" in name else 1, abs(lat))
        if best is None or key < best[0]:
            best = (key, name)
    return None if best is None else best[1]


def map_lanes(layout: Layout, ego_xy_yaw: tuple[float, float, float],
              route: Sequence[str] | None = None) -> tuple[LanePolyline, ...]:
    """The map input of every planner, in ``base_link``.

    Roles (see :data:`~mm_perception.planning.observation.LANE_ROLES`): ``ego`` (the ego's
    lane, :func:`ego_lane_name`), ``left`` / ``right`` (same-direction lanes one lane width
    to the left / right of it), ``shoulder`` (the same-direction shoulder next to the ego
    lane, straight roads), and while the ego is on an inbound junction lane within
    :data:`JUNCTION_LOOKAHEAD_M` of the junction, ``turn_left`` / ``straight`` /
    ``turn_right`` (the movements starting from that lane). Each lane has
    :data:`LANE_POINTS` points from -4 m to +46 m of arc length around the ego's
    projection on it, 2 m apart. Pass no ``route`` for a planner's observation: it is
    privileged.

    Args:
        layout: the scene layout.
        ego_xy_yaw: ego ``(x, y, yaw)`` in the world frame (m, m, rad).
        route: the path names the ego is meant to follow (decides between coinciding
            movement paths inside a junction); None = no preference.

    Returns:
        The lanes in :data:`LANE_ROLES` order; empty when the ego is on no path.
    """
    x, y, yaw = (float(v) for v in ego_xy_yaw)
    name = ego_lane_name(layout, (x, y, yaw), route)
    if name is None:
        return ()
    ego_path = layout.paths[name]
    s_ego, _, heading = _project(ego_path, x, y)
    lanes: dict[str, LanePolyline] = {"ego": _window(ego_path, s_ego, (x, y, yaw), "ego")}
    lane_width = float(layout.params.get("lane_width", 3.5))
    px, py, _ = ego_path.point_at(s_ego)
    for other, path in layout.paths.items():
        if other == name or _is_movement(other):
            continue
        s, lat, h = _project(path, px, py)
        if abs(_wrap(h - heading)) > HEADING_GATE_RAD:
            continue
        hx, hy, _ = path.point_at(s)
        if math.hypot(px - hx, py - hy) > abs(lat) + 1e-6:
            continue  # beside the path's end, not beside the path
        # lat is the ego lane's offset from `other`; `other` lies at -lat from the ego lane
        offset = -lat
        if _is_shoulder(other):
            # only the shoulder next to the ego lane (reachable by one lateral move)
            if "shoulder" not in lanes and offset < 0 and abs(offset) < 1.5 * lane_width:
                lanes["shoulder"] = _window(path, s, (x, y, yaw), "shoulder")
            continue
        for role, sign in (("left", 1.0), ("right", -1.0)):
            if role not in lanes and abs(sign * offset - lane_width) < 0.5 * lane_width:
                lanes[role] = _window(path, s, (x, y, yaw), role)
    if layout.kind == "intersection" and not _is_movement(name) and "_in_" in name:
        arm, lane = name.split("_in_")
        if ego_path.length - s_ego <= JUNCTION_LOOKAHEAD_M:
            for role, path_name in (("turn_left", f"{arm}_left"),
                                    ("straight", f"{arm}_straight_{lane}"),
                                    ("turn_right", f"{arm}_right")):
                movement = layout.paths.get(path_name)
                if movement is None:
                    continue
                s, lat, _ = _project(movement, x, y)
                # turns start from one lane only (left: the inner, right: the outer)
                if abs(lat) <= EGO_LANE_MAX_OFFSET_M:
                    lanes[role] = _window(movement, s, (x, y, yaw), role)
    return tuple(lanes[r] for r in LANE_ROLES if r in lanes)


def load_layout(path: str | os.PathLike[str]) -> Layout:
    """The road layout (the static map) of a YAML file: a scenario file (its ``layout:``,
    see :mod:`mm_perception.sim.scenario`), a file with only a ``layout:`` mapping, or a bare
    layout mapping (``{type: straight_road, lanes_per_direction: 2, ...}``). Layout
    coordinates are world-frame metres (the simulator's odometry frame).

    Raises:
        ConfigError: unreadable file, invalid YAML, no layout in it, or an invalid layout
            (the message starts with the path and names the key).
    """
    from mm_perception.core.yaml_io import load_yaml_file

    source = os.fspath(path)
    data = load_yaml_file(source, "map")
    if isinstance(data, Mapping) and "layout" in data:
        data, key = data["layout"], "layout"
    elif isinstance(data, Mapping) and "type" in data:
        key = "<map>"
    else:
        raise ConfigError(f"{source}: a map file is a scenario (with 'layout:') or a layout "
                          f"mapping with a 'type'; got {type(data).__name__}")
    try:
        return Layout.from_dict(data, key)
    except KeyedConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def ego_state(actor: ActorState, stamp_ns: int, frame_id: str = "map") -> EgoState:
    """An :class:`EgoState` (``T_world_base``, body velocity) from the simulator's ego."""
    pose = SE3.from_xy_yaw(actor.x, actor.y, actor.yaw, actor.z)
    return EgoState(int(stamp_ns), frame_id, "base_link", pose,
                    np.array([actor.speed, 0.0, 0.0]), np.array([0.0, 0.0, actor.yaw_rate]))


def _main_rgb(model: object) -> F64:
    """The colour that names a vehicle (body, truck cab) or a person (shirt), RGB."""
    try:
        colours = model_colors(model)  # type: ignore[arg-type]
    except ValueError:
        return np.full(3, np.nan)
    for role in ("body", "cab", "shirt", "bike"):
        if role in colours:
            return np.asarray(colours[role][:3], dtype=np.float64)
    return np.full(3, np.nan)


def ground_truth_objects(agents: Sequence[ActorState], scenario: Scenario,
                         ego: EgoState) -> tuple[SceneObject, ...]:
    """Every agent as a :class:`SceneObject` in ``base_link`` at the ego state.

    Box size from the scenario's actor model, velocity ground-relative in ``base_link``
    axes, rgb the main paint (body, truck cab, shirt), score 1.
    """
    models = scenario.models()
    rot = ego.pose.rotation
    yaw_ego = math.atan2(float(rot[1, 0]), float(rot[0, 0]))
    c, s = math.cos(yaw_ego), math.sin(yaw_ego)
    out = []
    for a in agents:
        model = models[a.actor_id]
        xy = to_base(ego, [[a.x, a.y]])[0]
        vx, vy = a.speed * math.cos(a.yaw), a.speed * math.sin(a.yaw)
        vel = np.array([c * vx + s * vy, -s * vx + c * vy])
        out.append(SceneObject(object_id=a.actor_id, label=model.object_class.value, xy=xy,
                               yaw=_wrap(a.yaw - yaw_ego), size=np.asarray(model.size),
                               velocity=vel, score=1.0, rgb=_main_rgb(model)))
    return tuple(out)


def ground_truth_tracks(agents: Sequence[ActorState], scenario: Scenario, frame_id: str,
                        stamp_ns: int) -> tuple[Track, ...]:
    """Every agent as a confirmed :class:`Track` in the world frame (what a perfect
    perception would give the safety filter): box from the actor model, centre at half its
    height, ground velocity and yaw rate, id = actor id."""
    models = scenario.models()
    out = []
    for a in agents:
        model = models[a.actor_id]
        size = np.asarray(model.size, dtype=np.float64)
        box = Box3D(np.array([a.x, a.y, a.z + size[2] / 2]), size, a.yaw, frame_id)
        vel = np.array([a.speed * math.cos(a.yaw), a.speed * math.sin(a.yaw), 0.0])
        obj = DetectedObject(box, ObjectClass(model.object_class.value), 1.0,
                             stamp_ns=int(stamp_ns), velocity=vel, yaw_rate=a.yaw_rate)
        out.append(Track(a.actor_id, obj, TrackStatus.CONFIRMED))
    return tuple(out)


def observation_from_step(step: SimStep, episode: Episode, *, instruction: str,
                          image: npt.NDArray[np.uint8] | None = None,
                          objects: Sequence[SceneObject] = (),
                          start_stamp_ns: int = DEFAULT_START_STAMP_NS,
                          instruction_stamp_ns: int | None = None,
                          frame_id: str = "map") -> PlannerObservation:
    """The planner observation at a simulator step.

    Args:
        step: the simulator step (its ``time_ns`` is relative to the scenario start).
        episode: the episode (its scenario's layout; its route is NOT used: the lanes are
            what any planner may see).
        instruction: the instruction text in force.
        image: ``(H, W, 3)`` uint8 front camera image, or None.
        objects: the stack's perception output in ``base_link`` at this step.
        start_stamp_ns: absolute stamp of the scenario start (``SimConfig.start_stamp_ns``).
        instruction_stamp_ns: when the instruction was (re)issued; None = at this stamp (an
            instruction topic that is republished every period).
        frame_id: world frame name of the ego state.

    Returns:
        The observation; ``ground_truth`` holds every agent, ``lanes`` :func:`map_lanes`.
    """
    stamp = int(start_stamp_ns) + int(step.time_ns)
    ego = ego_state(step.ego, stamp, frame_id)
    scenario = episode.scenario
    # no route: it is privileged (inside a junction it would tell a planner which way to go)
    lanes = map_lanes(scenario.layout, (step.ego.x, step.ego.y, step.ego.yaw))
    return PlannerObservation(
        stamp_ns=stamp, ego=ego, instruction=instruction,
        instruction_stamp_ns=stamp if instruction_stamp_ns is None else instruction_stamp_ns,
        image=image, objects=tuple(objects), lanes=lanes,
        ground_truth=ground_truth_objects(step.agents, scenario, ego))


__all__ = [
    "DEFAULT_START_STAMP_NS",
    "EGO_LANE_MAX_OFFSET_M",
    "HEADING_GATE_RAD",
    "JUNCTION_LOOKAHEAD_M",
    "LANE_AHEAD_M",
    "LANE_BEHIND_M",
    "LANE_POINTS",
    "LANE_STEP_M",
    "ego_lane_name",
    "ego_state",
    "ground_truth_objects",
    "ground_truth_tracks",
    "load_layout",
    "map_lanes",
    "observation_from_step",
    "path_points",
]
