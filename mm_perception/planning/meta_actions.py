"""Discrete driving meta-actions ("stop", "turn left", ...) and their trajectories.

A vision-language model asked what to do answers in words; :func:`parse_meta_action` turns
that free text into a :class:`MetaAction`, and :func:`meta_action_trajectory` turns the
meta-action into an executable world-frame
:class:`~mm_perception.planning.trajectory.Trajectory` the way the expert does: it picks
the map lane of the observation the action asks for (:func:`meta_action_target`) and
follows it with :func:`mm_perception.planning.lane_follow.lane_trajectory` at the speed
the action asks for, keeping behind the perceived objects in the path.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mm_perception.core.checks import check_numbers
from mm_perception.core.errors import ConfigError
from mm_perception.planning.lane_follow import LaneFollowConfig, lane_trajectory, straight_path
from mm_perception.planning.observation import ChunkSpec, PlannerObservation
from mm_perception.planning.trajectory import Trajectory

F64 = npt.NDArray[np.float64]


class MetaAction(str, enum.Enum):
    """What to do next, in the words a driver (or a language model) would use."""

    STOP = "stop"
    FOLLOW_LANE = "follow_lane"
    SLOW_DOWN = "slow_down"
    SPEED_UP = "speed_up"
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    GO_STRAIGHT = "go_straight"
    CHANGE_LANE_LEFT = "change_lane_left"
    CHANGE_LANE_RIGHT = "change_lane_right"
    PULL_OVER = "pull_over"

    @property
    def phrase(self) -> str:
        """The action as plain words (``turn left``), the way a prompt lists it."""
        return self.value.replace("_", " ")


# Phrases of the normalised text (lower case, words separated by one space) and the
# action they mean; "change_lane" / "turn" take the side from the ``side`` group. Every
# action's own words are in the table, so an answer copied from the prompt's list is
# understood. Phrases are whole-word regexes; the order of the table does not matter (the
# earliest, then longest, match wins), so "change lanes to the left" is a lane change and
# not the "turn" reading of a shorter phrase.
_LEFT_RIGHT = r"(?P<side>left|right)"
_PHRASES: tuple[tuple[str, MetaAction | str], ...] = (
    (r"(?:change|switch|move|merge|shift)(?: over)?(?: lanes?)?(?: to| into| over to)?"
     r"(?: the)? " + _LEFT_RIGHT + r"(?: lane)?", "change_lane"),
    (r"(?:change|switch) lanes? (?:to |into )?(?:the )?" + _LEFT_RIGHT, "change_lane"),
    (r"(?:go|get|move|pull) (?:in)?to (?:the )?" + _LEFT_RIGHT + r" lane", "change_lane"),
    (_LEFT_RIGHT + r" lane change", "change_lane"),
    (r"lane change (?:to |into )?(?:the )?" + _LEFT_RIGHT, "change_lane"),
    # turns; "go left" is read as the left movement through the junction, never a lane change
    (r"(?:turn|go|take|hang|bear|make)(?: to)?(?: the| a)? " + _LEFT_RIGHT
     + r"(?: turn)?", "turn"),
    (_LEFT_RIGHT + r" turn", "turn"),
    (r"pull over|pull to the (?:side|shoulder|curb|kerb)|park|stop on the shoulder"
     r"|(?:move|go) (?:on)?to the shoulder", MetaAction.PULL_OVER),
    (r"go straight|straight(?: ahead| on)?|(?:continue|keep going|keep|drive) straight",
     MetaAction.GO_STRAIGHT),
    (r"slow down|slow|slower|decelerate|reduce (?:your )?speed|brake|ease off",
     MetaAction.SLOW_DOWN),
    (r"speed up|accelerate|faster|increase (?:your )?speed|hurry", MetaAction.SPEED_UP),
    (r"stop|halt|stand still|come to a (?:full )?stop|wait|hold", MetaAction.STOP),
    (r"follow(?: the| your)? lane|(?:keep|hold)(?: the| your| in)?(?: the| your)? lane"
     r"|stay in(?: the| your)? lane"
     r"|keep going|continue|carry on|proceed|cruise|drive on", MetaAction.FOLLOW_LANE),
)
_COMPILED = tuple((re.compile(r"\b(?:" + pattern + r")\b"), meaning)
                  for pattern, meaning in _PHRASES)
_NON_WORD = re.compile(r"[^a-z0-9]+")


def _normalise(text: str) -> str:
    """Lower case, every run of non-alphanumerics (``_``, ``-``, punctuation) to one space."""
    return " " + _NON_WORD.sub(" ", text.lower()).strip() + " "


def parse_meta_action(text: str) -> MetaAction | None:
    """The meta-action named in free generated text, or None when it names none.

    The text is lower-cased and every run of punctuation, ``_`` or ``-`` becomes a space,
    so ``"TURN_LEFT."``, ``"turn-left"`` and ``"Turn left!"`` all read ``turn left``. Each
    action has a few synonyms (``halt`` -> stop, ``keep lane`` -> follow_lane, ``go left``
    -> turn_left, ``merge right`` -> change_lane_right, ``park`` -> pull_over, ...). The
    phrase that starts earliest in the text wins ("turn left, then stop" is turn_left),
    and of phrases starting at the same word the longest wins ("stop on the shoulder" is
    pull_over, not stop). Negations are not understood ("don't stop" reads stop): the
    prompt asks for one action name, not a sentence.

    Args:
        text: what the model generated (any string).

    Returns:
        The action, or None when no phrase matches (the caller decides the safe default).
    """
    norm = _normalise(text)
    best: tuple[int, int, MetaAction] | None = None
    for pattern, meaning in _COMPILED:
        match = pattern.search(norm)
        if match is None:
            continue
        if isinstance(meaning, MetaAction):
            action = meaning
        else:
            action = MetaAction(f"{meaning}_{match.group('side')}")
        key = (match.start(), -(match.end() - match.start()), action)
        if best is None or key[:2] < best[:2]:
            best = key
    return None if best is None else best[2]


@dataclass(frozen=True)
class MetaActionConfig:
    """How meta-actions become trajectories.

    Attributes:
        cruise_speed_mps: speed of follow_lane, go_straight and the lane changes, m/s.
        slow_speed_mps: speed of slow_down and of pulling over, m/s.
        fast_speed_mps: speed of speed_up, m/s (at most ``lane_follow.max_speed_mps``).
        turn_speed_mps: speed through a junction turn, m/s.
        stop_reaction_s: a stop point lies ``v^2 / (2 a) + v * stop_reaction_s`` ahead of
            an ego at speed ``v`` (``a`` = ``lane_follow.comfort_decel_mps2``); the second
            term pays for the jerk-limited onset of braking. A standing ego stays put.
        pull_over_settled_m: a pull-over stops (like stop) once the ego is this close to
            the shoulder's centreline, m; until then it drives onto the shoulder.
        straight_path_m: length of the straight path ahead used when the observation has
            no lanes at all, m.
        lane_follow: the lane follower's configuration.
    """

    cruise_speed_mps: float = 8.0
    slow_speed_mps: float = 4.0
    fast_speed_mps: float = 12.0
    turn_speed_mps: float = 5.0
    stop_reaction_s: float = 0.3
    pull_over_settled_m: float = 0.5
    straight_path_m: float = 60.0
    lane_follow: LaneFollowConfig = field(default_factory=LaneFollowConfig)

    def __post_init__(self) -> None:
        check_numbers(self, ("cruise_speed_mps", "slow_speed_mps", "fast_speed_mps",
                             "turn_speed_mps", "pull_over_settled_m", "straight_path_m"))
        check_numbers(self, ("stop_reaction_s",), may_be_zero=("stop_reaction_s",))
        if not isinstance(self.lane_follow, LaneFollowConfig):
            raise ConfigError(f"MetaActionConfig.lane_follow must be a LaneFollowConfig, got "
                              f"{type(self.lane_follow).__name__}")
        if not self.slow_speed_mps <= self.cruise_speed_mps <= self.fast_speed_mps:
            raise ConfigError(
                "MetaActionConfig speeds must satisfy slow <= cruise <= fast, got "
                f"{self.slow_speed_mps!r}, {self.cruise_speed_mps!r}, {self.fast_speed_mps!r}")
        if self.fast_speed_mps > self.lane_follow.max_speed_mps:
            raise ConfigError(f"MetaActionConfig.fast_speed_mps ({self.fast_speed_mps!r}) must "
                              f"not exceed lane_follow.max_speed_mps "
                              f"({self.lane_follow.max_speed_mps!r})")

    def stop_distance_m(self, speed_mps: float) -> float:
        """Where an ego at ``speed_mps`` (m/s, negative = 0) comes to rest, m ahead."""
        v = max(float(speed_mps), 0.0)
        return v * v / (2.0 * self.lane_follow.comfort_decel_mps2) + v * self.stop_reaction_s


#: the lane role each action drives along (the ego lane when that lane is not on the map)
_ROLE: dict[MetaAction, str] = {
    MetaAction.STOP: "ego",
    MetaAction.FOLLOW_LANE: "ego",
    MetaAction.SLOW_DOWN: "ego",
    MetaAction.SPEED_UP: "ego",
    MetaAction.TURN_LEFT: "turn_left",
    MetaAction.TURN_RIGHT: "turn_right",
    MetaAction.GO_STRAIGHT: "straight",
    MetaAction.CHANGE_LANE_LEFT: "left",
    MetaAction.CHANGE_LANE_RIGHT: "right",
    MetaAction.PULL_OVER: "shoulder",
}


@dataclass(frozen=True)
class MetaActionTarget:
    """What the lane follower is asked to do for one meta-action.

    Attributes:
        action: the meta-action.
        role: role of the lane followed (one of ``LANE_ROLES``), or ``"none"`` when the
            observation has no lanes and the path is straight ahead.
        path_base: ``(P, 2)`` float64 path to follow, m, ``base_link`` at the stamp.
        target_speed_mps: speed to reach, m/s.
        stop_at_m: distance along the path to come to rest at, m, or None (no stop).
    """

    action: MetaAction
    role: str
    path_base: F64
    target_speed_mps: float
    stop_at_m: float | None


def _distance_to_path(points: F64) -> float:
    """Distance from base_link's origin to the polyline ``points`` (``(P, 2)``, m)."""
    a, b = points[:-1], points[1:]
    seg = b - a
    length2 = np.maximum((seg * seg).sum(axis=1), 1e-12)
    u = np.clip(-(a * seg).sum(axis=1) / length2, 0.0, 1.0)
    foot = a + u[:, None] * seg
    return float(np.hypot(foot[:, 0], foot[:, 1]).min())


