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
from edge_affect.runtime.steadiness import (
    MAJORITY_WINDOW,
    agreement,
    centred_majority,
    first_face_labels,
    label_changes,
    landmark_jitter,
    replay_smoothing,
)
from edge_affect.runtime.track import EMASmoother

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
    """Time each stage on one photo (default: the bundled astronaut). Rows: stage, batch, stats.

    ``detect`` is a whole-frame detection at the face pipeline's default input size, ``track`` the
    re-detection of the face in a region around it (what the pipeline does between detections).
    """
    from edge_affect.runtime.faces import YuNetDetector, align_face, yunet_runner
    from edge_affect.runtime.finder import FaceFinder
    from edge_affect.runtime.pipeline import DEFAULT_DET_SIZE

    path = Path(image) if image is not None else DEFAULT_BENCH_IMAGE
    rgb = decode_image(path)
    own_detector = detector is None
    if detector is None:
        detector = YuNetDetector(yunet_runner(predictor.backend, getattr(predictor.runner, "providers", None) or None))
    try:
        rows: list[dict[str, Any]] = []
        rows.append({"stage": "decode", "batch": 1, **stats(time_calls(lambda: decode_image(path), iters))})
        detect = lambda: detector.detect(rgb, max_side=DEFAULT_DET_SIZE)  # noqa: E731
        rows.append({"stage": "detect", "batch": 1, **stats(time_calls(detect, iters))})
        dets = detector.detect(rgb, max_side=DEFAULT_DET_SIZE)
        if not dets:
            raise ValueError(f"bench source {path}: no face found (give --source an image with a face)")
        lm = dets[0].landmarks
        box = dets[0].box
        finder = FaceFinder(detector)  # the region a moving tracked face is re-found in, at the whole-frame scale
        rect, scale = finder.region(rgb, box), finder.full_scale(rgb)
        rows.append(
            {"stage": "track", "batch": 1, **stats(time_calls(lambda: detector.detect_rect(rgb, rect, scale), iters))}
        )
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
        "det_size": DEFAULT_DET_SIZE,
        "iters": iters,
        "rows": rows,
    }


# -- the whole face pipeline on a video ---------------------------------------------------------------
#: A frame's faces as the pipeline benchmark keeps them: (box x, y, w, h, expression or None).
FrameFaces = list[tuple[np.ndarray, "str | None"]]


def pipeline_policies(
    det_size: int | None = None,
    detect_every: int | None = None,
    track_policy: str | None = None,
    pickup: str | None = None,
    views: int | None = None,
) -> dict[str, dict[str, Any]]:
    """The settings compared by ``bench --pipeline``: the old behaviour (detect every frame at 640, one view)
    first, as the reference; then the new policy without motion pickup (new faces wait for the next full
    detection); then the new policy (last). ``views``: views per face of all but the reference (None: the
    model's)."""
    from edge_affect.runtime.pipeline import (
        DEFAULT_DET_SIZE,
        DEFAULT_DETECT_EVERY,
        DEFAULT_PICKUP,
        DEFAULT_TRACK_POLICY,
    )

    size = det_size or DEFAULT_DET_SIZE
    n = detect_every or DEFAULT_DETECT_EVERY
    policy = track_policy or DEFAULT_TRACK_POLICY
    pick = pickup or DEFAULT_PICKUP
    new = {"det_size": size, "detect_every": n, "track_policy": policy, "views": views}
    pols = {
        "old: every frame @640": {
            "det_size": 640,
            "detect_every": 1,
            "filter_landmarks": False,
            "hold": False,
            "smooth": False,
            "views": 1,
        }
    }
    if pick != "none":
        pols[f"@{size}, detect every {n}, {policy}, no pickup"] = {**new, "pickup": "none"}
    pols[f"every frame @{size}, filtered, smoothed"] = {"det_size": size, "detect_every": 1, "views": views}
    shown = f", {views} views" if views and views > 1 else ""
    pols[f"new: @{size}, detect every {n}, {policy}, pickup {pick}{shown}"] = {**new, "pickup": pick}
    return pols


