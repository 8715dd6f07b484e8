"""`ens compose`: a recipe's vote on the eval images, written as a submission with its manifest.

Writes ``<submissions>/<name>.csv`` (``ImageID,ans``, rows in ``info.csv`` order) and
``<name>.json`` (recipe, method, voting mode, every input with its sha256, validation scores),
and keeps the composition as the source ``<name>`` so that later recipes can use it. Every
check runs before the first byte is written; no existing file is ever replaced.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from .dataset import EVAL_CSV, data_fingerprint, read_eval
from .errors import EnsError, preview, unknown
from .io import sha256_bytes, write_bytes, write_json
from .labels import N_JOINT, TASKS, encode
from .metrics import score
from .priors import correct, train_priors
from .project import Project
from .recipe import Recipe
from .learned import learn
from .report import aligned_sets, own_prediction, profile_of, shared_ids, validation_ids
from .store import PredictionSet, Split, Store, check_name, id_mismatch
from .voting import Composed, Method, combine


@dataclass(frozen=True)
class Submission:
    """What `compose_submission` wrote."""

    name: str
    csv: Path
    manifest: Path
    mode: str
    class_counts: dict[int, int]
    validation: dict[str, Any] | None
    priors: dict[str, Any] | None = None


def load_eval_sets(project: Project, store: Store, recipe: Recipe, eval_ids: np.ndarray) -> dict[str, PredictionSet]:
    """Each recipe source's eval set, rows in `eval_ids` order; any mismatch of ImageIDs is an error."""
    sets = {}
    for source in recipe.sources:
        if not store.has(source):
            if source in project.model_names:
                raise EnsError(f"model {source!r} has no predictions yet: run `ens predict --model {source} --split eval`")
            raise unknown("source", source, store.sources() + list(project.model_names))
        pset = store.require(source, Split.EVAL)
        missing, extra = id_mismatch(eval_ids, pset.image_ids)
        if len(missing) or len(extra):
            raise EnsError(
                f"source {source!r} and {EVAL_CSV} disagree: {len(missing)} ImageID(s) missing ({preview(missing)}), "
                f"{len(extra)} extra ({preview(extra)}); re-create the source for this data folder"
            )
        sets[source] = pset.take(eval_ids)
    return sets


def validate_submission(frame: pd.DataFrame, eval_ids: np.ndarray) -> None:
    """A submission is ``ImageID,ans``: every info.csv ImageID once, in order, ans in 0..17."""
    if list(frame.columns) != ["ImageID", "ans"]:
        raise EnsError(f"a submission has columns ImageID,ans, not {','.join(frame.columns)}")
    if len(frame) != len(eval_ids) or not np.array_equal(frame["ImageID"].to_numpy(object), eval_ids):
        raise EnsError(f"submission rows do not follow {EVAL_CSV} ({len(frame)} rows for {len(eval_ids)} images)")
    ans = frame["ans"].to_numpy()
    if not np.issubdtype(ans.dtype, np.integer) or ans.min() < 0 or ans.max() >= N_JOINT:
        raise EnsError(f"submission answers must be classes 0..{N_JOINT - 1}")


def _ensemble_set(name: str, split: Split, composed: Composed, labels: np.ndarray | None, meta: dict) -> PredictionSet:
    return PredictionSet(name, split, composed.image_ids, composed.probs, composed.joint, labels, meta)


def _labelled(store: Store, recipe: Recipe) -> tuple[dict[str, PredictionSet | None], list[str]]:
    """Each recipe source's labelled set (None when it has none), and the names lacking one."""
    labelled = {s: store.labelled(s) for s in recipe.sources}
    return labelled, [s for s, v in labelled.items() if v is None]


def _source_scores(aligned: Mapping[str, PredictionSet], labels: np.ndarray, pos: np.ndarray) -> dict[str, dict]:
    """Each source's own scores on the rows `pos` of `aligned`."""
    return {n: score(labels[pos], _take(own_prediction(s), pos)).as_dict() for n, s in aligned.items()}


