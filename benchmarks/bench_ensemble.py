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
from pathlib import Path

import numpy as np
from bench_peer_fer import Ours, SetupError, load_data  # the same runtime loader and .npz reader, and their errors


def expression_probs(model: Ours, images: np.ndarray, flip: bool = False, batch: int = 256) -> np.ndarray:
    """N×8 expression probabilities of ``model`` on 48×48 crops (their mirror images with ``flip``)."""
    faces = images[:, :, ::-1] if flip else images
    return np.concatenate([model.predict_probs(faces[i : i + batch])[1] for i in range(0, len(faces), batch)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=Path, nargs="+", help="model files (model.onnx of a packaged model, .pt, .engine)")
    ap.add_argument("--data", type=Path, required=True, help="FER+ .npz (images + votes)")
    ap.add_argument("--split-note", default="FER+ valid: the split that chose these models' checkpoints")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    from edge_affect.fsutil import check_not_inputs

    models: list[Ours] = []
    try:  # one line (SystemExit) for a missing or unreadable input, and before any work for --json over one
        check_not_inputs({"--json": args.json}, [("--data", args.data), *(("MODEL", m) for m in args.models)])
        images, labels, facts = load_data(args.data)
        for m in args.models:
            if not m.is_file():
                raise SetupError(f"{m} does not exist")
            models.append(Ours(m, str(m), threads=0))
    except (SetupError, ValueError) as e:
        for m in models:
            m.close()
        raise SystemExit(str(e)) from None
    probs = {m.name: expression_probs(m, images) for m in models}
    flipped = {m.name: expression_probs(m, images, flip=True) for m in models}
    for m in models:
        m.close()
    dropped = int(facts.get("left_out_unknown_or_nf", 0))

    def acc(p: np.ndarray) -> float:
        return float((p.argmax(1) == labels).mean())

    rows = []
    for k in range(1, len(models) + 1):
        for combo in itertools.combinations([m.name for m in models], k):
            mean = np.mean([probs[m] for m in combo], axis=0)
            mean_f = np.mean([probs[m] + flipped[m] for m in combo], axis=0) / 2
            rows.append({"models": list(combo), "accuracy": acc(mean), "accuracy_flip_averaged": acc(mean_f)})
    res = {
        "data": str(args.data),
        "split": args.split_note,
        "faces": int(len(labels)),
        "dropped": dropped,
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
