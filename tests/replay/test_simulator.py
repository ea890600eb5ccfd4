"""The MuJoCo scenario simulator end to end: determinism, cross-sensor consistency against
ground truth, closed-loop events, bad inputs, and the `mm-perception sim` bag."""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")

from mm_perception.bag.reader import BagSource
from mm_perception.cli import main
from mm_perception.core.calibration import Rig
from mm_perception.core.errors import ConfigError
from mm_perception.core.types import SensorKind
from mm_perception.sim.ego_dynamics import EgoCommand, TrajectoryCommand
from mm_perception.sim.ground_truth import (
    GroundTruthFrame,
    actor_pose,
    load_ground_truth,
)
from mm_perception.sim.library import load_scenario
from mm_perception.sim.recorder import record_scenario
from mm_perception.sim.simulator import SensorOutput, SimConfig, Simulator
from mm_perception.sim.spec import ActorState

REPO = Path(__file__).resolve().parents[2]
CAR = REPO / "config" / "rigs" / "car.yaml"
ROBOT = REPO / "config" / "rigs" / "robot.yaml"


def _bag_digest(bag: Path) -> dict[str, str]:
    """sha256 of every topic's concatenated payloads (in order) and of the ground truth."""
    out: dict[str, Any] = defaultdict(hashlib.sha256)
    with BagSource(bag) as src:
        for topic, log_ns, data in src.raw_messages(list(src.topic_types())):
            out[topic].update(log_ns.to_bytes(8, "little"))
            out[topic].update(data)
    digests = {t: h.hexdigest() for t, h in out.items()}
    digests["ground_truth"] = hashlib.sha256(
        (bag / "ground_truth.jsonl").read_bytes()).hexdigest()
    return digests


def test_same_scenario_and_seed_give_byte_identical_bags(tmp_path: Path) -> None:
    rig = Rig.from_yaml(CAR)
    digests = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        record_scenario(load_scenario("highway", seed), rig, 0.4, tmp_path / name)
        digests.append(_bag_digest(tmp_path / name))
    assert digests[0] == digests[1]
    assert len(digests[0]) >= 8  # every topic + ground truth was compared
    assert digests[0]["/sensors/lidar/points"] != digests[2]["/sensors/lidar/points"]


def _run(scenario: str, seed: int, rig_path: Path, duration: float,
         ) -> tuple[Rig, list[SensorOutput], dict[tuple[str, int], GroundTruthFrame]]:
    rig = Rig.from_yaml(rig_path)
    outputs: list[SensorOutput] = []
    truth: dict[tuple[str, int], GroundTruthFrame] = {}
    with Simulator(rig, SimConfig()) as sim:
        sim.reset(load_scenario(scenario, seed))
        for step in sim.run(duration):
            outputs.extend(step.outputs)
            truth.update({(f.sensor, f.stamp_ns): f for f in step.ground_truth})
    return rig, outputs, truth


def _near_mask(instance: np.ndarray, u: np.ndarray, v: np.ndarray, actor_id: int,
               ) -> np.ndarray:
    """Whether each pixel or one of its 8 neighbours is the actor's (rasterisation puts a
    silhouette edge up to half a pixel either way)."""
    h, w = instance.shape
    hit = np.zeros(len(u), dtype=bool)
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            hit |= instance[np.clip(v + dv, 0, h - 1), np.clip(u + du, 0, w - 1)] == actor_id
    return hit


CASES = [("highway", 0, CAR), ("intersection", 1, CAR), ("parking_lot", 2, CAR),
         ("warehouse", 3, ROBOT)]


