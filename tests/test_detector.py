"""Fusion detector core: pre-processing, network outputs, losses, post-processing, model files, API."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from perception.detector.api import FusionDetector, engine_inputs
from perception.detector.checkpoint import WEIGHTS_FILE, load_model, save_model, write_manifest
from perception.detector.config import DetectorConfig, ModelConfig
from perception.detector.data import Sample, augment
from perception.detector.inputs import CAMERA_INVALID, CAMERA_MISSING, LIDAR_EMPTY, POINTS_DROPPED, prepare_frame
from perception.detector.loss import detection_loss, heatmap_target
from perception.detector.model import FusionNet
from perception.detector.postprocess import circle_nms
from perception.detector.voxelize import voxelize
from perception.errors import CalibrationError, ConfigError, ModelError
from perception.frame import Box3D, Frame
from perception.ood.geometry import GEOMETRY_DIM
from perception.rig import Rig

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cfg() -> DetectorConfig:
    return DetectorConfig.from_yaml(REPO / "models" / "fusion_default.yaml")


@pytest.fixture(scope="module")
def rig() -> Rig:
    return Rig.from_yaml(REPO / "calibration" / "sim_default.yaml")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, cfg) -> Path:
    """A freshly initialised model of the shipped architecture (the API must not depend on training)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "fusion"
    save_model(FusionNet(cfg.model), cfg, path)
    write_manifest(path)
    return path


def scene_points(rng: np.random.Generator) -> tuple[np.ndarray, list[Box3D]]:
    """A ground plane plus two box-shaped objects, as a LiDAR would see them."""
    ground = np.c_[rng.uniform(0, 60, 20000), rng.uniform(-30, 30, 20000), np.full(20000, -1.73),
                   rng.uniform(0, 0.3, 20000)]
    boxes = [Box3D("Car", [15.0, 2.0, -0.95], [3.9, 1.6, 1.56], 0.3),
             Box3D("Pedestrian", [9.0, -3.0, -0.87], [0.8, 0.6, 1.73], 0.0)]
    objs = []
    for b in boxes:
        local = rng.uniform(-0.5, 0.5, (800, 3)) * b.size
        c, s = math.cos(b.yaw), math.sin(b.yaw)
        xy = local[:, :2] @ np.array([[c, s], [-s, c]])
        objs.append(np.c_[xy + b.center[:2], local[:, 2] + b.center[2], np.full(800, 0.5)])
    return np.concatenate([ground, *objs]).astype(np.float32), boxes


def test_voxelize_counts_and_drops(cfg):
    rng = np.random.default_rng(0)
    pts, _ = scene_points(rng)
    bad = np.array([[np.nan, 0, 0, 0], [1, np.inf, 0, 0], [-5.0, 0, 0, 0], [10, 0, 5.0, 0]], np.float32)
    p = voxelize(np.concatenate([pts, bad]), cfg.model)
    assert p.dropped_nonfinite == 2
    assert p.dropped_out_of_range == 2
    assert p.features.shape[1:] == (cfg.model.max_points_per_pillar, 9)
    assert p.num_points.sum() + p.dropped_overflow == len(pts)
    nx, ny = cfg.model.grid_size
    assert (p.coords[:, 0] < ny).all() and (p.coords[:, 1] < nx).all()
    # pillar-centre offsets lie within half a pillar
    valid = np.arange(p.features.shape[1])[None] < p.num_points[:, None]
    assert np.abs(p.features[..., 7:9][valid]).max() <= cfg.model.pillar_size[0] / 2 + 1e-4


def test_empty_cloud_gives_no_pillars(cfg):
    p = voxelize(np.zeros((0, 4), np.float32), cfg.model)
    assert p.features.shape[0] == 0


def test_network_outputs_and_camera_masking(cfg):
    torch.manual_seed(0)
    net = FusionNet(cfg.model).eval()
    rng = np.random.default_rng(1)
    pts, _ = scene_points(rng)
    p = voxelize(pts, cfg.model)
    args = dict(pillar_features=torch.from_numpy(p.features), num_points=torch.from_numpy(p.num_points),
                coords=torch.from_numpy(np.c_[np.zeros(len(p.coords), np.int64), p.coords]),
                image=torch.rand(1, 3, *cfg.model.image_size),
                lidar2img=torch.tensor([[[-29.0, 0.0, 0.0, 0.0], [0.0, -29.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]])
                @ torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0, 0, 0, 1.0]]),
                camera_valid=torch.ones(1))
    with torch.no_grad():
        out = net(**args)
        q = cfg.model.num_queries
        assert out.logits.shape == (2, 1, q, 3) and out.boxes.shape == (2, 1, q, 8)
        assert out.attn_image.shape[-1] == cfg.model.image_feature_shape[0] * cfg.model.image_feature_shape[1]
        # every attention row is a distribution over BEV window + image cells
        total = out.attn_bev[1].sum(-1) + out.attn_image.sum(-1)
        assert torch.allclose(total, torch.ones_like(total), atol=1e-4)
        assert torch.allclose(out.attn_bev[0].sum(-1), torch.ones_like(out.attn_bev[0].sum(-1)), atol=1e-4)
        args["camera_valid"] = torch.zeros(1)
        no_cam = net(**args)
    assert float(no_cam.camera_share.max()) < 1e-3
    assert torch.isfinite(no_cam.boxes).all()


