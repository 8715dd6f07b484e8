"""Issue 33: where two capabilities meet. Label fixes after compose, import and predict; fold
files checked when read; a folder-per-class task called ``label``; one AUC rule for a fold
without a class; flags a method does not use; report and compose running one auto."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import PLANTS, chest, declared_project, touch, write_csv
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
    assert np.isfinite(cv.fold_mean) and cv.fold_std == 0.0 and cv.fold_mean == pytest.approx(cv_score(labels[3:], composed.take(np.arange(3, 9)), [(np.arange(0), np.arange(6))], competition).value)


# --- a flag the method does not use is an error ---------------------------------------------------------


@pytest.mark.parametrize(
    "args, match",
    [
        (["compose", "--recipe", "*:S0+S1", "--balanced"], "--balanced shapes a stack's meta-model; --method soft has none"),
        (["compose", "--recipe", "*:S0+S1", "--method", "select", "--all-task-features"], "--all-task-features shapes a stack's meta-model; --method select has none (use --method stack)"),
        (["compose", "--recipe", "*:S0+S1", "--auto", "--per-task"], "--per-task makes a vote vote each task on its marginals; --method auto"),
        (["compose", "--recipe", "*:S0+S1", "--method", "stack", "--per-task"], "--per-task makes a vote vote each task on its marginals; --method stack has none (use --method soft, geo, hard, rank"),
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


# --- multi-label answers and the teams' own submission layouts -----------------------------------------

FINDINGS = [f"f{i}" for i in range(6)]
CHEST = chest(FINDINGS)
ISIC = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
LESIONS = {
    "tasks": {"diagnosis": ISIC},
    "metric": "accuracy",
    "train": {"csv": "ISIC_2019_Training_GroundTruth.csv", "id": "image", "images": "train/{}.jpg", "labels": {"diagnosis": ISIC}},
    "eval": {"csv": "sample.csv", "id": "image", "images": "test/{}.jpg"},
    "submission": {"proba": {c: c for c in ISIC}},
}


def _declared_folder(root, declared, train: pd.DataFrame, test_ids: list[str]):
    """Write `declared`'s train CSV (`train`, as the competition gives it), its sample
    submission and stand-in images; returns the project."""
    spec, ev = declared["train"], declared["eval"]
    train.to_csv(root / spec["csv"], index=False)
    sample = pd.DataFrame({ev["id"]: test_ids, **{c: 0 for c in declared["submission"]["proba"]}})
    sample.to_csv(root / ev["csv"], index=False)
    for images, ids in ((spec["images"], train[spec["id"]]), (ev["images"], test_ids)):
        for i in ids:
            touch(root / (images.replace("{}", i) if "{}" in images else f"{images}/{i}"))
    return declared_project(root, declared)


def _member(rng, truth: np.ndarray, n_eval: int, k: int, skill: float) -> np.ndarray:
    """Softmax probabilities ``(n_labelled + n_eval, k)`` leaning toward `truth` by `skill`."""
    logits = rng.normal(size=(len(truth) + n_eval, k))
    logits[np.arange(len(truth)), truth] += skill
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def test_multi_label_findings_fill_each_column_from_its_own_task(tmp_path):
    import ensembler as ens
    from scipy.stats import rankdata

    from ensembler.data.competition import parse_competition

    bare = {**CHEST, "submission": {"proba": {"F0 - Abnormal": "yes"}}}
    with pytest.raises(EnsError, match=r"class 'yes' is a class of 6 tasks; name the task's: f0\.yes, f1\.yes, f2\.yes, f3\.yes, f4\.yes, f5\.yes"):
        parse_competition(bare, tmp_path / "model_zoo.yaml")
    rng = np.random.default_rng(3)
    n, n_eval = 90, 20
    truth = rng.random((n, 6)) < np.linspace(0.2, 0.5, 6)
    train = pd.DataFrame({"StudyUID": [f"s{i}" for i in range(n)], "PatientID": [f"p{i // 3}" for i in range(n)], **{f: truth[:, j].astype(int) for j, f in enumerate(FINDINGS)}})
    test = [f"t{i}" for i in range(n_eval)]
    project = _declared_folder(tmp_path, CHEST, train, test)
    columns = list(CHEST["submission"]["proba"])
    members = {}
    for m in range(3):  # each member writes the submission's own layout: one column per finding, p(yes)
        p = np.clip(np.vstack([truth * 0.5 + rng.random((n, 6)) * 0.5, rng.random((n_eval, 6))]), 0, 1).astype(np.float32) ** (m + 1)
        members[f"m{m}"] = p
        frame = pd.DataFrame(p, columns=columns)
        frame.insert(0, "StudyUID", [*train["StudyUID"], *test])
        write_csv(tmp_path / f"m{m}.csv", frame)
        ens.import_source(project, tmp_path / f"m{m}.csv", f"m{m}")
        stored = project.store.read(f"m{m}", "eval")
        assert all(np.array_equal(stored.probs[f][:, 1], p[n:, j]) for j, f in enumerate(FINDINGS))  # column j is task j's
    recipe = "*:m0+m1+m2"
    soft = ens.compose(project, recipe, "soft")
    for j, column in enumerate(columns):  # the soft vote's column j is the members' mean of column j
        mean = np.mean([members[m][n:, j].astype(np.float64) for m in members], axis=0)
        np.testing.assert_allclose(soft.submission[column].astype(np.float32), mean, rtol=1.5e-7)  # float32's last place: a/3+b/3+c/3 against (a+b+c)/3
    ranked = ens.compose(project, recipe, "rank")
    for j, column in enumerate(columns):  # rank averaging per column, as the teams' scripts do
        mean_rank = np.mean([rankdata(members[m][n:, j]) / n_eval for m in members], axis=0)
        np.testing.assert_allclose(ranked.submission[column].astype(float), mean_rank, rtol=1e-6)
    auto = ens.compose(project, recipe, "auto")
    assert auto.validation["metric"] == "auc" and set(auto.submission.columns) == {"StudyUID", *columns}


@pytest.mark.parametrize("declared, ids_of", [(PLANTS, lambda i: f"Train_{i}"), (LESIONS, lambda i: f"ISIC_{i:07d}")])
def test_a_submissions_per_class_layout_imports_as_written_and_composes_as_the_teams_script(tmp_path, declared, ids_of):
    """Plant Pathology 2020 and ISIC 2019: train labels one-hot (0/1, or 1.0/0.0), teammates'
    files in the submission's own layout (a probability column per class); the soft vote is the
    mean of their columns, as the teams' averaging scripts wrote it."""
    import ensembler as ens

    rng = np.random.default_rng(1)
    classes = next(iter(declared["tasks"].values()))
    k, n, n_eval = len(classes), 80, 16
    truth = rng.choice(k - (1 if classes[-1] == "UNK" else 0), n)  # ISIC's UNK is never a train label
    spec = declared["train"]
    one_hot = np.eye(k)[truth]
    train = pd.DataFrame({spec["id"]: [ids_of(i) for i in range(n)], **{c: one_hot[:, j] if c in ISIC else one_hot[:, j].astype(int) for j, c in enumerate(classes)}})
    test = [ids_of(1000 + i) for i in range(n_eval)]
    project = _declared_folder(tmp_path, declared, train, test)
    from ensembler.data.declared import read_labelled

    assert read_labelled(project.competition, tmp_path)["label"].tolist() == truth.tolist()
    files = {}
    for m, skill in (("cnn", 2.0), ("vit", 1.0)):
        p = _member(rng, truth, n_eval, k, skill)
        frame = pd.DataFrame(p, columns=classes)
        frame.insert(0, spec["id"], [*train[spec["id"]], *test])
        files[m] = write_csv(tmp_path / f"{m}.csv", frame)
        written = ens.import_source(project, files[m], m)
        assert written[0]["origin"]["columns"] == f"{classes[0]}..{classes[-1]} ({next(iter(declared['tasks']))})"
    sub = ens.compose(project, "*:cnn+vit", "soft", name="mean", write=True)
    a, b = (pd.read_csv(files[m]).set_index(spec["id"]).loc[test] for m in ("cnn", "vit"))
    script = (a.astype(np.float32).astype(np.float64) + b.astype(np.float32).astype(np.float64)) / 2  # the team's own averaging, on the float32 values ens keeps
    written = pd.read_csv(sub.files[0]).set_index(spec["id"])
    np.testing.assert_allclose(written[classes].to_numpy(np.float32), script[classes].to_numpy(), rtol=1.5e-7)  # float32's last place


