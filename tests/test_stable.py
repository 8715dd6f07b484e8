"""Sums and decisions that are the same on every machine (`ensembler.data.stable`)."""

from fractions import Fraction

import numpy as np
import pytest

from ensembler.data.labels import MEMBERS, TASKS, LabelSpace, marginals
from ensembler.data.stable import NOISE, TIE, decide, tie_tolerance, weighted_sum
from ensembler.pipeline.steps import Method
from ensembler.pipeline.voting import vote


def test_weighted_sum_adds_in_the_order_given_bit_for_bit():
    rng = np.random.default_rng(0)
    arrays = [rng.random((50, 7)) for _ in range(5)]
    weights = rng.random(5)
    expected = np.empty((50, 7))
    for i in range(50):
        for j in range(7):
            total = 0.0  # Python floats: one correctly rounded multiply and add at a time
            for w, a in zip(weights, arrays):
                total = total + float(w) * float(a[i, j]) if total else float(w) * float(a[i, j])
            expected[i, j] = total
    assert np.array_equal(weighted_sum(weights, arrays), expected)


def test_weighted_sum_refuses_mismatched_weights():
    with pytest.raises(ValueError, match="2 weight"):
        weighted_sum([0.5, 0.5], [np.ones(3)])


def test_decide_takes_the_lower_class_within_the_tolerance_and_the_larger_beyond():
    scores = np.array([[0.5, 0.5 + 1e-13, 0.1], [0.5, 0.5 + 1e-9, 0.1], [0.2, 0.1, 0.2], [0.5, 0.5 + 1e-6, 0.1]])
    assert decide(scores).tolist() == [0, 0, 0, 1]  # the default: float32's rounding (TIE)
    assert decide(scores, NOISE).tolist() == [0, 1, 0, 1]
    assert decide(scores, 1e-8).tolist() == [0, 0, 0, 1]


def test_one_tie_rule_the_soft_vote_and_a_composition_decide_float32_near_ties_alike():
    from ensembler.pipeline.engine import Composed

    a, b = np.array([[0.5, 0.50000006]], np.float32), np.array([[0.5, 0.5]], np.float32)
    labels, combined = vote([a, b], None, Method.SOFT)
    composed = Composed.decided(np.array(["x"], object), {"t": combined}, None, "", LabelSpace(("t",), {"t": ("no", "yes")}))
    assert labels.tolist() == composed.labels.tolist() == [0]
    assert TIE == tie_tolerance(a, b)


def test_tie_tolerance_is_the_rounding_of_the_least_precise_input():
    assert tie_tolerance(np.zeros(2, np.float64)) == pytest.approx(2 * np.finfo(np.float64).eps + NOISE)
    assert tie_tolerance(np.zeros(2, np.float64), np.zeros(2, np.float32)) == pytest.approx(2 * np.finfo(np.float32).eps + NOISE)
    assert tie_tolerance(np.zeros(2, np.int64)) == NOISE


TIES = {
    # 0.75*0.6 + 0.25*0.2 == 0.75*0.4 + 0.25*0.8 == 0.5 in exact decimals; as doubles or floats
    # one side comes out a unit or two in the last place above the other, on one kernel or another
    Method.SOFT: ([0.6, 0.4], [0.2, 0.8], [3, 1]),
    # log(0.6) + log(0.2) == log(0.3) + log(0.4): the products are both 0.12
    Method.GEO: ([0.6, 0.3], [0.2, 0.4], None),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("method", list(TIES))
@pytest.mark.parametrize("flip", [False, True])
def test_a_vote_tied_on_the_decimals_as_written_goes_to_the_lower_class(dtype, method, flip):
    first, second, weights = TIES[method]
    a, b = np.array([first], dtype=dtype), np.array([second], dtype=dtype)
    if flip:  # the same tie with the classes swapped: still the lower one
        a, b = a[:, ::-1].copy(), b[:, ::-1].copy()
    labels, _ = vote([a, b], weights, method)
    assert labels.tolist() == [0]


def test_the_soft_tie_is_exact_in_decimals():
    exact = [Fraction(3, 4) * Fraction(str(x)) + Fraction(1, 4) * Fraction(str(y)) for x, y in zip(*TIES[Method.SOFT][:2])]
    assert exact[0] == exact[1] == Fraction(1, 2)
    assert Fraction("0.6") * Fraction("0.2") == Fraction("0.3") * Fraction("0.4")


def test_marginals_sum_the_columns_in_class_order():
    rng = np.random.default_rng(1)
    joint = rng.dirichlet(np.ones(18), size=40)
    found = marginals(joint)
    for task in TASKS:
        for c, columns in enumerate(MEMBERS[task]):
            total = joint[:, columns[0]].copy()
            for column in columns[1:]:
                total = total + joint[:, column]
            assert np.array_equal(found[task][:, c], total)
        np.testing.assert_allclose(found[task].sum(axis=1), 1.0)
    assert marginals(joint.astype(np.float32))[TASKS[0]].dtype == np.float32
