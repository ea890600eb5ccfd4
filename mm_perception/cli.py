"""``mm-perception``: command-line entry point.

Sub-commands::

    mm-perception info BAG [--rig RIG.yaml] [--json]
    mm-perception recover BAG --out FIXED.mcap [--json]   (a cut MCAP recording)
    mm-perception replay BAG [--rig RIG.yaml] [--rate R] [--loop] [--start S] [--offline]
                             [--out DIR]
    mm-perception synth-bag --rig RIG.yaml --out BAG [--duration S] [--seed N]
                             [--storage mcap|sqlite3|ros1] [--lidar-layout L] [--compressed]
    mm-perception sim --scenario NAME --seed S --duration SEC --rig RIG.yaml --out BAG
    mm-perception sim dataset --scenes N [--scenarios ...] --out DIR
    mm-perception sim demos [--suite NAME] [--seeds S ...] [--jobs N] --out DIR
    mm-perception eval --bag BAG [--bag BAG ...] --rig RIG.yaml
                       [--level data output lidar radar camera feature] --out DIR
                       [--bev-weights DIR] [--bev-attention-weights DIR]
                       [--bev-backend onnxruntime|torch]
    mm-perception train camera [...]   (see mm_perception/detection/camera/train.py)
    mm-perception train bev [...]      (see mm_perception/fusion/feature_level/train.py)
    mm-perception train vla [...]      (see mm_perception/planning/vla/train.py)
    mm-perception drive [--suite NAME] --seeds S [S ...] [--split train|heldout]
                        [--planner expert rules vla vla-no-language vlm] [--vla-weights DIR]
                        [--jobs N] --out DIR
    mm-perception run --config config/<platform>.yaml [--bag BAG] [--rate R] [--summary F]
    mm-perception record --topics T [T ...] --out BAG [--idle-timeout S] [--max-duration S]
    mm-perception demo [--out DIR]
    mm-perception build-engine MODEL.onnx [--precision fp32|fp16|int8] [--cache-dir DIR]
                       [--profile NAME=MIN,OPT,MAX ...] [--dla-core N] [--workspace-mb N]
                       [--calibration NPZ_DIR]

Errors in the input (a bad rig, a missing or corrupt bag, a bag that does not match the rig)
print one clear ``error:`` line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mm_perception.core.errors import MMPerceptionError

LOG = logging.getLogger("mm_perception")


def config_dir() -> Path:
    """The ``config/`` folder: the source tree's, else the installed ``share/`` copy."""
    here = Path(__file__).resolve().parent.parent / "config"
    if here.is_dir():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("mm_perception")) / "config"
    except Exception as exc:  # not installed through ament either
        raise MMPerceptionError(f"cannot find mm_perception's config folder ({exc})") from exc


def _ns_to_s(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / 1e9:.3f}"


