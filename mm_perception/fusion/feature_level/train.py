"""Training of the BEV fusion model on simulator data (CPU), with modality dropout.

The committed default weights (``weights/concat``) were made in two steps: a LiDAR-only
model, then the three-modality model started from it (:func:`init_from`), with more frames
keeping every modality and a lower learning rate (``train_log.json`` beside them has the exact
arguments, the loss curve, the validation metrics and the wall time; ``init_train_log.json``
the first step's)::

    mm-perception train bev --make-data --data /tmp/bevdata --modalities lidar \
        --out /tmp/bev_lidar
    mm-perception train bev --data /tmp/bevdata --init-from /tmp/bev_lidar \
        --keep-all 0.6 --lr 1e-3 --out mm_perception/fusion/feature_level/weights/concat
    mm-perception train bev --data /tmp/bevdata --fuser attention --init-from /tmp/bev_lidar \
        --keep-all 0.6 --lr 1e-3 --out mm_perception/fusion/feature_level/weights/attention

On this 2-core CPU (bf16 autocast, 5 epochs of 3920 frames, batch 4) the steps took 15, 23 and
27 minutes of training, plus about 16 minutes once for ``--make-data`` to simulate the 150
shards (~1.1 GB). Validation mAP (280 frames, seeds 500-501, all three modalities): 0.948 for
the default (0.937 for the LiDAR-only model it starts from) and 0.943 for attention (its fuser
is not copied, only the LiDAR encoder, backbone and head). Regressing the box on the cells
around each centre too (``regression_radius_cells`` 1, the default since these weights)
lifted them from 0.928 / 0.939 / 0.939 with the centre cell only, on the same data; the
concat model's truck AP at 0.5 m went from 0.58 to 0.72 (the LiDAR step's log names a
``--config`` file: it held only ``{"regression_radius_cells": 1}``, made the default after that
run). Before that, twice the training scenes had lifted every model by 1-3 points (seeds
100-113: 0.912 / 0.922 / 0.925).

Data: :mod:`~mm_perception.fusion.feature_level.dataset` shards (``--make-data`` simulates
the missing ones first, with ``--rig``'s sensors, by default ``config/rigs/car.yaml``'s one
front camera; training seeds 100-127, validation seeds 500-501 of the five vehicle scenarios
by default). ``--rig config/rigs/car_surround.yaml`` gives six cameras a frame: simulating
takes about 1.7 times as long, and the fused step about 2.7 times (the lift runs once per
camera; measured on seeds 100-113); ``train_log.json`` names the cameras in
``train_cameras``.
Normalisation state: LiDAR intensity and radar RCS statistics of the training frames, image
normalisation of the (frozen) camera detector.

Targets (CenterPoint): per class a heatmap with a gaussian peak at each object's centre cell
(radius from the box footprint in cells, CenterNet's formula, at least 1 cell); at the centre
cell the offset in the cell, centre height, log size, (sin, cos) yaw and velocity over ground
(with ``BevModelConfig.regression_radius_cells`` r > 0 also at the cells within r of the
centre, the offset from each of them; a cell near two centres takes the nearer). Objects
without any LiDAR or radar return are not targets and their neighbourhood gets no heatmap loss
(the evaluation ignores them too). Loss: penalty-reduced focal loss on the heatmaps + L1 on
the regressions at those cells (velocity weighted 0.5) + cross-entropy of the camera's depth
distribution against the projected LiDAR depth (weight 0.5).

**Modality dropout**: each training frame keeps all its modalities with probability
``--keep-all`` (0.4), else a random non-empty proper subset of the model's modalities
(uniform), so the model runs with any subset and is told which are missing.

Reproducible: seeds fixed (``torch.manual_seed``, numpy generators per epoch), deterministic
frame order, ``torch.set_num_threads(--threads)``; a checkpoint after every epoch
(``<out>/checkpoint.pt``, removed at the end) and ``--resume`` to continue from it. The output
folder gets ``bev_fusion.pt`` (state dict), ``bev_fusion.onnx`` (exported), ``config.json``,
``processor.json`` and ``train_log.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.detection.camera.dataset import SCENES
from mm_perception.detection.camera.processor import draw_gaussian, gaussian_radius
from mm_perception.detection.camera.train import _seed_range
from mm_perception.fusion.feature_level.config import (
    DEFAULT_RIG,
    FUSERS,
    MODALITIES,
    BevModelConfig,
)
from mm_perception.fusion.feature_level.dataset import Shard, find_shards, load_shard
from mm_perception.fusion.feature_level.processor import BevProcessor, ProcessorState, RawFrame

if TYPE_CHECKING:
    import torch

    from mm_perception.fusion.feature_level.model import BevFusionNet

LOG = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]

#: weight of each regression loss
REG_WEIGHTS = {"offset": 1.0, "z": 1.0, "size": 1.0, "rot": 1.0, "velocity": 0.5}
#: weight of the camera depth loss
DEPTH_WEIGHT = 0.5
#: CenterNet overlap for the gaussian radius (CenterPoint uses 0.1 in BEV)
MIN_OVERLAP = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mm-perception train bev``."""
    parser.add_argument("--data", required=True, help="dataset folder (shards)")
    parser.add_argument("--out", required=True, help="output weights folder")
    parser.add_argument("--config", help="BEV model config JSON; keys it leaves out take the "
                                         "defaults")
    parser.add_argument("--modalities", help="comma-separated subset of camera,lidar,radar "
                                             "(overrides the config)")
    parser.add_argument("--fuser", choices=FUSERS, help="fuser (overrides the config)")
    parser.add_argument("--make-data", action="store_true",
                        help="simulate the missing shards first")
    parser.add_argument("--rig", default=str(DEFAULT_RIG),
                        help="rig YAML --make-data simulates (config/rigs/car_surround.yaml: "
                             "six cameras); the shards of one folder must share a rig")
    parser.add_argument("--scenes", default=",".join(SCENES))
    parser.add_argument("--train-seeds", type=_seed_range, default=list(range(100, 128)))
    parser.add_argument("--val-seeds", type=_seed_range, default=list(range(500, 502)))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--keep-all", type=float, default=0.4,
                        help="probability that a training frame keeps all modalities")
    parser.add_argument("--max-minutes", type=float, default=0.0,
                        help="stop training after this many minutes (0 = no limit); the "
                             "epoch in progress ends early and validation still runs")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="bf16 autocast of the network (auto: where the CPU has native "
                             "bf16); the loss is computed in float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--init-from", metavar="DIR",
                        help="start from another trained model's weights folder (e.g. the "
                             "LiDAR-only model): see init_from")
    parser.add_argument("--no-progress", action="store_true")


