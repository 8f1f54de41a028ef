"""``sigverify sweep`` (= ``make sweep``): train every loss under identical data, split, seed,
backbone, schedule and budget, test each on the same test signers, and tabulate them side by side.

A "loss" here is an experiment config, ``configs/<name>.yaml`` (every registered loss has one, and a
loss variant such as ``lsc_plus_hardest`` is one more file). Each member (loss x seed x fold) runs in
its own processes, so one failure is reported without stopping the rest, and a member that finished
is reused on a rerun. Members of one sweep form one W&B group (fit and test runs apart by job type).

``--screen`` is for choosing a recipe: it fits and reports on the *validation* signers only and never
touches the test signers. Run the test (without ``--screen``) once the recipe is fixed.

Other options go to ``sigverify`` for every member; ``{fold}`` in one is replaced by the member's fold,
and ``--model.inference.{ensemble,features,tta_shift}`` reach only the evaluation (they change no fit), so
``--model.inference.ensemble "[sweeps/other/supcon-seed0-fold{fold}]"`` scores each fold's model
together with another sweep's model of the same fold, and ``--model.inference.features backbone`` scores
the finished fits another way, without fitting again.

A preset's ``sweep: {ensemble: [LOSS, ...]}`` adds a column ``ensemble``: on each seed and fold, the
models of those losses scored together (similarities averaged; ``configs/presets/cedar_cpu_ensemble.yaml``).
``ensemble_seeds: N`` makes it N models of each loss from N training seeds, all of which the loss columns fit
(``configs/presets/cedar_grey_cpu_224_ensemble.yaml``).

    sigverify sweep --preset configs/presets/cpu_tiny.yaml --losses lsc_plus sct --seeds 0 1
    sigverify sweep --data ../shared/data/cedar/manifest.csv --folds 5 [--screen]
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from sigverify.cli import run_lightning, with_current_names
from sigverify.commandline import command_parser
from sigverify.config import compose
from sigverify.data.splits import stored_val_from
from sigverify.evaluation.protocols import PROTOCOLS, Scores
from sigverify.models.inference import InferenceConfig

FIT_DONE = "fit.done"  # written into a member's folder once its fit has finished


def experiments(folder: str | Path = "configs") -> list[str]:
    """The experiment configs a sweep can compare: ``configs/*.yaml`` but the shared base."""
    return sorted(p.stem for p in Path(folder).glob("*.yaml") if p.stem != "base")

# The write-up's table, then what it lacked. (key in report.json, label, is a rate)
ROWS = [
    ("tpr", "TPR at the validation threshold", True),
    ("fpr", "FPR (= FAR skilled) at the validation threshold", True),
    ("auc", "AUC", False),
    ("eer", "EER, a posteriori (test-chosen threshold)", True),
    ("threshold", "threshold (chosen on validation signers)", False),
    ("pos_score", "mean genuine score", False),
    ("neg_score", "mean skilled-forgery score", False),
    ("accuracy", "accuracy at the validation threshold", True),
    ("hter", "HTER at the validation threshold", True),
    ("far_random", "FAR random forgeries", True),
    ("eer_user_threshold", "EER with per-user thresholds", True),
    ("mean_user_auc", "mean per-user AUC", False),
    ("image_statistics_eer", "shortcut floor: EER of image statistics alone (same protocol)", True),
]


def member_name(loss: str, seed: int, fold: int | None) -> str:
    return f"{loss}-seed{seed}" + ("" if fold is None else f"-fold{fold}")


def run_member(loss: str, seed: int, fold: int | None, args, *, name: str | None = None, ckpt: str | None = None,
               members: list[str] = ()) -> dict[str, dict]:
    """fit + test (or, with ``--screen``, validate) one member in subprocesses: {protocol: its
    report, or {"error": ...}}.

    A member that was fitted before is not fitted again; only the protocols without a report are
    evaluated (all of them with ``--retest``), so adding a protocol or changing the evaluation
    settings of a finished sweep costs seconds. One evaluation process serves all of them.
    ``ckpt`` evaluates a trained checkpoint (or run folder) as it is, under ``name``; ``members``
    are scored together with it (before any ensemble member the options name).
    """
    name = name or member_name(loss, seed, fold)
    run = Path(args.out) / name
    stage = "validate" if args.screen else "test"
    report_paths = {protocol: run / f"{stage}-{protocol}" / "report.json" for protocol in args.protocols}
    given = ckpt or getattr(args, "ckpt", None)  # a trained checkpoint to evaluate as it is (no fit)
    fit_options, evaluation_options = member_options(fold, args)
    requested, configured = requested_inference(evaluation_options), configured_inference(loss, fold, args)
    ensemble = [*members, *requested.get("ensemble", configured["ensemble"])]
    if members:  # the last ensemble option wins, as on the command line
        evaluation_options += ["--model.inference.ensemble", json.dumps(ensemble)]
    fitted = given or (not args.force and is_fitted(run))  # a report in a folder without a finished fit is no model's
    # A report that embedded otherwise (other features or shifts than the evaluation's configs and the options
    # give, another ensemble, or the model alone) is not this evaluation's.
    wanted = {**configured, **requested, "ensemble": ensemble}
    missing = [p for p, path in report_paths.items()
               if not fitted or args.retest or not path.is_file() or not scored_as(path, wanted)]
    if not missing:
        print(f"[sweep] {name}: reusing its reports", flush=True)
        return {p: json.loads(path.read_text()) for p, path in report_paths.items()}
    # A fit (none yet, or one whose checkpoints were not kept) starts from an empty folder: every report goes.
    needs_fit = not given and not (fitted and has_checkpoint(run))
    missing = list(report_paths) if needs_fit else missing
    start = time.perf_counter()
    failure = fit_member(loss, seed, fold, args) if needs_fit else None
    if failure is None:
        # Options after the configs: a config file read after them (the preset's model.inference) would win.
        command = [stage, *member_command(loss, seed, fold, args, name, fit_options), "--ckpt_path", given or "best",
                   "--model.evaluation.protocol", missing[0],
                   "--model.evaluation.also_protocols", "[" + ",".join(missing[1:]) + "]", *evaluation_options]
        # Every missing protocol in one evaluation process: the embeddings are computed once.
        failure = call(command, Path(args.out) / f"{name}.log", mode="a")
    valid = {p for p in report_paths if p not in missing or failure is None}  # reports of this member's model
    if failure is None:
        print(f"[sweep] {name}: done in {time.perf_counter() - start:.0f} s", flush=True)
    return {p: json.loads(path.read_text()) if p in valid else failure for p, path in report_paths.items()}


def fit_member(loss: str, seed: int, fold: int | None, args) -> dict | None:
    """Fit one member unless it was fitted before (``--force``: again): None, or {"error": ...}."""
    name = member_name(loss, seed, fold)
    run = Path(args.out) / name
    if is_fitted(run) and has_checkpoint(run) and not args.force:
        return None
    shutil.rmtree(run, ignore_errors=True)  # an interrupted or failed fit leaves checkpoints that are not this one's
    start = time.perf_counter()
    failure = call(["fit", *member_command(loss, seed, fold, args, name, member_options(fold, args)[0])],
                   Path(args.out) / f"{name}.log", mode="w")
    if failure is None:  # the marker keeps the fit's wall time, for the accuracy benchmark
        (run / FIT_DONE).write_text(json.dumps({"fit_seconds": round(time.perf_counter() - start, 1)}))
    return failure


def is_fitted(run: Path) -> bool:
    # Folders of sweeps older than the fit.done marker: a test report meant a finished fit.
    return (run / FIT_DONE).is_file() or any(run.glob("test-*/report.json"))


