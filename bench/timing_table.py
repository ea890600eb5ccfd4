"""Shared by the per-frame latency benchmarks (bench_bev, bench_vla): medians and p90s of
timed parts, and the side-by-side table of two backends with their ratio."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def stats(values_ms: Sequence[float]) -> dict[str, float]:
    """``{"median", "p90"}`` of a list of times, ms."""
    a = np.asarray(values_ms, np.float64)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90))}


def print_case(case: str, res: dict[str, Any], ref: str, other: str, parts: Sequence[str],
               extra: tuple[str, Callable[[dict[str, Any]], float]] | None = None,
               ) -> dict[str, float]:
    """Print one case's table (one row per backend, ``median / p90`` ms per part, and an
    ``extra`` ``(heading, value of a backend's result)`` column); returns the ratios
    ``other / ref`` of the ``infer`` and ``total`` medians."""
    width = max(len(ref), len(other), len("backend")) + 5
    head = f"{extra[0]:>9}" if extra else ""
    print(f"  {case}:")
    print(f"    {'backend':<{width}}" + "".join(f"{p + ' med/p90 ms':>22}" for p in parts) + head)
    for name in (ref, other):
        row = "".join(f"{res[name][p]['median']:>12.2f} / {res[name][p]['p90']:<7.2f}"
                      for p in parts)
        tail = f"{extra[1](res[name]):>9.1f}" if extra else ""
        print(f"    {name:<{width}}{row}{tail}")
    ratios = {p: res[other][p]["median"] / max(res[ref][p]["median"], 1e-9)
              for p in ("infer", "total")}
    print(f"    {other} / {ref}: infer {ratios['infer']:.2f}x, total {ratios['total']:.2f}x")
    return ratios
