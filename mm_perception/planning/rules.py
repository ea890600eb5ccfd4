"""The language-free rules baseline: what the stack does without the VLA.

:class:`RulesPlanner` ignores the instruction and every privileged input. It follows the
lane the map says the ego is in (``observation.lane("ego")``, straight ahead when there is
none) at a cruise speed and keeps its distance from / stops for the objects the stack
perceives (``observation.objects``) with the same path follower as the expert
(:func:`~mm_perception.planning.lane_follow.lane_trajectory`). It is safe driving with no
intent: tasks that need the instruction (turn, pull over, stop behind a named vehicle,
change lanes, a given speed) fail unless the task happens to be "keep driving".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mm_perception.core.errors import ConfigError
from mm_perception.planning.lane_follow import LaneFollowConfig, lane_trajectory, straight_path
from mm_perception.planning.observation import ChunkSpec, PlannerObservation
from mm_perception.planning.trajectory import Trajectory


@dataclass(frozen=True)
class RulesConfig:
    """Settings of the rules baseline.

    Attributes:
        cruise_speed_mps: speed it drives at, m/s.
        lane_follow: path-following limits.
        spec: the chunk time grid.
    """

    cruise_speed_mps: float = 9.0
    lane_follow: LaneFollowConfig = field(default_factory=LaneFollowConfig)
    spec: ChunkSpec = field(default_factory=ChunkSpec)

    def __post_init__(self) -> None:
        v = self.cruise_speed_mps
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                or not 0 < v <= self.lane_follow.max_speed_mps:
            raise ConfigError(f"RulesConfig.cruise_speed_mps must be in (0, "
                              f"{self.lane_follow.max_speed_mps}] m/s, got {v!r}")


class RulesPlanner:
    """Lane keeping + collision avoidance from perception, no language (``Planner``).

    Args:
        config: settings (default :class:`RulesConfig`).
    """

    name = "rules"

    def __init__(self, config: RulesConfig | None = None) -> None:
        self.config = config if config is not None else RulesConfig()

    def reset(self) -> None:
        """Stateless: nothing to forget."""

    def plan(self, observation: PlannerObservation) -> Trajectory:
        """Follow the ego lane at the cruise speed, yielding to perceived objects."""
        lane = observation.lane("ego")
        path = lane.points if lane is not None else straight_path()
        return lane_trajectory(observation, path, self.config.cruise_speed_mps,
                               obstacles=observation.objects, config=self.config.lane_follow,
                               spec=self.config.spec, source=self.name)


__all__ = ["RulesConfig", "RulesPlanner"]
