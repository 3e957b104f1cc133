"""Shared fixtures for the data tests: one small synthetic dataset per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_affect.data.synth import synth_dataset

N_SYNTH = 240
SYNTH_SIZE = 48


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only synthetic ABAW-layout dataset (240 faces of 48×48, 8 videos of 30 frames)."""
    root = tmp_path_factory.mktemp("synth") / "ds"
    synth_dataset(root, N_SYNTH, seed=7, size=SYNTH_SIZE, video_len=30, workers=0)
    return root
