"""Offline evaluation run: simulated bags -> perception pipeline -> metrics against truth.

For every bag: :class:`~mm_perception.bag.offline.OfflineReplay` makes the synchronised sets,
:class:`~mm_perception.fusion.pipeline.PerceptionPipeline` makes every object list and its
tracks, and each set is paired with the simulator's ground truth of its reference sensor
message (same stamp; the rig's time offset undone to find the record). The sensor evidence
of an object (LiDAR hits, radar hits, visible pixels) is the sum over the records of all the
set's messages, so an object seen by the radar alone still counts for the fused lists.

Detection metrics (:func:`evaluate_detections`) and tracking metrics
(:func:`evaluate_tracking`) are computed per object list over all frames of all bags; the
trackers are reset between bags. With :attr:`EvalRunConfig.feature_variants`, trained BEV
models with modalities removed are run on the same frames and scored the same way
(:mod:`mm_perception.eval.feature_table`). A few frames are kept for pictures (bird's-eye views,
camera overlays) by :mod:`mm_perception.eval.report`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mm_perception.core.calibration import Rig
from mm_perception.core.errors import BagError, ConfigError
from mm_perception.core.types import (
    CameraFrame,
    DetectedObject,
    ObjectClass,
    SensorKind,
    SensorSet,
    Track,
)
from mm_perception.eval.detection_metrics import (
    DetectionEvalConfig,
    DetectionMetrics,
    evaluate_detections,
)
from mm_perception.eval.feature_table import (
    DetectorFactory,
    FeatureTableRow,
    FeatureTableRun,
    FeatureVariant,
    table_rows,
)
from mm_perception.eval.tracking_metrics import (
    TrackingEvalConfig,
    TrackingMetrics,
    evaluate_tracking,
)
from mm_perception.fusion.pipeline import (
    FrameResult,
    PerceptionPipeline,
    PipelineConfig,
    sensor_coverage,
)
from mm_perception.sim.ground_truth import GroundTruthFrame, GroundTruthObject, load_ground_truth

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalRunConfig:
    """Configuration of :func:`run_evaluation`.

    Attributes:
        pipeline: the perception pipeline under test.
        detection: detection metric settings (default: within 50 m, objects without a
            LiDAR or radar return ignored, the nuScenes rule).
        tracking: tracking metric settings (same range and evidence rule).
        max_sets_per_bag: stop each bag after this many sets (0 = all).
        picture_frames: how many frames (spread over the first bag) to keep for pictures.
        feature_variants: trained BEV models / modality subsets to run on the same frames
            for the feature-level comparison table (empty: no table).
    """

    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    detection: DetectionEvalConfig = field(default_factory=lambda: DetectionEvalConfig(
        max_range_m=50.0, ignore_gt_without_evidence=True, min_visible_pixels=None))
    tracking: TrackingEvalConfig = field(default_factory=lambda: TrackingEvalConfig(
        max_range_m=50.0, ignore_gt_without_evidence=True, min_visible_pixels=None))
    max_sets_per_bag: int = 0
    picture_frames: int = 4
    feature_variants: tuple[FeatureVariant, ...] = ()

    def __post_init__(self) -> None:
        for key in ("max_sets_per_bag", "picture_frames"):
            val = getattr(self, key)
            if isinstance(val, bool) or not isinstance(val, int) or val < 0:
                raise ConfigError(f"EvalRunConfig.{key} must be an int >= 0, got {val!r}")
        variants = tuple(self.feature_variants)
        bad = [v for v in variants if not isinstance(v, FeatureVariant)]
        if bad:
            raise ConfigError(f"EvalRunConfig.feature_variants must be FeatureVariant s, got "
                              f"{bad[0]!r}")
        object.__setattr__(self, "feature_variants", variants)


@dataclass(frozen=True, eq=False)
class PictureFrame:
    """One frame kept for the report's pictures."""

    bag: str
    result: FrameResult
    truth: tuple[GroundTruthObject, ...]
    cameras: Mapping[str, CameraFrame]


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Result of :func:`run_evaluation`.

    Attributes:
        detection: list name -> detection metrics.
        tracking: list name -> tracking metrics.
        lists: the list names, in report order.
        bags: the bags evaluated.
        num_frames: frames evaluated (sets that had a ground-truth record).
        frames_without_truth: sets with no ground-truth record of their reference message.
        timings_ms: pipeline stage -> median wall milliseconds per frame.
        pictures: frames kept for pictures.
        notes: distinct pipeline notes with their counts.
        replay: bag -> the offline replay summary.
        tracking_radar_fov: list name -> tracking metrics against the ground truth inside a
            radar's field of view only (where radar velocity can help; its velocity error
            is the like-for-like comparison of the lists' velocity estimates). Empty when
            the rig has no radar.
        feature_table: the feature-level comparison (:mod:`mm_perception.eval.feature_table`):
            one row per :attr:`EvalRunConfig.feature_variants` entry, then the pipeline's
            lists of the same run. Empty without variants.
    """

    detection: Mapping[str, DetectionMetrics]
    tracking: Mapping[str, TrackingMetrics]
    lists: tuple[str, ...]
    bags: tuple[str, ...]
    num_frames: int
    frames_without_truth: int
    timings_ms: Mapping[str, float]
    pictures: tuple[PictureFrame, ...]
    notes: Mapping[str, int]
    replay: Mapping[str, Any]
    tracking_radar_fov: Mapping[str, TrackingMetrics] = field(default_factory=dict)
    feature_table: tuple[FeatureTableRow, ...] = ()

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Headline numbers per list: car AP at 2 m, mAP, MOTA, IDF1, ID switches, track
        velocity error (JSON-ready, None = undefined)."""
        out: dict[str, dict[str, float | None]] = {}
        for name in self.lists:
            det = self.detection[name].to_dict(include_curves=False)
            trk = self.tracking.get(name)
            row: dict[str, float | None] = {
                "car_ap_2m": det["ap"].get(ObjectClass.CAR.value, {}).get("2"),
                "mean_ap": det["mean_ap"],
                "mean_ate_m": det["mean_tp_errors"]["translation"],
                "mean_ave_mps": det["mean_tp_errors"]["velocity"],
            }
            if trk is not None:
                t = trk.to_dict()
                row.update({"mota": t["mota"], "idf1": t["idf1"],
                            "id_switches": float(t["num_switches"]),
                            "track_velocity_error_mps": t["velocity_error"]})
            fov = self.tracking_radar_fov.get(name)
            if fov is not None:
                row["track_velocity_error_radar_fov_mps"] = fov.to_dict()["velocity_error"]
            out[name] = row
        return out


