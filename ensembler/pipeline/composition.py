"""`ens compose`: a recipe's vote on the eval images, written as a submission with its manifest.

Writes ``<submissions>/<name>.csv`` (``ImageID,ans``, rows in ``info.csv`` order) and
``<name>.json`` (recipe, method, voting mode, every input with its sha256, validation scores),
and keeps the composition as the source ``<name>`` so that later recipes can use it. Every
check runs before the first byte is written; no existing file is ever replaced.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..data.dataset import EVAL_CSV, data_fingerprint, read_eval_ids
from ..data.io import sha256_bytes, write_bytes, write_json
from ..data.labels import CLASS_NAMES, N_JOINT, TASKS, Task, decode
from ..data.people import profile_of
from ..data.project import Project
from ..data.store import LABELLED_SPLITS, PredictionSet, Split, Store, check_name, id_mismatch, kind_of
from ..errors import EnsError, preview, unknown
from ..scoring.metrics import own_prediction, score
from .learned import apply_offsets, learn, tune_f1
from .persons import decode_step, groups_paths
from .priors import PriorSpec, correct_shift, parse_priors, train_priors
from .recipe import Recipe, Term, complete_recipe
from .scope import aligned_sets, out_of_fold, shared_ids, validation_ids
from .voting import Composed, Method, Tie, combine

if TYPE_CHECKING:  # pandas is imported where it is used: compose and report start faster
    import pandas as pd


@dataclass(frozen=True, eq=False)
class Composition:
    """A composition in memory (`compose`): nothing is written until `write_composition`.

    submission: ``ImageID,ans`` rows in ``info.csv`` order (checked). manifest: what
    ``<name>.json`` holds (recipe, method, inputs and their sha256, validation scores, …).
    eval / val: the composed probabilities on eval and on the labelled images (None when the
    recipe has none), `val_labels` their true classes ``(n_val,)``, `val_split` what those are:
    ``oof`` when every source predicts them out of fold (a vote of out-of-fold sources is out of
    fold, and a learned composition keeps its cross-fitted rows), else ``val``.
    """

    name: str
    manifest: dict[str, Any]
    recipe: Recipe
    eval: Composed
    val: Composed | None
    val_labels: np.ndarray | None
    source_meta: dict[str, Any]
    files: tuple[Path, Path] | None = None  # the CSV and JSON, once written
    val_split: Split = Split.VAL

    @property
    def submission(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"ImageID": self.eval.image_ids, "ans": self.eval.labels.astype(np.int64)})

    def csv_bytes(self) -> bytes:
        """The submission file's content (``ImageID,ans``, rows in ``info.csv`` order); as
        ``DataFrame.to_csv`` writes it, quoting an ImageID that needs it."""
        ids = [str(i) for i in self.eval.image_ids]
        if any(c in i for i in ids for c in ',"\n\r'):
            return self.submission.to_csv(index=False).encode()
        lines = [f"{i},{a}" for i, a in zip(ids, self.eval.labels.tolist())]
        return ("\n".join(["ImageID,ans", *lines]) + "\n").encode()

    @property
    def validation(self) -> dict[str, Any]:
        return self.manifest["validation"]


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
    recipe: Recipe | None = None
    tie: str | None = None  # a hard vote's tie rule
    warnings: list[str] = field(default_factory=list)
    by_person: dict[str, Any] | None = None  # the person decoding's record (compose by_person)


def load_eval_sets(project: Project, store: Store, recipe: Recipe, eval_ids: np.ndarray) -> dict[str, PredictionSet]:
    """Each recipe source's eval set, rows in `eval_ids` order; any mismatch of ImageIDs is an error."""
    sets = {}
    for source in recipe.sources:
        if not store.has(source):
            if source in project.model_names:
                raise EnsError(f"model {source!r} has no predictions yet: run `ens predict --model {source} --split eval`")
            raise unknown("source", source, store.sources() + list(project.model_names))
        pset = store.require(source, Split.EVAL)
        if len(pset.image_ids) == len(eval_ids) and (pset.image_ids == eval_ids).all():
            sets[source] = pset  # already in info.csv order (as every set ens writes): no re-indexing
            continue
        missing, extra = id_mismatch(eval_ids, pset.image_ids)
        if len(missing) or len(extra):
            raise EnsError(
                f"source {source!r} and {EVAL_CSV} disagree: {len(missing)} ImageID(s) missing ({preview(missing)}), "
                f"{len(extra)} extra ({preview(extra)}); re-create the source for this data folder"
            )
        sets[source] = pset.take(eval_ids)
    return sets


