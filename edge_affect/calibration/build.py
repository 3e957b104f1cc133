"""Build a calibration set: sample face crops from an image folder, a video, an ABAW root or an ``.npz``.

Face-crop sources (``.npz`` like FER2013, ABAW ``cropped_aligned`` folders, folders of crops) are stored as
they are (or resized with ``--size``). Raw frames (videos, folders of full frames) need a face cropper:
pass ``face_cropper`` (a callable RGB frame → largest face crop or None); the runtime's detector plugs in
here. Without one, whole frames are stored with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.artifact import atomic_write_text, sha256_file
from edge_affect.calibration.manifest import FORMAT, IMAGE_SUFFIXES, MANIFEST, STAGE_FACE_CROP
from edge_affect.fsutil import is_within, make_temp_dir, replace_dir, same_path
from edge_affect.runtime.preprocess import decode_image, resize_face, to_uint8_rgb
from edge_affect.schema import Preprocess

log = logging.getLogger(__name__)

#: RGB uint8 frame → face crop (uint8 H×W×3) or None when no face is found.
FaceCropper = Callable[[np.ndarray], "np.ndarray | None"]
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclass
class Candidate:
    """One frame that may be sampled: how to read it, its label (or -1) and where it came from."""

    source_id: str
    label: int
    read: Callable[[], np.ndarray]


def _npz_candidates(path: Path) -> tuple[list[Candidate], dict[str, Any]]:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot be read as .npz ({e})") from None
    if "images" not in data.files:
        raise ValueError(f"{path}: has no 'images' array (found {data.files})")
    images = data["images"]
    if images.ndim not in (3, 4) or images.dtype != np.uint8 or len(images) == 0:
        raise ValueError(f"{path}: 'images' is {images.dtype} {images.shape}, expected uint8 N×H×W[×3]")
    labels = data["labels"].astype(np.int64) if "labels" in data.files else np.full(len(images), -1)
    ids = [str(i) for i in data["ids"]] if "ids" in data.files else [f"{path.stem}[{i}]" for i in range(len(images))]
    cands = [Candidate(ids[i], int(labels[i]), lambda i=i: images[i]) for i in range(len(images))]
    return cands, {"kind": "npz", "faces": "crops", "sha256": sha256_file(path)}


def _folder_candidates(path: Path) -> tuple[list[Candidate], dict[str, Any]]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    cands = [Candidate(str(p.relative_to(path)), -1, lambda p=p: decode_image(p)) for p in files]
    return cands, {"kind": "image_folder", "faces": "crops"}


def _abaw_candidates(path: Path, split: str) -> tuple[list[Candidate], dict[str, Any]]:
    from edge_affect.data.abaw import load_split

    ann = load_split(path, split)
    root = Path(ann.images_root) if ann.images_root is not None else path
    cands = [
        Candidate(rel, int(ann.expr[i]), lambda rel=rel: decode_image(root / rel)) for i, rel in enumerate(ann.paths)
    ]
    return cands, {"kind": "abaw", "faces": "crops", "split": split, "annotations": str(ann.source)}


def _video_candidates(path: Path, n: int) -> tuple[list[Candidate], dict[str, Any]]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"video {path}: cannot be opened by OpenCV")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    if total <= 0:
        raise ValueError(f"video {path}: reports no frames")
    picks = np.unique(np.linspace(0, total - 1, num=min(n, total)).round().astype(int))

    def read(k: int) -> np.ndarray:
        c = cv2.VideoCapture(str(path))
        try:
            c.set(cv2.CAP_PROP_POS_FRAMES, int(k))
            ok, frame = c.read()
        finally:
            c.release()
        if not ok or frame is None:
            raise ValueError(f"video {path}: frame {k} cannot be decoded")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    cands = [Candidate(f"{path.name}#{k}", -1, lambda k=k: read(k)) for k in picks]
    return cands, {"kind": "video", "faces": "frames", "frame_count": total, "sampling": "evenly spaced"}


def yunet_face_cropper(size: int = 112) -> FaceCropper:
    """A face cropper from the runtime's YuNet detector: the best face, aligned to ``size``×``size``."""
    from edge_affect.runtime.faces import YuNetDetector, align_face

    detector = YuNetDetector()

    def crop(rgb: np.ndarray) -> np.ndarray | None:
        dets = detector.detect(rgb)
        return align_face(rgb, dets[0].landmarks, size) if dets else None

    crop.__name__ = f"yunet_align_{size}"
    return crop


