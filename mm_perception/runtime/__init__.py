"""mm_perception.runtime."""
