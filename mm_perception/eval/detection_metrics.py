"""nuScenes-style 3D detection metrics against the simulator's ground truth (numpy only).

What is implemented (following ``nuscenes/eval/detection/algo.py`` of the nuScenes devkit):

* **Frame.** Detections and ground truth are compared in ``base_link``: detections must have
  ``box.frame_id == "base_link"`` (else :class:`EvalInputError`); ground truth uses
  ``GroundTruthObject.box_base`` and ``velocity_base``. Each input frame pairs the detections
  of one instant with the ground truth of the same stamp.
* **Filters** (before matching, as nuScenes' ``filter_eval_boxes``): objects whose class is
  not in ``config.classes`` are left out (detections counted in ``num_dropped_detections``);
  with ``max_range_m`` set, ground truth *and* detections farther than that BEV distance
  from the ego (``base_link`` origin) are left out. With ``ignore_gt_without_evidence``,
  ground truth without sensor evidence (:func:`~mm_perception.eval.matching.has_sensor_evidence`)
  is *ignored*: not a positive, and a detection that matches no other ground truth but lies
  closer than the threshold to an ignored object of its class is dropped instead of counted
  as a false positive (nuScenes deletes such ground truth, which makes those detections false
  positives; here a detector is not punished for seeing an object the labels call invisible).
* **Matching** per class and per distance threshold (default 0.5, 1, 2, 4 m): detections of
  all frames in descending score; each takes the nearest not-yet-taken ground truth of its
  class in its frame (BEV centre distance) and is a true positive when that distance is
  *strictly* below the threshold. Matching in one frame does not depend on the others, so it
  runs frame by frame; the global order only matters for the curve (ties keep input order).
* **Precision-recall curve**: cumulative TP / FP over the global score order,
  ``precision = TP / (TP + FP)``, ``recall = TP / n_gt``, resampled with ``np.interp`` at the
  101 recall points ``linspace(0, 1, 101)`` (precision 0 above the highest recall reached;
  no monotone envelope — nuScenes takes none). The confidence curve is resampled the same way.
* **AP** = ``mean(max(precision[k] - min_precision, 0) for k > round(100 * min_recall))
  / (1 - min_precision)`` (nuScenes ``calc_ap``: recall bins 11..100 with the defaults
  ``min_recall = min_precision = 0.1``). **mAP** = mean of AP over classes and thresholds.
* **TP errors** at ``tp_threshold_m`` (2 m): per true positive, translation error (BEV
  centre distance, m), scale error ``1 - IoU`` of the boxes with centres and yaw aligned,
  orientation error (smallest yaw difference, period 2*pi, rad) and velocity error (BEV L2,
  m/s; NaN when the detection has no velocity). As nuScenes ``calc_tp``: cumulative mean
  over the score order, resampled onto the confidence curve, averaged over the recall bins
  ``round(100 * min_recall) + 1`` .. highest recall reached. ``tp_errors_of_matches`` also
  gives the plain mean over all true positives.

Deliberate differences from the devkit (documented, tested):

* A class without (non-ignored) ground truth gets AP = NaN (nuScenes: 0) and is left out of
  mAP; with no ground truth at all mAP is NaN. A class with ground truth but no detections
  gets AP = 0, as in nuScenes.
* TP errors are NaN (nuScenes: 1.0) when a class has no true positive or its highest recall
  is not above ``min_recall``, and velocity error is NaN when no matched detection has a
  velocity (nuScenes: 1.0). Detections without velocity are skipped in the velocity mean
  (nuScenes counts them as 0 in the running mean until one with velocity comes).
* The highest-recall index is found from the recall (nuScenes: last confidence > 0, which
  equals it unless a detection has score 0).
* There are no attribute errors and no NDS (the simulator has no attributes).

Empty inputs never raise: no frames, no detections or no ground truth give NaN / 0 as
described above, with counts of 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.core.types import DetectedObject, ObjectClass
from mm_perception.eval.matching import (
    DEFAULT_CLASSES,
    ObjectArrays,
    bev_distance_matrix,
    bev_velocity_error,
    check_classes,
    check_min_pixels,
    check_range,
    class_index,
    detection_arrays,
    filter_mask,
    greedy_match,
    ground_truth_arrays,
    nan_to_none,
    scale_iou,
    yaw_difference,
)
from mm_perception.sim.ground_truth import GroundTruthObject

F64 = npt.NDArray[np.float64]
#: number of recall points of the resampled curves (0 %, 1 %, ..., 100 %)
N_RECALL_POINTS = 101
_RECALL_GRID: F64 = np.linspace(0.0, 1.0, N_RECALL_POINTS)
_ERROR_NAMES = ("translation", "scale", "orientation", "velocity")


@dataclass(frozen=True)
class DetectionEvalConfig:
    """Configuration of :func:`evaluate_detections`.

    Attributes:
        classes: classes evaluated (others are left out).
        distance_thresholds_m: BEV centre-distance match thresholds, metres, increasing.
        tp_threshold_m: threshold whose matches give the TP errors (one of the above).
        min_recall: recall bins up to this value are left out of AP and TP errors, [0, 1).
        min_precision: precision below this counts as 0 in AP, [0, 1).
        max_range_m: only ground truth and detections within this BEV distance of the ego
            (``base_link`` origin) are evaluated; None = no limit (nuScenes uses 50 m for cars).
        ignore_gt_without_evidence: ignore ground truth without any LiDAR / radar return and
            visible pixel (see the module docstring).
        min_visible_pixels: visible camera pixels that count as evidence on their own
            (None: only LiDAR / radar returns do, as in nuScenes).
    """

    classes: tuple[ObjectClass, ...] = DEFAULT_CLASSES
    distance_thresholds_m: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    tp_threshold_m: float = 2.0
    min_recall: float = 0.1
    min_precision: float = 0.1
    max_range_m: float | None = None
    ignore_gt_without_evidence: bool = False
    min_visible_pixels: int | None = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", check_classes(self.classes, "classes"))
        ths = self.distance_thresholds_m
        if isinstance(ths, str) or not isinstance(ths, Sequence) or len(ths) == 0 or any(
                isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t)
                or t <= 0 for t in ths):
            raise ConfigError(f"distance_thresholds_m must be a non-empty sequence of finite "
                              f"distances > 0 m, got {ths!r}")
        ths = tuple(float(t) for t in ths)
        if any(b <= a for a, b in itertools.pairwise(ths)):
            raise ConfigError(f"distance_thresholds_m must be strictly increasing, got {ths}")
        object.__setattr__(self, "distance_thresholds_m", ths)
        if self.tp_threshold_m not in ths:
            raise ConfigError(f"tp_threshold_m must be one of distance_thresholds_m {ths}, got "
                              f"{self.tp_threshold_m!r}")
        object.__setattr__(self, "tp_threshold_m", float(self.tp_threshold_m))
        for key in ("min_recall", "min_precision"):
            val = getattr(self, key)
            if isinstance(val, bool) or not isinstance(val, int | float) \
                    or not 0.0 <= val < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {val!r}")
        check_range(self.max_range_m, "max_range_m")
        check_min_pixels(self.min_visible_pixels, "min_visible_pixels")
        if not isinstance(self.ignore_gt_without_evidence, bool):
            raise ConfigError(f"ignore_gt_without_evidence must be a bool, got "
                              f"{self.ignore_gt_without_evidence!r}")


@dataclass(frozen=True)
class TPErrors:
    """Mean true-positive errors (NaN = not measurable, see the module docstring).

    Attributes:
        translation: BEV centre distance, metres (ATE).
        scale: ``1 - IoU`` with centre and yaw aligned (ASE).
        orientation: smallest yaw difference, radians, period 2*pi (AOE).
        velocity: BEV velocity L2, m/s (AVE).
    """

    translation: float = math.nan
    scale: float = math.nan
    orientation: float = math.nan
    velocity: float = math.nan

    def to_dict(self) -> dict[str, float | None]:
        return {name: nan_to_none(getattr(self, name)) for name in _ERROR_NAMES}


@dataclass(frozen=True)
class PRCurve:
    """Resampled precision-recall curve of one class at one threshold.

    Attributes:
        recall: ``(101,)`` float64 recall points 0, 0.01, ..., 1.
        precision: ``(101,)`` float64 precision at each recall (0 above the highest recall
            reached; NaN everywhere when the class has no ground truth).
        confidence: ``(101,)`` float64 detection score at each recall (0 above the highest).
        max_recall: highest recall reached (NaN without ground truth).
    """

    recall: F64
    precision: F64
    confidence: F64
    max_recall: float

    def to_dict(self) -> dict[str, Any]:
        return {"recall": [float(v) for v in self.recall],
                "precision": [nan_to_none(v) for v in self.precision],
                "confidence": [float(v) for v in self.confidence],
                "max_recall": nan_to_none(self.max_recall)}


@dataclass(frozen=True)
class ClassCounts:
    """Counts of one class (after the class / range filters).

    Attributes:
        num_gt: ground truth evaluated (positives).
        num_ignored_gt: ground truth ignored for lack of sensor evidence.
        num_detections: detections evaluated.
        num_tp / num_fp: true / false positives at the TP threshold.
        num_dropped_on_ignored: detections dropped at the TP threshold because they lie on
            ignored ground truth.
        num_tp_with_velocity: true positives at the TP threshold that have a velocity.
    """

    num_gt: int = 0
    num_ignored_gt: int = 0
    num_detections: int = 0
    num_tp: int = 0
    num_fp: int = 0
    num_dropped_on_ignored: int = 0
    num_tp_with_velocity: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DetectionMetrics:
    """Result of :func:`evaluate_detections` (see the module docstring for definitions).

    Attributes:
        config: the configuration used.
        num_frames: frames evaluated.
        ap: class -> threshold (m) -> AP in [0, 1] (NaN: no ground truth of the class).
        ap_per_class: class -> mean AP over thresholds.
        ap_per_threshold: threshold -> mean AP over classes with ground truth.
        mean_ap: mean AP over classes with ground truth and all thresholds (NaN if none).
        tp_errors: class -> nuScenes-style TP errors at ``config.tp_threshold_m``.
        tp_errors_of_matches: class -> plain mean of each error over all true positives.
        mean_tp_errors: mean of ``tp_errors`` over the classes where each is defined.
        counts: class -> :class:`ClassCounts`.
        curves: class -> threshold -> :class:`PRCurve` (for plotting).
        num_dropped_detections: detections left out by the class / range filters.
        num_gt_out_of_range: ground truth left out by the range filter.
    """

    config: DetectionEvalConfig
    num_frames: int
    ap: Mapping[ObjectClass, Mapping[float, float]]
    ap_per_class: Mapping[ObjectClass, float]
    ap_per_threshold: Mapping[float, float]
    mean_ap: float
    tp_errors: Mapping[ObjectClass, TPErrors]
    tp_errors_of_matches: Mapping[ObjectClass, TPErrors]
    mean_tp_errors: TPErrors
    counts: Mapping[ObjectClass, ClassCounts]
    curves: Mapping[ObjectClass, Mapping[float, PRCurve]] = field(repr=False)
    num_dropped_detections: int = 0
    num_gt_out_of_range: int = 0

    def to_dict(self, include_curves: bool = True) -> dict[str, Any]:
        """JSON-ready nested dict (class names and ``"0.5"``-style threshold keys; NaN ->
        None so ``json.dumps(..., allow_nan=False)`` works)."""
        cfg = self.config
        out: dict[str, Any] = {
            "config": {"classes": [c.value for c in cfg.classes],
                       "distance_thresholds_m": list(cfg.distance_thresholds_m),
                       "tp_threshold_m": cfg.tp_threshold_m, "min_recall": cfg.min_recall,
                       "min_precision": cfg.min_precision, "max_range_m": cfg.max_range_m,
                       "ignore_gt_without_evidence": cfg.ignore_gt_without_evidence,
                       "min_visible_pixels": cfg.min_visible_pixels},
            "num_frames": self.num_frames,
            "mean_ap": nan_to_none(self.mean_ap),
            "ap": {c.value: {_key(t): nan_to_none(v) for t, v in per.items()}
                   for c, per in self.ap.items()},
            "ap_per_class": {c.value: nan_to_none(v) for c, v in self.ap_per_class.items()},
            "ap_per_threshold": {_key(t): nan_to_none(v)
                                 for t, v in self.ap_per_threshold.items()},
            "tp_errors": {c.value: e.to_dict() for c, e in self.tp_errors.items()},
            "tp_errors_of_matches": {c.value: e.to_dict()
                                     for c, e in self.tp_errors_of_matches.items()},
            "mean_tp_errors": self.mean_tp_errors.to_dict(),
            "counts": {c.value: n.to_dict() for c, n in self.counts.items()},
            "num_dropped_detections": self.num_dropped_detections,
            "num_gt_out_of_range": self.num_gt_out_of_range,
        }
        if include_curves:
            out["curves"] = {c.value: {_key(t): cur.to_dict() for t, cur in per.items()}
                             for c, per in self.curves.items()}
        return out


def _key(threshold: float) -> str:
    return f"{threshold:g}"


@dataclass
class _Accumulated:
    """Per-detection results of all frames (concatenated in frame order)."""

    score: list[F64] = field(default_factory=list)
    label: list[npt.NDArray[np.int64]] = field(default_factory=list)
    # threshold -> per frame: 1 true positive, 0 false positive, -1 dropped (ignored GT)
    outcome: dict[float, list[npt.NDArray[np.int8]]] = field(default_factory=dict)
    errors: list[F64] = field(default_factory=list)  # (N, 4) at the TP threshold, NaN if FP


def evaluate_detections(
        frames: Sequence[tuple[Sequence[DetectedObject], Sequence[GroundTruthObject]]],
        config: DetectionEvalConfig | None = None) -> DetectionMetrics:
    """nuScenes-style detection metrics over a sequence of frames.

    Args:
        frames: per instant, ``(detections, ground_truth)``: detections with boxes and
            velocities in ``base_link``, and the ground-truth objects of the same stamp
            (their ``box_base`` / ``velocity_base`` are used).
        config: evaluation settings (defaults when None).

    Returns:
        :class:`DetectionMetrics`.

    Raises:
        EvalInputError: a detection box not in ``base_link``, or an item of the wrong type.
    """
    cfg = DetectionEvalConfig() if config is None else config
    ths = cfg.distance_thresholds_m
    acc = _Accumulated(outcome={t: [] for t in ths})
    n_gt = np.zeros(len(ObjectClass), np.int64)
    n_ignored = np.zeros(len(ObjectClass), np.int64)
    dropped = 0
    gt_out_of_range = 0
    for f, (detections, truth) in enumerate(frames):
        det_all = detection_arrays(detections, f"frame {f} detections")
        gt_all = ground_truth_arrays(truth, f"frame {f} ground truth", cfg.min_visible_pixels)
        det_keep = filter_mask(det_all, cfg.classes, cfg.max_range_m)
        gt_keep = filter_mask(gt_all, cfg.classes, cfg.max_range_m)
        dropped += int(np.count_nonzero(~det_keep))
        gt_out_of_range += int(np.count_nonzero(~gt_keep & filter_mask(gt_all, cfg.classes,
                                                                         None)))
        det, gt = det_all.select(det_keep), gt_all.select(gt_keep)
        positive = gt.evidence if cfg.ignore_gt_without_evidence else np.ones(len(gt), bool)
        np.add.at(n_gt, gt.label[positive], 1)
        np.add.at(n_ignored, gt.label[~positive], 1)
        _match_frame(det, gt, positive, cfg, acc)

    score = np.concatenate(acc.score) if acc.score else np.zeros(0)
    label = np.concatenate(acc.label) if acc.label else np.zeros(0, np.int64)
    errors = np.concatenate(acc.errors) if acc.errors else np.zeros((0, 4))
    outcome = {t: (np.concatenate(acc.outcome[t]) if acc.outcome[t] else np.zeros(0, np.int8))
               for t in ths}
    # one global order: descending score, ties in input order (stable sort)
    order = np.argsort(-score, kind="stable")

    ap: dict[ObjectClass, Mapping[float, float]] = {}
    curves: dict[ObjectClass, Mapping[float, PRCurve]] = {}
    tp_err: dict[ObjectClass, TPErrors] = {}
    tp_err_plain: dict[ObjectClass, TPErrors] = {}
    counts: dict[ObjectClass, ClassCounts] = {}
    for cls in cfg.classes:
        code = class_index(cls)
        sel = order[label[order] == code]  # this class, in global score order
        npos = int(n_gt[code])
        per_ap: dict[float, float] = {}
        per_curve: dict[float, PRCurve] = {}
        for t in ths:
            res = outcome[t][sel]
            kept = res >= 0
            curve = _pr_curve(score[sel][kept], res[kept] == 1, npos)
            per_curve[t] = curve
            per_ap[t] = _average_precision(curve, cfg.min_recall, cfg.min_precision)
        ap[cls] = MappingProxyType(per_ap)
        curves[cls] = MappingProxyType(per_curve)
        res_tp = outcome[cfg.tp_threshold_m][sel]
        is_tp = res_tp == 1
        tp_rows = errors[sel][is_tp]
        tp_err[cls] = _nuscenes_tp_errors(per_curve[cfg.tp_threshold_m], score[sel][is_tp],
                                          tp_rows, cfg.min_recall)
        tp_err_plain[cls] = TPErrors(*(_nanmean(tp_rows[:, k]) for k in range(4)))
        counts[cls] = ClassCounts(
            num_gt=npos, num_ignored_gt=int(n_ignored[code]), num_detections=int(sel.size),
            num_tp=int(np.count_nonzero(is_tp)), num_fp=int(np.count_nonzero(res_tp == 0)),
            num_dropped_on_ignored=int(np.count_nonzero(res_tp < 0)),
            num_tp_with_velocity=int(np.count_nonzero(np.isfinite(tp_rows[:, 3]))))

    with_gt = [c for c in cfg.classes if counts[c].num_gt > 0]
    ap_per_class = {c: _nanmean(np.array(list(ap[c].values()))) for c in cfg.classes}
    ap_per_threshold = {t: _nanmean(np.array([ap[c][t] for c in with_gt])) for t in ths}
    mean_ap = _nanmean(np.array([ap[c][t] for c in with_gt for t in ths]))
    mean_err = TPErrors(*(_nanmean(np.array([getattr(tp_err[c], name) for c in cfg.classes]))
                          for name in _ERROR_NAMES))
    return DetectionMetrics(
        config=cfg, num_frames=len(frames), ap=MappingProxyType(ap),
        ap_per_class=MappingProxyType(ap_per_class),
        ap_per_threshold=MappingProxyType(ap_per_threshold), mean_ap=mean_ap,
        tp_errors=MappingProxyType(tp_err), tp_errors_of_matches=MappingProxyType(tp_err_plain),
        mean_tp_errors=mean_err, counts=MappingProxyType(counts),
        curves=MappingProxyType(curves), num_dropped_detections=dropped,
        num_gt_out_of_range=gt_out_of_range)


def _match_frame(det: ObjectArrays, gt: ObjectArrays, positive: npt.NDArray[np.bool_],
                 cfg: DetectionEvalConfig, acc: _Accumulated) -> None:
    """Match one frame at every threshold and append the outcomes to ``acc``."""
    dist = bev_distance_matrix(det, gt, class_aware=True)
    dist_pos, dist_ign = dist[:, positive], dist[:, ~positive]
    gt_pos = gt.select(positive)
    order = np.argsort(-det.score, kind="stable")
    acc.score.append(det.score)
    acc.label.append(det.label)
    for t in cfg.distance_thresholds_m:
        match = greedy_match(dist_pos, order, t)
        outcome = (match >= 0).astype(np.int8)
        if dist_ign.shape[1]:
            on_ignored = (match < 0) & np.any(dist_ign < t, axis=1)
            outcome[on_ignored] = -1
        acc.outcome[t].append(outcome)
        if t == cfg.tp_threshold_m:
            err = np.full((len(det), 4), np.nan)
            m = match >= 0
            g = match[m]
            offset = det.center[m, :2] - gt_pos.center[g, :2]
            err[m, 0] = np.hypot(offset[:, 0], offset[:, 1])
            err[m, 1] = 1.0 - scale_iou(det.size[m], gt_pos.size[g])
            err[m, 2] = yaw_difference(det.yaw[m], gt_pos.yaw[g])
            err[m, 3] = bev_velocity_error(det.velocity[m], gt_pos.velocity[g])
            acc.errors.append(err)


def _pr_curve(score_sorted: F64, tp_sorted: npt.NDArray[np.bool_], npos: int) -> PRCurve:
    """Resampled PR and confidence curves (nuScenes ``accumulate``)."""
    if npos == 0:
        return PRCurve(_RECALL_GRID.copy(), np.full(N_RECALL_POINTS, np.nan),
                       np.zeros(N_RECALL_POINTS), math.nan)
    if not np.any(tp_sorted):  # nuScenes "no predictions": precision and confidence 0
        return PRCurve(_RECALL_GRID.copy(), np.zeros(N_RECALL_POINTS),
                       np.zeros(N_RECALL_POINTS), 0.0)
    tp = np.cumsum(tp_sorted).astype(np.float64)
    fp = np.cumsum(~tp_sorted).astype(np.float64)
    prec = tp / (tp + fp)
    rec = tp / float(npos)
    return PRCurve(_RECALL_GRID.copy(), np.interp(_RECALL_GRID, rec, prec, right=0.0),
                   np.interp(_RECALL_GRID, rec, score_sorted, right=0.0), float(rec[-1]))


def _average_precision(curve: PRCurve, min_recall: float, min_precision: float) -> float:
    """nuScenes ``calc_ap``: mean clipped precision above the ``min_recall`` bin."""
    if math.isnan(curve.max_recall):
        return math.nan
    prec = curve.precision[round(100 * min_recall) + 1:] - min_precision
    return float(np.mean(np.clip(prec, 0.0, None))) / (1.0 - min_precision)


def _nuscenes_tp_errors(curve: PRCurve, tp_scores: F64, tp_errors: F64,
                        min_recall: float) -> TPErrors:
    """nuScenes ``calc_tp`` for the four errors.

    Args:
        curve: the PR / confidence curve at the TP threshold.
        tp_scores: ``(K,)`` scores of the true positives in descending order.
        tp_errors: ``(K, 4)`` their errors in the same order (NaN velocity = unknown).
    """
    if tp_scores.size == 0 or math.isnan(curve.max_recall):
        return TPErrors()
    first = round(100 * min_recall) + 1
    # recall points that np.interp did not send to "right=0": up to the highest recall
    last = int(np.nonzero(curve.max_recall >= _RECALL_GRID)[0][-1])
    if last < first:
        return TPErrors()
    out = []
    for k in range(4):
        col = tp_errors[:, k]
        valid = np.isfinite(col)
        if not np.any(valid):
            out.append(math.nan)
            continue
        count = np.cumsum(valid)
        with np.errstate(invalid="ignore", divide="ignore"):
            running = np.where(count > 0, np.cumsum(np.where(valid, col, 0.0)) / count,
                               np.nan)
        # np.interp wants increasing x: the scores are descending, so reverse both
        resampled = np.interp(curve.confidence[::-1], tp_scores[::-1], running[::-1])[::-1]
        out.append(_nanmean(resampled[first:last + 1]))
    return TPErrors(*out)


def _nanmean(values: F64) -> float:
    finite = values[np.isfinite(values)]
    return float(np.mean(finite)) if finite.size else math.nan


__all__ = ["N_RECALL_POINTS", "ClassCounts", "DetectionEvalConfig", "DetectionMetrics",
           "PRCurve", "TPErrors", "evaluate_detections"]
