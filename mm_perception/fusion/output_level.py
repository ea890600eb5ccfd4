"""Output-level (late) fusion: per-modality object lists -> one fused object list.

Each sensor (or modality) runs its own detector; this module associates their
:class:`~mm_perception.core.types.DetectedObject` lists and merges the matches.

Algorithm (:meth:`OutputLevelFusion.fuse`):

1. Inputs are validated per object: a non-finite box (centre, size or yaw) is dropped and
   counted (``stats["dropped_non_finite"]``); an object whose ``box.frame_id`` is not
   :attr:`OutputLevelConfig.frame_id` is dropped and counted
   (``stats["dropped_wrong_frame"]``) rather than raising, so that one misconfigured
   detector cannot take the whole fusion down (design rule 5). A missing covariance, or one
   that is non-finite / not positive definite on position, is replaced by the per-kind
   default of the config (counted in ``stats["default_covariance"]`` /
   ``stats["invalid_covariance"]``).
2. Lists are processed one after another, ordered by sensor kind (LiDAR, radar, camera,
   i.e. best position first) then by name, so the result does not depend on the
   mapping's order. The first list seeds the fused set; each later list is associated with
   the fused set so far: candidate pairs within ``max_distance_m`` (BEV), squared BEV
   Mahalanobis costs on ``(x, y)`` with ``S = P_fused + R_det``, gated Hungarian
   assignment (:mod:`mm_perception.tracking.association`). Unmatched objects of the list
   become new fused objects, except **fragments**: an unmatched vehicle (or unknown)
   detection whose BEV centre lies inside a fused object's box grown by
   ``fragment_margin_m`` is a piece of that object, not another one (counted in
   ``stats["absorbed_fragments"]``; its list counts as having seen the object). A bus or
   truck beside the road gives the radar several clusters along its side, and one-to-one
   assignment matches only one of them; the others, sized as cars and centred on the
   side face, became objects reaching half a car into the next lane, where the safety
   filter stopped the ego for them. Pedestrians and cyclists are never absorbed: one
   standing against a vehicle is a separate road user.
3. A match is merged:

   * position ``x, y, z`` in information form: ``P = (P1^-1 + P2^-1)^-1``,
     ``x = P (P1^-1 x1 + P2^-1 x2)`` (the two estimates treated as independent);
   * yaw by inverse-variance weighting of the difference taken modulo pi,
     ``yaw = wrap(y1 + w2 / (w1 + w2) * d)`` with ``d = y2 - y1`` moved into
     ``[-pi/2, pi/2)``, variance ``1 / (w1 + w2)``: a box heading (LiDAR rectangle, camera)
     is an axis without a front, so a radar heading along the velocity and a camera axis
     pointing the other way are the same heading, not two headings to average into a
     perpendicular one; the front is resolved downstream from motion (the tracker);
   * size from the source kind ranked best in ``size_priority`` (LiDAR first); on a tie
     the first one is kept;
   * class probabilities from the kind ranked best in ``class_priority`` (camera first);
     between sources of the same rank the product of the probabilities, normalised
     (a class one source does not list counts as ``class_prob_floor``). Objects with empty
     ``class_probs`` carry no class information;
   * velocity (and its ``vx, vy`` covariance) from the kind ranked best in
     ``velocity_priority`` (radar first; the radar detector resolves Doppler per object
     upstream, its ``velocity`` is used as a measurement); two of the same rank are merged
     in information form on ``vx, vy`` (``vz`` averaged);
   * ``score = 1 - prod(1 - score_i)`` and ``existence_prob = 1 - prod(1 - score_i *
     existence_prob_i)``, both multiplied by ``single_sensor_existence_factor`` when only
     one input list contributed although another one covered the object's position (see
     ``coverage`` of :meth:`OutputLevelFusion.fuse`): an object one sensor alone reports
     where another could have confirmed it (a radar ghost, a camera false positive) ranks
     below the confirmed ones;
   * ``sources``: the input names that contributed, then the detections' own ``sources``,
     in order of first appearance, without repeats.

The output covariance is block diagonal (position 3x3, yaw, velocity 2x2): cross terms of
the inputs are not propagated. Without any velocity the ``vx, vy`` block holds
``unknown_velocity_std_mps ** 2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.checks import is_real
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import points_in_boxes_bev
from mm_perception.core.types import Box3D, DetectedObject, ObjectClass, SensorKind
from mm_perception.tracking.association import (
    associate_pairs,
    candidate_pairs,
    mahalanobis_pair_costs,
)
from mm_perception.tracking.ekf import resolve_yaw_ambiguity

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: kinds an object list can come from (odometry produces no objects)
_OBJECT_KINDS = (SensorKind.LIDAR, SensorKind.RADAR, SensorKind.CAMERA)
#: order in which lists are fused (best position first)
_FUSE_ORDER = {SensorKind.LIDAR: 0, SensorKind.RADAR: 1, SensorKind.CAMERA: 2}
#: rank of a kind missing from a priority tuple, or of "no information"
_NO_RANK = 1_000

#: which ``(N, 3)`` float64 positions (fusion frame, metres) a sensor could have seen
Coverage = Callable[[F64], npt.NDArray[np.bool_]]


#: classes never absorbed as a fragment of another object (module notes)
_NEVER_FRAGMENT = frozenset({ObjectClass.PEDESTRIAN, ObjectClass.CYCLIST})


def _wrap(angle: F64) -> F64:
    return np.asarray((angle + np.pi) % (2.0 * np.pi) - np.pi, dtype=np.float64)


@dataclass(frozen=True)
class SourceNoise:
    """Default 1-sigma measurement noise of one sensor kind, used when a detection has
    no (or an invalid) covariance.

    Attributes:
        position_std_m: ``(x, y, z)`` standard deviations in ``base_link``, metres, > 0.
        yaw_std_rad: heading standard deviation, radians, > 0.
        velocity_std_mps: standard deviation of ``vx`` and ``vy``, m/s, > 0.
    """

    position_std_m: tuple[float, float, float]
    yaw_std_rad: float
    velocity_std_mps: float

    def __post_init__(self) -> None:
        pos = tuple(self.position_std_m)
        if len(pos) != 3 or not all(is_real(v) and math.isfinite(v) and v > 0 for v in pos):
            raise ConfigError(f"SourceNoise.position_std_m must be 3 finite numbers > 0 "
                              f"(metres), got {self.position_std_m!r}")
        object.__setattr__(self, "position_std_m", tuple(float(v) for v in pos))
        for name in ("yaw_std_rad", "velocity_std_mps"):
            value = getattr(self, name)
            if not is_real(value) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"SourceNoise.{name} must be a finite number > 0, "
                                  f"got {value!r}")
            object.__setattr__(self, name, float(value))


def _default_noise() -> Mapping[SensorKind, SourceNoise]:
    return MappingProxyType({
        # LiDAR: good position, heading and size; no velocity from one sweep
        SensorKind.LIDAR: SourceNoise((0.15, 0.15, 0.2), 0.1, 5.0),
        # radar: coarse azimuth (lateral), poor heading, good (Doppler) velocity
        SensorKind.RADAR: SourceNoise((0.5, 1.0, 1.5), 1.5, 0.3),
        # camera: depth (mostly x in base_link) is the weak axis
        SensorKind.CAMERA: SourceNoise((1.5, 0.5, 0.5), 0.3, 5.0),
    })


def _check_priority(name: str, value: Any) -> tuple[SensorKind, ...]:
    try:
        kinds = tuple(SensorKind(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"OutputLevelConfig.{name} must be a sequence of sensor kinds "
                          f"{[k.value for k in _OBJECT_KINDS]}, got {value!r}") from exc
    if (isinstance(value, str) or len(set(kinds)) != len(kinds)
            or any(k not in _OBJECT_KINDS for k in kinds)):
        raise ConfigError(f"OutputLevelConfig.{name} must list distinct kinds among "
                          f"{[k.value for k in _OBJECT_KINDS]}, got {value!r}")
    return kinds


@dataclass(frozen=True)
class OutputLevelConfig:
    """Configuration of :class:`OutputLevelFusion`.

    Attributes:
        gate: largest squared BEV Mahalanobis distance of a matched pair (chi-square, 2
            degrees of freedom; 9.21 is the 99 % quantile). Finite, > 0.
        max_distance_m: pairs further apart than this (BEV, metres) are never matched,
            whatever their covariances. Finite, > 0.
        frame_id: the frame every input box must be in (others are dropped, counted).
        single_sensor_existence_factor: ``existence_prob`` of an object only one input list
            saw is multiplied by this, in (0, 1].
        class_priority: sensor kinds whose class probabilities win, best first (kinds not
            listed never set the class unless nothing better is present).
        velocity_priority: sensor kinds whose velocity wins, best first.
        size_priority: sensor kinds whose box size wins, best first.
        noise: sensor kind -> default :class:`SourceNoise` (all of LiDAR, radar, camera).
        sensor_kinds: input name -> sensor kind. A name not listed resolves to the kind it
            equals or starts with followed by ``_`` or ``/`` (``"lidar"``, ``"radar_front"``,
            ``"camera/left"``); any other name is a ``ValueError`` at :meth:`fuse`.
        class_prob_floor: probability given to a class a source does not list when class
            probabilities of equal rank are multiplied, in (0, 1).
        unknown_velocity_std_mps: ``vx, vy`` std written into the covariance of an object
            without any velocity, m/s, > 0.
        fragment_margin_m: an unmatched vehicle detection whose BEV centre is within this
            distance of a fused object's box (or inside it) is a fragment of that object
            and is absorbed (module notes), metres, >= 0; None: never absorb. 0.5 m: radar
            clusters on a vehicle's side face are centred on the face, and a face seen at a
            grazing angle is placed up to a few decimetres off.

    Raises:
        ConfigError: a value of the wrong type or out of range; the message names it.
    """

    gate: float = 9.21
    max_distance_m: float = 5.0
    frame_id: str = "base_link"
    single_sensor_existence_factor: float = 0.5
    class_priority: tuple[SensorKind, ...] = (SensorKind.CAMERA, SensorKind.LIDAR,
                                              SensorKind.RADAR)
    velocity_priority: tuple[SensorKind, ...] = (SensorKind.RADAR, SensorKind.LIDAR,
                                                 SensorKind.CAMERA)
    size_priority: tuple[SensorKind, ...] = (SensorKind.LIDAR, SensorKind.CAMERA,
                                             SensorKind.RADAR)
    noise: Mapping[SensorKind, SourceNoise] = field(default_factory=_default_noise)
    sensor_kinds: Mapping[str, SensorKind] = field(default_factory=dict)
    class_prob_floor: float = 1e-3
    unknown_velocity_std_mps: float = 10.0
    fragment_margin_m: float | None = 0.5

    def __post_init__(self) -> None:
        margin = self.fragment_margin_m
        if margin is not None:
            if not is_real(margin) or not math.isfinite(margin) or margin < 0:
                raise ConfigError(f"OutputLevelConfig.fragment_margin_m must be a finite "
                                  f"number >= 0 or None, got {margin!r}")
            object.__setattr__(self, "fragment_margin_m", float(margin))
        for name in ("gate", "max_distance_m", "unknown_velocity_std_mps"):
            value = getattr(self, name)
            if not is_real(value) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"OutputLevelConfig.{name} must be a finite number > 0, "
                                  f"got {value!r}")
            object.__setattr__(self, name, float(value))
        fac = self.single_sensor_existence_factor
        if not is_real(fac) or not 0.0 < fac <= 1.0:
            raise ConfigError(f"OutputLevelConfig.single_sensor_existence_factor must be a "
                              f"number in (0, 1], got {fac!r}")
        object.__setattr__(self, "single_sensor_existence_factor", float(fac))
        floor = self.class_prob_floor
        if not is_real(floor) or not 0.0 < floor < 1.0:
            raise ConfigError(f"OutputLevelConfig.class_prob_floor must be a number in "
                              f"(0, 1), got {floor!r}")
        object.__setattr__(self, "class_prob_floor", float(floor))
        if not isinstance(self.frame_id, str) or not self.frame_id:
            raise ConfigError(f"OutputLevelConfig.frame_id must be a non-empty string, "
                              f"got {self.frame_id!r}")
        for name in ("class_priority", "velocity_priority", "size_priority"):
            object.__setattr__(self, name, _check_priority(name, getattr(self, name)))
        if not isinstance(self.noise, Mapping):
            raise ConfigError(f"OutputLevelConfig.noise must be a mapping kind -> "
                              f"SourceNoise, got {self.noise!r}")
        noise: dict[SensorKind, SourceNoise] = {}
        for key, val in self.noise.items():
            try:
                kind = SensorKind(key)
            except ValueError as exc:
                raise ConfigError(f"OutputLevelConfig.noise has unknown kind {key!r}") from exc
            if not isinstance(val, SourceNoise):
                raise ConfigError(f"OutputLevelConfig.noise[{key!r}] must be a SourceNoise, "
                                  f"got {val!r}")
            noise[kind] = val
        missing = [k.value for k in _OBJECT_KINDS if k not in noise]
        if missing:
            raise ConfigError(f"OutputLevelConfig.noise lacks kind(s) {missing}")
        object.__setattr__(self, "noise", MappingProxyType(noise))
        if not isinstance(self.sensor_kinds, Mapping):
            raise ConfigError(f"OutputLevelConfig.sensor_kinds must be a mapping name -> "
                              f"kind, got {self.sensor_kinds!r}")
        kinds: dict[str, SensorKind] = {}
        for name, kind_name in self.sensor_kinds.items():
            try:
                sensor_kind = SensorKind(kind_name)
            except ValueError as exc:
                raise ConfigError(f"OutputLevelConfig.sensor_kinds[{name!r}]: unknown kind "
                                  f"{kind_name!r}") from exc
            if sensor_kind not in _OBJECT_KINDS:
                raise ConfigError(f"OutputLevelConfig.sensor_kinds[{name!r}]: "
                                  f"{kind_name!r} produces no objects")
            kinds[str(name)] = sensor_kind
        object.__setattr__(self, "sensor_kinds", MappingProxyType(kinds))

    def kind_of(self, name: str) -> SensorKind:
        """Sensor kind of an input list name (see :attr:`sensor_kinds`).

        Raises:
            ValueError: the name neither is listed nor names a kind.
        """
        if name in self.sensor_kinds:
            return self.sensor_kinds[name]
        low = name.lower()
        for kind in _OBJECT_KINDS:
            if low == kind.value or low.startswith((kind.value + "_", kind.value + "/")):
                return kind
        raise ValueError(f"cannot tell the sensor kind of object list {name!r}: list it in "
                         f"OutputLevelConfig.sensor_kinds or name it after a kind "
                         f"{[k.value for k in _OBJECT_KINDS]}")


def _default_cov(noise: SourceNoise) -> F64:
    """``(6, 6)`` float64 covariance over (x, y, z, yaw, vx, vy) given to a detection of
    that kind without a (valid) one: the config's standard deviations, squared."""
    default = np.zeros((6, 6), dtype=np.float64)
    default[np.arange(3), np.arange(3)] = np.square(noise.position_std_m)
    default[3, 3] = noise.yaw_std_rad ** 2
    default[4, 4] = default[5, 5] = noise.velocity_std_mps ** 2
    return default