def one_class_warnings(composed: Composed, val_labels: np.ndarray | None) -> list[str]:
    """A line for each task whose eval decisions are all one class (when the labelled images,
    or simply the task, have more): a submission like that is almost surely broken."""
    decided = decode(composed.labels)
    truth = decode(val_labels) if val_labels is not None and len(val_labels) else None
    out = []
    for task in TASKS:
        classes = np.unique(decided[task])
        if len(classes) == 1 and len(decided[task]) > 1 and (truth is None or len(np.unique(truth[task])) > 1):
            name = CLASS_NAMES[task][int(classes[0])]
            out.append(f"every eval image is called {task} {name!r}: check the sources and any prior correction before submitting")
    return out


def validate_submission(image_ids: np.ndarray, labels: np.ndarray, eval_ids: np.ndarray) -> None:
    """A submission answers every info.csv ImageID once, in order, with a class in 0..17."""
    if len(image_ids) != len(eval_ids) or not np.array_equal(np.asarray(image_ids, dtype=object), eval_ids):
        raise EnsError(f"submission rows do not follow {EVAL_CSV} ({len(image_ids)} rows for {len(eval_ids)} images)")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= N_JOINT:
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


def _evidence(aligned: Mapping[str, PredictionSet], labels: np.ndarray, pos: np.ndarray, decided: np.ndarray) -> dict[str, Any]:
    """How sure the recipe's score on the rows `pos` is (`scoring.evidence`): its 90 % person-
    bootstrap interval and, when a source predicts all three tasks, the paired interval of its
    gain over the best such source and the share of resamples in which it is positive."""
    from ..data.labels import split_prediction
    from ..data.people import person_codes
    from ..scoring.evidence import bootstrap

    ids = next(iter(aligned.values())).image_ids[pos]
    singles = {n: split_prediction(_take(own_prediction(s), pos))[1] for n, s in aligned.items()}
    singles = {n: p for n, p in singles.items() if p is not None}
    rows = np.stack([decided, *singles.values()])
    f1 = [score(labels[pos], p).f1_18 for p in rows[1:]]
    best = 1 + int(np.argmax(f1)) if f1 else None
    found = bootstrap(labels[pos], rows, person_codes(ids), best)
    out: dict[str, Any] = {"f1_18_interval": [round(float(found.low[0]), 4), round(float(found.high[0]), 4)], "people": found.people, "replicates": found.replicates}
    if best is not None:
        out["gain"] = {
            "over": list(singles)[best - 1],
            "f1_18": round(float(found.f1[0] - found.f1[best]), 4),
            "interval": [round(float(found.gain_low[0]), 4), round(float(found.gain_high[0]), 4)],
            "positive": round(float(found.positive[0]), 3),
        }
    return out


