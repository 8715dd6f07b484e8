"""Validation scores of sources and recipes, side by side on the same images.

Every row is scored on one set of images: the labelled images that all the sources involved
predict, restricted to the validation fold of the team's fold file when there is one. A recipe's
gain is its 18-class macro F1 minus that of the best single source (ensembles excluded). A
learned method (stacking, selection) is scored by person-grouped cross-validation on those same images,
never in-sample, with the spread of its score across the folds.

The report also shows each task's class priors: the labelled images' true mix, and per source
the eval mix that EM estimates from its eval predictions (`priors.em_priors`), so a team sees a
shifted test set before choosing `--prior em`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..data.labels import N_CLASSES, TASKS, Task, decode, split_prediction
from ..data.people import person_codes
from ..data.project import Project
from ..data.stable import decide
from ..data.store import LABELLED_SPLITS, PredictionSet, Split, Store, kind_of
from ..errors import EnsError, preview
from ..pipeline.calibration import Calibrator, fit
from ..pipeline.composition import check_competition, eval_target
from ..pipeline.engine import Context, Pipeline, run
from ..pipeline.priors import em_priors, implied_priors, self_check
from ..pipeline.recipe import Recipe, complete_recipe
from ..pipeline.scope import Labelled, labelled_scope, load_labelled
from ..pipeline.steps import Method, combining
from ..pipeline.voting import Tie
from ..scoring.evidence import REPLICATES, bootstrap, pick_two
from ..scoring.metrics import Scores, own_prediction, score


@dataclass(frozen=True)
class ReportRow:
    """One scored line: a source (kind model / import / ensemble) or a recipe with a method."""

    name: str
    kind: str
    scores: Scores
    method: str | None = None
    gain: float | None = None
    spread: float | None = None  # learned methods: std of the 18-class F1 across the CV folds
    prediction: Any = field(default=None, repr=False, compare=False)  # joint classes (n,), or {task: (n,)}
    interval: tuple[float, float] | None = None  # person-bootstrap 90 % interval of the 18-class F1
    gain_interval: tuple[float, float] | None = None  # paired interval of the gain over the best single source
    positive: float | None = None  # share of person resamples in which that gain is above 0
    value: float | None = None  # a declared competition's metric (`Report.metric`); then `scores` is empty
    steps: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)  # a recipe's run: each step's record, as a manifest's `steps`

    @property
    def in_noise(self) -> bool:
        """A gain whose paired interval holds 0: not shown to be real."""
        return self.gain_interval is not None and self.gain_interval[0] <= 0.0 <= self.gain_interval[1]

    @property
    def described(self) -> str:
        """The kind column: the source's kind, or the recipe's method (``soft vote``, ``stack, CV``)."""
        if not self.method:
            return self.kind
        from ..pipeline.engine import REGISTRY

        return f"{self.method}, CV" if REGISTRY[self.method].learns() else f"{self.method} vote"

    @property
    def label(self) -> str:
        """The row's name, with its method for a recipe (a recipe may be scored by several)."""
        return self.name if self.method is None else f"{self.name} ({self.method})"


@dataclass(frozen=True)
class PriorRow:
    """A source's class priors for one task: the mean of its posteriors on the scored labelled
    images (the priors its probabilities stand for) and the EM estimate on eval, both ``(k,)``;
    `holds`: whether EM gives back the labelled images' own mix from their calibrated
    probabilities (`priors.self_check`), without which its eval estimate is not to be trusted."""

    source: str
    task: Task
    labelled: np.ndarray
    eval: np.ndarray
    holds: bool


@dataclass(frozen=True)
class Report:
    """Rows best first (by 18-class macro F1), the images they were scored on, notes, and the
    class priors: the scored images' true mix per task ``{task: (k,)}`` and each source's."""

    rows: list[ReportRow]
    n_images: int
    scope: str
    notes: list[str] = field(default_factory=list)
    truth_priors: dict[Task, np.ndarray] = field(default_factory=dict)
    priors: list[PriorRow] = field(default_factory=list)
    sets: Mapping[str, PredictionSet] = field(default_factory=dict, repr=False)  # the sources, aligned on the scored images
    labels: np.ndarray | None = field(default=None, repr=False)  # their joint labels (n,)
    people: int = 0  # the people the scored images belong to (what the intervals resample)
    replicates: int = 0  # person-bootstrap replicates behind the intervals (0: none)
    metric: str | None = None  # a declared competition's metric: its rows carry `value`, intervals by group
    groups: np.ndarray | None = field(default=None, repr=False)  # a declared competition's group of each scored image (n,)
    reference: str | None = None  # a declared competition's best single source (the gains are over it)


