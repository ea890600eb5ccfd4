"""VLA policy: demonstrations on disk, imitation training (loss, crash + resume), the CLI
trainer, and the trained planner (torch and ONNX Runtime, the no-language switch).

The demonstrations are synthetic: the expert drives an arc whose curvature the instruction
decides ("turn left" / "turn right" / "go straight"), so language matters. Tiny config, one
torch thread.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import EgoState
from mm_perception.planning.instructions import (
    Task,
    TaskKind,
    instruction_speed,
    parse_instruction,
    phrasings,
    render_instruction,
)
from mm_perception.planning.observation import (
    LanePolyline,
    Planner,
    PlannerObservation,
    SceneObject,
    to_world,
)
from mm_perception.planning.trajectory import Trajectory
from mm_perception.planning.vla import train as train_mod
from mm_perception.planning.vla.config import NO_LANGUAGE_INSTRUCTION, TASK_KINDS, VLAConfig
from mm_perception.planning.vla.dataset import (
    FEATURES_FILE,
    RESPEED_GRID_MPS,
    RESPEED_MIN_GAP_MPS,
    TEXT_CACHE_FILE,
    DemoDataset,
    DemoWriter,
    find_shards,
)
from mm_perception.planning.vla.export import PARITY_ATOL, example_feeds
from mm_perception.planning.vla.policy import load_vla, load_weights
from mm_perception.planning.vla.processor import INPUT_NAMES, VLAProcessor, input_names
from mm_perception.planning.vla.text import TextEncoder
from mm_perception.runtime import RuntimeConfig

torch.set_num_threads(1)

CFG = VLAConfig(d_model=32, heads=2, encoder_layers=1, decoder_layers=1, ff_mult=2,
                image_height=32, image_width=48, image_channels=(4, 4, 8, 8), max_objects=4,
                language_tokens=2, dropout=0.1)
CURVATURE = {"turn left": 0.06, "turn right": -0.06, "go straight": 0.0}
EPISODES = [(0, "turn left"), (1, "turn right"), (2, "go straight"), (3, "turn left"),
            (4, "turn right"), (5, "go straight")]
STEPS = 12


def _observation(rng: np.random.Generator, instruction: str, step: int,
                 ) -> tuple[PlannerObservation, Trajectory]:
    v = float(rng.uniform(3.0, 9.0))
    x, y = rng.uniform(-50, 50, 2)
    pose = SE3.from_xy_yaw(float(x), float(y), float(rng.uniform(-math.pi, math.pi)))
    ego = EgoState(stamp_ns=10**9 * (step + 1), frame_id="map", child_frame_id="base_link",
                   pose=pose,
                   linear_velocity=np.array([v, 0.0, 0.0]))
    t = np.linspace(0.0, 4.4, 23)
    k = CURVATURE[instruction]
    s = v * t
    base = (np.stack([s, np.zeros_like(s)], axis=1) if k == 0.0 else
            np.stack([np.sin(k * s) / k, (1.0 - np.cos(k * s)) / k], axis=1))
    yaw0 = math.atan2(ego.pose.rotation[1, 0], ego.pose.rotation[0, 0])
    expert = Trajectory(stamp_ns=ego.stamp_ns, frame_id="map", t_s=t, xy=to_world(ego, base),
                        yaw=yaw0 + k * s, speed=np.full(t.shape, v), source="expert")
    objects = tuple(SceneObject(object_id=i, label="car", xy=rng.uniform(-30, 30, 2), yaw=0.0,
                                size=np.array([4.5, 1.9, 1.5]), velocity=np.zeros(2))
                    for i in range(int(rng.integers(0, 6))))
    image = (rng.integers(0, 255, (40, 60, 3), dtype=np.uint8) if step % 3 else None)
    lane = LanePolyline("ego", np.stack([np.linspace(-5, 40, 10), np.zeros(10)], axis=1))
    obs = PlannerObservation(stamp_ns=ego.stamp_ns, ego=ego, instruction=instruction,
                             instruction_stamp_ns=0, image=image, objects=objects,
                             lanes=(lane,))
    return obs, expert


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demos")
    writer = DemoWriter(out, CFG)
    for seed, instruction in EPISODES:
        rng = np.random.default_rng(seed)
        for step in range(STEPS):
            obs, expert = _observation(rng, instruction, step)
            writer.add(obs, expert, {"episode": f"ep{seed}/{instruction}", "kind": instruction,
                                     "seed": seed, "step": step})
        writer.end_episode()
    return out


@pytest.fixture(scope="module")
def encoder(demo_dir: Path) -> TextEncoder:
    # caching into the folder's file: later loaders of the folder need no network
    return TextEncoder(cache_file=demo_dir / TEXT_CACHE_FILE)


@pytest.fixture(scope="module")
def trained(demo_dir: Path, encoder: TextEncoder, tmp_path_factory: pytest.TempPathFactory,
            ) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("vla")
    log = train_mod.train_vla(CFG, demo_dir, out, **_train_kw(encoder), export=True)
    return out, log


def _train_kw(encoder: TextEncoder) -> dict[str, Any]:
    # text noise on: the crash + resume test then also proves its draws are reproducible
    return {"epochs": 6, "batch_size": 8, "lr": 3e-3, "seed": 7, "val_fraction": 0.34,
            "warmup_steps": 2, "progress": False, "text_encoder": encoder, "command": "test",
            "text_noise": 0.3}


# ---------------------------------------------------------------------------- dataset
def test_demonstrations_round_trip(demo_dir: Path, encoder: TextEncoder) -> None:
    shards = find_shards(demo_dir)
    assert [p.name for p in shards] == sorted(f"ep{s}_{i.replace(' ', '_')}.npz"
                                              for s, i in EPISODES)
    data = DemoDataset(demo_dir, CFG, text_encoder=encoder)
    assert len(data) == len(EPISODES) * STEPS
    assert data.meta[0]["kind"] == data.instructions[0]
    batch = data.batch([0, 1, 2, 13])
    proc = VLAProcessor(CFG)
    for name, shape in proc.feature_shapes().items():
        assert tuple(batch[name].shape) == (4, *shape) and batch[name].dtype == torch.float32
    assert tuple(batch["targets"].shape) == (4, CFG.horizon, 3)
    # the stored sample reproduces the processor's features of the same observation
    rng = np.random.default_rng(EPISODES[0][0])
    obs, expert = _observation(rng, EPISODES[0][1], 0)
    obs, expert = _observation(rng, EPISODES[0][1], 1)  # step 1 (has a camera image)
    feats = proc.features(obs)
    for name, value in feats.items():
        np.testing.assert_allclose(batch[name][1].numpy(), value, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(batch["targets"][1].numpy(), proc.targets(obs.ego, expert))
    np.testing.assert_array_equal(batch["text"][1].numpy(), encoder.encode(obs.instruction))
    assert batch["image"][0].abs().sum() == 0  # step 0 had no camera
    sample = data[1]
    assert tuple(sample["image"].shape) == (3, CFG.image_height, CFG.image_width)
    ablation = DemoDataset(demo_dir, CFG, text_encoder=encoder, language=False)
    assert set(ablation.instructions) == {NO_LANGUAGE_INSTRUCTION}


def test_rewording_draws_only_training_wordings_of_the_same_task(
        demo_dir: Path, encoder: TextEncoder, tmp_path: Path) -> None:
    plain = DemoDataset(demo_dir, CFG, text_encoder=encoder)
    data = DemoDataset(demo_dir, CFG, text_encoder=encoder, reword=True)
    kinds = {"turn left": TaskKind.TURN_LEFT, "turn right": TaskKind.TURN_RIGHT,
             "go straight": TaskKind.GO_STRAIGHT}
    assert plain.wordings == 3
    assert data.wordings == sum(len(phrasings(k, "train")) for k in kinds.values())
    idx = np.arange(len(data))
    # without a generator (validation) every sample keeps its recorded wording
    torch.testing.assert_close(data.batch(idx)["text"], plain.batch(idx)["text"])
    rng = np.random.default_rng(3)
    drawn: dict[str, set[bytes]] = {i: set() for i in kinds}
    for _ in range(40):
        text = data.batch(idx, rng)["text"].numpy()
        for row, i in zip(text, data.instructions, strict=True):
            drawn[i].add(row.tobytes())
    for instruction, kind in kinds.items():
        want = {encoder.encode(w).tobytes() for w in phrasings(kind, "train")}
        held = {encoder.encode(w).tobytes() for w in phrasings(kind, "heldout")}
        assert drawn[instruction] == want, instruction  # all of them, and only them
        assert not drawn[instruction] & held
    # a sentence that is no suite wording keeps its own text; the ablation has one text
    obs, expert = _observation(np.random.default_rng(0), "turn left", 0)
    odd = tmp_path / "odd"
    writer = DemoWriter(odd, CFG)
    writer.add(replace(obs, instruction="circle the block twice"), expert, {"episode": "x"})
    writer.end_episode()
    assert DemoDataset(odd, CFG, text_encoder=encoder, reword=True).wordings == 1
    assert DemoDataset(demo_dir, CFG, text_encoder=encoder, reword=True,
                       language=False).wordings == 1


def _speed_demos(out: Path, cfg: VLAConfig) -> dict[str, float]:
    """Demonstrations of two follow_speed wordings and "turn left" (4 samples each);
    returns the speed of each follow_speed instruction, m/s."""
    speeds = {render_instruction(Task(TaskKind.FOLLOW_SPEED, speed_mps=v), i): v
              for i, v in ((0, 5.5), (1, 9.5))}  # km/h wordings round them
    writer = DemoWriter(out, cfg)
    for e, instruction in enumerate([*speeds, "turn left"]):
        rng = np.random.default_rng(e)
        for step in range(4):
            obs, expert = _observation(rng, "go straight", step)
            writer.add(replace(obs, instruction=instruction), expert,
                       {"episode": f"s{e}", "kind": "turn_left" if e == 2 else "follow_speed"})
        writer.end_episode()
    return speeds


def _drawable_texts(speeds: dict[str, float], encoder: TextEncoder) -> dict[bytes, str]:
    """Every embedding a batch of :func:`_speed_demos` can draw (re-worded and
    re-speeded), back to its text."""
    texts = list(phrasings(TaskKind.TURN_LEFT, "train"))
    for recorded in speeds:  # re-worded from the task read back from the recorded text
        task = parse_instruction(recorded)
        assert task is not None and task.speed_mps is not None
        for v in (task.speed_mps, *RESPEED_GRID_MPS):
            texts += [render_instruction(replace(task, speed_mps=v), i)
                      for i in range(len(phrasings(TaskKind.FOLLOW_SPEED, "train")))]
    return {encoder.encode(w).tobytes(): w for w in texts}


def _speed_setup(out: Path, encoder: TextEncoder) -> tuple[
        VLAConfig, VLAProcessor, dict[str, float], DemoDataset, dict[bytes, str]]:
    """A speed-cue config, its processor, :func:`_speed_demos` in ``out`` loaded with
    re-wording, and :func:`_drawable_texts`."""
    cfg = replace(CFG, speed_cue=True)
    speeds = _speed_demos(out, cfg)
    data = DemoDataset(out, cfg, text_encoder=encoder, reword=True)
    return cfg, VLAProcessor(cfg), speeds, data, _drawable_texts(speeds, encoder)


def _wording_index(text: str) -> int:
    task = parse_instruction(text)
    assert task is not None
    return next(i for i in range(len(phrasings(task.kind, "train")))
                if render_instruction(task, i) == text)


def test_respeed_names_another_speed_in_the_sentence_and_the_teacher_reads_the_true_one(
        trained: tuple[Path, dict[str, Any]], encoder: TextEncoder, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, proc, speeds, data, text_of = _speed_setup(tmp_path / "speed", encoder)
    rng = np.random.default_rng(1)
    swapped = named = 0
    for _ in range(20):
        batch = data.batch(np.arange(len(data)), rng, respeed=0.8)
        for instruction, text, true, cue in zip(
                data.instructions, batch["text"].numpy(), batch["text_true"].numpy(),
                batch["speed_cue"].numpy(), strict=True):
            said, meant = text_of[text.tobytes()], text_of[true.tobytes()]
            np.testing.assert_array_equal(cue, proc.speed_cue(meant))  # the true speed
            if instruction not in speeds:
                assert said == meant
                continue
            named += 1
            if said != meant:
                swapped += 1
                v_said, v_meant = instruction_speed(said), instruction_speed(meant)
                assert v_said is not None and v_meant is not None
                gap = abs(v_said - v_meant)
                assert gap >= RESPEED_MIN_GAP_MPS - 0.2, (said, meant)  # km/h rounding
                assert _wording_index(said) == _wording_index(meant)
    assert 0.65 < swapped / named < 0.95
    assert "text_true" not in data.batch(np.arange(len(data)), rng)  # off by default
    # training: the frozen teacher (no cue) reads the true sentence, the policy the other
    out, _ = trained
    calls: list[tuple[bool, dict[str, torch.Tensor]]] = []
    real = train_mod._forward

    def spy(net: Any, batch: dict[str, torch.Tensor], task_kind: Any = None) -> torch.Tensor:
        calls.append((net.training, dict(batch)))
        return real(net, batch, task_kind)

    monkeypatch.setattr(train_mod, "_forward", spy)
    kw = {**_train_kw(encoder), "epochs": 1}
    train_mod.train_vla(cfg, tmp_path / "speed", tmp_path / "respeed", **kw, export=False,
                        init_weights=out, teacher_weights=out, teacher_weight=1.0, respeed=0.8)
    pairs = [(calls[i][1], calls[i + 1][1]) for i in range(len(calls) - 1)
             if calls[i][0] and not calls[i + 1][0]]
    assert pairs
    differ = 0
    for student, teacher in pairs:
        torch.testing.assert_close(teacher["text"], student["text_true"], rtol=0, atol=0)
        differ += int((student["text"] != student["text_true"]).any(dim=1).sum())
    assert differ > 0
    with pytest.raises(ConfigError, match="respeed needs the speed cue"):
        train_mod.train_vla(CFG, tmp_path / "speed", tmp_path / "x", **kw, respeed=0.5)


def test_the_speed_cue_is_that_of_the_drawn_wording_and_reaches_the_network(
        trained: tuple[Path, dict[str, Any]], demo_dir: Path, encoder: TextEncoder,
        tmp_path: Path) -> None:
    cfg, proc, speeds, data, text_of = _speed_setup(tmp_path / "speed", encoder)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(10):
        batch = data.batch(np.arange(len(data)), rng)
        for instruction, text, cue in zip(data.instructions, batch["text"].numpy(),
                                          batch["speed_cue"].numpy(), strict=True):
            drawn = text_of[text.tobytes()]
            seen.add(drawn)
            np.testing.assert_array_equal(cue, proc.speed_cue(drawn))
            want = speeds.get(instruction)
            assert cue[1] == (want is not None)
            if want is not None:  # whole km/h in some wordings
                assert cue[0] * cfg.velocity_scale_mps == pytest.approx(want, abs=0.15)
    assert len(seen) > 10  # re-worded: the cue followed many wordings
    # a policy without the cue grows one as the identity (same validation loss) ...
    out, log = trained
    best = log["epochs"][log["best_epoch"] - 1]["val"]["loss"]
    grown = train_mod.train_vla(cfg, demo_dir, tmp_path / "grown", **{
        **_train_kw(encoder), "epochs": 1, "lr": 1e-12, "init_weights": out}, export=True)
    assert grown["epochs"][0]["val"]["loss"] == pytest.approx(best, rel=1e-4)
    with pytest.raises(ConfigError, match="another config"):  # ... never the other way
        train_mod.train_vla(CFG, demo_dir, tmp_path / "shrunk", **{
            **_train_kw(encoder), "epochs": 1, "init_weights": tmp_path / "grown"})
    # ... and its planners feed the cue of the instruction they get (none without language)
    obs, _ = _observation(np.random.default_rng(1), "go straight", 2)
    obs = replace(obs, instruction="go 10 m/s")
    for backend in ("torch", "onnxruntime"):
        for language, want_cue in ((True, [10.0 / cfg.velocity_scale_mps, 1.0]),
                                   (False, [0.0, 0.0])):
            planner = load_vla(tmp_path / "grown", RuntimeConfig(backend=backend),
                               text_encoder=encoder, language=language)
            fed: list[dict[str, np.ndarray]] = []
            run = planner.backend.run
            planner.backend.run = (  # type: ignore[method-assign]
                lambda feeds, run=run, fed=fed: fed.append(dict(feeds)) or run(feeds))
            assert planner.plan(obs).is_finite()
            np.testing.assert_allclose(fed[0]["speed_cue"], [want_cue], rtol=1e-6)


def test_demonstrations_refuse_other_features(demo_dir: Path, encoder: TextEncoder) -> None:
    other = replace(CFG, max_objects=8)
    with pytest.raises(ConfigError, match="max_objects"):
        DemoDataset(demo_dir, other, text_encoder=encoder)
    with pytest.raises(ConfigError, match="max_objects"):
        DemoWriter(demo_dir, other)
    # the architecture is not a feature: another width trains on the same data
    assert replace(CFG, d_model=64).feature_dict() == json.loads(
        (demo_dir / FEATURES_FILE).read_text())


def test_split_is_by_episode() -> None:
    ep = np.repeat(np.arange(6), 4)
    train, val = train_mod.split_indices(ep, 0.34, seed=1)
    assert len(set(ep[train]) & set(ep[val])) == 0 and len(set(ep[val])) == 2
    assert len(train) + len(val) == len(ep)
    one = np.zeros(10, np.int64)
    train, val = train_mod.split_indices(one, 0.2, seed=1)
    assert val.tolist() == [8, 9]
    assert len(train_mod.split_indices(ep, 0.0, 1)[1]) == 0
    with pytest.raises(ConfigError):
        train_mod.split_indices(ep, 1.0, 1)


# ---------------------------------------------------------------------------- training
def test_training_lowers_the_loss_and_writes_the_weights(trained: tuple[Path, dict[str, Any]],
                                                         ) -> None:
    out, log = trained
    for name in ("vla.pt", "config.json", "vla.onnx", "train_log.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    epochs = log["epochs"]
    assert len(epochs) == 6 and log["stopped_early"] is False
    # 36 steps on 48 samples: the loss falls (generalising needs more episodes than a
    # unit test should simulate; the kinematic head's coupled steps fall slower at first,
    # about 17 % here, than independent waypoints)
    assert epochs[-1]["train_loss"] < 0.9 * epochs[0]["train_loss"]
    assert {"loss", "ade_m", "fde_m", "speed_mae_mps"} <= set(epochs[-1]["val"])
    assert log["best_epoch"] == 1 + int(np.argmin([e["val"]["loss"] for e in epochs]))
    saved = json.loads((out / "train_log.json").read_text())
    assert saved["command"] == "test" and saved["train_samples"] == 4 * STEPS
    assert VLAConfig.load(out / "config.json") == CFG


def test_kind_labels_index_the_sorted_kinds() -> None:
    labels, kinds = train_mod.kind_labels([{"kind": "turn"}, {"kind": "stop"}, {},
                                           {"kind": None}, {"kind": "turn"}])
    assert kinds == ["stop", "turn"]
    np.testing.assert_array_equal(labels, [1, 0, -1, -1, 1])


def test_balanced_draws_give_every_kind_the_same_share(demo_dir: Path, encoder: TextEncoder,
                                                      tmp_path: Path) -> None:
    labels = np.array([0, 0, 0, 1, -1, -1, 0, 2])
    p = train_mod.balance_probabilities(labels)
    assert p.sum() == pytest.approx(1.0)
    for kind in (-1, 0, 1, 2):  # unlabelled samples are one group of their own
        assert p[labels == kind].sum() == pytest.approx(0.25)
    log = train_mod.train_vla(CFG, demo_dir, tmp_path / "bal", **{
        **_train_kw(encoder), "epochs": 1}, balance_kinds=True, export=False)
    assert log["args"]["balance_kinds"] is True
    assert log["epochs"][0]["steps"] == math.ceil(log["train_samples"] / 8)


def test_task_probe_separates_the_instructions(trained: tuple[Path, dict[str, Any]],
                                               demo_dir: Path, encoder: TextEncoder,
                                               tmp_path: Path) -> None:
    _, log = trained
    assert log["task_probe"] == {"used": True, "unlabelled_samples": 0,
                                 "kinds": ["go straight", "turn left", "turn right"]}
    # the probe is a training aid: the shipped network has no trace of it
    state = torch.load(trained[0] / "vla.pt", weights_only=True)
    assert not any("probe" in k for k in state)
    # seed 1 holds back a "turn left" and a "turn right" episode (seed 7 holds back both
    # "go straight" ones, a kind the probe never trains on): left and right, one word apart,
    # are told apart from the language tokens alone
    on = train_mod.train_vla(CFG, demo_dir, tmp_path / "on", **{
        **_train_kw(encoder), "seed": 1, "kind_weight": 1.0}, export=False)
    assert on["epochs"][-1]["val"]["kind_accuracy"] == 1.0
    off = train_mod.train_vla(CFG, demo_dir, tmp_path / "off", **{
        **_train_kw(encoder), "epochs": 1, "kind_weight": 0.0}, export=False)
    assert off["task_probe"]["used"] is False and "kind_accuracy" not in off["epochs"][0]["val"]
    with pytest.raises(ConfigError, match="text_noise"):
        train_mod.train_vla(CFG, demo_dir, tmp_path, **{**_train_kw(encoder),
                                                        "text_noise": float("nan")})


def _kind_demos(out: Path, kinds: dict[str, str] | None = None) -> None:
    """The arc demonstrations with suite task kinds in their meta (the task token's
    labels): "turn left" is ``turn_left`` and so on, or ``kinds[instruction]``."""
    writer = DemoWriter(out, CFG)
    for seed, instruction in EPISODES:
        rng = np.random.default_rng(seed)
        kind = (kinds or {}).get(instruction, instruction.replace(" ", "_"))
        for step in range(STEPS):
            obs, expert = _observation(rng, instruction, step)
            writer.add(obs, expert, {"episode": f"k{seed}", "kind": kind})
        writer.end_episode()


def test_parameter_free_kinds_are_the_droppable_ones() -> None:
    kinds = ["turn_left", "follow_speed", "stop_behind", "pull_over", "made_up"]
    np.testing.assert_array_equal(train_mod.parameter_free(np.array([0, 1, 2, 3, 4, -1]), kinds),
                                  [True, False, False, True, False, False])


def test_language_dropout_drops_only_parameter_free_sentences_and_forces_the_kind(
        encoder: TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the "go straight" episodes stand in for a task with a parameter (follow_speed)
    data_dir = tmp_path / "kinds"
    _kind_demos(data_dir, {"go straight": "follow_speed"})
    seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    real = train_mod._forward

    def spy(net: Any, batch: dict[str, torch.Tensor], task_kind: Any = None) -> torch.Tensor:
        if net.training:
            seen.append((batch["text"].clone(), task_kind))
        return real(net, batch, task_kind)

    monkeypatch.setattr(train_mod, "_forward", spy)
    cfg = replace(CFG, task_token=True)
    train_mod.train_vla(cfg, data_dir, tmp_path / "w", **{**_train_kw(encoder), "epochs": 3},
                        language_dropout=0.5, export=False)
    text = torch.cat([t for t, _ in seen])
    kind = torch.cat([k for _, k in seen if k is not None])
    assert len(kind) == len(text)  # every training batch forces the true kind
    dropped = (text == 0).all(dim=1)
    free = torch.isin(kind, torch.tensor([TASK_KINDS.index("turn_left"),
                                          TASK_KINDS.index("turn_right")]))
    assert not dropped[~free].any()                    # a speed instruction is never dropped
    assert 0.3 < float(dropped[free].float().mean()) < 0.7  # about half of the others


def test_a_task_token_teacher_is_given_the_kind_the_policy_is_given(
        encoder: TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "kinds"
    _kind_demos(data_dir)
    cfg = replace(CFG, task_token=True)
    kw = {**_train_kw(encoder), "epochs": 1, "kind_weight": 1.0}
    train_mod.train_vla(cfg, data_dir, tmp_path / "teacher", **kw, export=False)
    calls: list[tuple[bool, torch.Tensor | None]] = []
    real = train_mod._forward

    def spy(net: Any, batch: dict[str, torch.Tensor], task_kind: Any = None) -> torch.Tensor:
        calls.append((net.training, task_kind))
        return real(net, batch, task_kind)

    monkeypatch.setattr(train_mod, "_forward", spy)
    train_mod.train_vla(cfg, data_dir, tmp_path / "student", **kw, export=False,
                        teacher_weights=tmp_path / "teacher", teacher_weight=1.0)
    # in training, each policy call is followed by the frozen teacher's on the same batch
    pairs = [(calls[i], calls[i + 1]) for i in range(len(calls) - 1)
             if calls[i][0] and not calls[i + 1][0] and calls[i][1] is not None]
    assert pairs
    for (_, student_kind), (_, teacher_kind) in pairs:
        assert teacher_kind is not None and torch.equal(student_kind, teacher_kind)


def test_the_task_token_learns_to_drive_the_kind_without_the_sentence(
        trained: tuple[Path, dict[str, Any]], encoder: TextEncoder, tmp_path: Path) -> None:
    data_dir = tmp_path / "kinds"
    _kind_demos(data_dir)
    cfg = replace(CFG, task_token=True)
    # seed 1 holds back a left and a right episode (as in the task probe's test)
    kw = {**_train_kw(encoder), "epochs": 12, "kind_weight": 1.0, "seed": 1}
    log = train_mod.train_vla(cfg, data_dir, tmp_path / "tok", **kw, language_dropout=0.5)
    # the probe is the network's own task head now, over every suite kind in its order
    assert log["task_probe"]["used"] and log["task_probe"]["kinds"] == list(TASK_KINDS)
    assert log["epochs"][-1]["val"]["kind_accuracy"] == 1.0
    state = torch.load(tmp_path / "tok" / "vla.pt", weights_only=True)
    assert {"task_head.weight", "task_embed"} <= set(state)
    net, _ = load_weights(tmp_path / "tok")
    feeds = {k: torch.from_numpy(v) for k, v in example_feeds(cfg, 4, seed=1).items()}
    feeds["ego"][:, 0] = 6.0 / cfg.velocity_scale_mps
    feeds["text"] = torch.zeros_like(feeds["text"])  # no sentence: the token alone
    side = {}
    for kind in ("turn_left", "turn_right"):
        forced = torch.full((4,), TASK_KINDS.index(kind), dtype=torch.int64)
        with torch.no_grad():
            side[kind] = float(net(*(feeds[k] for k in input_names(net.config)),
                                   task_kind=forced)[:, -1, 1].mean())
    # the chunk's last waypoint, 4 s ahead at 6 m/s, is metres to the side the token says
    assert side["turn_left"] > 2.0 > -2.0 > side["turn_right"], side
    # a policy without the token grows one: the old weights, zero kind embeddings
    grown = train_mod.train_vla(cfg, data_dir, tmp_path / "grown", **{
        **kw, "epochs": 1, "lr": 1e-12, "init_weights": trained[0]}, export=False)
    assert grown["args"]["init_weights"] == str(trained[0])
    wide = torch.load(tmp_path / "grown" / "vla.pt", weights_only=True)
    assert not wide["task_embed"].abs().max() > 1e-9
    old = torch.load(trained[0] / "vla.pt", weights_only=True)
    for name, value in old.items():
        torch.testing.assert_close(wide[name], value, rtol=0, atol=1e-9, msg=name)
    with pytest.raises(ConfigError, match="task token"):
        train_mod.train_vla(CFG, data_dir, tmp_path / "x", **kw, language_dropout=0.5)
    with pytest.raises(ConfigError, match="language_dropout"):
        train_mod.train_vla(cfg, data_dir, tmp_path / "x", **kw, language_dropout=1.0)
    with pytest.raises(ConfigError, match="kind_weight"):
        train_mod.train_vla(cfg, data_dir, tmp_path / "x", **{**kw, "kind_weight": 0.0})


def _pointer_demos(out: Path) -> None:
    """Episodes of "stop behind the red / blue car" among a red, a blue and a white car at
    random places: the target is the named colour's car."""
    paints = {"red": (0.8, 0.07, 0.06), "blue": (0.08, 0.2, 0.75), "white": (0.9, 0.9, 0.9)}
    writer = DemoWriter(out, CFG)
    for seed in range(8):
        colour = ("red", "blue")[seed % 2]
        rng = np.random.default_rng(100 + seed)
        for step in range(STEPS):
            obs, expert = _observation(rng, "go straight", step)
            ids = rng.permutation(3) + 10
            cars = tuple(SceneObject(object_id=int(i), label="car", xy=rng.uniform(-25, 25, 2),
                                     yaw=0.0, size=np.array([4.5, 1.9, 1.5]),
                                     velocity=np.zeros(2), rgb=np.array(rgb))
                         for i, rgb in zip(ids, paints.values(), strict=True))
            obs = replace(obs, instruction=f"stop behind the {colour} car", objects=cars,
                          ground_truth=cars)
            writer.add(obs, expert, {"episode": f"p{seed}", "kind": "stop_behind"},
                       target_id=int(ids[list(paints).index(colour)]))
        writer.end_episode()


