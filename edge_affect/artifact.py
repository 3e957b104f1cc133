"""Self-describing artifacts: the one metadata dict every checkpoint, ONNX file and engine sidecar carries.

Layout (JSON, stored under ``schema.METADATA_KEY``)::

    {
      "schema_version": 1,
      "edge_affect_version": "0.1.0",
      "labels": {"expressions": [...8], "aus": [...12], "va": ["valence", "arousal"]},
      "preprocess": {"input_size": 112, "color": "rgb", "mean": [...], "std": [...], "interpolation": "area"},
      "au_thresholds": [0.5, ... 12],
      "model_name": "tiny",
      "model_config": {...ModelConfig.to_dict()},
      "checkpoint_sha256": "...",
      "precision": "fp32" | "fp16" | "int8",
      "inputs": {"image": ["N", 3, S, S]},
      "outputs": {"va": ["N", 2], "expr": ["N", 8], "au": ["N", 12]}
    }

The runtime reads facts only from here, never from a file name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_affect import __version__
from edge_affect.schema import (
    AUS,
    INPUT_NAME,
    NUM_AU,
    OUTPUT_DIMS,
    SCHEMA_VERSION,
    LabelSchema,
    Preprocess,
)


@dataclass
class ArtifactMeta:
    """Metadata shared by all artifacts of one model."""

    preprocess: Preprocess
    labels: LabelSchema = field(default_factory=LabelSchema)
    au_thresholds: list[float] = field(default_factory=lambda: [0.5] * NUM_AU)
    model_name: str = ""
    model_config: dict[str, Any] = field(default_factory=dict)
    checkpoint_sha256: str = ""
    precision: str = "fp32"
    edge_affect_version: str = __version__
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.au_thresholds) != len(self.labels.aus):
            raise ValueError(
                f"au_thresholds has {len(self.au_thresholds)} values, expected {len(self.labels.aus)} (one per AU)"
            )
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"precision {self.precision!r} is not fp32, fp16 or int8")

    def to_dict(self) -> dict[str, Any]:
        s = self.preprocess.input_size
        return {
            "schema_version": self.schema_version,
            "edge_affect_version": self.edge_affect_version,
            "labels": self.labels.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "au_thresholds": [float(t) for t in self.au_thresholds],
            "model_name": self.model_name,
            "model_config": self.model_config,
            "checkpoint_sha256": self.checkpoint_sha256,
            "precision": self.precision,
            "inputs": {INPUT_NAME: ["N", 3, s, s]},
            "outputs": {k: ["N", v] for k, v in OUTPUT_DIMS.items()},
            "extra": self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "artifact") -> ArtifactMeta:
        try:
            version = int(d.get("schema_version", 0))
            if version != SCHEMA_VERSION:
                raise ValueError(f"metadata schema_version {version}, this edge-affect reads {SCHEMA_VERSION}")
            labels = LabelSchema.from_dict(d["labels"])
            if len(labels.aus) != NUM_AU or list(labels.aus) != list(AUS):
                raise ValueError(f"AU list {labels.aus} differs from {list(AUS)}")
            return cls(
                preprocess=Preprocess.from_dict(d["preprocess"]),
                labels=labels,
                au_thresholds=[float(t) for t in d["au_thresholds"]],
                model_name=str(d.get("model_name", "")),
                model_config=dict(d.get("model_config", {})),
                checkpoint_sha256=str(d.get("checkpoint_sha256", "")),
                precision=str(d.get("precision", "fp32")),
                edge_affect_version=str(d.get("edge_affect_version", "")),
                schema_version=version,
                extra=dict(d.get("extra", {})),
            )
        except KeyError as e:
            raise ValueError(f"{where}: metadata lacks key {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad edge-affect metadata: {e}") from None

    @classmethod
    def from_json(cls, text: str, where: str = "artifact") -> ArtifactMeta:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: edge-affect metadata is not valid JSON: {e}") from None
        return cls.from_dict(d, where)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder + rename (never half-written)."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
    try:
        # mkstemp creates 0600; artifacts are shared (Triton, other users): 0666 minus the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
