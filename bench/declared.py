"""Auto on simulated teams of other competitions: never below its soft vote, however thin the labels.

Single-task teams of a declared competition (`ensembler.data.teams.simulate_declared_team`) with
60, 180 and 540 labelled groups of 3 images, for six declared competitions: 5 classes scored by
accuracy (a leaf-disease layout), a binary task scored by AUC (a lesion layout, probability
submission), 20 classes scored by macro F1 (kinds classifiers, overconfident, near-copies,
one-strong, biased); 5 ordered grades scored by quadratic kappa (graded: errors mostly one grade
off; overconfident; biased), 8 imbalanced classes scored by balanced accuracy (imbalanced;
overconfident; biased) and 60 classes scored by MAP@5 (classifiers, one-strong, near-copies).
Each team's soft vote, selection, stack and auto are fitted on the labelled images (out of fold,
folds by group, through the engine `ens compose` runs; auto with the decision it brings for its
metric, kept only on evidence) and scored with the declared metric on 2,000 hidden eval answers
(the stack column is nan where auto does not offer a stack: 20 classes from 4 sources is past
`learned.AUTO_STACK_WEIGHTS`). For kappa and balanced accuracy, ``decide`` is the soft vote then
the metric's decision (`--decide cut-points` / `prior-divided`), always applied. The bars (issues
24 and 35): auto never below the soft vote with its argmax by more than 0.005 of the metric on
more than 3 % of the teams, and never by more than 0.02.

    python bench/declared.py [--seeds 3] [--groups 60,180,540] [--kinds all] [--metrics accuracy,auc,macro_f1,quadratic_kappa,balanced_accuracy,map@5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ensembler.data.competition import parse_competition
from ensembler.data.teams import DECLARED_KINDS, simulate_declared_team
from ensembler.pipeline.engine import REGISTRY, Context, Pipeline, run
from ensembler.pipeline.learned import AUTO_STACK_WEIGHTS, stack_too_large
from ensembler.pipeline.recipe import parse_recipe
from ensembler.pipeline.scope import Labelled
from ensembler.pipeline.steps import pipeline_of
from ensembler.pipeline.voting import Soft
from ensembler.scoring.metrics import composed_score

LAYOUT = {"train": {"csv": "train.csv", "id": "image_id", "images": "train", "labels": {}, "group": "group"}, "eval": {"csv": "sample_submission.csv", "id": "image_id", "images": "test"}}
COMPETITIONS = {
    "accuracy": {"tasks": {"label": ["cbb", "cbsd", "cgm", "cmd", "healthy"]}, "submission": {"answer": "label"}},
    "auc": {"tasks": {"target": ["benign", "malignant"]}, "submission": {"proba": {"target": "malignant"}}},
    "macro_f1": {"tasks": {"species": [f"s{i}" for i in range(20)]}, "submission": {"answer": "species"}},
    "quadratic_kappa": {"tasks": {"diagnosis": ["none", "mild", "moderate", "severe", "proliferative"]}, "submission": {"answer": "diagnosis"}},
    "balanced_accuracy": {"tasks": {"lesion": ["NV", "MEL", "BCC", "BKL", "AK", "SCC", "VASC", "DF"]}, "submission": {"answer": "lesion", "as": "name"}},
    "map@5": {"tasks": {"whale": [f"w_{i:03d}" for i in range(60)]}, "submission": {"answer": "whale", "as": "name"}},
}
KINDS = {  # the kinds each competition's teams are drawn from (all: every one)
    "quadratic_kappa": ("graded", "overconfident", "biased"),
    "balanced_accuracy": ("imbalanced", "overconfident", "biased"),
    "map@5": ("classifiers", "one-strong", "near-copies"),
}
METHODS = ("soft", "select", "stack", "auto")


def competition(metric: str):
    spec = {**LAYOUT, **COMPETITIONS[metric], "metric": metric}
    task = next(iter(spec["tasks"]))
    spec["train"] = {**LAYOUT["train"], "labels": {task: task}}
    return parse_competition(spec, Path("model_zoo.yaml"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--groups", default="60,180,540")
    parser.add_argument("--kinds", default="all")
    parser.add_argument("--metrics", default="accuracy,auc,macro_f1,quadratic_kappa,balanced_accuracy,map@5")
    args = parser.parse_args()
    start = time.perf_counter()
    losses, gains, decided, auto_seconds = [], {}, {}, []
    for metric in args.metrics.split(","):
        comp = competition(metric)
        kinds = (KINDS.get(metric, DECLARED_KINDS[:5]) if args.kinds == "all" else tuple(args.kinds.split(",")))
        decision = next((step(optional=False) for step in REGISTRY.values() if step.offered and comp.metric in (step.metrics or ())), None)
        pipelines = {name: pipeline_of(name).with_companions(None, comp) for name in METHODS}  # auto as compose runs it
        if decision is not None:
            pipelines["decide"] = Pipeline((Soft(), decision))
        print(f"\n== {metric}: {comp.line()} ==")
        print(f"{'kind':14s} {'groups':>6s} {'seed':>4s} " + " ".join(f"{m:>7s}" for m in pipelines) + "  auto-soft  auto chose")
        for kind in kinds:
            for n_groups in map(int, args.groups.split(",")):
                for seed in range(args.seeds):
                    team = simulate_declared_team(kind, comp, n_groups=n_groups, seed=seed)
                    labelled_sets, eval_sets = team.sets()
                    recipe = parse_recipe("*:" + "+".join(team.members), comp.space)
                    labelled = Labelled(labelled_sets, team.labels, "simulated", True, (), team.groups)
                    row, chose = {}, ""
                    for name, pipeline in pipelines.items():
                        if name == "stack" and stack_too_large(recipe, labelled_sets, comp.space.tasks[0], limit=AUTO_STACK_WEIGHTS):
                            row["stack"] = float("nan")  # 20 classes: a minute a fit at lbfgs's iteration limit; auto leaves it out too
                            continue
                        clock = time.perf_counter()
                        done = run(pipeline, labelled, eval_sets, Context(recipe, competition=comp))
                        row[name] = composed_score(comp, team.answers, done.eval)
                        if name == "auto":
                            auto_seconds.append(time.perf_counter() - clock)
                            chose = done.records[0]["auto"]["chosen"] + "".join(f" > {r['step']}" for r in done.records[1:] if r.get("applied"))
                    sign = 1.0 if comp.metric.higher_is_better else -1.0
                    gap = sign * (row["auto"] - row["soft"])
                    gains.setdefault(metric, []).append(gap)
                    if "decide" in row:
                        decided.setdefault(metric, {}).setdefault(n_groups, []).append(sign * (row["decide"] - row["soft"]))
                    if gap < -0.005:
                        losses.append(f"{metric}/{kind}/{n_groups} groups/seed {seed}: auto {row['auto']:.4f}, soft vote {row['soft']:.4f}")
                    print(f"{kind:14s} {n_groups:6d} {seed:4d} " + " ".join(f"{row[m]:7.4f}" for m in pipelines) + f"  {gap:+8.4f}   {chose}")
    print(f"\n{time.perf_counter() - start:.0f} s; auto {np.median(auto_seconds):.1f} s median per team, {max(auto_seconds):.1f} s at most")
    for metric, g in gains.items():
        g = np.array(g)
        print(f"{metric}: auto - soft vote over {len(g)} teams: mean {g.mean():+.4f}, worst {g.min():+.4f}, best {g.max():+.4f}; above the vote in {np.mean(g > 0.005):.0%}, below by more than 0.005 in {np.mean(g < -0.005):.0%}")
    for metric, by_size in decided.items():
        print(f"{metric}: the decision after the soft vote, mean gain over its argmax by labelled groups: " + ", ".join(f"{size}: {np.mean(g):+.4f} (worst {np.min(g):+.4f})" for size, g in by_size.items()))
    print("where auto is below the soft vote by more than 0.005: " + ("; ".join(losses) or "nowhere"))


if __name__ == "__main__":
    main()
