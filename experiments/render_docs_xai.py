"""Render the README's example XAI pictures (docs/xai/*.png) with the shipped model.

    python experiments/render_docs_xai.py [--model models/fusion_default] [--out docs/xai]

Real KITTI frame 000006 (with its camera, and LiDAR-only) and sim:test frame 0, drawn by the one renderer the
node and the reports use (:mod:`perception.trust.explain`).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from PIL import Image

from perception.detector.api import FusionDetector
from perception.detector.checkpoint import CONFIG_FILE
from perception.detector.config import DetectorConfig
from perception.eval.evaluate import open_source
from perception.trust.explain import render_bev, render_image

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "fusion_default"))
    p.add_argument("--out", type=Path, default=REPO / "docs" / "xai")
    p.add_argument("--kitti", default=str(REPO.parent / "shared" / "data" / "kitti_labelled"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    det = FusionDetector.load(args.model, backend="torch")
    cfg = DetectorConfig.from_yaml(Path(args.model) / CONFIG_FILE)  # the data sources' config; weights loaded once
    kitti = next(f for f in open_source(args.kitti, cfg, None)[0] if f.frame_id.endswith("000006"))
    sim = next(iter(open_source("sim:test", cfg, 1)[0]))
    lidar_only = dataclasses.replace(kitti, image=None)
    for name, frame, views in (("kitti_000006", kitti, ("image", "bev")), ("sim_test_0000", sim, ("image", "bev")),
                               ("kitti_000006_lidar_only", lidar_only, ("image",))):
        result = det(frame)
        for view in views:
            pic = render_image(frame, result) if view == "image" else render_bev(frame, result)
            path = args.out / (f"{name}.png" if name.endswith("lidar_only") else f"{name}_{view}.png")
            Image.fromarray(pic).save(path)
            print(f"{path}: {len(result.detections)} detections")


if __name__ == "__main__":
    main()
