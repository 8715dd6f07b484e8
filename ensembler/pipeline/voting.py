"""Voting: the `Vote` steps (soft, geometric, hard, rank), on arrays and on a recipe's prediction sets.

Each vote is a registered step (`engine.register`) with its own `Vote.combine` of the sources'
probabilities; a new one is a subclass in a module of its own (`median`).

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
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from ..data.labels import one_hot
from ..data.stable import decide, tie_tolerance, weighted_sum
from ..data.store import PredictionSet
from ..errors import EnsError
from .engine import REGISTRY, Composed, Context, Fit, Fitted, Scoring, Sources, Step, Words, register
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


def vote(probs: Sequence[np.ndarray], weights: Sequence[float] | None, method: Vote | str, tie: Tie = Tie.MASS) -> tuple[np.ndarray, np.ndarray]:
    """Combine sources' probabilities by the vote `method` (a `Vote` step, or its registered name).

    probs: one ``(n, k)`` array per source. weights: one positive number per source (None = equal).
    tie: the hard vote's tie rule (`Tie`; the first source is ``probs[0]``), when `method` is a name.
    Returns ``labels (n,)`` and the combined distribution ``(n, k)`` (for hard voting: one-hot of
    the labels, so that the argmax of a saved hard vote is its label). Soft and geo labels are
    `stable.decide`'s on totals summed in source order: a tie within the inputs' rounding
    (`stable.tie_tolerance`) goes to the lower class.
    """
    return vote_step(method, tie).combine([np.asarray(p) for p in probs], weights)


def vote_step(method: Vote | str, tie: Tie | str = Tie.MASS) -> Vote:
    """The vote `method` names (`engine.REGISTRY`), or `method` itself when it is one."""
    if isinstance(method, Vote):
        return method
    step = REGISTRY.get(str(method))
    if step is None or not issubclass(step, Vote):
        raise EnsError(f"--method {method} is not a vote (the votes: {', '.join(n for n, c in REGISTRY.items() if issubclass(c, Vote))})")
    return step(tie=Tie(tie)) if "tie" in {f.name for f in fields(step)} else step()


def normalised(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Weights ``(n,)`` summing to 1 (None: equal)."""
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    return w / w.sum()


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


def combine(recipe: Recipe, sets: Mapping[str, PredictionSet], method: Vote | str, per_task: bool = False, tie: Tie = Tie.MASS) -> Composed:
    """Vote `recipe` over `sets` (source name -> set; all aligned on the same ImageIDs) by the
    vote `method` (a `Vote` step, or its name: `vote_step`).

    tie: a hard vote's tie rule, when `method` is a name; ``first`` takes the task's first-named
    source (on the joint, the recipe's first source).
    """
    step = vote_step(method, tie)
    check_coverage(recipe, sets)
    first = sets[recipe.sources[0]]
    mode = voting_mode(recipe, sets, per_task)
    space = recipe.space
    if mode == "joint":
        order = {source: i for i, source in enumerate(recipe.sources)}
        terms = sorted(recipe.tasks[space.tasks[0]], key=lambda term: order[term.source])
        labels, joint = step.combine([sets[t.source].joint for t in terms], [t.weight for t in terms])
        return Composed(first.image_ids, labels, space.marginals(joint), joint, mode, space)
    task_labels, probs = {}, {}
    for task, terms in recipe.tasks.items():
        task_labels[task], probs[task] = step.combine([sets[t.source].probs[task] for t in terms], [t.weight for t in terms])
    return Composed(first.image_ids, space.encode(*(task_labels[t] for t in space.tasks)), probs, None, mode, space)


# --- the voting steps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FittedVote(Fitted):
    """A vote has nothing to fit: the recipe's weights and the vote."""

    recipe: Recipe
    vote: Vote

    def apply(self, x: Sources) -> Composed:
        return combine(self.recipe, x, self.vote, self.vote.per_task)


