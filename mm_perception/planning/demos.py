"""``mm-perception sim demos``: expert demonstrations for imitation learning.

The privileged expert drives every (task kind, seed) episode of a suite in closed loop, with
the stack's own perception filling the observation the policy will see (objects, camera,
map lanes, instruction); each planner call is recorded with the expert's chunk as the label
(:class:`~mm_perception.planning.vla.dataset.DemoWriter`).

Behaviour cloning only ever sees states the expert visits, and a policy that drifts a little
off them has never been shown how to come back. The executed chunk is therefore perturbed
with probability ``noise_prob`` (a lateral offset and a speed scale, DART-style), while the
label stays the expert's clean chunk from the perturbed state: the demonstrations then cover
the recoveries. The safety filter checks the perturbed chunk like any other.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mm_perception.core.errors import ConfigError
from mm_perception.planning.observation import Planner, PlannerObservation
from mm_perception.planning.trajectory import Trajectory


@dataclass(frozen=True)
class DemoNoise:
    """Perturbation of the executed chunks while recording (labels stay clean).

    Attributes:
        prob: probability that a chunk is perturbed.
        lateral_m: standard deviation of the lateral offset reached at the chunk's end, m
            (ramped in linearly from 0 at its start, so the perturbed chunk stays smooth).
        speed_scale: standard deviation of the relative speed change.
    """

    prob: float = 0.3
    lateral_m: float = 0.6
    speed_scale: float = 0.15

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ConfigError(f"DemoNoise.prob must be in [0, 1], got {self.prob!r}")
        for key in ("lateral_m", "speed_scale"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0.0):
                raise ConfigError(f"DemoNoise.{key} must be >= 0, got {value!r}")


def perturb(chunk: Trajectory, rng: np.random.Generator, noise: DemoNoise) -> Trajectory:
    """A perturbed copy of ``chunk`` (or the chunk itself, with probability ``1 - prob``).

    The offset is perpendicular to each sample's heading and grows linearly with time; the
    speeds are scaled and the positions re-timed along the path so that position and speed
    stay consistent (the speed scale stretches the distance covered).
    """
    if noise.prob <= 0.0 or rng.random() >= noise.prob:
        return chunk
    t = chunk.t_s
    ramp = (t - t[0]) / max(float(t[-1] - t[0]), 1e-9)
    offset = rng.normal(0.0, noise.lateral_m) * ramp
    scale = float(np.clip(1.0 + rng.normal(0.0, noise.speed_scale), 0.5, 1.5))
    # distance along the chunk, scaled, then positions re-sampled at the scaled distances
    step = np.hypot(*np.diff(chunk.xy, axis=0).T)
    dist = np.concatenate([[0.0], np.cumsum(step)])
    if dist[-1] > 1e-6:
        target = np.minimum(dist * scale, dist[-1])
        x = np.interp(target, dist, chunk.xy[:, 0])
        y = np.interp(target, dist, chunk.xy[:, 1])
    else:
        x, y = chunk.xy[:, 0], chunk.xy[:, 1]
    normal = np.stack([-np.sin(chunk.yaw), np.cos(chunk.yaw)], axis=1)
    xy = np.stack([x, y], axis=1) + offset[:, None] * normal
    return Trajectory(chunk.stamp_ns, chunk.frame_id, chunk.t_s, xy, chunk.yaw,
                      chunk.speed * scale, source=f"{chunk.source}+noise")


@dataclass(frozen=True)
class DemoJob:
    """One episode to record (picklable)."""

    kind: str
    seed: int
    rig: str
    out: str
    noise: DemoNoise
    plan_period_s: float
    threads: int = 1
    learner: str | None = None
    beta: float = 0.0


class DaggerPlanner:
    """The DAgger mixture (module docstring): executes the learner's chunk, or with
    probability ``beta`` the expert's; :attr:`label` is the expert's chunk of the last call.

    Both planners see every observation, in order, so the expert's internal state (the
    phase of its manoeuvre) follows the states the mixture actually visits.
    """

    name = "dagger"

    def __init__(self, expert: Planner, learner: Planner, beta: float,
                 rng: np.random.Generator) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"DAgger beta must be in [0, 1], got {beta!r}")
        self.expert = expert
        self.learner = learner
        self.beta = beta
        self.rng = rng
        self.label: Trajectory | None = None
        self.learner_chunks = 0

    def reset(self) -> None:
        """Reset both planners."""
        self.expert.reset()
        self.learner.reset()
        self.label = None
        self.learner_chunks = 0

    def plan(self, observation: PlannerObservation) -> Trajectory:
        """The executed chunk; the expert's label is kept in :attr:`label`."""
        self.label = self.expert.plan(observation)
        chunk = self.learner.plan(observation)
        if self.rng.random() < self.beta:
            return self.label
        self.learner_chunks += 1
        return chunk


_WORKER: dict[str, Any] = {}


