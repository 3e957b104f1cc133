"""``edge-affect distill``: ``teach`` (a checkpoint's soft predictions on a dataset's training faces and their
mirror images, with provenance) and ``mix`` (a dataset root whose soft targets mix the votes with teachers')."""

from __future__ import annotations

import argparse
import json

from edge_affect.cliutil import float_range, int_range
from edge_affect.iopaths import declare
from edge_affect.train.distill import provenance_path


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    d = subparsers.add_parser("distill", help="knowledge distillation in stages: teacher predictions, mixed targets")
    sub = d.add_subparsers(dest="distill_command", metavar="STEP", required=True)
    t = sub.add_parser("teach", help="a teacher's expression predictions on a dataset's training faces (+ mirrors)")
    t.add_argument("checkpoint", metavar="CHECKPOINT", help="the teacher (.pt or .safetensors)")
    t.add_argument("--data", required=True, help="dataset root (ABAW layout, e.g. from `edge-affect data import`)")
    t.add_argument("--out", required=True, help="teacher file to write (.npz; provenance beside it as .json)")
    t.add_argument("--batch-size", type=int_range(1, 4096), default=256, help="faces per forward pass")
    t.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    t.set_defaults(func=_teach)
    declare(
        t,
        reads=("checkpoint", "data"),
        writes=("out",),
        plain=("device",),
        # (a name other than .npz is refused by the command itself, before anything is written)
        extra_writes=lambda a: (
            [("--out (provenance)", str(provenance_path(a.out)))] if str(a.out).endswith(".npz") else []
        ),
    )
    m = sub.add_parser("mix", help="a dataset root whose training targets mix the source's with teachers'")
    m.add_argument("data", metavar="DATA", help="source dataset root")
    m.add_argument("--teacher", action="append", required=True, help="teacher file from `distill teach` (repeat)")
    m.add_argument(
        "--weight",
        type=float_range(0.0, 1.0),
        default=0.5,
        help="share of the teachers in the targets, in [0, 1] (default 0.5)",
    )
    m.add_argument("--out", required=True, help="new dataset root (must not exist, or be an empty folder)")
    m.set_defaults(func=_mix)
    declare(m, reads=("data", "teacher"), folders=("out",))


def _teach(args: argparse.Namespace) -> int:
    from edge_affect.train.distill import teacher_predictions

    info = teacher_predictions(args.checkpoint, args.data, args.out, batch=args.batch_size, device=args.device)
    print(json.dumps({k: info[k] for k in info if k.endswith("accuracy") or k in ("faces", "seconds")}))
    print(f"teacher predictions in {args.out}")
    return 0


def _mix(args: argparse.Namespace) -> int:
    from edge_affect.train.distill import mix_dataset

    info = mix_dataset(args.data, args.teacher, args.weight, args.out)
    print(
        f"{args.out}: {info['faces']} training faces, targets {info['targets']}; the teachers' top class agrees "
        f"with the source's on {100 * info['agreement_teacher_votes']:.1f} %"
    )
    return 0
