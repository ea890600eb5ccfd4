"""`mm-perception info` / `replay --offline` on rosbag2 sqlite3, MCAP and ROS 1 bags, used as a
new user would: a rig file mapping the drivers' field names, the CLI, its outputs."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from mm_perception.bag.offline import OfflineConfig, OfflineReplay
from mm_perception.bag.reader import BagSource
from mm_perception.bag.synthetic import SyntheticConfig, SyntheticScene
from mm_perception.cli import main
from mm_perception.core.calibration import Rig
from mm_perception.core.geometry import SE3

STORAGES = ["mcap", "sqlite3", "ros1"]


@pytest.mark.parametrize("storage", STORAGES)
def test_info_and_offline_replay_every_storage(storage: str, make_bag: Callable[..., Path],
                                               rig_path: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bag = make_bag(storage)
    assert main(["info", str(bag), "--rig", str(rig_path)]) == 0
    text = capsys.readouterr().out
    assert "/sensors/radar/points" in text and "radar_front" in text
    assert "vrad:FLOAT32" in text and "amplitude:FLOAT32" in text  # radar layout shown
    assert "intensity:FLOAT32" in text and "t:UINT32" in text       # LiDAR layout shown

    assert main(["info", str(bag), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    counts = {t["topic"]: t["count"] for t in info["topics"]}
    assert counts["/sensors/lidar/points"] == 10  # 10 Hz for 1 s (last sweep must finish)
    rates = {t["topic"]: t["rate_hz"] for t in info["topics"]}
    assert rates["/odom"] == pytest.approx(50.0, rel=0.02)

    out = tmp_path / f"out_{storage}"
    assert main(["replay", str(bag), "--rig", str(rig_path), "--offline",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sync success" in printed
    summary = json.loads((out / "replay_summary.json").read_text())
    assert summary["read"]["converted"]["lidar_top"] == 10
    assert summary["read"]["converted"]["radar_front"] == counts["/sensors/radar/points"]
    assert summary["read"]["dropped"] == {}
    assert summary["sets"] == 10  # one per reference (LiDAR) sweep
    assert summary["complete_sets"] >= 9
    assert summary["deskewed_clouds"]["lidar_top"] == summary["sensor_counts_in_sets"][
        "lidar_top"]
    assert summary["sets_without_ego_state"] == 0


@pytest.mark.parametrize("layout", ["packed", "padded", "float64"])
def test_cloud_layouts_give_the_same_points(layout: str, make_bag: Callable[..., Path],
                                            rig_path: Path) -> None:
    """Padding and float64 coordinates are read into the same geometry."""
    bag = make_bag("mcap", name=f"bag_{layout}", lidar_layout=layout, seed=3)
    rig = Rig.from_yaml(rig_path)
    with BagSource(bag) as src:
        rig = src.resolve_rig(rig)
        clouds = [m.value for m in src.sensor_messages(rig) if m.sensor == "lidar_top"]
    reference = SyntheticScene(SyntheticConfig(duration_s=1.0, lidar_columns=360, seed=3))
    xyz_true, _, dt, _ = reference.lidar_sweep(rig.sensors["lidar_top"], 0.0)
    first = clouds[0]
    np.testing.assert_allclose(first.xyz(), xyz_true, atol=1e-4)
    assert first.time_offsets_ns is not None
    np.testing.assert_allclose(first.time_offsets_ns, np.round(dt * 1e9), atol=1)


def test_offline_replay_is_deterministic(make_bag: Callable[..., Path], rig_path: Path) -> None:
    bag = make_bag("mcap")
    runs = []
    for _ in range(2):
        replay = OfflineReplay(Rig.from_yaml(rig_path))
        with BagSource(bag) as src:
            sets = list(replay.run(src))
        runs.append([(s.stamp_ns, s.present, s.missing,
                      float(np.sum(s.lidars["lidar_top"].xyz())) if s.lidars else 0.0)
                     for s in sets])
    assert runs[0] == runs[1]


def _distance_to_boxes(points: np.ndarray, scene: SyntheticScene) -> np.ndarray:
    """Unsigned distance of world points to the nearest (static) box surface."""
    best = np.full(points.shape[0], np.inf)
    for obj in scene.objects:
        c, s = np.cos(obj.yaw), np.sin(obj.yaw)
        rel = points - obj.center0
        local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1],
                          rel[:, 2]], axis=1)
        q = np.abs(local) - obj.size / 2
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        inside = np.minimum(q.max(axis=1), 0.0)
        best = np.minimum(best, np.abs(outside + inside))
    return best


@pytest.mark.parametrize("deskew", [True, False])
def test_deskew_puts_points_where_the_sensor_sees_them_at_the_set_stamp(
        deskew: bool, make_bag: Callable[..., Path], rig_path: Path) -> None:
    """Parked boxes, a fast turning ego: after deskew every box return, moved to the world
    with the ONE pose at the set stamp, lies on a box surface; without deskew it does not."""
    scene_cfg = {"ego_speed_mps": 15.0, "ego_yaw_rate": 0.3, "moving_objects": False,
                 "seed": 4, "num_objects": 8}
    bag = make_bag("mcap", **scene_cfg)
    replay = OfflineReplay(Rig.from_yaml(rig_path), OfflineConfig(deskew_lidar=deskew))
    with BagSource(bag) as src:
        sset = list(replay.run(src))[3]
    cloud = sset.lidars["lidar_top"]
    spec = replay.rig.sensors["lidar_top"]
    assert spec.extrinsics is not None
    scene = SyntheticScene(SyntheticConfig(duration_s=1.0, lidar_columns=360, **scene_cfg))
    t_set = (sset.stamp_ns - SyntheticConfig().start_stamp_ns) / 1e9
    rot, trans = scene.ego_pose(t_set)
    world = (SE3(rot[0], trans[0]) @ spec.extrinsics).apply(cloud.xyz().astype(np.float64))
    on_objects = world[:, 2] > 0.2  # box returns (the ground is z = 0)
    assert on_objects.sum() > 50
    dist = _distance_to_boxes(world[on_objects], scene)
    if deskew:
        assert np.percentile(dist, 95) < 0.05
    else:
        assert np.percentile(dist, 95) > 0.2  # the distortion deskew removes is real


def _chunk_offsets(data: bytes) -> list[int]:
    """File offsets of the MCAP chunk records (opcode 0x06), walking the record stream."""
    pos, out = 8, []
    while pos + 9 <= len(data):
        opcode = data[pos]
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        if opcode == 0x06:
            out.append(pos)
        if opcode == 0x0F:  # footer
            break
        pos += 9 + length
    return out


def test_corrupt_chunk_stops_cleanly_keeping_what_came_before(
        make_bag: Callable[..., Path], rig_path: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    bag = make_bag("mcap")
    mcap_file = next(bag.glob("*.mcap"))
    data = bytearray(mcap_file.read_bytes())
    chunks = _chunk_offsets(bytes(data))
    assert len(chunks) > 4
    body = chunks[len(chunks) // 2] + 9
    (clen,) = struct.unpack_from("<I", data, body + 28)  # compression string length
    first_record = body + 32 + clen + 8
    struct.pack_into("<Q", data, first_record + 1, 2**40)  # absurd record length
    mcap_file.write_bytes(bytes(data))

    code = main(["replay", str(bag), "--rig", str(rig_path), "--offline",
                 "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.out + captured.err
    assert "the bag is corrupt" in captured.out
    summary = json.loads((tmp_path / "o" / "replay_summary.json").read_text())
    assert summary["read"]["truncated"] is True
    assert any("Truncated record" in e for e in summary["read"]["errors"])
    assert 0 < summary["sets"] < 10  # the sets before the damage are kept

    assert main(["info", str(bag)]) == 1
    out = capsys.readouterr().out
    assert "bag is corrupt after" in out and "mm-perception recover" in out
    # recover keeps the chunks after the damaged one too
    fixed = tmp_path / "fixed.mcap"
    assert main(["recover", str(bag), "--out", str(fixed)]) == 0
    assert "damaged: chunk at byte" in capsys.readouterr().out
    assert main(["replay", str(fixed), "--rig", str(rig_path), "--offline",
                 "--out", str(tmp_path / "o2")]) == 0
    fixed_summary = json.loads((tmp_path / "o2" / "replay_summary.json").read_text())
    assert fixed_summary["sets"] > summary["sets"]


def test_truncated_file_is_a_clear_error(make_bag: Callable[..., Path], rig_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bag = make_bag("mcap")
    mcap_file = next(bag.glob("*.mcap"))
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[: len(data) // 2])  # a recorder killed mid-write
    assert main(["replay", str(bag), "--rig", str(rig_path), "--offline"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open bag") and "Traceback" not in err


def test_missing_bag_and_bad_rig(tmp_path: Path, rig_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert "bag not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(rig_path.read_text().replace("topic: /odom", "topci: /odom"))
    (tmp_path / "d").mkdir()
    assert main(["replay", str(tmp_path / "d"), "--rig", str(bad), "--offline"]) == 2
    err = capsys.readouterr().err
    assert "topci" in err


def test_bag_that_does_not_match_the_rig(make_bag: Callable[..., Path], tmp_path: Path,
                                         rig_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bag = make_bag("mcap")
    other = tmp_path / "other.yaml"
    other.write_text(rig_path.read_text().replace("/sensors/radar/points", "/radar/tracks"))
    assert main(["replay", str(bag), "--rig", str(other), "--offline"]) == 2
    err = capsys.readouterr().err
    assert "radar_front" in err and "/radar/tracks is not in the bag" in err


def test_extrinsics_from_the_bags_tf_static(make_bag: Callable[..., Path], rig_path: Path,
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A rig that says `extrinsics: from_tf` gets the bag's /tf_static transforms."""
    bag = make_bag("mcap")
    data = yaml.safe_load(rig_path.read_text())
    for name in ("lidar_top", "radar_front"):
        data["sensors"][name]["extrinsics"] = "from_tf"
    tf_rig = tmp_path / "tf_rig.yaml"
    tf_rig.write_text(yaml.safe_dump(data))
    original = Rig.from_yaml(rig_path)
    with BagSource(bag) as src:
        resolved = src.resolve_rig(Rig.from_yaml(tf_rig))
    assert resolved.unresolved_extrinsics() == []
    for name in ("lidar_top", "radar_front"):
        got, want = resolved.sensors[name].extrinsics, original.sensors[name].extrinsics
        assert got is not None and want is not None and got.almost_equal(want, atol=1e-9)
    assert main(["replay", str(bag), "--rig", str(tf_rig), "--offline"]) == 0
    capsys.readouterr()

    data["sensors"]["lidar_top"]["frame_id"] = "lidar_rear"  # not in the bag's tf tree
    tf_rig.write_text(yaml.safe_dump(data))
    assert main(["replay", str(bag), "--rig", str(tf_rig), "--offline"]) == 2
    err = capsys.readouterr().err
    assert "lidar_top" in err and "base_link -> lidar_rear" in err
