"""mm_perception.core."""
