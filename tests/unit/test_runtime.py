"""mm_perception.runtime: backends, feed/spec validation, config, engine cache, parity, CLI.

A tiny fusion-like module (points -> Linear -> scatter-amax into a BEV grid, camera crops ->
conv) with dynamic point count ``P`` and camera count ``K`` is exported to ONNX once per
module; torch and ONNX Runtime must agree within :data:`PARITY_ATOL`, including P = 0 and
K = 0 (no LiDAR points, no cameras). TensorRT runs in tests/gpu.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mm_perception.core.errors import (
    BackendUnavailableError,
    ConfigError,
    EngineBuildError,
    FeedError,
    ModelLoadError,
    SpecMismatchError,
)
from mm_perception.runtime import (
    EngineCache,
    EngineKey,
    RuntimeConfig,
    TensorSpec,
    compare_outputs,
    create_backend,
)

torch = pytest.importorskip("torch")
nn = torch.nn

#: max |torch - onnxruntime| on every output. Both run float32 kernels that sum in different
#: orders (Linear, conv, mean), which gives differences around 1e-7 on these O(1) values;
#: 1e-5 leaves two orders of magnitude of margin and still catches any real divergence.
PARITY_ATOL = 1e-5
GRID = 8
MAX_POINTS = 100_000
MAX_CAMERAS = 16

INPUTS = (TensorSpec("points", "float32", ("P", 4)),
          TensorSpec("cells", "int64", ("P",)),
          TensorSpec("images", "float32", ("K", 3, 16, 16)))
OUTPUTS = (TensorSpec("bev", "float32", (GRID, GRID, 6)),
           TensorSpec("image_features", "float32", ("K", 5)))


class TinyFusion(nn.Module):
    """points ``(P, 4)`` float32 + their BEV cell ``(P,)`` int64 + images ``(K, 3, 16, 16)``
    -> BEV features ``(GRID, GRID, 6)`` and per-image features ``(K, 5)``.

    ``pooling="scatter_amax"`` max-pools point features per cell (PointPillars-style);
    ``"sum"`` sums them over all points into every cell (for TensorRT, whose ONNX parser
    does not support ScatterElements with a max reduction).
    """

    def __init__(self, pooling: str = "scatter_amax") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pooling = pooling
        self.point_mlp = nn.Linear(4, 6)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, points: Any, cells: Any, images: Any) -> tuple[Any, Any]:
        feats = torch.relu(self.point_mlp(points))
        grid = torch.zeros(GRID * GRID, 6, dtype=feats.dtype, device=feats.device)
        if self.pooling == "scatter_amax":
            index = cells.unsqueeze(1).expand(-1, 6)
            grid = grid.scatter_reduce(0, index, feats, reduce="amax", include_self=True)
        else:
            grid = grid + feats.sum(dim=0, keepdim=True) + cells.sum().to(feats.dtype) * 0.0
        image_features = torch.relu(self.conv(images)).mean(dim=(2, 3))
        return grid.reshape(GRID, GRID, 6), image_features


def export_tiny(module: Any, path: Path) -> Path:
    """Export ``module`` with dynamic P and K to ``path`` (ONNX, dynamo exporter)."""
    pytest.importorskip("onnxscript")
    P = torch.export.Dim("P", min=0, max=MAX_POINTS)
    K = torch.export.Dim("K", min=0, max=MAX_CAMERAS)
    example = (torch.randn(5, 4), torch.randint(0, GRID * GRID, (5,)), torch.randn(2, 3, 16, 16))
    program = torch.onnx.export(
        module.cpu().eval(), example, dynamo=True, input_names=[s.name for s in INPUTS],
        output_names=[s.name for s in OUTPUTS],
        dynamic_shapes={"points": {0: P}, "cells": {0: P}, "images": {0: K}}, verbose=False)
    assert program is not None
    program.save(str(path))
    return path


def make_feeds(num_points: int, num_images: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"points": rng.normal(size=(num_points, 4)).astype(np.float32),
            "cells": rng.integers(0, GRID * GRID, size=num_points).astype(np.int64),
            "images": rng.normal(size=(num_images, 3, 16, 16)).astype(np.float32)}


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    return export_tiny(TinyFusion(), tmp_path_factory.mktemp("tiny") / "tiny_fusion.onnx")


@pytest.fixture(scope="module")
def ort_backend(tiny_onnx: Path) -> Any:
    backend = create_backend(RuntimeConfig(backend="onnxruntime", intra_op_threads=1),
                             onnx_path=tiny_onnx, inputs=INPUTS, outputs=OUTPUTS)
    yield backend
    backend.close()


# ---------------------------------------------------------------------------- parity
@pytest.mark.parametrize(("num_points", "num_images"), [(0, 0), (1, 1), (1000, 3)])
def test_torch_and_onnxruntime_agree(ort_backend: Any, num_points: int,
                                     num_images: int) -> None:
    torch_backend = create_backend(RuntimeConfig(backend="torch"), module=TinyFusion(),
                                   inputs=INPUTS, outputs=OUTPUTS)
    feeds = make_feeds(num_points, num_images)
    ref = torch_backend.run(feeds)
    got = ort_backend.run(feeds)
    assert got["bev"].shape == (GRID, GRID, 6)
    assert got["image_features"].shape == (num_images, 5)
    assert all(a.dtype == np.float32 for a in got.values())
    report = compare_outputs(ref, got, atol=PARITY_ATOL)
    assert report.ok, report
    if num_points == 0:  # no points: the grid stays at its zero init, exactly
        assert not got["bev"].any()


def test_backends_implement_the_protocol(ort_backend: Any) -> None:
    from mm_perception.runtime import InferenceBackend

    assert isinstance(ort_backend, InferenceBackend)
    assert ort_backend.name == "onnxruntime"
    assert ort_backend.inputs == INPUTS and ort_backend.outputs == OUTPUTS


# ---------------------------------------------------------------------------- bad model files
@pytest.mark.parametrize("kind", ["truncated", "random", "text", "missing"])
def test_bad_onnx_file_is_a_clear_model_load_error(tiny_onnx: Path, tmp_path: Path,
                                                   kind: str) -> None:
    path = tmp_path / f"{kind}.onnx"
    if kind == "truncated":
        path.write_bytes(tiny_onnx.read_bytes()[: tiny_onnx.stat().st_size // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(1).bytes(4096))
    elif kind == "text":
        path.write_text("this is a README, not a model\n")
    with pytest.raises(ModelLoadError, match=str(path).replace(".", r"\.")) as info:
        create_backend(RuntimeConfig(), onnx_path=path, inputs=INPUTS, outputs=OUTPUTS)
    assert ("not found" in str(info.value)) == (kind == "missing")


def test_model_inputs_differing_from_specs_is_a_clear_error(tiny_onnx: Path) -> None:
    wrong = (TensorSpec("points", "float64", ("P", 4)), TensorSpec("cells", "int64", ("P",)),
             TensorSpec("camera", "float32", ("K", 3, 16, 16)))
    with pytest.raises(SpecMismatchError) as info:
        create_backend(RuntimeConfig(), onnx_path=tiny_onnx, inputs=wrong, outputs=OUTPUTS)
    message = str(info.value)
    assert "camera float32 (K, 3, 16, 16)" in message  # expected side
    assert "images float32 (K, 3, 16, 16)" in message  # model side
    assert "points" in message and "float64" in message
    fixed = (INPUTS[0], INPUTS[1], TensorSpec("images", "float32", (2, 3, 16, 16)))
    create_backend(RuntimeConfig(), onnx_path=tiny_onnx, inputs=fixed, outputs=OUTPUTS)
    wrong_out = (OUTPUTS[0], TensorSpec("image_features", "float32", ("K", 7)))
    with pytest.raises(SpecMismatchError, match="image_features"):
        create_backend(RuntimeConfig(), onnx_path=tiny_onnx, inputs=INPUTS, outputs=wrong_out)


# ---------------------------------------------------------------------------- bad feeds
def _bad_feeds() -> list[tuple[str, dict[str, Any], str]]:
    good = make_feeds(10, 2)
    missing = {k: v for k, v in good.items() if k != "cells"}
    return [
        ("missing", missing, r"missing input\(s\) \['cells'\]"),
        ("unexpected", {**good, "radar": good["points"]}, r"unexpected input\(s\) \['radar'\]"),
        ("dtype", {**good, "points": good["points"].astype(np.float64)},
         "'points': expected dtype float32, got float64"),
        ("rank", {**good, "points": good["points"][None]}, "'points': expected rank 2"),
        ("fixed dim", {**good, "images": np.zeros((2, 3, 16, 8), np.float32)},
         "'images': axis 3 must be 16"),
        ("dynamic dim", {**good, "cells": good["cells"][:5]},
         "'cells': dynamic dim 'P' .* is 5, but input 'points' gives 'P' = 10"),
        ("not an array", {**good, "points": good["points"].tolist()},
         "'points': expected a numpy array"),
    ]


@pytest.mark.parametrize(("case", "feeds", "message"), _bad_feeds(),
                         ids=[c[0] for c in _bad_feeds()])
def test_bad_feeds_are_clear_errors(ort_backend: Any, case: str, feeds: dict[str, Any],
                                    message: str) -> None:
    with pytest.raises(FeedError, match=message):
        ort_backend.run(feeds)
    torch_backend = create_backend(RuntimeConfig(backend="torch"), module=TinyFusion(),
                                   inputs=INPUTS, outputs=OUTPUTS)
    with pytest.raises(FeedError, match=message):
        torch_backend.run(feeds)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": ""}, "TensorSpec.name"),
    ({"dtype": "float"}, "'float' must be spelled 'float64'"),
    ({"dtype": "nonsense"}, "dtype 'nonsense'"),
    ({"shape": (-1, 4)}, r"shape\[0\] = -1"),
    ({"shape": ("", 4)}, r"shape\[0\] = ''"),
])
def test_tensor_spec_validation(kwargs: dict[str, Any], message: str) -> None:
    args = {"name": "points", "dtype": "float32", "shape": ("P", 4), **kwargs}
    with pytest.raises(ConfigError, match=message):
        TensorSpec(**args)


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"backend": "tflite"}, "backend: 'tflite'"),
    ({"device": "tpu"}, "device: 'tpu'"),
    ({"precision": "fp8"}, "precision: 'fp8'"),
    ({"precision": "fp16"}, "precision: 'fp16' needs backend 'tensorrt'"),
    ({"backend": "torch", "precision": "int8"}, "precision: 'int8' needs backend 'tensorrt'"),
    ({"backend": "tensorrt", "device": "cpu"}, "device: 'cpu' with backend 'tensorrt'"),
    ({"dla_core": 0}, "dla_core: 0 needs backend 'tensorrt'"),
    ({"backend": "tensorrt", "device": "cuda", "dla_core": -1}, "dla_core: -1"),
    ({"backend": "tensorrt", "device": "cuda", "dla_core": True}, "dla_core: True"),
    ({"engine_cache_dir": ""}, "engine_cache_dir: ''"),
    ({"intra_op_threads": 0}, "intra_op_threads: 0"),
    ({"workspace_mb": 0}, "workspace_mb: 0"),
    ({"profile": {"P": (10, 5, 100)}}, r"profile\['P'\]: \(10, 5, 100\)"),
    ({"profile": {"P": (0, 5)}}, r"profile\['P'\]: \(0, 5\)"),
    ({"profile": {"P": (-1, 5, 9)}}, r"profile\['P'\]"),
    ({"profile": {"": (0, 5, 9)}}, "profile: key ''"),
])
def test_runtime_config_names_the_bad_value(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RuntimeConfig(**kwargs)


def test_runtime_config_is_frozen_and_profile_read_only() -> None:
    profile = {"P": [0, 1000, 30000]}
    cfg = RuntimeConfig(backend="tensorrt", device="cuda", precision="fp16", profile=profile)
    profile["P"] = [1, 1, 1]
    assert cfg.profile["P"] == (0, 1000, 30000)
    with pytest.raises(TypeError):
        cfg.profile["K"] = (0, 1, 2)  # type: ignore[index]
    assert cfg.engine_cache_path == Path("~/.cache/mm_perception/engines").expanduser()


# ---------------------------------------------------------------------------- unavailable
def test_cuda_without_cuda_is_an_error_not_a_fallback(tiny_onnx: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CPUExecutionProvider"])
    cfg = RuntimeConfig(backend="torch", device="cuda")
    with pytest.raises(BackendUnavailableError, match="'cuda' requested but CUDA is not"):
        create_backend(cfg, module=TinyFusion(), inputs=INPUTS, outputs=OUTPUTS)
    cfg = RuntimeConfig(backend="onnxruntime", device="cuda")
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        create_backend(cfg, onnx_path=tiny_onnx, inputs=INPUTS, outputs=OUTPUTS)


def test_tensorrt_not_installed_is_a_clear_error(tiny_onnx: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    cfg = RuntimeConfig(backend="tensorrt", device="cuda", profile={"P": (0, 100, 1000)})
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        create_backend(cfg, onnx_path=tiny_onnx, inputs=INPUTS, outputs=OUTPUTS)


def test_build_engine_cli_without_tensorrt(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    from mm_perception.cli import main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    status = main(["build-engine", str(tiny_onnx), "--precision", "fp16", "--cache-dir",
                   str(tmp_path), "--profile", "P=0,1000,100000", "--profile", "K=0,2,16"])
    assert status != 0
    assert "TensorRT is not installed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    status = main(["build-engine", str(tiny_onnx), "--profile", "P=0,1000"])
    assert status == 2
    assert "--profile 'P=0,1000'" in capsys.readouterr().err


def test_tensorrt_profile_needs_every_dynamic_dim() -> None:
    from mm_perception.runtime.tensorrt_backend import profile_shapes

    shapes = profile_shapes(INPUTS, {"P": (0, 1000, 100_000), "K": (0, 2, 16)})
    assert shapes[0] == ("cells", (0,), (1000,), (100_000,))
    assert shapes[1] == ("images", (0, 3, 16, 16), (2, 3, 16, 16), (16, 3, 16, 16))
    with pytest.raises(ConfigError, match=r"\['K'\] of input images"):
        profile_shapes(INPUTS, {"P": (0, 1000, 100_000)})


def test_package_import_is_light() -> None:
    code = textwrap.dedent("""
        import sys
        import mm_perception.runtime
        import mm_perception.runtime.build
        heavy = [m for m in ("tensorrt", "onnxruntime", "torch", "onnx") if m in sys.modules]
        print("heavy:", heavy)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout


