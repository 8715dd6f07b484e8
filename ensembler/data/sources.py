"""`ens import`: what teammates share, turned into prediction sets.

Accepted files (always joined on ImageID, never by row position):

- ``hard``: a submission ``ImageID,ans`` (ans a joint class 0..17) -> one-hot probabilities;
- ``proba``: rows of probabilities that sum to 1, in any of the layouts teams write:
  ``ImageID,0,…,17``; numbered columns with a common prefix (``ans0..ans17``, ``prob_0..prob_17``,
  ``p0..p17``); per-task columns ``mask_0..2``, ``gender_0..1``, ``age_0..2`` (all three, or the
  tasks a task model predicts); or any names given with ``columns`` (a template ``'c{}'`` or a
  list). An ``ans`` column beside the probabilities is ignored (and compared with their argmax);
- ``logits``: the same layouts, raw scores (softmax is applied, per task for per-task columns);
- ``task``: a per-task label file, ``ImageID,ans`` with the task's label (needs ``task``).
  ``proba`` / ``logits`` with a ``task`` read that task's ``k`` columns (``0..k-1``,
  ``age_0..2``, a prefix, or ``columns``) instead of 18.

Rows are eval images (ImageID as in ``info.csv``) and/or train images (ImageID = the path under
``train/images/``). Eval rows must cover ``info.csv`` exactly; train rows become the source's
``val`` set, labelled from the data folder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EnsError, preview
from .dataset import data_fingerprint, read_eval_ids, read_table, read_train
from .io import sha256_file
from .labels import N_CLASSES, N_JOINT, TASKS, Task, encode, one_hot
from .project import Project
from .store import PredictionSet, Split, Store, check_name, id_mismatch

if TYPE_CHECKING:  # pandas is imported where it is used: compose and report start faster
    import pandas as pd

SUM_TOLERANCE = 1e-3  # float32 probabilities written with few digits still sum to 1 within this
NUMBERED = re.compile(r"^(.*?)(\d+)$")
JOINT = "joint"  # the key of the 18-way columns in a layout


class ImportKind(StrEnum):
    HARD = "hard"
    PROBA = "proba"
    LOGITS = "logits"
    TASK = "task"


@dataclass(frozen=True)
class Layout:
    """Where a file's probabilities are: ``{"joint" or task: column names in class order}``,
    and what it said of the rest (``text``: one line, e.g. ``ans0..ans17 (18 classes)``)."""

    columns: Mapping[str, tuple[str, ...]]
    text: str


@dataclass(frozen=True)
class SharedTable:
    """A parsed teammate CSV: ImageIDs ``(n,)``, the joint ``(n, 18)`` or None, per-task
    probabilities ``{task: (n, k)}``, the kind, and one line describing the columns read."""

    image_ids: np.ndarray
    joint: np.ndarray | None
    probs: Mapping[Task, np.ndarray]
    kind: ImportKind
    layout: str


def _row(path: Path, mask: np.ndarray) -> int:
    """1-based line number in the file of the first True in `mask` (the header is line 1)."""
    return int(np.flatnonzero(mask)[0]) + 2


def _numbered(columns: Sequence[str]) -> dict[str, dict[int, str]]:
    """Columns ending in a number, by prefix: ``{"ans": {0: "ans0", …}, "": {0: "0", …}}``."""
    groups: dict[str, dict[int, str]] = {}
    for column in columns:
        match = NUMBERED.match(column)
        if match:
            groups.setdefault(match.group(1), {})[int(match.group(2))] = column
    return groups


def _complete(group: Mapping[int, str], k: int) -> tuple[str, ...] | None:
    return tuple(group[i] for i in range(k)) if set(group) == set(range(k)) else None


def _span(names: Sequence[str]) -> str:
    return f"{names[0]}..{names[-1]}"


def _expected(task: Task | None) -> str:
    if task is not None:
        k = N_CLASSES[task]
        return f"ImageID and {k} columns for {task}: 0..{k - 1}, {task}_0..{task}_{k - 1}, or one prefix and 0..{k - 1}"
    return (
        "ImageID and 18 columns 0..17, or one prefix and 0..17 (ans0, prob_0, p0 …), "
        "or per-task columns mask_0..2, gender_0..1, age_0..2"
    )


def _refuse(path: Path, columns: Sequence[str], task: Task | None, why: str) -> EnsError:
    found = ",".join(list(columns)[:8]) + (",…" if len(columns) > 8 else "")
    return EnsError(
        f"{path}: {why}; expected {_expected(task)}; found {found}. "
        f"Name the columns with --columns 'c{{}}' (a template for 0..{N_CLASSES[task] - 1 if task else N_JOINT - 1}) or --columns a,b,… (a list)"
    )


def find_layout(path: Path, columns: Sequence[str], task: Task | None = None, spec: str | Sequence[str] | None = None) -> Layout:
    """The probability columns of a file with `columns` (ImageID excluded), detected or given.

    spec: a template with ``{}`` for the class number (``"c{}"``), or the class columns in order
    (a list, or one comma-separated string); ``k`` = 18, or the classes of `task`.
    """
    found_in_file, columns = list(columns), [c for c in columns if c != "ImageID"]
    k = N_CLASSES[task] if task is not None else N_JOINT
    key = str(task) if task is not None else JOINT
    if spec is not None:
        names = spec.split(",") if isinstance(spec, str) and "{}" not in spec else spec
        names = [names.format(i) for i in range(k)] if isinstance(names, str) else [str(n).strip() for n in names]
        if len(names) != k:
            raise EnsError(f"--columns names {len(names)} column(s); {key} has {k} classes")
        missing = [n for n in names if n not in columns]
        if missing:
            raise _refuse(path, found_in_file, task, f"--columns names {preview(missing)}, not in the file")
        found = {key: tuple(names)}
    else:
        groups = _numbered(columns)
        if task is not None:
            preferred = [p for p in ("", f"{task}_", str(task)) if p in groups and _complete(groups[p], k)]
            others = [p for p, g in groups.items() if p not in preferred and _complete(g, k)]
            candidates = preferred[:1] or others
            if len(candidates) != 1:
                why = "several column sets could be the probabilities" if candidates else f"no {k} numbered probability columns"
                raise _refuse(path, found_in_file, task, why)
            found = {key: _complete(groups[candidates[0]], k)}
        else:
            joint = [p for p, g in groups.items() if _complete(g, N_JOINT)]
            per_task = {str(t): _complete(groups[p], N_CLASSES[t]) for t in TASKS for p in (f"{t}_", str(t)) if p in groups and _complete(groups[p], N_CLASSES[t])}
            if len(joint) > 1:
                raise _refuse(path, found_in_file, task, f"several 18-column sets ({', '.join(repr(p) for p in joint)})")
            if joint:
                found = {JOINT: _complete(groups[joint[0]], N_JOINT)}
            elif per_task:
                found = per_task
            else:
                raise _refuse(path, found_in_file, task, "no probability columns")
    used = {c for names in found.values() for c in names}
    extra = [c for c in columns if c not in used and c != "ans"]
    if extra:
        raise _refuse(path, found_in_file, task, f"unexpected column(s) {preview(extra)}")
    what = ", ".join(f"{_span(names)} ({'18 classes' if key == JOINT else key})" for key, names in found.items())
    return Layout(found, what)


def guess_kind(columns: Sequence[str], task: Task | None) -> ImportKind:
    """Only ``ans`` beside ImageID -> hard (task with `task`); numbered columns -> proba."""
    if "ans" in columns and not any(NUMBERED.match(c) for c in columns if c != "ImageID"):
        return ImportKind.TASK if task is not None else ImportKind.HARD
    return ImportKind.PROBA


def _labels(table: pd.DataFrame, path: Path, n_classes: int) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(table["ans"], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values >= n_classes)
    if bad.any():
        i = _row(path, bad) - 2
        raise EnsError(f"{path}: row {i + 2}: ans {table['ans'][i]!r} is not a class in 0..{n_classes - 1}")
    return values.astype(np.int64)


def _probabilities(table: pd.DataFrame, columns: Sequence[str], path: Path, kind: ImportKind) -> np.ndarray:
    """The rows of `columns` as probabilities ``(n, len(columns))``: checked, or softmaxed for logits."""
    import pandas as pd

    values = table[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise EnsError(f"{path}: row {_row(path, bad)}: NaN, infinite or non-numeric value")
    if kind is ImportKind.LOGITS:
        values = np.exp(values - values.max(axis=1, keepdims=True))
        return values / values.sum(axis=1, keepdims=True)
    negative = (values < 0).any(axis=1)
    if negative.any():
        raise EnsError(f"{path}: row {_row(path, negative)}: negative probability")
    off = np.abs(values.sum(axis=1) - 1) > SUM_TOLERANCE
    if off.any():
        raise EnsError(
            f"{path}: row {_row(path, off)}: probabilities sum to {values[off][0].sum():.4g}, not 1 "
            f"(columns {_span(columns)}; if these are raw scores, import with --kind logits)"
        )
    return values / values.sum(axis=1, keepdims=True)


def _ans_note(table: pd.DataFrame, joint: np.ndarray | None, probs: Mapping[Task, np.ndarray]) -> str:
    """What an ``ans`` column beside probabilities says: how often it differs from their argmax."""
    import pandas as pd

    if joint is not None:
        decided, n = joint.argmax(axis=1), N_JOINT
    elif len(probs) == 1:
        (task, p), = probs.items()
        decided, n = p.argmax(axis=1), N_CLASSES[task]
    elif set(probs) == set(TASKS):
        decided, n = encode(*(probs[t].argmax(axis=1) for t in TASKS)), N_JOINT
    else:
        return "column ans ignored"
    ans = pd.to_numeric(table["ans"], errors="coerce").to_numpy(np.float64)
    if not (np.isfinite(ans) & (ans >= 0) & (ans < n)).all():
        return "column ans ignored (not classes, not compared)"
    return f"column ans ignored (differs from the probabilities' argmax on {np.mean(ans != decided):.1%} of rows)"


def read_shared_csv(path: Path, kind: ImportKind | None = None, task: Task | None = None, columns: str | Sequence[str] | None = None) -> SharedTable:
    """Parse a teammate's CSV: ImageIDs ``(n,)`` and probabilities (joint ``(n, 18)``, or per task ``(n, k)``).

    columns: the probability columns when they cannot be detected (see `find_layout`).
    """
    path = Path(path)
    if not path.is_file():
        raise EnsError(f"{path}: file not found")
    table = read_table(path, ("ImageID",))
    if not len(table):
        raise EnsError(f"{path}: no rows")
    kind = ImportKind(kind) if kind is not None else (ImportKind.PROBA if columns is not None else guess_kind(list(table.columns), task))
    if kind is ImportKind.TASK and task is None:
        raise EnsError(f"{path}: --kind task needs --task mask|gender|age")
    dupes = table["ImageID"].duplicated().to_numpy()
    if dupes.any():
        raise EnsError(f"{path}: row {_row(path, dupes)}: ImageID {table['ImageID'][dupes].iloc[0]!r} appears twice")
    ids = table["ImageID"].to_numpy(object)
    if kind in (ImportKind.HARD, ImportKind.TASK):
        if columns is not None:
            raise EnsError(f"--columns names probability columns; a {kind.value} file has ImageID,ans (use --kind proba or logits)")
        if "ans" not in table.columns:
            raise EnsError(f"{path}: a {kind.value} file has columns ImageID,ans; found {','.join(table.columns[:8])} (probabilities? use --kind proba)")
        n_classes = N_CLASSES[task] if task is not None else N_JOINT
        probs = one_hot(_labels(table, path, n_classes), n_classes).astype(np.float32)
        if task is not None:
            return SharedTable(ids, None, {task: probs}, kind, f"ans ({task} labels)")
        return SharedTable(ids, probs, {}, kind, "ans (18-class labels)")
    layout = find_layout(path, list(table.columns), task, columns)
    read = {key: _probabilities(table, names, path, kind).astype(np.float32) for key, names in layout.columns.items()}
    joint = read.pop(JOINT, None)
    per_task = {Task(key): p for key, p in read.items()}
    text = layout.text + (f"; {_ans_note(table, joint, per_task)}" if "ans" in table.columns else "")
    return SharedTable(ids, joint, per_task, kind, text)


def _check_oof(project: Project, path: Path, train: pd.DataFrame, labelled: pd.DataFrame) -> dict[str, Any]:
    """What `import_source` can check of ``--oof`` train rows: the fold file exists and holds
    every person of the rows, and the rows cover whole people (a person's images are all
    out of fold or none is). Returns the fold file's record for the provenance."""
    from .dataset import read_folds

    if not project.folds.is_file():
        raise EnsError(f"--oof: out of fold means for the team's fold file, and {project.folds} does not exist (run ens split, and train each fold's model on the others)")
    folds = read_folds(project.folds)
    people = labelled["profile"].unique()
    unknown_people = people[~np.isin(people, folds.index)]
    if len(unknown_people):
        raise EnsError(f"--oof: {len(unknown_people)} person(s) of {path} are not in {project.folds.name}: {preview(unknown_people)}")
    have = labelled.groupby("profile").size()
    need = train[train["profile"].isin(people)].groupby("profile").size()
    partial = need.index[need.reindex(have.index).to_numpy() != have.to_numpy()]
    if len(partial):
        first = partial[0]
        raise EnsError(
            f"{path}: --oof rows must cover whole people (every image of a person is predicted out of fold, or none): "
            f"{len(partial)} person(s) are partial, e.g. {first} ({have[first]} of {need[first]} images)"
        )
    return {"folds": project.folds.name, "folds_sha256": sha256_file(project.folds), "people": int(len(people))}


