"""Meta-actions and the local vision-language-model planner (issue 6).

The VLM is a tiny randomly initialised LLaVA (CLIP vision tower + Llama text model) built
from configs with a byte-level BPE tokenizer trained here, saved with ``save_pretrained``
and loaded back through :class:`VLMPlanner` offline. Its answers are noise, so the
mapping from answers to actions is checked by replacing ``generate`` with one that
"answers" a fixed text through the real tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mm_perception.core.errors import ConfigError, ModelLoadError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import EgoState
from mm_perception.planning.meta_actions import (
    MetaAction,
    MetaActionConfig,
    meta_action_target,
    meta_action_trajectory,
    parse_meta_action,
)
from mm_perception.planning.observation import (
    LanePolyline,
    Planner,
    PlannerObservation,
    to_base,
)
from mm_perception.planning.vla.vlm_adapter import SAFE_DEFAULT_ACTION, VLMConfig, VLMPlanner

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

# ----------------------------------------------------------------------------- scene helpers

EGO_XY_YAW = (10.0, -5.0, 0.5)  # a world pose that is not the identity, to catch frame bugs


def _ego(stamp_ns: int = 1_000_000_000, speed: float = 6.0) -> EgoState:
    x, y, yaw = EGO_XY_YAW
    return EgoState(stamp_ns=stamp_ns, frame_id="odom", child_frame_id="base_link",
                    pose=SE3.from_xy_yaw(x, y, yaw), linear_velocity=np.array([speed, 0.0, 0.0]))


def _arc(side: float) -> np.ndarray:
    """A 90-degree junction turn of radius 12 m starting 10 m ahead, base_link."""
    straight = np.stack([np.linspace(-5.0, 10.0, 16), np.zeros(16)], axis=1)
    ang = np.linspace(0.0, math.pi / 2, 20)[1:]
    arc = np.stack([10.0 + 12.0 * np.sin(ang), side * 12.0 * (1.0 - np.cos(ang))], axis=1)
    return np.vstack([straight, arc])


def _line(y: float, length: float = 80.0) -> np.ndarray:
    return np.stack([np.linspace(-5.0, length, 40), np.full(40, y)], axis=1)


ALL_LANES = (
    LanePolyline("ego", _line(0.0)),
    LanePolyline("left", _line(3.5)),
    LanePolyline("right", _line(-3.5)),
    LanePolyline("shoulder", _line(-6.0)),
    LanePolyline("turn_left", _arc(+1.0)),
    LanePolyline("straight", _line(0.0, 60.0)),
    LanePolyline("turn_right", _arc(-1.0)),
)


def _obs(lanes: tuple[LanePolyline, ...] = ALL_LANES, image: Any = "default",
         stamp_ns: int = 1_000_000_000, instruction: str = "turn left at the junction",
         instruction_stamp_ns: int | None = 0, speed: float = 6.0) -> PlannerObservation:
    img = np.full((24, 32, 3), 90, np.uint8) if isinstance(image, str) else image
    return PlannerObservation(stamp_ns=stamp_ns, ego=_ego(stamp_ns, speed),
                              instruction=instruction,
                              instruction_stamp_ns=instruction_stamp_ns, image=img,
                              lanes=lanes)


# ------------------------------------------------------------------------- parsing

@pytest.mark.parametrize(("text", "expected"), [
    ("stop", MetaAction.STOP),
    ("STOP.", MetaAction.STOP),
    ("Halt!", MetaAction.STOP),
    ("come to a full stop", MetaAction.STOP),
    ("follow_lane", MetaAction.FOLLOW_LANE),
    ("Keep lane", MetaAction.FOLLOW_LANE),
    ("stay in your lane", MetaAction.FOLLOW_LANE),
    ("continue", MetaAction.FOLLOW_LANE),
    ("slow down", MetaAction.SLOW_DOWN),
    ("Decelerate", MetaAction.SLOW_DOWN),
    ("speed-up", MetaAction.SPEED_UP),
    ("accelerate", MetaAction.SPEED_UP),
    ("turn_left", MetaAction.TURN_LEFT),
    ("Go left.", MetaAction.TURN_LEFT),
    ("make a right turn", MetaAction.TURN_RIGHT),
    ("TURN-RIGHT", MetaAction.TURN_RIGHT),
    ("go straight", MetaAction.GO_STRAIGHT),
    ("continue straight ahead", MetaAction.GO_STRAIGHT),
    ("change_lane_left", MetaAction.CHANGE_LANE_LEFT),
    ("Change lanes to the left.", MetaAction.CHANGE_LANE_LEFT),
    ("go to the left lane", MetaAction.CHANGE_LANE_LEFT),
    ("merge right", MetaAction.CHANGE_LANE_RIGHT),
    ("right lane change", MetaAction.CHANGE_LANE_RIGHT),
    ("pull over", MetaAction.PULL_OVER),
    ("stop on the shoulder", MetaAction.PULL_OVER),  # longest phrase at a position wins
    ("park", MetaAction.PULL_OVER),
    ("Turn left, then stop", MetaAction.TURN_LEFT),  # earliest phrase wins
    ("The answer is: slow down", MetaAction.SLOW_DOWN),
])
def test_parse_meta_action_reads_free_text(text: str, expected: MetaAction) -> None:
    assert parse_meta_action(text) is expected


@pytest.mark.parametrize("text", ["", "   ", "asdf qwerty", "parked car", "slowly", "left",
                                  "stopwatch"])
def test_parse_meta_action_returns_none_without_an_action(text: str) -> None:
    assert parse_meta_action(text) is None


def test_every_action_parses_from_its_own_phrase_and_value() -> None:
    for action in MetaAction:
        assert parse_meta_action(action.phrase) is action
        assert parse_meta_action(action.value) is action


# ------------------------------------------------------------------- action -> lane / speed

EXPECTED_ROLE = {
    MetaAction.STOP: "ego", MetaAction.FOLLOW_LANE: "ego", MetaAction.SLOW_DOWN: "ego",
    MetaAction.SPEED_UP: "ego", MetaAction.TURN_LEFT: "turn_left",
    MetaAction.TURN_RIGHT: "turn_right", MetaAction.GO_STRAIGHT: "straight",
    MetaAction.CHANGE_LANE_LEFT: "left", MetaAction.CHANGE_LANE_RIGHT: "right",
    MetaAction.PULL_OVER: "shoulder",
}


@pytest.mark.parametrize("action", list(MetaAction))
def test_target_picks_the_lane_and_speed_of_the_action(action: MetaAction) -> None:
    cfg = MetaActionConfig()
    target = meta_action_target(_obs(), action, cfg)
    assert target.role == EXPECTED_ROLE[action]
    lane = _obs().lane(EXPECTED_ROLE[action])
    assert lane is not None
    np.testing.assert_array_equal(target.path_base, lane.points)
    if action is MetaAction.STOP:
        assert target.stop_at_m == pytest.approx(
            6.0**2 / (2 * cfg.lane_follow.comfort_decel_mps2) + 6.0 * cfg.stop_reaction_s)
    else:  # pull_over included: the shoulder is 6 m away, drive onto it first
        assert target.stop_at_m is None
    speed = {MetaAction.SLOW_DOWN: cfg.slow_speed_mps, MetaAction.SPEED_UP: cfg.fast_speed_mps,
             MetaAction.TURN_LEFT: cfg.turn_speed_mps, MetaAction.TURN_RIGHT: cfg.turn_speed_mps,
             MetaAction.FOLLOW_LANE: cfg.cruise_speed_mps,
             MetaAction.GO_STRAIGHT: cfg.cruise_speed_mps}
    if action in speed:
        assert target.target_speed_mps == speed[action]


def test_target_falls_back_to_the_ego_lane_then_straight_ahead() -> None:
    cfg = MetaActionConfig()
    ego_only = (LanePolyline("ego", _line(0.0)),)
    for action in (MetaAction.CHANGE_LANE_LEFT, MetaAction.TURN_RIGHT, MetaAction.PULL_OVER):
        assert meta_action_target(_obs(lanes=ego_only), action, cfg).role == "ego"
    bare = meta_action_target(_obs(lanes=()), MetaAction.TURN_LEFT, cfg)
    assert bare.role == "none"
    assert bare.path_base[0].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(bare.path_base[-1], [cfg.straight_path_m, 0.0])
    np.testing.assert_allclose(bare.path_base[:, 1], 0.0)
    # a standing ego stops where it is
    assert meta_action_target(_obs(speed=0.0), MetaAction.STOP, cfg).stop_at_m == 0.0


def test_pull_over_stops_once_on_the_shoulder() -> None:
    cfg = MetaActionConfig()
    on_shoulder = (LanePolyline("ego", _line(3.5)), LanePolyline("shoulder", _line(0.3)))
    target = meta_action_target(_obs(lanes=on_shoulder, speed=3.0), MetaAction.PULL_OVER, cfg)
    assert target.role == "shoulder" and target.stop_at_m == cfg.stop_distance_m(3.0)
    traj = meta_action_trajectory(_obs(lanes=on_shoulder, speed=3.0), MetaAction.PULL_OVER)
    assert traj.speed[-1] == pytest.approx(0.0, abs=0.05)


def test_meta_action_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="cruise_speed_mps"):
        MetaActionConfig(cruise_speed_mps=-1.0)
    with pytest.raises(ConfigError, match="slow <= cruise <= fast"):
        MetaActionConfig(slow_speed_mps=9.0, cruise_speed_mps=8.0)
    with pytest.raises(ConfigError, match="stop_reaction_s"):
        MetaActionConfig(stop_reaction_s=float("nan"))
    with pytest.raises(ConfigError, match="max_speed_mps"):
        MetaActionConfig(fast_speed_mps=20.0)
    with pytest.raises(ConfigError, match="lane_follow"):
        MetaActionConfig(lane_follow=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MetaAction"):
        meta_action_target(_obs(), "stop", MetaActionConfig())  # type: ignore[arg-type]


def _end_base(obs: PlannerObservation, action: MetaAction) -> tuple[np.ndarray, np.ndarray]:
    traj = meta_action_trajectory(obs, action, source="test")
    assert traj.is_finite() and traj.is_time_valid()
    assert traj.frame_id == "odom" and traj.stamp_ns == obs.stamp_ns and traj.source == "test"
    return to_base(obs.ego, traj.xy)[-1], traj.speed


def test_trajectories_go_where_the_action_says() -> None:
    obs = _obs()
    left_end, _ = _end_base(obs, MetaAction.TURN_LEFT)
    right_end, _ = _end_base(obs, MetaAction.TURN_RIGHT)
    straight_end, _ = _end_base(obs, MetaAction.GO_STRAIGHT)
    assert left_end[1] > 1.0 and right_end[1] < -1.0 and abs(straight_end[1]) < 0.5
    lane_left_end, _ = _end_base(obs, MetaAction.CHANGE_LANE_LEFT)
    lane_right_end, _ = _end_base(obs, MetaAction.CHANGE_LANE_RIGHT)
    assert lane_left_end[1] > 1.5 and lane_right_end[1] < -1.5
    shoulder_end, _ = _end_base(obs, MetaAction.PULL_OVER)
    assert shoulder_end[1] < -2.0
    _, stop_speed = _end_base(obs, MetaAction.STOP)
    assert stop_speed[-1] < 0.5 and (np.diff(stop_speed) <= 1e-9).all()
    _, slow = _end_base(obs, MetaAction.SLOW_DOWN)
    _, fast = _end_base(obs, MetaAction.SPEED_UP)
    assert slow[-1] < fast[-1]
    bare_end, _ = _end_base(_obs(lanes=()), MetaAction.FOLLOW_LANE)
    assert bare_end[0] > 5.0 and abs(bare_end[1]) < 0.5


# ------------------------------------------------------------------------ VLM config

def test_vlm_config_validates_and_formats_the_prompt(tmp_path: Path) -> None:
    cfg = VLMConfig(model_dir=str(tmp_path), allowed_actions=(MetaAction.STOP,
                                                              MetaAction.TURN_LEFT))
    assert cfg.model_dir == tmp_path
    prompt = cfg.prompt("Take the next left.")
    assert "Take the next left" in prompt and "stop, turn left" in prompt and ".." not in prompt
    assert cfg.no_instruction in cfg.prompt("")
    bad: list[dict[str, Any]] = [
        {"prompt_template": "no actions here {instruction}"},
        {"prompt_template": "{actions} {speed}"},
        {"prompt_template": "{actions"},
        {"max_new_tokens": 0}, {"max_new_tokens": 1000}, {"dtype": "int8"},
        {"device": "gpu0"}, {"requery_s": -1.0}, {"allowed_actions": ()},
        {"allowed_actions": ("stop",)}, {"max_generate_s": 0.0},
    ]
    for kwargs in bad:
        with pytest.raises(ConfigError):
            VLMConfig(model_dir=tmp_path, **kwargs)
    with pytest.raises(ConfigError, match="model_dir"):
        VLMConfig(model_dir="")


def test_missing_or_empty_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        VLMPlanner(VLMConfig(model_dir=tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        VLMPlanner(VLMConfig(model_dir=tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "not_a_model"}')
    with pytest.raises(ModelLoadError, match="cannot load"):
        VLMPlanner(VLMConfig(model_dir=tmp_path))


# --------------------------------------------------------------------- the tiny model

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def _tiny_llava(folder: Path, chat_template: bool = True) -> None:
    """Write a tiny random LLaVA and its processor to ``folder`` (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300,
                                  special_tokens=["<unk>", "<s>", "</s>", "<pad>", "<image>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" ".join(a.phrase for a in MetaAction)], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                        extra_special_tokens={"image_token": "<image>"})
    template = CHAT_TEMPLATE if chat_template else None
    if template is not None:
        tokenizer.chat_template = template
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32},
                                            crop_size={"height": 32, "width": 32})
    # CLIP keeps a CLS token that the "default" strategy drops: 2x2 patches -> 4 tokens
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=16, num_additional_image_tokens=1,
                               vision_feature_select_strategy="default",
                               chat_template=template)
    image_id = int(tokenizer.convert_tokens_to_ids("<image>"))  # type: ignore[arg-type]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=1, num_attention_heads=2,
                                       image_size=32, patch_size=16, projection_dim=16),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=16,
                                intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2,
                                max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                                pad_token_id=3),
        image_token_index=image_id, vision_feature_layer=-1,
        vision_feature_select_strategy="default")
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """The test machine's cores are shared: one torch thread, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_llava")
    _tiny_llava(folder)
    return folder


@pytest.fixture(scope="module")
def planner(tiny_model_dir: Path) -> VLMPlanner:
    return VLMPlanner(VLMConfig(model_dir=tiny_model_dir, max_new_tokens=4, requery_s=1.0))


def test_tiny_model_loads_generates_and_plans(planner: VLMPlanner) -> None:
    assert isinstance(planner, Planner)
    planner.reset()
    obs = _obs()
    traj = planner.plan(obs)
    assert planner.query_count == 1
    assert isinstance(planner.last_text, str)
    assert isinstance(planner.last_action, MetaAction)
    assert traj.is_finite() and traj.is_time_valid()
    assert traj.frame_id == obs.ego.frame_id and traj.stamp_ns == obs.stamp_ns
    assert traj.source == "vlm" and len(traj) == planner.config.chunk.steps + 1
    # the first sample is the ego's current world pose: the trajectory is in the world frame
    np.testing.assert_allclose(traj.xy[0], EGO_XY_YAW[:2])
    # random weights answer noise, which is either an action or counted and replaced by stop
    if parse_meta_action(planner.last_text or "") is None:
        assert planner.unparseable_count == 1 and planner.last_action is SAFE_DEFAULT_ACTION
    # greedy decoding is deterministic
    first = planner.last_text
    planner.reset()
    planner.plan(obs)
    assert planner.last_text == first


def test_text_only_query_without_image(planner: VLMPlanner) -> None:
    planner.reset()
    traj = planner.plan(_obs(image=None))
    assert planner.query_count == 1 and planner.missing_image_count == 1
    assert traj.is_finite()
    planner.reset()
    planner.plan(_obs(image=np.zeros((4, 4), np.float32)))  # malformed: asked without it
    assert planner.query_count == 1 and planner.missing_image_count == 1


def test_processor_without_chat_template(tmp_path: Path) -> None:
    _tiny_llava(tmp_path, chat_template=False)
    plain = VLMPlanner(VLMConfig(model_dir=tmp_path, max_new_tokens=2))
    assert plain.plan(_obs()).is_finite() and plain.query_count == 1


def _answer_with(planner: VLMPlanner, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Make the model 'generate' ``text`` after the prompt, through the real tokenizer."""
    tokenizer = planner._processor.tokenizer

    def fake_generate(input_ids: Any, **kwargs: Any) -> Any:
        assert kwargs["do_sample"] is False and kwargs["max_new_tokens"] == 4
        answer = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        return torch.cat([input_ids, answer], dim=1)

    monkeypatch.setattr(planner._model, "generate", fake_generate)


