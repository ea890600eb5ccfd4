"""Benchmark: LiDAR -> camera projection, z-buffered depth image and painting.

Builds a realistic scene: a 1280x720 plumb_bob camera (a calibrated automotive lens's
barrel distortion, principal point off centre) looking forward from the windscreen, and a
roof LiDAR whose rays (64 beams, 360 degrees) hit a ground plane, street-side walls and
vertical obstacles (cars, poles): ``--points`` points, a realistic share of them in view.
Then times, in the same run and on one thread, ``--repeat`` runs of each, in alternating
blocks of ``--block`` runs (steady state, as a node processing a stream), reporting medians:

(a) ``project_points`` + ``depth_image`` + ``paint_points`` (mm_perception.fusion), and
(b) a reference built on ``cv2.projectPoints``: the points in front of the camera are
    projected by OpenCV; the lens's valid region is checked (as CameraModel does: without
    it, points beside the car fold back into the image); pixels outside the image are
    dropped; the depth image is a per-pixel z-buffer by ``np.minimum.at``; painting is
    fancy indexing into the image.

It also times (a) with cold caches: each run right after a reference run, which evicts the
inputs from the caches (the pessimistic case). Both must agree: the same valid points,
``uv`` to 1e-3 px, identical depth images and painted colours. Prints a table with medians
and the speed-up; optionally writes JSON; exits 1 when the outputs differ.

    python bench/bench_projection.py --points 120000 --repeat 100 --json out.json
"""

from __future__ import annotations

import os

# Both methods are timed on one core: a threaded BLAS (the reference's 3x3 transform) wakes
# worker threads whose spinning and wake-up jitter (up to ms on a small VM) would land on
# whichever method runs next. Must be set before numpy loads its BLAS.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mm_perception.core.camera import CameraModel  # noqa: E402
from mm_perception.core.geometry import SE3  # noqa: E402
from mm_perception.fusion.data_level import (  # noqa: E402
    Painted,
    Projection,
    depth_image,
    paint_points,
    project_points,
)

WIDTH, HEIGHT = 1280, 720
MIN_DEPTH = 0.1


def make_camera() -> tuple[CameraModel, SE3]:
    """A 1280x720 automotive camera with calibrated-looking barrel distortion and its mount
    (``T_base_cam``: windscreen, 1.4 m up, pitched 3 degrees down)."""
    cam = CameraModel(WIDTH, HEIGHT, 1012.6, 1010.9, 647.3, 355.8, "plumb_bob",
                      (-0.2814, 0.0892, 3.1e-4, -2.2e-4, -0.0121))
    # optical frame (z fwd, x right, y down) from base_link (x fwd, y left, z up)
    T_base_cam = SE3.from_rpy(-math.pi / 2 - math.radians(3.0), 0.0, -math.pi / 2,
                              (1.8, 0.0, 1.4))
    return cam, T_base_cam


