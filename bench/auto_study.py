"""Auto's choice studied offline: capture each simulated team's candidates once, then score any
rule of choosing (or blending) among them on the hidden answers in seconds.

`capture` runs `bench/evidence.py`'s teams (kinds x shifts x sizes x seeds) and keeps, per team,
what auto's final choice is made from (`Auto._candidates` on all the labelled images): each whole
candidate's out-of-fold per-task probabilities and decisions on the labelled images, its eval
probabilities and decisions, the eval-mix weights and the people, and the hidden answers; and
the hidden 18-class macro F1 of the fixed methods (soft, hard, geo, select, stack), of auto and
of plain auto. Select and stack are taken as auto's candidates of them (`selection per task`, `stack
per task`: the same fits but for the thin-class fallback), auto as the candidate it chose.
`rules` replays rules of choice on those captures: the rule of today (the soft
vote unless the best candidate's paired gain is beyond the noise) and others, each printed as
`bench/evidence.py` prints auto (mean and worst against the soft vote, and against the best
fixed method chosen after the fact).

    python bench/auto_study.py capture --out /tmp/auto-study [--sizes 60,150,300,540] [--seeds 100-104] [--jobs 2]
    python bench/auto_study.py rules --out /tmp/auto-study
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

FIXED = ("soft", "hard", "geo", "select", "stack")


def capture_team(job: tuple[str, str, int, int, int, str]) -> str:
    import ensembler as ens
    from ensembler.data.labels import TASKS
    from ensembler.data.teams import simulate_team, write_team
    from ensembler.pipeline.auto import Auto
    from ensembler.pipeline.recipe import Recipe, Term
    from ensembler.scoring.metrics import score

    kind, shift, people, seed, eval_people, out = job
    name = f"{kind}-{shift}-{people}-{seed}"
    if (Path(out) / f"{name}.npz").is_file():
        return name
    team = simulate_team(kind, shift, n_train_people=people, n_eval_people=eval_people, seed=seed)
    recipe = Recipe({t: tuple(Term(m.name) for m in team.members if t in m.tasks) for t in TASKS})
    seen: dict = {}
    choose, candidates = Auto._choose, Auto._candidates

    class Captured(Exception):
        """Auto's fit on every labelled image is done (the engine fits it first, then in each
        fold for its own score, which the study does not need)."""

    def spy_choose(self, recipe, x, labels, folds, per_task, target, guard, weights, ctx):
        chosen = choose(self, recipe, x, labels, folds, per_task, target, guard, weights, ctx)
        if len(labels) == len(team.labels):
            ids = next(iter(x.values())).image_ids
            seen.update(n=len(labels), weights=weights, persons=ctx.groups(ids), folds=folds, labels=labels, chosen=chosen[0].label, whole=chosen[0])
            raise Captured
        return chosen

    def spy_candidates(self, recipe, x, labels, folds, per_task, target, guard, ctx):
        found = candidates(self, recipe, x, labels, folds, per_task, target, guard, ctx)
        if len(labels) == len(team.labels):
            seen["found"], seen["target"] = found, target
        return found

    fixed = {}
    with tempfile.TemporaryDirectory() as tmp:
        project = write_team(team, Path(tmp))
        for method in ("soft", "hard", "geo"):  # select and stack: auto's candidates of them (below)
            fixed[method] = score(team.answers, ens.compose(project, recipe, method).eval.labels).f1_18
        Auto._choose, Auto._candidates = spy_choose, spy_candidates
        try:
            ens.compose(project, recipe, Auto())
        except Captured:
            pass
        finally:
            Auto._choose, Auto._candidates = choose, candidates
        fixed["auto_chose"] = seen["chosen"]
        whole, allowed, _ = seen["found"]
        eval_sets = [c.fitted.apply(seen["target"]) for c in whole]
        eval_ids = eval_sets[0].image_ids
        answer_of = dict(zip(team.eval_ids.tolist(), team.answers.tolist()))
        answers = np.array([answer_of[i] for i in eval_ids.tolist()])
    hidden = {c.label: score(answers, e.labels).f1_18 for c, e in zip(whole, eval_sets)}
    fixed["select"], fixed["stack"] = hidden["selection per task"], hidden["stack per task"]
    chosen_eval = seen["whole"].fitted.apply(seen["target"])  # a candidate, or a blend of the soft vote with one
    fixed["auto"] = score(np.array([answer_of[i] for i in chosen_eval.image_ids.tolist()]), chosen_eval.labels).f1_18
    tasks = list(TASKS)
    folds = np.zeros(seen["n"], np.int64)
    for f, (_, held) in enumerate(seen["folds"]):
        folds[held] = f
    arrays = {
        "labels": seen["labels"],
        "persons": np.unique(seen["persons"], return_inverse=True)[1],
        "folds": folds,
        "weights": np.ones(seen["n"]) if seen["weights"] is None else seen["weights"],
        "allowed": allowed,
        "answers": answers,
        "oof_labels": np.stack([c.scored.labels for c in whole]),
        "eval_labels": np.stack([e.labels for e in eval_sets]),
    }
    for t in tasks:
        arrays[f"oof_{t}"] = np.stack([c.scored.probs[t] for c in whole]).astype(np.float32)
        arrays[f"eval_{t}"] = np.stack([e.probs[t] for e in eval_sets]).astype(np.float32)
    np.savez_compressed(Path(out) / f"{name}.npz", **arrays)
    meta = {"kind": kind, "shift": shift, "people": people, "seed": seed, "candidates": [c.label for c in whole], **fixed}
    (Path(out) / f"{name}.json").write_text(json.dumps(meta))
    return name


def seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def capture(args: argparse.Namespace) -> None:
    from ensembler.data.teams import KINDS, SHIFTS

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(k, s, n, seed, args.eval_people, str(out)) for n in map(int, args.sizes.split(",")) for k in KINDS for s in SHIFTS for seed in seeds(args.seeds)]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        for i, name in enumerate(pool.map(capture_team, jobs), 1):
            print(f"[{time.perf_counter() - start:6.0f}s] {i}/{len(jobs)} {name}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("capture", "rules"))
    parser.add_argument("--out", default="/tmp/auto-study")
    parser.add_argument("--sizes", default="60,150,300,540")
    parser.add_argument("--seeds", default="100-104")
    parser.add_argument("--eval-people", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if args.what == "capture":
        capture(args)
    else:
        from auto_rules import main as rules

        rules(Path(args.out))


if __name__ == "__main__":
    main()
