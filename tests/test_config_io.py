"""Typed config reading shared by the detector and crowd configs: errors name the file and key."""

from dataclasses import dataclass, field

import pytest

from perception.config_io import build_dataclass, read_yaml_mapping
from perception.detector.config import DetectorConfig
from perception.errors import ConfigError


@dataclass
class _Section:
    steps: int = 10
    lr: float = 1e-3
    fused: bool = True
    sizes: list = field(default_factory=lambda: [1.0, 2.0])


def test_read_yaml_mapping_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_yaml_mapping(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML"):
        read_yaml_mapping(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_yaml_mapping(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml_mapping(tmp_path / "empty.yaml") == {}


def test_build_dataclass_checks_each_value_against_its_default():
    out = build_dataclass(_Section, {"steps": 5, "lr": 1, "sizes": [3, 4]}, "f.yaml:train")
    assert out == _Section(steps=5, lr=1.0, fused=True, sizes=[3.0, 4.0]) and isinstance(out.lr, float)
    for values, key in (({"stepz": 1}, "unknown"), ({"steps": "5"}, "f.yaml:train.steps"),
                        ({"fused": "false"}, "f.yaml:train.fused"), ({"lr": True}, "f.yaml:train.lr"),
                        ({"sizes": 3.0}, "f.yaml:train.sizes")):
        with pytest.raises(ConfigError, match=key):
            build_dataclass(_Section, values, "f.yaml:train")


def test_detector_config_rejects_a_quoted_number(tmp_path):
    path = tmp_path / "det.yaml"
    path.write_text("model:\n  d_model: '64'\n")
    with pytest.raises(ConfigError, match=r"det.yaml:model.d_model"):
        DetectorConfig.from_yaml(path)
