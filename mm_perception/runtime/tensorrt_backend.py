"""TensorRT backend (TensorRT 10 API): build an engine from ONNX, cache it, run it.

``tensorrt`` is imported only when a backend is created or an engine is built; without it
:class:`~mm_perception.core.errors.BackendUnavailableError` says so and the rest of the
stack keeps working. Building: ``trt.Builder`` + ``OnnxParser``, one optimisation profile
from :attr:`RuntimeConfig.profile` (every dynamic input dim needs ``(min, opt, max)``),
``FP16`` / ``INT8`` (entropy calibration on a user-supplied set of feed dicts), optional DLA
core with GPU fallback. Engines go through :class:`~mm_perception.runtime.engine_cache.
EngineCache`. Running: ``execute_async_v3`` on torch's current CUDA stream with torch CUDA
tensors as buffers (``set_input_shape`` / ``set_tensor_address``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import (
    BackendUnavailableError,
    ConfigError,
    EngineBuildError,
    FeedError,
    InferenceError,
    ModelLoadError,
    SpecMismatchError,
)
from mm_perception.runtime.config import RuntimeConfig
from mm_perception.runtime.engine_cache import EngineCache, EngineKey, ProfileShapes, file_sha256
from mm_perception.runtime.onnx_model import onnx_specs
from mm_perception.runtime.spec import (
    TensorSpec,
    check_model_specs,
    validate_feeds,
    validate_outputs,
)

LOG = logging.getLogger(__name__)
Feeds = Mapping[str, npt.NDArray[np.generic]]


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`BackendUnavailableError` with what to do."""
    try:
        return importlib.import_module("tensorrt")  # optional, untyped: imported lazily
    except ImportError as exc:
        raise BackendUnavailableError(
            "TensorRT is not installed (pip install tensorrt on a CUDA machine; on a Jetson it "
            "comes with JetPack); use backend 'onnxruntime' or 'torch' instead") from exc


def profile_shapes(inputs: Sequence[TensorSpec],
                   profile: Mapping[str, tuple[int, int, int]]) -> ProfileShapes:
    """Per input (sorted by name): (name, min, opt, max) shapes from dim-name ranges.

    Raises:
        ConfigError: a dynamic dim of an input has no profile entry.
    """
    rows = []
    for spec in sorted(inputs, key=lambda s: s.name):
        missing = [d for d in spec.dynamic_dims if d not in profile]
        if missing:
            raise ConfigError(f"RuntimeConfig.profile: no (min, opt, max) for dynamic dim(s) "
                              f"{missing} of input {spec.describe()}; TensorRT needs one for "
                              "every dynamic input dim")
        shapes = [tuple(d if isinstance(d, int) else profile[d][i] for d in spec.shape)
                  for i in range(3)]
        rows.append((spec.name, shapes[0], shapes[1], shapes[2]))
    return tuple(rows)


def _torch_dtypes(trt: Any) -> dict[Any, Any]:
    import torch

    pairs = [("FLOAT", torch.float32), ("HALF", torch.float16), ("INT32", torch.int32),
             ("INT64", torch.int64), ("INT8", torch.int8), ("UINT8", torch.uint8),
             ("BOOL", torch.bool), ("BF16", torch.bfloat16)]
    return {getattr(trt.DataType, n): t for n, t in pairs if hasattr(trt.DataType, n)}


