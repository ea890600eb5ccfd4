"""Named scenarios and random scenario generation.

Every entry of :data:`SCENARIOS` maps a seed to a :class:`~mm_perception.sim.scenario.Scenario`.
The seed jitters start positions and speeds a little (the cast and the story stay the same)
and draws sizes, colours and speed-profile phases; ``random`` also draws the layout and the
cast. Each scenario is built as a description mapping and validated by
:meth:`Scenario.from_dict`, so ``scenario.to_dict()`` written to YAML reproduces it.

``highway`` with seed 0 is the project's reference scenario (14 agents, ego vehicle).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from mm_perception.core.errors import ConfigError, KeyedConfigError
from mm_perception.sim.layouts import ARMS, Layout, intersection_path
from mm_perception.sim.scenario import Scenario

Spec = dict[str, Any]


def _jitter(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 1000 + tag]))


def _follow(path: str, s0: float, speed: float, **extra: Any) -> Spec:
    return {"type": "lane_follow", "path": path, "s0": round(s0, 3), "speed": round(speed, 3),
            **extra}


def _build(name: str, seed: int, data: Spec) -> Scenario:
    return Scenario.from_dict({"name": name, **data}, source=f"library:{name}", seed=seed)


def highway(seed: int) -> Scenario:
    """Straight 2+2-lane road, 800 m: the ego cruises in the right lane behind a car and a
    truck; cars and a bus overtake on the left, where one car brakes to a stop (at 5 s, for
    6 s); a car is parked on the shoulder; oncoming traffic of cars, a truck and a bus."""
    r = _jitter(seed, 1)

    def j(s: float, v: float) -> tuple[float, float]:
        return s + r.uniform(-3.0, 3.0), v + r.uniform(-0.8, 0.8)

    agents: list[Spec] = []

    def add(cls: str, path: str, s: float, v: float, var: float = 0.08, **extra: Any) -> None:
        s0, v0 = j(s, v)
        agents.append({"class": cls, "behaviour": _follow(path, s0, v0, speed_variation=var,
                                                          **extra)})

    add("car", "east_1", 135, 12.5)
    add("truck", "east_1", 185, 11.0, 0.04)
    add("car", "east_1", 240, 12.0)
    add("car", "east_0", 75, 16.0)
    add("bus", "east_0", 125, 14.0, 0.04)
    add("car", "east_0", 190, 15.0, 0.0, stop_at_time_s=5.0, stop_duration_s=6.0)
    add("car", "east_0", 262, 16.0)
    agents.append({"class": "car", "behaviour": {"type": "parked", "path": "shoulder_east",
                                                 "s": round(215 + r.uniform(-5, 5), 3)}})
    add("car", "west_0", 370, 14.0)
    add("truck", "west_1", 320, 11.0, 0.04)
    add("car", "west_1", 420, 13.0)
    add("car", "west_0", 470, 15.0)
    add("bus", "west_1", 490, 12.0, 0.04)
    add("car", "west_0", 530, 14.0)
    return _build("highway", seed, {
        "description": highway.__doc__ or "", "duration_s": 20.0,
        "layout": {"type": "straight_road", "lanes_per_direction": 2, "lane_width": 3.5,
                   "length": 800.0},
        "lighting": "random",
        "ego": {"platform": "vehicle", "path": "east_1", "s0": round(100 + r.uniform(-2, 2), 3),
                "cruise_speed": 13.0, "speed_variation": 0.05},
        "agents": agents})


def intersection(seed: int) -> Scenario:
    """Four-way junction (one lane each way): the ego goes straight through from the west
    while cars, a truck and a bus turn left, right or go straight from every arm; pedestrians
    use the crosswalks (one crosses in front of the ego) and a cyclist rides over one."""
    r = _jitter(seed, 2)

    def follow(approach: str, direction: str, s: float, v: float) -> Spec:
        return _follow(intersection_path(approach, direction), s + r.uniform(-2, 2),
                       v + r.uniform(-0.5, 0.5), speed_variation=0.05)

    def cross(name: str, delay: float, reverse: bool = False, **extra: Any) -> Spec:
        return {"type": "crossing", "crosswalk": name, "reverse": reverse,
                "start_delay_s": round(delay + r.uniform(0, 1.0), 3), **extra}

    agents = [
        {"class": "car", "behaviour": follow("s", "left", 20, 8.0)},
        {"class": "car", "behaviour": follow("e", "right", 30, 8.0)},
        {"class": "car", "behaviour": follow("n", "straight", 35, 9.0)},
        {"class": "truck", "behaviour": follow("e", "straight", 10, 8.0)},
        {"class": "bus", "behaviour": follow("n", "left", 10, 7.0)},
        {"class": "car", "behaviour": follow("w", "left", 7, 8.0)},
        {"class": "car", "behaviour": follow("s", "straight", 7, 9.0)},
        {"class": "pedestrian", "behaviour": cross("crosswalk_w", 2.0)},
        {"class": "pedestrian", "behaviour": cross("crosswalk_n", 0.0, True, speed=1.3)},
        {"class": "pedestrian", "behaviour": cross("crosswalk_e", 4.0)},
        {"class": "cyclist", "behaviour": cross("crosswalk_s", 1.0)},
        {"class": "pedestrian", "behaviour": cross("crosswalk_s", 6.0, True)},
    ]
    return _build("intersection", seed, {
        "description": intersection.__doc__ or "", "duration_s": 20.0,
        "layout": {"type": "intersection", "lanes_per_direction": 1, "arm_length": 60.0},
        "lighting": "random",
        "ego": {"platform": "vehicle", "path": "w_straight_0",
                "s0": round(25 + r.uniform(-2, 2), 3), "cruise_speed": 9.0,
                "speed_variation": 0.05},
        "agents": agents})


def parking_lot(seed: int) -> Scenario:
    """Parking lot with one aisle between two rows of 12 spots, about two thirds taken by
    parked cars; the ego rolls along the aisle behind a car that stops (as if to park) and
    goes on, a car comes the other way, pedestrians cross the aisle."""
    r = _jitter(seed, 3)
    n_spots = 24
    taken = sorted(int(k) for k in r.choice(n_spots, size=16, replace=False))
    agents: list[Spec] = [{"class": "car", "behaviour": {"type": "parked", "spot": k}}
                          for k in taken]
    agents += [
        {"class": "car", "behaviour": _follow("aisle_0_east", 18 + r.uniform(-1, 1), 3.0,
                                              stop_at_s=round(28 + r.uniform(-1, 1), 3),
                                              stop_duration_s=4.0)},
        {"class": "car", "behaviour": _follow("aisle_0_west", 8 + r.uniform(-1, 1),
                                              2.5 + r.uniform(-0.3, 0.3))},
        {"class": "pedestrian", "behaviour": {"type": "crossing", "crosswalk": "aisle_0_cross_1",
                                              "start_delay_s": round(3 + r.uniform(0, 2), 3)}},
        {"class": "pedestrian", "behaviour": {"type": "crossing", "crosswalk": "aisle_0_cross_2",
                                              "reverse": True,
                                              "start_delay_s": round(1 + r.uniform(0, 2), 3)}},
        {"class": "pedestrian", "behaviour": {"type": "crossing", "crosswalk": "aisle_0_cross_0",
                                              "speed": 1.1,
                                              "start_delay_s": round(6 + r.uniform(0, 2), 3)}},
    ]
    return _build("parking_lot", seed, {
        "description": parking_lot.__doc__ or "", "duration_s": 20.0,
        "layout": {"type": "parking_lot", "aisles": 1, "spots_per_row": 12},
        "lighting": "random",
        "ego": {"platform": "vehicle", "path": "aisle_0_east", "s0": 3.0, "cruise_speed": 3.0,
                "speed_variation": 0.1},
        "agents": agents})


def warehouse(seed: int) -> Scenario:
    """Warehouse aisle between pallet shelves: the robot drives down the aisle; a worker
    crosses it through the shelf gap in front of the robot, others cross at the far end and
    behind it, one walks along the aisle edge towards it and one stands picking behind a
    shelf row."""
    r = _jitter(seed, 4)
    agents: list[Spec] = [
        {"class": "pedestrian", "behaviour": {"type": "crossing", "crosswalk": "gap",
                                              "speed": 1.2,
                                              "start_delay_s": round(12 + r.uniform(0, 1), 3)}},
        {"class": "pedestrian", "behaviour": {"type": "crossing", "crosswalk": "end_east",
                                              "speed": 1.0}},
        {"class": "pedestrian", "behaviour": {"type": "crossing", "start": [12.0, -1.1],
                                              "end": [-12.0, -1.1], "speed": 1.1,
                                              "start_delay_s": round(r.uniform(0, 2), 3)}},
        {"class": "pedestrian", "behaviour": {"type": "crossing", "crosswalk": "end_west",
                                              "reverse": True,
                                              "start_delay_s": round(3 + r.uniform(0, 1), 3)}},
        {"class": "pedestrian", "behaviour": {"type": "parked",
                                              "pose": [round(5 + r.uniform(-2, 2), 3), 3.65,
                                                       0.0]}},
    ]
    return _build("warehouse", seed, {
        "description": warehouse.__doc__ or "", "duration_s": 20.0,
        "layout": {"type": "warehouse_aisle", "length": 40.0, "aisle_width": 3.0},
        "lighting": {"sun_direction": [0.0, 0.0, -1.0], "diffuse": 0.55, "ambient": 0.45,
                     "sky_rgb": [0.35, 0.35, 0.38]},
        "ego": {"platform": "robot", "path": "aisle", "s0": 2.0, "cruise_speed": 1.2,
                "speed_variation": 0.1},
        "agents": agents})


def urban(seed: int) -> Scenario:
    """A busier junction of two 2+2-lane roads: straight traffic on both lanes of every arm,
    turns from the inner and outer lanes, pedestrians on all crosswalks, two cyclists."""
    r = _jitter(seed, 5)
    agents: list[Spec] = []
    classes = ("car", "car", "car", "truck", "bus", "car")
    for k, arm in enumerate(ARMS):
        moves = [("straight", 0, 32.0), ("straight", 1, 28.0), ("left", 0, 12.0),
                 ("right", 1, 8.0)]
        for m, (direction, lane, s) in enumerate(moves):
            if (k + m) % 4 == 3:
                continue  # leave some gaps
            cls = classes[(3 * k + m) % len(classes)]
            path = intersection_path(arm, direction, lane)
            agents.append({"class": cls, "behaviour": _follow(
                path, s + r.uniform(-2, 2), 8.0 + r.uniform(-1, 1), speed_variation=0.05)})
        agents.append({"class": "pedestrian", "behaviour": {
            "type": "crossing", "crosswalk": f"crosswalk_{arm}", "reverse": bool(k % 2),
            "start_delay_s": round(2.0 * k + r.uniform(0, 1.5), 3)}})
    # the cyclists start on the kerb opposite the pedestrian of their crosswalk
    agents.append({"class": "cyclist", "behaviour": {"type": "crossing",
                                                     "crosswalk": "crosswalk_e",
                                                     "reverse": True, "start_delay_s": 8.0}})
    agents.append({"class": "cyclist", "behaviour": {"type": "crossing",
                                                     "crosswalk": "crosswalk_n",
                                                     "start_delay_s": 3.0}})
    return _build("urban", seed, {
        "description": urban.__doc__ or "", "duration_s": 20.0,
        "layout": {"type": "intersection", "lanes_per_direction": 2, "arm_length": 60.0},
        "lighting": "random",
        "ego": {"platform": "vehicle", "path": "w_straight_0", "s0": 40.0, "cruise_speed": 8.0},
        "agents": agents})


# ---------------------------------------------------------------------------- random


def _spaced(r: np.random.Generator, count: int, lo: float, hi: float, gap: float) -> list[float]:
    """Up to ``count`` sorted positions in [lo, hi] at least ``gap`` apart."""
    if hi <= lo:
        return []
    slots = int((hi - lo) // gap)
    count = min(count, slots)
    if count <= 0:
        return []
    picks = np.sort(r.choice(slots, size=count, replace=False))
    return [float(lo + (p + r.uniform(0.1, 0.9)) * gap) for p in picks]


def _vehicle_class(r: np.random.Generator) -> str:
    return str(r.choice(["car", "car", "car", "car", "truck", "bus"]))


def _random_road(r: np.random.Generator) -> Spec:
    n = int(r.integers(1, 4))
    length = float(r.choice([400.0, 500.0, 600.0]))
    ego_s = 60.0
    agents: list[Spec] = []
    for d in ("east", "west"):
        for i in range(n):
            lane = f"{d}_{i}"
            lo, hi = (ego_s + 12.0, length * 0.55) if (d == "east" and i == n - 1) else \
                (8.0, length * 0.6)
            for s in _spaced(r, int(r.integers(1, 4)), lo, hi, 30.0):
                extra: dict[str, Any] = {"speed_variation": round(float(r.uniform(0, 0.12)), 3)}
                if r.uniform() < 0.15:
                    extra = {"stop_at_time_s": round(float(r.uniform(2, 12)), 3),
                             "stop_duration_s": round(float(r.uniform(2, 8)), 3)}
                agents.append({"class": _vehicle_class(r), "behaviour": _follow(
                    lane, s, float(r.uniform(9, 17)), **extra)})
    for s in _spaced(r, int(r.integers(0, 3)), 20.0, length - 20.0, 40.0):
        agents.append({"class": "car", "behaviour": {"type": "parked", "path": "shoulder_east",
                                                     "s": round(s, 3)}})
    return {"layout": {"type": "straight_road", "lanes_per_direction": n, "length": length},
            "ego": {"platform": "vehicle", "path": f"east_{n - 1}", "s0": ego_s,
                    "cruise_speed": round(float(r.uniform(10, 15)), 3),
                    "speed_variation": 0.05},
            "agents": agents}


def _random_junction(r: np.random.Generator) -> Spec:
    n = int(r.integers(1, 3))
    arm_len = 60.0
    ego_arm = str(r.choice(ARMS))
    ego_dir = str(r.choice(["straight", "left", "right"]))
    ego_lane = 0 if ego_dir == "left" else n - 1 if ego_dir == "right" else int(r.integers(n))
    ego_s = 25.0
    agents: list[Spec] = []
    for arm in ARMS:
        for lane in range(n):
            lo = ego_s + 14.0 if (arm == ego_arm and lane == ego_lane) else 0.0
            hi = ego_s - 14.0 if (arm == ego_arm and lane == ego_lane) else arm_len - 10.0
            spots = _spaced(r, int(r.integers(0, 3)), 8.0, hi, 16.0)
            if arm == ego_arm and lane == ego_lane:
                spots += _spaced(r, 1, lo, arm_len - 10.0, 16.0)
            for s in spots:
                choices = ["straight"] + (["left"] if lane == 0 else []) + \
                    (["right"] if lane == n - 1 else [])
                direction = str(r.choice(choices))
                agents.append({"class": _vehicle_class(r), "behaviour": _follow(
                    intersection_path(arm, direction, lane), s, float(r.uniform(6, 10)),
                    speed_variation=0.05)})
    for arm in ARMS:
        if r.uniform() < 0.6:
            agents.append({"class": str(r.choice(["pedestrian", "pedestrian", "cyclist"])),
                           "behaviour": {"type": "crossing", "crosswalk": f"crosswalk_{arm}",
                                         "reverse": bool(r.integers(2)),
                                         "start_delay_s": round(float(r.uniform(0, 10)), 3)}})
    return {"layout": {"type": "intersection", "lanes_per_direction": n, "arm_length": arm_len},
            "ego": {"platform": "vehicle", "path": intersection_path(ego_arm, ego_dir, ego_lane),
                    "s0": ego_s, "cruise_speed": round(float(r.uniform(7, 10)), 3)},
            "agents": agents}


def _random_parking(r: np.random.Generator) -> Spec:
    per_row = int(r.integers(8, 15))
    spots = 2 * per_row
    taken = sorted(int(k) for k in r.choice(spots, size=int(r.integers(spots // 3, spots)),
                                            replace=False))
    agents: list[Spec] = [{"class": "car", "behaviour": {"type": "parked", "spot": k}}
                          for k in taken]
    if r.uniform() < 0.7:
        agents.append({"class": "car", "behaviour": _follow(
            "aisle_0_west", float(r.uniform(3, 15)), float(r.uniform(2, 3.5)))})
    for m in range(3):
        if r.uniform() < 0.6:
            agents.append({"class": "pedestrian", "behaviour": {
                "type": "crossing", "crosswalk": f"aisle_0_cross_{m}",
                "reverse": bool(r.integers(2)),
                "start_delay_s": round(float(r.uniform(0, 10)), 3)}})
    return {"layout": {"type": "parking_lot", "aisles": 1, "spots_per_row": per_row},
            "ego": {"platform": "vehicle", "path": "aisle_0_east", "s0": 3.0,
                    "cruise_speed": round(float(r.uniform(2, 4)), 3)},
            "agents": agents}


def _random_warehouse(r: np.random.Generator) -> Spec:
    length = float(r.choice([30.0, 40.0, 50.0]))
    agents: list[Spec] = []
    for name in ("gap", "end_east", "end_west"):
        if r.uniform() < 0.7:
            agents.append({"class": "pedestrian", "behaviour": {
                "type": "crossing", "crosswalk": name, "reverse": bool(r.integers(2)),
                "speed": round(float(r.uniform(0.9, 1.5)), 3),
                "start_delay_s": round(float(r.uniform(0, 12)), 3)}})
    side = float(r.choice([-1.1, 1.1]))
    agents.append({"class": "pedestrian", "behaviour": {
        "type": "crossing", "start": [length / 4, side], "end": [-length / 4, side],
        "speed": round(float(r.uniform(0.8, 1.3)), 3)}})
    return {"layout": {"type": "warehouse_aisle", "length": length,
                       "aisle_width": round(float(r.uniform(2.8, 3.6)), 3)},
            "ego": {"platform": "robot", "path": "aisle", "s0": 2.0,
                    "cruise_speed": round(float(r.uniform(0.8, 1.6)), 3)},
            "agents": agents}


def random_scenario(seed: int, platform: str | None = None) -> Scenario:
    """A random layout (road, junction, parking lot or warehouse) with a random cast, all
    drawn from ``seed``. Agents that would overlap at the start are dropped.

    Args:
        seed: decides everything.
        platform: ``vehicle`` (road, junction or parking lot), ``robot`` (warehouse) or None
            (any of the four), so a dataset made for one rig only gets scenes it fits.
    """
    r = _jitter(seed, 9)
    makers = {None: [_random_road, _random_junction, _random_parking, _random_warehouse],
              "vehicle": [_random_road, _random_junction, _random_parking],
              "robot": [_random_warehouse]}
    if platform not in makers:
        raise ConfigError(f"platform must be vehicle or robot, got {platform!r}")
    choices = makers[platform]
    maker = choices[int(r.integers(len(choices)))]
    data: Spec = {"description": f"random scene, seed {seed}", "duration_s": 20.0,
                  "lighting": "random", **maker(r)}
    for _ in range(len(data["agents"]) + 1):
        try:
            return _build("random", seed, data)
        except KeyedConfigError as exc:
            # an agent overlapping another at the start: drop it, keep the rest
            if not (exc.key.startswith("agents[") and "overlaps" in exc.problem):
                raise
            drop = int(exc.key[len("agents["):exc.key.index("]")])
            data = {**data, "agents": [a for i, a in enumerate(data["agents"]) if i != drop]}
    raise ConfigError(f"random scenario {seed}: could not place the agents")  # unreachable


#: named scenarios: name -> (seed -> scenario)
SCENARIOS: Mapping[str, Callable[[int], Scenario]] = MappingProxyType({
    "highway": highway,
    "intersection": intersection,
    "parking_lot": parking_lot,
    "warehouse": warehouse,
    "urban": urban,
    "random": random_scenario,
})


def load_scenario(name_or_path: str, seed: int, platform: str | None = None) -> Scenario:
    """A library scenario by name, or a scenario YAML file by path.

    Args:
        name_or_path: a key of :data:`SCENARIOS` or a path to a ``.yaml`` / ``.yml`` file.
        seed: the seed (overrides a file's own ``seed``).
        platform: for ``random`` only: restrict to ``vehicle`` or ``robot`` scenes.

    Raises:
        ConfigError: unknown name (the message lists the names), bad seed, or any error of
            :meth:`Scenario.from_yaml`.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if name_or_path == "random":
        return random_scenario(int(seed), platform)
    if name_or_path in SCENARIOS:
        return SCENARIOS[name_or_path](int(seed))
    if name_or_path.endswith((".yaml", ".yml")) or os.path.sep in name_or_path \
            or os.path.exists(name_or_path):
        return Scenario.from_yaml(name_or_path, seed=int(seed))
    raise ConfigError(f"unknown scenario {name_or_path!r}: not a library name "
                      f"({', '.join(SCENARIOS)}) nor a .yaml file")


def describe_layout(layout: Layout) -> str:
    """One line about a layout (type and parameters), for logs and reports."""
    params = ", ".join(f"{k}={v}" for k, v in layout.params.items())
    return f"{layout.kind}({params})"


__all__ = ["SCENARIOS", "describe_layout", "highway", "intersection", "load_scenario",
           "parking_lot", "random_scenario", "urban", "warehouse"]
