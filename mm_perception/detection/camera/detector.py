"""Camera object detector inference: an RGB image -> 2D detections + a per-pixel score map.

:meth:`CameraDetector.load` reads a weights folder (default: the committed weights in
``mm_perception/detection/camera/weights/``):

- ``camera_detector.pt``: the network's ``state_dict`` (float32);
- ``config.json``: :class:`~mm_perception.detection.camera.config.CameraDetectorConfig`;
- ``processor.json``: the normalisation (mean / std of the training images).

:meth:`CameraDetector.detect` takes an ``(H, W, 3)`` uint8 RGB image of any size and returns
:class:`CameraDetections`: boxes in pixels of that image (pixel-edge convention, see
:mod:`~mm_perception.detection.camera.processor`), per-class probabilities, and the score map
of the semantic head at heatmap resolution for PointPainting (columns
``classes + (UNKNOWN,)``, the last one background = 1 - max class score).

torch is imported when a detector is built, not with this module: the result types
(:class:`Detections2D`, :class:`CameraDetections`) are used by torch-free code (lifting,
fusion).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.core.types import ObjectClass
from mm_perception.detection.camera.config import CameraDetectorConfig
from mm_perception.detection.camera.processor import CameraProcessor, check_image

if TYPE_CHECKING:
    from mm_perception.detection.camera.model import CameraDetectorNet

F32 = npt.NDArray[np.float32]

#: the committed default weights
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = "camera_detector.pt"
CONFIG_FILE = "config.json"
PROCESSOR_FILE = "processor.json"


def _readonly(value: Any, dtype: Any) -> np.ndarray:
    arr = np.array(value, dtype=dtype, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class Detections2D:
    """2D detections of one image.

    Attributes:
        boxes: ``(K, 4)`` float32 ``x1, y1, x2, y2`` in pixels of the ORIGINAL image
            (pixel edges: the image spans ``[0, W] x [0, H]``), clipped to the image.
        scores: ``(K,)`` float32 in [0, 1], best first.
        labels: ``(K,)`` most likely class of each box.
        class_probs: ``(K, C)`` float32 per-class probabilities (sum 1 per row), columns in
            ``CameraDetector.classes`` order.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: tuple[ObjectClass, ...]
    class_probs: np.ndarray

    def __post_init__(self) -> None:
        boxes = _readonly(np.reshape(self.boxes, (-1, 4)), np.float32)
        scores = _readonly(np.reshape(self.scores, (-1,)), np.float32)
        labels = tuple(ObjectClass(c) for c in self.labels)
        probs = np.asarray(self.class_probs, dtype=np.float32)
        k = boxes.shape[0]
        if scores.shape[0] != k or len(labels) != k or probs.ndim != 2 or probs.shape[0] != k:
            raise ValueError(f"Detections2D: inconsistent sizes: boxes {boxes.shape}, scores "
                             f"{scores.shape}, {len(labels)} labels, class_probs {probs.shape}")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "class_probs", _readonly(probs, np.float32))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls, num_classes: int) -> Detections2D:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), (),
                   np.zeros((0, num_classes), np.float32))


@dataclass(frozen=True)
class CameraDetections:
    """Everything the detector made of one image.

    Attributes:
        detections: the 2D boxes.
        score_map: ``(h, w, C + 1)`` float32 per-cell class scores in [0, 1] at heatmap
            resolution (``h = H_in / stride``; cell ``(i, j)`` covers original pixels
            ``[j W / w, (j + 1) W / w) x [i H / h, (i + 1) H / h)``), columns follow
            ``score_classes``; the last column is background = 1 - max class score.
        score_classes: ``classes + (ObjectClass.UNKNOWN,)`` (UNKNOWN = background).
    """

    detections: Detections2D
    score_map: np.ndarray
    score_classes: tuple[ObjectClass, ...]

    def __post_init__(self) -> None:
        smap = _readonly(self.score_map, np.float32)
        if smap.ndim != 3 or smap.shape[2] != len(self.score_classes):
            raise ValueError(f"score_map must be (h, w, {len(self.score_classes)}), got "
                             f"{smap.shape}")
        object.__setattr__(self, "score_map", smap)
        object.__setattr__(self, "score_classes", tuple(self.score_classes))


