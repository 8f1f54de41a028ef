"""The accuracy benchmark (``make bench-accuracy``): one recipe, fixed beforehand, under the k-fold
signer protocol, reported on each fold's test signers (thresholds from its validation
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
folds, seed, the composed config of each loss, the options the fits see) and records it: a folder of
another recipe is refused rather than reused. ``reused_folds`` counts folds fitted by an earlier run; ``device`` is
this machine's. Stopped (Ctrl-C, a time limit's SIGINT), it still prints the line for the folds it
finished (``folds_finished``); run again on the same folder, it reuses their reports and goes on.

A preset whose ``sweep.ensemble`` names losses (``configs/presets/cedar_cpu_ensemble.yaml``) is an
ensemble recipe: each fold fits one model per loss, then scores them together; ``train_minutes`` is
their fits' sum.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import emit, machine
from sigverify import sweep
from sigverify.config import compose
from sigverify.models.embedding import run_checkpoint
from sigverify.evaluation.protocols import PROTOCOLS


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="manifest.csv (default: the built-in synthetic set)")
    parser.add_argument("--preset", default="configs/presets/cedar_cpu.yaml")
    parser.add_argument("--loss", default=None, choices=sweep.experiments(),
                        help="experiment config, configs/<name>.yaml (default: triplet_hard; none with a preset "
                        "that names an ensemble)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol", default="references", choices=PROTOCOLS)
    parser.add_argument("--screen", action="store_true", help="validation signers only (choosing a recipe)")
    parser.add_argument("--ckpt", default=None, help="evaluate this trained checkpoint (or run folder) on every fold instead of "
                        "fitting one per fold: a transfer figure (e.g. a model trained on synthetic signers only)")
    parser.add_argument("--out", default=None, help="default: sweeps/bench-<preset>-<loss>-<hash of the recipe>")
    args, args.extra = parser.parse_known_args(argv)
    if args.folds < 2:
        parser.error("--folds must be at least 2 (the k-fold signer protocol)")
    try:
        args.ensemble = sweep.preset_ensemble(args.preset)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if args.ensemble and (args.loss or args.ckpt):
        parser.error(f"{args.preset} names an ensemble of losses (sweep.ensemble): it trains them itself, "
                     "so --loss and --ckpt do not apply")
    args.loss = sweep.ENSEMBLE if args.ensemble else args.loss or "triplet_hard"
    if args.ckpt and Path(args.ckpt).is_dir():  # a run folder stands for its best checkpoint
        args.ckpt = str(run_checkpoint(args.ckpt))
    try:
        args.recipes = {loss: recipe(args, loss) for loss in args.ensemble or [args.loss]}
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    # A finished member is reused, so another recipe (data, folds, configs, fit options) gets another folder.
    digest = hashlib.sha256(json.dumps(args.recipes, sort_keys=True).encode()).hexdigest()[:8]
    args.out = args.out or f"sweeps/bench-{Path(args.preset).stem}-{args.loss}-{digest}"
    # What the member runner reads from a sweep's arguments.
    args.protocols, args.force, args.retest = list(PROTOCOLS), False, False
    return args


def recipe(args: argparse.Namespace, loss: str) -> dict:
    """What one loss's fits depend on: the data, the fold split, the seed, the composed config (every
    file of the defaults chain, resolved) and the extra options but those of the evaluation only
    (another ensemble member is a new evaluation of the same fits)."""
    # the data path from the repository root: a copy of the repository elsewhere (another machine) is the same recipe
    data = os.path.relpath(Path(args.data).resolve(), Path.cwd()) if args.data else None
    return {"data": data, "folds": args.folds, "seed": args.seed,
            "config_sha256": sha(compose(f"configs/{loss}.yaml", args.preset).encode()),
            "extra": sweep.split_evaluation_only(list(args.extra))[0],
            "ckpt_sha256": sha(Path(args.ckpt).read_bytes()) if args.ckpt else None}


def legacy_recipe(args: argparse.Namespace, loss: str) -> dict:
    """The recipe as folders claimed before the composed config was hashed (the two files' bytes, every
    extra option): such a folder of the same recipe is taken over, not refused."""
    return {"data": str(Path(args.data).resolve()) if args.data else None, "folds": args.folds, "seed": args.seed,
            "preset_sha256": sha(Path(args.preset).read_bytes()),
            "loss_config_sha256": sha(Path(f"configs/{loss}.yaml").read_bytes()), "extra": list(args.extra),
            "ckpt_sha256": args.recipes[loss]["ckpt_sha256"]}  # hashed once, by recipe()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def claim_folder(args: argparse.Namespace, loss: str) -> None:
    """Record the recipe in the folder, or refuse a folder holding this loss's members of another recipe."""
    file = Path(args.out) / f"bench-recipe-{loss}.json"
    wanted = args.recipes[loss]
    if file.is_file():
        stored = json.loads(file.read_text())
        if stored != wanted and stored != legacy_recipe(args, loss):
            changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            raise SystemExit(f"{args.out} holds {loss} members of another recipe ({', '.join(changed)} differ, "
                             f"see {file}); give another --out or remove that folder")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(wanted, indent=1))


def run_fold(fold: int, args: argparse.Namespace) -> dict[str, dict]:
    """One fold's reports: its model's, or the ensemble's once each of its losses is fitted."""
    if not args.ensemble:
        return sweep.run_member(args.loss, args.seed, fold, args)
    for loss in args.ensemble:
        sweep.fit_member(loss, args.seed, fold, args)  # a failed fit is reported by run_ensemble
    return sweep.run_ensemble(args.ensemble, args.seed, fold, args)


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


def fold_fit_seconds(runs: list[Path]) -> float | None:
    """A fold's training time: its model's fit, or an ensemble's members' fits together."""
    seconds = [sweep.fit_seconds(run) for run in runs]
    return None if None in seconds else sum(seconds)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    for loss in args.recipes:
        claim_folder(args, loss)
    runs = [[Path(args.out) / sweep.member_name(loss, args.seed, fold) for loss in args.recipes]
            for fold in range(args.folds)]
    reused = sum(all(sweep.is_fitted(run) for run in fold) for fold in runs)
    reports, stopped = [], False
    try:
        for fold in range(args.folds):
            reports.append(run_fold(fold, args))
    except KeyboardInterrupt:  # Ctrl-C or a time limit's SIGINT: the folds finished so far still get their line
        print(f"[bench] stopped during fold {len(reports)}: the line below summarises the folds before it", flush=True)
        stopped = True
    reports += [{p: {"error": "not run: the benchmark was stopped"} for p in PROTOCOLS}] * (args.folds - len(reports))
    fits = [fold_fit_seconds(fold) for fold in runs]
    by_protocol = {p: summarise([r[p] for r in reports], fits) for p in PROTOCOLS}
    emit({"dataset": args.data or "built-in synthetic set", "preset": args.preset, "loss": args.loss,
          **({"ensemble_of": args.ensemble} if args.ensemble else {}),
          "trained": f"not on this data: {args.ckpt}" if args.ckpt else "on each fold's training signers",
          "folds": args.folds, "seed": args.seed, "protocol": args.protocol,
          "stage": "validation signers (screen)" if args.screen else "test signers",
          **by_protocol[args.protocol], "std": "population standard deviation over folds (ddof 0)",
          "device": machine(), "reused_folds": reused, "extra_args": args.extra,
          "other_protocols": {p: v for p, v in by_protocol.items() if p != args.protocol}, "out": args.out})
    return 130 if stopped else 0 if by_protocol[args.protocol]["folds_finished"] == args.folds else 1


if __name__ == "__main__":
    sys.exit(main())
