"""The CLI's contract in one place: option types that check ranges at parse time, and one-line errors.

Every command either does what it says or exits non-zero with one line
``edge-affect: error: <file or value>: <problem>, expected <...>`` (exit 2; 130 when interrupted; 70 for an
internal error, whose traceback ``-v`` shows). Torch-free: the runtime's stand-alone entry uses it too.
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from edge_affect.fsutil import TEMP_NAME
from edge_affect.iopaths import guard

PROG = "edge-affect"
EXIT_USER_ERROR = 2
EXIT_INTERNAL = 70  # sysexits EX_SOFTWARE
EXIT_INTERRUPTED = 130

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- option types


#: Top-level module → the extra that installs it, for the one-line "missing dependency" error.
_EXTRA_OF = {"cv2": "opencv", "tensorrt": "trt", "cuda": "trt", "onnx": "export", "modelopt": "export"}


def _shown(text: str, limit: int = 40) -> str:
    """The user's value as it goes into a one-line message (quoted when blank or odd, shortened)."""
    s = str(text)
    if len(s) > limit:
        s = s[:limit] + "…"
    if not s or s != s.strip() or not s.isprintable():
        return repr(s)
    return s


def _bad(text: str, problem: str, expected: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{_shown(text)}: {problem}, expected {expected}")


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in ``[lo, hi]`` (either bound may be open-ended)."""
    if lo is not None and hi is not None:
        expected = f"an integer in [{lo}, {hi}]"
    elif lo is not None:
        expected = f"an integer ≥ {lo}"
    elif hi is not None:
        expected = f"an integer ≤ {hi}"
    else:
        expected = "an integer"

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise _bad(text, "not an integer", expected) from None
        if lo is not None and value < lo:
            raise _bad(text, "too small", expected)
        if hi is not None and value > hi:
            raise _bad(text, "too large", expected)
        return value

    parse.__name__ = "integer"
    return parse


def float_range(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[str], float]:
    """argparse type: a finite number in the interval from ``lo`` to ``hi`` (``*_open``: bound excluded)."""
    if lo is not None and hi is not None:
        expected = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        expected = f"a number {'>' if lo_open else '≥'} {lo:g}"
    elif hi is not None:
        expected = f"a number {'<' if hi_open else '≤'} {hi:g}"
    else:
        expected = "a finite number"

    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise _bad(text, "not a number", expected) from None
        if not math.isfinite(value):
            raise _bad(text, "not finite", expected)
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise _bad(text, "too small", expected)
        if hi is not None and (value > hi or (hi_open and value == hi)):
            raise _bad(text, "too large", expected)
        return value

    parse.__name__ = "number"
    return parse


def int_list(lo: int, hi: int) -> Callable[[str], list[int]]:
    """argparse type: comma-separated integers, each in ``[lo, hi]`` (e.g. batch sizes ``1,8,32``)."""
    expected = f"comma-separated integers in [{lo}, {hi}], e.g. 1,8,32"

    def parse(text: str) -> list[int]:
        parts = [p.strip() for p in str(text).split(",")]
        if not any(parts):
            raise _bad(text, "empty", expected)
        out = []
        for p in parts:
            if not p:
                continue
            try:
                v = int(p)
            except ValueError:
                raise _bad(text, f"{_shown(p)} is not an integer", expected) from None
            if not lo <= v <= hi:
                raise _bad(text, f"{v} is out of range", expected)
            out.append(v)
        return out

    parse.__name__ = "integer list"
    return parse


#: The shared types (one definition, every CLI uses these).
positive_int = int_range(1)
seed_int = int_range(0, 2**32 - 1)  # numpy's seed range
probability = float_range(0.0, 1.0)

def hidden_alias(parser: argparse.ArgumentParser, old: str, action: argparse.Action) -> None:
    """Accept ``old`` as a hidden spelling of ``action``'s option (same destination; kept for one release)."""
    kinds = {argparse._StoreTrueAction: "store_true", argparse._StoreFalseAction: "store_false"}
    kw: dict[str, Any] = {"dest": action.dest, "default": action.default, "help": argparse.SUPPRESS}
    kind = kinds.get(type(action), "append" if isinstance(action, argparse._AppendAction) else "store")
    if kind in ("store", "append"):
        kw |= {"type": action.type, "nargs": action.nargs, "choices": action.choices, "metavar": action.metavar}
    parser.add_argument(old, action=kind, **kw)


# ----------------------------------------------------------------------------------------------- errors


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line ``edge-affect: error: ...`` and exit code 2.

    Subparsers inherit the class, so every subcommand reports the same way."""

    def error(self, message: str) -> NoReturn:
        m = re.match(r"argument ([^:]+): (.*)$", message, re.S)
        if m:
            name, rest = m.group(1).split("/")[-1], m.group(2)
            # our types say "<value>: <problem>, expected <...>", read as "--max-faces -1: too small, ..."
            message = f"{name} {rest}" if ", expected " in rest else f"{name}: {rest}"
        one_line(message)
        sys.exit(EXIT_USER_ERROR)


def _clean(text: str) -> str:
    """The first non-empty line of ``text``, with control characters escaped."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in first)


def one_line(message: str) -> None:
    """Print ``edge-affect: error: <message>`` (one line) to stderr."""
    print(f"{PROG}: error: {_clean(message)}", file=sys.stderr, flush=True)


#: What the user can do about an OS error, by errno.
_OS_EXPECTED = {
    errno.ENOENT: "an existing path",
    errno.ENOTDIR: "a folder at every level of the path",
    errno.EISDIR: "a file, not a folder",
    errno.EEXIST: "a path that does not exist yet",
    errno.ENOTEMPTY: "an empty folder",
    errno.EACCES: "a path you may read and write",
    errno.EPERM: "a path you may read and write",
    errno.EROFS: "a writable file system",
    errno.ENOSPC: "free space on the device",
    errno.EDQUOT: "free space within your quota",
    errno.ENAMETOOLONG: "a shorter path",
    errno.ELOOP: "a path without a symlink loop",
    errno.EMFILE: "fewer open files",
    errno.EXDEV: "source and target on one file system",
    errno.EFBIG: "a smaller file",
    errno.EIO: "a readable, healthy device",
}


#: Temp names the user never asked for: ``artifact.atomic_write_*`` and ``fsutil.make_temp_dir`` both write
#: ``.<name>.tmp-<pid>-<random>`` (``fsutil.TEMP_NAME``); errors name ``<name>`` instead.
_TEMP_NAMES = (TEMP_NAME,)


def _user_path(path: str) -> str:
    head, sep, base = path.rpartition("/")
    for pattern in _TEMP_NAMES:
        m = pattern.match(base)
        if m:
            return f"{head}{sep}{m.group('name')}"
        # a staged output file (fsutil.Staged): .<name>.tmp-<pid>-<random>/<name>
        up, sep2, folder = head.rpartition("/")
        m = pattern.match(folder)
        if m and m.group("name") == base:
            return f"{up}{sep2}{base}"
    return path


def describe_os_error(e: OSError) -> str:
    """``<path>: <problem>, expected <what would work>`` for an OSError (path from ``e.filename``)."""
    problem = (e.strerror or type(e).__name__).rstrip(".")
    problem = problem[:1].lower() + problem[1:]
    expected = _OS_EXPECTED.get(e.errno or -1)
    tail = f", expected {expected}" if expected else ""
    if e.filename is None:
        # a library's own FileNotFoundError("calibration folder X does not exist") etc.
        if e.strerror is None and e.args and isinstance(e.args[0], str):
            return str(e.args[0])
        return f"{problem}{tail}"
    where = _user_path(str(e.filename))
    if getattr(e, "filename2", None) is not None:
        where = f"{where} -> {e.filename2}"
    return f"{where}: {problem}{tail}"


def run_command(func: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """Call a command handler under the one-line error contract; ``args.verbose`` re-raises (traceback)."""
    verbose = bool(getattr(args, "verbose", False))
    command = getattr(args, "command", None) or "edge-affect"
    try:
        guard(args)  # the one input/output check, before the command touches anything
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`... | head`): nothing to report; keep Python from complaining at exit
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except ModuleNotFoundError as e:
        if verbose:
            raise
        extra = _EXTRA_OF.get((e.name or "").split(".")[0], "train,export")
        one_line(
            f"missing dependency {e.name!r} for '{command}', expected it installed "
            f"(install the matching extra: pip install 'edge-affect[{extra}]')"
        )
        return EXIT_USER_ERROR
    except OSError as e:
        if verbose:
            raise
        one_line(describe_os_error(e))
        return EXIT_USER_ERROR
    except (ValueError, RuntimeError) as e:
        if verbose:
            raise
        one_line(str(e) if str(e).strip() else type(e).__name__)
        return EXIT_USER_ERROR
    except MemoryError:
        if verbose:
            raise
        one_line("out of memory, expected smaller inputs or options (fewer frames, a smaller batch)")
        return EXIT_USER_ERROR
    except Exception as e:  # a bug: one line here, the traceback with -v
        if verbose:
            raise
        log.debug("internal error", exc_info=True)
        one_line(
            f"internal error in '{command}': {type(e).__name__}: {e} "
            "(a bug: rerun with -v for the traceback and report it)"
        )
        return EXIT_INTERNAL
