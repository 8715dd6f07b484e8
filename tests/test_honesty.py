"""Honesty by test (issue 34; DESIGN.md §4): a group's out-of-fold rows never depend on its own
labels. For every fitted step (and the audit's calibration): change the labels of the people of
one of the engine's folds only (a label-fix file: genders and a photo's mask state each); their
out-of-fold rows (probabilities and decisions) must not move, bit for bit, while other people's
may. A test of the test: the engine predicting the held-out rows with the model fitted on every
row fails it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import write_csv

import ensembler as ens
from ensembler.data.dataset import images_fingerprint, read_eval, read_train, split_project
from ensembler.data.labels import Task
from ensembler.data.people import person_codes, thin_pairs
from ensembler.data.project import load_project, update_project
from ensembler.data.toy import make_toy_competition, teammate_csv
from ensembler.pipeline.persons import Grouping, write_groups

RECIPE = "*:a+b+c"
PIPELINES = {
    "soft": lambda: ["soft"],
    "geo": lambda: ["geo"],
    "hard": lambda: ["hard"],
    "median": lambda: ["median"],
    "stack": lambda: [ens.Stack()],
    "select": lambda: [ens.Select()],
    "pool": lambda: [ens.Pool()],
    "auto": lambda: [ens.Auto()],
    "auto, not cautious": lambda: [ens.Auto(cautious=False)],
    "priors": lambda: [ens.Soft(), ens.Priors("em")],
    "tune_f1": lambda: [ens.Soft(), ens.TuneF1()],
    "by_person": lambda: [ens.Soft(), ens.ByPerson()],
}


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """150 train people (no thin gender x age pair: the pool may fit), three teammates out of
    fold, and both splits grouped by the true persons (decoding by person is checked)."""
    root = tmp_path_factory.mktemp("honest")
    toy = make_toy_competition(root / "comp", n_people=150, n_eval_people=10, seed=1)
    zoo = root / "team" / "model_zoo.yaml"
    update_project(zoo, data=toy.data)
    project = load_project(zoo)
    split_project(project, seed=0)
    truth = pd.concat([toy.eval, toy.train])
    for i, name in enumerate("abc"):
        skill = {Task.MASK: 2.0 - 0.4 * i, Task.GENDER: 1.5 - 0.3 * i, Task.AGE: 1.0}
        ens.import_source(project, write_csv(root / f"{name}.csv", teammate_csv(truth, skill, seed=i)), name, oof=True)
    data = project.require_data()
    ev, tr = read_eval(data), read_train(data)
    persons = toy.eval.set_index("ImageID").loc[ev["ImageID"], "person"].to_numpy()
    write_groups(project.root, "eval", ev["ImageID"].to_numpy(object), Grouping(persons, np.ones(len(ev))), {"fingerprint": images_fingerprint(ev["ImageID"], ev["path"])})
    ids = tr["ImageID"].to_numpy(object)
    write_groups(project.root, "train", ids, Grouping(person_codes(ids), np.ones(len(ids))), {"fingerprint": images_fingerprint(ids, tr["path"]), "agreement": {"ari": 1.0}})
    assert thin_pairs(tr["label"].to_numpy(), ids) == []
    return project, tr["profile"].iloc[0]


def _fold_people(project) -> list[str]:
    """The people of the engine's first fold of the labelled images (the folds are the engine's,
    never a function of the labels: the same with and without a fix)."""
    from ensembler.pipeline.folds import Folds

    ids = project.store.read("a", "oof").image_ids
    held = Folds.of(ids)[0][1]
    return sorted({i.split("/")[0] for i in ids[held]})


def _with_fix(project, people: list[str]):
    """The project with the labels of `people` changed to what the weakest teammate (``c``)
    sees: each one's gender and age by the majority of c's calls over the seven photos, each
    photo's mask state c's call. On these people c alone is then right: a choice that saw
    their labels would turn to it (what a leaky auto, or a check made on every row, does)."""
    from ensembler.data.labels import CLASS_NAMES, TASKS

    c = project.store.read("c", "oof")
    called = {t: c.probs[t].argmax(1) for t in TASKS}
    rows = ["profile,image,task,label"]
    for profile in people:
        mine = np.flatnonzero([i.startswith(profile + "/") for i in c.image_ids])
        for task in (Task.GENDER, Task.AGE):
            rows.append(f"{profile},,{task},{CLASS_NAMES[task][int(np.bincount(called[task][mine]).argmax())]}")
        rows += [f"{profile},{c.image_ids[i].split('/')[1]},mask,{CLASS_NAMES[Task.MASK][called[Task.MASK][i]]}" for i in mine]
    (project.root / "label_fixes.csv").write_text("\n".join(rows) + "\n")
    update_project(project.zoo, label_fixes="label_fixes.csv")
    return load_project(project.zoo)


def _suffix(project, profile: str) -> str:
    return next(p for p in (project.data / "train" / "images" / profile).iterdir() if p.stem == "normal").suffix


def _rows(composed, people: list[str]) -> np.ndarray:
    return np.isin([i.split("/")[0] for i in composed.image_ids], people)


@pytest.mark.parametrize("name", list(PIPELINES))
def test_a_folds_labels_never_move_that_folds_out_of_fold_rows(team, name):
    """One fold's people's labels changed (tens of people: enough to turn a choice made on them,
    which one person's rarely does); their rows must not move, bit for bit."""
    project, _ = team
    people = _fold_people(project)
    before = ens.compose(project, RECIPE, PIPELINES[name]())
    try:
        after = ens.compose(_with_fix(project, people), RECIPE, PIPELINES[name]())
    finally:
        update_project(project.zoo, label_fixes=None)
    mine = _rows(before.val, people)
    assert mine.sum() == 7 * len(people) and np.array_equal(before.val.image_ids, after.val.image_ids)
    assert np.array_equal(before.val_labels, after.val_labels)  # kept with the composition as given, never fixed
    assert np.array_equal(before.val.labels[mine], after.val.labels[mine]), name
    for task in before.val.probs:
        assert np.array_equal(before.val.probs[task][mine], after.val.probs[task][mine]), (name, task)
    if before.val.joint is not None:
        assert np.array_equal(before.val.joint[mine], after.val.joint[mine]), name
    if name in ("stack", "pool"):  # a fit that saw the new labels moves other people's rows: the fix did reach it
        assert not all(np.array_equal(before.val.probs[t], after.val.probs[t]) for t in before.val.probs)


def test_the_audits_out_of_fold_calibration_never_uses_the_persons_own_labels(team):
    from ensembler.evaluate.audit import calibrated_logs
    from ensembler.pipeline.folds import Folds

    project, _ = team
    sets = {n: project.store.read(n, "oof") for n in "abc"}
    ids = sets["a"].image_ids
    given = sets["a"].labels.copy()
    mine = np.isin([i.split("/")[0] for i in ids], _fold_people(project))
    other = given.copy()
    other[mine] = (other[mine] + 4) % 18
    folds = Folds.of(ids)
    probs = [sets[n].joint for n in "abc"]
    before, after = calibrated_logs(probs, given, folds), calibrated_logs(probs, other, folds)
    for b, a in zip(before, after):
        assert np.array_equal(b[mine], a[mine]) and not np.array_equal(b, a)


def test_the_property_catches_a_fold_loop_that_predicts_with_the_model_fitted_on_every_row(team, monkeypatch):
    """The first mutation of issue 34: held-out rows predicted by the model fitted on all rows."""
    import ensembler.pipeline.engine as engine

    project, _ = team
    people = _fold_people(project)

    def leaky(fit, folds):
        every = np.arange(sum(len(held) for _, held in folds))
        return [(held, fit(every)(held)) for _, held in folds]

    monkeypatch.setattr(engine, "out_of_fold", leaky)
    for steps in ([ens.Stack()], [ens.Pool()]):
        before = ens.compose(project, RECIPE, steps)
        try:
            after = ens.compose(_with_fix(project, people), RECIPE, steps)
        finally:
            update_project(project.zoo, label_fixes=None)
        mine = _rows(before.val, people)
        assert not all(np.array_equal(before.val.probs[t][mine], after.val.probs[t][mine]) for t in before.val.probs), steps


def test_a_pipeline_of_two_fitted_steps_is_honest_only_nested(team):
    """F1 offsets fitted on a stack's cross-fitted rows: the stack's models for the other folds
    saw this fold's labels, and the offsets tuned on their rows carry them back (bench/optimism.py
    measures what it costs); nested (`Pipeline(nested=True)`: each fold by the whole pipeline
    fitted on the other folds) the fold's rows do not move."""
    project, _ = team
    people = _fold_people(project)
    moved = {}
    for nested in (False, True):
        steps = ens.Pipeline((ens.Stack(), ens.TuneF1()), nested=nested)
        before = ens.compose(project, RECIPE, steps)
        try:
            after = ens.compose(_with_fix(project, people), RECIPE, steps)
        finally:
            update_project(project.zoo, label_fixes=None)
        mine = _rows(before.val, people)
        moved[nested] = not all(np.array_equal(before.val.probs[t][mine], after.val.probs[t][mine]) for t in before.val.probs)
        assert np.array_equal(before.eval.labels, ens.compose(project, RECIPE, ens.Pipeline(steps.steps)).eval.labels)  # eval gets the same either way
    assert moved == {False: True, True: False}
