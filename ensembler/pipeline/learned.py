"""Learned compositions, scored honestly: stacking and ensemble selection, person-grouped CV.

A composition fitted on the images it is scored on lies. Here every learned composition is
scored out of fold: the labelled images are split by person (all 7 images of a person on one
side, scikit-learn's GroupKFold), the meta-model is fitted on the other people and predicts
these; the score is that of the out-of-fold predictions, with its spread across folds. The
model applied to eval is then fitted on all the labelled images.

Stacking (`stack`): per task, a multinomial logistic regression on the log-probabilities of
the task's sources (optionally every task's, since age may depend on mask state), balanced
class weights on request (for macro F1). Ensemble selection (`select`): per task, weights for
the sources by greedy forward selection on macro F1, bagged over bootstrap resamples (`select_weights`).
Auto (`auto`) is model selection over whole compositions by the competition's score, the
out-of-fold 18-class macro F1: the recipe's soft vote (always a candidate) and geometric vote,
the per-task choice (per task, the best of each source alone, their soft vote, their selection
and their stack, by out-of-fold task macro F1), selection and stacking on every task, and, when every source carries the 18-way joint,
a stack on the joint (a weight per source and a bias per class, `calibration.fit_pool`). Every choice is made inside the CV loop (each fold is
predicted by the candidate that scored best on the other folds), so auto's score is honest too.

F1 tuning (`tune_f1`): per-class offsets added to a composition's log-probabilities (class 0 of
each task fixed at 0), found by coordinate ascent on the 18-class macro F1 of the labelled
images, and scored out of fold like the rest. An offset ``b`` is a weight ``exp(b)`` on the
probabilities, so the tuned composition is saved as re-weighted probabilities (`priors.reweight`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..data.labels import N_CLASSES, N_JOINT, TASKS, Task, decode, encode, joint_from_tasks, marginals
from ..data.people import person_folds
from ..data.stable import decide as decide_class
from ..data.stable import weighted_sum
from ..data.store import PredictionSet
from ..scoring.metrics import macro_f1
from .calibration import fit_pool
from .priors import reweight
from .recipe import Recipe, Term
from .voting import Composed, Method, check_coverage, combine

EPS = 1e-6


@dataclass(frozen=True)
class CVScore:
    """Out-of-fold 18-class macro F1 over all images, and its mean and spread across the folds."""

    f1_18: float
    fold_mean: float
    fold_std: float
    folds: int


def _parts(sets: Mapping[str, PredictionSet], recipe: Recipe, task: Task, cross_tasks: bool) -> list[np.ndarray]:
    """The task's inputs: each source's probabilities ``(n, k)`` for it (and for every task it
    covers with `cross_tasks`), in recipe order."""
    parts = []
    for term in recipe.tasks[task]:
        pset = sets[term.source]
        parts += [pset.probs[t] for t in (pset.tasks if cross_tasks else (task,))]
    return parts


def _stack_fit_predict(fit: list[np.ndarray], y: np.ndarray, new: list[np.ndarray], k: int, class_weight: str | None) -> np.ndarray:
    """Logistic regression on log-probabilities; a class absent from `y` gets probability 0."""
    from sklearn.linear_model import LogisticRegression

    def features(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.log(np.clip(p, EPS, None)) for p in parts], axis=1)

    present = np.unique(y)
    out = np.zeros((len(new[0]), k))
    if len(present) == 1:
        out[:, present[0]] = 1.0
        return out
    model = LogisticRegression(C=1.0, max_iter=2000, class_weight=class_weight).fit(features(fit), y)
    out[:, model.classes_] = model.predict_proba(features(new))
    return out


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
            scores = [macro_f1(y[rows], decide_class(current + p), k) for p in sample]
            best = int(np.argmax(scores))  # ties: the first source in recipe order
            counts[best] += 1
            current += sample[best]
        total += counts / counts.sum()
    return total / bags


def _fit_predict(method: Method, fit: list[np.ndarray], y: np.ndarray, new: list[np.ndarray], k: int, class_weight: str | None, weights: Sequence[float]) -> tuple[np.ndarray, np.ndarray | None]:
    """One task: the probabilities ``(m, k)`` for `new`, and the selection weights (select).

    soft fits nothing: the recipe-weighted mean of `new` (auto's single sources and votes)."""
    if method is Method.STACK:
        return _stack_fit_predict(fit, y, new, k, class_weight), None
    if method is Method.SELECT:
        chosen = select_weights(fit, y, k)
        return weighted_sum(chosen, new), chosen
    w = np.asarray(weights, dtype=np.float64)
    return weighted_sum(w / w.sum(), new), None


@dataclass(frozen=True)
class _Fitted:
    """One task's learned composition: on the targets ``(m, k)``, out of fold on the scored
    labelled images ``(n_kept, k)``, and the selection weights when selected."""

    target: np.ndarray
    oof: np.ndarray
    weights: np.ndarray | None
    consistent: np.ndarray | None = None  # auto: the chosen candidate's own out-of-fold predictions


FitPredict = Callable[[list[np.ndarray], np.ndarray, list[np.ndarray]], tuple[np.ndarray, np.ndarray | None]]


def _cross_fit(fit_predict: FitPredict, parts: list[np.ndarray], y: np.ndarray, targets: list[np.ndarray], k: int, keep: np.ndarray, splits: list) -> _Fitted:
    """Fit on all labelled images for the targets; fit on the other people of each fold for the
    scored ones (`keep`). `fit_predict(fit_parts, fit_labels, new_parts)` returns the new rows'
    probabilities ``(m, k)`` and any fitted weights."""
    target, chosen = fit_predict(parts, y, targets)
    kept, y_kept = [p[keep] for p in parts], y[keep]
    oof = np.zeros((len(y_kept), k))
    for fit_idx, held_idx in splits:
        oof[held_idx], _ = fit_predict([p[fit_idx] for p in kept], y_kept[fit_idx], [p[held_idx] for p in kept])
    return _Fitted(target, oof, chosen)


def _fit_task(method: Method, parts: list[np.ndarray], y: np.ndarray, targets: list[np.ndarray], k: int, class_weight: str | None, weights: Sequence[float], keep: np.ndarray, splits: list) -> _Fitted:
    """`method` on one task's parts, cross-fitted (`_cross_fit`)."""
    return _cross_fit(lambda fit, labels, new: _fit_predict(method, fit, labels, new, k, class_weight, weights), parts, y, targets, k, keep, splits)


@dataclass(frozen=True)
class Candidate:
    """One way `auto` may predict a task, with the task macro F1 of its out-of-fold predictions
    on the scored images and its spread (std) across the folds."""

    label: str
    f1: float
    spread: float

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "f1": round(self.f1, 4), "spread": round(self.spread, 4)}


