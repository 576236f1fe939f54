"""Crowd samples (image + head points): loading with input checks, the validation split carved by camera / scene /
time from the training datasets, and augmented training crops."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from perception.crowd.config import CrowdDataConfig
from perception.crowd.density import adaptive_sigmas, render_density, sum_pool
from perception.errors import DataError

log = logging.getLogger(__name__)

#: Images with a shorter side below this are rejected (too small to hold countable people).
MIN_SIDE = 64
#: Decoding refuses images with more pixels than this (a decompression bomb, not a camera frame).
MAX_PIXELS = 12000 * 12000


@dataclass
class CrowdSample:
    """One photo resized so that its longer side is at most ``max_side``; points scaled alike."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    points: np.ndarray  # (N, 2) float64 x, y in resized pixels
    count: int  # annotated heads
    scale: float  # resized / original
    dataset: str = ""

    @property
    def source(self) -> str:
        """Dataset name (``brt``, ``shb``, ...; from the file name when not given)."""
        return self.dataset or source_of(self.name)

    def float_image(self) -> np.ndarray:
        """(H, W, 3) float32 RGB in [0, 1]."""
        return self.image.astype(np.float32) / 255.0


def source_of(name: str) -> str:
    """Dataset of an image name: ``cityuhk`` for ``scene_*`` views, else the prefix before the first ``_``
    (``brt_1-2017...`` -> ``brt``, ``shb_train_IMG_1`` -> ``shb``, ``mall_0001`` -> ``mall``)."""
    if name.startswith("scene_"):
        return "cityuhk"
    return re.split(r"[_\-]", name, maxsplit=1)[0]


def list_names(root: str | Path) -> list[str]:
    """Stems of every ``points/*.json`` under ``root``."""
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "points").is_dir():
        raise DataError("expected images/ and points/ folders", str(root))
    return sorted(p.stem for p in (root / "points").glob("*.json"))


def read_points(path: str | Path) -> tuple[np.ndarray, int, str | None]:
    """(points (N, 2), count, image file name or None) of a point file; DataError naming it when malformed."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise ValueError("expected a JSON object")
        pts = np.asarray(doc.get("points", []), dtype=np.float64).reshape(-1, 2)
        count = int(doc.get("count", len(pts)))
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"unreadable point file: {exc}", str(path)) from exc
    if not np.isfinite(pts).all():
        raise DataError("point file holds non-finite coordinates", str(path))
    if count != len(pts):
        log.warning("%s: count %d != %d points; using the points", path, count, len(pts))
    image = doc.get("image")
    return pts, len(pts), image if isinstance(image, str) else None


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (grey / palette / RGBA converted); DataError naming the file when it is
    missing, truncated or unreadable, or smaller than :data:`MIN_SIDE` pixels."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise DataError(f"image {im.width}x{im.height} is too large", str(path))
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"unreadable image: {exc}", str(path)) from exc
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise DataError(f"image {rgb.shape[1]}x{rgb.shape[0]} is smaller than {MIN_SIDE} px", str(path))
    return rgb


def shrink(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """(image shrunk bilinearly so its longer side is at most ``max_side``, scale); never enlarged."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        rgb = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                     Image.BILINEAR))
    return rgb, scale


def load_sample(root: str | Path, name: str, max_side: int, dataset: str = "") -> CrowdSample:
    """Read ``images/<name>.*`` and ``points/<name>.json``; malformed files raise DataError naming them."""
    root = Path(root)
    pts, count, image_name = read_points(root / "points" / f"{name}.json")
    ipath = root / "images" / (image_name or f"{name}.jpg")
    if not ipath.is_file():
        matches = sorted((root / "images").glob(f"{name}.*"))
        if not matches:
            raise DataError("image not found", str(ipath))
        ipath = matches[0]
    rgb, scale = shrink(read_rgb(ipath), max_side)
    return CrowdSample(name=name, image=rgb, points=pts * scale, count=count, scale=scale, dataset=dataset)


def is_val(name: str, patterns: list[str]) -> bool:
    """True when ``name`` matches one of the validation ``patterns`` (regular expressions, searched)."""
    return any(re.search(p, name) for p in patterns)


