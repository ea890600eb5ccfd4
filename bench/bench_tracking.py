"""Benchmark: association + EKF tracking of ~100 objects seen by three sensors per frame.

A synthetic scene of ``--objects`` movers (cars on CTRV arcs, pedestrians walking straight)
in a 200 m x 200 m area, observed at 10 Hz by three detectors with different noise:

- LiDAR: pose ``(x, y, z, yaw)`` with 0.2 m / 0.1 rad noise, heading modulo pi, true label;
- radar: position 0.5 m, Doppler velocity 0.2 m/s, no heading (yaw variance 10 rad^2),
  label UNKNOWN;
- camera: position 1.0 m (depth), class probabilities;

each with detection probability 0.95, ``--clutter`` false alarms per sensor and frame, in a
shuffled order. All detection objects are built before timing. One timed frame is
``MultiObjectTracker.update_multi([lidar, radar, camera], stamp)``: one batched prediction,
then for each sensor gated Mahalanobis association (scipy ``linear_sum_assignment``) and a
batched Joseph-form EKF update, births, life cycle and the output ``Track`` objects.
``--fused`` instead feeds one list per frame, as the output-level fusion hands it over
(LiDAR-quality pose, radar velocity, camera class): the tracker's share of the
"association + merge + tracking" budget in that pipeline.
The sequence is replayed ``--repeat`` times on a fresh tracker (identical work per frame);
it prints the median and p95 over ``--frames`` frames (after ``--warmup`` frames that bring
the tracks to steady state) of each frame's best time over the repeats, and of all samples,
plus a sanity check of the tracking itself (confirmed tracks vs objects, id changes), and
optionally writes JSON.

    python bench/bench_tracking.py --objects 100 --frames 200 --json out.json
    python bench/bench_tracking.py --fused
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mm_perception.core.types import Box3D, DetectedObject, ObjectClass, TrackStatus
from mm_perception.tracking.tracker import MultiObjectTracker, TrackerConfig

F64 = npt.NDArray[np.float64]
DT_NS = 100_000_000
SIZES = {ObjectClass.CAR: (4.5, 1.9, 1.6), ObjectClass.PEDESTRIAN: (0.6, 0.6, 1.7)}


def simulate(n_objects: int, n_frames: int, seed: int) -> tuple[F64, list[ObjectClass]]:
    """``(n_frames, n_objects, 5)`` true ``x, y, yaw, vx, vy`` and each object's class."""
    rng = np.random.default_rng(seed)
    is_car = rng.random(n_objects) < 0.75
    labels = [ObjectClass.CAR if c else ObjectClass.PEDESTRIAN for c in is_car]
    pos = rng.uniform(-100, 100, (n_objects, 2))
    yaw = rng.uniform(-np.pi, np.pi, n_objects)
    speed = np.where(is_car, rng.uniform(3, 15, n_objects), rng.uniform(0.5, 2, n_objects))
    yaw_rate = np.where(is_car, rng.uniform(-0.2, 0.2, n_objects), 0.0)
    dt = DT_NS * 1e-9
    out = np.zeros((n_frames, n_objects, 5))
    for k in range(n_frames):
        out[k] = np.column_stack([pos, yaw, speed * np.cos(yaw), speed * np.sin(yaw)])
        pos = pos + dt * np.column_stack([speed * np.cos(yaw), speed * np.sin(yaw)])
        yaw = yaw + yaw_rate * dt
    return out, labels


def _det(x: float, y: float, yaw: float, size: tuple[float, float, float],
         label: ObjectClass, cov: F64, stamp: int, source: str,
         velocity: F64 | None = None, probs: dict[str, float] | None = None) -> DetectedObject:
    return DetectedObject(Box3D(np.array([x, y, size[2] / 2]), np.array(size), yaw), label,
                          0.9, stamp_ns=stamp, class_probs=probs or {}, velocity=velocity,
                          covariance=cov, sources=(source,))


