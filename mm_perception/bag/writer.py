"""Write rosbag2 bags (MCAP or sqlite3) with `rosbags`, and convert them to ROS 1.

Messages are built with :class:`mm_perception.ros.conversions.RosbagsFactory` (rosbags
message dataclasses) and serialised here, so writing needs no ROS installation. ROS 1 bags
(for interoperability tests and users with ROS 1 tooling) are made by converting a rosbag2
bag with rosbags' converter, which also migrates the message definitions (``Header.seq``).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as Ros2Writer
from rosbags.typesys import Stores, get_typestore

from mm_perception.core.errors import BagError

Storage = Literal["mcap", "sqlite3", "ros1"]
Ros2Storage = Literal["mcap", "sqlite3"]

#: the typestore every writer uses (ROS 2 Kilted definitions; also covers ROS 1 messages of
#: the same names for the types this project writes)
ROS2_TYPESTORE = get_typestore(Stores.ROS2_KILTED)


class BagWriter:
    """Context manager writing serialised messages to a new bag.

    Args:
        path: the rosbag2 directory to create. It must not exist yet (nothing is ever
            overwritten).
        storage: ``"mcap"`` (default, what Foxglove opens) or ``"sqlite3"``.
    """

    def __init__(self, path: str | Path, storage: Ros2Storage = "mcap",
                 typestore: Any | None = None) -> None:
        self.path = Path(path)
        self.storage = storage
        self.typestore = ROS2_TYPESTORE if typestore is None else typestore
        if storage not in ("mcap", "sqlite3"):
            raise BagError(f"unknown rosbag2 storage {storage!r}: use mcap or sqlite3 "
                           f"(ROS 1 bags: write rosbag2, then convert_to_ros1)")
        if self.path.exists():
            raise BagError(f"{self.path} exists already; refusing to overwrite it")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Ros2Writer(self.path, version=9, storage_plugin=plugin)
        self._connections: dict[str, Any] = {}
        self._types: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._writer.close()

    def _connection(self, topic: str, typename: str) -> Any:
        conn = self._connections.get(topic)
        if conn is None:
            qos = _TRANSIENT_LOCAL_QOS if topic == "/tf_static" else []
            conn = self._writer.add_connection(topic, typename, typestore=self.typestore,
                                               offered_qos_profiles=qos)
            self._connections[topic] = conn
            self._types[topic] = typename
        elif self._types[topic] != typename:
            raise BagError(f"topic {topic} already carries {self._types[topic]}, "
                           f"cannot also write {typename}")
        return conn

    def write(self, topic: str, log_time_ns: int, msg: Any) -> None:
        """Serialise and write one message.

        Args:
            topic: topic name.
            log_time_ns: the bag (receive) time of the message, ns.
            msg: a rosbags message object (``msg.__msgtype__`` names its type).
        """
        typename: str = msg.__msgtype__
        conn = self._connection(topic, typename)
        data = self.typestore.serialize_cdr(msg, typename)
        self._writer.write(conn, int(log_time_ns), bytes(data))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def write_raw(self, topic: str, typename: str, log_time_ns: int, data: bytes) -> None:
        """Write one message already serialised as CDR (e.g. received raw from DDS);
        ``typename`` must be in the writer's typestore (its definition goes into the bag)."""
        conn = self._connection(topic, typename)
        self._writer.write(conn, int(log_time_ns), bytes(data))
        self.counts[topic] = self.counts.get(topic, 0) + 1


def interfaces_typestore() -> Any:
    """The ROS 2 Kilted typestore plus the ``mm_perception_msgs`` definitions (read from the
    source checkout's ``interfaces/`` or the built install's ``share/``), so that bags of the
    stack's outputs can be written and read without ROS."""
    from rosbags.typesys import get_types_from_msg

    from mm_perception.ros.msgs_env import DEFAULT_PREFIX, PACKAGE, REPO_ROOT

    store = get_typestore(Stores.ROS2_KILTED)
    candidates = [REPO_ROOT / "interfaces" / PACKAGE / "msg",
                  DEFAULT_PREFIX / "share" / PACKAGE / "msg"]
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None:
        raise BagError(f"no {PACKAGE} message definitions found (looked in "
                       f"{', '.join(map(str, candidates))})")
    types: dict[str, Any] = {}
    for path in sorted(folder.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


#: the QoS rosbag2 records for /tf_static: transient local, so late joiners still get it
_TRANSIENT_LOCAL_QOS = [
    Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
        QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)
]

def convert_to_ros1(src: str | Path, dst: str | Path) -> None:
    """Convert a rosbag2 bag into a new ROS 1 ``.bag`` file (rosbags' converter)."""
    from rosbags.convert import convert

    dst_path = Path(dst)
    if dst_path.suffix != ".bag":
        raise BagError(f"a ROS 1 bag path must end in .bag, got {dst_path}")
    if dst_path.exists():
        raise BagError(f"{dst_path} exists already; refusing to overwrite it")
    try:
        convert([Path(src)], dst_path, "", 2, None, "file", None, None, [], [], [], [])
    except Exception as exc:  # the converter raises its own error types
        raise BagError(f"cannot convert {src} to ROS 1: {exc}") from exc


__all__ = ["ROS2_TYPESTORE", "BagWriter", "Ros2Storage", "Storage", "convert_to_ros1"]
