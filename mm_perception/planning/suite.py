"""The instruction-following scenario suite: episodes, suites and the success check.

:func:`build_episode` turns ``(kind, seed, split)`` into an :class:`Episode`: a simulator
:class:`~mm_perception.sim.scenario.Scenario` (built with :meth:`Scenario.from_dict`, like the
library), the :class:`~mm_perception.planning.instructions.Task`, its rendered instruction and
what the privileged expert and the success check need (route, goal path, target actor). The
seed varies positions, speeds, agent classes and colours, the distractors and the wording;
``split`` only chooses between TRAIN and HELD-OUT wordings (the scene is the same).

Every episode: a vehicle ego starting at about 8 m/s, at most 8 agents, 12-16 s (16 s for
yield_pedestrians: a slow walker starting late from the far kerb leaves the ego's lane only
after about 10 s, and the ego then needs about 4 s from the stop line to clear the crosswalk).

==================  ==================================================  =====================
kind                scene                                               success (at the end)
==================  ==================================================  =====================
follow_speed        2+2-lane road, ego in east_1 (free ahead), traffic  mean speed of the last
                    in the other lanes; target 5, 7, 11 or 13 m/s       3 s within 0.8 m/s,
                                                                        in lane
stop_behind         3 vehicles parked on shoulder_east 35-95 m ahead,   stopped in east_1 with
                    distinct (colour, class); the instruction names one its front 1-12 m
                                                                        behind the target's
                                                                        rear
turn_left/right,    junction (1 lane each way), ego on arm w; light     on the exit lane,
go_straight         cross traffic                                       >= 10 m past the
                                                                        junction, within 1.5 m
yield_pedestrians   junction, ego straight; pedestrians on the ego's    passed the crosswalk
                    crosswalk as it arrives
pull_over           2+2-lane road                                       stopped on the shoulder
                                                                        (1 m, 15 deg)
change_lane_left /  2+2-lane road, ego in east_1 / east_0               within 0.7 m of the
right                                                                   target lane for 2 s
==================  ==================================================  =====================

Every success also needs no collision and no off-road event (the shoulder is drivable).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from mm_perception.core.errors import ConfigError, KeyedConfigError
from mm_perception.planning.instructions import (
    COLOURS,
    TARGET_CLASSES,
    Task,
    TaskKind,
    check_kind_split,
    render_instruction,
)
from mm_perception.sim.layouts import CROSSWALK_WIDTH_M, Layout, Path
from mm_perception.sim.scenario import Scenario
from mm_perception.sim.spec import ActorState

Spec = dict[str, Any]

#: the ego's speed at t = 0, m/s
EGO_INITIAL_SPEED = 8.0
#: follow_speed targets, m/s
FOLLOW_SPEEDS = (5.0, 7.0, 11.0, 13.0)
#: follow_speed: |mean speed over the last FOLLOW_WINDOW_S - target| must be below this, m/s
FOLLOW_TOLERANCE_MPS = 0.8
FOLLOW_WINDOW_S = 3.0
#: stop_behind: the ego's front must be this far behind the target's rear, m
STOP_GAP_RANGE_M = (1.0, 12.0)
#: speed below which the ego counts as stopped, m/s
STOPPED_MPS = 0.3
#: turns: distance past the junction edge along the exit lane, and lateral tolerance, m
EXIT_MIN_S_M = 10.0
EXIT_MAX_LATERAL_M = 1.5
#: pull_over: lateral and heading tolerance on the shoulder (m, rad)
SHOULDER_MAX_LATERAL_M = 1.0
SHOULDER_MAX_HEADING_RAD = math.radians(15.0)
#: lane changes: lateral tolerance (m) held for the last LANE_HOLD_S seconds
LANE_MAX_LATERAL_M = 0.7
LANE_HOLD_S = 2.0
#: in-lane tolerance of the tasks that stay in their lane, m
IN_LANE_LATERAL_M = 1.0

_ROAD: Spec = {"type": "straight_road", "lanes_per_direction": 2, "lane_width": 3.5,
               "length": 400.0, "shoulder_width": 3.0}
#: junction arm length, m: long enough that a driver who never stops (the rules baseline
#: at its cruise speed) is still on the exit arm at the end of the episode
_ARM = 80.0
_JUNCTION: Spec = {"type": "intersection", "lanes_per_direction": 1, "lane_width": 3.5,
                   "arm_length": _ARM}
_DURATION_S: Mapping[TaskKind, float] = MappingProxyType({
    TaskKind.FOLLOW_SPEED: 12.0, TaskKind.STOP_BEHIND: 16.0, TaskKind.TURN_LEFT: 14.0,
    TaskKind.TURN_RIGHT: 14.0, TaskKind.GO_STRAIGHT: 14.0,
    TaskKind.YIELD_PEDESTRIANS: 16.0, TaskKind.PULL_OVER: 14.0,
    TaskKind.CHANGE_LANE_LEFT: 12.0, TaskKind.CHANGE_LANE_RIGHT: 12.0})
_KIND_INDEX = {k: i for i, k in enumerate(TaskKind)}
_TURN_ROUTE = {TaskKind.TURN_LEFT: ("w_left", "n_out_0"),
               TaskKind.TURN_RIGHT: ("w_right", "s_out_0"),
               TaskKind.GO_STRAIGHT: ("w_straight_0", "e_out_0")}

#: suites: name -> task kinds
SUITES: Mapping[str, tuple[TaskKind, ...]] = MappingProxyType({
    "default": tuple(TaskKind),
    "road": (TaskKind.FOLLOW_SPEED, TaskKind.STOP_BEHIND, TaskKind.PULL_OVER,
             TaskKind.CHANGE_LANE_LEFT, TaskKind.CHANGE_LANE_RIGHT),
    "junction": (TaskKind.TURN_LEFT, TaskKind.TURN_RIGHT, TaskKind.GO_STRAIGHT,
                 TaskKind.YIELD_PEDESTRIANS),
    "language": (TaskKind.FOLLOW_SPEED, TaskKind.STOP_BEHIND, TaskKind.TURN_LEFT,
                 TaskKind.TURN_RIGHT, TaskKind.PULL_OVER, TaskKind.CHANGE_LANE_LEFT,
                 TaskKind.CHANGE_LANE_RIGHT),
})


@dataclass(frozen=True, eq=False)
class Episode:
    """One closed-loop episode of the suite.

    Attributes:
        name: ``{kind}_{seed}_{split}``.
        seed: the seed it was built from.
        task: the task.
        instruction: the rendered instruction.
        split: ``train`` or ``heldout`` (which wordings).
        scenario: the simulator scenario (its ego starts on ``route[0]``).
        duration_s: episode length, s.
        target_actor_id: the agent the instruction names (stop_behind), else None.
        route: layout path names the expert drives, in order (it follows the last one; the
            first is the ego's start path).
        goal_path: the path the success is measured against (exit lane, target lane,
            shoulder, or the ego's lane).
        goal_s: pull_over: arc length on the shoulder where the expert stops, m.
        crossing: yield_pedestrians: ``((x0, y0), (x1, y1))`` the crosswalk line (world, m).
    """

    name: str
    seed: int
    task: Task
    instruction: str
    split: str
    scenario: Scenario
    duration_s: float
    target_actor_id: int | None
    route: tuple[str, ...]
    goal_path: str
    goal_s: float | None = None
    crossing: tuple[tuple[float, float], tuple[float, float]] | None = None

    @property
    def layout(self) -> Layout:
        return self.scenario.layout


# ---------------------------------------------------------------------------- building


def crossing_arc_length(path: Path,
                        crossing: tuple[tuple[float, float], tuple[float, float]]) -> float:
    """Arc length (m) of ``path`` where it crosses the crosswalk line ``crossing`` (world
    ``((x0, y0), (x1, y1))``, m): the mean of its ends' projections, exact for a straight
    path square to the line."""
    return float(path.closest_many(np.array(crossing, dtype=np.float64))[0].mean())


def _follow(path: str, s0: float, speed: float, **extra: Any) -> Spec:
    return {"class": extra.pop("cls", "car"),
            "behaviour": {"type": "lane_follow", "path": path, "s0": round(float(s0), 3),
                          "speed": round(float(speed), 3), **extra}}


def _spaced(r: np.random.Generator, count: int, lo: float, hi: float, gap: float) -> list[float]:
    """``count`` shuffled positions in ``[lo, hi]`` at least ``gap`` apart."""
    slots = int((hi - lo) // gap)
    if slots < count:
        raise ConfigError(f"cannot place {count} items {gap} m apart in [{lo}, {hi}]")
    picks = r.choice(slots, size=count, replace=False)
    return [float(lo + (p + r.uniform(0.1, 0.9)) * gap) for p in picks]


def _paint(cls: str, colour: str) -> dict[str, list[float]]:
    rgb = [float(c) for c in COLOURS[colour]]
    roles = ("cab", "cargo") if cls == "truck" else ("body",)
    return {role: rgb for role in roles}


def _road_traffic(r: np.random.Generator, ego_lane: str, ego_s: float,
                  free_lanes: tuple[str, ...] = ()) -> list[Spec]:
    """Light traffic on a 2+2 road: oncoming cars and a car in the other eastbound lane
    (never in ``ego_lane`` or ``free_lanes``)."""
    agents: list[Spec] = []
    for s in _spaced(r, int(r.integers(1, 3)), 120.0, 330.0, 30.0):
        lane = f"west_{int(r.integers(2))}"
        agents.append(_follow(lane, s, r.uniform(9.0, 13.0), cls=str(r.choice(
            ["car", "car", "truck", "bus"])), speed_variation=0.05))
    other = "east_0" if ego_lane == "east_1" else "east_1"
    if other not in free_lanes and r.uniform() < 0.8:
        agents.append(_follow(other, ego_s + r.uniform(30.0, 70.0), r.uniform(10.0, 12.5)))
    return agents


def _ego(path: str, s0: float) -> Spec:
    return {"platform": "vehicle", "path": path, "s0": round(float(s0), 3),
            "cruise_speed": EGO_INITIAL_SPEED, "initial_speed": EGO_INITIAL_SPEED}


@dataclass
class _Draft:
    layout: Spec
    ego: Spec
    agents: list[Spec]
    route: tuple[str, ...]
    goal_path: str
    task: Task
    target_index: int | None = None
    goal_s: float | None = None
    crossing: tuple[tuple[float, float], tuple[float, float]] | None = None


def _draft_road(kind: TaskKind, r: np.random.Generator) -> _Draft:
    ego_s = float(r.uniform(45.0, 60.0))
    if kind is TaskKind.FOLLOW_SPEED:
        speed = float(r.choice(FOLLOW_SPEEDS))
        return _Draft(_ROAD, _ego("east_1", ego_s), _road_traffic(r, "east_1", ego_s),
                      ("east_1",), "east_1", Task(kind, speed_mps=speed))
    if kind is TaskKind.STOP_BEHIND:
        pairs = [(c, k) for c in COLOURS for k in TARGET_CLASSES]
        chosen = [pairs[int(i)] for i in r.choice(len(pairs), size=3, replace=False)]
        # 18-25 m between centres leaves >= 5.5 m between two buses; the shuffle decides
        # which (colour, class) stands where
        first = float(r.uniform(35.0, 45.0))
        dists = [first + float(v) for v in np.cumsum([0.0, *r.uniform(18.0, 25.0, 2)])]
        dists = [dists[int(i)] for i in r.permutation(3)]
        agents = [{"class": cls, "colors": _paint(cls, colour),
                   "behaviour": {"type": "parked", "path": "shoulder_east",
                                 "s": round(ego_s + d, 3)}}
                  for (colour, cls), d in zip(chosen, dists, strict=True)]
        target = int(r.integers(3))
        colour, cls = chosen[target]
        agents += _road_traffic(r, "east_1", ego_s)
        return _Draft(_ROAD, _ego("east_1", ego_s), agents, ("east_1",), "east_1",
                      Task(kind, target_colour=colour, target_class=cls), target_index=target)
    if kind is TaskKind.PULL_OVER:
        goal = ego_s + float(r.uniform(50.0, 70.0))
        return _Draft(_ROAD, _ego("east_1", ego_s), _road_traffic(r, "east_1", ego_s),
                      ("east_1", "shoulder_east"), "shoulder_east", Task(kind),
                      goal_s=round(goal, 3))
    start, goal_lane = (("east_1", "east_0") if kind is TaskKind.CHANGE_LANE_LEFT
                        else ("east_0", "east_1"))
    agents = _road_traffic(r, start, ego_s, free_lanes=(goal_lane,))
    if r.uniform() < 0.7:  # a slower car ahead in the ego's lane: the reason to change
        agents.append(_follow(start, ego_s + r.uniform(45.0, 60.0), r.uniform(8.0, 9.0)))
    if r.uniform() < 0.7:  # traffic in the target lane, well ahead and as fast
        agents.append(_follow(goal_lane, ego_s + r.uniform(45.0, 70.0), r.uniform(10.0, 12.0)))
    return _Draft(_ROAD, _ego(start, ego_s), agents, (start, goal_lane), goal_lane, Task(kind))


def _draft_junction(kind: TaskKind, r: np.random.Generator) -> _Draft:
    if kind is TaskKind.YIELD_PEDESTRIANS:
        ego_s = _ARM - 60.0 + float(r.uniform(20.0, 26.0))  # 30-36 m to the crosswalk
        agents: list[Spec] = [
            {"class": "pedestrian", "behaviour": {
                "type": "crossing", "crosswalk": "crosswalk_w", "reverse": False,
                "speed": round(float(r.uniform(1.1, 1.5)), 3),
                "start_delay_s": round(float(r.uniform(0.5, 2.0)), 3)}},
            {"class": "pedestrian", "behaviour": {
                "type": "crossing", "crosswalk": "crosswalk_w", "reverse": True,
                "speed": round(float(r.uniform(1.1, 1.5)), 3),
                "start_delay_s": round(float(r.uniform(0.0, 1.5)), 3)}}]
        if r.uniform() < 0.5:
            agents.append({"class": "pedestrian", "behaviour": {
                "type": "crossing", "crosswalk": "crosswalk_e", "reverse": bool(r.integers(2)),
                "start_delay_s": round(float(r.uniform(3.0, 8.0)), 3)}})
        agents += _junction_traffic(r, "w_straight_0", 1)
        layout = _junction_layout()
        return _Draft(_JUNCTION, _ego("w_straight_0", ego_s), agents, ("w_straight_0",),
                      "w_straight_0", Task(kind), crossing=layout.crossings["crosswalk_w"])
    route, exit_lane = _TURN_ROUTE[kind]
    ego_s = _ARM - 60.0 + float(r.uniform(20.0, 28.0))  # 32-40 m to the junction
    agents = _junction_traffic(r, route, int(r.integers(2, 4)))
    return _Draft(_JUNCTION, _ego(route, ego_s), agents, (route,), exit_lane, Task(kind))


_JUNCTION_LAYOUT: Layout | None = None


def _junction_layout() -> Layout:
    global _JUNCTION_LAYOUT
    if _JUNCTION_LAYOUT is None:
        _JUNCTION_LAYOUT = Layout.from_dict(_JUNCTION)
    return _JUNCTION_LAYOUT


def _min_distance(layout: Layout, a: str, b: str) -> float:
    """Closest approach of two paths (sampled every metre), m."""
    pa, pb = layout.paths[a], layout.paths[b]
    xa = pa.poses_at(np.arange(0.0, pa.length, 1.0))[:, :2]
    xb = pb.poses_at(np.arange(0.0, pb.length, 1.0))[:, :2]
    d = np.hypot(xa[:, None, 0] - xb[None, :, 0], xa[:, None, 1] - xb[None, :, 1])
    return float(d.min())


def _junction_traffic(r: np.random.Generator, ego_route: str, count: int) -> list[Spec]:
    """``count`` vehicles on the other arms whose movements never come near the ego's (the
    task stays possible), plus, half of the time, one crossing the junction early (just at
    its stop line) that the ego has to let through."""
    layout = _junction_layout()
    free: list[str] = []
    conflicting: list[str] = []
    for arm in ("s", "e", "n"):
        for direction in ("left", "right", "straight"):
            name = f"{arm}_{direction}" if direction != "straight" else f"{arm}_straight_0"
            (free if _min_distance(layout, ego_route, name) > 5.0 else conflicting).append(name)
    agents = []
    picks = r.choice(len(free), size=min(count, len(free)), replace=False)
    for p in picks:
        agents.append(_follow(free[int(p)], r.uniform(8.0, _ARM - 25.0), r.uniform(6.0, 9.0),
                              cls=str(r.choice(["car", "car", "car", "truck", "bus"])),
                              speed_variation=0.05))
    early = [n for n in conflicting if n.startswith(("s_straight", "n_straight"))]
    if early and r.uniform() < 0.5:
        agents.append(_follow(str(r.choice(early)), r.uniform(_ARM - 4.0, _ARM - 2.0), 8.0))
    return agents


def _build_scenario(name: str, seed: int, draft: _Draft, duration: float) -> tuple[Scenario,
                                                                                   list[int]]:
    """The scenario; agents overlapping at the start are dropped (never the named target).

    Returns the scenario and the original indices of the agents that were kept.
    """
    agents = list(draft.agents)
    kept = list(range(len(agents)))
    for _ in range(len(agents) + 1):
        data = {"name": name, "description": f"instruction suite: {draft.task.kind.value}",
                "duration_s": duration, "layout": draft.layout, "lighting": "random",
                "ego": draft.ego, "agents": agents}
        try:
            return Scenario.from_dict(data, source=f"suite:{name}", seed=seed), kept
        except KeyedConfigError as exc:
            if not (exc.key.startswith("agents[") and "overlaps" in exc.problem):
                raise
            drop = int(exc.key[len("agents["):exc.key.index("]")])
            if draft.target_index is not None and kept[drop] == draft.target_index:
                raise
            del agents[drop]
            del kept[drop]
    raise ConfigError(f"{name}: could not place the agents")  # unreachable


def build_episode(kind: TaskKind | str, seed: int, split: str = "train") -> Episode:
    """The episode of ``kind`` for ``seed`` (see the module docstring); a pure function of
    ``(kind, seed, split)``.

    Raises:
        ConfigError: unknown kind or split, or a bad seed.
    """
    k = check_kind_split(kind, split)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    seed = int(seed)
    r = np.random.default_rng(np.random.SeedSequence([seed, 7000 + _KIND_INDEX[k]]))
    road = k in SUITES["road"]
    draft = _draft_road(k, r) if road else _draft_junction(k, r)
    name = f"{k.value}_{seed}_{split}"
    duration = _DURATION_S[k]
    # the scene does not depend on the split (only the wording does)
    scenario, kept = _build_scenario(f"{k.value}_{seed}", seed, draft, duration)
    target_id = None
    if draft.target_index is not None:
        target_id = kept.index(draft.target_index) + 1  # agent ids are 1..N in order
    # the wording has its own generator: the same scene in both splits
    words = np.random.default_rng(np.random.SeedSequence([seed, 8000 + _KIND_INDEX[k]]))
    instruction = render_instruction(draft.task, words, split)
    return Episode(name=name, seed=seed, task=draft.task, instruction=instruction, split=split,
                   scenario=scenario, duration_s=duration, target_actor_id=target_id,
                   route=draft.route, goal_path=draft.goal_path, goal_s=draft.goal_s,
                   crossing=draft.crossing)


def suite_kinds(suite: str, only: Sequence[str] | None = None) -> list[str]:
    """The task kinds (values) of ``suite``, in suite order, restricted to ``only`` when
    given.

    Raises:
        ConfigError: unknown suite, or ``only`` names kinds outside the suite.
    """
    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r} (allowed: {', '.join(SUITES)})")
    kinds = [TaskKind(k).value for k in SUITES[suite]]
    if only:
        unknown = [k for k in only if k not in kinds]
        if unknown:
            raise ConfigError(f"kinds {unknown} are not in suite {suite!r} ({kinds})")
        kinds = [k for k in kinds if k in only]
    return kinds


def suite_episodes(suite: str, seeds: range | list[int], split: str = "train"
                   ) -> list[Episode]:
    """Every episode of ``suite`` for ``seeds``, kind-major.

    Raises:
        ConfigError: unknown suite (the message lists the names).
    """
    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r} (allowed: {', '.join(SUITES)})")
    return [build_episode(k, s, split) for k in SUITES[suite] for s in seeds]


# ---------------------------------------------------------------------------- success


@dataclass(frozen=True)
class EpisodeOutcome:
    """The result of one episode.

    Attributes:
        success: the task was done without collision or off-road event.
        reason: ``ok`` or why it failed.
        collisions: ids of agents the ego touched (whole episode).
        off_road: the ego left the drivable area at some point.
        metrics: task-specific measurements (final speed, lateral error, gap...), SI units.
    """

    success: bool
    reason: str
    collisions: tuple[int, ...]
    off_road: bool
    metrics: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"success": bool(self.success), "reason": self.reason,
                "collisions": [int(c) for c in self.collisions], "off_road": bool(self.off_road),
                "metrics": {k: float(v) for k, v in self.metrics.items()}}


class SuccessMonitor:
    """Watches an episode step by step and decides its outcome.

    Call :meth:`update` with every :class:`~mm_perception.sim.simulator.SimStep` (the initial
    state from ``reset`` included or not), then :meth:`outcome`.
    """

    def __init__(self, episode: Episode) -> None:
        self.episode = episode
        self._layout = episode.scenario.layout
        self._ego_length = float(episode.scenario.ego.model.size[0])
        self._times: list[float] = []
        self._egos: list[ActorState] = []
        self._collisions: set[int] = set()
        self._off_road = False
        self._target: ActorState | None = None

    def update(self, step: Any) -> None:
        """Record one step (a ``SimStep``: ``time_ns``, ``ego``, ``agents``, ``events``)."""
        self._times.append(step.time_ns / 1e9)
        self._egos.append(step.ego)
        events = getattr(step, "events", None)
        if events is not None:
            self._collisions.update(int(c) for c in events.collisions)
            self._off_road |= bool(events.off_road)
        if self.episode.target_actor_id is not None:
            for a in step.agents:
                if a.actor_id == self.episode.target_actor_id:
                    self._target = a

    # -- helpers

    def _on(self, path_name: str, ego: ActorState) -> tuple[float, float, float]:
        """``(s, lateral, heading error)`` of the ego on a path."""
        path = self._layout.paths[path_name]
        s, lat = path.closest(ego.x, ego.y)
        return s, lat, abs(math.remainder(ego.yaw - path.point_at(s)[2], 2 * math.pi))

    def outcome(self) -> EpisodeOutcome:
        """The outcome of what was recorded so far.

        Raises:
            RuntimeError: nothing was recorded.
        """
        if not self._egos:
            raise RuntimeError("SuccessMonitor.outcome() before any update()")
        ok, reason, metrics = self._task_check()
        metrics = {"final_speed_mps": float(self._egos[-1].speed), **metrics}
        if self._collisions:
            ok, reason = False, f"collision with {sorted(self._collisions)}"
        elif self._off_road:
            ok, reason = False, "off road"
        return EpisodeOutcome(ok, "ok" if ok else reason, tuple(sorted(self._collisions)),
                              self._off_road, metrics)

    def _task_check(self) -> tuple[bool, str, dict[str, float]]:
        kind = self.episode.task.kind
        ego = self._egos[-1]
        goal = self.episode.goal_path
        if kind is TaskKind.FOLLOW_SPEED:
            t_end = self._times[-1]
            window = [e.speed for t, e in zip(self._times, self._egos, strict=True)
                      if t >= t_end - FOLLOW_WINDOW_S]
            mean = float(np.mean(window))
            target = float(self.episode.task.speed_mps or 0.0)
            _, lat, _ = self._on(goal, ego)
            m = {"mean_speed_mps": mean, "speed_error_mps": mean - target, "lateral_m": lat}
            if abs(mean - target) > FOLLOW_TOLERANCE_MPS:
                return False, f"mean speed {mean:.2f} m/s, asked {target:.2f}", m
            if abs(lat) > IN_LANE_LATERAL_M:
                return False, f"left its lane ({lat:.2f} m off)", m
            return True, "ok", m
        if kind is TaskKind.STOP_BEHIND:
            if self._target is None:
                return False, "target never seen (update() with agents)", {}
            path = self._layout.paths[goal]
            s_ego, lat, _ = self._on(goal, ego)
            s_tgt, _ = path.closest(self._target.x, self._target.y)
            t_len = float(self.episode.scenario.models()[self._target.actor_id].size[0])
            gap = (s_tgt - t_len / 2) - (s_ego + self._ego_length / 2)
            m = {"gap_m": gap, "lateral_m": lat}
            if ego.speed > STOPPED_MPS:
                return False, f"not stopped ({ego.speed:.2f} m/s)", m
            if not STOP_GAP_RANGE_M[0] <= gap <= STOP_GAP_RANGE_M[1]:
                return False, f"stopped {gap:.1f} m behind the target's rear", m
            if abs(lat) > IN_LANE_LATERAL_M:
                return False, f"not in its lane ({lat:.2f} m off)", m
            return True, "ok", m
        if kind in _TURN_ROUTE:
            s, lat, head = self._on(goal, ego)
            m = {"exit_s_m": s, "lateral_m": lat, "heading_error_rad": head}
            if s < EXIT_MIN_S_M or head > math.pi / 4:
                return False, f"not on the exit lane {goal} ({s:.1f} m along it)", m
            if abs(lat) > EXIT_MAX_LATERAL_M:
                return False, f"{lat:.2f} m off the exit lane centre", m
            return True, "ok", m
        if kind is TaskKind.YIELD_PEDESTRIANS:
            assert self.episode.crossing is not None
            path = self._layout.paths[goal]
            s_cross = crossing_arc_length(path, self.episode.crossing)
            s_ego, _, _ = self._on(goal, ego)
            past = (s_ego - self._ego_length / 2) - (s_cross + CROSSWALK_WIDTH_M / 2)
            m = {"past_crossing_m": past}
            if past < 0:
                return False, f"still {-past:.1f} m short of clearing the crossing", m
            return True, "ok", m
        if kind is TaskKind.PULL_OVER:
            _, lat, head = self._on(goal, ego)
            m = {"lateral_m": lat, "heading_error_rad": head}
            if ego.speed > STOPPED_MPS:
                return False, f"not stopped ({ego.speed:.2f} m/s)", m
            if abs(lat) > SHOULDER_MAX_LATERAL_M or head > SHOULDER_MAX_HEADING_RAD:
                return False, f"not on the shoulder ({lat:.2f} m, {math.degrees(head):.0f} deg)", m
            return True, "ok", m
        # lane changes
        t_end = self._times[-1]
        lats = [self._on(goal, e)[1] for t, e in zip(self._times, self._egos, strict=True)
                if t >= t_end - LANE_HOLD_S]
        worst = float(np.max(np.abs(lats)))
        m = {"lateral_m": float(lats[-1]), "max_lateral_last_m": worst}
        if worst > LANE_MAX_LATERAL_M:
            return False, f"{worst:.2f} m off the target lane {goal} in the last {LANE_HOLD_S} s", m
        return True, "ok", m


__all__ = ["EGO_INITIAL_SPEED", "FOLLOW_SPEEDS", "SUITES", "Episode", "EpisodeOutcome",
           "SuccessMonitor", "build_episode", "crossing_arc_length", "suite_episodes"]
