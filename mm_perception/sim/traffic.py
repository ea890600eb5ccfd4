"""Agent motion: behaviours plus a minimal reaction to what is ahead (numpy only, deterministic).

Every moving agent (lane following, turning, crossing) advances along its path by the
Intelligent Driver Model (IDM): it tracks its target speed and keeps a safe gap to the nearest
obstacle it must yield to. Two kinds of obstacle are seen:

1. **Footprints in the corridor**: the path ahead of the agent (``lookahead_min +
   lookahead_time * speed`` metres), as wide as the agent plus a clearance, sampled every
   :data:`SAMPLE_STEP` m; the first sample that comes within the corridor half width of
   another actor's footprint (agent or ego) gives the gap (samples travelled plus how far
   ahead of that sample the footprint's nearest point lies). When two movers see each other
   (a crossing conflict in progress) the one nearer the conflict goes first; head-on both stop.
2. **Conflict zones ahead**: stretches where two movers' paths come closer than their half
   widths plus a clearance (junction crossings, merges, crosswalks), found once at
   construction. Before entering a zone a mover gives way to the other if that one is
   already inside a short (crossing) zone, or has priority: it cannot stop any more (or is
   already inside another crossing zone of the junction) while this one still can, or else
   it arrives first (estimated time of arrival within :data:`ZONE_HORIZON_S`, ties to the
   lower id). A mover that waits never stops with its body inside another crossing zone of
   its path ("don't block the box"): it waits before that one.

Movers at the end of their path stop (1 m short of it for vehicles) and become plain
obstacles. Interaction terms weaker than 4 % of the IDM acceleration are ignored, so free
traffic holds its target speed exactly.

The ego takes part as an obstacle always, and as a mover (with its zones) while it is on its
scenario path; :meth:`TrafficModel.ego_constraint` gives the autopilot the gap the same rules
leave the ego, so agents and ego never both insist on the same space.

States are consistent with the motion: ``speed`` is the speed along the path at the end of the
step, ``yaw`` the path heading, ``yaw_rate = curvature * speed`` (radar Doppler uses them).
Over one step the displacement is ``(v_start + v_end) / 2 * dt``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from mm_perception.core.types import ObjectClass
from mm_perception.sim.layouts import Path
from mm_perception.sim.scenario import Crossing, LaneFollow, Parked, Scenario
from mm_perception.sim.spec import ActorState

F64 = npt.NDArray[np.float64]

#: spacing of the corridor samples, m
SAMPLE_STEP = 0.5
#: a mover gives way in a conflict zone only to movers arriving within this time, s
ZONE_HORIZON_S = 8.0
#: zones shorter than this along the other mover's path count as crossings, m
SHORT_ZONE_M = 20.0
_ZONE_STEP = 1.0  # path sampling for conflict zones, m


@dataclass(frozen=True)
class DriverParams:
    """IDM and corridor parameters of one kind of road user.

    Attributes:
        max_accel: IDM maximum acceleration ``a``, m/s^2.
        comfort_decel: IDM comfortable deceleration ``b`` (also timed braking), m/s^2.
        max_decel: hard braking limit, m/s^2.
        min_gap: IDM standstill gap ``s0``, m.
        time_headway: IDM time headway ``T``, s.
        lookahead_min: corridor length at standstill, m.
        lookahead_time: corridor length added per m/s of speed, s.
        clearance: lateral margin added to the half width of the corridor, m.
    """

    max_accel: float
    comfort_decel: float
    max_decel: float
    min_gap: float
    time_headway: float
    lookahead_min: float
    lookahead_time: float
    clearance: float


_CAR = DriverParams(2.0, 2.5, 8.0, 2.0, 1.2, 12.0, 3.5, 0.35)
_HEAVY = DriverParams(1.0, 2.0, 6.0, 2.5, 1.5, 15.0, 4.0, 0.35)
#: driver parameters per agent class
DRIVER_PARAMS: Mapping[ObjectClass, DriverParams] = MappingProxyType({
    ObjectClass.CAR: _CAR,
    ObjectClass.TRUCK: _HEAVY,
    ObjectClass.BUS: _HEAVY,
    ObjectClass.PEDESTRIAN: DriverParams(1.0, 1.5, 4.0, 0.5, 0.5, 2.5, 2.0, 0.15),
    ObjectClass.CYCLIST: DriverParams(1.0, 2.0, 5.0, 1.0, 0.8, 6.0, 3.0, 0.25),
})
#: driver parameters of the ego autopilot per platform
EGO_DRIVER: Mapping[str, DriverParams] = MappingProxyType({
    "vehicle": _CAR,
    "robot": DriverParams(0.8, 1.2, 2.5, 0.6, 0.8, 2.0, 3.0, 0.15),
})

_FOLLOW, _PARKED, _CROSSING = 0, 1, 2


def idm_acceleration(v: F64, v0: F64, gap: F64, dv: F64, a: F64, b: F64, s0: F64,
                     T: F64) -> F64:
    """Intelligent Driver Model acceleration (Treiber et al. 2000), vectorised.

    Args:
        v: ``(N,)`` own speed, m/s (>= 0).
        v0: ``(N,)`` desired speed, m/s (0 = come to a halt at comfortable deceleration).
        gap: ``(N,)`` net distance to the obstacle, m (``inf`` = free road).
        dv: ``(N,)`` approach rate ``v - v_obstacle``, m/s.
        a, b, s0, T: ``(N,)`` IDM parameters (max acceleration, comfortable deceleration,
            standstill gap, time headway).

    Returns:
        ``(N,)`` acceleration, m/s^2 (not clamped). Interaction terms below 4 % of ``a`` (an
        obstacle more than 5 desired gaps ``s*`` away) are dropped.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        free = np.where(v0 > 0.0, 1.0 - (v / np.where(v0 > 0.0, v0, 1.0)) ** 4,
                        np.where(v > 0.0, -b / a, 0.0))
        s_star = s0 + np.maximum(0.0, v * T + v * dv / (2.0 * np.sqrt(a * b)))
        inter = np.where(np.isfinite(gap), (s_star / np.maximum(gap, 1e-3)) ** 2, 0.0)
        # far obstacles (more than 5 desired gaps away: interaction below 4 % of a) are
        # ignored, so that free traffic holds its desired speed exactly
        inter = np.where(inter < 0.04, 0.0, inter)
    return np.asarray(a * (free - inter), dtype=np.float64)