# ---------------------------------------------------------------------------- targets
def make_targets(boxes: F32, labels: npt.NDArray[np.int8], evidence: npt.NDArray[np.int32],
                 config: BevModelConfig) -> dict[str, np.ndarray]:
    """CenterPoint targets of one frame (see the module docstring).

    Args:
        boxes: ``(G, 9)`` x, y, z, l, w, h, yaw, vx, vy (``base_link``).
        labels: ``(G,)`` class index.
        evidence: ``(G, 3)`` LiDAR hits, radar hits, camera pixels.

    Returns:
        ``heatmap`` ``(C, nx, ny)`` float32, ``heat_weight`` ``(1, nx, ny)`` float32 (0
        around ignored objects), ``index`` ``(T,)`` int64 flat cells that learn a box (the
        centre cells, then with ``regression_radius_cells`` r > 0 the cells within r of a
        centre, each the nearest object's), ``targets`` ``(T, 10)`` float32 (offset of the
        centre from the cell in cells 2, z, log size 3, sin, cos, vx, vy).
    """
    g = config.grid
    heat = np.zeros((config.num_classes, g.nx, g.ny), np.float32)
    weight = np.ones((1, g.nx, g.ny), np.float32)
    index: list[int] = []
    rows: list[list[float]] = []
    # neighbour cell -> (distance of its centre to the object's centre in cells, row)
    around: dict[int, tuple[float, list[float]]] = {}
    r = config.regression_radius_cells
    for box, label, ev in zip(boxes, labels, evidence, strict=True):
        fx = (box[0] - g.x_range_m[0]) / g.cell_m
        fy = (box[1] - g.y_range_m[0]) / g.cell_m
        i, j = math.floor(fx), math.floor(fy)
        if not (0 <= i < g.nx and 0 <= j < g.ny):
            continue
        radius = max(1, int(gaussian_radius(box[3] / g.cell_m, box[4] / g.cell_m,
                                            MIN_OVERLAP)))
        if ev[0] + ev[1] == 0:  # no range-sensor evidence: ignored, like the evaluation
            rr = radius + 1
            weight[0, max(0, i - rr):i + rr + 1, max(0, j - rr):j + rr + 1] = 0.0
            continue
        # draw_gaussian works on (rows, cols) = (x cells, y cells) with cx = column
        draw_gaussian(heat[int(label)], j, i, radius)
        rest = [box[2], math.log(max(box[3], 0.05)), math.log(max(box[4], 0.05)),
                math.log(max(box[5], 0.05)), math.sin(box[6]), math.cos(box[6]),
                box[7], box[8]]
        index.append(i * g.ny + j)
        rows.append([fx - i, fy - j, *rest])
        for ci in range(max(0, i - r), min(g.nx, i + r + 1)):
            for cj in range(max(0, j - r), min(g.ny, j + r + 1)):
                d = math.hypot(ci + 0.5 - fx, cj + 0.5 - fy)
                cell = ci * g.ny + cj
                if cell not in around or d < around[cell][0]:
                    around[cell] = (d, [fx - ci, fy - cj, *rest])
    # a neighbour cell learns the nearest object's box, and never one of the centre cells
    # (their own object's box is what a peak there must decode)
    centres = set(index)
    for cell, (_, row) in sorted(around.items()):
        if cell not in centres:
            index.append(cell)
            rows.append(row)
    return {"heatmap": heat, "heat_weight": weight, "index": np.asarray(index, np.int64),
            "targets": np.asarray(rows, np.float32).reshape(-1, 10)}