# ---------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    from mm_perception.bag.reader import BagSource
    from mm_perception.core.calibration import Rig

    rig = Rig.from_yaml(args.rig) if args.rig else None
    with BagSource(args.bag) as bag:
        topics, stats = bag.summary(rig)
        layouts = bag.cloud_layouts()
        info: dict[str, Any] = {
            "bag": str(args.bag), "storage": bag.storage,
            "start_s": bag.start_ns / 1e9, "end_s": bag.end_ns / 1e9,
            "duration_s": (bag.end_ns - bag.start_ns) / 1e9,
            "messages": sum(t.count for t in topics),
            "topics": [{"topic": t.topic, "type": t.msgtype, "count": t.count,
                        "rate_hz": t.rate_hz, "first_s": None if t.first_ns is None
                        else t.first_ns / 1e9, "last_s": None if t.last_ns is None
                        else t.last_ns / 1e9, "rig_sensors": list(t.sensors)}
                       for t in topics],
            "cloud_layouts": layouts,
            "errors": stats.errors, "truncated": stats.truncated,
        }
        if rig is not None:
            present = {t.topic for t in topics}
            info["rig"] = {"source": rig.source, "sensors_without_topic": [
                s.name for s in rig.sensors.values() if s.topic not in present]}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"bag:       {info['bag']} ({info['storage']})")
    print(f"span:      {info['start_s']:.3f} .. {info['end_s']:.3f} s "
          f"({info['duration_s']:.3f} s), {info['messages']} messages")
    width = max([len(t.topic) for t in topics] + [5])
    print(f"\n{'topic':<{width}}  {'type':<32} {'count':>6} {'rate Hz':>8}  rig sensor")
    for t in topics:
        rate = "-" if t.rate_hz is None else f"{t.rate_hz:.2f}"
        print(f"{t.topic:<{width}}  {t.msgtype:<32} {t.count:>6} {rate:>8}  "
              f"{', '.join(t.sensors) or '-'}")
    for topic, layout in layouts.items():
        entry = layout[0]
        if "error" in entry:
            print(f"\n{topic}: cannot read layout: {entry['error']}")
            continue
        fields = ", ".join(f"{f['name']}:{f['datatype']}"
                           + (f"[{f['count']}]" if f["count"] != 1 else "")
                           + f"@{f['offset']}" for f in entry["fields"])
        print(f"\n{topic}: point_step {entry['point_step']}, "
              f"{'big' if entry['is_bigendian'] else 'little'}-endian, "
              f"{entry['width']}x{entry['height']}\n  fields: {fields}")
    if rig is not None and info["rig"]["sensors_without_topic"]:
        print(f"\nrig sensors with no topic in the bag: {info['rig']['sensors_without_topic']}")
    if stats.errors:
        print("\nERRORS:\n  " + "\n  ".join(stats.errors))
        return 1
    return 0


# ---------------------------------------------------------------------------- replay
def run_offline(bag_path: Path, rig_path: Path, out: Path | None) -> dict[str, Any]:
    """Offline replay of a bag through sync + ego-motion compensation; returns the summary."""
    from mm_perception.bag.offline import OfflineReplay
    from mm_perception.bag.reader import BagSource
    from mm_perception.core.calibration import Rig

    rig = Rig.from_yaml(rig_path)
    replay = OfflineReplay(rig)
    per_sensor: dict[str, int] = {}
    with BagSource(bag_path) as bag:
        for sset in replay.run(bag):
            for name in sset.present:
                per_sensor[name] = per_sensor.get(name, 0) + 1
    summary = replay.summary.as_dict()
    summary = {"bag": str(bag_path), "rig": str(rig_path),
               "sensor_counts_in_sets": per_sensor, **summary}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "replay_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_offline_summary(summary: dict[str, Any]) -> None:
    sync = summary["sync"]
    read = summary["read"]
    print(f"offline replay of {summary['bag']} with rig {summary['rig']}")
    print(f"\n{'sensor':<16} {'converted':>9} {'dropped':>8} {'in sets':>8}")
    dropped: dict[str, int] = {}
    for key, n in read["dropped"].items():
        dropped[key.split(":")[0]] = dropped.get(key.split(":")[0], 0) + n
    for name in sorted(set(read["converted"]) | set(dropped)):
        print(f"{name:<16} {read['converted'].get(name, 0):>9} {dropped.get(name, 0):>8} "
              f"{summary['sensor_counts_in_sets'].get(name, 0):>8}")
    total = summary["sets"]
    ok = summary["complete_sets"]
    print(f"\nsets: {total} ({ok} complete, {summary['partial_sets']} partial, "
          f"{sync.get('dropped_partial', 0)} partial dropped); sync success "
          f"{100.0 * ok / max(total + sync.get('dropped_partial', 0), 1):.1f} %")
    if summary["missing_in_partial_sets"]:
        print(f"missing in partial sets: {summary['missing_in_partial_sets']}")
    anomalies: dict[str, Any] = {}
    for key in ("out_of_order", "late", "duplicates", "clock_jumps", "overflow",
                "unknown_sensor", "invalid_stamp"):
        value = sync.get(key)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v}
        if value:
            anomalies[key] = value
    if anomalies:
        print(f"sync anomalies: {anomalies}")
    if summary["deskewed_clouds"] or summary["deskew_failed"]:
        print(f"deskewed clouds: {summary['deskewed_clouds']}, failed: "
              f"{summary['deskew_failed']}")
    if read["errors"]:
        print("drops/errors (first ones):\n  " + "\n  ".join(read["errors"][:10]))
    if read["truncated"]:
        print("WARNING: the bag is corrupt; replay stopped at the damage (see errors)")


