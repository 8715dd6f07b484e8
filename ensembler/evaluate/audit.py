"""The train labels audited person by person (DESIGN.md §4, label audit and fixes).

A person's gender and age band are one label shared by seven photos, and the seven files'
mask states follow one rule (five worn, one worn incorrectly, one not worn). Image by image
(confident learning: Northcutt, Jiang and Chuang 2021, `cleanlab.filter.find_label_issues`)
neither is seen: a person is flagged image by image or not at all, and a swapped pair of files
is two unrelated doubts. Here each label is judged as it was given:

- **evidence**: every source's out-of-fold probabilities, calibrated out of fold first
  (temperature scaling, per source and task; `calibration.fit`), pooled per image as the
  weighted mean of their logs (a logarithmic opinion pool, Genest and Zidek 1986).
- **gender and age**: a person's photos together: the margin of the given class over each
  other, summed over the photos; since the photos of one person are far from independent, the
  margin is turned into a likelihood ratio by the margins the other people show (the
  two-groups model, `audit_person_task`). The probability that the label is wrong is then
  Bayes' rule with the label noise (`Noise`) as prior: for age, the prior knows the folder's
  age in years (an error is likelier 1 year from a band edge than 20 years from it, so 59
  called 60+ is told apart from 25 called 60+).
- **mask state**: the seven files' assignment as a whole: every assignment of the three states
  to the seven files (3^7), its likelihood the product of the files' calibrated evidence, its
  prior a small probability for another assignment that keeps the rule (a swapped pair) and a
  smaller one per file for one that breaks it (an `incorrect_mask` worn properly). A file's
  probability of being wrong is the posterior mass of the assignments that change it.

The findings are one row per label whose probability of being wrong reaches `REPORTED`;
`FLAG` is the default threshold (and `ens audit --accept`'s suggestion).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import logsumexp

from ..data.fixes import LabelFixes, append_fixes
from ..data.io import atomic_write, write_json
from ..data.labels import CLASS_NAMES, N_CLASSES, TASKS, Task, age_band, decode
from ..data.people import profile_of
from ..data.project import Project
from ..data.store import LABELLED_SPLITS
from ..errors import EnsError
from ..pipeline.calibration import Calibrator, fit
from ..pipeline.recipe import Recipe, complete_recipe
from ..pipeline.folds import Folds, filled, out_of_fold
from ..pipeline.scope import guard_leakage, labelled_scope, load_labelled

if TYPE_CHECKING:
    import pandas as pd

FLAG = 0.5  # a label at least this likely wrong is flagged
REPORTED = 0.1  # the findings table holds the labels at least this likely wrong
EPS = 1e-7
MAX_LOG_RATIO = 50.0  # a likelihood ratio beyond e^50 says nothing more (and far tails underflow)
CANONICAL = np.array([0, 0, 0, 0, 0, 1, 2])  # a person's files ordered by given mask state
ASSIGNMENTS = np.array(list(itertools.product(range(3), repeat=7)))  # (2187, 7)
AGE_EDGES = (30, 60)  # the first year of bands 1 and 2


@dataclass(frozen=True)
class Noise:
    """The prior of label errors (a team's published fixes put them at 0.3 to 1.5 % of images).

    person: a person's gender, or age band far from an edge, is wrong; near_edge: an age band
    is wrong at the edge itself, decaying by e every `edge_years` years away from it; swap: a
    person's mask files are assigned wrongly within the rule (a swapped pair); file: one more
    file's mask state is wrong, breaking the rule."""

    person: float = 0.01
    near_edge: float = 0.05
    edge_years: float = 2.0
    swap: float = 0.01  # half of it on the incorrect_mask / normal swap, the one teams report
    file: float = 0.002


@dataclass(frozen=True)
class Audit:
    """What `audit_labels` found.

    findings: one row a label (``profile, image, task, given, suggested, p_wrong, sources,
    of_sources, evidence``), sorted by `p_wrong`, descending; people: how many people were
    audited per task; problems: the data problems seen on the way (a person without seven
    images, a person id used by two folders)."""

    findings: pd.DataFrame
    people: dict[str, int]
    problems: list[str] = field(default_factory=list)

    def flagged(self, threshold: float = FLAG) -> pd.DataFrame:
        """The findings at least `threshold` likely wrong."""
        return self.findings[self.findings["p_wrong"] >= threshold]


# --- evidence -----------------------------------------------------------------------------------


def calibrated_logs(probs: Sequence[np.ndarray], given: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Each source's out-of-fold temperature-scaled log-probabilities ``(n, k)`` (`probs`: each
    ``(n, k)``, the temperature fitted against the `given` labels ``(n,)`` on the other folds'
    people: `calibration.fit`)."""
    out = []
    for p in probs:
        parts = out_of_fold(lambda rows, p=p: (lambda held, t=fit(Calibrator.TS, p[rows], given[rows]): t.apply(p[held])), folds)
        out.append(np.log(np.clip(filled(parts, len(given)), EPS, 1.0)))
    return out


def pooled(logs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of the sources' log-probabilities ``(n, k)``, renormalised per image."""
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    mean = sum(wi * li for wi, li in zip(w, logs))
    return mean - logsumexp(mean, axis=1, keepdims=True)


def log_density(at: np.ndarray, sample: np.ndarray, weights: np.ndarray, leave_out: np.ndarray | None = None) -> np.ndarray:
    """log of a weighted Gaussian kernel density of `sample` ``(m,)`` at `at` ``(t,)``, the
    bandwidth by Silverman's robust rule (the few wrong labels far out do not widen it), mixed
    with a share 1/m of one Gaussian three times as wide as the sample (a defensive mixture: a
    class of twenty people does not make its own tail impossible, one of a thousand hardly
    changes); `leave_out` ``(t,)``: the sample position of each point's own term, left out
    (-1: none)."""
    broad = 1 / (len(sample) + 1)
    w = np.clip(weights, 1e-12, None)
    w = w / w.sum()
    mean = float(np.sum(w * sample))
    spread = np.sqrt(float(np.sum(w * (sample - mean) ** 2)))
    q1, q3 = np.percentile(sample, [25, 75])
    robust = max(min(spread, (q3 - q1) / 1.34), 0.5)  # nats: closer margins are not told apart (and sure sources clip alike)
    h = 0.9 * robust * len(sample) ** -0.2
    z = (at[:, None] - sample[None, :]) / h
    terms = -0.5 * z**2 + np.log(w)[None, :]
    if leave_out is not None:
        own = leave_out >= 0
        terms[np.flatnonzero(own), leave_out[own]] = -np.inf
    top = terms.max(axis=1, keepdims=True)  # logsumexp by hand: scipy's checks cost more than the sum here
    top[~np.isfinite(top)] = 0.0
    with np.errstate(divide="ignore"):  # a class of one person, left out: no kernel, the broad part stands
        kernel = np.log(np.exp(terms - top).sum(axis=1)) + top[:, 0] - np.log(h * np.sqrt(2 * np.pi))
    wide = 3 * robust
    tail = -0.5 * ((at - float(np.median(sample))) / wide) ** 2 - np.log(wide * np.sqrt(2 * np.pi))
    return np.logaddexp(np.log(1 - broad) + kernel, np.log(broad) + tail)


def age_prior(years: np.ndarray, given: np.ndarray, noise: Noise) -> np.ndarray:
    """P(true band | the folder's age in years) ``(p, 3)``: the given band's 1 - error, the
    error rate `noise.person` plus `noise.near_edge` decaying with the years to the nearest
    edge, shared among the other bands by their distance in years."""
    years = np.asarray(years, dtype=np.float64)
    low = np.array([-np.inf, AGE_EDGES[0], AGE_EDGES[1]])
    high = np.array([AGE_EDGES[0] - 1, AGE_EDGES[1] - 1, np.inf])
    distance = np.maximum(0.0, np.maximum(low[None, :] - years[:, None], years[:, None] - high[None, :]))  # (p, 3) years into each band
    closeness = np.exp(-distance / noise.edge_years)
    closeness[np.arange(len(years)), given] = 0.0
    rate = noise.person + noise.near_edge * closeness.max(axis=1)
    share = closeness + 1e-3 * (closeness == 0)  # a band far away keeps a sliver of the error
    share[np.arange(len(years)), given] = 0.0
    out = rate[:, None] * share / share.sum(axis=1, keepdims=True)
    out[np.arange(len(years)), given] = 1 - rate
    return out


# --- the three tasks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Findings:
    """One task's findings: row per audited label, as arrays."""

    people: np.ndarray  # person index (p,)
    image: np.ndarray  # image row, or -1 for a person's label
    given: np.ndarray
    suggested: np.ndarray
    p_wrong: np.ndarray
    sources: np.ndarray  # sources whose own evidence points to `suggested`
    evidence: np.ndarray  # P(suggested) from the photos alone (person tasks) or the file's (mask)


def audit_person_task(task: Task, logs: Mapping[str, np.ndarray], weights: Mapping[str, float], given: np.ndarray, persons: np.ndarray, years: np.ndarray | None, noise: Noise, rounds: int = 4) -> _Findings:
    """A person label (gender, age): per person, the probability that the given class is wrong
    and the likeliest other. `logs`: each source's calibrated log-probabilities ``(n, k)``;
    `given` ``(n,)`` and `persons` ``(n,)`` (codes 0..p-1); `years` ``(n,)`` for age.

    A person's evidence for class c over class g is the margin sum_photos (log p_g - log p_c);
    the photos of one person are not independent, so the margin is not a likelihood ratio. Its
    distribution is learnt from the people instead (the two-groups model of Efron et al. 2001,
    the local false discovery rate): a person labelled g whose true class is c shows the margin
    a correctly labelled person of c shows over g, mirrored. So the likelihood ratio of "truly
    c" to "truly g" at margin d is f_cg(-d) / f_gc(d), the densities (Gaussian kernels) of the
    margins of the people labelled c and g; each person's own margin is left out, and the
    people likely wrong are weighted down in `rounds` of EM (a run of six wrong people in one
    class would otherwise vouch for each other)."""
    k, n_people = N_CLASSES[task], int(persons.max()) + 1
    first = np.unique(persons, return_index=True)[1]
    label = given[first]
    prior = np.bincount(label, minlength=k) / n_people
    prior = np.clip(prior, 1e-3, None) / np.clip(prior, 1e-3, None).sum()

    def summed(log_p: np.ndarray) -> np.ndarray:
        out = np.zeros((n_people, k))
        np.add.at(out, persons, log_p)
        return out

    evidence = summed(pooled(list(logs.values()), list(weights.values())))  # sum over the photos of log P(class | photo)
    if task is Task.AGE and years is not None:
        label_prior = age_prior(years[first], label, noise)  # P(true | the folder's years)
    else:
        as_given = np.arange(k)[None, :] == label[:, None]
        label_prior = np.where(as_given, 1 - noise.person, noise.person / (k - 1)) * prior[None, :]  # P(given | true) P(true)
        label_prior /= label_prior.sum(axis=1, keepdims=True)
    rows = np.arange(n_people)
    mean = evidence / np.bincount(persons, minlength=n_people)[:, None]  # the mean photo's say
    mean = np.exp(mean - logsumexp(mean, axis=1, keepdims=True))
    right = mean[rows, label]  # EM starts from what the mean photo says of the given class
    for _ in range(rounds):
        trusted = np.where(right > 0.5, 1.0, 1e-6)  # classification EM: a person more likely wrong than right does not vouch for its label
        log_post = np.log(label_prior)
        for g in range(k):
            mine = np.flatnonzero(label == g)
            if not len(mine):
                continue
            for c in range(k):
                theirs = np.flatnonzero(label == c)
                if c == g or not len(theirs):
                    continue
                d = evidence[mine, g] - evidence[mine, c]
                other = evidence[theirs, c] - evidence[theirs, g]
                # a margin surer than most of a class's is read as that class's 95th percentile:
                # beyond it, the ratio of two far tails would be noise (a sure source's clipped
                # probabilities put a wrong person further out than any right one)
                as_labelled = log_density(np.minimum(d, np.percentile(d, 95)), d, trusted[mine], np.arange(len(mine)))
                as_other = log_density(np.minimum(-d, np.percentile(other, 95)), other, trusted[theirs])
                order = np.argsort(-d, kind="stable")  # less evidence for the given class never makes it likelier right:
                log_lr = np.empty(len(d))  # far out, the ratio of two sparse tails is noise; the bulk's ratio bounds it from below
                log_lr[order] = np.maximum.accumulate(np.clip(as_other - as_labelled, -MAX_LOG_RATIO, MAX_LOG_RATIO)[order])
                log_post[mine, c] += log_lr
        post = np.exp(log_post - logsumexp(log_post, axis=1, keepdims=True))
        right = post[rows, label]
    p_wrong = 1 - right
    other = post.copy()
    other[rows, label] = -1
    suggested = other.argmax(axis=1)
    agree = sum((summed(log_p).argmax(axis=1) == suggested).astype(int) for log_p in logs.values())
    return _Findings(rows, np.full(n_people, -1), label, suggested, p_wrong, agree, mean[rows, suggested])


def _assignment_prior(noise: Noise) -> np.ndarray:
    """log P(assignment | the files' given states in `CANONICAL` order) ``(3^7,)``."""
    changed = (ASSIGNMENTS != CANONICAL).sum(axis=1)
    counts = np.stack([(ASSIGNMENTS == c).sum(axis=1) for c in range(3)], axis=1)
    keeps = (counts == [5, 1, 1]).all(axis=1)
    same = changed == 0
    out = np.where(keeps, np.log(noise.swap / 2 / max(int(keeps.sum()) - 2, 1)), changed * np.log(noise.file))
    swapped = (ASSIGNMENTS == np.array([0, 0, 0, 0, 0, 2, 1])).all(axis=1)
    out[swapped] = np.log(noise.swap / 2)
    out[same] = np.log(1 - noise.swap)
    return out


def audit_mask(logs: Mapping[str, np.ndarray], weights: Mapping[str, float], given: np.ndarray, persons: np.ndarray, noise: Noise, chunk: int = 512) -> tuple[_Findings, list[int]]:
    """Mask state, file by file through the person's assignment (module doc); people whose
    files are not five worn, one incorrect, one not worn (by their names) are judged file by
    file with the per-file prior. Returns the findings and the people judged file by file."""
    pool = pooled(list(logs.values()), list(weights.values()))
    prior = np.bincount(given, minlength=3) / len(given)
    ratio = pool - np.log(np.clip(prior, 1e-3, None))  # log-likelihood ratios (n, 3)
    order = np.lexsort((given, persons))
    counts = np.bincount(persons)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sevens = np.flatnonzero(counts == 7)
    rows = order[starts[sevens][:, None] + np.arange(7)]  # (q, 7) each person's files by given state
    whole = (given[rows] == CANONICAL).all(axis=1)
    rows, loose = rows[whole], sorted(set(range(len(counts))) - set(sevens[whole].tolist()))
    log_prior = _assignment_prior(noise)
    p_wrong = np.zeros(rows.shape)
    suggested = np.zeros(rows.shape, dtype=np.int64)
    for lo in range(0, len(rows), chunk):
        part = ratio[rows[lo : lo + chunk]]  # (c, 7, 3)
        scores = log_prior + part[:, np.arange(7), ASSIGNMENTS].sum(axis=2)  # (c, 2187)
        post = np.exp(scores - logsumexp(scores, axis=1, keepdims=True))
        marginal = np.stack([post @ (ASSIGNMENTS == c) for c in range(3)], axis=2)  # (c, 7, 3)
        p_wrong[lo : lo + chunk] = 1 - marginal[:, np.arange(7), CANONICAL]
        marginal[:, np.arange(7), CANONICAL] = -1
        suggested[lo : lo + chunk] = marginal.argmax(axis=2)
    image = rows.ravel()
    p_wrong, suggested = p_wrong.ravel(), suggested.ravel()
    if loose:  # file by file: P(wrong) from the file's own evidence and the per-file prior
        extra = np.flatnonzero(np.isin(persons, loose))
        z = ratio[extra] + np.log(np.where(np.arange(3)[None, :] == given[extra, None], 1 - 2 * noise.file, noise.file))
        post = np.exp(z - logsumexp(z, axis=1, keepdims=True))
        image = np.concatenate([image, extra])
        p_wrong = np.concatenate([p_wrong, 1 - post[np.arange(len(extra)), given[extra]]])
        post[np.arange(len(extra)), given[extra]] = -1
        suggested = np.concatenate([suggested, post.argmax(axis=1)])
    agree = sum((log_p[image].argmax(axis=1) == suggested).astype(int) for log_p in logs.values())
    return _Findings(persons[image], image, given[image], suggested, p_wrong, agree, np.exp(pool[image, suggested])), loose


# --- the audit -------------------------------------------------------------------------------------


def audit_labels(
    probs: Mapping[str, Mapping[Task, np.ndarray]],
    labels: Mapping[Task, np.ndarray],
    image_ids: np.ndarray,
    years: np.ndarray | None = None,
    weights: Mapping[Task, Mapping[str, float]] | None = None,
    noise: Noise = Noise(),
) -> Audit:
    """Audit the given labels of labelled images (module doc).

    probs: ``{source: {task: (n, k)}}`` out-of-fold probabilities (a source may cover some
    tasks); labels: ``{task: (n,)}`` the given classes; image_ids: ``(n,)`` paths under
    ``train/images`` (the folder is the person); years: ``(n,)`` the folder's age in years, or
    None; weights: ``{task: {source: weight}}`` (default: every source that covers the task,
    alike)."""
    import pandas as pd

    image_ids = np.asarray(image_ids, dtype=object)
    profiles = profile_of(image_ids)
    persons = np.unique(profiles, return_inverse=True)[1]  # a label belongs to a folder (two folders of one person id are two)
    folds = Folds.of(image_ids)
    first = np.unique(persons, return_index=True)[1]
    tables, people, problems = [], {}, []
    counts = np.bincount(persons)
    short = [profiles[first[p]] for p in np.flatnonzero(counts != 7)]
    if short:
        problems.append(f"{len(short)} people without seven labelled images: {', '.join(short[:5])}{' …' if len(short) > 5 else ''}")
    ids = pd.Series(profiles[first]).str.split("_").str[0].str.split("-").str[0]
    twice = ids[ids.duplicated(keep=False)]
    if len(twice):
        problems.append(f"{twice.nunique()} person id(s) used by two folders: {', '.join(sorted(profiles[first[twice.index]])[:6])}")
    for task in (Task.GENDER, Task.AGE, Task.MASK):
        chosen = dict((weights or {}).get(task) or {s: 1.0 for s, p in probs.items() if task in p})
        if not chosen or task not in labels:
            continue
        logs = dict(zip(chosen, calibrated_logs([probs[s][task] for s in chosen], labels[task], folds)))
        if task is Task.MASK:
            found, loose = audit_mask(logs, chosen, labels[task], persons, noise)
            if loose:
                problems.append(f"mask: {len(loose)} people judged file by file (not five worn, one incorrect, one not worn, or not seven files)")
        else:
            found = audit_person_task(task, logs, chosen, labels[task], persons, years, noise)
        people[task.value] = int(len(np.unique(found.people)))
        names = np.array(CLASS_NAMES[task], dtype=object)
        tables.append(pd.DataFrame({
            "profile": profiles[first[found.people]],
            "image": np.where(found.image >= 0, [image_ids[i].split("/", 1)[-1] if i >= 0 else "" for i in found.image], ""),
            "task": task.value,
            "given": names[found.given],
            "suggested": names[found.suggested],
            "p_wrong": np.round(found.p_wrong, 6),
            "sources": found.sources,
            "of_sources": len(chosen),
            "evidence": np.round(found.evidence, 4),
        }))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["profile", "image", "task", "given", "suggested", "p_wrong", "sources", "of_sources", "evidence"])
    table = table[table["p_wrong"] >= REPORTED].sort_values(["p_wrong", "profile", "image"], ascending=[False, True, True], kind="stable").reset_index(drop=True)
    return Audit(table, people, problems)


