"""Inputs checked at the boundary (issue 12, part B): image files (EXIF orientation, size limits before
decoding, corrupt files) and ``predict`` inputs (documented layouts only, never a guessed shape or a wrong
count). Torch-free: a fake runner stands in for the network, so every test runs in well under a second."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_affect.artifact import ArtifactMeta
from edge_affect.runtime import preprocess as pre
from edge_affect.runtime.backends.base import BaseRunner, TensorSpec
from edge_affect.runtime.predictor import Predictor
from edge_affect.runtime.preprocess import as_face_list, decode_image, image_header, prepare_batch, to_uint8_rgb
from edge_affect.schema import Preprocess

S = 16  # network input of the fake model
ROOT = Path(__file__).resolve().parents[2]


# -- helpers ---------------------------------------------------------------------------------------
def _exif(orientation: int, big_endian: bool = True) -> bytes:
    """TIFF/EXIF bytes with one IFD0 entry: Orientation (0x0112, SHORT) = ``orientation``."""
    e = ">" if big_endian else "<"
    head = (b"MM\0*" if big_endian else b"II*\0") + struct.pack(e + "I", 8)
    entry = struct.pack(e + "HHI", 0x0112, 3, 1) + struct.pack(e + "HH", orientation, 0)
    return head + struct.pack(e + "H", 1) + entry + b"\0\0\0\0"


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _encode(img_rgb: np.ndarray, fmt: str, orientation: int | None = None, big_endian: bool = True) -> bytes:
    """Encode with OpenCV, then add an EXIF orientation the way cameras and phones store it."""
    import cv2

    ext = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}[fmt]
    params = [cv2.IMWRITE_JPEG_QUALITY, 100] if fmt == "jpeg" else []
    if fmt == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, 101]  # lossless
    ok, buf = cv2.imencode(ext, cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR), params)
    assert ok
    data = buf.tobytes()
    if orientation is None:
        return data
    tiff = _exif(orientation, big_endian)
    if fmt == "jpeg":
        app1 = b"Exif\0\0" + tiff
        return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]
    if fmt == "png":
        return data[:33] + _png_chunk(b"eXIf", tiff) + data[33:]
    # WebP: the extended format (VP8X with the EXIF flag) around the encoded frame, then the EXIF chunk.
    h, w = img_rgb.shape[:2]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x08, 0, 0, 0]) + (w - 1).to_bytes(3, "little")
    vp8x += (h - 1).to_bytes(3, "little")
    exif = b"EXIF" + struct.pack("<I", len(tiff)) + tiff + (b"\0" if len(tiff) % 2 else b"")
    body = b"WEBP" + vp8x + data[12:] + exif
    return b"RIFF" + struct.pack("<I", len(body)) + body


#: What a viewer shows for a stored image ``s`` with each EXIF orientation (EXIF 2.32, tag 0x0112).
UPRIGHT = {
    1: lambda s: s,
    2: lambda s: s[:, ::-1],
    3: lambda s: s[::-1, ::-1],
    4: lambda s: s[::-1],
    5: lambda s: s.transpose(1, 0, 2),
    6: lambda s: np.rot90(s, -1),
    7: lambda s: np.rot90(s, -1)[::-1],
    8: lambda s: np.rot90(s, 1),
}


def _png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG whose IHDR declares ``width``×``height`` RGB pixels, with one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _jpeg_declaring(width: int, height: int) -> bytes:
    """SOI + a baseline SOF0 header for ``width``×``height`` (3 components) + EOI: no image data."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0])
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def _bmp_declaring(width: int, height: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(dib), 0, 0, 14 + len(dib)) + dib