@dataclass
class _Zone:
    a: int          # actor index of the mover that may have to give way
    b: int          # the other mover
    a_in: float
    a_out: float
    b_in: float
    b_out: float


def _conflict_zones(pa: Path, pb: Path, threshold: float) -> list[tuple[float, float, float,
                                                                        float]]:
    """Stretches where two paths come within ``threshold`` of each other:
    ``(a_in, a_out, b_in, b_out)`` arc lengths, widened by one sampling step."""
    sa = np.linspace(0.0, pa.length, max(2, math.ceil(pa.length / _ZONE_STEP) + 1))
    sb = np.linspace(0.0, pb.length, max(2, math.ceil(pb.length / _ZONE_STEP) + 1))
    qa, qb = pa.poses_at(sa)[:, :2], pb.poses_at(sb)[:, :2]
    # bounding boxes further apart than the threshold: no conflict
    if np.any(qa.min(0) - threshold > qb.max(0)) or np.any(qb.min(0) - threshold > qa.max(0)):
        return []
    d2 = ((qa[:, None, :] - qb[None, :, :]) ** 2).sum(-1)
    close = d2 < threshold ** 2
    rows = np.flatnonzero(close.any(axis=1))
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) > 1)
    runs = np.split(rows, breaks + 1)
    out = []
    for run in runs:
        cols = np.flatnonzero(close[run].any(axis=0))
        out.append((max(0.0, sa[run[0]] - _ZONE_STEP), min(pa.length, sa[run[-1]] + _ZONE_STEP),
                    max(0.0, sb[cols[0]] - _ZONE_STEP), min(pb.length, sb[cols[-1]] + _ZONE_STEP)))
    return out


