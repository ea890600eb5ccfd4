"""Tracking: gated association, BEV EKFs (CV / CTRV) and the multi-object tracker.

References are independent of the code under test: brute-force enumeration for the
assignment, per-pair ``np.linalg.inv`` for Mahalanobis costs, finite differences for the
Jacobians, numerical integration of the continuous noise for the process noise, Monte
Carlo for the output covariance, and simulated targets with known truth for the tracker.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pytest

from mm_perception.core.errors import ConfigError
from mm_perception.core.types import Box3D, DetectedObject, ObjectClass, Track, TrackStatus
from mm_perception.planning.safety import SafetyConfig
from mm_perception.tracking.association import (
    _compact,
    associate,
    associate_pairs,
    bev_distance_costs,
    candidate_pairs,
    mahalanobis_costs,
    mahalanobis_pair_costs,
)
from mm_perception.tracking.ekf import (
    EKF,
    MOTION_ROWS,
    BatchEKF,
    CTRVConfig,
    CVConfig,
    MeasurementModel,
    congruence_rows,
    ctrv_transition,
    cv_transition,
    measurement,
    output_to_ctrv,
    process_noise,
    resolve_yaw_ambiguity,
    to_output,
    transition,
    transition_rows,
    wrap_angle,
)
from mm_perception.tracking.tracker import MultiObjectTracker, TrackerConfig, default_motion

CAR, PED, UNKNOWN = ObjectClass.CAR, ObjectClass.PEDESTRIAN, ObjectClass.UNKNOWN
LIVE = (TrackStatus.CONFIRMED, TrackStatus.COASTING)
DT = 0.1


def ns(k: int, dt: float = DT) -> int:
    return round(k * dt * 1e9)


def cov6(sp: float = 0.2, sz: float = 0.1, syaw: float = 0.05, sv: float = 0.2) -> np.ndarray:
    return np.diag([sp**2, sp**2, sz**2, syaw**2, sv**2, sv**2])


def det(x: float, y: float, yaw: float = 0.0, *,
        vel: Sequence[float] | np.ndarray | None = None,
        cov: np.ndarray | None = None, label: ObjectClass = CAR, frame: str = "odom",
        score: float = 0.9, probs: dict[str, float] | None = None,
        sources: tuple[str, ...] = ("lidar",)) -> DetectedObject:
    size = (0.6, 0.6, 1.7) if label is PED else (4.5, 1.9, 1.6)
    return DetectedObject(Box3D(np.array([x, y, size[2] / 2]), np.array(size), yaw, frame),
                          label, score, class_probs=probs or {},
                          velocity=None if vel is None else np.array([vel[0], vel[1], 0.0]),
                          covariance=cov, sources=sources)


def vel_of(track: Track) -> np.ndarray:
    assert track.object.velocity is not None
    return track.object.velocity


def live(tracks: Sequence[Track]) -> list[Track]:
    return [t for t in tracks if t.status in LIVE]


def nearest(tracks: Sequence[Track], p: np.ndarray) -> Track:
    return min(tracks, key=lambda t: float(np.linalg.norm(t.object.box.center[:2] - p)))


# --------------------------------------------------------------------------- association
def _brute_force(cost: np.ndarray, gate: float, maximize_matches: bool) -> tuple[float, ...]:
    """Best objective over every one-to-one matching of admissible pairs."""
    n_r, n_c = cost.shape
    ok = np.isfinite(cost) & (cost <= gate)
    best: tuple[float, ...] | None = None
    for perm in itertools.product(*[[-1, *range(n_c)] for _ in range(n_r)]):
        cols = [c for c in perm if c >= 0]
        if len(cols) != len(set(cols)):
            continue
        if any(c >= 0 and not ok[r, c] for r, c in enumerate(perm)):
            continue
        pairs = [(r, c) for r, c in enumerate(perm) if c >= 0]
        total = sum(cost[r, c] for r, c in pairs)
        key = ((-len(pairs), total) if maximize_matches
               else (-sum(gate - cost[r, c] for r, c in pairs),))
        if best is None or key < best:
            best = key
    assert best is not None
    return best


@pytest.mark.parametrize("maximize_matches", [True, False])
def test_associate_equals_brute_force_optimum(maximize_matches: bool) -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        n_r, n_c = rng.integers(0, 5, size=2)
        cost = rng.uniform(0, 10, (n_r, n_c))
        cost[rng.random((n_r, n_c)) < 0.2] = np.inf
        cost[rng.random((n_r, n_c)) < 0.1] = np.nan
        gate = 6.0
        matches, un_r, un_c = associate(cost, gate, maximize_matches)
        # a valid one-to-one matching of admissible pairs that partitions rows / columns
        assert len(set(matches[:, 0])) == len(matches) == len(set(matches[:, 1]))
        assert all(cost[r, c] <= gate for r, c in matches)
        assert sorted([*matches[:, 0], *un_r]) == list(range(n_r))
        assert sorted([*matches[:, 1], *un_c]) == list(range(n_c))
        got = ((-len(matches), float(sum(cost[r, c] for r, c in matches)))
               if maximize_matches
               else (-float(sum(gate - cost[r, c] for r, c in matches)),))
        np.testing.assert_allclose(got, _brute_force(cost, gate, maximize_matches),
                                   atol=1e-9)


def test_objectives_differ_where_a_far_pair_displaces_a_close_one() -> None:
    # row 0 can take col 0 (cost 1) or col 1 (cost 8); row 1 only col 0 (cost 8)
    cost = np.array([[1.0, 8.0], [8.0, np.inf]])
    more, _, _ = associate(cost, 9.0, maximize_matches=True)
    gain, _, _ = associate(cost, 9.0, maximize_matches=False)
    assert more.tolist() == [[0, 1], [1, 0]]  # two pairs beat one
    assert gain.tolist() == [[0, 0]]  # gain 8 beats 1 + 1


def test_associate_never_matches_above_the_gate_and_handles_empty() -> None:
    matches, un_r, un_c = associate(np.full((3, 2), 50.0), gate=9.0)
    assert matches.shape == (0, 2) and un_r.tolist() == [0, 1, 2] and un_c.tolist() == [0, 1]
    for shape in ((0, 3), (3, 0), (0, 0)):
        m, r, c = associate(np.zeros(shape), 1.0)
        assert m.shape == (0, 2) and r.size == shape[0] and c.size == shape[1]
    with pytest.raises(ValueError, match="2-D"):
        associate(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="gate"):
        associate(np.zeros((2, 2)), math.inf)


def test_sparse_association_and_candidates_equal_the_dense_form() -> None:
    rng = np.random.default_rng(1)
    tracks = rng.uniform(-50, 50, (60, 2))
    dets = np.vstack([tracks + rng.normal(0, 0.8, tracks.shape), rng.uniform(-50, 50, (20, 2))])
    dist = bev_distance_costs(tracks, dets)
    rows, cols = candidate_pairs(tracks, dets, 3.0)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == sorted(
        zip(*np.nonzero(dist <= 3.0), strict=True))
    for maximize in (True, False):
        dense = associate(np.where(dist <= 3.0, dist, np.inf), 3.0, maximize)
        sparse = associate_pairs(rows, cols, dist[rows, cols], 60, 80, 3.0, maximize)
        for a, b in zip(dense, sparse, strict=True):
            np.testing.assert_array_equal(a, b)
    # the k-d tree path (large problems) finds the same pairs
    big_t, big_d = rng.uniform(-300, 300, (400, 2)), rng.uniform(-300, 300, (300, 2))
    r_kd, c_kd = candidate_pairs(big_t, big_d, 12.0)
    r_bf, c_bf = np.nonzero(bev_distance_costs(big_t, big_d) <= 12.0)
    np.testing.assert_array_equal(r_kd, r_bf)
    np.testing.assert_array_equal(c_kd, c_bf)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_mahalanobis_costs_match_a_per_pair_reference(m: int) -> None:
    rng = np.random.default_rng(m)
    n = 4
    H = rng.normal(size=(m, n))
    xm = rng.normal(size=(5, n))
    a = rng.normal(size=(5, n, n))
    xp = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(n)
    zm = rng.normal(size=(6, m)) * 3
    b = rng.normal(size=(6, m, m))
    zr = b @ b.transpose(0, 2, 1) + 0.1 * np.eye(m)
    angle = [m - 1]
    got = mahalanobis_costs(xm, xp, zm, zr, H, angle_dims=angle)
    ref = np.zeros((5, 6))
    for t in range(5):
        for d in range(6):
            y = zm[d] - H @ xm[t]
            y[angle] = (y[angle] + np.pi) % (2 * np.pi) - np.pi
            ref[t, d] = y @ np.linalg.inv(H @ xp[t] @ H.T + zr[d]) @ y
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    rows, cols = np.array([0, 4, 2]), np.array([5, 0, 2])
    np.testing.assert_allclose(mahalanobis_pair_costs(xm, xp, zm, zr, rows, cols, H, angle),
                               ref[rows, cols], rtol=1e-9)
    # a pair whose innovation covariance is not positive definite is never admissible
    bad = zr.copy()
    bad[0] = -np.eye(m) * 1e3
    assert np.isinf(mahalanobis_costs(xm, xp, zm, bad, H)[:, 0]).all()


# --------------------------------------------------------------------------- EKF
def _numeric_jacobian(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                      eps: float = 1e-6) -> np.ndarray:
    cols = []
    for i in range(x.size):
        dx = np.zeros_like(x)
        dx[i] = eps
        diff = fn(x + dx) - fn(x - dx)
        if diff.size > 3:
            diff[3] = wrap_angle(diff[3])  # the state's yaw wraps
        cols.append(diff / (2 * eps))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("yaw_rate", [0.0, 1e-7, 0.4, -2.5])
def test_ctrv_jacobian_matches_finite_differences(yaw_rate: float) -> None:
    x = np.array([3.0, -2.0, 0.5, 0.7, 8.0, yaw_rate])
    dt = 0.3
    new, jac = ctrv_transition(x[None], dt)
    np.testing.assert_allclose(
        _numeric_jacobian(lambda s: ctrv_transition(s[None], dt)[0][0], x), jac[0], atol=1e-6)
    # the arc is the textbook one (v / w form) away from w = 0, a straight line at w = 0
    if abs(yaw_rate) > 0.1:
        v, w, th = 8.0, yaw_rate, 0.7
        ref_x = 3.0 + v / w * (np.sin(th + w * dt) - np.sin(th))
        ref_y = -2.0 + v / w * (np.cos(th) - np.cos(th + w * dt))
        np.testing.assert_allclose(new[0, :2], [ref_x, ref_y], rtol=1e-12)
    else:
        np.testing.assert_allclose(new[0, :2], [3.0 + 8 * dt * np.cos(0.7),
                                                -2.0 + 8 * dt * np.sin(0.7)], atol=1e-6)


def test_fused_transition_equals_per_model_transitions() -> None:
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(20, 6)) * [10, 10, 1, 2, 5, 0.5]
    is_ctrv = rng.random(20) < 0.5
    new, jac = transition(mean, is_ctrv, 0.2)
    cv_m, cv_j = cv_transition(mean[~is_ctrv], 0.2)
    ct_m, ct_j = ctrv_transition(mean[is_ctrv], 0.2)
    np.testing.assert_allclose(new[~is_ctrv], cv_m)
    np.testing.assert_allclose(jac[~is_ctrv], cv_j)
    np.testing.assert_allclose(new[is_ctrv], ct_m)
    np.testing.assert_allclose(jac[is_ctrv], ct_j)


def test_velocity_measurement_jacobian_matches_finite_differences() -> None:
    x = np.array([1.0, 2.0, 0.3, -1.1, 6.0, 0.3])
    for is_ctrv in (True, False):
        flag = np.array([is_ctrv])
        h, jac, _ = measurement(MeasurementModel.POSE_VELOCITY, x[None], flag)

        def h_of(state: np.ndarray, f: np.ndarray = flag) -> np.ndarray:
            return measurement(MeasurementModel.POSE_VELOCITY, state[None], f)[0][0]

        numeric = _numeric_jacobian(h_of, x)
        np.testing.assert_allclose(jac[0], numeric, atol=1e-6)
    h, _, _ = measurement(MeasurementModel.VELOCITY, x[None], np.array([True]))
    np.testing.assert_allclose(h[0], 6.0 * np.array([np.cos(-1.1), np.sin(-1.1)]))


def test_process_noise_equals_the_integrated_continuous_noise() -> None:
    """Q = int_0^dt F(s) L Qc L^T F(s)^T ds for the linearised models (v = 0, w = 0)."""
    dt, noise = 0.25, np.array([[1.5, 0.7, 0.2]])
    qa, qy, qz = noise[0] ** 2
    for is_ctrv in (False, True):
        yaw = 0.6
        mean = np.array([[0.0, 0.0, 0.0, yaw, 0.0, 0.0]])
        a = np.zeros((6, 6))  # continuous dynamics
        big_l = np.zeros((6, 3))  # noise inputs: accel, yaw, z
        if is_ctrv:
            a[0, 4], a[1, 4], a[3, 5] = np.cos(yaw), np.sin(yaw), 1.0
            big_l[4, 0], big_l[5, 1], big_l[2, 2] = 1.0, 1.0, 1.0
            qc = np.diag([qa, qy, qz])
        else:
            a[0, 4], a[1, 5] = 1.0, 1.0
            big_l = np.zeros((6, 4))
            big_l[4, 0], big_l[5, 1], big_l[3, 2], big_l[2, 3] = 1.0, 1.0, 1.0, 1.0
            qc = np.diag([qa, qa, qy, qz])
        s = np.linspace(0.0, dt, 2001)
        vals = np.array([(np.eye(6) + a * t) @ big_l @ qc @ big_l.T @ (np.eye(6) + a * t).T
                         for t in s])
        ref = np.trapezoid(vals, s, axis=0)
        got = process_noise(mean, np.array([is_ctrv]), noise, dt)[0]
        np.testing.assert_allclose(got, ref, atol=1e-9)


def test_cv_velocity_converges_from_positions_only() -> None:
    """Position-only detections of a constant-velocity target (0.2 m noise, 10 Hz)."""
    true_v = np.array([4.0, -1.5])
    errors = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        f = EKF(CVConfig(accel_std=0.5), [0, 0, 0, 0, 0, 0], np.diag([0.04, 0.04, 1, 1, 25, 25]))
        for k in range(1, 81):
            f.predict(DT)
            assert f.update(true_v * k * DT + rng.normal(0, 0.2, 2), np.eye(2) * 0.04,
                            MeasurementModel.POSITION)
            if k > 50:
                errors.append(float(np.linalg.norm(f.output()[0][4:] - true_v)))
    assert float(np.sqrt(np.mean(np.square(errors)))) < 0.3


def test_cv_covariance_is_consistent_with_a_target_that_follows_the_model() -> None:
    """Truth driven by white acceleration of the configured intensity (integrated in fine
    Euler steps, not with the filter's own Q): the velocity NEES averages its dof."""
    accel_std = 1.0
    nees = []
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        p, v = np.zeros(2), np.array([3.0, 1.0])
        f = EKF(CVConfig(accel_std=accel_std), [0, 0, 0, 0, 3, 1],
                np.diag([0.04, 0.04, 1, 1, 0.01, 0.01]))
        sub = 50
        for _ in range(40):
            for _ in range(sub):
                h = DT / sub
                p = p + v * h
                v = v + rng.normal(0, accel_std * math.sqrt(h), 2)
            f.predict(DT)
            f.update(p + rng.normal(0, 0.2, 2), np.eye(2) * 0.04, MeasurementModel.POSITION)
        m, cov = f.output()
        e = m[4:] - v
        nees.append(float(e @ np.linalg.solve(cov[4:, 4:], e)))
    assert 0.6 < float(np.mean(nees)) / 2 < 1.5


def test_ctrv_beats_cv_on_a_turning_target() -> None:
    def run(config: CVConfig | CTRVConfig, seed: int) -> tuple[float, float]:
        rng = np.random.default_rng(seed)
        speed, w = 10.0, 0.3
        radius = speed / w
        f = EKF(config, [0, 0, 0.8, 0, 0, 0], np.diag([0.04, 0.04, 0.01, 0.0025, 100, 100]))
        ep, ev = [], []
        for k in range(1, 100):
            th = w * k * DT
            p = radius * np.array([np.sin(th), 1 - np.cos(th)])
            v = speed * np.array([np.cos(th), np.sin(th)])
            f.predict(DT)
            f.update([*(p + rng.normal(0, 0.2, 2)), 0.8, th + rng.normal(0, 0.05)],
                     np.diag([0.04, 0.04, 0.01, 0.0025]), MeasurementModel.POSE)
            m, _ = f.output()
            if k >= 30:
                ep.append(np.linalg.norm(m[:2] - p))
                ev.append(np.linalg.norm(m[4:] - v))
        return float(np.sqrt(np.mean(np.square(ep)))), float(np.sqrt(np.mean(np.square(ev))))

    ctrv = np.mean([run(CTRVConfig(accel_std=0.8, yaw_accel_std=0.25), s) for s in range(4)], 0)
    cv = np.mean([run(CVConfig(accel_std=0.8), s) for s in range(4)], 0)
    assert ctrv[0] < 0.8 * cv[0]
    assert ctrv[1] < 0.5 * cv[1]


def test_joseph_update_matches_the_textbook_form_and_stays_symmetric() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 6))
    p0 = a @ a.T + np.eye(6)
    f = EKF(CVConfig(), np.zeros(6), p0)
    z, r = np.array([1.0, -0.5, 0.2, 0.3]), np.diag([0.1, 0.2, 0.05, 0.01])
    f.update(z, r, MeasurementModel.POSE)
    h = np.eye(6)[:4]
    s = h @ p0 @ h.T + r
    k = p0 @ h.T @ np.linalg.inv(s)
    np.testing.assert_allclose(f.covariance, p0 - k @ s @ k.T, atol=1e-10)
    np.testing.assert_allclose(f.state, k @ z, atol=1e-10)
    # the generic path (explicit H) agrees with the component-pick path of POSE
    g = EKF(CVConfig(), np.zeros(6), p0)
    g.update(z, r, h)
    np.testing.assert_allclose(g.covariance, f.covariance, atol=1e-12)
    np.testing.assert_allclose(g.state, f.state, atol=1e-12)
    # many nearly perfect measurements: still symmetric positive definite
    for _ in range(200):
        f.predict(0.05)
        f.update(z, np.eye(4) * 1e-10, MeasurementModel.POSE)
    assert np.allclose(f.covariance, f.covariance.T)
    assert np.linalg.eigvalsh(f.covariance).min() > 0


