"""``create_backend``: one entry point that picks the backend named by the config."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.runtime.config import RuntimeConfig
from mm_perception.runtime.protocol import InferenceBackend
from mm_perception.runtime.spec import TensorSpec

if TYPE_CHECKING:  # torch is only needed by the torch backend
    from torch import nn


def create_backend(config: RuntimeConfig, *, module: nn.Module | None = None,
                   onnx_path: str | Path | None = None, inputs: Sequence[TensorSpec],
                   outputs: Sequence[TensorSpec],
                   calibration: Iterable[Mapping[str, npt.NDArray[np.generic]]] | None = None,
                   calibration_id: str = "") -> InferenceBackend:
    """The backend ``config.backend`` for a model given as ``module`` (torch) or
    ``onnx_path`` (onnxruntime, tensorrt).

    Backend modules are imported here, on demand, so that choosing ONNX Runtime never
    imports torch's CUDA bits or TensorRT. ``calibration`` (feed dicts) and its
    ``calibration_id`` (part of the engine cache key) are for TensorRT int8 only.

    Raises:
        ConfigError: the model argument the backend needs is missing.
        BackendUnavailableError: the backend or device is not available here.
    """
    if calibration is not None and config.precision != "int8":
        raise ConfigError(f"create_backend: a calibration set is only used with precision "
                          f"'int8' (precision is {config.precision!r})")
    match config.backend:
        case "torch":
            if module is None:
                raise ConfigError("create_backend: backend 'torch' needs module=")
            from mm_perception.runtime.torch_backend import TorchBackend

            return TorchBackend(module, inputs, outputs, device=config.device,
                                threads=config.intra_op_threads)
        case "onnxruntime":
            if onnx_path is None:
                raise ConfigError("create_backend: backend 'onnxruntime' needs onnx_path=")
            from mm_perception.runtime.ort_backend import OnnxRuntimeBackend

            return OnnxRuntimeBackend(onnx_path, inputs, outputs, device=config.device,
                                      threads=config.intra_op_threads)
        case "tensorrt":
            if onnx_path is None:
                raise ConfigError("create_backend: backend 'tensorrt' needs onnx_path=")
            from mm_perception.runtime.tensorrt_backend import TensorRTBackend

            return TensorRTBackend(onnx_path, inputs, outputs, config, calibration=calibration,
                                   calibration_id=calibration_id)
    raise ConfigError(f"create_backend: unknown backend {config.backend!r}")  # pragma: no cover
