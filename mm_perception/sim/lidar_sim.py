"""Simulated spinning LiDAR: beams cast with ``mj_multiRay`` in a :class:`MujocoWorld`.

Beam pattern (all in the LiDAR frame, REP 103: x forward, y left, z up):

- channel (``ring``) ``i`` has elevation ``model.vertical_angles_deg[i]`` (ring 0 = lowest);
- column ``c`` has azimuth ``start + 2 pi c / columns`` (``start`` = the model's
  ``start_azimuth_deg``, by default 180: column 0 points along -x, so the sweep's seam is
  behind the vehicle) and the head turns counter-clockwise seen from above (towards +y),
  i.e. with increasing azimuth;
- column ``c`` fires ``c / (columns * rate_hz)`` seconds after the sweep start (all channels
  of a column at once).

A sweep is cast in slices (:meth:`LidarSim.slice_columns`) so the caller can move the ego and
the world between slices; each slice is cast from the pose passed to :meth:`LidarSim.cast`,
and its points are expressed in the LiDAR frame *of that slice*. A moving ego therefore
produces real motion distortion when the slices are assembled into one cloud in the frame
of the sweep's start or end, as a real sensor driver does.

Measurement model per beam: the true range to the first surface (the ego's own body is
ignored), plus Gaussian noise ``range_noise_m``; the return is lost with probability
``dropout``, and kept only if the noisy range is in ``[min_range_m, max_range_m]``.
Intensity (arbitrary units, 0..``intensity_scale``) follows a Lambertian target:

    intensity = scale * reflectivity(material) * cos(incidence) * min(1, (r_ref / r)^2)

(reflectivity from :data:`~mm_perception.sim.spec.MATERIALS`; the inverse-square falloff
starts at ``intensity_ref_range_m``), so retro-reflective lane paint is bright, asphalt dark,
and grazing or far surfaces dim. All randomness comes from the caller's ``rng``, in a fixed
order and amount per call, so equal inputs give byte-identical outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.sensor_models import LidarModel
from mm_perception.sim.world import MujocoWorld

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]


@dataclass(frozen=True)
class LidarSimConfig:
    """Settings of a :class:`LidarSim` beyond the rig's :class:`LidarModel`.

    Attributes:
        n_slices: default number of slices a sweep is cast in (1..columns).
        intensity_scale: intensity of a reflectivity-1 target seen head-on within
            ``intensity_ref_range_m``.
        intensity_ref_range_m: range where the inverse-square intensity falloff starts, m.
    """

    n_slices: int = 32
    intensity_scale: float = 255.0
    intensity_ref_range_m: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.n_slices, bool) or not isinstance(self.n_slices, int) \
                or self.n_slices < 1:
            raise ConfigError(f"LidarSimConfig.n_slices must be an integer >= 1, "
                              f"got {self.n_slices!r}")
        for name in ("intensity_scale", "intensity_ref_range_m"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int | float) \
                    or not math.isfinite(val) or val <= 0:
                raise ConfigError(f"LidarSimConfig.{name} must be a number > 0, got {val!r}")


@dataclass(frozen=True)
class LidarReturns:
    """The returns of one slice (or a whole sweep), ordered by column then ring.

    Attributes:
        xyz: ``(M, 3) float32`` points in the LiDAR frame at the time of their slice, m.
        range: ``(M,) float32`` measured (noisy) range, m.
        intensity: ``(M,) float32`` see the module docstring.
        ring: ``(M,) uint16`` channel index (0 = lowest beam).
        column: ``(M,) int32`` firing column (azimuth ``start + 2 pi column / columns``).
        time_offset_ns: ``(M,) int64`` firing time after the sweep start, ns.
        actor_id: ``(M,) int32`` actor hit (>= 1); -1 static geometry or ground.
        geom_id: ``(M,) int32`` MuJoCo geom hit.
    """

    xyz: F32
    range: F32
    intensity: F32
    ring: npt.NDArray[np.uint16]
    column: I32
    time_offset_ns: npt.NDArray[np.int64]
    actor_id: I32
    geom_id: I32

    def __len__(self) -> int:
        return int(self.range.shape[0])

    @staticmethod
    def concatenate(parts: Sequence[LidarReturns]) -> LidarReturns:
        """Join slices (in the given order) into one set of returns."""
        if not parts:
            return LidarReturns(np.zeros((0, 3), np.float32), np.zeros(0, np.float32),
                                np.zeros(0, np.float32), np.zeros(0, np.uint16),
                                np.zeros(0, np.int32), np.zeros(0, np.int64),
                                np.zeros(0, np.int32), np.zeros(0, np.int32))
        return LidarReturns(*(np.concatenate([getattr(p, f) for p in parts])
                              for f in ("xyz", "range", "intensity", "ring", "column",
                                        "time_offset_ns", "actor_id", "geom_id")))


class LidarSim:
    """A spinning LiDAR of the rig in a :class:`MujocoWorld` (see the module docstring).

    Args:
        world: the world to cast in.
        model: the rig's beam pattern, rate, range limits and noise.
        T_base_lidar: pose of the LiDAR frame in ``base_link`` (kept for the caller's
            convenience: ``T_world_lidar = T_world_base @ sim.T_base_lidar``).
        config: slicing and intensity settings.
    """

    def __init__(self, world: MujocoWorld, model: LidarModel, T_base_lidar: SE3,
                 config: LidarSimConfig | None = None) -> None:
        self.world = world
        self.model = model
        self.T_base_lidar = T_base_lidar
        self.config = config if config is not None else LidarSimConfig()
        if self.config.n_slices > model.columns:
            raise ConfigError(f"LidarSimConfig.n_slices ({self.config.n_slices}) must not "
                              f"exceed the LiDAR's columns ({model.columns})")
        elev = np.radians(np.asarray(model.vertical_angles_deg, dtype=np.float64))
        azim = (np.radians(model.start_azimuth_deg)
                + 2.0 * np.pi * np.arange(model.columns) / model.columns)
        ce = np.cos(elev)
        #: (columns, channels, 3) unit beam directions in the LiDAR frame
        self.directions = np.stack([
            np.cos(azim)[:, None] * ce[None, :],
            np.sin(azim)[:, None] * ce[None, :],
            np.broadcast_to(np.sin(elev)[None, :], (model.columns, elev.size)),
        ], axis=2)
        self.directions.setflags(write=False)

    @property
    def n_slices(self) -> int:
        return self.config.n_slices

    @property
    def sweep_duration_ns(self) -> int:
        return round(1e9 / self.model.rate_hz)

    def slice_columns(self, k: int, n_slices: int | None = None) -> I32:
        """``(n,) int32`` columns fired in slice ``k`` of ``n_slices`` (default
        ``config.n_slices``): the contiguous block ``[k C / n, (k + 1) C / n)``.

        Raises:
            ValueError: ``k`` outside ``[0, n_slices)`` or ``n_slices`` outside
                ``[1, columns]``.
        """
        n = self.config.n_slices if n_slices is None else int(n_slices)
        cols = self.model.columns
        if not 1 <= n <= cols:
            raise ValueError(f"n_slices must be in [1, {cols}], got {n}")
        if not 0 <= int(k) < n:
            raise ValueError(f"slice index must be in [0, {n}), got {k}")
        return np.arange((int(k) * cols) // n, ((int(k) + 1) * cols) // n, dtype=np.int32)

    def column_time_offset_ns(self, columns: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Firing time of each column after the sweep start, ns (``(n,) int64``)."""
        c = np.asarray(columns, dtype=np.float64)
        return np.rint(c * 1e9 / (self.model.columns * self.model.rate_hz)).astype(np.int64)

    def slice_time_offset_ns(self, k: int, n_slices: int | None = None) -> int:
        """Mid-time of slice ``k`` after the sweep start, ns: the instant whose poses the
        caller should pass to :meth:`cast` for that slice."""
        cols = self.slice_columns(k, n_slices)
        mid = 0.5 * (float(cols[0]) + float(cols[-1]))
        return round(mid * 1e9 / (self.model.columns * self.model.rate_hz))

    def cast(self, T_world_lidar: SE3, columns: npt.ArrayLike,
             rng: np.random.Generator) -> LidarReturns:
        """Fire the given columns from one LiDAR pose (a one-slice :class:`LidarSweep`).

        Args:
            T_world_lidar: LiDAR pose in the world at the slice's time.
            columns: ``(n,)`` column indices in ``[0, columns)``.
            rng: noise source (one normal and one uniform draw per beam, always).

        Returns:
            :class:`LidarReturns` of the beams that returned, ordered by the given columns,
            then ring.

        Raises:
            ValueError: a column index out of range.
        """
        sweep = self.sweep()
        sweep.cast(T_world_lidar, columns)
        return sweep.finish(rng)

    def sweep(self) -> LidarSweep:
        """An empty :class:`LidarSweep` to cast slices into."""
        return LidarSweep(self)