def test_yaw_innovation_wraps_around_pi() -> None:
    f = EKF(CVConfig(), [0, 0, 0, 3.1, 0, 0], np.diag([1, 1, 1, 0.1, 1, 1]))
    f.update([0, 0, 0, -3.1], np.diag([1, 1, 1, 0.1]), MeasurementModel.POSE)
    # halfway between 3.1 and -3.1 the short way is pi, not 0
    assert abs(abs(f.state[3]) - math.pi) < 1e-6
    np.testing.assert_allclose(resolve_yaw_ambiguity([3.0, -0.1], [-0.2, 3.0]),
                               np.array([3.0 - math.pi, float(wrap_angle(math.pi - 0.1))]),
                               atol=1e-12)


def test_non_finite_or_indefinite_measurements_are_rejected_and_counted() -> None:
    f = EKF(CTRVConfig(), [1, 2, 0, 0.3, 5, 0.1], np.eye(6))
    before = f.state
    assert not f.update([np.nan, 0, 0, 0], np.eye(4), MeasurementModel.POSE)
    assert not f.update([0, 0, 0, 0], np.diag([np.inf, 1, 1, 1]), MeasurementModel.POSE)
    assert not f.update([0, 0], -np.eye(2) * 100, MeasurementModel.VELOCITY)
    assert f.rejected == 3
    np.testing.assert_array_equal(f.state, before)
    assert f.update([1, 2], np.eye(2), MeasurementModel.POSITION)  # a good one still works
    # a batch keeps its good rows and rejects only the bad one
    bank = BatchEKF()
    bank.append_output_states(np.zeros((3, 6)), np.broadcast_to(np.eye(6), (3, 6, 6)).copy(),
                              [CVConfig()] * 3)
    ok = bank.update([0, 1, 2], np.array([[1, 1], [np.nan, 1], [2, 2]]), np.broadcast_to(
        np.eye(2), (3, 2, 2)), MeasurementModel.POSITION)
    assert ok.tolist() == [True, False, True] and bank.rejected == 1
    assert bank.mean[1, 0] == 0 and bank.mean[0, 0] > 0


