"""Imitation training of the VLA policy on recorded demonstrations (CPU).

``mm-perception train vla --data DIR --out DIR [...]`` (:func:`add_arguments` / :func:`run`)
or :func:`train_vla` from Python. Data: a :mod:`~mm_perception.planning.vla.dataset` folder.

- **Split**: by episode (shard): ``val_fraction`` of the episodes (at least one when there
  are two or more, chosen with ``seed``) are validation; with a single episode its last
  ``val_fraction`` of the samples. ``val_fraction = 0``: no validation, the best weights are
  then chosen by the training loss.
- **Loss**: Huber on the chunk error normalised by the config's target scales (x, y by
  ``target_xy_scale_m``, speed by ``target_speed_scale_mps``), divided by ``huber_delta`` so
  that its slope beyond the delta is 1 (an L1 for large errors, smooth near 0); speed
  weighted ``speed_weight`` (0.5), x and y 1. Every waypoint has the same weight: the later
  ones have larger errors in metres anyway, and the closed loop replans after a fraction of
  the chunk, so extra weight on the far end would only trade accuracy where it is executed.
- **Language grounding** (both off for the "no language" ablation, whose instruction is
  constant). Paraphrases of one task are further apart in the sentence-embedding space than
  "left" is from "right" in one wording (cosine ~0.85 against ~0.95 for MiniLM), so a policy
  fitted on a few wordings per task can key on wording details and misread a new phrasing.
  Two training-only measures push it onto the directions that tell tasks apart:

  - an auxiliary **task probe**: a linear classifier of the task kind (each sample's
    ``meta["kind"]``; samples without one are ignored) on the mean of the language tokens
    after the shared token LayerNorm, weighted ``kind_weight`` in the loss. The connector
    must then keep the kind, left vs right included, linearly separable in what the
    transformer sees (a linear probe on the raw embeddings of the training wordings already
    classifies 15 of the 18 held-out wordings right). The probe is not part of the
    exported policy;
  - **text noise**: isotropic gaussian noise of expected norm ``text_noise`` added to the
    unit-norm sentence embedding, so that no single small wording direction can carry the
    behaviour;
  - **re-wording** (``reword``): every training sample's instruction is drawn afresh per
    batch from the training wordings of its task (:func:`parse_instruction` reads the task
    back from the recorded sentence), so each episode teaches every wording of its task,
    not the one it happened to be recorded with. Validation keeps the recorded wording;
  - an auxiliary **target pointer** (``target_weight``; needs ``object_film``): for the
    samples whose instruction names an object ("stop behind the yellow truck") and whose
    demonstration recorded which perceived object that is (``target_slot``), a linear
    score of every object token as it enters the transformer (the object MLP with the
    instruction's FiLM), softmax over the present objects, cross-entropy against that
    slot. The chunk alone says which vehicle was meant only once the expert brakes for it,
    seconds after the choice mattered; the pointer makes each object token say whether it
    is the one named, at every step, for the action decoder to attend to. It reads the
    tokens before the encoder on purpose: read after it, it reached 97 % on training
    episodes and 55 % on validation ones (it learnt the scenes); before it, with only the
    object's own features to go by, it generalises (74 % on validation after 6 epochs of
    the pointer alone). Like the probe it is not part of the exported policy. The FiLM
    layer and the pointer train at ``grounding_lr_mult`` times ``lr`` (fine-tuning a policy
    at a low ``lr``, they are the layers that start from zero);
  - the **task token** (``VLAConfig.task_token``): the probe is then the network's own task
    head, over :data:`~mm_perception.planning.vla.config.TASK_KINDS` in that order, and is
    exported with it: at run time the embedding of its argmax kind is one more token. In
    training the token gets the sample's true kind (teacher forcing: the head's mistakes
    early in training do not teach the decoder to distrust it), and with
    ``language_dropout`` the sentence of that fraction of the samples of parameter-free
    kinds (:func:`parameter_free`) is dropped (zeros in place of the embedding, no probe
    loss), so the policy learns to act on the token alone; the sentence still carries the
    speed and the named vehicle. The token and the head train at ``grounding_lr_mult``
    times ``lr`` too;
  - the **speed cue** (``VLAConfig.speed_cue``): no loss of its own (the chunk says how
    fast to go); its MLP, which starts at zero when grown on a policy without it, trains
    at ``grounding_lr_mult`` times ``lr`` too. Fine-tuned from a policy that reads the
    speed from the sentence, the cue alone changed its chunks by 0.2 m/s between cues of
    5 and 13 m/s: the sentence already said it. With ``respeed`` that fraction of the
    samples naming a speed get the sentence of another speed
    (:meth:`~mm_perception.planning.vla.dataset.DemoDataset.batch`; the cue, the targets
    and the teacher's input keep the true one), so the number in the sentence stops being
    reliable and the cue is what sets the speed.
- **Balance** (``balance_kinds``): an epoch is one pass over the training samples in a
  seeded random order; or, when DAgger rounds have recorded some task kinds far more than
  others, as many draws with replacement, each task kind (``meta["kind"]``) equally
  likely, so that the kinds recorded most do not crowd the others out of the fine-tuning.
- **Augmentation**: gaussian noise of ``position_noise_m`` on the positions of the present
  objects (perception is noisy). No instruction dropout: the instruction decides the
  behaviour the policy must learn (the "no language" ablation is a separate model trained
  with ``--no-language``, every instruction replaced by the constant one).
- **Initialisation**: random, or ``init_weights`` (a weights folder of the same config,
  e.g. the policy of the previous DAgger round, fine-tuned on the aggregated data at a lower
  ``lr``; or of the same config without ``object_film``, ``task_token`` or ``speed_cue``,
  which then start as the identity or a constant).
- **Teacher** (``teacher_weights``, ``teacher_weight``): learning without forgetting (Li &
  Hoiem, 2016) for fine-tuning on new demonstrations alone. A frozen policy (typically the
  one being fine-tuned) runs on every training batch, with the same inputs and noise, and
  its chunk is a second target: ``teacher_weight`` times the same chunk loss against it. A
  policy fine-tuned on a few hundred fresh episodes otherwise drifts from what the
  demonstrations it was first trained on taught it (the shipped weights fine-tuned on 305
  episodes recorded with a newer perception and expert fell on validation from 10/10 to
  2/10 yields and from 10/10 to 5/10 left lane changes); the teacher's term holds it where
  the new labels do not pull it away. The teacher must read the same features
  (``VLAConfig.feature_dict``, ``language``); it is not part of the saved policy.
- **Optimiser**: AdamW, linear warm-up then cosine decay to 2 % of ``lr``, gradient norm
  clipped at 1.
- **Reproducible and resumable**: ``torch.set_num_threads(threads)``; the sample order, the
  noise and dropout are seeded per epoch from ``seed`` (``[seed, epoch]``), so a resumed run
  makes the same batches as an uninterrupted one. ``<out>/checkpoint.pt`` (network,
  optimiser, scheduler, next epoch, best validation, log) is written after every epoch and
  when ``max_minutes`` stops training; ``resume`` continues from it (also to train more
  epochs later: it is kept at the end).
- **Outputs**: the weights (``keep="best"``: of the epoch with the lowest validation loss;
  ``keep="last"``: of the last epoch, for fine-tuning on episodes an earlier round already
  trained on, whose validation loss no longer tells a better policy from one that
  remembers more) (``vla.pt`` + ``config.json``, see
  :mod:`~mm_perception.planning.vla.policy`), ``vla.onnx`` exported from them, and
  ``train_log.json`` (arguments, the command, data sizes, per-epoch losses and validation
  ADE / FDE / speed error, wall times).

The shipped weights (``mm_perception/planning/vla/weights/``) were made with::

    mm-perception sim demos --seeds 0-24 --jobs 2 --out DEMOS        # 34 min on 2 cores
    mm-perception train vla --data DEMOS --out R0 --epochs 22 --max-minutes 38 \
        --threads 2 --kind-weight 0 --text-noise 0 --no-reword        # 23 min (round 0)
    mm-perception sim demos --seeds 25-49 --learner R0 --beta 0.3 --jobs 2 \
        --out DEMOS                                                   # 22 min (DAgger 1)
    mm-perception train vla --data DEMOS --out R1 --epochs 16 --max-minutes 42 \
        --threads 2 --no-reword                                       # 31 min
    mm-perception sim demos --seeds 50-64 --learner R1 --beta 0.2 --jobs 2 \
        --out DEMOS                                                   # 12 min (DAgger 2)
    mm-perception train vla --data DEMOS --out R2 --init-weights R1 --lr 1.5e-4 \
        --warmup-steps 50 --epochs 5 --threads 2 --no-reword          # 11 min
    mm-perception train vla --data DEMOS --out R3 --init-weights R2 --lr 2e-4 \
        --warmup-steps 50 --epochs 8 --threads 2 --keep last          # 23 min (re-worded)
    mm-perception sim demos --seeds 65-79 --kinds stop_behind turn_left turn_right \
        go_straight pull_over yield_pedestrians --learner R3 --beta 0.2 --jobs 2 \
        --out DEMOS                                                   # 6.5 min (DAgger 3)
    mm-perception train vla --data DEMOS --out R4 --init-weights R3 --lr 1.5e-4 \
        --warmup-steps 50 --epochs 4 --threads 2 --keep last          # 24 min
    mm-perception sim demos --seeds 80-94 --kinds stop_behind pull_over go_straight \
        turn_left turn_right --learner R4 --beta 0.2 --jobs 2 \
        --out DEMOS                                                   # 7 min (DAgger 4)
    mm-perception train vla --data DEMOS --out R5 --init-weights R4 --lr 1e-4 \
        --warmup-steps 50 --epochs 3 --threads 2 --keep last          # 9 min
    mm-perception sim demos --seeds 95-134 --kinds stop_behind --jobs 2 \
        --out DEMOS                                                   # 3.7 min (targets)
    mm-perception sim demos --seeds 135-164 --kinds stop_behind --learner R5 --beta 0.2 \
        --jobs 2 --out DEMOS                                          # 2.8 min (DAgger 5)
    mm-perception train vla --data DEMOS --out R6 --init-weights R5 --lr 1.5e-4 \
        --warmup-steps 50 --epochs 3 --threads 2 --keep last          # 9.3 min (*)
    mm-perception train vla --data DEMOS --out R7 --init-weights R6 --lr 1.5e-4 \
        --warmup-steps 50 --epochs 3 --threads 2 --keep last \
        --target-weight 0.5                                           # 9.5 min (*, FiLM)
    mm-perception sim demos --seeds 165-254 --kinds stop_behind --jobs 2 \
        --out DEMOS                                                   # 8.2 min
    mm-perception train vla --data DEMOS --out R8 --init-weights R7 --lr 1.5e-4 \
        --warmup-steps 50 --epochs 3 --threads 2 --keep last \
        --target-weight 0.5                                           # 9.6 min
    mm-perception train vla --data DEMOS --out R9 --init-weights R8 --lr 1.5e-4 \
        --grounding-lr-mult 7 --warmup-steps 50 --epochs 3 --threads 2 \
        --keep last --target-weight 0.5                               # 9.8 min
    mm-perception train vla --data DEMOS --out R10 --init-weights R9 --lr 1e-4 \
        --grounding-lr-mult 3 --warmup-steps 50 --epochs 3 --threads 2 \
        --keep last --target-weight 0.5 --balance-kinds               # 9.9 min
    mm-perception sim demos --seeds 255-294 --kinds turn_left --learner R10 --beta 0.2 \
        --jobs 2 --out DEMOS                                          # 2.5 min (DAgger 6)
    mm-perception train vla --data DEMOS --out R11 --init-weights R10 --lr 1e-4 \
        --grounding-lr-mult 3 --warmup-steps 50 --epochs 3 --threads 2 \
        --keep last --target-weight 0.5 --balance-kinds               # 10 min
    # the speed cue, fine-tuned on fresh demonstrations (today's perception and expert;
    # KINDS8 = every kind but stop_behind) with R11 as the teacher
    mm-perception sim demos --seeds 0-24 --kinds KINDS8 --jobs 2 --out DEMOS2   # expert
    mm-perception sim demos --seeds 25-64 --kinds turn_left turn_right --learner R11 \
        --beta 0.2 --jobs 2 --out DEMOS2                              # DAgger, turns
    mm-perception sim demos --seeds 65-94 --kinds KINDS8 --learner R11 --beta 0.2 \
        --jobs 2 --out DEMOS2                                         # DAgger, 8 kinds
    mm-perception train vla --data DEMOS2 --out WEIGHTS --speed-cue --init-weights R11 \
        --teacher R11 --teacher-weight 1 --respeed 0.5 --lr 1e-4 --grounding-lr-mult 3 \
        --warmup-steps 50 --epochs 3 --threads 2 --keep last --target-weight 0.5 \
        --balance-kinds                                               # 9.3 min

(*) R6 and R7 were trained with the code of commit 911591c, whose target pointer read the
encoder's output tokens and needed no FiLM (since 4d08588 it reads the object tokens before
the encoder, and needs ``object_film``): R6 with R5's config (``object_film`` false; at that
commit ``--config`` with it) and the default pointer weight 0.1, R7 widened from it to the
default config (object FiLM). The stop_behind recordings from seed 95 on carry
``target_slot``; the earlier ones do not (-1).

Round 0: 225 expert episodes (9 task kinds x seeds 0-24, training wordings, DART noise; the
expert succeeded in 201), 11975 samples. DAgger round 1 adds 225 episodes driven by the
round-0 policy (the expert's chunk 30 % of the time; 161 reached their goal), round 2 135
episodes driven by round 1's (20 %; 99 reached their goal), all labelled by the expert:
31135 samples, 113 distinct instructions. Round 1 trained from scratch (best epoch 13 of
16: validation ADE 1.07 m, FDE 2.41 m); round 2 fine-tuned it on everything. Rounds 0-2
were recorded when each task had 6 training wordings (now 14) and before two perception
fixes (LiDAR headings of faces seen edge-on, output-level heading merges modulo pi), so
recording them again today gives other demonstrations. Round 3 fine-tuned round 2 on the
same data with re-wording (1582 instruction/wording pairs); DAgger round 3 adds 90 episodes
of the six kinds the policy did worst, driven by round 3's policy (70 reached their goal),
and R4 fine-tunes on them; DAgger round 4 adds 75 episodes of five kinds driven by R4 (56
reached their goal): 40450 samples (34482 train, 5968 validation, 168 recorded
instructions, 2352 instruction/wording pairs). The last round's epoch 3 of 3: validation
ADE 0.70 m, FDE 1.49 m, speed MAE 0.38 m/s, task probe 1.0 (optimistic: most validation
episodes were trained on in earlier rounds, whose splits differed; hence ``--keep last``).
From R5 on the target pointer and object FiLM (stop_behind stopped behind the wrong vehicle:
R5 managed it 0/5 on the validation seeds below): 160 stop_behind episodes with target labels
(40 + 90 by the expert, 30 DAgger; 9360 labelled samples), 50530 samples in all (43010
train, 7520 validation, 910 episodes, 3500 instruction/wording pairs); R10's last epoch:
validation ADE 0.73 m, FDE 1.67 m, speed MAE 0.44 m/s, task probe 1.0, target pointer
0.68 (of the labelled validation samples). DAgger round 6 adds 40 left turns driven by R10
(35 reached their goal; R10 left the road on the far side of left turns, exiting them
wide): 52730 samples (44760 train, 7970 validation, 950 episodes; another split, so its
validation figures are not comparable: ADE 0.53 m, FDE 1.12 m, speed MAE 0.30 m/s). Each
round from R3 on was kept over the one before it by closed-loop success on training-wording
seeds 500-504 (45 episodes each: R3 66.7 %, R4 73.3 %, R5 77.8 %, R6 75.6 %, R9 71.1 %, R10
84.4 %), from R10 on 500-509 (90 episodes: R10 83.3 %, R11 87.8 %), not on the held-out
seeds. DEMOS2: 520 episodes (200 expert, 80 + 240 DAgger episodes of R11), 27720 samples;
the last epoch: validation ADE 0.49 m, FDE 1.06 m, speed MAE 0.27 m/s. The speed-cue
fine-tune scored 90.0 % on seeds 500-509 (R11: 86.7 % with the same perception; the same
fine-tune without the cue 85.6 %, with the cue fed alone, without the speed gap, 83.3 %).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.planning.instructions import PARAMETRIC_KINDS, TaskKind
from mm_perception.planning.vla.config import TASK_KINDS, VLAConfig

if TYPE_CHECKING:
    import torch

    from mm_perception.planning.vla.dataset import DemoDataset
    from mm_perception.planning.vla.model import VLAPolicyNet
    from mm_perception.planning.vla.text import TextEncoder

LOG = logging.getLogger(__name__)
I64 = npt.NDArray[np.int64]
CHECKPOINT_FILE = "checkpoint.pt"


def split_indices(episode_index: I64, val_fraction: float, seed: int) -> tuple[I64, I64]:
    """``(train, val)`` sample indices, split by episode (module docstring)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n = len(episode_index)
    all_idx = np.arange(n, dtype=np.int64)
    if val_fraction == 0.0 or n == 0:
        return all_idx, all_idx[:0]
    episodes = np.unique(episode_index)
    if len(episodes) == 1:
        k = min(n - 1, max(1, math.ceil(n * val_fraction)))
        return all_idx[:n - k], all_idx[n - k:]
    k = min(len(episodes) - 1, max(1, round(len(episodes) * val_fraction)))
    val_eps = np.random.default_rng(seed).permutation(episodes)[:k]
    is_val = np.isin(episode_index, val_eps)
    return all_idx[~is_val], all_idx[is_val]


