"""mm_perception.bag."""
