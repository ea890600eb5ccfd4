"""Driving tasks and their natural-language instructions (templated paraphrases).

A :class:`Task` is what the ego must do in one episode of the instruction-following suite
(:mod:`mm_perception.planning.suite`); :func:`render_instruction` writes it as a sentence.
Every task kind has a fixed list of wordings, split deterministically into TRAIN phrasings
(the only ones a learned policy ever sees in training) and HELD-OUT phrasings (used to test
whether it understood the instruction rather than memorised a sentence). Speeds are written
in km/h by some templates and in m/s by others; the named colours of :data:`COLOURS` are the
ones the suite paints vehicles with, so a colour word always names an unambiguous paint.
"""

from __future__ import annotations

import enum
import functools
import math
import re
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from mm_perception.core.errors import ConfigError


class TaskKind(str, enum.Enum):
    """What the instruction asks for."""

    FOLLOW_SPEED = "follow_speed"
    STOP_BEHIND = "stop_behind"
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    GO_STRAIGHT = "go_straight"
    YIELD_PEDESTRIANS = "yield_pedestrians"
    PULL_OVER = "pull_over"
    CHANGE_LANE_LEFT = "change_lane_left"
    CHANGE_LANE_RIGHT = "change_lane_right"


#: task kinds whose instruction carries parameters (a speed; the colour and class of a
#: vehicle): the wording says more than the kind
PARAMETRIC_KINDS: frozenset[TaskKind] = frozenset({TaskKind.FOLLOW_SPEED, TaskKind.STOP_BEHIND})

#: named paint colours, RGB in [0, 1] (well apart from each other and from the asphalt grey)
COLOURS: Mapping[str, tuple[float, float, float]] = MappingProxyType({
    "red": (0.80, 0.07, 0.06),
    "blue": (0.08, 0.20, 0.75),
    "white": (0.93, 0.93, 0.93),
    "yellow": (0.92, 0.78, 0.08),
    "green": (0.10, 0.55, 0.18),
    "black": (0.05, 0.05, 0.06),
})

#: vehicle classes a stop_behind instruction can name (the simulator's vehicle classes)
TARGET_CLASSES: tuple[str, ...] = ("car", "truck", "bus")


@dataclass(frozen=True)
class Task:
    """One task of the suite.

    Attributes:
        kind: what to do.
        speed_mps: target speed, m/s (follow_speed only, > 0).
        target_colour: a key of :data:`COLOURS` (stop_behind only).
        target_class: one of :data:`TARGET_CLASSES` (stop_behind only).

    Raises:
        ConfigError: a missing or stray parameter for the kind, or a bad value.
    """

    kind: TaskKind
    speed_mps: float | None = None
    target_colour: str | None = None
    target_class: str | None = None

    def __post_init__(self) -> None:
        try:
            kind = TaskKind(self.kind)
        except ValueError:
            raise ConfigError(f"Task.kind must be one of {[k.value for k in TaskKind]}, got "
                              f"{self.kind!r}") from None
        object.__setattr__(self, "kind", kind)
        if kind is TaskKind.FOLLOW_SPEED:
            v = self.speed_mps
            if isinstance(v, bool) or not isinstance(v, int | float) or not (
                    math.isfinite(v) and 0.0 < v <= 30.0):
                raise ConfigError(f"Task.speed_mps must be in (0, 30] m/s for follow_speed, "
                                  f"got {v!r}")
            object.__setattr__(self, "speed_mps", float(v))
        elif self.speed_mps is not None:
            raise ConfigError(f"Task.speed_mps is only for follow_speed, got {self.speed_mps!r} "
                              f"for {kind.value}")
        if kind is TaskKind.STOP_BEHIND:
            if self.target_colour not in COLOURS:
                raise ConfigError(f"Task.target_colour must be one of {list(COLOURS)}, got "
                                  f"{self.target_colour!r}")
            if self.target_class not in TARGET_CLASSES:
                raise ConfigError(f"Task.target_class must be one of {list(TARGET_CLASSES)}, "
                                  f"got {self.target_class!r}")
        elif self.target_colour is not None or self.target_class is not None:
            raise ConfigError(f"Task.target_colour / target_class are only for stop_behind, "
                              f"got {self.target_colour!r} / {self.target_class!r} for "
                              f"{kind.value}")