def _pipeline_pass(
    predictor: Predictor,
    detector: Any,
    video: str | Path,
    settings: dict[str, Any],
    prefetch: int,
    max_frames: int | None,
) -> dict[str, Any]:
    """One timed pass of ``video`` through a fresh pipeline: frames/s, CPU time, stage times, faces per frame."""
    from edge_affect.runtime.pipeline import FacePipeline
    from edge_affect.runtime.sources import open_source

    # Each frame's own predictions: face finding is compared on them, smoothing is replayed afterwards.
    pipe = FacePipeline(predictor, detector, **{**settings, "smooth": False})
    src = open_source(str(video), prefetch=prefetch)
    timings: dict[str, float] = {}
    faces: list[FrameFaces] = []
    records: list[list[dict[str, Any]]] = []
    full: list[bool] = []
    size: tuple[int, int] | None = None
    n = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        frames = iter(src)
        while max_frames is None or n < max_frames:
            t_read = time.perf_counter()
            frame = next(frames, None)
            timings["wait"] = timings.get("wait", 0.0) + time.perf_counter() - t_read
            if frame is None:
                break
            if frame.image is not None and size is None:
                size = (int(frame.image.shape[1]), int(frame.image.shape[0]))
            before = pipe.stats["full"]
            recs = pipe.process(frame.image, timings, error=frame.error)
            full.append(pipe.stats["full"] > before)
            faces.append([(np.asarray(r["box"], dtype=np.float64), r["expression"]) for r in recs if r["box"]])
            records.append([r for r in recs if r["box"]])
            n += 1
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        src.close()
    if n == 0:
        raise ValueError(f"pipeline bench: {video} gave no frames")
    read = getattr(src, "read_seconds", None)
    stage = {k: 1000.0 * v / n for k, v in timings.items()}
    stage["decode"] = 1000.0 * (read if read is not None else timings.get("wait", 0.0)) / n
    stage["predict"] = sum(stage.get(k, 0.0) for k in ("preprocess", "infer", "post"))
    return {
        "frames": n,
        "frame_size": size,
        "wall_s": wall,
        "fps": n / wall,
        "cpu_ms_per_frame": 1000.0 * cpu / n,
        "stage_ms": stage,
        "faces": sum(len(f) for f in faces),
        "pipeline_stats": dict(pipe.stats),
        "dropped": getattr(src, "dropped", 0),
        "_faces": faces,
        "_full": full,
        "_records": records,
        "_smooth": settings.get("smooth", True),
    }


def match_faces(a: list[np.ndarray], b: list[np.ndarray], iou: float = 0.5) -> list[tuple[int, int]]:
    """Greedy one-to-one matches (i, j) between boxes ``a`` and ``b`` with IoU ≥ ``iou``, best first."""
    from edge_affect.runtime.track import iou_xywh

    if not a or not b:
        return []
    m = iou_xywh(np.stack(a), np.stack(b))
    pairs, used_a, used_b = [], set(), set()
    for k in np.argsort(-m, axis=None):
        i, j = divmod(int(k), m.shape[1])
        if m[i, j] < iou:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return pairs


