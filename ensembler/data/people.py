"""People behind the train images, and the folds that keep each person on one side.

A train ImageID is ``<profile>/<file>``, the profile a folder such as
``000123-1_female_Asian_45``: the person is ``000123`` (suffixes and folder details dropped).
Every score, fit and interval of `ens` groups images by person: a person's seven photos are one
face, never split between fitting and scoring, and resampled together.
"""

from __future__ import annotations

import numpy as np

from ..errors import EnsError

CV_FOLDS = 5


def profile_of(image_ids: np.ndarray) -> np.ndarray:
    """Train ImageIDs (``profile/file``) -> their person folder ``(n,)``."""
    return np.array([i.split("/", 1)[0] for i in image_ids], dtype=object)


def person_of(image_ids: np.ndarray) -> np.ndarray:
    """Train ImageIDs -> the person id (``000123-1_female_Asian_45/mask1.jpg`` -> ``000123``)."""
    return np.array([i.split("/", 1)[0].split("_", 1)[0].split("-", 1)[0] for i in image_ids], dtype=object)


def person_codes(image_ids: np.ndarray) -> np.ndarray:
    """Train ImageIDs ``(n,)`` -> person index ``(n,)`` in ``0..P-1`` (`person_of`)."""
    return np.unique(person_of(np.asarray(image_ids, dtype=object)), return_inverse=True)[1]


def person_folds(image_ids: np.ndarray, n_folds: int = CV_FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, score) index pairs over `image_ids` ``(n,)``: every person's images on one side
    (scikit-learn's GroupKFold)."""
    from sklearn.model_selection import GroupKFold

    groups = person_of(image_ids)
    n_folds = min(n_folds, len(set(groups)))
    if n_folds < 2:
        raise EnsError("cross-validation needs labelled images of at least two people")
    return list(GroupKFold(n_splits=n_folds).split(np.zeros(len(groups)), groups=groups))
