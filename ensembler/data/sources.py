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
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EnsError, preview
from .dataset import data_fingerprint, read_eval_ids, read_table, read_train
from .io import sha256_file
from .labels import MASK_SPACE, LabelSpace, Task, one_hot
from .project import Project
from .store import PredictionSet, Split, check_name, id_mismatch

if TYPE_CHECKING:  # pandas is imported where it is used: compose and report start faster
    import pandas as pd

    from .competition import Competition

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
class FileShape:
    """What a competition's shared files look like: its label `space`, the names of the id
    column (the first found is the ImageID), of a hard label column (`answers`), and its
    submission's probability columns (`proba`: column -> (task, class index), binary tasks)."""

    space: LabelSpace = MASK_SPACE
    ids: tuple[str, ...] = ("ImageID",)
    answers: tuple[str, ...] = ("ans",)
    proba: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, competition: Competition) -> FileShape:
        """The files of `competition`: the mask one's (`MASK_SHAPE`), or a declared one's: ids in
        its sample submission's id column (or ImageID), hard labels in its answer column (or ans)."""
        if competition.is_preset:
            return MASK_SHAPE
        sub = competition.submission
        ids = (competition.eval.id, *((competition.train.id,) if competition.train.id else ()), "ImageID")
        return cls(competition.space, tuple(dict.fromkeys(ids)), tuple(dict.fromkeys((*((sub.answer,) if sub.answer else ()), "ans"))), competition.proba_columns)

    @property
    def single(self) -> str | None:
        """The one task of a single-task competition (its files hold that task), else None."""
        return self.space.tasks[0] if len(self.space.tasks) == 1 else None


MASK_SHAPE = FileShape()


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


def _expected(task: str | None, shape: FileShape) -> str:
    space = shape.space
    if task is not None:
        k = space.n_classes[task]
        names = "" if space is MASK_SPACE else f"its class names ({preview(space.classes[task], 4)}), "
        return f"ImageID and {k} columns for {task}: {names}0..{k - 1}, {task}_0..{task}_{k - 1}, or one prefix and 0..{k - 1}"
    n = space.n_joint
    per_task = ", ".join(f"{t}_0..{k - 1}" for t, k in space.n_classes.items())
    return f"ImageID and {n} columns 0..{n - 1}, or one prefix and 0..{n - 1} (ans0, prob_0, p0 …), or per-task columns {per_task}"


def _refuse(path: Path, columns: Sequence[str], task: str | None, why: str, shape: FileShape = MASK_SHAPE) -> EnsError:
    found = ",".join(list(columns)[:8]) + (",…" if len(columns) > 8 else "")
    last = shape.space.n_classes[task] - 1 if task else shape.space.n_joint - 1
    return EnsError(
        f"{path}: {why}; expected {_expected(task, shape)}; found {found}. "
        f"Name the columns with --columns 'c{{}}' (a template for 0..{last}) or --columns a,b,… (a list)"
    )


def find_layout(path: Path, columns: Sequence[str], task: str | None = None, spec: str | Sequence[str] | None = None, shape: FileShape = MASK_SHAPE) -> Layout:
    """The probability columns of a file with `columns` (ImageID excluded), detected or given.

    spec: a template with ``{}`` for the class number (``"c{}"``), or the class columns in order
    (a list, or one comma-separated string); ``k`` = the joint classes (18), or the classes of
    `task`. In a declared competition a task's columns may also be its class names.
    """
    space = shape.space
    found_in_file, columns = list(columns), [c for c in columns if c != "ImageID"]
    k = space.n_classes[task] if task is not None else space.n_joint
    key = str(task) if task is not None else JOINT
    refuse = lambda why: _refuse(path, found_in_file, task, why, shape)  # noqa: E731
    if spec is not None:
        names = spec.split(",") if isinstance(spec, str) and "{}" not in spec else spec
        names = [names.format(i) for i in range(k)] if isinstance(names, str) else [str(n).strip() for n in names]
        if len(names) != k:
            raise EnsError(f"--columns names {len(names)} column(s); {key} has {k} classes")
        missing = [n for n in names if n not in columns]
        if missing:
            raise refuse(f"--columns names {preview(missing)}, not in the file")
        found = {key: tuple(names)}
    elif task is not None and space is not MASK_SPACE and set(space.classes[task]) <= set(columns):
        found = {key: tuple(space.classes[task])}  # the class names, in the declared order
    else:
        groups = _numbered(columns)
        if task is not None:
            preferred = [p for p in ("", f"{task}_", str(task)) if p in groups and _complete(groups[p], k)]
            others = [p for p, g in groups.items() if p not in preferred and _complete(g, k)]
            candidates = preferred[:1] or others
            if len(candidates) != 1:
                raise refuse("several column sets could be the probabilities" if candidates else f"no {k} numbered probability columns")
            found = {key: _complete(groups[candidates[0]], k)}
        else:
            n = space.n_joint
            joint = [p for p, g in groups.items() if _complete(g, n)]
            per_task = {str(t): _complete(groups[p], c) for t, c in space.n_classes.items() for p in (f"{t}_", str(t)) if p in groups and _complete(groups[p], c)}
            if len(joint) > 1:
                raise refuse(f"several {n}-column sets ({', '.join(repr(p) for p in joint)})")
            if joint:
                found = {JOINT: _complete(groups[joint[0]], n)}
            elif per_task:
                found = per_task
            else:
                raise refuse("no probability columns")
    used = {c for names in found.values() for c in names}
    extra = [c for c in columns if c not in used and c not in shape.answers]
    if extra:
        raise refuse(f"unexpected column(s) {preview(extra)}")
    what = ", ".join(f"{_span(names)} ({f'{space.n_joint} classes' if key == JOINT else key})" for key, names in found.items())
    return Layout(found, what)


