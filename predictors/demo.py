"""`ens demo`: the whole flow on a synthetic competition, in minutes on CPU.

`run_demo` runs the mask competition (below); `run_leaves_demo` a second, declared one
(`ens demo --competition leaves`: one task, four classes, plants as groups, scored by accuracy).

1. writes a toy competition in the real layout with drawn faces (`ensembler.data.toy`), the eval
   answers kept aside in ``answers.csv``;
2. writes the team's fold file (fold 0 is the validation hold-out);
3. trains a small team with the built-in trainer, on timm's smallest architectures (test_*):
   an 18-class model, a three-head model as a 5-fold group, an age-only model at a higher
   resolution, and a mask-and-gender model; the single models hold out fold 0;
4. registers them in the demo's ``model_zoo.yaml`` and runs `ens predict` with hflip TTA on
   the validation fold and on eval (one pass over the images each), and the fold group out of
   fold on every train image (scored alone on all of them);
5. composes a per-task recipe, two votes, ensemble selection, stacking and auto (all fitted on the
   validation predictions, scored by person-grouped cross-validation), and the votes and the
   learned ones again with EM prior correction (the eval set is older than train);
6. groups the train images into people blind to their names (`ens group`) and prints the
   agreement with the true persons, groups the eval images, and composes the soft vote and the
   fold group again with ``--by-person`` (applied only where the labelled check shows a gain;
   the fold group's check runs on every train image);
7. writes the submissions, prints the report, writes it as ``report.html`` with its plots, and
   scores every model and submission on the hidden answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from ensembler.data.dataset import split_project
from ensembler.data.project import add_model, load_project, update_project
from ensembler.data.store import Split
from ensembler.data.toy import make_toy_competition
from ensembler.errors import EnsError
from ensembler.evaluate.htmlreport import write_html_report
from ensembler.evaluate.report import Report, best_first, build_report
from ensembler.pipeline.composition import Submission, compose_submission
from ensembler.pipeline.persons import ByPerson
from ensembler.pipeline.priors import Priors
from ensembler.pipeline.recipe import complete_recipe, parse_recipe
from ensembler.pipeline.steps import combining
from ensembler.pipeline.steps import Method
from ensembler.pipeline.voting import Soft
from ensembler.scoring.metrics import Scores, own_prediction, score

from .group import group_split
from .runner import predict
from .train import train_model

HEADS = {"heads": {"mask": 3, "gender": 2, "age": 3}}
LOW, HIGH = [48, 64], [72, 96]  # width x height fed to the models
TEAM = [  # timm's smallest architectures (its test_* models, a few hundred thousand weights): a CPU trains each in seconds
    {"name": "ana-eff", "owner": "ana", "architecture": "test_efficientnet", "layout": "classes18", "preprocess": {"resize": LOW}, "fold": 0},
    {"name": "ben-heads", "owner": "ben", "architecture": "test_byobnet", "layout": HEADS, "preprocess": {"resize": LOW}, "folds": [0, 1, 2, 3, 4]},
    {"name": "chloe-age", "owner": "chloe", "architecture": "test_efficientnet", "layout": {"heads": {"age": 3}}, "preprocess": {"resize": HIGH}, "fold": 0},
    {"name": "dan-mg", "owner": "dan", "architecture": "test_resnet", "layout": {"heads": {"mask": 3, "gender": 2}}, "preprocess": {"resize": LOW}, "fold": 0},
]
LR = 1e-2
RECIPES = {
    "per-task": "age:chloe-age mask:dan-mg",  # as people say it: gender comes from dan-mg, the only one with gender
    "per-task-vote": "mask,gender:dan-mg+ben-heads+ana-eff age:chloe-age+ben-heads+ana-eff",
    "soft-vote": "*:ana-eff+ben-heads",
}
LEARNED = {"select": Method.SELECT, "stack": Method.STACK, "auto": Method.AUTO}  # fitted on the per-task-vote recipe's sources
PRIOR_CORRECTED = ("soft-vote", "per-task-vote", "select", "stack", "auto")  # each again with --prior em
BY_PERSON = "soft-vote"  # composed again with --by-person (after ens group on train and eval)
FOLD_GROUP = "ben-heads"  # a 5-fold group: predicted out of fold on every train image, composed alone with --by-person


@dataclass(frozen=True)
class DemoResult:
    """The demo's folder, its report, and the hidden-eval scores of each model and submission
    (the mask competition's `Scores`; a declared competition's metric, a number, named by `metric`)."""

    root: Path
    report: Report
    submissions: list[Submission]
    eval_scores: dict[str, Scores | float]
    labels: dict[str, str]  # a recipe's text in the report (tasks filled in) -> its name in RECIPES
    metric: str | None = None


class _Steps:
    """The demo's progress: the line that opens each step longer than a few seconds begins
    with its number of the total (``step 3/16: training …``)."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total, self.done, self.log = total, 0, log

    def __call__(self, line: str) -> None:
        self.done += 1
        self.log(f"step {self.done}/{self.total}: {line}")


