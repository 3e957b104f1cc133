"""5-point similarity alignment of detected faces, and the crop-framing template a face set implies."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_affect.artifact import ALIGN_VIEWS, is_align_views
from edge_affect.runtime.detect import YuNetDetector, yunet_runner

#: ArcFace 5-point template for a 112×112 crop (image-left eye, image-right eye, nose, mouth corners),
#: in the order YuNet reports landmarks. Scaled to the model's input size.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

#: Mirror partner of each landmark (image-left eye ↔ image-right eye, nose, mouth corners).
_MIRROR = (1, 0, 2, 4, 3)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` → ``dst`` (Umeyama 1991).

    Returns the 2×3 matrix for ``cv2.warpAffine``. Degenerate points (all equal) raise ``ValueError``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc**2).sum() / len(src)
    if not np.isfinite(var_s) or var_s < 1e-6:
        raise ValueError("landmarks are degenerate (all at one point)")
    cov = dc.T @ sc / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = (d * sign).sum() / var_s
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def warp_scale(m: np.ndarray) -> float:
    """The uniform scale of a 2×3 similarity matrix (output px per input px; < 1 shrinks)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(m, dtype=np.float64)[:, :2]))))


#: Levels of 2x area shrinking kept below the output's resolution: 1 = the patch stays at least twice as fine as
#: the crop, so what the cheap box shrink folds lands where the Gaussian that follows removes it.
_FINER_LEVELS = 1