@pytest.mark.parametrize(("scenario", "seed", "rig_path"), CASES)
def test_cross_sensor_consistency(scenario: str, seed: int, rig_path: Path) -> None:
    rig, outputs, truth = _run(scenario, seed, rig_path, 1.0)
    lidars = [o for o in outputs if o.kind is SensorKind.LIDAR]
    cameras = [o for o in outputs if o.kind is SensorKind.CAMERA]
    radars = [o for o in outputs if o.kind is SensorKind.RADAR]
    assert lidars and cameras

    # 1. LiDAR hits on an agent lie inside that agent's box (0.1 m margin)
    inside = total = 0
    for out in lidars:
        ids, local = out.labels["actor_id"], out.labels["actor_xyz"]
        record = truth[(out.sensor, out.stamp_ns)]
        sizes = {o.actor_id: o.box_world.size for o in record.objects}
        for actor_id in np.unique(ids[ids > 0]):
            pts = local[ids == actor_id]
            size = sizes[int(actor_id)]
            ok = ((np.abs(pts[:, 0]) <= size[0] / 2 + 0.1) & (np.abs(pts[:, 1]) <= size[1] / 2
                  + 0.1) & (pts[:, 2] >= -0.1) & (pts[:, 2] <= size[2] + 0.1))
            inside += int(ok.sum())
            total += len(pts)
    assert total > 100, f"too few agent hits to judge ({total})"
    assert inside / total >= 0.95, f"{inside}/{total} agent points inside their boxes"

    # 2. those points, moved rigidly with their agent to a camera frame's time, land on the
    #    agent's instance mask where the camera sees them (not hidden behind something else)
    on_mask = seen = 0
    for cam_out in cameras:
        spec = rig.sensors[cam_out.sensor]
        camera = cam_out.value.camera  # type: ignore[union-attr]
        assert camera is not None and spec.extrinsics is not None
        assert cam_out.instance is not None and cam_out.depth is not None
        record = truth[(cam_out.sensor, cam_out.stamp_ns)]
        T_cam_world = (actor_pose(record.ego) @ spec.extrinsics).inverse()
        lidar = min(lidars, key=lambda o: abs(o.stamp_ns - cam_out.stamp_ns))
        ids, local = lidar.labels["actor_id"], lidar.labels["actor_xyz"]
        for obj in record.objects:
            if obj.visible_pixels < 50:
                continue
            pts = local[ids == obj.actor_id]
            if not len(pts):
                continue
            box = obj.box_world
            pose = actor_pose(ActorState(obj.actor_id, box.center[0], box.center[1], box.yaw,
                                         z=box.center[2] - box.size[2] / 2))
            cam = T_cam_world.apply(pose.apply(pts))
            uv, valid = camera.project(cam, in_image=True)
            u = np.clip(np.round(uv[valid, 0]).astype(int), 0, camera.width - 1)
            v = np.clip(np.round(uv[valid, 1]).astype(int), 0, camera.height - 1)
            rendered = cam_out.depth[v, u]
            visible = ~(rendered < cam[valid, 2] - 0.3)  # not behind another surface
            on_mask += int(_near_mask(cam_out.instance, u[visible], v[visible],
                                      obj.actor_id).sum())
            seen += int(visible.sum())
    assert seen > 50, f"too few agent points seen by a camera ({seen})"
    assert on_mask / seen >= 0.95, f"{on_mask}/{seen} points on their agent's mask"

    # 3. radar returns on agents: Doppler within noise of the analytic radial velocity
    for out in radars:
        spec = rig.sensors[out.sensor]
        model = spec.sensor_model
        assert spec.extrinsics is not None
        scan = out.value
        record = truth[(out.sensor, out.stamp_ns)]
        T_world_radar = actor_pose(record.ego) @ spec.extrinsics
        v_radar = record.ego.point_velocity(T_world_radar.translation[None, :])[0]
        objects = record.by_id()
        ids = out.labels["actor_id"]
        for i in np.nonzero(ids > 0)[0]:
            obj = objects[int(ids[i])]
            p = T_world_radar.apply(scan.xyz[i].astype(np.float64))  # type: ignore[union-attr]
            v_obj = obj.velocity_world + np.cross([0.0, 0.0, obj.yaw_rate],
                                                  p - obj.box_world.center)
            los = p - T_world_radar.translation
            los /= np.linalg.norm(los)
            rel = v_obj - v_radar
            expected = float(rel @ los)
            # velocity noise, plus the line-of-sight error from the angle noise
            tol = 5 * model.velocity_noise_mps + np.linalg.norm(rel) * 4 * np.deg2rad(  # type: ignore[union-attr]
                model.azimuth_noise_deg) + 0.05  # type: ignore[union-attr]
            assert abs(scan.doppler[i] - expected) <= tol, (  # type: ignore[union-attr]
                f"radar return on {obj.actor_id}: {scan.doppler[i]} vs {expected}")  # type: ignore[union-attr]


