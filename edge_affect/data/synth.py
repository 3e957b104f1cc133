"""Synthetic ABAW-layout datasets: procedural faces whose geometry is driven by AU intensities.

Each sample draws an expression, then a 12-AU intensity vector from that expression's prototype plus
noise; the face is drawn (numpy + OpenCV) with brows, lids, cheeks, nose wings, lips and jaw moved by
those intensities, so every label is visible in the pixels. Binary AU label = intensity > 0.5;
valence/arousal are a fixed function of the intensities (circumplex-like) plus small noise. Identity
(skin tone, face shape, hair, background) is fixed per video; pose, lighting and noise vary per
frame. Everything is seeded per sample, so output is identical for any number of worker processes.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.data._mp import pool_context
from edge_affect.data.abaw import IMAGES_DIR, SPLIT_FILES, write_annotations
from edge_affect.fsutil import make_temp_dir, replace_dir
from edge_affect.schema import AUS, EXPRESSIONS, MISSING_AU, MISSING_EXPR, MISSING_VA, NUM_AU

log = logging.getLogger(__name__)

_A = {name: i for i, name in enumerate(AUS)}
#: Expression id -> (AUs always active, [(AU, probability) sometimes active]).
PROTOTYPES: dict[int, tuple[tuple[str, ...], tuple[tuple[str, float], ...]]] = {
    0: ((), ()),  # Neutral
    1: (("AU4", "AU7", "AU23", "AU24"), (("AU10", 0.2),)),  # Anger
    2: (("AU10",), (("AU4", 0.5), ("AU6", 0.3), ("AU15", 0.3), ("AU25", 0.3))),  # Disgust
    3: (("AU1", "AU2", "AU4", "AU25"), (("AU26", 0.5), ("AU7", 0.3))),  # Fear
    4: (("AU6", "AU12"), (("AU25", 0.5), ("AU26", 0.15))),  # Happiness
    5: (("AU1", "AU4", "AU15"), (("AU7", 0.2),)),  # Sadness
    6: (("AU1", "AU2", "AU25", "AU26"), ()),  # Surprise
    7: ((), ()),  # Other: a random mix, drawn in _sample_intensity
}
#: Expression sampling probabilities (Neutral a little more common, Other a little less).
EXPR_PROBS = np.array([0.16, 0.123, 0.123, 0.123, 0.123, 0.123, 0.125, 0.10])

#: Valence/arousal = bias + weights · AU intensities (then noise, clip to [-1, 1]).
VA_BIAS = np.array([0.0, -0.1], dtype=np.float64)
VA_WEIGHTS = np.zeros((NUM_AU, 2))
for _name, (_v, _a) in {
    "AU1": (-0.05, 0.25),
    "AU2": (0.05, 0.35),
    "AU4": (-0.4, 0.2),
    "AU6": (0.2, 0.2),
    "AU7": (-0.1, 0.3),
    "AU10": (-0.5, 0.1),
    "AU12": (0.7, 0.15),
    "AU15": (-0.5, -0.8),
    "AU23": (-0.2, 0.15),
    "AU24": (-0.2, 0.15),
    "AU25": (0.0, 0.2),
    "AU26": (0.0, 0.3),
}.items():
    VA_WEIGHTS[_A[_name]] = (_v, _a)
VA_NOISE = 0.05


def _sample_intensity(expr: int, rng: np.random.Generator) -> np.ndarray:
    """AU intensities in [0, 1] for one sample of expression ``expr``."""
    x = np.where(rng.random(NUM_AU) < 0.3, rng.uniform(0.0, 0.2, NUM_AU), 0.0)
    spont = rng.random(NUM_AU) < 0.04  # AUs are not a pure function of the expression
    x[spont] = rng.uniform(0.55, 0.9, int(spont.sum()))
    required, optional = PROTOTYPES[expr]
    if expr == 7:
        picks = rng.choice(NUM_AU, size=int(rng.integers(1, 4)), replace=False)
        x[picks] = rng.uniform(0.55, 1.0, len(picks))
    strong = rng.random() < 0.9
    for name in required:
        x[_A[name]] = rng.uniform(0.6, 1.0) if strong else rng.uniform(0.35, 0.65)
    for name, p in optional:
        if rng.random() < p:
            x[_A[name]] = rng.uniform(0.5, 1.0)
    return np.clip(x, 0.0, 1.0)


def va_from_intensity(intensity: np.ndarray) -> np.ndarray:
    """Noise-free valence/arousal (N×2) of AU intensities (N×12), clipped to [-1, 1]."""
    return np.clip(VA_BIAS + np.asarray(intensity, dtype=np.float64) @ VA_WEIGHTS, -1.0, 1.0)


def sample_labels(n: int, seed: int) -> dict[str, np.ndarray]:
    """Complete (unmasked) labels of ``n`` samples: expression, AU intensities, AU binary, VA."""
    rng = np.random.default_rng([seed, 0])
    expr = rng.choice(len(EXPRESSIONS), size=n, p=EXPR_PROBS / EXPR_PROBS.sum()).astype(np.int64)
    intensity = np.stack([_sample_intensity(int(e), rng) for e in expr]) if n else np.zeros((0, NUM_AU))
    va = va_from_intensity(intensity) + rng.normal(0.0, VA_NOISE, size=(n, 2))
    return {
        "expr": expr,
        "intensity": intensity.astype(np.float32),
        "au": (intensity > 0.5).astype(np.int8),
        "va": np.clip(va, -1.0, 1.0).astype(np.float32),
    }


# --------------------------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Identity:
    """Per-video appearance."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    lip: tuple[float, float, float]
    iris: tuple[float, float, float]
    bg1: tuple[float, float, float]
    bg2: tuple[float, float, float]
    face_w: float  # half-width, fraction of the image size
    face_h: float
    jaw: float  # lower-face width factor
    eye_dx: float
    hair_style: int  # 0 short cap, 1 long sides, 2 bald-ish
    clutter: int

    @classmethod
    def sample(cls, seed: int, video: int) -> Identity:
        r = np.random.default_rng([seed, 2, video])
        t = r.random()
        skin = (1 - t) * np.array([95, 62, 45]) + t * np.array([238, 205, 180]) + r.normal(0, 8, 3)
        hair = r.choice([[25, 20, 18], [70, 45, 30], [140, 100, 60], [200, 170, 110], [110, 110, 110]])
        hair = np.asarray(hair, float) + r.normal(0, 10, 3)
        lip = skin * np.array([0.78, 0.52, 0.55]) + np.array([25, 0, 5])
        iris = r.choice([[60, 40, 25], [40, 80, 120], [70, 100, 60], [30, 25, 20]])
        bg1, bg2 = r.uniform(20, 235, 3), r.uniform(20, 235, 3)
        c = lambda v: tuple(float(x) for x in np.clip(v, 0, 255))  # noqa: E731
        return cls(
            skin=c(skin),
            hair=c(hair),
            lip=c(lip),
            iris=c(np.asarray(iris, float)),
            bg1=c(bg1),
            bg2=c(bg2),
            face_w=float(r.uniform(0.30, 0.37)),
            face_h=float(r.uniform(0.40, 0.46)),
            jaw=float(r.uniform(0.75, 0.95)),
            eye_dx=float(r.uniform(0.13, 0.16)),
            hair_style=int(r.integers(0, 3)),
            clutter=int(r.integers(0, 4)),
        )


