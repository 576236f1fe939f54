"""Explanations people can read: per-detection attention heat over the camera image and over the BEV point
cloud, with boxes, labels (class, calibrated p, σ, modality share) and a colour bar. The one renderer of
the ROS topics ``/perception/xai/{image,bev}`` and of the reports. numpy + PIL; never raises on bad
input (no camera, no detections, no attention): the picture says so instead.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from perception.detector.result import DetectionResult
from perception.frame import Detection, Frame, box_corners

#: RGB colour per class for drawing.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "Car": (0, 200, 255), "Pedestrian": (255, 80, 80), "Cyclist": (255, 200, 0),
}
_DEFAULT_COLOR = (200, 200, 200)
#: Box edges as pairs of corner indices (bottom face, top face, pillars).
BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))
#: BEV range drawn (the detector's point range, x forward / y left, metres) and pixels per BEV cell.
POINT_RANGE = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)
BEV_SHAPE = (124, 108)
BEV_SCALE = 4
#: Each detection's heat is divided by this percentile of its own attention (then clipped), so a
#: detection that spreads its attention thin is as visible as one that focuses it.
HEAT_PERCENTILE = 99.0
#: Heat below this (after scaling) is not drawn.
HEAT_FLOOR = 0.4
HEAT_ALPHA = 0.65


@lru_cache(maxsize=1)
def _lut() -> np.ndarray:
    # inferno without its near-black bottom and near-white top: visible on dark and on bright pixels
    return (colormaps["inferno"](np.linspace(0.25, 0.92, 256))[:, :3] * 255).astype(np.uint8)


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"  # has σ and ≥
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default()


def draw_line(image: np.ndarray, p0: np.ndarray, p1: np.ndarray, color: tuple[int, int, int]) -> None:
    """Draw a 2-px line in place (points clipped to the image)."""
    h, w = image.shape[:2]
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]), 1)) + 1
    if n > 4 * (h + w):
        return
    t = np.linspace(0.0, 1.0, n)
    u = np.round(p0[0] + (p1[0] - p0[0]) * t).astype(int)
    v = np.round(p0[1] + (p1[1] - p0[1]) * t).astype(int)
    for du in (0, 1):
        ok = (u + du >= 0) & (u + du < w) & (v >= 0) & (v < h)
        image[v[ok], u[ok] + du] = color


def shown_detections(result: DetectionResult, min_probability: float, top_n: int) -> list[Detection]:
    """The detections drawn: probability ≥ ``min_probability``, the ``top_n`` most probable."""
    dets = sorted((d for d in result.detections if d.probability >= min_probability), key=lambda d: -d.probability)
    return dets[:top_n]


def camera_share(det: Detection, camera_used: bool = True) -> float:
    """Share of the detection's attention on the camera; 0 when the network ran LiDAR-only."""
    if not camera_used:
        return 0.0
    share = det.modality_share.get("camera")
    return 0.0 if share is None or not math.isfinite(share) else float(share)


def label_text(det: Detection, camera_used: bool = True) -> str:
    """``Car p0.87 σ0.21m L92/C8``: class, calibrated probability, centre σ (x-y, metres), modality share."""
    cov = np.asarray(det.covariance, dtype=np.float64)
    sigma = math.sqrt(max(0.0, float(cov[0, 0] + cov[1, 1]))) if cov.shape == (7, 7) else float("nan")
    cam = camera_share(det, camera_used)
    return f"{det.label} p{det.probability:.2f} σ{sigma:.2f}m L{100 * (1 - cam):.0f}/C{100 * cam:.0f}"


def _scaled(values: np.ndarray) -> np.ndarray:
    """Heat in [0, 1]: divided by its HEAT_PERCENTILE-th percentile of the positive values; zeros stay zero."""
    v = np.asarray(values, dtype=np.float32)
    pos = v[v > 0]
    if pos.size == 0:
        return np.zeros_like(v)
    top = float(np.percentile(pos, HEAT_PERCENTILE))
    return np.clip(v / top, 0.0, 1.0) if top > 0 else np.zeros_like(v)


