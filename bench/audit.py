"""How well `ens audit` finds wrong train labels, against image-level confident learning.

Simulated teams (`ensembler.data.teams.simulate_team`: per-task specialists, 18-class
classifiers, over-confident members, a mix; out of fold on every train image of 2,700 people)
predict from the *true* labels; the labels the audit sees carry the noise teams of the
competition published:

- gender: whole people with the other gender, half of them in runs of six consecutive ids;
- mask: a person's ``incorrect_mask`` and ``normal`` files swapped;
- age: the folder's age across a band edge, mostly within three years of it (the true age and
  the written one on either side), some far.

Together about 1 % of the images. The reference is `cleanlab.filter.find_label_issues` on the
same calibrated, pooled out-of-fold probabilities, image by image (a person counts as flagged
when most of its images are; the F1 with the m of 1..7 flagged images that suits the reference
best, chosen after the fact, is printed beside it). Printed
per kind of error: precision and recall at the default threshold (`audit.FLAG`), the F1 of
detection, and precision at k (k = the true errors of that kind); then how far each source's
macro F1 on the given labels is from its F1 on the true labels, before and after accepting the
flagged fixes; and the time of one audit.

    python bench/audit.py [--seeds 2] [--people 2700]
    python bench/audit.py --declared [--seeds 3] [--images 3000] [--first-seed 2000]

`--declared` runs the declared competitions' audit (`audit_declared.audit_images`) on the teams
of bench/audit_declared_teams.py (one task of 5 look-alike classes, one of 2, a multi-label one
with missing positives, a diagnosis shared by each patient's images) against cleanlab on the same
calibrated, pooled probabilities (image by image; a group counts as flagged when most of its
images are); per kind, the mean precision and recall over its tasks at the default, and the F1
of those two; whether p_wrong is calibrated; where ens's ranking stands at cleanlab's operating
point (its precision at cleanlab's recall, its recall at cleanlab's precision: the ranking
apart from the threshold); ens's flags cut to cleanlab's count (shipped for two classes image
by image, whose flags `audit_declared.at_most` bounds by confident learning's count; measured
on every kind); the
most a threshold could give each ranking (its F1 at the threshold
that suits it best on the true errors, chosen after the fact); then times an audit of 20,000
images x 5 sources x 50 classes. The teams' seeds start at 2000, the seeds the audit's constants
were chosen on; `--first-seed 3000 --seeds 16` judges it on teams it never saw.

Needs cleanlab (``pip install -e ".[bench]"``): a bench dependency only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ensembler.data.labels import CLASS_NAMES, TASKS, Task, age_band, decode, encode  # noqa: E402
from ensembler.data.people import person_codes  # noqa: E402
from ensembler.pipeline.folds import Folds  # noqa: E402
from ensembler.data.teams import simulate_team  # noqa: E402
from ensembler.evaluate.audit import FLAG, audit_labels, calibrated_logs, pooled  # noqa: E402
from ensembler.evaluate.label_errors import REPORTED  # noqa: E402
from ensembler.scoring.metrics import macro_f1  # noqa: E402

KINDS = ("specialists", "classifiers18", "overconfident", "mixed")
RATES = {"gender": 0.006, "mask": 0.006, "age": 0.006}  # of the people


def true_years(rng: np.random.Generator, band: np.ndarray) -> np.ndarray:
    """Years per person ``(p,)`` in its band, as the competition's are (60+ is mostly 60)."""
    lo, hi = np.array([18, 30, 60]), np.array([29, 59, 60])
    years = rng.integers(lo[band], hi[band] + 1)
    return np.where((band == 2) & (rng.random(len(band)) < 0.1), rng.integers(61, 75, len(band)), years)


