"""Screen a local pair head against the embedding it sits on (issue #13, "a pair head that compares
two feature maps locally"), on each fold's validation signers only.

    python -m benchmarks.pair_head --data ../shared/data/cedar/manifest.csv \\
        --backbone 'sweeps/cedar_cpu_5fold_v2/triplet_hard-seed0-fold{fold}' --folds 5

For each fold of the k-fold signer split, the backbone run's network is frozen. One stage of its
feature map becomes a set of local tokens per image. A small transformer reads a reference's and a
questioned signature's tokens together (cross-attention through joint self-attention, with learned
positions) and returns a logit: genuine pair or not. It trains on the fold's training signers only
(pairs of two genuine signatures against genuine-skilled and genuine-other pairs; augmented views
of each image), then scores the validation signers' pairs under both protocols with the same code
as ``sigverify test``. Three scores are compared on the same pairs: the embedding's cosine, the
head's logit, and their sum after scaling each by its spread on the training pairs.

The backbone is frozen and was (unless it is a synthetic-only model) trained on the same training
signers: its features separate those signers better than unseen ones, so the head learns from pairs
easier than those it is judged on. A head trained with the backbone is the other design; this
screen measures the cheap one. The issue's rule: the head is added to the model only if it beats
the embedding on validation signers.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import emit, machine
from sigverify.data.augment import AugmentConfig, build_train_transform
from sigverify.data.splits import refuse_seen_signers, same_validation_signers
from sigverify.evaluation.metrics import eer
from sigverify.evaluation.protocols import PROTOCOLS, cosine
from sigverify.evaluation.report import EvalConfig, protocol_scores
from sigverify.models.checkpoint import TrainedCheckpoint
from sigverify.serving.export import evaluation_config

SCORES = ("embedding", "head", "fused")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="manifest.csv of the data set to screen on")
    parser.add_argument("--backbone", required=True,
                        help="a run folder (or checkpoint); '{fold}' is replaced by the fold number")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--stage", type=int, default=-2, help="the backbone stage whose map gives the tokens")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=128, help="pairs per step")
    parser.add_argument("--views", type=int, default=4, help="augmented views of each training image")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-references", type=int, default=None,
                        help="references protocol: genuine signatures enrolled per signer (default: the backbone run's)")
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error("--folds must be at least 2 (the k-fold signer protocol)")
    return args


# -- the head ----------------------------------------------------------------------------------

class PairHead(nn.Module):
    """Two token sets [B, T, C] (reference, questioned) -> a logit [B]: joint self-attention over both
    sets lets every local feature of one image attend to every one of the other. Symmetric: the score
    is the mean over both orders."""

    def __init__(self, channels: int, tokens: int, dim: int = 64, layers: int = 2, heads: int = 4):
        super().__init__()
        self.project = nn.Linear(channels, dim)
        self.position = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.side = nn.Parameter(torch.randn(2, 1, 1, dim) * 0.02)  # which image a token comes from
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.1, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))

    def _one_order(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = self.project(a) + self.position + self.side[0]
        b = self.project(b) + self.position + self.side[1]
        x = torch.cat([self.cls.expand(len(a), -1, -1), a, b], dim=1)
        return self.out(self.encoder(x)[:, 0]).squeeze(1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self._one_order(a, b) + self._one_order(b, a))


# -- features of the frozen backbone -------------------------------------------------------------

@dataclass
class Features:
    embeddings: np.ndarray  # [N, D], unit length
    tokens: np.ndarray  # [N, T, C]: one stage's map, flattened over space


@torch.no_grad()
def features(embedder, images: np.ndarray, stage: int, batch: int = 256) -> Features:
    backbone = embedder.backbone
    if not hasattr(backbone, "forward_intermediates"):
        raise SystemExit(f"{type(backbone).__name__}: the pair head reads a plain timm backbone's stages "
                         "(forward_intermediates); the multi-scale neck is not supported here")
    embeddings, tokens = [], []
    for i in range(0, len(images), batch):
        x = embedder.normalize_input(torch.from_numpy(np.ascontiguousarray(images[i:i + batch, None])))
        last, (chosen,) = backbone.forward_intermediates(x, indices=[stage])
        tokens.append(chosen.flatten(2).transpose(1, 2).numpy())
        embeddings.append(F.normalize(embedder.head(backbone.forward_head(last)).float(), dim=1).numpy())
    return Features(np.concatenate(embeddings), np.concatenate(tokens))


def augmented_views(images: np.ndarray, augment: AugmentConfig, views: int, rng: np.random.Generator) -> np.ndarray:
    """[views, N, H, W]: view 0 is the image itself, the others the training augmentation's draws (none
    when the backbone trained without augmentation)."""
    transform = build_train_transform(augment)
    if transform is None:
        return images[None]
    transform.set_random_seed(int(rng.integers(2**31)))  # Compose keeps its own generator: seed it for repeatable views
    out = [images] + [np.stack([transform(image=im)["image"] for im in images]) for _ in range(views - 1)]
    return np.stack(out)


# -- training pairs --------------------------------------------------------------------------------

class PairSampler:
    """Pairs among training images: half genuine-genuine of one signer (label 1); the other half a
    genuine against its signer's skilled forgery (70 %, where the signer has one) or else another
    signer's genuine."""

    def __init__(self, signers: np.ndarray, genuine: np.ndarray, rng: np.random.Generator):
        self.rng = rng
        self.genuine_of = {u: np.flatnonzero((signers == u) & genuine) for u in np.unique(signers)}
        self.forged_of = {u: np.flatnonzero((signers == u) & ~genuine) for u in np.unique(signers)}
        self.users = [u for u in self.genuine_of if len(self.genuine_of[u]) > 1]
        if not self.users or (len(self.genuine_of) < 2 and not any(len(f) for f in self.forged_of.values())):
            raise ValueError("the training signers give no genuine pair or no negative pair to train a pair head on "
                             "(each needs 2 genuine signatures; negatives need forgeries or a second signer)")
        self.all_genuine = np.flatnonzero(genuine)
        self.signers = signers

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b, label = np.empty(n, int), np.empty(n, int), np.zeros(n, np.float32)
        for i in range(n):
            u = self.users[self.rng.integers(len(self.users))]
            a[i], other = self.rng.choice(self.genuine_of[u], 2, replace=False)
            if i % 2 == 0:
                b[i], label[i] = other, 1.0
            elif len(self.forged_of[u]) and (self.rng.random() < 0.7 or len(self.genuine_of) < 2):
                b[i] = self.rng.choice(self.forged_of[u])
            else:
                b[i] = self.rng.choice(self.all_genuine[self.signers[self.all_genuine] != u])
        return a, b, label


