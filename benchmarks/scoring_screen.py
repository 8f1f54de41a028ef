"""Screen scoring choices on the validation signers of trained k-fold runs, without training anything: which
features a model is scored with (its embedding, its backbone's pooled features, both averaged, or its
backbone's averaged with the untrained starting point's: ``model.inference.features``) and how a score is
normalised (the references protocol's ``center``, or the cohort S-norm / AS-norm of ``evaluation/cohort.py``
against the training signers' genuine signatures, or with ``--writer-svm`` the writer-dependent SVM of
``evaluation/writer_dependent.py`` against the same cohort).

    python -m benchmarks.scoring_screen --runs 'sweeps/BENCH/triplet_hard-seed0-fold{fold}' [--folds 5]

Each fold's run is read with its own data, split and evaluation settings; only its validation signers are
scored (a screen: the test signers stay untouched unless ``--test``), with the protocol code `sigverify
validate` uses. The
last line is JSON: for each (features, scoring), the EER's mean and std over folds and its value per fold.

``--test NAME ...``, once the screen has fixed a choice: the test signers of each fold scored with the named
rows only (``backbone/references/center``, ...), each at the threshold of its EER on that fold's validation
signers (as `sigverify test` fixes one): the test EER and the HTER at that threshold (``test_eer``,
``test_hter``). Naming the rows keeps the choice on the validation signers: the other rows never see a test
signer.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from benchmarks.common import emit, machine
from sigverify.data.splits import refuse_seen_signers
from sigverify.evaluation.cohort import cohort_normalized_similarity, normalize_against_references
from sigverify.evaluation.metrics import eer, rates_at
from sigverify.evaluation.protocols import pair_scores, reference_scores
from sigverify.evaluation.report import EvalConfig
from sigverify.evaluation.writer_dependent import WriterSVM
from sigverify.models.checkpoint import TrainedCheckpoint
from sigverify.models.embedding import BackboneFeatures, EmbeddingEnsemble, embed_images, untrained_embedder
from sigverify.models.inference import FEATURES, JOINED_FEATURES, WITH_UNTRAINED, InferenceConfig


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="the runs' folders; '{fold}' is replaced by the fold number")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--top-k", type=int, nargs="*", default=[50],
                        help="AS-norm cohort sizes (0: S-norm; none given: no cohort scoring, so the training "
                             "signers are not embedded)")
    parser.add_argument("--features", nargs="+", choices=FEATURES, default=[f for f in FEATURES if f != WITH_UNTRAINED],
                        help=f"the feature choices to screen (default: all but {WITH_UNTRAINED}, which needs a model "
                             "that started from pretrained weights; each network costs a pass over the images)")
    parser.add_argument("--writer-svm", action="store_true",
                        help="also score the references protocol with a per-writer SVM against the cohort")
    parser.add_argument("--test", nargs="+", default=[], metavar="NAME",
                        help="the rows chosen on the validation signers (features/protocol/scoring) to score on the "
                             "test signers too, at their validation threshold")
    args = parser.parse_args(argv)
    rows = [f"{features}/{name}" for features in args.features for name in scorings(args, {})]
    if unknown := sorted(set(args.test) - set(rows)):
        parser.error(f"--test: {', '.join(unknown)} is not a row of this screen (rows: {', '.join(rows)})")
    return args



def fold_embeddings(run: str, features: list[str], parts: tuple[str, ...],
                    with_cohort: bool = True) -> tuple[dict, dict, dict]:
    """Per split part, each feature choice's embeddings with their signers and genuine flags; the cohort's
    (training signers' genuine signatures) under each choice, if ``with_cohort`` (else empty); the run's
    evaluation settings."""
    checkpoint = TrainedCheckpoint.read(run)
    data = checkpoint.datamodule()
    data.setup("validate")
    refuse_seen_signers(checkpoint.split, data.split_record(), f"the model of {run}")
    # One pass over the images per network; a joined choice joins two of them as the model's scoring does.
    needed = {part for name in features for part in JOINED_FEATURES.get(name, (name,))}
    networks = {name: checkpoint.network(InferenceConfig(features=name)) for name in sorted(needed - {"untrained"})}
    if "untrained" in needed:
        networks["untrained"] = BackboneFeatures(untrained_embedder(checkpoint.hparams))

    # Each network as `sigverify test` scores with it, in its evaluation batches (a convolution's float rounding
    # depends on the batch size, enough to flip near-tied decisions).
    def views(images):
        out = {name: embed_images(network, np.asarray(images), data.eval_batch_size) for name, network in networks.items()}
        for name, parts in JOINED_FEATURES.items():
            if name in features:
                out[name] = EmbeddingEnsemble.join([torch.from_numpy(out[part]) for part in parts]).numpy()
        return {name: out[name] for name in features}

    embedded = {}
    for part in parts:
        positions = data.positions(part)
        embedded[part] = (views(data.images[positions]), data.signer_ids[positions], data.genuine[positions])
    train = data.positions("train")
    cohort = views(data.images[train[data.genuine[train]]]) if with_cohort else dict.fromkeys(features)
    return embedded, cohort, checkpoint.evaluation


def scorings(args: argparse.Namespace, settings: dict) -> dict:
    """name -> scores(vectors, signers, genuine, cohort): every (protocol, normalisation) choice screened."""
    # The references protocol as the run's `sigverify validate` / `test` draws it (EvalConfig's defaults otherwise).
    defaults = EvalConfig()
    common = {key: settings.get(key, getattr(defaults, key)) for key in ("n_references", "draws", "reduce", "n_random", "seed")}
    choices = {"references/center": lambda v, s, g, c: reference_scores(v, s, g, normalize="center", **common),
               "pairs/raw": lambda v, s, g, c: pair_scores(v, s, g)}
    if args.writer_svm:
        choices["references/writer_svm"] = lambda v, s, g, c: reference_scores(v, s, g, scorer=WriterSVM(c), **common)
    for k in args.top_k:
        name = "snorm" if k == 0 else f"asnorm{k}"
        choices[f"references/{name}"] = lambda v, s, g, c, k=k: reference_scores(
            v, s, g, scorer=lambda q, r: normalize_against_references(q, r, c, k), **common)
        choices[f"pairs/{name}"] = lambda v, s, g, c, k=k: pair_scores(v, s, g, cohort_normalized_similarity(c, k))
    return choices


def fold_figures(run: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """{"eer": validation EER, and with --test "test_eer", "test_hter"}: each {features/scoring: value}."""
    parts = ("val", "test") if args.test else ("val",)
    embedded, cohort, settings = fold_embeddings(run, args.features, parts, with_cohort=bool(args.top_k or args.writer_svm))
    out = {key: {} for key in ("eer", "test_eer", "test_hter")[:3 if args.test else 1]}
    for features in args.features:
        for name, score in scorings(args, settings).items():
            def scored(part, score=score, features=features):
                views, signers, genuine = embedded[part]
                return score(views[features], signers, genuine, cohort[features])

            key = f"{features}/{name}"
            validation = scored("val")
            out["eer"][key], threshold = eer(validation.genuine, validation.skilled)
            if key in args.test:
                test = scored("test")
                at = rates_at(threshold, test.genuine, test.skilled)
                out["test_eer"][key] = eer(test.genuine, test.skilled)[0]
                out["test_hter"][key] = at["hter"]
    for figure, values in out.items():
        print(f"[scoring] {run} {figure}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()), flush=True)
    return out


def summary(values: list[dict[str, float]]) -> dict:
    return {key: {"mean": round(float(np.mean([v[key] for v in values])), 4),
                  "std": round(float(np.std([v[key] for v in values])), 4),
                  "per_fold": [round(float(v[key]), 4) for v in values]} for key in values[0]}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    per_fold = [fold_figures(args.runs.replace("{fold}", str(fold)), args) for fold in range(args.folds)]
    figures = {figure: summary([fold[figure] for fold in per_fold]) for figure in per_fold[0]}
    emit({"runs": args.runs, "folds": args.folds, "stage": "validation signers (screen)" + (
              f"; test signers for {', '.join(args.test)} at their validation thresholds" if args.test else ""),
          **figures, "std": "population standard deviation over folds (ddof 0)", "device": machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
