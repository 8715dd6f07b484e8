"""Prior correction for a test set whose class mix differs from train's.

`em_priors` estimates the test priors from unlabelled posteriors by EM (Saerens, Latinne and
Decaestecker 2002, "Adjusting the outputs of a classifier to new a priori probabilities"):
repeat ``p'(c|x) ∝ p(c|x) · π'(c) / π(c)`` and ``π'(c) = mean_x p'(c|x)`` until the priors settle.
`adjust` re-weights posteriors from the train priors π to new priors π' (the same formula).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import EnsError
from .labels import N_CLASSES, TASKS, Task, decode

FLOOR = 1e-6  # no prior is allowed to reach 0: a class could never come back


def adjust(probs: np.ndarray, train_priors: np.ndarray, new_priors: np.ndarray) -> np.ndarray:
    """Posteriors ``(n, k)`` under `train_priors` ``(k,)`` -> posteriors under `new_priors` ``(k,)``."""
    weights = np.maximum(new_priors, FLOOR) / np.maximum(train_priors, FLOOR)
    out = np.asarray(probs, dtype=np.float64) * weights
    return out / out.sum(axis=1, keepdims=True)


def em_priors(probs: np.ndarray, train_priors: np.ndarray, max_iter: int = 1000, tol: float = 1e-8) -> tuple[np.ndarray, int]:
    """EM estimate of the priors of the images behind `probs` ``(n, k)``.

    Returns the priors ``(k,)`` and the number of iterations used.
    """
    train_priors = np.asarray(train_priors, dtype=np.float64)
    priors = train_priors.copy()
    for iteration in range(1, max_iter + 1):
        new = adjust(probs, train_priors, priors).mean(axis=0)
        new = np.maximum(new, FLOOR) / np.maximum(new, FLOOR).sum()
        if np.abs(new - priors).max() < tol:
            return new, iteration
        priors = new
    return priors, max_iter


def train_priors(labels: np.ndarray) -> dict[Task, np.ndarray]:
    """Per-task class frequencies ``{task: (k,)}`` of joint labels ``(n,)``."""
    if not len(labels):
        raise EnsError("no labelled images to take the train priors from")
    parts = decode(labels)
    return {t: np.bincount(parts[t], minlength=N_CLASSES[t]) / len(labels) for t in TASKS}


def correct(
    probs: Mapping[Task, np.ndarray], priors_train: Mapping[Task, np.ndarray], joint: np.ndarray | None = None
) -> tuple[dict[Task, np.ndarray], np.ndarray | None, dict[str, dict[str, list[float]]]]:
    """EM-correct each task's posteriors ``{task: (n, k)}`` (and the joint ``(n, 18)``, re-weighted
    by the product of the tasks' ratios). Returns the new posteriors, the new joint, and the
    train and estimated priors per task for the manifest."""
    out, record, ratios = {}, {}, {}
    for task, p in probs.items():
        estimated, _ = em_priors(p, priors_train[task])
        out[task] = adjust(p, priors_train[task], estimated)
        ratios[task] = np.maximum(estimated, FLOOR) / np.maximum(priors_train[task], FLOOR)
        record[task.value] = {"train": priors_train[task].round(4).tolist(), "estimated": estimated.round(4).tolist()}
    new_joint = None
    if joint is not None:
        m, g, a = (ratios.get(t, np.ones(N_CLASSES[t])) for t in TASKS)
        weights = np.einsum("i,j,k->ijk", m, g, a).reshape(-1)
        new_joint = joint * weights
        new_joint /= new_joint.sum(axis=1, keepdims=True)
    return out, new_joint, record

