"""Latency of mmdetection3d 1.4's PointPillars against our fusion detector on the same KITTI cloud.

README
======

What it measures
----------------
One run times, on ``/work/shared/data/kitti_sample/training/velodyne/000000.bin`` (override with ``--cloud``):

* **mmdet3d**: PointPillars with the KITTI 3-class config shipped inside the mmdet3d package
  (``mmdet3d/.mim/configs/pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py``), random weights,
  ``init_model(cfg, None, device="cpu")``, timed per call of ``inference_detector(model, cloud)``: loading the
  cloud, voxelisation, network and box decoding + NMS. Runs in its own virtual environment, in a subprocess.
* **ours**: ``FusionDetector.load(--model, backend=--backend)`` on frame 000000 of the KITTI sample (cloud, image,
  calibration), timed per call of ``read_velodyne(cloud)`` + ``detector(frame)``: loading the cloud, voxelisation,
  network (LiDAR + camera + fusion decoder) and post-processing. Same thread count as mmdet3d.

It prints p50/p99 of both and the ratio ``mmdet3d p50 / ours p50`` (> 1: ours is faster), and with ``--json``
writes them. Random weights do not change PointPillars' cost except for post-processing, where an untrained
head gives many candidate boxes; the script reports the number of boxes mmdet3d kept, so this is visible.

The mmdet3d environment (kept out of our dependencies)
-------------------------------------------------------
The first run builds ``build/mmdet3d/venv`` (git-ignored), about 10 minutes on 2 cores::

    python -m venv build/mmdet3d/venv
    pip install torch==2.13.0                      # the same CPU wheel as ours
    pip install "setuptools<70" ninja wheel
    MMCV_WITH_OPS=1 MAX_JOBS=2 pip wheel --no-build-isolation --no-deps mmcv==2.1.0 -w build/mmdet3d/wheels
    pip install build/mmdet3d/wheels/mmcv-2.1.0-*.whl   # compiled CPU ops (voxelisation, rotated NMS), ~7.5 min
    pip install mmdet==3.2.0 mmdet3d==1.4.0 "numpy<2"

A stamp file marks a finished build; later runs reuse it. ``--setup-only`` builds and exits; ``--ours-only``
skips mmdet3d entirely.

Usage::

    .venv/bin/python benchmarks/mmdet3d_compare.py [--repeats 20] [--threads 2] [--backend onnxruntime-int8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "mmdet3d"
VENV = BUILD / "venv"
WHEELS = BUILD / "wheels"
STAMP = VENV / ".mmdet3d-ready"
KITTI = REPO.parent / "shared" / "data" / "kitti_sample"
DEFAULT_CLOUD = KITTI / "training" / "velodyne" / "000000.bin"
CONFIG = "configs/pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py"

#: Runs inside the mmdet3d venv: argv = cloud, repeats, threads; prints one JSON line.
MMDET3D_WORKER = r"""
import json, os, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
import mmdet3d
from mmdet3d.apis import inference_detector, init_model

cloud, repeats, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
config = os.path.join(os.path.dirname(mmdet3d.__file__), ".mim", sys.argv[4])
model = init_model(config, None, device="cpu")
with torch.no_grad():
    for _ in range(2):
        inference_detector(model, cloud)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = inference_detector(model, cloud)
        times.append((time.perf_counter() - t0) * 1e3)
result = result[0] if isinstance(result, (list, tuple)) else result
boxes = int(len(result.pred_instances_3d.bboxes_3d))
print(json.dumps({"times_ms": times, "boxes": boxes, "mmdet3d": mmdet3d.__version__, "torch": torch.__version__,
                  "params": sum(p.numel() for p in model.parameters())}))