def cmd_recover(args: argparse.Namespace) -> int:
    from mm_perception.bag.recover import recover_mcap

    src = Path(args.bag)
    if src.is_dir():  # a rosbag2 folder: its one MCAP file
        files = sorted(src.glob("*.mcap"))
        if len(files) != 1:
            raise MMPerceptionError(f"{src} holds {len(files)} .mcap files; pass the one to "
                                    f"recover")
        src = files[0]
    stats = recover_mcap(src, args.out)
    if args.json:
        print(json.dumps(stats.as_dict(), indent=2))
    else:
        state = "complete (rewritten)" if stats.complete else "cut"
        print(f"source:  {stats.source} ({state}; {stats.bytes_read} of "
              f"{stats.file_bytes} bytes in complete records)")
        print(f"stopped: {stats.stop_reason}")
        span = ("-" if stats.first_ns is None or stats.last_ns is None
                else f"{stats.first_ns / 1e9:.3f} .. {stats.last_ns / 1e9:.3f} s")
        print(f"wrote:   {stats.output}: {stats.message_count} messages ({span}), "
              f"{stats.from_cut_chunk} of them from the cut chunk")
        for topic, count in stats.messages.items():
            print(f"  {topic}: {count}")
        if stats.dropped:
            print(f"dropped: {stats.dropped}")
        for where in stats.damaged:
            print(f"  damaged: {where}")
    return 0 if stats.message_count else 1


def _mute_window(text: str) -> tuple[str, float, float]:
    topic, _, rest = text.rpartition("@")
    start, _, end = rest.partition(":")
    try:
        return topic, float(start), float(end)
    except ValueError as exc:
        raise MMPerceptionError(f"--mute takes TOPIC@START:END (seconds), got {text!r}") from exc


def cmd_run(args: argparse.Namespace) -> int:
    import yaml

    from mm_perception.ros.nodes.launcher import run_graph

    params: dict[str, Any] = {}
    for item in args.param or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise MMPerceptionError(f"--param takes NAME=VALUE, got {item!r}")
        params[name] = yaml.safe_load(value)
    summary = run_graph(args.config, bag=args.bag, rate=args.rate, duration_s=args.duration,
                        summary_path=args.summary, use_sim_time=args.use_sim_time,
                        parameters=params, executor_kind=args.executor)
    print(json.dumps(summary.get("nodes", {}), indent=2, default=str))
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from mm_perception.ros.recorder import READY_LINE, RecorderConfig, record

    stats = record(args.out, RecorderConfig(
        topics=tuple(args.topics), discovery_timeout_s=args.discovery_timeout,
        idle_timeout_s=args.idle_timeout, idle_topics=tuple(args.idle_topics or ()),
        max_duration_s=args.max_duration),
        on_ready=lambda: print(f"{READY_LINE} {' '.join(args.topics)}", file=sys.stderr,
                               flush=True))
    print(json.dumps(stats.as_dict(), indent=2))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    if args.offline:
        if not args.rig:
            raise MMPerceptionError("--offline needs --rig RIG.yaml (the topic map)")
        summary = run_offline(Path(args.bag), Path(args.rig),
                              Path(args.out) if args.out else None)
        print_offline_summary(summary)
        if args.out:
            print(f"\nsummary written to {Path(args.out) / 'replay_summary.json'}")
        return 1 if summary["read"]["truncated"] else 0
    from mm_perception.ros.player import PlayerConfig, play_bag

    topics: tuple[str, ...] = tuple(args.topics or ())
    if args.rig and not topics:
        # with a rig, play what the rig reads (plus tf), and only what the bag has
        from mm_perception.bag.reader import BagSource
        from mm_perception.core.calibration import Rig

        wanted = (*Rig.from_yaml(args.rig).topics(), "/tf", "/tf_static")
        with BagSource(args.bag) as bag:
            have = set(bag.topic_types())
        topics = tuple(t for t in wanted if t in have)
    config = PlayerConfig(rate=args.rate, loop=args.loop, max_loops=args.max_loops,
                          start_offset_s=args.start, topics=topics,
                          wait_for_subscribers=args.wait_for_subscribers,
                          wait_timeout_s=args.wait_timeout,
                          lead_in_s=args.lead_in,
                          mute=tuple(_mute_window(m) for m in args.mute or ()))
    try:
        stats = play_bag(args.bag, config)
    except KeyboardInterrupt:
        return 130
    print(json.dumps(stats.as_dict(), indent=2))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "play_stats.json").write_text(json.dumps(stats.as_dict(), indent=2))
    return 1 if stats.errors else 0


