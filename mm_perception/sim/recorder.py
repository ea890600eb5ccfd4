"""Record simulated scenarios to rosbag2 MCAP bags with standard messages + ground truth.

One bag per scene: the rig's topics with the rig's message types and field names (``Image``
or ``CompressedImage`` + ``CameraInfo``, ``PointCloud2`` for LiDAR and radar, ``Odometry``),
``/tf_static`` from the rig's extrinsics, ground-truth depth (``32FC1``, metres) and instance
(``16UC1``, actor id, 0 = no agent) images on ``/sim/<camera>/depth`` and
``/sim/<camera>/instance``, and ``ground_truth.jsonl`` beside the data (see
:mod:`~mm_perception.sim.ground_truth`). ``mm-perception info`` reads it and Foxglove opens it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_perception.bag.cloud_layout import rig_cloud_array
from mm_perception.bag.writer import BagWriter
from mm_perception.core.calibration import Rig, SensorSpec
from mm_perception.core.errors import ConfigError
from mm_perception.core.sensor_models import CameraStream
from mm_perception.core.types import CameraFrame, EgoState, PointCloud, RadarScan, SensorKind
from mm_perception.ros import conversions as conv
from mm_perception.sim.ground_truth import GroundTruthWriter
from mm_perception.sim.scenario import Scenario
from mm_perception.sim.simulator import NS, SensorOutput, SimConfig, Simulator


@dataclass
class RecordSummary:
    """What a recording wrote."""

    bag: str
    scenario: str
    seed: int
    duration_s: float
    messages: dict[str, int] = field(default_factory=dict)
    ground_truth_records: int = 0
    collisions: list[int] = field(default_factory=list)
    off_road_steps: int = 0
    wall_time_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"bag": self.bag, "scenario": self.scenario, "seed": self.seed,
                "duration_s": self.duration_s, "messages": dict(self.messages),
                "ground_truth_records": self.ground_truth_records,
                "collisions": list(self.collisions), "off_road_steps": self.off_road_steps,
                "wall_time_s": self.wall_time_s}


def gt_image_topic(spec: SensorSpec, what: str) -> str:
    """Topic of a camera's ground-truth ``depth`` / ``instance`` images."""
    return f"/sim/{spec.name}/{what}"


