"""Decisions for the metric: the answer's classes chosen for what the competition scores, not by
the argmax (issue 35), each a step after the combining one, fitted out of fold by the engine.

- `CutPoints` (``--decide cut-points``, quadratic kappa on ordered grades): the expected grade
  ``sum_c c * p(c|x)`` of each image, cut into grades at points fitted on the labelled images
  for kappa (coordinate search over each cut between its neighbours, so that the cuts stay in
  order), as the APTOS 2019 and Diabetic Retinopathy 2015 winners did on their out-of-fold rows.
- `PriorDivided` (``--decide prior-divided``, balanced accuracy): the class of the largest
  ``p(c|x) / p(c)``, ``p(c)`` the labelled images' class mix. With calibrated probabilities it
  is the Bayes decision for the mean recall over the classes (the decision that weighs every
  class as if the classes were equally common; Menon et al. 2013, "On the statistical
  consistency of algorithms for binary classification under class imbalance"; Collell et al.
  2018, "A simple plug-in bagging ensemble based on threshold-moving for classifying binary and
  multiclass imbalanced data"). Nothing is searched: the train mix is its one parameter.

Both leave the probabilities as they are and change the answer's classes only: a submission of
classes takes them, the probabilities kept with the composition are the combining step's. MAP@K's
answer, the K likeliest classes, needs no fit: the submission writes it from the probabilities.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..data.stable import decide, weighted_sum
from ..errors import EnsError
from ..scoring.metrics import metric_value
from .engine import Composed, Context, Fitted, Step, Words, cv_score, register
from .folds import Folds

if TYPE_CHECKING:
    from ..data.competition import Competition

CUT_GRID = 41  # candidate positions of a cut between its neighbours
CUT_PASSES = 3


def _one_task(x: Composed, ctx: Context, step: Step) -> np.ndarray:
    """The probabilities ``(n, k)`` of the one task whose classes the answer is."""
    space = ctx.space
    if len(space.tasks) != 1:
        raise EnsError(f"--decide {step.cli}: decides one task's classes; {ctx.competition.name} answers {len(space.tasks)} tasks")
    return np.asarray(x.probs[space.tasks[0]], dtype=np.float64)


def expected_grade(probs: np.ndarray) -> np.ndarray:
    """The expected grade of each image ``(n,)``: ``sum_c c * probs[:, c]`` of `probs` ``(n, k)``,
    added grade by grade (`stable.weighted_sum`: the same bits on every CPU, so that an image
    at a cut point is cut alike everywhere)."""
    probs = np.asarray(probs)
    return weighted_sum(np.arange(probs.shape[1]), (probs[:, c] for c in range(probs.shape[1])))


def cut(grade: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Grades ``(n,)`` from expected grades: how many of the ordered `cuts` ``(k-1,)`` each is at or above."""
    return np.searchsorted(np.asarray(cuts, dtype=np.float64), grade, side="right").astype(np.int64)