# Placeholders: {kmh} (integer km/h), {mps} (m/s, up to one decimal), {colour}, {cls}.
# The last two wordings of every list are HELD-OUT (see HELDOUT_PER_KIND).
_TEMPLATES: Mapping[TaskKind, tuple[str, ...]] = MappingProxyType({
    TaskKind.FOLLOW_SPEED: (
        "drive at {kmh} km/h",
        "keep your speed at {mps} m/s",
        "hold {kmh} kilometres per hour in this lane",
        "go {mps} metres per second",
        "cruise at {kmh} km/h and stay in lane",
        "maintain a speed of {mps} m/s",
        "set the speed to {kmh} km/h",
        "speed up or slow down to {mps} m/s",
        "travel at {kmh} kph",
        "please go {kmh} km/h",
        "target speed {mps} m/s",
        "keep to {kmh} km/h in the current lane",
        "your speed should be {mps} metres per second",
        "follow the road at {kmh} kilometres an hour",
        "stay in your lane at about {kmh} km per hour",
        "adjust to {mps} m/s and keep going",
    ),
    TaskKind.STOP_BEHIND: (
        "stop behind the {colour} {cls}",
        "pull up behind the {colour} {cls}",
        "halt just behind the {colour} {cls}",
        "come to a stop behind the {colour} {cls}",
        "park the car behind the {colour} {cls}",
        "stop right after you reach the {colour} {cls}",
        "stop when you get to the {colour} {cls}",
        "come to rest behind the {colour} {cls}",
        "pull in behind that {colour} {cls}",
        "halt behind the {colour} {cls} ahead",
        "drive up to the {colour} {cls} and stop behind it",
        "stop at the back of the {colour} {cls}",
        "please stop once you are behind the {colour} {cls}",
        "queue up behind the {colour} {cls}",
        "bring us to a halt a few metres short of the {colour} {cls}",
        "wait behind the parked {colour} {cls}",
    ),
    TaskKind.TURN_LEFT: (
        "turn left at the intersection",
        "take the next left",
        "go left at the junction",
        "make a left turn up ahead",
        "turn left",
        "at the crossing, head left",
        "turn to the left at the intersection",
        "left turn at the junction please",
        "go left when we get to the intersection",
        "at the intersection, turn left",
        "take the left turn",
        "make a left at the intersection",
        "steer left at the junction ahead",
        "turn left up ahead at the junction",
        "hang a left at the next junction",
        "take a left when you reach the crossroads",
    ),
    TaskKind.TURN_RIGHT: (
        "turn right at the intersection",
        "take the next right",
        "go right at the junction",
        "make a right turn up ahead",
        "turn right",
        "at the crossing, head right",
        "turn to the right at the intersection",
        "right turn at the junction please",
        "go right when we get to the intersection",
        "at the intersection, turn right",
        "take the right turn",
        "make a right at the intersection",
        "steer right at the junction ahead",
        "turn right up ahead at the junction",
        "hang a right at the next junction",
        "take a right when you reach the crossroads",
    ),
    TaskKind.GO_STRAIGHT: (
        "go straight through the intersection",
        "continue straight ahead",
        "drive straight on at the junction",
        "keep going straight",
        "don't turn, cross the junction straight",
        "head straight across",
        "go straight",
        "straight through the junction please",
        "cross the intersection without turning",
        "keep straight at the intersection",
        "continue straight through the junction",
        "go straight over the intersection",
        "keep heading straight ahead at the junction",
        "drive through the intersection straight ahead",
        "carry straight on over the crossroads",
        "no turns at the junction, just go straight",
    ),
    TaskKind.YIELD_PEDESTRIANS: (
        "yield to the pedestrians",
        "let the pedestrians cross first",
        "give way to people on the crosswalk",
        "watch out for pedestrians and let them pass",
        "stop for anyone crossing, then continue",
        "be careful, people are crossing ahead",
        "give way to the pedestrians",
        "let the people cross the road",
        "stop for the pedestrians crossing",
        "pedestrians are crossing, let them go first",
        "wait until the pedestrians have crossed",
        "yield to anyone on the crosswalk",
        "let the pedestrians go before you continue",
        "slow down and let people cross",
        "wait for the walkers at the zebra crossing before you drive on",
        "make sure the people crossing get across before you continue",
    ),
    TaskKind.PULL_OVER: (
        "pull over",
        "pull over to the side of the road",
        "stop on the shoulder",
        "park on the hard shoulder",
        "move to the shoulder and stop",
        "pull onto the shoulder and wait there",
        "pull over and stop",
        "stop at the side of the road",
        "please pull over here",
        "park at the side of the road",
        "move over to the shoulder and stop there",
        "pull in to the side and stop",
        "go to the shoulder and park",
        "stop the car on the shoulder",
        "get off the lane and stop at the roadside",
        "find a spot at the edge of the road and come to a stop",
    ),
    TaskKind.CHANGE_LANE_LEFT: (
        "change to the left lane",
        "move over one lane to the left",
        "switch into the left lane",
        "merge left",
        "change lanes to the left",
        "get into the left lane",
        "move to the left lane",
        "go into the left lane",
        "change into the lane to the left",
        "lane change to the left",
        "move one lane left",
        "take the left lane",
        "switch lanes to the left",
        "please use the left lane",
        "shift across to the lane on your left",
        "move into the lane beside us on the left",
    ),
    TaskKind.CHANGE_LANE_RIGHT: (
        "change to the right lane",
        "move over one lane to the right",
        "switch into the right lane",
        "merge right",
        "change lanes to the right",
        "get into the right lane",
        "move to the right lane",
        "go into the right lane",
        "change into the lane to the right",
        "lane change to the right",
        "move one lane right",
        "take the right lane",
        "switch lanes to the right",
        "please use the right lane",
        "shift across to the lane on your right",
        "move into the lane beside us on the right",
    ),
})

