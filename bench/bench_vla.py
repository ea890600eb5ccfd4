"""Benchmark: per-chunk latency of the VLA policy, torch vs ONNX Runtime on the CPU.

Loads a weights folder (``--weights``, default ``mm_perception/planning/vla/weights`` when it
exists) twice with :func:`~mm_perception.planning.vla.policy.load_vla`: ``vla.pt`` through
torch and ``vla.onnx`` through ONNX Runtime, both with ``--threads`` intra-op threads, and
one shared :class:`~mm_perception.planning.vla.text.TextEncoder` (torch MiniLM, the same for
both: the backends differ only in the policy network). Each chunk is one
:meth:`VLAPlanner.plan` call, timed as a whole (``total``) and in its parts, the same for
both backends:

- ``features``: :meth:`VLAProcessor.features` (numpy: image resize + normalisation, object
  and lane tokens, ego features);
- ``text``: the instruction's sentence embedding (cleaning + the encoder's cache; the
  MiniLM network only for a string not seen before);
- ``infer``: the backend's ``run`` (numpy in, numpy out);
- ``decode``: :meth:`VLAProcessor.decode` (ego-frame chunk -> world-frame trajectory).

The parts are timed by wrapping the planner's own components, so ``total`` is exactly what
a running planner node pays per chunk. The backends alternate frame by frame, so a load
change on the machine hits both alike; the first ``--warmup`` frames of every case are run
but not timed. Cases:

- ``cached instructions``: several instructions of the suite, cycled over the frames and
  embedded once before timing (as at run time: an episode has one or two instructions,
  each embedded once);
- ``uncached instruction``: every frame has an instruction never seen before (worst case:
  a new instruction arrives), so ``text`` includes a MiniLM forward pass.

Observations are synthetic but shaped like the real ones: a 480 x 640 RGB camera image
(random pixels: the cost of resizing and normalising does not depend on them), ``--objects``
objects of every class around the ego (some without colour), a lane of every role of
:data:`~mm_perception.planning.observation.LANE_ROLES`, the ego moving along a gentle curve
at about 8 m/s.

Reported per case: median and p90 of each part, ORT / torch ratios, and the goal (ONNX
Runtime <= 30 ms per chunk on the CPU, ``total`` median of the cached case) met or not. On
a CUDA machine it also compares TensorRT fp16 with torch on CUDA (same observations, same
timing split); otherwise it prints that this part was skipped.

    python bench/bench_vla.py [--weights DIR] [--threads 2] [--frames 30] [--warmup 3]
        [--objects 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from timing_table import print_case, stats

import mm_perception.planning.vla as vla_package
from mm_perception.core.geometry import SE3
from mm_perception.core.types import EgoState
from mm_perception.planning.instructions import Task, TaskKind, render_instruction
from mm_perception.planning.observation import (
    LANE_ROLES,
    LanePolyline,
    PlannerObservation,
    SceneObject,
)
from mm_perception.planning.vla.config import OBJECT_LABELS
from mm_perception.planning.vla.policy import (
    CONFIG_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    VLAPlanner,
    load_vla,
)
from mm_perception.planning.vla.text import TextEncoder

#: the committed weights folder, used when --weights is not given
DEFAULT_WEIGHTS_DIR = Path(vla_package.__file__).resolve().parent / "weights"
#: the goal: ONNX Runtime, whole chunk (VLAPlanner.plan), CPU, median, cached instructions
GOAL_MS = 30.0
PARTS = ("features", "text", "infer", "decode", "total")
#: camera image size of the observations, pixels (the simulator's front camera)
IMAGE_HW = (480, 640)
#: the instructions of the cached case: one training phrasing of several task kinds
TASKS = (Task(TaskKind.FOLLOW_SPEED, speed_mps=8.0),
         Task(TaskKind.STOP_BEHIND, target_colour="red", target_class="truck"),
         Task(TaskKind.TURN_LEFT), Task(TaskKind.YIELD_PEDESTRIANS),
         Task(TaskKind.CHANGE_LANE_RIGHT), Task(TaskKind.PULL_OVER))


# ---------------------------------------------------------------------------- observations
def _lanes() -> tuple[LanePolyline, ...]:
    """A lane of every role in ``base_link`` (the ego lane along x, neighbours 3.5 m to the
    sides, the junction movements from 30 m on), 40-60 points each as the map gives them."""
    s = np.linspace(-10.0, 80.0, 60)
    arc = np.linspace(0.0, math.pi / 2, 40)
    pts = {
        "ego": np.stack([s, 0.002 * s ** 2], axis=1),
        "left": np.stack([s, 3.5 + 0.002 * s ** 2], axis=1),
        "right": np.stack([s, -3.5 + 0.002 * s ** 2], axis=1),
        "shoulder": np.stack([s, -6.0 + 0.002 * s ** 2], axis=1),
        "turn_left": np.stack([30.0 + 12.0 * np.sin(arc), 12.0 * (1 - np.cos(arc))], axis=1),
        "straight": np.stack([np.linspace(30.0, 70.0, 40), np.zeros(40)], axis=1),
        "turn_right": np.stack([30.0 + 8.0 * np.sin(arc), -8.0 * (1 - np.cos(arc))], axis=1),
    }
    return tuple(LanePolyline(role, pts[role]) for role in LANE_ROLES)


def _objects(rng: np.random.Generator, count: int) -> tuple[SceneObject, ...]:
    """``count`` objects of every class within 60 m, moving, a quarter without colour."""
    out = []
    for i in range(count):
        label = OBJECT_LABELS[i % len(OBJECT_LABELS)]
        rgb = np.full(3, np.nan) if i % 4 == 3 else rng.random(3)
        out.append(SceneObject(
            object_id=i + 1, label=label,
            xy=np.array([rng.uniform(-20.0, 60.0), rng.uniform(-12.0, 12.0)]),
            yaw=float(rng.uniform(-math.pi, math.pi)),
            size=np.array([rng.uniform(0.5, 12.0), rng.uniform(0.5, 2.6), rng.uniform(1.0, 3.5)]),
            velocity=rng.normal(0.0, 4.0, 2), score=float(rng.uniform(0.3, 1.0)), rgb=rgb))
    return tuple(out)


def observations(count: int, objects: int, instructions: Sequence[str],
                 seed: int = 0) -> list[PlannerObservation]:
    """``count`` observations 0.4 s apart: the ego on a gentle left curve at ~8 m/s, a new
    camera image and new object positions every frame, ``instructions`` cycled."""
    rng = np.random.default_rng(seed)
    lanes = _lanes()
    out = []
    x, y, yaw = 0.0, 0.0, 0.0
    for k in range(count):
        stamp = 1_000_000_000 + k * 400_000_000
        v = 8.0 + 0.5 * math.sin(0.3 * k)
        ego = EgoState(stamp_ns=stamp, frame_id="map", child_frame_id="base_link",
                       pose=SE3.from_xy_yaw(x, y, yaw), linear_velocity=np.array([v, 0.1, 0.0]),
                       angular_velocity=np.array([0.0, 0.0, 0.05]))
        image = rng.integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)
        out.append(PlannerObservation(
            stamp_ns=stamp, ego=ego, instruction=instructions[k % len(instructions)],
            instruction_stamp_ns=1_000_000_000, image=image,
            objects=_objects(rng, objects), lanes=lanes))
        x += v * 0.4 * math.cos(yaw)
        y += v * 0.4 * math.sin(yaw)
        yaw += 0.02
    return out


# ---------------------------------------------------------------------------- timing
class PartTimer:
    """Wraps the components of a :class:`VLAPlanner` so that every :meth:`VLAPlanner.plan`
    call records the time of each part (ms) in :attr:`last`."""

    def __init__(self, planner: VLAPlanner) -> None:
        self.planner = planner
        self.last: dict[str, float] = {}
        proc, text, backend = planner.processor, planner.text_encoder, planner.backend
        # instance attributes shadow the methods: plan() calls the wrappers
        proc.features = self._timed("features", proc.features)  # type: ignore[method-assign]
        proc.decode = self._timed("decode", proc.decode)  # type: ignore[method-assign]
        backend.run = self._timed("infer", backend.run)  # type: ignore[method-assign]
        self._text_encode = text.encode

    def _timed(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.last[part] = self.last.get(part, 0.0) + (time.perf_counter() - t0) * 1e3
        return wrapper

    def plan(self, obs: PlannerObservation) -> dict[str, float]:
        """Run ``planner.plan(obs)``; returns part -> ms (``total`` = the whole call)."""
        self.last = {}
        encoder = self.planner.text_encoder
        # the encoder may be shared by several planners: wrap it only for this call
        encoder.encode = self._timed("text", self._text_encode)  # type: ignore[method-assign]
        try:
            t0 = time.perf_counter()
            self.planner.plan(obs)
            self.last["total"] = (time.perf_counter() - t0) * 1e3
        finally:
            delattr(encoder, "encode")
        return dict(self.last)


def run_case(timers: dict[str, PartTimer], frames: Sequence[PlannerObservation], count: int,
             warmup: int, unique_instructions: bool = False) -> dict[str, Any]:
    """Time every planner on ``count`` frames (after ``warmup`` untimed ones), alternating
    planners frame by frame. With ``unique_instructions`` every call gets an instruction
    never seen before. Returns planner -> part -> {median, p90} (ms)."""
    times: dict[str, dict[str, list[float]]] = {b: {p: [] for p in PARTS} for b in timers}
    for k in range(warmup + count):
        base = frames[k % len(frames)]
        for name, timer in timers.items():
            obs = base
            if unique_instructions:
                # a new string per call and planner (the encoder is shared: no cache hit)
                obs = replace(base, instruction=f"{base.instruction}, message {k} to {name}")
            parts = timer.plan(obs)
            if k < warmup:
                continue
            for part in PARTS:
                times[name][part].append(parts.get(part, 0.0))
    return {name: {p: stats(times[name][p]) for p in PARTS} for name in timers}


def _cases(timers: dict[str, PartTimer], frames: Sequence[PlannerObservation],
           args: argparse.Namespace, ref: str, other: str, ratio_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for case, unique in (("cached instructions", False), ("uncached instruction", True)):
        res = run_case(timers, frames, args.frames, args.warmup, unique_instructions=unique)
        res[ratio_key] = print_case(case, res, ref, other, PARTS)
        out[case] = res
    return out


def bench_cpu(weights: Path, frames: Sequence[PlannerObservation], encoder: TextEncoder,
              args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from mm_perception.runtime import RuntimeConfig

    torch.set_num_threads(args.threads)
    planners = {
        "torch": load_vla(weights, RuntimeConfig(backend="torch", intra_op_threads=args.threads),
                          text_encoder=encoder),
        "onnxruntime": load_vla(weights, RuntimeConfig(backend="onnxruntime",
                                                       intra_op_threads=args.threads),
                                text_encoder=encoder)}
    timers = {name: PartTimer(p) for name, p in planners.items()}
    print(f"CPU, {args.threads} thread(s), {args.frames} timed chunks per case "
          f"(after {args.warmup} warm-up):")
    out = _cases(timers, frames, args, "torch", "onnxruntime", "ratio_ort_over_torch")
    for planner in planners.values():
        planner.close()
    ort_ms = out["cached instructions"]["onnxruntime"]["total"]["median"]
    met = ort_ms <= GOAL_MS
    print(f"  goal: ONNX Runtime <= {GOAL_MS:.0f} ms per chunk on the CPU (cached "
          f"instructions, median): {ort_ms:.1f} ms -> {'MET' if met else 'NOT MET'}")
    out["goal"] = {"ort_total_median_ms": ort_ms, "goal_ms": GOAL_MS, "met": met}
    return out


def bench_cuda(weights: Path, frames: Sequence[PlannerObservation], encoder: TextEncoder,
               args: argparse.Namespace) -> dict[str, Any] | None:
    """TensorRT fp16 vs torch CUDA; None (with a printed line) where it cannot run."""
    import torch

    from mm_perception.core.errors import BackendUnavailableError
    from mm_perception.runtime import RuntimeConfig

    if not torch.cuda.is_available():
        print("CUDA: skipped (no CUDA device on this machine)")
        return None
    try:
        # one chunk per call; the exported graph's batch is dynamic and needs a profile
        trt = load_vla(weights, RuntimeConfig(
            backend="tensorrt", device="cuda", precision="fp16",
            profile={"batch": (1, 1, 8)}, engine_cache_dir=args.engine_cache),
            text_encoder=encoder)
    except (BackendUnavailableError, ImportError) as exc:
        print(f"CUDA: TensorRT skipped ({exc})")
        return None
    planners = {"torch-cuda": load_vla(weights, RuntimeConfig(backend="torch", device="cuda"),
                                       text_encoder=encoder),
                "tensorrt-fp16": trt}
    timers = {name: PartTimer(p) for name, p in planners.items()}
    print(f"CUDA ({torch.cuda.get_device_name()}):")
    out = _cases(timers, frames, args, "torch-cuda", "tensorrt-fp16", "ratio_trt_over_torch")
    for planner in planners.values():
        planner.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--weights", type=Path, default=None,
                        help=f"weights folder ({WEIGHTS_FILE}, {ONNX_FILE}, {CONFIG_FILE}); "
                             f"default {DEFAULT_WEIGHTS_DIR} if it exists")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (both)")
    parser.add_argument("--frames", type=int, default=30, help="timed chunks per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed chunks per case")
    parser.add_argument("--objects", type=int, default=16, help="objects per observation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the observations")
    parser.add_argument("--engine-cache", default="~/.cache/mm_perception/engines",
                        help="TensorRT engine cache folder (CUDA part)")
    parser.add_argument("--json", type=Path, default=None, help="write results to this file")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.frames < 1 or args.warmup < 0 or args.objects < 0:
        parser.error("--threads and --frames must be >= 1, --warmup and --objects >= 0")
    weights: Path | None = args.weights
    if weights is None:
        if not DEFAULT_WEIGHTS_DIR.is_dir():
            print(f"no committed VLA weights at {DEFAULT_WEIGHTS_DIR}: pass --weights DIR (a "
                  f"folder written by training: {WEIGHTS_FILE}, {ONNX_FILE}, {CONFIG_FILE})",
                  file=sys.stderr)
            return 2
        weights = DEFAULT_WEIGHTS_DIR
    missing = [n for n in (WEIGHTS_FILE, ONNX_FILE, CONFIG_FILE)
               if not (weights / n).is_file()]
    if missing:
        print(f"{weights}: missing {missing} (training writes all three; export "
              f"{ONNX_FILE} with mm_perception.planning.vla.export.export_onnx)",
              file=sys.stderr)
        return 2
    instructions = [render_instruction(task, 0) for task in TASKS]
    t0 = time.perf_counter()
    frames = observations(args.frames + args.warmup, args.objects, instructions, args.seed)
    print(f"{len(frames)} observations ({IMAGE_HW[0]}x{IMAGE_HW[1]} image, {args.objects} "
          f"objects, {len(LANE_ROLES)} lanes, {len(instructions)} instructions) in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"weights: {weights}")
    import torch

    torch.set_num_threads(args.threads)
    encoder = TextEncoder()
    t0 = time.perf_counter()
    encoder.encode_many(instructions)  # embedded once, as a running planner does
    print(f"text encoder: {len(instructions)} instructions embedded in "
          f"{time.perf_counter() - t0:.1f} s (model load included)")
    results: dict[str, Any] = {
        "weights": str(weights), "threads": args.threads, "frames": args.frames,
        "warmup": args.warmup, "objects": args.objects, "image_hw": list(IMAGE_HW),
        "instructions": instructions,
        "machine": platform.processor() or platform.machine(),
        "cpu": bench_cpu(weights, frames, encoder, args)}
    results["cuda"] = bench_cuda(weights, frames, encoder, args)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
