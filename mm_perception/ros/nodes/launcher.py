"""Start mm_perception graphs without ``ros2 launch``: one node from its console script, or a
whole platform graph in-process (``mm-perception run --config config/<platform>.yaml``).

A platform config (``config/car.yaml``, ``config/robot.yaml``) names the rig and the nodes::

    platform: car
    rig: rigs/car.yaml                 # relative to this file's directory
    nodes:
      - name: pipeline                 # ROS node name
        kind: pipeline                 # node class (see NODE_KINDS)
        params: pipeline.param.yaml    # ROS params file, relative to this file's directory
        parameters: {publish.markers: true}   # overrides (dotted names)
        remap: {"~/input/objects": /fusion/output/objects}   # node-to-node wiring

Every node gets ``--params-file``, ``rig_file`` (the platform's rig), ``use_sim_time`` when a
bag is replayed, its own ``remap`` rules (first: they win), and one remapping per rig sensor
input, ``~/input/<sensor>:=<rig topic>`` (and ``~/input/<camera>/camera_info``), so it
listens to the rig's real topics. The launch
files in ``launch/`` start the same graph with ``launch_ros`` on a ROS install.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mm_perception.core.calibration import Rig
from mm_perception.core.errors import ConfigError
from mm_perception.core.types import SensorKind
from mm_perception.ros.signals import stop_on_signals

LOG = logging.getLogger(__name__)


def node_kinds() -> dict[str, type]:
    """Node kind (the platform config's ``kind``) -> node class."""
    from mm_perception.ros.nodes.bev_fusion_node import BevFusionNode
    from mm_perception.ros.nodes.detector_nodes import (
        CameraDetectorNode,
        LidarDetectorNode,
        RadarDetectorNode,
    )
    from mm_perception.ros.nodes.output_fusion_node import OutputFusionNode
    from mm_perception.ros.nodes.pipeline_node import PipelineNode
    from mm_perception.ros.nodes.planner_node import PlannerNode
    from mm_perception.ros.nodes.safety_filter_node import SafetyFilterNode
    from mm_perception.ros.nodes.sync_node import SyncNode
    from mm_perception.ros.nodes.tracker_node import TrackerNode

    return {"pipeline": PipelineNode, "sync": SyncNode,
            "lidar_detector": LidarDetectorNode, "radar_detector": RadarDetectorNode,
            "camera_detector": CameraDetectorNode, "output_fusion": OutputFusionNode,
            "tracker": TrackerNode, "bev_fusion": BevFusionNode, "planner": PlannerNode,
            "safety_filter": SafetyFilterNode}


@dataclass(frozen=True)
class NodeEntry:
    """One node of a platform graph (see the module docstring)."""

    name: str
    kind: str
    params: Path | None
    parameters: dict[str, Any] = field(default_factory=dict)
    remap: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlatformConfig:
    """A platform graph: rig and nodes.

    Raises:
        ConfigError: missing keys, unknown node kinds, missing files; the message names them.
    """

    platform: str
    rig: Path
    nodes: tuple[NodeEntry, ...]
    source: Path | None = None

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ConfigError(f"{self.source}: a platform needs at least one node")
        kinds = node_kinds()
        names = [n.name for n in self.nodes]
        for entry in self.nodes:
            if entry.kind not in kinds:
                raise ConfigError(f"{self.source}: node {entry.name!r} has unknown kind "
                                  f"{entry.kind!r}; known: {sorted(kinds)}")
            if names.count(entry.name) > 1:
                raise ConfigError(f"{self.source}: node name {entry.name!r} is used twice")
            if entry.params is not None and not entry.params.is_file():
                raise ConfigError(f"{self.source}: params file {entry.params} of node "
                                  f"{entry.name!r} does not exist")
        if not self.rig.is_file():
            raise ConfigError(f"{self.source}: rig file {self.rig} does not exist")

    @classmethod
    def from_yaml(cls, path: str | Path) -> PlatformConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read platform config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping with platform, rig and nodes")
        unknown = set(data) - {"platform", "rig", "nodes", "description"}
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
        for key in ("platform", "rig", "nodes"):
            if key not in data:
                raise ConfigError(f"{path}: missing key {key!r}")
        if not isinstance(data["nodes"], list):
            raise ConfigError(f"{path}: 'nodes' must be a list")
        base = path.parent
        entries = []
        for i, item in enumerate(data["nodes"]):
            if not isinstance(item, dict) or "name" not in item or "kind" not in item:
                raise ConfigError(f"{path}: nodes[{i}] needs 'name' and 'kind', got {item!r}")
            extra = set(item) - {"name", "kind", "params", "parameters", "remap"}
            if extra:
                raise ConfigError(f"{path}: nodes[{i}] has unknown keys {sorted(extra)}")
            overrides = item.get("parameters") or {}
            if not isinstance(overrides, dict):
                raise ConfigError(f"{path}: nodes[{i}].parameters must be a mapping")
            remap = item.get("remap") or {}
            if not isinstance(remap, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) and k and v
                    for k, v in remap.items()):
                raise ConfigError(f"{path}: nodes[{i}].remap must map topic names to topic "
                                  f"names, got {remap!r}")
            entries.append(NodeEntry(str(item["name"]), str(item["kind"]),
                                     base / item["params"] if item.get("params") else None,
                                     dict(overrides), dict(remap)))
        return cls(str(data["platform"]), base / str(data["rig"]), tuple(entries), path)


