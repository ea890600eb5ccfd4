"""Output-level fusion + tracking of 100 objects seen by LiDAR, radar and camera.

Per frame: association + covariance-weighted merge of the three lists
(:class:`OutputLevelFusion`), then the tracker's update with the fused list
(:class:`MultiObjectTracker`); the objects move at constant velocity between frames (10 Hz)
so that the tracker predicts, associates and updates as on real data. Reports the median and
p95 per frame of fusion alone and of fusion + tracking (the issue's goal: < 5 ms).

    .venv/bin/python bench/bench_output_level.py [--objects 100] [--frames 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mm_perception.core.types import Box3D, DetectedObject, ObjectClass
from mm_perception.fusion.output_level import OutputLevelFusion
from mm_perception.tracking.tracker import MultiObjectTracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    n, frames = args.objects, args.frames
    rng = np.random.default_rng(0)
    start = np.column_stack([rng.uniform(0, 80, n), rng.uniform(-40, 40, n), np.full(n, 0.8)])
    vel = np.column_stack([rng.uniform(-15, 15, n), rng.uniform(-1, 1, n), np.zeros(n)])
    size = np.array([4.5, 1.8, 1.6])

    def objs(truth: np.ndarray, noise: float, kind: str, stamp: int) -> list[DetectedObject]:
        xyz = truth + rng.normal(0, noise, truth.shape)
        return [DetectedObject(Box3D(p, size, 0.1), ObjectClass.CAR, 0.8, stamp_ns=stamp,
                               class_probs={"car": 0.9, "truck": 0.1} if kind != "radar"
                               else {},
                               velocity=v + rng.normal(0, 0.2, 3) if kind == "radar" else None)
                for p, v in zip(xyz, vel, strict=True)]

    inputs = []
    for k in range(frames):
        stamp = k * 100_000_000
        truth = start + vel * (k * 0.1)
        inputs.append((stamp, {"lidar": objs(truth, 0.1, "lidar", stamp),
                               "radar": objs(truth, 0.4, "radar", stamp),
                               "camera": objs(truth, 0.5, "camera", stamp)}))
    fusion = OutputLevelFusion()
    tracker = MultiObjectTracker()
    t_fuse, t_all = [], []
    n_tracks = 0
    for stamp, lists in inputs:
        t0 = time.perf_counter()
        fused = fusion.fuse(lists, stamp)
        t1 = time.perf_counter()
        tracks = tracker.update(fused, stamp)
        t2 = time.perf_counter()
        t_fuse.append(t1 - t0)
        t_all.append(t2 - t0)
        n_tracks = len(tracks)
    warm = slice(10, None)  # the first frames create tracks: not the steady state
    f_ms = np.array(t_fuse[warm]) * 1e3
    a_ms = np.array(t_all[warm]) * 1e3
    print(f"{n} objects x 3 sensors, {len(a_ms)} frames (10 Hz, moving objects):")
    print(f"  output-level fusion (associate + merge): median {np.median(f_ms):.2f} ms, "
          f"p95 {np.percentile(f_ms, 95):.2f} ms")
    print(f"  fusion + tracking:                      median {np.median(a_ms):.2f} ms, "
          f"p95 {np.percentile(a_ms, 95):.2f} ms (goal < 5 ms)")
    print(f"  fused objects per frame: {fusion.stats['output']}, live tracks: {n_tracks}")


if __name__ == "__main__":
    main()
