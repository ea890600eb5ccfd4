"""Scenario side of the simulator: actor bodies, layouts and paths, scenario files, library."""

from __future__ import annotations

import copy
import math
from pathlib import Path as FsPath
from typing import Any

import numpy as np
import pytest
import yaml

from mm_perception.core.errors import ConfigError, KeyedConfigError
from mm_perception.core.types import ObjectClass
from mm_perception.sim import layouts
from mm_perception.sim.actors import (
    AGENT_CLASSES,
    SIZE_RANGES,
    build_actor_model,
    draw_colors,
    make_actor_model,
    make_ego_model,
)
from mm_perception.sim.layouts import MARKING_TOP, ROAD_TOP, Layout, Path
from mm_perception.sim.library import SCENARIOS, load_scenario
from mm_perception.sim.scenario import Crossing, LaneFollow, Parked, Scenario
from mm_perception.sim.spec import ActorModel, WorldSpec

REPO = FsPath(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "config" / "scenarios").glob("*.yaml"))


def _extent(part: Any) -> np.ndarray:
    """Independent axis-aligned half extents of a part (not spec's helper)."""
    d, n = part.size[0] / 2, part.size[2] / 2
    if part.shape == "box":
        return part.size / 2
    if part.shape == "sphere":
        return np.array([d, d, d])
    along = n + (d if part.shape == "capsule" else 0.0)
    out = np.array([d, d, d])
    out["xyz".index(part.axis)] = along
    return out


def _assert_parts_inside(model: ActorModel) -> None:
    half = model.size / 2
    for part in model.parts:
        ext = _extent(part)
        lo, hi = part.center - ext, part.center + ext
        assert np.all(lo[:2] >= -half[:2] - 1e-9) and np.all(hi[:2] <= half[:2] + 1e-9)
        assert lo[2] >= -1e-9 and hi[2] <= model.size[2] + 1e-9


# ---------------------------------------------------------------------------- actors


@pytest.mark.parametrize("cls", AGENT_CLASSES)
def test_actor_sizes_are_realistic_and_parts_inside(cls: ObjectClass) -> None:
    rng = np.random.default_rng(7)
    sizes = []
    for _ in range(60):
        model = make_actor_model(cls, rng)
        assert model.object_class == cls
        sizes.append(model.size)
        _assert_parts_inside(model)
        assert len(model.parts) >= 5
        colours = {p.rgba for p in model.parts}
        assert len(colours) >= 2
    sizes_arr = np.array(sizes)
    ranges = np.array(SIZE_RANGES[cls])
    assert np.all(sizes_arr >= ranges[:, 0]) and np.all(sizes_arr <= ranges[:, 1])
    # the draws cover the range, not one value
    assert np.all(sizes_arr.max(0) - sizes_arr.min(0) > 0.5 * (ranges[:, 1] - ranges[:, 0]))


def test_size_ranges_match_the_brief() -> None:
    assert SIZE_RANGES[ObjectClass.CAR] == ((3.8, 5.0), (1.7, 2.0), (1.4, 1.7))
    assert SIZE_RANGES[ObjectClass.TRUCK] == ((7.0, 10.0), (2.4, 2.6), (3.0, 3.8))
    assert SIZE_RANGES[ObjectClass.BUS] == ((10.0, 12.5), (2.5, 2.6), (3.0, 3.3))
    assert SIZE_RANGES[ObjectClass.PEDESTRIAN] == ((0.45, 0.7), (0.45, 0.7), (1.55, 1.95))
    assert SIZE_RANGES[ObjectClass.CYCLIST] == ((1.6, 1.9), (0.55, 0.7), (1.6, 1.9))


@pytest.mark.parametrize("cls", AGENT_CLASSES)
def test_extreme_sizes_still_fit(cls: ObjectClass) -> None:
    ranges = np.array(SIZE_RANGES[cls])
    rng = np.random.default_rng(0)
    for corner in np.ndindex(2, 2, 2):
        size = [ranges[k, c] for k, c in enumerate(corner)]
        _assert_parts_inside(build_actor_model(cls, size, draw_colors(cls, rng)))


