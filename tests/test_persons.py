"""Seven photos, one person: grouping, its agreement with the truth, and decoding by person."""

import numpy as np
import pytest

from ensembler.data.labels import Task, decode, encode, joint_from_tasks
from ensembler.errors import EnsError
from ensembler.pipeline.persons import ByPerson, Grouping, agreement, decode_by_person, group_images, read_groups, write_groups
from ensembler.pipeline.voting import Soft


def _probs(mask_rows, gender_rows, age_rows):
    return {Task.MASK: np.array(mask_rows, float), Task.GENDER: np.array(gender_rows, float), Task.AGE: np.array(age_rows, float)}


def _plain(probs):
    return encode(*(probs[t].argmax(1) for t in (Task.MASK, Task.GENDER, Task.AGE)))


def test_the_joint_mask_assignment_moves_not_wear_to_the_likelier_photo():
    """Photos 5 and 6 both look unmasked alone; one person has one 'not wear' and one
    'incorrect': 6 is far likelier unmasked, so 5 becomes the 'incorrect' photo."""
    mask = [[0.9, 0.05, 0.05]] * 5 + [[0.1, 0.3, 0.6], [0.02, 0.08, 0.9]]
    gender = [[0.45, 0.55]] * 4 + [[0.9, 0.1]] * 3  # 4 weak 'female', 3 sure 'male'
    age = [[0.2, 0.7, 0.1]] * 7
    probs = _probs(mask, gender, age)
    plain = _plain(probs)
    assert decode(plain)[Task.MASK].tolist() == [0, 0, 0, 0, 0, 2, 2]
    decided = decode(decode_by_person(probs, None, np.zeros(7, int), plain))
    assert decided[Task.MASK].tolist() == [0, 0, 0, 0, 0, 1, 2]
    assert set(decided[Task.GENDER].tolist()) == {0}  # log-probabilities summed: 3 sure beat 4 unsure
    assert set(decided[Task.AGE].tolist()) == {1}


def test_a_group_of_six_decodes_without_the_five_one_one_rule():
    mask = [[0.9, 0.05, 0.05]] * 6
    probs = _probs(mask, [[0.2, 0.8]] * 6, [[0.1, 0.2, 0.7]] * 6)
    plain = _plain(probs)
    assert np.array_equal(decode_by_person(probs, None, np.zeros(6, int), plain), plain)  # all 'wear' stays
    seven = _probs([[0.9, 0.05, 0.05]] * 7, [[0.2, 0.8]] * 7, [[0.1, 0.2, 0.7]] * 7)
    forced = decode(decode_by_person(seven, None, np.zeros(7, int), _plain(seven)))[Task.MASK]
    assert sorted(forced.tolist()) == [0, 0, 0, 0, 0, 1, 2]  # a full group must hold one of each


def test_groups_of_one_decode_exactly_as_without_persons():
    rng = np.random.default_rng(0)
    probs = {t: rng.dirichlet(np.ones(k), 50) for t, k in ((Task.MASK, 3), (Task.GENDER, 2), (Task.AGE, 3))}
    joint = joint_from_tasks(probs) * rng.uniform(0.5, 1.5, (50, 18))
    joint /= joint.sum(1, keepdims=True)
    plain = joint.argmax(1)
    assert np.array_equal(decode_by_person(probs, joint, np.arange(50), plain), plain)


def test_on_the_joint_a_group_shares_gender_and_age():
    rng = np.random.default_rng(1)
    joint = rng.dirichlet(np.ones(18), 14)
    groups = np.repeat([0, 1], 7)
    decided = decode(decode_by_person({}, joint, groups, joint.argmax(1)))
    for g in (0, 1):
        members = groups == g
        assert len(set(decided[Task.GENDER][members])) == 1 and len(set(decided[Task.AGE][members])) == 1
        assert sorted(decided[Task.MASK][members].tolist()) == [0, 0, 0, 0, 0, 1, 2]


