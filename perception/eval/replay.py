"""Evaluation of a replay from its recording (no ROS): what the graph answered, how well, how fast.

:func:`score_recording` computes, from a recording made by ``bag_recorder`` (:mod:`perception.io.recording`):
AP|R40 against the ground truth the player published (the same functions as ``perception eval``; a cloud that
got no Detection3DArray counts as a frame with no detections), detection ECE before/after calibration,
stamp → publish latency over DDS per frame (cloud arrival → detections arrival at the recorder), frames
dropped or degraded and why, and the OOD / sensor-health / crowd time series. :func:`write_replay_report`
adds the pictures and the HTML page.
"""

from __future__ import annotations

import html
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perception.errors import DataError
from perception.io.recording import Recording, read_recording
from perception.rig import Rig

log = logging.getLogger(__name__)
WARN_LEVEL = 1
#: The bag player's default max_gap_s, in ns.
MAX_GAP_NS = 1_000_000_000


@dataclass
class BagCheck:
    """What a bag to be replayed holds, and what of it cannot be read."""

    path: Path
    clouds: int
    duration_s: float
    labelled_frames: int
    camera_frames: int
    skipped: list[str] = field(default_factory=list)
    rig: Rig | None = None  # from the bag's camera info + /tf_static

    def describe(self) -> str:
        """One paragraph for the user."""
        text = (f"{self.path}: {self.clouds} LiDAR clouds, {self.camera_frames} with an image, "
                f"{self.labelled_frames} with ground truth, {self.duration_s:.1f} s")
        return text + "".join(f"\n  skipped: {s}" for s in self.skipped)


def check_replay_bag(path: str | Path) -> BagCheck:
    """Read every frame of a bag once (read-only) before replaying it.

    DataError naming the bag for a missing/damaged metadata.yaml, no LiDAR topic, an unknown point layout or
    no readable cloud; a bag that breaks off part-way (a crashed recorder) is accepted with what is readable,
    and what was skipped is listed.
    """
    from perception.io.bag import BagReader

    path = Path(path)
    skipped: list[str] = []
    clouds = labelled = camera = 0
    duration_ns = last = 0
    rig = None
    try:
        reader = BagReader(path)
    except DataError as exc:
        if "magic" in str(exc).lower():  # rosbags reads an mcap from its footer: a cut-off file has none
            raise DataError(f"{str(exc).removeprefix(f'{path}: ')} (the mcap file is truncated: a recorder that "
                            "crashed leaves no footer; nothing of it can be replayed)", str(path)) from exc
        raise
    with reader:
        listed = reader.info().topics
        frames = reader.frames()
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except DataError as exc:
                if clouds == 0:
                    raise
                skipped.append(f"frames after #{clouds}: {exc}")
                break
            except Exception as exc:  # rosbags' own errors on a truncated file
                if clouds == 0:
                    raise DataError(f"no readable LiDAR cloud: {exc}", str(path)) from exc
                skipped.append(f"frames after #{clouds}: unreadable ({type(exc).__name__}: {exc})")
                break
            rig = rig or frame.rig
            if clouds:  # as the player plays it: silent gaps (between recorded drives) shortened to 1 s
                duration_ns += min(frame.stamp_ns - last, MAX_GAP_NS)
            last = frame.stamp_ns
            clouds += 1
            camera += frame.image is not None
            labelled += bool(frame.meta.get("has_labels"))
    listed_clouds = listed["/sensing/lidar/points"].count
    if listed_clouds > clouds and not skipped:
        skipped.append(f"{listed_clouds - clouds} of {listed_clouds} clouds listed in metadata.yaml are not readable")
    if clouds == 0:
        raise DataError("no LiDAR cloud to replay", f"{path}:/sensing/lidar/points")
    return BagCheck(path, clouds, duration_ns / 1e9 + 0.1, labelled, camera, skipped, rig)


def check_recording_path(record: Path, bag: Path, force: bool) -> None:
    """Refuse a recording inside or over the replayed bag, or over an existing one without ``force``."""
    record, bag = record.resolve(), bag.resolve()
    if record == bag or record.is_relative_to(bag) or bag.is_relative_to(record):
        raise DataError(f"the recording must not be inside or over the replayed bag {bag}", str(record))
    if record.exists() and not force:
        raise DataError("recording exists; pass --force to replace it", str(record))


