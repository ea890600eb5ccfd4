"""mm_perception.tracking."""