def compare_to_reference(
    ref: list[FrameFaces],
    new: list[FrameFaces],
    full: list[bool],
    truth: list[list[tuple[int, np.ndarray]]] | None = None,
    *,
    frame_size: tuple[int, int] | None = None,
    min_face: float = 48.0,
    pickup: int = 1,
) -> dict[str, Any]:
    """How closely ``new`` reports the faces of ``ref`` (every-frame detection), frame by frame.

    Without ``truth``, a frame agrees when the two face sets match one to one (IoU ≥ 0.5), and
    ``same_faces`` counts the frames where the reference has a face at least ``min_face`` px tall.
    With ``truth`` (a generated clip's boxes), ``same_faces`` counts the frames holding a face that tall
    wholly in view, leaving out the ``pickup`` frames after the reference first finds each face (the new
    policy may take up to that long to pick it up), and a frame agrees when each such face is found by
    both or by neither; ``same_faces_all`` then counts every frame with a face that tall, partly
    visible or not, picked up or not, comparing the whole face sets. ``pickup_frames``: per face, how many frames after the reference the
    new policy first reported it. ``expr_agreement_tracked``: expression top-1 agreement of matched
    faces on frames where the new policy did not run a full detection.
    """
    n = min(len(ref), len(new))
    agree = [
        len(match_faces([b for b, _ in ref[i]], [b for b, _ in new[i]])) == len(ref[i]) == len(new[i]) for i in range(n)
    ]
    counted_all = [any(b[3] >= min_face for b, _ in ref[i]) for i in range(n)]
    counted = list(counted_all)
    pickups: dict[str, int | None] = {}
    if truth is not None:
        w, h = frame_size or (10**9, 10**9)

        def found(faces: FrameFaces, gt: np.ndarray) -> bool:
            return bool(match_faces([gt], [b for b, _ in faces]))

        inside = [
            [
                (k, b)
                for k, b in truth[i]
                if b[3] >= min_face and b[0] >= 0 and b[1] >= 0 and b[0] + b[2] <= w and b[1] + b[3] <= h
            ]
            for i in range(n)
        ]
        counted_all = [any(b[3] >= min_face for _, b in truth[i]) for i in range(n)]
        excluded = [False] * n
        for k in sorted({k for fr in truth[:n] for k, _ in fr}):
            gt = [next((b for kk, b in truth[i] if kk == k), None) for i in range(n)]
            first = next((i for i in range(n) if gt[i] is not None and found(ref[i], gt[i])), None)
            if first is None:
                pickups[str(k)] = None
                continue
            for i in range(first, min(n, first + pickup)):
                excluded[i] = True
            got = next((i for i in range(first, n) if gt[i] is not None and found(new[i], gt[i])), None)
            pickups[str(k)] = None if got is None else got - first
        # With ground truth a frame agrees when each face wholly in view is found by both or by neither.
        counted = [bool(inside[i]) and not excluded[i] for i in range(n)]
        agree_all = agree
        agree = [all(found(ref[i], b) == found(new[i], b) for _, b in inside[i]) for i in range(n)]
    else:
        agree_all = agree
    same = [agree[i] for i in range(n) if counted[i]]
    same_all = [agree_all[i] for i in range(n) if counted_all[i]]
    tracked_pairs = all_pairs = tracked_same = all_same = 0
    for i in range(n):
        pairs = match_faces([b for b, _ in ref[i]], [b for b, _ in new[i]])
        for a, b in pairs:
            if ref[i][a][1] is None or new[i][b][1] is None:
                continue
            ok = ref[i][a][1] == new[i][b][1]
            all_pairs += 1
            all_same += ok
            if not full[i]:
                tracked_pairs += 1
                tracked_same += ok
    return {
        "frames": n,
        "frames_compared": len(same),
        "same_faces": float(np.mean(same)) if same else None,
        "frames_compared_all": len(same_all),
        "same_faces_all": float(np.mean(same_all)) if same_all else None,
        "disagreeing_frames": [i for i in range(n) if counted[i] and not agree[i]],
        "pickup_frames": pickups,
        "expr_pairs_tracked": tracked_pairs,
        "expr_agreement_tracked": tracked_same / tracked_pairs if tracked_pairs else None,
        "expr_pairs": all_pairs,
        "expr_agreement": all_same / all_pairs if all_pairs else None,
    }


def steadiness(run: dict[str, Any], ref: dict[str, Any], predictor: Predictor) -> dict[str, Any]:
    """Flicker figures of one pass: label changes between consecutive frames (each frame's own labels, and as
    reported with the policy's smoothing), agreement of the reported labels with the centred
    :data:`~edge_affect.runtime.steadiness.MAJORITY_WINDOW`-frame majority of the reference pass's raw labels,
    and the landmark jitter (median frame-to-frame move of the first face's landmarks, px)."""
    raw = first_face_labels(run["_records"])
    shown_recs = (
        replay_smoothing(run["_records"], EMASmoother(au_thresholds=list(predictor.meta.au_thresholds)))
        if run["_smooth"]
        else run["_records"]
    )
    shown = first_face_labels(shown_recs)
    majority = centred_majority(first_face_labels(ref["_records"]))
    return {
        "smooth": bool(run["_smooth"]),
        "label_changes_raw": label_changes(raw),
        "label_changes": label_changes(shown),
        "majority_window": MAJORITY_WINDOW,
        "majority_agreement": agreement(shown, majority),
        "landmark_jitter_px": landmark_jitter(run["_records"]),
        "labels_raw": raw,
        "labels": shown,
    }


