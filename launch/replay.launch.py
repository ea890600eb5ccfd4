"""A recorded bag replayed into a platform graph on sim time.

    ros2 launch mm_perception replay.launch.py bag:=/path/to/bag [config:=platform.yaml]
        [rate:=1.0]

Arguments: ``bag`` (rosbag2 directory, sqlite3 or MCAP; required), ``config`` (platform
config; default: the package's ``config/car.yaml``), ``rate`` (replay rate factor). The nodes
run with ``use_sim_time``; ``mm-perception replay`` publishes the bag with ``/clock`` once the
graph subscribes to every topic. Without a ROS install: ``mm-perception run --config
config/car.yaml --bag BAG``.
"""

from mm_perception.ros.launch_plan import replay_launch


def generate_launch_description():  # type: ignore[no-untyped-def]
    return replay_launch()
