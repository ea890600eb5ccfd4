"""mm_perception.planning."""
