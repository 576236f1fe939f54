"""Safe dataset outputs: refuse to overwrite without ``force``, write into a staging folder, swap in at the end.

A writer builds its dataset in a hidden sibling folder and only replaces the target once every
frame has been written, so a crash never leaves a half-written dataset under the real name and a
``force`` rewrite never loses the old data before the new one is complete.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from perception.errors import DataError

log = logging.getLogger(__name__)

#: Marker files/folders that identify a folder as a dataset we may delete with ``force``.
_DATASET_MARKERS = ("metadata.yaml", "velodyne", "training", "testing", "rig.yaml")


def is_dataset_dir(path: Path) -> bool:
    """True when ``path`` looks like a rosbag2 bag or a KITTI-layout folder."""
    return path.is_dir() and any((path / m).exists() for m in _DATASET_MARKERS)


def check_output(path: str | Path, force: bool) -> Path:
    """Validate an output location before any work starts; returns it as a :class:`Path`.

    An existing non-empty folder is accepted only with ``force`` and only when it is a dataset
    (bag or KITTI layout): anything else is never deleted.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError("output exists and is not a folder; refusing to replace it", str(path))
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise DataError("output exists and is not empty; pass --force (force=True) to replace it", str(path))
        if not is_dataset_dir(path):
            raise DataError("output is not a bag or KITTI folder; refusing to delete it even with force", str(path))
    return path


class StagedOutput:
    """A hidden staging folder next to ``target``; :meth:`commit` swaps it in, :meth:`abort` removes it."""

    def __init__(self, target: str | Path, force: bool = False) -> None:
        self.target = check_output(target, force).resolve()
        self.force = force
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._stage_parent = self.target.parent / f".{self.target.name}.partial-{os.getpid()}"
        if self._stage_parent.exists():
            shutil.rmtree(self._stage_parent)
        self._stage_parent.mkdir()
        #: Where the writer puts its files (same name as the target, inside the staging folder).
        self.path = self._stage_parent / self.target.name

    def commit(self) -> Path:
        """Replace the target with the staged folder; returns the target path."""
        check_output(self.target, self.force)  # the target may have appeared meanwhile
        if self.target.exists():
            shutil.rmtree(self.target)
        os.replace(self.path, self.target)
        shutil.rmtree(self._stage_parent, ignore_errors=True)
        log.info("wrote %s", self.target)
        return self.target

    def abort(self) -> None:
        """Delete the staged files; the target is left untouched."""
        shutil.rmtree(self._stage_parent, ignore_errors=True)