#: number of held-out wordings per kind (the last ones of each list)
HELDOUT_PER_KIND = 2

SPLITS = ("train", "heldout")


def check_kind_split(kind: TaskKind | str, split: str) -> TaskKind:
    """``kind`` as a :class:`TaskKind`, after checking it and ``split``.

    Raises:
        ConfigError: unknown kind or split (the message lists the allowed ones).
    """
    try:
        k = TaskKind(kind)
    except ValueError:
        raise ConfigError(f"unknown task kind {kind!r} (allowed: "
                          f"{', '.join(t.value for t in TaskKind)})") from None
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    return k


def phrasings(kind: TaskKind | str, split: str = "train") -> tuple[str, ...]:
    """The templates of ``kind`` in ``split`` (``train`` or ``heldout``), in a fixed order.

    Raises:
        ConfigError: unknown kind or split.
    """
    k = check_kind_split(kind, split)
    templates = _TEMPLATES[k]
    return templates[:-HELDOUT_PER_KIND] if split == "train" else templates[-HELDOUT_PER_KIND:]


def _speed_text(speed_mps: float) -> tuple[str, str]:
    """``(km/h, m/s)`` texts of a speed: whole km/h, m/s with at most one decimal."""
    kmh = f"{round(speed_mps * 3.6):d}"
    mps = f"{round(speed_mps, 1):g}"
    return kmh, mps


