"""The BEV fusion network: per-modality BEV encoders, a fuser, a backbone and a
CenterPoint-style head (torch; inputs and outputs in the processor's docstring).

- **LiDAR / radar pillars** (:class:`PillarEncoder`, PointPillars): a point MLP (two linear
  + ReLU layers) on each point of each occupied cell, max-pooled over the pillar's points,
  written to its cell by a scatter without reduction (variable pillar counts, 0 included;
  ONNX ``ScatterElements``, which TensorRT supports, unlike a max-reducing scatter), then a
  3x3 conv.
- **Camera lift** (:class:`CameraEncoder`, LSS-style with a "pull" instead of a "splat"): the
  camera detector's network (frozen, trained on the simulator's images) gives stride-4 image
  features; a 1x1 head predicts ``camera_channels`` features and a depth distribution over
  ``depth_bins`` bins for every feature pixel (supervised with projected LiDAR depth in
  training). Every BEV cell, at each lift height, is looked up where it projects in the image
  (bilinear ``grid_sample`` of features and depth probabilities); its feature is the image
  feature times the probability that the pixel's depth is the cell's depth (linear
  interpolation between bins), summed over heights and cameras. This is the LSS outer product
  evaluated at the BEV cells, without a scatter, so it exports to ONNX / TensorRT as
  ``GridSample`` and elementwise ops.
- **Fusers** (:class:`ConcatFuser`, :class:`AttentionFuser`): a missing modality's features
  are replaced by a learned "missing" embedding chosen by the ``present`` input (the model is
  told, never fed zeros it has to interpret). ``concat``: channel concatenation + 3x3 conv.
  ``attention``: per BEV cell, a query (learned, plus the mean of the present modalities)
  attends over the modality features (key-masked where absent), multi-head, + 3x3 conv.
- **Backbone**: three stages (full, 1/2, 1/4 resolution) with a top-down path back to full
  resolution; **head**: a shared 3x3 conv and 1x1 convs for the class heatmap (logits, bias at
  the focal-loss prior), centre offset from the cell (in it, or within
  ``regression_radius_cells`` of it), centre height, log size, (sin, cos) yaw and velocity
  over ground.

:class:`BevFusionInference` is what the runtimes run: named inputs (only those of the
model's modalities, see :func:`input_names`), the heatmap through a sigmoid, outputs in
:data:`~mm_perception.fusion.feature_level.processor.OUTPUT_NAMES` order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from torch import nn

from mm_perception.detection.camera.model import CameraDetectorNet, conv_bn_relu
from mm_perception.fusion.feature_level.config import (
    LIDAR_POINT_FEATURES,
    MODALITIES,
    RADAR_POINT_FEATURES,
    BevModelConfig,
)
from mm_perception.fusion.feature_level.processor import INPUT_NAMES, OUTPUT_NAMES

#: model inputs each modality brings
MODALITY_INPUTS: dict[str, tuple[str, ...]] = {
    "camera": ("images", "cam_grid", "cam_depth"),
    "lidar": ("lidar_pillars", "lidar_mask", "lidar_cells"),
    "radar": ("radar_pillars", "radar_mask", "radar_cells"),
}
#: channels of each head output
HEAD_CHANNELS: dict[str, int] = {"offset": 2, "z": 1, "size": 3, "rot": 2, "velocity": 2}


def input_names(config: BevModelConfig) -> tuple[str, ...]:
    """The model's inputs for its modalities, in :data:`INPUT_NAMES` order."""
    wanted = {n for m in config.modalities for n in MODALITY_INPUTS[m]} | {"present"}
    return tuple(n for n in INPUT_NAMES if n in wanted)


