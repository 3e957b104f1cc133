"""PackedLoader: batch contents, DDP sharding (disjoint, equal, full cover), epochs, lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PackedLoader needs torch (the train extra)")

from edge_affect.data.abaw import load_split  # noqa: E402
from edge_affect.data.cache import PackedCache, build_cache  # noqa: E402
from edge_affect.data.loader import PackedLoader  # noqa: E402
from edge_affect.schema import Preprocess  # noqa: E402


@pytest.fixture(scope="module")
def cache(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> PackedCache:
    ann = load_split(synth_root, "train")  # 180 rows
    return build_cache(
        ann, synth_root / "cropped_aligned", Preprocess(input_size=24), tmp_path_factory.mktemp("lc"), workers=0
    )


def test_batch_contents(cache: PackedCache) -> None:
    loader = PackedLoader(cache, batch_size=16, seed=3)
    batch = next(iter(loader))
    assert batch["image"].dtype == torch.uint8 and tuple(batch["image"].shape) == (16, 24, 24, 3)
    assert batch["va"].dtype == torch.float32 and tuple(batch["va"].shape) == (16, 2)
    assert batch["expr"].dtype == torch.int64 and batch["au"].dtype == torch.float32
    assert tuple(batch["au"].shape) == (16, 12) and batch["index"].dtype == torch.int64
    idx = batch["index"].numpy()
    assert np.all(np.diff(idx) > 0), "batches are gathered in sorted order"
    np.testing.assert_array_equal(batch["image"].numpy(), cache.images[idx])
    np.testing.assert_array_equal(batch["va"].numpy(), cache.va[idx])
    np.testing.assert_array_equal(batch["expr"].numpy(), cache.expr[idx])
    np.testing.assert_array_equal(batch["au"].numpy(), cache.au[idx].astype(np.float32))


@pytest.mark.parametrize("shuffle", [True, False])
def test_two_ranks_disjoint_full_cover(cache: PackedCache, shuffle: bool) -> None:
    n = len(cache)
    assert n % 2 == 0
    seen = []
    for rank in (0, 1):
        loader = PackedLoader(cache, batch_size=7, shuffle=shuffle, seed=1, rank=rank, world_size=2, drop_last=False)
        loader.set_epoch(4)
        rows = np.concatenate([b["index"].numpy() for b in loader])
        assert len(rows) == n // 2 and len(loader) == -(-(n // 2) // 7)
        seen.append(rows)
    assert not set(seen[0]) & set(seen[1]), "ranks must see disjoint rows"
    assert sorted(np.concatenate(seen)) == list(range(n)), "together the ranks cover every row once"


def test_uneven_world_equal_lengths(cache: PackedCache) -> None:
    n = len(cache)  # 180 over 7 ranks: 25 each, 5 rows left out this epoch
    lens, rows = [], []
    for rank in range(7):
        loader = PackedLoader(cache, batch_size=5, seed=0, rank=rank, world_size=7, drop_last=True)
        r = np.concatenate([b["index"].numpy() for b in loader])
        lens.append(len(loader))
        rows.append(r)
    assert set(lens) == {5}
    allrows = np.concatenate(rows)
    assert len(allrows) == len(set(allrows)) == 7 * (n // 7)


def test_epochs_reshuffle(cache: PackedCache) -> None:
    loader = PackedLoader(cache, batch_size=180, seed=0)
    loader.set_epoch(0)
    e0 = next(iter(loader))["index"].numpy()
    assert len(loader) == 1 and len(e0) == 180
    a = loader.shard(0)
    b = loader.shard(1)
    assert not np.array_equal(a, b) and sorted(a) == sorted(b)
    np.testing.assert_array_equal(loader.shard(0), PackedLoader(cache, batch_size=180, seed=0).shard(0))
    assert not np.array_equal(loader.shard(0), PackedLoader(cache, batch_size=180, seed=1).shard(0))
    loader.set_epoch(5)
    list(loader)
    assert loader.epoch == 5
    list(loader)  # without set_epoch the next pass advances
    assert loader.epoch == 6


def test_drop_last_lengths(cache: PackedCache) -> None:
    n = len(cache)
    full = PackedLoader(cache, batch_size=50, drop_last=True)
    part = PackedLoader(cache, batch_size=50, drop_last=False)
    assert len(full) == n // 50 == len(list(full))
    batches = list(part)
    assert len(part) == len(batches) == -(-n // 50) and len(batches[-1]["index"]) == n % 50
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        PackedLoader(cache, batch_size=4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        PackedLoader(cache, batch_size=1000)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_pinned_path(cache: PackedCache) -> None:
    loader = PackedLoader(cache, batch_size=32, device="cuda", shuffle=True, seed=2)
    for batch in loader:
        assert batch["image"].is_cuda and batch["va"].is_cuda and batch["index"].is_cuda
        idx = batch["index"].cpu().numpy()
        np.testing.assert_array_equal(batch["image"].cpu().numpy(), cache.images[idx])
        np.testing.assert_array_equal(batch["au"].cpu().numpy(), cache.au[idx].astype(np.float32))
