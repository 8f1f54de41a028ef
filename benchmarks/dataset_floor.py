"""The data-set floor: how well image statistics alone tell data sets apart once preprocessed.

A model trained on several data sets at once (``data.train_extra``) could learn which set an image comes
from (its scanner, paper and pen) instead of who signed it. This measures how much of that the input
still carries: the shortcut floor's image statistics (ink amount, mean ink grey, ink box, aspect, stroke
width) of every preprocessed image, and a logistic regression that tells the data sets apart from them,
cross-validated over writers (no writer's images on both sides of a fold). A balanced accuracy near 0.5
means preprocessing put the sets on the same footing; near 1, these statistics alone name the set. Each
statistic's own AUC says which one does it.

    python -m benchmarks.dataset_floor --manifests ../shared/data/cedar/manifest.csv \
        ../shared/data/bhsig260_bengali/manifest.csv --height 128 --width 256 --grey [--ink-tone equalize]

``--grey`` with the default size is ``configs/presets/cedar_grey_cpu.yaml``'s preprocessing; without it, binarised.
The last line is JSON.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import emit
from sigverify.data.cache import default_cache_root, prepare
from sigverify.data.manifest import dataset_of, read_manifests
from sigverify.data.preprocess import INK_TONES, PreprocessConfig
from sigverify.evaluation.shortcut import FEATURES, image_statistics


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifests", nargs="+", required=True, help="two or more data sets' manifest.csv")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--grey", action="store_true", help="keep the ink's grey levels (data.preprocess.binarize false)")
    parser.add_argument("--ink-tone", choices=INK_TONES, default="keep")
    parser.add_argument("--folds", type=int, default=5, help="writer-grouped cross-validation folds")
    parser.add_argument("--cache-dir", default=None, help="default: the project's cache (as sigverify fit uses)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if len(args.manifests) < 2:
        parser.error("--manifests needs two data sets or more")
    if args.ink_tone != "keep" and not args.grey:
        parser.error("--ink-tone equalize acts on grey ink: add --grey")
    return args


def statistics_of(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(image statistics [N, F], data-set index per image, writer per image, the data sets' names)."""
    config = PreprocessConfig(height=args.height, width=args.width, binarize=not args.grey, ink_tone=args.ink_tone)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_root()
    prepared = prepare(read_manifests(args.manifests), config, cache / "preprocessed", workers=args.workers)
    batches = (torch.from_numpy(np.array(prepared.images[i:i + 512]))[:, None] for i in range(0, len(prepared.images), 512))
    stats = np.concatenate([image_statistics(batch).numpy() for batch in batches])
    writers = np.array([r.signer for r in prepared.records])
    names = sorted({dataset_of(w) for w in writers})
    return stats, np.array([names.index(dataset_of(w)) for w in writers]), writers, names


def separability(stats: np.ndarray, sets: np.ndarray, writers: np.ndarray, folds: int) -> dict:
    """Balanced accuracy and AUC (one set against the rest, averaged) of a logistic regression on the
    standardised statistics, out of fold over writers."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    probabilities = cross_val_predict(classifier, stats, sets, groups=writers, cv=GroupKFold(folds),
                                      method="predict_proba")
    auc = (roc_auc_score(sets, probabilities[:, 1]) if probabilities.shape[1] == 2
           else roc_auc_score(sets, probabilities, multi_class="ovr"))
    return {"balanced_accuracy": round(float(balanced_accuracy_score(sets, probabilities.argmax(1))), 4),
            "auc": round(float(auc), 4)}


def per_statistic_auc(stats: np.ndarray, sets: np.ndarray) -> dict:
    """Each statistic alone, first data set against the others: its AUC, folded to >= 0.5 (either direction tells)."""
    from sklearn.metrics import roc_auc_score

    first = sets == 0
    return {name: round(float(max(a, 1 - a)), 4)
            for name, a in ((n, roc_auc_score(first, stats[:, i])) for i, n in enumerate(FEATURES))}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stats, sets, writers, names = statistics_of(args)
    if len(set(writers)) < args.folds:
        raise SystemExit(f"{len(set(writers))} writers in all: too few for --folds {args.folds}")
    overall = separability(stats, sets, writers, args.folds)
    single = per_statistic_auc(stats, sets)
    print(f"data sets {names} ({np.bincount(sets).tolist()} images): balanced accuracy "
          f"{100 * overall['balanced_accuracy']:.1f} %, AUC {overall['auc']:.3f} from {len(FEATURES)} statistics")
    for name, value in sorted(single.items(), key=lambda item: -item[1]):
        print(f"  {name}: AUC {value:.3f} alone")
    emit({"datasets": names, "images": np.bincount(sets).tolist(), "input": [args.height, args.width],
          "grey": args.grey, "ink_tone": args.ink_tone, "folds": args.folds, **overall,
          "statistic_auc": single, "chance_balanced_accuracy": round(1 / len(names), 4)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
