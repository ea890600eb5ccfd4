"""Simulated automotive radar: sparse detections with Doppler and RCS from ray hits.

Frames: the radar frame is REP 103 (x forward / boresight, y left, z up). Azimuth is
``atan2(y, x)`` (positive to the left), elevation ``asin(z / r)``; the field of view is
``|azimuth| <= azimuth_fov_deg / 2`` and ``|elevation| <= elevation_fov_deg / 2``.

Model, per scan (:meth:`RadarSim.scan`):

1. **Ray fan.** A regular grid of rays (``azimuth_step_deg`` x ``elevation_step_deg``) over
   the field of view is cast up to ``max_range_m`` (the ego's body is ignored). Each ray
   stands for the solid angle ``dOmega`` of its grid cell.
2. **Scattering.** A hit at range ``r`` with incidence angle ``theta`` (between the ray and
   the surface normal) contributes ``sigma = rho * r^2 dOmega * cos(theta)`` square metres,
   where ``rho = 10^(rcs_dbsm_per_m2 / 10)`` of the hit material
   (:data:`~mm_perception.sim.spec.MATERIALS`) and ``r^2 dOmega`` is the area the ray's
   beamlet covers seen from the radar: a surface facing the radar returns its density
   times its projected area, a grazing one (the road) almost nothing.
3. **Objects.** Hits are grouped per actor, and static hits per ``static_cell_m`` square of
   the world ``xy`` grid (walls, kerbs, parked props, road). A group's RCS is the sum of its
   hits' ``sigma`` plus the class offset of its actor (``class_rcs_offset_db``: people and
   cyclists reflect more than their cloth / skin area suggests).
4. **Detection.** A group weaker than ``min_rcs_dbsm`` stays below the clutter floor (the
   CFAR threshold that keeps road-surface returns out of real detection lists) and is never
   reported; otherwise it is detected with probability
   ``Pd = 1 / (1 + exp(-snr / pd_slope_db))``, ``snr = rcs_dbsm - pd50_rcs_dbsm -
   40 log10(r_min / max_range_m)`` (radar equation: received power ~ RCS / r^4; a target of
   ``pd50_rcs_dbsm`` is seen half the time at ``max_range_m``), ``r_min`` its nearest hit.
5. **Detections.** A detected group yields ``min(hits, max_points_per_object,
   1 + hits // hits_per_point)`` detections at distinct hit points drawn at random, each
   with RCS ``group_rcs - 10 log10(k) + N(0, rcs_noise_db)`` (the group's power shared by
   its ``k`` scattering centres).
6. **Measurement.** Doppler is the analytic radial velocity of the hit point relative to
   the radar, ``(v_target(p) - v_radar) . los`` (positive = moving away; ``v_target`` from
   :meth:`ActorState.point_velocity`, zero for static geometry) plus
   ``N(0, velocity_noise_mps)``; range gets ``N(0, range_noise_m)`` and azimuth
   ``N(0, azimuth_noise_deg)`` (clipped to the field of view: a radar only reports inside
   it); elevation is reported without noise.
7. **Clutter.** ``Poisson(false_alarms_per_scan)`` false alarms, uniform in azimuth,
   elevation and range over the field of view, Doppler uniform in
   ``+-false_alarm_max_speed_mps``, RCS ``N(false_alarm_rcs_dbsm, 3 dB)``.
8. **List length.** At most ``max_detections`` are reported: the strongest (RCS) ones,
   in their original order.

All randomness comes from the caller's ``rng`` in a fixed order, so equal inputs give
byte-identical outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.sensor_models import RadarModel
from mm_perception.core.types import ObjectClass
from mm_perception.sim.spec import ActorState
from mm_perception.sim.world import STATIC_ID, MujocoWorld

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_DEFAULT_CLASS_OFFSETS: Mapping[ObjectClass, float] = MappingProxyType({
    ObjectClass.PEDESTRIAN: 5.0, ObjectClass.CYCLIST: 3.0})
#: offset making static cell keys negative and distinct from actor ids (>= 0)
_CELL_BIAS = 1 << 20


@dataclass(frozen=True)
class RadarSimConfig:
    """Settings of a :class:`RadarSim` beyond the rig's :class:`RadarModel`
    (see the module docstring for the model).

    Attributes:
        azimuth_step_deg / elevation_step_deg: ray grid spacing, degrees.
        min_range_m: hits closer than this are ignored, m.
        static_cell_m: size of the world xy cells static hits are grouped in, m.
        pd50_rcs_dbsm: RCS detected with probability 0.5 at ``max_range_m``, dBsm.
        pd_slope_db: width of the logistic detection curve, dB.
        min_rcs_dbsm: clutter floor: weaker objects / cells are never detected, dBsm.
        max_points_per_object: most detections one object / cell yields.
        hits_per_point: one more detection per this many ray hits on the object.
        rcs_noise_db: 1-sigma noise of the reported RCS, dB.
        class_rcs_offset_db: RCS added per object class, dB (classes not listed: 0).
        false_alarm_rcs_dbsm: mean RCS of false alarms, dBsm.
        false_alarm_max_speed_mps: false-alarm Doppler is uniform in +- this, m/s.
    """

    azimuth_step_deg: float = 0.25
    elevation_step_deg: float = 1.0
    min_range_m: float = 0.5
    static_cell_m: float = 2.0
    pd50_rcs_dbsm: float = 10.0
    pd_slope_db: float = 2.0
    min_rcs_dbsm: float = -20.0
    max_points_per_object: int = 6
    hits_per_point: int = 8
    rcs_noise_db: float = 1.0
    class_rcs_offset_db: Mapping[ObjectClass, float] = field(
        default_factory=lambda: _DEFAULT_CLASS_OFFSETS)
    false_alarm_rcs_dbsm: float = -10.0
    false_alarm_max_speed_mps: float = 30.0

    def __post_init__(self) -> None:
        for name in ("azimuth_step_deg", "elevation_step_deg", "static_cell_m",
                     "pd_slope_db", "false_alarm_max_speed_mps"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int | float) \
                    or not math.isfinite(val) or val <= 0:
                raise ConfigError(f"RadarSimConfig.{name} must be > 0, got {val!r}")
        for name in ("min_range_m", "rcs_noise_db"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int | float) \
                    or not math.isfinite(val) or val < 0:
                raise ConfigError(f"RadarSimConfig.{name} must be >= 0, got {val!r}")
        for name in ("pd50_rcs_dbsm", "min_rcs_dbsm", "false_alarm_rcs_dbsm"):
            val = getattr(self, name)
            if not (isinstance(val, int | float) and math.isfinite(val)):
                raise ConfigError(f"RadarSimConfig.{name} must be a finite number, "
                                  f"got {val!r}")
        for name in ("max_points_per_object", "hits_per_point"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ConfigError(f"RadarSimConfig.{name} must be an integer >= 1, "
                                  f"got {val!r}")
        offsets: dict[ObjectClass, float] = {}
        for key, val in dict(self.class_rcs_offset_db).items():
            try:
                cls = ObjectClass(key)
            except ValueError:
                raise ConfigError(f"RadarSimConfig.class_rcs_offset_db: unknown class "
                                  f"{key!r}") from None
            if not (isinstance(val, int | float) and math.isfinite(val)):
                raise ConfigError(f"RadarSimConfig.class_rcs_offset_db[{cls.value}] must be "
                                  f"a finite number, got {val!r}")
            offsets[cls] = float(val)
        object.__setattr__(self, "class_rcs_offset_db", MappingProxyType(offsets))


@dataclass(frozen=True)
class RadarReturns:
    """One radar scan's detection list.

    Attributes:
        xyz: ``(N, 3) float32`` detection positions in the radar frame (noisy), m.
        range: ``(N,) float32`` measured range, m.
        azimuth: ``(N,) float32`` measured azimuth, rad (positive left).
        elevation: ``(N,) float32`` elevation, rad (positive up).
        doppler: ``(N,) float32`` radial velocity relative to the radar, m/s, positive =
            moving away.
        rcs: ``(N,) float32`` radar cross-section, dBsm.
        actor_id: ``(N,) int32`` actor the detection comes from; -1 static or false alarm.
        false_alarm: ``(N,) bool`` clutter (no real target).
    """

    xyz: F32
    range: F32
    azimuth: F32
    elevation: F32
    doppler: F32
    rcs: F32
    actor_id: npt.NDArray[np.int32]
    false_alarm: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.range.shape[0])


class RadarSim:
    """A radar of the rig in a :class:`MujocoWorld` (see the module docstring).

    Args:
        world: the world to cast in.
        model: the rig's field of view, range, noise, clutter and list length.
        T_base_radar: pose of the radar frame in ``base_link`` (kept for the caller:
            ``T_world_radar = T_world_base @ sim.T_base_radar``).
        config: ray grid, grouping, detection and RCS settings.
    """

    def __init__(self, world: MujocoWorld, model: RadarModel, T_base_radar: SE3,
                 config: RadarSimConfig | None = None) -> None:
        self.world = world
        self.model = model
        self.T_base_radar = T_base_radar
        self.config = config if config is not None else RadarSimConfig()
        cfg = self.config
        half_az = math.radians(model.azimuth_fov_deg) / 2
        half_el = math.radians(model.elevation_fov_deg) / 2
        n_az = max(2, math.ceil(model.azimuth_fov_deg / cfg.azimuth_step_deg) + 1)
        n_el = max(1, math.ceil(model.elevation_fov_deg / cfg.elevation_step_deg) + 1)
        az = np.linspace(-half_az, half_az, n_az)
        el = np.linspace(-half_el, half_el, n_el) if n_el > 1 else np.zeros(1)
        d_az = 2 * half_az / (n_az - 1)
        d_el = 2 * half_el / (n_el - 1) if n_el > 1 else 2 * half_el
        aa, ee = np.meshgrid(az, el, indexing="ij")
        #: (n, 3) unit ray directions in the radar frame
        self.directions = np.stack([np.cos(ee) * np.cos(aa), np.cos(ee) * np.sin(aa),
                                    np.sin(ee)], axis=-1).reshape(-1, 3)
        #: (n,) solid angle each ray stands for, sr
        self.ray_solid_angle = (d_az * d_el * np.cos(ee)).reshape(-1)
        self._half_az = half_az
        self._half_el = half_el
        self._rho = 10.0 ** (world.geom_rcs_dbsm_per_m2 / 10.0)

    def _actor_offsets_db(self, actor_ids: npt.NDArray[np.int64]) -> F64:
        table = self.config.class_rcs_offset_db
        return np.array([table.get(self.world.actor_class[int(a)], 0.0) if a >= 0 else 0.0
                         for a in actor_ids], dtype=np.float64)

    def scan(self, T_world_radar: SE3, radar_velocity_world: npt.ArrayLike,
             actor_states: Mapping[int, ActorState],
             rng: np.random.Generator) -> RadarReturns:
        """One scan from the radar pose ``T_world_radar``.

        Args:
            T_world_radar: radar pose in the world.
            radar_velocity_world: ``(3,)`` velocity of the radar itself (ego velocity plus
                the rotation's contribution at the mount point), world frame, m/s.
            actor_states: actor id -> current state; must hold every actor that is hit
                (its motion gives the Doppler).
            rng: noise source.

        Returns:
            :class:`RadarReturns` (see the module docstring for the model).

        Raises:
            ValueError: ``radar_velocity_world`` is not 3 finite numbers, or an actor that
                is hit has no state.
        """
        model, cfg = self.model, self.config
        v_radar = np.asarray(radar_velocity_world, dtype=np.float64)
        if v_radar.shape != (3,) or not np.all(np.isfinite(v_radar)):
            raise ValueError(f"radar_velocity_world must be 3 finite numbers, "
                             f"got {radar_velocity_world!r}")
        origin = T_world_radar.translation
        dirs_world = self.directions @ T_world_radar.rotation.T
        geom, dist, normal = self.world.cast_rays(origin, dirs_world, model.max_range_m)
        hit = np.flatnonzero((geom >= 0) & (dist >= cfg.min_range_m))
        geom_h = geom[hit]
        dist_h = dist[hit]
        los = dirs_world[hit]
        p_world = origin + los * dist_h[:, None]
        cos_inc = np.abs(np.einsum("ij,ij->i", normal[hit], los))
        sigma = self._rho[geom_h] * dist_h ** 2 * self.ray_solid_angle[hit] * cos_inc
        actor = self.world.geom_actor[geom_h].astype(np.int64)

        # group per actor, static hits per world xy cell (negative keys)
        cell = np.floor(p_world[:, :2] / cfg.static_cell_m).astype(np.int64) + _CELL_BIAS
        static_key = -1 - (cell[:, 0] * (2 * _CELL_BIAS) + cell[:, 1])
        key = np.where(actor == STATIC_ID, static_key, actor)
        groups, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        n_groups = groups.shape[0]
        group_actor = np.where(groups >= 0, groups, STATIC_ID)
        with np.errstate(divide="ignore"):
            group_rcs = 10.0 * np.log10(np.bincount(inv, sigma, minlength=n_groups)) \
                + self._actor_offsets_db(group_actor)
        r_min = np.full(n_groups, np.inf)
        np.minimum.at(r_min, inv, dist_h)
        with np.errstate(divide="ignore", over="ignore"):
            snr = group_rcs - cfg.pd50_rcs_dbsm - 40.0 * np.log10(r_min / model.max_range_m)
            p_detect = 1.0 / (1.0 + np.exp(-snr / cfg.pd_slope_db))
        p_detect[group_rcs < cfg.min_rcs_dbsm] = 0.0
        detected = rng.random(n_groups) < p_detect
        k_points = np.minimum(np.minimum(counts, cfg.max_points_per_object),
                              1 + counts // cfg.hits_per_point)

        # k distinct random hits per detected group: rank the hits of each group randomly
        order = np.lexsort((rng.random(hit.size), inv))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        rank = np.empty(hit.size, dtype=np.int64)
        rank[order] = np.arange(hit.size) - starts[inv[order]]
        chosen = np.flatnonzero(detected[inv] & (rank < k_points[inv]))
        chosen = chosen[np.argsort(inv[chosen], kind="stable")]  # grouped, deterministic

        g = inv[chosen]
        p = p_world[chosen]
        los_c = los[chosen]
        act = actor[chosen]
        v_target = np.zeros((chosen.size, 3))
        for aid in np.unique(act[act >= 0]):
            state = actor_states.get(int(aid))
            if state is None:
                raise ValueError(f"radar scan: actor {int(aid)} is hit but has no state in "
                                 f"actor_states (got {sorted(actor_states)})")
            sel = act == aid
            v_target[sel] = state.point_velocity(p[sel])
        doppler = np.einsum("ij,ij->i", v_target - v_radar, los_c) \
            + rng.normal(0.0, 1.0, chosen.size) * model.velocity_noise_mps
        with np.errstate(divide="ignore"):
            rcs = group_rcs[g] - 10.0 * np.log10(k_points[g]) \
                + rng.normal(0.0, 1.0, chosen.size) * cfg.rcs_noise_db

        d_radar = los_c @ T_world_radar.rotation  # world -> radar frame
        az = np.arctan2(d_radar[:, 1], d_radar[:, 0])
        el = np.arcsin(np.clip(d_radar[:, 2], -1.0, 1.0))
        az = np.clip(az + rng.normal(0.0, 1.0, chosen.size)
                     * math.radians(model.azimuth_noise_deg), -self._half_az, self._half_az)
        rng_m = np.clip(dist_h[chosen] + rng.normal(0.0, 1.0, chosen.size)
                        * model.range_noise_m, cfg.min_range_m, model.max_range_m)

        # clutter
        n_fa = int(rng.poisson(model.false_alarms_per_scan))
        fa_az = rng.uniform(-self._half_az, self._half_az, n_fa)
        fa_el = rng.uniform(-self._half_el, self._half_el, n_fa)
        fa_r = rng.uniform(cfg.min_range_m, model.max_range_m, n_fa)
        fa_v = rng.uniform(-cfg.false_alarm_max_speed_mps, cfg.false_alarm_max_speed_mps,
                           n_fa)
        fa_rcs = cfg.false_alarm_rcs_dbsm + 3.0 * rng.normal(0.0, 1.0, n_fa)

        all_az = np.concatenate([az, fa_az])
        all_el = np.concatenate([el, fa_el])
        all_r = np.concatenate([rng_m, fa_r])
        all_v = np.concatenate([doppler, fa_v])
        all_rcs = np.concatenate([rcs, fa_rcs])
        all_actor = np.concatenate([act, np.full(n_fa, STATIC_ID)]).astype(np.int32)
        all_fa = np.concatenate([np.zeros(chosen.size, bool), np.ones(n_fa, bool)])

        if all_r.size > model.max_detections:
            strongest = np.argsort(-all_rcs, kind="stable")[:model.max_detections]
            keep = np.sort(strongest)
            all_az, all_el, all_r, all_v, all_rcs, all_actor, all_fa = (
                a[keep] for a in (all_az, all_el, all_r, all_v, all_rcs, all_actor, all_fa))
        ce = np.cos(all_el)
        xyz = np.stack([all_r * ce * np.cos(all_az), all_r * ce * np.sin(all_az),
                        all_r * np.sin(all_el)], axis=1)
        return RadarReturns(
            xyz=xyz.astype(np.float32).reshape(-1, 3),
            range=all_r.astype(np.float32),
            azimuth=all_az.astype(np.float32),
            elevation=all_el.astype(np.float32),
            doppler=all_v.astype(np.float32),
            rcs=all_rcs.astype(np.float32),
            actor_id=all_actor,
            false_alarm=all_fa,
        )


__all__ = ["RadarReturns", "RadarSim", "RadarSimConfig"]
