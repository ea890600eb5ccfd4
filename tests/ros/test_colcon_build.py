"""The README's workspace recipe: `colcon build --base-paths src/mm_perception` in a fresh
workspace builds the ament_python package, installs config/ to share/, registers the package
in the ament index, and the installed `mm-perception` entry point runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    return [f for f in out.stdout.splitlines() if (REPO / f).is_file()]


def test_colcon_build_and_run_from_the_install_space(tmp_path: Path) -> None:
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent)) or shutil.which(
        "colcon")
    if colcon is None:
        pytest.skip("colcon is not installed (scripts/setup.sh installs it)")
    src = tmp_path / "ws" / "src" / "mm_perception"
    for rel in _tracked_files():  # what a clone of the repository holds
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    ws = tmp_path / "ws"
    prefix = os.environ.get("AMENT_PREFIX_PATH") or sys.prefix
    env = {**os.environ, "AMENT_PREFIX_PATH": prefix,
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    build = subprocess.run([colcon, "build", "--base-paths", "src/mm_perception"], cwd=ws,
                           env=env, capture_output=True, text=True, timeout=300, check=False)
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