def years_of(image_ids: np.ndarray, given_age: np.ndarray) -> np.ndarray | None:
    """The folder's age in years per image ``(n,)`` (``000001_female_Asian_45`` -> 45), or None
    when a folder name carries none; where the given band disagrees with the years (an age fixed
    by the team), the middle of the given band stands in."""
    tail = [p.rsplit("_", 1)[-1] for p in profile_of(np.asarray(image_ids, dtype=object))]
    if not all(t.isdigit() for t in tail):
        return None
    years = np.array([int(t) for t in tail])
    return np.where(age_band(years) == given_age, years, np.array([22, 45, 70])[given_age])


@dataclass(frozen=True)
class LabelAudit:
    """`audit`'s answer: the findings (`Audit`), the sources and their weights per task, the
    scope line (which labelled images, how many people), and the fix file in force."""

    audit: Audit
    sources: dict[str, dict[str, float]]
    scope: str
    fixes: LabelFixes | None
    notes: list[str] = field(default_factory=list)

    @property
    def findings(self) -> pd.DataFrame:
        return self.audit.findings

    def record(self) -> dict[str, Any]:
        """The JSON written beside ``audit/train.csv``."""
        flagged = self.audit.flagged()
        return {
            "scope": self.scope,
            "sources": self.sources,
            "people": self.audit.people,
            "problems": self.audit.problems,
            "notes": self.notes,
            "threshold": FLAG,
            "flagged": {t.value: int((flagged["task"] == t.value).sum()) for t in TASKS},
            "label_fixes": None if self.fixes is None else self.fixes.describe(),
        }


