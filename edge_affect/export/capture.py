"""Third-party output of an export step (ModelOpt, ONNX Runtime's calibrators) captured into a log file.

ModelOpt's INT8 PTQ with entropy calibration prints "Collecting tensor data and making histogram ..." and a
tqdm bar per calibration batch (ONNX Runtime's ``HistogramCollector``: 512 of each for the default model),
and each ModelOpt warning reaches the terminal twice (its own stdout handler, then the root logger). While a
step runs, ``capture_output`` sends Python's ``sys.stdout``/``sys.stderr``, the process's file descriptors 1
and 2 (C++ output) and ModelOpt's log records to one log file; afterwards the caller logs one summary line.
On a terminal a single status line (step name and elapsed seconds) shows the step is alive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: The log file, in the export folder, that captured steps append to.
CAPTURE_LOG = "quantize.log"
#: Loggers whose records go to the log file (not the terminal) while a step is captured.
THIRD_PARTY_LOGGERS = ("modelopt",)
#: Lines of captured output repeated in the error log when the step fails (the log file goes with the
#: export's temporary folder).
TAIL_ON_ERROR = 15


@dataclass
class Captured:
    """What one captured step wrote: the log file, its line count, its unique warnings and its duration."""

    path: Path
    step: str
    lines: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the export log, e.g. ``INT8 PTQ: 14.2 s; 1,031 lines of output, 3 warnings → quantize.log``."""
        w = f", {len(self.warnings)} warning{'s' * (len(self.warnings) != 1)}" if self.warnings else ""
        lines = f"{self.lines:,} line{'s' * (self.lines != 1)}"
        return f"{self.step}: {self.seconds:.1f} s; {lines} of output{w} → {self.path.name}"


class _Collect(logging.Handler):
    """Writes third-party records to the log file and keeps each distinct warning once."""

    def __init__(self, stream, cap: Captured) -> None:
        super().__init__(logging.DEBUG)
        self.stream, self.cap = stream, cap
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def _echoed(self, record: logging.LogRecord) -> bool:
        """True when one of the library's own handlers already writes ``record`` to the capture file."""
        lg: logging.Logger | None = logging.getLogger(record.name)
        while lg is not None:
            if any(getattr(h, "stream", None) is self.stream for h in lg.handlers if h is not self):
                return True
            if not lg.propagate:
                return False
            lg = lg.parent
        return False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if not self._echoed(record):
                self.stream.write(self.format(record) + "\n")
            msg = record.getMessage()
            if record.levelno >= logging.WARNING and msg not in self.cap.warnings:
                self.cap.warnings.append(msg)
        except Exception:  # a logging handler must never raise
            self.handleError(record)


def _status_line(fd: int, step: str, stop: threading.Event) -> None:
    """Redraw ``step … N s`` on the terminal ``fd`` until ``stop`` is set, then clear the line."""
    t0, frames, k = time.monotonic(), "|/-\\", 0
    while not stop.wait(0.25):
        k += 1
        with contextlib.suppress(OSError):
            os.write(fd, f"\r{frames[k % 4]} {step} … {time.monotonic() - t0:.0f} s".encode())
    with contextlib.suppress(OSError):
        os.write(fd, b"\r\x1b[K")


def _flush_all() -> None:
    for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            s.flush()


@contextlib.contextmanager
def capture_output(log_path: str | Path, step: str) -> Iterator[Captured]:
    """Run the ``with`` body with all console output going to ``log_path`` (appended); yields a ``Captured``
    whose ``lines``, ``warnings`` and ``seconds`` are filled in when the body ends."""
    log_path = Path(log_path)
    cap = Captured(log_path, step)
    f = open(log_path, "a", encoding="utf-8", errors="replace", buffering=1)  # closed in the finally below
    f.write(f"===== {step} ({time.strftime('%Y-%m-%d %H:%M:%S')}) =====\n")
    start = f.tell()
    _flush_all()
    saved: dict[int, int] = {}
    for fd in (1, 2):
        with contextlib.suppress(OSError):  # no such descriptor (a detached process): nothing to redirect
            saved[fd] = os.dup(fd)
            os.dup2(f.fileno(), fd)
    old_streams = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = f
    handler = _Collect(f, cap)
    loggers = [logging.getLogger(n) for n in THIRD_PARTY_LOGGERS]
    old_propagate = [lg.propagate for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
    stop = threading.Event()
    spinner = None
    if 2 in saved and os.isatty(saved[2]):
        spinner = threading.Thread(target=_status_line, args=(saved[2], step, stop), daemon=True)
        spinner.start()
    t0 = time.perf_counter()
    failed = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            yield cap
        for w in caught:
            msg = f"{w.category.__name__}: {w.message}"
            f.write(f"{w.filename}:{w.lineno}: {msg}\n")
            if msg not in cap.warnings:
                cap.warnings.append(msg)
    except BaseException:
        failed = True
        raise
    finally:
        cap.seconds = time.perf_counter() - t0
        stop.set()
        if spinner is not None:
            spinner.join()
        _flush_all()
        sys.stdout, sys.stderr = old_streams
        for fd, dup in saved.items():
            os.dup2(dup, fd)
            os.close(dup)
        for lg, prop in zip(loggers, old_propagate, strict=True):
            lg.removeHandler(handler)
            lg.propagate = prop
        _drop_stream_handlers(f)
        f.flush()
        end = f.tell()
        f.close()
        with open(log_path, encoding="utf-8", errors="replace", newline="") as r:  # keep tqdm's \r as is
            r.seek(start)
            text = r.read(max(0, end - start))
        cap.lines = text.count("\n")
        if failed and text.strip():
            tail = "\n".join(text.replace("\r", "\n").strip().splitlines()[-TAIL_ON_ERROR:])
            log.error("%s failed; its last output lines:\n%s", step, tail)


def _drop_stream_handlers(stream) -> None:
    """Remove third-party console handlers: those bound to the (now closed) capture file, and ModelOpt's own
    stdout/stderr handlers, whose records also reach the root logger — so each warning prints once."""
    consoles = {stream, sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__}
    for name in list(logging.root.manager.loggerDict):
        if not name.startswith(THIRD_PARTY_LOGGERS):
            continue
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if type(h) is logging.StreamHandler and getattr(h, "stream", None) in consoles:
                lg.removeHandler(h)
