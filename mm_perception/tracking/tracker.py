"""Multi-object tracker: per-class EKFs, gated global-nearest-neighbour association,
track life cycle, radar velocity as a measurement.

One call of :meth:`MultiObjectTracker.update_multi` is one frame:

1. **Time.** ``dt`` comes from the previous frame's stamp. A stamp equal to or before the
   previous one is **rejected** (nothing changes, the previous tracks are returned,
   ``stats["rejected_frames"]`` counts it), except that a jump backwards by more than
   ``TrackerConfig.reset_backwards_s`` (a bag looping, a simulator reset) **resets** the
   tracker (all tracks dropped, ``stats["resets"]``; ids keep increasing) and the frame is
   processed as a first frame. Never an exception for stamp order.
2. **Predict** every track to the stamp (one batched EKF step for all tracks).
3. **Per detection list** (one per sensor, applied in order at the same stamp, so a track
   seen by LiDAR, radar and camera gets three updates): invalid detections are dropped and
   counted (non-finite box, covariance with non-finite or negative variances, a frame other
   than the tracker's); **class-agnostic** association with a class-mismatch penalty (a
   detector that confuses truck and car must not spawn a duplicate track, while a clear
   class disagreement still loses against an equally close agreeing pair). The cost is the
   squared BEV Mahalanobis distance ``d2`` of ``(x, y)``, gated by ``gate`` (chi-square, 2
   dof) **and** ``max_match_distance_m`` (so a track whose covariance has grown large cannot
   take an absurdly far detection); for a detection with a velocity (radar) plus the squared
   Mahalanobis distance of ``(vx, vy)``, gated by ``velocity_gate`` (keeps two crossing
   objects apart where their positions do not); plus the squared Mahalanobis distance of the
   heading, capped at ``yaw_gate`` (at a crossing the headings tell the objects apart; a
   matched heading beyond the cap is not applied, so a wrong one cannot turn a CTRV
   track); plus ``class_mismatch_cost`` when both labels are known and differ. Only pairs
   within ``max_match_distance_m`` are costed (sparse), and
   :func:`~mm_perception.tracking.association.associate_pairs` solves in two stages:
   confirmed and coasting tracks first, tentative tracks (also those born from an earlier
   list of this frame) on the detections left, so a track started by a false alarm cannot
   take an established track's detection. Matched tracks get a pose update
   ``(x, y, z, yaw)`` (heading modulo pi when ``yaw_pi_ambiguous``) and, when the detection
   has a velocity (radar Doppler), a joint pose + velocity update with the detection's full
   ``(6, 6)`` covariance (a CTRV track that does not know its direction of motion yet takes
   it from that velocity). Unmatched valid detections start tentative tracks (so a later
   list of the same frame can already confirm them).
4. **Life cycle.** tentative -> confirmed after ``confirm_hits`` frames with a hit and an
   existence probability of at least ``confirm_existence``; confirmed -> coasting on a
   miss, back to confirmed on a hit; deleted when a tentative track misses more than
   ``tentative_max_misses`` frames in a row, a confirmed/coasting one more than
   ``max_misses`` frames or ``max_coast_s`` seconds since its last hit, or any track's BEV
   position std exceeds ``max_position_std_m`` (or its state stopped being finite). Ids are
   never reused.
5. **Class** is the arg-max of accumulated class log-probabilities (detections' ``class_probs``,
   or their label with ``label_confidence``; UNKNOWN carries no evidence), floored so a
   track can change its mind. The motion model follows the class (the state is converted
   when the model changes). **Existence** is an IPDA-style Bayes recursion: a new track
   starts at ``birth_existence`` times the detection's confidence ``c = score *
   existence_prob``; a hit multiplies the odds by the likelihood ratio ``detection_prob *
   N(y; 0, S) / clutter_density_per_m2`` of its BEV innovation ``y`` (a detection where the
   track predicted it, with a tight ``S``, is strong evidence; a false alarm that merely
   falls into a newborn track's wide gate is weak evidence), mixed with 1 (no evidence) by
   ``c`` and never below 1; a frame without a hit applies ``p (1 - pd) / (1 - p pd)``; and
   ``survival_per_s`` discounts it over time. Requiring it for confirmation holds back
   tracks built from low-confidence detections or from detections far from where the track
   predicted them.

Frames: the motion models assume a frame fixed to the world (``odom``); detections from a
moving ego must be transformed into it first (``Box3D.transformed``; their velocities must
be over ground, i.e. ego-motion compensated). ``base_link`` works for a static ego only.

Outputs are core :class:`~mm_perception.core.types.Track` objects with the filtered box,
velocity ``(vx, vy, 0)`` (the filters are 2D), covariance ``(6, 6)`` over
``(x, y, z, yaw, vx, vy)``, ``score = existence_prob`` and the sources of the last hit.
Tracks deleted in the last frame are in :attr:`MultiObjectTracker.last_deleted` with
status DELETED.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from mm_perception.core.checks import is_real
from mm_perception.core.errors import ConfigError
from mm_perception.core.types import Box3D, DetectedObject, ObjectClass, Track, TrackStatus
from mm_perception.tracking.association import (
    associate_pairs,
    candidate_pairs,
    mahalanobis_pair_costs,
)
from mm_perception.tracking.ekf import (
    BatchEKF,
    CTRVConfig,
    CVConfig,
    MeasurementModel,
    MotionConfig,
    resolve_yaw_ambiguity,
    to_output,
    velocity_prior,
    wrap_angle,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

#: classes with evidence columns (UNKNOWN is "no evidence", not a column)
KNOWN_CLASSES: tuple[ObjectClass, ...] = tuple(c for c in ObjectClass
                                               if c is not ObjectClass.UNKNOWN)
_N_CLS = len(KNOWN_CLASSES)
_ALL_CLASSES: tuple[ObjectClass, ...] = (*KNOWN_CLASSES, ObjectClass.UNKNOWN)
_UNKNOWN = _N_CLS  # label index of UNKNOWN
_LABEL_INDEX = {c: i for i, c in enumerate(_ALL_CLASSES)}
_NAME_INDEX = {c.value: i for i, c in enumerate(KNOWN_CLASSES)}

_TENTATIVE, _CONFIRMED, _COASTING = 0, 1, 2
_NO_INFO_VAR = 1e6  # variance that makes a measurement component carry no information
_STATUS = (TrackStatus.TENTATIVE, TrackStatus.CONFIRMED, TrackStatus.COASTING)

STAT_KEYS = ("frames", "rejected_frames", "resets", "detections", "rejected_detections",
             "wrong_frame_detections", "rejected_measurements", "matches", "births",
             "confirmations", "deaths", "model_switches", "yaw_outliers",
             "numerical_failures")


def default_motion() -> Mapping[ObjectClass, MotionConfig]:
    """Per-class motion models: vehicles CTRV (smooth), pedestrians an agile CV."""
    car = CTRVConfig(accel_std=0.8, yaw_accel_std=0.25, init_speed_std=15.0)
    heavy = CTRVConfig(accel_std=0.6, yaw_accel_std=0.15, init_speed_std=12.0)
    return MappingProxyType({
        ObjectClass.CAR: car,
        ObjectClass.TRUCK: heavy,
        ObjectClass.BUS: heavy,
        ObjectClass.CYCLIST: CTRVConfig(accel_std=1.2, yaw_accel_std=0.8, init_speed_std=8.0,
                                        init_yaw_rate_std=1.0),
        ObjectClass.PEDESTRIAN: CVConfig(accel_std=1.0, yaw_rate_std=2.0, init_speed_std=3.0),
        ObjectClass.UNKNOWN: CVConfig(accel_std=1.5, yaw_rate_std=1.0, init_speed_std=15.0),
    })


def _require(cond: bool, key: str, value: object, rule: str) -> None:
    if not cond:
        raise ConfigError(f"TrackerConfig.{key} must be {rule}, got {value!r}")


def _is_finite_real(v: object) -> bool:
    """A finite real number (not a bool)."""
    return is_real(v) and math.isfinite(v)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TrackerConfig:
    """Multi-object tracker settings (see the module docstring for how they act).

    Attributes:
        gate: squared Mahalanobis BEV position gate, chi-square 2 dof (13.8 = 99.9 %).
        velocity_gate: squared Mahalanobis gate on the velocity of detections that have
            one, chi-square 2 dof.
        use_velocity_in_association: add the velocity distance to the cost (see above).
        use_yaw_in_association: add the heading distance, capped at ``yaw_gate``, to the
            cost (see above).
        yaw_gate: chi-square (1 dof) cap of the heading cost; a matched detection whose
            heading is beyond it updates the position but not the heading.
        maximize_matches: association objective (see
            :func:`~mm_perception.tracking.association.associate`); False: largest total
            gain ``gate - cost`` (a pair near the gate does not displace a good one).
        max_match_distance_m: absolute BEV distance cap for a match, m.
        class_mismatch_cost: added to the cost when track and detection labels differ
            (both known); >= 0.
        confirm_hits: frames with a hit before a track is confirmed (1 = at once).
        tentative_max_misses: consecutive missed frames a tentative track survives.
        max_misses: consecutive missed frames a confirmed (coasting) track survives.
        max_coast_s: seconds since the last hit a confirmed (coasting) track survives.
        max_position_std_m: delete a track whose largest BEV position std exceeds this, m.
        motion: motion model per class; every :class:`ObjectClass` must be present.
        default_position_std_m / default_z_std_m / default_yaw_std_rad /
        default_velocity_std_mps: measurement std used for detections without covariance.
        use_velocity_measurements: apply detections' velocities (radar) as measurements.
        yaw_pi_ambiguous: detections' headings are known modulo pi only.
        size_smoothing: exponential smoothing factor of the box size, (0, 1].
        detection_prob: probability that a sensor list detects an existing object, (0, 1).
        clutter_density_per_m2: expected false detections per square metre of BEV in one
            detection list (existence likelihood ratio), > 0.
        birth_existence: existence of a new track from a detection of confidence 1, (0, 1).
        birth_min_confidence: a detection whose confidence ``score * existence_prob`` is
            below this updates tracks but does not start one, [0, 1) (a single weak sensor's
            report, e.g. a lone radar cluster, confirms an object but does not found one).
        confirm_existence: existence a tentative track needs to be confirmed, [0, 1).
        survival_per_s: probability an object still exists after one second, (0, 1].
        label_confidence: class probability given to a detection's label when it has no
            ``class_probs``, [1/5, 1).
        class_prob_floor: floor on accumulated class probabilities, (0, 0.2).
        min_label_prob: below this accumulated probability the label is UNKNOWN, [0, 1).
        reset_backwards_s: a stamp more than this many seconds before the previous one
            resets the tracker; None: always reject backward stamps.
        frame_id: frame of the tracks; detections in another frame are dropped (counted).
            None: the frame of the first detection seen.
    """

    gate: float = 13.8
    velocity_gate: float = 13.8
    use_velocity_in_association: bool = True
    use_yaw_in_association: bool = True
    yaw_gate: float = 10.83
    maximize_matches: bool = False
    max_match_distance_m: float = 10.0
    class_mismatch_cost: float = 4.0
    confirm_hits: int = 3
    tentative_max_misses: int = 0
    max_misses: int = 10
    max_coast_s: float = 1.5
    max_position_std_m: float = 5.0
    motion: Mapping[ObjectClass, MotionConfig] = field(default_factory=default_motion)
    default_position_std_m: float = 0.5
    default_z_std_m: float = 0.5
    default_yaw_std_rad: float = 0.5
    default_velocity_std_mps: float = 1.0
    use_velocity_measurements: bool = True
    yaw_pi_ambiguous: bool = True
    size_smoothing: float = 0.3
    detection_prob: float = 0.9
    clutter_density_per_m2: float = 1e-2
    birth_existence: float = 0.3
    birth_min_confidence: float = 0.1
    confirm_existence: float = 0.9
    survival_per_s: float = 0.99
    label_confidence: float = 0.7
    class_prob_floor: float = 1e-3
    min_label_prob: float = 0.4
    reset_backwards_s: float | None = 1.0
    frame_id: str | None = None

    def __post_init__(self) -> None:
        for key in ("gate", "velocity_gate", "yaw_gate", "max_match_distance_m", "max_coast_s",
                    "max_position_std_m", "default_position_std_m", "default_z_std_m",
                    "default_yaw_std_rad", "default_velocity_std_mps"):
            val = getattr(self, key)
            _require(_is_finite_real(val) and val > 0, key, val, "a finite number > 0")
        _require(_is_finite_real(self.class_mismatch_cost) and self.class_mismatch_cost >= 0,
                 "class_mismatch_cost", self.class_mismatch_cost, "a finite number >= 0")
        for key, low in (("confirm_hits", 1), ("tentative_max_misses", 0), ("max_misses", 0)):
            val = getattr(self, key)
            _require(isinstance(val, int) and not isinstance(val, bool) and val >= low,
                     key, val, f"an int >= {low}")
        for key in ("detection_prob", "birth_existence"):
            val = getattr(self, key)
            _require(_is_finite_real(val) and 0 < val < 1, key, val, "in (0, 1)")
        _require(_is_finite_real(self.clutter_density_per_m2) and self.clutter_density_per_m2 > 0,
                 "clutter_density_per_m2", self.clutter_density_per_m2, "a finite number > 0")
        for key in ("confirm_existence", "birth_min_confidence"):
            val = getattr(self, key)
            _require(_is_finite_real(val) and 0 <= val < 1, key, val, "in [0, 1)")
        _require(_is_finite_real(self.survival_per_s) and 0 < self.survival_per_s <= 1,
                 "survival_per_s", self.survival_per_s, "in (0, 1]")
        _require(_is_finite_real(self.size_smoothing) and 0 < self.size_smoothing <= 1,
                 "size_smoothing", self.size_smoothing, "in (0, 1]")
        _require(_is_finite_real(self.label_confidence) and 1 / _N_CLS <= self.label_confidence < 1,
                 "label_confidence", self.label_confidence, f"in [1/{_N_CLS}, 1)")
        _require(_is_finite_real(self.class_prob_floor) and 0 < self.class_prob_floor < 1 / _N_CLS,
                 "class_prob_floor", self.class_prob_floor, f"in (0, 1/{_N_CLS})")
        _require(_is_finite_real(self.min_label_prob) and 0 <= self.min_label_prob < 1,
                 "min_label_prob", self.min_label_prob, "in [0, 1)")
        for key in ("use_velocity_measurements", "use_velocity_in_association",
                    "use_yaw_in_association", "maximize_matches", "yaw_pi_ambiguous"):
            _require(isinstance(getattr(self, key), bool), key, getattr(self, key), "a bool")
        if self.reset_backwards_s is not None:
            _require(_is_finite_real(self.reset_backwards_s) and self.reset_backwards_s >= 0,
                     "reset_backwards_s", self.reset_backwards_s, "None or a number >= 0")
        if self.frame_id is not None:
            _require(isinstance(self.frame_id, str) and bool(self.frame_id), "frame_id",
                     self.frame_id, "None or a non-empty string")
        if not isinstance(self.motion, Mapping):
            raise ConfigError(f"TrackerConfig.motion must be a mapping ObjectClass -> "
                              f"CVConfig | CTRVConfig, got {type(self.motion).__name__}")
        motion: dict[ObjectClass, MotionConfig] = {}
        for key, cfg in self.motion.items():
            try:
                cls = ObjectClass(key)
            except ValueError:
                raise ConfigError(f"TrackerConfig.motion has unknown class {key!r}; classes: "
                                  f"{[c.value for c in ObjectClass]}") from None
            if not isinstance(cfg, CVConfig | CTRVConfig):
                raise ConfigError(f"TrackerConfig.motion[{cls.value!r}] must be CVConfig or "
                                  f"CTRVConfig, got {cfg!r}")
            motion[cls] = cfg
        missing = [c.value for c in ObjectClass if c not in motion]
        if missing:
            raise ConfigError(f"TrackerConfig.motion lacks class(es) {missing}")
        object.__setattr__(self, "motion", MappingProxyType(motion))


@dataclass
class _Detections:
    """One detection list as arrays (valid detections only)."""

    objects: list[DetectedObject]
    pose: F64        # (D, 4) x, y, z, yaw
    cov: F64         # (D, 6, 6) (x, y, z, yaw, vx, vy)
    has_vel: B       # (D,)
    vel: F64         # (D, 2)
    size: F64        # (D, 3)
    label: I64       # (D,) index into _ALL_CLASSES
    logp: F64        # (D, _N_CLS) class log-evidence (0 row: no evidence)
    conf: F64        # (D,) score * existence_prob

    def __len__(self) -> int:
        return len(self.objects)

    def slice(self, lo: int, hi: int) -> _Detections:
        """Detections ``lo:hi`` (array views)."""
        return _Detections(self.objects[lo:hi], self.pose[lo:hi], self.cov[lo:hi],
                           self.has_vel[lo:hi], self.vel[lo:hi], self.size[lo:hi],
                           self.label[lo:hi], self.logp[lo:hi], self.conf[lo:hi])


def _as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


class MultiObjectTracker:
    """Tracks objects across frames; see the module docstring for the algorithm.

    Attributes:
        config: the settings.
        stats: counters since construction (:data:`STAT_KEYS`).
        last_deleted: tracks deleted by the last call of :meth:`update_multi` (status
            DELETED; all tracks on a reset; empty after a rejected frame).
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config if config is not None else TrackerConfig()
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._next_id = 0
        self._motion_cfgs: tuple[MotionConfig, ...] = tuple(self.config.motion[c]
                                                            for c in _ALL_CLASSES)
        self._label_logp = self._make_label_evidence()
        self._default_cov = self._make_default_cov()
        self._last_stamp: int | None = None
        self._outputs: list[Track] = []
        self.last_deleted: list[Track] = []
        self._clear()

    # ---------------------------------------------------------------- public API
    @property
    def tracks(self) -> list[Track]:
        """Live tracks after the last processed frame (tentative, confirmed, coasting)."""
        return list(self._outputs)

    @property
    def frame_id(self) -> str | None:
        """Frame of the tracks (None until the first detection when not configured)."""
        return self._frame

    def reset(self) -> None:
        """Drop all tracks and the time reference (ids keep increasing)."""
        self._clear()

    def update(self, detections: Sequence[DetectedObject], stamp_ns: int) -> list[Track]:
        """One frame with one detection list; see :meth:`update_multi`."""
        return self.update_multi([detections], stamp_ns)

    def update_multi(self, detection_lists: Sequence[Sequence[DetectedObject]],
                     stamp_ns: int) -> list[Track]:
        """One frame: predict to ``stamp_ns``, update with each list in turn, life cycle.

        Args:
            detection_lists: one list per sensor (or fusion output), all measured at
                ``stamp_ns`` and in the tracker's frame; may be empty.
            stamp_ns: frame stamp, int ns, strictly increasing (see the module docstring
                for stamps that are not).

        Returns:
            Live tracks sorted by id.
        """
        if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, int | np.integer):
            raise TypeError(f"stamp_ns must be int nanoseconds, got {type(stamp_ns).__name__}")
        stamp = int(stamp_ns)
        self.last_deleted = []
        if self._last_stamp is not None and stamp <= self._last_stamp:
            back_s = (self._last_stamp - stamp) * 1e-9
            limit = self.config.reset_backwards_s
            if limit is not None and back_s > limit:
                self.stats["resets"] += 1
                self.last_deleted = [self._deleted_copy(t) for t in self._outputs]
                self._clear()
            else:
                self.stats["rejected_frames"] += 1
                return list(self._outputs)
        self.stats["frames"] += 1
        dt = 0.0 if self._last_stamp is None else (stamp - self._last_stamp) * 1e-9
        self._last_stamp = stamp
        self._ekf.predict(dt)
        self._exist *= self.config.survival_per_s ** dt
        self._hit[:] = False
        lists = [list(dets) for dets in detection_lists]
        # one extraction for all lists (fixed costs once), then the lists in turn
        batch, list_index = self._extract([d for dets in lists for d in dets],
                                          np.repeat(np.arange(len(lists)),
                                                    [len(dets) for dets in lists]))
        bounds = np.searchsorted(list_index, np.arange(len(lists) + 1)).tolist()
        for lo, hi in itertools.pairwise(bounds):
            if hi > lo:
                self._associate_and_update(batch.slice(lo, hi), stamp)
        self._outputs = self._life_cycle(stamp)
        return list(self._outputs)

    # ---------------------------------------------------------------- internals
    def _clear(self) -> None:
        self._ekf = BatchEKF()
        self._ids: I64 = np.zeros(0, dtype=np.int64)
        self._status: I64 = np.zeros(0, dtype=np.int64)
        self._hits: I64 = np.zeros(0, dtype=np.int64)
        self._misses: I64 = np.zeros(0, dtype=np.int64)
        self._age: I64 = np.zeros(0, dtype=np.int64)
        self._last_hit: I64 = np.zeros(0, dtype=np.int64)
        self._exist: F64 = np.zeros(0)
        self._logp: F64 = np.zeros((0, _N_CLS))
        self._label: I64 = np.zeros(0, dtype=np.int64)
        self._motion_label: I64 = np.zeros(0, dtype=np.int64)
        self._size: F64 = np.zeros((0, 3))
        self._hit: B = np.zeros(0, dtype=bool)
        self._sources: list[tuple[str, ...]] = []
        self._last_stamp = None
        self._frame: str | None = self.config.frame_id
        self._outputs = []

    def _make_label_evidence(self) -> F64:
        """``(_N_CLS + 1, _N_CLS)`` log-evidence of a bare label (last row: UNKNOWN)."""
        conf = self.config.label_confidence
        rest = (1.0 - conf) / (_N_CLS - 1)
        table = np.full((_N_CLS + 1, _N_CLS), math.log(rest))
        table[np.arange(_N_CLS), np.arange(_N_CLS)] = math.log(conf)
        table[_N_CLS] = 0.0  # UNKNOWN: no evidence
        return table

    def _extract(self, objs: list[DetectedObject], list_index: I64
                 ) -> tuple[_Detections, I64]:
        """Detections -> arrays, with ``list_index`` ``(N,)`` (which list each came from);
        drops (and counts) invalid detections, returns the kept ones' list indices."""
        cfg = self.config
        n = len(objs)
        self.stats["detections"] += n
        if n == 0:
            return self._empty_detections(), list_index
        if self._frame is None:
            self._frame = objs[0].box.frame_id
        # one pass reads every field (``zip(*...)`` transposes in C), cheaper than a list
        # comprehension per field
        boxes, vel_list, cov_list, labels, scores, exists = zip(
            *[(d.box, d.velocity, d.covariance, d.label, d.score, d.existence_prob)
              for d in objs], strict=True)
        centers_l, yaws_l, sizes_l, frames = zip(
            *[(b.center, b.yaw, b.size, b.frame_id) for b in boxes], strict=True)
        centers = np.concatenate(centers_l).astype(np.float64).reshape(n, 3)
        yaws = np.array(yaws_l, dtype=np.float64)
        sizes = np.concatenate(sizes_l).astype(np.float64).reshape(n, 3)
        frame = self._frame
        right_frame = (np.ones(n, dtype=bool) if frames.count(frame) == n
                       else np.array([f == frame for f in frames], dtype=bool))
        has_vel = np.array([v is not None for v in vel_list], dtype=bool)
        vel = np.zeros((n, 2))
        if has_vel.any():
            vel[has_vel] = np.concatenate([v for v in vel_list if v is not None]
                                          ).astype(np.float64).reshape(-1, 3)[:, :2]
        if not cfg.use_velocity_measurements:
            has_vel[:] = False
        cov = np.broadcast_to(self._default_cov, (n, 6, 6)).copy()
        has_cov = np.array([c is not None for c in cov_list], dtype=bool)
        if has_cov.any():
            given = np.concatenate([c for c in cov_list if c is not None]
                                   ).astype(np.float64).reshape(-1, 6, 6)
            cov[has_cov] = 0.5 * (given + np.swapaxes(given, 1, 2))
        # velocity part only matters when a velocity was measured
        cov[~has_vel, 4:, :] = 0.0
        cov[~has_vel, :, 4:] = 0.0
        diag = np.diagonal(cov, axis1=1, axis2=2)
        label = np.array([_LABEL_INDEX[lab] for lab in labels], dtype=np.int64)
        logp, class_ok = self._class_evidence(objs, label)
        numbers = np.concatenate([centers, yaws[:, None], sizes, vel, cov.reshape(n, 36)],
                                 axis=1)
        with np.errstate(invalid="ignore"):
            # (diag >= 0 is False for NaN; the velocity block of a detection without a
            # velocity is zeroed above)
            valid = (np.isfinite(numbers).all(axis=1) & (sizes > 0).all(axis=1)
                     & (diag >= 0).all(axis=1) & right_frame & class_ok)
        self.stats["wrong_frame_detections"] += int((~right_frame).sum())
        self.stats["rejected_detections"] += int((~valid).sum())
        conf = np.array(scores, dtype=np.float64) * np.array(exists, dtype=np.float64)
        if not valid.all():
            keep = np.flatnonzero(valid)
            objs = [objs[i] for i in keep]
            centers, yaws, sizes, cov, has_vel, vel, label, logp, conf, list_index = (
                centers[keep], yaws[keep], sizes[keep], cov[keep], has_vel[keep], vel[keep],
                label[keep], logp[keep], conf[keep], list_index[keep])
        pose = np.concatenate([centers, wrap_angle(yaws)[:, None]], axis=1)
        return _Detections(objs, pose, cov, has_vel, vel, sizes, label, logp, conf), list_index

    def _class_evidence(self, objs: list[DetectedObject], label: I64) -> tuple[F64, B]:
        """``(D, _N_CLS)`` class log-evidence (from ``class_probs`` where given and usable,
        else from the label) and ``(D,)`` False where ``class_probs`` cannot be read."""
        n = len(objs)
        logp = self._label_logp[label]
        ok = np.ones(n, dtype=bool)
        # flattened (object, class, probability) entries of every ``class_probs``; built
        # with C-level list extends (one tuple per entry costs several times more)
        mappings = [d.class_probs for d in objs]
        counts = [len(m) for m in mappings]
        keys: list[object] = []
        values: list[object] = []
        for m in mappings:
            if m:
                keys.extend(m)
                values.extend(m.values())
        if not keys:
            return logp, ok
        idx = np.repeat(np.arange(n, dtype=np.int64), counts)
        names = _NAME_INDEX
        cls = np.array([names.get(k if type(k) is str else str(k), -1) for k in keys],
                       dtype=np.int64)
        try:
            val = np.array(values, dtype=np.float64)
            if val.shape != (len(values),):
                raise ValueError("not one number per class")
        except (TypeError, ValueError):
            val = np.array([_as_float(v) for v in values], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~(val >= 0)  # NaN, negative, not a number
        ok[idx[bad]] = False
        use = (cls >= 0) & ~bad
        p = np.zeros((n, _N_CLS))
        np.add.at(p, (idx[use], cls[use]), val[use])
        total = p.sum(axis=1)
        has = total > 0
        if has.any():
            logp[has] = np.log(np.maximum(p[has] / total[has, None],
                                          self.config.class_prob_floor))
        return logp, ok

    @staticmethod
    def _empty_detections() -> _Detections:
        return _Detections([], np.zeros((0, 4)), np.zeros((0, 6, 6)), np.zeros(0, bool),
                           np.zeros((0, 2)), np.zeros((0, 3)), np.zeros(0, np.int64),
                           np.zeros((0, _N_CLS)), np.zeros(0))

    def _make_default_cov(self) -> F64:
        c = self.config
        return np.diag(np.array([c.default_position_std_m, c.default_position_std_m,
                                 c.default_z_std_m, c.default_yaw_std_rad,
                                 c.default_velocity_std_mps, c.default_velocity_std_mps]) ** 2)

    def _pair_costs(self, rows: I64, det: _Detections) -> tuple[I64, I64, F64, float]:
        """Admissible (track row, detection) pairs with their costs, and the largest cost a
        pair can have (the gate handed to :func:`associate_pairs`). Only pairs within
        ``max_match_distance_m`` are costed at all."""
        cfg = self.config
        mean, cov = self._ekf.mean[rows], self._ekf.cov[rows]
        ti, di = candidate_pairs(mean[:, :2], det.pose[:, :2], cfg.max_match_distance_m)
        limit = cfg.gate + cfg.class_mismatch_cost
        if ti.size == 0:
            return ti, di, np.zeros(0), limit
        cost = mahalanobis_pair_costs(mean[:, :2], cov[:, :2, :2], det.pose[:, :2],
                                      det.cov[:, :2, :2], ti, di)
        keep = cost <= cfg.gate
        if cfg.use_velocity_in_association:
            limit += cfg.velocity_gate
            vp = np.flatnonzero(det.has_vel[di] & keep)
            if vp.size:
                t_v = ti[vp]
                vel, vcov = velocity_prior(mean[t_v], cov[t_v], self._ekf.is_ctrv[rows[t_v]])
                dv2 = mahalanobis_pair_costs(vel, vcov, det.vel, det.cov[:, 4:, 4:],
                                             np.arange(vp.size), di[vp])
                keep[vp] &= dv2 <= cfg.velocity_gate
                cost[vp] += dv2
        ti, di, cost = ti[keep], di[keep], cost[keep]
        if cfg.use_yaw_in_association:
            # capped, not gated: a detector's heading can be off by 90 degrees, which must
            # not spawn a duplicate track, but at a crossing the heading tells who is who
            cost += np.minimum(self._yaw_d2(rows[ti], det, di), cfg.yaw_gate)
            limit += cfg.yaw_gate
        t_lab, d_lab = self._label[rows[ti]], det.label[di]
        mismatch = (t_lab != d_lab) & (t_lab != _UNKNOWN) & (d_lab != _UNKNOWN)
        return ti, di, cost + cfg.class_mismatch_cost * mismatch, limit

    def _yaw_d2(self, rows: I64, det: _Detections, cols: I64) -> F64:
        """``(K,)`` squared Mahalanobis distance of the heading of detection ``cols[k]`` to
        track ``rows[k]`` (modulo pi when ``yaw_pi_ambiguous``)."""
        pred = self._ekf.mean[rows, 3]
        meas = det.pose[cols, 3]
        if self.config.yaw_pi_ambiguous:
            meas = resolve_yaw_ambiguity(meas, pred)
        var = self._ekf.cov[rows, 3, 3] + det.cov[cols, 3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            d2 = wrap_angle(meas - pred) ** 2 / var
        return np.where(var > 0, d2, np.inf)

    def _associate_and_update(self, det: _Detections, stamp: int) -> None:
        """Cascade: confirmed and coasting tracks pick first, tentative ones (including
        tracks born from an earlier list of this frame) take what is left, so a track
        started by a false alarm cannot take the detection of an established track. The
        costs are computed once and all matches applied in one batched update."""
        n_t, n_d = len(self._ids), len(det)
        matched = [np.zeros((0, 2), dtype=np.int64)]
        if n_t:
            ti, di, cost, limit = self._pair_costs(np.arange(n_t), det)
            tentative = self._status[ti] == _TENTATIVE
            col_free = np.ones(n_d, dtype=bool)
            for stage in (~tentative, tentative):
                sel = stage & col_free[di]
                if not sel.any():
                    continue
                m, _, _ = associate_pairs(ti[sel], di[sel], cost[sel], n_t, n_d, limit,
                                          self.config.maximize_matches)
                col_free[m[:, 1]] = False
                matched.append(m)
        matches = np.concatenate(matched)
        if len(matches):
            self._apply_matches(matches[:, 0], matches[:, 1], det, stamp)
        free = det.conf >= self.config.birth_min_confidence
        free[matches[:, 1]] = False
        if free.any():
            self._birth(np.flatnonzero(free), det)

    def _apply_matches(self, rows: I64, cols: I64, det: _Detections, stamp: int) -> None:
        cfg = self.config
        z = np.concatenate([det.pose[cols], det.vel[cols]], axis=1)
        likelihood = self._bev_likelihood(rows, z[:, :2], det.cov[cols, :2, :2])
        if cfg.yaw_pi_ambiguous:
            z[:, 3] = resolve_yaw_ambiguity(z[:, 3], self._ekf.mean[rows, 3])
        r = det.cov[cols].copy()
        # a heading far outside its gate (a detector's 90-degree box flip, or a detection
        # that is not this object's) would turn a CTRV track: keep its position only
        yaw_bad = self._yaw_d2(rows, det, cols) > cfg.yaw_gate
        if yaw_bad.any():
            self.stats["yaw_outliers"] += int(yaw_bad.sum())
            r[yaw_bad, 3, :] = 0.0
            r[yaw_bad, :, 3] = 0.0
            r[yaw_bad, 3, 3] = _NO_INFO_VAR
        with_vel = det.has_vel[cols]
        # CTRV tracks that do not know their direction of motion yet take a measured
        # velocity in Cartesian form (see BatchEKF.release_heading)
        released = self._ekf.release_heading(rows[with_vel])
        ok = np.zeros(rows.size, dtype=bool)
        for sel, model in ((~with_vel, MeasurementModel.POSE),
                           (with_vel, MeasurementModel.POSE_VELOCITY)):
            if sel.any():
                m = model.dim
                ok[sel] = self._ekf.update(rows[sel], z[sel, :m], r[sel, :m, :m], model)
        if released.size:
            self._ekf.set_config(released, [self._motion_cfgs[i] for i in
                                            self._motion_label[released].tolist()])
        self.stats["rejected_measurements"] += int((~ok).sum())
        rows, cols = rows[ok], cols[ok]
        self.stats["matches"] += int(rows.size)
        if rows.size == 0:
            return
        self._hit[rows] = True
        self._last_hit[rows] = stamp
        for r_i, c_i in zip(rows.tolist(), cols.tolist(), strict=True):
            self._sources[r_i] = det.objects[c_i].sources
        alpha = np.maximum(cfg.size_smoothing, 1.0 / (self._hits[rows] + 2.0))[:, None]
        self._size[rows] += alpha * (det.size[cols] - self._size[rows])
        # likelihood ratio object / clutter of this hit; the detection is the object's with
        # probability conf (else it says nothing: ratio 1), and a hit is never evidence
        # against existence
        conf = det.conf[cols]
        ratio = (cfg.detection_prob / cfg.clutter_density_per_m2) * likelihood[ok]
        ratio = np.maximum(conf * ratio + (1.0 - conf), 1.0)
        p = self._exist[rows]
        self._exist[rows] = p * ratio / (p * ratio + (1.0 - p))
        self._update_class(rows, det.logp[cols])

    def _bev_likelihood(self, rows: I64, z_xy: F64, r_xy: F64) -> F64:
        """``(K,)`` Gaussian density (1/m^2) of the BEV position ``z_xy`` ``(K, 2)`` under
        the prediction of track ``rows`` (covariance ``P_xy + r_xy``)."""
        y = z_xy - self._ekf.mean[rows, :2]
        s = self._ekf.cov[rows, :2, :2] + r_xy
        a, d = s[:, 0, 0], s[:, 1, 1]
        b = 0.5 * (s[:, 0, 1] + s[:, 1, 0])
        det_s = a * d - b * b
        with np.errstate(divide="ignore", invalid="ignore"):
            d2 = (d * y[:, 0] ** 2 - 2.0 * b * y[:, 0] * y[:, 1] + a * y[:, 1] ** 2) / det_s
            g = np.exp(-0.5 * d2) / (2.0 * math.pi * np.sqrt(det_s))
        return np.where((det_s > 0) & np.isfinite(g), g, 0.0)

    def _update_class(self, rows: I64, logp: F64) -> None:
        acc = self._logp[rows] + logp
        acc -= acc.max(axis=1, keepdims=True)
        acc -= np.log(np.exp(acc).sum(axis=1, keepdims=True))
        acc = np.maximum(acc, math.log(self.config.class_prob_floor))
        acc -= np.log(np.exp(acc).sum(axis=1, keepdims=True))
        self._logp[rows] = acc
        best = acc.argmax(axis=1)
        sure = np.exp(acc.max(axis=1)) >= self.config.min_label_prob
        self._label[rows] = np.where(sure, best, _UNKNOWN)
        change = rows[self._label[rows] != self._motion_label[rows]]
        if change.size:
            cfgs = [self._motion_cfgs[i] for i in self._label[change].tolist()]
            self.stats["model_switches"] += self._ekf.set_config(change, cfgs)
            self._motion_label[change] = self._label[change]

    def _birth(self, cols: I64, det: _Detections) -> None:
        k = cols.size
        label = det.label[cols]
        cfgs = [self._motion_cfgs[i] for i in label.tolist()]
        init_var = np.array([c.init_speed_std for c in cfgs]) ** 2
        mean = np.concatenate([det.pose[cols], det.vel[cols]], axis=1)
        cov = det.cov[cols].copy()
        no_vel = ~det.has_vel[cols]
        cov[no_vel, 4, 4] = init_var[no_vel]
        cov[no_vel, 5, 5] = init_var[no_vel]
        cov += 1e-6 * np.eye(6)  # a perfect (zero-covariance) detection still gives a PD prior
        self._ekf.append_output_states(mean, cov, cfgs)
        self._ids = np.concatenate([self._ids, np.arange(self._next_id, self._next_id + k)])
        self._next_id += k
        zeros = np.zeros(k, dtype=np.int64)
        self._status = np.concatenate([self._status, zeros + _TENTATIVE])
        self._hits = np.concatenate([self._hits, zeros])
        self._misses = np.concatenate([self._misses, zeros])
        self._age = np.concatenate([self._age, zeros - 1])  # +1 at the end of this frame
        self._last_hit = np.concatenate([self._last_hit, zeros + (self._last_stamp or 0)])
        self._exist = np.concatenate([self._exist, self.config.birth_existence * det.conf[cols]])
        self._logp = np.concatenate([self._logp, np.full((k, _N_CLS), -math.log(_N_CLS))])
        self._label = np.concatenate([self._label, zeros + _UNKNOWN])
        self._motion_label = np.concatenate([self._motion_label, label])
        self._size = np.concatenate([self._size, det.size[cols]])
        self._hit = np.concatenate([self._hit, np.ones(k, dtype=bool)])
        self._sources.extend(det.objects[i].sources for i in cols.tolist())
        self.stats["births"] += k
        rows = np.arange(len(self._ids) - k, len(self._ids))
        self._update_class(rows, det.logp[cols])

    def _life_cycle(self, stamp: int) -> list[Track]:
        """Hits, misses, existence, status and deletions of this frame; returns the live
        tracks (deleted ones go to :attr:`last_deleted`)."""
        cfg = self.config
        hit = self._hit
        self._age += 1
        self._hits += hit
        self._misses = np.where(hit, 0, self._misses + 1)
        miss = ~hit
        if miss.any():
            p = self._exist[miss]
            pd = cfg.detection_prob
            self._exist[miss] = p * (1.0 - pd) / (1.0 - p * pd)
        status = self._status
        promote = ((status == _TENTATIVE) & (self._hits >= cfg.confirm_hits)
                   & (self._exist >= cfg.confirm_existence))
        self.stats["confirmations"] += int(promote.sum())
        live = (status != _TENTATIVE) | promote
        status = np.where(live, np.where(self._misses > 0, _COASTING, _CONFIRMED), _TENTATIVE)
        self._status = status
        cov_xy = self._ekf.cov[:, :2, :2]
        a, b, d = cov_xy[:, 0, 0], cov_xy[:, 0, 1], cov_xy[:, 1, 1]
        max_var = 0.5 * (a + d) + np.sqrt(0.25 * (a - d) ** 2 + b * b)
        coast_s = (stamp - self._last_hit) * 1e-9
        dead = np.where(status == _TENTATIVE, self._misses > cfg.tentative_max_misses,
                        (self._misses > cfg.max_misses) | (coast_s > cfg.max_coast_s))
        dead |= ~(max_var <= cfg.max_position_std_m ** 2)  # also catches NaN
        broken = ~(np.isfinite(self._ekf.mean).all(axis=1)
                   & np.isfinite(self._ekf.cov).all(axis=(1, 2)))
        dead |= broken
        if not dead.any():
            return self._build_outputs(np.arange(len(self._ids)), stamp)
        # the live and the deleted tracks' outputs in one batch (the per-call fixed cost
        # is a good part of it), before the deleted rows are dropped; a non-finite state
        # is not reported
        rows = np.flatnonzero(~broken)
        gone = dead[rows]
        built = self._build_outputs(rows, stamp, deleted=gone)
        gone_l = gone.tolist()
        self.last_deleted.extend(t for t, g in zip(built, gone_l, strict=True) if g)
        self.stats["numerical_failures"] += int(broken.sum())
        self.stats["deaths"] += int(dead.sum())
        self._keep(~dead)
        return [t for t, g in zip(built, gone_l, strict=True) if not g]

    def _keep(self, mask: B) -> None:
        self._ekf.keep(mask)
        for name in ("_ids", "_status", "_hits", "_misses", "_age", "_last_hit", "_exist",
                     "_logp", "_label", "_motion_label", "_size", "_hit"):
            setattr(self, name, getattr(self, name)[mask])
        self._sources = [s for s, k in zip(self._sources, mask.tolist(), strict=True) if k]

    @staticmethod
    def _deleted_copy(track: Track) -> Track:
        return Track(track.track_id, track.object, TrackStatus.DELETED, track.age, track.hits,
                     track.misses)

    def _build_outputs(self, rows: I64, stamp: int, deleted: B | None = None) -> list[Track]:
        """Core ``Track`` objects for ``rows`` (``deleted``: ``(len(rows),)`` bool, those
        reported with status DELETED; None: none).

        Built without re-running the core types' ``__post_init__``: through the validating
        constructors 100 tracks cost ~3 ms per frame, most of the 5 ms budget. The values
        satisfy the invariants by construction (finite filtered states: rows that are not
        are deleted first; read-only float64 arrays of the right shapes; enum members;
        plain floats and ints; a read-only ``class_probs`` mapping), a unit test checks that
        the validating constructors accept every output and give equal objects, and the
        field sets are checked at import (:data:`_CHECKED_FIELDS`), so a change of a core
        type fails loudly.
        """
        if rows.size == 0:
            return []
        out_m, out_p = to_output(self._ekf.mean[rows], self._ekf.cov[rows],
                                 self._ekf.is_ctrv[rows])
        # read-only parents make every per-track slice a read-only view, as the core
        # types' own constructors would
        centers = out_m[:, :3].copy()
        vel = np.zeros((rows.size, 3))
        vel[:, :2] = out_m[:, 4:]
        sizes = self._size[rows].copy()
        cov = np.ascontiguousarray(out_p)
        for arr in (centers, vel, sizes, cov):
            arr.setflags(write=False)
        yaws = wrap_angle(out_m[:, 3]).tolist()
        # the turn rate of CTRV rows (state entry 5); a CV row has none (its entry 5 is vy)
        ctrv = self._ekf.is_ctrv[rows].tolist()
        rates = [float(w) if c else None
                 for w, c in zip(self._ekf.mean[rows, 5].tolist(), ctrv, strict=True)]
        probs = np.exp(self._logp[rows]).tolist()
        exist = np.clip(self._exist[rows], 0.0, 1.0).tolist()
        status = [_STATUS[i] for i in self._status[rows].tolist()]
        if deleted is not None and deleted.any():
            status = [TrackStatus.DELETED if d else st
                      for st, d in zip(status, deleted.tolist(), strict=True)]
        labels = [_ALL_CLASSES[i] for i in self._label[rows].tolist()]
        sources = [self._sources[r] for r in rows.tolist()]
        frame = self._frame or "base_link"
        names = [c.value for c in KNOWN_CLASSES]
        new, tracks = object.__new__, []
        # iterating an array yields its row views (faster than indexing in the loop)
        for (center, size, yaw, vel_k, cov_k, label, prob, e, src, rate, tid, st, age, hit,
             miss) in zip(list(centers), list(sizes), yaws, list(vel), list(cov), labels,
                          probs, exist, sources, rates, self._ids[rows].tolist(), status,
                          self._age[rows].tolist(), self._hits[rows].tolist(),
                          self._misses[rows].tolist(), strict=True):
            box = new(Box3D)
            box.__dict__.update({"center": center, "size": size, "yaw": yaw,
                                 "frame_id": frame})
            obj = new(DetectedObject)
            obj.__dict__.update({
                "box": box, "label": label, "score": e, "stamp_ns": stamp,
                # (every row of prob has one entry per name: no strict check needed)
                "class_probs": MappingProxyType(dict(zip(names, prob))),  # noqa: B905
                "velocity": vel_k, "covariance": cov_k, "existence_prob": e,
                "sources": src, "yaw_rate": rate})
            track = new(Track)
            track.__dict__.update({"track_id": tid, "object": obj, "status": st, "age": age,
                                   "hits": hit, "misses": miss})
            tracks.append(track)
        return tracks


#: the field names ``_build_outputs`` fills, per core type (checked against the types below)
_CHECKED_FIELDS = {
    Box3D: ("center", "size", "yaw", "frame_id"),
    DetectedObject: ("box", "label", "score", "stamp_ns", "class_probs", "velocity",
                     "covariance", "existence_prob", "sources", "yaw_rate"),
    Track: ("track_id", "object", "status", "age", "hits", "misses"),
}
for _cls, _names in _CHECKED_FIELDS.items():
    if (tuple(f.name for f in fields(_cls)) != _names
            or "__slots__" in vars(_cls)):  # pragma: no cover - guards core edits
        raise ImportError(f"tracker output assembly is out of date with {_cls.__name__} "
                          f"fields {[f.name for f in fields(_cls)]}")


__all__ = [
    "KNOWN_CLASSES",
    "STAT_KEYS",
    "MultiObjectTracker",
    "TrackerConfig",
    "default_motion",
]