def test_output_covariance_of_ctrv_is_the_propagated_one() -> None:
    """Monte Carlo: CTRV states mapped to (x, y, z, yaw, vx, vy) have covariance J P J^T."""
    rng = np.random.default_rng(4)
    mean = np.array([1.0, 2.0, 0.5, 0.8, 9.0, 0.2])
    cov = np.diag([0.1, 0.2, 0.05, 0.003, 0.04, 0.01])
    out_m, out_p = to_output(mean[None], cov[None], np.array([True]))
    samples = rng.multivariate_normal(mean, cov, 200_000)
    mapped = samples.copy()
    mapped[:, 4] = samples[:, 4] * np.cos(samples[:, 3])
    mapped[:, 5] = samples[:, 4] * np.sin(samples[:, 3])
    np.testing.assert_allclose(out_m[0], mapped.mean(0), atol=0.01)
    np.testing.assert_allclose(out_p[0], np.cov(mapped.T), atol=0.004)
    # and back: a significant velocity sets the CTRV heading and speed
    back_m, _ = output_to_ctrv(out_m, out_p, np.array([0.5]))
    np.testing.assert_allclose(back_m[0, [3, 4]], [0.8, 9.0], atol=1e-9)


def test_motion_configs_validate_their_noise() -> None:
    with pytest.raises(ConfigError, match=r"CVConfig.accel_std .* got -1"):
        CVConfig(accel_std=-1)
    with pytest.raises(ConfigError, match=r"CTRVConfig\.yaw_accel_std"):
        CTRVConfig(yaw_accel_std=math.nan)
    with pytest.raises(ConfigError, match="init_speed_std must be a number"):
        CTRVConfig(init_speed_std="fast")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- tracker