def guess_kind(columns: Sequence[str], task: str | None, shape: FileShape = MASK_SHAPE) -> ImportKind:
    """Only an answer column (``ans``) beside ImageID -> hard (task with `task`, unless the
    competition has one task); anything else -> proba."""
    answer = next((c for c in shape.answers if c in columns and c not in shape.proba), None)
    names = set() if shape.space is MASK_SPACE else {n for t in shape.space.tasks for n in shape.space.classes[t]}
    if answer is not None and not any(NUMBERED.match(c) or c in names for c in columns if c not in ("ImageID", answer)):
        return ImportKind.TASK if task is not None and shape.single is None else ImportKind.HARD
    return ImportKind.PROBA


def _labels(table: pd.DataFrame, path: Path, n_classes: int, column: str = "ans", names: Sequence[str] = ()) -> np.ndarray:
    """The hard labels of `column`: indices 0..n_classes-1 (or the class `names`)."""
    import pandas as pd

    text = table[column].str.strip()
    values = pd.to_numeric(text.map({n: str(i) for i, n in enumerate(names)}).fillna(text) if names else text, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values >= n_classes)
    if bad.any():
        i = _row(path, bad) - 2
        if len(text[i].split()) > 1:  # a map@K answer: several classes, likeliest first
            raise EnsError(f"{path}: row {i + 2}: {column} {table[column][i]!r} lists {len(text[i].split())} classes (a ranked map@K answer); this version imports a teammate's probabilities or one class an image, not a ranking")
        raise EnsError(f"{path}: row {i + 2}: {column} {table[column][i]!r} is not a class in 0..{n_classes - 1}{f' nor a class name ({preview(names, 4)})' if names else ''}")
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


def _ans_note(table: pd.DataFrame, joint: np.ndarray | None, probs: Mapping[str, np.ndarray], space: LabelSpace = MASK_SPACE, column: str = "ans") -> str:
    """What an answer column beside probabilities says: how often it differs from their argmax."""
    import pandas as pd

    if joint is not None:
        decided, n = joint.argmax(axis=1), space.n_joint
    elif len(probs) == 1:
        (task, p), = probs.items()
        decided, n = p.argmax(axis=1), space.n_classes[task]
    elif set(probs) == set(space.tasks):
        decided, n = space.encode(*(probs[t].argmax(axis=1) for t in space.tasks)), space.n_joint
    else:
        return f"column {column} ignored"
    ans = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
    if not (np.isfinite(ans) & (ans >= 0) & (ans < n)).all():
        return f"column {column} ignored (not classes, not compared)"
    return f"column {column} ignored (differs from the probabilities' argmax on {np.mean(ans != decided):.1%} of rows)"


