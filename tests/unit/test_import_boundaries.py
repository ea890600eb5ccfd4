"""DESIGN rule 1: the core never imports ROS; `core` is numpy only.

Each check runs in a fresh interpreter with an import hook that makes the blocked modules
unimportable, so a stray `import rclpy` (even a transitive one) fails the test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

ROS_MODULES = ["rclpy", "rosidl_runtime_py", "sensor_msgs", "std_msgs", "nav_msgs",
               "geometry_msgs", "builtin_interfaces", "rosgraph_msgs", "diagnostic_msgs",
               "lifecycle_msgs", "tf2_msgs", "visualization_msgs"]
HEAVY_MODULES = ["cv2", "scipy", "torch", "open3d", "mujoco", "rosbags", "yaml_not_blocked"]


def _run_blocked(blocked: list[str], imports: list[str]) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(f"""
        import importlib, importlib.abc, pkgutil, sys
        BLOCKED = {blocked!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked import of {{name}}")
                return None
        sys.meta_path.insert(0, Block())
        for mod in {imports!r}:
            importlib.import_module(mod)
            if mod.endswith(".core"):
                pkg = importlib.import_module(mod)
                for info in pkgutil.iter_modules(pkg.__path__):
                    importlib.import_module(f"{{mod}}.{{info.name}}")
        print("ok")
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)


def test_core_imports_without_ros_or_heavy_libraries() -> None:
    result = _run_blocked(ROS_MODULES + HEAVY_MODULES, ["mm_perception.core"])
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize("module", ["mm_perception.bag.reader", "mm_perception.bag.offline",
                                    "mm_perception.bag.writer", "mm_perception.bag.synthetic",
                                    "mm_perception.ros.conversions", "mm_perception.cli"])
def test_bag_and_conversions_import_without_rclpy(module: str) -> None:
    result = _run_blocked(ROS_MODULES, [module])
    assert result.returncode == 0, result.stderr


def test_the_blocker_really_blocks() -> None:
    result = _run_blocked(["rclpy"], ["mm_perception.ros.player", "rclpy"])
    assert result.returncode != 0
    assert "blocked import of rclpy" in result.stderr
