"""Composing at the scale of other competitions: many classes, many images, many sources.

A declared single-task competition (``competition:`` in ``model_zoo.yaml``) with --classes
classes and --images eval images (files of a few bytes: nothing here decodes them), and
--sources prediction sets of Dirichlet probabilities written to the store (not timed). Then
``ens.compose`` of the soft vote of every source, in memory, as a notebook calls it: timed cold
(the first call, which also builds each set's binary sidecar from its CSV) and warm (the best
of --repeat later calls, as a team's second compose), with the process's peak resident memory.

With --auto N, N labelled images too (a folder per class, every class about as common), each
source right on its own share of them (a margin on the true class, noise of its own), written as
out-of-fold sets; then ``ens.compose(..., "auto")`` is timed once (goal: under 2 minutes at 500
classes x 10,000 eval images x 10 sources).

    python bench/scale.py [--classes 500] [--images 10000] [--sources 10] [--repeat 3]
    python bench/scale.py --classes 1000 --images 20000      # the memory figure (goal: under 4 GB)
    python bench/scale.py --auto 10000                       # auto over 10,000 labelled images
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
    parser.add_argument("--auto", type=int, default=0, metavar="N", help="also time auto, fitted on N labelled images")
    args = parser.parse_args()
    classes = [f"class_{i:04d}" for i in range(args.classes)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = [f"{i:06d}.jpg" for i in range(args.images)]
        (root / "test").mkdir()
        for i in ids:
            (root / "test" / i).write_bytes(b"\xff\xd8")
        (root / "train").mkdir()
        rng = np.random.default_rng(0)
        truth = rng.permutation(np.arange(args.auto) % args.classes)  # every class about as common
        labelled = [f"{classes[c]}/{i:06d}.jpg" for i, c in enumerate(truth)]
        for c in classes[: max(2, args.classes if args.auto else 2)]:
            (root / "train" / c).mkdir()
        for i in labelled:
            (root / "train" / i).write_bytes(b"\xff\xd8")
        pd.DataFrame({"id": ids, "label": classes[0]}).to_csv(root / "sample_submission.csv", index=False)
        declared = {
            "tasks": {"label": classes}, "metric": "accuracy", "train": {"folders": "train"},
            "eval": {"csv": "sample_submission.csv", "id": "id", "images": "test"}, "submission": {"answer": "label", "as": "name"},
        }
        (root / "model_zoo.yaml").write_text(yaml.safe_dump({"project": {"data": "."}, "competition": declared}, sort_keys=False))
        project = load_project(root / "model_zoo.yaml")
        store, space = project.store, project.competition.space
        start = time.perf_counter()
        names = [f"m{s}" for s in range(args.sources)]
        for s, name in enumerate(names):
            p = rng.dirichlet(np.full(args.classes, 0.1), size=args.images).astype(np.float32)
            store.write(PredictionSet(name, Split.EVAL, ids, {"label": p}, space=space))
            if args.auto:
                logits = rng.normal(0, 1, (args.auto, args.classes))
                logits[np.arange(args.auto), truth] += 2.0 + 0.2 * s  # sources of different skills
                q = np.exp(logits - logits.max(axis=1, keepdims=True))
                store.write(PredictionSet(name, Split.OOF, labelled, {"label": (q / q.sum(axis=1, keepdims=True)).astype(np.float32)}, None, truth, space=space))
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
        if args.auto:
            start = time.perf_counter()
            composition = compose(project, recipe, "auto")
            took = time.perf_counter() - start
            record = composition.step("auto")["auto"]
            print(f"auto over {args.auto:,} labelled images: {took:.1f} s; chose {record['chosen']!r} ({record['why']['rule']}); peak memory {peak_gib():.2f} GiB")
            for line in (record.get("thin") or {}).values():
                print(f"  {line}")


if __name__ == "__main__":
    main()
