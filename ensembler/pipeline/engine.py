"""One cross-validation engine: a pipeline of steps fitted on labelled images, applied to eval,
scored out of fold.

A composition is a `Pipeline` of `Step`s: one that combines the recipe's sources (a vote, a
stack, a selection, auto) and then steps that refine the composition (calibrate and correct the
priors, tune F1 offsets, decide by person). Each step is a small frozen config; `fit` returns a
`Fitted` that `apply`s to a step's input (the sources' sets, or a composition) and describes its
fitted parameters for the manifest. Shaped as scikit-learn shapes estimators and its Pipeline,
over prediction sets.

What is decided here, once, for every step (DESIGN.md §4):

- **the folds** (`folds.Folds`): the labelled images in person-grouped folds (a declared
  competition's groups), deterministic and never a function of the labels; a step that needs an
  inner choice (a calibrator, a candidate) reads the folds of the rows it is fitted on from its
  context (`Context.folds`), never builds its own;
- **the one fold loop** (`folds.out_of_fold`): every split of rows into fit and score, here and
  in the steps, is this function's;
- **which rows a step is fitted on and what is scored**: a step is fitted on the labelled images
  of the scope (`scope.Labelled`) and on nothing else; what it predicts for them is what its
  `Step.scoring` declares: `Scoring.OUT_OF_FOLD`, each fold by the step fitted on the other
  folds (the default: anything that learns from labels, auto and decoding by person included,
  whose inner choices are made with the folds of the rows they are fitted on: nested);
  `Scoring.AS_FITTED`, the step fitted on every labelled image applied to them (a vote, which
  learns nothing); `Scoring.UNCHANGED`, its input passes (a prior correction: the labelled mix
  is train's). The next step is fitted on that composition; what is scored and kept is the last
  step's. So a group's out-of-fold rows never depend on its own labels (a test holds it so for
  every step).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from ..data.labels import MASK_SPACE, N_JOINT, LabelSpace, Task
from ..data.stable import decide
from ..data.store import PredictionSet
from ..errors import EnsError
from ..scoring.metrics import macro_f1
from .folds import Folds, out_of_fold
from .recipe import Recipe
from .scope import Labelled

if TYPE_CHECKING:
    from ..data.competition import Competition
    from ..data.project import Project

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Composed:
    """A composition of ``n`` images: joint classes `labels` ``(n,)``, per-task probabilities
    `probs` ``{task: (n, k)}``, the 18-way `joint` ``(n, 18)`` or None, and `mode`, how it was
    made (``joint`` or ``per-task`` for a vote on those, else the combining step's name), in
    the competition's label `space`."""

    image_ids: np.ndarray
    labels: np.ndarray
    probs: Mapping[Task | str, np.ndarray]
    joint: np.ndarray | None
    mode: str
    space: LabelSpace = MASK_SPACE

    @classmethod
    def decided(cls, image_ids: np.ndarray, probs: Mapping[Task | str, np.ndarray], joint: np.ndarray | None, mode: str, space: LabelSpace = MASK_SPACE) -> Composed:
        """A composition whose labels are its probabilities' decision (`stable.decide`, the one tie
        rule of every soft decision): the joint argmax when there is a joint, else the per-task
        argmaxes encoded."""
        labels = decide(joint) if joint is not None else space.encode(*(decide(probs[t]) for t in space.tasks))
        return cls(image_ids, labels, probs, joint, mode, space)

    def take(self, rows: np.ndarray) -> Composed:
        """The rows `rows` (positions ``(m,)``) of the composition."""
        joint = None if self.joint is None else self.joint[rows]
        return Composed(self.image_ids[rows], self.labels[rows], {t: p[rows] for t, p in self.probs.items()}, joint, self.mode, self.space)


Sources = Mapping[str, PredictionSet]  # a recipe's sources, aligned on the same images
Input = Sources | Composed  # what a step is fitted on and applied to


@dataclass(frozen=True)
class Context:
    """What a step may read besides its input: the recipe, the project (the data folder, the
    grouping files), why there are no labelled images when there are none (`skipped`), the
    `competition` (its metric is what learned steps optimise; default: the project's, else the
    mask preset), `group_of`, ImageIDs -> the group each image is resampled and folded with
    (None: the mask competition's persons, read from the train paths), and, set by the engine
    for each fit, `folds` (the engine's folds of the rows being fitted: a step's inner choice
    is made with them) and `target` (the step's input on eval, None when only scoring)."""

    recipe: Recipe
    project: Project | None = None
    skipped: str | None = None
    competition: Competition | None = None
    group_of: Callable[[np.ndarray], np.ndarray] | None = None
    folds: Folds | None = None
    target: Any = None
    memo: dict[Any, Any] | None = field(default=None, compare=False)  # fits shared across a run's nested folds (`fitted_once`)

    def __post_init__(self) -> None:
        if self.competition is None:
            from ..data.competition import MASK

            object.__setattr__(self, "competition", self.project.competition if self.project is not None else MASK)

    @property
    def space(self) -> LabelSpace:
        return self.recipe.space

    def groups(self, image_ids: np.ndarray) -> np.ndarray:
        """Labelled ImageIDs ``(n,)`` -> group index ``(n,)`` in ``0..G-1`` (a person, a patient)."""
        if self.group_of is None:
            from ..data.people import person_codes

            return person_codes(image_ids)
        return np.unique(np.asarray(self.group_of(image_ids), dtype=object).astype(str), return_inverse=True)[1]

    def fitted_once(self, key: Any, image_ids: np.ndarray, fit: Callable[[], T]) -> T:
        """`fit()`, or what it returned before in this run for the same `key` on the same
        training images `image_ids`: the nested folds' models trained on all folds but two
        serve two outer folds (`Folds.inner`), and are fitted once."""
        if self.memo is None:
            return fit()
        import hashlib

        digest = hashlib.sha1("\x00".join(map(str, image_ids)).encode()).hexdigest()
        if (key, digest) not in self.memo:
            self.memo[(key, digest)] = fit()
        return self.memo[(key, digest)]

    def folds_of(self, image_ids: np.ndarray) -> Folds:
        """The engine's folds of labelled `image_ids` by their groups (what `run` fits with)."""
        return Folds.of(image_ids, None if self.group_of is None else self.group_of(image_ids))


class Fitted(ABC):
    """A fitted step: `apply` maps its input (sources or a composition) to a composition."""

    @abstractmethod
    def apply(self, x: Input) -> Composed: ...

    def describe(self) -> dict[str, Any]:
        """The fitted parameters, for the manifest's `steps`."""
        return {}

    @property
    def consistent(self) -> Composed | None:
        """What a later step that leaves the labelled images as they are (`Scoring.UNCHANGED`:
        a prior correction, calibrated on them) is fitted on, where it is not this step's
        cross-fitted composition: auto's chosen candidate's out-of-fold rows, what eval gets
        (its cross-fitted rows mix each fold's choice). A step that rescores the labelled images
        is fitted on the cross-fitted ones, so that its own rows stay out of fold. None: the
        cross-fitted composition."""
        return None


@dataclass(frozen=True)
class Fit:
    """A step fitted within a pipeline.

    fitted: fitted on every labelled image of the scope; what eval gets. scored: its cross-fitted
    composition of those images (None: the step does not change what is scored, as a prior
    correction, whose labelled mix is train's); the next step is fitted on it. record: what the
    manifest keeps beside the fitted parameters. cross_fitted: scored came from fits on other
    people (so the engine reports its fold spread).
    """

    fitted: Fitted
    scored: Composed | None = None
    record: dict[str, Any] = field(default_factory=dict)
    cross_fitted: bool = False


@dataclass(frozen=True)
class Words:
    """How a competition's scores and groups are named in what `ens` prints: `metric` (``18-class
    macro F1``, or a declared metric), `key` (the record's key for it: ``f1``, or the metric),
    `unit` (``person``, ``group``); `declared`: a declared competition's."""

    metric: str = "18-class macro F1"
    key: str = "f1"
    unit: str = "person"
    declared: bool = False
    single_task: bool = False

    @classmethod
    def of(cls, competition: Competition | None) -> Words:
        if competition is None or competition.is_preset:
            return cls()
        return cls(str(competition.metric), str(competition.metric), "group", True, len(competition.tasks) == 1)

    @property
    def sign(self) -> float:
        """+1 where a higher score is better, -1 for log-loss."""
        return -1.0 if self.key == "log_loss" else 1.0


class Scoring(StrEnum):
    """What a step predicts for the labelled images it is fitted on (module doc)."""

    OUT_OF_FOLD = "out of fold"  # each fold by the step fitted on the other folds
    AS_FITTED = "as fitted"  # the step fitted on every labelled image (it learns nothing from them)
    UNCHANGED = "unchanged"  # its input passes (a prior correction: the labelled mix is train's)


class Step(ABC):
    """One step of a composition (a frozen dataclass). `combines`: it maps the recipe's sources
    to a composition (the first step of a pipeline, and only it); otherwise it maps a
    composition to a composition. `name` is what the manifest and the command line call it;
    `scoring` what the engine predicts for the labelled images (`Scoring`)."""

    name: ClassVar[str]
    help: ClassVar[str] = ""  # one line for --help and the docs (a combining step's: what --method NAME does)
    combines: ClassVar[bool] = False
    flag: ClassVar[str] = ""  # the command-line flag that asks for it, for error messages
    reweights: ClassVar[bool] = False  # it re-weights probabilities (a hard vote has none)
    probabilities: ClassVar[bool] = True  # its composition carries probabilities, not only classes (a hard vote's do not)
    scoring: ClassVar[Scoring] = Scoring.OUT_OF_FOLD
    candidate: ClassVar[bool] = False  # auto offers it as a whole composition
    metrics: ClassVar[tuple[str, ...] | None] = None  # the metrics it serves (None: any)
    declared: ClassVar[bool] = True  # it composes a declared competition (False: the mask competition's alone)
    last: ClassVar[bool] = False  # it decides the classes: the last step, once
    offered: ClassVar[bool] = False  # auto brings it after itself, optional (kept only on evidence), where the metric is one of its `metrics`

    @classmethod
    def learns(cls) -> bool:
        """Whether it is fitted on the labelled images' labels (a vote is not)."""
        return cls.scoring is not Scoring.AS_FITTED

    def headline(self, mode: str, record: Mapping[str, Any], words: Words) -> str:
        """How a combining step composed, in one line (`ens compose`'s ``recipe … · …``); `mode`:
        the composition's (``joint``, ``per-task``, or the step's name)."""
        return self.help or self.name

    def summary(self, record: Mapping[str, Any], words: Words) -> list[str]:
        """The lines `ens compose` prints of this step, from its record (the manifest's
        ``steps`` entry: config, fitted parameters, evidence); by default none."""
        return []

    def companions(self, project: Project | None, competition: Competition | None = None) -> tuple[Step, ...]:
        """Steps it brings after itself when the pipeline lacks them (auto: a decision for the
        metric of the `competition`, default the project's; decoding by person where the team
        grouped its images); by default none."""
        return ()

    @abstractmethod
    def fit(self, x: Input, labels: np.ndarray, ctx: Context) -> Fitted:
        """Fit on the labelled `x` (sources or a composition of ``n`` images) and `labels` ``(n,)``;
        `ctx.folds` are the engine's folds of these images, `ctx.target` the step's eval input."""

    def admit(self, x: Input, labels: np.ndarray, ctx: Context) -> None:
        """Refuse (an `EnsError`) what the step cannot be fitted on, once, on every labelled
        image, before any fit (a class too thin for it, say); by default nothing."""

    def record(self, fitted: Fitted, x: Input, scored: Composed | None, labels: np.ndarray, folds: Folds) -> dict[str, Any]:
        """What the manifest keeps of the step beside its fitted parameters, given its input `x`
        and its out-of-fold composition `scored` of the labelled images; by default nothing."""
        return {}

    def fit_blind(self, target: Input | None, ctx: Context) -> Fit:
        """The step without labelled images (`ctx.skipped` says why): an error unless it needs none."""
        raise EnsError(f"{self.flag or self.name} is fitted on labelled predictions; the recipe has none ({ctx.skipped})")

    def config(self) -> dict[str, Any]:
        """The step as configured: its name and options."""
        out: dict[str, Any] = {"step": self.name}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value if isinstance(value, (bool, int, float, type(None))) else str(value)
        return out


REGISTRY: dict[str, type[Step]] = {}  # every step by its name, in the order registered (the package imports every step module)


def register(step: type[Step]) -> type[Step]:
    """Register a step class under its `name`, once (a class decorator): the command line's
    ``--method`` and its help, the API, pipelines by name and auto's candidates read `REGISTRY`."""
    if REGISTRY.get(step.name, step) is not step:
        raise ValueError(f"a step called {step.name!r} is registered already")
    REGISTRY[step.name] = step
    return step


def take(x: Input, rows: np.ndarray) -> Input:
    """The rows `rows` (positions) of sources or a composition."""
    if isinstance(x, Composed):
        return x.take(rows)
    return {name: s.rows(rows) for name, s in x.items()}


def assemble(parts: Sequence[tuple[np.ndarray, Composed]], n: int) -> Composed:
    """One composition of ``n`` rows from `parts` ((row positions, composition of those rows), covering every row once)."""
    first = parts[0][1]
    ids = np.empty(n, dtype=object)
    labels = np.zeros(n, dtype=np.int64)
    probs = {t: np.zeros((n, p.shape[1])) for t, p in first.probs.items()}
    joint = None if any(c.joint is None for _, c in parts) else np.zeros((n, first.space.n_joint))
    for rows, c in parts:
        ids[rows], labels[rows] = c.image_ids, c.labels
        for t in probs:
            probs[t][rows] = c.probs[t]
        if joint is not None:
            joint[rows] = c.joint
    return Composed(ids, labels, probs, joint, first.mode, first.space)


def fit_step(step: Step, x: Input, labels: np.ndarray, folds: Folds, target: Input | None, ctx: Context, admit: bool = True) -> Fit:
    """`step` fitted on every labelled image of `x` (what eval gets) and its composition of them,
    as the step's `Step.scoring` declares (module doc): out of fold, each of `folds` by the step
    fitted on the other folds, with those rows' inner folds in its context (`Folds.inner`).
    `admit`: refuse first what the step refuses (`Step.admit`); auto, which checks what it
    offers by its own rule (or, not cautious, on purpose not at all), says False."""
    if admit:
        step.admit(x, labels, ctx)
    fitted = step.fit(x, labels, replace(ctx, folds=folds, target=target))
    if step.scoring is Scoring.OUT_OF_FOLD:
        within = lambda rows: replace(ctx, folds=folds.inner(rows), target=target)  # noqa: E731
        parts = out_of_fold(lambda rows: (lambda held, part=step.fit(take(x, rows), labels[rows], within(rows)): part.apply(take(x, held))), folds)
        scored: Composed | None = assemble(parts, len(labels))
    elif step.scoring is Scoring.AS_FITTED:
        scored = fitted.apply(x)
    else:
        scored = None
    record = step.record(fitted, x, scored, labels, folds)
    return Fit(fitted, scored, record, cross_fitted=step.scoring is Scoring.OUT_OF_FOLD)


@dataclass(frozen=True)
class CVScore:
    """The competition's score of an out-of-fold composition over all images (`value`: the mask
    competition's 18-class macro F1, a declared competition's metric), and its mean and spread
    across the folds; `key`: the name the manifest gives it."""

    value: float
    fold_mean: float
    fold_std: float
    folds: int
    key: str = "f1_18"

    def as_dict(self) -> dict[str, Any]:
        return {"folds": self.folds, f"{self.key}_fold_mean": self.fold_mean, f"{self.key}_fold_std": self.fold_std}


def cv_score(labels: np.ndarray, predicted: np.ndarray | Composed, folds: Sequence[tuple[np.ndarray, np.ndarray]], competition: Competition | None = None) -> CVScore:
    """The 18-class macro F1 of out-of-fold `predicted` ``(n,)`` over all images and per fold; a
    declared `competition`: its metric (`metrics.competition_score`) of the composition `predicted`."""
    if competition is None or competition.is_preset:
        decided = predicted.labels if isinstance(predicted, Composed) else predicted
        per_fold = [macro_f1(labels[held], decided[held], N_JOINT) for _, held in folds]
        return CVScore(macro_f1(labels, decided, N_JOINT), float(np.mean(per_fold)), float(np.std(per_fold)), len(folds))
    from ..scoring.metrics import composed_score, nan_mean

    per_fold = np.array([composed_score(competition, labels[held], predicted.take(held)) for _, held in folds])
    scored = per_fold[np.isfinite(per_fold)]  # a fold an AUC cannot score (one class only) is left out, as everywhere
    return CVScore(composed_score(competition, labels, predicted), nan_mean(per_fold), float(np.std(scored)) if len(scored) else float("nan"), len(folds), str(competition.metric))


@dataclass(frozen=True)
class Pipeline:
    """Steps in order: one that combines the sources, then steps that refine the composition.

    Built from steps, a step, or a method name (``"soft"``, ``"stack"``, …: that combining step
    alone; `steps.pipeline_of`). Checked when built: the first step combines and no other does; a step
    that re-weights probabilities does not follow a hard vote; decoding by person comes last.
    `nested`: the labelled images are scored by the whole pipeline cross-fitted (each fold by
    every step fitted on the other folds alone), not step by step (`run`)."""

    steps: tuple[Step, ...]
    nested: bool = False

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps or not steps[0].combines:
            raise EnsError("a pipeline starts with a step that combines the sources (a vote, stack, select or auto)")
        extra = [s.name for s in steps[1:] if s.combines]
        if extra:
            raise EnsError(f"a pipeline combines the sources once; {', '.join(extra)} come(s) after {steps[0].name}")
        if not steps[0].probabilities:
            for step in steps[1:]:
                if step.reweights:
                    raise EnsError(f"{step.flag or step.name} re-weights probabilities; --method {steps[0].name} gives classes only (use --method soft or geo)")
        last = [i for i, s in enumerate(steps) if s.last]
        if last and last != [len(steps) - 1]:
            raise EnsError(f"{steps[last[0]].help or steps[last[0]].name}: it decides the classes, so it is the last step, and comes once")

    @property
    def combine(self) -> Step:
        return self.steps[0]

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.steps)

    def with_companions(self, project: Project | None, competition: Competition | None = None) -> Pipeline:
        """The pipeline with the steps its combining step brings after itself (`Step.companions`:
        auto's decision for the metric, decoding by person) that it lacks: what `compose` and
        `report` both run, so that a method scores the same in each."""
        extra = tuple(s for s in self.combine.companions(project, competition) if not self.has(s.name))
        return replace(self, steps=(*self.steps, *extra)) if extra else self

    def __str__(self) -> str:
        return " -> ".join(s.name for s in self.steps)


