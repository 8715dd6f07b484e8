"""A declared competition's files, in three real layouts made on the fly: a CSV of labels with
class names (cassava-like), a binary task with patient groups, a path pattern and a probability
submission (melanoma-like), and a folder per class with hundreds of classes (sketch-like)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CASSAVA, MELANOMA, SKETCH, WORDS, declared_project, touch

from ensembler.data.competition import parse_competition
from ensembler.data.declared import read_labelled, read_sample, submission_bytes
from ensembler.errors import EnsError


def cassava(root: Path, labels=("cbb", "3", "healthy", "cmd")) -> Path:
    ids = [f"{1000 + i}.jpg" for i in range(len(labels))]
    pd.DataFrame({"image_id": ids, "label": list(labels)}).to_csv(root / "train.csv", index=False)
    for i in ids:
        touch(root / "train_images" / i)
    pd.DataFrame({"image_id": ["t1.jpg", "t2.jpg", "t3.jpg"], "label": [0, 0, 0]}).to_csv(root / "sample_submission.csv", index=False)
    for i in ("t1.jpg", "t2.jpg", "t3.jpg"):
        touch(root / "test_images" / i)
    return root


def competition(declared):
    return parse_competition(declared, Path("model_zoo.yaml"))


def test_a_csv_of_class_names_or_indices(tmp_path):
    root = cassava(tmp_path)
    table = read_labelled(competition(CASSAVA), root)
    assert table["ImageID"].tolist() == ["1000.jpg", "1001.jpg", "1002.jpg", "1003.jpg"]
    assert table["label"].tolist() == [0, 3, 4, 3] and (table["label"] == table["label"].astype(int)).all() and list(table.columns) == ["ImageID", "path", "group", "label"]
    assert table["path"].iloc[0] == str(root / "train_images" / "1000.jpg") and (table["group"] == table["ImageID"]).all()


def test_groups_a_pattern_and_a_probability_submission_matched_by_id(tmp_path):
    names = ["ISIC_1", "ISIC_2", "ISIC_3", "ISIC_4"]
    pd.DataFrame({"image_name": names, "patient_id": ["p1", "p1", "p2", "p3"], "sex": ["m", "m", "f", "f"], "target": [0, 1, 0, 0]}).to_csv(tmp_path / "train.csv", index=False)
    for n in names:
        touch(tmp_path / "jpeg" / "train" / f"{n}.jpg")
    test = ["ISIC_9", "ISIC_7", "ISIC_8"]
    pd.DataFrame({"image_name": test, "target": [0, 0, 0]}).to_csv(tmp_path / "sample_submission.csv", index=False)
    for n in test:
        touch(tmp_path / "jpeg" / "test" / f"{n}.jpg")
    comp = competition(MELANOMA)
    table = read_labelled(comp, tmp_path)
    assert table["group"].tolist() == ["p1", "p1", "p2", "p3"] and table["label"].tolist() == [0, 1, 0, 0]
    assert table["path"].iloc[1] == str(tmp_path / "jpeg" / "train" / "ISIC_2.jpg")
    sample = read_sample(comp, tmp_path)
    ours = np.array(["ISIC_7", "ISIC_8", "ISIC_9"], dtype=object)  # another order than the sample's
    probs = np.array([[0.3, 0.7], [0.9, 0.1], [0.5, 0.5]])
    written = pd.read_csv(io.BytesIO(submission_bytes(comp, sample, ours, probs=probs)))
    assert written["image_name"].tolist() == test  # the sample's rows, in its order
    assert written["target"].tolist() == [0.5, 0.7, 0.1]  # matched by id, never by order


def test_a_folder_per_class_in_the_declared_order(tmp_path):
    for word, files in (("10", ["b.png", "a.png"]), ("2", ["c.png"]), ("w7", ["d.png"])):
        for f in files:
            touch(tmp_path / "train" / word / f)
    for word in WORDS:
        (tmp_path / "train" / word).mkdir(parents=True, exist_ok=True)
    table = read_labelled(competition(SKETCH), tmp_path)
    assert table["ImageID"].tolist() == ["2/c.png", "10/a.png", "10/b.png", "w7/d.png"]  # "2" is class 0, "10" class 8
    assert table["label"].tolist() == [0, 8, 8, WORDS.index("w7")]
    pd.DataFrame({"key_id": ["k2", "k1"], "word": ["x", "x"]}).to_csv(tmp_path / "sample_submission.csv", index=False)
    for k in ("k1", "k2"):
        touch(tmp_path / "test" / k)
    comp = competition(SKETCH)
    out = pd.read_csv(io.BytesIO(submission_bytes(comp, read_sample(comp, tmp_path), np.array(["k1", "k2"], dtype=object), decided=np.array([8, 0]))), dtype=str)
    assert out["key_id"].tolist() == ["k2", "k1"] and out["word"].tolist() == ["2", "10"]  # names, matched by id


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda r: cassava(r, ("cbb", "mosaic")), r"train.csv column label: 1 label\(s\) are not a declared class, e.g. row 3 holds 'mosaic'"),
        (lambda r: cassava(r, ("cbb", "7")), r"e.g. row 3 holds '7' \(declared: .*, or 0-4\)"),
        (lambda r: (cassava(r), pd.DataFrame({"image_id": ["a.jpg", "a.jpg"], "label": ["cbb", "cbb"]}).to_csv(r / "train.csv", index=False)), r"id 'a.jpg' is listed twice"),
        (lambda r: (cassava(r), pd.DataFrame({"img": ["a.jpg"], "label": ["cbb"]}).to_csv(r / "train.csv", index=False)), r"missing column\(s\) image_id"),
        (lambda r: (cassava(r), (r / "train_images" / "1001.jpg").unlink()), r"1 listed image\(s\) missing, e.g. .*1001.jpg"),
    ],
)
def test_bad_train_files_are_one_error_naming_the_file_and_the_row(tmp_path, damage, match):
    damage(tmp_path)
    with pytest.raises(EnsError, match=match):
        read_labelled(competition(CASSAVA), tmp_path)


def test_an_undeclared_class_folder_and_a_missing_one_are_errors(tmp_path):
    small = {**SKETCH, "tasks": {"word": ["cat", "dog"]}}
    touch(tmp_path / "train" / "cat" / "a.png")
    touch(tmp_path / "train" / "cow" / "b.png")
    with pytest.raises(EnsError, match=r"folder\(s\) 'cow' are not declared classes of word"):
        read_labelled(competition(small), tmp_path)
    (tmp_path / "train" / "cow" / "b.png").unlink()
    (tmp_path / "train" / "cow").rmdir()
    with pytest.raises(EnsError, match=r"no folder for the declared class 'dog'"):
        read_labelled(competition(small), tmp_path)


def test_a_submission_must_answer_every_sample_row(tmp_path):
    root = cassava(tmp_path)
    comp = competition(CASSAVA)
    sample = read_sample(comp, root)
    with pytest.raises(EnsError, match=r"1 missing \(e.g. 't3.jpg'\)"):
        submission_bytes(comp, sample, np.array(["t1.jpg", "t2.jpg"], dtype=object), decided=np.array([1, 2]))
    out = pd.read_csv(io.BytesIO(submission_bytes(comp, sample, np.array(["t3.jpg", "t1.jpg", "t2.jpg"], dtype=object), decided=np.array([4, 1, 2]))))
    assert out["label"].tolist() == [1, 2, 4] and list(out.columns) == ["image_id", "label"]


# --- prediction sets in a declared label space ----------------------------------------------


def test_prediction_sets_keep_a_declared_space_and_refuse_another(tmp_path):
    from ensembler.data.labels import MASK_SPACE
    from ensembler.data.store import PredictionSet, Split, Store

    cassava_space, sketch_space = competition(CASSAVA).space, competition(SKETCH).space
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=4).astype(np.float32)
    store = Store(tmp_path / "predictions", cassava_space)
    meta = store.write(PredictionSet("eff", Split.EVAL, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], {"label": p}, labels=[0, 4, 2, 1], space=cassava_space))
    assert meta["tasks"] == ["label"] and meta["classes"] == {"label": 5}
    assert (tmp_path / "predictions" / "eff" / "eval.csv").read_text().splitlines()[0] == "ImageID,label,label_0,label_1,label_2,label_3,label_4"
    for fresh in (True, False):  # from the CSV, then from its binary sidecar
        if fresh:
            (tmp_path / "predictions" / "eff" / "eval.npz").unlink()
        back = store.read("eff", Split.EVAL)
        assert back.tasks == ("label",) and back.space is cassava_space and back.labels.tolist() == [0, 4, 2, 1]
        np.testing.assert_array_equal(back.probs["label"], p)
    for space, line in [(MASK_SPACE, r"predicts label 5; this project's competition has mask 3, gender 2, age 3 \(a set made for another competition\?\)"),
                        (sketch_space, r"predicts label 5; this project's competition has word 310")]:
        with pytest.raises(EnsError, match=line):
            Store(tmp_path / "predictions", space).read("eff", Split.EVAL)
    with pytest.raises(EnsError, match=r"unknown task 'mask'"):
        PredictionSet("x", Split.EVAL, ["a"], {"mask": np.ones((1, 3))}, space=cassava_space)


def test_a_set_of_hundreds_of_classes_round_trips(tmp_path):
    from ensembler.data.store import PredictionSet, Split, Store

    space = competition(SKETCH).space
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(len(WORDS)), size=6).astype(np.float32)
    store = Store(tmp_path, space)
    store.write(PredictionSet("soup", Split.EVAL, [f"x/{i}.png" for i in range(6)], {"word": p}, space=space))
    np.testing.assert_array_equal(store.read("soup", Split.EVAL).probs["word"], p)


# --- ens import in a declared competition ----------------------------------------------------


def test_import_reads_class_names_indices_and_hard_labels(tmp_path):
    from ensembler.api import import_source
    from ensembler.data.store import Split

    project = declared_project(cassava(tmp_path), CASSAVA)
    ids = ["t3.jpg", "1001.jpg", "t1.jpg", "1000.jpg", "t2.jpg"]  # eval and train rows, in any order
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=5)
    names = pd.DataFrame(p, columns=["cbb", "cbsd", "cgm", "cmd", "healthy"]).assign(image_id=ids)
    names.to_csv(tmp_path / "names.csv", index=False)
    written = import_source(project, tmp_path / "names.csv", "eff")
    assert [(m["split"], m["rows"], m["tasks"]) for m in written] == [("eval", 3, ["label"]), ("val", 2, ["label"])]
    assert written[0]["origin"]["columns"] == "cbb..healthy (label)" and set(written[0]["data"]) == {"sample_submission.csv", "train.csv"}
    store = project.store
    evaluated = store.read("eff", Split.EVAL)
    assert evaluated.image_ids.tolist() == ["t1.jpg", "t2.jpg", "t3.jpg"]  # the sample submission's order
    np.testing.assert_allclose(evaluated.probs["label"], p[[2, 4, 0]], rtol=1e-6)
    labelled = store.read("eff", Split.VAL)
    assert labelled.image_ids.tolist() == ["1000.jpg", "1001.jpg"] and labelled.labels.tolist() == [0, 3]  # labels from train.csv

    pd.DataFrame(p[:, ::-1], columns=[f"prob_{i}" for i in range(5)]).assign(ImageID=ids).to_csv(tmp_path / "numbered.csv", index=False)
    numbered = import_source(project, tmp_path / "numbered.csv", "numbered")
    assert numbered[0]["origin"]["columns"] == "prob_0..prob_4 (label)"
    np.testing.assert_allclose(store.read("numbered", Split.EVAL).probs["label"], p[[2, 4, 0], ::-1], rtol=1e-6)

    pd.DataFrame({"image_id": ["t1.jpg", "t2.jpg", "t3.jpg"], "label": ["healthy", "2", "cbb"]}).to_csv(tmp_path / "hard.csv", index=False)
    hard = import_source(project, tmp_path / "hard.csv", "hard")
    assert hard[0]["kind"] == "hard" and hard[0]["origin"]["columns"] == "label (label labels)"
    assert store.read("hard", Split.EVAL).probs["label"].argmax(1).tolist() == [4, 2, 0]


def test_import_reads_a_file_in_the_submissions_own_probability_layout(tmp_path):
    from ensembler.api import import_source
    from ensembler.data.store import Split

    names = ["ISIC_1", "ISIC_2"]
    pd.DataFrame({"image_name": names, "patient_id": ["p1", "p2"], "target": [0, 1]}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"image_name": ["ISIC_9", "ISIC_7"], "target": [0, 0]}).to_csv(tmp_path / "sample_submission.csv", index=False)
    for n in names + ["ISIC_9", "ISIC_7"]:
        touch(tmp_path / "jpeg" / ("train" if n in names else "test") / f"{n}.jpg")
    project = declared_project(tmp_path, MELANOMA)
    pd.DataFrame({"image_name": ["ISIC_7", "ISIC_9", "ISIC_2"], "target": [0.25, 0.9, 0.5]}).to_csv(tmp_path / "sub.csv", index=False)
    written = import_source(project, tmp_path / "sub.csv", "cnn")
    assert written[0]["origin"]["columns"] == "target (p of malignant)" and [m["split"] for m in written] == ["eval", "val"]
    np.testing.assert_allclose(project.store.read("cnn", Split.EVAL).probs["target"], [[0.1, 0.9], [0.75, 0.25]], rtol=1e-6)
    pd.DataFrame({"image_name": ["ISIC_7", "ISIC_9"], "target": [0.25, 1.5]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(EnsError, match=r"bad.csv: row 3: target '1.5' is not a probability in \[0, 1\]"):
        import_source(project, tmp_path / "bad.csv", "bad")


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        ({"image_id": ["t1.jpg", "t2.jpg", "t3.jpg"], "label": ["cbb", "cassava", "cbb"]}, r"row 3: label 'cassava' is not a class in 0..4 nor a class name \('cbb', 'cbsd', 'cgm', 'cmd', …\)"),
        ({"image_id": ["t1.jpg", "t2.jpg", "t3.jpg", "nope.jpg"], "label": [0, 0, 0, 0]}, r"1 ImageID\(s\) are neither in sample_submission.csv nor in train.csv: 'nope.jpg'"),
        ({"image_id": ["t1.jpg", "t2.jpg"], "label": [0, 0]}, r"ImageID sets differ from sample_submission.csv: 1 eval image\(s\) missing \('t3.jpg'\)"),
        ({"ImageID": ["t1.jpg"], **{f"mask_{i}": [1 / 3] for i in range(3)}}, r"no 5 numbered probability columns; expected ImageID and 5 columns for label: its class names \('cbb', 'cbsd', 'cgm', 'cmd', …\), 0..4"),
        ({"name": ["t1.jpg"], "label": [0]}, r"missing column\(s\) image_id or ImageID; found name, label"),
    ],
)
def test_import_in_a_declared_competition_refuses_in_one_line(tmp_path, frame, match):
    from ensembler.api import import_source

    project = declared_project(cassava(tmp_path), CASSAVA)
    pd.DataFrame(frame).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(EnsError, match=match):
        import_source(project, tmp_path / "bad.csv", "bad")
    assert not project.store.has("bad")


def test_cli_import_in_a_declared_competition(tmp_path):
    from typer.testing import CliRunner

    from ensembler.cli import app

    declared_project(cassava(tmp_path), CASSAVA)
    pd.DataFrame({"image_id": ["t1.jpg", "t2.jpg", "t3.jpg"], "label": ["cmd", "cmd", "cbb"]}).to_csv(tmp_path / "hard.csv", index=False)
    result = CliRunner().invoke(app, ["--zoo", str(tmp_path / "model_zoo.yaml"), "import", str(tmp_path / "hard.csv"), "--name", "vit"])
    assert result.exit_code == 0, result.output
    assert "read label (label labels)" in result.output and "source 'vit': 3 eval rows, tasks label (hard)" in result.output


# --- ens compose in a declared competition ---------------------------------------------------


def cassava_team(root: Path):
    """A cassava-like project with two imported sources (eval and train rows): `a` right on 3 of
    the 4 labelled images, `b` on 1; on eval, the soft vote of a+b decides t1 cmd, t2 cbb, t3 healthy."""
    from ensembler.api import import_source

    project = declared_project(cassava(root), CASSAVA)
    classes = ["cbb", "cbsd", "cgm", "cmd", "healthy"]
    ids = ["t1.jpg", "t2.jpg", "t3.jpg", "1000.jpg", "1001.jpg", "1002.jpg", "1003.jpg"]  # train labels 0, 3, 4, 3
    a = np.array([[.1, .1, .1, .6, .1], [.5, .2, .1, .1, .1], [.1, .1, .1, .2, .5], [.7, .1, .1, .05, .05], [.1, .1, .1, .6, .1], [.1, .1, .1, .1, .6], [.6, .1, .1, .1, .1]])
    b = np.array([[.1, .1, .1, .5, .2], [.3, .4, .1, .1, .1], [.1, .1, .2, .1, .5], [.2, .6, .1, .05, .05], [.1, .1, .1, .6, .1], [.5, .1, .1, .1, .2], [.6, .1, .1, .1, .1]])
    for name, p in (("a", a), ("b", b)):
        pd.DataFrame(p, columns=classes).assign(image_id=ids).to_csv(root / f"{name}.csv", index=False)
        import_source(project, root / f"{name}.csv", name)
    return project


def test_compose_a_declared_competition_by_vote_into_its_sample_submission(tmp_path):
    from ensembler.api import compose

    project = cassava_team(tmp_path)
    sub = compose(project, "label:a+b", name="vote", write=True)
    assert sub.submission.columns.tolist() == ["image_id", "label"]
    assert sub.files[0].read_text().splitlines() == ["image_id,label", "t1.jpg,3", "t2.jpg,0", "t3.jpg,4"]  # the sample's rows and columns, answer filled
    val = sub.validation
    assert val["metric"] == "accuracy" and val["images"] == 4 and val["groups"] == 4
    assert val["sources"] == {"a": {"accuracy": 0.75}, "b": {"accuracy": 0.25}} and val["recipe"] == {"accuracy": 0.75}
    import json

    manifest = json.loads(sub.files[1].read_text())
    assert manifest["recipe"] == "*:a+b" and set(manifest["data"]) == {"sample_submission.csv", "train.csv"}
    kept = project.store.read("vote", "eval")
    assert kept.tasks == ("label",) and kept.probs["label"].argmax(1).tolist() == [3, 0, 4]


def test_a_declared_competition_refuses_what_this_version_does_not_compose(tmp_path):
    from ensembler.api import compose

    project = cassava_team(tmp_path)
    with pytest.raises(EnsError, match=r"^soft -> tune_f1: a declared competition's sources are composed by --method soft, geo, hard, rank, stack, select, auto.*; tune_f1 run"):
        compose(project, "label:a+b", ["soft", "tune_f1"], name="x")
    with pytest.raises(EnsError, match=r"unknown task 'mask'"):
        compose(project, "mask:a", name="x")
    with pytest.raises(EnsError, match=r"--method rank serves auc .* declared is scored by accuracy: use --method soft"):
        compose(project, "label:a+b", "rank", name="x")
    assert not (tmp_path / "submissions" / "x.csv").exists()


def test_a_probability_submission_is_filled_with_the_composed_probability(tmp_path):
    from ensembler.api import compose, import_source

    names = ["ISIC_1", "ISIC_2", "ISIC_3"]
    pd.DataFrame({"image_name": names, "patient_id": ["p1", "p1", "p2"], "target": [0, 1, 0]}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"image_name": ["ISIC_9", "ISIC_7"], "target": [0, 0], "note": ["x", "y"]}).to_csv(tmp_path / "sample_submission.csv", index=False)
    for n in names + ["ISIC_9", "ISIC_7"]:
        touch(tmp_path / "jpeg" / ("train" if n in names else "test") / f"{n}.jpg")
    project = declared_project(tmp_path, MELANOMA)
    for source, p in (("cnn", [0.2, 0.9, 0.3, 0.6, 0.1]), ("vit", [0.4, 0.7, 0.2, 0.9, 0.2])):
        pd.DataFrame({"image_name": ["ISIC_9", "ISIC_7", *names], "target": p}).to_csv(tmp_path / f"{source}.csv", index=False)
        import_source(project, tmp_path / f"{source}.csv", source)
    sub = compose(project, "target:cnn+vit", name="mean", write=True)
    # float32's shortest round trip of the mean of the float32 members (0.9f and 0.7f average to 0.79999995f)
    assert sub.files[0].read_text().splitlines() == ["image_name,target,note", "ISIC_9,0.3,x", "ISIC_7,0.79999995,y"]
    assert sub.validation["metric"] == "auc" and sub.validation["recipe"] == {"auc": 1.0} and sub.validation["groups"] == 2
    with pytest.raises(EnsError, match=r"--method hard gives classes, and .* submission holds probabilities \(auc\): use --method soft, geo or rank"):
        compose(project, "target:cnn+vit", "hard", name="hard")
    ranked = compose(project, "target:cnn+vit", "rank", name="ranked")  # each source's order over the eval images, averaged
    assert ranked.submission["target"].tolist() == ["0.5", "1.0"] and ranked.validation["recipe"] == {"auc": 1.0}


def test_cli_compose_in_a_declared_competition(tmp_path):
    from typer.testing import CliRunner

    from ensembler.cli import app

    cassava_team(tmp_path)
    result = CliRunner().invoke(app, ["--zoo", str(tmp_path / "model_zoo.yaml"), "compose", "--recipe", "label:a+b*2", "--name", "cli"])
    assert result.exit_code == 0, result.output
    assert "submissions/cli.csv (3 rows)" in result.output.replace("\\", "/")
    assert "recipe *:a+b*2 · soft vote on the probabilities" in result.output
    assert "validation (all 4 labelled images the sources share (no fold file: run `ens split` for an honest hold-out), 4 groups): accuracy 0.2500;" in result.output  # b weighted 2 leads the vote astray
    assert "the sources alone: a 0.7500, b 0.2500" in result.output


# --- ens split and out-of-fold imports in a declared competition -----------------------------


def melanoma(root: Path, patients: int = 6, per_patient: int = 2) -> tuple[Path, list[str]]:
    """A melanoma-like data folder: `patients` patients with `per_patient` images each, every
    other patient's images malignant; two eval images."""
    names = [f"ISIC_{p}{i}" for p in range(patients) for i in range(per_patient)]
    pd.DataFrame({"image_name": names, "patient_id": [f"p{n[5]}" for n in names], "target": [int(n[5]) % 2 for n in names]}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_name": ["ISIC_x", "ISIC_y"], "target": [0, 0]}).to_csv(root / "sample_submission.csv", index=False)
    for n in names + ["ISIC_x", "ISIC_y"]:
        touch(root / "jpeg" / ("test" if n in ("ISIC_x", "ISIC_y") else "train") / f"{n}.jpg")
    return root, names


def test_split_groups_by_the_declared_group_and_oof_imports_are_scored_on_every_image(tmp_path):
    import ensembler as ens

    root, names = melanoma(tmp_path)
    project = declared_project(root, MELANOMA)
    folds = ens.split(project, folds=3, seed=1)
    assert list(folds.columns) == ["group", "fold"] and sorted(folds["group"]) == [f"p{i}" for i in range(6)]
    assert sorted(folds["fold"].value_counts().tolist()) == [2, 2, 2]  # 6 patients in 3 folds, none split
    project = ens.load_project(root / "model_zoo.yaml")
    assert project.folds.read_text().splitlines()[0] == "group,fold" and project.val_fold == 0
    rng = np.random.default_rng(0)
    ids = ["ISIC_x", "ISIC_y", *names]
    for source in ("cnn", "vit"):
        pd.DataFrame({"image_name": ids, "target": rng.uniform(size=len(ids))}).to_csv(root / f"{source}.csv", index=False)
        written = ens.import_source(project, root / f"{source}.csv", source, oof=True)
        assert [m["split"] for m in written] == ["eval", "oof"] and written[1]["origin"]["oof"]["groups"] == 6
    composed = ens.compose(project, "target:cnn+vit")
    assert composed.validation["scope"] == "out of fold: all 12 images of 6 groups that every source predicts out of fold"
    pd.DataFrame({"image_name": ids[:-1], "target": 0.5}).to_csv(root / "partial.csv", index=False)
    with pytest.raises(EnsError, match=r"--oof rows must cover whole groups \(every image of a group .*1 group\(s\) are partial, e.g. p5 \(1 of 2 images\)"):
        ens.import_source(project, root / "partial.csv", "partial", oof=True)
    ens.import_source(project, root / "cnn.csv", "plain")  # the same rows, not declared out of fold
    held_out = sorted(folds.loc[folds["fold"] == 0, "group"])
    scope = ens.compose(project, "target:cnn+plain").validation["scope"]
    assert scope == f"validation fold 0 of {project.folds.name}: 4 images of 2 groups", (scope, held_out)


def test_cli_split_in_a_declared_competition(tmp_path):
    from typer.testing import CliRunner

    from ensembler.cli import app

    root, _ = melanoma(tmp_path)
    declared_project(root, MELANOMA)
    result = CliRunner().invoke(app, ["--zoo", str(root / "model_zoo.yaml"), "split", "--folds", "2"])
    assert result.exit_code == 0, result.output
    assert "6 groups in 2 folds (3, 3 groups)" in result.output


# --- ens report in a declared competition ----------------------------------------------------


def test_report_scores_sources_and_votes_with_the_declared_metric_and_group_intervals(tmp_path):
    import ensembler as ens
    from sklearn.metrics import roc_auc_score

    root, names = melanoma(tmp_path, patients=10, per_patient=3)
    project = declared_project(root, MELANOMA)
    truth = np.array([int(n[5]) % 2 for n in names])
    rng = np.random.default_rng(4)
    ids = ["ISIC_x", "ISIC_y", *names]
    scores = {}
    for source, noise in (("cnn", 0.6), ("vit", 0.9)):
        p = np.clip(truth * 0.5 + rng.normal(0.25, noise / 2, size=len(names)), 0, 1)
        scores[source] = p
        pd.DataFrame({"image_name": ids, "target": [0.5, 0.5, *p]}).to_csv(root / f"{source}.csv", index=False)
        ens.import_source(project, root / f"{source}.csv", source)
    tables = ens.report(project, recipes=["target:cnn+vit"], methods=["soft", "rank"], replicates=200)
    frame = tables.scores.set_index("name")
    assert list(frame.columns[:6]) == ["kind", "method", "auc", "auc_low", "auc_high", "gain"]
    for source, p in scores.items():  # every row on the same 30 images, as scikit-learn scores it
        assert frame.loc[source, "auc"] == pytest.approx(roc_auc_score(truth, p))
    assert frame.loc[source, "auc_low"] <= frame.loc[source, "auc"] <= frame.loc[source, "auc_high"]
    best = max(roc_auc_score(truth, p) for p in scores.values())
    recipe = tables.scores[tables.scores["kind"] == "recipe"].set_index("method")
    assert set(recipe.index) == {"soft", "rank"} and recipe.loc["soft", "gain"] == pytest.approx(recipe.loc["soft", "auc"] - best)
    assert 0 <= recipe.loc["soft", "gain_positive"] <= 1 and tables.report.people == 10  # resampled by patient, not by image
    learned = ens.report(project, recipes=["target:cnn+vit"], methods=["soft", "stack", "auto"], replicates=0).scores.set_index("method")
    assert learned.loc["soft", "auc"] == pytest.approx(recipe.loc["soft", "auc"]) and np.isnan(learned.loc["soft", "spread"])
    assert 0 <= learned.loc["stack", "auc"] <= 1 and learned.loc["stack", "spread"] >= 0  # out of fold by patient, its spread over the folds
    with pytest.raises(EnsError, match=r"--pick: this version picks the final submissions of the mask competition only"):
        ens.pick_final(tables.report)


def test_the_group_bootstrap_equals_a_plain_loop_over_the_same_draws():
    from ensembler.scoring.evidence import group_bootstrap, person_draws

    rng = np.random.default_rng(5)
    groups = np.array(["a", "a", "b", "c", "c", "c", "d"])
    values = rng.normal(size=(2, 7))
    score_rows = lambda w: values.mean(axis=1) if w is None else (w @ values.T) / w.sum(axis=1, keepdims=True)  # noqa: E731  (r, n) -> (r, rows)
    found = group_bootstrap(score_rows, groups, reference=0, replicates=50, seed=3, chunk=7)  # chunks of replicates give the one pass's numbers
    draws = person_draws(4, 50, 3)
    codes = np.array([0, 0, 1, 2, 2, 2, 3])
    loop = np.array([[np.sum(v * d[codes]) / np.sum(d[codes]) for v in values] for d in draws])
    np.testing.assert_allclose(found.low, np.percentile(loop, 5, axis=0))
    np.testing.assert_allclose(found.gain_high, np.percentile(loop - loop[:, [0]], 95, axis=0)[[0, 1]], atol=1e-12)
    assert found.people == 4 and found.f1.tolist() == score_rows(None).tolist()


def test_cli_report_in_a_declared_competition(tmp_path):
    from typer.testing import CliRunner

    from ensembler.cli import app

    cassava_team(tmp_path)
    result = CliRunner().invoke(app, ["--zoo", str(tmp_path / "model_zoo.yaml"), "report", "--recipe", "label:a+b"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "group-bootstrap interval (1000 resamples of 4 groups)" in result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip().startswith(("a ", "b ", "*:a+b"))}
    assert rows["a"][2] == "0.7500" and rows["b"][2] == "0.2500" and rows["*:a+b"][1:5] == ["soft", "vote", "0.7500", rows["*:a+b"][4]]


# --- ens predict in a declared competition ---------------------------------------------------


def test_predict_a_declared_competition_then_compose_its_sets(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("ttach")
    import yaml
    from conftest import ASSETS
    from PIL import Image

    import ensembler as ens

    rng = np.random.default_rng(6)
    classes = CASSAVA["tasks"]["label"]
    train = [f"{1000 + i}.jpg" for i in range(8)]
    pd.DataFrame({"image_id": train, "label": [classes[i % 5] for i in range(8)]}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"image_id": ["t1.jpg", "t2.jpg", "t3.jpg"], "label": 0}).to_csv(tmp_path / "sample_submission.csv", index=False)
    for folder, ids in (("train_images", train), ("test_images", ["t1.jpg", "t2.jpg", "t3.jpg"])):
        (tmp_path / folder).mkdir()
        for i in ids:
            Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(tmp_path / folder / i, format="JPEG")
    import sys

    sys.path.insert(0, str(ASSETS))
    from tinynets import TinyNet

    torch.manual_seed(0)
    torch.save(TinyNet(num_classes=5).state_dict(), tmp_path / "tiny.pth")
    torch.save(TinyNet(heads=(5,)).state_dict(), tmp_path / "heads.pth")
    models = [
        {"name": "tiny", "architecture": "tinynets:TinyNet", "code": str(ASSETS), "kwargs": {"num_classes": 5}, "checkpoint": "tiny.pth",
         "layout": {"classes": 5}, "preprocess": {"resize": [16, 20]}, "tta": "hflip"},
        {"name": "heads", "architecture": "tinynets:TinyNet", "code": str(ASSETS), "kwargs": {"heads": [5]}, "checkpoint": "heads.pth",
         "layout": {"heads": {"label": 5}}, "preprocess": {"resize": [16, 20]}},
    ]
    (tmp_path / "model_zoo.yaml").write_text(yaml.safe_dump({"project": {"data": "."}, "competition": CASSAVA, "models": models}, sort_keys=False))
    project = ens.load_project(tmp_path / "model_zoo.yaml")
    assert project.model("tiny").layout.label == "classes 5" and project.model("heads").layout.tasks == ("label",)
    ens.split(project, folds=2)
    project = ens.load_project(tmp_path / "model_zoo.yaml")
    outcomes = ens.predict(project, ["tiny", "heads"], "eval", device="cpu", workers=0) + ens.predict(project, ["tiny", "heads"], "val", device="cpu", workers=0)
    assert [(o.name, o.split, o.status) for o in outcomes] == [("tiny", "eval", "written"), ("heads", "eval", "written"), ("tiny", "val", "written"), ("heads", "val", "written")]
    evaluated = project.store.read("tiny", "eval")
    assert evaluated.tasks == ("label",) and evaluated.joint is None and evaluated.image_ids.tolist() == ["t1.jpg", "t2.jpg", "t3.jpg"]
    np.testing.assert_allclose(evaluated.probs["label"].sum(1), 1, atol=1e-5)
    held = project.store.read("tiny", "val")
    assert held.labels.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2][train.index(i)] for i in held.image_ids]  # labels from train.csv
    composed = ens.compose(project, "label:tiny+heads")
    expected = (evaluated.probs["label"] + project.store.read("heads", "eval").probs["label"]).argmax(1)
    assert composed.submission["label"].tolist() == [str(c) for c in expected]
    assert composed.validation["metric"] == "accuracy" and composed.validation["images"] == len(held.image_ids)