def meta_action_target(obs: PlannerObservation, action: MetaAction,
                       config: MetaActionConfig) -> MetaActionTarget:
    """The lane, speed and stop point ``action`` asks for in ``obs``.

    Lane: turn_left / turn_right / go_straight take the junction movement of that role,
    change_lane_left / change_lane_right the neighbour lane, pull_over the shoulder, every
    other action the ego lane. A missing lane falls back to the ego lane (a lane change
    with no lane to change into keeps the lane), and with no lanes at all the path runs
    ``straight_path_m`` straight ahead along the ego's heading (role ``"none"``).

    Speed: slow_down / speed_up use the slow / fast speed, turns the turn speed, pull_over
    the slow speed, the rest the cruise speed. Stop comes to rest as soon as the lane
    follower's comfortable deceleration allows (:meth:`MetaActionConfig.stop_distance_m`);
    pull_over does the same once the ego is within ``pull_over_settled_m`` of the lane it
    follows, and drives on towards it until then (every observation re-plans from the
    ego, so a fixed stop distance would never be reached).
    """
    if not isinstance(action, MetaAction):
        raise TypeError(f"action must be a MetaAction, got {action!r}")
    lane = obs.lane(_ROLE[action]) or obs.lane("ego")
    if lane is not None:
        role, path = lane.role, np.array(lane.points, dtype=np.float64)
    else:
        role, path = "none", straight_path(config.straight_path_m)
    speed = {
        MetaAction.SLOW_DOWN: config.slow_speed_mps,
        MetaAction.SPEED_UP: config.fast_speed_mps,
        MetaAction.TURN_LEFT: config.turn_speed_mps,
        MetaAction.TURN_RIGHT: config.turn_speed_mps,
        MetaAction.PULL_OVER: config.slow_speed_mps,
        MetaAction.STOP: config.slow_speed_mps,
    }.get(action, config.cruise_speed_mps)
    stop_at: float | None = None
    if action is MetaAction.STOP or (action is MetaAction.PULL_OVER
                                     and _distance_to_path(path) <= config.pull_over_settled_m):
        stop_at = config.stop_distance_m(float(obs.ego.linear_velocity[0]))
    return MetaActionTarget(action=action, role=role, path_base=path,
                            target_speed_mps=float(speed), stop_at_m=stop_at)