def _single_target_velocity_rmse(radar: bool, seed: int) -> float:
    """A car at constant velocity: LiDAR boxes (0.3 m), optionally radar velocity
    (0.2 m/s) on the same detection; RMS velocity error over the confirmed track's life."""
    rng = np.random.default_rng(seed)
    trk = MultiObjectTracker(TrackerConfig())
    v, p0 = np.array([8.0, 3.0]), np.array([10.0, -20.0])
    yaw = math.atan2(v[1], v[0])
    errors = []
    for k in range(60):
        z = p0 + v * k * DT + rng.normal(0, 0.3, 2)
        vel = v + rng.normal(0, 0.2, 2) if radar else None
        tracks = trk.update([det(z[0], z[1], yaw + rng.normal(0, 0.05), vel=vel,
                                 cov=cov6(sp=0.3, sv=0.2))], ns(k))
        assert len(tracks) == 1
        if tracks[0].status is TrackStatus.CONFIRMED:
            errors.append(np.linalg.norm(vel_of(tracks[0])[:2] - v))
    assert len(errors) >= 57
    return float(np.sqrt(np.mean(np.square(errors))))


def test_radar_velocity_halves_the_velocity_error() -> None:
    lidar = np.mean([_single_target_velocity_rmse(False, s) for s in range(6)])
    radar = np.mean([_single_target_velocity_rmse(True, s) for s in range(6)])
    assert radar <= 0.5 * lidar
    assert radar < 0.3


def _crossing_run(seed: int, angle: float, label: ObjectClass, speed: float,
                  radar: bool, heading: bool, cfg: TrackerConfig) -> bool:
    """Two targets crossing the origin at the same time (frame 20); True when each kept
    its id from frame 5 to frame 40 and no extra track was confirmed."""
    rng = np.random.default_rng(seed)
    va = np.array([speed, 0.0])
    vb = speed * np.array([np.cos(angle), np.sin(angle)])
    trk = MultiObjectTracker(cfg)
    ids, extra = [], 0
    for k in range(41):
        t = (k - 20) * DT
        dets = []
        for v in (va, vb):
            x, y = v * t + rng.normal(0, 0.2, 2)
            # a detector without a usable heading reports any yaw with a large variance
            yaw = math.atan2(v[1], v[0]) + rng.normal(0, 0.05) if heading else rng.uniform(-3, 3)
            dets.append(det(x, y, yaw, label=label, cov=cov6(syaw=0.05 if heading else 2.0),
                            vel=v + rng.normal(0, 0.2, 2) if radar else None))
        tracks = live(trk.update(dets[:: 1 if k % 2 else -1], ns(k)))
        if k in (5, 40):
            ids.append((nearest(tracks, va * t).track_id, nearest(tracks, vb * t).track_id))
        extra += k >= 3 and len(tracks) != 2
    return ids[0] == ids[1] and ids[0][0] != ids[0][1] and extra == 0


