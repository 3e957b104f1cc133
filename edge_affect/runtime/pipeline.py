"""Frame → per-face records: find faces (full detection every N frames, tracked in between), align, predict.

Finding faces is the expensive part on a CPU. The pipeline detects the whole frame at a reduced input
size (``det_size``, long side) every ``detect_every`` frames; in between it re-finds each visible track
only inside a square region around where its constant-velocity motion puts it (``track_policy="roi"``,
a batch of ``roi_size``² detector inputs), or carries the boxes and landmarks along that motion without
looking (``"carry"``). A track whose region comes back empty triggers a full detection on the same frame,
so a face that leaves is dropped at once; a face that enters is picked up by the next full detection,
within ``detect_every`` frames. All boxes and landmarks are in full-frame pixels, so crops keep full
detail. ``detect_every=1`` (or ``track=False``) detects every frame, as before.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_affect.runtime.align import align_face
from edge_affect.runtime.detect import Detection, YuNetDetector, min_face_px, yunet_runner
from edge_affect.runtime.predictor import Predictor, failed_record
from edge_affect.runtime.track import EMASmoother, IoUTracker, iou_xywh

log = logging.getLogger(__name__)

#: Frame-level statuses (face-level ones are in ``predictor``).
STATUS_NO_FACE = "no_face"
STATUS_BAD_FRAME = "bad_frame"
STATUS_BAD_CROP = "bad_crop"

#: Detector input long side for full-frame detection. Measured on 640×480 clips: 2.8× fewer detector
#: pixels than 640 (4.5 vs 8.2 ms CPU) and every face from 40 px tall still found (320: from 52 px, so
#: some 48-px faces were missed; 640: from 24 px).
DEFAULT_DET_SIZE = 384
#: Full detection every this many frames; tracked (region re-detection) in between.
DEFAULT_DETECT_EVERY = 5
TRACK_POLICIES = ("roi", "carry")
DEFAULT_TRACK_POLICY = "roi"
#: Detector input side for a tracked face's region, and the region's side relative to the face.
DEFAULT_ROI_SIZE = 128
DEFAULT_ROI_PAD = 2.0

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


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """The face-finding settings as command-line options (``run``, ``bench --pipeline``)."""
    from edge_affect.cliutil import int_range

    p.add_argument(
        "--det-size",
        type=int_range(32, 4096),
        default=DEFAULT_DET_SIZE,
        metavar="PX",
        help=f"face detector input, long side in px (default {DEFAULT_DET_SIZE}: finds faces from "
        f"{min_face_px(640, DEFAULT_DET_SIZE):.0f} px tall on 640×480, from {min_face_px(1920, DEFAULT_DET_SIZE):.0f} px "
        f"on 1920×1080; 640 finds {min_face_px(640, 640):.0f}-px faces at ~4× the cost)",
    )
    p.add_argument(
        "--detect-every",
        type=int_range(1, 1000),
        default=DEFAULT_DETECT_EVERY,
        metavar="N",
        help=f"detect whole frames every N frames, track faces in between; a new face is found within N "
        f"frames (default {DEFAULT_DETECT_EVERY}; 1 = detect every frame)",
    )
    p.add_argument(
        "--track-policy",
        choices=TRACK_POLICIES,
        default=DEFAULT_TRACK_POLICY,
        help="between detections: roi = re-detect each face in a region around it (default), "
        "carry = move boxes and landmarks by their velocity (faster, boxes lag)",
    )


def pipeline_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``FacePipeline`` keyword arguments from the options of :func:`add_pipeline_arguments`."""
    return {"det_size": args.det_size, "detect_every": args.detect_every, "track_policy": args.track_policy}


def _empty_record(status: str, error: str | None = None) -> dict[str, Any]:
    rec = failed_record(status, error or "")
    rec["error"] = error
    return {"track": None, "box": None, "landmarks": None, "det_score": None, **rec}


def _add(timings: dict[str, float] | None, key: str, seconds: float) -> None:
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + seconds


