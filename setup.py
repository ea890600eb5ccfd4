"""ament_python build of mm_perception (also a plain pip-installable package)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mm_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # the camera detector's trained weights travel with the code that loads them
    package_data={PACKAGE: ["py.typed", "data/*.yaml"],
                  f"{PACKAGE}.detection.camera": ["weights/*.pt", "weights/*.json"],
                  # the BEV fusion detector's default weights folder(s) (not the training
                  # checkpoint)
                  f"{PACKAGE}.fusion.feature_level": [
                      f"weights/*/{n}" for n in ("bev_fusion.pt", "bev_fusion.onnx",
                                                 "config.json", "processor.json",
                                                 "train_log.json")],
                  # the VLA planner's shipped weights (not the training checkpoint)
                  f"{PACKAGE}.planning.vla": [
                      f"weights/{n}" for n in ("vla.pt", "vla.onnx", "config.json",
                                               "train_log.json")]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/rigs", glob("config/rigs/*.yaml")),
        (f"share/{PACKAGE}/config/schema", glob("config/schema/*.json")),
        # road layouts the planner node can load as its static map (map.file)
        (f"share/{PACKAGE}/config/scenarios", glob("config/scenarios/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "scipy", "pyyaml", "rosbags>=0.10"],
    zip_safe=False,  # torch.load reads the weights from a real file
    maintainer="mm_perception maintainers",
    maintainer_email="maintainers@mm-perception.dev",
    description="Multimodal camera/LiDAR/radar perception stack for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "mm-perception = mm_perception.cli:main",
            # lifecycle nodes for `ros2 run` / launch_ros (configure + activate themselves
            # unless --no-autostart)
            "pipeline_node = mm_perception.ros.nodes.pipeline_node:main",
            "sync_node = mm_perception.ros.nodes.sync_node:main",
            "lidar_detector_node = mm_perception.ros.nodes.detector_nodes:main_lidar",
            "radar_detector_node = mm_perception.ros.nodes.detector_nodes:main_radar",
            "camera_detector_node = mm_perception.ros.nodes.detector_nodes:main_camera",
            "output_fusion_node = mm_perception.ros.nodes.output_fusion_node:main",
            "tracker_node = mm_perception.ros.nodes.tracker_node:main",
            "bev_fusion_node = mm_perception.ros.nodes.bev_fusion_node:main",
            "planner_node = mm_perception.ros.nodes.planner_node:main",
            "safety_filter_node = mm_perception.ros.nodes.safety_filter_node:main",
        ],
    },
)
