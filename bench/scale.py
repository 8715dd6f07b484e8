"""Composing at the scale of other competitions: many classes, many images, many sources.

A declared single-task competition (``competition:`` in ``model_zoo.yaml``) with --classes
classes and --images eval images (files of a few bytes: nothing here decodes them), and
--sources prediction sets of Dirichlet probabilities written to the store (not timed). Then
``ens.compose`` of the soft vote of every source, in memory, as a notebook calls it: timed cold
(the first call, which also builds each set's binary sidecar from its CSV) and warm (the best
of --repeat later calls, as a team's second compose), with the process's peak resident memory.

    python bench/scale.py [--classes 500] [--images 10000] [--sources 10] [--repeat 3]
    python bench/scale.py --classes 1000 --images 20000      # the memory figure (goal: under 4 GB)
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ensembler.api import compose  # noqa: E402
from ensembler.data.project import load_project  # noqa: E402
from ensembler.data.store import PredictionSet, Split  # noqa: E402


def peak_gib() -> float:
    """This process's peak resident memory (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=500)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    classes = [f"class_{i:04d}" for i in range(args.classes)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = [f"{i:06d}.jpg" for i in range(args.images)]
        (root / "test").mkdir()
        for i in ids:
            (root / "test" / i).write_bytes(b"\xff\xd8")
        (root / "train").mkdir()
        for c in classes[:2]:  # the declaration wants a train layout; nothing here reads labelled rows
            (root / "train" / c).mkdir()
        pd.DataFrame({"id": ids, "label": classes[0]}).to_csv(root / "sample_submission.csv", index=False)
        declared = {
            "tasks": {"label": classes}, "metric": "accuracy", "train": {"folders": "train"},
            "eval": {"csv": "sample_submission.csv", "id": "id", "images": "test"}, "submission": {"answer": "label", "as": "name"},
        }
        (root / "model_zoo.yaml").write_text(yaml.safe_dump({"project": {"data": "."}, "competition": declared}, sort_keys=False))
        project = load_project(root / "model_zoo.yaml")
        store, space = project.store, project.competition.space
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        names = [f"m{s}" for s in range(args.sources)]
        for name in names:
            p = rng.dirichlet(np.full(args.classes, 0.1), size=args.images).astype(np.float32)
            store.write(PredictionSet(name, Split.EVAL, ids, {"label": p}, space=space))
        written = time.perf_counter() - start
        recipe = "label:" + "+".join(names)
        print(f"{args.sources} sources x {args.images:,} eval images x {args.classes} classes (store written in {written:.1f} s, not timed)")

        start = time.perf_counter()
        composition = compose(project, recipe)
        cold = time.perf_counter() - start
        warm = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            composition = compose(project, recipe)
            warm = min(warm, time.perf_counter() - start)
        assert len(composition.submission) == args.images
        print(f"soft vote, ens.compose: cold {cold:.2f} s (sidecars built), warm {warm:.2f} s (best of {args.repeat}); peak memory {peak_gib():.2f} GiB")


if __name__ == "__main__":
    main()
