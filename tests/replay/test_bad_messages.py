"""Bad messages inside a bag are dropped and counted with a reason, never a traceback, and
never turn into silently wrong sets; stamps going backwards are counted by the sync."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mm_perception.bag.offline import OfflineReplay
from mm_perception.bag.reader import BagSource
from mm_perception.bag.writer import BagWriter
from mm_perception.cli import main
from mm_perception.core.calibration import Rig
from mm_perception.core.camera import CameraModel
from mm_perception.core.geometry import SE3
from mm_perception.core.types import EgoState
from mm_perception.ros import conversions as conv

from .conftest import RIG

CAM = CameraModel(width=8, height=6, fx=5.0, fy=5.0, cx=4.0, cy=3.0)
T0 = 1_000_000_000_000
MS = 1_000_000


def _lidar(factory: conv.RosbagsFactory, stamp: int) -> Any:
    pts = np.zeros(50, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"),
                              ("t", "<u4")])
    pts["x"] = np.linspace(2, 20, 50)
    pts["t"] = np.arange(50) * 1000
    return conv.array_to_pointcloud2(pts, stamp, "lidar_top", factory)


def _radar(factory: conv.RosbagsFactory, stamp: int) -> Any:
    pts = np.zeros(4, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("vrad", "<f4"),
                             ("amplitude", "<f4")])
    pts["x"] = [5, 10, 15, 20]
    return conv.array_to_pointcloud2(pts, stamp, "radar_front", factory)


def _write_bag(path: Path, tweak: dict[int, str]) -> None:
    """10 sets at 10 Hz; ``tweak`` maps a set index to a defect of that set's message."""
    factory = conv.RosbagsFactory()
    with BagWriter(path) as writer:
        for i in range(10):
            t = T0 + i * 100 * MS
            state = EgoState(t, "odom", "base_link", SE3.from_xy_yaw(i * 0.5, 0, 0), [5, 0, 0])
            writer.write("/odom", t, conv.odometry_from_ego_state(state, factory))
            img = conv.array_to_image(np.zeros((6, 8, 3), np.uint8), "rgb8", t + MS,
                                      "cam_front_optical", factory)
            if tweak.get(i) == "encoding":
                img.encoding = "yuv422_yuy2"
            writer.write("/sensors/camera/front/camera_info", t + MS,
                         conv.camera_info_from_model(CAM, t + MS, "cam_front_optical",
                                                     factory))
            writer.write("/sensors/camera/front/image_raw", t + MS, img)
            cloud = _lidar(factory, t)
            if tweak.get(i) == "length":
                cloud.data = cloud.data[:-7]  # data disagrees with width * point_step
            if tweak.get(i) == "bigendian":
                cloud.is_bigendian = True
            lidar_stamp = t - 1500 * MS if tweak.get(i) == "backwards" else t
            if tweak.get(i) == "backwards":
                cloud.header.stamp.sec, cloud.header.stamp.nanosec = divmod(lidar_stamp, 10**9)
            writer.write("/sensors/lidar/points", t + 2 * MS, cloud)
            writer.write("/sensors/radar/points", t + 3 * MS, _radar(factory, t + 3 * MS))


@pytest.fixture
def rig_file(tmp_path: Path) -> Path:
    rig = json.loads(json.dumps(RIG))
    rig["sync"] = {"reference": "lidar_top", "window_s": 0.02, "timeout_s": 0.3}
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(rig))
    return path


@pytest.mark.parametrize(("defect", "sensor", "reason"), [
    ("encoding", "cam_front", "encoding"),
    ("length", "lidar_top", "length"),
    ("bigendian", "lidar_top", "endian"),
])
def test_bad_message_is_dropped_and_counted(defect: str, sensor: str, reason: str,
                                            tmp_path: Path, rig_file: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bag = tmp_path / "bag"
    _write_bag(bag, {4: defect})
    out = tmp_path / "out"
    assert main(["replay", str(bag), "--rig", str(rig_file), "--offline",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    summary = json.loads((out / "replay_summary.json").read_text())
    dropped = summary["read"]["dropped"]
    assert dropped == {f"{sensor}: {reason}": 1}, dropped
    assert summary["read"]["converted"][sensor] == 9
    if sensor == "lidar_top":  # the reference is gone for that stamp: 9 sets, all complete
        assert summary["sets"] == 9 and summary["complete_sets"] == 9
    else:  # the camera is missing in one set: it is partial and says which sensor
        assert summary["partial_sets"] == 1
        assert summary["missing_in_partial_sets"] == {"cam_front": 1}
    assert any(reason in e for e in summary["read"]["errors"])


def test_lidar_stamp_jumping_backwards_is_counted(tmp_path: Path, rig_file: Path) -> None:
    bag = tmp_path / "bag"
    _write_bag(bag, {5: "backwards"})
    replay = OfflineReplay(Rig.from_yaml(rig_file))
    with BagSource(bag) as src:
        sets = list(replay.run(src))
    summary = replay.summary.as_dict()
    assert summary["sync"]["clock_jumps"] == 1  # 1.5 s back > reset threshold: counted
    stamps = [s.stamp_ns for s in sets]
    glitch = T0 + 500 * MS - 1500 * MS
    # the glitched sweep is its own set on its own timeline: partial, naming what is missing,
    # not matched to camera/radar data 1.5 s away; the timelines before and after are intact
    assert stamps == [T0 + i * 100 * MS for i in range(5)] + [glitch] + [
        T0 + i * 100 * MS for i in range(6, 10)]
    odd = sets[5]
    assert odd.missing == ("cam_front", "radar_front") and odd.present == ("lidar_top",)
    assert odd.ego is None  # no odometry 1 s before the recording: no made-up ego state
    assert summary["deskew_failed"] == {"lidar_top": 1}
    assert all(s.is_complete for i, s in enumerate(sets) if i != 5)