def test_target_pointer_learns_which_object_the_instruction_names(
        demo_dir: Path, encoder: TextEncoder, tmp_path: Path) -> None:
    data_dir = tmp_path / "pointer"
    _pointer_demos(data_dir)
    data = DemoDataset(data_dir, CFG, text_encoder=encoder)
    proc = VLAProcessor(CFG)
    # the recorded label is the slot holding the named car
    named = data.batch(np.arange(len(data)))
    rows = named["objects"][torch.arange(len(data)), data.target_slot]
    red = torch.tensor([0.8, 0.07, 0.06])
    is_red = torch.isclose(rows[:, 10:13], red, atol=1e-6).all(dim=1).numpy()
    np.testing.assert_array_equal(is_red, [i.endswith("red car") for i in data.instructions])
    assert proc.feature_shapes()["objects"][0] == CFG.max_objects
    kw = {**_train_kw(encoder), "text_noise": 0.0, "epochs": 10, "val_fraction": 0.25,
          "seed": 2, "kind_weight": 0.0}
    on = train_mod.train_vla(CFG, data_dir, tmp_path / "on", **kw, target_weight=1.0,
                             export=False)
    assert on["target_pointer"] == {"used": True, "labelled_samples": 8 * STEPS}
    # validation episodes are unseen scenes: chance is 1 / 3
    assert on["epochs"][-1]["val"]["target_accuracy"] >= 0.9
    state = torch.load(tmp_path / "on" / "vla.pt", weights_only=True)
    assert not any("pointer" in k for k in state)  # a training aid only
    off = train_mod.train_vla(CFG, data_dir, tmp_path / "off", **{**kw, "epochs": 1},
                              target_weight=0.0, export=False)
    assert off["target_pointer"]["used"] is False
    assert "target_accuracy" not in off["epochs"][0]["val"]
    # the grounding layers have their own learning rate: here only they move
    frozen = train_mod.train_vla(CFG, data_dir, tmp_path / "frozen", **{
        **kw, "epochs": 1, "lr": 1e-12, "init_weights": tmp_path / "on"}, target_weight=1.0,
        grounding_lr_mult=1e9, export=False)
    assert frozen["args"]["grounding_lr_mult"] == 1e9
    moved = torch.load(tmp_path / "frozen" / "vla.pt", weights_only=True)
    for name, value in state.items():
        changed = not torch.allclose(moved[name], value, rtol=0, atol=1e-7)
        assert changed == name.startswith("object_film."), name
    # demonstrations without labels (recorded before them) load as -1 and train without it
    assert (DemoDataset(demo_dir, CFG, text_encoder=encoder).target_slot == -1).all()
    # a label outside the slots is a malformed shard, named
    shard = find_shards(data_dir)[0]
    with np.load(shard) as z:
        arrays = dict(z)
    arrays["target_slot"][0] = CFG.max_objects
    np.savez_compressed(shard, **arrays)
    with pytest.raises(ConfigError, match="target_slot"):
        DemoDataset(data_dir, CFG, text_encoder=encoder)
    # a damaged file (a copy cut short) is named too, not a traceback from numpy
    shard.write_bytes(shard.read_bytes()[:300])
    with pytest.raises(ConfigError, match=f"{shard.name} is not a readable VLA demonstration"):
        DemoDataset(data_dir, CFG, text_encoder=encoder)


