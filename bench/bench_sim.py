"""Simulation speed of the reference scenario as a real-time factor.

Reference: the `highway` scenario (10+ agents), the car rig (one 640x480 camera at 10 Hz with
ground-truth depth and instance images, a 32-channel 1024-column LiDAR at 10 Hz, one radar at
13 Hz, odometry at 50 Hz), 20 s of simulated time. Prints the wall time and the real-time
factor (simulated seconds per wall second) of the simulation alone and of recording the bag,
and how the time splits between the sensors.

    .venv/bin/python bench/bench_sim.py [--duration 20] [--scenario highway] [--json out.json]
        [--without camera lidar radar]      # leave sensors out: what each one costs
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")

from mm_perception.core.calibration import Rig
from mm_perception.core.types import SensorKind
from mm_perception.sim.library import load_scenario
from mm_perception.sim.recorder import record_scenario
from mm_perception.sim.simulator import SimConfig, Simulator

REPO = Path(__file__).resolve().parents[1]


def _time_methods(obj: object, methods: tuple[str, ...], name: str,
                  spent: dict[str, float]) -> None:
    """Replace ``obj``'s methods by wrappers that add their run time to ``spent[name]``."""
    for method in methods:
        fn = getattr(obj, method, None)
        if fn is None:
            continue

        def timed(*args: object, _fn: object = fn, **kw: object) -> object:
            t0 = time.perf_counter()
            try:
                return _fn(*args, **kw)  # type: ignore[operator]
            finally:
                spent[name] += time.perf_counter() - t0

        setattr(obj, method, timed)


def _profile_sensors(sim: Simulator) -> dict[str, float]:
    """Wrap the sensor objects to time them (seconds per sensor)."""
    spent: dict[str, float] = defaultdict(float)
    for name, sensor in sim._sensors.items():
        # a camera renders on its own thread (_render): its time overlaps the others'
        _time_methods(sensor, ("_render", "scan"), name, spent)
        make_sweep = getattr(sensor, "sweep", None)
        if make_sweep is not None:  # a LiDAR: its slices are cast into a sweep object

            def sweep(_make: object = make_sweep, _name: str = name) -> object:
                obj = _make()  # type: ignore[operator]
                _time_methods(obj, ("cast", "finish_with_slices"), _name, spent)
                return obj

            sensor.sweep = sweep
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--scenario", default="highway")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rig", default=str(REPO / "config" / "rigs" / "car.yaml"))
    parser.add_argument("--skip-record", action="store_true", help="only the simulation")
    parser.add_argument("--no-gt-images", action="store_true",
                        help="do not render the ground-truth depth / instance images")
    parser.add_argument("--without", nargs="+", default=[], metavar="KIND",
                        choices=[k.value for k in SensorKind if k is not SensorKind.ODOMETRY],
                        help="leave the rig's sensors of these kinds out (what each costs)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    rig = Rig.from_yaml(args.rig)
    if args.without:
        rig = replace(rig, sensors={name: spec for name, spec in rig.sensors.items()
                                    if spec.kind.value not in args.without})
    scenario = load_scenario(args.scenario, args.seed)
    results: dict[str, object] = {"scenario": args.scenario, "seed": args.seed,
                                  "without": args.without,
                                  "agents": len(scenario.agents), "duration_s": args.duration}
    config = SimConfig(camera_depth=not args.no_gt_images,
                       camera_instance=not args.no_gt_images)
    results["gt_images"] = not args.no_gt_images
    with Simulator(rig, config) as sim:
        t0 = time.perf_counter()
        sim.reset(scenario)
        build = time.perf_counter() - t0
        spent = _profile_sensors(sim)
        t0 = time.perf_counter()
        outputs = 0
        for step in sim.run(args.duration):
            outputs += len(step.outputs)
        wall = time.perf_counter() - t0
    results.update({"build_s": build, "sim_wall_s": wall, "sim_rtf": args.duration / wall,
                    "outputs": outputs, "per_sensor_s": dict(spent)})
    print(f"{args.scenario} seed {args.seed}: {len(scenario.agents)} agents, "
          f"{args.duration:.0f} s simulated, model build {build:.2f} s, ground-truth "
          f"images {'off' if args.no_gt_images else 'on'}")
    print(f"{'stage':<24} {'wall s':>8} {'real-time factor':>17}")
    print(f"{'simulation only':<24} {wall:>8.2f} {args.duration / wall:>16.2f}x")
    if not args.skip_record:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            record_scenario(scenario, rig, args.duration, Path(tmp) / "bag", config)
            rec = time.perf_counter() - t0
        results.update({"record_wall_s": rec, "record_rtf": args.duration / rec})
        print(f"{'simulate + write MCAP':<24} {rec:>8.2f} {args.duration / rec:>16.2f}x")
    print("time per sensor (simulation only; cameras on their own threads, overlapping):")
    for name, sec in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<20} {sec:>8.2f} s  ({100 * sec / wall:.0f} %)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
