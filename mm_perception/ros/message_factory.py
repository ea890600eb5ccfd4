"""Message factories, time and header helpers shared by the ROS conversions.

A :class:`MessageFactory` builds a message from a type name and *all* its fields:
:class:`RosbagsFactory` (bags, tests, no ROS needed) or :class:`RclpyFactory` (publishing).
"""

from __future__ import annotations

import array
import importlib
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConversionError

NS_PER_S = 1_000_000_000
INT32_MAX = 2**31 - 1

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
    if not 0 <= nanosec < NS_PER_S:
        raise ConversionError(f"stamp nanosec must be in [0, 1e9), got sec={sec} "
                              f"nanosec={nanosec}")
    return sec * NS_PER_S + nanosec


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
    sec, nanosec = divmod(ns, NS_PER_S)
    if sec > INT32_MAX:
        raise ConversionError(f"stamp {ns} ns is past the int32 seconds range of "
                              f"builtin_interfaces/Time")
    return factory("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)


def header(stamp_ns: int, frame_id: str, factory: MessageFactory) -> Any:
    """``std_msgs/msg/Header`` with the stamp (ns) and frame id."""
    return factory("std_msgs/msg/Header", stamp=ns_to_stamp(stamp_ns, factory),
                   frame_id=str(frame_id))


def byte_buffer(data: Any, what: str) -> npt.NDArray[np.uint8]:
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


def as_uint(value: Any, name: str, what: str) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"{what} {name} is not an integer: {value!r}") from exc
    if out < 0:
        raise ConversionError(f"{what} {name} must be >= 0, got {out}")
    return out
