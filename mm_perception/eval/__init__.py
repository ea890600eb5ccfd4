"""mm_perception.eval."""
