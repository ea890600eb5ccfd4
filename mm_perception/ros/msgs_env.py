"""Where the built ``mm_perception_msgs`` interface package lives, and what a process needs
to use it.

``interfaces/mm_perception_msgs`` is an ``ament_cmake`` package: its Python classes are
generated and compiled by ``colcon build``. In a source checkout ``scripts/setup.sh`` builds
it into :data:`DEFAULT_PREFIX` (``build/interfaces_install``, a colcon merge install) and
makes it usable from the venv:

* ``<venv site-packages>/mm_perception_msgs.pth`` puts the install's ``site-packages`` on
  ``sys.path``;
* with the ROS 2 PyPI wheels, the install's ``lib/libmm_perception_msgs__*.so`` are linked
  into ``<venv>/lib``. The wheels' start-up hook (``ros_wheels_bootstrapper.pth``) re-executes
  every venv interpreter once with ``<venv>/lib`` on ``LD_LIBRARY_PATH``, which is where
  rclpy's type support looks for ``libmm_perception_msgs__rosidl_typesupport_*.so`` (it
  searches ``LD_LIBRARY_PATH`` by name; the dynamic loader also reads that variable only at
  process start, so setting it from inside a running interpreter is too late).

So ``.venv/bin/python -c "import mm_perception_msgs.msg"`` works with no environment at
all. With a sourced system ROS 2 (no bootstrapper) the install's ``lib`` must be on
``LD_LIBRARY_PATH`` before the process starts: the Makefile exports it, and elsewhere
``source build/interfaces_install/setup.bash`` does. :func:`interfaces_env` builds such an
environment for a child process (e.g. one using another install space, as the colcon test
does).

This module imports neither ``rclpy`` nor the messages (design rule 1 allows it only in
``ros/``, and importing here would defeat :func:`msgs_import_error`'s purpose).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path

#: repository root of a source checkout (meaningless for an installed ``mm_perception``)
REPO_ROOT = Path(__file__).resolve().parents[2]
#: install prefix ``scripts/setup.sh`` builds the interfaces into (colcon ``--merge-install``)
DEFAULT_PREFIX = REPO_ROOT / "build" / "interfaces_install"
#: name of the interface package
PACKAGE = "mm_perception_msgs"


def site_packages(prefix: Path) -> Path | None:
    """The ``lib/python3.X/site-packages`` folder of a merge-install ``prefix``, or None
    when it holds none (not built)."""
    found = sorted(prefix.glob("lib/python3*/site-packages"))
    return found[0] if found else None


def _prepend(path: str, current: str | None) -> str:
    """``path`` in front of the ``os.pathsep`` list ``current``, without duplicating it."""
    parts = [p for p in (current or "").split(os.pathsep) if p and p != path]
    return os.pathsep.join([path, *parts])


def interfaces_env(prefix: Path = DEFAULT_PREFIX,
                   base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process that imports the messages of ``prefix`` first.

    Args:
        prefix: a colcon merge install holding ``mm_perception_msgs`` (for an isolated
            install, pass ``<install>/mm_perception_msgs``).
        base: the environment to extend; ``os.environ`` when None.

    Returns:
        a copy of ``base`` with ``prefix/lib`` in front of ``LD_LIBRARY_PATH``, its
        site-packages in front of ``PYTHONPATH`` and ``prefix`` in front of
        ``AMENT_PREFIX_PATH``. When ``base`` carries the ROS wheels' bootstrap flag the child
        is not re-executed, so the order given here is the order the loader uses.

    Raises:
        FileNotFoundError: ``prefix`` holds no built Python package (run
            ``scripts/setup.sh`` or ``colcon build``).
    """
    site = site_packages(prefix)
    if site is None or not (site / PACKAGE).is_dir():
        raise FileNotFoundError(
            f"no built {PACKAGE} under {prefix} (expected lib/python3*/site-packages/"
            f"{PACKAGE}); run scripts/setup.sh or colcon build")
    env = dict(os.environ if base is None else base)
    env["LD_LIBRARY_PATH"] = _prepend(str(prefix / "lib"), env.get("LD_LIBRARY_PATH"))
    env["PYTHONPATH"] = _prepend(str(site), env.get("PYTHONPATH"))
    env["AMENT_PREFIX_PATH"] = _prepend(str(prefix), env.get("AMENT_PREFIX_PATH"))
    return env


def msgs_import_error() -> str | None:
    """None when ``mm_perception_msgs.msg`` imports and its C type support loads, else a
    one-line reason that names the fix.

    Loading the type support is what needs ``LD_LIBRARY_PATH``; a bare import only needs
    ``sys.path``, so both are checked (the second by serialising an empty
    ``DetectedObjectArray``). Imports rclpy: call it from ROS code and tests only.
    """
    try:
        msgs = importlib.import_module(f"{PACKAGE}.msg")
    except ImportError as exc:
        return (f"{PACKAGE} is not importable ({exc}); scripts/setup.sh builds it into "
                f"{DEFAULT_PREFIX}, or source a colcon install space that has it")
    try:
        serialization = importlib.import_module("rclpy.serialization")
        # loads the C type support and, through the RMW, the fastrtps type support library
        serialization.serialize_message(msgs.DetectedObjectArray())
    except Exception as exc:  # any failure here means the same fix
        return (f"{PACKAGE} imports but its type support does not load "
                f"({type(exc).__name__}: {exc}); put the install's lib folder on "
                f"LD_LIBRARY_PATH before the process starts (LD_LIBRARY_PATH="
                f"{os.environ.get('LD_LIBRARY_PATH', '')!r})")
    return None


__all__ = ["DEFAULT_PREFIX", "PACKAGE", "REPO_ROOT", "interfaces_env", "msgs_import_error",
           "site_packages"]