def refuse_folders_of_another_scheme(args, folders: dict[Path, str], remedy: str) -> None:
    """Before anything runs: refuse to reuse k-fold members fitted (or evaluated) with validation signers drawn
    another way (``data.split.val_from``): their thresholds belong to another split, and would be mixed with
    this run's folds. ``folders``: the run's member folders, each with the loss whose configs evaluate it; only
    those holding a finished fit or a report are read. ``remedy`` ends the message (it depends on the tool)."""
    if not args.folds or args.force:  # no k-fold split; or every member is redone from an empty folder
        return
    refused: dict[tuple[str, str], list[str]] = {}  # (their scheme, this run's): member folders
    ours: dict[str, str] = {}  # per loss, resolved only where an earlier member is there to compare
    for folder, loss in folders.items():
        theirs = stored_scheme(folder) if is_fitted(folder) or any(folder.glob("*/report.json")) else None
        if theirs is None:
            continue
        if loss not in ours:
            ours[loss] = validation_scheme(loss, args, ours)
        if theirs != ours[loss]:
            refused.setdefault((theirs, ours[loss]), []).append(folder.name)
    if refused:
        raise SystemExit(f"{args.out} holds members whose k-fold validation signers were drawn another way: "
                         + "; ".join(f"{', '.join(names)} by data.split.val_from {theirs}, where this run draws them "
                                     f"by {mine}" for (theirs, mine), names in refused.items())
                         + f". {remedy}")


