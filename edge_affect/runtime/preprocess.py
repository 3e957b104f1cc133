"""Face-crop preprocessing shared by training caches, calibration frames, export checks and the runtime.

numpy + OpenCV only (no torch): this is the one implementation every path uses, so a frame is turned
into network input the same way everywhere.

Images are checked at the boundary: a file's size and its header's pixel count are checked against
:data:`MAX_IMAGE_BYTES` / :data:`MAX_IMAGE_PIXELS` before anything is decoded (a tiny PNG declaring
30000×30000 pixels is refused without allocating), and the EXIF orientation of JPEG, PNG and WebP files
(phone photos) is read here and applied, so faces are never analysed sideways.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.schema import Preprocess

_INTERP = {"area": 3, "linear": 1, "cubic": 2, "nearest": 0}  # cv2.INTER_* values (artifact.INTERPOLATIONS)

#: Largest image (width × height) decoded or accepted as an array: 50 megapixels, above 48-MP phone photos;
#: one RGB copy of it is 150 MB.
MAX_IMAGE_PIXELS = 50_000_000
#: Largest image file read (bytes): 256 MiB, more than any 50-MP JPEG/PNG/WebP needs.
MAX_IMAGE_BYTES = 256 * 1024 * 1024
#: Pixel types an image array may have (uint16 is scaled down by 257; floats must lie in [0, 1]).
PIXEL_DTYPES: tuple[str, ...] = ("uint8", "uint16", "float32", "float64")
#: Image file formats ``decode_image`` reads (their headers are checked before decoding).
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WebP", "BMP", "TIFF", "PNM")


def _cv2():
    from edge_affect.runtime import require_cv2  # a one-line error naming the `opencv` extra when missing

    return require_cv2()


def _check_pixels(width: int, height: int, where: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{where}: image of {width}×{height} = {width * height / 1e6:.1f} megapixels exceeds the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (MAX_IMAGE_PIXELS)"
        )


def to_uint8_rgb(img: np.ndarray, where: str = "image") -> np.ndarray:
    """Return ``img`` as H×W×3 uint8 RGB.

    Accepts H×W grayscale, H×W×1, H×W×3 RGB, H×W×4 RGBA (alpha dropped), uint8 or uint16 (scaled
    down by 257) or float32/float64 in [0, 1], at most :data:`MAX_IMAGE_PIXELS` pixels. Anything else
    is a ``ValueError`` naming ``where``.
    """
    if not isinstance(img, np.ndarray):
        raise ValueError(f"{where}: expected a numpy array (H×W×3 uint8 image), got {type(img).__name__}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        hint = ""
        if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[2] > 4:
            hint = " (channel-first? transpose it to H×W×C with img.transpose(1, 2, 0))"
        raise ValueError(f"{where}: expected H×W, H×W×1, H×W×3 or H×W×4 pixels, got shape {img.shape}{hint}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise ValueError(f"{where}: image of size {img.shape[1]}×{img.shape[0]} is too small (zero-size crop?)")
    _check_pixels(img.shape[1], img.shape[0], where)
    if img.dtype.byteorder not in ("=", "|"):  # big-endian 16-bit from FITS/PNM readers
        img = img.astype(img.dtype.newbyteorder("="))
    if img.dtype == np.uint16:
        img = (img.astype(np.uint32) // 257).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        lo, hi = float(img.min()), float(img.max())  # NaN propagates through min/max
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"{where}: float image contains NaN or Inf (expected values in [0, 1])")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{where}: float image must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]")
        img = np.round(img * 255.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"{where}: unsupported pixel type {img.dtype} (expected {', '.join(PIXEL_DTYPES)})")
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


# -- image files: header, EXIF orientation, decoding -----------------------------------------------
def _exif_orientation(tiff: bytes) -> int:
    """Orientation tag (0x0112) of IFD0 in EXIF/TIFF bytes; 1 (as stored) when absent or unreadable."""
    if tiff.startswith(b"Exif\0\0"):
        tiff = tiff[6:]
    if len(tiff) < 8 or tiff[:4] not in (b"II*\0", b"MM\0*"):
        return 1
    e = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(e + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(e + "H", tiff, ifd)
    for i in range(min(count, 512)):
        off = ifd + 2 + 12 * i
        if off + 12 > len(tiff):
            break
        tag, typ = struct.unpack_from(e + "HH", tiff, off)
        if tag == 0x0112 and typ == 3:  # SHORT
            (value,) = struct.unpack_from(e + "H", tiff, off + 8)
            return value if 1 <= value <= 8 else 1
    return 1


def _tiff_size(data: bytes) -> tuple[int, int]:
    e = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(e + "I", data, 4)
    (count,) = struct.unpack_from(e + "H", data, ifd)
    dims: dict[int, int] = {}
    for i in range(min(count, 4096)):
        tag, typ = struct.unpack_from(e + "HH", data, ifd + 2 + 12 * i)
        if tag in (256, 257):
            fmt = e + ("H" if typ == 3 else "I")
            (dims[tag],) = struct.unpack_from(fmt, data, ifd + 2 + 12 * i + 8)
    return dims[256], dims[257]


def _jpeg_header(data: bytes) -> tuple[int, int, int]:
    """(width, height, orientation) from the first SOF and APP1/Exif segments; the file must end its scan."""
    orientation, i, n = 1, 2, len(data)
    sof = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ValueError("corrupt JPEG marker sequence")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):
            raise ValueError("no frame header before the image data")
        (length,) = struct.unpack_from(">H", data, i + 2)
        seg = data[i + 4 : i + 2 + length]
        if length < 2 or len(seg) != length - 2:
            raise ValueError("truncated JPEG header")
        if marker == 0xE1 and seg.startswith(b"Exif\0\0"):
            orientation = _exif_orientation(seg)
        elif marker in sof:
            if len(seg) < 5:
                raise ValueError("truncated JPEG frame header")
            h, w = struct.unpack_from(">HH", seg, 1)
            # Entropy-coded data never contains FF D9 (FF is stuffed): no end-of-image marker after the frame
            # header means the file was cut off, and the decoder would fill the rest with grey.
            if data.find(b"\xff\xd9", i) < 0:
                raise ValueError("truncated JPEG (no end-of-image marker)")
            return w, h, orientation
        i += 2 + length
    raise ValueError("no JPEG frame header")


def _png_header(data: bytes) -> tuple[int, int, int]:
    if data[12:16] != b"IHDR":
        raise ValueError("PNG without an IHDR chunk")
    w, h = struct.unpack_from(">II", data, 16)
    orientation, i = 1, 8
    while i + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, i)
        kind = data[i + 4 : i + 8]
        if kind == b"eXIf":
            orientation = _exif_orientation(data[i + 8 : i + 8 + length])
            break
        if kind == b"IEND":
            break
        i += 12 + length
    return w, h, orientation


def _webp_header(data: bytes) -> tuple[int, int, int]:
    w = h = 0
    orientation, i = 1, 12
    while i + 8 <= len(data):
        kind = data[i : i + 4]
        (length,) = struct.unpack_from("<I", data, i + 4)
        body = data[i + 8 : i + 8 + length]
        if kind == b"VP8X" and len(body) >= 10:
            w = 1 + int.from_bytes(body[4:7], "little")
            h = 1 + int.from_bytes(body[7:10], "little")
        elif kind == b"VP8 " and not w and len(body) >= 10:
            w, h = (v & 0x3FFF for v in struct.unpack_from("<HH", body, 6))
        elif kind == b"VP8L" and not w and len(body) >= 5:
            (bits,) = struct.unpack_from("<I", body, 1)
            w, h = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        elif kind == b"EXIF":
            orientation = _exif_orientation(body)
        i += 8 + length + (length & 1)
    if not w or not h:
        raise ValueError("WebP without a frame header")
    return w, h, orientation


def _pnm_size(data: bytes) -> tuple[int, int]:
    tokens: list[bytes] = []
    for line in data[2:4096].splitlines():
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 2:
            return int(tokens[0]), int(tokens[1])
    raise ValueError("PNM header without width and height")


def image_header(data: bytes) -> tuple[str, int, int, int]:
    """``(format, width, height, exif_orientation)`` read from an image file's header, without decoding.

    Formats: :data:`IMAGE_FORMATS`. Orientation is 1 where the file has none (and for TIFF and the other
    formats, whose decoder applies its own). Unknown formats and unreadable headers raise ``ValueError``.
    """
    try:
        if data[:3] == b"\xff\xd8\xff":
            return ("JPEG", *_jpeg_header(data))
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return ("PNG", *_png_header(data))
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return ("WebP", *_webp_header(data))
        if data[:2] == b"BM":
            (dib,) = struct.unpack_from("<I", data, 14)
            w, h = struct.unpack_from("<HH", data, 18) if dib == 12 else struct.unpack_from("<ii", data, 18)
            return "BMP", abs(w), abs(h), 1
        if data[:4] in (b"II*\0", b"MM\0*"):
            return ("TIFF", *_tiff_size(data), 1)
        if data[:1] == b"P" and data[1:2] in b"123456" and len(data) > 2:
            return ("PNM", *_pnm_size(data), 1)
    except (struct.error, KeyError, IndexError) as e:
        raise ValueError(f"unreadable image header ({type(e).__name__})") from None
    raise ValueError(f"unknown image format (expected {', '.join(IMAGE_FORMATS)})")


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image stored with EXIF ``orientation`` (1-8) upright, as a viewer would show it."""
    if orientation == 2:
        img = img[:, ::-1]
    elif orientation == 3:
        img = img[::-1, ::-1]
    elif orientation == 4:
        img = img[::-1]
    elif orientation == 5:
        img = img.swapaxes(0, 1)
    elif orientation == 6:
        img = np.rot90(img, -1)
    elif orientation == 7:
        img = img[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        img = np.rot90(img, 1)
    return np.ascontiguousarray(img)


def decode_image(path: str | Path) -> np.ndarray:
    """Read an image file as upright H×W×3 uint8 RGB.

    The file size and the header's pixel count are checked before decoding (:data:`MAX_IMAGE_BYTES`,
    :data:`MAX_IMAGE_PIXELS`); the EXIF orientation of JPEG/PNG/WebP is applied here, independent of the
    OpenCV build (OpenCV's own rotation is not used); TIFF orientation is applied by OpenCV's TIFF decoder.
    Missing files raise ``FileNotFoundError``; corrupt, truncated, unknown or oversized images ``ValueError``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"image {p} does not exist")
    if not p.is_file():
        raise ValueError(f"image {p} is not a file")
    size = p.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ValueError(
            f"image {p}: file of {size / 2**20:.0f} MiB exceeds the limit of {MAX_IMAGE_BYTES // 2**20} MiB"
        )
    raw = p.read_bytes()
    if not raw:
        raise ValueError(f"image {p}: empty file")
    try:
        fmt, w, h, orientation = image_header(raw)
    except ValueError as e:
        raise ValueError(f"image {p}: cannot be decoded: {e}") from None
    if w < 1 or h < 1:
        raise ValueError(f"image {p}: header declares {w}×{h} pixels")
    _check_pixels(w, h, f"image {p}")
    img = decode_encoded(raw)
    if img is None:
        raise ValueError(f"image {p}: cannot be decoded (corrupt {fmt} data)")
    return to_uint8_rgb(apply_orientation(img, orientation), where=str(p))


def decode_encoded(raw: bytes) -> np.ndarray | None:
    """Encoded image bytes → pixels as stored (RGB/RGBA made RGB, gray kept, 16-bit kept, not rotated), or
    ``None`` when OpenCV cannot decode them. Callers check the header first and apply the orientation after."""
    cv2 = _cv2()
    # IMREAD_UNCHANGED: keeps 16-bit and alpha, and never rotates (the orientation is applied by the caller).
    img = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return img


# -- faces → network input -------------------------------------------------------------------------
def resize_face(img: np.ndarray, pp: Preprocess, where: str = "face") -> np.ndarray:
    """Resize one face crop to the model's square input and colour mode (uint8, H×W×3)."""
    rgb = to_uint8_rgb(img, where)
    size = pp.input_size
    if pp.interpolation not in _INTERP:
        raise ValueError(f"{where}: interpolation {pp.interpolation!r} is not one of {sorted(_INTERP)}")
    if rgb.shape[0] != size or rgb.shape[1] != size:
        cv2 = _cv2()
        shrink = rgb.shape[0] > size or rgb.shape[1] > size
        interp = _INTERP[pp.interpolation] if shrink else _INTERP["linear"]
        rgb = cv2.resize(rgb, (size, size), interpolation=interp)
    if pp.color == "gray":
        # ITU-R 601 luma, the same weights OpenCV uses, replicated to three channels.
        y = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        rgb = np.repeat(np.clip(np.round(y), 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    return rgb


def normalize(batch_uint8: np.ndarray, pp: Preprocess) -> np.ndarray:
    """N×H×W×3 uint8 → N×3×H×W float32 normalised as ``pp`` says."""
    if not isinstance(batch_uint8, np.ndarray) or batch_uint8.ndim != 4 or batch_uint8.shape[3] != 3:
        raise ValueError(f"expected an N×H×W×3 uint8 array, got {_describe(batch_uint8)}")
    if batch_uint8.dtype != np.uint8:
        raise ValueError(f"expected an N×H×W×3 uint8 array, got dtype {batch_uint8.dtype} (resize_face makes uint8)")
    # (x / 255 - mean) / std as one multiply-add per channel, written straight into the NCHW output:
    # ~10× faster than transpose + astype + three array passes, equal within 1e-6.
    mean = np.asarray(pp.mean, dtype=np.float64)
    std = np.asarray(pp.std, dtype=np.float64)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    offset = (-mean / std).astype(np.float32)
    n, h, w, _ = batch_uint8.shape
    out = np.empty((n, 3, h, w), dtype=np.float32)
    for c in range(3):
        np.multiply(batch_uint8[..., c], scale[c], out=out[:, c], dtype=np.float32, casting="unsafe")
        out[:, c] += offset[c]
    return out


def _describe(x: Any) -> str:
    """What a caller passed, for error messages: type, and shape/dtype for arrays."""
    if isinstance(x, np.ndarray):
        return f"array of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, (str, bytes)):
        return f"{type(x).__name__} {x[:40]!r}"
    return type(x).__name__


def _check_array(a: np.ndarray, where: str) -> None:
    """Whole-array checks (dtype, value range, size) for an image or a batch of faces given as one array."""
    if a.size == 0:
        raise ValueError(f"{where}: {_describe(a)} is empty (expected at least one face of at least 2×2 pixels)")
    if a.dtype.name not in PIXEL_DTYPES:
        raise ValueError(f"{where}: {_describe(a)} has an unsupported pixel type (expected {', '.join(PIXEL_DTYPES)})")
    if a.dtype.kind == "f":
        lo, hi = float(a.min()), float(a.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{where}: float pixels must be finite and lie in [0, 1], got [{lo:.3g}, {hi:.3g}] "
                "(scale uint8 images by 1/255 or pass them as uint8)"
            )


def as_face_list(faces: Any, where: str = "faces") -> list[Any]:
    """The faces of a ``predict`` call, one list item per face; no layout guessing.

    Accepted: one image (H×W gray, or H×W×C with C = 1, 3 or 4), one N×H×W×C batch (C = 1, 3 or 4), or a
    list/tuple of images (one face per item; a bad item gets its own error status downstream). Arrays must be
    uint8, uint16 or float32/float64 in [0, 1]. A channel-first array (C×H×W), an N×H×W stack (pass N×H×W×1),
    strings, ``None`` and other objects are a one-line ``ValueError`` saying what was given and expected.
    """
    if isinstance(faces, np.ndarray):
        ok_c = (1, 3, 4)
        if faces.ndim == 2 or (faces.ndim == 3 and faces.shape[2] in ok_c):
            _check_array(faces, where)
            return [faces]
        if faces.ndim == 4 and faces.shape[3] in ok_c:
            if faces.shape[0] == 0:
                raise ValueError(f"{where}: no faces given (batch of shape {tuple(faces.shape)})")
            _check_array(faces, where)
            return list(faces)
        if faces.ndim == 3 and faces.shape[0] in ok_c:
            hint = "; channel-first? transpose to H×W×C with img.transpose(1, 2, 0)"
        elif faces.ndim == 4 and faces.shape[1] in ok_c:
            hint = "; channel-first? transpose to N×H×W×C with batch.transpose(0, 2, 3, 1)"
        elif faces.ndim == 3:
            hint = "; for N gray faces pass an N×H×W×1 array or a list"
        else:
            hint = ""
        raise ValueError(
            f"{where}: got an {_describe(faces)}; expected one H×W or H×W×C image, or an N×H×W×C batch "
            f"(C = 1, 3 or 4){hint}"
        )
    if isinstance(faces, (list, tuple)):
        if not faces:
            raise ValueError(f"{where}: no faces given (empty {type(faces).__name__})")
        return list(faces)
    raise ValueError(
        f"{where}: got {_describe(faces)}; expected a numpy image (H×W×3 uint8), an N×H×W×3 batch or a list of images"
    )


def prepare_batch(faces: np.ndarray | Sequence[np.ndarray], pp: Preprocess) -> np.ndarray:
    """Face crops → network input N×3×S×S.

    ``faces``: a list of any-size images, or one array that is always a batch: N×H×W×C (C = 1, 3 or 4) or
    N×H×W gray (``.npz`` face sets). A single image goes in a list. Bad crops raise ``ValueError``.
    """
    if isinstance(faces, np.ndarray):
        if not (faces.ndim == 4 and faces.shape[3] in (1, 3, 4)) and not (faces.ndim == 3 and faces.shape[2] > 4):
            raise ValueError(
                f"got an {_describe(faces)}; expected a list of images, an N×H×W×C batch (C = 1, 3 or 4) "
                "or an N×H×W gray batch (a single image goes in a list)"
            )
        items = list(faces)
    elif isinstance(faces, (list, tuple)):
        items = list(faces)
    else:
        raise ValueError(f"got {_describe(faces)}; expected a list of images or an N×H×W[×C] array")
    if not items:
        raise ValueError("no faces given (empty batch)")
    resized = np.stack([resize_face(f, pp, where=f"face {i}") for i, f in enumerate(items)])
    return normalize(resized, pp)