def train_head(tokens: np.ndarray, signers: np.ndarray, genuine: np.ndarray, args, rng) -> PairHead:
    """``tokens`` [views, N, T, C] of the training images; each pair draws its two views at random."""
    views, _, count, channels = tokens.shape
    head = PairHead(channels, count, args.dim, args.layers)
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps, pct_start=0.1)
    sampler, bank = PairSampler(signers, genuine, rng), torch.from_numpy(tokens)
    head.train()
    for step in range(args.steps):
        a, b, label = sampler.sample(args.batch)
        va, vb = rng.integers(views, size=args.batch), rng.integers(views, size=args.batch)
        loss = F.binary_cross_entropy_with_logits(head(bank[va, a], bank[vb, b]), torch.from_numpy(label))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"[pair-head] step {step}: loss {loss.item():.4f}", flush=True)
    return head.eval()


# -- scoring ---------------------------------------------------------------------------------------

def similarities(head: PairHead, shape: tuple[int, int], scale: dict[str, float], chunk: int = 1024) -> dict:
    """The three scores (:data:`SCORES`) as similarity functions over rows [embedding | flattened
    tokens], the form the protocols' code takes. The head scores ``chunk`` pairs at a time: its attention
    buffers grow with the tokens per image."""
    count, channels = shape

    def split(rows):
        rows = np.asarray(rows, np.float32)
        return rows[:, :-count * channels], torch.from_numpy(rows[:, -count * channels:].reshape(len(rows), count, channels))

    @torch.no_grad()
    def head_score(a, b):
        (_, ta), (_, tb) = split(a), split(b)
        i, j = (ix.ravel() for ix in np.meshgrid(np.arange(len(a)), np.arange(len(b)), indexing="ij"))
        logits = torch.cat([head(ta[i[k:k + chunk]], tb[j[k:k + chunk]]) for k in range(0, len(i), chunk)])
        return logits.numpy().reshape(len(a), len(b)).astype(np.float64)

    def embedding_score(a, b):
        return cosine(split(a)[0].astype(np.float64), split(b)[0].astype(np.float64))

    def fused(a, b):
        return embedding_score(a, b) / scale["embedding"] + head_score(a, b) / scale["head"]

    return dict(zip(SCORES, (embedding_score, head_score, fused)))


def training_spread(head: PairHead, feats: Features, signers, genuine, rng) -> dict[str, float]:
    """Each score's standard deviation over 2,048 training pairs: the scale that puts them side by side."""
    a, b, _ = PairSampler(signers, genuine, rng).sample(2048)
    with torch.no_grad():
        logits = head(torch.from_numpy(feats.tokens[a]), torch.from_numpy(feats.tokens[b])).numpy()
    cos = np.sum(feats.embeddings[a] * feats.embeddings[b], axis=1)
    return {"embedding": float(cos.std()) or 1.0, "head": float(logits.std()) or 1.0}


