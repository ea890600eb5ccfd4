"""Salvage the messages of an MCAP file that ends early (a recorder killed mid-write).

A recorder that is killed, loses power or fills the disk leaves an MCAP file without its
summary section and footer. Readers that start from the footer (``rosbags``, which
:class:`~mm_perception.bag.reader.BagSource` uses) then refuse the whole file, although every
chunk written before the cut is intact. ``mm-perception recover BAG --out FIXED.mcap``
(:func:`recover_mcap`) reads the file front to back instead and writes what it finds into a
new, complete MCAP file (the MCAP CLI's ``mcap recover`` does the same; it is a Go tool and
not installable from PyPI, so this is the same idea on the ``mcap`` Python library):

1. **Framing** by hand (the MCAP spec: an 8-byte magic, then records of ``opcode u8, length
   u64 LE, body``): the walk stops at the first record that does not fit in the file (the
   cut) or whose opcode is 0 (zeros a file system left after the last write).
2. **Records** are parsed by the ``mcap`` library, each complete record on its own (chunks
   decompressed and their CRCs checked by it): schemas, channels, messages, attachments and
   metadata are kept; indexes and statistics are rebuilt by the writer. A record that
   fails to parse although it fits its length (a chunk whose CRC does not match: bit rot,
   a bad sector) is skipped, counted and named, and the walk goes on after it. The records
   inside a chunk are framed here too, each checked to fit in what is left of the chunk:
   the library's chunk reader trusts their length fields, and a damaged one (in a chunk
   without a CRC, as ``rosbags`` writes them) would turn the rest of the chunk into one
   garbage payload; here the chunk is kept up to the damage, which is named.
3. **The cut chunk**: its records are kept up to the last complete one when its compression
   can be decoded as a stream (none, ``zstd``, ``lz4``), so a killed recording loses at most
   the message that was being written, not the whole last chunk (up to a megabyte).
4. **Writing**: the ``mcap`` library's writer with ``zstd`` chunks, the source's profile
   (``ros2``), every schema and channel under new ids, messages with their log / publish
   times, sequence numbers and payloads byte for byte.

A message whose channel record was lost (in the cut part) cannot be decoded and is counted
in :attr:`RecoverStats.dropped`, never written under a guessed type. The source is never
modified, and an existing output is never overwritten.
"""

from __future__ import annotations

import io
import mmap
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_perception.core.errors import BagError

#: the MCAP magic, at the start of the file and after its footer
MAGIC = b"\x89MCAP0\r\n"
#: record opcodes used here (MCAP spec)
_OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_LAST = (
    0x02, 0x03, 0x04, 0x05, 0x06, 0x0F)
#: opcode u8 + length u64
_RECORD_HEAD = 9
#: damaged records named in RecoverStats.damaged (the rest are only counted)
_MAX_NAMED = 20
#: chunk body before its compression string: message start / end time, uncompressed size
#: (u64 each), uncompressed CRC (u32)
_CHUNK_FIXED = 8 + 8 + 8 + 4


@dataclass
class RecoverStats:
    """What :func:`recover_mcap` read and wrote.

    Attributes:
        source / output: the two files.
        file_bytes: size of the source, bytes.
        bytes_read: bytes of the source up to the end of the last complete record.
        complete: the source had its footer (nothing was missing; the output is a rewrite).
        stop_reason: why the walk stopped (``"footer"`` for a complete file).
        messages: messages written per topic.
        from_cut_chunk: of those, messages salvaged from the chunk the cut went through.
        dropped: messages (and damaged records) that could not be written, per reason.
        damaged: where the first damaged records were and what was wrong with them.
        schemas / channels / attachments / metadata: records written.
        first_ns / last_ns: log time span of the written messages, ns (None: none written).
    """

    source: str
    output: str
    file_bytes: int = 0
    bytes_read: int = 0
    complete: bool = False
    stop_reason: str = ""
    messages: dict[str, int] = field(default_factory=dict)
    from_cut_chunk: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)
    schemas: int = 0
    channels: int = 0
    attachments: int = 0
    metadata: int = 0
    first_ns: int | None = None
    last_ns: int | None = None

    @property
    def message_count(self) -> int:
        return sum(self.messages.values())

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "source", "output", "file_bytes", "bytes_read", "complete", "stop_reason",
            "messages", "from_cut_chunk", "dropped", "damaged", "schemas", "channels",
            "attachments", "metadata", "first_ns", "last_ns")} | {
                "message_count": self.message_count}


