"""Reader for ABAW multi-task (MTL) annotation files (s-Aff-Wild2, ABAW3 and ABAW4).

Format (see docs/DESIGN.md): one header line, then one row per frame::

    image,valence,arousal,expression,AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26
    video/00001.jpg,0.25,-0.1,4,0,0,0,1,0,0,1,0,0,0,1,0

Missing labels: VA = -5, expression = -1, AU = -1 (a sample's AUs are all masked if any AU is -1).
ABAW3's MTL files (``train_set.txt`` / ``validation_set.txt``) use the same per-frame columns. The
submission-style header ``image,valence,arousal,expression,aus`` (12 space-separated 0/1 values in the
last field) is accepted too. Every value is validated: a bad row is a ``ValueError`` naming file and
line, or, with ``skip_bad=True``, skipped and recorded in ``Annotations.bad_rows`` -- never a silent
wrong label.

Extension (soft expression targets, e.g. FER+ crowd votes): beside an annotation file ``X.txt`` an
optional sidecar ``X.expr_soft.txt`` with header ``image,Neutral,Anger,...,Other`` holds one row per
image with a probability for each of the 8 expressions (non-negative, summing to 1 within 1e-3). Its
images must be exactly the annotation file's images, and each row's most likely class must be the file's hard ``expression`` label (ties allowed), so readers that ignore the sidecar see
consistent labels. It is read into ``Annotations.expr_soft``; without it that is None and nothing changes.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_affect.schema import AUS, EXPRESSIONS, MISSING_AU, MISSING_EXPR, MISSING_VA, NUM_AU

log = logging.getLogger(__name__)

#: Column names of the per-frame MTL header (ABAW3 and ABAW4).
PER_FRAME_COLUMNS: tuple[str, ...] = ("image", "valence", "arousal", "expression", *AUS)
#: Column names of the submission-style header (AUs packed in one field).
SUBMISSION_COLUMNS: tuple[str, ...] = ("image", "valence", "arousal", "expression", "aus")

#: Annotation file names inside a dataset root, per split; the first existing one is used.
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("training_set_annotations.txt", "train_set.txt"),
    "val": ("validation_set_annotations.txt", "validation_set.txt"),
}
#: Suffix of the optional soft-expression sidecar next to an annotation file (``X.txt`` → ``X.expr_soft.txt``).
SOFT_EXPR_SUFFIX = ".expr_soft.txt"
SOFT_EXPR_TOL = 1e-3
#: Default image folder inside a dataset root.
IMAGES_DIR = "cropped_aligned"

VARIANT_PER_FRAME = "per_frame"
VARIANT_SUBMISSION = "submission"


@dataclass
class Annotations:
    """Parsed labels of one annotation file; row ``i`` describes image ``paths[i]``."""

    paths: list[str]
    va: np.ndarray  # float32 N×2, MISSING_VA (-5) where missing
    expr: np.ndarray  # int64 N, MISSING_EXPR (-1) where missing
    au: np.ndarray  # int8 N×12, a whole row MISSING_AU (-1) where missing
    source: Path
    bad_rows: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason) skipped
    lines: np.ndarray | None = None  # int64 N: the file line each row came from (1 = header)
    variant: str = VARIANT_PER_FRAME
    images_root: Path | None = None
    expr_soft: np.ndarray | None = None  # float32 N×8 expression distributions (soft-label sidecar), or None

    def __post_init__(self) -> None:
        n = len(self.paths)
        if self.expr_soft is not None and self.expr_soft.shape != (n, len(EXPRESSIONS)):
            raise ValueError(f"{self.source}: soft expression targets {self.expr_soft.shape}, expected ({n}, 8)")
        if self.va.shape != (n, 2) or self.expr.shape != (n,) or self.au.shape != (n, NUM_AU):
            raise ValueError(
                f"{self.source}: inconsistent label arrays for {n} paths: va {self.va.shape}, "
                f"expr {self.expr.shape}, au {self.au.shape}"
            )
        if self.lines is None:
            self.lines = np.arange(2, n + 2, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def va_mask(self) -> np.ndarray:
        """True where valence/arousal are labelled."""
        return self.va[:, 0] != MISSING_VA

    @property
    def expr_mask(self) -> np.ndarray:
        """True where the expression is labelled."""
        return self.expr != MISSING_EXPR

    @property
    def au_mask(self) -> np.ndarray:
        """True where all 12 AUs are labelled."""
        return self.au[:, 0] != MISSING_AU

    @property
    def n_va(self) -> int:
        return int(self.va_mask.sum())

    @property
    def n_expr(self) -> int:
        return int(self.expr_mask.sum())

    @property
    def n_au(self) -> int:
        return int(self.au_mask.sum())

    def counts(self) -> dict[str, int]:
        """Rows, labelled rows per task and skipped rows."""
        return {
            "rows": len(self),
            "va": self.n_va,
            "expr": self.n_expr,
            "au": self.n_au,
            "bad_rows": len(self.bad_rows),
        }

    def expr_counts(self) -> dict[str, int]:
        """Labelled frames per expression class, in ``schema.EXPRESSIONS`` order."""
        hist = np.bincount(self.expr[self.expr_mask], minlength=len(EXPRESSIONS))
        return {name: int(c) for name, c in zip(EXPRESSIONS, hist, strict=True)}

    def au_positive_rates(self) -> dict[str, float]:
        """Share of AU-labelled frames where each AU is active (NaN when none is labelled)."""
        lab = self.au[self.au_mask]
        rates = lab.mean(axis=0) if len(lab) else np.full(NUM_AU, np.nan)
        return {name: float(r) for name, r in zip(AUS, rates, strict=True)}

    def videos(self) -> list[str]:
        """Sorted distinct video folders (the parent folder of each image path)."""
        return sorted({p.rsplit("/", 1)[0] if "/" in p else "" for p in self.paths})

    def subset(self, index: np.ndarray | list[int]) -> Annotations:
        """A new ``Annotations`` holding only rows ``index`` (same source)."""
        idx = np.asarray(index, dtype=np.int64)
        return Annotations(
            paths=[self.paths[i] for i in idx],
            va=self.va[idx],
            expr=self.expr[idx],
            au=self.au[idx],
            source=self.source,
            bad_rows=list(self.bad_rows),
            lines=np.asarray(self.lines)[idx],
            variant=self.variant,
            images_root=self.images_root,
            expr_soft=None if self.expr_soft is None else self.expr_soft[idx],
        )


_AU_VALUES = frozenset((MISSING_AU, 0, 1))


class _BadRow(Exception):
    """One row failed validation; carries '<what>, expected <what>'."""


def _detect_variant(header: str, source: Path) -> str:
    cols = tuple(c.strip() for c in header.strip().lstrip("\ufeff").split(","))
    low = tuple(c.lower() for c in cols)
    if low == tuple(c.lower() for c in PER_FRAME_COLUMNS):
        return VARIANT_PER_FRAME
    if low == SUBMISSION_COLUMNS:
        return VARIANT_SUBMISSION
    raise ValueError(
        f"{source}:1: header {header.strip()[:200]!r}, expected {','.join(PER_FRAME_COLUMNS)!r} "
        f"or {','.join(SUBMISSION_COLUMNS)!r}"
    )


def _number(text: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise _BadRow(f"{name} {text.strip()!r} is not a number, expected a numeric value") from None
    if not math.isfinite(v):
        raise _BadRow(f"{name} {text.strip()!r} is not finite, expected a finite number")
    return v


def _integer(text: str, name: str) -> int:
    v = _number(text, name)
    if v != int(v):
        raise _BadRow(f"{name} {text.strip()!r} is not an integer, expected an integer value")
    return int(v)


def _parse_row(cols: list[str], variant: str) -> tuple[str, float, float, int, list[int]]:
    """Validate one split row; raises ``_BadRow`` with the reason."""
    ncols = len(PER_FRAME_COLUMNS) if variant == VARIANT_PER_FRAME else len(SUBMISSION_COLUMNS)
    if len(cols) != ncols:
        raise _BadRow(f"{len(cols)} columns, expected {ncols}")
    path = cols[0].strip()
    if not path:
        raise _BadRow("empty image path, expected a path like 'video/00001.jpg'")
    if path[0] in "/\\" or ".." in path.replace("\\", "/").split("/"):
        raise _BadRow(f"image path {path!r} leaves the image folder, expected a relative path like 'video/00001.jpg'")
    v = _number(cols[1], "valence")
    a = _number(cols[2], "arousal")
    v_missing, a_missing = v == MISSING_VA, a == MISSING_VA
    if v_missing != a_missing:
        raise _BadRow(f"valence {v:g} and arousal {a:g}, expected both {MISSING_VA:g} (missing) or both in [-1, 1]")
    if not v_missing:
        for name, x in (("valence", v), ("arousal", a)):
            if not -1.0 <= x <= 1.0:
                raise _BadRow(f"{name} {x:g} out of range, expected a value in [-1, 1] or {MISSING_VA:g} (missing)")
    try:
        e = int(cols[3])  # fast path; "4.0", "nan" etc. go through the checked parser below
    except ValueError:
        e = _integer(cols[3], "expression")
    if not MISSING_EXPR <= e < len(EXPRESSIONS):
        raise _BadRow(f"expression {e} out of range, expected {MISSING_EXPR} (missing) or 0..{len(EXPRESSIONS) - 1}")
    au_fields = cols[4:] if variant == VARIANT_PER_FRAME else cols[4].split()
    if len(au_fields) != NUM_AU:
        raise _BadRow(f"{len(au_fields)} AU values, expected {NUM_AU}")
    try:
        aus = [int(x) for x in au_fields]  # fast path for well-formed rows
        if _AU_VALUES.issuperset(aus):
            return path, v, a, e, aus
    except ValueError:
        pass
    aus = []
    for name, text in zip(AUS, au_fields, strict=True):
        try:
            x = _integer(text, name)
        except _BadRow:
            raise _BadRow(f"{name} {text.strip()!r}, expected -1, 0 or 1") from None
        if x not in (MISSING_AU, 0, 1):
            raise _BadRow(f"{name} {x}, expected -1 (missing), 0 or 1")
        aus.append(x)
    return path, v, a, e, aus


class _ImageIndex:
    """Answers 'does images_root/rel exist' with one directory listing per video folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs: dict[str, frozenset[str]] = {}

    def exists(self, rel: str) -> bool:
        folder, _, name = rel.replace("\\", "/").rpartition("/")
        files = self._dirs.get(folder)
        if files is None:
            try:
                with os.scandir(self.root / folder) as it:
                    files = frozenset(e.name for e in it if e.is_file())
            except (FileNotFoundError, NotADirectoryError):
                files = frozenset()
            self._dirs[folder] = files
        return name in files


