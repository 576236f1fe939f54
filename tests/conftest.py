"""Shared test set-up: DDS kept on localhost, headless matplotlib, data fixtures.

Fixtures: ``kitti_root`` (the real KITTI sample; skips when ../shared/data is absent), ``sim_rig``
(calibration/sim_default.yaml), ``default_drive`` (a small simulated mcap bag, generated once per session).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KITTI_SAMPLE = SHARED_DATA / "kitti_sample"

# Every process started by a test (rclpy nodes, CLI subprocesses) inherits these: DDS never leaves this machine.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "config" / "fastdds_localhost.xml"))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("MPLBACKEND", "Agg")
# A DDS domain of this test session's own, so two test runs on one machine never hear each other's nodes.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))

#: Frames in the session's ``default_drive`` bag (small: a few seconds of simulation).
DEFAULT_DRIVE_FRAMES = 4


@pytest.fixture(scope="session")
def kitti_root() -> Path:
    """The real KITTI sample (3 training frames); skipped when the shared data folder is absent."""
    if not (KITTI_SAMPLE / "training" / "velodyne").is_dir():
        pytest.skip(f"real KITTI sample not available at {KITTI_SAMPLE} (shared data folder absent)")
    return KITTI_SAMPLE


@pytest.fixture(scope="session")
def sim_rig():
    """The simulator's default rig (calibration/sim_default.yaml)."""
    from perception.rig import Rig

    return Rig.from_yaml(REPO_ROOT / "calibration" / "sim_default.yaml")


@pytest.fixture(scope="session")
def default_drive(tmp_path_factory, sim_rig) -> Path:
    """A small simulated drive (test split, seed 0, ``DEFAULT_DRIVE_FRAMES`` frames) as an mcap bag.

    Generated once per test session in a temporary folder; read it with ``perception.io.open_frames``.
    """
    from perception.io import write_frames
    from perception.sim import iter_split

    path = tmp_path_factory.mktemp("default_drive") / "drive"
    frames = iter_split(sim_rig, "test", DEFAULT_DRIVE_FRAMES, seed=0, frames_per_drive=DEFAULT_DRIVE_FRAMES,
                        workers=1)
    write_frames(frames, path, "bag", sim_rig, storage="mcap", total=DEFAULT_DRIVE_FRAMES, progress=False)
    return path
