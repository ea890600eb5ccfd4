"""ONNX export of the BEV fusion model, its tensor specs, and the torch / ONNX Runtime parity
check.

:func:`export_onnx` exports :class:`~mm_perception.fusion.feature_level.model.BevFusionInference`
with ``torch.onnx.export(..., dynamo=True)``. Dynamic dimensions (:func:`io_specs`): the
number of LiDAR pillars ``lidar_pillars``, of radar pillars ``radar_pillars`` and of cameras
``cameras``; each may be 0 at run time (an empty cloud, a scan without returns, no camera).
Pre-processing and decoding stay in numpy
(:class:`~mm_perception.fusion.feature_level.processor.BevProcessor`) and are shared by every
backend, so backends can only differ in the output maps.

Parity tolerance :data:`PARITY_ATOL` (absolute, every output map): float32 kernels of the
two runtimes sum in different orders (convolutions, the depth-weighted lift's sums), which
gives differences around 1e-5 on maps of magnitude ~1-10 after a dozen layers; 1e-3 leaves a
wide margin and is far below anything that moves a decoded box (1e-3 cells = 1 mm). Decoded
objects must agree too (same count and classes, centres within :data:`CENTER_ATOL_M`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mm_perception.fusion.feature_level.config import (
    LIDAR_POINT_FEATURES,
    RADAR_POINT_FEATURES,
    BevModelConfig,
)
from mm_perception.fusion.feature_level.model import (
    HEAD_CHANNELS,
    BevFusionInference,
    BevFusionNet,
    input_names,
)
from mm_perception.fusion.feature_level.processor import OUTPUT_NAMES, BevProcessor, RawFrame
from mm_perception.runtime import RuntimeConfig, TensorSpec, compare_outputs, create_backend
from mm_perception.runtime.protocol import InferenceBackend

#: max |torch - onnxruntime| allowed on every output map
PARITY_ATOL = 1e-3
#: max distance between the decoded object centres of two backends, m
CENTER_ATOL_M = 1e-2
#: upper bounds of the dynamic dimensions in the exported graph
MAX_PILLARS = 200_000
MAX_CAMERAS = 16


def io_specs(config: BevModelConfig, image_size: tuple[int, int] = (320, 240),
             ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The model's input and output tensor specs (names, dtypes, shapes with the dynamic
    dimensions named)."""
    g = config.grid
    z = len(config.lift_heights_m)
    w, h = image_size
    shapes: dict[str, tuple[tuple[int | str, ...], str]] = {
        "lidar_pillars": (("lidar_pillars", config.lidar_points_per_pillar,
                           LIDAR_POINT_FEATURES), "float32"),
        "lidar_mask": (("lidar_pillars", config.lidar_points_per_pillar, 1), "float32"),
        "lidar_cells": (("lidar_pillars",), "int64"),
        "radar_pillars": (("radar_pillars", config.radar_points_per_pillar,
                           RADAR_POINT_FEATURES), "float32"),
        "radar_mask": (("radar_pillars", config.radar_points_per_pillar, 1), "float32"),
        "radar_cells": (("radar_pillars",), "int64"),
        "images": (("cameras", 3, h, w), "float32"),
        "cam_grid": (("cameras", z * g.nx, g.ny, 2), "float32"),
        "cam_depth": (("cameras", 1, z * g.nx, g.ny), "float32"),
        "present": ((3,), "float32"),
    }
    inputs = tuple(TensorSpec(n, shapes[n][1], shapes[n][0]) for n in input_names(config))
    channels = {"heatmap": config.num_classes, **HEAD_CHANNELS}
    outputs = tuple(TensorSpec(n, "float32", (1, channels[n], g.nx, g.ny))
                    for n in OUTPUT_NAMES)
    return inputs, outputs


