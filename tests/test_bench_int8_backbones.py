"""benchmarks/bench_int8_backbones.py: a kept synthetic set is reused only when it is the one asked for.

Its first rows were once recorded under the flag's default size while they trained on a smaller set made by an
earlier ``--n-train``; the benchmark now reads the set's own ``synth.json`` before reusing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import bench_int8_backbones as bench
import pytest


def _kept(root: Path, n: int, seed: int) -> Path:
    root.mkdir()
    made = {"n": n, "seed": seed, "train": n - n // 5, "val": n // 5, "videos": {"train": 4, "val": 1}}
    (root / "synth.json").write_text(json.dumps(made))
    return root


def test_a_kept_set_of_another_size_or_seed_is_refused_in_one_line(tmp_path: Path) -> None:
    kept = _kept(tmp_path / "data-train", 1200, 0)
    for n, seed in ((3000, 0), (1200, 1)):
        with pytest.raises(SystemExit) as err:
            bench._synth(kept, n, seed)
        msg = str(err.value)
        assert "\n" not in msg and str(kept) in msg and "n=1200 seed=0" in msg and f"n={n} seed={seed}" in msg


def test_the_kept_set_asked_for_is_reused_and_its_split_sizes_recorded(tmp_path: Path) -> None:
    kept = _kept(tmp_path / "data-train", 1200, 0)
    assert bench._synth(kept, 1200, 0) == kept
    assert bench._split_sizes(kept) == {
        "n": 1200,
        "seed": 0,
        "train": 960,
        "val": 240,
        "videos": {"train": 4, "val": 1},
    }

