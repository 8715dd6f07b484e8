"""Validation scores of sources and recipes, side by side on the same images.

Every row is scored on one set of images: the labelled images that all the sources involved
predict, restricted to the validation fold of the team's fold file when there is one. A recipe's
gain is its 18-class macro F1 minus that of the best single source (ensembles excluded). A
learned method (stacking, selection) is scored by person-grouped cross-validation on those same images,
never in-sample, with the spread of its score across the folds.

The report also shows each task's class priors: the labelled images' true mix, and per source
the eval mix that EM estimates from its eval predictions (`priors.em_priors`), so a team sees a
shifted test set before choosing `--prior em`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..compose.calibration import Calibrator, fit
from ..compose.learned import learn
from ..compose.priors import em_priors, implied_priors
from ..compose.recipe import Recipe, complete_recipe
from ..compose.voting import Method, Tie, combine
from ..data.dataset import read_folds
from ..data.labels import N_CLASSES, TASKS, Task, decode
from ..data.project import Project
from ..data.store import LABELLED_SPLITS, PredictionSet, Split, Store, kind_of
from ..errors import EnsError, preview, unknown
from .metrics import Scores, score


@dataclass(frozen=True)
class ReportRow:
    """One scored line: a source (kind model / import / ensemble) or a recipe with a method."""

    name: str
    kind: str
    scores: Scores
    method: str | None = None
    gain: float | None = None
    spread: float | None = None  # learned methods: std of the 18-class F1 across the CV folds
    prediction: Any = field(default=None, repr=False, compare=False)  # joint classes (n,), or {task: (n,)}

    @property
    def described(self) -> str:
        """The kind column: the source's kind, or the recipe's method (``soft vote``, ``stack, CV``)."""
        if not self.method:
            return self.kind
        return f"{self.method}, CV" if Method(self.method).learned else f"{self.method} vote"

    @property
    def label(self) -> str:
        """The row's name, with its method for a recipe (a recipe may be scored by several)."""
        return self.name if self.method is None else f"{self.name} ({self.method})"


@dataclass(frozen=True)
class PriorRow:
    """A source's class priors for one task: the mean of its posteriors on the scored labelled
    images (the priors its probabilities stand for) and the EM estimate on eval, both ``(k,)``."""

    source: str
    task: Task
    labelled: np.ndarray
    eval: np.ndarray


@dataclass(frozen=True)
class Report:
    """Rows best first (by 18-class macro F1), the images they were scored on, notes, and the
    class priors: the scored images' true mix per task ``{task: (k,)}`` and each source's."""

    rows: list[ReportRow]
    n_images: int
    scope: str
    notes: list[str] = field(default_factory=list)
    truth_priors: dict[Task, np.ndarray] = field(default_factory=dict)
    priors: list[PriorRow] = field(default_factory=list)
    sets: Mapping[str, PredictionSet] = field(default_factory=dict, repr=False)  # the sources, aligned on the scored images
    labels: np.ndarray | None = field(default=None, repr=False)  # their joint labels (n,)


def estimated_priors(store: Store, aligned: Mapping[str, PredictionSet]) -> list[PriorRow]:
    """Each source's implied priors on its labelled rows and EM-estimated eval priors (on its
    eval probabilities calibrated by temperature on the labelled rows, against their true mix), per task
    it covers (ensembles, which re-use their sources' predictions, and sources without eval
    predictions are left out)."""
    rows = []
    for name, labelled in aligned.items():
        if kind_of(labelled.meta) == "ensemble" or not store.has(name, Split.EVAL):
            continue
        evaluated = store.read(name, Split.EVAL)
        truth = decode(labelled.labels)
        for task in TASKS:
            if task in labelled.tasks and task in evaluated.tasks:
                # EM assumes calibrated posteriors and the true train mix (priors.correct_shift)
                mix = np.bincount(truth[task], minlength=N_CLASSES[task]) / len(truth[task])
                calibrated = fit(Calibrator.TS, labelled.probs[task], truth[task]).apply(evaluated.probs[task])
                rows.append(PriorRow(name, task, implied_priors(labelled.probs[task]), em_priors(calibrated, mix)[0]))
    return rows


def own_prediction(pset: PredictionSet) -> np.ndarray | dict:
    """A source's prediction alone: the joint argmax ``(n,)`` when it has a joint, else per-task argmaxes."""
    if pset.joint is not None:
        return pset.joint.argmax(axis=1)
    return {t: p.argmax(axis=1) for t, p in pset.probs.items()}


def profile_of(image_ids: np.ndarray) -> np.ndarray:
    """Train ImageIDs (``profile/file``) -> their person folder ``(n,)``."""
    return np.array([i.split("/", 1)[0] for i in image_ids], dtype=object)


def best_first(rows: list[ReportRow]) -> list[ReportRow]:
    """Rows by 18-class macro F1, then mean per-task F1; rows without an 18-class score last."""
    return sorted(rows, key=lambda r: (r.scores.f1_18 is None, -(r.scores.f1_18 or 0.0), -np.mean(list(r.scores.f1.values()))))


def shared_ids(sets: Mapping[str, PredictionSet]) -> np.ndarray:
    """The labelled ImageIDs that every set covers, sorted ``(n,)``."""
    import pandas as pd

    if not sets:
        raise EnsError("no source with labelled predictions to score (import a CSV with train rows, or run ens predict --split val)")
    common = pd.Index(next(iter(sets.values())).image_ids)
    for pset in sets.values():
        common = common.intersection(pd.Index(pset.image_ids), sort=False)
    return np.sort(common.to_numpy(object))


