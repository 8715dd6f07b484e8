"""Auto: model selection over whole compositions, that keeps the soft vote unless the evidence says otherwise.

Candidates, each cross-fitted on the labelled images: the recipe's soft vote (the reference,
always a candidate) and every other vote that says it is one (`engine.Step.candidate`, read
from the registry: the geometric vote); the per-task choice (per task, each source alone,
their soft vote, their selection and their stack); selection and stacking on every task; and,
when every source carries the 18-way joint, the pool (`learned`). They are scored by the
competition's score, the out-of-fold 18-class macro F1 (per task, the task's macro F1), and
every choice is made inside the CV loop: each fold is predicted by the candidate chosen on
the other folds, so auto's score is honest too.

A thin labelled set makes the best out-of-fold score a noisy pick: with 60 labelled people the
candidate that scores best by 0.05 is often worse on the hidden answers, once by 0.21 (the
stack, having seen one person of 60+, called 8 of 2,100 eval images 60+ where 441 are). And
cross-validation is pessimistic about what learns: each fold's stack is fitted on four fifths
of the people, eval's on all of them (at 150 labelled people a stack's out-of-fold score fell
short of its hidden one by 0.025 more than the soft vote's). So `Auto(cautious=True)`, the
default, moves from the soft vote only as far as the evidence carries it:

- **the rule**: the moves are the blends ``(1 - w) x soft vote + w x candidate`` of the soft
  vote with each allowed candidate, ``w`` in 0.1 .. `MAX_MOVE` (one half); in each of
  `REPLICATES` resamples of the people (their images with them) the move with the best
  out-of-fold score is taken, and the move applied is their mean (`bagged`; ties: the soft
  vote, then the earlier candidate, then the smaller move): the soft vote moved toward as many
  candidates as won resamples, each as far as its winning moves average. The blend is of the
  compositions' probabilities, so each candidate's own choices (per task, inside the CV loop)
  stay as they were; the cap shrinks what was learned toward the vote's equal weights (Stock
  and Watson 2004; Smith and Wallis 2009). The record says how far it moved, toward what, and
  the paired person-bootstrap interval of the move's gain over the soft vote (Efron and
  Tibshirani 1993, the cluster bootstrap). The cap is lifted toward the best candidate where
  the all-or-nothing rule's test holds (its paired gain's 90 % interval above 0: there the
  variance the cap guards against is measured small), so ``w`` runs to 1 toward it: at 600
  labelled people (`bench/quality.py`) the cap had stopped half-way toward stacks that won
  beyond the noise, up to 0.051 below the rule of before.
  Why a mean over resamples (bootstrap smoothing of a choice: bagging, Breiman 1996; the
  bootstrap's model weights, Buckland, Burnham and Augustin 1997; smoothed estimates after
  model selection, Efron 2014): the single best move out of fold jumps with the few people a
  gain rests on (with 150 labelled people, stacks per task that called 60+ for 2.5 % and 4.4 %
  of eval images where 21 % are, their gain out of fold resting on about nine people of that
  band, had won the half-way blend and fallen below the soft vote by 0.030 and 0.023 on the
  hidden answers); the resamples without those people do not show the gain and vote for a
  smaller move. The rule before it took the single best move less a bootstrap standard
  deviation of its gain (a lower confidence bound, Breiman et al. 1984's one-standard-error
  rule); on the same simulated teams (`bench/auto_study.py`, three seed sets of 300 teams)
  the bagged move trails the hindsight-best less on average at every size, and falls below the
  soft vote by more than 0.005 on 13 of 900 teams (docs/explanation/auto.md has the figures).
  Inside the per-task candidate each task keeps its soft vote unless another option's paired
  gain is beyond the noise, as before. A candidate that loses to the soft vote beyond the noise
  out of fold (its paired gain's 90 % interval below 0) is not moved toward: its blends win
  resamples by chance (a move 41 % of the way toward such a stack, 0.056 below the soft vote
  out of fold, fell 0.041 below it on the hidden answers of a simulated team of 150 people;
  blends of forecasters can beat both, Bates and Granger 1969, and the bar gives that up there).
- **thin classes**: a class of a task held by fewer than `MIN_PEOPLE` labelled people is too
  thin to learn: for that task the learned options (selection, stack) are not offered, the
  whole-composition selection and stack take the task's soft vote instead, and the pool (whose
  biases are per joint class) is not offered when a class of gender x age is thin.
- **the eval mix**: the candidates are scored on the labelled images re-weighted to the eval
  mix that EM estimates task by task from the soft vote, calibrated with a bias per class
  (`eval_mix`): a stack that learned from the labelled images that 60+ is rare is judged on an
  eval set that may hold three times as many (without it, on simulated teams whose eval is
  older, auto chose such stacks beyond the noise and lost up to 0.069 to the soft vote on the
  hidden answers). An estimate is dropped where EM fails its premise on the labelled images
  (`priors.self_check`): there it had run upward, 60+ at over half of eval where 7 % are, and
  judged the stacks that call 60+ rightly as rare 0.08 to 0.19 below the soft vote.
- **run-aways**: a candidate whose eval decisions give a class less than `COLLAPSE` (a quarter)
  of what it can be expected to get (the labelled share, or the members' own eval calls if
  fewer; `expected_shares`) is not chosen (the guard of the prior step, `priors.degenerate`,
  applied to every candidate), unless the eval mix's estimate stands for that task and the
  candidate decided the class out of fold, on the labelled images weighted to that mix, at
  most twice as often, and for a tenth of the class's weighted share or more (`Guard`): its
  rarity is then what the judge scored, not a collapse on eval alone.

`Auto(cautious=False)` is the plain choice by the best out-of-fold score (issue 11's auto),
kept for comparison (`bench/evidence.py`); `Auto(blends=False)` the all-or-nothing rule of
before (the soft vote, or the best candidate where its paired gain is beyond the noise).

A declared competition (`engine.Context.competition`) is judged by its own metric: a `Judge`
scores the candidates (`F1Judge`, the mask competition's macro F1 on decisions, by counts;
`MetricJudge`, the declared metric of the answer, AUC and log-loss on probabilities) and
resamples its groups (patients; each image its own without a group column) for the paired
gain. Selection optimises that metric too. What stays the mask competition's: the eval mix
(EM on its tasks) and the pool on its 18-way joint; run-aways are checked where the metric
scores decisions; a stack past `learned.AUTO_STACK_WEIGHTS` (20 classes from 4 sources) is not
offered. `bench/declared.py` holds auto to its soft vote on simulated single-task teams.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..data.labels import MASK_SPACE, N_JOINT, LabelSpace, Task
from ..data.people import MIN_PEOPLE, thin_pairs
from ..data.stable import decide
from ..scoring.evidence import LEVEL, f1_replicates, person_draws
from ..scoring.metrics import Part, answer_parts, macro_f1, metric_replicates, task_objective
from .engine import REGISTRY, Composed, Context, Fitted, Sources, Step, Words, fit_step, register
from .folds import Folds, filled, out_of_fold
from .learned import AUTO_STACK_WEIGHTS, FittedTasks, Objective, Pool, TaskModel, TaskPart, cross_fit_task, mean_fit, select_fit, stack_fit, stack_too_large, task_lines, thin_line, thin_of, unit
from .priors import COLLAPSE, PriorSpec, fit_correction
from .recipe import Recipe
from .voting import FittedVote, Soft, Vote, check_coverage

if TYPE_CHECKING:
    from ..data.competition import Competition, Metric
    from ..data.project import Project

REPLICATES = 1000
MAX_MOVE = 0.5  # the furthest auto moves from the soft vote toward a candidate not beyond the noise: half-way (bench/auto_study.py)
BLEND_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(1, round(MAX_MOVE * 10) + 1))  # 0.1 .. MAX_MOVE
KEPT = 0.5  # a class decided on eval for half its out-of-fold share (weighted to the estimated eval mix) or more is not lost (`Guard`; bench/auto_study.py)
CALLED = 0.1  # ... where the candidate called it out of fold for a tenth of its weighted share or more
SURE_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(1, 11))  # 0.1 .. 1: toward the best candidate where its gain is beyond the noise


@dataclass(frozen=True)
class Candidate:
    """One way `auto` may predict a task (or the whole answer), with the competition's score of
    its out-of-fold predictions (`score`: the mask competition's macro F1, else the declared
    metric, named `key` in the record) and its spread (std) across the folds."""

    label: str
    score: float
    spread: float
    key: str = "f1"

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, self.key: round(self.score, 4), "spread": round(self.spread, 4)}


# --- the rule ------------------------------------------------------------------------------------


def paired_gain(y: np.ndarray, reference: np.ndarray, other: np.ndarray, persons: np.ndarray, k: int, weights: np.ndarray | None = None) -> tuple[float, float, float]:
    """The `LEVEL` (90 %) interval of the macro F1 (over `k` classes) gain of `other` over
    `reference` (decisions ``(n,)``) on `y` ``(n,)``, people resampled with their images
    (`persons` ``(n,)``; `weights` ``(n,)``: image weights, as `metrics.macro_f1`'s); and the
    share of resamples in which the gain is positive (`F1Judge.gain` on every image)."""
    return F1Judge([reference, other], y, k, persons).gain(0, 1, np.arange(len(y)), weights)


def _gain_interval(gains: np.ndarray) -> tuple[float, float, float]:
    tail = (1 - LEVEL) / 2 * 100
    return float(np.nanpercentile(gains, tail)), float(np.nanpercentile(gains, 100 - tail)), float((gains > 0).mean())


class Judge(ABC):
    """How auto compares its candidates on some of the labelled images (row positions `rows`,
    image `weights` or None): their scores, higher better (`scores` ``(c,)``), and their scores
    in each resample of the groups, the same draws for every candidate (`replicates`), which
    give the paired bootstrap of one's gain over another (`gain`). `key` names the score in the
    record; `sign` turns a score back into the metric (-1 for log-loss)."""

    key: str = "f1"
    sign: float = 1.0

    @abstractmethod
    def scores(self, rows: np.ndarray, weights: np.ndarray | None) -> np.ndarray: ...

    @abstractmethod
    def replicates(self, rows: np.ndarray, weights: np.ndarray | None, which: Sequence[int]) -> np.ndarray:
        """The scores of the candidates `which` in each of `REPLICATES` resamples of the groups
        of `rows` (their images with them; seed 0, so every call draws alike), higher better
        ``(REPLICATES, len(which))``; NaN where a resample cannot score a metric."""

    def gain(self, reference: int, other: int, rows: np.ndarray, weights: np.ndarray | None) -> tuple[float, float, float]:
        """The 90 % interval of `other`'s paired gain over `reference`, and the share of
        resamples in which it is positive."""
        values = self.replicates(rows, weights, (reference, other))
        return _gain_interval(values[:, 1] - values[:, 0])


class F1Judge(Judge):
    """Macro F1 over `k` classes of each candidate's `decisions` ``(n,)`` against `y` ``(n,)``,
    people (`persons` ``(n,)``) resampled by the counts of `evidence.f1_replicates`: the mask
    competition's judge."""

    def __init__(self, decisions: Sequence[np.ndarray], y: np.ndarray, k: int, persons: np.ndarray) -> None:
        self.decisions, self.y, self.k, self.persons = decisions, y, k, persons

    def scores(self, rows: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        return np.array([macro_f1(self.y[rows], d[rows], self.k, weights) for d in self.decisions])

    def replicates(self, rows: np.ndarray, weights: np.ndarray | None, which: Sequence[int]) -> np.ndarray:
        codes = np.unique(self.persons[rows], return_inverse=True)[1]
        return f1_replicates(self.y[rows], np.stack([self.decisions[c][rows] for c in which]), codes, person_draws(int(codes.max()) + 1, REPLICATES), self.k, weights)


class MetricJudge(Judge):
    """A declared competition's metric (`metrics.metric_value`) of each candidate, the mean over
    its `parts` (one for a single answer; a task each for several binary tasks, as
    `metrics.competition_score`), `groups` ``(n,)`` resampled (`metrics.metric_replicates`)."""

    def __init__(self, metric: Metric, parts: Sequence[Sequence[Part]], groups: np.ndarray) -> None:
        self.metric, self.parts, self.groups = metric, parts, groups
        self.key, self.sign = str(metric), 1.0 if metric.higher_is_better else -1.0

    def scores(self, rows: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        # metric_value's numbers, by metric_replicates with one row of weights: a fold without a
        # class scores that class NaN (left out of a multi-class AUC) where scikit-learn raises
        w = (np.ones(len(rows)) if weights is None else weights)[None, :]
        return np.array([self.sign * np.mean([metric_replicates(self.metric, y[rows], k, w, p[rows], d[rows])[0] for y, k, p, d in parts]) for parts in self.parts])

    def replicates(self, rows: np.ndarray, weights: np.ndarray | None, which: Sequence[int]) -> np.ndarray:
        codes = np.unique(self.groups[rows], return_inverse=True)[1]
        draws = person_draws(int(codes.max()) + 1, REPLICATES)[:, codes].astype(np.float64)
        if weights is not None:
            draws *= weights
        value = lambda c: np.mean([metric_replicates(self.metric, y[rows], k, draws, p[rows], d[rows]) for y, k, p, d in self.parts[c]], axis=0)  # noqa: E731
        return np.stack([self.sign * value(c) for c in which], axis=1)


def judge_of(competition: Competition, labels: np.ndarray, persons: np.ndarray, compositions: Sequence[Composed]) -> Judge:
    """The judge of whole `compositions` of the labelled images (`labels` ``(n,)``, resampled by
    `persons` ``(n,)``): the mask competition's 18-class macro F1, else the declared metric."""
    if competition.is_preset:
        return F1Judge([c.labels for c in compositions], labels, N_JOINT, persons)
    return MetricJudge(competition.metric, [composed_parts(competition, labels, c) for c in compositions], persons)


def composed_parts(competition: Competition, labels: np.ndarray, composed: Composed) -> list[Part]:
    """What a declared competition scores of a composition (`metrics.answer_parts`), each
    part's decisions filled (the composition's own, or a task's argmax)."""
    return [(y, k, p, decide(p) if d is None else d) for y, k, p, d in answer_parts(competition, labels, composed.probs, composed.joint, composed.labels)]


def pick(f1: np.ndarray, judge: Judge, rows: np.ndarray, reference: int, allowed: np.ndarray, cautious: bool, weights: np.ndarray | None = None) -> tuple[int, dict[str, Any]]:
    """The candidate chosen on the images `rows`: the best allowed one by `f1` ``(c,)`` (the
    judge's scores, higher better; ties: the first, the simplest); `cautious`: only when its
    paired gain over the `reference` is beyond the noise (`Judge.gain`), else the reference.
    Returns it and why."""
    scores = np.where(allowed, f1, -np.inf)
    best = int(np.argmax(scores))
    if not cautious:
        return best, {"rule": "best out-of-fold score"}
    if best == reference:
        return reference, {"rule": "the reference scores best"}
    low, high, positive = judge.gain(reference, best, rows, weights)
    why = {"margin": round(float(f1[best] - f1[reference]), 4), "interval": [round(low, 4), round(high, 4)], "positive": round(positive, 3)}
    if low > 0:
        return best, {"rule": "beyond the noise: the 90% interval of its paired gain over the reference is above 0", **why}
    return reference, {"rule": "within the noise: the 90% interval of the best candidate's paired gain over the reference holds 0, so the reference is kept", "best": None, **why}


def bagged(replicates: np.ndarray, moves: Sequence[tuple[int, float]]) -> dict[int, float]:
    """How far to move toward each candidate: in each resample of the people (the judge's
    `replicates` ``(r, m)``, the same draws for every move) the move with the best score is
    taken (ties: the first: the soft vote, then the earlier candidate, then the smaller move),
    and the moves are averaged: ``{candidate: share}``, each move ``(candidate, weight)`` of
    `moves` (candidate 0, the soft vote, first) adding its weight over the number of resamples
    to its candidate's share (to six decimals: 1,000 resamples and weights in tenths give
    multiples of 0.0001, shown as they are).
    Resamples that score no move (NaN: a metric a resample cannot compute) are left out.

    Bootstrap smoothing of a choice (bagging, Breiman 1996; the bootstrap's model weights,
    Buckland, Burnham and Augustin 1997; the smoothed estimate after model selection, Efron
    2014): the choice of the single best move jumps with which few people the labelled set
    happens to hold, its bagged mean does not. Where one move wins in nearly every resample the
    mean is that move; where the resamples disagree (a gain that rests on a few people, which
    the resamples without them do not show) it stays nearer the soft vote, as far as the
    evidence is shared among them."""
    scores = np.where(np.isnan(replicates), -np.inf, replicates)
    scored = ~np.all(np.isnan(replicates), axis=1)
    if not scored.any():
        return {}
    best = np.argmax(scores[scored], axis=1)
    shares: dict[int, float] = {}
    for move, count in zip(*np.unique(best, return_counts=True)):
        c, w = moves[int(move)]
        if c:
            shares[c] = shares.get(c, 0.0) + w * int(count) / int(scored.sum())
    return {c: round(share, 6) for c, share in sorted(shares.items())}  # not rounded further: a share rounded down to the hundredth cost the mean trail and its worst case (bench/auto_rules.py)


def evidence_choice(
    names: Sequence[str],
    judge: Judge,
    folds: Folds,
    reference: int = 0,
    allowed: np.ndarray | None = None,
    cautious: bool = True,
    weights: np.ndarray | None = None,
) -> tuple[list[Candidate], np.ndarray, int, dict[str, Any]]:
    """Choose among candidates `names` by the `judge`'s scores of their out-of-fold predictions
    (`pick`), with the choice inside the CV loop; `weights` ``(n,)``: the images weighted to
    the eval mix (`eval_mix`).

    Returns each candidate with its score and fold spread; for every image, the candidate chosen
    on the *other* folds' images (its row of the scored composition: choosing on the images
    scored would flatter the choice); the candidate chosen on all images (the one applied to
    eval); and why it was chosen."""
    allowed = np.ones(len(names), bool) if allowed is None else np.asarray(allowed, bool)
    w = (lambda rows: None) if weights is None else (lambda rows: weights[rows])  # noqa: E731
    n = sum(len(held) for _, held in folds)
    every = np.arange(n)
    scores = judge.scores(every, w(every))
    per_fold = [judge.scores(held, w(held)) for _, held in folds]
    candidates = [Candidate(name, float(judge.sign * f), float(np.std([judge.sign * s[i] for s in per_fold])), judge.key) for i, (name, f) in enumerate(zip(names, scores))]
    # the choice inside the loop (the engine's): each fold's rows take the candidate picked on the other folds' rows
    choices = out_of_fold(lambda rows: (lambda held, c=pick(judge.scores(rows, w(rows)), judge, rows, reference, allowed, cautious, w(rows))[0]: np.full(len(held), c)), folds)
    per_row = filled(choices, n)
    chosen, why = pick(scores, judge, every, reference, allowed, cautious, w(every))
    if "best" in why:
        why["best"] = names[int(np.argmax(np.where(allowed, scores, -np.inf)))]
    return candidates, per_row, chosen, why


# --- thin classes and run-aways -------------------------------------------------------------------


def expected_shares(target: Sources, recipe: Recipe, labels: np.ndarray) -> dict[Task | str, np.ndarray]:
    """Per task, the share of the eval images a class can be expected to get at the least
    ``(k,)``: the smaller of the labelled images' true share and the share the members
    themselves decide for it on eval (each source's argmax share, averaged over the recipe's
    sources for the task). Members that over-call a rare class (23 % of 60+ decided on simulated
    teams where 7 % are) do not make a candidate that calls it less a run-away; a class the
    members call as often as the labels hold it does."""
    space = recipe.space
    truth = space.decode(labels)
    out = {}
    for t in space.tasks:
        k = space.n_classes[t]
        members = np.mean([np.bincount(decide(target[term.source].probs[t]), minlength=k) / len(target[term.source]) for term in recipe.tasks[t]], axis=0)
        out[t] = np.minimum(members, np.bincount(truth[t], minlength=k) / max(len(labels), 1))
    return out


def run_away(decided: Mapping[Task | str, np.ndarray], expected: Mapping[Task | str, np.ndarray], space: LabelSpace = MASK_SPACE, seen: Mapping[Task | str, np.ndarray] | None = None) -> str | None:
    """Why eval decisions ``{task: (n,)}`` run away (a class expected for at least 1 % of the
    images, `expected_shares`, decided for less than `COLLAPSE` of that), or None. `seen`
    ``{task: (k,)}``: where the judge scored the candidate's rarity (`Guard`), the share of the
    labelled images, weighted to the estimated eval mix, that it gave each class out of fold
    (NaN for a class it was not judged on); a class decided on eval for at least `KEPT` of that
    is not lost."""
    seen = seen or {}
    for task, classes in decided.items():
        share = np.bincount(classes, minlength=len(expected[task])) / max(len(classes), 1)
        judged = seen.get(task, np.full(len(share), np.nan))
        lost = [c for c in range(len(share)) if expected[task][c] >= 0.01 and share[c] < COLLAPSE * expected[task][c] and not share[c] >= KEPT * judged[c]]
        if lost:
            c = lost[0]
            also = "" if np.isnan(judged[c]) else f", and under {KEPT:.0%} of the {judged[c]:.1%} it decided out of fold (weighted to the estimated eval mix)"
            return f"{task} {space.classes[task][c]!r} decided for {share[c]:.1%} of the eval images where {expected[task][c]:.1%} are expected (the labelled share, or the members' own calls if fewer){also}"
    return None


@dataclass(frozen=True)
class Guard:
    """What auto's candidates' eval decisions are checked against (`run_away`): the shares a
    class can be expected to get (`expected_shares`, ``{task: (k,)}``) and, for the tasks whose
    eval-mix estimate stands (`truth`: their true classes on the labelled images ``{task:
    (n,)}``; `weights` ``(n,)``: the images' eval-mix weights, `eval_mix`), each candidate's
    own out-of-fold calls on the labelled images weighted to that mix.

    A candidate that decides a class on eval about as rarely as it did out of fold (`KEPT`: at
    least half as often), where it still called the class (`CALLED`: for at least a tenth of
    the class's weighted share), is not running away there: the judge, on the labelled images
    weighted to the estimated eval mix, scored that rarity. With 540 labelled people, stacks
    per task that decided 60+ for 1.1 to 1.5 % of eval where the labelled share is 6.3 to 6.7 %
    (under a quarter) were barred, and they beat the soft vote by 0.06 to 0.10 on the hidden
    answers (bench/auto_study.py). A stack that calls 60+ for 1 % out of fold where the weighted
    share is 18 % was not judged on that class, only blends with it were, and a move 22 % of the
    way toward it fell 0.027 below the soft vote: the bare guard holds there, and where a
    task's estimate is dropped (the judge then scores the labelled mix, and an eval set richer
    in the class, an older one, is what the bare guard catches)."""

    expected: Mapping[Task | str, np.ndarray]
    weights: np.ndarray | None = None
    truth: Mapping[Task | str, np.ndarray] = field(default_factory=dict)

    def why(self, eval_decided: Mapping[Task | str, np.ndarray], oof_decided: Mapping[Task | str, np.ndarray], space: LabelSpace) -> str | None:
        """Why a candidate's eval decisions ``{task: (m,)}`` run away, given its out-of-fold
        decisions on the labelled images ``{task: (n,)}``; or None."""
        seen = {}
        for task in eval_decided:
            if task in self.truth:
                k, weights = space.n_classes[task], self.weights if self.weights is not None else np.ones(len(self.truth[task]))
                held = np.bincount(self.truth[task], weights=weights, minlength=k) / weights.sum()
                called = np.bincount(oof_decided[task], weights=weights, minlength=k) / weights.sum()
                seen[task] = np.where(called >= CALLED * held, called, np.nan)
        return run_away(eval_decided, self.expected, space, seen)


def eval_mix(recipe: Recipe, x: Sources, labels: np.ndarray, folds: Folds, target: Sources) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Image weights ``(n,)`` that re-weight the labelled images to the eval mix: EM's estimate
    on the soft vote's eval probabilities, calibrated out of fold first, against the labelled
    images' true mix (`priors.fit_correction`: estimates that run away, or whose EM fails its
    self-check on the labelled images, dropped); each image weighs the product over tasks of
    (estimated eval share / labelled share) of its true class (importance weighting under label
    shift: Saerens, Latinne and Decaestecker 2002; Lipton, Wang and Smola 2018). A candidate
    tuned to the labelled mix (a stack that learned that 60+ is rare) is then judged where it is
    used, on an eval set that may be older. None when no estimate stands; and the estimates, per
    task.

    Each task's mix is estimated on that task's probabilities, calibrated with a bias per class
    (bias-corrected temperature scaling; temperature scaling alone where a class is too thin):
    EM needs the calibrated probabilities to hold the labelled mix, and members trained on
    balanced batches put a rare class far above its share (the simulated 18-class members: a
    mean 0.25 for 60+ where 6 % are), which a temperature cannot undo (Alexandari, Kundaje and
    Shrikumar 2020: maximum likelihood with bias-corrected calibration). On the 18-way joint,
    where a gender x age pair of under five people allows temperature scaling only, EM ran away
    on age and the estimate was dropped; on a simulated team of 300 people with an older eval set a stack that had learned
    60+ is rare then won out of fold by 0.08 and lost 0.05 on the hidden answers, and on 900
    teams (bench/auto_study.py) auto fell below the soft vote by more than 0.005 on 13, not 6
    (docs/explanation/auto.md)."""
    soft = FittedVote(recipe, Soft())
    labelled, unlabelled = (replace(soft.apply(s), joint=None) for s in (x, target))  # each task on its own
    correction = fit_correction(labelled, labels, folds, unlabelled, PriorSpec("em"), calibrate="bcts")
    record = {t: {key: v for key, v in entry.items() if key in ("train", "eval", "dropped")} for t, entry in correction.record.get("tasks", {}).items()}
    if not correction.ratios:
        return None, record
    truth, weights = MASK_SPACE.decode(labels), np.ones(len(labels))
    for task, ratio in correction.ratios.items():
        weights *= np.round(ratio, 4)[truth[task]]  # the calibration's optimum differs in its last digits between BLAS kernels; the weights do not
    return weights, record


# --- the step ---------------------------------------------------------------------------------------


def vote_candidates() -> list[type[Vote]]:
    """The votes auto offers as whole compositions (those that say so: `Step.candidate`), the soft
    vote first: the reference every other candidate must beat."""
    return [Soft, *(step for step in REGISTRY.values() if step.candidate and issubclass(step, Vote) and step is not Soft)]



@dataclass(frozen=True)
class _Option:
    """One candidate of a task: its label, its kind (source, vote, selection, stack), its fitted
    part, and its out-of-fold probabilities."""

    label: str
    kind: str
    part: TaskPart
    oof: np.ndarray


def _task_options(recipe: Recipe, x: Sources, task: Task | str, y: np.ndarray, folds: Folds, learn: bool, objective: Objective | None = None, stack: bool = True, ctx: Context | None = None) -> list[_Option]:
    """Every candidate for one task: each source alone, and with several sources their soft
    vote and, when the task may be learned (`learn`), their ensemble selection (on the
    competition's `objective`, `metrics.task_objective`) and (`stack`) their stack; cross-fitted
    over `folds`, a model on the same training rows fitted once in a run (`ctx.fitted_once`)."""
    ids = next(iter(x.values())).image_ids
    terms, k = recipe.tasks[task], recipe.space.n_classes[task]
    plans: list[tuple[str, str, list[int], Any]] = [(t.source, "source", [i], mean_fit([t.weight], k)) for i, t in enumerate(terms)]
    if len(terms) > 1:
        names, every = "+".join(map(str, terms)), list(range(len(terms)))
        plans.append((f"soft vote {names}", "vote", every, mean_fit([t.weight for t in terms], k)))
        if learn:
            plans.append((f"selection from {names}", "selection", every, select_fit(k, objective)))
            if stack:
                plans.append((f"stack of {names}", "stack", every, stack_fit(k)))
    options = []
    for label, kind, idx, fit in plans:
        part = TaskPart(tuple(terms[i].source for i in idx), TaskModel(k))
        once = None if ctx is None else (lambda rows, make, key=(label, str(task)): ctx.fitted_once(key, ids[rows], make))
        model, oof = cross_fit_task(fit, part.parts(x, task), y, folds, once)
        options.append(_Option(label, kind, replace(part, model=model), oof))
    return options


@dataclass(frozen=True)
class _Whole:
    """One of auto's whole candidates: fitted on the rows auto is fitted on (what it applies), its
    out-of-fold composition of them (`scored`: what its score is taken on; the per-task choice's,
    each fold by the option chosen on the other folds) and, where that differs, the out-of-fold
    composition of what it applies (`consistent`: the per-task choice's chosen options')."""

    label: str
    fitted: Fitted
    scored: Composed
    consistent: Composed | None = None


def share_text(share: float) -> str:
    """A share of a bagged move as written in labels: as many decimals as it has, at most four
    (``0.5``, ``0.2545``)."""
    return np.format_float_positional(round(share, 4), precision=4, trim="-")


def blend(reference: Composed, others: Sequence[Composed], weights: Sequence[float]) -> Composed:
    """``(1 - sum(weights)) x reference + sum_i weights[i] x others[i]``, per task and on the
    18-way joint where all carry it, decided (`Composed.decided`): compositions of the same
    images. No weight: the reference; one other, all the way: that one."""
    pairs = [(o, float(w)) for o, w in zip(others, weights) if w != 0]
    if not pairs:
        return reference
    if len(pairs) == 1 and pairs[0][1] == 1:
        return pairs[0][0]
    rest = 1 - sum(w for _, w in pairs)
    mix = lambda parts: rest * np.asarray(parts[0], np.float64) + sum(w * np.asarray(p, np.float64) for p, (_, w) in zip(parts[1:], pairs))  # noqa: E731
    everyone = [reference, *(o for o, _ in pairs)]
    joint = mix([c.joint for c in everyone]) if all(c.joint is not None for c in everyone) else None
    probs = {t: mix([c.probs[t] for c in everyone]) for t in reference.probs}
    return Composed.decided(reference.image_ids, probs, joint, "auto", reference.space)


@dataclass(frozen=True)
class FittedBlend(Fitted):
    """Auto's move from the reference (the soft vote) toward other candidates: the weighted
    mean of their compositions (`blend`), `weights` on the `others`."""

    reference: Fitted
    others: tuple[Fitted, ...]
    weights: tuple[float, ...]

    def apply(self, x: Sources) -> Composed:
        return blend(self.reference.apply(x), [o.apply(x) for o in self.others], self.weights)

    def describe(self) -> dict[str, Any]:
        return {"blend": [{"weight": w, "toward": o.describe()} for o, w in zip(self.others, self.weights)]}


@dataclass(frozen=True)
class FittedAuto(Fitted):
    """Auto's choice (`chosen`, called `label`), the record of it, and the chosen candidate's
    out-of-fold composition of the rows it was fitted on (`consistent`: what a step after auto
    is fitted on, `Fitted.consistent`: the candidate eval gets, not a mix of each fold's choice)."""

    chosen: Fitted
    label: str
    record: Mapping[str, Any] = field(default_factory=dict, compare=False)
    consistent: Composed | None = field(default=None, compare=False)

    def apply(self, x: Sources) -> Composed:
        return replace(self.chosen.apply(x), mode="auto")

    def describe(self) -> dict[str, Any]:
        return {"chosen": self.label, **self.chosen.describe(), "auto": dict(self.record)}


@register
@dataclass(frozen=True)
class Auto(Step):
    """Model selection over whole compositions (module doc), the choice inside the CV loop;
    `cautious`: only on evidence, never on a class too thin to learn, never a run-away. Its
    candidates are cross-fitted with the folds of the rows it is fitted on (`Context.folds`),
    and it is cross-fitted by the engine as any step: its composition of a fold's images is the
    choice made, and the candidates fitted, on the other folds alone (nested: the choice never
    sees the labels it is scored on)."""

    cautious: bool = True
    blends: bool = True
    name: ClassVar[str] = "auto"
    help: ClassVar[str] = (
        "among the votes, the per-task choice (per task, each source alone, their vote, selection or stack) and the stack on the 18-way "
        "joint, moves from the soft vote as far as the evidence carries it: the mean, over 1,000 resamples of the labelled people, of the blend with the best "
        "cross-validated score (at most half-way toward one candidate unless it wins beyond the noise; the rest stays the soft vote's), never learned on a class of fewer "
        "than 5 labelled people, never toward one whose eval decisions run away (a declared competition: its metric, its groups; no joint stack)"
    )
    combines: ClassVar[bool] = True

    def headline(self, mode: str, record: Mapping[str, Any], words: Words) -> str:
        if self.cautious and self.blends:
            return f"the soft vote, moved toward the candidates (votes, per-task choices, stacks) by the mean over {REPLICATES:,} resamples of the blend with the best cross-validated {words.key if words.declared else words.metric}, at most half-way toward one unless it wins beyond the noise"
        return f"the soft vote, or the candidate with the best cross-validated {words.key if words.declared else words.metric} where it wins beyond the noise (votes, per-task choices, stacks)"

    def summary(self, record: Mapping[str, Any], words: Words) -> list[str]:
        """Its choice and the runners-up (whole, then per task), why (the rule, margin and
        interval), the eval mix the candidates were weighed to, what was not offered and why,
        and the weights of a chosen selection."""
        auto = record.get("auto") or {}
        key, name = (words.key, words.key) if words.declared else ("f1", "macro F1")
        lines = []
        for task, choice in [("chosen" if words.declared else "chosen (18-class)", auto), *((f"  per-task candidate, {t}", r) for t, r in auto.get("tasks", {}).items())]:
            ranked = sorted(choice["candidates"], key=lambda c: -words.sign * c[key])
            others = ", ".join(f"{c['label']} {c[key]:.4f}" for c in ranked if c["label"] != choice["chosen"])
            chosen = next((c for c in ranked if c["label"] == choice["chosen"]), choice.get("blend"))
            lines.append(f"{task}: {chosen['label']} (CV {name} {chosen[key]:.4f} ±{chosen['spread']:.3f})" + (f"; others: {others}" if others else ""))
            why = choice.get("why") or {}
            if "interval" not in why and why.get("rule", "").startswith("no blend"):
                lines.append(f"  why: {why['rule']}")
            if "interval" in why:
                best = f"{why['best']} " if why.get("best") else ""
                lines.append(f"{'    ' if task.startswith(' ') else '  '}why: {why['rule']} ({best}margin {why['margin']:+.4f}, 90% CI {why['interval'][0]:+.4f} to {why['interval'][1]:+.4f}, positive in {why['positive']:.0%} of the {words.unit} resamples)")
        mix = {t: e for t, e in (auto.get("eval_mix") or {}).items() if "dropped" not in e}
        if mix:
            shifts = "; ".join(f"{t} train {e['train']} -> eval {e['eval']}" for t, e in mix.items())
            lines.append(f"candidates scored on the labelled images re-weighted to the eval mix EM estimates task by task from the calibrated soft vote ({shifts})")
        lines += [f"not chosen, its eval decisions run away: {label}: {reason}" for label, reason in (auto.get("run_away") or {}).items()]
        lines += [f"{label}: {reason}" for label, reason in (auto.get("losing") or {}).items()]
        lines += [auto["pool"]] if auto.get("pool") else []
        lines += [f"stack {why}" for why in (auto.get("stack") or {}).values()]
        return lines + task_lines({"too_thin": auto.get("thin"), "weights": auto.get("weights") or record.get("weights")})

    def companions(self, project: Project | None, competition: Competition | None = None) -> tuple[Step, ...]:
        """Steps tried after the chosen composition and kept only on evidence: a decision for the
        competition's metric (`Step.offered`: cut points for quadratic kappa, the prior-divided
        decision for balanced accuracy), and decoding by person where the team grouped both
        splits' images."""
        from .engine import REGISTRY
        from .persons import ByPerson, groups_paths

        competition = competition or (None if project is None else project.competition)
        metric = None if competition is None else competition.metric
        out = tuple(step(optional=True) for step in REGISTRY.values() if step.offered and step.metrics and metric in step.metrics)
        if project is not None and all(groups_paths(project.root, s)[0].is_file() for s in ("eval", "train")):
            out += (ByPerson(optional=True),)
        return out

    def fit(self, x: Sources, labels: np.ndarray, ctx: Context) -> FittedAuto:
        recipe, space, competition, target = ctx.recipe, ctx.space, ctx.competition, ctx.target
        folds = ctx.folds if ctx.folds is not None else ctx.folds_of(next(iter(x.values())).image_ids)
        check_coverage(recipe, x)
        ids, truth = next(iter(x.values())).image_ids, space.decode(labels)
        persons = ctx.groups(ids)
        thin = thin_of(labels, ids, ctx) if self.cautious else {}
        # a run-away matters where decisions are scored; the eval mix is EM's, on the mask competition's tasks
        on_decisions = not competition.metric.on_probabilities
        expected = expected_shares(target, recipe, labels) if self.cautious and target is not None and on_decisions else None
        image_weights, mix = eval_mix(recipe, x, labels, folds, target) if expected is not None and competition.is_preset else (None, {})
        standing = [t for t in space.tasks if image_weights is not None and str(t) in mix and "dropped" not in mix[str(t)]]
        guard = Guard(expected, image_weights, {t: truth[t] for t in standing}) if expected is not None else None
        chosen_parts, scored_probs, chosen_probs, tasks_record, weights = {}, {}, {}, {}, {}
        every: dict[str, dict[Task | str, _Option]] = {"selection": {}, "stack": {}}
        large = {t: why for t in space.tasks if (why := stack_too_large(recipe, x, t, limit=AUTO_STACK_WEIGHTS))}
        for task in space.tasks:
            k = space.n_classes[task]
            options = _task_options(recipe, x, task, truth[task], folds, task not in thin, task_objective(competition.metric, k), task not in large, ctx)
            reference = next(i for i, o in enumerate(options) if o.kind == "vote") if len(options) > 1 else 0
            allowed = np.ones(len(options), bool)
            if guard is not None:
                allowed = np.array([i == reference or guard.why({task: decide(o.part.model.predict(o.part.parts(target, task)))}, {task: decide(o.oof)}, space) is None for i, o in enumerate(options)])
            if competition.is_preset:
                judge: Judge = F1Judge([decide(o.oof) for o in options], truth[task], k, persons)
            else:
                judge = MetricJudge(competition.metric, [[(truth[task], k, o.oof, decide(o.oof))] for o in options], persons)
            candidates, per_row, chosen, why = evidence_choice([o.label for o in options], judge, folds, reference, allowed, self.cautious, image_weights)
            tasks_record[str(task)] = {"chosen": candidates[chosen].label, "candidates": [c.as_dict() for c in candidates], "why": why}
            best = options[chosen]
            chosen_parts[task] = best.part
            chosen_probs[task] = best.oof
            scored_probs[task] = np.stack([o.oof for o in options])[per_row, np.arange(len(per_row))]
            if best.kind == "selection":
                weights[str(task)] = {s: round(float(w), 4) for s, w in zip(best.part.sources, best.part.model.weights)}
            for kind in every:  # the selection and the stack of all the task's sources (too thin to learn, or one source: its reference)
                every[kind][task] = next((o for o in options if o.kind == kind), options[reference])
        tasks = ", ".join(f"{t} {tasks_record[str(t)]['chosen']}" for t in space.tasks)
        decided = lambda probs: Composed.decided(ids, probs, None, "auto", space)  # noqa: E731
        single = len(space.tasks) == 1  # its per-task choice is a whole answer already, among its selection and stack
        per_task = [_Whole(tasks if single else f"per task: {tasks}", FittedTasks(chosen_parts, "auto", space=space), decided(scored_probs), decided(chosen_probs))]
        for kind, label in () if single else (("selection", "selection per task"), ("stack", "stack per task")):
            per_task.append(_Whole(label, FittedTasks({t: o.part for t, o in every[kind].items()}, "auto", space=space), decided({t: o.oof for t, o in every[kind].items()})))
        whole, record = self._choose(recipe, x, labels, folds, per_task, target, guard, image_weights, ctx)
        record["tasks"] = tasks_record
        if mix:
            record["eval_mix"] = mix  # the candidates' scores are on the labelled images weighted to it
        if thin:
            record["thin"] = {str(t): f"{thin_line(t, classes, ctx)}: fewer than {MIN_PEOPLE} labelled {unit(ctx)}; no selection or stack for {t}" for t, classes in thin.items()}
        if large:
            record["stack"] = {str(t): f"not offered: {why}" for t, why in large.items()}
        if whole.label == per_task[0].label and weights:
            record["weights"] = weights  # the per-task selections are what eval gets
        return FittedAuto(whole.fitted, whole.label, record, replace(whole.consistent or whole.scored, mode="auto"))

    def _choose(
        self, recipe: Recipe, x: Sources, labels: np.ndarray, folds: Folds, per_task: Sequence[_Whole], target: Sources | None, guard: Guard | None, weights: np.ndarray | None, ctx: Context
    ) -> tuple[_Whole, dict[str, Any]]:
        """Auto's final choice among its whole candidates (`_candidates`), by the competition's
        out-of-fold score (the mask competition's **18-class** macro F1; a declared
        competition's metric of its answer), inside the CV loop."""
        candidates, allowed, record = self._candidates(recipe, x, labels, folds, per_task, target, guard, ctx)
        ids = next(iter(x.values())).image_ids
        persons = ctx.groups(ids)
        judge = judge_of(ctx.competition, labels, persons, [c.scored for c in candidates])
        scores, _, chosen, why = evidence_choice([c.label for c in candidates], judge, folds, 0, allowed, self.cautious and not self.blends, weights)
        if self.cautious and self.blends:
            return self._move(candidates, allowed, scores, judge, labels, folds, persons, weights, record, ctx)
        best = candidates[chosen]
        return best, {"chosen": best.label, "why": why, "candidates": [c.as_dict() for c in scores], **record}

    def _move(
        self, candidates: Sequence[_Whole], allowed: np.ndarray, scores: Sequence[Candidate], wholes: Judge, labels: np.ndarray, folds: Folds, persons: np.ndarray, weights: np.ndarray | None, record: dict[str, Any], ctx: Context
    ) -> tuple[_Whole, dict[str, Any]]:
        """How far to move from the soft vote (candidate 0) toward the others: the moves are
        the blends ``(1 - w) x soft + w x candidate`` (`BLEND_WEIGHTS`, every allowed
        candidate), and the one applied is their bootstrap-smoothed choice (`bagged`): the mean
        of the move with the best out-of-fold score in each resample of the people, a blend of
        the soft vote with as many candidates as won resamples.
        The moves are capped at `MAX_MOVE`: learned weights are shrunk toward the vote's equal
        ones, since estimated combinations lose to equal weights by the variance of their
        estimate (the forecast-combination puzzle: Stock and Watson 2004; Smith and Wallis
        2009; shrinkage toward equal weights, Diebold and Shin 2019). Not toward the best
        candidate where its paired gain over the soft vote is beyond the noise (the 90 %
        interval above 0, the all-or-nothing rule's test): there the variance the cap guards
        against is measured small, and the blends go all the way (`SURE_WEIGHTS`). Not toward a
        candidate whose gain is below 0 beyond the noise (the record's `losing`). `wholes`: the
        judge of the candidates themselves (`_choose`'s)."""
        soft = candidates[0]
        every = np.arange(len(labels))
        mix = None if weights is None else weights[every]
        top = pick(wholes.scores(every, mix), wholes, every, 0, allowed, True, mix)[0]  # the all-or-nothing rule: the candidate it moves to whole, or 0 (none)
        paired = wholes.replicates(every, mix, range(len(candidates)))  # one draw for all: each candidate's paired gain over the soft vote, as `Judge.gain` gives it
        losing = {c: high for c in range(1, len(candidates)) if allowed[c] and (high := _gain_interval(paired[:, c] - paired[:, 0])[1]) < 0}
        if losing:
            record = {**record, "losing": {candidates[c].label: f"not blended toward: it loses to the soft vote beyond the noise out of fold (the 90% interval of its paired gain ends at {high:+.4f})" for c, high in losing.items()}}
        moves = [(0, 0.0)] + [(c, w) for c in range(1, len(candidates)) if allowed[c] and c not in losing for w in (SURE_WEIGHTS if c == top else BLEND_WEIGHTS)]
        judge = judge_of(ctx.competition, labels, persons, [blend(soft.scored, [candidates[c].scored], [w]) for c, w in moves])
        shares = bagged(judge.replicates(every, mix, range(len(moves))), moves)
        listed = [s.as_dict() for s in scores]
        if not shares:
            why = {"rule": f"no blend of the soft vote with another candidate scores better out of fold than the soft vote in any of {REPLICATES:,} resamples of the {unit(ctx)} (ties: the soft vote), so it is kept"}
            return soft, {"chosen": soft.label, "why": why, "candidates": listed, **record}
        others, share = [candidates[c] for c in shares], list(shares.values())
        moved = round(sum(share), 6)
        whole = others[0] if share == [1.0] else None  # every resample took one candidate all the way: the candidate itself
        label = whole.label if whole else " + ".join(f"{share_text(w)} x {c.label}" for c, w in [(soft, 1 - moved), *zip(others, share)])
        scored = blend(soft.scored, [o.scored for o in others], share)
        pair = judge_of(ctx.competition, labels, persons, [soft.scored, scored])  # the soft vote and the move: the interval of its gain, its folds
        values = pair.scores(every, mix)
        low, high, positive = pair.gain(0, 1, every, mix)
        spread = float(np.std([pair.sign * pair.scores(held, None if weights is None else weights[held])[1] for _, held in folds]))
        toward = ", ".join(f"{o.label} {w:.0%}" for o, w in zip(others, share))
        sure = f"; toward {candidates[top].label}, whose gain is beyond the noise (the 90% interval of its paired gain over the soft vote above 0), all the way" if top and top in shares else ""
        why = {
            "rule": f"moved {moved:.0%} of the way from the soft vote ({toward}): the mean of the blend with the best cross-validated score in each of {REPLICATES:,} resamples of the {unit(ctx)} "
            f"(moves capped at {MAX_MOVE:.0%} toward a candidate not beyond the noise: learned weights shrunk toward the vote's{sure})",
            "margin": round(float(values[1] - values[0]), 4),
            "interval": [round(low, 4), round(high, 4)],
            "positive": round(positive, 3),
        }
        moved_record = {**Candidate(label, float(pair.sign * values[1]), spread, pair.key).as_dict(), "weight": moved, "toward": {o.label: w for o, w in zip(others, share)}}
        if whole is None:
            consistent = blend(soft.consistent or soft.scored, [o.consistent or o.scored for o in others], share)
            whole = _Whole(label, FittedBlend(soft.fitted, tuple(o.fitted for o in others), tuple(share)), scored, consistent)
        return whole, {"chosen": label, "why": why, "candidates": listed, "blend": moved_record, **record}

    def _candidates(
        self, recipe: Recipe, x: Sources, labels: np.ndarray, folds: Folds, per_task: Sequence[_Whole], target: Sources | None, guard: Guard | None, ctx: Context
    ) -> tuple[list[_Whole], np.ndarray, dict[str, Any]]:
        """Auto's whole candidates, cross-fitted: the recipe's soft vote (the reference, first)
        and geometric vote (on the joint when every source carries it, as `combine` does), the
        per-task candidates and, on the mask competition when every source carries the joint
        (and no gender x age class is thin), the pool; which may be chosen (``(c,)``: not a
        run-away), and the record of what was left out."""
        space, competition = ctx.space, ctx.competition
        candidates, record = [], {}
        for vote in vote_candidates():
            fitted = FittedVote(recipe, vote())
            scored = fitted.apply(x)
            label = f"{vote.name} vote {'+'.join(recipe.sources)}" + (" (18-way joint)" if scored.mode == "joint" else " (per task)" if len(space.tasks) > 1 else "")
            candidates.append(_Whole(label, fitted, scored))
        candidates += per_task
        ids = next(iter(x.values())).image_ids
        if competition.is_preset and all(x[s].joint is not None for s in recipe.sources):
            thin = thin_pairs(labels, ids) if self.cautious else []
            if thin:
                record["pool"] = f"the stack on the 18-way joint is not offered: too few labelled people of {', '.join(thin)} (fewer than {MIN_PEOPLE})"
            else:
                pool = fit_step(Pool(), x, labels, folds, None, ctx, admit=False)  # the thin pairs checked above (cautious)
                candidates.append(_Whole(f"stack of {'+'.join(recipe.sources)} on the 18-way joint", pool.fitted, replace(pool.scored, mode="auto")))
        allowed = np.ones(len(candidates), bool)
        if guard is not None:
            away = {c.label: guard.why(space.decode(c.fitted.apply(target).labels), space.decode(c.scored.labels), space) for c in candidates[1:]}
            allowed[1:] = [away[c.label] is None for c in candidates[1:]]
            if any(away.values()):
                record["run_away"] = {label: why for label, why in away.items() if why}
        return candidates, allowed, record