def _example_feeds(config: BevModelConfig, image_size: tuple[int, int],
                   ) -> dict[str, np.ndarray]:
    """Feeds with every dynamic dimension >= 2 (torch.export specialises sizes 0 and 1)."""
    rng = np.random.default_rng(0)
    inputs, _ = io_specs(config, image_size)
    sizes = {"lidar_pillars": 7, "radar_pillars": 5, "cameras": 2}
    n_cells = config.grid.nx * config.grid.ny
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)
        if spec.name.endswith("_cells"):
            feeds[spec.name] = rng.choice(n_cells, size=shape, replace=False).astype(np.int64)
        elif spec.name == "present":
            feeds[spec.name] = np.ones(shape, np.float32)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def export_onnx(net: BevFusionNet, path: str | Path,
                image_size: tuple[int, int] = (320, 240)) -> Path:
    """Export the network (eval mode, heatmap through a sigmoid) to ONNX at ``path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = net.config
    model = BevFusionInference(net.to("cpu").eval()).eval()
    inputs, _ = io_specs(config, image_size)
    feeds = _example_feeds(config, image_size)
    dims = {"lidar_pillars": torch.export.Dim("lidar_pillars", min=0, max=MAX_PILLARS),
            "radar_pillars": torch.export.Dim("radar_pillars", min=0, max=MAX_PILLARS),
            "cameras": torch.export.Dim("cameras", min=0, max=MAX_CAMERAS)}
    dynamic: list[Any] = [
        {k: dims[d] for k, d in enumerate(spec.shape) if isinstance(d, str)} or None
        for spec in inputs]
    # forward(*inputs): torch.export sees the varargs as one input (a tuple)
    args = tuple(torch.from_numpy(feeds[s.name]) for s in inputs)
    with torch.no_grad():
        program = torch.onnx.export(model, args, dynamo=True,
                                    input_names=[s.name for s in inputs],
                                    output_names=list(OUTPUT_NAMES),
                                    dynamic_shapes=(tuple(dynamic),), verbose=False)
    if program is None:  # pragma: no cover - dynamo export always returns a program
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(out))
    return out


def torch_backend(net: BevFusionNet, config: RuntimeConfig | None = None,
                  image_size: tuple[int, int] = (320, 240)) -> InferenceBackend:
    """The torch backend of the network (``config.backend`` must be ``torch``)."""
    cfg = config or RuntimeConfig(backend="torch")
    inputs, outputs = io_specs(net.config, image_size)
    return create_backend(cfg, module=BevFusionInference(net.eval()).eval(), inputs=inputs,
                          outputs=outputs)


def onnx_backend(config: BevModelConfig, onnx_path: str | Path,
                 runtime: RuntimeConfig | None = None,
                 image_size: tuple[int, int] = (320, 240)) -> InferenceBackend:
    """An ONNX Runtime (or TensorRT) backend of an exported model; its inputs and outputs
    are checked against :func:`io_specs` (a mismatched file is refused with both listed)."""
    cfg = runtime or RuntimeConfig(backend="onnxruntime")
    inputs, outputs = io_specs(config, image_size)
    return create_backend(cfg, onnx_path=onnx_path, inputs=inputs, outputs=outputs)


@dataclass(frozen=True)
class BevParityReport:
    """Result of :func:`check_parity`.

    Attributes:
        max_abs_diff: output name -> max |reference - other| over the frames.
        atol: the tolerance used.
        objects_match: decoded objects agree on every frame (count, classes, centres within
            :data:`CENTER_ATOL_M`).
        frames: frames compared.
    """

    max_abs_diff: Mapping[str, float]
    atol: float
    objects_match: bool
    frames: int

    @property
    def ok(self) -> bool:
        return self.objects_match and all(v <= self.atol for v in self.max_abs_diff.values())


def check_parity(reference: InferenceBackend, other: InferenceBackend,
                 processor: BevProcessor, frames: Sequence[RawFrame],
                 atol: float = PARITY_ATOL) -> BevParityReport:
    """Run two backends on the same encoded frames and compare maps and decoded objects."""
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    match = True
    names = [s.name for s in reference.inputs]
    for raw in frames:
        enc = processor.encode(raw)
        feeds = {n: enc[n] for n in names}
        a = reference.run(feeds)
        b = other.run(feeds)
        report = compare_outputs(a, b, atol=atol)
        if report.missing or not all(report.shapes_match.values()):
            match = False
        for k, v in report.max_abs_diff.items():
            worst[k] = max(worst[k], v)
        da, db = processor.decode(a, 0), processor.decode(b, 0)
        if len(da) != len(db) or any(
                x.label != y.label
                or np.linalg.norm(x.box.center[:2] - y.box.center[:2]) > CENTER_ATOL_M
                for x, y in zip(da, db, strict=True)):
            match = False
    return BevParityReport(worst, atol, match, len(frames))


__all__ = ["CENTER_ATOL_M", "MAX_CAMERAS", "MAX_PILLARS", "PARITY_ATOL", "BevParityReport",
           "check_parity", "export_onnx", "io_specs", "onnx_backend", "torch_backend"]