def _webp_declaring(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little")
    vp8x += (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def _marked(h: int = 24, w: int = 40) -> np.ndarray:
    """An image whose four quadrants have distinct colours (orientation shows in every corner)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (250, 10, 10)
    img[: h // 2, w // 2 :] = (10, 250, 10)
    img[h // 2 :, : w // 2] = (10, 10, 250)
    img[h // 2 :, w // 2 :] = (240, 240, 240)
    return img


# -- image files -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["png", "webp"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_exactly(tmp_path: Path, fmt: str, orientation: int) -> None:
    stored = np.random.default_rng(orientation).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    f = tmp_path / f"o{orientation}.{fmt}"
    f.write_bytes(_encode(stored, fmt, orientation, big_endian=orientation % 2 == 0))
    assert image_header(f.read_bytes())[3] == orientation
    np.testing.assert_array_equal(decode_image(f), UPRIGHT[orientation](stored))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_phone_photo_jpeg_is_decoded_upright(tmp_path: Path, orientation: int) -> None:
    """A JPEG as phones write it: landscape sensor pixels + an EXIF orientation (6 = held upright)."""
    stored = _marked()
    f = tmp_path / "photo.jpg"
    f.write_bytes(_encode(stored, "jpeg", orientation))
    got = decode_image(f)
    want = UPRIGHT[orientation](stored)
    assert got.shape == want.shape
    for y, x in ((2, 2), (2, -3), (-3, 2), (-3, -3)):  # each corner shows its quadrant's colour (JPEG: ±25)
        assert np.abs(got[y, x].astype(int) - want[y, x].astype(int)).max() < 25, (orientation, y, x)
    if orientation == 6:
        assert got.shape == (40, 24, 3)  # portrait
        assert got[2, 2].argmax() == 2 and got[2, -3].argmax() == 0  # blue top-left, red top-right


def test_exif_orientation_matches_pillow(tmp_path: Path) -> None:
    """Cross-check against Pillow's ``exif_transpose`` (a second, independent implementation)."""
    image_mod = pytest.importorskip("PIL.Image", reason="the Pillow cross-check needs Pillow")
    ops = pytest.importorskip("PIL.ImageOps")
    stored = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    for o in range(1, 9):
        f = tmp_path / f"p{o}.png"
        f.write_bytes(_encode(stored, "png", o))
        ref = np.asarray(ops.exif_transpose(image_mod.open(f)).convert("RGB"))
        np.testing.assert_array_equal(decode_image(f), ref)


@pytest.mark.parametrize(
    "make,fmt", [(_png_declaring, "PNG"), (_jpeg_declaring, "JPEG"), (_bmp_declaring, "BMP"), (_webp_declaring, "WebP")]
)
def test_oversized_images_are_refused_from_the_header(tmp_path: Path, make, fmt: str) -> None:
    f = tmp_path / f"huge.{fmt.lower()}"
    f.write_bytes(make(30000, 30000))
    assert f.stat().st_size < 200
    assert image_header(f.read_bytes())[:3] == (fmt, 30000, 30000)
    with pytest.raises(ValueError) as e:
        decode_image(f)
    msg = str(e.value)
    assert "\n" not in msg and str(f) in msg
    assert "30000×30000 = 900.0 megapixels exceeds the limit of 50 megapixels" in msg


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_oversized_image_fails_fast_with_bounded_memory(tmp_path: Path, kind: str, peak_rss_growth_kib) -> None:
    """The 30000×30000 PNG of the issue took 3.7 GB; refused from its header it must not grow the process."""
    f = tmp_path / f"bomb.{kind}"
    f.write_bytes(_png_declaring(30000, 30000) if kind == "png" else _jpeg_declaring(30000, 30000))
    decode_image(ROOT / "edge_affect/assets/samples/astronaut.png")  # OpenCV's codecs loaded: not what is measured
    growth, err = peak_rss_growth_kib(lambda: decode_image(f))
    assert isinstance(err, ValueError) and "exceeds the limit of 50 megapixels" in str(err)
    assert growth < 20 * 1024  # < 20 MiB (decoding would need 2.7 GB)


def test_file_size_limit_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "big.png"
    f.write_bytes(_encode(_marked(), "png"))
    monkeypatch.setattr(pre, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(ValueError, match=r"big.png: file of 0 MiB exceeds the limit of 0 MiB"):
        decode_image(f)


def test_arrays_above_the_pixel_limit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pre, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match=r"frame: image of 11×10 = 0.0 megapixels exceeds the limit"):
        to_uint8_rgb(np.zeros((10, 11, 3), np.uint8), "frame")
    assert to_uint8_rgb(np.zeros((10, 10, 3), np.uint8)).shape == (10, 10, 3)


def _corrupt_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good_jpg = _encode(_marked(64, 64), "jpeg")
    good_png = _encode(_marked(64, 64), "png")
    png_bad_idat = bytearray(good_png)
    idat = good_png.index(b"IDAT")
    png_bad_idat[idat + 6 : idat + 30] = b"\xff" * 24
    cases = {
        "truncated.jpg": (good_jpg[: len(good_jpg) // 2], "truncated JPEG (no end-of-image marker)"),
        "noise.jpg": (b"\xff\xd8\xff" + bytes(range(256)) * 4, "cannot be decoded"),
        "text.png": (
            b"hello, I am not an image\n",
            "unknown image format (expected JPEG, PNG, WebP, BMP, TIFF, PNM)",
        ),
        "empty.png": (b"", "empty file"),
        "bad_idat.png": (bytes(png_bad_idat), "cannot be decoded (corrupt PNG data)"),
        "cut_header.png": (good_png[:20], "unreadable image header"),
        "zero.bmp": (_bmp_declaring(0, 10), "header declares 0×10 pixels"),
    }
    out = {}
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        out[name] = (tmp_path / name, msg)
    return out


def test_corrupt_images_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    for name, (path, expected) in _corrupt_cases(tmp_path).items():
        with pytest.raises(ValueError) as e:
            decode_image(path)
        msg = str(e.value)
        assert expected in msg, (name, msg)
        assert msg.startswith(f"image {path}") and "\n" not in msg, name
    with pytest.raises(FileNotFoundError, match="does not exist"):
        decode_image(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="is not a file"):
        decode_image(tmp_path)


def test_ordinary_images_still_decode(tmp_path: Path) -> None:
    """16-bit, gray, RGBA, BMP and the shipped sample decode as before (no orientation: as stored)."""
    import cv2

    img = _marked(20, 30)
    for ext, arr in (
        (".png", (img.astype(np.uint16) * 257)),
        (".png", img[:, :, 0]),
        (".png", np.concatenate([img, np.full((20, 30, 1), 9, np.uint8)], axis=2)),
        (".bmp", img),
        (".tif", img),
        (".ppm", img),
    ):
        bgr = (
            arr if arr.ndim == 2 else cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA if arr.shape[2] == 4 else cv2.COLOR_RGB2BGR)
        )
        f = tmp_path / f"x{ext}"
        f.write_bytes(cv2.imencode(ext, bgr)[1].tobytes())
        got = decode_image(f)
        want = np.repeat(arr[:, :, None], 3, 2) if arr.ndim == 2 else arr[:, :, :3]
        np.testing.assert_array_equal(got, (want // 257).astype(np.uint8) if want.dtype == np.uint16 else want)
    assert decode_image(ROOT / "edge_affect/assets/samples/astronaut.png").shape == (512, 512, 3)


# -- predict inputs --------------------------------------------------------------------------------
class _EchoRunner(BaseRunner):
    """Fake network: valence = mean input value of each face, so a record shows which face it came from."""

    backend = "fake"

    def __init__(self) -> None:
        super().__init__("echo")
        self.inputs = {"image": TensorSpec("image", ("N", 3, S, S), np.dtype(np.float32))}
        self.outputs = {
            k: TensorSpec(k, ("N", d), np.dtype(np.float32)) for k, d in (("va", 2), ("expr", 8), ("au", 12))
        }
        self.batches: list[int] = []

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _infer(self, feed):
        x = feed["image"]
        self.batches.append(len(x))
        n = len(x)
        m = x.reshape(n, -1).mean(1)
        return {
            "va": np.stack([m, -m], 1).astype(np.float32),
            "expr": np.zeros((n, 8), np.float32),
            "au": np.zeros((n, 12), np.float32),
        }


def _predictor(max_batch: int = 32) -> Predictor:
    return Predictor(_EchoRunner().activate(), ArtifactMeta(preprocess=Preprocess(input_size=S)), max_batch=max_batch)


def _face(value: int, h: int = 20, w: int = 18) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def _valence(value: int) -> float:
    return (value / 255 - 0.5) / 0.5  # the fake network's output for a uniform face of ``value``


BAD_INPUTS = [
    (np.zeros((3, 64, 64), np.uint8), r"shape \(3, 64, 64\).*channel-first\? transpose to H×W×C"),
    (np.zeros((2, 3, 32, 32), np.uint8), r"shape \(2, 3, 32, 32\).*channel-first\? transpose to N×H×W×C"),
    (np.zeros((5, 32, 32), np.uint8), r"shape \(5, 32, 32\).*for N gray faces pass an N×H×W×1 array or a list"),
    (np.zeros(64, np.uint8), r"shape \(64,\)"),
    (np.zeros((1, 2, 8, 8, 3), np.uint8), r"shape \(1, 2, 8, 8, 3\)"),
    (np.array(3, np.uint8), r"shape \(\)"),
    (np.uint8(3), r"got uint8; expected a numpy image"),
    ("face.jpg", r"got str 'face.jpg'; expected a numpy image"),
    (b"\x89PNG", r"got bytes"),
    (None, r"got NoneType"),
    ({"face": 1}, r"got dict"),
    (7, r"got int"),
    ([], r"no faces given \(empty list\)"),
    ((), r"no faces given \(empty tuple\)"),
    (np.zeros((0, 32, 32, 3), np.uint8), r"no faces given \(batch of shape \(0, 32, 32, 3\)\)"),
    (np.zeros((0, 10, 3), np.uint8), r"is empty"),
    (np.zeros((8, 8, 3), np.int32), r"dtype int32 has an unsupported pixel type \(expected uint8, uint16"),
    (np.zeros((8, 8, 3), np.bool_), r"dtype bool has an unsupported pixel type"),
    (np.zeros((8, 8, 3), np.float16), r"dtype float16 has an unsupported pixel type"),
    (np.zeros((8, 8, 3), object), r"dtype object has an unsupported pixel type"),
    (np.full((8, 8, 3), 200.0, np.float32), r"float pixels must be finite and lie in \[0, 1\], got \[200, 200\]"),
    (np.full((2, 8, 8, 3), np.nan, np.float64), r"float pixels must be finite"),
    (np.full((8, 8), np.inf, np.float32), r"float pixels must be finite"),
]


@pytest.mark.parametrize("value,match", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))])
def test_predict_refuses_what_it_would_have_to_guess(value, match: str) -> None:
    p = _predictor()
    with pytest.raises(ValueError, match=match) as e:
        p.predict(value)
    assert str(e.value).startswith("predict: ") and "\n" not in str(e.value)
    assert p.runner.batches == []  # nothing ran


def test_documented_layouts_give_one_record_per_face_in_order() -> None:
    p = _predictor()
    assert len(p.predict(_face(10))) == 1
    assert len(p.predict(_face(10)[:, :, 0])) == 1  # H×W gray
    assert len(p.predict(_face(10)[:, :, :1])) == 1  # H×W×1
    assert len(p.predict(np.concatenate([_face(10), _face(10)[:, :, :1]], 2))) == 1  # RGBA
    assert len(p.predict(_face(10).astype(np.float32) / 255)) == 1
    batch = np.stack([_face(v) for v in (0, 51, 102, 255)])
    recs = p.predict(batch)
    assert [round(r["valence"], 4) for r in recs] == [round(_valence(v), 4) for v in (0, 51, 102, 255)]
    assert len(p.predict(batch[..., :1])) == 4  # N×H×W×1 gray batch
    # A list: one record per item, bad items get a status in their own place.
    mixed = [_face(51), np.zeros((3, 32, 32), np.uint8), "x", None, _face(204), np.zeros((1, 5, 3), np.uint8)]
    recs = p.predict(mixed)
    assert [r["status"] for r in recs] == ["ok", "bad_input", "bad_input", "bad_input", "ok", "bad_input"]
    assert "face 1" in recs[1]["error"] and "channel-first" in recs[1]["error"]
    assert "face 2" in recs[2]["error"] and "got str" in recs[2]["error"]
    assert recs[0]["valence"] == pytest.approx(_valence(51), abs=1e-6)
    assert recs[4]["valence"] == pytest.approx(_valence(204), abs=1e-6)


def test_many_faces_go_through_in_bounded_chunks() -> None:
    p = _predictor(max_batch=4)
    values = list(range(0, 250, 10))  # 25 faces
    recs = p.predict([_face(v) for v in values])
    assert len(recs) == 25 and max(p.runner.batches) == 4
    assert [round(r["valence"], 5) for r in recs] == [round(_valence(v), 5) for v in values]
    bad_at = {3, 4, 9}  # failed crops inside and across chunks keep their places
    faces = [np.zeros((1, 1), np.uint8) if i in bad_at else _face(v) for i, v in enumerate(values)]
    recs = p.predict(faces)
    assert [i for i, r in enumerate(recs) if r["status"] == "bad_input"] == sorted(bad_at)
    assert "face 9" in recs[9]["error"]
    for i, v in enumerate(values):
        if i not in bad_at:
            assert recs[i]["valence"] == pytest.approx(_valence(v), abs=1e-6)
    timings: dict[str, float] = {}
    p.predict([_face(1)] * 9, timings=timings)
    assert set(timings) == {"preprocess", "infer", "post"}


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_max_batch_must_be_a_positive_integer(bad) -> None:
    with pytest.raises(ValueError, match="max_batch .* must be an integer >= 1"):
        _predictor(max_batch=bad)


_DTYPES = ["uint8", "uint16", "float32", "float64", "int8", "int16", "int32", "int64", "float16", "bool", "complex64"]


def _expected_count(shape: tuple[int, ...], dtype: str) -> int | None:
    """The documented rule: how many records an array of ``shape``/``dtype`` gives (None = ValueError)."""
    if dtype not in ("uint8", "uint16", "float32", "float64"):
        return None
    if 0 in shape:
        return None
    if len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4)):
        return 1
    if len(shape) == 4 and shape[3] in (1, 3, 4):
        return shape[0]
    return None


