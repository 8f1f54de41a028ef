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
folds, seed, the config each loss's fits train under, as ``sigverify fit`` resolves it) and records it: a
folder of another recipe is refused rather than reused. ``reused_folds`` counts folds fitted by an earlier run; ``device`` is
this machine's. Stopped (Ctrl-C, a time limit's SIGINT), it still prints the line for the folds it
finished (``folds_finished``); run again on the same folder, it reuses their reports and goes on.

A preset whose ``sweep.ensemble`` names losses (``configs/presets/cedar_cpu_ensemble.yaml``) is an
ensemble recipe: each fold fits one model per loss (and per training seed, with ``sweep.ensemble_seeds``:
``configs/presets/cedar_grey_cpu_224_ensemble.yaml``), then scores them together; ``train_minutes`` is their
fits' sum, and ``training_seeds`` names the seeds the models were fitted under.

``--seed 0 1`` fits every fold once per seed: the figures are then means over folds and seeds, ``std`` the
spread over folds of the seed means, and ``seed_std`` the spread of the 5-fold means over seeds. A recipe
that starts from pretrained weights also gets its **baseline** on each fold (``baseline_eer_mean``, ...):
the same network before any training, its backbone's pooled features scored exactly as the trained
models are. A recipe that does not beat its baseline has taught the network nothing. ``--untrained`` runs the
baseline alone (no fit; the line's figures are its own): a pretrained starting point under a setting in
minutes, e.g. the ink-tone control with ``--data.preprocess.ink_tone equalize``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from benchmarks.common import emit, machine
from sigverify import sweep
from sigverify.cli import with_current_names
from sigverify.config import compose
from sigverify.evaluation.protocols import PROTOCOLS
from sigverify.models.checkpoint import run_checkpoint


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="manifest.csv (default: the built-in synthetic set)")
    parser.add_argument("--preset", default="configs/presets/cedar_cpu.yaml")
    parser.add_argument("--loss", default=None, choices=sweep.experiments(),
                        help="experiment config, configs/<name>.yaml (default: triplet_hard; none with a preset "
                        "that names an ensemble)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="one fit per fold and seed")
    parser.add_argument("--protocol", default="references", choices=PROTOCOLS)
    parser.add_argument("--screen", action="store_true", help="validation signers only (choosing a recipe)")
    parser.add_argument("--ckpt", default=None, help="evaluate this trained checkpoint (or run folder) on every fold instead of "
                        "fitting one per fold: a transfer figure (e.g. a model trained on synthetic signers only)")
    parser.add_argument("--untrained", action="store_true", help="a pretrained recipe's untrained network alone (its "
                        "backbone's pooled features, scored as the trained models), nothing fitted: the starting point "
                        "under a setting, in minutes (e.g. the ink-tone control, --data.preprocess.ink_tone equalize)")
    parser.add_argument("--out", default=None, help="default: sweeps/bench-<preset>-<loss>-<hash of the recipe>")
    args, args.extra = parser.parse_known_args(argv)
    args.extra = with_current_names(args.extra)
    if args.folds < 2:
        parser.error("--folds must be at least 2 (the k-fold signer protocol)")
    try:
        args.ensemble = sweep.preset_ensemble(args.preset)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if args.ensemble and (args.loss or args.ckpt):
        parser.error(f"{args.preset} names an ensemble (sweep.ensemble): it trains its models itself, "
                     "so --loss and --ckpt do not apply")
    args.loss = sweep.ENSEMBLE if args.ensemble else args.loss or "triplet_hard"
    if args.ckpt and Path(args.ckpt).is_dir():  # a run folder stands for its best checkpoint
        args.ckpt = str(run_checkpoint(args.ckpt))
    if given := [key for key, _, _ in sweep.option_groups(args.extra) if key in MEMBER_SETTINGS]:
        parser.error(f"{given[0]} is set by the benchmark for each member: use --seed, --data, --folds or --out")
    try:
        losses = args.ensemble.losses if args.ensemble else [args.loss]
        args.training_configs = {loss: training_config(args, loss) for loss in losses}
        args.recipes = {loss: recipe(args, loss) for loss in losses}
        sweep.check_inference(list(args.recipes), args)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    # A finished member is reused, so another recipe (data, folds, training config) gets another folder.
    args.out = args.out or default_folder(args)
    # What the member runner reads from a sweep's arguments.
    args.protocols, args.force, args.retest = list(PROTOCOLS), False, False
    args.baseline = not args.ckpt and starts_pretrained(args)
    if args.untrained and not args.baseline:
        parser.error("--untrained needs a recipe that starts from pretrained weights (model.weights_file or "
                     "model.pretrained), and no --ckpt: a network from random weights is no baseline")
    alone = ("--model.inference.ensemble", "--model.inference.features")  # the baseline's own choice, not an option
    if args.untrained and (given := [option for option in args.extra if option.split("=", 1)[0] in alone]):
        parser.error(f"--untrained scores the untrained network alone, by its backbone's pooled features: "
                     f"{given[0].split('=', 1)[0]} does not apply")
    return args


def starts_pretrained(args: argparse.Namespace) -> bool:
    """Whether the recipe's network starts from pretrained weights (then its untrained features are a baseline)."""
    model = args.training_configs[next(iter(args.recipes))].get("model") or {}
    return model.get("weights_file") not in (None, "") or bool(model.get("pretrained"))


# What the benchmark sets for each member itself (from --seed, --data, --folds and the fold): an option setting
# one of them would train every member otherwise than the folder's names and its recipe say.
MEMBER_SETTINGS = ("--seed_everything", "--data.root", "--data.split.mode", "--data.split.folds", "--data.split.fold",
                   "--vars.runs_root", "--vars.name", "--vars.group")


def training_config(args: argparse.Namespace, loss: str) -> dict:
    """The config one loss's fits train under, as ``sigverify fit`` resolves the loss's file, the preset and
    the options, less what the benchmark sets per member (checked to be what it set: the seed, the data, the
    fold), the cache's place, and the evaluation-only settings (another scoring of the same fits is the same
    recipe)."""
    seed = args.seed[0]
    config = sweep.resolved_fit_config(loss, argparse.Namespace(**{**vars(args), "out": "sweeps/recipe"}), seed)
    data = config.get("data") or {}
    split = data.get("split") or {}
    member = {"seed_everything": config.pop("seed_everything", None), "data.split.mode": split.get("mode"),
              "data.split.fold": split.pop("fold", None), "data.split.folds": split.get("folds")}
    expected = {"seed_everything": seed, "data.split.mode": "kfold", "data.split.fold": 0, "data.split.folds": args.folds}
    if args.data:  # otherwise the configs' own data.root is part of the recipe
        member["data.root"], expected["data.root"] = data.pop("root", None), args.data
    if overridden := [key for key in expected if member[key] != expected[key]]:
        raise ValueError(f"the configs or options override what the benchmark sets for each member ({', '.join(overridden)}): "
                         "leave those to --seed, --data and --folds")
    data.pop("cache_dir", None)
    inference = (config.get("model") or {}).get("inference") or {}
    for option in sweep.EVALUATION_ONLY:
        inference.pop(option.removeprefix("--model.inference."), None)
    return config


def recipe(args: argparse.Namespace, loss: str) -> dict:
    """What one loss's fits depend on: the data, the fold split, the seed, and the config they train under
    (resolved, so a preset and its base with the same settings as options are one recipe; kept whole, so a
    refusal can name the settings that differ). The config is resolved for fold 0, so the training options
    that name ``{fold}`` are kept as written too."""
    per_fold = [[key, value] for key, value, _ in sweep.option_groups(sweep.split_evaluation_only(list(args.extra))[0])
                if "{fold}" in (value or "")]
    return {"data": data_path(args), "folds": args.folds, "seed": one_seed(args),
            "training_config": args.training_configs[loss], "per_fold_options": per_fold,
            "ckpt_sha256": sha(Path(args.ckpt).read_bytes()) if args.ckpt else None}


def data_path(args: argparse.Namespace) -> str | None:
    """The data path from the repository root: a copy of the repository elsewhere (another machine) is the same recipe."""
    return os.path.relpath(Path(args.data).resolve(), Path.cwd()) if args.data else None


def one_seed(args: argparse.Namespace) -> int | list[int]:
    return args.seed[0] if len(args.seed) == 1 else args.seed  # one seed: the claim folders had before


def recipe_as_written(args: argparse.Namespace, loss: str) -> dict:
    """The recipe as folders claimed it before the training config was resolved (the composed files' text,
    the extra options as written): such a folder of the same recipe is taken over, not refused."""
    return {"data": data_path(args), "folds": args.folds, "seed": one_seed(args),
            "config_sha256": sha(compose(f"configs/{loss}.yaml", args.preset).encode()),
            "extra": sweep.split_evaluation_only(list(args.extra))[0], "ckpt_sha256": args.recipes[loss]["ckpt_sha256"]}


def recipe_as_files(args: argparse.Namespace, loss: str) -> dict:
    """The recipe as the first folders claimed it (the two files' bytes, every extra option)."""
    return {"data": str(Path(args.data).resolve()) if args.data else None, "folds": args.folds, "seed": args.seed[0],
            "preset_sha256": sha(Path(args.preset).read_bytes()),
            "loss_config_sha256": sha(Path(f"configs/{loss}.yaml").read_bytes()), "extra": list(args.extra),
            "ckpt_sha256": args.recipes[loss]["ckpt_sha256"]}  # hashed once, by recipe()


EARLIER_CLAIMS = (recipe_as_written, recipe_as_files)


def digest(recipes: dict) -> str:
    return hashlib.sha256(json.dumps(recipes, sort_keys=True).encode()).hexdigest()[:8]


def default_folder(args: argparse.Namespace) -> str:
    """sweeps/bench-<preset>-<loss>-<hash of the recipe>; a folder an earlier version named by the recipe as
    written is still found (and its claim taken over) while none has the new name."""
    folder = f"sweeps/bench-{Path(args.preset).stem}-{args.loss}-{{}}"
    current = folder.format(digest(args.recipes))
    earlier = folder.format(digest({loss: recipe_as_written(args, loss) for loss in args.recipes}))
    return earlier if Path(earlier).is_dir() and not Path(current).exists() else current


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def claim_folder(args: argparse.Namespace, loss: str) -> None:
    """Record the recipe in the folder, or refuse a folder holding this loss's members of another recipe."""
    file = Path(args.out) / f"bench-recipe-{loss}.json"
    wanted = args.recipes[loss]
    if file.is_file():
        stored = json.loads(file.read_text())
        if stored != wanted and all(stored != earlier(args, loss) for earlier in EARLIER_CLAIMS):
            changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k) and k != "training_config")
            if isinstance(stored.get("training_config"), dict):  # name the settings, not only the section
                settings = differing_settings(stored["training_config"], wanted["training_config"])
                changed += settings[:6] + ([f"{len(settings) - 6} more settings"] if len(settings) > 6 else [])
            raise SystemExit(f"{args.out} holds {loss} members of another recipe ({', '.join(changed)} differ, "
                             f"see {file}); give another --out or remove that folder")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(wanted, indent=1))