def source_candidates(src: str | Path, n: int, split: str = "train") -> tuple[list[Candidate], dict[str, Any]]:
    """List the frames ``src`` offers (npz, video, ABAW root or image folder) and describe the source."""
    p = Path(src)
    if not p.exists():
        raise FileNotFoundError(f"calibration source {p} does not exist")
    if p.is_file() and p.suffix.lower() == ".npz":
        cands, info = _npz_candidates(p)
    elif p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
        cands, info = _video_candidates(p, n)
    elif p.is_dir() and any((p / f).is_file() for f in ("training_set_annotations.txt", "train_set.txt")):
        cands, info = _abaw_candidates(p, split)
    elif p.is_dir():
        cands, info = _folder_candidates(p)
    else:
        raise ValueError(
            f"calibration source {p}: expected an image folder, a video ({', '.join(VIDEO_SUFFIXES)}), "
            "an ABAW dataset root or an .npz with 'images'"
        )
    info["path"] = str(p)
    info["available"] = len(cands)
    return cands, info


def sample_indices(labels: np.ndarray, n: int, seed: int, stratify: bool = True) -> np.ndarray:
    """Pick ``min(n, len(labels))`` indices, seeded; with labels, as equal a share per class as exists."""
    rng = np.random.default_rng(seed)
    total = len(labels)
    n = min(n, total)
    classes = np.unique(labels[labels >= 0])
    if not stratify or len(classes) < 2:
        return np.sort(rng.choice(total, size=n, replace=False))
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    take = dict.fromkeys(classes, 0)
    left = n
    while left > 0:  # round-robin so rare classes give their share back when exhausted
        open_classes = [c for c in classes if take[c] < len(pools[c])]
        if not open_classes:
            break
        share = max(1, left // len(open_classes))
        for c in open_classes:
            k = min(share, len(pools[c]) - take[c], left)
            take[c] += k
            left -= k
            if left == 0:
                break
    chosen = np.concatenate([pools[c][: take[c]] for c in classes])
    if left > 0:  # unlabelled frames fill the rest
        rest = rng.permutation(np.flatnonzero(labels < 0))[:left]
        chosen = np.concatenate([chosen, rest])
    return np.sort(chosen)


def _is_gray(img: np.ndarray) -> bool:
    return img.ndim == 2 or (
        img.shape[2] >= 3 and (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    )


def _is_calibration_set(folder: Path) -> bool:
    """True when ``folder`` holds a manifest of this format (what ``--force`` may replace)."""
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and m.get("format") == FORMAT


def _check_output(src: Path, out: Path, overwrite: bool) -> None:
    """``out`` must be new or empty; with ``overwrite`` it may also be a calibration set, never anything else,
    and never the source or a folder holding it."""
    if src.exists() and (is_within(src, out) or same_path(src, out)):
        raise ValueError(f"--out {out}: is or holds the calibration source {src}, expected a new folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out}: is a file, expected a folder for the calibration set")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise ValueError(
            f"--out {out}: exists and is not empty, expected a new folder (or --force to replace a calibration set)"
        )
    if not _is_calibration_set(out):
        raise ValueError(
            f"--out {out}: is not a calibration set (no {MANIFEST} of format {FORMAT}), "
            "expected a calibration set or a new folder (--force replaces only calibration sets)"
        )


def build_calibration(
    src: str | Path,
    out: str | Path,
    n: int = 512,
    *,
    seed: int = 0,
    size: int | None = None,
    split: str = "train",
    stratify: bool = True,
    face_cropper: FaceCropper | None = None,
    provenance: str = "",
    command: str = "",
    name: str | None = None,
    overwrite: bool = False,
    frames: bool | None = None,
) -> Path:
    """Sample ``n`` frames from ``src`` into ``out`` (PNG + ``manifest.json``), atomically; return ``out``.

    ``size`` resizes crops to size×size with the shared preprocessing; by default crops keep their size.
    Grayscale sources are stored as one-channel PNG. Frames are picked with ``seed``, stratified by
    expression label when the source has labels. ``frames``: treat the source's images as full frames that
    need ``face_cropper`` (default: videos are frames, everything else is crops).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}, expected at least 1 frame")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= 4096):
        raise ValueError(f"size={size!r}, expected a crop side in [2, 4096] pixels")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed!r}, expected an integer in [0, {2**32 - 1}]")
    out = Path(out)
    _check_output(Path(src), out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):
        raise PermissionError(f"calibration output folder {out.parent} is not writable")
    t0 = time.perf_counter()
    cands, info = source_candidates(src, n, split)
    if frames is not None:
        info["faces"] = "frames" if frames else "crops"
    labels = np.asarray([c.label for c in cands], dtype=np.int64)
    idx = sample_indices(labels, n, seed, stratify)
    if len(idx) < n:
        log.warning("source %s offers %d frames, fewer than the %d asked for", src, len(idx), n)
    if info["faces"] == "frames" and face_cropper is None:
        log.warning("source %s holds full frames and no face cropper was given: storing whole frames", src)
    import cv2

    files: list[dict[str, Any]] = []
    shapes: set[tuple[int, int]] = set()
    gray_all = True
    tmp = make_temp_dir(out)
    try:
        for j, i in enumerate(idx):
            c = cands[int(i)]
            img = to_uint8_rgb(np.asarray(c.read()), where=c.source_id)
            if face_cropper is not None and info["faces"] == "frames":
                crop = face_cropper(img)
                if crop is None:
                    log.info("no face in %s, skipped", c.source_id)
                    continue
                img = to_uint8_rgb(crop, where=f"face in {c.source_id}")
            if size is not None:
                img = resize_face(img, Preprocess(input_size=size), where=c.source_id)
            gray = _is_gray(img)
            gray_all &= gray
            fname = f"{j:05d}.png"
            to_write = img[:, :, 0] if gray else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".png", to_write, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            if not ok:
                raise RuntimeError(f"cannot encode frame {c.source_id} as PNG")
            (tmp / fname).write_bytes(buf.tobytes())
            shapes.add(img.shape[:2])
            entry: dict[str, Any] = {"name": fname, "sha256": sha256_file(tmp / fname), "source_id": c.source_id}
            if c.label >= 0:
                entry["label"] = c.label
            files.append(entry)
        if not files:
            raise ValueError(f"calibration source {src}: no frames could be taken")
        if len(shapes) != 1:
            raise ValueError(f"calibration source {src}: frames have different sizes {sorted(shapes)}; pass --size")
        (h, w) = shapes.pop()
        manifest = {
            "format": FORMAT,
            "name": name or out.name,
            "count": len(files),
            "source": info,
            "preprocess": {
                "stage": STAGE_FACE_CROP,
                "frame_size": [int(h), int(w)],
                "color": "gray" if gray_all else "rgb",
                "resized_to": size,
                "face_cropper": getattr(face_cropper, "__name__", type(face_cropper).__name__)
                if face_cropper
                else None,
                "implementation": "edge_affect.runtime.preprocess",
                "note": "stored as uint8 face crops; load_calibration applies the model's Preprocess",
            },
            "sampling": {"n": n, "seed": seed, "stratified": bool(stratify and (labels >= 0).any()), "split": split},
            "command": command,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "provenance": provenance,
            "files": files,
        }
        if labels.max(initial=-1) >= 0:
            got = np.asarray([f.get("label", -1) for f in files])
            manifest["label_counts"] = {str(int(k)): int((got == k).sum()) for k in np.unique(got)}
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        _check_output(Path(src), out, overwrite)  # still what was checked (nothing new appeared meanwhile)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("calibration set %s: %d frames (%d×%d) in %.1fs", out, len(files), w, h, time.perf_counter() - t0)
    return out
