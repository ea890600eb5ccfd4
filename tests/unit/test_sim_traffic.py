"""Agent motion: behaviours, reactions, consistency of the reported velocities, determinism."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from mm_perception.sim.actors import boxes_overlap, find_collisions, footprint
from mm_perception.sim.ego_dynamics import Autopilot
from mm_perception.sim.layouts import ARMS, KERB_TOP
from mm_perception.sim.library import SCENARIOS
from mm_perception.sim.scenario import Scenario
from mm_perception.sim.spec import ActorState
from mm_perception.sim.traffic import TrafficModel, idm_acceleration

ROAD = {"type": "straight_road", "lanes_per_direction": 2, "length": 400.0}
FAR_EGO = {"platform": "vehicle", "path": "west_1", "s0": 390.0, "cruise_speed": 5.0}


def _scenario(agents: list[dict[str, Any]], layout: dict[str, Any] | None = None,
              ego: dict[str, Any] | None = None, seed: int = 0) -> Scenario:
    return Scenario.from_dict({"name": "t", "layout": layout or ROAD, "ego": ego or FAR_EGO,
                               "agents": agents}, seed=seed)


def _parked_ego(sc: Scenario) -> ActorState:
    """The ego standing still at its start (an obstacle that does not move)."""
    e = sc.initial_states()[0]
    return ActorState(0, e.x, e.y, e.yaw, 0.0, 0.0, e.z)


def _run(sc: Scenario, steps: int, dt: float = 0.05, ego: ActorState | None = None,
         autopilot: bool = False) -> tuple[list[list[ActorState]], list[ActorState]]:
    """Agent states per step (index 0 = initial) and ego states."""
    tm = TrafficModel(sc)
    ego_state = ego if ego is not None else _parked_ego(sc)
    pilot = Autopilot(sc) if autopilot else None
    if autopilot:
        ego_state = sc.initial_states()[0]
    out, egos = [tm.states()], [ego_state]
    for _ in range(steps):
        nxt = ego_state
        if pilot is not None:
            nxt = pilot.dynamics.step(ego_state, pilot.command(ego_state, tm), dt)
        out.append(tm.step(dt, ego_state))
        ego_state = nxt
        egos.append(ego_state)
    return out, egos


def _as_array(states: list[list[ActorState]]) -> np.ndarray:
    return np.array([[[s.x, s.y, s.yaw, s.speed, s.yaw_rate, s.z] for s in step]
                     for step in states])


# ---------------------------------------------------------------------------- determinism


def test_same_seed_same_states_different_seed_different() -> None:
    a, ego_a = _run(SCENARIOS["highway"](0), 200, autopilot=True)
    b, ego_b = _run(SCENARIOS["highway"](0), 200, autopilot=True)
    c, _ = _run(SCENARIOS["highway"](1), 200, autopilot=True)
    assert np.array_equal(_as_array(a), _as_array(b))
    assert [(e.x, e.y, e.speed) for e in ego_a] == [(e.x, e.y, e.speed) for e in ego_b]
    assert not np.array_equal(_as_array(a), _as_array(c))
    assert [s.actor_id for s in a[-1]] == list(range(1, len(a[-1]) + 1))


def test_reset_replays_identically() -> None:
    sc = SCENARIOS["intersection"](3)
    tm = TrafficModel(sc)
    ego = _parked_ego(sc)
    first = [tm.step(0.1, ego) for _ in range(50)]
    tm.reset()
    assert tm.time_s == 0.0
    assert _as_array([tm.states()]).tolist() == _as_array([TrafficModel(sc).states()]).tolist()
    again = [tm.step(0.1, ego) for _ in range(50)]
    assert np.array_equal(_as_array(first), _as_array(again))


# ---------------------------------------------------------------------------- lane following


def test_lane_following_stays_on_its_lane_with_varying_speed() -> None:
    sc = _scenario([
        {"class": "car", "behaviour": {"type": "lane_follow", "path": "east_0", "s0": 10,
                                       "speed": 12, "speed_variation": 0.3,
                                       "variation_period_s": 4.0}},
        {"class": "bus", "behaviour": {"type": "lane_follow", "path": "west_1", "s0": 20,
                                       "speed": 10}}])
    states, _ = _run(sc, 200)
    arr = _as_array(states)
    for i, lane in enumerate(("east_0", "west_1")):
        path = sc.layout.paths[lane]
        s, lat = path.closest_many(arr[:, i, :2])
        assert np.abs(lat).max() < 0.2
        assert np.all(np.diff(s) > 0)
        yaw_path = path.poses_at(s)[:, 2]
        assert np.allclose(np.remainder(arr[:, i, 2] - yaw_path + np.pi, 2 * np.pi) - np.pi, 0.0)
    speeds = arr[:, 0, 3]
    assert speeds.max() - speeds.min() > 3.0      # the speed profile really varies
    assert arr[:, 1, 3].max() - arr[:, 1, 3].min() < 1e-9


def test_turning_agents_end_on_their_exit_lane() -> None:
    for lanes in (1, 2):
        layout = {"type": "intersection", "lanes_per_direction": lanes, "arm_length": 30.0}
        ego = {"platform": "vehicle", "path": "w_in_0", "s0": 5.0, "cruise_speed": 5.0}
        for k, arm in enumerate(ARMS):
            if arm == "w":
                continue  # the parked ego stands at the start of the west arm
            exits = {"left": ARMS[(k + 3) % 4], "right": ARMS[(k + 1) % 4],
                     "straight": ARMS[(k + 2) % 4]}
            for direction in ("left", "right", "straight"):
                sc = _scenario([{"class": "car", "behaviour": {
                    "type": "turn", "approach": arm, "direction": direction, "s0": 5.0,
                    "speed": 8.0}}], layout=layout, ego=ego)
                states, _ = _run(sc, 130, dt=0.1)
                lane = lanes - 1 if direction == "right" else 0  # straight: lane 0
                out = sc.layout.paths[f"{exits[direction]}_out_{lane}"]
                final = states[-1][0]
                s, lat = out.closest(final.x, final.y)
                assert abs(lat) < 0.2 and s > out.length - 6.0, (arm, direction)
                assert abs(math.remainder(final.yaw - out.point_at(s)[2], 2 * math.pi)) < 0.01
                for st in states:  # the whole car stays on the road
                    assert sc.layout.is_drivable(footprint(st[0], sc.agents[0].model)).all()


def test_velocities_are_consistent_with_the_motion() -> None:
    sc = SCENARIOS["intersection"](0)
    dt = 0.05
    states, _ = _run(sc, 200, dt=dt)
    arr = _as_array(states)
    disp = np.hypot(*(arr[1:, :, :2] - arr[:-1, :, :2]).transpose(2, 0, 1))
    mean_speed = (arr[1:, :, 3] + arr[:-1, :, 3]) / 2
    # straight or constant-curvature motion: chord = arc within a few mm
    assert np.abs(disp - mean_speed * dt).max() < 5e-3
    dyaw = np.remainder(arr[1:, :, 2] - arr[:-1, :, 2] + np.pi, 2 * np.pi) - np.pi
    mean_rate = (arr[1:, :, 4] + arr[:-1, :, 4]) / 2
    err = np.abs(dyaw - mean_rate * dt)
    assert np.median(err) < 1e-9           # exact within a segment
    # straight-to-arc transitions within one step: at most curvature * speed * dt / 2
    assert err.max() < 0.04
    assert np.abs(dyaw).max() > 0.01       # agents really turn in this scenario
    # the same holds for the agents' point velocities (what the radar Doppler uses)
    st = states[100][0]
    vel = st.point_velocity(np.array([[st.x, st.y, st.z]]))[0]
    assert vel[:2] == pytest.approx(st.speed * np.array([math.cos(st.yaw), math.sin(st.yaw)]))


# ---------------------------------------------------------------------------- stopping


def test_follower_stops_behind_a_stopping_lead_without_overlap() -> None:
    sc = _scenario([
        {"class": "car", "behaviour": {"type": "lane_follow", "path": "east_0", "s0": 60,
                                       "speed": 12, "stop_at_time_s": 2.0}},
        {"class": "truck", "behaviour": {"type": "lane_follow", "path": "east_0", "s0": 25,
                                         "speed": 14}}])
    states, _ = _run(sc, 500, dt=0.05)
    models = {a.actor_id: a.model for a in sc.agents}
    for st in states:
        assert not boxes_overlap(footprint(st[0], models[1]), footprint(st[1], models[2]))
    lead, follower = states[-1]
    assert lead.speed == 0.0 and follower.speed < 0.05
    gap = (lead.x - models[1].size[0] / 2) - (follower.x + models[2].size[0] / 2)
    assert 0.5 < gap < 5.0
    # the lead braked at a comfortable rate from t = 2 s
    v = np.array([s[0].speed for s in states])
    t = np.arange(len(states)) * 0.05
    assert v[t < 1.9].min() > 10.0
    assert np.diff(v).min() > -2.6 * 0.05 - 1e-9


def test_stop_at_s_holds_then_goes_on() -> None:
    sc = _scenario([{"class": "car", "behaviour": {
        "type": "lane_follow", "path": "east_1", "s0": 10, "speed": 8, "stop_at_s": 60.0,
        "stop_duration_s": 3.0}}])
    states, _ = _run(sc, 400, dt=0.05)
    path = sc.layout.paths["east_1"]
    s = np.array([path.closest(st[0].x, st[0].y)[0] for st in states])
    v = np.array([st[0].speed for st in states])
    stopped = np.flatnonzero(v == 0.0)
    assert stopped.size > 0
    assert abs(s[stopped[0]] - 60.0) < 1.0
    held = stopped.size * 0.05
    assert 2.9 < held < 3.5
    assert s[-1] > 64.0 and v[-1] > 2.0 and np.all(np.diff(v[-20:]) > 0)   # went on


def test_agents_stop_for_the_ego() -> None:
    ego_spec = {"platform": "vehicle", "path": "east_0", "s0": 100.0, "cruise_speed": 5.0}
    sc = _scenario([{"class": "car", "behaviour": {"type": "lane_follow", "path": "east_0",
                                                   "s0": 20, "speed": 13}}], ego=ego_spec)
    ego = _parked_ego(sc)
    states, _ = _run(sc, 300, ego=ego)
    car = states[-1][0]
    assert car.speed < 0.05
    assert not boxes_overlap(footprint(car, sc.agents[0].model), footprint(ego, sc.ego.model))
    gap = (ego.x - 2.3) - (car.x + sc.agents[0].model.size[0] / 2)
    assert 0.5 < gap < 5.0
    tm = TrafficModel(sc)
    assert tm.blockers(ego) == {}
    for _ in range(300):
        tm.step(0.05, ego)
    assert tm.blockers(ego) == {1: 0}


def test_parked_agents_never_move() -> None:
    sc = _scenario([{"class": "car", "behaviour": {"type": "parked", "path": "shoulder_east",
                                                   "s": 50.0}},
                    {"class": "pedestrian", "behaviour": {"type": "parked",
                                                          "pose": [0.0, 10.0, 1.0]}}])
    states, _ = _run(sc, 50)
    arr = _as_array(states)
    assert np.all(arr == arr[0])
    assert arr[0, 1, 5] == pytest.approx(KERB_TOP)   # standing on the sidewalk
    assert np.all(arr[:, :, 3] == 0.0) and np.all(arr[:, :, 4] == 0.0)


# ---------------------------------------------------------------------------- crossing


def test_pedestrians_and_cyclists_cross() -> None:
    layout = {"type": "intersection", "arm_length": 40.0}
    ego = {"platform": "vehicle", "path": "w_in_0", "s0": 5.0, "cruise_speed": 5.0}
    sc = _scenario([
        {"class": "pedestrian", "behaviour": {"type": "crossing", "crosswalk": "crosswalk_n",
                                              "start_delay_s": 2.0}},
        {"class": "cyclist", "behaviour": {"type": "crossing", "crosswalk": "crosswalk_e",
                                           "reverse": True, "speed": 4.0}}],
        layout=layout, ego=ego)
    states, _ = _run(sc, 200, dt=0.1)
    for i, agent in enumerate(sc.agents):
        b = agent.behaviour
        start, end = np.array(b.start), np.array(b.end)   # type: ignore[union-attr]
        final = np.array([states[-1][i].x, states[-1][i].y])
        assert np.hypot(*(final - end)) < 0.35
        assert np.hypot(*(final - start)) > 9.5
    ped = np.array([[s[0].x, s[0].y] for s in states])
    assert np.all(ped[:20] == ped[0])              # waits for its start delay (2 s)
    assert not np.all(ped[25] == ped[0])
    zs = {round(s[0].z, 3) for s in states}
    assert zs == {0.01, 0.15}                      # steps down from the kerb and back up


def test_car_gives_way_to_a_pedestrian_on_the_crosswalk() -> None:
    layout = {"type": "intersection", "arm_length": 60.0}
    ego = {"platform": "vehicle", "path": "n_in_0", "s0": 5.0, "cruise_speed": 5.0}
    sc = _scenario([
        {"class": "pedestrian", "behaviour": {"type": "crossing", "crosswalk": "crosswalk_w",
                                              "speed": 1.0, "start_delay_s": 0.0}},
        {"class": "car", "behaviour": {"type": "lane_follow", "path": "w_straight_0",
                                       "s0": 25.0, "speed": 10.0}}], layout=layout, ego=ego)
    states, _ = _run(sc, 250, dt=0.1)
    models = {a.actor_id: a.model for a in sc.agents}
    min_car_speed = min(s[1].speed for s in states)
    assert min_car_speed < 0.5                     # it stopped (or nearly) for the pedestrian
    for st in states:
        assert not find_collisions(st, models)
    assert states[-1][1].x > 0.0                   # and then drove on through the junction


def test_library_scenarios_run_without_collisions() -> None:
    for name in sorted(SCENARIOS):
        for seed in ((0, 1, 2) if name == "random" else (0,)):
            sc = SCENARIOS[name](seed)
            models = sc.models()
            states, egos = _run(sc, 120, dt=0.1, autopilot=True)
            for agents, ego in zip(states, egos, strict=True):
                assert not find_collisions([ego, *agents], models), (name, seed)
                assert sc.layout.is_drivable(footprint(ego, sc.ego.model)).all(), (name, seed)
            moved = np.hypot(egos[-1].x - egos[0].x, egos[-1].y - egos[0].y)
            assert moved > 5.0, (name, seed)


# ---------------------------------------------------------------------------- misc


def test_idm_reference_values() -> None:
    one = np.ones(1)
    # free road at the desired speed: no acceleration
    assert idm_acceleration(one * 10, one * 10, one * np.inf, one * 0, one * 2, one * 2,
                            one * 2, one * 1)[0] == pytest.approx(0.0)
    # standing at the standstill gap behind a stopped car: no acceleration
    assert idm_acceleration(one * 0, one * 10, one * 2, one * 0, one * 2, one * 2, one * 2,
                            one * 1)[0] == pytest.approx(0.0)
    # hand-computed: v=10, v0=20, gap=30, dv=5, a=1, b=2, s0=2, T=1.5
    s_star = 2 + 10 * 1.5 + 10 * 5 / (2 * math.sqrt(2))
    expect = 1 * (1 - 0.5 ** 4 - (s_star / 30) ** 2)
    assert idm_acceleration(one * 10, one * 20, one * 30, one * 5, one * 1, one * 2, one * 2,
                            one * 1.5)[0] == pytest.approx(expect)
    # an obstacle more than 5 desired gaps away is ignored
    assert idm_acceleration(one * 10, one * 20, one * 6 * s_star, one * 5, one * 1, one * 2,
                            one * 2, one * 1.5)[0] == pytest.approx(1 - 0.5 ** 4)


def test_step_rejects_bad_dt() -> None:
    sc = SCENARIOS["warehouse"](0)
    tm = TrafficModel(sc)
    for dt in (0.0, -0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="dt"):
            tm.step(dt, sc.initial_states()[0])
