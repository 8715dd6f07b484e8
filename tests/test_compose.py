import json

import numpy as np
import pandas as pd
import pytest
from conftest import hard_csv, write_csv

from ensembler.data.dataset import split_project
from ensembler.data.labels import Task, decode, encode
from ensembler.data.sources import import_source
from ensembler.data.store import Split, Store
from ensembler.data.toy import teammate_csv
from ensembler.errors import EnsError
from ensembler.pipeline.composition import compose_submission
from ensembler.pipeline.recipe import parse_recipe
from ensembler.pipeline.steps import Method

VOTES = (Method.SOFT, Method.HARD, Method.GEO)


def seed_sources(project, toy, tmp_path):
    """A: right about mask and gender, wrong about age. B: right about age only."""
    truth = pd.concat([toy.eval, toy.train])
    t = decode(truth["label"].to_numpy())
    a = encode(t[Task.MASK], t[Task.GENDER], (t[Task.AGE] + 1) % 3)
    b = encode((t[Task.MASK] + 1) % 3, 1 - t[Task.GENDER], t[Task.AGE])
    import_source(project, hard_csv(tmp_path / "A.csv", truth, a), "A")
    import_source(project, hard_csv(tmp_path / "B.csv", truth, b), "B")


def test_seed_case_per_task_recipe_gives_the_truth(project, toy, tmp_path):
    seed_sources(project, toy, tmp_path)
    split_project(project)
    sub = compose_submission(project, parse_recipe("age:B mask:A gender:A"), name="seed")
    written = pd.read_csv(sub.csv)
    assert written["ImageID"].tolist() == toy.eval["ImageID"].tolist()
    assert written["ans"].tolist() == toy.eval["label"].tolist()
    assert sub.mode == "per-task"
    manifest = json.loads(sub.manifest.read_text())
    assert manifest["recipe"] == "mask,gender:A age:B" and manifest["method"] == "soft"
    assert set(manifest["inputs"]) == {"A", "B"} and len(manifest["inputs"]["A"]["eval_sha256"]) == 64
    assert manifest["inputs"]["B"]["weights"] == {"age": 1.0}
    val = manifest["validation"]
    assert val["recipe"]["accuracy"] == 1.0 and val["scope"].startswith("validation fold 0")
    assert val["sources"]["A"]["f1_mask"] == 1.0 and val["sources"]["A"]["accuracy"] == 0.0
    assert manifest["submission_sha256"] and sum(manifest["class_counts"].values()) == len(toy.eval)
    # the composition is kept as a source
    store = Store(project.predictions)
    assert store.splits("seed") == [Split.EVAL, Split.VAL]
    assert np.array_equal(store.read("seed", Split.EVAL).probs[Task.AGE].argmax(1), decode(toy.eval["label"].to_numpy())[Task.AGE])


def test_a_single_18_way_source_alone_reproduces_its_own_argmax(project, toy, tmp_path):
    proba = teammate_csv(toy.eval, {Task.MASK: 1.0, Task.GENDER: 1.0, Task.AGE: 0.5}, seed=3)
    import_source(project, write_csv(tmp_path / "p.csv", proba), "p")
    expected = proba[[str(k) for k in range(18)]].to_numpy().argmax(1)
    for method in VOTES:
        sub = compose_submission(project, parse_recipe("*:p"), method, name=f"alone-{method}")
        assert pd.read_csv(sub.csv)["ans"].tolist() == expected.tolist()
        assert sub.mode == "joint"
    manifest = json.loads(sub.manifest.read_text())
    assert manifest["validation"] == {"skipped": "no labelled predictions for p"}


def test_never_overwrites(project, toy, tmp_path):
    seed_sources(project, toy, tmp_path)
    compose_submission(project, parse_recipe("*:A"), name="x")
    with pytest.raises(EnsError, match="x.csv exists; submissions are never overwritten"):
        compose_submission(project, parse_recipe("*:B"), name="x")
    (project.submissions / "x.csv").unlink()
    (project.submissions / "x.json").unlink()
    with pytest.raises(EnsError, match="source 'x' exists"):
        compose_submission(project, parse_recipe("*:B"), name="x")
    with pytest.raises(EnsError, match="source 'A' exists"):
        compose_submission(project, parse_recipe("*:B"), name="A")


@pytest.mark.parametrize(
    "recipe, match",
    [
        ("*:C", r"unknown source 'C'"),
        ("*:AA", r"unknown source 'AA' \(did you mean: A"),
        ("mask:A*0", r"weight '0' must be a positive number"),
    ],
)
def test_recipe_errors_write_nothing(project, toy, tmp_path, recipe, match):
    seed_sources(project, toy, tmp_path)
    with pytest.raises(EnsError, match=match):
        compose_submission(project, parse_recipe(recipe), name="out")
    assert not (project.submissions / "out.csv").exists()


