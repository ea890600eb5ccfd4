"""Node parameter schemas (no ROS): every schema's defaults are valid and equal the shipped
params file, validation names bad parameters, and the health monitor's rates, staleness and
percentiles are right."""

from __future__ import annotations

from pathlib import Path

import pytest

from mm_perception.ros.nodes.health import HealthConfig, HealthMonitor, Level
from mm_perception.ros.params import (
    ParameterError,
    config_dir,
    defaults,
    load_param_file,
    load_schema,
    validate,
)

NODES = sorted(p.name.removesuffix(".schema.json")
               for p in (config_dir() / "schema").glob("*.schema.json"))


def test_there_are_node_schemas() -> None:
    assert "pipeline" in NODES


@pytest.mark.parametrize("node", NODES)
def test_defaults_are_valid_and_match_the_params_file(node: str) -> None:
    schema = load_schema(node)
    values = defaults(schema)
    assert validate(values, schema, node) == values
    shipped = load_param_file(config_dir() / f"{node}.param.yaml", node)
    assert shipped == values, "config/<node>.param.yaml and the schema disagree"
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{node}: {name} has no description"


def test_validation_names_every_bad_parameter() -> None:
    schema = load_schema("pipeline")
    values = {**defaults(schema), "sync.timeout_s": -2.0, "lists": ["lidar", "sonar"],
              "publish.markers": "yes"}
    with pytest.raises(ParameterError) as err:
        validate(values, schema, "pipeline")
    text = str(err.value)
    for name in ("sync.timeout_s", "lists", "publish.markers"):
        assert f"'{name}'" in text
    with pytest.raises(ParameterError, match="not_a_parameter"):
        validate({**defaults(schema), "not_a_parameter": 1}, schema, "pipeline")


def test_param_file_sections(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("/**:\n  ros__parameters:\n    a: 1\n    sync: {window_s: 0.1}\n"
                 "perception:\n  ros__parameters:\n    a: 2\n")
    assert load_param_file(f, "perception") == {"a": 2, "sync.window_s": 0.1}
    assert load_param_file(f, "other") == {"a": 1, "sync.window_s": 0.1}


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_health_monitor_rates_staleness_and_percentiles() -> None:
    clock = FakeClock()
    mon = HealthMonitor({"lidar": True, "radar": False},
                        HealthConfig(rate_window_s=2.0, stale_after_s=0.5), clock=clock)
    for _ in range(21):  # 10 Hz for 2 s
        mon.received("lidar")
        clock.t += 0.1
    assert mon.rate_hz("lidar") == pytest.approx(10.0, rel=1e-6)
    report = {s.name: s for s in mon.report("n")}
    assert report["n: input lidar"].level is Level.OK
    # never heard, past the stale time: required -> ERROR, optional -> WARN
    assert report["n: input radar"].level is Level.WARN
    clock.t += 1.0
    report = {s.name: s for s in mon.report("n")}
    assert report["n: input lidar"].level is Level.ERROR
    assert "stale" in report["n: input lidar"].message
    assert dict(report["n: input lidar"].values)["stale_events"] == "1"
    mon.received("lidar")
    report = {s.name: s for s in mon.report("n")}
    assert report["n: input lidar"].level is Level.OK
    mon.dropped("lidar", "nan")
    report = {s.name: s for s in mon.report("n")}
    assert report["n: input lidar"].level is Level.WARN
    assert dict(report["n: input lidar"].values)["dropped.nan"] == "1"
    for v in range(1, 101):
        mon.timing("latency_ms", float(v))
    pct = mon.percentiles("latency_ms")
    assert pct is not None and pct["p50"] == pytest.approx(50.5) and pct["max"] == 100.0
    assert mon.percentiles("nothing") is None


# ---------------------------------------------------------------- bev_fusion node
def test_bev_fusion_shipped_params_validate() -> None:
    schema = load_schema("bev_fusion")
    shipped = load_param_file(config_dir() / "bev_fusion.param.yaml", "bev_fusion")
    assert validate(shipped, schema, "bev_fusion") == shipped
    assert shipped["backend"] == "onnxruntime" and shipped["weights_dir"] == ""
    assert shipped["drop_modalities"] == []


def test_bev_fusion_shares_the_pipeline_sync_and_rig_parameters() -> None:
    """The input side is the pipeline node's (SetInputNode): same names, types, bounds,
    defaults and descriptions (the schema loader has no $ref, so this keeps them equal)."""
    bev = load_schema("bev_fusion")["properties"]
    pipeline = load_schema("pipeline")["properties"]
    shared = ("rig_file", "sync.reference", "sync.window_s", "sync.timeout_s",
              "sync.on_timeout", "deskew_lidar", "remove_nans", "poll_period_s",
              "max_queued_sets", "stale_after_s", "qos.sensor_depth", "qos.reliable_inputs",
              "qos.output_depth")
    for name in shared:
        assert bev[name] == pipeline[name], name


@pytest.mark.parametrize(("name", "value"), [
    ("backend", "tflite"), ("device", "npu"), ("precision", "fp8"),
    ("drop_modalities", ["lidar", "sonar"]), ("drop_modalities", ["radar", "radar"]),
    ("engine_cache_dir", ""),
])
def test_bev_fusion_bad_value_is_refused_naming_it(name: str, value: object) -> None:
    schema = load_schema("bev_fusion")
    with pytest.raises(ParameterError) as err:
        validate({**defaults(schema), name: value}, schema, "bev_fusion")
    assert f"'{name}'" in str(err.value)


def test_bev_fusion_runtime_combination_is_refused_naming_the_parameters() -> None:
    """Values valid one by one that the runtime refuses together (fp16 without TensorRT,
    TensorRT on the CPU) name the parameters too."""
    pytest.importorskip("rclpy")
    from mm_perception.core.errors import ConfigError
    from mm_perception.ros.nodes.bev_fusion_node import runtime_from_params

    schema = load_schema("bev_fusion")
    for bad in ({"precision": "fp16"}, {"backend": "tensorrt"}):
        values = validate({**defaults(schema), **bad}, schema, "bev_fusion")
        with pytest.raises(ConfigError) as err:
            runtime_from_params(values)
        for key, value in bad.items():
            assert f"'{key}' = {value!r}" in str(err.value)