def _rank(priority: tuple[SensorKind, ...], kind: SensorKind) -> int:
    return priority.index(kind) if kind in priority else _NO_RANK - 1


@dataclass
class _Fused:
    """Column arrays of the fused set (N objects); Python lists only for dict/str data."""

    pos: F64          # (N, 3) x, y, z, base_link, metres
    pos_cov: F64      # (N, 3, 3)
    yaw: F64          # (N,) rad
    yaw_var: F64      # (N,) rad^2
    size: F64         # (N, 3) l, w, h, metres
    size_rank: I64    # (N,)
    vel: F64          # (N, 3) m/s (zeros when unknown)
    vel_cov: F64      # (N, 2, 2)
    vel_rank: I64     # (N,) _NO_RANK when unknown
    miss: F64         # (N,) prod(1 - score)
    miss_exist: F64   # (N,) prod(1 - score * existence_prob)
    contrib: I64      # (N,) bit i set: input list i (fusion order) contributed
    class_rank: I64   # (N,) _NO_RANK when no class probabilities
    class_probs: list[Mapping[str, float]]  # read-only (MappingProxyType)
    label: list[ObjectClass]
    sources: list[list[str]]

    def __len__(self) -> int:
        return int(self.pos.shape[0])


def _concat(a: _Fused, b: _Fused) -> _Fused:
    arrays = {name: np.concatenate([getattr(a, name), getattr(b, name)])
              for name in ("pos", "pos_cov", "yaw", "yaw_var", "size", "size_rank", "vel",
                           "vel_cov", "vel_rank", "miss", "miss_exist", "contrib",
                           "class_rank")}
    return _Fused(**arrays, class_probs=a.class_probs + b.class_probs,
                  label=a.label + b.label, sources=a.sources + b.sources)


