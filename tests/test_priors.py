import json

import numpy as np
import pandas as pd
import pytest
from conftest import team_recipe, write_csv

from ensembler.data.labels import Task, decode, encode
from ensembler.data.sources import import_source
from ensembler.data.toy import teammate_csv
from ensembler.errors import EnsError
from ensembler.pipeline.composition import compose_submission
from ensembler.pipeline.priors import Priors, adjust, em_priors, train_priors
from ensembler.pipeline.recipe import parse_recipe
from ensembler.pipeline.voting import Hard, Soft


def simulated(priors, n, seed, train=(0.47, 0.46, 0.07)):
    """Labels drawn with `priors`; the exact posteriors of a classifier fitted under `train`
    (1-D Gaussian classes at 0, 1.5, 3)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=priors)
    x = rng.normal(np.array([0.0, 1.5, 3.0])[y], 1.0)
    likelihood = np.exp(-0.5 * (x[:, None] - np.array([0.0, 1.5, 3.0])) ** 2)
    post = likelihood * np.asarray(train)
    return y, post / post.sum(axis=1, keepdims=True)


def test_em_recovers_a_known_prior_shift_within_0_02():
    train, shifted = np.array([0.47, 0.46, 0.07]), np.array([0.30, 0.40, 0.30])
    _, post = simulated(shifted, 20000, seed=0)
    estimated, iterations = em_priors(post, train)
    assert np.abs(estimated - shifted).max() < 0.02
    assert np.abs(post.mean(axis=0) - shifted).max() > 0.05  # the naive mean of posteriors is biased
    assert iterations > 1


def test_em_on_the_train_mix_stays_put():
    train = np.array([0.47, 0.46, 0.07])
    _, post = simulated(train, 20000, seed=1)
    estimated, _ = em_priors(post, train)
    assert np.abs(estimated - train).max() < 0.02


def test_adjust_invariants_and_a_hand_computed_case():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    np.testing.assert_allclose(adjust(p, np.array([0.5, 0.5]), np.array([0.5, 0.5])), p)
    back = adjust(adjust(p, np.array([0.5, 0.5]), np.array([0.2, 0.8])), np.array([0.2, 0.8]), np.array([0.5, 0.5]))
    np.testing.assert_allclose(back, p)
    np.testing.assert_allclose(adjust(p, np.array([0.5, 0.5]), np.array([0.2, 0.8]))[0], [0.2, 0.8])


def test_correction_raises_macro_f1_on_a_shifted_set():
    from ensembler.scoring.metrics import macro_f1

    y, post = simulated((0.30, 0.40, 0.30), 20000, seed=2)
    before = macro_f1(y, post.argmax(1), 3)
    estimated, _ = em_priors(post, np.array([0.47, 0.46, 0.07]))
    after = macro_f1(y, adjust(post, np.array([0.47, 0.46, 0.07]), estimated).argmax(1), 3)
    assert after > before + 0.01


def test_train_priors_hand_computed():
    labels = encode([0, 0, 1, 2], [0, 1, 1, 1], [0, 2, 2, 1])
    priors = train_priors(labels)
    assert priors[Task.MASK].tolist() == [0.5, 0.25, 0.25]
    assert priors[Task.GENDER].tolist() == [0.25, 0.75]
    assert priors[Task.AGE].tolist() == [0.25, 0.25, 0.5]


def test_compose_with_em_records_priors_and_moves_toward_the_older_eval(project, toy, tmp_path):
    probs = teammate_csv(toy.eval, {Task.MASK: 3.0, Task.GENDER: 2.0, Task.AGE: 1.0}, seed=4)
    import_source(project, write_csv(tmp_path / "p.csv", probs), "p")
    plain = compose_submission(project, parse_recipe("*:p"), name="plain")
    fixed = compose_submission(project, parse_recipe("*:p"), [Soft(), Priors("em")], name="fixed")
    record = fixed.step("priors")["prior"]
    assert record["spec"] == "em" and set(record["tasks"]) == {"mask", "gender", "age"}
    age = record["tasks"]["age"]
    assert age["from"] == "em" and age["eval"][2] > age["train"][2]  # the toy eval is older than train
    old = lambda sub: (decode(pd.read_csv(sub.csv)["ans"].to_numpy())[Task.AGE] == 2).mean()  # noqa: E731
    assert old(fixed) > old(plain)
    assert plain.step("priors") is None
    with pytest.raises(EnsError, match="--method hard gives classes only"):
        compose_submission(project, parse_recipe("*:p"), [Hard(), Priors("em")], name="h")


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (["old"], "expected em, bbse, or TASK:P,P"),
        (["em", "bbse"], "one estimator at a time"),
        (["agee:0.2,0.3,0.5"], "unknown task 'agee'"),
        (["age:0.5,0.5"], "age has 3 classes, so 3 priors, not 2"),
        (["age:a,b,c"], "priors are numbers"),
        (["age:-1,1,1"], "non-negative numbers with a positive sum"),
        (["age:0,0,0"], "non-negative numbers with a positive sum"),
        (["age:1,1,1", "age:1,2,1"], "the age priors are given twice"),
    ],
)
def test_parse_priors_errors(values, match):
    from ensembler.pipeline.priors import parse_priors

    with pytest.raises(EnsError, match=match):
        parse_priors(values)


def test_parse_priors_normalises_and_keeps_em_for_the_rest():
    from ensembler.pipeline.priors import parse_priors

    spec = parse_priors(["age:2,5,3", "em"])
    assert spec.em and spec.given == {Task.AGE: (0.2, 0.5, 0.3)} and str(spec) == "age:0.2,0.5,0.3 em"
    assert not parse_priors(["none"]).active and str(parse_priors([])) == "none"
    assert parse_priors("gender:1,1").given[Task.GENDER] == (0.5, 0.5)


def test_given_priors_reweight_by_hand():
    from ensembler.pipeline.priors import PriorSpec, correct

    probs = {Task.AGE: np.array([[0.5, 0.3, 0.2]]), Task.GENDER: np.array([[0.6, 0.4]])}
    train = {Task.AGE: np.array([0.5, 0.25, 0.25]), Task.GENDER: np.array([0.5, 0.5])}
    out, joint, record = correct(probs, train, None, PriorSpec(given={Task.AGE: (0.25, 0.25, 0.5)}))
    expected = np.array([0.5 * 0.5, 0.3 * 1.0, 0.2 * 2.0])
    np.testing.assert_allclose(out[Task.AGE][0], expected / expected.sum())
    np.testing.assert_allclose(out[Task.GENDER], probs[Task.GENDER])  # not given, no em: unchanged
    assert joint is None and set(record) == {"age"} and record["age"]["from"] == "given"


def test_compose_with_given_age_priors_and_em_for_the_rest(project, toy, tmp_path):
    probs = teammate_csv(toy.eval, {Task.MASK: 3.0, Task.GENDER: 2.0, Task.AGE: 1.0}, seed=4)
    import_source(project, write_csv(tmp_path / "p.csv", probs), "p")
    sub = compose_submission(project, parse_recipe("*:p"), [Soft(), Priors("age:0.1,0.1,0.8 em")], name="given")
    record = sub.step("priors")["prior"]
    assert record["spec"] == "age:0.1,0.1,0.8 em"
    assert record["tasks"]["age"]["from"] == "given" and record["tasks"]["age"]["eval"] == [0.1, 0.1, 0.8]
    assert record["tasks"]["mask"]["from"] == "em"


# --- label shift done right: calibrate, true train mix, BBSE, the labelled check, the guards ----


def test_bbse_recovers_the_shift_from_a_known_confusion_matrix():
    from ensembler.pipeline.priors import bbse_priors

    # a classifier right 80 % of the time, wrong to the other class otherwise; train 50/50
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20000)
    decided = np.where(rng.random(20000) < 0.8, y, 1 - y)
    y_eval = (rng.random(20000) < 0.8).astype(int)  # eval: 80 % class 1
    decided_eval = np.where(rng.random(20000) < 0.8, y_eval, 1 - y_eval)
    # mu = C w: 0.8 * 0.2 + 0.2 * 0.8 = 0.32 of eval decided 0 -> solves to about (0.2, 0.8)
    estimate = bbse_priors(decided, y, decided_eval, np.bincount(y) / len(y))
    np.testing.assert_allclose(estimate, [0.2, 0.8], atol=0.02)


def test_degenerate_estimates_are_named():
    from ensembler.pipeline.priors import degenerate

    assert degenerate(np.array([0.0, 0.001, 0.999]), np.array([0.47, 0.46, 0.07])) == [0, 1]
    assert degenerate(np.array([0.4, 0.4, 0.2]), np.array([0.47, 0.46, 0.07])) == []
    assert degenerate(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5, 0.0])) == []  # a class train lacks
    assert degenerate(np.array([0.48, 0.021, 0.499]), np.array([0.43, 0.5, 0.07])) == [1]  # the demo's run-away: 50 % to 2 %
    assert degenerate(np.array([0.505, 0.064, 0.431]), np.array([0.433, 0.5, 0.067])) == [1]  # and after stacking, to 6 %
    assert degenerate(np.array([0.35, 0.4, 0.25]), np.array([0.47, 0.46, 0.07])) == []  # a real shift: the old band up 3.5x, the others down a little


def _team_project(tmp_path, kind, shift, seed=1):
    from ensembler.data.teams import simulate_team, write_team

    team = simulate_team(kind, shift, seed=seed)
    return team, write_team(team, tmp_path / kind)


def test_em_no_longer_runs_away_on_an_overconfident_team(tmp_path):
    """The issue's case: an over-confident soft vote fed to EM with its own mean posterior as
    train priors called every eval image 60+. Calibrated first, against the true mix, checked."""
    import ensembler as ens
    from ensembler.pipeline.priors import adjust, em_priors, implied_priors
    from ensembler.scoring.metrics import score

    team, project = _team_project(tmp_path, "overconfident", "age")
    recipe = team_recipe(team)
    plain = ens.compose(project, recipe)
    # the old way, by hand: EM on the uncalibrated joint's age marginal, priors = its own mean
    labelled = ens.compose(project, recipe).val
    old_train = implied_priors(labelled.probs[Task.AGE])
    old_eval, _ = em_priors(plain.eval.probs[Task.AGE], old_train)
    old_ages = adjust(plain.eval.probs[Task.AGE], old_train, old_eval).argmax(1)
    fixed = ens.compose(project, recipe, [ens.Soft(), ens.Priors("em")])
    record = fixed.step("priors")["prior"]
    assert set(record["calibration"]) == {"joint"} and record["calibration"]["joint"]["method"] != "none"
    assert record["tasks"]["age"]["train"] == np.round(np.bincount(decode(team.labels)[Task.AGE], minlength=3) / len(team.labels), 4).tolist()
    new_ages = decode(fixed.eval.labels)[Task.AGE]
    assert len(np.unique(new_ages)) == 3 and not fixed.manifest["warnings"]
    f1 = lambda labels: score(team.answers, labels).f1_18  # noqa: E731
    assert f1(fixed.eval.labels) >= f1(plain.eval.labels)  # never below the plain vote on the hidden answers
    assert np.mean(new_ages == 2) < 0.6 and (np.mean(old_ages == 2) > np.mean(new_ages == 2))


def test_a_real_age_shift_is_corrected_and_raises_the_hidden_score(tmp_path):
    import ensembler as ens
    from ensembler.scoring.metrics import score

    team, project = _team_project(tmp_path, "near-copies", "age")
    recipe = team_recipe(team)
    plain, fixed = ens.compose(project, recipe), ens.compose(project, recipe, [ens.Soft(), ens.Priors("em")])
    record = fixed.step("priors")["prior"]
    assert record["applied"] and record["check"]["gain"] > 0 and record["tasks"]["age"]["eval"][2] > record["tasks"]["age"]["train"][2]
    assert score(team.answers, fixed.eval.labels).f1_18 > score(team.answers, plain.eval.labels).f1_18


def test_a_correction_the_labelled_check_rejects_is_not_applied_unless_forced(tmp_path):
    import ensembler as ens

    team, project = _team_project(tmp_path, "classifiers18", "none")
    recipe = team_recipe(team)
    plain = ens.compose(project, recipe)
    kept = ens.compose(project, recipe, [ens.Soft(), ens.Priors("bbse")])
    record = kept.step("priors")["prior"]
    assert not record["applied"] and record["check"]["gain"] <= 0 and "--force-prior" in record["reason"]
    assert np.array_equal(kept.eval.labels, plain.eval.labels)  # exactly the plain composition
    forced = ens.compose(project, recipe, [ens.Soft(), ens.Priors("bbse", force=True)])
    assert forced.step("priors")["prior"]["applied"] and "forced" in forced.step("priors")["prior"]["reason"]


def test_a_one_class_task_is_never_written_silently(project, toy, tmp_path):
    from typer.testing import CliRunner

    from ensembler.cli import app

    probs = teammate_csv(toy.eval, {Task.MASK: 3.0, Task.GENDER: 2.0, Task.AGE: 1.0}, seed=4)
    cols = [str(k) for k in range(18)]
    values = probs[cols].to_numpy().copy()
    values[:, [c for c in range(18) if c % 3 != 0]] *= 1e-3  # every image called under 30
    probs[cols] = values / values.sum(1, keepdims=True)
    import_source(project, write_csv(tmp_path / "young.csv", probs), "young")
    sub = compose_submission(project, parse_recipe("*:young"), name="young-sub")
    assert sub.warnings == ["every eval image is called age '<30': check the sources and any prior correction before submitting"]
    assert json.loads(sub.manifest.read_text())["warnings"] == sub.warnings
    result = CliRunner().invoke(app, ["--zoo", str(project.zoo), "--data", str(project.data), "compose", "--recipe", "*:young", "--name", "again"])
    assert result.exit_code == 0 and "WARNING: every eval image is called age '<30'" in result.stderr


def test_self_check_flags_probabilities_that_believe_in_another_mix():
    """EM on the labelled images' own probabilities must give back their mix: posteriors fitted
    under a flat mix (temperature scaling cannot move a class's mean) believe 60+ is a third of
    the people where 7 % are, and EM reads that belief as a shift."""
    from ensembler.pipeline.priors import SELF_CHECK, self_check

    train = np.array([0.47, 0.46, 0.07])
    _, right = simulated(train, 20000, seed=3)
    assert self_check(right, train) is None
    _, flat = simulated(train, 20000, seed=3, train=(1 / 3, 1 / 3, 1 / 3))
    estimate = self_check(flat, train)
    assert estimate is not None and np.abs(estimate - train).sum() > SELF_CHECK and estimate[2] > train[2]


def test_a_joint_too_thin_for_a_bias_per_class_is_calibrated_and_corrected_task_by_task(tmp_path):
    """An 18-class team whose joint has a gender x age class of under five people: calibrated as a
    whole, by temperature alone, the joint kept the members' belief in 60+ and EM ran it up from
    9 % to over 30 % (the estimate was then dropped by the self-check, and `--prior em` did
    nothing on most teams of 150 people and fewer). Each task is calibrated with a bias per
    class instead, and its estimate stands near the truth; the labelled check still decides."""
    import ensembler as ens
    from ensembler.data.teams import simulate_team, write_team
    from ensembler.scoring.metrics import score

    team = simulate_team("classifiers18", "none", n_train_people=150, n_eval_people=300, seed=108)
    project = write_team(team, tmp_path / "team")
    fixed = ens.compose(project, team_recipe(team), [ens.Soft(), ens.Priors("em")])
    record = fixed.step("priors")["prior"]
    assert "male 60+ has fewer than 5 labelled people" in record["joint"] and set(record["calibration"]) == {"mask", "gender", "age"}
    assert record["joint"] in fixed.lines()  # printed, not only recorded
    age = record["tasks"]["age"]
    truth = np.bincount(decode(team.answers)[Task.AGE], minlength=3) / len(team.answers)
    assert "dropped" not in age and np.abs(np.array(age["eval"]) - truth).sum() < 0.05
    assert not record["applied"] and np.array_equal(fixed.eval.labels, ens.compose(project, team_recipe(team)).eval.labels)  # the check: kept plain, exactly

    older = simulate_team("classifiers18", "age", n_train_people=150, n_eval_people=400, seed=1)
    project = write_team(older, tmp_path / "older")
    plain, fixed = ens.compose(project, team_recipe(older)), ens.compose(project, team_recipe(older), [ens.Soft(), ens.Priors("em")])
    record = fixed.step("priors")["prior"]
    assert "joint" in record and record["applied"] and 0.15 < record["tasks"]["age"]["eval"][2] < 0.3  # 60+: 21 % of the older eval set
    assert score(older.answers, fixed.eval.labels).f1_18 > score(older.answers, plain.eval.labels).f1_18