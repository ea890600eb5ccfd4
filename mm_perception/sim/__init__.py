"""mm_perception.sim."""
