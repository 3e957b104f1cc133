"""Training throughput vs data-pipeline throughput, side by side in one run.

For each model: images/s of (a) the data pipeline alone (packed uint8 memmap cache → device → augment)
and (b) full training steps (forward, loss, backward, AdamW) on CPU, and on CUDA when available (bf16
autocast, channels_last). The ratio data/train > 1 means the model, not decoding, is the bottleneck.

    python benchmarks/bench_train.py --models tiny,edge --json bench_train.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from edge_affect.data.abaw import load_split
from edge_affect.data.augment import GpuAugment
from edge_affect.data.cache import build_cache
from edge_affect.data.loader import PackedLoader
from edge_affect.data.synth import synth_dataset
from edge_affect.losses import MultiTaskLoss
from edge_affect.models import count_params, create_model
from edge_affect.train.loop import _autocast


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_data(cache, pp, device, batch: int, steps: int) -> float:
    loader = PackedLoader(cache, batch, shuffle=True, device=device)
    aug = GpuAugment(pp)
    n, t0, it = 0, None, 0
    while it < steps + 2:
        for b in loader:
            if it == 2:
                _sync(device)
                t0 = time.perf_counter()
            x = aug(b["image"])
            n += x.shape[0] if it >= 2 else 0
            it += 1
            if it >= steps + 2:
                break
    _sync(device)
    return n / (time.perf_counter() - t0)


def bench_train(name: str, cache, device, batch: int, steps: int) -> tuple[float, int]:
    model = create_model(name).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    pp = model.preprocess
    crit = MultiTaskLoss().to(device)
    opt = torch.optim.AdamW(list(model.parameters()) + [crit.log_vars], lr=1e-4)
    loader = PackedLoader(cache, batch, shuffle=True, device=device)
    aug = GpuAugment(pp)
    model.train()
    n, t0, it = 0, None, 0
    while it < steps + 3:
        for b in loader:
            if it == 3:
                _sync(device)
                t0 = time.perf_counter()
            x = aug(b["image"])
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device, True):
                out = model(x)
            loss, _, _ = crit({k: v.float() for k, v in out.items()}, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += x.shape[0] if it >= 3 else 0
            it += 1
            if it >= steps + 3:
                break
    _sync(device)
    return n / (time.perf_counter() - t0), count_params(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,edge")
    ap.add_argument("--n", type=int, default=1200, help="synthetic faces to generate")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", default="bench_train.json")
    args = ap.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        synth_dataset(root, n=args.n, seed=0, size=112)
        ann = load_split(root, "train")
        for name in args.models.split(","):
            pp = create_model(name).preprocess
            cache = build_cache(ann, ann.images_root, pp, Path(tmp) / f"cache-{name}")
            for dev in devices:
                batch = args.batch if dev.type == "cpu" else 256
                steps = args.steps if dev.type == "cpu" else 50
                data_ips = bench_data(cache, pp, dev, batch, steps)
                train_ips, params = bench_train(name, cache, dev, batch, steps)
                rows.append(
                    {
                        "model": name,
                        "params_m": round(params / 1e6, 3),
                        "device": str(dev),
                        "device_name": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                        "threads": torch.get_num_threads(),
                        "batch": batch,
                        "input": pp.input_size,
                        "data_img_s": round(data_ips, 1),
                        "train_img_s": round(train_ips, 1),
                        "data_over_train": round(data_ips / train_ips, 2),
                    }
                )
    from rich.console import Console
    from rich.table import Table

    t = Table(title="training vs data pipeline (images/s)")
    for c in ("model", "params_m", "device", "batch", "input", "data_img_s", "train_img_s", "data_over_train"):
        t.add_column(c)
    for r in rows:
        t.add_row(
            *(
                str(r[c])
                for c in (
                    "model",
                    "params_m",
                    "device",
                    "batch",
                    "input",
                    "data_img_s",
                    "train_img_s",
                    "data_over_train",
                )
            )
        )
    Console().print(t)
    Path(args.json).write_text(json.dumps({"rows": rows, "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