class _PathBank:
    """Several paths evaluated together: one vectorised lookup for samples on many paths."""

    _SPAN = 1.0e6  # key spacing between paths (longer than any path), m

    def __init__(self, paths: list[Path]) -> None:
        self.lengths = np.array([p.length for p in paths])
        starts = [np.concatenate([[0.0], np.cumsum(p.lengths)[:-1]]) for p in paths]
        self._key = np.concatenate([j * self._SPAN + st for j, st in enumerate(starts)])
        self._s0 = np.concatenate(starts)
        self._x0 = np.concatenate([p.x0 for p in paths])
        self._y0 = np.concatenate([p.y0 for p in paths])
        self._yaw0 = np.concatenate([p.yaw0 for p in paths])
        self._len = np.concatenate([p.lengths for p in paths])
        self._kappa = np.concatenate([p.curvatures for p in paths])

    def eval(self, path_ids: np.ndarray, s: F64) -> tuple[F64, F64, F64, F64]:
        """``x, y, yaw, curvature`` at arc lengths ``s`` (any shape, clipped to the path) on
        paths ``path_ids`` (broadcast against ``s``)."""
        ids = np.broadcast_to(path_ids, s.shape)
        s = np.minimum(np.maximum(s, 0.0), self.lengths[ids])
        seg = np.searchsorted(self._key, ids * self._SPAN + s, side="right") - 1
        u = np.minimum(np.maximum(s - self._s0[seg], 0.0), self._len[seg])
        kappa = self._kappa[seg]
        half = kappa * u / 2
        chord = u * np.sinc(half / np.pi)
        yaw0 = self._yaw0[seg]
        return (self._x0[seg] + chord * np.cos(yaw0 + half),
                self._y0[seg] + chord * np.sin(yaw0 + half), yaw0 + kappa * u, kappa)


