"""PNG preview of one Frame: the camera image with projected boxes above a bird's-eye view with the boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception.frame import Frame, box_corners, boxes_to_array

_COLORS = {"Car": "tab:blue", "Van": "tab:cyan", "Truck": "navy", "Pedestrian": "tab:red",
           "Person_sitting": "tab:orange", "Cyclist": "gold", "Tram": "tab:purple", "Misc": "tab:gray"}
#: The 12 edges of a box as corner index pairs (bottom face 0-3, top face 4-7).
BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def render_frame_png(frame: Frame, path: str | Path, title: str = "", bev_range: tuple[float, float, float, float]
                     = (-10.0, 70.0, -25.0, 25.0), max_points: int = 60_000) -> Path:
    """Write a PNG of ``frame``: image with projected GT boxes (top), BEV scatter with GT boxes (bottom).

    ``bev_range`` is (x_min, x_max, y_min, y_max) in metres in the LiDAR frame. Returns the path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    corners = box_corners(boxes_to_array(frame.boxes))
    fig, (ax_img, ax_bev) = plt.subplots(2, 1, figsize=(12, 9), gridspec_kw={"height_ratios": [1, 1.9]})

    if frame.image is not None and frame.rig is not None:
        ax_img.imshow(frame.image)
        for box, c in zip(frame.boxes, corners):
            uv, depth, _ = frame.rig.project(c)
            if (depth <= 0.1).any():
                continue
            for a, b in BOX_EDGES:
                ax_img.plot(uv[[a, b], 0], uv[[a, b], 1], color=_COLORS.get(box.label, "white"), lw=1.2)
        ax_img.set_xlim(0, frame.rig.width)
        ax_img.set_ylim(frame.rig.height, 0)
    else:
        ax_img.text(0.5, 0.5, "no camera image", ha="center", va="center", transform=ax_img.transAxes)
    ax_img.set_axis_off()
    ax_img.set_title(title or f"frame {frame.frame_id}: {len(frame.boxes)} objects, {len(frame.points)} points")

    x0, x1, y0, y1 = bev_range
    pts = frame.points
    keep = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
    pts = pts[keep]
    if len(pts) > max_points:
        pts = pts[np.random.default_rng(0).choice(len(pts), max_points, replace=False)]
    # BEV drawn with x (forward) to the right and y (left) up, so it lines up under the wide image.
    ax_bev.scatter(pts[:, 0], pts[:, 1], s=0.6, c=pts[:, 2], cmap="viridis", vmin=-2.5, vmax=1.0, linewidths=0)
    for box, c in zip(frame.boxes, corners):
        if not (x0 <= box.center[0] <= x1 and y0 <= box.center[1] <= y1):
            continue
        ring = c[[0, 1, 2, 3, 0], :2]
        color = _COLORS.get(box.label, "black")
        ax_bev.plot(ring[:, 0], ring[:, 1], color=color, lw=1.2)
        front = c[[0, 3], :2].mean(0)  # heading tick: centre → front face
        ax_bev.plot([box.center[0], front[0]], [box.center[1], front[1]], color=color, lw=1.2)
        ax_bev.text(box.center[0], ring[:, 1].max() + 0.6, box.label, fontsize=7, color=color,
                    ha="center", clip_on=True)
    ax_bev.set_xlim(x0, x1)
    ax_bev.set_ylim(y0, y1)
    ax_bev.set_aspect("equal")
    ax_bev.set_xlabel("x (m, forward)")
    ax_bev.set_ylabel("y (m, left)")
    ax_bev.set_title("bird's-eye view (LiDAR frame), colour = height")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