@dataclass(frozen=True)
class Vote(Step):
    """A vote of the recipe's sources (`combine`): a new vote is a subclass with its `combine`
    of the sources' probabilities, registered (`engine.register`). `per_task` votes each task
    on its marginals even when every source carries the 18-way joint."""

    per_task: bool = False
    combines: ClassVar[bool] = True
    scoring: ClassVar[Scoring] = Scoring.AS_FITTED  # nothing learned: the vote of the labelled images is out of fold as its sources are

    @abstractmethod
    def combine(self, probs: Sequence[np.ndarray], weights: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
        """The sources' probabilities (each ``(n, k)``) and weights (None: equal) -> the decided
        classes ``(n,)`` and the combined scores ``(n, k)``."""

    def fit(self, x: Sources, labels: np.ndarray, ctx: Context) -> FittedVote:
        return FittedVote(ctx.recipe, self)

    def headline(self, mode: str, record: Mapping[str, Any], words: Words) -> str:
        ties = f", ties by {record['tie']}" if record.get("tie") else ""
        on = "the 18-way joint" if mode == "joint" else f"the {'' if words.single_task else 'per-task '}probabilities"
        return f"{self.name} vote on {on}{ties}"

    def fit_blind(self, target: Any, ctx: Context) -> Fit:
        return Fit(self.fit({}, np.zeros(0, dtype=np.int64), ctx))


@register
@dataclass(frozen=True)
class Soft(Vote):
    """The weighted mean of the sources' probabilities (the default)."""

    name: ClassVar[str] = "soft"
    help: ClassVar[str] = "weighted mean of probabilities (the default)"
    candidate: ClassVar[bool] = True

    def combine(self, probs: Sequence[np.ndarray], weights: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
        combined = weighted_sum(normalised(weights, len(probs)), probs)  # source by source: one (n, k) float64 at a time beside the total
        return decide(combined, tie_tolerance(*probs)), combined


@register
@dataclass(frozen=True)
class Geo(Vote):
    """The weighted mean of the sources' log-probabilities (clipped at `EPS`)."""

    name: ClassVar[str] = "geo"
    help: ClassVar[str] = "weighted mean of log-probabilities"
    candidate: ClassVar[bool] = True

    def combine(self, probs: Sequence[np.ndarray], weights: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
        logp = weighted_sum(normalised(weights, len(probs)), (np.log(np.clip(p.astype(np.float64), EPS, None)) for p in probs))
        combined = np.exp(logp - logp.max(axis=1, keepdims=True))
        combined /= combined.sum(axis=1, keepdims=True)
        return decide(logp, tie_tolerance(*probs)), combined


@register
@dataclass(frozen=True)
class Hard(Vote):
    """The weighted majority of the sources' answers, a tie broken by `tie` (`Tie`)."""

    tie: Tie = Tie.MASS
    name: ClassVar[str] = "hard"
    help: ClassVar[str] = "weighted majority of argmaxes, a tie broken by the weighted sum of the tied classes' probabilities, then by the lower class index"
    probabilities: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tie", Tie(self.tie))

    def combine(self, probs: Sequence[np.ndarray], weights: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
        stack = np.stack([p.astype(np.float64) for p in probs])  # (s, n, k)
        labels = hard_vote(stack, weights, self.tie)
        return labels, one_hot(labels, stack.shape[2])


@register
@dataclass(frozen=True)
class Rank(Vote):
    """The weighted mean of each class's ranks over the images: rank averaging, for AUC."""

    name: ClassVar[str] = "rank"
    help: ClassVar[str] = "weighted mean of each class's ranks over the images (a competition scored by AUC)"
    metrics: ClassVar[tuple[str, ...] | None] = ("auc",)

    def combine(self, probs: Sequence[np.ndarray], weights: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
        from scipy.stats import rankdata

        n = len(probs[0])  # each source's classes ranked over the images; ties share their mean rank
        combined = weighted_sum(normalised(weights, len(probs)), (rankdata(p, axis=0) / n for p in probs))
        return decide(combined, tie_tolerance(*probs)), combined
