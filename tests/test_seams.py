"""Issue 33: where two capabilities meet. Label fixes after compose, import and predict; fold
files checked when read; a folder-per-class task called ``label``; one AUC rule for a fold
without a class; flags a method does not use; report and compose running one auto."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import declared_project, touch, write_csv
from typer.testing import CliRunner

from ensembler.cli import app
from ensembler.data.dataset import read_folds, read_train, split_project
from ensembler.data.labels import Task, decode, encode
from ensembler.data.project import load_project, update_project
from ensembler.data.sources import import_source
from ensembler.data.toy import teammate_csv
from ensembler.errors import EnsError

runner = CliRunner()


def _invoke(project, *args: str):
    result = runner.invoke(app, ["--zoo", str(project.zoo), *args])
    return result


def _table(output: str) -> list[str]:
    """The score table of `ens report`'s output (up to its legend)."""
    lines = output.splitlines()
    return lines[: next(i for i, line in enumerate(lines) if line.startswith("macro F1 per task"))]


def _team(project, toy, tmp_path, flip: str | None = None, oof: bool = True) -> None:
    """Two teammates whose photos show person `flip` with the other gender (so the audit finds it)."""
    truth = pd.concat([toy.eval, toy.train])
    t = decode(truth["label"].to_numpy())
    if flip is not None:
        rows = truth["ImageID"].str.startswith(flip + "/").to_numpy()
        t[Task.GENDER][rows] = 1 - t[Task.GENDER][rows]
    shown = truth.assign(label=encode(t[Task.MASK], t[Task.GENDER], t[Task.AGE]))
    for seed in (0, 1):
        import_source(project, write_csv(tmp_path / f"S{seed}.csv", teammate_csv(shown, {Task.MASK: 4.0, Task.GENDER: 6.0, Task.AGE: 2.0}, seed=seed)), f"S{seed}", oof=oof)


# --- label fixes: stored sets never carry one ---------------------------------------------------


def test_accepted_fixes_reach_every_later_command_and_undoing_them_gives_back_the_first_numbers(project, toy, tmp_path):
    split_project(project, seed=0)
    flip = read_train(toy.data)["profile"].iloc[3]
    _team(project, toy, tmp_path, flip)
    scored = ("report", "--model", "S0", "--model", "S1", "--recipe", "*:S0+S1")
    first = _invoke(project, *scored)
    assert first.exit_code == 0, first.output
    accepted = _invoke(project, "audit", "--accept", "0.9")
    assert accepted.exit_code == 0 and "1 fix added" in accepted.output, accepted.output
    assert _invoke(project, "compose", "--recipe", "*:S0+S1", "--name", "v1").exit_code == 0
    with_fix = _invoke(project, *scored, "--model", "v1")
    assert with_fix.exit_code == 0, with_fix.output
    assert _table(with_fix.output) != _table(first.output) and "labels: 1 fix from label_fixes.csv" in with_fix.output
    # a source imported, and a composition made, while the fix is in force
    import_source(project, tmp_path / "S0.csv", "S0b", oof=True)
    assert _invoke(project, "compose", "--recipe", "*:S0b+S1", "--method", "stack", "--name", "v2").exit_code == 0
    stored = project.store.read("v2", "oof")
    given = read_train(toy.data).set_index("ImageID")["label"].reindex(stored.image_ids).to_numpy()
    assert (stored.labels == given).all()  # the labels as given, never the fix
    again = _invoke(project, *scored, "--model", "v1", "--model", "v2", "--model", "S0b")
    assert again.exit_code == 0, again.output
    # emptying the fix file, then un-naming it: every number of before comes back
    (project.root / "label_fixes.csv").write_text("profile,image,task,label\n")
    emptied = _invoke(project, *scored)
    update_project(project.zoo, label_fixes=None)
    assert load_project(project.zoo).label_fixes is None
    unnamed = _invoke(project, *scored)
    assert emptied.exit_code == unnamed.exit_code == 0, emptied.output + unnamed.output
    assert _table(emptied.output) == _table(unnamed.output) == _table(first.output)
    assert _invoke(project, *scored, "--model", "v1", "--model", "v2").exit_code == 0


def test_a_set_that_carries_a_fix_is_named_and_told_how_to_mend_it(project, toy, tmp_path):
    _team(project, toy, tmp_path, oof=False)
    store = project.store
    old = store.read("S1", "val")
    labels = old.labels.copy()
    labels[:7] = (labels[:7] + 3) % 18  # as ens 0.1 stored a set made while a fix was in force
    from dataclasses import replace

    store.write(replace(old, labels=labels), overwrite=True)
    with pytest.raises(EnsError, match=r"sources 'S0' and 'S1' carry other labels for 7 of the same images .* re-create it"):
        from ensembler.evaluate.report import build_report

        build_report(project, replicates=0)


