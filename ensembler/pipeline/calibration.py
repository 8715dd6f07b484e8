"""Calibration: probabilities that mean what they say, fitted on labelled out-of-fold predictions.

A soft vote of over-confident models is not calibrated, and what `ens` re-weights or estimates
priors from must be (EM runs away on uncalibrated posteriors; `priors`). Each calibrator maps
log-probabilities ``z = log p`` (clipped at `EPS`) to new probabilities ``softmax(w * z + b)``:

- temperature scaling, ``ts`` (Guo, Pleiss, Sun and Weinberger 2017): ``w = 1/T`` for every
  class, ``b = 0``; one parameter, the argmax never changes;
- bias-corrected temperature scaling, ``bcts`` (Alexandari, Kundaje and Shrikumar 2020): ``1/T``
  and a bias per class (class 0's fixed at 0), which also corrects a systematic lean to a class;
- vector scaling, ``vs`` (Guo et al. 2017): a weight and a bias per class.

Each is fitted by minimising the mean negative log-likelihood of the labels with L-BFGS
(scipy.optimize.minimize), with a small L2 pull of the biases and weights towards the identity
(1e-4 per image), so a class absent from the labels cannot send its bias to minus infinity.
`choose` picks the calibrator with the best out-of-fold log-loss, the images folded by person.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from ..data.stable import weighted_sum
from ..errors import EnsError
from .folds import filled, out_of_fold

EPS = 1e-6
RIDGE = 1e-4  # L2 pull towards the identity map, per image


class Calibrator(StrEnum):
    """`--calibrate`: none, the three calibrators, or auto (the best by out-of-fold log-loss)."""

    NONE = "none"
    TS = "ts"
    BCTS = "bcts"
    VS = "vs"
    AUTO = "auto"


FITTED = (Calibrator.NONE, Calibrator.TS, Calibrator.BCTS, Calibrator.VS)


def _logits(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, None))


def _softmax(z: np.ndarray) -> np.ndarray:
    from scipy.special import (
        softmax,  # here, not at the top: `ens` starts without scipy
    )

    return softmax(z, axis=1)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of `labels` ``(n,)`` under `probs` ``(n, k)`` (clipped at `EPS`);
    scikit-learn's ``log_loss`` on the same clipped, renormalised probabilities."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, None)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.log(p[np.arange(len(labels)), labels]).mean())


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017): over `bins` equal-width bins of the top
    probability, the image-weighted mean gap between confidence and accuracy
    (`scoring.metrics.reliability`, whose bins the HTML report draws)."""
    from ..scoring.metrics import reliability

    return reliability(np.asarray(probs, dtype=np.float64), labels, bins).ece


