"""The shared weights-file helpers of the torch models (runtime.torch_weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mm_perception.core.errors import ConfigError
from mm_perception.runtime.torch_weights import load_state_dict, save_state_dict


def _net() -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(6, dtype=torch.float64).reshape(2, 3) / 7)
    return net


def test_saved_floats_are_float32_and_load_back(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    save_state_dict(_net(), path)
    state = torch.load(path, weights_only=True)
    assert state["0.weight"].dtype == torch.float32
    assert state["1.num_batches_tracked"].dtype == torch.int64  # integer buffers untouched
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    load_state_dict(fresh, path, tmp_path / "config.json")
    torch.testing.assert_close(fresh[0].weight, (torch.arange(6.0).reshape(2, 3) / 7))


def test_corrupt_or_mismatched_files_name_both_files(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    save_state_dict(_net(), path)
    other = torch.nn.Linear(4, 2)
    with pytest.raises(ConfigError, match=r"w\.pt does not fit .*config\.json"):
        load_state_dict(other, path, tmp_path / "config.json")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="does not fit"):
        load_state_dict(_net(), path, tmp_path / "config.json")
    path.write_bytes(b"not a zip or pickle at all")
    with pytest.raises(ConfigError, match="does not fit"):
        load_state_dict(_net(), path, tmp_path / "config.json")