MISSING = object()  # a setting one config lacks differs even from a null one


def differing_settings(stored, wanted, prefix: str = "") -> list[str]:
    """The dotted names of the settings where two configs differ (list items by their index)."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        return [name for key in sorted(set(stored) | set(wanted), key=str)
                for name in differing_settings(stored.get(key, MISSING), wanted.get(key, MISSING), f"{prefix}{key}.")]
    if isinstance(stored, list) and isinstance(wanted, list) and len(stored) == len(wanted):
        return [name for i, (a, b) in enumerate(zip(stored, wanted)) for name in differing_settings(a, b, f"{prefix}{i}.")]
    return [] if stored == wanted else [prefix.rstrip(".")]


def run_fold(fold: int, seed: int, args: argparse.Namespace) -> dict[str, dict]:
    """One fold's reports: its model's, or the ensemble's once each of its models is fitted."""
    if not args.ensemble:
        return sweep.run_member(args.loss, seed, fold, args)
    for loss, trained in args.ensemble.models(seed):
        sweep.fit_member(loss, trained, fold, args)  # a failed fit is reported by run_ensemble
    return sweep.run_ensemble(args.ensemble, seed, fold, args)


def run_baseline(fold: int, args: argparse.Namespace) -> dict[str, dict]:
    """The fold's untrained network: ``sigverify test`` (or ``validate``) without a checkpoint, scoring the
    backbone's pooled features (``model.inference.features backbone``) with the fold's own threshold and the
    trained models' test-time shifts. It stays alone: ensemble members and other features are theirs, not its."""
    name = f"baseline-fold{fold}"
    stage = "validate" if args.screen else "test"
    paths = {p: Path(args.out) / name / f"{stage}-{p}" / "report.json" for p in PROTOCOLS}
    fit_options, evaluation_options = sweep.member_options(fold, args)
    loss = next(iter(args.recipes))  # the loss plays no part: nothing is trained
    shift = sweep.requested_inference(evaluation_options).get("tta_shift")
    shifted = {} if shift is None else {"tta_shift": shift}
    wanted = {**sweep.configured_inference(loss, fold, args), **shifted, "features": "backbone", "ensemble": []}
    # A report scored otherwise (with ensemble members, as before the baseline was kept alone) is not the baseline's.
    if all(path.is_file() and sweep.scored_as(path, wanted) for path in paths.values()):
        return {p: json.loads(path.read_text()) for p, path in paths.items()}
    # After the configs (a --config among the options could set them otherwise): how the baseline embeds.
    command = [stage, *sweep.member_command(loss, args.seed[0], fold, args, name, fit_options),
               "--model.evaluation.protocol", PROTOCOLS[0], "--model.evaluation.also_protocols",
               f"[{','.join(PROTOCOLS[1:])}]", "--model.inference.features", "backbone", "--model.inference.ensemble", "[]",
               "--model.inference.tta_shift", str(wanted["tta_shift"])]
    failure = sweep.call(command, Path(args.out) / f"{name}.log", mode="a")
    return {p: failure or json.loads(path.read_text()) for p, path in paths.items()}


