"""The export folder as one transaction: ``out`` must be new, empty or an earlier export folder (holding only files
an export writes), the export is built in a temporary sibling, and the finished folder replaces ``out`` whole
(a TensorRT timing cache carried over), so a failure leaves the old folder and no other model's files survive."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edge_affect import formats
from edge_affect.export.calib_source import SAMPLED_DIR
from edge_affect.export.capture import CAPTURE_LOG
from edge_affect.formats import REPORT_JSON
from edge_affect.fsutil import TEMP_NAME, is_within, replace_dir

#: Kept across re-exports into the same folder (a TensorRT timing cache is not tied to one model).
CARRY_OVER = ("trt.timing.cache",)


#: Other files an export (or ``parity`` on its folder) writes there; a new one must be added here, or a
#: re-export into the folder is refused as holding something foreign.
OTHER_EXPORT_FILES = (
    "parity_report.json",
    "parity_report.md",
    CAPTURE_LOG,
    "triton",
    SAMPLED_DIR,  # frames sampled from the checkpoint's training data to calibrate it (calib_source)
)


def export_folder_names() -> set[str]:
    """Every name an export (or ``parity`` on its folder) writes into an export folder."""
    return formats.export_folder_names() | {*OTHER_EXPORT_FILES, *CARRY_OVER}


def foreign_entries(out: Path) -> list[str]:
    """Names in ``out`` that no export wrote (atomic-write leftovers ``.<name>.tmp-<pid>-<random>`` count as ours)."""
    known = export_folder_names()
    return sorted(
        p.name for p in out.iterdir() if p.name not in known and not (TEMP_NAME.match(p.name) and p.is_file())
    )


def check_out(out: Path, inputs: dict[str, Path | None] | None = None) -> None:
    """``out`` must be new, empty, or an export folder (``export_report.json`` and only export files), which is
    then replaced whole; it must not be or hold an input."""
    for opt, p in (inputs or {}).items():
        if p is not None and Path(p).exists() and is_within(p, out):
            raise ValueError(f"--out {out}: is or holds the {opt} {p}, expected a folder apart from the inputs")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    if out.is_dir():
        names = {p.name for p in out.iterdir()}
        if names and not names <= set(CARRY_OVER):
            foreign = foreign_entries(out)
            if foreign or REPORT_JSON not in names:
                what = (
                    f"holds {foreign[0]!r}, which edge-affect export did not write"
                    if foreign
                    else "has no " + REPORT_JSON
                )
                raise ValueError(
                    f"--out {out}: {what}, expected a new or empty folder or an earlier export folder "
                    "(which is replaced whole)"
                )
    parent = out.parent  # the folder the finished export is renamed into
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"output {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {parent} is not writable")


def replace_out(tmp: Path, out: Path, inputs: dict[str, Path | None]) -> None:
    """Swap the finished ``tmp`` in for ``out`` (whole), keeping ``CARRY_OVER`` files ``tmp`` lacks."""
    if out.is_dir():
        for name in CARRY_OVER:
            if (out / name).is_file() and not (tmp / name).exists():
                shutil.copy2(out / name, tmp / name)
    check_out(out, inputs)  # nothing foreign appeared while exporting
    replace_dir(tmp, out)