def test_part_structure_per_class() -> None:
    rng = np.random.default_rng(1)
    car = make_actor_model(ObjectClass.CAR, rng)
    tyres = [p for p in car.parts if p.shape == "cylinder"]
    assert len(tyres) == 4 and all(p.axis == "y" for p in tyres)
    assert any(p.material.value == "glass" for p in car.parts)
    truck = make_actor_model(ObjectClass.TRUCK, rng)
    assert sum(p.shape == "cylinder" and p.axis == "y" for p in truck.parts) == 6
    ped = make_actor_model(ObjectClass.PEDESTRIAN, rng)
    assert sum(p.shape == "capsule" for p in ped.parts) == 4  # 2 legs, 2 arms
    assert sum(p.shape == "sphere" for p in ped.parts) == 1   # head on top
    head = next(p for p in ped.parts if p.shape == "sphere")
    assert head.center[2] + head.size[0] / 2 == pytest.approx(ped.size[2])
    cyc = make_actor_model(ObjectClass.CYCLIST, rng)
    wheels = [p for p in cyc.parts if p.shape == "cylinder"]
    assert len(wheels) == 2 and all(p.axis == "y" for p in wheels)


def test_ego_models() -> None:
    car = make_ego_model("vehicle")
    assert car.size.tolist() == [4.6, 1.9, 1.5]
    assert car.object_class == ObjectClass.UNKNOWN
    robot = make_ego_model("robot")
    assert robot.size.tolist() == [0.7, 0.55, 0.9]
    _assert_parts_inside(car)
    _assert_parts_inside(robot)
    with pytest.raises(KeyedConfigError, match="unknown platform 'tank'"):
        make_ego_model("tank")


def test_build_actor_model_rejects_bad_input() -> None:
    colors = draw_colors(ObjectClass.CAR, np.random.default_rng(0))
    with pytest.raises(KeyedConfigError, match="positive") as exc:
        build_actor_model(ObjectClass.CAR, [4.0, -1.8, 1.5], colors)
    assert exc.value.key == "model.size"
    with pytest.raises(KeyedConfigError) as exc:
        build_actor_model(ObjectClass.CAR, [4.0, 1.8, 1.5], {**colors, "paint": [1, 0, 0]})
    assert exc.value.key == "model.colors.paint"
    with pytest.raises(KeyedConfigError) as exc:
        build_actor_model(ObjectClass.CAR, [4.0, 1.8, 1.5], {"body": [1.5, 0, 0]})
    assert exc.value.key == "model.colors.body"


# ---------------------------------------------------------------------------- paths


def test_arc_path_matches_the_circle() -> None:
    radius, x0, y0, yaw0 = 12.0, 3.0, -2.0, 0.4
    path = Path.chain("p", x0, y0, yaw0, [(5.0, 0.0), (math.pi / 2 * radius, 1 / radius),
                                          (4.0, 0.0)])
    assert path.length == pytest.approx(9.0 + math.pi / 2 * radius)
    # start of the arc: 5 m along the initial heading; centre to the left
    ax, ay = x0 + 5 * math.cos(yaw0), y0 + 5 * math.sin(yaw0)
    cx, cy = ax - radius * math.sin(yaw0), ay + radius * math.cos(yaw0)
    s = np.linspace(5.0, 5.0 + math.pi / 2 * radius, 50)
    poses = path.poses_at(s)
    assert np.allclose(np.hypot(poses[:, 0] - cx, poses[:, 1] - cy), radius, atol=1e-9)
    assert np.allclose(poses[:, 2], yaw0 + (s - 5.0) / radius, atol=1e-12)
    assert np.allclose(path.curvatures_at(s[1:-1]), 1 / radius)
    end = path.point_at(path.length)
    assert end[2] == pytest.approx(yaw0 + math.pi / 2)
    # closest: points off the arc by a known amount (inside the curve = left = positive)
    for off in (-1.5, 0.0, 0.7):
        for sq in (6.0, 12.3, 19.0):
            x, y, yaw = path.point_at(sq)
            qx, qy = x - off * math.sin(yaw), y + off * math.cos(yaw)
            s_hat, lat = path.closest(qx, qy)
            assert s_hat == pytest.approx(sq, abs=1e-9)
            assert lat == pytest.approx(off, abs=1e-9)
    # clipping and points beyond the end
    assert path.point_at(-3.0) == pytest.approx((x0, y0, yaw0))
    s_end, _ = path.closest(end[0] + 10 * math.cos(end[2]), end[1] + 10 * math.sin(end[2]))
    assert s_end == pytest.approx(path.length)