def kind_labels(meta: Sequence[dict[str, Any]], kinds: Sequence[str] | None = None,
                ) -> tuple[I64, list[str]]:
    """``(labels (N,) int64, kinds)``: each sample's index into ``kinds`` (default: the
    sorted task kinds of ``meta``), -1 where a sample has no ``kind`` or one not in
    ``kinds``."""
    if kinds is None:
        kinds = sorted({str(m["kind"]) for m in meta if m.get("kind") is not None})
    lookup = {k: i for i, k in enumerate(kinds)}
    labels = np.asarray([lookup.get(str(m["kind"]), -1) if m.get("kind") is not None else -1
                         for m in meta], dtype=np.int64)
    return labels, list(kinds)


def parameter_free(labels: I64, kinds: Sequence[str]) -> npt.NDArray[np.bool_]:
    """``(N,)`` bool: which samples (``labels`` into ``kinds``, -1 = none) are of a task
    kind whose instruction says nothing beyond its kind (not in
    :data:`~mm_perception.planning.instructions.PARAMETRIC_KINDS`): those whose sentence
    ``language_dropout`` may drop. Unknown and unlabelled kinds are never dropped."""
    free = {k.value for k in TaskKind} - {k.value for k in PARAMETRIC_KINDS}
    return np.isin(labels, [i for i, k in enumerate(kinds) if k in free])