def read_annotations(
    path: str | Path,
    *,
    images_root: str | Path | None = None,
    check_images: bool = False,
    skip_bad: bool = False,
) -> Annotations:
    """Parse one ABAW MTL annotation file.

    ``check_images=True`` also requires ``images_root / image`` to exist. Bad rows raise
    ``ValueError("<file>:<line>: <what>, expected <what>")`` unless ``skip_bad``, which skips and
    records them. A wrong header always raises (nothing in the file can be trusted).
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"annotation file {source} does not exist")
    root = Path(images_root) if images_root is not None else None
    if check_images:
        if root is None:
            raise ValueError("check_images=True needs images_root, expected the image folder")
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist (images are looked up relative to it)")
    index = _ImageIndex(root) if check_images and root is not None else None

    _check_utf8(source)
    with open(source, encoding="utf-8", newline=None) as f:
        header = f.readline()
        if not header.strip():
            raise ValueError(f"{source}:1: empty file or empty header, expected {','.join(PER_FRAME_COLUMNS)!r}")
        variant = _detect_variant(header, source)
        paths: list[str] = []
        va: list[tuple[float, float]] = []
        expr: list[int] = []
        au: list[list[int]] = []
        lines: list[int] = []
        bad: list[tuple[int, str]] = []
        seen: dict[str, int] = {}
        for lineno, line in enumerate(f, start=2):
            if not line.strip():
                continue
            try:
                p, v, a, e, aus = _parse_row(line.rstrip("\r\n").split(","), variant)
                first = seen.get(p)
                if first is not None:
                    raise _BadRow(f"image {p!r} repeats line {first}, expected one row per image")
                if index is not None and not index.exists(p):
                    raise _BadRow(f"image {p!r} not found in {root}, expected an existing image file")
            except _BadRow as err:
                if not skip_bad:
                    raise ValueError(f"{source}:{lineno}: {err}") from None
                bad.append((lineno, str(err)))
                continue
            seen[p] = lineno
            if MISSING_AU in aus:
                aus = [MISSING_AU] * NUM_AU
            paths.append(p)
            va.append((v, a))
            expr.append(e)
            au.append(aus)
            lines.append(lineno)

    n = len(paths)
    ann = Annotations(
        paths=paths,
        va=np.asarray(va, dtype=np.float32).reshape(n, 2),
        expr=np.asarray(expr, dtype=np.int64).reshape(n),
        au=np.asarray(au, dtype=np.int8).reshape(n, NUM_AU),
        source=source,
        bad_rows=bad,
        lines=np.asarray(lines, dtype=np.int64),
        variant=variant,
        images_root=root,
    )
    if bad:
        log.warning("%s: skipped %d bad rows (first: line %d: %s)", source, len(bad), bad[0][0], bad[0][1])
    log.info("%s: %d rows (VA %d, EXPR %d, AU %d labelled)", source, n, ann.n_va, ann.n_expr, ann.n_au)
    return ann


def format_annotations(paths: list[str], va: np.ndarray, expr: np.ndarray, au: np.ndarray) -> str:
    """ABAW per-frame MTL file text for the given labels (missing codes as in ``schema``)."""
    va = np.asarray(va, dtype=np.float32)
    expr = np.asarray(expr, dtype=np.int64)
    au = np.asarray(au, dtype=np.int64)
    n = len(paths)
    if va.shape != (n, 2) or expr.shape != (n,) or au.shape != (n, NUM_AU):
        raise ValueError(
            f"label shapes va {va.shape}, expr {expr.shape}, au {au.shape}, expected ({n}, 2), ({n},), ({n}, {NUM_AU})"
        )
    out = [",".join(PER_FRAME_COLUMNS)]
    for i, p in enumerate(paths):
        v, a = (f"{x:g}" if x == MISSING_VA else f"{x:.6f}" for x in va[i])
        out.append(f"{p},{v},{a},{int(expr[i])}," + ",".join(str(int(x)) for x in au[i]))
    return "\n".join(out) + "\n"


def write_annotations(path: str | Path, paths: list[str], va: np.ndarray, expr: np.ndarray, au: np.ndarray) -> Path:
    """Write an ABAW per-frame MTL annotation file atomically."""
    from edge_affect.artifact import atomic_write_text

    p = Path(path)
    atomic_write_text(p, format_annotations(paths, va, expr, au))
    return p


def _check_utf8(path: Path) -> None:
    """Refuse a file that is not UTF-8 text with one line naming it (Python's own error names no file)."""
    try:
        Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}), expected a UTF-8 CSV file") from None


