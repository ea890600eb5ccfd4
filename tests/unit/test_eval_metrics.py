"""Detection (nuScenes-style) and tracking (CLEAR-MOT / IDF1) metrics on hand-made scenes.

Every expected number is computed by hand in the comments (or follows from the definition
in a line), never by calling the code under test twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from mm_perception.core.errors import ConfigError
from mm_perception.core.types import Box3D, DetectedObject, ObjectClass, Track, TrackStatus
from mm_perception.eval.detection_metrics import (
    DetectionEvalConfig,
    DetectionMetrics,
    evaluate_detections,
)
from mm_perception.eval.matching import EvalInputError, greedy_match, scale_iou, yaw_difference
from mm_perception.eval.tracking_metrics import (
    TrackingEvalConfig,
    TrackingMetrics,
    evaluate_tracking,
)
from mm_perception.sim.ground_truth import GroundTruthObject

CAR, PED = ObjectClass.CAR, ObjectClass.PEDESTRIAN
CAR_SIZE = (4.0, 2.0, 1.5)
THS = (0.5, 1.0, 2.0, 4.0)


def gt(actor_id: int, x: float, y: float, yaw: float = 0.0, cls: ObjectClass = CAR,
       size: Sequence[float] = CAR_SIZE, vel: Sequence[float] = (0.0, 0.0, 0.0),
       lidar_hits: int = 10, radar_hits: int = 0, visible_pixels: int = 0) -> GroundTruthObject:
    center = np.array([x, y, size[2] / 2])
    return GroundTruthObject(
        actor_id=actor_id, object_class=cls,
        box_world=Box3D(center + np.array([100.0, 0.0, 0.0]), np.array(size), yaw, "world"),
        box_base=Box3D(center, np.array(size), yaw, "base_link"),
        velocity_world=np.array(vel, float), velocity_base=np.array(vel, float),
        yaw_rate=0.0, lidar_hits=lidar_hits, radar_hits=radar_hits,
        visible_pixels=visible_pixels)


def det(x: float, y: float, score: float = 0.9, yaw: float = 0.0, cls: ObjectClass = CAR,
        size: npt.ArrayLike = CAR_SIZE, vel: npt.ArrayLike | None = None,
        frame_id: str = "base_link") -> DetectedObject:
    dims = np.asarray(size, dtype=float)
    return DetectedObject(Box3D(np.array([x, y, dims[2] / 2]), dims, yaw, frame_id),
                          cls, score, velocity=None if vel is None else np.array(vel, float))


def trk(track_id: int, x: float, y: float, cls: ObjectClass = CAR,
        status: TrackStatus = TrackStatus.CONFIRMED,
        vel: Sequence[float] | None = None) -> Track:
    return Track(track_id, det(x, y, 1.0, cls=cls, vel=vel), status)


def _json_round_trip(result: DetectionMetrics | TrackingMetrics) -> Any:
    """The dict after a strict JSON round trip (NaN would make json.dumps raise)."""
    return json.loads(json.dumps(result.to_dict(), allow_nan=False))


# ---------------------------------------------------------------------------- configuration

@pytest.mark.parametrize(("kwargs", "key"), [
    ({"distance_thresholds_m": (0.5, 0.0)}, "distance_thresholds_m"),
    ({"distance_thresholds_m": (2.0, 1.0)}, "distance_thresholds_m"),
    ({"distance_thresholds_m": ()}, "distance_thresholds_m"),
    ({"tp_threshold_m": 3.0}, "tp_threshold_m"),
    ({"min_recall": 1.0}, "min_recall"),
    ({"min_precision": -0.1}, "min_precision"),
    ({"max_range_m": -5.0}, "max_range_m"),
    ({"max_range_m": math.inf}, "max_range_m"),
    ({"classes": "car"}, "classes"),
    ({"classes": (CAR, CAR)}, "classes"),
    ({"classes": ()}, "classes"),
    ({"ignore_gt_without_evidence": 1}, "ignore_gt_without_evidence"),
])
def test_detection_config_rejects_bad_values(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        DetectionEvalConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"distance_threshold_m": 0.0}, "distance_threshold_m"),
    ({"track_statuses": ()}, "track_statuses"),
    ({"track_statuses": ("confirmed",)}, "track_statuses"),
    ({"class_aware": "yes"}, "class_aware"),
    ({"max_range_m": 0}, "max_range_m"),
])
def test_tracking_config_rejects_bad_values(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        TrackingEvalConfig(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- primitives

def test_yaw_difference_wraps_and_scale_iou_of_known_boxes() -> None:
    np.testing.assert_allclose(yaw_difference(np.array([3.1, 0.0, 0.2, 1.0]),
                                              np.array([-3.1, math.pi, 0.2 + 4 * math.pi,
                                                        -1.0])),
                               [2 * math.pi - 6.2, math.pi, 0.0, 2.0], atol=1e-12)
    # pi-periodic (front/back symmetric): a flipped heading is no error
    assert yaw_difference(0.3, 0.3 + math.pi, period=math.pi) == pytest.approx(0.0, abs=1e-12)
    # (4, 2, 2) vs (2, 4, 1): intersection 2*2*1 = 4, union 16 + 8 - 4 = 20
    assert scale_iou(np.array([[4.0, 2, 2]]), np.array([[2.0, 4, 1]]))[0] == pytest.approx(0.2)


def test_greedy_match_takes_nearest_in_score_order() -> None:
    dist = np.array([[1.0, 0.5],
                     [0.6, 3.0],
                     [0.1, 0.2]])
    # det 2 first takes GT 0 (0.1); det 0 takes GT 1 (0.5); det 1's nearest left is none
    np.testing.assert_array_equal(greedy_match(dist, np.array([2, 0, 1]), 2.0), [1, -1, 0])
    # the nearest untaken GT is the one tested: det 0 -> GT 1 at 0.5 fails a 0.4 threshold
    np.testing.assert_array_equal(greedy_match(dist, np.array([0, 1, 2]), 0.4), [-1, -1, 0])
    assert greedy_match(np.zeros((0, 3)), np.zeros(0, np.int64), 1.0).shape == (0,)


# ------------------------------------------------------------------------------ detection

def test_perfect_detections_give_ap_one_and_zero_errors() -> None:
    frames = []
    for f in range(3):
        truth = [gt(1, 10.0 + f, 2.0, yaw=0.3, vel=(5.0, 0.0, 0.0)),
                 gt(2, 20.0, -3.0, yaw=-1.0, vel=(0.0, 1.0, 0.0)),
                 gt(3, 8.0, 5.0, cls=PED, size=(0.5, 0.5, 1.8), vel=(1.0, 1.0, 0.0))]
        dets = [det(o.box_base.center[0], o.box_base.center[1], score=0.5 + 0.1 * i,
                    yaw=o.box_base.yaw, cls=o.object_class, size=o.box_base.size,
                    vel=o.velocity_base) for i, o in enumerate(truth)]
        frames.append((dets, truth))
    m = evaluate_detections(frames)
    for cls in (CAR, PED):
        assert all(v == pytest.approx(1.0) for v in m.ap[cls].values())
        for errs in (m.tp_errors[cls], m.tp_errors_of_matches[cls]):
            assert errs.translation == pytest.approx(0.0, abs=1e-12)
            assert errs.scale == pytest.approx(0.0, abs=1e-12)
            assert errs.orientation == pytest.approx(0.0, abs=1e-12)
            assert errs.velocity == pytest.approx(0.0, abs=1e-12)
    assert m.mean_ap == pytest.approx(1.0)
    assert math.isnan(m.ap[ObjectClass.TRUCK][2.0])  # no truck ground truth: undefined
    assert m.counts[CAR].num_gt == 6 and m.counts[CAR].num_tp == 6
    assert m.counts[CAR].num_fp == 0 and m.counts[PED].num_tp == 3
    assert m.num_frames == 3


def test_hand_computed_precision_recall_and_ap() -> None:
    # 4 cars, detections by score: 0.9 far from everything (FP), then 0.8, 0.7, 0.6 exact
    # hits, one car missed. Cumulative: TP 0,1,2,3  FP 1,1,1,1
    #   precision 0, 1/2, 2/3, 3/4   recall 0, 1/4, 1/2, 3/4
    # linear interpolation at r = k/100, precision 0 above r = 3/4; AP sums
    # max(p - 0.1, 0) over k = 11..100 (90 bins) and divides by 90 * 0.9:
    #   k = 11..25: p = 2r                 -> sum (2k - 10)/100        = 39/10
    #   k = 26..50: p = 1/2 + (r - 1/4)*2/3 -> sum 0.4 + j/150, j=1..25 = 73/6
    #   k = 51..75: p = 2/3 + (r - 1/2)/3   -> sum 17/30 + j/300       = 61/4
    #   AP = (39/10 + 73/6 + 61/4) / 81 = 1879 / 4860
    truth = [gt(i, 10.0 * i, 0.0) for i in range(1, 5)]
    dets = [det(60.0, 30.0, 0.9), det(10.0, 0.0, 0.8), det(20.0, 0.0, 0.7),
            det(30.0, 0.0, 0.6)]
    m = evaluate_detections([(dets, truth)])
    for t in THS:
        assert m.ap[CAR][t] == pytest.approx(1879 / 4860, abs=1e-12)
    curve = m.curves[CAR][2.0]
    np.testing.assert_allclose(curve.precision[[0, 25, 50, 75, 76, 100]],
                               [0.0, 0.5, 2 / 3, 0.75, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(curve.confidence[[0, 25, 50, 75, 76]],
                               [0.9, 0.8, 0.7, 0.6, 0.0], atol=1e-12)
    assert curve.max_recall == pytest.approx(0.75)
    assert m.counts[CAR].num_tp == 3 and m.counts[CAR].num_fp == 1
    assert m.mean_ap == pytest.approx(1879 / 4860, abs=1e-12)


def test_shift_of_0_7_m_fails_half_metre_and_passes_one_metre() -> None:
    frames = [([det(10.0 + 0.7, 5.0 * k, 0.9 - 0.1 * k) for k in range(3)],
               [gt(k + 1, 10.0, 5.0 * k) for k in range(3)]) for _ in range(2)]
    m = evaluate_detections(frames)
    assert m.ap[CAR][0.5] == 0.0
    assert m.ap[CAR][1.0] == pytest.approx(1.0)
    assert m.ap[CAR][2.0] == pytest.approx(1.0) and m.ap[CAR][4.0] == pytest.approx(1.0)
    assert m.mean_ap == pytest.approx(0.75)
    assert m.ap_per_threshold[0.5] == 0.0
    assert m.tp_errors[CAR].translation == pytest.approx(0.7)
    assert m.tp_errors_of_matches[CAR].translation == pytest.approx(0.7)


def test_false_positive_with_high_score_lowers_ap() -> None:
    truth = [gt(1, 10.0, 0.0)]
    # FP first: precision 0 at recall 0 rising linearly to 1/2 at recall 1 (p = r/2);
    # sum over k = 21..100 of (k/200 - 0.1) = 4840/200 - 8 = 16.2 -> AP = 16.2 / 81 = 0.2
    high = evaluate_detections([([det(40.0, 0.0, 0.9), det(10.0, 0.0, 0.8)], truth)])
    assert high.ap[CAR][2.0] == pytest.approx(0.2, abs=1e-12)
    # FP last: precision 1 up to recall 1, where it drops to 1/2 (both points at r = 1;
    # np.interp takes the last) -> AP = (89 * 0.9 + 0.4) / 81
    low = evaluate_detections([([det(40.0, 0.0, 0.8), det(10.0, 0.0, 0.9)], truth)])
    assert low.ap[CAR][2.0] == pytest.approx(80.5 / 81, abs=1e-12)
    alone = evaluate_detections([([det(10.0, 0.0, 0.9)], truth)])
    assert alone.ap[CAR][2.0] == pytest.approx(1.0)


def test_scale_and_orientation_errors_of_known_boxes() -> None:
    # sizes (4, 2, 2) vs (2, 4, 1): IoU 0.2 after aligning centre and yaw -> ASE 0.8,
    # independent of the 0.3 m offset and the 0.5 rad yaw difference
    truth = [gt(1, 10.0, 0.0, yaw=0.2, size=(4.0, 2.0, 2.0))]
    m = evaluate_detections([([det(10.3, 0.0, yaw=0.7, size=(2.0, 4.0, 1.0))], truth)])
    assert m.tp_errors[CAR].scale == pytest.approx(0.8)
    assert m.tp_errors[CAR].orientation == pytest.approx(0.5)
    assert m.tp_errors[CAR].translation == pytest.approx(0.3)


@pytest.mark.parametrize(("gt_yaw", "det_yaw", "expected"), [
    (3.1, -3.1, 2 * math.pi - 6.2),   # across the +-pi seam: 0.083 rad, not 6.2
    (0.4, 0.4 + math.pi, math.pi),    # driving backwards: the largest error (2*pi period)
    (-1.0, -1.0 + 4 * math.pi, 0.0),  # full turns are no error
])
def test_orientation_error_wraps(gt_yaw: float, det_yaw: float, expected: float) -> None:
    m = evaluate_detections([([det(5.0, 0.0, yaw=det_yaw)], [gt(1, 5.0, 0.0, yaw=gt_yaw)])])
    assert m.tp_errors[CAR].orientation == pytest.approx(expected, abs=1e-9)


def test_velocity_error_in_bev_and_skipped_without_velocity() -> None:
    truth = [gt(1, 10.0, 0.0, vel=(0.0, 0.0, 0.0)), gt(2, 20.0, 0.0, vel=(1.0, 1.0, 0.0))]
    # (3, 4, 10) vs (0, 0, 0): BEV error 5 (z is not part of it)
    m = evaluate_detections([([det(10.0, 0.0, 0.9, vel=(3.0, 4.0, 10.0))], truth[:1])])
    assert m.tp_errors[CAR].velocity == pytest.approx(5.0)
    # second detection has no velocity: skipped, the mean is over the one that has one
    both = evaluate_detections([([det(10.0, 0.0, 0.9, vel=(3.0, 4.0, 0.0)),
                                  det(20.0, 0.0, 0.8)], truth)])
    assert both.tp_errors_of_matches[CAR].velocity == pytest.approx(5.0)
    assert both.tp_errors[CAR].velocity == pytest.approx(5.0)
    assert both.counts[CAR].num_tp == 2 and both.counts[CAR].num_tp_with_velocity == 1
    none = evaluate_detections([([det(10.0, 0.0, 0.9)], truth[:1])])
    assert math.isnan(none.tp_errors[CAR].velocity)
    assert none.tp_errors[CAR].translation == pytest.approx(0.0)


def test_tp_error_follows_the_confidence_curve_like_nuscenes() -> None:
    # 2 cars, both found: translation errors 0 (score 0.9) and 1.0 (score 0.8).
    # Recall 1/2 at conf 0.9 and 1 at 0.8; running means 0 and 1/2. For bins k = 11..50 the
    # confidence is 0.9 (error 0); for k = 51..100 it falls linearly to 0.8 and the error
    # rises to (k - 50)/100. Mean over the 90 bins: (sum_{j=1..50} j/100) / 90 = 12.75 / 90.
    truth = [gt(1, 10.0, 0.0), gt(2, 20.0, 0.0)]
    m = evaluate_detections([([det(10.0, 0.0, 0.9), det(21.0, 0.0, 0.8)], truth)])
    assert m.tp_errors[CAR].translation == pytest.approx(12.75 / 90, abs=1e-9)
    assert m.tp_errors_of_matches[CAR].translation == pytest.approx(0.5)


def test_higher_score_matches_first_even_when_farther() -> None:
    # nuScenes greedy: the 0.9 detection 1.5 m off takes the car; the 0.5 one 0.2 m off is
    # then a false positive (scores, not distances, decide) -> TP, FP: AP = 80.5 / 81 as in
    # the "FP last" case above, and the translation error is 1.5 m
    m = evaluate_detections([([det(11.5, 0.0, 0.9), det(10.2, 0.0, 0.5)], [gt(1, 10.0, 0.0)])])
    assert m.ap[CAR][2.0] == pytest.approx(80.5 / 81, abs=1e-12)
    assert m.tp_errors_of_matches[CAR].translation == pytest.approx(1.5)
    assert m.counts[CAR].num_tp == 1 and m.counts[CAR].num_fp == 1
    # at 1 m the 0.9 detection's nearest car is too far: FP; the 0.5 one then matches
    assert m.ap[CAR][1.0] == pytest.approx(0.2, abs=1e-12)


def test_detections_match_only_their_own_class() -> None:
    truth = [gt(1, 10.0, 0.0), gt(2, 5.0, 5.0, cls=PED, size=(0.5, 0.5, 1.8))]
    dets = [det(10.0, 0.0, 0.9, cls=PED, size=(0.5, 0.5, 1.8)),
            det(5.0, 5.0, 0.8, cls=PED, size=(0.5, 0.5, 1.8))]
    m = evaluate_detections([(dets, truth)])
    assert m.ap[CAR][2.0] == 0.0  # the car was only "detected" as a pedestrian
    assert m.counts[PED].num_tp == 1 and m.counts[PED].num_fp == 1
    assert m.counts[CAR].num_detections == 0


def test_range_filter_leaves_out_far_objects_and_detections() -> None:
    truth = [gt(1, 30.0, 0.0), gt(2, 0.0, -70.0)]
    dets = [det(30.0, 0.0, 0.9), det(-60.0, 0.0, 0.95)]
    full = evaluate_detections([(dets, truth)])
    # without a limit: FP first then TP, recall 1/2 -> p = r for r <= 1/2:
    # sum_{k=11..50} (k/100 - 0.1) = 8.2 -> AP = 8.2 / 81
    assert full.ap[CAR][2.0] == pytest.approx(8.2 / 81, abs=1e-12)
    near = evaluate_detections([(dets, truth)], DetectionEvalConfig(max_range_m=50.0))
    assert near.ap[CAR][2.0] == pytest.approx(1.0)
    assert near.counts[CAR].num_gt == 1 and near.num_gt_out_of_range == 1
    assert near.num_dropped_detections == 1


def test_ground_truth_without_evidence_is_ignored_not_missed() -> None:
    truth = [gt(1, 10.0, 0.0), gt(2, 30.0, 0.0, lidar_hits=0),
             gt(3, 50.0, 0.0, lidar_hits=0, radar_hits=2), gt(4, 60.0, 0.0, lidar_hits=0,
                                                               visible_pixels=40)]
    dets = [det(10.0, 0.0, 0.9), det(30.0, 0.0, 0.95)]  # the second sits on the unseen car
    plain = evaluate_detections([(dets, truth)])
    assert plain.counts[CAR].num_gt == 4 and plain.counts[CAR].num_tp == 2
    cfg = DetectionEvalConfig(ignore_gt_without_evidence=True)
    m = evaluate_detections([(dets, truth)], cfg)
    counts = m.counts[CAR]
    assert counts.num_gt == 3 and counts.num_ignored_gt == 1  # radar or camera evidence counts
    assert counts.num_tp == 1 and counts.num_fp == 0 and counts.num_dropped_on_ignored == 1
    # the nuScenes rule: camera pixels alone are no evidence; or a pixel count to reach
    for min_px, n_gt in ((None, 2), (41, 2), (40, 3)):
        cfg = DetectionEvalConfig(ignore_gt_without_evidence=True, min_visible_pixels=min_px)
        assert evaluate_detections([(dets, truth)], cfg).counts[CAR].num_gt == n_gt
    with pytest.raises(ConfigError, match="min_visible_pixels"):
        DetectionEvalConfig(min_visible_pixels=0)
    with pytest.raises(ConfigError, match="min_visible_pixels"):
        TrackingEvalConfig(min_visible_pixels=True)
    # one TP of 3 positives, no FP: precision 1 up to recall 1/3 -> 23 bins of 0.9
    assert m.ap[CAR][2.0] == pytest.approx(23 * 0.9 / 81, abs=1e-12)


def test_empty_inputs_give_defined_results() -> None:
    nothing = evaluate_detections([])
    assert nothing.num_frames == 0 and math.isnan(nothing.mean_ap)
    assert math.isnan(nothing.mean_tp_errors.translation)
    assert nothing.counts[CAR].num_gt == 0
    _json_round_trip(nothing)
    blank = evaluate_detections([([], []), ([], [])])
    assert math.isnan(blank.ap[CAR][2.0]) and math.isnan(blank.mean_ap)
    # ground truth but no detections: AP 0 (as nuScenes), errors undefined
    missed = evaluate_detections([([], [gt(1, 10.0, 0.0)])])
    assert missed.ap[CAR][2.0] == 0.0 and missed.mean_ap == 0.0
    assert math.isnan(missed.tp_errors[CAR].translation)
    # detections but no ground truth: AP undefined, the false positives still counted
    ghosts = evaluate_detections([([det(10.0, 0.0, 0.9)], [])])
    assert math.isnan(ghosts.ap[CAR][2.0]) and ghosts.counts[CAR].num_fp == 1
    data = _json_round_trip(ghosts)
    assert data["mean_ap"] is None
    assert len(data["curves"]["car"]["2"]["precision"]) == 101


def test_detection_in_wrong_frame_is_rejected() -> None:
    with pytest.raises(EvalInputError, match=r"frame 0 detections.*'world'"):
        evaluate_detections([([det(1.0, 0.0, frame_id="world")], [gt(1, 1.0, 0.0)])])


def test_to_dict_is_json_ready() -> None:
    m = evaluate_detections([([det(10.3, 0.0, 0.9)], [gt(1, 10.0, 0.0)])])
    data = _json_round_trip(m)
    assert data["ap"]["car"]["0.5"] == pytest.approx(1.0)
    assert data["ap"]["truck"]["0.5"] is None
    assert data["tp_errors"]["car"]["translation"] == pytest.approx(0.3)
    assert data["counts"]["car"]["num_tp"] == 1


# ------------------------------------------------------------------------------- tracking

def _two_cars(frames: int) -> list[list[GroundTruthObject]]:
    return [[gt(1, 10.0 + f, 0.0, vel=(1.0, 0.0, 0.0)), gt(2, 30.0, 5.0)] for f in
            range(frames)]


def test_perfect_tracks_give_mota_one() -> None:
    truth = _two_cars(5)
    frames = [([trk(7, 10.0 + f, 0.0, vel=(1.0, 0.0, 0.0)), trk(8, 30.0, 5.0,
                                                                  vel=(0.0, 0.0, 0.0))],
               truth[f]) for f in range(5)]
    m = evaluate_tracking(frames)
    assert m.mota == pytest.approx(1.0) and m.idf1 == pytest.approx(1.0)
    assert m.motp == pytest.approx(0.0)
    assert m.num_switches == 0 and m.num_false_positives == 0 and m.num_misses == 0
    assert m.mostly_tracked == 2 and m.mostly_lost == 0 and m.num_objects == 10
    assert m.velocity_error == pytest.approx(0.0) and m.num_velocity_pairs == 10


def test_id_swap_counts_two_switches() -> None:
    truth = _two_cars(4)
    frames = []
    for f in range(4):
        a, b = (7, 8) if f < 2 else (8, 7)  # the tracker swaps the ids after frame 1
        frames.append(([trk(a, 10.0 + f, 0.0, vel=(1.0, 2.0, 0.0)),
                        trk(b, 30.0, 5.0, vel=(0.0, 0.0, 0.0))], truth[f]))
    m = evaluate_tracking(frames)
    assert m.num_switches == 2
    # switched pairs are matches too: 8 pairs, the first car's off by 2 m/s each frame
    assert m.num_matches == 8 and m.num_velocity_pairs == 8
    assert m.velocity_error == pytest.approx(1.0)
    assert m.mota == pytest.approx(1.0 - 2 / 8)
    # best one-to-one assignment keeps 2 of each track's 4 frames: IDTP 4, IDFP 4, IDFN 4
    assert m.idf1 == pytest.approx(2 * 4 / (2 * 4 + 4 + 4))


def test_missed_frames_are_false_negatives_and_a_fragmentation() -> None:
    truth = [[gt(1, 10.0 + f, 0.0)] for f in range(5)]
    frames = [([] if f in (2, 3) else [trk(7, 10.0 + f, 0.0)], truth[f]) for f in range(5)]
    m = evaluate_tracking(frames)
    assert m.num_misses == 2 and m.num_false_positives == 0
    assert m.num_fragmentations == 1 and m.num_switches == 0
    assert m.mota == pytest.approx(1.0 - 2 / 5)
    assert m.partially_tracked == 1 and m.mostly_tracked == 0  # covered 3 of 5 frames


def test_hand_computed_mota_motp_and_velocity_error() -> None:
    a = (0.0, 0.0)
    b = (10.0, 0.0)
    frames = [
        # frame 0: A matched by 1 at 0.5 m, B missed, track 3 far away (FP)
        ([trk(1, 0.5, 0.0, vel=(1.0, 0.0, 0.0)), trk(3, 30.0, 0.0)],
         [gt(1, *a, vel=(2.0, 0.0, 0.0)), gt(2, *b, vel=(0.0, 3.0, 0.0))]),
        # frame 1: both matched, at 0.5 m and 1.0 m
        ([trk(1, 0.0, 0.5, vel=(1.0, 0.0, 0.0)), trk(2, 10.0, 1.0, vel=(0.0, 0.0, 0.0))],
         [gt(1, *a, vel=(2.0, 0.0, 0.0)), gt(2, *b, vel=(0.0, 3.0, 0.0))]),
        # frame 2: B has left, track 2 lingers (FP); A matched exactly
        ([trk(1, 0.0, 0.0, vel=(1.0, 0.0, 0.0)), trk(2, 10.0, 0.0)],
         [gt(1, *a, vel=(2.0, 0.0, 0.0))]),
    ]
    m = evaluate_tracking(frames)
    # objects 5, FN 1, FP 2, IDSW 0 -> MOTA = 1 - 3/5
    assert (m.num_objects, m.num_misses, m.num_false_positives) == (5, 1, 2)
    assert m.mota == pytest.approx(0.4)
    # MOTP = (0.5 + 0.5 + 1.0 + 0.0) / 4 matches
    assert m.num_matches == 4 and m.motp == pytest.approx(0.5)
    # velocity: A/1 error 1 in three frames, B/2 error 3 once -> (1 + 1 + 1 + 3) / 4
    assert m.num_velocity_pairs == 4 and m.velocity_error == pytest.approx(1.5)
    assert m.velocity_error_by_class[CAR] == pytest.approx(1.5)


def test_tracking_class_awareness_threshold_and_status() -> None:
    truth = [gt(1, 10.0, 0.0)]
    ped_track = [trk(5, 10.5, 0.0, cls=PED)]
    aware = evaluate_tracking([(ped_track, truth)])
    assert (aware.num_matches, aware.num_false_positives, aware.num_misses) == (0, 1, 1)
    agnostic = evaluate_tracking([(ped_track, truth)], TrackingEvalConfig(class_aware=False))
    assert agnostic.num_matches == 1 and agnostic.mota == pytest.approx(1.0)
    far = evaluate_tracking([([trk(5, 12.0, 0.0)], truth)])  # 2.0 m is not < 2.0 m
    assert far.num_matches == 0
    tentative = [trk(5, 10.0, 0.0, status=TrackStatus.TENTATIVE)]
    ignored = evaluate_tracking([(tentative, truth)])
    assert ignored.num_misses == 1 and ignored.num_tracks_filtered == 1
    counted = evaluate_tracking([(tentative, truth)], TrackingEvalConfig(
        track_statuses=(TrackStatus.CONFIRMED, TrackStatus.TENTATIVE)))
    assert counted.num_matches == 1


def test_tracking_range_and_evidence_filters() -> None:
    truth = [gt(1, 10.0, 0.0), gt(2, 80.0, 0.0), gt(3, 20.0, 0.0, lidar_hits=0)]
    tracks = [trk(5, 10.0, 0.0), trk(6, 20.0, 0.0)]
    plain = evaluate_tracking([(tracks, truth)])
    assert (plain.num_objects, plain.num_matches, plain.num_misses) == (3, 2, 1)
    cfg = TrackingEvalConfig(max_range_m=50.0, ignore_gt_without_evidence=True)
    m = evaluate_tracking([(tracks, truth)], cfg)
    assert (m.num_objects, m.num_matches, m.num_misses, m.num_false_positives) == (1, 1, 0, 0)
    assert m.num_ignored_objects == 1 and m.num_tracks_dropped_on_ignored == 1
    assert m.mota == pytest.approx(1.0)


def test_tracking_empty_inputs_give_defined_results() -> None:
    none = evaluate_tracking([])
    assert none.num_frames == 0 and math.isnan(none.mota) and none.num_objects == 0
    blank = evaluate_tracking([([], []), ([], [])])
    assert blank.num_frames == 2 and math.isnan(blank.mota) and math.isnan(blank.idf1)
    assert math.isnan(blank.velocity_error) and blank.num_false_positives == 0
    ghosts = evaluate_tracking([([trk(1, 5.0, 0.0)], [])])
    assert ghosts.num_false_positives == 1 and math.isnan(ghosts.mota)
    missed = evaluate_tracking([([], [gt(1, 5.0, 0.0)])])
    assert missed.mota == pytest.approx(0.0) and missed.num_misses == 1
    for result in (none, blank, ghosts, missed):
        data = _json_round_trip(result)
        assert data["num_frames"] == result.num_frames


def test_tracking_rejects_repeated_ids_and_wrong_types() -> None:
    with pytest.raises(EvalInputError, match="track id \\[4\\]"):
        evaluate_tracking([([trk(4, 1.0, 0.0), trk(4, 5.0, 0.0)], [])])
    with pytest.raises(EvalInputError, match="expected Track"):
        evaluate_tracking([([det(1.0, 0.0)], [])])  # type: ignore[list-item]
