"""ONNX Runtime backend: an ONNX file behind :class:`~mm_perception.runtime.InferenceBackend`.

``onnxruntime`` is imported when a backend is created, never at package import. The model's
actual inputs/outputs (names, ranks, element types, fixed dims) are checked against the
expected specs at load time, so a stale or wrong model file fails at start-up with both
lists in the message, not with an obscure error at the first frame.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import BackendUnavailableError, ModelLoadError
from mm_perception.runtime.config import DeviceName
from mm_perception.runtime.spec import (
    TensorSpec,
    check_model_specs,
    validate_feeds,
    validate_outputs,
)

#: ONNX Runtime element type strings -> numpy dtype names
ORT_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(uint8)": "uint8", "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32", "tensor(uint64)": "uint64", "tensor(bool)": "bool",
}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _import_ort() -> Any:
    try:
        return importlib.import_module("onnxruntime")  # untyped, optional: imported lazily
    except ImportError as exc:
        raise BackendUnavailableError("onnxruntime is not installed (pip install onnxruntime, "
                                      "or onnxruntime-gpu for CUDA)") from exc


def model_specs(session: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The (inputs, outputs) specs an ONNX Runtime session declares.

    Unnamed dynamic dims get ``"?"``; element types ONNX Runtime reports that numpy lacks
    (bfloat16, float8) keep the ORT spelling in the message via ``"object"``.
    """
    def spec(arg: Any) -> TensorSpec:
        dims = tuple(d if isinstance(d, int) else (d or "?") for d in arg.shape)
        return TensorSpec(arg.name, ORT_TYPES.get(arg.type, "object"), dims)

    return (tuple(spec(a) for a in session.get_inputs()),
            tuple(spec(a) for a in session.get_outputs()))


class OnnxRuntimeBackend:
    """An ONNX Runtime session of ``onnx_path`` on the CPU or CUDA execution provider."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, inputs: Sequence[TensorSpec],
                 outputs: Sequence[TensorSpec], *, device: DeviceName = "cpu",
                 threads: int | None = None) -> None:
        ort = _import_ort()
        self.path = Path(onnx_path)
        provider = PROVIDERS[device]
        if provider not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"onnxruntime backend: device {device!r} needs {provider}, which this "
                f"onnxruntime does not provide (available: {ort.get_available_providers()}); "
                "install onnxruntime-gpu with a matching CUDA")
        if not self.path.is_file():
            raise ModelLoadError(f"{self.path}: ONNX model file not found")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(self.path), options, providers=[provider])
        except Exception as exc:  # ORT raises its own pybind classes (InvalidProtobuf, Fail...)
            raise ModelLoadError(f"{self.path}: cannot load as an ONNX model: {exc}") from exc
        if provider not in session.get_providers():
            # ORT quietly drops CUDA when its libraries fail to load; we refuse to run slower
            raise BackendUnavailableError(f"onnxruntime backend: {provider} failed to start for "
                                          f"{self.path} (session has {session.get_providers()})")
        model_inputs, model_outputs = model_specs(session)
        check_model_specs(self.path, inputs, model_inputs, "inputs")
        check_model_specs(self.path, outputs, model_outputs, "outputs")
        self._session: Any = session
        self._inputs = tuple(inputs)
        self._outputs = tuple(outputs)
        self._output_names = [s.name for s in self._outputs]

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def run(self, feeds: Mapping[str, npt.NDArray[np.generic]]
            ) -> dict[str, npt.NDArray[np.generic]]:
        """Numpy in, numpy out (host arrays, see the output specs)."""
        if self._session is None:
            raise RuntimeError(f"onnxruntime backend for {self.path} is closed")
        sizes = validate_feeds(self._inputs, feeds)
        results = self._session.run(self._output_names, dict(feeds))
        out = {name: np.asarray(r) for name, r in zip(self._output_names, results, strict=True)}
        validate_outputs(self._outputs, out, sizes, self.name)
        return out

    def close(self) -> None:
        self._session = None
