"""`ens import`: what teammates share, turned into prediction sets.

Accepted files (always joined on ImageID, never by row position):

- ``hard``: a submission ``ImageID,ans`` (ans a joint class 0..17) -> one-hot probabilities;
- ``proba``: ``ImageID,0,…,17`` rows of probabilities that sum to 1;
- ``logits``: the same columns, raw scores (softmax is applied);
- ``task``: a per-task label file, ``ImageID,ans`` with the task's label (needs ``task``).
  ``proba`` / ``logits`` with a ``task`` read that task's columns ``0..k-1`` instead of 18.

Rows are eval images (ImageID as in ``info.csv``) and/or train images (ImageID = the path under
``train/images/``). Eval rows must cover ``info.csv`` exactly; train rows become the source's
``val`` set, labelled from the data folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import EnsError, preview
from .dataset import data_fingerprint, read_eval, read_table, read_train
from .io import sha256_file
from .labels import N_CLASSES, N_JOINT, Task, one_hot
from .project import Project
from .store import PredictionSet, Split, Store, check_name, id_mismatch

SUM_TOLERANCE = 1e-3  # float32 probabilities written with few digits still sum to 1 within this


class ImportKind(StrEnum):
    HARD = "hard"
    PROBA = "proba"
    LOGITS = "logits"
    TASK = "task"


def _row(path: Path, mask: np.ndarray) -> int:
    """1-based line number in the file of the first True in `mask` (the header is line 1)."""
    return int(np.flatnonzero(mask)[0]) + 2


def guess_kind(columns: list[str], task: Task | None) -> ImportKind:
    """``ans`` column -> hard (task with `task`); numbered columns -> proba."""
    if "ans" in columns:
        return ImportKind.TASK if task is not None else ImportKind.HARD
    return ImportKind.PROBA


def _labels(table: pd.DataFrame, path: Path, n_classes: int) -> np.ndarray:
    values = pd.to_numeric(table["ans"], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values >= n_classes)
    if bad.any():
        i = _row(path, bad) - 2
        raise EnsError(f"{path}: row {i + 2}: ans {table['ans'][i]!r} is not a class in 0..{n_classes - 1}")
    return values.astype(np.int64)


def _probabilities(table: pd.DataFrame, path: Path, n_classes: int, kind: ImportKind) -> np.ndarray:
    columns = [str(k) for k in range(n_classes)]
    missing = [c for c in columns if c not in table.columns]
    extra = [c for c in table.columns if c not in columns and c != "ImageID"]
    if missing or extra:
        raise EnsError(
            f"{path}: a {kind.value} file has columns ImageID,{','.join(columns)}; "
            f"missing {preview(missing) or 'none'}, unexpected {preview(extra) or 'none'}"
        )
    values = table[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
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
            "(if these are raw scores, import with --kind logits)"
        )
    return values / values.sum(axis=1, keepdims=True)


def read_shared_csv(path: Path, kind: ImportKind | None = None, task: Task | None = None) -> tuple[np.ndarray, np.ndarray, ImportKind]:
    """Parse a teammate's CSV: ImageIDs ``(n,)`` and probabilities ``(n, 18)`` or ``(n, k_task)``."""
    path = Path(path)
    if not path.is_file():
        raise EnsError(f"{path}: file not found")
    table = read_table(path, ("ImageID",))
    if not len(table):
        raise EnsError(f"{path}: no rows")
    kind = ImportKind(kind) if kind is not None else guess_kind(list(table.columns), task)
    if kind is ImportKind.TASK and task is None:
        raise EnsError(f"{path}: --kind task needs --task mask|gender|age")
    n_classes = N_CLASSES[task] if task is not None else N_JOINT
    dupes = table["ImageID"].duplicated().to_numpy()
    if dupes.any():
        raise EnsError(f"{path}: row {_row(path, dupes)}: ImageID {table['ImageID'][dupes].iloc[0]!r} appears twice")
    if kind in (ImportKind.HARD, ImportKind.TASK):
        if "ans" not in table.columns:
            raise EnsError(f"{path}: a {kind.value} file has columns ImageID,ans")
        probs = one_hot(_labels(table, path, n_classes), n_classes)
    else:
        probs = _probabilities(table, path, n_classes, kind)
    return table["ImageID"].to_numpy(object), probs.astype(np.float32), kind


def import_source(
    project: Project,
    path: Path,
    name: str,
    kind: ImportKind | None = None,
    task: Task | None = None,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Turn a shared CSV into the source `name`: an eval set and/or a labelled ``val`` set.

    Returns the provenance of each set written. Nothing is written when any check fails.
    """
    check_name(name)
    store = Store(project.predictions)
    if name in project.model_names:
        raise EnsError(f"{name!r} is a model in {project.zoo.name}; import under another name")
    if store.has(name) and not force:
        raise EnsError(f"source {name!r} exists ({store.root / name}); pick another name or use --force to replace it")
    data = project.require_data()
    ids, probs, kind = read_shared_csv(path, kind, task)

    eval_ids = read_eval(data)["ImageID"].to_numpy(object)
    in_eval = pd.Index(ids).isin(eval_ids)
    sets: list[PredictionSet] = []
    meta: dict[str, Any] = {
        "kind": "hard" if kind in (ImportKind.HARD, ImportKind.TASK) else "proba",
        "origin": {"type": "import", "file": str(Path(path).absolute()), "sha256": sha256_file(path), "format": kind.value},
        "data": data_fingerprint(data),
    }

    def build(split: Split, order: np.ndarray, labels: np.ndarray | None) -> PredictionSet:
        pos = pd.Index(ids).get_indexer(order)
        rows: Mapping[Task, np.ndarray] = {task: probs[pos]} if task is not None else {}
        joint = probs[pos] if task is None else None
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
        train = read_train(data)
        in_train = pd.Index(ids).isin(train["ImageID"])
        extra = ids[~in_eval & ~in_train]
        if len(extra):
            raise EnsError(
                f"{path}: {len(extra)} ImageID(s) are neither in info.csv nor under train/images: "
                f"{preview(extra)} (train rows use the path under train/images, e.g. 000001_female_Asian_45/mask1.jpg)"
            )
        labelled = train[train["ImageID"].isin(ids)]
        sets.append(build(Split.VAL, labelled["ImageID"].to_numpy(object), labelled["label"].to_numpy()))

    stale = [s for s in store.splits(name) if s not in {new.split for new in sets}]
    written = [store.write(s, overwrite=force) for s in sets]
    for split in stale:  # a replaced source keeps no split of the old one (removed once the new is in)
        for suffix in (".json", ".csv"):
            (store.root / name / f"{split.value}{suffix}").unlink(missing_ok=True)
    return written
