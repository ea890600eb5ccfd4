"""``sensor_msgs/PointCloud2`` <-> structured arrays, ``PointCloud`` and ``RadarScan``.

Any field layout (padding, all datatypes, ``count > 1``, organised clouds with row padding)
without per-point Python loops; big-endian clouds are rejected with a clear error.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConversionError
from mm_perception.core.types import (
    PointCloud,
    RadarScan,
)
from mm_perception.ros.message_factory import (
    INT32_MAX,
    MessageFactory,
    as_uint,
    byte_buffer,
    header,
    stamp_to_ns,
)

# --------------------------------------------------------------------------------------
# PointCloud2
# --------------------------------------------------------------------------------------

#: sensor_msgs/PointField datatype constant -> little-endian numpy dtype
POINTFIELD_DTYPES: Mapping[int, np.dtype[Any]] = MappingProxyType({
    1: np.dtype("<i1"),  # INT8
    2: np.dtype("<u1"),  # UINT8
    3: np.dtype("<i2"),  # INT16
    4: np.dtype("<u2"),  # UINT16
    5: np.dtype("<i4"),  # INT32
    6: np.dtype("<u4"),  # UINT32
    7: np.dtype("<f4"),  # FLOAT32
    8: np.dtype("<f8"),  # FLOAT64
})
_POINTFIELD_NAMES = {1: "INT8", 2: "UINT8", 3: "INT16", 4: "UINT16", 5: "INT32",
                     6: "UINT32", 7: "FLOAT32", 8: "FLOAT64"}
_DTYPE_TO_POINTFIELD: Mapping[tuple[str, int], int] = MappingProxyType(
    {(dt.kind, dt.itemsize): code for code, dt in POINTFIELD_DTYPES.items()})


def pointcloud2_dtype(fields: Sequence[Any], point_step: int) -> np.dtype[Any]:
    """Structured dtype of one point of a PointCloud2.

    Args:
        fields: ``sensor_msgs/PointField`` objects (``name``, ``offset``, ``datatype``,
            ``count``).
        point_step: bytes per point.

    Returns:
        Structured little-endian dtype with the fields at their byte offsets and
        ``itemsize == point_step`` (padding between and after fields is skipped);
        a field with ``count > 1`` is a subarray of shape ``(count,)``.

    Raises:
        ConversionError: no fields, empty or duplicate name, unknown datatype, count 0,
            a field past ``point_step``, or overlapping fields.
    """
    step = as_uint(point_step, "point_step", "PointCloud2")
    if len(fields) == 0:
        raise ConversionError("PointCloud2 has no fields")
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    spans: list[tuple[int, int, str]] = []
    for f in fields:
        name = str(f.name)
        offset = as_uint(f.offset, f"field {name!r} offset", "PointCloud2")
        count = as_uint(f.count, f"field {name!r} count", "PointCloud2")
        datatype = int(f.datatype)
        if not name:
            raise ConversionError(f"PointCloud2 field at offset {offset} has an empty name")
        if name in names:
            raise ConversionError(f"PointCloud2 field name {name!r} appears twice in "
                                  f"{[str(g.name) for g in fields]}")
        if datatype not in POINTFIELD_DTYPES:
            raise ConversionError(f"PointCloud2 field {name!r} has unknown datatype "
                                  f"{datatype}; known: {dict(_POINTFIELD_NAMES)}")
        if count == 0:
            raise ConversionError(f"PointCloud2 field {name!r} has count 0")
        base = POINTFIELD_DTYPES[datatype]
        end = offset + base.itemsize * count
        if end > step:
            raise ConversionError(f"PointCloud2 field {name!r} ({_POINTFIELD_NAMES[datatype]}"
                                  f" x{count} at offset {offset}) ends at byte {end}, past "
                                  f"point_step = {step}")
        names.append(name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(offset)
        spans.append((offset, end, name))
    spans.sort()
    for (_, end_a, name_a), (start_b, _, name_b) in itertools.pairwise(spans):
        if start_b < end_a:
            raise ConversionError(f"PointCloud2 fields {name_a!r} and {name_b!r} overlap: "
                                  f"{name_a!r} ends at byte {end_a}, {name_b!r} starts at "
                                  f"{start_b}")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": step})


def _cloud_view(msg: Any) -> tuple[np.ndarray, np.dtype[Any], npt.NDArray[np.uint8]]:
    """``(H, W)`` structured view on the message buffer (no copy), the point dtype and the
    ``(n,)`` uint8 buffer itself."""
    if bool(msg.is_bigendian):
        raise ConversionError("PointCloud2 is big-endian (is_bigendian=True); only "
                              "little-endian clouds are supported")
    height = as_uint(msg.height, "height", "PointCloud2")
    width = as_uint(msg.width, "width", "PointCloud2")
    point_step = as_uint(msg.point_step, "point_step", "PointCloud2")
    row_step = as_uint(msg.row_step, "row_step", "PointCloud2")
    dtype = pointcloud2_dtype(list(msg.fields), point_step)
    if row_step < width * point_step:
        raise ConversionError(f"PointCloud2 row_step = {row_step} is smaller than "
                              f"width*point_step = {width}*{point_step} = "
                              f"{width * point_step}")
    buf = byte_buffer(msg.data, "PointCloud2")
    if buf.size != row_step * height:
        raise ConversionError(f"PointCloud2 data has {buf.size} bytes but row_step*height = "
                              f"{row_step}*{height} = {row_step * height} (width={width}, "
                              f"point_step={point_step})")
    if width * height == 0:
        return np.empty((height, width), dtype=dtype), dtype, buf
    view = np.ndarray((height, width), dtype=dtype, buffer=buf, offset=0,
                      strides=(row_step, point_step))
    return view, dtype, buf


def _finite_mask(arr: np.ndarray, names: Sequence[str]) -> np.ndarray | None:
    """Mask of points whose fields ``names`` (those present) are all finite, or None if
    every point is (so callers can skip the copy)."""
    present = [n for n in names if n in (arr.dtype.names or ())]
    if not present or arr.size == 0:
        return None
    mask = np.ones(arr.shape, dtype=bool)
    for name in present:
        col = arr[name]
        if col.dtype.kind != "f":
            continue
        fin = np.isfinite(col)
        if fin.ndim > mask.ndim:  # subarray field: all its elements must be finite
            fin = fin.reshape(*mask.shape, -1).all(axis=-1)
        mask &= fin
    return None if bool(mask.all()) else mask


def _copy_fields(view: np.ndarray, pairs: Sequence[tuple[str, str]],
                 src_dtype: np.dtype[Any], *, flatten: bool) -> np.ndarray:
    """Packed copy of ``view`` with field ``out_name`` taken from ``src_name``; ``(N,)`` when
    ``flatten`` else ``view.shape``. The result owns its memory (``base is None``), so a
    frozen core type does not copy it once more."""
    assert src_dtype.fields is not None
    dtype = np.dtype([(out_name, src_dtype.fields[src][0]) for out_name, src in pairs])
    result = np.empty(view.size if flatten else view.shape, dtype=dtype)
    out = result.reshape(view.shape)
    for out_name, src in pairs:
        out[out_name] = view[src]
    return result


def pointcloud2_to_array(msg: Any, *, remove_nans: bool = True,
                         organized: bool = False) -> np.ndarray:
    """``sensor_msgs/PointCloud2`` -> structured numpy array.

    Args:
        msg: the cloud message.
        remove_nans: drop points whose ``x``, ``y`` or ``z`` (those fields that exist) is not
            finite.
        organized: return ``(H, W)`` instead of ``(H*W,)``; needs ``remove_nans=False``.

    Returns:
        ``(N,)`` (or ``(H, W)``) structured array with the message's fields in message
        order, packed (no padding), little-endian, owning its memory. Units and frame are
        those of the message (``msg.header.frame_id``).

    Raises:
        ConversionError: big-endian cloud, bad field layout, data size mismatch, row_step
            smaller than ``width*point_step``, or ``organized`` with ``remove_nans``.
    """
    if organized and remove_nans:
        raise ConversionError("organized=True keeps the (H, W) grid and so needs "
                              "remove_nans=False")
    view, dtype, _ = _cloud_view(msg)
    out = _copy_fields(view, [(n, n) for n in dtype.names or ()], dtype,
                       flatten=not organized)
    if organized:
        return out
    if remove_nans:
        mask = _finite_mask(out, ("x", "y", "z"))
        if mask is not None:
            out = out[mask]
    return out


def pointcloud2_to_xyz(msg: Any, *, remove_nans: bool = True) -> npt.NDArray[np.float32]:
    """Fast path: ``(N, 3)`` float32 positions (metres, ``msg.header.frame_id``).

    One strided copy per coordinate straight out of the message buffer (a single copy
    when x, y, z are consecutive float32, as in every common driver layout). With
    ``remove_nans`` a point is dropped when a coordinate is not finite after the cast to
    float32.

    Raises:
        ConversionError: as :func:`pointcloud2_to_array`, or a missing / multi-count x, y, z.
    """
    view, dtype, buf = _cloud_view(msg)
    assert dtype.fields is not None
    missing = [n for n in ("x", "y", "z") if n not in dtype.fields]
    if missing:
        raise ConversionError(f"PointCloud2 lacks field(s) {missing} for xyz; fields: "
                              f"{list(dtype.names or ())}")
    subs = [dtype.fields[n][0] for n in ("x", "y", "z")]
    if any(sub.shape for sub in subs):
        raise ConversionError(f"PointCloud2 x/y/z must have count 1, got shapes "
                              f"{[sub.shape for sub in subs]}")
    height, width = view.shape
    xyz = np.empty((height * width, 3), dtype=np.float32)  # returned: owns its memory
    out = xyz.reshape(height, width, 3)
    if view.size:
        offsets = [int(dtype.fields[n][1]) for n in ("x", "y", "z")]
        strides = (int(view.strides[0]), int(view.strides[1]))
        if (all(sub == np.dtype("<f4") for sub in subs)
                and offsets[1] == offsets[0] + 4 and offsets[2] == offsets[0] + 8):
            # copy the 12-byte xyz block of each point as one opaque item: about twice as
            # fast as a (H, W, 3) float32 strided copy
            block = np.dtype((np.void, 12))
            out.view(block)[..., 0] = np.ndarray((height, width), dtype=block, buffer=buf,
                                                 offset=offsets[0], strides=strides)
        else:
            for i, (sub, off) in enumerate(zip(subs, offsets, strict=True)):
                out[:, :, i] = np.ndarray((height, width), dtype=sub, buffer=buf,
                                          offset=off, strides=strides)
    # the whole-array check is cheap; the per-row mask (column-wise, since
    # .all(axis=1) over 3 columns is slow) only runs when something is not finite
    if remove_nans and xyz.shape[0] and not bool(np.isfinite(xyz).all()):
        fin = np.isfinite(xyz)
        xyz = xyz[fin[:, 0] & fin[:, 1] & fin[:, 2]]
    return xyz


def _pointfield_of(name: str, dtype: np.dtype[Any]) -> tuple[int, int]:
    """(datatype, count) of one structured field; rejects what PointField cannot hold."""
    base = dtype.base
    count = int(np.prod(dtype.shape)) if dtype.shape else 1
    code = _DTYPE_TO_POINTFIELD.get((base.kind, base.itemsize))
    if code is None or base.fields is not None:
        raise ConversionError(f"point field {name!r} has dtype {dtype}, which PointField "
                              f"cannot hold (supported: int8/16/32, uint8/16/32, "
                              f"float32/64)")
    if count == 0:
        raise ConversionError(f"point field {name!r} has an empty subarray shape "
                              f"{dtype.shape}")
    return code, count


def array_to_pointcloud2(points: np.ndarray, stamp_ns: int, frame_id: str,
                         factory: MessageFactory, *, is_dense: bool | None = None) -> Any:
    """Structured array -> ``sensor_msgs/msg/PointCloud2`` (little-endian).

    The array's own layout is kept: field offsets and ``itemsize`` become the PointField
    offsets and ``point_step``, so a driver-like layout with padding round-trips byte for
    byte (padding bytes are written as zeros). Fields of a non-native byte order are
    converted to little-endian.

    Args:
        points: ``(N,)`` (``height=1``) or ``(H, W)`` (organised) structured array; any
            int8/16/32, uint8/16/32, float32/64 fields, subarray fields become ``count > 1``.
        stamp_ns: header stamp, ns.
        frame_id: frame of the points.
        factory: message factory.
        is_dense: the message's ``is_dense``; None computes it (all x, y, z finite).

    Raises:
        ConversionError: not a structured 1-D/2-D array or a field of unsupported dtype
            (int64, uint64, bool, complex, object, ...), named in the message.
    """
    if not isinstance(points, np.ndarray) or points.dtype.names is None:
        raise ConversionError(f"points must be a structured numpy array, got "
                              f"{type(points).__name__} "
                              f"{getattr(points, 'dtype', '')}")
    if points.ndim not in (1, 2):
        raise ConversionError(f"points must be (N,) or (H, W), got shape {points.shape}")
    if not points.dtype.names:
        raise ConversionError("points has no fields")
    assert points.dtype.fields is not None
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    pf_fields = []
    for name in points.dtype.names:
        sub, offset = points.dtype.fields[name][:2]
        code, count = _pointfield_of(name, sub)
        base = POINTFIELD_DTYPES[code]  # little-endian
        names.append(name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(int(offset))
        pf_fields.append(factory("sensor_msgs/msg/PointField", name=name, offset=int(offset),
                                 datatype=code, count=count))
    out_dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                          "itemsize": points.dtype.itemsize})
    laid_out = np.zeros(points.shape, dtype=out_dtype)  # zeros: padding bytes are defined
    for name in names:
        laid_out[name] = points[name].reshape(laid_out[name].shape)
    height, width = (1, points.shape[0]) if points.ndim == 1 else points.shape
    if is_dense is None:
        is_dense = _finite_mask(laid_out, ("x", "y", "z")) is None
    point_step = out_dtype.itemsize
    return factory(
        "sensor_msgs/msg/PointCloud2",
        header=header(stamp_ns, frame_id, factory),
        height=int(height),
        width=int(width),
        fields=pf_fields,
        is_bigendian=False,
        point_step=int(point_step),
        row_step=int(point_step * width),
        data=laid_out.reshape(-1).view(np.uint8),
        is_dense=bool(is_dense),
    )


# --------------------------------------------------------------------------------------
# Rig-aware clouds
# --------------------------------------------------------------------------------------


def _resolve_fields(msg_names: Sequence[str], field_map: Mapping[str, str],
                    required: Sequence[str], what: str) -> dict[str, str]:
    """canonical -> message field for every key of ``field_map`` plus ``required``
    (identity when unmapped); raises with the message's field list when one is missing."""
    resolved = {key: field_map.get(key, key) for key in (*required, *field_map)}
    missing = {k: v for k, v in resolved.items() if v not in msg_names}
    if missing:
        raise ConversionError(f"{what}: field(s) {missing} (canonical -> message name) "
                              f"missing; the message has fields {list(msg_names)}")
    return resolved


