"""Synthetic test clips from the bundled astronaut photo: faces moving, scaling, entering and leaving, and a
person walking (head and torso).

Each clip is written with ``cv2.VideoWriter`` (MPEG-4 Part 2, ``mp4v``) so readers decode real video,
and comes with its ground truth: per frame, the box of every face drawn (face id, x, y, w, h in frame
pixels; boxes may reach past the frame edge while a face enters or leaves). Used by the tests and by
``benchmarks/bench_pipeline.py``; deterministic for a given OpenCV build.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "samples"
#: YuNet's face box in ``astronaut.png`` (x, y, w, h; ``assets/samples/README.md``).
ASTRONAUT_FACE = np.array([178.2, 62.9, 89.9, 113.3])

#: frame index → (centre x, centre y, face height) of a face, or ``None`` while it is not in the clip.
FacePath = Callable[[int], "tuple[float, float, float] | None"]


@dataclass
class ClipFace:
    """One face in a clip: its path over frames and whether it is the photo's mirror image."""

    path: FacePath
    mirror: bool = False
    #: Head and torso (the whole photo under a person-shaped mask) instead of head and shoulders.
    person: bool = False


def _sprite(mirror: bool, person: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head-and-shoulders cut of the astronaut (RGB float), a feathered elliptical alpha, and the face box in
    it; with ``person``, the whole photo with a head-and-torso alpha."""
    import cv2

    from edge_affect.runtime.preprocess import decode_image

    rgb = decode_image(SAMPLES_DIR / "astronaut.png")
    x0, y0, x1, y1 = (0, 0, 512, 512) if person else (98, 0, 348, 250)
    cut = rgb[y0:y1, x0:x1].astype(np.float32)
    face = ASTRONAUT_FACE - [x0, y0, 0, 0]
    h, w = cut.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    cx, cy = face[0] + face[2] / 2, face[1] + face[3] / 2
    cv2.ellipse(alpha, (round(cx), round(cy + 8)), (round(face[2] * 0.95), round(face[3] * 0.85)), 0, 0, 360, 1.0, -1)
    if person:  # the torso: shoulders a face height below the chin, about four face widths across
        top = cy + 1.2 * face[3]
        cv2.ellipse(
            alpha,
            (round(cx), round(top + 2.2 * face[3])),
            (round(face[2] * 2.0), round(face[3] * 2.4)),
            0,
            0,
            360,
            1.0,
            -1,
        )
    alpha = cv2.GaussianBlur(alpha, (0, 0), 6)
    if mirror:
        cut, alpha = cut[:, ::-1].copy(), alpha[:, ::-1].copy()
        face = np.array([w - face[0] - face[2], face[1], face[2], face[3]])
    return cut, alpha, face


def background(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """A smooth random colour field with soft shapes and sensor-like noise (no faces in it)."""
    import cv2

    rng = np.random.default_rng(seed)
    field_ = cv2.resize(rng.uniform(40, 210, (6, 8, 3)).astype(np.float32), (width, height), cv2.INTER_CUBIC)
    for _ in range(12):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        col = tuple(float(c) for c in rng.uniform(30, 230, 3))
        cv2.rectangle(field_, (x, y), (x + int(rng.integers(20, 160)), y + int(rng.integers(20, 120))), col, -1)
    field_ = cv2.GaussianBlur(field_, (0, 0), 2.0) + rng.normal(0, 3.0, field_.shape).astype(np.float32)
    return np.clip(field_, 0, 255)


def render_clip(
    path: str | Path,
    faces: Sequence[ClipFace],
    frames: int,
    size: tuple[int, int] = (640, 480),
    fps: float = 30.0,
    seed: int = 0,
    degrade: Callable[[int, np.ndarray], np.ndarray] | None = None,
    cut_at: int | None = None,
) -> list[list[tuple[int, np.ndarray]]]:
    """Write the clip to ``path`` (``.mp4``) and return, per frame, ``(face index, box x, y, w, h)`` of each face drawn.

    ``degrade(i, frame)`` turns each rendered uint8 RGB frame into what a camera would deliver (see
    :func:`camera_look`); from frame ``cut_at`` on the background is another scene (a camera cut)."""
    import cv2

    width, height = size
    bg = background(width, height, seed)
    bg_cut = background(width, height, seed + 1000) if cut_at is not None else bg
    sprites = {(f.mirror, f.person): _sprite(f.mirror, f.person) for f in faces}
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write the video {path} (mp4v)")
    truth: list[list[tuple[int, np.ndarray]]] = []
    try:
        for i in range(frames):
            img = (bg_cut if cut_at is not None and i >= cut_at else bg).copy()
            boxes = []
            for k, face in enumerate(faces):
                where = face.path(i)
                if where is None:
                    continue
                cut, alpha, fbox = sprites[(face.mirror, face.person)]
                cx, cy, fh = where
                s = fh / fbox[3]
                sw, sh = max(1, round(cut.shape[1] * s)), max(1, round(cut.shape[0] * s))
                interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
                spr, a = (
                    cv2.resize(cut, (sw, sh), interpolation=interp),
                    cv2.resize(alpha, (sw, sh), interpolation=interp),
                )
                fx, fy = (fbox[0] + fbox[2] / 2) * sw / cut.shape[1], (fbox[1] + fbox[3] / 2) * sh / cut.shape[0]
                ox, oy = round(cx - fx), round(cy - fy)
                xa, ya, xb, yb = max(ox, 0), max(oy, 0), min(ox + sw, width), min(oy + sh, height)
                if xb > xa and yb > ya:
                    sub_a = a[ya - oy : yb - oy, xa - ox : xb - ox, None]
                    region = img[ya:yb, xa:xb]
                    img[ya:yb, xa:xb] = region * (1 - sub_a) + spr[ya - oy : yb - oy, xa - ox : xb - ox] * sub_a
                fw = fbox[2] * sw / cut.shape[1]
                boxes.append((k, np.array([cx - fw / 2, cy - fh / 2, fw, fh])))
            truth.append(boxes)
            frame = np.clip(img, 0, 255).astype(np.uint8)
            if degrade is not None:
                frame = degrade(i, frame)
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    finally:
        writer.release()
    return truth


def moving_face_clip(path: str | Path, frames: int = 150, fps: float = 30.0) -> list[list[tuple[int, np.ndarray]]]:
    """640×480, one face moving on a Lissajous path (up to ~8 px per frame) while its height swings 70–170 px."""

    def where(i: int) -> tuple[float, float, float]:
        t = 2 * np.pi * i / 150.0
        return 320 + 170 * np.sin(t), 240 + 70 * np.sin(2 * t + 0.5), 120 + 50 * np.sin(1.5 * t)

    return render_clip(path, [ClipFace(where)], frames, fps=fps)


def enter_leave_clip(path: str | Path, frames: int = 150, fps: float = 30.0) -> list[list[tuple[int, np.ndarray]]]:
    """640×480, three faces that never overlap: A (100 px) slides in from the left and out to the right
    along the top; B (mirrored, 110–126 px) cuts in at frame 47 and slides out at the bottom from frame
    100; C (60 px) cuts in at frame 93 at the bottom left and cuts out at frame 131."""

    def a(i: int) -> tuple[float, float, float] | None:
        x = -60 + 6.5 * i
        return (x, 110 + 15 * np.sin(i / 9), 100.0) if x < 700 else None

    def b(i: int) -> tuple[float, float, float] | None:
        if i < 47:
            return None
        y = 330 + max(0, i - 100) * 8.0
        return (470 - (i - 47) * 1.5, y, 110 + (i - 47) * 0.3) if y < 560 else None

    def c(i: int) -> tuple[float, float, float] | None:
        return (120.0 + 0.5 * (i - 93), 400.0, 60.0) if 93 <= i < 131 else None

    return render_clip(path, [ClipFace(a), ClipFace(b, mirror=True), ClipFace(c)], frames, fps=fps, seed=1)


def walking_person_clip(path: str | Path, frames: int = 150, fps: float = 30.0) -> list[list[tuple[int, np.ndarray]]]:
    """640×480, one person (head and torso, face 90 px) walking across the frame at 2.4 px per frame with a
    bobbing gait: the body moves as much as the face, the case where motion pickup must not mistake a
    body for a new face."""

    def where(i: int) -> tuple[float, float, float]:
        return 140 + 2.4 * i, 140 + 6 * abs(np.sin(np.pi * i / 15)), 90.0

    return render_clip(path, [ClipFace(where, person=True)], frames, fps=fps, seed=2)


def crossing_clip(path: str | Path, frames: int = 150, fps: float = 30.0) -> list[list[tuple[int, np.ndarray]]]:
    """640×480: D (mirrored, 80 px) slides in from the right edge and drifts up-left; E (55 px) cuts in at
    frame 40 at the top right and sinks; a person F (head and torso, face 95 px) walks in from the left
    from frame 70 and out through the bottom. Made to check the pipeline's defaults after they were set;
    its first run showed faces entering through the frame edge picked up from a motion region a frame off
    every-frame detection, which led to the whole-frame rule for motion at the edge, so it is a
    development clip now (:func:`unseen_clip` is the one no setting was chosen on)."""

    def d(i: int) -> tuple[float, float, float] | None:
        return (700 - 4.0 * i, 330 - 1.6 * i, 80.0) if i < 140 else None

    def e(i: int) -> tuple[float, float, float] | None:
        return (560.0, 60 + 0.6 * (i - 40), 55.0) if i >= 40 else None

    def f(i: int) -> tuple[float, float, float] | None:
        if i < 70:
            return None
        y = 300 + max(0, i - 115) * 9.0
        return (-40 + 5.0 * (i - 70), y, 95.0) if y < 560 else None

    return render_clip(path, [ClipFace(d, mirror=True), ClipFace(e), ClipFace(f, person=True)], frames, fps=fps, seed=7)


def unseen_clip(path: str | Path, frames: int = 150, fps: float = 30.0) -> list[list[tuple[int, np.ndarray]]]:
    """640×480, written after every face-finding setting and rule was fixed and run once to measure them
    (never to choose them): a person I (head and torso, face 85 px) walks in from the right edge from frame
    50; G (mirrored, 70 px) comes down through the top edge; H (120 px, shrinking to 90) cuts in at frame 25
    right of centre and leaves through the right edge from frame 100."""

    def person(i: int) -> tuple[float, float, float] | None:
        return (700 - 4.0 * (i - 50), 120.0, 85.0) if i >= 50 else None

    def g(i: int) -> tuple[float, float, float] | None:
        return (200.0, -40 + 0.8 * i, 70.0)

    def h(i: int) -> tuple[float, float, float] | None:
        if i < 25:
            return None
        x = 420 + max(0, i - 100) * 6.0
        return (x, 300.0, 120 - 0.24 * (i - 25)) if x < 720 else None

    return render_clip(
        path, [ClipFace(person, person=True), ClipFace(g, mirror=True), ClipFace(h)], frames, fps=fps, seed=11
    )


def camera_look(
    seed: int = 0, quality: int = 35, blur: float = 0.8, noise: float = 3.0
) -> Callable[[int, np.ndarray], np.ndarray]:
    """What real footage has that a rendered frame lacks: a slow auto-exposure swing (±12 % gain), lens blur
    (Gaussian, ``blur`` px), sensor noise (``noise`` gray levels) and JPEG compression at ``quality`` before
    the clip's own MPEG-4 coding (blocking and ringing around edges); deterministic for ``seed``."""
    import cv2

    def look(i: int, frame: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed * 100_003 + i)
        img = frame.astype(np.float32) * (1.0 + 0.12 * np.sin(i / 17.0))
        if blur > 0:
            img = cv2.GaussianBlur(img, (0, 0), blur)
        img = np.clip(img + rng.normal(0.0, noise, img.shape), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise RuntimeError("OpenCV cannot encode JPEG")
        return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])

    return look


def webcam_clip(path: str | Path, frames: int = 150, fps: float = 30.0) -> list[list[tuple[int, np.ndarray]]]:
    """640×480 with what real webcam footage has (:func:`camera_look`: exposure swing, blur, noise, JPEG
    blocking): a head-and-shoulders face (190 px) whose hair the top edge cuts, swaying by a few pixels, then
    a camera cut at frame 90 to another scene where a second face (mirrored, 140 px) sits nearly still. Written
    for issue 20 after the hold, filter and edge rules were set, to check them on degraded frames."""

    def a(i: int) -> tuple[float, float, float] | None:
        return (320 + 4 * np.sin(i / 23.0), 118 + 1.5 * np.sin(i / 31.0), 190.0) if i < 90 else None

    def b(i: int) -> tuple[float, float, float] | None:
        return (400 + 1.0 * np.sin(i / 19.0), 250.0, 140.0) if i >= 90 else None

    return render_clip(
        path,
        [ClipFace(a), ClipFace(b, mirror=True)],
        frames,
        fps=fps,
        seed=21,
        degrade=camera_look(seed=21),
        cut_at=90,
    )
