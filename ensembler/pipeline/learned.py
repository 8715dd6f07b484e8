"""Learned combinations: stacking, ensemble selection, the log-linear pool, and auto.

Each is a combining step (`engine.Step`) fitted on the sources' labelled predictions and scored
out of fold by the engine: the labelled images are split by person (all 7 images of a person
on one side), the step is fitted on the other people and predicts these; the model applied to
eval is fitted on all the labelled images.

- `Stack`: per task, a multinomial logistic regression on the log-probabilities of the task's
  sources (optionally every task's, since age may depend on mask state), balanced class
  weights on request (for macro F1).
- `Select`: per task, weights for the sources by greedy forward selection on macro F1, bagged
  over bootstrap resamples (`select_weights`, Caruana et al. 2004).
- `Pool`: a stack on the 18-way joint, a weight per source and a bias per class on their
  log-probabilities (`calibration.fit_pool`: a logarithmic opinion pool, Genest and Zidek 1986).
- `Auto`: model selection over whole compositions by the competition's score, the out-of-fold
  18-class macro F1: the recipe's soft vote (always a candidate) and geometric vote, the
  per-task choice (per task, the best of each source alone, their soft vote, their selection
  and their stack, by out-of-fold task macro F1), selection and stacking on every task, and,
  when every source carries the 18-way joint, the pool. Every choice is made inside the CV
  loop (each fold is predicted by the candidate that scored best on the other folds), so
  auto's score is honest too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from ..data.labels import N_CLASSES, N_JOINT, TASKS, Task, decode, joint_from_tasks, marginals
from ..data.stable import decide, weighted_sum
from ..scoring.metrics import macro_f1
from .calibration import Pool as LogLinearPool
from .calibration import fit_pool
from .engine import Composed, Context, Fit, Fitted, Sources, Step, cross_fit
from .recipe import Recipe
from .voting import FittedVote, Method, check_coverage

EPS = 1e-6
Folds = Sequence[tuple[np.ndarray, np.ndarray]]


# --- one task's model ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TaskModel:
    """One task's fitted combination of parts ``(n, k_i)`` into probabilities ``(n, k)``: a
    weighted mean (`weights`, summing to 1: a vote or a selection) or a logistic regression on
    the parts' log-probabilities (`regression`; `only`: the one class its labels held)."""

    k: int
    weights: np.ndarray | None = None
    regression: Any = None
    only: int | None = None

    def predict(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        if self.weights is not None:
            return weighted_sum(self.weights, parts)
        out = np.zeros((len(parts[0]), self.k))
        if self.only is not None:
            out[:, self.only] = 1.0
        else:
            out[:, self.regression.classes_] = self.regression.predict_proba(_features(parts))
        return out


TaskFit = Callable[[list[np.ndarray], np.ndarray], TaskModel]  # (parts, labels (n,)) -> model


def _features(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.log(np.clip(p, EPS, None)) for p in parts], axis=1)


def mean_fit(weights: Sequence[float], k: int) -> TaskFit:
    """Nothing to fit: the weighted mean (weights normalised), for votes and single sources."""
    w = np.asarray(weights, dtype=np.float64)
    return lambda parts, y: TaskModel(k, weights=w / w.sum())


def select_fit(k: int) -> TaskFit:
    return lambda parts, y: TaskModel(k, weights=select_weights(parts, y, k))


def stack_fit(k: int, class_weight: str | None = None) -> TaskFit:
    """Logistic regression on log-probabilities; a class absent from the labels gets probability 0."""

    def fit(parts: list[np.ndarray], y: np.ndarray) -> TaskModel:
        from sklearn.linear_model import LogisticRegression

        present = np.unique(y)
        if len(present) == 1:
            return TaskModel(k, only=int(present[0]))
        return TaskModel(k, regression=LogisticRegression(C=1.0, max_iter=2000, class_weight=class_weight).fit(_features(parts), y))

    return fit


def select_weights(probs: list[np.ndarray], y: np.ndarray, k: int, rounds: int = 20, bags: int = 10, seed: int = 0) -> np.ndarray:
    """Ensemble selection (Caruana et al. 2004): greedy forward selection, with replacement, of
    the source whose addition most raises the macro F1 of the averaged probabilities, `rounds`
    times. Against over-fitting the hill-climb, it is repeated on `bags` bootstrap resamples of
    the images; the weights ``(s,)`` are the selection counts, normalised per bag and averaged.
    (A team's library is a handful of sources, too few to bag over sources as the paper does.)
    """
    rng = np.random.default_rng(seed)
    total = np.zeros(len(probs))
    for _ in range(bags):
        rows = rng.integers(0, len(y), len(y))
        sample = [p[rows] for p in probs]
        counts = np.zeros(len(probs))
        current = np.zeros_like(sample[0], dtype=np.float64)
        for _ in range(rounds):
            scores = [macro_f1(y[rows], decide(current + p), k) for p in sample]
            best = int(np.argmax(scores))  # ties: the first source in recipe order
            counts[best] += 1
            current += sample[best]
        total += counts / counts.sum()
    return total / bags


