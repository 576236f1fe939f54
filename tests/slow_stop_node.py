"""A node for tests/test_runtime.py: an idle node run by ``run_node`` whose ``on_stop`` hook is slow.

``python tests/slow_stop_node.py --stop MODE [--mark FILE] --ros-args ...``; MODE is a number of seconds
(sleep, then write "closed" to FILE, like a recorder closing its bag), ``forever`` (a hook that never returns;
the GIL is free) or ``gil`` (a C call that blocks while holding the GIL, so no Python thread can run).
Prints "ready" once spinning is about to start and "stopping" when the hook starts.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import threading
import time
from pathlib import Path

from rclpy.node import Node
from rclpy.utilities import remove_ros_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ros_nodes.runtime import run_node  # noqa: E402


def main() -> int:
    """Run the node until SIGINT/SIGTERM, then run the slow hook."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stop", default="0")
    parser.add_argument("--mark", type=Path)
    opts = parser.parse_args(remove_ros_args(sys.argv)[1:])

    def factory() -> Node:
        node = Node("slow_stop")
        node.create_timer(0.05, lambda: None)  # keep the executor busy, as a real node's timers do
        print("ready", flush=True)
        return node

    def on_stop(_node: Node) -> None:
        print("stopping", flush=True)
        if opts.stop == "forever":
            threading.Event().wait()
        elif opts.stop == "gil":
            ctypes.PyDLL(None).sleep(3600)  # PyDLL keeps the GIL during the call
        else:
            time.sleep(float(opts.stop))
            if opts.mark is not None:
                with opts.mark.open("w") as f:
                    f.write("closed\n")
                    f.flush()

    return run_node("slow_stop", factory, on_stop=on_stop)


if __name__ == "__main__":
    sys.exit(main())
