"""mm_perception.fusion."""