def stored_scheme(folder: Path) -> str | None:
    """How a member folder's k-fold split drew its validation signers, from the split its fit (or, for a model
    only evaluated here, its evaluation) saved; None where none is saved or the split is not k-fold."""
    saved = next((p for p in (folder / "split.json", *sorted(folder.glob("*/split.json"))) if p.is_file()), None)
    return stored_val_from(json.loads(saved.read_text()).get("config")) if saved else None


def validation_scheme(loss: str, args, known: dict[str, str]) -> str:
    """The ``data.split.val_from`` a member of ``loss`` gets, as ``sigverify fit`` itself resolves its configs
    and options: an option, an extra ``--config`` file or a ``--data.split`` mapping.
    ``known``: schemes already resolved for other losses; one whose configs give the same ``data.split`` as
    this loss's shares its scheme (the options act alike on both), which spares a start of ``sigverify``."""
    def split_section(name):
        return ((yaml.safe_load(compose(f"configs/{name}.yaml", args.preset)) or {}).get("data") or {}).get("split")

    if same := next((other for other in known if split_section(other) == split_section(loss)), None):
        return known[same]
    try:
        return resolved_fit_config(loss, args)["data"]["split"]["val_from"]
    except (KeyError, TypeError) as err:
        raise SystemExit(f"the members' config has no data.split.val_from: {err}") from err


def resolved_fit_config(loss: str, args, seed: int = 0) -> dict:
    """The config a member of ``loss`` trains under, as ``sigverify fit`` itself resolves the configs and the
    options (``--print_config``: the defaults filled in, each option applied by the parser's own rules), for
    fold 0 and ``seed``; the members' folders under ``args.out``. In this process: after the first, a call
    takes under a second, where a new ``sigverify`` process takes several."""
    import sigverify.training.cli  # noqa: F401  (Lightning's log handlers take the real stderr at import, not the redirect)

    fold = 0
    command = ["fit", "--print_config",  # first: an option missing its value cannot take it and run the fit
               *member_command(loss, seed, fold, args, "resolved", member_options(fold, args)[0])]
    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        try:
            run_lightning(with_current_names(command))
        except SystemExit as exit_:  # --print_config exits 0 once printed; a refused option exits 2
            if exit_.code:
                raise SystemExit(f"sigverify {' '.join(command)} refused the recipe: {errors.getvalue()[-2000:]}") from None
    config = yaml.safe_load(printed.getvalue())
    if not isinstance(config, dict):
        raise SystemExit(f"sigverify {' '.join(command)} printed {printed.getvalue()[:200]!r}, not a config")
    return config


def has_checkpoint(run: Path) -> bool:
    # An archive of a run may keep its reports without its checkpoints (gpu_session.sh): no evaluation from it.
    return any((run / "checkpoints").glob("best*.ckpt"))


