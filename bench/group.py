"""Grouping speed: 12,600 eval images (1,800 people x 7) into people.

- from descriptors: `ensembler.pipeline.persons.group_images` on descriptors of the size
  `predictors.group.describe` makes (204 numbers per image), simulated as 1,800 people whose
  photos scatter around the person's own point; with the agreement against the simulated persons;
- from scratch: the toy competition's drawn faces written as full-size 384 x 512 JPEGs, decoded
  and described (`describe`, DataLoader workers as `ens predict` uses them) and grouped, on
  --images of them, scaled to 12,600 (decoding is linear in the images).

Prints seconds and the peak memory (resident set size) of each. Target: under 60 s from
descriptors on 2 cores.

    python bench/group.py [--people 1800] [--images 1400] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1800)
    parser.add_argument("--images", type=int, default=1400, help="images decoded from scratch (scaled to people x 7)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from ensembler.pipeline.persons import agreement, group_images

    n = args.people * 7
    rng = np.random.default_rng(0)
    persons = np.repeat(np.arange(args.people), 7)
    descriptors = (rng.normal(0, 1, (args.people, 204))[persons] + rng.normal(0, 0.35, (n, 204))).astype(np.float32)
    start = time.perf_counter()
    found = group_images(descriptors)
    took = time.perf_counter() - start
    print(f"from descriptors: {n:,} images in {took:.1f} s; peak memory {peak_mb():.0f} MB; {os.cpu_count()} CPU cores")
    print(f"  simulated persons: {agreement(found.groups, persons).line()}")

    from ensembler.data.project import load_project, update_project
    from ensembler.data.toy import make_toy_competition
    from predictors.group import group_split

    with tempfile.TemporaryDirectory() as tmp:
        people = max(1, args.images // 7)
        comp = make_toy_competition(Path(tmp) / "c", n_people=5, n_eval_people=people, seed=0, image_size=(384, 512))
        zoo = Path(tmp) / "team" / "model_zoo.yaml"
        update_project(zoo, data=comp.data)
        project = load_project(zoo)
        start = time.perf_counter()
        result = group_split(project, "eval", workers=args.workers)
        took = time.perf_counter() - start
        m = len(result.grouping.groups)
        print(f"from scratch: {m:,} full-size JPEGs decoded, described and grouped in {took:.1f} s ({m / took:.0f} images/s; "
              f"{took / m * n:.0f} s for {n:,}); peak memory {peak_mb():.0f} MB")
        print(f"  toy eval persons: {agreement(result.grouping.groups, comp.eval['person'].to_numpy()).line()}")


if __name__ == "__main__":
    main()
