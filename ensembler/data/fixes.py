"""The team's label-fix file (DESIGN.md §4, label audit and fixes): ``profile,image,task,label``.

One row a fix: ``000123_female_Asian_45,,gender,male`` (a person's gender or age: `image`
empty), ``000123_female_Asian_45,normal.jpg,mask,incorrect`` (one file's mask state). Labels
are class names as `ens` prints them (``male``, ``<30``, ``not wear``) or class indices.
`project.label_fixes` in ``model_zoo.yaml`` names the file; every reader of train labels then
sees the fixed ones (`apply_fixes`): scores, learned fits, calibration, priors, `ens split`'s
stratification; reports and manifests name the file, its sha256 and the number of fixes.
Stored prediction sets never carry a fix: they keep the labels as given, and the file in force
is applied when they are read (`scope.labelled_scope`), so accepting, editing, emptying or
un-naming it changes every command at once, and undoing gives back the numbers of before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EnsError
from .io import atomic_write, read_table, sha256_file
from .labels import CLASS_NAMES, N_CLASSES, Task, decode, encode

COLUMNS = ("profile", "image", "task", "label")
PERSON_TASKS = (Task.GENDER, Task.AGE)


@dataclass(frozen=True)
class LabelFixes:
    """The fixes of one file: ``{(profile, image, task): class}`` (image "" for a person's
    gender or age), the file and its sha256."""

    path: Path
    sha256: str
    fixes: dict[tuple[str, str, Task], int]

    def __len__(self) -> int:
        return len(self.fixes)

    def describe(self) -> dict[str, Any]:
        """What reports and manifests record: the file, its sha256, the number of fixes."""
        return {"file": str(self.path), "sha256": self.sha256, "fixes": len(self)}

    def line(self) -> str:
        """``labels: 12 fixes from label_fixes.csv (sha256 3f2a…)``."""
        return f"labels: {len(self)} fix{'es' if len(self) != 1 else ''} from {self.path.name} (sha256 {self.sha256[:12]})"

    def check(self, image_ids: Iterable[str]) -> None:
        """Refuse a fix naming a person or image that is not among `image_ids` (paths under
        ``train/images``)."""
        ids = set(image_ids)
        profiles = {i.split("/", 1)[0] for i in ids}
        for (profile, image, task), _ in self.fixes.items():
            if profile not in profiles:
                raise EnsError(f"{self.path}: fix of {task} for {profile!r}: no such person among the train images; remove the row or correct the folder name")
            if image and f"{profile}/{image}" not in ids:
                raise EnsError(f"{self.path}: fix of {task} for {profile}/{image}: no such image; the person's files are named like mask1.jpg, incorrect_mask.jpg, normal.jpg")


def _class(task: Task, text: str, where: str) -> int:
    names = CLASS_NAMES[task]
    if text in names:
        return names.index(text)
    if text.isdigit() and int(text) < N_CLASSES[task]:
        return int(text)
    raise EnsError(f"{where}: {text!r} is not a {task} class (one of {', '.join(names)}, or 0-{N_CLASSES[task] - 1})")


def read_fixes(path: Path) -> LabelFixes:
    """The fix file at `path`, checked: the columns, each task and class, the image given for
    mask and only for mask, no label fixed twice with two answers (the same answer twice is
    one fix)."""
    path = Path(path)
    if not path.is_file():
        raise EnsError(f"{path}: label-fix file not found (project.label_fixes); create it with the header {','.join(COLUMNS)}, or run ens audit --accept P")
    table = read_table(path, COLUMNS)
    fixes: dict[tuple[str, str, Task], int] = {}
    for row, (profile, image, task_text, label) in enumerate(table[list(COLUMNS)].itertuples(index=False, name=None), start=2):
        where = f"{path} row {row}"
        profile, image, label = profile.strip(), image.strip(), label.strip()
        try:
            task = Task(task_text.strip().lower())
        except ValueError:
            raise EnsError(f"{where}: task {task_text!r} is not one of mask, gender, age") from None
        if not profile:
            raise EnsError(f"{where}: the profile (the train folder, e.g. 000001_female_Asian_45) is empty")
        if task is Task.MASK and not image:
            raise EnsError(f"{where}: a mask fix names the image (e.g. normal.jpg)")
        if task in PERSON_TASKS and image:
            raise EnsError(f"{where}: {'an' if task is Task.AGE else 'a'} {task} fix is for the whole person: leave image empty")
        key, value = (profile, image, task), _class(task, label, where)
        if key in fixes and fixes[key] != value:
            raise EnsError(f"{where}: {task} of {profile}{'/' + image if image else ''} is fixed twice with two answers ({CLASS_NAMES[task][fixes[key]]}, {CLASS_NAMES[task][value]})")
        fixes[key] = value
    return LabelFixes(path, sha256_file(path), fixes)


def apply_fixes(image_ids: Sequence[str], labels: np.ndarray, fixes: LabelFixes | None) -> np.ndarray:
    """Joint `labels` ``(n,)`` of the train images `image_ids` ``(n,)`` with the fixes applied
    (a new array; unchanged without fixes)."""
    labels = np.asarray(labels, dtype=np.int64)
    if fixes is None or not len(fixes):
        return labels
    ids = np.asarray(image_ids, dtype=object)
    profiles = np.array([i.split("/", 1)[0] for i in ids], dtype=object)
    files = np.array([i.split("/", 1)[-1] for i in ids], dtype=object)
    tasks = decode(labels)
    tasks = {t: v.copy() for t, v in tasks.items()}
    for (profile, image, task), value in fixes.fixes.items():
        where = (profiles == profile) & ((files == image) if image else True)
        tasks[task][where] = value
    return encode(tasks[Task.MASK], tasks[Task.GENDER], tasks[Task.AGE])


def append_fixes(path: Path, rows: Sequence[tuple[str, str, Task, int]]) -> int:
    """Append `rows` (profile, image, task, class) to the fix file at `path` (created with its
    header when absent), atomically; the team's own lines are kept as written, and a label the
    file already fixes is not added again (its line wins). Returns the number of lines added."""
    path = Path(path)
    present = read_fixes(path).fixes if path.is_file() else {}
    old = path.read_bytes() if path.is_file() else f"{','.join(COLUMNS)}\n".encode()
    if old and not old.endswith(b"\n"):
        old += b"\n"
    new = [(p, i, t, c) for p, i, t, c in dict.fromkeys(rows) if (p, i, t) not in present]
    seen: set[tuple[str, str, Task]] = set()
    lines = []
    for profile, image, task, value in new:
        if (profile, image, task) in seen:
            continue
        seen.add((profile, image, task))
        lines.append(f"{profile},{image},{task},{CLASS_NAMES[task][value]}\n")
    if lines:
        with atomic_write(path) as handle:
            handle.write(old + "".join(lines).encode())
    return len(lines)


def unknown_rows(fixes: LabelFixes, image_ids: Iterable[str]) -> list[str]:
    """The fixes naming a person not among `image_ids` (for a note where the labelled images
    are a subset of the train set: a fix elsewhere is not an error there)."""
    profiles = {i.split("/", 1)[0] for i in image_ids}
    return sorted({p for p, _, _ in fixes.fixes if p not in profiles})

