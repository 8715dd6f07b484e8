"""The Python API: what the command line does, for a notebook. ``import ensembler as ens``.

Every function takes a `Project` (`load_project`) and mirrors one command; the CLI runs the
same code. Nothing here imports torch except `predict`, and only when it is called.

Example (docs/how-to/notebook.md's; the test suite runs it)::

    import ensembler as ens

    project = ens.load_project("model_zoo.yaml", data="DATA")
    ens.import_source(project, "polar.csv", "polar")          # ImageID,0..17 probabilities
    ens.import_source(project, "peter_age.csv", "peter", kind="task", task="age")
    result = ens.compose(project, "age:peter mask:polar")      # in memory; nothing written (a soft vote)
    result.submission.head()                                   # ImageID, ans
    result.recipe.filled                                       # {gender: "gender: not named; from polar, …"}
    ens.compose(project, "age:peter mask:polar", [ens.Soft(), ens.Priors("em")], name="v1", write=True)
    tables = ens.report(project, recipes=["age:peter mask:polar"], methods=["soft", "hard"])
    tables.scores                                              # one row per source and recipe x method
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data.labels import Task
from .data.project import Project
from .data.project import load_project as _load_project
from .data.sources import ImportKind
from .data.sources import import_source as _import_source
from .errors import EnsError
from .pipeline.composition import Composition, Submission, write_composition
from .pipeline.composition import compose as _compose
from .pipeline.engine import Pipeline, Step
from .pipeline.recipe import Recipe, parse_recipe
from .pipeline.steps import Method
from .pipeline.voting import Tie

if TYPE_CHECKING:
    import pandas as pd

    from .evaluate.report import Report


def load_project(zoo: str | Path = "model_zoo.yaml", data: str | Path | None = None) -> Project:
    """The project of `zoo` (``model_zoo.yaml``; it need not exist yet), as the CLI's
    ``--zoo``/``--data``: data folder, fold file, models, where predictions and submissions go.

    Parameters
    ----------
    zoo : the project file. data : the competition's data folder (``train/``, ``eval/``);
        overrides the file's ``project.data``.
    """
    return _load_project(Path(zoo), None if data is None else Path(data))


def split(project: Project, folds: int = 5, seed: int = 42, val_fold: int = 0, force: bool = False) -> pd.DataFrame:
    """Write the team's fold file (``ens split``) and name it, and the validation fold, in the
    project file: the mask competition's people (all seven photos) in one fold each, stratified
    by gender x age; a declared competition's groups (its ``group`` column, else each image),
    stratified by the answer class. Never replaces an existing fold file unless `force`.

    Returns ``profile, fold`` (a declared competition: ``group, fold``), as written.
    """
    from .data.dataset import split_project

    return split_project(project, folds, seed, val_fold, force)


def import_source(
    project: Project,
    path: str | Path,
    name: str,
    kind: ImportKind | str | None = None,
    task: Task | str | None = None,
    columns: str | Sequence[str] | None = None,
    force: bool = False,
    oof: bool = False,
) -> list[dict[str, Any]]:
    """A teammate's CSV as the source `name` (``ens import``).

    Parameters
    ----------
    kind : ``hard`` (``ImageID,ans``), ``proba``, ``logits`` or ``task``; default: hard when
        ``ans`` is the only column, else proba. task : the file holds one task only.
    columns : the probability columns when they are not detected (``"c{}"`` or a list of 18).
    oof : the train rows are out of fold for the team's fold file (kept as ``oof``: scores then
        use every one of them); they must cover whole people.

    Returns
    -------
    The provenance of each prediction set written (eval, and ``val`` or ``oof`` for train rows); its
    ``origin["columns"]`` says which columns were read.
    """
    return _import_source(
        project, Path(path), name, None if kind is None else ImportKind(kind), None if task is None else str(task), force, columns, oof
    )


def predict(project: Project, models: str | Sequence[str], split: str = "eval", **options: Any) -> list[Any]:
    """Run zoo models with TTA on a split and save their prediction sets (``ens predict``).

    Needs torch (``pip install -e ".[predict]"``). `options`: those of
    `predictors.runner.predict` (tta, device, batch_size, workers, force, amp, …). Called in a
    script started by torchrun (or after ``torch.distributed.init_process_group``), the ranks
    share the images out and rank 0 writes (`predictors.distributed`).
    Returns one outcome per model (``name, split, status, rows, precision``).
    """
    try:
        from predictors.runner import predict as run
    except ImportError as exc:
        raise EnsError(f"predict needs torch ({exc}); install it with pip install -e \".[predict]\"") from None
    return run(project, [models] if isinstance(models, str) else list(models), split, **options)


def _recipe(project: Project, recipe: Recipe | str | Sequence[str] | None) -> Recipe | None:
    return recipe if recipe is None or isinstance(recipe, Recipe) else parse_recipe(recipe, project.competition.space)


def compose(
    project: Project,
    recipe: Recipe | str | Sequence[str] | None = None,
    steps: Pipeline | Step | str | Sequence[Step | str] | None = None,
    *,
    name: str | None = None,
    write: bool = False,
) -> Composition:
    """Compose sources into a submission (``ens compose``) by a pipeline of steps; written only when `write`.

    Parameters
    ----------
    recipe : ``"age:peter mask:polar"`` (a task left out takes the recipe's sources that
        predict it), a list of parts, or a parsed `Recipe`; None with a learned method (every
        model and import with eval and labelled predictions).
    steps : the pipeline, in order: one step that combines the sources (`Soft`, `Geo`,
        `Hard(tie=…)`, `Stack(balanced=…, all_tasks=…)`, `Select`, `Pool`, `Auto`), then steps
        that refine the composition (`Priors("em")`, `Priors("age:0.3,0.5,0.2 em",
        calibrate="ts", force=…)`, `TuneF1()`, `ByPerson(force=…)`); or a method name
        (``"soft"``, ``"stack"``, ``"auto"``: that step alone). Default: the soft vote. Every
        step is fitted on the labelled images and scored out of fold.
    write : save ``submissions/<name>.csv`` + ``.json`` and keep the source `name` (never
        overwrites; the returned composition's ``files`` are the paths).

    Returns
    -------
    `Composition`: ``submission`` (DataFrame ``ImageID,ans``, rows in ``info.csv`` order),
    ``manifest`` (dict; ``steps`` lists each step with its fitted parameters), ``validation``
    (its scores), ``recipe`` (with ``filled``), ``eval`` (the composed probabilities ``{task:
    (n_eval, k)}``, joint ``(n_eval, 18)`` or None), ``val`` (the out-of-fold composition of the
    labelled images).
    """
    composition = _compose(project, _recipe(project, recipe), steps, name)
    if write:
        written: Submission = write_composition(project, composition)
        composition = replace(composition, files=(written.csv, written.manifest))
    return composition


@dataclass(frozen=True)
class Tables:
    """`report`'s answer. scores: one row per source and per recipe x method, best first
    (``name, kind, method, f1_mask, f1_gender, f1_age, f1_18, accuracy, f1_18_low, f1_18_high,
    gain, gain_low, gain_high, gain_positive, spread``);
    priors: one row per source, task and class (``truth``, ``labelled``, ``eval_em`` shares;
        ``em_holds``: whether EM gives back the labelled mix from the labelled probabilities).
    `report` is the full `Report`, for `ensembler.evaluate.htmlreport.write_html_report` and
    `ensembler.evaluate.report.pick_final` (what ``ens report --pick 2`` prints)."""

    scores: pd.DataFrame
    priors: pd.DataFrame
    scope: str
    n_images: int
    notes: list[str] = field(default_factory=list)
    report: Report | None = field(default=None, repr=False)


def report(
    project: Project,
    sources: Sequence[str] | None = None,
    recipes: Sequence[Recipe | str] = (),
    methods: Sequence[Method | str] = (Method.SOFT,),
    per_task: bool = False,
    tie: Tie | str | None = None,
    replicates: int = 1000,
) -> Tables:
    """Validation scores of sources and recipes side by side (``ens report``), as DataFrames.

    All rows are scored on the same labelled images (every image all sources predict out of
    fold, else those in the validation fold); learned methods (stack, select, auto) out of fold.
    Each row's 18-class F1 carries a 90 % person-bootstrap interval (``f1_18_low``,
    ``f1_18_high``; `replicates` resamples of people, 0 for none), and its gain over the best
    single source a paired one (``gain_low``, ``gain_high``, ``gain_positive``: the share of
    resamples in which it is above 0). A declared competition's rows carry its metric instead
    (``auc``, ``auc_low``, ``auc_high``, …; votes only), resampled by its groups.
    """
    import pandas as pd

    from .evaluate.report import build_report

    result = build_report(project, sources, [_recipe(project, r) for r in recipes], [Method(m) for m in methods], per_task, tie, replicates)
    pair = lambda v, i: None if v is None else v[i]  # noqa: E731
    metric = result.metric  # a declared competition: its metric, intervals resampled by its groups
    scores = pd.DataFrame(
        [
            {
                "name": r.name, "kind": r.kind, "method": r.method,
                **({metric: r.value, f"{metric}_low": pair(r.interval, 0), f"{metric}_high": pair(r.interval, 1)} if metric else
                   {**r.scores.as_dict(), "f1_18_low": pair(r.interval, 0), "f1_18_high": pair(r.interval, 1)}),
                "gain": r.gain, "gain_low": pair(r.gain_interval, 0), "gain_high": pair(r.gain_interval, 1), "gain_positive": r.positive, "spread": r.spread,
            }
            for r in result.rows
        ]
    )
    priors = pd.DataFrame(
        [
            {"source": p.source, "task": str(p.task), "class": k, "truth": result.truth_priors[p.task][k], "labelled": p.labelled[k], "eval_em": p.eval[k], "em_holds": p.holds}
            for p in result.priors
            for k in range(len(p.labelled))
        ],
        columns=["source", "task", "class", "truth", "labelled", "eval_em"],
    )
    return Tables(scores, priors, result.scope, result.n_images, list(result.notes), result)


def group(project: Project, split: str = "eval", threshold: float | None = None, workers: int | None = None) -> Any:
    """The split's images as people (``ens group``): groups of at most seven from the images'
    colour layout, written to ``groups/<split>.csv``; on train, measured against the true
    persons. Needs torch (the images are decoded as `predict` decodes them). Returns
    `predictors.group.GroupResult` (``grouping``, ``agreement``, ``files``, ``warnings``)."""
    try:
        from predictors.group import group_split
    except ImportError as exc:
        raise EnsError(f"group needs torch ({exc}); install it with pip install -e \".[predict]\"") from None
    return group_split(project, split, threshold, workers)


def pick_final(result: Tables | Report, replicates: int = 1000) -> list[Any]:
    """The two final submissions to choose (``ens report --pick 2``), from `report`'s answer:
    the best row, and among the rows within the noise of it (paired person bootstrap) the one
    whose errors correlate least with it. Returns `FinalPick`s (``row``, ``why``)."""
    from .evaluate.report import pick_final as _pick_final

    return _pick_final(result.report if isinstance(result, Tables) else result, replicates)


def audit(project: Project, recipe: Recipe | str | Sequence[str] | None = None, write: bool = False, accept: float | None = None, html: str | Path | None = None) -> Any:
    """Train labels that are likely wrong (``ens audit``), from the sources' calibrated
    out-of-fold predictions (`recipe` chooses and weights them; default: every model and import
    with labelled predictions). The mask competition person by person: a person's gender and
    age from the seven photos together, the seven files' mask states as one assignment. A
    declared competition image by image (each task of a multi-label one: a missing positive
    and a false positive are both findings), and group by group for a task its groups share
    (``train: {group: …, shared: [task]}``). Returns `ensembler.evaluate.audit.LabelAudit`
    (``findings``: a DataFrame with ``profile, image, task, given, suggested, p_wrong, sources,
    …``, a declared competition's ``image, group, task, …``, most likely wrong first;
    ``scope``; ``audit.problems``, what to know before trusting the findings, a declared
    task's faint evidence among them; ``audit.rates`` and ``audit.class_rates``, the rates of
    label errors a declared competition's audit learnt per task and per given class;
    ``audit.disagree``, per task the share of labels its sources' evidence doubts). `write`:
    also ``audit/train.csv`` and ``.json``; `accept`: append the findings at least this likely
    wrong to the label-fix file; `html`: the page of flagged people's (images', groups') photos."""
    from .evaluate import audit as _audit

    result = _audit.audit(project, _recipe(project, recipe))
    if write:
        _audit.write_audit(project, result)
    if html is not None:
        _audit.write_audit_html(project, result, Path(html))
    if accept is not None:
        _audit.accept(project, result, accept)
    return result