def record_episode(job: DemoJob) -> dict[str, Any]:
    """Drive one episode with the expert and write its demonstration shard; returns the
    episode's summary (outcome, samples)."""
    from mm_perception.core.calibration import Rig
    from mm_perception.planning.closed_loop import ClosedLoopConfig, run_episode
    from mm_perception.planning.drive import limit_threads
    from mm_perception.planning.expert import ExpertPlanner
    from mm_perception.planning.perception_loop import PerceptionLoop
    from mm_perception.planning.suite import build_episode
    from mm_perception.planning.vla.config import VLAConfig
    from mm_perception.planning.vla.dataset import DemoWriter

    limit_threads(job.threads)
    if _WORKER.get("rig_path") != job.rig:
        _WORKER.clear()
        _WORKER["rig_path"] = job.rig
        _WORKER["rig"] = Rig.from_yaml(job.rig)
        _WORKER["perception"] = PerceptionLoop(_WORKER["rig"])
    episode = build_episode(job.kind, job.seed, split="train")
    writer = DemoWriter(job.out, VLAConfig())
    rng = np.random.default_rng(np.random.SeedSequence([job.seed, 77, len(job.kind)]))
    planner: Planner = ExpertPlanner(episode)
    dagger: DaggerPlanner | None = None
    meta: dict[str, Any] = {"episode": episode.name, "kind": job.kind, "seed": job.seed}
    if job.learner is not None:
        from mm_perception.planning.vla.policy import load_vla
        from mm_perception.runtime.config import RuntimeConfig

        if _WORKER.get("learner_path") != job.learner:
            _WORKER["learner_path"] = job.learner
            _WORKER["learner"] = load_vla(job.learner, RuntimeConfig(
                backend="onnxruntime", intra_op_threads=1), name="learner")
        # its own stream: the noise draws stay those of a plain recording
        mix_rng = np.random.default_rng(np.random.SeedSequence([job.seed, 78, len(job.kind)]))
        planner = dagger = DaggerPlanner(planner, _WORKER["learner"], job.beta, mix_rng)
        meta.update(episode=f"{episode.name}_dagger", dagger_beta=job.beta,
                    learner=job.learner)
    samples = 0

    def record(obs: Any, chunk: Trajectory) -> None:
        nonlocal samples
        label = dagger.label if dagger is not None and dagger.label is not None else chunk
        writer.add(obs, label, {**meta, "step": samples}, target_id=episode.target_actor_id)
        samples += 1

    config = ClosedLoopConfig(plan_period_s=job.plan_period_s)
    result = run_episode(episode, planner, _WORKER["rig"], config,
                         perception=_WORKER["perception"], recorder=record,
                         execute=lambda c, r: perturb(c, r, job.noise), rng=rng)
    shard = writer.end_episode()
    summary = {**meta, "instruction": episode.instruction, "samples": samples,
               "success": result.success, "outcome": result.outcome,
               "shard": None if shard is None else str(shard)}
    if dagger is not None:
        summary["learner_chunks"] = dagger.learner_chunks
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``sim demos`` subcommand's options."""
    parser.add_argument("--suite", default="default", help="instruction suite (task kinds)")
    parser.add_argument("--seeds", nargs="+", default=["0-9"],
                        help="episode seeds (N, A-B or comma lists); keep them apart from "
                             "the evaluation seeds")
    parser.add_argument("--kinds", nargs="*", help="only these task kinds of the suite")
    parser.add_argument("--rig", default=None, help="rig YAML (default: config/rigs/car.yaml)")
    parser.add_argument("--noise-prob", type=float, default=DemoNoise.prob)
    parser.add_argument("--noise-lateral", type=float, default=DemoNoise.lateral_m)
    parser.add_argument("--noise-speed", type=float, default=DemoNoise.speed_scale)
    parser.add_argument("--plan-period", type=float, default=0.25,
                        help="seconds between expert calls, each one a recorded sample")
    parser.add_argument("--learner", default=None,
                        help="VLA weights folder: record a DAgger round (the learner drives, "
                             "the expert labels; shards named <episode>_dagger)")
    parser.add_argument("--beta", type=float, default=0.3,
                        help="with --learner: probability that a chunk executed is the "
                             "expert's")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--out", required=True, help="demonstration folder (shards + index)")


def run(args: argparse.Namespace) -> int:
    """Record the demonstrations; writes ``index.jsonl`` beside the shards."""
    from tqdm import tqdm

    from mm_perception.planning.drive import DEFAULT_RIG, default_threads, parse_seeds
    from mm_perception.planning.suite import suite_kinds
    from mm_perception.planning.vla.config import VLAConfig
    from mm_perception.planning.vla.dataset import DemoWriter

    kinds = suite_kinds(args.suite, args.kinds)
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    noise = DemoNoise(args.noise_prob, args.noise_lateral, args.noise_speed)
    if not 0.0 <= args.beta <= 1.0:
        raise ConfigError(f"--beta must be in [0, 1], got {args.beta}")
    if args.learner is not None and not Path(args.learner).is_dir():
        raise ConfigError(f"--learner {args.learner}: no such weights folder")
    rig = args.rig or str(DEFAULT_RIG)
    out = Path(args.out)
    DemoWriter(out, VLAConfig())  # writes (or checks) the folder's features.json once
    jobs = [DemoJob(k, s, rig, str(out), noise, args.plan_period, default_threads(args.jobs),
                    args.learner, args.beta if args.learner is not None else 0.0)
            for s in parse_seeds(args.seeds) for k in kinds]
    bar = tqdm(total=len(jobs), desc="demonstrations", unit="ep")
    ok = 0
    with open(out / "index.jsonl", "a") as index:
        if args.jobs == 1:
            results = (record_episode(j) for j in jobs)
            for res in results:
                index.write(json.dumps(res) + "\n")
                ok += bool(res["success"])
                bar.update()
        else:
            with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
                for res in pool.map(record_episode, jobs):
                    index.write(json.dumps(res) + "\n")
                    index.flush()
                    ok += bool(res["success"])
                    bar.update()
    bar.close()
    who = "DAgger (learner + expert)" if args.learner is not None else "expert"
    print(f"{len(jobs)} episodes, {who} success {ok}/{len(jobs)}; demonstrations in {out}")
    return 0


__all__ = ["DaggerPlanner", "DemoJob", "DemoNoise", "add_arguments", "perturb", "record_episode",
           "run"]
