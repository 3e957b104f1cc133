"""YuNet face detection: whole frames at a chosen input size, or regions around known faces.

YuNet-s (MIT; ``yunet_s_dynamic.onnx`` from libfacedetection.train, the same weights as OpenCV Zoo's
``face_detection_yunet_2023mar.onnx`` with dynamic N×H×W; shipped in ``edge_affect/assets/yunet``)
runs through the same runners as the affect model, so on a GPU detection runs on the GPU too
(ONNX Runtime's CUDA/TensorRT providers, or a TensorRT engine built from it once and cached).
Its raw outputs are decoded here with numpy; NMS is OpenCV's ``cv2.dnn.NMSBoxes``.

Detection cost grows with the detector's input pixels, not the frame's: a frame is scaled so its long
side is at most ``max_side`` and boxes/landmarks are mapped back to frame pixels, so aligned crops are
cut from the full-resolution frame. YuNet finds faces down to about :data:`MIN_FACE_DETECTOR_PX` pixels
tall *in its input*, so the smallest face found in a frame is ``min_face_px(long_side, max_side)``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.runtime.backends.base import BaseRunner

log = logging.getLogger(__name__)

YUNET_DIR = Path(__file__).resolve().parent.parent / "assets" / "yunet"
YUNET_ONNX = YUNET_DIR / "yunet_s_dynamic.onnx"
#: Default long side of the detector input for :meth:`YuNetDetector.detect` (the face pipeline's own
#: default is :data:`edge_affect.runtime.pipeline.DEFAULT_DET_SIZE`).
YUNET_MAX_SIDE = 640
YUNET_ALIGN = 32
YUNET_STRIDES = (8, 16, 32)
#: Largest detector input the cached TensorRT engine accepts (long side, and the ROI batch).
YUNET_TRT_MAX_SIDE = 1280
YUNET_TRT_MAX_BATCH = 8
#: Smallest face height YuNet finds reliably, in pixels of its input. Measured on generated 640×480 clips
#: (``runtime.clips``: the astronaut's head cut out, mp4v), 6 positions per size, detector input 256–640:
#: every face from 24–26 px found, none below 20. (On the uncut photo, shoulders in view, 14 px suffice.)
MIN_FACE_DETECTOR_PX = 26.0


def min_face_px(long_side: int, max_side: int) -> float:
    """Smallest face height (frame pixels) found when a frame with this long side is detected at ``max_side``."""
    return MIN_FACE_DETECTOR_PX * max(1.0, long_side / max_side)


@dataclass
class Detection:
    """One face: box ``[x, y, w, h]`` and 5 landmarks (x, y) in frame pixels, detector score."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    track: int | None = None


def _cache_dir() -> Path:
    root = os.environ.get("EDGE_AFFECT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edge_affect")
    return Path(root)


def yunet_runner(
    backend: str = "onnxruntime", providers: Any = None, *, intra_op_threads: int | None = None
) -> BaseRunner:
    """A runner for YuNet on ``backend``: ONNX Runtime (given providers) or a cached TensorRT engine.

    On ONNX Runtime YuNet runs on one intra-op thread unless ``intra_op_threads`` or the
    ``EDGE_AFFECT_ORT_THREADS`` environment variable says otherwise: at 320 px and on 128-px regions a
    second thread saves little, while its spinning takes the core the frame reader (and whatever else
    runs on a small device) needs; on a busy 2-core machine a 2-thread 640-px detection took 3× longer.

    The TensorRT engine is built once per YuNet file, TensorRT version and GPU with the runtime's helper
    builder (``build_engine_from_onnx``; the export builder only builds the affect model's square
    ``image`` input), with one profile from 32×32 up to :data:`YUNET_TRT_MAX_SIDE` and batches of ROIs.
    """
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
        tag = (
            f"{sha256_file(YUNET_ONNX)[:12]}-b{YUNET_TRT_MAX_BATCH}-s{YUNET_TRT_MAX_SIDE}"
            f"-trt{trt.__version__}-{gpu['gpu_name']}-sm{gpu['compute_capability']}"
        )
        engine = _cache_dir() / f"yunet-{''.join(c if c.isalnum() or c in '.-' else '_' for c in tag)}.engine"
        if not engine.is_file():
            log.info("building the YuNet TensorRT engine once: %s", engine)
            lo = (1, 3, YUNET_ALIGN, YUNET_ALIGN)
            opt = (1, 3, 256, 320)
            hi = (YUNET_TRT_MAX_BATCH, 3, YUNET_TRT_MAX_SIDE, YUNET_TRT_MAX_SIDE)
            build_engine_from_onnx(YUNET_ONNX, engine, profile={"input": (lo, opt, hi)})
        return TensorRTRunner(engine)
    from edge_affect.runtime.backends.onnxruntime_runner import OnnxRuntimeRunner

    if intra_op_threads is None and not os.environ.get("EDGE_AFFECT_ORT_THREADS"):
        intra_op_threads = 1
    return OnnxRuntimeRunner(
        YUNET_ONNX, providers if backend == "onnxruntime" else "cpu", intra_op_threads=intra_op_threads, name="yunet"
    )