def _validation(project: Project, store: Store, recipe: Recipe, method: Method, per_task: bool, tie: Tie) -> tuple[dict[str, Any], Composed | None, np.ndarray | None, np.ndarray]:
    """Validation scores of the recipe and its sources, the recipe's vote on all shared labelled
    images and their labels, and the ImageIDs scored (`validation_ids`)."""
    labelled, lacking = _labelled(store, recipe)
    none = np.array([], dtype=object)
    if lacking:
        return {"skipped": f"no labelled predictions for {', '.join(lacking)}"}, None, None, none
    ids = shared_ids(labelled)
    if not len(ids):
        return {"skipped": "the sources share no labelled image"}, None, None, none
    aligned, labels = aligned_sets(labelled, ids)
    composed = combine(recipe, aligned, method, per_task, tie)
    val_ids, scope = validation_ids(project, ids, out_of_fold(labelled))
    if not len(val_ids):
        return {"skipped": f"no shared labelled image in the validation fold ({scope})"}, composed, labels, val_ids
    import pandas as pd

    pos = pd.Index(ids).get_indexer(val_ids)
    return {
        "scope": scope,
        "images": int(len(val_ids)),
        "recipe": score(labels[pos], composed.labels[pos]).as_dict(),
        "evidence": _evidence(aligned, labels, pos, composed.labels[pos]),
        "sources": _source_scores(aligned, labels, pos),
    }, composed, labels, val_ids


def guard_leakage(project: Project, sets: Mapping[str, PredictionSet]) -> None:
    """Refuse labelled predictions of a zoo model on people it trained on (outside its held-out fold)."""
    from ..data.dataset import read_folds

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


def _learned(project: Project, store: Store, recipe: Recipe, eval_sets: Mapping[str, PredictionSet], method: Method, class_weight: str | None, all_tasks: bool) -> tuple[Composed, dict[str, Any], Composed, np.ndarray, Composed]:
    """Fit `method` on `recipe` (on all shared labelled images; scored out of fold on the validation ones).

    Returns the eval composition, the validation record, what a later step must be fitted on
    (for auto the chosen candidates' own out-of-fold predictions), their labels, and the scored
    out-of-fold composition (for auto with its choice made inside the loop: what is honest to
    keep and report)."""
    import pandas as pd

    labelled, lacking = _labelled(store, recipe)
    if lacking:
        raise EnsError(
            f"--method {method} fits on labelled predictions; {', '.join(lacking)} has none "
            "(import its validation rows, or run ens predict --split val or oof)"
        )
    ids = shared_ids(labelled)
    aligned, labels = aligned_sets(labelled, ids)
    guard_leakage(project, aligned)
    val_ids, scope = validation_ids(project, ids, out_of_fold(labelled))
    if not len(val_ids):
        raise EnsError(f"no shared labelled image to score --method {method} on ({scope})")
    composed, scored, cv, details = learn(recipe, aligned, labels, eval_sets, method, class_weight, all_tasks, val_ids)
    consistent = (details or {}).pop("consistent", scored)  # auto: the chosen candidates' own out-of-fold predictions
    pos = pd.Index(ids).get_indexer(scored.image_ids)
    validation = {
        "scope": scope + f"; {method} scored out of fold ({cv.folds} person-grouped folds)",
        "images": int(len(pos)),
        "recipe": score(labels[pos], scored.labels).as_dict(),
        "cv": {"folds": cv.folds, "f1_18_fold_mean": cv.fold_mean, "f1_18_fold_std": cv.fold_std},
        "evidence": _evidence(aligned, labels, pos, scored.labels),
        **(details or {}),
        "sources": _source_scores(aligned, labels, pos),
    }
    return composed, validation, consistent, labels[pos], scored


def _take(prediction: np.ndarray | Mapping, pos: np.ndarray) -> np.ndarray | dict:
    return {t: v[pos] for t, v in prediction.items()} if isinstance(prediction, Mapping) else prediction[pos]


