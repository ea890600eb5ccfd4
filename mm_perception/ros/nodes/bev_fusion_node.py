"""Split ``bev_fusion`` node: feature-level (BEV) fusion of the rig's raw sensors
(parameters: ``config/schema/bev_fusion.schema.json``).

Inputs: exactly those of the composed pipeline node and the ``sync`` node (the same
:class:`~mm_perception.ros.nodes.set_input.SetInputNode` code): ``~/input/<sensor>`` for every
rig sensor (``Image`` / ``CompressedImage``, ``PointCloud2`` for LiDAR and radar,
``Odometry``) and ``~/input/<camera>/camera_info``, sensor-data QoS.

Per synchronised set (worker thread, bounded queue ``max_queued_sets``), the
:class:`~mm_perception.fusion.feature_level.detector.BevDetector` runs on
:func:`~mm_perception.fusion.feature_level.processor.frame_inputs` of the set (what
:meth:`BevDetector.detect` does) and the node publishes (reliable, ``qos.output_depth``):

* ``~/output/objects`` (``mm_perception_msgs/DetectedObjectArray``): the objects in the rig's
  base frame, ``header.stamp`` = the set's reference stamp, ``fusion_level`` = ``feature``;
* ``~/debug/markers`` (``MarkerArray``, with ``publish.markers``);
* the base node's ``~/debug/processing_time_ms``, ``~/debug/latency_ms`` and ``/diagnostics``:
  per-sensor input health, the sync counters, and a ``bev`` status with the inference backend
  (name, device, precision), the model's modalities, the modalities present in and used from
  the last set, and the last encode / infer / decode times.

A set that has none of the model's modalities (after ``drop_modalities``) is not published
(an empty list would claim the model looked and saw nothing): it is counted
(``sets_without_model_modality``), logged throttled and makes the ``bev`` status WARN.

The backend is created at configure (``weights_dir``: empty = the shipped default;
``backend`` / ``device`` / ``precision`` / ``engine_cache_dir``: the
:class:`~mm_perception.runtime.RuntimeConfig`) and released at cleanup
(:meth:`BevDetector.close`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mm_perception.core.errors import ConfigError
from mm_perception.core.types import SensorKind

# imported here, not on the first set (an import holds the GIL; see pipeline_node)
from mm_perception.ros.convert_objects import objects_to_msg
from mm_perception.ros.markers import objects_to_markers
from mm_perception.ros.nodes.health import Level, Status
from mm_perception.ros.nodes.set_input import SetInputNode, load_live_rig

#: the ``fusion_level`` of the published lists (the pipeline's name of this list)
FUSION_LEVEL = "feature"
#: rig sensor kind -> BEV model modality
_MODALITY = {SensorKind.CAMERA: "camera", SensorKind.LIDAR: "lidar", SensorKind.RADAR: "radar"}


def runtime_from_params(params: dict[str, Any]) -> Any:
    """The :class:`~mm_perception.runtime.RuntimeConfig` of validated node parameters.

    Raises:
        ConfigError: a combination the runtime refuses, naming the parameters and values.
    """
    from mm_perception.runtime import RuntimeConfig

    try:
        return RuntimeConfig(backend=params["backend"], device=params["device"],
                             precision=params["precision"],
                             engine_cache_dir=params["engine_cache_dir"])
    except ConfigError as exc:
        raise ConfigError(f"parameters 'backend' = {params['backend']!r}, 'device' = "
                          f"{params['device']!r}, 'precision' = {params['precision']!r}, "
                          f"'engine_cache_dir' = {params['engine_cache_dir']!r}: {exc}"
                          ) from exc


def detector_config_from_params(params: dict[str, Any]) -> Any:
    """The :class:`~mm_perception.fusion.feature_level.detector.BevDetectorConfig` of validated
    node parameters (``weights_dir`` empty: the shipped default).

    Raises:
        ConfigError: ``weights_dir`` is not a folder, or a value the core refuses (named).
    """
    from mm_perception.fusion.feature_level.detector import BevDetectorConfig

    weights = params["weights_dir"] or None
    if weights is not None:
        folder = Path(weights).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"parameter 'weights_dir' = {weights!r} is not a folder")
        weights = str(folder)
    try:
        return BevDetectorConfig(weights=weights, runtime=runtime_from_params(params),
                                 drop_modalities=tuple(params["drop_modalities"]))
    except ConfigError as exc:
        raise ConfigError(f"parameter 'drop_modalities' = {params['drop_modalities']!r}: "
                          f"{exc}") from exc


class BevFusionNode(SetInputNode):
    """Feature-level (BEV) fusion on synchronised sets (see the module docstring)."""

    KIND = "bev_fusion"

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.detector: Any = None
        self._pubs: dict[str, Any] = {}
        self._drop: tuple[str, ...] = ()
        self._last: dict[str, Any] = {}
        self._without_model_modality = 0

    # ------------------------------------------------------------------ configure
    def configure_node(self, params: dict[str, Any]) -> None:
        import mm_perception_msgs.msg as m
        from visualization_msgs.msg import MarkerArray

        from mm_perception.fusion.feature_level.detector import BevDetector

        rig = load_live_rig(params["rig_file"])
        config = detector_config_from_params(params)
        # FileNotFoundError (an OSError: configure fails) names a missing weights file
        self.detector = BevDetector(config)
        self._drop = config.drop_modalities
        model = tuple(self.detector.model_config.modalities)
        in_rig = {_MODALITY[s.kind] for s in rig.sensors.values() if s.kind in _MODALITY}
        usable = [mod for mod in model if mod in in_rig and mod not in self._drop]
        if not usable:
            raise ConfigError(
                f"the BEV model of parameter 'weights_dir' = {params['weights_dir']!r} uses "
                f"{list(model)}; rig {rig.source} has {sorted(in_rig)} and parameter "
                f"'drop_modalities' = {list(self._drop)}: nothing left to detect from")
        unused = [mod for mod in model if mod not in usable]
        if unused:
            self.get_logger().warning(f"the BEV model's modalities {unused} are not in the rig "
                                      f"or dropped: it runs on {usable} only")
        self.configure_inputs(rig, params)
        depth = int(params["qos.output_depth"])
        self._pubs = {"objects": self.publisher(m.DetectedObjectArray, "~/output/objects",
                                                depth)}
        if params["publish.markers"]:
            self._pubs["markers"] = self.publisher(MarkerArray, "~/debug/markers", depth)
        self._last = {}
        self._without_model_modality = 0

    def activate_node(self) -> None:
        super().activate_node()
        self._last = {}
        self._without_model_modality = 0

    def cleanup_node(self) -> None:
        super().cleanup_node()
        self._pubs = {}
        detector, self.detector = self.detector, None
        if detector is not None:
            detector.close()
        self._last = {}

    # ------------------------------------------------------------------ worker thread
    def process_set(self, sensor_set: Any, odometry: Any) -> None:
        """The BEV detector on one set, then ``~/output/objects`` and the markers."""
        from mm_perception.fusion.feature_level.processor import frame_inputs

        detector, rig = self.detector, self.rig
        if detector is None or rig is None:
            return
        raw = frame_inputs(sensor_set, rig, odometry)  # BevDetector.detect, step 1
        for note in raw.notes:
            self.get_logger().info(note, throttle_duration_sec=10.0)
        present = raw.without(*self._drop).present if self._drop else raw.present
        model = detector.model_config.modalities
        used = [mod for mod in model if present[mod]]
        self._last = {"present": [mod for mod, there in present.items() if there],
                      "used": used}
        if not used:
            self._without_model_modality += 1
            self.get_logger().warning(
                f"set at {sensor_set.stamp_ns} has none of the model's modalities "
                f"{list(model)} (present: {self._last['present']}): not published",
                throttle_duration_sec=5.0)
            return
        objects = detector.detect_frame(raw, sensor_set.stamp_ns)  # BevDetector.detect, 2
        self._last["timings_ms"] = dict(detector.timings_ms)
        frame, stamp = rig.base_frame, sensor_set.stamp_ns
        self._pubs["objects"].publish(objects_to_msg(objects, stamp, frame, FUSION_LEVEL))
        pub = self._pubs.get("markers")
        if pub is not None:
            batch = objects_to_markers(objects, stamp, frame)
            if batch.skipped and self.health is not None:
                self.health.count("markers_skipped_non_finite", batch.skipped)
            pub.publish(batch.array)

    # ------------------------------------------------------------------ status
    def backend_values(self) -> tuple[tuple[str, str], ...]:
        """The inference backend and model, as diagnostic key/values."""
        detector = self.detector
        if detector is None:
            return ()
        runtime = detector.config.runtime
        return (("inference_backend", str(detector.backend.name)),
                ("device", str(runtime.device)), ("precision", str(runtime.precision)),
                ("weights", str(detector.config.weights or "default")),
                ("model_modalities", ",".join(detector.model_config.modalities)),
                ("drop_modalities", ",".join(self._drop)))

    def sync_status_values(self) -> tuple[tuple[str, str], ...]:
        detector = self.detector
        return (("inference_backend", str(detector.backend.name) if detector else ""),)

    def extra_statuses(self) -> list[Status]:
        statuses = super().extra_statuses()
        if self.detector is None:
            return statuses
        last = self._last
        values = (*self.backend_values(),
                  ("modalities_present", ",".join(last.get("present", ()))),
                  ("modalities_used", ",".join(last.get("used", ()))),
                  ("sets_without_model_modality", str(self._without_model_modality)),
                  *((f"{k}_ms", f"{v:.2f}") for k, v in last.get("timings_ms", {}).items()))
        if not last:
            level, message = Level.OK, "no set yet"
        elif not last["used"]:
            level, message = Level.WARN, (f"last set has none of the model's modalities "
                                          f"(present: {last['present']})")
        else:
            level, message = Level.OK, f"running on {last['used']}"
        if self._without_model_modality and level is Level.OK:
            level = Level.WARN
            message += f"; {self._without_model_modality} sets without a model modality"
        return [*statuses, Status(f"{self.get_name()}: bev", level, message, values)]


def main(args: list[str] | None = None) -> None:
    """Console entry point: run one bev_fusion node, configured and activated, until Ctrl-C."""
    from mm_perception.ros.nodes.launcher import run_single_node

    run_single_node(BevFusionNode, args)


__all__ = ["FUSION_LEVEL", "BevFusionNode", "detector_config_from_params", "main",
           "runtime_from_params"]
