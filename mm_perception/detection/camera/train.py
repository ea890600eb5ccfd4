"""Training of the camera detector on simulator images (CPU), and its 2D validation AP.

The committed weights were made with::

    mm-perception train camera --make-data --data /tmp/camdata \\
        --out mm_perception/detection/camera/weights

(equivalently ``python -m mm_perception.detection.camera.train --make-data ...``): 18 minutes
wall for the training on a shared 2-core CPU (bf16 autocast; 8 epochs of 6960 images, 2-4 min
an epoch depending on the machine's other load), plus about 17 minutes once for
``--make-data`` to simulate the 270 shards (56 MB) when they are missing. Validation AP at
IoU 0.5 (870 images): car 0.81, truck 0.88, bus 0.79, pedestrian 0.90, cyclist 0.96 (see the
committed ``train_log.json``). Defaults: training seeds 100-147 and validation seeds 500-505
of the five vehicle scenarios (see :mod:`~mm_perception.detection.camera.dataset`), 320x240
input, batch 32, AdamW (lr 2e-3, weight decay 1e-4) with a linear warm-up and a cosine decay,
augmentation: horizontal flip (boxes and masks flipped too) and brightness / contrast jitter.
The network runs under bfloat16 autocast where the CPU has native bf16 (AVX512-BF16 / AMX:
about 2x faster; the loss is computed in float32); inference uses float32.

Loss: CenterNet's penalty-reduced focal loss on the class heatmaps (alpha 2, beta 4, zero
weight around ignored objects), L1 on log-size and centre offset at the object centres, and
binary cross-entropy of the semantic (score-map) head against the per-cell class fractions of
the instance masks.

Reproducible: seeds fixed (``torch.manual_seed``, numpy generators per epoch), deterministic
data order, ``torch.set_num_threads(--threads)``; a checkpoint after every epoch
(``<out>/checkpoint.pt``, removed at the end) and ``--resume`` to continue from it. The output
folder gets ``camera_detector.pt`` (state dict), ``config.json``, ``processor.json`` and
``train_log.json`` (arguments, loss curve, per-class AP at IoU 0.5 on the validation seeds,
wall time).

torch and the simulator are imported inside the functions, so ``add_arguments`` stays cheap
for the CLI.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.detection.camera.config import CameraDetectorConfig
from mm_perception.detection.camera.dataset import (
    SCENES,
    Shard,
    check_seeds,
    concat_shards,
    find_shards,
    load_shard,
    make_dataset,
)
from mm_perception.detection.camera.processor import CameraProcessor, box_iou

if TYPE_CHECKING:
    import torch

    from mm_perception.detection.camera.detector import CameraDetector
    from mm_perception.detection.camera.model import RawOutputs

LOG = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]


# ---------------------------------------------------------------------------- arguments
def _seed_range(text: str) -> list[int]:
    """``"100-147"`` or ``"100,105,110"`` -> seeds (held-out seeds refused)."""
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                out.extend(range(int(lo), int(hi) + 1))
            elif part.strip():
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 100-147 or 1,2,3, got "
                                         f"{text!r}") from None
    try:
        return check_seeds(out)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mm-perception train camera``."""
    parser.add_argument("--data", default="/tmp/camdata",
                        help="dataset folder of .npz shards (default /tmp/camdata)")
    parser.add_argument("--out", default="out/camera_detector",
                        help="output folder for weights, config, processor and train_log.json")
    parser.add_argument("--make-data", action="store_true",
                        help="simulate the missing shards of the chosen seeds first")
    parser.add_argument("--scenes", nargs="+", default=list(SCENES),
                        help=f"scenarios (default: {' '.join(SCENES)})")
    parser.add_argument("--train-seeds", type=_seed_range, default=_seed_range("100-147"),
                        help="training seeds, e.g. 100-147 (allowed: 100-399)")
    parser.add_argument("--val-seeds", type=_seed_range, default=_seed_range("500-505"),
                        help="validation seeds, e.g. 500-505 (allowed: 500-599)")
    parser.add_argument("--duration", type=float, default=12.0,
                        help="simulated seconds per scene (with --make-data)")
    parser.add_argument("--sample-period", type=float, default=0.4,
                        help="seconds between kept frames (with --make-data)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="autocast the network to bfloat16 in training (auto: where the "
                             "CPU has native bf16, ~2x faster there)")
    parser.add_argument("--seed", type=int, default=0, help="torch / numpy seed")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <out>/checkpoint.pt")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")


