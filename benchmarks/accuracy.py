"""The accuracy benchmark (``make bench-accuracy``): one experiment under the k-fold signer protocol,
with a recipe fixed beforehand, reported on each fold's test signers (thresholds from its validation
signers), and summarised as mean ± std over the folds.

    python -m benchmarks.accuracy --data ../shared/data/cedar/manifest.csv \\
        --preset configs/presets/cedar_cpu.yaml --loss triplet_hard --folds 5 [--protocol references]

Members run through ``sigverify sweep``'s member runner, so they are the sweep's members (same
folders, reused on a rerun) and both protocols are evaluated at once; ``--protocol`` chooses the one
the JSON line leads with. ``--screen`` reports on the validation signers instead: that is how a
recipe is chosen; the test folds stay untouched until it is fixed. ``--ckpt CKPT`` evaluates one trained
checkpoint on every fold instead of fitting (a transfer figure: each fold's threshold still comes
from its validation signers). Other options go to ``sigverify``
(e.g. ``--model.neck multiscale``); the JSON line records them. The folder is named by the recipe (data,
folds, seed, the config files' contents, the options) and records it: a folder of another recipe is
refused rather than reused. ``reused_folds`` counts folds fitted by an earlier run; ``device`` is
this machine's.
"""
from __future__ import annotations

import argparse
import hashlib
import json
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
    parser.add_argument("--ckpt", default=None, help="evaluate this trained checkpoint on every fold instead of "
                        "fitting one per fold: a transfer figure (e.g. a model trained on synthetic signers only)")
    parser.add_argument("--out", default=None, help="default: sweeps/bench-<preset>-<loss>-<hash of the recipe>")
    args, args.extra = parser.parse_known_args(argv)
    if args.folds < 2:
        parser.error("--folds must be at least 2 (the k-fold signer protocol)")
    args.recipe = recipe(args)
    # A finished member is reused, so another recipe (data, folds, config files, options) gets another folder.
    digest = hashlib.sha256(json.dumps(args.recipe, sort_keys=True).encode()).hexdigest()[:8]
    args.out = args.out or f"sweeps/bench-{Path(args.preset).stem}-{args.loss}-{digest}"
    # What the member runner reads from a sweep's arguments.
    args.protocols, args.force, args.retest = list(PROTOCOLS), False, False
    return args


def recipe(args: argparse.Namespace) -> dict:
    """What the folds' figures depend on: the data, the fold split, the seed, the config files' contents
    and the extra options."""
    def sha(path: str | Path) -> str:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]

    return {"data": str(Path(args.data).resolve()) if args.data else None, "folds": args.folds, "seed": args.seed,
            "preset_sha256": sha(args.preset), "loss_config_sha256": sha(f"configs/{args.loss}.yaml"),
            "extra": list(args.extra), "ckpt_sha256": sha(args.ckpt) if args.ckpt else None}


def claim_folder(args: argparse.Namespace) -> None:
    """Record the recipe in the folder, or refuse a folder holding this loss's members of another recipe."""
    file = Path(args.out) / f"bench-recipe-{args.loss}.json"
    if file.is_file():
        stored = json.loads(file.read_text())
        if stored != args.recipe:
            changed = sorted(k for k in set(stored) | set(args.recipe) if stored.get(k) != args.recipe.get(k))
            raise SystemExit(f"{args.out} holds {args.loss} members of another recipe ({', '.join(changed)} differ, "
                             f"see {file}); give another --out or remove that folder")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(args.recipe, indent=1))


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
            # the fit subprocess's wall time per fold (start-up and, on a first run, the cache build included)
            "train_minutes": round(float(np.mean(timed)) / 60, 2) if len(timed) == len(fit_seconds) else None}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    claim_folder(args)
    runs = [Path(args.out) / sweep.member_name(args.loss, args.seed, fold) for fold in range(args.folds)]
    reused = sum((run / sweep.FIT_DONE).is_file() for run in runs)
    reports = [sweep.run_member(args.loss, args.seed, fold, args) for fold in range(args.folds)]
    fits = [sweep.fit_seconds(run) for run in runs]
    by_protocol = {p: summarise([r[p] for r in reports], fits) for p in PROTOCOLS}
    emit({"dataset": args.data or "built-in synthetic set", "preset": args.preset, "loss": args.loss,
          "trained": f"not on this data: {args.ckpt}" if args.ckpt else "on each fold's training signers",
          "folds": args.folds, "seed": args.seed, "protocol": args.protocol,
          "stage": "validation signers (screen)" if args.screen else "test signers",
          **by_protocol[args.protocol], "std": "population standard deviation over folds (ddof 0)",
          "device": machine(), "reused_folds": reused, "extra_args": args.extra,
          "other_protocols": {p: v for p, v in by_protocol.items() if p != args.protocol}, "out": args.out})
    return 0 if by_protocol[args.protocol]["folds_finished"] == args.folds else 1


if __name__ == "__main__":
    sys.exit(main())