def _fresh(root: Path) -> Path:
    """`root`, absolute; an error unless it is empty or absent (a demo never overwrites)."""
    root = Path(root).absolute()
    if root.exists() and any(root.iterdir()):
        raise EnsError(f"{root}: not empty; choose another --dir (the demo never overwrites)")
    return root


def run_demo(
    root: Path,
    seed: int = 0,
    n_people: int = 300,
    n_eval_people: int = 200,
    image_size: tuple[int, int] = (96, 128),
    epochs: int = 5,
    log: Callable[[str], None] = lambda _: None,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Run the flow in `root` (created; must be empty or absent)."""
    root = _fresh(root)
    trainings = sum(len(m.get("folds", [0])) for m in TEAM)
    step = _Steps(1 + trainings + 3 + 4, log)  # draw; train; predict val, eval, oof; compose, group, by person, report
    step(f"drawing a toy competition: {n_people} train people ({n_people * 7} images), {n_eval_people * 7} eval images, {image_size[0]}x{image_size[1]}")
    comp = make_toy_competition(root, n_people, n_eval_people, seed, image_size)
    zoo = root / "model_zoo.yaml"
    update_project(zoo, data=comp.data)
    split_project(load_project(zoo), seed=seed)
    log("wrote folds.csv: 5 folds by person, stratified by gender x age; fold 0 is validation")

    for member in TEAM:
        entry = {k: v for k, v in member.items() if k != "folds"} | {"tta": "hflip"}
        if "folds" in member:
            entry["folds"] = {k: f"models/{member['name']}/fold{k}.pth" for k in member["folds"]}
        else:
            entry["checkpoint"] = f"models/{member['name']}/best.pth"
        add_model(zoo, entry)
    project = load_project(zoo)

    cache: dict = {}
    for i, entry in enumerate(project.models):
        folds = entry.folds if entry.is_fold_group else {entry.fold: entry.checkpoint}
        for fold, checkpoint in folds.items():
            step(f"training {entry.name} ({entry.architecture}, {entry.layout.label}, {entry.preprocess.resize[0]}x{entry.preprocess.resize[1]}), fold {fold} held out")
            train_model(entry, comp.data, project.folds, fold, checkpoint, epochs=epochs, lr=LR, seed=seed * 100 + i, cache=cache, log=log)
    names = [e.name for e in project.models]
    for split in (Split.VAL, Split.EVAL):
        step(f"ens predict --split {split} for {len(names)} models (hflip TTA, one pass over the images)")
        predict(project, names, split, workers=0, progress=progress)
    step(f"ens predict --model {FOLD_GROUP} --split oof: every train image, by the fold model that never saw its person")
    predict(project, [FOLD_GROUP], Split.OOF, workers=0, progress=progress)
    oof_scope = build_report(project, sources=[FOLD_GROUP], replicates=0).scope
    log(f"{FOLD_GROUP} alone is scored {oof_scope}")

    plans = {name: (text, Method.SOFT) for name, text in RECIPES.items()}
    plans.update({name: (RECIPES["per-task-vote"], method) for name, method in LEARNED.items()})
    submissions = []
    step(f"ens compose: {sum(2 if name in PRIOR_CORRECTED else 1 for name in plans)} submissions (votes, selection, stacking, auto; most again with --prior em)")
    for name, (text, method) in plans.items():
        for prior in ("none", "em") if name in PRIOR_CORRECTED else ("none",):
            out = f"{name}-em" if prior == "em" else name
            steps = [combining(method)] + ([Priors("em")] if prior == "em" else [])
            submissions.append(compose_submission(project, parse_recipe(text), steps, name=out))
            record = (submissions[-1].step("priors") or {}).get("prior") or {}
            age = record.get("tasks", {}).get("age")
            note = f", --prior em ({'applied' if record['applied'] else 'not applied'}); age priors {age['train']} -> {age['eval']}" if age else ""
            for line in (submissions[-1].recipe.filled.values() if prior == "none" else ()):
                log(line)
            for warning in submissions[-1].warnings:
                log(f"WARNING: {warning}")
            log(f"wrote submissions/{out}.csv ({method} of {submissions[-1].recipe}{note})")
    step("ens group --split train, then --split eval: the images as people, from their looks (blind to the names)")
    trained = group_split(project, "train", workers=0)
    log(f"train grouping against the true persons: {trained.agreement.line()}")
    grouped = group_split(project, "eval", workers=0)
    log(f"eval: {len(grouped.grouping.groups)} images in {len(grouped.grouping.sizes)} groups")
    step(f"ens compose --by-person: {BY_PERSON} and {FOLD_GROUP} again, one decision per person where the labelled check shows a gain")
    for text, name in ((RECIPES[BY_PERSON], f"{BY_PERSON}-by-person"), (f"*:{FOLD_GROUP}", f"{FOLD_GROUP}-by-person")):
        people = compose_submission(project, parse_recipe(text), [Soft(), ByPerson()], name=name)
        submissions.append(people)
        record = (people.step("by_person") or {}).get("by_person") or {}
        check = record.get("check") or {}
        evidence = f"; labelled check on {check['images']} images: {check['gain']:+.4f} (90% CI {check['interval'][0]:+.4f} to {check['interval'][1]:+.4f}), true persons {check['ceiling_gain']:+.4f}" if check else ""
        log(f"wrote submissions/{name}.csv (--by-person {'applied' if record.get('applied') else 'not applied'}{evidence})")
    step("ens report: every model and composition on the validation people, with intervals; report.html")
    report = build_report(project, sources=names, recipes=[parse_recipe(t) for t in RECIPES.values()])
    learned = build_report(project, sources=names, recipes=[parse_recipe(RECIPES["per-task-vote"])], methods=list(LEARNED.values()))
    report = replace(report, rows=best_first(report.rows + [r for r in learned.rows if r.kind == "recipe"]))
    write_html_report(report, root / "report.html", "ens demo: validation report")
    log("wrote report.html (the validation report with its plots; open it in a browser)")

    truth = comp.eval.set_index("ImageID")["label"]
    store = project.store
    scores: dict[str, Scores] = {}
    for name in names:  # each model alone, on the tasks it predicts
        pset = store.read(name, Split.EVAL)
        scores[name] = score(truth.reindex(pset.image_ids).to_numpy(), own_prediction(pset))
    for sub in submissions:
        written = pd.read_csv(sub.csv)
        scores[sub.name] = score(truth.reindex(written["ImageID"]).to_numpy(), written["ans"].to_numpy())
    coverage = project.coverage()
    labels = {str(complete_recipe(parse_recipe(text), coverage)): name for name, text in RECIPES.items()}
    return DemoResult(root, report, submissions, scores, labels)



# --- the second competition: leaves, declared in model_zoo.yaml (issue 24) ------------------------

LEAF_SIZE = [64, 64]
LEAF_TEAM = [
    {"name": "ana-r10", "owner": "ana", "architecture": "resnet10t", "layout": {"classes": 4}, "preprocess": {"resize": LEAF_SIZE}, "fold": 0},
    {"name": "ben-regnet", "owner": "ben", "architecture": "regnetx_002", "layout": {"classes": 4}, "preprocess": {"resize": LEAF_SIZE}, "fold": 0},
    {"name": "chloe-hi", "owner": "chloe", "architecture": "regnety_002", "layout": {"classes": 4}, "preprocess": {"resize": [96, 96]}, "fold": 0},
]
LEAF_METHODS = (Method.SOFT, Method.GEO, Method.SELECT, Method.STACK, Method.AUTO)


def run_leaves_demo(
    root: Path,
    seed: int = 0,
    n_plants: int = 200,
    n_eval: int = 600,
    image_size: tuple[int, int] = (128, 128),
    epochs: int = 6,
    log: Callable[[str], None] = lambda _: None,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """The flow on a declared competition in `root` (created; must be empty or absent): draws
    leaves with one disease per plant (`toy.make_toy_leaves`, eval answers kept aside), declares
    it in ``model_zoo.yaml`` (`toy.LEAVES`), splits the plants into folds, trains three small
    models with ``layout: {classes: 4}`` holding out fold 0, predicts the validation fold and eval
    with hflip TTA, composes the soft and geometric votes, selection, stacking and auto (scored by
    accuracy, folds and intervals by plant), reports, and scores each on the hidden answers."""
    import yaml

    from ensembler.data.toy import LEAVES, make_toy_leaves
    from ensembler.scoring.metrics import competition_score

    root = _fresh(root)
    step = _Steps(1 + len(LEAF_TEAM) + 2 + 2, log)  # draw; train; predict val, eval; compose, report
    step(f"drawing a leaf-disease competition: {n_plants} plants x 3 photos, {n_eval} eval images, {image_size[0]}x{image_size[1]}; declared in model_zoo.yaml (tasks, metric, layout, submission)")
    comp = make_toy_leaves(root, n_plants, 3, n_eval, seed, image_size)
    zoo = root / "model_zoo.yaml"
    zoo.write_text(yaml.safe_dump({"project": {"data": "data"}, "competition": LEAVES}, sort_keys=False))
    split_project(load_project(zoo), seed=seed)
    log("wrote folds.csv: 5 folds by plant, stratified by disease; fold 0 is validation")
    for member in LEAF_TEAM:
        add_model(zoo, member | {"tta": "hflip", "checkpoint": f"models/{member['name']}/best.pth"})
    project = load_project(zoo)
    cache: dict = {}
    for i, entry in enumerate(project.models):
        step(f"training {entry.name} ({entry.architecture}, {entry.layout.label}, {entry.preprocess.resize[0]}x{entry.preprocess.resize[1]}), fold 0 held out")
        train_model(entry, comp.data, project.folds, 0, entry.checkpoint, epochs=epochs, lr=LR, seed=seed * 100 + i, cache=cache, log=log, competition=project.competition)
    names = [e.name for e in project.models]
    for split in (Split.VAL, Split.EVAL):
        step(f"ens predict --split {split} for {len(names)} models (hflip TTA, one pass over the images)")
        predict(project, names, split, workers=0, progress=progress)
    step(f"ens compose: {len(LEAF_METHODS)} submissions ({', '.join(map(str, LEAF_METHODS))})")
    recipe = parse_recipe("label:" + "+".join(names), project.competition.space)
    submissions = []
    for method in LEAF_METHODS:
        submissions.append(compose_submission(project, recipe, combining(method), name=str(method)))
        chosen = ((submissions[-1].step("auto") or {}).get("auto") or {}).get("chosen")
        log(f"wrote submissions/{method}.csv ({method} of {recipe}" + (f": chose {chosen}" if chosen else "") + ")")
    step("ens report: every model and composition on the validation plants, with intervals")
    report = build_report(project, sources=names, recipes=[recipe], methods=list(LEAF_METHODS))
    truth = pd.read_csv(comp.answers).set_index("ImageID")["label"]
    competition, store = project.competition, project.store
    scores: dict[str, Scores | float] = {}
    for name in names:
        pset = store.read(name, Split.EVAL)
        scores[name] = competition_score(competition, truth.reindex(pset.image_ids).to_numpy(), pset.probs)
    for sub in submissions:
        written = pd.read_csv(sub.csv, dtype=str)
        decided = written["label"].map({c: i for i, c in enumerate(competition.tasks[0].classes)}).to_numpy()
        scores[sub.name] = float((decided == truth.reindex(written["image_id"]).to_numpy()).mean())
    return DemoResult(root, report, submissions, scores, {str(recipe): "team"}, str(competition.metric))