# --- fold files, checked whenever they are read ----------------------------------------------------


def _damaged(rows: list[tuple[str, str]]) -> str:
    return "profile,fold\n" + "".join(f"{p},{f}\n" for p, f in rows)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda rows: rows[:-1], r"1 labelled person\(s\) have no fold, e\.g\. '"),
        (lambda rows: rows + [("999999_male_Asian_20", "0")], r"row 42: profile '999999_male_Asian_20' is not a labelled person of the data folder"),
        (lambda rows: rows + [rows[0]], r"row 42: profile '.*' listed twice"),
        (lambda rows: [(p, "3" if f == "2" else f) for p, f in rows], r"folds must be numbered 0\.\.k-1 with k >= 2, each holding a person \(fold 2 has no person\)"),
        (lambda rows: [(p, "0") for p, _ in rows], r"one fold only"),
        (lambda rows: [(rows[0][0], "x"), *rows[1:]], r"row 2: fold 'x' is not a whole number"),
    ],
)
def test_a_hand_edited_fold_file_is_one_error_naming_the_first_offending_row(project, toy, edit, match):
    split_project(project, seed=0)
    rows = [tuple(line.split(",")) for line in project.folds.read_text().splitlines()[1:]]
    project.folds.write_text(_damaged(edit(rows)))
    with pytest.raises(EnsError, match=match):
        read_folds(project.folds, read_train(toy.data)["profile"].unique(), "person")


def test_a_scored_person_missing_from_the_fold_file_is_an_error_not_a_silent_drop(project, toy, tmp_path):
    split_project(project, seed=0)
    _team(project, toy, tmp_path, oof=False)  # validation rows: the fold file decides which are scored
    whole = project.folds.read_text()
    project.folds.write_text("\n".join(whole.splitlines()[:-1]) + "\n")
    result = _invoke(project, "report")
    assert result.exit_code == 1 and result.output.count("Error:") == 1 and "has no fold" in result.output, result.output
    project.folds.write_text(whole)
    update_project(project.zoo, val_fold=7)
    result = _invoke(project, "report")
    assert result.exit_code == 1 and "project.val_fold is 7, and folds.csv has folds 0..4" in result.output, result.output


# --- a folder-per-class task called label -----------------------------------------------------------

FLOWERS = {
    "tasks": {"label": ["daisy", "rose", "tulip"]},
    "metric": "accuracy",
    "train": {"folders": "train"},
    "eval": {"csv": "sample_submission.csv", "id": "id", "images": "test"},
    "submission": {"answer": "label", "as": "name"},
}


