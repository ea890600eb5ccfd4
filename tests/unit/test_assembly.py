"""SetAssembler: a matched set waits for the odometry that covers it (its LiDAR sweep's last
point), so the same sets come out whether a sweep arrives before or after the pose that ends
it; late or absent odometry releases the set after ``odometry_wait_ns`` (counted), and the
end of the stream releases everything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mm_perception.core.assembly import SetAssembler
from mm_perception.core.calibration import Rig
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import EgoState, PointCloud, SensorSet

T0 = 100_000_000_000
SWEEP = 100_000_000  # 10 Hz sweep, ns
SPEED = 20.0  # m/s along x

RIG = """
base_frame: base_link
sensors:
  lidar_top:
    type: lidar
    topic: /points
    frame_id: lidar_top
    extrinsics: {translation: [0.0, 0.0, 0.0], rpy: [0.0, 0.0, 0.0]}
    fields: {x: x, y: y, z: z}
    point_time: {field: t, unit: ns, reference: relative}
  odom:
    type: odometry
    topic: /odom
"""


@pytest.fixture()
def rig(tmp_path: Path) -> Rig:
    path = tmp_path / "rig.yaml"
    path.write_text(RIG)
    return Rig.from_yaml(path)


@pytest.fixture()
def rig_without_odometry(tmp_path: Path) -> Rig:
    path = tmp_path / "rig.yaml"
    path.write_text(RIG.split("  odom:")[0])
    return Rig.from_yaml(path)


def _sweep(stamp: int) -> PointCloud:
    """A static wall point seen at 10 instants across the sweep [stamp, stamp + 90 ms]."""
    n = 10
    offsets = np.arange(n, dtype=np.int64) * (SWEEP // n)
    pts = np.zeros(n, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    # the ego moves +x at SPEED: a point fixed at x=30 m in the world is seen nearer later
    pts["x"] = 30.0 - SPEED * (offsets / 1e9)
    return PointCloud("lidar_top", stamp, "lidar_top", pts, time_offsets_ns=offsets)


def _pose(stamp: int) -> EgoState:
    x = SPEED * (stamp - T0) / 1e9
    return EgoState(stamp, "odom", "base_link", SE3(np.eye(3), np.array([x, 0.0, 0.0])),
                    linear_velocity=np.array([SPEED, 0.0, 0.0]))


def _stream(odometry_late_by: int) -> list[tuple[str, object]]:
    """Three sweeps and 50 Hz poses, in arrival order: each sweep arrives when its last point
    is taken; a pose arrives ``odometry_late_by`` ns after its stamp."""
    events: list[tuple[int, int, str, object]] = []
    for k in range(3):
        stamp = T0 + k * SWEEP
        events.append((stamp + SWEEP - SWEEP // 10, 1, "lidar_top", _sweep(stamp)))
    for i in range(0, 20):
        stamp = T0 + i * 20_000_000
        events.append((stamp + odometry_late_by, 0, "odom", _pose(stamp)))
    return [(name, value) for _, _, name, value in sorted(events, key=lambda e: e[:2])]


def _run(assembler: SetAssembler, stream: list[tuple[str, object]]
         ) -> tuple[list[SensorSet], list[int]]:
    """All sets, and after how many messages each came out."""
    sets: list[SensorSet] = []
    when: list[int] = []
    for i, (name, value) in enumerate(stream):
        out = assembler.add(name, value)  # type: ignore[arg-type]
        sets += out
        when += [i] * len(out)
    sets += assembler.flush()
    return sets, when


def test_sets_wait_for_the_pose_that_ends_the_sweep(rig: Rig) -> None:
    in_time, when = _run(SetAssembler(rig), _stream(odometry_late_by=0))
    late, _ = _run(SetAssembler(rig), _stream(odometry_late_by=30_000_000))
    assert [s.stamp_ns for s in in_time] == [T0, T0 + SWEEP, T0 + 2 * SWEEP]
    # a set comes out only with the first pose at or after its sweep's last point (T0 + 90 ms:
    # the pose at T0 + 100 ms), whatever the arrival order
    for a, b in zip(in_time, late, strict=True):
        assert a.stamp_ns == b.stamp_ns
        np.testing.assert_array_equal(a.lidars["lidar_top"].points["x"],
                                      b.lidars["lidar_top"].points["x"])
    # de-skewed to the set stamp with real poses: the wall is at 30 m for every point
    for s in in_time[:2]:
        np.testing.assert_allclose(s.lidars["lidar_top"].points["x"], 30.0, atol=1e-3)
    stream = _stream(0)
    first_pose_after = next(i for i, (n, v) in enumerate(stream)
                            if n == "odom" and v.stamp_ns >= T0 + 90_000_000)  # type: ignore
    assert when[0] == first_pose_after


def test_late_or_missing_odometry_releases_the_set_after_the_wait(rig: Rig) -> None:
    assembler = SetAssembler(rig, odometry_wait_ns=50_000_000)
    assert assembler.add("odom", _pose(T0)) == []
    assert assembler.add("lidar_top", _sweep(T0)) == []
    assert assembler.pending == 1
    # the node clock passing the sweep end + the wait releases it, counted
    assert assembler.poll(T0 + 90_000_000 + 50_000_000) == []
    out = assembler.poll(T0 + 90_000_000 + 50_000_001)
    assert [s.stamp_ns for s in out] == [T0]
    assert assembler.summary.odometry_late == 1
    # the data clock does the same offline: a sweep far enough on releases the held one
    assert assembler.add("lidar_top", _sweep(T0 + SWEEP)) == []
    out = assembler.add("lidar_top", _sweep(T0 + 3 * SWEEP))
    assert [s.stamp_ns for s in out] == [T0 + SWEEP]
    assert assembler.summary.odometry_late == 2
    assert [s.stamp_ns for s in assembler.flush()] == [T0 + 3 * SWEEP]


def test_a_clock_jump_releases_what_was_held(rig: Rig) -> None:
    assembler = SetAssembler(rig)
    assembler.add("odom", _pose(T0 + 5 * SWEEP))
    assert assembler.add("lidar_top", _sweep(T0 + 5 * SWEEP)) == []
    # a looped bag: the next sweep is 5 s earlier
    out = assembler.add("lidar_top", _sweep(T0 - 5_000_000_000))
    assert [s.stamp_ns for s in out] == [T0 + 5 * SWEEP]
    assert assembler.pending == 1


def test_a_rig_without_odometry_does_not_wait(rig_without_odometry: Rig) -> None:
    assembler = SetAssembler(rig_without_odometry)
    assert [s.stamp_ns for s in assembler.add("lidar_top", _sweep(T0))] == [T0]
    assert assembler.summary.odometry_late == 0


def test_a_negative_wait_is_a_config_error(rig: Rig) -> None:
    with pytest.raises(ConfigError, match="odometry_wait_ns"):
        SetAssembler(rig, odometry_wait_ns=-1)
