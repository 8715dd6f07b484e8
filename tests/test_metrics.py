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


@pytest.mark.parametrize("metric", ["auc", "log_loss", "accuracy", "macro_f1", "quadratic_kappa", "balanced_accuracy", "map@3"])
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


@pytest.mark.parametrize("k", [2, 5])
def test_candidates_scored_in_one_pass_equal_each_scored_alone_to_the_last_bit(k):
    from ensembler.scoring.metrics import auc_replicates, candidate_scores, candidates_auc, metric_replicates

    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 150)
    candidates = [np.round(rng.dirichlet(np.ones(k), 150), 1) for _ in range(4)]  # rounded: ties within and across rows
    ones = np.ones((1, 150))
    for metric in ("auc", "log_loss", "macro_f1", "quadratic_kappa", "balanced_accuracy", "map@2"):
        alone = [metric_replicates(metric, y, k, ones, c)[0] for c in candidates]
        assert candidate_scores(metric, y, k, iter(candidates)).tolist() == alone, metric
    scores = np.stack([c[:, 0] for c in candidates])
    assert candidates_auc(y == 0, scores).tolist() == [auc_replicates(y == 0, s, ones)[0] for s in scores]
    assert np.isnan(candidates_auc(np.zeros(150, bool), scores)).all()


def test_a_replicate_without_a_positive_has_no_auc():
    from ensembler.scoring.metrics import auc_replicates

    y = np.array([0, 0, 1, 1])
    out = auc_replicates(y == 1, np.array([0.1, 0.4, 0.35, 0.8]), np.array([[1, 1, 1, 1], [1, 1, 0, 0.0]]))
    assert out[0] == pytest.approx(0.75) and np.isnan(out[1])


@pytest.mark.parametrize("metric", ["auc", "log_loss", "accuracy", "macro_f1", "quadratic_kappa", "balanced_accuracy", "map@2"])
def test_the_task_objective_is_the_metric_of_the_summed_probabilities_higher_better(metric):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score, f1_score, log_loss, roc_auc_score

    from ensembler.scoring.metrics import task_objective

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 100)
    summed = rng.dirichlet(np.ones(3), 100) + rng.dirichlet(np.ones(3), 100)  # two sources' total, rows summing to 2
    reference = {
        "auc": roc_auc_score(y, summed / 2, multi_class="ovr"),
        "log_loss": -log_loss(y, summed / 2),
        "accuracy": accuracy_score(y, summed.argmax(1)),
        "macro_f1": f1_score(y, summed.argmax(1), average="macro"),
        "quadratic_kappa": cohen_kappa_score(y, summed.argmax(1), weights="quadratic"),
        "balanced_accuracy": balanced_accuracy_score(y, summed.argmax(1)),
        "map@2": plain_map_at(y, summed, 2),
    }[metric]
    objective = task_objective(metric, 3)
    assert objective(y, [summed])[0] == pytest.approx(reference, abs=1e-12)
    others = [summed[::-1], summed * 0.5, np.roll(summed, 1, axis=1)]  # several candidates in one pass score as each alone
    assert objective(y, iter([summed, *others])).tolist() == [objective(y, [c])[0] for c in [summed, *others]]


def plain_map_at(y: np.ndarray, probs: np.ndarray, top: int) -> float:
    """MAP@K as the Humpback Whale kernels compute it: per image, the precision at the first hit
    among the K names answered (one true class: 1/position), 0 without one; the mean."""
    total = 0.0
    for truth, row in zip(y, probs):
        answer = sorted(range(len(row)), key=lambda c: (-row[c], c))[:top]  # likeliest first, ties by class order
        for position, c in enumerate(answer):
            if c == truth:
                total += 1.0 / (position + 1)
                break
    return total / len(y)