def _nested_choice(names: Sequence[str], labels: Sequence[np.ndarray], y: np.ndarray, k: int, splits: list) -> tuple[list[Candidate], np.ndarray, int]:
    """Choose among candidates `names` by the macro F1 (over `k` classes) of their out-of-fold
    decisions `labels` (each ``(n,)``) on `y` ``(n,)``, with the choice inside the CV loop.

    Returns each candidate with its F1 and fold spread; for every image, the candidate chosen on the
    *other* folds' images (its row of the scored composition: choosing on the images scored would
    flatter the choice); and the candidate chosen on all images (the one applied to eval). Ties go
    to the first candidate, i.e. the simplest."""
    candidates = [
        Candidate(name, macro_f1(y, decided, k), float(np.std([macro_f1(y[held], decided[held], k) for _, held in splits])))
        for name, decided in zip(names, labels)
    ]
    per_row = np.zeros(len(y), dtype=np.int64)
    for fit_idx, held_idx in splits:
        per_row[held_idx] = int(np.argmax([macro_f1(y[fit_idx], decided[fit_idx], k) for decided in labels]))
    return candidates, per_row, int(np.argmax([c.f1 for c in candidates]))


def _auto_task(terms: tuple[Term, ...], parts: list[np.ndarray], y: np.ndarray, targets: list[np.ndarray], k: int, keep: np.ndarray, splits: list) -> tuple[_Fitted, list[Candidate], int, dict[str, float] | None, dict[Method, _Fitted]]:
    """Every candidate for one task: each source alone, and with several sources their soft vote,
    their ensemble selection and their stack. Returns the chosen candidate's predictions (its out-of-fold
    rows chosen fold by fold on the other folds' scores: the choice is cross-validated too), all
    candidates in the order tried, the index of the one chosen on all images, its weights, and
    the selection and the stack of all the task's sources (the source itself when it is alone),
    from which `learn` builds the whole-composition candidates "selection per task" and "stack per task"."""
    options: list[tuple[str, Method, list[int]]] = [(t.source, Method.SOFT, [i]) for i, t in enumerate(terms)]
    if len(terms) > 1:
        names, every = "+".join(map(str, terms)), list(range(len(terms)))
        options += [(f"soft vote {names}", Method.SOFT, every), (f"selection from {names}", Method.SELECT, every), (f"stack of {names}", Method.STACK, every)]
    fitted = [_fit_task(method, [parts[i] for i in idx], y, [targets[i] for i in idx], k, None, [terms[i].weight for i in idx], keep, splits) for _, method, idx in options]
    candidates, per_row, chosen = _nested_choice([label for label, _, _ in options], [decide_class(f.oof) for f in fitted], y[keep], k, splits)
    oof = np.stack([f.oof for f in fitted])[per_row, np.arange(len(per_row))]
    weights = fitted[chosen].weights
    named = None if weights is None else {terms[i].source: round(float(w), 4) for i, w in zip(options[chosen][2], weights)}
    by_method = {m: next((f for (_, om, idx), f in zip(options, fitted) if om is m and len(idx) == len(terms)), fitted[0]) for m in (Method.SELECT, Method.STACK)}
    return _Fitted(fitted[chosen].target, oof, None, fitted[chosen].oof), candidates, chosen, named, by_method


