"""Configuration of the camera object detector (a small CenterNet-style 2D detector).

One frozen dataclass, validated in ``__post_init__``: every error is a
:class:`~mm_perception.core.errors.ConfigError` that names the field and the bad value. The
config travels with the weights as ``config.json`` (:meth:`CameraDetectorConfig.to_dict` /
:meth:`CameraDetectorConfig.from_dict`), so a checkpoint always rebuilds the network it was
trained with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from mm_perception.core.checks import is_real, object_classes
from mm_perception.core.errors import ConfigError
from mm_perception.core.types import ObjectClass

#: the detector's classes, in output-channel order (UNKNOWN is the background, never a class)
DEFAULT_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass.CAR, ObjectClass.TRUCK, ObjectClass.BUS, ObjectClass.PEDESTRIAN,
    ObjectClass.CYCLIST)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class CameraDetectorConfig:
    """Network, decoding and target-encoding settings.

    Attributes:
        input_width, input_height: network input size, pixels; every image is resized
            (stretched, aspect not kept) to it. Both multiples of ``output_stride``.
        classes: detected classes in heatmap-channel order (unique, no ``UNKNOWN``).
        stem_stride: stride of the stem, a ``stem_stride x stem_stride`` "patchify" conv
            (power of two, 2 <= stem_stride <= output_stride); it skips the full-resolution
            layers that cost most on a CPU, and stride 4 still resolves the smallest objects
            at the stride-4 output.
        backbone_widths: channels of the backbone stages: stage 0 is the stem (+ a 3x3 conv),
            stage ``i > 0`` a strided 3x3 conv + a 3x3 conv (BN + ReLU after each conv) with
            stride ``stem_stride * 2**i``. Stages from ``output_stride`` on are merged by the
            FPN, so there must be at least ``log2(output_stride / stem_stride) + 1``.
        neck_width: channels of the FPN (top-down upsampling to ``output_stride``).
        head_width: channels of the shared 3x3 conv in front of the 1x1 output heads.
        output_stride: input pixels per heatmap cell (a power of two, >= 2).
        heatmap_bias: initial bias of the heatmap logits; -2.19 = logit(0.1), the focal-loss
            prior of CenterNet / RetinaNet, so early training is not swamped by negatives.
        score_threshold: detections below this peak score are dropped, [0, 1).
        top_k: peaks considered per image (over all classes) before thresholding, >= 1.
        peak_kernel: max-pool window of the peak extraction (odd, >= 1; 3 = CenterNet).
        nms_iou: IoU above which a lower-scored peak of the same class is suppressed; CenterNet
            needs no NMS in principle, but a large object sometimes gets two peaks. 1.0 = off.
        agnostic_nms_iou: IoU above which a lower-scored peak of *another* class is suppressed
            (one object scored as car and truck); 1.0 = off.
        max_detections: detections returned per image at most, >= 1.
        min_overlap: CenterNet's gaussian-radius parameter: a box shifted by the radius still
            has this IoU with the truth, (0, 1).
        min_radius: smallest gaussian radius, heatmap cells, >= 0.
        max_size_cells: largest box side the size head may decode to, heatmap cells (the
            ``exp`` of the log-size output is clamped there so a bad output never overflows).
    """

    input_width: int = 320
    input_height: int = 240
    classes: tuple[ObjectClass, ...] = DEFAULT_CLASSES
    stem_stride: int = 4
    backbone_widths: tuple[int, ...] = (32, 64, 96, 128)
    neck_width: int = 48
    head_width: int = 48
    output_stride: int = 4
    heatmap_bias: float = -2.19
    score_threshold: float = 0.3
    top_k: int = 100
    peak_kernel: int = 3
    nms_iou: float = 0.6
    agnostic_nms_iou: float = 0.85
    max_detections: int = 50
    min_overlap: float = 0.7
    min_radius: int = 0
    max_size_cells: float = 256.0

    def __post_init__(self) -> None:
        for name in ("input_width", "input_height", "neck_width", "head_width", "top_k",
                     "max_detections"):
            val = getattr(self, name)
            if not _is_int(val) or val < 1:
                raise ConfigError(f"CameraDetectorConfig.{name} must be an int >= 1, got {val!r}")
        stride = self.output_stride
        if not _is_int(stride) or stride < 2 or stride & (stride - 1):
            raise ConfigError(f"CameraDetectorConfig.output_stride must be a power of two >= 2, "
                              f"got {stride!r}")
        for name in ("input_width", "input_height"):
            if getattr(self, name) % stride:
                raise ConfigError(f"CameraDetectorConfig.{name} must be a multiple of "
                                  f"output_stride ({stride}), got {getattr(self, name)!r}")
        classes = object_classes(self.classes, "CameraDetectorConfig.classes")
        if not classes or len(set(classes)) != len(classes) or ObjectClass.UNKNOWN in classes:
            raise ConfigError(f"CameraDetectorConfig.classes must be unique, non-empty and "
                              f"without 'unknown' (the background), got "
                              f"{[c.value for c in classes]!r}")
        object.__setattr__(self, "classes", classes)
        stem = self.stem_stride
        if not _is_int(stem) or stem < 2 or stem & (stem - 1) or stem > stride:
            raise ConfigError(f"CameraDetectorConfig.stem_stride must be a power of two in "
                              f"[2, output_stride={stride}], got {stem!r}")
        widths = tuple(self.backbone_widths) if isinstance(
            self.backbone_widths, list | tuple) else None
        levels = int(math.log2(stride // stem)) + 1
        if (widths is None or len(widths) < levels
                or not all(_is_int(w) and w >= 1 for w in widths)):
            raise ConfigError(f"CameraDetectorConfig.backbone_widths must be at least "
                              f"{levels} ints >= 1 (log2(output_stride / stem_stride) + 1), "
                              f"got {self.backbone_widths!r}")
        object.__setattr__(self, "backbone_widths", widths)
        if not is_real(self.heatmap_bias) or not math.isfinite(self.heatmap_bias):
            raise ConfigError(f"CameraDetectorConfig.heatmap_bias must be a finite number, got "
                              f"{self.heatmap_bias!r}")
        if not is_real(self.score_threshold) or not 0.0 <= self.score_threshold < 1.0:
            raise ConfigError(f"CameraDetectorConfig.score_threshold must be in [0, 1), got "
                              f"{self.score_threshold!r}")
        if not _is_int(self.peak_kernel) or self.peak_kernel < 1 or self.peak_kernel % 2 == 0:
            raise ConfigError(f"CameraDetectorConfig.peak_kernel must be an odd int >= 1, got "
                              f"{self.peak_kernel!r}")
        for name in ("nms_iou", "agnostic_nms_iou"):
            val = getattr(self, name)
            if not is_real(val) or not 0.0 < val <= 1.0:
                raise ConfigError(f"CameraDetectorConfig.{name} must be in (0, 1], got {val!r}")
        if not is_real(self.min_overlap) or not 0.0 < self.min_overlap < 1.0:
            raise ConfigError(f"CameraDetectorConfig.min_overlap must be in (0, 1), got "
                              f"{self.min_overlap!r}")
        if not _is_int(self.min_radius) or self.min_radius < 0:
            raise ConfigError(f"CameraDetectorConfig.min_radius must be an int >= 0, got "
                              f"{self.min_radius!r}")
        if (not is_real(self.max_size_cells) or not math.isfinite(self.max_size_cells)
                or self.max_size_cells <= 0):
            raise ConfigError(f"CameraDetectorConfig.max_size_cells must be a positive finite "
                              f"number, got {self.max_size_cells!r}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """``(height, width)`` of the output maps, cells."""
        return self.input_height // self.output_stride, self.input_width // self.output_stride

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able mapping (classes as their string values)."""
        data = asdict(self)
        data["classes"] = [c.value for c in self.classes]
        data["backbone_widths"] = list(self.backbone_widths)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CameraDetectorConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (not silently dropped)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"CameraDetectorConfig: expected a mapping, got {data!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"CameraDetectorConfig: unknown key(s) {unknown}; known: "
                              f"{sorted(known)}")
        values = dict(data)
        if "classes" in values:
            try:
                values["classes"] = tuple(ObjectClass(c) for c in values["classes"])
            except (TypeError, ValueError):
                raise ConfigError(f"CameraDetectorConfig.classes must be class names, got "
                                  f"{values['classes']!r}") from None
        if isinstance(values.get("backbone_widths"), list):
            values["backbone_widths"] = tuple(values["backbone_widths"])
        return cls(**values)


__all__ = ["DEFAULT_CLASSES", "CameraDetectorConfig"]
