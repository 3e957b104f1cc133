"""``load(path) -> Predictor``: any artifact, one contract, JSON-ready predictions per face.

Pre- and post-processing come from the artifact's own metadata (:class:`ArtifactMeta`): input size,
colour mode, mean/std, label names and AU thresholds. Nothing is read from a file name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.artifact import ArtifactMeta
from edge_affect.runtime.backends.base import BaseRunner
from edge_affect.runtime.formats import detect_backend, loader_for_backend, normalize_backend
from edge_affect.runtime.preprocess import as_face_list, normalize, resize_face
from edge_affect.schema import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES

log = logging.getLogger(__name__)

#: Per-face status values in predictions (and the run command's JSON Lines).
STATUS_OK = "ok"
STATUS_BAD_INPUT = "bad_input"
STATUS_NONFINITE = "nonfinite_output"
#: A crop this much longer on one side than the other is not a face crop (aligned crops are square, a detector's
#: face box is about 1:1.25); photos and video frames (3:2, 16:9) are.
MAX_CROP_ASPECT = 1.4
#: A crop at least this large on its shorter side is the size of a photo or a video frame, not of a face crop.
MIN_FRAME_SIDE = 480
NOT_A_CROP_HINT = (
    "predict() takes aligned face crops; for whole photos or video frames use FacePipeline "
    "(edge_affect.runtime.FacePipeline: finds, aligns and predicts every face)"
)


def not_a_face_crop(shape: Sequence[int]) -> str:
    """Why an image of ``shape`` (H, W[, C]) is clearly not an aligned face crop ('' when it may be one)."""
    if len(shape) < 2 or min(int(shape[0]), int(shape[1])) < 1:
        return ""  # not an image at all: predict gives it a bad_input record
    h, w = int(shape[0]), int(shape[1])
    if max(h, w) > MAX_CROP_ASPECT * min(h, w):
        return f"a {w}×{h} px image is not square within 1:{MAX_CROP_ASPECT:g} (aligned face crops are)"
    if min(h, w) >= MIN_FRAME_SIDE:
        return f"a {w}×{h} px image has the size of a photo or frame, not of a face crop"
    return ""


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # overflow-free


def check_views(views: Any, crops: int) -> None:
    """Refuse (one-line ``ValueError``) a ``views`` count that is not a whole number of views per face of ``crops``."""
    if isinstance(views, bool) or not isinstance(views, int) or views < 1 or crops % views:
        raise ValueError(
            f"predict: views {views!r} for {crops} crops, expected a whole number of views per face "
            "(a positive integer that divides the number of crops)"
        )


def failed_record(status: str, error: str) -> dict[str, Any]:
    """The prediction fields of a face that has no valid prediction (values are ``None``)."""
    return {
        "status": status,
        "error": error,
        "valence": None,
        "arousal": None,
        "expression": None,
        "expression_score": None,
        "expression_probs": None,
        "au_probs": None,
        "au_active": None,
    }


class Predictor:
    """Face crops in, per-face affect out; wraps one runner and the artifact's metadata."""

    def __init__(self, runner: BaseRunner, meta: ArtifactMeta, *, source: str = "", max_batch: int = 32) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch {max_batch!r} must be an integer >= 1")
        self.runner = runner
        self.meta = meta
        self.source = source or runner.name
        self.preprocess_cfg = meta.preprocess
        self.expressions = list(meta.labels.expressions)
        self.aus = list(meta.labels.aus)
        self.au_thresholds = np.asarray(meta.au_thresholds, dtype=np.float32)
        self.max_batch = min(runner.max_batch, max_batch) if runner.max_batch else max_batch
        self.min_batch = 1
        pr = getattr(runner, "profile_range", {}).get(INPUT_NAME)
        if pr:
            self.min_batch = int(pr[0][0])
        self.check_tensors()
        self._warned_not_crop = False

    # -- identity --------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def device(self) -> str:
        return self.runner.device

    @property
    def input_size(self) -> int:
        return self.preprocess_cfg.input_size

    def describe(self) -> dict[str, Any]:
        return {
            "artifact": self.source,
            "model_name": self.meta.model_name,
            "precision": self.meta.precision,
            **self.runner.describe(),
        }

    def check_tensors(self) -> None:
        """Metadata must match the network's tensors (input size, output widths): one-line ``ValueError``."""
        where = self.source
        if INPUT_NAME not in self.runner.inputs:
            raise ValueError(f"{where}: network has no input {INPUT_NAME!r} (inputs: {sorted(self.runner.inputs)})")
        spec = self.runner.inputs[INPUT_NAME]
        s = self.input_size
        if len(spec.shape) != 4:
            raise ValueError(f"{where}: input {INPUT_NAME!r} has shape {list(spec.shape)}, expected [N, 3, {s}, {s}]")
        if spec.dtype.kind != "f":
            raise ValueError(f"{where}: input {INPUT_NAME!r} is {spec.dtype}, expected a float tensor (float32)")
        for axis, want in ((1, 3), (2, s), (3, s)):
            got = spec.static_dim(axis)
            if got is not None and got != want:
                raise ValueError(
                    f"{where}: metadata says input 3×{s}×{s} but the network's {INPUT_NAME!r} is {list(spec.shape)[1:]}"
                )
        widths = {"va": len(self.meta.labels.va), "expr": len(self.expressions), "au": len(self.aus)}
        for name in OUTPUT_NAMES:
            if name not in self.runner.outputs:
                raise ValueError(f"{where}: network has no output {name!r} (outputs: {sorted(self.runner.outputs)})")
            out_spec = self.runner.outputs[name]
            if out_spec.dtype.kind != "f" or len(out_spec.shape) != 2:
                raise ValueError(
                    f"{where}: output {name!r} is {out_spec.dtype} {list(out_spec.shape)}, expected float [N, {widths[name]}]"
                )
            got = out_spec.static_dim(1)
            if got is not None and got != widths[name]:
                raise ValueError(
                    f"{where}: metadata lists {widths[name]} labels for output {name!r} but the network gives {got}"
                )

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Predictor:
        self.runner.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.runner.deactivate()

    def warmup(self, iters: int = 2, batch: int = 1) -> None:
        s = self.input_size
        x = np.zeros((max(batch, self.min_batch), 3, s, s), dtype=np.float32)
        for _ in range(max(iters, 1)):
            self.runner.infer({INPUT_NAME: x})

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The raw runner contract (named arrays in, named arrays out)."""
        return self.runner.infer(feed)

    # -- steps -----------------------------------------------------------------------------------
    def preprocess(
        self, faces: np.ndarray | Sequence[np.ndarray]
    ) -> tuple[np.ndarray | None, list[dict[str, Any] | None]]:
        """Crops → (N_ok×3×S×S input, per-face slot: ``None`` if it went in, else a failed record).

        ``faces`` as :func:`~edge_affect.runtime.preprocess.as_face_list` accepts; anything else is a ``ValueError``.
        """
        return self._preprocess_items(as_face_list(faces, "predict"))

    def _preprocess_items(
        self, items: Sequence[Any], offset: int = 0
    ) -> tuple[np.ndarray | None, list[dict[str, Any] | None]]:
        resized, slots = [], []
        for i, f in enumerate(items):
            try:
                resized.append(resize_face(f, self.preprocess_cfg, where=f"face {offset + i}"))
                slots.append(None)
            except ValueError as e:
                slots.append(failed_record(STATUS_BAD_INPUT, str(e)))
        x = normalize(np.stack(resized), self.preprocess_cfg) if resized else None
        return x, slots

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Network outputs for an N×3×S×S input, in chunks the backend accepts."""
        n = x.shape[0]
        outs: list[dict[str, np.ndarray]] = []
        for start in range(0, n, self.max_batch):
            chunk = x[start : start + self.max_batch]
            m = chunk.shape[0]
            if m < self.min_batch:
                pad = np.zeros((self.min_batch - m, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            res = self.runner.infer({INPUT_NAME: chunk})
            outs.append({k: np.asarray(res[k], dtype=np.float32)[:m] for k in OUTPUT_NAMES})
        if len(outs) == 1:
            return outs[0]
        return {k: np.concatenate([o[k] for o in outs]) for k in OUTPUT_NAMES}

    def postprocess(self, out: dict[str, np.ndarray], views: int = 1) -> list[dict[str, Any]]:
        """Raw outputs → one JSON-serialisable dict per face (softmax, sigmoid, AU decisions).

        ``views`` > 1: the rows come in runs of ``views`` views of one face; each face's valence/arousal,
        expression and AU probabilities are the means over its views (a face any of whose views has a NaN/Inf
        output gets a ``nonfinite_output`` record)."""
        va, expr, au = out["va"], out["expr"], out["au"]
        n = va.shape[0] // views
        if n * views != va.shape[0]:
            raise ValueError(f"postprocess: {va.shape[0]} rows do not divide into runs of {views} views")
        bad_out = {k: ~np.isfinite(np.asarray(out[k]).reshape(n, -1)).all(1) for k in OUTPUT_NAMES}
        finite = ~(bad_out["va"] | bad_out["expr"] | bad_out["au"])
        with np.errstate(invalid="ignore", over="ignore"):
            va_c = np.clip(va, -1.0, 1.0)
            probs = _softmax(expr)
            au_p = _sigmoid(au)
            if views > 1:
                va_c, probs, au_p = (a.reshape(n, views, -1).mean(1) for a in (va_c, probs, au_p))
        top = probs.argmax(1)
        active = au_p >= self.au_thresholds[None, :]
        va_l, probs_l, au_l, act_l, top_l = va_c.tolist(), probs.tolist(), au_p.tolist(), active.tolist(), top.tolist()
        records: list[dict[str, Any]] = []
        for i in range(n):
            if not finite[i]:
                bad = [k for k in OUTPUT_NAMES if bad_out[k][i]]
                records.append(failed_record(STATUS_NONFINITE, f"network output {', '.join(bad)} has NaN/Inf"))
                continue
            p = probs_l[i]
            records.append(
                {
                    "status": STATUS_OK,
                    "error": None,
                    "valence": va_l[i][0],
                    "arousal": va_l[i][1],
                    "expression": self.expressions[top_l[i]],
                    "expression_score": p[top_l[i]],
                    "expression_probs": dict(zip(self.expressions, p, strict=True)),
                    "au_probs": dict(zip(self.aus, au_l[i], strict=True)),
                    "au_active": dict(zip(self.aus, act_l[i], strict=True)),
                }
            )
        return records

    def predict(self, faces: Any, timings: dict[str, float] | None = None, views: int = 1) -> list[dict[str, Any]]:
        """Already-cropped faces → one dict per face, in order.

        ``views`` > 1: ``faces`` holds ``views`` consecutive crops of each face (views of one alignment:
        :func:`~edge_affect.runtime.align.align_views` from a frame, :func:`~edge_affect.runtime.align.crop_views`
        from a crop), and each face gets one record, its outputs averaged over its views (``postprocess``); a face
        with a bad crop among its views gets that crop's ``bad_input`` record.

        ``faces``: one image (H×W gray or H×W×C, C = 1/3/4), one N×H×W×C batch, or a list/tuple of images;
        uint8, uint16 or float32/float64 in [0, 1]; any size up to ``MAX_IMAGE_PIXELS``. Anything else
        (channel-first, N×H×W stacks, strings, ``None``, other dtypes, NaN, empty) is a one-line ``ValueError``:
        nothing is guessed. Within a list, a bad crop gets a ``bad_input`` record and NaN/Inf network outputs a
        ``nonfinite_output`` record, so there is always exactly one record per face given. Faces go through
        ``max_batch`` at a time, so memory stays bounded for any number of faces.

        ``timings``, if given, receives seconds spent in ``preprocess``, ``infer`` and ``post``.

        An image that is clearly not a face crop (not square within 1:1.4, or 480 px or more on its shorter side:
        a photo or a video frame) is still predicted, as given, but logs a warning (once per
        ``Predictor``) that points to :class:`~edge_affect.runtime.pipeline.FacePipeline`, which finds, aligns and
        predicts each face.
        """
        items = as_face_list(faces, "predict")
        check_views(views, len(items))
        if not self._warned_not_crop:
            why = next((w for f in items if (w := not_a_face_crop(np.shape(f)))), "")
            if why:
                self._warned_not_crop = True
                log.warning("%s: %s. %s", self.source, why, NOT_A_CROP_HINT)
        result: list[dict[str, Any]] = []
        t_pre = t_inf = t_post = 0.0
        step = max(1, self.max_batch // views) * views  # whole faces per chunk; run() splits further if needed
        for start in range(0, len(items), step):
            t0 = time.perf_counter()
            x, slots = self._preprocess_items(items[start : start + step], offset=start)
            t1 = time.perf_counter()
            if views > 1:
                x, slots = _whole_faces(x, slots, views)
            out = self.run(x) if x is not None else None
            t2 = time.perf_counter()
            good = iter(self.postprocess(out, views) if out is not None else [])
            result += [slot if slot is not None else next(good) for slot in slots]
            t_pre, t_inf, t_post = t_pre + t1 - t0, t_inf + t2 - t1, t_post + time.perf_counter() - t2
        if timings is not None:
            timings["preprocess"] = timings.get("preprocess", 0.0) + t_pre
            timings["infer"] = timings.get("infer", 0.0) + t_inf
            timings["post"] = timings.get("post", 0.0) + t_post
        return result


def _whole_faces(
    x: np.ndarray | None, slots: list[dict[str, Any] | None], views: int
) -> tuple[np.ndarray | None, list[dict[str, Any] | None]]:
    """Per-crop (input, slots) → per-face: a face whose views all went in keeps their rows; one with a bad view
    gets that view's failed record and its other rows are dropped."""
    faces = [slots[i : i + views] for i in range(0, len(slots), views)]
    keep, row, face_slots = [], 0, []
    for group in faces:
        rows = [row + j for j in range(sum(s is None for s in group))]
        row += len(rows)
        bad = next((s for s in group if s is not None), None)
        face_slots.append(bad)
        if bad is None:
            keep += rows
    if x is None or not keep:
        return None, face_slots
    return (x if len(keep) == x.shape[0] else x[keep]), face_slots


# -- loading -------------------------------------------------------------------------------------
def _meta_from_onnx(runner: Any, where: str) -> ArtifactMeta:
    text = runner.custom_metadata.get(METADATA_KEY)
    if text is None:
        raise ValueError(
            f"{where}: no edge-affect metadata (metadata_props key {METADATA_KEY!r}); export it with edge-affect"
        )
    return ArtifactMeta.from_json(text, where)


def load(
    path: str | Path,
    backend: str = "auto",
    providers: Sequence[Any] | str | None = None,
    *,
    cuda_graph: bool = False,
    device: str | None = None,
    max_batch: int = 32,
    allow_device_mismatch: bool = False,
) -> Predictor:
    """Open an artifact (``.onnx``, ``.engine`` + sidecar, or a PyTorch checkpoint) as an active Predictor.

    ``backend``: ``auto`` (from the artifact), ``onnxruntime``, ``tensorrt`` or ``torch``.
    ``providers``: ONNX Runtime providers (``"cpu"``, ``"cuda"``, ``"tensorrt"`` or full names; default:
    CUDA if usable, else CPU). ``cuda_graph``: TensorRT replays a captured CUDA graph per batch shape.
    ``device``: torch device for checkpoints (default ``cpu``). Use as a context manager or call ``close()``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"artifact {p} does not exist")
    if p.is_dir():
        raise ValueError(f"artifact {p} is a folder; expected a model file ({', '.join(('.onnx', '.engine', '.pt'))})")
    detected = detect_backend(p)
    chosen = normalize_backend(backend)
    if chosen == "auto":
        chosen = detected
    elif chosen != detected:
        want = loader_for_backend(chosen)
        raise ValueError(
            f"backend {chosen!r} runs {'/'.join(want.suffixes)} files ({want.description}); {p.name} is a {detected} artifact"
            + (
                " — for TensorRT on an ONNX file use ONNX Runtime's provider (providers='tensorrt')"
                if chosen == "tensorrt"
                else ""
            )
        )
    runner: BaseRunner
    if chosen == "onnxruntime":
        from edge_affect.runtime.backends.onnxruntime_runner import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(p, providers).activate()
        meta = _meta_from_onnx(runner, str(p))
    elif chosen == "tensorrt":
        from edge_affect.runtime.backends.tensorrt_runner import TensorRTRunner, read_sidecar

        side = read_sidecar(p)
        if "metadata" not in side:
            raise ValueError(
                f"engine sidecar {p.name}.json lacks the edge-affect metadata ('metadata' or '{METADATA_KEY}')"
            )
        meta = ArtifactMeta.from_dict(side["metadata"], f"{p}.json")
        runner = TensorRTRunner(p, cuda_graph=cuda_graph, allow_device_mismatch=allow_device_mismatch).activate()
    else:
        from edge_affect.runtime.backends.torch_runner import TorchRunner

        runner = TorchRunner(p, device=device or "cpu").activate()
        meta = runner.meta  # type: ignore[attr-defined]
    try:
        return Predictor(runner, meta, source=str(p), max_batch=max_batch)
    except Exception:
        runner.deactivate()
        raise
