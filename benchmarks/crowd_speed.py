"""Crowd counter throughput (images/s) on 640x360 camera frames with PyTorch and ONNX Runtime on this CPU.

A 640x360 frame (``--size``) is prepared as the node does (shrunk to the model's ``max_side``, padded to a
multiple of 16); the network call on it (batch 1, the node's case) is timed after warm-up, for the shipped
model directory (default ``models/crowd_default``; its ``model.onnx`` is exported when missing), and so is the
whole ONNX Runtime path with the resize (``onnxruntime_with_resize``). Prints images/s and p50/p90 latency per
backend; ``--json`` writes them. Set ``--threads`` to what the deployment will use
(default 1). Other processes running at the same time (e.g. training) lower the wall-clock numbers, so the
process CPU time per image is reported too: with one thread, ``1 / cpu_s_per_image`` is the rate this CPU
reaches when the core is not shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("crowd_speed")


def _time(fn, x: np.ndarray, warmup: int, iters: int) -> dict[str, float]:
    for _ in range(warmup):
        fn(x)
    lat = []
    cpu0 = time.process_time()
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(x)
        lat.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / iters
    arr = np.asarray(lat)
    return {"images_per_s": float(1.0 / arr.mean()), "p50_ms": float(np.percentile(arr, 50) * 1e3),
            "p90_ms": float(np.percentile(arr, 90) * 1e3), "cpu_ms_per_image": float(cpu * 1e3),
            "images_per_cpu_s": float(1.0 / cpu)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per backend."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/crowd_default"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--size", default="640x360", help="camera frame WIDTHxHEIGHT")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    from perception.crowd.api import resize_rgb
    from perception.crowd.checkpoint import load_crowd_model
    from perception.crowd.export import INPUT_NAME, OUTPUT_NAME, export_crowd_onnx, ort_session
    from perception.crowd.predict import pad_to_stride

    torch.set_num_threads(args.threads)
    net, cfg, _ = load_crowd_model(args.model)
    onnx_path = args.model / "model.onnx"
    if not onnx_path.is_file():
        export_crowd_onnx(net, onnx_path)
    width, height = (int(v) for v in args.size.lower().split("x"))
    frame = (np.random.default_rng(0).random((height, width, 3)) * 255).astype(np.uint8)

    def prepare(img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(pad_to_stride(resize_rgb(img, cfg.model.max_side)).transpose(2, 0, 1))[None]

    x = prepare(frame)
    xt = torch.from_numpy(x)

    def run_torch(_: np.ndarray) -> None:
        with torch.inference_mode():
            net(xt)

    sess = ort_session(onnx_path, threads=args.threads)
    results = {"model": str(args.model), "attention": cfg.model.attention, "size": args.size,
               "network_input": f"{x.shape[3]}x{x.shape[2]}",
               "threads": args.threads, "load_avg_1min_before": round(os.getloadavg()[0], 2),
               "pytorch": _time(run_torch, x, args.warmup, args.iters),
               "onnxruntime": _time(lambda a: sess.run([OUTPUT_NAME], {INPUT_NAME: a}), x, args.warmup, args.iters),
               "onnxruntime_with_resize": _time(lambda f: sess.run([OUTPUT_NAME], {INPUT_NAME: prepare(f)}), frame,
                                                args.warmup, args.iters),
               "command": "python benchmarks/crowd_speed.py " + " ".join(argv if argv is not None else
                                                                         sys.argv[1:])}
    for backend in ("pytorch", "onnxruntime", "onnxruntime_with_resize"):
        r = results[backend]
        print(f"{backend:<24} {r['images_per_s']:7.1f} images/s  p50 {r['p50_ms']:6.1f} ms  p90 {r['p90_ms']:6.1f} ms"
              f"  | CPU {r['cpu_ms_per_image']:6.1f} ms/image = {r['images_per_cpu_s']:5.1f} images per CPU-s"
              f"  ({args.size} -> {results['network_input']}, {args.threads} thread(s), load before "
              f"{results['load_avg_1min_before']:.1f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
