"""Triton Inference Server model repository entry: ``triton/<model>/config.pbtxt`` + ``1/<file>`` (the file name
Triton expects for the platform, ``formats.TRITON_FILES``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Annotated

from pydantic import Field, StrictInt, model_validator

from edge_affect.artifact import ArtifactMeta, atomic_write_text
from edge_affect.config import MAX_BATCH
from edge_affect.formats import TRITON_FILES, Format
from edge_affect.schema import INPUT_NAME, OUTPUT_DIMS, OUTPUT_NAMES
from edge_affect.validation import Settings

_Batch = Annotated[StrictInt, Field(ge=1, le=MAX_BATCH)]


class TritonSettings(Settings):
    """A Triton model's batching: ``max_batch_size`` and the preferred dynamic-batching sizes (each ≤ it)."""

    max_batch: _Batch
    preferred: list[_Batch]

    @model_validator(mode="after")
    def _within(self) -> TritonSettings:
        over = [p for p in self.preferred if p > self.max_batch]
        if over:
            raise ValueError(f"preferred batch {over[0]} exceeds max_batch {self.max_batch}, expected sizes ≤ it")
        return self


def triton_config(name: str, fmt: Format, meta: ArtifactMeta, max_batch: int, preferred: list[int]) -> str:
    """The ``config.pbtxt`` text for one model (batch dimension implicit, as Triton wants)."""
    TritonSettings.check({"max_batch": max_batch, "preferred": list(preferred)}, "Triton")
    s = meta.preprocess.input_size
    outs = ",\n".join(f'  {{ name: "{k}" data_type: TYPE_FP32 dims: [ {OUTPUT_DIMS[k]} ] }}' for k in OUTPUT_NAMES)
    pref = ", ".join(str(p) for p in preferred if 1 <= p <= max_batch) or str(max_batch)
    return (
        f'name: "{name}"\n'
        f'platform: "{fmt.triton_platform}"\n'
        f"max_batch_size: {max_batch}\n"
        f'input [\n  {{ name: "{INPUT_NAME}" data_type: TYPE_FP32 dims: [ 3, {s}, {s} ] }}\n]\n'
        f"output [\n{outs}\n]\n"
        f"dynamic_batching {{\n  preferred_batch_size: [ {pref} ]\n  max_queue_delay_microseconds: 1000\n}}\n"
        f'parameters {{ key: "edge_affect_precision" value: {{ string_value: "{meta.precision}" }} }}\n'
    )


def write_triton_repo(
    out_dir: Path, artifact: Path, fmt: Format, meta: ArtifactMeta, max_batch: int, preferred: list[int]
) -> Path:
    """Write ``out_dir/triton/<model>/`` for ``artifact``; returns the model folder."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", meta.model_name or "edge_affect") or "edge_affect"
    model_dir = out_dir / "triton" / name
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    target = version / TRITON_FILES[fmt.triton_platform]
    shutil.copyfile(artifact, target)
    atomic_write_text(model_dir / "config.pbtxt", triton_config(name, fmt, meta, max_batch, preferred))
    return model_dir
