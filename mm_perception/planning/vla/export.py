"""ONNX export of the VLA policy network and of the text encoder, their tensor specs, and the
torch / ONNX Runtime parity check.

Both are exported with ``torch.onnx.export(..., dynamo=True)`` and the exporter's default
opset, as the rest of the stack's models (the BEV fusion and camera detectors). The policy
has one dynamic dimension, ``batch`` (every input and the output); the text encoder has
``batch`` and ``seq`` (tokens). Pre-processing, tokenisation and decoding stay in numpy /
the tokenizer and are shared by every backend, so backends can only differ in the tensors.

Parity tolerances (absolute): :data:`PARITY_ATOL` = 1e-4 on the policy's chunk (metres and
m/s: a tenth of a millimetre; float32 kernels summing in another order differ by ~1e-6 on
these magnitudes after a dozen layers), :data:`TEXT_PARITY_ATOL` = 1e-5 on the unit-norm
sentence embedding (six BERT layers; observed ~1e-7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mm_perception.planning.vla.config import EGO_FEATURES, OBJECT_FEATURES, VLAConfig
from mm_perception.planning.vla.model import VLAPolicyNet
from mm_perception.planning.vla.processor import OUTPUT_NAME, input_names
from mm_perception.planning.vla.text import TEXT_INPUTS, TEXT_OUTPUTS, TextEncoder
from mm_perception.runtime import (
    InferenceBackend,
    ParityReport,
    RuntimeConfig,
    TensorSpec,
    compare_outputs,
    create_backend,
)

#: max |torch - other backend| on the chunk, m and m/s
PARITY_ATOL = 1e-4
#: max |torch - other backend| on the sentence embedding
TEXT_PARITY_ATOL = 1e-5
#: upper bound of the dynamic batch dimension in the exported graphs
MAX_BATCH = 1024
#: upper bound of the token count of the exported text encoder
MAX_TOKENS = 512


def io_specs(config: VLAConfig) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The policy's input and output specs (all float32, dynamic ``batch`` first; the
    inputs of :func:`~mm_perception.planning.vla.processor.input_names`)."""
    c = config
    shapes: dict[str, tuple[int, ...]] = {
        "image": (3, c.image_height, c.image_width), "image_mask": (1,),
        "objects": (c.max_objects, OBJECT_FEATURES), "objects_mask": (c.max_objects,),
        "lanes": (c.num_lanes, c.lane_points, 2), "lanes_mask": (c.num_lanes,),
        "ego": (EGO_FEATURES,), "text": (c.text_dim,), "speed_cue": (2,)}
    inputs = tuple(TensorSpec(n, "float32", ("batch", *shapes[n])) for n in input_names(c))
    outputs = (TensorSpec(OUTPUT_NAME, "float32", ("batch", c.horizon, 3)),)
    return inputs, outputs


def example_feeds(config: VLAConfig, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds of :func:`io_specs` (masks a mix of 0 and 1; text unit-norm): for the
    export trace and parity checks."""
    rng = np.random.default_rng(seed)
    inputs, _ = io_specs(config)
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = spec.resolve({"batch": batch})
        if spec.name.endswith("_mask"):
            arr = (rng.random(shape) < 0.7).astype(np.float32)
            arr.reshape(batch, -1)[:, 0] = 1.0  # at least one of each present
        else:
            arr = rng.standard_normal(shape).astype(np.float32)
        feeds[spec.name] = arr
    text = feeds["text"]
    feeds["text"] = (text / np.linalg.norm(text, axis=1, keepdims=True)).astype(np.float32)
    return feeds


def export_onnx(net: VLAPolicyNet, path: str | Path) -> Path:
    """Export the policy network (eval mode, on the CPU) to ONNX at ``path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = net.to("cpu").eval()
    inputs, _ = io_specs(net.config)
    feeds = example_feeds(net.config, batch=2)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dynamic: tuple[Any, ...] = tuple({0: batch} for _ in inputs)
    args = tuple(torch.from_numpy(feeds[s.name]) for s in inputs)
    with torch.no_grad():
        program = torch.onnx.export(net, args, dynamo=True,
                                    input_names=[s.name for s in inputs],
                                    output_names=[OUTPUT_NAME], dynamic_shapes=dynamic,
                                    verbose=False)
    if program is None:  # pragma: no cover - dynamo export always returns a program
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(out))
    return out


