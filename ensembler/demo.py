"""`ens demo`: the core's whole flow on a toy competition, in seconds.

Three simulated teammates share CSVs: ``polar`` (probabilities; strong on mask and gender, weak
on age), ``peter`` (a hard-label submission; strong on age) and ``ken`` (probabilities; middling).
The demo writes the data, the fold file, imports the three, composes a per-task recipe and a
soft vote, reports validation scores, and scores every submission on the hidden eval answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .compose import Submission, compose_submission
from .dataset import split_project
from .errors import EnsError
from .labels import N_JOINT, Task
from .metrics import macro_f1
from .project import load_project, update_project
from .recipe import parse_recipe
from .report import Report, build_report
from .sources import import_source
from .store import Split, Store
from .toy import eval_f1, make_toy_competition, teammate_csv

M, G, A = Task.MASK, Task.GENDER, Task.AGE
TEAM = {
    "polar": ({M: 3.0, G: 2.5, A: 0.6}, False),
    "peter": ({M: 1.0, G: 0.8, A: 2.0}, True),
    "ken": ({M: 2.0, G: 1.5, A: 1.0}, False),
}
RECIPES = {"per-task": "age:peter mask,gender:polar", "soft-vote": "*:polar+ken"}


@dataclass(frozen=True)
class DemoResult:
    """The demo's folder, its report, and the hidden-eval macro F1 of each source and submission."""

    root: Path
    report: Report
    submissions: list[Submission]
    eval_f1: dict[str, float]


def run_demo(root: Path, seed: int = 0, n_people: int = 300, n_eval_people: int = 200, log: Callable[[str], None] = lambda _: None) -> DemoResult:
    """Run the flow in `root` (created; must be empty or absent)."""
    root = Path(root).absolute()
    if root.exists() and any(root.iterdir()):
        raise EnsError(f"{root}: not empty; choose another --dir (the demo never overwrites)")
    log(f"writing a toy competition ({n_people} train people, {n_eval_people * 7} eval images) to {root / 'data'}")
    comp = make_toy_competition(root, n_people, n_eval_people, seed)
    zoo = root / "model_zoo.yaml"
    update_project(zoo, data=comp.data)
    project = load_project(zoo)
    split_project(project, seed=seed)
    log(f"wrote the fold file {project.folds.name} (5 folds by person; fold {project.val_fold} is validation)")

    shared = root / "shared"
    shared.mkdir()
    for i, (name, (skill, hard)) in enumerate(TEAM.items()):
        rows = teammate_csv(comp.train, skill, seed * 100 + i, hard), teammate_csv(comp.eval, skill, seed * 100 + 50 + i, hard)
        path = shared / f"{name}.csv"
        pd.concat(rows).to_csv(path, index=False)
        import_source(project, path, name)
        log(f"imported {path.name} as source {name!r} ({'hard labels' if hard else 'probabilities'})")

    recipes = [parse_recipe(r) for r in RECIPES.values()]
    submissions = [compose_submission(project, r, name=n) for n, r in zip(RECIPES, recipes)]
    for sub in submissions:
        log(f"wrote {sub.csv.relative_to(root)} and {sub.manifest.name}")
    report = build_report(project, sources=list(TEAM), recipes=recipes)
    truth = comp.eval.set_index("ImageID")["label"]
    store = Store(project.predictions)
    scores = {}
    for name in TEAM:  # a source alone is its joint argmax (what composing it alone writes)
        pset = store.read(name, Split.EVAL)
        scores[name] = macro_f1(truth.reindex(pset.image_ids).to_numpy(), pset.joint.argmax(axis=1), N_JOINT)
    scores.update({s.name: eval_f1(comp.answers, s.csv) for s in submissions})
    return DemoResult(root, report, submissions, scores)
