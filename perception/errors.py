"""One exception family for the project; every error names the file/topic/field at fault."""

from __future__ import annotations


class PerceptionError(Exception):
    """Base class of every error raised on purpose by the project.

    ``where`` names the file, topic, line or field that was wrong, so a CLI can print
    one line and a node can report it on ``/diagnostics``.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class CalibrationError(PerceptionError):
    """A sensor rig / calibration file is missing, malformed or inconsistent."""


class DataError(PerceptionError):
    """A data file, bag or message is missing, truncated or malformed."""


class ModelError(PerceptionError):
    """Weights or a model config are missing, corrupt or do not match."""


class EngineError(PerceptionError):
    """A runtime engine (ONNX Runtime, TensorRT) cannot be built, loaded or run."""


class ConfigError(PerceptionError):
    """A YAML config has a missing key, a wrong type or a value out of range."""
