"""Evaluate a crowd model per dataset: MAE, RMSE, interval coverage, a constant-median baseline; scatter plot,
density overlays and an HTML report."""

from __future__ import annotations

import html
import logging
from pathlib import Path

import numpy as np

from perception.crowd.checkpoint import load_crowd_model
from perception.crowd.config import CrowdConfig
from perception.crowd.data import CrowdSample, list_names, load_sample, split_names
from perception.crowd.interval import CountInterval
from perception.crowd.model import CrowdNet
from perception.crowd.predict import count_image
from perception.errors import DataError

log = logging.getLogger(__name__)


def _metrics(errors: list[float]) -> dict[str, float]:
    e = np.asarray(errors, dtype=np.float64)
    return {"mae": float(np.abs(e).mean()), "rmse": float(np.sqrt((e ** 2).mean())), "n": int(e.size)}


def evaluate_samples(net: CrowdNet, interval: CountInterval, samples: list[CrowdSample]) -> dict:
    """Count every sample; returns ``mae``, ``rmse``, ``coverage``, ``per_source`` (with the MAE / RMSE of
    answering the images' own median count) and per-image rows."""
    if not samples:
        raise DataError("no images to evaluate")
    rows = []
    for s in samples:
        r = count_image(net, s.image, interval)
        rows.append({"image": s.name, "source": s.source, "gt": s.count, "pred": round(r.count, 3),
                     "low": round(r.low, 3), "high": round(r.high, 3), "error": round(r.count - s.count, 3),
                     "inside": bool(r.low <= s.count <= r.high)})
    overall = _metrics([r["error"] for r in rows])
    per_source = {}
    for src in sorted({r["source"] for r in rows}):
        sel = [r for r in rows if r["source"] == src]
        gts = np.array([r["gt"] for r in sel], dtype=np.float64)
        median = float(np.median(gts))
        per_source[src] = {**_metrics([r["error"] for r in sel]),
                           "coverage": sum(r["inside"] for r in sel) / len(sel),
                           "mean_gt": float(gts.mean()),
                           "mean_interval_width": float(np.mean([r["high"] - r["low"] for r in sel])),
                           "baseline_median": median,
                           "baseline_median_mae": float(np.abs(gts - median).mean()),
                           "baseline_median_rmse": float(np.sqrt(((gts - median) ** 2).mean()))}
    return {"mae": overall["mae"], "rmse": overall["rmse"], "n": overall["n"],
            "coverage": sum(r["inside"] for r in rows) / len(rows), "interval_level": interval.level,
            "interval_power": interval.power, "per_source": per_source, "images": rows}


def _resolve(folder: str, model_dir: Path) -> Path:
    """A dataset folder of the config: as given when it exists, else relative to the repository of the model."""
    p = Path(folder)
    if p.is_absolute() or p.is_dir():
        return p
    return model_dir.resolve().parents[1] / p


def select_samples(cfg: CrowdConfig, model_dir: str | Path, data_dir: str | Path | None = None,
                   split: str | None = None) -> tuple[list[CrowdSample], str]:
    """Images to evaluate and the split name. Without ``data_dir``: the ``split`` (default ``val``) of every
    training dataset. With ``data_dir``: every image of it -- unless it is a training dataset, then only its
    ``split`` (default ``val``: training images are never reported as held out)."""
    model_dir = Path(model_dir)
    roots = {ds: _resolve(f, model_dir) for ds, f in cfg.data.datasets.items()}
    if data_dir is not None:
        target = Path(data_dir).resolve()
        match = [ds for ds, r in roots.items() if r.resolve() == target]
        if not match:
            names = list_names(data_dir)
            return [load_sample(data_dir, n, cfg.model.max_side) for n in names], "all"
        roots = {match[0]: roots[match[0]]}
    chosen = split or "val"
    out = []
    for ds, root in roots.items():
        names = split_names(list_names(root), cfg.data.val_patterns.get(ds, []))[chosen]
        out += [load_sample(root, n, cfg.model.max_side, ds) for n in names]
    return out, chosen