def summarise(reports: list[list[dict]], fit_seconds: list[float | None]) -> dict:
    """The figures the README quotes over folds (and seeds): ``reports[fold][seed]``; the mean over every
    member, ``std`` over folds of their seed means, ``seed_std`` over seeds of their fold means."""
    # The likelihood-ratio figures sit under "likelihood_ratio" in a report (absent without validation signers).
    finished = [[{**r, **r.get("likelihood_ratio", {})} for r in fold if "error" not in r] for fold in reports]

    def per_fold(key):
        return [[r[key] for r in fold if r.get(key) is not None] for fold in finished]

    def mean(key):
        values = [v for fold in per_fold(key) for v in fold]
        return round(float(np.mean(values)), 4) if values else None

    def fold_std(key):
        means = [np.mean(fold) for fold in per_fold(key) if fold]
        return round(float(np.std(means)), 4) if means else None

    def seed_std(key):
        seeds = max((len(fold) for fold in per_fold(key)), default=0)
        complete = [fold for fold in per_fold(key) if len(fold) == seeds]
        if seeds < 2 or len(complete) != len(reports):
            return None
        return round(float(np.std(np.mean(complete, axis=0))), 4)

    timed = [s for s in fit_seconds if s is not None]
    return {"eer_mean": mean("eer"), "eer_std": fold_std("eer"), "eer_seed_std": seed_std("eer"),
            "hter_mean": mean("hter"), "hter_std": fold_std("hter"), "hter_seed_std": seed_std("hter"),
            "image_statistics_eer_mean": mean("image_statistics_eer"),
            "auc_mean": mean("auc"), "far_random_mean": mean("far_random"),
            "cllr_mean": mean("cllr"), "cllr_std": fold_std("cllr"), "cllr_min_mean": mean("cllr_min"),
            "misleading_genuine_mean": mean("misleading_genuine"), "misleading_forgery_mean": mean("misleading_forgery"),
            "folds_finished": sum(bool(fold) and len(fold) == len(reports[0]) for fold in finished),
            # the fit subprocess's wall time per member (start-up and, on a first run, the cache build included)
            "train_minutes": round(float(np.mean(timed)) / 60, 2) if len(timed) == len(fit_seconds) else None}


