"""Overlays: boxes, landmarks, labels and a valence/arousal marker drawn onto frames, written as video or images."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _color(track: int | None) -> tuple[int, int, int]:
    palette = [(0, 200, 255), (0, 255, 0), (255, 128, 0), (255, 0, 255), (0, 128, 255), (255, 255, 0)]
    return palette[(track or 0) % len(palette)]


def draw(rgb: np.ndarray, records: list[dict[str, Any]]) -> np.ndarray:
    """A BGR copy of ``rgb`` with each face's box, landmarks, label and a VA marker drawn in."""
    import cv2

    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    thick = max(1, round(min(h, w) / 400))
    font = max(0.4, min(h, w) / 1000)
    for r in records:
        if r.get("box") is None:
            continue
        x, y, bw, bh = (int(round(v)) for v in r["box"])
        col = _color(r.get("track"))
        cv2.rectangle(img, (x, y), (x + bw, y + bh), col, thick)
        for lx, ly in r.get("landmarks") or []:
            cv2.circle(img, (int(lx), int(ly)), thick + 1, (0, 0, 255), -1)
        if r.get("status") == "ok":
            label = f"#{r['track']} {r['expression']} {r['expression_score']:.2f}  V{r['valence']:+.2f} A{r['arousal']:+.2f}"
        else:
            label = f"#{r.get('track')} {r.get('status')}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
        ty = max(th + 4, y - 6)
        cv2.rectangle(img, (x - 1, ty - th - 3), (x + tw + 2, ty + base), (0, 0, 0), -1)
        cv2.putText(img, label, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, font, col, thick, cv2.LINE_AA)
        if r.get("status") == "ok":
            # Valence/arousal disc beside the box: x = valence, y = arousal (up = aroused).
            rad = max(12, bh // 5)
            cx, cy = min(w - rad - 2, x + bw + rad + 4), max(rad + 2, y + rad)
            cv2.circle(img, (cx, cy), rad, (200, 200, 200), 1, cv2.LINE_AA)
            cv2.line(img, (cx - rad, cy), (cx + rad, cy), (120, 120, 120), 1)
            cv2.line(img, (cx, cy - rad), (cx, cy + rad), (120, 120, 120), 1)
            px, py = int(cx + r["valence"] * rad), int(cy - r["arousal"] * rad)
            cv2.circle(img, (px, py), max(2, rad // 5), col, -1, cv2.LINE_AA)
    return img


class OverlayWriter:
    """Writes drawn frames to a video (.mp4/.avi…), one image (.png/.jpg) or a folder of PNGs."""

    def __init__(self, target: str | Path, *, fps: float | None = None, single_frame: bool = False) -> None:
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
            self.target.mkdir(parents=True, exist_ok=True)
        if self.mode != "dir" and not self.target.parent.is_dir():
            raise FileNotFoundError(f"--overlay {self.target}: folder {self.target.parent} does not exist")
        self.fps = fps or 25.0
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self.written = 0

    def write(self, bgr: np.ndarray, source: str, frame: int) -> None:
        import cv2

        if self.mode == "video":
            if self._writer is None:
                self._size = (bgr.shape[1], bgr.shape[0])
                self._writer = cv2.VideoWriter(str(self.target), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
                if not self._writer.isOpened():
                    raise ValueError(f"--overlay {self.target}: OpenCV cannot write this video file")
            if (bgr.shape[1], bgr.shape[0]) != self._size:
                bgr = cv2.resize(bgr, self._size)
            self._writer.write(bgr)
        elif self.mode == "image":
            if not cv2.imwrite(str(self.target), bgr):
                raise ValueError(f"--overlay {self.target}: OpenCV cannot write this image")
        else:
            name = f"{Path(source).stem or 'frame'}_{frame:06d}.png"
            cv2.imwrite(str(self.target / name), bgr)
        self.written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