def bench_pipeline(
    predictor: Predictor,
    video: str | Path,
    policies: dict[str, dict[str, Any]] | None = None,
    *,
    rounds: int = 2,
    prefetch: int = 4,
    max_frames: int | None = None,
    truth: list[list[tuple[int, np.ndarray]]] | None = None,
    detector: Any = None,
    score_threshold: float = 0.6,
) -> dict[str, Any]:
    """End-to-end frames/s of ``video`` through the face pipeline under each policy, side by side.

    Policies run interleaved ``rounds`` times (the fastest round of each is kept, so a busy machine
    penalises them alike); the first policy is the reference the others are compared with (faces
    found, expression agreement; see :func:`compare_to_reference`). ``truth`` is a generated clip's
    ground truth (:mod:`edge_affect.runtime.clips`).
    """
    from edge_affect.runtime.detect import YuNetDetector, min_face_px, yunet_runner

    if rounds < 1:
        raise ValueError(f"rounds {rounds}: expected ≥ 1")
    if not Path(video).is_file():
        raise FileNotFoundError(f"pipeline bench video {video} does not exist")
    policies = policies or pipeline_policies()
    own = detector is None
    if detector is None:
        providers = getattr(predictor.runner, "providers", None) or None
        detector = YuNetDetector(yunet_runner(predictor.backend, providers), score_threshold=score_threshold)
    try:
        for settings in policies.values():  # warm-up: first calls at each input shape
            _pipeline_pass(predictor, detector, video, settings, prefetch, 8)
        passes: dict[str, list[dict[str, Any]]] = {name: [] for name in policies}
        for _ in range(rounds):
            for name, settings in policies.items():
                passes[name].append(_pipeline_pass(predictor, detector, video, settings, prefetch, max_frames))
    finally:
        if own:
            detector.close()
    names = list(policies)
    ref = passes[names[0]][0]
    rows = []
    for name in names:
        best = max(passes[name], key=lambda p: p["fps"])
        settings = policies[name]
        row = {k: v for k, v in best.items() if not k.startswith("_")}
        row["policy"] = name
        row["settings"] = settings
        row["fps_rounds"] = [p["fps"] for p in passes[name]]
        row["speedup_vs_reference"] = best["fps"] / max(p["fps"] for p in passes[names[0]])
        row["min_face_px"] = (
            min_face_px(max(best["frame_size"]), int(settings.get("det_size", 640))) if best["frame_size"] else None
        )
        row["steadiness"] = steadiness(passes[name][0], ref, predictor)
        row["agreement"] = compare_to_reference(
            ref["_faces"],
            passes[name][0]["_faces"],
            passes[name][0]["_full"],
            truth,
            frame_size=ref["frame_size"],
            pickup=int(settings.get("detect_every", 1)),
        )
        rows.append(row)
    return {
        "machine": machine_info(),
        "artifact": predictor.describe(),
        "detector": detector.runner.describe(),
        "video": str(video),
        "rounds": rounds,
        "prefetch": prefetch,
        "ort_threads": os.environ.get("EDGE_AFFECT_ORT_THREADS", "default"),
        "policies": rows,
    }


PIPELINE_COLUMNS = (
    "policy",
    "frames/s",
    "× old",
    "CPU ms/frame",
    "decode ms",
    "detect ms",
    "track+pickup ms",
    "align ms",
    "predict ms",
    "faces",
    "full det.",
    "same faces (≥48 px)",
    "expr agree (tracked)",
    "label changes",
    "= majority",
    "jitter px",
)


def pipeline_rows(res: dict[str, Any]) -> list[list[str]]:
    """The pipeline benchmark as table rows under :data:`PIPELINE_COLUMNS` (stage times per frame)."""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f} %"

    out = []
    for r in res["policies"]:
        s, a = r["stage_ms"], r["agreement"]
        out.append(
            [
                r["policy"],
                f"{r['fps']:.1f}",
                f"{r['speedup_vs_reference']:.2f}",
                f"{r['cpu_ms_per_frame']:.2f}",
                f"{s.get('decode', 0):.2f}",
                f"{s.get('detect', 0):.2f}",
                f"{s.get('track', 0) + s.get('motion', 0):.2f}",
                f"{s.get('align', 0):.2f}",
                f"{s.get('predict', 0):.2f}",
                str(r["faces"]),
                str(r["pipeline_stats"]["full"]),
                pct(a["same_faces_all"]),
                pct(a["expr_agreement_tracked"]) if a["expr_pairs_tracked"] else "-",
                pct(r["steadiness"]["label_changes"]),
                pct(r["steadiness"]["majority_agreement"]),
                "-"
                if r["steadiness"]["landmark_jitter_px"] is None
                else f"{r['steadiness']['landmark_jitter_px']:.2f}",
            ]
        )
    return out


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table (first column left-aligned, the rest right-aligned)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])
