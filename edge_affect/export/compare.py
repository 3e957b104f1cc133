"""Comparison of exported artifacts with the PyTorch FP32 model (Polygraphy's Comparator, our gates): gates
(thresholds in one place), comparisons as JSON-saveable objects, evaluation sets and the Markdown report.

Gates (``Gates``): FP32 ONNX max abs diff ≤ 1e-4 per raw output; FP16 max abs diff ≤ 1e-2 on VA and on the
expression/AU probabilities (softmax/sigmoid); INT8 over an evaluation set: expression top-1 agreement ≥ 97 %,
AU decision agreement ≥ 97 % (at the artifact's AU thresholds), CCC between the two VA outputs ≥ 0.98 (the
lower of valence and arousal), and, where labels exist, a drop of the ABAW P-score ≤ 0.02 (when only some
tasks are labelled, the sum of the labelled components).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.artifact import atomic_write_text
from edge_affect.calibration import MANIFEST, default_calibration_dir, load_calibration, manifest_labels, read_manifest
from edge_affect.data.abaw import load_split
from edge_affect.data.fer import ferplus_labels
from edge_affect.export.cpu_int8 import has_float16
from edge_affect.export.onnx_export import run_onnx
from edge_affect.metrics import au_f1, expr_f1, mtl_score
from edge_affect.metrics import ccc as _ccc
from edge_affect.runtime.preprocess import decode_image, prepare_batch
from edge_affect.schema import MISSING_AU, MISSING_EXPR, MISSING_VA, OUTPUT_NAMES, Preprocess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gates:
    """Every parity threshold, in one place."""

    fp32_max_abs: float = 1e-4
    fp16_max_abs: float = 1e-2
    int8_expr_agreement: float = 0.97
    int8_au_agreement: float = 0.97
    int8_va_ccc: float = 0.98
    int8_p_drop: float = 0.02


@dataclass
class GateResult:
    """One gate: ``value`` compared with ``threshold`` by ``op`` ("<=" or ">=")."""

    name: str
    value: float
    threshold: float
    op: str
    passed: bool

    @classmethod
    def check(cls, name: str, value: float, threshold: float, op: str) -> GateResult:
        ok = bool(np.isfinite(value)) and (value <= threshold if op == "<=" else value >= threshold)
        return cls(name, float(value), float(threshold), op, ok)


@dataclass
class Labels:
    """Ground truth of an evaluation set, ABAW missing codes where unknown (any task may be absent)."""

    va: np.ndarray | None = None  # N×2
    expr: np.ndarray | None = None  # N
    au: np.ndarray | None = None  # N×12


@dataclass
class Comparison:
    """One artifact compared with the reference on one data set."""

    artifact: str
    precision: str
    backend: str
    n: int
    gates: list[GateResult] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    skipped: str = ""

    @property
    def passed(self) -> bool:
        return not self.skipped and all(g.passed for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def softmax(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


#: A frame is a near tie for a model when its two most probable expressions lie within this of each other
#: (softmax probabilities): INT8 rounding noise flips such frames at random, so briefly trained models, which
#: leave many of them, lose top-1 agreement even when INT8 moves none of the frames they do decide (docs/export.md).
NEAR_TIE_GAP = 0.05


def near_ties(expr_logits: np.ndarray, gap: float = NEAR_TIE_GAP) -> np.ndarray:
    """Per frame: whether its two most probable expressions (softmax of ``expr_logits``) are within ``gap``."""
    return _near_ties_of_probs(softmax(expr_logits), gap)


def _near_ties_of_probs(expr_probs: np.ndarray, gap: float = NEAR_TIE_GAP) -> np.ndarray:
    top = np.sort(expr_probs, axis=1)
    return top[:, -1] - top[:, -2] < gap


#: σ, as a fraction of full scale, of the pixel noise the INT8 flips are set beside (``sensor_noise_yardstick``): one
#: grey level of 8-bit video, less than a camera's sensor noise.
SENSOR_NOISE = 1 / 255


def sensor_noise(shape: tuple[int, ...], pp: Preprocess, sigma: float = SENSOR_NOISE, seed: int = 0) -> np.ndarray:
    """N(0, ``sigma``) noise per pixel on the [0, 1] image, in the model's normalised input units (÷ ``pp.std`` per
    channel; one field copied to the three channels of a ``gray`` model's input, as its camera image has one)."""
    n, c, h, w = shape
    rng = np.random.default_rng(seed)
    field = rng.normal(size=(n, 1 if pp.color == "gray" else c, h, w)).astype(np.float32)
    field = np.broadcast_to(field, shape) if pp.color == "gray" else field
    return (field * (sigma / np.asarray(pp.std, dtype=np.float32).reshape(1, -1, 1, 1))).astype(np.float32)