def evaluate_model(model_dir: str | Path, data_dir: str | Path | None = None,
                   split: str | None = None) -> tuple[dict, list[CrowdSample]]:
    """Evaluate ``model_dir`` on :func:`select_samples`; returns (report, samples)."""
    net, cfg, interval = load_crowd_model(model_dir)
    samples, chosen = select_samples(cfg, model_dir, data_dir, split)
    report = evaluate_samples(net, interval, samples)
    report.update(split=chosen, model=str(model_dir), data=str(data_dir) if data_dir else "config datasets",
                  attention=cfg.model.attention)
    return report, samples


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_scatter(report: dict, path: str | Path) -> Path:
    """PNG: predicted vs true count per image, one colour and panel per dataset, with the interval as error bars."""
    plt = _plt()
    sources = list(report["per_source"])
    fig, axes = plt.subplots(1, len(sources), figsize=(4.2 * len(sources), 4.0), squeeze=False)
    for ax, src in zip(axes[0], sources):
        rows = [r for r in report["images"] if r["source"] == src]
        gt = np.array([r["gt"] for r in rows])
        pred = np.array([r["pred"] for r in rows])
        err = np.array([[r["pred"] - r["low"] for r in rows], [r["high"] - r["pred"] for r in rows]])
        ax.errorbar(gt, pred, yerr=err, fmt="o", ms=3, alpha=0.6, elinewidth=0.6)
        top = float(max(gt.max(), pred.max())) * 1.05 + 1
        ax.plot([0, top], [0, top], "k--", lw=1)
        m = report["per_source"][src]
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="true count", ylabel="predicted count",
               title=f"{src} (n={m['n']}): MAE {m['mae']:.2f}, cov {m['coverage']:.0%}")
    return _save(plt, fig, path)


def save_overlays(net: CrowdNet, interval: CountInterval, samples: list[CrowdSample], path: str | Path,
                  max_images: int = 8) -> Path:
    """PNG grid: images spread over the count range, each with its density map overlaid, predicted count
    (interval) and true count."""
    plt = _plt()
    order = sorted(samples, key=lambda s: s.count)
    idx = np.unique(np.linspace(0, len(order) - 1, min(max_images, len(order))).round().astype(int))
    shown = [order[i] for i in idx]
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, s in zip(axes.ravel(), shown):
        r = count_image(net, s.image, interval)
        h, w = s.image.shape[:2]
        ax.imshow(s.image)
        ax.imshow(r.density, cmap="jet", alpha=0.45, extent=(0, r.density.shape[1] * 8, r.density.shape[0] * 8, 0))
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(f"{s.name}\npred {r.count:.1f} [{r.low:.0f}, {r.high:.0f}]  gt {s.count}", fontsize=9)
    return _save(plt, fig, path)


def _save(plt, fig, path: str | Path) -> Path:
    """Write a figure as a PNG (parent folders made) and close it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def metrics_markdown(report: dict) -> str:
    """Per-dataset table: images, MAE, RMSE, coverage, mean interval width, constant-median baseline."""
    lines = [f"| dataset | images | MAE | RMSE | {report['interval_level']:.0%} interval coverage | mean width | "
             "constant median: MAE | RMSE |", "|---|---|---|---|---|---|---|---|"]
    for src, m in report["per_source"].items():
        lines.append(f"| {src} | {m['n']} | {m['mae']:.2f} | {m['rmse']:.2f} | {m['coverage']:.0%} | "
                     f"{m['mean_interval_width']:.1f} | {m['baseline_median_mae']:.2f} | "
                     f"{m['baseline_median_rmse']:.2f} |")
    lines.append(f"| **all** | {report['n']} | {report['mae']:.2f} | {report['rmse']:.2f} | "
                 f"{report['coverage']:.0%} | | | |")
    return "\n".join(lines)


def write_report(net: CrowdNet, interval: CountInterval, report: dict, samples: list[CrowdSample],
                 out_dir: str | Path) -> Path:
    """``out_dir/report.html`` with the per-dataset table, the scatter plot and density overlays per dataset
    (PNGs next to it); returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_scatter(report, out_dir / "scatter.png")
    parts = [f"<h1>Crowd counter evaluation</h1><p>model {html.escape(report['model'])}, data "
             f"{html.escape(report['data'])}, split <b>{html.escape(report['split'])}</b>, attention "
             f"{html.escape(report['attention'])}</p>", "<table border=1 cellpadding=4><tr><th>dataset</th>"
             "<th>images</th><th>MAE</th><th>RMSE</th><th>coverage</th><th>mean width</th>"
             "<th>constant-median MAE</th><th>RMSE</th></tr>"]
    for src, m in report["per_source"].items():
        parts.append(f"<tr><td>{html.escape(src)}</td><td>{m['n']}</td><td>{m['mae']:.2f}</td><td>{m['rmse']:.2f}"
                     f"</td><td>{m['coverage']:.0%}</td><td>{m['mean_interval_width']:.1f}</td>"
                     f"<td>{m['baseline_median_mae']:.2f}</td><td>{m['baseline_median_rmse']:.2f}</td></tr>")
    parts.append(f"</table><p>nominal interval level {report['interval_level']:.0%}; constant median = answering "
                 "the evaluated images' own median count</p><h2>Predicted vs true</h2><img src='scatter.png'>")
    for src in report["per_source"]:
        name = f"overlays_{src}.png"
        save_overlays(net, interval, [s for s in samples if s.source == src], out_dir / name)
        parts.append(f"<h2>{html.escape(src)}: density overlays</h2><img src='{name}'>")
    path = out_dir / "report.html"
    path.write_text("<html><body>" + "\n".join(parts) + "</body></html>\n")
    return path
