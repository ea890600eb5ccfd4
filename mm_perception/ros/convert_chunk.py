"""Planner :class:`~mm_perception.planning.trajectory.Trajectory` <-> ROS messages.

* :func:`trajectory_to_chunk` / :func:`chunk_to_trajectory`:
  ``mm_perception_msgs/msg/ActionChunk`` (see ``interfaces/mm_perception_msgs/msg/
  ActionChunk.msg``). ``header.stamp`` = the trajectory's ``stamp_ns`` (the planning
  instant: the stamp of the ego state the chunk was planned from), ``header.frame_id`` = its
  ``frame_id`` (the world / odometry frame the planners and the safety filter work in: the
  chunk is *not* re-expressed in ``base_link``, which would need the ego pose at the stamp
  to be read back). Sample ``i``: ``time_from_start[i]`` = ``t_s[i]`` (rounded to whole ns),
  ``poses[i].position`` = ``(x, y, 0)`` m, ``poses[i].orientation`` = the yaw as a rotation
  about z, ``speeds_mps[i]`` = the speed (float32). Back, the yaw is the heading of the
  quaternion, wrapped to ``(-pi, pi]``; the z, roll and pitch of a pose are not read.

  Values are carried as they are, NaN and Inf included (a planner's raw output must reach
  the safety filter exactly as planned, and it is the filter that rejects it): only what the
  message cannot hold is refused (a non-finite or out-of-range time, a negative stamp) with a
  :class:`~mm_perception.core.errors.ConversionError`. A zero or non-finite quaternion reads
  back as a NaN yaw (the filter then rejects the chunk as ``non_finite``).
* :func:`safety_status_code`: the filter's :class:`~mm_perception.planning.safety.
  SafetyStatus` -> ``ActionChunk.PASSED`` / ``MODIFIED`` (the rest of the last valid
  chunk) / ``STOPPED`` (comfortable or emergency stop; which one is in ``source_planner``:
  ``safety/comfortable_stop`` or ``safety/emergency_stop``); :func:`safety_reason`: the
  reason codes joined with ``,``.
* :func:`trajectory_to_path`: ``nav_msgs/msg/Path`` with one ``PoseStamped`` per sample,
  stamped at its due time ``stamp_ns + t_s[i]``.
* :func:`command_at` / :func:`twist_to_msg`: the command due now (speed and yaw rate sampled
  from a trajectory) as ``geometry_msgs/msg/TwistStamped`` in ``base_link``.

The message packages are imported lazily: this module imports without ROS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConversionError
from mm_perception.core.geometry import wrap_angle
from mm_perception.planning.safety import SafetyStatus
from mm_perception.planning.trajectory import Trajectory
from mm_perception.ros.message_factory import NS_PER_S, RclpyFactory, header, stamp_to_ns

F64 = npt.NDArray[np.float64]

#: ``builtin_interfaces/Duration.sec`` is int32
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
#: half the time step used for the yaw rate of :func:`command_at`, s
YAW_RATE_HALF_STEP_S = 0.05

_FACTORY = RclpyFactory()


def _msgs() -> Any:
    import mm_perception_msgs.msg as m

    return m


def duration_to_msg(t_s: float, what: str = "time") -> Any:
    """Seconds -> ``builtin_interfaces/msg/Duration`` (whole ns; may be negative).

    Raises:
        ConversionError: ``t_s`` is not finite or outside the int32 seconds range.
    """
    from builtin_interfaces.msg import Duration

    if not math.isfinite(t_s):
        raise ConversionError(f"{what} {t_s} s is not finite: a Duration cannot hold it")
    sec, nanosec = divmod(round(t_s * NS_PER_S), NS_PER_S)
    if not _INT32_MIN <= sec <= _INT32_MAX:
        raise ConversionError(f"{what} {t_s} s is outside the int32 seconds range of "
                              f"builtin_interfaces/Duration")
    return Duration(sec=int(sec), nanosec=int(nanosec))


def duration_from_msg(msg: Any) -> float:
    """``builtin_interfaces/Duration`` -> seconds (``sec + nanosec * 1e-9``).

    Raises:
        ConversionError: ``nanosec`` outside ``[0, 1e9)`` or non-integer fields.
    """
    try:
        sec, nanosec = int(msg.sec), int(msg.nanosec)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ConversionError(f"duration {msg!r} has no integer sec/nanosec") from exc
    if not 0 <= nanosec < NS_PER_S:
        raise ConversionError(f"duration nanosec must be in [0, 1e9), got {nanosec}")
    return (sec * NS_PER_S + nanosec) / NS_PER_S


def _yaw_quaternion(yaw: float) -> tuple[float, float]:
    """``(z, w)`` of the rotation by ``yaw`` (rad) about z; NaN for a non-finite yaw."""
    if not math.isfinite(yaw):
        return math.nan, math.nan
    return math.sin(yaw / 2.0), math.cos(yaw / 2.0)


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Heading (rad, ``(-pi, pi]``) of a quaternion ``(x, y, z, w)`` (need not be
    normalised); NaN for a zero or non-finite quaternion."""
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = float(np.linalg.norm(q)) if np.all(np.isfinite(q)) else math.nan
    if not norm > 1e-12:
        return math.nan
    x, y, z, w = (float(v) for v in q / norm)
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def safety_status_code(status: SafetyStatus) -> int:
    """:class:`SafetyStatus` -> the ``ActionChunk`` constant (PASSED, MODIFIED, STOPPED)."""
    m = _msgs().ActionChunk
    if status is SafetyStatus.PASSED:
        return int(m.PASSED)
    if status is SafetyStatus.LAST_VALID:
        return int(m.MODIFIED)
    return int(m.STOPPED)


