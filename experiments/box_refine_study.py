"""Does geometric box refinement (``perception.detector.refine``) help? AP and matched-Car IoU with and without it,
on the same detections (the network runs once per frame).

    python experiments/box_refine_study.py --data sim:val --limit 50
    python experiments/box_refine_study.py --data ../shared/data/kitti_labelled
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
from tqdm import tqdm

from perception.detector.api import FusionDetector
from perception.detector.config import DetectorConfig
from perception.detector.inputs import prepare_frame
from perception.detector.postprocess import PostProcessConfig
from perception.detector.refine import PillarIndex, RefineConfig, refine_detections
from perception.eval.evaluate import FrameRecord, ap_table, attach_image_boxes, difficulty_for, open_source
from perception.eval.iou import iou_3d

REPO = Path(__file__).resolve().parents[1]


def matched_iou(records: list[FrameRecord]) -> list[float]:
    """Best 3D IoU of a Car detection with each labelled Car (0 when none overlaps)."""
    out = []
    for r in records:
        dets = np.array([d.box.as_array() for d in r.detections if d.box.label == "Car" and d.score >= 0.1])
        for g in r.gt:
            if g.label != "Car":
                continue
            out.append(float(iou_3d(g.as_array()[None], dets).max()) if len(dets) else 0.0)
    return out


def matched_errors(records: list[FrameRecord]) -> np.ndarray:
    """Detection minus label ``[x, y, z, l, w, h, yaw mod pi]`` of the best-overlapping Car detection of each Car."""
    out = []
    for r in records:
        dets = [d.box.as_array() for d in r.detections if d.box.label == "Car" and d.score >= 0.1]
        for g in r.gt:
            if g.label != "Car" or not dets:
                continue
            ious = iou_3d(g.as_array()[None], np.array(dets))[0]
            if ious.max() <= 0:
                continue
            e = dets[int(ious.argmax())] - g.as_array()
            e[6] = (e[6] + np.pi / 2) % np.pi - np.pi / 2
            out.append(e)
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/fusion_default")
    ap.add_argument("--data", default="sim:val")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--backend", default="torch")
    args = ap.parse_args()
    cfg = DetectorConfig.from_yaml(REPO / args.model / "config.yaml")
    detector = FusionDetector.load(REPO / args.model, backend=args.backend,
                                   postprocess=PostProcessConfig(refine_boxes=False))
    frames, total = open_source(args.data, cfg, args.limit)
    variants = {"network": None, "refined": RefineConfig(), "refined, all scores": RefineConfig(min_score=0.0)}
    records: dict[str, list[FrameRecord]] = {k: [] for k in variants}
    changed = 0
    for frame in tqdm(frames, total=total, desc="detect", unit="frame"):
        result = detector(frame)
        attach_image_boxes(result.detections, frame.rig)
        index = PillarIndex(prepare_frame(frame, cfg.model).pillars, cfg.model)
        for name, rc in variants.items():
            dets = copy.deepcopy(result.detections)
            if rc is not None:
                changed += refine_detections(dets, index, rc)
            records[name].append(FrameRecord(frame.frame_id, frame.boxes, dets))
    difficulty = difficulty_for(records["network"])
    classes = list(cfg.model.classes)
    for name, recs in records.items():
        ious = np.array(matched_iou(recs))
        print(f"{name:8s} 3D AP {ap_table(recs, classes, '3d', difficulty)} BEV AP Car "
              f"{ap_table(recs, classes, 'bev', difficulty)['Car']}; matched Car IoU mean {ious.mean():.3f}, "
              f">= 0.7: {np.mean(ious >= 0.7):.2f} ({len(ious)} Cars)")
    for name, recs in records.items():
        e = matched_errors(recs)
        print(f"{name:8s} mean error x y z l w h yaw {np.round(e.mean(axis=0), 3).tolist()}; "
              f"mean |error| {np.round(np.abs(e).mean(axis=0), 3).tolist()}")
    print(f"boxes refined: {changed}")


if __name__ == "__main__":
    main()
