"""Tests of mm_perception.ros.conversions (no ROS needed except the RclpyFactory tests).

References are independent of the code under test: byte slicing of hand-made buffers,
``struct.pack``/``struct.unpack_from``, OpenCV's own codecs, and CDR (de)serialisation by
the ``rosbags`` type store (and rclpy's serialiser where rclpy is installed).
"""

from __future__ import annotations

import array
import importlib.util
import math
import struct
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConversionError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import IMAGE_ENCODINGS, EgoState, PointCloud, RadarScan
from mm_perception.ros import conversions as conv
from mm_perception.ros.conversions import (
    POINTFIELD_DTYPES,
    RosbagsFactory,
    array_to_compressed,
    array_to_image,
    array_to_pointcloud2,
    camera_frame_from_msg,
    compressed_to_array,
    ego_state_from_odometry,
    header,
    image_to_array,
    ns_to_stamp,
    odometry_from_ego_state,
    pointcloud2_dtype,
    pointcloud2_to_array,
    pointcloud2_to_xyz,
    pointcloud_from_msg,
    pointcloud_to_msg,
    radar_scan_from_msg,
    radar_scan_to_msg,
    stamp_to_ns,
    tf_message,
    transforms_from_tf_message,
)

FACTORY = RosbagsFactory()
TS = FACTORY.typestore
PC2 = "sensor_msgs/msg/PointCloud2"
STRUCT_CHAR = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
SIZE = {code: dt.itemsize for code, dt in POINTFIELD_DTYPES.items()}
HYP = settings(max_examples=100, deadline=None,
               suppress_health_check=[HealthCheck.too_slow])


def cdr(msg: Any, typename: str) -> Any:
    """Serialise to CDR and back with the rosbags type store."""
    return TS.deserialize_cdr(TS.serialize_cdr(msg, typename), typename)


def pf(name: str, offset: int, datatype: int, count: int = 1) -> Any:
    return FACTORY("sensor_msgs/msg/PointField", name=name, offset=offset,
                   datatype=datatype, count=count)


def cloud_msg(fields: list[Any], point_step: int, data: bytes | np.ndarray, *,
              height: int = 1, width: int | None = None, row_step: int | None = None,
              is_bigendian: bool = False, stamp_ns: int = 1_500_000_000,
              frame_id: str = "lidar") -> Any:
    """A rosbags PointCloud2 around a hand-made byte buffer."""
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    if width is None:
        width = buf.size // point_step // max(height, 1)
    if row_step is None:
        row_step = width * point_step
    return FACTORY(PC2, header=header(stamp_ns, frame_id, FACTORY), height=height,
                   width=width, fields=fields, is_bigendian=is_bigendian,
                   point_step=point_step, row_step=row_step, data=buf, is_dense=False)


# ------------------------------------------------------------------ module hygiene


def test_module_import_does_not_import_ros() -> None:
    code = ("import sys\n"
            "import mm_perception.ros.conversions\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'sensor_msgs', 'std_msgs', 'nav_msgs', 'geometry_msgs', 'cv2', "
            "'rosbags')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ time


def test_stamp_conversions() -> None:
    stamp = SimpleNamespace(sec=12, nanosec=345_678_901)
    assert stamp_to_ns(stamp) == 12_345_678_901
    msg = ns_to_stamp(12_345_678_901, FACTORY)
    assert (msg.sec, msg.nanosec) == (12, 345_678_901)
    assert stamp_to_ns(cdr(header(7, "f", FACTORY), "std_msgs/msg/Header").stamp) == 7
    with pytest.raises(ConversionError, match="sec must be >= 0"):
        stamp_to_ns(SimpleNamespace(sec=-1, nanosec=0))
    with pytest.raises(ConversionError, match="nanosec=1000000000"):
        stamp_to_ns(SimpleNamespace(sec=1, nanosec=1_000_000_000))
    with pytest.raises(ConversionError, match="-5"):
        ns_to_stamp(-5, FACTORY)
    with pytest.raises(ConversionError, match="int32"):
        ns_to_stamp(2**31 * 1_000_000_000, FACTORY)
    with pytest.raises(ConversionError, match="int nanoseconds"):
        ns_to_stamp(1.5, FACTORY)  # type: ignore[arg-type]


def test_rosbags_factory_errors() -> None:
    with pytest.raises(ConversionError, match="not in the rosbags type store"):
        FACTORY("foo_msgs/msg/Bar", x=1)
    with pytest.raises(ConversionError, match="builtin_interfaces/msg/Time"):
        FACTORY("builtin_interfaces/msg/Time", sec=1)  # nanosec missing


# ------------------------------------------------------------------ PointCloud2 layouts


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[tuple[str, int, int, int]], int]:
    """Random fields (name, offset, datatype, count) with gaps, listed in random order,
    and a point_step with trailing padding."""
    n_fields = draw(st.integers(1, 5))
    fields = []
    offset = 0
    for i in range(n_fields):
        offset += draw(st.integers(0, 5))  # padding, possibly unaligned
        datatype = draw(st.integers(1, 8))
        count = draw(st.integers(1, 3))
        fields.append((f"f{i}", offset, datatype, count))
        offset += SIZE[datatype] * count
    point_step = offset + draw(st.integers(0, 7))
    order = draw(st.permutations(range(n_fields)))
    return [fields[i] for i in order], point_step


@HYP
@given(layout=layouts(), height=st.integers(1, 4), width=st.integers(0, 6),
       row_pad=st.integers(0, 9), seed=st.integers(0, 2**32 - 1))
def test_pointcloud2_decode_matches_byte_slices(
        layout: tuple[list[tuple[str, int, int, int]], int], height: int, width: int,
        row_pad: int, seed: int) -> None:
    fields, point_step = layout
    row_step = width * point_step + row_pad
    data = np.random.default_rng(seed).integers(0, 256, row_step * height, np.uint8).tobytes()
    msg = cloud_msg([pf(*f) for f in fields], point_step, data, height=height, width=width,
                    row_step=row_step)
    out = pointcloud2_to_array(cdr(msg, PC2), remove_nans=False, organized=True)
    assert out.shape == (height, width)
    assert out.flags.owndata
    assert out.dtype.itemsize == sum(SIZE[d] * c for _, _, d, c in fields)  # packed
    for name, offset, datatype, count in fields:
        field_dtype = out.dtype.fields[name][0]  # type: ignore[index]
        assert field_dtype.base == POINTFIELD_DTYPES[datatype]
        assert field_dtype.shape == (() if count == 1 else (count,))
        for r in range(height):
            for c in range(width):
                start = r * row_step + c * point_step + offset
                assert out[name][r, c].tobytes() == data[start:start + SIZE[datatype] * count]
    flat = pointcloud2_to_array(msg, remove_nans=False)
    assert flat.shape == (height * width,) and flat.base is None
    assert flat.tobytes() == out.tobytes()


