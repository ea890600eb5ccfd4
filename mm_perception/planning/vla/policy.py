"""The VLA planner: observation + instruction in, world-frame action chunk out.

A weights folder holds ``vla.pt`` (the network's state dict), ``config.json``
(:class:`~mm_perception.planning.vla.config.VLAConfig`: architecture *and* the processor's
feature layout and normalisation constants, so there is one file to keep consistent),
``vla.onnx`` (the same network exported, what ONNX Runtime / TensorRT run) and
``train_log.json`` (how it was trained).

:class:`VLAPlanner` implements the :class:`~mm_perception.planning.observation.Planner`
protocol with the processor, one runtime backend (torch, ONNX Runtime or TensorRT, see
:class:`~mm_perception.runtime.RuntimeConfig`) and a cached
:class:`~mm_perception.planning.vla.text.TextEncoder`. With ``language=False`` (the
"vla-no-language" ablation) every instruction is replaced by
:data:`~mm_perception.planning.vla.config.NO_LANGUAGE_INSTRUCTION` before it is encoded:
the network still gets a (constant) sentence embedding (and, with ``speed_cue``, the cue
of that constant sentence: no speed), never the real instruction.
Otherwise the instruction is first cleaned with
:func:`~mm_perception.planning.instructions.clean_instruction` (bytes decoded, control
characters and extra whitespace removed, at most
:data:`~mm_perception.planning.instructions.MAX_INSTRUCTION_CHARS` characters): whatever
arrives on the instruction topic, the encoder sees one bounded line of text.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mm_perception.planning.instructions import clean_instruction
from mm_perception.planning.observation import PlannerObservation
from mm_perception.planning.trajectory import Trajectory
from mm_perception.planning.vla.config import NO_LANGUAGE_INSTRUCTION, VLAConfig
from mm_perception.planning.vla.processor import OUTPUT_NAME, VLAProcessor
from mm_perception.planning.vla.text import TextEncoder
from mm_perception.runtime import InferenceBackend, RuntimeConfig

if TYPE_CHECKING:
    from mm_perception.planning.vla.model import VLAPolicyNet

WEIGHTS_FILE = "vla.pt"
ONNX_FILE = "vla.onnx"
CONFIG_FILE = "config.json"
TRAIN_LOG_FILE = "train_log.json"


def save_weights(folder: str | Path, net: VLAPolicyNet) -> None:
    """Write ``vla.pt`` (float32 state dict) and ``config.json`` into ``folder``."""
    from mm_perception.runtime.torch_weights import save_state_dict

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    save_state_dict(net, out / WEIGHTS_FILE)
    net.config.save(out / CONFIG_FILE)


def load_weights(folder: str | Path) -> tuple[VLAPolicyNet, VLAProcessor]:
    """Load a weights folder -> ``(network in eval mode, processor)``.

    Raises:
        FileNotFoundError: ``vla.pt`` or ``config.json`` is missing (named).
        ConfigError: an invalid config, or weights that do not fit it.
    """
    from mm_perception.planning.vla.model import VLAPolicyNet
    from mm_perception.runtime.torch_weights import load_state_dict

    path = Path(folder)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"VLA weights: {path / name} is missing")
    config = VLAConfig.load(path / CONFIG_FILE)
    net = VLAPolicyNet(config)
    load_state_dict(net, path / WEIGHTS_FILE, path / CONFIG_FILE)
    return net.eval(), VLAProcessor(config)


class VLAPlanner:
    """The VLA policy as a :class:`~mm_perception.planning.observation.Planner`.

    Args:
        backend: runs the network (inputs / outputs of
            :func:`~mm_perception.planning.vla.export.io_specs`).
        processor: the processor of the same config.
        text_encoder: encodes the instructions (cached per string).
        language: False replaces every instruction by :data:`NO_LANGUAGE_INSTRUCTION`
            (None: what the model was trained with, ``config.language``).
        name: planner name (default ``vla`` / ``vla-no-language``), written into every
            trajectory's ``source``.

    Attributes:
        last_instruction: the instruction string the network was given at the last
            :meth:`plan` (after the ``language`` switch and the cleaning).
    """

    def __init__(self, backend: InferenceBackend, processor: VLAProcessor,
                 text_encoder: TextEncoder, *, language: bool | None = None,
                 name: str | None = None) -> None:
        self.backend = backend
        self.processor = processor
        self.text_encoder = text_encoder
        self.language = processor.config.language if language is None else bool(language)
        self.name = name or ("vla" if self.language else "vla-no-language")
        self.last_instruction: str | None = None

    def reset(self) -> None:
        """The policy is stateless between observations (the text cache is kept on purpose:
        it depends only on the strings)."""
        self.last_instruction = None

    def instruction_for(self, observation: PlannerObservation) -> str:
        """The instruction string the network gets for ``observation``: the cleaned
        instruction (:func:`clean_instruction`; bytes and None are accepted too, whatever
        the annotation says), or :data:`NO_LANGUAGE_INSTRUCTION` without language."""
        if not self.language:
            return NO_LANGUAGE_INSTRUCTION
        return clean_instruction(observation.instruction)

    def plan(self, observation: PlannerObservation) -> Trajectory:
        """The action chunk for ``observation``: ``H + 1`` samples in
        ``observation.ego.frame_id``, stamped at the ego state (the observation's stamp).

        Raises:
            ValueError: a malformed camera image (see the processor).
        """
        feats = self.processor.features(observation)
        instruction = self.instruction_for(observation)
        feeds = {k: v[None] for k, v in feats.items()}
        feeds["text"] = self.text_encoder.encode(instruction)[None].astype(np.float32)
        if self.processor.config.speed_cue:
            feeds["speed_cue"] = self.processor.speed_cue(instruction)[None]
        pred = self.backend.run(feeds)[OUTPUT_NAME][0]
        self.last_instruction = instruction
        return self.processor.decode(pred, observation.ego, self.name)

    def close(self) -> None:
        self.backend.close()


def load_vla(weights_dir: str | Path, runtime: RuntimeConfig | None = None, *,
             text_encoder: TextEncoder | None = None, language: bool | None = None,
             name: str | None = None) -> VLAPlanner:
    """A :class:`VLAPlanner` from a weights folder.

    Args:
        weights_dir: the folder (module docstring).
        runtime: the backend (default torch on the CPU); ``onnxruntime`` and ``tensorrt``
            run the folder's ``vla.onnx``.
        text_encoder: a shared encoder (default: a new one, torch, no cache file).
        language / name: see :class:`VLAPlanner`.

    Raises:
        FileNotFoundError: a file the chosen runtime needs is missing.
        ConfigError: invalid config or weights.
    """
    from mm_perception.planning.vla.export import onnx_backend, torch_backend

    cfg = runtime or RuntimeConfig(backend="torch")
    folder = Path(weights_dir)
    if cfg.backend == "torch":
        net, processor = load_weights(folder)
        backend = torch_backend(net, cfg)
    else:
        if not (folder / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"VLA weights: {folder / CONFIG_FILE} is missing")
        onnx_path = folder / ONNX_FILE
        if not onnx_path.is_file():
            raise FileNotFoundError(f"VLA weights: {onnx_path} is missing (training writes it; "
                                    "or export the network with "
                                    "mm_perception.planning.vla.export.export_onnx)")
        config = VLAConfig.load(folder / CONFIG_FILE)
        processor = VLAProcessor(config)
        backend = onnx_backend(config, onnx_path, cfg)
    return VLAPlanner(backend, processor, text_encoder or TextEncoder(), language=language,
                      name=name)


__all__ = ["CONFIG_FILE", "ONNX_FILE", "TRAIN_LOG_FILE", "WEIGHTS_FILE", "VLAPlanner",
           "load_vla", "load_weights", "save_weights"]
