"""Salvaging cut MCAP recordings (`mm-perception recover`, mm_perception.bag.recover)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mm_perception.bag.reader import BagSource
from mm_perception.bag.recover import MAGIC, is_truncated_mcap, recover_mcap
from mm_perception.cli import main
from mm_perception.core.errors import BagError

Msg = tuple[str, int, int, int, bytes]  # topic, log time, publish time, sequence, payload


def messages(path: Path) -> list[Msg]:
    """Every message of a complete MCAP file, in file order (the mcap library's reader)."""
    from mcap.reader import make_reader

    with path.open("rb") as f:
        return [(c.topic, m.log_time, m.publish_time, m.sequence, bytes(m.data))
                for _, c, m in make_reader(f).iter_messages(log_time_order=False)]


def records(data: bytes) -> list[tuple[int, int, int]]:
    """``(opcode, start, end)`` of every top-level record after the magic."""
    out, pos = [], len(MAGIC)
    while pos + 9 <= len(data):
        op = data[pos]
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        out.append((op, pos, pos + 9 + length))
        pos += 9 + length
    return out


def chunk_message_counts(data: bytes) -> list[tuple[int, int, int]]:
    """``(start, end, messages)`` of each chunk record (its message index records follow it)."""
    recs = records(data)
    out = []
    for i, (op, start, end) in enumerate(recs):
        if op != 0x06:
            continue
        n = 0
        for op2, s2, _ in recs[i + 1:]:
            if op2 != 0x07:
                break
            (arr_len,) = struct.unpack_from("<I", data, s2 + 9 + 2)
            n += arr_len // 16  # (log time u64, offset u64) pairs
        out.append((start, end, n))
    return out


def write_mcap(path: Path, compression: str, n: int = 120, chunk_size: int = 4096,
               chunked: bool = True) -> None:
    """A small ros2-profile MCAP written by the mcap library with ``compression``."""
    from mcap.writer import CompressionType, Writer

    kind = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4,
            "none": CompressionType.NONE}[compression]
    rng = np.random.default_rng(0)
    with path.open("wb") as f:
        w = Writer(f, chunk_size=chunk_size, compression=kind, use_chunking=chunked)
        w.start(profile="ros2", library="test")
        sid = w.register_schema("std_msgs/msg/String", "ros2msg", b"string data")
        chans = [w.register_channel(t, "cdr", sid) for t in ("/a", "/b")]
        for i in range(n):
            payload = bytes(rng.integers(0, 256, 300, dtype=np.uint8))
            w.add_message(chans[i % 2], 1_000_000_000 + i * 10_000_000, payload,
                          1_000_000_000 + i * 10_000_000 + 5, sequence=i)
        w.finish()


