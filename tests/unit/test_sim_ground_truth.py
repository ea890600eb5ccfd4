"""Ground-truth records: boxes in world and base_link, JSONL round trip, bad files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mm_perception.core.errors import BagError, ConfigError
from mm_perception.core.types import ObjectClass
from mm_perception.sim.ground_truth import (
    GroundTruthFrame,
    GroundTruthWriter,
    actor_pose,
    index_by_stamp,
    load_ground_truth,
    object_truth,
)
from mm_perception.sim.spec import ActorModel, ActorPart, ActorState, Material


def _car() -> ActorModel:
    body = ActorPart("box", np.array([0.0, 0.0, 0.8]), np.array([4.0, 1.8, 1.0]),
                     Material.VEHICLE_PAINT)
    return ActorModel(ObjectClass.CAR, np.array([4.2, 1.9, 1.5]), (body,))


def test_object_truth_frames_and_velocity() -> None:
    ego = ActorState(0, 10.0, 5.0, math.pi / 2, speed=3.0)
    agent = ActorState(4, 10.0, 25.0, math.pi / 2, speed=5.0, yaw_rate=0.1)
    obj = object_truth(agent, _car(), actor_pose(ego).inverse(), lidar_hits=12)
    np.testing.assert_allclose(obj.box_world.center, [10.0, 25.0, 0.75])
    # the ego looks north: the agent 20 m north is 20 m ahead in base_link
    np.testing.assert_allclose(obj.box_base.center, [20.0, 0.0, 0.75], atol=1e-9)
    assert obj.box_base.yaw == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(obj.velocity_world, [0.0, 5.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(obj.velocity_base, [5.0, 0.0, 0.0], atol=1e-9)
    assert obj.lidar_hits == 12 and obj.object_class is ObjectClass.CAR


def test_jsonl_round_trip_is_exact(tmp_path: Path) -> None:
    ego = ActorState(0, 1.0, 2.0, 0.3, 4.0, 0.01)
    objs = tuple(object_truth(ActorState(i, 5.0 * i, 1.0, 0.1 * i, 2.0), _car(),
                              actor_pose(ego).inverse(), radar_hits=i) for i in (1, 2))
    frames = [GroundTruthFrame(1_000 + k, "lidar_top", "lidar", ego, objs) for k in range(3)]
    writer = GroundTruthWriter(tmp_path)
    for f in frames:
        writer.write(f)
    writer.close()
    back = load_ground_truth(tmp_path)
    assert [f.to_json() for f in back] == [f.to_json() for f in frames]
    assert index_by_stamp(back)[("lidar_top", 1_001)].by_id()[2].radar_hits == 2
    text = (tmp_path / "ground_truth.jsonl").read_text()
    again = tmp_path / "again"
    again.mkdir()
    writer2 = GroundTruthWriter(again)
    for f in back:
        writer2.write(f)
    writer2.close()
    assert (again / "ground_truth.jsonl").read_text() == text  # byte-identical


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="no ground truth"):
        load_ground_truth(tmp_path)
    (tmp_path / "ground_truth.jsonl").write_text('{"version": 1, "stamp_ns": 5}\n')
    with pytest.raises(BagError, match=r"ground_truth.jsonl:1: malformed"):
        load_ground_truth(tmp_path)
    (tmp_path / "ground_truth.jsonl").write_text('{"version": 7}\n')
    with pytest.raises(BagError, match="version 7"):
        load_ground_truth(tmp_path)


def test_actor_model_rejects_parts_outside_the_box() -> None:
    part = ActorPart("box", np.array([0.0, 0.0, 1.0]), np.array([5.0, 1.0, 1.0]),
                     Material.METAL)
    with pytest.raises(ConfigError, match="sticks out"):
        ActorModel(ObjectClass.CAR, np.array([4.0, 2.0, 2.0]), (part,))
    with pytest.raises(ConfigError, match="positive"):
        ActorModel(ObjectClass.CAR, np.array([4.0, -2.0, 2.0]), (part,))
