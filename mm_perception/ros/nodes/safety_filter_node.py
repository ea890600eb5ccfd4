"""Split ``safety_filter`` node: the last stage between any planner and the controller
(parameters: ``config/schema/safety_filter.schema.json``; ``safety.*`` are the fields of
:class:`~mm_perception.planning.safety.SafetyConfig`).

Inputs: ``~/input/action_chunk`` (``mm_perception_msgs/ActionChunk``, reliable,
``qos.input_depth``; the ``planner`` node's raw ``~/output/action_chunk``),
``~/input/tracks`` (``TrackedObjectArray``, reliable; the ``tracker`` node's output),
``~/input/odom`` (``nav_msgs/Odometry``, sensor-data QoS) and ``~/input/instruction``
(``std_msgs/String``, reliable + transient local: only its freshness is used, see
:class:`~mm_perception.ros.nodes.plan_inputs.PlanningInputs`). Tracks are moved into the
odometry frame with the odometry pose at their stamp; the ego state is the newest odometry
state; ``now`` is the node clock (sim time under a replay).

What it does, as the closed loop does (:func:`~mm_perception.planning.closed_loop.
run_episode`) but live:

* every chunk goes through :meth:`SafetyFilter.check` (a chunk that cannot be read, e.g.
  arrays of different lengths, is counted as dropped and checked as "no chunk", reason
  ``empty``: the rest of the last valid chunk, else a stop);
* between chunks, every new tracks array triggers :meth:`SafetyFilter.monitor` on what is
  being executed; a stop it returns is published at once;
* no chunk for ``chunk_timeout_s`` (a planner that died or hangs): the filter is asked with
  no chunk (reason ``empty``), at most once per ``chunk_timeout_s``;
* stale inputs (tracks, odometry, instruction) make the filter stop (its freshness checks);
  without any odometry there is no ego state to check against: nothing is published, the
  chunk is counted (``no_odometry``) and the diagnostics say so.

Outputs (reliable, ``qos.output_depth``), for every result of the filter:

* ``~/output/action_chunk`` (``ActionChunk``, odometry frame, stamped at the executed
  trajectory's stamp): ``safety_status`` PASSED (the planner's chunk unchanged), MODIFIED
  (the rest of the last valid chunk) or STOPPED (a comfortable or emergency stop:
  ``source_planner`` ``safety/comfortable_stop`` / ``safety/emergency_stop``);
  ``safety_reason`` the reason codes joined with ``,``; ``instruction`` copied from the
  planner's chunk;
* ``~/output/path`` (``nav_msgs/Path``) of the same trajectory;
* ``~/output/twist`` (``geometry_msgs/TwistStamped``, the rig's base frame): the command due
  now (speed and yaw rate sampled from the executed trajectory,
  :func:`~mm_perception.ros.convert_chunk.command_at`), with every result and every
  ``command_period_s``;
* ``~/debug/markers`` (``MarkerArray``, with ``publish.markers``): the executed path as a
  line strip.

``/diagnostics`` carry the filter's :meth:`SafetyFilter.report` (checks, interventions,
results per status, interventions per reason code, the last intervention) and the node's
counters; latency is measured from the stamp of the input that triggered the output (the
chunk's, or the tracks' for a monitor stop).
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from typing import Any

from mm_perception.core.errors import ConfigError, ConversionError
from mm_perception.planning.safety import SafetyConfig, SafetyFilter, SafetyResult, SafetyStatus
from mm_perception.planning.trajectory import Trajectory
from mm_perception.ros.nodes.base import ManagedNode, sensor_qos
from mm_perception.ros.nodes.health import Level, Status
from mm_perception.ros.nodes.plan_inputs import (
    ODOM,
    TRACKS,
    PlanningInputs,
    instruction_qos,
)
from mm_perception.ros.sensor_decoder import drop_reason

CHUNK = "action_chunk"
#: parameter prefix of the SafetyConfig fields
PREFIX = "safety."


def safety_config_from_params(params: dict[str, Any]) -> SafetyConfig:
    """The :class:`SafetyConfig` of validated node parameters (``safety.<field>`` for every
    field; a field without a parameter keeps its default).

    Raises:
        ConfigError: a combination :class:`SafetyConfig` refuses, naming the parameter.
    """
    values: dict[str, Any] = {}
    for f in fields(SafetyConfig):
        name = PREFIX + f.name
        if name in params:
            value = params[name]
            if isinstance(value, list | tuple):  # a string array (escape_labels)
                value = tuple(value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                value = float(value)
            values[f.name] = value
    try:
        return SafetyConfig(**values)
    except ConfigError as exc:
        # SafetyConfig names its field ("SafetyConfig.x"): name the parameter instead
        raise ConfigError(str(exc).replace("SafetyConfig.", f"parameter {PREFIX}")) from exc


class SafetyFilterNode(ManagedNode):
    """Raw chunks + tracks + odometry + instruction -> filtered chunk, path, twist (see the
    module docstring)."""

    KIND = "safety_filter"

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.rig: Any = None
        self.safety_config: SafetyConfig | None = None
        self.filter: SafetyFilter | None = None
        self.inputs: PlanningInputs | None = None
        #: the trajectory being executed (the last one published)
        self.executing: Trajectory | None = None
        self.last_result: SafetyResult | None = None
        self._pubs: dict[str, Any] = {}
        self._instruction_text = ""
        self._last_chunk_ns: int | None = None
        self._last_timeout_ns: int | None = None
        self._timeout_ns = 0
        self._counts = {"chunks": 0, "published": 0, "monitor_stops": 0, "chunk_timeouts": 0,
                        "no_odometry": 0}

    # ------------------------------------------------------------------ configure
    def configure_node(self, params: dict[str, Any]) -> None:
        import mm_perception_msgs.msg as m
        from geometry_msgs.msg import TwistStamped
        from nav_msgs.msg import Path
        from visualization_msgs.msg import MarkerArray

        from mm_perception.ros.nodes.set_input import load_live_rig

        self.safety_config = safety_config_from_params(params)
        self.rig = load_live_rig(params["rig_file"])
        self._timeout_ns = round(float(params["chunk_timeout_s"]) * 1e9)
        depth = int(params["qos.output_depth"])
        self._pubs = {"chunk": self.publisher(m.ActionChunk, "~/output/action_chunk", depth),
                      "path": self.publisher(Path, "~/output/path", depth),
                      "twist": self.publisher(TwistStamped, "~/output/twist", depth)}
        if params["publish.markers"]:
            self._pubs["markers"] = self.publisher(MarkerArray, "~/debug/markers", depth)

    def health_streams(self) -> dict[str, bool]:
        return {CHUNK: True, TRACKS: True, ODOM: True}

    # ------------------------------------------------------------------ activate
    def activate_node(self) -> None:
        import mm_perception_msgs.msg as m
        from nav_msgs.msg import Odometry
        from std_msgs.msg import String

        assert self.params is not None and self.safety_config is not None
        self.filter = SafetyFilter(self.safety_config)
        self.inputs = PlanningInputs(self.rig, self.drop)
        self.executing = self.last_result = None
        self._instruction_text = ""
        self._last_chunk_ns = self._last_timeout_ns = None
        self._counts = dict.fromkeys(self._counts, 0)
        depth = int(self.params["qos.input_depth"])
        self.subscribe(Odometry, "~/input/odom", self._on_odom,
                       sensor_qos(int(self.params["qos.sensor_depth"])))
        self.subscribe(m.TrackedObjectArray, "~/input/tracks", self._on_tracks, depth)
        self.subscribe(m.ActionChunk, "~/input/action_chunk", self._on_chunk, depth)
        self.inputs.instruction_subscription = self.subscribe(
            String, "~/input/instruction", self._on_instruction, instruction_qos())
        self.every(float(self.params["command_period_s"]), self._on_command_timer)

    def deactivate_node(self) -> None:
        self.inputs = None
        self.executing = None

    def cleanup_node(self) -> None:
        self.filter = self.inputs = self.rig = self.safety_config = None
        self.executing = self.last_result = None
        self._pubs = {}

    # ------------------------------------------------------------------ callbacks
    def _now(self) -> int:
        return int(self.get_clock().now().nanoseconds)

    def _on_odom(self, msg: Any) -> None:
        if self.inputs is not None:
            self.inputs.add_odometry(msg, self.health)

    def _on_instruction(self, msg: Any) -> None:
        if self.inputs is not None and self.health is not None:
            self.inputs.set_instruction(msg, self._now())
            self.health.count("instructions_received")

    def _on_chunk(self, msg: Any) -> None:
        from mm_perception.ros.convert_chunk import chunk_to_trajectory

        if self.inputs is None or self.filter is None or self.health is None:
            return  # a callback racing a deactivate
        self.health.received(CHUNK)
        self._counts["chunks"] += 1
        t0 = time.perf_counter()
        now = self._now()
        self._last_chunk_ns = now
        self._instruction_text = str(msg.instruction)
        trajectory: Trajectory | None
        try:
            trajectory = chunk_to_trajectory(msg)
            stamp = trajectory.stamp_ns
        except (ConversionError, ValueError) as exc:
            self.drop(CHUNK, drop_reason(exc), f"{exc}; checked as no chunk (empty)")
            trajectory, stamp = None, now
        result = self._check(trajectory, now)
        if result is not None:
            self._publish(result, now, t0, stamp)

    def _on_tracks(self, msg: Any) -> None:
        if self.inputs is None or self.filter is None:
            return
        if not self.inputs.add_tracks(msg, self.health):
            return
        if self.executing is None:
            return  # nothing executed yet: nothing to re-check
        t0 = time.perf_counter()
        now = self._now()
        ego = self.inputs.ego()
        if ego is None:
            self._counts["no_odometry"] += 1
            return
        stop = self.filter.monitor(ego, self.inputs.tracks, now, self.inputs.tracks_stamp_ns,
                                   self.inputs.instruction_stamp_ns(now))
        if stop is not None:
            self._counts["monitor_stops"] += 1
            assert self.inputs.tracks_stamp_ns is not None
            self._publish(stop, now, t0, self.inputs.tracks_stamp_ns)

    def _on_command_timer(self) -> None:
        from mm_perception.ros.convert_chunk import command_at, twist_to_msg

        if self.executing is None or self.rig is None or "twist" not in self._pubs:
            return
        now = self._now()
        last = self._last_chunk_ns
        if (last is not None and now - last > self._timeout_ns
                and (self._last_timeout_ns is None
                     or now - self._last_timeout_ns > self._timeout_ns)):
            self._last_timeout_ns = now
            self._counts["chunk_timeouts"] += 1
            self.get_logger().warning(f"no action chunk for {(now - last) / 1e9:.2f} s: "
                                      f"checking as no chunk", throttle_duration_sec=5.0)
            t0 = time.perf_counter()
            result = self._check(None, now)
            if result is not None:
                self._publish(result, now, t0, now)
                return  # _publish sent the twist
        speed, yaw_rate = command_at(self.executing, now)
        self._pubs["twist"].publish(twist_to_msg(speed, yaw_rate, now, self.rig.base_frame))

    # ------------------------------------------------------------------ filter
    def _check(self, trajectory: Trajectory | None, now: int) -> SafetyResult | None:
        """:meth:`SafetyFilter.check` of ``trajectory`` now; None without odometry
        (counted: there is no ego state to check against)."""
        assert self.inputs is not None and self.filter is not None
        ego = self.inputs.ego()
        if ego is None:
            self._counts["no_odometry"] += 1
            self.get_logger().warning("no odometry yet: no ego state to check the chunk "
                                      "against; nothing published", throttle_duration_sec=5.0)
            return None
        return self.filter.check(trajectory, ego, self.inputs.tracks, now,
                                 self.inputs.tracks_stamp_ns,
                                 self.inputs.instruction_stamp_ns(now))

    def _publish(self, result: SafetyResult, now: int, t0: float, input_stamp_ns: int) -> None:
        from mm_perception.ros.convert_chunk import (
            command_at,
            safety_reason,
            safety_status_code,
            trajectory_poses,
            trajectory_to_chunk,
            trajectory_to_path,
            twist_to_msg,
        )
        from mm_perception.ros.markers import path_to_markers

        assert self.rig is not None and self.health is not None
        traj = result.trajectory
        self.executing = traj
        self.last_result = result
        self._pubs["chunk"].publish(trajectory_to_chunk(
            traj, safety_status_code(result.status), safety_reason(result.reasons),
            self._instruction_text))
        self._pubs["path"].publish(trajectory_to_path(traj))
        speed, yaw_rate = command_at(traj, now)
        self._pubs["twist"].publish(twist_to_msg(speed, yaw_rate, now, self.rig.base_frame))
        markers = self._pubs.get("markers")
        if markers is not None:
            batch = path_to_markers(trajectory_poses(traj), traj.stamp_ns, traj.frame_id)
            markers.publish(batch.array)
        self._counts["published"] += 1
        self.report_timing((time.perf_counter() - t0) * 1e3, input_stamp_ns)

    # ------------------------------------------------------------------ status
    def extra_statuses(self) -> list[Status]:
        values: list[tuple[str, str]] = [(k, str(v)) for k, v in self._counts.items()]
        level, message = Level.OK, "no chunk yet"
        if self.filter is not None:
            report = self.filter.report()
            values += [("checks", str(report["checks"])),
                       ("interventions", str(report["interventions"]))]
            values += [(f"status.{k}", str(v)) for k, v in report["status"].items()]
            values += [(f"reason.{k}", str(v)) for k, v in report["reasons"].items()]
            values.append(("last_intervention", json.dumps(report["last_intervention"])))
            message = (f"{report['checks']} checks, {report['interventions']} interventions")
        result = self.last_result
        if result is not None:
            values += [("last_status", result.status.value),
                       ("last_reasons", ",".join(result.reasons))]
            if (result.status is SafetyStatus.EMERGENCY_STOP
                    or "collision_unavoidable" in result.reasons):
                level = Level.ERROR
            elif result.intervened:
                level = Level.WARN
            message += f"; last: {result.status.value}"
            if result.reasons:
                message += f" ({', '.join(result.reasons)})"
        if self._counts["no_odometry"]:
            level = max(level, Level.ERROR if self.executing is None else Level.WARN)
            message += f"; {self._counts['no_odometry']} inputs not checked: no odometry"
        return [Status(f"{self.get_name()}: safety", level, message, tuple(values))]


def main(args: list[str] | None = None) -> None:
    """Console entry point: run one safety_filter node, configured and activated, until
    Ctrl-C."""
    from mm_perception.ros.nodes.launcher import run_single_node

    run_single_node(SafetyFilterNode, args)


__all__ = ["SafetyFilterNode", "main", "safety_config_from_params"]