def standing(value: float | None, higher_is_better: bool = True) -> float:
    """A row's place in a ranking by its metric: the value, negated when lower is better, and
    below every other when it could not be scored (None or NaN: an AUC without both classes)."""
    if value is None or not np.isfinite(value):
        return -np.inf
    return float(value) if higher_is_better else -float(value)


def estimated_priors(store: Store, aligned: Mapping[str, PredictionSet]) -> list[PriorRow]:
    """Each source's implied priors on its labelled rows and EM-estimated eval priors (on its
    eval probabilities calibrated by temperature on the labelled rows, against their true mix,
    and whether EM holds there: `priors.self_check`), per task it covers (ensembles, which
    re-use their sources' predictions, and sources without eval predictions are left out)."""
    rows = []
    for name, labelled in aligned.items():
        if kind_of(labelled.meta) == "ensemble" or not store.has(name, Split.EVAL):
            continue
        evaluated = store.read(name, Split.EVAL)
        truth = decode(labelled.labels)
        for task in TASKS:
            if task in labelled.tasks and task in evaluated.tasks:
                # EM assumes calibrated posteriors and the true train mix (priors.correct_shift)
                mix = np.bincount(truth[task], minlength=N_CLASSES[task]) / len(truth[task])
                calibration = fit(Calibrator.TS, labelled.probs[task], truth[task])
                holds = self_check(calibration.apply(labelled.probs[task]), mix) is None
                rows.append(PriorRow(name, task, implied_priors(labelled.probs[task]), em_priors(calibration.apply(evaluated.probs[task]), mix)[0], holds))
    return rows


def best_first(rows: list[ReportRow]) -> list[ReportRow]:
    """Rows by 18-class macro F1, then mean per-task F1; rows without an 18-class score last."""
    return sorted(rows, key=lambda r: (r.scores.f1_18 is None, -(r.scores.f1_18 or 0.0), -np.mean(list(r.scores.f1.values()))))


def build_report(
    project: Project,
    sources: Sequence[str] | None = None,
    recipes: Sequence[Recipe] = (),
    methods: Sequence[Method] = (Method.SOFT,),
    per_task: bool = False,
    tie: Tie | str | None = None,
    replicates: int = REPLICATES,
) -> Report:
    """Score `sources` (default: every source with labelled predictions) and each recipe x method.

    tie: the hard votes' tie rule (`voting.Tie`; default mass); an error when no method is hard.
    replicates: person-bootstrap replicates for the rows' intervals (`evidence`; 0: none).
    """
    if tie is not None and Method.HARD not in methods:
        raise EnsError("--tie breaks the ties of a hard vote; add --method hard")
    tie = Tie(tie or Tie.MASS)
    notes = [f"hard votes break ties by {tie.value} (--tie)"] if tie is not Tie.MASS else []
    store = project.store
    recipes, sets = _scored_sources(project, sources, recipes, notes)
    labelled = labelled_scope(project, sets)
    if not project.competition.is_preset:
        return _declared_report(project, labelled, recipes, methods, tie, replicates, notes)
    ids, scope, more, aligned, labels = labelled.ids, labelled.scope, list(labelled.notes), labelled.sets, labelled.labels

    rows = []
    for n, s in aligned.items():
        own = own_prediction(s)
        rows.append(ReportRow(n, kind_of(s.meta), score(labels, own), prediction=own))
    single = best_single(rows)
    best = None if single is None else rows[single].scores.f1_18
    for recipe in recipes:
        target = recipe_target(project, recipe, notes)
        for method in methods:
            pipeline = Pipeline((combining(method, per_task=per_task, tie=tie if method is Method.HARD else None),)).with_companions(project)
            done = run(pipeline, labelled, target, Context(recipe, project))
            result = score(labels, done.scored.labels)  # learned methods: out of fold, person-grouped, on the same images
            gain = None if best is None else result.f1_18 - best
            rows.append(ReportRow(str(recipe), "recipe", result, str(method), gain, None if done.cv is None else done.cv.fold_std, done.scored.labels, steps=done.records))
    rows = [
        r if r.kind != "ensemble" or best is None or r.scores.f1_18 is None else replace(r, gain=r.scores.f1_18 - best)
        for r in rows
    ]
    rows, people = with_intervals(rows, labels, ids, replicates)
    notes += grouping_notes(project)
    truth = decode(labels)
    truth_priors = {t: np.bincount(truth[t], minlength=N_CLASSES[t]) / len(labels) for t in TASKS}
    return Report(best_first(rows), len(ids), scope, notes + more, truth_priors, estimated_priors(store, aligned), aligned, labels, people, replicates)


