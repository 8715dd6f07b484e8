"""`ens compose`: a recipe composed by a pipeline of steps, written as a submission with its manifest.

`compose` runs a `Pipeline` (`engine`: a combining step, then steps that refine the
composition) on the recipe's sources: fitted on their labelled predictions (`scope`), applied
to eval, scored out of fold. `write_composition` writes ``<submissions>/<name>.csv``
(``ImageID,ans``, rows in ``info.csv`` order) and ``<name>.json`` (recipe, the steps with their
fitted parameters, every input with its sha256, validation scores), and keeps the composition
as the source ``<name>`` so that later recipes can use it (out of fold when its labelled rows
are). Every check runs before the first byte is written; no existing file is ever replaced.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..data.dataset import EVAL_CSV, data_fingerprint, read_eval_ids
from ..data.io import sha256_bytes, write_bytes, write_json
from ..data.labels import split_prediction
from ..data.project import Project
from ..data.store import LABELLED_SPLITS, PredictionSet, Split, Store, check_name, id_mismatch, kind_of
from ..errors import EnsError, preview, unknown
from ..scoring.metrics import competition_score, own_prediction, score
from .engine import Composed, Context, Pipeline, Run, Words, run
from .recipe import Recipe, Term, complete_recipe
from .scope import Labelled, declared_groups, guard_leakage, labelled_scope
from .steps import pipeline_of

if TYPE_CHECKING:  # pandas is imported where it is used: compose and report start faster
    import pandas as pd

    from ..data.competition import Competition

    from .steps import Step

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
    answer: bytes | None = None  # a declared competition's submission (its sample, filled)
    pipeline: Pipeline | None = None  # the steps that made it (their records are the manifest's `steps`)
    words: Words = Words()  # how its competition's scores are named

    def step(self, name: str) -> dict[str, Any] | None:
        """The manifest's record of the step called `name` (config, fitted parameters,
        evidence), or None: ``composition.step("priors")["prior"]["applied"]``."""
        return step_record(self.manifest["steps"], name)

    def lines(self) -> list[str]:
        """How it was composed, as `ens compose` prints it: the combining step's headline, then
        each step's own lines from its record (`engine.Step.summary`)."""
        if self.pipeline is None:
            return []
        records = self.manifest["steps"]
        head = self.pipeline.combine.headline(self.eval.mode, records[0], self.words)
        return [head, *(line for step, record in zip(self.pipeline.steps, records) for line in step.summary(record, self.words))]

    @property
    def submission(self) -> pd.DataFrame:
        """``ImageID,ans`` (a declared competition's: its sample submission, filled)."""
        import pandas as pd

        if self.answer is not None:
            import io

            return pd.read_csv(io.BytesIO(self.answer), dtype=str, keep_default_na=False)
        return pd.DataFrame({"ImageID": self.eval.image_ids, "ans": self.eval.labels.astype(np.int64)})

    def csv_bytes(self) -> bytes:
        """The submission file's content (``ImageID,ans``, rows in ``info.csv`` order); as
        ``DataFrame.to_csv`` writes it, quoting an ImageID that needs it. A declared
        competition's: its sample submission with the answer filled, matched by id."""
        if self.answer is not None:
            return self.answer
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
    recipe: Recipe | None = None
    warnings: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)  # the manifest's steps, with their fitted parameters
    lines: list[str] = field(default_factory=list)  # how it was composed, step by step (`Composition.lines`): the headline first

    def step(self, name: str) -> dict[str, Any] | None:
        """The record of the step called `name` (`Composition.step`), or None."""
        return step_record(self.steps, name)


