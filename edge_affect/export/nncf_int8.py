"""CPU INT8 through NNCF (ONNX backend): plain post-training quantization, or ``quantize_with_accuracy_control``
under a budget of top-1 expression disagreement with FP32 on the held-back gate frames (no labels needed).

NNCF quantizes, measures the drop, ranks the quantized operations by how much each costs, and returns them to
FP32 one group at a time until the drop is within the budget. The result is a QDQ ONNX model that ONNX Runtime
runs with its integer kernels; what stayed in FP32 and its share of the multiply-accumulates are reported.
The budget counts in points: 1.0 = 1 % of the gate frames may change their top expression.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.artifact import ArtifactMeta, atomic_write_bytes
from edge_affect.export.cpu_int8 import assert_cpu_int8
from edge_affect.export.onnx_export import read_onnx_meta, set_onnx_meta
from edge_affect.export.precision import float_compute_nodes, mac_share, node_macs
from edge_affect.formats import INT8_TARGET_CPU
from edge_affect.schema import INPUT_NAME

log = logging.getLogger(__name__)

#: Most operation groups NNCF may return to FP32 before a budget counts as unreachable.
MAX_REVERTED_GROUPS = 24
#: Calibration frames per NNCF dataset item (statistics collection runs one item at a time).
CALIB_BATCH = 32


def require_nncf() -> Any:
    """The ``nncf`` module, or a one-line ``RuntimeError`` naming the extra that installs it."""
    try:
        import nncf
    except ImportError as e:
        raise RuntimeError(
            f"NNCF is not installed ({e}); install the export extra: pip install 'edge-affect[export]'"
        ) from None
    return nncf


def check_max_drop(points: Any, where: str = "--int8-max-drop") -> float:
    """A budget in points of top-1 disagreement: a finite number in [0, 100]."""
    if isinstance(points, bool) or not isinstance(points, (int, float)) or not 0 <= float(points) <= 100:
        raise ValueError(f"{where} {points!r}: expected points of top-1 disagreement in [0, 100], e.g. 1.0")
    return float(points)


class _Sessions:
    """ONNX Runtime sessions for the models NNCF hands the validation function (one at a time: it asks about the
    same candidate many times in a row, once per frame while ranking)."""

    def __init__(self) -> None:
        self.model: Any = None
        self.session: Any = None

    def __call__(self, model: Any) -> Any:
        if model is not self.model:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.log_severity_level = 3
            self.session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            self.model = model
        return self.session


def top1(session: Any, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Top-1 expression of every frame of ``x``."""
    out = []
    for i in range(0, len(x), batch):
        expr = session.run(["expr"], {INPUT_NAME: x[i : i + batch]})[0]
        out.append(np.asarray(expr).argmax(1))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def quantize_cpu_nncf(
    src: Path,
    dst: Path,
    calib: np.ndarray,
    gate: np.ndarray | None = None,
    max_drop: float | None = None,
    *,
    max_groups: int = MAX_REVERTED_GROUPS,
    macs: dict[str, int] | None = None,
    calib_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Quantize the FP32 ONNX ``src`` to ``dst`` with NNCF on the ``calib`` frames; with ``max_drop`` (points),
    return operations to FP32 until top-1 disagreement with FP32 on ``gate`` is within it.

    Returns what the report shows: route, budget, measured disagreement, the compute nodes left in FP32 and
    their share of ``macs`` (per node, from the FP32 graph). A budget not met with ``max_groups`` groups back in
    FP32 is a one-line ``ValueError``; nothing is written then."""
    import onnx

    nncf = require_nncf()
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    model = onnx.load(str(src))
    items = [calib[i : i + CALIB_BATCH] for i in range(0, len(calib), CALIB_BATCH)]
    calib_ds = nncf.Dataset(items, lambda x: {INPUT_NAME: x})
    macs = node_macs(model) if macs is None else macs
    info: dict[str, Any] = {
        "route": "nncf",
        "quantizer": f"NNCF {nncf.__version__}",
        "calibration_frames": int(len(calib)),
    }
    fp32_session = _Sessions()(model)
    if max_drop is not None and (gate is None or len(gate) == 0):
        raise ValueError("--int8-max-drop: no gate frames to measure the drop on, expected held-back frames")
    if max_drop is None or max_groups == 0:  # nothing may go back to FP32: plain PTQ, then the budget is checked
        q = nncf.quantize(model, calib_ds, subset_size=len(items))
    else:
        ref = top1(fp32_session, gate)
        sessions = _Sessions()

        def validate(m: Any, items: Any) -> tuple[float, list[float]]:
            idx = [int(i) for i in items]
            agree = (top1(sessions(m), gate[idx]) == ref[idx]).astype(float)
            return float(agree.mean()) if len(agree) else 1.0, agree.tolist()

        val_ds = nncf.Dataset(list(range(len(gate))))
        q = nncf.quantize_with_accuracy_control(
            model,
            calib_ds,
            val_ds,
            validate,
            max_drop=max_drop / 100.0,
            subset_size=len(items),
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=max_groups),
        )
    if max_drop is not None:
        info["max_drop_points"] = max_drop
    kept = float_compute_nodes(q)
    info["kept_float"] = kept
    info["kept_float_mac_share"] = mac_share(macs, kept)
    if gate is not None and len(gate):
        ref = top1(fp32_session, gate)
        drop = 100.0 * float(np.mean(top1(_Sessions()(q), gate) != ref))
        info |= {"gate_frames": int(len(gate)), "drop_points": round(drop, 3)}
        if max_drop is not None and drop > max_drop + 1e-9:
            raise ValueError(
                f"--int8-max-drop {max_drop:g}: unreachable, the CPU INT8 model still disagrees with FP32 on "
                f"{drop:.2f} points of the {len(gate)} gate frames with {len(kept)} compute ops "
                f"({100 * info['kept_float_mac_share']:.0f} % of MACs) left in FP32 (at most {max_groups} "
                "groups returned to FP32); expected a larger budget, or ship FP32/FP16"
            )
    m = ArtifactMeta.from_dict(read_onnx_meta(src).to_dict())
    m.precision = "int8"
    m.extra = {
        **m.extra,
        "int8_target": INT8_TARGET_CPU,
        "quantizer": f"nncf {nncf.__version__} "
        + ("quantize_with_accuracy_control" if max_drop is not None else "quantize"),
        "quantize": {k: v for k, v in info.items() if k != "kept_float"} | {"kept_float": kept},
        "calibration": {**(calib_info or {}), "frames": int(len(calib))},
    }
    set_onnx_meta(q, m)
    onnx.checker.check_model(q)
    assert_cpu_int8(q, allow_float=float_compute_nodes(q, look_through=False))  # the check reads direct inputs
    atomic_write_bytes(dst, q.SerializeToString())
    log.info(
        "NNCF INT8: %d compute ops kept in FP32 (%.1f %% of MACs)%s",
        len(kept),
        100 * info["kept_float_mac_share"],
        f", {info['drop_points']:.2f} points top-1 disagreement on the gate frames" if "drop_points" in info else "",
    )
    return info


def budget_markdown(info: dict[str, Any]) -> list[str]:
    """The export report's section on ``--int8-max-drop`` (empty without a budget)."""
    if not info:
        return []
    lines = [
        f"## INT8 accuracy budget (CPU model, {info.get('quantizer', 'NNCF quantize_with_accuracy_control')})",
        "",
        f"- budget: {info['max_drop_points']:g} points of top-1 disagreement with FP32 on the {info['gate_frames']} "
        f"gate frames; measured: {info['drop_points']:.2f} points. These frames chose what stays in FP32, so the "
        "CPU INT8 gate above is not an independent check; rerun `edge-affect parity DIR --eval-data ROOT` on other data.",
        f"- kept in FP32: {len(info['kept_float'])} compute ops, {100 * info['kept_float_mac_share']:.1f} % of the "
        'multiply-accumulates (named under "Kept in higher precision" below)',
        "",
    ]
    return lines