def test_crossing_targets_keep_their_ids() -> None:
    cfg = TrackerConfig()
    # cars (CTRV) crossing at right angles, positions and box headings only: the heading
    # term of the cost (and the heading outlier check) keeps them apart
    assert all(_crossing_run(s, math.pi / 2, CAR, 10.0, radar=False, heading=True, cfg=cfg)
               for s in range(5))
    # pedestrians without a usable heading, with radar velocities: the velocity term of
    # the cost keeps them apart; without it a swapped radar velocity drags the tracks along
    assert all(_crossing_run(s, 1.0, PED, 3.0, radar=True, heading=False, cfg=cfg)
               for s in range(8))
    no_vel = replace(cfg, use_velocity_in_association=False)
    assert not all(_crossing_run(s, 1.0, PED, 3.0, radar=True, heading=False, cfg=no_vel)
                   for s in range(8))


def test_lost_target_coasts_then_is_deleted_and_a_new_one_gets_a_new_id() -> None:
    cfg = TrackerConfig(max_misses=5, max_coast_s=10.0)
    trk = MultiObjectTracker(cfg)
    for k in range(10):
        trk.update([det(5.0 * k * DT, 0.0, vel=(5.0, 0.0), cov=cov6())], ns(k))
    (track,) = trk.tracks
    assert track.status is TrackStatus.CONFIRMED and track.hits == 10
    first_id = track.track_id
    for k in range(10, 15):  # max_misses = 5 misses are survived
        tracks = trk.update([], ns(k))
        assert [t.status for t in tracks] == [TrackStatus.COASTING]
        assert tracks[0].misses == k - 9
        # the prediction keeps moving with the estimated velocity
        assert abs(tracks[0].object.box.center[0] - 5.0 * k * DT) < 0.2
    assert trk.last_deleted == []
    assert trk.update([], ns(15)) == []
    (gone,) = trk.last_deleted
    assert gone.track_id == first_id and gone.status is TrackStatus.DELETED
    assert trk.stats["deaths"] == 1
    new = trk.update([det(40.0, 10.0)], ns(17))
    assert len(new) == 1 and new[0].track_id > first_id
    assert new[0].status is TrackStatus.TENTATIVE
    # coasting time is a limit of its own
    trk2 = MultiObjectTracker(replace(cfg, max_misses=100, max_coast_s=0.35))
    for k in range(5):
        trk2.update([det(0.0, 0.0)], ns(k))
    survived = [len(trk2.update([], ns(k))) for k in range(5, 10)]
    assert survived == [1, 1, 1, 0, 0]


def test_an_object_seen_once_is_never_confirmed() -> None:
    trk = MultiObjectTracker(TrackerConfig(tentative_max_misses=1))
    (t,) = trk.update([det(1.0, 2.0)], ns(0))
    assert t.status is TrackStatus.TENTATIVE and t.hits == 1 and t.age == 0
    assert len(trk.update([], ns(1))) == 1
    assert trk.update([], ns(2)) == []
    assert [d.status for d in trk.last_deleted] == [TrackStatus.DELETED]
    assert trk.stats["confirmations"] == 0


def test_weak_detections_update_tracks_but_do_not_start_them() -> None:
    """``birth_min_confidence``: a lone weak report (a radar-only cluster, score 0.05) never
    founds a track, however often it repeats, but it keeps an existing track alive."""
    cfg = TrackerConfig(birth_min_confidence=0.1)
    trk = MultiObjectTracker(cfg)
    for k in range(6):  # a persistent weak ghost: never a track
        assert trk.update([det(20.0, 5.0, score=0.05)], ns(k)) == []
    assert trk.stats["births"] == 0
    # a strong detection founds the track, weak ones then update it
    trk = MultiObjectTracker(cfg)
    for k in range(4):
        trk.update([det(10.0 + 0.5 * k, 0.0, cov=cov6())], ns(k))
    for k in range(4, 12):
        (t,) = trk.update([det(10.0 + 0.5 * k, 0.0, cov=cov6(), score=0.05)], ns(k))
        assert t.status is TrackStatus.CONFIRMED and t.misses == 0
    assert trk.stats["births"] == 1
    with pytest.raises(ConfigError, match="birth_min_confidence"):
        TrackerConfig(birth_min_confidence=1.0)


def _clutter_run(seed: int, n_false: int, cfg: TrackerConfig) -> tuple[set[int], int]:
    """One true car and ``n_false`` false alarms per frame spread over 200 m x 200 m."""
    rng = np.random.default_rng(seed)
    trk = MultiObjectTracker(cfg)
    confirmed: set[int] = set()
    for k in range(100):
        truth = np.array([-30.0 + 6.0 * k * DT, 4.0])
        dets = [det(*(truth + rng.normal(0, 0.2, 2)), cov=cov6())]
        for _ in range(n_false):
            x, y = rng.uniform(-100, 100, 2)
            dets.append(det(x, y, rng.uniform(-3, 3), label=UNKNOWN, cov=cov6(sp=0.5)))
        for t in trk.update(dets[::-1] if k % 2 else dets, ns(k)):
            if t.status in LIVE:
                confirmed.add(t.track_id)
                assert np.linalg.norm(t.object.box.center[:2] - truth) < 1.0, t
    return confirmed, trk.stats["births"]


def test_clutter_does_not_create_confirmed_tracks() -> None:
    for seed in range(3):
        confirmed, births = _clutter_run(seed, 5, TrackerConfig())
        assert len(confirmed) == 1 and births > 400  # false alarms seen, all died tentative
    # denser clutter needs more evidence: one more hit before confirmation
    for seed in range(2):
        confirmed, _ = _clutter_run(seed, 20, TrackerConfig(confirm_hits=4))
        assert len(confirmed) == 1


