"""Finding faces in a stream: whole-frame detection every N frames, tracks re-found in between (or held where
the face did not move), new faces picked up where the image changed, and each track's landmarks filtered
(the policy is described in :mod:`edge_affect.runtime.pipeline`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_affect.runtime.detect import Detection, YuNetDetector, min_face_px
from edge_affect.runtime.motion import MotionGate
from edge_affect.runtime.track import IoUTracker, LandmarkFilter, iou_xywh

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
#: A tracked face's region side relative to the face. The region is detected at the whole-frame detection's
#: scale (so YuNet sees the face at the size it sees it in a whole frame and places box and landmarks the
#: same way); ``roi_size`` (px) instead scales every region to that side (the behaviour before v0.x: a 222-px
#: face seen at 64 px moved the landmarks by 3-4 px against a whole-frame detection on real footage).
DEFAULT_ROI_SIZE: int | None = None
DEFAULT_ROI_PAD = 2.0
#: Holding a still face: between detections a face whose image did not move (phase correlation of its gray
#: patch against the patch at its last measurement) keeps its filtered landmarks instead of being re-detected.
#: A move of more than this fraction of the face's height (0.5 px at a 48-px model input) ends the hold.
HOLD_MAX_SHIFT = 0.01
#: ... as does a patch that no longer matches (an occlusion, a cut, a turn): phase-correlation peak below this.
HOLD_MIN_RESPONSE = 0.3
#: A tracked face that moves while the frame edge cuts it (entering or leaving) is judged by a whole-frame
#: detection: whether YuNet still calls the visible part a face depends on the context it sees (a region
#: re-detection kept faces 13-15 % outside the frame that the whole frame no longer shows). A still one (hair,
#: a forehead or a chin cut by the edge, as in most webcam framings) is held like any other still face.
EDGE_CUT = 0.0
#: A face's width relative to its height (YuNet boxes: 0.75-0.85): a changed region narrower than this times the
#: smallest face the detector finds holds no new face.
FACE_WIDTH = 0.75
#: Side of the gray patch the hold compares (the face box grown by HOLD_CONTEXT around its centre).
HOLD_PATCH = 32
HOLD_CONTEXT = 1.25


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
    hold: bool = True
    filter_landmarks: bool = True
    fps: float = 30.0

    def __post_init__(self) -> None:
        if int(self.det_size) < 32:
            raise ValueError(f"detector input size {self.det_size}: expected ≥ 32 px")
        if int(self.detect_every) < 1:
            raise ValueError(f"detect every {self.detect_every} frames: expected ≥ 1")
        if self.track_policy not in TRACK_POLICIES:
            raise ValueError(f"track policy {self.track_policy!r}: expected one of {', '.join(TRACK_POLICIES)}")
        if self.pickup not in PICKUP_POLICIES:
            raise ValueError(f"pickup {self.pickup!r}: expected one of {', '.join(PICKUP_POLICIES)}")
        if (self.roi_size is not None and int(self.roi_size) < 32) or not self.roi_pad >= 1.0:
            raise ValueError(f"region {self.roi_size} px / pad {self.roi_pad}: expected ≥ 32 px and pad ≥ 1")
        if not self.fps > 0:
            raise ValueError(f"frame rate {self.fps}: expected > 0")
        self.tracker = IoUTracker()
        self.filter = LandmarkFilter()
        #: Per track: the gray patch at its last measurement and the box it was cut from (for the hold),
        #: and the box and landmarks last reported (filtered).
        self._patches: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._shown: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.motion = MotionGate()
        self._last_full = -(10**9)
        #: Counters: frames, full detections (all / after a lost track / for a face the frame edge cuts),
        #: region re-detections, tracks lost, motion regions looked at, faces picked up there, frames whose
        #: change was global (camera motion: no look).
        self.stats = {
            "frames": 0,
            "full": 0,
            "full_after_loss": 0,
            "regions": 0,
            "lost": 0,
            "motion": 0,
            "picked_up": 0,
            "global_change": 0,
            "full_at_edge": 0,
            "motion_at_edge": 0,
            "motion_thin": 0,
            "held": 0,
        }

    def settings(self, tracking: bool = True) -> dict[str, Any]:
        """The face-finding settings, JSON-ready (for reports); ``tracking=False``: every frame detected."""
        between = tracking and self.detect_every > 1
        return {
            "det_size": int(self.det_size),
            "detect_every": int(self.detect_every) if tracking else 1,
            "track_policy": self.track_policy if between else "none",
            "pickup": self.pickup if between else "none",
            "roi_size": None if self.roi_size is None else int(self.roi_size),
            "roi_pad": float(self.roi_pad),
            "hold": bool(self.hold) and between,
            "filter_landmarks": bool(self.filter_landmarks) and tracking,
            "score_threshold": self.detector.score_threshold,
        }

    def reset(self) -> None:
        """Forget tracks and the previous frame (call between unrelated sources)."""
        self.tracker.reset()
        self.motion.reset()
        self.filter.reset()
        self._patches.clear()
        self._shown.clear()
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

    def full_scale(self, rgb: np.ndarray) -> float:
        """Detector input pixels per frame pixel in a whole-frame detection of ``rgb``."""
        return min(1.0, self.det_size / max(rgb.shape[:2]))

    def region(self, rgb: np.ndarray, box: np.ndarray) -> tuple[int, int, int, int]:
        """The square search region around a predicted ``box``, moved inside the frame where it fits (so a
        frame edge falls on the detector input's edge, as in a whole-frame detection)."""
        h, w = rgb.shape[:2]
        side = self.roi_pad * float(max(box[2], box[3]))
        cx, cy = float(box[0] + box[2] / 2), float(box[1] + box[3] / 2)
        x0, y0 = cx - side / 2, cy - side / 2
        if side <= w:
            x0 = min(max(x0, 0.0), w - side)
        if side <= h:
            y0 = min(max(y0, 0.0), h - side)
        return int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x0 + side)), int(np.ceil(y0 + side))

    def _refind(self, rgb: np.ndarray, predicted: dict[int, np.ndarray]) -> dict[int, Detection]:
        """Tracks (``predicted``: where their motion puts them) re-found in square regions there."""
        visible, boxes = list(predicted), list(predicted.values())
        if self.roi_size is None:  # at the whole-frame scale, one region at a time
            scale = self.full_scale(rgb)
            regions = [self.detector.detect_rect(rgb, self.region(rgb, b), scale) for b in boxes]
        else:
            centers = [b[:2] + b[2:] / 2 for b in boxes]
            sides = [self.roi_pad * float(max(b[2], b[3])) for b in boxes]
            regions = self.detector.detect_regions(rgb, centers, sides, int(self.roi_size))
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

    # -- holding still faces ---------------------------------------------------------------------
    @staticmethod
    def _patch(rgb: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The gray face patch (box grown by HOLD_CONTEXT and clipped to the frame, HOLD_PATCH² float32, zero
        mean), or None when it is mostly off the frame."""
        import cv2

        h, w = rgb.shape[:2]
        side = HOLD_CONTEXT * float(max(box[2], box[3]))
        cx, cy = float(box[0] + box[2] / 2), float(box[1] + box[3] / 2)
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        x1, y1 = int(round(cx + side / 2)), int(round(cy + side / 2))
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if (cx1 - cx0) * (cy1 - cy0) < 0.5 * (x1 - x0) * (y1 - y0) or x1 - x0 < 8:
            return None  # mostly off the frame: always re-detected
        x0, y0, x1, y1 = cx0, cy0, cx1, cy1  # the same clipped rectangle for the reference and later frames
        gray = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
        p = cv2.resize(gray, (HOLD_PATCH, HOLD_PATCH), interpolation=cv2.INTER_AREA).astype(np.float32)
        return p - float(p.mean())

    def _remember(self, rgb: np.ndarray, tid: int, box: np.ndarray) -> None:
        patch = self._patch(rgb, box) if self.hold else None
        if patch is None:
            self._patches.pop(tid, None)
        else:
            self._patches[tid] = (patch, np.asarray(box, dtype=np.float64))

    def _still(self, rgb: np.ndarray, tid: int) -> bool:
        """Whether track ``tid``'s face has not moved since its last measurement (see HOLD_MAX_SHIFT)."""
        import cv2

        ref = self._patches.get(tid)
        if ref is None or tid not in self._shown:
            return False
        patch = self._patch(rgb, ref[1])
        if patch is None:
            return False
        window = _hann(HOLD_PATCH)
        # (a copy: OpenCV may window its inputs in place, and the reference serves several frames)
        (dx, dy), response = cv2.phaseCorrelate(ref[0].copy(), patch, window)
        px = HOLD_CONTEXT * float(max(ref[1][2], ref[1][3])) / HOLD_PATCH  # frame px per patch px
        shift = float(np.hypot(dx, dy)) * px
        return response >= HOLD_MIN_RESPONSE and shift <= HOLD_MAX_SHIFT * float(ref[1][3])

    def _report(self, rgb: np.ndarray, dets: list[Detection], measured: set[int]) -> list[Detection]:
        """Filtered boxes and landmarks for ``dets`` (tracked); ``measured`` ids came from the detector on this
        frame (their hold patch is renewed), the others are held and keep what was last reported."""
        t = (self.tracker.frame + 1) / self.fps
        for d in dets:
            tid = int(d.track)  # type: ignore[arg-type]
            if tid in measured:
                self._remember(rgb, tid, d.box)
                if self.filter_landmarks:
                    d.box, d.landmarks = self.filter.apply(tid, d.box, d.landmarks, t)
            elif tid in self._shown:
                d.box, d.landmarks = (v.copy() for v in self._shown[tid])
            self._shown[tid] = (d.box.copy(), d.landmarks.copy())
        live = set(self.tracker.tracks)
        self.filter.forget(live)
        for store in (self._patches, self._shown):
            for tid in [k for k in store if k not in live]:
                del store[tid]
        return dets

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
        # Something entering through the frame edge: a face it brings is cut by the edge, and whether YuNet
        # calls a half-visible face a face depends on the context it sees, so such a change is judged by a
        # whole-frame detection. A change along the edge shorter than the smallest face the detector finds
        # (hair or a shoulder moving at the edge, a strip of background) cannot be a face entering there.
        smallest = min_face_px(max(w, h), self.det_size)
        along_top_or_bottom = (y0 <= 0 or y1 >= h) and x1 - x0 >= smallest
        along_a_side = (x0 <= 0 or x1 >= w) and y1 - y0 >= smallest
        if along_top_or_bottom or along_a_side:
            self.stats["motion_at_edge"] += 1
            return None
        if min(x1 - x0, y1 - y0) < FACE_WIDTH * smallest:
            # narrower than the narrowest face the detector finds: a moving edge or strip, not a new face
            self.stats["motion_thin"] += 1
            return []
        pad = max(32.0, 0.25 * max(x1 - x0, y1 - y0))
        x0, y0, x1, y1 = max(0, int(x0 - pad)), max(0, int(y0 - pad)), min(w, int(x1 + pad)), min(h, int(y1 + pad))
        if (x1 - x0) * (y1 - y0) > 0.5 * w * h:
            return None
        self.stats["motion"] += 1
        dets = self.detector.detect_rect(rgb, (x0, y0, x1, y1), self.full_scale(rgb))
        if known and dets:
            overlap = iou_xywh(np.stack([d.box for d in dets]), np.stack(known)).max(axis=1)
            dets = [d for d, o in zip(dets, overlap, strict=True) if o < self.tracker.iou_threshold]
        return dets

    def find(self, rgb: np.ndarray, timings: dict[str, float] | None) -> list[Detection]:
        """This frame's faces with track ids and filtered landmarks: a full detection when due, else the tracks
        held or re-found and any new face picked up where the frame changed outside them."""
        t0 = time.perf_counter()
        changed = self.motion.update(rgb) if self.pickup == "motion" and self.detect_every > 1 else None
        _add(timings, "motion", time.perf_counter() - t0)
        dets, measured = self._find(rgb, changed, timings)
        return self._report(rgb, dets, measured)

    def _full_measured(self, rgb: np.ndarray, timings: dict[str, float] | None) -> tuple[list[Detection], set[int]]:
        dets = self._full(rgb, timings)
        return dets, {int(d.track) for d in dets}  # type: ignore[arg-type]

    def _find(
        self, rgb: np.ndarray, changed: np.ndarray | None, timings: dict[str, float] | None
    ) -> tuple[list[Detection], set[int]]:
        frame = self.tracker.frame + 1
        visible = self.tracker.visible()
        if frame - self._last_full >= self.detect_every:
            return self._full_measured(rgb, timings)
        h, w = rgb.shape[:2]
        if changed is not None and not visible and float(changed.mean()) > GLOBAL_CHANGE:
            # A cut (or a pan) with no face followed: faces may now be anywhere.
            self.stats["global_change"] += 1
            return self._full_measured(rgb, timings)
        predicted = {tid: self.tracker.predicted_box(tid) for tid in visible}
        found: dict[int, Detection] = {}
        coasting: set[int] = set()
        t0 = time.perf_counter()
        held: set[int] = set()
        if self.hold and self.track_policy == "roi":
            held = {tid for tid in visible if self._still(rgb, tid)}
        if any(_outside(b, w, h, margin=1.0) > EDGE_CUT + 1e-6 for tid, b in predicted.items() if tid not in held):
            self.stats["full_at_edge"] += 1
            return self._full_measured(rgb, timings)
        for tid in held:
            box, lm = self._shown[tid]
            found[tid] = Detection(box.copy(), lm.copy(), self.tracker.tracks[tid].score, tid)
        self.stats["held"] += len(held)
        if self.track_policy == "carry":
            for tid in visible:
                box, lm = predicted[tid], self.tracker.predicted_landmarks(tid)
                if lm is not None:
                    found[tid] = Detection(box.astype(np.float32), lm, self.tracker.tracks[tid].score, tid)
            coasting = set(found)
        elif len(held) < len(visible):
            refound = self._refind(rgb, {tid: b for tid, b in predicted.items() if tid not in held})
            found.update(refound)
            if len(found) < len(visible):
                _add(timings, "track", time.perf_counter() - t0)
                self.stats["lost"] += len(visible) - len(found)
                self.stats["full_after_loss"] += 1
                return self._full_measured(rgb, timings)
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
            return self._full_measured(rgb, timings)
        if coasting:
            self.tracker.advance({}, coasting=coasting)
        else:
            # A held face is observed where it was (its motion estimate decays to rest).
            self.tracker.advance(found)
        if self.max_faces is not None:
            new = new[: max(0, self.max_faces - len(found))]
        for d in new:
            d.track = self.tracker.start(d.box, d.landmarks, d.score)
            found[d.track] = d
        self.stats["picked_up"] += len(new)
        measured = {tid for tid in found if tid not in held and tid not in coasting}
        return sorted(found.values(), key=lambda d: -d.score), measured


def _outside(box: np.ndarray, w: int, h: int, margin: float = 0.0) -> float:
    """Fraction of ``box`` (x, y, w, h) that lies outside a ``w``×``h`` frame shrunk by ``margin`` px a side."""
    bw, bh = max(float(box[2]), 1e-6), max(float(box[3]), 1e-6)
    iw = max(0.0, min(float(box[0]) + bw, w - margin) - max(float(box[0]), margin))
    ih = max(0.0, min(float(box[1]) + bh, h - margin) - max(float(box[1]), margin))
    return 1.0 - iw * ih / (bw * bh)


def _hann(n: int) -> np.ndarray:
    """A cached n×n Hanning window for phase correlation."""
    win = _HANN.get(n)
    if win is None:
        import cv2

        win = _HANN[n] = cv2.createHanningWindow((n, n), cv2.CV_32F)
    return win


_HANN: dict[int, np.ndarray] = {}
