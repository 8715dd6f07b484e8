"""Evidence: how sure a score is, resampled by person.

The seven photos of one person are not independent (one face, one age, one gender), so the
unit of resampling is the person, never the image: a person bootstrap (Efron and Tibshirani
1993, the cluster bootstrap of Davison and Hinkley 1997, §3.8) draws people with replacement and
takes all the images of each person drawn.

It is vectorised. A replicate is a count per person (one multinomial draw per replicate,
``rng.multinomial``), and macro F1 needs only the per-class counts of true positives,
predictions and truths, which are sums over people: with each person's counts per row and
class, ``(P, rows * 18)``, every replicate of every row is one matrix product with the
``(replicates, P)`` count matrix. A slow, obvious loop over the same draws gives the same
numbers (the tests hold it to that).

Paired comparisons take the difference of two rows *within* each replicate (the same people),
which is much tighter than comparing two separate intervals: ``gain`` is each row's F1 minus a
reference row's (the best single source), with its 90 % interval and the share of replicates in
which it is positive. A gain whose interval holds 0 is inside the noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

REPLICATES = 1000
LEVEL = 0.90  # a 90 % interval: the 5th and 95th percentiles of the replicates


def person_draws(n_people: int, replicates: int = REPLICATES, seed: int = 0) -> np.ndarray:
    """How often each person is drawn in each replicate ``(replicates, n_people)``: `n_people`
    draws with replacement, all people equally likely."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_people, np.full(n_people, 1.0 / n_people), size=replicates)


def f1_replicates(labels: np.ndarray, predictions: np.ndarray, persons: np.ndarray, draws: np.ndarray, n_classes: int = 18, weights: np.ndarray | None = None) -> np.ndarray:
    """Macro F1 (absent classes 0, as `metrics.macro_f1`) of every row in every replicate.

    labels: ``(n,)`` classes; predictions: ``(rows, n)`` classes; persons: ``(n,)`` in
    ``0..P-1``; draws: ``(replicates, P)`` person counts (`person_draws`); weights: ``(n,)``
    image weights on top of the draws (a labelled set re-weighted to another class mix), as
    `metrics.macro_f1`'s. Returns ``(replicates, rows)``.
    """
    labels, predictions = np.asarray(labels, dtype=np.int64), np.atleast_2d(np.asarray(predictions, dtype=np.int64))
    rows, n = predictions.shape
    n_people = draws.shape[1]
    base = (persons[None, :] * rows + np.arange(rows)[:, None]) * n_classes  # (rows, n): the (person, row) block of each image
    size = n_people * rows * n_classes
    right = predictions == labels[None, :]
    w = None if weights is None else np.broadcast_to(np.asarray(weights, dtype=np.float64), (rows, n))
    tp = np.bincount((base + labels[None, :])[right], None if w is None else w[right], minlength=size).reshape(n_people, rows * n_classes)
    predicted = np.bincount((base + predictions).ravel(), None if w is None else w.ravel(), minlength=size).reshape(n_people, rows * n_classes)
    truth = np.bincount(persons * n_classes + labels, weights, minlength=n_people * n_classes).reshape(n_people, n_classes)
    weights = draws.astype(np.float64)
    tp_r = (weights @ tp).reshape(-1, rows, n_classes)
    denominator = (weights @ predicted).reshape(-1, rows, n_classes) + (weights @ truth)[:, None, :]
    f1 = np.divide(2.0 * tp_r, denominator, out=np.zeros_like(tp_r), where=denominator > 0)
    return f1.mean(axis=2)


@dataclass(frozen=True)
class Evidence:
    """Person-bootstrap intervals for scored rows.

    f1: ``(rows,)`` the plain scores; low, high: their 90 % interval; gain_low, gain_high:
    the paired interval of ``row - reference`` and `positive` the share of replicates in which
    it is above 0 (NaN where there is no reference); people, replicates: what was resampled.
    """

    f1: np.ndarray
    low: np.ndarray
    high: np.ndarray
    gain_low: np.ndarray
    gain_high: np.ndarray
    positive: np.ndarray
    people: int
    replicates: int

    def noise(self, row: int) -> bool:
        """Whether the row's paired gain over the reference is inside the noise (its interval holds 0)."""
        return bool(self.gain_low[row] <= 0.0 <= self.gain_high[row])


def _interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - LEVEL) / 2 * 100
    return np.percentile(values, tail, axis=0), np.percentile(values, 100 - tail, axis=0)


def bootstrap(
    labels: np.ndarray,
    predictions: np.ndarray | Sequence[np.ndarray],
    persons: np.ndarray,
    reference: int | None = None,
    replicates: int = REPLICATES,
    seed: int = 0,
) -> Evidence:
    """Person-bootstrap intervals of each row's 18-class macro F1 and, with `reference` (a row
    index), of each row's paired gain over it. labels ``(n,)``; predictions ``(rows, n)``;
    persons ``(n,)`` person index (`person_codes`)."""
    from ..scoring.metrics import macro_f1

    predictions = np.atleast_2d(np.asarray(predictions, dtype=np.int64))
    draws = person_draws(int(persons.max()) + 1, replicates, seed)
    values = f1_replicates(labels, predictions, persons, draws)
    low, high = _interval(values)
    nan = np.full(len(predictions), np.nan)
    gain_low, gain_high, positive = nan, nan.copy(), nan.copy()
    if reference is not None:
        gains = values - values[:, [reference]]
        gain_low, gain_high = _interval(gains)
        positive = (gains > 0).mean(axis=0)
    f1 = np.array([macro_f1(labels, p, 18) for p in predictions])
    return Evidence(f1, low, high, gain_low, gain_high, positive, draws.shape[1], replicates)


