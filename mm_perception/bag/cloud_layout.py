"""Lay out LiDAR / radar points the way a rig's driver publishes them (for writing bags).

The rig names each canonical field's message field (``doppler: vrad``, ``rcs: amplitude``)
and, for a LiDAR, how per-point time is stored (``point_time``: field, unit, relative or
absolute). This module turns canonical arrays into the structured array that
:func:`mm_perception.ros.conversions.array_to_pointcloud2` writes, so the simulator and the
analytic scene produce exactly what the bag reader expects for that rig.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mm_perception.core.calibration import SensorSpec
from mm_perception.core.errors import ConfigError

#: ``packed``: fields back to back; ``padded``: a driver-like layout with a 4-byte gap after
#: x, y, z and a 32-byte point step (when it fits); ``float64``: float64 coordinates
LAYOUTS = ("packed", "padded", "float64")
_NS_PER_UNIT = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}


def _time_values(spec: SensorSpec, offsets_ns: np.ndarray,
                 stamp_ns: int) -> tuple[Any, np.ndarray]:
    """(dtype, values) of the per-point time field for the rig's unit and reference."""
    pt = spec.point_time
    assert pt is not None
    scale = _NS_PER_UNIT[pt.unit]
    if pt.reference == "absolute":
        if pt.unit == "ns":  # PointField has no 64-bit integer type to hold epoch ns exactly
            raise ConfigError(f"sensor {spec.name!r}: absolute point time in ns cannot be "
                              f"written to a PointCloud2 exactly; use unit s (float64) or a "
                              f"relative time")
        # float64 epoch seconds (what e.g. Hesai/Velodyne drivers publish)
        sec = stamp_ns // 1_000_000_000
        frac = (stamp_ns - sec * 1_000_000_000 + offsets_ns.astype(np.float64)) / 1e9
        return np.float64, (sec + frac) * (1e9 / scale)
    if pt.unit in ("s", "ms"):
        return np.float32, (offsets_ns.astype(np.float64) / scale).astype(np.float32)
    return np.uint32, np.round(offsets_ns / scale).astype(np.uint32)


def rig_cloud_array(spec: SensorSpec, columns: Mapping[str, np.ndarray],
                    offsets_ns: np.ndarray | None = None, stamp_ns: int = 0,
                    layout: str = "packed") -> np.ndarray:
    """Structured ``(N,)`` array in the rig's message layout.

    Args:
        spec: the rig sensor (its ``fields`` map canonical -> message names).
        columns: canonical name -> ``(N,)`` values: ``x``, ``y``, ``z`` (required) and any of
            ``intensity``, ``ring``, ``doppler``, ``rcs``, ``vx``, ``vy``, ``vz``. A canonical
            field the rig does not map is written under its canonical name (x/y/z, ring) or
            skipped (doppler/rcs/intensity are only written when mapped).
        offsets_ns: ``(N,)`` int64 per-point time relative to ``stamp_ns``; written when the
            rig has ``point_time`` (required then).
        stamp_ns: the message header stamp (for absolute point times).
        layout: one of :data:`LAYOUTS`.

    Raises:
        ConfigError: unknown layout, or point time needed but not given.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"cloud layout must be one of {LAYOUTS}, got {layout!r}")
    names = dict(spec.fields)
    n = int(np.asarray(columns["x"]).shape[0])
    coord: Any = np.float64 if layout == "float64" else np.float32
    specs: list[tuple[str, Any, np.ndarray]] = []
    for canon in ("x", "y", "z"):
        specs.append((names.get(canon, canon), coord, np.asarray(columns[canon])))
    gap_after_xyz = 4 if layout == "padded" else 0
    for canon in ("intensity", "doppler", "rcs", "vx", "vy", "vz"):
        if canon in columns and canon in names:
            specs.append((names[canon], np.float32, np.asarray(columns[canon])))
    if spec.point_time is not None:
        if offsets_ns is None:
            raise ConfigError(f"sensor {spec.name!r} stores per-point time "
                              f"({spec.point_time.field}); offsets_ns are needed")
        tdt, tval = _time_values(spec, np.asarray(offsets_ns, dtype=np.int64), stamp_ns)
        specs.append((spec.point_time.field, tdt, tval))
    if "ring" in columns:
        specs.append((names.get("ring", "ring"), np.uint16, np.asarray(columns["ring"])))
    offsets, off = [], 0
    for i, (_, dt, _) in enumerate(specs):
        if i == 3:
            off += gap_after_xyz
        size = np.dtype(dt).itemsize
        off = -(-off // min(size, 4)) * min(size, 4) if layout == "padded" else off
        offsets.append(off)
        off += size
    itemsize = 32 if layout == "padded" and off <= 32 else off
    dtype = np.dtype({"names": [s[0] for s in specs], "formats": [s[1] for s in specs],
                      "offsets": offsets, "itemsize": itemsize})
    out = np.zeros(n, dtype=dtype)
    for name, _, values in specs:
        out[name] = values
    return out


__all__ = ["LAYOUTS", "rig_cloud_array"]