@pytest.mark.parametrize("action", list(MetaAction))
def test_each_answer_maps_to_its_action_and_trajectory(
        planner: VLMPlanner, monkeypatch: pytest.MonkeyPatch, action: MetaAction) -> None:
    _answer_with(planner, monkeypatch, f" {action.phrase}.")
    planner.reset()
    obs = _obs()
    traj = planner.plan(obs)
    assert planner.last_action is action and planner.unparseable_count == 0
    assert planner.last_text == f"{action.phrase}."
    expected = meta_action_trajectory(obs, action, planner.config.meta_action,
                                      planner.config.chunk, source="vlm")
    np.testing.assert_allclose(traj.xy, expected.xy)
    np.testing.assert_allclose(traj.speed, expected.speed)
    assert meta_action_target(obs, action, planner.config.meta_action).role \
        == EXPECTED_ROLE[action]


def test_unparseable_answer_stops_and_is_counted(
        planner: VLMPlanner, monkeypatch: pytest.MonkeyPatch) -> None:
    _answer_with(planner, monkeypatch, " banana")
    planner.reset()
    obs = _obs(speed=3.0)
    traj = planner.plan(obs)
    assert planner.last_action is MetaAction.STOP and planner.unparseable_count == 1
    expected = meta_action_trajectory(obs, MetaAction.STOP, planner.config.meta_action,
                                      planner.config.chunk, source="vlm")
    np.testing.assert_allclose(traj.speed, expected.speed)
    assert traj.speed[-1] == pytest.approx(0.0, abs=0.05)