def _ceil_to(v: float, k: int) -> int:
    return max(k, -(-int(np.ceil(v)) // k) * k)


def _shrink(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """``img`` resized to ``w``×``h``: averaged by a whole factor first where it shrinks ≥ 2× (OpenCV's fast
    integer INTER_AREA path; a fractional INTER_AREA costs 7× linear), then bilinear, so it does not alias."""
    import cv2

    k = int(min(img.shape[1] / w, img.shape[0] / h))
    if k >= 2:
        img = cv2.resize(img, (img.shape[1] // k, img.shape[0] // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def _fill_bgr(planes: np.ndarray, rgb: np.ndarray) -> None:
    """Copy an H×W×3 RGB image into the top-left of 3×H'×W' float planes in BGR order."""
    h, w = rgb.shape[:2]
    for c in range(3):
        planes[c, :h, :w] = rgb[:, :, 2 - c]


@dataclass(frozen=True)
class _Mapping:
    """Detector-input pixels → frame pixels: ``x_frame = x * ax + bx`` (same for y with ay, by)."""

    ax: float
    bx: float
    ay: float
    by: float


class YuNetDetector:
    """Faces with 5 landmarks in RGB frames of any size; safe to share between threads (no per-call state)."""

    def __init__(
        self,
        runner: BaseRunner | None = None,
        *,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        min_size: float = 8.0,
        max_side: int = YUNET_MAX_SIDE,
    ) -> None:
        self.runner = (runner or yunet_runner()).activate()
        spec = self.runner.inputs.get("input")
        if spec is None or len(spec.shape) != 4 or "cls_8" not in self.runner.outputs:
            raise ValueError(f"{self.runner.name}: not a YuNet model (inputs {self.runner.describe()['inputs']})")
        if max_side < YUNET_ALIGN:
            raise ValueError(f"detector input size {max_side}: expected ≥ {YUNET_ALIGN} px")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self.min_size = min_size
        self.max_side = int(max_side)
        self._max_batch = self.runner.max_batch or 64
        self._grids: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def close(self) -> None:
        self.runner.deactivate()

    def _grid(self, stride: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        key = (stride, h, w)
        grid = self._grids.get(key)
        if grid is None:  # a race only computes the same read-only arrays twice
            rows, cols = np.divmod(np.arange((h // stride) * (w // stride)), w // stride)
            grid = self._grids[key] = (cols.astype(np.float32), rows.astype(np.float32))
        return grid

    # -- whole frames ----------------------------------------------------------------------------
    def prepare(self, rgb: np.ndarray, max_side: int | None = None) -> tuple[np.ndarray, float]:
        """``rgb`` scaled to long side ≤ ``max_side`` as a 1×3×H×W BGR 0–255 blob (zero-padded to /32), and the scale.

        (Filled plane by plane with numpy: ``cv2.dnn.blobFromImage`` is 9× slower here.)
        """
        import cv2

        side = self.max_side if max_side is None else int(max_side)
        h, w = rgb.shape[:2]
        scale = min(1.0, side / max(h, w))
        img = rgb
        if scale < 1.0:
            img = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        ih, iw = img.shape[:2]
        blob = np.zeros((1, 3, _ceil_to(ih, YUNET_ALIGN), _ceil_to(iw, YUNET_ALIGN)), dtype=np.float32)
        _fill_bgr(blob[0], img)
        return blob, scale

    def detect(self, rgb: np.ndarray, max_side: int | None = None) -> list[Detection]:
        """All faces in one H×W×3 uint8 RGB frame, best score first, in frame pixels.

        The detector sees the frame scaled to long side ``max_side`` (default: the detector's own).
        """
        blob, scale = self.prepare(rgb, max_side)
        out = self.runner.infer({"input": blob})
        # Pixel centres: input pixel u shows frame pixel (u + 0.5) / scale - 0.5.
        off = 0.5 / scale - 0.5
        return self._decode(out, 0, blob.shape[2], blob.shape[3], _Mapping(1 / scale, off, 1 / scale, off))

    def detect_rect(self, rgb: np.ndarray, rect: tuple[int, int, int, int], scale: float = 1.0) -> list[Detection]:
        """Faces inside the frame rectangle ``(x0, y0, x1, y1)`` (frame pixels, clipped to the frame), the
        crop seen at ``scale`` (≤ 1; pass a whole-frame detection's scale to find the same faces), in
        frame pixels."""
        h, w = rgb.shape[:2]
        x0, y0 = max(0, int(rect[0])), max(0, int(rect[1]))
        x1, y1 = min(w, int(rect[2])), min(h, int(rect[3]))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return []
        crop = rgb[y0:y1, x0:x1]
        dets = self.detect(crop, max_side=max(YUNET_ALIGN, round(max(x1 - x0, y1 - y0) * min(1.0, scale))))
        for d in dets:
            d.box[:2] += (x0, y0)
            d.landmarks += (x0, y0)
        return dets

    # -- regions around known faces ----------------------------------------------------------------
    def detect_regions(
        self, rgb: np.ndarray, centers: list[np.ndarray], sides: list[float], size: int = 128
    ) -> list[list[Detection]]:
        """Faces inside square regions of ``rgb`` (centre x, y and side in frame pixels), each region
        scaled to ``size``×``size`` and all run as one batch; results in frame pixels, one list per region.

        This is how tracked faces are re-found between full-frame detections: a region twice a face's
        size costs a fraction of the whole frame and gives landmarks at the region's resolution.
        """
        if not centers:
            return []
        size = _ceil_to(size, YUNET_ALIGN)
        h, w = rgb.shape[:2]
        blob = np.zeros((len(centers), 3, size, size), dtype=np.float32)
        maps = []
        for i, ((cx, cy), side) in enumerate(zip(centers, sides, strict=True)):
            side = max(float(side), 8.0)
            x0, y0 = float(cx) - side / 2, float(cy) - side / 2
            # A region centred in the frame is shifted to lie inside it where it fits, so a frame edge
            # falls on the detector input's edge as in a whole-frame detection (not inside it, against
            # zero padding the network never saw there).
            if 0 <= cx < w and 0 <= cy < h:
                if side <= w:
                    x0 = min(max(x0, 0.0), w - side)
                if side <= h:
                    y0 = min(max(y0, 0.0), h - side)
            ix0, iy0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
            ix1, iy1 = min(w, int(np.ceil(x0 + side))), min(h, int(np.ceil(y0 + side)))
            scale = size / side
            if ix1 - ix0 < 2 or iy1 - iy0 < 2:  # region entirely outside the frame: an empty input
                maps.append(_Mapping(1 / scale, x0, 1 / scale, y0))
                continue
            ox = min(size - 1, max(0, round((ix0 - x0) * scale)))
            oy = min(size - 1, max(0, round((iy0 - y0) * scale)))
            tw = max(1, min(size - ox, round((ix1 - ix0) * scale)))
            th = max(1, min(size - oy, round((iy1 - iy0) * scale)))
            _fill_bgr(blob[i, :, oy : oy + th, ox : ox + tw], _shrink(rgb[iy0:iy1, ix0:ix1], tw, th))
            sx, sy = tw / (ix1 - ix0), th / (iy1 - iy0)
            maps.append(_Mapping(1 / sx, ix0 + (0.5 - ox) / sx - 0.5, 1 / sy, iy0 + (0.5 - oy) / sy - 0.5))
        results: list[list[Detection]] = []
        for start in range(0, len(maps), self._max_batch):
            chunk = blob[start : start + self._max_batch]
            out = self.runner.infer({"input": chunk})
            for i in range(chunk.shape[0]):
                results.append(self._decode(out, i, size, size, maps[start + i]))
        return results

    # -- decoding --------------------------------------------------------------------------------
    def _decode(self, out: dict[str, np.ndarray], item: int, h: int, w: int, m: _Mapping) -> list[Detection]:
        """YuNet's per-stride outputs for batch item ``item`` → detections in frame pixels (after NMS)."""
        import cv2

        boxes, kpss, scores = [], [], []
        for s in YUNET_STRIDES:
            cols, rows = self._grid(s, h, w)
            # cls and obj are sigmoid outputs in [0, 1]: threshold the raw product, clip only what is kept.
            prod = out[f"cls_{s}"][item].reshape(-1) * out[f"obj_{s}"][item].reshape(-1)
            keep = np.nonzero(prod >= self.score_threshold**2)[0]
            if keep.size == 0:
                continue
            score = np.sqrt(np.clip(prod[keep], 0.0, 1.0))
            bb = out[f"bbox_{s}"][item].reshape(-1, 4)[keep]
            kp = out[f"kps_{s}"][item].reshape(-1, 10)[keep]
            c, r = cols[keep], rows[keep]
            cx, cy = (c + bb[:, 0]) * s, (r + bb[:, 1]) * s
            bw, bh = np.exp(bb[:, 2]) * s, np.exp(bb[:, 3]) * s
            boxes.append(np.stack([(cx - bw / 2) * m.ax + m.bx, (cy - bh / 2) * m.ay + m.by, bw * m.ax, bh * m.ay], 1))
            kx = (kp[:, 0::2] + c[:, None]) * s * m.ax + m.bx
            ky = (kp[:, 1::2] + r[:, None]) * s * m.ay + m.by
            kpss.append(np.stack([kx, ky], 2))
            scores.append(score)
        if not boxes:
            return []
        b = np.concatenate(boxes)
        k = np.concatenate(kpss)
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
