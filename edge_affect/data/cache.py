"""Packed uint8 image cache: decode every JPEG once, then feed training from a memory map.

Layout of a cache folder::

    images.npy    N×S×S×3 uint8 (opened with np.load(mmap_mode="r"))
    labels.npz    va float32 N×2, expr int64 N, au int8 N×12, rows int64 N (row in the annotation file),
                  and expr_soft float32 N×8 when the dataset has soft expression targets
    index.json    fingerprint, preprocess, shape, paths, skipped images -- written last

The fingerprint is the sha256 of the annotation file's content, the parsed rows, the preprocess dict,
the image count and the image folder; a cache whose ``index.json`` matches is reused, anything else is
rebuilt. Images are decoded with ``edge_affect.runtime.preprocess`` (``decode_image`` + ``resize_face``),
the one implementation the runtime uses too. Every file is written to a temp name and renamed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.artifact import atomic_write_bytes, atomic_write_text
from edge_affect.data._mp import pool_context
from edge_affect.data.abaw import Annotations
from edge_affect.fsutil import TEMP_NAME
from edge_affect.runtime.preprocess import decode_image, resize_face
from edge_affect.schema import NUM_AU, NUM_EXPR, Preprocess

log = logging.getLogger(__name__)

CACHE_VERSION = 1
IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npz"
INDEX_FILE = "index.json"

ProgressFn = Callable[[int, int], None]


@dataclass
class PackedCache:
    """An opened cache: memory-mapped images plus labels, row ``i`` of each belonging together."""

    dir: Path
    images: np.ndarray  # N×S×S×3 uint8, read-only memmap
    va: np.ndarray  # float32 N×2
    expr: np.ndarray  # int64 N
    au: np.ndarray  # int8 N×12
    rows: np.ndarray  # int64 N: row index in the Annotations the cache was built from
    paths: list[str]
    preprocess: Preprocess
    fingerprint: str
    skipped: list[dict[str, Any]] = field(default_factory=list)
    expr_soft: np.ndarray | None = None  # float32 N×8 soft expression targets, if the dataset has them

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    @classmethod
    def open(cls, directory: str | Path) -> PackedCache:
        """Open a complete cache folder (``FileNotFoundError``/``ValueError`` if it is not one)."""
        d = Path(directory)
        index_path = d / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(f"{d} is not a packed cache: {INDEX_FILE} is missing")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{index_path}: not valid JSON: {e}") from None
        if index.get("version") != CACHE_VERSION:
            raise ValueError(f"{index_path}: cache version {index.get('version')}, expected {CACHE_VERSION}")
        try:
            images = np.load(d / IMAGES_FILE, mmap_mode="r")
            with np.load(d / LABELS_FILE, allow_pickle=False) as z:
                va, expr, au, rows = (np.asarray(z[k]) for k in ("va", "expr", "au", "rows"))
                soft = np.asarray(z["expr_soft"], dtype=np.float32) if "expr_soft" in z.files else None
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{d}: damaged packed cache ({e}); delete it to rebuild") from None
        n, s = int(index["n"]), int(index["preprocess"]["input_size"])
        if images.shape != (n, s, s, 3) or images.dtype != np.uint8:
            raise ValueError(
                f"{d / IMAGES_FILE}: shape {images.shape} {images.dtype}, expected ({n}, {s}, {s}, 3) uint8"
            )
        bad_soft = soft is not None and soft.shape != (n, NUM_EXPR)
        if va.shape != (n, 2) or expr.shape != (n,) or au.shape != (n, NUM_AU) or rows.shape != (n,) or bad_soft:
            raise ValueError(f"{d / LABELS_FILE}: label shapes do not match {n} images")
        return cls(
            dir=d,
            images=images,
            va=va.astype(np.float32, copy=False),
            expr=expr.astype(np.int64, copy=False),
            au=au.astype(np.int8, copy=False),
            rows=rows.astype(np.int64, copy=False),
            paths=list(index["paths"]),
            preprocess=Preprocess.from_dict(index["preprocess"]),
            fingerprint=str(index["fingerprint"]),
            skipped=list(index.get("skipped", [])),
            expr_soft=soft,
        )


def fingerprint(ann: Annotations, images_root: str | Path, pp: Preprocess) -> str:
    """sha256 identifying (annotation file content, parsed rows, preprocess, image count, image folder)."""
    h = hashlib.sha256()
    h.update(f"edge-affect packed cache v{CACHE_VERSION}\n".encode())
    src = Path(ann.source)
    if src.is_file():
        with open(src, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    h.update(json.dumps(pp.to_dict(), sort_keys=True).encode())
    h.update(f"\nimages={len(ann)}\nroot={Path(images_root).resolve()}\n".encode())
    h.update("\n".join(ann.paths).encode())
    for arr in (ann.va, ann.expr, ann.au):
        h.update(np.ascontiguousarray(arr).tobytes())
    if ann.expr_soft is not None:
        h.update(b"expr_soft" + np.ascontiguousarray(ann.expr_soft, dtype=np.float32).tobytes())
    return h.hexdigest()


def _decode_chunk(task: tuple[Any, ...]) -> list[tuple[int, str]]:
    """Worker: decode rows ``start..start+len(paths)`` into the memmap; return (row, error) failures."""
    import cv2

    cv2.setNumThreads(1)
    mm_path, images_root, pp_dict, start, paths, skip_bad = task
    pp = Preprocess.from_dict(pp_dict)
    out = np.load(mm_path, mmap_mode="r+")
    errors: list[tuple[int, str]] = []
    root = Path(images_root)
    for k, rel in enumerate(paths):
        try:
            out[start + k] = resize_face(decode_image(root / rel), pp, where=str(root / rel))
        except (ValueError, FileNotFoundError) as e:
            # Never raise in a worker: an exception unwinding a Pool mid-iteration can deadlock its
            # terminate(); the parent raises (or skips) once every chunk is back.
            errors.append((start + k, str(e)))
    out.flush()
    del out
    return errors


def _tqdm_progress(total: int) -> tuple[ProgressFn, Callable[[], None]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="caching faces", unit="img", leave=False)
    state = {"done": 0}

    def update(done: int, _total: int) -> None:
        bar.update(done - state["done"])
        state["done"] = done

    return update, bar.close


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def build_cache(
    ann: Annotations,
    images_root: str | Path,
    pp: Preprocess,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    skip_bad: bool = False,
    force: bool = False,
    progress: bool | ProgressFn = False,
    chunk: int = 256,
) -> PackedCache:
    """Decode and resize every image of ``ann`` once into ``out_dir``; reuse a valid cache.

    ``workers``: decode processes (None = all cores for large sets, 0 = this process). A corrupt or
    missing image is a ``ValueError`` naming the file, or with ``skip_bad`` is left out and recorded in
    ``PackedCache.skipped``. ``progress``: True for a tqdm bar, or a ``(done, total)`` callback.
    """
    out = Path(out_dir)
    root = Path(images_root)
    if len(ann) == 0:
        raise ValueError(f"{ann.source}: no rows to cache, expected at least one labelled image")
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    fp = fingerprint(ann, root, pp)
    _check_cache_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    with _build_lock(out):  # DDP ranks calling this together: one builds, the others then reuse
        return _build_locked(ann, root, pp, out, fp, workers, skip_bad, force, progress, chunk)


#: Temp files of a build (``.images.npy.<pid>.tmp.npy``, ``….compact.tmp.npy``), named after their process.
_TEMP_IMAGES = re.compile(rf"^\.{re.escape(IMAGES_FILE)}\.(?P<pid>\d+)\.(compact\.)?tmp\.npy$")
#: ``artifact.atomic_write_*`` temp files of the small cache files (``.index.json.<random>.tmp``).
_SMALL_FILES = frozenset({LABELS_FILE, INDEX_FILE})


def _check_cache_dir(out: Path) -> None:
    """Refuse a folder whose ``images.npy``/``labels.npz`` no cache build wrote (it would replace them)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"cache folder {out}: is a file, expected a folder")
    ours = (out / INDEX_FILE).exists() or (out / ".lock").exists()
    theirs = [n for n in (IMAGES_FILE, LABELS_FILE) if (out / n).exists()]
    if theirs and not ours:
        raise ValueError(
            f"cache folder {out}: holds {theirs[0]} that no edge-affect cache build wrote, "
            "expected a new folder or a packed cache (pass another --cache-dir)"
        )


