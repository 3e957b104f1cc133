"""Checkpoints that describe themselves: config, label schema and preprocessing travel with the weights.

Two formats, told apart by their first bytes (never by file name):
- ``.pt`` (torch zip): ``{"format", "meta", "state_dict", "train_state"}``, loaded with ``weights_only=True``.
- safetensors: weights only (no pickle), the metadata JSON in the safetensors header under ``edge_affect``.

Loading is safe on hostile files: a pickle that needs anything beyond tensors and plain containers is refused
(nothing in it runs), compressed zip entries (a few KB that inflate to GBs) are refused, and the model is built
only from a registered model name with a checked config (allow-listed ``backbone_kwargs``, at most
``registry.MAX_MODEL_PARAMS`` parameters counted on the ``meta`` device before anything is allocated).
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from edge_affect.artifact import ArtifactMeta, atomic_write_bytes, sha256_file
from edge_affect.config import ModelConfig, from_dict
from edge_affect.schema import METADATA_KEY, NUM_AU, LabelSchema

log = logging.getLogger(__name__)

FORMAT = "edge-affect-checkpoint/1"
#: Largest checkpoint file read: 4 GiB (a 100 M-parameter model with AdamW and EMA state is ~2 GB).
MAX_CHECKPOINT_BYTES = 4 * 2**30


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


def _unsafe_pickle_message(path: Path, err: Exception) -> str:
    """One line for a pickle ``weights_only`` loading refused; never torch's advice to load it unsafely."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    what = f"it calls {found.group(1)}" if found else "it holds objects other than tensors and plain data"
    return f"checkpoint {path}: not a safe checkpoint ({what}); refused without running any of it"


def _read_torch(path: Path) -> Any:
    try:
        with zipfile.ZipFile(path) as z:
            packed = [i.filename for i in z.infolist() if i.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: not a readable torch zip ({e})") from None
    if packed:
        raise ValueError(
            f"checkpoint {path}: compressed zip entries ({packed[0]}); torch.save writes none, so it was not made by it"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - hostile files raise anything (UnpicklingError, KeyError, struct.error, ...)
        text = str(e)
        if isinstance(e, pickle.UnpicklingError) or "weights_only" in text:
            raise ValueError(_unsafe_pickle_message(path, e)) from None
        first = (text.strip().splitlines() or [""])[0][:200]
        raise ValueError(f"checkpoint {path}: cannot be read ({type(e).__name__}: {first})") from None


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """Return ``(meta_dict, state_dict, train_state)`` with one-line ``ValueError``s for bad or unsafe files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise ValueError(f"checkpoint {path} is a folder, expected a .pt or .safetensors file")
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise ValueError(
            f"checkpoint {path}: {size / 2**30:.1f} GiB exceeds the limit of {MAX_CHECKPOINT_BYTES // 2**30} GiB"
        )
    kind = _sniff(path)
    if kind == "safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ValueError(f"checkpoint {path}: unreadable safetensors file: {first}") from None
        if METADATA_KEY not in header:
            raise ValueError(f"checkpoint {path}: safetensors header lacks '{METADATA_KEY}' metadata")
        try:
            meta = json.loads(header[METADATA_KEY])
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"checkpoint {path}: '{METADATA_KEY}' metadata is not valid JSON: {e}") from None
        return meta, sd, {}
    payload = _read_torch(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"checkpoint {path}: format {got!r:.60}, expected {FORMAT!r}")
    sd, train_state = payload.get("state_dict"), payload.get("train_state", {})
    if not isinstance(payload.get("meta"), dict):
        raise ValueError(f"checkpoint {path}: 'meta' must be an object, got {type(payload.get('meta')).__name__}")
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise ValueError(f"checkpoint {path}: 'state_dict' must map parameter names to tensors")
    if not isinstance(train_state, dict):
        raise ValueError(f"checkpoint {path}: 'train_state' must be an object, got {type(train_state).__name__}")
    return payload["meta"], sd, train_state


def config_from_meta(meta: ArtifactMeta, where: str) -> ModelConfig:
    """The checked ``ModelConfig`` of a registered model that ``meta`` describes (nothing is built or allocated).

    Refused: an unregistered model name, config keys or types ``ModelConfig`` lacks, settings outside the
    allow-list or ranges (``registry.check_model_config``), more than ``registry.MAX_MODEL_PARAMS`` parameters,
    and preprocessing that differs from the config's (the runtime would feed the network other pixels).
    """
    from edge_affect.models.registry import check_model_config, check_model_size, list_models

    if meta.model_name not in list_models():
        raise ValueError(
            f"{where}: model {meta.model_name!r:.60} is not a registered model ({', '.join(list_models())})"
        )
    try:
        cfg = from_dict(ModelConfig, meta.model_config, where=f"{where} model_config")
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(where) else f"{where} model_config: {msg}") from None
    cfg.pretrained = None  # weights come from the checkpoint
    check_model_config(cfg, f"{where} model_config")
    pp = meta.preprocess
    want = (cfg.input_size, cfg.color, tuple(cfg.mean), tuple(cfg.std))
    got = (pp.input_size, pp.color, tuple(pp.mean), tuple(pp.std))
    if got != want:
        raise ValueError(
            f"{where}: metadata preprocess (size, colour, mean, std) {got} differs from its model config's {want}"
        )
    check_model_size(cfg, f"{where} model_config")
    return cfg


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the model from the checkpoint alone. Returns ``(model.eval(), ArtifactMeta)``.

    The returned meta carries the checkpoint's sha256. Every problem is a one-line ``ValueError``.
    """
    from edge_affect.models.task_token import TaskTokenTransformer

    path = Path(path)
    where = f"checkpoint {path}"
    meta_d, sd, _ = read_checkpoint(path)
    meta = ArtifactMeta.from_dict(meta_d, where=where)
    cfg = config_from_meta(meta, where)
    model = TaskTokenTransformer(cfg, model_name=meta.model_name)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise ValueError(f"{where}: weights do not match its config ({detail[:200]})") from None
    if missing or unexpected:
        raise ValueError(
            f"{where}: weights do not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    meta.checkpoint_sha256 = sha256_file(path)
    return model.to(map_location).eval(), meta
