"""Sensor-health logic (perception.trust.health): limits, metrics, rate, staleness, skew — no ROS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from perception.errors import ConfigError
from perception.trust.health import (
    DEFAULT_LIMITS,
    HealthMonitor,
    Level,
    Limit,
    RateEstimator,
    cloud_metrics,
    image_metrics,
    parse_limits,
    summarize,
)

REPO = Path(__file__).resolve().parents[1]


def test_limit_levels_and_messages():
    limit = Limit(warn_below=8.0, error_below=4.0, warn_above=20.0, error_above=30.0)
    assert limit.level(10.0) == Level.OK
    assert limit.level(6.0) == Level.WARN
    assert limit.level(3.9) == Level.ERROR
    assert limit.level(25.0) == Level.WARN
    assert limit.level(31.0) == Level.ERROR
    assert limit.level(float("nan")) == Level.ERROR
    assert "error_above 30" in limit.describe(31.0)
    assert "warn_below 8" in limit.describe(6.0)
    assert Limit().level(float("nan")) == Level.OK


@pytest.mark.parametrize("bad, key", [
    ({"warn_below": "fast"}, "warn_below"),
    ({"warn_below": 1.0, "error_below": 2.0}, "error_below"),
    ({"too_high": 1.0}, "unknown"),
    ({"warn_above": True}, "warn_above"),
])
def test_limit_from_dict_rejects(bad, key):
    with pytest.raises(ConfigError, match=key):
        Limit.from_dict(bad, "cfg.lidar.rate_hz")


def test_parse_limits_names_unknown_sensor_and_metric():
    with pytest.raises(ConfigError, match="cfg.radar"):
        parse_limits({"radar": {}}, "cfg")
    with pytest.raises(ConfigError, match="cfg.lidar.colour"):
        parse_limits({"lidar": {"colour": {}}}, "cfg")


def test_param_file_matches_the_defaults_schema():
    doc = yaml.safe_load((REPO / "config" / "sensor_health.param.yaml").read_text())["/**"]["ros__parameters"]
    limits = {s: doc[s] for s in DEFAULT_LIMITS}
    assert {s: set(m) for s, m in limits.items()} == {s: set(m) for s, m in DEFAULT_LIMITS.items()}
    parsed = parse_limits(limits, "sensor_health.param.yaml")
    assert parsed["lidar"]["rate_hz"].error_below == 4.0


def test_cloud_metrics_counts_nan_points():
    pts = np.ones((100, 4), np.float32)
    pts[:10, 0] = np.nan
    pts[10:15, 2] = np.inf
    m = cloud_metrics(pts)
    assert m["point_count"] == 100
    assert m["nan_share"] == pytest.approx(0.15)
    assert cloud_metrics(np.zeros((0, 4), np.float32)) == {"point_count": 0.0, "nan_share": 0.0}


def test_image_metrics_see_darkness_saturation_and_blur():
    rng = np.random.default_rng(0)
    sharp = rng.integers(40, 200, size=(120, 160, 3), dtype=np.uint8)
    blurred = sharp.astype(np.float32)
    for _ in range(6):  # box blur
        blurred = (blurred + np.roll(blurred, 1, 0) + np.roll(blurred, -1, 0) + np.roll(blurred, 1, 1)
                   + np.roll(blurred, -1, 1)) / 5
    m_sharp, m_blur = image_metrics(sharp), image_metrics(blurred.astype(np.uint8))
    assert m_blur["sharpness"] < 0.05 * m_sharp["sharpness"]
    dark = image_metrics((sharp * 0.05).astype(np.uint8))
    assert dark["brightness"] < 15
    white = image_metrics(np.full((50, 50, 3), 255, np.uint8))
    assert white["saturated_share"] == 1.0 and white["brightness"] == pytest.approx(255, abs=0.5)


def test_rate_estimator_window_and_time_jump():
    r = RateEstimator(window_s=2.0)
    for k in range(21):
        r.add(k * 0.1)
    assert r.rate(2.0) == pytest.approx(10.0)
    assert r.rate(10.0) == 0.0  # everything fell out of the window
    r.add(100.0)
    r.add(5.0)  # clock jumped back: the window restarts instead of giving a negative span
    r.add(5.2)
    assert r.rate(5.2) == pytest.approx(5.0)


def test_rate_unknown_after_one_message_is_not_an_error_but_a_silent_window_is():
    r = RateEstimator(window_s=2.0)
    r.add(0.0)
    assert np.isnan(r.rate(0.0))
    mon = HealthMonitor()
    mon.observe("lidar", 0.01, 0.0, {"point_count": 100000.0, "nan_share": 0.0})
    rate = [c for c in mon.checks(0.02) if c.sensor == "lidar" and c.metric == "rate_hz"]
    assert len(rate) == 1 and rate[0].level == Level.OK and "not known yet" in rate[0].message
    mon.observe("lidar", 0.51, 0.5, {"point_count": 100000.0, "nan_share": 0.0})
    mon.observe("lidar", 3.01, 3.0, {"point_count": 100000.0, "nan_share": 0.0})  # 2.5 s gap > the window
    rate = [c for c in mon.checks(3.02) if c.sensor == "lidar" and c.metric == "rate_hz"]
    assert rate[0].value == 0.0 and rate[0].level == Level.ERROR


def _feed(monitor: HealthMonitor, seconds: float, hz: float, camera: bool = True, latency: float = 0.01,
          skew: float = 0.0, points: float = 100000.0) -> float:
    t = 0.0
    while t < seconds:
        monitor.observe("lidar", t + latency, t, {"point_count": points, "nan_share": 0.0})
        if camera:
            monitor.observe("camera", t + skew + latency, t + skew,
                            {"brightness": 100.0, "saturated_share": 0.01, "sharpness": 1000.0})
        t += 1.0 / hz
    return t


def test_monitor_healthy_stream_is_ok():
    mon = HealthMonitor()
    now = _feed(mon, 3.0, 10.0)
    checks = mon.checks(now)
    assert all(c.level == Level.OK for c in checks), [c.message for c in checks]
    assert {c.metric for c in checks} >= {"rate_hz", "latency_s", "point_count", "sharpness", "skew_s"}


def test_monitor_flags_slow_rate_high_latency_few_points_and_skew():
    mon = HealthMonitor()
    now = _feed(mon, 4.0, 3.0, latency=0.5, skew=0.2, points=1000.0)
    by = {(c.sensor, c.metric): c.level for c in mon.checks(now)}
    assert by[("lidar", "rate_hz")] == Level.ERROR
    assert by[("lidar", "latency_s")] == Level.ERROR
    assert by[("lidar", "point_count")] == Level.ERROR
    assert by[("sync", "skew_s")] == Level.ERROR
    level, message = summarize(mon.checks(now), "lidar")
    assert level == Level.ERROR and "point_count" in message


def test_monitor_reports_stale_and_missing_camera():
    mon = HealthMonitor(stale_after_s=1.0)
    now = _feed(mon, 2.0, 10.0, camera=False)
    checks = mon.checks(now)
    camera = [c for c in checks if c.sensor == "camera"]
    assert len(camera) == 1 and camera[0].level == Level.STALE and "never" in camera[0].message
    later = [c for c in mon.checks(now + 5.0) if c.sensor == "lidar"]
    assert later[0].level == Level.STALE and "no message" in later[0].message


def test_rate_follows_stamps_so_a_slow_replay_is_not_flagged():
    mon = HealthMonitor(stale_after_s=1.0)
    for k in range(20):  # recorded at 10 Hz, replayed at a fifth of the speed
        mon.observe("lidar", receive=k * 0.5, stamp=100.0 + k * 0.1, metrics={"point_count": 1e5, "nan_share": 0.0},
                    latency=0.01)
    rate = [c for c in mon.checks(now=9.6) if c.metric == "rate_hz"][0]
    assert rate.level == Level.OK and rate.value == pytest.approx(10.0)
