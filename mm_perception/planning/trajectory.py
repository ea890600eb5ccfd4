"""The planner's output: a time-stamped action chunk of planar poses and speeds (numpy only).

A :class:`Trajectory` is what every planner (the VLA policy, the rule-based expert, the
safety filter's fallbacks) hands to the controller. Its constructor checks shapes and dtypes
only and accepts NaN/Inf values on purpose: deciding whether a trajectory may be executed
is the job of :class:`mm_perception.planning.safety.SafetyFilter`, which must see exactly
what the planner produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from mm_perception.core.geometry import wrap_angle

F64 = npt.NDArray[np.float64]

_NS_PER_S = 1_000_000_000


def _frozen_f64(value: Any, name: str, shape: tuple[int | None, ...]) -> F64:
    """``value`` as a read-only float64 copy of the given shape (``None`` = any length).

    Only real numbers are accepted (ints are widened); NaN/Inf pass through unchanged.
    """
    raw = np.asarray(value)
    if raw.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {raw.dtype}")
    arr = np.array(raw, dtype=np.float64, copy=True)  # own the buffer before freezing it
    if arr.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(arr.shape, shape, strict=True)):
        expect = "(" + ", ".join("H" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {expect}, got {arr.shape}")
    arr.setflags(write=False)
    return arr


class TrajectorySample(NamedTuple):
    """Poses and speeds of a trajectory at query times (see :meth:`Trajectory.sample`).

    Attributes:
        xy: ``(N, 2)`` float64 positions, metres, in the trajectory's ``frame_id``.
        yaw: ``(N,)`` float64 headings about z, radians in ``[-pi, pi)``, ``frame_id``.
        speed: ``(N,)`` float64 forward speeds, m/s.
    """

    xy: F64
    yaw: F64
    speed: F64


@dataclass(frozen=True)
class Trajectory:
    """An action chunk of ``H`` planar samples.

    Attributes:
        stamp_ns: when the trajectory was planned (int ns, same clock as the inputs);
            sample ``i`` is due at ``stamp_ns + t_s[i] * 1e9``.
        frame_id: world/odom frame of ``xy`` and ``yaw`` (the ego state's ``frame_id``).
        t_s: ``(H,)`` float64 seconds after ``stamp_ns``; should be strictly increasing and
            ``>= 0`` (checked by the safety filter, not here).
        xy: ``(H, 2)`` float64 positions of ``base_link`` in ``frame_id``, metres.
        yaw: ``(H,)`` float64 headings of ``base_link`` about z in ``frame_id``, radians.
        speed: ``(H,)`` float64 forward speeds, m/s (``>= 0``: no reversing).
        source: name of the planner that produced it (for diagnostics).

    Raises:
        ValueError: a wrong shape or dtype, ``H == 0``, or a negative stamp.
        TypeError: ``stamp_ns`` is not an int.
    """

    stamp_ns: int
    frame_id: str
    t_s: F64
    xy: F64
    yaw: F64
    speed: F64
    source: str = "unknown"

    def __post_init__(self) -> None:
        if isinstance(self.stamp_ns, bool) or not isinstance(self.stamp_ns, int | np.integer):
            raise TypeError(f"stamp_ns must be int nanoseconds, got "
                            f"{type(self.stamp_ns).__name__}")
        if self.stamp_ns < 0:
            raise ValueError(f"stamp_ns must be >= 0 ns, got {self.stamp_ns}")
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))
        t_s = _frozen_f64(self.t_s, "t_s", (None,))
        horizon = t_s.shape[0]
        if horizon == 0:
            raise ValueError("a trajectory needs at least one sample (t_s is empty)")
        object.__setattr__(self, "t_s", t_s)
        object.__setattr__(self, "xy", _frozen_f64(self.xy, "xy", (horizon, 2)))
        object.__setattr__(self, "yaw", _frozen_f64(self.yaw, "yaw", (horizon,)))
        object.__setattr__(self, "speed", _frozen_f64(self.speed, "speed", (horizon,)))

    def __len__(self) -> int:
        return int(self.t_s.shape[0])

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last sample (``t_s[-1] - t_s[0]``; NaN stays NaN)."""
        return float(self.t_s[-1] - self.t_s[0])

    def is_finite(self) -> bool:
        """True when every time, position, heading and speed is finite."""
        return bool(np.isfinite(self.t_s).all() and np.isfinite(self.xy).all()
                    and np.isfinite(self.yaw).all() and np.isfinite(self.speed).all())

    def is_time_valid(self) -> bool:
        """True when ``t_s`` is finite, ``>= 0`` and strictly increasing."""
        t = self.t_s
        return bool(np.isfinite(t).all() and t[0] >= 0.0 and (np.diff(t) > 0.0).all())

    def sample(self, t_s: Any) -> TrajectorySample:
        """Poses and speeds at ``t_s`` (seconds after ``stamp_ns``), for a controller.

        Position and speed are interpolated linearly, heading along the shortest turn
        between samples. Times before the first or after the last sample are clamped to
        that sample (the trajectory holds its end state, it does not extrapolate).

        Args:
            t_s: scalar or ``(N,)`` array-like of query times, seconds after ``stamp_ns``.

        Returns:
            A :class:`TrajectorySample` with ``N`` rows (1 for a scalar query).

        Raises:
            ValueError: the trajectory is not finite or its times are not increasing
                (only a trajectory that passed the safety filter should be sampled).
        """
        if not (self.is_finite() and self.is_time_valid()):
            raise ValueError(f"cannot sample trajectory from {self.source!r}: it has "
                             "non-finite values or non-increasing times")
        query = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        if query.ndim != 1:
            raise ValueError(f"t_s must be a scalar or 1-D, got shape {query.shape}")
        x = np.interp(query, self.t_s, self.xy[:, 0])
        y = np.interp(query, self.t_s, self.xy[:, 1])
        # unwrap first so that interpolating across +-pi turns the short way round
        yaw = wrap_angle(np.interp(query, self.t_s, np.unwrap(self.yaw)))
        speed = np.interp(query, self.t_s, self.speed)
        return TrajectorySample(np.stack([x, y], axis=1), np.asarray(yaw, np.float64), speed)

    def tail_from(self, stamp_ns: int) -> Trajectory | None:
        """The part still to execute at ``stamp_ns``, re-stamped, or None when it has ended.

        The tail starts at the last sample due at or before ``stamp_ns`` (the one the
        controller is tracking from) and keeps the original samples unchanged, so every
        per-interval limit the full trajectory met still holds for the tail. Its
        ``stamp_ns`` is that sample's due time and its ``t_s`` starts at 0. A
        ``stamp_ns`` before the first sample returns the trajectory itself.

        Returns:
            The tail, or None when the last sample is due before ``stamp_ns`` or the
            times are not valid (see :meth:`is_time_valid`).
        """
        if not self.is_time_valid():
            return None
        elapsed_s = (stamp_ns - self.stamp_ns) / _NS_PER_S
        if elapsed_s <= self.t_s[0]:
            return self
        if elapsed_s > self.t_s[-1]:
            return None
        first = int(np.searchsorted(self.t_s, elapsed_s, side="right")) - 1
        t0 = float(self.t_s[first])
        return Trajectory(
            stamp_ns=self.stamp_ns + round(t0 * _NS_PER_S),
            frame_id=self.frame_id,
            t_s=self.t_s[first:] - t0,
            xy=self.xy[first:],
            yaw=self.yaw[first:],
            speed=self.speed[first:],
            source=self.source,
        )


__all__ = ["Trajectory", "TrajectorySample"]