@st.composite
def structured_points(draw: st.DrawFn) -> np.ndarray:
    """Random structured (N,) or (H, W) arrays over all PointField types, count 1..3."""
    fields, _ = draw(layouts())
    dtype = np.dtype([(name, POINTFIELD_DTYPES[d].newbyteorder(draw(st.sampled_from("<>"))),
                       (c,)) if c > 1 else
                      (name, POINTFIELD_DTYPES[d].newbyteorder(draw(st.sampled_from("<>"))))
                      for name, _, d, c in fields])
    if draw(st.booleans()):
        shape: tuple[int, ...] = (draw(st.integers(0, 40)),)
    else:
        shape = (draw(st.integers(1, 4)), draw(st.integers(1, 5)))
    n_bytes = int(np.prod(shape)) * dtype.itemsize
    seed = draw(st.integers(0, 2**32 - 1))
    raw = np.random.default_rng(seed).integers(0, 256, n_bytes, np.uint8)
    return raw.view(dtype).reshape(shape)


@HYP
@given(points=structured_points())
def test_pointcloud2_encode_roundtrip_through_cdr(points: np.ndarray) -> None:
    msg = cdr(array_to_pointcloud2(points, 42, "map", FACTORY), PC2)
    assert stamp_to_ns(msg.header.stamp) == 42
    assert msg.header.frame_id == "map"
    assert not msg.is_bigendian
    assert msg.row_step == msg.width * msg.point_step
    assert len(msg.data) == msg.row_step * msg.height
    organized = points.ndim == 2
    out = pointcloud2_to_array(msg, remove_nans=False, organized=organized)
    assert out.shape == points.shape
    assert out.dtype.names == points.dtype.names
    for name in points.dtype.names or ():
        src = points[name]
        # byte-exact (NaN payloads included) after converting to little-endian
        assert np.ascontiguousarray(src, dtype=src.dtype.newbyteorder("<")).tobytes() == \
            out[name].tobytes()


def test_pointcloud2_against_struct_pack() -> None:
    # x, y, z float32 | 4 pad | intensity uint16 | ring uint8 | 5 pad | t float64 = 32 bytes
    rows = [(1.5, -2.0, 0.25, 100, 3, 0.001), (float("nan"), 1.0, 1.0, 7, 0, 0.002),
            (-3.0, 4.0, -5.5, 65535, 127, 0.003)]
    data = b"".join(struct.pack("<fff4xHB5xd", *r) for r in rows)
    fields = [pf("x", 0, 7), pf("y", 4, 7), pf("z", 8, 7), pf("intensity", 16, 4),
              pf("ring", 18, 2), pf("t", 24, 8)]
    msg = cloud_msg(fields, 32, data)
    out = pointcloud2_to_array(msg)
    assert out.dtype.names == ("x", "y", "z", "intensity", "ring", "t")
    assert out.dtype.itemsize == 4 * 3 + 2 + 1 + 8
    assert len(out) == 2  # the NaN point is gone
    np.testing.assert_array_equal(out["x"], [1.5, -3.0])
    np.testing.assert_array_equal(out["intensity"], [100, 65535])
    np.testing.assert_array_equal(out["ring"], [3, 127])
    np.testing.assert_array_equal(out["t"], [0.001, 0.003])
    xyz = pointcloud2_to_xyz(msg)
    np.testing.assert_array_equal(xyz, [[1.5, -2.0, 0.25], [-3.0, 4.0, -5.5]])
    assert xyz.dtype == np.float32
    all_xyz = pointcloud2_to_xyz(msg, remove_nans=False)
    assert all_xyz.shape == (3, 3) and np.isnan(all_xyz[1, 0])


def test_organized_cloud_with_row_padding_by_hand() -> None:
    # 2 rows x 2 points, point = (x, y, z float32, intensity uint8) + 3 pad; rows padded by 8
    rows = [[(0.0, 1.0, 2.0, 10), (3.0, 4.0, 5.0, 11)],
            [(6.0, 7.0, 8.0, 12), (float("inf"), 10.0, 11.0, 13)]]
    data = b"".join(b"".join(struct.pack("<fffB3x", *p) for p in row) + b"\xee" * 8
                    for row in rows)
    fields = [pf("x", 0, 7), pf("y", 4, 7), pf("z", 8, 7), pf("intensity", 12, 2)]
    msg = cloud_msg(fields, 16, data, height=2, width=2, row_step=40)
    grid = pointcloud2_to_array(msg, remove_nans=False, organized=True)
    assert grid.shape == (2, 2)
    np.testing.assert_array_equal(grid["intensity"], [[10, 11], [12, 13]])
    flat = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(flat["intensity"], [10, 11, 12])
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg),
                                  [[0, 1, 2], [3, 4, 5], [6, 7, 8]])


@HYP
@given(n=st.integers(0, 50), gap=st.integers(0, 2), step_pad=st.integers(0, 12),
       xyz_type=st.sampled_from([7, 8]), seed=st.integers(0, 2**32 - 1))
def test_xyz_fast_path_matches_full_conversion(n: int, gap: int, step_pad: int,
                                               xyz_type: int, seed: int) -> None:
    size = SIZE[xyz_type]
    offsets = [0, size + gap * 4, 2 * size + gap * 8]  # gap 0: one block copy path
    point_step = offsets[2] + size + step_pad
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, 3)) * 100
    values[rng.random((n, 3)) < 0.1] = np.nan
    data = bytearray(n * point_step)
    char = STRUCT_CHAR[xyz_type]
    for i in range(n):
        for j in range(3):
            struct.pack_into("<" + char, data, i * point_step + offsets[j], values[i, j])
    fields = [pf(name, off, xyz_type) for name, off in zip("xyz", offsets, strict=True)]
    msg = cloud_msg(fields, point_step, bytes(data), width=n)
    full = pointcloud2_to_array(msg, remove_nans=False)
    ref = np.stack([full["x"], full["y"], full["z"]], axis=1).astype(np.float32)
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg, remove_nans=False), ref)
    keep = np.isfinite(ref).all(axis=1)
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg), ref[keep])
    assert len(pointcloud2_to_array(msg)) == int(keep.sum())


