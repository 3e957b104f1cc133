"""CLI: ``edge-affect calib build`` and ``calib verify``, calibration frame sets (thin: parse, call, print)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from edge_affect.calibration import read_manifest, verify_calibration
from edge_affect.cliutil import int_range
from edge_affect.iopaths import declare


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``calib build`` and ``calib verify``."""
    c = sub.add_parser("calib", help="calibration frame sets")
    csub = c.add_subparsers(dest="calib_command", metavar="SUBCOMMAND")
    b = csub.add_parser("build", help="sample face crops from an image folder, video, ABAW root or .npz")
    b.add_argument("src", type=Path, help="image folder, video file, ABAW dataset root or .npz with 'images'")
    b.add_argument("--out", type=Path, required=True, help="output folder, e.g. calibration/NAME")
    b.add_argument("--n", type=int_range(1, 100_000), default=512, help="frames to sample (default 512)")
    b.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="sampling seed (default 0)")
    b.add_argument(
        "--size", type=int_range(16, 1024), default=None, help="resize crops to SIZE×SIZE (default: keep their size)"
    )
    b.add_argument("--split", default="train", help="ABAW split to sample (train or val)")
    b.add_argument("--no-stratify", action="store_true", help="do not balance expression classes")
    b.add_argument("--provenance", default="", help="where the frames come from (licence, URL, commit)")
    b.add_argument(
        "--detect-faces",
        action="store_true",
        help="the source holds full frames: crop the best face with the runtime's YuNet detector",
    )
    b.add_argument("--force", action="store_true", help="replace an existing non-empty output folder")
    b.set_defaults(func=_calib_build)
    declare(b, reads=("src",), folders=("out",), plain=("split", "provenance"))
    v = csub.add_parser("verify", help="verify a calibration set's manifest and hashes")
    v.add_argument("folder", type=Path, help="calibration folder (with manifest.json)")
    v.set_defaults(func=_calib_verify)
    declare(v, reads=("folder",))
    c.set_defaults(func=lambda args: (c.print_help(), 2)[1])


def _calib_build(args: argparse.Namespace) -> int:
    from edge_affect.calibration.build import build_calibration, yunet_face_cropper

    cropper = yunet_face_cropper(args.size or 112) if args.detect_faces else None
    out = build_calibration(
        args.src,
        args.out,
        args.n,
        seed=args.seed,
        size=args.size,
        split=args.split,
        stratify=not args.no_stratify,
        provenance=args.provenance,
        command=_calib_command(args),
        overwrite=args.force,
        face_cropper=cropper,
        frames=True if args.detect_faces else None,
    )
    m = read_manifest(out)
    print(
        f"{out}: {m['count']} frames {m['preprocess']['frame_size']} {m['preprocess']['color']} from {m['source']['kind']}"
    )
    return 0


def _calib_command(args: argparse.Namespace) -> str:
    """The command line that rebuilds this set (recorded in the manifest)."""
    parts = [
        "edge-affect",
        "calib",
        "build",
        str(args.src),
        "--out",
        str(args.out),
        "--n",
        str(args.n),
        "--seed",
        str(args.seed),
    ]
    if args.size is not None:
        parts += ["--size", str(args.size)]
    if args.split != "train":
        parts += ["--split", args.split]
    if args.no_stratify:
        parts.append("--no-stratify")
    if args.detect_faces:
        parts.append("--detect-faces")
    return " ".join(shlex.quote(p) for p in parts)


def _calib_verify(args: argparse.Namespace) -> int:
    m = verify_calibration(args.folder, min_frames=1)
    print(f"{args.folder}: OK, {m['count']} frames, hashes match")
    return 0
