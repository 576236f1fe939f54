"""Compare simulated frames with the real KITTI sample: points per frame, range and intensity histograms,
points on cars at ~10 m and ~30 m, image brightness. Prints a table and writes a PNG.

    .venv/bin/python benchmarks/sim_vs_real.py [--kitti ../shared/data/kitti_sample] [--drives 4 --frames 2]
        [--out out/sim_vs_real.png]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from perception.errors import DataError, PerceptionError
from perception.frame import Box3D, points_in_boxes
from perception.rig import KittiCalib, Rig, invert_transform, transform_points
from perception.sim import SceneOptions, simulate_drive

REPO = Path(__file__).resolve().parents[1]
RANGE_BINS = np.array([0, 5, 10, 20, 30, 40, 60, 80, 120])
INTENSITY_BINS = np.linspace(0.0, 1.0, 11)
NEAR, FAR = (7.0, 13.0), (25.0, 35.0)  # car distance bands ("~10 m", "~30 m")
logger = logging.getLogger("sim_vs_real")


def kitti_boxes(label_path: Path, calib: KittiCalib) -> list[Box3D]:
    """KITTI labels (rectified camera frame, bottom centre) as LiDAR-frame boxes with geometric centres."""
    rect_to_velo = invert_transform(calib.velo_to_rect)
    boxes = []
    for lineno, line in enumerate(label_path.read_text().splitlines(), 1):
        f = line.split()
        if not f or f[0] == "DontCare":
            continue
        if len(f) < 15:
            raise DataError(f"expected 15 fields, got {len(f)}", f"{label_path}:{lineno}")
        h, w, l = (float(v) for v in f[8:11])
        x, y, z, ry = (float(v) for v in f[11:15])
        centre = transform_points(rect_to_velo, np.array([[x, y - h / 2, z]]))[0]
        boxes.append(Box3D(label=f[0], center=centre, size=(l, w, h), yaw=-ry - np.pi / 2,
                           occlusion=int(f[2]), truncation=float(f[1])))
    return boxes


def load_kitti(root: Path) -> list[dict]:
    """The real frames: points, image, boxes with point counts."""
    base = root / "training"
    ids = sorted(p.stem for p in (base / "velodyne").glob("*.bin"))
    if not ids:
        raise DataError("no velodyne/*.bin files", str(base / "velodyne"))
    frames = []
    for i in ids:
        pts = np.fromfile(base / "velodyne" / f"{i}.bin", dtype=np.float32).reshape(-1, 4)
        img = np.asarray(Image.open(base / "image_2" / f"{i}.png").convert("RGB"))
        calib = KittiCalib.read(base / "calib" / f"{i}.txt")
        boxes = kitti_boxes(base / "label_2" / f"{i}.txt", calib)
        rig = calib.to_rig(width=img.shape[1], height=img.shape[0])
        counts = points_in_boxes(pts, np.stack([b.as_array() for b in boxes])).sum(1) if boxes else []
        for b, k in zip(boxes, counts):
            b.num_points = int(k)
        frames.append({"id": i, "points": pts, "image": img, "boxes": boxes, "rig": rig})
    return frames


def load_sim(rig: Rig, drives: int, frames: int, seed: int) -> list[dict]:
    """Simulated frames from ``drives`` drives (seeds ``seed..``), ``frames`` each."""
    out = []
    with tqdm(total=drives * frames, desc="simulating", unit="frame") as bar:
        for d in range(drives):
            for f in simulate_drive(rig, frames, seed + d, SceneOptions()):
                out.append({"id": f.frame_id, "points": f.points, "image": f.image, "boxes": f.boxes, "rig": rig})
                bar.update()
    return out


def frame_stats(frames: list[dict]) -> dict[str, np.ndarray | float]:
    """Aggregate statistics over frames."""
    pts = np.concatenate([f["points"] for f in frames])
    r = np.linalg.norm(pts[:, :3], axis=1)
    in_fov = [f["rig"].project(f["points"][:, :3])[2].sum() for f in frames]
    grey = np.concatenate([f["image"].mean(axis=2).ravel() for f in frames])
    cars = [(float(np.hypot(*b.center[:2])), b.num_points) for f in frames for b in f["boxes"]
            if b.label == "Car" and b.occlusion == 0 and b.truncation < 0.3]
    cars_a = np.array(cars, dtype=np.float64).reshape(-1, 2)

    def band(lo_hi: tuple[float, float]) -> np.ndarray:
        m = (cars_a[:, 0] >= lo_hi[0]) & (cars_a[:, 0] < lo_hi[1])
        return cars_a[m, 1]

    return {
        "points": float(np.mean([len(f["points"]) for f in frames])),
        "points_fov": float(np.mean(in_fov)),
        "range_hist": np.histogram(r, RANGE_BINS)[0] / len(r),
        "range_median": float(np.median(r)),
        "int_hist": np.histogram(np.clip(pts[:, 3], 0, 1), INTENSITY_BINS)[0] / len(pts),
        "int_mean": float(pts[:, 3].mean()),
        "int_median": float(np.median(pts[:, 3])),
        "car_near": band(NEAR),
        "car_far": band(FAR),
        "cars": cars_a,
        "bright_mean": float(grey.mean()),
        "bright_std": float(grey.std()),
        "rgb_mean": np.mean([f["image"].reshape(-1, 3).mean(0) for f in frames], axis=0),
    }


def _fmt_band(v: np.ndarray) -> str:
    return "n/a" if len(v) == 0 else f"{np.median(v):.0f} (n={len(v)}, {v.min():.0f}-{v.max():.0f})"


def print_table(real: dict, sim: dict, real_frames: list[dict]) -> None:
    """The comparison as a plain-text table."""
    rows = [
        ("points / frame (360 deg)", f"{real['points']:.0f}", f"{sim['points']:.0f}"),
        ("points / frame in camera FOV", f"{real['points_fov']:.0f}", f"{sim['points_fov']:.0f}"),
        ("median range (m)", f"{real['range_median']:.1f}", f"{sim['range_median']:.1f}"),
        ("intensity mean / median", f"{real['int_mean']:.3f} / {real['int_median']:.3f}",
         f"{sim['int_mean']:.3f} / {sim['int_median']:.3f}"),
        (f"car points at {NEAR[0]:.0f}-{NEAR[1]:.0f} m (median)", _fmt_band(real["car_near"]),
         _fmt_band(sim["car_near"])),
        (f"car points at {FAR[0]:.0f}-{FAR[1]:.0f} m (median)", _fmt_band(real["car_far"]), _fmt_band(sim["car_far"])),
        ("image brightness mean / std", f"{real['bright_mean']:.1f} / {real['bright_std']:.1f}",
         f"{sim['bright_mean']:.1f} / {sim['bright_std']:.1f}"),
        ("image mean R G B", " ".join(f"{v:.0f}" for v in real["rgb_mean"]),
         " ".join(f"{v:.0f}" for v in sim["rgb_mean"])),
    ]
    for lo, hi, a, b in zip(RANGE_BINS[:-1], RANGE_BINS[1:], real["range_hist"], sim["range_hist"]):
        rows.append((f"  share of points at {lo}-{hi} m", f"{a:.3f}", f"{b:.3f}"))
    for lo, hi, a, b in zip(INTENSITY_BINS[:-1], INTENSITY_BINS[1:], real["int_hist"], sim["int_hist"]):
        rows.append((f"  share of intensity {lo:.1f}-{hi:.1f}", f"{a:.3f}", f"{b:.3f}"))
    w0 = max(len(r[0]) for r in rows)
    print(f"{'metric':<{w0}}  {'KITTI':>24}  {'sim':>24}")
    for name, a, b in rows:
        print(f"{name:<{w0}}  {a:>24}  {b:>24}")
    print("KITTI objects (class, distance m, points):",
          "; ".join(f"{b.label} {np.hypot(*b.center[:2]):.1f} {b.num_points}" for f in real_frames for b in f["boxes"]))


def plot(real: dict, sim: dict, real_frames: list[dict], sim_frames: list[dict], out: Path) -> None:
    """Histograms, car points vs distance, BEV and images side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(3, 2, figsize=(14, 12))
    centres = (RANGE_BINS[:-1] + RANGE_BINS[1:]) / 2
    width = np.diff(RANGE_BINS) * 0.4
    ax[0, 0].bar(centres - width / 2, real["range_hist"], width, label="KITTI")
    ax[0, 0].bar(centres + width / 2, sim["range_hist"], width, label="sim")
    ax[0, 0].set(title="range histogram (share of points)", xlabel="range (m)")
    ax[0, 0].legend()
    ic = (INTENSITY_BINS[:-1] + INTENSITY_BINS[1:]) / 2
    ax[0, 1].bar(ic - 0.02, real["int_hist"], 0.04, label="KITTI")
    ax[0, 1].bar(ic + 0.02, sim["int_hist"], 0.04, label="sim")
    ax[0, 1].set(title="intensity histogram", xlabel="intensity")
    ax[0, 1].legend()
    if len(sim["cars"]):
        ax[1, 0].scatter(sim["cars"][:, 0], np.maximum(sim["cars"][:, 1], 1), s=8, label="sim cars (unoccluded)")
    kitti_cars = [(np.hypot(*b.center[:2]), b.num_points) for f in real_frames for b in f["boxes"]]
    if kitti_cars:
        kc = np.array(kitti_cars)
        ax[1, 0].scatter(kc[:, 0], np.maximum(kc[:, 1], 1), s=40, marker="x", color="r", label="KITTI objects")
    ax[1, 0].set(yscale="log", title="LiDAR points per object vs distance", xlabel="distance (m)")
    ax[1, 0].legend()
    for a, frame, name in ((ax[1, 1], real_frames[0], "KITTI"), (ax[1, 1], sim_frames[0], "sim")):
        p = frame["points"]
        a.scatter(p[:, 0], p[:, 1] + (0 if name == "KITTI" else 0), s=0.05, alpha=0.3, label=name)
    ax[1, 1].set(xlim=(-40, 60), ylim=(-40, 40), aspect="equal", title="BEV: KITTI (blue) vs sim (orange)")
    ax[2, 0].imshow(real_frames[min(1, len(real_frames) - 1)]["image"])
    ax[2, 0].set(title="KITTI image")
    ax[2, 1].imshow(sim_frames[0]["image"])
    ax[2, 1].set(title="sim image")
    for a in (ax[2, 0], ax[2, 1]):
        a.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kitti", type=Path, default=REPO.parent / "shared" / "data" / "kitti_sample")
    ap.add_argument("--rig", type=Path, default=REPO / "calibration" / "kitti_hdl64.yaml")
    ap.add_argument("--drives", type=int, default=4)
    ap.add_argument("--frames", type=int, default=2, help="frames per drive")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("out") / "sim_vs_real.png")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        real_frames = load_kitti(args.kitti)
        sim_frames = load_sim(Rig.from_yaml(args.rig), args.drives, args.frames, args.seed)
    except PerceptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    real, sim = frame_stats(real_frames), frame_stats(sim_frames)
    print_table(real, sim, real_frames)
    plot(real, sim, real_frames, sim_frames, args.out)
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
