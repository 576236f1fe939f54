"""Cache of built TensorRT engines, keyed so that a node never rebuilds (or loads a wrong engine) at start-up.

A serialized engine only works with the exact ONNX graph, TensorRT version and GPU it was built for. The key
holds all three (plus precision and, for INT8, the calibration cache), an entry is ``<digest>.engine`` with a
``<digest>.json`` sidecar repeating the key and the engine's sha256 and size. :meth:`EngineCache.load` checks
all of it and raises :class:`CacheMiss` (an EngineError) saying what is wrong; :meth:`EngineCache.get_or_build`
rebuilds when allowed (``perception export --tensorrt``) and refuses with that message otherwise (nodes).
Pure Python: tested without TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from perception.errors import EngineError

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    precision: str  # "fp16" | "int8"
    calib_sha256: str = ""  # INT8 calibration cache the engine was built with

    def digest(self) -> str:
        """Short stable hex id of the key (file name of the cache entry)."""
        doc = json.dumps({"format": CACHE_FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()[:24]


class CacheMiss(EngineError):
    """No usable engine for a key: absent, built for another key, truncated or corrupt."""


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class EngineCache:
    """A folder of engines (``export/trt/``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def paths(self, key: EngineKey) -> tuple[Path, Path]:
        """(engine file, sidecar) of ``key``."""
        d = key.digest()
        return self.root / f"{d}.engine", self.root / f"{d}.json"

    def load(self, key: EngineKey, validate: Callable[[bytes], bool] | None = None) -> bytes:
        """The engine bytes of ``key``, checked against the sidecar; CacheMiss says why it cannot be used.

        ``validate`` (e.g. TensorRT deserialization) is a last check; returning False means corrupt.
        """
        engine, meta = self.paths(key)
        if not engine.is_file() or not meta.is_file():
            raise CacheMiss(f"no cached TensorRT engine for {key.precision} on {key.gpu_name!r} with TensorRT "
                            f"{key.trt_version}", str(engine))
        try:
            doc = json.loads(meta.read_text())
            recorded = EngineKey(**doc["key"])
            expected_sha, expected_bytes = doc["sha256"], int(doc["bytes"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CacheMiss(f"unreadable engine sidecar: {exc}", str(meta)) from exc
        if recorded != key:
            diff = [f"{k}: cached {getattr(recorded, k)!r} != wanted {getattr(key, k)!r}"
                    for k in asdict(key) if getattr(recorded, k) != getattr(key, k)]
            raise CacheMiss("cached engine was built for something else (" + "; ".join(diff) + ")", str(engine))
        data = engine.read_bytes()
        if len(data) != expected_bytes:
            raise CacheMiss(f"cached engine is truncated ({len(data)} of {expected_bytes} bytes)", str(engine))
        if hashlib.sha256(data).hexdigest() != expected_sha:
            raise CacheMiss("cached engine does not match its sha256 (corrupt)", str(engine))
        if validate is not None and not validate(data):
            raise CacheMiss("TensorRT could not deserialize the cached engine (corrupt or incompatible)", str(engine))
        return data

    def store(self, key: EngineKey, data: bytes) -> Path:
        """Write an engine and its sidecar atomically; returns the engine path."""
        if not data:
            raise EngineError("refusing to cache an empty engine", str(self.root))
        self.root.mkdir(parents=True, exist_ok=True)
        engine, meta = self.paths(key)
        _write_atomic(engine, data)
        doc = {"format": CACHE_FORMAT, "key": asdict(key), "sha256": hashlib.sha256(data).hexdigest(),
               "bytes": len(data)}
        _write_atomic(meta, (json.dumps(doc, indent=2) + "\n").encode())
        return engine

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes], allow_build: bool,
                     validate: Callable[[bytes], bool] | None = None) -> bytes:
        """Cached engine of ``key``; when unusable, rebuild it (``allow_build``) or raise the CacheMiss."""
        try:
            return self.load(key, validate)
        except CacheMiss as miss:
            if not allow_build:
                raise CacheMiss(f"{miss}; build it on this machine with `perception export --tensorrt`",
                                None) from miss
            log.warning("%s; rebuilding", miss)
        data = build()
        self.store(key, data)
        return data