def _correct_priors(data: Path, composed: Composed, composed_val: Composed | None, val_labels: np.ndarray | None, spec: PriorSpec, calibrate: str, force: bool) -> tuple[Composed, dict[str, Any]]:
    """`composed` re-weighted to the eval priors of `spec` when that is shown to help on the
    labelled composition (`priors.correct_shift`); without one, against the data folder's
    train mix, unchecked."""
    labelled = None
    fallback = None
    if composed_val is not None and val_labels is not None:
        labelled = (composed_val.probs, composed_val.joint, val_labels, composed_val.image_ids)
    else:
        from ..data.dataset import read_train

        fallback = train_priors(read_train(data)["label"].to_numpy())
    probs, joint, record = correct_shift(composed.probs, composed.joint, spec, labelled, fallback, calibrate, force)
    if not record["applied"]:
        return composed, record
    return Composed.decided(composed.image_ids, probs, joint, composed.mode), record


def _scoped(composed_val: Composed, val_labels: np.ndarray, val_ids: np.ndarray) -> tuple[Composed, np.ndarray]:
    """The labelled composition restricted to the images its validation is scored on (`val_ids`)."""
    import pandas as pd

    rows = pd.Index(composed_val.image_ids).get_indexer(val_ids)
    return composed_val.take(rows), val_labels[rows]


def _tune(validation: dict[str, Any], composed_val: Composed | None, val_labels: np.ndarray | None, val_ids: np.ndarray) -> tuple[Any, Composed, np.ndarray]:
    """F1 tuning on the recipe's labelled composition, restricted to the scored images (`_scoped`)."""
    if composed_val is None or val_labels is None:
        raise EnsError(f"--tune-f1 tunes on labelled predictions; the recipe has none ({validation.get('skipped', 'no labelled images')})")
    if not len(val_ids):
        raise EnsError(f"--tune-f1: no labelled image of the recipe to tune on ({validation.get('skipped')})")
    scoped, labels = _scoped(composed_val, val_labels, val_ids)
    tuned = tune_f1(scoped, labels)
    validation["tune_f1"] = tuned.as_dict()
    if "recipe" in validation:  # the submission's score is the tuned one, out of fold
        validation["recipe"] = score(labels, tuned.scored.labels).as_dict()
        validation.pop("evidence", None)  # the intervals were the untuned composition's
    return tuned, tuned.scored, labels


def library_recipe(project: Project) -> Recipe:
    """A learned method (stack, select, auto) without a recipe: per task, every model or import that predicts it on eval and on labelled images."""
    store = Store(project.predictions)
    tasks: dict = {t: [] for t in TASKS}
    for name in store.sources():  # from the sets' metadata: no prediction CSV is read here
        if not store.has(name, Split.EVAL) or not any(store.has(name, split) for split in LABELLED_SPLITS):
            continue
        meta = store.read_meta(name, Split.EVAL)
        if kind_of(meta) == "ensemble":
            continue
        for task in meta["tasks"]:
            tasks[Task(task)].append(Term(name))
    missing = [str(t) for t, terms in tasks.items() if not terms]
    if missing:
        raise EnsError(f"no source predicts {', '.join(missing)} on both eval and labelled images (run ens predict --split eval and --split val, or import both)")
    return Recipe({t: tuple(terms) for t, terms in tasks.items()})


def _check_free(project: Project, store: Store, name: str) -> tuple[Path, Path]:
    """The submission's two paths; an error when they, or the source `name`, exist."""
    csv_path, json_path = project.submissions / f"{name}.csv", project.submissions / f"{name}.json"
    for path in (csv_path, json_path):
        if path.exists():
            raise EnsError(f"{path} exists; submissions are never overwritten (choose another --name)")
    if store.has(name) or name in project.model_names:
        raise EnsError(f"source {name!r} exists; the composition is kept under its name (choose another --name)")
    return csv_path, json_path