def test_task_source_that_does_not_cover_is_named(project, toy, tmp_path):
    seed_sources(project, toy, tmp_path)
    ages = decode(toy.eval["label"].to_numpy())[Task.AGE]
    import_source(project, write_csv(tmp_path / "age.csv", pd.DataFrame({"ImageID": toy.eval["ImageID"], "ans": ages})), "ageonly", task=Task.AGE)
    with pytest.raises(EnsError, match="source 'ageonly' does not cover mask"):
        compose_submission(project, parse_recipe("mask:ageonly *:A"), name="out")
    sub = compose_submission(project, parse_recipe("age:ageonly *:A"), name="ok")
    got = decode(pd.read_csv(sub.csv)["ans"].to_numpy())
    assert np.array_equal(got[Task.AGE], ages)


def _age_only(project, toy, tmp_path):
    ages = decode(toy.eval["label"].to_numpy())[Task.AGE]
    import_source(project, write_csv(tmp_path / "age.csv", pd.DataFrame({"ImageID": toy.eval["ImageID"], "ans": ages})), "ageonly", task=Task.AGE)
    return ages


def test_unnamed_task_from_the_one_named_source_that_predicts_it(project, toy, tmp_path):
    # the card's command: "age from ageonly, mask from A" -> gender from A, said and recorded
    seed_sources(project, toy, tmp_path)
    ages = _age_only(project, toy, tmp_path)
    sub = compose_submission(project, parse_recipe("age:ageonly mask:A"), name="card")
    got, truth = decode(pd.read_csv(sub.csv)["ans"].to_numpy()), decode(toy.eval["label"].to_numpy())
    assert np.array_equal(got[Task.AGE], ages) and np.array_equal(got[Task.GENDER], truth[Task.GENDER])
    line = "gender: not named; from A, the recipe's only source with gender"
    assert sub.recipe.filled == {Task.GENDER: line}
    manifest = json.loads(sub.manifest.read_text())
    assert manifest["unnamed_tasks"] == {"gender": line} and manifest["recipe"] == "mask,gender:A age:ageonly"


def test_unnamed_task_from_several_named_sources_is_their_vote(project, toy, tmp_path):
    seed_sources(project, toy, tmp_path)  # A right about gender, B wrong: tied 1-1 per image
    sub = compose_submission(project, parse_recipe("age:B mask:A"), name="two")
    assert str(sub.recipe) == "mask:A gender:A+B age:B"
    assert json.loads(sub.manifest.read_text())["unnamed_tasks"] == {"gender": "gender: not named; from A+B, the recipe's sources with gender"}
    plain = compose_submission(project, parse_recipe("age:B mask:A gender:A+B"), name="spelled")
    assert pd.read_csv(sub.csv)["ans"].tolist() == pd.read_csv(plain.csv)["ans"].tolist()


def test_unnamed_task_no_named_source_predicts_it(project, toy, tmp_path):
    seed_sources(project, toy, tmp_path)
    _age_only(project, toy, tmp_path)
    with pytest.raises(EnsError, match=r"no source for mask: the recipe's source ageonly does not predict it; sources that do: 'A', 'B'; name one \(mask:A\)"):
        compose_submission(project, parse_recipe("age:ageonly"), name="out")
    assert not (project.submissions / "out.csv").exists()


def test_image_id_sets_that_differ_are_counted(project, toy, tmp_path):
    seed_sources(project, toy, tmp_path)
    info = toy.data / "eval" / "info.csv"
    table = pd.read_csv(info)
    extra = pd.DataFrame({"ImageID": ["new1.jpg", "new2.jpg"], "ans": 0})
    pd.concat([table.iloc[1:], extra]).to_csv(info, index=False)
    with pytest.raises(EnsError, match=r"source 'A' and eval/info.csv disagree: 2 ImageID\(s\) missing .*'new1.jpg'.*, 1 extra"):
        compose_submission(project, parse_recipe("*:A"), name="out")


def test_registered_model_without_predictions_says_what_to_run(tmp_path, toy):
    from ensembler.data.project import load_project

    zoo = tmp_path / "model_zoo.yaml"
    zoo.write_text(f"project:\n  data: {toy.data}\nmodels:\n  - {{name: effnet, architecture: resnet18, checkpoint: e.pth, layout: classes18}}\n")
    with pytest.raises(EnsError, match="run `ens predict --model effnet --split eval`"):
        compose_submission(load_project(zoo), parse_recipe("*:effnet"), name="out")


def test_ensembles_can_feed_later_recipes(project, toy, tmp_path):
    seed_sources(project, toy, tmp_path)
    compose_submission(project, parse_recipe("age:B *:A"), name="best")
    again = compose_submission(project, parse_recipe("*:best"), name="again")
    assert pd.read_csv(again.csv)["ans"].tolist() == toy.eval["label"].tolist()
