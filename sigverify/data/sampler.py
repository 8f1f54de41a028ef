"""The PKFM batch sampler: P signers x (K genuine + F skilled forgeries + M other signers' genuine).

- Batches are drawn from ``numpy.random.default_rng((seed, epoch))``: they change every epoch and
  are reproducible from (seed, epoch). Lightning calls :meth:`set_epoch` before each epoch.
- Signers are visited in shuffled rounds: every signer is drawn once before any is drawn twice,
  so prolific signers do not dominate.
- A signer with fewer genuine (forgery) samples than K (F) is sampled with replacement, with a
  warning; a signer with no forgeries gets other signers' signatures in their place.
- Under distributed training the global batch list is cut into ``num_replicas`` interleaved
  shards of equal length: each rank sees different batches and all run the same number of steps.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class PKFMBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        signers: Sequence[int],
        genuine: Sequence[bool],
        p: int = 8,
        k: int = 2,
        f: int = 2,
        m: int = 2,
        batches_per_epoch: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if min(p, k) < 1 or min(f, m) < 0:
            raise ValueError(f"PKFM needs P, K >= 1 and F, M >= 0; got P={p}, K={k}, F={f}, M={m}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        self.p, self.k, self.f, self.m = p, k, f, m
        self.seed, self.epoch = seed, 0
        self.num_replicas, self.rank = num_replicas, rank
        self._index(np.asarray(signers), np.asarray(genuine, dtype=bool))
        if len(self.anchor_signers) < 1:
            raise ValueError("PKFM sampler: no signer has a genuine sample")
        if len(self.anchor_signers) < p:
            warnings.warn(f"PKFM sampler: only {len(self.anchor_signers)} signers for P={p}; signers repeat in a batch")
        if batches_per_epoch is None:
            # About one pass over the genuine samples per epoch.
            batches_per_epoch = max(1, math.ceil(int(np.sum(genuine)) / (p * k)))
        self.batches_per_replica = math.ceil(batches_per_epoch / num_replicas)
        self._warn_short_signers()

    @property
    def batch_size(self) -> int:
        return self.p * (self.k + self.f + self.m)

    def _index(self, signers: np.ndarray, genuine: np.ndarray) -> None:
        positions = np.arange(len(signers))
        self.genuine_of = {s: positions[(signers == s) & genuine] for s in np.unique(signers)}
        self.forgery_of = {s: positions[(signers == s) & ~genuine] for s in np.unique(signers)}
        self.anchor_signers = np.array([s for s, idx in self.genuine_of.items() if len(idx) > 0])
        self.all_genuine = positions[genuine]
        self.signer_of = signers

    def _warn_short_signers(self) -> None:
        short_g = [s for s in self.anchor_signers if len(self.genuine_of[s]) < self.k]
        short_f = [s for s in self.anchor_signers if 0 < len(self.forgery_of[s]) < self.f]
        no_f = [s for s in self.anchor_signers if len(self.forgery_of[s]) == 0] if self.f else []
        if short_g:
            warnings.warn(f"PKFM sampler: {len(short_g)} signer(s) have fewer than K={self.k} genuine samples "
                          f"(e.g. {[int(s) for s in short_g[:5]]}); sampling them with replacement")
        if short_f:
            warnings.warn(f"PKFM sampler: {len(short_f)} signer(s) have fewer than F={self.f} forgeries "
                          f"(e.g. {[int(s) for s in short_f[:5]]}); sampling them with replacement")
        if no_f:
            warnings.warn(f"PKFM sampler: {len(no_f)} signer(s) have no forgeries (e.g. {[int(s) for s in no_f[:5]]}); "
                          "other signers' signatures take their place")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_replica

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches(self.epoch)
        yield from batches[self.rank :: self.num_replicas]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All replicas' batches of one epoch (rank r takes every ``num_replicas``-th one)."""
        rng = np.random.default_rng((self.seed, epoch))
        total = self.batches_per_replica * self.num_replicas
        visits = self._signer_rounds(rng, total * self.p)
        return [self._batch(rng, visits[b * self.p : (b + 1) * self.p]) for b in range(total)]

    def _signer_rounds(self, rng: np.random.Generator, count: int) -> np.ndarray:
        rounds = math.ceil(count / len(self.anchor_signers))
        return np.concatenate([rng.permutation(self.anchor_signers) for _ in range(rounds)])[:count]

    def _batch(self, rng: np.random.Generator, signers: np.ndarray) -> list[int]:
        batch: list[int] = []
        for s in signers:
            batch += _draw(rng, self.genuine_of[s], self.k)
            forgeries = _draw(rng, self.forgery_of[s], self.f)
            others = self.m + self.f - len(forgeries)
            batch += forgeries + self._others(rng, s, others)
        return batch

    def _others(self, rng: np.random.Generator, signer, count: int) -> list[int]:
        if count == 0:
            return []
        pool = self.all_genuine[self.signer_of[self.all_genuine] != signer]
        if len(pool) == 0:
            pool = self.all_genuine
        return rng.choice(pool, size=count, replace=len(pool) < count).tolist()


def _draw(rng: np.random.Generator, pool: np.ndarray, count: int) -> list[int]:
    if count == 0 or len(pool) == 0:
        return []
    return rng.choice(pool, size=count, replace=len(pool) < count).tolist()
