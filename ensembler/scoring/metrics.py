"""Scores as the competition computes them: macro F1 over fixed label sets, and a declared
competition's metric (`metric_value`, `metric_replicates`).

The 18-class score is scikit-learn's macro F1 over labels 0..17, a class absent from both the
truth and the prediction counting as 0 (``zero_division=0``); per-task scores are macro F1 over
the task's own classes, after decoding the joint classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.labels import N_CLASSES, N_JOINT, TASKS, Task, decode, split_prediction
from ..data.stable import decide, top_classes
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
    y_true ``(n,)``; probs ``(n, k)`` (needed by AUC, log-loss and map@K); decided ``(n,)``
    (default: the argmax of `probs`); weights ``(n,)`` image weights (a resampled set; None: all
    1). `metric_replicates` with one row of weights, log-loss aside (scikit-learn's `log_loss`
    over the `k` classes): each equals its scikit-learn reference where that is defined (tests
    hold them so), and a class the images lack is treated by one rule (`metric_replicates`)."""
    from sklearn.metrics import log_loss

    from ..data.competition import Metric

    metric = Metric(metric)
    y_true = np.asarray(y_true)
    if metric.ranks and probs is None:
        raise ValueError(f"{metric} is scored on probabilities")
    if metric == Metric.LOG_LOSS:
        return float(log_loss(y_true, probs, labels=list(range(k)), sample_weight=weights))
    if decided is None and probs is None:
        raise ValueError(f"{metric} needs decisions or probabilities")
    if metric in (Metric.MACRO_F1, Metric.ACCURACY):
        decided = decide(probs) if decided is None else np.asarray(decided)
        if metric == Metric.MACRO_F1:
            return macro_f1(y_true, decided, k, weights)
        return float(np.average(decided == y_true, weights=weights)) if len(y_true) else 0.0
    w = np.ones((1, len(y_true))) if weights is None else np.asarray(weights, dtype=np.float64)[None, :]
    return float(metric_replicates(metric, y_true, k, w, probs, decided)[0])


def nan_mean(values: Any) -> float:
    """The mean of the finite `values` (NaN when none is): folds or findings an AUC cannot
    score (no positive, or no negative) are left out, as one class is in `metric_replicates`."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def nan_mean_rows(values: np.ndarray) -> np.ndarray:
    """`nan_mean` of each row of `values` ``(r, c)``, ``(r,)``: a replicate's classes or tasks
    it can score, the others left out (NaN where none is)."""
    counted = np.isfinite(values).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counted > 0, np.nansum(values, axis=1) / np.maximum(counted, 1), np.nan)


SPARSE_ROWS = 16  # rows of weights from which `auc_replicates` sums by one sparse product


def auc_replicates(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The area under the ROC curve of `scores` ``(n,)`` for the images `positive` ``(n,)``
    (bool) under each row of image `weights` ``(r, n)`` (a bootstrap replicate's draw counts),
    ``(r,)``: the weighted share of (positive, negative) pairs the scores order right, a tie
    counting half, as scikit-learn's `roc_auc_score` with ``sample_weight`` (the trapezoid of
    the weighted ROC curve; a test holds them equal). NaN where a row weighs no positive or no
    negative. Rank-based, every row in one pass: the images' weights summed per distinct score
    (one sparse product for the positives, one for the negatives), the negative weight below
    each score a running sum."""
    from scipy.sparse import csr_matrix

    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    runs, run = np.unique(scores, return_inverse=True)  # each image's distinct score, ascending
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    images = np.arange(len(scores))
    if len(w) >= SPARSE_ROWS:  # one product for all rows
        by_run = lambda chosen: csr_matrix((chosen.astype(np.float64), (run, images)), shape=(len(runs), len(scores))) @ w.T  # noqa: E731  (runs, r): a run's rows contiguous
    else:  # a few rows (a score, a fold): a bincount each, without the sparse product's set-up
        by_run = lambda chosen: np.stack([np.bincount(run[chosen], row[chosen], minlength=len(runs)) for row in w], axis=1)  # noqa: E731
    pos, neg = by_run(positive), by_run(~positive)
    total = pos.sum(axis=0) * neg.sum(axis=0)
    tied = np.einsum("ij,ij->j", pos, neg)  # pairs of one score: half each
    np.cumsum(neg, axis=0, out=neg)  # in place: the negative weight at or below each score
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (np.einsum("ij,ij->j", pos, neg) - 0.5 * tied) / total, np.nan)