def recipe_target(project: Project, recipe: Recipe, notes: list[str]) -> dict[str, PredictionSet] | None:
    """The recipe's sources on eval, so that a report row runs exactly what `compose` runs (auto
    weighs candidates to the eval mix and drops run-aways); None, with a note, where a source
    has no eval predictions."""
    target, why = eval_target(project, recipe)
    if why is not None:
        notes.append(why)
    return target


def _scored_sources(project: Project, sources: Sequence[str] | None, recipes: Sequence[Recipe], notes: list[str]) -> tuple[list[Recipe], dict[str, PredictionSet]]:
    """The recipes, completed, and the labelled sets of the sources to score (`sources`, else
    every source with labelled predictions, and every recipe's); `notes` gets what was filled
    or skipped."""
    store = project.store
    known = store.sources()
    if recipes:
        coverage = project.coverage()
        recipes = [complete_recipe(r, coverage) for r in recipes]
        notes += [line for r in recipes for line in r.filled.values()]
    if sources:
        names = list(dict.fromkeys(sources))
    else:
        names = [n for n in known if any(store.has(n, split) for split in LABELLED_SPLITS)]
        skipped = [n for n in known if n not in names]
        if skipped:
            notes.append(f"no labelled predictions, not scored: {preview(skipped, 5)}")
    for recipe in recipes:
        names += [s for s in recipe.sources if s not in names]
    return list(recipes), load_labelled(store, names, known + list(project.model_names))


def _declared_report(project: Project, labelled: Labelled, recipes: Sequence[Recipe], methods: Sequence[Method], tie: Tie, replicates: int, notes: list[str]) -> Report:
    """`build_report` for a declared competition: every source and recipe x vote scored with
    its metric on the same labelled images, with intervals and paired gains over the best single
    source resampled by the declared group (`evidence.group_bootstrap`); learned methods (stack,
    select, auto) out of fold, with folds by group, on the same images."""
    from ..scoring.evidence import group_bootstrap
    from ..scoring.metrics import competition_rows

    competition = project.competition
    labels, metric = labelled.labels, str(competition.metric)
    rows, predictions = [], []  # per row: (probs, joint, decided) as competition_score takes them
    decided = lambda probs: {t: decide(p) for t, p in probs.items()}  # noqa: E731  (each row's classes, for the page's confusion matrices)
    for name, pset in labelled.sets.items():
        rows.append(ReportRow(name, kind_of(pset.meta), Scores({}, None, None, len(labels)), prediction=decided(pset.probs)))
        predictions.append((pset.probs, pset.joint, None))
    for recipe in recipes:
        target = recipe_target(project, recipe, notes)
        for method in methods:
            pipeline = Pipeline((combining(method, tie=tie if method is Method.HARD else None),)).with_companions(project)
            check_competition(competition, pipeline)
            done = run(pipeline, labelled, target, Context(recipe, project))
            spread = None if done.cv is None else done.cv.fold_std
            rows.append(ReportRow(str(recipe), "recipe", Scores({}, None, None, len(labels)), str(method), spread=spread, prediction=done.scored.space.decode(done.scored.labels), steps=done.records))
            predictions.append((done.scored.probs, done.scored.joint, done.scored.labels if competition.submission.answer is not None else None))  # its decisions: a vote's, a cut point's

    score_rows = competition_rows(competition, labels, predictions)
    sign = 1.0 if competition.metric.higher_is_better else -1.0
    values = score_rows(None)
    singles = [i for i, r in enumerate(rows) if r.kind not in ("recipe", "ensemble")]
    best = max(singles, key=lambda i: standing(values[i], sign > 0)) if singles else None
    found = group_bootstrap(score_rows, labelled.groups, best, replicates, higher_is_better=sign > 0) if replicates > 0 else None
    out = []
    for i, row in enumerate(rows):
        gain = None if best is None or i in singles else float(sign * (values[i] - values[best]))
        extra: dict[str, Any] = {"value": float(values[i]), "gain": gain}
        if found is not None:
            extra["interval"] = (float(found.low[i]), float(found.high[i]))
            if gain is not None:
                extra.update(gain_interval=(float(found.gain_low[i]), float(found.gain_high[i])), positive=float(found.positive[i]))
        out.append(replace(row, **extra))
    out.sort(key=lambda r: -standing(r.value, sign > 0))
    reference = None if best is None else rows[best].name
    return Report(out, len(labels), labelled.scope, notes + list(labelled.notes), sets=labelled.sets, labels=labels, people=labelled.people, replicates=replicates if found else 0, metric=metric, groups=labelled.groups, reference=reference)


