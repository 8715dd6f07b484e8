"""A declared competition's files (`competition.Competition`): its labelled images, its eval
images and sample submission, and the submission written in the sample's own shape.

- `read_labelled`: one row per labelled image: ``ImageID`` (the id as declared: the CSV's id
  column, or ``<class folder>/<file>`` for a folder per class), ``path``, ``group`` (the declared
  group column, else the image itself), one column per task (the class index, in the declared
  order) and ``label`` (the answer's class: the product index with ``joint: product``, else the
  one task's class). Labels may be written as class names or as indices 0..K-1.
- `read_sample`: the sample submission (every column as text) with each row's image path (in
  the column `IMAGE_PATH`, a name no sample's own column can clash with).
- `submission_bytes`: the sample submission with its answer columns filled, rows matched by id
  (never by order), every other column and row kept as it was.

Every problem is one `EnsError` naming the file, the row or column and what to do: a label
that is not a declared class, an id twice, a missing column, a missing image, a class folder
that is not declared.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EnsError, preview
from .competition import IMAGE_SUFFIXES, Competition, EvalSpec
from .io import read_table, sha256_file
from .stable import top_classes

if TYPE_CHECKING:
    import pandas as pd

IMAGE_PATH = "ens:image path"  # read_sample's column of the eval images' files (a sample's own columns keep their names)


def image_path(data: Path, images: str, image_id: str) -> str:
    """Where the image `image_id` lies: ``images`` with the id in its ``{}``, or the id under
    the folder ``images`` (both relative to the data folder)."""
    return str(data / (images.replace("{}", image_id) if "{}" in images else Path(images) / image_id))


def _check_present(paths: list[str], where: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise EnsError(f"{where}: {len(missing)} listed image(s) missing, e.g. {missing[0]} (is the images key of the declaration right?)")


def _classes(values: pd.Series, classes: tuple[str, ...], where: str) -> np.ndarray:
    """A label column (names or indices 0..K-1) as class indices ``(n,)``."""
    index = {name: i for i, name in enumerate(classes)}
    index.update({str(i): i for i in range(len(classes)) if str(i) not in index})  # a class named "3" stays that class
    out = values.map(index)
    bad = values[out.isna()]
    if len(bad):
        raise EnsError(f"{where}: {len(bad)} label(s) are not a declared class, e.g. row {bad.index[0] + 2} holds {bad.iloc[0]!r} (declared: {preview(classes, 6)}, or 0-{len(classes) - 1})")
    return out.to_numpy(np.int64)


def _one_hot(columns: pd.DataFrame, task: str, path: Path) -> np.ndarray:
    """One-hot label columns (one per class, in class order; 0/1, written ``1`` or ``1.0``) as
    class indices ``(n,)``: exactly one 1 a row, else an error naming the row."""
    import pandas as pd

    values = columns.apply(lambda c: pd.to_numeric(c.str.strip(), errors="coerce")).to_numpy(np.float64)
    bad = ~np.isin(values, (0.0, 1.0)).all(axis=1) | (values.sum(axis=1) != 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        held = ", ".join(f"{c}={v}" for c, v in zip(columns.columns, columns.iloc[row]))
        raise EnsError(f"{path}: row {row + 2}: the one-hot columns of {task} hold {held}; each row marks exactly one class with 1 and the others with 0")
    return values.argmax(axis=1).astype(np.int64)


def _answer(competition: Competition, tasks: dict[str, np.ndarray]) -> np.ndarray:
    return competition.space.encode(*(tasks[t] for t in competition.task_names))


def read_labelled(competition: Competition, data: Path) -> pd.DataFrame:
    """The declared labelled images (module doc), rows in the file's order (a folder per class:
    the declared class order, files sorted by name within a folder)."""
    import pandas as pd

    spec, data = competition.train, Path(data)
    if spec is None:
        raise EnsError("the mask competition's train images are read by dataset.read_train")
    if spec.folders is not None:
        root = data / spec.folders
        if not root.is_dir():
            raise EnsError(f"{root}: train folder not found (competition.train.folders)")
        task = competition.tasks[0]
        found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        strange = [f for f in found if f not in task.classes]
        if strange:
            raise EnsError(f"{root}: folder(s) {preview(strange)} are not declared classes of {task.name}; declare them in competition.tasks or move them away")
        rows = []
        for c, name in enumerate(task.classes):  # the declared order, never sorted: torchvision and timm disagree on "2" and "10"
            folder = root / name
            if not folder.is_dir():
                raise EnsError(f"{folder}: no folder for the declared class {name!r} of {task.name}")
            for file in sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)):
                rows.append((f"{name}/{file}", str(folder / file), c))
        table = pd.DataFrame(rows, columns=["ImageID", "path", "label"])
        table.insert(2, "group", table["ImageID"])
        if task.name != "label":  # a task called label is the answer's own column, once
            table.insert(3, task.name, table["label"])
        return table
    path = data / spec.csv
    if not path.is_file():
        raise EnsError(f"{path}: train labels not found (competition.train.csv)")
    label_columns = [c for v in spec.labels.values() for c in ((v,) if isinstance(v, str) else v)]
    columns = (spec.id, *label_columns, *((spec.group,) if spec.group else ()))
    raw = read_table(path, tuple(dict.fromkeys(columns)))
    ids = raw[spec.id].str.strip()
    twice = ids[ids.duplicated()]
    if len(twice):
        raise EnsError(f"{path}: id {twice.iloc[0]!r} is listed twice (column {spec.id}); one row an image")
    table = pd.DataFrame({"ImageID": ids.to_numpy(object)})
    table["path"] = [image_path(data, spec.images, i) for i in table["ImageID"]]
    table["group"] = raw[spec.group].str.strip().to_numpy(object) if spec.group else table["ImageID"]
    tasks = {}
    for task in competition.tasks:
        column = spec.labels[task.name]
        if isinstance(column, str):
            tasks[task.name] = _classes(raw[column].str.strip(), task.classes, f"{path} column {column}")
        else:
            tasks[task.name] = _one_hot(raw[list(column)], task.name, path)
        table[task.name] = tasks[task.name]
    for name in spec.shared:  # the declaration promises one label a group
        held = table.groupby("group", sort=False)[name].nunique()
        if (held > 1).any():
            group = held.index[int(np.argmax(held.to_numpy() > 1))]
            classes = sorted({competition.task(name).classes[c] for c in table.loc[table["group"] == group, name]})
            raise EnsError(f"{path}: group {group!r} ({spec.group}) holds {len(classes)} labels of {name} ({', '.join(classes)}), which competition.train.shared says its images share; give them one, or take {name} out of shared")
    table["label"] = _answer(competition, tasks)
    _check_present(list(table["path"]), str(path))
    return table


def make_group_folds(table: pd.DataFrame, n_folds: int = 5, seed: int = 42) -> pd.DataFrame:
    """``group, fold`` (one row per group) for the labelled images `table` (`read_labelled`):
    a group's images in one fold, the answer classes balanced across folds as far as the groups
    allow (`people.grouped_folds`)."""
    import pandas as pd

    from .people import grouped_folds

    fold = grouped_folds(table["label"].to_numpy(), table["group"].to_numpy(object), n_folds, seed, "groups")
    return pd.DataFrame({"group": table["group"].to_numpy(object), "fold": fold}).drop_duplicates("group").reset_index(drop=True)


def fingerprint(competition: Competition, data: Path) -> dict[str, str]:
    """sha256 of the declared label CSV and sample submission (those present): what a
    prediction was made on (`dataset.data_fingerprint` for the mask competition)."""
    files = [competition.eval.csv, *((competition.train.csv,) if competition.train.csv else ())]
    return {f: sha256_file(Path(data) / f) for f in files if (Path(data) / f).is_file()}


def read_sample(competition: Competition, data: Path) -> pd.DataFrame:
    """The sample submission as text (its columns, its rows in order, a column called ``path``
    kept as it is) plus `IMAGE_PATH`: each eval image's file. The id column must be there, each id once, and each image present."""
    spec: EvalSpec | None = competition.eval
    if spec is None:
        raise EnsError("the mask competition's eval images are read by dataset.read_eval")
    path = Path(data) / spec.csv
    if not path.is_file():
        raise EnsError(f"{path}: sample submission not found (competition.eval.csv)")
    needed = [spec.id, *((competition.submission.answer,) if competition.submission.answer else competition.submission.proba)]
    sample = read_table(path, tuple(needed))
    ids = sample[spec.id].str.strip()
    twice = ids[ids.duplicated()]
    if len(twice):
        raise EnsError(f"{path}: id {twice.iloc[0]!r} is listed twice (column {spec.id})")
    sample[spec.id] = ids
    sample[IMAGE_PATH] = [image_path(Path(data), spec.images, i) for i in ids]
    _check_present(list(sample[IMAGE_PATH]), str(path))
    return sample