def pointcloud_from_msg(
    msg: Any,
    sensor: str,
    field_map: Mapping[str, str],
    *,
    time_field: str | None = None,
    time_to_offsets: Callable[[np.ndarray, int], np.ndarray] | None = None,
    remove_nans: bool = True,
) -> PointCloud:
    """``sensor_msgs/PointCloud2`` -> :class:`PointCloud` with canonical field names.

    Args:
        msg: the cloud.
        sensor: rig sensor name.
        field_map: canonical name (``x``, ``y``, ``z``, ``intensity``, ...) -> the message's
            field name. ``x``, ``y``, ``z`` default to themselves. Unmapped message fields
            are kept under their own names.
        time_field: message field with per-point time (a canonical key of ``field_map`` is
            resolved through it); needs ``time_to_offsets``.
        time_to_offsets: ``(values, header_stamp_ns) -> (N,) int64`` offsets to the header
            stamp in ns (e.g. the rig's ``PointTimeSpec.to_offsets_ns``).
        remove_nans: drop points with non-finite x, y or z.

    Returns:
        ``PointCloud`` in ``msg.header.frame_id`` with ``(N,)`` packed structured points.

    Raises:
        ConversionError: as :func:`pointcloud2_to_array`; a mapped field missing (the text
            lists the message's fields); a name clash after renaming; bad time offsets.
    """
    if (time_field is None) != (time_to_offsets is None):
        raise ConversionError(f"time_field ({time_field!r}) and time_to_offsets "
                              f"({time_to_offsets!r}) must be given together")
    stamp_ns = stamp_to_ns(msg.header.stamp)
    view, dtype, _ = _cloud_view(msg)
    msg_names = list(dtype.names or ())
    resolved = _resolve_fields(msg_names, field_map, ("x", "y", "z"),
                               f"cloud from {sensor!r}")
    by_source: dict[str, list[str]] = {}
    for canon, src in resolved.items():
        by_source.setdefault(src, []).append(canon)
    pairs: list[tuple[str, str]] = []
    for src in msg_names:
        pairs.extend((out, src) for out in by_source.get(src, [src]))
    out_names = [out for out, _ in pairs]
    clashes = sorted({n for n in out_names if out_names.count(n) > 1})
    if clashes:
        raise ConversionError(f"cloud from {sensor!r}: field name(s) {clashes} occur twice "
                              f"after applying field_map {dict(field_map)} to message "
                              f"fields {msg_names}")
    points = _copy_fields(view, pairs, dtype, flatten=True)
    if remove_nans:
        mask = _finite_mask(points, ("x", "y", "z"))
        if mask is not None:
            points = points[mask]
    offsets = None
    if time_field is not None and time_to_offsets is not None:
        src = field_map.get(time_field, time_field)
        if src not in msg_names:
            raise ConversionError(f"cloud from {sensor!r}: time field {src!r} missing; the "
                                  f"message has fields {msg_names}")
        values = points[by_source.get(src, [src])[0]]
        offsets = np.asarray(time_to_offsets(values, stamp_ns))
        if offsets.shape != (points.shape[0],):
            raise ConversionError(f"cloud from {sensor!r}: time_to_offsets returned shape "
                                  f"{offsets.shape} for {points.shape[0]} points")
        offsets = offsets.astype(np.int64, copy=False)
    return PointCloud(sensor=sensor, stamp_ns=stamp_ns, frame_id=str(msg.header.frame_id),
                      points=points, time_offsets_ns=offsets)