def test_training_steps_reduce_loss(cfg):
    torch.manual_seed(0)
    net = FusionNet(cfg.model).train()
    rng = np.random.default_rng(2)
    pts, boxes = scene_points(rng)
    p = voxelize(pts, cfg.model)
    gt = torch.tensor(np.stack([b.as_array() for b in boxes]), dtype=torch.float32)
    labels = torch.tensor([0, 1])
    heat = torch.from_numpy(heatmap_target(gt.numpy(), labels.numpy(), cfg.model))[None]
    args = dict(pillar_features=torch.from_numpy(p.features), num_points=torch.from_numpy(p.num_points),
                coords=torch.from_numpy(np.c_[np.zeros(len(p.coords), np.int64), p.coords]),
                image=torch.zeros(1, 3, *cfg.model.image_size), lidar2img=torch.zeros(1, 3, 4),
                camera_valid=torch.zeros(1))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    losses = []
    for _ in range(8):
        loss = detection_loss(net(**args), heat, [gt], [labels], cfg.model)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_heatmap_target_peaks(cfg):
    boxes = np.array([[20.0, 0.0, -1.0, 4.0, 1.7, 1.5, 0.0]], np.float32)
    t = heatmap_target(boxes, np.array([0]), cfg.model)
    assert t[0].max() == 1.0 and t[1:].max() == 0.0
    iy, ix = np.unravel_index(t[0].argmax(), t[0].shape)
    cell = 69.12 / cfg.model.bev_shape[1]
    assert abs((ix + 0.5) * cell - 20.0) < cell and abs(-39.68 + (iy + 0.5) * cell) < cell


def test_augment_keeps_camera_geometry(cfg, rig):
    """After flip/rotate/scale, a box centre still projects where it did in the (mirrored) image."""
    from perception.detector.inputs import lidar_to_feature_matrix

    p = lidar_to_feature_matrix(rig, cfg.model)
    boxes = np.array([[20.0, 3.0, -1.0, 4.0, 1.7, 1.5, 0.2]], np.float32)
    image = np.broadcast_to(np.arange(320, dtype=np.uint8)[None, :, None], (96, 320, 3)).copy()  # flip shows
    s = Sample(np.zeros((0, 4), np.float32), image, p, boxes, np.array([0]))

    def proj(m: np.ndarray, xyz: np.ndarray) -> np.ndarray:
        h = m @ np.r_[xyz, 1.0]
        return h[:2] / h[2]

    before = proj(p, boxes[0, :3])
    heights = []
    for seed in range(12):
        a = augment(s, np.random.default_rng(seed), cfg.model, z_shift_std=0.0 if seed < 6 else 0.3)
        after = proj(a.lidar2img.astype(np.float64), a.boxes[0, :3].astype(np.float64))
        flipped = not np.array_equal(a.image, s.image)
        expect = np.array([cfg.model.image_size[1] / 8 - before[0], before[1]]) if flipped else before
        assert np.allclose(after, expect, atol=1e-3)
        heights.append(float(a.boxes[0, 2]))
    # without a vertical shift the box height only scales (+-5 %); with it, the scene moves up and down
    assert np.allclose(heights[:6], -1.0, atol=0.06)
    assert np.ptp(heights[6:]) > 0.2


def test_circle_nms():
    centres = np.array([[0.0, 0.0], [0.5, 0.0], [5.0, 0.0]])
    keep = circle_nms(centres, np.array([0.9, 0.95, 0.3]), radius=1.0)
    assert keep.tolist() == [1, 2]


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  pillar_size: [0.33, 0.32]\n")
    with pytest.raises(ConfigError, match="pillar_size"):
        DetectorConfig.from_yaml(bad)
    bad.write_text("model:\n  num_heds: 4\n")
    with pytest.raises(ConfigError, match="num_heds"):
        DetectorConfig.from_yaml(bad)


def test_corrupt_and_mismatched_weights(tmp_path, cfg, model_dir):
    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(model_dir, corrupt)
    data = (corrupt / WEIGHTS_FILE).read_bytes()
    (corrupt / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="sha256|corrupt"):
        load_model(corrupt)
    (corrupt / "manifest.json").unlink()
    with pytest.raises(ModelError, match="corrupt weights"):
        load_model(corrupt)
    other = tmp_path / "other"
    other_cfg = DetectorConfig.from_dict({"model": {"d_model": 32, "num_heads": 4}})
    save_model(FusionNet(other_cfg.model), other_cfg, other)
    shutil.copy(model_dir / "config.yaml", other / "config.yaml")
    with pytest.raises(ModelError, match="another config"):
        load_model(other)
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nope")


