"""Compare two backends' outputs: the one parity check every model's tests reuse. numpy only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ParityReport:
    """Result of :func:`compare_outputs`.

    Attributes:
        max_abs_diff: output name -> max |reference - other| (0.0 for empty outputs, inf
            when shapes differ or NaNs do not line up).
        shapes_match: output name -> same shape on both sides.
        within_tolerance: output name -> every element satisfies
            ``|ref - other| <= atol + rtol * |ref|``.
        missing: output names present on one side only.
        atol: absolute tolerance used.
        rtol: relative tolerance used.
    """

    max_abs_diff: Mapping[str, float]
    shapes_match: Mapping[str, bool]
    within_tolerance: Mapping[str, bool]
    missing: tuple[str, ...]
    atol: float
    rtol: float

    @property
    def ok(self) -> bool:
        return not self.missing and all(self.shapes_match.values()) and all(
            self.within_tolerance.values())

    def __str__(self) -> str:
        rows = [f"{name}: max|diff|={diff:.3g} shape_ok={self.shapes_match[name]} "
                f"ok={self.within_tolerance[name]}" for name, diff in self.max_abs_diff.items()]
        if self.missing:
            rows.append(f"missing on one side: {list(self.missing)}")
        return (f"ParityReport(ok={self.ok}, atol={self.atol:g}, rtol={self.rtol:g}; "
                + "; ".join(rows) + ")")


def compare_outputs(reference: Mapping[str, npt.NDArray[np.generic]],
                    other: Mapping[str, npt.NDArray[np.generic]], atol: float,
                    rtol: float = 0.0) -> ParityReport:
    """Compare ``other`` to ``reference`` output by output (numeric arrays of any dtype).

    Differences are computed in float64 so that fp16 / int outputs compare exactly. NaN in
    the same place on both sides counts as equal (a model may emit NaN for "no value").
    """
    if atol < 0 or rtol < 0 or math.isnan(atol) or math.isnan(rtol):
        raise ValueError(f"compare_outputs: atol={atol!r} and rtol={rtol!r} must be >= 0")
    diffs: dict[str, float] = {}
    shapes: dict[str, bool] = {}
    within: dict[str, bool] = {}
    for name in reference:
        if name not in other:
            continue
        a = np.asarray(reference[name], dtype=np.float64)
        b = np.asarray(other[name], dtype=np.float64)
        shapes[name] = a.shape == b.shape
        if not shapes[name]:
            diffs[name], within[name] = math.inf, False
            continue
        if a.size == 0:
            diffs[name], within[name] = 0.0, True
            continue
        both_nan = np.isnan(a) & np.isnan(b)
        diff = np.where(both_nan, 0.0, np.abs(a - b))
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only: a mismatch
        diffs[name] = float(diff.max())
        within[name] = bool(np.all(diff <= atol + rtol * np.abs(np.nan_to_num(a))))
    missing = tuple(sorted(set(reference) ^ set(other)))
    return ParityReport(diffs, shapes, within, missing, float(atol), float(rtol))