@dataclass(frozen=True)
class Run:
    """A pipeline run: the eval composition (None when only scoring), the last cross-fitted
    composition of the labelled images (None without them: what is scored and kept), each step's
    record (config, fitted parameters, details) and, when a step was cross-fitted, the fold score."""

    eval: Composed | None
    scored: Composed | None
    records: list[dict[str, Any]]
    cv: CVScore | None = None

    def record(self, name: str) -> dict[str, Any] | None:
        """The record of the step called `name`, or None."""
        return next((r for r in self.records if r["step"] == name), None)


def run(pipeline: Pipeline, labelled: Labelled | None, target: Sources | None, ctx: Context) -> Run:
    """Fit `pipeline` on `labelled` (None: there are none, `ctx.skipped` says why), apply it to
    `target` (the sources on eval; None to score only), and cross-fit every step (module doc).
    A `Pipeline.nested` pipeline's labelled images are scored by the pipeline fitted, every step,
    on the other folds alone (a step after the first is otherwise fitted on rows made by the first
    step's models of other folds, which saw its own fold's labels)."""
    x = None if labelled is None else {s: labelled.sets[s] for s in ctx.recipe.sources}
    if labelled is not None and labelled.groups is not None and ctx.group_of is None:
        ctx = replace(ctx, group_of=labelled.group_of)
    folds = None if labelled is None else Folds.of(labelled.ids, labelled.groups)
    ctx = replace(ctx, memo={})
    current, scored, records, cross_fitted = _chain(pipeline, x, None if labelled is None else labelled.labels, folds, target, ctx)
    if pipeline.nested and x is not None:
        scored = assemble(out_of_fold(lambda rows: _chain_applied(pipeline, x, labelled.labels, folds.inner(rows), rows, target, ctx), folds), len(labelled.labels))
    cv = cv_score(labelled.labels, scored, folds, ctx.competition) if cross_fitted and scored is not None else None
    return Run(current, scored, records, cv)


