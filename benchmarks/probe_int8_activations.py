"""Where a TensorRT-shaped INT8 model loses its agreement with FP32: activation quantizers switched off by group, or
given per-channel scales, on a model ``bench_int8_backbones.py`` trained and exported.

    python benchmarks/probe_int8_activations.py runs/b22s/edge-efficientnet_lite0-s0 runs/b22s/data-test-s7 \\
        --json benchmarks/results/int8_activation_probe.json

``RUN`` holds ``train/best.pt``, ``calib/`` and ``export/model.onnx`` + ``export/model.int8.onnx`` (the Q/DQ model);
``FACES`` is a synthetic set whose two splits are judged. Each variant edits the Q/DQ graph's activation quantizers
(those whose input is not a weight) and runs it node by node as ``parity`` does; weights stay per-channel INT8:

- ``off:GROUP``: that group's activation Q/DQ pairs become identities (the layers reading them run in float);
- ``only:GROUP``: every backbone activation quantizer off except that group's;
- ``per-channel``: every activation quantizer given one scale per channel (max over the calibration side of the
  export's split), which TensorRT does not offer: how much of the loss is one scale per tensor.

Groups: ``stem`` (the stem's output), ``stageN`` (the backbone's blocks.N), ``backbone`` (all of them), ``head``
(everything after the backbone). The table gives top-1 expression agreement with FP32 on all faces and on the faces
FP32 decides (its two most probable expressions more than ``NEAR_TIE_GAP`` apart). A probe for the docs, not a
recipe: no variant is an export option.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def group_of(name: str) -> str:
    """The group of an activation tensor by its exported name."""
    if "/backbone/" not in name:
        return "head"
    m = re.search(r"/blocks\.(\d+)/", name)
    return "stem" if m is None else f"stage{m.group(1)}"


def activation_quantizers(model) -> list:
    """The QuantizeLinear nodes of ``model`` whose input is an activation (not an initializer)."""
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]


def edited(model, keep_off: set[str], per_channel: dict[str, np.ndarray] | None = None):
    """A copy of the Q/DQ ``model`` with the activation quantizers of tensors in ``keep_off`` made identities, and,
    with ``per_channel``, every other one given those per-channel maxima / 127 as scales (zero point 0)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: i for i in m.graph.initializer}
    for q in activation_quantizers(m):
        name = q.input[0]
        dqs = [d for d in m.graph.node if d.op_type == "DequantizeLinear" and d.input[0] == q.output[0]]
        if name in keep_off:
            for node in (q, *dqs):
                node.op_type = "Identity"
                del node.input[1:]
                del node.attribute[:]
        elif per_channel is not None:
            scale_dtype = helper.tensor_dtype_to_np_dtype(inits[q.input[1]].data_type)
            zp_dtype = helper.tensor_dtype_to_np_dtype(inits[q.input[2]].data_type)
            top = per_channel[name]
            scale = np.maximum(top / 127.0, 1e-8).astype(scale_dtype)
            s_name, z_name = f"{name}_per_channel_scale", f"{name}_per_channel_zero_point"
            m.graph.initializer.extend(
                [numpy_helper.from_array(scale, s_name), numpy_helper.from_array(np.zeros(len(top), zp_dtype), z_name)]
            )
            axis = 1 if top.ndim == 1 and per_channel[f"{name}#rank"] == 4 else -1
            for node in (q, *dqs):
                node.input[1], node.input[2] = s_name, z_name
                del node.attribute[:]
                node.attribute.append(helper.make_attribute("axis", axis))
    del m.graph.value_info[:]  # the identities' outputs are float now; shapes are inferred again
    return m


def channel_maxima(fp32_path: Path, names: list[str], frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel |max| of each named tensor of the FP32 model over ``frames`` (channel axis 1 of N×C×H×W tensors,
    the last of token tensors), with each tensor's rank under ``NAME#rank``."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    m = onnx.load(str(fp32_path))
    m.graph.output.extend([helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names])
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = sess.get_inputs()[0].name
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(frames), 64):
        for name, v in zip(names, sess.run(names, {feed: frames[i : i + 64].astype(np.float32)}), strict=True):
            axis = 1 if v.ndim == 4 else v.ndim - 1
            top = np.abs(v).max(axis=tuple(a for a in range(v.ndim) if a != axis))
            out[name] = np.maximum(out.get(name, 0), top)
            out[f"{name}#rank"] = v.ndim
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a bench_int8_backbones.py work folder of one model and seed")
    ap.add_argument("faces", type=Path, help="a synthetic set (edge-affect data synth) to judge on")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import onnx

    from edge_affect.export.compare import load_eval_set, near_ties
    from edge_affect.export.gates import export_split
    from edge_affect.export.onnx_export import run_onnx
    from edge_affect.models.checkpoint import load_checkpoint

    for need in (args.run / "train" / "best.pt", args.run / "export" / "model.int8.onnx", args.faces / "synth.json"):
        if not need.is_file():
            print(f"probe_int8_activations: {need}: no such file", file=sys.stderr)
            return 2
    _, meta = load_checkpoint(args.run / "train" / "best.pt")
    pp = meta.preprocess
    x = np.concatenate([load_eval_set(args.faces, pp, split).x for split in ("train", "val")])
    qdq = onnx.load(str(args.run / "export" / "model.int8.onnx"))
    names = sorted({q.input[0] for q in activation_quantizers(qdq)})
    groups: dict[str, set[str]] = {}
    for name in names:
        groups.setdefault(group_of(name), set()).add(name)
    backbone = {n for n in names if group_of(n) != "head"}
    ref = run_onnx(args.run / "export" / "model.onnx", x)
    decided = ~near_ties(ref["expr"])

    def agreement(model) -> dict:
        same = run_onnx(model, x, emulate_fp16_in_fp32=True)["expr"].argmax(1) == ref["expr"].argmax(1)
        return {"all": round(float(same.mean()), 4), "decided": round(float(same[decided].mean()), 4)}

    variants = {"as exported": set(), "off:backbone": backbone, "off:head": groups.get("head", set())}
    for g in sorted(k for k in groups if k != "head"):
        variants[f"only:{g}"] = backbone - groups[g]
        variants[f"off:{g}"] = groups[g]
    rows = []
    for label, off in variants.items():
        rows.append({"variant": label, "quantizers_off": len(off), **agreement(edited(qdq, off))})
        print(f"{label:16s} {len(off):3d} off  all {rows[-1]['all']:.4f}  decided {rows[-1]['decided']:.4f}", flush=True)
    maxima = channel_maxima(args.run / "export" / "model.onnx", names, export_split(args.run / "calib", pp).calib)
    rows.append({"variant": "per-channel", "quantizers_off": 0, **agreement(edited(qdq, set(), maxima))})
    print(f"{'per-channel':16s}   0 off  all {rows[-1]['all']:.4f}  decided {rows[-1]['decided']:.4f}")
    if args.json:
        from edge_affect.artifact import atomic_write_bytes

        doc = {
            "run": str(args.run),
            "faces": str(args.faces),
            "frames": int(len(x)),
            "near_tie_share": round(float(1 - decided.mean()), 4),
            "quantizers": {g: len(v) for g, v in sorted(groups.items())},
            "rows": rows,
        }
        atomic_write_bytes(args.json, (json.dumps(doc, indent=1) + "\n").encode())
        print(f"JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