def test_right_turn_and_polyline_paths() -> None:
    path = Path.chain("r", 0.0, 0.0, 0.0, [(math.pi / 2 * 5.0, -1 / 5.0)])
    assert path.point_at(path.length) == pytest.approx((5.0, -5.0, -math.pi / 2))
    poly = Path.polyline("poly", [[0, 0], [3, 4], [3, 10]])
    assert poly.length == pytest.approx(11.0)
    assert poly.point_at(5.0)[:2] == pytest.approx((3.0, 4.0))
    assert poly.closest(4.0, 7.0) == pytest.approx((8.0, -1.0))
    with pytest.raises(KeyedConfigError):
        Path.polyline("bad", [[0, 0], [0, 0]])


# ---------------------------------------------------------------------------- layouts


ALL_LAYOUTS = [layouts.straight_road(), layouts.intersection(),
               layouts.intersection(lanes_per_direction=2), layouts.parking_lot(aisles=2),
               layouts.warehouse_aisle()]


@pytest.mark.parametrize("layout", ALL_LAYOUTS, ids=lambda lay: lay.kind)
def test_static_boxes_heights(layout: Layout) -> None:
    boxes = layout.static_boxes()
    WorldSpec(static=boxes, actors={}, ego=make_ego_model("vehicle"))  # unique names
    tops = {b.name: b.center[2] + b.size[2] / 2 for b in boxes}
    slabs = [b for b in boxes if b.material.value in ("asphalt",) or b.name == "floor"]
    assert slabs
    assert all(tops[b.name] == pytest.approx(ROAD_TOP) for b in slabs)
    marks = [b for b in boxes if b.material.value == "lane_marking"]
    assert marks and all(tops[b.name] == pytest.approx(MARKING_TOP) for b in marks)
    # nothing floats (but shelf boards and the cargo on them)
    assert all(b.center[2] - b.size[2] / 2 <= ROAD_TOP + 1e-9 for b in boxes
               if not b.name.startswith(("board_", "cargo_")))
    xmin, xmax, ymin, ymax = layout.bounds
    for b in boxes:
        assert xmin - 1e-6 <= b.center[0] <= xmax + 1e-6 and ymin - 1e-6 <= b.center[1] <= ymax
    assert layout.half_extent >= max(abs(v) for v in layout.bounds)


@pytest.mark.parametrize("layout", ALL_LAYOUTS, ids=lambda lay: lay.kind)
def test_paths_lie_on_the_drivable_area(layout: Layout) -> None:
    for name, path in layout.paths.items():
        poses = path.poses_at(np.linspace(0, path.length, 400))
        # centre line and a car-wide band (+-0.9 m) stay on the drivable area
        for off in (-0.9, 0.0, 0.9):
            pts = poses[:, :2] + off * np.stack([-np.sin(poses[:, 2]), np.cos(poses[:, 2])], 1)
            assert layout.is_drivable(pts).all(), (name, off)