def audit_sources(project: Project, recipe: Recipe | None = None) -> dict[Task, dict[str, float]]:
    """Per task, the sources audited and their weights: the recipe's (complete: a task it does
    not name takes its named sources that predict it), or every model and import with labelled
    predictions (compositions left out: they repeat their sources)."""
    if recipe is not None:
        recipe = complete_recipe(recipe, project.coverage())
        return {t: {term.source: term.weight for term in terms} for t, terms in recipe.tasks.items()}
    store = project.store
    out: dict[Task, dict[str, float]] = {t: {} for t in TASKS}
    for name in store.sources():
        split = next((s for s in LABELLED_SPLITS if store.has(name, s)), None)
        if split is None:
            continue
        meta = store.read_meta(name, split)
        if (meta.get("origin") or {}).get("type") == "ensemble":
            continue
        for task in meta.get("tasks", ()):
            out[Task(task)][name] = 1.0
    if not any(out.values()):
        raise EnsError("no source with labelled predictions to audit with (ens predict --split oof or val, or ens import a CSV with train rows)")
    return {t: w for t, w in out.items() if w}


def audit(project: Project, recipe: Recipe | None = None, noise: Noise = Noise()) -> LabelAudit:
    """Audit the project's train labels (module doc) from the labelled predictions of its
    sources (`audit_sources`): out of fold on every train image when every source has them,
    else the validation fold (`scope.labelled_scope`), with the label fixes in force applied
    (an accepted fix is not found again)."""
    if not project.competition.is_preset:
        project.require_data()  # refuses in one line: the audit knows the mask competition's persons only, so far
    weights = audit_sources(project, recipe)
    names = list(dict.fromkeys(s for w in weights.values() for s in w))
    store = project.store
    sets = load_labelled(store, names, store.sources())
    guard_leakage(project, sets)  # a label judged by a model that trained on it looks right: as a learned compose, refused
    labelled = labelled_scope(project, sets)
    ids = labelled.ids
    truth = decode(labelled.labels)
    probs = {name: dict(pset.probs) for name, pset in labelled.sets.items()}
    found = audit_labels(probs, truth, ids, years_of(ids, truth[Task.AGE]), weights, noise)
    notes = [n for n in labelled.notes]
    if not labelled.oof and project.folds.is_file():
        notes.append("not every source predicts every train image out of fold: only the scope above is audited (ens predict --split oof, ens import --oof for all)")
    scope = f"{labelled.scope}; audited {labelled.people} people"
    return LabelAudit(found, {t.value: w for t, w in weights.items()}, scope, project.fixes, notes)


