"""``perception demo``: the main job on the bundled default drive — replay it through the fusion
detector and write a report (metrics, BEV and camera PNGs with boxes and probabilities, an HTML page);
then the same for a real KITTI drive (``kitti_raw_0926_traffic``, converted to a bag under ``out/drives``).

The drive is defined in ``config/default_drive.yaml`` and generated deterministically with the
simulator the first time (or whenever its definition changes), then cached as a bag under ``data/``.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from perception.commands import REPO_ROOT, find_resource
from perception.errors import ConfigError
from perception.io import write_frames
from perception.io.bag import BAG_LAYOUT_VERSION, BagReader, is_bag
from perception.io.preview import render_frame_png
from perception.io.summary import summarize
from perception.rig import Rig

log = logging.getLogger(__name__)

DEFAULT_DRIVE_CONFIG = "config/default_drive.yaml"
#: custom_data key under which a generated drive records its definition.
DRIVE_CUSTOM_KEY = "trustworthy_perception.drive"


@dataclass(frozen=True)
class DriveDefinition:
    """A reproducible simulated drive: where it is cached and how it is generated."""

    path: str
    rig: str
    split: str
    seed: int
    frames: int
    frames_per_drive: int = 10
    storage: str = "mcap"

    @classmethod
    def load(cls, path: str | Path = DEFAULT_DRIVE_CONFIG) -> DriveDefinition:
        """Load and validate a drive definition YAML; errors name the file and key."""
        src = find_resource(path)
        try:
            doc = yaml.safe_load(src.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML: {exc}", str(src)) from exc
        if not isinstance(doc, dict):
            raise ConfigError("expected a mapping", str(src))
        if doc.get("format", "bag") != "bag":
            raise ConfigError("only format: bag is supported for the default drive", f"{src}:format")
        types = {"path": str, "rig": str, "split": str, "seed": int, "frames": int, "frames_per_drive": int,
                 "storage": str}
        values = {}
        for key, typ in types.items():
            if key not in doc:
                if key in ("frames_per_drive", "storage"):
                    continue
                raise ConfigError("missing key", f"{src}:{key}")
            if not isinstance(doc[key], typ) or isinstance(doc[key], bool):
                raise ConfigError(f"expected {typ.__name__}, got {doc[key]!r}", f"{src}:{key}")
            values[key] = doc[key]
        if values["frames"] <= 0:
            raise ConfigError(f"must be positive, got {values['frames']}", f"{src}:frames")
        unknown = set(doc) - set(types) - {"format"}
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)}", str(src))
        return cls(**values)

    @property
    def location(self) -> Path:
        """Absolute path of the cached bag (relative paths are taken from the repository root)."""
        p = Path(self.path)
        return p if p.is_absolute() else REPO_ROOT / p

    def fingerprint(self) -> str:
        """A JSON string identifying the generated content (everything but the cache location, plus the bag layout)."""
        d = asdict(self)
        d.pop("path")
        d["bag_layout"] = BAG_LAYOUT_VERSION
        return json.dumps(d, sort_keys=True)


def ensure_drive(defn: DriveDefinition, out: str | Path | None = None, workers: int = 2,
                 progress: bool = True) -> Path:
    """Return the bag of ``defn`` at ``out`` (default its cached location), generating it when absent or stale."""
    target = Path(out) if out is not None else defn.location
    force = False
    if is_bag(target):
        with BagReader(target) as reader:
            if reader.custom.get(DRIVE_CUSTOM_KEY) == defn.fingerprint():
                return target
        log.warning("%s was generated from another definition; regenerating", target)
        force = True
    from perception.sim import iter_split

    rig = Rig.from_yaml(find_resource(defn.rig))
    print(f"generating the default drive ({defn.frames} {defn.split} frames, seed {defn.seed}) at {target}")
    frames = iter_split(rig, defn.split, defn.frames, seed=defn.seed, frames_per_drive=defn.frames_per_drive,
                        workers=workers)
    write_frames(frames, target, "bag", rig, storage=defn.storage, force=force, total=defn.frames,
                 custom_data={DRIVE_CUSTOM_KEY: defn.fingerprint()}, progress=progress)
    return target


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception demo``."""
    p = subparsers.add_parser("demo", help="run the main job on the bundled default drive",
                              description="Make sure the default drive exists (generating it on first use), "
                                          "print its summary, replay it through the fusion detector and write "
                                          "a report (out/demo/index.html, PNGs, metrics.json).")
    p.add_argument("--drive", default=DEFAULT_DRIVE_CONFIG, help="drive definition YAML (default %(default)s)")
    p.add_argument("--out", default=str(REPO_ROOT / "out" / "demo"), help="output folder (default out/demo)")
    p.add_argument("--workers", type=int, default=2, help="simulation processes (default 2)")
    p.add_argument("--model", default=str(REPO_ROOT / "models" / "fusion_default"), help="detector model folder")
    p.add_argument("--backend", default="auto",
                   help="engine backend (default auto: the fastest that passed parity in perception bench)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Ensure the drive, print its summary, write the preview PNG."""
    defn = DriveDefinition.load(args.drive)
    bag = ensure_drive(defn, workers=args.workers)
    summary = summarize(bag)
    print(summary.format_text())
    with BagReader(bag) as reader:
        first = next(reader.frames())
    png = render_frame_png(first, Path(args.out) / "summary.png",
                           title=f"default drive {defn.split}/seed {defn.seed}, frame {first.frame_id}: "
                                 f"{len(first.boxes)} objects, {len(first.points)} points")
    print(f"wrote {png}")
    from perception.commands.eval import format_metrics
    from perception.detector.api import FusionDetector
    from perception.detector.checkpoint import CONFIG_FILE
    from perception.detector.config import DetectorConfig
    from perception.eval.evaluate import evaluate

    detector = FusionDetector.load(args.model, backend=args.backend)
    cfg = DetectorConfig.from_yaml(Path(args.model) / CONFIG_FILE)
    out = Path(args.out)
    metrics = evaluate(detector, str(bag), cfg, lidar_only=True, report_dir=out, pictures=3)
    real = real_drive(detector, cfg, out)
    if real is not None:
        metrics["real_drive"] = real
        _link_real_drive(out / "index.html", real)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(format_metrics(metrics))
    if real is not None:
        print(format_metrics(real))
    return 0


#: The real drive `perception demo` replays as well: a KITTI raw drive (camera, no labels) from ../shared/data.
REAL_DRIVE = REPO_ROOT.parent / "shared" / "data" / "kitti_raw_0926_traffic"


def real_drive(detector, cfg, out: Path, source: Path = REAL_DRIVE) -> dict | None:
    """Convert the real drive to a bag once (``out/../drives/<name>``), replay it through the detector and
    report it in ``out/real_drive``; None (with a note) when the shared data folder is absent."""
    from perception.eval.evaluate import evaluate

    if not (source / "training" / "velodyne").is_dir():
        print(f"real drive not available at {source}: shared data folder absent, showing the simulated drive only")
        return None
    bag = out.parent / "drives" / source.name
    if not is_bag(bag):
        from perception.io import KittiDataset

        ds = KittiDataset(source)
        write_frames(iter(ds), bag, "bag", ds[0].rig, total=len(ds),
                     custom_data={"trustworthy_perception.source": str(source)}, progress=False)
        print(f"converted {source} to {bag}")
    return evaluate(detector, str(bag), cfg, lidar_only=False, report_dir=out / "real_drive", pictures=3,
                    stage_latency=False)


def _link_real_drive(index: Path, real: dict) -> None:
    """Add the real drive's section to the demo page."""
    import html

    section = (f"<h2>Real drive: {html.escape(Path(str(real['data'])).name)} (KITTI raw, {real['frames']} frames, "
               "no labels)</h2><p>Replayed from its bag through the same detector: "
               "<a href='real_drive/index.html'>its report</a>.</p>"
               + "".join(f"<p><img src='real_drive/{html.escape(name)}' style='max-width:100%'></p>"
                         for name in sorted(p.name for p in (index.parent / "real_drive").glob("frame_*.png"))))
    text = index.read_text()
    index.write_text(text.replace("</body>", section + "</body>", 1))
