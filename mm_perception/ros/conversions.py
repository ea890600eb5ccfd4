"""ROS message <-> core type conversions (duck-typed, no ROS import at module import time).

The functions read any object that has the fields of the ROS message (rclpy messages in a
live node, ``rosbags`` dataclasses from a bag or a test), so this module imports neither
``rclpy`` nor message packages. Messages are *built* through a :class:`MessageFactory`
(:class:`RosbagsFactory` for bags and tests, :class:`RclpyFactory` for publishing), and the
conversion code always passes every field of each message it builds, because ``rosbags``
dataclasses have no defaults.

Byte buffers (``uint8[]`` fields) arrive as ``np.ndarray`` (rosbags), ``array.array('B')``
(rclpy), ``bytes`` or ``memoryview``; all of them are read with ``np.frombuffer`` (no copy)
and every array handed back owns its memory, because the message buffer is not ours.

Every problem with a message raises :class:`~mm_perception.core.errors.ConversionError`
with the offending values in the text.
"""

from __future__ import annotations

import array
import importlib
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConversionError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import (
    IMAGE_ENCODINGS,
    CameraFrame,
    EgoState,
    PointCloud,
    RadarScan,
)
from mm_perception.ros.camera_info import camera_info_from_model, camera_model_from_camera_info

if TYPE_CHECKING:
    from mm_perception.core.camera import CameraModel

_NS_PER_S = 1_000_000_000
_INT32_MAX = 2**31 - 1


# --------------------------------------------------------------------------------------
# Message factories
# --------------------------------------------------------------------------------------


class MessageFactory(Protocol):
    """Builds a message of a ROS type from keyword fields.

    ``typename`` is the full ROS 2 name, e.g. ``"sensor_msgs/msg/PointCloud2"``. Array
    fields are passed as ``np.ndarray`` (``uint8`` for byte buffers, ``float64`` for
    covariance / camera matrices); nested messages are built with the same factory.
    """

    def __call__(self, typename: str, /, **fields: Any) -> Any: ...


class RosbagsFactory:
    """Builds ``rosbags`` message dataclasses from a type store.

    Args:
        typestore: a ``rosbags.typesys`` type store; default ``Stores.ROS2_KILTED``.
    """

    def __init__(self, typestore: Any | None = None) -> None:
        if typestore is None:
            from rosbags.typesys import Stores, get_typestore

            typestore = get_typestore(Stores.ROS2_KILTED)
        self.typestore = typestore

    def __call__(self, typename: str, /, **fields: Any) -> Any:
        cls = self.typestore.types.get(typename)
        if cls is None:
            raise ConversionError(f"message type {typename!r} is not in the rosbags type store")
        try:
            return cls(**fields)
        except TypeError as exc:  # missing or unknown field names
            raise ConversionError(f"cannot build {typename} from fields {sorted(fields)}: "
                                  f"{exc}") from exc


#: IDL element type -> (array.array typecode, numpy dtype) for rclpy array fields
_IDL_ARRAY_TYPES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "uint8": ("B", "u1"), "octet": ("B", "u1"), "byte": ("B", "u1"), "int8": ("b", "i1"),
    "uint16": ("H", "u2"), "int16": ("h", "i2"), "uint32": ("I", "u4"), "int32": ("i", "i4"),
    "uint64": ("Q", "u8"), "int64": ("q", "i8"), "float": ("f", "f4"), "double": ("d", "f8"),
})
_SEQUENCE_RE = re.compile(r"^sequence<(\w+)(?:,\s*\d+)?>$")
_FIXED_ARRAY_RE = re.compile(r"^(\w+)\[(\d+)\]$")


