"""Arithmetic whose answer does not hinge on the machine: fixed-order sums and decisions with
one documented tie rule.

A BLAS matrix product (``np.tensordot``, ``@``) adds in an order its kernel chooses, and two
kernels of one library (OpenBLAS's Haswell and SkylakeX kernels, say) can return totals one
unit in the last place apart: ``0.75*0.6 + 0.25*0.2`` is ``0.5`` on one and
``0.49999999999999994`` on another, and an argmax over such totals flips between machines.
So every total that a decision is taken on is summed here element by element, in the order the
terms are given (each multiply and add correctly rounded, so the same bits on every CPU), and
every decision is taken by `decide`, which calls two scores a tie when they differ by less than
the rounding their inputs carried, and gives a tie to the lower class.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# Scores closer than this count as tied whatever the inputs' precision: a few thousand float64
# roundings of numbers up to ~14 in magnitude (log-probabilities clipped at 1e-6), far below any
# difference a model means.
NOISE = 1e-12


def tie_tolerance(*arrays: np.ndarray) -> float:
    """How far apart two weighted totals of `arrays` (weights summing to 1, values at most 1 in
    magnitude, or their logarithms) may be and still be a tie: twice the machine epsilon of the
    least precise input (each input was rounded by at most half of it when it was written:
    ``0.6`` stored as float32 is 0.6000000238…), plus `NOISE`."""
    eps = max((np.finfo(a.dtype).eps for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)), default=0.0)
    return 2.0 * float(eps) + NOISE


# The one tie rule of every decision on probabilities: prediction sets hold float32, so two
# scores closer than the rounding float32 inputs carry are a tie (the soft vote's own tolerance
# for its float32 sources; auto's votes, the learned steps' fallbacks and the metrics decide by it).
TIE = 2.0 * float(np.finfo(np.float32).eps) + NOISE


def weighted_sum(weights: Sequence[float] | np.ndarray, arrays: Iterable[np.ndarray]) -> np.ndarray:
    """``sum_s weights[s] * arrays[s]`` in float64, added in the order given, element by element
    (no BLAS), so the result is bit for bit the same on every machine. arrays: equal shapes, of
    any float type, a sequence or a generator (each is widened as it is added, so a generator
    never holds more than one in float64: 10 sources of 20,000 images x 1,000 classes)."""
    total = None
    try:
        for w, a in zip(weights, arrays, strict=True):
            part = np.multiply(float(w), a, dtype=np.float64)
            total = part if total is None else np.add(total, part, out=total)
    except ValueError as exc:
        if "zip()" not in str(exc):
            raise
        raise ValueError(f"weighted_sum: {len(weights)} weight(s) for another number of arrays") from None
    if total is None:
        raise ValueError("weighted_sum: no arrays")
    return total


def decide(scores: np.ndarray, tolerance: float = TIE) -> np.ndarray:
    """The class of each row of `scores` ``(n, k)``: the lowest index among the classes whose
    score is within `tolerance` of the row's largest (default `TIE`, the rounding of the float32
    probabilities every prediction set holds; `tie_tolerance` for totals of other inputs).
    Returns ``(n,)`` int64."""
    scores = np.asarray(scores)
    top = scores >= scores.max(axis=-1, keepdims=True) - tolerance
    return top.argmax(axis=-1).astype(np.int64)


def top_classes(scores: np.ndarray, top: int, tolerance: float = TIE) -> np.ndarray:
    """The `top` likeliest classes of each row of `scores` ``(n, k)``, likeliest first
    ``(n, min(top, k))`` int64: `decide` again and again, each class taken out once chosen, so
    that the first is `decide`'s and a tie goes to the lower class at every place (a map@K answer)."""
    left = np.array(scores, dtype=np.float64)
    out = np.empty((left.shape[0], min(top, left.shape[1])), dtype=np.int64)
    for place in range(out.shape[1]):
        out[:, place] = decide(left, tolerance)
        left[np.arange(len(left)), out[:, place]] = -np.inf
    return out