def input_remappings(rig: Rig) -> list[tuple[str, str]]:
    """``(~/input/<sensor>, rig topic)`` for every rig sensor (and
    ``~/input/<camera>/camera_info`` for cameras that have one)."""
    pairs = []
    for spec in rig.sensors.values():
        pairs.append((f"~/input/{spec.name}", spec.topic))
        if spec.kind is SensorKind.CAMERA and spec.camera_info_topic:
            pairs.append((f"~/input/{spec.name}/camera_info", spec.camera_info_topic))
    return pairs


def input_remaps(rig: Rig) -> list[str]:
    """``--ros-args`` remapping rules of :func:`input_remappings`."""
    return [a for src, dst in input_remappings(rig) for a in ("-r", f"{src}:={dst}")]


def node_remappings(entry: NodeEntry, rig: Rig) -> list[tuple[str, str]]:
    """A node's remapping pairs: its platform ``remap`` (first: the first matching rule
    wins), then the rig inputs of :func:`input_remappings`."""
    return [*entry.remap.items(), *input_remappings(rig)]


def node_remaps(entry: NodeEntry, rig: Rig) -> list[str]:
    """``--ros-args`` rules of :func:`node_remappings`."""
    return [a for src, dst in node_remappings(entry, rig) for a in ("-r", f"{src}:={dst}")]


def create_nodes(platform: PlatformConfig, context: Any, use_sim_time: bool = False,
                 extra_parameters: dict[str, Any] | None = None) -> list[Any]:
    """The platform's nodes, constructed (unconfigured) in ``context``."""
    from rclpy.parameter import Parameter

    rig = Rig.from_yaml(platform.rig)
    kinds = node_kinds()
    nodes = []
    for entry in platform.nodes:
        args = ["--ros-args", *node_remaps(entry, rig)]
        if entry.params is not None:
            args += ["--params-file", str(entry.params)]
        values = {"rig_file": str(platform.rig.resolve()), **entry.parameters,
                  **(extra_parameters or {})}
        overrides = [Parameter(k, value=v) for k, v in values.items()]
        overrides.append(Parameter("use_sim_time", value=use_sim_time))
        nodes.append(kinds[entry.kind](entry.name, context=context, cli_args=args,
                                       parameter_overrides=overrides))
    return nodes


def bring_up(nodes: list[Any]) -> None:
    """configure + activate every node, in order.

    Raises:
        ConfigError: a node failed a transition (its log line says why).
    """
    from rclpy.lifecycle import TransitionCallbackReturn

    for node in nodes:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise ConfigError(f"node {node.get_name()!r} failed to configure (see its log)")
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise ConfigError(f"node {node.get_name()!r} failed to activate (see its log)")


def bring_down(nodes: list[Any]) -> None:
    """deactivate + cleanup + destroy, in reverse order, whatever state each node is in."""
    for node in reversed(nodes):
        label = node._state_machine.current_state[1]
        try:
            if label == "active":
                node.trigger_deactivate()
                label = "inactive"
            if label == "inactive":
                node.trigger_cleanup()
        finally:
            node.destroy_node()


def graph_summary(nodes: list[Any]) -> dict[str, Any]:
    """Counters and timing percentiles of every node (JSON-ready)."""
    out: dict[str, Any] = {}
    for node in nodes:
        entry: dict[str, Any] = {"counts": dict(getattr(node, "_counts", {}))}
        if node.health is not None:
            for key in ("processing_ms", "latency_ms"):
                entry[key] = node.health.percentiles(key)
            entry["inputs"] = {name: {"received": s.received, "dropped": dict(s.dropped),
                                      "stale_events": s.stale_events}
                               for name, s in node.health.streams.items()}
        out[node.get_name()] = entry
    return out


