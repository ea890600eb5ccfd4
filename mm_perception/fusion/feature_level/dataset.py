"""Training data of the BEV fusion model, made with the MuJoCo simulator.

A frame of this dataset is what the model sees at run time, taken from the same code path:
the simulator's messages go through :class:`~mm_perception.core.assembly.SetAssembler` (the
synchroniser and LiDAR de-skew of the live and offline pipelines), and
:func:`~mm_perception.fusion.feature_level.processor.frame_inputs` turns each synchronised
:class:`SensorSet` into the model's raw inputs (LiDAR points and radar returns in
``base_link`` at the set stamp, every camera's image and its projection). Only complete sets
(every sensor of the rig present) are kept; modality dropout is applied in training. A rig may
have any number of cameras (``config/rigs/car_surround.yaml``: six, all around); every frame
of a shard has all of them, in the rig's order.

To keep data generation affordable the rig's camera runs at ``camera_rate_hz`` (2.5 Hz: one
camera frame for every fourth 10 Hz LiDAR sweep, rendering is the expensive part) while the
LiDAR, radar and odometry keep their rates, so a kept frame has exactly the sensor timing of
the real rig (the camera and LiDAR stamps coincide as they do at 10 Hz).

Labels are the simulator's ground truth at the set's reference (LiDAR) stamp, with the
LiDAR / radar / camera evidence of all the set's messages summed
(:func:`~mm_perception.eval.runner.merged_truth`, the evaluation's rule).

Each (scenario, seed) becomes one shard ``<scenario>_<seed>.npz``; existing shards are kept,
so an interrupted run resumes. Shard arrays (F frames, ragged arrays concatenated with
``*_offsets`` ``(F + 1,)`` int64 row offsets):

- ``stamps_ns`` ``(F,)`` int64 set stamps;
- ``lidar`` ``(sum N, 4)`` float32 x, y, z (m, ``base_link`` at the set stamp), intensity;
- ``radar`` ``(sum M, 5)`` float32 x, y, z (m, ``base_link`` at the set stamp), radial
  velocity over ground (m/s, ego motion removed, positive = moving away from the radar),
  RCS (dBsm);
- ``images`` ``(F, K, H_in, W_in, 3)`` uint8 RGB of the K cameras, resized to the camera
  network's input;
- ``T_cam_base`` ``(F, K, 4, 4)`` float64: ``base_link`` at the set stamp -> each camera's
  optical frame at its exposure (ego motion between the two included);
- ``boxes`` ``(sum G, 9)`` float32 x, y, z, length, width, height, yaw, vx, vy (``base_link``
  at the set stamp; velocity over ground in ``base_link`` axes, m/s);
- ``labels`` ``(sum G,)`` int8 class index in :data:`~.config.CLASSES`;
- ``evidence`` ``(sum G, 3)`` int32 LiDAR hits, radar hits, visible camera pixels;
- ``cameras`` the K camera models as JSON (a list of ``CameraModel`` fields) and
  ``camera_names``. Shards written before cameras were a list (``images`` ``(F, H, W, 3)``,
  one ``camera`` and ``camera_name``) load as K = 1.

Splits: training seeds 100-399, validation 500-599, seeds >= 900 held out for the final
evaluation and refused here (the camera detector's split).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.calibration import Rig
from mm_perception.core.errors import ConfigError
from mm_perception.core.npz_io import read_npz
from mm_perception.core.sensor_models import CameraStream
from mm_perception.core.types import SensorKind, SensorSet

# one shard per (scene, seed), named and found as the camera detector's dataset does
from mm_perception.detection.camera.dataset import SCENES, check_seeds, find_shards, shard_name
from mm_perception.fusion.feature_level.config import CLASSES, DEFAULT_RIG
from mm_perception.fusion.feature_level.processor import RawFrame, frame_inputs

LOG = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
#: points further than this from base_link (either axis) are not stored, m
STORE_RANGE_M = 60.0
#: Shard fields stored as JSON strings
_JSON_FIELDS = ("cameras", "camera_names")


@dataclass
class Shard:
    """The frames of one dataset shard (see the module docstring for the arrays)."""

    stamps_ns: npt.NDArray[np.int64]
    lidar: F32
    lidar_offsets: npt.NDArray[np.int64]
    radar: F32
    radar_offsets: npt.NDArray[np.int64]
    images: npt.NDArray[np.uint8]
    T_cam_base: npt.NDArray[np.float64]
    boxes: F32
    labels: npt.NDArray[np.int8]
    evidence: npt.NDArray[np.int32]
    box_offsets: npt.NDArray[np.int64]
    cameras: tuple[dict[str, Any], ...]
    camera_names: tuple[str, ...]

    def __post_init__(self) -> None:
        f, k = len(self.stamps_ns), len(self.cameras)
        if (k < 1 or len(self.camera_names) != k or self.images.ndim != 5
                or self.images.shape[:2] != (f, k) or self.T_cam_base.shape != (f, k, 4, 4)):
            raise ValueError(f"Shard: images {self.images.shape} and T_cam_base "
                             f"{self.T_cam_base.shape} must be (frames={f}, cameras={k}, ...) "
                             f"for cameras {list(self.camera_names)}")

    def __len__(self) -> int:
        return int(self.stamps_ns.shape[0])

    @property
    def num_cameras(self) -> int:
        """K, the cameras of every frame."""
        return len(self.cameras)

    def frame(self, i: int) -> RawFrame:
        """Frame ``i`` as the processor's raw input (all sensors present)."""
        from mm_perception.core.camera import CameraModel

        lo, hi = self.lidar_offsets[i], self.lidar_offsets[i + 1]
        rlo, rhi = self.radar_offsets[i], self.radar_offsets[i + 1]
        return RawFrame(lidar=self.lidar[lo:hi], radar=self.radar[rlo:rhi],
                        images=tuple(self.images[i]),
                        cameras=tuple(CameraModel(**c) for c in self.cameras),
                        T_cam_base=tuple(self.T_cam_base[i]), has_lidar=True, has_radar=True)

    def truth(self, i: int) -> tuple[F32, npt.NDArray[np.int8], npt.NDArray[np.int32]]:
        """``(boxes (G, 9), labels (G,), evidence (G, 3))`` of frame ``i``."""
        lo, hi = self.box_offsets[i], self.box_offsets[i + 1]
        return self.boxes[lo:hi], self.labels[lo:hi], self.evidence[lo:hi]


