"""Weights files of the stack's torch models: one way to write and read a state dict.

Every weights folder (camera detector, BEV fusion, VLA policy) stores its network as a
``.pt`` state dict beside the config it fits. Writing copies every floating tensor to CPU
float32 (a model trained on CUDA or in mixed precision loads anywhere, and the file size is
predictable); reading uses ``weights_only=True`` (a weights file never runs code) and turns
a corrupt file or one that does not fit the config into a :class:`ConfigError` naming both
files.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from mm_perception.core.errors import ConfigError


def save_state_dict(net: nn.Module, path: str | Path) -> None:
    """Write ``net``'s state dict to ``path``: floating tensors as CPU float32, the others
    (integer buffers) on the CPU as they are."""
    state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.cpu()
             for k, v in net.state_dict().items()}
    torch.save(state, Path(path))


def load_state_dict(net: nn.Module, path: str | Path, config_path: str | Path) -> None:
    """Load the state dict at ``path`` into ``net`` (on the CPU, strict).

    Raises:
        ConfigError: the file cannot be read as a state dict, or its tensors do not fit
            ``net`` (built from ``config_path``, named in the message).
    """
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    # a truncated zip is a RuntimeError; weights_only refusing an object an UnpicklingError
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise ConfigError(f"{path} does not fit {config_path}: {exc}") from exc


__all__ = ["load_state_dict", "save_state_dict"]