def test_off_road_detection_per_layout() -> None:
    road = layouts.straight_road(lanes_per_direction=2, lane_width=3.5, length=400,
                                 shoulder_width=2.5, sidewalk_width=2.0)
    pts = np.array([[0, -1.75], [0, 8.9], [0, 9.6], [0, 30], [199, 0], [201, 0]])
    assert road.is_drivable(pts).tolist() == [True, True, False, False, True, False]
    assert road.ground_height(np.array([[0, 10.0], [0, 0], [0, 40]])).tolist() == \
        pytest.approx([0.15, ROAD_TOP, 0.0])
    junction = layouts.intersection(lanes_per_direction=1, lane_width=3.5, corner_radius=6.0)
    pts = np.array([[0, 0], [-9, 9], [-30, 1], [-30, 5], [-30, 30], [3, -40], [5, -40]])
    assert junction.is_drivable(pts).tolist() == [True, True, True, False, False, True, False]
    lot = layouts.parking_lot()
    spot = lot.spots[3]
    assert lot.is_drivable(np.array([spot[:2], [0, 0], [0, 12.0], [30, 0]])).tolist() == \
        [True, True, False, False]
    hall = layouts.warehouse_aisle(length=40, aisle_width=3.0, shelf_depth=1.2)
    pts = np.array([[5, 0], [5, 2.0], [0, 2.0], [5, 3.8], [21, 0], [25, 0]])
    assert hall.is_drivable(pts).tolist() == [True, False, True, True, True, False]


def test_intersection_movements_connect_the_right_lanes() -> None:
    for n in (1, 2):
        lay = layouts.intersection(lanes_per_direction=n)
        for k, arm in enumerate(layouts.ARMS):
            exits = {"left": layouts.ARMS[(k + 3) % 4], "right": layouts.ARMS[(k + 1) % 4],
                     "straight": layouts.ARMS[(k + 2) % 4]}
            for direction, lanes in (("left", [0]), ("right", [n - 1]),
                                     ("straight", list(range(n)))):
                for lane in lanes:
                    path = lay.paths[layouts.intersection_path(arm, direction, lane)]
                    start = path.point_at(0.0)
                    s_in, lat_in = lay.paths[f"{arm}_in_{lane}"].closest(*start[:2])
                    assert s_in == pytest.approx(0.0) and lat_in == pytest.approx(0.0, abs=1e-9)
                    end = path.point_at(path.length)
                    out = lay.paths[f"{exits[direction]}_out_{lane}"]
                    s_out, lat_out = out.closest(*end[:2])
                    assert s_out == pytest.approx(out.length, abs=1e-6)
                    assert lat_out == pytest.approx(0.0, abs=1e-9)
                    turn = {"left": math.pi / 2, "right": -math.pi / 2, "straight": 0.0}
                    assert math.remainder(end[2] - start[2] - turn[direction],
                                          2 * math.pi) == pytest.approx(0.0, abs=1e-9)


def test_parking_spots() -> None:
    lot = layouts.parking_lot(aisles=2, spots_per_row=6, spot_width=2.7, spot_length=5.5)
    spots = np.array(lot.spots)
    assert spots.shape == (24, 3)
    d = np.hypot(*(spots[:, None, :2] - spots[None, :, :2]).transpose(2, 0, 1))
    assert d[~np.eye(24, dtype=bool)].min() == pytest.approx(2.7)
    assert set(np.round(np.abs(spots[:, 2]), 6)) == {round(math.pi / 2, 6)}
    assert lot.is_drivable(spots[:, :2]).all()


def test_layout_from_dict_errors() -> None:
    with pytest.raises(KeyedConfigError) as exc:
        Layout.from_dict({"type": "roundabout"})
    assert exc.value.key == "layout.type" and "straight_road" in str(exc.value)
    with pytest.raises(KeyedConfigError) as exc:
        Layout.from_dict({"type": "straight_road", "lane_width": -3})
    assert exc.value.key == "layout.lane_width"
    with pytest.raises(KeyedConfigError) as exc:
        Layout.from_dict({"type": "parking_lot", "aisles": 1.5})
    assert exc.value.key == "layout.aisles"
    with pytest.raises(KeyedConfigError) as exc:
        Layout.from_dict({"type": "warehouse_aisle", "height": 3})
    assert exc.value.key == "layout.height"
    lay = Layout.from_dict({"type": "intersection", "lanes_per_direction": 2})
    assert Layout.from_dict(lay.to_dict()).to_dict() == lay.to_dict()