def balance_probabilities(labels: I64) -> npt.NDArray[np.float64]:
    """``(N,)`` probabilities of drawing each sample so that every task kind (``labels``,
    -1 = none, one group of its own) is drawn equally often: ``1 / (kinds * count of its
    kind)``."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    p = 1.0 / (len(counts) * counts[inverse].astype(np.float64))
    return p / p.sum()


def probe_logits(net: VLAPolicyNet, probe: torch.nn.Linear, text: torch.Tensor,
                 ) -> torch.Tensor:
    """``(B, kinds)`` task-probe logits of ``text`` ``(B, 384)`` (module docstring)."""
    return probe(net.pooled_language(net.language_tokens(text)))


def pointer_logits(net: VLAPolicyNet, pointer: torch.nn.Linear,
                   batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(B, N)`` target-pointer logits of the instruction-conditioned object tokens
    (module docstring); empty slots get
    :data:`~mm_perception.planning.vla.model.MASKED_SCORE`."""
    import torch

    from mm_perception.planning.vla.model import MASKED_SCORE

    objects_mask = batch["objects_mask"]
    logits = pointer(net.object_tokens(batch["objects"], objects_mask, batch["text"])
                     ).squeeze(-1)
    return torch.where(objects_mask > 0.5, logits, torch.full_like(logits, MASKED_SCORE))


