"""Training throughput vs data-pipeline throughput, side by side in one run.

For each model: images/s of (a) the data pipeline alone (packed uint8 memmap cache → device → augment)
and (b) full training steps (forward, loss, backward, AdamW) on CPU in fp32 and in bf16 autocast +
channels_last (the path ``edge-affect train`` takes on CPUs with AVX512-BF16/AMX; measured only there unless
``--force-bf16``: emulated bf16 is slower), and on CUDA when available (bf16 autocast, channels_last). The
ratio data/train > 1 means the model, not decoding, is the bottleneck; ``bf16_speedup`` is bf16 over fp32
on the same CPU in the same run.

    python benchmarks/bench_train.py --models edge_gray48_slim,edge_gray48 --json benchmarks/results/bench_train.json
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
from edge_affect.train.loop import _autocast, cpu_has_native_bf16


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


def bench_train(name: str, cache, device, batch: int, steps: int, precision: str) -> tuple[float, int]:
    model = create_model(name).to(device)
    channels_last = device.type == "cuda" or precision == "bf16"
    if channels_last:
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
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device, precision):
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
    ap.add_argument("--force-bf16", action="store_true", help="measure CPU bf16 even without native bf16")
    args = ap.parse_args()
    native_bf16 = cpu_has_native_bf16()
    cpu_precisions = ["fp32", "bf16"] if native_bf16 or args.force_bf16 else ["fp32"]
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
                fp32_ips = None
                for precision in cpu_precisions if dev.type == "cpu" else ["bf16"]:
                    train_ips, params = bench_train(name, cache, dev, batch, steps, precision)
                    fp32_ips = train_ips if precision == "fp32" else fp32_ips
                    rows.append(
                        {
                            "model": name,
                            "params_m": round(params / 1e6, 3),
                            "device": str(dev),
                            "device_name": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                            "precision": precision,
                            "native_bf16": native_bf16 if dev.type == "cpu" else True,
                            "threads": torch.get_num_threads(),
                            "batch": batch,
                            "input": pp.input_size,
                            "data_img_s": round(data_ips, 1),
                            "train_img_s": round(train_ips, 1),
                            "data_over_train": round(data_ips / train_ips, 2),
                            "bf16_speedup": round(train_ips / fp32_ips, 2)
                            if precision == "bf16" and fp32_ips
                            else None,
                        }
                    )
    from rich.console import Console
    from rich.table import Table

    t = Table(title="training vs data pipeline (images/s)")
    cols = (
        "model",
        "params_m",
        "device",
        "precision",
        "batch",
        "input",
        "data_img_s",
        "train_img_s",
        "data_over_train",
        "bf16_speedup",
    )
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*(str(r[c]) for c in cols))
    Console(width=160).print(t)
    Path(args.json).write_text(json.dumps({"rows": rows, "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