def test_one_hot_train_labels_need_exactly_one_class_a_row(tmp_path):
    classes = PLANTS["train"]["labels"]["label"]
    train = pd.DataFrame({"image_id": ["a", "b"], "healthy": [1, 1], "multiple_diseases": [0, 1], "rust": [0, 0], "scab": [0, 0]})
    project = _declared_folder(tmp_path, PLANTS, train, ["t"])
    from ensembler.data.declared import read_labelled

    with pytest.raises(EnsError, match=r"train.csv: row 3: the one-hot columns of label hold healthy=1, multiple_diseases=1, rust=0, scab=0; each row marks exactly one class"):
        read_labelled(project.competition, tmp_path)
    from ensembler.data.competition import parse_competition

    with pytest.raises(EnsError, match=r"one-hot columns name each of the 4 classes in order"):
        parse_competition({**PLANTS, "train": {**PLANTS["train"], "labels": {"label": classes[:3]}}}, tmp_path / "model_zoo.yaml")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: {**d, "metric": "accuracy", "submission": {"answer": "image_id"}}, r"'image_id' is the sample submission's id column"),
        (lambda d: {**d, "submission": {"proba": {"image_id": "healthy"}}}, r"'image_id' is the sample submission's id column"),
        (lambda d: {**d, "tasks": {"a": ["x", "y"], "b": ["u", "v"]}, "joint": "product", "train": {**d["train"], "labels": {"a": "a", "b": "b"}}, "metric": "accuracy", "submission": {"answer": "label", "as": "name"}}, r"as: name writes one task's class names; the answer of joint: product is the product's index"),
        (lambda d: {**d, "tasks": {"path": ["x", "y"]}}, r"a task may not be called 'path'"),
    ],
)
def test_declarations_that_would_write_the_wrong_column_are_refused(tmp_path, change, match):
    from ensembler.data.competition import parse_competition

    with pytest.raises(EnsError, match=match):
        parse_competition(change(PLANTS), tmp_path / "model_zoo.yaml")


