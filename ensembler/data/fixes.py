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

A declared competition's file is ``image,group,task,label`` (`DECLARED_COLUMNS`; the group
column may be left out): one row an image's label (``1000.jpg,,label,healthy``), or, for a task
the declaration marks as shared by a group, the whole group's (``,patient7,diagnosis,nevus``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EnsError
from .io import atomic_write, read_table, sha256_file
from .labels import CLASS_NAMES, LabelSpace, Task, decode, encode

if TYPE_CHECKING:
    import pandas as pd

    from .competition import Competition

COLUMNS = ("profile", "image", "task", "label")
DECLARED_COLUMNS = ("image", "group", "task", "label")
PERSON_TASKS = (Task.GENDER, Task.AGE)


@dataclass(frozen=True)
class LabelFixes:
    """The fixes of one file: ``{(profile, image, task): class}`` (image "" for a person's
    gender or age; in a declared competition, ``(group, image, task)``, one of group and image
    "": a shared task's group, else an image), the file and its sha256."""

    path: Path
    sha256: str
    fixes: dict[tuple[str, str, str], int]

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


def _class(names: Sequence[str], task: str, text: str, where: str) -> int:
    if text in names:
        return list(names).index(text)
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise EnsError(f"{where}: {text!r} is not a {task} class (one of {', '.join(names)}, or 0-{len(names) - 1})")


def read_fixes(path: Path, competition: Competition | None = None) -> LabelFixes:
    """The fix file at `path`, checked: the columns, each task and class, the image given for
    mask and only for mask, no label fixed twice with two answers (the same answer twice is
    one fix). `competition`: a declared one reads its own layout (module doc)."""
    path = Path(path)
    declared = competition is not None and not competition.is_preset
    if not path.is_file():
        header = ",".join(DECLARED_COLUMNS if declared else COLUMNS)
        raise EnsError(f"{path}: label-fix file not found (project.label_fixes); create it with the header {header}, or run ens audit --accept P")
    if declared:
        return _read_declared(path, competition)
    table = read_table(path, COLUMNS)
    fixes: dict[tuple[str, str, str], int] = {}
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
        _add(fixes, (profile, image, task), _class(CLASS_NAMES[task], task, label, where), CLASS_NAMES[task], where)
    return LabelFixes(path, sha256_file(path), fixes)


def _add(fixes: dict, key: tuple[str, str, str], value: int, names: Sequence[str], where: str) -> None:
    """One fix into `fixes`, refusing the same label fixed twice with two answers."""
    if key in fixes and fixes[key] != value:
        unit, image, task = key
        what = "/".join(p for p in (unit, image) if p)
        raise EnsError(f"{where}: {task} of {what} is fixed twice with two answers ({names[fixes[key]]}, {names[value]})")
    fixes[key] = value


def _read_declared(path: Path, competition: Competition) -> LabelFixes:
    """A declared competition's fix file: ``image,group,task,label`` (module doc)."""
    import pandas as pd

    table = read_table(path, ("image", "task", "label"))
    if "profile" in table.columns:
        raise EnsError(f"{path}: a fix file with a profile column is the mask competition's; {competition.name}'s is {','.join(DECLARED_COLUMNS)} (group may be left out)")
    groups = table["group"] if "group" in table else pd.Series("", index=table.index)
    shared = set(competition.train.shared if competition.train else ())
    fixes: dict[tuple[str, str, str], int] = {}
    for row, (image, group, task_text, label) in enumerate(zip(table["image"], groups, table["task"], table["label"]), start=2):
        where = f"{path} row {row}"
        image, group, label = str(image).strip(), str(group).strip(), str(label).strip()
        try:
            task = competition.task(str(task_text).strip())
        except EnsError:
            raise EnsError(f"{where}: task {task_text!r} is not one of {', '.join(competition.task_names)}") from None
        if task.name in shared and (image or not group):
            raise EnsError(f"{where}: {task.name} is shared by a group (competition.train.shared): fix the group (its column), leave image empty")
        if task.name not in shared and (group or not image):
            raise EnsError(f"{where}: {task.name} is an image's own label: name the image, leave group empty")
        _add(fixes, (group, image, task.name), _class(task.classes, task.name, label, where), task.classes, where)
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


