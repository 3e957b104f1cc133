"""An INT8 Q/DQ ONNX graph as a trainable PyTorch module (the QAT route of ``edge_affect.export.tensorrt_int8.qat``).

``QdqGraph(model)`` runs the graph ``int8.quantize_int8`` wrote (ModelOpt's placement of every Q/DQ pair,
its activation scales, BatchNorm already folded into the convolutions) op by op in PyTorch, in FP32 — the
arithmetic ``onnxruntime`` runs for the parity gates (``onnx_export.upcast_fp16``). Each ``QuantizeLinear``
→ ``DequantizeLinear`` pair is a fake quantizer with a straight-through gradient: signed int8, zero point 0,
activations at a per-tensor scale that starts at the graph's own and is trained too when asked
(``learn_act_scales``: log-scales, LSQ gradients), weights per output channel at ``amax / 127`` of the
current weights (what ModelOpt computes from a weight). The float initializers (weights, biases,
LayerNorm parameters, embeddings) are the trainable parameters; ``write_back`` puts them, and the weight
scales that go with them (and the trained activation scales), into a copy of the graph in their original
dtypes, leaving every node and every zero point as it was: the fine-tuned model is the graph it was trained as.

Only the ops the registered models export to are implemented; any other op is refused by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_FLOAT_TYPES = (1, 10)  # onnx TensorProto FLOAT, FLOAT16


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _np_dtype_to_torch(code: int) -> Any:
    import torch

    return {
        1: torch.float32,
        10: torch.float32,  # FLOAT16: FP32 here, as the CPU parity runs it
        11: torch.float64,
        6: torch.int32,
        7: torch.int64,
        9: torch.bool,
        3: torch.int8,
        2: torch.uint8,
    }[code]


def fake_quant(x: Any, scale: Any, axis: int | None) -> Any:
    """``DequantizeLinear(QuantizeLinear(x))`` (signed int8, zero point 0, round half to even) with the
    straight-through gradient: to ``x`` inside the int8 range (none where clipped), to ``scale`` as in LSQ
    (``round(x/s) - x/s`` inside, the bound outside)."""
    import torch

    if axis is not None and scale.ndim == 1 and x.ndim > 1:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        scale = scale.reshape(shape)
    v = torch.clamp(x / scale, -128.0, 127.0)
    return (v + (torch.round(v) - v).detach()) * scale


#: FP16's largest finite value and smallest subnormal (2^-24).
_FP16_MAX, _FP16_TINY = 65504.0, 2.0**-24


def to_fp16(a: np.ndarray) -> np.ndarray:
    """FP32 → FP16 as ModelOpt's AutoCast converts an initializer (``PrecisionConverter._convert_initializer_data``):
    clamped to ±65504, every non-zero magnitude below FP16's smallest subnormal replaced by +2^-24 (the sign is
    not kept, as there), then rounded to nearest. A plain cast would give 0 for those, so a written-back FP16
    weight would differ from the one the graph was made with."""
    a = np.clip(np.asarray(a, dtype=np.float32), -_FP16_MAX, _FP16_MAX)
    return np.where((a != 0) & (np.abs(a) < _FP16_TINY), np.float32(_FP16_TINY), a).astype(np.float16)


def _fp16_round(x: Any) -> Any:
    """``to_fp16`` in torch, back in FP32, with a straight-through gradient (both are checked against the same
    values in tests/export/test_qat.py)."""
    import torch

    with torch.no_grad():  # on the weights' own device: this runs for every FP16 parameter at every QAT step
        y = x.clamp(-_FP16_MAX, _FP16_MAX)
        y = torch.where((y != 0) & (y.abs() < _FP16_TINY), torch.full_like(y, _FP16_TINY), y).half().float()
    return y + (x - x.detach())  # exactly y; the gradient reaches x unchanged


class QdqGraph:
    """Torch evaluation of a Q/DQ ONNX graph (see the module docstring).

    ``weights()``: the float initializers that train (Q/DQ scales and zero points, scalars and integer
    tensors stay constant). ``act_scales()``: log-scales of the activation quantizers, trainable (LSQ) when
    ``learn_act_scales``; otherwise the calibrated scales stay fixed. Weight scales always follow the weights.
    """

    def __init__(self, model: Any, learn_act_scales: bool = False, master: dict[str, np.ndarray] | None = None) -> None:
        import onnx
        import torch
        from onnx import numpy_helper

        self._onnx = onnx
        self.model = model
        g = model.graph
        init_names = {t.name for t in g.initializer}
        self.inputs = [i.name for i in g.input if i.name not in init_names]
        if len(self.inputs) != 1:
            raise ValueError(f"QAT: the graph has inputs {self.inputs}, expected one image input")
        self.outputs = [o.name for o in g.output]
        self.dtypes = {t.name: t.data_type for t in g.initializer}
        for n in g.node:
            if n.op_type not in _OPS and n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                raise ValueError(f"QAT: ONNX op {n.op_type} (node {n.name!r}) is not implemented in qdq_torch")
        tensors: dict[str, Any] = {}
        for t in g.initializer:
            a = numpy_helper.to_array(t)
            dt = np.float32 if t.data_type in _FLOAT_TYPES else a.dtype
            tensors[t.name] = torch.from_numpy(np.array(a, dtype=dt, copy=True))
        producer = {o: n for n in g.node for o in n.output}
        qdq_aux: set[str] = set()
        # QuantizeLinear output → ("weight", weight initializer, axis) or ("act", key of its log-scale, None)
        self.quant: dict[str, tuple[str, str, int | None]] = {}
        self.scale_names: dict[str, list[str]] = {}  # Q output → the scale initializers of the Q and its DQs
        self.log_scales: dict[str, Any] = {}
        for n in g.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                qdq_aux.update(n.input[1:])
            if n.op_type == "DequantizeLinear":
                q = producer.get(n.input[0])
                if q is None or q.op_type != "QuantizeLinear":
                    raise ValueError(f"QAT: DequantizeLinear {n.name!r} does not follow a QuantizeLinear")
                self.scale_names.setdefault(q.output[0], []).append(n.input[1])
        for n in g.node:
            if n.op_type != "QuantizeLinear":
                continue
            self.scale_names.setdefault(n.output[0], []).insert(0, n.input[1])
            if n.input[1] not in tensors:
                raise ValueError(f"QAT: QuantizeLinear {n.name!r} has no constant scale")
            axis = int(_attrs(n).get("axis", 1))
            src = n.input[0]
            if src in tensors and self.dtypes[src] in _FLOAT_TYPES:
                self.quant[n.output[0]] = ("weight", src, axis)
            else:
                scale = tensors[n.input[1]]
                if scale.numel() != 1:
                    raise ValueError(f"QAT: activation QuantizeLinear {n.name!r} is not per tensor")
                self.log_scales[n.output[0]] = torch.nn.Parameter(
                    scale.reshape(()).clamp_min(1e-12).log().clone(), requires_grad=learn_act_scales
                )
                self.quant[n.output[0]] = ("act", n.output[0], None)
        self.initial_log_scales = {k: float(v.detach()) for k, v in self.log_scales.items()}
        self.params: dict[str, Any] = {}
        self.consts: dict[str, Any] = {}
        master = master or {}
        for name, v in tensors.items():
            if self.dtypes[name] in _FLOAT_TYPES and name not in qdq_aux and v.numel() > 1:
                m32 = master.get(name)
                if m32 is not None and tuple(m32.shape) == tuple(v.shape):
                    v = torch.from_numpy(np.array(m32, dtype=np.float32))  # FP32 master of an FP16 initializer
                self.params[name] = torch.nn.Parameter(v.clone())
            else:
                self.consts[name] = v
        # the forward plan, parsed once: (op type, op, inputs, outputs, attributes) per node; Constant nodes are
        # evaluated here and their outputs join the constants
        self.plan: list[tuple[str, Any, list[str], list[str], dict[str, Any]]] = []
        for n in g.node:
            at = _attrs(n)
            if n.op_type == "Constant":
                self.consts[n.output[0]] = _OPS["Constant"]([], at)
                continue
            fn = None if n.op_type in ("QuantizeLinear", "DequantizeLinear") else _OPS[n.op_type]
            self.plan.append((n.op_type, fn, list(n.input), list(n.output), at))

    def weights(self) -> list[Any]:
        return list(self.params.values())

    def act_scales(self) -> list[Any]:
        return list(self.log_scales.values())

    def act_scale_change(self) -> float:
        """Largest relative change of an activation scale from its calibrated value (0 when fixed)."""
        d = [abs(float(p.detach()) - self.initial_log_scales[k]) for k, p in self.log_scales.items()]
        return float(np.expm1(max(d, default=0.0)))

    def _param(self, name: str) -> Any:
        p = self.params[name]
        return _fp16_round(p) if self.dtypes[name] == 10 else p

    def weight_scale(self, name: str, axis: int) -> Any:
        """Per-channel ``amax / 127`` of weight ``name`` along ``axis``, no gradient: as ModelOpt sets it, from the
        FP32 weight (the master copy), stored in the initializer's dtype."""
        import torch

        w = self.params[name].detach()
        dims = [d for d in range(w.ndim) if d != axis % w.ndim]
        amax = w.abs().amax(dim=dims) if dims else w.abs()
        s = torch.clamp(amax, min=1e-8) / 127.0
        return _fp16_round(s) if self.dtypes[name] == 10 else s

    def __call__(self, x: Any) -> dict[str, Any]:
        env: dict[str, Any] = {self.inputs[0]: x}
        pending: dict[str, tuple[Any, Any, int | None]] = {}

        def val(name: str) -> Any:
            if name == "":
                return None
            if name in env:
                return env[name]
            if name in self.params:
                return self._param(name)
            return self.consts[name]

        for op_type, fn, inputs, outputs, at in self.plan:
            if op_type == "QuantizeLinear":
                kind, key, axis = self.quant[outputs[0]]
                if kind == "weight":
                    scale = self.weight_scale(key, axis)
                    pending[outputs[0]] = (val(inputs[0]), scale, axis if scale.numel() > 1 else None)
                else:
                    pending[outputs[0]] = (val(inputs[0]), self.log_scales[key].exp(), None)
                continue
            if op_type == "DequantizeLinear":
                env[outputs[0]] = fake_quant(*pending[inputs[0]])
                continue
            outs = fn([val(i) for i in inputs], at)
            for name, v in zip(outputs, outs if isinstance(outs, tuple) else (outs,), strict=False):
                env[name] = v
        return {name: val(name) for name in self.outputs}

    def write_back(self) -> Any:
        """A copy of the ONNX model with the trained initializers and the scales that go with them (weight scales
        from the trained weights, activation scales as trained or calibrated), each in its original dtype."""
        from onnx import numpy_helper

        m = self._onnx.ModelProto()
        m.CopyFrom(self.model)
        new: dict[str, np.ndarray] = {name: p.detach().cpu().numpy() for name, p in self.params.items()}
        for qout, (kind, key, axis) in self.quant.items():
            if kind == "weight":
                s = self.weight_scale(key, int(axis or 0)).cpu().numpy()
            else:
                s = self.log_scales[key].detach().exp().cpu().numpy()
            for name in self.scale_names[qout]:
                new[name] = s
        for t in m.graph.initializer:
            if t.name in new:
                arr = to_fp16(new[t.name]) if t.data_type == 10 else new[t.name].astype(np.float32)
                arr = arr.reshape(numpy_helper.to_array(t).shape)
                t.CopyFrom(numpy_helper.from_array(arr, t.name))
        return m


