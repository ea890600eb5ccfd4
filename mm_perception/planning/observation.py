"""What every planner sees and returns: the observation, its scene and map tokens, the chunk.

All planners of the stack (the privileged expert, the language-free rules baseline, the VLA
policy and the VLM adapter) implement :class:`Planner`: ``plan(observation) -> Trajectory``.
The observation holds the instruction, the front camera image, the stack's own perception
output as :class:`SceneObject` s and the nearby map lanes as :class:`LanePolyline` s, both in
``base_link`` at the observation stamp (a learned policy generalises across positions only in
the ego frame). The returned :class:`~mm_perception.planning.trajectory.Trajectory` is in the
ego state's world/odom frame (what the safety filter and the controller work in);
:func:`chunk_to_world` / :func:`world_to_chunk` convert between that and the ego-frame
``(H, 2)`` waypoints + ``(H,)`` speeds a learned action head predicts, on the fixed time grid
of a :class:`ChunkSpec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.core.types import EgoState
from mm_perception.planning.trajectory import Trajectory

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

#: roles a map lane can have, relative to the ego's current lane and route options; the
#: order is the fixed order of lane tokens for a learned policy
LANE_ROLES: tuple[str, ...] = ("ego", "left", "right", "shoulder", "turn_left", "straight",
                               "turn_right")


def _frozen(value: object, name: str, shape: tuple[int | None, ...]) -> F64:
    arr = np.array(value, dtype=np.float64, copy=True)
    if arr.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, arr.shape,
                                                                               strict=True)):
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class ChunkSpec:
    """The time grid of an action chunk.

    Attributes:
        steps: number of waypoints ``H``.
        dt_s: seconds between waypoints; waypoint ``i`` is due ``(i + 1) * dt_s`` after the
            observation stamp (the ego's current pose is implicit at ``t = 0``).
    """

    steps: int = 10
    dt_s: float = 0.4

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 2:
            raise ConfigError(f"ChunkSpec.steps must be an integer >= 2, got {self.steps!r}")
        if not (math.isfinite(self.dt_s) and self.dt_s > 0.0):
            raise ConfigError(f"ChunkSpec.dt_s must be > 0 s, got {self.dt_s!r}")

    @property
    def times_s(self) -> F64:
        """``(H,)`` float64 due times of the waypoints, s after the observation stamp."""
        return (np.arange(self.steps, dtype=np.float64) + 1.0) * self.dt_s

    @property
    def horizon_s(self) -> float:
        """Due time of the last waypoint, s."""
        return self.steps * self.dt_s


@dataclass(frozen=True)
class SceneObject:
    """One object of the scene as the planner sees it, in ``base_link`` at the stamp.

    Attributes:
        object_id: track id (perception) or actor id (ground truth).
        label: class name (``car``, ``truck``, ``bus``, ``van``, ``pedestrian``, ``cyclist``
            or ``unknown``).
        xy: ``(2,)`` float64 box centre, m, ``base_link`` (x forward, y left).
        yaw: heading of the box, rad, ``base_link``.
        size: ``(3,)`` float64 length, width, height, m.
        velocity: ``(2,)`` float64 ground-relative velocity expressed in ``base_link`` axes,
            m/s (an object standing still has zero velocity whatever the ego does).
        score: existence / detection confidence in ``[0, 1]``.
        rgb: ``(3,)`` float64 dominant colour in ``[0, 1]`` sampled from the camera, NaN
            where no camera sees the object.
    """

    object_id: int
    label: str
    xy: F64
    yaw: float
    size: F64
    velocity: F64
    score: float = 1.0
    rgb: F64 = field(default_factory=lambda: np.full(3, np.nan))

    def __post_init__(self) -> None:
        object.__setattr__(self, "xy", _frozen(self.xy, "xy", (2,)))
        object.__setattr__(self, "size", _frozen(self.size, "size", (3,)))
        object.__setattr__(self, "velocity", _frozen(self.velocity, "velocity", (2,)))
        object.__setattr__(self, "rgb", _frozen(self.rgb, "rgb", (3,)))
        object.__setattr__(self, "yaw", float(self.yaw))
        object.__setattr__(self, "score", float(self.score))


@dataclass(frozen=True)
class LanePolyline:
    """A map lane centreline near the ego, in ``base_link`` at the stamp.

    Attributes:
        role: one of :data:`LANE_ROLES` (``ego``: the lane the ego is in; ``left`` /
            ``right``: the neighbours with the same direction of travel; ``shoulder``; the
            ``turn_left`` / ``straight`` / ``turn_right`` movements through the next
            junction).
        points: ``(P, 2)`` float64 points along the direction of travel, m, ``base_link``.
    """

    role: str
    points: F64

    def __post_init__(self) -> None:
        if self.role not in LANE_ROLES:
            raise ValueError(f"lane role must be one of {LANE_ROLES}, got {self.role!r}")
        pts = _frozen(self.points, "points", (None, 2))
        if pts.shape[0] < 2:
            raise ValueError(f"a lane needs at least 2 points, got {pts.shape[0]}")
        object.__setattr__(self, "points", pts)


@dataclass(frozen=True)
class PlannerObservation:
    """Everything a planner may use at one planning instant.

    Attributes:
        stamp_ns: time of the observation (the ego state's stamp), ns.
        ego: current ego state (pose ``T_world_base`` in ``ego.frame_id``, body velocity).
        instruction: the natural-language instruction in force ("" = none).
        instruction_stamp_ns: when it was given, ns (None = never).
        image: ``(H, W, 3)`` uint8 RGB front camera image, or None when no camera frame.
        objects: the stack's perception output (fused tracks), ``base_link``.
        lanes: map lanes near the ego, ``base_link``.
        ground_truth: privileged: every simulated agent, ``base_link`` (only the expert may
            read it; None outside the simulator).
    """

    stamp_ns: int
    ego: EgoState
    instruction: str
    instruction_stamp_ns: int | None
    image: U8 | None
    objects: tuple[SceneObject, ...] = ()
    lanes: tuple[LanePolyline, ...] = ()
    ground_truth: tuple[SceneObject, ...] | None = None

    def lane(self, role: str) -> LanePolyline | None:
        """The lane with ``role``, or None."""
        for lane in self.lanes:
            if lane.role == role:
                return lane
        return None


@runtime_checkable
class Planner(Protocol):
    """A planner: one action chunk per observation."""

    name: str

    def reset(self) -> None:
        """Forget every internal state (a new episode starts)."""

    def plan(self, observation: PlannerObservation) -> Trajectory:
        """The action chunk for ``observation``, in ``observation.ego.frame_id``, stamped
        ``observation.stamp_ns``."""
        ...


def ego_pose2(ego: EgoState) -> tuple[float, float, float]:
    """``(x, y, yaw)`` of ``base_link`` in the ego's world frame (m, m, rad)."""
    rot = ego.pose.rotation
    t = ego.pose.translation
    return float(t[0]), float(t[1]), math.atan2(float(rot[1, 0]), float(rot[0, 0]))


def to_base(ego: EgoState, xy_world: npt.ArrayLike) -> F64:
    """World ``(N, 2)`` points -> ``base_link`` ``(N, 2)`` (planar), m."""
    x0, y0, yaw = ego_pose2(ego)
    pts = np.asarray(xy_world, dtype=np.float64).reshape(-1, 2) - (x0, y0)
    c, s = math.cos(yaw), math.sin(yaw)
    return np.stack([c * pts[:, 0] + s * pts[:, 1], -s * pts[:, 0] + c * pts[:, 1]], axis=1)


def to_world(ego: EgoState, xy_base: npt.ArrayLike) -> F64:
    """``base_link`` ``(N, 2)`` points -> world ``(N, 2)`` (planar), m."""
    x0, y0, yaw = ego_pose2(ego)
    pts = np.asarray(xy_base, dtype=np.float64).reshape(-1, 2)
    c, s = math.cos(yaw), math.sin(yaw)
    return np.stack([x0 + c * pts[:, 0] - s * pts[:, 1], y0 + s * pts[:, 0] + c * pts[:, 1]],
                    axis=1)


def _path_yaw(xy: F64, start: F64, fallback: float) -> F64:
    """Heading of each waypoint from the step that reaches it; a (near-)zero step keeps the
    previous heading (a stopped vehicle does not spin)."""
    prev = np.vstack([start[None, :], xy[:-1]])
    d = xy - prev
    yaw = np.empty(xy.shape[0])
    last = fallback
    for i, (dx, dy) in enumerate(d):
        if math.hypot(dx, dy) > 0.05:
            last = math.atan2(dy, dx)
        yaw[i] = last
    return yaw


def _arc_yaw(xy: F64, start: F64, yaw0: float, max_curvature: float) -> F64:
    """Heading at each waypoint of a path made of circular arcs that starts at ``start``
    with heading ``yaw0``: an arc's chord points along the mean of its end headings, so
    ``yaw_k = 2 * chord_k - yaw_(k-1)``. The turn of each step is clipped to
    ``max_curvature * step length``, which bounds the rounding noise of the chords of short
    (slow) steps; a (near-)zero step keeps the heading."""
    prev = np.vstack([start[None, :], xy[:-1]])
    d = xy - prev
    yaw = np.empty(xy.shape[0])
    last = yaw0
    for i, (dx, dy) in enumerate(d):
        ds = math.hypot(dx, dy)
        if ds > 1e-6:
            chord = math.atan2(dy, dx)
            turn = 2.0 * math.remainder(chord - last, 2.0 * math.pi)
            limit = max_curvature * ds
            last = last + min(max(turn, -limit), limit)
        elif not math.isfinite(ds):
            last = math.nan
        yaw[i] = last
    return yaw


def chunk_to_world(ego: EgoState, waypoints_base: npt.ArrayLike, speeds: npt.ArrayLike,
                   spec: ChunkSpec, source: str,
                   arc_max_curvature_1pm: float | None = None) -> Trajectory:
    """An ego-frame chunk as a world-frame :class:`Trajectory` stamped at the ego state.

    Args:
        ego: the ego state the chunk was predicted from.
        waypoints_base: ``(H, 2)`` positions of ``base_link`` at ``spec.times_s``, m, in
            ``base_link`` at ``ego.stamp_ns``.
        speeds: ``(H,)`` forward speeds at those times, m/s (negative values are clipped to 0:
            no reversing).
        spec: the chunk's time grid.
        source: planner name written into the trajectory.
        arc_max_curvature_1pm: None: each waypoint's heading is the direction of the step
            that reaches it (any path). A number: the waypoints are the ends of circular
            arcs of at most this curvature starting at the ego's heading (the VLA's
            kinematic head); the headings are those of the arcs, tangent to the path.

    Returns:
        ``H + 1`` samples: the current pose at ``t = 0`` then the waypoints. NaN inputs stay
        NaN (the safety filter rejects them).
    """
    wp = np.asarray(waypoints_base, dtype=np.float64).reshape(spec.steps, 2)
    sp = np.asarray(speeds, dtype=np.float64).reshape(spec.steps)
    x0, y0, yaw0 = ego_pose2(ego)
    xy = np.vstack([[x0, y0], to_world(ego, wp)])
    if arc_max_curvature_1pm is None:
        path_yaw = _path_yaw(xy[1:], xy[0], yaw0)
    else:
        path_yaw = _arc_yaw(xy[1:], xy[0], yaw0, arc_max_curvature_1pm)
    yaw = np.concatenate([[yaw0], path_yaw])
    speed0 = float(ego.linear_velocity[0])
    speed = np.concatenate([[max(speed0, 0.0)], np.where(np.isnan(sp), sp, np.maximum(sp, 0.0))])
    return Trajectory(stamp_ns=ego.stamp_ns, frame_id=ego.frame_id,
                      t_s=np.concatenate([[0.0], spec.times_s]), xy=xy, yaw=yaw, speed=speed,
                      source=source)


def world_to_chunk(ego: EgoState, trajectory: Trajectory, spec: ChunkSpec) -> tuple[F64, F64]:
    """A world-frame trajectory resampled on the chunk grid, in ``base_link`` at ``ego``.

    The imitation target of a learned policy: the expert's trajectory expressed the way the
    action head predicts it.

    Returns:
        ``(H, 2)`` float64 waypoints, m, and ``(H,)`` float64 speeds, m/s.

    Raises:
        ValueError: the trajectory is in another frame, or cannot be sampled.
    """
    if trajectory.frame_id != ego.frame_id:
        raise ValueError(f"trajectory frame {trajectory.frame_id!r} is not the ego's "
                         f"{ego.frame_id!r}")
    offset_s = (ego.stamp_ns - trajectory.stamp_ns) / 1e9
    sample = trajectory.sample(spec.times_s + offset_s)
    return to_base(ego, sample.xy), np.asarray(sample.speed, dtype=np.float64)


__all__ = [
    "LANE_ROLES",
    "ChunkSpec",
    "LanePolyline",
    "Planner",
    "PlannerObservation",
    "SceneObject",
    "chunk_to_world",
    "ego_pose2",
    "to_base",
    "to_world",
    "world_to_chunk",
]