def test_answer_is_cached_until_requery_period_or_new_instruction(
        planner: VLMPlanner, monkeypatch: pytest.MonkeyPatch) -> None:
    _answer_with(planner, monkeypatch, " turn left")
    planner.reset()
    t0 = 5_000_000_000
    planner.plan(_obs(stamp_ns=t0))
    planner.plan(_obs(stamp_ns=t0 + 500_000_000))  # within requery_s = 1 s: cached
    assert planner.query_count == 1
    planner.plan(_obs(stamp_ns=t0 + 1_000_000_000))  # period over: asked again
    assert planner.query_count == 2
    planner.plan(_obs(stamp_ns=t0 + 1_100_000_000, instruction="stop here",
                      instruction_stamp_ns=t0 + 1_050_000_000))  # new instruction: at once
    assert planner.query_count == 3
    planner.plan(_obs(stamp_ns=t0, instruction="stop here",
                      instruction_stamp_ns=t0 + 1_050_000_000))  # time went back: at once
    assert planner.query_count == 4
    planner.reset()
    assert planner.query_count == 0 and planner.last_action is None


def test_no_image_can_mean_stop_without_asking(tiny_model_dir: Path) -> None:
    strict = VLMPlanner(VLMConfig(model_dir=tiny_model_dir, text_only_without_image=False))
    traj = strict.plan(_obs(image=None))
    assert strict.query_count == 0 and strict.missing_image_count == 1
    assert strict.last_action is MetaAction.STOP and strict.last_text is None
    assert traj.is_finite()
    strict.plan(_obs(stamp_ns=1_100_000_000))  # the image is back: asked at once
    assert strict.query_count == 1 and strict.last_text is not None
