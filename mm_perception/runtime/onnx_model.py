"""Read an ONNX file's input/output tensor specs with the ``onnx`` package (lazily imported).

Used where no ONNX Runtime session exists: building a TensorRT engine ahead of time (the
specs come from the file) and checking a TensorRT backend's expected specs before a build.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from mm_perception.core.errors import BackendUnavailableError, ModelLoadError
from mm_perception.runtime.spec import TensorSpec


def _import_onnx() -> Any:
    try:
        return importlib.import_module("onnx")  # optional: imported lazily
    except ImportError as exc:
        raise BackendUnavailableError("the onnx package is not installed (pip install onnx)"
                                      ) from exc


def _value_spec(onnx: Any, value: Any) -> TensorSpec:
    tensor_type = value.type.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    except (KeyError, TypeError, ValueError):
        dtype = "object"  # a type numpy lacks (bfloat16, float8): never matches a spec
    dims: list[int | str] = []
    for axis, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            # unnamed dynamic dims get a stable made-up name so that profiles can refer to it
            dims.append(dim.dim_param or f"{value.name}_dim{axis}")
    return TensorSpec(value.name, dtype, tuple(dims))


def onnx_specs(path: str | Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) specs declared by the ONNX file at ``path``.

    Raises:
        ModelLoadError: missing file, or not a parseable ONNX model.
    """
    onnx = _import_onnx()
    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"{file}: ONNX model file not found")
    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelLoadError(f"{file}: cannot load as an ONNX model: {exc}") from exc
    if len(model.graph.output) == 0:
        # random bytes can decode as an empty protobuf message: no graph means not a model
        raise ModelLoadError(f"{file}: not an ONNX model (no graph outputs)")
    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(_value_spec(onnx, v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_value_spec(onnx, v) for v in model.graph.output)
    return inputs, outputs
