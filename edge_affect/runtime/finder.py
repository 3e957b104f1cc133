"""Finding faces in a stream: whole-frame detection every N frames, tracks re-found in between, and new
faces picked up where the image changed (the policy is described in :mod:`edge_affect.runtime.pipeline`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_affect.runtime.detect import Detection, YuNetDetector
from edge_affect.runtime.motion import MotionGate
from edge_affect.runtime.track import IoUTracker, iou_xywh

#: Detector input long side for full-frame detection. 640 (finds faces from 26 px tall on 640×480):
#: with detection every 10th frame it costs 0.8 ms per frame, and smaller sizes judge faces cut by the
#: frame edge differently from full-size detection (at 384, 3 % of frames of the entering/leaving clip).
DEFAULT_DET_SIZE = 640
#: Full detection every this many frames; tracked (region re-detection) and motion pickup in between.
DEFAULT_DETECT_EVERY = 10
TRACK_POLICIES = ("roi", "carry")
DEFAULT_TRACK_POLICY = "roi"
#: Between full detections, look for new faces where the frame changed outside every track ("motion"),
#: or wait for the next full detection ("none").
PICKUP_POLICIES = ("motion", "none")
DEFAULT_PICKUP = "motion"
#: Motion pickup: a tracked face's body is where its own motion is expected (so a walking person does not
#: look like a new face): from the face centre down to the frame's bottom, this many face widths to each
#: side. A new face there waits for the next whole-frame detection.
BODY_HALF_WIDTH = 3.0
#: Motion pickup: a change over more than this fraction of the frame is the camera moving or re-exposing,
#: not a face arriving; new faces then wait for the next whole-frame detection.
GLOBAL_CHANGE = 0.6
#: Detector input side for a tracked face's region, and the region's side relative to the face.
DEFAULT_ROI_SIZE = 128
DEFAULT_ROI_PAD = 2.0


def _add(timings: dict[str, float] | None, key: str, seconds: float) -> None:
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + seconds


@dataclass
class FaceFinder:
    """Faces of successive frames of one stream with track ids, under the settings of the face pipeline
    (``FacePipeline`` holds one; not thread-safe on its own)."""

    detector: YuNetDetector
    det_size: int = DEFAULT_DET_SIZE
    detect_every: int = DEFAULT_DETECT_EVERY
    track_policy: str = DEFAULT_TRACK_POLICY
    roi_size: int = DEFAULT_ROI_SIZE
    roi_pad: float = DEFAULT_ROI_PAD
    pickup: str = DEFAULT_PICKUP
    max_faces: int | None = None

    def __post_init__(self) -> None:
        if int(self.det_size) < 32:
            raise ValueError(f"detector input size {self.det_size}: expected ≥ 32 px")
        if int(self.detect_every) < 1:
            raise ValueError(f"detect every {self.detect_every} frames: expected ≥ 1")
        if self.track_policy not in TRACK_POLICIES:
            raise ValueError(f"track policy {self.track_policy!r}: expected one of {', '.join(TRACK_POLICIES)}")
        if self.pickup not in PICKUP_POLICIES:
            raise ValueError(f"pickup {self.pickup!r}: expected one of {', '.join(PICKUP_POLICIES)}")
        if int(self.roi_size) < 32 or not self.roi_pad >= 1.0:
            raise ValueError(f"region {self.roi_size} px / pad {self.roi_pad}: expected ≥ 32 px and pad ≥ 1")
        self.tracker = IoUTracker()
        self.motion = MotionGate()
        self._last_full = -(10**9)
        #: Counters: frames, full detections (all / after a lost track / for a face the frame edge cuts),
        #: region re-detections, tracks lost, motion regions looked at, faces picked up there, frames whose
        #: change was global (camera motion: no look).
        self.stats = {
            "frames": 0,
            "full": 0,
            "full_after_loss": 0,
            "full_at_edge": 0,
            "regions": 0,
            "lost": 0,
            "motion": 0,
            "picked_up": 0,
            "global_change": 0,
            "motion_at_edge": 0,
        }

    def settings(self, tracking: bool = True) -> dict[str, Any]:
        """The face-finding settings, JSON-ready (for reports); ``tracking=False``: every frame detected."""
        between = tracking and self.detect_every > 1
        return {
            "det_size": int(self.det_size),
            "detect_every": int(self.detect_every) if tracking else 1,
            "track_policy": self.track_policy if between else "none",
            "pickup": self.pickup if between else "none",
            "roi_size": int(self.roi_size),
            "roi_pad": float(self.roi_pad),
            "score_threshold": self.detector.score_threshold,
        }

    def reset(self) -> None:
        """Forget tracks and the previous frame (call between unrelated sources)."""
        self.tracker.reset()
        self.motion.reset()
        self._last_full = -(10**9)

    def detect(self, rgb: np.ndarray, timings: dict[str, float] | None) -> list[Detection]:
        t0 = time.perf_counter()
        dets = self.detector.detect(rgb, max_side=self.det_size)
        if self.max_faces is not None:
            dets = dets[: self.max_faces]
        _add(timings, "detect", time.perf_counter() - t0)
        return dets

    def _full(self, rgb: np.ndarray, timings: dict[str, float] | None) -> list[Detection]:
        dets = self.detect(rgb, timings)
        ids = self.tracker.update([d.box for d in dets], [d.landmarks for d in dets], [d.score for d in dets])
        for d, tid in zip(dets, ids, strict=True):
            d.track = tid
        self._last_full = self.tracker.frame
        self.stats["full"] += 1
        return dets

    def _full_scale(self, rgb: np.ndarray) -> float:
        """Detector input pixels per frame pixel in a whole-frame detection of ``rgb``."""
        return min(1.0, self.det_size / max(rgb.shape[:2]))

    def _refind(self, rgb: np.ndarray, predicted: dict[int, np.ndarray]) -> dict[int, Detection]:
        """Visible tracks (``predicted``: where their motion puts them) re-found in square regions there."""
        visible, boxes = list(predicted), list(predicted.values())
        centers = [b[:2] + b[2:] / 2 for b in boxes]
        sides = [self.roi_pad * float(max(b[2], b[3])) for b in boxes]
        regions = self.detector.detect_regions(rgb, centers, sides, self.roi_size)
        self.stats["regions"] += len(regions)
        found: dict[int, Detection] = {}
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
        return found

    def _pick_up(
        self, rgb: np.ndarray, changed: np.ndarray | None, covers: list[np.ndarray], known: list[np.ndarray]
    ) -> list[Detection] | None:
        """New faces where the frame changed outside every track (``covers``: x0, y0, x1, y1), found by
        detecting that region at the whole-frame scale; ``None`` when a whole-frame detection is due instead:
        the region is so large that it costs about the same, or it touches the frame edge."""
        h, w = rgb.shape[:2]
        if changed is not None and float(changed.mean()) > GLOBAL_CHANGE:
            self.stats["global_change"] += 1
            return []
        rect = self.motion.uncovered(changed, (w, h), covers)
        if rect is None:
            return []
        x0, y0, x1, y1 = rect
        if x0 <= 0 or y0 <= 0 or x1 >= w or y1 >= h:
            # Something entering through the frame edge: a face it brings is cut by the edge, and such a
            # face is judged by whole-frame detection (as a tracked one is, see ``find``).
            self.stats["motion_at_edge"] += 1
            return None
        pad = max(32.0, 0.5 * max(x1 - x0, y1 - y0))
        x0, y0, x1, y1 = max(0, int(x0 - pad)), max(0, int(y0 - pad)), min(w, int(x1 + pad)), min(h, int(y1 + pad))
        if (x1 - x0) * (y1 - y0) > 0.5 * w * h:
            return None
        self.stats["motion"] += 1
        dets = self.detector.detect_rect(rgb, (x0, y0, x1, y1), self._full_scale(rgb))
        if known and dets:
            overlap = iou_xywh(np.stack([d.box for d in dets]), np.stack(known)).max(axis=1)
            dets = [d for d, o in zip(dets, overlap, strict=True) if o < self.tracker.iou_threshold]
        return dets

    def find(self, rgb: np.ndarray, timings: dict[str, float] | None) -> list[Detection]:
        """This frame's faces with track ids: a full detection when due, else the tracks re-found and any
        new face picked up where the frame changed outside them."""
        frame = self.tracker.frame + 1
        t0 = time.perf_counter()
        changed = self.motion.update(rgb) if self.pickup == "motion" and self.detect_every > 1 else None
        _add(timings, "motion", time.perf_counter() - t0)
        visible = self.tracker.visible()
        if frame - self._last_full >= self.detect_every:
            return self._full(rgb, timings)
        h, w = rgb.shape[:2]
        predicted = {tid: self.tracker.predicted_box(tid) for tid in visible}
        for b in predicted.values():
            if b[0] < 1 or b[1] < 1 or b[0] + b[2] > w - 1 or b[1] + b[3] > h - 1:
                # A face the frame edge cuts: whether YuNet still calls it a face depends on its context
                # and scale, so it is judged as every-frame detection would judge it.
                self.stats["full_at_edge"] += 1
                return self._full(rgb, timings)
        found: dict[int, Detection] = {}
        coasting: set[int] = set()
        t0 = time.perf_counter()
        if self.track_policy == "carry":
            for tid in visible:
                box, lm = predicted[tid], self.tracker.predicted_landmarks(tid)
                if lm is not None:
                    found[tid] = Detection(box.astype(np.float32), lm, self.tracker.tracks[tid].score, tid)
            coasting = set(found)
        elif visible:
            found = self._refind(rgb, predicted)
            if len(found) < len(visible):
                _add(timings, "track", time.perf_counter() - t0)
                self.stats["lost"] += len(visible) - len(found)
                self.stats["full_after_loss"] += 1
                return self._full(rgb, timings)
        covers = []
        for tid in visible:  # where each face was and where it is now, with its region's margin, and its body
            for b in (self.tracker.tracks[tid].box, found[tid].box if tid in found else None):
                if b is not None:
                    c, half = b[:2] + b[2:] / 2, 0.5 * self.roi_pad * float(max(b[2], b[3]))
                    covers.append(np.concatenate([c - half, c + half]))
                    body = BODY_HALF_WIDTH * float(b[2])
                    covers.append(np.array([c[0] - body, c[1], c[0] + body, float(h)]))
        new = self._pick_up(rgb, changed, covers, [d.box for d in found.values()])
        _add(timings, "track", time.perf_counter() - t0)
        if new is None:
            return self._full(rgb, timings)
        if coasting:
            self.tracker.advance({}, coasting=coasting)
        else:
            self.tracker.advance(found)
        for d in new:
            d.track = self.tracker.start(d.box, d.landmarks, d.score)
            found[d.track] = d
        self.stats["picked_up"] += len(new)
        return sorted(found.values(), key=lambda d: -d.score)