def sensor_noise_yardstick(
    run: Runner, ref: dict[str, np.ndarray], x: np.ndarray, pp: Preprocess, sigma: float = SENSOR_NOISE
) -> dict[str, Any]:
    """How many of the frames ``x`` the FP32 model ``run`` (whose outputs on them are ``ref``) flips its own top-1
    expression on when ``sensor_noise`` of ``sigma`` is added to them: the scale an INT8 model's flips are read
    against (a model that barely decides its frames flips under a camera's noise as under INT8 rounding)."""
    flips = ref["expr"].argmax(1) != run(x + sensor_noise(x.shape, pp, sigma))["expr"].argmax(1)
    return {
        "sigma": sigma,
        "n": int(len(x)),
        "expr_top1_flipped": int(flips.sum()),
        "expr_top1_agreement": float(1 - flips.mean()) if len(x) else 1.0,
    }


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def ccc(a: np.ndarray, b: np.ndarray) -> float:
    """Concordance correlation coefficient (1.0 for two identical constant vectors)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if np.array_equal(a, b):
        return 1.0
    return float(_ccc(a, b))


def task_scores(out: dict[str, np.ndarray], labels: Labels, au_thresholds: np.ndarray) -> dict[str, float]:
    """ABAW components on the labelled rows of each task: ``va`` mean CCC, ``expr`` macro-F1, ``au`` mean F1, ``p``."""
    scores: dict[str, float] = {}
    va_ok = (labels.va != MISSING_VA).all(axis=1) if labels.va is not None else None
    ex_ok = labels.expr != MISSING_EXPR if labels.expr is not None else None
    au_ok = (labels.au != MISSING_AU).all(axis=1) if labels.au is not None else None
    expr_pred = out["expr"].argmax(axis=1)
    au_pred = (sigmoid(out["au"]) >= au_thresholds[None, :]).astype(np.int64)
    if va_ok is not None and ex_ok is not None and au_ok is not None and va_ok.any() and ex_ok.any() and au_ok.any():
        s = mtl_score(
            out["va"][va_ok], labels.va[va_ok], expr_pred[ex_ok], labels.expr[ex_ok], au_pred[au_ok], labels.au[au_ok]
        )
        return {k: float(s[k]) for k in ("va", "expr", "au", "p")}
    if va_ok is not None and va_ok.any():
        scores["va"] = (
            ccc(out["va"][va_ok, 0], labels.va[va_ok, 0]) + ccc(out["va"][va_ok, 1], labels.va[va_ok, 1])
        ) / 2
    if ex_ok is not None and ex_ok.any():
        scores["expr"] = float(expr_f1(expr_pred[ex_ok], labels.expr[ex_ok]))
    if au_ok is not None and au_ok.any():
        scores["au"] = float(au_f1(au_pred[au_ok], labels.au[au_ok]))
    if scores:
        scores["p"] = float(sum(scores.values()))
    return scores


def compare_outputs(
    ref: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    precision: str,
    au_thresholds: list[float] | np.ndarray,
    labels: Labels | None = None,
    gates: Gates = Gates(),
) -> tuple[list[GateResult], dict[str, float]]:
    """Gate ``got`` (an artifact's raw outputs) against ``ref`` (PyTorch FP32) for ``precision``."""
    thr = np.asarray(au_thresholds, dtype=np.float64)
    for k in OUTPUT_NAMES:
        if ref[k].shape != got[k].shape:
            raise ValueError(f"output {k!r}: shape {got[k].shape}, reference {ref[k].shape}")
    raw = {
        k: float(np.abs(ref[k].astype(np.float64) - got[k].astype(np.float64)).max(initial=0.0)) for k in OUTPUT_NAMES
    }
    raw = {k: (v if np.isfinite(v) else float("inf")) for k, v in raw.items()}
    p_ref = {"va": ref["va"].astype(np.float64), "expr": softmax(ref["expr"]), "au": sigmoid(ref["au"])}
    p_got = {"va": got["va"].astype(np.float64), "expr": softmax(got["expr"]), "au": sigmoid(got["au"])}
    prob = {k: float(np.nan_to_num(np.abs(p_ref[k] - p_got[k]), nan=np.inf).max(initial=0.0)) for k in OUTPUT_NAMES}
    expr_flips = ref["expr"].argmax(1) != got["expr"].argmax(1)
    expr_agree = float((~expr_flips).mean())
    ties = _near_ties_of_probs(p_ref["expr"])  # the reference's probabilities, computed once above
    au_agree = float(((p_ref["au"] >= thr) == (p_got["au"] >= thr)).mean())
    va_ccc = min(ccc(ref["va"][:, 0], got["va"][:, 0]), ccc(ref["va"][:, 1], got["va"][:, 1]))
    va_ccc = va_ccc if np.isfinite(va_ccc) else float("-inf")
    stats: dict[str, float] = {
        **{f"max_abs_{k}": v for k, v in raw.items()},
        **{f"max_abs_prob_{k}": v for k, v in prob.items()},
        "expr_top1_agreement": expr_agree,
        "expr_top1_flipped": float(expr_flips.sum()),
        # how many frames the reference barely decides, and how many of the flips are among the frames it decides
        "expr_near_ties": float(ties.sum()),
        "expr_top1_flipped_decided": float((expr_flips & ~ties).sum()),
        "au_decision_agreement": au_agree,
        "au_decisions_flipped": float(((p_ref["au"] >= thr) != (p_got["au"] >= thr)).sum()),
        "va_ccc_min": va_ccc,
    }
    results: list[GateResult] = []
    if precision == "fp32":
        results += [GateResult.check(f"max_abs_{k}", raw[k], gates.fp32_max_abs, "<=") for k in OUTPUT_NAMES]
    elif precision == "fp16":
        results += [GateResult.check(f"max_abs_prob_{k}", prob[k], gates.fp16_max_abs, "<=") for k in OUTPUT_NAMES]
    elif precision == "int8":
        results += [
            GateResult.check("expr_top1_agreement", expr_agree, gates.int8_expr_agreement, ">="),
            GateResult.check("au_decision_agreement", au_agree, gates.int8_au_agreement, ">="),
            GateResult.check("va_ccc_min", va_ccc, gates.int8_va_ccc, ">="),
        ]
    else:
        raise ValueError(f"precision {precision!r} is not fp32, fp16 or int8")
    if labels is not None:
        s_ref = task_scores(ref, labels, thr)
        s_got = task_scores(got, labels, thr)
        if s_ref:
            drop = s_ref["p"] - s_got["p"]
            stats.update({f"ref_{k}": v for k, v in s_ref.items()})
            stats.update({f"score_{k}": v for k, v in s_got.items()})
            stats["p_drop"] = drop
            if precision == "int8":
                name = "p_drop" if len(s_ref) == 4 else f"p_drop({'+'.join(k for k in s_ref if k != 'p')})"
                results.append(GateResult.check(name, drop, gates.int8_p_drop, "<="))
    return results, stats


@dataclass
class EvalSet:
    """Preprocessed inputs of an evaluation set, its labels (if any) and a description."""

    x: np.ndarray
    labels: Labels | None
    description: str


def load_eval_set(data: str | Path | None, pp: Any, split: str = "val", limit: int | None = None) -> EvalSet:
    """Inputs for parity: a calibration set (default: the shipped one), an ABAW root or an ``.npz``."""
    path = Path(data) if data is not None else default_calibration_dir()
    if not path.exists():
        raise FileNotFoundError(f"evaluation data {path} does not exist")
    if path.is_dir() and (path / MANIFEST).is_file():
        m = read_manifest(path)
        x = load_calibration(path, pp, min_frames=1, limit=limit)
        ex = manifest_labels(m)
        labels = Labels(expr=ex[: len(x)]) if ex is not None else None
        return EvalSet(x, labels, f"calibration set {path} ({len(x)} frames)")
    if path.is_file() and path.suffix == ".npz":
        d = np.load(path, allow_pickle=False)
        if "images" not in d.files:
            raise ValueError(f"{path}: has no 'images' array")
        imgs = d["images"][:limit]
        labels = Labels(expr=d["labels"][:limit].astype(np.int64)) if "labels" in d.files else None
        if labels is None and "votes" in d.files:  # FER+: majority label (-1 where unknown / not a face)
            labels = Labels(expr=ferplus_labels(d["votes"][:limit], where=f"{path}: votes")[1])
        return EvalSet(prepare_batch(imgs, pp), labels, f"{path} ({len(imgs)} images)")
    if path.is_dir():
        ann = load_split(path, split)
        idx = np.arange(len(ann.paths))[:limit]
        root = Path(ann.images_root) if ann.images_root is not None else path
        x = prepare_batch([decode_image(root / ann.paths[i]) for i in idx], pp)
        labels = Labels(va=ann.va[idx], expr=ann.expr[idx], au=ann.au[idx])
        return EvalSet(x, labels, f"ABAW {split} split of {path} ({len(idx)} frames)")
    raise ValueError(f"evaluation data {path}: expected a calibration folder, an ABAW root or an .npz")


Runner = Callable[[np.ndarray], dict[str, np.ndarray]]

#: Backend label of INT8 ONNX parity on CPU (see ``onnx_export.run_onnx`` for why FP16 is upcast and each node
#: runs as written there).
INT8_CPU_BACKEND = "onnxruntime-cpu, fp16 upcast, unfused Q/DQ"


def onnx_cpu_runner(path: Path, precision: str) -> tuple[str, Runner]:
    """The CPU runner for an ONNX artifact and its backend label (INT8 Q/DQ graphs run with FP16 upcast)."""
    if precision == "int8" and has_float16(path):  # TensorRT-shaped: Q/DQ + FP16 (the CPU INT8 model has no FP16)
        return INT8_CPU_BACKEND, lambda x: run_onnx(path, x, emulate_fp16_in_fp32=True)
    return "onnxruntime-cpu", lambda x: run_onnx(path, x)


def compare_artifact(
    name: str,
    precision: str,
    backend: str,
    run: Runner,
    ref: dict[str, np.ndarray],
    ev: EvalSet,
    au_thresholds: list[float],
    gates: Gates = Gates(),
) -> Comparison:
    """Run one artifact over ``ev`` and gate it against ``ref``."""
    got = run(ev.x)
    res, stats = compare_outputs(ref, got, precision, au_thresholds, ev.labels, gates)
    c = Comparison(artifact=name, precision=precision, backend=backend, n=len(ev.x), gates=res, stats=stats)
    log.info("%s (%s, %s): %s", name, precision, backend, "pass" if c.passed else "FAIL")
    return c


def comparisons_markdown(comps: list[Comparison]) -> str:
    """Markdown table: one row per gate."""
    lines = [
        "| artifact | precision | backend | n | gate | value | threshold | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comps:
        if c.skipped:
            lines.append(f"| {c.artifact} | {c.precision} | {c.backend} | – | – | – | – | skipped: {c.skipped} |")
        for g in c.gates:
            lines.append(
                f"| {c.artifact} | {c.precision} | {c.backend} | {c.n} | {g.name} | {g.value:.6g} | {g.op} {g.threshold:g} "
                f"| {'pass' if g.passed else '**FAIL**'} |"
            )
    return "\n".join(lines)


def flips_markdown(
    comps: list[Comparison], frames: str = "gate frames", yardstick: dict[str, Any] | None = None
) -> list[str]:
    """Lines saying how many expression predictions each artifact flipped on ``frames`` and, for the INT8 ones, how
    many of those frames are near ties for the reference (``NEAR_TIE_GAP``) and how many flips fall outside them;
    with ``yardstick`` (``sensor_noise_yardstick``), how many the reference flips under a camera's noise."""
    flips = [c for c in comps if "expr_top1_flipped" in c.stats]
    if not flips:
        return []
    lines = [
        f"Expression predictions flipped vs PyTorch on the {frames}: "
        + ", ".join(f"{c.artifact} {int(c.stats['expr_top1_flipped'])} of {c.n}" for c in flips)
        + "."
    ]
    ties = [c for c in flips if c.precision == "int8" and "expr_near_ties" in c.stats]
    if ties:  # every comparison judges the same frames against the same reference
        lines += [
            "",
            f"Of the {ties[0].n} {frames}, {int(ties[0].stats['expr_near_ties'])} are near ties for FP32 (its two most "
            f"probable expressions within {NEAR_TIE_GAP} of each other), which INT8 rounding flips at random; flips "
            "outside them: "
            + ", ".join(f"{c.artifact} {int(c.stats['expr_top1_flipped_decided'])}" for c in ties)
            + ". Many near ties mean a briefly trained model (train longer, or see `--int8-max-drop`).",
        ]
    if ties and yardstick:
        lines += [
            "",
            f"For scale: PyTorch FP32 itself flips {yardstick['expr_top1_flipped']} of these {yardstick['n']} {frames} "
            f"when N(0, {yardstick['sigma'] * 255:.3g}/255) pixel noise is added to them (one grey level; a camera's "
            "sensor noise is typically a few).",
        ]
    return [*lines, ""]


@dataclass
class ParityReport:
    """Comparisons of all artifacts of one export folder on one evaluation set."""

    export_dir: str
    data: str
    gates: Gates
    comparisons: list[Comparison]
    # the reference's own flips on the same frames under one grey level of pixel noise (sensor_noise_yardstick)
    noise_yardstick: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons if not c.skipped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "export_dir": self.export_dir,
            "data": self.data,
            "gates": asdict(self.gates),
            "passed": self.passed,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "noise_yardstick": self.noise_yardstick,
        }

    def to_markdown(self) -> str:
        head = f"# Parity: {self.export_dir}\n\nData: {self.data}\n\nResult: {'PASS' if self.passed else 'FAIL'}\n\n"
        flips = flips_markdown(self.comparisons, "frames", self.noise_yardstick)
        return head + "\n".join([comparisons_markdown(self.comparisons), *([""] + flips if flips else [])]) + "\n"

    def save(self, folder: str | Path, stem: str = "parity_report") -> tuple[Path, Path]:
        d = Path(folder)
        j, m = d / f"{stem}.json", d / f"{stem}.md"
        atomic_write_text(j, json.dumps(self.to_dict(), indent=1, allow_nan=True) + "\n")
        atomic_write_text(m, self.to_markdown())
        return j, m
