"""F1 tuning: per-class offsets on a composition's log-probabilities, scored out of fold.

Macro F1 rewards calling a rare class more often than the probabilities alone would. `TuneF1`
adds an offset per class (class 0 of each task fixed at 0) to the composition's
log-probabilities, found by coordinate ascent on the 18-class macro F1 of the labelled images;
its score is cross-fitted (each person-grouped fold decided with offsets tuned on the other
people), and `ens` warns when the tuned offsets lower it. An offset ``b`` is a weight
``exp(b)`` on the probabilities, so the tuned composition is saved as re-weighted
probabilities (`priors.reweight`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..data.labels import N_CLASSES, N_JOINT, TASKS, Task, encode
from ..data.people import MIN_PEOPLE, thin_classes, thin_text
from ..data.stable import decide as decide_class
from ..errors import EnsError
from ..scoring.metrics import macro_f1
from .engine import Composed, Context, CVScore, Fit, Fitted, Step, cv_score
from .priors import reweight

EPS = 1e-6


OFFSET_GRID = np.round(np.linspace(-2.0, 2.0, 41), 2)  # log-weights: exp(2) ~ 7.4 times a class's probability
TUNE_PASSES = 3


def _joint_offsets(offsets: Mapping[Task, np.ndarray]) -> np.ndarray:
    """Per-task offsets -> the 18 joint classes' offsets ``(18,)`` (their sums)."""
    m, g, a = (offsets[t] for t in TASKS)
    return (m[:, None, None] + g[None, :, None] + a[None, None, :]).reshape(-1)


def _logs(composed: Composed) -> tuple[dict[Task, np.ndarray], np.ndarray | None]:
    clip = lambda p: np.log(np.clip(p, EPS, None))  # noqa: E731
    return {t: clip(composed.probs[t]) for t in TASKS}, None if composed.joint is None else clip(composed.joint)


def decide(logs: Mapping[Task, np.ndarray], joint_log: np.ndarray | None, offsets: Mapping[Task, np.ndarray]) -> np.ndarray:
    """Joint classes ``(n,)`` from log-probabilities plus offsets: on the joint ``(n, 18)`` when
    there is one (as the vote decided), else per task ``{task: (n, k)}``."""
    if joint_log is not None:
        return decide_class(joint_log + _joint_offsets(offsets))
    return encode(*(decide_class(logs[t] + offsets[t]) for t in TASKS))


def tune_offsets(logs: Mapping[Task, np.ndarray], joint_log: np.ndarray | None, labels: np.ndarray, held: Mapping[Task, Sequence[int]] | None = None) -> dict[Task, np.ndarray]:
    """Offsets ``{task: (k,)}`` that maximise the 18-class macro F1 of `decide` on `labels`
    ``(n,)``: coordinate ascent over `OFFSET_GRID`, class 0 of each task held at 0 (and the
    classes `held` ``{task: classes}``: too thin to tune), a move kept only when it strictly
    improves (so uninformative data leaves the offsets at 0)."""
    offsets = {t: np.zeros(N_CLASSES[t]) for t in TASKS}
    best = macro_f1(labels, decide(logs, joint_log, offsets), N_JOINT)
    for _ in range(TUNE_PASSES):
        improved = False
        for task in TASKS:
            for c in (c for c in range(1, N_CLASSES[task]) if c not in (held or {}).get(task, ())):
                for value in OFFSET_GRID:
                    trial = {**offsets, task: offsets[task].copy()}
                    trial[task][c] = value
                    f1 = macro_f1(labels, decide(logs, joint_log, trial), N_JOINT)
                    if f1 > best + 1e-12:
                        best, offsets, improved = f1, trial, True
        if not improved:
            break
    return offsets


def apply_offsets(composed: Composed, offsets: Mapping[Task, np.ndarray]) -> Composed:
    """`composed` with its probabilities re-weighted by ``exp(offsets)``: its argmax is `decide`'s."""
    ratios = {t: np.exp(offsets[t]) for t in TASKS}
    probs, joint = reweight(composed.probs, ratios, composed.joint)
    return Composed.decided(composed.image_ids, probs, joint, composed.mode)


