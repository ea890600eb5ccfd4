"""Drive with a local Hugging Face vision-language model that names a meta-action.

:class:`VLMPlanner` shows the front camera image and the instruction to an
image-text-to-text model (``transformers.AutoModelForImageTextToText``: LLaVA, Idefics3 /
SmolVLM, PaliGemma, Qwen2-VL, ...) stored in a local folder, asks it for one of the
:class:`~mm_perception.planning.meta_actions.MetaAction` s, parses the answer with
:func:`~mm_perception.planning.meta_actions.parse_meta_action` and turns it into a
trajectory with :func:`~mm_perception.planning.meta_actions.meta_action_trajectory` (the
expert-style lane follower). The model decides *what* to do; the controller decides *how*.

The instruction is cleaned with
:func:`~mm_perception.planning.instructions.clean_instruction` before it is put into the
prompt (bytes decoded, control characters and extra whitespace removed, at most
:data:`~mm_perception.planning.instructions.MAX_INSTRUCTION_CHARS` characters), so a
hostile or garbled instruction cannot break the prompt's layout or blow up its length; the
model's answer only ever selects one of the meta-actions, whose trajectories the lane
follower builds within its own limits.

Loading is offline (``local_files_only=True``): nothing is downloaded. ``torch`` and
``transformers`` are imported when a planner is built, not when this module is imported.
"""

from __future__ import annotations

import logging
import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_perception.core.errors import BackendUnavailableError, ConfigError, ModelLoadError
from mm_perception.planning.instructions import clean_instruction
from mm_perception.planning.meta_actions import (
    MetaAction,
    MetaActionConfig,
    meta_action_trajectory,
    parse_meta_action,
)
from mm_perception.planning.observation import ChunkSpec, PlannerObservation
from mm_perception.planning.trajectory import Trajectory

_LOG = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000

#: the action used when the model's answer names no meta-action, or no image is there to
#: look at: stopping is the one action that is safe whatever the scene
SAFE_DEFAULT_ACTION = MetaAction.STOP

DEFAULT_PROMPT = (
    "You are driving a car; the image is the front camera view. Instruction: {instruction}. "
    "Answer with exactly one of these actions: {actions}. Action:"
)

_DTYPES = ("float32", "float16", "bfloat16")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_PROMPT_FIELDS = frozenset({"instruction", "actions"})