def cross_fit_task(fit: TaskFit, parts: list[np.ndarray], y: np.ndarray, folds: Folds) -> tuple[TaskModel, np.ndarray]:
    """`fit` on all rows, and its out-of-fold probabilities ``(n, k)``: each fold by the model
    fitted on the other folds."""
    model = fit(parts, y)
    oof = np.zeros((len(y), model.k))
    for fit_rows, held in folds:
        oof[held] = fit([p[fit_rows] for p in parts], y[fit_rows]).predict([p[held] for p in parts])
    return model, oof


# --- per-task steps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskPart:
    """What one task of a per-task composition takes: sources (in recipe order), whether each
    brings every task it covers (`cross`) or the task's own probabilities, and the model."""

    sources: tuple[str, ...]
    model: TaskModel
    cross: bool = False

    def parts(self, sets: Sources, task: Task) -> list[np.ndarray]:
        return [sets[s].probs[t] for s in self.sources for t in (sets[s].tasks if self.cross else (task,))]


@dataclass(frozen=True)
class FittedTasks(Fitted):
    """A per-task composition: a `TaskPart` per task, decided per task (mode: the step's name)."""

    tasks: Mapping[Task, TaskPart]
    mode: str

    def apply(self, x: Sources) -> Composed:
        ids = next(iter(x.values())).image_ids
        return Composed.decided(ids, {t: part.model.predict(part.parts(x, t)) for t, part in self.tasks.items()}, None, self.mode)

    def describe(self) -> dict[str, Any]:
        weights = {t.value: {s: round(float(w), 4) for s, w in zip(p.sources, p.model.weights)} for t, p in self.tasks.items() if p.model.weights is not None}
        return {"weights": weights} if weights and self.mode == "select" else {}


def _per_task(recipe: Recipe, x: Sources, labels: np.ndarray, fit_for: Callable[[Task], TaskFit], cross: bool, mode: str) -> FittedTasks:
    check_coverage(recipe, x)
    truth = decode(labels)
    tasks = {}
    for task in TASKS:
        sources = tuple(t.source for t in recipe.tasks[task])
        part = TaskPart(sources, TaskModel(N_CLASSES[task]), cross)
        tasks[task] = replace(part, model=fit_for(task)(part.parts(x, task), truth[task]))
    return FittedTasks(tasks, mode)


@dataclass(frozen=True)
class Stack(Step):
    """Stacking: per task, a logistic regression on the sources' log-probabilities; `balanced`
    weighs classes inversely to their frequency (for macro F1); `all_tasks` lets each task see
    every task the sources predict."""

    balanced: bool = False
    all_tasks: bool = False
    name: ClassVar[str] = "stack"
    combines: ClassVar[bool] = True

    def fit(self, x: Sources, labels: np.ndarray, ctx: Context) -> FittedTasks:
        weight = "balanced" if self.balanced else None
        return _per_task(ctx.recipe, x, labels, lambda task: stack_fit(N_CLASSES[task], weight), self.all_tasks, self.name)


@dataclass(frozen=True)
class Select(Step):
    """Ensemble selection: per task, source weights by bagged greedy selection on macro F1."""

    name: ClassVar[str] = "select"
    combines: ClassVar[bool] = True

    def fit(self, x: Sources, labels: np.ndarray, ctx: Context) -> FittedTasks:
        return _per_task(ctx.recipe, x, labels, lambda task: select_fit(N_CLASSES[task]), False, self.name)


@dataclass(frozen=True)
class FittedPool(Fitted):
    """The fitted log-linear pool of the sources' 18-way joints."""

    sources: tuple[str, ...]
    pool: LogLinearPool
    mode: str = "pool"

    def apply(self, x: Sources) -> Composed:
        joint = self.pool.apply([x[s].joint for s in self.sources])
        return Composed.decided(next(iter(x.values())).image_ids, marginals(joint), joint, self.mode)

    def describe(self) -> dict[str, Any]:
        return {"pool": {"weights": dict(zip(self.sources, self.pool.weights.round(4).tolist())), "bias": self.pool.bias.round(4).tolist()}}