#: adjugate of a 3x3 matrix flattened row-major: ``adj[k] = m[A0[k]] m[A1[k]] -
#: m[B0[k]] m[B1[k]]`` (the transposed cofactors)
_ADJ3 = np.array([[4, 8, 5, 7], [2, 7, 1, 8], [1, 5, 2, 4],
                  [5, 6, 3, 8], [0, 8, 2, 6], [2, 3, 0, 5],
                  [3, 7, 4, 6], [1, 6, 0, 7], [0, 4, 1, 3]], dtype=np.intp).T


def _inv_small(m: F64) -> F64:
    """Inverses of a stack of 2x2 or 3x3 matrices ``(K, d, d)``, closed form (adjugate
    over determinant).

    ``np.linalg.inv`` runs one LAPACK call per matrix, about 0.4 us each plus its fixed
    cost; the closed form is a handful of vectorised operations on ``(K, d*d)`` columns.
    A singular matrix gives inf / NaN entries (the callers only pass positive definite
    ones, checked on input).
    """
    k, d = m.shape[0], m.shape[1]
    flat = m.reshape(k, d * d)
    if d == 2:
        a, b, c, e = flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3]
        adj = np.stack([e, -b, -c, a], axis=1)
        det = a * e - b * c
    elif d == 3:
        adj = flat[:, _ADJ3[0]] * flat[:, _ADJ3[1]] - flat[:, _ADJ3[2]] * flat[:, _ADJ3[3]]
        det = (flat[:, :3] * adj[:, [0, 3, 6]]).sum(axis=1)
    else:  # pragma: no cover - only 2x2 and 3x3 blocks are merged
        raise ValueError(f"_inv_small handles 2x2 and 3x3 matrices, got {d}x{d}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return (adj / det[:, None]).reshape(k, d, d)


def _info_merge(x1: F64, p1: F64, x2: F64, p2: F64) -> tuple[F64, F64]:
    """Batched information-form fusion of ``(K, m)`` means with ``(K, m, m)`` covariances
    (``m`` = 2 or 3): ``P = (P1^-1 + P2^-1)^-1``, ``x = P (P1^-1 x1 + P2^-1 x2)``."""
    k = x1.shape[0]
    inv = _inv_small(np.concatenate([p1, p2]))  # one batched call instead of two
    i1, i2 = inv[:k], inv[k:]
    p = _inv_small(i1 + i2)
    p = 0.5 * (p + np.swapaxes(p, 1, 2))
    # (K, m, m) @ (K, m, 1) products: matmul is several times faster than einsum here
    info = i1 @ x1[:, :, None] + i2 @ x2[:, :, None]
    return (p @ info)[:, :, 0], p


class OutputLevelFusion:
    """Associates and merges per-sensor object lists (see the module docstring).

    Args:
        config: see :class:`OutputLevelConfig`.
    """

    def __init__(self, config: OutputLevelConfig | None = None) -> None:
        cfg = OutputLevelConfig() if config is None else config
        if not isinstance(cfg, OutputLevelConfig):
            raise TypeError(f"config must be an OutputLevelConfig, got {type(cfg).__name__}")
        self._cfg = cfg
        self._stats: dict[str, int] = {}

    @property
    def config(self) -> OutputLevelConfig:
        return self._cfg

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters of the last :meth:`fuse` call: ``input``, ``dropped_non_finite``,
        ``dropped_wrong_frame``, ``default_covariance``, ``invalid_covariance``,
        ``matched`` (pairs merged), ``dropped_non_finite_output`` (a merge that went
        numerically wrong; 0 in practice), ``output``."""
        return MappingProxyType(dict(self._stats))

    def fuse(self, lists: Mapping[str, Sequence[DetectedObject]], stamp_ns: int,
             coverage: Mapping[str, Coverage] | None = None) -> list[DetectedObject]:
        """Fuse per-sensor object lists into one list.

        Args:
            lists: input name (sensor or modality, see
                :attr:`OutputLevelConfig.sensor_kinds`) -> its detections, boxes in
                :attr:`OutputLevelConfig.frame_id`. Empty lists and an empty mapping are fine.
                A list that is present (even empty) is a sensor that looked.
            stamp_ns: stamp of the fused objects, int ns.
            coverage: input name -> a function telling, for ``(N, 3)`` float64 positions in
                :attr:`OutputLevelConfig.frame_id`, which ones that sensor could have seen
                (``(N,)`` bool: field of view and range). A list without one covers
                everything. An object only one list reported is penalised (score and
                existence times ``single_sensor_existence_factor``) only when another
                present list covered its position: a LiDAR object outside the radar's field
                of view is not unconfirmed.

        Returns:
            Fused objects (frame :attr:`OutputLevelConfig.frame_id`, stamp ``stamp_ns``),
            covariance ``(6, 6)`` over (x, y, z, yaw, vx, vy) always set.

        Raises:
            ValueError: an input name whose sensor kind cannot be told (a configuration
                error, not a data error), or a negative ``stamp_ns``.
            TypeError: ``stamp_ns`` is not an int.
        """
        if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, int | np.integer):
            raise TypeError(f"stamp_ns must be int nanoseconds, got {type(stamp_ns).__name__}")
        if stamp_ns < 0:
            raise ValueError(f"stamp_ns must be >= 0 ns, got {stamp_ns}")
        stamp_ns = int(stamp_ns)
        cfg = self._cfg
        stats = dict.fromkeys(("input", "dropped_non_finite", "dropped_wrong_frame",
                               "default_covariance", "invalid_covariance", "matched",
                               "absorbed_fragments", "dropped_non_finite_output",
                               "output"), 0)
        self._stats = stats
        named = sorted((_FUSE_ORDER[cfg.kind_of(name)], name) for name in lists)
        fused: _Fused | None = None
        for bit, (_, name) in enumerate(named):
            batch = self._columns(name, cfg.kind_of(name), lists[name], stats, bit)
            if batch is None:
                continue
            if fused is None or len(fused) == 0:
                fused = batch
                continue
            fused = self._merge(fused, batch, stats)
        if fused is None:
            out: list[DetectedObject] = []
        else:
            covered = np.zeros(len(fused), dtype=np.int64)
            for bit, (_, name) in enumerate(named):
                fn = None if coverage is None else coverage.get(name)
                seen = np.ones(len(fused), dtype=bool) if fn is None else \
                    np.asarray(fn(fused.pos), dtype=bool).reshape(len(fused))
                covered |= np.where(seen, np.int64(1 << bit), np.int64(0))
            out = self._objects(fused, stamp_ns, covered)
        stats["output"] = len(out)
        return out

    # ------------------------------------------------------------------ internals

    def _columns(self, name: str, kind: SensorKind, objs: Sequence[DetectedObject],
                 stats: dict[str, int], bit: int) -> _Fused | None:
        """Validated column arrays of one input list (None when nothing is left)."""
        cfg = self._cfg
        stats["input"] += len(objs)
        if not objs:
            return None
        n_all = len(objs)
        # One pass over the objects reads every field (then ``zip(*...)`` transposes in C):
        # a list comprehension per field costs more than the arrays built from them.
        boxes, covs, vels, scores, exists, probs, labels, srcs = zip(
            *[(o.box, o.covariance, o.velocity, o.score, o.existence_prob, o.class_probs,
               o.label, o.sources) for o in objs], strict=True)
        centers, sizes, yaws, frames = zip(
            *[(b.center, b.size, b.yaw, b.frame_id) for b in boxes], strict=True)
        frame_ok = (np.ones(n_all, dtype=bool) if frames.count(cfg.frame_id) == n_all
                    else np.array([f == cfg.frame_id for f in frames], dtype=bool))
        # boxes are validated on construction, but an array can still be patched after
        # the fact: check again rather than trust. (np.concatenate of the rows is several
        # times faster than np.array of a list of arrays.)
        center = np.concatenate(centers).astype(np.float64).reshape(n_all, 3)
        size = np.concatenate(sizes).astype(np.float64).reshape(n_all, 3)
        yaw = np.array(yaws, dtype=np.float64)
        finite = (np.isfinite(center).all(axis=1) & np.isfinite(size).all(axis=1)
                  & (size > 0).all(axis=1) & np.isfinite(yaw))
        stats["dropped_non_finite"] += int((~finite).sum())
        stats["dropped_wrong_frame"] += int((finite & ~frame_ok).sum())
        good = finite & frame_ok
        n = n_all
        if not good.all():
            idx = np.flatnonzero(good)
            if idx.size == 0:
                return None
            keep = idx.tolist()
            covs, vels, scores, exists, probs, labels, srcs = (
                tuple(col[i] for i in keep)
                for col in (covs, vels, scores, exists, probs, labels, srcs))
            center, size, yaw = center[idx], size[idx], yaw[idx]
            n = len(keep)
        noise = cfg.noise[kind]
        cov = np.empty((n, 6, 6), dtype=np.float64)
        # (``tuple.count(None)`` would compare arrays with ``==``: test identity instead)
        cov_given = [c is not None for c in covs]
        n_cov = cov_given.count(True)
        stats["default_covariance"] += n - n_cov
        has_cov = np.array(cov_given, dtype=bool)
        if n_cov == n:
            cov[:] = np.concatenate(covs).reshape(n, 6, 6)
        elif n_cov:
            cov[has_cov] = np.concatenate([c for c in covs if c is not None]).reshape(-1, 6, 6)
        ok = has_cov
        if n_cov:
            c = cov[ok]
            good = np.isfinite(c).all(axis=(1, 2)) & (c[:, 3, 3] > 0)
            p = 0.5 * (c[:, :3, :3] + np.swapaxes(c[:, :3, :3], 1, 2))
            good[good] &= np.linalg.eigvalsh(p[good])[:, 0] > 0
            v = c[:, 4:6, 4:6]
            good[good] &= np.linalg.eigvalsh(v[good])[:, 0] > 0
            bad = np.flatnonzero(ok)[~good]
            stats["invalid_covariance"] += int(bad.size)
            ok[bad] = False
        if not ok.all():
            cov[~ok] = _default_cov(noise)
        vel_given = [v is not None for v in vels]
        n_vel = vel_given.count(True)
        has_vel = np.array(vel_given, dtype=bool)
        vel = np.zeros((n, 3), dtype=np.float64)
        if n_vel == n:
            vel[:] = np.concatenate(vels).reshape(n, 3)
        elif n_vel:
            vel[has_vel] = np.concatenate([v for v in vels if v is not None]).reshape(-1, 3)
        score = np.array(scores, dtype=np.float64)
        exist = np.array(exists, dtype=np.float64)
        class_rank = _rank(cfg.class_priority, kind)
        # The objects' own read-only mappings are kept (no copy): nothing here mutates
        # them, and a fused object whose classes come from one input shares that input's.
        class_probs: list[Mapping[str, float]] = [
            p if type(p) is MappingProxyType else MappingProxyType(dict(p)) for p in probs]
        return _Fused(
            pos=center, pos_cov=0.5 * (cov[:, :3, :3] + np.swapaxes(cov[:, :3, :3], 1, 2)),
            yaw=yaw, yaw_var=cov[:, 3, 3].copy(), size=size,
            size_rank=np.full(n, _rank(cfg.size_priority, kind), dtype=np.int64),
            vel=vel, vel_cov=cov[:, 4:6, 4:6].copy(),
            vel_rank=np.where(has_vel, _rank(cfg.velocity_priority, kind),
                              _NO_RANK).astype(np.int64),
            miss=1.0 - score, miss_exist=1.0 - score * exist,
            contrib=np.full(n, 1 << bit, dtype=np.int64),
            class_rank=np.array([class_rank if p else _NO_RANK for p in class_probs],
                                dtype=np.int64),
            class_probs=class_probs, label=list(labels),
            sources=[[name, *s] for s in srcs])

    def _merge(self, f: _Fused, d: _Fused, stats: dict[str, int]) -> _Fused:
        """Associate list ``d`` with the fused set ``f`` and merge; returns the new set."""
        cfg = self._cfg
        rows, cols = candidate_pairs(f.pos, d.pos, cfg.max_distance_m)
        cost = mahalanobis_pair_costs(f.pos[:, :2], f.pos_cov[:, :2, :2], d.pos[:, :2],
                                      d.pos_cov[:, :2, :2], rows, cols)
        matches, _, unmatched = associate_pairs(rows, cols, cost, len(f), len(d), cfg.gate)
        stats["matched"] += int(matches.shape[0])
        if matches.shape[0]:
            fi, di = matches[:, 0], matches[:, 1]
            f.pos[fi], f.pos_cov[fi] = _info_merge(f.pos[fi], f.pos_cov[fi],
                                                   d.pos[di], d.pos_cov[di])
            w1, w2 = 1.0 / f.yaw_var[fi], 1.0 / d.yaw_var[di]
            # headings are axes here (module notes): merge modulo pi
            d_yaw = resolve_yaw_ambiguity(d.yaw[di], f.yaw[fi])
            f.yaw[fi] = _wrap(f.yaw[fi] + w2 / (w1 + w2) * _wrap(d_yaw - f.yaw[fi]))
            f.yaw_var[fi] = 1.0 / (w1 + w2)
            better = d.size_rank[di] < f.size_rank[fi]
            f.size[fi[better]] = d.size[di[better]]
            f.size_rank[fi[better]] = d.size_rank[di[better]]
            self._merge_velocity(f, d, fi, di)
            f.miss_exist[fi] *= d.miss_exist[di]
            f.miss[fi] *= d.miss[di]
            f.contrib[fi] |= d.contrib[di]
            self._merge_classes(f, d, fi, di)
            f_src, d_src = f.sources, d.sources
            for a, b in zip(fi.tolist(), di.tolist(), strict=True):
                f_src[a].extend(d_src[b])
        unmatched = self._drop_fragments(f, d, unmatched, stats)
        if unmatched.size == 0:
            return f
        rest = _Fused(
            **{name: getattr(d, name)[unmatched]
               for name in ("pos", "pos_cov", "yaw", "yaw_var", "size", "size_rank", "vel",
                            "vel_cov", "vel_rank", "miss", "miss_exist", "contrib",
                            "class_rank")},
            class_probs=[d.class_probs[i] for i in unmatched],
            label=[d.label[i] for i in unmatched],
            sources=[d.sources[i] for i in unmatched])
        return _concat(f, rest)

    def _drop_fragments(self, f: _Fused, d: _Fused, unmatched: I64,
                        stats: dict[str, int]) -> I64:
        """``unmatched`` less the vehicle detections of ``d`` centred inside a box of ``f``
        grown by ``fragment_margin_m`` (module notes); the list of ``d`` is recorded as a
        contributor of the object each lies in."""
        margin = self._cfg.fragment_margin_m
        if margin is None or unmatched.size == 0 or len(f) == 0:
            return unmatched
        cand = unmatched[np.array([d.label[i] not in _NEVER_FRAGMENT for i in unmatched],
                                  dtype=bool)]
        if cand.size == 0:
            return unmatched
        # (candidates, fused objects)
        inside = points_in_boxes_bev(d.pos[cand, :2], f.pos[:, :2], f.yaw,
                                     f.size[:, :2] / 2 + margin).T
        hit = inside.any(axis=1)
        if not hit.any():
            return unmatched
        owner = np.argmax(inside[hit], axis=1)  # the first box containing it
        f.contrib[owner] |= d.contrib[cand[hit]]
        stats["absorbed_fragments"] += int(hit.sum())
        return np.setdiff1d(unmatched, cand[hit])

    @staticmethod
    def _merge_velocity(f: _Fused, d: _Fused, fi: I64, di: I64) -> None:
        rf, rd = f.vel_rank[fi], d.vel_rank[di]
        take = rd < rf
        f.vel[fi[take]] = d.vel[di[take]]
        f.vel_cov[fi[take]] = d.vel_cov[di[take]]
        f.vel_rank[fi[take]] = rd[take]
        both = (rd == rf) & (rd < _NO_RANK)
        if both.any():
            a, b = fi[both], di[both]
            vxy, pv = _info_merge(f.vel[a, :2], f.vel_cov[a], d.vel[b, :2], d.vel_cov[b])
            f.vel[a, :2] = vxy
            f.vel[a, 2] = 0.5 * (f.vel[a, 2] + d.vel[b, 2])
            f.vel_cov[a] = pv

    def _merge_classes(self, f: _Fused, d: _Fused, fi: I64, di: I64) -> None:
        """Class probabilities of the matched pairs ``(fi[k], di[k])`` (each ``fi`` once):
        a better-ranked source replaces them (vectorised), an equal-ranked one multiplies
        (per pair, rare: two lists of the same kind)."""
        rf, rd = f.class_rank[fi], d.class_rank[di]
        informative = rd < _NO_RANK
        take = informative & (rd < rf)
        if take.any():
            a_take, b_take = fi[take], di[take]
            f.class_rank[a_take] = rd[take]
            f_probs, d_probs, f_label, d_label = f.class_probs, d.class_probs, f.label, d.label
            for a, b in zip(a_take.tolist(), b_take.tolist(), strict=True):
                f_probs[a] = d_probs[b]  # read-only mappings: sharing is safe
                f_label[a] = d_label[b]
        same = informative & (rd == rf)
        for a, b in zip(fi[same].tolist(), di[same].tolist(), strict=True):
            self._multiply_classes(f, d, a, b)

    def _multiply_classes(self, f: _Fused, d: _Fused, a: int, b: int) -> None:
        """Same rank: independent evidence, product of the probabilities."""
        p, q = f.class_probs[a], d.class_probs[b]
        floor = self._cfg.class_prob_floor
        keys = list(dict.fromkeys([*p, *q]))
        prod = np.array([p.get(k, floor) * q.get(k, floor) for k in keys], dtype=np.float64)
        total = float(prod.sum())
        if not total > 0:
            return  # both all-zero: nothing to learn, keep the first
        prod /= total
        f.class_probs[a] = MappingProxyType(dict(zip(keys, prod.tolist(), strict=True)))
        best = keys[int(np.argmax(prod))]
        if best in ObjectClass._value2member_map_:
            f.label[a] = ObjectClass(best)

    def _objects(self, f: _Fused, stamp_ns: int, covered: I64) -> list[DetectedObject]:
        cfg = self._cfg
        n = len(f)
        cov = np.zeros((n, 6, 6), dtype=np.float64)
        cov[:, :3, :3] = f.pos_cov
        cov[:, 3, 3] = f.yaw_var
        has_vel = f.vel_rank < _NO_RANK
        cov[:, 4:6, 4:6] = np.where(has_vel[:, None, None], f.vel_cov,
                                    np.eye(2) * cfg.unknown_velocity_std_mps ** 2)
        # one contributor (a power of two) while another list covered the position
        single = (f.contrib & (f.contrib - 1)) == 0
        unconfirmed = single & ((covered & ~f.contrib) != 0)
        factor = np.where(unconfirmed, cfg.single_sensor_existence_factor, 1.0)
        exist = np.clip((1.0 - f.miss_exist) * factor, 0.0, 1.0)
        score = np.clip((1.0 - f.miss) * factor, 0.0, 1.0)
        # The values below are valid by construction (finite, checked ranges), so the
        # objects are assembled without re-running the dataclass validation, which costs
        # about 30 us per object (most of the fusion time at 100 objects); a row that
        # would fail it is dropped and counted instead.
        valid = (np.isfinite(f.pos).all(axis=1) & np.isfinite(f.size).all(axis=1)
                 & (f.size > 0).all(axis=1) & np.isfinite(f.yaw)
                 & np.isfinite(cov).all(axis=(1, 2))
                 & np.isfinite(score) & np.isfinite(exist))
        self._stats["dropped_non_finite_output"] = int((~valid).sum())
        pos, size, vel = _frozen(f.pos), _frozen(f.size), _frozen(f.vel)
        cov = _frozen(cov)
        frame = cfg.frame_id
        new = object.__new__
        # iterating a read-only array yields read-only row views (faster than indexing)
        rows = zip(list(pos), list(size), f.yaw.tolist(), list(vel), has_vel.tolist(),
                   list(cov), f.label, score.tolist(), exist.tolist(), f.class_probs,
                   f.sources, valid.tolist(), strict=True)
        out = []
        for p_i, s_i, yaw_i, v_i, hv_i, c_i, label, sc, ex, probs, src, ok in rows:
            if not ok:
                continue
            box = new(Box3D)
            # a frozen dataclass without slots keeps its fields in __dict__; filling it
            # directly is what object.__setattr__ per field would do, at a fraction of
            # the cost
            box.__dict__.update({"center": p_i, "size": s_i, "yaw": yaw_i, "frame_id": frame})
            obj = new(DetectedObject)
            obj.__dict__.update({
                "box": box, "label": label, "score": sc, "stamp_ns": stamp_ns,
                "class_probs": probs, "velocity": v_i if hv_i else None, "covariance": c_i,
                "existence_prob": ex, "sources": tuple(dict.fromkeys(src))})
            out.append(obj)
        return out


def _frozen(arr: F64) -> F64:
    """A read-only float64 copy (rows of it are read-only views, as the types expect)."""
    out = np.array(arr, dtype=np.float64)
    out.setflags(write=False)
    return out


__all__ = ["Coverage", "OutputLevelConfig", "OutputLevelFusion", "SourceNoise"]