def torch_backend(net: VLAPolicyNet, runtime: RuntimeConfig | None = None) -> InferenceBackend:
    """The torch backend of the policy network (``runtime.backend`` must be ``torch``)."""
    cfg = runtime or RuntimeConfig(backend="torch")
    inputs, outputs = io_specs(net.config)
    return create_backend(cfg, module=net.eval(), inputs=inputs, outputs=outputs)


def onnx_backend(config: VLAConfig, onnx_path: str | Path,
                 runtime: RuntimeConfig | None = None) -> InferenceBackend:
    """An ONNX Runtime (or TensorRT) backend of an exported policy; a file whose inputs or
    outputs differ from :func:`io_specs` is refused with both listed, a file that is not a
    model with :class:`~mm_perception.core.errors.ModelLoadError`."""
    cfg = runtime or RuntimeConfig(backend="onnxruntime")
    inputs, outputs = io_specs(config)
    return create_backend(cfg, onnx_path=onnx_path, inputs=inputs, outputs=outputs)


def check_parity(reference: InferenceBackend, other: InferenceBackend,
                 feeds: Sequence[Mapping[str, np.ndarray]], atol: float = PARITY_ATOL,
                 ) -> ParityReport:
    """Run two backends on the same feeds; the report holds the worst difference per output
    over all of them (ok when every one is within ``atol``)."""
    if not feeds:
        raise ValueError("check_parity needs at least one feed")
    reports = []
    for feed in feeds:
        report = compare_outputs(reference.run(feed), other.run(feed), atol=atol)
        if not report.ok:
            return report
        reports.append(report)
    return max(reports, key=lambda r: max(r.max_abs_diff.values(), default=0.0))


# ---------------------------------------------------------------------------- text encoder
def export_text_onnx(encoder: TextEncoder, path: str | Path) -> Path:
    """Export the text encoder (MiniLM + mean pooling + L2 normalisation) to ONNX:
    ``input_ids``, ``attention_mask`` ``(batch, seq)`` int64 -> ``sentence_embedding``
    ``(batch, 384)`` float32 (:data:`~mm_perception.planning.vla.text.TEXT_INPUTS` /
    ``TEXT_OUTPUTS``)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = encoder.module().eval()
    feeds = encoder.tokenize(["turn left at the next junction", "stop"])
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    seq = torch.export.Dim("seq", min=1, max=MAX_TOKENS)
    args = tuple(torch.from_numpy(feeds[s.name]) for s in TEXT_INPUTS)
    with torch.no_grad():
        program = torch.onnx.export(module, args, dynamo=True,
                                    input_names=[s.name for s in TEXT_INPUTS],
                                    output_names=[s.name for s in TEXT_OUTPUTS],
                                    dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
                                    verbose=False)
    if program is None:  # pragma: no cover - dynamo export always returns a program
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(out))
    return out


def text_onnx_backend(onnx_path: str | Path, runtime: RuntimeConfig | None = None,
                      ) -> InferenceBackend:
    """A backend of an exported text encoder, for ``TextEncoder(backend=...)``."""
    cfg = runtime or RuntimeConfig(backend="onnxruntime")
    return create_backend(cfg, onnx_path=onnx_path, inputs=TEXT_INPUTS, outputs=TEXT_OUTPUTS)


__all__ = ["MAX_BATCH", "MAX_TOKENS", "PARITY_ATOL", "TEXT_PARITY_ATOL", "check_parity",
           "example_feeds", "export_onnx", "export_text_onnx", "io_specs", "onnx_backend",
           "text_onnx_backend", "torch_backend"]