@dataclass(frozen=True)
class VLMConfig:
    """Configuration of :class:`VLMPlanner`.

    Attributes:
        model_dir: local folder holding the model and its processor (what
            ``save_pretrained`` writes: ``config.json``, weights, processor and tokenizer
            files).
        prompt_template: the question; ``{instruction}`` is replaced by the instruction in
            force (``no_instruction`` when there is none) and ``{actions}`` by the allowed
            actions as words, comma separated (``stop, follow lane, ...``).
        no_instruction: the instruction used when the observation has none.
        allowed_actions: the meta-actions offered to the model (the answer may still name
            another one; it is obeyed, the list only steers the model).
        max_new_tokens: most tokens generated per query (an action name is a few tokens;
            this bounds the generation time).
        max_generate_s: wall-clock bound of one generation, s (``generate(max_time=...)``).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: weights' dtype: ``float32``, ``float16`` or ``bfloat16``.
        requery_s: the model is asked again at most this often, s; in between the last
            answer is reused (a new instruction or an earlier stamp asks again at once).
        text_only_without_image: with no camera image, ask with the text alone (True) or
            do not ask and take the safe default action, stop (False; for models that
            cannot answer without an image).
        meta_action: how the meta-action becomes a trajectory.
        chunk: the trajectory's time grid.
    """

    model_dir: Path | str
    prompt_template: str = DEFAULT_PROMPT
    no_instruction: str = "follow the road"
    allowed_actions: tuple[MetaAction, ...] = tuple(MetaAction)
    max_new_tokens: int = 8
    max_generate_s: float = 5.0
    device: str = "cpu"
    dtype: str = "float32"
    requery_s: float = 1.0
    text_only_without_image: bool = True
    meta_action: MetaActionConfig = field(default_factory=MetaActionConfig)
    chunk: ChunkSpec = field(default_factory=ChunkSpec)

    def __post_init__(self) -> None:
        if not isinstance(self.model_dir, Path | str) or not str(self.model_dir).strip():
            raise ConfigError(f"VLMConfig.model_dir must be a folder path, got "
                              f"{self.model_dir!r}")
        object.__setattr__(self, "model_dir", Path(self.model_dir))
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(self.prompt_template)
                    if name is not None}
        except ValueError as exc:
            raise ConfigError(f"VLMConfig.prompt_template is not a format string: {exc}: "
                              f"{self.prompt_template!r}") from exc
        if "actions" not in used or not used <= _PROMPT_FIELDS:
            raise ConfigError("VLMConfig.prompt_template must use {actions} and may use "
                              f"{{instruction}}, nothing else; got fields {sorted(used)}")
        if not self.allowed_actions or not all(isinstance(a, MetaAction)
                                               for a in self.allowed_actions):
            raise ConfigError(f"VLMConfig.allowed_actions must be a non-empty tuple of "
                              f"MetaAction, got {self.allowed_actions!r}")
        object.__setattr__(self, "allowed_actions", tuple(self.allowed_actions))
        if (isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int)
                or not 1 <= self.max_new_tokens <= 64):
            raise ConfigError(f"VLMConfig.max_new_tokens must be an integer in [1, 64], got "
                              f"{self.max_new_tokens!r}")
        if not (math.isfinite(self.max_generate_s) and self.max_generate_s > 0.0):
            raise ConfigError(f"VLMConfig.max_generate_s must be > 0 s, got "
                              f"{self.max_generate_s!r}")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise ConfigError(f"VLMConfig.device must be 'cpu', 'cuda' or 'cuda:N', got "
                              f"{self.device!r}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"VLMConfig.dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if not (math.isfinite(self.requery_s) and self.requery_s >= 0.0):
            raise ConfigError(f"VLMConfig.requery_s must be >= 0 s, got {self.requery_s!r}")
        if not isinstance(self.meta_action, MetaActionConfig):
            raise ConfigError(f"VLMConfig.meta_action must be a MetaActionConfig, got "
                              f"{type(self.meta_action).__name__}")
        if not isinstance(self.chunk, ChunkSpec):
            raise ConfigError(f"VLMConfig.chunk must be a ChunkSpec, got "
                              f"{type(self.chunk).__name__}")

    def prompt(self, instruction: str) -> str:
        """The question for ``instruction`` ("" = none), without any chat formatting."""
        actions = ", ".join(a.phrase for a in self.allowed_actions)
        # the template supplies its own punctuation around the instruction
        said = instruction.strip().rstrip(".!?;").strip()
        return self.prompt_template.format(instruction=said or self.no_instruction,
                                           actions=actions)


def _load(config: VLMConfig) -> tuple[Any, Any]:
    """``(processor, model)`` from ``config.model_dir``, offline, in eval mode on the device.

    Raises:
        ModelLoadError: the folder is missing, has no ``config.json``, or transformers
            cannot load a processor or an image-text-to-text model from it.
        BackendUnavailableError: a CUDA device is asked for and there is none.
    """
    model_dir = Path(config.model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"VLM model folder {str(model_dir)!r} does not exist")
    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"VLM model folder {str(model_dir)!r} has no config.json (not "
                             "a save_pretrained folder)")
    import torch
    import transformers

    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"VLMConfig.device is {config.device!r} but CUDA is "
                                      "not available")
    # AutoModelForImageTextToText is the current name; older releases call it Vision2Seq
    auto_model = (getattr(transformers, "AutoModelForImageTextToText", None)
                  or getattr(transformers, "AutoModelForVision2Seq", None))
    if auto_model is None:
        raise ModelLoadError(f"transformers {transformers.__version__} offers neither "
                             "AutoModelForImageTextToText nor AutoModelForVision2Seq")
    try:
        processor = transformers.AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        model = auto_model.from_pretrained(model_dir, local_files_only=True,
                                           dtype=getattr(torch, config.dtype))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"cannot load a vision-language model from "
                             f"{str(model_dir)!r}: {exc}") from exc
    model.to(config.device)
    model.eval()
    return processor, model


def _valid_image(image: Any) -> bool:
    return (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0)


