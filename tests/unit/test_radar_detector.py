"""Tests of mm_perception.detection.radar (radar object detector), on synthetic scans.

Scans are built in numpy from targets with known over-ground velocities: each detection's
Doppler is the exact radial velocity of the target relative to the radar, ``(v_target -
v_radar) . los`` with ``v_radar = v_ego + omega x t_base_radar`` (the radar's own velocity,
base_link axes), which is what the simulator's radar model reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mm_perception.core.ego_motion import compensate_doppler
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import EgoState, ObjectClass, RadarScan
from mm_perception.detection.radar import (
    CLASSES,
    STAT_KEYS,
    YAW_UNKNOWN_VAR,
    RadarDetector,
    RadarDetectorConfig,
)

STAMP = 1_700_000_000_000_000_000
T_FRONT = SE3.from_xy_yaw(2.25, 0.0, 0.0, z=0.5)  # the car rig's bumper radar
T_CORNER = SE3.from_rpy(0.0, 0.0, math.radians(40.0), (2.0, 0.8, 0.5))  # front-left corner


def ego_state(v: float = 0.0, yaw_rate: float = 0.0, vy: float = 0.0,
              twist_covariance: np.ndarray | None = None) -> EgoState:
    return EgoState(STAMP, "odom", "base_link", SE3.identity(), np.array([v, vy, 0.0]),
                    np.array([0.0, 0.0, yaw_rate]), twist_covariance=twist_covariance)


def make_scan(points_base: np.ndarray, velocity_base: np.ndarray, rcs: np.ndarray | float,
              ego: EgoState, T_base_radar: SE3 = T_FRONT, doppler_noise: float = 0.0,
              seed: int = 0) -> RadarScan:
    """A radar scan of detections at ``points_base`` ``(N, 3)`` (base_link, m) on targets
    moving with ``velocity_base`` ``(N, 3)`` or ``(3,)`` (over ground, base_link axes)."""
    pts = np.atleast_2d(np.asarray(points_base, dtype=np.float64))
    vel = np.broadcast_to(np.asarray(velocity_base, dtype=np.float64), pts.shape)
    v_radar = ego.linear_velocity + np.cross(ego.angular_velocity, T_base_radar.translation)
    los = pts - T_base_radar.translation
    los /= np.linalg.norm(los, axis=1, keepdims=True)
    doppler = np.einsum("ij,ij->i", vel - v_radar, los)
    doppler += np.random.default_rng(seed).normal(0.0, 1.0, len(pts)) * doppler_noise
    rcs_arr = np.broadcast_to(np.asarray(rcs, dtype=np.float64), (len(pts),))
    xyz = T_base_radar.inverse().apply(pts)
    return RadarScan("radar_front", STAMP, "radar_front", xyz.astype(np.float32),
                     doppler.astype(np.float32), rcs_arr.astype(np.float32))


def face_points(a: tuple[float, float], b: tuple[float, float], n: int,
                z: float = 0.6) -> np.ndarray:
    """``(n, 3)`` points evenly along the segment a -> b (a visible face), base_link."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    xy = np.asarray(a) + t * (np.asarray(b) - np.asarray(a))
    return np.column_stack([xy, np.full(n, z)])


def concat_scans(*scans: RadarScan) -> RadarScan:
    return RadarScan("radar_front", STAMP, "radar_front",
                     np.concatenate([s.xyz for s in scans]),
                     np.concatenate([s.doppler for s in scans]),
                     np.concatenate([s.rcs for s in scans]))


def check_object(obj: object) -> None:
    """Invariants of every output object."""
    from mm_perception.core.types import DetectedObject

    assert isinstance(obj, DetectedObject)
    assert obj.box.frame_id == "base_link"
    assert obj.velocity is not None and obj.velocity.shape == (3,)
    assert obj.velocity[2] == 0.0
    cov = obj.covariance
    assert cov is not None and cov.shape == (6, 6)
    assert np.all(np.isfinite(cov))
    np.testing.assert_allclose(cov, cov.T, atol=1e-9)
    assert np.linalg.eigvalsh(cov).min() > 0.0
    assert 0.0 <= obj.score <= 1.0 and 0.0 <= obj.existence_prob <= 1.0
    assert set(obj.class_probs) == {c.value for c in CLASSES}
    assert math.isclose(sum(obj.class_probs.values()), 1.0, abs_tol=1e-9)
    assert obj.label.value == max(obj.class_probs, key=lambda k: obj.class_probs[k])
    assert 0.0 <= cov[3, 3] <= YAW_UNKNOWN_VAR + 1e-12


