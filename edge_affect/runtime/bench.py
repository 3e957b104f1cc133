"""Per-stage latency and throughput of the runtime: decode, detect, align, preprocess, infer, post."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.runtime.predictor import Predictor
from edge_affect.runtime.preprocess import decode_image

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "samples"
DEFAULT_BENCH_IMAGE = SAMPLES_DIR / "astronaut.png"


def machine_info() -> dict[str, Any]:
    """Where a number was measured: CPU, cores, Python, library versions."""
    import cv2

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def stats(seconds: Sequence[float], items: int = 1) -> dict[str, float]:
    """p50/p90/p99 latency (ms per call) and throughput (items per second) of repeated calls."""
    a = np.asarray(seconds, dtype=np.float64) * 1000.0
    total = float(np.sum(seconds))
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "items_per_s": items * len(a) / total if total > 0 else float("inf"),
        "calls": len(a),
    }


def time_calls(fn: Callable[[], Any], iters: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bench_stages(
    predictor: Predictor,
    image: str | Path | None = None,
    batches: Sequence[int] = (1, 8, 32),
    iters: int = 50,
    detector: Any = None,
) -> dict[str, Any]:
    """Time each stage on one photo (default: the bundled astronaut). Rows: stage, batch, stats."""
    from edge_affect.runtime.faces import YuNetDetector, align_face, yunet_runner

    path = Path(image) if image is not None else DEFAULT_BENCH_IMAGE
    rgb = decode_image(path)
    own_detector = detector is None
    if detector is None:
        detector = YuNetDetector(yunet_runner(predictor.backend, getattr(predictor.runner, "providers", None) or None))
    try:
        rows: list[dict[str, Any]] = []
        rows.append({"stage": "decode", "batch": 1, **stats(time_calls(lambda: decode_image(path), iters))})
        rows.append({"stage": "detect", "batch": 1, **stats(time_calls(lambda: detector.detect(rgb), iters))})
        dets = detector.detect(rgb)
        if not dets:
            raise ValueError(f"bench source {path}: no face found (give --source an image with a face)")
        lm = dets[0].landmarks
        size = predictor.input_size
        rows.append({"stage": "align", "batch": 1, **stats(time_calls(lambda: align_face(rgb, lm, size), iters))})
        crop = align_face(rgb, lm, size)
        for b in batches:
            crops = [crop] * b
            x, _ = predictor.preprocess(crops)
            predictor.warmup(2, b)
            out = predictor.run(x)
            n = max(3, iters if b <= 8 else max(iters // 4, 3))
            rows.append(
                {"stage": "preprocess", "batch": b, **stats(time_calls(lambda c=crops: predictor.preprocess(c), n), b)}
            )
            rows.append({"stage": "infer", "batch": b, **stats(time_calls(lambda x=x: predictor.run(x), n), b)})
            rows.append(
                {"stage": "post", "batch": b, **stats(time_calls(lambda o=out: predictor.postprocess(o), n), b)}
            )
            rows.append(
                {"stage": "predict", "batch": b, **stats(time_calls(lambda c=crops: predictor.predict(c), n), b)}
            )
    finally:
        if own_detector:
            detector.close()
    return {
        "machine": machine_info(),
        "artifact": predictor.describe(),
        "detector": detector.runner.describe(),
        "source": str(path),
        "iters": iters,
        "rows": rows,
    }