# ---------------------------------------------------------------------------- engine cache
def _key(**changes: Any) -> EngineKey:
    fields: dict[str, Any] = {
        "onnx_sha256": "ab" * 32, "tensorrt_version": "10.3.0", "gpu_name": "Orin",
        "precision": "fp16", "dla_core": None,
        "profile_shapes": (("points", (0, 4), (1000, 4), (100_000, 4)),),
        "calibration_id": ""}
    return EngineKey(**{**fields, **changes})


class Builder:
    """Counts builds; ``load`` rejects anything not starting with b"ENGINE"."""

    def __init__(self, blob: bytes = b"ENGINE-v1") -> None:
        self.blob = blob
        self.calls = 0

    def build(self) -> bytes:
        self.calls += 1
        return self.blob

    @staticmethod
    def load(blob: bytes) -> str:
        if not blob.startswith(b"ENGINE"):
            raise ValueError("not an engine")
        return blob.decode()


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "cd" * 32}, {"tensorrt_version": "10.4.0"}, {"gpu_name": "H100"},
    {"precision": "int8"}, {"dla_core": 0},
    {"profile_shapes": (("points", (0, 4), (2000, 4), (100_000, 4)),)},
    {"calibration_id": "set-2"},
])
def test_engine_key_changes_with_every_field(change: dict[str, Any]) -> None:
    assert _key(**change).digest() != _key().digest()
    assert _key().digest() == _key().digest()


