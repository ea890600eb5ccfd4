"""Moving object lists between frames and instants (numpy only).

Detectors report objects in ``base_link`` at their own sensor's stamp; fusion wants them at
the synchronised set's stamp, the tracker in a world-fixed frame (``odom``), evaluation back
in ``base_link``. These functions do those moves for :class:`DetectedObject` and
:class:`Track` lists, vectorised over the list:

* a rigid transform ``T_new_old`` moves the box centre, turns the heading by the transform's
  yaw, turns the velocity (an absolute, over-ground velocity: only rotated, never offset by
  the frames' relative motion) and turns the position block (3x3) and velocity block (2x2)
  of the covariance, ``P' = R P R^T``; yaw variance is unchanged; the yaw rate is the new
  ``z`` component of the rotated turn (the same between upright frames);
* a time shift ``dt_s`` propagates the centre with the object's velocity under a constant
  velocity model, the covariance with it (``P' = F P F^T``, ``x' = x + dt v``).
  Objects without velocity stay where they were (nothing better is known).

Only the heading about ``z`` is carried by :class:`Box3D`; transforms between frames that
tilt (roll / pitch) keep the box upright and use the yaw of the rotated heading, which is
what the frames of a ground vehicle (``base_link``, ``odom``) need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from mm_perception.core.geometry import SE3
from mm_perception.core.types import Box3D, DetectedObject, Track

F64 = npt.NDArray[np.float64]


def transform_objects(objects: Sequence[DetectedObject], T_new_old: SE3, frame_id: str,
                      dt_s: float = 0.0, stamp_ns: int | None = None) -> list[DetectedObject]:
    """The same objects expressed in another frame, optionally ``dt_s`` later.

    Args:
        objects: objects whose boxes are all in the frame ``T_new_old`` maps from.
        T_new_old: rigid transform, new frame <- old frame.
        frame_id: name of the new frame.
        dt_s: seconds to propagate with each object's velocity (constant velocity; may be
            negative; 0 = no propagation).
        stamp_ns: stamp of the output objects, ns (None: keep each object's).

    Returns:
        New objects in ``frame_id`` (the inputs are not changed), same order.

    Raises:
        ValueError: boxes in different frames, or a non-finite ``dt_s``.
    """
    if not objects:
        return []
    if not np.isfinite(dt_s):
        raise ValueError(f"dt_s must be finite, got {dt_s}")
    frames = {o.box.frame_id for o in objects}
    if len(frames) > 1:
        raise ValueError(f"objects in several frames {sorted(frames)}: transform each "
                         f"frame's objects separately")
    rot = T_new_old.rotation
    center = T_new_old.apply(np.array([o.box.center for o in objects], dtype=np.float64))
    heading = np.array([[np.cos(o.box.yaw), np.sin(o.box.yaw), 0.0] for o in objects])
    heading = heading @ rot.T
    yaw = np.arctan2(heading[:, 1], heading[:, 0])
    out: list[DetectedObject] = []
    r2 = rot[:2, :2]
    for k, obj in enumerate(objects):
        vel = None if obj.velocity is None else rot @ obj.velocity
        pos = center[k]
        cov = obj.covariance
        if cov is not None:
            c = np.array(cov, dtype=np.float64)
            c[:3, :3] = rot @ c[:3, :3] @ rot.T
            c[:3, 3:] = rot @ c[:3, 3:]
            c[3:, :3] = c[:3, 3:].T
            c[4:6, 4:6] = r2 @ c[4:6, 4:6] @ r2.T
            c[:3, 4:6] = c[:3, 4:6] @ r2.T
            c[4:6, :3] = c[:3, 4:6].T
            c[3, 4:6] = c[3, 4:6] @ r2.T
            c[4:6, 3] = c[3, 4:6]
            cov = c
        if dt_s and vel is not None:
            pos = pos + vel * dt_s
            if cov is not None:
                # constant velocity: x' = x + dt v, so P' = F P F^T with F = I + dt E(x<-v)
                F = np.eye(6)
                F[0, 4] = F[1, 5] = dt_s
                cov = F @ cov @ F.T
        box = Box3D(pos, obj.box.size, float(yaw[k]), frame_id)
        # the rate about the new z: (R w)_z for w = (0, 0, yaw_rate); unchanged between
        # upright frames, sign-flipped by a frame upside down
        rate = None if obj.yaw_rate is None else float(rot[2, 2] * obj.yaw_rate)
        out.append(replace(obj, box=box, velocity=vel, covariance=cov, yaw_rate=rate,
                           stamp_ns=obj.stamp_ns if stamp_ns is None else int(stamp_ns)))
    return out


def transform_tracks(tracks: Sequence[Track], T_new_old: SE3, frame_id: str) -> list[Track]:
    """Tracks with their states expressed in another frame (ids and life cycle kept)."""
    if not tracks:
        return []
    moved = transform_objects([t.object for t in tracks], T_new_old, frame_id)
    return [replace(t, object=o) for t, o in zip(tracks, moved, strict=True)]


def bev_centers(objects: Sequence[DetectedObject]) -> F64:
    """``(N, 2)`` float64 box centres ``x, y`` of the objects, metres, their frame."""
    if not objects:
        return np.zeros((0, 2))
    return np.array([o.box.center[:2] for o in objects], dtype=np.float64)


__all__ = ["bev_centers", "transform_objects", "transform_tracks"]
