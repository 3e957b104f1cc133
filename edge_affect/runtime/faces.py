"""Faces in raw frames: YuNet detection, 5-point similarity alignment, IoU tracks, EMA smoothing.

YuNet-s (MIT; ``yunet_s_dynamic.onnx`` from libfacedetection.train, the same weights as OpenCV Zoo's
``face_detection_yunet_2023mar.onnx`` with dynamic H×W; shipped in ``edge_affect/assets/yunet``)
runs through the same runners as the affect model, so on a GPU detection runs on the GPU too
(ONNX Runtime's CUDA/TensorRT providers, or a TensorRT engine built from it once and cached).
Its raw outputs are decoded here with numpy; NMS is OpenCV's ``cv2.dnn.NMSBoxes``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.runtime.backends.base import BaseRunner
from edge_affect.runtime.predictor import STATUS_OK, Predictor, failed_record

log = logging.getLogger(__name__)

YUNET_DIR = Path(__file__).resolve().parent.parent / "assets" / "yunet"
YUNET_ONNX = YUNET_DIR / "yunet_s_dynamic.onnx"
#: Frames are scaled down so the long side is at most this, then zero-padded to a multiple of 32.
YUNET_MAX_SIDE = 640
YUNET_ALIGN = 32
YUNET_STRIDES = (8, 16, 32)

#: ArcFace 5-point template for a 112×112 crop (image-left eye, image-right eye, nose, mouth corners),
#: in the order YuNet reports landmarks. Scaled to the model's input size.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

#: Frame-level statuses (face-level ones are in ``predictor``).
STATUS_NO_FACE = "no_face"
STATUS_BAD_FRAME = "bad_frame"
STATUS_BAD_CROP = "bad_crop"

#: Keys of every JSON Lines record the ``run`` command writes (one per face, or one per faceless frame).
RECORD_FIELDS: tuple[str, ...] = (
    "source",
    "frame",
    "timestamp",
    "track",
    "box",
    "landmarks",
    "det_score",
    "status",
    "error",
    "valence",
    "arousal",
    "expression",
    "expression_score",
    "expression_probs",
    "au_probs",
    "au_active",
)


def output_record(frame: Any, rec: dict[str, Any]) -> dict[str, Any]:
    """One JSON Lines row of ``run``: the frame's source/index/timestamp and the face record, in RECORD_FIELDS."""
    full = {"source": frame.source, "frame": frame.index, "timestamp": frame.timestamp, **rec}
    return {k: full.get(k) for k in RECORD_FIELDS}


