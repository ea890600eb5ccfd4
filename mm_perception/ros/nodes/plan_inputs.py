"""The inputs the ``planner`` and ``safety_filter`` nodes share: odometry, tracks and the
instruction, held as the core types the planning library takes.

* Odometry (``nav_msgs/Odometry``) goes into an :class:`OdometryInput` (the rig's odometry
  time offset applied, bad messages dropped with a reason). The ego state a plan or a check
  uses is the newest one (:meth:`PlanningInputs.ego`); its ``frame_id`` (``odom``) is the
  world frame of everything downstream: the planners' trajectories, the safety filter's
  tracks, the map lanes.
* Tracks (``TrackedObjectArray``) arrive in the rig's base frame at their stamp (the
  ``tracker`` node's output) or already in the odometry frame. Base-frame tracks are moved
  into the odometry frame with the odometry pose at their stamp (interpolated, or
  extrapolated by at most 100 ms); when the odometry does not cover the stamp the array is
  dropped (``no_pose``), as is an array in any other frame (``frame``), a malformed one and
  one not newer than the previous (``out_of_order``). The kept array's stamp is the
  perception stamp the safety filter judges freshness by.
* The instruction (``std_msgs/String``, reliable + transient local, so a latched instruction
  published before the node started arrives) is kept as received (any bytes, any length: the
  planners clean it, :func:`~mm_perception.planning.instructions.clean_instruction`). Its
  stamp for the safety filter (a ``String`` has no header): a latched topic states the
  instruction in force for as long as its publisher lives, so while at least one publisher
  of the topic is matched the instruction counts as re-issued now (as the closed loop
  re-issues it every control period); once every publisher is gone it ages from the time
  the last message arrived, and goes stale ``instruction_timeout_s`` later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mm_perception.core.calibration import Rig
from mm_perception.core.errors import ConversionError, EgoMotionError
from mm_perception.core.objects import transform_tracks
from mm_perception.core.types import EgoState, Track
from mm_perception.ros.nodes.health import HealthMonitor
from mm_perception.ros.nodes.set_input import OdometryInput
from mm_perception.ros.sensor_decoder import drop_reason

#: health stream names
ODOM, TRACKS, INSTRUCTION = "odom", "tracks", "instruction"


def instruction_qos() -> Any:
    """Reliable, transient-local, depth 1: a late subscriber still gets the latched
    instruction."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class PlanningInputs:
    """Odometry, world-frame tracks and the instruction (see the module docstring).

    Args:
        rig: the rig (its base frame, its odometry sensor's time offset).
        drop: the node's :meth:`~mm_perception.ros.nodes.base.ManagedNode.drop`.
    """

    def __init__(self, rig: Rig, drop: Callable[[str, str, str], None]) -> None:
        self.base_frame = rig.base_frame
        self.odometry = OdometryInput(rig, drop, ODOM)
        self._drop = drop
        #: live tracks in the odometry frame at :attr:`tracks_stamp_ns` (DELETED included:
        #: the planning library skips them)
        self.tracks: tuple[Track, ...] = ()
        #: stamp of the newest kept tracks array, ns (None: none yet)
        self.tracks_stamp_ns: int | None = None
        #: the instruction text as received (None: none yet)
        self.instruction: str | None = None
        #: node-clock time the instruction arrived, ns
        self.instruction_received_ns: int | None = None
        #: the instruction subscription (asked for its publisher count)
        self.instruction_subscription: Any = None

    # ------------------------------------------------------------------ odometry
    def add_odometry(self, msg: Any, health: HealthMonitor | None) -> bool:
        """Take one ``nav_msgs/Odometry``; False when it was dropped."""
        return self.odometry.add(msg, health)

    def ego(self) -> EgoState | None:
        """The newest odometry state (``T_world_base`` in the odometry frame), or None."""
        span = self.odometry.buffer.span()
        if span is None:
            return None
        return self.odometry.buffer.state_at(span[1])

    @property
    def world_frame(self) -> str | None:
        """The odometry's frame (None before the first odometry message)."""
        return self.odometry.buffer.frame_id

    # ------------------------------------------------------------------ tracks
    def add_tracks(self, msg: Any, health: HealthMonitor | None) -> bool:
        """Take one ``TrackedObjectArray`` (counted as received on ``health``); False when
        it was dropped (reason counted and logged through the node's drop)."""
        from mm_perception.ros.convert_objects import tracks_from_msg
        from mm_perception.ros.message_factory import stamp_to_ns

        if health is not None:
            health.received(TRACKS)
        try:
            stamp = stamp_to_ns(msg.header.stamp)
            tracks = tracks_from_msg(msg)
        except (ConversionError, ValueError) as exc:
            self._drop(TRACKS, drop_reason(exc), str(exc))
            return False
        if self.tracks_stamp_ns is not None and stamp <= self.tracks_stamp_ns:
            self._drop(TRACKS, "out_of_order", f"stamp {stamp} is not after the previous "
                                               f"{self.tracks_stamp_ns}")
            return False
        frame = str(msg.header.frame_id)
        world = self.world_frame
        if world is None:
            self._drop(TRACKS, "no_pose", "no odometry yet: tracks cannot be placed in the "
                                          "world frame")
            return False
        if frame == self.base_frame:
            try:
                T_world_base = self.odometry.buffer.pose_at(stamp)
            except EgoMotionError as exc:
                self._drop(TRACKS, "no_pose", f"no odometry pose at the tracks' stamp "
                                              f"{stamp}: {exc}")
                return False
            tracks = transform_tracks(tracks, T_world_base, world)
        elif frame != world:
            self._drop(TRACKS, "frame", f"tracks in {frame!r}; expected the base frame "
                                        f"{self.base_frame!r} or the odometry frame {world!r}")
            return False
        self.tracks = tuple(tracks)
        self.tracks_stamp_ns = stamp
        return True

    # ------------------------------------------------------------------ instruction
    def set_instruction(self, msg: Any, now_ns: int) -> None:
        """Take one ``std_msgs/String`` at node time ``now_ns``."""
        self.instruction = str(msg.data)
        self.instruction_received_ns = int(now_ns)

    def instruction_publishers(self) -> int:
        """Publishers matched on the instruction topic now (0 without a subscription)."""
        sub = self.instruction_subscription
        return 0 if sub is None else int(sub.get_publisher_count())

    def instruction_stamp_ns(self, now_ns: int) -> int | None:
        """The instruction's stamp for the safety filter at ``now_ns``: None before the
        first instruction; ``now_ns`` while its latched publisher lives; else the time it
        arrived (module docstring)."""
        if self.instruction_received_ns is None:
            return None
        if self.instruction_publishers() > 0:
            return int(now_ns)
        return self.instruction_received_ns


__all__ = ["INSTRUCTION", "ODOM", "TRACKS", "PlanningInputs", "instruction_qos"]