def test_gating_prevents_absurd_matches() -> None:
    trk = MultiObjectTracker(TrackerConfig())
    for k in range(5):
        trk.update([det(0.0, 0.0, cov=cov6())], ns(k))
    (old,) = trk.tracks
    # far beyond the gate: a new track, the old one coasts where it was
    tracks = trk.update([det(30.0, 0.0, cov=cov6())], ns(5))
    assert len(tracks) == 2
    kept = next(t for t in tracks if t.track_id == old.track_id)
    assert kept.status is TrackStatus.COASTING
    assert np.linalg.norm(kept.object.box.center[:2]) < 0.5
    # a coasting track with a huge covariance still cannot take a detection beyond the
    # absolute distance cap
    cfg = TrackerConfig(max_match_distance_m=3.0, max_position_std_m=1e3, max_misses=1000,
                        max_coast_s=1e3)
    trk = MultiObjectTracker(cfg)
    for k in range(5):
        trk.update([det(0.0, 0.0)], ns(k))
    trk.update([], ns(100))  # 9.5 s of coasting
    tracks = trk.update([det(5.0, 0.0)], ns(101))
    assert len(tracks) == 2


def test_stamps_backwards_or_repeated_are_rejected_or_reset() -> None:
    trk = MultiObjectTracker(TrackerConfig(reset_backwards_s=1.0))
    for k in range(5):
        trk.update([det(k * 0.5, 0.0)], ns(k) + 10 * 10**9)
    before = trk.tracks
    # a repeated stamp and a small step back: rejected, nothing changes
    assert trk.update([det(100.0, 0.0)], ns(4) + 10 * 10**9) == before
    assert trk.update([det(100.0, 0.0)], ns(2) + 10 * 10**9) == before
    assert trk.stats["rejected_frames"] == 2 and trk.stats["resets"] == 0
    # a big jump back (a bag loop): reset, and ids keep increasing
    tracks = trk.update([det(7.0, 7.0)], 2 * 10**9)
    assert trk.stats["resets"] == 1 and len(tracks) == 1
    assert tracks[0].track_id > before[0].track_id
    assert [t.status for t in trk.last_deleted] == [TrackStatus.DELETED]
    # with resets disabled every backward stamp is rejected
    strict = MultiObjectTracker(TrackerConfig(reset_backwards_s=None))
    strict.update([det(0.0, 0.0)], 5 * 10**9)
    strict.update([det(0.0, 0.0)], 0)
    assert strict.stats["rejected_frames"] == 1 and len(strict.tracks) == 1
    with pytest.raises(TypeError, match="int nanoseconds"):
        strict.update([], 1.5)  # type: ignore[arg-type]


def test_empty_and_invalid_detections_are_handled() -> None:
    trk = MultiObjectTracker(TrackerConfig(frame_id="odom"))
    assert trk.update([], ns(0)) == []
    good = det(1.0, 1.0, cov=cov6())
    nan_box = det(2.0, 2.0)
    object.__setattr__(nan_box.box, "center", np.array([np.nan, 2.0, 0.8]))
    bad_cov = det(3.0, 3.0, cov=np.full((6, 6), np.nan))
    neg_var = det(4.0, 4.0, cov=np.diag([-1.0, 1, 1, 1, 1, 1]))
    wrong_frame = det(5.0, 5.0, frame="base_link")
    bad_probs = det(6.0, 6.0, probs={"car": math.nan})
    tracks = trk.update([good, nan_box, bad_cov, neg_var, wrong_frame, bad_probs], ns(1))
    assert len(tracks) == 1 and np.allclose(tracks[0].object.box.center[:2], [1, 1])
    assert trk.stats["rejected_detections"] == 5
    assert trk.stats["wrong_frame_detections"] == 1
    # an empty frame after that: the tentative track is dropped (tentative_max_misses=0)
    assert trk.update([], ns(2)) == [] and len(trk.last_deleted) == 1


def test_one_object_seen_by_three_sensors_in_its_first_frame_is_one_track() -> None:
    trk = MultiObjectTracker(TrackerConfig())
    lidar = [det(10.0, 5.0, 0.3, cov=cov6(), sources=("lidar",))]
    radar = [det(10.3, 5.2, 0.0, vel=(6.0, 2.0), label=UNKNOWN,
                 cov=np.diag([0.25, 0.25, 1.0, 10.0, 0.04, 0.04]), sources=("radar",))]
    camera = [det(9.5, 4.6, 0.35, cov=cov6(sp=1.0, syaw=0.3), probs={"car": 0.9, "bus": 0.1},
                  sources=("camera",))]
    tracks = trk.update_multi([lidar, radar, camera], ns(0))
    assert len(tracks) == 1 and trk.stats["matches"] == 2
    assert tracks[0].hits == 1 and tracks[0].object.sources == ("camera",)
    # the radar velocity turned the CTRV heading although the box said 0.3 rad
    np.testing.assert_allclose(vel_of(tracks[0])[:2], np.array([6.0, 2.0]), atol=0.3)


def test_ctrv_track_takes_its_heading_from_radar_when_the_box_disagrees() -> None:
    trk = MultiObjectTracker(TrackerConfig())
    trk.update([det(0.0, 0.0, yaw=0.0, cov=cov6())], ns(0))  # box says heading +x
    (t,) = trk.update([det(0.0, 0.8, yaw=0.0, vel=(0.0, 8.0), cov=cov6())], ns(1))
    assert abs(wrap_angle(t.object.box.yaw - math.pi / 2)) < 0.2
    np.testing.assert_allclose(vel_of(t)[:2], np.array([0.0, 8.0]), atol=0.5)


def test_class_is_accumulated_and_switches_the_motion_model() -> None:
    trk = MultiObjectTracker(TrackerConfig(class_mismatch_cost=0.0))
    for k in range(5):
        (t,) = trk.update([det(0.1 * k, 0.0, label=CAR)], ns(k))
    assert t.object.label is CAR
    (t,) = trk.update([det(0.5, 0.0, label=PED)], ns(5))
    assert t.object.label is CAR  # one contrary vote does not flip it
    assert trk.stats["model_switches"] == 0
    for k in range(6, 16):
        (t,) = trk.update([det(0.1 * k, 0.0, label=PED, probs={"pedestrian": 0.95,
                                                               "cyclist": 0.05})], ns(k))
    assert t.object.label is PED
    assert trk.stats["model_switches"] == 1  # CTRV -> CV, and still tracking
    assert math.isclose(sum(t.object.class_probs.values()), 1.0)
    assert t.object.class_probs["pedestrian"] > 0.9
    # UNKNOWN detections carry no class evidence
    trk2 = MultiObjectTracker(TrackerConfig())
    (u,) = trk2.update([det(0.0, 0.0, label=UNKNOWN)], ns(0))
    assert u.object.label is UNKNOWN