@dataclass(frozen=True)
class Calibration:
    """A fitted calibrator: ``softmax(weights * log p + bias)``, weights and bias ``(k,)``."""

    method: Calibrator
    weights: np.ndarray
    bias: np.ndarray

    @classmethod
    def identity(cls, k: int) -> Calibration:
        return cls(Calibrator.NONE, np.ones(k), np.zeros(k))

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``(n, k)``; the identity returns `probs` unchanged."""
        if self.method is Calibrator.NONE:
            return np.asarray(probs, dtype=np.float64)
        return _softmax(self.weights * _logits(probs) + self.bias)

    @property
    def temperature(self) -> float | None:
        return None if self.method not in (Calibrator.TS, Calibrator.BCTS) else float(1 / self.weights[0])

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method.value}
        if self.temperature is not None:
            out["temperature"] = round(self.temperature, 4)
        if self.method is Calibrator.VS:
            out["weights"] = self.weights.round(4).tolist()
        if self.method in (Calibrator.BCTS, Calibrator.VS):
            out["bias"] = self.bias.round(4).tolist()
        return out


def _nll_and_residual(scores: np.ndarray, labels: np.ndarray, onehot: np.ndarray) -> tuple[float, np.ndarray]:
    """The mean NLL of `labels` under ``softmax(scores)`` ``(n, k)``, and its gradient with
    respect to the scores, ``(softmax - onehot) / n``."""
    q = _softmax(scores)
    n = len(labels)
    return float(-np.log(np.clip(q[np.arange(n), labels], 1e-300, None)).mean()), (q - onehot) / n


def _temperature_loss(z: np.ndarray, labels: np.ndarray) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """`fit`'s loss of temperature scaling, ``theta = [1 / T]``, on log-probabilities `z`
    ``(n, k)``: the mean NLL of ``softmax(theta z)`` plus the ridge ``RIDGE k (theta - 1)^2``
    (every class's weight pulled to 1), and its gradient."""
    n, k = z.shape
    picked = z[np.arange(n), labels]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        t = float(theta[0])
        s = t * z
        top = s.max(axis=1)
        e = np.exp(s - top[:, None])
        total = e.sum(axis=1)
        value = float(np.mean(np.log(total) + top - t * picked)) + RIDGE * k * (t - 1) ** 2
        grad = float(np.mean(np.einsum("nk,nk->n", e, z) / total - picked)) + 2 * RIDGE * k * (t - 1)
        return value, np.array([grad])

    return loss


def _onehot(labels: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(labels), k))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def fit(method: Calibrator | str, probs: np.ndarray, labels: np.ndarray) -> Calibration:
    """Fit `method` on probabilities ``(n, k)`` and their labels ``(n,)`` (see the module doc)."""
    from scipy.optimize import minimize

    method = Calibrator(method)
    probs = np.asarray(probs, dtype=np.float64)
    n, k = probs.shape
    if method is Calibrator.NONE:
        return Calibration.identity(k)
    if method is Calibrator.AUTO:
        raise EnsError("auto is a choice among calibrators (calibration.choose), not one to fit")
    z = _logits(probs)
    onehot = None if method is Calibrator.TS else _onehot(labels, k)

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if method is Calibrator.TS:
            return np.full(k, theta[0]), np.zeros(k)
        if method is Calibrator.BCTS:
            return np.full(k, theta[0]), np.concatenate([[0.0], theta[1:]])
        return theta[:k], np.concatenate([[0.0], theta[k:]])

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = unpack(theta)
        value, residual = _nll_and_residual(w * z + b, labels, onehot)
        grad_w, grad_b = (residual * z).sum(axis=0), residual.sum(axis=0)
        value += RIDGE * (((w - 1) ** 2).sum() + (b**2).sum())
        grad_w, grad_b = grad_w + 2 * RIDGE * (w - 1), grad_b + 2 * RIDGE * b
        if method is Calibrator.TS:
            return value, np.array([grad_w.sum()])
        if method is Calibrator.BCTS:
            return value, np.concatenate([[grad_w.sum()], grad_b[1:]])
        return value, np.concatenate([grad_w, grad_b[1:]])

    if method is Calibrator.TS:  # one parameter: the loss without the (n, k) residual, in half the passes over z
        loss = _temperature_loss(z, labels)
    start = {Calibrator.TS: [1.0], Calibrator.BCTS: [1.0] + [0.0] * (k - 1), Calibrator.VS: [1.0] * k + [0.0] * (k - 1)}[method]
    result = minimize(loss, np.array(start), jac=True, method="L-BFGS-B")
    w, b = unpack(result.x)
    return Calibration(method, w, b)


