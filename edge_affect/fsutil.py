"""Output safety on the file system: never write over an input, replace folders whole, clean what a kill left.

Commands build a new folder in a hidden sibling ``.<name>.tmp-<pid>-<random>`` and swap it in at the end
(``replace_dir``); a folder swapped out waits as ``.<name>.old-<pid>-<random>`` until it is deleted. Both
carry the owner's PID, so the next run can tell a leftover of a killed process (PID gone) from the work of
a live one (``clean_stale``). Torch-free: the runtime uses it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


#: Any hidden ``.tmp-``/``.old-`` sibling (``.<name>.<tag>-<pid>-<random>``): folders and atomic-write files.
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<tag>tmp|old)-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def temp_pattern(name: str) -> re.Pattern[str]:
    """Names of the hidden ``.tmp-``/``.old-`` siblings of ``name`` (with the owner's PID)."""
    return re.compile(rf"^\.{re.escape(name)}\.(?P<tag>tmp|old)-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this machine and is not a zombie (conservative: unsure = alive)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale(folder: PathLike, pattern: re.Pattern[str]) -> list[Path]:
    """Delete the entries of ``folder`` whose names match ``pattern`` (which has a ``pid`` group) and whose
    owning process is gone; returns what was removed. Entries of live processes are never touched."""
    d = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(d.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for p in entries:
        m = pattern.match(p.name)
        if m is None or pid_alive(int(m.group("pid"))):
            continue
        log.warning("removing %s, left behind by an interrupted run (process %s is gone)", p, m.group("pid"))
        _remove(p)
        removed.append(p)
    return removed


def clean_stale_siblings(out: PathLike) -> list[Path]:
    """Recover from a kill around ``out``: restore ``out`` from a swapped-out ``.old-`` copy when ``out`` is
    missing, and delete the ``.tmp-``/``.old-`` siblings of dead processes."""
    out = Path(out)
    pattern = temp_pattern(out.name)
    parent = out.parent
    if not out.exists():
        olds = [
            p
            for p in (parent.iterdir() if parent.is_dir() else [])
            if (m := pattern.match(p.name)) and m.group("tag") == "old" and not pid_alive(int(m.group("pid")))
        ]
        if olds:  # killed between the two renames of a swap: the old state comes back
            log.warning("restoring %s from %s, left by an interrupted replacement", out, olds[0])
            os.rename(olds[0], out)
    return clean_stale(parent, pattern)


def make_temp_dir(out: PathLike, tag: str = "tmp") -> Path:
    """Create the hidden sibling folder ``.<name>.<tag>-<pid>-<random>`` of ``out`` (with the umask's
    permissions, not mkdtemp's 0700), after removing what killed runs left there."""
    out = Path(out)
    clean_stale_siblings(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{tag}-{os.getpid()}-", dir=str(out.parent)))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


@contextlib.contextmanager
def temp_dir_beside(out: PathLike) -> Iterator[Path]:
    """A scratch folder ``.<name>.tmp-<pid>-<random>`` beside ``out`` (same file system, so results move
    into place by rename), removed on exit; one a killed process left is removed by the next use."""
    tmp = make_temp_dir(out)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(tmp: PathLike, out: PathLike) -> None:
    """Put the finished folder ``tmp`` at ``out``, replacing an existing ``out`` whole.

    Atomic where the kernel can swap two folders; elsewhere ``out`` is first renamed aside to a ``.old-``
    sibling, which ``clean_stale_siblings`` restores if a kill lands between the two renames."""
    tmp, out = Path(tmp), Path(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        os.replace(tmp, out)  # an empty folder is replaced by rename(2) itself
        return
    if _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old content
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=str(out.parent)))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def same_path(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file or folder (symlinks, ``..``, hard links included)."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return Path(a).resolve() == Path(b).resolve()


def is_within(child: PathLike, parent: PathLike) -> bool:
    """True when ``child`` is ``parent`` or lies inside it (after resolving links)."""
    c, p = Path(child).resolve(), Path(parent).resolve()
    return c == p or p in c.parents


def _show(opt: str, value: PathLike) -> str:
    return f"{opt} {value}" if opt else str(value)


Named = Mapping[str, "PathLike | None"] | Iterable[tuple[str, "PathLike | None"]]


def _pairs(named: Named) -> list[tuple[str, PathLike]]:
    items = named.items() if isinstance(named, Mapping) else named
    return [(k, v) for k, v in items if v is not None and str(v) != ""]


def check_not_inputs(outputs: Named, inputs: Named, *, input_folders: Iterable[str] = ()) -> None:
    """Refuse (``ValueError``) any output that names an input (or another output), however it is spelt.

    ``outputs``/``inputs``: (option name shown in the message, path) as a mapping or pairs; ``None`` paths are
    skipped. Inputs named in ``input_folders`` are folders (the message says so)."""
    outs, ins = _pairs(outputs), _pairs(inputs)
    folders = set(input_folders)
    for i, (ok, ov) in enumerate(outs):
        for ik, iv in ins:
            if same_path(ov, iv):
                kind = "folder" if ik in folders else "file"
                raise ValueError(
                    f"{_show(ok, ov)}: is the {kind} given as {_show(ik, iv)}, expected a new path "
                    "(edge-affect never writes over its inputs)"
                )
        for k2, v2 in outs[i + 1 :]:
            if same_path(ov, v2):
                raise ValueError(f"{_show(ok, ov)}: is also given as {_show(k2, v2)}, expected two different paths")


def check_output_file(opt: str, path: PathLike | None) -> None:
    """Refuse, before any work, an output file path that is a folder or whose folder does not exist."""
    if path is None or str(path) == "":
        return
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{_show(opt, p)}: is a folder, expected a file path")
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise ValueError(f"{_show(opt, p)}: {anc} is a file, expected a folder there")
    if anc != p.parent:
        raise ValueError(f"{_show(opt, p)}: folder {p.parent} does not exist, expected an existing folder")


class Staged:
    """An output built in a hidden sibling folder and moved into place by ``commit`` (rename), so a kill
    leaves the earlier result whole; ``discard`` drops it. A file is staged as ``.<name>.tmp-<pid>-<random>/<name>``
    (its suffix kept: writers such as OpenCV's pick the format by it), a folder as the temp folder itself."""

    def __init__(self, out: PathLike, *, folder: bool = False) -> None:
        self.out = Path(out)
        self.folder = folder
        self._tmp = make_temp_dir(self.out)
        self.path = self._tmp if folder else self._tmp / self.out.name

    def commit(self) -> None:
        """Move the finished output onto ``out`` (a folder replaces an earlier one whole)."""
        if self.folder:
            replace_dir(self._tmp, self.out)
            return
        if self.path.exists():
            os.replace(self.path, self.out)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def discard(self) -> None:
        """Remove the staged output; ``out`` stays as it was."""
        shutil.rmtree(self._tmp, ignore_errors=True)


#: Marker an overlay folder carries, so a later run knows the folder is one it may replace (with --force).
OVERLAY_MARKER = ".edge-affect-overlay"


def check_replaceable_folder(opt: str, folder: PathLike, *, marker: str, force: bool, what: str) -> None:
    """Refuse an existing, non-empty ``folder`` unless it holds ``marker`` (written by an earlier run) and
    ``force`` is set: the folder is then replaced whole, never merged."""
    p = Path(folder)
    if not p.exists():
        return
    if not p.is_dir():
        raise ValueError(f"{_show(opt, p)}: is a file, expected a folder")
    if not any(p.iterdir()):
        return
    if not (p / marker).is_file():
        raise ValueError(f"{_show(opt, p)}: exists and holds other files, expected a new or empty folder")
    if not force:
        raise ValueError(f"{_show(opt, p)}: holds an earlier {what}, expected a new or empty folder (--force replaces it)")
