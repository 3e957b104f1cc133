"""What averaging packaged models would reach: FER+ majority accuracy of each model alone, flip-averaged (the face
and its mirror image), and of all of them averaged, through the runtime (its own preprocessing).

    python benchmarks/bench_ensemble.py edge_affect/assets/models/default/model.onnx runs/pkg-ferplus-v3w/model.onnx \\
        --data ../shared/data/ferplus/ferplus_valid.npz --json benchmarks/results/v3_v3w_ensemble.json

A distillation teacher built from these models (``edge-affect distill teach`` + ``distill mix``) is their
average: its accuracy against its best member's says how much there is to distil. Faces
whose FER+ majority is unknown / not-a-face are left out. Chooses nothing: on FER+ valid (the split that chose
the models' checkpoints) the figures are selection-split figures, as labelled in the JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np


def expression_probs(artifact: Path, images: np.ndarray, flip: bool = False) -> np.ndarray:
    """N×8 expression probabilities of ``artifact`` (a model file the runtime loads) on 48×48 crops."""
    from edge_affect.runtime import load
    from edge_affect.schema import EXPRESSIONS

    faces = images[:, :, ::-1] if flip else images
    out: list[list[float]] = []
    with load(artifact) as p:
        for i in range(0, len(faces), 256):
            out += [[r["expression_probs"][e] for e in EXPRESSIONS] for r in p.predict(list(faces[i : i + 256]))]
    return np.asarray(out, dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=Path, nargs="+", help="model files (model.onnx of a packaged model, .pt, .engine)")
    ap.add_argument("--data", type=Path, required=True, help="FER+ .npz (images + votes)")
    ap.add_argument("--split-note", default="FER+ valid: the split that chose these models' checkpoints")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edge_affect.data.fer import ferplus_majority

    for p in [*args.models, args.data]:
        if not p.exists():
            raise SystemExit(f"{p} does not exist")
    images, labels, dropped = ferplus_majority(args.data, where=str(args.data))
    probs = {str(m): expression_probs(m, images) for m in args.models}
    flipped = {str(m): expression_probs(m, images, flip=True) for m in args.models}

    def acc(p: np.ndarray) -> float:
        return float((p.argmax(1) == labels).mean())

    rows = []
    for k in range(1, len(args.models) + 1):
        for combo in itertools.combinations([str(m) for m in args.models], k):
            mean = np.mean([probs[m] for m in combo], axis=0)
            mean_f = np.mean([probs[m] + flipped[m] for m in combo], axis=0) / 2
            rows.append({"models": list(combo), "accuracy": acc(mean), "accuracy_flip_averaged": acc(mean_f)})
    res = {
        "data": str(args.data),
        "split": args.split_note,
        "faces": int(len(labels)),
        "dropped": int(dropped),
        "rows": rows,
    }

    print(f"{args.data}: {len(labels)} faces ({dropped} without an emotion majority left out); {args.split_note}")
    print(f"{'models':<70} {'accuracy':>9} {'flip-avg':>9}")
    for r in rows:
        print(f"{' + '.join(r['models']):<70} {100 * r['accuracy']:>8.2f}% {100 * r['accuracy_flip_averaged']:>8.2f}%")
    if args.json:
        from edge_affect.artifact import atomic_write_text

        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(res, indent=1) + "\n")
        print(f"results in {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
