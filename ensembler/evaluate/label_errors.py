"""The model of label errors both audits share (`audit`: the mask competition's, person by
person; `audit_declared`: a declared competition's, image by image and group by group).

- **evidence**: every source's out-of-fold probabilities, calibrated out of fold first
  (temperature scaling, per source and task; `calibration.fit`), pooled per image as the
  weighted mean of their logs (a logarithmic opinion pool, Genest and Zidek 1986);
- **a unit's label** (a person's gender, a patient's diagnosis, an image's own class): the
  margins of its rows summed, turned into a likelihood ratio by the margins the other units
  show (the two-groups model, `judge_units`), then Bayes' rule with the rate of label errors
  (`Noise`) as prior.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import logsumexp

from ..pipeline.calibration import Calibrator, fit
from ..pipeline.folds import filled, out_of_fold

if TYPE_CHECKING:
    import pandas as pd

FLAG = 0.5  # a label at least this likely wrong is flagged
REPORTED = 0.1  # the findings table holds the labels at least this likely wrong
EPS = 1e-7
ALTERNATIVES = 5  # a unit is weighed against its likeliest other classes, at most this many (the rest: no evidence for them)
RATE_BOUNDS = (0.002, 0.2)  # a learnt rate of label errors stays within these
RATE_SHRINK = 300.0  # a given class's learnt rate of errors weighs the flat model's as this many units (`judge_units`; bench/audit.py --declared)
SIZE_POWER = 0.75  # units of different sizes are compared by their summed evidence over their rows to this power (`judge_units`' by_size)
MAX_LOG_RATIO = 50.0  # a likelihood ratio beyond e^50 says nothing more (and far tails underflow)

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
    """What an audit found (`audit.audit_labels`, `audit_declared.audit_images`).

    findings: one row a label (``profile, image, task, given, suggested, p_wrong, sources,
    of_sources, evidence``; a declared competition's ``image, group, …``), sorted by
    `p_wrong`, descending; people: how many people (images, groups) were audited per task;
    problems: what a reader must know before trusting the findings (a person without seven
    images, a person id used by two folders; a declared task whose evidence is too faint for
    its flags, `audit_declared.faint`); rates: per task, the rate of label errors learnt
    (declared competitions; `judge_units`' `learn_rate`), the mean over its labels;
    class_rates: per task and given class (its name), the rate learnt for the labels that name
    it; disagree: per task, the share of its labels (images, groups) whose sources' pooled
    evidence favours another class (declared competitions); confident: per two-class task
    judged image by image, how many of its labels confident learning counts wrong, which its
    flags do not outnumber (`audit_declared.at_most`)."""

    findings: pd.DataFrame
    people: dict[str, int]
    problems: list[str] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)
    class_rates: dict[str, dict[str, float]] = field(default_factory=dict)
    disagree: dict[str, float] = field(default_factory=dict)
    confident: dict[str, float] = field(default_factory=dict)

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


def sample_quantiles(sample: np.ndarray) -> tuple[float, float, float]:
    """The quartiles and median of `sample` ``(m,)`` that `log_density` reads (unweighted)."""
    q1, q3 = np.percentile(sample, [25, 75])
    return float(q1), float(q3), float(np.median(sample))


def log_density(at: np.ndarray, sample: np.ndarray, weights: np.ndarray, leave_out: np.ndarray | None = None, quantiles: tuple[float, float, float] | None = None) -> np.ndarray:
    """log of a weighted Gaussian kernel density of `sample` ``(m,)`` at `at` ``(t,)``, the
    bandwidth by Silverman's robust rule (the few wrong labels far out do not widen it), mixed
    with a share 1/m of one Gaussian three times as wide as the sample (a defensive mixture: a
    class of twenty people does not make its own tail impossible, one of a thousand hardly
    changes); `leave_out` ``(t,)``: the sample position of each point's own term, left out
    (-1: none); `quantiles`: `sample_quantiles(sample)` when the caller kept them."""
    broad = 1 / (len(sample) + 1)
    q1, q3, median = quantiles or sample_quantiles(sample)
    w = np.clip(weights, 1e-12, None)
    w = w / w.sum()
    mean = float(np.sum(w * sample))
    spread = np.sqrt(float(np.sum(w * (sample - mean) ** 2)))
    robust = max(min(spread, (q3 - q1) / 1.34), 0.5)  # nats: closer margins are not told apart (and sure sources clip alike)
    h = 0.9 * robust * len(sample) ** -0.2
    z = (at[:, None] - sample[None, :]) / h
    kernels = np.exp(-0.5 * z * z)  # (t, m); a point past 37 bandwidths from every sample point gets none, and the broad part stands
    if leave_out is not None:
        own = leave_out >= 0
        kernels[np.flatnonzero(own), leave_out[own]] = 0.0
    with np.errstate(divide="ignore"):  # a class of one person, left out: no kernel, the broad part stands
        kernel = np.log(kernels @ w) - np.log(h * np.sqrt(2 * np.pi))
    wide = 3 * robust
    tail = -0.5 * ((at - median) / wide) ** 2 - np.log(wide * np.sqrt(2 * np.pi))
    return np.logaddexp(np.log(1 - broad) + kernel, np.log(broad) + tail)



@dataclass(frozen=True)
class Findings:
    """One task's findings: row per audited label, as arrays."""

    people: np.ndarray  # person index (p,)
    image: np.ndarray  # image row, or -1 for a person's label
    given: np.ndarray
    suggested: np.ndarray
    p_wrong: np.ndarray
    sources: np.ndarray  # sources whose own evidence points to `suggested`
    evidence: np.ndarray  # P(suggested) from the photos alone (person tasks) or the file's (mask)
    rate: float = float("nan")  # the rate of label errors the prior took (learnt, or given)
    class_rates: np.ndarray | None = None  # (k,) the learnt rate of errors per given class (`judge_units`' learn_rate)
    disagree: float = float("nan")  # the share of units whose pooled evidence favours another class than the given one
    odds: np.ndarray | None = None  # log(p_wrong / (1 - p_wrong)), exact where p_wrong rounds to 1


def judge_units(logs: Mapping[str, np.ndarray], weights: Mapping[str, float], given: np.ndarray, units: np.ndarray, n_classes: int, noise: Noise = Noise(), label_prior: np.ndarray | None = None, rounds: int = 4, learn_rate: bool = False, by_size: bool = False, vouch: float = 0.5, versus_rest: bool = False) -> Findings:
    """A label the rows of a unit share (a person's gender, a patient's diagnosis; an image's
    own label is a unit of one row): per unit, the probability that the given class is wrong
    and the likeliest other. `logs`: each source's calibrated log-probabilities ``(n, k)``;
    `given` ``(n,)`` (one class per unit) and `units` ``(n,)`` (codes 0..u-1); `label_prior`
    ``(u, k)``: P(true class | what the label says) where more is known than the flat error
    rate `noise.person` (None: that rate, shared by the other classes by their share);
    `learn_rate`: the rate is learnt in the rounds of EM instead, for a competition whose rate
    of label errors nobody has published: per given class, as the mean probability of being
    wrong of the units that carry it (a row of the noise matrix P(true | given), as confident
    learning's confident joint estimates it: Northcutt, Jiang and Chuang 2021), shrunk toward
    what the pooled mean rate implies for that class under the flat model by `RATE_SHRINK`
    units (empirical Bayes: a class of few units keeps the flat model, a large one its own
    rate; real noise is not symmetric: a multi-label finding's errors are mostly missing
    positives, which the flat model, putting a rare class's labels at many times the rate of a
    common one's, misses); `noise.person` the start, every rate within `RATE_BOUNDS`;
    `by_size`: units of different sizes (patients of 1 to 8 images) are compared by their
    summed evidence over their rows to the power `SIZE_POWER` (independent rows' sums spread as
    the square root of their count, one row repeated as the count; a patient's images, alike,
    lie between: at 0.5 a large patient's sum spreads past what the pooled density expects and
    is flagged over-confidently, bench/audit.py --declared; the mask competition's people, all
    seven photos, keep the plain sum); `vouch`: how likely
    right a unit must be to count in its labelled class's densities (0.5: the likelier
    reading, classification EM; higher: only the surely right, a trimmed fit of the densities);
    `versus_rest`: a unit is judged by the given class's log-odds against all the others (its
    rows' ``log p_g - log(1 - p_g)`` summed) instead of its margin over each other class: for
    "truly c", the density of that statistic among the units of c (no mirroring); the
    suggestion is then the other class its own rows favour most. With more than two classes
    and rows that each say little, the margin over one other class carries that class's noise
    where the log-odds against all of them averages it out (bench/audit.py --declared: a
    patient's faint images; the ranking cleanlab's self-confidence takes, the given class's
    probability, gains the same way); with two classes the two are one statistic.

    A unit's evidence for class c over class g is the margin sum_rows (log p_g - log p_c); the
    rows of one unit are not independent (a person's photos), so the margin is not a
    likelihood ratio. Its distribution is learnt from the units instead (the two-groups model
    of Efron et al. 2001, the local false discovery rate): a unit labelled g whose true class is
    c shows the margin a correctly labelled unit of c shows over g, mirrored. So the likelihood
    ratio of "truly c" to "truly g" at margin d is f_cg(-d) / f_gc(d), the densities (Gaussian
    kernels) of the margins of the units labelled c and g; each unit's own margin is left out,
    and the units likely wrong are weighted down in `rounds` of EM (a run of six wrong people
    in one class would otherwise vouch for each other). With more than `ALTERNATIVES` + 1
    classes, a unit is weighed against its `ALTERNATIVES` likeliest other classes by its
    evidence, and the others get no likelihood (a 50-class audit of 20,000 images would weigh
    49 classes a unit, nearly all of them hopeless; the densities still learn from every unit)."""
    k, n_units = n_classes, int(units.max()) + 1
    first = np.unique(units, return_index=True)[1]
    label = given[first]
    prior = np.bincount(label, minlength=k) / n_units
    prior = np.clip(prior, 1e-3, None) / np.clip(prior, 1e-3, None).sum()

    def summed(log_p: np.ndarray) -> np.ndarray:
        if len(first) == len(units):  # a unit a row: nothing to add up
            return log_p[np.argsort(units, kind="stable")]
        out = np.zeros((n_units, k))
        np.add.at(out, units, log_p)
        return out

    log_p = pooled(list(logs.values()), list(weights.values()))
    evidence = summed(log_p)  # sum over the unit's rows of log P(class | row)
    sizes = np.bincount(units, minlength=n_units)
    scale = (sizes ** SIZE_POWER)[:, None] if by_size else 1.0
    margins = evidence / scale  # what the units' margins are taken from
    if versus_rest:  # each class's log-odds against the rest, summed over the unit's rows (u, k)
        odds = summed(log_p - np.log1p(-np.clip(np.exp(log_p), None, 1 - EPS))) / scale
    as_given = np.arange(k)[None, :] == label[:, None]

    def by_given(rates: np.ndarray) -> np.ndarray:
        # P(true | given) (u, k): the given class 1 - its rate, the rest to the other classes by their share
        others = np.where(as_given, 0.0, prior[None, :])
        others /= others.sum(axis=1, keepdims=True)
        r = rates[label][:, None]
        return np.where(as_given, 1 - r, r * others)

    def implied(rate: float) -> np.ndarray:
        # P(wrong | given class) (k,) under the flat model: a true class's label flips to each
        # other class alike with `rate` in all, P(given | true) P(true) by Bayes' rule
        kept = (1 - rate) * prior
        flips = rate * (1 - prior) / (k - 1)
        return flips / (flips + kept)

    def flat(rate: float) -> np.ndarray:
        return by_given(implied(rate))

    def per_class(wrong: np.ndarray, pooled_rate: float) -> np.ndarray:
        # each given class's rate of errors (wrong: (u,) each unit's probability of being
        # wrong), shrunk toward the flat model's by RATE_SHRINK units
        count = np.bincount(label, minlength=k)
        return np.clip((np.bincount(label, weights=wrong, minlength=k) + RATE_SHRINK * implied(pooled_rate)) / (count + RATE_SHRINK), *RATE_BOUNDS)

    learn_rate = learn_rate and label_prior is None
    rate, class_rates = noise.person, None
    if label_prior is None:
        label_prior = flat(rate)
    rows = np.arange(n_units)
    mean = evidence / sizes[:, None]  # the mean row's say
    mean = np.exp(mean - logsumexp(mean, axis=1, keepdims=True))
    right = mean[rows, label]  # EM starts from what the mean row says of the given class
    alternatives = None
    if k - 1 > ALTERNATIVES:
        ranked = margins.copy()
        ranked[rows, label] = -np.inf
        alternatives = np.argpartition(-ranked, ALTERNATIVES - 1, axis=1)[:, :ALTERNATIVES]  # (u, A)
    members = [np.flatnonzero(label == g) for g in range(k)]
    # per class g: its units' margins for g over every class (versus the rest: each class's
    # log-odds) ``(n_g, k)``, and per column the quartiles, median, 95th and 5th percentiles
    # (one call a class, not three a pair of classes)
    over: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for g, mine in enumerate(members):
        if len(mine):
            m = odds[mine] if versus_rest else margins[mine, g][:, None] - margins[mine]
            over[g] = m, np.vstack([np.percentile(m, [25, 75], axis=0), np.median(m, axis=0)[None], np.percentile(m, [95, 5], axis=0)])
    pairs = []  # what every round reads of each pair of classes (g labelled, c the alternative)
    for g, mine in enumerate(members):
        for c, theirs in enumerate(members):
            if c == g or not len(mine) or not len(theirs):
                continue
            at = np.arange(len(mine)) if alternatives is None else np.flatnonzero((alternatives[mine] == c).any(axis=1))
            # d: the statistic of g's units (their margin of g over c, or g's log-odds); other:
            # what c's units show of it (their margin of c over g, mirrored at reading; or the
            # same log-odds of g)
            d, other = over[g][0][:, g if versus_rest else c], over[c][0][:, g]
            mine_q, other_q = over[g][1][:, g if versus_rest else c], over[c][1][:, g]
            # a margin surer than most of a class's is read as that class's 95th percentile
            # (versus the rest: a log-odds of g lower than most of c's units show, as their 5th):
            # beyond it, the ratio of two far tails would be noise (a sure source's clipped
            # probabilities put a wrong person further out than any right one)
            if not len(at):
                points = None
            elif versus_rest:  # g's own density is read from `whole`
                points = (None, np.maximum(d[at], other_q[4]))
            else:
                points = (np.minimum(d[at], mine_q[3]), np.minimum(-d[at], other_q[3]))
            pairs.append((g, c, mine, theirs, at, d, other, points, tuple(map(float, mine_q[:3])), tuple(map(float, other_q[:3]))))
    trusted = None
    kept: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # each pair's two densities of the last round
    whole: dict[int, np.ndarray] = {}  # versus the rest: each class's density at all its units' own log-odds (n_g,), of the last round it changed
    for _ in range(rounds):
        now = np.where(right > vouch, 1.0, 1e-6)  # classification EM: a unit not likely enough right does not vouch for its label
        if trusted is not None and np.array_equal(now, trusted) and not learn_rate:
            break  # the same units vouch as in the last round: its posterior stands
        # a class whose units vouch as in the last round keeps its densities (most classes, after the first round)
        same = np.zeros(k, bool) if trusted is None else ~np.bincount(label, weights=now != trusted, minlength=k).astype(bool)
        trusted = now
        if versus_rest:  # class g's density at its own units' log-odds is the same whatever the alternative: once a class
            for g, mine in enumerate(members):
                if len(mine) and not same[g]:
                    d, q = over[g][0][:, g], over[g][1][:, g]
                    whole[g] = log_density(np.minimum(d, q[3]), d, trusted[mine], np.arange(len(mine)), tuple(map(float, q[:3])))
        log_post = np.log(label_prior)
        for g, c, mine, theirs, at, d, other, points, mine_q, other_q in pairs:
            if points is None:
                log_post[mine, c] -= MAX_LOG_RATIO
                continue
            last = kept.get((g, c))
            as_labelled = whole[g][at] if versus_rest else last[0] if same[g] else log_density(points[0], d, trusted[mine], at, mine_q)
            as_other = last[1] if same[c] else log_density(points[1], other, trusted[theirs], quantiles=other_q)
            kept[(g, c)] = as_labelled, as_other
            order = np.argsort(-d[at], kind="stable")  # less evidence for the given class never makes it likelier right:
            log_lr = np.full(len(d), -MAX_LOG_RATIO)  # far out, the ratio of two sparse tails is noise; the bulk's ratio bounds it from below
            log_lr[at[order]] = np.maximum.accumulate(np.clip(as_other - as_labelled, -MAX_LOG_RATIO, MAX_LOG_RATIO)[order])
            log_post[mine, c] += log_lr
        post = np.exp(log_post - logsumexp(log_post, axis=1, keepdims=True))
        right = post[rows, label]
        if learn_rate:
            rate = float(np.clip(np.mean(1 - right), *RATE_BOUNDS))
            class_rates = per_class(1 - right, rate)
            label_prior = by_given(class_rates)
    p_wrong = 1 - right
    wrong_classes = np.where(as_given, -np.inf, log_post)
    odds = logsumexp(wrong_classes, axis=1) - log_post[rows, label]
    other = (evidence if versus_rest else post).copy()  # versus the rest, the posterior does not tell the other classes apart
    other[rows, label] = -np.inf
    suggested = other.argmax(axis=1)
    agree = sum((summed(own).argmax(axis=1) == suggested).astype(int) for own in logs.values())  # each source alone
    disagree = float(np.mean(evidence.argmax(axis=1) != label))
    return Findings(rows, np.full(n_units, -1), label, suggested, p_wrong, agree, mean[rows, suggested], rate, class_rates, disagree, odds)


def findings_table(who: Mapping[str, object], task: str, names: Sequence[str], found: Findings, of_sources: int) -> pd.DataFrame:
    """One task's findings as rows: the columns `who` names (the unit: a person's profile and
    image, or an image and its group), then ``task, given, suggested, p_wrong, sources,
    of_sources, evidence``."""
    import pandas as pd

    names = np.array(list(names), dtype=object)
    return pd.DataFrame({
        **who,
        "task": task,
        "given": names[found.given],
        "suggested": names[found.suggested],
        "p_wrong": np.round(found.p_wrong, 6),
        "sources": found.sources,
        "of_sources": of_sources,
        "evidence": np.round(found.evidence, 4),
    })


def reported(tables: Sequence[pd.DataFrame], who: Sequence[str], least: float = REPORTED) -> pd.DataFrame:
    """The tasks' findings in one table: those at least `least` likely wrong, most likely
    first (ties: by the `who` columns)."""
    import pandas as pd

    columns = [*who, "task", "given", "suggested", "p_wrong", "sources", "of_sources", "evidence"]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)
    return table[table["p_wrong"] >= least].sort_values(["p_wrong", *who], ascending=[False, *[True] * len(who)], kind="stable").reset_index(drop=True)