# ---------------------------------------------------------------- ego-motion compensation
@pytest.mark.parametrize("T_base_radar", [T_FRONT, T_CORNER], ids=["front", "corner"])
def test_static_world_has_zero_velocity_while_ego_drives_and_turns(T_base_radar: SE3) -> None:
    ego = ego_state(v=20.0, yaw_rate=0.3)
    # parked cars (rear / side faces) and a sign post, all static
    targets = [face_points((12.0, 4.0), (12.0, 5.8), 5),
               face_points((25.0, -6.0), (29.0, -6.0), 6),
               face_points((40.0, 10.0), (41.0, 11.5), 4),
               face_points((18.0, 15.0), (18.3, 15.2), 3)]
    scan = concat_scans(*(make_scan(p, np.zeros(3), 6.0, ego, T_base_radar) for p in targets))
    # uncompensated, the world rushes towards the radar at ~20 m/s
    assert np.all(scan.doppler < -10.0)
    det = RadarDetector()
    objs = det.detect(scan, T_base_radar, ego)
    assert len(objs) == 4
    for obj in objs:
        check_object(obj)
        assert np.linalg.norm(obj.velocity[:2]) < 0.05
        assert obj.covariance[3, 3] == pytest.approx(YAW_UNKNOWN_VAR)  # no heading when parked
        assert obj.box.yaw == 0.0
    stats = det.stats
    assert stats["moving"] == 0
    assert stats["static"] == len(scan)
    assert stats["input"] == len(scan) and stats["output"] == 4


def test_moving_ego_with_lateral_velocity_and_yaw_rate_recovers_target_velocity() -> None:
    ego = ego_state(v=15.0, yaw_rate=-0.4, vy=0.5)
    v_true = np.array([3.0, 8.0, 0.0])
    pts = face_points((9.0, -3.0), (9.5, 2.0), 6)  # near and wide: fully observable
    objs = RadarDetector().detect(make_scan(pts, v_true, 4.0, ego), T_FRONT, ego)
    assert len(objs) == 1
    np.testing.assert_allclose(objs[0].velocity[:2], v_true[:2], atol=1e-3)


def test_without_ego_state_nothing_is_guessed() -> None:
    ego = ego_state(v=10.0)
    scan = make_scan(face_points((20.0, 0.0), (20.0, 1.8), 5), np.zeros(3), 5.0, ego)
    det = RadarDetector()
    assert det.detect(scan, T_FRONT, None) == []
    assert det.stats["no_ego"] == 1
    assert det.stats["input"] == 5
    assert det.stats["output"] == 0


# ---------------------------------------------------------------- velocity from Doppler
def test_crossing_target_with_wide_azimuth_spread_recovers_full_2d_velocity() -> None:
    ego = ego_state(v=8.0, yaw_rate=0.1)
    v_true = np.array([0.0, 10.0, 0.0])  # crossing right to left in front of the ego
    pts = face_points((10.5, -2.2), (10.5, 2.2), 6)  # its side: ~25 degrees of azimuth
    scan = make_scan(pts, v_true, 3.0, ego, doppler_noise=0.05, seed=3)
    det = RadarDetector()
    objs = det.detect(scan, T_FRONT, ego)
    assert len(objs) == 1
    obj = objs[0]
    check_object(obj)
    np.testing.assert_allclose(obj.velocity[:2], v_true[:2], atol=0.5)
    # both directions resolved: the velocity block is small in every direction
    assert np.sqrt(np.linalg.eigvalsh(obj.covariance[4:, 4:]).max()) < 1.5
    assert obj.box.yaw == pytest.approx(math.pi / 2, abs=0.1)
    assert obj.covariance[3, 3] < 0.05
    assert det.stats["moving"] == 1 and det.stats["static"] == 0