def test_init_weights_start_from_a_trained_policy(trained: tuple[Path, dict[str, Any]],
                                                  demo_dir: Path, encoder: TextEncoder,
                                                  tmp_path: Path) -> None:
    out, log = trained
    best = log["epochs"][log["best_epoch"] - 1]["val"]["loss"]
    # a vanishing learning rate: the first epoch's validation is that of the trained policy
    tuned = train_mod.train_vla(CFG, demo_dir, tmp_path / "ft", **{
        **_train_kw(encoder), "epochs": 1, "lr": 1e-12, "init_weights": out}, export=False)
    assert tuned["epochs"][0]["val"]["loss"] == pytest.approx(best, rel=1e-4)
    # (seed 7 holds back the "go straight" episodes, which an untrained policy, straight on
    # at constant speed, drives exactly: the weights themselves tell the two starts apart)
    init = torch.load(out / "vla.pt", weights_only=True)
    got = torch.load(tmp_path / "ft" / "vla.pt", weights_only=True)
    for name, value in init.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-9, msg=name)
    fresh = train_mod.train_vla(CFG, demo_dir, tmp_path / "fresh", **{
        **_train_kw(encoder), "epochs": 1, "lr": 1e-12}, export=False)
    other = torch.load(tmp_path / "fresh" / "vla.pt", weights_only=True)
    assert not torch.allclose(other["connector.weight"], init["connector.weight"])
    assert fresh["args"]["init_weights"] is None
    with pytest.raises(ConfigError, match="another config"):
        train_mod.train_vla(replace(CFG, d_model=64), demo_dir, tmp_path / "x",
                            **_train_kw(encoder), init_weights=out)
    # a policy without object FiLM grows it, starting as the identity: same validation, the
    # same weights, the FiLM layer at zero; never the other way round
    plain = train_mod.train_vla(replace(CFG, object_film=False), demo_dir, tmp_path / "plain",
                                **{**_train_kw(encoder), "epochs": 1}, export=False)
    widened = train_mod.train_vla(CFG, demo_dir, tmp_path / "wide", **{
        **_train_kw(encoder), "epochs": 1, "lr": 1e-12, "init_weights": tmp_path / "plain"},
        export=False)
    assert widened["epochs"][0]["val"]["loss"] == pytest.approx(
        plain["epochs"][0]["val"]["loss"], rel=1e-4)
    wide = torch.load(tmp_path / "wide" / "vla.pt", weights_only=True)
    assert not wide["object_film.weight"].abs().max() > 1e-9
    with pytest.raises(ConfigError, match="another config"):
        train_mod.train_vla(replace(CFG, object_film=False), demo_dir, tmp_path / "y",
                            **_train_kw(encoder), init_weights=out)


