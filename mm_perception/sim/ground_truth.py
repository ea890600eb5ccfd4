"""Ground truth of simulated recordings: per-message object lists, as a JSON Lines sidecar.

Every sensor message the simulator writes has one ground-truth record with the *same stamp*:
the state of every agent at that instant (3D box in the world and in ``base_link``, class,
persistent id, velocity) plus what that message saw of it (LiDAR / radar hit counts, camera
visible pixels). The records go to ``ground_truth.jsonl`` inside the bag directory (one JSON
object per line, in write order), so the labels travel with the bag; :func:`load_ground_truth`
reads them back for evaluation and training.

Record format (``GT_FORMAT_VERSION`` 1)::

    {"version": 1, "stamp_ns": 1700000000100000000, "sensor": "lidar_top",
     "kind": "lidar", "ego": {"x":..,"y":..,"yaw":..,"speed":..,"yaw_rate":..},
     "objects": [{"id": 3, "class": "car",
                  "box_world": {"center": [x,y,z], "size": [l,w,h], "yaw": r},
                  "box_base": {"center": [...], "size": [...], "yaw": r},
                  "velocity_world": [vx,vy,vz], "velocity_base": [vx,vy,vz],
                  "yaw_rate": w, "lidar_hits": 120, "radar_hits": 0,
                  "visible_pixels": 0, "projected_pixels": 0}, ...]}

Box centres are box centres (not footprints); velocities in ``base_link`` are relative to the
world expressed in base_link axes (not relative to the moving ego).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_perception.core.errors import BagError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import Box3D, ObjectClass
from mm_perception.sim.spec import ActorModel, ActorState

GT_FILENAME = "ground_truth.jsonl"
GT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class GroundTruthObject:
    """One agent at one stamp.

    Attributes:
        actor_id: persistent id (>= 1).
        object_class: class.
        box_world / box_base: the 3D box in the world and in ``base_link``.
        velocity_world / velocity_base: ``(3,)`` m/s of the box centre, world axes / base_link
            axes (absolute velocity, not relative to the ego).
        yaw_rate: rad/s.
        lidar_hits / radar_hits: returns of this message on the object (0 for other kinds).
        visible_pixels: camera pixels whose instance id is this object (camera messages).
        projected_pixels: pixels covered by the projected box (camera messages); the visible
            fraction is ``visible_pixels / projected_pixels``.
    """

    actor_id: int
    object_class: ObjectClass
    box_world: Box3D
    box_base: Box3D
    velocity_world: np.ndarray
    velocity_base: np.ndarray
    yaw_rate: float
    lidar_hits: int = 0
    radar_hits: int = 0
    visible_pixels: int = 0
    projected_pixels: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.actor_id, "class": self.object_class.value,
            "box_world": _box_json(self.box_world), "box_base": _box_json(self.box_base),
            "velocity_world": _floats(self.velocity_world),
            "velocity_base": _floats(self.velocity_base), "yaw_rate": self.yaw_rate,
            "lidar_hits": self.lidar_hits, "radar_hits": self.radar_hits,
            "visible_pixels": self.visible_pixels, "projected_pixels": self.projected_pixels,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GroundTruthObject:
        return cls(
            actor_id=int(data["id"]), object_class=ObjectClass(data["class"]),
            box_world=_box_from_json(data["box_world"], "world"),
            box_base=_box_from_json(data["box_base"], "base_link"),
            velocity_world=np.asarray(data["velocity_world"], dtype=np.float64),
            velocity_base=np.asarray(data["velocity_base"], dtype=np.float64),
            yaw_rate=float(data["yaw_rate"]), lidar_hits=int(data["lidar_hits"]),
            radar_hits=int(data["radar_hits"]), visible_pixels=int(data["visible_pixels"]),
            projected_pixels=int(data["projected_pixels"]))


@dataclass(frozen=True)
class GroundTruthFrame:
    """Ground truth for one sensor message (same stamp as the message)."""

    stamp_ns: int
    sensor: str
    kind: str
    ego: ActorState
    objects: tuple[GroundTruthObject, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"version": GT_FORMAT_VERSION, "stamp_ns": self.stamp_ns, "sensor": self.sensor,
                "kind": self.kind,
                "ego": {"x": self.ego.x, "y": self.ego.y, "yaw": self.ego.yaw,
                        "speed": self.ego.speed, "yaw_rate": self.ego.yaw_rate},
                "objects": [o.to_json() for o in self.objects]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GroundTruthFrame:
        if data.get("version") != GT_FORMAT_VERSION:
            raise BagError(f"ground truth record version {data.get('version')!r} is not "
                           f"supported (expected {GT_FORMAT_VERSION})")
        e = data["ego"]
        ego = ActorState(0, float(e["x"]), float(e["y"]), float(e["yaw"]), float(e["speed"]),
                         float(e["yaw_rate"]))
        return cls(int(data["stamp_ns"]), str(data["sensor"]), str(data["kind"]), ego,
                   tuple(GroundTruthObject.from_json(o) for o in data["objects"]))

    def by_id(self) -> dict[int, GroundTruthObject]:
        return {o.actor_id: o for o in self.objects}


def _floats(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def _box_json(box: Box3D) -> dict[str, Any]:
    return {"center": _floats(box.center), "size": _floats(box.size), "yaw": box.yaw}


def _box_from_json(data: Mapping[str, Any], frame: str) -> Box3D:
    return Box3D(np.asarray(data["center"], dtype=np.float64),
                 np.asarray(data["size"], dtype=np.float64), float(data["yaw"]), frame)


def actor_pose(state: ActorState) -> SE3:
    """``T_world_actor`` (actor frame: footprint centre on the ground, x forward)."""
    return SE3.from_rpy(0.0, 0.0, state.yaw, (state.x, state.y, state.z))


def object_truth(state: ActorState, model: ActorModel, T_base_world: SE3,
                 **counts: int) -> GroundTruthObject:
    """Ground truth of one agent given its state, its model and the ego pose.

    Args:
        state: the agent's state at the stamp.
        model: its model (size, class).
        T_base_world: inverse ego pose at the stamp.
        counts: ``lidar_hits``, ``radar_hits``, ``visible_pixels``, ``projected_pixels``.
    """
    center_world = np.array([state.x, state.y, state.z + model.size[2] / 2])
    box_world = Box3D(center_world, model.size, state.yaw, "world")
    vel_world = state.point_velocity(center_world[None, :])[0]
    return GroundTruthObject(
        actor_id=state.actor_id, object_class=model.object_class, box_world=box_world,
        box_base=box_world.transformed(T_base_world, "base_link"),
        velocity_world=vel_world, velocity_base=T_base_world.rotate(vel_world),
        yaw_rate=state.yaw_rate, **counts)


class GroundTruthWriter:
    """Appends records to ``<bag>/ground_truth.jsonl`` (the bag directory must exist)."""

    def __init__(self, bag_dir: str | Path) -> None:
        self.path = Path(bag_dir) / GT_FILENAME
        self._file = self.path.open("w", encoding="utf-8")
        self.count = 0

    def write(self, frame: GroundTruthFrame) -> None:
        # sorted keys and repr-exact floats keep the file byte-identical across runs
        self._file.write(json.dumps(frame.to_json(), sort_keys=True) + "\n")
        self.count += 1

    def close(self) -> None:
        self._file.close()


def load_ground_truth(bag: str | Path) -> list[GroundTruthFrame]:
    """All ground-truth records of a simulated bag (directory, or the sidecar file itself).

    Raises:
        BagError: no sidecar, or a malformed line (its number is named).
    """
    path = Path(bag)
    if path.is_dir():
        path = path / GT_FILENAME
    if not path.is_file():
        raise BagError(f"no ground truth at {path} (only simulated bags have it)")
    return list(_iter_lines(path))


def _iter_lines(path: Path) -> Iterator[GroundTruthFrame]:
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield GroundTruthFrame.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise BagError(f"{path}:{number}: malformed ground-truth record: "
                               f"{type(exc).__name__}: {exc}") from exc


def index_by_stamp(frames: Sequence[GroundTruthFrame],
                   ) -> dict[tuple[str, int], GroundTruthFrame]:
    """``(sensor, stamp_ns) -> record`` for looking up the truth of a message."""
    return {(f.sensor, f.stamp_ns): f for f in frames}


__all__ = ["GT_FILENAME", "GT_FORMAT_VERSION", "GroundTruthFrame", "GroundTruthObject",
           "GroundTruthWriter", "actor_pose", "index_by_stamp", "load_ground_truth",
           "object_truth"]
