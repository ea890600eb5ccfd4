"""Configuration of the inference runtime (which backend, device, precision, engine cache)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, get_args

from mm_perception.core.errors import ConfigError

BackendName = Literal["torch", "onnxruntime", "tensorrt"]
DeviceName = Literal["cpu", "cuda"]
Precision = Literal["fp32", "fp16", "int8"]

BACKENDS: tuple[str, ...] = get_args(BackendName)
DEVICES: tuple[str, ...] = get_args(DeviceName)
PRECISIONS: tuple[str, ...] = get_args(Precision)
DEFAULT_ENGINE_CACHE_DIR = "~/.cache/mm_perception/engines"


def _is_int(value: object) -> bool:
    # bool is an int subclass; `dla_core=True` is a typo, not core 1
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RuntimeConfig:
    """How a model is run.

    Attributes:
        backend: ``"torch"``, ``"onnxruntime"`` or ``"tensorrt"``.
        device: ``"cpu"`` or ``"cuda"``. TensorRT needs ``"cuda"``. Asking for CUDA where it
            is not available fails at backend creation; there is no fallback to the CPU.
        precision: ``"fp32"``; ``"fp16"`` and ``"int8"`` (calibrated) for TensorRT only.
        dla_core: Jetson DLA core to build for (TensorRT only; unsupported layers fall back
            to the GPU), or None for the GPU.
        engine_cache_dir: folder of cached TensorRT engines (``~`` expanded).
        intra_op_threads: CPU threads of ONNX Runtime / torch, None = library default.
        workspace_mb: TensorRT builder workspace limit, MiB.
        profile: TensorRT optimisation profile: dynamic-dim name -> ``(min, opt, max)``
            sizes. Every dynamic dim of the model's inputs needs one for TensorRT.
    """

    backend: BackendName = "onnxruntime"
    device: DeviceName = "cpu"
    precision: Precision = "fp32"
    dla_core: int | None = None
    engine_cache_dir: str = DEFAULT_ENGINE_CACHE_DIR
    intra_op_threads: int | None = None
    workspace_mb: int = 1024
    profile: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"RuntimeConfig.backend: {self.backend!r} is not one of {BACKENDS}")
        if self.device not in DEVICES:
            raise ConfigError(f"RuntimeConfig.device: {self.device!r} is not one of {DEVICES}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"RuntimeConfig.precision: {self.precision!r} is not one of "
                              f"{PRECISIONS}")
        if self.backend == "tensorrt" and self.device != "cuda":
            raise ConfigError(f"RuntimeConfig.device: {self.device!r} with backend 'tensorrt'; "
                              "TensorRT runs on 'cuda' only")
        if self.precision != "fp32" and self.backend != "tensorrt":
            raise ConfigError(f"RuntimeConfig.precision: {self.precision!r} needs backend "
                              f"'tensorrt' (backend is {self.backend!r}); use 'fp32'")
        if self.dla_core is not None:
            if not _is_int(self.dla_core) or self.dla_core < 0:
                raise ConfigError(f"RuntimeConfig.dla_core: {self.dla_core!r} must be an int "
                                  ">= 0 or None")
            if self.backend != "tensorrt":
                raise ConfigError(f"RuntimeConfig.dla_core: {self.dla_core!r} needs backend "
                                  f"'tensorrt' (backend is {self.backend!r})")
        if not isinstance(self.engine_cache_dir, str) or not self.engine_cache_dir.strip():
            raise ConfigError(f"RuntimeConfig.engine_cache_dir: {self.engine_cache_dir!r} must "
                              "be a non-empty path")
        if self.intra_op_threads is not None and (not _is_int(self.intra_op_threads)
                                                  or self.intra_op_threads < 1):
            raise ConfigError(f"RuntimeConfig.intra_op_threads: {self.intra_op_threads!r} must "
                              "be an int >= 1 or None")
        if not _is_int(self.workspace_mb) or self.workspace_mb < 1:
            raise ConfigError(f"RuntimeConfig.workspace_mb: {self.workspace_mb!r} must be an "
                              "int >= 1")
        if not isinstance(self.profile, Mapping):
            raise ConfigError(f"RuntimeConfig.profile: {self.profile!r} must be a mapping "
                              "dim name -> (min, opt, max)")
        normalised: dict[str, tuple[int, int, int]] = {}
        for name, sizes in self.profile.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"RuntimeConfig.profile: key {name!r} must be a dynamic-dim "
                                  "name")
            try:
                triple = tuple(sizes)
            except TypeError:
                triple = ()
            if (len(triple) != 3 or not all(_is_int(v) for v in triple)
                    or not 0 <= triple[0] <= triple[1] <= triple[2]):
                raise ConfigError(f"RuntimeConfig.profile[{name!r}]: {sizes!r} must be "
                                  "(min, opt, max) ints with 0 <= min <= opt <= max")
            normalised[name] = (triple[0], triple[1], triple[2])
        # a read-only copy: the config is frozen and must not change under a built engine
        object.__setattr__(self, "profile", MappingProxyType(normalised))

    @property
    def engine_cache_path(self) -> Path:
        """``engine_cache_dir`` with ``~`` expanded."""
        return Path(self.engine_cache_dir).expanduser()