def _mean_lateral_end(folder: Path, data: DemoDataset) -> float:
    """Mean |y| of the last waypoint (m) the policy of ``folder`` predicts on every sample."""
    net, _ = load_weights(folder)
    with torch.inference_mode():
        pred = net(*(data.batch(np.arange(len(data)))[k] for k in input_names(net.config)))
    return float(pred[:, -1, 1].abs().mean())


def test_a_teacher_holds_the_policy_where_it_was(demo_dir: Path, encoder: TextEncoder,
                                                 tmp_path: Path) -> None:
    # the teacher: an untrained policy (one epoch at a vanishing lr), which drives straight
    # on; the labels turn
    train_mod.train_vla(CFG, demo_dir, tmp_path / "straight", **{
        **_train_kw(encoder), "epochs": 1, "lr": 1e-12}, export=False)
    data = DemoDataset(demo_dir, CFG, text_encoder=encoder)
    assert _mean_lateral_end(tmp_path / "straight", data) < 0.01
    kw = {**_train_kw(encoder), "epochs": 4}
    free = train_mod.train_vla(CFG, demo_dir, tmp_path / "free", **kw, export=False)
    held = train_mod.train_vla(CFG, demo_dir, tmp_path / "held", **kw, export=False,
                               teacher_weights=tmp_path / "straight", teacher_weight=20.0)
    free_y = _mean_lateral_end(tmp_path / "free", data)
    held_y = _mean_lateral_end(tmp_path / "held", data)
    # without the teacher the policy starts to learn the turns (the labels' mean is ~10 m;
    # 4 epochs of the tiny net reach ~0.4); with a heavy one it stays near straight (~0.08)
    assert free_y > 0.2, free_y
    assert held_y < 0.4 * free_y, (held_y, free_y)
    assert "teacher_loss" not in free["epochs"][0]
    assert all(math.isfinite(e["teacher_loss"]) and e["teacher_loss"] > 0
               for e in held["epochs"])
    assert held["args"]["teacher_weights"] == str(tmp_path / "straight")
    with pytest.raises(ConfigError, match="teacher"):
        train_mod.train_vla(CFG, demo_dir, tmp_path / "x", **kw, teacher_weight=1.0)
    with pytest.raises(ConfigError, match="teacher"):
        train_mod.train_vla(CFG, demo_dir, tmp_path / "x", **kw,
                            teacher_weights=tmp_path / "straight")
    # the no-language ablation reads the same demonstrations but not the teacher's inputs
    with pytest.raises(ConfigError, match=r"teacher .* reads other features"):
        train_mod.train_vla(replace(CFG, language=False), demo_dir, tmp_path / "x", **kw,
                            teacher_weights=tmp_path / "straight", teacher_weight=1.0)