def validation_ids(project: Project, ids: np.ndarray) -> tuple[np.ndarray, str]:
    """`ids` restricted to the validation fold when the project has a fold file; and the scope text."""
    if not project.folds.is_file():
        return ids, f"all {len(ids)} labelled images the sources share (no fold file: run `ens split` for an honest hold-out)"
    folds = read_folds(project.folds)
    ids = ids[folds.reindex(profile_of(ids)).to_numpy() == project.val_fold]
    people = len(set(profile_of(ids)))
    return ids, f"validation fold {project.val_fold} of {project.folds.name}: {len(ids)} images of {people} people"


def scoring_images(project: Project, sets: Mapping[str, PredictionSet]) -> tuple[np.ndarray, str, list[str]]:
    """The images to score `sets` on: shared by all, in the validation fold. ``(ids, scope, notes)``."""
    counts = {name: len(s) for name, s in sets.items()}
    ids, scope = validation_ids(project, shared_ids(sets))
    if not len(ids):
        raise EnsError(f"the sources share no labelled image to score on ({scope}); images per source: {counts}")
    short = [n for n, c in counts.items() if c < max(counts.values())]
    notes = [f"scored on the images all sources share; fewer were predicted by: {preview(short, 5)}"] if short else []
    return ids, scope, notes


def load_labelled(store: Store, names: Sequence[str], known: Sequence[str]) -> dict[str, PredictionSet]:
    """Each named source's labelled set; a source without one is an error."""
    sets = {}
    for name in names:
        if not store.has(name):
            raise unknown("source", name, known)
        pset = store.labelled(name)
        if pset is None:
            raise EnsError(f"source {name!r} has no labelled predictions (val or oof) to score")
        sets[name] = pset
    return sets


def aligned_sets(sets: Mapping[str, PredictionSet], ids: np.ndarray) -> tuple[dict[str, PredictionSet], np.ndarray]:
    """`sets` reordered to `ids`, and their common labels ``(n,)`` (which must agree)."""
    aligned = {name: s.take(ids) for name, s in sets.items()}
    labels = next(iter(aligned.values())).labels
    for name, s in aligned.items():
        if not np.array_equal(s.labels, labels):
            raise EnsError(f"source {name!r} carries other labels for the same images; was it made on another data folder?")
    return aligned, labels


def build_report(
    project: Project,
    sources: Sequence[str] | None = None,
    recipes: Sequence[Recipe] = (),
    methods: Sequence[Method] = (Method.SOFT,),
    per_task: bool = False,
    tie: Tie | str | None = None,
) -> Report:
    """Score `sources` (default: every source with labelled predictions) and each recipe x method.

    tie: the hard votes' tie rule (`voting.Tie`; default mass); an error when no method is hard.
    """
    if tie is not None and Method.HARD not in methods:
        raise EnsError("--tie breaks the ties of a hard vote; add --method hard")
    tie = Tie(tie or Tie.MASS)
    notes = [f"hard votes break ties by {tie.value} (--tie)"] if tie is not Tie.MASS else []
    store = Store(project.predictions)
    known = store.sources()
    if recipes:
        coverage = project.coverage()
        recipes = [complete_recipe(r, coverage) for r in recipes]
        notes += [line for r in recipes for line in r.filled.values()]
    if sources:
        names = list(dict.fromkeys(sources))
    else:
        names = [n for n in known if any(store.has(n, split) for split in LABELLED_SPLITS)]
        skipped = [n for n in known if n not in names]
        if skipped:
            notes.append(f"no labelled predictions, not scored: {preview(skipped, 5)}")
    for recipe in recipes:
        names += [s for s in recipe.sources if s not in names]
    sets = load_labelled(store, names, known + list(project.model_names))
    ids, scope, more = scoring_images(project, sets)
    aligned, labels = aligned_sets(sets, ids)

    rows = []
    for n, s in aligned.items():
        own = own_prediction(s)
        rows.append(ReportRow(n, kind_of(s.meta), score(labels, own), prediction=own))
    singles = [r.scores.f1_18 for r in rows if r.kind != "ensemble" and r.scores.f1_18 is not None]
    best = max(singles) if singles else None
    for recipe in recipes:
        for method in methods:
            spread = None
            if method.learned:  # scored out of fold, person-grouped, on the same images
                _, composed, cv, _ = learn(recipe, aligned, labels, aligned, method)
                spread = cv.fold_std
            else:
                composed = combine(recipe, aligned, method, per_task, tie)
            result = score(labels, composed.labels)
            gain = None if best is None else result.f1_18 - best
            rows.append(ReportRow(str(recipe), "recipe", result, str(method), gain, spread, composed.labels))
    rows = [
        r if r.kind != "ensemble" or best is None or r.scores.f1_18 is None else replace(r, gain=r.scores.f1_18 - best)
        for r in rows
    ]
    truth = decode(labels)
    truth_priors = {t: np.bincount(truth[t], minlength=N_CLASSES[t]) / len(labels) for t in TASKS}
    return Report(best_first(rows), len(ids), scope, notes + more, truth_priors, estimated_priors(store, aligned), aligned, labels)