def test_a_sample_column_called_path_is_kept_and_a_key_written_twice_is_refused(tmp_path):
    import ensembler as ens

    declared = {**PLANTS, "submission": {"proba": {c: c for c in PLANTS["tasks"]["label"]}}}
    train = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "healthy": [1, 0, 0, 0], "multiple_diseases": [0, 1, 0, 0], "rust": [0, 0, 1, 0], "scab": [0, 0, 0, 1]})
    project = _declared_folder(tmp_path, declared, train, ["t1", "t2"])
    sample = pd.read_csv(tmp_path / "sample_submission.csv").assign(path=["keep/me", "and/me"])
    sample.to_csv(tmp_path / "sample_submission.csv", index=False)
    frame = pd.DataFrame(np.full((2, 4), 0.25), columns=PLANTS["tasks"]["label"]).assign(image_id=["t1", "t2"])
    ens.import_source(project, write_csv(tmp_path / "a.csv", frame), "a")
    assert ens.compose(project, "label:a").submission["path"].tolist() == ["keep/me", "and/me"]
    (tmp_path / "model_zoo.yaml").write_text((tmp_path / "model_zoo.yaml").read_text() + "competition:\n  tasks: {label: [a, b]}\n")
    with pytest.raises(EnsError, match=r"model_zoo.yaml: key 'competition' appears twice \(line \d+\); keep one"):
        load_project(tmp_path / "model_zoo.yaml")