def import_source(
    project: Project,
    path: Path,
    name: str,
    kind: ImportKind | None = None,
    task: Task | None = None,
    force: bool = False,
    columns: str | Sequence[str] | None = None,
    oof: bool = False,
) -> list[dict[str, Any]]:
    """Turn a shared CSV into the source `name`: an eval set and/or a labelled ``val`` set.

    columns: the probability columns when `find_layout` cannot detect them (``"c{}"`` or a list).
    oof: the train rows are out of fold for the team's fold file (each image predicted by a
    model that never trained on its person): they are kept as an ``oof`` set, so that scores and
    learned methods may use every one of them, not only the validation fold's. What can be
    checked is: the fold file exists and lists every person, and the rows cover whole people.
    Returns the provenance of each set written (``origin["columns"]`` says which columns were
    read). Nothing is written when any check fails.
    """
    import pandas as pd

    check_name(name)
    store = Store(project.predictions)
    if name in project.model_names:
        raise EnsError(f"{name!r} is a model in {project.zoo.name}; import under another name")
    if store.has(name) and not force:
        raise EnsError(f"source {name!r} exists ({store.root / name}); pick another name or use --force to replace it")
    data = project.require_data()
    shared = read_shared_csv(path, kind, task, columns)
    ids = shared.image_ids

    eval_ids = read_eval_ids(data)
    in_eval = pd.Index(ids).isin(eval_ids)
    sets: list[PredictionSet] = []
    meta: dict[str, Any] = {
        "kind": "hard" if shared.kind in (ImportKind.HARD, ImportKind.TASK) else "proba",
        "origin": {
            "type": "import",
            "file": str(Path(path).absolute()),
            "sha256": sha256_file(path),
            "format": shared.kind.value,
            "columns": shared.layout,
        },
        "data": data_fingerprint(data),
    }

    def build(split: Split, order: np.ndarray, labels: np.ndarray | None) -> PredictionSet:
        import pandas as pd

        pos = pd.Index(ids).get_indexer(order)
        rows = {t: p[pos] for t, p in shared.probs.items()}
        joint = None if shared.joint is None else shared.joint[pos]
        return PredictionSet(name, split, order, rows, joint, labels, meta)

    if in_eval.any():
        missing, _ = id_mismatch(eval_ids, ids[in_eval])
        if len(missing):
            raise EnsError(
                f"{path}: ImageID sets differ from info.csv: {len(missing)} eval image(s) missing "
                f"({preview(missing)}); every eval image needs a row"
            )
        sets.append(build(Split.EVAL, eval_ids, None))
    if not in_eval.all():
        train = read_train(data, project.fixes)
        in_train = pd.Index(ids).isin(train["ImageID"])
        extra = ids[~in_eval & ~in_train]
        if len(extra):
            raise EnsError(
                f"{path}: {len(extra)} ImageID(s) are neither in info.csv nor under train/images: "
                f"{preview(extra)} (train rows use the path under train/images, e.g. 000001_female_Asian_45/mask1.jpg)"
            )
        labelled = train[train["ImageID"].isin(ids)]
        if oof:
            meta = {**meta, "origin": {**meta["origin"], "oof": _check_oof(project, path, train, labelled)}}
        sets.append(build(Split.OOF if oof else Split.VAL, labelled["ImageID"].to_numpy(object), labelled["label"].to_numpy()))
    elif oof:
        raise EnsError(f"{path}: --oof declares train rows out of fold, and the file has none (only eval rows)")

    stale = [s for s in store.splits(name) if s not in {new.split for new in sets}]
    written = [store.write(s, overwrite=force) for s in sets]
    for split in stale:  # a replaced source keeps no split of the old one (removed once the new is in)
        for suffix in (".json", ".csv"):
            (store.root / name / f"{split.value}{suffix}").unlink(missing_ok=True)
    return written