def test_api_degraded_inputs(model_dir, rig):
    det = FusionDetector.load(model_dir)
    rng = np.random.default_rng(3)
    pts, _ = scene_points(rng)
    image = rng.integers(0, 255, (rig.height, rig.width, 3), dtype=np.uint8)
    ok = det(Frame(pts, image, rig, 1))
    assert ok.degraded == [] and set(ok.timings_ms) == {"voxelize", "network", "postprocess"}
    for d in ok.detections:
        assert d.covariance.shape == (7, 7) and np.all(np.diag(d.covariance) > 0)
        assert 0.0 <= d.probability <= 1.0
        assert abs(sum(d.modality_share.values()) - 1.0) < 1e-5
        assert d.geometry.shape == (GEOMETRY_DIM,) and np.isfinite(d.geometry).all()
    no_cam = det(Frame(pts, None, rig, 1))
    assert CAMERA_MISSING in no_cam.degraded
    assert all(d.modality_share["camera"] < 1e-3 for d in no_cam.detections)
    wrong = det(Frame(pts, np.zeros((100, 100, 3), np.uint8), rig, 1))
    assert CAMERA_INVALID in wrong.degraded
    empty = det(Frame(np.zeros((0, 4), np.float32), image, rig, 1))
    assert LIDAR_EMPTY in empty.degraded and empty.detections == []
    nan = pts.copy()
    nan[:100, 0] = np.nan
    res = det(Frame(nan, image, rig, 1))
    assert POINTS_DROPPED in res.degraded and res.dropped_points == 100
    assert all(np.isfinite(d.geometry).all() for d in res.detections)
    with pytest.raises(CalibrationError, match="rig"):
        det(Frame(pts, image, None, 1))


def test_engine_inputs_shapes(cfg, rig):
    rng = np.random.default_rng(4)
    pts, _ = scene_points(rng)
    inp = engine_inputs(prepare_frame(Frame(pts, None, rig, 0), cfg.model))
    assert inp["coords"].shape[1] == 3 and inp["image"].shape == (1, 3, *cfg.model.image_size)
    assert inp["camera_valid"].tolist() == [0.0]


def test_model_config_roundtrip(tmp_path, cfg):
    cfg.to_yaml(tmp_path / "c.yaml")
    again = DetectorConfig.from_yaml(tmp_path / "c.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert isinstance(again.model, ModelConfig)


def test_model_card_states_the_stage_two_recipe(tmp_path):
    """A stage-2 card says where it started from and what robustness training it had; a stage-1 card does not."""
    from perception.detector.model_card import write_model_card

    metrics = {"ap3d": {"Car": 80.0}, "apbev": {"Car": 85.0}, "data": "sim:test", "frames": 3}
    state = {"steps": 10, "epochs_done": 0.1, "wall_seconds": 60.0}
    stage2 = DetectorConfig.from_yaml(REPO / "models" / "fusion_default.yaml")
    text = write_model_card(tmp_path, stage2, state, metrics, {}).read_text()
    assert "Stage 2: starts from the weights of `models/fusion_sim`" in text
    assert "50% of the samples under one random corruption" in text
    stage1 = DetectorConfig.from_yaml(REPO / "models" / "fusion_sim.yaml")
    text = write_model_card(tmp_path, stage1, state, metrics, {}).read_text()
    assert "Stage 2" not in text and "corruption" not in text and "Simulated drives only" in text


def test_model_card_keeps_its_hand_written_notes_across_regenerations(tmp_path):
    """What was measured after training (card_notes.md) is appended to every regenerated card, unchanged."""
    from perception.detector.model_card import CARD_NOTES_FILE, write_model_card

    metrics = {"ap3d": {"Car": 80.0}, "apbev": {"Car": 85.0}, "data": "sim:test", "frames": 3}
    state = {"steps": 10, "epochs_done": 0.1, "wall_seconds": 60.0}
    cfg = DetectorConfig.from_yaml(REPO / "models" / "fusion_default.yaml")
    assert "## Ablation" not in write_model_card(tmp_path, cfg, state, metrics, {}).read_text()
    (tmp_path / CARD_NOTES_FILE).write_text("## Ablation\n| a | b |\n")
    for _ in range(2):
        text = write_model_card(tmp_path, cfg, state, metrics, {}).read_text()
        assert text.endswith("\n## Ablation\n| a | b |\n") and text.count("## Ablation") == 1
    shipped = (REPO / "models" / "fusion_default" / "MODEL_CARD.md").read_text()
    assert shipped.endswith((REPO / "models" / "fusion_default" / CARD_NOTES_FILE).read_text())