def split_names(names: list[str], patterns: list[str], limit: int = 0) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}``: names matching ``patterns`` validate; ``limit`` > 0 keeps the first
    ``limit`` of each."""
    out = {"train": [n for n in names if not is_val(n, patterns)], "val": [n for n in names if is_val(n, patterns)]}
    return {k: v[:limit] if limit else v for k, v in out.items()}


def load_datasets(cfg: CrowdDataConfig, max_side: int,
                  root_dir: str | Path | None = None) -> dict[str, dict[str, list[CrowdSample]]]:
    """``{dataset: {"train": samples, "val": samples}}`` of every configured dataset (relative folders are taken
    from ``root_dir``, default the working directory)."""
    out = {}
    for ds, folder in cfg.datasets.items():
        root = Path(folder) if Path(folder).is_absolute() or root_dir is None else Path(root_dir) / folder
        names = split_names(list_names(root), cfg.val_patterns.get(ds, []), cfg.limit)
        out[ds] = {k: [load_sample(root, n, max_side, ds) for n in v] for k, v in names.items()}
        log.info("%s: %d train, %d val images from %s", ds, len(out[ds]["train"]), len(out[ds]["val"]), root)
    return out


def target_density(sample: CrowdSample, cfg: CrowdDataConfig) -> np.ndarray:
    """Full-resolution geometry-adaptive density map of a sample."""
    h, w = sample.image.shape[:2]
    sig = adaptive_sigmas(sample.points, cfg.knn, cfg.sigma_beta, cfg.sigma_min, cfg.sigma_max, cfg.sigma_single)
    return render_density(sample.points, sig, h, w)


class Augmenter:
    """Random scale, crop (grey padding where the scaled image is smaller), horizontal flip, colour jitter and
    occasional grey -> (image crop, stride-8 density target)."""

    def __init__(self, data_cfg: CrowdDataConfig, crop: int, scale_min: float, scale_max: float, jitter: float,
                 grey_prob: float = 0.0, stride: int = 8) -> None:
        self.cfg = data_cfg
        self.crop = crop
        self.scale_range = (scale_min, scale_max)
        self.jitter = jitter
        self.grey_prob = grey_prob
        self.stride = stride

    def __call__(self, sample: CrowdSample, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One augmented (3, crop, crop) float image and its (crop/8, crop/8) density target."""
        s = rng.uniform(*self.scale_range)
        h0, w0 = sample.image.shape[:2]
        h, w = max(1, round(h0 * s)), max(1, round(w0 * s))
        img = np.asarray(Image.fromarray(sample.image).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
        sx, sy = w / w0, h / h0
        pts = sample.points * np.array([sx, sy])
        c = self.cfg
        sig = adaptive_sigmas(pts, c.knn, c.sigma_beta, c.sigma_min, c.sigma_max, c.sigma_single) * np.sqrt(sx * sy)
        if h < self.crop or w < self.crop:  # pad with grey (the inference padding value) to the crop size
            ph, pw = max(0, self.crop - h), max(0, self.crop - w)
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), constant_values=0.45)
            h, w = img.shape[:2]
        y0 = int(rng.integers(0, h - self.crop + 1))
        x0 = int(rng.integers(0, w - self.crop + 1))
        img = img[y0:y0 + self.crop, x0:x0 + self.crop]
        dens = render_density(pts - np.array([x0, y0]), sig, self.crop, self.crop)
        if rng.random() < 0.5:
            img, dens = img[:, ::-1], dens[:, ::-1]
        img = colour_jitter(img, self.jitter, rng)
        if rng.random() < self.grey_prob:
            img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
        return np.ascontiguousarray(img.transpose(2, 0, 1)), sum_pool(np.ascontiguousarray(dens), self.stride)


def whole_frame(sample: CrowdSample, cfg: CrowdDataConfig, jitter: float, grey_prob: float,
                rng: np.random.Generator, scale_jitter: float = 0.0, multiple: int = 16,
                stride: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole frame as inference sees it (resized by a random factor in [1 - ``scale_jitter``,
    1 + ``scale_jitter``] when that is > 0, cut down to a multiple of ``multiple`` at a random offset), flipped
    half the time, colour-jittered, sometimes grey -> ((3, H, W) image, (H/8, W/8) density target, (N, 2) head
    points x, y of the returned image, those inside it)."""
    if scale_jitter > 0:
        s = float(rng.uniform(1.0 - scale_jitter, 1.0 + scale_jitter))
        h, w = sample.image.shape[:2]
        size = (max(multiple, round(w * s)), max(multiple, round(h * s)))
        image = np.asarray(Image.fromarray(sample.image).resize(size, Image.BILINEAR))
        sample = replace(sample, image=image, points=sample.points * np.array([size[0] / w, size[1] / h]))
    h0, w0 = sample.image.shape[:2]
    fh, fw = h0 - h0 % multiple, w0 - w0 % multiple
    if fh < multiple or fw < multiple:
        raise DataError(f"image {w0}x{h0} is smaller than {multiple} px", sample.name)
    y0, x0 = int(rng.integers(0, h0 - fh + 1)), int(rng.integers(0, w0 - fw + 1))
    img = sample.float_image()[y0:y0 + fh, x0:x0 + fw]
    sig = adaptive_sigmas(sample.points, cfg.knn, cfg.sigma_beta, cfg.sigma_min, cfg.sigma_max, cfg.sigma_single)
    pts = sample.points - np.array([x0, y0])
    dens = render_density(pts, sig, fh, fw)
    if rng.random() < 0.5:
        img, dens, pts = img[:, ::-1], dens[:, ::-1], np.column_stack([fw - pts[:, 0], pts[:, 1]])
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < fw) & (pts[:, 1] >= 0) & (pts[:, 1] < fh)]
    img = colour_jitter(img, jitter, rng)
    if rng.random() < grey_prob:
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    return np.ascontiguousarray(img.transpose(2, 0, 1)), sum_pool(np.ascontiguousarray(dens), stride), pts


def colour_jitter(img: np.ndarray, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation factors in [1 - jitter, 1 + jitter]; result clipped to [0, 1]."""
    j = jitter
    if j > 0:
        img = img * rng.uniform(1 - j, 1 + j)  # brightness
        mean = img.mean()
        img = (img - mean) * rng.uniform(1 - j, 1 + j) + mean  # contrast
        grey = img.mean(axis=2, keepdims=True)
        img = (img - grey) * rng.uniform(1 - j, 1 + j) + grey  # saturation
    return np.clip(img, 0.0, 1.0).astype(np.float32)
