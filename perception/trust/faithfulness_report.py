"""HTML report of the faithfulness test: mean deletion / insertion curves per modality, the aggregation
comparison, modality shares, and per-detection XAI pictures from the one renderer."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from perception.frame import Frame  # noqa: E402
from perception.trust.faithfulness import (  # noqa: E402
    AGGREGATIONS,
    MODALITIES,
    DetectionCurves,
)

_STYLE = {"attention": ("C3", "-"), "random": ("0.5", "--"), "gradient": ("C0", "-.")}


def plot_curves(curves: list[DetectionCurves], steps: list[float], aggregation: str, path: Path) -> Path:
    """2 × 2 panel: deletion / insertion × LiDAR / camera, mean normalised score per method."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    x = [0.0] + list(steps)
    for r, kind in enumerate(("deletion", "insertion")):
        for c, m in enumerate(MODALITIES):
            ax = axes[r, c]
            have = [d for d in curves if m in d.curves.get(kind, {})]
            methods = {"attention": f"attention_{aggregation}" if m == "lidar" else "attention",
                       "random": "random", "gradient": "gradient"}
            for name, key in methods.items():
                if not have:
                    continue
                y = np.mean([d.curves[kind][m][key] for d in have], axis=0)
                color, ls = _STYLE[name]
                ax.plot(x, y, ls, color=color, marker="o", label=f"{name} (AUC {np.mean(y[1:]):.2f})")
            ax.set_title(f"{kind} — {m} ({len(have)} detections)")
            ax.set_ylim(-0.05, 1.25)
            ax.grid(alpha=0.3)
            if have:
                ax.legend(fontsize=8)
            if r == 1:
                ax.set_xlabel("fraction of the candidate evidence removed" if kind == "deletion"
                              else "fraction of the candidate evidence kept")
            if c == 0:
                ax.set_ylabel("score / unperturbed score")
    fig.suptitle("Faithfulness: the detection's score as its most relevant evidence is removed / inserted")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_aggregations(summary: dict, path: Path) -> Path:
    """Bar chart: LiDAR deletion drop and insertion gain per attention aggregation, random and gradient beside."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    agg = summary["aggregations"]
    labels, drops, gains = [], [], []
    for a in AGGREGATIONS:
        labels.append(f"attention\n{a}")
        drops.append(agg["deletion"]["lidar"][a]["attention_drop"] or 0.0)
        gains.append(agg["insertion"]["lidar"][a]["attention_gain"] or 0.0)
    for name in ("random", "gradient"):
        labels.append(name)
        drops.append(summary["deletion"]["lidar"][f"{name}_drop"] or 0.0)
        gains.append(summary["insertion"]["lidar"][f"{name}_gain"] or 0.0)
    xs = np.arange(len(labels))
    ax.bar(xs - 0.2, drops, 0.4, label="deletion drop", color="C3")
    ax.bar(xs + 0.2, gains, 0.4, label="insertion gain", color="C2")
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("mean normalised score change")
    ax.set_title("LiDAR: which relevance finds the evidence the detector uses")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(report_dir: Path, summary: dict, curves: list[DetectionCurves], frames: list[Frame],
                 model_dir: str) -> Path:
    """Write ``index.html`` with the plots, the detections table, the XAI pictures and the JSON."""
    from perception.detector.api import FusionDetector
    from perception.trust.explain import render_bev, render_image

    report_dir.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, summary["steps"], summary["aggregation"], report_dir / "curves.png")
    plot_aggregations(summary, report_dir / "aggregations.png")
    pictures = []
    if frames:
        detector = FusionDetector.load(model_dir, backend="torch", num_threads=1)
        for i, frame in enumerate(frames):
            result = detector(frame)
            for kind, img in (("image", render_image(frame, result)), ("bev", render_bev(frame, result))):
                name = f"xai_{i:02d}_{kind}.png"
                Image.fromarray(img).save(report_dir / name)
                pictures.append((frame.frame_id, name))
    rows = "".join(
        f"<tr><td>{html.escape(c.frame_id)}</td><td>{html.escape(c.label)}</td><td>{c.probability:.2f}</td>"
        f"<td>{100 * (1 - c.camera_share):.0f} % / {100 * c.camera_share:.0f} %</td>"
        + "".join(f"<td>{'' if c.drop(m, k) is None else f'{c.drop(m, k):.2f}'}</td>"
                  for m, k in (("lidar", f"attention_{summary['aggregation']}"), ("lidar", "random"),
                               ("camera", "attention"), ("camera", "random")))
        + "</tr>" for c in curves)
    d, ins = summary["deletion"], summary["insertion"]
    headline = "".join(
        f"<tr><td>{kind}</td><td>{m}</td><td>{b[m]['detections']}</td><td>{b[m]['attention_auc']}</td>"
        f"<td>{b[m]['random_auc']}</td><td>{b[m]['gradient_auc']}</td><td>{b[m]['ratio_to_random']}</td></tr>"
        for kind, b in (("deletion", d), ("insertion", ins)) for m in MODALITIES)
    body = [
        "<h1>Faithfulness of the attention explanations</h1>",
        f"<p>{html.escape(str(summary.get('model')))} on {html.escape(str(summary.get('data')))}: "
        f"{summary['frames']} frames, {summary['detections']} detections with p ≥ {summary.get('min_probability')}; "
        f"attention aggregation <b>{summary['aggregation']}</b>. Deletion AUC: lower is more faithful; insertion "
        "AUC: higher. Ratio to random: attention's mean deletion drop (insertion gain) over random's.</p>",
        "<table border=1 cellpadding=3><tr><th>test</th><th>modality</th><th>detections</th><th>attention AUC</th>"
        f"<th>random AUC</th><th>gradient×input AUC</th><th>ratio to random</th></tr>{headline}</table>",
        '<p><img src="curves.png" style="max-width:100%"></p>',
        '<p><img src="aggregations.png" style="max-width:100%"></p>',
        "<h2>Modality share: attention vs deletion</h2>",
        f"<pre>{html.escape(json.dumps(summary['modality_share']))}</pre>",
        "<h2>Per-detection XAI</h2>",
        *[f'<p>{html.escape(fid)}<br><img src="{n}" style="max-width:100%"></p>' for fid, n in pictures],
        "<h2>Detections</h2><table border=1 cellpadding=3><tr><th>frame</th><th>class</th><th>p</th>"
        "<th>LiDAR / camera share</th><th>LiDAR drop (attention)</th><th>LiDAR drop (random)</th>"
        f"<th>camera drop (attention)</th><th>camera drop (random)</th></tr>{rows}</table>",
        f"<h2>Metrics</h2><pre>{html.escape(json.dumps(summary, indent=2))}</pre>",
    ]
    path = report_dir / "index.html"
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>Faithfulness</title></head><body>"
                    + "".join(body) + "</body></html>\n")
    return path
