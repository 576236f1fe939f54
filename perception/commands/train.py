"""``perception train``: simulate data, train the fusion detector, calibrate it, evaluate it, ship it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from perception.detector.config import DetectorConfig
from perception.errors import ConfigError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception train``."""
    p = subparsers.add_parser("train", help="train, calibrate and evaluate the fusion detector",
                              description="Generates and caches simulated data on first use, trains with periodic "
                                          "checkpoints (re-running resumes), fits calibration on sim:calib, "
                                          "evaluates on sim:test and writes weights, calibration, metrics and a "
                                          "model card into the output folder.")
    p.add_argument("--config", type=Path, default=Path("models/fusion_default.yaml"))
    p.add_argument("--out", type=Path, default=None, help="output folder (default models/<model name>)")
    p.add_argument("--time-limit", type=float, default=None, help="override train.time_limit_minutes")
    p.add_argument("--skip-eval", action="store_true", help="stop after training and calibration")
    p.add_argument("--calibrate-only", action="store_true",
                   help="keep the trained weights in the output folder: only re-fit the calibration, evaluate and "
                        "rewrite the model card (after a change to post-processing)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Train → save → calibrate → evaluate → model card → manifest."""
    from perception.detector.api import FusionDetector
    from perception.detector.checkpoint import CALIBRATION_FILE, load_model, save_model, write_manifest
    from perception.detector.model_card import write_model_card
    from perception.detector.train import train
    from perception.engines.torch_engine import TorchEngine
    from perception.eval.evaluate import evaluate, fit_calibration_from_records, open_source, run_detector
    from perception.trust.calibration import Calibration

    cfg = DetectorConfig.from_yaml(args.config)
    if args.time_limit is not None:
        cfg.train.time_limit_minutes = args.time_limit
    out = args.out or Path("models") / cfg.model.name
    if args.calibrate_only:
        net, saved, _ = load_model(out)
        if saved.model != cfg.model:
            raise ConfigError(f"the model in {out} was trained from another model section", str(args.config))
        state = json.loads((out / "train_state.json").read_text())
    else:
        net, trained = train(cfg, out)
        save_model(net, cfg, out)
        state = dataclasses.asdict(trained)
        (out / "train_state.json").write_text(json.dumps(state, indent=2) + "\n")

    detector = FusionDetector(cfg.model, TorchEngine(net), Calibration(), model_id=f"{cfg.model.name}@torch")
    frames, total = open_source("sim:calib", cfg)
    records = run_detector(detector, frames, total, desc="calibrate")
    calibration = fit_calibration_from_records(records, fitted_on=f"sim:calib ({total} frames)")
    calibration.save(out / CALIBRATION_FILE)
    detector.calibration = calibration
    log.info("calibration: %s", calibration)
    if args.skip_eval:
        write_manifest(out)
        return 0
    metrics = evaluate(detector, "sim:test", cfg, report_dir=out / "report", pictures=2)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_model_card(out, cfg, state, metrics, dataclasses.asdict(calibration))
    write_manifest(out)
    from perception.commands.eval import format_metrics

    print(format_metrics(metrics))
    return 0
