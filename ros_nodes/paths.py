"""Where the package's shared files (launch/, config/, calibration/, models/) live; no rclpy import.

In a source checkout (editable install) that is the repository root; after ``colcon build`` or a plain
``pip install`` it is ``<prefix>/share/trustworthy_perception``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "trustworthy_perception"
_REPO_ROOT = Path(__file__).resolve().parents[1]


def share_dir(package: str = PACKAGE) -> Path:
    """The share directory of ``package`` (only this project's packages are known without ament)."""
    if package == PACKAGE and (_REPO_ROOT / "package.xml").is_file() and (_REPO_ROOT / "launch").is_dir():
        return _REPO_ROOT
    prefixes = [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    for prefix in filter(None, prefixes):
        candidate = Path(prefix) / "share" / package
        if (candidate / "package.xml").is_file():
            return candidate
    from perception.errors import ConfigError

    raise ConfigError(f"package '{package}' not found in {_REPO_ROOT}, {sys.prefix} or AMENT_PREFIX_PATH",
                      "find-pkg-share")


def resolve(path: str | os.PathLike[str]) -> Path:
    """An absolute path: as given when absolute or present relative to the cwd, else under :func:`share_dir`."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    return share_dir() / p


#: The environment variables :func:`dds_env` sets.
DDS_KEYS = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE")


#: Environment variable naming the graph a node belongs to (set by the launch runner, one id per launch):
#: the bag player counts only ready announcements of its own graph, so a second graph on the same ROS domain
#: cannot make it start early. Unset (e.g. under ``ros2 launch``): the empty id, which matches only itself.
GRAPH_ID_ENV = "PERCEPTION_GRAPH_ID"


def graph_id() -> str:
    """This process's graph id (:data:`GRAPH_ID_ENV`, empty when unset)."""
    return os.environ.get(GRAPH_ID_ENV, "")


def dds_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: os.environ) plus the settings that keep DDS on this machine."""
    out = dict(os.environ if env is None else env)
    out["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    out["FASTDDS_DEFAULT_PROFILES_FILE"] = str(share_dir() / "config" / "fastdds_localhost.xml")
    return out
