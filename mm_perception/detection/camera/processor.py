"""Pre- and post-processing of the camera detector (numpy + OpenCV, no torch).

Everything around the network that must be identical at training and inference time, and
across backends (torch, ONNX Runtime, TensorRT: they all feed :meth:`CameraProcessor.decode`
the same four maps):

- **images -> input**: resize any ``(H, W, 3)`` uint8 RGB image to the network input size
  (stretched: the aspect ratio is not kept, so boxes map back with one scale per axis;
  ``cv2.INTER_AREA`` when shrinking, which averages like a sensor and does not alias), then
  ``(x / 255 - mean) / std`` per channel, channels first. ``mean`` / ``std`` are measured on
  the training images and saved with the weights (``processor.json``).
- **maps -> boxes** (CenterNet decoding): a 3x3 max-pool keeps local maxima of the class
  heatmaps, the top-K peaks over all classes above the score threshold become boxes
  ``centre = (cell + offset) * stride``, ``size = exp(log_size) * stride``; a little NMS
  removes the rare double peak on a large object and the same object scored as two classes.
- **boxes -> training targets**: gaussian heatmap peaks with CenterNet's radius, log-size and
  sub-cell offset at the centre cell, a mask of the cells that carry regression targets, and
  a loss weight that is zero around ignored objects (too small / too occluded to demand).

Pixel convention of boxes: continuous pixel *edges*; an image spans ``[0, W] x [0, H]`` and a
box covering pixel columns ``a..b`` has ``x1 = a``, ``x2 = b + 1``. (The camera model uses
pixel *centres*: centre coordinate = edge coordinate - 0.5.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.detection.camera.config import CameraDetectorConfig

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

#: placeholder normalisation before statistics of the training images are known
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.25, 0.25, 0.25)


def check_image(image_rgb: Any) -> U8:
    """Validate an RGB image; returns it as a uint8 ndarray.

    Raises:
        ValueError: not an ``(H, W, 3)`` uint8 array with ``H, W >= 2``; the message says what
            was received.
    """
    if not isinstance(image_rgb, np.ndarray):
        raise ValueError(f"image must be a numpy array (H, W, 3) uint8 RGB, got "
                         f"{type(image_rgb).__name__}")
    if image_rgb.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB, got dtype {image_rgb.dtype} "
                         f"(shape {image_rgb.shape})")
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3) (RGB), got {image_rgb.shape}")
    if image_rgb.shape[0] < 2 or image_rgb.shape[1] < 2:
        raise ValueError(f"image must be at least 2x2 pixels, got {image_rgb.shape}")
    return image_rgb


def box_iou(a: Any, b: Any) -> F32:
    """``(N, M)`` float32 IoU of ``(N, 4)`` and ``(M, 4)`` boxes ``x1, y1, x2, y2``."""
    aa = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    bb = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(aa[:, None, 0], bb[None, :, 0])
    iy1 = np.maximum(aa[:, None, 1], bb[None, :, 1])
    ix2 = np.minimum(aa[:, None, 2], bb[None, :, 2])
    iy2 = np.minimum(aa[:, None, 3], bb[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(aa[:, 2] - aa[:, 0], 0, None) * np.clip(aa[:, 3] - aa[:, 1], 0, None)
    area_b = np.clip(bb[:, 2] - bb[:, 0], 0, None) * np.clip(bb[:, 3] - bb[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out.astype(np.float32)


def gaussian_radius(height: float, width: float, min_overlap: float) -> float:
    """CenterNet's gaussian radius (cells) for a box of ``height x width`` cells: the largest
    corner shift that keeps IoU >= ``min_overlap`` in the three cases of the CornerNet paper
    (both corners inside, both outside, one of each). Uses the same (slightly conservative)
    closed form as the reference implementation so results compare with the literature."""
    h, w = float(height), float(width)
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heat: F32, cx: int, cy: int, radius: int) -> None:
    """Max-blend a gaussian peak of value 1 at cell ``(cx, cy)`` into ``heat`` ``(h, w)``
    in place; ``sigma = (2 r + 1) / 6`` as in CenterNet, truncated at ``radius``."""
    diameter = 2 * radius + 1
    sigma = diameter / 6.0
    ys, xs = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    g = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma)).astype(np.float32)
    g[g < np.finfo(np.float32).eps * g.max()] = 0.0
    h, w = heat.shape
    left, right = min(cx, radius), min(w - cx, radius + 1)
    top, bottom = min(cy, radius), min(h - cy, radius + 1)
    region = heat[cy - top:cy + bottom, cx - left:cx + right]
    patch = g[radius - top:radius + bottom, radius - left:radius + right]
    np.maximum(region, patch, out=region)


def nms(boxes: Any, scores: Any, iou: float) -> I64:
    """Greedy NMS; returns the kept indices, best score first (ties: lower index first)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.lexsort((np.arange(len(s)), -s))
    if iou >= 1.0 or len(s) <= 1:
        return order.astype(np.int64)
    overlaps = box_iou(b, b)
    keep: list[int] = []
    suppressed = np.zeros(len(s), dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= overlaps[i] > iou
    return np.asarray(keep, dtype=np.int64)


@dataclass(frozen=True)
class Targets:
    """Training targets of one image at heatmap resolution ``(h, w)``.

    Attributes:
        heatmap: ``(C, h, w)`` float32 gaussian peaks in [0, 1], exactly 1 at object centres.
        heat_weight: ``(h, w)`` float32 loss weight of the heatmap: 0 over ignored objects
            (except where a real object's gaussian is), else 1.
        size: ``(2, h, w)`` float32 ``log(width), log(height)`` of the box in cells, at the
            centre cells (0 elsewhere).
        offset: ``(2, h, w)`` float32 sub-cell offset ``centre - floor(centre)`` in [0, 1),
            at the centre cells.
        reg_mask: ``(h, w)`` float32 1 at centre cells (where size/offset are defined).
    """

    heatmap: F32
    heat_weight: F32
    size: F32
    offset: F32
    reg_mask: F32


@dataclass(frozen=True)
class Decoded:
    """Decoded detections in *network input* pixels (see :meth:`CameraProcessor.decode`).

    Attributes:
        boxes: ``(K, 4)`` float32 ``x1, y1, x2, y2``, input pixels (edge convention).
        scores: ``(K,)`` float32 peak heatmap values, best first.
        labels: ``(K,)`` int64 class indices into ``config.classes``.
        class_probs: ``(K, C)`` float32 heatmap values of all classes at the peak cell,
            normalised to sum 1.
    """

    boxes: F32
    scores: F32
    labels: I64
    class_probs: F32


def _max_along(a: F32, k: int, axis: int) -> F32:
    """Sliding maximum of odd width ``k`` along ``axis``, centred, the outside counting as
    -inf (same shape as ``a``)."""
    pad = k // 2
    n = a.shape[axis]
    widths = [(0, 0)] * a.ndim
    widths[axis] = (pad, pad)
    padded = np.pad(a, widths, constant_values=-np.inf)
    index: list[slice] = [slice(None)] * a.ndim

    def shifted(i: int) -> F32:
        index[axis] = slice(i, i + n)
        return padded[tuple(index)]

    out = shifted(0).copy()
    for i in range(1, k):
        np.maximum(out, shifted(i), out=out)
    return out


class CameraProcessor:
    """Normalisation, decoding and target encoding for one :class:`CameraDetectorConfig`.

    Args:
        config: the detector config.
        mean, std: per-channel RGB statistics of the training images in [0, 1] units
            (``std > 0``).
    """

    def __init__(self, config: CameraDetectorConfig, mean: Sequence[float] = DEFAULT_MEAN,
                 std: Sequence[float] = DEFAULT_STD) -> None:
        self.config = config
        m = np.asarray(mean, dtype=np.float32)
        s = np.asarray(std, dtype=np.float32)
        if m.shape != (3,) or not np.all(np.isfinite(m)):
            raise ConfigError(f"CameraProcessor.mean must be 3 finite numbers, got {mean!r}")
        if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ConfigError(f"CameraProcessor.std must be 3 positive numbers, got {std!r}")
        self.mean = m
        self.std = s

    # ------------------------------------------------------------------ state
    def to_dict(self) -> dict[str, Any]:
        """The state saved with the weights (``processor.json``)."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "input_size": [self.config.input_width, self.config.input_height],
                "resize": "stretch, cv2.INTER_AREA shrinking / INTER_LINEAR enlarging",
                "box_convention": "pixel edges: x1 = first column, x2 = last column + 1"}

    @classmethod
    def from_dict(cls, config: CameraDetectorConfig, data: Mapping[str, Any]) -> CameraProcessor:
        """Inverse of :meth:`to_dict` (checks the input size matches ``config``)."""
        if not isinstance(data, Mapping) or "mean" not in data or "std" not in data:
            raise ConfigError(f"processor state must be a mapping with mean and std, got "
                              f"{data!r}")
        size = data.get("input_size")
        if size is not None and list(size) != [config.input_width, config.input_height]:
            raise ConfigError(f"processor state input_size {list(size)} does not match the "
                              f"config ({config.input_width}, {config.input_height})")
        return cls(config, data["mean"], data["std"])

    @staticmethod
    def image_stats(images: U8) -> tuple[F32, F32]:
        """Per-channel mean and std in [0, 1] units of ``(N, H, W, 3)`` uint8 images."""
        x = np.asarray(images).reshape(-1, 3).astype(np.float64) / 255.0
        return x.mean(axis=0).astype(np.float32), x.std(axis=0).astype(np.float32)

    # ------------------------------------------------------------------ images
    def resize(self, image_rgb: U8) -> U8:
        """``(H, W, 3)`` uint8 RGB -> ``(input_height, input_width, 3)`` uint8 RGB."""
        img = check_image(image_rgb)
        cfg = self.config
        h, w = img.shape[:2]
        if (h, w) == (cfg.input_height, cfg.input_width):
            return img
        shrink = w * h > cfg.input_width * cfg.input_height
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        out = cv2.resize(np.ascontiguousarray(img), (cfg.input_width, cfg.input_height),
                         interpolation=interp)
        return np.asarray(out, dtype=np.uint8)

    def normalize(self, images: U8) -> F32:
        """``(H_in, W_in, 3)`` or ``(B, H_in, W_in, 3)`` uint8 (already resized) ->
        ``(B, 3, H_in, W_in)`` float32 network input."""
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        cfg = self.config
        if x.ndim != 4 or x.shape[1:] != (cfg.input_height, cfg.input_width, 3):
            raise ValueError(f"normalize expects (B, {cfg.input_height}, {cfg.input_width}, 3) "
                             f"images, got {x.shape}")
        out = (x.astype(np.float32) / np.float32(255.0) - self.mean) / self.std
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def preprocess(self, image_rgb: U8) -> tuple[F32, tuple[float, float]]:
        """One image of any size -> ``((1, 3, H_in, W_in)`` float32 input, ``(sx, sy)``) where
        ``x_input = sx * x_original`` (edge convention)."""
        img = check_image(image_rgb)
        cfg = self.config
        scale = (cfg.input_width / img.shape[1], cfg.input_height / img.shape[0])
        return self.normalize(self.resize(img)), scale

    # ------------------------------------------------------------------ decoding
    def peaks(self, heatmap: F32) -> F32:
        """``(C, h, w)`` heatmap with everything but local maxima (max-pool window
        ``peak_kernel``, padded with -inf like ``torch.max_pool2d``) set to 0."""
        k = self.config.peak_kernel
        if k == 1:
            return heatmap.copy()
        heat = np.asarray(heatmap, dtype=np.float32)
        # a k x k max is a k-max along the columns of a k-max along the rows (separable):
        # 2 k shifted maxima instead of a window reduction, about 10 times faster
        pooled = _max_along(_max_along(heat, k, axis=1), k, axis=2)
        return np.where(pooled == heat, heat, np.float32(0.0)).astype(np.float32)

    def decode(self, heatmap: Any, size: Any, offset: Any,
               score_threshold: float | None = None) -> Decoded:
        """CenterNet decoding of one image's maps.

        Args:
            heatmap: ``(C, h, w)`` class probabilities (after the sigmoid), in [0, 1].
            size: ``(2, h, w)`` predicted ``log(width), log(height)``, cells.
            offset: ``(2, h, w)`` predicted sub-cell centre offsets.
            score_threshold: overrides ``config.score_threshold`` (e.g. 0.01 for AP).

        Returns:
            :class:`Decoded` boxes in network-input pixels, best first; non-finite map values
            are treated as 0 score / unit size, so the result is always finite.
        """
        cfg = self.config
        c, h, w = cfg.num_classes, *cfg.heatmap_size
        heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=1.0,
                             neginf=0.0).clip(0.0, 1.0)
        log_size = np.nan_to_num(np.asarray(size, dtype=np.float32), nan=0.0, posinf=0.0,
                                 neginf=0.0)
        off = np.nan_to_num(np.asarray(offset, dtype=np.float32), nan=0.0, posinf=0.0,
                            neginf=0.0)
        if heat.shape != (c, h, w) or log_size.shape != (2, h, w) or off.shape != (2, h, w):
            raise ValueError(f"decode expects maps ({c}, {h}, {w}), (2, {h}, {w}), "
                             f"(2, {h}, {w}); got {heat.shape}, {log_size.shape}, {off.shape}")
        thr = cfg.score_threshold if score_threshold is None else float(score_threshold)
        flat = self.peaks(heat).reshape(-1)
        k = min(cfg.top_k, flat.size)
        cand = np.argpartition(-flat, k - 1)[:k]
        cand = cand[np.lexsort((cand, -flat[cand]))]  # deterministic: score, then index
        cand = cand[flat[cand] > thr]
        cls_idx, rem = np.divmod(cand, h * w)
        ys, xs = np.divmod(rem, w)
        stride = np.float32(cfg.output_stride)
        max_log = np.float32(math.log(cfg.max_size_cells))
        bw = np.exp(np.clip(log_size[0, ys, xs], -max_log, max_log)) * stride
        bh = np.exp(np.clip(log_size[1, ys, xs], -max_log, max_log)) * stride
        cx = (xs + off[0, ys, xs]) * stride
        cy = (ys + off[1, ys, xs]) * stride
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        boxes = boxes.astype(np.float32).reshape(-1, 4)
        scores = flat[cand].astype(np.float32)
        labels = cls_idx.astype(np.int64)
        keep = self._suppress(boxes, scores, labels)[:cfg.max_detections]
        probs = heat[:, ys[keep], xs[keep]].T.reshape(-1, c)
        total = probs.sum(axis=1, keepdims=True)
        # a kept peak has probs[label] = score > thr >= 0; the guard covers thr = 0
        probs = np.divide(probs, total, out=np.full_like(probs, 1.0 / c), where=total > 0)
        return Decoded(boxes[keep], scores[keep], labels[keep], probs.astype(np.float32))

    def _suppress(self, boxes: F32, scores: F32, labels: I64) -> I64:
        """Indices kept by per-class NMS then cross-class NMS, best score first."""
        cfg = self.config
        keep = np.arange(len(scores))
        if cfg.nms_iou < 1.0 and len(keep) > 1:
            kept = [idx[nms(boxes[idx], scores[idx], cfg.nms_iou)]
                    for idx in (np.flatnonzero(labels == lab) for lab in np.unique(labels))]
            keep = np.concatenate(kept)
            keep = keep[np.lexsort((keep, -scores[keep]))]
        if cfg.agnostic_nms_iou < 1.0 and len(keep) > 1:
            keep = keep[nms(boxes[keep], scores[keep], cfg.agnostic_nms_iou)]
        return keep.astype(np.int64)

    @staticmethod
    def to_original(boxes_input: F32, scale: tuple[float, float], width: int,
                    height: int) -> F32:
        """Boxes in input pixels -> original-image pixels (divide by ``(sx, sy)``), clipped
        to the image ``[0, width] x [0, height]``."""
        sx, sy = scale
        out = np.asarray(boxes_input, dtype=np.float32).reshape(-1, 4) / np.array(
            [sx, sy, sx, sy], dtype=np.float32)
        out[:, [0, 2]] = out[:, [0, 2]].clip(0.0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0.0, height)
        return out.astype(np.float32)

    # ------------------------------------------------------------------ encoding
    def encode(self, boxes: Any, labels: Any, ignore_boxes: Any = None) -> Targets:
        """Training targets of one image.

        Args:
            boxes: ``(M, 4)`` ``x1, y1, x2, y2`` in network-input pixels (edge convention);
                boxes are clipped to the input and ones with no area left are skipped.
            labels: ``(M,)`` class indices into ``config.classes``.
            ignore_boxes: ``(P, 4)`` input-pixel boxes of objects the loss must not punish
                either way (too small or too occluded to be labelled), or None.

        Returns:
            :class:`Targets`. Where two objects share a centre cell the smaller one (drawn
            last) owns the size/offset targets: it is usually the one in front.
        """
        cfg = self.config
        c, h, w = cfg.num_classes, *cfg.heatmap_size
        stride = float(cfg.output_stride)
        heat = np.zeros((c, h, w), np.float32)
        size = np.zeros((2, h, w), np.float32)
        off = np.zeros((2, h, w), np.float32)
        mask = np.zeros((h, w), np.float32)
        weight = np.ones((h, w), np.float32)
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        if lab.shape[0] != b.shape[0]:
            raise ValueError(f"encode got {b.shape[0]} boxes and {lab.shape[0]} labels")
        if np.any((lab < 0) | (lab >= c)):
            raise ValueError(f"labels must be class indices in [0, {c}), got {lab.tolist()}")
        if ignore_boxes is not None:
            for x1, y1, x2, y2 in np.asarray(ignore_boxes, dtype=np.float64).reshape(-1, 4):
                c0, r0 = max(math.floor(x1 / stride), 0), max(math.floor(y1 / stride), 0)
                c1, r1 = min(math.ceil(x2 / stride), w), min(math.ceil(y2 / stride), h)
                weight[r0:r1, c0:c1] = 0.0
        b[:, [0, 2]] = b[:, [0, 2]].clip(0.0, cfg.input_width)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0.0, cfg.input_height)
        bw, bh = (b[:, 2] - b[:, 0]) / stride, (b[:, 3] - b[:, 1]) / stride
        valid = np.flatnonzero((bw > 0) & (bh > 0))
        for i in valid[np.lexsort((valid, -(bw * bh)[valid]))]:  # large first, small on top
            cx = (b[i, 0] + b[i, 2]) / 2 / stride
            cy = (b[i, 1] + b[i, 3]) / 2 / stride
            ix, iy = min(math.floor(cx), w - 1), min(math.floor(cy), h - 1)
            radius = max(cfg.min_radius,
                         int(gaussian_radius(math.ceil(bh[i]), math.ceil(bw[i]),
                                             cfg.min_overlap)))
            draw_gaussian(heat[lab[i]], ix, iy, radius)
            size[:, iy, ix] = (math.log(bw[i]), math.log(bh[i]))
            off[:, iy, ix] = (cx - ix, cy - iy)
            mask[iy, ix] = 1.0
        weight[heat.max(axis=0) > 0] = 1.0
        return Targets(heat, weight, size, off, mask)

    def encode_semantic(self, class_map: Any) -> F32:
        """Per-cell class fractions for the semantic (score-map) head.

        Args:
            class_map: ``(H_in, W_in)`` uint8 per input pixel: 0 background, ``k + 1`` class
                ``k`` (indices into ``config.classes``).

        Returns:
            ``(C, h, w)`` float32 fraction of each cell's input pixels of each class.
        """
        cfg = self.config
        cm = np.asarray(class_map)
        if cm.shape != (cfg.input_height, cfg.input_width):
            raise ValueError(f"class_map must be ({cfg.input_height}, {cfg.input_width}), got "
                             f"{cm.shape}")
        s = cfg.output_stride
        h, w = cfg.heatmap_size
        onehot = cm[None, :, :] == np.arange(1, cfg.num_classes + 1, dtype=cm.dtype)[:, None,
                                                                                      None]
        cells = onehot.reshape(cfg.num_classes, h, s, w, s).mean(axis=(2, 4))
        return cells.astype(np.float32)


__all__ = ["DEFAULT_MEAN", "DEFAULT_STD", "CameraProcessor", "Decoded", "Targets", "box_iou",
           "check_image", "draw_gaussian", "gaussian_radius", "nms"]
