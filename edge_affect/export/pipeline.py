"""``edge-affect export``: checkpoint → FP32/FP16/INT8 ONNX (+ engines, + Triton) with parity gates and a report.

Everything is produced in a temporary folder beside ``out`` (``.<name>.tmp-<pid>-…``) that replaces ``out``
whole only when all steps succeeded, so a failure never leaves half-written artifacts and a re-export never
leaves another model's FP16/INT8 files behind. ``out`` must be new, empty or an earlier export folder (holding
only files an export writes); anything else is refused. The next export removes temp folders of killed runs.
Each step is timed; the report (``export_report.json`` / ``.md``) records sizes, timings, the exporter used
and each parity gate.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_affect import formats
from edge_affect.artifact import atomic_write_text, sha256_file
from edge_affect.export.calib_source import SAMPLED_DIR, choose_calibration
from edge_affect.export.compare import (
    INT8_CPU_BACKEND,
    Comparison,
    Gates,
    compare_artifact,
    comparisons_markdown,
    flips_markdown,
    onnx_cpu_runner,
    sensor_noise_yardstick,
)
from edge_affect.export.folder import CARRY_OVER as CARRY_OVER  # public names, kept here too
from edge_affect.export.folder import OTHER_EXPORT_FILES as OTHER_EXPORT_FILES
from edge_affect.export.folder import check_out as _check_out
from edge_affect.export.folder import export_folder_names as export_folder_names
from edge_affect.export.folder import replace_out as _replace_out
from edge_affect.export.formats import ENGINE_SOURCE, FORMATS, OPSET, REPORT_JSON, REPORT_MD, format_of
from edge_affect.export.gates import DEFAULT_HOLDOUT, DEFAULT_SEED
from edge_affect.export.nncf_int8 import budget_markdown, check_max_drop
from edge_affect.export.precision import precision_markdown
from edge_affect.export.tensorrt_build import BatchRange, EngineOptions, check_dla
from edge_affect.export.tensorrt_int8.steps import int8_markdown, sensitivity_markdown
from edge_affect.fsutil import check_not_inputs, make_temp_dir

log = logging.getLogger(__name__)

#: Frames of the calibration set used for the FP32 export check (the INT8 scales come from the calibration side
#: of the gate split, the parity gates judge its held-out side: ``edge_affect.export.gates``).
CHECK_FRAMES = 32


@dataclass
class ExportRequest:
    """What ``edge-affect export`` was asked to produce."""

    checkpoint: Path
    out: Path
    fp16: bool = False
    int8: bool = False
    calib: Path | None = None  # None: the shipped default set
    engine: bool = False
    batch: BatchRange = field(default_factory=BatchRange)
    triton: bool = False
    exporter: str = "auto"
    workspace_mib: int = 1024
    version_compatible: bool = False
    dla_core: int | None = None
    gpu_fallback: bool = True  # DLA: layers DLA cannot run go to the GPU (False: the build fails instead)
    timing_cache: Path | None = None
    parity_frames: int | None = None  # None: every gate frame
    int8_exclude: list[str] = field(default_factory=list)  # op types / node names kept FP16 in the INT8 model
    # keep in FP16 also the K quantized nodes whose FP16 brings the INT8 model closest to the checkpoint on the
    # calibration frames (edge_affect.export.tensorrt_int8.sensitivity); 0: none
    int8_fallback: int = 0
    # ModelOpt activation calibration: "max" (default) or "entropy"
    int8_calib_method: str | None = None
    # quantize the stem convolution(s) reading the image too (default: they stay FP16, see int8.quantize_int8)
    int8_quantize_stem: bool = False
    # also write model.int8.cpu.onnx: ONNX Runtime-native INT8 for CPUs (edge_affect.export.cpu_int8)
    int8_cpu: bool = False
    # top-1 disagreement with FP32 (points) each INT8 model may have on the gate frames: for the CPU model NNCF's
    # accuracy-controlled quantization returns ops to FP32 until it holds (edge_affect.export.nncf_int8), for the
    # TensorRT one the sensitivity ranking's nodes go to FP16 (tensorrt_int8.steps); None: plain PTQ
    int8_max_drop: float | None = None
    # frames the gates judge (calibration folder, .npz, ABAW root); None: `gate_holdout` of the calibration
    # set, held out from calibration by a split seeded with `gate_seed` (edge_affect.export.gates)
    eval_data: Path | None = None
    eval_split: str = "val"
    gate_holdout: float = DEFAULT_HOLDOUT
    gate_seed: int = DEFAULT_SEED
    gates: Gates = field(default_factory=Gates)
    # quantization-aware fine-tune of the INT8 PTQ's own Q/DQ graph, after the PTQ (edge_affect.export.tensorrt_int8.qat.QatSettings,
    # qdq_torch.QdqGraph); None: PTQ only
    qat: Any = None


@dataclass
class ExportReport:
    """The outcome of one export (saved as ``export_report.json`` and ``.md``)."""

    checkpoint: str
    checkpoint_sha256: str
    out: str
    exporter: str = ""
    exporter_attempts: dict[str, str] = field(default_factory=dict)
    opset: int = OPSET
    calibration: dict[str, Any] = field(default_factory=dict)
    gate_frames: dict[str, Any] = field(default_factory=dict)  # which frames the gates judged (gates.py)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    # INT8 artifacts on the frames that set their scales: shown beside the gates, never gating
    calibration_figures: list[Comparison] = field(default_factory=list)
    qat: dict[str, Any] = field(default_factory=dict)  # the QAT fine-tune behind model.int8.onnx (qat.py)
    # --int8-fallback: the nodes kept FP16 and the sensitivity ranking that chose them (tensorrt_int8/steps.py)
    int8_fallback: dict[str, Any] = field(default_factory=dict)
    # the nodes the model's package keeps in FP16 in the TensorRT-shaped INT8 model (package --int8-keep-fp16)
    int8_package_fp16: dict[str, Any] = field(default_factory=dict)
    # --int8-max-drop: the budget, the drop measured, the ops kept in FP32 and their MAC share (nncf_int8.py)
    int8_budget: dict[str, Any] = field(default_factory=dict)
    # PyTorch FP32's own flips on the gate frames under one grey level of pixel noise (compare.sensor_noise_yardstick)
    noise_yardstick: dict[str, Any] = field(default_factory=dict)
    engines_skipped: str = ""
    triton: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons if not c.skipped)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["comparisons"] = [c.to_dict() for c in self.comparisons]
        d["calibration_figures"] = [c.to_dict() for c in self.calibration_figures]
        d["passed"] = self.passed
        return d

    def to_markdown(self) -> str:
        lines = [
            f"# Export report: {Path(self.out).name}",
            "",
            f"- checkpoint: `{self.checkpoint}` (sha256 `{self.checkpoint_sha256[:16]}…`)",
            f"- exporter: **{self.exporter}** (attempts: {self.exporter_attempts}), opset {self.opset}",
            f"- calibration: {self.calibration.get('dir', '')} ({self.calibration.get('frames', 0)} frames set the "
            f"INT8 scales; {self.calibration.get('source', '--calib')}"
            + (f" {self.calibration['data_root']}" if self.calibration.get("data_root") else "")
            + ")",
            f"- gate frames: {self.gate_frames.get('description', '')} — {self.gate_frames.get('source', '')}, "
            f"{self.gate_frames.get('count', 0)} frames, none of them a calibration frame "
            f"({self.gate_frames.get('duplicates_dropped', 0)} with a calibration frame's pixels left out)",
            f"- result: **{'PASS' if self.passed else 'FAIL'}**",
        ]
        if self.engines_skipped:
            lines.append(f"- TensorRT engines skipped: {self.engines_skipped}")
        if self.triton:
            lines.append(f"- Triton model: `{self.triton}`")
        lines += int8_markdown(self.int8_fallback, self.qat, self.int8_package_fp16)
        lines += ["", "## Artifacts", "", "| file | precision | for | size (KiB) | sha256 |", "|---|---|---|---|---|"]
        for name, a in self.artifacts.items():
            target = formats.TARGET_DESCRIPTIONS.get(a.get("target", ""), "")
            lines.append(
                f"| {name} | {a['precision']} | {target} | {a['size_bytes'] / 1024:.1f} | `{a['sha256'][:16]}…` |"
            )
        lines += ["", "## Step timings", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in self.timings_s.items()]
        lines += ["", "## Parity gates (vs PyTorch FP32, on the gate frames)", ""]
        lines += [comparisons_markdown(self.comparisons), ""]
        lines += flips_markdown(self.comparisons, yardstick=self.noise_yardstick)
        lines += sensitivity_markdown(self.int8_fallback)
        lines += budget_markdown(self.int8_budget)
        lines += precision_markdown(self.artifacts)
        if self.calibration_figures:
            lines += [
                "## INT8 on the calibration frames (shown beside, not gating: these frames set the scales)",
                "",
                comparisons_markdown(self.calibration_figures),
                "",
            ]
        if any(c.backend == INT8_CPU_BACKEND for c in self.comparisons):
            lines += [
                "INT8 on CPU runs the TensorRT-shaped Q/DQ graph node by node with its FP16 parts upcast to FP32: the "
                "graph's own definition, not ONNX Runtime's fused integer kernels (which requantize differently); "
                f"the FP16 numerics are gated by {FORMATS['onnx-fp16'].filename}, an engine on a GPU by `parity`. "
                "The gate frames are not calibration frames; rerun `edge-affect parity DIR --eval-data ROOT` on "
                "other data.",
                "",
            ]
        return "\n".join(lines)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("edge-affect", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "nvidia-modelopt", "tensorrt"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:
        import onnxruntime

        out["onnxruntime_module"] = onnxruntime.__version__  # onnxruntime and -gpu share one module folder
    except ImportError:
        pass
    return out


def _check_request(req: ExportRequest) -> None:
    """Numeric settings in range (the CLI checks its options too; this covers the Python API)."""
    for name, value, lo in (
        ("workspace_mib", req.workspace_mib, 1),
        ("parity_frames", req.parity_frames, 1),
        ("int8_fallback", req.int8_fallback, 0),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lo):
            raise ValueError(f"{name} {value!r}: out of range, expected an integer ≥ {lo}")
    if req.dla_core is not None and (not isinstance(req.dla_core, int) or req.dla_core < 0):
        raise ValueError(f"dla_core {req.dla_core!r}: out of range, expected a DLA core number ≥ 0")
    if req.engine:
        check_dla(req.batch, req.dla_core)  # refused before any work, also where engines would be skipped
    if req.qat is not None and not req.int8:
        raise ValueError(f"qat: fine-tunes for {FORMATS['onnx-int8'].filename}, expected int8 (--int8) with it")
    ignored = [  # options of the TensorRT INT8 model that the CPU INT8 model would silently ignore
        n
        for n, on in (
            ("int8_exclude", bool(req.int8_exclude)),
            ("int8_calib_method", req.int8_calib_method is not None),
            ("int8_quantize_stem", bool(req.int8_quantize_stem)),
        )
        if on
    ]
    if ignored and not req.int8:
        raise ValueError(
            f"{ignored[0]}: applies to {FORMATS['onnx-int8'].filename} only (the CPU INT8 model ignores it), "
            "expected int8 (--int8 or --int8-target tensorrt) with it"
        )
    if req.int8_fallback and not req.int8:
        raise ValueError(
            f"int8_fallback: keeps nodes of {FORMATS['onnx-int8'].filename} in FP16, expected int8 (--int8) with it"
        )
    if req.int8_max_drop is not None:
        check_max_drop(req.int8_max_drop, "int8_max_drop")
        if not (req.int8 or req.int8_cpu):
            raise ValueError(
                "int8_max_drop: budgets the INT8 models, expected int8 or int8_cpu (--int8, --int8-target) with it"
            )
        if req.int8_fallback and req.int8:
            raise ValueError(
                "int8_fallback: a count of FP16 nodes, int8_max_drop chooses that count for "
                f"{FORMATS['onnx-int8'].filename}; expected one of them"
            )
    if req.qat is not None:
        from edge_affect.export.tensorrt_int8.qat import check_settings

        check_settings(req.qat)


def export_all(req: ExportRequest) -> ExportReport:
    """Run the whole export described by ``req``; returns the report (also written to ``req.out``)."""
    from edge_affect.calibration import load_calibration, read_manifest
    from edge_affect.export.gates import select_gate_frames
    from edge_affect.export.onnx_export import export_onnx_detailed, run_torch
    from edge_affect.models import load_checkpoint

    out = Path(req.out)
    inputs = {"checkpoint": Path(req.checkpoint), "--calib": Path(req.calib) if req.calib is not None else None}
    if req.eval_data is not None:
        inputs["--eval-data"] = Path(req.eval_data)
    if req.qat is not None:
        inputs["--data"] = Path(req.qat.data)
    _check_request(req)
    _check_out(out, inputs)
    check_not_inputs({"--timing-cache": req.timing_cache}, inputs)  # TensorRT writes it back after a build
    timings: dict[str, float] = {}
    t = time.perf_counter()
    model, meta = load_checkpoint(req.checkpoint)
    timings["load_checkpoint"] = time.perf_counter() - t
    report = ExportReport(
        checkpoint=str(Path(req.checkpoint).resolve()), checkpoint_sha256=meta.checkpoint_sha256, out=str(out.resolve())
    )
    report.versions = _versions()

    t = time.perf_counter()
    source = choose_calibration(req.calib, Path(req.checkpoint), meta, out, req.int8 or req.int8_cpu)
    calib_dir = source.dir
    calib = load_calibration(calib_dir, meta.preprocess)
    manifest = read_manifest(calib_dir)
    if req.qat is not None:
        from edge_affect.export.tensorrt_int8.qat import check_not_gate_frames

        check_not_gate_frames(req.qat, req.eval_data, req.eval_split, calib_dir, manifest)
    frames = select_gate_frames(
        calib_dir,
        manifest,
        calib,
        meta.preprocess,
        eval_data=req.eval_data,
        eval_split=req.eval_split,
        holdout=req.gate_holdout,
        seed=req.gate_seed,
        limit=req.parity_frames,
    )
    calib, ev = frames.calib, frames.gate  # INT8 scales from `calib` only; the gates judge `ev`
    report.calibration = {
        "dir": str(calib_dir),
        "name": manifest.get("name", ""),
        "frames": int(len(calib)),
        "frames_in_set": int(len(manifest["files"])),
        **source.info(),
    }
    report.gate_frames = frames.info
    timings["load_calibration"] = time.perf_counter() - t

    fp16 = req.fp16 or (req.engine and not req.int8)  # an engine needs a typed ONNX
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out)  # also removes the temp folders of killed exports into `out`
    try:
        fp32_path = tmp / FORMATS["onnx"].filename
        res = export_onnx_detailed(
            model, meta, fp32_path, opset=OPSET, exporter=req.exporter, sample=calib[:CHECK_FRAMES]
        )
        report.exporter, report.exporter_attempts = res.exporter, res.attempts
        timings.update({f"onnx_{k}": v for k, v in res.seconds.items()})
        if fp16:
            from edge_affect.export.fp16 import convert_fp16

            t = time.perf_counter()
            _, used = convert_fp16(fp32_path, tmp / FORMATS["onnx-fp16"].filename)
            timings["fp16_convert"] = time.perf_counter() - t
        ptq_path = None
        if req.int8:
            from edge_affect.export.tensorrt_int8.steps import build_int8, package_fp16_record

            int8_path = tmp / FORMATS["onnx-int8"].filename
            report.int8_package_fp16 = package_fp16_record(meta, fp32_path)
            report.int8_fallback, report.qat, ptq_path = build_int8(
                req, model, meta, fp32_path, int8_path, calib, report.calibration, timings, gate=ev.x
            )
        if req.int8_cpu:
            from edge_affect.export.cpu_int8 import quantize_cpu_int8

            t = time.perf_counter()
            if req.int8_max_drop is not None:  # NNCF, measured on the gate frames (the report says so)
                from edge_affect.export.nncf_int8 import quantize_cpu_nncf

                dst = tmp / FORMATS["onnx-int8-cpu"].filename
                report.int8_budget = quantize_cpu_nncf(
                    fp32_path, dst, calib, ev.x, req.int8_max_drop, calib_info=report.calibration
                )
            else:
                quantize_cpu_int8(
                    fp32_path, tmp / FORMATS["onnx-int8-cpu"].filename, calib, None, calib_info=report.calibration
                )
            timings["int8_cpu_quantize"] = time.perf_counter() - t

        # parity of every ONNX artifact on the gate frames (never the calibration frames)
        t = time.perf_counter()
        ref = run_torch(model, ev.x)
        ref_calib = None
        onnx_files = [(k, f.filename, f.gate) for k, f in FORMATS.items() if f.backend == "onnxruntime"]
        for key, name, precision in onnx_files:
            p = tmp / name
            if p.is_file():
                tk = time.perf_counter()
                backend, runner = onnx_cpu_runner(p, precision)
                args = (name, precision, backend, runner)
                report.comparisons.append(compare_artifact(*args, ref, ev, meta.au_thresholds, req.gates))
                if precision == "int8":  # beside: the same artifact on the frames that set its scales
                    ref_calib = run_torch(model, calib) if ref_calib is None else ref_calib
                    c = compare_artifact(*args, ref_calib, frames.calib_eval, meta.au_thresholds, req.gates)
                    report.calibration_figures.append(c)
                timings[f"parity_{key}"] = time.perf_counter() - tk
        if ref_calib is not None:  # an INT8 model was gated: its flips beside the reference's under a camera's noise
            report.noise_yardstick = sensor_noise_yardstick(lambda z: run_torch(model, z), ref, ev.x, meta.preprocess)
        if report.qat and ptq_path is not None:  # before/after on the same gate frames, recorded, never gating
            backend, runner = onnx_cpu_runner(ptq_path, "int8")
            c = compare_artifact("PTQ before QAT", "int8", backend, runner, ref, ev, meta.au_thresholds, req.gates)
            report.qat["ptq_on_gate_frames"] = {
                "n": c.n,
                **{g.name: round(float(g.value), 5) for g in c.gates},
                "expr_top1_flipped": int(c.stats.get("expr_top1_flipped", -1)),
            }
        shutil.rmtree(tmp / ".qat", ignore_errors=True)
        timings["parity"] = time.perf_counter() - t

        if req.engine:
            _build_engines(req, tmp, out, meta, report, timings, ref, ev)
        if req.triton:
            _write_triton(req, tmp, report)

        for f in sorted(tmp.iterdir()):
            if f.is_file():
                fmt = format_of(f.name)
                if fmt is not None:
                    report.artifacts[f.name] = {
                        "precision": fmt.precision,
                        "target": fmt.target,
                        "size_bytes": f.stat().st_size,
                        "sha256": sha256_file(f),
                    }
        _record_kept_in_float(req, report, fp32_path, tmp)
        if source.keep_in(tmp) is not None:  # the sampled frames stay with the export (parity re-reads its gates)
            for d in (report.calibration, report.gate_frames):
                if d.get("dir") == str(calib_dir):
                    d["dir"] = str((out / SAMPLED_DIR).resolve())
        report.timings_s = {k: round(v, 3) for k, v in timings.items()}
        atomic_write_text(tmp / REPORT_JSON, json.dumps(report.to_dict(), indent=1, allow_nan=True) + "\n")
        atomic_write_text(tmp / REPORT_MD, report.to_markdown())
        _replace_out(tmp, out, inputs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        source.discard()
    log.info("export to %s: %s", out, "PASS" if report.passed else "FAIL")
    return report


def _record_kept_in_float(req: ExportRequest, report: ExportReport, fp32_path: Path, tmp: Path) -> None:
    """Record in ``report.artifacts`` what each INT8 model written in ``tmp`` computes in float, read from its graph,
    with why (``precision.kept_in_float``): every reason, not only the options that chose nodes."""
    import onnx

    from edge_affect.export.onnx_export import read_onnx_meta, stem_nodes
    from edge_affect.export.precision import kept_in_float, node_macs

    files = [(k, tmp / FORMATS[k].filename) for k in ("onnx-int8", "onnx-int8-cpu")]
    files = [(k, p) for k, p in files if p.is_file()]
    if not files:
        return
    fp32 = onnx.load(str(fp32_path))
    macs = node_macs(fp32)
    fb = report.int8_fallback
    fb_option = "--int8-max-drop" if "max_drop_points" in fb else f"--int8-fallback {fb.get('k', '')}"
    asked = {  # the first reason that names a node wins
        "onnx-int8": [
            ([] if req.int8_quantize_stem else stem_nodes(fp32), "the stem (FP16 unless --int8-quantize-stem)"),
            (report.int8_package_fp16.get("kept_fp16", []), "the package's int8_keep_fp16"),
            (req.int8_exclude, "--int8-exclude"),
            (fb.get("kept_fp16", []), f"{fb_option} (sensitivity ranking)"),
        ],
        # NNCF's record holds every float op of its result, its own placement included: named together
        "onnx-int8-cpu": [
            (report.int8_budget.get("kept_float", []), "--int8-max-drop (NNCF accuracy control and its own placement)")
        ],
    }
    for key, path in files:
        reasons: dict[str, str] = {}
        for names, why in asked[key]:
            for n in names:
                reasons.setdefault(n, why)
        model = onnx.load(str(path))
        quantizer = str(read_onnx_meta(model).extra.get("quantizer", ""))
        record = kept_in_float(model, macs, reasons, quantizer)
        report.artifacts[path.name]["kept_in_float"] = record
        log.info(
            "%s: %d of %d compute ops in float (%.1f %% of the multiply-accumulates)",
            path.name,
            record["kept"],
            record["compute_ops"],
            100 * record["mac_share"],
        )


def _build_engines(
    req: ExportRequest,
    tmp: Path,
    out: Path,
    meta: Any,
    report: ExportReport,
    timings: dict[str, float],
    ref: Any,
    ev: Any,
) -> None:
    from edge_affect.export.onnx_export import read_onnx_meta
    from edge_affect.export.tensorrt_build import (
        build_engine,
        default_timing_cache,
        tensorrt_unavailable_reason,
        trt_run,
    )

    why = tensorrt_unavailable_reason()
    if why:
        report.engines_skipped = why
        log.warning("TensorRT engines skipped: %s; ONNX artifacts are still written", why)
        return
    opts = EngineOptions(
        batch=req.batch,
        workspace_mib=req.workspace_mib,
        timing_cache=req.timing_cache or default_timing_cache(out),
        version_compatible=req.version_compatible,
        dla_core=req.dla_core,
        gpu_fallback=req.gpu_fallback,
    )
    if opts.timing_cache is not None:
        opts.timing_cache.parent.mkdir(parents=True, exist_ok=True)
    for key, src_key in ENGINE_SOURCE.items():
        src = tmp / FORMATS[src_key].filename
        if not src.is_file():
            continue
        t = time.perf_counter()
        engine = build_engine(src, tmp / FORMATS[key].filename, opts, read_onnx_meta(src))
        timings[f"engine_{FORMATS[key].precision}"] = time.perf_counter() - t
        report.comparisons.append(
            compare_artifact(
                engine.name,
                FORMATS[key].precision,
                "tensorrt",
                lambda x, e=engine: trt_run(e, x),
                ref,
                ev,
                meta.au_thresholds,
                req.gates,
            )
        )


def _write_triton(req: ExportRequest, tmp: Path, report: ExportReport) -> None:
    from edge_affect.export.onnx_export import read_onnx_meta
    from edge_affect.export.triton import write_triton_repo

    order = ("engine-int8", "engine-fp16", "onnx")  # the fastest artifact that exists
    key = next(k for k in order if (tmp / FORMATS[k].filename).is_file())
    art = tmp / FORMATS[key].filename
    meta = read_onnx_meta(tmp / FORMATS["onnx"].filename)
    if FORMATS[key].backend == "tensorrt":
        meta = read_onnx_meta(tmp / FORMATS[ENGINE_SOURCE[key]].filename)
    b = req.batch
    d = write_triton_repo(tmp, art, FORMATS[key], meta, b.max, sorted({b.opt, b.max}))
    report.triton = str(Path(req.out) / d.relative_to(tmp))