def render_instruction(task: Task, rng_or_index: np.random.Generator | int,
                       split: str = "train") -> str:
    """``task`` written with one wording of ``split``.

    Args:
        task: the task.
        rng_or_index: a generator (draws the wording uniformly) or an index (wording
            ``index % count``, for enumerating every wording).
        split: ``train`` or ``heldout``.

    Returns:
        The instruction sentence (lower case, no final full stop).

    Raises:
        ConfigError: unknown split; TypeError for a bad ``rng_or_index``.
    """
    templates = phrasings(task.kind, split)
    if isinstance(rng_or_index, np.random.Generator):
        idx = int(rng_or_index.integers(len(templates)))
    elif isinstance(rng_or_index, int | np.integer) and not isinstance(rng_or_index, bool):
        idx = int(rng_or_index) % len(templates)
    else:
        raise TypeError(f"rng_or_index must be a numpy Generator or an int, got "
                        f"{type(rng_or_index).__name__}")
    kmh, mps = _speed_text(task.speed_mps) if task.speed_mps is not None else ("", "")
    return templates[idx].format(kmh=kmh, mps=mps, colour=task.target_colour or "",
                                 cls=task.target_class or "")


@functools.cache
def _template_patterns() -> tuple[tuple[TaskKind, re.Pattern[str]], ...]:
    """Every wording of every split as a regex whose groups are its placeholders."""
    fields = {"kmh": r"(?P<kmh>\d+)", "mps": r"(?P<mps>\d+(?:\.\d)?)",
              "colour": "(?P<colour>" + "|".join(map(re.escape, COLOURS)) + ")",
              "cls": "(?P<cls>" + "|".join(map(re.escape, TARGET_CLASSES)) + ")"}
    out = []
    for kind, templates in _TEMPLATES.items():
        for template in templates:
            parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, ...
            body = "".join(fields[x] if i % 2 else re.escape(x) for i, x in enumerate(parts))
            out.append((kind, re.compile(body)))
    return tuple(out)


def parse_instruction(text: str) -> Task | None:
    """The task a suite instruction was rendered from (the inverse of
    :func:`render_instruction`, any split), or None for any other sentence.

    A speed written in km/h comes back as ``km/h / 3.6`` m/s (the wording rounded it to
    whole km/h). Used to re-word demonstrations (a sample recorded with one wording is
    trained with the other training wordings of the same task).
    """
    for kind, pattern in _template_patterns():
        m = pattern.fullmatch(text)
        if m is None:
            continue
        found = m.groupdict()
        if kind is TaskKind.FOLLOW_SPEED:
            speed = float(found["kmh"]) / 3.6 if "kmh" in found else float(found["mps"])
            if not 0.0 < speed <= 30.0:
                continue
            return Task(kind, speed_mps=speed)
        if kind is TaskKind.STOP_BEHIND:
            return Task(kind, target_colour=found["colour"], target_class=found["cls"])
        return Task(kind)
    return None


#: a speed written in an instruction: a number, then a unit of speed. Units (any case):
#: m/s, mps, metre(s)/meter(s) per/a/an second/sec; km/h, kmh, kph, km/hr, k(ilo)m(etre)s
#: per/a/an hour; mph, mile(s) per/an hour. The number may be negative (it is clipped by the
#: caller) and use a decimal point or comma.
_SPEED_PATTERN = re.compile(
    r"(?<![\w.])(?P<num>[-+]?\d+(?:[.,]\d+)?)\s*"
    r"(?:(?P<mps>m\s*/\s*s|mps|(?:metres?|meters?|m)\s+(?:per|an?)\s+sec(?:ond)?s?)"
    r"|(?P<kmh>km\s*/\s*hr?|kmh|kph|(?:km|kms|kilometres?|kilometers?|k)\s+(?:per|an?)\s+"
    r"(?:hour|hr)s?)"
    r"|(?P<mph>mph|miles?\s+(?:per|an?)\s+(?:hour|hr)))(?![\w/])", re.IGNORECASE)
#: unit -> m/s factor of :data:`_SPEED_PATTERN`'s groups
_SPEED_UNITS = {"mps": 1.0, "kmh": 1.0 / 3.6, "mph": 0.44704}