@dataclass(frozen=True)
class Pool(Step):
    """A stack on the 18-way joint of every source: a weight per source and a bias per class on
    their log-probabilities, fitted by maximum likelihood (`calibration.fit_pool`)."""

    name: ClassVar[str] = "pool"
    combines: ClassVar[bool] = True

    def fit(self, x: Sources, labels: np.ndarray, ctx: Context) -> FittedPool:
        sources = ctx.recipe.sources
        return FittedPool(sources, fit_pool([x[s].joint for s in sources], labels))


# --- auto ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One way `auto` may predict a task (or the whole 18 classes), with the macro F1 of its
    out-of-fold predictions and its spread (std) across the folds."""

    label: str
    f1: float
    spread: float

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "f1": round(self.f1, 4), "spread": round(self.spread, 4)}


def nested_choice(names: Sequence[str], labels: Sequence[np.ndarray], y: np.ndarray, k: int, folds: Folds) -> tuple[list[Candidate], np.ndarray, int]:
    """Choose among candidates `names` by the macro F1 (over `k` classes) of their out-of-fold
    decisions `labels` (each ``(n,)``) on `y` ``(n,)``, with the choice inside the CV loop.

    Returns each candidate with its F1 and fold spread; for every image, the candidate chosen on the
    *other* folds' images (its row of the scored composition: choosing on the images scored would
    flatter the choice); and the candidate chosen on all images (the one applied to eval). Ties go
    to the first candidate, i.e. the simplest."""
    candidates = [
        Candidate(name, macro_f1(y, decided, k), float(np.std([macro_f1(y[held], decided[held], k) for _, held in folds])))
        for name, decided in zip(names, labels)
    ]
    per_row = np.zeros(len(y), dtype=np.int64)
    for fit_rows, held in folds:
        per_row[held] = int(np.argmax([macro_f1(y[fit_rows], decided[fit_rows], k) for decided in labels]))
    return candidates, per_row, int(np.argmax([c.f1 for c in candidates]))


@dataclass(frozen=True)
class _Option:
    """One candidate of a task: its label, its kind (source, vote, selection, stack), its fitted
    part, and its out-of-fold probabilities."""

    label: str
    kind: str
    part: TaskPart
    oof: np.ndarray


def _task_options(recipe: Recipe, x: Sources, task: Task, y: np.ndarray, folds: Folds) -> list[_Option]:
    """Every candidate for one task: each source alone, and with several sources their soft
    vote, their ensemble selection and their stack, cross-fitted."""
    terms, k = recipe.tasks[task], N_CLASSES[task]
    plans: list[tuple[str, str, list[int], TaskFit]] = [(t.source, "source", [i], mean_fit([t.weight], k)) for i, t in enumerate(terms)]
    if len(terms) > 1:
        names, every = "+".join(map(str, terms)), list(range(len(terms)))
        plans += [
            (f"soft vote {names}", "vote", every, mean_fit([t.weight for t in terms], k)),
            (f"selection from {names}", "selection", every, select_fit(k)),
            (f"stack of {names}", "stack", every, stack_fit(k)),
        ]
    options = []
    for label, kind, idx, fit in plans:
        part = TaskPart(tuple(terms[i].source for i in idx), TaskModel(k))
        model, oof = cross_fit_task(fit, part.parts(x, task), y, folds)
        options.append(_Option(label, kind, replace(part, model=model), oof))
    return options


@dataclass(frozen=True)
class _Whole:
    """One of auto's 18-class candidates: fitted (what eval gets), its out-of-fold composition of
    the labelled images (`scored`, what its F1 is taken on) and what a step fitted after it must
    see (`consistent`: the same as `scored` except for the per-task choice)."""

    label: str
    fitted: Fitted
    scored: Composed
    consistent: Composed


@dataclass(frozen=True)
class FittedAuto(Fitted):
    """Auto's choice, fitted on every labelled image."""

    chosen: Fitted
    label: str
    record: dict[str, Any] = field(default_factory=dict, compare=False)

    def apply(self, x: Sources) -> Composed:
        return replace(self.chosen.apply(x), mode="auto")

    def describe(self) -> dict[str, Any]:
        return {"chosen": self.label, **self.chosen.describe()}


