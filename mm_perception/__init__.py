"""mm_perception: multimodal camera/LiDAR/radar perception stack for ROS 2."""

__version__ = "0.1.0"
