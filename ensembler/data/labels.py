"""The competition's class scheme: three tasks and the 18 joint classes.

``class = 6*mask + 3*gender + age``: mask (0 wear, 1 incorrect, 2 not wear), gender (0 male,
1 female), age (0 under 30, 1 30 to 59, 2 60 and over). The joint class axis therefore
reshapes to ``(mask, gender, age) = (3, 2, 3)`` in C order, which is what `marginals` and
`joint_from_tasks` rely on.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

import numpy as np

from ..errors import EnsError


class Task(StrEnum):
    """One of the three sub-tasks; the value is the name used in recipes and file columns."""

    MASK = "mask"
    GENDER = "gender"
    AGE = "age"


TASKS: tuple[Task, ...] = (Task.MASK, Task.GENDER, Task.AGE)
N_CLASSES: dict[Task, int] = {Task.MASK: 3, Task.GENDER: 2, Task.AGE: 3}
N_JOINT = 18
JOINT_SHAPE = (3, 2, 3)
CLASS_NAMES: dict[Task, tuple[str, ...]] = {
    Task.MASK: ("wear", "incorrect", "not wear"),
    Task.GENDER: ("male", "female"),
    Task.AGE: ("<30", "30-59", "60+"),
}
# Image file stem -> mask class (the train folders hold mask1..mask5, incorrect_mask, normal).
MASK_STEMS: dict[str, int] = {
    **{f"mask{i}": 0 for i in range(1, 6)},
    "incorrect_mask": 1,
    "normal": 2,
}
GENDERS: dict[str, int] = {"male": 0, "female": 1}


def parse_task(name: str) -> Task:
    """``"age"`` -> `Task.AGE`; an unknown name is an `EnsError` that suggests the close ones."""
    from ..errors import unknown

    try:
        return Task(name.strip().lower())
    except ValueError:
        raise unknown("task", name, [t.value for t in TASKS]) from None


def age_band(years: np.ndarray | int) -> np.ndarray:
    """Age in years -> age class: 0 under 30, 1 30 to 59, 2 60 and over. Shape preserved."""
    years = np.asarray(years)
    return (years >= 30).astype(np.int64) + (years >= 60).astype(np.int64)


def encode(mask: np.ndarray, gender: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Per-task classes (each ``(n,)``) -> joint classes ``(n,)`` in 0..17."""
    parts = {Task.MASK: mask, Task.GENDER: gender, Task.AGE: age}
    arrays = {t: np.asarray(v, dtype=np.int64) for t, v in parts.items()}
    for task, values in arrays.items():
        if values.size and (values.min() < 0 or values.max() >= N_CLASSES[task]):
            raise EnsError(f"{task} classes must lie in 0..{N_CLASSES[task] - 1}")
    return 6 * arrays[Task.MASK] + 3 * arrays[Task.GENDER] + arrays[Task.AGE]


def split_prediction(prediction: np.ndarray | Mapping) -> tuple[dict[Task, np.ndarray], np.ndarray | None]:
    """A prediction, joint classes ``(n,)`` or ``{task: (n,)}`` for the tasks it covers, as
    per-task classes and joint classes (None unless every task is covered)."""
    if isinstance(prediction, Mapping):
        parts = {Task(t): np.asarray(v) for t, v in prediction.items()}
        return parts, encode(*(parts[t] for t in TASKS)) if all(t in parts for t in TASKS) else None
    joint = np.asarray(prediction)
    return decode(joint), joint


def decode(classes: np.ndarray) -> dict[Task, np.ndarray]:
    """Joint classes ``(n,)`` in 0..17 -> ``{task: (n,) class}``."""
    classes = np.asarray(classes, dtype=np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= N_JOINT):
        raise EnsError(f"joint classes must lie in 0..{N_JOINT - 1}")
    return {Task.MASK: classes // 6, Task.GENDER: (classes // 3) % 2, Task.AGE: classes % 3}


def _members() -> dict[Task, tuple[np.ndarray, ...]]:
    joint = decode(np.arange(N_JOINT))
    return {t: tuple(np.flatnonzero(joint[t] == c) for c in range(N_CLASSES[t])) for t in TASKS}


MEMBERS = _members()  # {task: (joint classes of task class 0, of class 1, …)}


def marginals(joint: np.ndarray) -> dict[Task, np.ndarray]:
    """Joint distribution ``(n, 18)`` -> ``{task: (n, n_classes(task))}`` by summing the others.

    The columns are added one by one in class order (`stable`: a matrix product would add them
    in the order its BLAS kernel picks, and a tie between two marginals could then go either way
    on two machines)."""
    joint = np.asarray(joint)
    out = {}
    for task, members in MEMBERS.items():
        part = np.empty((len(joint), len(members)), dtype=np.result_type(joint.dtype, np.float32))
        for c, columns in enumerate(members):
            total = joint[:, columns[0]].copy()
            for column in columns[1:]:
                total += joint[:, column]
            part[:, c] = total
        out[task] = part
    return out


def joint_from_tasks(probs: Mapping[Task, np.ndarray]) -> np.ndarray:
    """Per-task distributions (``{task: (n, k)}``, all three) -> their product ``(n, 18)``.

    This assumes the tasks independent given the image, as a three-head model does.
    """
    missing = [t.value for t in TASKS if t not in probs]
    if missing:
        raise EnsError(f"a joint distribution needs all three tasks; missing: {', '.join(missing)}")
    m, g, a = (np.asarray(probs[t]) for t in TASKS)
    return np.einsum("ni,nj,nk->nijk", m, g, a).reshape(len(m), N_JOINT)


def one_hot(classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Class indices ``(n,)`` -> float32 one-hot ``(n, n_classes)``."""
    out = np.zeros((len(classes), n_classes), dtype=np.float32)
    out[np.arange(len(classes)), classes] = 1.0
    return out
