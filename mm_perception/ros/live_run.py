"""A platform graph run live over DDS against a replayed bag, and its outputs compared with
the offline run of the same bag.

Three processes, as on a robot: ``mm-perception run --config <platform> --use-sim-time``
(the graph), ``mm-perception record`` (the graph's outputs into an MCAP bag) and
``mm-perception replay --wait-for-subscribers 1`` (the bag with ``/clock``, reliable QoS).
Start order: graph; recorder (ready once the graph's output topics exist and it has
subscribed); player (ready once every input topic has the graph's subscription). The recorder
stops ``idle_timeout_s`` after the last output message; the graph is then stopped with
SIGINT and writes its summary (counters, processing and latency percentiles).

Used by the live replay tests (``tests/ros/test_live_graph.py``) and ``bench/bench_live.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_perception.core.errors import ConfigError, MMPerceptionError
from mm_perception.core.types import DetectedObject
from mm_perception.ros.nodes.launcher import EXECUTORS, PlatformConfig
from mm_perception.ros.recorder import READY_LINE


class LiveRunError(MMPerceptionError):
    """A process of the live run failed or did not get ready in time (the message has the
    tail of its log)."""


@dataclass(frozen=True)
class LiveRunConfig:
    """Options of :func:`run_live`.

    Attributes:
        platform: platform config (``config/car.yaml``).
        rate: replay rate factor (1.0: real time).
        parameters: parameter overrides on every node (``--param NAME=VALUE``).
        mute: player dropouts ``TOPIC@START:END`` (seconds from the bag start).
        executor: ``single`` / ``multi`` (see ``launcher.make_executor``).
        extra_topics: topics recorded besides the pipeline nodes' outputs (e.g.
            ``/diagnostics``); they do not keep the recorder from going idle.
        startup_timeout_s: deadline for each process to get ready, seconds.
        idle_timeout_s: the recording ends this long after the last output message, s.
        lead_in_s: ``/clock`` at the start time this long before the first message (the
            player's ``--lead-in``): the graph's clock is running and Fast DDS has opened
            its TCP data channels (``LARGE_DATA``) before the first sensor data, s.
        domain_id: ``ROS_DOMAIN_ID`` of all three processes (None: inherited).
    """

    platform: Path
    rate: float = 1.0
    parameters: Mapping[str, Any] = field(default_factory=dict)
    mute: tuple[str, ...] = ()
    executor: str = "single"
    extra_topics: tuple[str, ...] = ()
    startup_timeout_s: float = 180.0
    idle_timeout_s: float = 3.0
    lead_in_s: float = 1.0
    domain_id: int | None = None

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ConfigError(f"LiveRunConfig.rate must be > 0, got {self.rate}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"LiveRunConfig.executor must be one of {EXECUTORS}, "
                              f"got {self.executor!r}")
        if not (self.startup_timeout_s > 0 and self.idle_timeout_s > 0):
            raise ConfigError("LiveRunConfig.startup_timeout_s and idle_timeout_s must be > 0")


@dataclass
class LiveRunResult:
    """What a live run left in ``out_dir``.

    Attributes:
        recorded: the MCAP bag of the graph's outputs (receive time = wall clock).
        graph: the graph summary (``launcher.graph_summary`` plus ``player`` absent here).
        player: the player's JSON summary (published counts, muted counts).
        output_topics: node name -> its primary objects topic.
        wall_s: seconds from the player's start to the end of the recording.
    """

    recorded: Path
    graph: dict[str, Any]
    player: dict[str, Any]
    output_topics: dict[str, str]
    wall_s: float


def output_topics(platform: PlatformConfig) -> dict[str, str]:
    """Node name -> ``/<node>/output/objects`` for every node that publishes objects."""
    return {n.name: f"/{n.name}/output/objects" for n in platform.nodes if n.kind == "pipeline"}


def dds_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a process of a live graph on one machine: Fast DDS' default UDP transport
    loses fragments of 1 MB camera frames on loopback; a reliable stream then holds every
    later sample until the writer's next heartbeat (3 s) and the graph sees bursts and gaps.
    TCP + shared memory for user data (``LARGE_DATA``) does not. A value already set wins."""
    return {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", **env}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mm_perception.cli", *args]


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class _Process:
    """A child process with its combined output in a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen(argv, stdout=self._file, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)

    def wait_for_line(self, text: str, deadline: float) -> None:
        while text not in _tail(self.log, 1 << 20):
            if self.proc.poll() is not None:
                raise LiveRunError(f"{self.name} exited ({self.proc.returncode}) before "
                                   f"'{text}':\n{_tail(self.log)}")
            if time.monotonic() > deadline:
                raise LiveRunError(f"{self.name}: no '{text}' in time:\n{_tail(self.log)}")
            time.sleep(0.05)

    def wait(self, timeout_s: float, alongside: Sequence[_Process] = ()) -> int:
        """Wait for the exit; a process in ``alongside`` that exits first is an error (the
        graph dying while the player waits for its subscriptions)."""
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            for other in alongside:
                if other.proc.poll() is not None:
                    raise LiveRunError(f"{other.name} exited ({other.proc.returncode}) while "
                                       f"{self.name} ran:\n{_tail(other.log)}")
            if time.monotonic() > deadline:
                raise LiveRunError(f"{self.name} did not finish within {timeout_s} s:\n"
                                   f"{_tail(self.log)}")
            time.sleep(0.05)
        return int(self.proc.returncode)

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 30.0) -> int:
        """Signal the process, wait; kill it when it does not stop, after asking it for its
        threads' stacks (SIGUSR1, see ``mm_perception.cli``) so that its log says where it
        hung."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)
                time.sleep(2.0)
                self.proc.kill()
                self.proc.wait()
        self._file.close()
        return int(self.proc.returncode)


def run_live(bag: str | Path, out_dir: str | Path, config: LiveRunConfig) -> LiveRunResult:
    """Replay ``bag`` into the platform graph live (see the module docstring).

    Writes into ``out_dir``: ``graph.log``, ``recorder.log``, ``player.log`` (each process's
    output), ``graph.json`` (graph summary), ``player/`` (player summary) and ``outputs/``
    (the recorded bag).

    Raises:
        LiveRunError: a process failed, or did not get ready before its deadline.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    platform = PlatformConfig.from_yaml(config.platform)
    topics = output_topics(platform)
    if not topics:
        raise ConfigError(f"{config.platform}: no node publishes objects")
    env = dds_env(os.environ)
    if config.domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(config.domain_id)
    params = [a for name, value in config.parameters.items()
              for a in ("--param", f"{name}={json.dumps(value)}")]
    rig = str(platform.rig)
    processes: list[_Process] = []
    try:
        graph = _Process("graph", _cli("run", "--config", str(config.platform),
                                       "--use-sim-time", "--executor", config.executor,
                                       "--summary", str(out / "graph.json"), *params),
                         out / "graph.log", env)
        processes.append(graph)
        record_topics = [*topics.values(), *config.extra_topics]
        recorder = _Process("recorder", _cli(
            "record", "--topics", *record_topics, "--out", str(out / "outputs"),
            "--idle-timeout", str(config.idle_timeout_s),
            "--idle-topics", *topics.values(),
            "--discovery-timeout", str(config.startup_timeout_s)), out / "recorder.log", env)
        processes.append(recorder)
        recorder.wait_for_line(READY_LINE, time.monotonic() + config.startup_timeout_s)
        mute = ["--mute", *config.mute] if config.mute else []
        start = time.monotonic()
        player = _Process("player", _cli(
            "replay", str(bag), "--rig", rig, "--rate", str(config.rate),
            "--wait-for-subscribers", "1", "--wait-timeout", str(config.startup_timeout_s),
            "--lead-in", str(config.lead_in_s),
            "--out", str(out / "player"), *mute), out / "player.log", env)
        processes.append(player)
        if player.wait(_bag_duration_s(bag) / config.rate + config.startup_timeout_s,
                       alongside=(graph, recorder)) != 0:
            raise LiveRunError(f"player failed:\n{_tail(player.log)}")
        if recorder.wait(config.idle_timeout_s + 120.0, alongside=(graph,)) != 0:
            raise LiveRunError(f"recorder failed:\n{_tail(recorder.log)}")
        wall_s = time.monotonic() - start
        graph.stop(signal.SIGINT, timeout_s=60.0)
        try:
            summary = json.loads((out / "graph.json").read_text())
        except (OSError, ValueError) as exc:
            raise LiveRunError(f"graph wrote no summary ({exc}):\n{_tail(graph.log)}") from exc
        player_summary = json.loads((out / "player" / "play_stats.json").read_text())
    finally:
        for proc in reversed(processes):
            proc.stop(signal.SIGINT, timeout_s=30.0)
    return LiveRunResult(out / "outputs", summary, player_summary, topics, wall_s)


def _bag_duration_s(bag: str | Path) -> float:
    from mm_perception.bag.reader import BagSource

    with BagSource(bag) as src:
        return (src.end_ns - src.start_ns) * 1e-9


# ------------------------------------------------------------------ comparison
def recorded_objects(recorded: str | Path, topic: str) -> dict[int, list[DetectedObject]]:
    """Header stamp ns -> objects of every ``DetectedObjectArray`` on ``topic`` in a recorded
    bag (the last message wins for a repeated stamp)."""
    import mm_perception_msgs.msg as m
    from rclpy.serialization import deserialize_message

    from mm_perception.bag.reader import BagSource
    from mm_perception.ros.convert_objects import objects_from_msg

    out: dict[int, list[DetectedObject]] = {}
    with BagSource(recorded) as src:
        for _topic, _t, raw in src.raw_messages([topic]):
            msg = deserialize_message(raw, m.DetectedObjectArray)
            out[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = objects_from_msg(msg)
    return out


def offline_objects(bag: str | Path, platform_path: str | Path, node_name: str,
                    parameters: Mapping[str, Any] | None = None
                    ) -> dict[int, list[DetectedObject]]:
    """Set stamp ns -> primary-list objects of the platform node ``node_name`` run offline
    (deterministic replay, same parameters as the live node)."""
    from mm_perception.bag.offline import OfflineConfig, OfflineReplay
    from mm_perception.bag.reader import BagSource
    from mm_perception.core.calibration import Rig
    from mm_perception.ros.nodes.pipeline_config import node_parameters, pipeline_from_params
    from mm_perception.ros.nodes.set_input import sync_with_overrides

    platform = PlatformConfig.from_yaml(platform_path)
    params = node_parameters(platform, node_name, parameters)
    rig = Rig.from_yaml(platform.rig)
    pipeline = pipeline_from_params(rig, params)
    replay = OfflineReplay(rig, OfflineConfig(deskew_lidar=params["deskew_lidar"],
                                              remove_nans=params["remove_nans"]),
                           sync=sync_with_overrides(rig, params))
    out: dict[int, list[DetectedObject]] = {}
    with BagSource(bag) as src:
        for sensor_set in replay.run(src):
            result = pipeline.process(sensor_set, replay.odometry)
            out[result.stamp_ns] = list(result.objects.get(params["primary_list"], []))
    return out


@dataclass(frozen=True)
class Comparison:
    """Live against offline objects, set by set.

    Attributes:
        offline_sets: sets of the offline run.
        live_sets: offline sets that have a live output with the same stamp.
        equal_sets: of those, sets whose objects match one to one within the tolerance.
        differing: stamps (ns) of live sets that differ, with a reason each.
        max_centre_diff_m: the largest centre difference over matched objects, metres.
    """

    offline_sets: int
    live_sets: int
    equal_sets: int
    differing: tuple[tuple[int, str], ...]
    max_centre_diff_m: float

    def as_dict(self) -> dict[str, Any]:
        return {"offline_sets": self.offline_sets, "live_sets": self.live_sets,
                "equal_sets": self.equal_sets, "max_centre_diff_m": self.max_centre_diff_m,
                "differing": [list(d) for d in self.differing[:20]]}


def _set_difference(live: Sequence[DetectedObject], offline: Sequence[DetectedObject],
                    tol_m: float) -> tuple[str, float]:
    """Why two object lists differ ("" when they match within ``tol_m``), and the largest
    centre difference of the matched pairs."""
    from scipy.optimize import linear_sum_assignment

    if len(live) != len(offline):
        return f"{len(live)} live objects, {len(offline)} offline", 0.0
    if not live:
        return "", 0.0
    a = np.array([o.box.center for o in live])
    b = np.array([o.box.center for o in offline])
    cost = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    worst = float(cost[rows, cols].max())
    for i, j in zip(rows, cols, strict=True):
        if live[i].label is not offline[j].label:
            return f"class {live[i].label.value} live, {offline[j].label.value} offline", worst
        if cost[i, j] > tol_m:
            return f"centre off by {cost[i, j]:.3f} m", worst
        if np.abs(live[i].box.size - offline[j].box.size).max() > tol_m:
            return "size differs", worst
    return "", worst


def compare_objects(live: Mapping[int, Sequence[DetectedObject]],
                    offline: Mapping[int, Sequence[DetectedObject]],
                    tol_m: float = 0.01) -> Comparison:
    """Match live to offline outputs by stamp; a set is equal when the objects pair up one to
    one (optimal assignment on centre distance) with the same class and centre and size within
    ``tol_m`` metres (boxes go through float32 messages)."""
    equal = 0
    differing: list[tuple[int, str]] = []
    worst = 0.0
    for stamp, objs in offline.items():
        if stamp not in live:
            continue
        reason, diff = _set_difference(live[stamp], objs, tol_m)
        worst = max(worst, diff)
        if reason:
            differing.append((stamp, reason))
        else:
            equal += 1
    return Comparison(len(offline), sum(s in live for s in offline), equal, tuple(differing),
                      worst)


__all__ = [
    "Comparison",
    "LiveRunConfig",
    "LiveRunError",
    "LiveRunResult",
    "compare_objects",
    "dds_env",
    "offline_objects",
    "output_topics",
    "recorded_objects",
    "run_live",
]
