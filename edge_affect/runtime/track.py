"""Faces across frames: IoU tracks with a constant-velocity motion model, One Euro filtering of each track's
landmarks and box, and per-track smoothing of the predictions with hysteresis on the reported label."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_affect.runtime.predictor import STATUS_OK


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
    """A face followed across frames: last box/landmarks/score, centre velocity (px per frame) and
    size change (ratio per frame)."""

    box: np.ndarray
    missed: int = 0
    landmarks: np.ndarray | None = None
    score: float = 0.0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    growth: float = 1.0
    last_frame: int = 0
    seen: int = 1

    def shift(self, frame: int) -> np.ndarray:
        """Centre displacement expected between the last sighting and ``frame`` (constant velocity)."""
        return self.velocity * float(frame - self.last_frame)

    def moved(self, frame: int) -> tuple[np.ndarray, float, np.ndarray]:
        """(old centre, size factor, new centre) expected at ``frame`` under constant velocity and growth."""
        c = self.box[:2] + self.box[2:] / 2
        return c, self.growth ** float(frame - self.last_frame), c + self.shift(frame)

    def observe(self, frame: int, box: np.ndarray, landmarks: np.ndarray | None, score: float) -> None:
        box = np.asarray(box, dtype=np.float64)
        gap = max(1, frame - self.last_frame)
        step = (box[:2] + box[2:] / 2 - self.box[:2] - self.box[2:] / 2) / gap
        ratio = float(np.clip(box[3] / max(self.box[3], 1e-6), 0.5, 2.0)) ** (1.0 / gap)
        self.velocity = step if self.seen == 1 else 0.5 * self.velocity + 0.5 * step
        self.growth = ratio if self.seen == 1 else float(np.sqrt(self.growth * ratio))
        self.box, self.landmarks, self.score = box, landmarks, float(score)
        self.last_frame, self.missed, self.seen = frame, 0, self.seen + 1


class IoUTracker:
    """Greedy IoU matching of detections to tracks across frames; ids are never reused.

    Detections are matched against each track's box moved by its constant-velocity estimate, so fast
    faces keep their id; between full detections the face pipeline reports tracks it re-found itself
    (:meth:`advance`). A track unseen for more than ``max_missed`` frames ends.
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 15) -> None:
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.tracks: dict[int, _Track] = {}
        self.frame = -1
        self._next = 0

    def reset(self) -> None:
        self.tracks.clear()
        self.frame = -1

    def predicted_box(self, tid: int, frame: int | None = None) -> np.ndarray:
        """Track ``tid``'s box moved and scaled to ``frame`` (default: the next frame) by its motion."""
        t = self.tracks[tid]
        _, k, c = t.moved(self.frame + 1 if frame is None else frame)
        size = t.box[2:] * k
        return np.concatenate([c - size / 2, size])

    def predicted_landmarks(self, tid: int, frame: int | None = None) -> np.ndarray | None:
        """Track ``tid``'s landmarks carried to ``frame`` by the same motion as its box."""
        t = self.tracks[tid]
        if t.landmarks is None:
            return None
        c0, k, c = t.moved(self.frame + 1 if frame is None else frame)
        return (c + (t.landmarks - c0) * k).astype(np.float32)

    def visible(self) -> list[int]:
        """Tracks seen on the latest frame (the ones to follow on the next)."""
        return [tid for tid, t in self.tracks.items() if t.missed == 0]

    def update(
        self, boxes: list[np.ndarray], landmarks: list[np.ndarray] | None = None, scores: list[float] | None = None
    ) -> list[int]:
        """Next frame, fully detected: track ids for ``boxes`` (in order)."""
        self.frame += 1
        ids: list[int | None] = [None] * len(boxes)
        tids = list(self.tracks)
        if boxes and tids:
            pred = np.stack([self.predicted_box(t, self.frame) for t in tids])
            iou = iou_xywh(np.stack(boxes), pred)
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
            lm = landmarks[i] if landmarks is not None else None
            sc = scores[i] if scores is not None else 0.0
            if ids[i] is None:
                ids[i] = self._next
                self._next += 1
                self.tracks[ids[i]] = _Track(np.asarray(b, dtype=np.float64), 0, lm, sc, last_frame=self.frame)
            else:
                self.tracks[ids[i]].observe(self.frame, b, lm, sc)
        self._age(set(ids))  # type: ignore[arg-type]
        return [int(i) for i in ids]  # type: ignore[arg-type]

    def start(self, box: np.ndarray, landmarks: np.ndarray | None = None, score: float = 0.0) -> int:
        """A new track for a face found on the current frame outside every track (after :meth:`advance`)."""
        tid = self._next
        self._next += 1
        self.tracks[tid] = _Track(np.asarray(box, dtype=np.float64), 0, landmarks, float(score), last_frame=self.frame)
        return tid

    def advance(self, found: dict[int, Any], coasting: set[int] | frozenset[int] = frozenset()) -> None:
        """Next frame, not fully detected: ``found`` maps track ids re-found on it to their
        :class:`~edge_affect.runtime.detect.Detection`; ``coasting`` tracks were carried along their
        motion without a measurement (they stay visible, their motion estimate is left alone); every
        other track counts a missed frame."""
        self.frame += 1
        for tid, d in found.items():
            self.tracks[tid].observe(self.frame, d.box, d.landmarks, d.score)
        for tid in coasting:
            self.tracks[tid].missed = 0
        self._age(set(found) | set(coasting))

    def _age(self, seen: set[int]) -> None:
        for t in list(self.tracks):
            if t not in seen:
                self.tracks[t].missed += 1
                if self.tracks[t].missed > self.max_missed:
                    del self.tracks[t]