def _blend(base: Image.Image, heat: np.ndarray) -> Image.Image:
    """Blend a low-resolution heat map (0..1) into an RGB picture, upsampled bilinearly to its size, through
    the colour map; below HEAT_FLOOR untouched. All in PIL (C), and only over the heat's bounding box."""
    heat = np.clip(heat, 0.0, 1.0)
    rows, cols = np.nonzero(heat >= HEAT_FLOOR / 2)
    if len(rows) == 0:
        return base
    hi, wi = heat.shape
    r0, r1 = max(0, rows.min() - 1), min(hi, rows.max() + 2)
    c0, c1 = max(0, cols.min() - 1), min(wi, cols.max() + 2)
    sx, sy = base.size[0] / wi, base.size[1] / hi
    box = (round(c0 * sx), round(r0 * sy), round(c1 * sx), round(r1 * sy))
    size = (box[2] - box[0], box[3] - box[1])
    q = Image.fromarray((heat * 255).astype(np.uint8)).resize(
        size, Image.BILINEAR, box=(box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy))
    r, g, b = _channel_tables()
    colours = Image.merge("RGB", [q.point(r), q.point(g), q.point(b)])
    base.paste(Image.composite(colours, base.crop(box), q.point(_alpha_table())), box[:2])
    return base


@lru_cache(maxsize=1)
def _channel_tables() -> tuple[list[int], list[int], list[int]]:
    lut = _lut()
    return lut[:, 0].tolist(), lut[:, 1].tolist(), lut[:, 2].tolist()


@lru_cache(maxsize=1)
def _alpha_table() -> list[int]:
    """Opacity (0..255) per heat level: none below HEAT_FLOOR, then rising to HEAT_ALPHA."""
    v = np.arange(256) / 255.0
    return [int(x) for x in np.where(v >= HEAT_FLOOR, 255 * HEAT_ALPHA * (0.3 + 0.7 * v), 0)]


CAPTION = "attention (per detection)"


@lru_cache(maxsize=4)
def _colour_bar_overlay(height: int) -> tuple[Image.Image, int]:
    """RGBA picture of the colour bar with 'high' / 'low' and the caption (rendered once per picture height),
    and its width; pasted at the top right."""
    bar_h, bar_w = max(20, min(150, height - 60)), 12
    f = _font(11)
    width = int(f.getlength(CAPTION)) + 12
    over = Image.new("RGBA", (width, bar_h + 44), (0, 0, 0, 0))
    draw = ImageDraw.Draw(over)
    x0, y0 = width - bar_w - 8, 24
    col = _lut()[np.linspace(255, 0, bar_h).astype(int)]
    over.paste(Image.fromarray(np.ascontiguousarray(np.repeat(col[:, None], bar_w, axis=1))), (x0, y0))
    draw.rectangle([x0, y0, x0 + bar_w, y0 + bar_h], outline=(255, 255, 255, 255))
    draw.text((x0 - 4, y0 - 2), "high", fill=(255, 255, 255, 255), font=f, anchor="rt")
    draw.text((x0 - 4, y0 + bar_h), "low", fill=(255, 255, 255, 255), font=f, anchor="rb")
    draw.text((x0 + bar_w, y0 + bar_h + 4), CAPTION, fill=(255, 255, 255, 255), font=f, anchor="ra")
    return over, width


def _colour_bar(pil: Image.Image) -> None:
    """The colour bar at the right edge, 'high' at the top, with its caption."""
    over, width = _colour_bar_overlay(pil.size[1])
    pil.paste(over, (pil.size[0] - width, 0), over)


@lru_cache(maxsize=2)
def _bev_decor(size: tuple[int, int], ego: tuple[float, float], px: float) -> Image.Image:
    """RGBA range rings (20, 40, 60 m) with their labels and the ego marker, rendered once."""
    over = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(over)
    for dist in (20, 40, 60):
        rad = dist / px
        draw.arc([ego[0] - rad, ego[1] - rad, ego[0] + rad, ego[1] + rad], 180, 360, fill=(70, 70, 90, 255))
        draw.text((ego[0] + 3, ego[1] - rad + 2), f"{dist} m", fill=(110, 110, 140, 255), font=_font(10))
    draw.polygon([(ego[0], ego[1] - 10), (ego[0] - 6, ego[1]), (ego[0] + 6, ego[1])], fill=(255, 255, 255, 255))
    return over


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, color: tuple[int, int, int],
           size: tuple[int, int], placed: list[tuple[float, float, float, float]] | None = None) -> None:
    """Text on a dark box, kept inside the picture; moved up past the boxes in ``placed`` (then added there)."""
    f = _font(12)
    l, t, r, b = draw.textbbox((0, 0), text, font=f)
    w, h = r - l + 6, b - t + 4
    x = min(max(0.0, xy[0]), size[0] - w)
    y = min(max(0.0, xy[1] - h), size[1] - h)
    for _ in range(4):
        if placed is None or not any(x < px1 and px0 < x + w and y < py1 and py0 < y + h
                                     for px0, py0, px1, py1 in placed):
            break
        y = max(0.0, y - h - 1)
    if placed is not None:
        placed.append((x, y, x + w, y + h))
    draw.rectangle([x, y, x + w, y + h], fill=(0, 0, 0))
    draw.text((x + 3, y + 2 - t), text, fill=color, font=f)


