"""Overlays: boxes, landmarks, labels and a valence/arousal marker drawn onto frames, written as video or images."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.runtime import require_cv2

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _color(track: int | None) -> tuple[int, int, int]:
    palette = [(0, 200, 255), (0, 255, 0), (255, 128, 0), (255, 0, 255), (0, 128, 255), (255, 255, 0)]
    return palette[(track or 0) % len(palette)]


#: Legend of the valence/arousal dial, drawn once per frame (the short form where the long one does not fit).
DIAL_LEGEND = ("dial: x = valence (right +), y = arousal (up +)", "x: valence  y: arousal")


def _fit_text(
    cv2: Any, texts: tuple[str, ...], scale: float, thick: int, max_w: int
) -> tuple[str, float, int, int, int]:
    """The first of ``texts`` (longest first) that fits in ``max_w`` px at a font scale of at least 0.3, shrinking
    the font as needed; the last one cut with '..' if none fits. Returns ``(text, scale, width, height, baseline)``."""
    face = cv2.FONT_HERSHEY_SIMPLEX
    for text in texts:
        sc = scale
        (tw, th), base = cv2.getTextSize(text, face, sc, thick)
        while tw > max_w and sc > 0.3:
            sc = max(0.3, sc * 0.85)
            (tw, th), base = cv2.getTextSize(text, face, sc, thick)
        if tw <= max_w:
            return text, sc, tw, th, base
    while tw > max_w and len(text) > 3:
        text = text[: max(1, len(text) - 4)] + ".."
        (tw, th), base = cv2.getTextSize(text, face, sc, thick)
    return text, sc, tw, th, base


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(v, max(lo, hi)))


def draw(rgb: np.ndarray, records: list[dict[str, Any]]) -> np.ndarray:
    """A BGR copy of ``rgb`` with each face's box, landmarks, label and a valence/arousal dial drawn in.

    Labels and dials stay inside the frame (moved below the box, shrunk or shortened on small images); a
    one-line legend for the dial goes in the bottom-left corner."""
    cv2 = require_cv2()
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    thick = max(1, round(min(h, w) / 400))
    font = max(0.4, min(h, w) / 1000)
    face = cv2.FONT_HERSHEY_SIMPLEX
    dials = 0
    taken: list[tuple[int, int, int, int]] = []  # label rectangles (x0, y0, x1, y1)
    for r in records:
        if r.get("box") is None:
            continue
        x, y, bw, bh = (int(round(v)) for v in r["box"])
        col = _color(r.get("track"))
        cv2.rectangle(img, (x, y), (x + bw, y + bh), col, thick)
        for lx, ly in r.get("landmarks") or []:
            cv2.circle(img, (int(lx), int(ly)), thick + 1, (0, 0, 255), -1)
        if r.get("status") == "ok":
            expr = f"{r['expression']} {r['expression_score']:.2f}"
            va = f"V{r['valence']:+.2f} A{r['arousal']:+.2f}"
            labels = (f"#{r['track']} {expr}  {va}", f"{expr}  {va}", expr, r["expression"])
        else:
            labels = (f"#{r.get('track')} {r.get('status')}", str(r.get("status")))
        label, scale, tw, th, base = _fit_text(cv2, labels, font, thick, w - 4)
        # above the box; below it where the frame's top edge is in the way; always inside the frame
        ty = y - 6 if y - 6 - th - 3 >= 0 else y + bh + th + 6
        ty = _clamp(ty, th + 3, h - base - 1)
        tx = _clamp(x, 1, w - tw - 3)
        cv2.rectangle(img, (tx - 1, ty - th - 3), (tx + tw + 2, ty + base), (0, 0, 0), -1)
        cv2.putText(img, label, (tx, ty), face, scale, col, thick, cv2.LINE_AA)
        taken.append((tx - 1, ty - th - 3, tx + tw + 2, ty + base))
        if r.get("status") == "ok":
            # Valence/arousal dial beside the box (right of it, else left): x = valence, y = arousal (up = aroused).
            rad = max(6, min(max(12, bh // 5), (min(h, w) - 6) // 2))
            cx = x + bw + rad + 4 if x + bw + 2 * rad + 6 <= w else x - rad - 4
            cx, cy = _clamp(cx, rad + 2, w - rad - 3), _clamp(y + rad, rad + 2, h - rad - 3)
            cv2.circle(img, (cx, cy), rad, (200, 200, 200), 1, cv2.LINE_AA)
            cv2.line(img, (cx - rad, cy), (cx + rad, cy), (120, 120, 120), 1)
            cv2.line(img, (cx, cy - rad), (cx, cy + rad), (120, 120, 120), 1)
            if rad >= 14:  # axis names at the positive ends
                cv2.putText(img, "V", (cx + rad - 8, cy - 3), face, 0.3, (200, 200, 200), 1, cv2.LINE_AA)
                cv2.putText(img, "A", (cx + 3, cy - rad + 9), face, 0.3, (200, 200, 200), 1, cv2.LINE_AA)
            px, py = int(cx + r["valence"] * rad), int(cy - r["arousal"] * rad)
            cv2.circle(img, (px, py), max(2, rad // 5), col, -1, cv2.LINE_AA)
            dials += 1
    if dials:  # bottom-left corner, else top-left; left out where a face label is in the way
        text, scale, tw, th, base = _fit_text(cv2, DIAL_LEGEND, max(0.35, font * 0.8), 1, w - 6)
        for y0 in (h - base - 3, th + 3):
            rect = (1, y0 - th - 3, tw + 5, y0 + base + 2)
            if tw <= w - 6 and not any(_overlaps(rect, t) for t in taken):
                cv2.rectangle(img, rect[:2], rect[2:], (0, 0, 0), -1)
                cv2.putText(img, text, (3, y0), face, scale, (220, 220, 220), 1, cv2.LINE_AA)
                break
    return img


class OverlayWriter:
    """Writes drawn frames to a video (.mp4/.avi…), one image (.png/.jpg) or a folder of PNGs."""

    def __init__(
        self, target: str | Path, *, fps: float | None = None, single_frame: bool = False, write_to: Path | None = None
    ) -> None:
        """``write_to``: where the files really go (a staged temp path that is renamed onto ``target`` later)."""
        self.target = Path(target)
        suffix = self.target.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            self.mode = "video"
        elif suffix in IMAGE_SUFFIXES:
            if not single_frame:
                raise ValueError(
                    f"--overlay {self.target}: one image needs a single-image source; give a folder or a .mp4"
                )
            self.mode = "image"
        elif suffix:
            raise ValueError(
                f"--overlay {self.target}: unknown type (expected {', '.join(VIDEO_SUFFIXES + IMAGE_SUFFIXES)} or a folder)"
            )
        else:
            self.mode = "dir"
        if self.mode != "dir" and not self.target.parent.is_dir():
            raise FileNotFoundError(f"--overlay {self.target}: folder {self.target.parent} does not exist")
        self.path = Path(write_to) if write_to is not None else self.target
        if self.mode == "dir":
            self.path.mkdir(parents=True, exist_ok=True)
        self.fps = fps or 25.0
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self.written = 0

    def write(self, bgr: np.ndarray, source: str, frame: int) -> None:
        cv2 = require_cv2()
        if self.mode == "video":
            if self._writer is None:
                self._size = (bgr.shape[1], bgr.shape[0])
                self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
                if not self._writer.isOpened():
                    raise ValueError(f"--overlay {self.target}: OpenCV cannot write this video file")
            if (bgr.shape[1], bgr.shape[0]) != self._size:
                bgr = cv2.resize(bgr, self._size)
            self._writer.write(bgr)
        elif self.mode == "image":
            if not cv2.imwrite(str(self.path), bgr):
                raise ValueError(f"--overlay {self.target}: OpenCV cannot write this image")
        else:
            # the whole source name: a.jpg and a.png of one folder stay two files
            name = f"{Path(source).name or 'frame'}_{frame:06d}.png"
            if not cv2.imwrite(str(self.path / name), bgr):
                raise ValueError(f"--overlay {self.target}: OpenCV cannot write {name}")
        self.written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