@dataclass
class FacePipeline:
    """Frame → per-face records: find faces (see the module docstring), align, predict (batched), smooth.

    One pipeline follows one stream. Shared by threads it stays correct: each call finds faces in its
    own frame only (calls with tracking are serialised by a lock; with ``track=False`` on ONNX Runtime
    they run in parallel), though track ids then mix across the threads' streams.
    """

    predictor: Predictor
    detector: YuNetDetector = field(default=None)  # type: ignore[assignment]
    smooth: bool = False
    alpha: float = 0.4
    track: bool = True
    max_faces: int | None = None
    det_size: int = DEFAULT_DET_SIZE
    detect_every: int = DEFAULT_DETECT_EVERY
    track_policy: str = DEFAULT_TRACK_POLICY
    roi_size: int = DEFAULT_ROI_SIZE
    roi_pad: float = DEFAULT_ROI_PAD

    def __post_init__(self) -> None:
        if int(self.det_size) < 32:
            raise ValueError(f"detector input size {self.det_size}: expected ≥ 32 px")
        if int(self.detect_every) < 1:
            raise ValueError(f"detect every {self.detect_every} frames: expected ≥ 1")
        if self.track_policy not in TRACK_POLICIES:
            raise ValueError(f"track policy {self.track_policy!r}: expected one of {', '.join(TRACK_POLICIES)}")
        if int(self.roi_size) < 32 or not self.roi_pad >= 1.0:
            raise ValueError(f"region {self.roi_size} px / pad {self.roi_pad}: expected ≥ 32 px and pad ≥ 1")
        if self.detector is None:
            backend = self.predictor.backend
            providers = getattr(self.predictor.runner, "providers", None) or None
            self.detector = YuNetDetector(yunet_runner(backend, providers))
        self.tracker = IoUTracker()
        self.smoother = EMASmoother(self.alpha, list(self.predictor.meta.au_thresholds)) if self.smooth else None
        tpl = self.predictor.meta.extra.get("align_template")
        self.template = np.asarray(tpl, dtype=np.float64) * 112.0 if tpl is not None else None
        self._lock = threading.Lock()
        onnx_only = self.predictor.backend == "onnxruntime" and self.detector.runner.backend == "onnxruntime"
        self._serial = self.track or not onnx_only
        self._last_full = -(10**9)
        #: Counters: frames, full detections (scheduled / after a lost track), region detections, tracks lost.
        self.stats = {"frames": 0, "full": 0, "full_after_loss": 0, "regions": 0, "lost": 0}

    def settings(self) -> dict[str, Any]:
        """The face-finding settings, JSON-ready (for reports)."""
        return {
            "det_size": int(self.det_size),
            "detect_every": int(self.detect_every) if self.track else 1,
            "track_policy": self.track_policy if self.track and self.detect_every > 1 else "none",
            "roi_size": int(self.roi_size),
            "roi_pad": float(self.roi_pad),
            "score_threshold": self.detector.score_threshold,
        }

    def reset(self) -> None:
        """Forget tracks and smoothing state (call between unrelated sources)."""
        with self._lock:
            self.tracker.reset()
            self._last_full = -(10**9)
            if self.smoother:
                self.smoother.reset()

    def close(self) -> None:
        self.detector.close()

    # -- finding faces ---------------------------------------------------------------------------
    def _detect_full(self, rgb: np.ndarray, timings: dict[str, float] | None) -> list[Detection]:
        t0 = time.perf_counter()
        dets = self.detector.detect(rgb, max_side=self.det_size)
        if self.max_faces is not None:
            dets = dets[: self.max_faces]
        _add(timings, "detect", time.perf_counter() - t0)
        return dets

    def _full(self, rgb: np.ndarray, timings: dict[str, float] | None) -> list[Detection]:
        dets = self._detect_full(rgb, timings)
        ids = self.tracker.update([d.box for d in dets], [d.landmarks for d in dets], [d.score for d in dets])
        for d, tid in zip(dets, ids, strict=True):
            d.track = tid
        self._last_full = self.tracker.frame
        self.stats["full"] += 1
        return dets

    def _follow(self, rgb: np.ndarray, timings: dict[str, float] | None) -> list[Detection]:
        """This frame's faces with track ids: a full detection when due, else the tracks re-found."""
        frame = self.tracker.frame + 1
        visible = self.tracker.visible()
        if frame - self._last_full >= self.detect_every:
            return self._full(rgb, timings)
        if not visible:
            self.tracker.advance({})
            return []
        found: dict[int, Detection] = {}
        if self.track_policy == "carry":
            carried = []
            for tid in visible:
                box, lm = self.tracker.predicted_box(tid), self.tracker.predicted_landmarks(tid)
                if lm is not None:
                    carried.append(Detection(box.astype(np.float32), lm, self.tracker.tracks[tid].score, tid))
            self.tracker.advance({}, coasting={int(d.track) for d in carried})  # type: ignore[arg-type]
            return sorted(carried, key=lambda d: -d.score)
        else:
            t0 = time.perf_counter()
            boxes = [self.tracker.predicted_box(tid) for tid in visible]
            centers = [b[:2] + b[2:] / 2 for b in boxes]
            sides = [self.roi_pad * float(max(b[2], b[3])) for b in boxes]
            regions = self.detector.detect_regions(rgb, centers, sides, self.roi_size)
            self.stats["regions"] += len(regions)
            for tid, box, dets in zip(visible, boxes, regions, strict=True):
                if not dets:
                    continue
                iou = iou_xywh(np.stack([d.box for d in dets]), box)[:, 0]
                best = int(np.argmax(iou))
                if iou[best] >= self.tracker.iou_threshold:
                    found[tid] = dets[best]
                    found[tid].track = tid
            # Two tracks that converged on one face: the older id keeps it.
            tids = sorted(found)
            for i, a in enumerate(tids):
                for b in tids[i + 1 :]:
                    if a in found and b in found and iou_xywh(found[a].box, found[b].box)[0, 0] > 0.5:
                        del found[b]
            _add(timings, "track", time.perf_counter() - t0)
        if len(found) < len(visible):
            self.stats["lost"] += len(visible) - len(found)
            self.stats["full_after_loss"] += 1
            return self._full(rgb, timings)
        self.tracker.advance(found)
        return sorted(found.values(), key=lambda d: -d.score)

    # -- frames ----------------------------------------------------------------------------------
    def process(
        self, rgb: np.ndarray | None, timings: dict[str, float] | None = None, error: str | None = None
    ) -> list[dict[str, Any]]:
        """Records for one frame: one per face, or a single ``no_face`` / ``bad_frame`` record.

        ``timings``, if given, receives seconds per stage: ``detect`` (full frames), ``track`` (regions),
        ``align``, ``preprocess``, ``infer``, ``post``.
        """
        if rgb is None or error is not None:
            return [_empty_record(STATUS_BAD_FRAME, error or "frame could not be read")]
        try:
            from edge_affect.runtime.preprocess import to_uint8_rgb

            rgb = to_uint8_rgb(rgb, "frame")
        except ValueError as e:
            return [_empty_record(STATUS_BAD_FRAME, str(e))]
        if not self._serial:
            return self._process(rgb, timings)
        with self._lock:
            return self._process(rgb, timings)

    def _process(self, rgb: np.ndarray, timings: dict[str, float] | None) -> list[dict[str, Any]]:
        self.stats["frames"] += 1
        if self.track:
            dets = self._follow(rgb, timings)
            ids = [int(d.track) for d in dets]  # type: ignore[arg-type]
        else:
            dets = self._detect_full(rgb, timings)
            ids = list(range(len(dets)))
        if not dets:
            if self.smoother:
                self.smoother.forget(set(self.tracker.tracks))
            return [_empty_record(STATUS_NO_FACE)]
        t1 = time.perf_counter()
        crops, slots = [], []
        for d in dets:
            try:
                crops.append(align_face(rgb, d.landmarks, self.predictor.input_size, self.template))
                slots.append(None)
            except ValueError as e:
                slots.append(failed_record(STATUS_BAD_CROP, str(e)))
        _add(timings, "align", time.perf_counter() - t1)
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