def test_turning_target_cross_range_error_is_covered_by_the_covariance() -> None:
    """A turning car's yaw rate adds a Doppler slope over azimuth that a rigid-translation
    fit reads as cross-range velocity (``yaw_rate * range``): the covariance must cover it
    (here it is beyond the observed limit, so only the radial part is reported)."""
    ego = ego_state(v=0.0)
    centre = np.array([20.0, -7.0, 0.6])
    v_c = np.array([0.0, 7.0, 0.0])
    omega = np.array([0.0, 0.0, 0.6])  # turning left at 0.6 rad/s
    pts = face_points((18.0, -8.0), (22.0, -6.0), 8)  # its side, ~12 degrees of azimuth
    vel = v_c + np.cross(omega, pts - centre)  # rigid-body point velocities
    objs = RadarDetector().detect(make_scan(pts, vel, 6.0, ego), T_FRONT, ego)
    assert len(objs) == 1
    obj = objs[0]
    check_object(obj)
    err = obj.velocity[:2] - v_c[:2]
    P = obj.covariance[4:, 4:]
    # the error is plausible under the reported covariance (chi-square 2 dof, 99.9 %) ...
    assert err @ np.linalg.solve(P, err) < 13.8
    # ... whereas a covariance without the turning model error would call it impossible
    cfg = RadarDetectorConfig(yaw_rate_std_radps=0.0)
    naive = RadarDetector(cfg).detect(make_scan(pts, vel, 6.0, ego), T_FRONT, ego)[0]
    err0 = naive.velocity[:2] - v_c[:2]
    assert err0 @ np.linalg.solve(naive.covariance[4:, 4:], err0) > 13.8


def test_distant_target_gives_radial_component_with_covariance_wide_across_line_of_sight(
) -> None:
    ego = ego_state(v=25.0, yaw_rate=0.02)
    v_true = np.array([30.0, 3.0, 0.0])
    pts = face_points((80.0, 6.0), (80.0, 7.6), 4)  # the rear of a car, ~1 degree of azimuth
    objs = RadarDetector().detect(make_scan(pts, v_true, 8.0, ego), T_FRONT, ego)
    assert len(objs) == 1
    obj = objs[0]
    check_object(obj)
    los = obj.box.center[:2] - T_FRONT.translation[:2]
    los /= np.linalg.norm(los)
    across = np.array([-los[1], los[0]])
    # the radial component is measured ...
    assert obj.velocity[:2] @ los == pytest.approx(v_true[:2] @ los, abs=0.05)
    # ... the cross component is not (prior mean 0), and the covariance says so
    assert abs(obj.velocity[:2] @ across) < 0.2
    evals, evecs = np.linalg.eigh(obj.covariance[4:, 4:])
    assert abs(evecs[:, 1] @ across) > 0.99  # the large-variance direction is across the LOS
    assert np.sqrt(evals[1]) > 5.0
    assert np.sqrt(evals[0]) < 0.5
    assert evals[1] > 100.0 * evals[0]
    assert los @ obj.covariance[4:, 4:] @ los < 0.25


def test_velocity_is_expressed_in_base_link_axes_for_any_mounting() -> None:
    ego = ego_state(v=12.0, yaw_rate=0.2)
    v_true = np.array([-4.0, 6.0, 0.0])
    pts = face_points((7.0, 3.0), (9.0, 7.0), 6)
    out = []
    for T in (T_FRONT, T_CORNER):
        objs = RadarDetector().detect(make_scan(pts, v_true, 5.0, ego, T), T, ego)
        assert len(objs) == 1
        out.append(objs[0].velocity)
    np.testing.assert_allclose(out[0][:2], v_true[:2], atol=1e-3)
    np.testing.assert_allclose(out[1][:2], v_true[:2], atol=1e-3)


def test_twist_covariance_of_the_ego_widens_the_velocity_covariance() -> None:
    pts = face_points((10.0, -2.0), (10.0, 2.0), 6)
    covs = []
    for twist in (None, np.diag([0.5, 0.5, 0.0, 0.0, 0.0, 0.0])):
        ego = ego_state(v=10.0, twist_covariance=twist)
        objs = RadarDetector().detect(make_scan(pts, [0.0, 5.0, 0.0], 5.0, ego), T_FRONT, ego)
        covs.append(objs[0].covariance[4:, 4:])
    assert np.all(np.linalg.eigvalsh(covs[1] - covs[0]) > 0.3)


