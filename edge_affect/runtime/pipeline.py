"""Frame → per-face records: find faces (full detection every N frames, tracked in between), align, predict,
smooth.

Finding faces is the expensive part on a CPU. The pipeline detects the whole frame (at ``det_size``,
long side) every ``detect_every`` frames. In between, a face whose image did not move since it was last
measured (phase correlation of its gray patch, ``hold``) keeps its landmarks; any other is re-found inside
a square region around where its constant-velocity motion puts it, detected at the whole-frame detection's
scale so that YuNet places the box and landmarks as it does on the whole frame (``track_policy="roi"``;
``roi_size`` scales regions to a fixed side instead, the earlier behaviour), or carried along that motion
without looking (``"carry"``). Two events bring the whole-frame detection forward: a track whose region
comes back empty (the face left or was lost), and a change of the image outside every track so large that
looking there costs about as much, or a cut while no face is followed. Smaller changes outside the tracks
and their bodies (``pickup="motion"``: :class:`~edge_affect.runtime.motion.MotionGate`, a frame difference
at 1/8 size) are detected at once in their region, at the whole-frame scale, so a face that walks, cuts or
slides in through the frame edge is picked up on the frame it appears (a region at the edge is cut by it as
the whole frame is). Each track's box and landmarks then pass a One Euro filter (``filter_landmarks``): a
still face's crop does not move with the detector's pixel of jitter, a moving one is followed with little
lag. Per track, the predictions are smoothed over time with hysteresis on the reported expression
(``smooth``, :class:`~edge_affect.runtime.track.EMASmoother`). Each face is predicted from ``views`` views of
its alignment, averaged (:func:`~edge_affect.runtime.align.align_views`; default: the model's ``align_views``,
else one), so that a pixel of landmark noise moves the expression less. All boxes and landmarks are in full-frame
pixels, so crops keep full detail. ``detect_every=1`` detects every frame; ``track=False`` treats every
frame as an unrelated image (no tracks, no filtering, no smoothing).
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_affect.artifact import ALIGN_VIEWS, align_antialias, align_views
from edge_affect.runtime.align import align_views as view_crops
from edge_affect.runtime.align import model_template, view_offsets
from edge_affect.runtime.detect import YuNetDetector, min_face_px, yunet_runner
from edge_affect.runtime.finder import (
    DEFAULT_DET_SIZE,
    DEFAULT_DETECT_EVERY,
    DEFAULT_PICKUP,
    DEFAULT_ROI_PAD,
    DEFAULT_ROI_SIZE,
    DEFAULT_TRACK_POLICY,
    PICKUP_POLICIES,
    TRACK_POLICIES,
    FaceFinder,
)
from edge_affect.runtime.predictor import Predictor, failed_record
from edge_affect.runtime.settings import check_pipeline_settings
from edge_affect.runtime.track import LABEL_MARGIN, SMOOTH_ALPHA, EMASmoother, IoUTracker

log = logging.getLogger(__name__)

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
        f"on 1920×1080; 384 costs ~40 %% less per detection and finds faces from {min_face_px(640, 384):.0f} px)",
    )
    p.add_argument(
        "--detect-every",
        type=int_range(1, 1000),
        default=DEFAULT_DETECT_EVERY,
        metavar="N",
        help=f"detect whole frames every N frames, track faces in between; a new face is found on the frame "
        f"it appears where it changes the image (--pickup motion), else within N frames "
        f"(default {DEFAULT_DETECT_EVERY}; 1 = detect every frame)",
    )
    p.add_argument(
        "--track-policy",
        choices=TRACK_POLICIES,
        default=DEFAULT_TRACK_POLICY,
        help="between detections: roi = re-detect each face in a region around it (default), "
        "carry = move boxes and landmarks by their velocity (faster, boxes lag)",
    )
    p.add_argument(
        "--pickup",
        choices=PICKUP_POLICIES,
        default=DEFAULT_PICKUP,
        help="between detections: motion = detect at once where the frame changed outside every face and "
        "its body (a whole frame when the change reaches the frame edge; default), none = wait for the next "
        "whole-frame detection",
    )
    p.add_argument(
        "--views",
        type=int,
        choices=ALIGN_VIEWS,
        default=None,
        help="average each face over N views of its alignment, ±1/4 crop px apart (N model runs per face): "
        "steadier under a detector's pixel of landmark noise on small faces (default: the model's align_views, "
        "else 1)",
    )


def pipeline_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``FacePipeline`` keyword arguments from the options of :func:`add_pipeline_arguments`."""
    return {
        "det_size": args.det_size,
        "detect_every": args.detect_every,
        "track_policy": args.track_policy,
        "pickup": args.pickup,
        "views": args.views,
    }


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
    smooth: bool = True
    alpha: float = SMOOTH_ALPHA
    label_margin: float = LABEL_MARGIN
    track: bool = True
    max_faces: int | None = None
    det_size: int = DEFAULT_DET_SIZE
    detect_every: int = DEFAULT_DETECT_EVERY
    track_policy: str = DEFAULT_TRACK_POLICY
    roi_size: int | None = DEFAULT_ROI_SIZE
    roi_pad: float = DEFAULT_ROI_PAD
    pickup: str = DEFAULT_PICKUP
    hold: bool = True
    filter_landmarks: bool = True
    fps: float = 30.0
    views: int | None = None

    def __post_init__(self) -> None:
        check_pipeline_settings(self)  # types and ranges, one line naming the setting
        if self.views is None:  # the model's own (package --align-views), else one crop
            self.views = align_views(self.predictor.meta.extra)
        try:
            view_offsets(self.views)  # 1, 2 or 4
        except ValueError as e:
            raise ValueError(f"FacePipeline: {e}") from None
        if self.detector is None:
            backend = self.predictor.backend
            providers = getattr(self.predictor.runner, "providers", None) or None
            self.detector = YuNetDetector(yunet_runner(backend, providers))
        self.finder = FaceFinder(
            self.detector,
            det_size=self.det_size,
            detect_every=self.detect_every,
            track_policy=self.track_policy,
            roi_size=self.roi_size,
            roi_pad=self.roi_pad,
            pickup=self.pickup,
            max_faces=self.max_faces,
            hold=self.hold,
            filter_landmarks=self.filter_landmarks,
            fps=self.fps,
        )
        self.smoother = (
            EMASmoother(self.alpha, list(self.predictor.meta.au_thresholds), self.label_margin)
            if self.smooth and self.track
            else None
        )
        self.template = model_template(self.predictor.meta.extra)
        self.antialias = align_antialias(self.predictor.meta.extra)  # the crops the model was trained on
        self._lock = threading.Lock()
        onnx_only = self.predictor.backend == "onnxruntime" and self.detector.runner.backend == "onnxruntime"
        self._serial = self.track or not onnx_only

    def settings(self) -> dict[str, Any]:
        """The face-finding and smoothing settings, JSON-ready (for reports)."""
        smooth = {"alpha": self.alpha, "label_margin": self.label_margin} if self.smoother else None
        return {**self.finder.settings(self.track), "smooth": smooth, "views": self.views}

    def reset(self) -> None:
        """Forget tracks and smoothing state (call between unrelated sources)."""
        with self._lock:
            self.finder.reset()
            if self.smoother:
                self.smoother.reset()

    @property
    def tracker(self) -> IoUTracker:
        return self.finder.tracker

    @property
    def stats(self) -> dict[str, int]:
        """Counters of the face finding (:class:`~edge_affect.runtime.finder.FaceFinder`)."""
        return self.finder.stats

    def close(self) -> None:
        self.detector.close()

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
            dets = self.finder.find(rgb, timings)
            ids = [int(d.track) for d in dets]  # type: ignore[arg-type]
        else:
            dets = self.finder.detect(rgb, timings)
            ids = list(range(len(dets)))
        if not dets:
            if self.smoother:
                self.smoother.forget(set(self.tracker.tracks))
            return [_empty_record(STATUS_NO_FACE)]
        t1 = time.perf_counter()
        crops, slots = [], []
        size, views = self.predictor.input_size, int(self.views)  # type: ignore[arg-type]
        for d in dets:
            try:
                crops.append(view_crops(rgb, d.landmarks, size, self.template, self.antialias, views))
                slots.append(None)
            except ValueError as e:
                slots.append(failed_record(STATUS_BAD_CROP, str(e)))
        _add(timings, "align", time.perf_counter() - t1)
        preds = iter(
            self.predictor.predict(np.concatenate(crops), timings=timings, views=views)
            if crops
            else []
        )
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
