"""The PKFM batch sampler: P signers x (K genuine + F skilled forgeries + M other signers' genuine).

- Batches are drawn from ``numpy.random.default_rng((seed, epoch))``: they change every epoch and
  are reproducible from (seed, epoch). Lightning sets the epoch through ``batch_sampler.sampler``
  (see :attr:`PKFMBatchSampler.sampler`), and a mid-epoch resume continues the epoch's own batches
  (:class:`ResumableLoader`).
- Signers are visited in shuffled rounds: every signer is drawn once before any is drawn twice,
  so prolific signers do not dominate. A batch never holds a signer twice while there are P signers.
- No dataset index appears twice in one batch while the pool allows it. A signer with fewer
  genuine (forgery) samples than K (F) is sampled with replacement, with a warning; a signer with
  no forgeries gets other signers' signatures in their place.
- Under distributed training the global batch list is cut into ``num_replicas`` interleaved
  shards of equal length: each rank sees different batches and all run the same number of steps.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from torch.utils.data import DataLoader, Sampler


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
        self.seed, self.epoch, self.start = seed, 0, 0
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
    def sampler(self) -> PKFMBatchSampler:
        """Lightning (``_set_sampler_epoch``) calls ``set_epoch`` on ``dataloader.sampler`` and on
        ``dataloader.batch_sampler.sampler`` only; this batch sampler is its own index sampler, so
        exposing itself there is what makes every epoch draw new batches."""
        return self

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
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0

    # -- resuming -----------------------------------------------------------------------------
    def state_dict(self, batches_done: int, epoch_finished: bool = False) -> dict:
        """Where the next batch comes from, after ``batches_done`` batches of the current epoch."""
        # Plain ints: checkpoints are read back with weights_only=True, which refuses numpy scalars.
        if epoch_finished or batches_done >= len(self):
            return {"seed": int(self.seed), "epoch": int(self.epoch) + 1, "start": 0}
        return {"seed": int(self.seed), "epoch": int(self.epoch), "start": int(batches_done)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            warnings.warn(f"PKFM sampler: the checkpoint's batches were drawn with seed {state['seed']}, this run "
                          f"uses {self.seed}; the resumed epoch draws new batches")
        self.epoch, self.start = int(state["epoch"]), int(state["start"])

    def __len__(self) -> int:
        return self.batches_per_replica

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start = self.start, 0  # a resumed epoch skips its first batches once
        batches = self.epoch_batches(self.epoch)[self.rank :: self.num_replicas]
        yield from batches[start:]

    # -- drawing ------------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All replicas' batches of one epoch (rank r takes every ``num_replicas``-th one)."""
        rng = np.random.default_rng((self.seed, epoch))
        total = self.batches_per_replica * self.num_replicas
        rounds = _SignerRounds(self.anchor_signers, rng)
        return [self._batch(rng, rounds.take(self.p)) for _ in range(total)]

    def _batch(self, rng: np.random.Generator, signers: list) -> list[int]:
        """Each signer's K genuine and F forgeries first, then the M others, none already in the batch."""
        own = {}
        used: set[int] = set()
        for s in signers:
            genuine = _draw(rng, self.genuine_of[s], self.k, used)
            forgeries = _draw(rng, self.forgery_of[s], self.f, used)
            own[s] = (genuine, forgeries)
        batch: list[int] = []
        for s in signers:  # order within a signer's group: K genuine, F forgeries, M others
            genuine, forgeries = own[s]
            others = self.m + self.f - len(forgeries)  # missing forgeries are replaced by others
            batch += genuine + forgeries + self._others(rng, s, others, used)
        return batch

    def _others(self, rng: np.random.Generator, signer, count: int, used: set[int]) -> list[int]:
        if count == 0:
            return []
        pool = self.all_genuine[self.signer_of[self.all_genuine] != signer]
        if len(pool) == 0:
            pool = self.all_genuine
        return _draw(rng, pool, count, used)


class _SignerRounds:
    """Signers in shuffled rounds; ``take(p)`` gives p distinct signers (when there are p), deferring a
    signer that a round boundary would put into the same batch twice."""

    def __init__(self, signers: np.ndarray, rng: np.random.Generator):
        self.signers, self.rng, self.queue = signers, rng, []

    def take(self, count: int) -> list:
        distinct = min(count, len(self.signers))
        chosen: list = []
        while len(chosen) < count:
            repeat = len(chosen) >= distinct  # fewer signers than P: repeats are unavoidable
            pick = next((i for i, s in enumerate(self.queue) if repeat or s not in chosen), None)
            if pick is None:
                self.queue += self.rng.permutation(self.signers).tolist()
            else:
                chosen.append(self.queue.pop(pick))
        return chosen


def _draw(rng: np.random.Generator, pool: np.ndarray, count: int, used: set[int]) -> list[int]:
    """``count`` members of ``pool`` not in ``used`` (which grows by them); repeats only when too few are free."""
    if count == 0 or len(pool) == 0:
        return []
    free = pool[~np.isin(pool, list(used))] if used else pool
    if len(free) >= count:
        picks = rng.choice(free, size=count, replace=False)
    else:  # the pool cannot fill the slots without repeats: every free one, then repeats
        picks = np.r_[rng.permutation(free), rng.choice(pool, size=count - len(free), replace=True)]
    used.update(int(i) for i in picks)
    return [int(i) for i in picks]


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`PKFMBatchSampler` whose position Lightning saves in checkpoints.

    Lightning saves ``state_dict()`` of a stateful training loader and, on resume, gives it back
    before the first iterator, except when ``configure_optimizers`` asks for
    ``estimated_stepping_batches`` (ours does): that builds the loader before the loop state is
    restored, and the state is never applied. So the data module restores the position too, through
    its own ``state_dict``/``load_state_dict``, before it builds the loader; both apply the same
    state. ``progress`` tells how many batches of the current epoch the training loop has consumed
    (not how many loader workers have prefetched) and whether the epoch is over.
    """

    def __init__(self, *args, progress: Callable[[], tuple[int, bool]], **kwargs):
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict(*self.progress())

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)
