"""The one way our nodes run: init rclpy, build the node, spin until SIGINT/SIGTERM, shut down.

Stopping is bounded. rclpy's own signal handlers are not installed (their shutdown of the context from a
signal thread, racing the executor's DDS work, was seen to deadlock a node on SIGTERM: alive 36 min later,
every thread in a futex wait, deaf to further SIGTERMs). Instead a :class:`ShutdownWatchdog` turns the
signal into a stop request that the main thread acts on between two executor waits, and bounds how long
the graceful path (``on_stop``, ``destroy_node``, rclpy shutdown, interpreter exit) may take:

* after ``shutdown_grace_s`` (a parameter of every node, default :data:`DEFAULT_SHUTDOWN_GRACE_S`) the
  process logs why, dumps every thread's stack, flushes its logs and exits with ``128 + signal number``;
* a second SIGINT/SIGTERM while stopping does the same at once (the same signal again within
  :data:`DUPLICATE_SIGNAL_S` is taken as one event delivered twice);
* should no Python thread be able to run (the GIL held by a deadlocked thread), ``faulthandler`` dumps the
  stacks 1 s later and the kernel ends the process with SIGALRM 2 s later;
* a node started with PR_SET_PDEATHSIG (``perception launch``) also stops when its parent is gone, should
  that signal never be handled.
"""

from __future__ import annotations

import ctypes
import faulthandler
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String

from perception.errors import PerceptionError
from ros_nodes.params import declare
from ros_nodes.paths import graph_id
from ros_nodes.qos import latched_qos

log = logging.getLogger(__name__)

#: Default of the ``shutdown_grace_s`` parameter every node gets: the longest a graceful stop may take.
DEFAULT_SHUTDOWN_GRACE_S = 5.0
#: Signals that stop a node.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_SPIN_PERIOD_S = 0.1  # the main thread looks at the stop request this often
_PARENT_POLL_S = 0.5
#: The same stop signal again within this long is the same event delivered twice, not a request to force (s).
DUPLICATE_SIGNAL_S = 1.0
_PR_GET_PDEATHSIG = 2
#: Every node announces here (std_msgs/String, latched) that it is built and subscribed: see ReadyAnnouncer.
READY_TOPIC = "/graph/ready"


def parent_death_signal() -> int:
    """The signal this process gets when its parent dies (PR_SET_PDEATHSIG); 0 if none, or not Linux."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return 0
    sig = ctypes.c_int(0)
    if prctl(_PR_GET_PDEATHSIG, ctypes.byref(sig), 0, 0, 0) != 0:
        return 0
    return sig.value


def _flush_logs() -> None:
    for handler in [*logging.getLogger().handlers, logging.lastResort]:
        if handler is not None:
            try:
                handler.flush()
            except Exception:  # a broken stream must not stop the exit
                pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


class ShutdownWatchdog:
    """Turns SIGINT/SIGTERM (and the death of a parent that asked for PR_SET_PDEATHSIG) into
    :attr:`stop_requested` and forces the process out when stopping takes longer than ``grace_s``.

    Signals are seen by a thread reading the interpreter's wakeup fd, so a busy or blocked main thread does
    not delay the watchdog. :meth:`install` must be called from the main thread.
    """

    def __init__(self, name: str, grace_s: float = DEFAULT_SHUTDOWN_GRACE_S) -> None:
        self.name = name
        self.grace_s = grace_s
        self.stop_requested = threading.Event()
        self.teardown_done = False  # set by run_node once rclpy is shut down
        self.reason = ""
        self._signum = 0
        self._since = 0.0
        self._lock = threading.Lock()

    def install(self) -> None:
        """Take over SIGINT/SIGTERM and start the signal reader (and the parent watcher, if asked for)."""
        if signal.getsignal(signal.SIGALRM) == signal.SIG_IGN:  # inherited: the backstop needs the default
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})  # threads started below inherit this
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        for sig in STOP_SIGNALS:
            # The Python-level handler does nothing: the C-level one writes the signal number to the wakeup
            # fd at once, and _read_signals acts on it even while the main thread is stuck.
            signal.signal(sig, lambda *_: None)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._read_signals, args=(read_fd,), name="shutdown-signals", daemon=True).start()
        pdeathsig = parent_death_signal()
        if pdeathsig:
            threading.Thread(target=self._watch_parent, args=(os.getppid(), pdeathsig), name="shutdown-parent",
                             daemon=True).start()

    def _read_signals(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 64)
            except InterruptedError:
                continue
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in STOP_SIGNALS:
                    self.request_stop(signal.Signals(signum).name, signum, is_signal=True)

    def _watch_parent(self, ppid: int, signum: int) -> None:
        while not self.stop_requested.wait(_PARENT_POLL_S):
            if os.getppid() != ppid:
                self.request_stop(f"the exit of parent process {ppid}", signum, is_signal=False)
                return

    def request_stop(self, reason: str, signum: int, *, is_signal: bool) -> None:
        """Ask the node to stop and arm the watchdog; a second signal while stopping forces the exit now."""
        with self._lock:
            if self.stop_requested.is_set():
                if is_signal and signum == self._signum and time.monotonic() - self._since < DUPLICATE_SIGNAL_S:
                    # One event, two deliveries: a killed launcher was seen to leave its children two SIGTERMs
                    # (its death signal and more); forcing the exit then lost a recorder's bag. Not a user's second
                    # Ctrl-C: that one is SIGINT after SIGINT seconds later, or another signal.
                    log.info("%s: %s again within %.1f s: already stopping", self.name, reason, DUPLICATE_SIGNAL_S)
                    return
                if is_signal:
                    self.force_exit(f"{reason} while stopping (after {self.reason})", 128 + signum)
                return
            self.reason, self._signum, self._since = reason, signum, time.monotonic()
            # Backstops that need no Python thread to run: stacks, then the kernel's SIGALRM. They are armed
            # before the stop is requested: once it is, the main thread may take the GIL into a stop that never
            # gives it back, and this thread would not run again.
            faulthandler.dump_traceback_later(self.grace_s + 1.0, exit=False, file=sys.stderr)
            if signal.getsignal(signal.SIGALRM) == signal.SIG_DFL:
                signal.alarm(math.ceil(self.grace_s) + 2)
            timer = threading.Timer(self.grace_s, self._expired)
            timer.daemon = True
            timer.start()
            self.stop_requested.set()
        log.info("%s: stopping on %s (forced exit if not done within %.1f s)", self.name, reason, self.grace_s)

    def _expired(self) -> None:
        stuck = "the interpreter's exit" if self.teardown_done else "the graceful shutdown"
        self.force_exit(f"still running {self.grace_s:.1f} s after {self.reason}: {stuck} is stuck",
                        128 + self._signum)

    def force_exit(self, why: str, status: int) -> None:
        """Log ``why`` with every thread's stack, flush the logs and end the process with ``status``."""
        log.critical("%s: %s; forcing exit with status %d", self.name, why, status)
        _flush_logs()
        try:
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        except Exception:
            pass
        _flush_logs()
        os._exit(status)


