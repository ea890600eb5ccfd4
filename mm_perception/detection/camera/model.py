"""The camera detector network: a tiny conv backbone + FPN to stride 4 + CenterNet heads.

Architecture (:class:`CameraDetectorNet`, sizes for the default 320x240 input):

- backbone: a 4x4 stride-4 "patchify" stem + 3x3 conv, then stages of (strided 3x3 conv +
  3x3 conv), BN + ReLU after each conv (default widths 32, 64, 96, 128 at strides 4, 8, 16,
  32: the deepest cells see the whole height of a near bus). No full-resolution layer: on a
  CPU those cost the most (memory traffic) for the least;
- neck: a top-down FPN from the deepest stage to ``output_stride`` (1x1 lateral convs,
  nearest upsampling to the lateral's size so odd sizes like 15 -> 8 -> 15 work, a 3x3
  smoothing conv after each merge);
- heads: a shared 3x3 conv then 1x1 convs: class **heatmap** logits (C, bias
  ``heatmap_bias`` = -2.19 for focal loss), **size** ``log(w), log(h)`` in cells (2),
  centre **offset** in the cell (2), and a **semantic** map (C logits per cell: "is this
  cell on an object of class c"), trained with the instance masks; its sigmoid is the
  per-pixel score map used to paint LiDAR points (PointPainting), which wants a score on
  the whole object, not only at its centre like the heatmap.

:class:`CameraDetectorInference` wraps the net for inference and export: sigmoids applied,
outputs in a fixed order, so torch and ONNX Runtime feed the same numbers to
:meth:`~mm_perception.detection.camera.processor.CameraProcessor.decode`.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch import nn

from mm_perception.detection.camera.config import CameraDetectorConfig


class RawOutputs(NamedTuple):
    """Raw network outputs, each ``(B, ., h, w)`` float32 at heatmap resolution."""

    heatmap: torch.Tensor   # (B, C, h, w) logits
    size: torch.Tensor      # (B, 2, h, w) log(width), log(height), cells
    offset: torch.Tensor    # (B, 2, h, w) centre offset in the cell, ~[0, 1)
    semantic: torch.Tensor  # (B, C, h, w) logits


def conv_bn_relu(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Conv (no bias: BN has one) + BatchNorm + ReLU; odd kernels are padded to keep the
    size (/ stride), even ones (the patchify stem) are not padded."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2 if kernel % 2 else 0,
                  bias=False),
        nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CameraDetectorNet(nn.Module):
    """See the module docstring. Input ``(B, 3, H_in, W_in)`` float32 normalised by the
    processor; output :class:`RawOutputs` at ``(H_in / stride, W_in / stride)``."""

    def __init__(self, config: CameraDetectorConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.backbone_widths
        stem = config.stem_stride
        stages = [nn.Sequential(conv_bn_relu(3, widths[0], stride=stem, kernel=stem),
                                conv_bn_relu(widths[0], widths[0]))]
        for cin, cout in itertools.pairwise(widths):
            stages.append(nn.Sequential(conv_bn_relu(cin, cout, stride=2),
                                        conv_bn_relu(cout, cout)))
        self.stages = nn.ModuleList(stages)
        # index of the stage whose stride is the output stride (stage i: stem * 2**i)
        self.out_level = (config.output_stride // stem).bit_length() - 1
        neck = config.neck_width
        self.laterals = nn.ModuleList(
            nn.Conv2d(widths[i], neck, 1) for i in range(self.out_level, len(widths)))
        self.smooth = nn.ModuleList(
            conv_bn_relu(neck, neck) for _ in range(self.out_level, len(widths) - 1))
        head = config.head_width
        self.head = conv_bn_relu(neck, head)
        c = config.num_classes
        self.heatmap = nn.Conv2d(head, c, 1)
        self.size = nn.Conv2d(head, 2, 1)
        self.offset = nn.Conv2d(head, 2, 1)
        self.semantic = nn.Conv2d(head, c, 1)
        self.reset_head_parameters()

    def reset_head_parameters(self) -> None:
        """Focal-loss prior on the class logits (sigmoid(-2.19) = 0.1), zero size/offset."""
        # bias starts: class logits at the prior, log-size at e^1 = 2.7 cells (a small
        # object), offset mid-cell
        for layer, std, bias in ((self.heatmap, 0.01, self.config.heatmap_bias),
                                 (self.semantic, 0.01, self.config.heatmap_bias),
                                 (self.size, 0.001, 1.0), (self.offset, 0.001, 0.5)):
            nn.init.normal_(layer.weight, std=std)
            assert layer.bias is not None
            nn.init.constant_(layer.bias, bias)

    def forward(self, x: torch.Tensor) -> RawOutputs:
        h = self.features(x)
        return RawOutputs(self.heatmap(h), self.size(h), self.offset(h), self.semantic(h))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The shared head features ``(B, head_width, H_in / stride, W_in / stride)`` that
        every output is a 1x1 conv of (also the camera features of the BEV fusion model)."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        levels = feats[self.out_level:]
        p = self.laterals[-1](levels[-1])
        for i in range(len(levels) - 2, -1, -1):
            lat = self.laterals[i](levels[i])
            up = nn.functional.interpolate(p, size=lat.shape[-2:], mode="nearest")
            p = self.smooth[i](lat + up)
        return self.head(p)


class CameraDetectorInference(nn.Module):
    """Inference / export wrapper: ``(B, 3, H_in, W_in)`` normalised input ->
    ``(heatmap (B, C, h, w) probs, size (B, 2, h, w) log cells, offset (B, 2, h, w),
    semantic (B, C, h, w) probs)``."""

    def __init__(self, net: CameraDetectorNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                 torch.Tensor]:
        out = self.net(x)
        return (torch.sigmoid(out.heatmap), out.size, out.offset, torch.sigmoid(out.semantic))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["CameraDetectorInference", "CameraDetectorNet", "RawOutputs", "conv_bn_relu",
           "count_parameters"]
