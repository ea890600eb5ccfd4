"""The BEV fusion detector: weights on disk, and a sensor set in, objects out.

A weights folder holds ``bev_fusion.pt`` (the state dict, the frozen camera network
included, so the folder is self-contained), ``bev_fusion.onnx`` (the same network exported,
what ONNX Runtime and TensorRT run: a deployment needs no torch), ``config.json``
(:class:`BevModelConfig`) and ``processor.json`` (:class:`ProcessorState`), plus
``train_log.json`` from training.

:class:`BevDetector` runs the processor and one runtime backend
(:class:`~mm_perception.runtime.RuntimeConfig`: torch, ONNX Runtime or TensorRT) on a
:class:`SensorSet`. A TensorRT engine is built from the folder's ONNX file through the
runtime's engine cache (a warning says so before a build: it takes minutes on a Jetson; build
it ahead of time with ``mm-perception build-engine``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mm_perception.core.calibration import Rig
from mm_perception.core.ego_motion import OdometryBuffer
from mm_perception.core.errors import ConfigError
from mm_perception.core.types import DetectedObject, SensorSet
from mm_perception.fusion.feature_level.config import MODALITIES, BevModelConfig
from mm_perception.fusion.feature_level.processor import (
    BevProcessor,
    ProcessorState,
    RawFrame,
    frame_inputs,
)
from mm_perception.fusion.feature_level.radar_velocity import RadarVelocityConfig, refine_velocity
from mm_perception.runtime import RuntimeConfig

if TYPE_CHECKING:
    from mm_perception.fusion.feature_level.model import BevFusionNet

#: the committed default weights (all three modalities, concatenation fuser)
WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS_DIR = WEIGHTS_ROOT / "concat"
WEIGHTS_FILE = "bev_fusion.pt"
ONNX_FILE = "bev_fusion.onnx"
CONFIG_FILE = "config.json"
PROCESSOR_FILE = "processor.json"


def save_weights(folder: str | Path, net: BevFusionNet, processor: BevProcessor) -> None:
    """Write the weights folder (see the module docstring)."""
    from mm_perception.runtime.torch_weights import save_state_dict

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    save_state_dict(net, out / WEIGHTS_FILE)
    net.config.save(out / CONFIG_FILE)
    processor.state.save(out / PROCESSOR_FILE)


def load_weights(folder: str | Path | None = None) -> tuple[BevFusionNet, BevProcessor]:
    """Load a weights folder (None: :data:`DEFAULT_WEIGHTS_DIR`) -> ``(net in eval mode,
    processor)``.

    Raises:
        FileNotFoundError: a file is missing (named).
        ConfigError: invalid config / processor JSON, or weights that do not fit the config.
    """
    from mm_perception.detection.camera.config import CameraDetectorConfig
    from mm_perception.detection.camera.model import CameraDetectorNet
    from mm_perception.fusion.feature_level.model import BevFusionNet
    from mm_perception.runtime.torch_weights import load_state_dict

    path = DEFAULT_WEIGHTS_DIR if folder is None else Path(folder)
    files = {n: path / n for n in (WEIGHTS_FILE, CONFIG_FILE, PROCESSOR_FILE)}
    for file in files.values():
        if not file.is_file():
            raise FileNotFoundError(f"BEV fusion weights: {file} is missing")
    config = BevModelConfig.load(files[CONFIG_FILE])
    state = ProcessorState.load(files[PROCESSOR_FILE])
    camera_net = None
    if "camera" in config.modalities:
        from mm_perception.detection.camera.detector import DEFAULT_WEIGHTS_DIR as CAM_DIR

        cam_cfg = CameraDetectorConfig.from_dict(
            json.loads((CAM_DIR / "config.json").read_text(encoding="utf-8")))
        camera_net = CameraDetectorNet(cam_cfg)
    net = BevFusionNet(config, camera_net)
    load_state_dict(net, files[WEIGHTS_FILE], files[CONFIG_FILE])
    return net.eval(), BevProcessor(config, state)


@dataclass(frozen=True)
class BevDetectorConfig:
    """Configuration of :class:`BevDetector`.

    Attributes:
        weights: weights folder (None: the committed default, all three modalities with the
            concatenation fuser).
        runtime: the inference backend (default ONNX Runtime on the CPU).
        drop_modalities: modalities to leave out even when the set has them (evaluation of
            a model with a sensor removed; a deployment leaves this empty).
        radar_velocity: the decoded velocity of vehicles re-estimated from the radar
            returns in their boxes (:mod:`.radar_velocity`), for models with radar when the
            set has it; ``RadarVelocityConfig(enabled=False)`` keeps the head's.
    """

    weights: str | None = None
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    drop_modalities: tuple[str, ...] = ()
    radar_velocity: RadarVelocityConfig = field(default_factory=RadarVelocityConfig)

    def __post_init__(self) -> None:
        if self.weights is not None and not isinstance(self.weights, str):
            raise ConfigError(f"BevDetectorConfig.weights must be a folder path, got "
                              f"{self.weights!r}")
        if not isinstance(self.runtime, RuntimeConfig):
            raise ConfigError(f"BevDetectorConfig.runtime must be a RuntimeConfig, got "
                              f"{type(self.runtime).__name__}")
        drop = tuple(self.drop_modalities)
        bad = [m for m in drop if m not in MODALITIES]
        if bad:
            raise ConfigError(f"BevDetectorConfig.drop_modalities: unknown {bad}; known "
                              f"{list(MODALITIES)}")
        object.__setattr__(self, "drop_modalities", drop)
        if not isinstance(self.radar_velocity, RadarVelocityConfig):
            raise ConfigError(f"BevDetectorConfig.radar_velocity must be a "
                              f"RadarVelocityConfig, got {type(self.radar_velocity).__name__}")


class BevDetector:
    """The BEV fusion model on sensor sets (see the module docstring)."""

    def __init__(self, config: BevDetectorConfig | None = None) -> None:
        from mm_perception.fusion.feature_level.export import onnx_backend, torch_backend

        self.config = cfg = config or BevDetectorConfig()
        folder = DEFAULT_WEIGHTS_DIR if cfg.weights is None else Path(cfg.weights)
        if cfg.runtime.backend == "torch":
            net, self.processor = load_weights(folder)
            self.backend = torch_backend(net, cfg.runtime)
        else:
            onnx = folder / ONNX_FILE
            if not onnx.is_file():
                raise FileNotFoundError(f"BEV fusion weights: {onnx} is missing (export it "
                                        f"with mm_perception.fusion.feature_level.export)")
            for name in (CONFIG_FILE, PROCESSOR_FILE):
                if not (folder / name).is_file():
                    raise FileNotFoundError(f"BEV fusion weights: {folder / name} is missing")
            model_cfg = BevModelConfig.load(folder / CONFIG_FILE)
            self.processor = BevProcessor(model_cfg, ProcessorState.load(
                folder / PROCESSOR_FILE))
            self.backend = onnx_backend(model_cfg, onnx, cfg.runtime)
        self._names = tuple(s.name for s in self.backend.inputs)
        #: wall milliseconds of the last call: ``encode``, ``infer``, ``decode``
        self.timings_ms: dict[str, float] = {}

    @property
    def model_config(self) -> BevModelConfig:
        return self.processor.config

    def detect_frame(self, raw: RawFrame, stamp_ns: int) -> list[DetectedObject]:
        """Objects of one :class:`RawFrame` in ``base_link`` at ``stamp_ns``; ``[]`` when no
        modality of the model is present (nothing to detect from)."""
        if self.config.drop_modalities:
            raw = raw.without(*self.config.drop_modalities)
        present = raw.present
        used = [m for m in self.model_config.modalities if present[m]]
        if not used:
            return []
        t0 = time.perf_counter()
        enc = self.processor.encode(raw)
        t1 = time.perf_counter()
        out = self.backend.run({n: enc[n] for n in self._names})
        t2 = time.perf_counter()
        objs = self.processor.decode(out, stamp_ns, sources=tuple(f"feature:{m}" for m in used))
        if "radar" in used:  # the head hardly uses the Doppler: measure the velocity
            objs = refine_velocity(objs, raw.radar, self.config.radar_velocity,
                                   raw.radar_origins)
        self.timings_ms = {"encode": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3,
                           "decode": (time.perf_counter() - t2) * 1e3}
        return objs

    def detect(self, sensor_set: SensorSet, rig: Rig, odometry: OdometryBuffer | None = None,
               ) -> tuple[list[DetectedObject], tuple[str, ...]]:
        """Objects of a synchronised set (``base_link`` at its stamp) and notes on sensors
        that were left out (see :func:`frame_inputs`)."""
        raw = frame_inputs(sensor_set, rig, odometry)
        return self.detect_frame(raw, sensor_set.stamp_ns), raw.notes

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The backend's output maps for encoded inputs."""
        return self.backend.run({n: feeds[n] for n in self._names})

    def close(self) -> None:
        self.backend.close()


__all__ = ["CONFIG_FILE", "DEFAULT_WEIGHTS_DIR", "ONNX_FILE", "PROCESSOR_FILE", "WEIGHTS_FILE",
           "WEIGHTS_ROOT", "BevDetector", "BevDetectorConfig", "load_weights", "save_weights"]