def baseline_figures(reports: list[dict]) -> dict:
    """The untrained baseline's mean figures over folds, under ``baseline_`` keys."""
    ok = [r for r in reports if "error" not in r]
    return {f"baseline_{key}_mean": round(float(np.mean([r[key] for r in ok])), 4) if ok else None
            for key in ("eer", "hter")} | {"baseline_folds_finished": len(ok)}


def trained(args: argparse.Namespace) -> str:
    if args.untrained:
        return "not at all: the pretrained network's pooled features (--untrained)"
    return f"not on this data: {args.ckpt}" if args.ckpt else "on each fold's training signers"


def fold_fit_seconds(runs: Iterable[Path]) -> float | None:
    """A fold's training time: its model's fit, or an ensemble's members' fits together."""
    seconds = [sweep.fit_seconds(run) for run in runs]
    return None if None in seconds else sum(seconds)


def fold_models(args: argparse.Namespace, fold: int, seed: int) -> dict[Path, str]:
    """The run folders one fold and seed fits, each with its loss: the model, or the ensemble's models."""
    models = args.ensemble.models(seed) if args.ensemble else [(args.loss, seed)]
    return {Path(args.out) / sweep.member_name(loss, trained, fold): loss for loss, trained in models}


def refuse_another_validation_scheme(args: argparse.Namespace, members: list[tuple[int, int]], runs: dict) -> None:
    """Every folder this benchmark may reuse (fits, ensembles, untrained baselines) must share its k-fold
    validation signers (sweep.refuse_folders_of_another_scheme)."""
    first = next(iter(args.recipes))  # the loss the ensemble and the baseline are evaluated under
    folders = {run: loss for member in members for run, loss in runs[member].items()}
    if args.ensemble:
        folders |= {Path(args.out) / sweep.member_name(sweep.ENSEMBLE, seed, fold): first for fold, seed in members}
    if args.baseline:
        folders |= {Path(args.out) / f"baseline-fold{fold}": first for fold in range(args.folds)}
    # A recipe's options are part of its folder's claim: repeating the old split means another folder.
    sweep.refuse_folders_of_another_scheme(args, folders, remedy="Leave out --out (each recipe gets a folder of its "
                                           "own) or give another, adding --data.split.val_from to repeat their split")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    for loss in args.recipes:
        claim_folder(args, loss)
    members = [] if args.untrained else [(fold, seed) for fold in range(args.folds) for seed in args.seed]
    runs = {(fold, seed): fold_models(args, fold, seed) for fold, seed in members}
    refuse_another_validation_scheme(args, members, runs)
    reused = sum(all(sweep.is_fitted(run) for run in runs[member]) for member in members)
    done, baselines, stopped = {}, [], False
    try:
        for fold, seed in members:
            done[fold, seed] = run_fold(fold, seed, args)
        if args.baseline:
            for fold in range(args.folds):  # one at a time: a stopped run keeps the folds it finished
                baselines.append(run_baseline(fold, args))
    except KeyboardInterrupt:  # Ctrl-C or a time limit's SIGINT: the members finished so far still get their line
        print(f"[bench] stopped after {len(done)} of {len(members)} members: the line below summarises those",
              flush=True)
        stopped = True
    stopped_report = {p: {"error": "not run: the benchmark was stopped"} for p in PROTOCOLS}
    if args.untrained:  # the untrained network's reports are the figures
        reports = [[baselines[fold] if fold < len(baselines) else stopped_report] for fold in range(args.folds)]
        fits = [None]
    else:
        reports = [[done.get((fold, seed), stopped_report) for seed in args.seed] for fold in range(args.folds)]
        fits = [fold_fit_seconds(runs[member]) for member in members]
    by_protocol = {p: summarise([[r[p] for r in fold] for fold in reports], fits)
                   | (baseline_figures([b[p] for b in baselines]) if args.baseline and not args.untrained else {})
                   for p in PROTOCOLS}
    emit({"dataset": args.data or "built-in synthetic set", "preset": args.preset, "loss": args.loss,
          **({"ensemble_of": list(args.ensemble.losses)} if args.ensemble else {}),
          **({"ensemble_seeds": args.ensemble.seeds, "training_seeds": args.ensemble.training_seeds(args.seed)}
             if args.ensemble and args.ensemble.seeds > 1 else {}),
          "trained": trained(args),
          "folds": args.folds, "seed": args.seed[0] if len(args.seed) == 1 else args.seed, "protocol": args.protocol,
          "stage": "validation signers (screen)" if args.screen else "test signers",
          **by_protocol[args.protocol], "std": "population standard deviation over folds of the seeds' mean (ddof 0)",
          **({"baseline": "the untrained network: its backbone's pooled features, scored as the trained models"}
             if args.baseline else {}),
          "device": machine(), "reused_folds": reused, "extra_args": args.extra,
          "other_protocols": {p: v for p, v in by_protocol.items() if p != args.protocol}, "out": args.out})
    return 130 if stopped else 0 if by_protocol[args.protocol]["folds_finished"] == args.folds else 1


if __name__ == "__main__":
    sys.exit(main())
