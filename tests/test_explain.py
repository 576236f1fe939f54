"""Attention explanations rendered as images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception.detector.result import DetectionResult
from perception.frame import Box3D, Detection, Frame
from perception.rig import Rig
from perception.trust.explain import render_bev_attention, render_image_attention

REPO = Path(__file__).resolve().parents[1]


def _detection() -> Detection:
    return Detection(Box3D("Car", [15.0, 0.0, -0.9], [3.9, 1.6, 1.5], 0.0), 0.9, 0.8, np.eye(7) * 0.01)


def test_image_attention_overlay_and_boxes():
    rig = Rig.from_yaml(REPO / "calibration" / "sim_default.yaml")
    image = np.full((rig.height, rig.width, 3), 60, np.uint8)
    att = np.zeros((12, 40))
    att[6, 20] = 1.0  # attention in the image centre
    result = DetectionResult([_detection()], image_attention=att)
    out = render_image_attention(Frame(np.zeros((0, 4)), image, rig), result)
    assert out.shape == image.shape and out.dtype == np.uint8
    centre = out[int(6.5 * rig.height / 12), int(20.5 * rig.width / 40)]
    assert not np.array_equal(centre, image[0, 0])  # heat blended in where attention is
    assert np.array_equal(out[5, 5], image[5, 5])  # untouched far from attention and boxes
    # the car box is drawn in the Car colour around its projection
    uv, _, _ = rig.project(np.array([[15.0, 0.0, -0.9]]))
    u, v = uv[0].astype(int)
    window = out[v - 60:v + 60, u - 80:u + 80].reshape(-1, 3)
    assert (window == (0, 200, 255)).all(axis=1).any()
    no_cam = render_image_attention(Frame(np.zeros((0, 4)), None, rig), result)
    assert no_cam.shape == image.shape


def test_bev_attention_image():
    att = np.zeros((124, 108))
    att[62, 30] = 1.0
    out = render_bev_attention(DetectionResult([_detection()], bev_attention=att))
    assert out.shape == (108 * 4, 124 * 4, 3)
    assert out.reshape(-1, 3).max() > 0