def test_a_declared_competitions_layouts_are_checked_against_its_classes(tmp_path):
    import yaml

    from ensembler.data.project import load_project

    for layout, match in [("classes18", r"layout: expected \{classes: 5\} or heads: \{label: 5\}"), ({"classes": 18}, r"layout.classes: expected 5"), ({"heads": {"mask": 3}}, r"layout.heads")]:
        models = [{"name": "m", "architecture": "resnet18", "checkpoint": "m.pth", "layout": layout}]
        (tmp_path / "model_zoo.yaml").write_text(yaml.safe_dump({"competition": CASSAVA, "models": models}))
        with pytest.raises(EnsError, match=match):
            load_project(tmp_path / "model_zoo.yaml")


# --- learned steps and auto in a declared competition -------------------------------------------


def simulated_project(root: Path, declared: dict, kind: str, n_groups: int = 40, n_eval: int = 30, seed: int = 0):
    """A data folder in `declared`'s layout (train CSV with groups, sample submission, image
    files) for a simulated team of `kind` (`teams.simulate_declared_team`), each member imported
    from one CSV of eval and train rows. Returns the project and the team."""
    from ensembler.api import import_source
    from ensembler.data.teams import simulate_declared_team

    team = simulate_declared_team(kind, competition(declared), n_groups=n_groups, per_group=3, n_eval=n_eval, seed=seed)
    train, eval_, (task, column) = declared["train"], declared["eval"], next(iter(declared["train"]["labels"].items()))
    pd.DataFrame({train["id"]: team.labelled_ids, column: team.labels, train["group"]: [f"g{g}" for g in team.groups]}).to_csv(root / train["csv"], index=False)
    answer = declared["submission"].get("answer") or next(iter(declared["submission"]["proba"]))
    pd.DataFrame({eval_["id"]: team.eval_ids, answer: 0}).to_csv(root / eval_["csv"], index=False)
    for folder, ids in ((train["images"], team.labelled_ids), (eval_["images"], team.eval_ids)):
        for i in ids:
            touch(root / folder / i)
    project = declared_project(root, declared)
    classes = declared["tasks"][task]
    for name, (labelled, evaluated) in team.members.items():
        frame = pd.DataFrame(np.concatenate([evaluated, labelled]), columns=classes)
        frame.insert(0, train["id"], [*team.eval_ids, *team.labelled_ids])
        frame.to_csv(root / f"{name}.csv", index=False)
        import_source(project, root / f"{name}.csv", name)
    return project, team