@dataclass(frozen=True)
class OpinionPool:
    """A fitted log-linear pool of sources: ``softmax(sum_s weights[s] * log p_s + bias)``,
    weights ``(s,)`` and bias ``(k,)`` (class 0's at 0)."""

    weights: np.ndarray
    bias: np.ndarray

    def apply(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        """The pooled probabilities ``(n, k)`` of the sources' `probs` (each ``(n, k)``)."""
        return _softmax(sum(w * _logits(p) for w, p in zip(self.weights, probs)) + self.bias)


def fit_pool(probs: Sequence[np.ndarray], labels: np.ndarray) -> OpinionPool:
    """A weight per source and a bias per class, by maximum likelihood (L-BFGS, the ridge of
    `fit` towards the plain geometric vote, weights 1/s and biases 0): the logarithmic opinion
    pool (Genest and Zidek 1986) fitted as a multinomial logistic regression with one
    coefficient per source (Heskes 1998). On the 18-way joint it is a stack with s + 17
    parameters where a full multinomial regression has 18 x 18 s, too many for a few thousand
    labelled images of 18 classes, and slow to fit.

    probs: the sources' ``(n, k)`` probabilities; labels: ``(n,)``."""
    from scipy.optimize import minimize

    z = np.stack([_logits(p) for p in probs])  # (s, n, k)
    s, n, k = z.shape
    onehot, prior = _onehot(labels, k), np.full(s, 1.0 / s)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:s], np.concatenate([[0.0], theta[s:]])
        value, residual = _nll_and_residual(weighted_sum(w, z) + b, labels, onehot)
        grad_w = np.einsum("snk,nk->s", z, residual) + 2 * RIDGE * (w - prior)
        grad_b = residual.sum(axis=0)[1:] + 2 * RIDGE * b[1:]
        return value + RIDGE * (((w - prior) ** 2).sum() + (b**2).sum()), np.concatenate([grad_w, grad_b])

    theta = minimize(loss, np.concatenate([prior, np.zeros(k - 1)]), jac=True, method="L-BFGS-B").x
    return OpinionPool(theta[:s], np.concatenate([[0.0], theta[s:]]))


@dataclass(frozen=True)
class Choice:
    """`choose`'s answer: the calibrator fitted on every image, each candidate's out-of-fold
    log-loss and ECE ``{method: (nll, ece)}`` (the uncalibrated ones too), and the chosen one's
    out-of-fold probabilities: what a check of anything built on it must use, never in-sample."""

    calibration: Calibration
    scores: dict[str, tuple[float, float]]
    oof: np.ndarray  # the chosen calibrator's out-of-fold probabilities on the labelled images (n, k)
    note: str | None = None  # why a calibrator with class biases was not fitted

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.calibration.as_dict(),
            "oof_nll": {m: round(s[0], 4) for m, s in self.scores.items()},
            "oof_ece": {m: round(s[1], 4) for m, s in self.scores.items()},
            **({"note": self.note} if self.note else {}),
        }


def choose(
    probs: np.ndarray,
    labels: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    method: Calibrator | str = Calibrator.AUTO,
    thin: str | None = None,
) -> Choice:
    """Score each calibrator out of fold (fit on the other folds' images, predict these), pick
    `method` or, with ``auto``, the one with the lowest out-of-fold log-loss, and fit it on all.

    probs: ``(n, k)``; labels: ``(n,)``; folds: (fit, score) index pairs, person-grouped.
    thin: the classes too thin to learn, in words (`people.thin_text`), when there are some:
    then no calibrator with a bias per class (bcts, vs) is fitted, temperature scaling stands in.
    """
    method = Calibrator(method)
    biased = method in (Calibrator.BCTS, Calibrator.VS, Calibrator.AUTO)
    note = f"{thin}: too thin for a bias per class; temperature scaling only" if thin and biased else None
    if note and method is not Calibrator.AUTO:
        method = Calibrator.TS
    fitted = (Calibrator.NONE, Calibrator.TS) if note else FITTED
    candidates = fitted if method is Calibrator.AUTO else (Calibrator.NONE, method)
    scores: dict[str, tuple[float, float]] = {}
    oof: dict[Calibrator, np.ndarray] = {}
    for candidate in dict.fromkeys(candidates):
        parts = out_of_fold(lambda rows, c=candidate: (lambda held, m=fit(c, probs[rows], labels[rows]): m.apply(probs[held])), folds)
        out = filled(parts, len(labels))
        scores[candidate.value], oof[candidate] = (nll(out, labels), ece(out, labels)), out
    chosen = min(candidates, key=lambda m: scores[m.value][0]) if method is Calibrator.AUTO else method
    return Choice(fit(chosen, probs, labels), scores, oof[chosen], note)
