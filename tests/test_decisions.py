"""Decisions for the metric (issue 35): cut points on the expected grade for quadratic kappa, the
prior-divided argmax for balanced accuracy; by hand, through compose and the command line, and
honest (one fold's labels never move that fold's decisions)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import declared_project, touch

import ensembler as ens
from ensembler.data.stable import decide
from ensembler.errors import EnsError
from ensembler.pipeline.decisions import cut, expected_grade, fit_cuts
from ensembler.scoring.metrics import metric_value

GRADES = ["none", "mild", "moderate", "severe", "proliferative"]
LESIONS = ["MEL", "NV", "BCC", "AK"]


def test_cut_counts_the_cut_points_at_or_below_each_grade():
    assert cut(np.array([0.2, 0.5, 0.51, 1.49, 3.9]), np.array([0.5, 1.5, 2.5, 3.5])).tolist() == [0, 1, 1, 1, 4]
    assert expected_grade(np.array([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]])).tolist() == [0.5, 1.75]


def test_fitted_cut_points_find_grades_that_rounding_misses():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    grade = 0.6 * y + 0.3 + rng.normal(0, 0.05, 400)  # shrunk towards the middle, as a regressor's expected grade is
    plain = metric_value("quadratic_kappa", y, 5, decided=cut(grade, np.arange(4) + 0.5))
    cuts = fit_cuts(grade, y, 5)
    assert np.all(np.diff(cuts) > 0)  # in order
    fitted = metric_value("quadratic_kappa", y, 5, decided=cut(grade, cuts))
    assert fitted == pytest.approx(1.0) and fitted > plain + 0.1


def test_uninformative_rows_leave_the_rounding():
    y = np.array([0, 1, 2])
    assert fit_cuts(np.array([0.0, 1.0, 2.0]), y, 3).tolist() == [0.5, 1.5]  # already perfect: no move improves


def _team(root, declared, classes, truth, skills, seed=0):
    """A declared project of groups of 3 images whose members see `truth` with `skills`, the
    first class over-called (a calibrated model's argmax under imbalance), imported out of fold."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    n_eval = 60
    ids = np.array([f"i{i:04d}.jpg" for i in range(n)] + [f"t{i:04d}.jpg" for i in range(n_eval)], dtype=object)
    everything = np.concatenate([truth, rng.choice(len(classes), n_eval)])
    task = next(iter(declared["tasks"]))
    pd.DataFrame({"image_id": ids[:n], task: [classes[c] for c in truth], "plant": [f"p{i // 3}" for i in range(n)]}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_id": ids[n:], task: 0}).to_csv(root / "sample_submission.csv", index=False)
    for i in ids[:n]:
        touch(root / "train" / i)
    for i in ids[n:]:
        touch(root / "test" / i)
    project = declared_project(root, declared)
    ens.split(project, folds=4, seed=0)
    k = len(classes)
    for m, skill in enumerate(skills):
        logits = rng.normal(size=(len(ids), k)) + skill * np.eye(k)[everything] + np.log(np.bincount(truth, minlength=k) + 1.0)
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        pd.DataFrame(p, columns=classes).assign(image_id=ids).to_csv(root / f"m{m}.csv", index=False)
        ens.import_source(project, root / f"m{m}.csv", f"m{m}", oof=True)
    return project


def _declared(metric, task, classes, answer_as=None):
    return {
        "tasks": {task: classes},
        "metric": metric,
        "train": {"csv": "train.csv", "id": "image_id", "images": "train", "labels": {task: task}, "group": "plant"},
        "eval": {"csv": "sample_submission.csv", "id": "image_id", "images": "test"},
        "submission": {"answer": task, **({"as": answer_as} if answer_as else {})},
    }


@pytest.fixture(scope="module")
def grades(tmp_path_factory):
    root = tmp_path_factory.mktemp("grades")
    truth = np.random.default_rng(1).choice(5, 240, p=[0.45, 0.15, 0.2, 0.1, 0.1])
    return _team(root, _declared("quadratic_kappa", "diagnosis", GRADES), GRADES, truth, (1.5, 1.0))


@pytest.fixture(scope="module")
def lesions(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesions")
    truth = np.random.default_rng(2).choice(4, 240, p=[0.1, 0.7, 0.15, 0.05])
    return _team(root, _declared("balanced_accuracy", "label", LESIONS, "name"), LESIONS, truth, (1.5, 1.0))


def test_cut_points_through_compose_decide_the_grades_the_manifest_records(grades):
    plain = ens.compose(grades, "*:m0+m1", "soft")
    done = ens.compose(grades, "*:m0+m1", ["soft", "cut_points"], name="cuts", write=True)
    record = done.step("cut_points")
    cuts = np.array(record["cut_points"])
    assert len(cuts) == 4 and np.all(np.diff(cuts) > 0) and record["cv"]["folds"] == 5  # the engine's folds
    grade = expected_grade(done.eval.probs["diagnosis"])
    assert done.eval.labels.tolist() == cut(grade, cuts).tolist()  # eval: the cuts fitted on every labelled image
    assert np.array_equal(done.eval.probs["diagnosis"], plain.eval.probs["diagnosis"])  # the probabilities are the vote's
    written = pd.read_csv(grades.submissions / "cuts.csv").set_index("image_id")["diagnosis"]
    assert written.loc[done.eval.image_ids].tolist() == cut(grade, cuts).tolist()  # the grade's index, matched by id
    manifest = json.loads((grades.submissions / "cuts.json").read_text())
    assert [s["step"] for s in manifest["steps"]] == ["soft", "cut_points"]
    assert record["cv"]["before"] == pytest.approx(plain.validation["recipe"]["quadratic_kappa"])
    assert done.validation["recipe"]["quadratic_kappa"] == pytest.approx(record["cv"]["after"])  # scored out of fold, the record's after


def test_the_prior_divided_decision_is_the_argmax_of_the_probabilities_over_the_labelled_mix(lesions):
    done = ens.compose(lesions, "*:m0+m1", [ens.Soft(), ens.PriorDivided()])
    priors = np.array(done.step("prior_divided")["priors"])
    labels = lesions.store.read("m0", "oof").labels
    counts = np.bincount(labels, minlength=4)
    assert priors == pytest.approx((counts + 1) / (counts.sum() + 4), abs=1e-6)
    assert done.eval.labels.tolist() == decide(done.eval.probs["label"] / priors).tolist()
    plain = ens.compose(lesions, "*:m0+m1", "soft")
    rare = 3  # AK, 5 % of the labels: called more often once divided by its share
    assert (done.eval.labels == rare).sum() >= (plain.eval.labels == rare).sum()
    record = done.step("prior_divided")
    assert record["cv"]["after"] > record["cv"]["before"]  # the balanced accuracy out of fold rises on this imbalanced team


def test_a_decision_for_another_metric_or_without_labelled_rows_is_refused(grades, lesions):
    with pytest.raises(EnsError, match=r"--method cut_points serves quadratic_kappa .*scored by balanced_accuracy"):
        ens.compose(lesions, "*:m0+m1", ["soft", "cut_points"])
    with pytest.raises(EnsError, match=r"--decide prior-divided: not one of cut-points, prior-divided|serves balanced_accuracy"):
        ens.compose(grades, "*:m0+m1", ["soft", "prior_divided"])


def test_the_command_line_decides_for_the_metric(grades):
    from typer.testing import CliRunner

    from ensembler.cli import app

    zoo = str(grades.zoo)
    result = CliRunner().invoke(app, ["--zoo", zoo, "compose", "--recipe", "*:m0+m1", "--decide", "cut-points", "--name", "cli-cuts"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "decided for the metric: cut points [" in result.output and "CV quadratic_kappa" in result.output
    wrong = CliRunner().invoke(app, ["--zoo", zoo, "compose", "--recipe", "*:m0+m1", "--decide", "prior-divided"])
    assert wrong.exit_code == 1 and "serves balanced_accuracy" in wrong.output
    helped = " ".join(CliRunner().invoke(app, ["compose", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "cut-points (quadratic_kappa)" in helped and "prior-divided (balanced_accuracy)" in helped


@pytest.mark.parametrize("step", ["cut_points", "prior_divided"])
def test_one_folds_labels_never_move_that_folds_decisions(grades, lesions, step):
    """The honesty property of issue 34 for the two decisions: the labels of one engine fold's
    groups changed (each to the next class), that fold's decided rows stay bit for bit, while
    the fitted parameters move (the new labels reached the fit)."""
    from dataclasses import replace

    from ensembler.pipeline.composition import eval_target, gather_labelled
    from ensembler.pipeline.engine import Context, Pipeline, run
    from ensembler.pipeline.folds import Folds
    from ensembler.pipeline.recipe import parse_recipe
    from ensembler.pipeline.steps import pipeline_of

    project = grades if step == "cut_points" else lesions
    recipe = parse_recipe("*:m0+m1", project.competition.space)
    labelled, _ = gather_labelled(project, project.store, recipe, step)
    held = Folds.of(labelled.ids, labelled.groups)[0][1]
    k = project.competition.space.n_joint
    changed = labelled.labels.copy()
    changed[held] = (changed[held] + 1) % k
    pipeline = Pipeline(pipeline_of(["soft", step]).steps)
    target, _ = eval_target(project, recipe)
    before = run(pipeline, labelled, target, Context(recipe, project))
    after = run(pipeline, replace(labelled, labels=changed), target, Context(recipe, project))
    assert np.array_equal(before.scored.labels[held], after.scored.labels[held])
    assert before.records[-1] != after.records[-1]


@pytest.mark.parametrize("step", ["cut_points", "prior_divided"])
def test_auto_tries_the_metrics_decision_and_keeps_it_only_on_evidence(grades, lesions, step):
    project = grades if step == "cut_points" else lesions
    done = ens.compose(project, "*:m0+m1", "auto")
    record = done.step(step)
    assert [r["step"] for r in done.manifest["steps"]] == ["auto", step] and record["optional"] is True
    assert isinstance(record["applied"], bool) and record["reason"] and len(record["check"]["interval"]) == 2
    assert record["applied"] == (record["check"]["interval"][0] > 0)
    probs = done.eval.probs[project.competition.tasks[0].name]
    if not record["applied"]:  # kept: auto's own decisions, the argmax of its probabilities
        expected = decide(probs)
    elif step == "cut_points":
        expected = cut(expected_grade(probs), np.array(record["cut_points"]))
    else:
        expected = decide(probs / np.array(record["priors"]))
    assert done.eval.labels.tolist() == expected.tolist()


def test_a_map_at_k_competition_answers_its_likeliest_names_end_to_end(tmp_path):
    """Split, import, compose (a vote, a stack, auto), report with intervals, the submission's
    answer the three likeliest names, likeliest first; the hard vote and a ranked import refused."""
    from typer.testing import CliRunner

    from ensembler.cli import app
    from ensembler.data.stable import top_classes

    whales = [f"w_{i:02d}" for i in range(8)]
    truth = np.random.default_rng(3).choice(8, 120)
    project = _team(tmp_path, _declared("map@3", "Id", whales, "name"), whales, truth, (1.5, 1.0))
    for method in ("soft", "stack", "auto"):
        done = ens.compose(project, "*:m0+m1", method, name=f"whale-{method}", write=True)
        written = pd.read_csv(project.submissions / f"whale-{method}.csv", dtype=str).set_index("image_id")["Id"]
        expected = [" ".join(whales[c] for c in row) for row in top_classes(done.eval.probs["Id"], 3)]
        assert written.loc[done.eval.image_ids].tolist() == expected
        assert 0 <= done.validation["recipe"]["map@3"] <= 1
    tables = ens.report(project, recipes=["*:m0+m1"], methods=["soft", "auto"], replicates=200)
    scores = tables.scores.set_index("name")
    assert (scores["map@3_low"] <= scores["map@3"]).all() and (scores["map@3"] <= scores["map@3_high"]).all()
    zoo = str(project.zoo)
    hard = CliRunner().invoke(app, ["--zoo", zoo, "compose", "--recipe", "*:m0+m1", "--method", "hard"])
    assert hard.exit_code == 1 and "scored by map@3 on the 3 likeliest" in hard.output
    pd.DataFrame({"image_id": done.eval.image_ids, "Id": expected}).to_csv(tmp_path / "ranked.csv", index=False)
    ranked = CliRunner().invoke(app, ["--zoo", zoo, "import", str(tmp_path / "ranked.csv"), "--name", "ranked"])
    assert ranked.exit_code == 1 and "lists 3 classes (a ranked map@K answer)" in ranked.output


@pytest.mark.parametrize("which", ["grades", "lesions"])
def test_the_report_scores_kappa_and_balanced_accuracy_with_intervals_as_compose_does(grades, lesions, which):
    project = grades if which == "grades" else lesions
    metric = str(project.competition.metric)
    tables = ens.report(project, recipes=["*:m0+m1"], methods=["soft", "stack", "auto"], replicates=100)
    scores = tables.scores
    assert (scores[f"{metric}_low"] <= scores[metric]).all() and (scores[metric] <= scores[f"{metric}_high"]).all()
    auto = scores[scores["method"] == "auto"].iloc[0]
    assert auto[metric] == pytest.approx(ens.compose(project, "*:m0+m1", "auto").validation["recipe"][metric])  # the decision auto brought included
