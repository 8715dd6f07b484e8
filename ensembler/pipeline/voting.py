"""Voting: soft, geometric and hard, on arrays and on a recipe's prediction sets.

- soft: the weighted mean of the probabilities; the label is its argmax.
- geo: the weighted mean of the log-probabilities (probabilities clipped at `EPS`, so a
  one-hot source cannot veto a class outright); the label is its argmax.
- rank: the weighted mean of each class's ranks over the images (scaled to (0, 1]), the
  averaging of winning teams in AUC competitions: sources whose scores are scaled differently
  (a calibrated model and an overconfident one) count by the order they put the images in, which
  is all AUC sees. Its columns are scores, not probabilities; it serves an AUC metric only.

  Soft and geometric totals are summed source by source in recipe order, never by a BLAS
  kernel (`stable.weighted_sum`), and two classes whose totals differ by less than the rounding
  the inputs carried (`stable.tie_tolerance`: twice the epsilon of their float type, so totals
  that tie in exact arithmetic on the decimals as written) are a tie, which goes to the lower
  class index: the same submission on every machine.
- hard: each source votes its argmax with its weight. Vote totals are exact: the weights are
  read as the decimals the recipe wrote (``0.1`` is 1/10, not the nearest double) and counted in
  integers over their common denominator, so ``*0.1`` + ``*0.2`` ties ``*0.3`` and 17 equal
  weights tie as they should, for any number of sources. A tie between classes is broken by the
  rule `Tie`: ``mass`` (default) the weighted sum of the tied classes' probabilities (summed
  exactly, see `hard_vote`), then the lower class index; ``lower`` the lower class index, as
  ``pandas.DataFrame.mode``; ``first`` the first-named source's answer, whether or not it is
  among the tied classes ("our best submission wins ties").

On a recipe (`combine`): when every task takes the same sources with the same weights and all
of them carry the 18-way joint, the vote is on the joint, as scikit-learn's VotingClassifier
and teams' own scripts do; otherwise each task is voted on its marginals and the three labels
encoded into the joint class. ``per_task=True`` forces the second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from ..data.labels import one_hot
from ..data.stable import decide, tie_tolerance, weighted_sum
from ..data.store import PredictionSet
from ..errors import EnsError
from .engine import Composed, Context, Fit, Fitted, Scoring, Sources, Step
from .recipe import Recipe

EPS = 1e-6
MAX_WEIGHT = 2**29  # integer weights below this times float32 probabilities are exact float64 products
VOTE_TOLERANCE = 1e-12  # normalised real-valued weights (too many digits to count exactly)
NEAR = 1e-9  # float tie-break masses closer than this (relative to the total weight) are re-summed exactly


class Tie(StrEnum):
    """How a hard vote breaks a tie between classes with equal vote totals."""

    MASS = "mass"  # the tied classes' weighted probability sums, then the lower index
    LOWER = "lower"  # the lower class index (pandas DataFrame.mode)
    FIRST = "first"  # the first-named source's answer


class Method(StrEnum):
    """How a recipe's sources are combined: three votes, and a learned composition."""

    SOFT = "soft"
    HARD = "hard"
    GEO = "geo"
    RANK = "rank"
    STACK = "stack"  # learned: see `ensembler.pipeline.learned`
    SELECT = "select"
    AUTO = "auto"

    @property
    def learned(self) -> bool:
        return self in (Method.STACK, Method.SELECT, Method.AUTO)


VOTES = (Method.SOFT, Method.HARD, Method.GEO)  # the votes that decide classes (rank averaging orders images, for AUC)
VOTE_NAMES = (*(m.value for m in VOTES), Method.RANK.value)  # the combining steps that fit nothing


