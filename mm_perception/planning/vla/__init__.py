"""The vision-language-action (VLA) policy: instruction + scene -> action chunk.

Split as every model of the stack (DESIGN.md): :mod:`.config` (:class:`VLAConfig`),
:mod:`.text` (the pretrained sentence encoder, cached per instruction), :mod:`.processor`
(observation -> features, expert -> targets, output -> trajectory; numpy), :mod:`.model`
(the torch network), :mod:`.export` (ONNX + parity), plus :mod:`.dataset` (demonstrations),
:mod:`.train` (imitation training) and :mod:`.policy` (:class:`VLAPlanner`, the
:class:`~mm_perception.planning.observation.Planner` that runs it through a runtime backend).
Importing this package loads no torch; the model, export, dataset and train modules do.
"""

from mm_perception.planning.vla.config import NO_LANGUAGE_INSTRUCTION, VLAConfig
from mm_perception.planning.vla.policy import VLAPlanner, load_vla
from mm_perception.planning.vla.processor import FEATURE_NAMES, INPUT_NAMES, VLAProcessor
from mm_perception.planning.vla.text import TextEncoder

__all__ = ["FEATURE_NAMES", "INPUT_NAMES", "NO_LANGUAGE_INSTRUCTION", "TextEncoder",
           "VLAConfig", "VLAPlanner", "VLAProcessor", "load_vla"]