def test_grouping_recovers_well_separated_people_within_the_cap():
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 10, (30, 16))
    persons = np.repeat(np.arange(30), 7)
    x = centres[persons] + rng.normal(0, 0.3, (210, 16))
    x = np.vstack([x, np.full((1, 16), 100.0)])  # an image like nobody else
    found = group_images(x)
    assert found.sizes.max() <= 7
    assert found.sizes[found.groups[-1]] == 1 and found.confidence[-1] == 0  # the stranger stays alone
    measured = agreement(found.groups[:-1], persons)
    assert measured.ari > 0.99 and measured.whole == 1.0 and measured.precision == 1.0


def test_agreement_by_hand():
    persons = np.array([0, 0, 0, 1, 1, 1])
    groups = np.array([0, 0, 1, 2, 2, 2])  # person 0 split 2+1, person 1 whole
    found = agreement(groups, persons)
    # true pairs: 3 + 3 = 6; found pairs: 1 + 3 = 4, all right
    assert found.precision == 1.0 and found.recall == pytest.approx(4 / 6) and found.whole == 0.5 and found.people == 2 and found.groups == 3
    from sklearn.metrics import adjusted_rand_score

    assert found.ari == pytest.approx(adjusted_rand_score(persons, groups))


def test_groups_file_round_trip_and_its_refusals(tmp_path):
    ids = np.array([f"{i:03d}.jpg" for i in range(14)], dtype=object)
    grouping = Grouping(np.repeat([0, 1], 7), np.full(14, 0.5))
    write_groups(tmp_path, "eval", ids, grouping, {"fingerprint": "abc"})
    groups, meta = read_groups(tmp_path, "eval", ids[::-1], "abc")
    assert groups.tolist() == np.repeat([1, 0], 7).tolist() and meta["groups"] == 2
    with pytest.raises(EnsError, match=r"the eval images changed since\): run ens group --split eval again"):
        read_groups(tmp_path, "eval", ids, "other")
    with pytest.raises(EnsError, match=r"groups other images: 1 missing \('999.jpg'\), 1 extra"):
        read_groups(tmp_path, "eval", np.array([*ids[:-1], "999.jpg"], dtype=object))
    with pytest.raises(EnsError, match="no grouping of the train images"):
        read_groups(tmp_path, "train", ids)
    write_groups(tmp_path, "eval", ids, Grouping(np.zeros(14, int), np.zeros(14)), {})
    with pytest.raises(EnsError, match="a group holds more than 7 images"):
        read_groups(tmp_path, "eval", ids)


# --- compose --by-person ------------------------------------------------------------------------


def _person_project(project, toy, tmp_path, train_groups=None):
    """Two imported teammates (out of fold), and groups files: eval from the true persons, train
    from `train_groups` (default: the true persons too)."""
    import pandas as pd
    from conftest import write_csv

    from ensembler.data.dataset import images_fingerprint, read_eval, read_train, split_project
    from ensembler.data.people import person_codes
    from ensembler.data.sources import import_source
    from ensembler.data.toy import teammate_csv

    split_project(project, seed=0)
    truth = pd.concat([toy.eval, toy.train])
    for i, name in enumerate(("a", "b")):
        skill = {Task.MASK: 1.5, Task.GENDER: 0.8, Task.AGE: 0.6}
        import_source(project, write_csv(tmp_path / f"{name}.csv", teammate_csv(truth, skill, seed=i)), name, oof=True)
    data = project.require_data()
    ev, tr = read_eval(data), read_train(data)
    persons = toy.eval.set_index("ImageID")["person"].reindex(ev["ImageID"]).to_numpy()
    write_groups(project.root, "eval", ev["ImageID"].to_numpy(object), Grouping(persons, np.ones(len(ev))), {"fingerprint": images_fingerprint(ev["ImageID"], ev["path"])})
    ids = tr["ImageID"].to_numpy(object)
    groups = person_codes(ids) if train_groups is None else train_groups(len(ids))
    write_groups(project.root, "train", ids, Grouping(groups, np.ones(len(ids))), {"fingerprint": images_fingerprint(ids, tr["path"]), "agreement": {"ari": 1.0}})