def chunk_loss(net: VLAPolicyNet, pred: torch.Tensor, target: torch.Tensor,
               huber_delta: float, speed_weight: float) -> torch.Tensor:
    """The training loss of a batch (module docstring): a scalar tensor."""
    from mm_perception.planning.vla.model import huber, normalised_error

    err = huber(normalised_error(net, pred, target), huber_delta) / huber_delta  # (B, H, 3)
    weights = pred.new_tensor([1.0, 1.0, speed_weight])
    return (err * weights).sum(dim=-1).mean()


def _forward(net: VLAPolicyNet, batch: dict[str, torch.Tensor],
             task_kind: torch.Tensor | None = None) -> torch.Tensor:
    """The network on a batch; ``task_kind`` (``(B,)`` int64, -1 = unknown) is the task
    token's teacher forcing (``task_token`` only)."""
    from mm_perception.planning.vla.processor import input_names

    return net(*(batch[k] for k in input_names(net.config)), task_kind=task_kind)


def _load_teacher(folder: str | Path, config: VLAConfig) -> VLAPolicyNet:
    """The frozen teacher policy of ``folder`` (module docstring), in eval mode.

    Raises:
        ConfigError: its features or language switch differ from ``config``'s.
    """
    from mm_perception.planning.vla.policy import load_weights

    teacher, _ = load_weights(folder)
    theirs = teacher.config
    if (theirs.feature_dict() != config.feature_dict()
            or theirs.language != config.language):
        raise ConfigError(f"teacher {folder} reads other features than this policy "
                          "(VLAConfig.feature_dict or language differ)")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def evaluate(net: VLAPolicyNet, data: DemoDataset, indices: I64, batch_size: int,
             huber_delta: float, speed_weight: float,
             probe: tuple[torch.nn.Linear, I64] | None = None,
             pointer: torch.nn.Linear | None = None) -> dict[str, float]:
    """Loss and errors of the network on ``indices``: ``loss`` (the chunk loss only),
    ``ade_m`` (mean waypoint distance), ``fde_m`` (last waypoint), ``speed_mae_mps``; with
    ``probe`` (the task probe and every sample's kind label) also ``kind_accuracy`` over
    the labelled samples; with ``pointer`` also ``target_accuracy`` over the samples with a
    ``target_slot`` (when there are any)."""
    import torch

    net.eval()
    sums = {"loss": 0.0, "ade_m": 0.0, "fde_m": 0.0, "speed_mae_mps": 0.0}
    hits = labelled = pointed = targets = 0
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            idx = indices[start:start + batch_size]
            batch = data.batch(idx)
            pred = _forward(net, batch)
            tgt = batch["targets"]
            n = len(tgt)
            sums["loss"] += float(chunk_loss(net, pred, tgt, huber_delta, speed_weight)) * n
            dist = torch.linalg.norm(pred[..., :2] - tgt[..., :2], dim=-1)
            sums["ade_m"] += float(dist.mean(dim=1).sum())
            sums["fde_m"] += float(dist[:, -1].sum())
            sums["speed_mae_mps"] += float((pred[..., 2] - tgt[..., 2]).abs().mean(dim=1).sum())
            if probe is not None:
                labels = torch.from_numpy(probe[1][idx])
                known = labels >= 0
                guess = probe_logits(net, probe[0], batch["text"]).argmax(dim=1)
                hits += int((guess[known] == labels[known]).sum())
                labelled += int(known.sum())
            if pointer is not None:
                slot = batch["target_slot"]
                has = slot >= 0
                pick = pointer_logits(net, pointer, batch).argmax(dim=1)
                pointed += int((pick[has] == slot[has]).sum())
                targets += int(has.sum())
    count = max(len(indices), 1)
    out = {k: round(v / count, 6) for k, v in sums.items()}
    if probe is not None and labelled:
        out["kind_accuracy"] = round(hits / labelled, 4)
    if pointer is not None and targets:
        out["target_accuracy"] = round(pointed / targets, 4)
    return out


