"""5-point similarity alignment of detected faces, and the crop-framing template a face set implies."""

from __future__ import annotations

from typing import Any

import numpy as np

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


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int, template: np.ndarray | None = None) -> np.ndarray:
    """Warp the face whose 5 landmarks are given onto the template scaled to ``size``×``size``."""
    import cv2

    tpl = (ARCFACE_TEMPLATE_112 if template is None else np.asarray(template, dtype=np.float64)) * (size / 112.0)
    m = similarity_transform(landmarks, tpl)
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


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