def test_cut_recording_keeps_every_whole_chunk_and_the_cut_chunks_messages(
        make_bag: Callable[..., Path], tmp_path: Path) -> None:
    bag = make_bag("mcap", duration_s=1.5)
    src = next(bag.glob("*.mcap"))
    data = src.read_bytes()
    original = messages(src)
    chunks = chunk_message_counts(data)
    assert len(chunks) > 4 and not is_truncated_mcap(src)
    # cut in the middle of a chunk's records (the synthetic bags' chunks are uncompressed)
    start, end, _ = chunks[len(chunks) // 2]
    cut_at = (start + end) // 2
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[:cut_at])
    assert is_truncated_mcap(cut)
    stats = recover_mcap(cut, tmp_path / "fixed.mcap")
    got = messages(tmp_path / "fixed.mcap")
    # what was written before the cut comes back byte for byte, in order, and nothing else
    assert got == original[:len(got)]
    whole = sum(n for s, e, n in chunks if e <= cut_at)
    assert stats.from_cut_chunk > 0
    assert len(got) == stats.message_count == whole + stats.from_cut_chunk
    assert not stats.complete and "cut at byte" in stats.stop_reason
    assert stats.bytes_read == start and stats.dropped == {}
    assert stats.first_ns == original[0][1] and stats.last_ns == max(m[1] for m in got)
    # the repaired file opens where the cut one did not
    with BagSource(tmp_path / "fixed.mcap") as b:
        topics, read = b.summary()
    assert sum(t.count for t in topics) == len(got) and not read.truncated
    with pytest.raises(BagError, match="recover"):
        BagSource(cut).__enter__()


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_compressed_chunks(compression: str, tmp_path: Path) -> None:
    src = tmp_path / "src.mcap"
    write_mcap(src, compression)
    data = src.read_bytes()
    original = messages(src)
    chunks = chunk_message_counts(data)
    assert len(chunks) > 3
    start, end, _ = chunks[-2]
    for cut_at in (start + 5, (start + end) // 2, end - 1, end + 3):
        out = tmp_path / f"fixed_{cut_at}.mcap"
        (tmp_path / "cut.mcap").write_bytes(data[:cut_at])
        stats = recover_mcap(tmp_path / "cut.mcap", out)
        got = messages(out)
        assert got == original[:len(got)]
        assert len(got) >= sum(n for s, e, n in chunks if e <= cut_at)
        if compression == "none" and cut_at == (start + end) // 2:
            assert stats.from_cut_chunk > 0  # uncompressed: the cut chunk's front survives


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_compressed_cut_chunk_is_decoded_up_to_the_cut(compression: str,
                                                         tmp_path: Path) -> None:
    # one big chunk (a recorder's default is about 1 MB): its compressed stream is cut in
    # the middle, and the blocks before the cut still decode
    src = tmp_path / "src.mcap"
    write_mcap(src, compression, n=3000, chunk_size=2_000_000)
    data = src.read_bytes()
    ((start, end, n),) = chunk_message_counts(data)
    (tmp_path / "cut.mcap").write_bytes(data[:(start + end) // 2])
    stats = recover_mcap(tmp_path / "cut.mcap", tmp_path / "fixed.mcap")
    got = messages(tmp_path / "fixed.mcap")
    assert n == 3000 and stats.from_cut_chunk == len(got) > 1000
    assert got == messages(src)[:len(got)]


def test_unchunked_file_keeps_every_message_before_the_cut(tmp_path: Path) -> None:
    src = tmp_path / "src.mcap"
    write_mcap(src, "none", chunked=False)
    data = src.read_bytes()
    original = messages(src)
    msg_records = [(s, e) for op, s, e in records(data) if op == 0x05]
    assert len(msg_records) == len(original) == 120
    cut_at = (msg_records[50][0] + msg_records[50][1]) // 2  # inside message 51
    (tmp_path / "cut.mcap").write_bytes(data[:cut_at])
    stats = recover_mcap(tmp_path / "cut.mcap", tmp_path / "fixed.mcap")
    assert messages(tmp_path / "fixed.mcap") == original[:50]
    assert stats.from_cut_chunk == 0 and "opcode 0x05" in stats.stop_reason


def test_complete_file_is_rewritten_whole_and_zeros_after_a_cut_stop_the_walk(
        tmp_path: Path) -> None:
    src = tmp_path / "src.mcap"
    write_mcap(src, "zstd")
    stats = recover_mcap(src, tmp_path / "copy.mcap")
    assert stats.complete and stats.stop_reason == "footer"
    assert messages(tmp_path / "copy.mcap") == messages(src)
    assert stats.messages == {"/a": 60, "/b": 60} and stats.schemas == 1
    # a file system may leave zeros after the last write of a crashed recorder
    data = src.read_bytes()
    start, _, _ = chunk_message_counts(data)[2]
    padded = tmp_path / "padded.mcap"
    padded.write_bytes(data[:start] + bytes(5000))
    assert is_truncated_mcap(padded)
    stats = recover_mcap(padded, tmp_path / "fixed.mcap")
    assert "zeros" in stats.stop_reason
    assert messages(tmp_path / "fixed.mcap") == messages(src)[:stats.message_count]


def test_a_damaged_chunk_is_skipped_and_the_walk_goes_on(tmp_path: Path) -> None:
    src = tmp_path / "src.mcap"
    write_mcap(src, "zstd")
    data = bytearray(src.read_bytes())
    original = messages(src)
    chunks = chunk_message_counts(bytes(data))
    start, end, n_bad = chunks[3]
    data[end - 20] ^= 0xFF  # bit rot inside the chunk's compressed records
    (tmp_path / "rot.mcap").write_bytes(bytes(data))
    stats = recover_mcap(tmp_path / "rot.mcap", tmp_path / "fixed.mcap")
    got = messages(tmp_path / "fixed.mcap")
    before = sum(n for _, _, n in chunks[:3])
    assert got == original[:before] + original[before + n_bad:]  # only that chunk is lost
    assert stats.dropped == {"damaged record (skipped)": 1} and stats.complete
    assert stats.damaged[0].startswith(f"opcode 0x06 at byte {start}")


def test_a_damaged_length_inside_a_chunk_never_becomes_a_message(
        make_bag: Callable[..., Path], tmp_path: Path) -> None:
    # the synthetic bags' chunks carry no CRC, so a damaged length field inside one is only
    # seen by checking every record against what is left of its chunk
    bag = make_bag("mcap", duration_s=1.5)
    src = next(bag.glob("*.mcap"))
    data = bytearray(src.read_bytes())
    original = messages(src)
    chunks = chunk_message_counts(bytes(data))
    k = len(chunks) // 2
    start, _, n_k = chunks[k]
    assert n_k >= 3
    (clen,) = struct.unpack_from("<I", data, start + 9 + 28)
    pos = start + 9 + 32 + clen + 8  # the chunk's first inner record
    for _ in range(2):  # to its third message (a middle chunk holds messages only)
        assert data[pos] == 0x05
        pos += 9 + struct.unpack_from("<Q", data, pos + 1)[0]
    struct.pack_into("<Q", data, pos + 1, 2**40)
    (tmp_path / "bad.mcap").write_bytes(bytes(data))
    stats = recover_mcap(tmp_path / "bad.mcap", tmp_path / "fixed.mcap")
    before = sum(n for _, _, n in chunks[:k])
    assert messages(tmp_path / "fixed.mcap") == (original[:before + 2]
                                                 + original[before + n_k:])
    assert stats.dropped == {"damaged chunk (kept up to the damage)": 1}
    assert "claims 1099511627776 bytes" in stats.damaged[0]


def test_messages_whose_channel_was_lost_are_counted_not_guessed(tmp_path: Path) -> None:
    src = tmp_path / "src.mcap"
    write_mcap(src, "none")
    data = src.read_bytes()
    recs = records(data)
    first_chunk = next(r for r in recs if r[0] == 0x06)  # holds the schema and channels
    # drop it and everything of the summary: the later chunks' messages have no channel
    kept = b"".join(data[s:e] for op, s, e in recs
                    if (s, e) != first_chunk[1:] and op in (0x01, 0x06, 0x07))
    damaged = tmp_path / "damaged.mcap"
    damaged.write_bytes(MAGIC + kept)
    stats = recover_mcap(damaged, tmp_path / "fixed.mcap")
    assert stats.message_count == 0 and stats.dropped["message without its channel"] > 0


def test_without_the_mcap_package_the_error_says_so(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    src = tmp_path / "src.mcap"
    write_mcap(src, "none")
    monkeypatch.setitem(sys.modules, "mcap.records", None)  # import fails
    with pytest.raises(BagError, match="pip install mcap"):
        recover_mcap(src, tmp_path / "o.mcap")


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    src = tmp_path / "src.mcap"
    write_mcap(src, "none")
    with pytest.raises(BagError, match="no MCAP file"):
        recover_mcap(tmp_path / "nope.mcap", tmp_path / "o.mcap")
    with pytest.raises(BagError, match=r"\.mcap"):
        recover_mcap(src, tmp_path / "o.db3")
    with pytest.raises(BagError, match="never overwrites"):
        recover_mcap(src, src)
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"not an mcap file at all" * 10)
    with pytest.raises(BagError, match="not an MCAP file"):
        recover_mcap(garbage, tmp_path / "o.mcap")
    assert not (tmp_path / "o.mcap").exists()
    assert not is_truncated_mcap(garbage) and not is_truncated_mcap(tmp_path / "nope")


def test_cli_points_at_recover_and_recover_repairs_the_bag(
        make_bag: Callable[..., Path], rig_path: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    bag = make_bag("mcap", duration_s=1.5)
    mcap_file = next(bag.glob("*.mcap"))
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[: int(len(data) * 0.7)])  # a recorder killed mid-write
    assert main(["info", str(bag)]) == 2
    err = capsys.readouterr().err
    assert "ends without its footer" in err and "mm-perception recover" in err
    fixed = tmp_path / "fixed.mcap"
    assert main(["recover", str(bag), "--out", str(fixed)]) == 0
    out = capsys.readouterr().out
    assert "cut at byte" in out and "/sensors/lidar/points" in out
    assert main(["replay", str(fixed), "--rig", str(rig_path), "--offline",
                 "--out", str(tmp_path / "o")]) == 0
    assert "sets" in capsys.readouterr().out
    # nothing to salvage: exit status 1
    empty = tmp_path / "empty.mcap"
    empty.write_bytes(MAGIC)
    assert main(["recover", str(empty), "--out", str(tmp_path / "e.mcap")]) == 1


def test_killed_recorder_folder_without_metadata_names_its_file(
        make_bag: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    # rosbag2 writes metadata.yaml when the recording ends: a killed recorder leaves none
    for storage in ("sqlite3", "mcap"):
        bag = make_bag(storage, name=f"killed_{storage}")
        (bag / "metadata.yaml").unlink()
        (storage_file,) = [f for f in bag.iterdir() if f.suffix in (".db3", ".mcap")]
        if storage == "mcap":
            data = storage_file.read_bytes()
            storage_file.write_bytes(data[: len(data) // 2])
        assert main(["info", str(bag)]) == 2
        err = capsys.readouterr().err
        assert f"pass the storage file itself: {storage_file}" in err
        assert ("mm-perception recover" in err) == (storage == "mcap")
        if storage == "sqlite3":  # the database itself reads
            assert main(["info", str(storage_file)]) == 0
            capsys.readouterr()
