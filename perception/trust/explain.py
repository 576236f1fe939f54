"""Explanations people can look at: attention heatmaps over the camera image and the BEV grid,
with the detections drawn on top. Pure numpy (+ matplotlib colormaps); used by the ROS node
(``/perception/xai/*``) and by the reports."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image

from perception.detector.result import DetectionResult
from perception.frame import Frame, box_corners

#: RGB colour per class for drawing.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "Car": (0, 200, 255), "Pedestrian": (255, 80, 80), "Cyclist": (255, 200, 0),
}
_DEFAULT_COLOR = (200, 200, 200)
#: Box edges as pairs of corner indices (bottom face, top face, pillars).
BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def _heat_rgb(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.float64)
    v = v / v.max() if v.max() > 0 else v
    return (colormaps["inferno"](v)[..., :3] * 255).astype(np.uint8), v


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


def render_image_attention(frame: Frame, result: DetectionResult, alpha: float = 0.55) -> np.ndarray:
    """The camera image with the detections' image attention blended in and their boxes projected.

    Without a camera image a dark canvas of the rig's size is used (so RViz keeps showing boxes).
    """
    rig = frame.rig
    if frame.image is not None:
        base = frame.image.copy()
    elif rig is not None:
        base = np.zeros((rig.height, rig.width, 3), np.uint8)
    else:
        return np.zeros((1, 1, 3), np.uint8)
    h, w = base.shape[:2]
    out = base
    if result.image_attention is not None and result.image_attention.max() > 0:
        heat, v = _heat_rgb(result.image_attention)
        heat = np.asarray(Image.fromarray(heat).resize((w, h), Image.BILINEAR))
        weight = np.asarray(Image.fromarray((v * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR))
        a = (alpha * weight / 255.0)[..., None]
        out = (base * (1 - a) + heat * a).astype(np.uint8)
    if rig is not None:
        for det in result.detections:
            corners = box_corners(det.box.as_array()[None])[0]
            uv, depth, _ = rig.project(corners)
            if (depth <= 0.5).any():
                continue
            color = CLASS_COLORS.get(det.label, _DEFAULT_COLOR)
            for i, j in BOX_EDGES:
                draw_line(out, uv[i], uv[j], color)
    return out


def render_bev_attention(result: DetectionResult, point_range: tuple[float, ...] | list[float] = (
        0.0, -39.68, -3.0, 69.12, 39.68, 1.0), scale: int = 4) -> np.ndarray:
    """The BEV attention map (forward up, left to the left) with detection footprints drawn on it."""
    att = result.bev_attention
    if att is None:
        att = np.zeros((124, 108))
    heat, _ = _heat_rgb(att)
    # grid rows are +y (left) and columns +x (forward): rotate so forward points up and left is left.
    img = np.ascontiguousarray(np.rot90(heat, k=1).repeat(scale, 0).repeat(scale, 1))
    hb, wb = att.shape
    r = point_range
    cell = (r[3] - r[0]) / wb

    def to_px(xy: np.ndarray) -> np.ndarray:
        col = (xy[:, 1] - r[1]) / cell  # along y
        row = (xy[:, 0] - r[0]) / cell  # along x
        return np.stack([(hb - col) * scale, (wb - row) * scale], axis=1)

    for det in result.detections:
        c = to_px(box_corners(det.box.as_array()[None])[0][:4, :2])
        color = CLASS_COLORS.get(det.label, _DEFAULT_COLOR)
        for i in range(4):
            draw_line(img, c[i], c[(i + 1) % 4], color)
    return img
