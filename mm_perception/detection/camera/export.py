"""ONNX export of the camera detector and the torch / ONNX Runtime parity check.

:func:`export_onnx` exports :class:`~mm_perception.detection.camera.model.CameraDetectorInference`
(sigmoids included) with ``torch.onnx.export(..., dynamo=True)``: input ``image``
``(B, 3, H_in, W_in)`` float32 normalised by the processor (dynamic batch), outputs
``heatmap`` ``(B, C, h, w)`` probabilities, ``size`` ``(B, 2, h, w)`` log cells, ``offset``
``(B, 2, h, w)`` and ``semantic`` ``(B, C, h, w)`` probabilities. Pre-processing and decoding
stay in numpy (:class:`~mm_perception.detection.camera.processor.CameraProcessor`), shared by
every backend, so the backends can only differ in these four maps.

:func:`check_onnx_parity` runs both backends on the same inputs and compares the maps with
the stated tolerance :data:`PARITY_ATOL` (absolute, every output: float32 kernels of the two
runtimes sum in different orders, which gives differences around 1e-6; 1e-4 leaves a wide
margin and is still far below anything that changes a decoded box), and also requires the
decoded detections to agree (same count, boxes within 1e-2 pixels).

ONNX Runtime runs through :mod:`mm_perception.runtime` (:func:`onnx_backend`), which checks
the file's inputs/outputs against :func:`io_specs` and each feed before running;
``onnxruntime`` is imported lazily: inference with torch does not need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from mm_perception.detection.camera.detector import CameraDetector
from mm_perception.detection.camera.model import CameraDetectorInference
from mm_perception.runtime import (
    InferenceBackend,
    RuntimeConfig,
    TensorSpec,
    compare_outputs,
    create_backend,
)

F32 = npt.NDArray[np.float32]

#: max |torch - onnxruntime| allowed on every output map
PARITY_ATOL = 1e-4
#: max difference of decoded box coordinates, pixels
BOX_ATOL_PX = 1e-2
OUTPUT_NAMES = ("heatmap", "size", "offset", "semantic")


def export_onnx(detector: CameraDetector, path: str | Path, dynamic_batch: bool = True) -> Path:
    """Export the detector's network (with sigmoids) to ONNX at ``path``; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = detector.config
    model = CameraDetectorInference(detector.net).to("cpu").eval()
    example = torch.zeros(2 if dynamic_batch else 1, 3, cfg.input_height, cfg.input_width)
    dynamic_shapes: Any = ({"x": {0: torch.export.Dim("batch", min=1, max=256)}}
                           if dynamic_batch else None)
    with torch.no_grad():
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["image"],
                                    output_names=list(OUTPUT_NAMES),
                                    dynamic_shapes=dynamic_shapes, verbose=False)
    if program is None:  # pragma: no cover - dynamo export always returns a program
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(out))
    detector.net.to(detector.device)
    return out


@dataclass(frozen=True)
class ParityReport:
    """Result of :func:`check_onnx_parity`.

    Attributes:
        max_abs_diff: output name -> max |torch - onnxruntime| over the inputs.
        atol: the tolerance used.
        detections_match: decoded detections agree (count, labels, boxes within
            :data:`BOX_ATOL_PX`).
    """

    max_abs_diff: dict[str, float]
    atol: float
    detections_match: bool

    @property
    def ok(self) -> bool:
        return self.detections_match and all(v <= self.atol for v in self.max_abs_diff.values())


def io_specs(detector: CameraDetector) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) tensor specs of the exported network (see the module docstring)."""
    cfg = detector.config
    maps = ("batch", "map_h", "map_w")
    inputs = (TensorSpec("image", "float32", ("batch", 3, cfg.input_height, cfg.input_width)),)
    outputs = (TensorSpec("heatmap", "float32", (maps[0], "classes", *maps[1:])),
               TensorSpec("size", "float32", (maps[0], 2, *maps[1:])),
               TensorSpec("offset", "float32", (maps[0], 2, *maps[1:])),
               TensorSpec("semantic", "float32", (maps[0], "classes", *maps[1:])))
    return inputs, outputs


def onnx_backend(detector: CameraDetector, path: str | Path,
                 config: RuntimeConfig | None = None) -> InferenceBackend:
    """The exported model of ``detector`` on the runtime's ONNX Runtime backend (CPU unless
    ``config`` says otherwise); the file's inputs/outputs are checked against
    :func:`io_specs` at load."""
    inputs, outputs = io_specs(detector)
    return create_backend(config or RuntimeConfig(backend="onnxruntime"), onnx_path=path,
                          inputs=inputs, outputs=outputs)


def check_onnx_parity(detector: CameraDetector, onnx_path: str | Path,
                      images: list[npt.NDArray[np.uint8]],
                      atol: float = PARITY_ATOL) -> ParityReport:
    """Compare torch and ONNX Runtime on RGB images (any size; pre-processed as usual)."""
    backend = onnx_backend(detector, onnx_path)
    diffs = dict.fromkeys(OUTPUT_NAMES, 0.0)
    match = True
    try:
        for image in images:
            batch, scale = detector.processor.preprocess(image)
            ref = detector.infer_maps(batch)
            got = backend.run({"image": batch})
            report = compare_outputs(dict(zip(OUTPUT_NAMES, ref, strict=True)), got, atol)
            for name in OUTPUT_NAMES:
                diffs[name] = max(diffs[name], report.max_abs_diff[name])
            h, w = image.shape[:2]
            maps = [got[name][0] for name in OUTPUT_NAMES]
            d_ref = detector.decode(ref[0][0], ref[1][0], ref[2][0], ref[3][0], scale, w,
                                    h).detections
            d_got = detector.decode(maps[0], maps[1], maps[2], maps[3], scale, w,
                                    h).detections
            if (len(d_ref) != len(d_got) or d_ref.labels != d_got.labels
                    or not np.allclose(d_ref.boxes, d_got.boxes, atol=BOX_ATOL_PX)):
                match = False
    finally:
        backend.close()
    return ParityReport(diffs, atol, match)


__all__ = ["BOX_ATOL_PX", "OUTPUT_NAMES", "PARITY_ATOL", "ParityReport", "check_onnx_parity",
           "export_onnx", "io_specs", "onnx_backend"]
