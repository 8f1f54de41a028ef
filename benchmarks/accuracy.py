"""The accuracy benchmark (``make bench-accuracy``): one experiment under the k-fold signer protocol,
with a recipe fixed beforehand, reported on each fold's test signers (thresholds from its validation
signers), and summarised as mean ± std over the folds.

    python -m benchmarks.accuracy --data ../shared/data/cedar/manifest.csv \\
        --preset configs/presets/cedar_cpu.yaml --loss triplet_hard --folds 5 [--protocol references]

Members run through ``sigverify sweep``'s member runner, so they are the sweep's members (same
folders, reused on a rerun) and both protocols are evaluated at once; ``--protocol`` chooses the one
the JSON line leads with. ``--screen`` reports on the validation signers instead: that is how a
recipe is chosen; the test folds stay untouched until it is fixed. Other options go to ``sigverify``
(e.g. ``--model.neck multiscale``); the JSON line records them.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import emit, machine
from sigverify import sweep
from sigverify.evaluation.protocols import PROTOCOLS


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="manifest.csv (default: the built-in synthetic set)")
    parser.add_argument("--preset", default="configs/presets/cedar_cpu.yaml")
    parser.add_argument("--loss", default="triplet_hard", choices=sweep.experiments(),
                        help="experiment config, configs/<name>.yaml")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol", default="references", choices=PROTOCOLS)
    parser.add_argument("--screen", action="store_true", help="validation signers only (choosing a recipe)")
    parser.add_argument("--out", default=None, help="default: sweeps/bench-<preset>-<loss>[-<hash of the extra options>]")
    args, args.extra = parser.parse_known_args(argv)
    if args.folds < 2:
        parser.error("--folds must be at least 2 (the k-fold signer protocol)")
    # A finished member is reused, so a different recipe must not share its folder.
    recipe = hashlib.sha1(" ".join(args.extra).encode()).hexdigest()[:8] if args.extra else ""
    args.out = args.out or "-".join(filter(None, ["sweeps/bench", Path(args.preset).stem, args.loss, recipe]))
    # What the member runner reads from a sweep's arguments.
    args.protocols, args.force, args.retest = list(PROTOCOLS), False, False
    return args


def summarise(reports: list[dict], fit_seconds: list[float | None]) -> dict:
    """Mean and std over folds of the figures the README quotes (None where no fold finished)."""
    ok = [r for r in reports if "error" not in r]

    def stat(key, fn):
        values = [r[key] for r in ok if r.get(key) is not None]
        return round(float(fn(values)), 4) if values else None

    timed = [s for s in fit_seconds if s is not None]
    return {"eer_mean": stat("eer", np.mean), "eer_std": stat("eer", np.std),
            "hter_mean": stat("hter", np.mean), "hter_std": stat("hter", np.std),
            "image_statistics_eer_mean": stat("image_statistics_eer", np.mean),
            "auc_mean": stat("auc", np.mean), "far_random_mean": stat("far_random", np.mean),
            "folds_finished": len(ok),
            "train_minutes": round(float(np.mean(timed)) / 60, 2) if timed else None}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    reports = [sweep.run_member(args.loss, args.seed, fold, args) for fold in range(args.folds)]
    fits = [sweep.fit_seconds(Path(args.out) / sweep.member_name(args.loss, args.seed, fold)) for fold in range(args.folds)]
    by_protocol = {p: summarise([r[p] for r in reports], fits) for p in PROTOCOLS}
    emit({"dataset": args.data or "built-in synthetic set", "preset": args.preset, "loss": args.loss,
          "folds": args.folds, "seed": args.seed, "protocol": args.protocol,
          "stage": "validation signers (screen)" if args.screen else "test signers",
          **by_protocol[args.protocol], "device": machine(), "extra_args": args.extra,
          "other_protocols": {p: v for p, v in by_protocol.items() if p != args.protocol}, "out": args.out})
    return 0 if by_protocol[args.protocol]["folds_finished"] == args.folds else 1


if __name__ == "__main__":
    sys.exit(main())