class RclpyFactory:
    """Builds rclpy messages; imports ``<package>.msg`` lazily on first use of a type.

    ``np.ndarray`` (and ``bytes``) values are turned into what the generated rclpy setters
    take without a per-element Python check: ``array.array`` (filled with ``frombytes``,
    one ``memcpy``) for ``sequence<T>`` fields such as ``PointCloud2.data`` and
    ``CameraInfo.d``, and a numpy array of the exact dtype for fixed arrays such as
    ``CameraInfo.k`` or covariances. Array fields are set after construction, because the
    generated ``__init__`` would copy them once more. numpy scalars become Python scalars
    (rclpy's type assertions reject ``np.float32``).
    """

    def __init__(self) -> None:
        self._classes: dict[str, tuple[type, Mapping[str, str]]] = {}

    def _lookup(self, typename: str) -> tuple[type, Mapping[str, str]]:
        cached = self._classes.get(typename)
        if cached is not None:
            return cached
        parts = typename.split("/")
        if len(parts) != 3:
            raise ConversionError(f"message type {typename!r} is not of the form pkg/msg/Name")
        pkg, sub, name = parts
        try:
            module = importlib.import_module(f"{pkg}.{sub}")
            cls = getattr(module, name)
        except (ImportError, AttributeError) as exc:
            raise ConversionError(f"cannot build {typename}: the rclpy message package "
                                  f"{pkg!r} is not importable or lacks {name!r} ({exc})") from exc
        entry = (cls, dict(cls.get_fields_and_field_types()))
        self._classes[typename] = entry
        return entry

    def __call__(self, typename: str, /, **fields: Any) -> Any:
        cls, field_types = self._lookup(typename)
        unknown = sorted(set(fields) - set(field_types))
        if unknown:
            raise ConversionError(f"{typename} has no field(s) {unknown}; "
                                  f"fields: {sorted(field_types)}")
        plain: dict[str, Any] = {}
        arrays: dict[str, Any] = {}
        for key, value in fields.items():
            if isinstance(value, np.ndarray | bytes | bytearray | memoryview):
                arrays[key] = _rclpy_array(value, field_types[key], typename, key)
            elif isinstance(value, np.generic):
                plain[key] = value.item()
            else:
                plain[key] = value
        msg = cls(**plain)
        for key, value in arrays.items():
            setattr(msg, key, value)
        return msg


def _rclpy_array(value: Any, idl_type: str, typename: str, key: str) -> Any:
    seq = _SEQUENCE_RE.match(idl_type)
    fixed = _FIXED_ARRAY_RE.match(idl_type)
    elem = seq.group(1) if seq else fixed.group(1) if fixed else None
    if elem is None or elem not in _IDL_ARRAY_TYPES:
        raise ConversionError(f"{typename}.{key} has type {idl_type!r}; an array value "
                              f"cannot be assigned to it")
    typecode, np_dtype = _IDL_ARRAY_TYPES[elem]
    arr = np.ascontiguousarray(
        np.frombuffer(value, np.uint8) if not isinstance(value, np.ndarray) else value,
        dtype=np.dtype(np_dtype).newbyteorder("="),
    ).reshape(-1)
    if fixed is not None:
        size = int(fixed.group(2))
        if arr.size != size:
            raise ConversionError(f"{typename}.{key} needs {size} values, got {arr.size}")
        return arr
    out = array.array(typecode)
    out.frombytes(arr.view(np.uint8).data)  # a "B" memoryview: frombytes rejects "d"
    return out