def test_keep_last_writes_the_last_epoch_not_the_best(demo_dir: Path, encoder: TextEncoder,
                                                     tmp_path: Path) -> None:
    # a learning rate that makes the second epoch worse than the first on validation
    kw = {**_train_kw(encoder), "epochs": 2, "lr": 0.5, "warmup_steps": 0}
    for keep in ("best", "last"):
        log = train_mod.train_vla(CFG, demo_dir, tmp_path / keep, **kw, keep=keep,
                                  export=False)
        assert log["best_epoch"] == 1, log["epochs"]
        saved = torch.load(tmp_path / keep / "vla.pt", weights_only=True)
        last = torch.load(tmp_path / keep / "checkpoint.pt", weights_only=False)["net"]
        same = all(torch.equal(saved[k], v) for k, v in last.items())
        assert same is (keep == "last"), keep
        assert (log.get("kept_epoch") == 2) is (keep == "last")
    with pytest.raises(ConfigError, match="keep"):
        train_mod.train_vla(CFG, demo_dir, tmp_path / "x", **kw, keep="mean")


def test_a_crashed_run_resumes_where_the_checkpoint_is(
        demo_dir: Path, encoder: TextEncoder, trained: tuple[Path, dict[str, Any]],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = torch.save
    saves = {"n": 0}

    def crash_after_two_checkpoints(obj: Any, f: Any, *a: Any, **k: Any) -> None:
        real_save(obj, f, *a, **k)
        if Path(str(f)).name == train_mod.CHECKPOINT_FILE:
            saves["n"] += 1
            if saves["n"] == 2:
                raise KeyboardInterrupt("simulated crash after epoch 2")

    monkeypatch.setattr(torch, "save", crash_after_two_checkpoints)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train_vla(CFG, demo_dir, tmp_path, **_train_kw(encoder), export=False)
    monkeypatch.setattr(torch, "save", real_save)
    log = train_mod.train_vla(CFG, demo_dir, tmp_path, **_train_kw(encoder), export=False,
                              resume=True)
    assert log["resumed_at"] == [2] and [e["epoch"] for e in log["epochs"]] == [1, 2, 3, 4, 5, 6]
    # the same batches, noise and dropout as the uninterrupted run: the same network
    ref = torch.load(trained[0] / train_mod.CHECKPOINT_FILE, weights_only=False)["net"]
    got = torch.load(tmp_path / train_mod.CHECKPOINT_FILE, weights_only=False)["net"]
    for name, value in ref.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ConfigError, match="another config"):
        train_mod.train_vla(replace(CFG, d_model=64), demo_dir, tmp_path,
                            **_train_kw(encoder), export=False, resume=True)


