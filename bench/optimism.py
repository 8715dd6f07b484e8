"""How optimistic is a composition's reported score? Reported out-of-fold score minus the score on
the hidden answers, over simulated teams whose eval mix is the train mix (no shift, so an honest
estimate is off by sampling noise alone, around 0 on average).

Pipelines: the soft vote (learns nothing: the control), a stack, auto, and steps fitted on
another step's cross-fitted rows (stack then prior correction, stack then F1 offsets, auto then
F1 offsets): the second step of these is fitted, fold by fold, on rows that the first step's
models for other folds had seen the labels of. `--nested` scores those pipelines with the whole
pipeline cross-fitted instead (`engine.run(..., nested=True)`: each fold by the pipeline fitted
on the other folds), and prints the time it costs. (Auto then decoding by person needs a data
folder of images and its grouping files, which simulated teams have not; its check is a
paired bootstrap on the labelled images, not a fit.)

    python bench/optimism.py [--kinds all] [--seeds 0-11] [--people 300] [--jobs 2] [--nested]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

PIPELINES = ("soft", "stack", "auto", "stack > priors", "stack > tune_f1", "auto > tune_f1")


def steps(text: str) -> list:
    import ensembler as ens

    made = {"soft": ens.Soft, "stack": ens.Stack, "auto": ens.Auto, "priors": lambda: ens.Priors("em"), "tune_f1": ens.TuneF1}
    return [made[name.strip()]() for name in text.split(">")]


def one_team(job: tuple[str, int, int, int, bool]) -> dict:
    """Reported and hidden 18-class macro F1 of every pipeline on one simulated team."""
    import ensembler as ens
    from ensembler.data.labels import TASKS
    from ensembler.data.teams import simulate_team, write_team
    from ensembler.pipeline.recipe import Recipe, Term
    from ensembler.scoring.metrics import score

    kind, seed, people, eval_people, nested = job
    team = simulate_team(kind, "none", n_train_people=people, n_eval_people=eval_people, seed=seed)
    recipe = Recipe({t: tuple(Term(m.name) for m in team.members if t in m.tasks) for t in TASKS})
    out = {"kind": kind, "seed": seed}
    with tempfile.TemporaryDirectory() as tmp:
        project = write_team(team, Path(tmp))
        for text in PIPELINES:
            start = time.perf_counter()
            result = ens.compose(project, recipe, ens.Pipeline(tuple(steps(text)), nested=nested and ">" in text))
            out[f"{text} seconds"] = time.perf_counter() - start
            out[text] = result.validation["recipe"]["f1_18"] - score(team.answers, result.eval.labels).f1_18
    return out


def span(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main() -> None:
    from ensembler.data.teams import KINDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="all")
    parser.add_argument("--seeds", default="0-11")
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--eval-people", type=int, default=400)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--nested", action="store_true", help="cross-fit the pipelines of several fitted steps as a whole")
    args = parser.parse_args()
    kinds = KINDS if args.kinds == "all" else tuple(args.kinds.split(","))
    jobs = [(kind, seed, args.people, args.eval_people, args.nested) for kind in kinds for seed in span(args.seeds)]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one_team, jobs))
    print(f"{len(rows)} teams ({', '.join(kinds)}; seeds {args.seeds}), {args.people} labelled and {args.eval_people} eval people each, no shift"
          f"{'; pipelines of several fitted steps nested' if args.nested else ''}")
    print(f"{'pipeline':18s} {'mean':>8s} {'std':>7s} {'worst':>7s} {'> 0.02':>7s}   {'- soft':>7s} {'std':>7s}   seconds a team (median)")
    soft = np.array([r["soft"] for r in rows])
    for text in PIPELINES:
        gap = np.array([r[text] for r in rows])
        seconds = np.median([r[f"{text} seconds"] for r in rows])
        paired = gap - soft
        print(f"{text:18s} {gap.mean():+8.4f} {gap.std():7.4f} {gap.max():+7.4f} {(gap > 0.02).mean():7.0%}   {paired.mean():+7.4f} {paired.std():7.4f}   {seconds:.1f}")
    print("reported out-of-fold 18-class F1 minus the hidden answers' (positive: optimistic); - soft: minus the soft vote's on the same team")
    print("(the soft vote learns nothing: its gap is the sampling noise between a team's labelled and eval images, common to every pipeline)")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
