"""Feature-level fusion in the pipeline (``feature`` list) and in the evaluation (the
model / modality comparison table), on a tiny random-weights model and on fakes."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from mm_perception.core.calibration import Rig
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import (
    Box3D,
    DetectedObject,
    EgoState,
    ObjectClass,
    PointCloud,
    RadarScan,
    SensorSet,
)
from mm_perception.eval.detection_metrics import DetectionEvalConfig, evaluate_detections
from mm_perception.eval.feature_table import (
    MODALITY_SUBSETS,
    FeatureTableRun,
    FeatureVariant,
    model_variants,
    table_rows,
    text_table,
)
from mm_perception.fusion.pipeline import PerceptionPipeline, PipelineConfig
from mm_perception.sim.ground_truth import GroundTruthObject

RIG = Path(__file__).resolve().parents[2] / "config" / "rigs" / "car.yaml"
STAMP = 1_000_000_000
EVAL = DetectionEvalConfig(max_range_m=50.0, ignore_gt_without_evidence=True,
                           min_visible_pixels=None)


@pytest.fixture(scope="module")
def rig() -> Rig:
    return Rig.from_yaml(RIG)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weights LiDAR + radar model on a 16 x 16 m grid (no camera network: fast),
    with every file of a weights folder; a low score threshold so it does detect things."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from mm_perception.fusion.feature_level.config import BevGrid, BevModelConfig
    from mm_perception.fusion.feature_level.detector import ONNX_FILE, save_weights
    from mm_perception.fusion.feature_level.export import export_onnx
    from mm_perception.fusion.feature_level.model import BevFusionNet
    from mm_perception.fusion.feature_level.processor import BevProcessor

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = BevModelConfig(grid=BevGrid(x_range_m=(-8, 8), y_range_m=(-8, 8), cell_m=1.0),
                            modalities=("lidar", "radar"), score_threshold=0.05,
                            max_objects=5)
    net = BevFusionNet(config).eval()
    folder = tmp_path_factory.mktemp("bev_tiny")
    save_weights(folder, net, BevProcessor(config))
    export_onnx(net, folder / ONNX_FILE)
    return folder


def _ego(stamp: int = STAMP) -> EgoState:
    return EgoState(stamp, "odom", "base_link", SE3.identity(),
                    linear_velocity=np.array([2.0, 0.0, 0.0]))


def _lidar(rng: np.random.Generator, stamp: int = STAMP, name: str = "lidar_top",
           ) -> PointCloud:
    xyz = np.column_stack([rng.uniform(-7, 7, 3000), rng.uniform(-7, 7, 3000),
                           rng.uniform(-1.5, 1.0, 3000)]).astype(np.float32)
    pts = np.zeros(len(xyz), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"),
                                    ("intensity", "f4")])
    pts["x"], pts["y"], pts["z"] = xyz.T
    pts["intensity"] = rng.uniform(0, 100, len(xyz))
    return PointCloud(name, stamp, name, pts)


def _radar(rng: np.random.Generator, stamp: int = STAMP) -> RadarScan:
    n = 40
    xyz = np.column_stack([rng.uniform(1, 7, n), rng.uniform(-4, 4, n),
                           np.zeros(n)]).astype(np.float32)
    return RadarScan("radar_front", stamp, "radar_front", xyz,
                     rng.normal(0, 3, n).astype(np.float32),
                     rng.uniform(-5, 20, n).astype(np.float32))


def _feature_pipeline(rig: Rig, weights: Path | str) -> PerceptionPipeline:
    from mm_perception.fusion.feature_level.detector import BevDetectorConfig

    return PerceptionPipeline(rig, PipelineConfig(
        lists=("lidar", "feature"), track_lists=("feature",), use_cameras=False,
        bev=BevDetectorConfig(weights=str(weights))))


# ------------------------------------------------------------------ pipeline list
def test_feature_list_gives_base_link_objects_at_the_set_stamp(rig: Rig,
                                                               tiny_weights: Path) -> None:
    pipe = _feature_pipeline(rig, tiny_weights)
    assert pipe.lists == ("lidar", "feature") and pipe.bev_detector is not None
    rng = np.random.default_rng(0)
    res = None
    for k in range(3):
        stamp = STAMP + k * 100_000_000
        sset = SensorSet(stamp, lidars={"lidar_top": _lidar(rng, stamp)},
                         radars={"radar_front": _radar(rng, stamp)}, ego=_ego(stamp),
                         missing=("cam_front",))
        res = pipe.process(sset)
        assert res.objects["feature"], "the low-threshold random model detects something"
        for obj in res.objects["feature"]:
            assert obj.box.frame_id == "base_link" and obj.stamp_ns == stamp
            assert np.all(np.isfinite(obj.box.center))
            assert obj.sources == ("feature:lidar", "feature:radar")
        assert "feature_level" in res.timings_ms
        assert res.feature_inputs is not None and res.feature_inputs.has_radar
    assert res is not None and "feature" in res.tracks


def test_feature_list_notes_unusable_sensors(rig: Rig, tiny_weights: Path) -> None:
    """Sensors the rig cannot place are left out with a note: nothing to detect from."""
    pipe = _feature_pipeline(rig, tiny_weights)
    rng = np.random.default_rng(1)
    sset = SensorSet(STAMP, lidars={"lidar_spare": _lidar(rng, name="lidar_spare")},
                     ego=_ego(), missing=("cam_front", "lidar_top"))
    res = pipe.process(sset)
    assert res.objects["feature"] == []
    assert any(n.startswith("feature: lidar 'lidar_spare'") for n in res.notes)


def test_feature_list_needs_a_camera_lidar_or_radar_in_the_rig(rig: Rig,
                                                               tmp_path: Path) -> None:
    from mm_perception.fusion.feature_level.detector import BevDetectorConfig

    data = rig.to_dict()
    data["sensors"] = {"odom": data["sensors"]["odom"]}
    data.pop("sync", None)
    odom_only = Rig.from_dict(data)
    # the weights folder does not exist: the detector must not even be loaded
    pipe = PerceptionPipeline(odom_only, PipelineConfig(
        lists=("feature",), track_lists=("feature",),
        bev=BevDetectorConfig(weights=str(tmp_path / "absent"))))
    assert pipe.lists == () and pipe.bev_detector is None
    res = pipe.process(SensorSet(STAMP, ego=_ego()))
    assert res.objects.get("feature", []) == []
    assert any("'feature' needs at least one camera or lidar or radar" in n
               for n in res.notes)


def test_feature_list_config() -> None:
    assert "feature" not in PipelineConfig().lists
    with pytest.raises(ConfigError, match=r"PipelineConfig\.bev"):
        PipelineConfig(lists=("feature",), track_lists=(), bev="weights")  # type: ignore[arg-type]


def test_feature_list_with_missing_weights_fails_at_construction(rig: Rig,
                                                                 tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent"):
        _feature_pipeline(rig, tmp_path / "absent")


def test_default_weights_run_when_present(rig: Rig) -> None:
    from mm_perception.fusion.feature_level.detector import DEFAULT_WEIGHTS_DIR, ONNX_FILE

    if not (DEFAULT_WEIGHTS_DIR / ONNX_FILE).is_file():
        pytest.skip(f"trained default BEV weights not there yet: {DEFAULT_WEIGHTS_DIR / ONNX_FILE}")
    pipe = PerceptionPipeline(rig, PipelineConfig(lists=("feature",), track_lists=(),
                                                  use_cameras=False))
    rng = np.random.default_rng(2)
    res = pipe.process(SensorSet(STAMP, lidars={"lidar_top": _lidar(rng)},
                                 radars={"radar_front": _radar(rng)}, ego=_ego(),
                                 missing=("cam_front",)))
    assert all(o.box.frame_id == "base_link" and o.stamp_ns == STAMP
               for o in res.objects["feature"])


# ------------------------------------------------------------------ variants
def test_model_variants_order_names_and_dropped_modalities() -> None:
    variants = model_variants([("concat", None), ("attention", "/w/att")])
    assert len(variants) == 2 * len(MODALITY_SUBSETS) == 14
    assert [v.name for v in variants[:7]] == [
        "concat: camera+lidar+radar", "concat: camera+lidar", "concat: lidar+radar",
        "concat: camera+radar", "concat: camera", "concat: lidar", "concat: radar"]
    assert all(v.model == "attention" and v.weights == "/w/att" for v in variants[7:])
    by_name = {v.name: v for v in variants}
    assert by_name["concat: camera+lidar+radar"].drop_modalities == ()
    assert by_name["concat: lidar+radar"].drop_modalities == ("camera",)
    assert by_name["attention: radar"].drop_modalities == ("camera", "lidar")
    cfg = by_name["attention: camera+radar"].detector_config()
    assert cfg.weights == "/w/att" and cfg.drop_modalities == ("lidar",)
    assert cfg.runtime.backend == "onnxruntime"
    # given in any order, kept in the canonical one
    assert FeatureVariant("m", modalities=("radar", "camera")).name == "m: camera+radar"


@pytest.mark.parametrize(("kwargs", "bad"), [
    ({"modalities": ()}, "()"), ({"modalities": ("sonar",)}, "sonar"),
    ({"modalities": ("lidar", "lidar")}, "lidar"), ({"backend": "tensorrt"}, "tensorrt"),
    ({"model": ""}, "''"), ({"weights": 3}, "3")])
def test_variant_is_validated(kwargs: dict, bad: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(bad)):
        FeatureVariant(**{"model": "concat", **kwargs})


def _truth(k: int) -> tuple[GroundTruthObject, ...]:
    out = []
    for j, (x, y) in enumerate([(10.0 + k, 2.0), (20.0, -3.0 - k)]):
        box = Box3D(np.array([x, y, 0.75]), np.array([4.5, 1.8, 1.5]), 0.1)
        out.append(GroundTruthObject(
            actor_id=j + 1, object_class=ObjectClass.CAR, box_world=box, box_base=box,
            velocity_world=np.zeros(3), velocity_base=np.zeros(3), yaw_rate=0.0,
            lidar_hits=20, radar_hits=2))
    return tuple(out)


class _Fake:
    """Returns the ground truth as detections when given LiDAR, else nothing."""

    def __init__(self, variant: FeatureVariant, truth: dict[int, tuple]) -> None:
        self.variant = variant
        self.truth = truth
        self.calls = 0
        self.closed = False

    def detect_frame(self, raw: object, stamp_ns: int) -> list[DetectedObject]:
        self.calls += 1
        if "lidar" not in self.variant.modalities:
            return []
        return [DetectedObject(g.box_base, g.object_class, 0.9, stamp_ns,
                               velocity=np.zeros(3)) for g in self.truth[stamp_ns]]

    def close(self) -> None:
        self.closed = True


def test_table_scores_every_variant_with_evaluate_detections() -> None:
    truth = {STAMP + k: _truth(k) for k in range(4)}
    made: dict[str, _Fake] = {}

    def factory(v: FeatureVariant) -> _Fake:
        made[v.name] = _Fake(v, truth)
        return made[v.name]

    variants = model_variants([("concat", None)])
    run = FeatureTableRun(variants, factory)
    known_variant = variants[0]
    for stamp, gt in truth.items():
        # the pipeline's own feature list stands in for the full model: not run again
        run.add(object(), stamp, gt, known={known_variant: []})  # type: ignore[arg-type]
    assert run.num_frames == 4
    assert made[known_variant.name].calls == 0 and made["concat: lidar"].calls == 4
    metrics = run.metrics(EVAL)
    assert list(metrics) == list(variants)
    for v, m in metrics.items():
        car = m.ap[ObjectClass.CAR][2.0]
        if v is known_variant or "lidar" not in v.modalities:
            assert car == 0.0, v.name
        else:
            assert car == pytest.approx(1.0), v.name
        assert m.num_frames == 4
    # the same numbers as evaluate_detections on the same frames
    frames = [([DetectedObject(g.box_base, g.object_class, 0.9, s, velocity=np.zeros(3))
                for g in gt], gt) for s, gt in truth.items()]
    direct = evaluate_detections(frames, EVAL).to_dict(include_curves=False)
    assert metrics[variants[1]].to_dict(include_curves=False) == direct
    run.close()
    assert all(f.closed for f in made.values())

    rows = table_rows(metrics, {"output": evaluate_detections(frames, EVAL)})
    assert [r.name for r in rows] == [v.name for v in variants] + ["output"]
    assert [r.kind for r in rows] == ["variant"] * 7 + ["list"]
    d = rows[1].to_dict()
    assert d["car_ap_2m"] == pytest.approx(1.0) and d["frames"] == 4
    assert d["modalities"] == ["camera", "lidar"] and d["mean_ate_m"] == pytest.approx(0.0)
    assert d["ap_2m"]["pedestrian"] is None  # no pedestrians: undefined, not 0
    assert rows[0].to_dict()["mean_ate_m"] is None  # no true positives
    json.dumps([r.to_dict() for r in rows], allow_nan=False)
    text = text_table([r.to_dict() for r in rows]).splitlines()
    assert len(text) == 1 + len(rows) and "car AP@2m" in text[0]
    assert text[2].startswith("concat: camera+lidar ") and "1.000" in text[2]
    assert len({len(line) for line in text}) == 1  # aligned


def test_table_refuses_duplicate_rows() -> None:
    v = FeatureVariant("concat")
    with pytest.raises(ConfigError, match="duplicate"):
        FeatureTableRun([v, v], lambda _: _Fake(v, {}))


def test_table_runs_real_bev_detectors(tiny_weights: Path) -> None:
    """The default factory: one BevDetector per variant, the dropped modalities removed."""
    from mm_perception.fusion.feature_level.processor import RawFrame

    rng = np.random.default_rng(3)
    raw = RawFrame(lidar=np.column_stack([rng.uniform(-7, 7, (500, 3)),
                                          rng.uniform(0, 1, 500)]).astype(np.float32),
                   radar=np.column_stack([rng.uniform(-7, 7, (30, 3)),
                                          rng.normal(0, 2, (30, 2))]).astype(np.float32))
    variants = model_variants([("tiny", str(tiny_weights))])
    run = FeatureTableRun(variants)
    run.add(raw, STAMP, _truth(0))
    run.close()
    metrics = run.metrics(EVAL)
    assert all(m.num_frames == 1 for m in metrics.values())
    # camera only: the model has no camera encoder, so nothing is detected
    assert metrics[variants[4]].counts[ObjectClass.CAR].num_detections == 0
    # all modalities: the low-threshold random model fires somewhere
    assert sum(c.num_detections for c in metrics[variants[0]].counts.values()) + \
        metrics[variants[0]].num_dropped_detections > 0


# ------------------------------------------------------------------ report and CLI
def test_report_has_the_feature_section(tmp_path: Path) -> None:
    from mm_perception.eval.report import FEATURE_SECTION, _html, _markdown, metrics_dict
    from mm_perception.eval.runner import EvalResult

    truth = {STAMP + k: _truth(k) for k in range(2)}
    variants = model_variants([("concat", None)])
    run = FeatureTableRun(variants, lambda v: _Fake(v, truth))
    for stamp, gt in truth.items():
        run.add(object(), stamp, gt)  # type: ignore[arg-type]
    output = evaluate_detections([([], gt) for gt in truth.values()], EVAL)
    result = EvalResult(detection={"output": output}, tracking={}, lists=("output",),
                        bags=("bag",), num_frames=2, frames_without_truth=0, timings_ms={},
                        pictures=(), notes={}, replay={},
                        feature_table=table_rows(run.metrics(EVAL), {"output": output}))
    md = _markdown(result, [])
    assert f"## {FEATURE_SECTION}" in md
    section = md.split(f"## {FEATURE_SECTION}")[1]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    assert "pedestrian AP@2m" in lines[0] and "mAVE m/s" in lines[0]
    assert [ln.split("|")[1].strip() for ln in lines[1:]] == (
        [v.name for v in variants] + ["output-level fusion (list)"])
    assert f"<h2>{FEATURE_SECTION}</h2>" in _html(md)
    table = metrics_dict(result)["feature_table"]
    assert [r["name"] for r in table][:2] == ["concat: camera+lidar+radar",
                                              "concat: camera+lidar"]
    json.dumps(metrics_dict(result), allow_nan=False)
    assert math.isclose(table[1]["car_ap_2m"], 1.0)


def test_cli_accepts_feature_level_and_bev_options(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from mm_perception import cli
    from mm_perception.fusion.feature_level import detector

    args = cli.build_parser().parse_args([
        "eval", "--bag", "b", "--out", "o", "--level", "feature", "output",
        "--bev-weights", "w_concat", "--bev-attention-weights", "w_att",
        "--bev-backend", "torch"])
    assert args.level == ["feature", "output"] and args.bev_backend == "torch"
    assert cli._bev_models(args) == [("concat", "w_concat"), ("attention", "w_att")]
    args = cli.build_parser().parse_args(["eval", "--bag", "b", "--out", "o", "--level",
                                          "feature"])
    assert args.bev_weights is None and args.bev_backend == "onnxruntime"
    # the attention model joins by default only once its folder exists
    monkeypatch.setattr(detector, "WEIGHTS_ROOT", tmp_path)
    assert cli._bev_models(args) == [("concat", None)]
    (tmp_path / "attention").mkdir()
    assert cli._bev_models(args) == [("concat", None), ("attention",
                                                        str(tmp_path / "attention"))]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["eval", "--bag", "b", "--out", "o",
                                       "--bev-backend", "tensorrt"])


@pytest.mark.parametrize("model", ["camera", "bev"])
def test_train_command_takes_the_trainers_own_options(
        model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mm-perception train MODEL --data D --out O` reaches the trainer (argparse's REMAINDER
    alone refuses options that come first): it stops at the missing dataset, not at
    "unrecognized arguments"."""
    from mm_perception import cli

    rc = cli.main(["train", model, "--data", str(tmp_path / "none"), "--out",
                   str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "shards" in err and "unrecognized arguments" not in err


def test_model_variants_keep_a_models_rows_within_its_modalities() -> None:
    from mm_perception.eval.feature_table import model_variants

    rows = model_variants([("all", None), ("lidar-only", "/w/lidar")],
                          model_modalities={"lidar-only": ("lidar",)})
    names = [v.name for v in rows]
    assert names[:7] == [f"all: {s}" for s in ("camera+lidar+radar", "camera+lidar",
                                                "lidar+radar", "camera+radar", "camera",
                                                "lidar", "radar")]
    assert names[7:] == ["lidar-only: lidar"]
