"""Scores as the competition computes them: macro F1 over fixed label sets.

The 18-class score is scikit-learn's macro F1 over labels 0..17, a class absent from both the
truth and the prediction counting as 0 (``zero_division=0``); per-task scores are macro F1 over
the task's own classes, after decoding the joint classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..data.labels import N_CLASSES, N_JOINT, TASKS, Task, decode, split_prediction
from ..data.stable import decide
from ..data.store import PredictionSet

if TYPE_CHECKING:
    from ..data.competition import Competition, Metric

CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Scores:
    """Macro F1 per covered task; 18-class macro F1 and accuracy when all tasks are predicted."""

    f1: dict[Task, float]
    f1_18: float | None
    accuracy: float | None
    n: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            **{f"f1_{t}": self.f1.get(t) for t in TASKS},
            "f1_18": self.f1_18,
            "accuracy": self.accuracy,
            "n": self.n,
        }


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, weights: np.ndarray | None = None) -> float:
    """Macro F1 over labels ``0..n_classes-1`` (absent classes score 0). Both ``(n,)`` ints;
    `weights` ``(n,)`` turn the counts into weight sums (a resampled or re-weighted image set).

    Equal to scikit-learn's ``f1_score(..., labels=range(n_classes), average="macro",
    zero_division=0, sample_weight=weights)`` (a test holds it to that), from counts alone:
    ensemble selection calls it thousands of times.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    right = y_true == y_pred
    tp = np.bincount(y_true[right], None if weights is None else weights[right], minlength=n_classes)
    denominator = np.bincount(y_true, weights, minlength=n_classes) + np.bincount(y_pred, weights, minlength=n_classes)
    f1 = np.divide(2.0 * tp, denominator, out=np.zeros(n_classes), where=denominator > 0)
    return float(f1[:n_classes].mean())


def score(y_true: np.ndarray, y_pred: np.ndarray | Mapping[Task, np.ndarray]) -> Scores:
    """Score predictions against joint labels ``y_true (n,)``.

    y_pred: joint classes ``(n,)``, or ``{task: (n,)}`` for the tasks a source covers (the
    18-class score then needs all three).
    """
    y_true = np.asarray(y_true)
    truth = decode(y_true)
    parts, joint = split_prediction(y_pred)
    return Scores(
        f1={t: macro_f1(truth[t], parts[t], N_CLASSES[t]) for t in TASKS if t in parts},
        f1_18=None if joint is None else macro_f1(y_true, joint, N_JOINT),
        accuracy=None if joint is None else (float(np.mean(y_true == joint)) if len(y_true) else 0.0),
        n=len(y_true),
    )


def metric_value(metric: Metric | str, y_true: np.ndarray, k: int, probs: np.ndarray | None = None, decided: np.ndarray | None = None, weights: np.ndarray | None = None) -> float:
    """A declared competition's `metric` (`competition.Metric`) of a prediction over `k` classes:
    y_true ``(n,)``; probs ``(n, k)`` (needed by AUC and log-loss); decided ``(n,)`` (default: the
    argmax of `probs`); weights ``(n,)`` image weights (a resampled set; None: all 1). Macro F1
    as `macro_f1`; accuracy; AUC as scikit-learn's `roc_auc_score` (binary: of class 1; more
    classes: one-vs-rest, macro); log-loss as its `log_loss` over the `k` classes."""
    from sklearn.metrics import log_loss, roc_auc_score

    from ..data.competition import Metric

    metric = Metric(metric)
    y_true = np.asarray(y_true)
    if metric.on_probabilities:
        if probs is None:
            raise ValueError(f"{metric} is scored on probabilities")
        if metric is Metric.LOG_LOSS:
            return float(log_loss(y_true, probs, labels=list(range(k)), sample_weight=weights))
        if k == 2:
            return float(roc_auc_score(y_true, probs[:, 1], sample_weight=weights))
        return float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=list(range(k)), sample_weight=weights))
    if decided is None:
        if probs is None:
            raise ValueError(f"{metric} needs decisions or probabilities")
        decided = decide(probs)
    if metric is Metric.ACCURACY:
        return float(np.average(np.asarray(decided) == y_true, weights=weights)) if len(y_true) else 0.0
    return macro_f1(y_true, np.asarray(decided), k, weights)


def competition_score(competition: Competition, labels: np.ndarray, probs: Mapping[str, np.ndarray], joint: np.ndarray | None = None, decided: np.ndarray | None = None, weights: np.ndarray | None = None) -> float:
    """A declared competition's metric (`metric_value`) of a prediction of labelled images:
    `labels` ``(n,)`` answer classes; `probs` ``{task: (n, k)}``, the `joint` when there is one,
    `decided` ``(n,)`` answer classes (default: the probabilities' argmax). Over the answer's
    classes (the one task's, or the product of the tasks with ``joint: product``); several tasks
    without a product (multi-label): the mean of the metric over the tasks."""
    space, metric = competition.space, competition.metric
    if len(space.tasks) == 1 or competition.joint:
        p = probs[space.tasks[0]] if len(space.tasks) == 1 else (joint if joint is not None else space.joint_from_tasks(probs))
        return metric_value(metric, labels, space.n_joint, p, decided, weights)
    truth = space.decode(labels)
    return float(np.mean([metric_value(metric, truth[t], space.n_classes[t], probs[t], weights=weights) for t in space.tasks]))


def own_prediction(pset: PredictionSet) -> np.ndarray | dict:
    """A source's prediction alone: the joint argmax ``(n,)`` when it has a joint, else per-task argmaxes."""
    if pset.joint is not None:
        return pset.joint.argmax(axis=1)
    return {t: p.argmax(axis=1) for t, p in pset.probs.items()}


@dataclass(frozen=True)
class Reliability:
    """Calibration of the top-class probability in equal-width bins over [0, 1].

    confidence / accuracy: mean top probability and share correct per bin ``(bins,)``, NaN for
    empty bins; counts ``(bins,)``; ece: the expected calibration error (count-weighted mean
    gap between accuracy and confidence)."""

    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray
    ece: float


def reliability(probs: np.ndarray, y_true: np.ndarray, bins: int = CALIBRATION_BINS) -> Reliability:
    """Reliability of probabilities ``(n, k)`` against true classes ``(n,)``."""
    probs = np.asarray(probs, dtype=np.float64)
    top = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    which = np.minimum((top * bins).astype(np.int64), bins - 1)  # a probability of 1 goes to the last bin
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=top, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=bins) / counts
    filled = counts > 0
    ece = float((counts[filled] * np.abs(accuracy[filled] - confidence[filled])).sum() / max(len(top), 1))
    return Reliability(confidence, accuracy, counts, ece)
