"""Closed-loop episodes: simulator -> perception -> planner -> safety filter -> controller.

One :func:`run_episode` call drives one :class:`~mm_perception.planning.suite.Episode`:

- every control period (the simulator's ``control_period_ns``, 50 ms = 20 Hz) the simulator
  advances under the controller's last command and its sensor messages go, in receive order,
  through the stack's own perception (:class:`~mm_perception.planning.perception_loop.
  PerceptionLoop`; ground truth never reaches a planner other than the privileged expert);
- every ``plan_period_s`` the planner gets a :class:`~mm_perception.planning.observation.
  PlannerObservation` and returns an action chunk, which the
  :class:`~mm_perception.planning.safety.SafetyFilter` checks (the filter has the last word);
  what it passes (or its fallback) goes to the
  :class:`~mm_perception.planning.controller.ChunkExecutor`, which blends it with the chunk it
  is executing;
- between planner calls, each new perception output re-checks the part of the executing
  chunk still ahead, so that an obstacle appearing between two plans is reacted to at the
  perception rate;
- the controller ticks every control period (20 Hz) and its command drives the simulator.

The episode's :class:`~mm_perception.planning.suite.SuccessMonitor` judges success from ground
truth. :class:`EpisodeResult` carries the outcome, safety interventions, comfort (jerk),
timings and, optionally, camera frames for a strip picture.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.calibration import Rig
from mm_perception.core.errors import ConfigError
from mm_perception.planning.controller import ChunkExecutor, ControllerConfig, to_ego_command
from mm_perception.planning.observation import Planner, PlannerObservation
from mm_perception.planning.perception_loop import (
    PerceptionLoop,
    PerceptionLoopConfig,
    sorted_messages,
)
from mm_perception.planning.safety import SafetyConfig, SafetyFilter, SafetyStatus
from mm_perception.planning.sim_bridge import (
    ego_state,
    ground_truth_tracks,
    observation_from_step,
)
from mm_perception.planning.suite import Episode, SuccessMonitor
from mm_perception.planning.trajectory import Trajectory
from mm_perception.sim.ego_dynamics import EgoCommand
from mm_perception.sim.simulator import SimConfig, SimStep, Simulator

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

_STOPS = (SafetyStatus.COMFORTABLE_STOP, SafetyStatus.EMERGENCY_STOP)
#: a recorder gets every observation a planner saw and the chunk the planner returned
Recorder = Callable[[PlannerObservation, Trajectory], None]
#: turns the (filtered) chunk into the one executed, e.g. demonstration noise
ExecuteTransform = Callable[[Trajectory, np.random.Generator], Trajectory]


@dataclass(frozen=True)
class ClosedLoopConfig:
    """Settings of :func:`run_episode`.

    Attributes:
        plan_period_s: seconds between planner calls (the policy's own rate).
        world_frame: frame of the ego state, tracks and trajectories (the simulator's
            odometry frame).
        safety: the safety filter's settings.
        controller: the chunk executor's settings (its rate must match the simulator's
            control period: one tick per step).
        perception: the closed-loop perception's settings.
        sim: simulator settings (ground-truth depth / instance images are not needed).
        frame_every_s: keep a downscaled camera frame this often for the strip picture
            (0: none).
        frame_width: width of the kept frames, pixels.
        settle_s: the planner is first called after this long, and not before the first
            perception output (tracks need a few sets to be confirmed); until then the ego
            holds its initial speed and heading.
        ground_truth_perception: give the planner and the safety filter the simulator's
            agents as perfect tracks instead of the stack's perception (no sensor data is
            needed: the rig may hold odometry only). For tests of the loop and the expert,
            and to separate planning errors from perception errors; never the evaluation.
    """

    plan_period_s: float = 0.5
    world_frame: str = "odom"
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    perception: PerceptionLoopConfig = field(default_factory=PerceptionLoopConfig)
    sim: SimConfig = field(default_factory=lambda: SimConfig(camera_depth=False,
                                                             camera_instance=False))
    frame_every_s: float = 0.0
    frame_width: int = 160
    settle_s: float = 0.3
    ground_truth_perception: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.plan_period_s) and self.plan_period_s > 0.0):
            raise ConfigError(f"ClosedLoopConfig.plan_period_s must be > 0, got "
                              f"{self.plan_period_s!r}")
        if not (math.isfinite(self.frame_every_s) and self.frame_every_s >= 0.0):
            raise ConfigError(f"ClosedLoopConfig.frame_every_s must be >= 0, got "
                              f"{self.frame_every_s!r}")
        if self.frame_width < 16:
            raise ConfigError(f"ClosedLoopConfig.frame_width must be >= 16 px, got "
                              f"{self.frame_width!r}")
        if not (math.isfinite(self.settle_s) and self.settle_s >= 0.0):
            raise ConfigError(f"ClosedLoopConfig.settle_s must be >= 0, got {self.settle_s!r}")


@dataclass
class EpisodeResult:
    """What one closed-loop episode produced.

    Attributes:
        episode: episode name; kind / seed / split / instruction describe it.
        planner: planner name.
        outcome: the success monitor's JSON-ready verdict (``success``, ``reason``, ...).
        safety: the safety filter's report (checks, interventions by status and reason).
        comfort: ``max_abs_jerk_mps3``, ``rms_jerk_mps3``, ``max_abs_accel_mps2``,
            ``max_lateral_accel_mps2`` of the driven ego (from ground truth at 20 Hz).
        timings_ms: median / max planner and perception wall times, ms.
        trace: ``(T, 4)`` float64 ego ``t_s, x, y, speed`` (world frame) at every step.
        frames: ``(t_s, image)`` pairs of downscaled camera frames (see ``frame_every_s``).
        plans: number of planner calls.
    """

    episode: str
    kind: str
    seed: int
    split: str
    instruction: str
    planner: str
    outcome: dict[str, Any]
    safety: dict[str, Any]
    comfort: dict[str, float]
    timings_ms: dict[str, float]
    trace: F64
    frames: list[tuple[float, U8]] = field(default_factory=list)
    plans: int = 0

    @property
    def success(self) -> bool:
        return bool(self.outcome.get("success", False))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no trace, no frames)."""
        return {"episode": self.episode, "kind": self.kind, "seed": self.seed,
                "split": self.split, "instruction": self.instruction, "planner": self.planner,
                "success": self.success, "outcome": self.outcome, "safety": self.safety,
                "comfort": self.comfort, "timings_ms": self.timings_ms, "plans": self.plans}