def test_closed_loop_braking_collision_and_off_road() -> None:
    rig = Rig.from_yaml(CAR)
    cfg = SimConfig(camera_depth=False, camera_instance=False)
    with Simulator(rig, cfg) as sim:
        first = sim.reset("highway", seed=0)  # by name and seed, as a planner test would
        with pytest.raises(ConfigError, match="built for seed 0"):
            sim.reset(load_scenario("highway", 0), seed=1)
        first = sim.reset("highway", seed=0)
        v0 = first.ego.speed
        for _ in range(10):
            step = sim.step(EgoCommand(acceleration=-4.0, steering_angle=0.0))
        assert step.ego.speed < max(v0 - 1.5, 0.1)  # 0.5 s of braking
        assert not step.events.off_road
        off = False
        for i in range(100):  # turn about 45 degrees, then straight on: off the road
            steer = 0.3 if i < 12 else 0.0
            step = sim.step(EgoCommand(acceleration=1.0, steering_angle=steer))
            off |= step.events.off_road
        assert off
        # flat out in the lane behind a slower car: the collision is reported with its id
        sim.reset(load_scenario("highway", 0))
        hits: set[int] = set()
        for _ in range(150):
            step = sim.step(EgoCommand(acceleration=3.0, steering_angle=0.0))
            hits.update(step.events.collisions)
            if hits:
                break
        lead = min((a for a in first.agents if abs(a.y - first.ego.y) < 1.0
                    and a.x > first.ego.x), key=lambda a: a.x)
        assert hits == {lead.actor_id}


def test_rig_checks_at_load(tmp_path: Path) -> None:
    data = Rig.from_yaml(CAR).to_dict()
    data["sensors"]["radar_front"]["extrinsics"]["translation"] = [9.0, 0.0, 0.5]
    far = Rig.from_dict(data, source="far.yaml")
    with Simulator(far) as sim, pytest.raises(ConfigError,
                                               match=r"sensors.radar_front.extrinsics"):
        sim.reset(load_scenario("highway", 0))
    data = Rig.from_yaml(CAR).to_dict()
    data["sensors"]["cam_front"]["intrinsics"]["fx"] = 0.0
    with pytest.raises(ConfigError, match="fx"):
        Rig.from_dict(data, source="bad.yaml")