def best_single(rows: Sequence[ReportRow]) -> int | None:
    """The index of the best single source (a model or an import, not a recipe or a saved
    ensemble) by 18-class F1, the reference of every gain; None when none has one."""
    singles = [i for i, r in enumerate(rows) if r.kind not in ("recipe", "ensemble") and r.scores.f1_18 is not None]
    return max(singles, key=lambda i: rows[i].scores.f1_18) if singles else None


def grouping_notes(project: Project) -> list[str]:
    """A line on the train grouping's agreement with the true persons, when `ens group --split
    train` has run (what `compose --by-person` is checked with)."""
    import json

    from ..pipeline.persons import Agreement, groups_paths

    path = groups_paths(project.root, "train")[1]
    if not path.is_file():
        return []
    found = json.loads(path.read_text()).get("agreement")
    return [f"train grouping (ens group, blind to the names) against the true persons: {Agreement(**found).line()}"] if found else []


def with_intervals(rows: list[ReportRow], labels: np.ndarray, image_ids: np.ndarray, replicates: int = REPLICATES) -> tuple[list[ReportRow], int]:
    """`rows` with person-bootstrap intervals (`evidence.bootstrap`) of their 18-class F1 and of
    their paired gain over the best single source; and the number of people resampled. Rows
    without an 18-class prediction keep none."""
    people = person_codes(image_ids)
    joint = {i: split_prediction(r.prediction)[1] for i, r in enumerate(rows) if r.prediction is not None}
    scored = [i for i, p in joint.items() if p is not None]
    if not scored or replicates <= 0:
        return rows, int(people.max()) + 1 if len(people) else 0
    reference = best_single(rows)
    found = bootstrap(labels, np.stack([joint[i] for i in scored]), people, None if reference is None else scored.index(reference), replicates)
    out = list(rows)
    for k, i in enumerate(scored):
        paired = None if reference is None or rows[i].gain is None else (float(found.gain_low[k]), float(found.gain_high[k]))
        out[i] = replace(rows[i], interval=(float(found.low[k]), float(found.high[k])), gain_interval=paired, positive=None if paired is None else float(found.positive[k]))
    return out, found.people


@dataclass(frozen=True)
class FinalPick:
    """One of the two final submissions `pick_final` proposes, and why."""

    row: ReportRow
    why: str


def pick_final(report: Report, replicates: int = REPLICATES) -> list[FinalPick]:
    """The two submissions to choose as final (`evidence.pick_two`): the row with the best
    18-class F1 on the scored images, and among the rows not worse than it by more than the
    noise the one whose errors correlate least with it (a near-copy of the first hedges
    nothing). Rows without an 18-class prediction take no part."""
    if report.metric is not None:
        raise EnsError(f"--pick: this version picks the final submissions of the mask competition only (this one is scored by {report.metric}); compare the rows' intervals")
    if report.labels is None:
        raise EnsError("the report carries no scored predictions (build it with build_report)")
    rows = [r for r in report.rows if r.prediction is not None and split_prediction(r.prediction)[1] is not None]
    if not rows:
        raise EnsError("no row predicts all three tasks: nothing to submit")
    predictions = np.stack([split_prediction(r.prediction)[1] for r in rows])
    ids = next(iter(report.sets.values())).image_ids
    pick = pick_two(report.labels, predictions, person_codes(ids), replicates)
    first = rows[pick.first]
    out = [FinalPick(first, f"the best 18-class F1 on these images, {first.scores.f1_18:.4f}")]
    copies = f"; skipped, deciding as the first on every image: {', '.join(rows[i].label for i in pick.copies)}" if pick.copies else ""
    if pick.second is None:
        return [FinalPick(first, out[0].why + copies + " (no other row to pick)")] if pick.copies else out
    second, (low, high) = rows[pick.second], pick.difference
    close = sorted((i for i in pick.within if i not in (pick.first, pick.second, *pick.copies)), key=lambda i: pick.correlation[i])
    near = [f"{rows[i].label} {pick.correlation[i]:.2f}" for i in close[:4]] + ([f"{len(close) - 4} more"] if len(close) > 4 else [])
    if pick.second in pick.within:
        why = (
            f"18-class F1 {second.scores.f1_18:.4f}, within the noise of the first (paired difference {second.scores.f1_18 - first.scores.f1_18:+.4f}, "
            f"90% CI {low:+.4f} to {high:+.4f}); its errors correlate {pick.correlation[pick.second]:.2f} with the first's, the least of the rows that close"
            + (f" (others: {', '.join(near)})" if near else "")
        )
    else:
        why = (
            f"the runner-up, 18-class F1 {second.scores.f1_18:.4f}: no other row is within the noise of the first "
            f"(paired difference 90% CI {low:+.4f} to {high:+.4f}); errors correlate {pick.correlation[pick.second]:.2f}"
        )
    return out + [FinalPick(second, why + copies)]
