"""``mm-perception drive``: run an instruction suite in closed loop and compare planners.

For every (planner, task kind, seed) the episode of :func:`~mm_perception.planning.suite.
build_episode` runs through :func:`~mm_perception.planning.closed_loop.run_episode` with the
stack's own perception. The output folder gets:

- ``results.json``: every episode's result and a per-planner summary (success rate,
  collisions, off-road events, safety interventions, comfort), plus the comparisons the
  acceptance asks for (VLA success relative to the expert's, the success lost without
  language);
- ``report.md``: the same as tables, with a frame strip per episode under ``strips/``
  (camera frames over time and the driven path from above).

Planners: ``expert`` (privileged rule-based, the upper bound), ``rules`` (lane keeping +
collision avoidance, no language), ``vla`` (the learned policy), ``vla-no-language`` (the
same policy given one constant instruction), ``vlm`` (a local Hugging Face vision-language
model through the meta-action adapter; needs ``--vlm-model``).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from mm_perception.core.errors import ConfigError

LOG = logging.getLogger(__name__)

PLANNERS = ("expert", "rules", "vla", "vla-no-language", "vlm")
#: the rig the suite is made for (a car with a front camera, a LiDAR and a radar)
DEFAULT_RIG = Path(__file__).resolve().parents[2] / "config" / "rigs" / "car.yaml"
#: the shipped VLA weights
DEFAULT_VLA_WEIGHTS = Path(__file__).resolve().parent / "vla" / "weights"


def parse_seeds(items: Sequence[str]) -> list[int]:
    """Seeds from ``"3"``, ``"0-9"`` (inclusive) or ``"1,4,7"`` items, in order, unique.

    Raises:
        ConfigError: a malformed item or a negative seed.
    """
    seeds: list[int] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part[1:]:
                    lo, hi = part.split("-", 1)
                    values = list(range(int(lo), int(hi) + 1))
                    if not values:
                        raise ValueError
                else:
                    values = [int(part)]
            except ValueError:
                raise ConfigError(f"--seeds: {part!r} is not a seed, a range A-B (A <= B) or "
                                  f"a comma list") from None
            if any(v < 0 for v in values):
                raise ConfigError(f"--seeds: seeds must be >= 0, got {part!r}")
            seeds.extend(v for v in values if v not in seeds)
    if not seeds:
        raise ConfigError("--seeds: no seed given")
    return seeds


@dataclass(frozen=True)
class DriveJob:
    """One episode to run (picklable: jobs go to worker processes)."""

    planner: str
    kind: str
    seed: int
    split: str
    rig: str
    vla_weights: str | None
    vla_backend: str
    vlm_model: str | None
    frames_every_s: float
    strip_dir: str | None
    threads: int = 1


def make_planner(name: str, episode: Any, vla_weights: str | None, vla_backend: str,
                 vlm_model: str | None, cache: dict[str, Any]) -> Any:
    """A planner by name for ``episode`` (models are loaded once per process, in
    ``cache``)."""
    if name == "expert":
        from mm_perception.planning.expert import ExpertPlanner

        return ExpertPlanner(episode)
    if name == "rules":
        from mm_perception.planning.rules import RulesPlanner

        if "rules" not in cache:
            cache["rules"] = RulesPlanner()
        return cache["rules"]
    if name in ("vla", "vla-no-language"):
        from mm_perception.planning.vla.policy import load_vla
        from mm_perception.runtime.config import RuntimeConfig

        key = f"{name}:{vla_weights}:{vla_backend}"
        if key not in cache:
            folder = vla_weights if vla_weights is not None else str(DEFAULT_VLA_WEIGHTS)
            # one thread: episodes run in parallel worker processes
            cache[key] = load_vla(folder, RuntimeConfig(backend=cast(Any, vla_backend),
                                                        intra_op_threads=1),
                                  language=name == "vla", name=name)
        return cache[key]
    if name == "vlm":
        if vlm_model is None:
            raise ConfigError("--planner vlm needs --vlm-model DIR (a local Hugging Face "
                              "image-text-to-text model)")
        from mm_perception.planning.vla.vlm_adapter import VLMConfig, VLMPlanner

        if "vlm" not in cache:
            cache["vlm"] = VLMPlanner(VLMConfig(model_dir=vlm_model))
        return cache["vlm"]
    raise ConfigError(f"unknown planner {name!r}; known: {', '.join(PLANNERS)}")


_WORKER: dict[str, Any] = {}


def limit_threads(threads: int) -> None:
    """Cap torch's CPU threads in this process: parallel episode workers that each use
    every core slow each other down many times over (measured: perception 50 -> 460 ms
    per set with two unlimited processes on 2 cores)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def default_threads(jobs: int) -> int:
    """CPU threads per worker process when ``jobs`` run at once."""
    import os

    return max(1, (os.cpu_count() or 1) // jobs)


def run_job(job: DriveJob) -> dict[str, Any]:
    """Run one episode in this process; returns its JSON-ready result."""
    from mm_perception.core.calibration import Rig
    from mm_perception.planning.closed_loop import ClosedLoopConfig, run_episode
    from mm_perception.planning.perception_loop import PerceptionLoop
    from mm_perception.planning.suite import build_episode

    limit_threads(job.threads)
    if _WORKER.get("rig_path") != job.rig:
        _WORKER.clear()
        _WORKER["rig_path"] = job.rig
        _WORKER["rig"] = Rig.from_yaml(job.rig)
    rig = _WORKER["rig"]
    config = ClosedLoopConfig(frame_every_s=job.frames_every_s)
    if "perception" not in _WORKER:
        _WORKER["perception"] = PerceptionLoop(rig, config.perception)
    episode = build_episode(job.kind, job.seed, split=job.split)
    planner = make_planner(job.planner, episode, job.vla_weights, job.vla_backend,
                           job.vlm_model, _WORKER.setdefault("planners", {}))
    tic = time.perf_counter()
    result = run_episode(episode, planner, rig, config, perception=_WORKER["perception"])
    out = result.to_dict()
    out["planner"] = job.planner  # the CLI's name (vla-no-language shares the VLA's class)
    out["wall_s"] = time.perf_counter() - tic
    if job.strip_dir is not None:
        path = Path(job.strip_dir) / f"{job.planner}_{job.kind}_{job.seed}.png"
        write_strip(path, result, episode)
        out["strip"] = str(path)
    return out


def write_strip(path: Path, result: Any, episode: Any) -> None:
    """A picture of one episode: camera frames over time, and the driven path from above
    with the other agents' start positions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = result.frames[:6]
    cols = max(len(frames), 1) + 1
    fig, axes = plt.subplots(1, cols, figsize=(2.6 * cols, 2.6))
    axes = np.atleast_1d(axes)
    for ax, (t_s, img) in zip(axes[:-1], frames, strict=False):
        ax.imshow(img)
        ax.set_title(f"t = {t_s:.1f} s", fontsize=8)
        ax.axis("off")
    ax = axes[-1]
    trace = result.trace
    ax.plot(trace[:, 1], trace[:, 2], "b-", lw=1.5, label="ego")
    ax.plot(trace[0, 1], trace[0, 2], "bo", ms=4)
    for lane in episode.scenario.layout.paths.values():
        pts = lane.poses_at(np.linspace(0.0, lane.length, 60))[:, :2]
        ax.plot(pts[:, 0], pts[:, 1], "-", color="0.85", lw=0.6, zorder=0)
    pad = 25.0
    ax.set_xlim(trace[:, 1].min() - pad, trace[:, 1].max() + pad)
    ax.set_ylim(trace[:, 2].min() - pad, trace[:, 2].max() + pad)
    ax.set_aspect("equal")
    ok = "success" if result.success else f"failed: {result.outcome.get('reason', '')}"
    ax.set_title(ok, fontsize=8)
    fig.suptitle(f"{result.planner}: \"{result.instruction}\"", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-planner (and per planner and kind) success rate, collisions, off-road,
    interventions and comfort; and the acceptance comparisons where both planners ran."""
    by_planner: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_planner[r["planner"]].append(r)
    summary: dict[str, Any] = {"planners": {}}
    for name, rows in sorted(by_planner.items()):
        kinds: dict[str, list[bool]] = defaultdict(list)
        for r in rows:
            kinds[r["kind"]].append(bool(r["success"]))
        summary["planners"][name] = {
            "episodes": len(rows),
            "success_rate": float(np.mean([r["success"] for r in rows])),
            "collisions": int(sum(bool(r["outcome"].get("collisions")) for r in rows)),
            "off_road": int(sum(bool(r["outcome"].get("off_road")) for r in rows)),
            "interventions": int(sum(r["safety"]["interventions"] for r in rows)),
            "safety_checks": int(sum(r["safety"]["checks"] for r in rows)),
            "mean_rms_jerk_mps3": float(np.mean([r["comfort"]["rms_jerk_mps3"] for r in rows])),
            "max_abs_jerk_mps3": float(np.max([r["comfort"]["max_abs_jerk_mps3"]
                                               for r in rows])),
            "per_kind": {k: float(np.mean(v)) for k, v in sorted(kinds.items())},
        }
    p = summary["planners"]
    if "vla" in p and "expert" in p and p["expert"]["success_rate"] > 0:
        summary["vla_over_expert"] = p["vla"]["success_rate"] / p["expert"]["success_rate"]
    if "vla" in p and "vla-no-language" in p:
        summary["language_drop_points"] = 100.0 * (p["vla"]["success_rate"]
                                                   - p["vla-no-language"]["success_rate"])
    return summary


def write_report(out: Path, results: Sequence[dict[str, Any]], summary: dict[str, Any],
                 meta: dict[str, Any]) -> Path:
    """``report.md`` with the planner comparison, per-kind success and the strips."""
    lines = ["# Closed-loop planner evaluation", "",
             f"Suite `{meta['suite']}`, split `{meta['split']}`, seeds {meta['seeds']}, "
             f"rig `{meta['rig']}`. Perception: the stack's own (output-level fusion + "
             f"tracking); the safety filter is always on.", "",
             "| planner | episodes | success | collisions | off-road | interventions / "
             "checks | mean RMS jerk (m/s³) | max jerk (m/s³) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in summary["planners"].items():
        lines.append(f"| {name} | {s['episodes']} | {100 * s['success_rate']:.1f}% | "
                     f"{s['collisions']} | {s['off_road']} | {s['interventions']} / "
                     f"{s['safety_checks']} | {s['mean_rms_jerk_mps3']:.2f} | "
                     f"{s['max_abs_jerk_mps3']:.2f} |")
    if "vla_over_expert" in summary:
        lines += ["", f"VLA success relative to the expert: "
                      f"{100 * summary['vla_over_expert']:.1f}% (goal >= 85%)."]
    if "language_drop_points" in summary:
        lines += ["", f"Success lost without language (constant instruction): "
                      f"{summary['language_drop_points']:.1f} points (goal >= 30)."]
    kinds = sorted({k for s in summary["planners"].values() for k in s["per_kind"]})
    names = list(summary["planners"])
    lines += ["", "## Success per task kind", "", "| kind | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    for k in kinds:
        cells = [f"{100 * summary['planners'][n]['per_kind'][k]:.0f}%"
                 if k in summary["planners"][n]["per_kind"] else "-" for n in names]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "## Episodes", "", "| planner | kind | seed | instruction | result | "
              "interventions |", "|---|---|---|---|---|---|"]
    for r in results:
        verdict = "success" if r["success"] else f"failed ({r['outcome'].get('reason', '')})"
        strip = f" [strip]({Path(r['strip']).relative_to(out)})" if r.get("strip") else ""
        lines.append(f"| {r['planner']} | {r['kind']} | {r['seed']} | {r['instruction']} | "
                     f"{verdict}{strip} | {r['safety']['interventions']} |")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``drive`` subcommand's options."""
    parser.add_argument("--suite", default="default", help="instruction suite (task kinds)")
    parser.add_argument("--seeds", nargs="+", default=["1000-1002"],
                        help="episode seeds: N, A-B or comma lists")
    parser.add_argument("--split", choices=["train", "heldout"], default="heldout",
                        help="instruction phrasings: the training ones or the held-out ones")
    parser.add_argument("--planner", nargs="+", choices=PLANNERS, default=["expert", "rules"],
                        help="planners to compare")
    parser.add_argument("--kinds", nargs="*", help="only these task kinds of the suite")
    parser.add_argument("--rig", default=None, help="rig YAML (default: config/rigs/car.yaml)")
    parser.add_argument("--vla-weights", help="VLA weights folder (default: the shipped one)")
    parser.add_argument("--vla-backend", choices=["torch", "onnxruntime"], default="torch")
    parser.add_argument("--vlm-model", help="local Hugging Face model folder for --planner vlm")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--frames", type=float, default=2.0,
                        help="keep a camera frame for the strips every N s (0: no strips)")
    parser.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    """Run the ``drive`` subcommand; prints the summary table path."""
    from tqdm import tqdm

    from mm_perception.planning.suite import suite_kinds

    kinds = suite_kinds(args.suite, args.kinds)
    seeds = parse_seeds(args.seeds)
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rig = args.rig or str(DEFAULT_RIG)
    strips = str(out / "strips") if args.frames > 0 else None
    jobs = [DriveJob(p, k, s, args.split, rig, args.vla_weights, args.vla_backend,
                     args.vlm_model, args.frames, strips, default_threads(args.jobs))
            for p in args.planner for k in kinds for s in seeds]
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="episodes", unit="ep")
    if args.jobs == 1:
        for job in jobs:
            results.append(run_job(job))
            bar.update()
    else:
        # spawn: MuJoCo's GL context and torch threads do not survive a fork cleanly
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            for res in pool.map(run_job, jobs):
                results.append(res)
                bar.update()
    bar.close()
    summary = summarise(results)
    meta = {"suite": args.suite, "split": args.split, "seeds": seeds, "rig": rig,
            "planners": args.planner, "kinds": kinds}
    (out / "results.json").write_text(json.dumps({"meta": meta, "summary": summary,
                                                  "episodes": results}, indent=1))
    report = write_report(out, results, summary, meta)
    for name, s in summary["planners"].items():
        print(f"{name:16s} success {100 * s['success_rate']:5.1f}%  collisions "
              f"{s['collisions']}  off-road {s['off_road']}  interventions "
              f"{s['interventions']}")
    for key in ("vla_over_expert", "language_drop_points"):
        if key in summary:
            print(f"{key}: {summary[key]:.3f}")
    print(f"report: {report}")
    return 0


__all__ = ["PLANNERS", "DriveJob", "add_arguments", "make_planner", "parse_seeds", "run",
           "run_job", "summarise", "write_report", "write_strip"]
