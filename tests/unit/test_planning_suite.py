"""Instruction suite: tasks and wordings, episodes, the success check, and the sim bridge."""

from __future__ import annotations

import math
import string

import numpy as np
import pytest

from mm_perception.core.errors import ConfigError
from mm_perception.planning.instructions import (
    COLOURS,
    HELDOUT_PER_KIND,
    SPLITS,
    TARGET_CLASSES,
    Task,
    TaskKind,
    instruction_speed,
    parse_instruction,
    phrasings,
    render_instruction,
)
from mm_perception.planning.observation import LANE_ROLES, PlannerObservation
from mm_perception.planning.sim_bridge import (
    LANE_POINTS,
    ego_lane_name,
    ego_state,
    ground_truth_objects,
    map_lanes,
    observation_from_step,
)
from mm_perception.planning.suite import (
    EGO_INITIAL_SPEED,
    SUITES,
    Episode,
    SuccessMonitor,
    build_episode,
    suite_episodes,
)
from mm_perception.planning.trajectory import Trajectory
from mm_perception.sim.layouts import Layout
from mm_perception.sim.simulator import SimEvents, SimStep
from mm_perception.sim.spec import ActorState


def _task(kind: TaskKind) -> Task:
    if kind is TaskKind.FOLLOW_SPEED:
        return Task(kind, speed_mps=11.0)
    if kind is TaskKind.STOP_BEHIND:
        return Task(kind, target_colour="red", target_class="truck")
    return Task(kind)


# ---------------------------------------------------------------------------- wordings


@pytest.mark.parametrize("kind", list(TaskKind))
def test_heldout_wordings_are_never_train_wordings(kind: TaskKind) -> None:
    train, held = phrasings(kind, "train"), phrasings(kind, "heldout")
    assert len(train) + len(held) >= 6
    assert len(held) == HELDOUT_PER_KIND >= 2
    assert not set(train) & set(held)
    task = _task(kind)
    rendered_train = {render_instruction(task, i, "train") for i in range(len(train))}
    rendered_held = {render_instruction(task, i, "heldout") for i in range(len(held))}
    assert len(rendered_train) == len(train) and len(rendered_held) == len(held)
    assert not rendered_train & rendered_held
    # a generator only ever picks wordings of its split
    rng = np.random.default_rng(0)
    assert {render_instruction(task, rng, "heldout") for _ in range(30)} <= rendered_held


def test_instructions_carry_the_task_parameters() -> None:
    task = Task(TaskKind.FOLLOW_SPEED, speed_mps=11.0)
    texts = [render_instruction(task, i) for i in range(len(phrasings(task.kind)))]
    assert any("40 km" in t for t in texts) and any("11 m/s" in t for t in texts)
    for t in texts:
        assert "{" not in t and ("40" in t or "11" in t)
    target = Task(TaskKind.STOP_BEHIND, target_colour="blue", target_class="bus")
    for split in ("train", "heldout"):
        for i in range(6):
            assert "blue bus" in render_instruction(target, i, split)
    for kind in TaskKind:  # only known placeholders
        for template in phrasings(kind, "train") + phrasings(kind, "heldout"):
            names = {f[1] for f in string.Formatter().parse(template) if f[1]}
            assert names <= {"kmh", "mps", "colour", "cls"}


@pytest.mark.parametrize("split", SPLITS)
def test_every_wording_parses_back_to_its_task(split: str) -> None:
    tasks = [Task(TaskKind.FOLLOW_SPEED, speed_mps=v) for v in (0.5, 4.0, 8.3, 13.9, 30.0)]
    tasks += [Task(TaskKind.STOP_BEHIND, target_colour=c, target_class=x)
              for c in COLOURS for x in TARGET_CLASSES]
    tasks += [Task(k) for k in TaskKind if k not in (TaskKind.FOLLOW_SPEED,
                                                      TaskKind.STOP_BEHIND)]
    for task in tasks:
        for i in range(len(phrasings(task.kind, split))):
            text = render_instruction(task, i, split)
            back = parse_instruction(text)
            assert back is not None and back.kind is task.kind, text
            assert (back.target_colour, back.target_class) == (task.target_colour,
                                                               task.target_class)
            if task.speed_mps is not None:  # whole km/h or m/s to one decimal
                assert back.speed_mps == pytest.approx(task.speed_mps, abs=0.15), text
            # the round trip is exact from the parsed task on
            assert render_instruction(back, i, split) == text


