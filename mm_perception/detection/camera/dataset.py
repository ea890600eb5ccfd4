"""Training data of the camera detector, made with the MuJoCo simulator.

:func:`make_dataset` runs library scenarios (``highway``, ``intersection``, ``parking_lot``,
``urban``, ``random`` restricted to vehicle scenes) with only the rig's front camera (plus
odometry) simulated, and keeps one frame every ``sample_period_s`` (the camera rate is set to
that period, so skipped frames are never rendered). Each (scenario, seed) becomes one
compressed shard ``<scenario>_<seed>.npz`` in the output folder (outside the repository);
existing shards are kept, so an interrupted run resumes.

Labels. The 2D box of an actor is the tight box of its pixels in the simulator's instance
image (full camera resolution, pixel-edge convention: ``x2`` = last column + 1), so it is the
box of what is *visible*, as a detector should output. An actor is

- a **target** when it has at least :data:`MIN_VISIBLE_PIXELS` visible pixels (30 px of a
  640x480 image: about 4x2 cells of the stride-4 heatmap at 320x240, below that there is
  nothing to learn) and is not heavily occluded;
- **ignored** (no loss around it in training, neither true nor false positive in the AP)
  when it has some visible pixels but fewer than that, or when its visible fraction
  ``visible_pixels / projected_pixels`` (instance pixels over the area of its projected 3D box
  inside the image) is below :data:`MIN_VISIBLE_FRACTION`. The fraction is small for thin
  shapes even unoccluded (a pedestrian fills ~30-50 % of its box hull, a car ~70-90 %), so the
  threshold is low (0.1) and only removes objects mostly hidden behind others. An actor whose
  box reaches behind the camera has no projected area (0): it is close and truncated, not
  occluded, and is kept.

Splits: training seeds 100-399, validation seeds 500-599; seeds >= 900 are held out for the
final evaluation and refused here.

Shard arrays: ``images`` ``(N, H_in, W_in, 3)`` uint8 RGB resized to the network input with
:meth:`CameraProcessor.resize` (the same function inference uses); ``class_maps``
``(N, H_in, W_in)`` uint8 (0 background, ``k + 1`` = class ``k``, nearest-neighbour
downscaled); ``boxes`` ``(M, 4)`` float32 original-image pixels; ``labels`` ``(M,)`` int16
class index; ``image_index`` ``(M,)`` int32; ``ignore`` ``(M,)`` bool; ``stamps_ns``
``(N,)`` int64; ``orig_size`` ``(2,)`` int32 ``(W, H)``; ``classes`` the class names.

The simulator is imported lazily (inside functions): ``mm_perception.detection`` stays free of
MuJoCo for inference.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.core.npz_io import read_npz
from mm_perception.detection.camera.config import CameraDetectorConfig
from mm_perception.detection.camera.processor import CameraProcessor

LOG = logging.getLogger(__name__)

#: scenarios the detector is trained and validated on (all with the car platform)
SCENES: tuple[str, ...] = ("highway", "intersection", "parking_lot", "urban", "random")
#: seeds of the splits; seeds >= HELD_OUT_SEED are reserved for the final evaluation
TRAIN_SEEDS = range(100, 400)
VAL_SEEDS = range(500, 600)
HELD_OUT_SEED = 900
#: fewer visible pixels (original image) than this: the object is ignored, not a target
MIN_VISIBLE_PIXELS = 30
#: visible / projected-box pixels below this: heavily occluded, ignored
MIN_VISIBLE_FRACTION = 0.1
#: the rig the data is rendered with, relative to the repository root
DEFAULT_RIG = Path(__file__).resolve().parents[3] / "config" / "rigs" / "car.yaml"


@dataclass
class Shard:
    """One dataset shard in memory (see the module docstring for the arrays)."""

    images: npt.NDArray[np.uint8]
    class_maps: npt.NDArray[np.uint8]
    boxes: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int16]
    image_index: npt.NDArray[np.int32]
    ignore: npt.NDArray[np.bool_]
    stamps_ns: npt.NDArray[np.int64]
    orig_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def image_boxes(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(boxes (M, 4) float32 original pixels, labels (M,) int64, ignore (M,) bool)``
        of image ``i``."""
        sel = self.image_index == i
        return self.boxes[sel], self.labels[sel].astype(np.int64), self.ignore[sel]


def check_seeds(seeds: Iterable[int]) -> list[int]:
    """The seeds as a list; refuses the held-out evaluation seeds (>= 900)."""
    out = [int(s) for s in seeds]
    bad = [s for s in out if s >= HELD_OUT_SEED or s < 0]
    if bad:
        raise ConfigError(f"seeds {bad[:5]} are not allowed for training/validation data "
                          f"(seeds >= {HELD_OUT_SEED} are held out for the final evaluation)")
    return out


