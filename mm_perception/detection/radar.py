"""Radar object detector: detection lists (position, Doppler, RCS) -> objects with velocity.

An automotive radar reports a sparse list of detections per scan: a position, the radial
(Doppler) velocity relative to the radar and a radar cross-section (RCS). One object gives
one to a handful of detections. :class:`RadarDetector` turns a scan into
:class:`~mm_perception.core.types.DetectedObject` s in ``base_link`` whose main asset is the
**over-ground velocity** (output-level fusion takes its velocity from radar, its class and
shape from camera / LiDAR). Everything is vectorised over points and clusters (numpy /
scipy); no Python loop runs per point.

Algorithm (:meth:`RadarDetector.detect`):

0. **Ego motion.** Without an ego state the measured Doppler cannot be split into ego and
   target motion: the detector returns ``[]`` and counts ``stats["no_ego"]`` (never guesses).
   Otherwise :func:`~mm_perception.core.ego_motion.compensate_doppler` gives each detection's
   radial velocity *over ground* ``vr_i`` (the radar's own velocity, including the lever
   arm of the ego's yaw rate, added back).
1. **Input checks.** Rows with a non-finite position, Doppler or RCS, or at range 0 (no
   direction) are dropped and counted (``non_finite``), so are rows outside
   ``[min_range_m, max_range_m]`` or with an absurd Doppler (``out_of_range``). Points go
   to ``base_link``.
2. **Clustering on position and Doppler.** DBSCAN with a scaled distance over ``base_link``
   BEV position and compensated Doppler: two detections are neighbours when
   ``(dx^2 + dy^2) / eps_xy^2 + dv^2 / eps_v^2 <= 1``, where ``eps_v =
   cluster_eps_doppler_mps + cluster_doppler_per_rad_mps * |d azimuth|`` (one rigid target
   seen over an azimuth span has radial velocities differing by up to its cross-range speed
   times the span: a crossing car 10 m ahead spans 25 degrees); the azimuth term applies
   only between two moving returns (``|vr| >= static_speed_mps``), so that parked cars are
   not merged with slow traffic beside them. (A consequence: a target crossing exactly at
   boresight may lose its static-looking middle return to a separate cluster.) Candidate
   pairs from a :class:`scipy.spatial.cKDTree` on ``xy / eps_xy``, then the Doppler test per pair;
   clusters are connected components of the core points
   (:func:`scipy.sparse.csgraph.connected_components`), border points join a neighbouring
   core point's cluster. Doppler is a clustering coordinate so that a car passing a
   guardrail, or two road users side by side at different speeds, are not merged; single
   linkage lets the Doppler drift smoothly across a wide target. Points in no cluster
   ("noise") become single-detection candidates. A second pass splits rows of parked cars:
   they have no Doppler to tell them apart and gaps under a metre, so a *static* cluster
   (step 4) wider than ``static_split_extent_m`` is clustered again with the finer
   ``static_split_eps_xy_m``.
3. **Velocity over ground.** For a rigid target with BEV velocity ``v``, each detection's
   over-ground radial velocity is ``vr_i = u_i . v``, ``u_i`` the horizontal part of the unit
   line of sight from the **radar** (not the ``base_link`` origin) to the detection, in
   ``base_link`` axes (the vertical part meets ``vz = 0``). Least squares in information
   form: the information is ``J = A^T A / s^2`` (``A`` rows ``u_i``), with the
   eigen-decomposition ``A^T A = sum_j l_j e_j e_j^T``. A direction ``e_j`` with
   ``s^2 / l_j <= max_observed_velocity_std_mps^2`` is *observed* and gets
   ``e_j . v = e_j . A^T vr / l_j`` with variance ``s^2 / l_j``; a direction resolved worse
   than that is *unobserved* (truncated pseudo-inverse): its component is the prior mean 0
   with variance ``unobserved_velocity_std_mps^2``. The covariance is
   ``P_v = sum_j var_j e_j e_j^T``, i.e. rotated from the eigen-frame into ``(vx, vy)``.
   A cluster with a small azimuth spread (a distant car, or any single detection) gets
   ``v = (radial speed) * u_mean`` with a covariance that is small along the line of sight
   and large across it; a wide cluster (a near crossing car) gets its full 2D velocity.
   ``s`` is ``doppler_std_mps`` inflated to the fit's residual RMS when that is larger (the
   Doppler of a target's points disagrees when it turns or the clustering is wrong). A
   turning target breaks the rigid-translation model in a way the residual cannot show: its
   yaw rate ``w`` adds ``w`` times the cross-range offset to each point's radial velocity, a
   Doppler slope over azimuth that the fit reads as cross-range velocity ``w * range`` (a
   car turning at 0.5 rad/s 20 m away looks 10 m/s off). So the weakly resolved direction
   (the cross-range one) gets the model variance ``(yaw_rate_std_radps * range)^2`` on top,
   before the observed test: beyond a few tens of metres only the radial component is
   trusted. The ego velocity's error is added (the compensation inherits it): the
   ``vx, vy`` block of the ego's twist covariance when given, else
   ``ego_velocity_std_mps^2``.
4. **Static or moving.** A cluster is *moving* when its velocity is both above
   ``static_speed_mps`` and ``moving_min_sigma`` standard deviations away from zero.
   Parked cars are real objects (class car with zero velocity), so static clusters are not
   simply dropped: a static cluster is kept when it has at least ``static_min_points``
   detections, an RCS of at least ``static_min_rcs_dbsm`` and a BEV extent of at most
   ``static_max_extent_m`` (long guardrails / walls fail the last test), with a lower score
   than a moving one. Single detections are kept only when strong (``single_min_rcs_dbsm``)
   and, unless stronger still (``single_static_min_rcs_dbsm``), moving: clutter is weak and
   random single static returns are mostly infrastructure. Clusters wider than
   ``max_extent_m`` or faster than ``max_speed_mps`` are rejected. ``stats`` counts each
   rejection reason (``rejected_<reason>``).
5. **Class.** Soft class probabilities from a Gaussian likelihood of the cluster's total RCS
   (``10 log10`` of the summed linear RCS of its detections) per class, a class prior, and a
   speed limit per class (a pedestrian does not move at 10 m/s; the speed used is the
   resolved one, a lower bound of the true speed) and a size limit per class (the spread
   of the detections along the heading, or along ``base_link`` axes without one, is a lower
   bound of the object's length: 8 m of returns are not a car). Radar class is weak:
   probabilities are mixed with ``class_prob_floor`` of a uniform distribution. Label =
   argmax. The defaults of the RCS table were measured on the simulator
   (:mod:`mm_perception.sim.radar_sim`); a real radar (whose driver may report amplitude in
   its own unit) needs its own table.
6. **Heading.** When the object moves at ``yaw_min_speed_mps`` or more the box heading is
   the velocity's heading, with variance ``g^T P_v g`` (``g`` the gradient of ``atan2``),
   capped at that of a uniform angle; otherwise yaw is 0 with that uniform-angle variance
   ``pi^2 / 3`` (no heading information).
7. **Position.** The RCS-weighted centroid of the detections lies on the faces the radar
   sees, so it is pushed back along the line of sight by the expected depth of the box
   centre behind its visible faces: for a box ``l x w`` seen at angle ``t`` between heading
   and line of sight, with hits uniform over the projected visible area, that depth is
   ``l w / (2 (w |cos t| + l |sin t|))`` (``l/2`` seen from behind, ``w/2`` from the side);
   without a heading its mean over ``t`` is used, each scaled by ``push_back_scale`` /
   ``push_back_scale_no_heading``. Size is the class prior. The box stands on
   the ``base_link`` ground plane: ``z = ground_z_m + h / 2``. Position covariance: along
   the line of sight ``range_std^2 / n`` plus the push-back uncertainty, across it
   ``(r * azimuth_std)^2 / n`` (grows with range), both plus the box-extent uncertainty
   (``extent_std_fraction`` of the half box length, ``extent_std_fraction_no_heading``
   without a heading) and the sampling of the seen faces by ``n`` returns
   (``sample_std_fraction`` of the half length over ``sqrt(n)``), rotated into
   ``base_link``.
8. **Score.** ``score = existence_prob = sigmoid(b0 + b_n log(n) + b_rcs (rcs - 0 dBsm) +
   b_moving [moving] - b_res (rms residual / doppler_std) + b_single [single])``: more
   detections, more RCS, a moving and Doppler-consistent cluster are more likely real; a
   single detection is the least certain. The default coefficients keep those signs and
   put the level near the fraction of detections that match a real object within 4 m on
   the simulator's tuning scenes (~0.87); the simulator's clutter is benign, so a real
   radar with ghosts / multipath wants a lower ``score_bias``.

Covariance of each output: ``(6, 6)`` over ``(x, y, z, yaw, vx, vy)``, block diagonal
(position 3x3, yaw, velocity 2x2).

``stats`` (of the last :meth:`RadarDetector.detect`): ``input``, ``non_finite``,
``out_of_range`` (outside ``[min_range_m, max_range_m]`` or ``|vr| > 10 max_speed_mps``),
``no_ego`` (1 when called without an ego state), ``static`` (valid detections with
``|vr| < static_speed_mps`` not in a moving cluster),
``clusters`` (clusters incl. single-detection candidates), ``moving`` (moving clusters),
``rejected_invalid`` (a non-finite estimate), ``rejected_extent``, ``rejected_speed``,
``rejected_single``, ``rejected_static``, ``rejected_weak``, ``output``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from mm_perception.core.checks import is_real
from mm_perception.core.ego_motion import compensate_doppler
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import Box3D, DetectedObject, EgoState, ObjectClass, RadarScan

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

#: classes the radar detector tells apart (order of every per-class array)
CLASSES: tuple[ObjectClass, ...] = (ObjectClass.CAR, ObjectClass.TRUCK, ObjectClass.BUS,
                                    ObjectClass.PEDESTRIAN, ObjectClass.CYCLIST)
#: variance of an angle uniform on [-pi, pi): "no heading information"
YAW_UNKNOWN_VAR = math.pi ** 2 / 3.0

STAT_KEYS: tuple[str, ...] = (
    "input", "non_finite", "out_of_range", "no_ego", "static", "clusters", "moving",
    "rejected_invalid", "rejected_extent", "rejected_speed", "rejected_single",
    "rejected_static", "rejected_weak", "output")


def _mapping(values: Mapping[Any, Any]) -> Mapping[ObjectClass, Any]:
    return MappingProxyType(dict(values))


# Total cluster RCS per class, dBsm (mean, std), measured on the simulator's radar model
# (seeds 500-505 of every scenario library entry): car 8.3 +- 6.1, truck 18.2 +- 5.1, bus
# 15.7 +- 3.6, pedestrian -12.5 +- 2.1, cyclist -5.5 +- 5.7. Stds are widened a little: real
# radars scatter more (aspect angle, multipath).
_RCS_MEAN = {ObjectClass.CAR: 8.0, ObjectClass.TRUCK: 18.0, ObjectClass.BUS: 16.0,
             ObjectClass.PEDESTRIAN: -12.0, ObjectClass.CYCLIST: -5.0}
_RCS_STD = {ObjectClass.CAR: 6.0, ObjectClass.TRUCK: 5.0, ObjectClass.BUS: 4.5,
            ObjectClass.PEDESTRIAN: 3.0, ObjectClass.CYCLIST: 5.5}
_MAX_SPEED = {ObjectClass.CAR: 70.0, ObjectClass.TRUCK: 45.0, ObjectClass.BUS: 40.0,
              ObjectClass.PEDESTRIAN: 4.0, ObjectClass.CYCLIST: 14.0}
_PRIOR = {ObjectClass.CAR: 0.55, ObjectClass.TRUCK: 0.08, ObjectClass.BUS: 0.07,
          ObjectClass.PEDESTRIAN: 0.2, ObjectClass.CYCLIST: 0.1}
# mid-range sizes (length, width, height), m, of the classes the simulator draws
_SIZE = {ObjectClass.CAR: (4.4, 1.85, 1.55), ObjectClass.TRUCK: (8.5, 2.5, 3.4),
         ObjectClass.BUS: (11.25, 2.55, 3.15), ObjectClass.PEDESTRIAN: (0.58, 0.58, 1.75),
         ObjectClass.CYCLIST: (1.75, 0.62, 1.75)}


@dataclass(frozen=True)
class RadarDetectorConfig:
    """Settings of :class:`RadarDetector` (see the module docstring for the algorithm).

    Attributes:
        cluster_eps_xy_m: BEV neighbour distance of the clustering, m (> 0).
        cluster_eps_doppler_mps: Doppler neighbour distance of the clustering, m/s (> 0).
        cluster_doppler_per_rad_mps: growth of that distance per radian of azimuth between
            the two detections, m/s/rad (>= 0): the largest speed across the line of sight
            expected of one target.
        min_samples: DBSCAN core-point size (neighbours incl. the point itself, >= 1).
        static_split_extent_m: a static cluster with a wider BEV extent (diagonal, m) is
            clustered again with ``static_split_eps_xy_m`` (rows of parked cars).
        static_split_eps_xy_m: BEV neighbour distance of that second pass, m (> 0).
        doppler_std_mps: 1-sigma noise of a compensated Doppler value incl. model error, m/s.
        range_std_m: 1-sigma range noise, m (> 0).
        azimuth_std_deg: 1-sigma azimuth noise, degrees (> 0).
        max_observed_velocity_std_mps: velocity directions resolved worse than this are
            unobserved (prior), m/s (> 0).
        unobserved_velocity_std_mps: prior std of an unobserved velocity component, m/s.
        yaw_rate_std_radps: 1-sigma yaw rate of a target (model error of the rigid
            translation fit: cross-range velocity error ``yaw_rate * range``), rad/s (>= 0).
        ego_velocity_std_mps: extra 1-sigma error of the ego velocity used for compensation,
            added to the velocity covariance when the ego state has no twist covariance.
        static_speed_mps: speed below which a cluster counts as static, m/s (> 0).
        moving_min_sigma: a moving cluster's velocity is this many stds from zero (>= 0).
        max_speed_mps: clusters faster than this are rejected, m/s (> 0).
        max_range_m: detections farther than this from the radar are dropped, m (> 0).
        min_range_m: detections nearer than this to the radar are dropped, m (> 0).
        max_extent_m: clusters with a BEV bounding-box diagonal above this are rejected, m.
        static_max_extent_m: same for static clusters, m (> 0).
        static_min_points: fewest detections of a kept static cluster (>= 1).
        static_min_rcs_dbsm: least total RCS of a kept static cluster, dBsm.
        single_min_rcs_dbsm: least RCS of a kept single moving detection, dBsm.
        single_static_min_rcs_dbsm: least RCS of a kept single static detection, dBsm.
        moving_min_rcs_dbsm: least total RCS of a kept moving cluster, dBsm.
        yaw_min_speed_mps: heading from velocity at or above this speed, m/s (>= 0).
        push_back_scale / push_back_scale_no_heading: factor on the geometric push-back of
            the centroid (module doc, step 7) with / without a heading (>= 0): real bodies
            are not boxes (a cabin set back, rounded corners), so the centroid of the
            returns sits a little deeper or shallower than the box faces predict.
        extent_std_fraction / extent_std_fraction_no_heading: std of the box centre from the
            unseen box extent, as a fraction of the class's half length, with / without a
            heading (>= 0).
        sample_std_fraction: std of one detection's position over the seen faces, as a
            fraction of the class's half length (>= 0); divided by ``sqrt(n)``.
        z_std_m: std of the box centre height, m (> 0).
        ground_z_m: height of the ground in ``base_link``, m (boxes stand on it).
        class_rcs_mean_dbsm / class_rcs_std_db: per-class Gaussian of the cluster RCS.
        class_max_speed_mps: per-class plausible top speed, m/s (> 0).
        class_prior: per-class prior probability (> 0, normalised here).
        class_size_m: per-class box (length, width, height), m (> 0).
        class_spread_margin_m: how far the detections' spread (along the heading when
            known) may exceed a class's length before the class becomes unlikely, m (>= 0).
        class_prob_floor: weight of a uniform distribution mixed into the class
            probabilities, [0, 1).
        score_bias / score_per_log_points / score_per_db / score_moving /
            score_per_residual / score_single: logistic score coefficients (see module doc).
    """

    cluster_eps_xy_m: float = 3.5
    cluster_eps_doppler_mps: float = 1.0
    cluster_doppler_per_rad_mps: float = 6.0
    min_samples: int = 2
    static_split_extent_m: float = 4.0
    static_split_eps_xy_m: float = 1.0
    doppler_std_mps: float = 0.2
    range_std_m: float = 0.3
    azimuth_std_deg: float = 1.5
    max_observed_velocity_std_mps: float = 3.0
    unobserved_velocity_std_mps: float = 8.0
    yaw_rate_std_radps: float = 0.15
    ego_velocity_std_mps: float = 0.1
    static_speed_mps: float = 0.5
    moving_min_sigma: float = 3.0
    max_speed_mps: float = 70.0
    max_range_m: float = 500.0
    min_range_m: float = 0.1
    max_extent_m: float = 16.0
    static_max_extent_m: float = 8.0
    static_min_points: int = 2
    static_min_rcs_dbsm: float = -10.0
    single_min_rcs_dbsm: float = 0.0
    single_static_min_rcs_dbsm: float = 5.0
    moving_min_rcs_dbsm: float = -30.0
    yaw_min_speed_mps: float = 2.0
    push_back_scale: float = 0.8
    push_back_scale_no_heading: float = 1.0
    extent_std_fraction: float = 0.2
    extent_std_fraction_no_heading: float = 0.5
    sample_std_fraction: float = 0.5
    z_std_m: float = 0.3
    ground_z_m: float = 0.0
    class_rcs_mean_dbsm: Mapping[ObjectClass, float] = field(
        default_factory=lambda: _mapping(_RCS_MEAN))
    class_rcs_std_db: Mapping[ObjectClass, float] = field(
        default_factory=lambda: _mapping(_RCS_STD))
    class_max_speed_mps: Mapping[ObjectClass, float] = field(
        default_factory=lambda: _mapping(_MAX_SPEED))
    class_prior: Mapping[ObjectClass, float] = field(default_factory=lambda: _mapping(_PRIOR))
    class_size_m: Mapping[ObjectClass, tuple[float, float, float]] = field(
        default_factory=lambda: _mapping(_SIZE))
    class_prob_floor: float = 0.1
    class_spread_margin_m: float = 1.0
    score_bias: float = 1.0
    score_per_log_points: float = 1.0
    score_per_db: float = 0.02
    score_moving: float = 0.5
    score_per_residual: float = 0.3
    score_single: float = -1.5

    def __post_init__(self) -> None:
        positive = ("cluster_eps_xy_m", "cluster_eps_doppler_mps", "static_split_extent_m",
                    "static_split_eps_xy_m", "doppler_std_mps", "range_std_m",
                    "azimuth_std_deg", "max_observed_velocity_std_mps",
                    "unobserved_velocity_std_mps", "static_speed_mps", "max_speed_mps",
                    "max_range_m", "min_range_m", "max_extent_m", "static_max_extent_m",
                    "z_std_m")
        non_negative = ("cluster_doppler_per_rad_mps", "ego_velocity_std_mps",
                        "yaw_rate_std_radps",
                        "moving_min_sigma", "yaw_min_speed_mps",
                        "push_back_scale", "push_back_scale_no_heading", "extent_std_fraction",
                        "extent_std_fraction_no_heading", "sample_std_fraction",
                        "class_spread_margin_m")
        finite = ("static_min_rcs_dbsm", "single_min_rcs_dbsm", "single_static_min_rcs_dbsm",
                  "moving_min_rcs_dbsm", "ground_z_m", "score_bias", "score_per_log_points",
                  "score_per_db", "score_moving", "score_per_residual", "score_single")
        for name in (*positive, *non_negative, *finite):
            value = getattr(self, name)
            if not is_real(value) or not math.isfinite(value):
                raise ConfigError(f"RadarDetectorConfig.{name} must be a finite number, "
                                  f"got {value!r}")
            if name in positive and value <= 0:
                raise ConfigError(f"RadarDetectorConfig.{name} must be > 0, got {value!r}")
            if name in non_negative and value < 0:
                raise ConfigError(f"RadarDetectorConfig.{name} must be >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.min_range_m >= self.max_range_m:
            raise ConfigError(f"RadarDetectorConfig.min_range_m ({self.min_range_m!r}) must be "
                              f"< max_range_m ({self.max_range_m!r})")
        for name in ("min_samples", "static_min_points"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"RadarDetectorConfig.{name} must be an integer >= 1, "
                                  f"got {value!r}")
            object.__setattr__(self, name, int(value))
        floor = self.class_prob_floor
        if not is_real(floor) or not 0.0 <= floor < 1.0:
            raise ConfigError(f"RadarDetectorConfig.class_prob_floor must be in [0, 1), "
                              f"got {floor!r}")
        object.__setattr__(self, "class_prob_floor", float(floor))
        for name, lo_open in (("class_rcs_mean_dbsm", None), ("class_rcs_std_db", 0.0),
                              ("class_max_speed_mps", 0.0), ("class_prior", 0.0)):
            object.__setattr__(self, name, self._per_class(name, lo_open))
        sizes: dict[ObjectClass, tuple[float, float, float]] = {}
        for cls, value in self._class_items("class_size_m").items():
            try:
                size = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                size = ()
            if len(size) != 3 or not all(math.isfinite(v) and v > 0 for v in size):
                raise ConfigError(f"RadarDetectorConfig.class_size_m[{cls.value}] must be 3 "
                                  f"finite numbers > 0 (length, width, height), got {value!r}")
            sizes[cls] = (size[0], size[1], size[2])
        object.__setattr__(self, "class_size_m", MappingProxyType(sizes))

    def _class_items(self, name: str) -> dict[ObjectClass, Any]:
        """The mapping ``name`` keyed by :class:`ObjectClass`, all of :data:`CLASSES`."""
        raw = getattr(self, name)
        if not isinstance(raw, Mapping):
            raise ConfigError(f"RadarDetectorConfig.{name} must be a mapping class -> value, "
                              f"got {raw!r}")
        out: dict[ObjectClass, Any] = {}
        for key, value in raw.items():
            try:
                cls = ObjectClass(key)
            except ValueError:
                raise ConfigError(f"RadarDetectorConfig.{name}: unknown class {key!r}; "
                                  f"classes: {[c.value for c in CLASSES]}") from None
            if cls not in CLASSES:
                raise ConfigError(f"RadarDetectorConfig.{name}: class {cls.value!r} is not "
                                  f"one the radar detector uses {[c.value for c in CLASSES]}")
            out[cls] = value
        missing = [c.value for c in CLASSES if c not in out]
        if missing:
            raise ConfigError(f"RadarDetectorConfig.{name} lacks class(es) {missing}")
        return out

    def _per_class(self, name: str, lo_open: float | None) -> Mapping[ObjectClass, float]:
        out: dict[ObjectClass, float] = {}
        for cls, value in self._class_items(name).items():
            if not is_real(value) or not math.isfinite(value) or (
                    lo_open is not None and value <= lo_open):
                bound = "" if lo_open is None else f" > {lo_open:g}"
                raise ConfigError(f"RadarDetectorConfig.{name}[{cls.value}] must be a finite "
                                  f"number{bound}, got {value!r}")
            out[cls] = float(value)
        return MappingProxyType(out)


def _mean_push_back(length: float, width: float) -> float:
    """Mean over the aspect angle ``t`` (uniform) of ``l w / (2 (w |cos t| + l |sin t|))``:
    the depth of a box centre behind the centroid of its visible faces (see module doc)."""
    t = (np.arange(720) + 0.5) * (np.pi / 2 / 720)  # a quarter turn covers it (symmetry)
    return float(np.mean(length * width / (2.0 * (width * np.cos(t) + length * np.sin(t)))))


@dataclass(frozen=True)
class _Clusters:
    """Per-cluster results of :meth:`RadarDetector._fit`, ``K`` clusters.

    Attributes:
        n: ``(K,)`` detections per cluster (float64).
        v: ``(K, 2)`` over-ground BEV velocity, ``base_link`` axes, m/s.
        P_v: ``(K, 2, 2)`` its covariance, (m/s)^2.
        speed: ``(K,)`` ``|v|``, m/s.
        moving: ``(K,)`` bool, significantly moving.
        rms: ``(K,)`` RMS Doppler residual of the velocity fit, m/s (0 without redundancy).
        rcs_k: ``(K,)`` total RCS, dBsm.
        centroid: ``(K, 2)`` RCS-weighted BEV centroid, ``base_link``, m.
        extent: ``(K,)`` diagonal of the BEV bounding box of the detections, m.
        spread: ``(K,)`` larger side of the BEV bounding box of the detections aligned
            with the velocity heading (with ``base_link`` axes when there is none), m.
    """

    n: F64
    v: F64
    P_v: F64
    speed: F64
    moving: B
    rms: F64
    rcs_k: F64
    centroid: F64
    extent: F64
    spread: F64


class RadarDetector:
    """Radar detection list -> objects with over-ground velocity (see the module docstring).

    Args:
        config: settings; None for the defaults.
    """

    def __init__(self, config: RadarDetectorConfig | None = None) -> None:
        config = RadarDetectorConfig() if config is None else config
        if not isinstance(config, RadarDetectorConfig):
            raise TypeError(f"config must be a RadarDetectorConfig, got "
                            f"{type(config).__name__}")
        self._config = config
        self._stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        # per-class arrays in CLASSES order, computed once
        c = config
        self._rcs_mean = np.array([c.class_rcs_mean_dbsm[k] for k in CLASSES])
        self._rcs_std = np.array([c.class_rcs_std_db[k] for k in CLASSES])
        self._max_speed = np.array([c.class_max_speed_mps[k] for k in CLASSES])
        prior = np.array([c.class_prior[k] for k in CLASSES])
        self._log_prior = np.log(prior / prior.sum())
        self._size = np.array([c.class_size_m[k] for k in CLASSES], dtype=np.float64)
        self._mean_push = np.array([_mean_push_back(s[0], s[1]) for s in self._size])

    @property
    def config(self) -> RadarDetectorConfig:
        return self._config

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters of the last :meth:`detect` (read-only copy; keys in the module doc)."""
        return MappingProxyType(dict(self._stats))

    # ------------------------------------------------------------------ clustering
    def _cluster(self, xy: F64, vr: F64, az: F64, eps_xy: float) -> tuple[I64, B]:
        """DBSCAN on position and Doppler.

        Two detections are neighbours when ``(d / eps_xy)^2 + (dv / eps_v)^2 <= 1`` with ``d``
        their BEV distance, ``dv`` their Doppler difference and ``eps_v =
        cluster_eps_doppler_mps + cluster_doppler_per_rad_mps * |d azimuth|`` (the azimuth
        term only between two returns with ``|vr| >= static_speed_mps``): one rigid target
        seen over an azimuth span has radial velocities that differ by up to its speed
        across the line of sight times that span.

        Args:
            xy: ``(M, 2)`` float64 BEV positions, ``base_link``, m.
            vr: ``(M,)`` float64 compensated radial velocity, m/s.
            az: ``(M,)`` float64 azimuth of each detection seen from the radar, rad.
            eps_xy: BEV neighbour distance, m.

        Returns:
            ``(M,)`` int64 cluster index (0..K-1, every noise point its own index) and
            ``(K,)`` bool: the cluster is a real cluster (False: a noise point).
        """
        cfg = self._config
        m = xy.shape[0]
        # candidates by position (a k-d tree), then the Doppler test per candidate pair
        pairs = cKDTree(xy / eps_xy).query_pairs(1.0, output_type="ndarray").reshape(-1, 2)
        pairs = pairs.astype(np.int64)
        i, j = pairs[:, 0], pairs[:, 1]
        d_az = np.abs(np.angle(np.exp(1j * (az[i] - az[j]))))
        # only between two moving returns: a static return (a parked car) next to a slow
        # moving one must not be merged with it because it is seen at another azimuth (near
        # the radar, returns metres apart are tens of degrees apart)
        both_moving = (np.abs(vr[i]) >= cfg.static_speed_mps) & (
            np.abs(vr[j]) >= cfg.static_speed_mps)
        eps_v = cfg.cluster_eps_doppler_mps + np.where(
            both_moving, cfg.cluster_doppler_per_rad_mps * d_az, 0.0)
        d2 = (np.sum((xy[i] - xy[j]) ** 2, axis=1) / eps_xy ** 2
              + ((vr[i] - vr[j]) / eps_v) ** 2)
        pairs = pairs[d2 <= 1.0]
        degree = np.bincount(pairs.ravel(), minlength=m) + 1  # the point itself counts
        core = degree >= cfg.min_samples
        cc = core[pairs[:, 0]] & core[pairs[:, 1]]
        e = pairs[cc]
        graph = coo_matrix((np.ones(e.shape[0]), (e[:, 0], e[:, 1])), shape=(m, m))
        _, comp = connected_components(graph, directed=False)
        comp = comp.astype(np.int64)
        # border points: not core, with a core neighbour -> that neighbour's cluster (the
        # first one found; DBSCAN leaves the choice open)
        mixed = pairs[core[pairs[:, 0]] != core[pairs[:, 1]]]
        if mixed.size:
            border = np.where(core[mixed[:, 0]], mixed[:, 1], mixed[:, 0])
            anchor = np.where(core[mixed[:, 0]], mixed[:, 0], mixed[:, 1])
            first = np.unique(border, return_index=True)[1]
            comp[border[first]] = comp[anchor[first]]
        labels = np.unique(comp, return_inverse=True)[1].reshape(-1).astype(np.int64)
        in_cluster = core.copy()
        if mixed.size:
            in_cluster[np.where(core[mixed[:, 0]], mixed[:, 1], mixed[:, 0])] = True
        real = np.zeros(int(labels.max()) + 1 if m else 0, dtype=bool)
        real[labels[in_cluster]] = True
        # a "cluster" of one core point (min_samples = 1, isolated) is a single detection
        n = np.bincount(labels, minlength=real.shape[0])
        real &= n >= 2
        return labels, real

    # ------------------------------------------------------------------ detection
    def detect(self, scan: RadarScan, T_base_radar: SE3, ego: EgoState | None,
               stamp_ns: int | None = None, *, sensor: str = "radar") -> list[DetectedObject]:
        """Objects from one radar scan.

        Args:
            scan: ``xyz`` ``(N, 3)`` float32 radar frame, m; ``doppler`` ``(N,)`` m/s relative
                to the radar (positive = moving away); ``rcs`` ``(N,)`` dBsm.
            T_base_radar: mounting of the radar (``base_link`` <- radar).
            ego: ego state at the scan (body-frame velocities) for the ego-motion
                compensation; None -> ``[]`` and ``stats["no_ego"] == 1``.
            stamp_ns: stamp of the objects, ns (None: ``scan.stamp_ns``).
            sensor: name put in each object's ``sources``.

        Returns:
            Objects in ``base_link``: box (class-prior size, yaw from the velocity heading
            when fast enough), ``velocity`` ``(3,)`` float64 over-ground m/s in
            ``base_link`` axes (``vz = 0``), ``covariance`` ``(6, 6)`` over
            ``(x, y, z, yaw, vx, vy)``, soft ``class_probs``, ``score`` /
            ``existence_prob``, ``sources = (sensor,)``. Ordered by descending score.

        Raises:
            TypeError: ``scan`` is not a RadarScan, ``T_base_radar`` not an SE3, ``ego``
                neither an EgoState nor None.
            ValueError: ``stamp_ns`` is not a non-negative int.
        """
        if not isinstance(scan, RadarScan):
            raise TypeError(f"detect needs a RadarScan, got {type(scan).__name__}")
        if not isinstance(T_base_radar, SE3):
            raise TypeError(f"T_base_radar must be an SE3, got {type(T_base_radar).__name__}")
        if ego is not None and not isinstance(ego, EgoState):
            raise TypeError(f"ego must be an EgoState or None, got {type(ego).__name__}")
        stamp = scan.stamp_ns if stamp_ns is None else stamp_ns
        if isinstance(stamp, bool) or not isinstance(stamp, int | np.integer) or stamp < 0:
            raise ValueError(f"stamp_ns must be int nanoseconds >= 0, got {stamp_ns!r}")
        stats = dict.fromkeys(STAT_KEYS, 0)
        self._stats = stats
        stats["input"] = len(scan)
        if ego is None:
            stats["no_ego"] = 1  # no ego velocity: Doppler cannot be compensated
            return []
        cfg = self._config
        if len(scan) == 0:
            return []

        # 0-1: compensation, invalid rows, base_link
        with np.errstate(invalid="ignore", over="ignore"):
            vr_all = compensate_doppler(scan, T_base_radar, ego).astype(np.float64)
        xyz_s = scan.xyz.astype(np.float64)
        rng_all = np.linalg.norm(xyz_s, axis=1)
        rcs_all = scan.rcs.astype(np.float64)
        valid = (np.all(np.isfinite(xyz_s), axis=1) & np.isfinite(vr_all)
                 & np.isfinite(rcs_all) & (rng_all > 0.0))
        stats["non_finite"] = int(np.count_nonzero(~valid))
        # absurd ranges / Doppler values (a corrupt list) would only overflow downstream, and
        # a return on the radome has no usable direction
        far = valid & ((rng_all > cfg.max_range_m) | (rng_all < cfg.min_range_m)
                       | (np.abs(vr_all) > 10.0 * cfg.max_speed_mps))
        stats["out_of_range"] = int(np.count_nonzero(far))
        valid &= ~far
        if not np.any(valid):
            return []
        xyz_s, vr, rcs = xyz_s[valid], vr_all[valid], rcs_all[valid]
        p = T_base_radar.apply(xyz_s)
        # line of sight from the radar, base_link axes; its horizontal part meets vz = 0
        u = T_base_radar.rotate(xyz_s / rng_all[valid][:, None])[:, :2]
        radar_xy = T_base_radar.translation[:2]

        # 2: clustering; then rows of parked cars (static, no Doppler to tell them apart,
        # gaps under a metre) are split again with a finer position scale
        xy = p[:, :2]
        az = np.arctan2(u[:, 1], u[:, 0])
        lab, real = self._cluster(xy, vr, az, cfg.cluster_eps_xy_m)
        cl = self._fit(lab, real, xy, u, vr, rcs, ego, radar_xy)
        split = real & ~cl.moving & (cl.extent > cfg.static_split_extent_m)
        if np.any(split):
            pts = split[lab]
            sub_lab, sub_real = self._cluster(xy[pts], vr[pts], az[pts],
                                              cfg.static_split_eps_xy_m)
            kept = np.flatnonzero(~split)
            renum = np.full(split.shape[0], -1, dtype=np.int64)
            renum[kept] = np.arange(kept.shape[0])
            lab = renum[lab]
            lab[pts] = sub_lab + kept.shape[0]
            real = np.concatenate([real[kept], sub_real])
            cl = self._fit(lab, real, xy, u, vr, rcs, ego, radar_xy)
        k = real.shape[0]
        stats["clusters"] = k
        n, speed, moving, rcs_k, extent = cl.n, cl.speed, cl.moving, cl.rcs_k, cl.extent
        stats["moving"] = int(np.count_nonzero(moving))
        stats["static"] = int(np.count_nonzero(~moving[lab]
                                               & (np.abs(vr) < cfg.static_speed_mps)))

        # 4: keep / reject
        single = ~real
        keep = np.ones(k, dtype=bool)

        def reject(mask: B, reason: str) -> None:
            hit = mask & keep
            stats[f"rejected_{reason}"] += int(np.count_nonzero(hit))
            keep[hit] = False

        finite = (np.all(np.isfinite(cl.v), axis=1) & np.all(np.isfinite(cl.P_v), axis=(1, 2))
                  & np.all(np.isfinite(cl.centroid), axis=1) & np.isfinite(rcs_k))
        reject(~finite, "invalid")  # never hand a NaN to a DetectedObject
        reject(extent > cfg.max_extent_m, "extent")
        reject(speed > cfg.max_speed_mps, "speed")
        reject(single & ((rcs_k < cfg.single_min_rcs_dbsm)
                         | (~moving & (rcs_k < cfg.single_static_min_rcs_dbsm))), "single")
        reject(~single & ~moving & ((n < cfg.static_min_points)
                                    | (rcs_k < cfg.static_min_rcs_dbsm)
                                    | (extent > cfg.static_max_extent_m)), "static")
        reject(~single & moving & (rcs_k < cfg.moving_min_rcs_dbsm), "weak")
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            return []

        objects = self._build(idx, cl, single, radar_xy, int(stamp), sensor)
        stats["output"] = len(objects)
        return objects

    def _fit(self, lab: I64, real: B, xy: F64, u: F64, vr: F64, rcs: F64,
             ego: EgoState, radar_xy: F64) -> _Clusters:
        """Per-cluster velocity, motion state, RCS and geometry (batched over clusters).

        Args:
            lab: ``(M,)`` int64 cluster index of each detection (0..K-1).
            real: ``(K,)`` bool, False for single-detection candidates.
            xy: ``(M, 2)`` float64 BEV positions, ``base_link``, m.
            u: ``(M, 2)`` float64 horizontal part of the unit line of sight from the radar,
                ``base_link`` axes.
            vr: ``(M,)`` float64 compensated (over-ground) radial velocity, m/s.
            rcs: ``(M,)`` float64 RCS, dBsm.
            ego: the ego state (its twist covariance, if any).
            radar_xy: ``(2,)`` float64 BEV position of the radar, ``base_link``, m.
        """
        cfg = self._config
        k = real.shape[0]
        n = np.bincount(lab, minlength=k).astype(np.float64)
        rng = np.bincount(lab, np.hypot(*(xy - radar_xy[None]).T), k) / np.maximum(n, 1.0)
        # 3: velocity, batched 2x2 least squares in information form
        S = np.empty((k, 2, 2))
        S[:, 0, 0] = np.bincount(lab, u[:, 0] * u[:, 0], k)
        S[:, 0, 1] = S[:, 1, 0] = np.bincount(lab, u[:, 0] * u[:, 1], k)
        S[:, 1, 1] = np.bincount(lab, u[:, 1] * u[:, 1], k)
        b = np.column_stack([np.bincount(lab, u[:, 0] * vr, k),
                             np.bincount(lab, u[:, 1] * vr, k)])
        lam, E = np.linalg.eigh(S)  # ascending eigenvalues, eigenvectors in columns
        s2 = cfg.doppler_std_mps ** 2
        # variance per eigen-direction before the residual test: Doppler noise, plus the
        # turning-target model error on the weakly resolved (cross-range) one, lam[:, 0]
        model_var = np.zeros((k, 2))
        model_var[:, 0] = (cfg.yaw_rate_std_radps * rng) ** 2
        observed = s2 + lam * model_var[:, :] <= lam * cfg.max_observed_velocity_std_mps ** 2
        safe_lam = np.where(observed, lam, 1.0)
        # component along each eigenvector; 0 (the prior mean) where unobserved
        coef = np.where(observed, np.einsum("kij,ki->kj", E, b) / safe_lam, 0.0)
        v = np.einsum("kij,kj->ki", E, coef)
        resid = vr - np.einsum("ij,ij->i", u, v[lab])
        rss = np.bincount(lab, resid * resid, k)
        dof = n - observed.sum(axis=1)
        rms = np.sqrt(np.where(dof > 0, rss / np.maximum(dof, 1.0), 0.0))
        s2_eff = np.maximum(s2, rms ** 2)
        var = np.where(observed, s2_eff[:, None] / safe_lam + model_var,
                       cfg.unobserved_velocity_std_mps ** 2)
        P_v = np.einsum("kij,kj,klj->kil", E, var, E) + self._ego_velocity_cov(ego)[None]
        speed = np.hypot(v[:, 0], v[:, 1])
        # significance of the resolved velocity: Mahalanobis distance from 0 in the observed
        # subspace (an unobserved direction carries no evidence either way)
        maha2 = np.sum(np.where(observed, coef ** 2 / var, 0.0), axis=1)
        moving = (speed >= cfg.static_speed_mps) & (maha2 >= cfg.moving_min_sigma ** 2)

        # RCS (linear sum) and geometry
        w = np.power(10.0, np.clip(rcs, -80.0, 80.0) / 10.0)  # m^2
        W = np.bincount(lab, w, k)
        rcs_k = 10.0 * np.log10(np.maximum(W, 1e-12))
        centroid = np.column_stack([np.bincount(lab, w * xy[:, 0], k),
                                    np.bincount(lab, w * xy[:, 1], k)]) / W[:, None]
        lo = np.full((k, 2), np.inf)
        hi = np.full((k, 2), -np.inf)
        np.minimum.at(lo, lab, xy)
        np.maximum.at(hi, lab, xy)
        extent = np.hypot(*(hi - lo).T)
        # spread along / across the velocity heading (axis-aligned without a heading): a
        # lower bound of the object's larger dimension, which tells a bus seen from its
        # side from a car
        safe = np.where(speed > 0.0, speed, 1.0)
        head = np.where((speed > 0.0)[:, None], v / safe[:, None], np.array([1.0, 0.0]))
        local = np.column_stack([np.einsum("ij,ij->i", xy, head[lab]),
                                 xy[:, 1] * head[lab, 0] - xy[:, 0] * head[lab, 1]])
        lo_h = np.full((k, 2), np.inf)
        hi_h = np.full((k, 2), -np.inf)
        np.minimum.at(lo_h, lab, local)
        np.maximum.at(hi_h, lab, local)
        spread = np.where((moving & (speed >= cfg.yaw_min_speed_mps))[:, None],
                          hi_h - lo_h, hi - lo).max(axis=1)
        return _Clusters(n=n, v=v, P_v=P_v, speed=speed, moving=moving, rms=rms,
                         rcs_k=rcs_k, centroid=centroid, extent=extent, spread=spread)

    def _ego_velocity_cov(self, ego: EgoState) -> F64:
        """``(2, 2)`` covariance of the ego's BEV velocity error carried into every Doppler
        compensation: the twist covariance's ``vx, vy`` block when present and valid, else
        ``ego_velocity_std_mps^2`` isotropic."""
        cov = ego.twist_covariance
        if cov is not None:
            block = np.asarray(cov, dtype=np.float64)[:2, :2]
            if np.all(np.isfinite(block)) and np.all(np.linalg.eigvalsh(block) >= 0.0):
                return np.array(block)
        return np.eye(2) * self._config.ego_velocity_std_mps ** 2

    def _build(self, idx: I64, cl: _Clusters, single: B, radar_xy: F64, stamp: int,
               sensor: str) -> list[DetectedObject]:
        """Class, heading, box, covariance and score of the kept clusters ``idx``."""
        cfg = self._config
        n, rcs_k, v, P_v, speed = cl.n[idx], cl.rcs_k[idx], cl.v[idx], cl.P_v[idx], cl.speed[idx]
        moving, rms, centroid = cl.moving[idx], cl.rms[idx], cl.centroid[idx]
        spread, single = cl.spread[idx], single[idx]
        m = idx.shape[0]

        # 5: class probabilities (RCS Gaussian x speed limit x prior), floor-mixed
        z = (rcs_k[:, None] - self._rcs_mean[None]) / self._rcs_std[None]
        loglik = self._log_prior[None] - 0.5 * z * z - np.log(self._rcs_std)[None]
        # soft speed limit: the resolved speed is a lower bound of the true speed
        over = (speed[:, None] - self._max_speed[None]) / 1.0
        loglik -= np.logaddexp(0.0, over)
        # soft size limit: the detections' spread cannot much exceed the class's length
        too_long = (spread[:, None] - self._size[None, :, 0]
                    - cfg.class_spread_margin_m) / 0.5
        loglik -= np.logaddexp(0.0, too_long)
        loglik -= loglik.max(axis=1, keepdims=True)
        probs = np.exp(loglik)
        probs /= probs.sum(axis=1, keepdims=True)
        probs = (1.0 - cfg.class_prob_floor) * probs + cfg.class_prob_floor / len(CLASSES)
        label = np.argmax(probs, axis=1)
        size = self._size[label]

        # 6: heading from the velocity when fast enough
        has_yaw = moving & (speed >= cfg.yaw_min_speed_mps)
        safe = np.where(has_yaw, speed, 1.0)
        g = np.column_stack([-v[:, 1], v[:, 0]]) / (safe ** 2)[:, None]
        yaw_var = np.where(has_yaw, np.einsum("ki,kij,kj->k", g, P_v, g), YAW_UNKNOWN_VAR)
        yaw_var = np.minimum(yaw_var, YAW_UNKNOWN_VAR)
        yaw = np.where(has_yaw, np.arctan2(v[:, 1], v[:, 0]), 0.0)

        # 7: position: centroid pushed back along the line of sight
        los = centroid - radar_xy[None]
        rng = np.hypot(los[:, 0], los[:, 1])
        # a centroid right above / below the radar has no horizontal direction: use x
        los = np.where((rng > 1e-3)[:, None], los / np.maximum(rng, 1e-3)[:, None],
                       np.array([1.0, 0.0]))
        # the push-back depends on the class (a bus's centre lies 6 m behind its tail, a
        # car's 2 m) and radar classes are uncertain: push by the most likely class's and
        # count the classes' deviation from it (probability-weighted mean square) as
        # position variance along the line of sight, so that an output-level merge does not
        # trust a radar centre more than the class behind it deserves
        lengths, widths = self._size[None, :, 0], self._size[None, :, 1]
        t = (yaw - np.arctan2(los[:, 1], los[:, 0]))[:, None]
        push_known = lengths * widths / (2.0 * (widths * np.abs(np.cos(t))
                                                + lengths * np.abs(np.sin(t))))
        push_k = np.where(has_yaw[:, None], cfg.push_back_scale * push_known,
                          cfg.push_back_scale_no_heading * self._mean_push[None, :])
        push = push_k[np.arange(m), label]
        push_var = np.einsum("mk,mk->m", probs, (push_k - push[:, None]) ** 2)
        center_xy = centroid + push[:, None] * los
        # box-extent uncertainty: where the centre lies behind the seen faces (large without
        # a heading) plus the sampling of a few returns over those faces (shrinks with n)
        length, width = size[:, 0], size[:, 1]
        half = 0.5 * np.maximum(length, width)
        frac = np.where(has_yaw, cfg.extent_std_fraction, cfg.extent_std_fraction_no_heading)
        ext_var = (frac * half) ** 2 + (cfg.sample_std_fraction * half) ** 2 / n
        var_along = cfg.range_std_m ** 2 / n + ext_var + push_var
        var_cross = (rng * math.radians(cfg.azimuth_std_deg)) ** 2 / n + ext_var
        c, s = los[:, 0], los[:, 1]
        P_xy = np.empty((m, 2, 2))
        P_xy[:, 0, 0] = c * c * var_along + s * s * var_cross
        P_xy[:, 1, 1] = s * s * var_along + c * c * var_cross
        P_xy[:, 0, 1] = P_xy[:, 1, 0] = c * s * (var_along - var_cross)

        # 8: score
        logit = (cfg.score_bias + cfg.score_per_log_points * np.log(n)
                 + cfg.score_per_db * rcs_k + cfg.score_moving * moving
                 - cfg.score_per_residual * rms / cfg.doppler_std_mps
                 + cfg.score_single * single)
        score = 1.0 / (1.0 + np.exp(-np.clip(logit, -50.0, 50.0)))

        cov = np.zeros((m, 6, 6))
        cov[:, :2, :2] = P_xy
        cov[:, 2, 2] = cfg.z_std_m ** 2
        cov[:, 3, 3] = yaw_var
        cov[:, 4:, 4:] = P_v
        names = [cls.value for cls in CLASSES]
        out = []
        for i in np.argsort(-score, kind="stable"):
            center = np.array([center_xy[i, 0], center_xy[i, 1],
                               cfg.ground_z_m + size[i, 2] / 2.0])
            out.append(DetectedObject(
                box=Box3D(center, size[i], float(yaw[i]), "base_link"),
                label=CLASSES[int(label[i])],
                score=float(score[i]),
                stamp_ns=stamp,
                class_probs=dict(zip(names, probs[i].tolist(), strict=True)),
                velocity=np.array([v[i, 0], v[i, 1], 0.0]),
                covariance=cov[i],
                existence_prob=float(score[i]),
                sources=(sensor,),
            ))
        return out


__all__ = ["CLASSES", "STAT_KEYS", "YAW_UNKNOWN_VAR", "RadarDetector", "RadarDetectorConfig"]