@dataclass(frozen=True)
class _Whole:
    """One of auto's 18-class candidates: its composition of the targets, its out-of-fold
    composition of the scored labelled images (`scored`, what its F1 is taken on) and what a step
    fitted after it must see (`consistent`: the same as `scored` except for per-task auto)."""

    label: str
    target: Composed
    scored: Composed
    consistent: Composed


def _joint_stack(recipe: Recipe, labelled: Mapping[str, PredictionSet], labels: np.ndarray, targets: Mapping[str, PredictionSet], keep: np.ndarray, splits: list) -> _Whole:
    """A stack on the 18-way joint of every source of the recipe: a weight per source and a bias
    per class on their log-probabilities (`calibration.fit_pool`), fitted on all the labelled
    images for the targets and on the other people of each fold for the scored ones."""
    sources = list(recipe.sources)
    ids, target_ids = next(iter(labelled.values())).image_ids, next(iter(targets.values())).image_ids
    pool = lambda fit, y, new: (fit_pool(fit, y).apply(new), None)  # noqa: E731
    run = _cross_fit(pool, [labelled[s].joint for s in sources], labels, [targets[s].joint for s in sources], N_JOINT, keep, splits)
    scored = Composed.decided(ids[keep], marginals(run.oof), run.oof, "auto")
    return _Whole(f"stack of {'+'.join(sources)} on the 18-way joint", Composed.decided(target_ids, marginals(run.target), run.target, "auto"), scored, scored)