def integer_weights(weights: Sequence[float] | None, n_sources: int) -> np.ndarray | None:
    """Weights as integers in the same ratios, exactly: ``(n_sources,)`` int64, or None when
    their common denominator is too large for exact counts (weights with many digits).

    Each weight is read as the shortest decimal that prints it (what a recipe's ``*0.1`` wrote),
    then all are scaled by their common denominator and divided by their common divisor:
    ``[0.1, 0.2, 0.3] -> [1, 2, 3]``, ``None -> [1, …, 1]``.
    """
    if weights is None:
        return np.ones(n_sources, dtype=np.int64)
    exact = [Fraction(repr(float(w))) for w in weights]
    if len(exact) != n_sources or not all(w > 0 for w in exact):
        raise EnsError(f"a vote needs one positive weight per source; got {list(weights)} for {n_sources} source(s)")
    scale = math.lcm(*(w.denominator for w in exact))
    ints = [int(w * scale) for w in exact]
    common = math.gcd(*ints)
    ints = [i // common for i in ints]
    return np.asarray(ints, dtype=np.int64) if sum(ints) < MAX_WEIGHT else None


def hard_vote(stack: np.ndarray, weights: Sequence[float] | None, tie: Tie = Tie.MASS) -> np.ndarray:
    """Weighted majority of the sources' argmaxes with an exact tie rule.

    stack: ``(n_sources, n, k)`` probabilities; weights: ``(n_sources,)`` positive (None = equal).
    Returns labels ``(n,)``. Totals are integers (`integer_weights`), exact in float64; the
    tied classes' masses are summed with `math.fsum` over products that are exact too (integer
    weights below 2^29 times float32 probabilities), so equal masses compare equal whatever
    the order of the sources. Weights with too many digits for integers are normalised
    instead, and totals within `VOTE_TOLERANCE` count as tied (such weights practically never tie).
    """
    n_sources, n, k = stack.shape
    exact = integer_weights(weights, n_sources)
    if exact is not None:
        w, tolerance = exact.astype(np.float64), 0.0
    else:
        w = np.asarray(weights, dtype=np.float64)
        w, tolerance = w / w.sum(), VOTE_TOLERANCE
    choice = stack.argmax(axis=2)  # (s, n)
    votes = np.zeros((n, k))
    rows = np.arange(n)
    for weight, chosen in zip(w, choice):
        votes[rows, chosen] += weight
    top = votes >= votes.max(axis=1, keepdims=True) - tolerance
    labels = top.argmax(axis=1)  # the winner, or the lower of the tied classes
    tied = np.flatnonzero(top.sum(axis=1) > 1)
    if tie is Tie.FIRST:
        labels[tied] = choice[0, tied]
    elif tie is Tie.MASS and len(tied):
        mass = np.where(top[tied], weighted_sum(w, stack[:, tied]), -np.inf)
        labels[tied] = mass.argmax(axis=1)
        # where the float sums of two tied classes come close, sum them exactly
        close = (mass >= mass.max(axis=1, keepdims=True) - NEAR * w.sum()).sum(axis=1) > 1
        for row in tied[close]:
            classes = np.flatnonzero(top[row])
            masses = [math.fsum(w * stack[:, row, c]) for c in classes]
            labels[row] = classes[int(np.argmax(masses))]  # argmax: the lower index on equal masses
    return labels


def vote(probs: Sequence[np.ndarray], weights: Sequence[float] | None, method: Method, tie: Tie = Tie.MASS) -> tuple[np.ndarray, np.ndarray]:
    """Combine sources' probabilities.

    probs: one ``(n, k)`` array per source. weights: one positive number per source (None = equal).
    tie: the hard vote's tie rule (`Tie`; the first source is ``probs[0]``).
    Returns ``labels (n,)`` and the combined distribution ``(n, k)`` (for hard voting: one-hot of
    the labels, so that the argmax of a saved hard vote is its label). Soft and geo labels are
    `stable.decide`'s on totals summed in source order: a tie within the inputs' rounding
    (`stable.tie_tolerance`) goes to the lower class.
    """
    probs = [np.asarray(p) for p in probs]
    tolerance = tie_tolerance(*probs)
    if method is Method.HARD:
        stack = np.stack([p.astype(np.float64) for p in probs])  # (s, n, k)
        labels = hard_vote(stack, weights, Tie(tie))
        return labels, one_hot(labels, stack.shape[2])
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    # source by source: one (n, k) float64 at a time beside the total, never all sources widened at once
    if method is Method.SOFT:
        combined = weighted_sum(w, probs)
        return decide(combined, tolerance), combined
    if method is Method.GEO:
        logp = weighted_sum(w, (np.log(np.clip(p.astype(np.float64), EPS, None)) for p in probs))
        combined = np.exp(logp - logp.max(axis=1, keepdims=True))
        combined /= combined.sum(axis=1, keepdims=True)
        return decide(logp, tolerance), combined
    if method is Method.RANK:
        from scipy.stats import rankdata

        n = len(probs[0])  # each source's classes ranked over the images; ties share their mean rank
        combined = weighted_sum(w, (rankdata(p, axis=0) / n for p in probs))
        return decide(combined, tolerance), combined
    raise EnsError(f"--method {method} is not a vote")


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


def combine(recipe: Recipe, sets: Mapping[str, PredictionSet], method: Method, per_task: bool = False, tie: Tie = Tie.MASS) -> Composed:
    """Vote `recipe` over `sets` (source name -> set; all aligned on the same ImageIDs).

    tie: a hard vote's tie rule; ``first`` takes the task's first-named source (on the joint,
    the recipe's first source).
    """
    method = Method(method)
    if method.learned:
        raise EnsError(f"--method {method} is fitted on labelled predictions, not voted (ensembler.pipeline.learned)")
    check_coverage(recipe, sets)
    first = sets[recipe.sources[0]]
    mode = voting_mode(recipe, sets, per_task)
    space = recipe.space
    if mode == "joint":
        order = {source: i for i, source in enumerate(recipe.sources)}
        terms = sorted(recipe.tasks[space.tasks[0]], key=lambda term: order[term.source])
        labels, joint = vote([sets[t.source].joint for t in terms], [t.weight for t in terms], method, tie)
        return Composed(first.image_ids, labels, space.marginals(joint), joint, mode, space)
    task_labels, probs = {}, {}
    for task, terms in recipe.tasks.items():
        task_labels[task], probs[task] = vote(
            [sets[t.source].probs[task] for t in terms], [t.weight for t in terms], method, tie
        )
    return Composed(first.image_ids, space.encode(*(task_labels[t] for t in space.tasks)), probs, None, mode, space)


# --- the voting steps -------------------------------------------------------------------------


@dataclass(frozen=True)
class FittedVote(Fitted):
    """A vote has nothing to fit: the recipe's weights and the rule."""

    recipe: Recipe
    method: Method
    per_task: bool = False
    tie: Tie = Tie.MASS

    def apply(self, x: Sources) -> Composed:
        return combine(self.recipe, x, self.method, self.per_task, self.tie)


@dataclass(frozen=True)
class _Vote(Step):
    """A vote of the recipe's sources (`combine`); `per_task` votes each task on its marginals
    even when every source carries the 18-way joint."""

    per_task: bool = False
    method: ClassVar[Method]
    combines: ClassVar[bool] = True
    reweights: ClassVar[bool] = False
    scoring: ClassVar[Scoring] = Scoring.AS_FITTED  # nothing learned: the vote of the labelled images is out of fold as its sources are

    def fit(self, x: Sources, labels: np.ndarray, ctx: Context) -> FittedVote:
        return FittedVote(ctx.recipe, self.method, self.per_task, getattr(self, "tie", Tie.MASS))

    def fit_blind(self, target: Any, ctx: Context) -> Fit:
        return Fit(self.fit({}, np.zeros(0, dtype=np.int64), ctx))


@dataclass(frozen=True)
class Soft(_Vote):
    """The weighted mean of the sources' probabilities (the default)."""

    name: ClassVar[str] = "soft"
    method: ClassVar[Method] = Method.SOFT


@dataclass(frozen=True)
class Geo(_Vote):
    """The weighted mean of the sources' log-probabilities."""

    name: ClassVar[str] = "geo"
    method: ClassVar[Method] = Method.GEO


@dataclass(frozen=True)
class Rank(_Vote):
    """The weighted mean of each class's ranks over the images: rank averaging, for AUC."""

    name: ClassVar[str] = "rank"
    method: ClassVar[Method] = Method.RANK


@dataclass(frozen=True)
class Hard(_Vote):
    """The weighted majority of the sources' answers, a tie broken by `tie` (`Tie`)."""

    tie: Tie = Tie.MASS
    name: ClassVar[str] = "hard"
    method: ClassVar[Method] = Method.HARD

    def __post_init__(self) -> None:
        object.__setattr__(self, "tie", Tie(self.tie))