_dims = st.one_of(st.sampled_from([1, 3, 4]), st.integers(0, 9))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.lists(_dims, min_size=0, max_size=5).map(tuple),
    dtype=st.sampled_from(_DTYPES),
    fill=st.sampled_from([0.0, 0.5, 1.0, 7.0, float("nan")]),
)
def test_property_arrays_give_the_documented_count_or_a_value_error(shape, dtype, fill) -> None:
    """Any array: exactly the documented number of records (each ok or bad_input), or one-line ValueError."""
    p = _predictor(max_batch=3)
    with np.errstate(invalid="ignore"):
        arr = np.full(shape, fill).astype(dtype)
    want = _expected_count(shape, dtype)
    if want is not None and arr.dtype.kind == "f" and not (np.isfinite(arr).all() and 0 <= arr.min() <= arr.max() <= 1):
        want = None  # float outside [0, 1] or NaN
    try:
        recs = p.predict(arr)
    except ValueError as e:
        assert want is None, (shape, dtype, fill, str(e))
        assert "\n" not in str(e) and str(e).startswith("predict: ")
        return
    assert want is not None and len(recs) == want, (shape, dtype, fill)
    for r in recs:
        assert r["status"] in ("ok", "bad_input")
        small = min(shape[:2] if len(shape) in (2, 3) else shape[1:3]) < 2
        assert (r["status"] == "bad_input") == small, (shape, r)
    json.dumps(recs, allow_nan=False)


