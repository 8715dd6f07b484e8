import json

import numpy as np
import pandas as pd
import pytest

from conftest import write_csv
from ensembler.compose import Prior, compose_submission
from ensembler.errors import EnsError
from ensembler.labels import Task, decode, encode
from ensembler.priors import adjust, em_priors, train_priors
from ensembler.recipe import parse_recipe
from ensembler.sources import import_source
from ensembler.toy import teammate_csv
from ensembler.voting import Method


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
    from ensembler.metrics import macro_f1

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
    fixed = compose_submission(project, parse_recipe("*:p"), name="fixed", prior=Prior.EM)
    record = json.loads(fixed.manifest.read_text())["prior"]
    assert record["method"] == "em" and set(record["tasks"]) == {"mask", "gender", "age"}
    age = record["tasks"]["age"]
    assert age["estimated"][2] > age["train"][2]  # the toy eval is older than train
    old = lambda sub: (decode(pd.read_csv(sub.csv)["ans"].to_numpy())[Task.AGE] == 2).mean()  # noqa: E731
    assert old(fixed) > old(plain)
    assert json.loads(plain.manifest.read_text())["prior"] is None
    with pytest.raises(EnsError, match="a hard vote has none"):
        compose_submission(project, parse_recipe("*:p"), Method.HARD, name="h", prior=Prior.EM)