class PillarEncoder(nn.Module):
    """Pillars ``(P, S, F)`` + mask ``(P, S, 1)`` + unique cells ``(P,)`` -> BEV features
    ``(B, C, nx, ny)``."""

    def __init__(self, in_features: int, channels: int, nx: int, ny: int) -> None:
        super().__init__()
        self.channels, self.nx, self.ny = channels, nx, ny
        self.mlp = nn.Sequential(nn.Linear(in_features, channels), nn.ReLU(),
                                 nn.Linear(channels, channels), nn.ReLU())
        self.conv = conv_bn_relu(channels, channels)

    def scatter(self, pillars: torch.Tensor, mask: torch.Tensor, cells: torch.Tensor,
                batch: int = 1) -> torch.Tensor:
        """Max-pool each pillar's point features and write them to their cells:
        ``(B, C, nx, ny)``, 0 in empty cells (the MLP ends in a ReLU, so padding rows
        multiplied by 0 never win the max and 0 is below every real feature). For ``batch``
        frames the cells of frame ``b`` are offset by ``b * nx * ny``."""
        f = (self.mlp(pillars) * mask).amax(dim=1)                     # (P, C)
        grid = f.new_zeros(self.channels, batch * self.nx * self.ny)
        index = cells.unsqueeze(0).expand(self.channels, -1)
        grid = grid.scatter(1, index, f.t())  # unique cells: a plain scatter
        if batch == 1:
            return grid.view(1, self.channels, self.nx, self.ny)
        return grid.view(self.channels, batch, self.nx, self.ny).transpose(0, 1)

    def forward(self, pillars: torch.Tensor, mask: torch.Tensor, cells: torch.Tensor,
                batch: int = 1) -> torch.Tensor:
        return self.conv(self.scatter(pillars, mask, cells, batch))


