"""Demonstrations for imitation learning: what the expert did, as the policy's features.

A demonstration folder holds:

- ``features.json``: :meth:`VLAConfig.feature_dict` of the config the features were made
  with (image size, object / lane layout, scales, chunk grid, text model). Training refuses
  a model config that does not agree.
- one compressed ``.npz`` shard per episode (:meth:`DemoWriter.end_episode`), ``K``
  samples each: the compact processor features (:data:`FEATURE_NAMES`; ``image`` as
  ``(K, 3, H, W)`` uint8, normalised when loaded; the others ``(K, ...)`` float32),
  ``targets`` ``(K, H, 3)`` float32 (expert waypoints x, y in ``base_link``, m, and speeds,
  m/s), ``target_slot`` ``(K,)`` int64 (the ``objects`` slot of the object the instruction
  names, -1 for none or unknown; see :meth:`VLAProcessor.target_slot`; shards recorded
  before it existed lack it and load as all -1), ``instruction`` ``(K,)`` str,
  ``stamp_ns`` ``(K,)`` int64 and ``meta`` ``(K,)`` str (one JSON object per sample:
  episode name, kind, seed, step, whatever the recorder passes). Re-recording an episode of
  the same name replaces its shard.
- ``text_embeddings.npz``: the text encoder's cache of the instructions (made on first
  load, see :class:`~mm_perception.planning.vla.text.TextEncoder`).

:class:`DemoDataset` loads a folder into memory (images stay uint8 until a batch is made) and
serves samples / batches as torch tensors, the sentence embedding of each instruction
computed once per unique string.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from mm_perception.core.errors import ConfigError
from mm_perception.core.npz_io import read_npz
from mm_perception.planning.instructions import parse_instruction, phrasings, render_instruction
from mm_perception.planning.observation import PlannerObservation
from mm_perception.planning.trajectory import Trajectory
from mm_perception.planning.vla.config import NO_LANGUAGE_INSTRUCTION, VLAConfig
from mm_perception.planning.vla.processor import FEATURE_NAMES, VLAProcessor
from mm_perception.planning.vla.text import TextEncoder

FEATURES_FILE = "features.json"
TEXT_CACHE_FILE = "text_embeddings.npz"
_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]+")


def _check_features(folder: Path, config: VLAConfig) -> None:
    """Write ``features.json`` in a new folder, or check that it matches ``config``."""
    file = folder / FEATURES_FILE
    want = config.feature_dict()
    if not file.is_file():
        file.write_text(json.dumps(want, indent=2) + "\n", encoding="utf-8")
        return
    try:
        have = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from exc
    if have != want:
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise ConfigError(f"{file}: the demonstrations were made with other features than "
                          f"this config (differing: {diff}); record them again or use their "
                          f"config")


class DemoWriter:
    """Records demonstrations into ``out_dir`` (module docstring), one shard per episode.

    Args:
        out_dir: the folder (created; an existing one must have the same features).
        config: the policy config whose processor makes the features.
    """

    def __init__(self, out_dir: str | Path, config: VLAConfig) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _check_features(self.out_dir, config)
        self.processor = VLAProcessor(config)
        self._rows: list[dict[str, Any]] = []
        self._episodes = 0
        self.shards: list[Path] = []

    @property
    def pending(self) -> int:
        """Samples added since the last :meth:`end_episode`."""
        return len(self._rows)

    def add(self, obs: PlannerObservation, expert: Trajectory, meta: Mapping[str, Any],
            target_id: int | None = None) -> None:
        """Add one sample: the observation's features, the expert's chunk as targets, the
        instruction and ``meta`` (JSON-serialisable; ``episode`` names the shard).
        ``target_id``: the ground-truth id of the object the instruction names (its slot,
        found in ``obs.ground_truth``, is the sample's ``target_slot``; -1 without one).

        Raises:
            ValueError: the expert trajectory gives no finite targets, or ``meta`` is not
                JSON-serialisable.
        """
        try:
            meta_json = json.dumps(dict(meta), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"demonstration meta must be JSON-serialisable: {exc}") from exc
        row: dict[str, Any] = dict(self.processor.compact_features(obs))
        row["targets"] = self.processor.targets(obs.ego, expert)
        target = None
        if target_id is not None and obs.ground_truth is not None:
            target = next((o for o in obs.ground_truth if o.object_id == target_id), None)
        row["target_slot"] = self.processor.target_slot(obs.objects, target)
        row["instruction"] = obs.instruction
        row["stamp_ns"] = obs.stamp_ns
        row["meta"] = meta_json
        row["episode"] = meta.get("episode")
        self._rows.append(row)

    def end_episode(self) -> Path | None:
        """Write the pending samples as one shard; returns its path (None if none)."""
        if not self._rows:
            return None
        rows, self._rows = self._rows, []
        self._episodes += 1
        episode = rows[0]["episode"]
        name = (_NAME_RE.sub("_", str(episode)).strip("._") if episode is not None else ""
                ) or f"episode_{self._episodes:05d}"
        arrays: dict[str, np.ndarray] = {k: np.stack([r[k] for r in rows])
                                         for k in (*FEATURE_NAMES, "targets")}
        arrays["instruction"] = np.asarray([r["instruction"] for r in rows], dtype=np.str_)
        arrays["meta"] = np.asarray([r["meta"] for r in rows], dtype=np.str_)
        arrays["stamp_ns"] = np.asarray([r["stamp_ns"] for r in rows], dtype=np.int64)
        arrays["target_slot"] = np.asarray([r["target_slot"] for r in rows], dtype=np.int64)
        path = self.out_dir / f"{name}.npz"
        tmp = self.out_dir / f".{name}.tmp.npz"
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)  # a crash mid-write never leaves a truncated shard
        self.shards.append(path)
        return path


#: speeds a re-speeded wording may name (``DemoDataset.batch(respeed=...)``), m/s: the
#: suite's follow_speed range and beyond, so that no speed is tied to one sentence
RESPEED_GRID_MPS = (3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0)
#: a re-speeded wording names a speed at least this far from the true one, m/s
RESPEED_MIN_GAP_MPS = 1.5


def _respeeded(text: str) -> tuple[str, ...]:
    """``text`` with each speed of :data:`RESPEED_GRID_MPS` far enough from the one it
    names: the same training wording of the same task (:func:`parse_instruction`), () for
    a text that is no suite wording or names no speed."""
    task = parse_instruction(text)
    if task is None or task.speed_mps is None:
        return ()
    count = len(phrasings(task.kind, "train"))
    index = next((i for i in range(count) if render_instruction(task, i, "train") == text),
                 None)
    if index is None:  # a held-out wording: never used to make training text
        return ()
    return tuple(dict.fromkeys(
        render_instruction(replace(task, speed_mps=v), index, "train")
        for v in RESPEED_GRID_MPS if abs(v - task.speed_mps) >= RESPEED_MIN_GAP_MPS))


def find_shards(data_dir: str | Path) -> list[Path]:
    """The shards of a demonstration folder, sorted by name."""
    folder = Path(data_dir)
    return sorted(p for p in folder.glob("*.npz")
                  if p.name != TEXT_CACHE_FILE and not p.name.startswith("."))


class DemoDataset(Dataset[dict[str, torch.Tensor]]):
    """A demonstration folder in memory.

    Args:
        data_dir: the folder.
        config: the model config (its :meth:`~VLAConfig.feature_dict` must match the
            folder's; its image normalisation is applied when batches are made).
        text_encoder: encodes the instructions (default: one caching to the folder's
            ``text_embeddings.npz``).
        language: False replaces every instruction by :data:`NO_LANGUAGE_INSTRUCTION` (the
            "no language" ablation is trained like this).
        reword: also encode, for every suite instruction (one :func:`parse_instruction`
            reads back), the task in every TRAIN wording, so that :meth:`batch` with a
            generator can give a sample any of them; the demonstrations then teach the
            wordings of a task as one thing, whichever one an episode was recorded with.
            Held-out wordings are never added. Instructions that are no suite wording keep
            their own text only.

    Attributes:
        episodes: shard names; ``episode_index`` ``(N,)`` int64 which one each sample is from.
        target_slot: ``(N,)`` int64 grounding label of each sample (-1: none).
        instructions: the instruction of each sample (after the ``language`` switch).
        meta: the recorder's meta of each sample.
        wordings: how many (instruction, alternative) pairs :meth:`batch` can draw from
            (the number of distinct instructions without ``reword``).

    Raises:
        ConfigError: no shards, other features, or a malformed shard.
    """

    def __init__(self, data_dir: str | Path, config: VLAConfig,
                 text_encoder: TextEncoder | None = None, language: bool = True,
                 reword: bool = False) -> None:
        folder = Path(data_dir)
        if not (folder / FEATURES_FILE).is_file():
            raise ConfigError(f"{folder} is not a VLA demonstration folder (no {FEATURES_FILE})")
        _check_features(folder, config)
        paths = find_shards(folder)
        if not paths:
            raise ConfigError(f"no demonstration shards (*.npz) in {folder}")
        self.config = config
        self.processor = VLAProcessor(config)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in (*FEATURE_NAMES, "targets")}
        instructions: list[str] = []
        self.meta: list[dict[str, Any]] = []
        episode_index: list[np.ndarray] = []
        slots: list[np.ndarray] = []
        self.episodes = [p.stem for p in paths]
        for e, path in enumerate(paths):
            with read_npz(path, "VLA demonstration shard") as data:
                for k in parts:
                    parts[k].append(np.asarray(data[k]))
                instructions += [str(s) for s in data["instruction"]]
                self.meta += [json.loads(str(m)) for m in data["meta"]]
                count = len(data["targets"])
                episode_index.append(np.full(count, e, np.int64))
                slots.append(np.asarray(data["target_slot"], np.int64)
                             if "target_slot" in data.files
                             else np.full(count, -1, np.int64))
        self._data = {k: np.concatenate(v) for k, v in parts.items()}
        self.episode_index: npt.NDArray[np.int64] = np.concatenate(episode_index)
        self.target_slot: npt.NDArray[np.int64] = np.concatenate(slots)
        if self.target_slot.shape != (len(self),) or (
                (self.target_slot < -1) | (self.target_slot >= config.max_objects)).any():
            raise ConfigError(f"malformed demonstration set {folder}: target_slot must be "
                              f"one slot in [-1, {config.max_objects}) per sample")
        self.instructions = (instructions if language
                             else [NO_LANGUAGE_INSTRUCTION] * len(instructions))
        encoder = text_encoder or TextEncoder(cache_file=folder / TEXT_CACHE_FILE)
        unique = list(dict.fromkeys(self.instructions))
        # alternatives[u]: the texts instruction u may be replaced by (itself first)
        alternatives = [[u] for u in unique]
        if reword and language:
            for alt in alternatives:
                task = parse_instruction(alt[0])
                if task is not None:
                    alt += [w for w in dict.fromkeys(
                        render_instruction(task, i, "train")
                        for i in range(len(phrasings(task.kind, "train")))) if w != alt[0]]
        texts = list(dict.fromkeys(t for alt in alternatives for t in alt))
        # respeed variants of every text that names a speed (batch(respeed=...)): the same
        # wording with another speed of RESPEED_GRID_MPS
        variants = ({t: _respeeded(t) for t in texts} if reword and language else {})
        texts = list(dict.fromkeys([*texts, *(v for vs in variants.values() for v in vs)]))
        lookup = {t: i for i, t in enumerate(texts)}
        self._text = encoder.encode_many(texts)
        var_lists = [[lookup[v] for v in variants.get(t, ())] for t in texts]
        self._var_rows = np.asarray([r for vs in var_lists for r in vs], np.int64)
        self._var_count = np.asarray([len(vs) for vs in var_lists], np.int64)
        self._var_start = np.concatenate([[0], np.cumsum(self._var_count)[:-1]]).astype(np.int64)
        # the speed cue of every text, read from the (re-)worded string as at inference
        self._speed_cue = (np.stack([self.processor.speed_cue(t) for t in texts])
                           if texts else np.zeros((0, 2), np.float32))
        # CSR table: the embedding rows of unique instruction u are
        # _alt_rows[_alt_start[u]:_alt_start[u] + _alt_count[u]]
        self._alt_rows = np.asarray([lookup[t] for alt in alternatives for t in alt], np.int64)
        self._alt_count = np.asarray([len(alt) for alt in alternatives], np.int64)
        self._alt_start = np.concatenate([[0], np.cumsum(self._alt_count)[:-1]]).astype(np.int64)
        first = {u: i for i, u in enumerate(unique)}
        self._unique_index = np.asarray([first[t] for t in self.instructions], np.int64)
        self.wordings = int(self._alt_count.sum())

    def __len__(self) -> int:
        return int(self._data["targets"].shape[0])

    def batch(self, indices: Sequence[int] | npt.NDArray[np.int64],
              rng: np.random.Generator | None = None, respeed: float = 0.0,
              ) -> dict[str, torch.Tensor]:
        """Samples ``indices`` as a batch: every network input (:data:`INPUT_NAMES`, with a
        leading batch dimension; ``speed_cue`` whether or not the config uses it, so that a
        teacher of either kind can run on the batch) and ``targets`` ``(B, H, 3)``, float32
        tensors, and ``target_slot`` ``(B,)`` int64.

        With ``rng`` (and ``reword``), each sample's instruction is drawn uniformly from its
        alternatives (its own wording and the task's other training wordings); without, it
        is the recorded one. ``text`` and ``speed_cue`` are of the same drawn wording.

        ``respeed`` (with ``rng`` and ``reword``): that fraction of the samples whose
        wording names a speed get, in ``text``, the embedding of the same wording naming
        another speed (:data:`RESPEED_GRID_MPS`, at least :data:`RESPEED_MIN_GAP_MPS` away);
        ``speed_cue``, the targets and the extra ``text_true`` ``(B, 384)`` (the drawn
        wording's own embedding, for a teacher) stay those of the true speed. A policy with
        the speed cue then learns that the cue, not the number in the sentence, says how
        fast to go.
        """
        idx = np.asarray(indices, np.int64)
        compact = {k: self._data[k][idx] for k in FEATURE_NAMES}
        feats = self.processor.expand(compact)
        out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feats.items()}
        u = self._unique_index[idx]
        pick = (rng.integers(0, self._alt_count[u]) if rng is not None
                else np.zeros(len(u), np.int64))
        rows = self._alt_rows[self._alt_start[u] + pick]
        out["text"] = torch.from_numpy(np.ascontiguousarray(self._text[rows]))
        out["speed_cue"] = torch.from_numpy(np.ascontiguousarray(self._speed_cue[rows]))
        if respeed > 0.0 and rng is not None:
            count = self._var_count[rows]
            swap = (count > 0) & (rng.random(len(rows)) < respeed)
            pick_var = (rng.random(len(rows)) * np.maximum(count, 1)).astype(np.int64)
            swapped = rows.copy()
            swapped[swap] = self._var_rows[self._var_start[rows[swap]] + pick_var[swap]]
            out["text_true"] = out["text"]
            out["text"] = torch.from_numpy(np.ascontiguousarray(self._text[swapped]))
        out["targets"] = torch.from_numpy(np.ascontiguousarray(self._data["targets"][idx]))
        out["target_slot"] = torch.from_numpy(np.ascontiguousarray(self.target_slot[idx]))
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One sample (no batch dimension)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range ({len(self)} samples)")
        return {k: v[0] for k, v in self.batch([index % len(self)]).items()}


__all__ = ["FEATURES_FILE", "RESPEED_GRID_MPS", "RESPEED_MIN_GAP_MPS", "TEXT_CACHE_FILE",
           "DemoDataset", "DemoWriter", "find_shards"]
