"""Sensor health: rate, latency, point count, NaN share, exposure, blur, camera-LiDAR skew and extrinsics.

Pure numpy, no ROS: the ``sensor_health`` node feeds observations (receive time, header stamp,
content metrics) into a :class:`HealthMonitor` and publishes the :class:`Check` results it returns.
Levels use the numbers of ``diagnostic_msgs/DiagnosticStatus`` (OK 0, WARN 1, ERROR 2, STALE 3).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from perception.errors import ConfigError
from perception.trust.extrinsics import ExtrinsicCheck, combine, extrinsic_consistency


class Level(IntEnum):
    """Severity of a check (same values as ``diagnostic_msgs/DiagnosticStatus``)."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


_BOUNDS = ("error_below", "warn_below", "warn_above", "error_above")


@dataclass(frozen=True)
class Limit:
    """Warn/error bounds of one metric; a bound left ``None`` is not checked."""

    warn_below: float | None = None
    error_below: float | None = None
    warn_above: float | None = None
    error_above: float | None = None

    def level(self, value: float) -> Level:
        """The level of ``value``; a non-finite value is an error when any bound is set."""
        if not math.isfinite(value):
            return Level.ERROR if any(getattr(self, b) is not None for b in _BOUNDS) else Level.OK
        if (self.error_below is not None and value < self.error_below) or (
                self.error_above is not None and value > self.error_above):
            return Level.ERROR
        if (self.warn_below is not None and value < self.warn_below) or (
                self.warn_above is not None and value > self.warn_above):
            return Level.WARN
        return Level.OK

    def describe(self, value: float) -> str:
        """One phrase saying which bound ``value`` broke, or ``"ok"``."""
        if not math.isfinite(value):
            return "not a finite value"
        for bound in ("error_below", "error_above", "warn_below", "warn_above"):
            limit = getattr(self, bound)
            below = bound.endswith("below")
            if limit is not None and (value < limit if below else value > limit):
                return f"{'<' if below else '>'} {bound} {limit:.4g}"
        return "ok"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> Limit:
        """Parse ``{warn_below: .., error_below: .., warn_above: .., error_above: ..}``; errors name ``where``."""
        if not isinstance(d, dict):
            raise ConfigError(f"expected a mapping of {', '.join(_BOUNDS)}", where)
        unknown = set(d) - set(_BOUNDS)
        if unknown:
            raise ConfigError(f"unknown key(s) {sorted(unknown)}; expected {', '.join(_BOUNDS)}", where)
        values: dict[str, float | None] = {}
        for key in _BOUNDS:
            v = d.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ConfigError(f"expected a finite number, got {v!r}", f"{where}.{key}")
            values[key] = None if v is None else float(v)
        limit = cls(**values)
        for lo, hi in (("error_below", "warn_below"), ("warn_above", "error_above"), ("warn_below", "warn_above")):
            if values[lo] is not None and values[hi] is not None and values[lo] > values[hi]:
                raise ConfigError(f"{lo} ({values[lo]}) must not exceed {hi} ({values[hi]})", where)
        return limit


#: Defaults, also the schema of ``config/sensor_health.param.yaml`` (sensor -> metric -> Limit).
DEFAULT_LIMITS: dict[str, dict[str, dict[str, float]]] = {
    "lidar": {
        "rate_hz": {"warn_below": 8.0, "error_below": 4.0},
        "latency_s": {"warn_above": 0.1, "error_above": 0.3},
        "point_count": {"warn_below": 20000.0, "error_below": 2000.0},
        "nan_share": {"warn_above": 0.05, "error_above": 0.5},
    },
    "camera": {
        "rate_hz": {"warn_below": 8.0, "error_below": 4.0},
        "latency_s": {"warn_above": 0.1, "error_above": 0.3},
        "brightness": {"error_below": 15.0, "warn_below": 40.0, "warn_above": 210.0, "error_above": 240.0},
        "saturated_share": {"warn_above": 0.3, "error_above": 0.6},
        # sharpness, sim:val: 402-956 clean, 39-142 under 2 % motion blur; real KITTI: 2016-4100 clean, 196-822 blurred
        "sharpness": {"error_below": 15.0, "warn_below": 200.0},
    },
    "sync": {
        "skew_s": {"warn_above": 0.05, "error_above": 0.1},
    },
    # extrinsic_gain (perception.trust.extrinsics): how much better a rotated extrinsic aligns LiDAR depth edges with
    # image edges than the calibrated one; sim:val per frame: clean 99 % at <= 0.04, 0.5° / 1° / 2° errors above
    # it on 70 / 87 / 98 % of frames
    "calibration": {
        "extrinsic_gain": {"warn_above": 0.04, "error_above": 0.25},
    },
}