# ---- ops -------------------------------------------------------------------------------------------------


def _ints(t: Any) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()]


def _conv(a: list[Any], at: dict[str, Any]) -> Any:
    import torch.nn.functional as F

    x, w, b = a[0], a[1], a[2] if len(a) > 2 else None
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError("QAT: Conv auto_pad is not implemented")
    pads = at.get("pads", [0] * (2 * (w.ndim - 2)))
    k = len(pads) // 2
    if pads[:k] != pads[k:]:
        x = F.pad(x, [v for i in reversed(range(k)) for v in (pads[i], pads[i + k])])
        pads = [0] * (2 * k)
    return F.conv2d(
        x,
        w,
        b,
        stride=at.get("strides", 1),
        padding=pads[:k],
        dilation=at.get("dilations", 1),
        groups=at.get("group", 1),
    )


def _gemm(a: list[Any], at: dict[str, Any]) -> Any:
    x, w = a[0], a[1]
    if at.get("transA", 0):
        x = x.transpose(-1, -2)
    if at.get("transB", 0):
        w = w.transpose(-1, -2)
    y = at.get("alpha", 1.0) * (x @ w)
    if len(a) > 2 and a[2] is not None:
        y = y + at.get("beta", 1.0) * a[2]
    return y


def _gather(a: list[Any], at: dict[str, Any]) -> Any:
    data, idx = a
    axis = at.get("axis", 0) % data.ndim
    idx = idx.long()
    idx = idx + (idx < 0).long() * data.shape[axis]  # negative indices count from the end
    out = data.index_select(axis, idx.reshape(-1))
    return out.reshape((*data.shape[:axis], *idx.shape, *data.shape[axis + 1 :]))


