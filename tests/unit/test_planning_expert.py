"""Path following, the privileged expert and the rules baseline (open and closed loop)."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mm_perception.core.calibration import Rig
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import EgoState
from mm_perception.planning.closed_loop import ClosedLoopConfig, run_episode
from mm_perception.planning.expert import ExpertConfig, ExpertPlanner
from mm_perception.planning.instructions import TaskKind
from mm_perception.planning.lane_follow import (
    LaneFollowConfig,
    lane_trajectory,
    path_leaders,
    straight_path,
)
from mm_perception.planning.observation import (
    ChunkSpec,
    Planner,
    PlannerObservation,
    SceneObject,
    to_base,
)
from mm_perception.planning.rules import RulesConfig, RulesPlanner
from mm_perception.planning.safety import SafetyFilter, SafetyStatus
from mm_perception.planning.sim_bridge import observation_from_step
from mm_perception.planning.suite import build_episode
from mm_perception.planning.trajectory import Trajectory
from mm_perception.sim.scenario import Crossing, LaneFollow
from mm_perception.sim.simulator import SimStep

STAMP = 1_000_000_000


def _obs(speed: float, x: float = 0.0, y: float = 0.0, yaw: float = 0.0,
         objects: tuple[SceneObject, ...] = ()) -> PlannerObservation:
    ego = EgoState(STAMP, "map", "base_link", SE3.from_xy_yaw(x, y, yaw),
                   np.array([speed, 0.0, 0.0]))
    return PlannerObservation(STAMP, ego, "", STAMP, None, objects=objects)


def _passes_filter(traj: Trajectory, obs: PlannerObservation) -> None:
    now = obs.stamp_ns
    result = SafetyFilter().check(traj, obs.ego, [], now, now, now)
    assert result.status is SafetyStatus.PASSED, result.reasons


def _car(object_id: int, x: float, y: float, vx: float = 0.0, label: str = "car"
         ) -> SceneObject:
    return SceneObject(object_id, label, np.array([x, y]), 0.0, np.array([4.5, 1.8, 1.5]),
                       np.array([vx, 0.0]))


def _arc(radius: float, length: float, offset: float = 0.0, lead: float = 0.0) -> np.ndarray:
    """``lead`` m straight ahead of base_link, then a left turn of ``radius``, shifted
    ``offset`` to the left."""
    s = np.arange(-5.0, lead + length, 1.0)
    ang = np.clip(s - lead, 0.0, None) / radius
    x = np.where(s < lead, s, lead + radius * np.sin(ang))
    y = np.where(s < lead, 0.0, radius * (1 - np.cos(ang)))
    return np.stack([x, y + offset], axis=1)


# ---------------------------------------------------------------------------- lane_trajectory


@pytest.mark.parametrize(("speed", "target", "path"), [
    (8.0, 13.0, straight_path(80.0)),                      # accelerate
    (12.0, 5.0, straight_path(80.0)),                      # slow down
    (8.0, 9.0, straight_path(80.0) + np.array([0.0, 3.5])),          # lane change to the left
    (9.0, 9.0, straight_path(80.0) - np.array([0.0, 3.25])),         # onto the shoulder
    (8.0, 9.0, _arc(11.25, 60.0, lead=25.0)),              # a junction left turn
    (0.0, 9.0, _arc(7.75, 60.0)),                          # start in a tight turn
    (3.0, 9.0, _arc(11.25, 60.0, offset=-0.8)),            # off the turn, catching up
])
def test_lane_trajectory_stays_inside_the_safety_limits(speed: float, target: float,
                                                        path: np.ndarray) -> None:
    obs = _obs(speed)
    traj = lane_trajectory(obs, path, target)
    assert len(traj) == ChunkSpec().steps + 1 and traj.frame_id == "map"
    assert traj.stamp_ns == STAMP and traj.speed[0] == pytest.approx(speed)
    _passes_filter(traj, obs)


def test_lane_trajectory_follows_the_path_in_the_world_frame() -> None:
    # the ego is at (100, 50) heading north: base_link x is world +y
    obs = _obs(8.0, 100.0, 50.0, math.pi / 2)
    traj = lane_trajectory(obs, straight_path(80.0), 8.0)
    assert np.allclose(traj.xy[:, 0], 100.0, atol=1e-6)
    assert np.all(np.diff(traj.xy[:, 1]) > 0) and traj.xy[-1, 1] > 50.0 + 25.0
    # a lane 3.5 m to the left is reached smoothly, never overshot
    change = lane_trajectory(_obs(8.0), straight_path(120.0) + np.array([0.0, 3.5]), 8.0,
                             spec=ChunkSpec(steps=20, dt_s=0.4))
    lateral = change.xy[:, 1]
    assert np.all(np.diff(lateral) >= -1e-9) and lateral[-1] == pytest.approx(3.5, abs=0.05)
    assert lateral[1] < 0.5  # no jump sideways


def test_lane_trajectory_stops_at_the_stop_point() -> None:
    obs = _obs(8.0)
    traj = lane_trajectory(obs, straight_path(80.0), 9.0, stop_at_m=20.0,
                           spec=ChunkSpec(steps=25, dt_s=0.4))
    _passes_filter(traj, obs)
    assert traj.xy[:, 0].max() <= 20.0 + 1e-6
    assert traj.xy[-1, 0] == pytest.approx(20.0, abs=0.5) and traj.speed[-1] < 0.1


def test_lane_trajectory_stops_for_an_obstacle_and_follows_a_leader() -> None:
    obs = _obs(10.0, objects=(_car(7, 35.0, 0.2),))
    traj = lane_trajectory(obs, straight_path(80.0), 10.0, obstacles=obs.objects,
                           spec=ChunkSpec(steps=25, dt_s=0.4))
    _passes_filter(traj, obs)
    front = traj.xy[:, 0] + 2.3
    assert front.max() < 35.0 - 2.25 and traj.speed[-1] < 0.2  # stopped behind its rear
    # the same car one lane over is no obstacle
    beside = _car(7, 35.0, 3.5)
    free = lane_trajectory(obs, straight_path(80.0), 10.0, obstacles=(beside,))
    assert free.speed.min() >= 9.9
    # a slower leader: slow to about its speed, keep a gap
    leader = _car(8, 25.0, 0.0, vx=6.0)
    follow = lane_trajectory(_obs(10.0), straight_path(120.0), 10.0, obstacles=(leader,),
                             spec=ChunkSpec(steps=30, dt_s=0.4))
    gap = 25.0 + 6.0 * follow.t_s - 2.25 - (follow.xy[:, 0] + 2.3)
    assert gap.min() > 3.0 and follow.speed[-1] == pytest.approx(6.0, abs=0.7)
    # a pedestrian walking towards the path ahead counts; one walking away does not
    towards = SceneObject(9, "pedestrian", np.array([15.0, -3.0]), math.pi / 2,
                          np.array([0.6, 0.6, 1.7]), np.array([0.0, 1.4]))
    away = SceneObject(9, "pedestrian", np.array([15.0, -3.0]), -math.pi / 2,
                       np.array([0.6, 0.6, 1.7]), np.array([0.0, -1.4]))
    assert [lead.object_id for lead in path_leaders(straight_path(80.0), [towards])] == [9]
    assert path_leaders(straight_path(80.0), [away]) == []
    behind = _car(3, -10.0, 0.0, vx=12.0)
    assert path_leaders(straight_path(80.0), [behind]) == []


def test_lane_trajectory_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        lane_trajectory(_obs(5.0), np.zeros((1, 2)), 5.0)
    with pytest.raises(ValueError, match="NaN"):
        lane_trajectory(_obs(5.0), [[0.0, 0.0], [np.nan, 1.0]], 5.0)
    with pytest.raises(ValueError, match="distinct"):
        lane_trajectory(_obs(5.0), [[1.0, 0.0], [1.0, 0.0]], 5.0)
    with pytest.raises(ValueError, match="target_speed"):
        lane_trajectory(_obs(5.0), straight_path(), -1.0)
    with pytest.raises(ConfigError, match="max_accel_mps2"):
        LaneFollowConfig(max_accel_mps2=0.0)
    with pytest.raises(ConfigError, match="comfort_decel"):
        LaneFollowConfig(comfort_decel_mps2=4.0, max_decel_mps2=3.0)
    with pytest.raises(ConfigError, match="cruise_speed"):
        RulesConfig(cruise_speed_mps=40.0)
    with pytest.raises(ConfigError, match="stop_gap_m"):
        ExpertConfig(stop_gap_m=-1.0)


# ---------------------------------------------------------------------------- planners


def _first_observation(kind: TaskKind, seed: int = 0) -> tuple[object, PlannerObservation]:
    ep = build_episode(kind, seed)
    states = ep.scenario.initial_states()
    step = SimStep(0, states[0], tuple(states[1:]))
    return ep, observation_from_step(step, ep, instruction=ep.instruction)


def test_planners_follow_the_protocol_and_use_their_inputs() -> None:
    ep, obs = _first_observation(TaskKind.CHANGE_LANE_LEFT)
    expert = ExpertPlanner(ep)  # type: ignore[arg-type]
    rules = RulesPlanner()
    assert isinstance(expert, Planner) and isinstance(rules, Planner)
    e_traj, r_traj = expert.plan(obs), rules.plan(obs)
    _passes_filter(e_traj, obs)
    _passes_filter(r_traj, obs)
    lateral_e = to_base(obs.ego, e_traj.xy)[:, 1]
    lateral_r = to_base(obs.ego, r_traj.xy)[:, 1]
    assert lateral_e[-1] > 1.0            # the expert heads for the left lane
    assert abs(lateral_r[-1]) < 0.05      # the rules baseline keeps its lane
    # the expert reads ground truth, not perception
    with pytest.raises(ValueError, match="ground_truth"):
        expert.plan(PlannerObservation(obs.stamp_ns, obs.ego, "", None, None))
    # the rules baseline reads perception: a car ahead in its lane stops it
    blocked = PlannerObservation(obs.stamp_ns, obs.ego, obs.instruction, obs.stamp_ns, None,
                                 objects=(_car(1, 20.0, 0.0),), lanes=obs.lanes)
    assert rules.plan(blocked).speed[-1] < 1.0
    no_lane = PlannerObservation(obs.stamp_ns, obs.ego, "", obs.stamp_ns, None)
    assert to_base(obs.ego, rules.plan(no_lane).xy)[:, 1] == pytest.approx(0.0, abs=1e-9)


def test_expert_ignores_only_agents_whose_path_never_meets_its_route() -> None:
    from mm_perception.planning.expert import _agents_off_route

    ep = build_episode(TaskKind.TURN_LEFT, 0)
    layout = ep.scenario.layout
    ignored = _agents_off_route(ep, 3.0)
    route = layout.paths[ep.route[-1]]
    for agent in ep.scenario.agents:
        assert isinstance(agent.behaviour, LaneFollow)  # junction traffic follows paths
        path = layout.paths[agent.behaviour.path]
        pts = path.poses_at(np.arange(0.0, path.length, 1.0))[:, :2]
        _, lat = route.closest_many(pts)
        if bool((np.abs(lat) < 3.0).any()):  # comes near the route: never ignored
            assert agent.actor_id not in ignored
    assert ignored  # the suite's cross traffic keeps off the route
    stop = build_episode(TaskKind.STOP_BEHIND, 0)  # parked agents always count
    assert ep.target_actor_id is None and stop.target_actor_id not in _agents_off_route(stop,
                                                                                         3.0)
    lane = build_episode(TaskKind.CHANGE_LANE_LEFT, 0)  # both lanes of the route count
    for agent in lane.scenario.agents:
        if getattr(agent.behaviour, "path", "") in lane.route:
            assert agent.actor_id not in _agents_off_route(lane, 3.0)


def test_expert_stop_point_for_stop_behind() -> None:
    ep, obs = _first_observation(TaskKind.STOP_BEHIND, 2)
    traj = ExpertPlanner(ep).plan(obs)  # type: ignore[arg-type]
    assert traj.speed[1] >= traj.speed[0] - 1.0  # the target is far: no panic braking
    _passes_filter(traj, obs)


def test_expert_waits_at_the_zebra_crossing_while_walkers_are_at_it() -> None:
    ep, obs = _first_observation(TaskKind.YIELD_PEDESTRIANS, 6)
    assert ep.crossing is not None and obs.ground_truth  # walkers wait at both kerbs
    expert = ExpertPlanner(ep)  # type: ignore[arg-type]
    waiting = expert.plan(obs)
    _passes_filter(waiting, obs)
    # nobody at the crossing (the same scene without its walkers): drive on at cruise speed
    free = replace(obs, ground_truth=tuple(o for o in obs.ground_truth
                                           if o.label != "pedestrian"))
    going = expert.plan(free)
    assert going.speed[-1] > 8.5
    # walkers at the kerb: the ego brakes for the stop line 1 m before the crosswalk, far
    # before any walker is predicted to step into its lane
    assert waiting.speed[-1] < going.speed[-1] - 3.0
    cfg = ExpertConfig()
    path = ep.scenario.layout.path(ep.route[-1])
    s_cross = float(path.closest_many(np.array(ep.crossing))[0].mean())
    s_front = [path.closest(float(x), float(y))[0] + cfg.lane_follow.ego_length_m / 2
               for x, y in waiting.xy]
    assert max(s_front) <= s_cross - cfg.crosswalk_half_width_m - cfg.crosswalk_stop_margin_m \
        + 0.05
    # walkers that have crossed (at the far end of their walk) no longer hold the ego
    line = np.array(ep.crossing)
    done = []
    for o in obs.ground_truth:
        b = next(a for a in ep.scenario.agents if a.actor_id == o.object_id).behaviour
        if isinstance(b, Crossing) and np.linalg.norm(line - np.array(b.start), axis=1).min() \
                < 1.5:  # a walker on this crosswalk, still at its start
            o = replace(o, xy=to_base(obs.ego, np.array([b.end]))[0])
        done.append(o)
    assert expert.plan(replace(obs, ground_truth=tuple(done))).speed[-1] > 8.5


# ---------------------------------------------------------------------------- closed loop


def _rig() -> Rig:
    rig = Rig.from_yaml(Path(__file__).resolve().parents[2] / "config" / "rigs" / "car.yaml")
    data = rig.to_dict()
    # odometry only: the closed loop needs no rendering
    data["sensors"] = {k: v for k, v in data["sensors"].items() if v["type"] == "odometry"}
    data.pop("sync", None)
    return Rig.from_dict(data)


def _run(kind: TaskKind, seed: int, planner_name: str) -> dict[str, object]:
    """One episode through the closed-loop harness (safety filter, chunk executor at 20 Hz,
    plans every 0.5 s) with ground-truth perception: the planning is tested, not the
    perception, and the odometry-only rig needs no rendering."""
    ep = build_episode(kind, seed)
    planner = ExpertPlanner(ep) if planner_name == "expert" else RulesPlanner()
    result = run_episode(ep, planner, _rig(), ClosedLoopConfig(ground_truth_perception=True))
    return {**result.outcome, "safety": result.safety["reasons"]}


@pytest.fixture(autouse=False)
def _mujoco() -> None:
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    pytest.importorskip("mujoco")


@pytest.mark.slow
@pytest.mark.usefixtures("_mujoco")
@pytest.mark.parametrize("kind", list(TaskKind))
def test_expert_solves_every_task_in_closed_loop(kind: TaskKind) -> None:
    out = _run(kind, 0, "expert")
    assert out["success"], out


@pytest.mark.slow
@pytest.mark.usefixtures("_mujoco")
@pytest.mark.parametrize("kind", [TaskKind.TURN_LEFT, TaskKind.PULL_OVER])
def test_rules_baseline_fails_tasks_that_need_language(kind: TaskKind) -> None:
    out = _run(kind, 0, "rules")
    assert not out["success"] and not out["collisions"], out


@pytest.mark.slow
@pytest.mark.usefixtures("_mujoco")
def test_expert_yields_at_the_zebra_crossing_without_emergency_braking() -> None:
    # seed 1006: walkers step off both kerbs while the ego is still 20-30 m out; waiting only
    # for walkers predicted in the lane within 3 s reached the crosswalk at 9 m/s with one at
    # the bumper (19 emergency stops, then stuck on the crosswalk)
    ep = build_episode(TaskKind.YIELD_PEDESTRIANS, 1006)
    result = run_episode(ep, ExpertPlanner(ep), _rig(),
                         ClosedLoopConfig(ground_truth_perception=True))
    assert result.outcome["success"], result.outcome
    assert result.safety["status"]["emergency_stop"] == 0, result.safety