@pytest.mark.parametrize("k", [2, 4, 9])
def test_the_new_metrics_equal_their_references(k):
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

    from ensembler.scoring.metrics import metric_value

    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 300)
    decided = np.clip(y + rng.integers(-1, 2, 300) * (rng.random(300) < 0.4), 0, k - 1)  # mostly one grade off
    probs = np.round(rng.dirichlet(np.ones(k), 300), 1)  # rounded: ties, broken in class order
    w = rng.integers(0, 4, 300) * rng.random(300)
    for weights in (None, w):
        kappa = cohen_kappa_score(y, decided, labels=np.arange(k), weights="quadratic", sample_weight=weights)
        assert metric_value("quadratic_kappa", y, k, decided=decided, weights=weights) == pytest.approx(kappa, abs=1e-12)
        balanced = balanced_accuracy_score(y, decided, sample_weight=weights)
        assert metric_value("balanced_accuracy", y, k, decided=decided, weights=weights) == pytest.approx(balanced, abs=1e-12)
    for top in (1, 3, 5):
        assert metric_value(f"map@{top}", y, k, probs) == pytest.approx(plain_map_at(y, probs, top), abs=1e-12)
    assert metric_value("map@1", y, k, probs) == pytest.approx(np.mean(probs.argmax(1) == y), abs=1e-12)  # top 1 is accuracy


def test_quadratic_kappa_by_hand_and_where_it_is_undefined():
    from ensembler.scoring.metrics import metric_value

    # truth 0,1,2 answered 0,2,2: observed (1-2)^2 / 3 = 1/3; expected 5/3 + 8/3 - 2 (1)(4/3) = 5/3
    assert metric_value("quadratic_kappa", np.array([0, 1, 2]), 3, decided=np.array([0, 2, 2])) == pytest.approx(1 - (1 / 3) / (5 / 3))
    assert np.isnan(metric_value("quadratic_kappa", np.array([1, 1]), 3, decided=np.array([1, 1])))  # one class in truth and answer: as scikit-learn


def test_the_answer_of_map_at_k_is_the_likeliest_classes_in_order():
    from ensembler.data.stable import top_classes

    probs = np.array([[0.1, 0.4, 0.1, 0.4], [0.7, 0.1, 0.1, 0.1]])
    assert top_classes(probs, 3).tolist() == [[1, 3, 0], [0, 1, 2]]  # equal probabilities in class order
    assert top_classes(probs, 9).shape == (2, 4)


@pytest.mark.parametrize("name, top", [("map@5", 5), ("map@12", 12), ("quadratic_kappa", None)])
def test_a_metric_is_its_name(name, top):
    from ensembler.data.competition import Metric

    metric = Metric(name)
    assert metric == name and str(metric) == name and metric.top == top and metric.higher_is_better
    assert metric.ranks == (top is not None) and not metric.on_probabilities


@pytest.mark.parametrize("name", ["map@0", "map@", "map@05", "map@-1", "MAP@5", "kappa"])
def test_an_unknown_metric_is_refused(name):
    from ensembler.data.competition import Metric

    with pytest.raises(ValueError, match="is not a metric"):
        Metric(name)


def test_every_replicate_equals_scikit_learn_with_its_draw_counts_as_weights():
    """The report's intervals in one pass equal scikit-learn run once per replicate (issue 35)."""
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, roc_auc_score

    from ensembler.scoring.metrics import auc_replicates, metric_replicates

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 400)
    scores = np.round(rng.random(400) + 0.3 * (y == 1), 2)  # rounded: ties, which count half
    decided = np.clip(y + rng.integers(-1, 2, 400), 0, 3)
    draws = rng.multinomial(400, np.full(400, 1 / 400), size=20).astype(float)  # bootstrap counts, zeros included
    aucs = auc_replicates(y == 1, scores, draws)
    assert np.array_equal(aucs, np.concatenate([auc_replicates(y == 1, scores, draws[i : i + 2]) for i in range(0, 20, 2)]))  # few rows: bincounts, same numbers
    kappas = metric_replicates("quadratic_kappa", y, 4, draws, decided=decided)
    balanced = metric_replicates("balanced_accuracy", y, 4, draws, decided=decided)
    for i, w in enumerate(draws):
        assert aucs[i] == pytest.approx(roc_auc_score(y == 1, scores, sample_weight=w), abs=1e-12)
        assert kappas[i] == pytest.approx(cohen_kappa_score(y, decided, labels=np.arange(4), weights="quadratic", sample_weight=w), abs=1e-12)
        assert balanced[i] == pytest.approx(balanced_accuracy_score(y, decided, sample_weight=w), abs=1e-12)
