"""Approximate-time synchronisation of a primary stream (LiDAR) with one secondary stream (camera).

``message_filters`` is not installable from PyPI, and its policy does not fit a detector that must go
on without the camera: here every primary message is emitted exactly once, with the secondary message
nearest in stamp (within ``slop``) or, after ``timeout_s`` of waiting, with ``None`` and a reason.
Queues are bounded. Pure Python (no rclpy): call it from one thread (the executor's).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CAMERA_MISSING = "camera_missing"  # no secondary message at all near this primary
CAMERA_LATE = "camera_late"  # secondaries arrive, but none within slop in time


@dataclass
class Match:
    """A primary message and its partner (``None`` when unmatched, then ``reason`` says why)."""

    primary: Any
    primary_stamp_ns: int
    secondary: Any | None = None
    secondary_stamp_ns: int | None = None
    reason: str | None = None

    @property
    def skew_ns(self) -> int | None:
        """Secondary minus primary stamp, or None when unmatched."""
        return None if self.secondary_stamp_ns is None else self.secondary_stamp_ns - self.primary_stamp_ns


class ApproximateTimeSync:
    """Pairs each primary message with the nearest-in-stamp secondary message.

    A primary is emitted as soon as the answer cannot improve (a secondary at or after its stamp has
    arrived; stamps of one stream are assumed non-decreasing), else when it has waited ``timeout_s``
    (wall time) or is pushed out of the bounded primary queue.
    """

    def __init__(self, slop_s: float = 0.05, timeout_s: float = 0.1, queue_size: int = 4,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if slop_s < 0 or timeout_s < 0 or queue_size < 1:
            raise ValueError("slop_s and timeout_s must be >= 0 and queue_size >= 1")
        self.slop_ns = int(slop_s * 1e9)
        self.timeout_s = timeout_s
        self.queue_size = queue_size
        self._clock = clock
        self._primaries: deque[tuple[int, Any, float]] = deque()  # (stamp, msg, arrival time)
        self._secondaries: deque[tuple[int, Any]] = deque(maxlen=queue_size * 4)
        self.overflowed = 0  # primaries emitted early because the queue was full

    def add_primary(self, msg: Any, stamp_ns: int) -> list[Match]:
        """Queue a primary message; returns every match that is ready now."""
        if self._secondaries and stamp_ns < self._secondaries[0][0] - 10 * self.slop_ns - 10**9:
            self._secondaries.clear()  # time jumped back (a looping bag): old partners are meaningless
        self._primaries.append((stamp_ns, msg, self._clock()))
        out = []
        while len(self._primaries) > self.queue_size:
            self.overflowed += 1
            out.append(self._emit(self._primaries.popleft()))
        return out + self._ready(final=False)

    def add_secondary(self, msg: Any, stamp_ns: int) -> list[Match]:
        """Buffer a secondary message; returns every match that is ready now."""
        if self._secondaries and stamp_ns < self._secondaries[-1][0]:
            self._secondaries.clear()  # time jumped back
        self._secondaries.append((stamp_ns, msg))
        return self._ready(final=False)

    def poll(self) -> list[Match]:
        """Matches whose wait has timed out (call periodically, e.g. from a 20 ms timer)."""
        return self._ready(final=True)

    @property
    def pending(self) -> int:
        """Primaries waiting for a partner."""
        return len(self._primaries)

    def _ready(self, final: bool) -> list[Match]:
        out = []
        now = self._clock()
        while self._primaries:
            stamp, _, arrived = self._primaries[0]
            decided = bool(self._secondaries) and self._secondaries[-1][0] >= stamp
            if not decided and not (final and now - arrived >= self.timeout_s):
                break
            out.append(self._emit(self._primaries.popleft()))
        return out

    def _emit(self, entry: tuple[int, Any, float]) -> Match:
        stamp, msg, _ = entry
        best = min(self._secondaries, key=lambda s: abs(s[0] - stamp), default=None)
        # Secondaries too old to pair with this or any later primary are of no further use.
        while self._secondaries and self._secondaries[0][0] < stamp - self.slop_ns:
            self._secondaries.popleft()
        if best is not None and abs(best[0] - stamp) <= self.slop_ns:
            return Match(msg, stamp, best[1], best[0])
        reason = CAMERA_LATE if best is not None and abs(best[0] - stamp) <= max(10 * self.slop_ns, 10**9) \
            else CAMERA_MISSING
        return Match(msg, stamp, reason=reason)