def test_float64_xyz_cloud() -> None:
    pts = np.zeros(3, dtype=[("x", "f8"), ("y", "f8"), ("z", "f8")])
    pts["x"] = [1e-9 + 1.0, 2.0, np.nan]
    msg = cdr(array_to_pointcloud2(pts, 0, "lidar", FACTORY), PC2)
    assert [f.datatype for f in msg.fields] == [8, 8, 8]
    assert not msg.is_dense
    out = pointcloud2_to_array(msg)
    assert out.dtype["x"] == np.float64 and out["x"][0] == 1e-9 + 1.0
    assert pointcloud2_to_xyz(msg).dtype == np.float32
    cloud = pointcloud_from_msg(msg, "lidar", {})
    assert cloud.points.dtype["x"] == np.float64 and len(cloud) == 2


def test_nan_removal_uses_only_xyz() -> None:
    pts = np.zeros(5, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
    pts["x"] = np.arange(5)
    pts["y"][1] = np.nan
    pts["z"][3] = -np.inf
    pts["intensity"][4] = np.nan  # not a position: kept
    msg = array_to_pointcloud2(pts, 0, "lidar", FACTORY)
    assert msg.is_dense is False
    np.testing.assert_array_equal(pointcloud2_to_array(msg)["x"], [0, 2, 4])
    assert len(pointcloud2_to_array(msg, remove_nans=False)) == 5
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg)[:, 0], [0, 2, 4])
    assert array_to_pointcloud2(pts[[0, 2, 4]], 0, "l", FACTORY).is_dense is True
    assert array_to_pointcloud2(pts, 0, "l", FACTORY, is_dense=True).is_dense is True


def test_empty_cloud() -> None:
    pts = np.zeros(0, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("ring", "u2")])
    msg = cdr(array_to_pointcloud2(pts, 0, "lidar", FACTORY), PC2)
    assert (msg.height, msg.width, len(msg.data)) == (1, 0, 0)
    out = pointcloud2_to_array(msg)
    assert out.shape == (0,) and out.dtype.names == ("x", "y", "z", "ring")
    assert pointcloud2_to_xyz(msg).shape == (0, 3)
    assert len(pointcloud_from_msg(msg, "lidar", {})) == 0


def _xyz_fields() -> list[Any]:
    return [pf("x", 0, 7), pf("y", 4, 7), pf("z", 8, 7)]


@pytest.mark.parametrize(("fields", "point_step", "match"), [
    ([pf("x", 0, 7), pf("y", 2, 7)], 8, r"'x' and 'y' overlap.*ends at byte 4.*starts at 2"),
    ([pf("x", 0, 9)], 4, "unknown datatype 9"),
    ([pf("x", 0, 0)], 4, "unknown datatype 0"),
    ([pf("x", 0, 7), pf("x", 4, 7)], 8, "'x' appears twice"),
    ([pf("x", 0, 7, 0)], 4, "'x' has count 0"),
    ([pf("x", 0, 7), pf("y", 4, 8)], 8, "ends at byte 12, past point_step = 8"),
    ([pf("x", 0, 7, 3)], 8, "ends at byte 12, past point_step = 8"),
    ([], 4, "no fields"),
])
def test_bad_field_layouts(fields: list[Any], point_step: int, match: str) -> None:
    with pytest.raises(ConversionError, match=match):
        pointcloud2_dtype(fields, point_step)
    msg = cloud_msg(fields, point_step, bytes(point_step * 2))
    with pytest.raises(ConversionError, match=match):
        pointcloud2_to_array(msg)


def test_pointcloud2_dtype_handles_padding_and_counts() -> None:
    dtype = pointcloud2_dtype([pf("z", 8, 7), pf("x", 0, 7), pf("rgb", 12, 2, 3)], 20)
    assert dtype.itemsize == 20
    assert dtype.fields is not None
    assert dtype.fields["rgb"][0].shape == (3,) and dtype.fields["rgb"][1] == 12
    assert dtype.names == ("z", "x", "rgb")


def test_bad_clouds() -> None:
    data = struct.pack("<fff", 1, 2, 3) * 4
    with pytest.raises(ConversionError, match="big-endian"):
        pointcloud2_to_array(cloud_msg(_xyz_fields(), 12, data, is_bigendian=True))
    with pytest.raises(ConversionError, match="big-endian"):
        pointcloud2_to_xyz(cloud_msg(_xyz_fields(), 12, data, is_bigendian=True))
    short = cloud_msg(_xyz_fields(), 12, data[:-4], width=4)
    with pytest.raises(ConversionError, match=r"data has 44 bytes but row_step\*height = "
                                              r"48\*1 = 48"):
        pointcloud2_to_array(short)
    with pytest.raises(ConversionError, match="44 bytes"):
        pointcloud2_to_xyz(short)
    narrow = cloud_msg(_xyz_fields(), 12, data, height=2, width=2, row_step=20)
    with pytest.raises(ConversionError, match="row_step = 20 is smaller than width"):
        pointcloud2_to_array(narrow)
    ok = cloud_msg(_xyz_fields(), 12, data)
    with pytest.raises(ConversionError, match="remove_nans=False"):
        pointcloud2_to_array(ok, organized=True)
    no_z = cloud_msg([pf("x", 0, 7), pf("y", 4, 7)], 12, data)
    with pytest.raises(ConversionError, match=r"lacks field\(s\) \['z'\]"):
        pointcloud2_to_xyz(no_z)


@pytest.mark.parametrize("dtype", ["i8", "u8", "c8", "O", "?", "f2", "U3"])
def test_array_to_pointcloud2_rejects_unsupported_dtypes(dtype: str) -> None:
    pts = np.zeros(2, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("bad_field", dtype)])
    with pytest.raises(ConversionError, match="'bad_field'"):
        array_to_pointcloud2(pts, 0, "l", FACTORY)