def step_record(records: Sequence[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The record of the step called `name` among a manifest's `records`, or None (for a
    notebook or a script: `ens` itself never reads a step's record by name)."""
    return next((r for r in records if r["step"] == name), None)


def load_eval_sets(project: Project, store: Store, recipe: Recipe, eval_ids: np.ndarray, where: str = EVAL_CSV) -> dict[str, PredictionSet]:
    """Each recipe source's eval set, rows in `eval_ids` order (those of `where`); any mismatch of ImageIDs is an error."""
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
                f"source {source!r} and {where} disagree: {len(missing)} ImageID(s) missing ({preview(missing)}), "
                f"{len(extra)} extra ({preview(extra)}); re-create the source for this data folder"
            )
        sets[source] = pset.take(eval_ids)
    return sets


@dataclass(frozen=True)
class EvalImages:
    """The eval images a submission answers: their ImageIDs ``(n,)`` in the file's order, the
    file (``info.csv``, or a declared competition's sample submission, which is `sample`), and
    the data fingerprint a manifest records."""

    ids: np.ndarray
    file: str | Path
    fingerprint: dict[str, str]
    sample: pd.DataFrame | None = None


def eval_images(project: Project) -> EvalImages:
    """The project's eval images (`EvalImages`): ``info.csv``'s, or a declared competition's
    sample submission's."""
    data = project.require_data(declared=True)
    competition = project.competition
    if competition.is_preset:
        return EvalImages(read_eval_ids(data), EVAL_CSV, data_fingerprint(data))
    from ..data import declared

    sample = declared.read_sample(competition, data)
    return EvalImages(sample[competition.eval.id].to_numpy(object), competition.eval.csv, declared.fingerprint(competition, data), sample)


def eval_target(project: Project, recipe: Recipe) -> tuple[dict[str, PredictionSet] | None, str | None]:
    """The recipe's sources on the eval images (`load_eval_sets`), what a step that looks at
    eval sees (auto's eval mix and run-away guard), or None and why not: a report scores a
    recipe as `compose` does wherever its sources have eval predictions."""
    store = project.store
    lacking = [s for s in recipe.sources if not store.has(s, Split.EVAL)]
    if lacking:
        return None, f"{preview(lacking, 4)} ha{'s' if len(lacking) == 1 else 've'} no eval predictions: {recipe} is scored without them (auto's eval-mix weighting and run-away check are off; compose needs them)"
    images = eval_images(project)
    return load_eval_sets(project, store, recipe, images.ids, images.file), None


def one_class_warnings(composed: Composed, val_labels: np.ndarray | None) -> list[str]:
    """A line for each task whose eval decisions are all one class (when the labelled images,
    or simply the task, have more): a submission like that is almost surely broken."""
    space = composed.space
    decided = space.decode(composed.labels)
    truth = space.decode(val_labels) if val_labels is not None and len(val_labels) else None
    out = []
    for task in space.tasks:
        classes = np.unique(decided[task])
        if len(classes) == 1 and len(decided[task]) > 1 and (truth is None or len(np.unique(truth[task])) > 1):
            name = space.classes[task][int(classes[0])]
            out.append(f"every eval image is called {task} {name!r}: check the sources and any prior correction before submitting")
    return out


def validate_submission(image_ids: np.ndarray, labels: np.ndarray, eval_ids: np.ndarray, n_classes: int = 18, where: str = EVAL_CSV) -> None:
    """A submission answers every eval image (`eval_ids`, from `where`) once, in order, with a
    class in 0..n_classes-1."""
    if len(image_ids) != len(eval_ids) or not np.array_equal(np.asarray(image_ids, dtype=object), eval_ids):
        raise EnsError(f"submission rows do not follow {where} ({len(image_ids)} rows for {len(eval_ids)} images)")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= n_classes:
        raise EnsError(f"submission answers must be classes 0..{n_classes - 1}")


def _ensemble_set(name: str, split: Split, composed: Composed, labels: np.ndarray | None, meta: dict) -> PredictionSet:
    return PredictionSet(name, split, composed.image_ids, composed.probs, composed.joint, labels, meta, composed.space)


def gather_labelled(project: Project, store: Store, recipe: Recipe, learner: str | None = None) -> tuple[Labelled | None, str | None]:
    """The recipe's sources on the labelled images they are fitted and scored on (`scope`), or
    None and why not. A pipeline whose combining step learns (`learner`: its ``--method``)
    needs them: their absence is an error, and a zoo model's rows on people it trained on are
    refused (`guard_leakage`)."""
    labelled = {s: store.labelled(s) for s in recipe.sources}
    lacking = [s for s, v in labelled.items() if v is None]
    if lacking:
        if learner:
            raise EnsError(
                f"--method {learner} fits on labelled predictions; {', '.join(lacking)} has none "
                "(import its validation rows, or run ens predict --split val or oof)"
            )
        return None, f"no labelled predictions for {', '.join(lacking)}"
    try:
        group_of = declared_groups(project)  # a declared competition's groups, read once for both
        if learner:
            guard_leakage(project, labelled, group_of)
        return labelled_scope(project, labelled, group_of), None
    except EnsError as exc:
        if learner:
            raise
        return None, str(exc)


def _validation(labelled: Labelled, done: Run, pipeline: Pipeline) -> dict[str, Any]:
    """The manifest's validation record: the scope, the composition's out-of-fold score with
    its person-bootstrap evidence (and fold spread when a step was cross-fitted) and each
    source's score (each step's own record is the manifest's `steps`)."""
    scored, labels = done.scored, labelled.labels
    scope = labelled.scope + (f"; {pipeline.combine.name} scored out of fold ({done.cv.folds} person-grouped folds)" if done.cv and pipeline.combine.learns() else "")
    out: dict[str, Any] = {"scope": scope, "images": int(len(labels)), "recipe": score(labels, scored.labels).as_dict()}
    if done.cv is not None:
        out["cv"] = done.cv.as_dict()
    out["evidence"] = _evidence(labelled, scored.labels)
    out["sources"] = {n: score(labels, own_prediction(s)).as_dict() for n, s in labelled.sets.items()}
    return out


def _evidence(labelled: Labelled, decided: np.ndarray) -> dict[str, Any]:
    """How sure the composition's score is (`scoring.evidence`): its 90 % person-bootstrap
    interval and, when a source predicts all three tasks, the paired interval of its gain over
    the best such source and the share of resamples in which it is positive."""
    from ..data.people import person_codes
    from ..scoring.evidence import bootstrap

    labels = labelled.labels
    singles = {n: split_prediction(own_prediction(s))[1] for n, s in labelled.sets.items()}
    singles = {n: p for n, p in singles.items() if p is not None}
    rows = np.stack([decided, *singles.values()])
    f1 = [score(labels, p).f1_18 for p in rows[1:]]
    best = 1 + int(np.argmax(f1)) if f1 else None
    found = bootstrap(labels, rows, person_codes(labelled.ids), best)
    out: dict[str, Any] = {"f1_18_interval": [round(float(found.low[0]), 4), round(float(found.high[0]), 4)], "people": found.people, "replicates": found.replicates}
    if best is not None:
        out["gain"] = {
            "over": list(singles)[best - 1],
            "f1_18": round(float(found.f1[0] - found.f1[best]), 4),
            "interval": [round(float(found.gain_low[0]), 4), round(float(found.gain_high[0]), 4)],
            "positive": round(float(found.positive[0]), 3),
        }
    return out


def check_competition(competition: Competition, pipeline: Pipeline) -> None:
    """What each step says it composes: a declared competition's steps only (`Step.declared`:
    prior correction, F1 offsets, the pool and decoding by person are the mask competition's),
    each where its metric is (`Step.metrics`: rank averaging for AUC), and a step that gives
    classes only where the submission is a class scored on classes (not map@K's ranking)."""
    from .engine import REGISTRY

    mask_only = [s for s in pipeline.steps if not s.declared]
    if mask_only and not competition.is_preset:
        ours = ", ".join(name for name, step in REGISTRY.items() if step.declared and step.combines)
        raise EnsError(f"{' -> '.join(s.name for s in pipeline.steps)}: a declared competition's sources are composed by --method {ours}; {', '.join(s.name for s in mask_only)} run(s) on the mask competition")
    for step in pipeline.steps:
        if step.metrics is not None and competition.metric not in step.metrics:
            raise EnsError(f"--method {step.name} serves {' or '.join(step.metrics)} ({step.help}); {competition.name} is scored by {competition.metric}: use --method soft")
    if not pipeline.combine.probabilities and competition.submission is not None and competition.submission.answer is None:
        raise EnsError(f"--method {pipeline.combine.name} gives classes, and {competition.name}'s submission holds probabilities ({competition.metric}): use --method soft, geo or rank")
    if not pipeline.combine.probabilities and competition.metric.top is not None:
        raise EnsError(f"--method {pipeline.combine.name} gives one class an image, and {competition.name} is scored by {competition.metric} on the {competition.metric.top} likeliest: use --method soft or geo")


def _declared_answer(competition: Competition, sample: pd.DataFrame, composed: Composed) -> bytes:
    """The sample submission with the composition's answer: its classes, its likeliest classes
    (map@K), or its probabilities."""
    from ..data.declared import submission_bytes

    if competition.submission.answer is not None and competition.metric.top is None:
        return submission_bytes(competition, sample, composed.image_ids, decided=composed.labels)
    return submission_bytes(competition, sample, composed.image_ids, probs=dict(composed.probs), joint=composed.joint)


def _declared_validation(competition: Competition, labelled: Labelled, done: Run, pipeline: Pipeline) -> dict[str, Any]:
    """A declared competition's validation record: the scope and its metric for the
    composition and for each source alone, on the same labelled images."""
    scored, labels = done.scored, labelled.labels
    decided = scored.labels if competition.submission.answer is not None else None
    learned = f"; {pipeline.combine.name} scored out of fold ({done.cv.folds} folds by group)" if done.cv and pipeline.combine.learns() else ""
    out: dict[str, Any] = {
        "scope": labelled.scope + learned,
        "images": int(len(labels)),
        "groups": labelled.people,
        "metric": str(competition.metric),
        "recipe": {str(competition.metric): competition_score(competition, labels, scored.probs, scored.joint, decided)},
    }
    if done.cv is not None:
        out["cv"] = done.cv.as_dict()
    out["sources"] = {n: {str(competition.metric): competition_score(competition, labels, s.probs, s.joint)} for n, s in labelled.sets.items()}
    return out


def library_recipe(project: Project) -> Recipe:
    """A learned method (stack, select, auto) without a recipe: per task, every model or import that predicts it on eval and on labelled images."""
    store = project.store
    tasks: dict = {t: [] for t in store.space.tasks}
    for name in store.sources():  # from the sets' metadata: no prediction CSV is read here
        if not store.has(name, Split.EVAL) or not any(store.has(name, split) for split in LABELLED_SPLITS):
            continue
        meta = store.read_meta(name, Split.EVAL)
        if kind_of(meta) == "ensemble":
            continue
        for task in meta["tasks"]:
            tasks[store.space.task(task)].append(Term(name))
    missing = [str(t) for t, terms in tasks.items() if not terms]
    if missing:
        raise EnsError(f"no source predicts {', '.join(missing)} on both eval and labelled images (run ens predict --split eval and --split val, or import both)")
    return Recipe({t: tuple(terms) for t, terms in tasks.items()}, space=store.space)


def _check_free(project: Project, store: Store, name: str) -> tuple[Path, Path]:
    """The submission's two paths; an error when they, or the source `name`, exist."""
    csv_path, json_path = project.submissions / f"{name}.csv", project.submissions / f"{name}.json"
    for path in (csv_path, json_path):
        if path.exists():
            raise EnsError(f"{path} exists; submissions are never overwritten (choose another --name)")
    if store.has(name) or name in project.model_names:
        raise EnsError(f"source {name!r} exists; the composition is kept under its name (choose another --name)")
    return csv_path, json_path


def compose(project: Project, recipe: Recipe | None, steps: Pipeline | Step | str | Sequence[Step | str] | None = None, name: str | None = None) -> Composition:
    """Compose `recipe` on the eval images by the pipeline `steps`, in memory (`write_composition` saves it).

    steps: a `Pipeline`, steps in order (`Soft()`, `Stack(balanced=True)`, `Auto()`, then
    `Priors("em")`, `TuneF1()`, `ByPerson()`; see `steps.STEPS`), or a method name (``"soft"``,
    ``"stack"``, ``"auto"``, …: that step alone; None: the soft vote). Every step is fitted on
    the sources' labelled predictions and scored out of fold (`engine`); a learned combining step
    without a recipe takes every model and import with eval and labelled predictions
    (`library_recipe`). A task the recipe does not name takes the recipe's sources that predict
    it (`complete_recipe`). Auto tries decoding by person by itself when both grouping files
    exist (`ByPerson`'s check decides).
    """
    pipeline = pipeline_of(steps)
    learns = pipeline.combine.learns()
    if recipe is None:
        if not learns:
            raise EnsError(f"--method {pipeline.combine.name} needs a recipe (--recipe TASK:SOURCE …); stack, select and auto take every source by default")
        recipe = library_recipe(project)
    pipeline = pipeline.with_companions(project)  # auto tries a decision for the metric, and decoding by person where the team grouped its images
    competition = project.competition
    check_competition(competition, pipeline)
    if recipe.space != competition.space:
        raise EnsError(f"the recipe {recipe} names the tasks of another competition than {project.zoo.name}'s ({', '.join(competition.task_names)}); parse it with the project's label space")
    recipe = complete_recipe(recipe, project.coverage())
    name = check_name(name or time.strftime("sub-%Y%m%d-%H%M%S"))
    store = project.store

    images = eval_images(project)
    sample, eval_ids, eval_file, fingerprint = images.sample, images.ids, images.file, images.fingerprint
    sets = load_eval_sets(project, store, recipe, eval_ids, eval_file)
    labelled, skipped = gather_labelled(project, store, recipe, pipeline.combine.name if learns else None)
    done = run(pipeline, labelled, sets, Context(recipe, project, skipped))
    composed = done.eval
    if labelled is None:
        validation = {"skipped": skipped}
    else:
        validation = _validation(labelled, done, pipeline) if competition.is_preset else _declared_validation(competition, labelled, done, pipeline)

    validate_submission(composed.image_ids, composed.labels, eval_ids, competition.space.n_joint, eval_file)
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
        "method": pipeline.combine.name,
        "steps": done.records,
        "warnings": one_class_warnings(composed, None if labelled is None else labelled.labels),
        "label_fixes": None if project.fixes is None else project.fixes.describe(),
        "inputs": inputs,
        "data": fingerprint,
        "submission_sha256": None,  # set below, from the file's bytes
        "class_counts": counts,
        "validation": validation,
    }
    origin = {"type": "ensemble", "recipe": str(recipe), "method": pipeline.combine.name, "steps": str(pipeline), "submission": f"{name}.csv"}
    meta = {"kind": "proba" if pipeline.combine.probabilities else "hard", "origin": origin, "data": manifest["data"]}
    kept_labels = None if labelled is None else labelled.stored_labels  # as given: the fix file in force is applied when the set is read
    val_split = Split.OOF if labelled is not None and labelled.oof else Split.VAL  # a composition of out-of-fold sources is out of fold
    answer = None if sample is None else _declared_answer(competition, sample, composed)
    composition = Composition(name, manifest, recipe, composed, done.scored, kept_labels, meta, val_split=val_split, answer=answer, pipeline=pipeline, words=Words.of(competition))
    manifest["submission_sha256"] = sha256_bytes(composition.csv_bytes())
    return composition


