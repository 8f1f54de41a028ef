"""Screen scoring choices on the validation signers of trained k-fold runs, without training anything: which
features a model is scored with (its embedding, its backbone's pooled features, or both averaged:
``model.inference.features``) and how a score is normalised (the references protocol's ``center``, or the
cohort S-norm / AS-norm of ``evaluation/cohort.py`` against the training signers' genuine signatures, or with
``--writer-svm`` the writer-dependent SVM of ``evaluation/writer_dependent.py`` against the same cohort).

    python -m benchmarks.scoring_screen --runs 'sweeps/BENCH/triplet_hard-seed0-fold{fold}' [--folds 5]

Each fold's run is read with its own data, split and evaluation settings; only its validation signers are
scored (a screen: the test signers stay untouched), with the protocol code `sigverify validate` uses. The
last line is JSON: for each (features, scoring), the EER's mean and std over folds and its value per fold.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks.common import emit, machine
from sigverify.evaluation.cohort import cohort_statistics, normalize_against_references, normalized
from sigverify.evaluation.metrics import eer
from sigverify.evaluation.protocols import cosine, pair_scores, reference_scores
from sigverify.evaluation.writer_dependent import WriterSVM
from sigverify.models.checkpoint import TrainedCheckpoint
from sigverify.models.embedding import embed_images
from sigverify.models.inference import InferenceConfig


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="the runs' folders; '{fold}' is replaced by the fold number")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--top-k", type=int, nargs="+", default=[50], help="AS-norm cohort sizes (0: S-norm)")
    parser.add_argument("--features", nargs="+", choices=FEATURES, default=list(FEATURES),
                        help="the feature choices to screen (default: all; each costs a pass over the images)")
    parser.add_argument("--writer-svm", action="store_true",
                        help="also score the references protocol with a per-writer SVM against the cohort")
    return parser.parse_args(argv)


FEATURES = ("embedding", "backbone", "both")


def fold_embeddings(run: str, features: list[str]) -> tuple[dict, tuple, np.ndarray, dict]:
    """The validation signers' embeddings under each feature choice, their labels, the cohort's (training
    signers' genuine signatures) and the run's evaluation settings."""
    checkpoint = TrainedCheckpoint.read(run)
    data = checkpoint.datamodule()
    data.setup("validate")
    needed = {"embedding", "backbone"} if "both" in features else set(features)
    networks = {name: checkpoint.network(InferenceConfig(features=name)) for name in sorted(needed)}

    def views(images):  # each network as `sigverify test` scores with it; "both" as EmbeddingEnsemble joins them
        out = {name: embed_images(network, np.asarray(images)) for name, network in networks.items()}
        if "both" in features:
            out["both"] = np.concatenate([out["embedding"], out["backbone"]], axis=1) / np.sqrt(2.0)
        return {name: out[name] for name in features}

    val = data.positions("val")
    train = data.positions("train")
    cohort = train[data.genuine[train]]
    return (views(data.images[val]), (data.signer_ids[val], data.genuine[val]), views(data.images[cohort]),
            checkpoint.evaluation)


def fold_figures(run: str, args: argparse.Namespace) -> dict[str, float]:
    embeddings, (signers, genuine), cohort, settings = fold_embeddings(run, args.features)
    n_references, draws = int(settings.get("n_references", 12)), int(settings.get("draws", 5))
    out = {}
    for features, vectors in embeddings.items():
        common = dict(n_references=n_references, draws=draws, seed=0)
        scores = reference_scores(vectors, signers, genuine, normalize="center", **common)
        out[f"{features}/references/center"] = eer(scores.genuine, scores.skilled)[0]
        scores = pair_scores(vectors, signers, genuine)
        out[f"{features}/pairs/raw"] = eer(scores.genuine, scores.skilled)[0]
        if args.writer_svm:
            scores = reference_scores(vectors, signers, genuine, scorer=WriterSVM(cohort[features]), **common)
            out[f"{features}/references/writer_svm"] = eer(scores.genuine, scores.skilled)[0]
        for k in args.top_k:
            name = "snorm" if k == 0 else f"asnorm{k}"
            scorer = lambda q, r, k=k: normalize_against_references(q, r, cohort[features], k)  # noqa: E731
            scores = reference_scores(vectors, signers, genuine, scorer=scorer, **common)
            out[f"{features}/references/{name}"] = eer(scores.genuine, scores.skilled)[0]
            stats = cohort_statistics(vectors, cohort[features], k)
            index = {tuple(v): i for i, v in enumerate(vectors)}

            def normed(a, b, stats=stats, index=index):
                ia, ib = [index[tuple(v)] for v in a], [index[tuple(v)] for v in b]
                return normalized(cosine(a, b), (stats[0][ia, None], stats[1][ia, None]),
                                  (stats[0][None, ib], stats[1][None, ib]))

            scores = pair_scores(vectors, signers, genuine, normed)
            out[f"{features}/pairs/{name}"] = eer(scores.genuine, scores.skilled)[0]
    print(f"[scoring] {run}: " + ", ".join(f"{k} {v:.4f}" for k, v in out.items()), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    per_fold = [fold_figures(args.runs.replace("{fold}", str(fold)), args) for fold in range(args.folds)]
    summary = {key: {"eer_mean": round(float(np.mean([f[key] for f in per_fold])), 4),
                     "eer_std": round(float(np.std([f[key] for f in per_fold])), 4),
                     "per_fold": [round(float(f[key]), 4) for f in per_fold]} for key in per_fold[0]}
    emit({"runs": args.runs, "folds": args.folds, "stage": "validation signers (screen)", "eer": summary,
          "std": "population standard deviation over folds (ddof 0)", "device": machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
