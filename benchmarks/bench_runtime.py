"""Runtime speed, side by side in one run: ONNX Runtime FP32 vs PyTorch eager through ``Predictor.predict``.

Measures, on the same model, the same face crops and the same batch sizes:
  * throughput of ``predict`` (preprocess + infer + post) with ONNX Runtime (CPU provider) and with eager
    PyTorch (same Predictor, only the runner differs) and their ratio (target ≥ 1.6× on CPU);
  * the share of pre+post-processing relative to inference at batch 32 (target ≤ 10 %);
  * process RSS at the start and end of N frames through the whole face pipeline (detect, align,
    predict, track, smooth) on the bundled clip, looped (target: flat);
  * on a CUDA machine also PyTorch FP16 + CUDA graphs and ONNX Runtime's CUDA provider.

Each backend runs in its own worker process (so one library's spinning thread pool cannot slow the
other's), and the workers take turns: rounds are interleaved so background load hits both alike, and
the median round counts.
Prints a rich table and writes JSON (``--json``). Needs the train extra (torch) for the baseline.

    python benchmarks/bench_runtime.py --model edge --json bench_runtime.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_affect.runtime.backends.base import BaseRunner, TensorSpec  # noqa: E402
from edge_affect.runtime.bench import DEFAULT_BENCH_IMAGE, SAMPLES_DIR, machine_info  # noqa: E402
from edge_affect.runtime.predictor import Predictor, load  # noqa: E402
from edge_affect.schema import INPUT_NAME, OUTPUT_DIMS  # noqa: E402


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss / 2**20


class TorchGraphRunner(BaseRunner):
    """PyTorch FP16 on CUDA with one captured CUDA graph per batch size (static input/output tensors)."""

    backend = "torch-fp16-cudagraph"

    def __init__(self, model: Any, size: int) -> None:
        super().__init__("torch-fp16-cudagraph")
        self.model, self.size = model, size
        self.inputs = {INPUT_NAME: TensorSpec(INPUT_NAME, ("N", 3, size, size), np.dtype(np.float32))}
        self.outputs = {k: TensorSpec(k, ("N", v), np.dtype(np.float32)) for k, v in OUTPUT_DIMS.items()}
        self.graphs: dict[int, tuple[Any, Any, Any]] = {}

    def _activate(self) -> None:
        import torch

        self.torch = torch
        self.model = self.model.eval().cuda().half()
        self.device = torch.cuda.get_device_name()

    def _deactivate(self) -> None:
        self.graphs.clear()

    def _graph(self, n: int) -> tuple[Any, Any, Any]:
        torch = self.torch
        if n not in self.graphs:
            x = torch.zeros(n, 3, self.size, self.size, device="cuda", dtype=torch.half)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s), torch.inference_mode():
                for _ in range(3):
                    self.model(x)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g), torch.inference_mode():
                out = self.model(x)
            self.graphs[n] = (g, x, out)
        return self.graphs[n]

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x_np = feed[INPUT_NAME]
        g, x, out = self._graph(x_np.shape[0])
        x.copy_(self.torch.from_numpy(x_np).to("cuda", non_blocking=False).half())
        g.replay()
        return {k: v.float().cpu().numpy() for k, v in out.items()}


def make_faces(size: int, n: int, crop: int | None = None) -> list[np.ndarray]:
    """``n`` aligned face crops of the astronaut (the pipeline's output), jittered, at ``crop`` px (default ``size``)."""
    from edge_affect.runtime.faces import YuNetDetector, align_face
    from edge_affect.runtime.preprocess import decode_image

    rgb = decode_image(DEFAULT_BENCH_IMAGE)
    det = YuNetDetector()
    lm = det.detect(rgb)[0].landmarks
    det.close()
    rng = np.random.default_rng(0)
    c = crop or size
    return [align_face(rgb, lm + rng.normal(0, 1.5, lm.shape), c) for _ in range(n)]


def throughput(pred: Predictor, faces: list[np.ndarray], seconds: float) -> tuple[float, dict[str, float], int]:
    """Faces per second of ``predict`` over ~``seconds``; also the summed stage timings."""
    timings: dict[str, float] = {}
    n_done, t0 = 0, time.perf_counter()
    while True:
        pred.predict(faces, timings=timings)
        n_done += len(faces)
        if time.perf_counter() - t0 >= seconds:
            break
    return n_done / (time.perf_counter() - t0), timings, n_done


def _summary(rounds: list[tuple[float, dict[str, float]]]) -> dict[str, Any]:
    per = [fps for fps, _ in rounds]
    st: dict[str, float] = {}
    for _, t in rounds:
        for k, v in t.items():
            st[k] = st.get(k, 0.0) + v
    med = float(np.median(per))
    return {
        "faces_per_s": med,
        "rounds_faces_per_s": [round(v, 1) for v in per],
        "ms_per_face": 1000.0 / med,
        "pre_post_share_of_infer": (st.get("preprocess", 0) + st.get("post", 0)) / max(st.get("infer", 1e-12), 1e-12),
        "stage_seconds": st,
    }


def _worker(backend: str, onnx_path: str, ckpt_path: str, threads: int, conn: Any) -> None:
    """One backend in its own process: build the Predictor, then run rounds on request."""
    if threads > 0:
        os.environ["EDGE_AFFECT_ORT_THREADS"] = str(threads)
    try:
        if backend == "onnxruntime-cpu":
            pred = load(onnx_path, providers="cpu")
        elif backend == "onnxruntime-cuda":
            pred = load(onnx_path, providers="cuda")
        else:
            import torch

            if threads > 0:
                torch.set_num_threads(threads)
            from edge_affect.models import load_checkpoint
            from edge_affect.runtime.backends.torch_runner import TorchRunner

            model, meta = load_checkpoint(ckpt_path)
            runner = TorchRunner(model=model, meta=meta) if backend == "torch-eager-cpu" else None
            if backend == "torch-fp16-cudagraph":
                runner = TorchGraphRunner(model, meta.preprocess.input_size)
            pred = Predictor(runner.activate(), meta, source=backend)
        info = {"device": pred.device, "threads": threads or "default"}
        if backend.startswith("torch"):
            import torch

            info["torch_threads"] = torch.get_num_threads()
        conn.send(("ready", info))
        faces_cache: dict[tuple[int, int], list[np.ndarray]] = {}
        while True:
            msg = conn.recv()
            if msg is None:
                break
            batch, crop, seconds = msg
            key = (batch, crop)
            if key not in faces_cache:
                faces_cache[key] = make_faces(pred.input_size, batch, crop)
                pred.predict(faces_cache[key])
                pred.predict(faces_cache[key])
            fps, timings, _ = throughput(pred, faces_cache[key], seconds)
            conn.send(("round", (fps, timings)))
        pred.close()
    except Exception as e:  # noqa: BLE001 - report any failure to the parent instead of hanging it
        conn.send(("error", f"{type(e).__name__}: {e}"))


class Workers:
    """Worker processes, one per backend, that take turns running timed rounds."""

    def __init__(self, backends: list[str], onnx_path: Path, ckpt_path: Path, threads: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.procs: dict[str, tuple[Any, Any]] = {}
        self.info: dict[str, Any] = {}
        for b in backends:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(b, str(onnx_path), str(ckpt_path), threads, child), daemon=True)
            proc.start()
            self.procs[b] = (proc, parent)
        for b, (_, conn) in self.procs.items():
            kind, payload = conn.recv()
            if kind == "error":
                raise RuntimeError(f"{b} worker failed to start: {payload}")
            self.info[b] = payload

    def run(
        self, batch: int, rounds: int, seconds: float, crop: int | None = None, only: list[str] | None = None
    ) -> dict[str, Any]:
        names = only or list(self.procs)
        got: dict[str, list] = {n: [] for n in names}
        for _ in range(rounds):
            for n in names:
                conn = self.procs[n][1]
                conn.send((batch, crop, seconds))
                kind, payload = conn.recv()
                if kind == "error":
                    raise RuntimeError(f"{n} worker failed: {payload}")
                got[n].append(payload)
        return {n: _summary(r) for n, r in got.items()}

    def close(self) -> None:
        for proc, conn in self.procs.values():
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            proc.join(timeout=30)


def _rss_worker(onnx_path: str, frames: int, threads: int, conn: Any) -> None:
    """The RSS check in a torch-free process: what a deployed runtime holds."""
    if threads > 0:
        os.environ["EDGE_AFFECT_ORT_THREADS"] = str(threads)
    try:
        res = rss_over_frames(Path(onnx_path), frames, "cpu")
        res["torch_imported"] = "torch" in sys.modules
        conn.send(("ok", res))
    except Exception as e:  # noqa: BLE001 - report to the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))


def rss_in_subprocess(onnx_path: Path, frames: int, threads: int) -> dict[str, Any]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_rss_worker, args=(str(onnx_path), frames, threads, child), daemon=True)
    proc.start()
    kind, payload = parent.recv()
    proc.join(timeout=30)
    if kind == "error":
        raise RuntimeError(f"RSS worker failed: {payload}")
    return payload


