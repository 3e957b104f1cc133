"""Averaging several views of one alignment: how much steadier under landmark noise, at what cost (issue 19).

A detector's landmarks move by a pixel or two from frame to frame, and each move shifts, turns and scales the
48-px crop a little; on faces whose two most likely expressions are nearly tied the label follows. One answer is
to average the model's expression probabilities over several views of the same face, so that the prediction is
a local average over alignments rather than one point of it. Measured here, with the runtime's alignment:

- ``1``: one crop (what the runtime does);
- ``2``: two crops shifted by ±¼ crop px along the diagonal;
- ``4``: four crops on a ±¼ crop-px grid;
- ``mirror``: the crop and its mirror image (what ``package --test-time-flip`` puts in the graph).

On ``--faces-limit`` FER+ faces (``--faces``, evenly spaced; each upscaled to ``--face-px`` and placed in a frame,
``steadiness.face_in_frame``, detected by YuNet), with the 5 landmarks moved by N(0, ``--sigma`` px) in ``--draws``
draws (the same draws for every scheme): the share of draws whose expression matches the scheme's own without
noise, and the majority-vote accuracy. A scheme of K views costs K model runs per face.

    python benchmarks/bench_align_views.py --faces ../shared/data/ferplus/ferplus_valid.npz \\
        --json benchmarks/results/align_views.json   # ~7 min on 2 idle cores

Chooses nothing: no scheme becomes a default here. FER+ valid chose the shipped model's checkpoint, so its
accuracies are selection-split figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from bench_align import face_indices, rest_indices

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_affect.runtime.align import VIEW_SHIFT_PX, shifted, view_offsets  # noqa: E402

_Q = VIEW_SHIFT_PX  # crop px
SCHEMES: dict[str, list[tuple[float, float]] | str] = {
    **{str(v): view_offsets(v) for v in (1, 2, 4)},  # the runtime's views (FacePipeline(views=...))
    "mirror": "mirror",
}


def view_crops(
    rgb: np.ndarray, m: np.ndarray, size: int, scheme: list[tuple[float, float]] | str, antialias: bool
) -> np.ndarray:
    """The crops of ``scheme`` for the face that the 2×3 similarity ``m`` maps onto a ``size`` crop."""
    from edge_affect.runtime.align import warp_face

    if scheme == "mirror":
        crop = warp_face(rgb, m, size, antialias)
        return np.stack([crop, np.ascontiguousarray(crop[:, ::-1])])
    return np.stack([warp_face(rgb, shifted(m, dx, dy), size, antialias) for dx, dy in scheme])


def scheme_label(predictor: Any, crops: np.ndarray, names: list[str]) -> int:
    """Arg-max of the expression probabilities averaged over ``crops`` (the runtime's averaging of views)."""
    return names.index(predictor.predict(crops, views=len(crops))[0]["expression"])


def measure(
    predictor: Any,
    detector: Any,
    npz: Path,
    limit: int,
    face_px: float,
    sigma: float,
    draws: int,
    seed: int,
    offset: float = 0.0,
    rest: bool = False,
) -> dict[str, Any]:
    from edge_affect.artifact import align_antialias
    from edge_affect.data.fer import ferplus_majority
    from edge_affect.runtime.align import align_matrix, model_template
    from edge_affect.runtime.steadiness import face_in_frame
    from edge_affect.schema import EXPRESSIONS

    size = predictor.input_size
    tpl = model_template(predictor.meta.extra)
    antialias = align_antialias(predictor.meta.extra)
    names = list(EXPRESSIONS)
    images, labels, _ = ferplus_majority(npz)
    idx = rest_indices(len(images), limit) if rest else face_indices(len(images), limit, offset)
    rng = np.random.default_rng(seed)
    agree: dict[str, list[float]] = {k: [] for k in SCHEMES}
    right: dict[str, list[bool]] = {k: [] for k in SCHEMES}
    for i in idx:
        frame = face_in_frame(images[i], face_px)
        found = detector.detect(frame, max_side=max(frame.shape[:2]))
        if not found:
            continue
        lm = found[0].landmarks.astype(np.float64)
        m = align_matrix(lm, size, tpl)
        noisy = [align_matrix(lm + rng.normal(0.0, sigma, lm.shape), size, tpl) for _ in range(draws)]
        for k, scheme in SCHEMES.items():
            ref = scheme_label(predictor, view_crops(frame, m, size, scheme, antialias), names)
            right[k].append(ref == int(labels[i]))
            agree[k].append(
                float(
                    np.mean(
                        [
                            scheme_label(predictor, view_crops(frame, mn, size, scheme, antialias), names) == ref
                            for mn in noisy
                        ]
                    )
                )
            )
    return {
        "face_px": face_px,
        "faces": len(idx),
        "faces_measured": len(agree["1"]),
        "schemes": {
            k: {
                "model_runs_per_face": len(SCHEMES[k]) if SCHEMES[k] != "mirror" else 2,
                "expression_agreement": float(np.mean(agree[k])) if agree[k] else None,
                "accuracy": float(np.mean(right[k])) if right[k] else None,
            }
            for k in SCHEMES
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--artifact", default=None, help="model (default: the shipped default model's ONNX)")
    ap.add_argument("--faces", required=True, help="FER+ .npz (images + votes)")
    ap.add_argument("--faces-limit", type=int, default=600)
    ap.add_argument(
        "--faces-offset", type=float, default=0.0, help="shift the evenly spaced faces by this fraction of a step"
    )
    ap.add_argument(
        "--faces-rest",
        action="store_true",
        help="take the faces that none of the offsets 0 / 0.25 / 0.5 / 0.75 takes (faces no alignment "
        "measurement has looked at; 1,182 of FER+ valid's 3,579 at --faces-limit 600)",
    )
    ap.add_argument("--face-px", type=float, nargs="+", default=[60.0, 120.0])
    ap.add_argument("--sigma", type=float, default=1.0, help="landmark noise, px")
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    from edge_affect.artifact import atomic_write_text
    from edge_affect.default import default_model
    from edge_affect.fsutil import check_not_inputs
    from edge_affect.runtime.bench import format_table, machine_info
    from edge_affect.runtime.detect import YuNetDetector
    from edge_affect.runtime.predictor import load

    faces = Path(args.faces)
    artifact = args.artifact or str(default_model("onnx"))
    for flag, path in (("--faces", faces), ("--artifact", Path(artifact))):
        if not path.is_file():
            print(f"bench_align_views: error: {flag} {path}: no such file", file=sys.stderr)
            return 2
    if args.faces_rest and args.faces_offset:
        print(
            f"bench_align_views: error: --faces-rest with --faces-offset {args.faces_offset}, expected one of them "
            "(the rest faces are the ones no offset takes)",
            file=sys.stderr,
        )
        return 2
    if not 0 <= args.faces_offset < 1:
        print(
            f"bench_align_views: error: --faces-offset {args.faces_offset}, expected a fraction in [0, 1)",
            file=sys.stderr,
        )
        return 2
    try:
        check_not_inputs({"--json": args.json}, {"--faces": args.faces, "--artifact": artifact})
    except ValueError as e:
        print(f"bench_align_views: error: {e}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "machine": machine_info(),
        "artifact": artifact,
        "faces": str(faces),
        "faces_offset": None if args.faces_rest else args.faces_offset,
        "faces_rest": args.faces_rest,
        "sigma_px": args.sigma,
        "draws": args.draws,
        "view_shift_crop_px": _Q,
        "split_note": "FER+ valid chose the shipped model's checkpoint: accuracies are selection-split figures; "
        "this run chooses nothing",
        "sizes": [],
    }
    rows = []
    with load(artifact) as predictor:
        detector = YuNetDetector()
        for px in args.face_px:
            res = measure(
                predictor,
                detector,
                faces,
                args.faces_limit,
                px,
                args.sigma,
                args.draws,
                args.seed,
                args.faces_offset,
                args.faces_rest,
            )
            results["sizes"].append(res)
            for k, r in res["schemes"].items():
                rows.append(
                    [
                        f"{px:.0f}",
                        k,
                        str(r["model_runs_per_face"]),
                        str(res["faces_measured"]),
                        "-" if r["expression_agreement"] is None else f"{100 * r['expression_agreement']:.2f} %",
                        "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f} %",
                    ]
                )
    print(
        format_table(
            ["face px", "views", "model runs", "faces", f"same expression, N(0, {args.sigma} px)", "accuracy"], rows
        )
    )
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(results, indent=2) + "\n")
        print(f"results in {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
