"""The folds of the labelled images, and the one loop that splits them into fit and score.

Every cross-validation fold of `ens` is made here (`Folds`: grouped by person, or by a declared
competition's group; deterministic and never a function of the labels), and every split of
labelled rows into fitted and held is `out_of_fold`'s: the engine's cross-fitting of steps, a
step's inner choice (calibrators, auto's candidates), the audit's calibration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import numpy as np

from ..data.people import person_of
from ..errors import EnsError

CV_FOLDS = 5
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Folds(Sequence[tuple[np.ndarray, np.ndarray]]):
    """The engine's folds of ``n`` labelled rows, `fold` ``(n,)`` each row's: every group (a
    person, a declared competition's patient or plant) in one fold, by scikit-learn's GroupKFold
    over `groups` ``(n,)``, deterministic and never a function of the labels; as a sequence, the
    (fit, held) row positions of each fold. The only place that makes cross-validation folds.

    Nested folds (`inner`) are the other folds: a step fitted on every fold but one chooses with
    the folds it was given, so a model that an inner fit needs (trained on all folds but two) is
    the same for both outer folds it serves, and the engine fits it once (`Context.memo`)."""

    fold: np.ndarray
    groups: np.ndarray

    @classmethod
    def of(cls, image_ids: np.ndarray | None = None, groups: np.ndarray | None = None, n_folds: int = CV_FOLDS) -> Folds:
        """Folds of `image_ids` ``(n,)`` by person (the mask competition's paths), or by `groups` ``(n,)``."""
        from sklearn.model_selection import GroupKFold

        groups = person_of(image_ids) if groups is None else np.asarray(groups, dtype=object)
        n_folds = min(n_folds, len(set(groups)))
        if n_folds < 2:
            raise EnsError("cross-validation needs labelled images of at least two people")
        fold = np.zeros(len(groups), dtype=np.int64)
        for k, (_, held) in enumerate(GroupKFold(n_splits=n_folds).split(np.zeros(len(groups)), groups=groups)):
            fold[held] = k
        return cls(fold, groups)

    def inner(self, rows: np.ndarray) -> Folds:
        """The folds of the rows `rows` (positions; the answer's positions are into `rows`): the
        folds they fall in (nested: fitted on every fold but one, a step chooses with the other
        folds), or fresh grouped folds when they all fall in one."""
        within = self.fold[rows]
        present = np.unique(within)
        if len(present) < 2:
            return Folds.of(groups=self.groups[rows], n_folds=CV_FOLDS)
        return Folds(np.searchsorted(present, within), self.groups[rows])

    @cached_property
    def pairs(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        return tuple((np.flatnonzero(self.fold != k), np.flatnonzero(self.fold == k)) for k in range(int(self.fold.max()) + 1))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i):  # type: ignore[override]
        return self.pairs[i]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return iter(self.pairs)

    @property
    def n(self) -> int:
        return len(self.groups)


def out_of_fold(fit: Callable[[np.ndarray], Callable[[np.ndarray], T]], folds: Iterable[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, T]]:
    """The one fold loop of `ens`: for each fold, `fit` on its fit rows (positions), the fitted
    (a function of row positions) applied to its held rows. Returns ``[(held rows, output)]``,
    fold by fold. Nothing else splits labelled rows into fit and score."""
    return [(held, fit(fit_rows)(held)) for fit_rows, held in folds]


def filled(parts: Sequence[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """One array of ``n`` rows from `out_of_fold`'s parts (held rows, their values ``(m, ...)``),
    float64 (or the parts' integer type), every row set once."""
    first = np.asarray(parts[0][1])
    out = np.zeros((n, *first.shape[1:]), dtype=first.dtype if np.issubdtype(first.dtype, np.integer) else np.float64)
    for rows, values in parts:
        out[rows] = values
    return out