def read_shared_csv(path: Path, kind: ImportKind | None = None, task: str | None = None, columns: str | Sequence[str] | None = None, shape: FileShape = MASK_SHAPE) -> SharedTable:
    """Parse a teammate's CSV: ImageIDs ``(n,)`` and probabilities (joint ``(n, 18)``, or per task ``(n, k)``).

    columns: the probability columns when they cannot be detected (see `find_layout`).
    shape: the competition's files (`FileShape`; the mask competition's by default): in a
    single-task competition every file holds its one task; a file in the submission's own
    probability layout (``image_name,target`` holding p(malignant)) is read as it is.
    """
    path = Path(path)
    if not path.is_file():
        raise EnsError(f"{path}: file not found")
    table = read_table(path)
    id_column = next((c for c in shape.ids if c in table.columns), None)
    if id_column is None:
        raise EnsError(f"{path}: missing column(s) {' or '.join(shape.ids)}; found {', '.join(table.columns)}")
    table = table.rename(columns={id_column: "ImageID"}) if id_column != "ImageID" else table
    if not len(table):
        raise EnsError(f"{path}: no rows")
    task = shape.space.task(task) if task is not None else shape.single
    kind = ImportKind(kind) if kind is not None else (ImportKind.PROBA if columns is not None else guess_kind(list(table.columns), task, shape))
    if kind is ImportKind.TASK and task is None:
        raise EnsError(f"{path}: --kind task needs --task {'|'.join(shape.space.tasks)}")
    dupes = table["ImageID"].duplicated().to_numpy()
    if dupes.any():
        raise EnsError(f"{path}: row {_row(path, dupes)}: ImageID {table['ImageID'][dupes].iloc[0]!r} appears twice")
    ids = table["ImageID"].to_numpy(object)
    space = shape.space
    if kind in (ImportKind.HARD, ImportKind.TASK):
        answer = next((c for c in shape.answers if c in table.columns), None)
        if columns is not None:
            raise EnsError(f"--columns names probability columns; a {kind.value} file has ImageID,{shape.answers[0]} (use --kind proba or logits)")
        if answer is None:
            raise EnsError(f"{path}: a {kind.value} file has columns ImageID,{shape.answers[0]}; found {','.join(table.columns[:8])} (probabilities? use --kind proba)")
        n_classes = space.n_classes[task] if task is not None else space.n_joint
        names = space.classes[task] if task is not None and space is not MASK_SPACE else ()
        probs = one_hot(_labels(table, path, n_classes, answer, names), n_classes).astype(np.float32)
        if task is not None:
            return SharedTable(ids, None, {task: probs}, kind, f"{answer} ({task} labels)")
        return SharedTable(ids, probs, {}, kind, f"{answer} ({n_classes}-class labels)")
    others = [c for c in table.columns if c != "ImageID"]
    if columns is None and shape.proba and others and set(others) <= set(shape.proba):
        return _submission_probabilities(table, path, ids, others, kind, shape)
    layout = find_layout(path, list(table.columns), task, columns, shape)
    read = {key: _probabilities(table, names, path, kind).astype(np.float32) for key, names in layout.columns.items()}
    joint = read.pop(JOINT, None)
    per_task = {space.task(key): p for key, p in read.items()}
    answer = next((c for c in shape.answers if c in table.columns), None)
    text = layout.text + (f"; {_ans_note(table, joint, per_task, space, answer)}" if answer else "")
    return SharedTable(ids, joint, per_task, kind, text)


def _submission_probabilities(table: pd.DataFrame, path: Path, ids: np.ndarray, columns: Sequence[str], kind: ImportKind, shape: FileShape) -> SharedTable:
    """A file in the submission's own layout, read as written: per task, its columns' classes
    (`FileShape.proba`, each column its own task's). A task whose every class has a column
    (one column per class: Plant Pathology's ``healthy,multiple_diseases,rust,scab``) is read
    as its probabilities (softmax first with ``--kind logits``); a binary task with one column
    (``target`` = p(malignant); a multi-label finding's ``yes``) gets the rest as the other
    class; a task with some classes only is an error naming the missing ones."""
    import pandas as pd

    space = shape.space
    by_task: dict[str, dict[int, str]] = {}
    for column in columns:
        task, c = shape.proba[column]
        by_task.setdefault(task, {})[c] = column
    probs, read = {}, []
    for task, named in by_task.items():
        k = space.n_classes[task]
        if len(named) == k:
            ordered = [named[c] for c in range(k)]
            probs[task] = _probabilities(table, ordered, path, kind).astype(np.float32)
            read.append(f"{_span(ordered)} ({task})")
            continue
        if k != 2:
            lacking = [space.classes[task][c] for c in range(k) if c not in named]
            raise EnsError(f"{path}: columns {', '.join(named.values())} hold some of {task}'s {k} classes; the file lacks {preview(lacking, 4)} (the submission's columns for every class, or --columns)")
        if kind is ImportKind.LOGITS:
            raise EnsError(f"{path}: column {', '.join(named.values())} is the submission's probability of one class; import it with --kind proba")
        (c, column), = named.items()
        p = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(p) | (p < 0) | (p > 1)
        if bad.any():
            raise EnsError(f"{path}: row {_row(path, bad)}: {column} {table[column].iloc[int(np.flatnonzero(bad)[0])]!r} is not a probability in [0, 1]")
        both = np.stack([1 - p, p] if c == 1 else [p, 1 - p], axis=1)
        probs[task] = both.astype(np.float32)
        read.append(f"{column} (p of {'' if len(space.tasks) == 1 else f'{task} '}{space.classes[task][c]})")
    return SharedTable(ids, None, probs, kind if kind is ImportKind.LOGITS else ImportKind.PROBA, ", ".join(read))


