"""Pure helpers behind the split nodes (no ROS): the bounded work queue, the painted-points
layout for PointCloud2, and the pipeline's tracking / time-alignment functions the split nodes
share with :class:`PerceptionPipeline`."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mm_perception.core.ego_motion import OdometryBuffer, OdometryBufferConfig
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import Box3D, DetectedObject, EgoState, ObjectClass
from mm_perception.fusion.pipeline import ego_at, to_set_stamp, track_step, world_pose
from mm_perception.ros.nodes.work_queue import WorkQueue
from mm_perception.tracking.tracker import MultiObjectTracker

S = 1_000_000_000


def _obj(x: float, stamp: int, v: float = 0.0) -> DetectedObject:
    return DetectedObject(box=Box3D(np.array([x, 0.0, 0.8]), np.array([4.5, 1.9, 1.6]), 0.0,
                                    "base_link"),
                          label=ObjectClass.CAR, score=0.9, stamp_ns=stamp,
                          velocity=np.array([v, 0.0, 0.0]))


def _odom(speed: float = 10.0) -> OdometryBuffer:
    buf = OdometryBuffer(OdometryBufferConfig())
    for k in range(11):
        t = S + k * 100_000_000
        buf.add(EgoState(t, "odom", "base_link",
                         SE3.from_xy_yaw(speed * (t - S) * 1e-9, 0.0, 0.0),
                         linear_velocity=np.array([speed, 0.0, 0.0])))
    return buf


def test_work_queue_evicts_the_oldest_and_serves_in_order() -> None:
    q: WorkQueue[int] = WorkQueue(2)
    assert q.put([1, 2, 3, 4]) == [1, 2] and len(q) == 2
    seen: list[int] = []
    stop = threading.Event()

    def handle(item: int) -> None:
        seen.append(item)
        if len(seen) == 2:
            stop.set()

    q.serve(stop, handle, poll_s=0.01)
    assert seen == [3, 4] and len(q) == 0
    q.put([5])
    q.clear()
    assert len(q) == 0
    with pytest.raises(ConfigError, match="limit"):
        WorkQueue(0)


def test_painted_points_fit_pointfield() -> None:
    from mm_perception.ros.nodes.sync_node import painted_for_msg

    painted = np.zeros(3, dtype=[("x", "f4"), ("r", "f4"), ("camera", "i2"), ("index", "i8")])
    painted["index"] = [0, 5, 7]
    out = painted_for_msg(painted)
    assert out.dtype["index"] == np.dtype("<u4") and out["index"].tolist() == [0, 5, 7]
    assert out.dtype.names == painted.dtype.names


def test_to_set_stamp_moves_by_ego_and_object_motion() -> None:
    odom = _odom(10.0)
    objs = [_obj(20.0, S + 200_000_000, v=5.0)]
    assert to_set_stamp(objs, S, S, odom, [], "x") is objs  # nothing to move
    notes: list[str] = []
    moved = to_set_stamp(objs, S + 200_000_000, S + 300_000_000, odom, notes, "radar")
    # 0.1 s: the object moves +0.5 m, the ego +1.0 m: 0.5 m closer in base_link
    assert moved[0].box.center[0] == pytest.approx(19.5)
    assert moved[0].stamp_ns == S + 300_000_000 and not notes
    far = to_set_stamp(objs, S + 200_000_000, 50 * S, odom, notes, "radar")
    assert notes and "radar" in notes[0] and far[0].stamp_ns == 50 * S


def test_world_pose_and_track_step() -> None:
    odom = _odom(10.0)
    notes: list[str] = []
    T, failed = world_pose(S + 500_000_000, odom, ego_at(S + 500_000_000, odom), notes)
    assert T is not None and not failed
    assert T.translation[0] == pytest.approx(5.0)
    assert world_pose(S, None, None, notes) == (None, False)  # parked rig: base_link
    T2, failed2 = world_pose(100 * S, odom, None, notes)
    assert T2 is None and failed2 and "not tracked" in notes[-1]
    tracker = MultiObjectTracker()
    assert track_step(tracker, [_obj(20.0, 100 * S)], 100 * S, None, True, "odom") == []
    tracks = track_step(tracker, [_obj(20.0, S + 500_000_000)], S + 500_000_000, T, False,
                        "odom")
    assert len(tracks) == 1
    assert tracks[0].object.box.frame_id == "base_link"
    assert tracks[0].object.box.center[0] == pytest.approx(20.0)