def test_max_minutes_stops_and_bad_arguments_are_refused(demo_dir: Path, encoder: TextEncoder,
                                                         tmp_path: Path) -> None:
    log = train_mod.train_vla(CFG, demo_dir, tmp_path, **{**_train_kw(encoder),
                                                          "max_minutes": 1e-9}, export=False)
    assert log["stopped_early"] is True
    with pytest.raises(ConfigError, match="epochs"):
        train_mod.train_vla(CFG, demo_dir, tmp_path, **{**_train_kw(encoder), "epochs": 0})


def test_cli_trains_the_no_language_ablation(demo_dir: Path, encoder: TextEncoder,
                                             tmp_path: Path) -> None:
    CFG.save(tmp_path / "tiny.yaml")
    parser = argparse.ArgumentParser()
    train_mod.add_arguments(parser)
    args = parser.parse_args(["--data", str(demo_dir), "--out", str(tmp_path / "w"),
                              "--config", str(tmp_path / "tiny.yaml"), "--no-language",
                              "--epochs", "1", "--threads", "1", "--no-export",
                              "--no-progress"])
    assert train_mod.run(args) == 0
    assert VLAConfig.load(tmp_path / "w" / "config.json").language is False
    log = json.loads((tmp_path / "w" / "train_log.json").read_text())
    assert log["instructions"] == 1
    assert log["task_probe"]["used"] is False  # one constant instruction: nothing to tell apart
    planner = load_vla(tmp_path / "w", text_encoder=encoder)
    assert planner.language is False and planner.name == "vla-no-language"


