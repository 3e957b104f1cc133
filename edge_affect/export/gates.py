"""Which frames judge the parity gates: frames the INT8 scales never saw.

Quantization ranges fitted on a set of frames are judged too kindly on those same frames, so ``export`` splits
the calibration set once, by file, with a seed: ``holdout`` of it (default 25 %) never reaches the quantizer
and is what the gates judge; the rest calibrates. ``--eval-data`` (a calibration folder, an ``.npz`` or an
ABAW root) replaces the held-out part: then every calibration frame calibrates. Either way, gate frames whose
pixels equal a calibration frame's (sha256 of the network input) are dropped and counted, and the report
records the source, the count, the held-out file names and the seed, so ``parity`` can judge the same frames
again.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.calibration import manifest_labels, verify_calibration
from edge_affect.calibration.manifest import check_compatible, load_frames
from edge_affect.export.compare import EvalSet, Labels, load_eval_set
from edge_affect.runtime.preprocess import prepare_batch

log = logging.getLogger(__name__)

#: Share of the calibration set held out for the gates when no ``--eval-data`` is given.
DEFAULT_HOLDOUT = 0.25
#: Seed of the split (recorded in the report; the same set and seed give the same split on any machine).
DEFAULT_SEED = 0
SOURCE_HELD_OUT = "held-out calibration frames"
SOURCE_EVAL_DATA = "--eval-data"
DISJOINT_BY = "sha256 of each frame's network input (float32 pixels after the model's preprocessing)"


@dataclass
class GateFrames:
    """The frames that set the INT8 scales, the frames that gate, and the record of both for the report."""

    calib: np.ndarray  # float32 N×3×S×S: what the quantizers see
    gate: EvalSet  # what the parity gates judge
    calib_eval: EvalSet  # the calibration frames as an evaluation set (figures shown beside, never gating)
    info: dict[str, Any]


def frame_hashes(x: np.ndarray) -> list[str]:
    """sha256 of each frame's float32 pixels (C order): equal pixels, equal hash."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return [hashlib.sha256(row.tobytes()).hexdigest() for row in x]


