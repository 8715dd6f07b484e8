"""Issue 12: out-of-fold scope (import --oof), intervals on the report, and the final two picks."""

import numpy as np
import pandas as pd
import pytest
from conftest import write_csv
from typer.testing import CliRunner

from ensembler.cli import app
from ensembler.data.dataset import split_project
from ensembler.data.labels import Task
from ensembler.data.sources import import_source
from ensembler.data.store import Split, Store
from ensembler.data.toy import teammate_csv
from ensembler.errors import EnsError
from ensembler.evaluate.report import build_report, pick_final
from ensembler.pipeline.composition import compose, write_composition
from ensembler.pipeline.recipe import parse_recipe

GOOD = {Task.MASK: 3.0, Task.GENDER: 2.0, Task.AGE: 1.0}


def _team_csv(toy, tmp_path, name, skill=GOOD, seed=0, train=None):
    truth = pd.concat([toy.eval, toy.train if train is None else train])
    return write_csv(tmp_path / f"{name}.csv", teammate_csv(truth, skill, seed=seed))


def test_oof_imports_are_scored_on_every_train_image(project, toy, tmp_path):
    split_project(project, seed=0)
    for i, name in enumerate(("a", "b")):
        import_source(project, _team_csv(toy, tmp_path, name, seed=i), name, oof=True)
    assert Store(project.predictions).labelled("a").split is Split.OOF
    report = build_report(project, recipes=[parse_recipe("*:a+b")])
    people = toy.train["ImageID"].str.split("/").str[0].nunique()
    assert report.n_images == len(toy.train) == 280 and report.people == people == 40
    assert report.scope == f"out of fold: all 280 images of {people} people that every source predicts out of fold"
    # compose scores on the same images
    composed = compose(project, parse_recipe("*:a+b"))
    assert composed.validation["images"] == 280 and composed.validation["scope"].startswith("out of fold")
    evidence = composed.validation["evidence"]
    low, high = evidence["f1_18_interval"]
    assert low <= composed.validation["recipe"]["f1_18"] <= high and evidence["people"] == 40
    best = max("ab", key=lambda n: composed.validation["sources"][n]["f1_18"])
    gain = evidence["gain"]
    assert gain["over"] == best and gain["f1_18"] == pytest.approx(composed.validation["recipe"]["f1_18"] - composed.validation["sources"][best]["f1_18"], abs=1e-4)
    assert gain["interval"][0] <= gain["f1_18"] <= gain["interval"][1] and 0 <= gain["positive"] <= 1
    result = CliRunner().invoke(app, ["--zoo", str(project.zoo), "compose", "--recipe", "*:a+b", "--name", "v"])
    assert result.exit_code == 0 and "how sure: 18-class F1 90% interval " in result.output and f"gain over {best} " in result.output, result.output


def test_one_source_without_oof_falls_back_to_the_validation_fold_and_says_why(project, toy, tmp_path):
    split_project(project, seed=0)
    import_source(project, _team_csv(toy, tmp_path, "a"), "a", oof=True)
    import_source(project, _team_csv(toy, tmp_path, "b", seed=1), "b")  # not declared out of fold
    report = build_report(project)
    assert report.scope.startswith("validation fold 0 of folds.csv: ") and report.n_images < 280
    assert any("not out of fold on every train image: 'b'" in note and "ens import --oof" in note for note in report.notes)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("no folds", "folds.csv does not exist"),
        ("partial person", r"--oof rows must cover whole people .*1 person\(s\) are partial, e\.g\. .* \(6 of 7 images\)"),
        ("eval only", "the file has none"),
    ],
)
def test_import_oof_refuses_what_it_can_check(project, toy, tmp_path, case, match):
    if case != "no folds":
        split_project(project, seed=0)
    train = toy.train
    if case == "partial person":
        train = train.drop(index=train.index[0])
    if case == "eval only":
        train = train.iloc[:0]
    path = _team_csv(toy, tmp_path, "x", train=train)
    with pytest.raises(EnsError, match=match):
        import_source(project, path, "x", oof=True)
    assert not Store(project.predictions).has("x")  # nothing written


