"""A declared competition's files, in three real layouts made on the fly: a CSV of labels with
class names (cassava-like), a binary task with patient groups, a path pattern and a probability
submission (melanoma-like), and a folder per class with hundreds of classes (sketch-like)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CASSAVA, MELANOMA, SKETCH, WORDS

from ensembler.data.competition import parse_competition
from ensembler.data.declared import read_labelled, read_sample, submission_bytes
from ensembler.errors import EnsError


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8 an image")


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