# --------------------------------------------------------------------------------------
# Time and header
# --------------------------------------------------------------------------------------


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (``sec``, ``nanosec``) -> int nanoseconds.

    Raises:
        ConversionError: negative ``sec`` or ``nanosec`` outside ``[0, 1e9)``.
    """
    try:
        sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ConversionError(f"stamp {stamp!r} has no integer sec/nanosec") from exc
    if sec < 0:
        raise ConversionError(f"stamp sec must be >= 0, got sec={sec} nanosec={nanosec}")
    if not 0 <= nanosec < _NS_PER_S:
        raise ConversionError(f"stamp nanosec must be in [0, 1e9), got sec={sec} "
                              f"nanosec={nanosec}")
    return sec * _NS_PER_S + nanosec


def ns_to_stamp(ns: int, factory: MessageFactory) -> Any:
    """int nanoseconds -> ``builtin_interfaces/msg/Time`` built by ``factory``.

    Raises:
        ConversionError: ``ns`` negative, not an integer, or past the int32 seconds range.
    """
    if isinstance(ns, bool) or not isinstance(ns, int | np.integer):
        raise ConversionError(f"stamp must be int nanoseconds, got {type(ns).__name__} {ns!r}")
    ns = int(ns)
    if ns < 0:
        raise ConversionError(f"stamp must be >= 0 ns, got {ns}")
    sec, nanosec = divmod(ns, _NS_PER_S)
    if sec > _INT32_MAX:
        raise ConversionError(f"stamp {ns} ns is past the int32 seconds range of "
                              f"builtin_interfaces/Time")
    return factory("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)


def header(stamp_ns: int, frame_id: str, factory: MessageFactory) -> Any:
    """``std_msgs/msg/Header`` with the stamp (ns) and frame id."""
    return factory("std_msgs/msg/Header", stamp=ns_to_stamp(stamp_ns, factory),
                   frame_id=str(frame_id))


def _byte_buffer(data: Any, what: str) -> npt.NDArray[np.uint8]:
    """``(n,)`` uint8 view of a message byte field (ndarray / array.array / bytes)."""
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1:
        return data
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        pass
    try:  # a plain list of ints (e.g. a message built by hand)
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConversionError(f"{what} data of type {type(data).__name__} is not a byte "
                              f"buffer") from exc


def _as_uint(value: Any, name: str, what: str) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"{what} {name} is not an integer: {value!r}") from exc
    if out < 0:
        raise ConversionError(f"{what} {name} must be >= 0, got {out}")
    return out


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
    step = _as_uint(point_step, "point_step", "PointCloud2")
    if len(fields) == 0:
        raise ConversionError("PointCloud2 has no fields")
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    spans: list[tuple[int, int, str]] = []
    for f in fields:
        name = str(f.name)
        offset = _as_uint(f.offset, f"field {name!r} offset", "PointCloud2")
        count = _as_uint(f.count, f"field {name!r} count", "PointCloud2")
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
    height = _as_uint(msg.height, "height", "PointCloud2")
    width = _as_uint(msg.width, "width", "PointCloud2")
    point_step = _as_uint(msg.point_step, "point_step", "PointCloud2")
    row_step = _as_uint(msg.row_step, "row_step", "PointCloud2")
    dtype = pointcloud2_dtype(list(msg.fields), point_step)
    if row_step < width * point_step:
        raise ConversionError(f"PointCloud2 row_step = {row_step} is smaller than "
                              f"width*point_step = {width}*{point_step} = "
                              f"{width * point_step}")
    buf = _byte_buffer(msg.data, "PointCloud2")
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
        if offs.size and (offs.min() < -_INT32_MAX - 1 or offs.max() > _INT32_MAX):
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


# --------------------------------------------------------------------------------------
# Image / CompressedImage
# --------------------------------------------------------------------------------------

#: encodings read as another name (cv_bridge treats nC3 / nC4 as BGR / BGRA)
IMAGE_ENCODING_ALIASES: Mapping[str, str] = MappingProxyType({
    "8UC1": "mono8", "8UC3": "bgr8", "8UC4": "bgra8",
})


def _canonical_encoding(encoding: str) -> str:
    enc = IMAGE_ENCODING_ALIASES.get(encoding, encoding)
    if enc not in IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported image encoding {encoding!r}; supported: "
                              f"{sorted([*IMAGE_ENCODINGS, *IMAGE_ENCODING_ALIASES])}")
    return enc


def image_to_array(msg: Any) -> tuple[np.ndarray, str]:
    """``sensor_msgs/Image`` -> (image, encoding).

    Returns:
        ``(H, W, C)`` (colour) or ``(H, W)`` (mono / depth) C-contiguous array owning its
        memory, native byte order, dtype per :data:`~mm_perception.core.types.IMAGE_ENCODINGS`;
        and the encoding (aliases ``8UC1``/``8UC3``/``8UC4`` become ``mono8``/``bgr8``/
        ``bgra8``).

    Raises:
        ConversionError: unknown encoding (named, with the supported list), ``step`` smaller
            than ``width * bytes_per_pixel``, or data size not ``step * height``.
    """
    encoding = _canonical_encoding(str(msg.encoding))
    dtype, channels = IMAGE_ENCODINGS[encoding]
    height = _as_uint(msg.height, "height", "Image")
    width = _as_uint(msg.width, "width", "Image")
    step = _as_uint(msg.step, "step", "Image")
    pixel = dtype.itemsize * channels
    if step < width * pixel:
        raise ConversionError(f"Image step = {step} is smaller than width*bytes_per_pixel "
                              f"= {width}*{pixel} = {width * pixel} ({encoding})")
    buf = _byte_buffer(msg.data, "Image")
    if buf.size != step * height:
        raise ConversionError(f"Image data has {buf.size} bytes but step*height = "
                              f"{step}*{height} = {step * height} ({encoding} {width}x{height})")
    src_dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<") \
        if dtype.itemsize > 1 else dtype
    shape: tuple[int, ...] = (height, width, channels)
    strides: tuple[int, ...] = (step, pixel, dtype.itemsize)
    if height * width == 0:
        view = np.empty(shape, dtype=src_dtype)
    else:
        view = np.ndarray(shape, dtype=src_dtype, buffer=buf, strides=strides)
    if channels == 1:
        view = view[:, :, 0]
    return np.array(view, dtype=dtype.newbyteorder("="), order="C", copy=True), encoding


def _check_image_array(arr: np.ndarray, encoding: str) -> tuple[str, np.dtype[Any], int]:
    enc = _canonical_encoding(encoding)
    dtype, channels = IMAGE_ENCODINGS[enc]
    if not isinstance(arr, np.ndarray):
        raise ConversionError(f"image must be a numpy array, got {type(arr).__name__}")
    if arr.dtype.kind != dtype.kind or arr.dtype.itemsize != dtype.itemsize:
        raise ConversionError(f"image dtype {arr.dtype} does not match encoding "
                              f"{encoding!r} ({dtype})")
    ok = (arr.ndim == 2 and channels == 1) or (arr.ndim == 3 and arr.shape[2] == channels)
    if not ok:
        raise ConversionError(f"image shape {arr.shape} does not match encoding {encoding!r} "
                              f"({channels} channel(s): "
                              f"{'(H, W)' if channels == 1 else f'(H, W, {channels})'})")
    return enc, dtype, channels


def array_to_image(arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str,
                   factory: MessageFactory) -> Any:
    """Image array -> ``sensor_msgs/msg/Image`` (little-endian, no row padding).

    Args:
        arr: ``(H, W)`` or ``(H, W, C)`` with the dtype of ``encoding`` (no implicit cast).
        encoding: one of :data:`IMAGE_ENCODINGS` (or an alias), written as given.

    Raises:
        ConversionError: unknown encoding, or dtype / shape not matching it.
    """
    _, dtype, channels = _check_image_array(arr, encoding)
    height, width = int(arr.shape[0]), int(arr.shape[1])
    data = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<"))
    return factory(
        "sensor_msgs/msg/Image",
        header=header(stamp_ns, frame_id, factory),
        height=height,
        width=width,
        encoding=str(encoding),
        is_bigendian=0,
        step=width * dtype.itemsize * channels,
        data=data.reshape(-1).view(np.uint8),
    )


def _compressed_codec(fmt: str) -> str:
    """Codec (``jpeg`` / ``png``) of a CompressedImage ``format`` string.

    Accepts ``"jpeg"``, ``"png"`` and image_transport's ``"<enc>; jpeg compressed <enc>"``.
    """
    text = fmt.strip().lower()
    if "compresseddepth" in text:
        raise ConversionError(f"CompressedImage format {fmt!r} (compressedDepth) is not "
                              f"supported; supported: jpeg, png")
    if ";" in text:
        text = text.split(";", 1)[1].strip()
    codec = text.split()[0] if text else ""
    codec = {"jpg": "jpeg"}.get(codec, codec)
    if codec not in ("jpeg", "png"):
        raise ConversionError(f"CompressedImage format {fmt!r} is not supported; supported: "
                              f"'jpeg', 'png' or '<encoding>; jpeg|png compressed <encoding>'")
    return codec


def compressed_to_array(msg: Any) -> tuple[np.ndarray, str]:
    """``sensor_msgs/CompressedImage`` (jpeg / png) -> (image, encoding).

    Returns:
        Colour as ``(H, W, 3)`` uint8 ``rgb8`` (``(H, W, 4)`` ``rgba8`` for a png with
        alpha), grey as ``(H, W)`` ``mono8``, 16-bit grey png as ``(H, W)`` ``mono16``.

    Raises:
        ConversionError: unsupported format, empty or corrupt data, or a decoded layout
            with no matching encoding (e.g. 16-bit colour).
    """
    import cv2

    fmt = str(msg.format)
    codec = _compressed_codec(fmt)
    buf = _byte_buffer(msg.data, "CompressedImage")
    if buf.size == 0:
        raise ConversionError(f"CompressedImage ({fmt!r}) has no data")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ConversionError(f"CompressedImage data ({buf.size} bytes, format {fmt!r}) "
                              f"could not be decoded as {codec}: corrupt or wrong format")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2 and img.dtype == np.uint8:
        return np.ascontiguousarray(img), "mono8"
    if img.ndim == 2 and img.dtype == np.uint16:
        return np.ascontiguousarray(img), "mono16"
    if img.ndim == 3 and img.dtype == np.uint8 and img.shape[2] == 3:
        return np.ascontiguousarray(img[:, :, ::-1]), "rgb8"
    if img.ndim == 3 and img.dtype == np.uint8 and img.shape[2] == 4:
        return np.ascontiguousarray(img[:, :, [2, 1, 0, 3]]), "rgba8"
    raise ConversionError(f"CompressedImage ({fmt!r}) decoded to shape {img.shape} dtype "
                          f"{img.dtype}, which has no supported encoding")


def array_to_compressed(arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str,
                        factory: MessageFactory, fmt: str = "jpeg",
                        jpeg_quality: int = 90) -> Any:
    """Image array -> ``sensor_msgs/msg/CompressedImage`` (format as image_transport writes).

    Args:
        arr: image matching ``encoding`` (rgb8, bgr8, mono8; rgba8, bgra8, mono16, 16UC1
            only with png).
        fmt: ``"jpeg"`` or ``"png"``.
        jpeg_quality: 0..100.

    Raises:
        ConversionError: bad fmt / quality, an encoding the codec cannot store (alpha or
            16-bit in jpeg, 32FC1), or dtype / shape not matching ``encoding``.
    """
    import cv2

    if fmt not in ("jpeg", "png"):
        raise ConversionError(f"compressed fmt must be 'jpeg' or 'png', got {fmt!r}")
    if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, int) \
            or not 0 <= jpeg_quality <= 100:
        raise ConversionError(f"jpeg_quality must be an int in [0, 100], got {jpeg_quality!r}")
    enc, _, _ = _check_image_array(arr, encoding)
    to_cv: dict[str, tuple[Any, str]] = {
        "rgb8": (lambda a: a[:, :, ::-1], "bgr8"),
        "bgr8": (lambda a: a, "bgr8"),
        "mono8": (lambda a: a, "mono8"),
        "rgba8": (lambda a: a[:, :, [2, 1, 0, 3]], "bgra8"),
        "bgra8": (lambda a: a, "bgra8"),
        "mono16": (lambda a: a, "mono16"),
        "16UC1": (lambda a: a, "mono16"),
    }
    if enc not in to_cv or (fmt == "jpeg" and enc in ("rgba8", "bgra8", "mono16", "16UC1")):
        raise ConversionError(f"encoding {encoding!r} cannot be stored as {fmt}")
    convert, target = to_cv[enc]
    image = np.ascontiguousarray(convert(arr))
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", image, params)
    if not ok:
        raise ConversionError(f"OpenCV could not encode a {image.shape} {image.dtype} image "
                              f"as {fmt}")
    return factory(
        "sensor_msgs/msg/CompressedImage",
        header=header(stamp_ns, frame_id, factory),
        format=f"{encoding}; {fmt} compressed {target}",
        data=np.asarray(encoded, dtype=np.uint8).reshape(-1),
    )


def camera_frame_from_msg(msg: Any, sensor: str,
                          camera: CameraModel | None = None) -> CameraFrame:
    """``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` -> :class:`CameraFrame`.

    The two are told apart by their fields (``format`` vs ``encoding``).

    Raises:
        ConversionError: neither kind of message, or the errors of :func:`image_to_array` /
            :func:`compressed_to_array`.
    """
    if hasattr(msg, "format"):
        image, encoding = compressed_to_array(msg)
    elif hasattr(msg, "encoding"):
        image, encoding = image_to_array(msg)
    else:
        raise ConversionError(f"{type(msg).__name__} is neither an Image (encoding) nor a "
                              f"CompressedImage (format)")
    return CameraFrame(sensor=sensor, stamp_ns=stamp_to_ns(msg.header.stamp),
                       frame_id=str(msg.header.frame_id), image=image, encoding=encoding,
                       camera=camera)


# --------------------------------------------------------------------------------------
# Odometry and TF
# --------------------------------------------------------------------------------------


def _vec(obj: Any, names: str, what: str) -> npt.NDArray[np.float64]:
    try:
        out = np.array([float(getattr(obj, n)) for n in names], dtype=np.float64)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ConversionError(f"{what} has no numeric {', '.join(names)}: {obj!r}") from exc
    if not np.all(np.isfinite(out)):
        values = dict(zip(names, out.tolist(), strict=True))
        raise ConversionError(f"{what} is not finite: {values}")
    return out


def _se3(translation: npt.NDArray[np.float64], quat: npt.NDArray[np.float64],
         what: str) -> SE3:
    norm = float(np.linalg.norm(quat))
    if norm < 1e-6:
        raise ConversionError(f"{what} orientation quaternion (x, y, z, w) = "
                              f"{quat.tolist()} has zero norm")
    return SE3.from_quaternion(quat / norm, translation)


def _covariance(values: Any, what: str) -> npt.NDArray[np.float64]:
    cov = np.asarray(values, dtype=np.float64).reshape(-1)
    if cov.size != 36:
        raise ConversionError(f"{what} covariance has {cov.size} values, expected 36")
    return cov.reshape(6, 6).copy()


def ego_state_from_odometry(msg: Any) -> EgoState:
    """``nav_msgs/Odometry`` -> :class:`EgoState`.

    Pose is ``T_world_base`` (``header.frame_id`` <- ``child_frame_id``); the twist is in
    the child (body) frame, as nav_msgs defines it. Covariances (36, row-major) become
    ``(6, 6)``.

    Raises:
        ConversionError: NaN / Inf in pose or twist, zero quaternion, bad stamp.
    """
    pose = msg.pose.pose
    twist = msg.twist.twist
    position = _vec(pose.position, "xyz", "Odometry pose.position")
    quat = _vec(pose.orientation, "xyzw", "Odometry pose.orientation")
    return EgoState(
        stamp_ns=stamp_to_ns(msg.header.stamp),
        frame_id=str(msg.header.frame_id),
        child_frame_id=str(msg.child_frame_id),
        pose=_se3(position, quat, "Odometry pose"),
        linear_velocity=_vec(twist.linear, "xyz", "Odometry twist.linear"),
        angular_velocity=_vec(twist.angular, "xyz", "Odometry twist.angular"),
        pose_covariance=_covariance(msg.pose.covariance, "Odometry pose"),
        twist_covariance=_covariance(msg.twist.covariance, "Odometry twist"),
    )


def _vector3(values: Any, typename: str, factory: MessageFactory) -> Any:
    x, y, z = (float(v) for v in values)
    return factory(typename, x=x, y=y, z=z)


def _quaternion(transform: SE3, factory: MessageFactory) -> Any:
    x, y, z, w = (float(v) for v in transform.quaternion())
    return factory("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w)


def odometry_from_ego_state(state: EgoState, factory: MessageFactory) -> Any:
    """:class:`EgoState` -> ``nav_msgs/msg/Odometry`` (covariance None -> zeros)."""
    pose_cov = np.zeros(36) if state.pose_covariance is None else \
        np.asarray(state.pose_covariance, dtype=np.float64).reshape(36)
    twist_cov = np.zeros(36) if state.twist_covariance is None else \
        np.asarray(state.twist_covariance, dtype=np.float64).reshape(36)
    pose = factory("geometry_msgs/msg/Pose",
                   position=_vector3(state.pose.translation, "geometry_msgs/msg/Point", factory),
                   orientation=_quaternion(state.pose, factory))
    twist = factory("geometry_msgs/msg/Twist",
                    linear=_vector3(state.linear_velocity, "geometry_msgs/msg/Vector3", factory),
                    angular=_vector3(state.angular_velocity, "geometry_msgs/msg/Vector3",
                                     factory))
    return factory(
        "nav_msgs/msg/Odometry",
        header=header(state.stamp_ns, state.frame_id, factory),
        child_frame_id=str(state.child_frame_id),
        pose=factory("geometry_msgs/msg/PoseWithCovariance", pose=pose,
                     covariance=np.ascontiguousarray(pose_cov)),
        twist=factory("geometry_msgs/msg/TwistWithCovariance", twist=twist,
                      covariance=np.ascontiguousarray(twist_cov)),
    )


def transforms_from_tf_message(msg: Any) -> list[tuple[str, str, int, SE3]]:
    """``tf2_msgs/TFMessage`` -> ``[(parent, child, stamp_ns, T_parent_child), ...]``.

    Raises:
        ConversionError: NaN / Inf, zero quaternion or bad stamp in any transform (the
            text names parent and child).
    """
    out = []
    for ts in msg.transforms:
        parent, child = str(ts.header.frame_id), str(ts.child_frame_id)
        what = f"transform {parent!r} -> {child!r}"
        trans = _vec(ts.transform.translation, "xyz", f"{what} translation")
        quat = _vec(ts.transform.rotation, "xyzw", f"{what} rotation")
        out.append((parent, child, stamp_to_ns(ts.header.stamp), _se3(trans, quat, what)))
    return out


def tf_message(transforms: Sequence[tuple[str, str, int, SE3]],
               factory: MessageFactory) -> Any:
    """``[(parent, child, stamp_ns, T_parent_child), ...]`` -> ``tf2_msgs/msg/TFMessage``."""
    items = []
    for parent, child, stamp_ns, transform in transforms:
        tf = factory("geometry_msgs/msg/Transform",
                     translation=_vector3(transform.translation, "geometry_msgs/msg/Vector3",
                                          factory),
                     rotation=_quaternion(transform, factory))
        items.append(factory("geometry_msgs/msg/TransformStamped",
                             header=header(stamp_ns, parent, factory),
                             child_frame_id=str(child), transform=tf))
    return factory("tf2_msgs/msg/TFMessage", transforms=items)


__all__ = [
    "IMAGE_ENCODING_ALIASES",
    "POINTFIELD_DTYPES",
    "MessageFactory",
    "RclpyFactory",
    "RosbagsFactory",
    "array_to_compressed",
    "array_to_image",
    "array_to_pointcloud2",
    "camera_frame_from_msg",
    "camera_info_from_model",
    "camera_model_from_camera_info",
    "compressed_to_array",
    "ego_state_from_odometry",
    "header",
    "image_to_array",
    "ns_to_stamp",
    "odometry_from_ego_state",
    "pointcloud2_dtype",
    "pointcloud2_to_array",
    "pointcloud2_to_xyz",
    "pointcloud_from_msg",
    "pointcloud_to_msg",
    "radar_scan_from_msg",
    "radar_scan_to_msg",
    "stamp_to_ns",
    "tf_message",
    "transforms_from_tf_message",
]