def radar_scan_from_msg(msg: Any, sensor: str, field_map: Mapping[str, str], *,
                        remove_nans: bool = True) -> RadarScan:
    """Radar ``sensor_msgs/PointCloud2`` -> :class:`RadarScan`.

    Args:
        msg: the cloud.
        sensor: rig sensor name.
        field_map: canonical name -> message field. ``x``, ``y``, ``z``, ``doppler`` and
            ``rcs`` are required (each defaults to its own name when unmapped); ``vx``,
            ``vy``, ``vz`` are optional but all three or none. Every other message field
            goes to ``extra`` under its own name.
        remove_nans: drop detections with non-finite x, y, z or doppler.

    Raises:
        ConversionError: a required or mapped field missing (the text lists the message's
            fields), only some of vx/vy/vz mapped, or the errors of
            :func:`pointcloud2_to_array`.
    """
    stamp_ns = stamp_to_ns(msg.header.stamp)
    view, dtype, _ = _cloud_view(msg)
    msg_names = list(dtype.names or ())
    resolved = _resolve_fields(msg_names, field_map, ("x", "y", "z", "doppler", "rcs"),
                               f"radar scan from {sensor!r}")
    vel_keys = [k for k in ("vx", "vy", "vz") if k in resolved]
    if vel_keys and len(vel_keys) != 3:
        raise ConversionError(f"radar scan from {sensor!r}: velocity needs vx, vy and vz "
                              f"mapped, field_map has only {vel_keys}")
    flat = view.reshape(-1)  # copies only when rows are padded
    if remove_nans and flat.size:
        mask = np.ones(flat.shape, dtype=bool)
        for key in ("x", "y", "z", "doppler"):
            mask &= np.isfinite(np.asarray(flat[resolved[key]], dtype=np.float64))
        if not bool(mask.all()):
            flat = flat[mask]

    def col(key: str) -> npt.NDArray[np.float32]:
        return np.array(flat[resolved[key]], dtype=np.float32)

    xyz = np.stack([col("x"), col("y"), col("z")], axis=1) if flat.size else \
        np.zeros((0, 3), np.float32)
    velocity = (np.stack([col("vx"), col("vy"), col("vz")], axis=1) if flat.size else
                np.zeros((0, 3), np.float32)) if vel_keys else None
    used = set(resolved.values())
    extra = {name: np.array(flat[name]) for name in msg_names if name not in used}
    return RadarScan(sensor=sensor, stamp_ns=stamp_ns, frame_id=str(msg.header.frame_id),
                     xyz=xyz, doppler=col("doppler"), rcs=col("rcs"), velocity=velocity,
                     extra=extra)


