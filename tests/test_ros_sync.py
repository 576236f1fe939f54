"""Approximate-time synchroniser (ros_nodes.sync): pairing, timeouts, bounded queues. Pure Python."""

from __future__ import annotations

import pytest

from ros_nodes.sync import CAMERA_LATE, CAMERA_MISSING, ApproximateTimeSync

MS = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_pairs_each_cloud_with_the_nearest_image_once_decided():
    clock = FakeClock()
    sync = ApproximateTimeSync(slop_s=0.05, timeout_s=0.1, clock=clock)
    assert sync.add_secondary("img0", 0) == []  # no primary yet
    assert sync.add_primary("pc100", 100 * MS) == []  # a closer image may still come
    assert sync.add_secondary("img90", 90 * MS) == []  # still before the cloud: not decided
    out = sync.add_secondary("img120", 120 * MS)  # after the cloud: the answer cannot improve
    assert len(out) == 1 and out[0].primary == "pc100" and out[0].secondary == "img90"
    assert out[0].skew_ns == -10 * MS and out[0].reason is None


def test_image_arriving_first_matches_immediately():
    sync = ApproximateTimeSync(slop_s=0.05, timeout_s=0.1, clock=FakeClock())
    sync.add_secondary("img", 200 * MS)
    out = sync.add_primary("pc", 200 * MS)
    assert [(m.primary, m.secondary) for m in out] == [("pc", "img")]


def test_timeout_releases_lidar_only_with_a_reason():
    clock = FakeClock()
    sync = ApproximateTimeSync(slop_s=0.05, timeout_s=0.1, clock=clock)
    sync.add_primary("pc", 100 * MS)
    clock.t = 0.05
    assert sync.poll() == []
    clock.t = 0.11
    out = sync.poll()
    assert len(out) == 1 and out[0].secondary is None and out[0].reason == CAMERA_MISSING
    assert sync.pending == 0


def test_stale_camera_is_late_and_far_images_are_not_paired():
    clock = FakeClock()
    sync = ApproximateTimeSync(slop_s=0.05, timeout_s=0.1, clock=clock)
    sync.add_secondary("old", 0)
    sync.add_primary("pc", 300 * MS)
    clock.t = 0.2
    out = sync.poll()
    assert out[0].secondary is None and out[0].reason == CAMERA_LATE
    out = sync.add_primary("pc2", 5_000 * MS) + sync.add_secondary("img", 5_200 * MS)
    assert out[0].secondary is None  # 200 ms apart > slop, decided since the image is newer
    assert out[0].reason == CAMERA_LATE


def test_queue_is_bounded_and_overflow_counted():
    clock = FakeClock()
    sync = ApproximateTimeSync(slop_s=0.01, timeout_s=10.0, queue_size=2, clock=clock)
    emitted = []
    for k in range(5):
        emitted += sync.add_primary(f"pc{k}", k * 100 * MS)
    assert sync.pending == 2 and sync.overflowed == 3
    assert [m.primary for m in emitted] == ["pc0", "pc1", "pc2"]
    emitted = sync.add_secondary("img", 400 * MS)
    assert [(m.primary, m.secondary) for m in emitted] == [("pc3", None), ("pc4", "img")]


def test_time_jump_back_clears_old_images():
    sync = ApproximateTimeSync(slop_s=0.05, timeout_s=0.1, clock=FakeClock())
    for k in range(3):
        sync.add_secondary(f"img{k}", (10_000 + k * 100) * MS)
    out = sync.add_secondary("loop", 0) + sync.add_primary("pc", 0)  # a looping bag starts again
    assert [(m.primary, m.secondary) for m in out] == [("pc", "loop")]


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        ApproximateTimeSync(slop_s=-1.0)
    with pytest.raises(ValueError):
        ApproximateTimeSync(queue_size=0)