def _slice(a: list[Any], at: dict[str, Any]) -> Any:
    x, starts, ends = a[0], _ints(a[1]), _ints(a[2])
    axes = _ints(a[3]) if len(a) > 3 and a[3] is not None else list(range(len(starts)))
    steps = _ints(a[4]) if len(a) > 4 and a[4] is not None else [1] * len(starts)
    sl = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        dim = x.shape[ax]
        if st < 0:
            raise ValueError("QAT: Slice with a negative step is not implemented")
        s = max(0, min(dim, s + dim if s < 0 else s))
        e = max(0, min(dim, e + dim if e < 0 else e))
        sl[ax % x.ndim] = slice(s, e, st)
    return x[tuple(sl)]


def _reshape(a: list[Any], at: dict[str, Any]) -> Any:
    x, shape = a[0], _ints(a[1])
    shape = [x.shape[i] if s == 0 and not at.get("allowzero", 0) else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _unsqueeze(a: list[Any], at: dict[str, Any]) -> Any:
    x = a[0]
    axes = _ints(a[1]) if len(a) > 1 else list(at["axes"])
    r = x.ndim + len(axes)
    for ax in sorted(v % r for v in axes):
        x = x.unsqueeze(ax)
    return x


def _squeeze(a: list[Any], at: dict[str, Any]) -> Any:
    x = a[0]
    axes = _ints(a[1]) if len(a) > 1 and a[1] is not None else at.get("axes")
    if axes is None:
        return x.squeeze()
    for ax in sorted((v % x.ndim for v in axes), reverse=True):
        x = x.squeeze(ax)
    return x


def _reduce_mean(a: list[Any], at: dict[str, Any]) -> Any:
    x = a[0]
    axes = _ints(a[1]) if len(a) > 1 and a[1] is not None else at.get("axes")
    keep = bool(at.get("keepdims", 1))
    if axes is None:
        return x.mean(dim=list(range(x.ndim)), keepdim=keep)
    return x.mean(dim=[v % x.ndim for v in axes], keepdim=keep)


def _layer_norm(a: list[Any], at: dict[str, Any]) -> Any:
    import torch.nn.functional as F

    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else None
    axis = at.get("axis", -1) % x.ndim
    return F.layer_norm(x, x.shape[axis:], w, b, eps=at.get("epsilon", 1e-5))


def _softmax(a: list[Any], at: dict[str, Any]) -> Any:
    return a[0].softmax(dim=at.get("axis", -1))


def _cast(a: list[Any], at: dict[str, Any]) -> Any:
    return a[0].to(_np_dtype_to_torch(at["to"]))


def _constant(a: list[Any], at: dict[str, Any]) -> Any:
    import torch

    v = at["value"]
    from onnx import numpy_helper

    arr = numpy_helper.to_array(v)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return torch.from_numpy(np.array(arr))


def _constant_of_shape(a: list[Any], at: dict[str, Any]) -> Any:
    import torch
    from onnx import numpy_helper

    v = at.get("value")
    fill = numpy_helper.to_array(v) if v is not None else np.zeros(1, np.float32)
    if fill.dtype == np.float16:
        fill = fill.astype(np.float32)
    return torch.full(_ints(a[0]), fill.reshape(-1)[0].item(), dtype=torch.from_numpy(np.array(fill)).dtype)


def _expand(a: list[Any], at: dict[str, Any]) -> Any:
    import torch

    return a[0].expand(torch.broadcast_shapes(a[0].shape, tuple(_ints(a[1]))))


def _pool(kind: str) -> Any:
    def f(a: list[Any], at: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        k = at["kernel_shape"]
        pads = at.get("pads", [0] * 2 * len(k))
        n = len(k)
        if pads[:n] != pads[n:]:
            raise ValueError(f"QAT: asymmetric {kind} padding is not implemented")
        s = at.get("strides", [1] * n)
        if kind == "max":
            return F.max_pool2d(a[0], k, s, pads[:n], ceil_mode=bool(at.get("ceil_mode", 0)))
        return F.avg_pool2d(
            a[0],
            k,
            s,
            pads[:n],
            ceil_mode=bool(at.get("ceil_mode", 0)),
            count_include_pad=bool(at.get("count_include_pad", 0)),
        )

    return f


def _binary(fn: Any) -> Any:
    return lambda a, at: fn(a[0], a[1])


def _make_ops() -> dict[str, Any]:
    import torch

    return {
        "Add": _binary(torch.add),
        "Sub": _binary(torch.sub),
        "Mul": _binary(torch.mul),
        "Div": lambda a, at: (
            a[0] / a[1] if a[0].dtype.is_floating_point else torch.div(a[0], a[1], rounding_mode="trunc")
        ),
        "Pow": _binary(torch.pow),
        "Sqrt": lambda a, at: torch.sqrt(a[0]),
        "Equal": _binary(torch.eq),
        "Where": lambda a, at: torch.where(a[0], a[1], a[2]),
        "MatMul": _binary(torch.matmul),
        "Gemm": _gemm,
        "Conv": _conv,
        "Relu": lambda a, at: torch.relu(a[0]),
        "Sigmoid": lambda a, at: torch.sigmoid(a[0]),
        "Tanh": lambda a, at: torch.tanh(a[0]),
        "Erf": lambda a, at: torch.erf(a[0]),
        "HardSigmoid": lambda a, at: torch.clamp(at.get("alpha", 0.2) * a[0] + at.get("beta", 0.5), 0, 1),
        "HardSwish": lambda a, at: a[0] * torch.clamp(a[0] / 6 + 0.5, 0, 1),
        "Clip": lambda a, at: torch.clamp(
            a[0], a[1] if len(a) > 1 and a[1] is not None else None, a[2] if len(a) > 2 and a[2] is not None else None
        ),
        "Softmax": _softmax,
        "LayerNormalization": _layer_norm,
        "ReduceMean": _reduce_mean,
        "GlobalAveragePool": lambda a, at: a[0].mean(dim=list(range(2, a[0].ndim)), keepdim=True),
        "MaxPool": _pool("max"),
        "AveragePool": _pool("avg"),
        "Transpose": lambda a, at: a[0].permute(*(at.get("perm") or reversed(range(a[0].ndim)))),
        "Reshape": _reshape,
        "Flatten": lambda a, at: a[0].reshape(
            int(np.prod(a[0].shape[: at.get("axis", 1)])) if at.get("axis", 1) else 1, -1
        ),
        "Unsqueeze": _unsqueeze,
        "Squeeze": _squeeze,
        "Concat": lambda a, at: torch.cat(a, dim=at["axis"]),
        "Shape": lambda a, at: torch.tensor(a[0].shape[at.get("start", 0) : at.get("end")], dtype=torch.int64),
        "Gather": _gather,
        "Slice": _slice,
        "Cast": _cast,
        "Constant": _constant,
        "ConstantOfShape": _constant_of_shape,
        "Expand": _expand,
        "Identity": lambda a, at: a[0],
    }


class _LazyOps(dict):
    def _fill(self) -> None:
        if not super().__len__():
            self.update(_make_ops())

    def __contains__(self, k: object) -> bool:
        self._fill()
        return super().__contains__(k)

    def __getitem__(self, k: str) -> Any:
        self._fill()
        return super().__getitem__(k)


_OPS: dict[str, Any] = _LazyOps()