def comfort_metrics(trace: F64, dt_s: float) -> dict[str, float]:
    """Jerk and acceleration of a driven path.

    Args:
        trace: ``(T, 4)`` ``t_s, x, y, speed`` at a fixed period.
        dt_s: the period, s.

    Returns:
        ``max_abs_jerk_mps3`` and ``rms_jerk_mps3`` (longitudinal), ``max_abs_accel_mps2``,
        ``max_lateral_accel_mps2`` (speed x yaw rate from the path heading); zeros for
        fewer than 4 samples.
    """
    keys = ("max_abs_jerk_mps3", "rms_jerk_mps3", "max_abs_accel_mps2",
            "max_lateral_accel_mps2")
    if trace.shape[0] < 4:
        return dict.fromkeys(keys, 0.0)
    speed = trace[:, 3]
    accel = np.diff(speed) / dt_s
    jerk = np.diff(accel) / dt_s
    step = np.diff(trace[:, 1:3], axis=0)
    moving = np.hypot(step[:, 0], step[:, 1]) > 0.01
    heading = np.unwrap(np.arctan2(step[:, 1], step[:, 0]))
    yaw_rate = np.where(moving[1:], np.diff(heading) / dt_s, 0.0)
    lateral = speed[1:-1] * yaw_rate
    return {"max_abs_jerk_mps3": float(np.max(np.abs(jerk))),
            "rms_jerk_mps3": float(np.sqrt(np.mean(jerk ** 2))),
            "max_abs_accel_mps2": float(np.max(np.abs(accel))),
            "max_lateral_accel_mps2": float(np.max(np.abs(lateral))) if lateral.size else 0.0}


def _downscale(image: U8, width: int) -> U8:
    import cv2

    h, w = image.shape[:2]
    return np.asarray(cv2.resize(image, (width, max(1, round(h * width / w))),
                                 interpolation=cv2.INTER_AREA), dtype=np.uint8)