# ---------------------------------------------------------------------------- scenarios


BASE: dict[str, Any] = {
    "name": "t",
    "layout": {"type": "straight_road", "lanes_per_direction": 2, "length": 300.0},
    "lighting": "random",
    "ego": {"platform": "vehicle", "path": "east_1", "s0": 20.0, "cruise_speed": 10.0},
    "agents": [
        {"class": "car", "behaviour": {"type": "lane_follow", "path": "east_1", "s0": 50.0,
                                       "speed": 10.0, "speed_variation": 0.1}},
        {"class": "truck", "behaviour": {"type": "lane_follow", "path": "east_0", "s0": 30.0,
                                         "speed": 9.0}},
        {"class": "bus", "behaviour": {"type": "lane_follow", "path": "west_0", "s0": 100.0,
                                       "speed": 9.0, "stop_at_s": 150.0}},
        {"class": "car", "size": [4.2, 1.8, 1.5], "colors": {"body": [0.1, 0.2, 0.9]},
         "behaviour": {"type": "parked", "path": "shoulder_east", "s": 80.0}},
        {"class": "pedestrian", "behaviour": {"type": "crossing", "start": [120.0, -10.0],
                                              "end": [120.0, 10.0], "start_delay_s": 2.0}},
        {"class": "cyclist", "behaviour": {"type": "lane_follow", "path": "shoulder_west",
                                           "s0": 10.0, "speed": 5.0}},
    ],
}


def test_scenario_is_a_function_of_description_and_seed() -> None:
    a = Scenario.from_dict(BASE, seed=3)
    b = Scenario.from_dict(copy.deepcopy(BASE), seed=3)
    c = Scenario.from_dict(BASE, seed=4)
    assert a == b and a != c
    assert [ag.model.size.tolist() for ag in a.agents] == \
        [ag.model.size.tolist() for ag in b.agents]
    assert [ag.model.size.tolist() for ag in a.agents] != \
        [ag.model.size.tolist() for ag in c.agents]
    assert a.lighting.sun_direction.tolist() != c.lighting.sun_direction.tolist()
    # given values are kept, and do not shift the other draws
    assert a.agents[3].model.size.tolist() == [4.2, 1.8, 1.5]
    assert a.agents[3].model.parts[0].rgba == (0.1, 0.2, 0.9, 1.0)
    other = copy.deepcopy(BASE)
    other["agents"][0]["size"] = [4.0, 1.8, 1.5]
    d = Scenario.from_dict(other, seed=3)
    assert d.agents[1].model.size.tolist() == a.agents[1].model.size.tolist()
    # the file's seed is used when no seed is given
    assert Scenario.from_dict({**BASE, "seed": 4}) == c


def test_scenario_contents() -> None:
    sc = Scenario.from_dict(BASE, seed=0)
    assert [a.actor_id for a in sc.agents] == [1, 2, 3, 4, 5, 6]
    assert isinstance(sc.agents[0].behaviour, LaneFollow)
    assert isinstance(sc.agents[3].behaviour, Parked)
    assert isinstance(sc.agents[4].behaviour, Crossing)
    states = sc.initial_states()
    assert [s.actor_id for s in states] == [0, 1, 2, 3, 4, 5, 6]
    ego = states[0]
    assert (ego.x, ego.y, ego.yaw, ego.speed) == pytest.approx(
        (-150 + 20, -5.25, 0.0, sc.ego.target_speed(0.0)))
    assert ego.z == pytest.approx(ROAD_TOP)
    assert states[5].z == pytest.approx(layouts.KERB_TOP)  # the pedestrian waits on the kerb
    assert states[5].speed == 0.0 and states[1].speed > 0
    world = sc.world_spec()
    assert set(world.actors) == {1, 2, 3, 4, 5, 6}
    assert world.ego is sc.ego.model
    assert world.half_extent_m >= 150.0
    assert sc.models()[0] is sc.ego.model


