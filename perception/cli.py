"""``perception`` command line: argument parsing and dispatch only; the work lives in the library.

Adding a subcommand: write ``perception/commands/<name>.py`` with ``add_parser(subparsers)`` (which
calls ``parser.set_defaults(func=run)`` and returns the parser) and ``run(args) -> int``, then list the
module in :data:`COMMANDS`. Keep a command module's top-level imports light (argparse, the standard
library): import torch, open3d, the simulator etc. inside ``run`` so that every ``perception`` call
(and ``--help``) stays fast. A :class:`~perception.errors.PerceptionError` becomes one ``error: ...``
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from perception import __version__
from perception.commands import (
    bench,
    convert,
    crossval,
    demo,
    eval_crowd,
    eval_ood,
    explain,
    export,
    fit_ood,
    info,
    launch,
    replay,
    robustness,
    sim,
    train_crowd,
)
from perception.commands import eval as eval_cmd
from perception.commands import train as train_cmd
from perception.errors import PerceptionError

#: Subcommand modules, in the order ``perception --help`` lists them.
COMMANDS = [sim, info, convert, demo, train_cmd, eval_cmd, crossval, explain, robustness, fit_ood, eval_ood, export,
            bench, launch, replay, train_crowd, eval_crowd]

log = logging.getLogger("perception")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="perception", description="Trustworthy LiDAR-camera perception tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        sub = module.add_parser(subparsers)
        if sub is not None:  # also accept -v after the subcommand
            sub.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                             help="more logging (-v info, -vv debug)")
    return parser


def setup_logging(verbosity: int) -> None:
    """Log to stderr: warnings by default, info with -v, debug with -vv."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``perception`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except PerceptionError as exc:
        log.debug("failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