def run_episode(episode: Episode, planner: Planner, rig: Rig,
                config: ClosedLoopConfig | None = None, *,
                perception: PerceptionLoop | None = None,
                recorder: Recorder | None = None,
                execute: ExecuteTransform | None = None,
                rng: np.random.Generator | None = None) -> EpisodeResult:
    """Drive one episode in closed loop (see the module docstring).

    Args:
        episode: the scenario, instruction and success criterion.
        planner: the planner under test (reset at the start).
        rig: the sensor rig (the simulator's and the perception's).
        config: loop settings.
        perception: a perception loop to reuse (its pipeline keeps the loaded detectors);
            None builds one. It is reset at the start.
        recorder: called with every observation and the planner's raw chunk (before the
            safety filter), e.g. to record demonstrations.
        execute: applied to the filtered chunk before execution (demonstration noise);
            the executed chunk is checked by the safety filter again.
        rng: random generator for ``execute`` (default: seeded by the episode seed).

    Returns:
        The :class:`EpisodeResult`.
    """
    cfg = config if config is not None else ClosedLoopConfig()
    loop: PerceptionLoop | None = None
    if not cfg.ground_truth_perception:
        loop = perception if perception is not None else PerceptionLoop(rig, cfg.perception)
        loop.reset()
    planner.reset()
    safety = SafetyFilter(cfg.safety)
    executor = ChunkExecutor(cfg.controller)
    monitor = SuccessMonitor(episode)
    rng = rng if rng is not None else np.random.default_rng(episode.seed)
    platform = episode.scenario.ego.platform
    plan_ns = round(cfg.plan_period_s * 1e9)
    settle_ns = round(cfg.settle_s * 1e9)
    frame_ns = round(cfg.frame_every_s * 1e9)
    duration_ns = round(episode.duration_s * 1e9)
    plan_ms: list[float] = []
    trace: list[tuple[float, float, float, float]] = []
    frames: list[tuple[float, U8]] = []
    with Simulator(rig, cfg.sim) as sim:
        if sim.config.control_period_ns * cfg.controller.rate_hz != 1_000_000_000:
            raise ConfigError(f"the controller runs at {cfg.controller.rate_hz} Hz but the "
                              f"simulator steps every {sim.config.control_period_ns} ns: "
                              f"one tick per step needs them to match")
        step: SimStep = sim.reset(episode.scenario)
        t0_ns = sim.config.start_stamp_ns
        next_plan = settle_ns
        next_frame = 0
        last_perception: int | None = None
        # until the first chunk: hold the initial speed and heading (never the simulator's
        # autopilot, which would drive the ego with privileged knowledge)
        hold = EgoCommand(0.0, 0.0) if platform == "vehicle" else EgoCommand(0.0, yaw_rate=0.0)
        command = hold
        trace.append((0.0, step.ego.x, step.ego.y, step.ego.speed))
        while step.time_ns < duration_ns:
            step = sim.step(command)
            monitor.update(step)
            now = t0_ns + step.time_ns
            ego = ego_state(step.ego, now, cfg.world_frame)
            trace.append((step.time_ns / 1e9, step.ego.x, step.ego.y, step.ego.speed))
            if loop is not None:
                loop.feed(sorted_messages(step.outputs))
                tracks = loop.world_tracks()
                image = loop.rgb_image()
                perceived_ns = loop.stamp_ns
            else:
                tracks = ground_truth_tracks(step.agents, episode.scenario, cfg.world_frame,
                                             now)
                image, perceived_ns = None, now
            if frame_ns and step.time_ns >= next_frame and image is not None:
                frames.append((step.time_ns / 1e9, _downscale(image, cfg.frame_width)))
                next_frame += frame_ns
            # the instruction topic is republished every period (as a latched ROS topic
            # would be seen): it is fresh as long as the episode runs
            instruction_ns = now
            if step.time_ns >= next_plan and perceived_ns is not None:
                obs: PlannerObservation = observation_from_step(
                    step, episode, instruction=episode.instruction, image=image,
                    objects=loop.scene_objects(ego) if loop is not None else (),
                    start_stamp_ns=t0_ns, instruction_stamp_ns=instruction_ns,
                    frame_id=cfg.world_frame)
                if loop is None:
                    obs = replace(obs, objects=obs.ground_truth or ())
                tic = time.perf_counter()
                raw = planner.plan(obs)
                plan_ms.append((time.perf_counter() - tic) * 1e3)
                if recorder is not None:
                    recorder(obs, raw)
                result = safety.check(raw, ego, tracks, now, perceived_ns, instruction_ns)
                if execute is not None:
                    result = safety.check(execute(result.trajectory, rng), ego, tracks, now,
                                          perceived_ns, instruction_ns)
                # a stop of the filter is executed at once, a planner's chunk blended in
                executor.submit(result.trajectory, now, immediate=result.status in _STOPS)
                next_plan += plan_ns
                last_perception = perceived_ns
            elif perceived_ns is not None and perceived_ns != last_perception:
                # new perception between plans: the filter re-checks what is executing
                stop = safety.monitor(ego, tracks, now, perceived_ns, instruction_ns)
                if stop is not None:
                    executor.submit(stop.trajectory, now, immediate=True)
                last_perception = perceived_ns
            command = (to_ego_command(executor.tick(ego, now), platform)
                       if executor.reference is not None else hold)
    arr = np.asarray(trace, dtype=np.float64)
    dt = sim.config.control_period_ns / 1e9
    proc = loop.processing_ms if loop is not None else []
    return EpisodeResult(
        episode=episode.name, kind=episode.task.kind.value, seed=episode.seed,
        split=episode.split, instruction=episode.instruction, planner=planner.name,
        outcome=monitor.outcome().to_dict(), safety=safety.report(),
        comfort=comfort_metrics(arr, dt),
        timings_ms={"planner_median": float(np.median(plan_ms)) if plan_ms else 0.0,
                    "planner_max": float(np.max(plan_ms)) if plan_ms else 0.0,
                    "perception_median": float(np.median(proc)) if proc else 0.0,
                    "perception_max": float(np.max(proc)) if proc else 0.0},
        trace=arr, frames=frames, plans=len(plan_ms))


__all__ = ["ClosedLoopConfig", "EpisodeResult", "ExecuteTransform", "Recorder",
           "comfort_metrics", "run_episode"]