class _MessageMaker:
    """Turns simulator outputs into the rig's messages."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.factory = conv.RosbagsFactory()

    def tf_static(self, stamp_ns: int) -> Any:
        transforms = [(self.rig.base_frame, s.frame_id, stamp_ns, s.extrinsics)
                      for s in self.rig.sensors.values()
                      if s.kind is not SensorKind.ODOMETRY and s.extrinsics is not None]
        return conv.tf_message(transforms, self.factory)

    def messages(self, out: SensorOutput) -> list[tuple[str, Any]]:
        spec = self.rig.sensors[out.sensor]
        f = self.factory
        value = out.value
        if isinstance(value, EgoState):
            return [(spec.topic, conv.odometry_from_ego_state(value, f))]
        if isinstance(value, CameraFrame):
            model = spec.sensor_model
            assert isinstance(model, CameraStream) and value.camera is not None
            if model.compressed:
                img = conv.array_to_compressed(value.image, value.encoding, out.stamp_ns,
                                               value.frame_id, f, fmt="jpeg",
                                               jpeg_quality=model.jpeg_quality)
            else:
                img = conv.array_to_image(value.image, value.encoding, out.stamp_ns,
                                          value.frame_id, f)
            msgs = [(spec.topic, img)]
            if spec.camera_info_topic:
                msgs.append((spec.camera_info_topic, conv.camera_info_from_model(
                    value.camera, out.stamp_ns, value.frame_id, f)))
            if out.depth is not None:
                msgs.append((gt_image_topic(spec, "depth"), conv.array_to_image(
                    np.ascontiguousarray(out.depth, dtype=np.float32), "32FC1", out.stamp_ns,
                    value.frame_id, f)))
            if out.instance is not None:
                ids = np.clip(out.instance, 0, 65535).astype(np.uint16)
                msgs.append((gt_image_topic(spec, "instance"), conv.array_to_image(
                    ids, "16UC1", out.stamp_ns, value.frame_id, f)))
            return msgs
        if isinstance(value, PointCloud):
            pts = value.points
            arr = rig_cloud_array(spec, {name: pts[name] for name in value.fields},
                                  value.time_offsets_ns, value.stamp_ns)
            return [(spec.topic, conv.array_to_pointcloud2(arr, value.stamp_ns, value.frame_id,
                                                           f))]
        assert isinstance(value, RadarScan)
        arr = rig_cloud_array(spec, {"x": value.xyz[:, 0], "y": value.xyz[:, 1],
                                     "z": value.xyz[:, 2], "doppler": value.doppler,
                                     "rcs": value.rcs})
        return [(spec.topic, conv.array_to_pointcloud2(arr, value.stamp_ns, value.frame_id, f))]


def check_duration(duration_s: float) -> float:
    """``duration_s`` as a float, or ConfigError unless it is a finite number > 0 s."""
    if (isinstance(duration_s, bool) or not isinstance(duration_s, int | float)
            or not math.isfinite(duration_s) or duration_s <= 0):
        raise ConfigError(f"the simulated duration must be a finite number of seconds > 0, "
                          f"got {duration_s!r}")
    return float(duration_s)


def record_scenario(scenario: Scenario, rig: Rig, duration_s: float, out: str | Path,
                    config: SimConfig | None = None,
                    progress: Callable[[float], None] | None = None) -> RecordSummary:
    """Simulate ``scenario`` for ``duration_s`` with the autopilot ego and write the bag.

    Args:
        scenario: the scenario (its seed decides everything random).
        rig: sensors to simulate and their topics / field names.
        duration_s: seconds of simulated time.
        out: the bag directory to create (must not exist).
        config: simulator settings.
        progress: called with the simulated seconds done after each step.

    Raises:
        ConfigError: a duration that is not a finite number > 0 (before any file is made).
    """
    import time

    duration_s = check_duration(duration_s)
    wall0 = time.perf_counter()
    cfg = config or SimConfig()
    maker = _MessageMaker(rig)
    summary = RecordSummary(str(out), scenario.name, scenario.seed, duration_s)
    collisions: set[int] = set()
    with Simulator(rig, cfg) as sim:
        sim.reset(scenario)  # bad scenario / rig combinations fail here, before any file
        with BagWriter(out, storage="mcap") as writer:
            _record(sim, maker, writer, cfg, duration_s, summary, collisions, progress)
    summary.collisions = sorted(collisions)
    summary.wall_time_s = time.perf_counter() - wall0
    (Path(out) / "sim_summary.json").write_text(json.dumps(summary.as_dict(), indent=2))
    return summary


def _record(sim: Simulator, maker: _MessageMaker, writer: BagWriter, cfg: SimConfig,
            duration_s: float, summary: RecordSummary, collisions: set[int],
            progress: Callable[[float], None] | None) -> None:
    gt = GroundTruthWriter(writer.path)
    try:
        writer.write("/tf_static", cfg.start_stamp_ns, maker.tf_static(cfg.start_stamp_ns))
        for step in sim.run(duration_s):
            for output in sorted(step.outputs, key=lambda o: (o.publish_ns, o.sensor)):
                for topic, msg in maker.messages(output):
                    writer.write(topic, output.publish_ns, msg)
            for frame in step.ground_truth:
                gt.write(frame)
            collisions.update(step.events.collisions)
            summary.off_road_steps += int(step.events.off_road)
            if progress is not None:
                progress(step.time_ns / NS)
    finally:
        gt.close()
    summary.messages = dict(writer.counts)
    summary.ground_truth_records = gt.count


__all__ = ["RecordSummary", "gt_image_topic", "record_scenario"]
