"""The competition's class scheme: three tasks and the 18 joint classes (`MASK_SPACE`), and the
`LabelSpace` any declared competition has (`competition.Competition.space`).

``class = 6*mask + 3*gender + age``: mask (0 wear, 1 incorrect, 2 not wear), gender (0 male,
1 female), age (0 under 30, 1 30 to 59, 2 60 and over). The joint class axis therefore
reshapes to ``(mask, gender, age) = (3, 2, 3)`` in C order, which is what `marginals` and
`joint_from_tasks` rely on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

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
    return MASK_SPACE.task(name)


def age_band(years: np.ndarray | int) -> np.ndarray:
    """Age in years -> age class: 0 under 30, 1 30 to 59, 2 60 and over. Shape preserved."""
    years = np.asarray(years)
    return (years >= 30).astype(np.int64) + (years >= 60).astype(np.int64)


@dataclass(frozen=True)
class LabelSpace:
    """A competition's label space: its tasks in order, each task's ordered class names, and the
    joint classes, the product of the tasks' in C order (``class = sum_t c_t * stride_t``, the
    last task's stride 1): the mask competition's ``6*mask + 3*gender + age``. Every array
    function of this module is a method here; the module's own (`encode`, `decode`,
    `marginals`, `joint_from_tasks`, `split_prediction`) are `MASK_SPACE`'s."""

    tasks: tuple[str, ...]
    classes: Mapping[str, tuple[str, ...]]

    @cached_property
    def n_classes(self) -> dict[str, int]:
        return {t: len(self.classes[t]) for t in self.tasks}

    @cached_property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.classes[t]) for t in self.tasks)

    @cached_property
    def n_joint(self) -> int:
        return int(np.prod(self.shape))

    @cached_property
    def strides(self) -> dict[str, int]:
        shape = self.shape
        return {t: int(np.prod(shape[i + 1 :])) for i, t in enumerate(self.tasks)}

    def encode(self, *parts: np.ndarray) -> np.ndarray:
        """Per-task classes (each ``(n,)``, in task order) -> joint classes ``(n,)``."""
        arrays = {t: np.asarray(v, dtype=np.int64) for t, v in zip(self.tasks, parts, strict=True)}
        for task, values in arrays.items():
            k = len(self.classes[task])
            if values.size and (values.min() < 0 or values.max() >= k):
                raise EnsError(f"{task} classes must lie in 0..{k - 1}")
        strides = self.strides
        out = strides[self.tasks[0]] * arrays[self.tasks[0]]
        for task in self.tasks[1:]:
            out = out + strides[task] * arrays[task] if strides[task] != 1 else out + arrays[task]
        return out

    def decode(self, classes: np.ndarray) -> dict[str, np.ndarray]:
        """Joint classes ``(n,)`` -> ``{task: (n,) class}``."""
        classes = np.asarray(classes, dtype=np.int64)
        if classes.size and (classes.min() < 0 or classes.max() >= self.n_joint):
            raise EnsError(f"joint classes must lie in 0..{self.n_joint - 1}")
        strides = self.strides
        return {t: (classes // strides[t]) % len(self.classes[t]) if i else classes // strides[t] for i, t in enumerate(self.tasks)}

    @cached_property
    def members(self) -> dict[str, tuple[np.ndarray, ...]]:
        """``{task: (joint classes of task class 0, of class 1, …)}``."""
        joint = self.decode(np.arange(self.n_joint))
        return {t: tuple(np.flatnonzero(joint[t] == c) for c in range(len(self.classes[t]))) for t in self.tasks}

    def marginals(self, joint: np.ndarray) -> dict[str, np.ndarray]:
        """Joint distribution ``(n, n_joint)`` -> ``{task: (n, k)}`` by summing the others.

        The columns are added one by one in class order (`stable`: a matrix product would add
        them in the order its BLAS kernel picks, and a tie between two marginals could then go
        either way on two machines)."""
        joint = np.asarray(joint)
        out = {}
        for task, members in self.members.items():
            part = np.empty((len(joint), len(members)), dtype=np.result_type(joint.dtype, np.float32))
            for c, columns in enumerate(members):
                total = joint[:, columns[0]].copy()
                for column in columns[1:]:
                    total += joint[:, column]
                part[:, c] = total
            out[task] = part
        return out

    def joint_from_tasks(self, probs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per-task distributions (``{task: (n, k)}``, every task) -> their product
        ``(n, n_joint)``: the tasks taken independent given the image, as a multi-head model
        has them. Multiplied in task order in their common dtype, as ``einsum`` does (a test holds
        the two equal bit for bit)."""
        missing = [t for t in self.tasks if t not in probs]
        if missing:
            raise EnsError(f"a joint distribution needs all {len(self.tasks)} tasks; missing: {', '.join(missing)}")
        dtype = np.result_type(*(np.asarray(probs[t]) for t in self.tasks))
        arrays = [np.asarray(probs[t], dtype=dtype) for t in self.tasks]
        n = len(arrays[0])
        out = arrays[0]
        for part in arrays[1:]:
            out = (out[:, :, None] * part[:, None, :]).reshape(n, -1)
        return out

    def split_prediction(self, prediction: np.ndarray | Mapping) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """A prediction, joint classes ``(n,)`` or ``{task: (n,)}`` for the tasks it covers, as
        per-task classes and joint classes (None unless every task is covered)."""
        if isinstance(prediction, Mapping):
            parts = {self.task(t): np.asarray(v) for t, v in prediction.items()}
            return parts, self.encode(*(parts[t] for t in self.tasks)) if all(t in parts for t in self.tasks) else None
        joint = np.asarray(prediction)
        return self.decode(joint), joint

    def task(self, name: str) -> str:
        """The task called `name` as this space holds it (for the mask space, a `Task`); an
        unknown name is an `EnsError` that suggests the close ones."""
        from ..errors import unknown

        key = name.strip()
        found = next((t for t in self.tasks if t == key), None) or next((t for t in self.tasks if t.lower() == key.lower()), None)
        if found is None:
            raise unknown("task", name, self.tasks)
        return found


MASK_SPACE = LabelSpace(TASKS, CLASS_NAMES)  # the mask competition's: tasks are `Task` members


def encode(mask: np.ndarray, gender: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Per-task classes (each ``(n,)``) -> joint classes ``(n,)`` in 0..17."""
    return MASK_SPACE.encode(mask, gender, age)


def split_prediction(prediction: np.ndarray | Mapping) -> tuple[dict[Task, np.ndarray], np.ndarray | None]:
    """A prediction, joint classes ``(n,)`` or ``{task: (n,)}`` for the tasks it covers, as
    per-task classes and joint classes (None unless every task is covered)."""
    return MASK_SPACE.split_prediction(prediction)


def decode(classes: np.ndarray) -> dict[Task, np.ndarray]:
    """Joint classes ``(n,)`` in 0..17 -> ``{task: (n,) class}``."""
    return MASK_SPACE.decode(classes)


MEMBERS = MASK_SPACE.members  # {task: (joint classes of task class 0, of class 1, …)}


def marginals(joint: np.ndarray) -> dict[Task, np.ndarray]:
    """Joint distribution ``(n, 18)`` -> ``{task: (n, n_classes(task))}`` (`LabelSpace.marginals`)."""
    return MASK_SPACE.marginals(joint)


def joint_from_tasks(probs: Mapping[Task, np.ndarray]) -> np.ndarray:
    """Per-task distributions (``{task: (n, k)}``, all three) -> their product ``(n, 18)``.

    This assumes the tasks independent given the image, as a three-head model does.
    """
    return MASK_SPACE.joint_from_tasks(probs)


def one_hot(classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Class indices ``(n,)`` -> float32 one-hot ``(n, n_classes)``."""
    out = np.zeros((len(classes), n_classes), dtype=np.float32)
    out[np.arange(len(classes)), classes] = 1.0
    return out
