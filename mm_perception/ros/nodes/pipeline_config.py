"""Pipeline node parameters -> core objects, without ROS: what the live node builds at
configure and what an offline run of the same node (``mm_perception.ros.live_run``) builds,
so both run the same chain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mm_perception.core.calibration import Rig
from mm_perception.core.errors import ConfigError


def pipeline_from_params(rig: Rig, params: Mapping[str, Any]) -> Any:
    """The :class:`~mm_perception.fusion.pipeline.PerceptionPipeline` of validated pipeline
    node parameters (``config/schema/pipeline.schema.json``) over ``rig``.

    Raises:
        ConfigError: a config the core rejects, or ``primary_list`` not produced with this rig.
    """
    from mm_perception.fusion.pipeline import PerceptionPipeline, PipelineConfig
    from mm_perception.tracking.tracker import TrackerConfig

    threads = int(params["inference_threads"]) or None  # 0: the libraries' defaults
    bev = None
    if "feature" in params["lists"]:
        # the BEV detector config is only built for the list that uses it (its module is
        # light; the ONNX Runtime session is made by the pipeline)
        from mm_perception.fusion.feature_level.detector import BevDetectorConfig
        from mm_perception.runtime import RuntimeConfig

        bev = BevDetectorConfig(weights=params.get("bev_weights_dir") or None,
                                runtime=RuntimeConfig(intra_op_threads=threads))
    cfg = PipelineConfig(
        lists=tuple(params["lists"]), track_lists=tuple(params["track_lists"]),
        use_cameras=params["use_cameras"],
        camera_weights=params["camera_weights_dir"] or None,
        tracking_frame=params["tracking_frame"], bev=bev, camera_threads=threads,
        tracker=replace(TrackerConfig(), confirm_hits=params["tracker.confirm_hits"],
                        max_coast_s=params["tracker.max_coast_s"]))
    pipeline = PerceptionPipeline(rig, cfg)
    primary = params["primary_list"]
    if primary not in pipeline.lists:
        raise ConfigError(f"parameter 'primary_list' = {primary!r} is not produced with this "
                          f"rig and 'lists' (produced: {list(pipeline.lists)})")
    return pipeline


def node_parameters(platform: Any, node_name: str,
                    overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The validated parameters node ``node_name`` of a platform graph gets, in the order the
    launcher applies them: schema defaults, its params file, the platform's ``parameters``,
    the platform's rig, then ``overrides``.

    Raises:
        ConfigError: no such node; ParameterError: a value the schema rejects.
    """
    from mm_perception.ros.params import defaults, load_param_file, load_schema, validate

    entry = next((n for n in platform.nodes if n.name == node_name), None)
    if entry is None:
        raise ConfigError(f"{platform.source}: no node named {node_name!r}")
    schema = load_schema(entry.kind)
    values = defaults(schema)
    if entry.params is not None:
        values.update(load_param_file(entry.params, node_name))
    values.update(entry.parameters)
    values["rig_file"] = str(platform.rig.resolve())
    values.update(overrides or {})
    return validate(values, schema, entry.kind)


__all__ = ["node_parameters", "pipeline_from_params"]
