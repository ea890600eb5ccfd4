"""`mm-perception eval` end to end on a short simulated bag (generated in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mm_perception.cli import main
from mm_perception.core.calibration import Rig
from mm_perception.eval.runner import iter_bag_paths, merged_truth
from mm_perception.sim.ground_truth import index_by_stamp, load_ground_truth

RIG = Path(__file__).resolve().parents[2] / "config" / "rigs" / "car.yaml"


@pytest.fixture(scope="module")
def highway_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of the highway scenario, seed 501 (a tuning seed, never a held-out one)."""
    from mm_perception.sim.library import load_scenario
    from mm_perception.sim.recorder import record_scenario

    out = tmp_path_factory.mktemp("eval") / "highway_s501"
    record_scenario(load_scenario("highway", 501), Rig.from_yaml(RIG), 3.0, out)
    return out


def test_eval_cli_writes_metrics_report_and_pictures(highway_bag: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    code = main(["eval", "--bag", str(highway_bag), "--rig", str(RIG), "--level", "data",
                 "output", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "carAP@2m" in printed and "output" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["lists"] == ["lidar", "radar", "camera", "data", "output"]
    assert metrics["num_frames"] >= 25  # 3 s of a 10 Hz reference LiDAR
    summary = metrics["summary"]
    # the highway is full of cars in range: every list must score something, the fused
    # lists something decent (a broken transform or stamp would put everything at 0)
    for name in ("lidar", "output", "data"):
        assert summary[name]["car_ap_2m"] is not None
    assert summary["output"]["car_ap_2m"] > 0.4
    assert summary["lidar"]["car_ap_2m"] > 0.3
    assert summary["output"]["mota"] is not None
    # velocity error where radar can help (objects inside the radar's field of view): the
    # FOV subset is scored separately and has ground truth of its own
    fov = metrics["tracking_radar_fov"]["output"]
    assert summary["output"]["track_velocity_error_radar_fov_mps"] == fov["velocity_error"]
    assert 0 < fov["num_objects"] < metrics["tracking"]["output"]["num_objects"]
    assert "vel. err in radar FOV" in (out / "report.md").read_text()
    for name in ("lidar", "radar", "camera", "data", "output"):
        curves = metrics["detection"][name]["curves"]["car"]["2"]
        assert len(curves["recall"]) == 101
    for f in ("report.md", "report.html", "pr_curves.png", "bev_0.png", "camera_0.png"):
        assert (out / f).stat().st_size > 500, f
    md = (out / "report.md").read_text()
    assert "output-level fusion" in md and "![bev_0.png](bev_0.png)" in md
    assert "<table>" in (out / "report.html").read_text()


def test_merged_truth_sums_the_evidence_of_all_messages(highway_bag: Path) -> None:
    from mm_perception.bag.offline import OfflineConfig, OfflineReplay
    from mm_perception.bag.reader import BagSource

    rig = Rig.from_yaml(RIG)
    index = index_by_stamp(load_ground_truth(highway_bag))
    replay = OfflineReplay(rig, OfflineConfig(max_sets=10))
    with BagSource(highway_bag) as bag:
        sets = list(replay.run(bag))
    full = [s for s in sets if s.is_complete]
    assert full
    sset = full[-1]
    truth = merged_truth(sset, replay.rig, "lidar_top", index)
    assert truth is not None
    lidar_rec = index[("lidar_top", sset.stamp_ns)]
    cam_stamp = sset.cameras["cam_front"].stamp_ns
    cam_rec = index[("cam_front", cam_stamp)]
    by_id = {o.actor_id: o for o in truth}
    assert set(by_id) == {o.actor_id for o in lidar_rec.objects}
    for obj in cam_rec.objects:
        if obj.actor_id in by_id:
            assert by_id[obj.actor_id].visible_pixels >= obj.visible_pixels
    assert sum(o.visible_pixels for o in truth) > 0
    # a set whose reference message has no record gives None, not someone else's truth
    assert merged_truth(sset, replay.rig, "lidar_top", {}) is None


def test_eval_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--bag", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no bag at" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--bag", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "neither a bag nor a folder of bags" in capsys.readouterr().err
    with pytest.raises(Exception, match="no bag"):
        iter_bag_paths([tmp_path / "missing"])