def test_array_to_pointcloud2_rejects_plain_arrays() -> None:
    with pytest.raises(ConversionError, match="structured"):
        array_to_pointcloud2(np.zeros((4, 3), np.float32), 0, "l", FACTORY)
    with pytest.raises(ConversionError, match=r"\(N,\) or \(H, W\)"):
        array_to_pointcloud2(np.zeros((1, 2, 3), dtype=[("x", "f4")]), 0, "l", FACTORY)


# ------------------------------------------------------------------ rig-aware clouds


def _lidar_msg(n: int = 6) -> tuple[Any, np.ndarray]:
    pts = np.zeros(n, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"),
                             ("reflectivity", "u2"), ("t", "f4"), ("ring", "u1")])
    pts["x"] = np.arange(n) + 1
    pts["y"] = -np.arange(n)
    pts["reflectivity"] = np.arange(n) * 10
    pts["t"] = np.linspace(0.0, 0.1, n, dtype=np.float32)
    pts["ring"] = np.arange(n) % 4
    pts["z"][2] = np.nan
    return cdr(array_to_pointcloud2(pts, 5_000_000_000, "lidar_top", FACTORY), PC2), pts


def test_pointcloud_from_msg_with_field_map_and_time() -> None:
    msg, pts = _lidar_msg()
    calls: list[tuple[np.ndarray, int]] = []

    def to_offsets(values: np.ndarray, stamp_ns: int) -> np.ndarray:
        calls.append((values.copy(), stamp_ns))
        return np.round(values.astype(np.float64) * 1e9).astype(np.int64)

    cloud = pointcloud_from_msg(msg, "lidar_top", {"intensity": "reflectivity"},
                                time_field="t", time_to_offsets=to_offsets)
    assert isinstance(cloud, PointCloud)
    assert cloud.sensor == "lidar_top" and cloud.frame_id == "lidar_top"
    assert cloud.stamp_ns == 5_000_000_000
    assert cloud.fields == ("x", "y", "z", "intensity", "t", "ring")
    keep = np.array([0, 1, 3, 4, 5])  # point 2 has a NaN z
    np.testing.assert_array_equal(cloud.field("intensity", np.uint16),
                                  pts["reflectivity"][keep])
    np.testing.assert_array_equal(cloud.points["ring"], pts["ring"][keep])
    assert len(calls) == 1 and calls[0][1] == 5_000_000_000
    np.testing.assert_array_equal(calls[0][0], pts["t"][keep])
    assert cloud.time_offsets_ns is not None
    np.testing.assert_array_equal(cloud.time_offsets_ns,
                                  np.round(pts["t"][keep].astype(np.float64) * 1e9))
    last = 5_000_000_000 + round(float(np.float32(0.1)) * 1e9)  # float32 0.1 s
    assert cloud.point_stamps_ns()[-1] == last
    kept_all = pointcloud_from_msg(msg, "lidar_top", {}, remove_nans=False)
    assert len(kept_all) == 6 and kept_all.time_offsets_ns is None


def test_pointcloud_from_msg_errors() -> None:
    msg, _ = _lidar_msg()
    with pytest.raises(ConversionError, match=r"'intensity': 'intensity'.*reflectivity"):
        pointcloud_from_msg(msg, "lidar_top", {"intensity": "intensity"})
    with pytest.raises(ConversionError, match=r"'ring'.*twice"):
        pointcloud_from_msg(msg, "lidar_top", {"ring": "reflectivity"})
    with pytest.raises(ConversionError, match="given together"):
        pointcloud_from_msg(msg, "lidar_top", {}, time_field="t")
    with pytest.raises(ConversionError, match=r"shape \(3,\) for 5 points"):
        pointcloud_from_msg(msg, "lidar_top", {}, time_field="t",
                            time_to_offsets=lambda v, s: np.zeros(3, np.int64))
    with pytest.raises(ConversionError, match="time field 'time'"):
        pointcloud_from_msg(msg, "lidar_top", {}, time_field="time",
                            time_to_offsets=lambda v, s: np.zeros(len(v), np.int64))


def test_pointcloud_to_msg_roundtrip() -> None:
    msg, _ = _lidar_msg()
    cloud = pointcloud_from_msg(msg, "lidar_top", {"intensity": "reflectivity"},
                                time_field="t",
                                time_to_offsets=lambda v, s: (v * 1e9).astype(np.int64))
    back = cdr(pointcloud_to_msg(cloud, FACTORY, time_field="t_ns"), PC2)
    again = pointcloud_from_msg(back, "lidar_top", {})
    assert again.fields == (*cloud.fields, "t_ns")
    for name in cloud.fields:
        np.testing.assert_array_equal(again.points[name], cloud.points[name])
    np.testing.assert_array_equal(again.points["t_ns"], cloud.time_offsets_ns)
    with pytest.raises(ConversionError, match="already is a field"):
        pointcloud_to_msg(cloud, FACTORY, time_field="t")
    plain = pointcloud_to_msg(cloud, FACTORY)
    assert [f.name for f in plain.fields] == list(cloud.fields)


def _radar_msg() -> tuple[Any, np.ndarray]:
    pts = np.zeros(4, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("vrad", "f4"),
                             ("amplitude", "f4"), ("snr", "f4"), ("target_id", "u2")])
    pts["x"] = [10.0, 20.0, 30.0, 40.0]
    pts["y"] = [1.0, -1.0, 0.5, 0.0]
    pts["vrad"] = [-3.0, 0.0, 2.5, np.nan]
    pts["amplitude"] = [5.0, 10.0, 15.0, 20.0]
    pts["snr"] = [1.0, 2.0, 3.0, 4.0]
    pts["target_id"] = [7, 8, 9, 10]
    return cdr(array_to_pointcloud2(pts, 3_000, "radar_front", FACTORY), PC2), pts


