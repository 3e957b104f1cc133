"""Data-path throughput: per-image OpenCV JPEG decode vs the packed memmap cache (+ GPU augmentation).

Creates a synthetic ABAW-layout set in a temp dir, then measures images/s for
  (a) decode: ``decode_image`` + ``resize_face`` per JPEG, one process (what a naive Dataset does),
  (b) loader: ``PackedLoader`` over the uint8 memmap cache (→ pinned → device on CUDA),
  (c) loader + ``GpuAugment`` (normalised float batch ready for the model),
on CPU and, if available, CUDA. Prints a table with ratios to (a); ``--json`` writes the numbers.

    .venv/bin/python benchmarks/bench_data.py --n 2000 --json bench_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from edge_affect.data import GpuAugment, PackedLoader, build_cache, load_split, synth_dataset
from edge_affect.runtime.preprocess import decode_image, resize_face
from edge_affect.schema import Preprocess


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_decode(root: Path, paths: list[str], pp: Preprocess, seconds: float) -> float:
    t0, k = time.perf_counter(), 0
    while True:
        for p in paths:
            resize_face(decode_image(root / p), pp)
            k += 1
            if k % 64 == 0 and time.perf_counter() - t0 > seconds:
                return k / (time.perf_counter() - t0)
        if time.perf_counter() - t0 > seconds:
            return k / (time.perf_counter() - t0)


def bench_loader(cache: Any, batch: int, device: str, augment: GpuAugment | None, seconds: float) -> float:
    loader = PackedLoader(cache, batch, shuffle=True, seed=0, device=device)
    for b in loader:  # warm-up pass: page cache, pinned buffers, CUDA kernels
        x = augment(b["image"]) if augment else b["image"]
    _sync(device)
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for b in loader:
            x = augment(b["image"]) if augment else b["image"]
            k += x.shape[0]
        _sync(device)
    return k / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="synthetic faces (default 2000)")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per measurement")
    ap.add_argument("--devices", nargs="*", default=None, help="default: cpu, plus cuda when available")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    pp = Preprocess(input_size=args.size)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        synth_dataset(Path(tmp) / "ds", args.n, seed=0, size=args.size, val_fraction=0.1)
        synth_s = time.perf_counter() - t
        ann = load_split(Path(tmp) / "ds", "train")
        images = Path(tmp) / "ds" / "cropped_aligned"
        t = time.perf_counter()
        cache = build_cache(ann, images, pp, Path(tmp) / "cache")
        cache_s = time.perf_counter() - t
        base = bench_decode(images, ann.paths, pp, args.seconds)
        results.append({"path": "(a) OpenCV decode+resize per image", "device": "cpu", "img_per_s": base})
        for dev in devices:
            results.append(
                {
                    "path": "(b) PackedLoader (memmap cache)",
                    "device": dev,
                    "img_per_s": bench_loader(cache, args.batch, dev, None, args.seconds),
                }
            )
            aug = GpuAugment(pp, seed=0)
            results.append(
                {
                    "path": "(c) PackedLoader + GpuAugment",
                    "device": dev,
                    "img_per_s": bench_loader(cache, args.batch, dev, aug, args.seconds),
                }
            )
    for r in results:
        r["ratio_vs_decode"] = r["img_per_s"] / base
    env = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "n_train_images": len(ann),
        "size": args.size,
        "batch": args.batch,
        "synth_seconds": round(synth_s, 2),
        "cache_build_seconds": round(cache_s, 2),
    }
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"data path, {len(ann)} faces {args.size}×{args.size}, batch {args.batch}")
    for col in ("path", "device", "images/s", "× decode"):
        table.add_column(col, justify="left" if col in ("path", "device") else "right")
    for r in results:
        table.add_row(r["path"], r["device"], f"{r['img_per_s']:,.0f}", f"{r['ratio_vs_decode']:.1f}")
    con = Console()
    con.print(table)
    con.print(
        f"synth {env['synth_seconds']} s, cache build {env['cache_build_seconds']} s; {env['cpu_count']} CPUs, GPU: {env['gpu']}"
    )
    if args.json:
        args.json.write_text(json.dumps({"results": results, "env": env}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