def test_cli_trains_a_speed_cue_policy_with_respeed(encoder: TextEncoder,
                                                    tmp_path: Path) -> None:
    _speed_demos(tmp_path / "speed", replace(CFG, speed_cue=True))
    CFG.save(tmp_path / "tiny.yaml")
    parser = argparse.ArgumentParser()
    train_mod.add_arguments(parser)
    args = parser.parse_args(["--data", str(tmp_path / "speed"), "--out", str(tmp_path / "w"),
                              "--config", str(tmp_path / "tiny.yaml"), "--speed-cue",
                              "--respeed", "0.5", "--epochs", "1", "--threads", "1",
                              "--no-export", "--no-progress"])
    assert train_mod.run(args) == 0
    assert VLAConfig.load(tmp_path / "w" / "config.json").speed_cue is True
    log = json.loads((tmp_path / "w" / "train_log.json").read_text())
    assert log["args"]["respeed"] == 0.5


# ---------------------------------------------------------------------------- planner
def test_planner_plans_in_the_world_frame(trained: tuple[Path, dict[str, Any]],
                                          encoder: TextEncoder) -> None:
    out, _ = trained
    planner = load_vla(out, text_encoder=encoder)
    assert isinstance(planner, Planner) and planner.name == "vla"
    obs, _ = _observation(np.random.default_rng(99), "turn left", 4)
    traj = planner.plan(obs)
    assert traj.is_finite() and traj.is_time_valid()
    assert traj.stamp_ns == obs.stamp_ns and traj.frame_id == obs.ego.frame_id
    assert len(traj) == CFG.horizon + 1 and traj.source == "vla"
    np.testing.assert_allclose(traj.xy[0], obs.ego.pose.translation[:2])
    assert planner.last_instruction == "turn left"
    right = planner.plan(replace(obs, instruction="turn right"))
    assert np.abs(right.xy - traj.xy).max() > 1e-3  # the instruction changes the plan
    ort = load_vla(out, RuntimeConfig(backend="onnxruntime"), text_encoder=encoder)
    np.testing.assert_allclose(ort.plan(obs).xy, traj.xy, atol=PARITY_ATOL)
    planner.reset()
    assert planner.last_instruction is None