def submission_bytes(competition: Competition, sample: pd.DataFrame, image_ids: np.ndarray, decided: np.ndarray | None = None, probs: np.ndarray | Mapping[str, np.ndarray] | None = None, joint: np.ndarray | None = None) -> bytes:
    """The sample submission with its answer filled, as CSV bytes: `decided` ``(n,)`` answer
    classes (``answer:``, written as indices or names); or `probs` (``(n, k)`` for one task,
    ``{task: (n, k)}`` for several, with the `joint` ``(n, K)`` when there is one), written as
    ``proba:`` columns, each its class's probability, or, for a ``map@K`` metric, as the answer's
    K likeliest classes (`metrics.top_classes`'s order), space-separated. For `image_ids`
    ``(n,)`` in any order: matched to the sample's rows by id, and every sample row must get one.
    The other columns and the row order are the sample's."""
    spec, sub = competition.eval, competition.submission
    order = sample[spec.id].to_numpy(object)
    position = {i: p for p, i in enumerate(np.asarray(image_ids, dtype=object))}
    missing = [i for i in order if i not in position]
    if missing or len(position) != len(image_ids):
        raise EnsError(f"the answers do not cover the sample submission's rows by id: {len(missing)} missing (e.g. {preview(missing)}), {len(image_ids) - len(position)} given twice")
    rows = np.array([position[i] for i in order])
    out = sample.drop(columns=[IMAGE_PATH]).copy()
    by_task = None if probs is None else (probs if isinstance(probs, Mapping) else {competition.tasks[0].name: probs})
    names = competition.tasks[0].classes if len(competition.tasks) == 1 and sub.as_name else None
    written = (lambda c: names[c]) if names else str  # noqa: E731
    if sub.answer is not None and competition.metric.top is not None:
        if by_task is None:
            raise EnsError(f"this competition's answer is the {competition.metric.top} likeliest classes ({competition.metric}): give the probabilities")
        answer = np.asarray(competition.answer_probabilities(by_task, joint))[rows]
        out[sub.answer] = [" ".join(written(int(c)) for c in top) for top in top_classes(answer, competition.metric.top)]
    elif sub.answer is not None:
        if decided is None:
            raise EnsError("this competition's submission is a class: give the decided classes")
        out[sub.answer] = [written(int(c)) for c in np.asarray(decided)[rows]]
    else:
        if by_task is None:
            raise EnsError("this competition's submission holds probabilities: give them")
        for column, (task, c) in competition.proba_columns.items():
            # float32's shortest round trip (the members' precision): no two probabilities they tell apart are written alike
            out[column] = [str(v) for v in np.asarray(by_task[task])[rows, c].astype(np.float32)]
    return out.to_csv(index=False).encode()
