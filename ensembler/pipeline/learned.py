"""Learned combinations: stacking, ensemble selection and the log-linear pool.

Each is a combining step (`engine.Step`) fitted on the sources' labelled predictions and scored
out of fold by the engine: the labelled images are split by person (all 7 images of a person
on one side; a declared competition's by its declared group), the step is fitted on the other
people and predicts these; the model applied to eval is fitted on all the labelled images.

- `Stack`: per task, a multinomial logistic regression on the log-probabilities of the task's
  sources (optionally every task's, since age may depend on mask state), balanced class
  weights on request (for macro F1).
- `Select`: per task, weights for the sources by greedy forward selection on the competition's
  metric (macro F1 for the mask competition), bagged over bootstrap resamples
  (`select_weights`, Caruana et al. 2004).
- `Pool`: a stack on the 18-way joint, a weight per source and a bias per class on their
  log-probabilities (`calibration.fit_pool`: a logarithmic opinion pool, Genest and Zidek 1986).

`Auto` (`pipeline.auto`) chooses among these and the votes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from ..data.labels import MASK_SPACE, LabelSpace, Task, marginals
from ..data.people import MIN_PEOPLE, thin_classes, thin_pairs, thin_text
from ..data.stable import weighted_sum
from ..errors import EnsError
from ..scoring.metrics import task_objective
from .calibration import OpinionPool
from .calibration import fit_pool
from .engine import Composed, Context, Fitted, Sources, Step, Words, register
from .folds import filled, out_of_fold
from .recipe import Recipe
from .voting import check_coverage

EPS = 1e-6
SELECT_WORK = 2 * 10**9  # probabilities a selection sums over its bags, rounds and sources (a mask team's: about 10**8)
MAX_STACK_WEIGHTS = 10_000  # a logistic regression past this (50 classes from 4 sources) takes lbfgs minutes per fit, hundreds of classes hours
AUTO_STACK_WEIGHTS = 1_000  # auto offers a stack up to this (15 classes from 4 sources): past it lbfgs often stops at its iteration limit
Folds = Sequence[tuple[np.ndarray, np.ndarray]]
Objective = Callable[[np.ndarray, Iterable[np.ndarray]], np.ndarray]  # (labels (n,), candidates' summed probabilities, each (n, k)) -> (c,), higher is better (`metrics.task_objective`)


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


def select_fit(k: int, objective: Objective | None = None) -> TaskFit:
    return lambda parts, y: TaskModel(k, weights=select_weights(parts, y, k, objective=objective))


def stack_fit(k: int, class_weight: str | None = None) -> TaskFit:
    """Logistic regression on log-probabilities; a class absent from the labels gets probability 0."""

    def fit(parts: list[np.ndarray], y: np.ndarray) -> TaskModel:
        from sklearn.linear_model import LogisticRegression

        present = np.unique(y)
        if len(present) == 1:
            return TaskModel(k, only=int(present[0]))
        return TaskModel(k, regression=LogisticRegression(C=1.0, max_iter=2000, class_weight=class_weight).fit(_features(parts), y))

    return fit


def select_weights(probs: list[np.ndarray], y: np.ndarray, k: int, rounds: int = 20, bags: int = 10, seed: int = 0, objective: Objective | None = None) -> np.ndarray:
    """Ensemble selection (Caruana et al. 2004): greedy forward selection, with replacement, of
    the source whose addition most raises the `objective` of the averaged probabilities (the
    competition's metric, `metrics.task_objective`; default: macro F1 over `k` classes), `rounds`
    times. Against over-fitting the hill-climb, it is repeated on `bags` bootstrap resamples of
    the images; the weights ``(s,)`` are the selection counts, normalised per bag and averaged.
    At most `SELECT_WORK` probabilities are summed over all bags (rounds x sources x images x
    classes each), never fewer than 2 bags: at 500 classes x 10,000 images x 10 sources, 2 bags
    (a bag of that many images is steady by itself); a mask team's selections keep their 10.
    (A team's library is a handful of sources, too few to bag over sources as the paper does.)
    """
    objective = objective or task_objective("macro_f1", k)
    bags = min(bags, max(2, SELECT_WORK // max(rounds * len(probs) * len(y) * k, 1)))  # hundreds of classes: fewer bags
    rng = np.random.default_rng(seed)
    total = np.zeros(len(probs))
    for _ in range(bags):
        rows = rng.integers(0, len(y), len(y))
        sample = [p[rows] for p in probs]
        counts = np.zeros(len(probs))
        current = np.zeros_like(sample[0], dtype=np.float64)
        for _ in range(rounds):
            scores = objective(y[rows], (current + p for p in sample))
            best = int(np.argmax(scores))  # ties: the first source in recipe order
            counts[best] += 1
            current += sample[best]
        total += counts / counts.sum()
    return total / bags


def cross_fit_task(fit: TaskFit, parts: list[np.ndarray], y: np.ndarray, folds: Folds, once: Callable[[np.ndarray, Callable[[], TaskModel]], TaskModel] | None = None) -> tuple[TaskModel, np.ndarray]:
    """`fit` on all rows, and its out-of-fold probabilities ``(n, k)``: each fold by the model
    fitted on the other folds (the engine's loop, `engine.out_of_fold`). `once(rows, make)`: a
    model fitted before on the same training rows, where a run shares them (`Context.fitted_once`)."""
    rows_of = lambda rows: [p[rows] for p in parts]  # noqa: E731
    fitted = lambda rows: (once or (lambda _, make: make()))(rows, lambda: fit(rows_of(rows), y[rows]))  # noqa: E731
    model = fitted(np.arange(len(y)))
    oof = out_of_fold(lambda rows: (lambda held, m=fitted(rows): m.predict(rows_of(held))), folds)
    return model, filled(oof, len(y))


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
    """A per-task composition: a `TaskPart` per task, decided per task (mode: the step's name);
    `thin`: the tasks that took the soft vote of their sources instead of a learned part, as
    a class of theirs was too thin to learn (`people.thin_classes`), and why."""

    tasks: Mapping[Task | str, TaskPart]
    mode: str
    thin: Mapping[Task | str, str] = field(default_factory=dict)
    space: LabelSpace = MASK_SPACE

    def apply(self, x: Sources) -> Composed:
        ids = next(iter(x.values())).image_ids
        return Composed.decided(ids, {t: part.model.predict(part.parts(x, t)) for t, part in self.tasks.items()}, None, self.mode, self.space)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        weights = {str(t): {s: round(float(w), 4) for s, w in zip(p.sources, p.model.weights)} for t, p in self.tasks.items() if p.model.weights is not None and t not in self.thin}
        if weights and self.mode == "select":
            out["weights"] = weights
        if self.thin:
            out["too_thin"] = {str(t): why for t, why in self.thin.items()}
        return out


def task_lines(record: Mapping[str, Any]) -> list[str]:
    """What a per-task composition's record (`FittedTasks.describe`) prints: the tasks too thin
    to learn, and each task's source weights."""
    lines = [f"too thin to learn: {why}" for why in (record.get("too_thin") or {}).values()]
    for task, weights in (record.get("weights") or {}).items():
        lines.append(f"{task} weights: " + ", ".join(f"{s} {w:.2f}" for s, w in weights.items()))
    return lines


def thin_of(labels: np.ndarray, ids: np.ndarray, ctx: Context) -> dict[Task | str, dict[int, int]]:
    """The classes too thin to learn (`people.thin_classes`), counted in the context's groups."""
    return thin_classes(labels, ids, ctx.space, ctx.groups(ids))


def thin_line(task: Task | str, classes: dict[int, int], ctx: Context) -> str:
    """`people.thin_text` in the context's words: people for the mask competition, groups else."""
    return thin_text(task, classes, ctx.space, ("person", "people") if ctx.competition.is_preset else ("group", "groups"))


def unit(ctx: Context) -> str:
    """What the context's groups are called: the mask competition's people, a declared one's groups."""
    return "people" if ctx.competition.is_preset else "groups"


def _per_task(recipe: Recipe, x: Sources, labels: np.ndarray, fit_for: Callable[[Task | str], TaskFit], cross: bool, mode: str, ctx: Context) -> FittedTasks:
    """Fit each task's part; a task with a class too thin to learn takes its sources' soft vote
    (recipe weights) and says so."""
    check_coverage(recipe, x)
    space = ctx.space
    truth = space.decode(labels)
    thin = thin_of(labels, next(iter(x.values())).image_ids, ctx)
    tasks, fallback = {}, {}
    for task in space.tasks:
        terms, k = recipe.tasks[task], space.n_classes[task]
        if task in thin:
            fallback[task] = f"{thin_line(task, thin[task], ctx)}: fewer than {MIN_PEOPLE} labelled {unit(ctx)}, too thin to learn; the soft vote of its sources instead"
        fit = mean_fit([t.weight for t in terms], k) if task in thin else fit_for(task)
        part = TaskPart(tuple(t.source for t in terms), TaskModel(k), cross and task not in thin)
        tasks[task] = replace(part, model=fit(part.parts(x, task), truth[task]))
    return FittedTasks(tasks, mode, fallback, space)


@register
@dataclass(frozen=True)
class Stack(Step):
    """Stacking: per task, a logistic regression on the sources' log-probabilities; `balanced`
    weighs classes inversely to their frequency (for macro F1); `all_tasks` lets each task see
    every task the sources predict."""

    balanced: bool = False
    all_tasks: bool = False
    name: ClassVar[str] = "stack"
    help: ClassVar[str] = "per task, a logistic regression on the sources' log-probabilities"
    combines: ClassVar[bool] = True

    def headline(self, mode: str, record: Mapping[str, Any], words: Words) -> str:
        return "stacked: a meta-model per task, fitted on the labelled predictions"

    def summary(self, record: Mapping[str, Any], words: Words) -> list[str]:
        return task_lines(record)

    def fit(self, x: Sources, labels: np.ndarray, ctx: Context) -> FittedTasks:
        weight = "balanced" if self.balanced else None
        for task in ctx.space.tasks:
            too_many = stack_too_large(ctx.recipe, x, task, self.all_tasks)
            if too_many:
                raise EnsError(f"{too_many}: compose with --method select or auto (which leaves the stack out there)")
        return _per_task(ctx.recipe, x, labels, lambda task: stack_fit(ctx.space.n_classes[task], weight), self.all_tasks, self.name, ctx)


def stack_too_large(recipe: Recipe, x: Sources, task: Task | str, all_tasks: bool = False, limit: int = MAX_STACK_WEIGHTS) -> str | None:
    """Why a stack of `task` is not fitted (None: it is): its logistic regression would have more
    than `limit` weights (classes x the sources' features), which lbfgs fits in minutes, not
    seconds, and which a team's labelled images cannot pin down (hundreds of classes). Auto's
    limit is `AUTO_STACK_WEIGHTS`: a 20-class stack of 4 sources (1,600 weights) ran a minute a
    fit at lbfgs's iteration limit and, on the 10 simulated 20-class teams of `bench/declared.py`
    where it learned, scored below the soft vote on 9 and below auto's choice on all 10."""
    k = recipe.space.n_classes[task]
    features = sum(sum(recipe.space.n_classes[t] for t in x[term.source].tasks) if all_tasks else k for term in recipe.tasks[task])
    if k * features <= limit:
        return None
    return f"a stack of {task} would fit {k} classes x {features} features = {k * features:,} weights, more than {limit:,}"


@register
@dataclass(frozen=True)
class Select(Step):
    """Ensemble selection: per task, source weights by bagged greedy selection on the
    competition's metric (the mask competition's: macro F1)."""

    name: ClassVar[str] = "select"
    help: ClassVar[str] = "per task, source weights by greedy ensemble selection on the competition's metric, bagged (Caruana et al. 2004)"
    combines: ClassVar[bool] = True

    def headline(self, mode: str, record: Mapping[str, Any], words: Words) -> str:
        return "ensemble selection per task, on the labelled predictions"

    def summary(self, record: Mapping[str, Any], words: Words) -> list[str]:
        return task_lines(record)

    def fit(self, x: Sources, labels: np.ndarray, ctx: Context) -> FittedTasks:
        n_classes, metric = ctx.space.n_classes, ctx.competition.metric
        return _per_task(ctx.recipe, x, labels, lambda task: select_fit(n_classes[task], task_objective(metric, n_classes[task])), False, self.name, ctx)


@dataclass(frozen=True)
class FittedPool(Fitted):
    """The fitted log-linear pool of the sources' 18-way joints."""

    sources: tuple[str, ...]
    pool: OpinionPool
    mode: str = "pool"

    def apply(self, x: Sources) -> Composed:
        joint = self.pool.apply([x[s].joint for s in self.sources])
        return Composed.decided(next(iter(x.values())).image_ids, marginals(joint), joint, self.mode)

    def describe(self) -> dict[str, Any]:
        return {"pool": {"weights": dict(zip(self.sources, self.pool.weights.round(4).tolist())), "bias": self.pool.bias.round(4).tolist()}}


@register
@dataclass(frozen=True)
class Pool(Step):
    """A stack on the 18-way joint of every source: a weight per source and a bias per class on
    their log-probabilities, fitted by maximum likelihood (`calibration.fit_pool`). Refused when
    a gender x age class has fewer than `people.MIN_PEOPLE` labelled people: its biases would
    decide those classes from too few."""

    name: ClassVar[str] = "pool"
    help: ClassVar[str] = "a log-linear pool of the sources' 18-way joints: a weight per source and a bias per class (the mask competition)"
    combines: ClassVar[bool] = True
    declared: ClassVar[bool] = False

    def headline(self, mode: str, record: Mapping[str, Any], words: Words) -> str:
        return "a log-linear pool of the sources' 18-way joints, fitted on the labelled predictions"

    def admit(self, x: Sources, labels: np.ndarray, ctx: Context) -> None:
        if not ctx.competition.is_preset:
            raise EnsError(f"pool stacks the mask competition's 18-way joint; {ctx.competition.name}'s sources are combined by stack or select")
        thin = thin_pairs(labels, next(iter(x.values())).image_ids)
        if thin:
            raise EnsError(f"too few labelled people of {', '.join(thin)} (fewer than {MIN_PEOPLE}) to fit a stack on the 18-way joint; compose with a vote, or auto (which leaves it out)")

    def fit(self, x: Sources, labels: np.ndarray, ctx: Context) -> FittedPool:
        sources = ctx.recipe.sources
        ids = next(iter(x.values())).image_ids
        return FittedPool(sources, ctx.fitted_once(("pool", sources), ids, lambda: fit_pool([x[s].joint for s in sources], labels)))