def test_engine_cache_miss_then_hit(tmp_path: Path) -> None:
    cache, builder = EngineCache(tmp_path / "engines"), Builder()
    first = cache.get_or_build("tiny", _key(), builder.build, builder.load)
    assert first.built and builder.calls == 1 and first.value == "ENGINE-v1"
    assert first.path == tmp_path / "engines" / f"tiny-{_key().digest()[:16]}.engine"
    sidecar = json.loads(first.path.with_name(first.path.name + ".json").read_text())
    assert sidecar["gpu_name"] == "Orin" and sidecar["precision"] == "fp16"
    second = cache.get_or_build("tiny", _key(), builder.build, builder.load)
    assert not second.built and builder.calls == 1 and second.value == "ENGINE-v1"
    other = cache.get_or_build("tiny", _key(precision="fp32"), builder.build, builder.load)
    assert other.built and other.path != first.path and builder.calls == 2


def test_corrupt_engine_is_rebuilt_with_a_warning(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    cache, builder = EngineCache(tmp_path), Builder()
    path = cache.get_or_build("tiny", _key(), builder.build, builder.load).path
    path.write_bytes(b"\x00garbage")
    with caplog.at_level(logging.WARNING, logger="mm_perception.runtime.engine_cache"):
        result = cache.get_or_build("tiny", _key(), builder.build, builder.load)
    assert result.built and builder.calls == 2 and result.value == "ENGINE-v1"
    assert path.read_bytes() == b"ENGINE-v1"
    assert "corrupt" in caplog.text and str(path) in caplog.text


def test_mismatched_or_missing_sidecar_is_rebuilt(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    cache, builder = EngineCache(tmp_path), Builder()
    path = cache.get_or_build("tiny", _key(), builder.build, builder.load).path
    sidecar = path.with_name(path.name + ".json")
    data = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**data, "gpu_name": "another GPU"}))
    with caplog.at_level(logging.WARNING):
        assert cache.get_or_build("tiny", _key(), builder.build, builder.load).built
    assert "does not match" in caplog.text and builder.calls == 2
    assert json.loads(sidecar.read_text())["gpu_name"] == "Orin"
    sidecar.unlink()
    assert cache.get_or_build("tiny", _key(), builder.build, builder.load).built
    assert builder.calls == 3