def _validation(project: Project, store: Store, recipe: Recipe, method: Method, per_task: bool) -> tuple[dict[str, Any], Composed | None, np.ndarray | None]:
    """Validation scores of the recipe and its sources, and the recipe's vote on all shared labelled images."""
    labelled, lacking = _labelled(store, recipe)
    if lacking:
        return {"skipped": f"no labelled predictions for {', '.join(lacking)}"}, None, None
    ids = shared_ids(labelled)
    if not len(ids):
        return {"skipped": "the sources share no labelled image"}, None, None
    aligned, labels = aligned_sets(labelled, ids)
    composed = combine(recipe, aligned, method, per_task)
    val_ids, scope = validation_ids(project, ids)
    if not len(val_ids):
        return {"skipped": f"no shared labelled image in the validation fold ({scope})"}, composed, labels
    pos = pd.Index(ids).get_indexer(val_ids)
    return {
        "scope": scope,
        "images": int(len(val_ids)),
        "recipe": score(labels[pos], composed.labels[pos]).as_dict(),
        "sources": _source_scores(aligned, labels, pos),
    }, composed, labels


def guard_leakage(project: Project, sets: Mapping[str, PredictionSet]) -> None:
    """Refuse labelled predictions of a zoo model on people it trained on (outside its held-out fold)."""
    from .dataset import read_folds

    if not project.folds.is_file():
        return
    folds = read_folds(project.folds)
    for name, pset in sets.items():
        entry = next((m for m in project.models if m.name == name), None)
        if entry is None or entry.is_fold_group or entry.fold is None:
            continue
        outside = folds.reindex(profile_of(pset.image_ids)).to_numpy() != entry.fold
        if outside.any():
            raise EnsError(
                f"model {name!r} held out fold {entry.fold} only: {int(outside.sum())} of its labelled images are of "
                f"people in other folds, which it trained on; nothing can be fitted on them"
            )


def _learned(project: Project, store: Store, recipe: Recipe, eval_sets: Mapping[str, PredictionSet], method: Method, class_weight: str | None, all_tasks: bool) -> tuple[Composed, dict[str, Any], Composed, np.ndarray]:
    """Fit `method` on `recipe` (on all shared labelled images; scored out of fold on the validation ones)."""
    labelled, lacking = _labelled(store, recipe)
    if lacking:
        raise EnsError(
            f"--method {method} fits on labelled predictions; {', '.join(lacking)} has none "
            "(import its validation rows, or run ens predict --split val or oof)"
        )
    ids = shared_ids(labelled)
    aligned, labels = aligned_sets(labelled, ids)
    guard_leakage(project, aligned)
    val_ids, scope = validation_ids(project, ids)
    if not len(val_ids):
        raise EnsError(f"no shared labelled image to score --method {method} on ({scope})")
    composed, scored, cv, weights = learn(recipe, aligned, labels, eval_sets, method, class_weight, all_tasks, val_ids)
    pos = pd.Index(ids).get_indexer(scored.image_ids)
    validation = {
        "scope": scope + f"; {method} scored out of fold ({cv.folds} person-grouped folds)",
        "images": int(len(pos)),
        "recipe": score(labels[pos], scored.labels).as_dict(),
        "cv": {"folds": cv.folds, "f1_18_fold_mean": cv.fold_mean, "f1_18_fold_std": cv.fold_std},
        "weights": weights,
        "sources": _source_scores(aligned, labels, pos),
    }
    return composed, validation, scored, labels[pos]


def _take(prediction: np.ndarray | Mapping, pos: np.ndarray) -> np.ndarray | dict:
    return {t: v[pos] for t, v in prediction.items()} if isinstance(prediction, Mapping) else prediction[pos]


class Prior(StrEnum):
    """Prior correction of the eval posteriors: none, or EM-estimated eval priors per task."""

    NONE = "none"
    EM = "em"


def _correct_priors(data: Path, composed: Composed, composed_val: Composed | None) -> tuple[Composed, dict[str, Any]]:
    """`composed` re-weighted to the eval priors that EM estimates per task (see `priors`).

    The priors the posteriors stand for are their mean over the labelled images when the recipe
    has them (class-weighted training and TTA move a model's priors away from the label
    frequencies); else the train label frequencies of the data folder.
    """
    if composed_val is not None:
        implied = {t: p.mean(axis=0) / p.mean(axis=0).sum() for t, p in composed_val.probs.items()}
    else:
        from .dataset import read_train

        implied = train_priors(read_train(data)["label"].to_numpy())
    probs, joint, record = correct(composed.probs, implied, composed.joint)
    labels = joint.argmax(axis=1) if joint is not None else encode(*(probs[t].argmax(axis=1) for t in TASKS))
    return Composed(composed.image_ids, labels, probs, joint, composed.mode), record


