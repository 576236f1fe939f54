"""Crowd samples (image + head points): loading, the fixed by-scene split and augmented training batches."""

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

_VIEW = re.compile(r"^(?P<scene>.+)_(?P<view>\d+)$")


@dataclass
class CrowdSample:
    """One photo resized so that its longer side is at most ``max_side``; points scaled alike."""

    name: str
    image: np.ndarray  # (H, W, 3) float32 RGB in [0, 1]; uint8 for simulated training scenes (4x less memory)
    points: np.ndarray  # (N, 2) float64 x, y in resized pixels
    count: int  # annotated heads (the count in the JSON)
    scale: float  # resized / original

    @property
    def scene(self) -> str:
        """Scene id shared by all views of one place."""
        return scene_of(self.name)

    @property
    def source(self) -> str:
        """Data source: ``cityuhk`` for ``scene_*`` views, else the name prefix (``handclick``)."""
        return source_of(self.name)


def scene_of(name: str) -> str:
    """``scene_005_2`` -> ``scene_005``; a name without a view suffix (``handclick_03``) is its own scene."""
    m = _VIEW.match(name)
    if name.startswith("scene_") and m:
        return m.group("scene")
    return name


def source_of(name: str) -> str:
    """``cityuhk`` for ``scene_*`` images, ``handclick`` for hand-clicked photos, else ``other``."""
    if name.startswith("scene_"):
        return "cityuhk"
    if name.startswith("handclick"):
        return "handclick"
    return "other"


def list_names(root: str | Path) -> list[str]:
    """Stems of every ``points/*.json`` under ``root`` that has a matching image."""
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "points").is_dir():
        raise DataError("expected images/ and points/ folders", str(root))
    return sorted(p.stem for p in (root / "points").glob("*.json"))


def load_sample(root: str | Path, name: str, max_side: int) -> CrowdSample:
    """Read ``images/<name>.*`` and ``points/<name>.json``; malformed files raise DataError naming them."""
    root = Path(root)
    jpath = root / "points" / f"{name}.json"
    try:
        doc = json.loads(jpath.read_text())
        pts = np.asarray(doc.get("points", []), dtype=np.float64).reshape(-1, 2)
        count = int(doc.get("count", len(pts)))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"unreadable point file: {exc}", str(jpath)) from exc
    if count != len(pts):
        log.warning("%s: count %d != %d points; using the points", jpath, count, len(pts))
        count = len(pts)
    image_name = doc.get("image") or f"{name}.jpg"
    ipath = root / "images" / image_name
    if not ipath.is_file():
        matches = sorted((root / "images").glob(f"{name}.*"))
        if not matches:
            raise DataError("image not found", str(ipath))
        ipath = matches[0]
    try:
        with Image.open(ipath) as im:
            rgb = im.convert("RGB")
            w, h = rgb.size
            scale = min(1.0, max_side / max(w, h))
            if scale < 1.0:
                rgb = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
            arr = np.asarray(rgb, dtype=np.float32) / 255.0
    except OSError as exc:
        raise DataError(f"unreadable image: {exc}", str(ipath)) from exc
    return CrowdSample(name=name, image=arr, points=pts * scale, count=count, scale=scale)


def split_names(names: list[str], cfg: CrowdDataConfig) -> dict[str, list[str]]:
    """Fixed by-scene split: every view of a scene in ``test_scenes`` / ``val_scenes`` goes there, the rest
    trains."""
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    test, val = set(cfg.test_scenes), set(cfg.val_scenes)
    for name in names:
        scene = scene_of(name)
        out["test" if scene in test else "val" if scene in val else "train"].append(name)
    return out


def load_split(cfg: CrowdDataConfig, max_side: int, root: str | Path | None = None) -> dict[str, list[CrowdSample]]:
    """Load every sample of ``root`` (default ``cfg.root``) grouped by split."""
    root = Path(root or cfg.root)
    names = split_names(list_names(root), cfg)
    return {k: [load_sample(root, n, max_side) for n in v] for k, v in names.items()}


def target_density(sample: CrowdSample, cfg: CrowdDataConfig) -> np.ndarray:
    """Full-resolution geometry-adaptive density map of a sample."""
    h, w = sample.image.shape[:2]
    sig = adaptive_sigmas(sample.points, cfg.knn, cfg.sigma_beta, cfg.sigma_min, cfg.sigma_max, cfg.sigma_single)
    return render_density(sample.points, sig, h, w)