def make_lidar_points(n_points: int, seed: int = 0) -> tuple[np.ndarray, SE3]:
    """``(n, 3)`` float32 LiDAR-frame points of a 64-beam spinning LiDAR (roof, 1.9 m) in a
    street: ground plane, walls 9 m to each side, 40 vertical cylinders (cars, poles)."""
    rng = np.random.default_rng(seed)
    T_base_lidar = SE3.from_rpy(0.0, 0.0, math.radians(0.4), (0.2, 0.0, 1.9))
    beams = 64
    n_az = -(-n_points // beams)
    elev = np.radians(np.linspace(-25.0, 3.0, beams))
    az = np.linspace(-math.pi, math.pi, n_az, endpoint=False)
    el, azm = np.meshgrid(elev, az, indexing="ij")
    d = np.stack([np.cos(el) * np.cos(azm), np.cos(el) * np.sin(azm), np.sin(el)],
                 axis=-1).reshape(-1, 3)[:n_points]
    origin = T_base_lidar.translation
    d_base = T_base_lidar.rotate(d)
    rng_max = np.full(d.shape[0], 100.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(d_base[:, 2] < 0, -origin[2] / d_base[:, 2], np.inf)
        t_wall = np.where(np.abs(d_base[:, 1]) > 1e-6, (9.0 * np.sign(d_base[:, 1])
                                                         - origin[1]) / d_base[:, 1], np.inf)
    hits = np.minimum(np.minimum(t_ground, t_wall), rng_max)
    # obstacles in the street around the ego car, none overlapping it
    centres = np.stack([rng.choice([-1.0, 1.0], 40) * rng.uniform(7.0, 60.0, 40),
                        rng.uniform(-7.5, 7.5, 40)], axis=1)
    radii = rng.uniform(0.2, 2.2, 40)
    heights = rng.uniform(1.4, 4.0, 40)
    dxy = d_base[:, :2]
    a = np.einsum("ij,ij->i", dxy, dxy)
    for c, r, top in zip(centres, radii, heights, strict=True):
        oc = origin[:2] - c
        b = 2.0 * dxy @ oc
        cc = oc @ oc - r * r
        disc = b * b - 4 * a * cc
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (-b - np.sqrt(disc)) / (2 * a)
        z_hit = origin[2] + t * d_base[:, 2]
        ok = (disc > 0) & (t > 0) & (z_hit < top) & (z_hit > 0)
        hits = np.where(ok, np.minimum(hits, t), hits)
    hits += rng.normal(0.0, 0.02, hits.shape[0])  # range noise
    return (d * hits[:, None]).astype(np.float32), T_base_lidar


def make_image(seed: int = 1) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB with structure and noise."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    img = np.stack([(u * 255 // WIDTH), (v * 255 // HEIGHT), (u ^ v) & 255], axis=-1)
    noise = rng.integers(0, 32, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- reference


def reference(points: np.ndarray, T_cam_lidar: SE3, cam: CameraModel,
              image: np.ndarray) -> dict[str, Any]:
    """Straightforward projection with OpenCV, z-buffer by ``np.minimum.at``, painting by
    fancy indexing. Same pixel rule as mm_perception (nearest pixel centre)."""
    t0 = time.perf_counter()
    R, t = T_cam_lidar.rotation, T_cam_lidar.translation
    pts = points.astype(np.float64)
    pc = pts @ R.T + t
    front = np.flatnonzero(pc[:, 2] > MIN_DEPTH)
    rvec, _ = cv2.Rodrigues(R)
    t1 = time.perf_counter()
    uv, _ = cv2.projectPoints(pts[front], rvec, t, cam.K, np.asarray(cam.D))
    t2 = time.perf_counter()
    uv = uv.reshape(-1, 2)
    # lens validity (one-to-one region of the distortion, as CameraModel.project)
    k1, k2, p1, p2, k3 = cam.D
    x = pc[front, 0] / pc[front, 2]
    y = pc[front, 1] / pc[front, 2]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    d_radial = k1 + r2 * (2.0 * k2 + r2 * 3.0 * k3)
    ja = radial + 2.0 * x * x * d_radial + 2.0 * p1 * y + 6.0 * p2 * x
    jb = 2.0 * x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y
    jd = radial + 2.0 * y * y * d_radial + 6.0 * p1 * y + 2.0 * p2 * x
    ok = (np.hypot(x, y) < cam._fold_limit) & (ja * jd - jb * jb > 0.0)
    ok &= (uv[:, 0] >= -0.5) & (uv[:, 0] < cam.width - 0.5)
    ok &= (uv[:, 1] >= -0.5) & (uv[:, 1] < cam.height - 0.5)
    index = front[ok]
    uv = uv[ok]
    depth = pc[index, 2].astype(np.float32)
    col = np.floor(uv[:, 0] + 0.5).astype(np.int64)
    row = np.floor(uv[:, 1] + 0.5).astype(np.int64)
    t3 = time.perf_counter()
    zbuf = np.full(cam.height * cam.width, np.inf, dtype=np.float32)
    np.minimum.at(zbuf, row * cam.width + col, depth)
    zbuf[np.isinf(zbuf)] = np.nan
    t4 = time.perf_counter()
    feats = np.zeros((points.shape[0], 3), dtype=np.float32)
    feats[index] = image[row, col].astype(np.float32) / 255.0
    t5 = time.perf_counter()
    return {"index": index, "uv": uv, "depth": zbuf.reshape(cam.height, cam.width),
            "features": feats,
            "split_s": {"transform+cull": t1 - t0, "cv2.projectPoints": t2 - t1,
                        "validity": t3 - t2, "zbuffer": t4 - t3, "painting": t5 - t4}}


def fast(points: np.ndarray, T_cam_lidar: SE3, cam: CameraModel,
         image: np.ndarray) -> tuple[Projection, np.ndarray, Painted]:
    proj = project_points(points, T_cam_lidar, cam, MIN_DEPTH)
    return proj, depth_image(proj), paint_points(proj, image)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--points", type=int, default=120_000, help="LiDAR points")
    parser.add_argument("--repeat", type=int, default=100, help="runs per method (median)")
    parser.add_argument("--block", type=int, default=10,
                        help="consecutive runs of one method before switching to the other")
    parser.add_argument("--json", type=Path, default=None, help="write results to this file")
    args = parser.parse_args(argv)
    if args.points < 1 or args.repeat < 1 or args.block < 1:
        parser.error("--points, --repeat and --block must be >= 1")
    cv2.setNumThreads(1)

    cam, T_base_cam = make_camera()
    points, T_base_lidar = make_lidar_points(args.points)
    T_cam_lidar = T_base_cam.inverse() @ T_base_lidar
    image = make_image()

    def run_fast() -> tuple[Projection, np.ndarray, Painted]:
        return fast(points, T_cam_lidar, cam, image)

    def run_ref() -> dict[str, Any]:
        return reference(points, T_cam_lidar, cam, image)

    run_fast()  # warm-up (lens plan, caches)
    run_ref()
    # steady state: alternating blocks of runs of each method, as a node processing a stream
    # runs one method frame after frame; both share the run's machine state
    t_fast: list[float] = []
    t_ref: list[float] = []
    splits: dict[str, list[float]] = {}
    while len(t_fast) < args.repeat:
        for _ in range(min(args.block, args.repeat - len(t_fast))):
            secs, (proj, depth, painted) = timed(run_fast)
            t_fast.append(secs)
        for _ in range(min(args.block, args.repeat - len(t_ref))):
            secs, ref = timed(run_ref)
            t_ref.append(secs)
            for key, val in ref["split_s"].items():
                splits.setdefault(key, []).append(val)
    # cold caches: each fast run right after a reference run (which evicts the inputs)
    t_cold: list[float] = []
    for _ in range(args.repeat):
        run_ref()
        t_cold.append(timed(run_fast)[0])

    same_points = bool(np.array_equal(proj.index, ref["index"]))
    uv_err = float(np.abs(proj.uv_valid - ref["uv"]).max()) if same_points and proj.count \
        else math.inf
    same_depth = bool(np.array_equal(depth, ref["depth"], equal_nan=True))
    same_paint = bool(np.array_equal(painted.features, ref["features"]))
    ok = same_points and uv_err <= 1e-3 and same_depth and same_paint
    med_fast = float(np.median(t_fast))
    med_cold = float(np.median(t_cold))
    med_ref = float(np.median(t_ref))
    ratio = med_ref / med_fast if med_fast > 0 else math.inf
    ratio_cold = med_ref / med_cold if med_cold > 0 else math.inf

    print(f"LiDAR -> {cam.width}x{cam.height} plumb_bob camera: {args.points} points, "
          f"{proj.count} in view ({int(np.count_nonzero(~np.isnan(depth)))} depth pixels), "
          f"{args.repeat} runs each, blocks of {args.block}, one thread")
    print(f"{'method':<48}{'median [ms]':>12}{'min [ms]':>10}")
    rows = [("project_points + depth_image + paint_points", t_fast),
            ("  same, cold caches (right after a reference run)", t_cold),
            ("reference (cv2.projectPoints + minimum.at)", t_ref)]
    for name, vals in rows:
        print(f"{name:<48}{float(np.median(vals)) * 1e3:>12.3f}{min(vals) * 1e3:>10.3f}")
    for key, vals in splits.items():
        print(f"{'  reference: ' + key:<48}{float(np.median(vals)) * 1e3:>12.3f}")
    print(f"{'speed-up (cold caches)':<48}{ratio:>11.1f}x ({ratio_cold:.1f}x)")
    print(f"same valid points: {same_points}, max |uv - cv2| = {uv_err:.2e} px, "
          f"identical depth images: {same_depth}, identical painting: {same_paint}")
    if not ok:
        print("ERROR: the fast path and the OpenCV reference differ", file=sys.stderr)

    if args.json is not None:
        args.json.write_text(json.dumps({
            "benchmark": "projection_depth_painting",
            "points": args.points,
            "in_view": proj.count,
            "image": [cam.width, cam.height],
            "repeat": args.repeat,
            "block": args.block,
            "fast_median_s": med_fast,
            "fast_min_s": min(t_fast),
            "fast_cold_median_s": med_cold,
            "reference_median_s": med_ref,
            "reference_min_s": min(t_ref),
            "reference_split_median_s": {k: float(np.median(v)) for k, v in splits.items()},
            "speedup": ratio,
            "speedup_cold": ratio_cold,
            "same_points": same_points,
            "max_uv_error_px": uv_err,
            "identical_depth": same_depth,
            "identical_painting": same_paint,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "machine": platform.machine(),
        }, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