def _offsets(parts: Sequence[np.ndarray]) -> npt.NDArray[np.int64]:
    return np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)


def dataset_rig(rig_path: str | Path = DEFAULT_RIG, camera_rate_hz: float = 2.5) -> Rig:
    """The rig with its cameras slowed to ``camera_rate_hz`` (see the module docstring)."""
    rig = Rig.from_yaml(rig_path)
    sensors = {}
    for name, spec in rig.sensors.items():
        if spec.kind is SensorKind.CAMERA:
            spec = dataclasses.replace(spec, model=CameraStream(rate_hz=camera_rate_hz))
        sensors[name] = spec
    return dataclasses.replace(rig, sensors=sensors)


def _truth_arrays(truth: Sequence[Any]) -> tuple[F32, npt.NDArray[np.int8],
                                                  npt.NDArray[np.int32]]:
    index = {c: k for k, c in enumerate(CLASSES)}
    rows, labels, evidence = [], [], []
    for obj in truth:
        k = index.get(obj.object_class)
        if k is None:
            continue
        b = obj.box_base
        v = obj.velocity_base
        rows.append([*b.center, *b.size, b.yaw, v[0], v[1]])
        labels.append(k)
        evidence.append([obj.lidar_hits, obj.radar_hits, obj.visible_pixels])
    return (np.asarray(rows, np.float32).reshape(-1, 9), np.asarray(labels, np.int8),
            np.asarray(evidence, np.int32).reshape(-1, 3))