def merged_truth(sensor_set: SensorSet, rig: Rig, reference: str,
                 index: Mapping[tuple[str, int], GroundTruthFrame],
                 ) -> tuple[GroundTruthObject, ...] | None:
    """Ground truth at the set's stamp with the evidence of all its messages summed.

    Args:
        sensor_set: the set (stamps on the common clock).
        rig: the rig (time offsets).
        reference: the sync reference sensor (its record gives the boxes).
        index: ``(sensor, header stamp) -> record``.

    Returns:
        The reference record's objects with merged hit / pixel counts, or None when the
        reference message has no record.
    """
    def record(name: str, stamp: int) -> GroundTruthFrame | None:
        spec = rig.sensors.get(name)
        offset = 0 if spec is None else spec.time_offset_ns
        return index.get((name, stamp - offset))

    ref = record(reference, sensor_set.stamp_ns)
    if ref is None:
        return None
    counts = {o.actor_id: [0, 0, 0] for o in ref.objects}
    stamps = {n: v.stamp_ns for group in (sensor_set.cameras, sensor_set.lidars,
                                          sensor_set.radars) for n, v in group.items()}
    for name, stamp in stamps.items():
        rec = record(name, stamp)
        if rec is None:
            continue
        for obj in rec.objects:
            if obj.actor_id in counts:
                c = counts[obj.actor_id]
                c[0] += obj.lidar_hits
                c[1] += obj.radar_hits
                c[2] += obj.visible_pixels
    return tuple(replace(o, lidar_hits=counts[o.actor_id][0], radar_hits=counts[o.actor_id][1],
                         visible_pixels=counts[o.actor_id][2]) for o in ref.objects)