# ---------------------------------------------------------------------------- data
def load_split(data_dir: str | Path, seeds: Sequence[int],
               scenes: Sequence[str] = SCENES) -> Shard:
    """All shards of ``scenes`` x ``seeds`` found in ``data_dir`` as one shard."""
    paths = find_shards(data_dir, seeds, scenes)
    if not paths:
        raise ConfigError(f"no dataset shards for seeds {min(seeds)}-{max(seeds)} in "
                          f"{data_dir}; run with --make-data")
    return concat_shards([load_shard(p) for p in paths])


class Batcher:
    """Makes augmented training batches (numpy) from a shard.

    Boxes are converted to input pixels once; each batch flips half of its images (boxes
    and class maps too) and jitters brightness (+-25 grey levels) and contrast (x0.75-1.25)
    per image, then encodes the targets with the processor.
    """

    def __init__(self, shard: Shard, processor: CameraProcessor) -> None:
        self.shard = shard
        self.processor = processor
        cfg = processor.config
        w, h = shard.orig_size
        scale = np.array([cfg.input_width / w, cfg.input_height / h] * 2, np.float32)
        order = np.argsort(shard.image_index, kind="stable")
        starts = np.searchsorted(shard.image_index[order], np.arange(len(shard) + 1))
        spans = list(itertools.pairwise(starts))
        self.boxes = [shard.boxes[order[a:b]] * scale for a, b in spans]
        self.labels = [shard.labels[order[a:b]].astype(np.int64) for a, b in spans]
        self.ignore = [shard.ignore[order[a:b]] for a, b in spans]

    def batch(self, indices: Sequence[int], rng: np.random.Generator | None
              ) -> dict[str, np.ndarray]:
        """Arrays of one batch: ``image`` (B, H, W, 3) uint8 augmented RGB (normalised by
        :func:`to_tensors`), ``heatmap`` (B, C, h, w), ``heat_weight`` (B, 1, h, w),
        ``size`` / ``offset`` (B, 2, h, w), ``reg_mask`` (B, 1, h, w), ``semantic``
        (B, C, h, w). ``rng`` None: no augmentation."""
        cfg = self.processor.config
        width = cfg.input_width
        imgs = self.shard.images[list(indices)]  # fancy indexing: a copy
        maps = self.shard.class_maps[list(indices)]
        out: dict[str, list[np.ndarray]] = {k: [] for k in (
            "heatmap", "heat_weight", "size", "offset", "reg_mask", "semantic")}
        levels = np.arange(256, dtype=np.float32)
        for j, i in enumerate(indices):
            boxes, labels, ignore = self.boxes[i], self.labels[i], self.ignore[i]
            class_map = maps[j]
            if rng is not None:
                if rng.random() < 0.5:
                    imgs[j] = imgs[j, :, ::-1]
                    class_map = class_map[:, ::-1]
                    boxes = boxes.copy()
                    boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
                contrast = rng.uniform(0.75, 1.25)
                brightness = rng.uniform(-25.0, 25.0)
                mean = float(imgs[j].mean())
                # one 256-entry look-up table per image: much faster than float images
                lut = np.clip((levels - mean) * contrast + mean + brightness, 0, 255)
                imgs[j] = lut.round().astype(np.uint8)[imgs[j]]
            t = self.processor.encode(boxes[~ignore], labels[~ignore], boxes[ignore])
            out["heatmap"].append(t.heatmap)
            out["heat_weight"].append(t.heat_weight[None])
            out["size"].append(t.size)
            out["offset"].append(t.offset)
            out["reg_mask"].append(t.reg_mask[None])
            out["semantic"].append(self.processor.encode_semantic(class_map))
        result = {k: np.stack(v) for k, v in out.items()}
        result["image"] = imgs
        return result