def camera_rig(rig_path: str | Path = DEFAULT_RIG, camera: str = "cam_front",
               rate_hz: float = 2.5) -> Any:
    """A rig with only ``camera`` (its rate set to ``rate_hz``) and the odometry: the
    simulator then renders nothing else, which makes data generation several times faster."""
    from mm_perception.core.calibration import Rig
    from mm_perception.core.sensor_models import CameraStream
    from mm_perception.core.types import SensorKind

    rig = Rig.from_yaml(rig_path)
    spec = rig[camera]
    if spec.kind is not SensorKind.CAMERA:
        raise ConfigError(f"{rig.source}: sensor {camera!r} is a {spec.kind.value}, not a camera")
    sensors = {camera: dataclasses.replace(spec, model=CameraStream(rate_hz=rate_hz))}
    sensors.update({s.name: s for s in rig.of_kind(SensorKind.ODOMETRY)})
    return Rig(rig.base_frame, sensors, {}, rig.source)


def label_frame(instance: np.ndarray, objects: Sequence[Any],
                classes: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray]:
    """2D labels of one camera frame from its instance image and ground truth.

    Args:
        instance: ``(H, W)`` int32 actor id per pixel (-1 background).
        objects: the frame's ``GroundTruthObject`` s (``actor_id``, ``object_class``,
            ``visible_pixels``, ``projected_pixels``).
        classes: the detector classes (index = label).

    Returns:
        ``boxes`` ``(M, 4)`` float32 tight boxes (pixel edges), ``labels`` ``(M,)`` int16,
        ``ignore`` ``(M,)`` bool, and ``class_map`` ``(H, W)`` uint8 (0 background, k + 1 =
        class k). Objects of other classes and objects without visible pixels are skipped.
    """
    index = {c: i for i, c in enumerate(classes)}
    class_map = np.zeros(instance.shape, np.uint8)
    boxes, labels, ignore = [], [], []
    for obj in objects:
        label = index.get(obj.object_class)
        if label is None or obj.visible_pixels <= 0:
            continue
        mask = instance == obj.actor_id
        if not mask.any():
            continue
        class_map[mask] = label + 1
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        boxes.append((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
        labels.append(label)
        fraction = (obj.visible_pixels / obj.projected_pixels if obj.projected_pixels > 0
                    else 1.0)
        ignore.append(obj.visible_pixels < MIN_VISIBLE_PIXELS
                      or fraction < MIN_VISIBLE_FRACTION)
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int16),
            np.asarray(ignore, bool), class_map)


def simulate_shard(scene: str, seed: int, rig: Any, processor: CameraProcessor,
                   duration_s: float = 12.0, skip_s: float = 0.2) -> Shard:
    """Run one scenario and label every camera frame after ``skip_s``."""
    from mm_perception.sim.library import load_scenario
    from mm_perception.sim.simulator import SimConfig, Simulator

    check_seeds([seed])
    scenario = load_scenario(scene, seed, platform="vehicle" if scene == "random" else None)
    cfg = processor.config
    images: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    stamps: list[int] = []
    boxes: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    ignore: list[np.ndarray] = []
    image_index: list[np.ndarray] = []
    orig = (0, 0)
    with Simulator(rig, SimConfig(camera_depth=False, camera_instance=True)) as sim:
        start = sim.reset(scenario)
        t0 = sim.config.start_stamp_ns + start.time_ns
        for step in sim.run(duration_s):
            truth = {(g.sensor, g.stamp_ns): g for g in step.ground_truth}
            for out in step.outputs:
                if out.instance is None or out.stamp_ns - t0 < skip_s * 1e9:
                    continue
                gt = truth[(out.sensor, out.stamp_ns)]
                rgb = out.value.rgb()  # type: ignore[union-attr]
                b, lab, ign, class_map = label_frame(out.instance, gt.objects, cfg.classes)
                orig = (rgb.shape[1], rgb.shape[0])
                image_index.append(np.full(len(b), len(images), np.int32))
                images.append(processor.resize(rgb))
                maps.append(cv2.resize(class_map, (cfg.input_width, cfg.input_height),
                                       interpolation=cv2.INTER_NEAREST))
                stamps.append(out.stamp_ns)
                boxes.append(b)
                labels.append(lab)
                ignore.append(ign)
    if not images:
        raise RuntimeError(f"{scene} seed {seed}: the simulator produced no camera frame")
    return Shard(np.stack(images), np.stack(maps), np.concatenate(boxes),
                 np.concatenate(labels), np.concatenate(image_index), np.concatenate(ignore),
                 np.asarray(stamps, np.int64), orig)


