"""Split ``planner`` node: one action chunk every ``plan_period_s`` from the stack's tracks,
the odometry, the camera image, the instruction and a static map (parameters:
``config/schema/planner.schema.json``).

**The output is unfiltered.** ``~/output/action_chunk`` is the planner's raw chunk
(``safety_status`` PASSED, ``safety_reason`` empty: nobody has checked it); it must go
through the ``safety_filter`` node (its ``~/input/action_chunk``) before a controller may
execute anything.

Inputs:

* ``~/input/odom`` (``nav_msgs/Odometry``, sensor-data QoS): the ego state; its frame
  (``odom``) is the world frame of the chunk;
* ``~/input/tracks`` (``mm_perception_msgs/TrackedObjectArray``, reliable,
  ``qos.input_depth``; the ``tracker`` node's ``~/output/tracks``), moved into the odometry
  frame with the odometry pose at their stamp
  (:class:`~mm_perception.ros.nodes.plan_inputs.PlanningInputs`);
* ``~/input/image`` (``sensor_msgs/Image`` or the rig camera's ``CompressedImage``,
  sensor-data QoS, depth 1, optional): the newest frame of the rig camera ``camera``,
  decoded only when a plan uses it;
* ``~/input/instruction`` (``std_msgs/String``, reliable + transient local: a latched
  instruction published before the node started arrives). Any bytes, any length: the
  planners clean it (:func:`~mm_perception.planning.instructions.clean_instruction`).

Per plan (timer on the node clock), once odometry, tracks and (``require_instruction``) an
instruction are there, the node builds the
:class:`~mm_perception.planning.observation.PlannerObservation` the closed loop builds
(:mod:`mm_perception.planning.closed_loop`): stamp and ego = the newest odometry state; the
tracks as planner :class:`~mm_perception.planning.observation.SceneObject` s in ``base_link``
at that stamp, with colours from the image
(:func:`~mm_perception.planning.perception_loop.scene_objects`); the map lanes of
:func:`~mm_perception.planning.sim_bridge.map_lanes` around the ego pose, without a route
(the route is privileged, as in the closed loop), from the static map of ``map.file`` (a
scenario or layout YAML, coordinates in ``map.frame``; no map or odometry in another frame:
no lanes, and a WARN diagnostic). Then ``planner.plan`` and one ``ActionChunk``
(:func:`~mm_perception.ros.convert_chunk.trajectory_to_chunk`: odometry frame, stamped at the
observation, ``source_planner`` = the planner's name, ``instruction`` = the cleaned
instruction). Latency is measured from the tracks' stamp (the sensor set the plan rests on).

Planners (``planner``): ``vla`` / ``vla-no-language`` (``vla.weights_dir``, ``vla.backend``;
loaded and warmed up at configure) and ``rules`` (no weights, ignores the instruction). The
privileged ``expert`` reads the simulator's ground truth and the episode's route, which a live
robot does not have: it is refused at configure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mm_perception.core.errors import ConfigError, ConversionError
from mm_perception.core.types import EgoState, SensorKind
from mm_perception.ros.nodes.base import ManagedNode, sensor_qos
from mm_perception.ros.nodes.health import Level, Status
from mm_perception.ros.nodes.plan_inputs import (
    ODOM,
    TRACKS,
    PlanningInputs,
    instruction_qos,
)
from mm_perception.ros.sensor_decoder import drop_reason

#: planners the node runs live
LIVE_PLANNERS = ("vla", "vla-no-language", "rules")
IMAGE = "image"


@dataclass(frozen=True)
class PlannerNodeConfig:
    """What the planner node runs (from its validated parameters).

    Attributes:
        planner: one of :data:`LIVE_PLANNERS`.
        weights_dir: VLA weights folder (None: the shipped weights).
        backend: VLA inference backend (``torch`` or ``onnxruntime``).
        plan_period_s: seconds between plans (node clock).
        require_instruction: plan only once an instruction arrived.
        map_file: the static map's YAML (None: no map).
        map_frame: the frame of the map's coordinates.
        camera: rig camera of the image input ("" : the first calibrated camera).

    Raises:
        ConfigError: naming the parameter: the expert (needs ground truth), an unknown
            planner, a non-positive period.
    """

    planner: str = "vla"
    weights_dir: str | None = None
    backend: str = "torch"
    plan_period_s: float = 0.5
    require_instruction: bool = True
    map_file: str | None = None
    map_frame: str = "odom"
    camera: str = ""

    def __post_init__(self) -> None:
        if self.planner == "expert":
            raise ConfigError("parameter 'planner' = 'expert': the privileged expert plans "
                              "from the simulator's ground truth (every agent and the "
                              "episode's route), which a live robot does not have; use one "
                              f"of {list(LIVE_PLANNERS)}")
        if self.planner not in LIVE_PLANNERS:
            raise ConfigError(f"parameter 'planner' = {self.planner!r} is not a live planner; "
                              f"known: {list(LIVE_PLANNERS)}")
        if not self.plan_period_s > 0:
            raise ConfigError(f"parameter 'plan_period_s' must be > 0 s, got "
                              f"{self.plan_period_s!r}")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PlannerNodeConfig:
        return cls(planner=str(params["planner"]),
                   weights_dir=str(params["vla.weights_dir"]) or None,
                   backend=str(params["vla.backend"]),
                   plan_period_s=float(params["plan_period_s"]),
                   require_instruction=bool(params["require_instruction"]),
                   map_file=str(params["map.file"]) or None,
                   map_frame=str(params["map.frame"]), camera=str(params["camera"]))


def build_planner(config: PlannerNodeConfig) -> Any:
    """The planner of ``config`` (:func:`~mm_perception.planning.drive.make_planner`).

    Raises:
        ConfigError: weights that cannot be loaded (naming ``vla.weights_dir`` /
            ``vla.backend``).
    """
    from mm_perception.planning.drive import make_planner

    try:
        return make_planner(config.planner, None, config.weights_dir, config.backend, None, {})
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError
        raise ConfigError(f"parameters 'vla.weights_dir' = {config.weights_dir or ''!r}, "
                          f"'vla.backend' = {config.backend!r}: cannot load the "
                          f"{config.planner} planner: {exc}") from exc


def warm_up(planner: Any, frame_id: str) -> None:
    """Plan once on an empty scene (loads lazily built parts, e.g. the VLA's text encoder,
    so that the first live plan is not seconds late)."""
    from mm_perception.core.geometry import SE3
    from mm_perception.planning.observation import PlannerObservation

    ego = EgoState(0, frame_id, "base_link", SE3.from_xy_yaw(0.0, 0.0, 0.0, 0.0),
                   np.zeros(3), np.zeros(3))
    planner.plan(PlannerObservation(0, ego, "", None, None))
    planner.reset()


class PlannerNode(ManagedNode):
    """Odometry + tracks + image + instruction + map -> raw action chunks (see the module
    docstring)."""

    KIND = "planner"

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.rig: Any = None
        self.config: PlannerNodeConfig | None = None
        self.planner: Any = None
        self.layout: Any = None
        self.inputs: PlanningInputs | None = None
        self._camera: tuple[Any, Any] | None = None
        self._camera_name: str | None = None
        self._pub: Any = None
        self._image_msg: Any = None
        self._image: tuple[Any, np.ndarray | None] | None = None  # (msg, decoded rgb)
        self._waiting: tuple[str, ...] = ()
        self._lanes: tuple[str, ...] = ()
        self._last_error: str | None = None
        self._counts = {"planned": 0, "failed": 0, "waiting": 0, "no_lanes": 0,
                        "map_frame_mismatch": 0}

    # ------------------------------------------------------------------ configure
    def configure_node(self, params: dict[str, Any]) -> None:
        import mm_perception_msgs.msg as m

        from mm_perception.planning.sim_bridge import load_layout
        from mm_perception.ros.nodes.set_input import load_live_rig, resolve_path, rig_sensor

        config = PlannerNodeConfig.from_params(params)
        rig = load_live_rig(params["rig_file"])
        if config.camera:
            spec = rig_sensor(rig, config.camera, (SensorKind.CAMERA,), "camera")
        else:
            cams = [s for s in rig.of_kind(SensorKind.CAMERA)
                    if s.intrinsics is not None and s.extrinsics is not None]
            spec = cams[0] if cams else None
        if spec is not None and spec.intrinsics is not None and spec.extrinsics is not None:
            self._camera = (spec.intrinsics, spec.extrinsics.inverse())
            self._camera_name = spec.name
        elif spec is not None:
            raise ConfigError(f"parameter 'camera' = {config.camera!r}: the camera has no "
                              f"intrinsics / extrinsics in rig {rig.source}")
        if config.map_file is not None:
            try:
                self.layout = load_layout(resolve_path(config.map_file))
            except ConfigError as exc:
                raise ConfigError(f"parameter 'map.file' = {config.map_file!r}: {exc}"
                                  ) from exc
        self.planner = build_planner(config)
        warm_up(self.planner, config.map_frame)
        self.rig, self.config = rig, config
        self._pub = self.publisher(m.ActionChunk, "~/output/action_chunk",
                                   int(params["qos.output_depth"]))

    def health_streams(self) -> dict[str, bool]:
        return {ODOM: True, TRACKS: True, IMAGE: False}

    # ------------------------------------------------------------------ activate
    def activate_node(self) -> None:
        import mm_perception_msgs.msg as m
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        assert self.params is not None and self.config is not None
        self.planner.reset()
        self.inputs = PlanningInputs(self.rig, self.drop)
        self._image_msg = self._image = None
        self._waiting, self._lanes, self._last_error = (), (), None
        self._counts = dict.fromkeys(self._counts, 0)
        sensor_depth = int(self.params["qos.sensor_depth"])
        self.subscribe(Odometry, "~/input/odom", self._on_odom, sensor_qos(sensor_depth))
        self.subscribe(m.TrackedObjectArray, "~/input/tracks", self._on_tracks,
                       int(self.params["qos.input_depth"]))
        compressed = False
        if self._camera_name is not None:
            model = self.rig.sensors[self._camera_name].sensor_model
            compressed = bool(getattr(model, "compressed", False))
        self.subscribe(CompressedImage if compressed else Image, "~/input/image",
                       self._on_image, sensor_qos(1))
        self.inputs.instruction_subscription = self.subscribe(
            String, "~/input/instruction", self._on_instruction, instruction_qos())
        self.every(self.config.plan_period_s, self._plan)

    def deactivate_node(self) -> None:
        self.inputs = None
        self._image_msg = self._image = None

    def cleanup_node(self) -> None:
        if self.planner is not None and hasattr(self.planner, "close"):
            self.planner.close()
        self.planner = self.layout = self.rig = self.config = self.inputs = None
        self._camera = self._camera_name = None
        self._pub = None

    # ------------------------------------------------------------------ callbacks
    def _on_odom(self, msg: Any) -> None:
        if self.inputs is not None:
            self.inputs.add_odometry(msg, self.health)

    def _on_tracks(self, msg: Any) -> None:
        if self.inputs is not None:
            self.inputs.add_tracks(msg, self.health)

    def _on_image(self, msg: Any) -> None:
        if self.health is None:
            return
        self.health.received(IMAGE)
        self._image_msg = msg

    def _on_instruction(self, msg: Any) -> None:
        if self.inputs is None or self.health is None:
            return
        self.inputs.set_instruction(msg, self.get_clock().now().nanoseconds)
        self.health.count("instructions_received")

    # ------------------------------------------------------------------ planning
    def image_rgb(self) -> np.ndarray | None:
        """The newest camera image as ``(H, W, 3)`` uint8 RGB (decoded once per message),
        or None (none yet, no camera, or a bad frame: dropped with its reason)."""
        from mm_perception.ros.convert_image import camera_frame_from_msg

        msg = self._image_msg
        if msg is None or self._camera_name is None:
            return None
        if self._image is not None and self._image[0] is msg:
            return self._image[1]
        rgb: np.ndarray | None = None
        try:
            rgb = camera_frame_from_msg(msg, self._camera_name).rgb()
        except (ConversionError, ValueError) as exc:
            self.drop(IMAGE, drop_reason(exc), str(exc))
        self._image = (msg, rgb)
        return rgb

    def observation(self, ego: EgoState) -> Any:
        """The :class:`PlannerObservation` at the newest odometry state ``ego`` (module
        docstring)."""
        from mm_perception.planning.observation import PlannerObservation, ego_pose2
        from mm_perception.planning.perception_loop import scene_objects
        from mm_perception.planning.sim_bridge import map_lanes

        inputs, config = self.inputs, self.config
        assert inputs is not None and config is not None
        assert inputs.tracks_stamp_ns is not None
        lanes: tuple[Any, ...] = ()
        if self.layout is not None and ego.frame_id == config.map_frame:
            lanes = map_lanes(self.layout, ego_pose2(ego))
        image = self.image_rgb()
        objects = scene_objects(inputs.tracks, inputs.tracks_stamp_ns,
                                inputs.world_frame or ego.frame_id, ego, image, self._camera)
        now = self.get_clock().now().nanoseconds
        return PlannerObservation(
            stamp_ns=ego.stamp_ns, ego=ego, instruction=inputs.instruction or "",
            instruction_stamp_ns=inputs.instruction_stamp_ns(now), image=image,
            objects=objects, lanes=lanes)

    def _missing(self) -> tuple[str, ...]:
        inputs, config = self.inputs, self.config
        assert inputs is not None and config is not None
        missing = []
        if inputs.ego() is None:
            missing.append("odometry")
        if inputs.tracks_stamp_ns is None:
            missing.append("tracks")
        if config.require_instruction and inputs.instruction is None:
            missing.append("instruction")
        return tuple(missing)

    def _plan(self) -> None:
        from mm_perception.planning.instructions import clean_instruction
        from mm_perception.ros.convert_chunk import trajectory_to_chunk

        config = self.config
        if self.inputs is None or self.planner is None or self._pub is None or config is None:
            return  # a timer racing a deactivate
        self._waiting = self._missing()
        if self._waiting:
            self._counts["waiting"] += 1
            return
        ego = self.inputs.ego()
        stamp = self.inputs.tracks_stamp_ns
        assert ego is not None and stamp is not None
        t0 = time.perf_counter()
        try:
            obs = self.observation(ego)
            trajectory = self.planner.plan(obs)
            msg = trajectory_to_chunk(trajectory, 0, "", clean_instruction(obs.instruction))
        except Exception as exc:  # never die on one plan: counted, logged, diagnosed
            self._counts["failed"] += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"plan failed: {self._last_error}",
                                    throttle_duration_sec=2.0)
            return
        self._lanes = tuple(lane.role for lane in obs.lanes)
        if self.layout is not None and not obs.lanes:
            self._counts["no_lanes"] += 1
            if ego.frame_id != config.map_frame:
                self._counts["map_frame_mismatch"] += 1
                self.get_logger().warning(f"odometry in {ego.frame_id!r}, the map in "
                                          f"{config.map_frame!r}: no lanes",
                                          throttle_duration_sec=5.0)
        self._last_error = None
        self._pub.publish(msg)
        self._counts["planned"] += 1
        self.report_timing((time.perf_counter() - t0) * 1e3, stamp)

    # ------------------------------------------------------------------ status
    def extra_statuses(self) -> list[Status]:
        c, config = self._counts, self.config
        values = [(k, str(v)) for k, v in c.items()]
        if config is not None:
            values += [("planner", config.planner), ("backend", config.backend),
                       ("map", config.map_file or "none"), ("map_frame", config.map_frame)]
        values += [("lanes", ",".join(self._lanes)), ("waiting_for", ",".join(self._waiting))]
        if self.layout is not None:
            values.append(("map_kind", str(self.layout.kind)))
        if self.inputs is not None:
            values.append(("instruction_publishers",
                           str(self.inputs.instruction_publishers())))
        if self._last_error is not None:
            level, message = Level.ERROR, f"last plan failed: {self._last_error}"
        elif self._waiting:
            level, message = Level.WARN, f"waiting for {', '.join(self._waiting)}"
        elif self.layout is None:
            level, message = Level.WARN, f"{c['planned']} plans, no map: no lanes"
        elif not self._lanes and c["planned"]:
            level, message = Level.WARN, f"{c['planned']} plans, ego on no lane of the map"
        else:
            level, message = Level.OK, f"{c['planned']} plans"
        return [Status(f"{self.get_name()}: planner", level, message, tuple(values))]


def main(args: list[str] | None = None) -> None:
    """Console entry point: run one planner node, configured and activated, until Ctrl-C."""
    from mm_perception.ros.nodes.launcher import run_single_node

    run_single_node(PlannerNode, args)


__all__ = ["LIVE_PLANNERS", "PlannerNode", "PlannerNodeConfig", "build_planner", "main",
           "warm_up"]