def group_bootstrap(
    score_rows: Callable[[np.ndarray | None], np.ndarray],
    groups: np.ndarray,
    reference: int | None = None,
    replicates: int = REPLICATES,
    seed: int = 0,
    higher_is_better: bool = True,
    chunk: int = 0,
) -> Evidence:
    """The same intervals for any metric (a declared competition's): `score_rows(weights)`
    gives every row's score under each row of image `weights` ``(r, n)`` at once, ``(r, rows)``
    (`metrics.competition_replicates` does it in one pass), and ``score_rows(None)`` the plain
    scores ``(rows,)``; each replicate weighs an image by how often its group (``groups``
    ``(n,)``: the declared group, a patient) was drawn. Replicates go `chunk` at a time (0: as
    many as keep the weights near 64 MB). A gain is signed so that above 0 is better (for
    log-loss, lower)."""
    codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1]
    draws = person_draws(int(codes.max()) + 1, replicates, seed)
    step = chunk or max(1, (8 << 20) // max(len(codes), 1))
    values = np.concatenate([np.asarray(score_rows(draws[i : i + step][:, codes].astype(np.float64)), dtype=np.float64) for i in range(0, replicates, step)])
    low, high = _interval(values)
    nan = np.full(values.shape[1], np.nan)
    gain_low, gain_high, positive = nan, nan.copy(), nan.copy()
    if reference is not None:
        gains = (values - values[:, [reference]]) * (1.0 if higher_is_better else -1.0)
        gain_low, gain_high = _interval(gains)
        positive = (gains > 0).mean(axis=0)
    return Evidence(np.asarray(score_rows(None), dtype=np.float64), low, high, gain_low, gain_high, positive, draws.shape[1], replicates)


@dataclass(frozen=True)
class Pick:
    """`pick_two`'s answer (row indices into the predictions it was given).

    first: the best row by F1. second: the row to submit beside it, or None when there is a
    single row or every other row decides as the first. copies: the rows that decide as the
    first on every scored image (never the second: they hedge nothing). difference: the paired
    90 % interval of ``second - first``. correlation: each row's error correlation with the
    first (phi coefficient of the two rows' wrong-image indicators; NaN for the first itself).
    within: the rows not worse than the first by more than the noise (their paired interval of
    ``row - first`` reaches 0), the first included.
    """

    first: int
    second: int | None
    difference: tuple[float, float] | None
    correlation: np.ndarray
    within: tuple[int, ...]
    copies: tuple[int, ...] = ()


def error_correlation(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two predictions' error indicators ``(n,)`` (1 where wrong); 1.0
    when either is never or always wrong and they err on the same images, 0.0 otherwise."""
    wrong_a, wrong_b = (a != labels).astype(float), (b != labels).astype(float)
    if wrong_a.std() == 0 or wrong_b.std() == 0:
        return 1.0 if np.array_equal(wrong_a, wrong_b) else 0.0
    return float(np.corrcoef(wrong_a, wrong_b)[0, 1])


def pick_two(labels: np.ndarray, predictions: np.ndarray, persons: np.ndarray, replicates: int = REPLICATES, seed: int = 0) -> Pick:
    """Two final submissions: the best row by 18-class macro F1, and, among the rows not worse
    than it by more than the noise (paired person bootstrap), the one whose errors correlate
    least with it; when no other row is that close, the runner-up. A row that decides as the
    first on every scored image is never the second (an auto that kept the soft vote, a
    composition scored again as a source). A second pick that errs on other images hedges the
    private board, where a near-copy of the first does not.

    labels ``(n,)``; predictions ``(rows, n)`` joint classes; persons ``(n,)``."""
    from .metrics import macro_f1

    predictions = np.atleast_2d(np.asarray(predictions, dtype=np.int64))
    f1 = np.array([macro_f1(labels, p, 18) for p in predictions])
    first = int(np.argmax(f1))
    correlation = np.array([np.nan if i == first else error_correlation(labels, predictions[first], p) for i, p in enumerate(predictions)])
    if len(predictions) == 1:
        return Pick(first, None, None, correlation, (first,))
    found = bootstrap(labels, predictions, persons, first, replicates, seed)
    within = tuple(i for i in range(len(predictions)) if i == first or found.gain_high[i] >= 0)
    copies = tuple(i for i in range(len(predictions)) if i != first and np.array_equal(predictions[i], predictions[first]))
    rest = [i for i in range(len(predictions)) if i != first and i not in copies]
    if not rest:
        return Pick(first, None, None, correlation, within, copies)
    close = [i for i in rest if i in within]
    second = min(close, key=lambda i: (correlation[i], -f1[i], i)) if close else max(rest, key=lambda i: (f1[i], -i))
    return Pick(first, second, (float(found.gain_low[second]), float(found.gain_high[second])), correlation, within, copies)
