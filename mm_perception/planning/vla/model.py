"""The VLA policy network: scene + language tokens, cross-modal attention, action queries.

The LLM-based fusion pattern, small enough for a CPU:

- **Modality encoders** make tokens of width ``d_model``: a 4-stage stride-2 CNN turns the
  camera image into a ``(H / 16) x (W / 16)`` grid of patch tokens (+ learned position
  embeddings); an MLP per object token, its hidden layer modulated by the sentence
  embedding (FiLM, ``object_film``: the object tokens already say how well each object fits
  the instruction's colour and class words); an MLP per lane token (its ``P`` points flattened)
  + a learned embedding of its role; an MLP of the ego features (one token; with
  ``speed_cue``, plus an MLP of the speed the instruction names and its gap to the ego's
  speed, whose last layer starts at zero, so the ego token says both how fast the ego goes
  and how fast it was told to).
  Every group gets a learned modality embedding.
- **Connector**: a linear map of the 384-d sentence embedding to ``language_tokens`` tokens
  (+ their position embeddings), the way a VLM projects a frozen encoder into its LLM.
- **Task token** (``task_token``): a linear task head on the mean of the language tokens
  classifies the instruction into one of :data:`~mm_perception.planning.vla.config.TASK_KINDS`;
  the learned embedding of the argmax kind is one more language token (a hard choice, so
  a new wording moves the behaviour only if it changes the decision). Training may pass
  the true kind instead (``task_kind``, teacher forcing); the head is trained by the task
  probe's loss (:mod:`~mm_perception.planning.vla.train`).
- **Encoder**: pre-LayerNorm transformer blocks of self-attention over all the tokens, with
  a key mask: image tokens without a camera, padding object slots and missing lanes are
  never attended to (their scores get ``-1e9``: exactly zero weight after the softmax), and
  their inputs are replaced by zeros first so that even NaNs there cannot leak through a
  ``0 * NaN``. The ego, language (and task) tokens are always present, so no row is all
  masked.
- **Action decoder**: ``H`` learned action queries (one per waypoint) with self-attention,
  cross-attention to the encoded tokens (same key mask) and an MLP; the **action head**
  maps each query to 2 or 3 numbers (below).
- **Output** ``(B, H, 3)`` float32 in physical units, waypoint x, y (m, ``base_link``) and
  speed (m/s), by one of two heads (``VLAConfig.action_head``):

  - ``kinematic`` (default): each query gives an acceleration ``a = A tanh(r0)`` (``A`` the
    acceleration bound for ``r0 > 0``, the deceleration bound below) and a curvature
    ``kappa = K(v) tanh(r1)`` with ``K(v) = 1 / (1 / K0 + v^2 / a_lat)``. Speeds are the
    ego's forward speed plus the running sum of ``a dt``, each ``a`` first clipped to within
    ``J dt`` of the previous step's acceleration (bounded jerk) and braking limited to
    ``sqrt(J v)`` (a stop within the jerk bound), the speed clipped to
    ``[0, v_max]`` (``v_max`` raised to the ego's speed when it is faster); each
    step travels ``ds = (v_prev + v) / 2 dt`` along an arc of curvature ``kappa`` (heading
    change ``kappa ds``, chord along the mid-step heading). The chunk is therefore a path a
    car can drive: speeds, accelerations, curvature and lateral acceleration inside the
    bounds, spacing equal to the speeds,
    whatever the network's raw numbers; the decoder rebuilds the arc headings from the
    chords (:func:`~mm_perception.planning.observation.chunk_to_world` with
    ``arc_max_curvature_1pm``). The waypoints the loss compares are those integrated ones, so
    errors of the far waypoints train the early controls too.
  - ``waypoints``: a constant-speed prior (straight ahead at the current forward speed) plus
    the head's residual times the config's target scales, each number independent.

  Either head starts at zero, so an untrained network drives straight on at its speed;
  training learns the deviation.

Attention is written out (matmul + softmax) instead of ``nn.MultiheadAttention`` so that
the exported graph is plain ONNX ops with no fast-path variants, the same in torch, ONNX
Runtime and TensorRT. Every input is a plain tensor with a leading batch dimension (see
:data:`~mm_perception.planning.vla.processor.INPUT_NAMES`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from torch import nn

from mm_perception.planning.vla.config import (
    EGO_FEATURES,
    OBJECT_FEATURES,
    TASK_KINDS,
    VLAConfig,
)

#: additive attention score of a masked key: exp underflows to exactly 0 in float32
MASKED_SCORE = -1e9
#: unit of the named-minus-ego speed gap fed to the speed-cue MLP, m/s
SPEED_GAP_UNIT_MPS = 2.0
#: modality embeddings, in this order
_MODALITIES = ("image", "objects", "lanes", "ego", "language")


class Attention(nn.Module):
    """Multi-head attention of ``x`` ``(B, T, d)`` over ``memory`` ``(B, S, d)`` with an
    additive key bias ``(B, 1, 1, S)`` (0 or :data:`MASKED_SCORE`) or None."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor,
                key_bias: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        s = memory.shape[1]
        q = self.q(x).reshape(b, t, self.heads, self.head_dim).transpose(1, 2)
        kv = self.kv(memory).reshape(b, s, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, kv[0].transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        if key_bias is not None:
            scores = scores + key_bias
        weights = self.drop(torch.softmax(scores, dim=-1))
        y = torch.matmul(weights, kv[1]).transpose(1, 2).reshape(b, t, d)
        return self.out(y)


def _mlp(d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(d_hidden, d_out))


class EncoderBlock(nn.Module):
    """Pre-LN self-attention + MLP."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, config.heads, config.dropout)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = _mlp(d, d * config.ff_mult, d, config.dropout)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, key_bias))
        return x + self.drop(self.mlp(self.norm2(x)))


class DecoderBlock(nn.Module):
    """Pre-LN self-attention of the action queries, cross-attention to the tokens, MLP."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.LayerNorm(d)
        self.self_attn = Attention(d, config.heads, config.dropout)
        self.norm2 = nn.LayerNorm(d)
        self.cross_attn = Attention(d, config.heads, config.dropout)
        self.norm3 = nn.LayerNorm(d)
        self.mlp = _mlp(d, d * config.ff_mult, d, config.dropout)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, q: torch.Tensor, memory: torch.Tensor, key_bias: torch.Tensor,
                ) -> torch.Tensor:
        h = self.norm1(q)
        q = q + self.drop(self.self_attn(h, h, None))
        q = q + self.drop(self.cross_attn(self.norm2(q), memory, key_bias))
        return q + self.drop(self.mlp(self.norm3(q)))


