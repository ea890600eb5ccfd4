"""What the launch files start, as plain data: the same platform config
(``config/<platform>.yaml``) that ``mm-perception run`` starts in-process becomes one
``launch_ros`` lifecycle node per entry.

:func:`platform_plan` is pure Python (tested without a ROS install);
:func:`launch_description` turns a plan into a ``launch.LaunchDescription`` and needs
``launch`` / ``launch_ros`` (a ROS 2 install: they are not on PyPI). Each node is started with
``--no-autostart`` and driven through configure and activate by launch events, so a node that
fails to configure (a bad parameter) stays unconfigured with its error in the log instead of
being activated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mm_perception.core.calibration import Rig
from mm_perception.ros.nodes.launcher import PlatformConfig, node_remappings

#: ROS package name (launch_ros looks executables up in lib/<package>/)
PACKAGE = "mm_perception"


def executable(kind: str) -> str:
    """The console script of node kind ``kind`` (``setup.py``: ``<kind>_node``)."""
    return f"{kind}_node"


@dataclass(frozen=True)
class NodePlan:
    """One node to launch.

    Attributes:
        name: ROS node name.
        executable: console script in ``lib/mm_perception``.
        params_file: ROS params file (None: schema defaults).
        parameters: parameters set after the file (``rig_file``, ``use_sim_time``,
            the platform's overrides).
        remappings: ``(from, to)`` pairs, ``~/input/<sensor>`` -> the rig topic.
        arguments: command-line arguments before ``--ros-args``.
    """

    name: str
    executable: str
    params_file: str | None
    parameters: dict[str, Any]
    remappings: tuple[tuple[str, str], ...]
    arguments: tuple[str, ...] = ("--no-autostart",)


def platform_plan(config: str | Path, use_sim_time: bool = False) -> list[NodePlan]:
    """The nodes of a platform config, as :func:`~mm_perception.ros.nodes.launcher.create_nodes`
    builds them in-process (same params files, rig, remappings).

    Raises:
        ConfigError: a bad platform config (see ``PlatformConfig``).
    """
    platform = PlatformConfig.from_yaml(config)
    rig = Rig.from_yaml(platform.rig)
    return [NodePlan(name=entry.name, executable=executable(entry.kind),
                     params_file=None if entry.params is None else str(entry.params.resolve()),
                     parameters={"rig_file": str(platform.rig.resolve()), **entry.parameters,
                                 "use_sim_time": use_sim_time},
                     remappings=tuple(node_remappings(entry, rig)))
            for entry in platform.nodes]


def launch_description(plan_of: Any, extra: list[Any] | None = None,
                       arguments: list[Any] | None = None) -> Any:
    """A ``LaunchDescription`` starting the nodes of a plan as lifecycle nodes, configured and
    then activated automatically.

    Args:
        plan_of: ``context -> list[NodePlan]``, called when the launch arguments are known.
        extra: more launch actions (e.g. a bag player), started with the nodes.
        arguments: ``DeclareLaunchArgument`` actions, first in the description.
    """
    from launch.actions import EmitEvent, OpaqueFunction, RegisterEventHandler
    from launch_ros.actions import LifecycleNode
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    # (the repository's launch/ folder looks like a namespace package "launch" to mypy)
    from launch import LaunchDescription  # type: ignore[attr-defined, unused-ignore]

    def nodes(context: Any) -> list[Any]:
        actions: list[Any] = []
        for plan in plan_of(context):
            params: list[Any] = [plan.params_file] if plan.params_file else []
            node = LifecycleNode(
                package=PACKAGE, executable=plan.executable, name=plan.name, namespace="",
                parameters=[*params, plan.parameters], remappings=list(plan.remappings),
                arguments=list(plan.arguments), output="screen")

            def is_node(action: Any, node: Any = node) -> bool:
                return action is node

            actions += [
                node,
                RegisterEventHandler(OnStateTransition(
                    target_lifecycle_node=node, goal_state="inactive",
                    entities=[EmitEvent(event=ChangeState(
                        lifecycle_node_matcher=is_node,
                        transition_id=Transition.TRANSITION_ACTIVATE))])),
                EmitEvent(event=ChangeState(lifecycle_node_matcher=is_node,
                                            transition_id=Transition.TRANSITION_CONFIGURE)),
            ]
        return actions

    return LaunchDescription([*(arguments or []), OpaqueFunction(function=nodes),
                              *(extra or [])])


def platform_launch(default_config: str) -> Any:
    """The description of ``vehicle.launch.py`` / ``robot.launch.py``: arguments ``config``
    (platform YAML; default: ``default_config`` in the package's config directory) and
    ``use_sim_time``."""
    from launch.actions import DeclareLaunchArgument
    from launch.substitutions import LaunchConfiguration

    from mm_perception.ros.params import config_dir

    def plan_of(context: Any) -> list[NodePlan]:
        config = LaunchConfiguration("config").perform(context)
        sim = LaunchConfiguration("use_sim_time").perform(context).lower() == "true"
        return platform_plan(config, use_sim_time=sim)

    return launch_description(plan_of, arguments=[
        DeclareLaunchArgument("config", default_value=str(config_dir() / default_config),
                              description="platform config: rig and nodes (config/*.yaml)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="follow /clock (a bag replayed by another process)"),
    ])


def replay_launch() -> Any:
    """The description of ``replay.launch.py``: the platform graph on sim time plus
    ``mm-perception replay`` of ``bag`` (arguments ``bag``, ``config``, ``rate``); the player
    waits until the graph subscribes to every topic."""
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
    from launch.substitutions import LaunchConfiguration

    from mm_perception.ros.params import config_dir

    def plan_of(context: Any) -> list[NodePlan]:
        return platform_plan(LaunchConfiguration("config").perform(context), use_sim_time=True)

    def player(context: Any) -> list[Any]:
        platform = PlatformConfig.from_yaml(LaunchConfiguration("config").perform(context))
        return [ExecuteProcess(cmd=[
            "mm-perception", "replay", LaunchConfiguration("bag").perform(context),
            "--rig", str(platform.rig), "--rate", LaunchConfiguration("rate").perform(context),
            "--wait-for-subscribers", "1"], output="screen")]

    return launch_description(plan_of, extra=[OpaqueFunction(function=player)], arguments=[
        DeclareLaunchArgument("bag", description="rosbag2 directory (sqlite3 or MCAP) to "
                                                 "replay"),
        DeclareLaunchArgument("config", default_value=str(config_dir() / "car.yaml"),
                              description="platform config: rig and nodes (config/*.yaml)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="replay rate factor"),
    ])


__all__ = ["PACKAGE", "NodePlan", "executable", "launch_description", "platform_launch",
           "platform_plan", "replay_launch"]
