"""The numbers behind the HTML report's plots: confusion, per-class F1, agreement, error
correlation, calibration and error rate by age in years. numpy only; every function takes
integer class arrays ``(n,)`` or probabilities ``(n, k)`` and returns plain arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import EnsError


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``(k, k)``: row = true class, column = predicted class (scikit-learn's layout)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_f1(matrix: np.ndarray) -> np.ndarray:
    """F1 of each class ``(k,)`` from a confusion matrix ``(k, k)`` (0 where a class is absent from both sides)."""
    tp = np.diag(matrix).astype(np.float64)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)
    return np.divide(2.0 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)


def agreement(predictions: Sequence[np.ndarray]) -> np.ndarray:
    """Share of images on which each pair of sources predicts the same class ``(s, s)``."""
    stack = np.stack([np.asarray(p) for p in predictions])  # (s, n)
    if stack.shape[1] == 0:
        raise EnsError("no images to compare the sources on")
    return (stack[:, None, :] == stack[None, :, :]).mean(axis=2)


def error_correlation(errors: Sequence[np.ndarray]) -> np.ndarray:
    """Pearson correlation of the sources' error indicators ``(s, s)`` (the phi coefficient).

    High: the two err on the same images, and averaging them gains little. A source that is
    always right (or always wrong) has no variance; its correlations are NaN off the diagonal.
    """
    stack = np.stack([np.asarray(e, dtype=np.float64) for e in errors])
    centred = stack - stack.mean(axis=1, keepdims=True)
    norms = np.sqrt((centred**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (centred @ centred.T) / np.outer(norms, norms)
    np.fill_diagonal(corr, 1.0)
    return corr


def age_years(image_ids: np.ndarray) -> np.ndarray:
    """Train ImageIDs (``000001_female_Asian_45/mask1.jpg``) -> the age in years ``(n,)``; -1 where the folder carries none."""
    out = np.full(len(image_ids), -1, dtype=np.int64)
    for i, image_id in enumerate(image_ids):
        tail = str(image_id).split("/", 1)[0].rsplit("_", 1)[-1]
        if tail.isdigit():
            out[i] = int(tail)
    return out


def error_by_age(years: np.ndarray, wrong: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Error rate per age in years: the ages present ``(a,)``, their error rates ``(a,)`` and image counts ``(a,)``."""
    years, wrong = np.asarray(years), np.asarray(wrong, dtype=np.float64)
    known = years >= 0
    ages, inverse, counts = np.unique(years[known], return_inverse=True, return_counts=True)
    return ages, np.bincount(inverse, weights=wrong[known], minlength=len(ages)) / np.maximum(counts, 1), counts