def _records(rec: Recording):
    from perception.eval.evaluate import FrameRecord

    return [FrameRecord(f"{f.stamp_ns}", f.gt, f.detections, degraded=f.degraded)
            for f in rec.frames if f.gt is not None]


def score_recording(path: str | Path, classes: list[str], rec: Recording | None = None) -> dict[str, object]:
    """The metrics of a recorded replay (the ``metrics.json`` of its report)."""
    from perception.eval.evaluate import ap_table, calibration_stats, difficulty_for

    rec = rec or read_recording(path)
    clouds = [f for f in rec.frames if f.arrival_ns is not None]
    answered = [f for f in rec.frames if f.detections_ns is not None]
    published = int((rec.status.get("by_topic") or {}).get("/sensing/lidar/points", len(clouds)))
    dropped = [f for f in clouds if f.detections_ns is None]
    reasons = Counter(r for f in answered for r in f.degraded)
    why = {}
    if published > len(clouds):
        why["published by the player, never received by the recorder"] = published - len(clouds)
    if dropped:
        why["received, never answered with a Detection3DArray"] = len(dropped)
    pipeline = _last_values(rec, "fusion_detector: pipeline")
    lat = np.array([f.latency_ms for f in rec.frames if f.latency_ms is not None])
    # While the bag played (before the first cloud every sensor is "never received" by design).
    # (after the last one they go stale, also by design).
    start = min((f.arrival_ns for f in clouds), default=0)
    end = max((f.arrival_ns for f in clouds), default=0) + MAX_GAP_NS
    warnings = [d for d in rec.diagnostics
                if d[1].startswith("sensor_health") and d[2] >= WARN_LEVEL and start <= d[0] <= end]
    m: dict[str, object] = {
        "recording": str(rec.path), "bag": rec.custom.get("trustworthy_perception.replayed_bag", "?"),
        "player": {k: v for k, v in rec.status.items() if k != "bag"},
        "frames": {"clouds": max(published, len(clouds)), "received": len(clouds), "answered": len(answered),
                   "dropped": max(published, len(clouds)) - len(answered), "dropped_why": why,
                   "dropped_stamps_ns": [f.stamp_ns for f in dropped],
                   "degraded": sum(bool(f.degraded) for f in answered), "degraded_why": dict(reasons)},
        "detector_pipeline": pipeline,
        "latency_ms": ({"p50": round(float(np.percentile(lat, 50)), 1), "p99": round(float(np.percentile(lat, 99)), 1),
                        "max": round(float(lat.max()), 1), "frames": int(lat.size),
                        "what": "cloud arrival -> its Detection3DArray's arrival, both at the recorder over DDS"}
                       if lat.size else {}),
        "replay_s": (round((max(f.detections_ns for f in answered) - start) / 1e9, 2) if answered and start else None),
        "ood": {"frames_scored": sum(f.ood_frame_flag is not None for f in rec.frames),
                "frames_flagged": sum(bool(f.ood_frame_flag) for f in rec.frames),
                "detections_flagged": sum(f.ood_detections_flagged for f in rec.frames)},
        "health": {"warnings": len(warnings), "by_status": dict(Counter(f"{d[1]}: {d[3]}" for d in warnings))},
        "crowd": {"messages": len(rec.crowd),
                  "mean_count": round(float(np.mean([c[1] for c in rec.crowd])), 2) if rec.crowd else None},
        "skipped": rec.skipped,
    }
    records = _records(rec)
    m["labelled_frames"] = len(records)
    if records:
        difficulty = difficulty_for(records)
        m["difficulty"] = difficulty
        m["ap3d"] = ap_table(records, classes, "3d", difficulty)
        m["apbev"] = ap_table(records, classes, "bev", difficulty)
        m.update(calibration_stats(records))
    return m


def _last_values(rec: Recording, name: str) -> dict[str, object]:
    """Level, message and values of the last /diagnostics status called ``name``."""
    last = [d for d in rec.diagnostics if d[1] == name]
    return {"level": last[-1][2], "message": last[-1][3], **last[-1][4]} if last else {}


