"""mm_perception.ros."""
