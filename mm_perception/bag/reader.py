"""Read rosbag2 (sqlite3, MCAP) and ROS 1 bags into core types, per a rig's topic map.

Uses ``rosbags.highlevel.AnyReader``: a rosbag2 directory, a bare ``.mcap`` / ``.db3`` file or
one or more ROS 1 ``.bag`` files. Messages are deserialised by rosbags (no ROS needed) and
turned into core types by :mod:`mm_perception.ros.conversions`.

Bad data never ends in a traceback: a message that cannot be converted is dropped and counted
with its reason (:class:`ReadStats`), and a bag that turns out to be corrupt part-way through
(a damaged chunk, a truncated file) stops the iteration with the error recorded in
``ReadStats.errors`` and ``ReadStats.truncated`` set, keeping everything read before it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from mm_perception.core.calibration import Rig, SensorSpec
from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import BagError, ConversionError
from mm_perception.core.geometry import SE3
from mm_perception.core.types import SensorKind
from mm_perception.ros import conversions as conv
from mm_perception.ros.sensor_decoder import SensorDecoder, SensorValue, drop_reason

LOG = logging.getLogger(__name__)

#: message types accepted per sensor kind (rosbag2 spelling; ROS 1 names are normalised)
ACCEPTED_TYPES: dict[SensorKind, tuple[str, ...]] = {
    SensorKind.CAMERA: ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"),
    SensorKind.LIDAR: ("sensor_msgs/msg/PointCloud2",),
    SensorKind.RADAR: ("sensor_msgs/msg/PointCloud2",),
    SensorKind.ODOMETRY: ("nav_msgs/msg/Odometry",),
}
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
MAX_ERRORS_KEPT = 50
#: sensor_msgs/PointField datatype constants, for display
POINTFIELD_NAMES = {1: "INT8", 2: "UINT8", 3: "INT16", 4: "UINT16", 5: "INT32", 6: "UINT32",
                    7: "FLOAT32", 8: "FLOAT64"}


def normalise_type(msgtype: str) -> str:
    """``sensor_msgs/Image`` (ROS 1) -> ``sensor_msgs/msg/Image`` (ROS 2 spelling)."""
    if "/msg/" in msgtype:
        return msgtype
    pkg, _, name = msgtype.partition("/")
    return f"{pkg}/msg/{name}"


@dataclass(frozen=True)
class SensorMessage:
    """One converted sensor message.

    Attributes:
        sensor: rig sensor name.
        kind: the sensor's kind.
        stamp_ns: header stamp (sensor clock, before the rig's time offset), ns.
        log_time_ns: bag receive time, ns.
        value: the core type.
    """

    sensor: str
    kind: SensorKind
    stamp_ns: int
    log_time_ns: int
    value: SensorValue


@dataclass(frozen=True)
class TopicSummary:
    """What ``mm-perception info`` reports per topic."""

    topic: str
    msgtype: str
    count: int
    first_ns: int | None
    last_ns: int | None
    sensors: tuple[str, ...]

    @property
    def rate_hz(self) -> float | None:
        if self.count < 2 or self.first_ns is None or self.last_ns is None \
                or self.last_ns <= self.first_ns:
            return None
        return (self.count - 1) / ((self.last_ns - self.first_ns) / 1e9)


@dataclass
class ReadStats:
    """Counts of what a pass over a bag produced and dropped (JSON-ready via ``as_dict``)."""

    read: Counter[str] = field(default_factory=Counter)       # per topic
    converted: Counter[str] = field(default_factory=Counter)  # per sensor
    dropped: Counter[str] = field(default_factory=Counter)    # "sensor: reason"
    errors: list[str] = field(default_factory=list)
    truncated: bool = False

    def drop(self, sensor: str, reason: str, detail: str) -> None:
        key = f"{sensor}: {reason}"
        self.dropped[key] += 1
        if self.dropped[key] == 1 or len(self.errors) < MAX_ERRORS_KEPT:
            # throttled: the first of each kind is always kept, then up to the cap
            if len(self.errors) < MAX_ERRORS_KEPT:
                self.errors.append(f"{key}: {detail}")
            LOG.warning("dropped %s message: %s (%s)", sensor, reason, detail)

    def as_dict(self) -> dict[str, Any]:
        return {"read": dict(self.read), "converted": dict(self.converted),
                "dropped": dict(self.dropped), "errors": list(self.errors),
                "truncated": self.truncated}



def _cut_hint(paths: Sequence[Path]) -> str:
    """What to do about MCAP files among ``paths`` (or in their folders) that were cut."""
    from mm_perception.bag.recover import is_truncated_mcap

    files = [f for p in paths for f in (sorted(p.glob("*.mcap")) if p.is_dir() else [p])]
    cut = [f for f in files if f.suffix == ".mcap" and is_truncated_mcap(f)]
    return "".join(f"\n{f} ends without its footer (a recording cut short, e.g. a recorder "
                   f"killed mid-write); `mm-perception recover {f} --out FIXED.mcap` salvages "
                   f"the messages written before the cut" for f in cut)


class BagSource:
    """An open bag, read through a rig.

    Use as a context manager::

        with BagSource(path) as bag:
            rig = bag.resolve_rig(Rig.from_yaml("config/rigs/car.yaml"))
            for m in bag.sensor_messages(rig):
                ...
    """

    def __init__(self, path: str | Path | Sequence[str | Path]) -> None:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        paths = [Path(p) for p in ([path] if isinstance(path, str | Path) else path)]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise BagError(f"bag not found: {', '.join(missing)}")
        for p in paths:
            if p.is_dir() and not (p / "metadata.yaml").exists():
                # a recorder that was killed writes no metadata.yaml: its files still read
                files = sorted(f.name for f in p.iterdir() if f.suffix in (".mcap", ".db3"))
                hint = (f"pass the storage file itself: {', '.join(str(p / f) for f in files)}"
                        if files else "pass the .mcap/.db3 file itself, or the bag directory")
                raise BagError(f"{p} is a directory without metadata.yaml: not a complete "
                               f"rosbag2 bag ({hint}){_cut_hint([p])}")
            if p.is_file() and p.suffix not in (".bag", ".mcap", ".db3"):
                raise BagError(f"{p}: unknown bag file type {p.suffix!r} "
                               f"(expected .mcap, .db3 or .bag)")
        self.paths = paths
        is_ros1 = all(p.suffix == ".bag" for p in paths)
        store = get_typestore(Stores.ROS1_NOETIC if is_ros1 else Stores.ROS2_KILTED)
        try:
            self._reader = AnyReader(paths, default_typestore=store)
        except Exception as exc:  # rosbags raises several types; all mean "cannot open"
            raise BagError(f"cannot open bag {', '.join(map(str, paths))}: {exc}"
                           f"{_cut_hint(paths)}") from exc
        self.is_ros1 = is_ros1
        self._open = False

    # ---------------------------------------------------------------- context
    def __enter__(self) -> BagSource:
        try:
            self._reader.open()
        except Exception as exc:
            raise BagError(f"cannot open bag {', '.join(map(str, self.paths))}: "
                           f"{type(exc).__name__}: {exc}{_cut_hint(self.paths)}") from exc
        self._open = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._open:
            self._reader.close()
            self._open = False

    # ---------------------------------------------------------------- metadata
    @property
    def storage(self) -> str:
        if self.is_ros1:
            return "ros1"
        p = self.paths[0]
        if p.is_file():
            return p.suffix.lstrip(".").replace("db3", "sqlite3")
        try:
            import yaml

            meta = yaml.safe_load((p / "metadata.yaml").read_text())
            return str(meta["rosbag2_bagfile_information"]["storage_identifier"])
        except Exception:  # informational only
            return "rosbag2"

    def _corrupt(self, count: int, exc: Exception) -> str:
        """The error for a read stopped by damage after ``count`` messages."""
        hint = (" (`mm-perception recover` copies the intact chunks before and after the "
                "damage into a new MCAP file)" if self.storage == "mcap" else "")
        return f"bag is corrupt after {count} messages: {type(exc).__name__}: {exc}{hint}"

    @property
    def start_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        return int(self._reader.end_time)

    def topic_types(self) -> dict[str, str]:
        """Topic -> message type (ROS 2 spelling)."""
        return {c.topic: normalise_type(c.msgtype) for c in self._reader.connections}

    def summary(self, rig: Rig | None = None) -> tuple[list[TopicSummary], ReadStats]:
        """Per-topic counts, first/last receive times and rates, from one pass over the bag.

        Nothing is deserialised; times are the bag's receive (log) times. A corrupt bag ends
        the pass with the error in the returned stats (``truncated`` set).
        """
        stats = ReadStats()
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        counts: Counter[str] = Counter()
        try:
            for conn, t, _ in self._reader.messages():
                counts[conn.topic] += 1
                first.setdefault(conn.topic, t)
                last[conn.topic] = t
        except Exception as exc:
            stats.truncated = True
            stats.errors.append(self._corrupt(sum(counts.values()), exc))
        stats.read.update(counts)
        topics = rig.topics() if rig is not None else {}
        out = []
        for topic, msgtype in sorted(self.topic_types().items()):
            users = tuple(f"{s.name}" + ("" if role == "data" else f" ({role})")
                          for s, role in topics.get(topic, []))
            out.append(TopicSummary(topic, msgtype, counts.get(topic, 0), first.get(topic),
                                    last.get(topic), users))
        return out, stats

    def cloud_layouts(self, max_per_topic: int = 1) -> dict[str, list[dict[str, Any]]]:
        """Field layout of the first PointCloud2 on each cloud topic:
        ``[{name, offset, datatype, count}]`` plus ``point_step`` and ``is_bigendian``."""
        layouts: dict[str, list[dict[str, Any]]] = {}
        conns = [c for c in self._reader.connections
                 if normalise_type(c.msgtype) == "sensor_msgs/msg/PointCloud2"]
        for conn in conns:
            try:
                for c, _, raw in self._reader.messages(connections=[conn]):
                    msg: Any = self._reader.deserialize(raw, c.msgtype)
                    fields = [{"name": f.name, "offset": int(f.offset),
                               "datatype": POINTFIELD_NAMES.get(int(f.datatype),
                                                                str(f.datatype)),
                               "count": int(f.count)} for f in msg.fields]
                    layouts[conn.topic] = [{"fields": fields, "point_step": int(msg.point_step),
                                            "is_bigendian": bool(msg.is_bigendian),
                                            "width": int(msg.width),
                                            "height": int(msg.height)}]
                    break
            except Exception as exc:
                layouts[conn.topic] = [{"error": f"{type(exc).__name__}: {exc}"}]
        return layouts

    # ---------------------------------------------------------------- rig resolution
    def resolve_rig(self, rig: Rig) -> Rig:
        """Fill what the rig leaves to the bag: ``from_tf`` extrinsics (from ``/tf_static`` and
        ``/tf``) and checks that every rig topic is present with an accepted type.

        Raises:
            BagError: a rig topic is missing from the bag, has the wrong type, or a ``from_tf``
                sensor's transform to the base frame is not in the bag's tf.
        """
        types = self.topic_types()
        problems = []
        for spec in rig.sensors.values():
            got = types.get(spec.topic)
            if got is None:
                problems.append(f"sensor {spec.name!r}: topic {spec.topic} is not in the bag")
            elif got not in ACCEPTED_TYPES[spec.kind]:
                problems.append(f"sensor {spec.name!r}: topic {spec.topic} has type {got}, "
                                f"expected {' or '.join(ACCEPTED_TYPES[spec.kind])}")
            if spec.camera_info_topic and types.get(spec.camera_info_topic) not in (
                    None, CAMERA_INFO_TYPE):
                problems.append(f"sensor {spec.name!r}: {spec.camera_info_topic} is "
                                f"{types[spec.camera_info_topic]}, not CameraInfo")
            if spec.kind is SensorKind.CAMERA and spec.intrinsics is None and (
                    not spec.camera_info_topic or spec.camera_info_topic not in types):
                problems.append(f"sensor {spec.name!r}: intrinsics are from_camera_info but "
                                f"camera_info_topic {spec.camera_info_topic} is not in the bag")
        if problems:
            raise BagError("bag does not match the rig " + f"({rig.source}):\n  "
                           + "\n  ".join(problems))
        unresolved = rig.unresolved_extrinsics()
        if unresolved:
            tree = self.read_tf()
            for name in unresolved:
                spec = rig.sensors[name]
                transform = tree.lookup(rig.base_frame, spec.frame_id)
                if transform is None:
                    raise BagError(f"sensor {name!r} takes extrinsics from tf, but the bag's "
                                   f"/tf_static and /tf have no chain {rig.base_frame} -> "
                                   f"{spec.frame_id} (frames seen: {sorted(tree.frames())})")
                rig = rig.with_extrinsics(name, transform)
        return rig

    def read_tf(self) -> TfTree:
        """All static and (first-seen) dynamic transforms in the bag."""
        tree = TfTree()
        conns = [c for c in self._reader.connections if c.topic in ("/tf_static", "/tf")
                 and normalise_type(c.msgtype) in (TF_TYPE, "tf/msg/tfMessage")]
        if not conns:
            return tree
        try:
            for c, _, raw in self._reader.messages(connections=conns):
                msg = self._reader.deserialize(raw, c.msgtype)
                for parent, child, _stamp, transform in conv.transforms_from_tf_message(msg):
                    tree.add(parent, child, transform, static=c.topic == "/tf_static")
        except ConversionError as exc:
            raise BagError(f"bad transform in the bag's tf: {exc}") from exc
        return tree

    # ---------------------------------------------------------------- messages
    def raw_messages(self, topics: Sequence[str], start_ns: int | None = None,
                     errors: list[str] | None = None) -> Iterator[tuple[str, int, bytes]]:
        """``(topic, receive time ns, CDR bytes)`` in receive-time order.

        ROS 1 messages are migrated to their ROS 2 definitions (``Header.seq`` dropped,
        ``CameraInfo.K`` -> ``k``...) and serialised as CDR with rosbags' converter, so the
        bytes can be published on ROS 2 as they are. A message that cannot be migrated is
        skipped with its error appended to ``errors``; a corrupt bag ends the iteration.
        """
        conns = [c for c in self._reader.connections if c.topic in set(topics)]
        if not conns:
            return
        migrate = self._ros1_migrator() if self.is_ros1 else None
        iterator = self._reader.messages(connections=conns, start=start_ns)
        count = 0
        while True:
            try:
                conn, log_time, raw = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # corrupt chunk / bad ROS 1 record
                msg = self._corrupt(count, exc)
                LOG.error(msg)
                if errors is not None:
                    errors.append(msg)
                return
            count += 1
            if migrate is None:
                yield conn.topic, int(log_time), bytes(raw)
                continue
            try:
                data = migrate(raw, conn.msgtype)
            except Exception as exc:  # no ROS 2 definition of a custom ROS 1 type, ...
                msg = (f"{conn.topic}: cannot convert ROS 1 {conn.msgtype} to ROS 2: "
                       f"{type(exc).__name__}: {exc}")
                LOG.warning(msg)
                if errors is not None and len(errors) < MAX_ERRORS_KEPT:
                    errors.append(msg)
                continue
            yield conn.topic, int(log_time), data

    def _ros1_migrator(self) -> Callable[[Any, str], bytes]:
        from rosbags.convert.converter import migrate_bytes
        from rosbags.typesys import Stores, get_typestore

        target = get_typestore(Stores.ROS2_KILTED)
        cache: dict[str, object] = {}
        source = self._reader.typestore

        def migrate(raw: Any, msgtype: str) -> bytes:
            return bytes(migrate_bytes(source, target, msgtype, msgtype, cache, raw,
                                       src_is2=False, dst_is2=True))

        return migrate

    def sensor_messages(self, rig: Rig, stats: ReadStats | None = None,
                        remove_nans: bool = True) -> Iterator[SensorMessage]:
        """Converted messages of every rig sensor in receive-time order.

        With ``from_camera_info`` intrinsics, a camera starts with the bag's first
        ``CameraInfo`` on its info topic (drivers often publish it just after the image), and
        each later ``CameraInfo`` updates the model attached to the following frames. A camera
        whose info topic has no valid message drops its frames (counted as
        ``no_camera_info``) rather than emitting them without intrinsics.

        Args:
            rig: a resolved rig (see :meth:`resolve_rig`).
            stats: filled in as messages are read, converted or dropped.
            remove_nans: drop non-finite points from clouds.
        """
        stats = stats if stats is not None else ReadStats()
        topics = rig.topics()
        conns = [c for c in self._reader.connections if c.topic in topics]
        decoder = SensorDecoder(rig, remove_nans)
        for spec in rig.of_kind(SensorKind.CAMERA):
            if spec.intrinsics is None:
                first = self._first_camera_info(spec, stats)
                if first is not None:
                    decoder.set_camera_model(spec.name, first)
        count = 0
        iterator = self._reader.messages(connections=conns)
        while True:
            try:
                conn, log_time, raw = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # corrupt chunk / truncated file: keep what was read
                stats.truncated = True
                stats.errors.append(self._corrupt(count, exc))
                LOG.error("bag read stopped: %s", stats.errors[-1])
                return
            count += 1
            stats.read[conn.topic] += 1
            users = topics[conn.topic]
            try:  # once per message, however many rig sensors read the topic
                msg = self._reader.deserialize(raw, conn.msgtype)
            except Exception as exc:
                for spec, _ in users:
                    stats.drop(spec.name, "deserialize", f"{type(exc).__name__}: {exc}")
                continue
            for spec, role in users:
                if role == "camera_info":
                    try:
                        decoder.camera_info(spec.name, msg)
                    except (ConversionError, ValueError) as exc:
                        stats.drop(spec.name, "camera_info", str(exc))
                    continue
                try:
                    out = decoder.decode(spec.name, msg)
                except (ConversionError, ValueError, KeyError) as exc:
                    stats.drop(spec.name, drop_reason(exc), str(exc))
                    continue
                if out is None:
                    stats.drop(spec.name, "no_camera_info",
                               "image before the first CameraInfo of its camera")
                    continue
                stats.converted[spec.name] += 1
                yield SensorMessage(spec.name, spec.kind, _stamp_of(out), int(log_time), out)

    def _first_camera_info(self, spec: SensorSpec, stats: ReadStats) -> CameraModel | None:
        conns = [c for c in self._reader.connections if c.topic == spec.camera_info_topic]
        if not conns:
            return None
        try:
            for conn, _, raw in self._reader.messages(connections=conns):
                try:
                    return conv.camera_model_from_camera_info(
                        self._reader.deserialize(raw, conn.msgtype))
                except (ConversionError, ValueError) as exc:
                    stats.drop(spec.name, "camera_info", str(exc))
        except Exception as exc:  # corrupt bag: the main pass reports it
            LOG.debug("looking for the first CameraInfo of %s: %s", spec.name, exc)
        return None


def _stamp_of(value: SensorValue) -> int:
    return int(value.stamp_ns)


class TfTree:
    """A small transform tree from a bag's tf messages (first value of each edge kept).

    Static transforms win over dynamic ones for the same edge; lookups walk the tree in both
    directions, so ``lookup(a, b)`` works whichever way the edges were published.
    """

    def __init__(self) -> None:
        self._edges: dict[tuple[str, str], SE3] = {}
        self._static: set[tuple[str, str]] = set()

    def add(self, parent: str, child: str, transform: SE3, static: bool) -> None:
        key = (parent.lstrip("/"), child.lstrip("/"))
        if key in self._edges and (key in self._static or not static):
            return
        self._edges[key] = transform
        if static:
            self._static.add(key)

    def frames(self) -> set[str]:
        return {f for edge in self._edges for f in edge}

    def lookup(self, target: str, source: str) -> SE3 | None:
        """``T_target_source`` or None when the frames are not connected."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return SE3()
        adj: dict[str, list[tuple[str, SE3]]] = {}
        for (parent, child), transform in self._edges.items():
            adj.setdefault(parent, []).append((child, transform))            # T_parent_child
            adj.setdefault(child, []).append((parent, transform.inverse()))  # T_child_parent
        # breadth-first from target, accumulating T_target_frame
        seen = {target: SE3()}
        queue = [target]
        while queue:
            frame = queue.pop(0)
            for nxt, t_frame_nxt in adj.get(frame, []):
                if nxt not in seen:
                    seen[nxt] = seen[frame] @ t_frame_nxt
                    if nxt == source:
                        return seen[nxt]
                    queue.append(nxt)
        return None


__all__ = ["ACCEPTED_TYPES", "BagSource", "ReadStats", "SensorMessage", "TfTree",
           "TopicSummary", "normalise_type"]