def member_options(fold: int | None, args) -> tuple[list[str], list[str]]:
    """The extra options (for every step, for the evaluation only), "{fold}" replaced by the member's
    fold: per-fold ensemble members, e.g. "[sweeps/s/supcon-seed0-fold{fold}]"."""
    extra = [option.replace("{fold}", str(fold)) for option in args.extra] if fold is not None else args.extra
    return split_evaluation_only(extra)


def member_command(loss: str, seed: int, fold: int | None, args, name: str, options: list[str]) -> list[str]:
    """The ``sigverify`` arguments every step of a member shares."""
    command = ["--config", f"configs/{loss}.yaml", "--config", args.preset, "--vars.runs_root", str(args.out),
               "--vars.name", name, "--vars.group", Path(args.out).name, "--seed_everything", str(seed),
               "--trainer.enable_progress_bar", "false"]
    if args.data:
        command += ["--data.root", args.data]
    if fold is not None:
        command += ["--data.split.mode", "kfold", "--data.split.folds", str(args.folds), "--data.split.fold", str(fold)]
    return command + options


def call(command: list[str], log: Path, mode: str) -> dict | None:
    """Run ``sigverify COMMAND`` in its own process, its output into ``log``: None, or {"error": ...}."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open(mode) as handle:
        code = subprocess.call([sys.executable, "-m", "sigverify.cli", *command], stdout=handle, stderr=subprocess.STDOUT)
    if code == 0:
        return None
    print(f"[sweep] {log.stem}: {command[0]} failed (exit {code}); see {log}", flush=True)
    return {"error": f"{command[0]} failed (exit {code}), log: {log}"}


ENSEMBLE = "ensemble"  # the column of a preset's ``sweep.ensemble`` (its members: ensemble-seedS-foldF)


@dataclass(frozen=True)
class Ensemble:
    """A preset's ``sweep`` section: on each seed and fold, one model per loss and per training seed, scored
    together (similarities averaged). ``seeds`` > 1 repeats each loss under other training seeds, which
    evens out seed noise where a single loss is best (``configs/presets/cedar_grey_cpu_224_ensemble.yaml``)."""
    losses: tuple[str, ...]
    seeds: int = 1

    def models(self, seed: int) -> list[tuple[str, int]]:
        """(loss, training seed) of the ensemble of ``seed``: seeds ``seed * seeds`` onwards, so the ensembles
        of two seeds share no model, and with one seed per loss each model trains under ``seed`` itself."""
        return [(loss, seed * self.seeds + k) for loss in self.losses for k in range(self.seeds)]

    def training_seeds(self, seeds: list[int]) -> list[int]:
        """Every training seed the ensembles of ``seeds`` need, in their order (with one seed per loss: ``seeds``)."""
        return list(dict.fromkeys(trained for seed in seeds for _, trained in self.models(seed)))


def preset_ensemble(preset: str | Path) -> Ensemble | None:
    """The ensemble a preset's ``sweep`` section names (None if none): ``ensemble`` the losses, ``ensemble_seeds``
    how many models of each (1 unless given), scored together as one more column."""
    from sigverify.config import load_config

    section = load_config(preset).get("sweep") or {}
    if not hasattr(section, "keys"):
        raise ValueError(f"{preset}: sweep must be a mapping, e.g. sweep: {{ensemble: [triplet_hard, supcon]}}")
    if unknown := sorted(set(section) - {"ensemble", "ensemble_seeds"}):
        raise ValueError(f"{preset}: sweep: unknown key(s) {', '.join(unknown)} (known: ensemble, ensemble_seeds)")
    losses = section.get("ensemble") or []
    if isinstance(losses, str) or not hasattr(losses, "__iter__"):
        raise ValueError(f"{preset}: sweep.ensemble must be a list of losses, got {losses!r}")
    losses = [str(loss) for loss in losses]
    if unknown := [loss for loss in losses if loss not in experiments()]:
        raise ValueError(f"{preset}: sweep.ensemble names {', '.join(unknown)}, which have no configs/<name>.yaml")
    seeds = section.get("ensemble_seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"{preset}: sweep.ensemble_seeds must be a whole number >= 1, got {seeds!r}")
    if seeds > 1 and not losses:
        raise ValueError(f"{preset}: sweep.ensemble_seeds needs sweep.ensemble, the losses to repeat")
    if twice := sorted({loss for loss in losses if losses.count(loss) > 1}):
        raise ValueError(f"{preset}: sweep.ensemble names {', '.join(twice)} twice (more models of one loss: "
                         "sweep.ensemble_seeds)")
    if len(losses) * seeds == 1:
        raise ValueError(f"{preset}: sweep.ensemble needs two or more models: different losses, or one loss with "
                         f"ensemble_seeds >= 2; got {losses}")
    return Ensemble(tuple(losses), seeds) if losses else None


def run_ensemble(ensemble: Ensemble, seed: int, fold: int | None, args) -> dict[str, dict]:
    """The ensemble's models of one seed and fold scored together: the first one's run evaluated with the
    others as ensemble members, reported in a folder of its own (each member's own reports stay its)."""
    runs = [Path(args.out) / member_name(loss, trained, fold) for loss, trained in ensemble.models(seed)]
    if unfitted := [run.name for run in runs if not is_fitted(run)]:
        return {p: {"error": f"no finished fit of {', '.join(unfitted)}"} for p in args.protocols}
    # The reports stay this ensemble's only while the same fits make it up: other losses (the first one
    # is not in a report's ensemble list) or a refitted member make them another model's.
    folder = Path(args.out) / member_name(ENSEMBLE, seed, fold)
    record = folder / "members.json"
    others = requested_inference(member_options(fold, args)[1]).get("ensemble", [])  # members the options add (e.g. a transfer model)
    made_of = {str(member): fit_identity(Path(member)) for member in [*runs, *others]}
    if not record.is_file() or json.loads(record.read_text()) != made_of:
        shutil.rmtree(folder, ignore_errors=True)
    reports = run_member(ensemble.losses[0], seed, fold, args, name=folder.name, ckpt=str(runs[0]),
                         members=[str(run) for run in runs[1:]])
    if folder.is_dir():
        record.write_text(json.dumps(made_of, indent=1))
    return reports


def fit_identity(member: Path) -> list:
    """What tells one fit of a member (a run folder or a checkpoint file) from another: the names and
    times of its checkpoint file, or of its run's marker and best checkpoints."""
    files = [member] if member.is_file() else [member / FIT_DONE, *sorted((member / "checkpoints").glob("best*.ckpt"))]
    return [[file.name, file.stat().st_mtime_ns] for file in files if file.is_file()]


# How a trained model embeds in validate/test (what it scores, test-time shifts, ensemble members): the fit's own
# validation embeds with the plain network, so these change no fit. They reach the evaluation only (fit refuses an
# ensemble), stay out of a benchmark's recipe, and a new choice re-evaluates the finished fits.
EVALUATION_ONLY = ("--model.inference.ensemble", "--model.inference.features", "--model.inference.tta_shift")


def option_groups(options: list[str]) -> list[tuple[str, str | None, list[str]]]:
    """``sigverify`` options one by one as (key, value or None for a bare flag, the tokens it spans);
    ``--key value`` and ``--key=value``."""
    groups, i = [], 0
    while i < len(options):
        key, equals, inline = options[i].partition("=")
        if equals:
            groups.append((key, inline, options[i:i + 1]))
        elif i + 1 < len(options) and not options[i + 1].startswith("--"):
            groups.append((key, options[i + 1], options[i:i + 2]))
        else:
            groups.append((key, None, options[i:i + 1]))
        i += len(groups[-1][2])
    return groups


def split_evaluation_only(options: list[str]) -> tuple[list[str], list[str]]:
    """(options for every step, options for the evaluation step only)."""
    common, evaluation = [], []
    for key, _, tokens in option_groups(options):
        (evaluation if key in EVALUATION_ONLY else common).extend(tokens)
    return common, evaluation


def requested_inference(evaluation_options: list[str]) -> dict:
    """The ``model.inference`` settings the evaluation-only options set, e.g. {"features": "backbone",
    "ensemble": [...]} (the last of each wins, as on the command line)."""
    settings: dict = {}
    for key, value, _ in option_groups(evaluation_options):
        if key in EVALUATION_ONLY:
            settings[key.removeprefix("--model.inference.")] = yaml.safe_load(value or "")
    return inference_values(settings)


def inference_values(settings: dict) -> dict:
    """Inference settings in the types a report stores (YAML reads ``5e-2`` as a string, a missing list as None)."""
    settings = dict(settings)
    if "ensemble" in settings:
        settings["ensemble"] = [str(m) for m in settings["ensemble"] or []]
    if "tta_shift" in settings:
        try:
            settings["tta_shift"] = float(settings["tta_shift"])
        except (TypeError, ValueError):
            raise ValueError(f"model.inference.tta_shift must be a number, got {settings['tta_shift']!r}") from None
    return settings


def check_inference(losses: list[str], args) -> None:
    """Refuse, before any work, evaluation settings every member would fail on (a shift that is no number, a
    ``--config`` file that is not there): ValueError or FileNotFoundError naming it."""
    requested_inference(member_options(0, args)[1])  # fold 0 stands for any: "{fold}" is no YAML
    for loss in losses:
        configured_inference(loss, 0, args)


def configured_inference(loss: str, fold: int | None, args) -> dict:
    """How the evaluation embeds unless an option says otherwise: the ``model.inference`` its configs give (the
    experiment's, the preset's, any ``--config`` among the options), over the defaults. Those are the configs it
    runs under, whether the model was fitted here or comes from elsewhere (``--ckpt``)."""
    configs = [f"configs/{loss}.yaml", args.preset, *config_files(member_options(fold, args)[0])]
    inference = (yaml.safe_load(compose(*configs)).get("model") or {}).get("inference") or {}
    return inference_values({**asdict(InferenceConfig()), **inference})


def config_files(options: list[str]) -> list[str]:
    """The files ``--config FILE`` (or ``--config=FILE``) among command-line options name, in order."""
    return [option.partition("=")[2] if "=" in option else options[i + 1] for i, option in enumerate(options)
            if option.split("=", 1)[0] == "--config" and ("=" in option or i + 1 < len(options))]


def scored_as(path: Path, wanted: dict) -> bool:
    """Whether the report at ``path`` embedded with the inference settings ``wanted`` (those it names)."""
    report = json.loads(path.read_text())
    # Reports before issue #25 kept the inference settings in their "config".
    stored = report.get("inference", report.get("config", {}))
    defaults = {"features": "embedding", "tta_shift": 0.0, "ensemble": []}
    return all(stored.get(key, defaults.get(key)) == value for key, value in wanted.items())


def fit_seconds(run: Path) -> float | None:
    """The fit's wall time recorded in a member's marker (None for members fitted before it was kept)."""
    try:
        return json.loads((run / FIT_DONE).read_text()).get("fit_seconds")
    except (OSError, ValueError):
        return None


def aggregate(reports: list[dict]) -> dict:
    """Per row: mean and std over the members that finished; the CI when there is one member."""
    ok = [r for r in reports if "error" not in r]
    out = {"n": len(ok), "failed": len(reports) - len(ok)}
    for key, _, _ in ROWS:
        values = [r[key] for r in ok if r.get(key) is not None]
        out[key] = (float(np.mean(values)), float(np.std(values))) if values else None
    if len(ok) == 1:
        out["eer_ci95"], out["auc_ci95"] = ok[0].get("eer_ci95"), ok[0].get("auc_ci95")
    return out


def fmt(value, is_rate: bool, n: int) -> str:
    if value is None:
        return "n/a"
    mean, std = value
    scale, unit = (100, " %") if is_rate else (1, "")
    digits = 2 if is_rate else 4
    text = f"{mean * scale:.{digits}f}{unit}"
    return text + (f" ± {std * scale:.{digits}f}" if n > 1 else "")


PROTOCOL_NOTES = {
    "pairs": "pairs within each test signer (genuine-genuine vs genuine-skilled)",
    "references": "each questioned signature against enrolled genuine references of its signer",
}


def write_results(results: dict[str, dict[str, dict]], out: Path, meta: dict) -> None:
    """results[protocol][loss] -> results.csv (one row per protocol and metric) and results.md (a table each)."""
    losses = list(next(iter(results.values())))
    prefix = "screen-" if meta.get("screen") else ""
    with (out / f"{prefix}results.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["protocol", "metric", *[f"{loss}_{part}" for loss in losses for part in ("mean", "std")]])
        for protocol, by_loss in results.items():
            for key, _, _ in ROWS:
                writer.writerow([protocol, key, *[x for loss in losses for x in (by_loss[loss][key] or (None, None))]])
    lines = [f"# Loss comparison ({meta['data']}, preset {meta['preset']})", "",
             f"Members: seeds {meta['seeds']}" + (f", {meta['folds']} folds" if meta["folds"] else "") +
             ". Mean ± std over members; everything but the loss is identical.", ""]
    if (ensemble := meta.get("ensemble")) and ensemble.seeds > 1:
        lines += [f"The ensemble of seed S is made of each loss's models of training seeds {ensemble.seeds}S to "
                  f"{ensemble.seeds}S + {ensemble.seeds - 1}.", ""]
    if meta.get("screen"):
        lines += ["**Screening (`--screen`): figures on the validation signers, threshold found on them a "
                  "posteriori. For choosing a recipe; no test signer was used.**", ""]
    for protocol, by_loss in results.items():
        lines += [f"## Protocol `{protocol}`: {PROTOCOL_NOTES[protocol]}", "",
                  "| metric | " + " | ".join(losses) + " |", "|---|" + "---|" * len(losses)]
        for key, label, is_rate in ROWS:
            lines.append(f"| {label} | " + " | ".join(fmt(by_loss[loss][key], is_rate, by_loss[loss]["n"]) for loss in losses) + " |")
        cis = [by_loss[loss].get("eer_ci95") for loss in losses]
        if any(cis):
            lines.append("| EER 95 % CI (signer bootstrap) | " + " | ".join(
                "n/a" if not ci else f"{100 * ci[0]:.2f}-{100 * ci[1]:.2f} %" for ci in cis) + " |")
        lines += ["| members finished / failed | " + " | ".join(
            f"{by_loss[loss]['n']} / {by_loss[loss]['failed']}" for loss in losses) + " |", ""]
    if meta.get("pending"):
        lines += [f"Not run yet (the sweep is still running, or was stopped): {', '.join(meta['pending'])}.", ""]
    lines += [f"Wall time of this invocation: {meta['wall_s'] / 60:.1f} min "
              "(members fitted by an earlier invocation are reused, not timed).", ""]
    (out / f"{prefix}results.md").write_text("\n".join(lines))


def plot_overlay(out: Path, members: dict[str, list[str]], protocol: str, stage: str = "test") -> None:
    """ROC of each loss (its first finished member) under one protocol, overlaid."""
    from sigverify.evaluation.plots import plot_roc  # matplotlib, only when plotting

    curves = {}
    for loss, names in members.items():
        for name in names:
            path = out / name / f"{stage}-{protocol}" / "scores.npz"
            if path.is_file():
                curves[loss] = Scores(**dict(np.load(path)))
                break
    if curves:
        plot_roc(curves, out / f"{'screen-' if stage == 'validate' else ''}roc_overlay-{protocol}.png")


def write_outputs(reports: dict[str, list[dict]], members: dict[str, list[str]], protocols: list[str], out: Path,
                  meta: dict) -> dict[str, dict[str, dict]]:
    """Table, CSV and ROC overlays of the losses finished so far; rewritten after each loss, so a sweep
    cut off by a time limit still leaves what it finished."""
    results = {p: {loss: aggregate([r[p] for r in reports[loss]]) for loss in reports} for p in protocols}
    write_results(results, out, meta)
    for protocol in protocols:
        plot_overlay(out, {loss: members[loss] for loss in reports}, protocol, "validate" if meta.get("screen") else "test")
    return results


def main(argv: list[str] | None = None) -> int:
    if not experiments():
        raise SystemExit("sigverify sweep: no configs/*.yaml here; run it from the repository root")
    parser = command_parser("sigverify sweep", __doc__, raw=True)
    parser.add_argument("--data", default=None, help="manifest.csv (default: the built-in synthetic set)")
    parser.add_argument("--preset", default="configs/presets/cpu_tiny.yaml")
    parser.add_argument("--losses", "--experiments", nargs="+", default=None, choices=experiments(),
                        help="experiment configs (configs/<name>.yaml) to compare; default: the preset's "
                        "sweep.ensemble if it names one, else all")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--protocols", nargs="+", default=["pairs", "references"], choices=PROTOCOLS)
    parser.add_argument("--folds", type=int, default=0, help="k-fold over signers (0: the ratio split)")
    parser.add_argument("--out", default="sweeps/default")
    parser.add_argument("--force", action="store_true", help="rerun members that already finished")
    parser.add_argument("--retest", action="store_true",
                        help="test finished members again (new evaluation settings) without refitting them")
    parser.add_argument("--screen", action="store_true",
                        help="report on the validation signers only (validate-<protocol>/), for choosing a recipe")
    args, args.extra = parser.parse_known_args(argv)
    args.extra = with_current_names(args.extra)
    if not args.folds and any("{fold}" in option for option in args.extra):
        parser.error("an option names {fold}, but the sweep has no folds (give --folds)")
    try:
        ensemble = preset_ensemble(args.preset)
        args.losses = args.losses or (list(ensemble.losses) if ensemble else experiments())
        check_inference(args.losses, args)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if left_out := [loss for loss in (ensemble.losses if ensemble else []) if loss not in args.losses]:
        parser.error(f"the preset's sweep.ensemble needs {', '.join(left_out)} in --losses")
    start = time.perf_counter()
    folds = list(range(args.folds)) if args.folds else [None]
    columns = [*args.losses, *([ENSEMBLE] if ensemble else [])]
    # The ensemble's loss columns hold every model it is made of: with ensemble_seeds, more seeds than --seeds.
    seeds = {loss: ensemble.training_seeds(args.seeds) if ensemble and loss in ensemble.losses else args.seeds
             for loss in columns}
    members = {loss: [member_name(loss, s, f) for s in seeds[loss] for f in folds] for loss in columns}
    out = Path(args.out)
    refuse_folders_of_another_scheme(
        args, {out / name: ensemble.losses[0] if loss == ENSEMBLE else loss
               for loss, names in members.items() for name in names},
        remedy="Repeat their split with --data.split.val_from to reuse them, refit them with --force, or give another --out")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"data": args.data or "built-in synthetic set", "preset": args.preset, "seeds": seeds[args.losses[0]],
            "folds": args.folds, "screen": args.screen, "ensemble": ensemble}
    reports: dict[str, list[dict]] = {}
    table = out / ("screen-results.md" if args.screen else "results.md")
    for i, loss in enumerate(columns):
        try:
            reports[loss] = [run_ensemble(ensemble, s, f, args) if loss == ENSEMBLE else run_member(loss, s, f, args)
                             for s in seeds[loss] for f in folds]
        except KeyboardInterrupt:  # Ctrl-C, or `timeout -s INT`: the outputs keep the finished losses
            print(f"[sweep] stopped during {loss}; {table} holds the losses finished before it", flush=True)
            return 130
        meta.update(pending=columns[i + 1:], wall_s=time.perf_counter() - start)
        results = write_outputs(reports, members, args.protocols, out, meta)
    print(table.read_text())
    print(json.dumps({"results": str(table), "wall_s": round(meta["wall_s"], 1),
                      **{p: {loss: {k: r[k] for k in ("eer", "hter", "auc", "failed")} for loss, r in by_loss.items()}
                         for p, by_loss in results.items()}}))
    return 1 if all(r["n"] == 0 for by_loss in results.values() for r in by_loss.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
