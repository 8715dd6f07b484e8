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
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..data.labels import N_CLASSES, N_JOINT, TASKS, Task, encode
from ..data.people import MIN_PEOPLE, thin_classes, thin_text
from ..data.stable import decide
from ..errors import EnsError
from ..scoring.metrics import macro_f1
from .engine import Composed, Context, Fit, Fitted, Step, Words, cv_score, register
from .folds import Folds
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


def offset_decisions(logs: Mapping[Task, np.ndarray], joint_log: np.ndarray | None, offsets: Mapping[Task, np.ndarray]) -> np.ndarray:
    """Joint classes ``(n,)`` from log-probabilities plus offsets: on the joint ``(n, 18)`` when
    there is one (as the vote decided), else per task ``{task: (n, k)}``."""
    if joint_log is not None:
        return decide(joint_log + _joint_offsets(offsets))
    return encode(*(decide(logs[t] + offsets[t]) for t in TASKS))


def tune_offsets(logs: Mapping[Task, np.ndarray], joint_log: np.ndarray | None, labels: np.ndarray, held: Mapping[Task, Sequence[int]] | None = None) -> dict[Task, np.ndarray]:
    """Offsets ``{task: (k,)}`` that maximise the 18-class macro F1 of `offset_decisions` on `labels`
    ``(n,)``: coordinate ascent over `OFFSET_GRID`, class 0 of each task held at 0 (and the
    classes `held` ``{task: classes}``: too thin to tune), a move kept only when it strictly
    improves (so uninformative data leaves the offsets at 0)."""
    offsets = {t: np.zeros(N_CLASSES[t]) for t in TASKS}
    best = macro_f1(labels, offset_decisions(logs, joint_log, offsets), N_JOINT)
    for _ in range(TUNE_PASSES):
        improved = False
        for task in TASKS:
            for c in (c for c in range(1, N_CLASSES[task]) if c not in (held or {}).get(task, ())):
                for value in OFFSET_GRID:
                    trial = {**offsets, task: offsets[task].copy()}
                    trial[task][c] = value
                    f1 = macro_f1(labels, offset_decisions(logs, joint_log, trial), N_JOINT)
                    if f1 > best + 1e-12:
                        best, offsets, improved = f1, trial, True
        if not improved:
            break
    return offsets


def apply_offsets(composed: Composed, offsets: Mapping[Task, np.ndarray]) -> Composed:
    """`composed` with its probabilities re-weighted by ``exp(offsets)``: its argmax is `offset_decisions`'s."""
    ratios = {t: np.exp(offsets[t]) for t in TASKS}
    probs, joint = reweight(composed.probs, ratios, composed.joint)
    return Composed.decided(composed.image_ids, probs, joint, composed.mode)


@dataclass(frozen=True)
class Offsets(Fitted):
    """Fitted F1 offsets ``{task: (k,)}``: `apply_offsets`."""

    offsets: dict[Task, np.ndarray]

    def apply(self, x: Composed) -> Composed:
        return apply_offsets(x, self.offsets)

    def describe(self) -> dict[str, Any]:
        return {"offsets": {t.value: self.offsets[t].round(2).tolist() for t in TASKS}}


@register
@dataclass(frozen=True)
class TuneF1(Step):
    """Per-class offsets tuned for the 18-class macro F1 (module doc), applied to the composition;
    scored out of fold by the engine (each fold decided with offsets tuned on the other people),
    its record the cross-validated score before and after."""

    name: ClassVar[str] = "tune_f1"
    help: ClassVar[str] = "F1 offsets: per-class offsets on the composition's log-probabilities, tuned for the 18-class macro F1"
    flag: ClassVar[str] = "--tune-f1"
    declared: ClassVar[bool] = False
    reweights: ClassVar[bool] = True

    def fit(self, x: Composed, labels: np.ndarray, ctx: Context) -> Offsets:
        logs, joint_log = _logs(x)
        return Offsets(tune_offsets(logs, joint_log, labels, thin_classes(labels, x.image_ids)))

    def record(self, fitted: Offsets, x: Composed, scored: Composed | None, labels: np.ndarray, folds: Folds) -> dict[str, Any]:
        before, after = cv_score(labels, x.labels, folds), cv_score(labels, scored.labels, folds)
        thin = thin_classes(labels, x.image_ids)
        why = {t.value: f"{thin_text(t, classes)}: fewer than {MIN_PEOPLE} labelled people, offset held at 0" for t, classes in thin.items()}
        return {"tune_f1": {
            **fitted.describe(), "folds": after.folds, "f1_18_before": before.value, "f1_18_after": after.value, "f1_18_fold_std_after": after.fold_std,
            **({"too_thin": why} if why else {}),
        }}  # fmt: skip

    def summary(self, record: Mapping[str, Any], words: Words) -> list[str]:
        """The classes too thin to tune, the offsets, the cross-validated score before and after, and a warning where it fell."""
        tuned = record.get("tune_f1") or {}
        if not tuned:
            return []
        lines = [f"too thin to learn: {why}" for why in (tuned.get("too_thin") or {}).values()]
        lines.append("F1 offsets: " + "; ".join(f"{t} {v}" for t, v in tuned["offsets"].items()) + f" (CV 18-class F1 {tuned['f1_18_before']:.4f} -> {tuned['f1_18_after']:.4f})")
        if tuned["f1_18_after"] < tuned["f1_18_before"]:
            lines.append("warning: the tuned offsets lower the cross-validated score on these images; consider composing without --tune-f1")
        return lines

    def fit_blind(self, target: Any, ctx: Context) -> Fit:
        raise EnsError(f"--tune-f1 tunes on labelled predictions; the recipe has none ({ctx.skipped})")