LEAF = {**CASSAVA, "train": {**CASSAVA["train"], "group": "plant"}}
LESION = {**MELANOMA, "train": {**MELANOMA["train"], "images": "train"}, "eval": {**MELANOMA["eval"], "images": "test"}}


def test_stack_select_and_auto_compose_a_declared_competition_scored_by_its_metric(tmp_path):
    import ensembler as ens

    project, team = simulated_project(tmp_path, LEAF, "biased", n_groups=40, n_eval=200)
    soft = ens.compose(project, "*:" + "+".join(team.members), "soft")
    stack = ens.compose(project, None, "stack", name="stacked", write=True)  # no recipe: every source with labelled rows
    val = stack.validation
    assert val["scope"].endswith("; stack scored out of fold (5 folds by group)") and val["groups"] == 40
    assert set(val["cv"]) == {"folds", "accuracy_fold_mean", "accuracy_fold_std"} and val["cv"]["folds"] == 5
    assert val["recipe"]["accuracy"] > soft.validation["recipe"]["accuracy"] + 0.1  # members that over-call classes: a stack undoes it
    assert stack.files[0].read_text().splitlines()[0] == "image_id,label" and len(stack.submission) == 200
    select = ens.compose(project, "*:" + "+".join(team.members), "select")
    assert set(select.step("select")["weights"]["label"]) == set(team.members) and sum(select.step("select")["weights"]["label"].values()) == pytest.approx(1.0)
    auto = ens.compose(project, None, "auto")
    record = auto.step("auto")["auto"]
    votes = [f"{v.name} vote b0+b1+b2+b3" for v in __import__("ensembler.pipeline.auto", fromlist=["vote_candidates"]).vote_candidates()]  # the registered candidates
    assert [c["label"] for c in record["candidates"]] == [*votes, "label stack of b0+b1+b2+b3"] and votes[:2] == ["soft vote b0+b1+b2+b3", "geo vote b0+b1+b2+b3"]
    assert all(set(c) == {"label", "accuracy", "spread"} for c in record["candidates"]) and "label" in record["tasks"]
    assert record["why"]["rule"].startswith("moved ") and max(record["blend"]["toward"], key=record["blend"]["toward"].get) == "label stack of b0+b1+b2+b3"  # 0.13 better out of fold: toward it
    assert set(record["blend"]) == {"label", "accuracy", "spread", "weight", "toward"} and record["blend"]["accuracy"] > record["candidates"][0]["accuracy"]
    assert record["why"]["interval"][0] > 0 and auto.validation["recipe"]["accuracy"] > soft.validation["recipe"]["accuracy"]
    for method, match in (("pool", r"^pool: a declared competition.s sources are composed by --method .*; pool run\(s\) on the mask competition"), (["soft", ens.Priors("em")], r"^soft -> priors: a declared competition's sources are composed by --method soft, geo, hard, rank, stack, select, auto")):
        with pytest.raises(EnsError, match=match):
            ens.compose(project, "*:b0+b1", method)