def pointcloud_to_msg(cloud: PointCloud, factory: MessageFactory, *,
                      time_field: str | None = None) -> Any:
    """:class:`PointCloud` -> ``sensor_msgs/msg/PointCloud2`` (fields as in ``points``).

    Args:
        cloud: the cloud.
        factory: message factory.
        time_field: when given and ``cloud.time_offsets_ns`` is set, an int32 field of that
            name with the per-point offsets in ns is appended.

    Raises:
        ConversionError: unsupported field dtype, ``time_field`` clashing with a field or
            offsets outside the int32 range.
    """
    points = cloud.points
    if time_field is not None and cloud.time_offsets_ns is not None:
        if time_field in cloud.fields:
            raise ConversionError(f"time_field {time_field!r} already is a field of the "
                                  f"cloud: {list(cloud.fields)}")
        offs = cloud.time_offsets_ns
        if offs.size and (offs.min() < -INT32_MAX - 1 or offs.max() > INT32_MAX):
            raise ConversionError(f"time offsets [{offs.min()}, {offs.max()}] ns do not fit "
                                  f"an int32 field {time_field!r}")
        assert points.dtype.fields is not None
        layout = [(n, points.dtype.fields[n][0]) for n in cloud.fields]
        out = np.empty(points.shape, dtype=[*layout, (time_field, "<i4")])
        for name in cloud.fields:
            out[name] = points[name]
        out[time_field] = offs
        points = out
    return array_to_pointcloud2(points, cloud.stamp_ns, cloud.frame_id, factory)


