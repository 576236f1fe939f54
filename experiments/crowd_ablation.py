"""SimAM ablation of the crowd counter: the shipped recipe with and without attention, the same split, seed and
(shorter) step budget; per-dataset validation metrics of each run in one JSON.

``python -m experiments.crowd_ablation --steps 500 --whole-steps 0 --out runs --json out/crowd_ablation.json`` trains
``<out>/ablation_<variant>`` (resuming finished or interrupted runs) and collects them.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from perception.crowd.config import CrowdConfig
from perception.crowd.train import train_crowd

log = logging.getLogger(__name__)


def ablation_config(cfg: CrowdConfig, attention: str, steps: int, whole_steps: int) -> CrowdConfig:
    """``cfg`` with ``model.attention``, ``train.steps`` and ``train.whole_steps`` replaced."""
    doc = cfg.to_dict()
    doc["model"]["attention"] = attention
    doc["train"]["steps"] = steps
    doc["train"]["whole_steps"] = whole_steps
    return CrowdConfig.from_dict(doc, f"ablation {attention}")


def finished_summary(cfg: CrowdConfig, run_dir: Path) -> dict | None:
    """``training.json`` of a finished run of exactly ``cfg`` in ``run_dir`` (None when there is none)."""
    summary, saved = run_dir / "training.json", run_dir / "config.yaml"
    if not summary.is_file() or not saved.is_file():
        return None
    if CrowdConfig.from_yaml(saved).to_dict() != cfg.to_dict():
        return None
    return json.loads(summary.read_text())


def run_ablation(cfg: CrowdConfig, out: Path, steps: int, whole_steps: int = 0,
                 variants: tuple[str, ...] = ("simam", "none"), progress: bool = True) -> dict:
    """Train (or resume) one run per attention variant; returns ``{"runs": [...]}`` with validation reports."""
    runs = []
    for variant in variants:
        run_cfg, run_dir = ablation_config(cfg, variant, steps, whole_steps), out / f"ablation_{variant}"
        summary = finished_summary(run_cfg, run_dir) or train_crowd(run_cfg, run_dir, resume=True, progress=progress)
        runs.append({"attention": variant, "steps": summary["steps"], "whole_steps": whole_steps,
                     "cpu_seconds": summary["cpu_seconds"],
                     "seconds": summary["seconds"], "val": summary["val"]})
    return {"runs": runs}


def main(argv: list[str] | None = None) -> int:
    """Run the ablation and write its JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("models/crowd_default.yaml"))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--whole-steps", type=int, default=0, help="whole-frame steps after the crops")
    p.add_argument("--variants", nargs="+", default=["simam", "none"], help="attention variants to train")
    p.add_argument("--out", type=Path, default=Path("runs"))
    p.add_argument("--json", type=Path, default=Path("runs/crowd_ablation.json"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    result = run_ablation(CrowdConfig.from_yaml(a.config), a.out, a.steps, a.whole_steps, tuple(a.variants))
    result["command"] = f"python -m experiments.crowd_ablation --steps {a.steps} --whole-steps {a.whole_steps}"
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=2) + "\n")
    for r in result["runs"]:
        print(r["attention"], {k: round(v["mae"], 2) for k, v in r["val"]["per_source"].items()},
              f"all {r['val']['mae']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