# ---------------------------------------------------------------------------------------------- pictures
def _plot_latency(rec: Recording, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = rec.frames[0].stamp_ns if rec.frames else 0
    xs = [(f.stamp_ns - t0) / 1e9 for f in rec.frames if f.latency_ms is not None]
    ys = [f.latency_ms for f in rec.frames if f.latency_ms is not None]
    drops = [(f.stamp_ns - t0) / 1e9 for f in rec.frames if f.arrival_ns is not None and f.detections_ns is None]
    fig, ax = plt.subplots(figsize=(9, 3))
    ax.plot(xs, ys, "o-", ms=3, label="cloud arrival → detections (DDS)")
    if ys:
        ax.axhline(float(np.median(ys)), color="k", ls=":", lw=1, label=f"p50 {np.median(ys):.0f} ms")
    for i, x in enumerate(drops):
        ax.axvline(x, color="r", lw=1, label="dropped frame" if i == 0 else None)
    ax.set_xlabel("bag time (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("stamp → publish latency per frame")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_timelines(rec: Recording, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = rec.frames[0].stamp_ns if rec.frames else 0
    fig, axes = plt.subplots(3, 1, figsize=(9, 6.5), sharex=True)
    ax = axes[0]
    scored = [f for f in rec.frames if f.ood_frame_score is not None]
    ax.plot([(f.stamp_ns - t0) / 1e9 for f in scored], [f.ood_frame_score for f in scored], "o-", ms=3,
            label="frame OOD score")
    flagged = [f for f in scored if f.ood_frame_flag]
    ax.plot([(f.stamp_ns - t0) / 1e9 for f in flagged], [f.ood_frame_score for f in flagged], "rx", ms=8,
            label="flagged OOD")
    ax.set_ylabel("OOD score")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("out-of-distribution flags, sensor-health warnings, crowd counts")
    ax = axes[1]
    names = sorted({d[1] for d in rec.diagnostics if d[1].startswith("sensor_health")})
    log0 = min((f.arrival_ns for f in rec.frames if f.arrival_ns is not None), default=None)
    colors = {0: "tab:green", 1: "orange", 2: "red", 3: "gray"}
    for i, name in enumerate(names):
        if log0 is None:
            continue
        pts = [d for d in rec.diagnostics if d[1] == name and d[0] >= log0 - 1_000_000_000]
        # diagnostics carry the recorder's wall time; aligned to bag time through the first cloud's arrival
        ax.scatter([(d[0] - log0) / 1e9 for d in pts], [i] * len(pts), c=[colors.get(d[2], "k") for d in pts], s=14)
    ax.set_yticks(range(len(names)), [n.replace("sensor_health: ", "") for n in names])
    ax.set_ylabel("health\n(green ok, orange warn,\nred error)", fontsize=8)
    ax = axes[2]
    if rec.crowd:
        xs = [(c[0] - t0) / 1e9 for c in rec.crowd]
        ax.fill_between(xs, [c[2] for c in rec.crowd], [c[3] for c in rec.crowd], alpha=0.3, label="interval")
        ax.plot(xs, [c[1] for c in rec.crowd], "o-", ms=3, label="crowd count")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylabel("people")
    ax.set_xlabel("bag time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _xai_strip(rec: Recording, path: Path) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rec.xai:
        return None
    t0 = rec.frames[0].stamp_ns if rec.frames else 0
    n = len(rec.xai)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (topic, stamp, img) in zip(axes.ravel(), rec.xai):
        ax.imshow(img)
        ax.set_title(f"{topic.rsplit('/', 1)[1]} t={(stamp - t0) / 1e9:.1f} s", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _table(rows: list[tuple[str, object]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _ap_html(m: dict) -> str:
    if "ap3d" not in m:
        return "<p>No ground truth in this bag: AP and calibration are not computed.</p>"
    classes = list(m["ap3d"])
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in classes)
    rows = "".join(f"<tr><th>{name}</th>" + "".join(f"<td>{fmt(m[key][c])}</td>" for c in classes) + "</tr>"
                   for key, name in (("ap3d", "3D AP|R40"), ("apbev", "BEV AP|R40")))
    return (f"<table><tr><th></th>{head}</tr>{rows}</table><p>{m['labelled_frames']} labelled frames, difficulty "
            f"{m.get('difficulty')}; D-ECE raw {m.get('dece_before')} → calibrated {m.get('dece_after')}; "
            f"coverage 1σ {m.get('coverage_1sigma')}, 2σ {m.get('coverage_2sigma')}</p>")


def write_replay_report(recording: str | Path, out: str | Path, classes: list[str], bag_check: BagCheck | None = None,
                        wall_s: float | None = None) -> dict[str, object]:
    """Score a recording and write ``out/index.html`` (+ PNGs, ``metrics.json``); returns the metrics."""
    from perception.eval.calibration_metrics import match_correct
    from perception.eval.report import plot_reliability

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rec = read_recording(recording)
    m = score_recording(recording, classes, rec)
    if bag_check is not None:
        m["bag"] = str(bag_check.path)
        m["bag_duration_s"] = round(bag_check.duration_s, 2)
        m["bag_skipped"] = bag_check.skipped
    m["wall_s"] = None if wall_s is None else round(wall_s, 1)
    pictures = {"latency": _plot_latency(rec, out / "latency.png"),
                "timelines": _plot_timelines(rec, out / "timelines.png")}
    xai = _xai_strip(rec, out / "xai_strip.png")
    records = [r for r in _records(rec) if r.detections]
    if records:
        ok = np.concatenate([match_correct(r.gt, [d.box for d in r.detections],
                                           np.array([d.score for d in r.detections]))[0] for r in records])
        dets = [d for r in records for d in r.detections]
        pictures["reliability"] = plot_reliability(np.array([d.score for d in dets]),
                                                   np.array([d.probability for d in dets]), ok, out / "reliability.png")
    m["report"] = str(out / "index.html")
    (out / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
    f = m["frames"]
    lat = m["latency_ms"] or {}
    summary = _table([
        ("bag", m["bag"]), ("recording", m["recording"]),
        ("clouds / received / answered", f"{f['clouds']} / {f['received']} / {f['answered']}"),
        ("dropped", f"{f['dropped']} {f['dropped_why'] or ''}"),
        ("degraded", f"{f['degraded']} {f['degraded_why'] or ''}"),
        ("detector pipeline (last /diagnostics)", m["detector_pipeline"] or "-"),
        ("DDS latency p50 / p99 / max (ms)", f"{lat.get('p50')} / {lat.get('p99')} / {lat.get('max')}" if lat else "-"),
        ("OOD frames flagged / scored", f"{m['ood']['frames_flagged']} / {m['ood']['frames_scored']}"),
        ("sensor-health warnings", f"{m['health']['warnings']} {m['health']['by_status'] or ''}"),
        ("crowd counts (mean)", f"{m['crowd']['messages']} ({m['crowd']['mean_count']})"),
        ("replay (first cloud -> last answer) / wall incl. start-up / bag duration (s)",
         f"{m['replay_s']} / {m['wall_s']} / {m.get('bag_duration_s', '?')}"),
        ("skipped", "; ".join([*m.get("bag_skipped", []), *m["skipped"]]) or "nothing"),
    ])
    def img(p: Path, alt: str) -> str:
        return f'<p><img alt="{alt}" src="{html.escape(Path(p).name)}" style="max-width:100%"></p>'

    body = [f"<h1>Replay evaluation: {html.escape(Path(m['bag']).name)}</h1>", summary,
            "<h2>Detection quality against the bag's ground truth</h2>", _ap_html(m)]
    if "reliability" in pictures:
        body.append(img(pictures["reliability"], "reliability"))
    body += ["<h2>Latency over DDS</h2>", img(pictures["latency"], "latency"),
             "<h2>Timelines</h2>", img(pictures["timelines"], "timelines"), "<h2>XAI snapshots</h2>",
             img(xai, "xai") if xai else "<p>no attention images recorded</p>",
             "<h2>All metrics</h2>", f"<pre>{html.escape(json.dumps(m, indent=2))}</pre>"]
    style = ("<style>body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}"
             "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}</style>")
    (out / "index.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>replay "
                                    f"{html.escape(Path(m['bag']).name)}</title>{style}</head><body>"
                                    f"{''.join(body)}</body></html>\n")
    return m
