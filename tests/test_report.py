import numpy as np
import pandas as pd
import pytest
from conftest import hard_csv

from ensembler.data.dataset import read_folds, split_project
from ensembler.data.labels import Task, decode, encode
from ensembler.data.project import load_project
from ensembler.data.sources import import_source
from ensembler.errors import EnsError
from ensembler.evaluate.report import build_report
from ensembler.pipeline.recipe import parse_recipe
from ensembler.pipeline.steps import Method
from ensembler.scoring.metrics import macro_f1


def noisy(labels, task, rate, seed):
    """Joint labels with `task` wrong on a fraction `rate` of images."""
    rng = np.random.default_rng(seed)
    parts = decode(labels)
    wrong = rng.random(len(labels)) < rate
    k = {Task.MASK: 3, Task.GENDER: 2, Task.AGE: 3}[task]
    parts[task] = np.where(wrong, (parts[task] + 1) % k, parts[task])
    return encode(parts[Task.MASK], parts[Task.GENDER], parts[Task.AGE])


@pytest.fixture
def team(project, toy, tmp_path):
    truth = pd.concat([toy.eval, toy.train])
    y = truth["label"].to_numpy()
    import_source(project, hard_csv(tmp_path / "A.csv", truth, noisy(y, Task.AGE, 0.6, 0)), "A")
    import_source(project, hard_csv(tmp_path / "B.csv", truth, noisy(y, Task.MASK, 0.5, 1)), "B")
    return truth


def test_without_folds_scores_all_shared_labelled_images(project, toy, team):
    report = build_report(project)
    assert report.n_images == len(toy.train) and "no fold file" in report.scope
    assert [r.name for r in report.rows] == sorted([r.name for r in report.rows], key=lambda n: -next(x.scores.f1_18 for x in report.rows if x.name == n))
    a = next(r for r in report.rows if r.name == "A")
    assert a.kind == "import" and a.scores.f1[Task.MASK] == 1.0 and a.gain is None


def test_scores_only_the_validation_fold_and_ranks_recipes(project, toy, team):
    split_project(project, val_fold=1)
    project = load_project(project.zoo)
    report = build_report(project, recipes=[parse_recipe("age:B *:A")], methods=[Method.SOFT, Method.HARD])
    folds = read_folds(project.folds)
    val_people = set(folds[folds == 1].index)
    assert report.n_images == 7 * len(val_people) and "validation fold 1" in report.scope
    top = report.rows[0]
    assert top.kind == "recipe" and top.scores.accuracy == 1.0
    best_single = max(r.scores.f1_18 for r in report.rows if r.kind == "import")
    assert top.gain == pytest.approx(1.0 * top.scores.f1_18 - best_single)
    assert {r.method for r in report.rows if r.kind == "recipe"} == {"soft", "hard"}
    # the single source's number is the competition's 18-class macro F1 on the val images
    ids = toy.train[[i.split("/")[0] in val_people for i in toy.train["ImageID"]]]
    a_pred = noisy(team["label"].to_numpy(), Task.AGE, 0.6, 0)
    a = pd.Series(a_pred, index=team["ImageID"].to_numpy()).reindex(ids["ImageID"]).to_numpy()
    expected = macro_f1(ids["label"].to_numpy(), a, 18)
    assert next(r for r in report.rows if r.name == "A").scores.f1_18 == pytest.approx(expected)


def test_sources_are_scored_on_the_images_all_of_them_share(project, toy, team, tmp_path):
    part = pd.concat([toy.eval, toy.train.iloc[:70]])
    import_source(project, hard_csv(tmp_path / "C.csv", part, part["label"].to_numpy()), "C")
    report = build_report(project)
    assert report.n_images == 70
    assert any("fewer were predicted by: 'C'" in n for n in report.notes)


def test_unknown_source_and_source_without_labels(project, toy, team, tmp_path):
    with pytest.raises(EnsError, match="unknown source 'AB'"):
        build_report(project, sources=["AB"])
    import_source(project, hard_csv(tmp_path / "E.csv", toy.eval, toy.eval["label"].to_numpy()), "E")
    with pytest.raises(EnsError, match="source 'E' has no labelled predictions"):
        build_report(project, sources=["E"])
    report = build_report(project)
    assert "E" not in [r.name for r in report.rows]
    assert any("not scored: 'E'" in n for n in report.notes)


def test_no_labelled_source_at_all(project):
    with pytest.raises(EnsError, match="no source with labelled predictions"):
        build_report(project)


def test_report_shows_the_true_mix_and_each_sources_em_estimate_of_eval(project, toy, tmp_path):
    from conftest import write_csv

    from ensembler.data.toy import teammate_csv

    truth = pd.concat([toy.eval, toy.train])
    import_source(project, write_csv(tmp_path / "p.csv", teammate_csv(truth, {Task.MASK: 3.0, Task.GENDER: 3.0, Task.AGE: 3.0}, seed=2)), "p")
    report = build_report(project)
    labels = toy.train["label"].to_numpy()
    np.testing.assert_allclose(report.truth_priors[Task.AGE], np.bincount(decode(labels)[Task.AGE], minlength=3) / len(labels))
    rows = {(r.source, r.task): r for r in report.priors}
    assert set(rows) == {("p", t) for t in (Task.MASK, Task.GENDER, Task.AGE)}
    age = rows[("p", Task.AGE)]
    from ensembler.data.store import Split, Store
    from ensembler.pipeline.calibration import Calibrator, fit
    from ensembler.pipeline.priors import em_priors

    store = Store(project.predictions)
    labelled = store.read("p", Split.VAL)
    ages = decode(labelled.labels)[Task.AGE]
    mix = np.bincount(ages, minlength=3) / len(ages)
    calibrated = fit(Calibrator.TS, labelled.probs[Task.AGE], ages).apply(store.read("p", Split.EVAL).probs[Task.AGE])
    np.testing.assert_allclose(age.eval, em_priors(calibrated, mix)[0])  # calibrated first, against the true mix
    assert age.eval[2] > mix[2]  # the toy eval is older than train, and EM sees it
    from typer.testing import CliRunner

    from ensembler.cli import app

    result = CliRunner().invoke(app, ["--zoo", str(project.zoo), "report"])
    assert result.exit_code == 0 and "class priors" in result.output and "eval (EM)" in result.output


def test_the_priors_table_says_where_em_fails_on_the_labelled_images(project, toy, tmp_path):
    """A weak age model that ignores the class mix (its probabilities believe 60+ is about a
    quarter of the people where one in forty is): EM on its calibrated labelled probabilities
    does not give back their mix, and the table says its eval estimate is not to be trusted;
    its strong gender probabilities hold."""
    from conftest import write_csv

    from ensembler.data.toy import teammate_csv

    truth = pd.concat([toy.eval, toy.train])
    import_source(project, write_csv(tmp_path / "p.csv", teammate_csv(truth, {Task.MASK: 3.0, Task.GENDER: 3.0, Task.AGE: 0.7}, seed=2)), "p")
    report = build_report(project)
    holds = {r.task: r.holds for r in report.priors}
    assert holds[Task.GENDER] and not holds[Task.AGE]
    from typer.testing import CliRunner

    from ensembler.cli import app

    result = CliRunner().invoke(app, ["--zoo", str(project.zoo), "report"])
    table = [row for line in result.output.splitlines() if (row := line.split())[:1] == ["p"] and row[1] in {str(t) for t in holds}]
    assert result.exit_code == 0 and [(row[1], row[-1]) for row in table] == [(str(t), "ok" if h else "fails") for t, h in holds.items()]
