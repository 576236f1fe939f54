"""Attention pictures off the inference path: the fusion_detector node hands each published result to
:class:`XaiWorker`, which keeps only the newest one, renders it on its own thread at most every
``period_s`` (:mod:`perception.trust.explain`, the reports' renderer) and calls ``publish``. No rclpy here."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from perception.detector.result import DetectionResult
from perception.frame import Frame
from perception.trust.explain import render_bev, render_image

log = logging.getLogger(__name__)

#: publish(image_rgb, bev_rgb, context) — context is what the node passed to :meth:`XaiWorker.offer`.
Publish = Callable[[np.ndarray, np.ndarray, object], None]


class XaiWorker:
    """Rate-limited, one-slot renderer thread (a slow render drops pictures, never delays detections)."""

    def __init__(self, publish: Publish, period_s: float, min_probability: float = 0.3, top_n: int = 5) -> None:
        self.publish, self.period_s = publish, period_s
        self.min_probability, self.top_n = min_probability, top_n
        self.render_ms: deque = deque(maxlen=200)
        self.errors = 0
        self.last_error = ""
        self._slot: tuple[Frame, DetectionResult, object] | None = None
        self._last = -1e9
        self._cv = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._work, name="xai", daemon=True)
        if period_s > 0:
            self._thread.start()

    def offer(self, frame: Frame, result: DetectionResult, context: object) -> bool:
        """Queue a result for rendering when the period has passed (cheap; called after publishing)."""
        if self.period_s <= 0:
            return False
        now = time.monotonic()
        with self._cv:
            if now - self._last < self.period_s:
                return False
            self._last = now
            self._slot = (frame, result, context)
            self._cv.notify()
        return True

    def render(self, frame: Frame, result: DetectionResult) -> tuple[np.ndarray, np.ndarray]:
        """The camera and BEV pictures of one result (timed into ``render_ms``)."""
        t0 = time.perf_counter()
        image = render_image(frame, result, self.min_probability, self.top_n)
        bev = render_bev(frame, result, self.min_probability, self.top_n)
        self.render_ms.append(1e3 * (time.perf_counter() - t0))
        return image, bev

    def _work(self) -> None:
        while True:
            with self._cv:
                while self._slot is None and self._running:
                    self._cv.wait()
                if not self._running:
                    return
                (frame, result, context), self._slot = self._slot, None
            try:
                image, bev = self.render(frame, result)
                self.publish(image, bev, context)
            except Exception as exc:  # a bad picture must not stop detections; counted on /diagnostics
                if not self._running:
                    return
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("XAI rendering failed: %s", self.last_error)

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop the thread (a render in progress finishes or is abandoned after ``timeout_s``)."""
        with self._cv:
            self._running = False
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