@dataclass
class Detection:
    """One face: box ``[x, y, w, h]`` and 5 landmarks (x, y) in frame pixels, detector score."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    track: int | None = None


# -- detector --------------------------------------------------------------------------------------
def _cache_dir() -> Path:
    root = os.environ.get("EDGE_AFFECT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edge_affect")
    return Path(root)


def yunet_runner(backend: str = "onnxruntime", providers: Any = None) -> BaseRunner:
    """A runner for YuNet on ``backend``: ONNX Runtime (given providers) or a cached TensorRT engine."""
    if backend == "tensorrt":
        from edge_affect.artifact import sha256_file
        from edge_affect.runtime.backends.tensorrt_runner import (
            TensorRTRunner,
            build_engine_from_onnx,
            current_gpu,
            import_tensorrt,
        )

        trt = import_tensorrt()
        gpu = current_gpu()
        tag = f"{sha256_file(YUNET_ONNX)[:12]}-trt{trt.__version__}-{gpu['gpu_name']}-sm{gpu['compute_capability']}"
        engine = _cache_dir() / f"yunet-{''.join(c if c.isalnum() or c in '.-' else '_' for c in tag)}.engine"
        if not engine.is_file():
            log.info("building the YuNet TensorRT engine once: %s", engine)
            lo, hi = (1, 3, YUNET_ALIGN, YUNET_ALIGN), (1, 3, YUNET_MAX_SIDE, YUNET_MAX_SIDE)
            build_engine_from_onnx(YUNET_ONNX, engine, profile={"input": (lo, (1, 3, 384, 640), hi)})
        return TensorRTRunner(engine)
    from edge_affect.runtime.backends.onnxruntime_runner import OnnxRuntimeRunner

    return OnnxRuntimeRunner(YUNET_ONNX, providers if backend == "onnxruntime" else "cpu", name="yunet")


class YuNetDetector:
    """Detects faces with 5 landmarks in an RGB frame of any size (long side scaled to ≤ 640, padded to /32)."""

    def __init__(
        self,
        runner: BaseRunner | None = None,
        *,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        min_size: float = 8.0,
    ) -> None:
        self.runner = (runner or yunet_runner()).activate()
        spec = self.runner.inputs.get("input")
        if spec is None or len(spec.shape) != 4 or "cls_8" not in self.runner.outputs:
            raise ValueError(f"{self.runner.name}: not a YuNet model (inputs {self.runner.describe()['inputs']})")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self.min_size = min_size
        self._blob = np.zeros((1, 3, YUNET_ALIGN, YUNET_ALIGN), dtype=np.float32)
        self._grids: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _grid(self, stride: int) -> tuple[np.ndarray, np.ndarray]:
        h, w = self._blob.shape[2:]
        key = (stride, h, w)
        if key not in self._grids:
            rows, cols = np.divmod(np.arange((h // stride) * (w // stride)), w // stride)
            self._grids[key] = (cols.astype(np.float32), rows.astype(np.float32))
        return self._grids[key]

    def close(self) -> None:
        self.runner.deactivate()

    def prepare(self, rgb: np.ndarray) -> float:
        """Put ``rgb`` into the input blob (BGR, 0–255, top-left, zero padding to /32); returns the scale."""
        import cv2

        h, w = rgb.shape[:2]
        scale = min(1.0, YUNET_MAX_SIDE / max(h, w))
        img = rgb
        if scale < 1.0:
            img = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        ih, iw = img.shape[:2]
        bh, bw = -(-ih // YUNET_ALIGN) * YUNET_ALIGN, -(-iw // YUNET_ALIGN) * YUNET_ALIGN
        if self._blob.shape[2:] != (bh, bw):
            self._blob = np.zeros((1, 3, bh, bw), dtype=np.float32)
        else:
            self._blob.fill(0.0)
        for c in range(3):  # RGB → BGR planes
            self._blob[0, c, :ih, :iw] = img[:, :, 2 - c]
        return scale

    def decode(self, out: dict[str, np.ndarray], scale: float) -> list[Detection]:
        """YuNet's per-stride outputs → detections in original-frame pixels (after NMS)."""
        import cv2

        boxes, kpss, scores = [], [], []
        for s in YUNET_STRIDES:
            cols, rows = self._grid(s)
            cls = np.clip(out[f"cls_{s}"].reshape(-1), 0.0, 1.0)
            obj = np.clip(out[f"obj_{s}"].reshape(-1), 0.0, 1.0)
            score = np.sqrt(cls * obj)
            keep = np.nonzero(score >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            bb = out[f"bbox_{s}"].reshape(-1, 4)[keep]
            kp = out[f"kps_{s}"].reshape(-1, 10)[keep]
            c, r = cols[keep], rows[keep]
            cx, cy = (c + bb[:, 0]) * s, (r + bb[:, 1]) * s
            bw, bh = np.exp(bb[:, 2]) * s, np.exp(bb[:, 3]) * s
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, bw, bh], 1))
            kx = (kp[:, 0::2] + c[:, None]) * s
            ky = (kp[:, 1::2] + r[:, None]) * s
            kpss.append(np.stack([kx, ky], 2))
            scores.append(score[keep])
        if not boxes:
            return []
        b = np.concatenate(boxes) / scale
        k = np.concatenate(kpss) / scale
        sc = np.concatenate(scores)
        if not np.isfinite(b).all() or not np.isfinite(k).all():
            ok = np.isfinite(b).all(1) & np.isfinite(k).all((1, 2))
            b, k, sc = b[ok], k[ok], sc[ok]
        idx = cv2.dnn.NMSBoxes(b.tolist(), sc.tolist(), self.score_threshold, self.nms_threshold, top_k=self.top_k)
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        dets = [Detection(b[i].astype(np.float32), k[i].astype(np.float32), float(sc[i])) for i in idx]
        dets = [d for d in dets if min(d.box[2], d.box[3]) >= self.min_size]
        dets.sort(key=lambda d: -d.score)
        return dets

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """All faces in one H×W×3 uint8 RGB frame, best score first."""
        scale = self.prepare(rgb)
        out = self.runner.infer({"input": self._blob})
        return self.decode(out, scale)