def test_no_language_really_replaces_the_instruction(trained: tuple[Path, dict[str, Any]],
                                                     encoder: TextEncoder) -> None:
    out, _ = trained
    planner = load_vla(out, text_encoder=encoder, language=False)
    assert planner.name == "vla-no-language"
    obs, _ = _observation(np.random.default_rng(5), "turn left", 4)
    left = planner.plan(obs)
    assert planner.last_instruction == NO_LANGUAGE_INSTRUCTION
    right = planner.plan(replace(obs, instruction="turn right"))
    np.testing.assert_array_equal(left.xy, right.xy)
    # it is exactly the plan of the constant instruction given with language on
    with_language = load_vla(out, text_encoder=encoder)
    const = with_language.plan(replace(obs, instruction=NO_LANGUAGE_INSTRUCTION))
    np.testing.assert_allclose(const.xy, left.xy, atol=1e-9)


def test_missing_weights_are_named(tmp_path: Path, encoder: TextEncoder,
                                   trained: tuple[Path, dict[str, Any]]) -> None:
    with pytest.raises(FileNotFoundError, match=r"vla\.pt"):
        load_vla(tmp_path, text_encoder=encoder)
    (tmp_path / "config.json").write_text((trained[0] / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"vla\.onnx"):
        load_vla(tmp_path, RuntimeConfig(backend="onnxruntime"), text_encoder=encoder)


def test_input_names_match_the_network_signature() -> None:
    import inspect

    from mm_perception.planning.vla.model import VLAPolicyNet

    params = list(inspect.signature(VLAPolicyNet.forward).parameters.values())[1:]
    # every possible input, in order; those every policy takes are required, the optional
    # one (speed_cue) and then the training-time options default to None
    required = input_names(VLAConfig())
    assert tuple(p.name for p in params[:len(INPUT_NAMES)]) == INPUT_NAMES
    assert required == INPUT_NAMES[:len(required)]
    assert input_names(VLAConfig(speed_cue=True)) == INPUT_NAMES
    assert all(p.default is None for p in params[len(required):])
    assert all(p.default is inspect.Parameter.empty for p in params[:len(required)])
