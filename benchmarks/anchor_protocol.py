"""The anchors' protocol, as a diagnostic beside our figures: the EER with a threshold found a posteriori on
each 5-writer subset of a fold's test writers, averaged over every subset, as papers that train on 50 of
CEDAR's writers and test on the other 5 report (MS-SigNet among them). It puts our figures in their units and
stays out of the headline, which is the HTER at the threshold fixed on validation writers.

    python -m benchmarks.anchor_protocol --runs 'sweeps/BENCH/triplet_hard-seed{seed}-fold{fold}' --seeds 0 1

It reads the test reports' scores (``test-<protocol>/scores.npz``) that ``sigverify test`` wrote; nothing is
retrained or re-embedded. Skilled forgeries are the negatives. The last line is JSON: per protocol, the mean
over folds and seeds of the subset-mean EER, beside the same runs' EER over all their test writers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import emit
from sigverify.evaluation.metrics import eer, subset_eer
from sigverify.evaluation.protocols import PROTOCOLS


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="run folders; '{fold}' and '{seed}' are replaced")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--size", type=int, default=5, help="writers per subset (default: %(default)s)")
    return parser.parse_args(argv)


def run_figures(run: Path, protocol: str, size: int) -> dict:
    path = run / f"test-{protocol}" / "scores.npz"
    if not path.is_file():
        raise SystemExit(f"{path}: no test scores (run `sigverify test` on {run} first)")
    scores = np.load(path)
    subsets = subset_eer(scores["genuine"], scores["skilled"], scores["genuine_users"], scores["skilled_users"], size)
    return {"subset_eer": subsets["eer_mean"], "eer": eer(scores["genuine"], scores["skilled"])[0],
            "subsets": subsets["subsets"]}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    runs = [Path(args.runs.format(fold=fold, seed=seed)) for fold in range(args.folds) for seed in args.seeds]
    out = {}
    for protocol in PROTOCOLS:
        figures = [run_figures(run, protocol, args.size) for run in runs]
        for run, fig in zip(runs, figures):
            print(f"{run} {protocol}: EER {100 * fig['eer']:.1f} %, over {fig['subsets']} subsets of {args.size} "
                  f"writers {100 * fig['subset_eer']:.1f} %", flush=True)
        out[protocol] = {f"{args.size}_writer_subset_eer_mean": round(float(np.mean([f["subset_eer"] for f in figures])), 4),
                         "all_test_writers_eer_mean": round(float(np.mean([f["eer"] for f in figures])), 4)}
    emit({"runs": args.runs, "folds": args.folds, "seeds": args.seeds, "negatives": "skilled forgeries",
          "threshold": "a posteriori on each subset (diagnostic only)", **out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
