"""Fitting OOD statistics on synthetic features, the save/load round trip, and the loader's errors."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from perception.errors import ConfigError, DataError, ModelError
from perception.ood.collect import FeatureSet
from perception.ood.fit import fit_stats, score_feature_set
from perception.ood.geometry import GEOMETRY_DIM
from perception.ood.metrics import auroc
from perception.ood.monitor import FLAG_MIN_SCORE, FRAME_SCORES, OodMonitor, detector_scores_from_logits
from perception.ood.scores import DETECTION_SCORES
from perception.ood.stats import META_FILE, STATS_FILE, engine_family, file_sha256, load_stats, save_stats

LIDAR = 4  # the synthetic embedding's LiDAR part (2 BEV channels, mean and max)

CLASSES = ("Car", "Pedestrian", "Cyclist")
DIM, EMB = 16, 36  # EMB = the embedding of a model with d_model DIM and 2 BEV channels


def synthetic_set(rng: np.random.Generator, frames: int, per_frame: int = 6, shift: float = 0.0,
                  unknown: bool = False) -> FeatureSet:
    """Detections around three class means (or, with ``unknown``, around a point unlike all of them)."""
    means = np.zeros((3, DIM))
    means[0, 0], means[1, 1], means[2, 2] = 8.0, 8.0, 8.0
    n = frames * per_frame
    cls = rng.integers(0, 3, n)
    centre = np.full((n, DIM), 0.0) if unknown else means[cls]
    if unknown:
        centre[:, 3] = 8.0
    feats = centre + rng.normal(size=(n, DIM))
    logits = np.where(np.eye(3)[cls] > 0, 3.0, -3.0) + rng.normal(scale=0.5, size=(n, 3))
    if unknown:
        logits = rng.normal(-2.0, 0.5, size=(n, 3))
    matched = np.array(["Animal" if unknown else CLASSES[c] for c in cls], dtype=object)
    emb = rng.normal(size=(frames, EMB)) + shift
    # point geometry: each class its own shape and spread; an unknown object's points unlike its class's
    geo = (np.arange(3)[cls, None] + 1.0) * np.linspace(0.5, 1.5, GEOMETRY_DIM)
    geo = geo + rng.normal(size=(n, GEOMETRY_DIM)) * (0.2 + 0.2 * cls[:, None]) + (3.0 if unknown else 0.0)
    return FeatureSet(feats.astype(np.float32), logits.astype(np.float32), rng.uniform(0.2, 0.9, n),
                      np.repeat(np.arange(frames), per_frame), matched, emb.astype(np.float32),
                      [f"f{i}" for i in range(frames)], geo.astype(np.float32))


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    stats = fit_stats(synthetic_set(rng, 80), synthetic_set(rng, 40), CLASSES, min_score=0.1,
                      meta={"model": "synthetic", "weights_sha256": "0" * 64}, lidar_dim=LIDAR)
    return stats


def test_fit_sets_thresholds_at_95_tpr_and_separates_ood(fitted) -> None:
    rng = np.random.default_rng(1)
    monitor = OodMonitor(fitted)
    val = synthetic_set(rng, 200)
    det, frame = score_feature_set(monitor, val)
    for name, t in fitted.thresholds["detection"].items():
        assert 0.85 < np.mean(det[name] <= t) < 1.0, name  # ~95 % of fresh ID detections kept
    assert set(fitted.thresholds["frame"]) == set(FRAME_SCORES)
    ood_det, _ = score_feature_set(monitor, synthetic_set(rng, 40, unknown=True))
    assert set(det) == set(DETECTION_SCORES)
    for name in DETECTION_SCORES:
        assert auroc(det[name], ood_det[name]) > 0.95, name
    _, shifted = score_feature_set(monitor, synthetic_set(rng, 60, shift=3.0))
    assert auroc(frame["embedding"], shifted["embedding"]) > 0.95
    assert auroc(frame["frame"], shifted["frame"]) > 0.95


def test_round_trip_gives_identical_scores(fitted, tmp_path: Path) -> None:
    save_stats(fitted, tmp_path)
    loaded = load_stats(tmp_path)
    assert loaded.thresholds == fitted.thresholds
    assert loaded.classes == CLASSES and loaded.meta["model"] == "synthetic"
    fs = synthetic_set(np.random.default_rng(2), 5)
    a = OodMonitor(fitted).score(fs.features, fs.embeddings[0], fs.logits, geometry=fs.geometry)
    b = OodMonitor(loaded).score(fs.features, fs.embeddings[0], fs.logits, geometry=fs.geometry)
    assert "energy_geometry" in b.detection
    for name in a.detection:
        assert np.allclose(a.detection[name], b.detection[name])
    assert a.frame == pytest.approx(b.frame)
    assert b.frame_flag("frame") == (b.frame["frame"] > loaded.thresholds["frame"]["frame"])


def test_frames_without_camera_are_scored_on_the_lidar_part(fitted, tmp_path: Path) -> None:
    """A blank image moves the image half of the embedding: flagged as a full frame, in distribution on its
    LiDAR half; a LiDAR-side shift (weather) is still caught without the camera."""
    rng = np.random.default_rng(5)
    save_stats(fitted, tmp_path)
    monitor = OodMonitor(load_stats(tmp_path))  # the LiDAR-part models survive the round trip
    assert monitor.stats.lidar is not None and monitor.stats.lidar.dim == LIDAR
    assert set(monitor.stats.thresholds["frame_lidar"]) == {"frame", "embedding"}
    no_camera = synthetic_set(rng, 100)
    no_camera.embeddings[:, LIDAR:] = 6.0  # what pooling a blank image gives: far from every real image
    _, full = score_feature_set(monitor, no_camera)
    _, lidar = score_feature_set(monitor, no_camera, camera=False)
    t_full, t_lidar = monitor.stats.thresholds["frame"], monitor.stats.thresholds["frame_lidar"]
    for name in ("frame", "embedding"):
        assert np.mean(full[name] > t_full[name]) > 0.95, name
        assert np.mean(lidar[name] > t_lidar[name]) < 0.2, name
    weather = synthetic_set(rng, 100)
    weather.embeddings[:, :LIDAR] += 3.0
    weather.embeddings[:, LIDAR:] = 6.0
    _, shifted = score_feature_set(monitor, weather, camera=False)
    assert auroc(lidar["frame"], shifted["frame"]) > 0.95
    res = monitor.score(no_camera.features[:6], no_camera.embeddings[0], no_camera.logits[:6], camera=False)
    assert res.lidar_only and res.thresholds["frame"]["frame"] == t_lidar["frame"]
    assert res.thresholds["frame"]["mean_mahalanobis"] == t_full["mean_mahalanobis"]


def test_frame_without_detections_takes_the_training_fill(fitted) -> None:
    monitor = OodMonitor(fitted)
    res = monitor.score(np.zeros((0, DIM)), np.zeros(EMB), np.zeros((0, 3)))
    assert all(len(v) == 0 for v in res.detection.values())
    assert res.frame["mean_mahalanobis"] == fitted.frame_norm["mean_mahalanobis"][0]
    desc = monitor.frame_descriptor(np.zeros(EMB), np.zeros((0, DIM)), res.detection)
    assert np.allclose(desc[EMB:-1], fitted.descriptor_fill[EMB:-1]) and desc[-1] == 0.0
    assert res.frame["frame"] == pytest.approx(fitted.descriptor.distances(desc[None])[0, 0])


def test_frame_score_rises_when_detections_are_fewer_even_if_typical(fitted) -> None:
    """Two-sided: a frame with 1 ordinary detection instead of ~6 is unusual as a whole."""
    rng = np.random.default_rng(4)
    monitor = OodMonitor(fitted)
    _, normal = score_feature_set(monitor, synthetic_set(rng, 60, per_frame=6))
    _, sparse = score_feature_set(monitor, synthetic_set(rng, 60, per_frame=1))
    assert auroc(normal["frame"], sparse["frame"]) > 0.95


def test_missing_corrupt_or_mismatched_stats_raise_model_error(fitted, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="fit-ood"):
        load_stats(tmp_path / "nothing")
    save_stats(fitted, tmp_path)
    npz = tmp_path / STATS_FILE
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256") as err:
        load_stats(tmp_path)
    assert err.value.where == str(npz)
    save_stats(fitted, tmp_path)
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        load_stats(tmp_path)
    save_stats(fitted, tmp_path)
    doc = json.loads((tmp_path / META_FILE).read_text())
    doc["feature_dim"] = DIM + 1  # the arrays no longer match what the metadata promises
    (tmp_path / META_FILE).write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="shape"):
        load_stats(tmp_path)


def test_stats_for_other_weights_or_classes_are_refused(fitted, tmp_path: Path) -> None:
    from perception.detector.config import DetectorConfig

    fitted = copy.deepcopy(fitted)
    model = tmp_path / "model"
    model.mkdir()
    cfg = DetectorConfig()
    cfg.model.d_model, cfg.model.bev_channels = DIM, (EMB - 2 * DIM) // 2
    assert cfg.model.embedding_dim == EMB
    cfg.to_yaml(model / "config.yaml")
    (model / "weights.safetensors").write_bytes(b"weights v1")
    fitted.meta["weights_sha256"] = file_sha256(model / "weights.safetensors")
    save_stats(fitted, model / "ood")
    assert OodMonitor.load(model).feature_dim == DIM
    (model / "weights.safetensors").write_bytes(b"weights v2")  # retrained: the stats are stale
    with pytest.raises(ModelError, match="other weights"):
        OodMonitor.load(model)
    fitted.meta["weights_sha256"] = file_sha256(model / "weights.safetensors")
    cfg.model.classes = ["Car", "Pedestrian"]
    cfg.to_yaml(model / "config.yaml")
    save_stats(fitted, model / "ood")
    with pytest.raises(ModelError, match="classes"):
        OodMonitor.load(model)


def test_detections_below_the_score_floor_are_scored_but_not_flagged(fitted) -> None:
    """Two detections unlike every class; only the one the detector is sure of (score >= 0.3) is flagged."""
    assert FLAG_MIN_SCORE == 0.3
    rng = np.random.default_rng(5)
    feats = np.full((2, DIM), 50.0)  # far from every class mean: an extreme OOD score
    logits = np.array([[-3.0, -4.0, -5.0], [2.0, -4.0, -5.0]])  # detector scores 0.047 and 0.88
    geometry = rng.normal(size=(2, GEOMETRY_DIM)) + 30.0
    emb = np.zeros(EMB)
    res = OodMonitor(fitted).score(feats, emb, logits, geometry=geometry)
    np.testing.assert_allclose(res.detector_scores, 1.0 / (1.0 + np.exp(-logits.max(axis=1))))
    for name in ("mahalanobis", "energy_geometry"):
        assert (res.detection[name] > fitted.thresholds["detection"][name]).all(), name  # both scored extreme
        assert list(res.detection_flags(name)) == [False, True], name
    assert list(res.flaggable()) == [False, True]
    # the floor only decides the flags: scores (and so AUROC) do not depend on it
    none = OodMonitor(fitted, flag_min_score=0.0).score(feats, emb, logits, geometry=geometry)
    assert list(none.detection_flags("mahalanobis")) == [True, True]
    for name in res.detection:
        np.testing.assert_array_equal(res.detection[name], none.detection[name])
    assert res.frame == none.frame
    strict = OodMonitor(fitted, flag_min_score=0.95).score(feats, emb, logits)
    assert list(strict.detection_flags("mahalanobis")) == [False, False]
    # the detector's own scores, when given, decide; without logits or scores there is no floor
    given = OodMonitor(fitted).score(feats, emb, detector_scores=np.array([0.5, 0.1]))
    assert list(given.detection_flags("mahalanobis")) == [True, False]
    assert list(OodMonitor(fitted).score(feats, emb).detection_flags("mahalanobis")) == [True, True]
    assert OodMonitor(fitted).score(np.zeros((0, DIM)), emb, np.zeros((0, 3))).detection_flags("mahalanobis").shape \
        == (0,)


def test_score_result_takes_the_floor_from_each_detection_score(fitted) -> None:
    from perception.detector.result import DetectionResult
    from perception.frame import Box3D, Detection

    dets = [Detection(box=Box3D("Car", np.zeros(3), np.ones(3), 0.0), score=s, probability=s,
                      covariance=np.eye(7), feature=np.full(DIM, 50.0, np.float32),
                      logits=np.array([2.0, -4.0, -5.0], np.float32)) for s in (0.29, 0.31)]
    res = OodMonitor(fitted).score_result(DetectionResult(dets, frame_embedding=np.zeros(EMB, np.float32)))
    assert list(res.detection_flags("mahalanobis")) == [False, True]  # Detection.score, not the logits


def test_score_floor_and_detector_scores_are_checked(fitted) -> None:
    with pytest.raises(ConfigError, match="flag_min_score"):
        OodMonitor(fitted, flag_min_score=1.5)
    with pytest.raises(DataError, match="detector_scores"):
        OodMonitor(fitted).score(np.zeros((2, DIM)), None, detector_scores=np.array([0.5]))
    np.testing.assert_allclose(detector_scores_from_logits(np.array([[-800.0, -900.0], [0.0, -1.0]])), [0.0, 0.5])


def test_monitor_rejects_bad_inputs(fitted) -> None:
    monitor = OodMonitor(fitted)
    with pytest.raises(DataError):
        monitor.score(np.zeros((2, DIM + 1)), None)
    with pytest.raises(DataError):
        monitor.score(np.full((1, DIM), np.nan), None)
    with pytest.raises(DataError):
        monitor.score(np.zeros((1, DIM)), np.zeros(EMB + 3))
    with pytest.raises(ConfigError):
        fitted.threshold("detection", "nonsense")


def test_fit_refuses_when_no_detection_matches_a_known_class() -> None:
    rng = np.random.default_rng(3)
    unknown = synthetic_set(rng, 10, unknown=True)
    with pytest.raises(DataError, match="trained"):
        fit_stats(unknown, unknown, CLASSES)


def test_statistics_are_per_engine_family(tmp_path):
    from perception.ood.stats import REFERENCE_ENGINE, stats_dir

    for fp32 in (None, "", "torch", "onnxruntime", "onnxruntime-cuda"):
        assert engine_family(fp32) == REFERENCE_ENGINE
        assert stats_dir(tmp_path, fp32) == tmp_path / "ood"
    assert engine_family("onnxruntime-int8") == "onnxruntime-int8"
    assert stats_dir(tmp_path, "onnxruntime-int8") == tmp_path / "ood" / "onnxruntime-int8"
    for bad in ("auto", "../x", "a/b"):
        with pytest.raises(ConfigError):
            stats_dir(tmp_path, bad)


def test_the_shipped_default_engine_has_its_own_fitted_statistics():
    from perception.engines.registry import default_backend

    model = Path(__file__).resolve().parents[1] / "models" / "fusion_default"
    if not (model / "weights.safetensors").is_file():
        pytest.skip("models/fusion_default not present")
    backend = default_backend(model)
    monitor = OodMonitor.load(model, backend)  # ModelError if missing, corrupt or for other weights
    assert monitor.stats.meta.get("engine", "reference") == engine_family(backend)


def test_shipped_statistics_score_a_camera_less_frame_on_its_lidar_part():
    """The real detector without its camera pools a blank image: as a full frame that is far out of distribution,
    scored on the embedding's LiDAR part (what the monitor does for a result flagged camera_missing) it is not."""
    from perception.detector.api import FusionDetector
    from perception.engines.registry import default_backend
    from perception.rig import Rig
    from perception.sim import iter_split

    repo = Path(__file__).resolve().parents[1]
    model = repo / "models" / "fusion_default"
    if not (model / "weights.safetensors").is_file():
        pytest.skip("models/fusion_default not present")
    backend = default_backend(model)
    detector = FusionDetector.load(model, backend=backend, num_threads=1)
    monitor = OodMonitor.load(model, backend)
    assert monitor.stats.lidar is not None, "shipped statistics lack the LiDAR-part frame models"
    full, lidar = [], []
    for frame in iter_split(Rig.from_yaml(repo / "calibration" / "sim_default.yaml"), "val", 3, seed=11):
        result = detector(dataclasses.replace(frame, image=None))
        assert not result.camera_used
        res = monitor.score_result(result)
        assert res.lidar_only
        lidar.append(res.frame["frame"] / res.thresholds["frame"]["frame"])
        as_full = monitor.score(np.stack([d.feature for d in result.detections]), result.frame_embedding,
                                np.stack([d.logits for d in result.detections]))
        full.append(as_full.frame["frame"] / as_full.thresholds["frame"]["frame"])
    assert min(full) > 1.5, full  # every camera-less frame far over the full-frame threshold
    assert np.mean(lidar) < 1.0, lidar  # on the LiDAR part, typical
