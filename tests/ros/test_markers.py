"""mm_perception.ros.markers: RViz MarkerArrays for objects, tracks and paths."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from mm_perception.core.errors import ConfigError, ConversionError
from mm_perception.core.types import Box3D, DetectedObject, ObjectClass, Track, TrackStatus

pytest.importorskip("rclpy")
viz = pytest.importorskip("visualization_msgs.msg")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

from mm_perception.eval.overlay import CLASS_COLOURS  # noqa: E402
from mm_perception.ros.convert_objects import quaternion_to_yaw  # noqa: E402
from mm_perception.ros.markers import (  # noqa: E402
    MarkerBatch,
    MarkerConfig,
    lifetime_duration,
    objects_to_markers,
    path_to_markers,
    track_marker_id,
    tracks_to_markers,
)

Marker = viz.Marker
STAMP = 1_700_000_000_250_000_000


def _obj(x: float = 10.0, y: float = 2.0, yaw: float = 0.4, score: float = 0.6,
         label: ObjectClass = ObjectClass.CAR, velocity: tuple[float, float, float] | None = None,
         frame: str = "base_link") -> DetectedObject:
    vel = None if velocity is None else np.array(velocity, float)
    return DetectedObject(Box3D(np.array([x, y, 0.8]), np.array([4.2, 1.9, 1.6]), yaw, frame),
                          label, score, velocity=vel)


def _poison(obj: DetectedObject, what: str) -> DetectedObject:
    """Put a NaN into a validated object (as a bug elsewhere could), bypassing validation."""
    if what == "center":
        object.__setattr__(obj.box, "center", np.array([np.nan, 0.0, 0.0]))
    elif what == "yaw":
        object.__setattr__(obj.box, "yaw", float("nan"))
    elif what == "velocity":
        object.__setattr__(obj, "velocity", np.array([1.0, np.nan, 0.0]))
    elif what == "score":
        object.__setattr__(obj, "score", float("nan"))
    return obj


def _adds(batch: MarkerBatch, ns: str | None = None) -> list[Any]:
    return [m for m in batch.array.markers
            if m.action == Marker.ADD and (ns is None or m.ns == ns)]


def _xyz(p: Any) -> list[float]:
    return [p.x, p.y, p.z]


# ------------------------------------------------------------------------------ objects


def test_objects_one_cube_each_after_a_leading_deleteall() -> None:
    objs = [_obj(10.0, 2.0, 0.4, 0.6), _obj(20.0, -3.0, -2.5, 1.0, ObjectClass.PEDESTRIAN)]
    cfg = MarkerConfig(min_alpha=0.2)
    batch = objects_to_markers(objs, STAMP, "base_link", "dets", lifetime_s=0.5, config=cfg)
    markers = batch.array.markers
    assert batch.skipped == 0
    assert len(markers) == 3
    assert markers[0].action == Marker.DELETEALL and markers[0].ns == "dets"
    for i, (m, obj) in enumerate(zip(markers[1:], objs, strict=True)):
        assert m.type == Marker.CUBE and m.action == Marker.ADD and m.ns == "dets"
        assert m.id == i
        assert m.header.frame_id == "base_link"
        assert m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == STAMP
        np.testing.assert_allclose(_xyz(m.pose.position), obj.box.center)
        q = m.pose.orientation
        assert quaternion_to_yaw(q.x, q.y, q.z, q.w) == pytest.approx(obj.box.yaw)
        np.testing.assert_allclose(_xyz(m.scale), obj.box.size)
        r, g, b = CLASS_COLOURS[obj.label]
        np.testing.assert_allclose([m.color.r, m.color.g, m.color.b],
                                   [r / 255, g / 255, b / 255], atol=1e-6)
        assert m.color.a == pytest.approx(0.2 + 0.8 * obj.score, abs=1e-6)
        assert (m.lifetime.sec, m.lifetime.nanosec) == (0, 500_000_000)
    assert markers[0].header.frame_id == "base_link"


def test_empty_objects_still_clear_the_namespace() -> None:
    batch = objects_to_markers([], STAMP, "base_link")
    assert [m.action for m in batch.array.markers] == [Marker.DELETEALL]
    assert batch.array.markers[0].ns == "objects"
    assert batch.skipped == 0


@pytest.mark.parametrize("what", ["center", "yaw", "velocity", "score"])
def test_nan_objects_are_skipped_and_counted(what: str) -> None:
    objs = [_obj(5.0), _poison(_obj(6.0, velocity=(1.0, 0.0, 0.0)), what), _obj(7.0)]
    batch = objects_to_markers(objs, STAMP, "base_link")
    cubes = _adds(batch)
    assert batch.skipped == 1
    assert [m.id for m in cubes] == [0, 2]
    for m in batch.array.markers:
        vals = [*_xyz(m.pose.position), *_xyz(m.scale), m.pose.orientation.z,
                m.pose.orientation.w, m.color.a]
        assert all(math.isfinite(v) for v in vals)


def test_object_in_another_frame_raises() -> None:
    with pytest.raises(ConversionError, match=r"object 1 .*'odom'.*'base_link'"):
        objects_to_markers([_obj(), _obj(frame="odom")], STAMP, "base_link")


def test_marker_array_serialises() -> None:
    batch = tracks_to_markers([Track(4, _obj(velocity=(3.0, 0.0, 0.0)),
                                     TrackStatus.CONFIRMED)], STAMP, "base_link")
    msg_type = type(batch.array)
    back = deserialize_message(serialize_message(batch.array), msg_type)
    assert back == batch.array


# ------------------------------------------------------------------------------- tracks


def _tracks() -> list[Track]:
    return [
        Track(11, _obj(10.0, velocity=(4.0, 1.0, 0.0)), TrackStatus.CONFIRMED),
        Track(12, _obj(15.0, label=ObjectClass.CYCLIST, velocity=(0.05, 0.0, 0.0)),
              TrackStatus.COASTING),
        Track(13, _obj(20.0), TrackStatus.TENTATIVE),
        Track(14, _obj(25.0, velocity=(1.0, 0.0, 0.0)), TrackStatus.DELETED),
        Track(15, _obj(30.0, label=ObjectClass.PEDESTRIAN), TrackStatus.CONFIRMED),
    ]


def test_tracks_boxes_labels_and_arrows() -> None:
    cfg = MarkerConfig(arrow_time_s=0.5, min_speed_mps=0.2, text_offset_m=0.4)
    batch = tracks_to_markers(_tracks(), STAMP, "base_link", "trk", config=cfg)
    markers = batch.array.markers
    assert batch.skipped == 0
    # three DELETEALLs, one per namespace, before anything else
    assert [(m.action, m.ns) for m in markers[:3]] == [
        (Marker.DELETEALL, "trk"), (Marker.DELETEALL, "trk/label"),
        (Marker.DELETEALL, "trk/velocity")]
    assert all(m.action == Marker.ADD for m in markers[3:])
    cubes, labels, arrows = _adds(batch, "trk"), _adds(batch, "trk/label"), _adds(batch,
                                                                                 "trk/velocity")
    # confirmed + coasting only
    assert [m.id for m in cubes] == [11, 12, 15]
    assert all(m.type == Marker.CUBE for m in cubes)
    assert [m.id for m in labels] == [11, 12, 15]
    assert all(m.type == Marker.TEXT_VIEW_FACING for m in labels)
    assert [m.text for m in labels] == ["11 car", "12 cyclist", "15 pedestrian"]
    top = _tracks()[0].object.box
    np.testing.assert_allclose(_xyz(labels[0].pose.position),
                               top.center + np.array([0.0, 0.0, top.size[2] / 2 + 0.4]))
    assert labels[0].scale.z == pytest.approx(cfg.text_height_m)
    # an arrow only for track 11 (12 is too slow, 15 has no velocity)
    assert [m.id for m in arrows] == [11]
    arrow = arrows[0]
    assert arrow.type == Marker.ARROW
    start, end = (np.array(_xyz(p)) for p in arrow.points)
    centre = _tracks()[0].object.box.center
    np.testing.assert_allclose(start, centre)
    np.testing.assert_allclose(end, centre + np.array([4.0, 1.0, 0.0]) * 0.5)
    assert arrow.scale.x > 0 and arrow.scale.y > 0


def test_track_marker_ids_are_stable_across_calls() -> None:
    tracks = _tracks()
    first = tracks_to_markers(tracks, STAMP, "base_link")
    # next frame: order changed, one track gone, a new one born
    later = [tracks[4], Track(99, _obj(8.0), TrackStatus.CONFIRMED), tracks[0]]
    second = tracks_to_markers(later, STAMP + 10**8, "base_link")

    def ids_by_text(batch: MarkerBatch) -> dict[str, int]:
        return {m.text: m.id for m in _adds(batch, "tracks/label")}

    a, b = ids_by_text(first), ids_by_text(second)
    for text in ("11 car", "15 pedestrian"):
        assert a[text] == b[text]
    assert b["99 car"] == 99
    cube_ids = {m.id for m in _adds(second, "tracks")}
    assert cube_ids == {15, 99, 11}
    assert track_marker_id(2**31 + 5) == 5
    big = tracks_to_markers([Track(2**31 + 5, _obj(), TrackStatus.CONFIRMED)], STAMP,
                            "base_link")
    assert [m.id for m in _adds(big)] == [5, 5]


def test_track_statuses_are_configurable() -> None:
    cfg = MarkerConfig(track_statuses=(TrackStatus.TENTATIVE,))
    batch = tracks_to_markers(_tracks(), STAMP, "base_link", config=cfg)
    assert [m.id for m in _adds(batch, "tracks")] == [13]


def test_nan_tracks_are_skipped_and_counted() -> None:
    tracks = _tracks()
    _poison(tracks[0].object, "velocity")
    _poison(tracks[2].object, "center")  # tentative: not drawn anyway, not counted
    batch = tracks_to_markers(tracks, STAMP, "base_link")
    assert batch.skipped == 1
    assert [m.id for m in _adds(batch, "tracks")] == [12, 15]
    assert _adds(batch, "tracks/velocity") == []


def test_track_in_another_frame_raises() -> None:
    trk = Track(1, _obj(frame="map"), TrackStatus.CONFIRMED)
    with pytest.raises(ConversionError, match="track 1"):
        tracks_to_markers([trk], STAMP, "base_link")


# --------------------------------------------------------------------------------- path


def test_path_line_strip() -> None:
    poses = np.array([[0.0, 0.0, 0.0], [1.0, 0.5, 0.1], [np.nan, 1.0, 0.0], [2.0, 1.5, 0.2],
                      [3.0, 2.0, np.inf]])
    cfg = MarkerConfig(path_z_m=0.2, path_width_m=0.3)
    batch = path_to_markers(poses, STAMP, "odom", "plan", config=cfg)
    markers = batch.array.markers
    assert batch.skipped == 2
    assert [(m.action, m.ns) for m in markers] == [(Marker.DELETEALL, "plan"),
                                                   (Marker.ADD, "plan")]
    strip = markers[1]
    assert strip.type == Marker.LINE_STRIP and strip.id == 0
    assert strip.header.frame_id == "odom"
    np.testing.assert_allclose([_xyz(p) for p in strip.points],
                               [[0.0, 0.0, 0.2], [1.0, 0.5, 0.2], [2.0, 1.5, 0.2]])
    assert strip.scale.x == pytest.approx(0.3)


@pytest.mark.parametrize("poses", [np.zeros((0, 3)), np.zeros(0), np.array([[1.0, 2.0, 0.0]]),
                                   np.array([[np.nan, 0.0, 0.0], [1.0, 1.0, 1.0]])])
def test_short_paths_only_clear(poses: np.ndarray) -> None:
    batch = path_to_markers(poses, STAMP, "odom")
    assert [m.action for m in batch.array.markers] == [Marker.DELETEALL]


def test_path_with_a_bad_shape_raises() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        path_to_markers(np.zeros((4, 2)), STAMP, "odom")


# ------------------------------------------------------------------- config and lifetime


def test_lifetime() -> None:
    d = lifetime_duration(1.5)
    assert (d.sec, d.nanosec) == (1, 500_000_000)
    d = lifetime_duration(0.0)
    assert (d.sec, d.nanosec) == (0, 0)
    for bad in (-1.0, float("nan"), float("inf"), True):
        with pytest.raises(ConfigError, match="lifetime_s"):
            lifetime_duration(bad)
    with pytest.raises(ConfigError, match="lifetime_s"):
        objects_to_markers([], STAMP, "base_link", lifetime_s=-2.0)


def test_bad_stamp_raises() -> None:
    with pytest.raises(ConversionError, match="stamp"):
        objects_to_markers([], -1, "base_link")


@pytest.mark.parametrize("kwargs, needle", [
    ({"min_alpha": 1.5}, "min_alpha"),
    ({"arrow_time_s": 0.0}, "arrow_time_s"),
    ({"min_speed_mps": -0.1}, "min_speed_mps"),
    ({"text_height_m": float("nan")}, "text_height_m"),
    ({"path_colour": (1.0, 1.0, 1.0)}, "path_colour"),
    ({"path_colour": (1.0, 1.0, 1.0, 2.0)}, "path_colour"),
    ({"track_statuses": ("zombie",)}, "track_statuses"),
    ({"class_colours": {ObjectClass.BUS: (0, 0)}}, "class_colours"),
    ({"frame_locked": "yes"}, "frame_locked"),
])
def test_config_validation_names_the_bad_value(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        MarkerConfig(**kwargs)  # type: ignore[arg-type]


def test_markers_module_imports_without_ros() -> None:
    code = textwrap.dedent("""
        import importlib.abc, sys
        BLOCKED = {"rclpy", "visualization_msgs", "std_msgs", "geometry_msgs",
                   "builtin_interfaces", "sensor_msgs", "cv2"}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked import of {name}")
        sys.meta_path.insert(0, Block())
        import mm_perception.ros.markers
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
