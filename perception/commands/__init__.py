"""``perception`` subcommands: one module each, exposing ``add_parser(subparsers)`` and ``run(args) -> int``.

``add_parser`` adds the subcommand to argparse's ``subparsers``, sets ``func=run`` with
``set_defaults`` and returns the new parser. The list lives in :data:`perception.cli.COMMANDS`.
Shared helpers for commands (resource look-up) live here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from perception.errors import ConfigError

#: The repository (or source tree) root: calibration/, config/, data/ and out/ live here.
REPO_ROOT = Path(__file__).resolve().parents[2]
_SHARE = Path(sys.prefix) / "share" / "trustworthy_perception"


def find_resource(path: str | Path) -> Path:
    """Resolve a bundled file such as ``calibration/sim_default.yaml``.

    Tried in order: as given (absolute or relative to the working directory), relative to the
    source tree, relative to the installed ``share/trustworthy_perception``. Raises ConfigError.
    """
    path = Path(path)
    candidates = [path] if path.is_absolute() else [path, REPO_ROOT / path, _SHARE / path]
    for cand in candidates:
        if cand.exists():
            return cand
    raise ConfigError(f"not found (looked in {', '.join(str(c.parent) for c in candidates)})", str(path))