def fit_cuts(grade: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Cut points ``(k-1,)`` that maximise the quadratic kappa of `cut` on `labels` ``(n,)``:
    from the plain rounding ``[0.5, 1.5, …]``, each cut in turn moved to the best of `CUT_GRID`
    positions between its neighbours (the cuts stay in order), a move kept only when it strictly
    improves, `CUT_PASSES` passes at most (uninformative rows leave the rounding as it is)."""
    cuts = np.arange(k - 1, dtype=np.float64) + 0.5
    kappa = lambda c: np.nan_to_num(metric_value("quadratic_kappa", labels, k, decided=cut(grade, c)), nan=-1.0)  # noqa: E731
    best = kappa(cuts)
    for _ in range(CUT_PASSES):
        improved = False
        for j in range(k - 1):
            low = cuts[j - 1] if j > 0 else -0.5
            high = cuts[j + 1] if j < k - 2 else k - 0.5
            for value in np.linspace(low, high, CUT_GRID)[1:-1]:
                trial = cuts.copy()
                trial[j] = value
                score = kappa(trial)
                if score > best + 1e-12:
                    best, cuts, improved = score, trial, True
        if not improved:
            break
    return cuts


@dataclass(frozen=True)
class Cuts(Fitted):
    """Fitted cut points ``(k-1,)`` on the expected grade of `task`."""

    task: str
    cuts: np.ndarray
    competition: Competition = field(compare=False, repr=False)
    check: dict[str, Any] | None = None  # an optional decision's evidence (`_Decision`)

    def apply(self, x: Composed) -> Composed:
        return Composed(x.image_ids, cut(expected_grade(x.probs[self.task]), self.cuts), x.probs, x.joint, x.mode, x.space)

    def describe(self) -> dict[str, Any]:
        return {"cut_points": [round(float(c), 4) for c in self.cuts], **(self.check or {})}


@dataclass(frozen=True)
class Divided(Fitted):
    """The train class mix ``(k,)`` of `task` the probabilities are divided by."""

    task: str
    priors: np.ndarray
    competition: Competition = field(compare=False, repr=False)
    check: dict[str, Any] | None = None  # an optional decision's evidence (`_Decision`)

    def apply(self, x: Composed) -> Composed:
        return Composed(x.image_ids, decide(np.asarray(x.probs[self.task], dtype=np.float64) / self.priors), x.probs, x.joint, x.mode, x.space)

    def describe(self) -> dict[str, Any]:
        return {"priors": [round(float(p), 6) for p in self.priors], **(self.check or {})}


@dataclass(frozen=True)
class Kept(Fitted):
    """The composition's own decisions, kept: an `optional` decision without evidence."""

    check: dict[str, Any]
    competition: Competition = field(compare=False, repr=False)

    def apply(self, x: Composed) -> Composed:
        return x

    def describe(self) -> dict[str, Any]:
        return dict(self.check)


@dataclass(frozen=True)
class _Decision(Step):
    """What the two decisions share: a declared competition's one task, a record of the
    cross-validated metric before and after, a warning where it fell. `optional` (auto brings
    it after itself, `Step.offered`): applied only where, on the rows it is fitted on, the
    decisions fitted on the other folds beat the composition's own beyond the noise (the 90 %
    interval of the paired gain, groups resampled, above 0), else the argmax is kept."""

    optional: bool = False
    cli: ClassVar[str]
    flag: ClassVar[str] = "--decide"
    last: ClassVar[bool] = True
    offered: ClassVar[bool] = True

    @abstractmethod
    def fit_task(self, probs: np.ndarray, labels: np.ndarray, ctx: Context) -> Cuts | Divided:
        """Fitted on one task's probabilities ``(n, k)`` and `labels` ``(n,)``."""

    def fit(self, x: Composed, labels: np.ndarray, ctx: Context) -> Fitted:
        probs = _one_task(x, ctx, self)
        fitted = self.fit_task(probs, labels, ctx)
        if not self.optional:
            return fitted
        check = self._evidence(x, probs, labels, ctx)
        return replace(fitted, check=check) if check["applied"] else Kept(check, ctx.competition)

    def _evidence(self, x: Composed, probs: np.ndarray, labels: np.ndarray, ctx: Context) -> dict[str, Any]:
        """Whether its decisions, fitted on the other folds of these rows, beat `x`'s own beyond the noise."""
        from ..scoring.evidence import group_bootstrap
        from ..scoring.metrics import competition_rows
        from .folds import filled, out_of_fold

        folds = ctx.folds if ctx.folds is not None else ctx.folds_of(x.image_ids)
        inner = lambda rows: (lambda held, f=self.fit_task(probs[rows], labels[rows], ctx): f.apply(x.take(held)).labels)  # noqa: E731
        decided = filled(out_of_fold(inner, folds), len(labels))
        comp = ctx.competition
        score = competition_rows(comp, labels, [(x.probs, None, x.labels), (x.probs, None, decided)])
        found = group_bootstrap(score, ctx.groups(x.image_ids), reference=0, higher_is_better=comp.metric.higher_is_better)
        gain = {"gain": round(float(found.f1[1] - found.f1[0]), 4), "interval": [round(float(found.gain_low[1]), 4), round(float(found.gain_high[1]), 4)]}
        if found.gain_low[1] > 0:
            return {"applied": True, "reason": "beyond the noise: the 90% interval of its out-of-fold gain over the argmax is above 0", "check": gain}
        return {"applied": False, "reason": "within the noise: the 90% interval of its out-of-fold gain over the argmax holds 0, so the argmax is kept", "check": gain}

    def record(self, fitted: Fitted, x: Composed, scored: Composed | None, labels: np.ndarray, folds: Folds) -> dict[str, Any]:
        competition = fitted.competition  # type: ignore[attr-defined]  (every fitted decision keeps it)
        cv = lambda composed: float(cv_score(labels, composed, folds, competition).value)  # noqa: E731
        return {"cv": {"folds": len(folds), "before": cv(x), "after": cv(scored)}}

    def summary(self, record: Mapping[str, Any], words: Words) -> list[str]:
        """The fitted parameters and the cross-validated metric before and after; a warning where it fell."""
        cv = record.get("cv")
        if not cv:
            return []
        fitted = "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in record.items() if k not in ("step", "cv", "optional", "applied", "reason", "check"))
        scores = f"(CV {words.metric} {cv['before']:.4f} -> {cv['after']:.4f})"
        if "applied" not in record:  # asked for: applied
            lines = [f"decided for the metric: {fitted} {scores}"]
            if words.sign * (cv["after"] - cv["before"]) < 0:
                lines.append(f"warning: it lowers the cross-validated score on these images; consider composing without --decide {self.cli}")
            return lines
        check = record["check"]  # auto's: kept only on evidence
        evidence = f"gain {check['gain']:+.4f}, 90% CI {check['interval'][0]:+.4f} to {check['interval'][1]:+.4f}"
        return [f"{self.help.split(':')[0]} {'applied' if record['applied'] else 'NOT applied'}{f' ({fitted})' if fitted else ''}: {record['reason']} ({evidence}) {scores}"]

    def fit_blind(self, target: Any, ctx: Context) -> Any:
        raise EnsError(f"--decide {self.cli} is fitted on labelled predictions; the recipe has none ({ctx.skipped})")


@register
@dataclass(frozen=True)
class CutPoints(_Decision):
    """Grades cut from the expected grade at points fitted for quadratic kappa (module doc)."""

    name: ClassVar[str] = "cut_points"
    cli: ClassVar[str] = "cut-points"
    help: ClassVar[str] = "cut points: the expected grade cut into grades at points fitted out of fold for quadratic kappa"
    metrics: ClassVar[tuple[str, ...] | None] = ("quadratic_kappa",)

    def fit_task(self, probs: np.ndarray, labels: np.ndarray, ctx: Context) -> Cuts:
        return Cuts(ctx.space.tasks[0], fit_cuts(expected_grade(probs), labels, probs.shape[1]), ctx.competition)


@register
@dataclass(frozen=True)
class PriorDivided(_Decision):
    """The class of the largest p(c|x) / p(c), p(c) the labelled mix (module doc)."""

    name: ClassVar[str] = "prior_divided"
    cli: ClassVar[str] = "prior-divided"
    help: ClassVar[str] = "prior-divided: the class of the largest p(c|x) / p(c), the Bayes decision for balanced accuracy"
    metrics: ClassVar[tuple[str, ...] | None] = ("balanced_accuracy",)

    def fit_task(self, probs: np.ndarray, labels: np.ndarray, ctx: Context) -> Divided:
        k = probs.shape[1]
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=k).astype(np.float64)
        return Divided(ctx.space.tasks[0], (counts + 1.0) / (counts.sum() + k), ctx.competition)  # add-one: a class the rows lack is not divided by 0
