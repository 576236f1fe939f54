"""Matching detections to ground truth, the shift definitions, and the CLI's error paths."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import ConfigError
from perception.frame import OOD_CLASSES, Box3D, Detection
from perception.ood.collect import match_detections
from perception.ood.shifts import CLEAN, SHIFTS, shift_by_name


def _det(x: float, y: float, score: float) -> Detection:
    return Detection(box=Box3D("Car", [x, y, 0.0], [4.0, 1.8, 1.5], 0.0), score=score, probability=score,
                     covariance=np.eye(7))


def test_match_is_one_to_one_greedy_by_score_within_the_box_radius() -> None:
    gt = [Box3D("Car", [10.0, 0.0, 0.0], [4.0, 1.8, 1.5], 0.0),  # radius 0.5 * hypot(4, 1.8) = 2.19 m
          Box3D("Animal", [20.0, 5.0, 0.0], [0.8, 0.4, 0.8], 0.0)]  # small box: the 1 m minimum radius applies
    dets = [_det(10.5, 0.5, 0.4), _det(11.0, 0.0, 0.9), _det(20.6, 5.5, 0.5), _det(21.5, 5.0, 0.8),
            _det(30.0, 0.0, 0.7)]
    # the 0.9 detection takes the car first; the 0.4 one is left without a box; 21.5 m is 1.5 m off the animal
    assert match_detections(dets, gt) == ["", "Car", "Animal", "", ""]
    assert match_detections(dets, []) == [""] * 5
    assert match_detections([], gt) == []


def test_shifts_are_valid_scene_options_and_unknown_objects_use_ood_classes() -> None:
    names = [s.name for s in SHIFTS]
    assert len(set(names)) == len(names) and CLEAN.name not in names
    for s in SHIFTS:
        opts = s.scene_options()  # validates
        if s.unit == "detection":
            assert opts.unknown_objects and set(opts.unknown_objects) <= set(OOD_CLASSES)
        else:
            assert s.unit == "frame" and not opts.unknown_objects
    assert {s.options.get("weather") for s in SHIFTS} >= {"rain", "fog", "snow"}
    assert shift_by_name("heavy_fog").scene_options().weather_intensity >= 0.8
    with pytest.raises(ConfigError, match="unknown shift"):
        shift_by_name("volcano")


def test_cli_reports_missing_ood_statistics_in_one_line(tmp_path, capsys) -> None:
    from perception.cli import main

    assert main(["eval-ood", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "fit-ood" in err and len(err.splitlines()) == 1
    assert main(["fit-ood", "--model", str(tmp_path), "--tpr", "1.5"]) == 2
    assert "--tpr" in capsys.readouterr().err