# ---------------------------------------------------------------------------- synth-bag
def cmd_synth_bag(args: argparse.Namespace) -> int:
    from mm_perception.bag.synthetic import SyntheticConfig, write_synthetic_bag
    from mm_perception.core.calibration import Rig
    from mm_perception.core.types import SensorKind

    rig = Rig.from_yaml(args.rig)
    # a rig whose camera model says compressed reads CompressedImage on that topic: a raw
    # Image there would be a bag the rig cannot read
    compressed = args.compressed or any(getattr(s.sensor_model, "compressed", False)
                                        for s in rig.of_kind(SensorKind.CAMERA))
    cfg = SyntheticConfig(duration_s=args.duration, seed=args.seed,
                          lidar_layout=args.lidar_layout, compressed_camera=compressed)
    counts = write_synthetic_bag(args.out, rig, cfg, storage=args.storage)
    print(f"wrote {sum(counts.values())} messages to {args.out}: {counts}")
    return 0


# ---------------------------------------------------------------------------- sim
def cmd_sim(args: argparse.Namespace) -> int:
    from mm_perception.core.calibration import Rig
    from mm_perception.sim.library import load_scenario

    if getattr(args, "list", False):
        from mm_perception.sim.library import SCENARIOS

        for name, make in SCENARIOS.items():
            scenario = make(0)
            print(f"{name:<14} {len(scenario.agents):>3} agents  {scenario.description}")
        return 0
    if getattr(args, "sim_command", None) == "demos":
        from mm_perception.planning import demos

        return int(demos.run(args))
    rig = Rig.from_yaml(args.rig)
    if getattr(args, "sim_command", None) == "dataset":
        return _sim_dataset(args, rig)
    if not args.scenario or not args.out:
        raise MMPerceptionError("sim needs --scenario NAME|FILE and --out BAG "
                                "(or: mm-perception sim dataset --scenes N --out DIR)")
    scenario = load_scenario(args.scenario, args.seed, args.platform)
    summary = _record_with_progress(scenario, rig, args.duration, Path(args.out),
                                    f"{scenario.name} seed {args.seed}")
    print(json.dumps(summary.as_dict(), indent=2))
    return 0


def _record_with_progress(scenario: Any, rig: Any, duration: float, out: Path,
                          label: str) -> Any:
    from tqdm import tqdm

    from mm_perception.sim.recorder import check_duration, record_scenario

    duration = check_duration(duration)  # before the progress bar, which cannot show < 0
    with tqdm(total=round(duration, 3), unit="sim s", desc=label, leave=False,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} sim s "
                         "[{elapsed}<{remaining}]") as bar:
        def progress(t: float) -> None:
            bar.update(round(min(t, duration), 3) - bar.n)

        return record_scenario(scenario, rig, duration, out, progress=progress)


