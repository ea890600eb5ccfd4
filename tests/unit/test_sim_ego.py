"""Ego dynamics: bicycle and unicycle models, trajectory tracking, autopilot, collisions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from mm_perception.sim import layouts
from mm_perception.sim.actors import make_ego_model
from mm_perception.sim.ego_dynamics import (
    Autopilot,
    BicycleModel,
    EgoCommand,
    TrajectoryCommand,
    UnicycleModel,
    boxes_overlap,
    find_collisions,
    footprint,
    footprints,
    make_dynamics,
    off_road,
)
from mm_perception.sim.library import SCENARIOS
from mm_perception.sim.scenario import Scenario
from mm_perception.sim.spec import ActorState
from mm_perception.sim.traffic import TrafficModel

START = ActorState(0, 1.0, -2.0, 0.3, 5.0)


def _rk4(deriv: Any, y: np.ndarray, t_end: float, n: int) -> np.ndarray:
    """Independent reference integrator."""
    h = t_end / n
    t = 0.0
    for _ in range(n):
        k1 = deriv(t, y)
        k2 = deriv(t + h / 2, y + h / 2 * k1)
        k3 = deriv(t + h / 2, y + h / 2 * k2)
        k4 = deriv(t + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t += h
    return y


# ---------------------------------------------------------------------------- bicycle


def test_bicycle_turns_on_the_analytic_circle() -> None:
    L, delta, v = 2.8, 0.25, 6.0
    model = BicycleModel(wheelbase=L, max_steer=0.6)
    radius = L / math.tan(delta)
    cx = START.x - radius * math.sin(START.yaw)
    cy = START.y + radius * math.cos(START.yaw)
    st = ActorState(0, START.x, START.y, START.yaw, v)
    pts = []
    for _ in range(300):
        st = model.step(st, EgoCommand(0.0, steering_angle=delta), 0.05)
        pts.append((st.x, st.y))
        assert st.yaw_rate == pytest.approx(v * math.tan(delta) / L)
        assert st.speed == pytest.approx(v)
    d = np.hypot(*(np.array(pts) - [cx, cy]).T)
    assert np.allclose(d, radius, atol=1e-9)
    # heading after t: yaw0 + v t / R
    assert math.remainder(st.yaw - (START.yaw + v * 15.0 / radius), 2 * math.pi) == \
        pytest.approx(0.0, abs=1e-9)


def test_bicycle_is_exact_for_constant_inputs() -> None:
    model = BicycleModel(wheelbase=2.7, max_steer=0.6, max_accel=3.0, max_speed=40.0)
    cmd = EgoCommand(1.2, steering_angle=-0.15)
    one = model.step(START, cmd, 2.0)
    many = START
    for _ in range(400):
        many = model.step(many, cmd, 0.005)
    assert (one.x, one.y, one.yaw, one.speed) == pytest.approx(
        (many.x, many.y, many.yaw, many.speed), abs=1e-9)
    # against an independent RK4 integration of the kinematic bicycle
    kappa = math.tan(-0.15) / 2.7

    def deriv(_t: float, y: np.ndarray) -> np.ndarray:
        return np.array([y[3] * math.cos(y[2]), y[3] * math.sin(y[2]), y[3] * kappa, 1.2])

    ref = _rk4(deriv, np.array([START.x, START.y, START.yaw, START.speed]), 2.0, 2000)
    assert (one.x, one.y, one.yaw, one.speed) == pytest.approx(tuple(ref), abs=1e-8)


def test_bicycle_limits_clamp() -> None:
    model = BicycleModel(wheelbase=2.8, max_steer=0.5, max_accel=2.0, max_decel=6.0,
                         max_speed=10.0)
    # steering beyond the limit = at the limit
    a = model.step(START, EgoCommand(0.0, steering_angle=1.2), 0.1)
    b = model.step(START, EgoCommand(0.0, steering_angle=0.5), 0.1)
    assert (a.x, a.y, a.yaw) == (b.x, b.y, b.yaw)
    # acceleration clamped, then the speed saturates at max_speed
    st = model.step(START, EgoCommand(50.0), 0.5)
    assert st.speed == pytest.approx(START.speed + 2.0 * 0.5)
    st = model.step(START, EgoCommand(2.0), 5.0)
    assert st.speed == pytest.approx(10.0)
    # distance: 2.5 s accelerating 5 -> 10, then 2.5 s at 10 m/s
    assert math.hypot(st.x - START.x, st.y - START.y) == pytest.approx(18.75 + 25.0)
    # braking stops at standstill, no reversing, decel clamped to 6
    st = model.step(START, EgoCommand(-100.0), 3.0)
    assert st.speed == 0.0
    assert math.hypot(st.x - START.x, st.y - START.y) == pytest.approx(5.0 ** 2 / (2 * 6.0))
    again = model.step(st, EgoCommand(-3.0), 1.0)
    assert (again.x, again.y, again.speed) == (st.x, st.y, 0.0)
    # reversing when allowed
    rev = BicycleModel(max_reverse_speed=2.0).step(st, EgoCommand(-1.0), 4.0)
    assert rev.speed == pytest.approx(-2.0)


def test_bad_commands_are_rejected() -> None:
    with pytest.raises(ValueError, match="not both"):
        EgoCommand(0.0, steering_angle=0.1, yaw_rate=0.1)
    with pytest.raises(ValueError, match="acceleration"):
        EgoCommand(math.nan)
    with pytest.raises(ValueError, match="steering_angle"):
        UnicycleModel().step(START, EgoCommand(0.0, steering_angle=0.1), 0.1)
    with pytest.raises(ValueError, match="yaw_rate"):
        BicycleModel().step(START, EgoCommand(0.0, yaw_rate=0.1), 0.1)
    with pytest.raises(ValueError, match="dt"):
        BicycleModel().step(START, EgoCommand(0.0), 0.0)
    with pytest.raises(ValueError, match="wheelbase"):
        BicycleModel(wheelbase=-1.0)
    with pytest.raises(ValueError, match="increasing"):
        TrajectoryCommand(np.array([0.0, 0.0]), np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="N >= 2"):
        TrajectoryCommand(np.array([0.0, 1.0]), np.zeros((3, 2)), np.zeros(2))


# ---------------------------------------------------------------------------- unicycle


@pytest.mark.parametrize(("accel", "omega"), [(0.8, 0.9), (-1.0, -0.4), (0.0, 1.2),
                                              (0.5, 1e-7), (0.7, 0.0)])
def test_unicycle_closed_form_matches_integration(accel: float, omega: float) -> None:
    model = UnicycleModel(max_accel=2.0, max_yaw_rate=1.5, max_speed=20.0)
    st = ActorState(0, 0.5, 1.0, -0.7, 3.0)
    out = model.step(st, EgoCommand(accel, yaw_rate=omega), 1.5)

    def deriv(_t: float, y: np.ndarray) -> np.ndarray:
        return np.array([y[3] * math.cos(y[2]), y[3] * math.sin(y[2]), omega, accel])

    ref = _rk4(deriv, np.array([st.x, st.y, st.yaw, st.speed]), 1.5, 3000)
    assert (out.x, out.y, out.yaw, out.speed) == pytest.approx(tuple(ref), abs=1e-8)
    assert out.yaw_rate == omega


def test_unicycle_limits_and_turning_on_the_spot() -> None:
    model = UnicycleModel(max_accel=1.0, max_yaw_rate=1.0, max_speed=1.5)
    still = ActorState(0, 0.0, 0.0, 0.0, 0.0)
    spun = model.step(still, EgoCommand(0.0, yaw_rate=5.0), 0.5)
    assert (spun.x, spun.y, spun.yaw, spun.yaw_rate) == (0.0, 0.0, 0.5, 1.0)
    fast = model.step(still, EgoCommand(10.0, yaw_rate=0.0), 3.0)
    assert fast.speed == pytest.approx(1.5)
    assert fast.x == pytest.approx(0.5 * 1.0 * 1.5 ** 2 + 1.5 * 1.5)   # 1.5 s ramp + cruise
    stop = model.step(ActorState(0, 0.0, 0.0, 0.0, 1.0), EgoCommand(-5.0), 3.0)
    assert stop.speed == 0.0 and stop.x == pytest.approx(0.5)


# ---------------------------------------------------------------------------- tracking


@pytest.mark.parametrize("model", [BicycleModel(), UnicycleModel(max_speed=3.0)],
                         ids=["bicycle", "unicycle"])
def test_trajectory_tracking_converges(model: BicycleModel | UnicycleModel) -> None:
    v_ref = 8.0 if isinstance(model, BicycleModel) else 1.5
    t = np.linspace(0.0, 40.0, 81)
    xy = np.stack([t * v_ref, np.full_like(t, 1.0)], axis=1)   # the line y = 1, heading +x
    traj = TrajectoryCommand(t, xy, np.full_like(t, v_ref))
    st = ActorState(0, 0.0, 0.0, 0.0, 0.5 * v_ref)
    dt = 0.05
    for k in range(300):
        st = model.step(st, model.track(st, traj, k * dt), dt)
    assert st.y == pytest.approx(1.0, abs=0.05)
    assert st.speed == pytest.approx(v_ref, abs=0.2)
    assert abs(st.yaw) < 0.02
    # step() accepts the trajectory itself (times relative to now)
    shifted = xy + np.array([st.x, 0.0])
    nxt = model.step(st, TrajectoryCommand(t, shifted, np.full_like(t, v_ref)), dt)
    assert nxt.x > st.x


# ---------------------------------------------------------------------------- autopilot


def _drive(sc: Scenario, steps: int, dt: float = 0.1, traffic: bool = True
           ) -> tuple[list[ActorState], TrafficModel]:
    pilot = Autopilot(sc)
    tm = TrafficModel(sc)
    ego = sc.initial_states()[0]
    out = [ego]
    for _ in range(steps):
        cmd = pilot.command(ego, tm if traffic else None, tm.time_s)
        nxt = pilot.dynamics.step(ego, cmd, dt)
        tm.step(dt, ego)
        ego = nxt
        out.append(ego)
    return out, tm


def test_autopilot_follows_lanes_and_turns() -> None:
    for path, platform, speed, layout in (
            ("east_1", "vehicle", 14.0, {"type": "straight_road", "length": 400.0}),
            ("s_left", "vehicle", 8.0, {"type": "intersection"}),
            ("e_right", "vehicle", 7.0, {"type": "intersection"}),
            ("aisle", "robot", 1.5, {"type": "warehouse_aisle"})):
        sc = Scenario.from_dict({"layout": layout, "agents": [], "ego": {
            "platform": platform, "path": path, "s0": 5.0, "cruise_speed": speed}})
        egos, _ = _drive(sc, 300)
        lane = sc.layout.paths[path]
        _, lat = lane.closest_many(np.array([[e.x, e.y] for e in egos]))
        assert np.abs(lat).max() < 0.5, path
        for e in egos:
            assert not off_road(e, sc.ego.model, sc.layout), path
        speeds = np.array([e.speed for e in egos])
        assert speeds.max() == pytest.approx(speed, rel=0.05)


def test_autopilot_stops_at_the_end_of_its_path() -> None:
    sc = Scenario.from_dict({"layout": {"type": "warehouse_aisle", "length": 20.0},
                             "agents": [], "ego": {"platform": "robot", "path": "aisle",
                                                   "s0": 5.0, "cruise_speed": 1.5}})
    egos, _ = _drive(sc, 400)
    assert egos[-1].speed == pytest.approx(0.0, abs=0.02)
    assert not off_road(egos[-1], sc.ego.model, sc.layout)


def test_autopilot_stops_behind_a_stopped_agent() -> None:
    sc = Scenario.from_dict({
        "layout": {"type": "straight_road", "length": 400.0},
        "ego": {"platform": "vehicle", "path": "east_1", "s0": 10.0, "cruise_speed": 12.0},
        "agents": [{"class": "truck", "behaviour": {
            "type": "lane_follow", "path": "east_1", "s0": 60.0, "speed": 10.0,
            "stop_at_time_s": 3.0}}]})
    pilot = Autopilot(sc)
    tm = TrafficModel(sc)
    ego = sc.initial_states()[0]
    models = sc.models()
    for _ in range(400):
        cmd = pilot.command(ego, tm)
        nxt = pilot.dynamics.step(ego, cmd, 0.05)
        agents = tm.step(0.05, ego)
        ego = nxt
        assert not find_collisions([ego, *agents], models)
    truck = tm.states()[0]
    assert ego.speed < 0.05 and truck.speed == 0.0
    gap = (truck.x - models[1].size[0] / 2) - (ego.x + 2.3)
    assert 0.5 < gap < 5.0
    assert tm.ego_constraint(ego)[0] == pytest.approx(gap, abs=0.6)


def test_make_dynamics_uses_the_spec_limits() -> None:
    sc = SCENARIOS["highway"](0)
    dyn = make_dynamics(sc.ego)
    assert isinstance(dyn, BicycleModel) and dyn.wheelbase == sc.ego.wheelbase
    robot = make_dynamics(SCENARIOS["warehouse"](0).ego)
    assert isinstance(robot, UnicycleModel) and robot.max_speed == 2.0


# ---------------------------------------------------------------------------- collisions


def _segments_intersect(p: np.ndarray, q: np.ndarray, r: np.ndarray, s: np.ndarray) -> bool:
    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
    return orient(p, q, r) * orient(p, q, s) < 0 and orient(r, s, p) * orient(r, s, q) < 0


def _inside(pt: np.ndarray, poly: np.ndarray) -> bool:
    def cross(u: np.ndarray, v: np.ndarray) -> float:
        return float(u[0] * v[1] - u[1] * v[0])
    signs = [cross(poly[(i + 1) % 4] - poly[i], pt - poly[i]) for i in range(4)]
    return all(v > 0 for v in signs) or all(v < 0 for v in signs)


def _reference_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Convex polygons overlap iff an edge pair crosses or one holds a vertex of the other."""
    if any(_segments_intersect(a[i], a[(i + 1) % 4], b[j], b[(j + 1) % 4])
           for i in range(4) for j in range(4)):
        return True
    return any(_inside(p, b) for p in a) or any(_inside(p, a) for p in b)