def run_evaluation(bags: Sequence[str | Path], rig: Rig, config: EvalRunConfig | None = None,
                   progress: Callable[[str, int], None] | None = None,
                   pipeline: PerceptionPipeline | None = None,
                   feature_factory: DetectorFactory | None = None) -> EvalResult:
    """Run the pipeline over simulated bags and score every object list.

    Args:
        bags: simulated rosbag2 directories (each with its ``ground_truth.jsonl``).
        rig: the rig the bags were recorded with.
        config: see :class:`EvalRunConfig`.
        progress: called with ``(bag, frames so far)`` after each frame (e.g. a tqdm update).
        pipeline: a pipeline to use (its config wins over ``config.pipeline``); None: built.
        feature_factory: makes the detectors of ``config.feature_variants`` (None: BEV
            detectors from their weights folders).

    Raises:
        BagError: a bag without ground truth, or unreadable.
        FileNotFoundError: a BEV weights folder lacks a file.
    """
    from mm_perception.bag.offline import OfflineConfig, OfflineReplay, sync_config_for_rig
    from mm_perception.bag.reader import BagSource
    from mm_perception.sim.ground_truth import index_by_stamp

    cfg = EvalRunConfig() if config is None else config
    if not bags:
        raise ConfigError("run_evaluation needs at least one bag")
    pipe = pipeline if pipeline is not None else PerceptionPipeline(rig, cfg.pipeline)
    lists = pipe.lists
    det_frames: dict[str, list[tuple[list[DetectedObject], tuple[GroundTruthObject, ...]]]] = {
        n: [] for n in lists}
    trk_frames: dict[str, list[tuple[list[Track], tuple[GroundTruthObject, ...]]]] = {
        n: [] for n in lists}
    fov_frames: dict[str, list[tuple[list[Track], tuple[GroundTruthObject, ...]]]] = {
        n: [] for n in lists}
    timings: dict[str, list[float]] = {}
    notes: dict[str, int] = {}
    pictures: list[PictureFrame] = []
    replay_summaries: dict[str, Any] = {}
    n_frames = no_truth = 0
    reference = sync_config_for_rig(rig).reference
    table = (FeatureTableRun(cfg.feature_variants, feature_factory)
             if cfg.feature_variants else None)
    for b, bag in enumerate(bags):
        bag = Path(bag)
        truth_index = index_by_stamp(load_ground_truth(bag))
        replay = OfflineReplay(rig, OfflineConfig(max_sets=cfg.max_sets_per_bag))
        pipe.reset()
        kept: list[tuple[int, FrameResult, tuple[GroundTruthObject, ...], SensorSet]] = []
        frame_in_bag = 0
        t_start = time.perf_counter()
        with BagSource(bag) as source:
            bag_rig = source.resolve_rig(rig)
            pipe.use_rig(bag_rig)
            radar_fov = [fn for s in bag_rig.sensors.values() if s.kind is SensorKind.RADAR
                         and (fn := sensor_coverage(s)) is not None]
            for sset in replay.run(source):
                truth = merged_truth(sset, replay.rig, reference, truth_index)
                result = pipe.process(sset, replay.odometry)
                for note in result.notes:
                    notes[note] = notes.get(note, 0) + 1
                for stage, ms in result.timings_ms.items():
                    timings.setdefault(stage, []).append(ms)
                if truth is None:
                    no_truth += 1
                    continue
                in_fov: tuple[GroundTruthObject, ...] = ()
                if radar_fov and truth:
                    centers = np.stack([g.box_base.center for g in truth])
                    seen = np.logical_or.reduce([fn(centers) for fn in radar_fov])
                    in_fov = tuple(g for g, ok in zip(truth, seen.tolist(), strict=True) if ok)
                for name in lists:
                    det_frames[name].append((result.objects.get(name, []), truth))
                    if name in result.tracks:
                        trk_frames[name].append((result.tracks[name], truth))
                        if radar_fov:
                            fov_frames[name].append((result.tracks[name], in_fov))
                if table is not None:
                    _feature_frame(table, pipe, sset, result, truth, bag_rig, replay.odometry)
                if b == 0 and cfg.picture_frames:
                    kept.append((frame_in_bag, result, truth, sset))
                    kept = _thin(kept, cfg.picture_frames)
                frame_in_bag += 1
                n_frames += 1
                if progress is not None:
                    progress(str(bag), n_frames)
        replay_summaries[str(bag)] = {**replay.summary.as_dict(),
                                      "wall_s": time.perf_counter() - t_start}
        pictures.extend(PictureFrame(str(bag), res, tr, s.cameras) for _, res, tr, s in kept)
    detection = {n: evaluate_detections(det_frames[n], cfg.detection) for n in lists}
    tracking = {n: evaluate_tracking(trk_frames[n], cfg.tracking) for n in lists
                if trk_frames[n]}
    tracking_fov = {n: evaluate_tracking(fov_frames[n], cfg.tracking) for n in lists
                    if fov_frames[n]}
    med = {stage: float(sorted(v)[len(v) // 2]) for stage, v in timings.items() if v}
    feature_rows: tuple[FeatureTableRow, ...] = ()
    if table is not None:
        feature_rows = table_rows(table.metrics(cfg.detection), detection)
        table.close()
    return EvalResult(detection=detection, tracking=tracking, lists=lists,
                      bags=tuple(str(b) for b in bags), num_frames=n_frames,
                      frames_without_truth=no_truth, timings_ms=med,
                      pictures=tuple(pictures), notes=notes, replay=replay_summaries,
                      tracking_radar_fov=tracking_fov, feature_table=feature_rows)


def _feature_frame(table: FeatureTableRun, pipe: PerceptionPipeline, sset: SensorSet,
                   result: FrameResult, truth: tuple[GroundTruthObject, ...], rig: Rig,
                   odometry: Any) -> None:
    """Run the feature-level variants on one frame: on the pipeline's inputs of the
    ``feature`` list when it made them (one :func:`frame_inputs` per set), reusing its
    detections for the variant that is the same detector."""
    from mm_perception.fusion.feature_level.detector import BevDetectorConfig
    from mm_perception.fusion.feature_level.processor import frame_inputs

    raw = result.feature_inputs
    if raw is None:
        raw = frame_inputs(sset, rig, odometry)
    known: dict[FeatureVariant, list[DetectedObject]] = {}
    if "feature" in result.objects:
        own = pipe.config.bev or BevDetectorConfig()
        known = {v: result.objects["feature"] for v in table.variants
                 if v.detector_config() == own}
    table.add(raw, sset.stamp_ns, truth, known)


def _thin(kept: list[Any], limit: int) -> list[Any]:
    """Keep at most ``limit`` frames, spread evenly over what was seen (every 2^k-th)."""
    if len(kept) <= limit:
        return kept
    # keep frames whose index is a multiple of the smallest power of two that fits
    step = 1
    while len([k for k in kept if k[0] % step == 0]) > limit:
        step *= 2
    return [k for k in kept if k[0] % step == 0][:limit]


def iter_bag_paths(values: Iterable[str | Path]) -> list[Path]:
    """Bag paths from the command line; a directory holding several simulated bags (a
    ``sim dataset`` output) expands to those bags, in name order.

    Raises:
        BagError: a path that does not exist.
    """
    out: list[Path] = []
    for value in values:
        path = Path(value)
        if not path.exists():
            raise BagError(f"no bag at {path}")
        if path.is_dir() and not (path / "metadata.yaml").exists() and not any(
                path.glob("*.mcap")):
            subs = sorted(p for p in path.iterdir() if p.is_dir()
                          and (p / "metadata.yaml").exists())
            if not subs:
                raise BagError(f"{path} is neither a bag nor a folder of bags")
            out.extend(subs)
        else:
            out.append(path)
    return out


__all__ = ["EvalResult", "EvalRunConfig", "FeatureVariant", "PictureFrame", "iter_bag_paths",
           "merged_truth", "run_evaluation"]
