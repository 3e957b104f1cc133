"""The one input/output guard: every command declares what it reads and writes, one check runs before it.

A command registers its spec with ``declare(parser, reads=..., writes=..., folders=..., ...)`` (option
``dest`` names); ``cliutil.run_command`` calls ``guard(args)`` before the command's handler, so no command
checks its own case by hand. The guard refuses, with one line naming the option and path:

- an output that is an input (however spelt: relative, ``..``, symlink, hard link) or another output;
- an output that lies inside an input folder, and an input that lies inside an output folder;
- an output file that exists (``--force`` replaces it: ``declare`` adds the flag where files are written),
  is a folder, or whose folder does not exist.

Output folders (``folders``) keep their command's own rule for existing content (new, empty or a replaceable
earlier result). ``tests/reliability/test_guard.py`` walks every command's options, so a path option that is
not declared fails the suite. Torch-free: the runtime uses it too.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edge_affect.fsutil import check_not_inputs, check_output_file, is_within, same_path

#: Extra paths a command derives from its arguments: ``(shown name, path)`` pairs.
Derived = Callable[[argparse.Namespace], Iterable[tuple[str, "str | os.PathLike[str] | None"]]]

_SPEC_DEST = "_io_spec"


@dataclass(frozen=True)
class IOSpec:
    """What a command reads and writes, by option ``dest`` (see the module docstring for each role)."""

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()  # files: refused when they exist unless --force
    folders: tuple[str, ...] = ()  # output folders the command fills by its own rule
    updates: tuple[str, ...] = ()  # files read and written back (a TensorRT timing cache)
    either: tuple[str, ...] = ()  # a file when the path has a suffix, else a folder (run --overlay)
    plain: tuple[str, ...] = ()  # string options that are not paths (names, devices, URLs of cameras)
    extra_reads: Derived | None = None
    extra_writes: Derived | None = None
    names: dict[str, str] = field(default_factory=dict)  # dest → name shown in messages

    def declared(self) -> set[str]:
        """Every dest this spec classifies."""
        return {*self.reads, *self.writes, *self.folders, *self.updates, *self.either, *self.plain}


def _shown_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest → how the user spells it: the long option, or the metavar/upper-case name of a positional."""
    names: dict[str, str] = {}
    for a in parser._actions:
        if a.option_strings:
            names[a.dest] = max(a.option_strings, key=len)
        elif isinstance(a.metavar, str):
            names[a.dest] = a.metavar
        else:
            names[a.dest] = a.dest.upper()
    return names


def declare(
    parser: argparse.ArgumentParser,
    *,
    reads: Iterable[str] = (),
    writes: Iterable[str] = (),
    folders: Iterable[str] = (),
    updates: Iterable[str] = (),
    either: Iterable[str] = (),
    plain: Iterable[str] = (),
    extra_reads: Derived | None = None,
    extra_writes: Derived | None = None,
) -> IOSpec:
    """Record what the command behind ``parser`` reads and writes (option dests); adds ``--force`` where it
    writes files. Call it after the command's own ``add_argument`` calls."""
    spec = IOSpec(
        reads=tuple(reads),
        writes=tuple(writes),
        folders=tuple(folders),
        updates=tuple(updates),
        either=tuple(either),
        plain=tuple(plain),
        extra_reads=extra_reads,
        extra_writes=extra_writes,
    )
    known = {a.dest for a in parser._actions}
    missing = spec.declared() - known
    if missing:
        raise RuntimeError(f"{parser.prog}: declared options {sorted(missing)} do not exist")
    if (spec.writes or spec.either) and "force" not in known:
        parser.add_argument("--force", action="store_true", help="replace output files that already exist")
    spec.names.update(_shown_names(parser))
    parser.set_defaults(**{_SPEC_DEST: spec})
    return spec


def spec_of(parser: argparse.ArgumentParser) -> IOSpec | None:
    """The spec ``declare`` recorded on ``parser`` (None when the command declared nothing)."""
    return parser.get_default(_SPEC_DEST)


def _values(args: argparse.Namespace, spec: IOSpec, dests: Iterable[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for d in dests:
        v = getattr(args, d, None)
        for item in v if isinstance(v, list | tuple) else [v]:
            if item is not None and str(item) != "":
                out.append((spec.names.get(d, d), str(item)))
    return out


def _derived(fn: Derived | None, args: argparse.Namespace) -> list[tuple[str, str]]:
    if fn is None:
        return []
    return [(k, str(v)) for k, v in fn(args) if v is not None and str(v) != ""]


def _show(name: str, path: str) -> str:
    return f"{name} {path}"


def guard(args: argparse.Namespace) -> None:
    """Refuse (``ValueError``) the outputs of ``args``'s command that would write over or into its inputs, over
    files that exist (without ``--force``), or where no folder is; a command without a spec passes."""
    spec: IOSpec | None = getattr(args, _SPEC_DEST, None)
    if spec is None:
        return
    reads = _values(args, spec, spec.reads) + _derived(spec.extra_reads, args)
    reads = [(k, v) for k, v in reads if os.path.lexists(v)]  # cam:0, rtsp://… and missing files are not on disk
    either = _values(args, spec, spec.either)
    files = _values(args, spec, spec.writes) + _derived(spec.extra_writes, args)
    files += [(k, v) for k, v in either if Path(v).suffix]
    folders = _values(args, spec, spec.folders) + [(k, v) for k, v in either if not Path(v).suffix]
    updates = _values(args, spec, spec.updates)
    outputs = files + folders + updates
    in_folders = [k for k, v in reads if Path(v).is_dir()]
    check_not_inputs(outputs, reads, input_folders=in_folders)  # same file, or one output given twice
    for ok, ov in outputs:
        for ik, iv in reads:
            if Path(iv).is_dir() and is_within(ov, iv):
                raise ValueError(
                    f"{_show(ok, ov)}: lies inside the folder given as {_show(ik, iv)}, expected a path outside "
                    "it (edge-affect never writes into its inputs)"
                )
    for ok, ov in folders:
        for ik, iv in reads + updates:
            if is_within(iv, ov):
                raise ValueError(
                    f"{_show(ik, iv)}: lies inside {_show(ok, ov)}, which the command writes; expected an input "
                    "outside the output folder (edge-affect never writes over its inputs)"
                )
    force = bool(getattr(args, "force", False))
    for ok, ov in files:
        check_output_file(ok, ov)
        p = Path(ov)
        if p.exists() and p.is_file() and not force and not any(same_path(ov, uv) for _, uv in updates):
            raise ValueError(f"{_show(ok, ov)}: exists, expected a new path (--force replaces it)")
    for ok, ov in updates:
        check_output_file(ok, ov)


def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterable[tuple[str, argparse.ArgumentParser]]:
    """Every leaf command of ``parser`` as ``("data check", subparser)`` (for tests and docs)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(prefix), parser
        return
    for a in subs:
        for name, sp in a.choices.items():
            yield from walk(sp, (*prefix, name))


def path_like(action: argparse.Action) -> bool:
    """True for an option whose value may be a path: a string or ``Path`` value without a fixed choice list."""
    if action.option_strings and action.nargs == 0:
        return False
    if action.choices is not None or action.dest in ("help", "version", _SPEC_DEST):
        return False
    return action.type in (None, str, Path)
