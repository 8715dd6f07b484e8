"""Learned compositions, scored honestly: stacking and ensemble selection, person-grouped CV.

A composition fitted on the images it is scored on lies. Here every learned composition is
scored out of fold: the labelled images are split by person (all 7 images of a person on one
side, scikit-learn's GroupKFold), the meta-model is fitted on the other people and predicts
these; the score is that of the out-of-fold predictions, with its spread across folds. The
model applied to eval is then fitted on all the labelled images.

Stacking (`stack`): per task, a multinomial logistic regression on the log-probabilities of
the task's sources (optionally every task's, since age may depend on mask state), balanced
class weights on request (for macro F1). Ensemble selection (`select`): per task, weights for
the sources by greedy forward selection on macro F1, bagged over bootstrap resamples (`select_weights`).
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
from .voting import Composed, Method, check_coverage

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


def _parts(sets: Mapping[str, PredictionSet], recipe: Recipe, task: Task, cross_tasks: bool) -> list[np.ndarray]:
    """The task's inputs: each source's probabilities ``(n, k)`` for it (and for every task it
    covers with `cross_tasks`), in recipe order."""
    parts = []
    for term in recipe.tasks[task]:
        pset = sets[term.source]
        parts += [pset.probs[t] for t in (pset.tasks if cross_tasks else (task,))]
    return parts


def _stack_fit_predict(fit: list[np.ndarray], y: np.ndarray, new: list[np.ndarray], k: int, class_weight: str | None) -> np.ndarray:
    """Logistic regression on log-probabilities; a class absent from `y` gets probability 0."""
    from sklearn.linear_model import LogisticRegression

    def features(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.log(np.clip(p, EPS, None)) for p in parts], axis=1)

    present = np.unique(y)
    out = np.zeros((len(new[0]), k))
    if len(present) == 1:
        out[:, present[0]] = 1.0
        return out
    model = LogisticRegression(C=1.0, max_iter=2000, class_weight=class_weight).fit(features(fit), y)
    out[:, model.classes_] = model.predict_proba(features(new))
    return out


def select_weights(probs: list[np.ndarray], y: np.ndarray, k: int, rounds: int = 20, bags: int = 10, seed: int = 0) -> np.ndarray:
    """Ensemble selection (Caruana et al. 2004): greedy forward selection, with replacement, of
    the source whose addition most raises the macro F1 of the averaged probabilities, `rounds`
    times. Against over-fitting the hill-climb, it is repeated on `bags` bootstrap resamples of
    the images; the weights ``(s,)`` are the selection counts, normalised per bag and averaged.
    (A team's library is a handful of sources, too few to bag over sources as the paper does.)
    """
    rng = np.random.default_rng(seed)
    total = np.zeros(len(probs))
    for _ in range(bags):
        rows = rng.integers(0, len(y), len(y))
        sample = [p[rows] for p in probs]
        counts = np.zeros(len(probs))
        current = np.zeros_like(sample[0], dtype=np.float64)
        for _ in range(rounds):
            scores = [macro_f1(y[rows], (current + p).argmax(axis=1), k) for p in sample]
            best = int(np.argmax(scores))  # ties: the first source in recipe order
            counts[best] += 1
            current += sample[best]
        total += counts / counts.sum()
    return total / bags


def _fit_predict(method: Method, fit: list[np.ndarray], y: np.ndarray, new: list[np.ndarray], k: int, class_weight: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """One task: the learned probabilities ``(m, k)`` for `new`, and the selection weights (select)."""
    if method is Method.STACK:
        return _stack_fit_predict(fit, y, new, k, class_weight), None
    weights = select_weights(fit, y, k)
    return np.tensordot(weights, np.stack(new), axes=1), weights


def learn(
    recipe: Recipe,
    labelled: Mapping[str, PredictionSet],
    labels: np.ndarray,
    targets: Mapping[str, PredictionSet],
    method: Method = Method.STACK,
    class_weight: str | None = None,
    cross_tasks: bool = False,
    score_ids: np.ndarray | None = None,
) -> tuple[Composed, Composed, CVScore, dict[str, dict[str, float]] | None]:
    """Fit `method` (stack or select) per task on `labelled` (aligned sets, joint labels ``(n,)``)
    and apply it to `targets` (aligned sets, e.g. eval).

    Returns the composition of `targets`; the out-of-fold composition of the labelled images
    restricted to `score_ids` (default: all) and its cross-validated score; and, for select, the
    weights chosen per task on all the labelled images ``{task: {source: weight}}``.
    """
    method = Method(method)
    check_coverage(recipe, labelled)
    ids = next(iter(labelled.values())).image_ids
    keep = np.ones(len(ids), bool) if score_ids is None else pd.Index(ids).isin(score_ids)
    splits = person_folds(ids[keep])
    truth = decode(labels)
    oof, fitted, chosen = {}, {}, {}
    for task in TASKS:
        k, y = N_CLASSES[task], truth[task]
        use_cross = cross_tasks and method is Method.STACK
        parts, target_parts = _parts(labelled, recipe, task, use_cross), _parts(targets, recipe, task, use_cross)
        fitted[task], weights = _fit_predict(method, parts, y, target_parts, k, class_weight)
        if weights is not None:
            chosen[task.value] = {t.source: round(float(w), 4) for t, w in zip(recipe.tasks[task], weights)}
        kept = [p[keep] for p in parts]
        oof[task] = np.zeros((int(keep.sum()), k))
        for fit_idx, held_idx in splits:
            oof[task][held_idx], _ = _fit_predict(method, [p[fit_idx] for p in kept], y[keep][fit_idx], [p[held_idx] for p in kept], k, class_weight)

    def composed(image_ids: np.ndarray, probs: dict[Task, np.ndarray]) -> Composed:
        return Composed(image_ids, encode(*(probs[t].argmax(axis=1) for t in TASKS)), probs, None, method.value)

    scored = composed(ids[keep], oof)
    y_keep = labels[keep]
    per_fold = [macro_f1(y_keep[held], scored.labels[held], N_JOINT) for _, held in splits]
    cv = CVScore(macro_f1(y_keep, scored.labels, N_JOINT), float(np.mean(per_fold)), float(np.std(per_fold)), len(splits))
    target_ids = next(iter(targets.values())).image_ids
    return composed(target_ids, fitted), scored, cv, chosen or None
