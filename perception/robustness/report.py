"""HTML report of a suite run: RA, D-ECE and flag-share plots, a table, and pictures of every corruption."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from perception.frame import Frame, box_corners  # noqa: E402
from perception.robustness.corruptions import NotApplicable, corrupt, get_corruption  # noqa: E402
from perception.trust.explain import BOX_EDGES  # noqa: E402

SEV_COLORS = ("#9ecae1", "#4292c6", "#08519c")


def _cells(doc: dict, key: str) -> tuple[list[str], np.ndarray]:
    names = list(doc["corruptions"])
    vals = np.full((len(names), 3), np.nan)
    for i, n in enumerate(names):
        for s in range(3):
            v = doc["corruptions"][n].get(str(s + 1), {}).get(key)
            if v is not None:
                vals[i, s] = v
    return names, vals


def plot_metric(doc: dict, key: str, path: Path, ylabel: str, ref: float | None = None,
                ref_label: str = "", targets: Sequence[tuple[float, str]] = ()) -> Path:
    """Grouped bars: one group per corruption, one bar per severity."""
    names, vals = _cells(doc, key)
    fig, ax = plt.subplots(figsize=(12, 4.2))
    x = np.arange(len(names))
    for s in range(3):
        ax.bar(x + (s - 1) * 0.27, np.nan_to_num(vals[:, s]), 0.27, color=SEV_COLORS[s], label=f"severity {s + 1}")
    if ref is not None:
        ax.axhline(ref, color="k", ls="--", lw=1, label=ref_label)
    for value, label in targets:
        ax.axhline(value, color="tab:red", ls=":", lw=1, label=label)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_dece_fix(doc: dict, path: Path) -> Path:
    """D-ECE per corruption and severity with the clean calibration (bars) and the flagged-input one (dots)."""
    names, before = _cells(doc, "dece")
    _, after = _cells(doc, "dece_fixed")
    fig, ax = plt.subplots(figsize=(12, 4.2))
    x = np.arange(len(names))
    for s in range(3):
        ax.bar(x + (s - 1) * 0.27, np.nan_to_num(before[:, s]), 0.27, color=SEV_COLORS[s],
               label=f"severity {s + 1}, clean calibration")
        ax.plot(x + (s - 1) * 0.27, after[:, s], "o", color="tab:orange", ms=4,
                label="flagged-input calibration" if s == 0 else None)
    for value, label in ((0.05, "target sev. 1"), (0.10, "target sev. 3")):
        ax.axhline(value, color="tab:red", ls=":", lw=1, label=label)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("D-ECE")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _bev(ax, frame: Frame) -> None:
    p = frame.points
    m = (p[:, 0] > 0) & (p[:, 0] < 60) & (np.abs(p[:, 1]) < 30)
    ax.scatter(-p[m, 1], p[m, 0], s=0.05, c=p[m, 3], cmap="viridis", vmin=0, vmax=0.6)
    for b in frame.boxes:
        c = box_corners(b.as_array()[None])[0][[0, 1, 2, 3, 0]]
        ax.plot(-c[:, 1], c[:, 0], "-", color="tab:red", lw=0.8)
    ax.set_xlim(-30, 30)
    ax.set_ylim(0, 60)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_corruption(frame: Frame, history: Sequence[Frame], name: str, path: Path, seed: int = 0) -> Path:
    """One corruption on one frame: BEV (top) and camera (bottom), clean and severities 1-3; the camera panel
    shows the labels projected with the rig the detector is given (a misaligned rig draws them off)."""
    c = get_corruption(name)
    fig, axes = plt.subplots(2, 4, figsize=(16, 5.6), gridspec_kw={"height_ratios": [1.5, 1]})
    for col in range(4):
        title = "clean"
        f = frame
        if col:
            try:
                f = corrupt(frame, name, col, seed, history)
                title = f"severity {col}: {c.levels[col - 1]}"
            except NotApplicable as exc:
                axes[0, col].text(0.5, 0.5, f"not applicable:\n{exc}", ha="center", va="center", wrap=True,
                                  fontsize=7, transform=axes[0, col].transAxes)
                axes[0, col].axis("off")
                axes[1, col].axis("off")
                continue
        _bev(axes[0, col], f)
        axes[0, col].set_title(f"{title} ({len(f.points)} pts)", fontsize=9)
        ax = axes[1, col]
        if f.image is None:
            ax.text(0.5, 0.5, "no camera image", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.imshow(f.image)
            if f.rig is not None:
                for b in f.boxes:
                    uv, depth, _ = f.rig.project(box_corners(b.as_array()[None])[0])
                    if (depth > 0.5).all():
                        for i, j in BOX_EDGES:
                            ax.plot(uv[[i, j], 0], uv[[i, j], 1], "-", color="tab:red", lw=0.6)
            ax.set_xlim(0, f.image.shape[1])
            ax.set_ylim(f.image.shape[0], 0)
        ax.axis("off")
    fig.suptitle(f"{name} ({c.unit}) on {frame.frame_id}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def format_table(doc: dict) -> str:
    """Text table: per corruption and severity RA / D-ECE / flagged."""
    clean = doc["clean"]
    ap = clean.get("ap3d", {})
    lines = [f"mRA {doc['mRA']}   clean: 3D AP " + " ".join(f"{k} {v}" for k, v in ap.items())
             + f"  D-ECE {clean.get('dece')} (flagged-input cal. {clean.get('dece_fixed', 'n/a')})"
             + f"  1σ cov {clean.get('coverage_1sigma')}  flagged {clean.get('flagged')}",
             f"{'corruption':22s} " + "  ".join(f"sev{s}: RA   D-ECE (fix)     flag" for s in (1, 2, 3))]
    for name, cells in doc["corruptions"].items():
        row = []
        for s in ("1", "2", "3"):
            c = cells.get(s)
            if not c or not c.get("frames"):
                row.append(f"{'n/a':>31s}")
                continue
            row.append(f"{_f(c.get('ra')):>6s} {_f(c.get('dece')):>6s} ({_f(c.get('dece_fixed'))}) "
                       f"{_f(c.get('flagged'), 2):>5s}")
        lines.append(f"{name:22s} " + "  ".join(row) + f"   mean RA {_f(cells.get('mean_ra'))}")
    return "\n".join(lines)


def _f(v: object, nd: int = 3) -> str:
    return "n/a" if v is None else f"{float(v):.{nd}f}"  # type: ignore[arg-type]


def write_report(report_dir: Path, doc: dict, picture: tuple[Frame, Sequence[Frame]] | None,
                 corruptions: Sequence[str], seed: int = 0) -> Path:
    """Plots, corruption pictures and ``index.html`` in ``report_dir``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    plots = [plot_metric(doc, "ra", report_dir / "ra.png", "RA (AP corrupted / clean)", ref=doc.get("mRA"),
                         ref_label="mRA", targets=[(0.9, "target mRA")]).name,
             plot_dece_fix(doc, report_dir / "dece.png").name,
             plot_metric(doc, "flagged", report_dir / "flagged.png", "share of frames flagged (health or OOD)",
                         ref=doc["clean"].get("flagged"), ref_label="clean frames",
                         targets=[(0.9, "target sev. 3")]).name,
             plot_metric(doc, "coverage_1sigma", report_dir / "coverage.png", "1σ coverage",
                         ref=0.6827, ref_label="nominal 68.3 %").name]
    pictures = []
    if picture is not None:
        frame, history = picture
        for name in corruptions:
            pictures.append(plot_corruption(frame, history, name, report_dir / f"corruption_{name}.png", seed).name)
    body = [f"<h1>Robustness: {html.escape(str(doc.get('model')))} on {html.escape(str(doc.get('data')))}</h1>",
            f"<p>{doc['frames']} frames, mRA <b>{doc['mRA']}</b>. {html.escape(doc['ra_definition'])}.</p>",
            f"<pre>{html.escape(format_table(doc))}</pre>"]
    body += [f'<p><img src="{html.escape(p)}" style="max-width:100%"></p>' for p in plots]
    body.append("<h2>The corruptions</h2>")
    body += [f'<p><img src="{html.escape(p)}" style="max-width:100%"></p>' for p in pictures]
    body.append(f"<h2>Metrics</h2><pre>{html.escape(json.dumps(doc, indent=1))}</pre>")
    path = report_dir / "index.html"
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>robustness</title></head><body>"
                    + "".join(body) + "</body></html>\n")
    return path