def safety_reason(reasons: Sequence[str]) -> str:
    """Reason codes (:data:`~mm_perception.planning.safety.REASON_CODES`) -> the
    ``safety_reason`` field: joined with ``,`` in check order (``""`` for none)."""
    return ",".join(reasons)


def trajectory_to_chunk(trajectory: Trajectory, safety_status: int = 0,
                        reason: str = "", instruction: str = "") -> Any:
    """A trajectory -> ``mm_perception_msgs/msg/ActionChunk`` (see the module docstring).

    Args:
        trajectory: ``H`` samples in its world frame (``t_s`` s, ``xy`` m, ``yaw`` rad,
            ``speed`` m/s); NaN / Inf positions, yaws and speeds are carried as they are.
        safety_status: ``ActionChunk.PASSED`` (0, a raw planner chunk), ``MODIFIED`` or
            ``STOPPED``.
        reason: the ``safety_reason`` text (empty when passed).
        instruction: the instruction the chunk answers.

    Raises:
        ConversionError: a non-finite or out-of-range ``t_s``, or a bad stamp.
    """
    from geometry_msgs.msg import Point, Pose, Quaternion

    m = _msgs()
    with np.errstate(over="ignore"):  # beyond float32: +-Inf, as the filter should see it
        speeds = np.asarray(trajectory.speed, dtype=np.float32)
    times = [duration_to_msg(float(t), f"t_s[{i}]") for i, t in enumerate(trajectory.t_s)]
    poses = []
    for (x, y), yaw in zip(trajectory.xy, trajectory.yaw, strict=True):
        qz, qw = _yaw_quaternion(float(yaw))
        poses.append(Pose(position=Point(x=float(x), y=float(y), z=0.0),
                          orientation=Quaternion(x=0.0, y=0.0, z=qz, w=qw)))
    return m.ActionChunk(
        header=header(trajectory.stamp_ns, trajectory.frame_id, _FACTORY),
        time_from_start=times, poses=poses,
        speeds_mps=[float(v) for v in speeds],
        source_planner=str(trajectory.source), safety_status=int(safety_status),
        safety_reason=str(reason), instruction=str(instruction))


def chunk_to_trajectory(msg: Any) -> Trajectory:
    """``ActionChunk`` -> :class:`Trajectory` in ``header.frame_id``, stamped
    ``header.stamp``, ``source`` = ``source_planner`` (the inverse of
    :func:`trajectory_to_chunk`; non-finite values are kept for the safety filter to judge).

    Raises:
        ConversionError: no samples, arrays of different lengths, a bad stamp or duration.
    """
    n = len(msg.poses)
    if n == 0:
        raise ConversionError("action chunk has no samples (length 0)")
    if len(msg.time_from_start) != n or len(msg.speeds_mps) != n:
        raise ConversionError(f"action chunk arrays differ in length: {len(msg.time_from_start)}"
                              f" times, {n} poses, {len(msg.speeds_mps)} speeds")
    t_s = np.array([duration_from_msg(d) for d in msg.time_from_start], dtype=np.float64)
    xy = np.array([[float(p.position.x), float(p.position.y)] for p in msg.poses],
                  dtype=np.float64)
    yaw = np.array([yaw_from_quaternion(float(p.orientation.x), float(p.orientation.y),
                                        float(p.orientation.z), float(p.orientation.w))
                    for p in msg.poses], dtype=np.float64)
    speed = np.asarray(msg.speeds_mps, dtype=np.float64).reshape(n)
    try:
        return Trajectory(stamp_ns=stamp_to_ns(msg.header.stamp),
                          frame_id=str(msg.header.frame_id), t_s=t_s, xy=xy, yaw=yaw,
                          speed=speed, source=str(msg.source_planner))
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"action chunk is not a trajectory: {exc}") from exc