def make_calibrator(trt: Any, calibration: Iterable[Feeds], inputs: Sequence[TensorSpec],
                    shapes: ProfileShapes) -> Any:
    """An ``IInt8EntropyCalibrator2`` that feeds ``calibration`` (feed dicts) one at a time.

    Each feed dict is validated like ``run``'s feeds and must lie inside the profile; the
    class is defined here because its base only exists once ``tensorrt`` is imported.
    """
    import torch

    ranges = {name: (lo, hi) for name, lo, _, hi in shapes}

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(calibration)
            self._keep: list[Any] = []  # device buffers must outlive the calibration step
            self.count = 0

        def get_batch_size(self) -> int:
            return 1  # explicit-batch network: the batch is part of the input shapes

        def get_batch(self, names: list[str]) -> list[int] | None:
            feeds = next(self._batches, None)
            if feeds is None:
                return None
            validate_feeds(inputs, feeds)
            for name, lo, hi in ((n, *ranges[n]) for n in names):
                shape = feeds[name].shape
                if not all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
                    raise FeedError(f"calibration input {name!r}: shape {shape} outside the "
                                    f"profile {lo}..{hi}")
            self._keep = [torch.from_numpy(np.ascontiguousarray(feeds[n])).cuda()
                          for n in names]
            self.count += 1
            return [int(t.data_ptr()) for t in self._keep]

        def read_calibration_cache(self) -> bytes | None:
            return None  # the engine itself is cached; no separate calibration table

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

    return EntropyCalibrator()


def build_serialized_engine(trt: Any, onnx_path: Path, config: RuntimeConfig,
                            shapes: ProfileShapes,
                            calibration: Iterable[Feeds] | None = None,
                            inputs: Sequence[TensorSpec] = ()) -> bytes:
    """Build a TensorRT engine from ``onnx_path``; returns the serialised engine.

    Raises:
        EngineBuildError: the parser rejects the model or the builder fails.
    """
    # on a Jetson this takes minutes; say so before, never silently at the first frame
    LOG.warning("building a TensorRT %s engine from %s%s: this can take minutes",
                config.precision, onnx_path,
                f" for DLA core {config.dla_core}" if config.dla_core is not None else "")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    # parse_from_file (not parse(bytes)) so that external-data files next to it are found
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT cannot parse the model: {errors}")
    build_config = builder.create_builder_config()
    build_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mb << 20)
    profile = builder.create_optimization_profile()
    for name, lo, opt, hi in shapes:
        profile.set_shape(name, lo, opt, hi)
    build_config.add_optimization_profile(profile)
    if config.precision == "fp32":
        # TensorRT enables TF32 by default on Ampere+ (10-bit mantissa in matmul/conv);
        # "fp32" promises float32 results that match the other backends within 1e-4
        build_config.clear_flag(trt.BuilderFlag.TF32)
    if config.precision in ("fp16", "int8"):
        # with int8, layers without an int8 kernel run in fp16 rather than fp32
        build_config.set_flag(trt.BuilderFlag.FP16)
    if config.precision == "int8":
        if calibration is None:
            raise ConfigError("RuntimeConfig.precision: 'int8' needs a calibration set "
                              "(an iterable of feed dicts)")
        build_config.set_flag(trt.BuilderFlag.INT8)
        build_config.int8_calibrator = make_calibrator(trt, calibration, inputs, shapes)
        build_config.set_calibration_profile(profile)
    if config.dla_core is not None:
        build_config.default_device_type = trt.DeviceType.DLA
        build_config.DLA_core = config.dla_core
        build_config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    blob = builder.build_serialized_network(network, build_config)
    if blob is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT failed to build a {config.precision} "
                               "engine (see the TensorRT log above)")
    return bytes(blob)


def engine_key(trt: Any, onnx_path: Path, config: RuntimeConfig, shapes: ProfileShapes,
               calibration_id: str = "") -> EngineKey:
    """The cache key of an engine built here (current TensorRT version and GPU)."""
    import torch

    return EngineKey(file_sha256(onnx_path), str(trt.__version__),
                     torch.cuda.get_device_name(), config.precision, config.dla_core, shapes,
                     calibration_id)


def _require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("tensorrt backend: CUDA is not available "
                                      "(torch.cuda.is_available() is False)")


