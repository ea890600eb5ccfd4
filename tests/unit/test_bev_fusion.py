"""Feature-level (BEV) fusion: config validation, the numpy processor on hand examples and
brute-force references, ``frame_inputs`` on synthetic sensor sets, the network with every
subset of modalities, the training pieces (targets, dropout, loss, a 2-step ``train`` run
with ``--resume``), ONNX export with torch / ONNX Runtime parity, load errors, and the
committed default weights (skipped until they exist).

Models here are tiny (16 x 16 cells of 1 m, 8 channels, 64 x 48 images) so that the whole
file runs in well under a minute on two shared CPU cores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mm_perception.core.calibration import Rig
from mm_perception.core.camera import CameraModel
from mm_perception.core.ego_motion import OdometryBuffer
from mm_perception.core.errors import ConfigError, ModelLoadError, SpecMismatchError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import (
    CameraFrame,
    EgoState,
    ObjectClass,
    PointCloud,
    RadarScan,
    SensorSet,
)
from mm_perception.fusion.feature_level.config import CLASSES, MODALITIES, BevGrid, BevModelConfig
from mm_perception.fusion.feature_level.dataset import Shard, load_shard, save_shard, shard_name
from mm_perception.fusion.feature_level.detector import (
    DEFAULT_WEIGHTS_DIR,
    ONNX_FILE,
    WEIGHTS_ROOT,
    BevDetector,
    BevDetectorConfig,
    load_weights,
    save_weights,
)
from mm_perception.fusion.feature_level.export import (
    PARITY_ATOL,
    check_parity,
    export_onnx,
    io_specs,
    onnx_backend,
    torch_backend,
)
from mm_perception.fusion.feature_level.model import BevFusionNet, CameraEncoder
from mm_perception.fusion.feature_level.processor import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    OUTSIDE,
    BevProcessor,
    ProcessorState,
    RawFrame,
    frame_inputs,
)
from mm_perception.fusion.feature_level.train import (
    ImageFeatureCache,
    add_arguments,
    bev_loss,
    collate,
    dropout_subset,
    init_from,
    make_targets,
    model_config,
    train,
)
from mm_perception.runtime import RuntimeConfig
from mm_perception.runtime.ort_backend import model_specs

MS = 1_000_000
S = 1_000_000_000
STAMP = 5 * S

GRID = BevGrid(x_range_m=(-8, 8), y_range_m=(-8, 8), cell_m=1.0)  # 16 x 16 cells
NX = NY = 16
#: network input size of the camera images in these tests (W, H)
IMG = (64, 48)
#: lidar + radar only: where the camera is not the point; boxes regressed at the centre
#: cell only (the tests of ``regression_radius_cells`` set it)
LR = BevModelConfig(grid=GRID, modalities=("lidar", "radar"), bev_channels=8,
                    backbone_channels=(8, 8), attention_heads=2, lidar_points_per_pillar=4,
                    radar_points_per_pillar=2, regression_radius_cells=0)
#: all three modalities; depth bins of 4 m from 1 to 17 m
CLR = replace(LR, modalities=MODALITIES, camera_channels=8, depth_bins=4, depth_min_m=1.0,
              depth_max_m=17.0, lift_heights_m=(0.5, 1.5))
#: a pinhole camera matching IMG (centre pixel 31.5, 23.5)
PINHOLE = CameraModel(64, 48, 40.0, 40.0, 31.5, 23.5)
#: base_link -> optical frame mounting of a forward camera at (0, 0.5, 1.0): it looks along x
#: through the centre of the cells with y in [0, 1)
T_BASE_CAM = SE3.from_rpy(-math.pi / 2, 0.0, -math.pi / 2, (0.0, 0.5, 1.0))
T_CAM_BASE = T_BASE_CAM.inverse().as_matrix()


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # the machine is shared with a training run: stay on one core
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def camera_net() -> Any:
    from mm_perception.detection.camera.detector import CameraDetector

    return CameraDetector.load().net


def make_net(config: BevModelConfig, camera_net: Any = None, seed: int = 0) -> BevFusionNet:
    """A randomly initialised network in eval mode whose outputs vary across cells.

    With freshly initialised BatchNorm statistics the activations shrink layer by layer and
    every heatmap score is ~0.1 (the prior): decoded objects would be near-ties. So the
    BatchNorm statistics are measured on two random frames (as training would) and the
    heatmap weights made larger, which gives well separated peaks."""
    torch.manual_seed(seed)
    net = BevFusionNet(config, camera_net if "camera" in config.modalities else None)
    torch.nn.init.normal_(net.heatmap.weight, std=0.5)
    frozen = set(net.camera.backbone.modules()) if "camera" in config.modalities else set()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d) and module not in frozen:
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration frames
    net.train()  # the frozen camera backbone stays in eval mode (CameraEncoder.train)
    proc = BevProcessor(config, image_size=IMG)
    with torch.no_grad():
        for k in (20, 21):
            net(**{n: torch.from_numpy(v) for n, v in proc.encode(random_frame(k)).items()})
    return net.eval()


def random_frame(seed: int = 0, n_lidar: int = 400, n_radar: int = 20,
                 cameras: int = 1) -> RawFrame:
    """LiDAR / radar points all over the 16 m grid (and some outside), random images."""
    rng = np.random.default_rng(seed)
    lidar = np.column_stack([rng.uniform(-10, 10, (n_lidar, 2)), rng.uniform(-0.5, 3, n_lidar),
                             rng.uniform(0, 255, n_lidar)]).astype(np.float32)
    radar = np.column_stack([rng.uniform(-10, 10, (n_radar, 2)), rng.uniform(0, 2, n_radar),
                             rng.normal(0, 5, n_radar), rng.normal(5, 5, n_radar)])
    images = tuple(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(cameras))
    return RawFrame(lidar=lidar, radar=radar.astype(np.float32), images=images,
                    cameras=(PINHOLE,) * cameras, T_cam_base=(T_CAM_BASE,) * cameras)


def forward(net: BevFusionNet, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = net(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    return {k: v.numpy() for k, v in out.items()}


# ---------------------------------------------------------------------------- config

@pytest.mark.parametrize(("make", "needles"), [
    (lambda: BevGrid(x_range_m=(-5, 5)), ["x_range_m", "multiple of 4"]),
    (lambda: BevGrid(y_range_m=(0, 5), cell_m=0.5), ["y_range_m", "multiple of 4"]),
    (lambda: BevGrid(x_range_m=(-8.3, 8)), ["x_range_m", "multiple of 4"]),
    (lambda: BevGrid(cell_m=0), ["cell_m", "0"]),
    (lambda: BevGrid(z_range_m=(2, 1)), ["z_range_m", "(2, 1)"]),
    (lambda: BevModelConfig(modalities=("lidar", "sonar")), ["modalities", "sonar"]),
    (lambda: BevModelConfig(modalities=()), ["modalities"]),
    (lambda: BevModelConfig(modalities=("lidar", "lidar")), ["modalities", "lidar"]),
    (lambda: BevModelConfig(fuser="sum"), ["fuser", "'sum'"]),
    (lambda: BevModelConfig(bev_channels=30, attention_heads=4),
     ["bev_channels", "30", "attention_heads", "4"]),
    (lambda: BevModelConfig(depth_min_m=20.0, depth_max_m=10.0),
     ["depth_min_m", "20.0", "depth_max_m", "10.0"]),
    (lambda: BevModelConfig(depth_min_m=0.0), ["depth_min_m", "0.0"]),
    (lambda: BevModelConfig(depth_bins=0), ["depth_bins", "0"]),
    (lambda: BevModelConfig(score_threshold=1.0), ["score_threshold", "1.0"]),
    (lambda: BevModelConfig(score_threshold=0.0), ["score_threshold", "0.0"]),
    (lambda: BevModelConfig(backbone_channels=(8,)),  # type: ignore[arg-type]
     ["backbone_channels", "(8,)"]),
    (lambda: BevModelConfig(lift_heights_m=()), ["lift_heights_m"]),
])
def test_config_errors_name_the_bad_value(make: Any, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        make()
    for needle in needles:
        assert needle in str(err.value)


def test_config_round_trip(tmp_path: Path) -> None:
    cfg = replace(CLR, fuser="attention", modalities=("radar", "camera"))
    assert cfg.modalities == ("camera", "radar")  # canonical MODALITIES order
    assert BevModelConfig.from_dict(cfg.to_dict()) == cfg
    # through JSON (tuples become lists)
    assert BevModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    cfg.save(tmp_path / "config.json")
    loaded = BevModelConfig.load(tmp_path / "config.json")
    assert loaded == cfg and loaded.grid.nx == NX and loaded.grid.ny == NY
    with pytest.raises(ConfigError, match="bogus"):
        BevModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        BevModelConfig.load(tmp_path / "bad.json")


def test_unknown_grid_key_is_a_config_error(tmp_path: Path) -> None:
    data = LR.to_dict()
    data["grid"] = {**data["grid"], "cell": 1.0}  # a typo of cell_m
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="cell"):
        BevModelConfig.load(tmp_path / "config.json")


def test_non_numeric_score_threshold_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="score_threshold"):
        BevModelConfig(score_threshold="high")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- processor

def test_cells_and_in_grid_mask() -> None:
    proc = BevProcessor(LR)
    pts = np.array([[-8.0, -8.0, 0.0],     # the first cell's corner
                    [7.99, 7.99, 0.0],     # the last cell
                    [0.5, -0.5, 1.0],      # i = 8, j = 7
                    [8.0, 0.0, 0.0],       # x max is outside
                    [0.0, -8.01, 0.0],     # y below
                    [0.0, 0.0, 4.0],       # z max is outside
                    [0.0, 0.0, -1.01]],    # z below
                   np.float32)
    cells, inside = proc.cells(pts)
    np.testing.assert_array_equal(inside, [True, True, True, False, False, False, False])
    np.testing.assert_array_equal(cells[:3], [0, 15 * NY + 15, 8 * NY + 7])


@pytest.mark.parametrize("per_pillar", [1, 3])
def test_pillarize_matches_brute_force_grouping(per_pillar: int) -> None:
    proc = BevProcessor(LR)
    rng = np.random.default_rng(3)
    cells = rng.choice([5, 17, 40, 41, 255], size=30).astype(np.int64)
    feats = rng.standard_normal((30, 4)).astype(np.float32)
    pillars, mask, uniq = proc.pillarize(feats, cells, per_pillar)
    expect_cells = sorted(set(cells.tolist()))
    np.testing.assert_array_equal(uniq, expect_cells)
    assert pillars.shape == (len(expect_cells), per_pillar, 4)
    assert mask.shape == (len(expect_cells), per_pillar, 1)
    for p, c in enumerate(expect_cells):
        rows = [k for k in range(len(cells)) if cells[k] == c][:per_pillar]  # cloud order
        n = len(rows)
        np.testing.assert_array_equal(pillars[p, :n], feats[rows])
        np.testing.assert_array_equal(pillars[p, n:], 0.0)
        np.testing.assert_array_equal(mask[p, :, 0], [1.0] * n + [0.0] * (per_pillar - n))
    empty = proc.pillarize(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), per_pillar)
    assert [a.shape for a in empty] == [(0, per_pillar, 4), (0, per_pillar, 1), (0,)]


def test_lidar_features_hand_example() -> None:
    proc = BevProcessor(LR)  # default state: x, y / 50, z / 4, intensity / 255
    lidar = np.array([[2.2, -3.6, 0.5, 102.0],   # cell (10, 4), centre (2.5, -3.5)
                      [2.8, -3.2, 1.5, 51.0],    # same cell: pillar mean (2.5, -3.4, 1.0)
                      [-7.5, 7.25, 0.0, 0.0],    # alone in cell (0, 15), centre (-7.5, 7.5)
                      [0.0, 0.0, 9.0, 1.0],      # above the z range: dropped
                      [np.nan, 0.0, 0.0, 1.0]],  # non-finite: dropped
                     np.float32)
    feats, cells = proc.lidar_features(lidar)
    np.testing.assert_array_equal(cells, [10 * NY + 4, 10 * NY + 4, 15])
    expect = np.array([
        [2.2 / 50, -3.6 / 50, 0.5 / 4, 0.4, -0.3, -0.1, -0.3, -0.2, -0.5],
        [2.8 / 50, -3.2 / 50, 1.5 / 4, 0.2, 0.3, 0.3, 0.3, 0.2, 0.5],
        [-7.5 / 50, 7.25 / 50, 0.0, 0.0, 0.0, -0.25, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(feats, expect, atol=1e-6)


def test_radar_features_hand_example() -> None:
    proc = BevProcessor(LR, ProcessorState(rcs_mean_dbsm=1.0, rcs_std_dbsm=2.0))
    radar = np.array([[3.0, 4.0, 0.5, 2.0, 5.0],      # cell (11, 12), centre (3.5, 4.5)
                      [20.0, 0.0, 0.5, 1.0, 1.0]],    # outside the grid
                     np.float32)
    feats, cells = proc.radar_features(radar)
    np.testing.assert_array_equal(cells, [11 * NY + 12])
    np.testing.assert_allclose(
        feats, [[3 / 50, 4 / 50, 0.5 / 4, 0.2, 2.0, -0.5, -0.5, 0.6, 0.8]], atol=1e-6)
    assert proc.radar_features(np.zeros((0, 5), np.float32))[0].shape == (0, 9)


def test_lift_geometry_of_a_pinhole_camera() -> None:
    cfg = replace(CLR, lift_heights_m=(1.0, 3.0))  # 1.0 m: the camera's own height
    proc = BevProcessor(cfg, image_size=IMG)
    grid, depth = proc.lift_geometry(PINHOLE, T_CAM_BASE)
    assert grid.shape == (2 * NX, NY, 2) and depth.shape == (1, 2 * NX, NY)
    # cell (12, 8): centre (4.5, 0.5) at 1.0 m, straight ahead: the image centre, depth 4.5
    np.testing.assert_allclose(grid[12, 8], [0.0, 0.0], atol=1e-6)
    assert depth[0, 12, 8] == pytest.approx(4.5, abs=1e-6)
    # same cell at 3.0 m: 2 m above the axis, up in the image (v = 23.5 - 40 * 2 / 4.5)
    v = 23.5 - 40.0 * 2.0 / 4.5
    np.testing.assert_allclose(grid[NX + 12, 8], [0.0, (v + 0.5) / 48 * 2 - 1], atol=1e-6)
    # one cell to the left (y = 1.5): 1 m left of the axis at 4.5 m depth
    u = 31.5 - 40.0 * 1.0 / 4.5
    np.testing.assert_allclose(grid[12, 9], [(u + 0.5) / 64 * 2 - 1, 0.0], atol=1e-6)
    # cells behind the camera (x < 0) are OUTSIDE with depth 0
    np.testing.assert_array_equal(grid[:8], OUTSIDE)
    np.testing.assert_array_equal(depth[0, :8], 0.0)
    # cached while the camera and the transform do not change
    again = proc.lift_geometry(PINHOLE, T_CAM_BASE)
    assert again[0] is grid
    moved = T_CAM_BASE.copy()
    moved[2, 3] += 1.0
    assert proc.lift_geometry(PINHOLE, moved)[1][0, 12, 8] != depth[0, 12, 8]


def test_encode_with_modalities_absent() -> None:
    proc = BevProcessor(CLR, image_size=IMG)
    full = random_frame(cameras=2)
    enc = proc.encode(full)
    assert set(enc) == set(INPUT_NAMES)
    np.testing.assert_array_equal(enc["present"], [1, 1, 1])
    assert enc["images"].shape == (2, 3, 48, 64) and enc["cam_grid"].shape[0] == 2
    assert len(enc["lidar_cells"]) > 0 and len(enc["radar_cells"]) > 0
    assert len(np.unique(enc["lidar_cells"])) == len(enc["lidar_cells"])
    none = proc.encode(full.without("camera", "lidar", "radar"))
    np.testing.assert_array_equal(none["present"], [0, 0, 0])
    assert none["lidar_pillars"].shape == (0, 4, 9) and none["lidar_mask"].shape == (0, 4, 1)
    assert none["lidar_cells"].shape == (0,) and none["lidar_cells"].dtype == np.int64
    assert none["radar_pillars"].shape == (0, 2, 9) and none["radar_cells"].shape == (0,)
    # no camera: 0 images, not zero-filled ones
    assert none["images"].shape == (0, 3, 48, 64)
    assert none["cam_grid"].shape == (0, 2 * NX, NY, 2)
    assert none["cam_depth"].shape == (0, 1, 2 * NX, NY)
    for name, spec in zip(INPUT_NAMES, io_specs(CLR, IMG)[0], strict=True):
        assert none[name].dtype == np.dtype(spec.dtype), name
    # a model without a camera encoder ignores the images and says so in `present`
    lr = BevProcessor(LR).encode(full)
    np.testing.assert_array_equal(lr["present"], [0, 1, 1])
    assert lr["images"].shape[0] == 0
    # LiDAR present with no point in the grid: 0 pillars but present
    far = RawFrame(lidar=np.array([[30.0, 0, 0, 1]], np.float32), radar=full.radar)
    enc_far = BevProcessor(LR).encode(far)
    assert enc_far["lidar_pillars"].shape[0] == 0
    np.testing.assert_array_equal(enc_far["present"], [0, 1, 1])


def test_raw_frame_without() -> None:
    raw = replace(random_frame(), notes=("a note",))
    assert raw.present == {"camera": True, "lidar": True, "radar": True}
    no_cam = raw.without("camera")
    assert no_cam.present == {"camera": False, "lidar": True, "radar": True}
    assert no_cam.images == () and no_cam.cameras == () and no_cam.T_cam_base == ()
    assert no_cam.lidar is raw.lidar and no_cam.notes == ("a note",)
    no_lidar = raw.without("lidar", "radar")
    assert no_lidar.lidar.shape == (0, 4) and no_lidar.radar.shape == (0, 5)
    assert no_lidar.present == {"camera": True, "lidar": False, "radar": False}
    assert len(no_lidar.images) == 1
    with pytest.raises(ValueError, match="sonar"):
        raw.without("sonar")
    with pytest.raises(ValueError, match="lidar"):
        RawFrame(lidar=np.zeros((3, 3), np.float32), radar=np.zeros((0, 5), np.float32))


def test_depth_targets_hand_example() -> None:
    proc = BevProcessor(CLR, image_size=IMG)  # bins of 4 m from 1 m
    lidar = np.array([[5.0, 0.5, 1.0, 0.0],    # image centre, depth 5 -> bin 1
                      [14.0, 0.5, 1.0, 0.0],   # same feature cell, farther (bin 3)
                      [20.0, 0.5, 1.0, 0.0],   # same cell, beyond depth_max
                      [9.0, -1.3, 1.0, 0.0],   # u = 31.5 + 40 * 1.8 / 9 = 39.5 -> bin 2
                      [-5.0, 0.5, 1.0, 0.0],   # behind the camera
                      [1.5, 0.5, 1.0, 0.0]],   # image centre, depth 1.5 -> bin 0
                     np.float32)
    raw = RawFrame(lidar=lidar, radar=np.zeros((0, 5), np.float32), images=(
        np.zeros((48, 64, 3), np.uint8),), cameras=(PINHOLE,), T_cam_base=(T_CAM_BASE,))
    out = proc.depth_targets(raw, (12, 16))
    expect = np.full((1, 12, 16), -1, np.int64)
    expect[0, 5, 7] = 0   # the nearest point of the centre cell wins (1.5 m, bin 0)
    expect[0, 5, 9] = 2
    np.testing.assert_array_equal(out, expect)
    # without the near point the centre cell gets the 5 m point's bin
    out = proc.depth_targets(replace(raw, lidar=lidar[:5]), (12, 16))
    assert out[0, 5, 7] == 1 and out[0, 5, 9] == 2 and (out >= 0).sum() == 2


def empty_maps() -> dict[str, np.ndarray]:
    shapes = {"heatmap": 5, "offset": 2, "z": 1, "size": 3, "rot": 2, "velocity": 2}
    return {k: np.zeros((1, c, NX, NY), np.float32) for k, c in shapes.items()}


def test_decode_hand_made_maps() -> None:
    proc = BevProcessor(replace(LR, score_threshold=0.2, nms_radius_m=1.0))
    maps = empty_maps()
    hm = maps["heatmap"][0]
    # a car at cell (10, 6), offset (0.25, 0.75): centre (2.25, -1.25)
    hm[0, 10, 6], hm[3, 10, 6] = 0.9, 0.1
    maps["offset"][0, :, 10, 6] = (0.25, 0.75)
    maps["z"][0, 0, 10, 6] = 0.8
    maps["size"][0, :, 10, 6] = np.log([4.0, 2.0, 1.5])
    maps["rot"][0, :, 10, 6] = (math.sin(0.5), math.cos(0.5))
    maps["velocity"][0, :, 10, 6] = (3.0, -1.0)
    # a weaker pedestrian peak 0.45 m away (another class): dropped by NMS
    hm[3, 10, 7] = 0.6
    maps["offset"][0, :, 10, 7] = (0.25, 0.2)
    # a cyclist far away: kept
    hm[4, 2, 2] = 0.5
    maps["offset"][0, :, 2, 2] = (0.5, 0.5)
    # a truck below the threshold: not decoded
    hm[1, 14, 14] = 0.19
    objs = proc.decode(maps, 123, sources=("feature:lidar",))
    assert [o.label for o in objs] == [ObjectClass.CAR, ObjectClass.CYCLIST]
    car = objs[0]
    np.testing.assert_allclose(car.box.center, [2.25, -1.25, 0.8], atol=1e-6)
    np.testing.assert_allclose(car.box.size, [4.0, 2.0, 1.5], rtol=1e-5)
    assert car.box.yaw == pytest.approx(0.5, abs=1e-6)
    assert car.score == pytest.approx(0.9) and car.stamp_ns == 123
    assert car.velocity is not None
    np.testing.assert_allclose(car.velocity, [3.0, -1.0, 0.0], atol=1e-6)
    assert car.class_probs["car"] == pytest.approx(0.9)
    assert car.class_probs["pedestrian"] == pytest.approx(0.1)
    assert sum(car.class_probs.values()) == pytest.approx(1.0)
    assert set(car.class_probs) == {c.value for c in CLASSES}
    assert car.sources == ("feature:lidar",) and car.box.frame_id == "base_link"
    np.testing.assert_allclose(objs[1].box.center[:2], [-8 + 2.5, -8 + 2.5], atol=1e-6)
    # the pedestrian survives when the car is not there
    hm[0, 10, 6] = 0.0
    assert ObjectClass.PEDESTRIAN in [o.label for o in proc.decode(maps, 0)]
    # a score exactly at the threshold is kept; nothing above it -> []
    hm[1, 14, 14] = 0.2
    assert ObjectClass.TRUCK in [o.label for o in proc.decode(maps, 0)]
    assert proc.decode(empty_maps(), 0) == []
    hm[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        proc.decode(maps, 0)


def test_decode_max_objects() -> None:
    proc = BevProcessor(replace(LR, max_objects=3))
    maps = empty_maps()
    maps["heatmap"][0, 0, ::3, ::3] = np.linspace(0.3, 0.9, 36).reshape(6, 6)
    objs = proc.decode(maps, 0)
    assert [o.score for o in objs] == pytest.approx([0.9, 0.9 - 0.6 / 35, 0.9 - 1.2 / 35])


# ---------------------------------------------------------------------------- frame_inputs

RIG: dict[str, Any] = {
    "base_frame": "base_link",
    "sensors": {
        "cam_front": {
            "type": "camera", "topic": "/cam_front/image", "frame_id": "cam_front",
            "intrinsics": {"width": 64, "height": 48, "fx": 40.0, "fy": 40.0, "cx": 31.5,
                           "cy": 23.5, "distortion_model": "none", "D": []},
            "extrinsics": {"translation": [0.0, 0.5, 1.0], "rpy_deg": [-90.0, 0.0, -90.0]}},
        "lidar": {
            "type": "lidar", "topic": "/lidar", "frame_id": "lidar",
            "extrinsics": {"translation": [0.5, 0.0, 1.8], "rpy_deg": [0.0, 0.0, 90.0]}},
        "radar": {
            "type": "radar", "topic": "/radar", "frame_id": "radar",
            "fields": {"x": "x", "y": "y", "z": "z", "doppler": "v"},
            "extrinsics": {"translation": [3.6, 0.0, 0.5], "rpy_deg": [0.0, 0.0, 0.0]}},
    },
}
SPEED = 10.0  # m/s along x


def odometry() -> OdometryBuffer:
    """Straight driving at SPEED, base_link at x = 0 at STAMP."""
    buf = OdometryBuffer()
    for t in range(STAMP - 300 * MS, STAMP + 300 * MS, 10 * MS):
        pose = SE3.from_xy_yaw(SPEED * (t - STAMP) / 1e9, 0.0, 0.0)
        buf.add(EgoState(t, "odom", "base_link", pose,
                         linear_velocity=np.array([SPEED, 0.0, 0.0])))
    return buf


def sensor_set(radar_dt_ns: int = -50 * MS, encoding: str = "rgb8",
               ego: EgoState | None = None) -> tuple[SensorSet, np.ndarray]:
    """A set with a 3-point LiDAR cloud, a radar scan of two static targets at
    ``STAMP + radar_dt_ns`` and one camera; returns the set and the targets' base_link
    positions at the set stamp."""
    xyz = np.array([[10.0, 0.0, 0.0], [0.0, 5.0, -1.0], [1.0, 2.0, 3.0]], np.float32)
    pts = np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    for k, name in enumerate("xyz"):
        pts[name] = xyz[:, k]
    pts["intensity"] = [10, 20, 30]
    cloud = PointCloud("lidar", STAMP, "lidar", pts)
    # static targets, in base_link at the set stamp; at the scan time base_link was
    # SPEED * dt behind (x smaller), so the targets were that much further ahead
    targets = np.array([[20.0, 5.0, 0.5], [8.0, -6.0, 1.0]])
    shift = SPEED * radar_dt_ns / 1e9
    at_scan = targets - [shift, 0.0, 0.0]
    in_radar = at_scan - [3.6, 0.0, 0.5]
    u = in_radar / np.linalg.norm(in_radar, axis=1, keepdims=True)
    doppler = -(u @ np.array([SPEED, 0.0, 0.0]))  # static target seen while moving
    scan = RadarScan("radar", STAMP + radar_dt_ns, "radar", in_radar.astype(np.float32),
                     doppler.astype(np.float32), np.array([3.0, 7.0], np.float32))
    if encoding == "mono8":
        image = np.full((48, 64), 90, np.uint8)
    else:
        image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    cam = CameraFrame("cam_front", STAMP, "cam_front", image, encoding)
    return SensorSet(STAMP, cameras={"cam_front": cam}, lidars={"lidar": cloud},
                     radars={"radar": scan}, ego=ego), targets


def test_frame_inputs_transforms_and_compensates() -> None:
    rig = Rig.from_dict(RIG)
    sset, targets = sensor_set()
    raw = frame_inputs(sset, rig, odometry())
    assert raw.notes == ()
    assert raw.present == {"camera": True, "lidar": True, "radar": True}
    # LiDAR: yawed 90 deg left and mounted at (0.5, 0, 1.8)
    np.testing.assert_allclose(raw.lidar, [[0.5, 10.0, 1.8, 10], [-4.5, 0.0, 0.8, 20],
                                           [-1.5, 1.0, 4.8, 30]], atol=1e-5)
    # radar: moved to the set stamp by the odometry, Doppler of static targets ~0 over ground
    np.testing.assert_allclose(raw.radar[:, :3], targets, atol=1e-4)
    np.testing.assert_allclose(raw.radar[:, 3], 0.0, atol=1e-4)
    np.testing.assert_array_equal(raw.radar[:, 4], [3.0, 7.0])
    # each return's line of sight starts at the radar, also moved to the set stamp: the
    # scan is 50 ms old, so the bumper at x = 3.6 was then 0.5 m behind where it is now
    assert raw.radar_origins is not None
    np.testing.assert_allclose(raw.radar_origins, [[3.1, 0.0, 0.5]] * 2, atol=1e-5)
    assert raw.without("radar").radar_origins.shape == (0, 3)  # type: ignore[union-attr]
    np.testing.assert_array_equal(raw.without("camera").radar_origins, raw.radar_origins)
    with pytest.raises(ValueError, match="radar_origins"):
        replace(raw, radar_origins=raw.radar_origins[:1])
    # camera at the set stamp: T_cam_base is the inverse mounting
    np.testing.assert_allclose(raw.T_cam_base[0], T_CAM_BASE, atol=1e-9)
    assert raw.images[0].shape == (48, 64, 3) and raw.cameras[0].fx == 40.0


def test_frame_inputs_camera_exposure_after_the_set_stamp() -> None:
    rig = Rig.from_dict(RIG)
    sset, _ = sensor_set()
    cam = sset.cameras["cam_front"]
    late = CameraFrame("cam_front", STAMP + 50 * MS, "cam_front", cam.image, "rgb8")
    raw = frame_inputs(replace(sset, cameras={"cam_front": late}), rig, odometry())
    # a static point 10.5 m ahead at the set stamp is 10 m ahead at the exposure
    p = np.array([10.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose((raw.T_cam_base[0] @ p)[:3], [0.0, 0.0, 10.0], atol=1e-6)


def test_frame_inputs_leaves_sensors_out_with_a_note() -> None:
    rig = Rig.from_dict(RIG)
    sset, _ = sensor_set(encoding="mono8")
    raw = frame_inputs(sset, rig, None)  # no odometry and no ego state in the set
    assert raw.present == {"camera": False, "lidar": True, "radar": False}
    assert raw.radar.shape == (0, 5) and raw.images == ()
    assert any("radar 'radar'" in n and "ego state" in n for n in raw.notes), raw.notes
    assert any("camera 'cam_front'" in n and "mono8" in n for n in raw.notes), raw.notes
    # the set's own ego state is enough for the Doppler (the scan is at the set stamp here)
    ego = EgoState(STAMP, "odom", "base_link", SE3.identity(),
                   linear_velocity=np.array([SPEED, 0.0, 0.0]))
    sset, targets = sensor_set(radar_dt_ns=0, ego=ego)
    raw = frame_inputs(sset, rig, None)
    assert raw.present["radar"] and raw.notes == ()
    np.testing.assert_allclose(raw.radar[:, 3], 0.0, atol=1e-4)
    np.testing.assert_allclose(raw.radar[:, :3], targets, atol=1e-4)


# ---------------------------------------------------------------------------- model

def all_subsets() -> Iterator[tuple[str, ...]]:
    for r in range(len(MODALITIES) + 1):
        yield from itertools.combinations(MODALITIES, r)


def test_forward_with_every_subset_of_modalities(camera_net: Any) -> None:
    net = make_net(CLR, camera_net)
    proc = BevProcessor(CLR, image_size=IMG)
    raw = random_frame(1)
    empty = {"zero lidar pillars": replace(raw, lidar=raw.lidar[:0]),
             "zero radar pillars": replace(raw, radar=raw.radar[:0]),
             "two cameras": random_frame(2, cameras=2)}
    frames = {f"without {drop}": raw.without(*drop) for drop in all_subsets()} | empty
    channels = {"heatmap": 5, "offset": 2, "z": 1, "size": 3, "rot": 2, "velocity": 2}
    for what, frame in frames.items():
        enc = proc.encode(frame)
        out = forward(net, enc)
        assert set(out) == set(OUTPUT_NAMES), what
        for name, c in channels.items():
            assert out[name].shape == (1, c, NX, NY), (what, name)
            assert np.all(np.isfinite(out[name])), (what, name)
    assert enc["lidar_pillars"].shape[0] > 0  # the last frame did have points


@pytest.mark.parametrize("fuser", ["concat", "attention"])
def test_absent_modality_has_no_influence(camera_net: Any, fuser: str) -> None:
    cfg = replace(CLR, fuser=fuser)
    net = make_net(cfg, camera_net)
    enc = BevProcessor(cfg, image_size=IMG).encode(random_frame(4))
    other = BevProcessor(cfg, image_size=IMG).encode(random_frame(5, n_lidar=900, n_radar=40))
    for k, m in enumerate(MODALITIES):
        feeds = dict(enc)
        feeds["present"] = np.asarray(
            [0.0 if q == k else 1.0 for q in range(3)], np.float32)
        changed = dict(feeds)
        keys = {"camera": ("images", "cam_grid", "cam_depth"),
                "lidar": ("lidar_pillars", "lidar_mask", "lidar_cells"),
                "radar": ("radar_pillars", "radar_mask", "radar_cells")}[m]
        for key in keys:
            changed[key] = other[key]
        a, b = forward(net, feeds), forward(net, changed)
        for name in OUTPUT_NAMES:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{m} {name}")
        # the same change with the modality present does change the output
        changed["present"] = np.ones(3, np.float32)
        feeds["present"] = np.ones(3, np.float32)
        assert not np.array_equal(forward(net, feeds)["heatmap"],
                                  forward(net, changed)["heatmap"]), m


def no_targets() -> dict[str, np.ndarray]:
    return make_targets(np.zeros((0, 9), np.float32), np.zeros(0, np.int8),
                        np.zeros((0, 3), np.int32), CLR)


def test_batched_training_path_equals_single_frames(camera_net: Any) -> None:
    net = make_net(CLR, camera_net)
    proc = BevProcessor(CLR, image_size=IMG)
    frames = [random_frame(6), random_frame(7).without("camera"),
              random_frame(8, cameras=2).without("lidar"), random_frame(9).without("radar")]
    batch = collate([(f, no_targets()) for f in frames], proc)
    np.testing.assert_array_equal(batch["camera_frame"].numpy(), [0, 2, 2, 3])
    with torch.no_grad():
        feats, depth_logits = net.modality_features(batch, batch["camera_frame"],
                                                    batch=len(frames))
        out = net.fuse_and_detect(feats, batch["present"])
    assert depth_logits is not None and depth_logits.shape == (4, 4, 12, 16)
    for b, frame in enumerate(frames):
        single = forward(net, proc.encode(frame))
        for name in OUTPUT_NAMES:
            # float32 sums of a batch and of one frame differ in their last bits (a logit of
            # -7.16 was off by 1.2e-5 on one CPU): relative as well as absolute slack
            np.testing.assert_allclose(out[name][b:b + 1].numpy(), single[name], rtol=1e-5,
                                       atol=1e-5, err_msg=f"frame {b} {name}")


# ---------------------------------------------------------------------------- training

def test_make_targets() -> None:
    boxes = np.array([
        [2.3, -1.6, 0.8, 4.0, 2.0, 1.5, 0.3, 5.0, 0.5],    # car, LiDAR hits
        [-5.0, 5.0, 0.9, 0.6, 0.6, 1.7, 0.0, 0.0, 0.0],    # pedestrian, camera only
        [20.0, 0.0, 0.8, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0],    # outside the grid
        [-7.5, -7.5, 0.8, 1.8, 0.7, 1.7, -1.0, 0.0, 2.0]],  # cyclist, radar hits only
        np.float32)
    labels = np.array([0, 3, 0, 4], np.int8)
    evidence = np.array([[12, 0, 300], [0, 0, 500], [5, 1, 0], [0, 2, 0]], np.int32)
    t = make_targets(boxes, labels, evidence, CLR)
    assert t["heatmap"].shape == (5, NX, NY) and t["heat_weight"].shape == (1, NX, NY)
    heat = t["heatmap"]
    assert heat[0, 10, 6] == 1.0 and heat[0].max() == 1.0
    assert np.count_nonzero(heat[0] == 1.0) == 1
    assert heat[4, 0, 0] == 1.0 and np.count_nonzero(heat[4] == 1.0) == 1
    assert not heat[3].any() and not heat[1].any() and not heat[2].any()
    np.testing.assert_array_equal(t["index"], [10 * NY + 6, 0])
    np.testing.assert_allclose(t["targets"][0], [
        0.3, 0.4, 0.8, math.log(4.0), math.log(2.0), math.log(1.5), math.sin(0.3),
        math.cos(0.3), 5.0, 0.5], atol=1e-5)
    np.testing.assert_allclose(t["targets"][1, :2], [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(t["targets"][1, 6:], [math.sin(-1), math.cos(-1), 0, 2],
                               atol=1e-6)
    # the camera-only pedestrian (cell (3, 13)) is ignored: zero weight around it
    weight = t["heat_weight"][0]
    assert weight[3, 13] == 0.0 and weight[1, 11] == 0.0
    assert weight[10, 6] == 1.0 and weight[0, 0] == 1.0
    assert weight.min() == 0.0 and (weight == 1.0).sum() > NX * NY // 2
    empty = no_targets()
    assert empty["targets"].shape == (0, 10) and empty["index"].shape == (0,)


def test_make_targets_on_the_cells_around_each_centre() -> None:
    cfg = replace(CLR, regression_radius_cells=1)
    boxes = np.array([
        [2.3, -1.6, 0.8, 4.0, 2.0, 1.5, 0.3, 5.0, 0.5],    # car, centre cell (10, 6)
        [-7.5, -7.5, 0.8, 1.8, 0.7, 1.7, -1.0, 0.0, 2.0]],  # cyclist in the corner cell
        np.float32)
    labels = np.array([0, 4], np.int8)
    evidence = np.array([[12, 0, 300], [0, 2, 0]], np.int32)
    t = make_targets(boxes, labels, evidence, cfg)
    t0 = make_targets(boxes, labels, evidence, CLR)
    # the centre rows come first and are the radius-0 ones; the heatmap does not change
    np.testing.assert_array_equal(t["index"][:2], t0["index"])
    np.testing.assert_array_equal(t["targets"][:2], t0["targets"])
    np.testing.assert_array_equal(t["heatmap"], t0["heatmap"])
    # 8 cells around the car, 3 inside the grid around the corner cell (0, 0)
    assert len(t["index"]) == 2 + 8 + 3 and len(set(t["index"].tolist())) == 13
    fx, fy = 10.3, 6.4  # the car's centre in cells
    for cell, row in zip(t["index"][2:], t["targets"][2:], strict=True):
        ci, cj = divmod(int(cell), NY)
        if (ci, cj) in ((0, 1), (1, 0), (1, 1)):
            np.testing.assert_allclose(row[:2], [0.5 - ci, 0.5 - cj], atol=1e-6)
            np.testing.assert_array_equal(row[2:], t0["targets"][1, 2:])
        else:
            assert max(abs(ci - 10), abs(cj - 6)) == 1
            # the offset from this cell to the centre: a peak here decodes the same box
            np.testing.assert_allclose(row[:2], [fx - ci, fy - cj], atol=1e-5)
            np.testing.assert_array_equal(row[2:], t0["targets"][0, 2:])
    assert np.all(t["targets"][:, :2] >= -1.0) and np.all(t["targets"][:, :2] <= 2.0)


def test_around_cells_go_to_the_nearest_centre_and_never_take_a_centre() -> None:
    cfg = replace(CLR, regression_radius_cells=1)
    # A centred in cell (5, 8), B at x cell 7.4 (cell (7, 8)), D centred in cell (8, 8),
    # inside B's neighbourhood
    xs = {"A": 5.5, "B": 7.4, "D": 8.5}
    # B before A: the nearer object wins the shared cell, not the last one drawn
    boxes = np.array([[xs["B"] - 8, 0.5, 0.8, 4, 2, 1.5, 1.0, 0, 0],
                      [xs["A"] - 8, 0.5, 0.8, 4, 2, 1.5, 0, 0, 0],
                      [xs["D"] - 8, 0.5, 0.8, 4, 2, 1.5, 2.0, 0, 0]], np.float32)
    t = make_targets(boxes, np.zeros(3, np.int8), np.full((3, 3), 5, np.int32), cfg)
    by_cell: dict[int, list[np.ndarray]] = {}
    for cell, row in zip(t["index"].tolist(), t["targets"], strict=True):
        by_cell.setdefault(cell, []).append(row)
    assert all(len(v) == 1 for v in by_cell.values())  # one box per cell
    # cell (6, 8) is 1.0 from A's centre and 0.9 from B's: B's box (yaw 1.0)
    row = by_cell[6 * NY + 8][0]
    assert row[6] == pytest.approx(math.sin(1.0)) and row[0] == pytest.approx(1.4)
    # D's centre cell (8, 8) is in B's neighbourhood but keeps D's own box
    row = by_cell[8 * NY + 8][0]
    assert row[6] == pytest.approx(math.sin(2.0)) and row[0] == pytest.approx(0.5)


def test_offset_range_follows_the_regression_radius() -> None:
    for r in (0, 1, 2):
        net = make_net(replace(LR, regression_radius_cells=r))
        enc = BevProcessor(net.config).encode(random_frame(1))
        layer = net.regress["offset"]
        assert isinstance(layer, torch.nn.Conv2d) and layer.bias is not None
        torch.nn.init.zeros_(layer.weight)
        ends: list[float] = []
        for bias in (-20.0, 20.0):  # the output saturates at either end of its range
            torch.nn.init.constant_(layer.bias, bias)
            ends.append(float(forward(net, enc)["offset"].mean()))
        assert ends == [pytest.approx(-r, abs=1e-5), pytest.approx(1 + r, abs=1e-5)]


def test_regression_radius_config() -> None:
    cfg = replace(LR, regression_radius_cells=2)
    assert BevModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # configs written before the field existed load with the centre cell only
    old = {k: v for k, v in LR.to_dict().items() if k != "regression_radius_cells"}
    assert BevModelConfig.from_dict(old).regression_radius_cells == 0
    # ... whereas a hand-written training config without it takes the default
    assert BevModelConfig.from_dict(old, saved=False).regression_radius_cells == 1
    assert BevModelConfig().regression_radius_cells == 1
    bad: Any
    for bad in (-1, 4, 1.5, True, "1"):
        with pytest.raises(ConfigError, match="regression_radius_cells"):
            replace(LR, regression_radius_cells=bad)


def test_training_config_file_may_be_partial(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    path = tmp_path / "cfg.json"
    need = ["--data", str(tmp_path), "--out", str(tmp_path / "out")]
    path.write_text(json.dumps({"fuser": "attention", "bev_channels": 16}))
    cfg = model_config(parser.parse_args([*need, "--config", str(path), "--modalities",
                                          "lidar"]))
    assert cfg == replace(BevModelConfig(), fuser="attention", bev_channels=16,
                          modalities=("lidar",))
    path.write_text(json.dumps({"regression_radius_cells": 0}))
    cfg = model_config(parser.parse_args([*need, "--config", str(path), "--fuser",
                                          "attention"]))
    assert cfg == replace(BevModelConfig(), regression_radius_cells=0, fuser="attention")
    assert model_config(parser.parse_args(need)) == BevModelConfig()


def test_dropout_subset() -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        drop = dropout_subset(MODALITIES, rng, keep_all=0.4)
        assert len(drop) < len(MODALITIES)  # never everything
        assert set(drop) <= set(MODALITIES)
        seen.add(drop)
    # every non-empty proper subset is kept at some point, and "keep all" too
    assert len(seen) == 7 and () in seen
    assert all(dropout_subset(MODALITIES, rng, keep_all=1.0) == () for _ in range(50))
    assert all(dropout_subset(("lidar",), rng, keep_all=0.0) == () for _ in range(20))
    assert all(len(dropout_subset(("lidar", "radar"), rng, 0.0)) == 1 for _ in range(20))


def test_bev_loss_backward(camera_net: Any) -> None:
    net = make_net(CLR, camera_net).train()
    proc = BevProcessor(CLR, image_size=IMG)
    boxes = np.array([[2.3, -1.6, 0.8, 4.0, 2.0, 1.5, 0.3, 5.0, 0.5]], np.float32)
    target = make_targets(boxes, np.array([0], np.int8), np.array([[9, 1, 0]], np.int32), CLR)
    # LiDAR points on the camera's axis give depth targets
    frame = random_frame(10)
    ahead = np.array([[x, 0.5, 1.0, 50.0] for x in (3.0, 6.0, 9.0)], np.float32)
    frame = replace(frame, lidar=np.concatenate([frame.lidar, ahead]))
    batch = collate([(frame, target), (random_frame(11).without("camera"), no_targets())],
                    proc)
    losses = bev_loss(net, batch)
    assert {"focal", "offset", "z", "size", "rot", "velocity", "depth", "total"} <= set(losses)
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    losses["total"].backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    cam = net.camera
    assert isinstance(cam, CameraEncoder)
    depth_head = cam.head[1]
    assert isinstance(depth_head, torch.nn.Conv2d) and depth_head.weight.grad is not None
    assert float(depth_head.weight.grad.abs().sum()) > 0  # the depth loss flows
    assert all(p.grad is None for p in cam.backbone.parameters())  # frozen


def tiny_shard(seed: int, frames: int = 4, cameras: int = 1) -> Shard:
    """A hand-made shard: random points, ``cameras`` images per frame (the same camera model
    and mounting), two boxes a frame."""
    rng = np.random.default_rng(seed)
    lidar = [np.column_stack([rng.uniform(-10, 10, (300, 2)), rng.uniform(-0.5, 2.5, 300),
                              rng.uniform(0, 100, 300)]).astype(np.float32)
             for _ in range(frames)]
    radar = [np.column_stack([rng.uniform(-10, 10, (6, 2)), rng.uniform(0, 1, 6),
                              rng.normal(0, 3, 6), rng.normal(5, 3, 6)]).astype(np.float32)
             for _ in range(frames)]
    boxes = [np.array([[rng.uniform(-6, 6), rng.uniform(-6, 6), 0.8, 4.2, 1.8, 1.5,
                        rng.uniform(-3, 3), 2.0, 0.0],
                       [rng.uniform(-6, 6), rng.uniform(-6, 6), 0.9, 0.6, 0.6, 1.7, 0.0,
                        0.0, 1.0]], np.float32) for _ in range(frames)]

    def offsets(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)

    camera = {"width": 64, "height": 48, "fx": 40.0, "fy": 40.0, "cx": 31.5, "cy": 23.5,
              "distortion_model": "none", "D": []}
    return Shard(stamps_ns=np.arange(frames, dtype=np.int64) * 100 * MS,
                 lidar=np.concatenate(lidar), lidar_offsets=offsets(lidar),
                 radar=np.concatenate(radar), radar_offsets=offsets(radar),
                 images=rng.integers(0, 256, (frames, cameras, 48, 64, 3), dtype=np.uint8),
                 T_cam_base=np.tile(T_CAM_BASE, (frames, cameras, 1, 1)),
                 boxes=np.concatenate(boxes), labels=np.tile(np.array([0, 3], np.int8), frames),
                 evidence=np.tile(np.array([[20, 2, 100], [5, 0, 50]], np.int32), (frames, 1)),
                 box_offsets=offsets(boxes), cameras=(camera,) * cameras,
                 camera_names=tuple(f"cam_{k}" for k in range(cameras)))


def test_shard_with_several_cameras_round_trips_in_camera_order(tmp_path: Path) -> None:
    shard = tiny_shard(3, frames=2, cameras=3)
    save_shard(tmp_path / "s.npz", shard)
    back = load_shard(tmp_path / "s.npz")
    assert back.camera_names == ("cam_0", "cam_1", "cam_2") and back.num_cameras == 3
    np.testing.assert_array_equal(back.images, shard.images)
    raw = back.frame(1)
    assert len(raw.images) == len(raw.cameras) == len(raw.T_cam_base) == 3
    for k in range(3):  # the frame's k-th image is camera k's, not a copy of the first
        np.testing.assert_array_equal(raw.images[k], shard.images[1, k])


def test_single_camera_shard_format_still_loads(tmp_path: Path) -> None:
    new = tiny_shard(4, frames=2)
    arrays = {k: getattr(new, k) for k in ("stamps_ns", "lidar", "lidar_offsets", "radar",
                                           "radar_offsets", "boxes", "labels", "evidence",
                                           "box_offsets")}
    # the format before cameras were a list: no camera axis, one camera and its name
    np.savez_compressed(tmp_path / "old.npz", **arrays, images=new.images[:, 0],
                        T_cam_base=new.T_cam_base[:, 0],
                        camera=np.asarray(json.dumps(new.cameras[0])),
                        camera_name=np.asarray("cam_front"))
    old = load_shard(tmp_path / "old.npz")
    assert old.camera_names == ("cam_front",) and old.images.shape == new.images.shape
    np.testing.assert_array_equal(old.frame(1).images[0], new.images[1, 0])


def test_shard_refuses_images_that_do_not_match_its_cameras() -> None:
    shard = tiny_shard(5, frames=2, cameras=2)
    with pytest.raises(ValueError, match="cameras"):
        replace(shard, camera_names=("cam_0",), cameras=shard.cameras[:1])
    with pytest.raises(ValueError, match="T_cam_base"):
        replace(shard, T_cam_base=shard.T_cam_base[:, :1])


def test_training_caches_the_features_of_every_camera(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    save_shard(data / shard_name("urban", 100), tiny_shard(100, frames=2, cameras=2))
    save_shard(data / shard_name("urban", 500), tiny_shard(500, frames=1, cameras=2))
    (tmp_path / "cfg.json").write_text(json.dumps(CLR.to_dict()))
    seen: list[tuple[list[tuple[int, int, int]], int]] = []
    real_get = ImageFeatureCache.get

    def get(self: ImageFeatureCache, net: Any, keys: Any, images: torch.Tensor) -> Any:
        feats = real_get(self, net, keys, images)
        seen.append((list(keys), int(images.shape[0])))
        # each image gets its own features, not another camera's of the same frame
        torch.testing.assert_close(feats, net.camera.image_features(images).float(),
                                   rtol=0.02, atol=0.02)
        return feats

    monkeypatch.setattr(ImageFeatureCache, "get", get)
    train(train_args(data, tmp_path / "out", tmp_path / "cfg.json", "--modalities",
                     "camera,lidar,radar", "--keep-all", "1.0"))
    assert seen and all(len(k) == n and len(set(k)) == n for k, n in seen)
    assert {k[2] for keys, _ in seen for k in keys} == {0, 1}
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    assert log["train_cameras"] == ["cam_0", "cam_1"]


def train_args(data: Path, out: Path, config: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([
        "--data", str(data), "--out", str(out), "--config", str(config),
        "--modalities", "lidar,radar", "--scenes", "urban", "--train-seeds", "100",
        "--val-seeds", "500", "--epochs", "1", "--batch-size", "2", "--threads", "1",
        "--precision", "fp32", "--warmup-steps", "1", "--no-progress", *extra])


class KilledError(Exception):
    """Stands for a run killed after its first epoch's checkpoint."""