_items = st.one_of(
    st.tuples(st.integers(0, 40), st.integers(0, 40), st.sampled_from([None, 1, 2, 3, 4, 5])).map(
        lambda t: np.full(t[:2] if t[2] is None else t, 90, np.uint8)
    ),
    st.sampled_from([None, "face", 3, b"", [], np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 9, 9), np.float32)]),
)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(_items, min_size=1, max_size=12), max_batch=st.integers(1, 5))
def test_property_lists_give_exactly_one_record_per_item(items, max_batch) -> None:
    p = _predictor(max_batch=max_batch)
    recs = p.predict(items)
    assert len(recs) == len(items)
    for item, r in zip(items, recs, strict=True):
        valid = (
            isinstance(item, np.ndarray)
            and (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (1, 3, 4)))
            and min(item.shape[:2]) >= 2
            and item.dtype == np.uint8
        )
        assert r["status"] == ("ok" if valid else "bad_input"), (getattr(item, "shape", item), r["error"])
        if valid:
            assert r["valence"] == pytest.approx(_valence(90), abs=1e-6)
        else:
            assert r["error"].startswith("face ") and "\n" not in r["error"]


def test_as_face_list_and_prepare_batch_do_not_guess() -> None:
    assert len(as_face_list(np.zeros((4, 8, 8, 3), np.uint8))) == 4
    assert len(as_face_list(np.zeros((8, 8, 3), np.uint8))) == 1
    pp = Preprocess(input_size=S)
    # prepare_batch: an array is always a batch (N×H×W gray sets from .npz files), a single image goes in a list
    assert prepare_batch(np.zeros((5, 48, 48), np.uint8), pp).shape == (5, 3, S, S)
    assert prepare_batch([np.zeros((48, 48, 3), np.uint8)], pp).shape == (1, 3, S, S)
    with pytest.raises(ValueError, match=r"a single image goes in a list"):
        prepare_batch(np.zeros((48, 48, 3), np.uint8), pp)
    with pytest.raises(ValueError, match=r"expected a list of images"):
        prepare_batch("faces", pp)
    with pytest.raises(ValueError, match="no faces given"):
        prepare_batch([], pp)
    from edge_affect.runtime.preprocess import normalize

    with pytest.raises(ValueError, match="got dtype float32"):
        normalize(np.zeros((1, S, S, 3), np.float32), pp)


def test_byte_order_and_interpolation_siblings() -> None:
    """Big-endian 16-bit arrays are read by value; an unknown interpolation is a ValueError, not a KeyError."""
    img = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(">u2")
    np.testing.assert_array_equal(to_uint8_rgb(img), to_uint8_rgb(img.astype(np.uint16)))
    assert len(_predictor().predict(img)) == 1
    with pytest.raises(ValueError, match=r"preprocess interpolation 'bogus' is not one of \['area', "):
        Preprocess(input_size=S, interpolation="bogus")
    pp = Preprocess(input_size=S)
    object.__setattr__(pp, "interpolation", "bogus")  # changed after construction: resize_face checks too
    with pytest.raises(ValueError, match=r"face: interpolation 'bogus' is not one of"):
        pre.resize_face(np.zeros((40, 40, 3), np.uint8), pp)
