"""Closed-loop plumbing: perception in the loop, comfort metrics, seeds, demo noise, report."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mm_perception.core.calibration import Rig
from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import EgoState
from mm_perception.fusion.pipeline import PipelineConfig
from mm_perception.planning.closed_loop import comfort_metrics
from mm_perception.planning.demos import DaggerPlanner, DemoNoise, perturb
from mm_perception.planning.drive import parse_seeds, summarise, write_report
from mm_perception.planning.perception_loop import (
    PerceptionLoop,
    PerceptionLoopConfig,
    box_colour,
    sorted_messages,
)
from mm_perception.planning.trajectory import Trajectory

RIG = Path(__file__).resolve().parents[2] / "config" / "rigs" / "car.yaml"

# camera optical frame: z forward, x right, y down; base_link: x forward, y left, z up
T_CAM_BASE = SE3(np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]),
                 np.array([0.0, 1.0, 0.0]))  # camera 1 m above base_link


def _camera() -> CameraModel:
    return CameraModel(width=200, height=100, fx=100.0, fy=100.0, cx=99.5, cy=49.5)


def test_box_colour_takes_the_median_of_the_box_centre() -> None:
    image = np.full((100, 200, 3), 30, np.uint8)
    # a box 10 m ahead, 2 m wide and 1.5 m tall, centred at the camera height: it covers
    # about u in [90, 110], v in [42, 57]; paint its centre red and put noise at its edges
    image[40:60, 85:115] = (200, 20, 20)
    image[40:42, 85:115] = (0, 255, 0)
    rgb = box_colour(image, _camera(), T_CAM_BASE, np.array([10.0, 0.0, 1.0]),
                     np.array([4.0, 2.0, 1.5]), 0.0)
    np.testing.assert_allclose(rgb, np.array([200, 20, 20]) / 255.0)


@pytest.mark.parametrize("center", [(-10.0, 0.0, 1.0),     # behind the camera
                                    (0.5, 0.0, 1.0),       # straddles the image plane
                                    (10.0, 80.0, 1.0)])    # far outside the image
def test_box_colour_is_unknown_when_the_box_is_not_seen(center: tuple[float, ...]) -> None:
    image = np.full((100, 200, 3), 30, np.uint8)
    rgb = box_colour(image, _camera(), T_CAM_BASE, np.array(center),
                     np.array([4.0, 2.0, 1.5]), 0.0)
    assert np.isnan(rgb).all()


def test_perception_loop_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="track_list"):
        PerceptionLoopConfig(track_list="nope")
    with pytest.raises(ConfigError, match="not tracked"):
        PerceptionLoopConfig(track_list="lidar", pipeline=PipelineConfig(
            lists=("lidar", "output"), track_lists=("output",)))
    with pytest.raises(ConfigError, match="colour_patch"):
        PerceptionLoopConfig(colour_patch=0.0)


def test_perception_loop_needs_odometry(tmp_path: Path) -> None:
    text = RIG.read_text().split("  odom:")[0] + "sync:\n  reference: lidar_top\n"
    path = tmp_path / "rig.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="odometry"):
        PerceptionLoop(Rig.from_yaml(path))


@pytest.mark.slow
def test_perception_loop_tracks_the_simulated_agents() -> None:
    """Three simulated seconds of the highway: the fused tracks sit on the agents ahead,
    in base_link at the planning stamp, with ground-relative velocities and colours."""
    from mm_perception.sim.simulator import SimConfig, Simulator

    rig = Rig.from_yaml(RIG)
    loop = PerceptionLoop(rig)
    with Simulator(rig, SimConfig(camera_depth=False, camera_instance=False)) as sim:
        sim.reset("highway", 3)
        for _ in range(60):
            step = sim.step()
            loop.feed(sorted_messages(step.outputs))
        now = sim.config.start_stamp_ns + step.time_ns
    assert loop.sets >= 25
    assert all(t.object.box.frame_id == "odom" for t in loop.world_tracks())
    e = step.ego
    ego = EgoState(now, "odom", "base_link",
                   SE3(np.array([[math.cos(e.yaw), -math.sin(e.yaw), 0.0],
                                 [math.sin(e.yaw), math.cos(e.yaw), 0.0], [0.0, 0.0, 1.0]]),
                       np.array([e.x, e.y, 0.0])), np.array([e.speed, 0.0, 0.0]))
    objects = loop.scene_objects(ego)
    c, s = math.cos(e.yaw), math.sin(e.yaw)
    seen = 0
    for agent in step.agents:
        dx, dy = agent.x - e.x, agent.y - e.y
        bx, by = c * dx + s * dy, -s * dx + c * dy
        if not (5.0 < bx < 40.0 and abs(by) < 6.0):
            continue
        near = [o for o in objects if np.hypot(*(o.xy - (bx, by))) < 2.0]
        assert near, f"no track near agent {agent.actor_id} at ({bx:.1f}, {by:.1f})"
        obj = near[0]
        # ground-relative speed (the ego drives at ~13 m/s: relative would be ~0)
        assert abs(np.hypot(*obj.velocity) - agent.speed) < 1.5
        assert np.isfinite(obj.rgb).all() and (obj.rgb >= 0.0).all() and (obj.rgb <= 1.0).all()
        seen += 1
    assert seen >= 1
    image = loop.rgb_image()
    assert image is not None and image.shape == (480, 640, 3) and image.dtype == np.uint8
    with pytest.raises(ValueError, match=r"tracks are in .odom."):
        loop.scene_objects(EgoState(now, "map", "base_link", ego.pose))


def test_comfort_metrics_of_known_motions() -> None:
    dt = 0.05
    t = np.arange(0.0, 5.0, dt)
    # constant acceleration 1 m/s^2 on a straight line: zero jerk, no lateral acceleration
    v = 2.0 + t
    x = 2.0 * t + 0.5 * t ** 2
    out = comfort_metrics(np.stack([t, x, np.zeros_like(t), v], axis=1), dt)
    assert out["max_abs_jerk_mps3"] == pytest.approx(0.0, abs=1e-9)
    assert out["max_abs_accel_mps2"] == pytest.approx(1.0)
    assert out["max_lateral_accel_mps2"] == pytest.approx(0.0, abs=1e-9)
    # a circle of radius 20 m at 10 m/s: lateral acceleration v^2 / r = 5 m/s^2
    ang = 10.0 * t / 20.0
    circle = np.stack([t, 20 * np.sin(ang), 20 * (1 - np.cos(ang)), np.full_like(t, 10.0)],
                      axis=1)
    assert comfort_metrics(circle, dt)["max_lateral_accel_mps2"] == pytest.approx(5.0, rel=0.02)
    assert comfort_metrics(circle[:3], dt)["rms_jerk_mps3"] == 0.0


def test_parse_seeds() -> None:
    assert parse_seeds(["3"]) == [3]
    assert parse_seeds(["0-2", "5,7", "2"]) == [0, 1, 2, 5, 7]
    for bad in (["x"], ["5-2"], ["-1"], [""]):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def _chunk() -> Trajectory:
    t = np.arange(11) * 0.4
    return Trajectory(10**9, "odom", t, np.stack([10.0 * t, np.zeros_like(t)], axis=1),
                      np.zeros_like(t), np.full_like(t, 10.0), source="expert")


def test_perturb_offsets_sideways_and_scales_speed() -> None:
    chunk = _chunk()
    rng = np.random.default_rng(0)
    assert perturb(chunk, rng, DemoNoise(prob=0.0)) is chunk
    out = perturb(chunk, np.random.default_rng(1), DemoNoise(prob=1.0, lateral_m=0.5,
                                                               speed_scale=0.2))
    assert out is not chunk and out.is_finite() and out.source == "expert+noise"
    np.testing.assert_array_equal(out.t_s, chunk.t_s)
    assert out.xy[0, 1] == 0.0 and out.xy[-1, 1] != 0.0        # offset ramps in from 0
    np.testing.assert_allclose(np.diff(out.xy[:, 1]), out.xy[-1, 1] / 10, atol=1e-12)
    scale = out.speed[0] / 10.0
    assert scale != 1.0
    np.testing.assert_allclose(out.speed, 10.0 * scale)
    with pytest.raises(ConfigError):
        DemoNoise(prob=1.5)


class _FixedPlanner:
    """Returns one chunk; counts its calls and resets."""

    def __init__(self, name: str, chunk: Trajectory) -> None:
        self.name, self.chunk = name, chunk
        self.calls = self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def plan(self, observation: object) -> Trajectory:
        self.calls += 1
        return self.chunk


def test_dagger_executes_the_learner_and_labels_with_the_expert() -> None:
    expert_chunk = _chunk()
    learner_chunk = replace(expert_chunk, source="learner")
    expert, learner = _FixedPlanner("expert", expert_chunk), _FixedPlanner("vla", learner_chunk)
    mix = DaggerPlanner(expert, learner, 0.0, np.random.default_rng(0))
    mix.reset()
    assert expert.resets == learner.resets == 1
    obs = object()
    for _ in range(5):
        assert mix.plan(obs) is learner_chunk      # type: ignore[arg-type]
        assert mix.label is expert_chunk
    assert mix.learner_chunks == 5 and expert.calls == learner.calls == 5
    # beta: the share of the expert's own chunks; both planners still see every state
    mix = DaggerPlanner(expert, learner, 0.5, np.random.default_rng(0))
    picks = [mix.plan(obs) is expert_chunk for _ in range(400)]  # type: ignore[arg-type]
    assert 0.4 < np.mean(picks) < 0.6 and mix.learner_chunks == 400 - sum(picks)
    assert expert.calls == learner.calls == 405
    with pytest.raises(ConfigError, match="beta"):
        DaggerPlanner(expert, learner, 1.5, np.random.default_rng(0))


def _result(planner: str, kind: str, seed: int, success: bool) -> dict[str, object]:
    return {"planner": planner, "kind": kind, "seed": seed, "success": success,
            "instruction": "turn left", "outcome": {"success": success, "reason": "ok",
                                                    "collisions": [], "off_road": False},
            "safety": {"interventions": 1, "checks": 10},
            "comfort": {"rms_jerk_mps3": 0.5, "max_abs_jerk_mps3": 2.0}}


def test_summary_and_report(tmp_path: Path) -> None:
    rows = [_result("expert", "turn_left", 0, True), _result("expert", "stop_behind", 0, True),
            _result("vla", "turn_left", 0, True), _result("vla", "stop_behind", 0, False),
            _result("vla-no-language", "turn_left", 0, False),
            _result("vla-no-language", "stop_behind", 0, False)]
    summary = summarise(rows)
    assert summary["planners"]["expert"]["success_rate"] == 1.0
    assert summary["planners"]["vla"]["per_kind"] == {"stop_behind": 0.0, "turn_left": 1.0}
    assert summary["vla_over_expert"] == pytest.approx(0.5)
    assert summary["language_drop_points"] == pytest.approx(50.0)
    assert summary["planners"]["vla"]["interventions"] == 2
    report = write_report(tmp_path, rows, summary, {"suite": "default", "split": "heldout",
                                                    "seeds": [0], "rig": "car.yaml"})
    text = report.read_text()
    assert "| vla | 2 | 50.0% |" in text and "50.0 points" in text


@pytest.mark.slow
def test_stop_behind_demonstrations_label_the_named_vehicle(tmp_path: Path) -> None:
    """The grounding label of a recorded stop_behind episode is the perceived parked
    vehicle on the shoulder (not the moving traffic), once perception sees it."""
    from mm_perception.cli import main
    from mm_perception.planning.vla.config import VLAConfig

    assert main(["sim", "demos", "--kinds", "stop_behind", "--seeds", "3", "--out",
                 str(tmp_path)]) == 0
    shard = np.load(tmp_path / "stop_behind_3_train.npz")
    slot = shard["target_slot"]
    labelled = slot >= 0
    assert labelled.mean() > 0.8, slot
    rows = shard["objects"][np.flatnonzero(labelled), slot[labelled]]
    cfg = VLAConfig()
    y_m = rows[:, 1] * cfg.position_scale_m
    speed_mps = np.hypot(rows[:, 7], rows[:, 8]) * cfg.velocity_scale_mps
    # shoulder_east's centre is 3 m right of the ego's lane's (east_1); parked
    assert np.all(np.abs(y_m + 3.0) < 1.2), y_m
    assert np.all(speed_mps < 1.0), speed_mps


@pytest.mark.slow
def test_demos_train_and_drive_commands_chain(tmp_path: Path) -> None:
    """The three commands of the planner's workflow on one episode each: the expert's
    demonstrations, imitation training, and the closed-loop comparison with its report."""
    from mm_perception.cli import main

    demos, weights, drive = tmp_path / "demos", tmp_path / "vla", tmp_path / "drive"
    assert main(["sim", "demos", "--kinds", "turn_left", "--seeds", "2", "--out",
                 str(demos)]) == 0
    index = [json.loads(line) for line in (demos / "index.jsonl").read_text().splitlines()]
    assert len(index) == 1 and index[0]["success"] and index[0]["samples"] >= 40
    shard = np.load(demos / "turn_left_2_train.npz")
    assert shard["targets"].shape == (index[0]["samples"], 10, 3)
    assert (shard["target_slot"] == -1).all()  # a turn names no object
    assert main(["train", "vla", "--data", str(demos), "--out", str(weights), "--epochs", "1",
                 "--val-fraction", "0", "--threads", "1", "--no-progress"]) == 0
    assert (weights / "vla.pt").is_file() and (weights / "vla.onnx").is_file()
    assert main(["drive", "--kinds", "turn_left", "--seeds", "2", "--planner", "expert",
                 "rules", "vla", "--vla-weights", str(weights), "--vla-backend",
                 "onnxruntime", "--frames", "4", "--out", str(drive)]) == 0
    results = json.loads((drive / "results.json").read_text())
    by_planner = {e["planner"]: e for e in results["episodes"]}
    assert set(by_planner) == {"expert", "rules", "vla"}
    # held-out wording by default; the expert turns, the language-free baseline cannot
    assert by_planner["expert"]["instruction"] == by_planner["vla"]["instruction"]
    assert by_planner["expert"]["success"] and not by_planner["rules"]["success"]
    assert not any(e["outcome"]["collisions"] for e in results["episodes"])
    assert all(Path(e["strip"]).is_file() for e in results["episodes"])
    assert "| expert | 1 | 100.0% |" in (drive / "report.md").read_text()
    # a DAgger round with the trained policy lands beside the expert's shard
    assert main(["sim", "demos", "--kinds", "turn_left", "--seeds", "2", "--learner",
                 str(weights), "--beta", "0.2", "--out", str(demos)]) == 0
    index = [json.loads(line) for line in (demos / "index.jsonl").read_text().splitlines()]
    assert [e["episode"] for e in index] == ["turn_left_2_train", "turn_left_2_train_dagger"]
    assert index[1]["learner_chunks"] > index[1]["samples"] // 2
    dagger = np.load(demos / "turn_left_2_train_dagger.npz")
    assert dagger["targets"].shape == (index[1]["samples"], 10, 3)
    assert np.isfinite(dagger["targets"]).all()