def audit_dir(project: Project) -> Path:
    return project.root / "audit"


def write_audit(project: Project, result: LabelAudit) -> Path:
    """Write ``audit/train.csv`` (the findings, best first) and ``audit/train.json`` (scope,
    sources, people audited, data problems, fix file), each atomically. Returns the CSV's path."""
    folder = audit_dir(project)
    path = folder / "train.csv"
    with atomic_write(path) as handle:
        handle.write(result.findings.to_csv(index=False).encode())
    write_json(folder / "train.json", result.record())
    return path


def accept(project: Project, result: LabelAudit, threshold: float) -> tuple[Path, int]:
    """Append the findings with ``p_wrong >= threshold`` to the project's label-fix file (named
    by ``project.label_fixes``; absent: ``label_fixes.csv`` beside ``model_zoo.yaml``, named
    there), atomically; the team's own lines are kept and win. Returns the file and the number
    of fixes added."""
    from ..data.project import update_project

    if not 0 < threshold <= 1:
        raise EnsError(f"--accept {threshold}: a probability in (0, 1], e.g. 0.9")
    path = project.label_fixes or project.root / "label_fixes.csv"
    rows = [(r.profile, r.image, Task(r.task), CLASS_NAMES[Task(r.task)].index(r.suggested)) for r in result.findings.itertuples(index=False) if r.p_wrong >= threshold]
    added = append_fixes(path, rows)
    if project.label_fixes is None and path.is_file():
        update_project(project.zoo, label_fixes=path)
    return path, added


