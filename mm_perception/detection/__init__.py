"""mm_perception.detection."""