def meta_action_trajectory(obs: PlannerObservation, action: MetaAction,
                           config: MetaActionConfig | None = None,
                           spec: ChunkSpec | None = None,
                           source: str = "meta_action") -> Trajectory:
    """The world-frame action chunk that carries out ``action`` in ``obs``.

    Args:
        obs: the observation (lanes and objects in ``base_link``).
        action: the meta-action to carry out.
        config: speeds and stop distances (defaults to ``MetaActionConfig()``).
        spec: the chunk's time grid (defaults to ``ChunkSpec()``).
        source: planner name written into the trajectory.

    Returns:
        A trajectory in ``obs.ego.frame_id`` stamped ``obs.stamp_ns`` following the lane
        :func:`meta_action_target` picks, slowing for the objects of ``obs.objects`` in it.
    """
    cfg = config if config is not None else MetaActionConfig()
    target = meta_action_target(obs, action, cfg)
    return lane_trajectory(obs, target.path_base, target.target_speed_mps,
                           stop_at_m=target.stop_at_m, obstacles=obs.objects,
                           config=cfg.lane_follow,
                           spec=spec if spec is not None else ChunkSpec(), source=source)


__all__ = [
    "MetaAction",
    "MetaActionConfig",
    "MetaActionTarget",
    "meta_action_target",
    "meta_action_trajectory",
    "parse_meta_action",
]