THUMB_HEIGHT = 128  # pixels: the page of 100 flagged people stays a few MB


def _thumbnail(path: Path) -> str | None:
    """The image at `path` as a small base64 JPEG, or None when it is not there or cannot be
    decoded (the page says so under it; a review page does not stop at one bad file)."""
    import base64
    import io

    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMB_HEIGHT * 2, THUMB_HEIGHT))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=75)
    except (OSError, UnidentifiedImageError):
        return None
    return base64.b64encode(buffer.getvalue()).decode()


def write_audit_html(project: Project, result: LabelAudit, path: Path, limit: int = 100) -> Path:
    """One self-contained page (thumbnails embedded; opens offline): the `limit` flagged people
    most likely wrong, each with its findings (given struck out, suggested) and its seven
    photos, a flagged file framed in red. Written atomically; replaces `path`."""
    from datetime import datetime, timezone

    from jinja2 import Environment, PackageLoader, select_autoescape

    from .. import __version__
    from ..data.dataset import TRAIN_IMAGES
    from ..data.labels import MASK_STEMS

    flagged = result.audit.flagged()
    order = list(dict.fromkeys(flagged["profile"]))
    images = project.data / TRAIN_IMAGES if project.data is not None else None
    mask_names = CLASS_NAMES[Task.MASK]
    people = []
    for profile in order[:limit]:
        rows = flagged[flagged["profile"] == profile]
        findings = rows.to_dict("records")
        marked = {f["image"]: f for f in findings if f["image"]}
        folder = images / profile if images is not None else None
        files = sorted(e.name for e in folder.iterdir() if e.is_file() and not e.name.startswith(".")) if folder is not None and folder.is_dir() else sorted(marked)
        photos = []
        for name in sorted(files, key=lambda n: (MASK_STEMS.get(Path(n).stem, 9), n)):
            stem = Path(name).stem
            label = mask_names[MASK_STEMS[stem]] if stem in MASK_STEMS else ""
            if name in marked:
                label = f"{marked[name]['given']} -> {marked[name]['suggested']}?"
            photos.append({"name": name, "data": _thumbnail(folder / name) if folder is not None else None, "flagged": name in marked, "label": label})
        people.append({"profile": profile, "findings": findings, "photos": photos})
    env = Environment(loader=PackageLoader("ensembler", "templates"), autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("audit.html.j2").render(
        title="ens audit: train labels likely wrong",
        scope=result.scope,
        shown=len(people),
        flagged=len(order),
        notes=result.notes + result.audit.problems,
        people=people,
        version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    path = Path(path)
    with atomic_write(path) as handle:
        handle.write(html.encode())
    return path
