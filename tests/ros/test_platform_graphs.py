"""Every platform config runs in-process (``mm-perception run --config ... --bag``) on a small
synthetic bag: all nodes configure and activate with their params files, the wiring of the
split graph carries data from the sync node through the detectors and output-level fusion to
the tracker, the planner and the safety filter, and the run ends cleanly with its summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from mm_perception.ros.live_run import dds_env

REPO = Path(__file__).resolve().parents[2]


def _synth_bag(tmp_path_factory: pytest.TempPathFactory, rig: str) -> Path:
    out = tmp_path_factory.mktemp("platform") / rig
    subprocess.run([sys.executable, "-m", "mm_perception.cli", "synth-bag", "--rig",
                    str(REPO / "config" / "rigs" / f"{rig}.yaml"), "--out", str(out),
                    "--duration", "2"], check=True, capture_output=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def car_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _synth_bag(tmp_path_factory, "car")


@pytest.fixture(scope="module")
def robot_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _synth_bag(tmp_path_factory, "robot")


def _run(config: str, bag: Path, tmp_path: Path, domain_id: int) -> dict[str, dict]:
    summary = tmp_path / "summary.json"
    env = {**dds_env(os.environ), "ROS_DOMAIN_ID": str(domain_id)}
    done = subprocess.run([sys.executable, "-m", "mm_perception.cli", "run", "--config",
                           str(REPO / "config" / config), "--bag", str(bag), "--summary",
                           str(summary)], env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    nodes: dict[str, dict] = json.loads(summary.read_text())["nodes"]
    return nodes


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_split_car_graph_carries_sets_to_the_tracker(car_bag: Path, tmp_path: Path,
                                                      domain_id: int) -> None:
    nodes = _run("car_split.yaml", car_bag, tmp_path, domain_id)
    assert set(nodes) == {"sync", "lidar_detector", "radar_detector", "camera_detector",
                          "output_fusion", "tracker", "planner", "safety_filter"}
    counts = {name: node["counts"] for name, node in nodes.items()}
    assert counts["sync"]["processed"] >= 15, counts  # 20 LiDAR sweeps in the bag
    assert counts["lidar_detector"]["processed"] >= 15, counts
    assert counts["radar_detector"]["processed"] >= 10, counts
    assert counts["camera_detector"]["processed"] >= 1, counts
    assert counts["output_fusion"]["fused"] >= 15, counts
    assert counts["tracker"]["tracked"] >= 15, counts
    # the planner plans every 0.5 s of sim time once odometry and tracks are there, and the
    # safety filter answers every chunk (the bag has 2 s)
    assert counts["planner"]["planned"] >= 2 and counts["planner"]["failed"] == 0, counts
    assert counts["safety_filter"]["published"] >= counts["planner"]["planned"] - 1, counts


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("platform", ["car", "robot"])
def test_composed_platform_graph_processes_the_bag(platform: str, car_bag: Path,
                                                   robot_bag: Path, tmp_path: Path,
                                                   domain_id: int) -> None:
    bag = car_bag if platform == "car" else robot_bag
    nodes = _run(f"{platform}.yaml", bag, tmp_path, domain_id)
    assert nodes["perception"]["counts"]["processed"] >= 15, nodes
