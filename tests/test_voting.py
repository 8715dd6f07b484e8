"""Voting against scikit-learn's VotingClassifier, hand-computed cases and invariants."""

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import VotingClassifier

from ensembler.data.labels import TASKS, Task, encode, marginals
from ensembler.data.store import PredictionSet, Split
from ensembler.pipeline.recipe import parse_recipe
from ensembler.pipeline.steps import Method
from ensembler.pipeline.voting import Tie, combine, vote

VOTES = (Method.SOFT, Method.HARD, Method.GEO)


class Fixed(ClassifierMixin, BaseEstimator):
    """A 'classifier' whose predict_proba returns stored probabilities for row indices X[:, 0]."""

    def __init__(self, probs=None):
        self.probs = probs

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return self.probs[X[:, 0].astype(int)]

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


def sklearn_vote(probs, weights, voting):
    n, k = probs[0].shape
    X = np.arange(n)[:, None]
    y = np.arange(n) % k  # every class present, so sklearn's label encoding is the identity
    clf = VotingClassifier([(f"m{i}", Fixed(p)) for i, p in enumerate(probs)], voting=voting, weights=weights)
    return clf.fit(X, y).predict(X)


def random_probs(seed, n_sources=5, n=2000, k=18):
    rng = np.random.default_rng(seed)
    return [rng.dirichlet(np.full(k, 0.3), size=n) for _ in range(n_sources)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_soft_vote_equals_sklearn(seed, weighted):
    probs = random_probs(seed)
    weights = list(np.random.default_rng(seed + 10).uniform(0.2, 3, size=5)) if weighted else None
    labels, combined = vote(probs, weights, Method.SOFT)
    assert np.array_equal(labels, sklearn_vote(probs, weights, "soft"))
    np.testing.assert_allclose(combined.sum(axis=1), 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weights", [None, "random", [1, 2, 1, 1, 3]])
def test_hard_vote_equals_sklearn_where_votes_are_not_tied(seed, weights):
    probs = random_probs(seed, n_sources=5, k=3)  # few classes: many rows with ties too
    random_weights = weights == "random"
    if random_weights:
        weights = list(np.random.default_rng(seed + 20).uniform(0.2, 3, size=5))
    labels, _ = vote(probs, weights, Method.HARD)
    w = np.ones(5) if weights is None else np.asarray(weights, dtype=float)
    votes = np.zeros((len(labels), 3))
    for wi, p in zip(w, probs):
        votes[np.arange(len(labels)), p.argmax(1)] += wi
    tied = (np.isclose(votes, votes.max(1, keepdims=True))).sum(1) > 1
    untied = ~tied
    assert untied.sum() > 1000
    assert np.array_equal(labels[untied], sklearn_vote(probs, weights, "hard")[untied])
    # tied rows follow the documented rule: the tied class with the larger weighted probability sum
    mass = sum(wi * p for wi, p in zip(w, probs))
    top = np.isclose(votes, votes.max(1, keepdims=True))
    expected = np.where(top, mass, -np.inf).argmax(1)
    assert np.array_equal(labels[tied], expected[tied])
    assert tied.sum() > 50 or random_weights  # real-valued random weights never tie


def test_soft_vote_hand_computed():
    a = np.array([[0.6, 0.4], [0.1, 0.9]])
    b = np.array([[0.2, 0.8], [0.3, 0.7]])
    labels, combined = vote([a, b], [3, 1], Method.SOFT)
    np.testing.assert_allclose(combined, [[0.5, 0.5], [0.15, 0.85]])
    assert labels.tolist() == [0, 1]  # exact tie: lower index


def test_geometric_vote_hand_computed():
    a = np.array([[0.9, 0.1]])
    b = np.array([[0.2, 0.8]])
    c = np.array([[0.2, 0.8]])
    soft, _ = vote([a, b, c], None, Method.SOFT)
    geo, combined = vote([a, b, c], None, Method.GEO)
    # soft: (1.3, 1.7) -> 1; geo: 0.9*0.04=0.036 vs 0.1*0.64=0.064 -> 1
    assert soft.tolist() == [1] and geo.tolist() == [1]
    g = np.array([0.036, 0.064]) ** (1 / 3)
    np.testing.assert_allclose(combined, [g / g.sum()])
    d = np.array([[0.99, 0.01]])
    e = np.array([[0.4, 0.6]])
    assert vote([d, e], None, Method.SOFT)[0].tolist() == [0]
    assert vote([d, e], None, Method.GEO)[0].tolist() == [0]  # 0.396 vs 0.006


def test_hard_vote_tie_rules_hand_computed():
    # two sources vote 0, two vote 1: a tie, decided by the summed probabilities
    p = [np.array([[0.5, 0.4, 0.1]]), np.array([[0.6, 0.3, 0.1]]), np.array([[0.05, 0.9, 0.05]]), np.array([[0.1, 0.85, 0.05]])]
    labels, combined = vote(p, None, Method.HARD)
    assert labels.tolist() == [1]  # mass 1.25 (class 0) vs 2.45 (class 1)
    assert combined.tolist() == [[0, 1, 0]]
    # equal votes and equal mass: the lower index
    q = [np.array([[0.4, 0.6, 0.0]]), np.array([[0.6, 0.4, 0.0]])]
    assert vote(q, None, Method.HARD)[0].tolist() == [0]
    # weights decide before mass
    assert vote(p, [1, 1, 1, 0.5], Method.HARD)[0].tolist() == [0]


@pytest.mark.parametrize("method", VOTES)
def test_uniform_weights_equal_no_weights(method):
    probs = random_probs(4, n_sources=3, n=500)
    a, pa = vote(probs, None, method)
    b, pb = vote(probs, [2.5, 2.5, 2.5], method)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(pa, pb)


@pytest.mark.parametrize("method", VOTES)
def test_one_source_alone_is_its_argmax(method):
    probs = random_probs(5, n_sources=1, n=500)
    labels, _ = vote(probs, [3.0], method)
    assert np.array_equal(labels, probs[0].argmax(1))


def _pset(name, joint=None, probs=None):
    n = len(joint) if joint is not None else len(next(iter(probs.values())))
    return PredictionSet(name, Split.EVAL, [str(i) for i in range(n)], probs or {}, joint)


def test_combine_votes_on_the_joint_when_every_task_shares_joint_sources():
    a, b = random_probs(6, n_sources=2, n=400)
    sets = {"a": _pset("a", a), "b": _pset("b", b)}
    out = combine(parse_recipe("*:a+b*2"), sets, Method.SOFT)
    assert out.mode == "joint"
    assert np.array_equal(out.labels, sklearn_vote([a, b], [1, 2], "soft"))
    per_task = combine(parse_recipe("*:a+b*2"), sets, Method.SOFT, per_task=True)
    assert per_task.mode == "per-task" and out.joint is not None and per_task.joint is None
    expected = encode(*((marginals(a)[t] + 2 * marginals(b)[t]).argmax(1) for t in TASKS))
    assert np.array_equal(per_task.labels, expected)


def test_combine_per_task_with_a_single_task_source():
    a = random_probs(7, n_sources=1, n=300)[0]
    ages = np.random.default_rng(0).dirichlet(np.ones(3), size=300)
    sets = {"a": _pset("a", a), "agemodel": _pset("agemodel", probs={Task.AGE: ages})}
    out = combine(parse_recipe("age:agemodel *:a"), sets, Method.HARD)
    assert out.mode == "per-task"
    m = marginals(a)
    assert np.array_equal(out.labels, encode(m[Task.MASK].argmax(1), m[Task.GENDER].argmax(1), ages.argmax(1)))


def test_single_joint_source_composed_alone_is_exactly_its_argmax():
    a = random_probs(8, n_sources=1, n=3000)[0]
    for method in VOTES:
        out = combine(parse_recipe("*:a"), {"a": _pset("a", a)}, method)
        assert np.array_equal(out.labels, a.argmax(1))


def test_a_source_that_does_not_cover_its_task_is_named():
    from ensembler.errors import EnsError

    ages = np.full((3, 3), 1 / 3)
    sets = {"a": _pset("a", random_probs(9, 1, 3)[0]), "agemodel": _pset("agemodel", probs={Task.AGE: ages})}
    with pytest.raises(EnsError, match="source 'agemodel' does not cover mask \\(it covers age\\)"):
        combine(parse_recipe("mask:agemodel *:a"), sets, Method.SOFT)


# --- exact hard voting (a plain-Python reference of the documented rule) -----------------------


def reference_hard_vote(probs, weights, tie="mass"):
    """The rule row by row in exact arithmetic: Fractions of the weights as written and of the
    probabilities' actual values."""
    weights = [Fraction(repr(float(w))) for w in (weights or [1] * len(probs))]
    labels = []
    for row in range(len(probs[0])):
        choices = [int(np.argmax(p[row])) for p in probs]
        totals = {}
        for w, c in zip(weights, choices):
            totals[c] = totals.get(c, 0) + w
        best = max(totals.values())
        tied = sorted(c for c, v in totals.items() if v == best)
        if len(tied) == 1 or tie == "lower":
            labels.append(tied[0])
        elif tie == "first":
            labels.append(choices[0])
        else:
            mass = {c: sum(w * Fraction(float(p[row, c])) for w, p in zip(weights, probs)) for c in tied}
            labels.append(max(tied, key=lambda c: (mass[c], -c)))
    return np.array(labels)


def one_hot_sources(rng, n_sources, n, k):
    return [np.eye(k, dtype=np.float32)[rng.integers(0, k, size=n)] for _ in range(n_sources)]


@pytest.mark.parametrize("n_classes", [3, 18])
def test_hard_vote_exact_for_1_to_40_equal_sources(n_classes):
    rng = np.random.default_rng(n_classes)
    tied_rows = 0
    for n_sources in range(1, 41):
        probs = one_hot_sources(rng, n_sources, 200, n_classes)
        choices = pd.DataFrame(np.stack([p.argmax(1) for p in probs], axis=1))
        mode = choices.mode(axis=1)[0].to_numpy()  # pandas: the smallest of the most frequent
        expected = reference_hard_vote(probs, None)
        assert np.array_equal(expected, mode)
        for weights in (None, [1] * n_sources, [17.0] * n_sources, [0.1] * n_sources):
            labels, _ = vote(probs, weights, Method.HARD)
            assert np.array_equal(labels, expected), (n_sources, weights)
            assert np.array_equal(vote(probs, weights, Method.HARD, Tie.LOWER)[0], mode)
        counts = np.stack([np.bincount(row, minlength=n_classes) for row in choices.to_numpy()])
        tied_rows += int(((counts == counts.max(axis=1, keepdims=True)).sum(axis=1) > 1).sum())
    assert tied_rows > 1000  # the test is about ties: there are many


@pytest.mark.parametrize("tie", list(Tie))
def test_hard_vote_exact_with_decimal_weights(tie):
    # weights equal in exact arithmetic: 0.1 + 0.2 == 0.3, 1 + 1 == 2; soft probabilities on a
    # one-decimal grid (as teams' CSVs write them), so the tie-break masses tie exactly too
    rng = np.random.default_rng(7)
    palette = [0.1, 0.2, 0.3, 0.5, 1, 2]
    for n_sources in range(1, 41):
        raw = rng.integers(0, 4, size=(n_sources, 400, 3)).astype(np.float64)
        raw[..., 0] += raw.sum(axis=2) == 0
        probs = [np.round(r / r.sum(axis=1, keepdims=True), 1).astype(np.float32) for r in raw]
        weights = list(rng.choice(palette, size=n_sources))
        labels, _ = vote(probs, weights, Method.HARD, tie)
        assert np.array_equal(labels, reference_hard_vote(probs, weights, tie.value)), (n_sources, weights)


def test_hard_vote_decimal_weights_tie_exactly():
    a, b, c = (np.eye(3)[[k]] for k in (1, 1, 0))
    # 0.1 + 0.2 for class 1 against 0.3 for class 0: a tie (in floats 0.30000000000000004 > 0.3)
    assert vote([a, b, c], [0.1, 0.2, 0.3], Method.HARD)[0].tolist() == [0]
    assert vote([a, b, c], [0.1, 0.2, 0.3001], Method.HARD)[0].tolist() == [0]
    assert vote([a, b, c], [0.1, 0.2001, 0.3], Method.HARD)[0].tolist() == [1]


def test_tie_rules_hand_computed():
    # sources (in recipe order): best votes 2, then two vote 0 and two vote 1: a 0/1 tie that the
    # best submission is not part of
    p = [np.eye(3)[[2]], np.eye(3)[[0]], np.eye(3)[[1]], np.eye(3)[[1]] * 0 + [[0.0, 0.6, 0.4]], np.eye(3)[[0]]]
    assert vote(p, None, Method.HARD, Tie.FIRST)[0].tolist() == [2]
    assert vote(p, None, Method.HARD, Tie.LOWER)[0].tolist() == [0]
    # mass: class 0 has 2.0, class 1 has 1.6, class 2 has 1.4 -> 0
    assert vote(p, None, Method.HARD, Tie.MASS)[0].tolist() == [0]
    q = [np.array([[0.1, 0.3, 0.6]]), np.array([[0.35, 0.6, 0.05]]), np.array([[0.0, 0.45, 0.55]]), np.array([[0.5, 0.1, 0.4]])]
    # votes: 2, 1, 2, 0 -> class 2 wins outright (2 votes): every rule agrees
    assert {int(vote(q, None, Method.HARD, tie)[0][0]) for tie in Tie} == {2}
    # without a tie, first is the plain majority, not the first source's answer
    r = [np.eye(3)[[2]], np.eye(3)[[0]], np.eye(3)[[0]]]
    assert vote(r, None, Method.HARD, Tie.FIRST)[0].tolist() == [0]


def test_many_digit_weights_still_vote():
    probs = random_probs(3, n_sources=4, n=300, k=3)
    weights = [0.123456789123, 1 / 3, np.pi, 2.5]
    labels, _ = vote(probs, weights, Method.HARD)
    assert np.array_equal(labels, sklearn_vote(probs, weights, "hard"))  # real-valued weights never tie


def test_rank_averaging_is_the_weighted_mean_of_each_classs_ranks_over_the_images():
    from scipy.stats import rankdata

    rng = np.random.default_rng(3)
    a, b = rng.dirichlet(np.ones(3), size=40), rng.dirichlet(np.ones(3), size=40) ** 3  # b overconfident: scaled otherwise, ranked alike
    b[5] = b[6]  # a tie shares its mean rank
    labels, combined = vote([a, b], [1, 3], Method.RANK)
    expected = (rankdata(a, axis=0) + 3 * rankdata(b, axis=0)) / 4 / 40
    np.testing.assert_allclose(combined, expected, rtol=0, atol=1e-15)
    assert labels.tolist() == expected.argmax(1).tolist()
    _, alone = vote([b], None, Method.RANK)
    _, sharpened = vote([b**5], None, Method.RANK)
    np.testing.assert_array_equal(alone, sharpened)  # a monotone rescaling of the scores leaves their ranks


# --- a vote in a module of its own: the median (issue 34) ----------------------------------------------


def test_the_median_vote_is_numpys_median_renormalised_and_shrugs_off_one_overconfident_member():
    from ensembler.pipeline.median import weighted_median

    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(4), 50).astype(np.float32) for _ in range(4)]
    labels, combined = vote(probs, None, "median")
    expected = np.median(np.stack([p.astype(np.float64) for p in probs]), axis=0)
    np.testing.assert_allclose(combined, expected / expected.sum(1, keepdims=True), rtol=1e-12)
    assert labels.tolist() == combined.argmax(1).tolist()
    stack = np.array([[0.1], [0.7], [0.3]])  # weights count as repeated members: 0.1 once, 0.7 three times
    assert weighted_median(stack, np.array([0.2, 0.6, 0.2]))[0] == 0.7
    assert weighted_median(stack, np.array([1 / 3] * 3))[0] == 0.3
    good = np.array([[0.7, 0.3]] * 2, np.float32)
    wrong = np.array([[0.01, 0.99]], np.float32).repeat(2, 0)  # one member sure of the wrong class
    assert vote([good, good * 0.9 + 0.05, wrong], None, "median")[0].tolist() == [0, 0]
    assert vote([good, good * 0.9 + 0.05, wrong], None, "soft")[0].tolist() == [1, 1]  # the mean follows it


def test_the_median_is_a_method_a_public_step_and_one_of_autos_candidates(project, toy, tmp_path):
    import ensembler as ens
    from conftest import write_csv

    from ensembler.data.toy import teammate_csv
    from ensembler.pipeline.auto import vote_candidates

    assert "median" in list(Method) and ens.Median().name == "median"
    assert [c.name for c in vote_candidates()][:1] == ["soft"] and "median" in [c.name for c in vote_candidates()]
    truth = pd.concat([toy.eval, toy.train])
    for i, name in enumerate("abc"):
        ens.import_source(project, write_csv(tmp_path / f"{name}.csv", teammate_csv(truth, {Task.MASK: 2.0, Task.GENDER: 2.0, Task.AGE: 1.0}, seed=i)), name)
    median = ens.compose(project, "*:a+b+c", "median")
    assert median.manifest["steps"][0]["step"] == "median" and median.eval.mode == "joint"
    auto = ens.compose(project, "*:a+b+c", "auto")
    assert any(c["label"].startswith("median vote") for c in auto.step("auto")["auto"]["candidates"])
