"""The declared competition (issue 24's first slice): the mask preset is today's label scheme,
declarations of other layouts parse, bad ones are one error naming the key, and the metrics
agree with scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import CASSAVA, MELANOMA, SKETCH, WORDS
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score
from typer.testing import CliRunner

from ensembler.cli import app
from ensembler.data.competition import MASK, Metric, parse_competition
from ensembler.data.labels import CLASS_NAMES, N_CLASSES, N_JOINT, TASKS
from ensembler.data.project import load_project
from ensembler.errors import EnsError
from ensembler.scoring.metrics import metric_value


def test_without_a_declaration_the_competition_is_the_mask_one(tmp_path):
    project = load_project(tmp_path / "model_zoo.yaml")
    assert project.competition is MASK and parse_competition("mask", tmp_path / "z.yaml") is MASK
    assert MASK.task_names == tuple(t.value for t in TASKS)
    assert {t.name: t.classes for t in MASK.tasks} == {t.value: CLASS_NAMES[t] for t in TASKS}
    assert {t.name: t.n_classes for t in MASK.tasks} == {t.value: N_CLASSES[t] for t in TASKS}
    assert MASK.n_joint == N_JOINT and MASK.joint and MASK.metric is Metric.MACRO_F1 and MASK.is_preset


@pytest.mark.parametrize("declared, n, metric", [(CASSAVA, 5, "accuracy"), (MELANOMA, 2, "auc"), (SKETCH, len(WORDS), "macro_f1")])
def test_declarations_of_other_layouts_parse(tmp_path, declared, n, metric):
    zoo = tmp_path / "model_zoo.yaml"
    zoo.write_text(yaml.safe_dump({"competition": declared}))
    competition = load_project(zoo).competition
    assert len(competition.tasks) == 1 and competition.tasks[0].n_classes == n and competition.metric == metric
    assert not competition.is_preset and competition.n_joint == n
    assert competition.tasks[0].classes == tuple(next(iter(declared["tasks"].values())))  # declared order, never sorted


def test_two_tasks_with_a_product_answer():
    declared = {**CASSAVA, "tasks": {"colour": ["red", "green"], "shape": ["round", "square", "star"]}, "joint": "product", "train": {**CASSAVA["train"], "labels": {"colour": "c", "shape": "s"}}}
    competition = parse_competition(declared, Path("z.yaml"))
    assert competition.joint and competition.n_joint == 6 and "6 joint classes" in competition.line()


def _with(base, path, value):
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    *parents, last = path
    target = out
    for p in parents:
        target = target[p]
    if value is None:
        del target[last]
    else:
        target[last] = value
    return out


@pytest.mark.parametrize(
    "declared, match",
    [
        (_with(CASSAVA, ["metric"], "kappa"), r"competition.metric: .kappa. is not a metric: one of macro_f1, accuracy, quadratic_kappa, balanced_accuracy, auc, log_loss, map@K"),
        (_with(CASSAVA, ["tasks"], {"label": ["only"]}), r"competition.tasks.label: a task needs two classes or more"),
        (_with(CASSAVA, ["tasks"], {"label": ["a", "b", "a"]}), r"must be distinct"),
        (_with(CASSAVA, ["train", "id"], None), r"competition.train.id: required"),
        (_with(CASSAVA, ["eval", "id"], None), r"competition.eval.id: required"),
        (_with(MELANOMA, ["train", "images"], "jpeg/train/.jpg"), r"competition.train.images: 'jpeg/train/.jpg' is a pattern without one \{\}"),
        (_with(MELANOMA, ["submission"], {"answer": "target"}), r"competition.metric: auc is scored on probabilities, and submission.answer carries a class"),
        (_with(CASSAVA, ["train", "labels"], {"lable": "label"}), r"unknown task .* 'lable' \(did you mean: label"),
        (_with(CASSAVA, ["train", "colour"], "red"), r"competition.train: unknown key 'colour'"),
        (_with(CASSAVA, ["submission"], {"answer": "label", "proba": {"label": "cbb"}}), r"declare answer .* or proba .*, one of them"),
        (_with(MELANOMA, ["submission"], {"proba": {"target": "malign"}}), r"unknown class .* 'malign'"),
        (_with(CASSAVA, ["joint"], "product"), r"product needs two tasks or more"),
        ({**SKETCH, "tasks": {"a": ["x", "y"], "b": ["u", "v"]}, "joint": "product"}, r"a folder per class holds one task"),
        ({"tasks": CASSAVA["tasks"], "metric": "accuracy"}, r"competition.train: required"),
        (_with(CASSAVA, ["tasks"], {"label": ["a", "b"], "shape": ["c", "d"]}), r"a task may not be called 'label'"),
    ],
)
def test_a_bad_declaration_is_one_error_naming_the_key_and_the_file(tmp_path, declared, match):
    zoo = tmp_path / "model_zoo.yaml"
    zoo.write_text(yaml.safe_dump({"competition": declared}))
    with pytest.raises(EnsError, match=match):
        load_project(zoo)
    result = CliRunner().invoke(app, ["--zoo", str(zoo), "zoo", "list"])
    assert result.exit_code == 1 and result.output.count("Error:") == 1 and "model_zoo.yaml" in result.output


def test_an_unknown_preset_suggests_the_known_one(tmp_path):
    with pytest.raises(EnsError, match=r"unknown competition preset .* 'masks' \(did you mean: mask"):
        parse_competition("masks", tmp_path / "model_zoo.yaml")


def test_a_declared_competition_is_not_run_on_the_mask_layout_by_mistake(tmp_path):
    zoo = tmp_path / "model_zoo.yaml"
    (tmp_path / "data").mkdir()
    zoo.write_text(yaml.safe_dump({"project": {"data": "data"}, "competition": CASSAVA}))
    result = CliRunner().invoke(app, ["--zoo", str(zoo), "group"])
    assert result.exit_code == 1 and result.output.count("Error:") == 1
    assert "declares its own competition (tasks label 5; accuracy)" in result.output and "the other commands run the mask competition only" in result.output


def test_zoo_list_names_the_competition(tmp_path):
    result = CliRunner().invoke(app, ["--zoo", str(tmp_path / "model_zoo.yaml"), "zoo", "list"])
    assert result.exit_code == 0 and "competition: mask (built in): tasks mask 3, gender 2, age 3; 18 joint classes; macro_f1" in result.output


def test_the_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    for k in (2, 5):
        y = rng.integers(0, k, 300)
        logits = rng.normal(size=(300, k))
        logits[np.arange(300), y] += 1.0
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        decided = probs.argmax(axis=1)
        assert metric_value("macro_f1", y, k, probs) == pytest.approx(f1_score(y, decided, average="macro", labels=list(range(k)), zero_division=0), abs=1e-12)
        assert metric_value("accuracy", y, k, probs) == pytest.approx(accuracy_score(y, decided), abs=1e-12)
        assert metric_value("log_loss", y, k, probs) == pytest.approx(log_loss(y, probs), abs=1e-12)
        expected_auc = roc_auc_score(y, probs[:, 1]) if k == 2 else roc_auc_score(y, probs, multi_class="ovr", average="macro")
        assert metric_value("auc", y, k, probs) == pytest.approx(expected_auc, abs=1e-12)
    assert metric_value("accuracy", np.array([0, 1, 1]), 2, decided=np.array([0, 1, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="scored on probabilities"):
        metric_value("auc", np.array([0, 1]), 2, decided=np.array([0, 1]))
