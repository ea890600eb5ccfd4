"""mm_perception.ros.nodes."""