def soft_expr_file(annotation_file: str | Path) -> Path:
    """The soft-expression sidecar path of an annotation file."""
    p = Path(annotation_file)
    return p.with_name(p.stem + SOFT_EXPR_SUFFIX)


def write_soft_expr(path: str | Path, paths: list[str], dist: np.ndarray) -> Path:
    """Write a soft-expression sidecar (see the module docstring) atomically."""
    from edge_affect.artifact import atomic_write_text

    dist = np.asarray(dist, dtype=np.float64)
    if dist.shape != (len(paths), len(EXPRESSIONS)):
        raise ValueError(f"soft expression targets {dist.shape}, expected ({len(paths)}, {len(EXPRESSIONS)})")
    lines = [",".join(("image", *EXPRESSIONS))]
    lines += [p + "," + ",".join(f"{x:.6f}" for x in row) for p, row in zip(paths, dist, strict=True)]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


def read_soft_expr(path: str | Path, ann: Annotations) -> np.ndarray:
    """Read the sidecar at ``path`` for ``ann`` (before any row was skipped) → float32 N×8.

    Every mismatch is a ``ValueError`` naming the file and line: a wrong header, an image other than the
    annotation file's at that row, a value that is not a finite probability, a row not summing to 1,
    or a most likely class other than the hard label."""
    src = Path(path)
    want_header = ",".join(("image", *EXPRESSIONS))
    _check_utf8(src)
    with open(src, encoding="utf-8", newline=None) as f:
        header = f.readline().strip()
        if header != want_header:
            raise ValueError(f"{src}:1: header {header[:80]!r}, expected {want_header!r}")
        rows = [line.rstrip("\r\n") for line in f if line.strip()]
    # ann.lines are the annotation-file line numbers of kept rows; the sidecar has one row per data line.
    by_path: dict[str, tuple[int, list[str]]] = {}
    for k, line in enumerate(rows, start=2):
        cols = line.split(",")
        if len(cols) != 1 + len(EXPRESSIONS):
            raise ValueError(
                f"{src}:{k}: {len(cols)} fields, expected {1 + len(EXPRESSIONS)} (image + 8 probabilities)"
            )
        by_path[cols[0]] = (k, cols[1:])
    if len(by_path) != len(rows):
        raise ValueError(f"{src}: repeated image names, expected one row per image")
    out = np.zeros((len(ann), len(EXPRESSIONS)), dtype=np.float32)
    for i, p in enumerate(ann.paths):
        if p not in by_path:
            raise ValueError(f"{src}: no row for image {p!r} of {ann.source}, expected one row per annotated image")
        k, vals = by_path[p]
        try:
            row = np.array([float(v) for v in vals], dtype=np.float64)
        except ValueError:
            raise ValueError(f"{src}:{k}: values {vals} are not numbers, expected 8 probabilities") from None
        if not np.isfinite(row).all() or (row < 0).any() or abs(row.sum() - 1.0) > SOFT_EXPR_TOL:
            raise ValueError(f"{src}:{k}: {vals} are not 8 non-negative probabilities summing to 1 (±{SOFT_EXPR_TOL})")
        e = int(ann.expr[i])
        if e != MISSING_EXPR and row[e] < row.max() - 1e-6:
            raise ValueError(
                f"{src}:{k}: most likely class {EXPRESSIONS[int(row.argmax())]} but {ann.source} labels "
                f"{p!r} {EXPRESSIONS[e]}, expected the hard label to be a most likely class"
            )
        out[i] = row
    if len(by_path) != len(ann) + len(ann.bad_rows):
        raise ValueError(
            f"{src}: {len(by_path)} rows, expected {len(ann) + len(ann.bad_rows)} (one per annotation row)"
        )
    return out


