"""Benchmark: per-frame latency of the BEV fusion detector, torch vs ONNX Runtime on the CPU.

Loads a weights folder (``--weights``, default the committed
``mm_perception/fusion/feature_level/weights/concat``) twice: the state dict through torch
and ``bev_fusion.onnx`` through ONNX Runtime, both with ``--threads`` intra-op threads. Each
frame is timed in three parts, the same for both backends:

- ``encode``: :meth:`BevProcessor.encode` (numpy: pillars, image normalisation, lift
  geometry; the lift is cached per camera, as in a running node);
- ``infer``: the backend's ``run`` (numpy in, numpy out);
- ``decode``: :meth:`BevProcessor.decode` (peaks, top-k, NMS).

The backends alternate frame by frame, so a load change on the machine hits both alike.
The first ``--warmup`` frames of every case are run but not timed. Reported per case: the
median and p90 of each part and of the total, ORT / torch ratios, and the goal (ONNX
Runtime <= 40 ms per frame on the CPU, total of the three parts) met or not. Cases: all
modalities, and each modality left out (no LiDAR: 0 LiDAR pillars; no radar: 0 radar
pillars; no camera: 0 cameras).

Frames: by default a simulated scene, ``simulate_shard("urban", 599, dataset_rig(),
duration_s=--duration)``: seed 599 is the last validation seed (the model never trained on
it; seeds >= 900 are held out and refused by the dataset), the frames are exactly what the
detector sees at run time (the dataset's frames come from ``frame_inputs`` on synchronised
sets). With ``--bag`` the frames are ``frame_inputs`` of the bag's synchronised sets
(:class:`OfflineReplay` with the rig ``--rig``). Frames are reused cyclically when the scene
has fewer than ``--frames``.

On a CUDA machine it also compares TensorRT fp16 with torch on CUDA (same frames, same
timing split); otherwise it prints that this part was skipped.

    MUJOCO_GL=osmesa python bench/bench_bev.py [--weights DIR] [--threads 2] [--frames 30]
        [--bag BAG --rig config/rigs/car.yaml] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from timing_table import print_case, stats

from mm_perception.fusion.feature_level.config import DEFAULT_RIG
from mm_perception.fusion.feature_level.detector import (
    DEFAULT_WEIGHTS_DIR,
    ONNX_FILE,
    load_weights,
)
from mm_perception.fusion.feature_level.processor import BevProcessor, RawFrame
from mm_perception.runtime.protocol import InferenceBackend

#: the goal: ONNX Runtime, whole frame (encode + infer + decode), CPU, median
GOAL_MS = 40.0
#: cases: name -> modalities left out
CASES: dict[str, tuple[str, ...]] = {"all modalities": (), "no lidar": ("lidar",),
                                     "no radar": ("radar",), "no camera": ("camera",)}
PARTS = ("encode", "infer", "decode", "total")
#: the extra column of the tables: mean decoded objects per frame
OBJECTS = ("objects", lambda r: float(r["objects"]["mean"]))


def simulated_frames(duration_s: float) -> list[RawFrame]:
    """The frames of a short simulated urban scene (validation seed 599)."""
    from mm_perception.fusion.feature_level.dataset import dataset_rig, simulate_shard

    shard = simulate_shard("urban", 599, dataset_rig(), duration_s=duration_s)
    return [shard.frame(i) for i in range(len(shard))]


def bag_frames(bag: Path, rig_path: Path, limit: int) -> list[RawFrame]:
    """``frame_inputs`` of the first ``limit`` synchronised sets of a bag."""
    from mm_perception.bag.offline import OfflineConfig, OfflineReplay
    from mm_perception.bag.reader import BagSource
    from mm_perception.core.calibration import Rig
    from mm_perception.fusion.feature_level.processor import frame_inputs

    replay = OfflineReplay(Rig.from_yaml(rig_path), OfflineConfig(max_sets=limit))
    frames = []
    with BagSource(bag) as src:
        for sset in replay.run(src):
            raw = frame_inputs(sset, replay.rig, replay.odometry)
            if raw.notes:
                print(f"  set {sset.stamp_ns}: {'; '.join(raw.notes)}")
            frames.append(raw)
    return frames


def run_case(backends: dict[str, tuple[InferenceBackend, BevProcessor]],
             frames: Sequence[RawFrame], count: int, warmup: int,
             ) -> dict[str, Any]:
    """Time every backend on ``count`` frames (after ``warmup`` untimed ones), alternating
    backends frame by frame. Returns backend -> part -> {median, p90} (ms) plus the mean
    number of decoded objects per frame (``objects``)."""
    times: dict[str, dict[str, list[float]]] = {b: {p: [] for p in PARTS} for b in backends}
    objects: dict[str, list[int]] = {b: [] for b in backends}
    for k in range(warmup + count):
        raw = frames[k % len(frames)]
        for name, (backend, proc) in backends.items():
            names = [s.name for s in backend.inputs]
            t0 = time.perf_counter()
            enc = proc.encode(raw)
            t1 = time.perf_counter()
            out = backend.run({n: enc[n] for n in names})
            t2 = time.perf_counter()
            objs = proc.decode(out, 0)
            t3 = time.perf_counter()
            if k < warmup:
                continue
            for part, dt in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                times[name][part].append(dt * 1e3)
            objects[name].append(len(objs))
    result: dict[str, Any] = {}
    for name in backends:
        result[name] = {p: stats(times[name][p]) for p in PARTS}
        result[name]["objects"] = {"mean": float(np.mean(objects[name]))}
    return result


def cases(frames: Sequence[RawFrame]) -> dict[str, list[RawFrame]]:
    return {case: [f.without(*drop) for f in frames] for case, drop in CASES.items()}


def bench_cpu(weights: Path, frames: Sequence[RawFrame], args: argparse.Namespace,
              ) -> dict[str, Any]:
    import torch

    from mm_perception.fusion.feature_level.export import onnx_backend, torch_backend
    from mm_perception.runtime import RuntimeConfig

    torch.set_num_threads(args.threads)
    net, proc = load_weights(weights)
    ort_proc = BevProcessor(proc.config, proc.state, proc.image_size)  # its own lift cache
    backends = {
        "torch": (torch_backend(net, RuntimeConfig(backend="torch",
                                                   intra_op_threads=args.threads),
                                proc.image_size), proc),
        "onnxruntime": (onnx_backend(proc.config, weights / ONNX_FILE,
                                     RuntimeConfig(intra_op_threads=args.threads),
                                     proc.image_size), ort_proc)}
    out: dict[str, Any] = {}
    print(f"CPU, {args.threads} thread(s), {args.frames} timed frames per case "
          f"(after {args.warmup} warm-up):")
    for case, case_frames in cases(frames).items():
        res = run_case(backends, case_frames, args.frames, args.warmup)
        res["ratio_ort_over_torch"] = print_case(case, res, "torch", "onnxruntime", PARTS,
                                                 OBJECTS)
        out[case] = res
    for backend, _ in backends.values():
        backend.close()
    ort_ms = out["all modalities"]["onnxruntime"]["total"]["median"]
    met = ort_ms <= GOAL_MS
    print(f"  goal: ONNX Runtime <= {GOAL_MS:.0f} ms per frame on the CPU (all modalities, "
          f"median): {ort_ms:.1f} ms -> {'MET' if met else 'NOT MET'}")
    out["goal"] = {"ort_total_median_ms": ort_ms, "goal_ms": GOAL_MS, "met": met}
    return out


def bench_cuda(weights: Path, frames: Sequence[RawFrame], args: argparse.Namespace,
               ) -> dict[str, Any] | None:
    """TensorRT fp16 vs torch CUDA; None (with a printed line) where it cannot run."""
    import torch

    from mm_perception.core.errors import BackendUnavailableError
    from mm_perception.fusion.feature_level.export import MAX_CAMERAS, onnx_backend, torch_backend
    from mm_perception.runtime import RuntimeConfig

    if not torch.cuda.is_available():
        print("CUDA: skipped (no CUDA device on this machine)")
        return None
    net, proc = load_weights(weights)
    g = proc.config.grid
    cells = g.nx * g.ny
    # every dynamic dim needs a TensorRT profile; pillars are at most one per cell
    profile = {"lidar_pillars": (0, min(cells, 8000), cells),
               "radar_pillars": (0, min(cells, 128), cells), "cameras": (0, 1, MAX_CAMERAS)}
    try:
        trt = onnx_backend(proc.config, weights / ONNX_FILE, RuntimeConfig(
            backend="tensorrt", device="cuda", precision="fp16", profile=profile,
            engine_cache_dir=args.engine_cache), proc.image_size)
    except (BackendUnavailableError, ImportError) as exc:
        print(f"CUDA: TensorRT skipped ({exc})")
        return None
    backends: dict[str, tuple[InferenceBackend, BevProcessor]] = {
        "torch-cuda": (torch_backend(net, RuntimeConfig(backend="torch", device="cuda"),
                                     proc.image_size), proc),
        "tensorrt-fp16": (trt, BevProcessor(proc.config, proc.state, proc.image_size))}
    out: dict[str, Any] = {}
    print(f"CUDA ({torch.cuda.get_device_name()}):")
    for case, case_frames in cases(frames).items():
        res = run_case(backends, case_frames, args.frames, args.warmup)
        res["ratio_trt_over_torch"] = print_case(case, res, "torch-cuda", "tensorrt-fp16",
                                                 PARTS, OBJECTS)
        out[case] = res
    for backend, _ in backends.values():
        backend.close()
    return out


def timed(what: str, fn: Callable[[], list[RawFrame]]) -> list[RawFrame]:
    t0 = time.perf_counter()
    frames = fn()
    print(f"{what}: {len(frames)} frames in {time.perf_counter() - t0:.1f} s")
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR,
                        help="weights folder (bev_fusion.pt, bev_fusion.onnx, config.json, "
                             "processor.json)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (both)")
    parser.add_argument("--frames", type=int, default=30, help="timed frames per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames per case")
    parser.add_argument("--duration", type=float, default=3.0,
                        help="simulated seconds (without --bag)")
    parser.add_argument("--bag", type=Path, default=None, help="take the frames from a bag")
    parser.add_argument("--rig", type=Path, default=DEFAULT_RIG, help="rig of --bag")
    parser.add_argument("--engine-cache", default="~/.cache/mm_perception/engines",
                        help="TensorRT engine cache folder (CUDA part)")
    parser.add_argument("--json", type=Path, default=None, help="write results to this file")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.frames < 1 or args.warmup < 0:
        parser.error("--threads and --frames must be >= 1, --warmup >= 0")
    missing = [n for n in ("bev_fusion.pt", ONNX_FILE, "config.json", "processor.json")
               if not (args.weights / n).is_file()]
    if missing:
        print(f"{args.weights}: missing {missing} (train the model first: "
              f"mm-perception train bev ...)", file=sys.stderr)
        return 2
    if args.bag is not None:
        frames = timed(f"bag {args.bag}", lambda: bag_frames(
            args.bag, args.rig, args.frames + args.warmup))
    else:
        frames = timed(f"simulated urban seed 599, {args.duration:g} s",
                       lambda: simulated_frames(args.duration))
    if not frames:
        print("no frames", file=sys.stderr)
        return 2
    print(f"weights: {args.weights}")
    results: dict[str, Any] = {
        "weights": str(args.weights), "threads": args.threads, "frames": args.frames,
        "warmup": args.warmup, "source": str(args.bag) if args.bag else "sim urban 599",
        "machine": platform.processor() or platform.machine(),
        "cpu": bench_cpu(args.weights, frames, args)}
    results["cuda"] = bench_cuda(args.weights, frames, args)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
