"""Shared pieces of the detection and tracking evaluation (numpy only).

Ground truth and estimates are compared in ``base_link`` (REP 103: x forward, y left, z up):
:class:`~mm_perception.sim.ground_truth.GroundTruthObject` gives ``box_base`` and
``velocity_base`` there, and detections / tracks must carry ``box.frame_id == "base_link"``
(checked; a box in another frame raises :class:`EvalInputError`). Distances are bird's-eye
view (BEV, x-y plane) centre distances in metres, as in the nuScenes detection benchmark.

A ground-truth object can be *ignored* (see :func:`has_sensor_evidence`): it is neither a
positive nor a miss, and an estimate that only lies near ignored objects is dropped rather
than counted as a false positive (KITTI's "DontCare" idea). The evaluators decide which
objects are ignored; this module provides the arrays and the matching.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError, MMPerceptionError
from mm_perception.core.types import DetectedObject, ObjectClass
from mm_perception.sim.ground_truth import GroundTruthObject

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

#: frame both ground truth and estimates are compared in
EVAL_FRAME = "base_link"
#: the classes evaluated by default (UNKNOWN has no ground truth)
DEFAULT_CLASSES: tuple[ObjectClass, ...] = (ObjectClass.CAR, ObjectClass.TRUCK,
                                            ObjectClass.BUS, ObjectClass.PEDESTRIAN,
                                            ObjectClass.CYCLIST)
_CLASS_INDEX = {c: i for i, c in enumerate(ObjectClass)}


class EvalInputError(MMPerceptionError, ValueError):
    """Evaluation input that cannot be compared (wrong frame, wrong type); names the item."""


@dataclass(frozen=True)
class ObjectArrays:
    """Columns of a list of boxes (detections, tracks or ground truth) in ``base_link``.

    Attributes:
        center: ``(N, 3)`` float64 box centres, metres.
        size: ``(N, 3)`` float64 length, width, height, metres.
        yaw: ``(N,)`` float64 heading, radians.
        velocity: ``(N, 3)`` float64 m/s; rows of NaN where the velocity is unknown.
        label: ``(N,)`` int64 index of the class in ``list(ObjectClass)``.
        score: ``(N,)`` float64 confidence (1.0 for ground truth).
        ident: ``(N,)`` int64 persistent id (track id / actor id; -1 for detections).
        evidence: ``(N,)`` bool, ground truth with sensor evidence (True for estimates).
    """

    center: F64
    size: F64
    yaw: F64
    velocity: F64
    label: I64
    score: F64
    ident: I64
    evidence: B

    def __len__(self) -> int:
        return int(self.center.shape[0])

    def select(self, mask: B) -> ObjectArrays:
        """The rows where ``mask`` is True (same order)."""
        return ObjectArrays(self.center[mask], self.size[mask], self.yaw[mask],
                            self.velocity[mask], self.label[mask], self.score[mask],
                            self.ident[mask], self.evidence[mask])


def class_index(label: ObjectClass) -> int:
    """Index of ``label`` in ``list(ObjectClass)`` (the code used in :class:`ObjectArrays`)."""
    return _CLASS_INDEX[label]


def _empty_arrays() -> ObjectArrays:
    return ObjectArrays(np.zeros((0, 3)), np.ones((0, 3)), np.zeros(0), np.zeros((0, 3)),
                        np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64),
                        np.zeros(0, bool))


def detection_arrays(objects: Sequence[DetectedObject], where: str,
                     idents: Sequence[int] | None = None) -> ObjectArrays:
    """Columns of detections (or of tracks' states, with ``idents`` = track ids).

    Args:
        objects: detections, boxes in ``base_link``.
        where: description of the list for error messages (``"frame 3 detections"``).
        idents: optional persistent ids, one per object.

    Raises:
        EvalInputError: an item is not a DetectedObject or its box is not in ``base_link``.
    """
    if len(objects) == 0:
        return _empty_arrays()
    for k, obj in enumerate(objects):
        if not isinstance(obj, DetectedObject):
            raise EvalInputError(f"{where}[{k}] is a {type(obj).__name__}, "
                                 f"expected DetectedObject")
        if obj.box.frame_id != EVAL_FRAME:
            raise EvalInputError(f"{where}[{k}] box is in frame {obj.box.frame_id!r}; "
                                 f"evaluation compares boxes in {EVAL_FRAME!r} (transform "
                                 f"the detections first)")
    nan3 = np.full(3, np.nan)
    return ObjectArrays(
        center=np.array([o.box.center for o in objects], dtype=np.float64),
        size=np.array([o.box.size for o in objects], dtype=np.float64),
        yaw=np.array([o.box.yaw for o in objects], dtype=np.float64),
        velocity=np.array([nan3 if o.velocity is None else o.velocity for o in objects],
                          dtype=np.float64),
        label=np.array([_CLASS_INDEX[o.label] for o in objects], dtype=np.int64),
        score=np.array([o.score for o in objects], dtype=np.float64),
        ident=(np.full(len(objects), -1, np.int64) if idents is None
               else np.asarray(idents, dtype=np.int64)),
        evidence=np.ones(len(objects), dtype=bool))


def has_sensor_evidence(obj: GroundTruthObject, min_visible_pixels: int | None = 1) -> bool:
    """Whether the message this ground truth belongs to saw the object at all: at least one
    LiDAR or radar return, or at least ``min_visible_pixels`` visible camera pixels (None:
    camera pixels alone are no evidence, the nuScenes rule of "at least one LiDAR or radar
    point").

    The counts of a :class:`GroundTruthObject` refer to one sensor message (a LiDAR record
    has only ``lidar_hits``); a caller evaluating fused output against one record should
    merge the counts of the records of all sensors first.
    """
    if obj.lidar_hits + obj.radar_hits > 0:
        return True
    return min_visible_pixels is not None and obj.visible_pixels >= max(min_visible_pixels, 1)


def check_min_pixels(value: object, key: str) -> None:
    """Validate a ``min_visible_pixels`` setting (int >= 1 or None)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ConfigError(f"{key} must be an int >= 1 or None, got {value!r}")


def ground_truth_arrays(objects: Sequence[GroundTruthObject], where: str,
                        min_visible_pixels: int | None = 1) -> ObjectArrays:
    """Columns of ground truth in ``base_link`` (``box_base``, ``velocity_base``); the
    ``evidence`` column follows :func:`has_sensor_evidence` with ``min_visible_pixels``.

    Raises:
        EvalInputError: an item is not a GroundTruthObject, its ``box_base`` is not in
            ``base_link`` or its velocity is not 3 finite values.
    """
    if len(objects) == 0:
        return _empty_arrays()
    for k, obj in enumerate(objects):
        if not isinstance(obj, GroundTruthObject):
            raise EvalInputError(f"{where}[{k}] is a {type(obj).__name__}, "
                                 f"expected GroundTruthObject")
        if obj.box_base.frame_id != EVAL_FRAME:
            raise EvalInputError(f"{where}[{k}] (actor {obj.actor_id}) box_base is in frame "
                                 f"{obj.box_base.frame_id!r}, expected {EVAL_FRAME!r}")
        vel = np.asarray(obj.velocity_base, dtype=np.float64)
        if vel.shape != (3,) or not np.all(np.isfinite(vel)):
            raise EvalInputError(f"{where}[{k}] (actor {obj.actor_id}) velocity_base must be "
                                 f"3 finite values, got {vel.tolist()}")
    return ObjectArrays(
        center=np.array([o.box_base.center for o in objects], dtype=np.float64),
        size=np.array([o.box_base.size for o in objects], dtype=np.float64),
        yaw=np.array([o.box_base.yaw for o in objects], dtype=np.float64),
        velocity=np.array([o.velocity_base for o in objects], dtype=np.float64),
        label=np.array([_CLASS_INDEX[o.object_class] for o in objects], dtype=np.int64),
        score=np.ones(len(objects)),
        ident=np.array([o.actor_id for o in objects], dtype=np.int64),
        evidence=np.array([has_sensor_evidence(o, min_visible_pixels) for o in objects],
                          dtype=bool))


def filter_mask(arrays: ObjectArrays, classes: Sequence[ObjectClass],
                max_range_m: float | None) -> B:
    """``(N,)`` rows whose class is in ``classes`` and whose BEV distance from the ego
    (``base_link`` origin) is at most ``max_range_m`` (no range limit when None)."""
    codes = np.array([_CLASS_INDEX[c] for c in classes], dtype=np.int64)
    mask: B = np.isin(arrays.label, codes)
    if max_range_m is not None:
        mask &= np.hypot(arrays.center[:, 0], arrays.center[:, 1]) <= max_range_m
    return mask


def bev_distance_matrix(a: ObjectArrays, b: ObjectArrays, class_aware: bool = True) -> F64:
    """``(len(a), len(b))`` float64 BEV centre distances in metres; ``inf`` between objects
    of different classes when ``class_aware``."""
    diff = a.center[:, None, :2] - b.center[None, :, :2]
    dist: F64 = np.hypot(diff[..., 0], diff[..., 1])
    if class_aware:
        dist[a.label[:, None] != b.label[None, :]] = np.inf
    return dist


def greedy_match(dist: F64, order: I64, threshold: float) -> I64:
    """nuScenes greedy assignment of estimates to ground truth.

    Estimates are visited in ``order`` (descending score); each takes the *nearest* ground
    truth not yet taken and is a match when that distance is strictly below ``threshold``
    (when the nearest is too far the estimate is unmatched even if another is not taken —
    as in the nuScenes devkit, the nearest is always the one tested).

    Args:
        dist: ``(N, M)`` float64 estimate-to-ground-truth distances (``inf`` = not allowed).
        order: ``(N,)`` visiting order of the estimates.
        threshold: match distance, metres, > 0.

    Returns:
        ``(N,)`` int64 index of the matched ground truth, -1 for unmatched.
    """
    n, m = dist.shape
    match = np.full(n, -1, dtype=np.int64)
    if n == 0 or m == 0:
        return match
    work = dist.copy()
    # Greedy is sequential by definition (each choice removes a column); the loop is over
    # objects of one frame, never over points.
    for i in order:
        j = int(np.argmin(work[i]))
        if work[i, j] < threshold:
            match[i] = j
            work[:, j] = np.inf
    return match


def yaw_difference(a: F64 | float, b: F64 | float, period: float = 2.0 * math.pi) -> F64:
    """Smallest absolute yaw difference, radians, in ``[0, period / 2]`` (nuScenes
    ``yaw_diff``; ``period`` 2*pi for headings, pi for objects symmetric front/back)."""
    diff = (np.asarray(a, np.float64) - np.asarray(b, np.float64) + period / 2) % period
    out: F64 = np.abs(diff - period / 2)
    return out


def scale_iou(size_a: F64, size_b: F64) -> F64:
    """3D IoU of boxes with the same centre and orientation (nuScenes ``scale_iou``).

    Args:
        size_a, size_b: ``(N, 3)`` float64 (length, width, height), metres, > 0.

    Returns:
        ``(N,)`` float64 IoU in (0, 1].
    """
    inter = np.prod(np.minimum(size_a, size_b), axis=-1)
    union = np.prod(size_a, axis=-1) + np.prod(size_b, axis=-1) - inter
    out: F64 = inter / union
    return out


def bev_velocity_error(vel_est: F64, vel_gt: F64) -> F64:
    """``(N,)`` float64 BEV (x-y) velocity L2 error, m/s; NaN where the estimate has none."""
    diff = vel_est[:, :2] - vel_gt[:, :2]
    out: F64 = np.hypot(diff[:, 0], diff[:, 1])
    return out


def check_classes(value: object, key: str) -> tuple[ObjectClass, ...]:
    """Validated class tuple of a config (non-empty, unique ObjectClass members)."""
    if isinstance(value, str | ObjectClass) or not isinstance(value, Sequence):
        raise ConfigError(f"{key} must be a sequence of ObjectClass, got {value!r}")
    out = []
    for item in value:
        if not isinstance(item, ObjectClass):
            raise ConfigError(f"{key} must hold ObjectClass members, got {item!r}")
        out.append(item)
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"{key} must be non-empty without repeats, got {value!r}")
    return tuple(out)


def check_range(value: object, key: str) -> None:
    """``value`` is None or a finite positive number of metres."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} must be None or a finite distance > 0 m, got {value!r}")


def nan_to_none(value: float) -> float | None:
    """JSON-safe float: NaN and infinities become None (``json.dumps(allow_nan=False)``)."""
    return float(value) if math.isfinite(value) else None


__all__ = [
    "DEFAULT_CLASSES",
    "EVAL_FRAME",
    "EvalInputError",
    "ObjectArrays",
    "bev_distance_matrix",
    "bev_velocity_error",
    "check_classes",
    "check_min_pixels",
    "check_range",
    "class_index",
    "detection_arrays",
    "filter_mask",
    "greedy_match",
    "ground_truth_arrays",
    "has_sensor_evidence",
    "nan_to_none",
    "scale_iou",
    "yaw_difference",
]