#: Unit of each metric, for messages.
UNITS: dict[str, str] = {
    "rate_hz": "Hz", "latency_s": "s", "point_count": "points", "nan_share": "", "brightness": "/255",
    "saturated_share": "", "sharpness": "", "skew_s": "s", "extrinsic_gain": "",
}


def parse_limits(doc: dict[str, Any], where: str = "sensor_health") -> dict[str, dict[str, Limit]]:
    """``{sensor: {metric: Limit}}`` from a nested mapping shaped like :data:`DEFAULT_LIMITS`."""
    out: dict[str, dict[str, Limit]] = {}
    for sensor, metrics in doc.items():
        if sensor not in DEFAULT_LIMITS:
            raise ConfigError(f"unknown sensor; expected one of {sorted(DEFAULT_LIMITS)}", f"{where}.{sensor}")
        if not isinstance(metrics, dict):
            raise ConfigError("expected a mapping of metric -> bounds", f"{where}.{sensor}")
        out[sensor] = {}
        for metric, bounds in metrics.items():
            if metric not in DEFAULT_LIMITS[sensor]:
                raise ConfigError(f"unknown metric; expected one of {sorted(DEFAULT_LIMITS[sensor])}",
                                  f"{where}.{sensor}.{metric}")
            out[sensor][metric] = Limit.from_dict(bounds, f"{where}.{sensor}.{metric}")
    return out


# ---------------------------------------------------------------------- content metrics
def cloud_metrics(points: np.ndarray) -> dict[str, float]:
    """``point_count`` (all points) and ``nan_share`` (points with a non-finite x, y or z) of an (N, 3+) cloud."""
    n = len(points)
    if n == 0:
        return {"point_count": 0.0, "nan_share": 0.0}
    bad = ~np.isfinite(points[:, :3]).all(axis=1)
    return {"point_count": float(n), "nan_share": float(bad.mean())}


