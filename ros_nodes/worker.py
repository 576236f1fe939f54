"""One-slot, rate-limited background work for the nodes: :class:`LatestWorker` keeps only the newest item offered,
runs ``work`` on it on its own thread at most every ``period_s`` and counts failures (a slow or failing job drops
items; it never delays the callback that offered them). ``nice`` lowers that thread's CPU priority, so that work
which can wait (a diagnostic) does not take the cores from inference. No rclpy here."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class LatestWorker:
    """Runs ``work(item)`` on a thread for the newest item offered, at most every ``period_s`` (0: off)."""

    def __init__(self, work: Callable[[Any], None], period_s: float, name: str, nice: int = 0) -> None:
        self.work, self.period_s, self.name, self.nice = work, period_s, name, nice
        self.work_ms: deque = deque(maxlen=200)
        self.errors = 0
        self.last_error = ""
        self._slot: tuple[Any] | None = None
        self._last = -1e9
        self._cv = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        if period_s > 0:
            self._thread.start()

    def due(self) -> bool:
        """Whether an offer now would be taken (lets a caller skip preparing an item that would be dropped)."""
        return self.period_s > 0 and time.monotonic() - self._last >= self.period_s

    def offer(self, item: Any) -> bool:
        """Queue ``item`` when the period has passed (cheap); returns whether it was taken."""
        if self.period_s <= 0:
            return False
        now = time.monotonic()
        with self._cv:
            if now - self._last < self.period_s:
                return False
            self._last = now
            self._slot = (item,)
            self._cv.notify()
        return True

    def _loop(self) -> None:
        if self.nice:  # a lower CPU priority for this thread alone (Linux: a thread is a task with its own nice)
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (AttributeError, OSError) as exc:
                log.warning("%s: cannot lower the thread's priority: %s", self.name, exc)
        while True:
            with self._cv:
                while self._slot is None and self._running:
                    self._cv.wait()
                if not self._running:
                    return
                (item,), self._slot = self._slot, None
            t0 = time.perf_counter()
            try:
                self.work(item)
            except Exception as exc:  # background work must not stop the node; counted on /diagnostics
                if not self._running:
                    return
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("%s failed: %s", self.name, self.last_error)
            self.work_ms.append(1e3 * (time.perf_counter() - t0))

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop the thread (work in progress finishes or is abandoned after ``timeout_s``)."""
        with self._cv:
            self._running = False
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
