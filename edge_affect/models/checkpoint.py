"""Checkpoints that describe themselves: config, label schema and preprocessing travel with the weights.

Two formats, told apart by their first bytes (never by file name):
- ``.pt`` (torch zip): ``{"format", "meta", "state_dict", "train_state"}``, loaded with ``weights_only=True``.
- safetensors: weights only (no pickle), the metadata JSON in the safetensors header under ``edge_affect``.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import torch

from edge_affect.artifact import ArtifactMeta, atomic_write_bytes, sha256_file
from edge_affect.config import ModelConfig, from_dict
from edge_affect.schema import AUS, EXPRESSIONS, METADATA_KEY, NUM_AU, LabelSchema

log = logging.getLogger(__name__)

FORMAT = "edge-affect-checkpoint/1"


def model_meta(model, au_thresholds: list[float] | None = None, extra: dict[str, Any] | None = None) -> ArtifactMeta:
    """The ``ArtifactMeta`` describing ``model`` (precision fp32, no checkpoint hash yet)."""
    return ArtifactMeta(
        preprocess=model.preprocess,
        labels=LabelSchema(),
        au_thresholds=list(au_thresholds) if au_thresholds is not None else [0.5] * NUM_AU,
        model_name=model.model_name,
        model_config=model.config.to_dict(),
        extra=dict(extra or {}),
    )


def save_checkpoint(
    path: str | Path,
    model,
    *,
    au_thresholds: list[float] | None = None,
    extra: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a ``.pt`` checkpoint atomically. ``state_dict`` overrides the model's (e.g. EMA weights)."""
    path = Path(path)
    meta = model_meta(model, au_thresholds, extra)
    sd = state_dict if state_dict is not None else model.state_dict()
    payload = {
        "format": FORMAT,
        "meta": meta.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in sd.items()},
        "train_state": train_state or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def save_safetensors(path: str | Path, model, *, au_thresholds=None, extra=None, state_dict=None) -> Path:
    """Weights as safetensors (no pickle) with the metadata JSON in the header."""
    from safetensors.torch import save as st_save

    meta = model_meta(model, au_thresholds, extra)
    sd = state_dict if state_dict is not None else model.state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    data = st_save(tensors, metadata={METADATA_KEY: meta.to_json(), "format": FORMAT})
    atomic_write_bytes(path, data)
    return Path(path)


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:2] == b"PK":
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise ValueError(f"checkpoint {path}: neither a torch zip nor a safetensors file (corrupt or wrong file?)")


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """Return ``(meta_dict, state_dict, train_state)`` with clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    kind = _sniff(path)
    if kind == "safetensors":
        import json

        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"checkpoint {path}: unreadable safetensors file: {e}") from None
        if METADATA_KEY not in header:
            raise ValueError(f"checkpoint {path}: safetensors header lacks '{METADATA_KEY}' metadata")
        return json.loads(header[METADATA_KEY]), sd, {}
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"checkpoint {path}: format {got!r}, expected {FORMAT!r}")
    return payload["meta"], payload["state_dict"], payload.get("train_state", {})


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the model from the checkpoint alone. Returns ``(model.eval(), ArtifactMeta)``.

    The returned meta carries the checkpoint's sha256.
    """
    from edge_affect.models.task_token import TaskTokenTransformer

    path = Path(path)
    meta_d, sd, _ = read_checkpoint(path)
    meta = ArtifactMeta.from_dict(meta_d, where=str(path))
    if list(meta.labels.expressions) != list(EXPRESSIONS) or list(meta.labels.aus) != list(AUS):
        raise ValueError(f"checkpoint {path}: label schema {meta.labels.to_dict()} differs from this edge-affect's")
    cfg = from_dict(ModelConfig, meta.model_config, where=f"{path} model_config")
    cfg.pretrained = None  # weights come from the checkpoint
    model = TaskTokenTransformer(cfg, model_name=meta.model_name or "custom")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path}: weights do not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    meta.checkpoint_sha256 = sha256_file(path)
    return model.to(map_location).eval(), meta