def split_file(root: str | Path, split: str) -> Path:
    """The annotation file of ``split`` ("train" or "val") inside dataset ``root``."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split {split!r}, expected one of {sorted(SPLIT_FILES)}")
    r = Path(root)
    if not r.is_dir():
        raise FileNotFoundError(f"dataset root {r} does not exist or is not a folder")
    for name in SPLIT_FILES[split]:
        if (r / name).is_file():
            return r / name
    raise FileNotFoundError(f"no {split} annotation file in {r}: expected {' or '.join(SPLIT_FILES[split])}")


def load_split(
    root: str | Path,
    split: str = "train",
    images: str | Path | None = None,
    skip_bad: bool = False,
    check_images: bool = True,
) -> Annotations:
    """Read a split of an ABAW-layout dataset root (images in ``root/cropped_aligned`` unless ``images``)."""
    ann_file = split_file(root, split)
    images_root = Path(images) if images is not None else Path(root) / IMAGES_DIR
    if check_images and not images_root.is_dir():
        hint = "" if images is not None else " (pass images=... / --images to point elsewhere)"
        raise FileNotFoundError(f"image folder {images_root} does not exist{hint}")
    ann = read_annotations(ann_file, images_root=images_root, check_images=check_images, skip_bad=skip_bad)
    soft = soft_expr_file(ann_file)
    if soft.is_file():
        ann.expr_soft = read_soft_expr(soft, ann)
    return ann