def antialiased_source(img: np.ndarray, m: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``img`` a ``size``×``size`` warp by ``m`` reads, low-passed for the warp's shrink, and the
    matrix that warps it to the same crop: ``cv2.warpAffine(*antialiased_source(img, m, size), (size, size))``.

    A bilinear warp that shrinks reads 4 input pixels per output pixel and skips the rest, so detail finer than
    the output grid (skin, hair, compression noise) aliases: moving the landmarks by a fraction of an output
    pixel picks other input pixels and changes the crop far more than the move does. Here the footprint of the
    crop (plus the filter's reach) is cut out, halved by 2×2 area averaging while it stays at least twice as fine
    as the crop (cheap: a box of ``k`` = 2^levels px), then blurred by the Gaussian that brings the total blur to
    σ = 0.5·√(1/s² − 1) input px for a warp of scale ``s`` (the usual low-pass for an input itself sharp to
    0.5 px; the box's variance (k² − 1)/12 counts towards it, so the blur grows smoothly with the shrink), and
    the matrix is moved onto that patch. A warp that does not shrink (``s ≥ 1``) gets ``img`` and ``m`` back.
    """
    import cv2

    m = np.asarray(m, dtype=np.float64)
    s = warp_scale(m)
    if not np.isfinite(s) or s >= 1.0 or s <= 0.0:
        return img, m
    levels = max(0, int(np.floor(np.log2(1.0 / s))) - _FINER_LEVELS)
    k = 2**levels
    var = 0.25 * (1.0 / s**2 - 1.0) - (k * k - 1) / 12.0  # input px², left for the Gaussian
    sigma = float(np.sqrt(max(0.0, var))) / k  # in patch px
    pad = k * (int(np.ceil(3.0 * sigma)) + 2)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
    src = corners @ cv2.invertAffineTransform(m).T
    h, w = img.shape[:2]
    x0 = max(0, int(np.floor(src[:, 0].min())) - pad)
    y0 = max(0, int(np.floor(src[:, 1].min())) - pad)
    x1 = min(w, int(np.ceil(src[:, 0].max())) + pad + 1)
    y1 = min(h, int(np.ceil(src[:, 1].max())) + pad + 1)
    if x1 - x0 < k or y1 - y0 < k:  # the crop lies outside the frame: the border fill is all there is
        return img, m
    patch = img[y0:y1, x0:x1]
    if k > 1:
        # Extend to whole k×k cells with the frame's own edge (what the warp's BORDER_REPLICATE would read).
        ph, pw = -(y1 - y0) % k, -(x1 - x0) % k
        if ph or pw:
            patch = cv2.copyMakeBorder(patch, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
        for _ in range(levels):  # OpenCV's 2x INTER_AREA is a fast exact 2×2 mean; repeated, a k×k box
            patch = cv2.resize(patch, (patch.shape[1] // 2, patch.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if sigma > 0.05:
        patch = cv2.GaussianBlur(patch, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    # Cell (u, v) of the patch is centred on input pixel (x0 + k·u + (k-1)/2, y0 + k·v + (k-1)/2).
    cell = np.array([[k, 0, x0 + (k - 1) / 2.0], [0, k, y0 + (k - 1) / 2.0], [0, 0, 1.0]])
    return patch, (np.vstack([m, [0.0, 0.0, 1.0]]) @ cell)[:2]


def model_template(extra: dict[str, Any]) -> np.ndarray | None:
    """The alignment template a model's metadata names (``align_template``: fractions of the crop), in the 112-px
    units :func:`align_face` takes, or None for the ArcFace default."""
    tpl = extra.get("align_template")
    return np.asarray(tpl, dtype=np.float64) * 112.0 if tpl is not None else None


#: Crop px by which each view of :func:`align_views` is moved (along x and y): a quarter of a crop pixel, so
#: the views sample the face between the plain crop's pixel centres.
VIEW_SHIFT_PX = 0.25


def view_offsets(views: int) -> list[tuple[float, float]]:
    """The (dx, dy) crop-px offsets of ``views`` views of one alignment: 1 = the crop itself; 2 = ±¼ px along
    the diagonal; 4 = the ±¼ px grid. Averaging the model over 2 views kept the shipped model's expression under
    N(0, 1 px) landmark noise on 96.5 % of 60-px faces instead of 94.7 % (``benchmarks/bench_align_views.py``)."""
    q = VIEW_SHIFT_PX
    if not is_align_views(views):
        raise ValueError(f"views {views!r}: expected one of {list(ALIGN_VIEWS)}")
    if views == 1:
        return [(0.0, 0.0)]
    if views == 2:
        return [(q, q), (-q, -q)]
    return [(a, b) for a in (-q, q) for b in (-q, q)]


def shifted(m: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """The 2×3 warp ``m`` followed by a move of (dx, dy) crop px."""
    return np.asarray(m, dtype=np.float64) + np.array([[0.0, 0.0, dx], [0.0, 0.0, dy]])


def align_views(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    size: int,
    template: np.ndarray | None = None,
    antialias: bool = False,
    views: int = 1,
) -> np.ndarray:
    """``views``×size×size×C crops of the face whose 5 landmarks are given (:func:`align_face`'s alignment, moved
    by :func:`view_offsets`), to be predicted together and averaged (``Predictor.predict(..., views=...)``)."""
    m = align_matrix(landmarks, size, template)
    return np.stack([warp_face(rgb, shifted(m, dx, dy), size, antialias) for dx, dy in view_offsets(views)])


def crop_views(crop: np.ndarray, views: int) -> np.ndarray:
    """``views``×H×W×C views of an already aligned H×W[×C] face crop (the crop itself for 1; else moved by
    :func:`view_offsets`, bilinear, edges replicated), for ``Predictor.predict(..., views=...)``; a gray H×W crop
    gets C = 1."""
    crop = np.asarray(crop)
    if crop.ndim == 2:
        crop = crop[..., None]
    if crop.ndim != 3:
        raise ValueError(f"crop_views: an array of shape {crop.shape}, expected one H×W or H×W×C face crop")
    if views == 1:
        view_offsets(views)
        return crop[None]
    h, w = crop.shape[:2]
    if h != w:
        raise ValueError(f"crop_views: a {w}×{h} crop, expected a square aligned face crop")
    eye = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    out = [warp_face(crop, shifted(eye, dx, dy), h) for dx, dy in view_offsets(views)]
    return np.stack([o.reshape(crop.shape) for o in out])


def align_face(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    size: int,
    template: np.ndarray | None = None,
    antialias: bool = False,
) -> np.ndarray:
    """Warp the face whose 5 landmarks are given onto the template scaled to ``size``×``size``.

    ``antialias``: low-pass the face for the warp's shrink first (``antialiased_source``), so a detector's
    sub-pixel landmark noise moves the crop about as little as it moves the face. Not the runtime's default: the
    shipped model v3 loses 1.3-1.7 points of accuracy on low-passed crops (``benchmarks/bench_align.py``)."""
    return warp_face(rgb, align_matrix(landmarks, size, template), size, antialias)


def align_matrix(landmarks: np.ndarray, size: int, template: np.ndarray | None = None) -> np.ndarray:
    """The 2×3 similarity :func:`align_face` warps with: the 5 ``landmarks`` onto ``template`` (112-px units; None:
    ArcFace's) scaled to a ``size``×``size`` crop."""
    tpl = (ARCFACE_TEMPLATE_112 if template is None else np.asarray(template, dtype=np.float64)) * (size / 112.0)
    return similarity_transform(landmarks, tpl)


def warp_face(rgb: np.ndarray, m: np.ndarray, size: int, antialias: bool = False) -> np.ndarray:
    """The ``size``×``size`` crop the 2×3 matrix ``m`` cuts from ``rgb`` (bilinear, edges replicated), low-passed
    for the shrink first when ``antialias`` (:func:`antialiased_source`)."""
    import cv2

    src = rgb
    if antialias:
        src, m = antialiased_source(rgb, m, size)
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def measure_align_template(
    images: Any, detector: YuNetDetector | None = None, upscale_to: int = 192, min_faces: int = 50
) -> tuple[np.ndarray, int]:
    """The 5-point template (fractions of the crop, 5×2) that reproduces the framing of a set of face crops.

    Runs YuNet on each crop (upscaled to ``upscale_to`` so small 48-px faces are found), takes the median
    landmark positions and makes them left-right symmetric. Store it as ``align_template`` in a model's
    metadata so the runtime aligns detected faces the way the training crops were framed (FER2013 crops
    show more forehead than the ArcFace template). Returns ``(template, faces_found)``.
    """
    import cv2

    own = detector is None
    det = detector or YuNetDetector(yunet_runner("onnxruntime", "cpu"))
    pts = []
    try:
        for img in images:
            img = np.asarray(img)
            big = cv2.resize(img, (upscale_to, upscale_to), interpolation=cv2.INTER_CUBIC)
            rgb = np.repeat(big[..., None], 3, axis=2) if big.ndim == 2 else big[..., :3]
            found = det.detect(np.ascontiguousarray(rgb, dtype=np.uint8), max_side=max(upscale_to, det.max_side))
            if found:
                pts.append(found[0].landmarks / float(upscale_to))
    finally:
        if own:
            det.close()
    if len(pts) < min_faces:
        raise ValueError(f"align template: YuNet found faces in only {len(pts)} crops (need ≥ {min_faces})")
    med = np.median(np.stack(pts).astype(np.float64), axis=0)
    mirrored = med[list(_MIRROR)].copy()
    mirrored[:, 0] = 1.0 - mirrored[:, 0]
    return (med + mirrored) / 2.0, len(pts)