def compose(
    project: Project,
    recipe: Recipe | None,
    method: Method = Method.SOFT,
    name: str | None = None,
    per_task: bool = False,
    prior: PriorSpec | str | Sequence[str] = PriorSpec(),
    class_weight: str | None = None,
    stack_all_tasks: bool = False,
    tune: bool = False,
    tie: Tie | str | None = None,
    calibrate: str = "auto",
    force_prior: bool = False,
    by_person: bool = False,
    force_by_person: bool = False,
) -> Composition:
    """Compose `recipe` on the eval images, in memory (`write_composition` saves it).

    method: a vote (soft, hard, geo), or a composition learned on the sources' labelled
    predictions and scored out of fold (`ensembler.pipeline.learned`): stack (class_weight ``balanced``
    and every task's probabilities as features, `stack_all_tasks`, as options), select, or auto
    (per task the best candidate by cross-validated F1); with no recipe, the learned methods take
    every model and import with eval and labelled predictions (`library_recipe`).
    A task the recipe does not name takes the recipe's sources that predict it (`complete_recipe`).
    prior: re-weight the eval posteriors to given or EM-estimated eval priors (`priors.PriorSpec`,
    or its text: ``"em"``, ``"age:0.3,0.5,0.2 em"``); validation scores stay those on labelled
    images, whose mix is train's.
    tune: per-class offsets tuned on the labelled composition for macro F1 (`learned.tune_f1`),
    applied last; the validation score is then the tuned one, out of fold.
    tie: a hard vote's tie rule (`voting.Tie`: mass, the default; lower; first), recorded in the
    manifest; an error with any other method.
    calibrate: the calibrator fitted on the labelled composition before prior estimation
    (`calibration.Calibrator`; auto: the best by out-of-fold log-loss). force_prior: apply the
    prior correction even where the labelled check says it does not help.
    by_person: decode each person once with ``groups/eval.csv`` (`persons.decode_by_person`),
    applied last and only where the labelled images, decoded with ``groups/train.csv``, show a
    gain beyond the noise (`force_by_person` insists); the validation score is then the decoded one.
    Auto tries it by itself when both grouping files exist (the same check decides).
    """

    method = Method(method)
    if tie is not None and method is not Method.HARD:
        raise EnsError(f"--tie breaks the ties of a hard vote; --method {method} has none (use --method hard)")
    tie = Tie(tie or Tie.MASS)
    spec = prior if isinstance(prior, PriorSpec) else parse_priors(prior)
    if method is Method.HARD and (spec.active or tune):
        raise EnsError(f"--{'prior' if spec.active else 'tune-f1'} re-weights probabilities; a hard vote has none (use --method soft or geo)")
    if recipe is None:
        if not method.learned:
            raise EnsError(f"--method {method} needs a recipe (--recipe TASK:SOURCE …); stack, select and auto take every source by default")
        recipe = library_recipe(project)
    recipe = complete_recipe(recipe, project.coverage())
    name = check_name(name or time.strftime("sub-%Y%m%d-%H%M%S"))
    store = Store(project.predictions)

    data = project.require_data()
    eval_ids = read_eval_ids(data)
    sets = load_eval_sets(project, store, recipe, eval_ids)
    if method.learned:
        composed, validation, composed_val, val_labels, kept_val = _learned(project, store, recipe, sets, method, class_weight, stack_all_tasks)
        val_ids = kept_val.image_ids
    else:
        composed = combine(recipe, sets, method, per_task, tie)
        validation, composed_val, val_labels, val_ids = _validation(project, store, recipe, method, per_task, tie)
        kept_val = composed_val
    kept_labels = val_labels  # the labelled composition kept as the source's val set: the honest one, unless a step below replaces it
    priors = None
    if spec.active:
        composed, priors = _correct_priors(data, composed, composed_val, val_labels, spec, calibrate, force_prior)
    if tune:
        tuned, composed_val, val_labels = _tune(validation, composed_val, val_labels, val_ids)
        composed = apply_offsets(composed, tuned.offsets)
        kept_val, kept_labels = composed_val, val_labels
    persons = None
    implicit = method is Method.AUTO and not (by_person or force_by_person)  # auto tries decoding by person where the team grouped its images
    if implicit:
        by_person = all(groups_paths(project.root, split)[0].is_file() for split in ("eval", "train"))
    if by_person or force_by_person:
        scoped_val, scoped_labels = composed_val, val_labels
        if composed_val is not None and val_labels is not None:
            scoped_val, scoped_labels = _scoped(composed_val, val_labels, val_ids)
        try:
            composed, decided_val, persons = decode_step(project, composed, scoped_val, scoped_labels, force_by_person)
        except EnsError as exc:
            if not implicit:
                raise
            decided_val, persons = scoped_val, {"applied": False, "reason": f"auto did not try it: {exc}"}  # asked for nothing: say why, go on
        if persons["applied"]:
            composed_val, val_labels = decided_val, scoped_labels
        if persons["applied"] and "check" in persons and "recipe" in validation:
            validation["recipe"] = score(val_labels, composed_val.labels).as_dict()  # what is submitted: decided by person
            validation.pop("evidence", None)
            kept_val, kept_labels = composed_val, val_labels

    validate_submission(composed.image_ids, composed.labels, eval_ids)
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
        "unnamed_tasks": {str(task): line for task, line in recipe.filled.items()},
        "method": method.value,
        "voting": composed.mode,
        "tie": tie.value if method is Method.HARD else None,
        "prior": priors,
        "by_person": persons,
        "warnings": one_class_warnings(composed, val_labels),
        "inputs": inputs,
        "data": data_fingerprint(data),
        "submission_sha256": None,  # set below, from the file's bytes
        "class_counts": counts,
        "validation": validation,
    }
    origin = {"type": "ensemble", "recipe": str(recipe), "method": method.value, "voting": composed.mode, "tie": manifest["tie"], "prior": str(spec), "tune_f1": tune, "submission": f"{name}.csv"}
    meta = {"kind": "hard" if method is Method.HARD else "proba", "origin": origin, "data": manifest["data"]}
    # the labelled rows kept are out of fold exactly when every source's are (the scope `validation_ids` scored)
    oof = project.folds.is_file() and all(store.has(s, Split.OOF) for s in recipe.sources)
    val_split = Split.OOF if oof else Split.VAL
    composition = Composition(name, manifest, recipe, composed, kept_val, kept_labels, meta, val_split=val_split)
    manifest["submission_sha256"] = sha256_bytes(composition.csv_bytes())
    return composition