def corrupt(rng: np.random.Generator, truth: np.ndarray, persons: np.ndarray, years: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, set]]:
    """Given labels ``(n,)``, given years per person, and the wrong units per kind (people for
    gender and age, image rows for mask)."""
    n_people = int(persons.max()) + 1
    t = decode(truth)
    mask, gender = t[Task.MASK].copy(), t[Task.GENDER].copy()
    given_years = years.copy()
    wrong: dict[str, set] = {"gender": set(), "mask": set(), "age": set()}
    n = max(1, round(RATES["gender"] * n_people))
    runs = rng.choice(n_people - 6, size=max(1, n // 12), replace=False)  # half in runs of six
    chosen = {int(r) + i for r in runs for i in range(6)}
    chosen |= set(rng.choice(n_people, size=n - len(chosen) if n > len(chosen) else 0, replace=False).tolist())
    for p in chosen:
        gender[persons == p] = 1 - gender[persons == p]
    wrong["gender"] = chosen
    for p in rng.choice(sorted(set(range(n_people)) - chosen), size=max(1, round(RATES["mask"] * n_people)), replace=False):
        rows = np.flatnonzero(persons == p)
        a, b = rows[slots[rows] == 5], rows[slots[rows] == 6]
        mask[a], mask[b] = 2, 1
        wrong["mask"] |= {int(a[0]), int(b[0])}
    edge = np.array([30 if y < 45 else 60 for y in years])
    near = np.flatnonzero(np.abs(years - edge) <= 3)
    n_age = max(1, round(RATES["age"] * n_people))
    picked = rng.choice(near, size=min(len(near), int(0.8 * n_age)), replace=False).tolist()
    picked += rng.choice(sorted(set(range(n_people)) - set(picked)), size=n_age - len(picked), replace=False).tolist()
    for p in picked:
        y, e = years[p], edge[p]
        if abs(y - e) <= 3:  # across the nearest edge, 1 to 3 years from it
            given_years[p] = e - rng.integers(1, 4) if y >= e else e + rng.integers(0, 3)
        else:  # far: a typo-like age in another band
            given_years[p] = rng.choice([y2 for y2 in (22, 45, 60) if age_band(y2) != age_band(y)])
        wrong["age"].add(int(p))
    given = encode(mask, gender, age_band(given_years)[persons])
    return given, given_years, wrong


def detection(flagged: set, wrong: set, ranked: list, k: int) -> tuple[float, float, float, float]:
    """Precision, recall, F1 at the threshold; precision at k of the `ranked` units."""
    tp = len(flagged & wrong)
    p = tp / len(flagged) if flagged else 1.0
    r = tp / len(wrong) if wrong else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f, len(set(ranked[:k]) & wrong) / k


def at_their_point(hits: np.ndarray, n_wrong: int, precision: float, recall: float) -> tuple[float, float, float, float]:
    """A ranking (`hits` ``(m,)``: whether each ranked label is truly wrong, most likely first)
    at another method's operating point: its precision where it first reaches that `recall`,
    and the best recall it holds at that `precision` or above; then the point itself."""
    found = np.cumsum(hits)
    prec, rec = found / np.arange(1, len(hits) + 1), found / max(n_wrong, 1)
    reach = np.flatnonzero(rec >= recall - 1e-12)
    held = rec[prec >= precision - 1e-12]
    return (float(prec[reach[0]]) if len(reach) else 0.0), (float(held.max()) if len(held) else 0.0), precision, recall


def best_f1(hits: np.ndarray, n_wrong: int) -> float:
    """The F1 of a ranking (`hits` ``(m,)``, most likely wrong first) at the threshold that suits
    it best, chosen after the fact on the true errors: the most any threshold could give it."""
    found = np.cumsum(hits)
    return float(np.max(2 * found / (np.arange(1, len(hits) + 1) + max(n_wrong, 1)), initial=0.0))


def their_task(task_probs, given, folds):
    """cleanlab on one task: the sources' probabilities ``[(n, k)]`` calibrated out of `folds` and
    pooled ``(n, k)``, its image flags ``(n,) bool`` (`find_label_issues`) and image scores ``(n,)``
    (its self-confidence ranking: 1 - the pooled probability of the given class)."""
    from cleanlab.filter import find_label_issues

    pool = np.exp(pooled(calibrated_logs(task_probs, given, folds), [1.0] * len(task_probs)))
    return pool, find_label_issues(given, pool), 1 - pool[np.arange(len(pool)), given]


def reference(probs, given, ids, persons):
    """cleanlab's image flags per task on the calibrated pooled probabilities: ``{task: (n,) bool}``
    and the image scores (its self-confidence ranking)."""
    folds = Folds.of(ids)
    g = decode(given)
    return {task: their_task([probs[s][task] for s in probs if task in probs[s]], g[task], folds)[1:] for task in TASKS}


def person_units(flags: np.ndarray, persons: np.ndarray, wrong: set, score: np.ndarray) -> tuple[set, set, list, int]:
    """Image flags as people: flagged when most of its images are (4 of 7, the rule fixed
    beforehand), and when at least m are, the m (1..7) that suits the reference best after the
    fact; people ranked by their summed score."""
    counts = np.bincount(persons, weights=flags.astype(float))
    best, best_f, best_m = set(), -1.0, 1
    for m in range(1, 8):
        chosen = set(np.flatnonzero(counts >= m).tolist())
        f = detection(chosen, wrong, [], 1)[2] if wrong else 0.0
        if f > best_f:
            best, best_f, best_m = chosen, f, m
    ranked = np.argsort(-np.bincount(persons, weights=score), kind="stable").tolist()
    return set(np.flatnonzero(counts >= 4).tolist()), best, ranked, best_m


def declared(seeds: int, images: int, first_seed: int = 2000) -> None:
    """The declared teams: precision, recall and F1 at the default threshold, ens against
    cleanlab; the validation scores' shift before and after accepting the flags; the time."""
    from cleanlab.filter import find_label_issues

    from audit_declared_teams import DECLARED_KINDS, noisy_team
    from ensembler.evaluate.audit_declared import audit_images, faint

    print(f"{'team':<20} {'task':<10} {'errors':>6} | {'ens audit: P':>12} {'R':>5} {'F1':>5} | {'cleanlab: P':>11} {'R':>5} {'F1':>5} | {'acc given - true':>16} {'after fixes':>11}")
    rows, reliability = [], {kind: ([], []) for kind in DECLARED_KINDS}
    dominance, ceiling, faintness, capped = ({kind: [] for kind in DECLARED_KINDS} for _ in range(4))
    for kind in DECLARED_KINDS:
        for seed in range(seeds):
            team = noisy_team(kind, first_seed + seed, n=images)
            result = audit_images(team.probs, team.given, team.ids, team.classes, team.groups, team.shared, least=0.0)  # every label, ranked
            flagged = result.flagged()
            folds = Folds.of(team.ids, groups=team.groups)
            present = {}  # multi-label: each finding's calibrated, pooled probability of yes
            row_of = {i: r for r, i in enumerate(team.ids)}
            for task in team.classes:
                mine = flagged[flagged["task"] == task]
                codes = np.unique(team.groups.astype(str), return_inverse=True)[1] if task in team.shared else None
                if codes is not None:
                    names = {g: c for g, c in zip(team.groups, codes)}
                    units = {names[g] for g in mine["group"]}
                else:
                    units = {row_of[i] for i in mine["image"]}
                sources = [s for s in team.probs if task in team.probs[s]]
                pool, flags, score = their_task([team.probs[s][task] for s in sources], team.given[task], folds)
                present[task] = pool[:, -1]
                if codes is not None:
                    share = np.bincount(codes, weights=flags.astype(float)) / np.bincount(codes)
                    theirs = set(np.flatnonzero(share > 0.5).tolist())
                else:
                    theirs = set(np.flatnonzero(flags).tolist())
                wrong = team.wrong[task]
                found = result.findings[result.findings["task"] == task]  # every label, most likely wrong first
                keys = found["group"].map(names) if codes is not None else found["image"].map(row_of)
                hits = np.array([k in wrong for k in keys])  # whether each ranked label is truly wrong
                shown = (found["p_wrong"] >= REPORTED).to_numpy()
                reliability[kind][0].extend(found["p_wrong"][shown])
                reliability[kind][1].extend(hits[shown])
                a, b = detection(units, wrong, [], 1), detection(theirs, wrong, [], 1)
                dominance[kind].append(at_their_point(hits, len(wrong), b[0], b[1]))
                k = min(int((found["p_wrong"] >= FLAG).sum()), len(theirs))  # the flags, no more than cleanlab's count
                capped[kind].append(detection(set(keys.iloc[:k]), wrong, [], 1))
                if codes is not None:  # cleanlab's ranking of a group: its images' mean self-confidence score
                    score = np.bincount(codes, weights=score) / np.bincount(codes)
                theirs_ranked = np.argsort(-score, kind="stable")
                ceiling[kind].append((best_f1(hits, len(wrong)), best_f1(np.isin(theirs_ranked, list(wrong)), len(wrong)), a[2], b[2]))
                fixed = team.given[task].copy()
                suggested = dict(zip(mine["group"] if codes is not None else mine["image"], mine["suggested"]))
                index = {c: i for i, c in enumerate(team.classes[task])}
                for key, value in suggested.items():
                    fixed[(team.groups == key) if codes is not None else (team.ids == key)] = index[value]
                shift = np.mean([abs(np.mean(team.probs[s][task].argmax(1) == team.given[task]) - np.mean(team.probs[s][task].argmax(1) == team.truth[task])) for s in sources])
                after = np.mean([abs(np.mean(team.probs[s][task].argmax(1) == fixed) - np.mean(team.probs[s][task].argmax(1) == team.truth[task])) for s in sources])
                rows.append((kind, task, a, b, shift, after))
                doubted, rate = result.disagree[task], result.rates[task]
                faintness[kind].append((faint(doubted, rate), doubted - rate, (doubted - rate) / rate, a[0], len(units), after < shift))
                print(f"{kind + ' seed ' + str(seed):<20} {task:<10} {len(wrong):>6} | {a[0]:>12.3f} {a[1]:>5.3f} {a[2]:>5.3f} | {b[0]:>11.3f} {b[1]:>5.3f} {b[2]:>5.3f} | {shift:>16.4f} {after:>11.4f}")
            if kind == "multilabel":  # image by image against cleanlab's multi-label mode: an image is wrong when any finding is
                tasks = list(team.classes)
                wrong = set().union(*team.wrong.values())
                given = [[t for t, task in enumerate(tasks) if team.given[task][i] == 1] for i in range(len(team.ids))]
                theirs = set(np.flatnonzero(find_label_issues(given, np.stack([present[t] for t in tasks], axis=1), multi_label=True)).tolist())
                a, b = detection({row_of[i] for i in flagged["image"]}, wrong, [], 1), detection(theirs, wrong, [], 1)
                rows.append(("multilabel-image", "any", a, b, np.nan, np.nan))
                print(f"{'multilabel seed ' + str(seed):<20} {'an image':<10} {len(wrong):>6} | {a[0]:>12.3f} {a[1]:>5.3f} {a[2]:>5.3f} | {b[0]:>11.3f} {b[1]:>5.3f} {b[2]:>5.3f} | (cleanlab's multi_label=True)")
    print("\nper team kind (ens audit | cleanlab): worst precision, worst recall, mean F1; tasks where ens is behind on precision or recall")
    for kind in (*DECLARED_KINDS, "multilabel-image"):
        mine = [r for r in rows if r[0] == kind]
        cells = lambda i: f"{min(r[i][0] for r in mine):.3f} {min(r[i][1] for r in mine):.3f} {np.mean([r[i][2] for r in mine]):.3f}"  # noqa: E731
        behind = sum(r[2][0] < r[3][0] or r[2][1] < r[3][1] for r in mine)
        shift = "" if kind == "multilabel-image" else f"; |accuracy on given - on true| {np.mean([r[4] for r in mine]):.4f} -> {np.mean([r[5] for r in mine]):.4f} after the fixes"
        print(f"  {kind:<16} {cells(2)} | {cells(3)} | behind in {behind} of {len(mine)}{shift}")
    print("\nper team kind, the mean over its tasks at the default (ens p_wrong >= 0.5 | cleanlab's find_label_issues): precision, recall, and the F1 of those two")
    for kind in (*DECLARED_KINDS, "multilabel-image"):
        means = [np.mean([r[i][j] for r in rows if r[0] == kind]) for i in (2, 3) for j in (0, 1)]
        f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in (means[:2], means[2:])]
        verdict = "precision and recall both at least cleanlab's" if means[0] >= means[2] and means[1] >= means[3] else "behind cleanlab on " + " and ".join(w for w, a, b in (("precision", means[0], means[2]), ("recall", means[1], means[3])) if a < b)
        print(f"  {kind:<16} {means[0]:.3f} {means[1]:.3f} {f1[0]:.3f} | {means[2]:.3f} {means[3]:.3f} {f1[1]:.3f} | F1 {f1[0] - f1[1]:+.3f}; {verdict}")
    print("\nis p_wrong calibrated? per kind, the share of findings truly wrong by p_wrong (reported labels, p_wrong >= 0.1)")
    edges = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
    for kind, (p, hit) in reliability.items():
        p, hit = np.array(p), np.array(hit, dtype=bool)
        cells = [f"{lo:.1f}-{hi:.1f}: {hit[m].mean():.2f} of {m.sum()}" if (m := (p >= lo) & ((p < hi) | (hi == 1.0))).any() else f"{lo:.1f}-{hi:.1f}: none" for lo, hi in zip(edges, edges[1:])]
        print(f"  {kind:<13} " + "; ".join(cells))
    print("\nthe ranking apart from the threshold: ens's p_wrong ranking at cleanlab's operating point, per kind (tasks where ens's precision at cleanlab's recall")
    print("and its recall at cleanlab's precision are both at least cleanlab's; the mean of each)")
    for kind, cells in dominance.items():
        print(f"  {kind:<13} dominates in {sum(p >= cp and r >= cr for p, r, cp, cr in cells)} of {len(cells)}; precision at cleanlab's recall {np.mean([c[0] for c in cells]):.3f} (cleanlab {np.mean([c[2] for c in cells]):.3f}),"
              f" recall at cleanlab's precision {np.mean([c[1] for c in cells]):.3f} (cleanlab {np.mean([c[3] for c in cells]):.3f})")
    print("\nens's flags cut to cleanlab's count (its most likely wrong first; what ens audit does with two classes image by image), per kind: mean precision, recall, F1")
    for kind, cells in capped.items():
        c = np.array(cells)
        print(f"  {kind:<13} {c[:, 0].mean():.3f} {c[:, 1].mean():.3f} {c[:, 2].mean():.3f}")
    print("\nthe most a threshold could give: per kind, the mean F1 of each ranking at the threshold that suits it best on the true errors (chosen after the fact),")
    print("beside the F1 at the default (ens: p_wrong >= 0.5; cleanlab: find_label_issues)")
    for kind, cells in ceiling.items():
        c = np.array(cells)
        print(f"  {kind:<13} ens {c[:, 0].mean():.3f} (at the default {c[:, 2].mean():.3f}); cleanlab's self-confidence ranking {c[:, 1].mean():.3f} (at its default {c[:, 3].mean():.3f})")
    print("\nthe caution on faint evidence (audit_declared.faint), per kind: tasks cautioned; the share of labels the sources doubt and the audit believes,")
    print("and that share over the rate learnt (min-max); flag precision (min-max, tasks with flags); tasks where accepting the flags moves toward the truth")
    for kind, cells in faintness.items():
        c = np.array(cells, dtype=float)
        p = c[c[:, 4] > 0, 3]
        print(f"  {kind:<13} cautioned {int(c[:, 0].sum())} of {len(c)}; {c[:, 1].min():.3f}-{c[:, 1].max():.3f} ({c[:, 2].min():.1f}-{c[:, 2].max():.1f}x the rate);"
              f" precision {p.min():.2f}-{p.max():.2f}; toward the truth {int(c[:, 5].sum())} of {len(c)}")
    big = noisy_team("single", 7, n=20000, k=50)
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        audit_images(big.probs, big.given, big.ids, big.classes)
        runs.append(time.perf_counter() - start)
    print(f"\none audit of 20,000 images x 5 sources x 50 classes: best of 3 {min(runs):.2f} s (the runs: {', '.join(f'{r:.2f}' for r in runs)} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--people", type=int, default=2700)
    parser.add_argument("--declared", action="store_true", help="the declared competitions' teams (module doc)")
    parser.add_argument("--images", type=int, default=3000, help="labelled images per declared team")
    parser.add_argument("--first-seed", type=int, default=2000, help="the declared teams' seeds start here (2000: the seeds the audit was tuned on; another start judges it on teams it never saw)")
    args = parser.parse_args()
    if args.declared:
        declared(args.seeds, args.images, args.first_seed)
        return
    print(f"{'team':<22} {'kind':<7} {'errors':>6} | {'ens audit: P':>12} {'R':>5} {'F1':>5} {'P@k':>5} | {'cleanlab: P':>11} {'R':>5} {'F1':>5} {'P@k':>5} | {'best m: F1':>5} {'m':>2}")
    shifts, times, summary = [], [], []
    for kind in KINDS:
        for seed in range(args.seeds):
            rng = np.random.default_rng(1000 + seed)
            team = simulate_team(kind, "none", args.people, 10, seed)
            ids = team.labelled_ids
            persons = person_codes(ids)
            slots = np.array([int(i.rsplit("img", 1)[1].split(".")[0]) for i in ids])
            truth_age = decode(team.labels)[Task.AGE][np.unique(persons, return_index=True)[1]]
            years = true_years(rng, truth_age)
            given, given_years, wrong = corrupt(rng, team.labels, persons, years, slots)
            probs = {m.name: m.labelled for m in team.members}
            start = time.perf_counter()
            result = audit_labels(probs, decode(given), ids, given_years[persons])
            times.append(time.perf_counter() - start)
            table = result.findings
            ref = reference(probs, given, ids, persons)
            profiles = np.array([i.split("/")[0] for i in ids], dtype=object)
            person_of = {p: int(c) for p, c in zip(profiles, persons)}
            row_of = {i: r for r, i in enumerate(ids)}
            for task in ("gender", "mask", "age"):
                rows = table[table["task"] == task]
                units = [row_of[f"{p}/{i}"] for p, i in zip(rows["profile"], rows["image"])] if task == "mask" else [person_of[p] for p in rows["profile"]]
                flagged = {u for u, pw in zip(units, rows["p_wrong"]) if pw >= FLAG}
                k = len(wrong[task])
                mine = detection(flagged, wrong[task], units, k)
                flags, score = ref[Task(task)]
                if task == "mask":
                    theirs_set = best_set = set(np.flatnonzero(flags).tolist())
                    ranked, m = np.argsort(-score, kind="stable").tolist(), 1
                else:
                    theirs_set, best_set, ranked, m = person_units(flags, persons, wrong[task], score)
                theirs = detection(theirs_set, wrong[task], ranked, k)
                best = detection(best_set, wrong[task], ranked, k)
                summary.append((kind, task, mine, theirs, best))
                print(f"{kind + ' seed ' + str(seed):<22} {task:<7} {k:>6} | {mine[0]:>12.3f} {mine[1]:>5.3f} {mine[2]:>5.3f} {mine[3]:>5.3f} | {theirs[0]:>11.3f} {theirs[1]:>5.3f} {theirs[2]:>5.3f} {theirs[3]:>5.3f} | {best[2]:>5.3f} {m:>2}")
            fixed = decode(given)
            flagged_rows = table[table["p_wrong"] >= FLAG]
            for _, row in flagged_rows.iterrows():
                task = Task(row["task"])
                value = CLASS_NAMES[task].index(row["suggested"])
                where = ids == f"{row['profile']}/{row['image']}" if task is Task.MASK else profiles == row["profile"]
                fixed[task][where] = value
            true = decode(team.labels)
            before = after = 0.0
            count = 0
            for m in team.members:
                for task in m.tasks:
                    decided = m.labelled[task].argmax(axis=1)
                    f_true = macro_f1(true[task], decided, len(CLASS_NAMES[task]))
                    before += abs(macro_f1(decode(given)[task], decided, len(CLASS_NAMES[task])) - f_true)
                    after += abs(macro_f1(fixed[task], decided, len(CLASS_NAMES[task])) - f_true)
                    count += 1
            shifts.append((kind, seed, before / count, after / count))
    print("\nper kind of error over every team (ens audit | cleanlab, majority rule): worst precision, worst recall, mean F1, mean P@k; teams where ens audit's F1 is below the reference's")
    for task in ("gender", "mask", "age"):
        rows = [r for r in summary if r[1] == task]
        cells = lambda i: f"{min(r[i][0] for r in rows):.3f} {min(r[i][1] for r in rows):.3f} {np.mean([r[i][2] for r in rows]):.3f} {np.mean([r[i][3] for r in rows]):.3f}"  # noqa: E731
        behind = sum(r[2][2] < r[3][2] for r in rows)
        print(f"  {task:<7} {cells(2)} | {cells(3)} | behind in {behind} of {len(rows)}")
    print("\nmean |F1 on the given labels - F1 on the true labels| per source and task, before and after accepting the flagged fixes:")
    for kind, seed, before, after in shifts:
        print(f"  {kind} seed {seed}: {before:.5f} -> {after:.5f}")
    print(f"\none audit of {args.people} people x 7 images, 4 sources: median {np.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})")
    team = simulate_team("classifiers18", "none", args.people, 10, 0)
    eight = {f"{m.name}-{copy}": m.labelled for m in team.members for copy in "ab"}
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        audit_labels(eight, decode(team.labels), team.labelled_ids, None)
        runs.append(time.perf_counter() - start)
    print(f"one audit of {args.people} people x 7 images, 8 sources (18-class): best of 3 {min(runs):.2f} s")


if __name__ == "__main__":
    main()