def train_vla(config: VLAConfig, data_dir: str | Path, out_dir: str | Path, *,
              epochs: int = 30, batch_size: int = 32, lr: float = 5e-4,
              weight_decay: float = 1e-2, seed: int = 0, resume: bool = False,
              max_minutes: float = 0.0, val_fraction: float = 0.15, threads: int = 1,
              position_noise_m: float = 0.1, huber_delta: float = 0.05,
              speed_weight: float = 0.5, kind_weight: float = 0.1, text_noise: float = 0.5,
              target_weight: float = 0.1, grounding_lr_mult: float = 1.0,
              balance_kinds: bool = False, language_dropout: float = 0.0,
              respeed: float = 0.0, warmup_steps: int = 100, init_weights: str | Path | None = None,
              reword: bool = True, keep: str = "best", export: bool = True,
              teacher_weights: str | Path | None = None, teacher_weight: float = 0.0,
              progress: bool = True, text_encoder: TextEncoder | None = None,
              command: str | None = None) -> dict[str, Any]:
    """Train the policy (module docstring); returns the training log (also written to
    ``<out_dir>/train_log.json``).

    Raises:
        ConfigError: bad arguments, a data folder made with other features, or a checkpoint
            of another config when resuming.
    """
    import torch
    from tqdm import tqdm

    from mm_perception.planning.vla.dataset import DemoDataset
    from mm_perception.planning.vla.model import VLAPolicyNet, parameter_count
    from mm_perception.planning.vla.policy import ONNX_FILE, TRAIN_LOG_FILE, save_weights

    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be an integer >= 1, got {value!r}")
    for key, fvalue in (("lr", lr), ("huber_delta", huber_delta)):
        if not (math.isfinite(fvalue) and fvalue > 0):
            raise ConfigError(f"{key} must be > 0, got {fvalue!r}")
    for key, fvalue in (("position_noise_m", position_noise_m), ("speed_weight", speed_weight),
                        ("weight_decay", weight_decay), ("max_minutes", max_minutes),
                        ("warmup_steps", warmup_steps), ("kind_weight", kind_weight),
                        ("text_noise", text_noise), ("target_weight", target_weight),
                        ("grounding_lr_mult", grounding_lr_mult),
                        ("teacher_weight", teacher_weight)):
        if not (math.isfinite(fvalue) and fvalue >= 0):
            raise ConfigError(f"{key} must be >= 0, got {fvalue!r}")
    if keep not in ("best", "last"):
        raise ConfigError(f"keep must be 'best' or 'last', got {keep!r}")
    if not (math.isfinite(language_dropout) and 0.0 <= language_dropout < 1.0):
        raise ConfigError(f"language_dropout must be in [0, 1), got {language_dropout!r}")
    if config.task_token and config.language and kind_weight == 0:
        raise ConfigError("a task token needs the task probe to train its head "
                          "(kind_weight > 0); without it the token is an untrained choice")
    if (teacher_weight > 0) != (teacher_weights is not None):
        raise ConfigError("a teacher needs both teacher_weights (a weights folder) and "
                          f"teacher_weight > 0; got {teacher_weights!r} and {teacher_weight!r}")
    if not (math.isfinite(respeed) and 0.0 <= respeed < 1.0):
        raise ConfigError(f"respeed must be in [0, 1), got {respeed!r}")
    if respeed > 0 and not (config.speed_cue and config.language and reword):
        raise ConfigError("respeed needs the speed cue (VLAConfig.speed_cue), language and "
                          "re-wording: without the cue a sentence with another speed would "
                          "teach the wrong speed")
    if language_dropout > 0 and not config.task_token:
        raise ConfigError("language_dropout needs a task token (VLAConfig.task_token): "
                          "without one a dropped instruction leaves no task to follow")
    t_start = time.time()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # a teacher that cannot serve is refused before the data are read
    teacher = _load_teacher(teacher_weights, config) if teacher_weights is not None else None
    data = DemoDataset(data_dir, config, text_encoder=text_encoder, language=config.language,
                       reword=reword)
    train_idx, val_idx = split_indices(data.episode_index, val_fraction, seed)
    if len(train_idx) == 0:
        raise ConfigError(f"no training samples in {data_dir}")
    t_data = time.time()
    net = VLAPolicyNet(config)
    if init_weights is not None:
        from mm_perception.planning.vla.policy import load_weights

        init_net, _ = load_weights(init_weights)
        # a policy without object FiLM, the task token or the speed cue may grow them: they
        # start as the identity (FiLM, the cue's zero last layer) or a constant token (zero
        # kind embeddings)
        old = init_net.config
        grown = old != config
        growable = ("object_film", "task_token", "speed_cue")
        if grown and not (replace(old, **{k: getattr(config, k) for k in growable}) == config
                          and all(getattr(config, k) >= getattr(old, k) for k in growable)):
            raise ConfigError(f"init_weights {init_weights} were made with another config; "
                              "fine-tuning needs the same one (or the same without "
                              "object_film, task_token or speed_cue)")
        net.load_state_dict(init_net.state_dict(), strict=not grown)
    # with a task token the probe is the network's own task head, in its kind order
    kind_index, kinds = kind_labels(data.meta, TASK_KINDS if config.task_token else None)
    # the grounding measures need instructions that differ (module docstring)
    use_probe = config.language and kind_weight > 0 and len(kinds) >= 2
    text_sigma = text_noise / math.sqrt(config.text_dim) if config.language else 0.0
    probe = (net.task_head if net.task_head is not None
             else torch.nn.Linear(config.d_model, max(len(kinds), 1)))
    droppable = parameter_free(kind_index, kinds)
    # the pointer needs an instruction to point by (through the FiLM), and labels
    use_pointer = (config.language and config.object_film and target_weight > 0
                   and bool((data.target_slot[train_idx] >= 0).any()))
    pointer = torch.nn.Linear(config.d_model, 1)
    # the grounding layers (object FiLM and pointer) may learn faster than the rest: when
    # fine-tuning at a low lr they start from zero while everything else is trained
    grounding = ([*net.object_film.parameters(), *pointer.parameters()]
                 if use_pointer and net.object_film is not None else [])
    if net.task_head is not None and net.task_embed is not None:
        grounding += [*net.task_head.parameters(), net.task_embed]
    if net.speed_mlp is not None:
        grounding += list(net.speed_mlp.parameters())
    ids = {id(p) for p in grounding}
    rest = ([p for p in net.parameters() if id(p) not in ids]
            + (list(probe.parameters()) if use_probe and net.task_head is None else []))
    groups: list[dict[str, Any]] = [{"params": rest, "lr": lr}]
    if grounding:
        groups.append({"params": grounding, "lr": lr * grounding_lr_mult})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    total_steps = steps_per_epoch * epochs

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        frac = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    draw_p = balance_probabilities(kind_index[train_idx]) if balance_kinds else None
    noise = position_noise_m / config.position_scale_m
    log: dict[str, Any] = {
        "command": command if command is not None else shlex.join(sys.argv),
        "args": {"data_dir": str(data_dir), "out_dir": str(out_dir), "epochs": epochs,
                 "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
                 "val_fraction": val_fraction, "threads": threads,
                 "position_noise_m": position_noise_m, "huber_delta": huber_delta,
                 "speed_weight": speed_weight, "kind_weight": kind_weight,
                 "text_noise": text_noise, "target_weight": target_weight,
                 "grounding_lr_mult": grounding_lr_mult, "balance_kinds": balance_kinds,
                 "language_dropout": language_dropout, "respeed": respeed,
                 "warmup_steps": warmup_steps,
                 "max_minutes": max_minutes, "reword": reword, "keep": keep,
                 "init_weights": None if init_weights is None else str(init_weights),
                 "teacher_weights": None if teacher_weights is None else str(teacher_weights),
                 "teacher_weight": teacher_weight},
        "task_probe": {"used": use_probe, "kinds": kinds,
                       "unlabelled_samples": int((kind_index < 0).sum())},
        "target_pointer": {"used": use_pointer,
                           "labelled_samples": int((data.target_slot >= 0).sum())},
        "config": config.to_dict(), "torch": torch.__version__,
        "parameters": parameter_count(net), "samples": len(data),
        "train_samples": len(train_idx), "val_samples": len(val_idx),
        "episodes": len(data.episodes), "instructions": len(set(data.instructions)),
        "trained_wordings": data.wordings,
        "epochs": [], "best_epoch": None, "best_val_loss": None, "resumed_at": []}
    next_epoch = 0
    ckpt_path = out / CHECKPOINT_FILE
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["config"] != config.to_dict():
            raise ConfigError(f"{ckpt_path} was made with another config; train into a new "
                              "folder or resume with the same config")
        net.load_state_dict(ckpt["net"])
        if ckpt.get("probe") is not None:
            probe.load_state_dict(ckpt["probe"])
        if ckpt.get("pointer") is not None:
            pointer.load_state_dict(ckpt["pointer"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        next_epoch = int(ckpt["next_epoch"])
        log = ckpt["log"]
        log["resumed_at"].append(next_epoch)
        LOG.info("resumed from %s at epoch %d", ckpt_path, next_epoch + 1)
    t_train = time.time()
    deadline = t_train + max_minutes * 60.0 if max_minutes > 0 else math.inf
    stopped_early = False
    probe_eval = (probe, kind_index) if use_probe else None
    for epoch in range(next_epoch, epochs):
        net.train()
        rng = np.random.default_rng([seed, epoch])
        torch.manual_seed(seed * 1000 + epoch)
        perm = (train_idx[rng.choice(len(train_idx), len(train_idx), p=draw_p)]
                if draw_p is not None else train_idx[rng.permutation(len(train_idx))])
        total, done, teacher_total = 0.0, 0, 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                   disable=not progress)
        for step in bar:
            if time.time() > deadline:
                stopped_early = True
                break
            idx = perm[step * batch_size:(step + 1) * batch_size]
            batch = data.batch(idx, rng if reword else None, respeed=respeed)
            if noise > 0:
                jitter = torch.from_numpy(rng.normal(
                    0.0, noise, (*batch["objects"].shape[:2], 2)).astype(np.float32))
                batch["objects"][..., :2] += jitter * batch["objects_mask"].unsqueeze(-1)
            if text_sigma > 0:
                text_jitter = torch.from_numpy(rng.normal(
                    0.0, text_sigma, batch["text"].shape).astype(np.float32))
                batch["text"] += text_jitter
                if "text_true" in batch:  # the re-speeded samples' own sentence, same noise
                    batch["text_true"] = batch["text_true"] + text_jitter
            kind = torch.from_numpy(kind_index[idx])
            labels = kind  # of the probe loss: without the samples whose sentence is dropped
            if language_dropout > 0:
                # the instruction of a parameter-free task is dropped (no sentence: zeros),
                # the task token keeps the true kind: the policy learns to act on that
                # token, which a new wording reaches through one classification
                drop = torch.from_numpy(droppable[idx]
                                        & (rng.random(len(idx)) < language_dropout))
                batch["text"][drop] = 0.0
                labels = torch.where(drop, torch.full_like(labels, -1), labels)
            task_kind = kind if config.task_token else None
            pred = _forward(net, batch, task_kind)
            loss = chunk_loss(net, pred, batch["targets"], huber_delta, speed_weight)
            if teacher is not None:
                # same inputs: a task-token teacher gets the true kind where the policy
                # does (``task_kind`` indexes TASK_KINDS only then), else reads its own head
                # re-speeded samples (respeed): the teacher reads the sentence of the true
                # speed, which is what its chunk should follow
                seen = ({**batch, "text": batch["text_true"]} if "text_true" in batch
                        else batch)
                with torch.no_grad():
                    taught = _forward(teacher, seen,
                                      task_kind if teacher.config.task_token else None)
                teacher_loss = chunk_loss(net, pred, taught, huber_delta, speed_weight)
                teacher_total += float(teacher_loss.detach())
                loss = loss + teacher_weight * teacher_loss
            if use_probe and bool((labels >= 0).any()):
                loss = loss + kind_weight * torch.nn.functional.cross_entropy(
                    probe_logits(net, probe, batch["text"]), labels, ignore_index=-1)
            if use_pointer and bool((batch["target_slot"] >= 0).any()):
                loss = loss + target_weight * torch.nn.functional.cross_entropy(
                    pointer_logits(net, pointer, batch),
                    batch["target_slot"], ignore_index=-1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach())
            done += 1
            if step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        bar.close()
        if done == 0:
            break
        row: dict[str, Any] = {"epoch": epoch + 1, "steps": done, "complete": not stopped_early,
                               "train_loss": round(total / done, 6),
                               "lr": sched.get_last_lr()[0]}
        if teacher is not None:
            row["teacher_loss"] = round(teacher_total / done, 6)
        if len(val_idx):
            row["val"] = evaluate(net, data, val_idx, batch_size, huber_delta, speed_weight,
                                  probe_eval, pointer if use_pointer else None)
        score = row["val"]["loss"] if len(val_idx) else row["train_loss"]
        improved = log["best_val_loss"] is None or score < log["best_val_loss"]
        if improved:
            log["best_val_loss"], log["best_epoch"] = score, epoch + 1
        if improved or keep == "last":
            save_weights(out, net)
        if keep == "last":
            log["kept_epoch"] = epoch + 1
        row["wall_s"] = round(time.time() - t_start, 1)
        log["epochs"].append(row)
        LOG.info("epoch %d: %s", epoch + 1, row)
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(),
                    "probe": (probe.state_dict() if use_probe and net.task_head is None
                              else None),
                    "pointer": pointer.state_dict() if use_pointer else None,
                    "sched": sched.state_dict(),
                    "next_epoch": epoch if stopped_early else epoch + 1,
                    "config": config.to_dict(), "log": log}, ckpt_path)
        if stopped_early:
            LOG.warning("stopped after %.1f min (max_minutes); resume continues epoch %d",
                        max_minutes, epoch + 1)
            break
    log["stopped_early"] = stopped_early
    if export and (out / "vla.pt").is_file():
        from mm_perception.planning.vla.export import export_onnx
        from mm_perception.planning.vla.policy import load_weights

        best, _ = load_weights(out)
        export_onnx(best, out / ONNX_FILE)
    log["wall_s"] = {"data": round(t_data - t_start, 1), "train": round(time.time() - t_train, 1),
                     "total": round(time.time() - t_start, 1)}
    (out / TRAIN_LOG_FILE).write_text(json.dumps(log, indent=1, default=str) + "\n",
                                      encoding="utf-8")
    return log