def _chain(pipeline: Pipeline, x: Input | None, labels: np.ndarray | None, folds: Folds | None, target: Input | None, ctx: Context) -> tuple[Input | None, Composed | None, list[dict[str, Any]], bool]:
    """Every step fitted in turn (the next on the last one's cross-fitted rows) and applied to
    `target`: the eval composition, the labelled images' composition, the records, and whether
    a step was cross-fitted."""
    scored, records, cross_fitted = None, [], False
    current: Input | None = target
    consistent: Composed | None = None
    for step in pipeline.steps:
        given = consistent if consistent is not None and step.scoring is Scoring.UNCHANGED else x
        fit = step.fit_blind(current, ctx) if x is None else fit_step(step, given, labels, folds, current, ctx)
        if current is not None:
            current = fit.fitted.apply(current)
        if fit.scored is not None:
            scored = fit.scored
            x, consistent = fit.scored, fit.fitted.consistent
        elif x is not None and step.combines:
            raise EnsError(f"{step.name}: a combining step must compose the labelled images")
        cross_fitted = cross_fitted or fit.cross_fitted
        records.append({**step.config(), **fit.fitted.describe(), **fit.record})
    return current, scored, records, cross_fitted


def _chain_applied(pipeline: Pipeline, x: Sources, labels: np.ndarray, inner: Folds, rows: np.ndarray, target: Input | None, ctx: Context) -> Callable[[np.ndarray], Composed]:
    """The pipeline fitted, every step, on the rows `rows` of `x` alone (with their folds
    `inner`), as a function of held-out row positions: their composition (a step that leaves
    the labelled images unchanged, `Scoring.UNCHANGED`, leaves them so here too)."""
    fits = []
    part: Input = take(x, rows)
    current, consistent = target, None
    for step in pipeline.steps:
        given = consistent if consistent is not None and step.scoring is Scoring.UNCHANGED else part
        fit = fit_step(step, given, labels[rows], inner, current, ctx)
        fits.append(fit)
        if current is not None:
            current = fit.fitted.apply(current)  # the eval composition a later step looks at (a prior correction's)
        if fit.scored is not None:
            part, consistent = fit.scored, fit.fitted.consistent

    def applied(held: np.ndarray) -> Composed:
        out: Input = take(x, held)
        for step, fit in zip(pipeline.steps, fits):
            if step.scoring is not Scoring.UNCHANGED:
                out = fit.fitted.apply(out)
        return out  # type: ignore[return-value]

    return applied