def test_outputs_are_valid_core_objects() -> None:
    """The fast output path gives what the validating constructors give."""
    rng = np.random.default_rng(6)
    trk = MultiObjectTracker(TrackerConfig())
    tracks: list[Track] = []
    for k in range(8):
        dets = [det(5.0 + k * 0.5 + rng.normal(0, 0.1), 1.0, 0.1, vel=(5.0, 0.0), cov=cov6()),
                det(-5.0, -3.0 + k * 0.1, 1.6, label=PED, cov=cov6())]
        tracks = trk.update(dets, ns(k))
    assert len(tracks) == 2
    for t in tracks:
        o = t.object
        box = Box3D(np.array(o.box.center), np.array(o.box.size), o.box.yaw, o.box.frame_id)
        ref = Track(t.track_id, DetectedObject(
            box, o.label, o.score, o.stamp_ns, dict(o.class_probs), np.array(o.velocity),
            np.array(o.covariance), o.existence_prob, o.sources), t.status, t.age, t.hits,
            t.misses)
        assert ref.track_id == t.track_id and ref.status is t.status
        assert (ref.age, ref.hits, ref.misses) == (t.age, t.hits, t.misses)
        np.testing.assert_array_equal(ref.object.box.center, o.box.center)
        np.testing.assert_array_equal(ref.object.covariance, o.covariance)
        assert ref.object.box.yaw == o.box.yaw and -math.pi <= o.box.yaw < math.pi
        assert type(o.score) is float and type(t.age) is int and type(t.track_id) is int
        assert dict(ref.object.class_probs) == dict(o.class_probs)
        for arr in (o.box.center, o.box.size, o.velocity, o.covariance):
            assert arr is not None and not arr.flags.writeable and arr.dtype == np.float64
        assert o.covariance is not None and o.covariance.shape == (6, 6)
        assert np.allclose(o.covariance, o.covariance.T)
        assert np.linalg.eigvalsh(o.covariance).min() > -1e-12
        assert o.stamp_ns == ns(7) and o.box.frame_id == "odom"
        assert 0.0 <= o.existence_prob <= 1.0 and o.existence_prob > 0.9
    car = next(t for t in tracks if t.object.label is CAR)
    np.testing.assert_allclose(vel_of(car), np.array([5.0, 0.0, 0.0]), atol=0.3)


def test_tracker_config_rejects_bad_values_by_name() -> None:
    with pytest.raises(ConfigError, match=r"TrackerConfig.gate .* got 0"):
        TrackerConfig(gate=0)
    with pytest.raises(ConfigError, match="confirm_hits must be an int >= 1"):
        TrackerConfig(confirm_hits=0)
    with pytest.raises(ConfigError, match="detection_prob"):
        TrackerConfig(detection_prob=1.0)
    with pytest.raises(ConfigError, match="clutter_density_per_m2"):
        TrackerConfig(clutter_density_per_m2=0.0)
    with pytest.raises(ConfigError, match=r"motion lacks class\(es\) \['unknown'\]"):
        TrackerConfig(motion={c: m for c, m in default_motion().items() if c is not UNKNOWN})
    with pytest.raises(ConfigError, match="unknown class 'tank'"):
        TrackerConfig(motion={**default_motion(), "tank": CVConfig()})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="reset_backwards_s"):
        TrackerConfig(reset_backwards_s=-1.0)
    with pytest.raises(ConfigError, match="use_velocity_measurements must be a bool"):
        TrackerConfig(use_velocity_measurements=1)  # type: ignore[arg-type]


# ------------------------------------------------------------ batched fast paths vs reference