class ReadyAnnouncer:
    """Says on :data:`READY_TOPIC` (latched std_msgs/String JSON ``{"node", "graph", "unmatched"}``) that the node
    is built, which graph it belongs to (:func:`graph_id`), and which of its subscriptions are not yet matched to
    publishers the graph already lists.

    Re-published whenever that list changes (checked every 0.25 s, wall clock): DDS matching can lag graph
    discovery by seconds on a busy machine, and what is published before the match is lost to the subscriber.
    The bag player waits for every awaited node to report an empty list (``wait_for_nodes``).
    """

    def __init__(self, node: Node) -> None:
        from rclpy.clock import Clock, ClockType

        self.node = node
        self._pub = node.create_publisher(String, READY_TOPIC, latched_qos(depth=1))
        self._last: list[str] | None = None
        self.check()
        self._timer = node.create_timer(0.25, self.check, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def unmatched(self) -> list[str]:
        """Subscribed topics with more publishers in the graph than matched to our subscription."""
        out = []
        for sub in self.node.subscriptions:
            topic = sub.topic_name
            if topic != READY_TOPIC and self.node.count_publishers(topic) > sub.get_publisher_count():
                out.append(topic)
        return sorted(set(out))

    def check(self) -> None:
        """Publish the state when it changed."""
        state = self.unmatched()
        if state != self._last:
            self._last = state
            self._pub.publish(String(data=json.dumps({"node": self.node.get_fully_qualified_name(),
                                                      "graph": graph_id(), "unmatched": state})))


def run_node(name: str, factory: Callable[[], Node], args: list[str] | None = None,
             on_stop: Callable[[Node], object] | None = None, exit_process: bool = True) -> int:
    """Spin the node made by ``factory`` until SIGINT/SIGTERM, then stop it; returns 0 (a PerceptionError
    while building the node or reading ``shutdown_grace_s``: 2). Call it from the main thread.

    With ``exit_process`` (default) a clean stop ends the process with status 0 right after rclpy is shut
    down instead of returning. ``on_stop`` runs after spinning ends (e.g. to join worker threads, close files)
    and before the node is destroyed. Stopping must finish, process exit included, within the node's
    ``shutdown_grace_s``; see the module docstring for what happens otherwise.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    watchdog = ShutdownWatchdog(name)
    watchdog.install()
    node: Node | None = None
    try:
        node = factory()
        watchdog.grace_s = declare(node, "shutdown_grace_s", DEFAULT_SHUTDOWN_GRACE_S,
                                   "Longest a stop on SIGINT/SIGTERM may take before the process is forced out (s)",
                                   low=0.5, high=3600.0, read_only=True)
    except PerceptionError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        return 2
    ReadyAnnouncer(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not watchdog.stop_requested.is_set():
            executor.spin_once(timeout_sec=_SPIN_PERIOD_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if on_stop is not None:
            on_stop(node)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
        watchdog.teardown_done = True
    if exit_process:
        # Everything is closed. Skip the interpreter's teardown: with torch and rclpy loaded its garbage
        # collection was seen to take longer than ros2 launch's 5 s SIGINT timeout on a busy machine (the
        # node then escalated to SIGTERM and counted as killed).
        _flush_logs()
        os._exit(0)
    return 0