# ---------------------------------------------------------------- clustering
def test_targets_at_the_same_place_with_different_doppler_are_separated() -> None:
    ego = ego_state(v=5.0)
    pts = face_points((20.0, -0.5), (20.0, 0.5), 4)
    a = make_scan(pts, [12.0, 0.0, 0.0], 8.0, ego)   # pulling away
    b = make_scan(pts + np.array([0.1, 0.05, 0.0]), [-6.0, 0.0, 0.0], 8.0, ego)  # oncoming
    det = RadarDetector()
    objs = det.detect(concat_scans(a, b), T_FRONT, ego)
    assert len(objs) == 2
    vx = sorted(float(o.velocity[0]) for o in objs)
    assert vx == pytest.approx([-6.0, 12.0], abs=0.2)
    # the same points with the same Doppler are one object
    assert len(det.detect(concat_scans(a, a), T_FRONT, ego)) == 1


def test_row_of_parked_cars_is_split_into_cars() -> None:
    ego = ego_state(v=3.0)
    rows = [face_points((12.8, y - 0.8), (12.8, y + 0.8), 5) for y in (-2.7, 0.0, 2.7)]
    scan = concat_scans(*(make_scan(p, np.zeros(3), 6.0, ego) for p in rows))
    objs = RadarDetector().detect(scan, T_FRONT, ego)
    assert len(objs) == 3
    ys = sorted(float(o.box.center[1]) for o in objs)
    assert ys == pytest.approx([-2.7, 0.0, 2.7], abs=0.5)
    assert all(o.label is ObjectClass.CAR for o in objs)


def test_long_static_guardrail_is_not_an_object() -> None:
    ego = ego_state(v=20.0)
    rail = face_points((5.0, 6.0), (60.0, 6.0), 60)  # a return every metre
    det = RadarDetector()
    assert det.detect(make_scan(rail, np.zeros(3), 2.0, ego), T_FRONT, ego) == []
    assert det.stats["rejected_extent"] + det.stats["rejected_static"] >= 1


# ---------------------------------------------------------------- position, class, score
def test_box_centre_is_pushed_back_from_the_seen_face() -> None:
    ego = ego_state(v=20.0)
    centre, length = np.array([30.0, 0.0]), 4.4
    rear = face_points((centre[0] - length / 2, -0.8), (centre[0] - length / 2, 0.8), 6)
    objs = RadarDetector().detect(make_scan(rear, [25.0, 0.0, 0.0], 9.0, ego), T_FRONT, ego)
    assert len(objs) == 1
    obj = objs[0]
    assert obj.label is ObjectClass.CAR
    assert obj.box.yaw == pytest.approx(0.0, abs=0.05)
    assert centre[0] - length / 2 + 1.0 < obj.box.center[0] < centre[0] + 0.5
    assert obj.box.center[1] == pytest.approx(0.0, abs=0.2)
    assert obj.box.center[2] == pytest.approx(obj.box.size[2] / 2)  # stands on the ground
    # cross-range variance grows with range: compare a near copy
    near = face_points((10.0 - length / 2, -0.8), (10.0 - length / 2, 0.8), 6)
    obj_near = RadarDetector().detect(make_scan(near, [25.0, 0.0, 0.0], 9.0, ego), T_FRONT,
                                      ego)[0]
    assert obj.covariance[1, 1] > obj_near.covariance[1, 1]
    assert obj.covariance[0, 0] == pytest.approx(obj_near.covariance[0, 0], rel=1e-6)


