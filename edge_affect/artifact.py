"""Self-describing artifacts: the one metadata dict every checkpoint, ONNX file and engine sidecar carries.

Layout (JSON, stored under ``schema.METADATA_KEY``)::

    {
      "schema_version": 1,
      "edge_affect_version": "0.1.0",
      "labels": {"expressions": [...8], "aus": [...12], "va": ["valence", "arousal"]},
      "preprocess": {"input_size": 112, "color": "rgb", "mean": [...], "std": [...], "interpolation": "area"},
      "au_thresholds": [0.5, ... 12],
      "model_name": "tiny",
      "model_config": {...ModelConfig.to_dict()},
      "checkpoint_sha256": "...",
      "precision": "fp32" | "fp16" | "int8",
      "inputs": {"image": ["N", 3, S, S]},
      "outputs": {"va": ["N", 2], "expr": ["N", 8], "au": ["N", 12]}
    }

The runtime reads facts only from here, never from a file name. Every field is checked for type and range
when an artifact is read (:meth:`ArtifactMeta.from_dict`) or a meta is made: label names and order must be
this edge-affect's (``schema.EXPRESSIONS``, ``schema.AUS``), AU thresholds finite in [0, 1], the preprocessing
sane (:data:`INPUT_SIZE_RANGE`, finite mean/std, std > 0) and an ``extra["align_template"]`` 5×2 finite
fractions of the crop, shaped like a face (eyes above nose above mouth, left before right).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_affect import __version__
from edge_affect.formats import PRECISIONS
from edge_affect.schema import (
    AUS,
    EXPRESSIONS,
    INPUT_NAME,
    NUM_AU,
    OUTPUT_DIMS,
    SCHEMA_VERSION,
    VA_NAMES,
    LabelSchema,
    Preprocess,
    _is_number,
    _numbers,
    _short,
)
from edge_affect.schema import INPUT_SIZE_RANGE as INPUT_SIZE_RANGE  # public names, checked in schema
from edge_affect.schema import INTERPOLATIONS as INTERPOLATIONS
from edge_affect.schema import check_preprocess as check_preprocess

#: An align template's triangle (eye centre left, eye centre right, mouth centre) must cover at least this
#: fraction of the crop (the ArcFace template: 0.057, FER2013's measured one: 0.07).
MIN_TEMPLATE_AREA = 0.01
#: Any two template points at least this far apart (fraction of the crop).
MIN_TEMPLATE_SPACING = 0.02


def _check_names(value: Any, expected: tuple[str, ...], what: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
        raise ValueError(f"{what} must be a list of names, got {_short(value)}")
    if list(value) != list(expected):
        raise ValueError(f"{what} {list(value)} differ from this edge-affect's {list(expected)} (names and order)")
    return list(value)


def _preprocess_from(d: Any) -> Preprocess:
    if not isinstance(d, dict):
        raise ValueError(f"preprocess must be an object, got {_short(d)}")
    kw = dict(d)
    for k in ("mean", "std"):
        if k in kw:
            kw[k] = tuple(_numbers(kw[k], 3, f"preprocess {k}"))
    size = kw.get("input_size")
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(f"preprocess input_size {_short(size)} must be an integer")
    for k in ("color", "interpolation"):
        if k in kw and not isinstance(kw[k], str):
            raise ValueError(f"preprocess {k} {_short(kw[k])} must be a string")
    return Preprocess.from_dict(kw)


def check_align_template(value: Any) -> list[list[float]]:
    """A 5×2 align template (fractions of the crop, YuNet landmark order) that can frame a face, as lists.

    Refused: other shapes, non-finite values, points outside [0, 1], coincident points, collinear or tiny
    layouts (area of the eyes–mouth triangle < :data:`MIN_TEMPLATE_AREA`), and layouts that are not a face
    upright as the image shows it (eyes above nose above mouth, image-left eye and mouth corner first), which
    would align faces upside down or mirrored.
    """
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 5
        or not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_number(v) for v in p) for p in value)
    ):
        raise ValueError(f"align_template must be 5×2 numbers (x, y fractions of the crop), got {_short(value)}")
    pts = [(float(x), float(y)) for x, y in value]
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for p in pts for v in p):
        raise ValueError(f"align_template points must be finite fractions of the crop in [0, 1], got {pts}")
    for i in range(5):
        for j in range(i + 1, 5):
            if math.dist(pts[i], pts[j]) < MIN_TEMPLATE_SPACING:
                raise ValueError(f"align_template points {i} and {j} coincide ({pts[i]}, {pts[j]})")
    (rx, ry), (lx, ly), (nx, ny), (mrx, mry), (mlx, mly) = pts
    eye_c = ((rx + lx) / 2, (ry + ly) / 2)
    mouth_c = ((mrx + mlx) / 2, (mry + mly) / 2)
    if not (rx < lx and mrx < mlx and eye_c[1] < ny < mouth_c[1]):
        raise ValueError(
            "align_template is not an upright face (expected eyes left to right, then nose, then mouth corners "
            f"left to right, top to bottom), got {pts}"
        )
    area = abs((lx - rx) * (mouth_c[1] - ry) - (mouth_c[0] - rx) * (ly - ry)) / 2
    if area < MIN_TEMPLATE_AREA:
        raise ValueError(
            f"align_template is degenerate: eyes-mouth triangle area {area:.4f} < {MIN_TEMPLATE_AREA} of the crop"
        )
    return [list(p) for p in pts]


def align_antialias(extra: dict[str, Any]) -> bool:
    """Whether the runtime should align faces for this model with the anti-aliased warp
    (``edge_affect.runtime.align.align_face(..., antialias=True)``): ``align_antialias`` in its metadata when
    given, else whether it was trained with blur augmentation (``augment_params.blur`` > 0, and ``blur_prob`` > 0
    when given, in the recorded ``train_config``), i.e. on the low-passed crops that warp cuts from a large face.
    Otherwise the plain warp, which keeps the detail near the crop's resolution limit a model trained on sharp
    crops (FER2013's) relies on.
    """
    if "align_antialias" in extra:
        return bool(extra["align_antialias"])
    tc = extra.get("train_config")
    if not isinstance(tc, dict) or not tc.get("augment"):
        return False
    params = tc.get("augment_params")
    if not isinstance(params, dict):
        return False
    blur, prob = params.get("blur"), params.get("blur_prob", 1.0)
    return _is_number(blur) and float(blur) > 0 and _is_number(prob) and float(prob) > 0


#: How many views of one alignment the runtime may average per face (``align_views`` in a model's metadata;
#: ``edge_affect.runtime.align.view_offsets`` places them).
ALIGN_VIEWS = (1, 2, 4)


def is_align_views(value: Any) -> bool:
    """Whether ``value`` is a views count the runtime takes (an int in :data:`ALIGN_VIEWS`, not a bool)."""
    return not isinstance(value, bool) and isinstance(value, int) and value in ALIGN_VIEWS


def align_views(extra: dict[str, Any]) -> int:
    """How many views of each face's alignment the runtime averages for this model: ``align_views`` in its
    metadata (recorded by ``package --align-views``), else 1 (one crop)."""
    return int(extra.get("align_views", 1))


@dataclass
class ArtifactMeta:
    """Metadata shared by all artifacts of one model."""

    preprocess: Preprocess
    labels: LabelSchema = field(default_factory=LabelSchema)
    au_thresholds: list[float] = field(default_factory=lambda: [0.5] * NUM_AU)
    model_name: str = ""
    model_config: dict[str, Any] = field(default_factory=dict)
    checkpoint_sha256: str = ""
    precision: str = "fp32"
    edge_affect_version: str = __version__
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.preprocess, Preprocess):
            raise ValueError(f"preprocess must be a Preprocess, got {type(self.preprocess).__name__}")
        check_preprocess(self.preprocess)
        _check_names(self.labels.expressions, EXPRESSIONS, "expression labels")
        _check_names(self.labels.aus, AUS, "AU labels")
        _check_names(self.labels.va, VA_NAMES, "VA labels")
        th = self.au_thresholds.tolist() if hasattr(self.au_thresholds, "tolist") else self.au_thresholds
        if not isinstance(th, (list, tuple)) or len(th) != NUM_AU:
            raise ValueError(f"au_thresholds must be {NUM_AU} numbers (one per AU), got {_short(th)}")
        th = [t.item() if getattr(t, "ndim", None) == 0 else t for t in th]  # numpy scalars
        if not all(_is_number(t) for t in th):
            raise ValueError(f"au_thresholds must be numbers, got {_short(th)}")
        self.au_thresholds = [float(t) for t in th]
        if not all(math.isfinite(t) and 0.0 <= t <= 1.0 for t in self.au_thresholds):
            raise ValueError(f"au_thresholds must be finite probabilities in [0, 1], got {self.au_thresholds}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {_short(self.precision)} is not one of {list(PRECISIONS)}")
        for name in ("model_name", "checkpoint_sha256", "edge_affect_version"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {_short(getattr(self, name))}")
        for name in ("model_config", "extra"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be an object, got {_short(getattr(self, name))}")
        self.extra = dict(self.extra)
        if self.extra.get("align_template") is not None:
            self.extra["align_template"] = check_align_template(self.extra["align_template"])
        if "align_antialias" in self.extra and not isinstance(self.extra["align_antialias"], bool):
            raise ValueError(f"align_antialias must be true or false, got {_short(self.extra['align_antialias'])}")
        views = self.extra.get("align_views", 1)
        if not is_align_views(views):
            raise ValueError(f"align_views must be one of {list(ALIGN_VIEWS)}, got {_short(views)}")

    def to_dict(self) -> dict[str, Any]:
        s = self.preprocess.input_size
        return {
            "schema_version": self.schema_version,
            "edge_affect_version": self.edge_affect_version,
            "labels": self.labels.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "au_thresholds": [float(t) for t in self.au_thresholds],
            "model_name": self.model_name,
            "model_config": self.model_config,
            "checkpoint_sha256": self.checkpoint_sha256,
            "precision": self.precision,
            "inputs": {INPUT_NAME: ["N", 3, s, s]},
            "outputs": {k: ["N", v] for k, v in OUTPUT_DIMS.items()},
            "extra": self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "artifact") -> ArtifactMeta:
        """Parse and check metadata read from an artifact; any problem is one ``ValueError`` naming ``where``."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: edge-affect metadata must be a JSON object, got {type(d).__name__}")
        try:
            version = d.get("schema_version", 0)
            if version != SCHEMA_VERSION or isinstance(version, bool):
                raise ValueError(f"metadata schema_version {_short(version)}, this edge-affect reads {SCHEMA_VERSION}")
            raw_labels = d["labels"]
            if not isinstance(raw_labels, dict):
                raise ValueError(f"labels must be an object, got {_short(raw_labels)}")
            labels = LabelSchema(
                expressions=_check_names(raw_labels.get("expressions"), EXPRESSIONS, "expression labels"),
                aus=_check_names(raw_labels.get("aus"), AUS, "AU labels"),
                va=_check_names(raw_labels.get("va", list(VA_NAMES)), VA_NAMES, "VA labels"),
            )
            return cls(
                preprocess=_preprocess_from(d["preprocess"]),
                labels=labels,
                au_thresholds=_numbers(d["au_thresholds"], NUM_AU, "au_thresholds"),
                model_name=d.get("model_name", ""),
                model_config=d.get("model_config", {}),
                checkpoint_sha256=d.get("checkpoint_sha256", ""),
                precision=d.get("precision", "fp32"),
                edge_affect_version=d.get("edge_affect_version", ""),
                schema_version=version,
                extra=d.get("extra", {}),
            )
        except KeyError as e:
            raise ValueError(f"{where}: metadata lacks key {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad edge-affect metadata: {e}") from None

    @classmethod
    def from_json(cls, text: str, where: str = "artifact") -> ArtifactMeta:
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{where}: edge-affect metadata is not valid JSON: {e}") from None
        return cls.from_dict(d, where)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder + rename (never half-written).

    The temp file is ``.<name>.tmp-<pid>-<random>``: one a killed writer left is removed by the next write
    of the same file (its PID is gone), never one a live process is writing (``fsutil.clean_stale``)."""
    from edge_affect.fsutil import clean_stale, temp_pattern

    p = Path(path)
    if p.parent.is_dir():
        clean_stale(p.parent, temp_pattern(p.name))
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.tmp-{os.getpid()}-", dir=str(p.parent))
    try:
        # mkstemp creates 0600; artifacts are shared (Triton, other users): 0666 minus the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_figure(path: str | Path, fig: Any, dpi: int = 100) -> None:
    """Save a matplotlib figure as PNG to ``path`` through ``atomic_write_bytes`` (never half-written), then close it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
