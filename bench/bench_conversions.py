"""Benchmark: PointCloud2 -> (N, 3) float32 xyz, vectorised vs a per-point Python loop.

Builds a LiDAR-like cloud (x, y, z, intensity float32, then a 16-byte gap for the ring /
time fields a driver would add: point_step 32), and times, in the same run,

- ``pointcloud2_to_xyz`` (one strided numpy copy out of the message buffer), and
- a reference loop with ``struct.unpack_from`` per point (what naive code does),

taking the best of ``--repeat`` runs of each (``time.perf_counter``). Both results must
be identical. Prints a table and optionally writes JSON.

    python bench/bench_conversions.py --points 120000 --repeat 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mm_perception.ros.conversions import (
    RosbagsFactory,
    header,
    pointcloud2_to_xyz,
)

POINT_STEP = 32  # x, y, z, intensity (16 bytes) + 16 bytes a driver uses for ring / time


def make_cloud(n_points: int, seed: int = 0) -> Any:
    """A rosbags ``PointCloud2`` with ``n_points`` finite points, point_step 32."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype({"names": ["x", "y", "z", "intensity"],
                      "formats": ["<f4"] * 4, "offsets": [0, 4, 8, 12],
                      "itemsize": POINT_STEP})
    points = np.zeros(n_points, dtype=dtype)
    for name, scale in (("x", 50.0), ("y", 50.0), ("z", 3.0), ("intensity", 255.0)):
        points[name] = rng.uniform(-scale, scale, n_points).astype(np.float32)
    factory = RosbagsFactory()
    # built by hand (array_to_pointcloud2 would pack the fields) so the benchmark reads a
    # driver's padded layout
    raw = np.zeros(n_points * POINT_STEP, dtype=np.uint8)
    raw.view(dtype)[:] = points
    fields = [factory("sensor_msgs/msg/PointField", name=n, offset=4 * i, datatype=7, count=1)
              for i, n in enumerate(("x", "y", "z", "intensity"))]
    return factory("sensor_msgs/msg/PointCloud2", header=header(1_000_000_000, "lidar", factory),
                   height=1, width=n_points, fields=fields, is_bigendian=False,
                   point_step=POINT_STEP, row_step=POINT_STEP * n_points, data=raw,
                   is_dense=True)


def reference_xyz(msg: Any) -> np.ndarray:
    """Per-point ``struct.unpack_from`` loop (the baseline)."""
    offsets = {f.name: f.offset for f in msg.fields}
    ox, oy, oz = offsets["x"], offsets["y"], offsets["z"]
    data = bytes(msg.data)
    step = msg.point_step
    out = []
    for i in range(msg.width * msg.height):
        base = i * step
        out.append((struct.unpack_from("<f", data, base + ox)[0],
                    struct.unpack_from("<f", data, base + oy)[0],
                    struct.unpack_from("<f", data, base + oz)[0]))
    return np.asarray(out, dtype=np.float32).reshape(-1, 3)


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time (s) over ``repeat`` calls and the last result."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--points", type=int, default=120_000, help="points in the cloud")
    parser.add_argument("--repeat", type=int, default=5, help="runs per method (best of)")
    parser.add_argument("--json", type=Path, default=None, help="write results to this file")
    args = parser.parse_args(argv)
    if args.points < 1 or args.repeat < 1:
        parser.error("--points and --repeat must be >= 1")

    msg = make_cloud(args.points)
    t_fast, fast = best_of(lambda: pointcloud2_to_xyz(msg), args.repeat)
    t_ref, ref = best_of(lambda: reference_xyz(msg), args.repeat)
    identical = bool(fast.shape == ref.shape and np.array_equal(fast, ref))
    if not identical:
        print("ERROR: pointcloud2_to_xyz and the struct reference differ", file=sys.stderr)

    speedup = t_ref / t_fast if t_fast > 0 else float("inf")
    rows = [("pointcloud2_to_xyz", t_fast), ("struct.unpack_from loop", t_ref)]
    print(f"PointCloud2 -> xyz, {args.points} points, point_step {POINT_STEP}, "
          f"best of {args.repeat}")
    print(f"{'method':<26}{'time [ms]':>12}{'Mpts/s':>10}")
    for name, secs in rows:
        print(f"{name:<26}{secs * 1e3:>12.3f}{args.points / secs / 1e6:>10.2f}")
    print(f"{'speed-up':<26}{speedup:>12.1f}x   identical: {identical}")

    if args.json is not None:
        args.json.write_text(json.dumps({
            "benchmark": "pointcloud2_to_xyz",
            "points": args.points,
            "point_step": POINT_STEP,
            "repeat": args.repeat,
            "vectorised_s": t_fast,
            "reference_s": t_ref,
            "speedup": speedup,
            "identical": identical,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
        }, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