def _auto_whole(recipe: Recipe, labelled: Mapping[str, PredictionSet], labels: np.ndarray, targets: Mapping[str, PredictionSet], keep: np.ndarray, splits: list, per_task: Sequence[_Whole]) -> tuple[_Whole, dict[str, Any]]:
    """Auto's final choice, by out-of-fold **18-class** macro F1 (the competition's score), inside
    the CV loop: the recipe's soft vote (always a candidate: auto must not lose to it) and
    geometric vote (on the joint when every source carries it, as `combine` does), the per-task
    candidates (`per_task`: the per-task choice, the selection and the stack per task) and, when
    every source carries the joint, the stack on the joint."""
    candidates = []
    for vote in (Method.SOFT, Method.GEO):
        on_labelled = combine(recipe, labelled, vote)
        scored = on_labelled.take(np.flatnonzero(keep))
        label = f"{vote.value} vote {'+'.join(recipe.sources)}" + (" (18-way joint)" if on_labelled.mode == "joint" else " (per task)")
        candidates.append(_Whole(label, combine(recipe, targets, vote), scored, scored))
    candidates += per_task
    if all(labelled[s].joint is not None for s in recipe.sources):
        candidates.append(_joint_stack(recipe, labelled, labels, targets, keep, splits))
    y = labels[keep]
    scores, per_row, chosen = _nested_choice([c.label for c in candidates], [c.scored.labels for c in candidates], y, N_JOINT, splits)
    rows = np.arange(len(y))
    probs = {t: np.stack([c.scored.probs[t] for c in candidates])[per_row, rows] for t in TASKS}
    decided = np.stack([c.scored.labels for c in candidates])[per_row, rows]
    best = candidates[chosen]
    joint = None
    if best.target.joint is not None:  # the scored set carries a joint as eval's does (a per-task row: the product of its marginals, same argmax)
        joint = np.stack([c.scored.joint if c.scored.joint is not None else joint_from_tasks(c.scored.probs) for c in candidates])[per_row, rows]
    scored = Composed(best.scored.image_ids, decided, probs, joint, "auto")
    record = {"chosen": best.label, "candidates": [c.as_dict() for c in scores]}
    return _Whole(best.label, best.target, scored, best.consistent), record


def _cv_score(labels: np.ndarray, predicted: np.ndarray, splits: list) -> CVScore:
    """The 18-class macro F1 of out-of-fold `predicted` ``(n,)`` over all images and per fold."""
    per_fold = [macro_f1(labels[held], predicted[held], N_JOINT) for _, held in splits]
    return CVScore(macro_f1(labels, predicted, N_JOINT), float(np.mean(per_fold)), float(np.std(per_fold)), len(splits))


