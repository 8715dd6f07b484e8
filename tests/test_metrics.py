import numpy as np
import pytest
from sklearn.metrics import f1_score

from ensembler.data.labels import Task, encode
from ensembler.scoring.metrics import macro_f1, score


def test_macro_f1_counts_absent_classes_as_zero():
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 0, 1, 1])
    # two classes perfect, 16 absent from truth and prediction: 2/18
    assert macro_f1(y, p, 18) == pytest.approx(2 / 18)
    assert macro_f1(y, p, 2) == 1.0


def test_macro_f1_hand_computed():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 2, 2])
    # class 0: P=1, R=2/3 -> 0.8; class 1: P=1/2, R=1/2 -> 0.5; class 2: P=1/2, R=1 -> 2/3
    assert macro_f1(y, p, 3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert macro_f1(y, p, 3) == pytest.approx(f1_score(y, p, average="macro"))


def test_score_decodes_tasks():
    y = encode([0, 1, 2, 2], [0, 1, 0, 1], [0, 1, 2, 0])
    p = encode([0, 1, 2, 2], [0, 1, 0, 1], [0, 1, 2, 1])  # one age error
    s = score(y, p)
    assert s.f1[Task.MASK] == 1.0 and s.f1[Task.GENDER] == 1.0
    assert s.f1[Task.AGE] == pytest.approx((2 / 3 + 2 / 3 + 1.0) / 3)
    assert s.accuracy == 0.75 and s.n == 4


def test_score_of_a_single_task_prediction_has_no_18_class_score():
    y = encode([0, 1], [0, 1], [0, 2])
    s = score(y, {Task.AGE: np.array([0, 2])})
    assert set(s.f1) == {Task.AGE} and s.f1[Task.AGE] == pytest.approx(2 / 3)
    assert s.f1_18 is None and s.accuracy is None
    assert s.as_dict()["f1_mask"] is None


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    k = [3, 2, 18, 18, 5][seed]
    y = rng.integers(0, k - seed % 2, 200)  # some runs leave a class out of the truth
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, k, 200))
    expected = f1_score(y, p, labels=np.arange(k), average="macro", zero_division=0)
    assert macro_f1(y, p, k) == pytest.approx(expected, abs=1e-12)
    w = rng.integers(0, 4, 200) * rng.random(200)  # resample counts times importance weights
    weighted = f1_score(y, p, labels=np.arange(k), average="macro", zero_division=0, sample_weight=w)
    assert macro_f1(y, p, k, w) == pytest.approx(weighted, abs=1e-12)


@pytest.mark.parametrize("metric", ["auc", "log_loss", "accuracy", "macro_f1"])
@pytest.mark.parametrize("k", [2, 5])
def test_metric_replicates_equal_the_metric_with_each_row_of_weights(metric, k):
    from ensembler.scoring.metrics import metric_replicates, metric_value

    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 200)
    probs = np.round(rng.dirichlet(np.ones(k), 200), 1) + 1e-3  # rounded: many tied scores, which AUC counts half
    probs /= probs.sum(axis=1, keepdims=True)
    weights = rng.integers(0, 4, (6, 200)).astype(float)  # bootstrap draw counts, zeros included
    expected = [metric_value(metric, y, k, probs, weights=w) for w in weights]
    assert metric_replicates(metric, y, k, weights, probs) == pytest.approx(expected, abs=1e-12)


def test_a_replicate_without_a_positive_has_no_auc():
    from ensembler.scoring.metrics import auc_replicates

    y = np.array([0, 0, 1, 1])
    out = auc_replicates(y == 1, np.array([0.1, 0.4, 0.35, 0.8]), np.array([[1, 1, 1, 1], [1, 1, 0, 0.0]]))
    assert out[0] == pytest.approx(0.75) and np.isnan(out[1])


@pytest.mark.parametrize("metric", ["auc", "log_loss", "accuracy", "macro_f1"])
def test_the_task_objective_is_the_metric_of_the_summed_probabilities_higher_better(metric):
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    from ensembler.scoring.metrics import task_objective

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 100)
    summed = rng.dirichlet(np.ones(3), 100) + rng.dirichlet(np.ones(3), 100)  # two sources' total, rows summing to 2
    reference = {
        "auc": roc_auc_score(y, summed / 2, multi_class="ovr"),
        "log_loss": -log_loss(y, summed / 2),
        "accuracy": accuracy_score(y, summed.argmax(1)),
        "macro_f1": f1_score(y, summed.argmax(1), average="macro"),
    }[metric]
    assert task_objective(metric, 3)(y, summed) == pytest.approx(reference, abs=1e-12)
