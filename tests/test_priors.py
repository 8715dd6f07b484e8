import json

import numpy as np
import pandas as pd
import pytest
from conftest import write_csv

from ensembler.compose.priors import adjust, em_priors, train_priors
from ensembler.compose.recipe import parse_recipe
from ensembler.compose.submission import compose_submission
from ensembler.compose.voting import Method
from ensembler.data.labels import Task, decode, encode
from ensembler.data.sources import import_source
from ensembler.data.toy import teammate_csv
from ensembler.errors import EnsError


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
    from ensembler.evaluate.metrics import macro_f1

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
    fixed = compose_submission(project, parse_recipe("*:p"), name="fixed", prior="em")
    record = json.loads(fixed.manifest.read_text())["prior"]
    assert record["spec"] == "em" and set(record["tasks"]) == {"mask", "gender", "age"}
    age = record["tasks"]["age"]
    assert age["from"] == "em" and age["eval"][2] > age["train"][2]  # the toy eval is older than train
    old = lambda sub: (decode(pd.read_csv(sub.csv)["ans"].to_numpy())[Task.AGE] == 2).mean()  # noqa: E731
    assert old(fixed) > old(plain)
    assert json.loads(plain.manifest.read_text())["prior"] is None
    with pytest.raises(EnsError, match="a hard vote has none"):
        compose_submission(project, parse_recipe("*:p"), Method.HARD, name="h", prior="em")


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (["old"], "expected em, or TASK:P,P"),
        (["agee:0.2,0.3,0.5"], "unknown task 'agee'"),
        (["age:0.5,0.5"], "age has 3 classes, so 3 priors, not 2"),
        (["age:a,b,c"], "priors are numbers"),
        (["age:-1,1,1"], "non-negative numbers with a positive sum"),
        (["age:0,0,0"], "non-negative numbers with a positive sum"),
        (["age:1,1,1", "age:1,2,1"], "the age priors are given twice"),
    ],
)
def test_parse_priors_errors(values, match):
    from ensembler.compose.priors import parse_priors

    with pytest.raises(EnsError, match=match):
        parse_priors(values)


def test_parse_priors_normalises_and_keeps_em_for_the_rest():
    from ensembler.compose.priors import parse_priors

    spec = parse_priors(["age:2,5,3", "em"])
    assert spec.em and spec.given == {Task.AGE: (0.2, 0.5, 0.3)} and str(spec) == "age:0.2,0.5,0.3 em"
    assert not parse_priors(["none"]).active and str(parse_priors([])) == "none"
    assert parse_priors("gender:1,1").given[Task.GENDER] == (0.5, 0.5)


def test_given_priors_reweight_by_hand():
    from ensembler.compose.priors import PriorSpec, correct

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
    sub = compose_submission(project, parse_recipe("*:p"), name="given", prior=["age:0.1,0.1,0.8", "em"])
    record = json.loads(sub.manifest.read_text())["prior"]
    assert record["spec"] == "age:0.1,0.1,0.8 em"
    assert record["tasks"]["age"]["from"] == "given" and record["tasks"]["age"]["eval"] == [0.1, 0.1, 0.8]
    assert record["tasks"]["mask"]["from"] == "em"
