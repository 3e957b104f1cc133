"""Which frames calibrate an export: ``--calib`` when given; the shipped set for the shipped default model;
otherwise frames sampled from the checkpoint's own training data (its ``data_root``), because a model
calibrated on another model's frames loses agreement (a ``tiny`` trained on synthetic faces: 0.875 gate
agreement on the shipped FER2013 frames, 0.945 on its own). INT8 of a checkpoint whose training data is
unknown or absent is refused in one line naming ``--calib``; FP32/FP16 exports keep the shipped frames."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_affect.artifact import sha256_file
from edge_affect.calibration import build_calibration, default_calibration_dir
from edge_affect.default import default_model
from edge_affect.fsutil import make_temp_dir, same_path

log = logging.getLogger(__name__)

#: Frames sampled from a checkpoint's training data (the ``calib build`` default) and the sampling seed.
SAMPLED_FRAMES = 512
SAMPLE_SEED = 0
#: Folder of an export that keeps the frames it sampled from the training data.
SAMPLED_DIR = "calibration"

SOURCE_FLAG = "--calib"
SOURCE_SHIPPED = "shipped set (the default model's own training frames)"
SOURCE_SHIPPED_FALLBACK = "shipped set (the checkpoint's training data is unknown; FP32/FP16 checks only)"
SOURCE_TRAINING = "sampled from the checkpoint's training data"


@dataclass
class CalibSource:
    """Where the calibration frames are (``dir``), where they came from (``source``), and, for frames sampled
    by this export, the scratch folder holding them until they move into the export folder."""

    dir: Path
    source: str
    data_root: str | None = None
    scratch: Path | None = None

    def info(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source}
        if self.data_root is not None:
            d |= {"data_root": self.data_root, "split": "train", "sampled": SAMPLED_FRAMES, "seed": SAMPLE_SEED}
        return d

    def keep_in(self, folder: Path) -> Path | None:
        """Move sampled frames into ``folder``/``SAMPLED_DIR`` (the export keeps them); None when nothing was sampled."""
        if self.scratch is None:
            return None
        dst = folder / SAMPLED_DIR
        shutil.move(str(self.dir), str(dst))
        self.discard()
        self.dir = dst
        return dst

    def discard(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def is_default_model(checkpoint: Path, sha256: str) -> bool:
    """``checkpoint`` is the shipped default model (its path, or a copy with the same bytes)."""
    try:
        shipped = default_model("safetensors")
    except FileNotFoundError:
        return False
    return same_path(checkpoint, shipped) or sha256 == sha256_file(shipped)


def choose_calibration(calib: Path | None, checkpoint: Path, meta: Any, out: Path, int8: bool) -> CalibSource:
    """The calibration frames for exporting ``checkpoint`` (``meta``: its ``ArtifactMeta``) into ``out``."""
    if calib is not None:
        return CalibSource(Path(calib), SOURCE_FLAG)
    if is_default_model(Path(checkpoint), meta.checkpoint_sha256):
        return CalibSource(default_calibration_dir(), SOURCE_SHIPPED)
    root = meta.extra.get("data_root")
    if root is None or not Path(root).exists():
        why = (
            f"was trained on {root}, which is not on this machine"
            if root is not None
            else "does not record its training data"
        )
        if int8:
            raise ValueError(
                f"{checkpoint}: the checkpoint {why}; pass {SOURCE_FLAG} FOLDER with frames like its training data "
                "(edge-affect calib build DATA --out FOLDER) rather than the shipped default model's frames"
            )
        log.info("%s %s: the FP32/FP16 checks use the shipped calibration frames", checkpoint, why)
        return CalibSource(default_calibration_dir(), SOURCE_SHIPPED_FALLBACK)
    scratch = make_temp_dir(out, "calib")
    try:
        folder = build_calibration(
            root,
            scratch / SAMPLED_DIR,
            SAMPLED_FRAMES,
            seed=SAMPLE_SEED,
            split="train",
            provenance=f"sampled by edge-affect export from the training data of {Path(checkpoint).name}",
            name=f"{Path(checkpoint).stem}-train",
        )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    log.info(
        "calibration: %d frames sampled from the checkpoint's training data %s (train split)", SAMPLED_FRAMES, root
    )
    return CalibSource(folder, SOURCE_TRAINING, data_root=str(root), scratch=scratch)
