"""The one table of artifact formats of an export folder: file name, precision, target, backend, the export step
that writes it and the parity gate that judges it.

Export, the runtime (which file runs a precision on a provider), parity, the demo, the Triton writer and the CLI
all read this table, so a file name or a target lives here and nowhere else. Ground floor: imports nothing of
edge_affect.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Where an artifact is meant to run: any backend, TensorRT (or ONNX Runtime's CUDA/TensorRT providers), or CPU.
TARGETS: tuple[str, ...] = ("any", "tensorrt", "cpu")
#: What each target means, for reports and the CLI ("which file is for which target").
TARGET_DESCRIPTIONS: dict[str, str] = {
    "any": "any backend (ONNX Runtime CPU/CUDA, TensorRT)",
    "tensorrt": "TensorRT / CUDA GPUs and Jetson (slow on CPUs)",
    "cpu": "ONNX Runtime on CPUs (integer kernels)",
}
#: Precisions an export folder offers (``--precision`` of run/bench).
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Format:
    """One artifact kind of an export folder."""

    key: str  # stable id: "onnx", "onnx-fp16", "onnx-int8", "onnx-int8-cpu", "engine-fp16", "engine-int8"
    filename: str
    precision: str  # fp32 | fp16 | int8
    target: str  # any | tensorrt | cpu (see TARGETS)
    backend: str  # onnxruntime | tensorrt (what loads the file)
    step: str  # the export step that writes it (its option in `edge-affect export`)
    gate: str  # the parity gate that judges it: fp32 | fp16 | int8 (``export.parity.Gates``)
    triton_platform: str
    source: str | None = None  # key of the ONNX an engine is built from

    @property
    def how(self) -> str:
        """The command that writes this file, for error messages."""
        return f"edge-affect export CKPT {self.step}".rstrip()


FORMATS: dict[str, Format] = {
    f.key: f
    for f in (
        Format("onnx", "model.onnx", "fp32", "any", "onnxruntime", "", "fp32", "onnxruntime_onnx"),
        Format("onnx-fp16", "model.fp16.onnx", "fp16", "tensorrt", "onnxruntime", "--fp16", "fp16", "onnxruntime_onnx"),
        Format("onnx-int8", "model.int8.onnx", "int8", "tensorrt", "onnxruntime", "--int8", "int8", "onnxruntime_onnx"),
        Format(
            "onnx-int8-cpu",
            "model.int8.cpu.onnx",
            "int8",
            "cpu",
            "onnxruntime",
            "--int8-target cpu",
            "int8",
            "onnxruntime_onnx",
        ),
        Format(
            "engine-fp16",
            "model.fp16.engine",
            "fp16",
            "tensorrt",
            "tensorrt",
            "--engine",
            "fp16",
            "tensorrt_plan",
            "onnx-fp16",
        ),
        Format(
            "engine-int8",
            "model.int8.engine",
            "int8",
            "tensorrt",
            "tensorrt",
            "--engine",
            "int8",
            "tensorrt_plan",
            "onnx-int8",
        ),
    )
}

#: Which typed ONNX an engine is built from (engine key → ONNX key).
ENGINE_SOURCE: dict[str, str] = {k: f.source for k, f in FORMATS.items() if f.source}
#: The file name Triton Inference Server expects in a model version folder, per platform.
TRITON_FILES: dict[str, str] = {"onnxruntime_onnx": FORMATS["onnx"].filename, "tensorrt_plan": "model.plan"}

#: ``ArtifactMeta.extra["int8_target"]`` of the CPU-native INT8 model.
INT8_TARGET_CPU = FORMATS["onnx-int8-cpu"].target

REPORT_JSON = "export_report.json"
REPORT_MD = "export_report.md"


def onnx_format_for(precision: str, target: str = "tensorrt") -> Format:
    """The ONNX format for ``precision`` (fp32, fp16 or int8); for int8, ``target`` picks TensorRT Q/DQ or CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if target not in TARGETS:
        raise ValueError(f"target {target!r} is not one of {', '.join(TARGETS)}")
    found = [f for f in FORMATS.values() if f.backend == "onnxruntime" and f.precision == precision]
    if len(found) > 1:
        found = [f for f in found if f.target == target] or found
    return found[0]


def onnx_format_for_provider(precision: str, on_cpu: bool) -> Format:
    """The ONNX file that runs ``precision`` well on ONNX Runtime: on the CPU provider INT8 is the CPU-native
    model (integer kernels; the TensorRT-shaped one is several times slower than FP32 there)."""
    return onnx_format_for(precision, "cpu" if on_cpu else "tensorrt")


def format_of(filename: str) -> Format | None:
    """The format of an export-folder file name, None for a name the table does not hold."""
    return next((f for f in FORMATS.values() if f.filename == filename), None)


def export_folder_names() -> set[str]:
    """Every file name an export folder may hold: the artifacts, engine sidecars and the reports."""
    names = {f.filename for f in FORMATS.values()}
    names |= {f"{f.filename}.json" for f in FORMATS.values() if f.backend == "tensorrt"}
    return names | {REPORT_JSON, REPORT_MD}