def test_engine_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, old = EngineCache(tmp_path), Builder(b"ENGINE-old")
    path = cache.get_or_build("tiny", _key(), old.build, old.load).path
    path.write_bytes(b"corrupt")  # forces a rebuild, whose rename then fails

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        cache.get_or_build("tiny", _key(), Builder(b"ENGINE-new").build, old.load)
    assert path.read_bytes() == b"corrupt"  # the final name never holds a partial write
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name,
                                                                 path.name + ".json"])


def test_engine_that_does_not_load_after_build_is_an_error(tmp_path: Path) -> None:
    bad = Builder(b"NOT-AN-ENGINE")
    with pytest.raises(EngineBuildError, match="freshly built engine does not load"):
        EngineCache(tmp_path).get_or_build("tiny", _key(), bad.build, bad.load)


# ---------------------------------------------------------------------------- parity report
def test_compare_outputs_reports_shape_missing_and_nan() -> None:
    ref = {"a": np.array([1.0, np.nan], np.float32), "b": np.zeros((2, 3), np.float32),
           "c": np.zeros((0, 5), np.float32)}
    same = compare_outputs(ref, {k: v.copy() for k, v in ref.items()}, atol=0.0)
    assert same.ok and same.max_abs_diff == {"a": 0.0, "b": 0.0, "c": 0.0}
    other = {"a": np.array([1.5, 0.0], np.float32), "b": np.zeros((3, 2), np.float32),
             "d": np.zeros(1, np.float32)}
    report = compare_outputs(ref, other, atol=1.0)
    assert not report.ok
    assert report.max_abs_diff["a"] == float("inf")  # NaN on one side only
    assert report.shapes_match == {"a": True, "b": False}
    assert report.missing == ("c", "d")
    close = compare_outputs({"x": np.array([100.0])}, {"x": np.array([100.5])}, atol=0.0,
                            rtol=0.01)
    assert close.ok and close.max_abs_diff["x"] == pytest.approx(0.5)