def learn(
    recipe: Recipe,
    labelled: Mapping[str, PredictionSet],
    labels: np.ndarray,
    targets: Mapping[str, PredictionSet],
    method: Method = Method.STACK,
    class_weight: str | None = None,
    cross_tasks: bool = False,
    score_ids: np.ndarray | None = None,
) -> tuple[Composed, Composed, CVScore, dict[str, Any] | None]:
    """Fit `method` (stack, select or auto) per task on `labelled` (aligned sets, joint labels
    ``(n,)``) and apply it to `targets` (aligned sets, e.g. eval).

    Returns the composition of `targets`; the out-of-fold composition of the labelled images
    restricted to `score_ids` (default: all) and its cross-validated score; and what was chosen
    on all the labelled images: ``{"weights": {task: {source: weight}}}`` for select (and for
    auto where it selected), for auto ``{"auto": {"chosen": label, "candidates": [...], "tasks":
    {task: {"chosen": label, "candidates": [...]}}}}`` (the 18-class choice, `_auto_whole`, among
    whose candidates is the per-task one, `_auto_task`), and ``"consistent"``: the out-of-fold composition of the candidates chosen on all
    images (the scored one switches candidate fold by fold, which is right for its score and
    wrong for anything fitted on it to apply to eval).
    """
    import pandas as pd

    method = Method(method)
    check_coverage(recipe, labelled)
    ids = next(iter(labelled.values())).image_ids
    keep = np.ones(len(ids), bool) if score_ids is None else pd.Index(ids).isin(score_ids)
    splits = person_folds(ids[keep])
    truth = decode(labels)
    oof, fitted, weights, auto, consistent = {}, {}, {}, {}, {}
    per_method: dict[Method, dict[Task, _Fitted]] = {}  # auto: each task's selection and stack, for the whole candidates
    for task in TASKS:
        k, y = N_CLASSES[task], truth[task]
        use_cross = cross_tasks and method is Method.STACK
        parts, target_parts = _parts(labelled, recipe, task, use_cross), _parts(targets, recipe, task, use_cross)
        terms = recipe.tasks[task]
        if method is Method.AUTO:
            run, candidates, chosen, named, by_method = _auto_task(terms, parts, y, target_parts, k, keep, splits)
            auto[task.value] = {"chosen": candidates[chosen].label, "candidates": [c.as_dict() for c in candidates]}
            for m, f in by_method.items():
                per_method.setdefault(m, {})[task] = f
        else:
            run = _fit_task(method, parts, y, target_parts, k, class_weight, [t.weight for t in terms], keep, splits)
            named = None if run.weights is None else {t.source: round(float(w), 4) for t, w in zip(terms, run.weights)}
        fitted[task], oof[task] = run.target, run.oof
        consistent[task] = run.oof if run.consistent is None else run.consistent
        if named:
            weights[task.value] = named

    target_ids = next(iter(targets.values())).image_ids
    target = Composed.decided(target_ids, fitted, None, method.value)
    scored = Composed.decided(ids[keep], oof, None, method.value)
    details: dict[str, Any] = {"weights": weights} if weights else {}
    if method is Method.AUTO:
        tasks = ", ".join(f"{t} {auto[t.value]['chosen']}" for t in TASKS)
        per_task = [_Whole(f"per task: {tasks}", target, scored, Composed.decided(ids[keep], consistent, None, method.value))]
        for m, runs in per_method.items():
            label = {Method.SELECT: "selection per task", Method.STACK: "stack per task"}[m]
            oof_m = Composed.decided(ids[keep], {t: r.oof for t, r in runs.items()}, None, method.value)
            per_task.append(_Whole(label, Composed.decided(target_ids, {t: r.target for t, r in runs.items()}, None, method.value), oof_m, oof_m))
        whole, details["auto"] = _auto_whole(recipe, labelled, labels, targets, keep, splits, per_task)
        details["auto"]["tasks"] = auto
        if whole.label != per_task[0].label:
            details.pop("weights", None)  # the per-task selections are not what eval gets
        target, scored = replace(whole.target, mode=method.value), whole.scored
        details["consistent"] = whole.consistent  # what a step fitted after auto (calibration, priors) must see: the pipeline eval gets
    return target, scored, _cv_score(labels[keep], scored.labels, splits), details or None


# --- F1 tuning: per-class offsets on a composition's log-probabilities --------------------

OFFSET_GRID = np.round(np.linspace(-2.0, 2.0, 41), 2)  # log-weights: exp(2) ~ 7.4 times a class's probability
TUNE_PASSES = 3


def _joint_offsets(offsets: Mapping[Task, np.ndarray]) -> np.ndarray:
    """Per-task offsets -> the 18 joint classes' offsets ``(18,)`` (their sums)."""
    m, g, a = (offsets[t] for t in TASKS)
    return (m[:, None, None] + g[None, :, None] + a[None, None, :]).reshape(-1)


def _logs(composed: Composed) -> tuple[dict[Task, np.ndarray], np.ndarray | None]:
    clip = lambda p: np.log(np.clip(p, EPS, None))  # noqa: E731
    return {t: clip(composed.probs[t]) for t in TASKS}, None if composed.joint is None else clip(composed.joint)