def fold_figures(fold: int, args) -> dict:
    data, embedder, evaluation = fold_setup(fold, args)
    rng = np.random.default_rng(args.seed + fold)
    train, val = data.positions("train"), data.positions("val")
    train_images = np.asarray(data.images[train])
    views = augmented_views(train_images, data.augment, args.views, rng)
    plain = features(embedder, train_images, args.stage)  # view 0: the images as they are
    train_tokens = np.stack([plain.tokens] + [features(embedder, v, args.stage).tokens for v in views[1:]])
    signers, genuine = data.signer_ids[train], data.genuine[train]
    torch.manual_seed(args.seed + fold)
    start = time.perf_counter()
    head = train_head(train_tokens, signers, genuine, args, rng)
    train_seconds = time.perf_counter() - start
    scale = training_spread(head, plain, signers, genuine, rng)
    feats = features(embedder, np.asarray(data.images[val]), args.stage)
    rows = np.concatenate([feats.embeddings, feats.tokens.reshape(len(val), -1)], axis=1)
    score_fns = similarities(head, feats.tokens.shape[1:], scale)
    out = {}
    for protocol in PROTOCOLS:
        config = replace(evaluation, protocol=protocol)
        for name, fn in score_fns.items():
            scores = protocol_scores(rows, data.signer_ids[val], data.genuine[val], config, fn)
            out[f"{protocol}/{name}"] = eer(scores.genuine, scores.skilled)[0]
    print(f"[pair-head] fold {fold}: " + ", ".join(f"{k} {v:.4f}" for k, v in out.items())
          + f" (head trained in {train_seconds:.0f} s)", flush=True)
    return out


def fold_setup(fold: int, args):
    """The fold's data (preprocessed and split as the backbone's run did, with this fold's signers), its
    frozen embedding network and the run's evaluation settings. A backbone that saw one
    of this fold's validation or test signers is refused, and so is a backbone of the same data
    validated on other signers (its figures would not be the documented screen's)."""
    checkpoint = TrainedCheckpoint.read(args.backbone.replace("{fold}", str(fold)), "backbone checkpoint")
    checkpoint_path = checkpoint.path
    data = checkpoint.datamodule(root=args.data)
    data.split_config = replace(data.split_config, mode="kfold", folds=args.folds, fold=fold, train=[], val=[], test=[],
                                file=None)
    data.setup()
    record, this_run = checkpoint.split, data.split_record()
    refuse_seen_signers(record, this_run, f"backbone {checkpoint_path}")
    if record and record.get("data") == this_run["data"] and not same_validation_signers(record, this_run):
        raise SystemExit(f"backbone {checkpoint_path} was validated on other signers of this data than fold {fold}'s "
                         f"({sorted(record['val'])} vs {sorted(this_run['val'])}): give the run of fold {fold} ('{{fold}}')")
    return data, checkpoint.network(), evaluation_settings(checkpoint, args)


def evaluation_settings(checkpoint: TrainedCheckpoint, args) -> EvalConfig:
    """The backbone run's evaluation settings (writer normalisation, references), so that the embedding
    column is the run's own figure; what the screen cannot reproduce (TTA, ensembles) is refused."""
    inference = checkpoint.inference
    unlike = ("as an ensemble" if inference.ensemble else "with test-time shifts" if inference.tta_shift else
              f"with its {inference.features} features" if inference.features != "embedding" else None)
    if unlike:
        raise SystemExit(f"backbone {checkpoint.path}: its run evaluates {unlike}, which the pair-head screen (its "
                         "embedding, one view) does not reproduce; give a run without them")
    try:
        return evaluation_config(checkpoint, None, PROTOCOLS[0], args.n_references)
    except ValueError as err:
        raise SystemExit(f"backbone {checkpoint.path}: {err}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    per_fold = [fold_figures(fold, args) for fold in range(args.folds)]
    summary = {}
    for key in per_fold[0]:
        values = np.array([f[key] for f in per_fold])
        summary[key] = {"eer_mean": round(float(values.mean()), 4), "eer_std": round(float(values.std()), 4),
                        "per_fold": [round(float(v), 4) for v in values]}
    emit({"dataset": args.data, "backbone": args.backbone, "folds": args.folds, "stage": "validation signers (screen)",
          "head": {"stage": args.stage, "dim": args.dim, "layers": args.layers, "steps": args.steps,
                   "batch": args.batch, "views": args.views, "lr": args.lr, "seed": args.seed},
          "split": "k-fold, the other settings the backbone run's", "n_references": args.n_references or "the run's",
          "eer": summary, "std": "population standard deviation over folds (ddof 0)", "device": machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