def test_boxes_overlap_matches_a_reference() -> None:
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(400):
        pose = np.column_stack([rng.uniform(-4, 4, 2), rng.uniform(-4, 4, 2),
                                rng.uniform(-np.pi, np.pi, 2)])
        half = rng.uniform(0.2, 3.0, (2, 2))
        a, b = footprints(pose, half)
        got = boxes_overlap(a, b)
        assert got == _reference_overlap(a, b)
        hits += got
    assert 50 < hits < 350   # both outcomes exercised


def test_footprint_and_collisions() -> None:
    car = make_ego_model("vehicle")
    st = ActorState(0, 10.0, 5.0, math.pi / 2)
    corners = footprint(st, car)
    assert corners == pytest.approx(np.array([[10.95, 7.3], [9.05, 7.3], [9.05, 2.7],
                                              [10.95, 2.7]]))
    models = {0: car, 3: car}
    assert find_collisions([st, ActorState(3, 10.0, 8.0, 0.0)], models) == [(0, 3)]
    assert find_collisions([ActorState(3, 10.0, 8.0, 0.0), st], models) == [(0, 3)]
    assert find_collisions([st, ActorState(3, 10.0, 9.0, 0.0)], models) == []
    # touching is not a collision
    assert find_collisions([st, ActorState(3, 10.0, 9.6, math.pi / 2)], models) == []


def test_off_road_on_each_layout() -> None:
    car = make_ego_model("vehicle")
    robot = make_ego_model("robot")
    road = layouts.straight_road()
    assert not off_road(ActorState(0, 0.0, -5.25, 0.0), car, road)
    assert off_road(ActorState(0, 0.0, -9.0, 0.0), car, road)            # onto the sidewalk
    junction = layouts.intersection()
    assert not off_road(ActorState(0, 0.0, 0.0, 0.7), car, junction)
    assert off_road(ActorState(0, -20.0, 6.0, 0.0), car, junction)       # into the corner
    lot = layouts.parking_lot()
    x, y, yaw = lot.spots[0]
    assert not off_road(ActorState(0, x, y, yaw), car, lot)
    assert off_road(ActorState(0, x, y - 3.0, yaw), car, lot)            # over the kerb
    hall = layouts.warehouse_aisle()
    assert not off_road(ActorState(0, 0.0, 0.0, 0.0), robot, hall)
    assert off_road(ActorState(0, 5.0, 1.4, 0.0), robot, hall)           # into a shelf