def _clean_leftovers(out: Path) -> None:
    """Remove what killed builds left in ``out`` (called under the build lock): full-size image temp files
    of processes that are gone, and the small atomic-write temp files (only a lock holder writes those)."""
    from edge_affect.fsutil import clean_stale

    clean_stale(out, _TEMP_IMAGES)
    for p in out.iterdir():
        m = TEMP_NAME.match(p.name)
        if m and m.group("name") in _SMALL_FILES:
            log.warning("removing %s, left behind by an interrupted cache build", p)
            p.unlink(missing_ok=True)


@contextlib.contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """Exclusive lock on ``out/.lock`` (POSIX ``flock``; no lock where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(out / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_locked(
    ann: Annotations,
    root: Path,
    pp: Preprocess,
    out: Path,
    fp: str,
    workers: int | None,
    skip_bad: bool,
    force: bool,
    progress: bool | ProgressFn,
    chunk: int,
) -> PackedCache:
    _clean_leftovers(out)
    if not force and (out / INDEX_FILE).is_file():
        try:
            cache = PackedCache.open(out)
            if cache.fingerprint == fp:
                log.info("reusing packed cache %s (%d images)", out, len(cache))
                return cache
            log.info("packed cache %s is stale (fingerprint changed): rebuilding", out)
        except (ValueError, FileNotFoundError) as e:
            log.warning("packed cache %s unusable (%s): rebuilding", out, e)
    (out / INDEX_FILE).unlink(missing_ok=True)  # the cache is invalid until the new index lands

    n, s = len(ann), pp.input_size
    t0 = time.perf_counter()
    tmp = out / f".{IMAGES_FILE}.{os.getpid()}.tmp.npy"
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, s, s, 3))
    del mm
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if n >= 2000 else 0
    tasks = [(str(tmp), str(root), pp.to_dict(), i, ann.paths[i : i + chunk], skip_bad) for i in range(0, n, chunk)]
    report: ProgressFn | None
    close: Callable[[], None] = lambda: None  # noqa: E731
    if progress is True:
        report, close = _tqdm_progress(n)
    else:
        report = progress or None
    errors: list[tuple[int, str]] = []
    keep = np.ones(n, dtype=bool)
    done = 0
    try:
        if workers > 0:
            pool = pool_context().Pool(workers)
            try:
                for t, errs in zip(tasks, pool.imap(_decode_chunk, tasks), strict=True):
                    errors += errs
                    done += len(t[4])
                    if report:
                        report(done, n)
                pool.close()
            except BaseException:
                pool.terminate()
                raise
            finally:
                pool.join()
        else:
            for t in tasks:
                errors += _decode_chunk(t)
                done += len(t[4])
                if report:
                    report(done, n)
        if errors and not skip_bad:
            more = f" (and {len(errors) - 1} more bad images)" if len(errors) > 1 else ""
            raise ValueError(errors[0][1] + more)
        for row, _ in errors:
            keep[row] = False
        if not keep.any():
            raise ValueError(f"{ann.source}: none of the {n} images could be read (first: {errors[0][1]})")
        if not keep.all():
            tmp = _compact(tmp, keep, out)
        os.replace(tmp, out / IMAGES_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        close()

    rows = np.flatnonzero(keep).astype(np.int64)
    labels = {"va": ann.va[rows], "expr": ann.expr[rows], "au": ann.au[rows], "rows": rows}
    if ann.expr_soft is not None:
        labels["expr_soft"] = np.asarray(ann.expr_soft, dtype=np.float32)[rows]
    _save_npz(out / LABELS_FILE, **labels)
    lines = np.asarray(ann.lines)
    skipped = [{"row": int(r), "line": int(lines[r]), "path": ann.paths[r], "error": e} for r, e in errors]
    index = {
        "version": CACHE_VERSION,
        "fingerprint": fp,
        "n": int(len(rows)),
        "preprocess": pp.to_dict(),
        "source": str(ann.source),
        "images_root": str(root.resolve()),
        "paths": [ann.paths[r] for r in rows],
        "skipped": skipped,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_text(out / INDEX_FILE, json.dumps(index))
    if skipped:
        log.warning("packed cache %s: skipped %d unreadable images (first: %s)", out, len(skipped), skipped[0]["error"])
    log.info("built packed cache %s: %d images %dx%d in %.1f s", out, len(rows), s, s, index["seconds"])
    return PackedCache.open(out)


def _compact(tmp: Path, keep: np.ndarray, out: Path) -> Path:
    """Copy the rows marked ``keep`` to a new temp memmap (used when bad images were skipped)."""
    src = np.load(tmp, mmap_mode="r")
    dst_path = out / f".{IMAGES_FILE}.{os.getpid()}.compact.tmp.npy"
    dst = np.lib.format.open_memmap(dst_path, mode="w+", dtype=np.uint8, shape=(int(keep.sum()), *src.shape[1:]))
    idx = np.flatnonzero(keep)
    for i in range(0, len(idx), 1024):
        dst[i : i + 1024] = src[idx[i : i + 1024]]
    dst.flush()
    del dst, src
    tmp.unlink(missing_ok=True)
    return dst_path
