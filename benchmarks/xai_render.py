"""Cost of the XAI pictures (camera + BEV, :mod:`perception.trust.explain`) per frame on one core, and whether
rendering them on the node's XAI thread (:class:`ros_nodes.xai_worker.XaiWorker`) slows detection.

For each frame of ``--data`` (real KITTI by default) the detector runs once (torch, 1 thread), then both
pictures are rendered ``--repeat`` times: wall and process CPU time per frame (min and median). Then the
detector runs over the frames twice — XAI off, and XAI on at ``--period`` (0.1 s, ten times the node's
default rate) — and the detection latency p50 of both is printed. ``--png DIR`` saves the pictures of each
frame. Other processes on the machine inflate wall times; the CPU time is the per-core cost.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from perception.detector.api import FusionDetector
from perception.detector.checkpoint import CONFIG_FILE
from perception.detector.config import DetectorConfig
from perception.eval.evaluate import open_source
from perception.trust.explain import render_bev, render_image
from ros_nodes.xai_worker import XaiWorker


def main() -> int:
    """Print (and optionally write) render and detection-latency figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/fusion_default")
    p.add_argument("--data", default="../shared/data/kitti_labelled")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--period", type=float, default=0.1)
    p.add_argument("--png", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    detector = FusionDetector.load(args.model, backend="torch", num_threads=1)
    frames, _ = open_source(args.data, DetectorConfig.from_yaml(Path(args.model) / CONFIG_FILE), args.limit)
    frames = list(frames)
    results = [detector(f) for f in frames]
    render_image(frames[0], results[0]), render_bev(frames[0], results[0])  # fonts, palettes
    wall, cpu = [], []
    for i, (f, r) in enumerate(zip(frames, results)):
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            img, bev = render_image(f, r), render_bev(f, r)
            wall.append(1e3 * (time.perf_counter() - t0))
            cpu.append(1e3 * (time.process_time() - c0))
        if args.png:
            args.png.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(args.png / f"{i:02d}_image.png")
            Image.fromarray(bev).save(args.png / f"{i:02d}_bev.png")

    def latency(period: float) -> float:
        worker = XaiWorker(lambda *a: None, period)
        lat = []
        for f in frames * 2:
            t0 = time.perf_counter()
            r = detector(f)
            lat.append(1e3 * (time.perf_counter() - t0))
            worker.offer(f, r, None)
        worker.stop()
        return float(np.median(lat))

    off, on = latency(0.0), latency(args.period)
    out = {"frames": len(frames), "data": args.data,
           "render_ms": {"wall_min": round(min(wall), 1), "wall_p50": round(float(np.median(wall)), 1),
                         "cpu_p50": round(float(np.median(cpu)), 1)},
           "detect_ms_p50": {"xai_off": round(off, 1), f"xai_on_every_{args.period}s": round(on, 1)}}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
