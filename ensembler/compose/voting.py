"""Voting: soft, geometric and hard, on arrays and on a recipe's prediction sets.

- soft: the weighted mean of the probabilities; the label is its argmax.
- geo: the weighted mean of the log-probabilities (probabilities clipped at `EPS`, so a
  one-hot source cannot veto a class outright); the label is its argmax.
- hard: each source votes its argmax with its weight; a tie between classes is broken by the
  weighted sum of their probabilities, then by the lower class index.

On a recipe (`combine`): when every task takes the same sources with the same weights and all
of them carry the 18-way joint, the vote is on the joint, as scikit-learn's VotingClassifier
and teams' own scripts do; otherwise each task is voted on its marginals and the three labels
encoded into the joint class. ``per_task=True`` forces the second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from ..data.labels import TASKS, Task, encode, marginals, one_hot
from ..data.store import PredictionSet
from ..errors import EnsError
from .recipe import Recipe

EPS = 1e-6
TIE_TOLERANCE = 1e-9  # float weights: vote totals this close count as tied


class Method(StrEnum):
    """How a recipe's sources are combined: three votes, and a learned composition."""

    SOFT = "soft"
    HARD = "hard"
    GEO = "geo"
    STACK = "stack"  # learned: see `ensembler.compose.learned`
    SELECT = "select"
    AUTO = "auto"

    @property
    def learned(self) -> bool:
        return self in (Method.STACK, Method.SELECT, Method.AUTO)


VOTES = tuple(m for m in Method if not m.learned)


def vote(probs: Sequence[np.ndarray], weights: Sequence[float] | None, method: Method) -> tuple[np.ndarray, np.ndarray]:
    """Combine sources' probabilities.

    probs: one ``(n, k)`` array per source. weights: one positive number per source (None = equal).
    Returns ``labels (n,)`` and the combined distribution ``(n, k)`` (for hard voting: one-hot of
    the labels, so that the argmax of a saved hard vote is its label).
    """
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in probs])  # (s, n, k)
    w = np.ones(len(stack)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    if method is Method.SOFT:
        combined = np.tensordot(w, stack, axes=1)
        return combined.argmax(axis=1), combined
    if method is Method.GEO:
        logp = np.tensordot(w, np.log(np.clip(stack, EPS, None)), axes=1)
        combined = np.exp(logp - logp.max(axis=1, keepdims=True))
        combined /= combined.sum(axis=1, keepdims=True)
        return logp.argmax(axis=1), combined
    if method is not Method.HARD:
        raise EnsError(f"--method {method} is not a vote")
    n_classes = stack.shape[2]
    votes = np.zeros(stack.shape[1:])
    rows = np.arange(stack.shape[1])
    for weight, choice in zip(w, stack.argmax(axis=2)):
        votes[rows, choice] += weight
    tied = votes >= votes.max(axis=1, keepdims=True) - TIE_TOLERANCE
    mass = np.where(tied, np.tensordot(w, stack, axes=1), -np.inf)
    labels = mass.argmax(axis=1)  # argmax takes the first, i.e. lower, index on equal mass
    return labels, one_hot(labels, n_classes)


@dataclass(frozen=True, eq=False)
class Composed:
    """A recipe's vote on aligned prediction sets.

    labels: ``(n,)`` joint classes. probs: ``{task: (n, k)}``. joint: ``(n, 18)`` when voted on
    the joint, else None. mode: ``"joint"`` or ``"per-task"``.
    """

    image_ids: np.ndarray
    labels: np.ndarray
    probs: Mapping[Task, np.ndarray]
    joint: np.ndarray | None
    mode: str

    @classmethod
    def decided(cls, image_ids: np.ndarray, probs: Mapping[Task, np.ndarray], joint: np.ndarray | None, mode: str) -> Composed:
        """A composition whose labels are its probabilities' decision: the joint argmax when
        there is a joint, else the per-task argmaxes encoded."""
        labels = joint.argmax(axis=1) if joint is not None else encode(*(probs[t].argmax(axis=1) for t in TASKS))
        return cls(image_ids, labels, probs, joint, mode)

    def take(self, rows: np.ndarray) -> Composed:
        """The rows `rows` (positions ``(m,)``) of the composition."""
        joint = None if self.joint is None else self.joint[rows]
        return Composed(self.image_ids[rows], self.labels[rows], {t: p[rows] for t, p in self.probs.items()}, joint, self.mode)


def check_coverage(recipe: Recipe, sets: Mapping[str, PredictionSet]) -> None:
    """Every source must predict the tasks the recipe gives it."""
    for task, terms in recipe.tasks.items():
        for term in terms:
            covered = sets[term.source].tasks
            if task not in covered:
                raise EnsError(
                    f"source {term.source!r} does not cover {task} (it covers {', '.join(map(str, covered))}); "
                    f"give {task} another source in the recipe"
                )


def voting_mode(recipe: Recipe, sets: Mapping[str, PredictionSet], per_task: bool = False) -> str:
    """``"joint"`` when the recipe is the same for every task and all its sources have a joint."""
    joint = not per_task and recipe.uniform and all(sets[s].joint is not None for s in recipe.sources)
    return "joint" if joint else "per-task"


def combine(recipe: Recipe, sets: Mapping[str, PredictionSet], method: Method, per_task: bool = False) -> Composed:
    """Vote `recipe` over `sets` (source name -> set; all aligned on the same ImageIDs)."""
    method = Method(method)
    if method.learned:
        raise EnsError(f"--method {method} is fitted on labelled predictions, not voted (ensembler.compose.learned)")
    check_coverage(recipe, sets)
    first = sets[recipe.sources[0]]
    mode = voting_mode(recipe, sets, per_task)
    if mode == "joint":
        terms = recipe.tasks[TASKS[0]]
        labels, joint = vote([sets[t.source].joint for t in terms], [t.weight for t in terms], method)
        return Composed(first.image_ids, labels, marginals(joint), joint, mode)
    task_labels, probs = {}, {}
    for task, terms in recipe.tasks.items():
        task_labels[task], probs[task] = vote(
            [sets[t.source].probs[task] for t in terms], [t.weight for t in terms], method
        )
    return Composed(first.image_ids, encode(*(task_labels[t] for t in TASKS)), probs, None, mode)