def average_precision_at(y_true: np.ndarray, probs: np.ndarray, top: int) -> np.ndarray:
    """Each image's average precision at `top` ``(n,)`` with one true class: 1/place of its class
    among the `top` likeliest of `probs` ``(n, k)`` (`stable.top_classes`, the answer a
    submission writes), 0 when it is not among them."""
    hits = top_classes(probs, top) == np.asarray(y_true, dtype=np.int64)[:, None]
    return hits @ (1.0 / np.arange(1, hits.shape[1] + 1))


def metric_replicates(metric: Metric | str, y_true: np.ndarray, k: int, weights: np.ndarray, probs: np.ndarray | None = None, decided: np.ndarray | None = None) -> np.ndarray:
    """`metric_value` under each row of image `weights` ``(r, n)`` at once ``(r,)``: a bootstrap's
    replicates (draw counts per image) in one pass, sums over images as matrix products with
    the weights. Equal to `metric_value` with each row as its ``weights`` (a test holds it so).
    A row that cannot score a metric gives NaN: AUC over several classes is the mean of the
    classes' one-vs-rest AUCs the row can score (a class with no positive or no negative is left
    out); balanced accuracy, the mean recall of the classes the row holds (scikit-learn's
    `balanced_accuracy_score`); quadratic kappa is NaN where every image of the row is one class
    in truth and in decision (scikit-learn's ``replace_undefined_by`` default); an empty row
    gives NaN."""
    from ..data.competition import Metric

    metric = Metric(metric)
    y_true = np.asarray(y_true, dtype=np.int64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == Metric.AUC:
            if k == 2:
                return auc_replicates(y_true == 1, probs[:, 1], w)
            return nan_mean_rows(np.stack([auc_replicates(y_true == c, probs[:, c], w) for c in range(k)], axis=1))
        if metric == Metric.LOG_LOSS:
            p = np.clip(np.asarray(probs, dtype=np.float64), np.finfo(np.float64).eps, None)
            p = p / p.sum(axis=1, keepdims=True)
            return (w @ -np.log(p[np.arange(len(y_true)), y_true])) / total
        if metric.top is not None:
            return (w @ average_precision_at(y_true, probs, metric.top)) / total
        decided = decide(probs) if decided is None else np.asarray(decided, dtype=np.int64)
        right = (decided == y_true).astype(np.float64)
        if metric == Metric.ACCURACY:
            return (w @ right) / total
        if metric == Metric.QUADRATIC_KAPPA:
            # 1 - observed / expected disagreement, weights (i - j)^2: the expected one, of truth
            # and decision drawn apart from their margins, is E[t^2] + E[d^2] - 2 E[t] E[d]
            t, d = y_true.astype(np.float64), decided.astype(np.float64)
            mean = lambda v: (w @ v) / total  # noqa: E731
            expected = mean(t * t) + mean(d * d) - 2.0 * mean(t) * mean(d)
            return np.where(expected > 0, 1.0 - mean((t - d) ** 2) / expected, np.nan)
        from scipy.sparse import csr_matrix

        rows = np.arange(len(y_true))
        onehot = lambda cls, value: csr_matrix((value, (cls, rows)), shape=(k, len(y_true)))  # noqa: E731  (k, n)
        tp = (onehot(y_true, right) @ w.T).T  # (r, k): a sparse product, fast for hundreds of classes
        support = (onehot(y_true, np.ones(len(rows))) @ w.T).T
        if metric == Metric.BALANCED_ACCURACY:
            held = support > 0
            recall = np.divide(tp, support, out=np.zeros_like(tp), where=held)
            return np.where(held.any(axis=1), recall.sum(axis=1) / np.maximum(held.sum(axis=1), 1), np.nan)
        denominator = support + (onehot(decided, np.ones(len(rows))) @ w.T).T
        f1 = np.divide(2.0 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
        return f1.mean(axis=1)


CANDIDATE_CELLS = 2**23  # probabilities `candidate_scores` stacks for one pass of AUCs (64 MB)


def candidates_auc(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The area under the ROC curve of each row of `scores` ``(c, n)`` for the images
    `positive` ``(n,)``, every image weighing one, ``(c,)``: `auc_replicates` with a unit row
    for each candidate, to the last bit (the same counts of pairs, ties half), one sort for all
    rows; NaN without a positive or a negative."""
    positive = np.asarray(positive, dtype=bool)
    c, n = scores.shape
    order = np.argsort(scores, axis=1, kind="stable")
    ordered = np.take_along_axis(scores, order, axis=1)
    starts = np.ones((c, n), dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]  # a run of one score, within one row
    run = np.cumsum(starts.ravel()) - 1
    pos = np.bincount(run, positive[order].ravel().astype(np.float64))
    neg = np.bincount(run) - pos
    negatives = float(n - positive.sum())
    row_of_run = np.flatnonzero(starts.ravel()) // n
    below = np.cumsum(neg) - neg - row_of_run * negatives  # a row's negatives below the run
    total = (n - negatives) * negatives
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(row_of_run, pos * (below + 0.5 * neg), minlength=c) / total if total > 0 else np.full(c, np.nan)


def candidate_scores(metric: Metric | str, y_true: np.ndarray, k: int, candidates: Iterable[np.ndarray]) -> np.ndarray:
    """`metric_value` of each of the `candidates` ``(n, k)`` (probabilities of the same labelled
    images `y_true`), ``(c,)``: ensemble selection asks it for every source of every round. An
    AUC scores all candidates in one pass (`candidates_auc`), the others one by one."""
    from ..data.competition import Metric

    metric = Metric(metric)
    y_true = np.asarray(y_true, dtype=np.int64)
    if metric == Metric.AUC:  # a few candidates a pass: at most `CANDIDATE_CELLS` probabilities held
        scores, candidates = [], iter(candidates)
        while chunk := list(islice(candidates, max(1, CANDIDATE_CELLS // max(len(y_true) * k, 1)))):
            stacked = np.stack(chunk)
            if k == 2:
                scores.append(candidates_auc(y_true == 1, stacked[:, :, 1]))
            else:
                scores.append(nan_mean_rows(np.stack([candidates_auc(y_true == c, stacked[:, :, c]) for c in range(k)], axis=1)))
        return np.concatenate(scores) if scores else np.zeros(0)
    if metric == Metric.MACRO_F1:
        return np.array([macro_f1(y_true, decide(summed), k) for summed in candidates])
    ones = np.ones((1, len(y_true)))
    return np.array([metric_replicates(metric, y_true, k, ones, summed)[0] for summed in candidates])


def task_objective(metric: Metric | str, k: int) -> Callable[[np.ndarray, Iterable[np.ndarray]], np.ndarray]:
    """What a learned step maximises for one task of `k` classes under the competition's
    `metric`: ``objective(y (n,), candidates)``, for each candidate ``(n, k)`` (an unnormalised
    sum of probabilities: ensemble selection's running total plus one source) a score ``(c,)``,
    higher better (`candidate_scores`): the metric of its argmax (macro F1, accuracy, quadratic
    kappa, balanced accuracy), of its order (AUC, map@K: a sum ranks as its mean does), minus
    the log-loss of its normalised rows. Where the metric is undefined (an AUC without both
    classes, a kappa of one class), the score of a guess (0.5, 0)."""
    from ..data.competition import Metric

    metric = Metric(metric)
    sign, undefined = (1.0 if metric.higher_is_better else -1.0), (0.5 if metric == Metric.AUC else 0.0)
    return lambda y, candidates: sign * np.nan_to_num(candidate_scores(metric, y, k, candidates), nan=undefined)


Part = tuple[np.ndarray, int, np.ndarray, "np.ndarray | None"]  # one scored answer: labels (n,), classes k, probabilities (n, k), decisions (n,) or None (their argmax)


def answer_parts(competition: Competition, labels: np.ndarray, probs: Mapping[str, np.ndarray], joint: np.ndarray | None = None, decided: np.ndarray | None = None) -> list[Part]:
    """What a declared competition scores of a prediction of labelled images: its answer (the
    one task's classes, or the product of the tasks' with ``joint: product``), or each task of a
    multi-label answer, whose mean is the score. `labels` ``(n,)`` answer classes; `probs`
    ``{task: (n, k)}``, the `joint` when there is one, `decided` ``(n,)`` answer classes."""
    space = competition.space
    if len(space.tasks) == 1 or competition.joint:
        return [(np.asarray(labels), space.n_joint, competition.answer_probabilities(probs, joint), decided)]
    truth = space.decode(labels)
    return [(truth[t], space.n_classes[t], probs[t], None) for t in space.tasks]


def competition_score(competition: Competition, labels: np.ndarray, probs: Mapping[str, np.ndarray], joint: np.ndarray | None = None, decided: np.ndarray | None = None, weights: np.ndarray | None = None) -> float:
    """A declared competition's metric (`metric_value`) of a prediction of labelled images
    (`answer_parts`: the mean over the tasks of a multi-label answer, those it can score), with
    image `weights` ``(n,)`` or None; `decided` default: the probabilities' argmax."""
    return nan_mean([metric_value(competition.metric, y, k, p, d, weights) for y, k, p, d in answer_parts(competition, labels, probs, joint, decided)])


def competition_replicates(competition: Competition, labels: np.ndarray, probs: Mapping[str, np.ndarray], joint: np.ndarray | None, decided: np.ndarray | None, weights: np.ndarray) -> np.ndarray:
    """`competition_score` under each row of image `weights` ``(r, n)`` at once ``(r,)``
    (`metric_replicates`: a bootstrap's replicates in one pass)."""
    return nan_mean_rows(np.stack([metric_replicates(competition.metric, y, k, weights, p, d) for y, k, p, d in answer_parts(competition, labels, probs, joint, decided)], axis=1))


Prediction = tuple[Mapping[str, np.ndarray], "np.ndarray | None", "np.ndarray | None"]  # as competition_score takes it: probs {task: (n, k)}, joint, decided


def competition_rows(competition: Competition, labels: np.ndarray, predictions: Sequence[Prediction]) -> Callable[[np.ndarray | None], np.ndarray]:
    """`evidence.group_bootstrap`'s ``score_rows`` for several `predictions` of the labelled
    images: ``(r, n)`` image weights -> each prediction's `competition_replicates` ``(r, rows)``;
    None -> their `competition_score` ``(rows,)``."""

    def score_rows(weights: np.ndarray | None) -> np.ndarray:
        if weights is None:
            return np.array([competition_score(competition, labels, p, j, d) for p, j, d in predictions])
        return np.stack([competition_replicates(competition, labels, p, j, d, weights) for p, j, d in predictions], axis=1)

    return score_rows


def composed_score(competition: Competition, labels: np.ndarray, composed: Any, weights: np.ndarray | None = None) -> float:
    """`competition_score` of a composition (`engine.Composed`: its probabilities, joint and,
    where the submission is a class, its decisions)."""
    decided = composed.labels if competition.submission is None or competition.submission.answer is not None else None
    return competition_score(competition, labels, composed.probs, composed.joint, decided, weights)


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