def make_frames(truth: F64, labels: list[ObjectClass], clutter: int, seed: int
                ) -> list[list[list[DetectedObject]]]:
    """Per frame, the three sensors' detection lists (built up front, not timed)."""
    rng = np.random.default_rng(seed + 1)
    lidar_cov = np.diag([0.2**2, 0.2**2, 0.1**2, 0.1**2, 1.0, 1.0])
    radar_cov = np.diag([0.5**2, 0.5**2, 1.0, 10.0, 0.2**2, 0.2**2])
    camera_cov = np.diag([1.0, 1.0, 0.3**2, 0.3**2, 1.0, 1.0])
    frames = []
    for k in range(truth.shape[0]):
        stamp = (k + 1) * DT_NS
        lists: list[list[DetectedObject]] = [[], [], []]
        for i, lab in enumerate(labels):
            x, y, yaw, vx, vy = truth[k, i]
            size = SIZES[lab]
            if rng.random() < 0.95:
                nx, ny = rng.normal(0, 0.2, 2)
                flip = np.pi if rng.random() < 0.5 else 0.0  # L-shape heading ambiguity
                lists[0].append(_det(x + nx, y + ny, yaw + flip + rng.normal(0, 0.1), size,
                                     lab, lidar_cov, stamp, "lidar"))
            if rng.random() < 0.95:
                nx, ny = rng.normal(0, 0.5, 2)
                vel = np.array([vx, vy, 0.0]) + np.append(rng.normal(0, 0.2, 2), 0.0)
                lists[1].append(_det(x + nx, y + ny, 0.0, size, ObjectClass.UNKNOWN,
                                     radar_cov, stamp, "radar", velocity=vel))
            if rng.random() < 0.95:
                nx, ny = rng.normal(0, 1.0, 2)
                probs = {lab.value: 0.8, ObjectClass.CYCLIST.value: 0.2}
                lists[2].append(_det(x + nx, y + ny, yaw + rng.normal(0, 0.3), size, lab,
                                     camera_cov, stamp, "camera", probs=probs))
        for sensor, cov in enumerate((lidar_cov, radar_cov, camera_cov)):
            for _ in range(clutter):
                cx, cy = rng.uniform(-120, 120, 2)
                lists[sensor].append(_det(cx, cy, 0.0, (1.0, 1.0, 1.0), ObjectClass.UNKNOWN,
                                          cov, stamp, "clutter"))
            rng.shuffle(lists[sensor])
        frames.append(lists)
    return frames


