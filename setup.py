"""ament_python package ``trustworthy_perception`` (colcon) and pip-installable core."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "trustworthy_perception"


def share_files(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing ``folder`` (recursively) under share/<package>/."""
    entries: dict[str, list[str]] = {}
    for path in sorted(glob(f"{folder}/**/*", recursive=True)):
        p = Path(path)
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".ckpt"}:
            entries.setdefault(str(Path("share") / PACKAGE / p.parent), []).append(path)
    return list(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Trustworthy LiDAR-camera perception for ROS 2: fusion detection with attention, "
    "calibrated uncertainty and OOD / sensor-health monitors.",
    license="Apache-2.0",
    packages=find_packages(include=["perception", "perception.*", "ros_nodes", "ros_nodes.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share_files("launch"),
        *share_files("models"),
        *share_files("calibration"),
        *share_files("config"),
    ],
    install_requires=["numpy", "pyyaml", "tqdm"],
    python_requires=">=3.10",
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "perception = perception.cli:main",
            "fusion_detector = ros_nodes.fusion_detector:main",
            "sensor_health = ros_nodes.sensor_health:main",
            "ood_monitor = ros_nodes.ood_monitor:main",
            "crowd_counter = ros_nodes.crowd_counter:main",
            "bag_player = ros_nodes.bag_player:main",
            "bag_recorder = ros_nodes.bag_recorder:main",
        ],
    },
)
