"""Tests of mm_perception.core.sync (SyncConfig, SyncCollector)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_perception.core.errors import ConfigError
from mm_perception.core.sync import MatchedSet, SyncCollector, SyncConfig

MS = 1_000_000
S = 1_000_000_000

Msg = tuple[str, int, str]  # sensor, raw stamp (ns), payload


def make_config(**kw: Any) -> SyncConfig:
    base: dict[str, Any] = dict(reference="lidar", sensors=("lidar", "camera", "radar"),
                                window_ns=50 * MS, timeout_ns=200 * MS,
                                on_timeout="emit_partial")
    base.update(kw)
    return SyncConfig(**base)


def make_streams(rng: np.random.Generator, duration_ns: int = 3 * S,
                 start_ns: int = 1 * S) -> list[Msg]:
    """10 Hz lidar, 30 Hz camera, 13 Hz radar, each with jitter; raw stamps, time-sorted."""
    msgs: list[Msg] = []
    for sensor, period, jitter in (("lidar", 100 * MS, 1 * MS), ("camera", 33_333_333, 2 * MS),
                                   ("radar", 76_923_077, 3 * MS)):
        n = duration_ns // period
        stamps = start_ns + np.arange(n) * period + rng.integers(-jitter, jitter + 1, n)
        msgs += [(sensor, int(t), f"{sensor}#{k}") for k, t in enumerate(stamps)]
    return msgs


def brute_force(msgs: Sequence[Msg], cfg: SyncConfig) -> list[tuple[int, dict[str, int],
                                                                    tuple[str, ...]]]:
    """Nearest message of every sensor for every reference message (ties: earlier)."""
    corrected = [(s, t + cfg.time_offsets_ns.get(s, 0)) for s, t, _ in msgs]
    out = []
    for t_ref in sorted(t for s, t in corrected if s == cfg.reference):
        match = {cfg.reference: t_ref}
        missing = []
        for sensor in cfg.sensors:
            if sensor == cfg.reference:
                continue
            cands = sorted((abs(t - t_ref), t) for s, t in corrected if s == sensor
                           and abs(t - t_ref) <= cfg.window_ns)
            if cands:
                match[sensor] = cands[0][1]
            elif sensor not in cfg.optional:
                missing.append(sensor)
        out.append((t_ref, match, tuple(sorted(missing))))
    return out


def summarise(sets: Sequence[MatchedSet[str]]) -> list[tuple[int, dict[str, int],
                                                              tuple[str, ...]]]:
    return [(m.stamp_ns, {s: st for s, (st, _) in m.items.items()}, m.missing) for m in sets]


def run(collector: SyncCollector[str], msgs: Sequence[Msg], flush: bool = True
        ) -> list[MatchedSet[str]]:
    out: list[MatchedSet[str]] = []
    for sensor, stamp, payload in msgs:
        out += collector.add(sensor, stamp, payload)
    if flush:
        out += collector.flush()
    return out


def arrival_order(msgs: Sequence[Msg], cfg: SyncConfig, rng: np.random.Generator,
                  max_latency_ns: int) -> list[Msg]:
    """Sort by corrected stamp + random latency in [0, max_latency_ns]."""
    lat = rng.integers(0, max_latency_ns + 1, len(msgs))
    keys = [t + cfg.time_offsets_ns.get(s, 0) + int(d) for (s, t, _), d in zip(msgs, lat,
                                                                                strict=True)]
    return [msgs[i] for i in np.argsort(keys, kind="stable")]


# ---------------------------------------------------------------------------- config
def test_config_validation_names_the_bad_value() -> None:
    with pytest.raises(ConfigError, match="'imu'"):
        make_config(reference="imu")
    with pytest.raises(ConfigError, match="window_ns"):
        make_config(window_ns=0)
    with pytest.raises(ConfigError, match="window_ns"):
        make_config(window_ns=True)
    with pytest.raises(ConfigError, match="timeout_ns"):
        make_config(timeout_ns=10 * MS)
    with pytest.raises(ConfigError, match="'sometimes'"):
        make_config(on_timeout="sometimes")
    with pytest.raises(ConfigError, match="'gps'"):
        make_config(time_offsets_ns={"gps": 5})
    with pytest.raises(ConfigError, match="camera"):
        make_config(time_offsets_ns={"camera": 0.5})
    with pytest.raises(ConfigError, match="cannot be optional"):
        make_config(optional=("lidar",))
    with pytest.raises(ConfigError, match="'sonar'"):
        make_config(optional=("sonar",))
    with pytest.raises(ConfigError, match="max_buffer"):
        make_config(max_buffer=0)
    with pytest.raises(ConfigError, match="reset_threshold_ns"):
        make_config(reset_threshold_ns=200 * MS)
    with pytest.raises(ConfigError, match="more than once"):
        make_config(sensors=("lidar", "camera", "camera"))
    with pytest.raises(ConfigError, match="empty"):
        make_config(sensors=())


def test_config_from_mapping() -> None:
    cfg = SyncConfig.from_mapping({"reference": "lidar", "window_s": 0.04, "timeout_s": 0.25,
                                   "on_timeout": "drop", "max_buffer": 10,
                                   "reset_threshold_s": 2},
                                  ["lidar", "camera"], {"camera": -3 * MS}, optional=["camera"])
    assert cfg.window_ns == 40 * MS
    assert cfg.timeout_ns == 250 * MS
    assert cfg.reset_threshold_ns == 2 * S
    assert cfg.on_timeout == "drop"
    assert cfg.max_buffer == 10
    assert cfg.time_offsets_ns == {"camera": -3 * MS}
    assert cfg.optional == ("camera",)
    defaults = SyncConfig.from_mapping({}, ["lidar"], {})
    assert defaults.reference == "lidar"
    assert (defaults.window_ns, defaults.timeout_ns) == (50 * MS, 200 * MS)
    assert defaults.on_timeout == "emit_partial"


@pytest.mark.parametrize(("data", "match"), [
    ({"reference": "lidar", "windw_s": 0.1}, "windw_s"),
    ({"window_s": 0.1}, "reference is required"),
    ({"reference": "lidar", "window_s": -0.1}, "window_s"),
    ({"reference": "lidar", "timeout_s": "fast"}, "timeout_s"),
    ({"reference": "lidar", "max_buffer": 2.5}, "max_buffer"),
    ({"reference": 3}, "reference"),
    ({"reference": "lidar", "on_timeout": "ignore"}, "ignore"),
])
def test_config_from_mapping_errors(data: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SyncConfig.from_mapping(data, ["lidar", "camera"], {})


# ---------------------------------------------------------------------------- matching
def test_three_streams_match_brute_force_nearest() -> None:
    rng = np.random.default_rng(0)
    cfg = make_config(time_offsets_ns={"camera": -3 * MS, "radar": 7 * MS})
    msgs = make_streams(rng)
    sets = run(SyncCollector[str](cfg), sorted(msgs, key=lambda m: m[1]))
    expected = brute_force(msgs, cfg)
    assert summarise(sets) == expected
    assert len(sets) == sum(1 for m in msgs if m[0] == "lidar")
    assert all(not m.partial for m in sets)
    # payloads travel with their (corrected) stamps
    raw = {(s, t + cfg.time_offsets_ns.get(s, 0)): p for s, t, p in msgs}
    for m in sets:
        for sensor, (stamp, payload) in m.items.items():
            assert raw[(sensor, stamp)] == payload
    # the offsets matter: without them the matches differ
    plain = make_config()
    assert summarise(run(SyncCollector[str](plain), msgs)) != expected


def test_cross_stream_disorder_gives_the_same_sets() -> None:
    rng = np.random.default_rng(1)
    cfg = make_config(time_offsets_ns={"camera": -3 * MS, "radar": 7 * MS})
    msgs = make_streams(rng)
    in_order = summarise(run(SyncCollector[str](cfg), arrival_order(msgs, cfg, rng, 0)))
    # latencies up to 15 ms shuffle the streams against each other, each stays in order
    shuffled = arrival_order(msgs, cfg, rng, 15 * MS)
    assert shuffled != sorted(msgs, key=lambda m: m[1])
    collector = SyncCollector[str](cfg)
    assert summarise(run(collector, shuffled)) == in_order == brute_force(msgs, cfg)
    assert sum(collector.stats.out_of_order.values()) == 0


def test_out_of_order_within_a_stream_is_counted_and_used() -> None:
    cfg = make_config(sensors=("lidar", "camera"))
    c = SyncCollector[str](cfg)
    out = c.add("camera", 1_000 * MS, "c0")
    out += c.add("camera", 1_040 * MS, "c2")
    out += c.add("camera", 1_020 * MS, "c1")  # late by 20 ms, still usable
    out += c.add("lidar", 1_021 * MS, "l0")
    assert c.stats.out_of_order["camera"] == 1
    assert summarise(out) == [(1_021 * MS, {"lidar": 1_021 * MS, "camera": 1_020 * MS}, ())]
    assert out[0].items["camera"][1] == "c1"


def test_partial_when_a_sensor_stops() -> None:
    rng = np.random.default_rng(2)
    cfg = make_config()
    msgs = [m for m in make_streams(rng) if not (m[0] == "radar" and m[1] > 2 * S)]
    c = SyncCollector[str](cfg)
    before_flush = run(c, sorted(msgs, key=lambda m: m[1]), flush=False)
    sets = before_flush + c.flush()
    assert summarise(sets) == brute_force(msgs, cfg)
    partial = [m for m in sets if m.partial]
    assert partial and all(m.missing == ("radar",) and "radar" not in m.items for m in partial)
    assert all(m.stamp_ns > 2 * S for m in partial)
    # they came out through the data-clock timeout while the stream went on, not only at flush
    assert sum(m.partial for m in before_flush) >= len(partial) - 2
    stats = c.stats
    assert stats.partial == len(partial)
    assert stats.complete == len(sets) - len(partial)


def test_definitively_missing_is_emitted_before_the_timeout() -> None:
    cfg = make_config(sensors=("lidar", "camera"), timeout_ns=10 * S, reset_threshold_ns=20 * S)
    c = SyncCollector[str](cfg)
    assert c.add("lidar", 1_000 * MS, "l0") == []
    assert c.add("camera", 940 * MS, "too early to decide") == []
    out = c.add("camera", 1_060 * MS, "c")  # camera passed t + window with nothing inside
    assert [(m.stamp_ns, m.missing, m.partial) for m in out] == [(1_000 * MS, ("camera",),
                                                                  True)]
    assert "camera" not in out[0].items


def test_drop_mode_drops_partial_sets() -> None:
    rng = np.random.default_rng(3)
    msgs = [m for m in make_streams(rng) if not (m[0] == "radar" and m[1] > 2 * S)]
    c = SyncCollector[str](make_config(on_timeout="drop"))
    sets = run(c, sorted(msgs, key=lambda m: m[1]))
    expected = [e for e in brute_force(msgs, make_config()) if not e[2]]
    assert summarise(sets) == expected
    stats = c.stats
    assert stats.dropped_partial > 0 and stats.partial == 0
    assert stats.complete + stats.dropped_partial == stats.received["lidar"]


def test_timeout_via_poll() -> None:
    cfg = make_config(sensors=("lidar", "camera"))
    c = SyncCollector[str](cfg)
    assert c.add("lidar", 5 * S, "l0") == []
    assert c.poll(5 * S + 200 * MS) == []  # exactly at the timeout: still waiting
    assert c.pending == 1
    out = c.poll(5 * S + 200 * MS + 1)
    assert [(m.stamp_ns, m.missing) for m in out] == [(5 * S, ("camera",))]
    assert c.pending == 0 and c.poll(10 * S) == []
    with pytest.raises(ValueError, match="now_ns"):
        c.poll(-1)


def test_timeout_via_data_clock() -> None:
    cfg = make_config(sensors=("lidar", "camera"))
    c = SyncCollector[str](cfg)
    assert c.add("lidar", 5 * S, "l0") == []
    assert c.add("lidar", 5 * S + 100 * MS, "l1") == []
    out = c.add("lidar", 5 * S + 201 * MS, "l2")  # data clock passes the first set's timeout
    assert [m.stamp_ns for m in out] == [5 * S]


def test_optional_sensor_is_not_waited_for() -> None:
    cfg = make_config(optional=("radar",), timeout_ns=900 * MS)
    c = SyncCollector[str](cfg)
    out = c.add("lidar", 10 * S, "l0")
    out += c.add("radar", 10 * S + 10 * MS, "r0")
    out += c.add("camera", 10 * S + 10 * MS, "c0")
    assert [sorted(m.items) for m in out] == [["camera", "lidar", "radar"]]
    # radar falls silent: the next set is complete once the data clock is past the window
    out = c.add("lidar", 10 * S + 100 * MS, "l1")
    out += c.add("camera", 10 * S + 100 * MS, "c1")
    assert out == []
    out = c.add("camera", 10 * S + 151 * MS, "c2")
    assert [(m.stamp_ns, m.partial, sorted(m.items)) for m in out] == [
        (10 * S + 100 * MS, False, ["camera", "lidar"])]
    assert c.stats.complete == 2 and c.stats.partial == 0


def test_backwards_clock_jump_flushes_and_restarts() -> None:
    rng = np.random.default_rng(4)
    cfg = make_config()
    msgs = sorted(make_streams(rng), key=lambda m: m[1])
    c = SyncCollector[str](cfg)
    sets = run(c, msgs + msgs)  # a looped bag
    once = brute_force(msgs, cfg)
    assert summarise(sets) == once + once
    stats = c.stats
    assert stats.clock_jumps == 1
    assert sum(stats.duplicates.values()) == 0 and sum(stats.late.values()) == 0
    assert stats.complete + stats.partial == 2 * len(once)


def test_duplicates_unknown_and_invalid_stamps_are_counted() -> None:
    cfg = make_config(sensors=("lidar", "camera"), time_offsets_ns={"camera": -5 * MS})
    c = SyncCollector[str](cfg)
    assert c.add("camera", 1_000 * MS, "c0") == []
    assert c.add("camera", 1_000 * MS, "c0 again") == []
    assert c.add("imu", 1_000 * MS, "?") == []
    assert c.add("camera", -1, "neg") == []
    assert c.add("camera", 1.5, "float") == []  # type: ignore[arg-type]
    assert c.add("camera", 3 * MS, "negative after the offset") == []
    assert c.add("lidar", None, "none") == []  # type: ignore[arg-type]
    out = c.add("lidar", 1_000 * MS, "l0")
    out += c.add("lidar", 1_000 * MS, "l0 again")
    out += c.add("camera", 1_050 * MS, "c1")
    assert summarise(out) == [(1_000 * MS, {"lidar": 1_000 * MS, "camera": 995 * MS}, ())]
    assert out[0].items["camera"][1] == "c0"
    stats = c.stats
    assert stats.duplicates == {"lidar": 1, "camera": 1}
    assert stats.unknown_sensor == 1
    assert stats.invalid_stamp == 4
    assert stats.received == {"lidar": 3, "camera": 6}
    json.dumps(stats.as_dict())


def test_late_messages_are_dropped() -> None:
    cfg = make_config(sensors=("lidar", "camera"))
    c = SyncCollector[str](cfg)
    run(c, [("lidar", 1_000 * MS, "l0"), ("camera", 1_000 * MS, "c0"),
            ("lidar", 1_100 * MS, "l1"), ("camera", 1_100 * MS, "c1")], flush=False)
    assert c.stats.complete == 2
    assert c.add("lidar", 1_050 * MS, "older than the last emitted set") == []
    assert c.add("camera", 1_040 * MS, "cannot reach any future set") == []
    assert c.stats.late == {"lidar": 1, "camera": 1}


def test_flush_resolves_pending_sets() -> None:
    cfg = make_config(sensors=("lidar", "camera"))
    c = SyncCollector[str](cfg)
    assert c.add("camera", 990 * MS, "c0") == []
    assert c.add("lidar", 1_000 * MS, "l0") == []  # camera might still send something closer
    assert c.add("lidar", 1_100 * MS, "l1") == []
    out = c.flush()
    assert summarise(out) == [(1_000 * MS, {"lidar": 1_000 * MS, "camera": 990 * MS}, ()),
                              (1_100 * MS, {"lidar": 1_100 * MS}, ("camera",))]
    assert c.pending == 0 and c.flush() == []


def test_buffer_overflow_evicts_oldest() -> None:
    cfg = make_config(sensors=("lidar", "camera"), max_buffer=4)
    c = SyncCollector[str](cfg)
    for k in range(10):  # the reference is silent: the camera buffer fills up
        assert c.add("camera", 1 * S + k * 10 * MS, f"c{k}") == []
    assert c.stats.overflow["camera"] == 6
    out = c.add("lidar", 1 * S + 20 * MS, "l0")  # c2 would be exact but was evicted
    out += c.flush()
    assert summarise(out) == [(1 * S + 20 * MS, {"lidar": 1 * S + 20 * MS,
                                                 "camera": 1 * S + 60 * MS}, ())]
    # too many pending sets: the oldest is resolved early
    c = SyncCollector[str](make_config(sensors=("lidar", "camera"), max_buffer=3,
                                       timeout_ns=10 * S, reset_threshold_ns=20 * S))
    out = run(c, [("lidar", 1 * S + k * 100 * MS, f"l{k}") for k in range(5)], flush=False)
    assert [m.stamp_ns for m in out] == [1 * S, 1 * S + 100 * MS]
    assert c.stats.overflow["lidar"] == 2 and c.pending == 3


def test_reset_forgets_everything() -> None:
    c = SyncCollector[str](make_config(sensors=("lidar", "camera")))
    c.add("lidar", 1 * S, "l0")
    c.reset()
    assert c.pending == 0 and c.flush() == []
    assert c.stats.received == {"lidar": 0, "camera": 0}


def test_single_sensor_emits_immediately() -> None:
    c = SyncCollector[str](SyncConfig.from_mapping({}, ["lidar"], {}))
    assert summarise(c.add("lidar", 7, "l")) == [(7, {"lidar": 7}, ())]


# ---------------------------------------------------------------------------- property
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), max_latency_ms=st.integers(0, 120),
       drop_prob=st.floats(0.0, 0.5), on_timeout=st.sampled_from(["emit_partial", "drop"]),
       max_buffer=st.sampled_from([2, 8, 64]), duplicate=st.booleans())
def test_property_bounded_disorder(seed: int, max_latency_ms: int, drop_prob: float,
                                   on_timeout: str, max_buffer: int, duplicate: bool) -> None:
    rng = np.random.default_rng(seed)
    cfg = make_config(on_timeout=on_timeout, max_buffer=max_buffer,
                      time_offsets_ns={"camera": -3 * MS, "radar": 7 * MS})
    msgs = [m for m in make_streams(rng, duration_ns=2 * S)
            if rng.random() >= drop_prob or m[0] == "lidar"]
    if duplicate:
        msgs += msgs[:: 7]
    arrivals = arrival_order(msgs, cfg, rng, max_latency_ms * MS)
    c = SyncCollector[str](cfg)
    sets = run(c, arrivals)
    stats = c.stats
    ref_stamps = [t for s, t, _ in msgs if s == "lidar"]
    # every accepted reference message yields exactly one emitted-or-dropped set
    assert stats.received["lidar"] == len(ref_stamps)
    accepted = stats.received["lidar"] - stats.late["lidar"] - stats.duplicates["lidar"]
    assert accepted == stats.complete + stats.partial + stats.dropped_partial
    assert len(sets) == stats.complete + stats.partial
    assert stats.clock_jumps == 0 and stats.invalid_stamp == 0
    stamps = [m.stamp_ns for m in sets]
    assert stamps == sorted(set(stamps))  # strictly increasing, no set twice
    for m in sets:
        assert m.stamp_ns in ref_stamps
        assert m.items["lidar"][0] == m.stamp_ns
        assert set(m.missing) == {"camera", "radar"} - set(m.items)
        assert m.partial == bool(m.missing)
        if on_timeout == "drop":
            assert not m.partial
        for stamp, _ in m.items.values():
            assert abs(stamp - m.stamp_ns) <= cfg.window_ns


def test_tie_goes_to_the_earlier_message_and_frames_serve_several_sets() -> None:
    cfg = make_config(sensors=("lidar", "camera"))
    c = SyncCollector[str](cfg)
    out = run(c, [("camera", 990 * MS, "c0"), ("lidar", 1_000 * MS, "l0"),
                  ("camera", 1_010 * MS, "c1"), ("lidar", 1_020 * MS, "l1"),
                  ("camera", 1_100 * MS, "c2")])
    assert [(m.stamp_ns, m.items["camera"][1]) for m in out] == [(1_000 * MS, "c0"),
                                                                (1_020 * MS, "c1")]
    # a camera frame nearest to two sweeps is given to both
    c = SyncCollector[str](cfg)
    out = run(c, [("lidar", 1_000 * MS, "l0"), ("camera", 1_015 * MS, "c0"),
                  ("lidar", 1_030 * MS, "l1"), ("camera", 1_200 * MS, "c1")])
    assert [m.items["camera"][1] for m in out] == ["c0", "c0"]