def simulate_shard(scene: str, seed: int, rig: Rig, duration_s: float = 12.0,
                   skip_s: float = 0.5) -> Shard:
    """Run one scenario and keep every complete set after ``skip_s`` (see the module
    docstring)."""
    from mm_perception.core.assembly import SetAssembler, sync_config_for_rig
    from mm_perception.detection.camera.config import CameraDetectorConfig
    from mm_perception.detection.camera.processor import CameraProcessor
    from mm_perception.eval.runner import merged_truth
    from mm_perception.sim.ground_truth import index_by_stamp
    from mm_perception.sim.library import load_scenario
    from mm_perception.sim.simulator import SimConfig, Simulator

    check_seeds([seed])
    scenario = load_scenario(scene, seed, platform="vehicle" if scene == "random" else None)
    cam_names = tuple(s.name for s in rig.of_kind(SensorKind.CAMERA))
    if not cam_names:
        raise ConfigError(f"the BEV dataset needs a rig with a camera, {rig.source} has none")
    intrinsics = []
    for name in cam_names:
        cam = rig[name].intrinsics
        if cam is None:
            raise ConfigError(f"{rig.source}: camera {name!r} needs intrinsics")
        intrinsics.append(cam)
    resize = CameraProcessor(CameraDetectorConfig()).resize
    outputs: list[Any] = []
    gt_frames: list[Any] = []
    with Simulator(rig, SimConfig(camera_depth=False, camera_instance=True)) as sim:
        start = sim.reset(scenario)
        t0 = sim.config.start_stamp_ns + start.time_ns
        for step in sim.run(duration_s):
            outputs.extend(step.outputs)
            gt_frames.extend(step.ground_truth)
    # feed in receive order, as a bag replay does
    outputs.sort(key=lambda o: (o.publish_ns, o.stamp_ns, o.sensor))
    sync = sync_config_for_rig(rig)
    assembler = SetAssembler(rig, sync, deskew_lidar=True)
    index = index_by_stamp(gt_frames)
    frames: list[tuple[SensorSet, RawFrame, Any]] = []

    def keep(sets: list[SensorSet]) -> None:
        for sset in sets:
            if sset.missing or sset.stamp_ns - t0 < skip_s * 1e9:
                continue
            truth = merged_truth(sset, rig, sync.reference, index)
            if truth is None:
                continue
            raw = frame_inputs(sset, rig, assembler.odometry)
            if raw.notes:
                LOG.warning("%s seed %d: frame at %d skipped: %s", scene, seed,
                            sset.stamp_ns, "; ".join(raw.notes))
                continue
            # no camera was left out (no notes), so raw's cameras are the set's, in its
            # order: put them in the rig's
            order = [list(sset.cameras).index(n) for n in cam_names]
            raw = dataclasses.replace(raw, images=tuple(raw.images[k] for k in order),
                                      cameras=tuple(raw.cameras[k] for k in order),
                                      T_cam_base=tuple(raw.T_cam_base[k] for k in order))
            frames.append((sset, raw, truth))

    for out in outputs:
        keep(assembler.add(out.sensor, out.value))
    keep(assembler.poll(outputs[-1].publish_ns + 10**10) if outputs else [])
    if not frames:
        raise RuntimeError(f"{scene} seed {seed}: no complete sensor set")
    boxes, labels, evidence = zip(*(_truth_arrays(t) for _, _, t in frames), strict=True)
    lidar = [np.asarray(r.lidar[(np.abs(r.lidar[:, 0]) < STORE_RANGE_M)
                                & (np.abs(r.lidar[:, 1]) < STORE_RANGE_M)], np.float32)
             for _, r, _ in frames]
    radar = [np.asarray(r.radar, np.float32) for _, r, _ in frames]
    return Shard(
        stamps_ns=np.asarray([s.stamp_ns for s, _, _ in frames], np.int64),
        lidar=np.concatenate(lidar), lidar_offsets=_offsets(lidar),
        radar=np.concatenate(radar).reshape(-1, 5), radar_offsets=_offsets(radar),
        images=np.stack([np.stack([resize(im) for im in r.images]) for _, r, _ in frames]),
        T_cam_base=np.stack([np.stack(r.T_cam_base) for _, r, _ in frames]),
        boxes=np.concatenate(boxes), labels=np.concatenate(labels),
        evidence=np.concatenate(evidence), box_offsets=_offsets(boxes),
        cameras=tuple(_camera_fields(cam) for cam in intrinsics), camera_names=cam_names)