_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT


def _pts(xy: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(xy) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _curve(x0: float, x1: float, y_end0: float, y_end1: float, y_mid: float, cx: float, k: int = 9) -> np.ndarray:
    """Points on a parabola from (x0, y_end0) to (x1, y_end1) whose middle (at cx) is y_mid."""
    xs = np.linspace(x0, x1, k)
    half = max((x1 - x0) / 2, 1e-6)
    t = (xs - cx) / half  # -1..1
    base = y_end0 + (y_end1 - y_end0) * (xs - x0) / max(x1 - x0, 1e-6)
    mid_base = (y_end0 + y_end1) / 2
    return np.stack([xs, base + (y_mid - mid_base) * (1 - t**2)], axis=1)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    return yy, xx


def render_face(intensity: np.ndarray, ident: Identity, rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """Draw one face (H×W×3 uint8 RGB) whose geometry follows the 12 AU intensities in [0, 1]."""
    import cv2

    au = {name: float(v) for name, v in zip(AUS, np.clip(intensity, 0, 1), strict=True)}
    u = float(size)
    aa = cv2.LINE_AA
    yy, xx = _grid(size)
    ang = rng.uniform(0, 2 * np.pi)
    g = np.clip(0.5 + (np.cos(ang) * (xx - 0.5) + np.sin(ang) * (yy - 0.5)), 0, 1)[..., None]
    img = (np.asarray(ident.bg1, np.float32) * (1 - g) + np.asarray(ident.bg2, np.float32) * g).astype(np.uint8)
    img = np.ascontiguousarray(img)
    for _ in range(ident.clutter):
        col = tuple(float(v) for v in rng.uniform(0, 255, 3))
        p = _pts(rng.uniform(0, 1, 2) * u)[0, 0]
        cv2.circle(img, (int(p[0]), int(p[1])), int(rng.uniform(0.05, 0.2) * u * _ONE), col, -1, aa, _SHIFT)

    cx, cy = 0.5 * u, 0.53 * u
    fw, fh = ident.face_w * u, ident.face_h * u
    skin = ident.skin
    dark = tuple(0.55 * c for c in skin)

    # Hair behind the head, ears, neck.
    if ident.hair_style != 2:
        hh = fh * (1.08 if ident.hair_style == 0 else 1.15)
        ax = (int(fw * 1.12 * _ONE), int(hh * _ONE))
        cv2.ellipse(
            img,
            (int(cx * _ONE), int((cy - 0.04 * u) * _ONE)),
            ax,
            0,
            180 if ident.hair_style == 0 else 0,
            360,
            ident.hair,
            -1,
            aa,
            _SHIFT,
        )
    for s in (-1, 1):
        cv2.ellipse(
            img,
            (int((cx + s * fw * 0.98) * _ONE), int((cy - 0.04 * u) * _ONE)),
            (int(0.05 * u * _ONE), int(0.09 * u * _ONE)),
            0,
            0,
            360,
            tuple(0.9 * c for c in skin),
            -1,
            aa,
            _SHIFT,
        )
    cv2.rectangle(
        img, (int(cx - 0.6 * fw), int(cy + 0.6 * fh)), (int(cx + 0.6 * fw), size), tuple(0.85 * c for c in skin), -1
    )

    # Face outline: upper half-ellipse + a lower half that the jaw drop (AU26) lengthens.
    chin = fh + 0.07 * u * au["AU26"]
    top = cv2.ellipse2Poly((int(cx * _ONE), int(cy * _ONE)), (int(fw * _ONE), int(fh * _ONE)), 0, 180, 360, 10)
    low = cv2.ellipse2Poly((int(cx * _ONE), int(cy * _ONE)), (int(fw * _ONE), int(chin * _ONE)), 0, 0, 180, 10).astype(
        np.float64
    )
    low[:, 0] = cx * _ONE + (low[:, 0] - cx * _ONE) * (
        ident.jaw + (1 - ident.jaw) * np.clip((cy * _ONE + chin * _ONE - low[:, 1]) / (chin * _ONE), 0, 1)
    )
    cv2.fillPoly(img, [np.concatenate([top, low.astype(np.int32)]).reshape(-1, 1, 2)], skin, aa, _SHIFT)
    if ident.hair_style == 0:  # fringe
        cv2.ellipse(
            img,
            (int(cx * _ONE), int((cy - fh * 0.95) * _ONE)),
            (int(fw * 0.95 * _ONE), int(0.10 * u * _ONE)),
            0,
            0,
            360,
            ident.hair,
            -1,
            aa,
            _SHIFT,
        )

    def line(p: np.ndarray, col: tuple[float, ...], w: float, closed: bool = False) -> None:
        cv2.polylines(img, [_pts(p)], closed, col, max(1, int(round(w))), aa, _SHIFT)

    # Forehead wrinkles (AU1/AU2) and the vertical furrow between the brows (AU4).
    up = max(au["AU1"], au["AU2"])
    if up > 0.15:
        col = tuple(c * (1 - 0.35 * up) for c in skin)
        for k in range(3):
            y = cy - 0.28 * u - 0.035 * u * k
            line(_curve(cx - 0.13 * u, cx + 0.13 * u, y, y, y - 0.012 * u, cx), col, 0.012 * u)
    if au["AU4"] > 0.15:
        col = tuple(c * (1 - 0.45 * au["AU4"]) for c in skin)
        for s in (-1, 1):
            line(np.array([[cx + s * 0.018 * u, cy - 0.22 * u], [cx + s * 0.012 * u, cy - 0.15 * u]]), col, 0.012 * u)

    eye_y = cy - 0.10 * u
    for s in (-1, 1):  # s = -1 left, +1 right
        ex = cx + s * ident.eye_dx * u
        # Eye opening: raised brows widen, lid tightener (AU7) and cheek raise (AU6) narrow from below.
        ew = 0.062 * u
        eh_up = 0.030 * u * (1 + 0.45 * (au["AU1"] + au["AU2"]) / 2 - 0.25 * au["AU4"])
        eh_lo = 0.024 * u * (1 - 0.65 * au["AU7"] - 0.45 * au["AU6"])
        eye = np.concatenate(
            [
                _curve(ex - ew, ex + ew, eye_y, eye_y, eye_y - eh_up, ex),
                _curve(ex - ew, ex + ew, eye_y, eye_y, eye_y + max(eh_lo, 0.002 * u), ex)[::-1],
            ]
        )
        cv2.fillPoly(img, [_pts(eye)], (245, 245, 240), aa, _SHIFT)
        ir = 0.026 * u
        cv2.circle(img, (int(ex * _ONE), int(eye_y * _ONE)), int(ir * _ONE), ident.iris, -1, aa, _SHIFT)
        cv2.circle(img, (int(ex * _ONE), int(eye_y * _ONE)), int(0.45 * ir * _ONE), (10, 10, 10), -1, aa, _SHIFT)
        # Mask the iris outside the lids by redrawing skin above/below the eye outline.
        above = np.concatenate(
            [
                _curve(ex - ew, ex + ew, eye_y, eye_y, eye_y - eh_up, ex),
                [[ex + ew, eye_y - 0.06 * u], [ex - ew, eye_y - 0.06 * u]],
            ]
        )
        below = np.concatenate(
            [
                _curve(ex - ew, ex + ew, eye_y, eye_y, eye_y + max(eh_lo, 0.002 * u), ex),
                [[ex + ew, eye_y + 0.06 * u], [ex - ew, eye_y + 0.06 * u]],
            ]
        )
        cv2.fillPoly(img, [_pts(above)], skin, aa, _SHIFT)
        cv2.fillPoly(img, [_pts(below)], skin, aa, _SHIFT)
        line(_curve(ex - ew, ex + ew, eye_y, eye_y, eye_y - eh_up, ex), (40, 30, 30), 0.014 * u)
        line(
            _curve(ex - ew, ex + ew, eye_y, eye_y, eye_y + max(eh_lo, 0.002 * u), ex),
            dark,
            0.008 * u * (1 + 1.5 * au["AU7"]),
        )
        # Cheek raise (AU6): a raised cheek bulge under the eye and crow's feet at the outer corner.
        if au["AU6"] > 0.1:
            cheek_col = tuple(min(255.0, c * (1 + 0.18 * au["AU6"])) for c in skin)
            cv2.ellipse(
                img,
                (int((ex + s * 0.01 * u) * _ONE), int((eye_y + (0.085 - 0.03 * au["AU6"]) * u) * _ONE)),
                (int(0.06 * u * _ONE), int(0.03 * u * _ONE)),
                0,
                0,
                360,
                cheek_col,
                -1,
                aa,
                _SHIFT,
            )
            col = tuple(c * (1 - 0.4 * au["AU6"]) for c in skin)
            ox = ex + s * (ew + 0.01 * u)
            for dy in (-0.015, 0.0, 0.015):
                line(np.array([[ox, eye_y + dy * u * 0.5], [ox + s * 0.03 * u, eye_y + dy * u * 1.6]]), col, 0.008 * u)
        # Brows: inner end up (AU1), outer end up (AU2), both down and inner ends together (AU4).
        base = eye_y - 0.075 * u
        inner_x = cx + s * (0.045 - 0.018 * au["AU4"]) * u
        outer_x = cx + s * (ident.eye_dx + 0.08) * u
        inner_y = base - 0.06 * u * au["AU1"] + 0.035 * u * au["AU4"]
        outer_y = base - 0.055 * u * au["AU2"] + 0.012 * u * au["AU4"] + 0.008 * u
        mid_y = (inner_y + outer_y) / 2 - 0.015 * u - 0.02 * u * au["AU2"]
        y_left, y_right = (outer_y, inner_y) if s < 0 else (inner_y, outer_y)
        brow = _curve(min(inner_x, outer_x), max(inner_x, outer_x), y_left, y_right, mid_y, (inner_x + outer_x) / 2)
        line(brow, ident.hair if ident.hair_style != 2 else (60, 50, 45), 0.022 * u)

    # Nose: bridge shading, nostrils lifted and widened by AU10, nasolabial folds deepened by AU10/AU6/AU12.
    nose_y = cy + 0.08 * u - 0.012 * u * au["AU10"]
    line(
        np.array([[cx - 0.015 * u, eye_y + 0.02 * u], [cx - 0.025 * u, nose_y - 0.01 * u]]),
        tuple(0.8 * c for c in skin),
        0.01 * u,
    )
    nw = 0.035 * u * (1 + 0.3 * au["AU10"])
    for s in (-1, 1):
        cv2.ellipse(
            img,
            (int((cx + s * nw * 0.6) * _ONE), int(nose_y * _ONE)),
            (int(0.014 * u * _ONE), int(0.008 * u * _ONE)),
            0,
            0,
            360,
            tuple(0.45 * c for c in skin),
            -1,
            aa,
            _SHIFT,
        )
    line(_curve(cx - nw, cx + nw, nose_y, nose_y, nose_y + 0.018 * u, cx), tuple(0.7 * c for c in skin), 0.01 * u)

    mouth_y = cy + 0.22 * u - 0.01 * u * au["AU10"]
    mw = 0.10 * u * (1 + 0.25 * au["AU12"] - 0.25 * au["AU23"] - 0.1 * au["AU24"] + 0.08 * au["AU15"])
    corner_y = mouth_y - 0.045 * u * au["AU12"] + 0.04 * u * au["AU15"]
    press = 1 - 0.65 * max(au["AU24"], 0.8 * au["AU23"])
    ut, lt = 0.022 * u * press, 0.03 * u * press
    opening = 0.03 * u * au["AU25"] + 0.06 * u * au["AU26"] * min(1.0, 2 * au["AU25"])
    raise10 = 0.02 * u * au["AU10"]
    fold = 0.3 + 0.7 * max(au["AU10"], au["AU6"], au["AU12"])
    for s in (-1, 1):
        col = tuple(c * (1 - 0.35 * fold) for c in skin)
        line(
            np.array(
                [[cx + s * (nw + 0.005 * u), nose_y + 0.005 * u], [cx + s * (mw + 0.02 * u), corner_y + 0.01 * u]]
            ),
            col,
            0.01 * u,
        )
    xl, xr = cx - mw, cx + mw
    up_in = _curve(xl, xr, corner_y, corner_y, mouth_y - opening / 2 - raise10 * 0.8, cx)
    lo_in = _curve(xl, xr, corner_y, corner_y, mouth_y + opening / 2, cx)
    up_out = _curve(xl, xr, corner_y, corner_y, mouth_y - opening / 2 - raise10 - ut, cx)
    lo_out = _curve(xl, xr, corner_y, corner_y, mouth_y + opening / 2 + lt, cx)
    if opening > 0.004 * u:
        cv2.fillPoly(img, [_pts(np.concatenate([up_in, lo_in[::-1]]))], (60, 20, 25), aa, _SHIFT)
        teeth = _curve(
            xl + 0.2 * mw,
            xr - 0.2 * mw,
            corner_y,
            corner_y,
            mouth_y - opening / 2 - raise10 * 0.8 + min(opening, 0.02 * u),
            cx,
        )
        cv2.fillPoly(img, [_pts(np.concatenate([up_in[2:-2], teeth[::-1]]))], (235, 232, 220), aa, _SHIFT)
    cv2.fillPoly(img, [_pts(np.concatenate([up_out, up_in[::-1]]))], ident.lip, aa, _SHIFT)
    cv2.fillPoly(img, [_pts(np.concatenate([lo_in, lo_out[::-1]]))], ident.lip, aa, _SHIFT)
    line(up_in if opening <= 0.004 * u else lo_in, tuple(0.5 * c for c in ident.lip), 0.008 * u)
    if au["AU15"] > 0.2:  # depressed corners pull a short fold downwards
        col = tuple(c * (1 - 0.3 * au["AU15"]) for c in skin)
        for s in (-1, 1):
            x0 = cx + s * mw
            line(
                np.array([[x0, corner_y + 0.005 * u], [x0 + s * 0.01 * u, corner_y + 0.04 * u * au["AU15"]]]),
                col,
                0.008 * u,
            )
    if au["AU24"] > 0.3 or au["AU23"] > 0.3:  # pressed lips bulge the skin below
        col = tuple(c * (1 - 0.25 * max(au["AU24"], au["AU23"])) for c in skin)
        y = mouth_y + opening / 2 + lt + 0.025 * u
        line(_curve(cx - 0.05 * u, cx + 0.05 * u, y, y, y + 0.01 * u, cx), col, 0.009 * u)

    # Per-frame pose (roll, scale, shift), lighting, blur and sensor noise.
    roll = rng.uniform(-7, 7)
    scale = rng.uniform(0.93, 1.05)
    shift = rng.uniform(-0.035, 0.035, 2) * u
    m = cv2.getRotationMatrix2D((u / 2, u / 2), roll, scale)
    m[:, 2] += shift
    img = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    la = rng.uniform(0, 2 * np.pi)
    strength, gain = np.float32(rng.uniform(0, 0.7)), np.float32(rng.uniform(0.8, 1.15))
    light = (1.0 + strength * (np.float32(np.cos(la)) * (xx - 0.5) + np.float32(np.sin(la)) * (yy - 0.5))) * gain
    out = img.astype(np.float32) * light[..., None]
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.0))
    out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(rng.uniform(1.5, 6.0))
    return np.clip(out, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- writing


def _render_chunk(task: tuple[Any, ...]) -> int:
    """Worker: render and write JPEGs ``start..stop`` (picklable args only)."""
    import cv2

    cv2.setNumThreads(1)
    images_root, seed, size, quality, start, videos, rels, intensity = task
    root = Path(images_root)
    idents: dict[int, Identity] = {}
    for k, (video, rel, x) in enumerate(zip(videos, rels, intensity, strict=True)):
        if video not in idents:
            idents[video] = Identity.sample(seed, video)
        ident = idents[video]
        img = render_face(x, ident, np.random.default_rng([seed, 1, start + k]), size)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {rel}")
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        buf.tofile(str(path))
    return len(rels)


def _mask_labels(labels: dict[str, np.ndarray], missing_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Set an exact share ``missing_fraction`` of each task's labels to the ABAW missing code."""
    rng = np.random.default_rng([seed, 3])
    n = len(labels["expr"])
    k = int(round(missing_fraction * n))
    va, expr, au = labels["va"].copy(), labels["expr"].copy(), labels["au"].copy()
    va[rng.choice(n, k, replace=False)] = MISSING_VA
    expr[rng.choice(n, k, replace=False)] = MISSING_EXPR
    au[rng.choice(n, k, replace=False)] = MISSING_AU
    return {"va": va, "expr": expr, "au": au}


def synth_dataset(
    out: str | Path,
    n: int,
    seed: int = 0,
    size: int = 112,
    val_fraction: float = 0.2,
    missing_fraction: float = 0.15,
    video_len: int = 50,
    *,
    workers: int | None = None,
    quality: int = 90,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write ``n`` synthetic faces to ``out`` in the ABAW layout; return a summary dict.

    Layout: ``out/cropped_aligned/<video>/<frame>.jpg`` plus ``training_set_annotations.txt`` and
    ``validation_set_annotations.txt`` (split by video), and ``synth.json`` (parameters, provenance).
    ``out`` must not exist or be an empty folder: the dataset is written to a hidden sibling folder and
    renamed into place at the end, so a failed or killed run leaves nothing half-written (the next run
    removes what a kill left behind).
    ``workers``: render processes (None = up to 4 for large sets, 0 = in this process); the output does
    not depend on it. ``progress(done, total)`` is called as images are written.
    """
    if n < 2:
        raise ValueError(f"n={n}, expected at least 2 samples (one per split)")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}, expected a value in (0, 1)")
    if not 0.0 <= missing_fraction < 1.0:
        raise ValueError(f"missing_fraction={missing_fraction}, expected a value in [0, 1)")
    if video_len < 1:
        raise ValueError(f"video_len={video_len}, expected >= 1")
    if size < 16:
        raise ValueError(f"size={size}, expected >= 16")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality={quality}, expected 1..100")
    t0 = time.perf_counter()
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(
            f"{root}: exists and is not an empty folder, expected a new dataset root "
            "(data synth never writes over an existing dataset)"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(root)
    try:
        summary = _write_dataset(
            tmp, root, n, seed, size, val_fraction, missing_fraction, video_len, workers, quality, progress
        )
        replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    log.info(
        "synthetic dataset: %d faces (%d train / %d val) in %s, %.1f s",
        n,
        summary["train"],
        summary["val"],
        root,
        summary["seconds"],
    )
    return summary


def _write_dataset(
    tmp: Path,
    root: Path,
    n: int,
    seed: int,
    size: int,
    val_fraction: float,
    missing_fraction: float,
    video_len: int,
    workers: int | None,
    quality: int,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    """Render and annotate into ``tmp`` (paths in the summary name ``root``, where it will be moved)."""
    images_root = tmp / IMAGES_DIR
    images_root.mkdir(parents=True, exist_ok=True)

    n_videos = math.ceil(n / video_len)
    if n_videos < 2:  # one video per split at least
        video_len = math.ceil(n / 2)
        n_videos = math.ceil(n / video_len)
    video_of = np.arange(n) // video_len
    frame_of = np.arange(n) % video_len
    rels = [f"synth_{v:04d}/{f + 1:05d}.jpg" for v, f in zip(video_of, frame_of, strict=True)]
    n_val_videos = min(max(1, int(round(val_fraction * n_videos))), n_videos - 1)
    val_videos = np.sort(np.random.default_rng([seed, 4]).choice(n_videos, n_val_videos, replace=False))
    is_val = np.isin(video_of, val_videos)

    labels = sample_labels(n, seed)
    masked = _mask_labels(labels, missing_fraction, seed)

    if workers is None:
        workers = min(4, os.cpu_count() or 1) if n >= 400 else 0
    chunk = 64
    tasks = [
        (
            str(images_root),
            seed,
            size,
            quality,
            s,
            video_of[s : s + chunk].tolist(),
            rels[s : s + chunk],
            labels["intensity"][s : s + chunk],
        )
        for s in range(0, n, chunk)
    ]
    done = 0
    if workers > 0:
        with pool_context().Pool(workers) as pool:
            for k in pool.imap(_render_chunk, tasks):
                done += k
                if progress:
                    progress(done, n)
    else:
        for t in tasks:
            done += _render_chunk(t)
            if progress:
                progress(done, n)

    files = {}
    for split, sel in (("train", ~is_val), ("val", is_val)):
        idx = np.flatnonzero(sel)
        write_annotations(
            tmp / SPLIT_FILES[split][0],
            [rels[i] for i in idx],
            masked["va"][idx],
            masked["expr"][idx],
            masked["au"][idx],
        )
        files[split] = root / SPLIT_FILES[split][0]
    summary: dict[str, Any] = {
        "root": str(root),
        "n": n,
        "seed": seed,
        "size": size,
        "val_fraction": val_fraction,
        "missing_fraction": missing_fraction,
        "video_len": video_len,
        "quality": quality,
        "train": int((~is_val).sum()),
        "val": int(is_val.sum()),
        "videos": {"train": n_videos - n_val_videos, "val": n_val_videos},
        "files": {k: str(v) for k, v in files.items()},
        "generator": "edge_affect.data.synth v1",
    }
    from edge_affect.artifact import atomic_write_text

    atomic_write_text(tmp / "synth.json", json.dumps(summary, indent=2, sort_keys=True))
    return summary