def is_truncated_mcap(path: str | Path) -> bool:
    """True for a file that starts like an MCAP file but does not end with the magic (no
    footer: a recording that was cut)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            head = f.read(len(MAGIC))
            if size < 2 * len(MAGIC):
                return head == MAGIC[:len(head)] and len(head) > 0
            f.seek(size - len(MAGIC))
            tail = f.read(len(MAGIC))
    except OSError:
        return False
    return head == MAGIC and tail != MAGIC


def _inner_records(data: bytes) -> tuple[list[Any], str | None]:
    """Schemas, channels and messages of a chunk's (decompressed) records, each checked to
    fit in what is left: the ``mcap`` library's chunk reader trusts the length fields, so a
    damaged one would silently turn the rest of the chunk into one message's payload.

    Returns:
        The records up to the first that does not fit or parse, and what was wrong there
        (None when every byte was read).
    """
    from mcap.data_stream import ReadDataStream
    from mcap.records import Channel, Message, Schema

    out: list[Any] = []
    pos = 0
    while pos < len(data):
        if pos + _RECORD_HEAD > len(data):
            return out, f"a record header cut at byte {pos} of {len(data)}"
        opcode = data[pos]
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        end = pos + _RECORD_HEAD + length
        if end > len(data):
            return out, (f"a record (opcode 0x{opcode:02x}) at byte {pos} claims {length} "
                         f"bytes, {len(data) - pos - _RECORD_HEAD} are left")
        stream = ReadDataStream(io.BytesIO(data[pos + _RECORD_HEAD:end]))
        try:
            if opcode == _OP_SCHEMA:
                out.append(Schema.read(stream))
            elif opcode == _OP_CHANNEL:
                out.append(Channel.read(stream))
            elif opcode == _OP_MESSAGE:
                out.append(Message.read(stream, length))
        except Exception as exc:  # fields that run past the record's own length
            return out, (f"a record (opcode 0x{opcode:02x}) at byte {pos} does not parse: "
                         f"{type(exc).__name__}: {exc}")
        pos = end
    return out, None


def _parse(record: bytes) -> tuple[list[Any], str | None]:
    """The ``mcap`` records of one complete top-level record (a chunk gives its contents,
    CRC checked) and, for a chunk whose contents are damaged part-way, what was wrong.

    Raises:
        ValueError: the record is damaged (its fields run past its length).
        Exception: whatever the ``mcap`` library raises for a damaged record (a CRC
            mismatch, a compressed stream that does not decode).
    """
    from mcap.exceptions import EndOfFile
    from mcap.records import Chunk
    from mcap.stream_reader import StreamReader, get_chunk_data_stream

    top: list[Any] = []
    try:
        # the reader expects a file: after the record it reads on and meets the end of the
        # bytes, which ends this record's parse (a footer is followed by the magic likewise)
        for rec in StreamReader(io.BytesIO(record), skip_magic=True, emit_chunks=True,
                                validate_crcs=True).records:
            top.append(rec)
    except EndOfFile:
        if not top:  # the record's own fields run past its length
            raise ValueError("the record's fields run past its length") from None
    out: list[Any] = []
    problem = None
    for rec in top:
        if isinstance(rec, Chunk):
            stream, size = get_chunk_data_stream(rec, validate_crc=True)
            inner, problem = _inner_records(stream.read(size))
            out += inner
        else:
            out.append(rec)
    return out, problem


def _cut_chunk_records(body: bytes) -> list[Any]:
    """The complete records at the start of a chunk's body that the cut went through."""
    if len(body) < _CHUNK_FIXED + 4:
        return []
    (clen,) = struct.unpack_from("<I", body, _CHUNK_FIXED)
    start = _CHUNK_FIXED + 4 + clen + 8  # compression string, then the records' u64 length
    if len(body) <= start:
        return []
    compression = body[_CHUNK_FIXED + 4:_CHUNK_FIXED + 4 + clen].decode("utf-8", "replace")
    data = body[start:]
    try:
        if compression == "zstd":
            import zstandard

            data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        elif compression == "lz4":
            import lz4.frame

            data = lz4.frame.LZ4FrameDecompressor().decompress(data)
        elif compression != "":
            return []
    except Exception:  # a stream cut in the middle of a block: nothing decodable
        return []
    # the first record that does not fit is where the cut is: nothing after it was written
    return _inner_records(data)[0]


