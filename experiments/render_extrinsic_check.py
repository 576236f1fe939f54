"""Pictures of the extrinsic consistency check for the README: the LiDAR depth-edge points the check uses, projected
with the calibrated extrinsic and with the rotation that fits best, over the image's vertical-edge map.

    python experiments/render_extrinsic_check.py --data ../shared/data/kitti_raw_0926_traffic --frame 000028 \\
        --out docs/extrinsics/kitti_raw_0926_000028.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from perception.io import open_frames  # noqa: E402
from perception.rig import rpy_to_matrix  # noqa: E402
from perception.trust.extrinsics import depth_edge_points, edge_proximity, extrinsic_consistency  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--frame", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    frame = next(f for f in open_frames(args.data) if f.frame_id == args.frame)
    check = extrinsic_consistency(frame.points, frame.image, frame.rig)
    xyz, _ = depth_edge_points(frame.points, frame.rig.lidar_model)
    xyz = xyz[np.linalg.norm(xyz, axis=1) <= 40.0]
    prox = edge_proximity(frame.image)
    cam = xyz @ frame.rig.lidar_to_camera[:3, :3].T + frame.rig.lidar_to_camera[:3, 3]
    k = frame.rig.K
    fig, axes = plt.subplots(2, 1, figsize=(14, 9))
    for ax, (title, offset) in zip(axes, [("calibrated extrinsic", (0.0, 0.0, 0.0)),
                                          ("best rotation tried", check.best_offset_deg)]):
        c = cam @ rpy_to_matrix(*np.deg2rad(offset)).T
        ok = c[:, 2] > 0.5
        u = k[0, 0] * c[ok, 0] / c[ok, 2] + k[0, 1] * c[ok, 1] / c[ok, 2] + k[0, 2]
        v = k[1, 1] * c[ok, 1] / c[ok, 2] + k[1, 2]
        ax.imshow(frame.image)
        ax.imshow(prox, cmap="magma", alpha=0.45)
        ax.scatter(u, v, s=4, c="cyan", linewidths=0)
        score = check.scores[tuple(float(o) for o in offset)]
        ax.set_title(f"{title} {tuple(offset)}°: alignment {score:.3f}", fontsize=10)
        ax.set_xlim(0, frame.image.shape[1])
        ax.set_ylim(frame.image.shape[0], 0)
        ax.axis("off")
    fig.suptitle(f"{args.data.name} {args.frame}: extrinsic_gain {check.gain:.3f} ({check.edge_points} LiDAR edge "
                 "points; cyan = LiDAR silhouette points, magenta = vertical image edges)", fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}: gain {check.gain:.3f}, best offset {check.best_offset_deg}")


if __name__ == "__main__":
    main()
