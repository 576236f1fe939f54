"""Pictures and a small HTML report of an evaluation: BEV + camera views with boxes, reliability."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from perception.eval.calibration_metrics import reliability_table  # noqa: E402
from perception.frame import Box3D, Detection, Frame, box_corners  # noqa: E402
from perception.trust.explain import BOX_EDGES, CLASS_COLORS  # noqa: E402


def _color(label: str) -> tuple[float, float, float]:
    c = CLASS_COLORS.get(label, (200, 200, 200))
    return (c[0] / 255, c[1] / 255, c[2] / 255)


def plot_frame(frame: Frame, detections: list[Detection], path: str | Path, title: str = "",
               min_probability: float = 0.3, x_range: tuple[float, float] = (0.0, 70.0)) -> Path:
    """Two panels: BEV (points, labelled boxes in green, predictions by class with probability) and the
    camera image with the same boxes projected. Returns the PNG path."""
    dets = [d for d in detections if d.probability >= min_probability]
    fig = plt.figure(figsize=(14, 9))
    ax_bev = fig.add_subplot(1, 2, 1) if frame.image is None else fig.add_axes((0.03, 0.05, 0.4, 0.88))
    pts = frame.points
    front = (pts[:, 0] > x_range[0]) & (pts[:, 0] < x_range[1]) & (np.abs(pts[:, 1]) < 40)
    ax_bev.scatter(-pts[front, 1], pts[front, 0], s=0.2, c=pts[front, 2], cmap="viridis", vmin=-2.5, vmax=1.0)

    def bev_box(box: Box3D, color, style: str) -> None:
        c = box_corners(box.as_array()[None])[0][[0, 1, 2, 3, 0]]
        ax_bev.plot(-c[:, 1], c[:, 0], style, color=color, lw=1.2)

    for b in frame.boxes:
        bev_box(b, (0.1, 0.8, 0.1), "--")
    for d in dets:
        bev_box(d.box, _color(d.label), "-")
        ax_bev.text(-d.box.center[1], d.box.center[0] + 1.5, f"{d.probability:.2f}", fontsize=6,
                    color=_color(d.label), ha="center")
    ax_bev.set_xlim(-40, 40)
    ax_bev.set_ylim(*x_range)
    ax_bev.set_aspect("equal")
    ax_bev.set_xlabel("-y (m, left is left)")
    ax_bev.set_ylabel("x (m, forward)")
    ax_bev.set_title("BEV: labels dashed green, predictions solid (calibrated p)")
    if frame.image is not None and frame.rig is not None:
        ax_img = fig.add_axes((0.46, 0.3, 0.53, 0.4))
        ax_img.imshow(frame.image)
        for boxes, style in ((frame.boxes, "--"), ([d.box for d in dets], "-")):
            for b in boxes:
                uv, depth, _ = frame.rig.project(box_corners(b.as_array()[None])[0])
                if (depth <= 0.5).any():
                    continue
                color = (0.1, 0.8, 0.1) if style == "--" else _color(b.label)
                for i, j in BOX_EDGES:
                    ax_img.plot(uv[[i, j], 0], uv[[i, j], 1], style, color=color, lw=0.8)
        ax_img.set_xlim(0, frame.image.shape[1])
        ax_img.set_ylim(frame.image.shape[0], 0)
        ax_img.axis("off")
        ax_img.set_title("camera: labels dashed green, predictions solid")
    fig.suptitle(title or frame.frame_id)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_reliability(raw: np.ndarray, calibrated: np.ndarray, correct: np.ndarray, path: str | Path) -> Path:
    """Reliability diagram before and after calibration."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    for conf, name in ((raw, "raw score"), (calibrated, "calibrated")):
        rows = [r for r in reliability_table(conf, correct) if r["count"] > 0]
        ax.plot([r["conf"] for r in rows], [r["acc"] for r in rows], "o-", label=name)
    ax.set_xlabel("confidence")
    ax.set_ylabel("precision (share correct)")
    ax.legend()
    ax.set_title("detection reliability")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell(v: object) -> str:
    return "n/a" if v is None else f"{v:.2f}" if isinstance(v, float) else html.escape(str(v))


def ap_html_table(metrics: dict) -> str:
    """The AP figures of an evaluation as an HTML table: per class, 3D and BEV AP (devkit and exact R40),
    the counted objects and 3D AP by range; empty when ``metrics`` has no AP."""
    if "ap3d" not in metrics or "ap3d_r40" not in metrics:
        return ""
    ranges = list(metrics.get("ap3d_by_range", {}))
    head = ["class", "objects", "3D AP devkit", "3D AP R40", "BEV AP devkit", "BEV AP R40"]
    head += [f"3D AP {r} (devkit / R40, objects)" for r in ranges]
    rows = []
    for c in metrics["ap3d"]:
        cells = [c, metrics.get("num_gt", {}).get(c), metrics["ap3d"][c], metrics["ap3d_r40"][c],
                 metrics["apbev"][c], metrics["apbev_r40"][c]]
        row = [_cell(v) for v in cells]
        for r in ranges:
            b = metrics["ap3d_by_range"][r][c]
            row.append(f"{_cell(b['ap'])} / {_cell(b['ap_r40'])} ({b['num_gt']})")
        rows.append("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>")
    return ("<table border='1' cellpadding='4' style='border-collapse:collapse'><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
            + f"<p>{html.escape(str(metrics.get('ap_convention', '')))}</p>")


def write_html(report_dir: str | Path, metrics: dict, images: list[str], title: str = "Evaluation") -> Path:
    """A single-page HTML report: the AP table, the metrics as JSON and the pictures."""
    report_dir = Path(report_dir)
    body = [f"<h1>{html.escape(title)}</h1>", "<h2>Metrics</h2>", ap_html_table(metrics),
            f"<pre>{html.escape(json.dumps(metrics, indent=2))}</pre>", "<h2>Pictures</h2>"]
    body += [f'<p><img src="{html.escape(name)}" style="max-width:100%"></p>' for name in images]
    path = report_dir / "index.html"
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>"
                    f"{html.escape(title)}</title></head><body>{''.join(body)}</body></html>\n")
    return path
