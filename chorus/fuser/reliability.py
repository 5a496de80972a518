"""How reliable each member is, from the members' votes alone: Dawid and Skene's model.

Each member m is a confusion matrix pi_m[true, voted] and the classes have priors; the true
label of a row is hidden. EM alternates: given the matrices, each row's posterior over the
true label is prior * prod_m pi_m[., vote_m]; given the posteriors, each matrix is the
expected count of (true, voted) pairs, smoothed. No label is needed, so weights can move
before any feedback arrives: a member that disagrees with the consensus of the others in a
consistent way earns a low estimated accuracy.

Online, the fuser keeps the expected counts per capability (`Counts`): each fused task adds
its rows' posteriors under the current estimate (online EM without forgetting), and replicas
push their additions to the JetStream key-value bucket `chorus_reliability`, where counts
from every replica add up.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from nats.js import JetStreamContext

from chorus.core.subjects import kv_key
from chorus.fuser.watched import WatchedBucket

BUCKET = "chorus_reliability"
SMOOTHING = 0.5
"""Pseudo-counts added to every confusion cell (and prior), so an unseen pair is unlikely,
not impossible."""
FLUSH_S = 2.0
MIN_ROWS = 30
"""Rows of votes before the online estimate is used; fewer fall back to the majority vote."""


def estimate(votes: np.ndarray, classes: int, iters: int = 100, tol: float = 1e-6) -> Counts:
    """Batch EM over votes [rows, members] (each a class index), from majority-vote
    posteriors; returns the expected counts of the fit."""
    posterior = vote_shares(votes, classes)
    counts = Counts.from_posterior(posterior, votes, classes)
    for _ in range(iters):
        new = counts.posterior(votes)
        counts = Counts.from_posterior(new, votes, classes)
        if np.abs(new - posterior).max() < tol:
            break
        posterior = new
    return counts


@dataclass
class Counts:
    """Expected (true, voted) counts per member and expected class counts: the sufficient
    statistics of the model, additive across rows, tasks and replicas."""

    confusion: np.ndarray  # [members, classes, classes]
    prior: np.ndarray  # [classes]

    @classmethod
    def empty(cls, members: int, classes: int) -> Counts:
        return cls(np.zeros((members, classes, classes)), np.zeros(classes))

    @classmethod
    def from_posterior(cls, posterior: np.ndarray, votes: np.ndarray, classes: int) -> Counts:
        members = votes.shape[1]
        confusion = np.zeros((members, classes, classes))
        for m in range(members):
            onehot = np.eye(classes)[votes[:, m]]
            confusion[m] = posterior.T @ onehot
        return cls(confusion, posterior.sum(axis=0))

    @property
    def rows(self) -> float:
        return float(self.prior.sum())

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(pi [members, classes, classes], class priors), smoothed."""
        c = self.confusion + SMOOTHING
        pi = c / c.sum(axis=2, keepdims=True)
        p = self.prior + SMOOTHING
        return pi, p / p.sum()

    def posterior(self, votes: np.ndarray) -> np.ndarray:
        pi, prior = self.matrices()
        log = np.log(prior)[None, :].repeat(len(votes), axis=0)
        for m in range(votes.shape[1]):
            log += np.log(pi[m][:, votes[:, m]]).T
        log -= log.max(axis=1, keepdims=True)
        p = np.exp(log)
        return np.asarray(p / p.sum(axis=1, keepdims=True))

    def posterior_from_scores(self, probabilities: Sequence[np.ndarray]) -> np.ndarray:
        """The posterior when each member gives a distribution instead of one vote: its
        evidence for class c is the expected log pi_m[c, v] under its own probabilities (the
        votes' posterior when they are one-hot), so a member unsure between two classes
        weighs as little as it says."""
        pi, prior = self.matrices()
        log = np.log(prior)[None, :] + sum(
            np.asarray(p, dtype=np.float64) @ np.log(pi[m]).T for m, p in enumerate(probabilities)
        )
        log -= log.max(axis=1, keepdims=True)
        e = np.exp(log)
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    def accuracy(self) -> np.ndarray:
        """Each member's estimated accuracy: sum over classes of prior * pi[c, c]."""
        pi, prior = self.matrices()
        return np.asarray(np.einsum("c,mcc->m", prior, pi))

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.confusion + other.confusion, self.prior + other.prior)


