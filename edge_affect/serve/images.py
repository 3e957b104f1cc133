"""Encoded image bytes from a request body → upright RGB pixels, checked before anything is decoded.

The same limits as files (``runtime.preprocess``): the header's pixel count against ``MAX_IMAGE_PIXELS``
before decoding (a tiny PNG declaring 30000×30000 is refused without allocating), EXIF orientation applied.
"""

from __future__ import annotations

import numpy as np

from edge_affect.runtime.preprocess import (
    MAX_IMAGE_PIXELS,
    apply_orientation,
    decode_encoded,
    image_header,
    to_uint8_rgb,
)


class ImageTooLarge(ValueError):
    """The image declares more pixels than the runtime accepts (HTTP 413)."""


def decode_body(data: bytes, where: str = "request body") -> np.ndarray:
    """JPEG/PNG/WebP/BMP/TIFF/PNM bytes → H×W×3 uint8 RGB, upright.

    Empty, unknown, truncated or corrupt data is a one-line ``ValueError``; more than ``MAX_IMAGE_PIXELS``
    pixels an :class:`ImageTooLarge` (checked from the header, before decoding)."""
    if not data:
        raise ValueError(f"{where}: empty, expected an encoded image (JPEG, PNG, WebP, …)")
    try:
        fmt, w, h, orientation = image_header(data)
    except ValueError as e:
        raise ValueError(f"{where}: not an image: {e}") from None
    if w < 1 or h < 1:
        raise ValueError(f"{where}: {fmt} header declares {w}×{h} pixels")
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(
            f"{where}: {fmt} of {w}×{h} = {w * h / 1e6:.1f} megapixels exceeds the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels"
        )
    img = decode_encoded(data)
    if img is None:
        raise ValueError(f"{where}: cannot be decoded (corrupt or truncated {fmt} data)")
    if img.shape[0] * (img.shape[1] if img.ndim > 1 else 1) > MAX_IMAGE_PIXELS:  # a header that lied
        raise ImageTooLarge(f"{where}: decoded {fmt} exceeds the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels")
    return to_uint8_rgb(apply_orientation(img, orientation), where=where)