class CameraEncoder(nn.Module):
    """Images ``(K, 3, H, W)`` + lift geometry -> per-camera BEV features ``(K, C, nx, ny)``
    and depth logits ``(K, D, H / 4, W / 4)`` (see the module docstring)."""

    def __init__(self, config: BevModelConfig, camera_net: CameraDetectorNet) -> None:
        super().__init__()
        self.config = config
        self.backbone = camera_net
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        width = camera_net.config.head_width
        c, d = config.camera_channels, config.depth_bins
        self.head = nn.Sequential(conv_bn_relu(width, width), nn.Conv2d(width, c + d, 1))
        centres = config.depth_min_m + (torch.arange(d, dtype=torch.float32) + 0.5) * (
            config.depth_step_m)
        self.bin_centres: torch.Tensor
        self.register_buffer("bin_centres", centres.view(1, d, 1, 1), persistent=False)
        self.out = conv_bn_relu(c, config.bev_channels)

    def train(self, mode: bool = True) -> CameraEncoder:
        super().train(mode)
        self.backbone.eval()  # frozen: its BatchNorm statistics stay the trained ones
        return self

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen camera network's features ``(K, head_width, H / 4, W / 4)``."""
        with torch.no_grad():
            return self.backbone.features(images)

    def forward(self, images: torch.Tensor, grid: torch.Tensor, depth: torch.Tensor,
                features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``features``: :meth:`image_features` of ``images`` when already known (training
        caches them: the network is frozen), else computed here."""
        cfg = self.config
        c = cfg.camera_channels
        h = self.image_features(images) if features is None else features
        x = self.head(h.to(grid.dtype))
        feats, depth_logits = x[:, :c], x[:, c:]
        prob = torch.softmax(depth_logits, dim=1)
        sf = F.grid_sample(feats, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)                       # (K, C, Z*nx, ny)
        sp = F.grid_sample(prob, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)                       # (K, D, Z*nx, ny)
        # probability of the cell's own depth: linear interpolation between bin centres
        w = torch.relu(1.0 - torch.abs(depth - self.bin_centres) / cfg.depth_step_m)
        p_cell = (sp * w).sum(dim=1, keepdim=True)                    # (K, 1, Z*nx, ny)
        k = images.shape[0]
        g = cfg.grid
        z = len(cfg.lift_heights_m)
        lifted = (sf * p_cell).view(k, c, z, g.nx, g.ny).sum(dim=2)   # (K, C, nx, ny)
        return self.out(lifted), depth_logits


class ConcatFuser(nn.Module):
    """``(B, M, C, nx, ny)`` modality features -> ``(B, C, nx, ny)``."""

    def __init__(self, modalities: int, channels: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(modalities * channels, channels)

    def forward(self, tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        b, m, c, nx, ny = tokens.shape
        return self.conv(tokens.reshape(b, m * c, nx, ny))


class AttentionFuser(nn.Module):
    """Per-cell multi-head cross-attention over the modality features (absent ones masked):
    ``(B, M, C, nx, ny)``, ``present (B, M)`` -> ``(B, C, nx, ny)``.

    The key and value projections are 1x1 ``Conv2d`` applied to every modality's map (the
    modalities folded into the batch), not a 1x1x1 ``Conv3d`` over ``(C, M, nx, ny)``: on
    CPUs with AMX, oneDNN's bf16 ``Conv3d`` weight gradient at a 100x100 grid never returns
    (torch 2.13), which hung ``train bev --fuser attention`` at its first step. The maths is
    the same; checkpoints with the former 5-D weights load (:meth:`_load_from_state_dict`).
    """

    def __init__(self, modalities: int, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.modality_embedding = nn.Parameter(torch.zeros(1, modalities, channels, 1, 1))
        self.query = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.conv = conv_bn_relu(channels, channels)
        nn.init.normal_(self.modality_embedding, std=0.02)

    def _load_from_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str,
                              *args: object, **kwargs: object) -> None:
        # checkpoints from before the 2-D projections hold (C, C, 1, 1, 1) Conv3d weights
        for name in ("k", "v"):
            key = f"{prefix}{name}.weight"
            if key in state_dict and state_dict[key].dim() == 5:
                state_dict[key] = state_dict[key][..., 0]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        b, m, c, nx, ny = tokens.shape
        h = self.heads
        dh = c // h
        weight = present.view(b, m, 1, 1, 1)
        mean = (tokens * weight).sum(1) / weight.sum(1).clamp(min=1.0)
        tok = (tokens + self.modality_embedding).reshape(b * m, c, nx, ny)
        q = self.q(mean + self.query).view(b, 1, h, dh, nx, ny)
        k = self.k(tok).view(b, m, h, dh, nx, ny)
        v = self.v(tok).view(b, m, h, dh, nx, ny)
        logits = (q * k).sum(dim=3) / math.sqrt(dh)                       # (B, M, h, nx, ny)
        logits = logits - (1.0 - present.view(b, m, 1, 1, 1)) * 1e4
        attn = torch.softmax(logits, dim=1).unsqueeze(3)                   # (B, M, h, 1, ..)
        out = (attn * v).sum(dim=1).reshape(b, c, nx, ny)
        return self.conv(mean + self.proj(out))


class BevBackbone(nn.Module):
    """Three stages (1, 1/2, 1/4 resolution) with a top-down path: ``(B, C, nx, ny)`` ->
    ``(B, C, nx, ny)``."""

    def __init__(self, channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        c1, c2 = widths
        self.b0 = nn.Sequential(conv_bn_relu(channels, channels),
                                conv_bn_relu(channels, channels))
        self.b1 = nn.Sequential(conv_bn_relu(channels, c1, stride=2), conv_bn_relu(c1, c1))
        self.b2 = nn.Sequential(conv_bn_relu(c1, c2, stride=2), conv_bn_relu(c2, c2))
        self.lat2 = nn.Conv2d(c2, c1, 1)
        self.lat1 = nn.Conv2d(c1, channels, 1)
        self.smooth1 = conv_bn_relu(c1, c1)
        self.smooth0 = conv_bn_relu(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.b0(x)
        x1 = self.b1(x0)
        x2 = self.b2(x1)
        p1 = self.smooth1(x1 + F.interpolate(self.lat2(x2), size=x1.shape[-2:],
                                             mode="nearest"))
        return self.smooth0(x0 + F.interpolate(self.lat1(p1), size=x0.shape[-2:],
                                               mode="nearest"))


class BevFusionNet(nn.Module):
    """The whole network (see the module docstring)."""

    def __init__(self, config: BevModelConfig, camera_net: CameraDetectorNet | None = None,
                 ) -> None:
        super().__init__()
        self.config = config
        g = config.grid
        c = config.bev_channels
        mods = config.modalities
        if "camera" in mods:
            if camera_net is None:
                raise ValueError("a BEV model with a camera needs the camera detector network")
            self.camera = CameraEncoder(config, camera_net)
        if "lidar" in mods:
            self.lidar = PillarEncoder(LIDAR_POINT_FEATURES, c, g.nx, g.ny)
        if "radar" in mods:
            self.radar = PillarEncoder(RADAR_POINT_FEATURES, c, g.nx, g.ny)
        #: index of each of the model's modalities in the ``present`` input
        self.modality_index = [MODALITIES.index(m) for m in mods]
        self.missing = nn.Parameter(torch.zeros(1, len(mods), c, 1, 1))
        self.fuser: nn.Module = (AttentionFuser(len(mods), c, config.attention_heads)
                                 if config.fuser == "attention" else ConcatFuser(len(mods), c))
        self.backbone = BevBackbone(c, config.backbone_channels)
        self.shared = conv_bn_relu(c, c)
        self.heatmap = nn.Conv2d(c, config.num_classes, 1)
        self.regress = nn.ModuleDict({k: nn.Conv2d(c, n, 1) for k, n in HEAD_CHANNELS.items()})
        nn.init.normal_(self.heatmap.weight, std=0.01)
        assert self.heatmap.bias is not None
        nn.init.constant_(self.heatmap.bias, -2.19)  # sigmoid = 0.1: the focal-loss prior
        for name in HEAD_CHANNELS:
            layer = self.regress[name]
            assert isinstance(layer, nn.Conv2d) and layer.bias is not None
            nn.init.normal_(layer.weight, std=0.001)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.missing, std=0.02)

    def modality_features(self, feeds: dict[str, torch.Tensor],
                          camera_frame: torch.Tensor | None = None, batch: int = 1,
                          ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Per-modality BEV features ``(B, C, nx, ny)`` each (model modality order) and the
        camera depth logits (None without a camera encoder).

        For a batch of frames (training) the pillar inputs are the frames' pillars
        concatenated with cells offset by ``frame * nx * ny``, and ``camera_frame``
        ``(K,)`` int64 says which frame each camera belongs to."""
        g = self.config.grid
        c = self.config.bev_channels
        out: list[torch.Tensor] = []
        depth_logits = None
        for m in self.config.modalities:
            if m == "camera":
                per_cam, depth_logits = self.camera(feeds["images"], feeds["cam_grid"],
                                                    feeds["cam_depth"],
                                                    feeds.get("image_features"))
                if camera_frame is None:
                    feat = per_cam.sum(dim=0, keepdim=True)
                else:
                    feat = per_cam.new_zeros(batch, c, g.nx, g.ny).index_add(
                        0, camera_frame, per_cam)
            else:
                enc = self.lidar if m == "lidar" else self.radar
                feat = enc(feeds[f"{m}_pillars"], feeds[f"{m}_mask"], feeds[f"{m}_cells"],
                           batch)
            out.append(feat)
        return out, depth_logits

    def fuse_and_detect(self, feats: list[torch.Tensor], present: torch.Tensor,
                        ) -> dict[str, torch.Tensor]:
        """Modality features + ``present (B, 3)`` -> raw head outputs ``(B, ., nx, ny)``
        (heatmap as logits)."""
        p = present[:, self.modality_index]                              # (B, M)
        tokens = torch.stack(feats, dim=1)                               # (B, M, C, nx, ny)
        w = p.view(p.shape[0], -1, 1, 1, 1)
        tokens = tokens * w + self.missing * (1.0 - w)
        x = self.backbone(self.fuser(tokens, p))
        x = self.shared(x)
        out = {"heatmap": self.heatmap(x)}
        out.update({k: layer(x) for k, layer in self.regress.items()})
        out["offset"] = torch.sigmoid(out["offset"])
        r = self.config.regression_radius_cells
        if r:  # offsets of the cells around a centre reach into the neighbours
            out["offset"] = out["offset"] * (1 + 2 * r) - r
        return out

    def forward(self, **feeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """One frame: the processor's inputs (by name) -> raw outputs (heatmap logits)."""
        feats, _ = self.modality_features(feeds)
        return self.fuse_and_detect(feats, feeds["present"].view(1, -1))


class BevFusionInference(nn.Module):
    """Inference / export wrapper: named inputs of :func:`input_names` -> outputs in
    :data:`OUTPUT_NAMES` order, heatmap as probabilities."""

    def __init__(self, net: BevFusionNet) -> None:
        super().__init__()
        self.net = net
        self.names = input_names(net.config)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(**dict(zip(self.names, inputs, strict=True)))
        out["heatmap"] = torch.sigmoid(out["heatmap"])
        return tuple(out[k] for k in OUTPUT_NAMES)


__all__ = ["HEAD_CHANNELS", "MODALITY_INPUTS", "AttentionFuser", "BevBackbone",
           "BevFusionInference", "BevFusionNet", "CameraEncoder", "ConcatFuser",
           "PillarEncoder", "input_names"]
