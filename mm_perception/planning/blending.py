"""Cross-fading of action chunks: the reference a controller tracks never jumps.

A VLA planner emits a new chunk (a world-frame :class:`Trajectory`) every few hundred
milliseconds, each planned from a slightly different ego state, so two consecutive chunks
disagree a little about where the ego should be *now*. Switching the reference abruptly would
turn that disagreement into a step in the controller's input (a steering / braking kick).
:class:`ChunkBlender` instead builds, at each arrival, a reference that starts exactly on the
old chunk and reaches the new chunk ``blend_s`` seconds later:

``r(t) = (1 - w(t)) * old(t) + w(t) * new(t)``,  ``w(t) = smoothstep((t - now) / blend_s)``

for positions and speeds, and ``yaw_old + w * wrap(yaw_new - yaw_old)`` for headings (the
short way round). The smoothstep weight (``3u^2 - 2u^3``) has zero slope at both ends, so
the reference's velocity does not jump either.

numpy only; times are int nanoseconds on the caller's clock (simulated or real).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import wrap_angle
from mm_perception.planning.trajectory import Trajectory

F64 = npt.NDArray[np.float64]

_NS_PER_S = 1_000_000_000


def _config_number(name: str, value: Any, allow_zero: bool) -> float:
    """``value`` as a finite float ``> 0`` (``>= 0`` with ``allow_zero``), else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"ChunkBlender.{name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out) or out < 0.0 or (out == 0.0 and not allow_zero):
        raise ConfigError(f"ChunkBlender.{name} must be finite and "
                          f"{'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return out


def smoothstep(u: npt.ArrayLike) -> F64:
    """Blend weight ``3u^2 - 2u^3`` of ``u`` clipped to ``[0, 1]`` (0 -> 0, 1 -> 1, flat at
    both ends). ``(N,)`` float64 in, ``(N,)`` float64 out."""
    c = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
    return np.asarray(c * c * (3.0 - 2.0 * c), dtype=np.float64)


def _check_executable(traj: Trajectory) -> None:
    """Only trajectories that passed the safety filter reach the controller: say so loudly."""
    if not traj.is_finite():
        raise ValueError(f"chunk from {traj.source!r} has NaN/Inf values: only chunks that "
                         "passed the SafetyFilter may be executed")
    if not traj.is_time_valid():
        raise ValueError(f"chunk from {traj.source!r} has negative or non-increasing t_s: "
                         "only chunks that passed the SafetyFilter may be executed")
    if bool((traj.speed < 0.0).any()):
        raise ValueError(f"chunk from {traj.source!r} has negative speeds (no reversing)")


def blend_chunks(old: Trajectory, new: Trajectory, now_ns: int, blend_s: float,
                 grid_dt_s: float) -> Trajectory:
    """The reference that cross-fades from ``old`` to ``new`` over ``[now, now + blend_s]``.

    Args:
        old: the chunk being executed (world frame, finite, increasing times).
        new: the arriving chunk (same frame).
        now_ns: arrival time (int ns, the clock of the stamps); the blend starts here.
        blend_s: cross-fade duration, s (> 0).
        grid_dt_s: spacing of the samples inside the blend window, s (> 0); the blend is
            evaluated exactly there and at every sample time of either chunk inside the
            window, linearly in between (use the controller period or finer).

    Returns:
        A trajectory stamped ``now_ns`` in ``new.frame_id``: at ``t = 0`` exactly
        ``old.sample(now)``, from ``t = blend_s`` on exactly ``new``'s samples, and ending
        with ``new`` (when ``new`` ends inside the window the blend is cut there, short of
        ``w = 1``). ``new`` itself when it has already ended at ``now_ns``.
    """
    new_off_s = (new.stamp_ns - now_ns) / _NS_PER_S   # new's t = 0 relative to now
    old_off_s = (old.stamp_ns - now_ns) / _NS_PER_S
    new_end_s = float(new.t_s[-1]) + new_off_s
    if new_end_s <= 0.0:
        return new
    window = np.append(np.arange(0.0, blend_s, grid_dt_s), blend_s)
    old_rel = old.t_s + old_off_s
    new_rel = new.t_s + new_off_s
    times = np.concatenate([window, old_rel[(old_rel > 0.0) & (old_rel < blend_s)],
                            new_rel[new_rel > 0.0], [new_end_s]])
    times = times[times <= new_end_s]
    # integer nanoseconds make the grid exactly strictly increasing (no float near-duplicates)
    t_ns = np.unique(np.round(times * _NS_PER_S).astype(np.int64))
    t_s = t_ns.astype(np.float64) / _NS_PER_S
    a = old.sample(t_s - old_off_s)
    b = new.sample(t_s - new_off_s)
    w = smoothstep(t_s / blend_s)
    xy = (1.0 - w)[:, None] * a.xy + w[:, None] * b.xy
    speed = (1.0 - w) * a.speed + w * b.speed
    yaw = wrap_angle(a.yaw + w * wrap_angle(b.yaw - a.yaw))
    return Trajectory(stamp_ns=now_ns, frame_id=new.frame_id, t_s=t_s, xy=xy,
                      yaw=np.asarray(yaw, dtype=np.float64), speed=speed,
                      source=f"blend:{new.source}")


class ChunkBlender:
    """Holds the reference being executed and merges arriving chunks into it.

    :meth:`submit` takes the first chunk (or one arriving after the current reference has
    ended) as is, cross-fades any other newer chunk in (:func:`blend_chunks`), and ignores a
    chunk stamped older than the newest accepted one (a late, out-of-order delivery).

    Args:
        blend_s: cross-fade duration, s (>= 0; 0 switches at once, for comparisons).
        grid_dt_s: sample spacing inside the blend window, s (> 0).

    Raises:
        ConfigError: a non-number, non-finite or out-of-range argument.
    """

    def __init__(self, blend_s: float = 0.5, grid_dt_s: float = 0.05) -> None:
        self.blend_s = _config_number("blend_s", blend_s, allow_zero=True)
        self.grid_dt_s = _config_number("grid_dt_s", grid_dt_s, allow_zero=False)
        self.reset()

    def reset(self) -> None:
        """Drop the reference, the newest stamp and the counters (e.g. a new episode)."""
        self._reference: Trajectory | None = None
        self._latest_stamp_ns: int | None = None
        self._counts = {"received": 0, "taken": 0, "blended": 0, "ignored": 0, "rejected": 0}

    @property
    def reference(self) -> Trajectory | None:
        """The reference to track (world frame), or None before the first chunk."""
        return self._reference

    def counts(self) -> dict[str, int]:
        """Chunks received, taken as is, blended, ignored (stale) and rejected (invalid)."""
        return dict(self._counts)

    def submit(self, traj: Trajectory, now_ns: int, immediate: bool = False) -> Trajectory:
        """Merge a chunk that passed the safety filter into the reference.

        Args:
            traj: the new chunk, world frame (the ego state's ``frame_id``).
            now_ns: arrival time (int ns); the blend starts here.
            immediate: take ``traj`` at once, without blending (a safety stop must not be
                eased in over ``blend_s``).

        Returns:
            The reference now in force (unchanged when ``traj`` was ignored).

        Raises:
            ValueError: ``traj`` has NaN/Inf, bad times or negative speeds (it did not come
                through the safety filter), or is in another frame than the reference.
            TypeError: ``now_ns`` is not an int.
        """
        if isinstance(now_ns, bool) or not isinstance(now_ns, int | np.integer):
            raise TypeError(f"now_ns must be int nanoseconds, got {type(now_ns).__name__}")
        now_ns = int(now_ns)
        self._counts["received"] += 1
        try:
            _check_executable(traj)
            if self._reference is not None and traj.frame_id != self._reference.frame_id:
                raise ValueError(f"chunk frame {traj.frame_id!r} differs from the reference "
                                 f"frame {self._reference.frame_id!r}; call reset() when the "
                                 "world frame changes")
        except ValueError:
            self._counts["rejected"] += 1
            raise
        if self._latest_stamp_ns is not None and traj.stamp_ns < self._latest_stamp_ns:
            self._counts["ignored"] += 1
            assert self._reference is not None  # a stamp is only kept with a reference
            return self._reference
        self._latest_stamp_ns = traj.stamp_ns
        old = self._reference
        old_running = (old is not None
                       and now_ns <= old.stamp_ns + round(float(old.t_s[-1]) * _NS_PER_S))
        if old is None or not old_running or self.blend_s == 0.0 or immediate:
            self._reference = traj
            self._counts["taken"] += 1
        else:
            self._reference = blend_chunks(old, traj, now_ns, self.blend_s, self.grid_dt_s)
            self._counts["blended"] += 1
        return self._reference


__all__ = ["ChunkBlender", "blend_chunks", "smoothstep"]
