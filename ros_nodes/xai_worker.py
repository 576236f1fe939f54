"""Attention pictures off the inference path: the fusion_detector node hands each published result to
:class:`XaiWorker`, which keeps only the newest one, renders it on its own thread at most every
``period_s`` (:mod:`perception.trust.explain`, the reports' renderer) and calls ``publish``. No rclpy here."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np

from perception.detector.result import DetectionResult
from perception.frame import Frame
from perception.trust.explain import render_bev, render_image
from ros_nodes.worker import LatestWorker

#: publish(image_rgb, bev_rgb, context) — context is what the node passed to :meth:`XaiWorker.offer`.
Publish = Callable[[np.ndarray, np.ndarray, object], None]


class XaiWorker(LatestWorker):
    """Rate-limited, one-slot renderer thread (a slow render drops pictures, never delays detections)."""

    def __init__(self, publish: Publish, period_s: float, min_probability: float = 0.3, top_n: int = 5) -> None:
        self.publish = publish
        self.min_probability, self.top_n = min_probability, top_n
        self.render_ms: deque = deque(maxlen=200)  # rendering alone, without publishing
        super().__init__(self._render_and_publish, period_s, "XAI rendering")

    def offer(self, frame: Frame, result: DetectionResult, context: object) -> bool:  # type: ignore[override]
        """Queue a result for rendering when the period has passed (cheap; called after publishing)."""
        return super().offer((frame, result, context))

    def render(self, frame: Frame, result: DetectionResult) -> tuple[np.ndarray, np.ndarray]:
        """The camera and BEV pictures of one result (timed into ``render_ms``)."""
        t0 = time.perf_counter()
        image = render_image(frame, result, self.min_probability, self.top_n)
        bev = render_bev(frame, result, self.min_probability, self.top_n)
        self.render_ms.append(1e3 * (time.perf_counter() - t0))
        return image, bev

    def _render_and_publish(self, item: tuple[Frame, DetectionResult, object]) -> None:
        frame, result, context = item
        image, bev = self.render(frame, result)
        self.publish(image, bev, context)
