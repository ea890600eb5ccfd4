"""TensorRT backend on a real GPU: fp32 / fp16 parity against torch CUDA, engine cache.

Runs only where CUDA is present (tests/gpu/conftest.py) and TensorRT is installed. The tiny
model is tests/unit/test_runtime.py's, with sum pooling instead of the scatter-amax (the
TensorRT ONNX parser does not support ScatterElements with a max reduction).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from mm_perception.runtime import RuntimeConfig, compare_outputs, create_backend
from tests.unit.test_runtime import INPUTS, OUTPUTS, TinyFusion, export_tiny, make_feeds

pytestmark = pytest.mark.gpu
trt = pytest.importorskip("tensorrt")
torch = pytest.importorskip("torch")

PROFILE = {"P": (0, 1000, 20_000), "K": (0, 2, 8)}
#: max |torch CUDA - TensorRT| per precision. fp32: TF32 is off on both sides (the backend
#: clears TensorRT's TF32 flag, the tests turn off cuDNN's), so float32 kernels differ only in
#: summation order (~1e-6); fp16: a
#: 10-bit mantissa gives ~1e-3 relative error per op on O(1) values through 2 layers and the
#: 1000-point sum, hence a loose 5e-2 absolute bound plus 1e-2 relative.
TOLERANCE = {"fp32": (1e-4, 0.0), "fp16": (5e-2, 1e-2)}




@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    module = TinyFusion(pooling="sum")
    path = export_tiny(module, tmp_path_factory.mktemp("trt") / "tiny_sum.onnx")
    return module, path


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_matches_torch_cuda(tiny: tuple[Any, Path], tmp_path: Path,
                                     precision: str) -> None:
    module, path = tiny
    reference = create_backend(RuntimeConfig(backend="torch", device="cuda"), module=module,
                               inputs=INPUTS, outputs=OUTPUTS)
    cfg = RuntimeConfig(backend="tensorrt", device="cuda", engine_cache_dir=str(tmp_path),
                        precision=precision, profile=PROFILE)  # type: ignore[arg-type]
    backend = create_backend(cfg, onnx_path=path, inputs=INPUTS, outputs=OUTPUTS)
    atol, rtol = TOLERANCE[precision]
    for num_points, num_images in [(0, 0), (1, 1), (1000, 3)]:
        feeds = make_feeds(num_points, num_images)
        report = compare_outputs(reference.run(feeds), backend.run(feeds), atol=atol, rtol=rtol)
        assert report.ok, (num_points, num_images, report)
    backend.close()


def test_engine_cache_round_trip(tiny: tuple[Any, Path], tmp_path: Path,
                                 caplog: pytest.LogCaptureFixture) -> None:
    _, path = tiny
    cfg = RuntimeConfig(backend="tensorrt", device="cuda", engine_cache_dir=str(tmp_path),
                        profile=PROFILE)
    with caplog.at_level(logging.WARNING):
        first = create_backend(cfg, onnx_path=path, inputs=INPUTS, outputs=OUTPUTS)
    assert first.built and "this can take minutes" in caplog.text  # type: ignore[attr-defined]
    expected = first.run(make_feeds(100, 1))
    first.close()
    second = create_backend(cfg, onnx_path=path, inputs=INPUTS, outputs=OUTPUTS)
    assert not second.built  # type: ignore[attr-defined]
    assert second.engine_path == first.engine_path  # type: ignore[attr-defined]
    assert compare_outputs(expected, second.run(make_feeds(100, 1)), atol=0.0).ok
    second.close()
    engine_file: Path = first.engine_path  # type: ignore[attr-defined]
    engine_file.write_bytes(engine_file.read_bytes()[:100])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = create_backend(cfg, onnx_path=path, inputs=INPUTS, outputs=OUTPUTS)
    assert third.built and "corrupt" in caplog.text  # type: ignore[attr-defined]
    assert compare_outputs(expected, third.run(make_feeds(100, 1)), atol=1e-4).ok
    third.close()
