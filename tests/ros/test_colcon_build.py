"""The README's workspace recipe: `colcon build --base-paths src/mm_perception
src/mm_perception/interfaces` in a fresh workspace builds the ament_python package (installs
config/ to share/, registers the package in the ament index, the installed `mm-perception`
entry point runs) and the ament_cmake interface package mm_perception_msgs, whose messages
import and (de)serialise from the install space; then the pipeline lifecycle node runs from
the install space (its console script, installed params file and rig) until Ctrl-C.

colcon stops descending at a package (the repository root has package.xml), so the second
base path is what finds interfaces/mm_perception_msgs; the test also checks that the first
alone would not."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mm_perception.ros.msgs_env import interfaces_env

REPO = Path(__file__).resolve().parents[2]
#: the README's command
BASE_PATHS = ("src/mm_perception", "src/mm_perception/interfaces")


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    return [f for f in out.stdout.splitlines() if (REPO / f).is_file()]


def _ament_prefix_path() -> str:
    """AMENT_PREFIX_PATH for the build: as set (a sourced ROS 2), with the venv in front when
    the ROS 2 comes from the PyPI wheels (no ROS_DISTRO), as DESIGN.md says."""
    current = os.environ.get("AMENT_PREFIX_PATH", "")
    if os.environ.get("ROS_DISTRO"):
        return current or sys.prefix
    parts = [p for p in current.split(os.pathsep) if p and p != sys.prefix]
    return os.pathsep.join([sys.prefix, *parts])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_colcon_build_and_run_from_the_install_space(tmp_path: Path, domain_id: int) -> None:
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent)) or shutil.which(
        "colcon")
    if colcon is None:
        pytest.skip("colcon is not installed (scripts/setup.sh installs it)")
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{missing} not installed: the interface package needs a C/C++ toolchain "
                    "(scripts/setup.sh installs it with apt-get)")
    src = tmp_path / "ws" / "src" / "mm_perception"
    for rel in _tracked_files():  # what a clone of the repository holds
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    ws = tmp_path / "ws"
    env = {**os.environ, "AMENT_PREFIX_PATH": _ament_prefix_path(),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    # colcon stops at the root's package.xml: one base path does not find the interfaces
    listed = subprocess.run([colcon, "list", "--names-only", "--base-paths", BASE_PATHS[0]],
                            cwd=ws, env=env, capture_output=True, text=True, timeout=120,
                            check=True)
    assert listed.stdout.split() == ["mm_perception"]
    listed = subprocess.run([colcon, "list", "--names-only", "--base-paths", *BASE_PATHS],
                            cwd=ws, env=env, capture_output=True, text=True, timeout=120,
                            check=True)
    assert sorted(listed.stdout.split()) == ["mm_perception", "mm_perception_msgs"]
    build = subprocess.run([colcon, "build", "--base-paths", *BASE_PATHS], cwd=ws,
                           env=env, capture_output=True, text=True, timeout=840, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    install = ws / "install" / "mm_perception"
    assert (install / "share" / "ament_index" / "resource_index" / "packages"
            / "mm_perception").is_file()
    assert (install / "share" / "mm_perception" / "package.xml").is_file()
    assert (install / "share" / "mm_perception" / "config" / "rigs" / "car.yaml").is_file()
    site = next(install.glob("lib/python3*/site-packages"))
    run_env = {**env, "PYTHONPATH": f"{site}:{env.get('PYTHONPATH', '')}"}
    entry = install / "lib" / "mm_perception" / "mm-perception"
    out = subprocess.run([sys.executable, str(entry), "--help"], env=run_env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "synth-bag" in out.stdout
    # the installed package is the one that ran, not the source tree
    where = subprocess.run(
        [sys.executable, "-c", "import mm_perception; print(mm_perception.__file__)"],
        env=run_env, capture_output=True, text=True, cwd=tmp_path, check=True)
    assert str(install) in where.stdout

    # the interface package: built, indexed, and its messages usable from the install space
    msgs_install = ws / "install" / "mm_perception_msgs"
    assert (msgs_install / "share" / "ament_index" / "resource_index" / "packages"
            / "mm_perception_msgs").is_file()
    assert (msgs_install / "share" / "mm_perception_msgs" / "msg"
            / "DetectedObjectArray.msg").is_file()
    assert list((msgs_install / "lib").glob("libmm_perception_msgs__rosidl_typesupport_c.so"))
    check = (
        "import mm_perception_msgs.msg as m\n"
        "from rclpy.serialization import deserialize_message, serialize_message\n"
        "a = m.DetectedObjectArray(fusion_level='output', objects=[m.DetectedObject(\n"
        "    label=m.ObjectClassification.PEDESTRIAN, source_names=['top_lidar'])])\n"
        "b = deserialize_message(serialize_message(a), m.DetectedObjectArray)\n"
        "assert b == a, b\n"
        "libs = [line.split()[-1] for line in open('/proc/self/maps')\n"
        "        if 'libmm_perception_msgs__rosidl_typesupport' in line]\n"
        "print(m.__file__)\n"
        "print('\\n'.join(sorted(set(libs))))\n")
    # the test's own interpreter was started by the ROS wheels' bootstrapper (or a sourced ROS
    # 2), so the child keeps this LD_LIBRARY_PATH order: the install space's lib comes first
    msg_env = interfaces_env(msgs_install, run_env)
    out = subprocess.run([sys.executable, "-c", check], env=msg_env, capture_output=True,
                         text=True, cwd=tmp_path, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    module, *libs = out.stdout.split()
    assert module.startswith(str(msgs_install)), module
    assert libs, "no mm_perception_msgs type support library was loaded"
    assert all(lib.startswith(str(msgs_install)) for lib in libs), libs

    # a lifecycle node from the install space: its console script, the installed params file
    # and rig (found through the ament index), the built messages; it configures and
    # activates itself, and releases everything on Ctrl-C
    node_env = {**msg_env, "ROS_DOMAIN_ID": str(domain_id), "AMENT_PREFIX_PATH": os.pathsep.join(
        [str(install), str(msgs_install), msg_env.get("AMENT_PREFIX_PATH", "")])}
    node_env.pop("MM_PERCEPTION_CONFIG", None)
    log = tmp_path / "pipeline_node.log"
    share = install / "share" / "mm_perception" / "config"
    with log.open("w") as out_file:
        proc = subprocess.Popen(
            [sys.executable, str(install / "lib" / "mm_perception" / "pipeline_node"),
             "--ros-args", "--params-file", str(share / "pipeline.param.yaml")],
            env=node_env, cwd=tmp_path, stdout=out_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while "active" not in log.read_text().replace("inactive", ""):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=60)
    text = log.read_text()
    assert rc == 0, text
    assert "configured (pipeline)" in text and "cleaned up" in text, text
    assert "Traceback" not in text, text
