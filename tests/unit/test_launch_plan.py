"""Launch files and the platform configs behind them.

``launch`` / ``launch_ros`` are not on PyPI, so the launch files are executed here against
small recording stand-ins of the classes they use (the constructor keywords of the real
API): each platform node must become a lifecycle node of this package with the plan's
executable, params file, parameters and remappings, a configure event and an activate
handler. The plan itself (:func:`platform_plan`) is checked against the in-process launcher,
the console scripts of ``setup.py`` and the rig topics."""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from mm_perception.core.calibration import Rig
from mm_perception.core.errors import ConfigError
from mm_perception.ros.launch_plan import NodePlan, platform_plan
from mm_perception.ros.nodes.launcher import PlatformConfig, input_remaps

REPO = Path(__file__).resolve().parents[2]
PLATFORMS = {"vehicle": REPO / "config" / "car.yaml", "robot": REPO / "config" / "robot.yaml"}


def console_scripts() -> set[str]:
    text = (REPO / "setup.py").read_text()
    return set(re.findall(r'"([\w-]+) = mm_perception[\w.]*:main\w*"', text))


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_plan_matches_the_platform_config(platform: str) -> None:
    path = PLATFORMS[platform]
    config = PlatformConfig.from_yaml(path)
    rig = Rig.from_yaml(config.rig)
    plans = platform_plan(path, use_sim_time=True)
    assert [p.name for p in plans] == [n.name for n in config.nodes]
    scripts = console_scripts()
    for plan, entry in zip(plans, config.nodes, strict=True):
        assert plan.executable in scripts, (plan.executable, scripts)
        assert plan.params_file is not None and Path(plan.params_file).is_file()
        assert plan.parameters["use_sim_time"] is True
        assert Path(plan.parameters["rig_file"]) == config.rig.resolve()
        assert all(plan.parameters[k] == v for k, v in entry.parameters.items())
        # the same rules as the in-process launcher, every rig topic reached
        rules = input_remaps(rig)
        assert [f"{a}:={b}" for a, b in plan.remappings] == rules[1::2]
        assert {b for _, b in plan.remappings} >= {s.topic for s in rig.sensors.values()}
        assert "--no-autostart" in plan.arguments  # launch drives the transitions


def test_plan_of_a_bad_platform_config_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("platform: x\nrig: rigs/none.yaml\nnodes: [{name: a, kind: pipeline}]\n")
    with pytest.raises(ConfigError, match="rig file"):
        platform_plan(bad)