def test_radar_scan_from_msg() -> None:
    msg, _ = _radar_msg()
    scan = radar_scan_from_msg(msg, "radar_front", {"doppler": "vrad", "rcs": "amplitude"})
    assert isinstance(scan, RadarScan)
    assert len(scan) == 3  # NaN doppler dropped
    np.testing.assert_array_equal(scan.xyz[:, 0], [10.0, 20.0, 30.0])
    np.testing.assert_array_equal(scan.doppler, [-3.0, 0.0, 2.5])
    np.testing.assert_array_equal(scan.rcs, [5.0, 10.0, 15.0])
    assert scan.velocity is None
    assert set(scan.extra) == {"snr", "target_id"}
    np.testing.assert_array_equal(scan.extra["target_id"], [7, 8, 9])
    assert scan.extra["target_id"].dtype == np.uint16
    assert scan.stamp_ns == 3_000 and scan.frame_id == "radar_front"


def test_radar_scan_errors_and_velocity() -> None:
    msg, _ = _radar_msg()
    with pytest.raises(ConversionError, match=r"'rcs': 'rcs'.*amplitude"):
        radar_scan_from_msg(msg, "radar_front", {"doppler": "vrad"})
    with pytest.raises(ConversionError, match=r"'rcs': 'power'"):
        radar_scan_from_msg(msg, "radar_front", {"doppler": "vrad", "rcs": "power"})
    with pytest.raises(ConversionError, match="vx, vy and vz"):
        radar_scan_from_msg(msg, "radar_front",
                            {"doppler": "vrad", "rcs": "amplitude", "vx": "snr"})
    scan = RadarScan("r", 10, "radar", xyz=np.ones((2, 3), np.float32),
                     doppler=np.array([1.0, -1.0], np.float32),
                     rcs=np.array([3.0, 4.0], np.float32),
                     velocity=np.array([[1, 2, 3], [4, 5, 6]], np.float32),
                     extra={"snr": np.array([9.0, 8.0], np.float32)})
    msg2 = cdr(radar_scan_to_msg(scan, FACTORY), PC2)
    assert [f.name for f in msg2.fields] == ["x", "y", "z", "vrad", "rcs", "vx", "vy", "vz",
                                             "snr"]
    back = radar_scan_from_msg(msg2, "r", {"doppler": "vrad", "vx": "vx", "vy": "vy",
                                           "vz": "vz"})
    np.testing.assert_array_equal(back.doppler, scan.doppler)
    np.testing.assert_array_equal(back.rcs, scan.rcs)
    assert back.velocity is not None
    np.testing.assert_array_equal(back.velocity, scan.velocity)
    np.testing.assert_array_equal(back.extra["snr"], [9.0, 8.0])
    with pytest.raises(ConversionError, match=r"'x'.*twice"):
        radar_scan_to_msg(scan, FACTORY, {"doppler": "x"})


# ------------------------------------------------------------------ Image

ALL_ENCODINGS = [*IMAGE_ENCODINGS, "8UC1", "8UC3", "8UC4"]
ALIAS = {"8UC1": "mono8", "8UC3": "bgr8", "8UC4": "bgra8"}


def _random_image(encoding: str, height: int, width: int, seed: int) -> np.ndarray:
    dtype, channels = IMAGE_ENCODINGS[ALIAS.get(encoding, encoding)]
    shape = (height, width) if channels == 1 else (height, width, channels)
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return rng.normal(size=shape).astype(np.float32)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)


def _image_msg(img: np.ndarray, encoding: str, pad: int, bigendian: bool,
               seed: int = 0) -> Any:
    """Image message built row by row with explicit byte order and random pad bytes."""
    src = img.astype(img.dtype.newbyteorder(">" if bigendian else "<"))
    rng = np.random.default_rng(seed)
    rows = [src[r].tobytes() + rng.integers(0, 256, pad, np.uint8).tobytes()
            for r in range(img.shape[0])]
    step = img.shape[1] * img.dtype.itemsize * (img.shape[2] if img.ndim == 3 else 1) + pad
    return FACTORY("sensor_msgs/msg/Image", header=header(99, "cam_optical", FACTORY),
                   height=img.shape[0], width=img.shape[1], encoding=encoding,
                   is_bigendian=int(bigendian), step=step,
                   data=np.frombuffer(b"".join(rows), np.uint8))