def _camera_fields(cam: Any) -> dict[str, Any]:
    """A camera model's fields as JSON-ready values (sequences as lists)."""
    fields = {f.name: getattr(cam, f.name) for f in dataclasses.fields(cam)}
    return {k: (list(v) if isinstance(v, tuple | np.ndarray) else v) for k, v in fields.items()}


def save_shard(path: Path, shard: Shard) -> None:
    """Write a shard as compressed ``.npz`` (atomically: a temp file then a rename)."""
    tmp = path.with_suffix(".tmp.npz")
    arrays = {f.name: getattr(shard, f.name) for f in dataclasses.fields(shard)
              if f.name not in _JSON_FIELDS}
    np.savez_compressed(tmp, **arrays, cameras=np.asarray(json.dumps(list(shard.cameras))),
                        camera_names=np.asarray(json.dumps(list(shard.camera_names))))
    tmp.replace(path)


def load_shard(path: str | Path) -> Shard:
    """Read a shard written by :func:`save_shard` (also one of the single-camera format).

    Raises:
        ConfigError: naming the file, when it is missing, damaged or not a shard.
    """
    with read_npz(path, "BEV dataset shard (delete it; --make-data simulates it again)") as z:
        names = [f.name for f in dataclasses.fields(Shard) if f.name not in _JSON_FIELDS]
        kw: dict[str, Any] = {n: z[n] for n in names}
        if "cameras" in z:
            cameras = tuple(json.loads(str(z["cameras"])))
            camera_names = tuple(json.loads(str(z["camera_names"])))
        else:  # the single-camera format: a camera axis of length 1
            cameras = (json.loads(str(z["camera"])),)
            camera_names = (str(z["camera_name"]),)
            kw["images"] = kw["images"][:, None]
            kw["T_cam_base"] = kw["T_cam_base"][:, None]
        return Shard(**kw, cameras=cameras, camera_names=camera_names)


def make_dataset(out_dir: str | Path, scenes: Sequence[str] = SCENES,
                 seeds: Iterable[int] = range(100, 114), *, rig: str | Path = DEFAULT_RIG,
                 duration_s: float = 12.0, camera_rate_hz: float = 2.5,
                 progress: bool = True) -> list[Path]:
    """Simulate and write one shard per (scene, seed); existing shards are kept.

    Args:
        out_dir: dataset folder (created), e.g. ``/tmp/bevdata``; keep it outside the repo.
        scenes: library scenario names (``random`` restricted to vehicle scenes).
        seeds: scenario seeds (training 100-399, validation 500-599; >= 900 refused).
        rig: the rig YAML (one or more cameras, a LiDAR, a radar, odometry).
        duration_s: simulated seconds per scenario.
        camera_rate_hz: camera rate of the simulation (one kept frame per camera frame).
        progress: show a tqdm progress bar.

    Returns:
        The shard paths, in (scene, seed) order.
    """
    from tqdm import tqdm

    seed_list = check_seeds(seeds)
    if duration_s <= 0 or camera_rate_hz <= 0:
        raise ConfigError(f"duration_s and camera_rate_hz must be > 0, got {duration_s}, "
                          f"{camera_rate_hz}")
    sim_rig = dataset_rig(rig, camera_rate_hz)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    jobs = [(scene, seed) for seed in seed_list for scene in scenes]
    for scene, seed in tqdm(jobs, desc="simulating", unit="scene", disable=not progress):
        path = out / shard_name(scene, seed)
        if not path.exists():
            save_shard(path, simulate_shard(scene, seed, sim_rig, duration_s))
        paths.append(path)
    return paths


__all__ = ["STORE_RANGE_M", "Shard", "dataset_rig", "find_shards", "load_shard",
           "make_dataset", "save_shard", "shard_name", "simulate_shard"]