def _sim_dataset(args: argparse.Namespace, rig: Any) -> int:
    from tqdm import tqdm

    from mm_perception.sim.library import load_scenario

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.scenarios or ["random"]
    index = []
    for i in tqdm(range(args.scenes), desc="scenes", unit="scene"):
        name = names[i % len(names)]
        seed = args.seed + i
        scenario = load_scenario(name, seed, args.platform)
        bag = out / f"scene_{i:04d}_{scenario.name}_s{seed}"
        summary = _record_with_progress(scenario, rig, args.duration, bag,
                                        f"scene {i} ({scenario.name})")
        index.append(summary.as_dict())
    (out / "dataset.json").write_text(json.dumps({"rig": str(args.rig), "scenes": index},
                                                 indent=2))
    print(f"wrote {len(index)} scenes to {out} (index: {out / 'dataset.json'})")
    return 0


# ---------------------------------------------------------------------------- eval
#: --level value -> the object lists it adds (the per-modality baselines always run)
_LEVEL_LISTS = {"data": ("data",), "output": ("output",), "lidar": ("lidar",),
                "radar": ("radar",), "camera": ("camera",), "feature": ("feature",)}
_BASELINES = ("lidar", "radar", "camera")


def _bev_models(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """``(name, weights folder)`` of the BEV models of the feature-level table: ``concat``
    (``--bev-weights``, default the committed folder) and ``attention``
    (``--bev-attention-weights``, default the committed folder when it exists)."""
    from mm_perception.fusion.feature_level.detector import WEIGHTS_ROOT

    models: list[tuple[str, str | None]] = [("concat", args.bev_weights)]
    attention = args.bev_attention_weights
    if attention is None and (WEIGHTS_ROOT / "attention").is_dir():
        attention = str(WEIGHTS_ROOT / "attention")
    if attention is not None:
        models.append(("attention", attention))
    for item in args.bev_model or ():
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise MMPerceptionError(f"--bev-model must be NAME=DIR, got {item!r}")
        models.append((name, folder))
    return models


def _bev_model_modalities(models: list[tuple[str, str | None]]) -> dict[str, tuple[str, ...]]:
    """Model name -> the modalities in its weights folder's ``config.json``."""
    from mm_perception.fusion.feature_level.config import BevModelConfig
    from mm_perception.fusion.feature_level.detector import CONFIG_FILE, DEFAULT_WEIGHTS_DIR

    out = {}
    for name, folder in models:
        path = (DEFAULT_WEIGHTS_DIR if folder is None else Path(folder)) / CONFIG_FILE
        if path.is_file():
            out[name] = BevModelConfig.load(path).modalities
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mm_perception.core.calibration import Rig
    from mm_perception.eval.feature_table import model_variants, text_table
    from mm_perception.eval.report import FEATURE_SECTION, write_report
    from mm_perception.eval.runner import EvalRunConfig, iter_bag_paths, run_evaluation
    from mm_perception.fusion.pipeline import LIST_NAMES, PipelineConfig

    rig = Rig.from_yaml(args.rig)
    bags = iter_bag_paths(args.bag)
    wanted = set(_BASELINES)
    for level in args.level:
        wanted.update(_LEVEL_LISTS[level])
    lists = tuple(n for n in LIST_NAMES if n in wanted)
    bev = None
    variants: tuple[Any, ...] = ()
    if "feature" in lists:
        from mm_perception.fusion.feature_level.detector import BevDetectorConfig
        from mm_perception.runtime import RuntimeConfig

        bev = BevDetectorConfig(weights=args.bev_weights,
                                runtime=RuntimeConfig(backend=args.bev_backend))
        models = _bev_models(args)
        variants = model_variants(models, backend=args.bev_backend,
                                  model_modalities=_bev_model_modalities(models))
    config = EvalRunConfig(pipeline=PipelineConfig(lists=lists, track_lists=lists,
                                                   camera_weights=args.camera_weights,
                                                   bev=bev),
                           max_sets_per_bag=args.max_sets, feature_variants=variants)
    with tqdm(desc="frames", unit="frame", leave=False) as bar:
        result = run_evaluation(bags, rig, config,
                                progress=lambda _bag, n: bar.update(n - bar.n))
    files = write_report(result, rig, Path(args.out))
    summary = result.summary()
    print(f"{result.num_frames} frames from {len(bags)} bag(s)")
    print(f"{'list':<8} {'carAP@2m':>9} {'mAP':>7} {'MOTA':>7} {'IDF1':>7} {'vel.err':>8}")
    for name, row in summary.items():
        def f(v: float | None) -> str:
            return "      -" if v is None else f"{v:7.3f}"
        print(f"{name:<8} {f(row['car_ap_2m']):>9} {f(row['mean_ap'])} {f(row.get('mota'))} "
              f"{f(row.get('idf1'))} {f(row.get('track_velocity_error_mps')):>8}")
    if result.feature_table:
        print(f"\n{FEATURE_SECTION}:")
        print(text_table([r.to_dict() for r in result.feature_table]))
    print(f"report: {files['markdown']} (html: {files['html']}, metrics: {files['metrics']})")
    return 0


# ---------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    if args.model == "camera":
        from mm_perception.detection.camera import train as camera_train

        parser = argparse.ArgumentParser(prog="mm-perception train camera",
                                         description="Train the camera 2D detector.")
        camera_train.add_arguments(parser)
        return int(camera_train.run(parser.parse_args(args.options)))
    if args.model == "vla":
        from mm_perception.planning.vla import train as vla_train

        parser = argparse.ArgumentParser(prog="mm-perception train vla",
                                         description="Train the VLA planner by imitation of "
                                                     "expert demonstrations.")
        vla_train.add_arguments(parser)
        return int(vla_train.run(parser.parse_args(args.options)))
    if args.model == "bev":
        from mm_perception.fusion.feature_level import train as bev_train

        parser = argparse.ArgumentParser(prog="mm-perception train bev",
                                         description="Train the BEV fusion model.")
        bev_train.add_arguments(parser)
        return int(bev_train.run(parser.parse_args(args.options)))
    raise MMPerceptionError(f"unknown model to train: {args.model!r}")


# ---------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from mm_perception.demo import run_demo

    report = run_demo(Path(args.out), duration_s=args.duration, seed=args.seed)
    print(f"\ndemo finished: report at {report}")
    return 0


def _default_rig() -> Path:
    try:
        return config_dir() / "rigs" / "car.yaml"
    except MMPerceptionError:
        return Path("config/rigs/car.yaml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mm-perception",
                                     description="Multimodal perception stack tools.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="topics, types, counts, rates, span and cloud layouts")
    p.add_argument("bag", help="rosbag2 directory, .mcap, .db3 or ROS 1 .bag")
    p.add_argument("--rig", help="rig YAML: also show which sensor each topic feeds")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("replay", help="replay a bag live over DDS, or --offline")
    p.add_argument("bag")
    p.add_argument("--rig", help="rig YAML (required with --offline; live: rig topics only)")
    p.add_argument("--rate", type=float, default=1.0, help="playback rate factor (live)")
    p.add_argument("--loop", action="store_true", help="loop the bag (live)")
    p.add_argument("--max-loops", type=int, default=0, help="with --loop: stop after N passes")
    p.add_argument("--start", type=float, default=0.0, help="skip the first S seconds (live)")
    p.add_argument("--topics", nargs="*", help="only these topics (live)")
    p.add_argument("--wait-for-subscribers", type=int, default=0,
                   help="live: wait until every topic has N subscribers before playing")
    p.add_argument("--wait-timeout", type=float, default=30.0)
    p.add_argument("--lead-in", type=float, default=0.0, metavar="S",
                   help="live: publish /clock at the start time for S seconds before the "
                        "first message (sim-time clocks and DDS data channels get ready)")
    p.add_argument("--mute", nargs="*", metavar="TOPIC@START:END",
                   help="live: do not publish TOPIC between START and END s (sensor dropout)")
    p.add_argument("--offline", action="store_true",
                   help="no DDS: run sync + ego-motion compensation deterministically")
    p.add_argument("--out", help="write a JSON summary into this folder")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("recover", help="salvage the messages of an MCAP file that was cut "
                                       "(a recorder killed mid-write) into a new MCAP file")
    p.add_argument("bag", help="the cut .mcap file, or the rosbag2 folder holding it")
    p.add_argument("--out", required=True, help="new .mcap file to write (must not exist)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("synth-bag", help="write a small analytic multi-sensor bag")
    p.add_argument("--rig", required=True)
    p.add_argument("--out", required=True, help="bag to create (…/name, or name.bag for ros1)")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", choices=["mcap", "sqlite3", "ros1"], default="mcap")
    p.add_argument("--lidar-layout", choices=["packed", "padded", "float64"], default="padded")
    p.add_argument("--compressed", action="store_true",
                   help="CompressedImage (jpeg) camera (always when the rig's camera model "
                        "is compressed)")
    p.set_defaults(func=cmd_synth_bag)

    p = sub.add_parser("sim", help="simulate a scenario with MuJoCo and write a labelled bag")
    p.add_argument("--scenario", help="a library scenario name (see --list) or a YAML file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=10.0, help="simulated seconds")
    p.add_argument("--rig", default=str(_default_rig()), help="rig YAML")
    p.add_argument("--out", help="bag directory to create")
    p.add_argument("--list", action="store_true", help="list the library scenarios")
    p.add_argument("--platform", choices=["vehicle", "robot"], default="vehicle",
                   help="for --scenario random: vehicle scenes (car rig) or robot scenes")
    p.set_defaults(func=cmd_sim)
    sim_sub = p.add_subparsers(dest="sim_command")
    d = sim_sub.add_parser("dataset", help="many scenes for training")
    d.add_argument("--scenes", type=int, required=True)
    d.add_argument("--scenarios", nargs="*", help="scenario names to cycle (default: random)")
    d.add_argument("--seed", type=int, default=0, help="seed of the first scene")
    d.add_argument("--duration", type=float, default=10.0)
    d.add_argument("--rig", default=str(_default_rig()))
    d.add_argument("--out", required=True, help="folder for the scene bags")
    d.add_argument("--platform", choices=["vehicle", "robot"], default="vehicle",
                   help="random scenes for this platform (match the rig)")

    d = sim_sub.add_parser("demos", help="expert demonstrations of an instruction suite, "
                                         "driven in closed loop, for training the VLA planner")
    from mm_perception.planning import demos as _demos

    _demos.add_arguments(d)

    p = sub.add_parser("eval", help="run detectors, fusion and tracking on simulated bags and "
                                    "score them against the ground truth")
    p.add_argument("--bag", action="append", required=True,
                   help="simulated bag (repeat for several; a folder of bags expands)")
    p.add_argument("--rig", default=str(_default_rig()), help="rig YAML the bags were made with")
    p.add_argument("--level", nargs="+", choices=sorted(_LEVEL_LISTS), default=["data", "output"],
                   help="fusion levels to evaluate (LiDAR-, radar- and camera-only baselines "
                        "always run)")
    p.add_argument("--out", required=True, help="folder for metrics.json and the report")
    p.add_argument("--max-sets", type=int, default=0, help="at most N sets per bag (0 = all)")
    p.add_argument("--camera-weights", help="camera detector weights folder (default: shipped)")
    p.add_argument("--bev-weights", metavar="DIR",
                   help="with --level feature: BEV fusion weights folder of the 'feature' list "
                        "and the 'concat' rows of the feature-level table (default: shipped)")
    p.add_argument("--bev-attention-weights", metavar="DIR",
                   help="with --level feature: weights folder of the attention-fuser model "
                        "for the feature-level table (default: the shipped one if present)")
    p.add_argument("--bev-model", action="append", metavar="NAME=DIR",
                   help="with --level feature: another trained BEV model for the table "
                        "(e.g. a single-modality one; repeat for several)")
    p.add_argument("--bev-backend", choices=["onnxruntime", "torch"], default="onnxruntime",
                   help="runtime backend of the BEV models")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train", help="train a model")
    train_sub = p.add_subparsers(dest="model", required=True)
    # the trainer's own options are parsed by its parser (importing it loads torch, which
    # the other commands should not pay for): `mm-perception train camera --help`
    t = train_sub.add_parser("camera", help="the 2D camera detector, on simulator images",
                             add_help=False)
    t.add_argument("options", nargs=argparse.REMAINDER)
    t.set_defaults(func=cmd_train)
    t = train_sub.add_parser("bev", help="the BEV fusion model (camera, LiDAR, radar), on "
                                         "simulator data", add_help=False)
    t.add_argument("options", nargs=argparse.REMAINDER)
    t.set_defaults(func=cmd_train)

    t = train_sub.add_parser("vla", help="the vision-language-action planner, by imitation of "
                                         "expert demonstrations", add_help=False)
    t.add_argument("options", nargs=argparse.REMAINDER)
    t.set_defaults(func=cmd_train)

    p = sub.add_parser("drive", help="run an instruction suite in closed loop in the simulator "
                                     "and compare planners (success, collisions, safety "
                                     "interventions, comfort)")
    from mm_perception.planning import drive as _drive

    _drive.add_arguments(p)
    p.set_defaults(func=lambda a: _drive.run(a))

    p = sub.add_parser("run", help="start a platform graph in-process (lifecycle nodes, each "
                                   "with its worker thread, on one executor), optionally "
                                   "replaying a bag into it")
    p.add_argument("--config", required=True, help="platform config, e.g. config/car.yaml")
    p.add_argument("--bag", help="replay this bag into the graph (sim time), then stop")
    p.add_argument("--rate", type=float, default=1.0, help="replay rate with --bag")
    p.add_argument("--duration", type=float, help="without --bag: stop after S seconds")
    p.add_argument("--use-sim-time", action="store_true",
                   help="without --bag: follow /clock (a bag replayed by another process)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="set a parameter on every node (YAML value), e.g. qos.reliable_inputs=true")
    p.add_argument("--summary", help="write the graph summary (counts, latencies) as JSON")
    p.add_argument("--executor", choices=("single", "multi"), default="single",
                   help="rclpy executor for the nodes' callbacks (heavy work runs in each "
                        "node's worker thread either way; 'multi' was measured to starve the "
                        "graph under sim time on 2 cores)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("record", help="record live topics into an MCAP bag")
    p.add_argument("--topics", nargs="+", required=True)
    p.add_argument("--out", required=True, help="bag directory to create")
    p.add_argument("--discovery-timeout", type=float, default=30.0)
    p.add_argument("--idle-timeout", type=float, default=0.0,
                   help="stop S seconds after the last message (0: never)")
    p.add_argument("--idle-topics", nargs="+", metavar="TOPIC",
                   help="only these topics' messages count for --idle-timeout (default: all)")
    p.add_argument("--max-duration", type=float, default=0.0, help="stop after S seconds")
    p.set_defaults(func=cmd_record)

    from mm_perception.runtime import build as runtime_build  # numpy only; tensorrt lazily

    p = sub.add_parser("build-engine", help="build a TensorRT engine from an ONNX model ahead "
                                            "of time into the engine cache; prints its path")
    runtime_build.add_arguments(p)
    p.set_defaults(func=runtime_build.run)

    p = sub.add_parser("demo", help="the main job: make a scene bag, replay it, write a report")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # `train MODEL --opt ...`: argparse's REMAINDER does not take options that come first,
    # so the trainer's options are whatever the main parser does not know
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "func", None) is cmd_train:
        args.options = [*extra, *args.options]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # `kill -USR1 PID` prints every thread's Python stack to stderr: how a hung replay or
    # graph is diagnosed (the live-run harness does it before killing a process)
    if hasattr(signal, "SIGUSR1"):
        with contextlib.suppress(ValueError, OSError):  # stderr without a file (pytest capture)
            faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        return int(args.func(args))
    except MMPerceptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