def make_fused_frames(truth: F64, labels: list[ObjectClass], clutter: int, seed: int
                      ) -> list[list[list[DetectedObject]]]:
    """Per frame one list, as output-level fusion would hand it over: per object seen by
    any sensor, the LiDAR-quality pose, the radar velocity and the camera class."""
    rng = np.random.default_rng(seed + 2)
    cov = np.diag([0.2**2, 0.2**2, 0.1**2, 0.1**2, 0.2**2, 0.2**2])
    frames = []
    for k in range(truth.shape[0]):
        stamp = (k + 1) * DT_NS
        fused: list[DetectedObject] = []
        for i, lab in enumerate(labels):
            if rng.random() < 0.05**3:  # missed by all three sensors
                continue
            x, y, yaw, vx, vy = truth[k, i]
            nx, ny = rng.normal(0, 0.2, 2)
            vel = np.array([vx, vy, 0.0]) + np.append(rng.normal(0, 0.2, 2), 0.0)
            fused.append(_det(x + nx, y + ny, yaw + rng.normal(0, 0.1), SIZES[lab], lab, cov,
                              stamp, "fused", velocity=vel,
                              probs={lab.value: 0.8, ObjectClass.CYCLIST.value: 0.2}))
        for _ in range(clutter):
            cx, cy = rng.uniform(-120, 120, 2)
            fused.append(_det(cx, cy, 0.0, (1.0, 1.0, 1.0), ObjectClass.UNKNOWN, cov, stamp,
                              "clutter"))
        rng.shuffle(fused)
        frames.append([fused])
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--objects", type=int, default=100, help="true objects in the scene")
    parser.add_argument("--frames", type=int, default=200, help="timed frames")
    parser.add_argument("--warmup", type=int, default=20, help="untimed frames first")
    parser.add_argument("--clutter", type=int, default=3, help="false alarms/list/frame")
    parser.add_argument("--repeat", type=int, default=3,
                        help="replays of the whole sequence (per-frame best is reported)")
    parser.add_argument("--fused", action="store_true",
                        help="one fused list per frame instead of three sensor lists")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write results to this file")
    args = parser.parse_args(argv)
    if min(args.objects, args.frames, args.repeat) < 1 or min(args.warmup, args.clutter) < 0:
        parser.error("--objects, --frames, --repeat >= 1; --warmup, --clutter >= 0")

    n_total = args.warmup + args.frames
    truth, labels = simulate(args.objects, n_total, args.seed)
    frames = (make_fused_frames if args.fused else make_frames)(truth, labels, args.clutter,
                                                                 args.seed)
    n_lists = len(frames[0])
    times = np.zeros((args.repeat, args.frames))
    owner: dict[int, int] = {}  # object -> track id last seen on it
    id_changes = 0
    confirmed_counts = []
    stats: dict[str, int] = {}
    for rep in range(args.repeat):
        # every repeat replays the same frames on a fresh tracker: identical work per frame
        tracker = MultiObjectTracker(TrackerConfig())
        for k, lists in enumerate(frames):
            start = time.perf_counter()
            tracks = tracker.update_multi(lists, (k + 1) * DT_NS)
            elapsed = time.perf_counter() - start
            if k < args.warmup:
                continue
            times[rep, k - args.warmup] = elapsed
            if rep:
                continue
            live = [t for t in tracks
                    if t.status in (TrackStatus.CONFIRMED, TrackStatus.COASTING)]
            confirmed_counts.append(len(live))
            if live:
                centres = np.array([t.object.box.center[:2] for t in live])
                d = np.linalg.norm(truth[k, :, None, :2] - centres[None], axis=2)
                nearest = d.argmin(axis=1)
                for obj in np.flatnonzero(d.min(axis=1) < 2.0):
                    tid = live[nearest[obj]].track_id
                    if owner.get(int(obj), tid) != tid:
                        id_changes += 1
                    owner[int(obj)] = tid
        stats = dict(tracker.stats)
    best = times.min(axis=0)  # per frame, best of the repeats (filters scheduler noise)
    med, p95 = np.median(best) * 1e3, np.percentile(best, 95) * 1e3
    med_all, p95_all = np.median(times) * 1e3, np.percentile(times, 95) * 1e3
    n_det = sum(len(s) for f in frames for s in f) / len(frames)
    what = "1 fused list" if args.fused else "3 sensor lists (sequential updates)"
    print(f"tracking {args.objects} objects, {what} (~{n_det:.0f} detections/frame incl. "
          f"{n_lists * args.clutter} false alarms), {args.frames} frames after "
          f"{args.warmup} warm-up, {args.repeat} repeat(s)")
    print(f"per frame, best of {args.repeat}: median {med:.3f} ms, p95 {p95:.3f} ms, "
          f"max {best.max() * 1e3:.3f} ms")
    print(f"per frame, all runs:   median {med_all:.3f} ms, p95 {p95_all:.3f} ms")
    print(f"confirmed/coasting tracks per frame: median {np.median(confirmed_counts):.0f} "
          f"(objects {args.objects}); id changes on true objects: {id_changes}")
    print(f"stats: {stats}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "benchmark": "tracking_update_multi",
            "objects": args.objects,
            "lists_per_frame": n_lists,
            "frames": args.frames,
            "clutter_per_list": args.clutter,
            "repeat": args.repeat,
            "median_ms": med,
            "p95_ms": p95,
            "median_all_runs_ms": med_all,
            "p95_all_runs_ms": p95_all,
            "confirmed_median": float(np.median(confirmed_counts)),
            "id_changes": id_changes,
            "stats": stats,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