def recover_mcap(source: str | Path, output: str | Path) -> RecoverStats:
    """Read ``source`` front to back and write what it holds into ``output`` (see the module
    docstring).

    Args:
        source: an MCAP file, complete or cut.
        output: the new ``.mcap`` file; must not exist.

    Returns:
        The :class:`RecoverStats`.

    Raises:
        BagError: ``source`` is missing or not an MCAP file (no magic), ``output`` exists,
            is the source or does not end in ``.mcap``; the ``mcap`` package is missing.
    """
    try:
        from mcap.records import Attachment, Channel, Header, Message, Metadata, Schema
        from mcap.writer import CompressionType, Writer
    except ImportError as exc:  # installed by scripts/setup.sh; a bare pip install may lack it
        raise BagError(f"recover needs the 'mcap' package (pip install mcap): {exc}") from exc

    src, dst = Path(source), Path(output)
    if not src.is_file():
        raise BagError(f"no MCAP file at {src}")
    if dst.suffix != ".mcap":
        raise BagError(f"the output must be a .mcap file, got {dst}")
    if dst.exists():
        raise BagError(f"{dst} exists; recover never overwrites a file")
    stats = RecoverStats(source=str(src), output=str(dst), file_bytes=src.stat().st_size)
    with src.open("rb") as f:
        if stats.file_bytes < len(MAGIC) or f.read(len(MAGIC)) != MAGIC:
            raise BagError(f"{src} is not an MCAP file (it does not start with the MCAP "
                           f"magic)")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    dst.parent.mkdir(parents=True, exist_ok=True)
    schema_ids: dict[int, int] = {}
    channel_ids: dict[int, int] = {}
    channel_topic: dict[int, str] = {}
    messages: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    writer: Any = None
    out = dst.open("wb")

    def start(profile: str = "") -> Any:
        w = Writer(out, compression=CompressionType.ZSTD)
        w.start(profile=profile, library="mm_perception recover")
        return w

    def keep(rec: Any, cut: bool) -> None:
        nonlocal writer
        if isinstance(rec, Header):
            if writer is None:
                writer = start(rec.profile)
            return
        if writer is None:  # no header record (damaged start): an empty profile
            writer = start()
        if isinstance(rec, Schema):
            if rec.id not in schema_ids:
                schema_ids[rec.id] = writer.register_schema(rec.name, rec.encoding, rec.data)
                stats.schemas += 1
        elif isinstance(rec, Channel):
            if rec.id not in channel_ids:
                if rec.schema_id != 0 and rec.schema_id not in schema_ids:
                    dropped["channel without its schema"] += 1
                    return
                channel_ids[rec.id] = writer.register_channel(
                    rec.topic, rec.message_encoding, schema_ids.get(rec.schema_id, 0),
                    dict(rec.metadata))
                channel_topic[rec.id] = rec.topic
                stats.channels += 1
        elif isinstance(rec, Message):
            cid = channel_ids.get(rec.channel_id)
            if cid is None:
                dropped["message without its channel"] += 1
                return
            writer.add_message(cid, rec.log_time, rec.data, rec.publish_time, rec.sequence)
            messages[channel_topic[rec.channel_id]] += 1
            stats.from_cut_chunk += int(cut)
            stats.first_ns = (rec.log_time if stats.first_ns is None
                              else min(stats.first_ns, rec.log_time))
            stats.last_ns = (rec.log_time if stats.last_ns is None
                             else max(stats.last_ns, rec.log_time))
        elif isinstance(rec, Attachment):
            writer.add_attachment(rec.create_time, rec.log_time, rec.name, rec.media_type,
                                  rec.data)
            stats.attachments += 1
        elif isinstance(rec, Metadata):
            writer.add_metadata(rec.name, dict(rec.metadata))
            stats.metadata += 1

    try:
        pos = len(MAGIC)
        size = len(buf)
        while True:
            if pos + _RECORD_HEAD > size:
                stats.stop_reason = ("end of file without a footer" if pos >= size
                                     else f"cut inside a record header at byte {pos}")
                break
            opcode = buf[pos]
            (length,) = struct.unpack_from("<Q", buf, pos + 1)
            end = pos + _RECORD_HEAD + length
            if opcode == 0:
                stats.stop_reason = f"zeros from byte {pos} on (never written)"
                break
            if end > size:
                stats.stop_reason = (f"cut at byte {size} inside a record (opcode "
                                     f"0x{opcode:02x}) that started at byte {pos}")
                if opcode == _OP_CHUNK:
                    for rec in _cut_chunk_records(bytes(buf[pos + _RECORD_HEAD:size])):
                        keep(rec, cut=True)
                break
            if opcode > _OP_LAST:  # the spec: readers skip opcodes they do not know
                stats.bytes_read = pos = end
                continue
            record = bytes(buf[pos:end])
            try:
                parsed, problem = _parse(record)
            except Exception as exc:
                # a damaged record inside an intact framing (a CRC mismatch, bit rot): it is
                # skipped, counted and named, and the walk goes on to the records after it
                dropped["damaged record (skipped)"] += 1
                if len(stats.damaged) < _MAX_NAMED:
                    stats.damaged.append(f"opcode 0x{opcode:02x} at byte {pos}: "
                                         f"{type(exc).__name__}: {exc}")
                parsed, problem = [], None
            if problem is not None:  # a chunk damaged part-way: its front is kept
                dropped["damaged chunk (kept up to the damage)"] += 1
                if len(stats.damaged) < _MAX_NAMED:
                    stats.damaged.append(f"chunk at byte {pos}: {problem}")
            for rec in parsed:
                keep(rec, cut=False)
            stats.bytes_read = end
            pos = end
            if opcode == _OP_FOOTER:  # a footer is a top-level record only
                stats.complete = True
                stats.stop_reason = "footer"
                break
        if writer is None:
            writer = start()
        writer.finish()
    except BaseException:
        out.close()
        dst.unlink(missing_ok=True)  # no half-written output left behind
        raise
    finally:
        buf.close()
    out.close()
    stats.messages = dict(sorted(messages.items()))
    stats.dropped = dict(dropped)
    return stats


__all__ = ["MAGIC", "RecoverStats", "is_truncated_mcap", "recover_mcap"]