class TensorRTBackend:
    """A TensorRT engine for ``onnx_path``, built or loaded from the engine cache.

    Attributes:
        engine_path: the cached engine file.
        built: whether this creation built the engine (False: loaded from the cache).
    """

    name = "tensorrt"

    def __init__(self, onnx_path: str | Path, inputs: Sequence[TensorSpec],
                 outputs: Sequence[TensorSpec], config: RuntimeConfig, *,
                 calibration: Iterable[Feeds] | None = None, calibration_id: str = "") -> None:
        trt = import_tensorrt()
        _require_cuda()
        import torch

        path = Path(onnx_path)
        model_inputs, model_outputs = onnx_specs(path)
        check_model_specs(path, inputs, model_inputs, "inputs")
        check_model_specs(path, outputs, model_outputs, "outputs")
        if config.precision == "int8" and calibration is None:
            raise ConfigError("RuntimeConfig.precision: 'int8' needs a calibration set")
        self._trt = trt
        self._inputs = tuple(inputs)
        self._outputs = tuple(outputs)
        self._shapes = profile_shapes(self._inputs, config.profile)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if config.dla_core is not None:
            self._runtime.DLA_core = config.dla_core
        key = engine_key(trt, path, config, self._shapes, calibration_id)
        result = EngineCache(config.engine_cache_path).get_or_build(
            path.stem, key,
            build=lambda: build_serialized_engine(trt, path, config, self._shapes, calibration,
                                                  self._inputs),
            load=self._deserialize)
        self.engine_path = result.path
        self.built = result.built
        self._engine: Any = result.value
        self._context: Any = self._engine.create_execution_context()
        if self._context is None:
            raise InferenceError(f"{self.engine_path}: cannot create an execution context")
        self._device = torch.device("cuda")
        self._dtypes = _torch_dtypes(trt)
        # TensorRT wants a non-null address even for a size-0 tensor (no points this frame)
        self._placeholder = torch.empty(256, dtype=torch.uint8, device=self._device)

    def _deserialize(self, blob: bytes) -> Any:
        engine = self._runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise ModelLoadError("TensorRT cannot deserialize the engine")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        want = [s.name for s in self._inputs + self._outputs]
        if sorted(names) != sorted(want):
            raise SpecMismatchError(f"engine tensors {names} differ from the specs {want}")
        return engine

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def _address(self, tensor: Any) -> int:
        return int(tensor.data_ptr()) if tensor.numel() else int(self._placeholder.data_ptr())

    def run(self, feeds: Feeds) -> dict[str, npt.NDArray[np.generic]]:
        """Numpy in, numpy out (host arrays); inputs must lie inside the profile."""
        import torch

        if self._context is None:
            raise RuntimeError(f"tensorrt backend for {self.engine_path} is closed")
        sizes = validate_feeds(self._inputs, feeds)
        keep = []
        for (name, lo, _, hi) in self._shapes:
            shape = feeds[name].shape
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
                raise FeedError(f"input {name!r}: shape {shape} is outside the engine's "
                                f"optimisation profile {lo}..{hi} (RuntimeConfig.profile)")
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).to(self._device)
            keep.append(tensor)
            if not self._context.set_input_shape(name, tuple(shape)):
                raise FeedError(f"input {name!r}: TensorRT rejects shape {tuple(shape)}")
            self._context.set_tensor_address(name, self._address(tensor))
        results = {}
        for spec in self._outputs:
            shape = tuple(self._context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise SpecMismatchError(f"output {spec.name!r}: data-dependent shape {shape} is "
                                        "not supported by this backend")
            dtype = self._dtypes[self._engine.get_tensor_dtype(spec.name)]
            results[spec.name] = torch.empty(shape, dtype=dtype, device=self._device)
            self._context.set_tensor_address(spec.name, self._address(results[spec.name]))
        stream = torch.cuda.current_stream(self._device)
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise InferenceError(f"{self.engine_path}: execute_async_v3 failed")
        stream.synchronize()
        out = {name: t.cpu().numpy() for name, t in results.items()}
        validate_outputs(self._outputs, out, sizes, self.name)
        return out

    def close(self) -> None:
        self._context = None
        self._engine = None