def test_yaml_round_trip(tmp_path: FsPath) -> None:
    for sc in [Scenario.from_dict(BASE, seed=5), SCENARIOS["intersection"](2),
               SCENARIOS["warehouse"](1)]:
        path = tmp_path / f"{sc.name}.yaml"
        sc.to_yaml(path)
        back = Scenario.from_yaml(path)
        assert back == sc
        # the written file holds everything: another seed gives the same scene but the seed
        other = Scenario.from_yaml(path, seed=sc.seed + 1)
        assert other.to_dict()["agents"] == sc.to_dict()["agents"]
        for a, b in zip(back.agents, sc.agents, strict=True):
            assert np.array_equal(a.model.size, b.model.size)
            assert [p.rgba for p in a.model.parts] == [p.rgba for p in b.model.parts]
        assert np.array_equal(back.lighting.sun_direction, sc.lighting.sun_direction)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_files_load(path: FsPath) -> None:
    sc = load_scenario(str(path), seed=1)
    assert sc.agents and sc == Scenario.from_yaml(path, seed=1)
    assert sc != Scenario.from_yaml(path, seed=2)


def _mutate(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node: Any = out
    parts = dotted.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


_DELETE = object()

BAD_CASES = [
    ("agents[3].class", "tank", "agents[3].class", "unknown class 'tank' (allowed: car, truck, "
     "bus, pedestrian, cyclist)"),
    ("agents[3].size", [4.0, -1.0, 1.5], "agents[3].size", "positive"),
    ("agents[3].size", [4.0, 1.5], "agents[3].size", "[length, width, height]"),
    ("agents[0].behaviour.type", "fly", "agents[0].behaviour.type", "unknown behaviour 'fly'"),
    ("agents[0].behaviour.path", "east_7", "agents[0].behaviour.path", "unknown path 'east_7'"),
    ("agents[0].behaviour.speed", -3.0, "agents[0].behaviour.speed", "must be > 0"),
    ("agents[0].behaviour.s0", 900.0, "agents[0].behaviour.s0", "beyond the end"),
    ("agents[0].behaviour.speed_variation", 0.9, "agents[0].behaviour.speed_variation", "<= 0.5"),
    ("agents[0].behaviour.stop_at_s", 10.0, "agents[0].behaviour.stop_at_s", "ahead of s0"),
    ("agents[0].behaviour.speed", _DELETE, "agents[0].behaviour.speed", "missing"),
    ("agents[0].colour", [1, 0, 0], "agents[0].colour", "unknown key"),
    ("agents[3].colors", {"paint": [1, 0, 0]}, "agents[3].colors.paint", "unknown colour role"),
    ("agents[3].colors", {"body": [2, 0, 0]}, "agents[3].colors.body", "in [0, 1]"),
    ("agents[3].behaviour.s", 9999.0, "agents[3].behaviour.s", "<="),
    ("agents[3].behaviour", {"type": "parked", "spot": 1}, "agents[3].behaviour.spot",
     "no parking spots"),
    ("agents[3].behaviour", {"type": "parked", "pose": [1, 2, 3], "spot": 1},
     "agents[3].behaviour", "exactly one of"),
    ("agents[1].behaviour", {"type": "crossing", "start": [0, -9], "end": [0, 9]},
     "agents[1].behaviour.type", "not a truck"),
    ("agents[4].behaviour.end", [120.0, -10.1], "agents[4].behaviour.end", "at least 0.5 m"),
    ("agents[4].behaviour.crosswalk", "zebra", "agents[4].behaviour.crosswalk",
     "give a crosswalk or start/end"),
    ("agents[0].behaviour", {"type": "turn", "approach": "w", "direction": "left", "speed": 5},
     "agents[0].behaviour.type", "needs an intersection"),
    ("agents[1].behaviour", {"type": "lane_follow", "path": "east_1", "s0": 53.0, "speed": 9},
     "agents[1]", "overlaps agents[0]"),
    ("agents[0].behaviour.s0", 21.0, "agents[0]", "overlaps the ego"),
    ("agents", {"class": "car"}, "agents", "list"),
    ("ego.s0", 1.0, "ego.s0", "off the drivable area"),
    ("agents[1].behaviour.s0", 0.5, "agents[1].behaviour.s0", "off the drivable area"),
    ("layout.type", "moon", "layout.type", "unknown layout type 'moon'"),
    ("layout.lanes_per_direction", 0, "layout.lanes_per_direction", "[1, 4]"),
    ("lighting", "dawn", "lighting", "unknown lighting 'dawn'"),
    ("lighting", {"sun_direction": [0, 0, 1]}, "lighting.sun_direction", "point down"),
    ("lighting", {"sun_direction": [0, 0, -1], "diffuse": 2.0}, "lighting.diffuse", "<= 1"),
    ("ego.platform", "boat", "ego.platform", "unknown platform 'boat'"),
    ("ego.cruise_speed", _DELETE, "ego.cruise_speed", "missing"),
    ("ego.cruise_speed", 80.0, "ego.cruise_speed", "<= 40"),
    ("ego.path", "nowhere", "ego.path", "unknown path 'nowhere'"),
    ("ego.wheelbase", 0.0, "ego.wheelbase", "> 0"),
    ("ego.gear", 3, "ego.gear", "unknown key"),
    ("seed", -1, "seed", ">= 0"),
    ("weather", "rain", "weather", "unknown key"),
    ("duration_s", 0, "duration_s", "> 0"),
]


@pytest.mark.parametrize(("where", "value", "key", "message"), BAD_CASES,
                         ids=[c[0] + "=" + repr(c[1])[:20] for c in BAD_CASES])
def test_validation_errors_name_the_key(where: str, value: Any, key: str, message: str) -> None:
    bad = _mutate(BASE, where, value)
    with pytest.raises(KeyedConfigError) as exc:
        Scenario.from_dict(bad, source="scene.yaml")
    assert exc.value.key == key
    assert str(exc.value).startswith(f"scene.yaml: {key}: ")
    assert message in str(exc.value)


def test_error_message_from_a_file(tmp_path: FsPath) -> None:
    bad = _mutate(BASE, "agents[3].class", "tank")
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as exc:
        Scenario.from_yaml(path)
    assert str(exc.value) == (f"{path}: agents[3].class: unknown class 'tank' (allowed: car, "
                              "truck, bus, pedestrian, cyclist)")
    path.write_text("layout: {type: straight_road}\nlayout: {type: intersection}\n")
    with pytest.raises(ConfigError, match="duplicate key"):
        Scenario.from_yaml(path)
    path.write_text("agents: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        Scenario.from_yaml(path)
    with pytest.raises(ConfigError, match="not found"):
        Scenario.from_yaml(tmp_path / "missing.yaml")


def test_turn_and_crosswalk_sugar() -> None:
    data = {"layout": {"type": "intersection"},
            "ego": {"platform": "vehicle", "path": "w_straight_0", "s0": 5.0,
                    "cruise_speed": 8.0},
            "agents": [
                {"class": "car", "behaviour": {"type": "turn", "approach": "s",
                                               "direction": "left", "s0": 10, "speed": 7}},
                {"class": "pedestrian", "behaviour": {"type": "crossing",
                                                      "crosswalk": "crosswalk_n"}},
                {"class": "pedestrian", "behaviour": {"type": "crossing",
                                                      "crosswalk": "crosswalk_n",
                                                      "reverse": True}}]}
    sc = Scenario.from_dict(data)
    b0, b1, b2 = (a.behaviour for a in sc.agents)
    assert isinstance(b0, LaneFollow) and b0.path == "s_left"
    assert isinstance(b1, Crossing) and isinstance(b2, Crossing)
    assert b1.speed == 1.4
    # opposite directions on the same crosswalk, each keeping right: 2 * offset apart
    gap = np.hypot(*(np.array(b1.start) - np.array(b2.end)))
    assert gap == pytest.approx(2 * sc.layout.crossing_offset)
    with pytest.raises(KeyedConfigError) as exc:
        Scenario.from_dict(_mutate(data, "agents[0].behaviour.lane", 0))
    assert exc.value.key == "agents[0].behaviour.lane"
    with pytest.raises(KeyedConfigError) as exc:
        Scenario.from_dict(_mutate(data, "agents[0].behaviour.approach", "x"))
    assert exc.value.key == "agents[0].behaviour.approach"


# ---------------------------------------------------------------------------- library


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_library_scenarios_build_and_are_seeded(name: str) -> None:
    a, b, c = SCENARIOS[name](0), SCENARIOS[name](0), SCENARIOS[name](1)
    assert a == b and a != c
    assert a.seed == 0 and c.seed == 1
    assert a.world_spec().actors
    assert Scenario.from_dict(a.to_dict()) == a


def test_highway_reference_scenario() -> None:
    sc = load_scenario("highway", 0)
    assert len(sc.agents) >= 10
    assert sc.ego.platform == "vehicle"
    classes = {a.object_class for a in sc.agents}
    assert {ObjectClass.CAR, ObjectClass.TRUCK, ObjectClass.BUS} <= classes
    behaviours = [a.behaviour for a in sc.agents]
    assert any(isinstance(b, LaneFollow) and b.stop_at_time_s is not None for b in behaviours)
    parked = [b for b in behaviours if isinstance(b, Parked)]
    assert parked and sc.layout.paths["shoulder_east"].closest(parked[0].x, parked[0].y)[1] \
        == pytest.approx(0.0, abs=1e-9)
    speeds = {round(b.speed, 1) for b in behaviours if isinstance(b, LaneFollow)}
    assert len(speeds) >= 5


def test_intersection_and_other_scenarios_have_their_cast() -> None:
    sc = load_scenario("intersection", 0)
    paths = {a.behaviour.path for a in sc.agents if isinstance(a.behaviour, LaneFollow)}
    assert any(p.endswith("_left") for p in paths) and any(p.endswith("_right") for p in paths)
    assert any("_straight_" in p for p in paths)
    crossing = {a.object_class for a in sc.agents if isinstance(a.behaviour, Crossing)}
    assert crossing == {ObjectClass.PEDESTRIAN, ObjectClass.CYCLIST}
    lot = load_scenario("parking_lot", 0)
    assert sum(isinstance(a.behaviour, Parked) for a in lot.agents) >= 10
    assert any(isinstance(a.behaviour, LaneFollow) for a in lot.agents)
    hall = load_scenario("warehouse", 0)
    assert hall.ego.platform == "robot" and hall.layout.kind == "warehouse_aisle"
    assert all(a.object_class == ObjectClass.PEDESTRIAN for a in hall.agents)


def test_random_scenarios_vary_the_layout() -> None:
    kinds = {SCENARIOS["random"](seed).layout.kind for seed in range(12)}
    assert len(kinds) >= 3
    assert SCENARIOS["random"](5) == load_scenario("random", 5)


def test_load_scenario_errors() -> None:
    with pytest.raises(ConfigError) as exc:
        load_scenario("autobahn", 0)
    for name in SCENARIOS:
        assert name in str(exc.value)
    with pytest.raises(ConfigError, match="seed"):
        load_scenario("highway", -1)
    with pytest.raises(ConfigError, match="not found"):
        load_scenario("does/not/exist.yaml", 0)