def test_other_sentences_do_not_parse() -> None:
    for text in ("", "turn left please", "stop behind the mauve bus", "drive at fast km/h",
                 "stop behind the red tank", "Turn left", "drive at 999 km/h",
                 "stop behind the red bus now"):
        assert parse_instruction(text) is None, text


def test_instruction_speed_reads_a_number_with_a_unit_in_any_wording() -> None:
    # every follow_speed wording of both splits names its speed; no other task names one
    for kind in TaskKind:
        task = (Task(kind, speed_mps=7.5) if kind is TaskKind.FOLLOW_SPEED else
                Task(kind, target_colour="red", target_class="truck")
                if kind is TaskKind.STOP_BEHIND else Task(kind))
        for split in ("train", "heldout"):
            for i in range(len(phrasings(kind, split))):
                text = render_instruction(task, i, split)
                got = instruction_speed(text)
                if kind is TaskKind.FOLLOW_SPEED:  # whole km/h: 27 km/h = 7.5 m/s
                    assert got == pytest.approx(7.5, abs=0.15), text
                else:
                    assert got is None, text
    cases = {"go 10 m/s": 10.0, "Drive at 36 KM/H": 10.0, "go 5m/s": 5.0,
             "at 2,5 metres per second": 2.5, "18 kilometers an hour": 5.0,
             "36 kph": 10.0, "72 kmh": 20.0, "do 10 mph": 4.4704,
             "twenty miles an hour or 20 miles per hour": 20 * 0.44704,
             "slow from 50 km/h down to 18 km/h": 5.0,  # the last mention: the target
             "drive at 200 km/h": 200 / 3.6, "go -5 m/s": -5.0,
             "take lane 2": None, "the 3 ms delay": None, "turn at 5": None,
             "km/h": None, "go fast": None, "": None, "v2.5 m/s": None}
    for text, want in cases.items():
        got = instruction_speed(text)
        assert (got is None) if want is None else got == pytest.approx(want), text


