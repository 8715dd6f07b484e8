"""Which labelled images a composition is fitted and scored on (DESIGN.md §4, out-of-fold scope).

The labelled images that every source of a recipe predicts; of those, all when every source
predicts them out of fold (a fold group's ``--split oof``, an import declared ``--oof``), else
the validation fold of the team's fold file; without a fold file, all of them (and the scope
text says so). Every score, fit and report row of `ens` is taken on these images, and a
composition keeps them: a vote of out-of-fold sources is out of fold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from ..data.dataset import TRAIN_CSV, folds_of, read_folds, read_train
from ..data.fixes import apply_fixes, declared_in_force
from ..data.people import person_codes, profile_of
from ..data.project import Project
from ..data.store import PredictionSet, Split, Store
from ..errors import EnsError, preview, unknown

if TYPE_CHECKING:
    import pandas as pd


def shared_ids(sets: Mapping[str, PredictionSet]) -> np.ndarray:
    """The labelled ImageIDs that every set covers, sorted ``(n,)``."""
    import pandas as pd

    if not sets:
        raise EnsError("no source with labelled predictions to score (import a CSV with train rows, or run ens predict --split val)")
    common = pd.Index(next(iter(sets.values())).image_ids)
    for pset in sets.values():
        common = common.intersection(pd.Index(pset.image_ids), sort=False)
    return np.sort(common.to_numpy(object))


def out_of_fold(sets: Mapping[str, PredictionSet]) -> bool:
    """Whether every set predicts all its labelled images out of fold (split ``oof``: a fold
    group's, or an import declared ``--oof``)."""
    return bool(sets) and all(s.split is Split.OOF for s in sets.values())


def validation_ids(project: Project, ids: np.ndarray, oof: bool = False, group_of: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, str]:
    """The labelled images to score on, and the scope text: with a fold file, all of `ids` when
    every source predicts them out of fold (`oof`), else those in the validation fold; without
    one, all of `ids` (with a warning in the text). group_of: ImageIDs -> the keys of the fold
    file (a declared competition's groups; default the mask competition's persons)."""
    key, unit = (profile_of, "people") if group_of is None else (group_of, "groups")
    if not project.folds.is_file():
        return ids, f"all {len(ids)} labelled images the sources share (no fold file: run `ens split` for an honest hold-out)"
    groups = lambda chosen: len(set(key(chosen)))  # noqa: E731
    if oof:
        return ids, f"out of fold: all {len(ids)} images of {groups(ids)} {unit} that every source predicts out of fold"
    one = "person" if group_of is None else "group"
    folds = read_folds(project.folds, unit=one)
    if project.val_fold > int(folds.max()):
        raise EnsError(f"{project.zoo}: project.val_fold is {project.val_fold}, and {project.folds.name} has folds 0..{int(folds.max())}")
    ids = ids[folds_of(folds, key(ids), project.folds, one) == project.val_fold]
    return ids, f"validation fold {project.val_fold} of {project.folds.name}: {len(ids)} images of {groups(ids)} {unit}"


def scoring_images(project: Project, sets: Mapping[str, PredictionSet], group_of: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, str, list[str]]:
    """The images to score `sets` on: shared by all, out of fold for all (`validation_ids`). ``(ids, scope, notes)``."""
    counts = {name: len(s) for name, s in sets.items()}
    ids, scope = validation_ids(project, shared_ids(sets), out_of_fold(sets), group_of)
    if not len(ids):
        raise EnsError(f"the sources share no labelled image to score on ({scope}); images per source: {counts}")
    short = [n for n, c in counts.items() if c < max(counts.values())]
    notes = [f"scored on the images all sources share; fewer were predicted by: {preview(short, 5)}"] if short else []
    folded = [n for n, s in sets.items() if s.split is Split.OOF]
    if folded and len(folded) < len(sets) and project.folds.is_file():
        only = [n for n, s in sets.items() if s.split is not Split.OOF]
        notes.append(f"only the validation fold is scored: not out of fold on every train image: {preview(only, 5)}; with out-of-fold predictions of every source (ens predict --split oof, ens import --oof) every train image is scored")
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
    """`sets` reordered to `ids`, and their common labels ``(n,)`` as the sets carry them (the
    labels as given: a stored set never carries a label fix), which must agree."""
    aligned = {name: s.take(ids) for name, s in sets.items()}
    first, labels = next(iter(aligned.items()))[0], next(iter(aligned.values())).labels
    for name, s in aligned.items():
        differ = np.flatnonzero(s.labels != labels)
        if len(differ):
            i = int(differ[0])
            raise EnsError(
                f"sources {first!r} and {name!r} carry other labels for {len(differ)} of the same images (e.g. {ids[i]}: {labels[i]} and {s.labels[i]}); "
                f"one was made on another data folder, or by ens 0.1 while a label fix was in force: re-create it (ens import --force, ens predict --force)"
            )
    return aligned, labels


def fixed_labels(project: Project, ids: np.ndarray, given: np.ndarray, sources: Sequence[str] = ()) -> tuple[np.ndarray, list[str]]:
    """The labels in force for the labelled images `ids` ``(n,)``, whose sets carry `given`
    ``(n,)``: with the project's label-fix file, the fixes applied (`fixes.apply_fixes`), after
    checking the fix file and `given` against the data folder's train labels (a set made while a
    fix was in force, or on other data, would otherwise carry a fix that un-naming the file
    cannot undo). Without a fix file: `given` itself. Returns ``(labels, notes)``."""
    fixes = project.fixes
    if fixes is None:
        return given, []
    if project.data is not None and (project.data / TRAIN_CSV).is_file():
        train = read_train(project.data)
        fixes.check(train["ImageID"])
        raw = train.set_index("ImageID")["label"].reindex(ids).to_numpy()
        differ = np.flatnonzero(~(raw == given))
        if len(differ):
            i = int(differ[0])
            what = "is not among the train images" if raw[i] != raw[i] else f"is labelled {int(raw[i])} there, {given[i]} in the sets"
            raise EnsError(
                f"the labelled predictions of {preview(list(sources), 4)} disagree with {project.data / TRAIN_CSV} on {len(differ)} image(s) (e.g. {ids[i]} {what}); "
                "a set made on another data folder, or by ens 0.1 while a label fix was in force: re-create it (ens import --force, ens predict --force)"
            )
    return apply_fixes(ids, given, fixes), [fixes.line()]


def declared_fixed_labels(project: Project, ids: np.ndarray, groups: np.ndarray | None, given: np.ndarray, train: pd.DataFrame | None = None) -> tuple[np.ndarray, list[str]]:
    """A declared competition's labels in force for the labelled images `ids` ``(n,)`` (their
    declared `groups` ``(n,)``): the project's fix file applied after checking it names only
    images and groups of the `train` labels (`fixes.declared_in_force`; None: read here).
    Returns ``(labels, notes)``."""
    from ..data.declared import read_labelled

    fixes = project.fixes
    if fixes is None:
        return given, []
    if train is None:
        train = read_labelled(project.competition, project.require_data(declared=True))
    return declared_in_force(fixes, train, ids, groups, given, project.competition.space), [fixes.line()]


@dataclass(frozen=True)
class Labelled:
    """The labelled images a composition is fitted, scored and kept on, with its sources there.

    sets: ``{source: PredictionSet}`` aligned on the same ImageIDs ``(n,)`` (sorted), carrying
    `labels`; labels: their joint classes ``(n,)`` in force (the label-fix file applied); given:
    the labels as the stored sets carry them, before any fix (what a kept composition stores;
    None: the same as `labels`); scope: the line that says which images these are; oof: every
    source predicts every one of them out of fold (so does any composition of them); notes:
    what held the scope back; groups: a declared competition's group of each image ``(n,)``
    (None: the mask competition's persons, from the paths), which the engine's folds keep
    together (`engine.Folds`).
    """

    sets: Mapping[str, PredictionSet]
    labels: np.ndarray
    scope: str = ""
    oof: bool = False
    notes: tuple[str, ...] = field(default=(), compare=False)
    groups: np.ndarray | None = field(default=None, compare=False)
    given: np.ndarray | None = field(default=None, compare=False)

    @property
    def stored_labels(self) -> np.ndarray:
        """The labels as given, to store with a composition of these images (never a fix)."""
        return self.labels if self.given is None else self.given

    @property
    def ids(self) -> np.ndarray:
        return next(iter(self.sets.values())).image_ids

    @cached_property
    def group_of(self) -> Callable[[np.ndarray], np.ndarray]:
        """ImageIDs of these images -> their declared groups (`engine.Context.group_of`)."""
        lookup = dict(zip(self.ids, self.groups))
        return lambda ids: np.array([lookup[i] for i in ids], dtype=object)

    @property
    def people(self) -> int:
        if self.groups is not None:
            return len(set(self.groups))
        return int(person_codes(self.ids).max()) + 1 if len(self.ids) else 0

    def only(self, names: Sequence[str]) -> Labelled:
        """The same images with the sources `names` alone."""
        return replace(self, sets={n: self.sets[n] for n in names})


class TrainGroups:
    """A declared competition's labelled ImageIDs ``(n,)`` -> their declared groups ``(n,)``
    (patients, …; each image its own without a group column), over the train labels read once
    (`train`: `declared.read_labelled`'s table, which the fix file is checked against too)."""

    def __init__(self, train: pd.DataFrame) -> None:
        self.train = train
        self._group = train.set_index("ImageID")["group"]

    def __call__(self, chosen: np.ndarray) -> np.ndarray:
        return self._group.reindex(chosen).to_numpy(object)


def declared_groups(project: Project) -> TrainGroups | None:
    """A declared competition's `TrainGroups`; None for the mask competition, whose persons are
    read from the paths (`people.profile_of`)."""
    if project.competition.is_preset:
        return None
    from ..data.declared import read_labelled

    return TrainGroups(read_labelled(project.competition, project.require_data(declared=True)))


def labelled_scope(project: Project, sets: Mapping[str, PredictionSet], group_of: TrainGroups | None = None) -> Labelled:
    """`sets` (each source's labelled set) on the images they are all scored on (`scoring_images`).
    group_of: `declared_groups(project)` when the caller has read it already (None: read here)."""
    group_of = group_of or declared_groups(project)
    ids, scope, notes = scoring_images(project, sets, group_of)
    aligned, given = aligned_sets(sets, ids)
    labels = given
    groups = None if group_of is None else group_of(ids)
    if group_of is None:  # the sets carry the labels as given; the fix file in force is applied now
        labels, fixed = fixed_labels(project, ids, given, list(sets))
        notes += fixed
    elif project.fixes is not None:
        labels, fixed = declared_fixed_labels(project, ids, groups, given, group_of.train)
        notes += fixed
    if labels is not given:
        aligned = {name: replace(s, labels=labels) for name, s in aligned.items()}
    return Labelled(aligned, labels, scope, project.folds.is_file() and out_of_fold(sets), tuple(notes), groups, given)


def guard_leakage(project: Project, sets: Mapping[str, PredictionSet], group_of: TrainGroups | None = None) -> None:
    """Refuse labelled predictions of a zoo model on people (a declared competition's groups) it
    trained on: outside its held-out fold. group_of: as `labelled_scope`'s."""
    if not project.folds.is_file():
        return
    group_of = group_of or declared_groups(project)
    key, unit = (profile_of, "people") if group_of is None else (group_of, "groups")
    one = "person" if group_of is None else "group"
    folds = read_folds(project.folds, unit=one)
    for name, pset in sets.items():
        entry = next((m for m in project.models if m.name == name), None)
        if entry is None or entry.is_fold_group or entry.fold is None:
            continue
        outside = folds_of(folds, key(pset.image_ids), project.folds, one) != entry.fold
        if outside.any():
            raise EnsError(
                f"model {name!r} held out fold {entry.fold} only: {int(outside.sum())} of its labelled images are of "
                f"{unit} in other folds, which it trained on; nothing can be fitted on them"
            )