@dataclass
class Estimate:
    """One capability's counts with the members they belong to, in a fixed order."""

    members: list[str]
    counts: Counts

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "members": self.members,
                "confusion": self.counts.confusion.tolist(),
                "prior": self.counts.prior.tolist(),
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Estimate:
        d = json.loads(raw)
        counts = Counts(np.asarray(d["confusion"], float), np.asarray(d["prior"], float))
        return cls(list(d["members"]), counts)

    def aligned(self, members: Sequence[str], classes: int) -> Counts:
        """The counts for `members` in that order (zeros for a member not seen yet)."""
        out = Counts.empty(len(members), classes)
        if self.counts.prior.shape != (classes,):
            return out
        out.prior = self.counts.prior.copy()
        index = {m: i for i, m in enumerate(self.members)}
        for j, m in enumerate(members):
            if m in index:
                out.confusion[j] = self.counts.confusion[index[m]]
        return out

    def merged(self, members: Sequence[str], add: Counts) -> Estimate:
        names = list(dict.fromkeys([*self.members, *members]))
        classes = add.prior.shape[0]
        base = self.aligned(names, classes)
        extra = Counts.empty(len(names), classes)
        extra.prior = add.prior
        for j, m in enumerate(members):
            extra.confusion[names.index(m)] = add.confusion[j]
        return Estimate(names, base + extra)


def vote_shares(votes: np.ndarray, classes: int) -> np.ndarray:
    """Each row's share of members voting each class: the posterior before any estimate."""
    shares = np.zeros((len(votes), classes))
    for m in range(votes.shape[1]):
        shares[np.arange(len(votes)), votes[:, m]] += 1.0
    return shares / votes.shape[1]


class ReliabilityStore(WatchedBucket[Estimate]):
    """Per capability, the counts every replica has added, read from the watch; this
    replica's own additions wait in memory and are merged in with compare-and-set."""

    def __init__(self, js: JetStreamContext, bucket: str = BUCKET, replicas: int = 1) -> None:
        super().__init__(js, bucket, Estimate.from_json, Estimate.to_json, replicas=replicas)
        self._pending: dict[tuple[str, tuple[str, ...]], tuple[int, list[np.ndarray]]] = {}
        self._since = time.monotonic()

    def get(self, capability: str) -> Estimate | None:
        return self.cached(kv_key(capability))

    def observe(
        self, capability: str, members: Sequence[str], votes: np.ndarray, classes: int
    ) -> None:
        """Queue one task's votes [rows, members]; `flush` adds them to the counts. Their
        posterior is taken at the flush, in one vectorised pass over every task since the
        last: per task that cost the fuser more than the fusion itself."""
        if not self._pending:
            self._since = time.monotonic()
        key = (capability, tuple(members))
        known = self._pending.get(key)
        if known is None or known[0] != classes:
            self._pending[key] = known = (classes, [])
        known[1].append(votes)

    def due(self) -> bool:
        return bool(self._pending) and time.monotonic() - self._since >= FLUSH_S

    def _counts(
        self, capability: str, members: Sequence[str], votes: np.ndarray, classes: int
    ) -> Counts:
        """The votes' expected counts under the current estimate (under the vote shares
        until there is one)."""
        current = self.get(capability)
        if current is not None and current.counts.rows >= MIN_ROWS:
            posterior = current.aligned(members, classes).posterior(votes)
        else:
            posterior = vote_shares(votes, classes)
        return Counts.from_posterior(posterior, votes, classes)

    async def flush(self) -> None:
        """Merge every queued task's counts into the bucket."""
        pending, self._pending = self._pending, {}
        for (capability, members), (classes, batches) in pending.items():
            add = self._counts(capability, members, np.concatenate(batches), classes)
            await self.update(kv_key(capability), functools.partial(_merged, members, add))


def _merged(members: tuple[str, ...], add: Counts, current: Estimate | None) -> Estimate:
    if current is None or current.counts.prior.shape != add.prior.shape:
        return Estimate(list(members), add)
    return current.merged(members, add)
