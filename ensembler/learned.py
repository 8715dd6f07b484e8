"""Learned compositions, scored honestly: stacking with person-grouped cross-validation.

A composition fitted on the images it is scored on lies. Here every learned composition is
scored out of fold: the labelled images are split by person (all 7 images of a person on one
side, scikit-learn's GroupKFold), the meta-model is fitted on the other people and predicts
these; the score is that of the out-of-fold predictions, with its spread across folds. The
model applied to eval is then fitted on all the labelled images.

Stacking (`stack`): per task, a multinomial logistic regression on the log-probabilities of
the task's sources (optionally every task's, since age may depend on mask state), balanced
class weights on request (for macro F1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import EnsError
from .labels import N_CLASSES, N_JOINT, TASKS, Task, decode, encode
from .metrics import macro_f1
from .recipe import Recipe
from .store import PredictionSet
from .voting import Composed, check_coverage

EPS = 1e-6
CV_FOLDS = 5


def person_of(image_ids: np.ndarray) -> np.ndarray:
    """Train ImageIDs -> the person id (``000123-1_female_Asian_45/mask1.jpg`` -> ``000123``)."""
    return np.array([i.split("/", 1)[0].split("_", 1)[0].split("-", 1)[0] for i in image_ids], dtype=object)


def person_folds(image_ids: np.ndarray, n_folds: int = CV_FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, score) index pairs over `image_ids` ``(n,)``: every person's images on one side."""
    from sklearn.model_selection import GroupKFold

    groups = person_of(image_ids)
    n_folds = min(n_folds, len(set(groups)))
    if n_folds < 2:
        raise EnsError("stacking needs labelled images of at least two people to cross-validate")
    return list(GroupKFold(n_splits=n_folds).split(np.zeros(len(groups)), groups=groups))


@dataclass(frozen=True)
class CVScore:
    """Out-of-fold 18-class macro F1 over all images, and its mean and spread across the folds."""

    f1_18: float
    fold_mean: float
    fold_std: float
    folds: int


def _features(sets: Mapping[str, PredictionSet], recipe: Recipe, task: Task, cross_tasks: bool) -> np.ndarray:
    columns = []
    for term in recipe.tasks[task]:
        pset = sets[term.source]
        tasks = pset.tasks if cross_tasks else (task,)
        columns += [np.log(np.clip(pset.probs[t], EPS, None)) for t in tasks]
    return np.concatenate(columns, axis=1)


def _model(class_weight: str | None):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=2000, class_weight=class_weight)


def _fit_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_new: np.ndarray, k: int, class_weight: str | None) -> np.ndarray:
    """Probabilities ``(m, k)`` for `x_new`; a class absent from `y_fit` gets probability 0."""
    present = np.unique(y_fit)
    out = np.zeros((len(x_new), k))
    if len(present) == 1:
        out[:, present[0]] = 1.0
        return out
    model = _model(class_weight).fit(x_fit, y_fit)
    out[:, model.classes_] = model.predict_proba(x_new)
    return out


def stack(
    recipe: Recipe,
    labelled: Mapping[str, PredictionSet],
    labels: np.ndarray,
    targets: Mapping[str, PredictionSet],
    class_weight: str | None = None,
    cross_tasks: bool = False,
    score_ids: np.ndarray | None = None,
) -> tuple[Composed, Composed, CVScore]:
    """Fit per-task stackers on `labelled` (aligned sets, joint labels ``(n,)``) and apply them to
    `targets` (aligned sets, e.g. eval).

    Returns the composition of `targets`, the out-of-fold composition of the labelled images
    restricted to `score_ids` (default: all), and its cross-validated score.
    """
    check_coverage(recipe, labelled)
    ids = next(iter(labelled.values())).image_ids
    keep = np.ones(len(ids), bool) if score_ids is None else pd.Index(ids).isin(score_ids)
    splits = person_folds(ids[keep])
    truth = decode(labels)
    oof, fitted = {}, {}
    for task in TASKS:
        x = _features(labelled, recipe, task, cross_tasks)
        x_target = _features(targets, recipe, task, cross_tasks)
        y = truth[task]
        fitted[task] = _fit_predict(x, y, x_target, N_CLASSES[task], class_weight)
        xs, ys = x[keep], y[keep]
        oof[task] = np.zeros((len(xs), N_CLASSES[task]))
        for train_idx, test_idx in splits:
            oof[task][test_idx] = _fit_predict(xs[train_idx], ys[train_idx], xs[test_idx], N_CLASSES[task], class_weight)

    def composed(image_ids: np.ndarray, probs: dict[Task, np.ndarray]) -> Composed:
        return Composed(image_ids, encode(*(probs[t].argmax(axis=1) for t in TASKS)), probs, None, "stack")

    scored = composed(ids[keep], oof)
    y_keep = labels[keep]
    per_fold = [macro_f1(y_keep[test], scored.labels[test], N_JOINT) for _, test in splits]
    cv = CVScore(macro_f1(y_keep, scored.labels, N_JOINT), float(np.mean(per_fold)), float(np.std(per_fold)), len(splits))
    target_ids = next(iter(targets.values())).image_ids
    return composed(target_ids, fitted), scored, cv