def _status(draw: ImageDraw.ImageDraw, lines: list[str]) -> None:
    f = _font(13)
    y = 4
    for line in lines:
        l, t, r, b = draw.textbbox((0, 0), line, font=f)
        draw.rectangle([4, y, 10 + r - l, y + b - t + 4], fill=(0, 0, 0))
        draw.text((7, y + 2 - t), line, fill=(255, 255, 255), font=f)
        y += b - t + 6


def _status_lines(result: DetectionResult, shown: list[Detection], min_probability: float) -> list[str]:
    n = sum(d.probability >= min_probability for d in result.detections)
    lines = [f"no detections (p ≥ {min_probability:.2f})" if n == 0 else
             f"{n} detection{'s' if n != 1 else ''} p ≥ {min_probability:.2f}"
             + (f", heat of the top {len(shown)}" if n > len(shown) else "")]
    if not result.camera_used:
        lines.append("LiDAR-only (camera " + ("missing" if "camera_missing" in result.degraded else "unusable")
                     + "): 100 % LiDAR")
    elif shown and not any("image" in d.attention for d in shown):
        lines.append("no attention available")
    return lines


def image_heat(det: Detection, feature_shape: tuple[int, int]) -> np.ndarray | None:
    """(h, w) image attention of one detection (fusion layer, mean over heads), None when absent."""
    att = det.attention.get("image")
    if att is None:
        return None
    a = np.asarray(att, dtype=np.float32)
    a = a.mean(axis=0) if a.ndim == 2 else a
    if a.size != feature_shape[0] * feature_shape[1]:
        return None
    return a.reshape(feature_shape)


def bev_heat(det: Detection, bev_shape: tuple[int, int] = BEV_SHAPE) -> np.ndarray | None:
    """(Hb, Wb) BEV attention of one detection, decoder layers summed, heads averaged; None when absent."""
    att, idx = det.attention.get("bev"), det.attention.get("bev_index")
    if att is None or idx is None:
        return None
    a = np.asarray(att, dtype=np.float32)  # (L, heads, K)
    cells = np.zeros(bev_shape[0] * bev_shape[1], np.float32)
    np.add.at(cells, np.asarray(idx).reshape(-1), a.mean(axis=1).reshape(-1))
    return cells.reshape(bev_shape)


def render_image(frame: Frame, result: DetectionResult, min_probability: float = 0.3, top_n: int = 5,
                 feature_shape: tuple[int, int] = (12, 40)) -> np.ndarray:
    """The camera image with each shown detection's own attention heat, its projected box and label.

    Without a camera image: a dark canvas of the rig's size saying LiDAR-only, boxes still projected.
    """
    rig = frame.rig
    if frame.image is not None:
        base = np.asarray(frame.image, dtype=np.uint8)
    else:
        h, w = (rig.height, rig.width) if rig is not None else (375, 1242)
        base = np.full((h, w, 3), 24, np.uint8)
    h, w = base.shape[:2]
    shown = shown_detections(result, min_probability, top_n)
    heat = None
    if frame.image is not None and result.camera_used:
        for det in shown:
            a = image_heat(det, feature_shape)
            if a is not None:
                s = _scaled(a)
                heat = s if heat is None else np.maximum(heat, s)
    pil = Image.fromarray(base)
    if heat is not None and heat.max() > 0:
        pil = _blend(pil, heat)
    draw = ImageDraw.Draw(pil)
    placed: list[tuple[float, float, float, float]] = []
    if rig is not None:
        for det in reversed(shown):  # most probable drawn last (on top)
            corners = box_corners(det.box.as_array()[None])[0]
            uv, depth, _ = rig.project(corners)
            if (depth <= 0.5).any() or not np.isfinite(uv).all():
                continue
            if uv[:, 0].max() < 0 or uv[:, 0].min() >= w or uv[:, 1].max() < 0 or uv[:, 1].min() >= h:
                continue
            color = CLASS_COLORS.get(det.label, _DEFAULT_COLOR)
            for i, j in BOX_EDGES:
                draw.line([tuple(uv[i]), tuple(uv[j])], fill=color, width=2)
            _label(draw, (float(uv[:, 0].min()), float(uv[:, 1].min())), label_text(det, result.camera_used),
                   color, (w, h), placed)
    lines = _status_lines(result, shown, min_probability)
    if frame.image is None:
        lines.append("no camera image")
    _status(draw, lines)
    _colour_bar(pil)
    return np.asarray(pil)