@HYP
@given(encoding=st.sampled_from(ALL_ENCODINGS), height=st.integers(1, 7),
       width=st.integers(1, 7), pad=st.integers(0, 9), bigendian=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_image_roundtrip(encoding: str, height: int, width: int, pad: int,
                         bigendian: bool, seed: int) -> None:
    img = _random_image(encoding, height, width, seed)
    msg = cdr(_image_msg(img, encoding, pad, bigendian, seed), "sensor_msgs/msg/Image")
    out, enc = image_to_array(msg)
    assert enc == ALIAS.get(encoding, encoding)
    assert out.dtype == img.dtype and out.dtype.isnative
    assert out.flags.c_contiguous and out.flags.owndata
    np.testing.assert_array_equal(out, img)
    back = cdr(array_to_image(out, enc, 5, "cam", FACTORY), "sensor_msgs/msg/Image")
    assert back.step == out.nbytes // height and back.is_bigendian == 0
    out2, enc2 = image_to_array(back)
    assert enc2 == enc
    np.testing.assert_array_equal(out2, img)


def test_image_mono16_little_endian_bytes_by_hand() -> None:
    data = struct.pack("<3H2x3H2x", 1, 256, 65535, 2, 3, 4)
    msg = FACTORY("sensor_msgs/msg/Image", header=header(0, "c", FACTORY), height=2,
                  width=3, encoding="mono16", is_bigendian=0, step=8,
                  data=np.frombuffer(data, np.uint8))
    out, _ = image_to_array(msg)
    np.testing.assert_array_equal(out, [[1, 256, 65535], [2, 3, 4]])
    big = FACTORY("sensor_msgs/msg/Image", header=header(0, "c", FACTORY), height=1,
                  width=2, encoding="16UC1", is_bigendian=1, step=4,
                  data=np.frombuffer(struct.pack(">2H", 258, 7), np.uint8))
    np.testing.assert_array_equal(image_to_array(big)[0], [[258, 7]])


@pytest.mark.parametrize("encoding", ["bayer_rggb8", "yuv422", "foo", "rgb16"])
def test_unknown_image_encoding(encoding: str) -> None:
    msg = FACTORY("sensor_msgs/msg/Image", header=header(0, "c", FACTORY), height=1,
                  width=1, encoding=encoding, is_bigendian=0, step=4,
                  data=np.zeros(4, np.uint8))
    with pytest.raises(ConversionError, match=rf"{encoding!r}.*supported:.*'rgb8'"):
        image_to_array(msg)
    with pytest.raises(ConversionError, match=repr(encoding)):
        array_to_image(np.zeros((1, 1, 3), np.uint8), encoding, 0, "c", FACTORY)


def test_bad_image_sizes() -> None:
    img = np.zeros((4, 5, 3), np.uint8)
    msg = _image_msg(img, "rgb8", 0, False)
    msg.data = msg.data[:-1]
    with pytest.raises(ConversionError, match=r"59 bytes but step\*height = 15\*4 = 60"):
        image_to_array(msg)
    msg = _image_msg(img, "rgb8", 0, False)
    msg.step = 14
    with pytest.raises(ConversionError, match="step = 14 is smaller than"):
        image_to_array(msg)
    with pytest.raises(ConversionError, match="dtype uint16 does not match"):
        array_to_image(img.astype(np.uint16), "rgb8", 0, "c", FACTORY)
    with pytest.raises(ConversionError, match=r"shape \(4, 5, 3\) does not match"):
        array_to_image(img, "mono8", 0, "c", FACTORY)
    with pytest.raises(ConversionError, match=r"shape \(4, 5\) does not match"):
        array_to_image(img[:, :, 0], "bgra8", 0, "c", FACTORY)


def test_camera_frame_from_msg() -> None:
    img = _random_image("bgr8", 4, 6, 1)
    cam = CameraModel(width=6, height=4, fx=10.0, fy=10.0, cx=3.0, cy=2.0)
    frame = camera_frame_from_msg(_image_msg(img, "bgr8", 3, False), "front", cam)
    assert frame.sensor == "front" and frame.stamp_ns == 99
    assert frame.frame_id == "cam_optical" and frame.encoding == "bgr8"
    assert frame.camera is cam
    np.testing.assert_array_equal(frame.rgb(), img[:, :, ::-1])
    comp = array_to_compressed(img, "bgr8", 7, "cam", FACTORY, fmt="png")
    cframe = camera_frame_from_msg(cdr(comp, "sensor_msgs/msg/CompressedImage"), "front")
    assert cframe.encoding == "rgb8" and cframe.stamp_ns == 7
    np.testing.assert_array_equal(cframe.image, img[:, :, ::-1])
    with pytest.raises(ConversionError, match="neither an Image"):
        camera_frame_from_msg(SimpleNamespace(header=None), "front")


# ------------------------------------------------------------------ CompressedImage


def _compressed(data: bytes, fmt: str) -> Any:
    return FACTORY("sensor_msgs/msg/CompressedImage", header=header(1, "c", FACTORY),
                   format=fmt, data=np.frombuffer(data, np.uint8))


def _gradient_rgb(height: int = 32, width: int = 48) -> np.ndarray:
    v, u = np.mgrid[0:height, 0:width]
    return np.stack([u * 5, v * 7, 255 - u * 3], axis=2).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", "rgb8; png compressed bgr8"])
def test_compressed_png_colour_order(fmt: str) -> None:
    rgb = _gradient_rgb()
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # reference writer
    assert ok
    out, enc = compressed_to_array(_compressed(png.tobytes(), fmt))
    assert enc == "rgb8" and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize(("encoding", "make"), [
    ("rgb8", lambda: _gradient_rgb()),
    ("bgr8", lambda: _gradient_rgb()),
    ("rgba8", lambda: np.dstack([_gradient_rgb(), np.full((32, 48), 77, np.uint8)])),
    ("bgra8", lambda: np.dstack([_gradient_rgb(), np.full((32, 48), 77, np.uint8)])),
    ("mono8", lambda: _gradient_rgb()[:, :, 0]),
    ("mono16", lambda: _gradient_rgb()[:, :, 0].astype(np.uint16) * 257),
    ("16UC1", lambda: _gradient_rgb()[:, :, 1].astype(np.uint16) * 250),
])
def test_compressed_png_roundtrip(encoding: str, make: Any) -> None:
    img = make()
    msg = cdr(array_to_compressed(img, encoding, 5, "cam", FACTORY, fmt="png"),
              "sensor_msgs/msg/CompressedImage")
    assert msg.format.startswith(f"{encoding}; png compressed ")
    out, enc = compressed_to_array(msg)
    expect = {"bgr8": lambda a: a[:, :, ::-1],
              "bgra8": lambda a: a[:, :, [2, 1, 0, 3]]}.get(encoding, lambda a: a)(img)
    assert enc == {"rgb8": "rgb8", "bgr8": "rgb8", "rgba8": "rgba8", "bgra8": "rgba8",
                   "mono8": "mono8", "mono16": "mono16", "16UC1": "mono16"}[encoding]
    np.testing.assert_array_equal(out, expect)
    # independent decoder: OpenCV reads the same bytes as BGR(A)
    ref = cv2.imdecode(np.asarray(msg.data), cv2.IMREAD_UNCHANGED)
    assert ref is not None
    if ref.ndim == 3:
        ref = ref[:, :, [2, 1, 0, 3][: ref.shape[2]]]
    np.testing.assert_array_equal(out, ref)


def test_compressed_jpeg_roundtrip() -> None:
    rgb = _gradient_rgb(64, 64)
    msg = array_to_compressed(rgb, "rgb8", 5, "cam", FACTORY, fmt="jpeg", jpeg_quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    out, enc = compressed_to_array(cdr(msg, "sensor_msgs/msg/CompressedImage"))
    assert enc == "rgb8" and out.shape == rgb.shape
    assert float(np.abs(out.astype(int) - rgb.astype(int)).mean()) < 6.0
    decoded = cv2.imdecode(np.asarray(msg.data), cv2.IMREAD_COLOR)
    assert decoded is not None
    ref = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(out, ref)
    mono = array_to_compressed(rgb[:, :, 1], "mono8", 5, "cam", FACTORY)
    assert mono.format == "mono8; jpeg compressed mono8"
    out_m, enc_m = compressed_to_array(mono)
    assert enc_m == "mono8" and out_m.shape == (64, 64)
    low = array_to_compressed(rgb, "rgb8", 5, "cam", FACTORY, jpeg_quality=5)
    assert len(low.data) < len(msg.data)


def test_compressed_errors() -> None:
    rgb = _gradient_rgb()
    good = array_to_compressed(rgb, "rgb8", 0, "c", FACTORY)
    corrupt = bytes(good.data[:20]) + b"\x00garbage" * 8
    with pytest.raises(ConversionError, match="could not be decoded as jpeg"):
        compressed_to_array(_compressed(corrupt, "jpeg"))
    with pytest.raises(ConversionError, match="no data"):
        compressed_to_array(_compressed(b"", "jpeg"))
    with pytest.raises(ConversionError, match="compressedDepth"):
        compressed_to_array(_compressed(bytes(good.data), "16UC1; compressedDepth png"))
    with pytest.raises(ConversionError, match="'tiff'"):
        compressed_to_array(_compressed(bytes(good.data), "tiff"))
    with pytest.raises(ConversionError, match="cannot be stored as jpeg"):
        array_to_compressed(np.zeros((2, 2, 4), np.uint8), "rgba8", 0, "c", FACTORY)
    with pytest.raises(ConversionError, match="cannot be stored as png"):
        array_to_compressed(np.zeros((2, 2), np.float32), "32FC1", 0, "c", FACTORY, fmt="png")
    with pytest.raises(ConversionError, match="'webp'"):
        array_to_compressed(rgb, "rgb8", 0, "c", FACTORY, fmt="webp")
    with pytest.raises(ConversionError, match="101"):
        array_to_compressed(rgb, "rgb8", 0, "c", FACTORY, jpeg_quality=101)


# ------------------------------------------------------------------ Odometry and TF


def _ego() -> EgoState:
    cov = np.diag([0.1, 0.2, 0.3, 0.01, 0.02, 0.03])
    cov[0, 1] = cov[1, 0] = 0.05
    return EgoState(stamp_ns=1_234_567_890_123, frame_id="odom", child_frame_id="base_link",
                    pose=SE3.from_rpy(0.1, -0.2, 2.5, (10.0, -4.0, 0.5)),
                    linear_velocity=np.array([5.0, 0.1, 0.0]),
                    angular_velocity=np.array([0.0, 0.01, 0.3]),
                    pose_covariance=cov, twist_covariance=cov * 2)


def test_odometry_roundtrip() -> None:
    state = _ego()
    msg = cdr(odometry_from_ego_state(state, FACTORY), "nav_msgs/msg/Odometry")
    back = ego_state_from_odometry(msg)
    assert (back.stamp_ns, back.frame_id, back.child_frame_id) == \
        (state.stamp_ns, "odom", "base_link")
    assert back.pose.almost_equal(state.pose, atol=1e-12)
    np.testing.assert_array_equal(back.linear_velocity, state.linear_velocity)
    np.testing.assert_array_equal(back.angular_velocity, state.angular_velocity)
    assert back.pose_covariance is not None and back.twist_covariance is not None
    np.testing.assert_array_equal(back.pose_covariance, state.pose_covariance)
    np.testing.assert_array_equal(back.twist_covariance, np.asarray(state.pose_covariance) * 2)
    # covariance row-major: element (0, 1) is index 1, (1, 1) index 7
    assert msg.pose.covariance[1] == 0.05 and msg.pose.covariance[7] == 0.2
    bare = EgoState(0, "odom", "base_link", SE3.identity())
    assert np.all(odometry_from_ego_state(bare, FACTORY).pose.covariance == 0)


def test_odometry_hand_built_yaw() -> None:
    msg = odometry_from_ego_state(_ego(), FACTORY)
    half = math.pi / 4  # 90 deg yaw
    msg.pose.pose.orientation = FACTORY("geometry_msgs/msg/Quaternion", x=0.0, y=0.0,
                                        z=2 * math.sin(half), w=2 * math.cos(half))
    state = ego_state_from_odometry(msg)  # non-unit quaternion is normalised
    np.testing.assert_allclose(state.pose.rotation @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                               atol=1e-12)


@pytest.mark.parametrize(("path", "attr", "match"), [
    ("pose.pose.position", "x", r"pose.position is not finite.*'x': nan"),
    ("pose.pose.orientation", "w", "pose.orientation is not finite"),
    ("twist.twist.linear", "y", "twist.linear is not finite"),
    ("twist.twist.angular", "z", "twist.angular is not finite"),
])
def test_odometry_nan_rejected(path: str, attr: str, match: str) -> None:
    msg = odometry_from_ego_state(_ego(), FACTORY)
    obj = msg
    for part in path.split("."):
        obj = getattr(obj, part)
    setattr(obj, attr, float("nan"))
    with pytest.raises(ConversionError, match=match):
        ego_state_from_odometry(msg)


def test_odometry_zero_quaternion_rejected() -> None:
    msg = odometry_from_ego_state(_ego(), FACTORY)
    msg.pose.pose.orientation = FACTORY("geometry_msgs/msg/Quaternion", x=0.0, y=0.0,
                                        z=0.0, w=0.0)
    with pytest.raises(ConversionError, match="zero norm"):
        ego_state_from_odometry(msg)


def test_tf_roundtrip() -> None:
    items = [("base_link", "lidar_top", 100, SE3.from_rpy(0.0, 0.05, 0.0, (1.2, 0.0, 1.8))),
             ("base_link", "cam_front_optical", 100,
              SE3.from_rpy(-math.pi / 2, 0.0, -math.pi / 2, (1.5, 0.0, 1.4)))]
    msg = cdr(tf_message(items, FACTORY), "tf2_msgs/msg/TFMessage")
    back = transforms_from_tf_message(msg)
    assert [(p, c, s) for p, c, s, _ in back] == [(p, c, s) for p, c, s, _ in items]
    for (_, _, _, t_back), (_, _, _, t_ref) in zip(back, items, strict=True):
        assert t_back.almost_equal(t_ref, atol=1e-12)
    msg.transforms[1].transform.translation.x = float("inf")
    with pytest.raises(ConversionError, match="'base_link' -> 'cam_front_optical'"):
        transforms_from_tf_message(msg)


# ------------------------------------------------------------------ RclpyFactory


@pytest.fixture
def rclpy_factory(monkeypatch: pytest.MonkeyPatch) -> conv.RclpyFactory:
    pytest.importorskip("rclpy")
    import builtin_interfaces.msg
    import geometry_msgs.msg
    import nav_msgs.msg
    import sensor_msgs.msg
    import std_msgs.msg

    # turn on rclpy's field type assertions so a wrong Python type fails here
    for pkg in (builtin_interfaces, geometry_msgs, nav_msgs, sensor_msgs, std_msgs):
        for name, module in list(sys.modules.items()):
            if name.startswith(pkg.__name__ + ".msg._") and \
                    hasattr(module, "ros_python_check_fields"):
                monkeypatch.setattr(module, "ros_python_check_fields", "1")
    return conv.RclpyFactory()


def test_rclpy_pointcloud2_roundtrip(rclpy_factory: conv.RclpyFactory) -> None:
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2

    pts = np.zeros((2, 3), dtype=[("x", "f4"), ("y", "f4"), ("z", "f8"), ("ring", "u2"),
                                  ("rgb", "u1", (3,))])
    pts["x"] = np.arange(6).reshape(2, 3)
    pts["z"] = 0.5
    pts["ring"] = [[1, 2, 3], [4, 5, 6]]
    pts["rgb"][1, 2] = [10, 20, 30]
    msg = array_to_pointcloud2(pts, 2_000_000_001, "lidar", rclpy_factory)
    assert isinstance(msg, PointCloud2) and isinstance(msg.data, array.array)
    assert msg.header.stamp.sec == 2 and msg.header.stamp.nanosec == 1
    out = pointcloud2_to_array(msg, remove_nans=False, organized=True)
    assert out.tobytes() == pts.tobytes()
    raw = serialize_message(msg)
    via_rosbags = TS.deserialize_cdr(raw, PC2)  # rclpy CDR -> rosbags
    assert pointcloud2_to_array(via_rosbags).tobytes() == pts.reshape(-1).tobytes()
    rosbags_raw = TS.serialize_cdr(array_to_pointcloud2(pts, 5, "l", FACTORY), PC2)
    via_rclpy = deserialize_message(bytes(rosbags_raw), PointCloud2)  # rosbags CDR -> rclpy
    np.testing.assert_array_equal(pointcloud2_to_xyz(via_rclpy)[:, 0], np.arange(6))


def test_rclpy_image_odometry_and_compressed(rclpy_factory: conv.RclpyFactory) -> None:
    from nav_msgs.msg import Odometry
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image

    img = _random_image("mono16", 5, 7, 3)
    msg = array_to_image(img, "mono16", 10, "cam", rclpy_factory)
    assert isinstance(msg, Image)
    back = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(image_to_array(back)[0], img)
    state = _ego()
    odom = odometry_from_ego_state(state, rclpy_factory)
    assert isinstance(odom, Odometry)
    again = ego_state_from_odometry(deserialize_message(serialize_message(odom), Odometry))
    assert again.pose.almost_equal(state.pose, atol=1e-12)
    assert again.pose_covariance is not None
    np.testing.assert_array_equal(again.pose_covariance, state.pose_covariance)
    comp = array_to_compressed(_gradient_rgb(), "rgb8", 1, "cam", rclpy_factory, fmt="png")
    assert isinstance(comp, CompressedImage)
    np.testing.assert_array_equal(compressed_to_array(comp)[0], _gradient_rgb())


def test_rclpy_factory_details(rclpy_factory: conv.RclpyFactory) -> None:
    from sensor_msgs.msg import PointField

    with pytest.raises(AssertionError):  # the fixture really turned rclpy's checks on
        PointField(offset=np.uint32(1))
    t = rclpy_factory("builtin_interfaces/msg/Time", sec=np.int32(3), nanosec=np.uint32(4))
    assert (t.sec, t.nanosec) == (3, 4) and type(t.sec) is int
    info = rclpy_factory("sensor_msgs/msg/CameraInfo", d=np.array([0.1, 0.2]),
                         k=np.arange(9, dtype=np.float32))
    assert isinstance(info.d, array.array) and info.d.typecode == "d"
    assert info.k.dtype == np.float64 and list(info.k) == list(range(9))
    with pytest.raises(ConversionError, match="needs 9 values, got 4"):
        rclpy_factory("sensor_msgs/msg/CameraInfo", k=np.zeros(4))
    with pytest.raises(ConversionError, match="no field"):
        rclpy_factory("builtin_interfaces/msg/Time", seconds=1)
    with pytest.raises(ConversionError, match="not importable"):
        rclpy_factory("no_such_msgs/msg/Thing")
    if importlib.util.find_spec("tf2_msgs") is None:
        with pytest.raises(ConversionError, match="tf2_msgs"):
            tf_message([("a", "b", 0, SE3.identity())], rclpy_factory)


def test_camera_info_functions_are_reexported() -> None:
    from mm_perception.ros import camera_info

    assert conv.camera_info_from_model is camera_info.camera_info_from_model
    assert conv.camera_model_from_camera_info is camera_info.camera_model_from_camera_info


def test_array_to_pointcloud2_keeps_a_padded_driver_layout() -> None:
    """Offsets and point_step of the array are kept (padding written as zeros)."""
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    factory = conv.RosbagsFactory(ts)
    dtype = np.dtype({"names": ["x", "y", "z", "intensity", "t"],
                      "formats": ["<f4", "<f4", "<f4", "<f4", "<u4"],
                      "offsets": [0, 4, 8, 16, 20], "itemsize": 32})
    pts = np.zeros(3, dtype=dtype)
    pts["x"], pts["intensity"], pts["t"] = [1, 2, 3], [0.5, 0.6, 0.7], [10, 20, 30]
    msg = conv.array_to_pointcloud2(pts, 5, "lidar", factory)
    assert msg.point_step == 32 and msg.row_step == 96
    assert [(f.name, f.offset) for f in msg.fields] == [
        ("x", 0), ("y", 4), ("z", 8), ("intensity", 16), ("t", 20)]
    raw = np.asarray(msg.data, dtype=np.uint8).reshape(3, 32)
    assert not raw[:, 12:16].any() and not raw[:, 24:].any()  # padding is zeros
    back = conv.pointcloud2_to_array(
        ts.deserialize_cdr(ts.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"),
                           "sensor_msgs/msg/PointCloud2"))
    np.testing.assert_array_equal(back["t"], [10, 20, 30])
    np.testing.assert_allclose(back["intensity"], [0.5, 0.6, 0.7])