# ---------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mm-perception train vla``."""
    parser.add_argument("--data", required=True, help="demonstration folder (shards)")
    parser.add_argument("--out", required=True, help="output weights folder")
    parser.add_argument("--config", help="VLA config (JSON or YAML; default: the defaults)")
    parser.add_argument("--no-language", action="store_true",
                        help="train the 'no language' ablation (constant instruction)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--val-fraction", type=float, default=0.15,
                        help="fraction of the episodes held out for validation")
    parser.add_argument("--position-noise", type=float, default=0.1,
                        help="std of the noise added to object positions, m")
    parser.add_argument("--speed-weight", type=float, default=0.5)
    parser.add_argument("--huber-delta", type=float, default=0.05,
                        help="Huber delta on the normalised chunk error")
    parser.add_argument("--kind-weight", type=float, default=0.1,
                        help="weight of the auxiliary task-kind probe on the language tokens "
                             "(0 = off)")
    parser.add_argument("--target-weight", type=float, default=0.1,
                        help="weight of the auxiliary target pointer over the object tokens, "
                             "on samples with a recorded target_slot (0 = off)")
    parser.add_argument("--grounding-lr-mult", type=float, default=1.0,
                        help="learning rate of the object FiLM, the target pointer and the "
                             "task token, in multiples of --lr (they start from zero when "
                             "fine-tuning)")
    parser.add_argument("--balance-kinds", action="store_true",
                        help="draw every task kind equally often (with replacement) instead "
                             "of one pass over the samples per epoch")
    parser.add_argument("--text-noise", type=float, default=0.5,
                        help="expected norm of the gaussian noise added to the unit-norm "
                             "sentence embedding")
    parser.add_argument("--task-token", action="store_true",
                        help="give the policy a task token (VLAConfig.task_token): the task "
                             "head's argmax kind as one more language token")
    parser.add_argument("--speed-cue", action="store_true",
                        help="give the policy the speed cue (VLAConfig.speed_cue): the speed "
                             "the instruction names, read by a unit grammar, as one more input")
    parser.add_argument("--language-dropout", type=float, default=0.0,
                        help="probability that a sample of a parameter-free task is trained "
                             "without its sentence (the task token only; needs --task-token)")
    parser.add_argument("--respeed", type=float, default=0.0,
                        help="fraction of the samples that name a speed trained with the "
                             "sentence naming another one, the speed cue and targets kept "
                             "(needs VLAConfig.speed_cue): the cue, not the sentence, sets "
                             "the speed")
    parser.add_argument("--no-reword", action="store_true",
                        help="train every sample with its recorded instruction only (default: "
                             "drawn per batch from the training wordings of its task)")
    parser.add_argument("--keep", choices=("best", "last"), default="best",
                        help="weights written: the epoch with the lowest validation loss, or "
                             "the last epoch (fine-tuning on data earlier rounds trained on)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--max-minutes", type=float, default=0.0,
                        help="stop training after this many minutes (0 = no limit); "
                             "--resume continues")
    parser.add_argument("--init-weights", default=None,
                        help="start from this weights folder (same config), e.g. to fine-tune "
                             "the previous DAgger round's policy")
    parser.add_argument("--teacher", default=None,
                        help="a frozen policy (weights folder) whose chunks are a second "
                             "target (learning without forgetting; needs --teacher-weight)")
    parser.add_argument("--teacher-weight", type=float, default=0.0,
                        help="weight of the loss against the teacher's chunks")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <out>/checkpoint.pt")
    parser.add_argument("--no-export", action="store_true", help="do not write vla.onnx")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mm-perception train vla``; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    LOG.setLevel(logging.INFO)
    config = VLAConfig.load(args.config) if args.config else VLAConfig()
    if args.no_language:
        config = replace(config, language=False)
    if args.task_token:
        config = replace(config, task_token=True)
    if args.speed_cue:
        config = replace(config, speed_cue=True)
    log = train_vla(config, args.data, args.out, epochs=args.epochs,
                    batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                    seed=args.seed, resume=args.resume, max_minutes=args.max_minutes,
                    val_fraction=args.val_fraction, threads=args.threads,
                    position_noise_m=args.position_noise, huber_delta=args.huber_delta,
                    speed_weight=args.speed_weight, kind_weight=args.kind_weight,
                    text_noise=args.text_noise, target_weight=args.target_weight,
                    grounding_lr_mult=args.grounding_lr_mult, balance_kinds=args.balance_kinds,
                    language_dropout=args.language_dropout, respeed=args.respeed,
                    warmup_steps=args.warmup_steps,
                    init_weights=args.init_weights, reword=not args.no_reword, keep=args.keep,
                    export=not args.no_export, progress=not args.no_progress,
                    teacher_weights=args.teacher, teacher_weight=args.teacher_weight)
    last = log["epochs"][-1] if log["epochs"] else {}
    print(f"best epoch {log['best_epoch']} (loss {log['best_val_loss']}); last: {last}")
    print(f"weights kept: {'epoch ' + str(log['kept_epoch']) if 'kept_epoch' in log else 'best'}")
    print(f"weights written to {args.out} in {log['wall_s']['total'] / 60:.1f} min")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mm_perception.planning.vla.train",
                                     description="train the VLA policy on demonstrations")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["CHECKPOINT_FILE", "add_arguments", "chunk_loss", "evaluate", "kind_labels",
           "parameter_free", "probe_logits", "run", "split_indices", "train_vla"]