def write_composition(project: Project, composition: Composition) -> Submission:
    """Write ``<submissions>/<name>.csv`` and ``.json`` and keep the composition as the source
    `name` (eval, and val when it has labelled images). Never overwrites: an existing file or
    source of that name is an error, and nothing is written."""
    store = project.store
    name, manifest = composition.name, composition.manifest
    csv_path, json_path = _check_free(project, store, name)
    write_bytes(csv_path, composition.csv_bytes(), overwrite=False)
    write_json(json_path, manifest, overwrite=False)
    store.write(_ensemble_set(name, Split.EVAL, composition.eval, None, composition.source_meta))
    if composition.val is not None:
        store.write(_ensemble_set(name, composition.val_split, composition.val, composition.val_labels, composition.source_meta))
    return Submission(name, csv_path, json_path, composition.eval.mode, manifest["class_counts"], manifest["validation"], composition.recipe, manifest["warnings"], manifest["steps"], composition.lines())


def compose_submission(project: Project, recipe: Recipe | None, steps: Pipeline | Step | str | Sequence[Step | str] | None = None, name: str | None = None) -> Submission:
    """`compose` and `write_composition` in one (what `ens compose` runs): the name is checked
    free before anything is composed."""
    name = check_name(name or time.strftime("sub-%Y%m%d-%H%M%S"))
    _check_free(project, project.store, name)
    return write_composition(project, compose(project, recipe, steps, name))