def _check_oof(project: Project, path: Path, train: pd.DataFrame, labelled: pd.DataFrame, key: str = "profile") -> dict[str, Any]:
    """What `import_source` can check of ``--oof`` train rows: the fold file exists and holds
    every person (`key`: ``profile``; a declared competition's ``group``) of the rows, and the
    rows cover whole people (a person's images are all out of fold or none is). Returns the
    fold file's record for the provenance."""
    from .dataset import read_folds

    one, many = ("person", "people") if key == "profile" else ("group", "groups")
    if not project.folds.is_file():
        raise EnsError(f"--oof: out of fold means for the team's fold file, and {project.folds} does not exist (run ens split, and train each fold's model on the others)")
    folds = read_folds(project.folds, train[key].to_numpy(object), one)
    people = labelled[key].unique()
    unknown_people = people[~np.isin(people, folds.index)]
    if len(unknown_people):
        raise EnsError(f"--oof: {len(unknown_people)} {one}(s) of {path} are not in {project.folds.name}: {preview(unknown_people)}")
    have = labelled.groupby(key).size()
    need = train[train[key].isin(people)].groupby(key).size()
    partial = need.index[need.reindex(have.index).to_numpy() != have.to_numpy()]
    if len(partial):
        first = partial[0]
        raise EnsError(
            f"{path}: --oof rows must cover whole {many} (every image of a {one} is predicted out of fold, or none): "
            f"{len(partial)} {one}(s) are partial, e.g. {first} ({have[first]} of {need[first]} images)"
        )
    return {"folds": project.folds.name, "folds_sha256": sha256_file(project.folds), many: int(len(people))}


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
    store = project.store
    if name in project.model_names:
        raise EnsError(f"{name!r} is a model in {project.zoo.name}; import under another name")
    if store.has(name) and not force:
        raise EnsError(f"source {name!r} exists ({store.root / name}); pick another name or use --force to replace it")
    data = project.require_data(declared=True)
    competition = project.competition
    shared = read_shared_csv(path, kind, task, columns, FileShape.of(competition))
    ids = shared.image_ids

    if competition.is_preset:
        eval_ids, fingerprint, eval_file = read_eval_ids(data), data_fingerprint(data), "info.csv"
        read_labelled_rows = lambda: read_train(data)  # noqa: E731  (labels as given: a stored set never carries a fix)
        train_place, train_hint = "under train/images", " (train rows use the path under train/images, e.g. 000001_female_Asian_45/mask1.jpg)"
    else:
        from . import declared

        eval_ids, fingerprint, eval_file = declared.read_sample(competition, data)[competition.eval.id].to_numpy(object), declared.fingerprint(competition, data), competition.eval.csv
        read_labelled_rows = lambda: declared.read_labelled(competition, data)  # noqa: E731
        train_place, train_hint = f"in {competition.train.csv or competition.train.folders + '/'}", ""
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
        "data": fingerprint,
    }

    def build(split: Split, order: np.ndarray, labels: np.ndarray | None) -> PredictionSet:
        import pandas as pd

        pos = pd.Index(ids).get_indexer(order)
        rows = {t: p[pos] for t, p in shared.probs.items()}
        joint = None if shared.joint is None else shared.joint[pos]
        return PredictionSet(name, split, order, rows, joint, labels, meta, store.space)

    if in_eval.any():
        missing, _ = id_mismatch(eval_ids, ids[in_eval])
        if len(missing):
            raise EnsError(
                f"{path}: ImageID sets differ from {eval_file}: {len(missing)} eval image(s) missing "
                f"({preview(missing)}); every eval image needs a row"
            )
        sets.append(build(Split.EVAL, eval_ids, None))
    if not in_eval.all():
        train = read_labelled_rows()
        in_train = pd.Index(ids).isin(train["ImageID"])
        extra = ids[~in_eval & ~in_train]
        if len(extra):
            raise EnsError(f"{path}: {len(extra)} ImageID(s) are neither in {eval_file} nor {train_place}: {preview(extra)}{train_hint}")
        labelled = train[train["ImageID"].isin(ids)]
        if oof:
            meta = {**meta, "origin": {**meta["origin"], "oof": _check_oof(project, path, train, labelled, "profile" if competition.is_preset else "group")}}
        sets.append(build(Split.OOF if oof else Split.VAL, labelled["ImageID"].to_numpy(object), labelled["label"].to_numpy()))
    elif oof:
        raise EnsError(f"{path}: --oof declares train rows out of fold, and the file has none (only eval rows)")

    stale = [s for s in store.splits(name) if s not in {new.split for new in sets}]
    written = [store.write(s, overwrite=force) for s in sets]
    for split in stale:  # a replaced source keeps no split of the old one (removed once the new is in)
        for suffix in (".json", ".csv"):
            (store.root / name / f"{split.value}{suffix}").unlink(missing_ok=True)
    return written
