"""mm_perception.planning: action-chunk trajectories and the rule-based safety filter."""