def apply_declared_fixes(image_ids: Sequence[str], groups: Sequence[str] | None, labels: np.ndarray, fixes: LabelFixes | None, space: LabelSpace) -> np.ndarray:
    """A declared competition's joint `labels` ``(n,)`` of the images `image_ids` ``(n,)`` (in
    `groups` ``(n,)``, None: none declared) with the fixes applied (a new array; unchanged
    without fixes)."""
    labels = np.asarray(labels, dtype=np.int64)
    if fixes is None or not len(fixes):
        return labels
    ids = np.asarray(image_ids, dtype=object)
    groups = np.asarray(groups, dtype=object) if groups is not None else np.full(len(ids), None, dtype=object)
    tasks = {t: v.copy() for t, v in space.decode(labels).items()}
    row = {image: i for i, image in enumerate(ids)}
    for (group, image, task), value in fixes.fixes.items():
        if image:
            if image in row:
                tasks[task][row[image]] = value
        else:
            tasks[task][groups == group] = value
    return space.encode(*(tasks[t] for t in space.tasks))


def declared_in_force(fixes: LabelFixes, train: pd.DataFrame, image_ids: Sequence[str], groups: Sequence[str] | None, labels: np.ndarray, space: LabelSpace) -> np.ndarray:
    """A declared competition's labels in force: `fixes` checked against the whole `train`
    table (``ImageID, group, …``: `declared.read_labelled`; a fix naming an image or group not
    there is an error, `check_declared`), then applied to the `labels` ``(n,)`` of `image_ids`
    ``(n,)`` in `groups` (`apply_declared_fixes`)."""
    check_declared(fixes, train["ImageID"], train["group"])
    return apply_declared_fixes(image_ids, groups, labels, fixes, space)


def check_declared(fixes: LabelFixes, image_ids: Iterable[str], groups: Iterable[str]) -> None:
    """Refuse a declared competition's fix naming an image or group that is not among the
    labelled images `image_ids` (their `groups`)."""
    ids, known = set(image_ids), set(groups)
    for (group, image, task) in fixes.fixes:
        if image and image not in ids:
            raise EnsError(f"{fixes.path}: fix of {task} for image {image!r}: no such image among the train labels; remove the row or correct the id")
        if group and group not in known:
            raise EnsError(f"{fixes.path}: fix of {task} for group {group!r}: no such group among the train labels; remove the row or correct the name")


def append_fixes(path: Path, rows: Sequence[tuple[str, str, str, int]], competition: Competition | None = None) -> int:
    """Append `rows` (profile, image, task, class; a declared `competition`'s: group, image,
    task, class) to the fix file at `path` (created with its header when absent), atomically;
    the team's own lines are kept as written, and a label the file already fixes is not added
    again (its line wins). Returns the number of lines added."""
    path = Path(path)
    declared = competition is not None and not competition.is_preset
    present = read_fixes(path, competition).fixes if path.is_file() else {}
    old = path.read_bytes() if path.is_file() else f"{','.join(DECLARED_COLUMNS if declared else COLUMNS)}\n".encode()
    if old and not old.endswith(b"\n"):
        old += b"\n"
    header = old.split(b"\n", 1)[0].decode().replace(" ", "").split(",")
    new = [(u, i, t, c) for u, i, t, c in dict.fromkeys(rows) if (u, i, t) not in present]
    seen: set[tuple[str, str, str]] = set()
    lines = []
    for unit, image, task, value in new:
        if (unit, image, task) in seen:
            continue
        seen.add((unit, image, task))
        if not declared:
            lines.append(f"{unit},{image},{task},{CLASS_NAMES[Task(task)][value]}\n")
            continue
        cells = {"image": image, "group": unit, "task": task, "label": competition.task(task).classes[value]}
        if unit and "group" not in header:
            raise EnsError(f"{path}: a group's fix ({task} of {unit}) needs the group column: make the header {','.join(DECLARED_COLUMNS)}")
        lines.append(",".join(cells.get(column, "") for column in header) + "\n")
    if lines:
        with atomic_write(path) as handle:
            handle.write(old + "".join(lines).encode())
    return len(lines)


def unknown_rows(fixes: LabelFixes, image_ids: Iterable[str]) -> list[str]:
    """The fixes naming a person not among `image_ids` (for a note where the labelled images
    are a subset of the train set: a fix elsewhere is not an error there)."""
    profiles = {i.split("/", 1)[0] for i in image_ids}
    return sorted({p for p, _, _ in fixes.fixes if p not in profiles})

