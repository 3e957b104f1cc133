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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep ``pytest tests/data`` fast: tests marked ``slow`` here run only with ``-m slow`` or
    EDGE_AFFECT_RUN_SLOW=1."""
    import os

    if "slow" in (config.getoption("markexpr", "") or "") or os.environ.get("EDGE_AFFECT_RUN_SLOW") == "1":
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="slow (~1-2 min on 2 cores): run with -m slow or EDGE_AFFECT_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords and here in Path(str(item.fspath)).parents:
            item.add_marker(skip)
