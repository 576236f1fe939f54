"""Evaluate a crowd model on a folder of images/ + points/: MAE, RMSE, per-source metrics, interval coverage."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from perception.crowd.checkpoint import load_crowd_model
from perception.crowd.data import CrowdSample, list_names, load_sample, split_names
from perception.crowd.interval import CountInterval
from perception.crowd.model import CrowdNet
from perception.crowd.predict import count_image
from perception.errors import DataError

log = logging.getLogger(__name__)


def _metrics(errors: list[float]) -> dict[str, float]:
    e = np.asarray(errors, dtype=np.float64)
    return {"mae": float(np.abs(e).mean()), "rmse": float(np.sqrt((e ** 2).mean())), "n": int(e.size)}


def is_training_source(data_dir: str | Path, train_root: str | Path, model_dir: str | Path) -> bool:
    """True when ``data_dir`` is the folder the model was trained on (relative roots are tried from the
    working directory and from the repository that holds the model directory)."""
    target = Path(data_dir).resolve()
    root = Path(train_root)
    candidates = [root] if root.is_absolute() else [root, Path(model_dir).resolve().parents[1] / root]
    return any(c.resolve() == target for c in candidates)


def evaluate_samples(net: CrowdNet, interval: CountInterval, samples: list[CrowdSample]) -> dict:
    """Count every sample; returns ``mae``, ``rmse``, ``coverage``, ``per_source`` and per-image rows."""
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
        per_source[src] = {**_metrics([r["error"] for r in sel]),
                           "coverage": sum(r["inside"] for r in sel) / len(sel)}
    return {"mae": overall["mae"], "rmse": overall["rmse"], "n": overall["n"],
            "coverage": sum(r["inside"] for r in rows) / len(rows), "interval_level": interval.level,
            "per_source": per_source, "images": rows}


def evaluate_dir(model_dir: str | Path, data_dir: str | Path, split: str | None = None) -> tuple[dict, list]:
    """Evaluate ``model_dir`` on ``data_dir``. When ``data_dir`` is the training source only the held-out
    ``test`` split is used (or ``split`` when given). Returns (report, samples)."""
    net, cfg, interval = load_crowd_model(model_dir)
    names = list_names(data_dir)
    chosen = split
    if chosen is None and is_training_source(data_dir, cfg.data.root, model_dir):
        chosen = "test"
    if chosen is not None:
        names = split_names(names, cfg.data)[chosen]
    samples = [load_sample(data_dir, n, cfg.model.max_side) for n in names]
    report = evaluate_samples(net, interval, samples)
    report["split"] = chosen or "all"
    report["model"] = str(model_dir)
    report["data"] = str(data_dir)
    report["attention"] = cfg.model.attention
    return report, samples


def save_overlays(net: CrowdNet, interval: CountInterval, samples: list[CrowdSample], path: str | Path,
                  max_images: int = 12) -> Path:
    """PNG grid: each image with its density map overlaid, predicted count (interval) and true count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = samples[:max_images]
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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