@pytest.mark.parametrize(("total_rcs", "speed", "expected"), [
    (-12.0, 1.2, {ObjectClass.PEDESTRIAN}),
    (-4.0, 5.0, {ObjectClass.CYCLIST}),
    (9.0, 12.0, {ObjectClass.CAR}),
    (24.0, 12.0, {ObjectClass.TRUCK, ObjectClass.BUS}),
])
def test_class_from_rcs_and_speed(total_rcs: float, speed: float,
                                  expected: set[ObjectClass]) -> None:
    ego = ego_state(v=0.0)
    pts = face_points((15.0, 3.0), (15.0, 3.5), 3)
    per_point = total_rcs - 10.0 * math.log10(3)  # the cluster RCS is the linear sum
    objs = RadarDetector().detect(make_scan(pts, [speed, 0.0, 0.0], per_point, ego), T_FRONT,
                                  ego)
    assert len(objs) == 1
    check_object(objs[0])
    assert objs[0].label in expected
    assert max(objs[0].class_probs.values()) < 1.0  # radar class is soft


def test_fast_weak_target_is_not_a_pedestrian() -> None:
    ego = ego_state(v=0.0)
    pts = face_points((15.0, 3.0), (15.0, 3.5), 3)
    objs = RadarDetector().detect(make_scan(pts, [15.0, 0.0, 0.0], -16.8, ego), T_FRONT, ego)
    assert objs[0].class_probs["pedestrian"] < 0.1


def test_moving_clusters_score_higher_than_static_and_single_detections_lowest() -> None:
    ego = ego_state(v=10.0)
    pts = face_points((20.0, -0.8), (20.0, 0.8), 4)
    det = RadarDetector()
    moving = det.detect(make_scan(pts, [5.0, 0.0, 0.0], 6.0, ego), T_FRONT, ego)[0]
    static = det.detect(make_scan(pts, np.zeros(3), 6.0, ego), T_FRONT, ego)[0]
    single = det.detect(make_scan(pts[:1], [5.0, 0.0, 0.0], 12.0, ego), T_FRONT, ego)[0]
    assert moving.score > static.score > single.score
    assert single.score < 0.7


# ---------------------------------------------------------------- degenerate inputs
def test_empty_scan_gives_no_objects() -> None:
    ego = ego_state(v=10.0)
    scan = RadarScan("radar_front", STAMP, "radar_front", np.zeros((0, 3), np.float32),
                     np.zeros(0, np.float32), np.zeros(0, np.float32))
    det = RadarDetector()
    assert det.detect(scan, T_FRONT, ego) == []
    assert det.stats["input"] == 0 and det.stats["output"] == 0


def test_non_finite_rows_are_dropped_and_counted() -> None:
    ego = ego_state(v=10.0)
    good = make_scan(face_points((15.0, -0.8), (15.0, 0.8), 5), [4.0, 0.0, 0.0], 6.0, ego)
    xyz = np.concatenate([good.xyz, [[np.nan, 1, 0], [5, 5, 0], [6, 1, 0], [0, 0, 0]]])
    doppler = np.concatenate([good.doppler, [1.0, np.inf, 1.0, 1.0]])
    rcs = np.concatenate([good.rcs, [5.0, 5.0, np.nan, 5.0]])
    scan = RadarScan("radar_front", STAMP, "radar_front", xyz, doppler, rcs)
    det = RadarDetector()
    objs = det.detect(scan, T_FRONT, ego)
    assert det.stats["non_finite"] == 4  # NaN position, inf Doppler, NaN RCS, range 0
    assert len(objs) == 1
    np.testing.assert_allclose(objs[0].velocity[:2], [4.0, 0.0], atol=0.05)
    all_bad = RadarScan("radar_front", STAMP, "radar_front", xyz[-4:], doppler[-4:], rcs[-4:])
    assert det.detect(all_bad, T_FRONT, ego) == []
    assert det.stats["non_finite"] == 4


def test_single_detections_kept_only_when_strong_and_moving() -> None:
    ego = ego_state(v=10.0)
    det = RadarDetector()
    p = np.array([[30.0, 2.0, 0.5]])
    strong_moving = det.detect(make_scan(p, [15.0, 0.0, 0.0], 8.0, ego), T_FRONT, ego)
    assert len(strong_moving) == 1
    obj = strong_moving[0]
    check_object(obj)
    los = (p[0, :2] - T_FRONT.translation[:2]) / np.linalg.norm(p[0, :2] - T_FRONT.translation[:2])
    assert obj.velocity[:2] @ los == pytest.approx(15.0 * los[0], abs=0.05)
    assert obj.stamp_ns == STAMP and obj.sources == ("radar",)
    weak_moving = det.detect(make_scan(p, [15.0, 0.0, 0.0], -10.0, ego), T_FRONT, ego)
    assert weak_moving == [] and det.stats["rejected_single"] == 1
    medium_static = det.detect(make_scan(p, np.zeros(3), 2.0, ego), T_FRONT, ego)
    assert medium_static == [] and det.stats["rejected_single"] == 1


