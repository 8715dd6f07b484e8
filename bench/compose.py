"""Time `ens compose` on 20 sources x 12,600 eval images (the competition's eval size).

Prints, for soft and hard voting: the vote alone on in-memory arrays (joint and per-task), and
the whole `compose_submission` (read 20 prediction sets from their binary sidecars, align on
ImageID, vote, validate, write the submission, its manifest and the ensemble source). Then runs
`ens compose` in a fresh interpreter (a cold start) and shows that neither torch nor pandas
was imported.

    python bench/compose.py [--sources 20] [--images 12600] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ensembler.data.labels import TASKS, marginals
from ensembler.data.project import load_project, update_project
from ensembler.data.store import PredictionSet, Split, Store
from ensembler.data.toy import make_toy_competition
from ensembler.pipeline.composition import compose_submission
from ensembler.pipeline.recipe import parse_recipe
from ensembler.pipeline.steps import Method
from ensembler.pipeline.voting import vote


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=20)
    parser.add_argument("--images", type=int, default=12600)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    joints = [rng.dirichlet(np.full(18, 0.3), size=args.images).astype(np.float32) for _ in range(args.sources)]
    print(f"{args.sources} sources x {args.images} images, best of {args.repeat}")

    for method in (Method.SOFT, Method.HARD):
        t_joint = best_of(args.repeat, lambda: vote(joints, None, method))
        margs = [marginals(j) for j in joints]
        t_task = best_of(args.repeat, lambda: [vote([m[t] for m in margs], None, method) for t in TASKS])
        print(f"vote {method.value:4s}: joint {t_joint * 1e3:7.1f} ms, per-task {t_task * 1e3:7.1f} ms (in memory)")

    with tempfile.TemporaryDirectory() as tmp:
        comp = make_toy_competition(Path(tmp), n_people=5, n_eval_people=args.images // 7, seed=0)
        ids = comp.eval["ImageID"].to_numpy(object)
        zoo = Path(tmp) / "model_zoo.yaml"
        update_project(zoo, data=comp.data)
        project = load_project(zoo)
        store = Store(project.predictions)
        names = [f"m{i:02d}" for i in range(args.sources)]
        for name, joint in zip(names, joints):
            store.write(PredictionSet(name, Split.EVAL, ids[: len(joint)], joint=joint[: len(ids)], meta={"kind": "proba"}))
        recipe = parse_recipe("*:" + "+".join(names))
        counter = iter(range(1000))
        for method in (Method.SOFT, Method.HARD):
            t = best_of(args.repeat, lambda: compose_submission(project, recipe, method, name=f"b{next(counter)}"))
            print(f"compose_submission {method.value:4s}: {t:6.2f} s end to end, warm ({len(ids)} eval images; target < 0.5 s)")

        code = (
            "import sys, time\n"
            "t = time.perf_counter()\n"
            "from ensembler.cli import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "print(f'{time.perf_counter() - t:.2f}', 'torch' in sys.modules, 'pandas' in sys.modules)\n"
        )
        cmd = [sys.executable, "-c", code, "--zoo", str(zoo), "compose", "--recipe", str(recipe), "--name", "cli"]
        seconds, imported, pandas = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-3:]
        installed = importlib.util.find_spec("torch") is not None
        print(f"ens compose in a fresh interpreter: {seconds} s (target < 0.8 s); torch installed: {installed}; torch imported: {imported}; pandas imported: {pandas}")


if __name__ == "__main__":
    main()
