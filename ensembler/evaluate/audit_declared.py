"""The label audit of a declared competition (DESIGN.md §4): image by image, group by group.

The evidence is the mask audit's (`label_errors`): every source's labelled out-of-fold probabilities,
calibrated out of fold (temperature scaling, per source and task) and pooled per image as the
weighted mean of their logs. What is judged is each label as it was given:

- a task whose label belongs to the image (a leaf's disease, a finding of a multi-label
  competition: each of its ``[no, yes]`` tasks is judged, so a missing positive and a false
  positive are both findings): the image alone;
- a task the declaration marks as shared by a group (``train: {group: patient_id, shared:
  [diagnosis]}``: every image of a patient carries one diagnosis): the group as one label, from
  all its images together, as the mask audit judges a person's gender.

Both are `label_errors.judge_units` (the two-groups model of Efron et al. 2001), a unit being
an image or a group, judged by the given class's log-odds against all the others summed over
the unit's images (`versus_rest`: with five classes and images that each say little, the margin
over one other class carries that class's noise, the log-odds against all of them averages it
out; the suggestion is the other class the images favour most), over its images to the power
`label_errors.SIZE_POWER` where groups differ in size (a patient's images are alike, so their
sum spreads faster than for independent images); the prior rate of label errors is learnt per task and given
class in its rounds of EM (`Audit.rates` holds each task's mean; nobody has published a declared
competition's), starting from `Noise.person`: a given class's own rate, shrunk toward the flat
model's, lets a multi-label finding's missing positives (a "no" wrong more often than the flat
model allows a common class) be found. A unit counts in its labelled class's densities only when
it is at least `VOUCH` likely right (the mask audit: more likely right than wrong): real noise
relabels alike images alike (a look-alike class's images, a series of one patient), and wrong
labels that came out just under one half in one round would vouch for each other in the next,
pulling the whole cluster back to "right" and the learnt rate down with it; fitting the
densities on the surely right units only is trimmed estimation (Neykov, Filzmoser, Dimova and
Neytchev 2007, trimmed likelihood for mixtures). Image by image this is close in spirit to
confident learning (Northcutt, Jiang and Chuang 2021, `cleanlab.filter.find_label_issues`): both
compare an image's evidence for its given class with what the other images of each class show;
here the comparison is a density ratio and the answer a probability, so one threshold
(`label_errors.FLAG`) means the same in every competition. Groups not marked shared only keep
the folds (calibration) honest.

With two classes (a finding's ``[no, yes]``, a binary task) judged image by image, `p_wrong`
is over-confident where the classes meet: the right labels of images that look like the other
class fall under `VOUCH` with the wrong ones, so their class's density lacks them exactly where
the two classes meet (with five classes, the prior's spread of a wrong label's true class over
the four others offsets it). There the flags are bounded by confident learning's count of the
labels wrong (`confident_count`, Northcutt, Jiang and Chuang 2021), which does not rest on the
densities: the log-odds of every label's `p_wrong` are moved down by one constant until no
more than that many labels are at least `FLAG` likely wrong (`at_most`; the ranking is
`judge_units`'). On five kinds of simulated two-class team (two of bench/audit.py
--declared's, three more in docs/how-to/audit-labels.md) its precision and recall each then
match or beat `cleanlab.filter.find_label_issues`' at two seed sets, where without the bound
its precision was below cleanlab's on three of the five (at one seed set or both); over groups
the count of a group's mean images undercounts (recall 0.95 to 0.60), and with five classes the
flags need no bound, so neither is bounded.

A task whose sources doubt many more of its labels than the audit learns are wrong (`faint`)
gets a line in `Audit.problems` saying its flags are to be confirmed by eye: there the sources'
own errors outnumber the wrong labels, and many flags are right labels.

The findings: one row a label (``image, group, task, given, suggested, p_wrong, sources,
of_sources, evidence``; `image` empty for a shared task's group, `group` empty where none is
declared), sorted by `p_wrong`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from scipy.special import expit, logit

from ..pipeline.folds import Folds
from .label_errors import FLAG, REPORTED, Audit, Findings, Noise, calibrated_logs, findings_table, judge_units, reported

COLUMNS = ("image", "group", "task", "given", "suggested", "p_wrong", "sources", "of_sources", "evidence")
VOUCH = 0.8  # how likely right a unit must be to shape its class's densities (module doc; bench/audit.py --declared)
FAINT = (0.03, 2.0)  # a task's evidence is faint where the labels its sources doubt but the audit believes are at least this share, and this many times the labels learnt wrong (`faint`)


def faint(disagree: float, rate: float) -> bool:
    """Whether a task's evidence is too faint for its flags to be accepted unseen: the share of
    its labels whose sources' pooled evidence favours another class (`disagree`) exceeds the
    rate of label errors learnt (`rate`) by at least `FAINT`'s share and by at least `FAINT`'s
    multiple of that rate. That excess is the sources' own errors on labels the audit believes,
    and where they outnumber the wrong labels, a label the evidence doubts is most often right,
    while the two-groups model reads a wrong label's evidence from the right labels of its true
    class and so flags some of those right labels surely (bench/audit.py --declared: on 24
    faint teams, 8 each of 3,000 images at two seed sets and of 1,000, the excess was 4.7 to 9.3 %
    of the labels, 2.5 to 34 times the rate learnt, 0.36 to 1.00 of a team's flags were errors,
    and accepting them moved the labels toward the truth on 13; on the 144 tasks of the other
    kinds 0.0 to 2.5 %, none cautioned. The multiple keeps strong sources with many wrong labels
    uncautioned: with 10 % of the labels wrong they doubt about 3 % of the labels they are right
    on, 0.3 to 0.4 times the rate learnt, and 99 to 100 % of their flags are errors)."""
    excess = disagree - rate
    return excess >= FAINT[0] and excess >= FAINT[1] * rate


def confident_count(probs: np.ndarray, given: np.ndarray) -> float:
    """How many labels confident learning counts wrong: the off-diagonal sum of the calibrated
    confident joint (Northcutt, Jiang and Chuang 2021, as `cleanlab.count.compute_confident_joint`
    with ``calibrate=True`` counts it). `probs` ``(u, k)``: each unit's probabilities; `given`
    ``(u,)``: its label. A unit counts toward class j when its probability of j is at least the
    mean that j's own labels give it (its likeliest class where there are several such; nowhere
    where there is none); each given class's counts are then scaled to its number of labels
    (cleanlab then rounds the joint to whole labels; this count is left unrounded)."""
    k = probs.shape[1]
    labels = np.bincount(given, minlength=k)
    thresholds = np.array([probs[given == j, j].mean() if labels[j] else np.inf for j in range(k)])
    confident = probs >= thresholds - 1e-6  # cleanlab's tolerance: a unit at the mean counts
    several = confident.sum(axis=1) > 1
    toward = np.where(several, probs.argmax(axis=1), confident.argmax(axis=1))
    counted = confident.any(axis=1)
    joint = np.zeros((k, k))
    np.add.at(joint, (given[counted], toward[counted]), 1.0)
    np.fill_diagonal(joint, np.maximum(np.diag(joint), 1.0))  # as cleanlab: a class none of whose labels is confidently right counts one
    rows = joint.sum(axis=1)
    return float(np.sum((rows - np.diag(joint)) / rows * labels))


def at_most(found: Findings, count: float) -> Findings:
    """`found` (`judge_units`' findings, which carry each label's exact log-odds) with the
    log-odds of every label's `p_wrong` moved down by one constant (never up) so that at most
    ``round(count)`` labels are at least `FLAG` likely wrong (fewer where labels tie at the
    cut: tied labels stay together, below it); the order is kept."""
    cap = int(round(count))
    odds = found.odds
    ranked, line = np.sort(odds)[::-1], float(logit(FLAG))
    if np.count_nonzero(ranked >= line) <= cap:
        return found
    cut = ranked[cap]  # the likeliest wrong label that must fall below the line
    kept = ranked[ranked > cut]  # those that may stay above it
    shift = line - (kept[-1] + cut) / 2 if len(kept) else line - cut - 1.0
    return replace(found, p_wrong=expit(odds + shift), odds=odds + shift)


def audit_images(
    probs: Mapping[str, Mapping[str, np.ndarray]],
    labels: Mapping[str, np.ndarray],
    image_ids: np.ndarray,
    class_names: Mapping[str, Sequence[str]],
    groups: np.ndarray | None = None,
    shared: Sequence[str] = (),
    weights: Mapping[str, Mapping[str, float]] | None = None,
    noise: Noise = Noise(),
    least: float = REPORTED,
) -> Audit:
    """Audit the given labels of a declared competition's labelled images (module doc).

    probs: ``{source: {task: (n, k)}}`` out-of-fold probabilities (a source may cover some
    tasks); labels: ``{task: (n,)}`` the given classes; image_ids: ``(n,)``; class_names:
    ``{task: names}`` in class order (the tasks audited, in this order); groups: ``(n,)`` each
    image's declared group (None: each image its own), which the calibration's folds keep
    together; shared: the tasks whose label a group shares (every image of a group carries one
    label: judged once per group); weights: ``{task: {source: weight}}`` (default: every source
    that covers the task, alike); least: the findings hold the labels at least this likely wrong
    (0: every label, ranked)."""
    ids = np.asarray(image_ids, dtype=object)
    n = len(ids)
    group_names = np.asarray(groups, dtype=object) if groups is not None else None
    group_codes = np.unique(group_names.astype(str), return_inverse=True)[1] if group_names is not None else np.arange(n)
    folds = Folds.of(ids, groups=group_names)
    tables, units, rates, class_rates, disagree, counts, problems = [], {}, {}, {}, {}, {}, []
    for task, names in class_names.items():
        chosen = dict((weights or {}).get(task) or {s: 1.0 for s, p in probs.items() if task in p})
        if not chosen or task not in labels:
            continue
        given = np.asarray(labels[task], dtype=np.int64)
        logs = dict(zip(chosen, calibrated_logs([probs[s][task] for s in chosen], given, folds)))
        by_group = task in shared and group_names is not None
        codes = group_codes if by_group else np.arange(n)
        found = judge_units(logs, chosen, given, codes, len(names), noise, learn_rate=True, by_size=by_group, vouch=VOUCH, versus_rest=True)
        if len(names) == 2 and not by_group:  # over-confident where two classes meet: at most confident learning's count (module doc)
            rows = np.arange(len(found.people))  # with two classes, `evidence` is the other class's probability
            two = np.empty((len(rows), 2))
            two[rows, found.given], two[rows, found.suggested] = 1 - found.evidence, found.evidence
            counts[task] = round(confident_count(two, found.given), 1)  # as kept in the audit: the bound is the count it shows
            found = at_most(found, counts[task])
        first = np.unique(codes, return_index=True)[1][found.people]
        units[task], rates[task] = int(len(found.people)), round(found.rate, 5)
        class_rates[task] = {name: round(float(r), 5) for name, r in zip(names, found.class_rates)}
        disagree[task] = round(found.disagree, 5)
        if faint(found.disagree, found.rate):
            unit = "groups" if by_group else "images"
            problems.append(
                f"{task}: the sources favour another class than the given one for {found.disagree:.1%} of the {unit}, and {found.rate:.1%} are learnt wrong: the evidence is faint and most labels "
                f"it doubts are right (on 24 simulated teams like it, 4 to 10 flags in 10 were errors, and accepting them all moved the labels toward the truth on 13); confirm {task}'s flags by eye (--html) before accepting them"
            )
        who = {"image": np.full(len(first), "", dtype=object) if by_group else ids[first], "group": group_names[first] if group_names is not None else ""}
        tables.append(findings_table(who, task, names, found, len(chosen)))
    table = reported(tables, ("group", "image"), least)[list(COLUMNS)]
    return Audit(table, units, problems, rates, class_rates, disagree, counts)