def decide(logs: Mapping[Task, np.ndarray], joint_log: np.ndarray | None, offsets: Mapping[Task, np.ndarray]) -> np.ndarray:
    """Joint classes ``(n,)`` from log-probabilities plus offsets: on the joint ``(n, 18)`` when
    there is one (as the vote decided), else per task ``{task: (n, k)}``."""
    if joint_log is not None:
        return decide_class(joint_log + _joint_offsets(offsets))
    return encode(*(decide_class(logs[t] + offsets[t]) for t in TASKS))


def tune_offsets(logs: Mapping[Task, np.ndarray], joint_log: np.ndarray | None, labels: np.ndarray) -> dict[Task, np.ndarray]:
    """Offsets ``{task: (k,)}`` that maximise the 18-class macro F1 of `decide` on `labels`
    ``(n,)``: coordinate ascent over `OFFSET_GRID`, class 0 of each task held at 0, a move kept
    only when it strictly improves (so uninformative data leaves the offsets at 0)."""
    offsets = {t: np.zeros(N_CLASSES[t]) for t in TASKS}
    best = macro_f1(labels, decide(logs, joint_log, offsets), N_JOINT)
    for _ in range(TUNE_PASSES):
        improved = False
        for task in TASKS:
            for c in range(1, N_CLASSES[task]):
                for value in OFFSET_GRID:
                    trial = {**offsets, task: offsets[task].copy()}
                    trial[task][c] = value
                    f1 = macro_f1(labels, decide(logs, joint_log, trial), N_JOINT)
                    if f1 > best + 1e-12:
                        best, offsets, improved = f1, trial, True
        if not improved:
            break
    return offsets


def apply_offsets(composed: Composed, offsets: Mapping[Task, np.ndarray]) -> Composed:
    """`composed` with its probabilities re-weighted by ``exp(offsets)``: its argmax is `decide`'s."""
    ratios = {t: np.exp(offsets[t]) for t in TASKS}
    probs, joint = reweight(composed.probs, ratios, composed.joint)
    return Composed.decided(composed.image_ids, probs, joint, composed.mode)


@dataclass(frozen=True)
class Tuned:
    """F1 tuning's offsets (fitted on all labelled images), the out-of-fold tuned composition of
    the labelled images, and the cross-validated scores before and after."""

    offsets: dict[Task, np.ndarray]
    scored: Composed
    before: CVScore
    after: CVScore

    def as_dict(self) -> dict[str, Any]:
        return {
            "offsets": {t.value: self.offsets[t].round(2).tolist() for t in TASKS},
            "folds": self.after.folds,
            "f1_18_before": self.before.f1_18,
            "f1_18_after": self.after.f1_18,
            "f1_18_fold_std_after": self.after.fold_std,
        }


def tune_f1(composed: Composed, labels: np.ndarray) -> Tuned:
    """Tune offsets on a labelled composition (`composed`, joint labels ``(n,)``), scored by
    person-grouped cross-validation: each fold is decided with offsets tuned on the other people."""
    logs, joint_log = _logs(composed)
    splits = person_folds(composed.image_ids)
    probs = {t: np.empty_like(v, dtype=np.float64) for t, v in composed.probs.items()}
    joint = None if composed.joint is None else np.empty_like(composed.joint, dtype=np.float64)
    for fit_idx, held_idx in splits:
        offsets = tune_offsets({t: v[fit_idx] for t, v in logs.items()}, None if joint_log is None else joint_log[fit_idx], labels[fit_idx])
        part = apply_offsets(composed.take(held_idx), offsets)
        for t in probs:
            probs[t][held_idx] = part.probs[t]
        if joint is not None:
            joint[held_idx] = part.joint
    scored = Composed.decided(composed.image_ids, probs, joint, composed.mode)
    return Tuned(tune_offsets(logs, joint_log, labels), scored, _cv_score(labels, composed.labels, splits), _cv_score(labels, scored.labels, splits))