def test_train_writes_weights_and_resumes(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    save_shard(data / shard_name("urban", 100), tiny_shard(100))
    save_shard(data / shard_name("urban", 500), tiny_shard(500, frames=2))
    (tmp_path / "cfg.json").write_text(json.dumps(LR.to_dict()))
    out = tmp_path / "out"

    real_save = torch.save

    def save_then_die(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        real_save(obj, f, *args, **kwargs)
        if Path(f).name == "checkpoint.pt":
            raise KilledError

    # killed right after epoch 1 of 2 wrote its checkpoint: no weights yet
    with monkeypatch.context() as m:
        m.setattr(torch, "save", save_then_die)
        with pytest.raises(KilledError):
            train(train_args(data, out, tmp_path / "cfg.json", "--epochs", "2"))
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 0 and not (out / "bev_fusion.pt").exists()
    log = train(train_args(data, out, tmp_path / "cfg.json", "--epochs", "2", "--resume"))
    assert [e["epoch"] for e in log["epochs"]] == [1, 2]
    assert [e["steps"] for e in log["epochs"]] == [2, 2]  # 4 frames, batches of 2
    assert log["epochs"][0] == ckpt["log"]["epochs"][0]  # epoch 1 came from the checkpoint
    assert all(math.isfinite(e["total"]) for e in log["epochs"])
    assert log["validation"]["frames"] == 2
    for name in ("bev_fusion.pt", "bev_fusion.onnx", "config.json", "processor.json",
                 "train_log.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint.pt").exists()
    net, proc = load_weights(out)
    assert net.config == LR and proc.state.intensity_scale > 0
    # the resumed run ends where an uninterrupted one does (seeded, deterministic)
    straight = tmp_path / "straight"
    train(train_args(data, straight, tmp_path / "cfg.json", "--epochs", "2"))
    a = torch.load(out / "bev_fusion.pt", weights_only=True)
    b = torch.load(straight / "bev_fusion.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_init_from_a_lidar_only_model_starts_as_that_model(tmp_path: Path) -> None:
    lidar_cfg = replace(LR, modalities=("lidar",))
    source = make_net(lidar_cfg, seed=1)
    save_weights(tmp_path / "lidar", source, BevProcessor(lidar_cfg))
    fused = make_net(LR, seed=2)
    info = init_from(fused, tmp_path / "lidar")
    assert info["fuser_slices"] == ["lidar"] and info["copied"] > 0
    # only what the LiDAR-only model lacks was left as initialised
    assert set(info["not_copied"]) == {"radar", "missing"}
    raw = random_frame(5)
    want = forward(source, BevProcessor(lidar_cfg).encode(raw))
    proc = BevProcessor(LR)
    for frame in (raw, raw.without("radar")):
        got = forward(fused, proc.encode(frame))
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
    # another grid does not fit
    other = replace(LR, grid=BevGrid(x_range_m=(-16, 16), y_range_m=(-8, 8), cell_m=1.0))
    with pytest.raises(ConfigError, match="grid"):
        init_from(make_net(other), tmp_path / "lidar")


# ---------------------------------------------------------------------------- ONNX

@pytest.fixture(scope="module")
def lr_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[BevFusionNet, Path]:
    torch.set_num_threads(1)
    cfg = replace(LR, score_threshold=0.5)
    net = make_net(cfg)
    return net, export_onnx(net, tmp_path_factory.mktemp("bev") / "lr.onnx")


@pytest.fixture(scope="module")
def clr_onnx(tmp_path_factory: pytest.TempPathFactory,
             camera_net: Any) -> tuple[BevFusionNet, Path]:
    torch.set_num_threads(1)
    cfg = replace(CLR, score_threshold=0.5)
    net = make_net(cfg, camera_net)
    return net, export_onnx(net, tmp_path_factory.mktemp("bev") / "clr.onnx", IMG)


def parity_frames() -> dict[str, RawFrame]:
    raw = random_frame(12, n_lidar=800, n_radar=30)
    return {"points": raw, "0 lidar pillars": replace(raw, lidar=raw.lidar[:0]),
            "0 radar pillars": replace(raw, radar=raw.radar[:0]),
            "0 cameras": raw.without("camera"), "nothing": raw.without(*MODALITIES),
            "2 cameras": random_frame(13, cameras=2)}


@pytest.mark.parametrize("which", ["lidar+radar", "camera+lidar+radar"])
def test_onnx_parity(which: str, lr_onnx: tuple[BevFusionNet, Path],
                     clr_onnx: tuple[BevFusionNet, Path]) -> None:
    net, path = lr_onnx if which == "lidar+radar" else clr_onnx
    proc = BevProcessor(net.config, image_size=IMG)
    ref = torch_backend(net, image_size=IMG)
    ort = onnx_backend(net.config, path, RuntimeConfig(intra_op_threads=1), image_size=IMG)
    for what, frame in parity_frames().items():
        report = check_parity(ref, ort, proc, [frame])
        assert report.atol == PARITY_ATOL == 1e-3
        assert report.ok, (what, report)
    # not a vacuous comparison: the random net does decode objects from the full frame
    enc = proc.encode(parity_frames()["points"])
    assert proc.decode(ref.run({s.name: enc[s.name] for s in ref.inputs}), 0)
    ort.close()


class StubBackend:
    """A backend returning fixed maps (all zero: nothing to decode), minus ``drop``."""

    def __init__(self, config: BevModelConfig, drop: tuple[str, ...] = ()) -> None:
        self.inputs, self.outputs = io_specs(config)
        self.drop = drop

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {s.name: np.zeros(tuple(int(d) for d in s.shape), np.float32) for s in self.outputs
                if s.name not in self.drop}

    def close(self) -> None:
        pass


def test_check_parity_detects_differences() -> None:
    proc = BevProcessor(LR)
    frame = random_frame()
    same = check_parity(StubBackend(LR), StubBackend(LR), proc, [frame])  # type: ignore[arg-type]
    assert same.ok and same.max_abs_diff["heatmap"] == 0.0

    class Shifted(StubBackend):
        def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = super().run(feeds)
            out["size"] = out["size"] + 2 * PARITY_ATOL
            return out

    shifted = check_parity(StubBackend(LR), Shifted(LR), proc, [frame])  # type: ignore[arg-type]
    assert not shifted.ok and shifted.max_abs_diff["size"] == pytest.approx(2 * PARITY_ATOL)


def test_check_parity_fails_on_a_missing_output() -> None:
    report = check_parity(StubBackend(LR), StubBackend(LR, drop=("velocity",)),  # type: ignore[arg-type]
                          BevProcessor(LR), [random_frame()])
    assert not report.ok


def test_corrupt_onnx_is_a_model_load_error(tmp_path: Path,
                                            lr_onnx: tuple[BevFusionNet, Path]) -> None:
    net, path = lr_onnx
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[:2000])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    for bad in (truncated, garbage):
        with pytest.raises(ModelLoadError, match=re.escape(bad.name)):
            onnx_backend(net.config, bad)
    with pytest.raises(ModelLoadError, match=r"missing\.onnx"):
        onnx_backend(net.config, tmp_path / "missing.onnx")


def test_onnx_of_another_model_is_a_spec_mismatch(tmp_path: Path,
                                                  lr_onnx: tuple[BevFusionNet, Path]) -> None:
    lidar_only = replace(LR, modalities=("lidar",))
    path = export_onnx(make_net(lidar_only), tmp_path / "lidar.onnx")
    with pytest.raises(SpecMismatchError, match="radar_pillars"):
        onnx_backend(LR, path)
    # and the other way round: a lidar+radar file for a lidar-only config
    with pytest.raises(SpecMismatchError):
        onnx_backend(lidar_only, lr_onnx[1])
    # a different grid
    with pytest.raises(SpecMismatchError):
        onnx_backend(replace(LR, grid=BevGrid(x_range_m=(-8, 12))), lr_onnx[1])


def test_detector_missing_files_are_named(tmp_path: Path,
                                          lr_onnx: tuple[BevFusionNet, Path]) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(ONNX_FILE)):
        BevDetector(BevDetectorConfig(weights=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match=r"bev_fusion\.pt"):
        BevDetector(BevDetectorConfig(weights=str(tmp_path),
                                      runtime=RuntimeConfig(backend="torch")))
    (tmp_path / ONNX_FILE).write_bytes(lr_onnx[1].read_bytes())
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        BevDetector(BevDetectorConfig(weights=str(tmp_path)))
    LR.save(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match=r"processor\.json"):
        BevDetector(BevDetectorConfig(weights=str(tmp_path)))


# ---------------------------------------------------------------------------- default weights

#: the committed default weights folder (the test skips until the ONNX file is there)
WEIGHTS_DIR = DEFAULT_WEIGHTS_DIR


def frames_around_the_ego(processor: BevProcessor, count: int = 3) -> list[RawFrame]:
    """Random LiDAR points and radar returns around the ego (inside the model's grid), a
    random image seen by the rig's camera model."""
    from mm_perception.fusion.feature_level.config import DEFAULT_RIG
    from mm_perception.fusion.feature_level.dataset import dataset_rig

    rig = dataset_rig(DEFAULT_RIG)
    name = next(n for n, s in rig.sensors.items() if s.intrinsics is not None)
    spec = rig.sensors[name]
    assert spec.intrinsics is not None and spec.extrinsics is not None
    g = processor.config.grid
    frames = []
    for seed in range(count):
        rng = np.random.default_rng(100 + seed)
        n = 20_000
        lidar = np.column_stack([rng.uniform(*g.x_range_m, n), rng.uniform(*g.y_range_m, n),
                                 rng.uniform(-0.5, 3.0, n), rng.uniform(0, 100, n)])
        radar = np.column_stack([rng.uniform(*g.x_range_m, 60), rng.uniform(*g.y_range_m, 60),
                                 rng.uniform(0, 2, 60), rng.normal(0, 5, 60),
                                 rng.normal(5, 5, 60)])
        cam = spec.intrinsics
        image = rng.integers(0, 256, (cam.height, cam.width, 3), dtype=np.uint8)
        frames.append(RawFrame(lidar=lidar.astype(np.float32), radar=radar.astype(np.float32),
                               images=(image,), cameras=(cam,),
                               T_cam_base=(spec.extrinsics.inverse().as_matrix(),)))
    return frames


@pytest.mark.parametrize("model", ["concat", "attention"])
def test_shipped_weights_torch_onnx_parity(model: str) -> None:
    """Both committed models (the default concat and the attention one) against their ONNX
    files."""
    folder = WEIGHTS_ROOT / model
    onnx = folder / ONNX_FILE
    if not onnx.is_file():
        pytest.skip(f"BEV weights not trained yet: {onnx} does not exist")
    import onnxruntime  # type: ignore[import-untyped]

    net, proc = load_weights(folder)
    assert net.config.fuser == model
    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    assert model_specs(session) == io_specs(net.config, proc.image_size)
    ref = torch_backend(net, image_size=proc.image_size)
    ort = onnx_backend(net.config, onnx, RuntimeConfig(intra_op_threads=1),
                       image_size=proc.image_size)
    report = check_parity(ref, ort, proc, frames_around_the_ego(proc))
    assert report.frames == 3 and report.atol == PARITY_ATOL
    assert report.ok, report
    ort.close()


def test_grid_and_lift_heights_of_the_wrong_type_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="x_range_m"):
        BevGrid(x_range_m=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lift_heights_m"):
        BevModelConfig(lift_heights_m=None)  # type: ignore[arg-type]


def _attention_reference(fuser: Any, tokens: torch.Tensor, present: torch.Tensor,
                         ) -> torch.Tensor:
    """The attention fuser as first written: 1x1x1 ``Conv3d`` key / value projections over
    ``(B, C, M, nx, ny)`` (fp32), heads on dim 1 and the modality on dim 3."""
    import torch.nn.functional as F  # noqa: N812

    b, m, c, nx, ny = tokens.shape
    h = fuser.heads
    dh = c // h
    weight = present.view(b, m, 1, 1, 1)
    mean = (tokens * weight).sum(1) / weight.sum(1).clamp(min=1.0)
    tok = (tokens + fuser.modality_embedding).transpose(1, 2)
    q = fuser.q(mean + fuser.query).view(b, h, dh, 1, nx, ny)
    k = F.conv3d(tok, fuser.k.weight[..., None], fuser.k.bias).view(b, h, dh, m, nx, ny)
    v = F.conv3d(tok, fuser.v.weight[..., None], fuser.v.bias).view(b, h, dh, m, nx, ny)
    logits = (q * k).sum(dim=2) / math.sqrt(dh) - (1.0 - present.view(b, 1, m, 1, 1)) * 1e4
    out = (torch.softmax(logits, dim=2).unsqueeze(2) * v).sum(dim=3).reshape(b, c, nx, ny)
    return fuser.conv(mean + fuser.proj(out))


def test_attention_fuser_maths_and_former_checkpoints() -> None:
    from mm_perception.fusion.feature_level.model import AttentionFuser

    torch.manual_seed(3)
    fuser = AttentionFuser(3, 8, 2).eval()
    for p in fuser.parameters():  # away from the init (zeros / tiny) so every term counts
        torch.nn.init.normal_(p, std=0.3)
    tokens = torch.randn(2, 3, 8, 6, 5)
    present = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    with torch.no_grad():
        got = fuser(tokens, present)
        np.testing.assert_allclose(got.numpy(), _attention_reference(fuser, tokens, present)
                                   .numpy(), rtol=1e-5, atol=1e-5)
        # a checkpoint saved with the former Conv3d weights (C, C, 1, 1, 1) loads as is
        state = {k: (v[..., None] if k in ("k.weight", "v.weight") else v)
                 for k, v in fuser.state_dict().items()}
        assert state["k.weight"].dim() == 5
        other = AttentionFuser(3, 8, 2).eval()
        other.load_state_dict(state)
        np.testing.assert_array_equal(other(tokens, present).numpy(), got.numpy())


def test_attention_fuser_trains_in_bf16_at_a_full_grid() -> None:
    """One bf16-autocast backward of the attention fuser at the default 100 x 100 grid. With
    ``Conv3d`` projections this never returned on AMX CPUs (oneDNN, torch 2.13): the test then
    fails on the suite's timeout instead of ``train bev --fuser attention`` hanging."""
    from mm_perception.fusion.feature_level.model import AttentionFuser

    torch.manual_seed(0)
    fuser = AttentionFuser(3, 16, 4)
    tokens = torch.randn(2, 3, 16, 100, 100, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fuser(tokens, torch.ones(2, 3))
    out.float().square().mean().backward()
    assert tokens.grad is not None and torch.isfinite(tokens.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in fuser.parameters() if p.requires_grad)