def test_compose_by_person_is_applied_where_the_labelled_check_shows_a_gain(project, toy, tmp_path):

    import pandas as pd
    from typer.testing import CliRunner

    from ensembler.cli import app
    from ensembler.pipeline.composition import compose, compose_submission
    from ensembler.pipeline.recipe import parse_recipe

    _person_project(project, toy, tmp_path)
    plain = compose(project, parse_recipe("*:a+b"))
    sub = compose_submission(project, parse_recipe("*:a+b"), [Soft(), ByPerson()], name="people")
    record = sub.step("by_person")["by_person"]
    assert record["applied"] and record["check"]["interval"][0] > 0 and record["groups"]["sha256"]
    assert record["check"]["f1_18_by_person"] > record["check"]["f1_18_plain"] == pytest.approx(plain.validation["recipe"]["f1_18"], abs=1e-4)
    answers = pd.read_csv(toy.answers).set_index("ImageID")["ans"]
    written = pd.read_csv(sub.csv)
    from ensembler.scoring.metrics import score

    hidden = lambda labels: score(answers.reindex(written["ImageID"]).to_numpy(), labels).f1_18  # noqa: E731
    assert hidden(written["ans"].to_numpy()) > hidden(plain.eval.labels)  # and on the hidden answers too
    decided = decode(written["ans"].to_numpy())
    persons = toy.eval.set_index("ImageID")["person"].reindex(written["ImageID"]).to_numpy()
    for p in np.unique(persons):
        assert len(set(decided[Task.AGE][persons == p])) == 1 and sorted(decided[Task.MASK][persons == p]) == [0, 0, 0, 0, 0, 1, 2]
    out = CliRunner().invoke(app, ["--zoo", str(project.zoo), "compose", "--recipe", "*:a+b", "--by-person", "--name", "p2"])
    assert out.exit_code == 0 and "by person applied: " in out.output and "with the true persons" in out.output, out.output