class TrafficModel:
    """Moves the agents of a scenario (see the module docstring).

    Args:
        scenario: the scenario; agents start at :meth:`Scenario.initial_states`.
    """

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        layout = scenario.layout
        agents = scenario.agents
        n = len(agents)
        self._n = n
        self._ids = np.array([a.actor_id for a in agents], dtype=np.int64)
        self._kind = np.array([_FOLLOW if isinstance(a.behaviour, LaneFollow) else
                               _CROSSING if isinstance(a.behaviour, Crossing) else _PARKED
                               for a in agents], dtype=np.int64)
        self._paths: list[Path | None] = [a.behaviour_path(layout) for a in agents]
        self._half = np.array([a.model.size[:2] / 2 for a in agents]).reshape(n, 2)
        params = [DRIVER_PARAMS[a.object_class] for a in agents]
        self._p = {name: np.array([getattr(p, name) for p in params], dtype=np.float64)
                   for name in DriverParams.__dataclass_fields__}
        self._delay = np.array([a.behaviour.start_delay_s if isinstance(a.behaviour, Crossing)
                                else 0.0 for a in agents])
        self._timed_stop = np.array([isinstance(a.behaviour, LaneFollow)
                                     and a.behaviour.stop_at_time_s is not None
                                     for a in agents], dtype=bool)
        self._parked = np.array([(b.x, b.y, b.yaw) if isinstance(b := a.behaviour, Parked)
                                 else (0.0, 0.0, 0.0) for a in agents]).reshape(n, 3)
        self._ego_path = layout.path(scenario.ego.path, "ego.path")
        self._ego_half = scenario.ego.model.size[:2] / 2
        self._ego_params = EGO_DRIVER[scenario.ego.platform]
        # path bank: agent i -> bank index i (a dummy for parked agents), ego -> n
        dummy = Path.chain("parked", 0.0, 0.0, 0.0, [(1.0, 0.0)])
        self._bank = _PathBank([p if p is not None else dummy for p in self._paths]
                               + [self._ego_path])
        self._path_len = self._bank.lengths
        # per actor (agents then ego) arrays used by the analysis
        self._half_all = np.vstack([self._half, self._ego_half[None, :]])
        self._ids_all = np.append(self._ids, 0)
        self._clear_all = np.append(self._p["clearance"], self._ego_params.clearance)
        self._look_min = np.append(self._p["lookahead_min"], self._ego_params.lookahead_min)
        self._look_time = np.append(self._p["lookahead_time"], self._ego_params.lookahead_time)
        self._decel_all = np.append(self._p["max_decel"], self._ego_params.max_decel)
        self._zones = self._find_zones()
        self._z = {
            "a": np.array([z.a for z in self._zones], dtype=np.int64),
            "b": np.array([z.b for z in self._zones], dtype=np.int64),
            "a_in": np.array([z.a_in for z in self._zones]),
            "a_out": np.array([z.a_out for z in self._zones]),
            "b_in": np.array([z.b_in for z in self._zones]),
            "b_out": np.array([z.b_out for z in self._zones]),
        }
        self.reset()

    # -- set-up

    def _find_zones(self) -> list[_Zone]:
        """Conflict zones between every pair of movers (ego = actor index n)."""
        n = self._n
        movers: list[tuple[int, Path, float, float]] = [
            (i, p, float(self._half[i, 1]), float(self._p["clearance"][i]))
            for i, p in enumerate(self._paths) if p is not None]
        movers.append((n, self._ego_path, float(self._ego_half[1]),
                       self._ego_params.clearance))
        zones: list[_Zone] = []
        cache: dict[tuple[int, int, float], list[tuple[float, float, float, float]]] = {}
        for ia in range(len(movers)):
            for ib in range(ia + 1, len(movers)):
                a, pa, hwa, ca = movers[ia]
                b, pb, hwb, cb = movers[ib]
                if pa is pb:
                    continue  # same path: plain car following
                thr = round(hwa + hwb + max(ca, cb), 3)
                key = (id(pa), id(pb), thr)
                if key not in cache:
                    cache[key] = _conflict_zones(pa, pb, thr)
                for a_in, a_out, b_in, b_out in cache[key]:
                    zones.append(_Zone(a, b, a_in, a_out, b_in, b_out))
                    zones.append(_Zone(b, a, b_in, b_out, a_in, a_out))
        return zones

    def reset(self) -> None:
        """Back to the scenario's initial states, t = 0."""
        self.time_s = 0.0
        agents = self.scenario.agents
        n = self._n
        self._s = np.zeros(n)
        self._v = np.zeros(n)
        self._phase = np.zeros(n, dtype=np.int64)      # stop: 0 none, 1 braking, 2 hold, 3 done
        self._hold_until = np.full(n, math.inf)
        self._stop_s = np.full(n, math.inf)
        self._done = np.zeros(n, dtype=bool)
        initial = [a.initial_state(self.scenario.layout) for a in agents]
        for i, (agent, st) in enumerate(zip(agents, initial, strict=True)):
            b = agent.behaviour
            self._v[i] = st.speed
            if isinstance(b, LaneFollow):
                self._s[i] = b.s0
                if b.stop_at_s is not None:
                    self._phase[i] = 1
                    self._stop_s[i] = b.stop_at_s
        self._states = initial
        self._pose = np.array([[st.x, st.y, st.yaw, st.speed] for st in initial]).reshape(n, 4)
        self._cache: tuple[tuple[float, ...], tuple[F64, F64, F64]] | None = None

    # -- queries

    def states(self) -> list[ActorState]:
        """Current agent states (ids >= 1, scenario order)."""
        return list(self._states)

    def ego_constraint(self, ego: ActorState) -> tuple[float, float]:
        """What the ego must respect under the same rules as the agents.

        Returns:
            ``(gap, obstacle_speed)``: distance from the ego's front along its path to the
            nearest obstacle or conflict-zone entry it must yield to (``inf`` = none), m, and
            that obstacle's speed along the ego's path, m/s.
        """
        gap, _, vobs = self._analyse(ego)
        return float(gap[-1]), float(vobs[-1])

    def blockers(self, ego: ActorState) -> dict[int, int]:
        """Diagnostics: actor id -> id of the actor it currently gives way to (0 = the ego),
        for every mover (ego included, as id 0) that is held by another actor."""
        self._analyse(ego)
        ids = self._ids_all
        return {int(ids[i]): int(b) for i, b in enumerate(self._blocker) if b >= 0}

    # -- the model

    def _started(self) -> np.ndarray:
        return np.asarray(self.time_s + 1e-9 >= self._delay, dtype=bool)

    def _analyse(self, ego: ActorState) -> tuple[F64, F64, F64]:
        """Gaps for every agent and the ego (last entry).

        Returns:
            ``gap`` ``(n + 1,)`` IDM gap to what must be yielded to (m, inf = none), ``hard``
            ``(n + 1,)`` distance the mover may advance at most (m), ``vobs`` ``(n + 1,)``
            obstacle speed along the mover's path (m/s).
        """
        key = (self.time_s, ego.x, ego.y, ego.yaw, ego.speed)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        result = self._analyse_uncached(ego)
        self._cache = (key, result)
        return result

    def _analyse_uncached(self, ego: ActorState) -> tuple[F64, F64, F64]:
        n = self._n
        pose = np.vstack([self._pose, [[ego.x, ego.y, ego.yaw, ego.speed]]])
        pos, yaw, speed = pose[:, :2], pose[:, 2], pose[:, 3]
        half = self._half_all
        ids = self._ids_all
        ego_s, ego_lat = self._ego_path.closest(ego.x, ego.y)
        dyaw = math.remainder(ego.yaw - self._ego_path.point_at(ego_s)[2], 2 * math.pi)
        on_path = abs(ego_lat) < 1.0 and abs(dyaw) < 0.5

        # movers (actor indices; the ego last) and where they are on their paths
        # finished movers (at the end of their path) are plain obstacles
        active = ((self._kind == _FOLLOW) | ((self._kind == _CROSSING) & self._started())) \
            & ~self._done
        midx = np.append(np.flatnonzero(active), n)
        m = midx.size
        s_c = np.append(self._s, ego_s)[midx]
        look = self._look_min[midx] + self._look_time[midx] * np.maximum(speed[midx], 0.0)
        reach = half[midx, 1] + self._clear_all[midx]

        # 1. footprints in the corridor. Candidate pairs first: an obstacle can only be in a
        #    corridor if it is within lookahead + its radius of the mover's front.
        fwd = np.stack([np.cos(yaw[midx]), np.sin(yaw[midx])], axis=1)
        front = pos[midx] + half[midx, :1] * fwd
        radius = np.hypot(half[:, 0], half[:, 1])
        dist_c = np.hypot(*(pos[None, :, :] - front[:, None, :]).transpose(2, 0, 1))
        cand = dist_c < (look + reach + 1.0)[:, None] + radius[None, :]
        cand[np.arange(m), midx] = False
        pm, pb = np.nonzero(cand)                                   # pair: mover row, actor
        fgap = np.full((m, n + 1), np.inf)
        fyaw = np.zeros((m, n + 1))
        if pm.size:
            k_max = math.ceil(float(look.max()) / SAMPLE_STEP) + 1
            steps = np.arange(k_max) * SAMPLE_STEP
            s_front = (s_c + half[midx, 0])[:, None] + steps[None, :]          # (m, K)
            bank_id = np.where(midx == n, n, midx)
            sx, sy, syaw, _ = self._bank.eval(bank_id[:, None], s_front)
            if not on_path:  # the ego is off its path: a straight corridor along its heading
                sx[-1] = front[-1, 0] + steps * fwd[-1, 0]
                sy[-1] = front[-1, 1] + steps * fwd[-1, 1]
                syaw[-1] = ego.yaw
            valid = steps[None, :] <= look[:, None]
            valid &= (s_front <= self._path_len[bank_id][:, None] + 1e-9) | \
                ((midx == n) & (not on_path))[:, None]
            dx = sx[pm] - pos[pb, 0:1]
            dy = sy[pm] - pos[pb, 1:2]
            c, s = np.cos(yaw[pb])[:, None], np.sin(yaw[pb])[:, None]
            ux, uy = c * dx + s * dy, -s * dx + c * dy          # sample in obstacle frame
            lx = np.maximum(np.abs(ux) - half[pb, 0:1], 0.0)
            ly = np.maximum(np.abs(uy) - half[pb, 1:2], 0.0)
            hit = (lx * lx + ly * ly < reach[pm, None] ** 2) & valid[pm]
            seen = np.flatnonzero(hit.any(axis=1))
            k = np.argmax(hit[seen], axis=1)
            # gap = samples travelled + how far ahead of that sample the obstacle's nearest
            # point lies (the first hit happens up to `reach` before the obstacle itself)
            qx = np.clip(ux[seen, k], -half[pb[seen], 0], half[pb[seen], 0]) - ux[seen, k]
            qy = np.clip(uy[seen, k], -half[pb[seen], 1], half[pb[seen], 1]) - uy[seen, k]
            cs, ss = c[seen, 0], s[seen, 0]
            wx, wy = cs * qx - ss * qy, ss * qx + cs * qy          # sample -> nearest, world
            ty = syaw[pm[seen], k]
            ahead = wx * np.cos(ty) + wy * np.sin(ty)
            fgap[pm[seen], pb[seen]] = np.maximum(k * SAMPLE_STEP + ahead, 0.0)
            fyaw[pm[seen], pb[seen]] = ty
        # mutual sightings: the mover nearer the conflict goes first; head-on both stop
        fg_full = np.full((n + 1, n + 1), np.inf)
        fg_full[midx] = fgap
        mutual = np.isfinite(fg_full) & np.isfinite(fg_full.T)
        if mutual.any():
            head_on = np.cos(yaw[:, None] - yaw[None, :]) < -0.7
            mine_first = (fg_full < fg_full.T) | ((fg_full == fg_full.T)
                                                  & (ids[:, None] < ids[None, :]))
            fgap = np.where((mutual & ~head_on & mine_first)[midx], np.inf, fgap)
        best_b = np.argmin(fgap, axis=1)
        rows = np.arange(m)
        gap = fgap[rows, best_b]
        vobs = np.where(np.isfinite(gap),
                        speed[best_b] * np.cos(yaw[best_b] - fyaw[rows, best_b]), 0.0)
        hard = np.maximum(gap - 0.05, 0.0)
        blocker = np.where(np.isfinite(gap), ids[best_b], -1)

        # 2. conflict zones ahead
        z = self._z
        if z["a"].size:
            s_all = np.full(n + 1, np.nan)
            s_all[midx] = s_c
            use = np.isfinite(s_all[z["a"]]) & np.isfinite(s_all[z["b"]])
            if not on_path:
                use &= (z["a"] != n) & (z["b"] != n)
            if use.any():
                zgap, zwho = self._zone_gaps(z, use, s_all, speed, ids)
                zg = zgap[midx]
                closer = zg < gap
                gap = np.where(closer, zg, gap)
                vobs = np.where(closer, 0.0, vobs)
                blocker = np.where(closer, zwho[midx], blocker)
        out_gap = np.full(n + 1, np.inf)
        out_hard = np.full(n + 1, np.inf)
        out_v = np.zeros(n + 1)
        out_gap[midx], out_hard[midx], out_v[midx] = gap, hard, vobs
        self._blocker = np.full(n + 1, -1)
        self._blocker[midx] = blocker
        return out_gap, out_hard, out_v

    def _zone_gaps(self, z: dict[str, np.ndarray], use: np.ndarray, s_all: F64, speed: F64,
                   ids: np.ndarray) -> tuple[F64, np.ndarray]:
        """Distance (front to zone entry) at which each mover must wait for a conflict zone,
        and the id of the actor it waits for (see the module docstring for the rules)."""
        half = self._half_all
        za, zb = z["a"][use], z["b"][use]
        a_in, a_out, b_in, b_out = (z[k][use] for k in ("a_in", "a_out", "b_in", "b_out"))
        d_a = a_in - (s_all[za] + half[za, 0])
        d_b = b_in - (s_all[zb] + half[zb, 0])
        a_passed = s_all[za] - half[za, 0] > a_out
        b_passed = s_all[zb] - half[zb, 0] > b_out
        b_inside = (d_b <= 0) & ~b_passed
        short_a = (a_out - a_in) <= SHORT_ZONE_M
        short_b = (b_out - b_in) <= SHORT_ZONE_M
        # a mover inside a crossing zone is committed to the junction: it goes on before
        # anybody who has not entered yet, so that nobody stops half-way across another's path
        inside_any = np.zeros(len(half), dtype=bool)
        inside_any[za[(d_a <= 0) & ~a_passed & short_a]] = True
        v_a, v_b = np.maximum(speed[za], 0.0), np.maximum(speed[zb], 0.0)
        commit_a = (d_a < v_a ** 2 / (2 * self._decel_all[za]) + 0.5) | inside_any[za]
        commit_b = (d_b < v_b ** 2 / (2 * self._decel_all[zb]) + 0.5) | inside_any[zb]
        eta_a = np.where(v_a > 0.3, d_a / np.maximum(v_a, 0.3), np.inf)
        eta_b = np.where(v_b > 0.3, d_b / np.maximum(v_b, 0.3), np.inf)
        b_first = (eta_b < eta_a) | ((eta_b == eta_a) & (ids[zb] < ids[za]))
        b_prio = ((commit_b & ~commit_a) | ((commit_b == commit_a) & b_first)) \
            & (eta_b < ZONE_HORIZON_S)
        give_way = (d_a > 0) & ((b_inside & short_b) | ((d_b > 0) & b_prio))
        zgap = np.full(len(half), np.inf)
        zwho = np.full(len(half), -1)
        if not give_way.any():
            return zgap, zwho
        ga, gb, gd = za[give_way], zb[give_way], d_a[give_way]
        order = np.lexsort((gd, ga))                              # nearest zone per mover
        firsts = order[np.r_[True, ga[order][1:] != ga[order][:-1]]]
        zgap[ga[firsts]] = gd[firsts]
        zwho[ga[firsts]] = ids[gb[firsts]]
        # do not block the box: a mover that must wait at a zone does not stop with its body
        # inside another crossing zone of its path; it waits before that one instead
        ahead = (d_a > 0) & short_a & ~b_passed
        for a in np.unique(ga):
            mine = ahead & (za == a)
            if not mine.any():
                continue
            starts, ends = d_a[mine], d_a[mine] + (a_out - a_in)[mine]
            length = 2 * half[a, 0]
            stop = zgap[a]
            for _ in range(8):
                blocked = (starts < stop) & (ends > stop - length)
                if not blocked.any():
                    break
                stop = float(starts[blocked].min())
            zgap[a] = stop
        return zgap, zwho

    def step(self, dt: float, ego: ActorState) -> list[ActorState]:
        """Advance every agent by ``dt`` seconds.

        Args:
            dt: time step, s (> 0).
            ego: the ego's state at the start of the step (an obstacle for the agents).

        Returns:
            The agents' states at ``time_s + dt`` (ids >= 1, scenario order).
        """
        if isinstance(dt, bool) or not isinstance(dt, int | float) or not math.isfinite(dt) \
                or dt <= 0:
            raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
        n = self._n
        if n == 0:
            self.time_s += dt
            return []
        t = self.time_s
        gap, hard, vobs = self._analyse(ego)
        gap, hard, vobs = gap[:n], hard[:n], vobs[:n]
        p = self._p
        started = self._started()
        moving = (self._kind == _FOLLOW) | ((self._kind == _CROSSING) & started)
        v = self._v
        v0 = np.zeros(n)
        line = np.full(n, np.inf)  # distance of the centre to a stop line ahead, m
        for i, agent in enumerate(self.scenario.agents):
            b = agent.behaviour
            if isinstance(b, LaneFollow):
                v0[i] = b.target_speed(t)
                # stop 1 m short of the end of the path (the paved area ends there)
                line[i] = self._path_len[i] - self._half[i, 0] - 1.0 - self._s[i]
                if b.stop_at_time_s is not None and self._phase[i] == 0 \
                        and t + 1e-9 >= b.stop_at_time_s:
                    self._phase[i] = 1
                if self._phase[i] == 1 and b.stop_at_s is not None:
                    line[i] = min(line[i], b.stop_at_s - self._s[i])
            elif isinstance(b, Crossing) and started[i]:
                v0[i] = b.speed
                line[i] = self._path_len[i] - self._s[i]
        args = (p["max_accel"], p["comfort_decel"], p["min_gap"], p["time_headway"])
        acc = idm_acceleration(v, v0, gap, v - vobs, *args)
        # stop lines: the centre comes to rest on the line (equilibrium gap = s0)
        acc = np.minimum(acc, idm_acceleration(v, v0, line + p["min_gap"], v, *args))
        braking = (self._phase == 1) & self._timed_stop
        acc = np.where(braking, np.minimum(acc, -p["comfort_decel"]), acc)
        acc = np.clip(acc, -p["max_decel"], p["max_accel"])
        # integrate (exact for constant acceleration, stopping at v = 0 within the step)
        v_end = v + acc * dt
        stops = v_end < 0.0
        ds = np.where(stops, v * v / np.maximum(-2.0 * acc, 1e-12), (v + v_end) / 2 * dt)
        v_end = np.maximum(v_end, 0.0)
        # never drive into an obstacle, whatever the IDM says (coarse gaps, late sightings)
        over = ds > hard
        ds = np.where(over, hard, ds)
        v_end = np.where(over, np.minimum(v_end, np.maximum(0.0, 2 * hard / dt - v)), v_end)
        go = moving & (self._phase != 2)
        self._s = self._s + np.where(go, ds, 0.0)
        self._v = np.where(go, v_end, 0.0)
        self.time_s = t + dt
        # stop bookkeeping: reached the stop -> hold for the duration -> go on
        # (timed braking ends exactly at v = 0; the IDM approach to a stop point is
        # asymptotic, so that one is snapped to a halt when slow and close)
        reached = (self._phase == 1) & np.where(
            self._timed_stop, self._v == 0.0, (self._v < 0.1) & (self._stop_s - self._s < 1.0))
        for k in np.flatnonzero(reached).tolist():
            stop = self.scenario.agents[k].behaviour
            assert isinstance(stop, LaneFollow)
            self._phase[k] = 2
            self._v[k] = 0.0
            self._hold_until[k] = self.time_s + stop.stop_duration_s
        self._phase[(self._phase == 2) & (self.time_s + 1e-9 >= self._hold_until)] = 3
        end = np.where(self._kind == _CROSSING, self._path_len[:n] - 0.3,
                       self._path_len[:n] - self._half[:, 0] - 1.3)
        self._done = moving & (self._s >= end) & (self._v < 0.05)
        self._states = self._make_states()
        return list(self._states)

    def _make_states(self) -> list[ActorState]:
        n = self._n
        x, y, yaw, kappa = self._bank.eval(np.arange(n), self._s)
        parked = self._kind == _PARKED
        x = np.where(parked, self._parked[:, 0], x)
        y = np.where(parked, self._parked[:, 1], y)
        yaw = np.where(parked, self._parked[:, 2], yaw)
        yaw = np.remainder(yaw + np.pi, 2 * np.pi) - np.pi
        kappa = np.where(parked, 0.0, kappa)
        z = self.scenario.layout.ground_height(np.stack([x, y], axis=1))
        self._pose = np.stack([x, y, yaw, self._v], axis=1)
        return [ActorState(int(self._ids[i]), float(x[i]), float(y[i]), float(yaw[i]),
                           float(self._v[i]), float(kappa[i] * self._v[i]), float(z[i]))
                for i in range(n)]


__all__ = ["DRIVER_PARAMS", "EGO_DRIVER", "SAMPLE_STEP", "DriverParams", "TrafficModel",
           "idm_acceleration"]
