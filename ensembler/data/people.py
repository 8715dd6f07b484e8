"""People behind the train images (the engine's folds keep each on one side: `pipeline.engine.Folds`).

A train ImageID is ``<profile>/<file>``, the profile a folder such as
``000123-1_female_Asian_45``: the person is ``000123`` (suffixes and folder details dropped).
Every score, fit and interval of `ens` groups images by person: a person's seven photos are one
face, never split between fitting and scoring, and resampled together.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import EnsError
from .labels import CLASS_NAMES, MASK_SPACE, N_CLASSES, Task, LabelSpace, decode

MIN_PEOPLE = 5  # a class held by fewer labelled people is too thin for a learned step to decide


def profile_of(image_ids: np.ndarray) -> np.ndarray:
    """Train ImageIDs (``profile/file``) -> their person folder ``(n,)``."""
    return np.array([i.split("/", 1)[0] for i in image_ids], dtype=object)


def person_of(image_ids: np.ndarray) -> np.ndarray:
    """Train ImageIDs -> the person id (``000123-1_female_Asian_45/mask1.jpg`` -> ``000123``)."""
    return np.array([i.split("/", 1)[0].split("_", 1)[0].split("-", 1)[0] for i in image_ids], dtype=object)


def person_codes(image_ids: np.ndarray) -> np.ndarray:
    """Train ImageIDs ``(n,)`` -> person index ``(n,)`` in ``0..P-1`` (`person_of`)."""
    return np.unique(person_of(np.asarray(image_ids, dtype=object)), return_inverse=True)[1]


def thin_classes(labels: np.ndarray, image_ids: np.ndarray, space: LabelSpace = MASK_SPACE, groups: np.ndarray | None = None) -> dict[Task | str, dict[int, int]]:
    """Per task, the classes held by fewer than `MIN_PEOPLE` of the labelled people (absent
    ones too), with their number of people: ``{task: {class: people}}`` (tasks with none left out).
    `space`: the competition's label space; `groups` ``(n,)``: a declared competition's group of
    each image (default: the persons of the mask competition's paths)."""
    persons, truth = (person_codes(image_ids) if groups is None else np.asarray(groups)), space.decode(labels)
    out = {}
    for task in space.tasks:
        k = space.n_classes[task]
        people = np.array([len(np.unique(persons[truth[task] == c])) for c in range(k)])
        thin = {c: int(people[c]) for c in range(k) if people[c] < MIN_PEOPLE}
        if thin:
            out[task] = thin
    return out


def thin_pairs(labels: np.ndarray, image_ids: np.ndarray) -> list[str]:
    """The gender x age classes held by fewer than `MIN_PEOPLE` people: a joint stack's biases
    would decide them from too few."""
    persons, truth = person_codes(image_ids), decode(labels)
    out = []
    for g in range(N_CLASSES[Task.GENDER]):
        for a in range(N_CLASSES[Task.AGE]):
            held = (truth[Task.GENDER] == g) & (truth[Task.AGE] == a)
            if len(np.unique(persons[held])) < MIN_PEOPLE:
                out.append(f"{CLASS_NAMES[Task.GENDER][g]} {CLASS_NAMES[Task.AGE][a]}")
    return out


def thin_text(task: Task | str, classes: dict[int, int], space: LabelSpace = MASK_SPACE, unit: tuple[str, str] = ("person", "people")) -> str:
    """``age 60+ (1 person), 30-59 (4 people)``: a task's thin classes (`thin_classes`) in words;
    `unit`: what a group is, singular and plural (a declared competition's: group, groups)."""
    words = [f"{space.classes[task][c]} ({n} {unit[0] if n == 1 else unit[1]})" for c, n in classes.items()]
    return f"{task} " + ", ".join(words[:5]) + (f" and {len(words) - 5} more classes" if len(words) > 5 else "")


def grouped_folds(strata: np.ndarray, groups: np.ndarray, n_folds: int, seed: int, unit: str) -> np.ndarray:
    """Each row's fold ``(n,)`` in 0..n_folds-1: rows of a group in one fold, the `strata`
    balanced across folds as far as the groups allow (scikit-learn's StratifiedGroupKFold,
    shuffled by `seed`). unit: what a group is, for the errors (``people``, ``groups``)."""
    from sklearn.model_selection import StratifiedGroupKFold

    if n_folds < 2:
        raise EnsError(f"--folds must be at least 2, got {n_folds}")
    if len(set(groups)) < n_folds:
        raise EnsError(f"cannot make {n_folds} folds from {len(set(groups))} {unit}")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(strata), -1, dtype=np.int64)
    with warnings.catch_warnings():
        # A stratum rarer than n_folds (few old men in a small set) cannot reach every fold;
        # the split is still grouped and as balanced as the data allows.
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        try:
            for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(strata)), strata, groups)):
                fold[held_out] = k
        except ValueError as exc:  # every stratum smaller than n_folds
            raise EnsError(f"cannot make {n_folds} folds from {len(set(groups))} {unit}: {exc}") from None
    return fold
