"""The privileged expert: solves every task of the instruction suite with ground truth.

The expert is the demonstrator a learned policy imitates and the upper bound of the suite. It
reads what no deployed planner has: the episode's task, route and target actor
(:class:`~mm_perception.planning.suite.Episode`) and ``observation.ground_truth`` (every
simulated agent), never ``observation.objects``. It drives the last path of the episode's
route (a lane, a junction movement, the target lane of a lane change, the shoulder) with
:func:`~mm_perception.planning.lane_follow.lane_trajectory`, whose offset blend makes the
lateral transition of a lane change or a pull-over smooth, at the task's speed and with the
task's stop point.

At a zebra crossing (the episode's ``crossing``, yield_pedestrians) it gives way the way a
driver must: while a walker is on the crosswalk or waiting at its kerb and has not yet passed
the ego's side of the road in its walking direction, the ego stops before the crosswalk
(front ``crosswalk_stop_margin_m`` short of its near edge: the stop line). Reacting only to
walkers predicted to step into the lane within a few seconds brakes too late from 9 m/s
(measured: seed 1006 reached the crosswalk with a walker at the bumper, 19 emergency stops).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from mm_perception.core.checks import check_numbers
from mm_perception.core.errors import ConfigError
from mm_perception.planning.instructions import TaskKind
from mm_perception.planning.lane_follow import LaneFollowConfig, lane_trajectory
from mm_perception.planning.observation import (
    ChunkSpec,
    PlannerObservation,
    ego_pose2,
    to_base,
    to_world,
)
from mm_perception.planning.sim_bridge import path_points
from mm_perception.planning.suite import Episode, crossing_arc_length
from mm_perception.planning.trajectory import Trajectory
from mm_perception.sim.layouts import CROSSWALK_WIDTH_M, Path
from mm_perception.sim.scenario import Crossing, LaneFollow

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ExpertConfig:
    """Settings of the expert.

    Attributes:
        cruise_speed_mps: speed of every task without a speed of its own, m/s.
        stop_gap_m: stop_behind: bumper gap left to the target, m (inside the success range
            of 1-12 m).
        path_behind_m / path_ahead_m: the part of the route path handed to the path follower,
            around the ego's projection, m.
        path_step_m: its point spacing, m.
        end_margin_m: the ego's front stops this far before the end of the route path, m.
        route_clearance_m: lane-following agents whose path stays farther than this from
            every path of the route are ignored, m.
        crosswalk_half_width_m: half the width of a zebra crossing (along the road), m.
        crosswalk_zone_m: a walker this close to the crosswalk (beyond its sides and its
            kerb ends) counts as at the crossing, m.
        crosswalk_clear_m: a walker has cleared the ego's way once it is this far past the
            ego's side (half the ego's width) in its walking direction, m.
        crosswalk_stop_margin_m: the ego's front waits this far before the crosswalk's near
            edge (the stop line), m.
        lane_follow: path-following limits.
        spec: the chunk time grid.
    """

    cruise_speed_mps: float = 9.0
    stop_gap_m: float = 4.0
    path_behind_m: float = 5.0
    path_ahead_m: float = 100.0
    path_step_m: float = 1.0
    end_margin_m: float = 2.0
    route_clearance_m: float = 3.0
    crosswalk_half_width_m: float = CROSSWALK_WIDTH_M / 2
    crosswalk_zone_m: float = 1.0
    crosswalk_clear_m: float = 0.8
    crosswalk_stop_margin_m: float = 1.0
    lane_follow: LaneFollowConfig = field(default_factory=LaneFollowConfig)
    spec: ChunkSpec = field(default_factory=ChunkSpec)

    def __post_init__(self) -> None:
        check_numbers(self, ("cruise_speed_mps", "stop_gap_m", "path_behind_m",
                             "path_ahead_m", "path_step_m", "end_margin_m",
                             "route_clearance_m", "crosswalk_half_width_m",
                             "crosswalk_zone_m", "crosswalk_clear_m",
                             "crosswalk_stop_margin_m"))
        if self.cruise_speed_mps > self.lane_follow.max_speed_mps:
            raise ConfigError(f"ExpertConfig.cruise_speed_mps ({self.cruise_speed_mps}) is above "
                              f"lane_follow.max_speed_mps ({self.lane_follow.max_speed_mps})")


class ExpertPlanner:
    """The privileged expert of one episode (implements the ``Planner`` protocol).

    Args:
        episode: the episode it solves (task, route, target, layout).
        config: settings (default :class:`ExpertConfig`).
    """

    name = "expert"

    def __init__(self, episode: Episode, config: ExpertConfig | None = None) -> None:
        self.episode = episode
        self.config = config if config is not None else ExpertConfig()
        self._path = episode.scenario.layout.path(episode.route[-1], "route")
        self._ignored = _agents_off_route(episode, self.config.route_clearance_m)
        self._crosswalk = _crosswalk_on_route(episode, self._path)
        # privileged: which way each walker crosses (+1 along the crosswalk line, -1 against),
        # also while it still waits at the kerb or after it has arrived
        self._walk_dir: dict[int, float] = {}
        if self._crosswalk is not None:
            along = self._crosswalk.along
            for agent in episode.scenario.agents:
                b = agent.behaviour
                if isinstance(b, Crossing):
                    d = float((np.subtract(b.end, b.start)) @ along)
                    self._walk_dir[agent.actor_id] = 1.0 if d >= 0 else -1.0

    def reset(self) -> None:
        """Stateless: nothing to forget."""

    def plan(self, observation: PlannerObservation) -> Trajectory:
        """The chunk for ``observation`` (world frame, stamped at the observation).

        Raises:
            ValueError: the observation has no ground truth (not from the simulator).
        """
        if observation.ground_truth is None:
            raise ValueError("the expert needs observation.ground_truth (simulator only)")
        cfg = self.config
        x, y, _ = ego_pose2(observation.ego)
        s_ego, _ = self._path.closest(x, y)
        grid = s_ego + np.arange(-cfg.path_behind_m, cfg.path_ahead_m + 1e-9, cfg.path_step_m)
        path_base = to_base(observation.ego, path_points(self._path, grid))
        task = self.episode.task
        speed = cfg.cruise_speed_mps
        stop_at: float | None = None
        if task.kind is TaskKind.FOLLOW_SPEED:
            speed = float(task.speed_mps or 0.0)
        elif task.kind is TaskKind.STOP_BEHIND:
            stop_at = self._stop_behind(observation, s_ego)
        elif task.kind is TaskKind.PULL_OVER:
            assert self.episode.goal_s is not None
            stop_at = max(self.episode.goal_s - s_ego, 0.0)
        wait = self._crosswalk_stop(observation, s_ego)
        if wait is not None:
            stop_at = wait if stop_at is None else min(stop_at, wait)
        # the paved area ends with the path (a junction's exit arm): stop before its end
        end = self._path.length - s_ego - cfg.lane_follow.ego_length_m / 2 - cfg.end_margin_m
        stop_at = max(end, 0.0) if stop_at is None else max(min(stop_at, end), 0.0)
        # privileged: agents whose own path never comes near the route cannot be in the way
        # (a constant-velocity prediction of a turning car would cross half the junction)
        obstacles = [o for o in observation.ground_truth if o.object_id not in self._ignored]
        return lane_trajectory(observation, path_base, speed, stop_at_m=stop_at,
                               obstacles=obstacles, config=cfg.lane_follow,
                               spec=cfg.spec, source=self.name)

    def _stop_behind(self, obs: PlannerObservation, s_ego: float) -> float | None:
        """Arc length from the ego at which base_link stops, stop_gap_m behind the target."""
        assert obs.ground_truth is not None
        target = next((o for o in obs.ground_truth
                       if o.object_id == self.episode.target_actor_id), None)
        if target is None:
            return None  # not in the scene (cannot happen in the suite): just drive on
        tx, ty = to_world(obs.ego, target.xy[None, :])[0]
        s_target, _ = self._path.closest(float(tx), float(ty))
        ego_half = self.config.lane_follow.ego_length_m / 2
        stop = (s_target - float(target.size[0]) / 2) - self.config.stop_gap_m - ego_half
        return max(stop - s_ego, 0.0)

    def _crosswalk_stop(self, obs: PlannerObservation, s_ego: float) -> float | None:
        """Arc length from the ego at which base_link stops to give way at the zebra
        crossing, or None (no crossing, nobody to wait for, or already committed)."""
        if self._crosswalk is None:
            return None
        assert obs.ground_truth is not None
        cfg = self.config
        origin, along, across, s_cross, t_cross, length = self._crosswalk
        ego_half = cfg.lane_follow.ego_length_m / 2
        stop = s_cross - cfg.crosswalk_half_width_m - cfg.crosswalk_stop_margin_m \
            - ego_half - s_ego
        v = float(obs.ego.linear_velocity[0])
        # committed: the front is past the stop line already, or could not stop before the
        # crosswalk even braking hard (the obstacle logic keeps it clear of the walkers)
        if stop < -cfg.crosswalk_stop_margin_m or \
                v * v / (2 * cfg.lane_follow.max_decel_mps2) > stop + cfg.crosswalk_stop_margin_m:
            return None
        clear = cfg.lane_follow.ego_width_m / 2 + cfg.crosswalk_clear_m
        for obj in obs.ground_truth:
            walk = self._walk_dir.get(obj.object_id)
            if walk is None:
                continue  # only walkers crossing on a crosswalk
            p = to_world(obs.ego, obj.xy[None, :])[0]
            t = float((p - origin) @ along)
            if abs(float((p - origin) @ across)) > cfg.crosswalk_half_width_m \
                    + cfg.crosswalk_zone_m or not -cfg.crosswalk_zone_m <= t \
                    <= length + cfg.crosswalk_zone_m:
                continue  # not at this crossing
            if (t - t_cross) * walk <= clear:
                return max(stop, 0.0)  # on its way across the ego's lane, or about to be
        return None


class _Crosswalk(NamedTuple):
    """A zebra crossing on the route: ``origin`` the line's first end (world, m), ``along`` /
    ``across`` unit vectors along and across the line, ``s_cross`` the route path's arc
    length where it crosses the line (m), ``t_cross`` the line's arc length there (m),
    ``length`` the line's length (m)."""

    origin: F64
    along: F64
    across: F64
    s_cross: float
    t_cross: float
    length: float