def rss_over_frames(onnx_path: Path, frames: int, providers: str) -> dict[str, Any]:
    """RSS while ``frames`` frames of the looped sample clip go through the whole face pipeline."""
    import cv2

    from edge_affect.runtime.faces import FacePipeline

    cap = cv2.VideoCapture(str(SAMPLES_DIR / "astronaut_clip.mp4"))
    clip = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        clip.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    samples = []
    with load(onnx_path, providers=providers) as p:
        pipe = FacePipeline(p, smooth=True)
        warm = min(100, frames // 10)
        t0 = time.perf_counter()
        for i in range(frames):
            recs = pipe.process(clip[i % len(clip)])
            assert recs and recs[0]["status"] == "ok"
            if i + 1 == warm:
                samples.append((i + 1, rss_mb()))
            if (i + 1) % max(frames // 10, 1) == 0:
                samples.append((i + 1, rss_mb()))
        dt = time.perf_counter() - t0
        pipe.close()
    start, end = samples[0][1], samples[-1][1]
    return {
        "frames": frames,
        "pipeline_fps": frames / dt,
        "rss_start_mb": start,
        "rss_end_mb": end,
        "rss_growth_mb": end - start,
        "rss_max_mb": max(v for _, v in samples),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--model", default="edge", help="registered model config (default edge)")
    ap.add_argument("--onnx", default=None, help="use this exported ONNX (and --checkpoint) instead of exporting")
    ap.add_argument("--checkpoint", default=None, help="PyTorch checkpoint matching --onnx")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per backend (median counts)")
    ap.add_argument("--seconds", type=float, default=1.5, help="seconds per round")
    ap.add_argument("--frames", type=int, default=10_000, help="frames for the RSS check (0 = skip)")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads for both backends (0 = their defaults)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table

    from edge_affect.models import create_model, list_models, load_checkpoint
    from edge_affect.models.checkpoint import model_meta
    from edge_affect.runtime.backends.onnxruntime_runner import cuda_device_present

    con = Console()
    tmp = tempfile.TemporaryDirectory(prefix="bench-runtime-")
    if args.onnx:
        onnx_path = Path(args.onnx)
        if not args.checkpoint:
            ap.error("--onnx needs --checkpoint (the same model for the PyTorch side)")
        model, meta = load_checkpoint(args.checkpoint)
    else:
        if args.model not in list_models():
            ap.error(f"unknown model {args.model!r}; registered: {', '.join(list_models())}")
        from edge_affect.export.onnx_export import export_onnx

        torch.manual_seed(0)
        model = create_model(args.model).eval()
        meta = model_meta(model)
        s = meta.preprocess.input_size
        sample = np.random.default_rng(0).standard_normal((4, 3, s, s)).astype(np.float32)
        onnx_path = export_onnx(model, meta, Path(tmp.name) / "model.onnx", sample=sample)
    size = meta.preprocess.input_size
    batches = [int(b) for b in args.batches.split(",")]
    ckpt_path = Path(args.checkpoint) if args.checkpoint else Path(tmp.name) / "model.pt"
    if not args.checkpoint:
        from edge_affect.models import save_checkpoint

        save_checkpoint(ckpt_path, model)
    backends = ["onnxruntime-cpu", "torch-eager-cpu"]
    if torch.cuda.is_available():
        backends.append("torch-fp16-cudagraph")
        if cuda_device_present():
            backends.append("onnxruntime-cuda")
    results: dict[str, Any] = {
        "machine": machine_info(),
        "torch": torch.__version__,
        "threads": args.threads or "library defaults",
        "model": meta.model_name,
        "input_size": size,
        "faces": f"aligned astronaut crops, {size}×{size} uint8 RGB",
        "method": "one worker process per backend, interleaved rounds, median",
        "batches": {},
        "load_average_at_start": os.getloadavg(),
    }
    workers = Workers(backends, onnx_path, ckpt_path, args.threads)
    results["workers"] = workers.info
    try:
        for b in batches:
            con.print(f"[dim]batch {b}: {args.rounds} interleaved rounds × {args.seconds}s per backend…[/]")
            results["batches"][str(b)] = workers.run(b, args.rounds, args.seconds)
        # Pre+post share when crops still need resizing (e.g. 160-px crops from another aligner).
        crop = round(size * 1.43)
        r_big = workers.run(max(batches), 3, args.seconds, crop=crop, only=["onnxruntime-cpu"])
    finally:
        workers.close()
    results["pre_post_share_resized_crops"] = {
        "crop_px": crop,
        "batch": max(batches),
        "share": r_big["onnxruntime-cpu"]["pre_post_share_of_infer"],
    }
    for b in batches:
        r = results["batches"][str(b)]
        r["ratio_ort_vs_torch_eager"] = r["onnxruntime-cpu"]["faces_per_s"] / r["torch-eager-cpu"]["faces_per_s"]
    if args.frames > 0:
        con.print(f"[dim]RSS over {args.frames} frames through the face pipeline (torch-free worker)…[/]")
        results["rss"] = rss_in_subprocess(onnx_path, args.frames, args.threads)
    tmp.cleanup()
    results["load_average_at_end"] = os.getloadavg()

    m = results["machine"]
    table = Table(title=f"{meta.model_name} {size}px · {m['cpu']} ({m['cpu_count']} cores) · predict() throughput")
    for col in ("batch", "backend", "faces/s", "ms/face", "vs torch eager", "pre+post / infer"):
        table.add_column(col, justify="right" if col not in ("backend",) else "left")
    for b, r in results["batches"].items():
        base = r["torch-eager-cpu"]["faces_per_s"]
        for name, v in r.items():
            if not isinstance(v, dict):
                continue
            table.add_row(
                b,
                name,
                f"{v['faces_per_s']:.1f}",
                f"{v['ms_per_face']:.2f}",
                f"{v['faces_per_s'] / base:.2f}×",
                f"{100 * v['pre_post_share_of_infer']:.1f} %",
            )
    con.print(table)
    bmax = str(max(batches))
    rb = results["batches"][bmax]
    con.print(
        "ONNX Runtime vs PyTorch eager: "
        + ", ".join(
            f"batch {b}: {results['batches'][b]['ratio_ort_vs_torch_eager']:.2f}× (target ≥ 1.6×)"
            for b in results["batches"]
        )
    )
    con.print(
        f"pre+post / infer at batch {bmax}: {100 * rb['onnxruntime-cpu']['pre_post_share_of_infer']:.1f} % "
        f"(target ≤ 10 %); with {results['pre_post_share_resized_crops']['crop_px']}-px crops to resize: "
        f"{100 * results['pre_post_share_resized_crops']['share']:.1f} %"
    )
    if "rss" in results:
        r = results["rss"]
        con.print(
            f"RSS over {r['frames']} pipeline frames: {r['rss_start_mb']:.1f} → {r['rss_end_mb']:.1f} MiB "
            f"(growth {r['rss_growth_mb']:+.1f} MiB, max {r['rss_max_mb']:.1f}); {r['pipeline_fps']:.1f} frames/s"
        )
    la0, la1 = results["load_average_at_start"], results["load_average_at_end"]
    con.print(f"load average {la0[0]:.1f} → {la1[0]:.1f} on {m['cpu_count']} cores (other processes share the CPU)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        con.print(f"JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