@lru_cache(maxsize=1)
def _grey_table() -> np.ndarray:
    """Point count per pixel → grey: background 14, then 40 + 70 log(1 + n), at most 230."""
    n = np.arange(256, dtype=np.float64)
    return np.where(n > 0, np.clip(40 + 70 * np.log1p(n), 0, 230), 14).astype(np.uint8)


def _bev_points(points: np.ndarray, size: tuple[int, int], r: tuple[float, ...], px: float) -> Image.Image:
    """Grey log-density picture of the point cloud on the BEV canvas (forward up, left to the left)."""
    hh, ww = size
    counts = np.zeros(hh * ww, np.int64)
    if len(points):
        p = np.asarray(points, dtype=np.float32)
        ok = (p[:, 2] > r[2]) & (p[:, 2] < r[5])
        row = ((r[3] - p[ok, 0]) * (1.0 / px)).astype(np.int32)
        col = ((r[4] - p[ok, 1]) * (1.0 / px)).astype(np.int32)
        inside = (row >= 0) & (row < hh) & (col >= 0) & (col < ww)
        counts = np.bincount(row[inside] * ww + col[inside], minlength=hh * ww)
    grey = _grey_table()[np.minimum(counts, 255)].reshape(hh, ww)
    return Image.fromarray(grey).convert("RGB")


def render_bev(frame: Frame | None, result: DetectionResult, min_probability: float = 0.3, top_n: int = 5,
               point_range: tuple[float, ...] = POINT_RANGE, bev_shape: tuple[int, int] = BEV_SHAPE,
               scale: int = BEV_SCALE) -> np.ndarray:
    """Bird's-eye view (forward up, left to the left): the point cloud in grey, each shown detection's own
    BEV attention heat, footprints with labels, range rings, a colour bar."""
    hb, wb = bev_shape
    r = point_range
    cell = (r[3] - r[0]) / wb
    px = cell / scale
    size = (wb * scale, hb * scale)  # rows along x (forward), columns along y
    points = frame.points if frame is not None else np.zeros((0, 4), np.float32)
    base = _bev_points(points, size, r, px)
    shown = shown_detections(result, min_probability, top_n)
    heat = None
    for det in shown:
        a = bev_heat(det, bev_shape)
        if a is not None:
            s = _scaled(a)
            heat = s if heat is None else np.maximum(heat, s)
    if heat is not None and heat.max() > 0:
        # grid (iy, ix) = (+y, +x) → canvas (row = -x, col = -y)
        base = _blend(base, np.ascontiguousarray(heat[::-1, ::-1].T))
    pil = base
    draw = ImageDraw.Draw(pil)

    def to_px(xy: np.ndarray) -> list[tuple[float, float]]:
        return [((r[4] - y) / px, (r[3] - x) / px) for x, y in xy]

    decor = _bev_decor(pil.size, ((r[4] - 0.0) / px, (r[3] - 0.0) / px), px)
    pil.paste(decor, (0, 0), decor)
    placed: list[tuple[float, float, float, float]] = []
    for det in reversed(shown):
        c = to_px(box_corners(det.box.as_array()[None])[0][:4, :2])
        color = CLASS_COLORS.get(det.label, _DEFAULT_COLOR)
        draw.polygon(c, outline=color, width=2)
        _label(draw, (min(p[0] for p in c), min(p[1] for p in c)), label_text(det, result.camera_used), color,
               pil.size, placed)
    lines = _status_lines(result, shown, min_probability)
    if frame is None or len(points) == 0:
        lines.append("no LiDAR points")
    _status(draw, lines)
    _colour_bar(pil)
    return np.asarray(pil)