_DEFAULT_RADAR_NAMES: Mapping[str, str] = MappingProxyType({"doppler": "vrad", "rcs": "rcs"})


def radar_scan_to_msg(scan: RadarScan, factory: MessageFactory,
                      field_names: Mapping[str, str] = _DEFAULT_RADAR_NAMES) -> Any:
    """:class:`RadarScan` -> ``sensor_msgs/msg/PointCloud2``.

    Fields: ``x``, ``y``, ``z``, doppler and rcs (float32, named by ``field_names``, default
    ``vrad`` / ``rcs``), ``vx``, ``vy``, ``vz`` when the scan has velocities (renamable the
    same way), then every ``extra`` field.

    Raises:
        ConversionError: duplicate output names or an extra field of unsupported dtype.
    """
    n = len(scan)
    cols: list[tuple[str, np.ndarray]] = [
        (field_names.get("x", "x"), scan.xyz[:, 0]),
        (field_names.get("y", "y"), scan.xyz[:, 1]),
        (field_names.get("z", "z"), scan.xyz[:, 2]),
        (field_names.get("doppler", "doppler"), scan.doppler),
        (field_names.get("rcs", "rcs"), scan.rcs),
    ]
    if scan.velocity is not None:
        cols += [(field_names.get(k, k), scan.velocity[:, i])
                 for i, k in enumerate(("vx", "vy", "vz"))]
    cols += list(scan.extra.items())
    names = [name for name, _ in cols]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ConversionError(f"radar scan from {scan.sensor!r}: output field name(s) "
                              f"{clashes} occur twice in {names}")
    points = np.empty((n,), dtype=[(name, val.dtype, val.shape[1:]) for name, val in cols])
    for name, val in cols:
        points[name] = val
    return array_to_pointcloud2(points, scan.stamp_ns, scan.frame_id, factory)