def trajectory_poses(trajectory: Trajectory) -> F64:
    """``(H, 3)`` float64 ``x, y`` (m) and ``yaw`` (rad) of the samples, the trajectory's
    frame (the input of :func:`~mm_perception.ros.markers.path_to_markers`)."""
    return np.column_stack([trajectory.xy, trajectory.yaw])


def trajectory_to_path(trajectory: Trajectory) -> Any:
    """A trajectory -> ``nav_msgs/msg/Path`` in its frame: ``header.stamp`` = ``stamp_ns``,
    one ``PoseStamped`` per sample stamped at its due time ``stamp_ns + t_s[i]``
    (``position`` = ``(x, y, 0)`` m, ``orientation`` = yaw about z).

    Raises:
        ConversionError: non-finite values or a due time before 0 (only a trajectory the
            safety filter returned should be published as a path).
    """
    from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
    from nav_msgs.msg import Path

    if not trajectory.is_finite():
        raise ConversionError(f"trajectory from {trajectory.source!r} is not finite: no path")
    out = Path(header=header(trajectory.stamp_ns, trajectory.frame_id, _FACTORY))
    for t, (x, y), yaw in zip(trajectory.t_s, trajectory.xy, trajectory.yaw, strict=True):
        due = trajectory.stamp_ns + round(float(t) * NS_PER_S)
        if due < 0:
            raise ConversionError(f"sample at t = {t} s is due before time 0")
        qz, qw = _yaw_quaternion(float(yaw))
        out.poses.append(PoseStamped(
            header=header(due, trajectory.frame_id, _FACTORY),
            pose=Pose(position=Point(x=float(x), y=float(y), z=0.0),
                      orientation=Quaternion(x=0.0, y=0.0, z=qz, w=qw))))
    return out


def command_at(trajectory: Trajectory, now_ns: int) -> tuple[float, float]:
    """The command due at ``now_ns``: forward speed (m/s) and yaw rate (rad/s, about z).

    The speed is sampled linearly (:meth:`Trajectory.sample`; before the first / after the
    last sample the end value holds); the yaw rate is the heading change over
    ``2 * YAW_RATE_HALF_STEP_S`` around now (the shortest turn), 0 once the trajectory ended.

    Raises:
        ValueError: the trajectory is not finite or its times are not increasing.
    """
    t = (now_ns - trajectory.stamp_ns) / NS_PER_S
    h = YAW_RATE_HALF_STEP_S
    speed = float(trajectory.sample(t).speed[0])
    t0, t1 = max(t - h, float(trajectory.t_s[0])), min(t + h, float(trajectory.t_s[-1]))
    if t1 <= t0:
        return speed, 0.0
    ends = trajectory.sample(np.array([t0, t1]))
    dyaw = float(wrap_angle(ends.yaw[1] - ends.yaw[0]))
    return speed, dyaw / (t1 - t0)


def twist_to_msg(speed_mps: float, yaw_rate_rps: float, stamp_ns: int, frame_id: str) -> Any:
    """``geometry_msgs/msg/TwistStamped`` with ``linear.x`` = ``speed_mps`` and
    ``angular.z`` = ``yaw_rate_rps`` in ``frame_id`` (the body frame, ``base_link``)."""
    from geometry_msgs.msg import Twist, TwistStamped, Vector3

    return TwistStamped(header=header(stamp_ns, frame_id, _FACTORY),
                        twist=Twist(linear=Vector3(x=float(speed_mps), y=0.0, z=0.0),
                                    angular=Vector3(x=0.0, y=0.0, z=float(yaw_rate_rps))))


__all__ = [
    "YAW_RATE_HALF_STEP_S",
    "chunk_to_trajectory",
    "command_at",
    "duration_from_msg",
    "duration_to_msg",
    "safety_reason",
    "safety_status_code",
    "trajectory_poses",
    "trajectory_to_chunk",
    "trajectory_to_path",
    "twist_to_msg",
    "yaw_from_quaternion",
]