# -- alignment -------------------------------------------------------------------------------------
def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` → ``dst`` (Umeyama 1991).

    Returns the 2×3 matrix for ``cv2.warpAffine``. Degenerate points (all equal) raise ``ValueError``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc**2).sum() / len(src)
    if not np.isfinite(var_s) or var_s < 1e-6:
        raise ValueError("landmarks are degenerate (all at one point)")
    cov = dc.T @ sc / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = (d * sign).sum() / var_s
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int, template: np.ndarray | None = None) -> np.ndarray:
    """Warp the face whose 5 landmarks are given onto the template scaled to ``size``×``size``."""
    import cv2

    tpl = (ARCFACE_TEMPLATE_112 if template is None else np.asarray(template, dtype=np.float64)) * (size / 112.0)
    m = similarity_transform(landmarks, tpl)
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


#: Mirror partner of each landmark (image-left eye ↔ image-right eye, nose, mouth corners).
_MIRROR = (1, 0, 2, 4, 3)


def measure_align_template(
    images: Any, detector: YuNetDetector | None = None, upscale_to: int = 192, min_faces: int = 50
) -> tuple[np.ndarray, int]:
    """The 5-point template (fractions of the crop, 5×2) that reproduces the framing of a set of face crops.

    Runs YuNet on each crop (upscaled to ``upscale_to`` so small 48-px faces are found), takes the median
    landmark positions and makes them left-right symmetric. Store it as ``align_template`` in a model's
    metadata so the runtime aligns detected faces the way the training crops were framed (FER2013 crops
    show more forehead than the ArcFace template). Returns ``(template, faces_found)``.
    """
    import cv2

    own = detector is None
    det = detector or YuNetDetector(yunet_runner("onnxruntime", "cpu"))
    pts = []
    try:
        for img in images:
            img = np.asarray(img)
            h, w = img.shape[:2]
            big = cv2.resize(img, (upscale_to, upscale_to), interpolation=cv2.INTER_CUBIC)
            rgb = np.repeat(big[..., None], 3, axis=2) if big.ndim == 2 else big[..., :3]
            found = det.detect(np.ascontiguousarray(rgb, dtype=np.uint8))
            if found:
                pts.append(found[0].landmarks / float(upscale_to))
    finally:
        if own:
            det.close()
    if len(pts) < min_faces:
        raise ValueError(f"align template: YuNet found faces in only {len(pts)} crops (need ≥ {min_faces})")
    med = np.median(np.stack(pts).astype(np.float64), axis=0)
    mirrored = med[list(_MIRROR)].copy()
    mirrored[:, 0] = 1.0 - mirrored[:, 0]
    return (med + mirrored) / 2.0, len(pts)


# -- tracking and smoothing ------------------------------------------------------------------------
def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (N×4) and ``b`` (M×4) in x, y, w, h."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, 0, None], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, 1, None], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class _Track:
    box: np.ndarray
    missed: int = 0


class IoUTracker:
    """Greedy IoU matching of detections to tracks across frames; ids are never reused."""

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 15) -> None:
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.tracks: dict[int, _Track] = {}
        self._next = 0

    def reset(self) -> None:
        self.tracks.clear()

    def update(self, boxes: list[np.ndarray]) -> list[int]:
        """Track ids for ``boxes`` (in order); tracks unmatched for ``max_missed`` frames end."""
        ids: list[int | None] = [None] * len(boxes)
        tids = list(self.tracks)
        if boxes and tids:
            iou = iou_xywh(np.stack(boxes), np.stack([self.tracks[t].box for t in tids]))
            pairs = sorted(((iou[i, j], i, j) for i in range(len(boxes)) for j in range(len(tids))), reverse=True)
            used_d, used_t = set(), set()
            for v, i, j in pairs:
                if v < self.iou_threshold:
                    break
                if i in used_d or j in used_t:
                    continue
                used_d.add(i)
                used_t.add(j)
                ids[i] = tids[j]
        for i, b in enumerate(boxes):
            if ids[i] is None:
                ids[i] = self._next
                self._next += 1
                self.tracks[ids[i]] = _Track(np.asarray(b, dtype=np.float64))
            else:
                t = self.tracks[ids[i]]
                t.box, t.missed = np.asarray(b, dtype=np.float64), 0
        seen = set(ids)
        for t in list(self.tracks):
            if t not in seen:
                self.tracks[t].missed += 1
                if self.tracks[t].missed > self.max_missed:
                    del self.tracks[t]
        return [int(i) for i in ids]  # type: ignore[arg-type]


class EMASmoother:
    """Per-track exponential moving average of valence/arousal and probabilities (``alpha`` = new weight)."""

    def __init__(self, alpha: float = 0.4, au_thresholds: list[float] | None = None) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"smoothing alpha {alpha} must be in (0, 1]")
        self.alpha = alpha
        self.au_thresholds = au_thresholds
        self.state: dict[int, dict[str, Any]] = {}

    def reset(self) -> None:
        self.state.clear()

    def forget(self, live: set[int]) -> None:
        for t in list(self.state):
            if t not in live:
                del self.state[t]

    def apply(self, track: int, rec: dict[str, Any]) -> dict[str, Any]:
        """Smooth ``rec`` (a prediction record) in place for ``track``; non-ok records pass through."""
        if rec.get("status") != STATUS_OK:
            return rec
        a = self.alpha
        prev = self.state.get(track)
        if prev is not None:
            rec["valence"] = a * rec["valence"] + (1 - a) * prev["valence"]
            rec["arousal"] = a * rec["arousal"] + (1 - a) * prev["arousal"]
            for key in ("expression_probs", "au_probs"):
                rec[key] = {k: a * v + (1 - a) * prev[key][k] for k, v in rec[key].items()}
            best = max(rec["expression_probs"], key=rec["expression_probs"].get)
            rec["expression"], rec["expression_score"] = best, rec["expression_probs"][best]
            thr = self.au_thresholds or [0.5] * len(rec["au_probs"])
            rec["au_active"] = {k: v >= t for (k, v), t in zip(rec["au_probs"].items(), thr, strict=True)}
        self.state[track] = {k: rec[k] for k in ("valence", "arousal", "expression_probs", "au_probs")}
        return rec


# -- pipeline --------------------------------------------------------------------------------------
def _empty_record(status: str, error: str | None = None) -> dict[str, Any]:
    rec = failed_record(status, error or "")
    rec["error"] = error
    return {"track": None, "box": None, "landmarks": None, "det_score": None, **rec}


@dataclass
class FacePipeline:
    """Frame → per-face records: detect, align, predict (batched), track, optionally smooth."""

    predictor: Predictor
    detector: YuNetDetector = field(default=None)  # type: ignore[assignment]
    smooth: bool = False
    alpha: float = 0.4
    track: bool = True
    max_faces: int | None = None

    def __post_init__(self) -> None:
        if self.detector is None:
            backend = self.predictor.backend
            providers = getattr(self.predictor.runner, "providers", None) or None
            self.detector = YuNetDetector(yunet_runner(backend, providers))
        self.tracker = IoUTracker()
        self.smoother = EMASmoother(self.alpha, list(self.predictor.meta.au_thresholds)) if self.smooth else None
        tpl = self.predictor.meta.extra.get("align_template")
        self.template = np.asarray(tpl, dtype=np.float64) * 112.0 if tpl is not None else None

    def reset(self) -> None:
        """Forget tracks and smoothing state (call between unrelated sources)."""
        self.tracker.reset()
        if self.smoother:
            self.smoother.reset()

    def close(self) -> None:
        self.detector.close()

    def process(
        self, rgb: np.ndarray | None, timings: dict[str, float] | None = None, error: str | None = None
    ) -> list[dict[str, Any]]:
        """Records for one frame: one per face, or a single ``no_face`` / ``bad_frame`` record."""
        if rgb is None or error is not None:
            return [_empty_record(STATUS_BAD_FRAME, error or "frame could not be read")]
        try:
            from edge_affect.runtime.preprocess import to_uint8_rgb

            rgb = to_uint8_rgb(rgb, "frame")
        except ValueError as e:
            return [_empty_record(STATUS_BAD_FRAME, str(e))]
        t0 = time.perf_counter()
        dets = self.detector.detect(rgb)
        if self.max_faces is not None:
            dets = dets[: self.max_faces]
        t1 = time.perf_counter()
        if timings is not None:
            timings["detect"] = timings.get("detect", 0.0) + t1 - t0
        ids = self.tracker.update([d.box for d in dets]) if self.track else list(range(len(dets)))
        if not dets:
            if self.smoother:
                self.smoother.forget(set(self.tracker.tracks))
            return [_empty_record(STATUS_NO_FACE)]
        crops, slots = [], []
        for d in dets:
            try:
                crops.append(align_face(rgb, d.landmarks, self.predictor.input_size, self.template))
                slots.append(None)
            except ValueError as e:
                slots.append(failed_record(STATUS_BAD_CROP, str(e)))
        t2 = time.perf_counter()
        if timings is not None:
            timings["align"] = timings.get("align", 0.0) + t2 - t1
        preds = iter(self.predictor.predict(np.stack(crops), timings=timings) if crops else [])
        out = []
        for d, tid, slot in zip(dets, ids, slots, strict=True):
            rec = slot if slot is not None else next(preds)
            if self.smoother:
                rec = self.smoother.apply(tid, rec)
            out.append(
                {
                    "track": tid,
                    "box": [round(float(v), 2) for v in d.box],
                    "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in d.landmarks],
                    "det_score": round(d.score, 4),
                    **rec,
                }
            )
        if self.smoother:
            self.smoother.forget(set(self.tracker.tracks))
        return out
