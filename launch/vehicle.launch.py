"""The car graph (camera + LiDAR + radar + odometry) as lifecycle nodes, configured and
activated automatically.

    ros2 launch mm_perception vehicle.launch.py [config:=/path/to/platform.yaml]
        [use_sim_time:=true]

Arguments: ``config`` (platform config: rig and nodes; default: the package's
``config/car.yaml``), ``use_sim_time`` (follow ``/clock``). The same graph runs without a ROS
install with ``mm-perception run --config config/car.yaml``.
"""

from mm_perception.ros.launch_plan import platform_launch


def generate_launch_description():  # type: ignore[no-untyped-def]
    return platform_launch("car.yaml")