def test_stamp_and_sensor_name_are_passed_through() -> None:
    ego = ego_state(v=10.0)
    scan = make_scan(face_points((15.0, -0.8), (15.0, 0.8), 5), np.zeros(3), 6.0, ego)
    objs = RadarDetector().detect(scan, T_FRONT, ego, stamp_ns=STAMP + 5, sensor="radar_fl")
    assert objs[0].stamp_ns == STAMP + 5 and objs[0].sources == ("radar_fl",)
    with pytest.raises(ValueError, match="stamp_ns"):
        RadarDetector().detect(scan, T_FRONT, ego, stamp_ns=-1)
    with pytest.raises(TypeError, match="RadarScan"):
        RadarDetector().detect("scan", T_FRONT, ego)  # type: ignore[arg-type]


def test_stats_have_every_key_and_are_read_only() -> None:
    det = RadarDetector()
    assert set(det.stats) == set(STAT_KEYS)
    ego = ego_state(v=10.0)
    det.detect(make_scan(face_points((15.0, -0.8), (15.0, 0.8), 5), np.zeros(3), 6.0, ego),
               T_FRONT, ego)
    stats = det.stats
    assert isinstance(stats, Mapping) and set(stats) == set(STAT_KEYS)
    with pytest.raises(TypeError):
        stats["input"] = 3  # type: ignore[index]
    assert stats["clusters"] == 1


def test_detection_is_deterministic() -> None:
    ego = ego_state(v=13.0, yaw_rate=0.1)
    rng = np.random.default_rng(7)
    pts = np.column_stack([rng.uniform(5, 60, 40), rng.uniform(-20, 20, 40), np.full(40, 0.5)])
    vel = np.repeat(rng.normal(0, 8, (8, 3)) * [1, 1, 0], 5, axis=0)
    scan = make_scan(pts, vel, rng.normal(5, 5, 40), ego)
    a = RadarDetector().detect(scan, T_FRONT, ego)
    b = RadarDetector().detect(scan, T_FRONT, ego)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.box.center, y.box.center)
        np.testing.assert_array_equal(x.covariance, y.covariance)