class LidarSweep:
    """The slices of one sweep, cast one at a time and measured together.

    :meth:`cast` runs only the ray cast of a slice (from that slice's pose, against the world
    as it is then); :meth:`finish` applies the measurement model (noise, dropout, range
    limits, intensity) to every beam of every slice at once, which costs one set of array
    operations per sweep instead of one per slice.
    """

    def __init__(self, lidar: LidarSim) -> None:
        self.lidar = lidar
        n_max = lidar.model.columns * lidar.model.channels
        self._geom = np.empty(n_max, dtype=np.int32)
        self._dist = np.empty(n_max)
        self._normal = np.empty((n_max, 3))
        self._dirs_world = np.empty((n_max, 3))
        self._n = 0  # beams cast so far
        self._cols: list[npt.NDArray[np.int64]] = []  # per slice: its columns
        self._sizes: list[int] = []  # per slice: its beams
        self._origins: list[F64] = []  # per slice: the LiDAR position in the world, m

    def cast(self, T_world_lidar: SE3, columns: npt.ArrayLike) -> None:
        """Cast the beams of ``columns`` from ``T_world_lidar`` (the pose at the slice's
        time) against the world as it is now.

        Raises:
            ValueError: a column index out of range, or more beams than one sweep has.
        """
        model = self.lidar.model
        cols = np.asarray(columns, dtype=np.int64).reshape(-1)
        if cols.size and (cols.min() < 0 or cols.max() >= model.columns):
            raise ValueError(f"columns must be in [0, {model.columns}), got "
                             f"[{cols.min()}, {cols.max()}]")
        a = self._n
        b = a + cols.size * model.channels
        if b > self._geom.size:
            raise ValueError(f"a sweep has {self._geom.size} beams; {b} were cast")
        rot = T_world_lidar.rotation
        dirs_world = self._dirs_world[a:b]
        np.matmul(self.lidar.directions[cols].reshape(-1, 3), rot.T, out=dirs_world)
        cutoff = model.max_range_m + 5.0 * model.range_noise_m
        self.lidar.world.cast_rays(T_world_lidar.translation, dirs_world, cutoff,
                                   out=(self._geom[a:b], self._dist[a:b], self._normal[a:b]))
        self._n = b
        self._cols.append(cols)
        self._sizes.append(b - a)
        self._origins.append(np.array(T_world_lidar.translation, dtype=np.float64))

    def finish(self, rng: np.random.Generator) -> LidarReturns:
        """The measured returns of every slice cast, in slice order (then column, then
        ring); each slice's points in the LiDAR frame of that slice.

        ``rng`` gives one normal and one uniform draw per beam, always.
        """
        ret, _, _ = self.finish_with_slices(rng)
        return ret

    def finish_with_slices(self, rng: np.random.Generator
                           ) -> tuple[LidarReturns, I32, F64]:
        """:meth:`finish`, the ``(M,) int32`` slice index of each return and ``(M, 3)
        float64`` each return's world position at its slice's time, m."""
        lidar = self.lidar
        model, cfg = lidar.model, lidar.config
        nch = model.channels
        n = self._n
        noise = rng.normal(0.0, model.range_noise_m, n) if model.range_noise_m > 0 \
            else np.zeros(n)
        lost = rng.random(n) < model.dropout
        geom = self._geom[:n]
        rng_m = self._dist[:n] + noise
        keep = (geom >= 0) & ~lost & (rng_m >= model.min_range_m) & (rng_m <= model.max_range_m)

        cols = np.concatenate(self._cols) if self._cols else np.zeros(0, np.int64)
        slice_idx = np.repeat(np.arange(len(self._sizes), dtype=np.int32),
                              self._sizes)[keep]
        geom_k = geom[keep]
        r = rng_m[keep]
        dirs_world = self._dirs_world[:n][keep]
        cos_inc = np.abs(np.einsum("ij,ij->i", self._normal[:n][keep], dirs_world))
        falloff = np.minimum(1.0, (cfg.intensity_ref_range_m / r) ** 2)
        intensity = (cfg.intensity_scale * lidar.world.geom_reflectivity[geom_k]
                     * cos_inc * falloff)
        ring = np.tile(np.arange(nch, dtype=np.uint16), cols.size)[keep]
        column = np.repeat(cols.astype(np.int32), nch)[keep]
        dirs = lidar.directions[column, ring]  # the LiDAR frame of each beam's slice
        returns = LidarReturns(
            xyz=(dirs * r[:, None]).astype(np.float32),
            range=r.astype(np.float32),
            intensity=intensity.astype(np.float32),
            ring=ring,
            column=column,
            time_offset_ns=lidar.column_time_offset_ns(column),
            actor_id=lidar.world.geom_actor[geom_k].astype(np.int32),
            geom_id=geom_k.astype(np.int32),
        )
        origins = np.asarray(self._origins).reshape(-1, 3)
        points_world = origins[slice_idx] + dirs_world * r[:, None]
        return returns, slice_idx, points_world


__all__ = ["LidarReturns", "LidarSim", "LidarSimConfig", "LidarSweep"]