def instruction_speed(text: str) -> float | None:
    """The speed an instruction names, m/s, or None when it names none.

    Any sentence, not only the suite's wordings: a number followed by a unit of
    speed (see :data:`_SPEED_PATTERN`: m/s, km/h, kph, mph and their spelled-out forms)
    counts, the *last* such mention when there are several ("from 50 km/h down to 30
    km/h" names 30 km/h: a change of speed is written towards its target). Numbers without
    a unit ("lane 2", "the 3rd exit") and units without a number are not speeds. The value
    is returned as written (a negative or an absurd speed is the caller's to bound; the
    VLA clips it to its head's speed range).
    """
    found = None
    for m in _SPEED_PATTERN.finditer(text):
        found = m
    if found is None:
        return None
    unit = next(k for k in _SPEED_UNITS if found.group(k) is not None)
    value = float(found.group("num").replace(",", "."))
    return value * _SPEED_UNITS[unit]


#: longest instruction a planner is given, characters. The VLA's text encoder reads at most
#: 64 tokens (a few hundred characters of English), so nothing beyond this can change what
#: it does; and every distinct string becomes a key of the per-string embedding cache, which
#: must not hold 10 kB keys. The suite's instructions are all under 100 characters.
MAX_INSTRUCTION_CHARS = 512

#: Unicode categories replaced by a space: control characters (C0, DEL, C1: Cc), invisible
#: format characters (zero-width spaces / joiners, bidi overrides that can make a string read
#: differently from what it holds: Cf), lone surrogates (not encodable as UTF-8, so a
#: tokenizer or a file write would fail on them: Cs) and the line / paragraph separators
#: (Zl, Zp)
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


@functools.cache
def _control_pattern() -> re.Pattern[str]:
    """A regex matching one character of :data:`_CONTROL_CATEGORIES`, built on first use
    (a scan of every code point, ~0.2 s, not paid at import)."""
    ranges: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)) in _CONTROL_CATEGORIES:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    body = "".join(f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}"
                   for lo, hi in ranges)
    return re.compile(f"[{body}]")


def clean_instruction(raw: str | bytes | bytearray | None,
                      max_chars: int = MAX_INSTRUCTION_CHARS) -> str:
    """The instruction as a planner may use it: one line of printable text, bounded in size.

    Rules, in this order: ``None`` is ``""``; bytes are decoded as UTF-8 with invalid
    sequences replaced by U+FFFD (never raises); every control, format, surrogate or
    line/paragraph-separator character becomes a space; every run of whitespace (any Unicode
    space, tab, newline) becomes one ASCII space and both ends are stripped; the result is
    cut to ``max_chars`` characters (and stripped again). Letters, digits, punctuation and
    symbols of any script are kept as they are; the case is kept. The function is
    idempotent, and the identity on the suite's instructions.

    Args:
        raw: the instruction as received (a ROS string, bytes off a wire, or None).
        max_chars: most characters kept (>= 1); see :data:`MAX_INSTRUCTION_CHARS`.

    Returns:
        The cleaned instruction ("" when nothing printable is left).

    Raises:
        TypeError: ``raw`` is not str, bytes, bytearray or None.
        ValueError: ``max_chars`` is not an integer >= 1.
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise ValueError(f"max_chars must be an integer >= 1, got {max_chars!r}")
    if raw is None:
        return ""
    if isinstance(raw, bytes | bytearray):
        text = bytes(raw).decode("utf-8", errors="replace")
    elif isinstance(raw, str):
        text = raw
    else:
        raise TypeError(f"an instruction must be str, bytes or None, got "
                        f"{type(raw).__name__}")
    text = _control_pattern().sub(" ", text)
    text = " ".join(text.split())  # str.split() splits on every Unicode whitespace
    return text[:max_chars].rstrip()


__all__ = ["COLOURS", "HELDOUT_PER_KIND", "MAX_INSTRUCTION_CHARS", "PARAMETRIC_KINDS", "SPLITS",
           "TARGET_CLASSES", "Task", "TaskKind", "clean_instruction", "instruction_speed",
           "parse_instruction", "phrasings", "render_instruction"]