def test_auto_keeps_the_soft_vote_on_thin_groups_and_follows_an_auc(tmp_path):
    import ensembler as ens

    project, team = simulated_project(tmp_path, LESION, "classifiers", n_groups=12, n_eval=20, seed=3)
    auto = ens.compose(project, None, "auto", name="auto", write=True)
    record = auto.step("auto")["auto"]
    assert record["chosen"] == "soft vote c0+c1+c2+c3" and all("auc" in c for c in record["candidates"])
    assert auto.validation["metric"] == "auc" and "run_away" not in record  # AUC scores probabilities: no run-away check on decisions
    assert auto.files[0].read_text().splitlines()[0] == "image_name,target"
    soft = ens.compose(project, "*:c0+c1+c2+c3")
    assert np.allclose(auto.eval.probs["target"], soft.eval.probs["target"])


def test_cli_compose_auto_in_a_declared_competition(tmp_path):
    import re

    from typer.testing import CliRunner

    from ensembler.cli import app

    simulated_project(tmp_path, LEAF, "biased", n_groups=40, n_eval=200)
    result = CliRunner().invoke(app, ["--zoo", str(tmp_path / "model_zoo.yaml"), "compose", "--method", "auto", "--name", "auto"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "the soft vote, moved toward the candidates (votes, per-task choices, stacks) by the mean over 1,000 resamples of the blend with the best cross-validated accuracy, at most half-way toward one unless it wins beyond the noise" in out
    assert "chosen: " in out and "(CV accuracy 0." in out and "of the way from the soft vote (" in out and "resamples of the groups (moves capped" in out and "of the group resamples)" in out
    assert "validation (all 120 labelled images the sources share" in out
    # the stack's last digits follow the BLAS kernel (lbfgs), so its score is matched by shape; the sources' are exact
    assert re.search(r"accuracy 0\.\d{4} \(±0\.\d{3} across folds\); the sources alone: b0 0\.4083, b1 0\.5500", out)


def test_report_html_of_a_declared_competition(tmp_path):
    import re

    from typer.testing import CliRunner

    from ensembler.cli import app

    simulated_project(tmp_path, LEAF, "biased", n_groups=30, n_eval=20)
    page = tmp_path / "report.html"
    args = ["--zoo", str(tmp_path / "model_zoo.yaml"), "report", "--recipe", "*:b0+b1+b2+b3", "--method", "soft", "--method", "stack", "--html", str(page)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    html = page.read_text()
    for section in ("scores", "confusion", "agreement", "calibration", "provenance"):
        assert f'id="{section}"' in html
    assert "accuracy, the competition&#39;s metric" in html and "resampling 30 groups" in html
    assert html.count("data:image/png;base64,") >= 4  # confusion, per-class F1, agreement + error correlation, reliability
    confusion = re.search(r'data-name="confusion-label".*?</table>', html, re.S).group(0)
    assert all(c in confusion for c in ("cbb", "cbsd", "cgm", "cmd", "healthy"))
    assert "ECE label" in html and "T (label)" in html


def test_a_learned_method_refuses_a_zoo_models_rows_on_groups_it_trained_on(tmp_path):
    import ensembler as ens
    from ensembler.data.project import add_model
    from ensembler.data.store import PredictionSet, Split

    root, names = melanoma(tmp_path, patients=10, per_patient=2)
    project = declared_project(root, MELANOMA)
    folds = ens.split(project, folds=5, seed=0)
    add_model(root / "model_zoo.yaml", {"name": "cnn", "architecture": "resnet18", "layout": {"classes": 2}, "checkpoint": "cnn.pth", "fold": 0})
    project = ens.load_project(root / "model_zoo.yaml")
    rng = np.random.default_rng(0)
    labels = np.array([int(n[5]) % 2 for n in names])
    space = project.competition.space
    for name in ("cnn", "vit"):
        p = rng.uniform(size=len(names))
        project.store.write(PredictionSet(name, Split.VAL, names, {"target": np.stack([1 - p, p], 1)}, None, labels, {"kind": "proba"}, space))
        q = rng.uniform(size=2)
        project.store.write(PredictionSet(name, Split.EVAL, ["ISIC_x", "ISIC_y"], {"target": np.stack([1 - q, q], 1)}, None, None, {"kind": "proba"}, space))
    outside = int((folds.set_index("group")["fold"].reindex([f"p{n[5]}" for n in names]).to_numpy() != 0).sum())
    with pytest.raises(EnsError, match=rf"model 'cnn' held out fold 0 only: {outside} of its labelled images are of groups in other folds, which it trained on"):
        ens.compose(project, "target:cnn+vit", "stack")
    assert ens.compose(project, "target:cnn+vit").validation["images"] == 4  # a vote fits nothing: scored on the validation fold's 2 patients


def test_hundreds_of_classes_from_a_folder_per_class_keep_the_vote_and_refuse_a_stack_too_large(tmp_path):
    import ensembler as ens

    rng = np.random.default_rng(2)
    train = [f"{word}/{i}.png" for word in WORDS for i in range(2)]  # two drawings of each of 310 words
    for path in train:
        touch(tmp_path / "train" / path)
    tests = [f"{i}.png" for i in range(20)]
    for name in tests:
        touch(tmp_path / "test" / name)
    pd.DataFrame({"key_id": tests, "word": WORDS[0]}).to_csv(tmp_path / "sample_submission.csv", index=False)
    project = declared_project(tmp_path, SKETCH)
    truth = np.repeat(np.arange(len(WORDS)), 2)
    for source, skill in (("cnn", 3.0), ("vit", 2.5)):
        logits = rng.normal(0, 1, (len(train) + len(tests), len(WORDS)))
        logits[np.arange(len(train)), truth] += skill
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        pd.DataFrame(p, columns=WORDS).assign(key_id=[*train, *tests]).to_csv(tmp_path / f"{source}.csv", index=False)
        ens.import_source(project, tmp_path / f"{source}.csv", source)
    auto = ens.compose(project, None, "auto", name="auto", write=True)
    record = auto.step("auto")["auto"]
    assert record["chosen"] == "soft vote cnn+vit" or set(record["blend"]["toward"]) == {"geo vote cnn+vit"}  # every word in 2 images: too thin to learn, only the votes
    assert record["thin"]["word"].startswith("word 2 (2 groups), 3 (2 groups), 4 (2 groups), 5 (2 groups), 6 (2 groups) and 305 more classes: fewer than 5 labelled groups")
    assert record["stack"] == {"word": "not offered: a stack of word would fit 310 classes x 620 features = 192,200 weights, more than 1,000"}
    written = auto.files[0].read_text().splitlines()
    assert written[0] == "key_id,word" and len(written) == 21 and all(line.split(",")[1] in WORDS for line in written[1:])  # class names
    with pytest.raises(EnsError, match=r"a stack of word would fit 310 classes x 620 features = 192,200 weights, more than 10,000: compose with --method select or auto"):
        ens.compose(project, None, "stack")


@pytest.mark.parametrize("shape", ["multi-label", "product"])
def test_learned_steps_and_auto_on_several_declared_tasks(shape):
    """Two tasks: two binary labels scored by their mean AUC (probability columns), or their
    product as one answer scored by accuracy; through the engine `ens compose` runs."""
    from ensembler.data.store import PredictionSet, Split
    from ensembler.pipeline.auto import Auto
    from ensembler.pipeline.engine import Context, Pipeline, run
    from ensembler.pipeline.learned import Select, Stack
    from ensembler.pipeline.recipe import parse_recipe
    from ensembler.pipeline.scope import Labelled
    from ensembler.scoring.metrics import composed_score

    train = {"csv": "train.csv", "id": "image_id", "images": "train", "labels": {"cough": "cough", "fever": "fever"}, "group": "patient"}
    declared = {"tasks": {"cough": ["no", "yes"], "fever": ["none", "high"]}, "train": train, "eval": {"csv": "s.csv", "id": "image_id", "images": "test"}}
    if shape == "multi-label":
        declared |= {"metric": "auc", "submission": {"proba": {"cough": "yes", "fever": "high"}}}
    else:
        declared |= {"metric": "accuracy", "submission": {"answer": "label"}, "joint": "product"}
    comp = competition(declared)
    space = comp.space
    rng = np.random.default_rng(7)
    n, m = 240, 60
    truth = {t: rng.integers(0, 2, n + m) for t in space.tasks}
    labels = space.encode(*(truth[t][:n] for t in space.tasks))
    groups = np.repeat(np.arange(n // 3), 3).astype(str).astype(object)
    ids = np.array([f"i{i}.jpg" for i in range(n + m)], dtype=object)
    labelled, target = {}, {}
    for source, skill in (("a", 2.0), ("b", 1.2), ("c", 0.8)):
        probs = {}
        for t in space.tasks:
            logit = skill * (2 * truth[t] - 1) + rng.normal(0, 1.5, n + m)
            p = 1 / (1 + np.exp(-logit))
            probs[t] = np.stack([1 - p, p], axis=1)
        labelled[source] = PredictionSet(source, Split.OOF, ids[:n], {t: p[:n] for t, p in probs.items()}, None, labels, {}, space)
        target[source] = PredictionSet(source, Split.EVAL, ids[n:], {t: p[n:] for t, p in probs.items()}, None, None, {}, space)
    recipe = parse_recipe("*:a+b+c", space)
    scope = Labelled(labelled, labels, "simulated", True, (), groups)
    for step in (Stack(), Select(), Auto()):
        done = run(Pipeline((step,)), scope, target, Context(recipe, competition=comp))
        assert set(done.eval.probs) == set(space.tasks) and done.eval.space is space and len(done.eval.labels) == m
        assert done.cv is not None and done.cv.key == str(comp.metric) and done.cv.value == pytest.approx(composed_score(comp, labels, done.scored))
    record = done.records[0]["auto"]
    assert set(record["tasks"]) == set(space.tasks) and all(str(comp.metric) in c for c in record["candidates"])
    assert record["candidates"][0]["label"] == "soft vote a+b+c (per task)"