def compose_submission(
    project: Project,
    recipe: Recipe,
    method: Method = Method.SOFT,
    name: str | None = None,
    per_task: bool = False,
    prior: Prior = Prior.NONE,
    class_weight: str | None = None,
    stack_all_tasks: bool = False,
) -> Submission:
    """Vote `recipe` on the eval images and write the submission, its manifest and the ensemble source.

    prior: ``em`` re-weights the eval posteriors to EM-estimated eval priors (train priors from
    the data folder); validation scores stay those of the plain vote, whose images follow train's mix.
    method ``stack`` fits per-task stackers (`ensembler.learned`; class_weight ``balanced`` and
    every task's probabilities as features, `stack_all_tasks`, as options) on the sources'
    labelled predictions; its validation scores are out of fold.
    """
    method, prior = Method(method), Prior(prior)
    if prior is not Prior.NONE and method is Method.HARD:
        raise EnsError("--prior em re-weights probabilities; a hard vote has none (use --method soft or geo)")
    name = check_name(name or time.strftime("sub-%Y%m%d-%H%M%S"))
    csv_path = project.submissions / f"{name}.csv"
    json_path = project.submissions / f"{name}.json"
    store = Store(project.predictions)
    for path in (csv_path, json_path):
        if path.exists():
            raise EnsError(f"{path} exists; submissions are never overwritten (choose another --name)")
    if store.has(name) or name in project.model_names:
        raise EnsError(f"source {name!r} exists; the composition is kept under its name (choose another --name)")

    data = project.require_data()
    eval_ids = read_eval(data)["ImageID"].to_numpy(object)
    sets = load_eval_sets(project, store, recipe, eval_ids)
    if method.learned:
        composed, validation, composed_val, val_labels = _learned(project, store, recipe, sets, method, class_weight, stack_all_tasks)
    else:
        composed = combine(recipe, sets, method, per_task)
        validation, composed_val, val_labels = _validation(project, store, recipe, method, per_task)
    priors = None
    if prior is Prior.EM:
        composed, priors = _correct_priors(data, composed, composed_val)

    frame = pd.DataFrame({"ImageID": eval_ids, "ans": composed.labels.astype(np.int64)})
    validate_submission(frame, eval_ids)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    body = buffer.getvalue().encode()
    counts = {int(k): int(v) for k, v in zip(*np.unique(composed.labels, return_counts=True))}
    inputs = {
        s: {
            "kind": p.kind,
            "eval_sha256": p.meta.get("csv_sha256"),
            "origin": p.meta.get("origin"),
            "weights": {str(t): term.weight for t, terms in recipe.tasks.items() for term in terms if term.source == s},
        }
        for s, p in sets.items()
    }
    manifest = {
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "recipe": str(recipe),
        "method": method.value,
        "voting": composed.mode,
        "prior": {"method": prior.value, "tasks": priors} if priors else None,
        "inputs": inputs,
        "data": data_fingerprint(data),
        "submission_sha256": sha256_bytes(body),
        "class_counts": counts,
        "validation": validation,
    }
    write_bytes(csv_path, body, overwrite=False)
    write_json(json_path, manifest, overwrite=False)

    origin = {"type": "ensemble", "recipe": str(recipe), "method": method.value, "voting": composed.mode, "prior": prior.value, "submission": csv_path.name}
    meta = {"kind": "hard" if method is Method.HARD else "proba", "origin": origin, "data": manifest["data"]}
    store.write(_ensemble_set(name, Split.EVAL, composed, None, meta))
    if composed_val is not None:
        store.write(_ensemble_set(name, Split.VAL, composed_val, val_labels, meta))
    return Submission(name, csv_path, json_path, composed.mode, counts, validation, priors)