class ImageEncoder(nn.Module):
    """``(B, 3, H, W)`` -> ``(B, (H / 16) * (W / 16), d_model)`` patch tokens."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in config.image_channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GELU()]
            c_in = c
        self.cnn = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, config.d_model, 1)
        rows, cols = config.image_grid
        self.pos = nn.Parameter(torch.zeros(rows * cols, config.d_model))
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        f = self.proj(self.cnn(image))                      # (B, d, rows, cols)
        return f.flatten(2).transpose(1, 2) + self.pos      # (B, rows * cols, d)


class VLAPolicyNet(nn.Module):
    """The policy network (module docstring).

    ``forward(image (B, 3, H, W), image_mask (B, 1), objects (B, N, 21), objects_mask
    (B, N), lanes (B, R, P, 2), lanes_mask (B, R), ego (B, 3), text (B, 384)[, speed_cue
    (B, 2)])`` -> ``(B, H, 3)`` float32 waypoint x, y (m, ``base_link``) and speed (m/s);
    every input float32, masks 0 / 1; ``speed_cue`` (required with ``VLAConfig.speed_cue``,
    ignored without) as :meth:`~mm_perception.planning.vla.processor.VLAProcessor.speed_cue`
    makes it. Training only: ``task_kind`` ``(B,)`` int64, the index into
    :data:`~mm_perception.planning.vla.config.TASK_KINDS` the task token takes (-1: the
    task head's argmax), with ``task_token``.
    """

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.image = ImageEncoder(config)
        self.objects = _mlp(OBJECT_FEATURES, d, d)
        # FiLM of the object MLP's hidden layer by the sentence embedding; zero-initialised:
        # it starts as the identity (and a policy without it can be fine-tuned into one)
        self.object_film = nn.Linear(config.text_dim, 2 * d) if config.object_film else None
        if self.object_film is not None:
            nn.init.zeros_(self.object_film.weight)
            nn.init.zeros_(self.object_film.bias)
        self.lanes = _mlp(config.lane_points * 2, d, d)
        self.lane_role = nn.Parameter(torch.zeros(config.num_lanes, d))
        self.ego = _mlp(EGO_FEATURES, d, d)
        # zero-initialised output: a policy without the cue is fine-tuned into one from where
        # it was (as object_film)
        self.speed_mlp = _mlp(3, d, d) if config.speed_cue else None
        if self.speed_mlp is not None:
            last = self.speed_mlp[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.connector = nn.Linear(config.text_dim, config.language_tokens * d)
        self.language_pos = nn.Parameter(torch.zeros(config.language_tokens, d))
        # the task token's kind embeddings start at zero: a policy without the token can be
        # fine-tuned into one from where it was
        self.task_head = nn.Linear(d, len(TASK_KINDS)) if config.task_token else None
        self.task_embed = (nn.Parameter(torch.zeros(len(TASK_KINDS), d)) if config.task_token
                           else None)
        self.modality = nn.Parameter(torch.zeros(len(_MODALITIES), d))
        self.token_norm = nn.LayerNorm(d)
        self.encoder = nn.ModuleList(EncoderBlock(config) for _ in range(config.encoder_layers))
        self.memory_norm = nn.LayerNorm(d)
        self.queries = nn.Parameter(torch.zeros(config.horizon, d))
        self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.decoder_layers))
        self.head_norm = nn.LayerNorm(d)
        self.kinematic = config.action_head == "kinematic"
        self.head = nn.Linear(d, 2 if self.kinematic else 3)
        for p in (self.lane_role, self.language_pos, self.modality, self.queries):
            nn.init.normal_(p, std=0.02)
        # the residual starts at zero: an untrained policy is the constant-speed prior
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.times_s: torch.Tensor
        self.register_buffer("times_s", torch.tensor(config.chunk.times_s, dtype=torch.float32),
                             persistent=False)
        self.dt_s: torch.Tensor
        self.register_buffer("dt_s", torch.diff(self.times_s, prepend=self.times_s.new_zeros(1)),
                             persistent=False)
        self.out_scale: torch.Tensor
        self.register_buffer("out_scale", torch.tensor(
            [config.target_xy_scale_m, config.target_xy_scale_m, config.target_speed_scale_mps],
            dtype=torch.float32), persistent=False)

    def prior(self, ego: torch.Tensor) -> torch.Tensor:
        """``(B, H, 3)`` constant-speed prior: straight ahead at the current forward speed
        (never backwards)."""
        v0 = (ego[:, 0] * self.config.velocity_scale_mps).clamp(min=0.0).unsqueeze(1)  # (B, 1)
        x = v0 * self.times_s                                                          # (B, H)
        return torch.stack([x, torch.zeros_like(x), v0.expand_as(x)], dim=-1)

    def language_tokens(self, text: torch.Tensor) -> torch.Tensor:
        """The connector: ``(B, 384)`` sentence embedding -> ``(B, language_tokens,
        d_model)`` language tokens (with their position and modality embeddings, before
        the shared token LayerNorm)."""
        lang = self.connector(text).reshape(text.shape[0], self.config.language_tokens, -1)
        return lang + self.language_pos + self.modality[4]

    def pooled_language(self, lang_tok: torch.Tensor) -> torch.Tensor:
        """Language tokens ``(B, language_tokens, d_model)`` (of :meth:`language_tokens`) ->
        ``(B, d_model)``: their mean after the shared token LayerNorm, what the task head
        (and the training's task probe) classifies."""
        return self.token_norm(lang_tok).mean(dim=1)

    def task_logits(self, lang_tok: torch.Tensor) -> torch.Tensor:
        """The task head: language tokens -> ``(B, len(TASK_KINDS))`` logits of
        :meth:`pooled_language`. Needs ``task_token``."""
        if self.task_head is None:
            raise RuntimeError("this policy has no task head (VLAConfig.task_token is false)")
        return self.task_head(self.pooled_language(lang_tok))

    def task_token(self, lang_tok: torch.Tensor, task_kind: torch.Tensor | None,
                   ) -> torch.Tensor:
        """``(B, 1, d_model)``: the embedding of the task head's argmax kind (or of
        ``task_kind`` where it is >= 0), as a language token."""
        assert self.task_embed is not None
        logits = self.task_logits(lang_tok)
        # one-hot of the argmax by comparison (plain ONNX ops; a tie averages the kinds)
        hard = (logits >= logits.max(dim=-1, keepdim=True).values).to(logits.dtype)
        hard = hard / hard.sum(dim=-1, keepdim=True)
        if task_kind is not None:
            given = F.one_hot(task_kind.clamp(min=0), len(TASK_KINDS)).to(logits.dtype)
            hard = torch.where((task_kind >= 0).unsqueeze(-1), given, hard)
        return (hard @ self.task_embed).unsqueeze(1) + self.modality[4]

    def forward(self, image: torch.Tensor, image_mask: torch.Tensor, objects: torch.Tensor,
                objects_mask: torch.Tensor, lanes: torch.Tensor, lanes_mask: torch.Tensor,
                ego: torch.Tensor, text: torch.Tensor, speed_cue: torch.Tensor | None = None,
                task_kind: torch.Tensor | None = None) -> torch.Tensor:
        b = ego.shape[0]
        cam = image_mask.reshape(b, 1, 1, 1) > 0.5
        obj_on = objects_mask > 0.5
        lane_on = lanes_mask > 0.5
        # masked inputs become zeros before any layer (a NaN times a 0 weight is still NaN);
        # the objects in object_tokens, which the training's target pointer also calls
        image = torch.where(cam, image, torch.zeros_like(image))
        lanes = torch.where(lane_on.reshape(b, -1, 1, 1), lanes, torch.zeros_like(lanes))

        img_tok = self.image(image) + self.modality[0]
        obj_tok = self.object_tokens(objects, objects_mask, text) + self.modality[1]
        lane_tok = self.lanes(lanes.flatten(2)) + self.lane_role + self.modality[2]
        ego_tok = self.ego(ego).unsqueeze(1) + self.modality[3]
        if self.speed_mlp is not None:
            if speed_cue is None:
                raise ValueError("this policy takes a speed_cue input (VLAConfig.speed_cue)")
            ego_tok = ego_tok + self.speed_mlp(self.speed_features(speed_cue, ego)).unsqueeze(1)
        lang_tok = self.language_tokens(text)
        groups = [img_tok, obj_tok, lane_tok, ego_tok, lang_tok]
        if self.task_embed is not None:
            groups.append(self.task_token(lang_tok, task_kind))
        tokens = self.token_norm(torch.cat(groups, dim=1))

        n_img = img_tok.shape[1]
        # the ego, language and task tokens are never masked
        always = 1 + self.config.language_tokens + (self.task_embed is not None)
        keep = torch.cat([
            cam.reshape(b, 1).expand(b, n_img), obj_on, lane_on,
            torch.ones(b, always, dtype=torch.bool, device=ego.device)], dim=1)
        key_bias = torch.where(keep, torch.zeros_like(keep, dtype=tokens.dtype),
                               torch.full_like(keep, MASKED_SCORE, dtype=tokens.dtype))
        key_bias = key_bias.reshape(b, 1, 1, -1)

        x = tokens
        for block in self.encoder:
            x = block(x, key_bias)
        memory = self.memory_norm(x)
        q = self.queries.unsqueeze(0).expand(b, -1, -1)
        for dec in self.decoder:
            q = dec(q, memory, key_bias)
        raw = self.head(self.head_norm(q))
        if self.kinematic:
            return self.integrate(ego, raw)
        return self.prior(ego) + raw * self.out_scale

    def speed_features(self, speed_cue: torch.Tensor, ego: torch.Tensor) -> torch.Tensor:
        """``(B, 3)`` input of the speed-cue MLP: the cue ``(B, 2)`` (named speed / velocity
        scale, named or not) and, where a speed is named, how much faster it is than the
        ego's forward speed, in units of :data:`SPEED_GAP_UNIT_MPS`. The gap is what the
        chunk's acceleration has to follow; given explicitly, a 1 m/s difference is not a
        0.07 difference of two inputs that the MLP must learn to subtract."""
        gap = ((speed_cue[:, 0] - ego[:, 0]) * speed_cue[:, 1]
               * (self.config.velocity_scale_mps / SPEED_GAP_UNIT_MPS))
        return torch.cat([speed_cue, gap.unsqueeze(1)], dim=1)

    def object_tokens(self, objects: torch.Tensor, objects_mask: torch.Tensor,
                      text: torch.Tensor) -> torch.Tensor:
        """Object MLP: ``objects (B, N, 21)``, ``objects_mask (B, N)``, ``text (B, 384)`` ->
        ``(B, N, d_model)``; empty slots are zeroed first (as every masked input of
        :meth:`forward`); with ``object_film`` the hidden layer ``h`` becomes
        ``h * (1 + gamma) + beta``, ``gamma, beta`` linear in the sentence embedding."""
        objects = torch.where(objects_mask.unsqueeze(-1) > 0.5, objects,
                              torch.zeros_like(objects))
        if self.object_film is None:
            return self.objects(objects)
        linear1, act, drop, linear2 = self.objects
        gamma, beta = self.object_film(text).unsqueeze(1).chunk(2, dim=-1)   # (B, 1, d) each
        return linear2(drop(act(linear1(objects)) * (1.0 + gamma) + beta))

    def integrate(self, ego: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """Kinematic head: raw ``(B, H, 2)`` (acceleration, curvature logits) -> ``(B, H, 3)``
        waypoint x, y (m, ``base_link``) and speed (m/s) (module docstring)."""
        c = self.config
        r_acc, r_curv = raw[..., 0], raw[..., 1]
        t = torch.tanh(r_acc)
        accel = torch.where(r_acc > 0, t * c.head_max_accel_mps2, t * c.head_max_decel_mps2)
        v0 = (ego[:, 0] * c.velocity_scale_mps).clamp(min=0.0).unsqueeze(1)          # (B, 1)
        # An ego already above the speed bound may hold its speed (never a jump down).
        v_cap = v0.clamp(min=c.head_max_speed_mps)
        # step by step (H is small; the loop unrolls into plain ops in ONNX): each step's
        # acceleration stays within jerk * dt of the previous step's actual one (after the
        # speed clip), so the profile is jerk-bounded except where it clips at standstill
        speeds: list[torch.Tensor] = []
        v_last = v0[:, 0]
        a_last: torch.Tensor | None = None
        for k, dt in enumerate(self.dt_s.tolist()):
            a = accel[:, k]
            if a_last is not None:
                a = torch.minimum(torch.maximum(a, a_last - c.head_max_jerk_mps3 * dt),
                                  a_last + c.head_max_jerk_mps3 * dt)
            # braking fades out near standstill (a >= -sqrt(J v)), so that a stop needs no
            # jerk beyond J; without it the clip at v = 0 would be a step in acceleration
            # (the clamp keeps the gradient of sqrt finite at v = 0)
            a = torch.maximum(a, -math.sqrt(c.head_max_jerk_mps3)
                              * torch.sqrt(v_last.clamp(min=1e-4)))
            v_k = torch.minimum((v_last + a * dt).clamp(min=0.0), v_cap[:, 0])
            a_last = (v_k - v_last) / dt
            speeds.append(v_k)
            v_last = v_k
        v = torch.stack(speeds, dim=1)                                               # (B, H)
        v_prev = torch.cat([v0, v[:, :-1]], dim=1)
        v_mid = (v_prev + v) * 0.5
        ds = v_mid * self.dt_s                                                        # (B, H)
        k_max = 1.0 / (1.0 / c.head_max_curvature_1pm
                       + v_mid * v_mid / c.head_max_lateral_accel_mps2)
        dpsi = k_max * torch.tanh(r_curv) * ds
        psi = torch.cumsum(dpsi, dim=1)
        psi_mid = psi - 0.5 * dpsi
        x = torch.cumsum(ds * torch.cos(psi_mid), dim=1)
        y = torch.cumsum(ds * torch.sin(psi_mid), dim=1)
        return torch.stack([x, y, v], dim=-1)


def parameter_count(net: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in net.parameters())


def normalised_error(net: VLAPolicyNet, pred: torch.Tensor, target: torch.Tensor,
                     ) -> torch.Tensor:
    """``(pred - target) / target scales``: ``(B, H, 3)``, the quantity the loss penalises
    (x, y in units of ``target_xy_scale_m``, speed in ``target_speed_scale_mps``)."""
    return (pred - target) / net.out_scale


def huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    """Elementwise Huber loss of a residual (quadratic below ``delta``, linear above)."""
    return F.huber_loss(x, torch.zeros_like(x), reduction="none", delta=delta)


__all__ = ["MASKED_SCORE", "SPEED_GAP_UNIT_MPS", "Attention", "DecoderBlock", "EncoderBlock",
           "ImageEncoder", "VLAPolicyNet", "huber", "normalised_error", "parameter_count"]
