"""``edge-affect`` command line: thin — parses, calls the library, prints.

User errors (bad files, bad values, file-system errors, out-of-range options) become one line
``edge-affect: error: ...`` and exit code 2 (``edge_affect.cliutil``); ``-v`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edge_affect import __version__
from edge_affect.cliutil import EXIT_INTERRUPTED, OneLineParser, run_command

# Each area registers its own subcommands; a missing optional dependency only disables that area.
_COMMAND_MODULES = (
    "edge_affect.data.cli",
    "edge_affect.train.cli",
    "edge_affect.train.distill_cli",
    "edge_affect.export.cli",
    "edge_affect.calibration.cli",
    "edge_affect.runtime.cli",
    "edge_affect.demo",
    "edge_affect.serve.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="edge-affect",
        description="Multi-task face affect: train, export (ONNX/FP16/INT8/TensorRT), run on the edge.",
    )
    parser.add_argument("--version", action="version", version=f"edge-affect {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging; tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("edge_affect"):
                continue  # area not built yet
            raise
        mod.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("edge-affect: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
