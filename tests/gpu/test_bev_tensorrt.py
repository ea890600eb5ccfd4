"""TensorRT on a real GPU for the BEV fusion model: fp32 / fp16 engines vs torch on CUDA.

Runs only where CUDA is present (tests/gpu/conftest.py) and TensorRT is installed. The tiny
models and frames are tests/unit/test_bev_fusion.py's (16 x 16 cells, 64 x 48 images);
frames cover points in every modality, 0 LiDAR pillars, 0 radar pillars, 0 cameras, nothing
at all and two cameras, so every dynamic dimension is exercised at 0 as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mm_perception.fusion.feature_level.detector import DEFAULT_WEIGHTS_DIR, ONNX_FILE
from mm_perception.fusion.feature_level.export import (
    MAX_CAMERAS,
    PARITY_ATOL,
    check_parity,
    export_onnx,
    onnx_backend,
    torch_backend,
)
from mm_perception.fusion.feature_level.processor import BevProcessor
from mm_perception.runtime import RuntimeConfig, compare_outputs
from tests.unit.test_bev_fusion import (
    CLR,
    IMG,
    LR,
    frames_around_the_ego,
    make_net,
    parity_frames,
)

pytestmark = pytest.mark.gpu
trt = pytest.importorskip("tensorrt")
torch = pytest.importorskip("torch")

#: TensorRT optimisation profile of the tiny models: (min, opt, max) per dynamic dim; a
#: 16 x 16 grid has at most 256 pillars of each kind
TINY_PROFILE = {"lidar_pillars": (0, 200, 256), "radar_pillars": (0, 16, 256),
                "cameras": (0, 1, MAX_CAMERAS)}
#: max |torch CUDA - TensorRT| as (atol, rtol) per precision. fp32: TF32 off on both sides
#: (the backend clears TensorRT's flag, the fixture below torch's), so kernels differ in
#: summation order only; the CPU parity bound PARITY_ATOL (1e-3) applies unchanged. fp16: a
#: 10-bit mantissa gives ~5e-4 relative error per op; through the pillar MLPs, the lift, a
#: dozen 3x3 conv layers and the head that compounds to ~1e-2 on O(1) maps, hence 5e-2
#: absolute + 5e-2 relative (heatmap probabilities are in [0, 1]: 5e-2 never changes which
#: cells are confident peaks of a trained model, but decoded lists may differ at ties).
TOLERANCE = {"fp32": (PARITY_ATOL, 0.0), "fp16": (5e-2, 5e-2)}




@pytest.fixture(scope="module", params=["lidar+radar", "camera+lidar+radar"])
def tiny(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A tiny BEV network (CPU, eval) and its ONNX export."""
    if request.param == "lidar+radar":
        net = make_net(LR)
    else:
        from mm_perception.detection.camera.detector import CameraDetector

        net = make_net(CLR, CameraDetector.load().net)
    return net, export_onnx(net, tmp_path_factory.mktemp("bev_trt") / "bev.onnx", IMG)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_matches_torch_cuda(tiny: tuple[Any, Path], tmp_path: Path,
                                     precision: str) -> None:
    net, path = tiny
    proc = BevProcessor(net.config, image_size=IMG)
    # the torch backend moves the module to CUDA in place (export already done on the CPU)
    reference = torch_backend(net, RuntimeConfig(backend="torch", device="cuda"), IMG)
    cfg = RuntimeConfig(backend="tensorrt", device="cuda", precision=precision,  # type: ignore[arg-type]
                        engine_cache_dir=str(tmp_path), profile=TINY_PROFILE)
    engine = onnx_backend(net.config, path, cfg, IMG)
    atol, rtol = TOLERANCE[precision]
    names = [s.name for s in reference.inputs]
    for what, frame in parity_frames().items():
        enc = proc.encode(frame)
        feeds = {n: enc[n] for n in names}
        report = compare_outputs(reference.run(feeds), engine.run(feeds), atol=atol, rtol=rtol)
        assert report.ok, (precision, what, report)
    if precision == "fp32":  # decoded objects agree too (fp16 may reorder near-ties)
        parity = check_parity(reference, engine, proc, list(parity_frames().values()))
        assert parity.ok, parity
    engine.close()
    reference.close()


def test_tensorrt_engine_of_the_default_weights(tmp_path: Path) -> None:
    onnx = DEFAULT_WEIGHTS_DIR / ONNX_FILE
    if not onnx.is_file():
        pytest.skip(f"default BEV weights not trained yet: {onnx} does not exist")
    from mm_perception.fusion.feature_level.detector import load_weights

    net, proc = load_weights(DEFAULT_WEIGHTS_DIR)
    g = proc.config.grid
    cells = g.nx * g.ny  # at most one pillar per cell
    profile = {"lidar_pillars": (0, min(8000, cells), cells),
               "radar_pillars": (0, min(128, cells), cells), "cameras": (0, 1, MAX_CAMERAS)}
    reference = torch_backend(net, RuntimeConfig(backend="torch", device="cuda"),
                              proc.image_size)
    engine = onnx_backend(proc.config, onnx, RuntimeConfig(
        backend="tensorrt", device="cuda", precision="fp16", engine_cache_dir=str(tmp_path),
        profile=profile), proc.image_size)
    atol, rtol = TOLERANCE["fp16"]
    names = [s.name for s in reference.inputs]
    for frame in frames_around_the_ego(proc):
        for drop in ((), ("camera",), ("lidar",), ("radar",)):
            enc = proc.encode(frame.without(*drop))
            feeds = {n: enc[n] for n in names}
            report = compare_outputs(reference.run(feeds), engine.run(feeds), atol=atol,
                                     rtol=rtol)
            assert report.ok, (drop, report)
    engine.close()
    reference.close()
