"""The pipeline in a child process (the composed node's default worker), without ROS: the
first results cost no imports in the parent and the child's start-up heap is frozen (both
would land in a set's live latency)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# run in a fresh interpreter: the test process has imported everything already
SCRIPT = textwrap.dedent("""
    import json, sys, tempfile

    import numpy as np

    from mm_perception.bag.offline import OfflineConfig, OfflineReplay
    from mm_perception.bag.reader import BagSource
    from mm_perception.bag.synthetic import SyntheticConfig, write_synthetic_bag
    from mm_perception.core.calibration import Rig
    from mm_perception.ros.nodes.pipeline_process import PipelineProcess
    from mm_perception.ros.params import defaults, load_schema

    rig_file = sys.argv[1]
    params = {**defaults(load_schema("pipeline")), "rig_file": rig_file,
              "lists": ["lidar", "camera", "output"], "track_lists": ["output"]}
    rig = Rig.from_yaml(rig_file)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_bag(f"{tmp}/bag", rig, SyntheticConfig(duration_s=0.3))
        replay = OfflineReplay(rig, OfflineConfig(max_sets=2))
        with BagSource(f"{tmp}/bag") as src:
            sets = list(replay.run(src))
    child = PipelineProcess(params)
    try:
        before = set(sys.modules)
        results = [child.process(s, replay.odometry) for s in sets]
        imported = sorted(set(sys.modules) - before)
    finally:
        child.close()
    print(json.dumps({
        "imported": imported, "sets": len(sets), "lists": list(child.lists),
        "frozen": child.frozen_objects,
        "objects": [sorted(len(v) for v in r.objects.values()) for r in results],
        "camera_2d": [sorted(r.camera_2d) for r in results]}))
""")


def test_first_result_imports_nothing_in_the_parent() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "config/rigs/car.yaml")],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["sets"] == 2 and set(report["lists"]) == {"lidar", "camera", "output"}
    # the camera detector ran in the child (its 2D results came back) ...
    assert all(names == ["cam_front"] for names in report["camera_2d"])
    # ... and unpickling its results imported no module: the warm-up sample did at start
    assert report["imported"] == []
    # the child's start-up heap is out of the collector's reach (no 80 ms full collections)
    assert report["frozen"] > 10_000


def test_freeze_heap_freezes_what_is_alive() -> None:
    import gc

    from mm_perception.core.heap import freeze_heap

    kept = [object() for _ in range(1000)]
    try:
        freeze_heap()
        assert gc.get_freeze_count() >= len(kept)
    finally:
        gc.unfreeze()