def dropout_subset(modalities: Sequence[str], rng: np.random.Generator,
                   keep_all: float) -> tuple[str, ...]:
    """Modalities to *remove* from a training frame (see the module docstring)."""
    mods = tuple(modalities)
    if len(mods) == 1 or rng.random() < keep_all:
        return ()
    subsets = [s for r in range(1, len(mods)) for s in itertools.combinations(mods, r)]
    keep = subsets[int(rng.integers(len(subsets)))]
    return tuple(m for m in mods if m not in keep)


def collate(frames: Sequence[tuple[RawFrame, dict[str, np.ndarray]]], processor: BevProcessor,
            ) -> dict[str, Any]:
    """Encode and stack frames into one training batch (torch tensors).

    Pillar inputs are concatenated with cells offset by ``frame * nx * ny``; cameras are
    stacked with ``camera_frame`` saying which frame each belongs to."""
    import torch

    g = processor.config.grid
    n_cells = g.nx * g.ny
    enc = [processor.encode(raw) for raw, _ in frames]
    out: dict[str, Any] = {}
    for m in ("lidar", "radar"):
        for key in (f"{m}_pillars", f"{m}_mask"):
            out[key] = torch.from_numpy(np.concatenate([e[key] for e in enc]))
        out[f"{m}_cells"] = torch.from_numpy(np.concatenate(
            [e[f"{m}_cells"] + b * n_cells for b, e in enumerate(enc)]))
    for key in ("images", "cam_grid", "cam_depth"):
        out[key] = torch.from_numpy(np.concatenate([e[key] for e in enc]))
    out["camera_frame"] = torch.from_numpy(np.concatenate(
        [np.full(len(e["images"]), b, np.int64) for b, e in enumerate(enc)]))
    out["present"] = torch.from_numpy(np.stack([e["present"] for e in enc]))
    out["heatmap"] = torch.from_numpy(np.stack([t["heatmap"] for _, t in frames]))
    out["heat_weight"] = torch.from_numpy(np.stack([t["heat_weight"] for _, t in frames]))
    out["index"] = torch.from_numpy(np.concatenate(
        [t["index"] + b * n_cells for b, (_, t) in enumerate(frames)]))
    out["targets"] = torch.from_numpy(np.concatenate([t["targets"] for _, t in frames]))
    if "camera" in processor.config.modalities and len(out["images"]):
        depth = []
        for raw, _ in frames:
            if raw.images:
                w, h = processor.image_size
                depth.append(processor.depth_targets(raw, (h // 4, w // 4)))
        out["depth_target"] = torch.from_numpy(np.concatenate(depth))
    return out


def bev_loss(net: BevFusionNet, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Forward a training batch and return the loss parts and ``total``."""
    import torch

    F = torch.nn.functional
    b = batch["present"].shape[0]
    feats, depth_logits = net.modality_features(batch, batch["camera_frame"], batch=b)
    out = net.fuse_and_detect(feats, batch["present"])
    gt = batch["heatmap"]
    logits = out["heatmap"].float()
    pos = (gt >= 1.0).float()
    num_pos = pos.sum().clamp(min=1.0)
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    focal = -((log_p * (1 - p) ** 2 * pos + log_q * p ** 2 * (1 - gt) ** 4 * (1 - pos))
              * batch["heat_weight"]).sum() / num_pos
    losses = {"focal": focal}
    idx = batch["index"]
    tgt = batch["targets"]
    n = max(int(idx.shape[0]), 1)
    col = 0
    for key, width in (("offset", 2), ("z", 1), ("size", 3), ("rot", 2), ("velocity", 2)):
        pred = out[key].float()
        flat = pred.permute(0, 2, 3, 1).reshape(-1, width)[idx]
        losses[key] = REG_WEIGHTS[key] * torch.abs(flat - tgt[:, col:col + width]).sum() / n
        col += width
    if depth_logits is not None and "depth_target" in batch:
        dt = batch["depth_target"]
        valid = dt >= 0
        if bool(valid.any()):
            losses["depth"] = DEPTH_WEIGHT * F.cross_entropy(
                depth_logits.float().permute(0, 2, 3, 1)[valid], dt[valid])
    losses["total"] = sum(losses.values(), torch.zeros(()))
    return losses


class ImageFeatureCache:
    """The frozen camera network's features of each training image, computed once (bf16 in
    memory, ~0.5 MB an image): the network never changes and images are not augmented, so
    this is exact up to bf16 rounding of the stored features. Keys are
    ``(shard, frame, camera)`` indices."""

    def __init__(self) -> None:
        self._store: dict[tuple[int, int, int], torch.Tensor] = {}

    def get(self, net: BevFusionNet, keys: Sequence[tuple[int, int, int]],
            images: torch.Tensor) -> torch.Tensor:
        """Features ``(K, C, h, w)`` float32 of ``images`` ``(K, 3, H, W)`` (one key per
        image)."""
        import torch

        todo = [n for n, k in enumerate(keys) if k not in self._store]
        if todo:
            feats = net.camera.image_features(images[todo])
            for n, f in zip(todo, feats, strict=True):
                self._store[keys[n]] = f.to(torch.bfloat16)
        return torch.stack([self._store[k] for k in keys]).float()


# ---------------------------------------------------------------------------- data
def training_state(shards: Sequence[Shard]) -> ProcessorState:
    """Normalisation constants from the training shards and the camera detector."""
    from mm_perception.detection.camera.detector import CameraDetector

    inten = np.concatenate([s.lidar[::50, 3] for s in shards])
    rcs = np.concatenate([s.radar[:, 4] for s in shards])
    cam = CameraDetector.load().processor
    return ProcessorState(
        intensity_scale=float(max(np.percentile(inten, 99), 1e-3)),
        rcs_mean_dbsm=float(rcs.mean()) if len(rcs) else 0.0,
        rcs_std_dbsm=float(max(rcs.std(), 1e-3)) if len(rcs) else 10.0,
        image_mean=tuple(float(v) for v in cam.mean),  # type: ignore[arg-type]
        image_std=tuple(float(v) for v in cam.std))  # type: ignore[arg-type]


def load_split(data_dir: str | Path, seeds: Sequence[int], scenes: Sequence[str],
               ) -> list[Shard]:
    paths = find_shards(data_dir, seeds, scenes)
    if not paths:
        raise ConfigError(f"no BEV dataset shards for seeds {seeds[0]}-{seeds[-1]} in "
                          f"{data_dir} (run with --make-data)")
    return [load_shard(p) for p in paths]


# ---------------------------------------------------------------------------- validation
def validation_metrics(net: BevFusionNet, processor: BevProcessor, shards: Sequence[Shard],
                       drop: Sequence[str] = (), progress: bool = False) -> dict[str, Any]:
    """nuScenes-style detection metrics of the model (torch) on validation shards, with the
    modalities ``drop`` removed at test time (the evaluation's rules: within 50 m, ground
    truth without LiDAR / radar returns ignored)."""
    import torch
    from tqdm import tqdm

    from mm_perception.core.types import Box3D
    from mm_perception.eval.detection_metrics import DetectionEvalConfig, evaluate_detections
    from mm_perception.fusion.feature_level.config import CLASSES
    from mm_perception.fusion.feature_level.model import BevFusionInference, input_names
    from mm_perception.fusion.feature_level.processor import OUTPUT_NAMES
    from mm_perception.sim.ground_truth import GroundTruthObject

    inference = BevFusionInference(net).eval()
    names = input_names(net.config)
    frames = []
    total = sum(len(s) for s in shards)
    bar = tqdm(total=total, desc="validation" + (f" without {drop}" if drop else ""),
               unit="frame", disable=not progress)
    for shard in shards:
        for i in range(len(shard)):
            raw = shard.frame(i).without(*drop)
            feeds = processor.encode(raw)
            with torch.inference_mode():
                outs = inference(*[torch.from_numpy(feeds[n]) for n in names])
            dets = processor.decode({k: o.numpy() for k, o in zip(OUTPUT_NAMES, outs,
                                                                  strict=True)}, 0)
            boxes, labels, ev = shard.truth(i)
            truth = []
            for k, (bx, lab, e) in enumerate(zip(boxes, labels, ev, strict=True)):
                box = Box3D(center=bx[:3].astype(np.float64), size=bx[3:6].astype(np.float64),
                            yaw=float(bx[6]))
                vel = np.array([bx[7], bx[8], 0.0])
                truth.append(GroundTruthObject(
                    actor_id=k + 1, object_class=CLASSES[int(lab)], box_world=box,
                    box_base=box, velocity_world=vel, velocity_base=vel, yaw_rate=0.0,
                    lidar_hits=int(e[0]), radar_hits=int(e[1]), visible_pixels=int(e[2])))
            frames.append((dets, tuple(truth)))
            bar.update()
    bar.close()
    cfg = DetectionEvalConfig(max_range_m=50.0, ignore_gt_without_evidence=True,
                              min_visible_pixels=None)
    metrics = evaluate_detections(frames, cfg).to_dict(include_curves=False)
    return {"frames": len(frames), "dropped": list(drop), "mean_ap": metrics["mean_ap"],
            "ap": metrics["ap"], "tp_errors": metrics["mean_tp_errors"]}


# ---------------------------------------------------------------------------- training
def init_from(net: BevFusionNet, folder: str | Path) -> dict[str, Any]:
    """Initialise ``net`` from another trained model (its weights folder), in place.

    Every tensor with the same name and shape is copied (encoders of the shared modalities,
    backbone, head). The concatenation fuser's first convolution, whose input channels are
    the modalities' features side by side, gets the source's weights in the slices of the
    modalities both models have and zeros in the others: a fused model started from the
    LiDAR-only one computes what that model computes, and learns from there what the
    camera and radar add (instead of relearning the LiDAR path under modality dropout).

    Returns:
        ``{"from": folder, "copied": n, "fuser_slices": [modality, ...], "not_copied":
        [name, ...]}`` for the training log.

    Raises:
        ConfigError: the source model has another grid or channel width (nothing fits).
    """
    import torch

    from mm_perception.fusion.feature_level.detector import load_weights

    source, _ = load_weights(folder)
    src_cfg, cfg = source.config, net.config
    if src_cfg.grid != cfg.grid or src_cfg.bev_channels != cfg.bev_channels:
        raise ConfigError(f"--init-from {folder}: its grid / bev_channels differ from the "
                          f"model's ({src_cfg.grid}, {src_cfg.bev_channels} vs {cfg.grid}, "
                          f"{cfg.bev_channels})")
    src = source.state_dict()
    dst = net.state_dict()
    copied, not_copied, slices = 0, [], []
    for name, tensor in dst.items():
        value = src.get(name)
        if value is not None and value.shape == tensor.shape:
            dst[name] = value.clone()
            copied += 1
        elif (name == "fuser.conv.0.weight" and value is not None
              and cfg.fuser == src_cfg.fuser == "concat"):
            c = cfg.bev_channels
            new = torch.zeros_like(tensor)
            for k, m in enumerate(cfg.modalities):
                if m in src_cfg.modalities:
                    j = src_cfg.modalities.index(m)
                    new[:, k * c:(k + 1) * c] = value[:, j * c:(j + 1) * c]
                    slices.append(m)
            dst[name] = new
        else:
            not_copied.append(name)
    net.load_state_dict(dst)
    return {"from": str(folder), "copied": copied, "fuser_slices": slices,
            "not_copied": sorted({n.split(".")[0] for n in not_copied})}


def model_config(args: argparse.Namespace) -> BevModelConfig:
    """The model config of a run: ``--config`` (a hand-written file: keys it leaves out take
    the defaults, unlike a weights folder's saved one), then ``--modalities`` / ``--fuser``."""
    cfg = BevModelConfig.load(args.config, saved=False) if args.config else BevModelConfig()
    if args.modalities:
        cfg = replace(cfg, modalities=tuple(m.strip() for m in args.modalities.split(",")))
    if args.fuser:
        cfg = replace(cfg, fuser=args.fuser)
    return cfg


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train per ``args`` (see :func:`add_arguments`); returns the training log."""
    import torch
    from tqdm import tqdm

    from mm_perception.detection.camera.detector import CameraDetector
    from mm_perception.fusion.feature_level.dataset import make_dataset
    from mm_perception.fusion.feature_level.detector import ONNX_FILE, save_weights
    from mm_perception.fusion.feature_level.export import export_onnx
    from mm_perception.fusion.feature_level.model import BevFusionNet

    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = model_config(args)
    scenes = [s.strip() for s in args.scenes.split(",") if s.strip()]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    if args.make_data:
        for seeds in (args.val_seeds, args.train_seeds):
            make_dataset(args.data, scenes, seeds, rig=args.rig, progress=progress)
    train_set = load_split(args.data, args.train_seeds, scenes)
    val_set = load_split(args.data, args.val_seeds, scenes)
    t_data = time.time()
    state = training_state(train_set)
    processor = BevProcessor(cfg, state)
    camera_net = CameraDetector.load().net if "camera" in cfg.modalities else None
    net = BevFusionNet(cfg, camera_net)
    init = init_from(net, args.init_from) if args.init_from else None
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    index = [(s, i) for s, shard in enumerate(train_set) for i in range(len(shard))]
    steps_per_epoch = len(index) // args.batch_size
    total_steps = steps_per_epoch * args.epochs

    def lr_factor(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        frac = (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps)
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    bf16 = args.precision == "bf16" or (
        args.precision == "auto" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    image_cache = ImageFeatureCache()
    log: dict[str, Any] = {
        "precision": "bf16 autocast" if bf16 else "fp32",
        "args": {k: v if not isinstance(v, list) or len(v) < 20 else f"{v[0]}-{v[-1]}"
                 for k, v in vars(args).items() if k != "func"},
        "config": cfg.to_dict(), "processor": asdict(state), "torch": torch.__version__,
        "trainable_parameters": sum(p.numel() for p in params),
        "train_frames": len(index), "val_frames": sum(len(s) for s in val_set),
        # the cameras the shards were simulated with (``--rig`` only acts with --make-data)
        "train_cameras": sorted({n for shard in train_set for n in shard.camera_names}),
        "init_from": init,
        "loss_curve": [], "epochs": []}
    start_epoch = 0
    ckpt_path = out_dir / "checkpoint.pt"
    if args.resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ckpt["net"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        start_epoch = int(ckpt["epoch"]) + 1
        log = ckpt["log"]
        LOG.info("resumed from %s at epoch %d", ckpt_path, start_epoch)
    t_train = time.time()
    deadline = t_train + args.max_minutes * 60.0 if args.max_minutes > 0 else math.inf
    stopped_early = False
    for epoch in range(start_epoch, args.epochs):
        net.train()
        rng = np.random.default_rng([args.seed, epoch])  # frame order + modality dropout
        torch.manual_seed(args.seed * 1000 + epoch)
        perm = rng.permutation(len(index))
        sums: dict[str, float] = {}
        done = 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}",
                   unit="batch", disable=not progress)
        for step in bar:
            if time.time() > deadline:
                stopped_early = True
                break
            frames = []
            cam_keys: list[tuple[int, int, int]] = []
            for k in perm[step * args.batch_size:(step + 1) * args.batch_size].tolist():
                s, i = index[k]
                raw = train_set[s].frame(i).without(
                    *dropout_subset(cfg.modalities, rng, args.keep_all))
                boxes, labels, evidence = train_set[s].truth(i)
                frames.append((raw, make_targets(boxes, labels, evidence, cfg)))
                if "camera" in cfg.modalities:
                    cam_keys.extend((s, i, cam) for cam in range(len(raw.images)))
            batch = collate(frames, processor)
            if cam_keys:
                batch["image_features"] = image_cache.get(net, cam_keys, batch["images"])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                losses = bev_loss(net, batch)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            sched.step()
            done += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if step % 10 == 0:
                bar.set_postfix(loss=f"{float(losses['total'].detach()):.3f}")
                log["loss_curve"].append({
                    "step": epoch * steps_per_epoch + step, "lr": sched.get_last_lr()[0],
                    **{k: round(float(v.detach()), 5) for k, v in losses.items()}})
        log["epochs"].append({"epoch": epoch + 1, "steps": done,
                              **{k: v / max(done, 1) for k, v in sums.items()},
                              "wall_s": round(time.time() - t_start, 1)})
        LOG.info("epoch %d: %s", epoch + 1, log["epochs"][-1])
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "epoch": epoch, "log": log}, ckpt_path)
        if stopped_early:
            LOG.warning("stopped after %.0f min (--max-minutes)", args.max_minutes)
            break
    log["stopped_early"] = stopped_early
    net.eval()
    t_val = time.time()
    log["validation"] = validation_metrics(net, processor, val_set, progress=progress)
    log["wall_s"] = {"data": round(t_data - t_start, 1), "train": round(t_val - t_train, 1),
                     "validation": round(time.time() - t_val, 1),
                     "total": round(time.time() - t_start, 1)}
    save_weights(out_dir, net, processor)
    export_onnx(net, out_dir / ONNX_FILE, processor.image_size)
    (out_dir / "train_log.json").write_text(json.dumps(log, indent=1, default=str) + "\n",
                                            encoding="utf-8")
    ckpt_path.unlink(missing_ok=True)
    return log


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mm-perception train bev``; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # under the CLI the root logger is already configured at WARNING: the per-epoch lines
    # still go out
    LOG.setLevel(logging.INFO)
    if args.epochs < 1 or args.batch_size < 1 or args.threads < 1:
        raise ConfigError(f"--epochs, --batch-size and --threads must be >= 1, got "
                          f"{args.epochs}, {args.batch_size}, {args.threads}")
    if not 0.0 <= args.keep_all <= 1.0:
        raise ConfigError(f"--keep-all must be in [0, 1], got {args.keep_all}")
    if args.modalities:
        bad = [m for m in args.modalities.split(",") if m.strip() not in MODALITIES]
        if bad:
            raise ConfigError(f"--modalities: unknown {bad}; known {list(MODALITIES)}")
    log = train(args)
    val = log["validation"]
    print(f"validation mAP ({val['frames']} frames): {val['mean_ap']}")
    print(f"weights written to {args.out} in {log['wall_s']['total'] / 60:.1f} min")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mm_perception.fusion.feature_level.train",
                                     description="train the BEV fusion model")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["add_arguments", "bev_loss", "collate", "dropout_subset", "init_from", "make_targets",
           "model_config", "run", "train", "training_state", "validation_metrics"]
