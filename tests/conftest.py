"""Fixtures shared across areas: the FER+ valid and FER2013 public-test splits (real faces; skipped where
absent) and scoring an artifact on them through the runtime."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FER_DIR = Path(os.environ.get("EDGE_AFFECT_FER_DIR", ROOT.parent / "shared" / "data" / "fer2013"))
FERPLUS_DIR = Path(os.environ.get("EDGE_AFFECT_FERPLUS_DIR", ROOT.parent / "shared" / "data" / "ferplus"))


@pytest.fixture(scope="session")
def ferplus_valid() -> tuple[np.ndarray, np.ndarray]:
    """(images N×48×48 uint8, FER+ majority labels in ABAW order) of FER+ valid, unknown/NF-majority faces left
    out; skips if not on this machine."""
    from edge_affect.data.fer import ferplus_majority

    path = FERPLUS_DIR / "ferplus_valid.npz"
    if not path.is_file():
        pytest.skip(f"FER+ valid not at {path} (set EDGE_AFFECT_FERPLUS_DIR); nothing is downloaded")
    images, labels, _ = ferplus_majority(path)
    return images, labels


@pytest.fixture(scope="session")
def fer_public_test() -> tuple[np.ndarray, np.ndarray]:
    """(images N×48×48 uint8, labels in ABAW order) of FER2013's public test; skips if not on this machine."""
    path = FER_DIR / "fer2013_publictest.npz"
    if not path.is_file():
        pytest.skip(f"FER2013 public test not at {path} (set EDGE_AFFECT_FER_DIR); nothing is downloaded")
    with np.load(path) as z:
        return z["images"], z["labels"].astype(np.int64)


def _runtime_accuracy(artifact: Path, images: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Accuracy of ``artifact`` through ``edge_affect.runtime`` (its own preprocessing) and its predictions."""
    from edge_affect.runtime import load
    from edge_affect.schema import EXPRESSIONS

    pred: list[int] = []
    with load(artifact) as p:
        for i in range(0, len(images), 256):
            pred += [EXPRESSIONS.index(r["expression"]) for r in p.predict(list(images[i : i + 256]))]
    pred_a = np.asarray(pred)
    return float((pred_a == labels).mean()), pred_a


@pytest.fixture(scope="session")
def runtime_accuracy() -> Callable[[Path, np.ndarray, np.ndarray], tuple[float, np.ndarray]]:
    return _runtime_accuracy


def _ferplus_like(path: Path, n: int) -> None:
    """Shipped FER2013 calibration crops with ten FER+ votes on their label's column, as a FER+ .npz."""
    from edge_affect.calibration.manifest import load_frames, read_manifest
    from edge_affect.data.fer import FERPLUS_COLUMNS, FERPLUS_TO_ABAW

    calib = Path(__file__).resolve().parents[1] / "edge_affect" / "assets" / "calibration" / "default"
    m = read_manifest(calib)
    frames = load_frames(calib, m, n)
    images = np.stack([f if f.ndim == 2 else f[..., 0] for f in frames]).astype(np.uint8)
    votes = np.zeros((n, len(FERPLUS_COLUMNS)), np.uint8)
    for i, f in enumerate(m["files"][:n]):
        votes[i, FERPLUS_TO_ABAW.index(int(f["label"]))] = 10
    np.savez(path, images=images, votes=votes)


@pytest.fixture
def ferplus_like() -> Callable[[Path, int], None]:
    """Writes ``n`` real faces with FER+-style votes to an .npz (``ferplus_like(path, n)``) for the face-set benchmarks."""
    return _ferplus_like
