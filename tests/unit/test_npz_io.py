"""Damaged dataset shards and bad simulated durations give one clear error, no traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mm_perception.cli import main
from mm_perception.core.errors import ConfigError
from mm_perception.core.npz_io import read_npz
from mm_perception.detection.camera import dataset as camera_dataset
from mm_perception.fusion.feature_level import dataset as bev_dataset
from mm_perception.sim.recorder import check_duration


def damaged_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.npz"
    np.savez_compressed(good, a=np.arange(1000), b=np.ones((50, 50)))
    out = {"text": tmp_path / "text.npz", "cut": tmp_path / "cut.npz",
           "empty": tmp_path / "empty.npz", "missing": tmp_path / "nope.npz",
           "pickled": tmp_path / "pickled.npz"}
    out["text"].write_bytes(b"this is not an archive\n" * 20)
    out["cut"].write_bytes(good.read_bytes()[:400])
    out["empty"].write_bytes(b"")
    np.save(out["pickled"].with_suffix(".npy"), np.array([{"a": 1}], dtype=object))
    out["pickled"].write_bytes(out["pickled"].with_suffix(".npy").read_bytes())
    return out


def test_read_npz_names_the_file_for_every_kind_of_damage(tmp_path: Path) -> None:
    for path in damaged_files(tmp_path).values():
        with (pytest.raises(ConfigError, match=f"{path.name} is not a readable test shard"),
              read_npz(path, "test shard") as z):
            z["a"]
    good = tmp_path / "good.npz"
    with read_npz(good, "test shard") as z:
        assert int(z["a"].sum()) == 499500
    # content the caller finds missing is the file's fault too
    with (pytest.raises(ConfigError, match=r"good\.npz.*KeyError"),
          read_npz(good, "test shard") as z):
        z["no_such_array"]
    # errors of other kinds pass through unchanged
    with pytest.raises(ZeroDivisionError), read_npz(good, "test shard"):
        _ = 1 / 0


@pytest.mark.parametrize("module", [bev_dataset, camera_dataset])
def test_dataset_shard_loaders_name_a_damaged_shard(module: object, tmp_path: Path) -> None:
    for path in damaged_files(tmp_path).values():
        with pytest.raises(ConfigError, match=f"{path.name} is not a readable .* shard"):
            module.load_shard(path)  # type: ignore[attr-defined]
    other = tmp_path / "other.npz"  # an archive, but not a shard
    np.savez_compressed(other, x=np.zeros(3))
    with pytest.raises(ConfigError, match="KeyError"):
        module.load_shard(other)  # type: ignore[attr-defined]


def test_cli_train_bev_on_a_damaged_shard(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "bevdata"
    data.mkdir()
    (data / "highway_0500.npz").write_bytes(b"garbage")
    code = main(["train", "bev", "--data", str(data), "--out", str(tmp_path / "o"),
                 "--val-seeds", "500", "--train-seeds", "500"])
    err = capsys.readouterr().err
    assert code == 2 and "highway_0500.npz is not a readable BEV dataset shard" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("duration", [-1.0, 0.0, float("nan"), float("inf")])
def test_simulated_duration_is_checked_before_anything_runs(
        duration: float, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="duration"):
        check_duration(duration)
    out = tmp_path / "bag"
    assert main(["sim", "--scenario", "highway", "--seed", "1", "--duration", str(duration),
                 "--out", str(out)]) == 2
    assert "simulated duration" in capsys.readouterr().err and not out.exists()
    assert check_duration(2) == 2.0
