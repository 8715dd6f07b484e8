"""Auto against the soft vote over evidence sizes: every team kind and eval shift, at 60, 150,
300 and 540 labelled people, over several seeds, scored on the simulated hidden answers.

For each team (`ensembler.data.teams.simulate_team`, 300 eval people by default) it composes
the recipe of all members with the soft vote, the fixed methods (hard, geo, select, stack) and
auto, cautious (`Auto()`: only on evidence, never on a class too thin to learn, never a
run-away) and plain (`Auto(cautious=False)`, issue 11's best out-of-fold score), and prints,
per evidence size, the distribution of auto - soft and of auto - the best fixed method (chosen
after the fact on the hidden answers): mean, worst, and how many teams fall below -0.005 and
-0.02; and how often auto kept the soft vote.

    python bench/evidence.py [--sizes 60,150,300,540] [--seeds 100-104] [--kinds all] [--shifts all] [--jobs 2] [--rows FILE]

Each finished team is printed to stderr as it comes (the run takes an hour or more on 2 cores)
and appended to `--rows` (JSON lines); `--summarise FILE` prints the tables from such a file,
so a run cut short still counts what it finished.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

FIXED = ("soft", "hard", "geo", "select", "stack")


def one_team(job: tuple[str, str, int, int, int]) -> dict:
    """The hidden 18-class F1 of every method on one simulated team."""
    import ensembler as ens
    from ensembler.data.labels import TASKS
    from ensembler.data.teams import simulate_team, write_team
    from ensembler.pipeline.recipe import Recipe, Term
    from ensembler.scoring.metrics import score

    kind, shift, people, seed, eval_people = job
    team = simulate_team(kind, shift, n_train_people=people, n_eval_people=eval_people, seed=seed)
    recipe = Recipe({t: tuple(Term(m.name) for m in team.members if t in m.tasks) for t in TASKS})
    out = {"kind": kind, "shift": shift, "people": people, "seed": seed}
    with tempfile.TemporaryDirectory() as tmp:
        project = write_team(team, Path(tmp))
        for method in FIXED:
            out[method] = score(team.answers, ens.compose(project, recipe, method).eval.labels).f1_18
        for label, step in (("auto", ens.Auto()), ("before", ens.Auto(blends=False)), ("plain", ens.Auto(cautious=False))):
            result = ens.compose(project, recipe, step)
            out[label] = score(team.answers, result.eval.labels).f1_18
            out[f"{label}_kept_soft"] = result.step("auto")["auto"]["chosen"].startswith("soft vote ")
    return out


def seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def summary(rows: list[dict], auto: str) -> str:
    vs_soft = np.array([r[auto] - r["soft"] for r in rows])
    vs_best = np.array([r[auto] - max(r[m] for m in FIXED) for r in rows])
    kept = np.mean([r[f"{auto}_kept_soft"] for r in rows])
    return (
        f"{len(rows):5d}  {vs_soft.mean():+8.4f} {vs_soft.min():+8.4f} {int((vs_soft < -0.005).sum()):5d} {int((vs_soft < -0.02).sum()):5d} {int((vs_soft > 0.005).sum()):5d}"
        f"   {vs_best.mean():+8.4f} {vs_best.min():+8.4f} {int((vs_best < -0.005).sum()):5d}   {kept:6.0%}"
    )


def main() -> None:
    from ensembler.data.teams import KINDS, SHIFTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="60,150,300,540", help="labelled people per team")
    parser.add_argument("--seeds", default="100-104", help="a seed or a range, e.g. 100-104")
    parser.add_argument("--kinds", default="all")
    parser.add_argument("--shifts", default="all")
    parser.add_argument("--eval-people", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2, help="processes")
    parser.add_argument("--rows", type=Path, help="append each finished team to this file (JSON lines)")
    parser.add_argument("--summarise", type=Path, help="print the tables of a --rows file and stop")
    args = parser.parse_args()
    if args.summarise:
        rows = [json.loads(line) for line in args.summarise.read_text().splitlines() if line.strip()]
        report(rows, sorted({r["people"] for r in rows}), f"{len(rows)} teams from {args.summarise}")
        return
    kinds = KINDS if args.kinds == "all" else tuple(args.kinds.split(","))
    shifts = SHIFTS if args.shifts == "all" else tuple(args.shifts.split(","))
    sizes = [int(s) for s in args.sizes.split(",")]
    jobs = [(k, s, n, seed, args.eval_people) for seed in seeds(args.seeds) for n in sizes for k in kinds for s in shifts]  # seed by seed: a run cut short holds whole seeds
    start = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for done in as_completed([pool.submit(one_team, job) for job in jobs]):
            row = done.result()
            rows.append(row)
            print(f"[{len(rows)}/{len(jobs)}] {time.perf_counter() - start:5.0f} s  {row['kind']}/{row['shift']}/{row['people']}/seed {row['seed']}: auto - soft {row['auto'] - row['soft']:+.4f}", file=sys.stderr, flush=True)
            if args.rows:
                with args.rows.open("a") as out:
                    out.write(json.dumps(row) + "\n")
    report(rows, sizes, f"{len(rows)} teams: {len(kinds)} kinds x {len(shifts)} shifts x {len(sizes)} sizes x {len(seeds(args.seeds))} seeds, {args.eval_people} eval people each; {time.perf_counter() - start:.0f} s")


def report(rows: list[dict], sizes: list[int], title: str) -> None:
    """The tables: per evidence size, each auto against the soft vote and the hindsight-best."""
    print(title)
    header = "teams   mean-soft  worst  <-.005 <-.02 >+.005   mean-best   worst  <-.005   kept soft"
    for auto, heading in (
        ("auto", "auto (Auto(), the default: moves from the soft vote toward a candidate, at most half-way)"),
        ("before", "all-or-nothing auto (Auto(blends=False): the soft vote unless a candidate's gain is beyond the noise; last round's default)"),
        ("plain", "plain auto (Auto(cautious=False), issue 11)"),
    ):
        print(f"\n{heading}: auto - soft vote, and auto - the best fixed method ({', '.join(FIXED)}; chosen on the hidden answers)")
        print(f"{'people':>6s} {header}")
        for n in (n for n in sizes if any(r["people"] == n for r in rows)):
            print(f"{n:6d} " + summary([r for r in rows if r["people"] == n], auto))
        print(f"{'all':>6s} " + summary(rows, auto))
    worst = sorted(rows, key=lambda r: r["auto"] - r["soft"])[:5]
    print("\nwhere cautious auto trails the soft vote most: " + "; ".join(f"{r['kind']}/{r['shift']}/{r['people']}/seed {r['seed']}: {r['auto'] - r['soft']:+.4f}" for r in worst))


if __name__ == "__main__":
    main()