def test_a_folder_per_class_task_called_label_is_read_split_and_composed(tmp_path):
    import ensembler as ens

    rng = np.random.default_rng(0)
    classes = FLOWERS["tasks"]["label"]
    for c, name in enumerate(classes):
        for i in range(20):
            touch(tmp_path / "train" / name / f"{name}{i}.png")
    test = [f"t{i}.png" for i in range(9)]
    for i in test:
        touch(tmp_path / "test" / i)
    pd.DataFrame({"id": test, "label": "daisy"}).to_csv(tmp_path / "sample_submission.csv", index=False)
    project = declared_project(tmp_path, FLOWERS)
    from ensembler.data.declared import read_labelled

    table = read_labelled(project.competition, tmp_path)
    assert list(table.columns) == ["ImageID", "path", "group", "label"] and table["label"].tolist() == [c for c in range(3) for _ in range(20)]
    folds = ens.split(project, folds=3)
    assert sorted(folds["fold"].value_counts()) == [20, 20, 20]
    truth = np.array([c for c in range(3) for _ in range(20)])
    probs = np.eye(3)[truth] * 0.6 + 0.4 * rng.dirichlet(np.ones(3), len(truth))
    frame = pd.DataFrame(np.vstack([probs, np.full((len(test), 3), 1 / 3)]), columns=classes)
    frame.insert(0, "id", [*table["ImageID"], *test])
    write_csv(tmp_path / "a.csv", frame)
    ens.import_source(project, tmp_path / "a.csv", "a", oof=True)
    done = ens.compose(project, "label:a", "soft")
    assert done.validation["recipe"]["accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == truth)))


# --- one AUC rule for a class a fold lacks -----------------------------------------------------------


def test_auc_leaves_out_a_class_the_images_lack_everywhere_alike():
    from sklearn.metrics import roc_auc_score

    from ensembler.scoring.metrics import metric_replicates, metric_value, nan_mean

    rng = np.random.default_rng(0)
    y = np.array([0, 1, 0, 1, 0, 1, 0, 0])  # class 2 of 3 absent
    probs = rng.dirichlet(np.ones(3), len(y))
    value = metric_value("auc", y, 3, probs)
    assert value == metric_replicates("auc", y, 3, np.ones((1, len(y))), probs)[0]
    assert value == pytest.approx(np.mean([roc_auc_score(y == c, probs[:, c]) for c in (0, 1)]), abs=1e-12)
    present = np.array([0, 1, 2, 1, 0, 2, 0, 1])  # every class present: scikit-learn's own number
    assert metric_value("auc", present, 3, probs) == pytest.approx(roc_auc_score(present, probs, multi_class="ovr", labels=[0, 1, 2]), abs=1e-12)
    assert np.isnan(metric_value("auc", np.zeros(4, int), 2, probs[:4, :2]))  # a binary AUC without positives
    assert nan_mean([0.5, np.nan, 0.7]) == pytest.approx(0.6) and np.isnan(nan_mean([np.nan]))


def test_a_cv_fold_without_positives_leaves_the_fold_mean_finite():
    from ensembler.data.competition import parse_competition
    from ensembler.pipeline.engine import Composed, cv_score

    from conftest import MELANOMA

    competition = parse_competition(MELANOMA, __import__("pathlib").Path("model_zoo.yaml"))
    labels = np.array([0, 0, 0, 1, 0, 1, 0, 1, 1])
    p = np.linspace(0.1, 0.9, 9)
    composed = Composed(np.arange(9).astype(str).astype(object), (p > 0.5).astype(int), {"target": np.stack([1 - p, p], 1)}, None, "soft", competition.space)
    folds = [(np.arange(3, 9), np.arange(3)), (np.arange(3), np.arange(3, 9))]  # the first holds no positive
    cv = cv_score(labels, composed, folds, competition)
    assert np.isfinite(cv.fold_mean) and cv.fold_std == 0.0 and cv.fold_mean == pytest.approx(cv_score(labels[3:], composed.take(np.arange(3, 9)), [(np.arange(0), np.arange(6))], competition).f1_18)


# --- a flag the method does not use is an error ---------------------------------------------------------


@pytest.mark.parametrize(
    "args, match",
    [
        (["compose", "--recipe", "*:S0+S1", "--balanced"], "--balanced shapes a stack's meta-model; --method soft has none"),
        (["compose", "--recipe", "*:S0+S1", "--method", "select", "--all-task-features"], "--all-task-features shapes a stack's meta-model; --method select"),
        (["compose", "--recipe", "*:S0+S1", "--auto", "--per-task"], "--per-task makes a vote vote each task on its marginals; --method auto"),
        (["compose", "--recipe", "*:S0+S1", "--method", "stack", "--per-task"], "--method stack learns per task already"),
        (["compose", "--recipe", "*:S0+S1", "--calibrate", "ts"], "--calibrate belongs to a prior correction; add --prior em"),
        (["compose", "--recipe", "*:S0+S1", "--force-prior"], "--force-prior belongs to a prior correction"),
        (["report", "--recipe", "*:S0+S1", "--method", "auto", "--per-task"], "--per-task makes a vote"),
    ],
)
def test_a_flag_the_chosen_method_does_not_use_is_one_error(project, toy, tmp_path, args, match):
    _team(project, toy, tmp_path, oof=False)
    result = _invoke(project, *args)
    assert result.exit_code == 1 and result.output.count("Error:") == 1 and match in result.output, result.output
    assert not list(project.root.glob("submissions/*.csv"))  # nothing written


def test_report_scores_auto_as_compose_does_with_the_eval_mix_and_the_run_away_check(project, toy, tmp_path):
    import ensembler as ens

    split_project(project, seed=0)
    _team(project, toy, tmp_path)
    composed = ens.compose(project, "*:S0+S1", "auto")
    assert "eval_mix" in composed.manifest["steps"][0]["auto"]  # the eval images weigh in
    tables = ens.report(project, recipes=["*:S0+S1"], methods=["auto"], replicates=0)
    row = tables.scores.set_index("method").loc["auto"]
    assert row["f1_18"] == composed.validation["recipe"]["f1_18"]
    steps = next(r.steps for r in tables.report.rows if r.method == "auto")
    assert steps == composed.manifest["steps"]  # the same run: its choice, its candidates, the eval mix they were weighed to