def _crosswalk_on_route(episode: Episode, path: Path) -> _Crosswalk | None:
    """The episode's zebra crossing on ``path``; None without a crossing."""
    if episode.crossing is None:
        return None
    a, b = (np.asarray(p, dtype=np.float64) for p in episode.crossing)
    length = float(np.linalg.norm(b - a))
    along = (b - a) / length
    across = np.array([-along[1], along[0]])
    s_cross = crossing_arc_length(path, episode.crossing)
    t_cross = float((path_points(path, np.array([s_cross]))[0] - a) @ along)
    return _Crosswalk(a, along, across, s_cross, t_cross, length)


def _agents_off_route(episode: Episode, clearance_m: float) -> frozenset[int]:
    """Ids of the lane-following agents whose path never comes within ``clearance_m`` of
    any path of the episode's route (sampled every metre)."""
    layout = episode.scenario.layout
    route = np.vstack([path_points(layout.path(n), np.arange(0.0, layout.path(n).length, 1.0))
                       for n in episode.route])
    out = set()
    for agent in episode.scenario.agents:
        b = agent.behaviour
        if not isinstance(b, LaneFollow):
            continue  # parked and crossing agents are always considered
        path = layout.path(b.path)
        pts = path_points(path, np.arange(0.0, path.length, 1.0))
        d = np.hypot(route[:, None, 0] - pts[None, :, 0], route[:, None, 1] - pts[None, :, 1])
        if float(d.min()) > clearance_m:
            out.add(agent.actor_id)
    return frozenset(out)


__all__ = ["ExpertConfig", "ExpertPlanner"]