def test_bad_tasks_and_splits_are_rejected() -> None:
    with pytest.raises(ConfigError, match="speed_mps"):
        Task(TaskKind.FOLLOW_SPEED)
    with pytest.raises(ConfigError, match="speed_mps"):
        Task(TaskKind.TURN_LEFT, speed_mps=3.0)
    with pytest.raises(ConfigError, match="target_colour"):
        Task(TaskKind.STOP_BEHIND, target_colour="mauve", target_class="car")
    with pytest.raises(ConfigError, match="target_class"):
        Task(TaskKind.STOP_BEHIND, target_colour="red", target_class="tank")
    with pytest.raises(ConfigError, match="kind"):
        Task("fly")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="split"):
        phrasings(TaskKind.TURN_LEFT, "test")
    with pytest.raises(TypeError):
        render_instruction(Task(TaskKind.TURN_LEFT), 1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- episodes


def test_build_episode_is_deterministic() -> None:
    for kind in (TaskKind.STOP_BEHIND, TaskKind.TURN_LEFT):
        a, b = build_episode(kind, 3), build_episode(kind, 3)
        assert a.scenario == b.scenario and a.instruction == b.instruction
        assert a.task == b.task and a.target_actor_id == b.target_actor_id
        c = build_episode(kind, 4)
        assert c.scenario != a.scenario
    # the split changes the wording only
    train = build_episode(TaskKind.PULL_OVER, 5, "train")
    held = build_episode(TaskKind.PULL_OVER, 5, "heldout")
    assert train.scenario == held.scenario
    assert train.instruction in {render_instruction(train.task, i)
                                 for i in range(len(phrasings(TaskKind.PULL_OVER)))}
    assert held.instruction in {render_instruction(held.task, i, "heldout") for i in range(2)}


@pytest.mark.parametrize("kind", list(TaskKind))
def test_every_kind_builds_for_several_seeds(kind: TaskKind) -> None:
    for seed in range(6):
        ep = build_episode(kind, seed)
        assert ep.task.kind is kind and ep.split == "train"
        assert len(ep.scenario.agents) <= 8
        assert 12.0 <= ep.duration_s <= 16.0 and ep.scenario.duration_s == ep.duration_s
        assert ep.scenario.ego.platform == "vehicle"
        assert ep.scenario.initial_states()[0].speed == pytest.approx(EGO_INITIAL_SPEED)
        assert ep.scenario.ego.path == ep.route[0]
        for name in (*ep.route, ep.goal_path):
            assert name in ep.scenario.layout.paths
        assert ep.instruction


def test_stop_behind_names_one_unambiguous_painted_vehicle() -> None:
    for seed in range(8):
        ep = build_episode(TaskKind.STOP_BEHIND, seed)
        assert ep.target_actor_id is not None
        parked = [a for a in ep.scenario.agents if type(a.behaviour).__name__ == "Parked"]
        assert len(parked) == 3
        names = set()
        ego_x = ep.scenario.initial_states()[0].x
        for agent in parked:
            colour = [k for k, rgb in COLOURS.items()
                      if np.allclose(agent.model.parts[0].rgba[:3], rgb)]  # type: ignore[index]
            assert len(colour) == 1
            names.add((colour[0], agent.object_class.value))
            assert 30.0 <= agent.behaviour.x - ego_x <= 100.0  # type: ignore[union-attr]
        assert len(names) == 3  # every (colour, class) pair distinct
        target = next(a for a in parked if a.actor_id == ep.target_actor_id)
        paint = target.model.parts[0].rgba
        assert paint is not None
        named = next(k for k, rgb in COLOURS.items() if np.allclose(paint[:3], rgb))
        assert (ep.task.target_colour, ep.task.target_class) == (named,
                                                                 target.object_class.value)


def test_suites_and_bad_inputs() -> None:
    assert set(SUITES["default"]) == set(TaskKind)
    eps = suite_episodes("junction", [0])
    assert [e.task.kind for e in eps] == list(SUITES["junction"])
    with pytest.raises(ConfigError, match="suite"):
        suite_episodes("nope", [0])
    with pytest.raises(ConfigError, match="kind"):
        build_episode("fly", 0)
    with pytest.raises(ConfigError, match="split"):
        build_episode(TaskKind.TURN_LEFT, 0, "test")
    with pytest.raises(ConfigError, match="seed"):
        build_episode(TaskKind.TURN_LEFT, -1)


# ---------------------------------------------------------------------------- success


def _step(t_s: float, x: float, y: float, yaw: float, speed: float,
          agents: tuple[ActorState, ...] = (), collisions: tuple[int, ...] = ()) -> SimStep:
    return SimStep(round(t_s * 1e9), ActorState(0, x, y, yaw, speed), agents,
                   events=SimEvents(collisions, False))


def _feed(ep: Episode, poses: list[tuple[float, float, float, float]],
          collisions: tuple[int, ...] = ()) -> SuccessMonitor:
    mon = SuccessMonitor(ep)
    agents = tuple(ep.scenario.initial_states()[1:])
    for i, (x, y, yaw, v) in enumerate(poses):
        mon.update(_step(i * 0.05, x, y, yaw, v, agents, collisions if i == 3 else ()))
    return mon


def test_success_monitor_pull_over_and_collisions() -> None:
    ep = build_episode(TaskKind.PULL_OVER, 0)
    shoulder = ep.scenario.layout.paths["shoulder_east"]
    x, y, yaw = shoulder.point_at(ep.goal_s or 0.0)
    out = _feed(ep, [(x, y, yaw, 0.0)] * 10).outcome()
    assert out.success and out.reason == "ok" and out.to_dict()["success"] is True
    lane_y = ep.scenario.layout.paths["east_1"].point_at(0.0)[1]
    assert not _feed(ep, [(x, lane_y, yaw, 0.0)] * 10).outcome().success  # in the lane
    assert not _feed(ep, [(x, y, yaw, 2.0)] * 10).outcome().success       # still rolling
    hit = _feed(ep, [(x, y, yaw, 0.0)] * 10, collisions=(2,)).outcome()
    assert not hit.success and hit.collisions == (2,) and "collision" in hit.reason
    with pytest.raises(RuntimeError):
        SuccessMonitor(ep).outcome()


def test_success_monitor_stop_behind_gap() -> None:
    ep = build_episode(TaskKind.STOP_BEHIND, 1)
    target = next(a for a in ep.scenario.agents if a.actor_id == ep.target_actor_id)
    tx = target.behaviour.x  # type: ignore[union-attr]
    rear = tx - target.model.size[0] / 2
    lane_y = ep.scenario.layout.paths["east_1"].point_at(0.0)[1]
    good = rear - 5.0 - 2.3
    out = _feed(ep, [(good, lane_y, 0.0, 0.0)] * 5).outcome()
    assert out.success and out.metrics["gap_m"] == pytest.approx(5.0, abs=0.05)
    assert not _feed(ep, [(rear - 30.0, lane_y, 0.0, 0.0)] * 5).outcome().success
    assert not _feed(ep, [(rear + 3.0, lane_y, 0.0, 0.0)] * 5).outcome().success


def test_success_monitor_turn_and_lane_change() -> None:
    ep = build_episode(TaskKind.TURN_LEFT, 0)
    exit_lane = ep.scenario.layout.paths[ep.goal_path]
    x, y, yaw = exit_lane.point_at(15.0)
    assert _feed(ep, [(x, y, yaw, 5.0)] * 3).outcome().success
    xs, ys, yaws = ep.scenario.layout.paths["w_straight_0"].point_at(100.0)
    assert not _feed(ep, [(xs, ys, yaws, 5.0)] * 3).outcome().success
    lc = build_episode(TaskKind.CHANGE_LANE_LEFT, 0)
    target_y = lc.scenario.layout.paths["east_0"].point_at(0.0)[1]
    start_y = lc.scenario.layout.paths["east_1"].point_at(0.0)[1]
    ok = [(-100.0 + i, start_y if i < 10 else target_y, 0.0, 9.0) for i in range(60)]
    assert _feed(lc, ok).outcome().success
    late = [(-100.0 + i, start_y if i < 55 else target_y, 0.0, 9.0) for i in range(60)]
    assert not _feed(lc, late).outcome().success


# ---------------------------------------------------------------------------- sim bridge


def test_map_lanes_on_a_straight_road() -> None:
    layout = Layout.from_dict({"type": "straight_road", "lanes_per_direction": 2,
                               "shoulder_width": 3.0})
    y1 = layout.paths["east_1"].point_at(0.0)[1]
    lanes = map_lanes(layout, (10.0, y1 + 0.3, 0.05))
    roles = [lane.role for lane in lanes]
    assert roles == ["ego", "left", "shoulder"]
    for lane in lanes:
        assert lane.points.shape == (LANE_POINTS, 2) == (26, 2)
        assert np.allclose(np.diff(lane.points[:, 0]), 2.0 * math.cos(0.05), atol=0.01)
    ego = lanes[0].points
    # the ego is 0.3 m left of its lane centre: the lane is 0.3 m to its right, ahead and
    # behind; the first point is 4 m behind the projection
    i0 = int(np.argmin(np.abs(ego[:, 0])))
    assert ego[i0, 1] == pytest.approx(-0.3, abs=0.05)
    assert ego[0, 0] == pytest.approx(-4.0, abs=0.1) and ego[-1, 0] == pytest.approx(46.0,
                                                                                       abs=0.2)
    assert lanes[1].points[i0, 1] == pytest.approx(3.2, abs=0.1)
    y0 = layout.paths["east_0"].point_at(0.0)[1]
    assert [lane.role for lane in map_lanes(layout, (0.0, y0, 0.0))] == ["ego", "right"]
    # heading the other way: the westbound lanes
    yw = layout.paths["west_0"].point_at(0.0)[1]
    assert ego_lane_name(layout, (0.0, yw, math.pi)) == "west_0"
    assert map_lanes(layout, (0.0, 40.0, 0.0)) == ()  # off every lane


def test_map_lanes_at_a_junction() -> None:
    layout = Layout.from_dict({"type": "intersection", "lanes_per_direction": 1})
    x, y, yaw = layout.paths["w_in_0"].point_at(30.0)
    lanes = map_lanes(layout, (x, y, yaw))
    assert [lane.role for lane in lanes] == ["ego", "turn_left", "straight", "turn_right"]
    assert all(lane.role in LANE_ROLES for lane in lanes)
    left, right = lanes[1].points, lanes[3].points
    assert left[-1, 1] > 5.0 and right[-1, 1] < -5.0  # they turn the right ways
    # far from the junction: no movements
    long_arms = Layout.from_dict({"type": "intersection", "arm_length": 120.0})
    far = long_arms.paths["w_in_0"].point_at(10.0)
    assert [lane.role for lane in map_lanes(long_arms, far)] == ["ego"]
    # inside the junction on the left turn: the route decides between coinciding paths
    xl, yl, yawl = layout.paths["w_left"].point_at(60.3)  # 4 mm off the straight path
    assert ego_lane_name(layout, (xl, yl, yawl), route=("w_left",)) == "w_left"
    assert ego_lane_name(layout, (xl, yl, yawl)) == "w_straight_0"
    xm, ym, yawm = layout.paths["w_left"].point_at(70.0)
    assert ego_lane_name(layout, (xm, ym, yawm)) == "w_left"


def test_map_lanes_on_other_layouts_does_not_crash() -> None:
    lot = Layout.from_dict({"type": "parking_lot"})
    x, y, yaw = lot.paths["aisle_0_east"].point_at(5.0)
    assert [lane.role for lane in map_lanes(lot, (x, y, yaw))] == ["ego"]
    hall = Layout.from_dict({"type": "warehouse_aisle"})
    x, y, yaw = hall.paths["aisle"].point_at(5.0)
    assert [lane.role for lane in map_lanes(hall, (x, y, yaw))] == ["ego"]
    assert map_lanes(hall, (0.0, 2.8, math.pi / 2)) == ()


def test_ground_truth_objects_and_observation() -> None:
    ep = build_episode(TaskKind.STOP_BEHIND, 2)
    states = ep.scenario.initial_states()
    ego_actor = ActorState(0, states[0].x, states[0].y, 0.5, 8.0, 0.1)
    ego = ego_state(ego_actor, 123, "map")
    assert ego.stamp_ns == 123 and ego.frame_id == "map" and ego.child_frame_id == "base_link"
    assert ego.linear_velocity[0] == 8.0 and ego.angular_velocity[2] == 0.1
    moving = ActorState(50, states[0].x + 10.0, states[0].y, 0.0, 5.0)
    objs = ground_truth_objects(states[1:], ep.scenario, ego)
    assert [o.object_id for o in objs] == [a.actor_id for a in ep.scenario.agents]
    target = next(o for o in objs if o.object_id == ep.target_actor_id)
    assert np.allclose(target.rgb, COLOURS[ep.task.target_colour or ""])
    assert target.label == ep.task.target_class
    # velocity: ground-relative, expressed in base_link (the ego is yawed by 0.5 rad)
    agent = ep.scenario.agents[0]
    one = ground_truth_objects([ActorState(agent.actor_id, moving.x, moving.y, 0.0, 5.0)],
                               ep.scenario, ego)[0]
    assert one.velocity == pytest.approx([5.0 * math.cos(0.5), -5.0 * math.sin(0.5)])
    assert one.yaw == pytest.approx(-0.5)
    assert one.size == pytest.approx(agent.model.size)
    assert one.xy == pytest.approx([10.0 * math.cos(0.5), -10.0 * math.sin(0.5)])

    step = SimStep(500_000_000, ego_actor, tuple(states[1:]))
    obs = observation_from_step(step, ep, instruction=ep.instruction, start_stamp_ns=1_000)
    assert isinstance(obs, PlannerObservation)
    assert obs.stamp_ns == 500_001_000 == obs.instruction_stamp_ns == obs.ego.stamp_ns
    assert obs.ground_truth is not None and len(obs.ground_truth) == len(states) - 1
    assert obs.objects == () and obs.image is None and obs.instruction == ep.instruction


def _straight_trajectory(stamp: int = 0) -> Trajectory:
    t = np.arange(11, dtype=np.float64) * 0.4
    return Trajectory(stamp, "map", t, np.stack([8.0 * t, np.zeros(11)], axis=1),
                      np.zeros(11), np.full(11, 8.0) + t, "test")


def test_suite_kinds_selects_in_suite_order() -> None:
    from mm_perception.planning.suite import suite_kinds

    assert suite_kinds("default") == [k.value for k in TaskKind]
    assert suite_kinds("junction", ["go_straight", "turn_left"]) == ["turn_left", "go_straight"]
    with pytest.raises(ConfigError, match="not in suite"):
        suite_kinds("road", ["turn_left"])
    with pytest.raises(ConfigError, match="unknown suite"):
        suite_kinds("nope")