#: One Euro filter defaults for landmarks and boxes, in units of the face's size (box height) and seconds:
#: at rest the cut-off is ``min_cutoff`` Hz (a still face's 1-2 px detector jitter is averaged over ~0.3 s);
#: it rises by ``beta`` Hz per face-height/s of speed, so a turning or moving head is followed with little lag.
ONE_EURO_MIN_CUTOFF = 0.5
ONE_EURO_BETA = 4.0
ONE_EURO_D_CUTOFF = 1.0


def _smoothing_factor(dt: float, cutoff: float) -> float:
    r = 2.0 * np.pi * cutoff * dt
    return r / (r + 1.0)


class OneEuroFilter:
    """The One Euro filter (Casiez, Roussel and Vogel, CHI 2012) on an array of values: a low-pass filter whose
    cut-off grows with the speed of the signal: strong smoothing at rest, little lag on fast motion.

    ``scale`` divides speeds before ``beta`` applies (the face's size, so the filter behaves the same for
    near and far faces)."""

    def __init__(
        self,
        min_cutoff: float = ONE_EURO_MIN_CUTOFF,
        beta: float = ONE_EURO_BETA,
        d_cutoff: float = ONE_EURO_D_CUTOFF,
    ) -> None:
        if not (min_cutoff > 0 and beta >= 0 and d_cutoff > 0):
            raise ValueError(
                f"One Euro filter min_cutoff {min_cutoff}, beta {beta}, d_cutoff {d_cutoff}: expected > 0, ≥ 0, > 0"
            )
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """The filtered value of ``x`` observed at time ``t`` (seconds, increasing)."""
        x = np.asarray(x, dtype=np.float64)
        if self.x is None or self.t is None or self.x.shape != x.shape or not t > self.t:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self.t
        dx = (x - self.x) / dt
        a_d = _smoothing_factor(dt, self.d_cutoff)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        speed = float(np.max(np.abs(self.dx))) / max(float(scale), 1e-6)
        a = _smoothing_factor(dt, self.min_cutoff + self.beta * speed)
        self.x = a * x + (1 - a) * self.x
        self.t = float(t)
        return self.x.copy()


class _PerTrack:
    """State kept per track id (``state``), dropped for ended tracks."""

    state: dict[int, Any]

    def reset(self) -> None:
        self.state.clear()

    def forget(self, live: set[int]) -> None:
        """Drop the state of tracks not in ``live``."""
        for t in list(self.state):
            if t not in live:
                del self.state[t]


class LandmarkFilter(_PerTrack):
    """Per-track One Euro filters of the 5 landmarks and the box, speeds measured in face heights per second."""

    def __init__(
        self,
        min_cutoff: float = ONE_EURO_MIN_CUTOFF,
        beta: float = ONE_EURO_BETA,
        d_cutoff: float = ONE_EURO_D_CUTOFF,
    ) -> None:
        OneEuroFilter(min_cutoff, beta, d_cutoff)  # checks the settings once
        self.settings = {"min_cutoff": float(min_cutoff), "beta": float(beta), "d_cutoff": float(d_cutoff)}
        self.state: dict[int, OneEuroFilter] = {}

    def apply(self, track: int, box: np.ndarray, landmarks: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Filtered (box, landmarks) of ``track`` observed at time ``t`` (seconds)."""
        f = self.state.get(track)
        if f is None:
            f = self.state[track] = OneEuroFilter(**self.settings)
        box = np.asarray(box, dtype=np.float64)
        x = np.concatenate([np.asarray(landmarks, dtype=np.float64).reshape(-1), box])
        y = f(x, t, scale=float(max(box[3], 1.0)))
        return y[10:].astype(np.float32), y[:10].reshape(5, 2).astype(np.float32)


#: Label hysteresis: the reported expression changes only when another class's smoothed probability leads the
#: reported one by at least this much (a "clear" lead).
LABEL_MARGIN = 0.1
#: Default weight of the newest frame in the smoothed probabilities (an EMA; the time constant is about
#: (1 - alpha) / alpha frames: 1.5 frames at 0.4, i.e. 50 ms at 30 frames/s).
SMOOTH_ALPHA = 0.4


class EMASmoother(_PerTrack):
    """Per-track exponential moving average of valence/arousal and probabilities (``alpha`` = new weight), and
    hysteresis on the reported expression: it changes only when another class leads the reported one by
    ``margin`` in the smoothed probabilities (``margin=0``: the smoothed arg-max)."""

    def __init__(
        self, alpha: float = SMOOTH_ALPHA, au_thresholds: list[float] | None = None, margin: float = LABEL_MARGIN
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"smoothing alpha {alpha} must be in (0, 1]")
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"label margin {margin} must be in [0, 1)")
        self.alpha = alpha
        self.margin = margin
        self.au_thresholds = au_thresholds
        self.state: dict[int, dict[str, Any]] = {}

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
            probs = rec["expression_probs"]
            best = max(probs, key=probs.get)
            shown = prev["expression"]
            if shown in probs and probs[best] - probs[shown] < self.margin:
                best = shown  # no clear lead: the reported label stays
            rec["expression"], rec["expression_score"] = best, probs[best]
            thr = self.au_thresholds or [0.5] * len(rec["au_probs"])
            rec["au_active"] = {k: v >= t for (k, v), t in zip(rec["au_probs"].items(), thr, strict=True)}
        self.state[track] = {k: rec[k] for k in ("valence", "arousal", "expression_probs", "au_probs", "expression")}
        return rec
