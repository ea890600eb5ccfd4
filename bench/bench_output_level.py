"""Output-level fusion of 100 objects seen by LiDAR, radar and camera: median per frame.

    .venv/bin/python bench/bench_output_level.py [--objects 100] [--repeat 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mm_perception.core.types import Box3D, DetectedObject, ObjectClass
from mm_perception.fusion.output_level import OutputLevelFusion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    n, repeats = args.objects, args.repeat
    rng = np.random.default_rng(0)
    truth = np.column_stack([rng.uniform(0, 80, n), rng.uniform(-40, 40, n), np.full(n, 0.8)])

    def objs(noise: float, kind: str) -> list[DetectedObject]:
        xyz = truth + rng.normal(0, noise, truth.shape)
        return [DetectedObject(Box3D(p, np.array([4.5, 1.8, 1.6]), 0.1), ObjectClass.CAR, 0.8,
                               class_probs={"car": 0.9, "truck": 0.1} if kind != "radar"
                               else {},
                               velocity=np.array([5.0, 0.0, 0.0]) if kind == "radar" else None)
                for p in xyz]

    lists = {"lidar": objs(0.1, "lidar"), "radar": objs(0.4, "radar"),
             "camera": objs(0.5, "camera")}
    fusion = OutputLevelFusion()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fusion.fuse(lists, 1)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    print(f"output-level fusion, {n} objects x 3 sensors, {repeats} runs: median "
          f"{np.median(ms):.3f} ms, p95 {np.percentile(ms, 95):.3f} ms; "
          f"stats {dict(fusion.stats)}")


if __name__ == "__main__":
    main()