class VLMPlanner:
    """A :class:`~mm_perception.planning.observation.Planner` asking a local VLM for a
    meta-action and following it with the expert-style lane follower.

    Each query shows the model ``observation.image`` (``(H, W, 3)`` uint8 RGB) and
    :meth:`VLMConfig.prompt`, formatted with the processor's chat template when it has one
    (otherwise the raw prompt, preceded by the processor's image token when an image is
    sent), and decodes greedily at most ``max_new_tokens`` tokens. An answer that names
    no meta-action is counted in :attr:`unparseable_count` and replaced by stop. With no
    (or a malformed) image the text is sent alone, or, with
    ``text_only_without_image=False``, the planner stops without asking (counted in
    :attr:`missing_image_count`). The answer is reused until ``requery_s`` has passed,
    the instruction changed, or time went backwards; the trajectory is rebuilt from every
    observation.

    Raises (from the constructor):
        ModelLoadError: the model folder is missing or not loadable.
        BackendUnavailableError: CUDA asked for and not available.
    """

    name = "vlm"

    def __init__(self, config: VLMConfig) -> None:
        self.config = config
        self._processor, self._model = _load(config)
        self.reset()

    def reset(self) -> None:
        """Forget the cached answer and zero the counters (a new episode starts)."""
        self._last_action: MetaAction | None = None
        self._last_text: str | None = None
        self._last_query_ns: int | None = None
        self._last_instruction: tuple[str, int | None] | None = None
        self._query_count = 0
        self._unparseable_count = 0
        self._missing_image_count = 0

    @property
    def last_action(self) -> MetaAction | None:
        """The meta-action in force (None before the first plan)."""
        return self._last_action

    @property
    def last_text(self) -> str | None:
        """The model's last answer as decoded text (None when it was not asked)."""
        return self._last_text

    @property
    def query_count(self) -> int:
        """How often the model was asked since the last reset."""
        return self._query_count

    @property
    def unparseable_count(self) -> int:
        """How many answers named no meta-action (each replaced by stop)."""
        return self._unparseable_count

    @property
    def missing_image_count(self) -> int:
        """How many queries had no usable camera image."""
        return self._missing_image_count

    def plan(self, observation: PlannerObservation) -> Trajectory:
        """The trajectory carrying out the model's meta-action, in
        ``observation.ego.frame_id``, stamped ``observation.stamp_ns``."""
        action = self._action_for(observation)
        return meta_action_trajectory(observation, action, self.config.meta_action,
                                      self.config.chunk, source=self.name)

    def _action_for(self, obs: PlannerObservation) -> MetaAction:
        said = clean_instruction(obs.instruction)
        instruction = (said, obs.instruction_stamp_ns)
        if (self._last_action is not None and self._last_query_ns is not None
                and instruction == self._last_instruction
                and 0 <= obs.stamp_ns - self._last_query_ns
                < self.config.requery_s * _NS_PER_S):
            return self._last_action
        self._last_query_ns = obs.stamp_ns
        self._last_instruction = instruction
        image = obs.image if _valid_image(obs.image) else None
        if image is None:
            self._missing_image_count += 1
            if obs.image is not None:
                _LOG.warning("VLM planner: camera image of shape %s dtype %s is not "
                             "(H, W, 3) uint8; asking without it",
                             getattr(obs.image, "shape", None), getattr(obs.image, "dtype",
                                                                        None))
            if not self.config.text_only_without_image:
                # not an answer: ask as soon as an image comes back instead of caching
                self._last_query_ns = None
                self._last_text = None
                self._last_action = SAFE_DEFAULT_ACTION
                return SAFE_DEFAULT_ACTION
        text = self.generate(said, image)
        self._last_text = text
        parsed = parse_meta_action(text)
        if parsed is None:
            self._unparseable_count += 1
            _LOG.warning("VLM planner: answer %r names no meta-action; stopping", text)
            parsed = SAFE_DEFAULT_ACTION
        self._last_action = parsed
        return parsed

    def generate(self, instruction: str, image: np.ndarray | None) -> str:
        """The model's answer to the prompt for ``instruction`` about ``image``.

        Args:
            instruction: the instruction in force ("" = none); cleaned here again
                (:func:`clean_instruction` is idempotent), so a direct call is bounded too.
            image: ``(H, W, 3)`` uint8 RGB camera image, or None to ask with text only.

        Returns:
            The generated text (prompt excluded, special tokens removed).
        """
        import torch
        from PIL import Image

        self._query_count += 1
        prompt = self.config.prompt(clean_instruction(instruction))
        processor = self._processor
        if getattr(processor, "chat_template", None):
            content: list[dict[str, str]] = [{"type": "image"}] if image is not None else []
            content.append({"type": "text", "text": prompt})
            text = processor.apply_chat_template([{"role": "user", "content": content}],
                                                 add_generation_prompt=True, tokenize=False)
        else:
            token = getattr(processor, "image_token", None)
            text = f"{token}{prompt}" if image is not None and token else prompt
        kwargs: dict[str, Any] = {"text": text, "return_tensors": "pt"}
        if image is not None:
            kwargs["images"] = Image.fromarray(np.ascontiguousarray(image))
        inputs = processor(**kwargs).to(self.config.device)
        dtype = getattr(torch, self.config.dtype)
        for key, value in inputs.items():
            if torch.is_floating_point(value):  # pixel values follow the weights' dtype
                inputs[key] = value.to(dtype)
        tokenizer = getattr(processor, "tokenizer", processor)
        pad_id = tokenizer.pad_token_id
        with torch.inference_mode():
            out = self._model.generate(
                **inputs, max_new_tokens=self.config.max_new_tokens, do_sample=False,
                max_time=self.config.max_generate_s,
                pad_token_id=pad_id if pad_id is not None else tokenizer.eos_token_id)
        # decoder-only models echo the prompt; encoder-decoder ones generate only the answer
        if not getattr(self._model.config, "is_encoder_decoder", False):
            out = out[:, inputs["input_ids"].shape[1]:]
        return str(tokenizer.decode(out[0], skip_special_tokens=True)).strip()


__all__ = ["DEFAULT_PROMPT", "SAFE_DEFAULT_ACTION", "VLMConfig", "VLMPlanner"]