def test_cli_import_oof_and_report_intervals_and_picks(project, toy, tmp_path):
    split_project(project, seed=0)
    runner = CliRunner()
    zoo = ["--zoo", str(project.zoo)]
    out = runner.invoke(app, [*zoo, "import", str(_team_csv(toy, tmp_path, "a")), "--name", "a", "--oof"])
    assert out.exit_code == 0 and "280 oof rows" in out.output, out.output
    import_source(project, _team_csv(toy, tmp_path, "b", seed=1), "b", oof=True)
    result = runner.invoke(app, [*zoo, "report", "--recipe", "*:a+b", "--pick", "2"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "90% CI" in result.output and "P(gain>0)" in result.output and "resamples of 40 people" in result.output
    assert "pick 1: " in result.output and "pick 2: " in result.output
    bad = runner.invoke(app, [*zoo, "report", "--pick", "3"])
    assert bad.exit_code == 1 and bad.stderr.splitlines() == ["Error: --pick 3: the competition takes 2 final submissions (--pick 2)"], bad.output
    assert "pick 1" not in bad.stdout


def test_pick_two_skips_a_near_copy_of_the_best(project, toy, tmp_path):
    """Two near-copies score best; the second pick is the different composition close behind."""
    split_project(project, seed=0)
    import_source(project, _team_csv(toy, tmp_path, "k1", seed=5), "k1", oof=True)
    copy = pd.read_csv(tmp_path / "k1.csv")
    prob_cols = [str(k) for k in range(18)]
    rng = np.random.default_rng(0)
    copy[prob_cols] = copy[prob_cols].to_numpy() * rng.uniform(0.99, 1.01, (len(copy), 18))  # the same model, re-run
    copy[prob_cols] = copy[prob_cols].to_numpy() / copy[prob_cols].to_numpy().sum(1, keepdims=True)
    import_source(project, write_csv(tmp_path / "k2.csv", copy), "k2", oof=True)
    import_source(project, _team_csv(toy, tmp_path, "other", seed=7), "other", oof=True)
    report = build_report(project)
    first, second = pick_final(report, replicates=300)
    assert first.row.name in ("k1", "k2") and report.rows[0].name == first.row.name
    copy_row = next(r for r in report.rows if r.name in ("k1", "k2") and r.name != first.row.name)
    assert report.rows[1].name == copy_row.name  # the near-copy is the runner-up on the board ...
    assert second.row.name == "other"  # ... and not the second pick
    assert "within the noise of the first" in second.why and "correlate" in second.why


def test_a_saved_vote_of_out_of_fold_sources_keeps_the_report_out_of_fold(project, toy, tmp_path):
    """Three --oof imports, one compose, the same report: every train image scored before and after."""
    split_project(project, seed=0)
    for i in range(3):
        import_source(project, _team_csv(toy, tmp_path, f"t{i}", seed=i), f"t{i}", oof=True)
    recipe = "*:t0+t1+t2"
    before = build_report(project, recipes=[parse_recipe(recipe)])
    out = CliRunner().invoke(app, ["--zoo", str(project.zoo), "compose", "--recipe", recipe, "--name", "v"])
    assert out.exit_code == 0, out.output
    saved = Store(project.predictions).labelled("v")
    assert saved.split is Split.OOF and len(saved) == len(toy.train)
    after = build_report(project, recipes=[parse_recipe(recipe)])
    assert before.n_images == after.n_images == len(toy.train) == 280
    assert after.scope.startswith("out of fold: all 280 images") and not any("only the validation fold" in n for n in after.notes)
    assert "v" in {r.name for r in after.rows}


def test_a_saved_vote_with_a_validation_only_source_stays_validation(project, toy, tmp_path):
    split_project(project, seed=0)
    import_source(project, _team_csv(toy, tmp_path, "a"), "a", oof=True)
    import_source(project, _team_csv(toy, tmp_path, "b", seed=1), "b")
    write_composition(project, compose(project, parse_recipe("*:a+b"), name="v"))
    store = Store(project.predictions)
    assert store.labelled("v").split is Split.VAL and not store.has("v", Split.OOF)