def test_sim_cli_writes_a_bag_info_and_replay_read(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bag = tmp_path / "scene"
    assert main(["sim", "--scenario", "intersection", "--seed", "2", "--duration", "0.5",
                 "--rig", str(CAR), "--out", str(bag)]) == 0
    capsys.readouterr()
    assert main(["info", str(bag), "--rig", str(CAR), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    types = {t["topic"]: t["type"] for t in info["topics"]}
    assert types["/sensors/lidar/points"] == "sensor_msgs/msg/PointCloud2"
    assert types["/sim/cam_front/depth"] == "sensor_msgs/msg/Image"
    assert types["/tf_static"] == "tf2_msgs/msg/TFMessage"
    assert main(["replay", str(bag), "--rig", str(CAR), "--offline", "--out",
                 str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "replay_summary.json").read_text())
    assert summary["sets"] >= 4 and summary["read"]["dropped"] == {}
    truth = load_ground_truth(bag)
    assert {f.sensor for f in truth} == {"cam_front", "lidar_top", "radar_front"}


def test_sim_dataset_writes_scenes_for_the_rig_platform(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        ) -> None:
    out = tmp_path / "ds"
    assert main(["sim", "dataset", "--scenes", "3", "--duration", "0.3", "--seed", "10",
                 "--rig", str(CAR), "--out", str(out)]) == 0
    capsys.readouterr()
    index = json.loads((out / "dataset.json").read_text())
    assert len(index["scenes"]) == 3
    for scene in index["scenes"]:
        assert Path(scene["bag"]).is_dir() and scene["ground_truth_records"] > 0
        assert load_scenario("random", scene["seed"], "vehicle").ego.platform == "vehicle"
    with pytest.raises(ConfigError, match="platform"):
        load_scenario("random", 1, "boat")


def test_closed_loop_follows_a_trajectory_command() -> None:
    """A planner-style trajectory (re-issued every step, times relative to now) is tracked:
    the ego changes to the left lane and settles at the commanded speed."""
    rig = Rig.from_yaml(CAR)
    with Simulator(rig, SimConfig(camera_depth=False, camera_instance=False)) as sim:
        step = sim.reset(load_scenario("highway", 0))
        target_y = step.ego.y + 3.5  # the next lane to the left (lanes are 3.5 m wide)
        for _ in range(80):  # 4 s
            ego = step.ego
            times = np.linspace(0.0, 3.0, 13)
            xs = ego.x + 9.0 * times
            ys = np.interp(times, [0.0, 1.5, 3.0], [ego.y, target_y, target_y])
            step = sim.step(TrajectoryCommand(times, np.stack([xs, ys], 1), np.full(13, 9.0)))
        assert abs(step.ego.y - target_y) < 0.3
        assert abs(step.ego.speed - 9.0) < 0.5
        assert abs(step.ego.yaw) < 0.05


def test_camera_frames_come_back_in_event_order_and_a_failed_step_leaves_nothing() -> None:
    """Camera frames render on the camera's thread; every step's outputs still hold each
    sensor's output, in event order (stamps never decrease), with its ground truth. A step
    that raises after asking for a frame leaves no stale place for the next step."""
    rig = Rig.from_yaml(CAR)
    with Simulator(rig, SimConfig()) as sim:
        sim.reset(load_scenario("highway", 0))
        kinds = set()
        for _ in range(6):
            step = sim.step()
            assert all(isinstance(o, SensorOutput) for o in step.outputs)
            assert all(isinstance(g, GroundTruthFrame) for g in step.ground_truth)
            stamps = [o.stamp_ns for o in step.outputs if o.kind is not SensorKind.LIDAR]
            assert stamps == sorted(stamps)
            kinds |= {o.kind for o in step.outputs}
        assert SensorKind.CAMERA in kinds
        radar = next(n for n, s in rig.sensors.items() if s.kind is SensorKind.RADAR)
        scan = sim._sensors[radar].scan

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("radar failed")

        sim._sensors[radar].scan = broken
        with pytest.raises(RuntimeError, match="radar failed"):
            for _ in range(4):  # a step with a camera frame, then the radar scan
                sim.step()
        sim._sensors[radar].scan = scan
        for _ in range(3):
            step = sim.step()
            assert all(isinstance(o, SensorOutput) for o in step.outputs)
            assert len(step.ground_truth) == sum(o.kind is not SensorKind.ODOMETRY
                                                 for o in step.outputs)


def _payload(out: SensorOutput) -> tuple[Any, ...]:
    """Everything an output carries, as comparable bytes."""
    value = out.value
    arrays: list[Any] = [out.depth, out.instance, *out.labels.values()]
    for name in ("image", "points", "time_offsets_ns", "xyz", "doppler", "rcs"):
        field = getattr(value, name, None)
        arrays.append(None if callable(field) else field)  # PointCloud.xyz is a method
    if hasattr(value, "pose"):
        arrays += [value.pose.as_matrix(), value.linear_velocity]
    return (out.sensor, out.stamp_ns, out.publish_ns,
            tuple(None if a is None else np.ascontiguousarray(a).tobytes() for a in arrays))


def test_run_hands_out_the_steps_that_step_gives() -> None:
    """`run` advances one step ahead of the one it hands out (so camera frames render while
    the next step is worked on); its steps must be exactly those of a `step()` loop, and a
    consumer that stops early leaves the simulator usable."""
    rig = Rig.from_yaml(CAR)
    scenario = load_scenario("highway", 3)
    with Simulator(rig, SimConfig()) as sim:
        sim.reset(scenario)
        by_step = [sim.step() for _ in range(6)]
        sim.reset(scenario)
        by_run = list(sim.run(0.3))
        assert [s.time_ns for s in by_run] == [s.time_ns for s in by_step]
        for a, b in zip(by_run, by_step, strict=True):
            assert (a.ego, a.agents, a.events) == (b.ego, b.agents, b.events)
            assert [_payload(o) for o in a.outputs] == [_payload(o) for o in b.outputs]
            assert [g.to_json() for g in a.ground_truth] == [g.to_json() for g in b.ground_truth]
        assert any(o.kind is SensorKind.CAMERA for s in by_run for o in s.outputs)

        sim.reset(scenario)
        for step in sim.run(10.0):  # leave early, with a frame of the next step pending
            if step.time_ns >= 100_000_000:
                break
        sim.reset(scenario)
        again = next(iter(sim.run(0.05)))
        assert [_payload(o) for o in again.outputs] == [_payload(o) for o in
                                                          by_step[0].outputs]