def save_shard(path: Path, shard: Shard, classes: Sequence[Any]) -> None:
    """Write a shard as compressed ``.npz`` (atomically: a temp file then a rename)."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, images=shard.images, class_maps=shard.class_maps,
                        boxes=shard.boxes, labels=shard.labels, image_index=shard.image_index,
                        ignore=shard.ignore, stamps_ns=shard.stamps_ns,
                        orig_size=np.asarray(shard.orig_size, np.int32),
                        classes=np.asarray([str(getattr(c, "value", c)) for c in classes]))
    tmp.replace(path)


def load_shard(path: str | Path) -> Shard:
    """Read a shard written by :func:`save_shard`.

    Raises:
        ConfigError: naming the file, when it is missing, damaged or not a shard.
    """
    with read_npz(path, "camera dataset shard (delete it; --make-data simulates it "
                        "again)") as z:
        return Shard(z["images"], z["class_maps"], z["boxes"], z["labels"], z["image_index"],
                     z["ignore"], z["stamps_ns"], (int(z["orig_size"][0]),
                                                    int(z["orig_size"][1])))


def shard_name(scene: str, seed: int) -> str:
    return f"{scene}_{seed:04d}.npz"


def make_dataset(out_dir: str | Path, scenes: Sequence[str] = SCENES,
                 seeds: Iterable[int] = range(100, 148), *,
                 config: CameraDetectorConfig | None = None, rig: str | Path = DEFAULT_RIG,
                 duration_s: float = 12.0, sample_period_s: float = 0.4,
                 progress: bool = True) -> list[Path]:
    """Simulate and write one shard per (scene, seed); existing shards are kept.

    Args:
        out_dir: dataset folder (created), e.g. ``/tmp/camdata``; keep it outside the repo.
        scenes: library scenario names (``random`` is restricted to vehicle scenes).
        seeds: scenario seeds (training 100-399, validation 500-599; >= 900 refused).
        config: detector config (input size, classes); default config when None.
        rig: the rig YAML (only its camera ``cam_front`` and odometry are simulated).
        duration_s: simulated seconds per scenario.
        sample_period_s: time between kept frames, s (~0.3-0.5 s gives diverse frames).
        progress: show a tqdm progress bar.

    Returns:
        The shard paths, in (scene, seed) order.
    """
    from tqdm import tqdm

    seed_list = check_seeds(seeds)
    if sample_period_s <= 0 or duration_s <= 0:
        raise ConfigError(f"duration_s and sample_period_s must be > 0, got {duration_s}, "
                          f"{sample_period_s}")
    cfg = config or CameraDetectorConfig()
    processor = CameraProcessor(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim_rig = camera_rig(rig, rate_hz=1.0 / sample_period_s)
    jobs = [(scene, seed) for scene in scenes for seed in seed_list]
    paths = []
    for scene, seed in tqdm(jobs, desc="simulating", unit="scene", disable=not progress):
        path = out / shard_name(scene, seed)
        if not path.exists():
            save_shard(path, simulate_shard(scene, seed, sim_rig, processor, duration_s),
                       cfg.classes)
        paths.append(path)
    return paths


def find_shards(data_dir: str | Path, seeds: Iterable[int],
                scenes: Sequence[str] = SCENES) -> list[Path]:
    """Existing shard paths of ``scenes`` x ``seeds`` in ``data_dir`` (sorted, missing ones
    skipped)."""
    wanted = set(check_seeds(seeds))
    found = []
    for scene in scenes:
        for path in sorted(Path(data_dir).glob(f"{scene}_*.npz")):
            stem = path.stem[len(scene) + 1:]
            if stem.isdigit() and int(stem) in wanted:
                found.append(path)
    return found


def concat_shards(shards: Sequence[Shard]) -> Shard:
    """One shard holding all images and boxes of ``shards`` (same input size)."""
    if not shards:
        raise ValueError("no shards to concatenate")
    offsets = np.cumsum([0] + [len(s) for s in shards[:-1]])
    return Shard(
        np.concatenate([s.images for s in shards]),
        np.concatenate([s.class_maps for s in shards]),
        np.concatenate([s.boxes for s in shards]),
        np.concatenate([s.labels for s in shards]),
        np.concatenate([s.image_index + np.int32(o) for s, o in zip(shards, offsets,
                                                                     strict=True)]),
        np.concatenate([s.ignore for s in shards]),
        np.concatenate([s.stamps_ns for s in shards]),
        shards[0].orig_size)


__all__ = ["HELD_OUT_SEED", "MIN_VISIBLE_FRACTION", "MIN_VISIBLE_PIXELS", "SCENES",
           "TRAIN_SEEDS", "VAL_SEEDS", "Shard", "camera_rig", "check_seeds", "concat_shards",
           "find_shards", "label_frame", "load_shard", "make_dataset", "save_shard",
           "shard_name", "simulate_shard"]
