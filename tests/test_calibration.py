"""Calibration against scikit-learn's temperature scaling, log-loss and hand-computed cases."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from ensembler.pipeline.folds import Folds
from ensembler.pipeline.calibration import Calibration, Calibrator, choose, ece, fit, fit_pool, nll


class Identity(ClassifierMixin, BaseEstimator):
    """predict_proba returns its input: a classifier whose outputs are precomputed probabilities."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return X

    def predict(self, X):
        return X.argmax(axis=1)


def overconfident(n=3000, k=3, sharpen=3.0, seed=0):
    """Labels drawn from true probabilities; the 'model' reports them sharpened (p^3, renormalised)."""
    rng = np.random.default_rng(seed)
    true = rng.dirichlet(np.ones(k), size=n)
    labels = np.array([rng.choice(k, p=p) for p in true])
    shown = true**sharpen
    return shown / shown.sum(axis=1, keepdims=True), labels, true


def test_temperature_equals_scikit_learns():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    probs, labels, _ = overconfident()
    probs = np.clip(probs, 1e-6, None)  # as ens reads them: no probability below EPS
    probs /= probs.sum(axis=1, keepdims=True)
    ours = fit(Calibrator.TS, probs, labels)
    ref = CalibratedClassifierCV(FrozenEstimator(Identity().fit(probs, labels)), method="temperature").fit(probs, labels)
    np.testing.assert_allclose(ours.apply(probs), ref.predict_proba(probs), atol=2e-4)
    assert ours.temperature > 2.5  # undoes the sharpening by ~3


def test_hand_computed_temperature():
    # two images, two classes: p = (0.9, 0.1) labelled 0 and (0.9, 0.1) labelled 1. The NLL of
    # softmax(z / T) is minimised where the predicted top probability is 1/2, i.e. T -> infinity;
    # with one of each, the best temperature flattens to (0.5, 0.5) as closely as the ridge lets it.
    probs = np.array([[0.9, 0.1], [0.9, 0.1]])
    cal = fit(Calibrator.TS, probs, np.array([0, 1]))
    np.testing.assert_allclose(cal.apply(probs), 0.5, atol=0.02)
    # three of four right at 0.75: the calibrated confidence is the accuracy, T = 1
    probs = np.array([[0.75, 0.25]] * 4)
    cal = fit(Calibrator.TS, probs, np.array([0, 0, 0, 1]))
    assert cal.temperature == pytest.approx(1.0, abs=1e-3)


def test_nll_equals_scikit_learns_log_loss():
    from sklearn.metrics import log_loss

    probs, labels, _ = overconfident(seed=1)
    assert nll(probs, labels) == pytest.approx(log_loss(labels, np.clip(probs, 1e-6, None) / np.clip(probs, 1e-6, None).sum(1, keepdims=True)), rel=1e-9)


@pytest.mark.parametrize("method", [Calibrator.TS, Calibrator.BCTS, Calibrator.VS])
def test_calibrators_lower_the_loss_of_an_overconfident_model(method):
    probs, labels, true = overconfident(seed=2)
    cal = fit(method, probs, labels)
    after = cal.apply(probs)
    assert nll(after, labels) < nll(probs, labels) - 0.05
    assert ece(after, labels) < ece(probs, labels) / 2
    np.testing.assert_allclose(after.sum(axis=1), 1.0)
    if method is Calibrator.TS:
        assert np.array_equal(after.argmax(1), probs.argmax(1))  # a temperature never changes a decision


def test_bias_corrects_a_lean_to_one_class():
    rng = np.random.default_rng(3)
    true = rng.dirichlet(np.ones(3), size=4000)
    labels = np.array([rng.choice(3, p=p) for p in true])
    leaning = true * [1.0, 1.0, 4.0]  # the model over-calls class 2
    leaning /= leaning.sum(axis=1, keepdims=True)
    ts, bcts = fit(Calibrator.TS, leaning, labels), fit(Calibrator.BCTS, leaning, labels)
    assert nll(bcts.apply(leaning), labels) < nll(ts.apply(leaning), labels) - 0.02
    assert bcts.bias[2] < -1.0  # about log(1/4)
    assert bcts.as_dict()["method"] == "bcts" and len(bcts.as_dict()["bias"]) == 3


def test_choose_scores_out_of_fold_and_keeps_none_for_a_calibrated_model():
    rng = np.random.default_rng(4)
    n = 2100
    ids = np.array([f"{i // 7:06d}_male_Asian_20/mask{i % 7}.jpg" for i in range(n)], dtype=object)
    folds = Folds.of(ids)
    true = rng.dirichlet(np.ones(3), size=n)
    labels = np.array([rng.choice(3, p=p) for p in true])
    calibrated = choose(true, labels, folds)
    assert set(calibrated.scores) == {"none", "ts", "bcts", "vs"}
    assert calibrated.scores["none"][0] <= min(s[0] for s in calibrated.scores.values()) + 0.01  # little to gain
    sharp = true**3 / (true**3).sum(1, keepdims=True)
    chosen = choose(sharp, labels, folds)
    assert chosen.calibration.method is not Calibrator.NONE and chosen.scores["none"][0] > chosen.scores[chosen.calibration.method.value][0]
    assert choose(sharp, labels, folds, "ts").calibration.method is Calibrator.TS
    identity = Calibration.identity(3).apply(sharp.astype(np.float32))
    assert identity.dtype == np.float64 and np.array_equal(identity, sharp.astype(np.float32).astype(np.float64))  # unchanged, not recomputed


def test_a_pool_of_one_source_is_bias_corrected_temperature_scaling():
    """One source: softmax(w log p + b) is BCTS's model; both fits have the same optimum."""
    probs, labels, _ = overconfident(seed=4)
    pool, bcts = fit_pool([probs], labels), fit(Calibrator.BCTS, probs, labels)
    assert pool.weights[0] == pytest.approx(bcts.weights[0], abs=2e-3)
    assert np.allclose(pool.bias, bcts.bias, atol=5e-3)
    assert np.allclose(pool.apply([probs]), bcts.apply(probs), atol=1e-3)


def test_a_pool_weighs_the_informative_source_and_ignores_noise():
    rng = np.random.default_rng(99)  # not overconfident()'s seed: its first draw is the true probabilities
    probs, labels, _ = overconfident(seed=6)
    noise = rng.dirichlet(np.ones(probs.shape[1]), len(labels))
    pool = fit_pool([noise, probs], labels)
    assert abs(pool.weights[0]) < 0.05 < pool.weights[1]
    assert nll(pool.apply([noise, probs]), labels) < nll(probs, labels)
