"""Fixtures for the replay tests: a rig file and small generated bags in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mm_perception.bag.synthetic import SyntheticConfig, write_synthetic_bag
from mm_perception.core.calibration import Rig

#: a rig as a user of a real car would write it: radar clouds x,y,z,vrad,amplitude,
#: LiDAR clouds x,y,z,intensity with per-point time t (ns, relative to the header stamp)
RIG: dict[str, Any] = {
    "base_frame": "base_link",
    "sensors": {
        "cam_front": {
            "type": "camera",
            "topic": "/sensors/camera/front/image_raw",
            "camera_info_topic": "/sensors/camera/front/camera_info",
            "frame_id": "cam_front_optical",
            "intrinsics": "from_camera_info",
            "extrinsics": {"translation": [1.6, 0.0, 1.5], "rpy_deg": [-90.0, 0.0, -90.0]},
        },
        "lidar_top": {
            "type": "lidar",
            "topic": "/sensors/lidar/points",
            "frame_id": "lidar_top",
            "extrinsics": {"translation": [0.9, 0.0, 1.9], "rpy_deg": [0.0, 0.0, 0.0]},
            "fields": {"x": "x", "y": "y", "z": "z", "intensity": "intensity"},
            "point_time": {"field": "t", "unit": "ns", "reference": "relative"},
        },
        "radar_front": {
            "type": "radar",
            "topic": "/sensors/radar/points",
            "frame_id": "radar_front",
            "extrinsics": {"translation": [3.6, 0.0, 0.6], "rpy_deg": [0.0, 0.0, 0.0]},
            "fields": {"x": "x", "y": "y", "z": "z", "doppler": "vrad", "rcs": "amplitude"},
        },
        "odom": {"type": "odometry", "topic": "/odom"},
    },
    "sync": {"reference": "lidar_top", "window_s": 0.05, "timeout_s": 0.5},
}


@pytest.fixture
def rig_path(tmp_path: Path) -> Path:
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(RIG, sort_keys=False))
    return path


@pytest.fixture
def make_bag(tmp_path: Path, rig_path: Path) -> Callable[..., Path]:
    """``make_bag(storage="mcap", name="bag", **SyntheticConfig fields) -> path``."""

    def _make(storage: str = "mcap", name: str = "bag", rig: Path | None = None,
              **overrides: Any) -> Path:
        cfg = SyntheticConfig(**{"duration_s": 1.0, "lidar_columns": 360, **overrides})
        path = tmp_path / (f"{name}.bag" if storage == "ros1" else name)
        write_synthetic_bag(path, Rig.from_yaml(rig or rig_path), cfg,
                            storage=storage)  # type: ignore[arg-type]
        return path

    return _make
