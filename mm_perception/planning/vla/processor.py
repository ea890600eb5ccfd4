"""Pre- and post-processing of the VLA policy (numpy; shared by training and every backend).

:meth:`VLAProcessor.features` turns a :class:`PlannerObservation` into the network's scene
inputs (:data:`FEATURE_NAMES`, fixed shapes, all float32, no batch dimension); the
instruction's sentence embedding (``text``, ``(384,)``) comes from the
:class:`~mm_perception.planning.vla.text.TextEncoder`. With ``N = max_objects``,
``R = len(LANE_ROLES)``, ``P = lane_points``:

- ``image`` ``(3, H, W)``: the camera image resized to the config's size (area filter),
  ``(rgb / 255 - mean) / std``; zeros without a camera;
- ``image_mask`` ``(1,)``: 1 with a camera image, 0 without (the network then masks every
  image token out of attention: the zeros are never read as a black image);
- ``objects`` ``(N, 21)`` in ``base_link``, nearest first: x, y (/ position scale),
  cos yaw, sin yaw, length, width, height (/ size scale), vx, vy (/ velocity scale), score,
  r, g, b (``[0, 1]``), rgb_valid, class one-hot over :data:`OBJECT_LABELS` (other labels
  count as ``unknown``); zero rows after the last object;
- ``objects_mask`` ``(N,)``: 1 for a real object;
- ``lanes`` ``(R, P, 2)``: one lane per role, in :data:`LANE_ROLES` order, resampled to
  ``P`` points evenly spaced along its arc length, x, y in ``base_link`` / position scale;
- ``lanes_mask`` ``(R,)``: 1 where the observation has a lane with that role;
- ``ego`` ``(3,)``: forward speed, lateral speed (/ velocity scale), yaw rate (/ yaw-rate
  scale), from the ego state's body velocity.

With ``speed_cue`` in the config, the network also gets ``speed_cue`` ``(2,)`` from the
instruction string (:meth:`VLAProcessor.speed_cue`): the speed it names, clipped to the
kinematic head's range and divided by the velocity scale, and 1; zeros when it names none.

Rules for bad values (never a silent wrong number): an object whose position, heading,
size, velocity or score is not finite is left out (as if not perceived; counted in
:attr:`VLAProcessor.dropped_objects`); a non-finite colour (the camera does not see the
object) gives rgb 0 with ``rgb_valid`` 0; a lane with a non-finite point or zero length is
left out (its mask is 0); when several lanes share a role the first is used. A camera image
that is not ``(H, W, 3)`` uint8 raises ``ValueError``.

The grounding label of training (:meth:`VLAProcessor.target_slot`) is the ``objects`` slot
of the perceived object the instruction names (the ground-truth target matched by centre
distance), -1 when there is none.

Targets (training, :meth:`VLAProcessor.targets`) and outputs (:meth:`VLAProcessor.decode`)
are ``(H, 3)``: waypoint x, y in ``base_link`` at the observation (m) and forward speed
(m/s) at the chunk's times, converted with
:func:`~mm_perception.planning.observation.world_to_chunk` /
:func:`~mm_perception.planning.observation.chunk_to_world`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from mm_perception.core.types import EgoState
from mm_perception.planning.instructions import instruction_speed
from mm_perception.planning.observation import (
    LANE_ROLES,
    LanePolyline,
    PlannerObservation,
    SceneObject,
    chunk_to_world,
    world_to_chunk,
)
from mm_perception.planning.trajectory import Trajectory
from mm_perception.planning.vla.config import (
    EGO_FEATURES,
    OBJECT_FEATURES,
    OBJECT_LABELS,
    VLAConfig,
)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

#: the scene inputs of the network, in the order of its ``forward`` arguments
FEATURE_NAMES: tuple[str, ...] = ("image", "image_mask", "objects", "objects_mask", "lanes",
                                  "lanes_mask", "ego")
#: every network input: the scene features, the sentence embedding, then the optional
#: speed cue (only with ``VLAConfig.speed_cue``; see :func:`input_names`)
INPUT_NAMES: tuple[str, ...] = (*FEATURE_NAMES, "text", "speed_cue")
#: the network's one output: ``(B, H, 3)`` float32 waypoint x, y (m, base_link), speed (m/s)
OUTPUT_NAME = "chunk"
_LABEL_INDEX = {label: i for i, label in enumerate(OBJECT_LABELS)}
#: :meth:`VLAProcessor.target_slot`: farthest a perceived centre may be from the target's, m
TARGET_GATE_M = 3.0


def input_names(config: VLAConfig) -> tuple[str, ...]:
    """The inputs a network of ``config`` takes, in the order of its ``forward`` arguments
    (:data:`INPUT_NAMES` without ``speed_cue`` unless the config has it)."""
    return tuple(n for n in INPUT_NAMES if n != "speed_cue" or config.speed_cue)


def resample_polyline(points: F64, count: int) -> F64 | None:
    """``(P, 2)`` polyline -> ``(count, 2)`` points evenly spaced along its arc length, from
    its first to its last point; None when it has zero length (no direction)."""
    seg = np.hypot(*np.diff(points, axis=0).T)
    total = float(seg.sum())
    if not total > 1e-6:
        return None
    s = np.concatenate([[0.0], np.cumsum(seg)])
    # repeated points make s non-increasing steps: drop them so that interp is well defined
    keep = np.concatenate([[True], seg > 0.0])
    q = np.linspace(0.0, total, count)
    return np.stack([np.interp(q, s[keep], points[keep, 0]),
                     np.interp(q, s[keep], points[keep, 1])], axis=1)


class VLAProcessor:
    """Observation -> network features, expert trajectory -> targets, output -> trajectory
    (see the module docstring).

    Attributes:
        dropped_objects: objects left out so far because of non-finite values.
    """

    def __init__(self, config: VLAConfig) -> None:
        self.config = config
        self._mean = np.asarray(config.image_mean, np.float32).reshape(3, 1, 1)
        self._std = np.asarray(config.image_std, np.float32).reshape(3, 1, 1)
        self.dropped_objects = 0

    # ------------------------------------------------------------------ shapes
    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every feature (no batch dimension); all are float32."""
        c = self.config
        return {"image": (3, c.image_height, c.image_width), "image_mask": (1,),
                "objects": (c.max_objects, OBJECT_FEATURES), "objects_mask": (c.max_objects,),
                "lanes": (c.num_lanes, c.lane_points, 2), "lanes_mask": (c.num_lanes,),
                "ego": (EGO_FEATURES,)}

    # ------------------------------------------------------------------ instruction
    def speed_cue(self, instruction: str) -> F32:
        """``(2,)`` float32 speed cue of an instruction (module docstring): the speed
        :func:`~mm_perception.planning.instructions.instruction_speed` reads, clipped to
        ``[0, head_max_speed_mps]`` (the policy cannot drive faster, and "200 km/h" must
        not become an input far outside what it was trained on) / ``velocity_scale_mps``,
        and 1; ``(0, 0)`` when the instruction names no speed, or one too large to be a
        finite float (hundreds of digits: not a speed anyone meant)."""
        speed = instruction_speed(instruction)
        if speed is None or not math.isfinite(speed):
            return np.zeros(2, np.float32)
        c = self.config
        v = min(max(speed, 0.0), c.head_max_speed_mps) / c.velocity_scale_mps
        return np.asarray([v, 1.0], np.float32)

    # ------------------------------------------------------------------ image
    def image_u8(self, image: U8 | None) -> tuple[U8, bool]:
        """Camera image -> ``((3, H, W) uint8 resized, present)``; zeros when None.

        This compact form is what a demonstration set stores (a quarter of the float32
        size); :meth:`normalize_image` finishes it."""
        c = self.config
        if image is None:
            return np.zeros((3, c.image_height, c.image_width), np.uint8), False
        if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
                or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0):
            shape = getattr(image, "shape", None)
            dtype = getattr(image, "dtype", type(image).__name__)
            raise ValueError(f"camera image must be (H, W, 3) uint8 RGB, got {shape} {dtype}")
        img: np.ndarray = image
        if img.shape[:2] != (c.image_height, c.image_width):
            import cv2

            interp = cv2.INTER_AREA if img.shape[1] > c.image_width else cv2.INTER_LINEAR
            img = cv2.resize(np.ascontiguousarray(img), (c.image_width, c.image_height),
                             interpolation=interp)
        return np.ascontiguousarray(img.transpose(2, 0, 1)), True

    def normalize_image(self, chw_u8: U8, present: bool | float = True) -> F32:
        """``(3, H, W)`` uint8 -> ``(3, H, W)`` float32 normalised; zeros when not present."""
        if not present:
            return np.zeros(chw_u8.shape, np.float32)
        x = (chw_u8.astype(np.float32) / np.float32(255.0) - self._mean) / self._std
        return np.ascontiguousarray(x, dtype=np.float32)

    # ------------------------------------------------------------------ objects
    def _object_rows(self, objects: Sequence[SceneObject], count_dropped: bool = True,
                     ) -> list[tuple[SceneObject, F32]]:
        """The objects that get a slot, in slot order (nearest first, the id breaking ties;
        at most ``max_objects``), each with its feature row; objects with non-finite values
        are left out (counted in :attr:`dropped_objects` when ``count_dropped``)."""
        c = self.config
        rows: list[tuple[float, int, SceneObject, F32]] = []
        for obj in objects:
            geom = np.concatenate([obj.xy, [obj.yaw], obj.size, obj.velocity, [obj.score]])
            if not np.all(np.isfinite(geom)):
                self.dropped_objects += int(count_dropped)
                continue
            rgb_ok = bool(np.all(np.isfinite(obj.rgb)))
            rgb = np.clip(obj.rgb, 0.0, 1.0) if rgb_ok else np.zeros(3)
            onehot = np.zeros(len(OBJECT_LABELS))
            onehot[_LABEL_INDEX.get(obj.label, _LABEL_INDEX["unknown"])] = 1.0
            feat = np.concatenate([
                obj.xy / c.position_scale_m, [math.cos(obj.yaw), math.sin(obj.yaw)],
                obj.size / c.size_scale_m, obj.velocity / c.velocity_scale_mps,
                [min(max(obj.score, 0.0), 1.0)], rgb, [float(rgb_ok)], onehot])
            rows.append((float(np.hypot(*obj.xy)), obj.object_id, obj, feat.astype(np.float32)))
        rows.sort(key=lambda r: (r[0], r[1]))
        return [(obj, feat) for _, _, obj, feat in rows[:c.max_objects]]

    def object_features(self, objects: Sequence[SceneObject]) -> tuple[F32, F32]:
        """Objects -> ``(objects (N, 21), objects_mask (N,))`` float32 (module docstring)."""
        c = self.config
        out = np.zeros((c.max_objects, OBJECT_FEATURES), np.float32)
        mask = np.zeros(c.max_objects, np.float32)
        for i, (_, feat) in enumerate(self._object_rows(objects)):
            out[i] = feat
            mask[i] = 1.0
        return out, mask

    def target_slot(self, objects: Sequence[SceneObject], target: SceneObject | None,
                    gate_m: float = TARGET_GATE_M) -> int:
        """The slot of :meth:`object_features` holding the perceived object that is
        ``target`` (a ground-truth object, ``base_link``), or -1 (no target, or no perceived
        object near it).

        The perceived object is the one whose centre is nearest the target's, within
        ``max(gate_m, target length / 2)`` m: perception may split a long vehicle in two
        boxes (the nearer piece is taken) or miss it at range (-1)."""
        if target is None or not np.all(np.isfinite(target.xy)):
            return -1
        gate = max(gate_m, float(target.size[0]) / 2.0)
        best, best_d = -1, gate
        for i, (obj, _) in enumerate(self._object_rows(objects, count_dropped=False)):
            d = float(np.hypot(*(obj.xy - target.xy)))
            if d <= best_d:
                best, best_d = i, d
        return best

    # ------------------------------------------------------------------ lanes
    def lane_features(self, lanes: Sequence[LanePolyline]) -> tuple[F32, F32]:
        """Lanes -> ``(lanes (R, P, 2), lanes_mask (R,))`` float32 (module docstring)."""
        c = self.config
        out = np.zeros((c.num_lanes, c.lane_points, 2), np.float32)
        mask = np.zeros(c.num_lanes, np.float32)
        for lane in lanes:
            r = LANE_ROLES.index(lane.role)
            if mask[r] or not np.all(np.isfinite(lane.points)):
                continue
            pts = resample_polyline(lane.points, c.lane_points)
            if pts is None:
                continue
            out[r] = pts / c.position_scale_m
            mask[r] = 1.0
        return out, mask

    # ------------------------------------------------------------------ ego
    def ego_features(self, ego: EgoState) -> F32:
        """``(3,)`` float32: forward, lateral speed (scaled), yaw rate (scaled)."""
        c = self.config
        v, w = ego.linear_velocity, ego.angular_velocity
        return np.array([v[0] / c.velocity_scale_mps, v[1] / c.velocity_scale_mps,
                         w[2] / c.yaw_rate_scale_rps], np.float32)

    # ------------------------------------------------------------------ all features
    def compact_features(self, obs: PlannerObservation) -> dict[str, np.ndarray]:
        """:meth:`features` with ``image`` as ``(3, H, W)`` uint8 (not yet normalised), the
        form a demonstration set stores; :meth:`expand` finishes it."""
        image, present = self.image_u8(obs.image)
        objects, objects_mask = self.object_features(obs.objects)
        lanes, lanes_mask = self.lane_features(obs.lanes)
        return {"image": image, "image_mask": np.array([float(present)], np.float32),
                "objects": objects, "objects_mask": objects_mask, "lanes": lanes,
                "lanes_mask": lanes_mask, "ego": self.ego_features(obs.ego)}

    def expand(self, compact: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Compact features (one observation or a batch) -> network features (float32)."""
        out = {k: np.asarray(compact[k], np.float32) for k in FEATURE_NAMES if k != "image"}
        image = np.asarray(compact["image"])
        if image.dtype == np.uint8:
            present = out["image_mask"].reshape(*out["image_mask"].shape[:-1], 1, 1, 1)
            norm = self.normalize_image(image)
            out["image"] = np.ascontiguousarray(norm * present.astype(np.float32))
        else:
            out["image"] = np.asarray(image, np.float32)
        return {k: out[k] for k in FEATURE_NAMES}

    def features(self, obs: PlannerObservation) -> dict[str, np.ndarray]:
        """The scene inputs :data:`FEATURE_NAMES` of one observation (module docstring):
        float32 arrays of :meth:`feature_shapes`, no batch dimension."""
        return self.expand(self.compact_features(obs))

    @staticmethod
    def batch(items: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Stack per-observation arrays along a new leading batch dimension."""
        if not items:
            raise ValueError("cannot batch zero observations")
        return {k: np.ascontiguousarray(np.stack([it[k] for it in items]))
                for k in items[0]}

    # ------------------------------------------------------------------ targets / decoding
    def targets(self, ego: EgoState, expert: Trajectory) -> F32:
        """The imitation target of ``expert`` at ``ego``: ``(H, 3)`` float32 waypoint x, y
        (m, ``base_link`` at ``ego``) and speed (m/s) on the chunk's time grid.

        Raises:
            ValueError: another frame, an unsampleable or non-finite trajectory.
        """
        xy, speed = world_to_chunk(ego, expert, self.config.chunk)
        out = np.concatenate([xy, speed[:, None]], axis=1)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"expert trajectory from {expert.source!r} gives non-finite "
                             "targets")
        return out.astype(np.float32)

    def decode(self, pred: npt.ArrayLike, ego: EgoState, source: str) -> Trajectory:
        """Network output ``(H, 3)`` (waypoint x, y in ``base_link``, m; speed, m/s) -> the
        world-frame :class:`Trajectory` stamped at ``ego`` (``H + 1`` samples, the current
        pose first; with the kinematic head the headings are its arcs' tangents).
        Non-finite values stay non-finite: the safety filter rejects them."""
        arr = np.asarray(pred, np.float64)
        h = self.config.horizon
        if arr.shape != (h, 3):
            raise ValueError(f"VLA output must have shape ({h}, 3), got {arr.shape}")
        kinematic = self.config.action_head == "kinematic"
        return chunk_to_world(ego, arr[:, :2], arr[:, 2], self.config.chunk, source,
                              arc_max_curvature_1pm=(self.config.head_max_curvature_1pm
                                                     if kinematic else None))


__all__ = ["FEATURE_NAMES", "INPUT_NAMES", "OUTPUT_NAME", "VLAProcessor", "input_names",
           "resample_polyline"]
