"""Camera detector: config, network shapes, target encoding/decoding, committed weights,
2D -> 3D lifting and ONNX parity.

``tests/data/camera_highway_seed500.npz`` is one 640x480 frame of the simulator's ``highway``
scenario, seed 500 (a validation seed: not trained on) at t = 0.2 s, with its 2D labels from
:func:`mm_perception.detection.camera.dataset.label_frame` (``image``, ``boxes`` pixel edges,
``labels`` indices into the default classes, ``ignore``). Remake it with
``camera_rig(rate_hz=10)``, ``Simulator.reset("highway", 500)``, ``run(0.3)``, last frame.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mm_perception.core.calibration import Rig
from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import Box3D, ObjectClass
from mm_perception.detection.camera.config import DEFAULT_CLASSES, CameraDetectorConfig
from mm_perception.detection.camera.detector import CameraDetector, Detections2D
from mm_perception.detection.camera.lift import LiftConfig, lift_detections
from mm_perception.detection.camera.model import CameraDetectorNet
from mm_perception.detection.camera.processor import CameraProcessor, box_iou
from mm_perception.detection.camera.train import evaluate_ap

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "data" / "camera_highway_seed500.npz"
RIG = ROOT / "config" / "rigs" / "car.yaml"


@pytest.fixture(scope="module")
def detector() -> CameraDetector:
    torch.set_num_threads(1)
    return CameraDetector.load()


@pytest.fixture(scope="module")
def sim_frame() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def rig_camera() -> tuple[CameraModel, SE3]:
    spec = Rig.from_yaml(RIG)["cam_front"]
    assert spec.intrinsics is not None and spec.extrinsics is not None
    return spec.intrinsics, spec.extrinsics


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize(("field", "value"), [
    ("input_width", 322), ("output_stride", 3), ("classes", ("car", "unknown")),
    ("backbone_widths", ()), ("stem_stride", 8), ("score_threshold", 1.5), ("peak_kernel", 2),
    ("nms_iou", 0.0), ("min_overlap", 1.0), ("top_k", 0)])
def test_config_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        CameraDetectorConfig(**{field: value})  # type: ignore[arg-type]


def test_config_json_round_trip() -> None:
    cfg = CameraDetectorConfig(input_width=160, input_height=120, score_threshold=0.2)
    assert CameraDetectorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        CameraDetectorConfig.from_dict({**cfg.to_dict(), "bogus": 1})


# ---------------------------------------------------------------------------- model
def test_model_forward_shapes() -> None:
    cfg = CameraDetectorConfig(input_width=160, input_height=120)
    net = CameraDetectorNet(cfg).eval()
    with torch.no_grad():
        out = net(torch.zeros(2, 3, 120, 160))
    c = len(DEFAULT_CLASSES)
    assert out.heatmap.shape == (2, c, 30, 40)
    assert out.size.shape == (2, 2, 30, 40)
    assert out.offset.shape == (2, 2, 30, 40)
    assert out.semantic.shape == (2, c, 30, 40)
    # focal-loss prior: the untrained heatmap says "10 % object" everywhere
    assert torch.sigmoid(out.heatmap).mean().item() == pytest.approx(0.1, abs=0.02)


# ---------------------------------------------------------------------------- processor
def test_target_encoding_decoding_round_trip_is_exact() -> None:
    cfg = CameraDetectorConfig(score_threshold=0.5)
    proc = CameraProcessor(cfg)
    boxes = np.array([[10.0, 20.0, 60.5, 57.25],     # car
                      [200.0, 100.0, 231.0, 190.0],  # pedestrian
                      [100.0, 150.0, 300.0, 239.0],  # bus
                      [3.0, 180.0, 9.0, 195.0]],     # tiny cyclist
                     dtype=np.float32)
    labels = np.array([0, 3, 2, 4])
    targets = proc.encode(boxes, labels)
    assert targets.heatmap.shape == (5, 60, 80)
    assert targets.reg_mask.sum() == 4
    dec = proc.decode(targets.heatmap, targets.size, targets.offset)
    assert len(dec.boxes) == 4
    order = np.argsort(dec.boxes[:, 0])
    np.testing.assert_allclose(dec.boxes[order], boxes[np.argsort(boxes[:, 0])], atol=1e-3)
    assert sorted(dec.labels.tolist()) == sorted(labels.tolist())
    np.testing.assert_allclose(dec.scores, 1.0)
    np.testing.assert_allclose(dec.class_probs.sum(axis=1), 1.0, rtol=1e-6)
    # back to a 640x480 original: one scale per axis
    orig = proc.to_original(dec.boxes, (0.5, 0.5), 640, 480)
    np.testing.assert_allclose(np.sort(orig[:, 0]), np.sort(boxes[:, 0]) * 2, atol=2e-3)


def test_ignored_boxes_get_zero_heatmap_weight() -> None:
    proc = CameraProcessor(CameraDetectorConfig())
    t = proc.encode(np.zeros((0, 4)), np.zeros(0, int), np.array([[40.0, 40.0, 80.0, 80.0]]))
    assert t.heat_weight[10:20, 10:20].max() == 0.0
    assert t.heat_weight[30:, 30:].min() == 1.0
    assert t.heatmap.max() == 0.0


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_peaks_match_torch_max_pool(kernel: int) -> None:
    """Peak extraction is CenterNet's: a cell survives when it equals the max-pool of its
    window (padding -inf, as torch.max_pool2d); plateaus keep every tied cell."""
    config = CameraDetectorConfig(peak_kernel=kernel)
    processor = CameraProcessor(config)
    rng = np.random.default_rng(kernel)
    heat = rng.random((3, 17, 23)).astype(np.float32)
    heat[1, 4:7, 4:7] = 0.99  # a plateau
    heat[2, 0, :] = 1.0  # a plateau along the border
    t = torch.from_numpy(heat)[None]
    pooled = torch.nn.functional.max_pool2d(t, kernel, stride=1, padding=kernel // 2)[0].numpy()
    expected = np.where(pooled == heat, heat, 0.0).astype(np.float32)
    got = processor.peaks(heat)
    assert got.dtype == np.float32 and got.shape == heat.shape
    np.testing.assert_array_equal(got, expected)


def test_decode_of_nan_maps_is_finite() -> None:
    cfg = CameraDetectorConfig(score_threshold=0.0)
    proc = CameraProcessor(cfg)
    c, h, w = 5, 60, 80
    heat = np.full((c, h, w), np.nan, np.float32)
    heat[0, 5, 5] = 0.9
    dec = proc.decode(heat, np.full((2, h, w), np.inf, np.float32),
                      np.full((2, h, w), np.nan, np.float32))
    assert len(dec.boxes) >= 1
    assert np.all(np.isfinite(dec.boxes)) and np.all(np.isfinite(dec.class_probs))


def test_average_precision_counts_ignored_boxes_as_neither() -> None:
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)]
    gl, gi = [np.array([0, 0])], [np.array([False, True])]
    perfect = evaluate_ap([gt[0]], [np.array([0.9, 0.8])], [np.array([0, 0])], gt, gl, gi, 2)
    assert perfect == [1.0, None]
    # a false positive scored above the true positive halves the precision at full recall
    fp = np.array([[50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    ap = evaluate_ap([fp], [np.array([0.9, 0.8])], [np.array([0, 0])], gt, gl, gi, 2)
    assert ap[0] == pytest.approx(0.5)


# ---------------------------------------------------------------------------- detector
def test_committed_weights_detect_on_a_random_image(detector: CameraDetector) -> None:
    assert detector.classes == (ObjectClass.CAR, ObjectClass.TRUCK, ObjectClass.BUS,
                                ObjectClass.PEDESTRIAN, ObjectClass.CYCLIST)
    image = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    out = detector.detect(image)
    dets = out.detections
    k = len(dets)
    assert dets.boxes.shape == (k, 4) and dets.boxes.dtype == np.float32
    assert dets.scores.shape == (k,) and dets.scores.dtype == np.float32
    assert dets.class_probs.shape == (k, 5) and dets.class_probs.dtype == np.float32
    assert len(dets.labels) == k
    h, w = detector.config.heatmap_size
    assert out.score_map.shape == (h, w, 6) and out.score_map.dtype == np.float32
    assert out.score_classes == (*detector.classes, ObjectClass.UNKNOWN)
    for arr in (dets.boxes, dets.scores, dets.class_probs, out.score_map):
        assert np.all(np.isfinite(arr))
    assert np.all((out.score_map >= 0) & (out.score_map <= 1))
    np.testing.assert_allclose(out.score_map[..., -1], 1 - out.score_map[..., :-1].max(axis=2),
                               atol=1e-6)
    if k:
        assert np.all(dets.boxes[:, [0, 2]] <= 300) and np.all(dets.boxes[:, [1, 3]] <= 200)


@pytest.mark.parametrize("image", [
    np.zeros((48, 64), np.uint8), np.zeros((48, 64, 4), np.uint8),
    np.zeros((48, 64, 3), np.float32), np.zeros((1, 64, 3), np.uint8), [[0, 0, 0]]])
def test_detect_rejects_bad_images(detector: CameraDetector, image: object) -> None:
    with pytest.raises(ValueError, match="image"):
        detector.detect(image)  # type: ignore[arg-type]


def test_detects_the_car_in_a_simulator_frame(detector: CameraDetector,
                                              sim_frame: dict[str, np.ndarray]) -> None:
    out = detector.detect(sim_frame["image"])
    dets = out.detections
    cars = np.array([lab is ObjectClass.CAR for lab in dets.labels], bool)
    gt = sim_frame["boxes"][(sim_frame["labels"] == 0) & ~sim_frame["ignore"]]
    assert len(gt) >= 1 and cars.any()
    best = box_iou(dets.boxes[cars], gt).max()
    assert best >= 0.5
    # the bus in front-left is found too, and the score map marks object cells
    bus = sim_frame["boxes"][sim_frame["labels"] == 2][0]
    assert box_iou(dets.boxes, bus[None]).max() >= 0.5
    x1, y1, x2, y2 = (bus / 8).astype(int)  # 640x480 -> 80x60 cells
    assert out.score_map[y1:y2, x1:x2, 2].max() > 0.5


# ---------------------------------------------------------------------------- lift
def _project_box(box: Box3D, camera: CameraModel, T_base_cam: SE3) -> np.ndarray:
    uv, valid = camera.project(T_base_cam.inverse().apply(box.corners()))
    assert valid.all()
    return np.array([uv[:, 0].min() + 0.5, uv[:, 1].min() + 0.5, uv[:, 0].max() + 0.5,
                     uv[:, 1].max() + 0.5], np.float32)  # centre -> edge convention


def _dets(boxes: np.ndarray, labels: tuple[ObjectClass, ...]) -> Detections2D:
    k = len(labels)
    probs = np.zeros((k, 5), np.float32)
    for i, lab in enumerate(labels):
        probs[i, DEFAULT_CLASSES.index(lab)] = 1.0
    return Detections2D(np.asarray(boxes, np.float32).reshape(-1, 4),
                        np.full(k, 0.8, np.float32), labels, probs)


def test_lift_with_sparse_depth_recovers_the_position(
        rig_camera: tuple[CameraModel, SE3]) -> None:
    camera, T_base_cam = rig_camera
    truth = Box3D(np.array([18.0, -3.0, 0.775]), np.array([4.4, 1.85, 1.55]), 0.0)
    box2d = _project_box(truth, camera, T_base_cam)
    rng = np.random.default_rng(1)
    # LiDAR-like points: the car's rear face, a wall behind it, the road in front of it
    rear = np.stack([np.full(300, 18.0 - 2.2), rng.uniform(-3.9, -2.1, 300),
                     rng.uniform(0.2, 1.5, 300)], axis=1)
    wall = np.stack([np.full(200, 45.0), rng.uniform(-8, 2, 200), rng.uniform(0, 4, 200)],
                    axis=1)
    road = np.stack([rng.uniform(8, 15.7, 200), rng.uniform(-4, -2, 200), np.zeros(200)],
                    axis=1)
    depth = np.full((camera.height, camera.width), np.nan, np.float32)
    for pts in (wall, road, rear):  # nearer points written last win the pixel
        cam = T_base_cam.inverse().apply(pts)
        uv, ok = camera.project(cam, in_image=True)
        px = np.floor(uv[ok] + 0.5).astype(int)
        depth[px[:, 1], px[:, 0]] = cam[ok, 2]
    objs = lift_detections(_dets(box2d, (ObjectClass.CAR,)), camera, T_base_cam, 123,
                           depth=depth, sensor="cam_front")
    assert len(objs) == 1
    obj = objs[0]
    assert np.linalg.norm(obj.box.center[:2] - truth.center[:2]) < 0.6
    assert obj.label is ObjectClass.CAR and obj.sources == ("cam_front",)
    assert obj.stamp_ns == 123 and obj.velocity is None and obj.box.frame_id == "base_link"
    assert obj.class_probs["car"] == pytest.approx(1.0)
    cov = obj.covariance
    assert cov is not None and cov.shape == (6, 6)
    ray = (truth.center[:2] - T_base_cam.translation[:2])
    ray /= np.linalg.norm(ray)
    across = np.array([-ray[1], ray[0]])
    assert ray @ cov[:2, :2] @ ray > across @ cov[:2, :2] @ across  # depth is the weak axis


@pytest.mark.parametrize(("label", "center", "size"), [
    (ObjectClass.CAR, (12.0, 1.5, 0.775), (4.4, 1.85, 1.55)),
    (ObjectClass.PEDESTRIAN, (9.0, -2.0, 0.875), (0.58, 0.58, 1.75)),
    (ObjectClass.TRUCK, (20.0, 3.5, 1.7), (8.5, 2.5, 3.4))])
def test_camera_only_lift_is_within_ten_percent_of_range(
        rig_camera: tuple[CameraModel, SE3], label: ObjectClass,
        center: tuple[float, float, float], size: tuple[float, float, float]) -> None:
    camera, T_base_cam = rig_camera
    truth = Box3D(np.array(center), np.array(size), 0.0)
    objs = lift_detections(_dets(_project_box(truth, camera, T_base_cam), (label,)), camera,
                           T_base_cam, 0)
    assert len(objs) == 1
    rng_true = np.linalg.norm(truth.center[:2] - T_base_cam.translation[:2])
    err = np.linalg.norm(objs[0].box.center[:2] - truth.center[:2])
    assert err < 0.1 * rng_true
    np.testing.assert_allclose(objs[0].box.size, size)


def test_lift_handles_border_sky_and_empty_boxes(rig_camera: tuple[CameraModel, SE3]) -> None:
    camera, T_base_cam = rig_camera
    boxes = np.array([
        [0.0, 200.0, 40.0, 480.0],      # cut by the left and bottom borders
        [300.0, 0.0, 340.0, 230.0],     # cut by the top border, bottom above... horizon-ish
        [300.0, 50.0, 320.0, 60.0],     # entirely above the horizon (sky)
        [600.0, 470.0, 640.0, 480.0],   # corner
        [0.0, 0.0, 640.0, 480.0],       # the whole image
        [100.0, 100.0, 100.0, 150.0],   # zero width
        [np.nan, 1.0, 2.0, 3.0]])       # garbage
    labels = (ObjectClass.CAR,) * len(boxes)
    depth = np.full((camera.height, camera.width), np.nan, np.float32)
    depth[::7, ::5] = -1.0  # invalid depths must not be used
    for d in (None, depth):
        objs = lift_detections(_dets(boxes, labels), camera, T_base_cam, 0, depth=d)
        for obj in objs:
            assert np.all(np.isfinite(obj.box.center)) and obj.box.center[0] > 0
    above = lift_detections(_dets(boxes[2:3], labels[:1]), camera, T_base_cam, 0)
    assert above == [] or above[0].box.center[0] > 0  # height prior only, or dropped
    assert lift_detections(Detections2D.empty(5), camera, T_base_cam, 0) == []
    with pytest.raises(ValueError, match="depth"):
        lift_detections(_dets(boxes[:1], labels[:1]), camera, T_base_cam, 0,
                        depth=np.zeros((10, 10), np.float32))


def test_lifting_boxes_together_equals_lifting_each_alone(
        rig_camera: tuple[CameraModel, SE3]) -> None:
    """The lift handles all boxes of an image in one batch (rays, depth points, the sideways
    slide): no box may change another's result, whatever mix of depth-placed, monocular
    and dropped boxes the batch holds."""
    camera, T_base_cam = rig_camera
    truths = [Box3D(np.array([18.0, -3.0, 0.775]), np.array([4.4, 1.85, 1.55]), 0.0),
              Box3D(np.array([9.0, 4.0, 0.775]), np.array([4.4, 1.85, 1.55]), 0.3),
              Box3D(np.array([30.0, 1.0, 1.7]), np.array([8.5, 2.5, 3.4]), 0.0),
              Box3D(np.array([7.0, -2.0, 0.875]), np.array([0.58, 0.58, 1.75]), 0.0)]
    labels = (ObjectClass.CAR, ObjectClass.CAR, ObjectClass.TRUCK, ObjectClass.PEDESTRIAN)
    boxes = np.stack([_project_box(t, camera, T_base_cam) for t in truths[:2]]
                     + [np.array([np.nan, 1.0, 2.0, 3.0], np.float32)]  # garbage: dropped
                     + [_project_box(t, camera, T_base_cam) for t in truths[2:]]
                     + [np.array([100.0, 100.0, 100.0, 150.0], np.float32)])  # zero width
    labels = (*labels[:2], ObjectClass.CAR, *labels[2:], ObjectClass.CAR)
    # depth on the first car only (its rear face): the others are placed monocularly
    rng = np.random.default_rng(2)
    rear = np.stack([np.full(300, 18.0 - 2.2), rng.uniform(-3.9, -2.1, 300),
                     rng.uniform(0.2, 1.5, 300)], axis=1)
    depth = np.full((camera.height, camera.width), np.nan, np.float32)
    cam = T_base_cam.inverse().apply(rear)
    uv, ok = camera.project(cam, in_image=True)
    px = np.floor(uv[ok] + 0.5).astype(int)
    depth[px[:, 1], px[:, 0]] = cam[ok, 2]
    together = lift_detections(_dets(boxes, labels), camera, T_base_cam, 5, depth=depth)
    alone = [o for i in range(len(boxes))
             for o in lift_detections(_dets(boxes[i:i + 1], labels[i:i + 1]), camera,
                                      T_base_cam, 5, depth=depth)]
    assert len(together) == len(alone) == 4
    for a, b in zip(together, alone, strict=True):
        assert a.label is b.label
        np.testing.assert_allclose(a.box.center, b.box.center, atol=1e-9)
        assert a.box.yaw == pytest.approx(b.box.yaw)
        assert a.covariance is not None and b.covariance is not None
        np.testing.assert_allclose(a.covariance, b.covariance, atol=1e-9)
    for obj, truth in zip(together, truths, strict=True):
        rng_true = np.linalg.norm(truth.center[:2] - T_base_cam.translation[:2])
        assert np.linalg.norm(obj.box.center[:2] - truth.center[:2]) < 0.1 * rng_true


def test_lift_config_validation() -> None:
    with pytest.raises(ConfigError, match="box_shrink"):
        LiftConfig(box_shrink=0.6)
    with pytest.raises(ConfigError, match="yaw_mode"):
        LiftConfig(yaw_mode="north")
    ray = LiftConfig(yaw_mode="ray")
    assert math.isclose(ray.yaw_std, math.pi / 2)


# ---------------------------------------------------------------------------- export
def test_onnx_export_matches_torch(detector: CameraDetector, sim_frame: dict[str, np.ndarray],
                                   tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")  # torch.onnx.export(dynamo=True) needs it
    from mm_perception.detection.camera.export import (
        PARITY_ATOL,
        check_onnx_parity,
        export_onnx,
    )

    path = export_onnx(detector, tmp_path / "camera_detector.onnx")
    small = np.ascontiguousarray(sim_frame["image"][::2, ::2])
    report = check_onnx_parity(detector, path, [sim_frame["image"], small])
    assert report.atol == PARITY_ATOL == 1e-4
    assert report.ok, report