def test_the_guard_keeps_the_plain_composition_when_the_train_side_gain_is_negative(project, toy, tmp_path):
    from ensembler.pipeline.composition import compose
    from ensembler.pipeline.recipe import parse_recipe

    rng = np.random.default_rng(0)
    _person_project(project, toy, tmp_path, train_groups=lambda n: rng.permutation(np.arange(n) // 7))  # strangers put together
    plain = compose(project, parse_recipe("*:a+b"))
    kept = compose(project, parse_recipe("*:a+b"), [Soft(), ByPerson()])
    record = kept.step("by_person")["by_person"]
    assert not record["applied"] and record["check"]["gain"] < 0 and "plain decisions are kept" in record["reason"]
    assert np.array_equal(kept.eval.labels, plain.eval.labels)
    forced = compose(project, parse_recipe("*:a+b"), [Soft(), ByPerson(force=True)])
    assert forced.step("by_person")["by_person"]["applied"] and not np.array_equal(forced.eval.labels, plain.eval.labels)


def test_compose_by_person_without_a_grouping_says_how_to_make_one(project, toy, tmp_path):
    from ensembler.pipeline.composition import compose
    from ensembler.pipeline.recipe import parse_recipe

    _person_project(project, toy, tmp_path)
    (project.root / "groups" / "eval.csv").unlink()
    with pytest.raises(EnsError, match=r"no grouping of the eval images .*: run ens group --split eval"):
        compose(project, parse_recipe("*:a+b"), [Soft(), ByPerson()])


def test_cli_group_measures_train_blind_and_groups_eval(faces, tmp_path):
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from ensembler.cli import app
    from ensembler.data.people import person_codes
    from ensembler.data.project import load_project, update_project

    zoo = tmp_path / "team" / "model_zoo.yaml"
    update_project(zoo, data=faces.data)
    runner = CliRunner()
    train = runner.invoke(app, ["--zoo", str(zoo), "group", "--split", "train", "--workers", "0"])
    assert train.exit_code == 0, train.output
    assert "against the true persons: pairwise precision " in train.output and "people recovered whole" in train.output
    project = load_project(zoo)
    groups, meta = read_groups(project.root, "train", faces.train["ImageID"].to_numpy(object))
    measured = agreement(groups, person_codes(faces.train["ImageID"].to_numpy(object)))
    assert meta["agreement"]["ari"] == pytest.approx(measured.ari, abs=1e-4) and measured.ari > 0.8  # a person's photos share a look
    from ensembler.evaluate.report import grouping_notes

    assert grouping_notes(project) == [f"train grouping (ens group, blind to the names) against the true persons: {measured.line()}"]  # the report shows it
    result = runner.invoke(app, ["--zoo", str(zoo), "group", "--workers", "0"])
    assert result.exit_code == 0 and "wrote groups/eval.csv" in result.output.replace(str(project.root) + "/", ""), result.output
    eval_groups, eval_meta = read_groups(project.root, "eval", faces.eval["ImageID"].to_numpy(object))
    assert agreement(eval_groups, faces.eval["person"].to_numpy()).ari > 0.8 and eval_meta["train_agreement"]["ari"] == meta["agreement"]["ari"]


def test_cli_group_names_a_corrupt_image_and_warns_on_a_count_not_of_sevens(faces, tmp_path):
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from ensembler.cli import app
    from ensembler.data.project import update_project

    zoo = tmp_path / "team" / "model_zoo.yaml"
    update_project(zoo, data=faces.data)
    info = faces.data / "eval" / "info.csv"
    lines = info.read_text().splitlines()
    info.write_text("\n".join(lines[:-1]) + "\n")  # 69 eval images: not a multiple of 7
    result = CliRunner().invoke(app, ["--zoo", str(zoo), "group", "--workers", "0"])
    assert result.exit_code == 0 and "WARNING: 69 eval images is not a multiple of 7" in result.stderr
    bad = faces.eval["ImageID"].iloc[3]
    (faces.data / "eval" / "images" / bad).write_bytes(b"not an image")
    (tmp_path / "team" / "groups" / "eval.csv").unlink()
    result = CliRunner().invoke(app, ["--zoo", str(zoo), "group", "--workers", "0"])
    assert result.exit_code == 1 and bad in result.stderr and "cannot be read" in result.stderr
    assert not (tmp_path / "team" / "groups" / "eval.csv").exists()  # nothing written


def test_auto_tries_decoding_by_person_when_the_team_grouped_its_images(project, toy, tmp_path):
    from ensembler.pipeline.composition import compose
    from ensembler.pipeline.recipe import parse_recipe

    _person_project(project, toy, tmp_path)
    auto = compose(project, parse_recipe("*:a+b"), "auto")
    assert auto.step("by_person")["by_person"]["applied"] and auto.step("by_person")["by_person"]["check"]["interval"][0] > 0
    (project.root / "groups" / "train.csv").unlink()
    assert compose(project, parse_recipe("*:a+b"), "auto").step("by_person") is None  # no train grouping: not tried


def test_auto_goes_on_without_a_stale_grouping_and_says_why(project, toy, tmp_path):
    import os

    from ensembler.pipeline.composition import compose
    from ensembler.pipeline.recipe import parse_recipe

    _person_project(project, toy, tmp_path)
    image = next((toy.data / "eval" / "images").iterdir())
    os.utime(image, ns=(1, 1))  # an eval image changed since ens group ran
    auto = compose(project, parse_recipe("*:a+b"), "auto")
    record = auto.step("by_person")["by_person"]
    assert not record["applied"] and record["reason"].startswith("auto did not try it: ") and "run ens group --split eval again" in record["reason"]
    with pytest.raises(EnsError, match="run ens group --split eval again"):  # asked for explicitly, it is an error
        compose(project, parse_recipe("*:a+b"), [Soft(), ByPerson()])


@pytest.mark.parametrize("threshold", ["-1", "0", "nan", "inf"])
def test_cli_group_refuses_a_threshold_that_cannot_merge_and_writes_nothing(faces, tmp_path, threshold):
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from ensembler.cli import app
    from ensembler.data.project import update_project

    zoo = tmp_path / "team" / "model_zoo.yaml"
    update_project(zoo, data=faces.data)
    result = CliRunner().invoke(app, ["--zoo", str(zoo), "group", "--workers", "0", "--threshold", threshold])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: --threshold {threshold}: it is the largest descriptor distance") and "a positive number" in lines[0]
    assert not (tmp_path / "team" / "groups").exists()  # nothing written
    with pytest.raises(EnsError, match="a positive number"):
        group_images(np.zeros((3, 2)), float(threshold))
