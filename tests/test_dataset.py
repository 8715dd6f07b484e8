
import numpy as np
import pandas as pd
import pytest

from ensembler.data.dataset import (
    make_folds,
    read_eval,
    read_folds,
    read_people,
    read_train,
    split_project,
)
from ensembler.data.project import load_project
from ensembler.errors import EnsError


def test_read_train_follows_the_layout(toy):
    table = read_train(toy.data)
    assert len(table) == 40 * 7
    assert table["profile"].nunique() == 40  # the dot-folder is skipped
    assert set(table.groupby("profile").size()) == {7}
    assert {p.rsplit(".", 1)[1] for p in table["ImageID"]} >= {"jpg"}
    # labels from folder and file names agree with the generator's truth
    truth = toy.train.set_index("ImageID")["label"]
    assert np.array_equal(table["label"].to_numpy(), truth.reindex(table["ImageID"]).to_numpy())
    suffixed = table[table["profile"].str.startswith("000037-1")]
    assert set(suffixed["person"]) == {"000037"}


def test_read_train_mask_and_age_from_names(toy):
    table = read_train(toy.data).set_index("ImageID")
    row = table[table.index.str.contains("/incorrect_mask")].iloc[0]
    assert row["mask"] == 1
    normal = table[table.index.str.contains("/normal")]
    assert set(normal["mask"]) == {2}
    assert ((normal["age_years"] >= 60) == (normal["age"] == 2)).all()


def test_read_eval_keeps_info_order(toy):
    table = read_eval(toy.data)
    assert table["ImageID"].tolist() == pd.read_csv(toy.data / "eval" / "info.csv")["ImageID"].tolist()


def _first_person(toy):
    return next(p for p in sorted((toy.data / "train" / "images").iterdir()) if not p.name.startswith("."))


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda d, p: next(p.glob("mask3.*")).unlink(), "missing image.*mask3"),
        (lambda d, p: (p / "mask6.jpg").touch(), "mask6.jpg: unexpected file"),
        (lambda d, p: (p / "mask1.png").touch() if not (p / "mask1.png").exists() else (p / "mask1.jpg").touch(), "two images for 'mask1'"),
        (lambda d, p: p.rename(p.parent / "badname"), "disagree"),
        (lambda d, p: (p.parent / "999999_female_Asian_20").mkdir(), "1 folder.*not listed"),
        (lambda d, p: (d / "train" / "train.csv").unlink(), "train.csv not found"),
    ],
)
def test_read_train_errors(toy, damage, match):
    damage(toy.data, _first_person(toy))
    with pytest.raises(EnsError, match=match):
        read_train(toy.data)


def test_bad_folder_name_is_named(toy):
    person = _first_person(toy)
    bad = person.parent / "000001_unknown_Asian_45"
    person.rename(bad)
    csv = toy.data / "train" / "train.csv"
    table = pd.read_csv(csv, dtype=str)
    table.loc[table["path"] == person.name, "path"] = bad.name
    table.to_csv(csv, index=False)
    with pytest.raises(EnsError, match="000001_unknown_Asian_45: folder name must be"):
        read_people(toy.data)


def test_read_eval_duplicate_image_id(toy):
    info = toy.data / "eval" / "info.csv"
    table = pd.read_csv(info)
    pd.concat([table, table.iloc[[3]]]).to_csv(info, index=False)
    with pytest.raises(EnsError, match=rf"row {len(table) + 2}: ImageID .* appears twice"):
        read_eval(toy.data)


def test_missing_data_folder(tmp_path):
    with pytest.raises(EnsError, match="info.csv not found"):
        read_eval(tmp_path)


def test_folds_are_person_grouped_stratified_and_seeded(tmp_path):
    from ensembler.data.toy import make_toy_competition

    comp = make_toy_competition(tmp_path, n_people=300, n_eval_people=1, seed=3)
    people = read_people(comp.data)
    folds = make_folds(people, 5, seed=7)
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    merged = people.merge(folds, on="profile")
    assert (merged.groupby("person")["fold"].nunique() == 1).all()  # 001498 and 001498-1 together
    # stratified: each fold's share of women is within 5 points of the whole set's
    share = merged.groupby("fold")["gender"].mean()
    assert (share - people["gender"].mean()).abs().max() < 0.05
    assert make_folds(people, 5, seed=7).equals(folds)
    assert not make_folds(people, 5, seed=8)["fold"].equals(folds["fold"])


def test_split_project_writes_the_fold_file_and_names_it(project):
    folds = split_project(project, n_folds=4, seed=1, val_fold=2)
    reread = read_folds(project.folds)
    assert reread.to_dict() == dict(zip(folds["profile"], folds["fold"]))
    again = load_project(project.zoo)
    assert again.val_fold == 2 and again.folds == project.folds
    with pytest.raises(EnsError, match="fold file exists"):
        split_project(project)
    split_project(project, force=True)
    assert load_project(project.zoo).val_fold == 0


@pytest.mark.parametrize("kwargs, match", [({"n_folds": 1}, "at least 2"), ({"val_fold": 5}, "0..4"), ({"n_folds": 30, "val_fold": 0}, "cannot make 30 folds from 40 people")])
def test_split_bad_arguments(project, kwargs, match):
    with pytest.raises(EnsError, match=match):
        split_project(project, **kwargs)
    assert not project.folds.exists()


def test_read_folds_rejects_bad_fold(tmp_path):
    path = tmp_path / "folds.csv"
    path.write_text("profile,fold\na,0\nb,x\n")
    with pytest.raises(EnsError, match="row 3: fold 'x'"):
        read_folds(path)


def test_drawn_faces_are_real_images_in_their_formats(faces):
    from PIL import Image

    table = read_train(faces.data)
    for image_id in table["ImageID"][:14]:
        with Image.open(faces.data / "train" / "images" / image_id) as image:
            assert image.size == (48, 64)
            assert image.format == ("PNG" if image_id.endswith(".png") else "JPEG")
    eval_ids = read_eval(faces.data)["ImageID"]
    with Image.open(faces.data / "eval" / "images" / eval_ids[0]) as image:
        assert image.size == (48, 64)


def test_toy_competition_is_deterministic_for_a_seed(tmp_path):
    pytest.importorskip("PIL")
    from ensembler.data.toy import make_toy_competition

    a = make_toy_competition(tmp_path / "a", n_people=10, n_eval_people=3, seed=5, image_size=(24, 32))
    b = make_toy_competition(tmp_path / "b", n_people=10, n_eval_people=3, seed=5, image_size=(24, 32))
    assert a.train.equals(b.train) and a.eval.equals(b.eval)
    first = a.train["ImageID"][0]
    assert (a.data / "train" / "images" / first).read_bytes() == (b.data / "train" / "images" / first).read_bytes()