_finite_or_not = st.one_of(st.floats(-200.0, 200.0), st.sampled_from(
    [np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 40), data=st.data(), v=st.floats(-40.0, 40.0),
       w=st.floats(-1.0, 1.0))
def test_arbitrary_scans_never_raise_and_give_valid_objects(n: int, data: st.DataObject,
                                                            v: float, w: float) -> None:
    xyz = data.draw(arrays(np.float32, (n, 3), elements=_finite_or_not.map(np.float32)))
    doppler = data.draw(arrays(np.float32, (n,), elements=_finite_or_not.map(np.float32)))
    rcs = data.draw(arrays(np.float32, (n,), elements=_finite_or_not.map(np.float32)))
    scan = RadarScan("radar_front", STAMP, "radar_front", xyz, doppler, rcs)
    det = RadarDetector()
    objs = det.detect(scan, T_CORNER, ego_state(v=v, yaw_rate=w))
    for obj in objs:
        check_object(obj)
    stats = det.stats
    assert stats["input"] == n and stats["output"] == len(objs)
    assert stats["non_finite"] <= n


@settings(max_examples=30, deadline=None)
@given(vx=st.floats(-30.0, 30.0), vy=st.floats(-30.0, 30.0),
       x=st.floats(6.0, 60.0), y=st.floats(-30.0, 30.0), ego_v=st.floats(0.0, 30.0))
def test_radial_component_is_always_recovered(vx: float, vy: float, x: float, y: float,
                                              ego_v: float) -> None:
    ego = ego_state(v=ego_v, yaw_rate=0.05)
    pts = face_points((x, y), (x + 0.5, y + 1.5), 4)
    v_true = np.array([vx, vy])
    scan = make_scan(pts, [vx, vy, 0.0], 8.0, ego)
    # a target whose returns are partly static-looking (crossing at boresight) may be split
    # (see the clustering notes of the module), and so may a fast one crossing very near
    # (its Doppler changes faster over azimuth than the default tolerance): not what this
    # test is about, so such targets are skipped and the azimuth tolerance widened
    over_ground = compensate_doppler(scan, T_FRONT, ego)
    assume(np.all(np.abs(over_ground) >= 0.6) or np.all(np.abs(over_ground) <= 0.4))
    config = RadarDetectorConfig(cluster_doppler_per_rad_mps=60.0)
    objs = RadarDetector(config).detect(scan, T_FRONT, ego)
    assert len(objs) == 1
    obj = objs[0]
    check_object(obj)
    u = pts[:, :2] - T_FRONT.translation[:2]
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    _, vecs = np.linalg.eigh(u.T @ u)
    # the best-resolved direction (~ the mean line of sight) is always exact ...
    assert vecs[:, 1] @ obj.velocity[:2] == pytest.approx(vecs[:, 1] @ v_true, abs=0.02)
    # ... the other one is exact too, or reported unresolved (large variance)
    err = vecs[:, 0] @ (obj.velocity[:2] - v_true)
    var = vecs[:, 0] @ obj.covariance[4:, 4:] @ vecs[:, 0]
    assert abs(err) < 0.02 or var > 4.0


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize(("field", "value"), [
    ("cluster_eps_xy_m", 0.0),
    ("cluster_eps_doppler_mps", -1.0),
    ("cluster_doppler_per_rad_mps", -0.5),
    ("doppler_std_mps", float("nan")),
    ("azimuth_std_deg", float("inf")),
    ("max_speed_mps", "fast"),
    ("static_min_rcs_dbsm", None),
    ("min_samples", 0),
    ("min_samples", 2.5),
    ("static_min_points", True),
    ("extent_std_fraction", -0.1),
    ("class_prob_floor", 1.0),
    ("min_range_m", 600.0),
])
def test_config_errors_name_the_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field) as err:
        RadarDetectorConfig(**{field: value})  # type: ignore[arg-type]
    assert repr(value) in str(err.value)


def test_config_per_class_tables_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"class_rcs_mean_dbsm.*'plane'"):
        RadarDetectorConfig(class_rcs_mean_dbsm={**{c: 0.0 for c in CLASSES}, "plane": 1.0})
    with pytest.raises(ConfigError, match=r"class_prior lacks.*bus"):
        RadarDetectorConfig(class_prior={c: 1.0 for c in CLASSES if c is not ObjectClass.BUS})
    with pytest.raises(ConfigError, match=r"class_rcs_std_db\[car\].*> 0"):
        RadarDetectorConfig(class_rcs_std_db={c: (0.0 if c is ObjectClass.CAR else 3.0)
                                              for c in CLASSES})
    with pytest.raises(ConfigError, match=r"class_size_m\[truck\]"):
        RadarDetectorConfig(class_size_m={c: ((1.0, -2.0, 3.0) if c is ObjectClass.TRUCK
                                              else (1.0, 1.0, 1.0)) for c in CLASSES})
    with pytest.raises(ConfigError, match="unknown"):
        RadarDetectorConfig(class_max_speed_mps={**{c: 1.0 for c in CLASSES},
                                                 ObjectClass.UNKNOWN: 1.0})
    # string keys are accepted and normalised
    cfg = RadarDetectorConfig(class_prior={c.value: 1.0 for c in CLASSES})
    assert set(cfg.class_prior) == set(CLASSES)
    with pytest.raises(TypeError, match="RadarDetectorConfig"):
        RadarDetector("defaults")  # type: ignore[arg-type]


def test_config_property_and_defaults() -> None:
    cfg = RadarDetectorConfig(cluster_eps_xy_m=2)
    det = RadarDetector(cfg)
    assert det.config is cfg
    assert isinstance(cfg.cluster_eps_xy_m, float)
    assert RadarDetector().config == RadarDetectorConfig()