def _random_spd(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    a = rng.normal(size=(k, n, n))
    return a @ np.swapaxes(a, 1, 2) + 0.1 * np.eye(n)


@pytest.mark.parametrize("rows", [[0, 1, 3], slice(3, 6), [4, 5]])
def test_congruence_rows_equals_the_full_product(rows: list[int] | slice) -> None:
    rng = np.random.default_rng(3)
    cov = _random_spd(rng, 40, 6)
    r = list(range(6))[rows] if isinstance(rows, slice) else rows
    jac = np.broadcast_to(np.eye(6), (40, 6, 6)).copy()
    jac[:, r, :] = rng.normal(size=(40, len(r), 6))
    got = congruence_rows(cov, rows, jac[:, r, :])
    np.testing.assert_allclose(got, jac @ cov @ np.swapaxes(jac, 1, 2), rtol=1e-12,
                               atol=1e-12)


def test_batched_predict_equals_per_row_full_jacobian_product() -> None:
    rng = np.random.default_rng(4)
    n = 30
    mean = rng.normal(size=(n, 6)) * [20, 20, 1, 2, 8, 0.5]
    cov = _random_spd(rng, n, 6)
    is_ctrv = rng.random(n) < 0.6
    noise = rng.uniform(0.1, 2.0, (n, 3))
    bank = BatchEKF()
    bank.mean, bank.cov, bank.is_ctrv, bank.noise = mean.copy(), cov.copy(), is_ctrv, noise
    bank.predict(0.15)
    new, rows_j = transition_rows(mean, is_ctrv, 0.15)
    _, jac = transition(mean, is_ctrv, 0.15)
    np.testing.assert_array_equal(jac[:, MOTION_ROWS, :], rows_j)
    q = process_noise(mean, is_ctrv, noise, 0.15)
    for i in range(n):
        want = jac[i] @ cov[i] @ jac[i].T + q[i]
        np.testing.assert_allclose(bank.cov[i], 0.5 * (want + want.T), rtol=1e-12,
                                   atol=1e-12)
        np.testing.assert_allclose(bank.mean[i], new[i], rtol=1e-15, atol=0)


def test_to_output_and_output_to_ctrv_equal_per_row_jacobians() -> None:
    rng = np.random.default_rng(5)
    n = 25
    mean = rng.normal(size=(n, 6)) * [20, 20, 1, 2, 8, 0.5]
    cov = _random_spd(rng, n, 6)
    for is_ctrv in (rng.random(n) < 0.5, np.ones(n, dtype=bool), np.zeros(n, dtype=bool)):
        out_m, out_p = to_output(mean, cov, is_ctrv)
        for i in range(n):
            if not is_ctrv[i]:
                np.testing.assert_array_equal(out_m[i], mean[i])
                np.testing.assert_array_equal(out_p[i], cov[i])
                continue
            yaw, v = mean[i, 3], mean[i, 4]
            jac = np.eye(6)
            jac[4] = [0, 0, 0, -v * math.sin(yaw), math.cos(yaw), 0]
            jac[5] = [0, 0, 0, v * math.cos(yaw), math.sin(yaw), 0]
            np.testing.assert_allclose(out_p[i], jac @ cov[i] @ jac.T, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(out_m[i, 4:], v * np.array([math.cos(yaw),
                                                                  math.sin(yaw)]))
    # object convention -> CTRV, rows with a significant velocity (polar) and without
    mean[: n // 2, 4:] *= 1e-3
    std = rng.uniform(0.1, 1.0, n)
    got_m, got_p = output_to_ctrv(mean, cov, std)
    for i in range(n):
        vx, vy = mean[i, 4], mean[i, 5]
        speed = math.hypot(vx, vy)
        polar = speed**2 > 9.0 * max(0.5 * (cov[i, 4, 4] + cov[i, 5, 5]), 1e-12)
        jac = np.eye(6)
        if polar:
            yaw = math.atan2(vy, vx)
            jac[3] = [0, 0, 0, 0, -vy / speed**2, vx / speed**2]
        else:
            yaw = mean[i, 3]
            jac[3] = [0, 0, 0, 1, 0, 0]
        c, s = math.cos(yaw), math.sin(yaw)
        jac[4] = [0, 0, 0, 0 if polar else -vx * s + vy * c, c, s]
        jac[5] = 0.0
        want = jac @ cov[i] @ jac.T
        want[5, :] = want[:, 5] = 0.0
        want[5, 5] = std[i] ** 2
        np.testing.assert_allclose(got_p[i], want, rtol=1e-12, atol=1e-12)
        assert got_m[i, 4] == pytest.approx(speed if polar else vx * c + vy * s, rel=1e-12)


def test_compact_equals_numpy_unique() -> None:
    rng = np.random.default_rng(6)
    for n in (1, 5, 50):
        idx = rng.integers(0, n, rng.integers(1, 40))
        want_u, want_i = np.unique(idx, return_inverse=True)
        got_u, got_i = _compact(idx, n)
        np.testing.assert_array_equal(got_u, want_u)
        np.testing.assert_array_equal(got_i, want_i.reshape(-1))


def test_class_evidence_equals_per_object_computation() -> None:
    """The flattened (vectorised) class evidence against a per-object reference."""
    rng = np.random.default_rng(7)
    tracker = MultiObjectTracker()
    names = [c.value for c in ObjectClass] + ["not_a_class"]
    objs = []
    for i in range(40):
        keys = rng.choice(names, rng.integers(0, 4), replace=False).tolist()
        probs: dict[str, float] = {k: float(rng.uniform(0, 1)) for k in keys}
        if i % 7 == 0 and probs:
            probs[next(iter(probs))] = 0.0
        objs.append(det(float(i), 0.0, label=ObjectClass(rng.choice(
            [c.value for c in ObjectClass])), probs=probs))
    label = np.array([_label_index(o.label) for o in objs])
    logp, ok = tracker._class_evidence(objs, label)
    assert ok.all()
    known = [c.value for c in ObjectClass if c is not UNKNOWN]
    floor = tracker.config.class_prob_floor
    for i, o in enumerate(objs):
        p = np.array([o.class_probs.get(k, 0.0) for k in known])
        if p.sum() > 0:
            want = np.log(np.maximum(p / p.sum(), floor))
        else:
            want = tracker._label_logp[label[i]]
        np.testing.assert_allclose(logp[i], want, rtol=1e-12)


def _label_index(label: ObjectClass) -> int:
    known = [c for c in ObjectClass if c is not UNKNOWN]
    return known.index(label) if label in known else len(known)


def _yaw_rates(label: ObjectClass, rate: float, seed: int) -> list[float | None]:
    """A target at 6 m/s turning at ``rate`` (rad/s) for 6 s, boxes with 0.2 m position and
    0.05 rad heading noise: the track's reported yaw rate after each confirmed update."""
    rng = np.random.default_rng(seed)
    trk = MultiObjectTracker(TrackerConfig())
    speed, out = 6.0, []
    for k in range(60):
        t = k * DT
        heading = rate * t
        if rate:
            p = np.array([math.sin(heading), 1 - math.cos(heading)]) * speed / rate
        else:
            p = np.array([speed * t, 0.0])
        z = p + rng.normal(0, 0.2, 2)
        tracks = trk.update([det(z[0], z[1], heading + rng.normal(0, 0.05), label=label,
                                 cov=cov6())], ns(k))
        assert len(tracks) == 1
        if tracks[0].status is TrackStatus.CONFIRMED:
            out.append(tracks[0].object.yaw_rate)
    assert len(out) >= 55
    return out


def test_tracks_report_their_turn_rate() -> None:
    """CTRV tracks (vehicles) carry their estimated yaw rate in the output, which the safety
    filter predicts along; CV tracks (pedestrians) have none."""
    for seed in range(3):
        turning = _yaw_rates(CAR, 0.3, seed)
        assert all(r is not None for r in turning)
        # settled after 3 s: within 0.03 rad/s of the truth on average (each update
        # scatters by about 0.06 rad/s), and nearly always outside the safety filter's
        # dead band
        settled = np.array(turning[-30:], dtype=float)
        assert abs(settled.mean() - 0.3) < 0.03
        assert (settled > SafetyConfig().min_track_yaw_rate_rps).mean() >= 0.9
        # a car going straight stays inside that dead band
        straight = np.array(_yaw_rates(CAR, 0.0, seed)[-30:], dtype=float)
        assert np.abs(straight).max() < SafetyConfig().min_track_yaw_rate_rps
        assert all(r is None for r in _yaw_rates(PED, 0.0, seed))
