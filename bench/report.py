"""Person-bootstrap speed: 1,000 replicates x 18,900 images (2,700 people x 7) x 20 rows, as
`ens report` runs them (`ensembler.scoring.evidence.bootstrap`, paired gains included),
against the obvious loop (numpy's Generator.choice of people, scikit-learn's f1_score per
replicate and row), timed on a few replicates and scaled. Target: under 2 s on 2 cores.

    python bench/report.py [--people 2700] [--rows 20] [--replicates 1000] [--slow-replicates 5]
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
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
