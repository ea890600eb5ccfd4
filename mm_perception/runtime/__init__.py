"""mm_perception.runtime: one inference interface over PyTorch, ONNX Runtime and TensorRT.

Public API (importing this package loads numpy only; torch, onnxruntime and tensorrt are
imported by the backend that needs them)::

    TensorSpec(name, dtype, shape)            # shape: ints and named dynamic dims (str)
    RuntimeConfig(backend, device, precision, dla_core, engine_cache_dir,
                  intra_op_threads, workspace_mb, profile)
    InferenceBackend                          # Protocol: name, inputs, outputs, run, close
    create_backend(config, *, module=None, onnx_path=None, inputs, outputs,
                   calibration=None) -> InferenceBackend
    compare_outputs(reference, other, atol, rtol=0.0) -> ParityReport
    EngineCache, EngineKey                    # TensorRT engine cache (logic without TensorRT)
    build_engine(onnx_path, config) -> Path   # in mm_perception.runtime.build

Backends: ``runtime.torch_backend.TorchBackend``, ``runtime.ort_backend.OnnxRuntimeBackend``,
``runtime.tensorrt_backend.TensorRTBackend``.
"""

from mm_perception.core.errors import (
    BackendUnavailableError,
    EngineBuildError,
    FeedError,
    InferenceError,
    ModelLoadError,
    SpecMismatchError,
)
from mm_perception.runtime.config import RuntimeConfig
from mm_perception.runtime.engine_cache import CacheResult, EngineCache, EngineKey
from mm_perception.runtime.factory import create_backend
from mm_perception.runtime.parity import ParityReport, compare_outputs
from mm_perception.runtime.protocol import InferenceBackend
from mm_perception.runtime.spec import TensorSpec, validate_feeds

__all__ = ["BackendUnavailableError", "CacheResult", "EngineBuildError", "EngineCache",
           "EngineKey", "FeedError", "InferenceBackend", "InferenceError", "ModelLoadError",
           "ParityReport", "RuntimeConfig", "SpecMismatchError", "TensorSpec", "compare_outputs",
           "create_backend", "validate_feeds"]
