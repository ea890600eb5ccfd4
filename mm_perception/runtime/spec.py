"""Tensor specs of a model's inputs/outputs and the checks of feeds and results against them.

A :class:`TensorSpec` names a tensor, its numpy dtype and its shape; a ``str`` entry in the
shape is a named dynamic dimension (``"num_points"``) whose size is only known at run time
and may legitimately be 0 (no LiDAR points, no cameras). Several tensors sharing a dynamic
dimension name must agree on its size in one call. numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError, FeedError, SpecMismatchError

#: a dimension: fixed size (>= 0) or the name of a dynamic dimension
Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of a model.

    Attributes:
        name: tensor name as in the model (ONNX graph input/output name).
        dtype: numpy dtype name, canonical spelling (``"float32"``, ``"int64"``, ``"bool"``).
        shape: fixed sizes (``int >= 0``) and named dynamic dims (non-empty ``str``).
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"TensorSpec.name: must be a non-empty string, got {self.name!r}")
        try:
            canonical = np.dtype(self.dtype).name
        except TypeError as exc:
            raise ConfigError(f"TensorSpec {self.name!r}: dtype {self.dtype!r} is not a numpy "
                              "dtype name") from exc
        if canonical != self.dtype:
            # one spelling per dtype, so that specs compare equal and messages are unambiguous
            raise ConfigError(f"TensorSpec {self.name!r}: dtype {self.dtype!r} must be spelled "
                              f"{canonical!r}")
        object.__setattr__(self, "shape", tuple(self.shape))
        for i, d in enumerate(self.shape):
            fixed_ok = isinstance(d, int) and not isinstance(d, bool) and d >= 0
            if not (fixed_ok or (isinstance(d, str) and d)):
                raise ConfigError(f"TensorSpec {self.name!r}: shape[{i}] = {d!r} must be an int "
                                  ">= 0 or a non-empty dynamic dimension name")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def dynamic_dims(self) -> tuple[str, ...]:
        """Names of the dynamic dimensions, in axis order."""
        return tuple(d for d in self.shape if isinstance(d, str))

    def describe(self) -> str:
        """``points float32 (num_points, 4)``: for error messages."""
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.name} {self.dtype} ({dims})"

    def resolve(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The concrete shape with dynamic dims taken from ``sizes`` (KeyError if unbound)."""
        return tuple(d if isinstance(d, int) else sizes[d] for d in self.shape)


def describe_specs(specs: Sequence[TensorSpec]) -> str:
    return "; ".join(s.describe() for s in specs) or "(none)"


def validate_feeds(specs: Sequence[TensorSpec],
                   feeds: Mapping[str, npt.NDArray[np.generic]]) -> dict[str, int]:
    """Check ``feeds`` against the input specs; return the dynamic-dim sizes they bind.

    Checks, in order: missing and unexpected names, array type, dtype (no silent casts: a
    float64 cloud fed to a float32 model is a caller bug), rank, fixed dims, and that a
    dynamic dim named in several inputs has one size. Raises :class:`FeedError` naming the
    input, what was expected and what was given.
    """
    expected = [s.name for s in specs]
    missing = [n for n in expected if n not in feeds]
    if missing:
        raise FeedError(f"missing input(s) {missing}; expected inputs: {describe_specs(specs)}")
    unexpected = sorted(set(feeds) - set(expected))
    if unexpected:
        raise FeedError(f"unexpected input(s) {unexpected}; expected inputs: "
                        f"{describe_specs(specs)}")
    sizes: dict[str, int] = {}
    first_seen: dict[str, str] = {}
    for spec in specs:
        value = feeds[spec.name]
        if not isinstance(value, np.ndarray):
            raise FeedError(f"input {spec.name!r}: expected a numpy array ({spec.describe()}), "
                            f"got {type(value).__name__}")
        if value.dtype.name != spec.dtype:
            raise FeedError(f"input {spec.name!r}: expected dtype {spec.dtype}, got "
                            f"{value.dtype.name}")
        if value.ndim != spec.rank:
            raise FeedError(f"input {spec.name!r}: expected rank {spec.rank} "
                            f"({spec.describe()}), got shape {value.shape}")
        for axis, (want, got) in enumerate(zip(spec.shape, value.shape, strict=True)):
            if isinstance(want, int):
                if want != got:
                    raise FeedError(f"input {spec.name!r}: axis {axis} must be {want} "
                                    f"({spec.describe()}), got shape {value.shape}")
            elif want in sizes and sizes[want] != got:
                raise FeedError(
                    f"input {spec.name!r}: dynamic dim {want!r} (axis {axis}) is {got}, but "
                    f"input {first_seen[want]!r} gives {want!r} = {sizes[want]}")
            else:
                sizes[want] = got
                first_seen.setdefault(want, spec.name)
    return sizes


def validate_outputs(specs: Sequence[TensorSpec],
                     outputs: Mapping[str, npt.NDArray[np.generic]],
                     sizes: Mapping[str, int], backend: str) -> None:
    """Check a backend's results against the output specs (a model bug, not a caller bug).

    Dynamic dims bound by the inputs (``sizes``) must match; output-only dynamic dims
    (e.g. a detection count) are free. Raises :class:`SpecMismatchError`.
    """
    if set(outputs) != {s.name for s in specs}:
        raise SpecMismatchError(f"{backend}: model returned outputs {sorted(outputs)}, expected "
                                f"{describe_specs(specs)}")
    for spec in specs:
        value = outputs[spec.name]
        problem = None
        if value.dtype.name != spec.dtype:
            problem = f"dtype {value.dtype.name}"
        elif value.ndim != spec.rank:
            problem = f"shape {value.shape}"
        else:
            for want, got in zip(spec.shape, value.shape, strict=True):
                bound = want if isinstance(want, int) else sizes.get(want, got)
                if bound != got:
                    problem = f"shape {value.shape}"
                    break
        if problem is not None:
            raise SpecMismatchError(f"{backend}: output {spec.name!r} has {problem}, expected "
                                    f"{spec.describe()} with {dict(sizes)}")


def _compatible(want: TensorSpec, got: TensorSpec, is_input: bool) -> bool:
    if want.dtype != got.dtype or want.rank != got.rank:
        return False
    for w, g in zip(want.shape, got.shape, strict=True):
        if isinstance(w, int):
            # a fixed expected size is fine against a dynamic model dim (the model is general)
            if isinstance(g, int) and g != w:
                return False
        elif is_input and isinstance(g, int):
            # an input the caller will feed at varying sizes must be dynamic in the model;
            # output-only names describe sizes the model decides, fixed is fine
            return False
    return True


def check_model_specs(path: str | Path, expected: Sequence[TensorSpec],
                      actual: Sequence[TensorSpec], kind: str) -> None:
    """Raise :class:`SpecMismatchError` listing both when a model file's ``kind``
    (``"inputs"`` / ``"outputs"``) differ from the expected specs in names, dtypes, ranks or
    fixed dims; an expected dynamic input dim must be dynamic in the model."""
    by_name = {s.name: s for s in actual}
    names_differ = {s.name for s in expected} != set(by_name)
    bad = [s.name for s in expected
           if s.name in by_name and not _compatible(s, by_name[s.name], kind == "inputs")]
    if names_differ or bad:
        detail = f" (differing: {bad})" if bad else ""
        raise SpecMismatchError(f"{path}: model {kind} do not match the expected specs{detail}; "
                                f"expected {describe_specs(expected)}; model has "
                                f"{describe_specs(actual)}")
