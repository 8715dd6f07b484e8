"""Person-bootstrap speed: 1,000 replicates x 18,900 images (2,700 people x 7) x 20 rows, as
`ens report` runs them (`ensembler.scoring.evidence.bootstrap`, paired gains included),
against the obvious loop (numpy's Generator.choice of people, scikit-learn's f1_score per
replicate and row), timed on a few replicates and scaled. Target: under 2 s on 2 cores.

``--metric NAME``: a declared competition's report instead (issue 35): 3 rows x 1,000 replicates
on 10,000 images in 2,000 groups, each metric in one pass for all replicates
(`metrics.competition_replicates` through `evidence.group_bootstrap`), against the loop of one
`metrics.competition_score` per replicate (what the report ran before), and the largest
difference between their intervals. Target: under 1 s.

    python bench/report.py [--people 2700] [--rows 20] [--replicates 1000] [--slow-replicates 5]
    python bench/report.py --metric auc,quadratic_kappa,balanced_accuracy,map@5,macro_f1 [--images 10000] [--rows 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=2700)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--slow-replicates", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--metric", default="", help="declared metrics, comma-separated: time the declared report's intervals instead")
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    if args.metric:
        for metric in args.metric.split(","):
            declared(metric, args.images, 3 if args.rows == 20 else args.rows, args.replicates, args.repeats)
        return

    from sklearn.metrics import f1_score

    from ensembler.scoring.evidence import bootstrap

    rng = np.random.default_rng(0)
    persons = np.repeat(np.arange(args.people), 7)
    labels = rng.integers(0, 18, len(persons))
    skill = np.linspace(0.6, 0.8, args.rows)[:, None]
    predictions = np.where(rng.random((args.rows, len(persons))) < skill, labels, rng.integers(0, 18, (args.rows, len(persons))))
    print(f"{len(persons):,} images of {args.people:,} people, {args.rows} rows, {args.replicates:,} replicates; {os.cpu_count()} CPU cores")

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        found = bootstrap(labels, predictions, persons, reference=0, replicates=args.replicates)
        times.append(time.perf_counter() - start)
    print(f"ens (vectorised, with paired gains): best {min(times):.2f} s, median {np.median(times):.2f} s of {args.repeats}")

    start = time.perf_counter()
    for _ in range(args.slow_replicates):
        drawn = rng.choice(args.people, args.people, replace=True)
        images = (drawn[:, None] * 7 + np.arange(7)).ravel()
        for row in predictions:
            f1_score(labels[images], row[images], labels=range(18), average="macro", zero_division=0)
    slow = (time.perf_counter() - start) / args.slow_replicates * args.replicates
    print(f"the obvious loop (Generator.choice + sklearn f1_score): {slow:.0f} s for {args.replicates:,} replicates (scaled from {args.slow_replicates}); {slow / min(times):.0f}x slower")
    print(f"row 1: F1 {found.f1[1]:.4f}, 90% interval {found.low[1]:.4f} to {found.high[1]:.4f}; gain over row 0 {found.f1[1] - found.f1[0]:+.4f} ({found.gain_low[1]:+.4f} to {found.gain_high[1]:+.4f}), positive in {found.positive[1]:.0%}")


def declared(metric: str, n_images: int, n_rows: int, replicates: int, repeats: int) -> None:
    """The declared report's intervals of `n_rows` rows under `metric`, one pass against the loop."""
    from pathlib import Path

    from ensembler.data.competition import parse_competition
    from ensembler.scoring.evidence import group_bootstrap, person_draws
    from ensembler.scoring.metrics import competition_rows, competition_score

    k = 2 if metric == "auc" else 8 if metric != "map@5" else 60
    spec = {
        "tasks": {"label": [f"c{i}" for i in range(k)]}, "metric": metric,
        "train": {"csv": "t.csv", "id": "id", "images": "i", "labels": {"label": "label"}, "group": "g"},
        "eval": {"csv": "s.csv", "id": "id", "images": "e"},
        "submission": {"proba": {"label": "c1"}} if metric in ("auc", "log_loss") else {"answer": "label"},
    }  # fmt: skip
    comp = parse_competition(spec, Path("model_zoo.yaml"))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, k, n_images)
    groups = np.arange(n_images) // 5
    rows = []
    for skill in np.linspace(1.0, 2.0, n_rows):
        logits = rng.normal(size=(n_images, k)) + skill * np.eye(k)[labels]
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        rows.append(({"label": p.astype(np.float32)}, None, None))

    one_pass = competition_rows(comp, labels, rows)

    def the_loop(weights):  # what the report ran before: one score per replicate and row
        if weights is None:
            return one_pass(None)
        return np.array([[competition_score(comp, labels, p, j, d, w) for p, j, d in rows] for w in weights])

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fast = group_bootstrap(one_pass, groups, 0, replicates)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    slow = group_bootstrap(the_loop, groups, 0, replicates)
    loop = time.perf_counter() - start
    gap = max(np.abs(fast.low - slow.low).max(), np.abs(fast.high - slow.high).max(), np.nan_to_num(np.abs(fast.gain_low - slow.gain_low)).max())
    draws = person_draws(len(np.unique(groups)), 1)[0][groups].astype(np.float64)
    assert np.isclose(one_pass(draws[None, :])[0, 0], competition_score(comp, labels, *rows[0][:2], None, draws))
    print(f"{metric:>17s}: {n_rows} rows x {replicates:,} replicates x {n_images:,} images ({k} classes): one pass best {min(times):.2f} s; the loop {loop:.1f} s ({loop / min(times):.0f}x); intervals differ by {gap:.1e} at most")


if __name__ == "__main__":
    main()