@dataclass(frozen=True)
class Auto(Step):
    """Model selection over whole compositions (module doc), the choice inside the CV loop."""

    name: ClassVar[str] = "auto"
    combines: ClassVar[bool] = True

    def fit(self, x: Sources, labels: np.ndarray, ctx: Context) -> Fitted:
        return self.cross_fit(x, labels, _folds_of(x), None, ctx).fitted

    def cross_fit(self, x: Sources, labels: np.ndarray, folds: Folds, target: Any, ctx: Context) -> Fit:
        recipe = ctx.recipe
        check_coverage(recipe, x)
        ids, truth = next(iter(x.values())).image_ids, decode(labels)
        chosen_parts, scored_probs, consistent_probs, tasks_record, weights = {}, {}, {}, {}, {}
        every: dict[str, dict[Task, _Option]] = {"selection": {}, "stack": {}}
        for task in TASKS:
            options = _task_options(recipe, x, task, truth[task], folds)
            candidates, per_row, chosen = nested_choice([o.label for o in options], [decide(o.oof) for o in options], truth[task], N_CLASSES[task], folds)
            tasks_record[task.value] = {"chosen": candidates[chosen].label, "candidates": [c.as_dict() for c in candidates]}
            best = options[chosen]
            chosen_parts[task] = best.part
            scored_probs[task] = np.stack([o.oof for o in options])[per_row, np.arange(len(per_row))]
            consistent_probs[task] = best.oof
            if best.kind == "selection":
                weights[task.value] = {s: round(float(w), 4) for s, w in zip(best.part.sources, best.part.model.weights)}
            for kind in every:  # the selection and the stack of all the task's sources (the source itself when alone)
                every[kind][task] = next((o for o in options if o.kind == kind), options[0])
        tasks = ", ".join(f"{t} {tasks_record[t.value]['chosen']}" for t in TASKS)
        per_task = [_Whole(f"per task: {tasks}", FittedTasks(chosen_parts, "auto"), Composed.decided(ids, scored_probs, None, "auto"), Composed.decided(ids, consistent_probs, None, "auto"))]
        for kind, label in (("selection", "selection per task"), ("stack", "stack per task")):
            oof = Composed.decided(ids, {t: o.oof for t, o in every[kind].items()}, None, "auto")
            per_task.append(_Whole(label, FittedTasks({t: o.part for t, o in every[kind].items()}, "auto"), oof, oof))
        whole, record = self._choose(recipe, x, labels, folds, per_task, ctx)
        record["tasks"] = tasks_record
        if whole.label == per_task[0].label and weights:
            record["weights"] = weights  # the per-task selections are what eval gets
        return Fit(FittedAuto(whole.fitted, whole.label), whole.scored, whole.consistent, {"auto": record}, cross_fitted=True)

    @staticmethod
    def _choose(recipe: Recipe, x: Sources, labels: np.ndarray, folds: Folds, per_task: Sequence[_Whole], ctx: Context) -> tuple[_Whole, dict[str, Any]]:
        """Auto's final choice, by out-of-fold **18-class** macro F1 (the competition's score),
        inside the CV loop: the recipe's soft vote (always a candidate: auto must not lose to it)
        and geometric vote (on the joint when every source carries it, as `combine` does), the
        per-task candidates and, when every source carries the joint, the pool."""
        candidates = []
        for vote in (Method.SOFT, Method.GEO):
            fitted = FittedVote(recipe, vote)
            scored = fitted.apply(x)
            label = f"{vote.value} vote {'+'.join(recipe.sources)}" + (" (18-way joint)" if scored.mode == "joint" else " (per task)")
            candidates.append(_Whole(label, fitted, scored, scored))
        candidates += per_task
        if all(x[s].joint is not None for s in recipe.sources):
            pool = cross_fit(Pool(), x, labels, folds, ctx)
            scored = replace(pool.scored, mode="auto")
            candidates.append(_Whole(f"stack of {'+'.join(recipe.sources)} on the 18-way joint", pool.fitted, scored, scored))
        scores, per_row, chosen = nested_choice([c.label for c in candidates], [c.scored.labels for c in candidates], labels, N_JOINT, folds)
        rows = np.arange(len(labels))
        probs = {t: np.stack([c.scored.probs[t] for c in candidates])[per_row, rows] for t in TASKS}
        decided = np.stack([c.scored.labels for c in candidates])[per_row, rows]
        best = candidates[chosen]
        joint = None
        if best.scored.joint is not None:  # the scored set carries a joint as eval's does (a per-task row: the product of its marginals, same argmax)
            joint = np.stack([c.scored.joint if c.scored.joint is not None else joint_from_tasks(c.scored.probs) for c in candidates])[per_row, rows]
        scored = Composed(best.scored.image_ids, decided, probs, joint, "auto")
        return _Whole(best.label, best.fitted, scored, best.consistent), {"chosen": best.label, "candidates": [c.as_dict() for c in scores]}


def _folds_of(x: Sources) -> list[tuple[np.ndarray, np.ndarray]]:
    from ..data.people import person_folds

    return person_folds(next(iter(x.values())).image_ids)