# ---------------------------------------------------------------------------- loss
def detection_loss(out: RawOutputs, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CenterNet losses (see the module docstring); returns the parts and ``total``."""
    import torch

    F = torch.nn.functional
    gt = batch["heatmap"]
    logits = out.heatmap.float()
    weight = batch["heat_weight"]
    pos = (gt >= 1.0).float()
    num_pos = pos.sum().clamp(min=1.0)
    # log(p) and log(1 - p) from logits (stable); p clamped for the modulating factors only
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos_loss = log_p * (1 - p) ** 2 * pos
    neg_loss = log_q * p ** 2 * (1 - gt) ** 4 * (1 - pos)
    focal = -((pos_loss + neg_loss) * weight).sum() / num_pos
    mask = batch["reg_mask"]
    size = (torch.abs(out.size.float() - batch["size"]) * mask).sum() / num_pos
    offset = (torch.abs(out.offset.float() - batch["offset"]) * mask).sum() / num_pos
    semantic = F.binary_cross_entropy_with_logits(out.semantic.float(), batch["semantic"])
    total = focal + size + offset + semantic
    return {"total": total, "focal": focal, "size": size, "offset": offset,
            "semantic": semantic}


# ---------------------------------------------------------------------------- AP
def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2010+): area under the monotone precision envelope."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def evaluate_ap(pred_boxes: Sequence[np.ndarray], pred_scores: Sequence[np.ndarray],
                pred_labels: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray],
                gt_labels: Sequence[np.ndarray], gt_ignore: Sequence[np.ndarray],
                num_classes: int, iou_threshold: float = 0.5) -> list[float | None]:
    """2D AP per class at an IoU threshold, over a list of images.

    Per class, detections are taken best first over all images; each matches the unmatched
    ground-truth box of its class with the highest IoU >= ``iou_threshold`` (true positive),
    else, if it overlaps an *ignored* box of its class that much, it is dropped (neither true
    nor false), else it is a false positive. Ignored boxes do not count as misses.

    Args:
        pred_*: per image: boxes ``(K, 4)``, scores ``(K,)``, class indices ``(K,)``.
        gt_*: per image: boxes ``(M, 4)``, class indices ``(M,)``, ignore flags ``(M,)``.

    Returns:
        AP per class index; None for a class without any (non-ignored) ground truth.
    """
    aps: list[float | None] = []
    for c in range(num_classes):
        entries: list[tuple[float, int, int]] = []  # (-score, image, det index)
        n_gt = 0
        for i in range(len(gt_boxes)):
            n_gt += int(np.sum((gt_labels[i] == c) & ~gt_ignore[i]))
            for det in np.flatnonzero(pred_labels[i] == c):
                entries.append((-float(pred_scores[i][det]), i, int(det)))
        if n_gt == 0:
            aps.append(None)
            continue
        entries.sort()
        used = [np.zeros(len(g), bool) for g in gt_boxes]
        tp: list[int] = []
        fp: list[int] = []
        for _, i, k in entries:
            sel = np.flatnonzero(gt_labels[i] == c)
            if sel.size == 0:
                tp.append(0)
                fp.append(1)
                continue
            ious = box_iou(pred_boxes[i][k], gt_boxes[i][sel])[0]
            real = ~gt_ignore[i][sel] & ~used[i][sel]
            cand = np.where(real, ious, -1.0)
            best = int(np.argmax(cand))
            if cand[best] >= iou_threshold:
                used[i][sel[best]] = True
                tp.append(1)
                fp.append(0)
            elif np.any(gt_ignore[i][sel] & (ious >= iou_threshold)):
                continue
            else:
                tp.append(0)
                fp.append(1)
        tps, fps = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
        recall = tps / n_gt
        precision = tps / np.maximum(tps + fps, 1e-12)
        aps.append(average_precision(recall, precision) if len(tp) else 0.0)
    return aps


def validation_ap(detector: CameraDetector, shard: Shard, batch_size: int = 32,
                  score_threshold: float = 0.05, progress: bool = False) -> dict[str, Any]:
    """Per-class 2D AP at IoU 0.5 of ``detector`` on a shard (boxes in original pixels).

    The shard's images are already at the input size; detections are mapped back to the
    original image with the same scale as :meth:`CameraProcessor.preprocess` would use.
    """
    from tqdm import tqdm

    cfg = detector.config
    w, h = shard.orig_size
    scale = (cfg.input_width / w, cfg.input_height / h)
    boxes, scores, labels = [], [], []
    for start in tqdm(range(0, len(shard), batch_size), desc="validation", unit="batch",
                      disable=not progress):
        imgs = shard.images[start:start + batch_size]
        heat, size, offset, sem = detector.infer_maps(detector.processor.normalize(imgs))
        for j in range(len(imgs)):
            dec = detector.decode(heat[j], size[j], offset[j], sem[j], scale, w, h,
                                  score_threshold).detections
            boxes.append(dec.boxes)
            scores.append(dec.scores)
            labels.append(np.array([detector.classes.index(c) for c in dec.labels], np.int64))
    gts = [shard.image_boxes(i) for i in range(len(shard))]  # original pixels
    aps = evaluate_ap(boxes, scores, labels, [g[0] for g in gts], [g[1] for g in gts],
                      [g[2] for g in gts], cfg.num_classes)
    per_class = {c.value: ap for c, ap in zip(cfg.classes, aps, strict=True)}
    valid = [a for a in aps if a is not None]
    counts = {c.value: int(sum(np.sum((g[1] == k) & ~g[2]) for g in gts))
              for k, c in enumerate(cfg.classes)}
    return {"iou_threshold": 0.5, "score_threshold": score_threshold, "images": len(shard),
            "ap": per_class, "mAP": float(np.mean(valid)) if valid else None,
            "gt_counts": counts}


# ---------------------------------------------------------------------------- training
def to_tensors(batch: dict[str, np.ndarray], processor: CameraProcessor
               ) -> dict[str, torch.Tensor]:
    """Torch tensors of a :meth:`Batcher.batch`; the uint8 images are normalised here
    (``(x / 255 - mean) / std``, as :meth:`CameraProcessor.normalize`) into a channels-last
    ``(B, 3, H, W)`` float32 tensor (the NHWC buffer permuted: no copy, and oneDNN's
    convolutions are fastest in that layout on CPU)."""
    import torch

    out = {k: torch.from_numpy(v) for k, v in batch.items() if k != "image"}
    img = torch.from_numpy(batch["image"]).float().div_(255.0)
    img = img.sub_(torch.from_numpy(processor.mean)).div_(torch.from_numpy(processor.std))
    out["image"] = img.permute(0, 3, 1, 2)
    return out


def train(args: argparse.Namespace, config: CameraDetectorConfig | None = None
          ) -> dict[str, Any]:
    """Train per ``args`` (see :func:`add_arguments`); returns the training log."""
    import torch
    from tqdm import tqdm

    from mm_perception.detection.camera.detector import CameraDetector
    from mm_perception.detection.camera.model import CameraDetectorNet, count_parameters

    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = config or CameraDetectorConfig()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    if args.make_data:
        for seeds in (args.val_seeds, args.train_seeds):
            make_dataset(args.data, args.scenes, seeds, config=cfg, duration_s=args.duration,
                         sample_period_s=args.sample_period, progress=progress)
    t_data = time.time()
    train_set = load_split(args.data, args.train_seeds, args.scenes)
    val_set = load_split(args.data, args.val_seeds, args.scenes)
    # normalisation statistics from every 10th training image (deterministic)
    mean, std = CameraProcessor.image_stats(train_set.images[::10])
    processor = CameraProcessor(cfg, mean.tolist(), std.tolist())
    batcher = Batcher(train_set, processor)
    net = CameraDetectorNet(cfg).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = len(train_set) // args.batch_size
    total_steps = steps_per_epoch * args.epochs

    def lr_factor(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        frac = (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps)
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    bf16 = args.precision == "bf16" or (
        args.precision == "auto" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    log: dict[str, Any] = {
        "args": {k: v if not isinstance(v, list) or len(v) < 20 else f"{v[0]}-{v[-1]}"
                 for k, v in vars(args).items() if k != "func"},
        "config": cfg.to_dict(), "processor": processor.to_dict(),
        "precision": "bf16 autocast" if bf16 else "fp32", "torch": torch.__version__,
        "parameters": count_parameters(net), "train_images": len(train_set),
        "train_boxes": int((~train_set.ignore).sum()), "val_images": len(val_set),
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
    for epoch in range(start_epoch, args.epochs):
        net.train()
        rng = np.random.default_rng([args.seed, epoch])  # data order + augmentation
        torch.manual_seed(args.seed * 1000 + epoch)
        perm = rng.permutation(len(train_set))
        sums: dict[str, float] = {}
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}",
                   unit="batch", disable=not progress)
        for step in bar:
            idx = perm[step * args.batch_size:(step + 1) * args.batch_size].tolist()
            batch = to_tensors(batcher.batch(idx, rng), processor)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                raw = net(batch["image"])
            losses = detection_loss(raw, batch)  # in float32 (the loss casts)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            sched.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if step % 10 == 0:
                bar.set_postfix(loss=f"{float(losses['total'].detach()):.3f}")
                log["loss_curve"].append({
                    "step": epoch * steps_per_epoch + step, "lr": sched.get_last_lr()[0],
                    **{k: round(float(v.detach()), 5) for k, v in losses.items()}})
        log["epochs"].append({"epoch": epoch + 1,
                              **{k: v / max(steps_per_epoch, 1) for k, v in sums.items()},
                              "wall_s": round(time.time() - t_start, 1)})
        LOG.info("epoch %d: %s", epoch + 1, log["epochs"][-1])
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "epoch": epoch, "log": log}, ckpt_path)
    net = net.to(memory_format=torch.contiguous_format)
    detector = CameraDetector(net, processor)
    t_val = time.time()
    log["validation"] = validation_ap(detector, val_set, progress=progress)
    log["wall_s"] = {"data": round(t_data - t_start, 1), "train": round(t_val - t_train, 1),
                     "validation": round(time.time() - t_val, 1),
                     "total": round(time.time() - t_start, 1)}
    detector.save(out_dir)
    # default=str: whatever else the CLI put in the namespace is still written
    (out_dir / "train_log.json").write_text(json.dumps(log, indent=1, default=str) + "\n",
                                            encoding="utf-8")
    ckpt_path.unlink(missing_ok=True)
    return log


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mm-perception train camera``; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.epochs < 1 or args.batch_size < 1 or args.threads < 1:
        raise ConfigError(f"--epochs, --batch-size and --threads must be >= 1, got "
                          f"{args.epochs}, {args.batch_size}, {args.threads}")
    log = train(args)
    val = log["validation"]
    aps = ", ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in val["ap"].items())
    print(f"validation AP@0.5 ({val['images']} images): {aps}; "
          f"mAP {val['mAP'] if val['mAP'] is None else round(val['mAP'], 3)}")
    print(f"weights written to {args.out} in {log['wall_s']['total'] / 60:.1f} min")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mm_perception.detection.camera.train",
                                     description="train the camera detector")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