def run_graph(config_path: str | Path, bag: str | Path | None = None, rate: float = 1.0,
              duration_s: float | None = None, drain_s: float = 2.0,
              summary_path: str | Path | None = None,
              use_sim_time: bool = False,
              parameters: dict[str, Any] | None = None,
              executor_kind: str = "single") -> dict[str, Any]:
    """Run a platform graph in-process on one executor (:func:`make_executor`).

    With ``bag``: the bag is replayed (``/clock`` and sim time) from this process at
    ``rate`` and the graph stops ``drain_s`` after the bag ends. Without: runs until
    ``duration_s`` (None: until Ctrl-C), on sim time with ``use_sim_time``. ``parameters``
    are set on every node (after the params files). Returns (and writes to
    ``summary_path``) the graph summary of :func:`graph_summary`.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    from mm_perception.ros.player import BagPlayer, PlayerConfig

    platform = PlatformConfig.from_yaml(config_path)
    context = rclpy.Context()
    # no rclpy signal handler (see run_single_node); SIGINT / SIGTERM set ``stop``, checked by
    # the wait loop below and by the player
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    executor = make_executor(executor_kind, context)
    nodes: list[Any] = []
    summary: dict[str, Any] = {}
    spin: threading.Thread | None = None
    started = False
    with stop_on_signals() as stop:
        try:
            nodes = create_nodes(platform, context,
                                 use_sim_time=use_sim_time or bag is not None,
                                 extra_parameters=parameters)
            for node in nodes:
                executor.add_node(node)
            spin = threading.Thread(target=_spin, args=(executor,), daemon=True)
            spin.start()
            bring_up(nodes)
            started = True
            if bag is not None and not stop.is_set():
                player_node = rclpy.create_node("mm_perception_player", context=context)
                stats = BagPlayer(bag, PlayerConfig(rate=rate), node=player_node,
                                  stop=stop).play()
                player_node.destroy_node()
                summary["player"] = {"published": dict(stats.published),
                                     "errors": stats.errors, "stopped": stats.stopped}
                stop.wait(drain_s)  # let the last sets through the worker (bounded)
            else:
                stop.wait(duration_s)  # None: until a signal
        except ExternalShutdownException:
            pass
        finally:
            # the summary is written before the nodes are walked down, so that it is there
            # even when a node is slow to clean up (none when the graph never came up)
            summary["nodes"] = graph_summary(nodes)
            if summary_path is not None and started:
                Path(summary_path).write_text(json.dumps(summary, indent=2, default=str))
            bring_down(nodes)
            executor.shutdown()
            context.try_shutdown()
            # a spin thread still inside rcl's wait at interpreter exit aborts the process
            # ("terminate called without an active exception"): let it leave first
            if spin is not None:
                spin.join(timeout=10.0)
    return summary


#: executor kinds of :func:`make_executor`
EXECUTORS = ("single", "multi")


def make_executor(kind: str, context: Any = None) -> Any:
    """The executor the graph's nodes spin on.

    ``single`` (the default of ``run``): one ``SingleThreadedExecutor`` thread runs every
    node's callbacks, which only decode messages and assemble sets; each node does its heavy
    work in its own worker thread, so nodes still run concurrently. ``multi``: a
    ``MultiThreadedExecutor`` with 4 threads. Measured on the 2-core machine with a 10 Hz car
    bag under sim time (``bench/bench_live.py``), the multi-threaded executor's Python
    wait loop runs on every ``/clock`` message and holds the GIL so much that input callbacks
    and the worker starve (most sets dropped); the single-threaded one keeps up.

    Raises:
        ConfigError: unknown ``kind``.
    """
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    if kind == "single":
        return SingleThreadedExecutor(context=context)
    if kind == "multi":
        LOG.warning("executor 'multi': rclpy's MultiThreadedExecutor starved this graph when "
                    "measured (a 10 Hz car bag under sim time on 2 cores: latencies of seconds, "
                    "dropped sets); 'single' runs each node's heavy work in its own thread "
                    "anyway")
        return MultiThreadedExecutor(num_threads=4, context=context)
    raise ConfigError(f"executor must be one of {EXECUTORS}, got {kind!r}")


def _spin(executor: Any) -> None:
    from rclpy.executors import ExternalShutdownException

    with contextlib.suppress(ExternalShutdownException):
        executor.spin()


def run_single_node(node_cls: type, args: list[str] | None = None) -> None:
    """Console entry point of one node: ``rclpy.init(args)``, construct, configure and
    activate (unless ``--no-autostart`` is among the arguments before ``--ros-args``), spin
    on a single-threaded executor (see :func:`make_executor`) until Ctrl-C."""
    import sys

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    argv = list(sys.argv if args is None else args)
    autostart = "--no-autostart" not in argv
    argv = [a for a in argv if a != "--no-autostart"]
    # no rclpy signal handler: on Ctrl-C it would shut the context down under the node (a
    # lifecycle node then hangs in "deactivating"); the finally below walks the node down
    # while the context is valid
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node = node_cls()
    executor = make_executor("single")
    executor.add_node(node)
    # SIGINT / SIGTERM only set a flag that the spin loop checks every 0.1 s (see
    # mm_perception.ros.signals)
    with stop_on_signals() as stop:
        try:
            if autostart:
                bring_up([node])
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except ConfigError as exc:
            node.get_logger().fatal(str(exc))
            raise SystemExit(1) from exc
        except ExternalShutdownException:
            pass
        finally:
            bring_down([node])
            executor.shutdown()
            rclpy.try_shutdown()


__all__ = [
    "EXECUTORS",
    "NodeEntry",
    "PlatformConfig",
    "bring_down",
    "bring_up",
    "create_nodes",
    "graph_summary",
    "input_remappings",
    "input_remaps",
    "make_executor",
    "node_kinds",
    "node_remappings",
    "node_remaps",
    "run_graph",
    "run_single_node",
]