# ---------------------------------------------------------------- launch-file stand-ins
class _Recorded:
    """Keeps its constructor arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


class _LaunchConfiguration(_Recorded):
    def perform(self, context: dict[str, str]) -> str:
        return context[self.args[0]]


@pytest.fixture
def fake_launch(monkeypatch: pytest.MonkeyPatch) -> dict[str, type]:
    """``launch``, ``launch_ros`` and ``lifecycle_msgs`` stand-ins in ``sys.modules``."""
    classes: dict[str, type] = {}
    layout = {"launch": ["LaunchDescription"],
              "launch.actions": ["DeclareLaunchArgument", "EmitEvent", "ExecuteProcess",
                                 "OpaqueFunction", "RegisterEventHandler"],
              "launch.substitutions": [],
              "launch_ros": [], "launch_ros.actions": ["LifecycleNode"],
              "launch_ros.event_handlers": ["OnStateTransition"],
              "launch_ros.events": [], "launch_ros.events.lifecycle": ["ChangeState"]}
    for module_name, names in layout.items():
        module = types.ModuleType(module_name)
        for name in names:
            cls = type(name, (_Recorded,), {})
            setattr(module, name, cls)
            classes[name] = cls
        monkeypatch.setitem(sys.modules, module_name, module)
    sys.modules["launch.substitutions"].LaunchConfiguration = (  # type: ignore[attr-defined]
        _LaunchConfiguration)
    # the real lifecycle_msgs where ROS is installed: a stand-in package without its
    # ``srv`` module would break a later ``import rclpy.lifecycle`` in the same test (it
    # failed so when this file ran before any other test had imported rclpy.lifecycle)
    try:
        importlib.import_module("lifecycle_msgs.msg")
    except ImportError:
        # lifecycle_msgs/msg/Transition.msg: TRANSITION_CONFIGURE = 1, TRANSITION_ACTIVATE = 3
        msgs = types.ModuleType("lifecycle_msgs.msg")
        msgs.Transition = type("Transition", (), {  # type: ignore[attr-defined]
            "TRANSITION_CONFIGURE": 1, "TRANSITION_ACTIVATE": 3})
        monkeypatch.setitem(sys.modules, "lifecycle_msgs", types.ModuleType("lifecycle_msgs"))
        monkeypatch.setitem(sys.modules, "lifecycle_msgs.msg", msgs)
    return classes


def _run_launch_file(name: str, context: dict[str, str]) -> tuple[list[Any], dict[str, Any]]:
    """Execute ``launch/<name>.launch.py``: (actions after the opaque functions ran, declared
    arguments with their defaults)."""
    path = REPO / "launch" / f"{name}.launch.py"
    spec = importlib.util.spec_from_file_location(f"launch_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    actions = list(description.args[0])
    declared = {a.args[0]: a.kwargs.get("default_value") for a in actions
                if type(a).__name__ == "DeclareLaunchArgument"}
    for arg in declared:
        assert next(a for a in actions if a.args and a.args[0] == arg).kwargs["description"]
    ctx = {k: v for k, v in declared.items() if v is not None} | context
    expanded = []
    for action in actions:
        if type(action).__name__ == "OpaqueFunction":
            expanded += action.kwargs["function"](ctx)
        else:
            expanded.append(action)
    return expanded, declared


def _check_lifecycle_nodes(actions: list[Any], plans: list[NodePlan]) -> None:
    nodes = [a for a in actions if type(a).__name__ == "LifecycleNode"]
    assert [n.kwargs["name"] for n in nodes] == [p.name for p in plans]
    for node, plan in zip(nodes, plans, strict=True):
        kw = node.kwargs
        assert kw["package"] == "mm_perception" and kw["executable"] == plan.executable
        assert kw["parameters"] == [plan.params_file, plan.parameters]
        assert kw["remappings"] == list(plan.remappings)
        assert kw["arguments"] == ["--no-autostart"]
        configure = [a for a in actions if type(a).__name__ == "EmitEvent"
                     and a.kwargs["event"].kwargs["lifecycle_node_matcher"](node)]
        assert [c.kwargs["event"].kwargs["transition_id"] for c in configure] == [1]
        handlers = [a.args[0] for a in actions if type(a).__name__ == "RegisterEventHandler"
                    and a.args[0].kwargs["target_lifecycle_node"] is node]
        assert len(handlers) == 1 and handlers[0].kwargs["goal_state"] == "inactive"
        activate = handlers[0].kwargs["entities"][0].kwargs["event"].kwargs
        assert activate["transition_id"] == 3 and activate["lifecycle_node_matcher"](node)


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_platform_launch_files_start_the_platform_graph(platform: str,
                                                        fake_launch: dict[str, type]) -> None:
    actions, declared = _run_launch_file(platform, {})
    assert set(declared) == {"config", "use_sim_time"}
    assert Path(declared["config"]).name == PLATFORMS[platform].name
    _check_lifecycle_nodes(actions, platform_plan(declared["config"], use_sim_time=False))
    actions, _ = _run_launch_file(platform, {"use_sim_time": "true"})
    _check_lifecycle_nodes(actions, platform_plan(declared["config"], use_sim_time=True))


def test_replay_launch_file_plays_the_bag_into_the_graph_on_sim_time(
        fake_launch: dict[str, type]) -> None:
    actions, declared = _run_launch_file("replay", {"bag": "/data/run1", "rate": "0.5"})
    assert declared["bag"] is None  # required
    _check_lifecycle_nodes(actions, platform_plan(declared["config"], use_sim_time=True))
    players = [a for a in actions if type(a).__name__ == "ExecuteProcess"]
    assert len(players) == 1
    cmd = players[0].kwargs["cmd"]
    assert cmd[:3] == ["mm-perception", "replay", "/data/run1"]
    assert cmd[cmd.index("--rate") + 1] == "0.5"
    assert cmd[cmd.index("--wait-for-subscribers") + 1] == "1"
    assert Path(cmd[cmd.index("--rig") + 1]).is_file()


def test_split_platform_wires_each_node_input_to_another_nodes_output() -> None:
    path = REPO / "config" / "car_split.yaml"
    config = PlatformConfig.from_yaml(path)
    plans = {p.name: p for p in platform_plan(path)}
    assert set(plans) == {"sync", "lidar_detector", "radar_detector", "camera_detector",
                          "output_fusion", "tracker", "planner", "safety_filter"}
    scripts = console_scripts()
    # the operator's latched instruction is the one input from outside the rig and the graph
    rig_topics = {s.topic for s in Rig.from_yaml(config.rig).sensors.values()} | {
        "/instruction"}
    for entry in config.nodes:
        plan = plans[entry.name]
        assert plan.executable in scripts
        # the node's own rules come first (rcl applies the first matching rule)
        assert list(plan.remappings[:len(entry.remap)]) == list(entry.remap.items())
        for src, dst in entry.remap.items():
            assert src.startswith("~/input/")
            producer = dst.split("/")[1]
            assert dst in rig_topics or (producer in plans and "/output/" in dst), (src, dst)
    # the safety filter checks the planner's chunks against the tracker's tracks
    safety = {e.name: e for e in config.nodes}["safety_filter"].remap
    assert safety["~/input/action_chunk"] == "/planner/output/action_chunk"
    assert safety["~/input/tracks"] == "/tracker/output/tracks"


def test_platform_remap_must_map_names_to_names(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text(f"platform: x\nrig: {REPO / 'config' / 'rigs' / 'car.yaml'}\n"
                   "nodes: [{name: a, kind: tracker, remap: {'~/input/objects': 3}}]\n")
    with pytest.raises(ConfigError, match="remap"):
        PlatformConfig.from_yaml(bad)