def split_files(files: list[dict[str, Any]], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (calibration, gate) of a manifest's ``files``: deterministic, by file, stratified by label.

    Files are ordered by label, then by sha256 of ``seed:file sha256:name`` (so the split depends on the set
    and the seed, not on the listing order), and every ``1/holdout``-th of that sequence is held out: each
    expression class keeps its share on both sides.
    """
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"gate holdout {holdout!r}: expected a fraction between 0 and 1 (e.g. 0.25)")

    def key(i: int) -> tuple[int, str]:
        f = files[i]
        label = f.get("label")
        tag = f"{seed}:{f.get('sha256', '')}:{f['name']}".encode()
        return (-1 if label is None else int(label), hashlib.sha256(tag).hexdigest())

    order = sorted(range(len(files)), key=key)
    gate = sorted(i for r, i in enumerate(order) if int((r + 1) * holdout) > int(r * holdout))
    taken = set(gate)
    calib = [i for i in range(len(files)) if i not in taken]
    if not gate or not calib:
        raise ValueError(
            f"calibration set of {len(files)} frames: holding out {holdout:g} leaves {len(calib)} to calibrate "
            f"and {len(gate)} to gate; use a larger set or pass --eval-data"
        )
    return calib, gate


def _take(labels: Labels | None, idx: np.ndarray) -> Labels | None:
    """The rows ``idx`` of every labelled task."""
    if labels is None:
        return None
    return Labels(**{k: (v[idx] if (v := getattr(labels, k)) is not None else None) for k in ("va", "expr", "au")})


def _drop_seen(ev: EvalSet, seen: set[str]) -> tuple[EvalSet, int, np.ndarray]:
    """``ev`` without frames whose pixels are in ``seen``; the number dropped and the kept indices."""
    keep = np.asarray([h not in seen for h in frame_hashes(ev.x)], dtype=bool)
    idx = np.flatnonzero(keep)
    if keep.all():
        return ev, 0, idx
    return EvalSet(ev.x[idx], _take(ev.labels, idx), ev.description), int((~keep).sum()), idx


def _limit(ev: EvalSet, n: int | None) -> EvalSet:
    if n is None or n >= len(ev.x):
        return ev
    return EvalSet(ev.x[:n], _take(ev.labels, np.arange(n)), ev.description)


def select_gate_frames(
    calib_dir: Path,
    manifest: dict[str, Any],
    frames: np.ndarray,
    pp: Any,
    *,
    eval_data: str | Path | None = None,
    eval_split: str = "val",
    holdout: float = DEFAULT_HOLDOUT,
    seed: int = DEFAULT_SEED,
    limit: int | None = None,
) -> GateFrames:
    """Split ``frames`` (the calibration set at ``calib_dir``, preprocessed, in manifest order) into the frames
    that calibrate and the frames that gate (held out, or ``eval_data``); ``limit`` caps the gate frames."""
    files = manifest["files"]
    if len(files) != len(frames):
        raise ValueError(f"calibration set {calib_dir}: {len(files)} files listed, {len(frames)} frames loaded")
    labels = manifest_labels(manifest)
    info: dict[str, Any] = {"disjoint_by": DISJOINT_BY}
    if eval_data is None:
        ci, gi = split_files(files, holdout, seed)
        calib = frames[ci]
        gate = EvalSet(
            frames[gi],
            Labels(expr=labels[gi]) if labels is not None else None,
            f"{len(gi)} held-out frames of calibration set {calib_dir}",
        )
        gate_names = [files[i]["name"] for i in gi]
        info |= {
            "source": SOURCE_HELD_OUT,
            "dir": str(calib_dir),
            "holdout": holdout,
            "seed": seed,
            "files": gate_names,
        }
        calib_lab = labels[ci] if labels is not None else None
    else:
        calib = frames
        gate = load_eval_set(eval_data, pp, eval_split)
        gate_names = None
        info |= {"source": SOURCE_EVAL_DATA, "path": str(Path(eval_data).resolve()), "split": eval_split}
        calib_lab = labels
    seen = set(frame_hashes(calib))
    gate, dropped, kept = _drop_seen(gate, seen)
    if gate_names is not None and dropped:
        info["files"] = [gate_names[i] for i in kept]
    if dropped:
        log.warning("%d gate frame(s) have the pixels of a calibration frame: left out of the gates", dropped)
    if len(gate.x) == 0:
        raise ValueError(f"no gate frames left: every frame of {info.get('path', calib_dir)} is a calibration frame")
    gate = _limit(gate, limit)
    if gate_names is not None and limit is not None:
        info["files"] = info["files"][: len(gate.x)]
    info |= {
        "count": int(len(gate.x)),
        "calibration_frames": int(len(calib)),
        "duplicates_dropped": dropped,
        "labelled": bool(gate.labels is not None),
        "description": gate.description,
    }
    calib_eval = EvalSet(
        calib,
        Labels(expr=calib_lab) if calib_lab is not None else None,
        f"{len(calib)} calibration frames of {calib_dir} (they set the INT8 scales)",
    )
    return GateFrames(calib, gate, calib_eval, info)


def recorded_gate_set(export_report: dict[str, Any], pp: Any, limit: int | None = None) -> EvalSet | None:
    """The frames an export was gated on, from its ``export_report.json`` (None when not recorded or gone)."""
    info = export_report.get("gate_frames") or {}
    source = info.get("source")
    if source == SOURCE_HELD_OUT and info.get("dir") and Path(info["dir"]).is_dir():
        d = Path(info["dir"])
        m = verify_calibration(d, min_frames=1)
        check_compatible(m, pp, where=str(d))
        names = set(info.get("files") or [])
        sub = {**m, "files": [f for f in m["files"] if f["name"] in names]}
        if len(sub["files"]) != len(names):
            raise ValueError(f"calibration set {d} no longer holds all {len(names)} held-out gate frames")
        x = prepare_batch(load_frames(d, sub, limit), pp)
        labels = manifest_labels(sub)
        lab = Labels(expr=labels[: len(x)]) if labels is not None else None
        return EvalSet(x, lab, f"{len(x)} held-out frames of calibration set {d} (the export's gate frames)")
    if source == SOURCE_EVAL_DATA and info.get("path") and Path(info["path"]).exists():
        return load_eval_set(info["path"], pp, info.get("split", "val"), limit)
    return None


def export_split(calib_dir: Path, pp: Any) -> GateFrames:
    """The calibration set at ``calib_dir`` split exactly as ``edge-affect export`` splits it by default (held-out
    gate frames, default holdout and seed): what benchmarks comparing quantizers on an export's frames use."""
    from edge_affect.calibration import load_calibration, read_manifest

    return select_gate_frames(
        calib_dir,
        read_manifest(calib_dir),
        load_calibration(calib_dir, pp),
        pp,
        holdout=DEFAULT_HOLDOUT,
        seed=DEFAULT_SEED,
    )