class CameraDetector:
    """Runs the network and decodes its outputs (see the module docstring).

    Args:
        net: the trained network (put in eval mode here).
        processor: its processor (normalisation saved with the weights).
        device: torch device string.
        threads: torch's intra-op CPU thread count (None: torch's default, one per core).
            Process-wide in torch: it applies to every torch model of the process.
    """

    def __init__(self, net: CameraDetectorNet, processor: CameraProcessor,
                 device: str = "cpu", threads: int | None = None) -> None:
        import torch

        from mm_perception.detection.camera.model import CameraDetectorInference

        if net.config != processor.config:
            raise ConfigError("CameraDetector: the network and the processor have different "
                              "configs")
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ConfigError(f"CameraDetector threads must be an integer >= 1 or None, "
                                  f"got {threads!r}")
            torch.set_num_threads(threads)
        self.config = net.config
        self.processor = processor
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.inference = CameraDetectorInference(self.net).eval()
        self.classes: tuple[ObjectClass, ...] = tuple(self.config.classes)
        self.score_classes: tuple[ObjectClass, ...] = (*self.classes, ObjectClass.UNKNOWN)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu",
             threads: int | None = None) -> CameraDetector:
        """Load a weights folder (``None``: the committed default weights); ``device`` and
        ``threads`` as the constructor's.

        Raises:
            FileNotFoundError: a file is missing (the message names it).
            ConfigError: invalid config / processor JSON, or weights that do not fit it.
        """
        from mm_perception.detection.camera.model import CameraDetectorNet
        from mm_perception.runtime.torch_weights import load_state_dict

        folder = DEFAULT_WEIGHTS_DIR if path is None else Path(path)
        files = {name: folder / name for name in (WEIGHTS_FILE, CONFIG_FILE, PROCESSOR_FILE)}
        for file in files.values():
            if not file.is_file():
                raise FileNotFoundError(f"camera detector weights: {file} is missing")
        config = CameraDetectorConfig.from_dict(
            json.loads(files[CONFIG_FILE].read_text(encoding="utf-8")))
        processor = CameraProcessor.from_dict(
            config, json.loads(files[PROCESSOR_FILE].read_text(encoding="utf-8")))
        net = CameraDetectorNet(config)
        load_state_dict(net, files[WEIGHTS_FILE], files[CONFIG_FILE])
        return cls(net, processor, device, threads)

    def save(self, folder: str | Path) -> None:
        """Write ``camera_detector.pt`` + ``config.json`` + ``processor.json`` to ``folder``."""
        from mm_perception.runtime.torch_weights import save_state_dict

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        save_state_dict(self.net, out / WEIGHTS_FILE)
        (out / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n",
                                       encoding="utf-8")
        (out / PROCESSOR_FILE).write_text(json.dumps(self.processor.to_dict(), indent=2) + "\n",
                                          encoding="utf-8")

    def infer_maps(self, batch: F32) -> tuple[F32, F32, F32, F32]:
        """Network maps of a normalised batch ``(B, 3, H_in, W_in)`` float32: heatmap
        ``(B, C, h, w)`` probs, size ``(B, 2, h, w)`` log cells, offset ``(B, 2, h, w)``,
        semantic ``(B, C, h, w)`` probs, as float32 numpy arrays."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        with torch.no_grad():
            outs = self.inference(x)
        heat, size, offset, sem = (o.float().cpu().numpy() for o in outs)
        return heat, size, offset, sem

    def detect(self, image_rgb: np.ndarray) -> CameraDetections:
        """Detect objects in one ``(H, W, 3)`` uint8 RGB image of any size.

        Raises:
            ValueError: not an ``(H, W, 3)`` uint8 array (the message says what it got).
        """
        img = check_image(image_rgb)
        batch, scale = self.processor.preprocess(img)
        heat, size, offset, sem = self.infer_maps(batch)
        return self.decode(heat[0], size[0], offset[0], sem[0], scale, img.shape[1],
                           img.shape[0])

    def decode(self, heat: F32, size: F32, offset: F32, semantic: F32,
               scale: tuple[float, float], width: int, height: int,
               score_threshold: float | None = None) -> CameraDetections:
        """Detections of one image from its maps (any backend's), see :meth:`infer_maps`;
        ``scale`` and ``width`` / ``height`` from :meth:`CameraProcessor.preprocess`."""
        dec = self.processor.decode(heat, size, offset, score_threshold)
        boxes = self.processor.to_original(dec.boxes, scale, width, height)
        dets = Detections2D(boxes, dec.scores.clip(0.0, 1.0),
                            tuple(self.classes[i] for i in dec.labels), dec.class_probs)
        sem = np.nan_to_num(np.asarray(semantic, np.float32), nan=0.0, posinf=1.0,
                            neginf=0.0).clip(0.0, 1.0).transpose(1, 2, 0)
        background = 1.0 - sem.max(axis=2, keepdims=True)
        score_map = np.concatenate([sem, background], axis=2).astype(np.float32)
        return CameraDetections(dets, score_map, self.score_classes)


__all__ = ["DEFAULT_WEIGHTS_DIR", "CameraDetections", "CameraDetector", "Detections2D"]
