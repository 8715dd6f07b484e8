"""The median vote: per class, the (weighted) median of the sources' probabilities, renormalised.

A robust alternative to the soft vote when one member is badly calibrated: an over-confident
member that puts 0.99 on a wrong class moves the mean by a third in a team of three, the median
not at all (the median of a class's probabilities ignores the most extreme member on each side).
Each class's median is taken on its own, so the medians of a row need not sum to 1 and are
renormalised; weights count as repeated members (the weighted median, Edgeworth 1887: the value
where the members' weight below and above is each at most half; equal weights give
``numpy.median``, the mean of the two middle values for an even count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..data.stable import decide, tie_tolerance
from .engine import register
from .voting import Vote, normalised


def weighted_median(stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted median over the first axis of `stack` ``(s, ...)`` with `weights` ``(s,)``
    summing to 1: per element, the smallest value whose cumulative weight reaches one half, the
    mean with the next value where it reaches exactly one half (so equal weights give
    ``numpy.median``)."""
    order = np.argsort(stack, axis=0, kind="stable")
    values = np.take_along_axis(stack, order, axis=0)
    cumulative = np.cumsum(weights[order], axis=0)
    half = 0.5 - 1e-12  # weights that sum to one half in exact decimals may round a hair below it
    first = np.minimum((cumulative < half).sum(axis=0), len(stack) - 1)
    low = np.take_along_axis(values, first[None], axis=0)[0]
    exactly = np.isclose(np.take_along_axis(cumulative, first[None], axis=0)[0], 0.5, rtol=0, atol=1e-12)
    high = np.take_along_axis(values, np.minimum(first + 1, len(stack) - 1)[None], axis=0)[0]
    return np.where(exactly, (low + high) / 2, low)


@register
@dataclass(frozen=True)
class Median(Vote):
    """Per class, the weighted median of the sources' probabilities, renormalised (module doc)."""

    name: ClassVar[str] = "median"
    help: ClassVar[str] = "per class, the weighted median of the sources' probabilities, renormalised (robust to one badly calibrated member)"
    candidate: ClassVar[bool] = True

    def combine(self, probs: Sequence[np.ndarray], weights: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
        median = weighted_median(np.stack([np.asarray(p, dtype=np.float64) for p in probs]), normalised(weights, len(probs)))
        combined = median / np.maximum(median.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        return decide(combined, tie_tolerance(*probs)), combined
