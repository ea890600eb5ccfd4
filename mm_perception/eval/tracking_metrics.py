"""Multi-object tracking metrics (CLEAR-MOT, identity, velocity) against simulator truth.

The bookkeeping is ``motmetrics`` (py-motmetrics 1.4; it works here with numpy 2 and pandas
3): per frame the evaluated ground-truth actor ids, the evaluated track ids and their
distance matrix go to a ``MOTAccumulator``, which does the CLEAR-MOT matching (matches of the
previous frame are kept while still within the threshold, the rest by minimum-cost
assignment) and computes the metrics. Definitions (motmetrics' own):

* ``MOTA = 1 - (FN + FP + IDSW) / num_objects`` (num_objects = ground-truth appearances;
  NaN when there are none).
* ``MOTP`` = mean BEV centre distance of the matched pairs, **metres, lower is better**
  (motmetrics' distance convention, not the CLEAR paper's overlap).
* ``IDSW``: a ground-truth object matched to a different track id than at its previous
  match (a swap of two tracks counts 2). ``fragmentations``: tracked -> untracked
  transitions of an object's coverage. Mostly tracked / partially tracked / mostly lost:
  objects covered >= 80 %, 20-80 %, < 20 % of the frames they appear in.
* ``IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN)`` after the global one-to-one track <-> object
  assignment (Ristani et al. 2016).
* Velocity error: mean BEV L2 ``|v_track[:2] - v_gt[:2]|`` (m/s, ``base_link`` axes,
  absolute velocities) over the matched pairs whose track has a velocity (NaN if none).

Distances are BEV centre distances in ``base_link`` (tracks must have
``object.box.frame_id == "base_link"``; ground truth uses ``box_base`` / ``velocity_base``); a
pair is allowed when the distance is strictly below ``distance_threshold_m`` and, with
``class_aware``, the track's label equals the object's class. Frames must be given in time
order (identity metrics depend on it). Only tracks whose status is in ``track_statuses``
are evaluated (default: confirmed). The class / range / evidence filters work as in
:mod:`mm_perception.eval.detection_metrics`: tracks and objects of other classes or beyond
``max_range_m`` are left out; ignored objects (no sensor evidence) are neither objects nor
misses, and a track with no evaluated object but an ignored one within the threshold is
dropped rather than counted as a false positive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.core.types import ObjectClass, Track, TrackStatus
from mm_perception.eval.matching import (
    DEFAULT_CLASSES,
    EvalInputError,
    bev_distance_matrix,
    bev_velocity_error,
    check_classes,
    check_min_pixels,
    check_range,
    class_index,
    detection_arrays,
    filter_mask,
    ground_truth_arrays,
    nan_to_none,
)
from mm_perception.sim.ground_truth import GroundTruthObject

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# motmetrics metric name -> TrackingMetrics field
_MOT_FIELDS = {
    "mota": "mota", "motp": "motp", "idf1": "idf1", "idp": "idp", "idr": "idr",
    "precision": "precision", "recall": "recall", "num_switches": "num_switches",
    "num_fragmentations": "num_fragmentations", "mostly_tracked": "mostly_tracked",
    "partially_tracked": "partially_tracked", "mostly_lost": "mostly_lost",
    "num_false_positives": "num_false_positives", "num_misses": "num_misses",
    # motmetrics' num_matches leaves out the frames with a switch; num_detections = all pairs
    "num_detections": "num_matches", "num_objects": "num_objects",
    "num_unique_objects": "num_unique_objects",
}
_FLOAT_FIELDS = ("mota", "motp", "idf1", "idp", "idr", "precision", "recall")


@dataclass(frozen=True)
class TrackingEvalConfig:
    """Configuration of :func:`evaluate_tracking`.

    Attributes:
        classes: classes evaluated (tracks and objects of others are left out).
        distance_threshold_m: BEV centre distance below which a track may match an object.
        class_aware: a track matches only objects of its own label.
        track_statuses: statuses of the tracks that are evaluated (others are ignored).
        max_range_m: only objects and tracks within this BEV distance of the ego; None = all.
        ignore_gt_without_evidence: ignore objects without LiDAR / radar return or visible
            pixel in their record.
        min_visible_pixels: visible camera pixels that count as evidence on their own
            (None: only LiDAR / radar returns do, as in nuScenes).
    """

    classes: tuple[ObjectClass, ...] = DEFAULT_CLASSES
    distance_threshold_m: float = 2.0
    class_aware: bool = True
    track_statuses: tuple[TrackStatus, ...] = (TrackStatus.CONFIRMED,)
    max_range_m: float | None = None
    ignore_gt_without_evidence: bool = False
    min_visible_pixels: int | None = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", check_classes(self.classes, "classes"))
        th = self.distance_threshold_m
        if isinstance(th, bool) or not isinstance(th, int | float) or not math.isfinite(th) \
                or th <= 0:
            raise ConfigError(f"distance_threshold_m must be a finite distance > 0 m, got "
                              f"{th!r}")
        object.__setattr__(self, "distance_threshold_m", float(th))
        for key in ("class_aware", "ignore_gt_without_evidence"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key} must be a bool, got {getattr(self, key)!r}")
        sts = self.track_statuses
        if isinstance(sts, str) or not isinstance(sts, Sequence) or len(sts) == 0 or any(
                not isinstance(s, TrackStatus) for s in sts):
            raise ConfigError(f"track_statuses must be a non-empty sequence of TrackStatus, "
                              f"got {sts!r}")
        object.__setattr__(self, "track_statuses", tuple(dict.fromkeys(sts)))
        check_range(self.max_range_m, "max_range_m")
        check_min_pixels(self.min_visible_pixels, "min_visible_pixels")


@dataclass(frozen=True)
class TrackingMetrics:
    """Result of :func:`evaluate_tracking` (definitions in the module docstring).

    Attributes:
        config: the configuration used.
        num_frames: frames evaluated.
        mota, motp (m), idf1, idp, idr, precision, recall: NaN where undefined.
        num_switches, num_fragmentations, mostly_tracked, partially_tracked, mostly_lost,
        num_false_positives, num_misses, num_matches (matched pairs, switches included;
        motmetrics' ``num_detections``), num_objects
        (ground-truth appearances), num_unique_objects: counts.
        velocity_error: mean BEV velocity L2 of matched tracks with velocity, m/s.
        velocity_error_by_class: the same per ground-truth class (classes with pairs).
        num_velocity_pairs: matched pairs whose track has a velocity.
        num_ignored_objects: object appearances ignored for lack of sensor evidence.
        num_tracks_dropped_on_ignored: track appearances dropped on ignored objects.
        num_tracks_filtered: track appearances left out by status / class / range.
    """

    config: TrackingEvalConfig
    num_frames: int = 0
    mota: float = math.nan
    motp: float = math.nan
    idf1: float = math.nan
    idp: float = math.nan
    idr: float = math.nan
    precision: float = math.nan
    recall: float = math.nan
    num_switches: int = 0
    num_fragmentations: int = 0
    mostly_tracked: int = 0
    partially_tracked: int = 0
    mostly_lost: int = 0
    num_false_positives: int = 0
    num_misses: int = 0
    num_matches: int = 0
    num_objects: int = 0
    num_unique_objects: int = 0
    velocity_error: float = math.nan
    velocity_error_by_class: Mapping[ObjectClass, float] = field(
        default_factory=lambda: MappingProxyType({}))
    num_velocity_pairs: int = 0
    num_ignored_objects: int = 0
    num_tracks_dropped_on_ignored: int = 0
    num_tracks_filtered: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN -> None)."""
        cfg = self.config
        out: dict[str, Any] = {
            "config": {"classes": [c.value for c in cfg.classes],
                       "distance_threshold_m": cfg.distance_threshold_m,
                       "class_aware": cfg.class_aware,
                       "track_statuses": [s.value for s in cfg.track_statuses],
                       "max_range_m": cfg.max_range_m,
                       "ignore_gt_without_evidence": cfg.ignore_gt_without_evidence,
                       "min_visible_pixels": cfg.min_visible_pixels},
            "num_frames": self.num_frames,
        }
        for name in _MOT_FIELDS.values():
            val = getattr(self, name)
            out[name] = nan_to_none(val) if name in _FLOAT_FIELDS else int(val)
        out["velocity_error"] = nan_to_none(self.velocity_error)
        out["velocity_error_by_class"] = {c.value: nan_to_none(v)
                                          for c, v in self.velocity_error_by_class.items()}
        for name in ("num_velocity_pairs", "num_ignored_objects",
                     "num_tracks_dropped_on_ignored", "num_tracks_filtered"):
            out[name] = int(getattr(self, name))
        return out


def _motmetrics() -> Any:
    # imported on use: motmetrics pulls in pandas, which the rest of eval does not need
    import motmetrics

    return motmetrics


def evaluate_tracking(frames: Sequence[tuple[Sequence[Track], Sequence[GroundTruthObject]]],
                      config: TrackingEvalConfig | None = None) -> TrackingMetrics:
    """CLEAR-MOT, identity and velocity metrics over a time-ordered sequence of frames.

    Args:
        frames: per instant, in time order, ``(tracks, ground_truth)``: the tracker output
            (boxes and velocities in ``base_link``) and the ground truth of the same stamp.
        config: evaluation settings (defaults when None).

    Returns:
        :class:`TrackingMetrics`; with no frames or no objects and tracks the rates are NaN
        and the counts 0 (never an exception).

    Raises:
        EvalInputError: an item of the wrong type, a box not in ``base_link``, or a track id
            / actor id repeated within one frame.
    """
    cfg = TrackingEvalConfig() if config is None else config
    if len(frames) == 0:
        return TrackingMetrics(cfg)
    mm = _motmetrics()
    acc = mm.MOTAccumulator(auto_id=False)
    statuses = set(cfg.track_statuses)
    th = cfg.distance_threshold_m
    # (frame, id) keys of every evaluated object / track, to look up matched pairs' velocities
    gt_keys: list[I64] = []
    gt_vel: list[F64] = []
    gt_label: list[I64] = []
    hyp_keys: list[I64] = []
    hyp_vel: list[F64] = []
    n_ignored = n_dropped = n_filtered = 0
    for f, (tracks, truth) in enumerate(frames):
        where = f"frame {f} tracks"
        for k, trk in enumerate(tracks):
            if not isinstance(trk, Track):
                raise EvalInputError(f"{where}[{k}] is a {type(trk).__name__}, expected Track")
        chosen = [t for t in tracks if t.status in statuses]
        hyp = detection_arrays([t.object for t in chosen], where,
                               idents=[t.track_id for t in chosen])
        gt = ground_truth_arrays(truth, f"frame {f} ground truth", cfg.min_visible_pixels)
        _check_unique(hyp.ident, f"{where}: track id")
        _check_unique(gt.ident, f"frame {f} ground truth: actor id")
        hyp_keep = filter_mask(hyp, cfg.classes, cfg.max_range_m)
        n_filtered += len(tracks) - int(np.count_nonzero(hyp_keep))
        hyp = hyp.select(hyp_keep)
        gt = gt.select(filter_mask(gt, cfg.classes, cfg.max_range_m))
        positive = gt.evidence if cfg.ignore_gt_without_evidence else np.ones(len(gt), bool)
        n_ignored += int(np.count_nonzero(~positive))
        dist = bev_distance_matrix(gt, hyp, class_aware=cfg.class_aware)  # (objects, tracks)
        near_pos = np.any(dist[positive] < th, axis=0)
        on_ignored = ~near_pos & np.any(dist[~positive] < th, axis=0)
        n_dropped += int(np.count_nonzero(on_ignored))
        hyp = hyp.select(~on_ignored)
        gt = gt.select(positive)
        dist = dist[positive][:, ~on_ignored]
        acc.update(gt.ident.tolist(), hyp.ident.tolist(), np.where(dist < th, dist, np.nan),
                   frameid=f)
        gt_keys.append(_keys(f, gt.ident))
        gt_vel.append(gt.velocity)
        gt_label.append(gt.label)
        hyp_keys.append(_keys(f, hyp.ident))
        hyp_vel.append(hyp.velocity)

    summary = mm.metrics.create().compute(acc, metrics=list(_MOT_FIELDS), name="all")
    row = summary.loc["all"]
    values: dict[str, Any] = {}
    for mot_name, name in _MOT_FIELDS.items():
        val = float(row[mot_name])
        values[name] = (val if math.isfinite(val) else math.nan) if name in _FLOAT_FIELDS \
            else int(val)
    vel = _velocity_errors(acc.mot_events, np.concatenate(gt_keys), np.concatenate(gt_vel),
                           np.concatenate(gt_label), np.concatenate(hyp_keys),
                           np.concatenate(hyp_vel))
    err, labels = vel
    by_class = {c: float(np.mean(err[labels == class_index(c)])) for c in cfg.classes
                if np.any(labels == class_index(c))}
    return TrackingMetrics(
        cfg, num_frames=len(frames), **values,
        velocity_error=float(np.mean(err)) if err.size else math.nan,
        velocity_error_by_class=MappingProxyType(by_class), num_velocity_pairs=int(err.size),
        num_ignored_objects=n_ignored, num_tracks_dropped_on_ignored=n_dropped,
        num_tracks_filtered=n_filtered)


def _check_unique(ids: I64, what: str) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        raise EvalInputError(f"{what} {uniq[counts > 1].tolist()} appears more than once")


def _keys(frame: int, ids: I64) -> I64:
    # one int64 per (frame, id): ids are < 2**32 in practice (actor ids, tracker counters)
    out: I64 = np.int64(frame) * np.int64(1 << 32) + ids.astype(np.int64)
    return out


def _velocity_errors(events: Any, gt_keys: I64, gt_vel: F64, gt_label: I64, hyp_keys: I64,
                     hyp_vel: F64) -> tuple[F64, I64]:
    """BEV velocity errors and ground-truth classes of motmetrics' matched pairs that have a
    track velocity: ``((K,) float64 m/s, (K,) int64 class codes)``."""
    matched = events[events["Type"].isin(["MATCH", "SWITCH"])]
    if len(matched) == 0:
        return np.zeros(0), np.zeros(0, np.int64)
    frame = matched.index.get_level_values("FrameId").to_numpy(dtype=np.int64)
    oid = matched["OId"].to_numpy(dtype=np.int64)
    hid = matched["HId"].to_numpy(dtype=np.int64)
    gi = _lookup(gt_keys, _keys_many(frame, oid))
    hi = _lookup(hyp_keys, _keys_many(frame, hid))
    err = bev_velocity_error(hyp_vel[hi], gt_vel[gi])
    ok = np.isfinite(err)
    return err[ok], gt_label[gi][ok]


def _keys_many(frame: I64, ids: I64) -> I64:
    out: I64 = frame * np.int64(1 << 32) + ids
    return out


def _lookup(keys: I64, wanted: I64) -> I64:
    """Row of each ``wanted`` key in ``keys`` (all present by construction)."""
    order = np.argsort(keys, kind="stable")
    pos = np.searchsorted(keys[order], wanted)
    out: I64 = order[pos]
    return out


__all__ = ["TrackingEvalConfig", "TrackingMetrics", "evaluate_tracking"]