def _luma(image: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an (H, W, 3) uint8 RGB image as float32 0..255."""
    rgb = image.astype(np.float32)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def image_metrics(image: np.ndarray, stride: int = 2) -> dict[str, float]:
    """Exposure and blur of an (H, W, 3) uint8 RGB image.

    ``brightness``: mean luma (0..255); ``saturated_share``: share of pixels at <= 2 or >= 253 (clipped
    black or white); ``sharpness``: variance of the 4-neighbour Laplacian of the luma, computed on every
    ``stride``-th pixel (a blurred or defocused image has little high-frequency energy).
    """
    y = _luma(image[::stride, ::stride])
    if y.size == 0:
        return {"brightness": float("nan"), "saturated_share": float("nan"), "sharpness": float("nan")}
    saturated = float(((y <= 2.0) | (y >= 253.0)).mean())
    if min(y.shape) >= 3:
        lap = (y[1:-1, :-2] + y[1:-1, 2:] + y[:-2, 1:-1] + y[2:, 1:-1]) - 4.0 * y[1:-1, 1:-1]
        sharpness = float(lap.var())
    else:
        sharpness = float("nan")
    return {"brightness": float(y.mean()), "saturated_share": saturated, "sharpness": sharpness}


# ---------------------------------------------------------------------- streams
class RateEstimator:
    """Message rate over a sliding window of times (seconds: header stamps or arrival times)."""

    def __init__(self, window_s: float = 2.0, max_samples: int = 1000) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=max_samples)
        self._seen = 0  # arrivals since the start or the last restart

    def add(self, t: float) -> None:
        """Record one arrival at time ``t`` (a clock that jumped back restarts the window)."""
        if self._times and t < self._times[-1]:
            self._times.clear()
            self._seen = 0
        self._times.append(t)
        self._seen += 1

    def rate(self, now: float) -> float:
        """Arrivals per second within the window ending at ``now``; 0 with fewer than two in the window, NaN
        (not known yet) while fewer than two have arrived since the start or a restart."""
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0 if self._seen >= 2 else float("nan")
        span = max(self._times[-1] - self._times[0], 1e-9)
        return (len(self._times) - 1) / span


@dataclass
class Check:
    """The outcome of one metric check."""

    sensor: str
    metric: str
    value: float
    level: Level
    message: str


@dataclass
class _Stream:
    rate: RateEstimator
    last_receive: float | None = None
    last_stamp: float | None = None
    latency: float = float("nan")
    metrics: dict[str, float] = field(default_factory=dict)


class HealthMonitor:
    """Tracks the LiDAR and camera streams and their skew; :meth:`checks` grades them against limits.

    Times are seconds: ``receive`` and ``now`` on one monotonic clock (staleness), ``stamp`` the message
    header stamp (rate over a window of stamps, skew between sensors).
    """

    SENSORS = ("lidar", "camera")

    def __init__(self, limits: dict[str, dict[str, Limit]] | None = None, window_s: float = 2.0,
                 stale_after_s: float = 1.0, skew_window: int = 20, extrinsic_window: int = 10) -> None:
        self.limits = limits if limits is not None else parse_limits(DEFAULT_LIMITS)
        self.stale_after_s = stale_after_s
        self._streams = {s: _Stream(RateEstimator(window_s)) for s in self.SENSORS}
        self._stamps = {s: deque(maxlen=skew_window) for s in self.SENSORS}
        self._extrinsics: deque[ExtrinsicCheck] = deque(maxlen=extrinsic_window)

    def observe_extrinsics(self, check: ExtrinsicCheck) -> None:
        """Record the extrinsic check of one synchronised (cloud, image) pair; :meth:`checks` grades the window."""
        self._extrinsics.append(check)

    def observe(self, sensor: str, receive: float, stamp: float, metrics: dict[str, float] | None = None,
                latency: float | None = None) -> None:
        """Record one message of ``sensor`` ("lidar" or "camera") with its content metrics.

        ``latency`` defaults to ``receive - stamp``; pass it when stamps and arrivals use different clocks
        (a node replaying a bag measures arrivals on wall time and latency on the bag's clock).
        """
        stream = self._streams[sensor]
        stream.rate.add(stamp)  # the sensor's own rate: also right for a bag replayed slower or faster
        stream.last_receive = receive
        stream.last_stamp = stamp
        stream.latency = receive - stamp if latency is None else latency
        if metrics is not None:
            stream.metrics = dict(metrics)
        stamps = self._stamps[sensor]
        if stamps and stamp < stamps[-1]:
            for d in self._stamps.values():  # time jumped back (a looping bag): forget the old pairs
                d.clear()
        stamps.append(stamp)

    def checks(self, now: float) -> list[Check]:
        """Grade every tracked metric at time ``now``; a silent sensor yields one STALE check."""
        out: list[Check] = []
        for sensor in self.SENSORS:
            stream = self._streams[sensor]
            limits = self.limits.get(sensor, {})
            if stream.last_receive is None or now - stream.last_receive > self.stale_after_s:
                age = "never received" if stream.last_receive is None else \
                    f"no message for {now - stream.last_receive:.2f} s"
                out.append(Check(sensor, "rate_hz", 0.0, Level.STALE, age))
                continue
            rate = stream.rate.rate(stream.last_stamp)
            values = {"latency_s": stream.latency, **stream.metrics}
            if math.isnan(rate):  # one message so far (start-up, a looping bag's restart): no rate to grade
                out.append(Check(sensor, "rate_hz", rate, Level.OK, "rate_hz not known yet (one message so far)"))
            else:
                values["rate_hz"] = rate
            for metric, limit in limits.items():
                if metric in values:
                    out.append(self._grade(sensor, metric, values[metric], limit))
        skew = self.skew()
        skew_limit = self.limits.get("sync", {}).get("skew_s")
        if skew_limit is not None and math.isfinite(skew):
            out.append(self._grade("sync", "skew_s", skew, skew_limit))
        if self._extrinsics:
            out.append(grade_extrinsics(combine(list(self._extrinsics)), self.limits, len(self._extrinsics)))
        return out

    def skew(self) -> float:
        """Median over recent LiDAR stamps of the gap to the nearest camera stamp (s); NaN when unknown.

        Only LiDAR stamps no newer than the newest camera stamp count: their partner had its chance to arrive.
        """
        cams = np.asarray(self._stamps["camera"], dtype=np.float64)
        if cams.size == 0:
            return float("nan")
        lidar = np.asarray([t for t in self._stamps["lidar"] if t <= cams.max()], dtype=np.float64)
        if lidar.size == 0:
            return float("nan")
        return float(np.median(np.abs(lidar[:, None] - cams[None, :]).min(axis=1)))

    @staticmethod
    def _grade(sensor: str, metric: str, value: float, limit: Limit) -> Check:
        level = limit.level(value)
        unit = UNITS.get(metric, "")
        text = f"{metric} {value:.4g}{(' ' + unit) if unit else ''}"
        if level != Level.OK:
            text += f" ({limit.describe(value)})"
        return Check(sensor, metric, value, level, text)


def grade_extrinsics(check: ExtrinsicCheck, limits: dict[str, dict[str, Limit]], frames: int = 1) -> Check:
    """The ``calibration`` check of an extrinsic consistency result (over ``frames`` frames): its gain against
    the ``extrinsic_gain`` limit, with the rotation that fits better; OK "not judged" when it had too few edges."""
    limit = limits.get("calibration", {}).get("extrinsic_gain")
    over = f" over {frames} frames" if frames > 1 else ""
    if not check.valid:
        return Check("calibration", "extrinsic_gain", check.gain, Level.OK,
                     f"extrinsics not judged{over}: {check.reason}")
    if limit is None:
        return Check("calibration", "extrinsic_gain", check.gain, Level.OK, f"extrinsic_gain {check.gain:.3g}")
    out = HealthMonitor._grade("calibration", "extrinsic_gain", check.gain, limit)
    if out.level != Level.OK:
        rx, ry, rz = check.best_offset_deg
        out.message += (f"{over}: the extrinsic rotated by ({rx:+.1f}°, {ry:+.1f}°, {rz:+.1f}°) about the camera's "
                        f"x, y, z axes aligns LiDAR edges with image edges better; check the LiDAR-camera calibration")
    return out


def summarize(checks: list[Check], sensor: str) -> tuple[Level, str]:
    """Worst level among ``sensor``'s checks and a message naming the checks at that level."""
    mine = [c for c in checks if c.sensor == sensor]
    if not mine:
        return Level.OK, "no checks"
    worst = max(c.level for c in mine)
    if worst == Level.OK:
        return worst, "ok"
    return worst, "; ".join(c.message for c in mine if c.level == worst)


# ---------------------------------------------------------------------- one frame
def frame_checks(frame: Any, limits: dict[str, dict[str, Limit]] | None = None) -> list[Check]:
    """Content checks of one :class:`~perception.frame.Frame` as the ``sensor_health`` node grades a message:
    the cloud's point count and NaN share, the image's exposure and sharpness, camera-LiDAR skew from the
    stamps, the extrinsic consistency of this one frame (with a rig); a missing image is one camera ERROR. Rate and
    latency need a stream (:class:`HealthMonitor`, which also judges the extrinsics over a window of frames)."""
    limits = limits if limits is not None else parse_limits(DEFAULT_LIMITS)
    out: list[Check] = []
    values: dict[str, dict[str, float]] = {"lidar": cloud_metrics(frame.points)}
    if frame.image is None:
        out.append(Check("camera", "image", float("nan"), Level.ERROR, "no camera image"))
    else:
        values["camera"] = image_metrics(frame.image)
        if frame.image_stamp_ns is not None:
            values["sync"] = {"skew_s": abs(frame.image_stamp_ns - frame.stamp_ns) * 1e-9}
        if frame.rig is not None and "calibration" in limits and len(frame.points):
            out.append(grade_extrinsics(extrinsic_consistency(frame.points, frame.image, frame.rig), limits))
    for sensor, metrics in values.items():
        for metric, value in metrics.items():
            limit = limits.get(sensor, {}).get(metric)
            if limit is not None:
                out.append(HealthMonitor._grade(sensor, metric, value, limit))
    return out


def frame_flagged(frame: Any, limits: dict[str, dict[str, Limit]] | None = None,
                  level: Level = Level.WARN) -> bool:
    """True when any :func:`frame_checks` check of ``frame`` is at ``level`` or worse."""
    return any(c.level >= level for c in frame_checks(frame, limits))