@dataclass(frozen=True)
class Tuned:
    """F1 tuning's offsets (fitted on all labelled images), the out-of-fold tuned composition of
    the labelled images, and the cross-validated scores before and after."""

    offsets: dict[Task, np.ndarray]
    scored: Composed
    before: CVScore
    after: CVScore
    thin: dict[str, str] = field(default_factory=dict)  # the tasks whose thin classes kept offset 0, and why

    def as_dict(self) -> dict[str, Any]:
        return {
            "offsets": {t.value: self.offsets[t].round(2).tolist() for t in TASKS},
            "folds": self.after.folds,
            "f1_18_before": self.before.f1_18,
            "f1_18_after": self.after.f1_18,
            "f1_18_fold_std_after": self.after.fold_std,
            **({"too_thin": self.thin} if self.thin else {}),
        }


def tune_f1(composed: Composed, labels: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> Tuned:
    """Tune offsets on a labelled composition (`composed`, joint labels ``(n,)``), scored by
    person-grouped cross-validation (`splits`: (fit, held) rows): each fold is decided with
    offsets tuned on the other people."""
    logs, joint_log = _logs(composed)
    probs = {t: np.empty_like(v, dtype=np.float64) for t, v in composed.probs.items()}
    joint = None if composed.joint is None else np.empty_like(composed.joint, dtype=np.float64)
    ids = composed.image_ids
    for fit_idx, held_idx in splits:
        offsets = tune_offsets({t: v[fit_idx] for t, v in logs.items()}, None if joint_log is None else joint_log[fit_idx], labels[fit_idx], thin_classes(labels[fit_idx], ids[fit_idx]))
        part = apply_offsets(composed.take(held_idx), offsets)
        for t in probs:
            probs[t][held_idx] = part.probs[t]
        if joint is not None:
            joint[held_idx] = part.joint
    scored = Composed.decided(composed.image_ids, probs, joint, composed.mode)
    thin = thin_classes(labels, ids)
    why = {t.value: f"{thin_text(t, classes)}: fewer than {MIN_PEOPLE} labelled people, offset held at 0" for t, classes in thin.items()}
    return Tuned(tune_offsets(logs, joint_log, labels, thin), scored, cv_score(labels, composed.labels, splits), cv_score(labels, scored.labels, splits), why)


@dataclass(frozen=True)
class Offsets(Fitted):
    """Fitted F1 offsets ``{task: (k,)}``: `apply_offsets`."""

    offsets: dict[Task, np.ndarray]

    def apply(self, x: Composed) -> Composed:
        return apply_offsets(x, self.offsets)

    def describe(self) -> dict[str, Any]:
        return {"offsets": {t.value: self.offsets[t].round(2).tolist() for t in TASKS}}


@dataclass(frozen=True)
class TuneF1(Step):
    """Per-class offsets tuned for the 18-class macro F1 (module doc), applied to the composition."""

    name: ClassVar[str] = "tune_f1"
    flag: ClassVar[str] = "--tune-f1"
    reweights: ClassVar[bool] = True

    def fit(self, x: Composed, labels: np.ndarray, ctx: Context) -> Offsets:
        logs, joint_log = _logs(x)
        return Offsets(tune_offsets(logs, joint_log, labels, thin_classes(labels, x.image_ids)))

    def cross_fit(self, x: Composed, labels: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]], target: Any, ctx: Context) -> Fit:
        tuned = tune_f1(x, labels, folds)
        return Fit(Offsets(tuned.offsets), tuned.scored, record={"tune_f1": tuned.as_dict()}, cross_fitted=True)

    def fit_blind(self, target: Any, ctx: Context) -> Fit:
        raise EnsError(f"--tune-f1 tunes on labelled predictions; the recipe has none ({ctx.skipped})")