class Augmenter:
    """Random copy-paste of people (:func:`paste_people`, on request), scale, crop, horizontal flip and colour
    jitter -> (image crop, stride-8 density target)."""

    def __init__(self, data_cfg: CrowdDataConfig, crop: int, scale_min: float, scale_max: float, jitter: float,
                 stride: int = 8, paste_max: int = 0) -> None:
        self.cfg = data_cfg
        self.paste_max = paste_max
        self.crop = crop
        self.scale_range = (scale_min, scale_max)
        self.jitter = jitter
        self.stride = stride

    def __call__(self, sample: CrowdSample, rng: np.random.Generator,
                 paste: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """One augmented (3, crop, crop) image and its (crop/8, crop/8) density target; with ``paste`` (and
        ``paste_max`` > 0), 0 to ``paste_max`` patches of people are pasted into the frame first."""
        if paste and self.paste_max > 0:
            sample = pasted(sample, rng, self.paste_max)
        s = rng.uniform(*self.scale_range)
        h0, w0 = sample.image.shape[:2]
        h, w = max(self.crop, round(h0 * s)), max(self.crop, round(w0 * s))
        sx, sy = w / w0, h / h0
        src = sample.image if sample.image.dtype == np.uint8 else (sample.image * 255).astype(np.uint8)
        im = Image.fromarray(src).resize((w, h), Image.BILINEAR)
        img = np.asarray(im, dtype=np.float32) / 255.0
        pts = sample.points * np.array([sx, sy])
        y0 = int(rng.integers(0, h - self.crop + 1))
        x0 = int(rng.integers(0, w - self.crop + 1))
        img = img[y0:y0 + self.crop, x0:x0 + self.crop]
        c = self.cfg
        sig = adaptive_sigmas(pts, c.knn, c.sigma_beta, c.sigma_min, c.sigma_max, c.sigma_single) * np.sqrt(sx * sy)
        pts = pts - np.array([x0, y0])
        dens = render_density(pts, sig, self.crop, self.crop)
        if rng.random() < 0.5:
            img, dens = img[:, ::-1], dens[:, ::-1]
        img = colour_jitter(img, self.jitter, rng)
        return np.ascontiguousarray(img.transpose(2, 0, 1)), sum_pool(np.ascontiguousarray(dens), self.stride)


def colour_jitter(img: np.ndarray, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation factors in [1 - jitter, 1 + jitter]; result clipped to [0, 1]."""
    j = jitter
    if j > 0:
        img = img * rng.uniform(1 - j, 1 + j)  # brightness
        mean = img.mean()
        img = (img - mean) * rng.uniform(1 - j, 1 + j) + mean  # contrast
        grey = img.mean(axis=2, keepdims=True)
        img = (img - grey) * rng.uniform(1 - j, 1 + j) + grey  # saturation
    return np.clip(img, 0.0, 1.0)


class WholeFrameAugmenter:
    """Whole frames as inference sees them (the size cut down to a multiple of the stride), optionally zoomed in by
    a random factor in [1, ``zoom_max``] and cropped back to the frame size at a random place (never padded), with
    horizontal flips and colour jitter -> (image, stride-8 density target). Optional copy-paste of people
    (:func:`paste_people`) comes first."""

    def __init__(self, data_cfg: CrowdDataConfig, zoom_max: float, jitter: float, stride: int = 8,
                 paste_max: int = 0) -> None:
        self.cfg = data_cfg
        self.zoom_max = zoom_max
        self.paste_max = paste_max
        self.jitter = jitter
        self.stride = stride

    def __call__(self, sample: CrowdSample, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One augmented (3, H, W) frame and its (H/8, W/8) density target (H, W: the frame cut to multiples of 8);
        with ``paste_max`` > 0, 0 to ``paste_max`` patches of people are pasted into the frame first."""
        if self.paste_max > 0:
            sample = pasted(sample, rng, self.paste_max)
        h0, w0 = sample.image.shape[:2]
        fh, fw = h0 - h0 % self.stride, w0 - w0 % self.stride
        if fh < self.stride or fw < self.stride:
            raise DataError(f"image {w0}x{h0} is smaller than the stride {self.stride}", sample.name)
        s = rng.uniform(1.0, self.zoom_max) if self.zoom_max > 1.0 else 1.0
        h, w = max(fh, round(h0 * s)), max(fw, round(w0 * s))
        if (h, w) == (h0, w0):  # the frame itself, as inference sees it
            img = sample.image.astype(np.float32) / (255.0 if sample.image.dtype == np.uint8 else 1.0)
        else:
            src = sample.image if sample.image.dtype == np.uint8 else (sample.image * 255).round().astype(np.uint8)
            img = np.asarray(Image.fromarray(src).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
        sx, sy = w / w0, h / h0
        pts = sample.points * np.array([sx, sy])
        y0 = int(rng.integers(0, h - fh + 1))
        x0 = int(rng.integers(0, w - fw + 1))
        img = img[y0:y0 + fh, x0:x0 + fw]
        c = self.cfg
        sig = adaptive_sigmas(pts, c.knn, c.sigma_beta, c.sigma_min, c.sigma_max, c.sigma_single) * np.sqrt(sx * sy)
        dens = render_density(pts - np.array([x0, y0]), sig, fh, fw)
        if rng.random() < 0.5:
            img, dens = img[:, ::-1], dens[:, ::-1]
        img = colour_jitter(img, self.jitter, rng)
        return np.ascontiguousarray(img.transpose(2, 0, 1)), sum_pool(np.ascontiguousarray(dens), self.stride)


def paste_people(image: np.ndarray, points: np.ndarray, rng: np.random.Generator, patches: int,
                 size: tuple[int, int] = (16, 64)) -> tuple[np.ndarray, np.ndarray]:
    """Copy-paste augmentation that keeps the head count exact and the perspective plausible: ``patches`` times,
    a rectangle around a random annotated head (a random width in ``size``, 1.5-2.5x as tall, the head in its top
    third) is copied, mirrored half the time, to another place on the **same rows** of the frame (where people
    have the same apparent size), the emptiest of 8 random candidate places. The heads inside the copied
    rectangle move with it; heads the pasted rectangle covers are removed. Returns a new (image, points); the
    inputs are left untouched. No heads: no change."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if patches <= 0 or len(points) == 0:
        return image, points
    img = image.copy()
    pts = points.copy()
    h, w = img.shape[:2]
    for _ in range(patches):
        if len(pts) == 0:
            break
        hx, hy = pts[int(rng.integers(0, len(pts)))]
        pw = int(min(rng.integers(size[0], size[1] + 1), w // 2))
        ph = int(min(round(pw * rng.uniform(1.5, 2.5)), h))
        x0 = int(np.clip(round(hx - pw / 2), 0, w - pw))
        y0 = int(np.clip(round(hy - ph * rng.uniform(0.1, 0.33)), 0, h - ph))
        free = [x for x in range(0, w - pw + 1) if abs(x - x0) >= pw]  # a place that does not overlap the source
        if not free:
            continue
        cand = [free[int(i)] for i in rng.integers(0, len(free), size=8)]
        nx = min(cand, key=lambda x: int(np.sum((pts[:, 0] >= x) & (pts[:, 0] < x + pw)
                                                   & (pts[:, 1] >= y0) & (pts[:, 1] < y0 + ph))))
        patch = img[y0:y0 + ph, x0:x0 + pw].copy()
        inside = (pts[:, 0] >= x0) & (pts[:, 0] < x0 + pw) & (pts[:, 1] >= y0) & (pts[:, 1] < y0 + ph)
        moved = pts[inside] - np.array([x0, 0.0])
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
            moved[:, 0] = pw - moved[:, 0]
            moved[:, 0] = np.minimum(moved[:, 0], np.nextafter(pw, 0))
        covered = (pts[:, 0] >= nx) & (pts[:, 0] < nx + pw) & (pts[:, 1] >= y0) & (pts[:, 1] < y0 + ph)
        img[y0:y0 + ph, nx:nx + pw] = patch
        pts = np.concatenate([pts[~covered], moved + np.array([nx, 0.0])])
    return img, pts


def pasted(sample: CrowdSample, rng: np.random.Generator, paste_max: int) -> CrowdSample:
    """``sample`` with 0 to ``paste_max`` (uniform) patches of people pasted by :func:`paste_people`."""
    img, pts = paste_people(sample.image, sample.points, rng, int(rng.integers(0, paste_max + 1)))
    return replace(sample, image=img, points=pts, count=len(pts))