"""


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, **(env or {})})


def ensure_venv() -> Path:
    """Build the mmdet3d venv once (see the module docstring); returns its python."""
    python = VENV / "bin" / "python"
    if STAMP.is_file():
        return python
    BUILD.mkdir(parents=True, exist_ok=True)
    if not python.is_file():
        _run([sys.executable, "-m", "venv", str(VENV)])
    pip = [str(python), "-m", "pip", "install"]
    _run(pip + ["torch==2.13.0"])
    _run(pip + ["setuptools<70", "ninja", "wheel"])
    if not list(WHEELS.glob("mmcv-2.1.0-*.whl")):
        t0 = time.time()
        _run([str(python), "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "mmcv==2.1.0", "-w", str(WHEELS)],
             env={"MMCV_WITH_OPS": "1", "MAX_JOBS": "2"})
        print(f"mmcv built in {(time.time() - t0) / 60:.1f} min", flush=True)
    _run(pip + [str(next(WHEELS.glob("mmcv-2.1.0-*.whl")))])
    _run(pip + ["mmdet==3.2.0", "mmdet3d==1.4.0", "numpy<2"])
    _run([str(python), "-c", "import mmcv.ops, mmdet3d.apis; print('mmdet3d ok')"])
    STAMP.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    return python


def time_mmdet3d(python: Path, cloud: Path, repeats: int, threads: int) -> dict:
    """Run the worker in the mmdet3d venv; returns its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([str(python), "-c", MMDET3D_WORKER, str(cloud), str(repeats), str(threads), CONFIG],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"mmdet3d worker failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_ours(model: Path, backend: str, cloud: Path, repeats: int, threads: int) -> dict:
    """Time our detector on the KITTI frame whose cloud is ``cloud`` (image and calibration from the same frame)."""
    import torch

    from perception.detector.api import FusionDetector
    from perception.io.kitti import KittiDataset, read_velodyne

    torch.set_num_threads(threads)
    root = cloud.parents[2] if cloud.parent.name == "velodyne" else KITTI
    dataset = KittiDataset(root)
    frame = next(dataset[i] for i in range(len(dataset)) if dataset[i].frame_id.endswith(cloud.stem))
    detector = FusionDetector.load(model, backend=backend, num_threads=threads)
    for _ in range(2):
        detector(frame)
    times, stages = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        frame.points = read_velodyne(cloud)
        result = detector(frame)
        times.append((time.perf_counter() - t0) * 1e3)
        stages.append(result.timings_ms)
    stage_p50 = {k: round(float(np.median([s[k] for s in stages])), 2) for k in stages[0]}
    return {"times_ms": times, "boxes": len(result.detections), "backend": backend, "stages_p50_ms": stage_p50}


def _stats(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p99_ms": round(float(np.percentile(times, 99)), 2)}


def main(argv: list[str] | None = None) -> int:
    """Build (once) and compare; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cloud", type=Path, default=DEFAULT_CLOUD, help="KITTI velodyne .bin")
    p.add_argument("--model", type=Path, default=REPO / "models" / "fusion_default", help="our model directory")
    p.add_argument("--backend", default="torch", help="our backend (torch, onnxruntime, onnxruntime-int8, ...)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--setup-only", action="store_true", help="build the mmdet3d venv and exit")
    p.add_argument("--ours-only", action="store_true", help="skip mmdet3d")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    if not args.cloud.is_file():
        raise SystemExit(f"cloud not found: {args.cloud}")
    doc: dict = {"cloud": str(args.cloud), "threads": args.threads, "repeats": args.repeats}
    if not args.ours_only:
        python = ensure_venv()
        if args.setup_only:
            return 0
        mm = time_mmdet3d(python, args.cloud, args.repeats, args.threads)
        doc["mmdet3d"] = {**_stats(mm.pop("times_ms")), **mm}
        print(f"mmdet3d {mm['mmdet3d']} PointPillars (random weights): p50 {doc['mmdet3d']['p50_ms']} ms, "
              f"p99 {doc['mmdet3d']['p99_ms']} ms, {mm['boxes']} boxes")
    ours = time_ours(args.model, args.backend, args.cloud, args.repeats, args.threads)
    doc["ours"] = {**_stats(ours.pop("times_ms")), **ours}
    print(f"ours ({args.backend}): p50 {doc['ours']['p50_ms']} ms, p99 {doc['ours']['p99_ms']} ms, "
          f"{ours['boxes']} detections, stages p50 {ours['stages_p50_ms']}")
    if "mmdet3d" in doc:
        doc["ratio_mmdet3d_over_ours"] = round(doc["mmdet3d"]["p50_ms"] / doc["ours"]["p50_ms"], 2)
        print(f"ratio mmdet3d / ours (p50): {doc['ratio_mmdet3d_over_ours']}x")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