def write_composition(project: Project, composition: Composition) -> Submission:
    """Write ``<submissions>/<name>.csv`` and ``.json`` and keep the composition as the source
    `name` (eval, and val when it has labelled images). Never overwrites: an existing file or
    source of that name is an error, and nothing is written."""
    store = Store(project.predictions)
    name, manifest = composition.name, composition.manifest
    csv_path, json_path = _check_free(project, store, name)
    write_bytes(csv_path, composition.csv_bytes(), overwrite=False)
    write_json(json_path, manifest, overwrite=False)
    store.write(_ensemble_set(name, Split.EVAL, composition.eval, None, composition.source_meta))
    if composition.val is not None:
        store.write(_ensemble_set(name, composition.val_split, composition.val, composition.val_labels, composition.source_meta))
    return Submission(
        name, csv_path, json_path, composition.eval.mode, manifest["class_counts"], manifest["validation"], manifest["prior"], composition.recipe, manifest["tie"], manifest["warnings"],
        manifest["by_person"],
    )


def compose_submission(project: Project, recipe: Recipe | None, method: Method = Method.SOFT, name: str | None = None, **options: Any) -> Submission:
    """`compose` and `write_composition` in one (what `ens compose` runs): the name is checked
    free before anything is composed. `options`: those of `compose`."""
    name = check_name(name or time.strftime("sub-%Y%m%d-%H%M%S"))
    _check_free(project, Store(project.predictions), name)
    return write_composition(project, compose(project, recipe, method, name, **options))
