"""The train labels audited person by person (DESIGN.md §4, label audit and fixes).

A person's gender and age band are one label shared by seven photos, and the seven files'
mask states follow one rule (five worn, one worn incorrectly, one not worn). Image by image
(confident learning: Northcutt, Jiang and Chuang 2021, `cleanlab.filter.find_label_issues`)
neither is seen: a person is flagged image by image or not at all, and a swapped pair of files
is two unrelated doubts. Here each label is judged as it was given:

- **evidence**: every source's out-of-fold probabilities, calibrated out of fold first
  (temperature scaling, per source and task; `calibration.fit`), pooled per image as the
  weighted mean of their logs (a logarithmic opinion pool, Genest and Zidek 1986).
- **gender and age**: a person's photos together: the margin of the given class over each
  other, summed over the photos; since the photos of one person are far from independent, the
  margin is turned into a likelihood ratio by the margins the other people show (the
  two-groups model, `audit_person_task`). The probability that the label is wrong is then
  Bayes' rule with the label noise (`Noise`) as prior: for age, the prior knows the folder's
  age in years (an error is likelier 1 year from a band edge than 20 years from it, so 59
  called 60+ is told apart from 25 called 60+).
- **mask state**: the seven files' assignment as a whole: every assignment of the three states
  to the seven files (3^7), its likelihood the product of the files' calibrated evidence, its
  prior a small probability for another assignment that keeps the rule (a swapped pair) and a
  smaller one per file for one that breaks it (an `incorrect_mask` worn properly). A file's
  probability of being wrong is the posterior mass of the assignments that change it.

The findings are one row per label whose probability of being wrong reaches `REPORTED`;
`FLAG` is the default threshold (and `ens audit --accept`'s suggestion).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import logsumexp

from ..data.fixes import LabelFixes, append_fixes
from ..data.io import atomic_write, write_json
from ..data.labels import CLASS_NAMES, N_CLASSES, Task, age_band, decode
from ..data.people import profile_of
from ..data.project import Project
from ..data.store import LABELLED_SPLITS
from ..errors import EnsError
from ..pipeline.folds import Folds
from ..pipeline.recipe import Recipe, complete_recipe
from ..pipeline.scope import declared_groups, guard_leakage, labelled_scope, load_labelled
from .audit_declared import audit_images
from .label_errors import FLAG, REPORTED, Audit, Findings, Noise, calibrated_logs, findings_table, judge_units, pooled, reported

__all__ = ["FLAG", "REPORTED", "Audit", "Noise", "LabelAudit", "audit", "audit_labels", "audit_images", "accept", "write_audit", "write_audit_html", "calibrated_logs", "pooled", "judge_units"]

if TYPE_CHECKING:
    import pandas as pd

CANONICAL = np.array([0, 0, 0, 0, 0, 1, 2])  # a person's files ordered by given mask state
ASSIGNMENTS = np.array(list(itertools.product(range(3), repeat=7)))  # (2187, 7)
AGE_EDGES = (30, 60)  # the first year of bands 1 and 2


def age_prior(years: np.ndarray, given: np.ndarray, noise: Noise) -> np.ndarray:
    """P(true band | the folder's age in years) ``(p, 3)``: the given band's 1 - error, the
    error rate `noise.person` plus `noise.near_edge` decaying with the years to the nearest
    edge, shared among the other bands by their distance in years."""
    years = np.asarray(years, dtype=np.float64)
    low = np.array([-np.inf, AGE_EDGES[0], AGE_EDGES[1]])
    high = np.array([AGE_EDGES[0] - 1, AGE_EDGES[1] - 1, np.inf])
    distance = np.maximum(0.0, np.maximum(low[None, :] - years[:, None], years[:, None] - high[None, :]))  # (p, 3) years into each band
    closeness = np.exp(-distance / noise.edge_years)
    closeness[np.arange(len(years)), given] = 0.0
    rate = noise.person + noise.near_edge * closeness.max(axis=1)
    share = closeness + 1e-3 * (closeness == 0)  # a band far away keeps a sliver of the error
    share[np.arange(len(years)), given] = 0.0
    out = rate[:, None] * share / share.sum(axis=1, keepdims=True)
    out[np.arange(len(years)), given] = 1 - rate
    return out


# --- the three tasks --------------------------------------------------------------------------------


def audit_person_task(task: Task, logs: Mapping[str, np.ndarray], weights: Mapping[str, float], given: np.ndarray, persons: np.ndarray, years: np.ndarray | None, noise: Noise, rounds: int = 4) -> Findings:
    """A person label (gender, age): per person, the probability that the given class is wrong
    and the likeliest other (`judge_units`, a person's photos one unit). For age, the prior of
    an error knows the folder's age in years (`age_prior`; `years` ``(n,)``)."""
    label_prior = None
    if task is Task.AGE and years is not None:
        first = np.unique(persons, return_index=True)[1]
        label_prior = age_prior(years[first], given[first], noise)  # P(true | the folder's years)
    return judge_units(logs, weights, given, persons, N_CLASSES[task], noise, label_prior, rounds)


def _assignment_prior(noise: Noise) -> np.ndarray:
    """log P(assignment | the files' given states in `CANONICAL` order) ``(3^7,)``."""
    changed = (ASSIGNMENTS != CANONICAL).sum(axis=1)
    counts = np.stack([(ASSIGNMENTS == c).sum(axis=1) for c in range(3)], axis=1)
    keeps = (counts == [5, 1, 1]).all(axis=1)
    same = changed == 0
    out = np.where(keeps, np.log(noise.swap / 2 / max(int(keeps.sum()) - 2, 1)), changed * np.log(noise.file))
    swapped = (ASSIGNMENTS == np.array([0, 0, 0, 0, 0, 2, 1])).all(axis=1)
    out[swapped] = np.log(noise.swap / 2)
    out[same] = np.log(1 - noise.swap)
    return out


def audit_mask(logs: Mapping[str, np.ndarray], weights: Mapping[str, float], given: np.ndarray, persons: np.ndarray, noise: Noise, chunk: int = 512) -> tuple[Findings, list[int]]:
    """Mask state, file by file through the person's assignment (module doc); people whose
    files are not five worn, one incorrect, one not worn (by their names) are judged file by
    file with the per-file prior. Returns the findings and the people judged file by file."""
    pool = pooled(list(logs.values()), list(weights.values()))
    prior = np.bincount(given, minlength=3) / len(given)
    ratio = pool - np.log(np.clip(prior, 1e-3, None))  # log-likelihood ratios (n, 3)
    order = np.lexsort((given, persons))
    counts = np.bincount(persons)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sevens = np.flatnonzero(counts == 7)
    rows = order[starts[sevens][:, None] + np.arange(7)]  # (q, 7) each person's files by given state
    whole = (given[rows] == CANONICAL).all(axis=1)
    rows, loose = rows[whole], sorted(set(range(len(counts))) - set(sevens[whole].tolist()))
    log_prior = _assignment_prior(noise)
    p_wrong = np.zeros(rows.shape)
    suggested = np.zeros(rows.shape, dtype=np.int64)
    for lo in range(0, len(rows), chunk):
        part = ratio[rows[lo : lo + chunk]]  # (c, 7, 3)
        scores = log_prior + part[:, np.arange(7), ASSIGNMENTS].sum(axis=2)  # (c, 2187)
        post = np.exp(scores - logsumexp(scores, axis=1, keepdims=True))
        marginal = np.stack([post @ (ASSIGNMENTS == c) for c in range(3)], axis=2)  # (c, 7, 3)
        p_wrong[lo : lo + chunk] = 1 - marginal[:, np.arange(7), CANONICAL]
        marginal[:, np.arange(7), CANONICAL] = -1
        suggested[lo : lo + chunk] = marginal.argmax(axis=2)
    image = rows.ravel()
    p_wrong, suggested = p_wrong.ravel(), suggested.ravel()
    if loose:  # file by file: P(wrong) from the file's own evidence and the per-file prior
        extra = np.flatnonzero(np.isin(persons, loose))
        z = ratio[extra] + np.log(np.where(np.arange(3)[None, :] == given[extra, None], 1 - 2 * noise.file, noise.file))
        post = np.exp(z - logsumexp(z, axis=1, keepdims=True))
        image = np.concatenate([image, extra])
        p_wrong = np.concatenate([p_wrong, 1 - post[np.arange(len(extra)), given[extra]]])
        post[np.arange(len(extra)), given[extra]] = -1
        suggested = np.concatenate([suggested, post.argmax(axis=1)])
    agree = sum((log_p[image].argmax(axis=1) == suggested).astype(int) for log_p in logs.values())
    return Findings(persons[image], image, given[image], suggested, p_wrong, agree, np.exp(pool[image, suggested])), loose


# --- the audit -------------------------------------------------------------------------------------


def audit_labels(
    probs: Mapping[str, Mapping[Task, np.ndarray]],
    labels: Mapping[Task, np.ndarray],
    image_ids: np.ndarray,
    years: np.ndarray | None = None,
    weights: Mapping[Task, Mapping[str, float]] | None = None,
    noise: Noise = Noise(),
) -> Audit:
    """Audit the given labels of labelled images (module doc).

    probs: ``{source: {task: (n, k)}}`` out-of-fold probabilities (a source may cover some
    tasks); labels: ``{task: (n,)}`` the given classes; image_ids: ``(n,)`` paths under
    ``train/images`` (the folder is the person); years: ``(n,)`` the folder's age in years, or
    None; weights: ``{task: {source: weight}}`` (default: every source that covers the task,
    alike)."""
    import pandas as pd

    image_ids = np.asarray(image_ids, dtype=object)
    profiles = profile_of(image_ids)
    persons = np.unique(profiles, return_inverse=True)[1]  # a label belongs to a folder (two folders of one person id are two)
    folds = Folds.of(image_ids)
    first = np.unique(persons, return_index=True)[1]
    tables, people, problems = [], {}, []
    counts = np.bincount(persons)
    short = [profiles[first[p]] for p in np.flatnonzero(counts != 7)]
    if short:
        problems.append(f"{len(short)} people without seven labelled images: {', '.join(short[:5])}{' …' if len(short) > 5 else ''}")
    ids = pd.Series(profiles[first]).str.split("_").str[0].str.split("-").str[0]
    twice = ids[ids.duplicated(keep=False)]
    if len(twice):
        problems.append(f"{twice.nunique()} person id(s) used by two folders: {', '.join(sorted(profiles[first[twice.index]])[:6])}")
    for task in (Task.GENDER, Task.AGE, Task.MASK):
        chosen = dict((weights or {}).get(task) or {s: 1.0 for s, p in probs.items() if task in p})
        if not chosen or task not in labels:
            continue
        logs = dict(zip(chosen, calibrated_logs([probs[s][task] for s in chosen], labels[task], folds)))
        if task is Task.MASK:
            found, loose = audit_mask(logs, chosen, labels[task], persons, noise)
            if loose:
                problems.append(f"mask: {len(loose)} people judged file by file (not five worn, one incorrect, one not worn, or not seven files)")
        else:
            found = audit_person_task(task, logs, chosen, labels[task], persons, years, noise)
        people[task.value] = int(len(np.unique(found.people)))
        who = {"profile": profiles[first[found.people]], "image": np.where(found.image >= 0, [image_ids[i].split("/", 1)[-1] if i >= 0 else "" for i in found.image], "")}
        tables.append(findings_table(who, task.value, CLASS_NAMES[task], found, len(chosen)))
    table = reported(tables, ("profile", "image"))
    return Audit(table, people, problems)


def years_of(image_ids: np.ndarray, given_age: np.ndarray) -> np.ndarray | None:
    """The folder's age in years per image ``(n,)`` (``000001_female_Asian_45`` -> 45), or None
    when a folder name carries none; where the given band disagrees with the years (an age fixed
    by the team), the middle of the given band stands in."""
    tail = [p.rsplit("_", 1)[-1] for p in profile_of(np.asarray(image_ids, dtype=object))]
    if not all(t.isdigit() for t in tail):
        return None
    years = np.array([int(t) for t in tail])
    return np.where(age_band(years) == given_age, years, np.array([22, 45, 70])[given_age])


@dataclass(frozen=True)
class LabelAudit:
    """`audit`'s answer: the findings (`Audit`), the sources and their weights per task, the
    scope line (which labelled images, how many people or groups), the fix file in force, the
    tasks audited in order (the mask competition's gender, age, mask by default), and a declared
    competition's train labels as read for the audit (`declared.read_labelled`'s table: the
    page finds the images' files and groups there; None: read again when needed)."""

    audit: Audit
    sources: dict[str, dict[str, float]]
    scope: str
    fixes: LabelFixes | None
    notes: list[str] = field(default_factory=list)
    tasks: tuple[str, ...] = tuple(t.value for t in (Task.GENDER, Task.AGE, Task.MASK))
    train: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def findings(self) -> pd.DataFrame:
        return self.audit.findings

    def record(self) -> dict[str, Any]:
        """The JSON written beside ``audit/train.csv``."""
        flagged = self.audit.flagged()
        return {
            "scope": self.scope,
            "sources": self.sources,
            "people": self.audit.people,
            "problems": self.audit.problems,
            "notes": self.notes,
            "threshold": FLAG,
            **({"error_rates": self.audit.rates, "error_rates_by_class": self.audit.class_rates, "disagree": self.audit.disagree, "confident_count": self.audit.confident} if self.audit.rates else {}),
            "flagged": {t: int((flagged["task"] == t).sum()) for t in self.tasks},
            "label_fixes": None if self.fixes is None else self.fixes.describe(),
        }


def audit_sources(project: Project, recipe: Recipe | None = None) -> dict[str, dict[str, float]]:
    """Per task, the sources audited and their weights: the recipe's (complete: a task it does
    not name takes its named sources that predict it), or every model and import with labelled
    predictions (compositions left out: they repeat their sources)."""
    if recipe is not None:
        recipe = complete_recipe(recipe, project.coverage())
        return {t: {term.source: term.weight for term in terms} for t, terms in recipe.tasks.items()}
    store = project.store
    space = project.competition.space
    out: dict[str, dict[str, float]] = {t: {} for t in space.tasks}
    for name in store.sources():
        split = next((s for s in LABELLED_SPLITS if store.has(name, s)), None)
        if split is None:
            continue
        meta = store.read_meta(name, split)
        if (meta.get("origin") or {}).get("type") == "ensemble":
            continue
        for task in meta.get("tasks", ()):
            out[space.task(task)][name] = 1.0
    if not any(out.values()):
        raise EnsError("no source with labelled predictions to audit with (ens predict --split oof or val, or ens import a CSV with train rows)")
    return {t: w for t, w in out.items() if w}


def audit(project: Project, recipe: Recipe | None = None, noise: Noise = Noise()) -> LabelAudit:
    """Audit the project's train labels from the labelled predictions of its sources
    (`audit_sources`): out of fold on every train image when every source has them, else the
    validation fold (`scope.labelled_scope`), with the label fixes in force applied (an accepted
    fix is not found again). The mask competition person by person (module doc); a declared
    one image by image, and group by group for a task its groups share
    (`audit_declared.audit_images`)."""
    competition = project.competition
    weights = audit_sources(project, recipe)
    names = list(dict.fromkeys(s for w in weights.values() for s in w))
    store = project.store
    sets = load_labelled(store, names, store.sources())
    group_of = declared_groups(project)
    guard_leakage(project, sets, group_of)  # a label judged by a model that trained on it looks right: as a learned compose, refused
    labelled = labelled_scope(project, sets, group_of)
    ids = labelled.ids
    probs = {name: dict(pset.probs) for name, pset in labelled.sets.items()}
    notes = [n for n in labelled.notes]
    if not labelled.oof and project.folds.is_file():
        notes.append("not every source predicts every train image out of fold: only the scope above is audited (ens predict --split oof, ens import --oof for all)")
    sources = {str(t): w for t, w in weights.items()}
    counted = project.folds.is_file()  # the scope line counts the images and their people (groups) but without a fold file
    if competition.is_preset:
        truth = decode(labelled.labels)
        found = audit_labels(probs, truth, ids, years_of(ids, truth[Task.AGE]), weights, noise)
        return LabelAudit(found, sources, labelled.scope if counted else f"{labelled.scope}; audited {labelled.people} people", project.fixes, notes)
    train = competition.train
    groups = labelled.groups if train.group else None
    found = audit_images(probs, competition.space.decode(labelled.labels), ids, {t.name: t.classes for t in competition.tasks}, groups, train.shared, weights, noise)
    count = "" if counted else f"; audited {len(ids)} images" + (f" of {len(set(groups))} groups" if groups is not None else "")
    judged = f" ({', '.join(train.shared)} judged by group)" if train.shared else ""
    return LabelAudit(found, sources, f"{labelled.scope}{count}{judged}", project.fixes, notes, competition.task_names, group_of.train)


def audit_dir(project: Project) -> Path:
    return project.root / "audit"


def write_audit(project: Project, result: LabelAudit) -> Path:
    """Write ``audit/train.csv`` (the findings, best first) and ``audit/train.json`` (scope,
    sources, people audited, data problems, fix file), each atomically. Returns the CSV's path."""
    folder = audit_dir(project)
    path = folder / "train.csv"
    with atomic_write(path) as handle:
        handle.write(result.findings.to_csv(index=False).encode())
    write_json(folder / "train.json", result.record())
    return path


def accept(project: Project, result: LabelAudit, threshold: float) -> tuple[Path, int]:
    """Append the findings with ``p_wrong >= threshold`` to the project's label-fix file (named
    by ``project.label_fixes``; absent: ``label_fixes.csv`` beside ``model_zoo.yaml``, named
    there), atomically; the team's own lines are kept and win. Returns the file and the number
    of fixes added."""
    from ..data.project import update_project

    if not 0 < threshold <= 1:
        raise EnsError(f"--accept {threshold}: a probability in (0, 1], e.g. 0.9")
    path = project.label_fixes or project.root / "label_fixes.csv"
    chosen = result.findings[result.findings["p_wrong"] >= threshold]
    competition = project.competition
    if competition.is_preset:
        rows = [(r.profile, r.image, Task(r.task), CLASS_NAMES[Task(r.task)].index(r.suggested)) for r in chosen.itertuples(index=False)]
    else:  # an image's fix names the image; a shared task's names the group
        rows = [("" if r.image else r.group, r.image, r.task, competition.task(r.task).classes.index(r.suggested)) for r in chosen.itertuples(index=False)]
    added = append_fixes(path, rows, competition)
    if project.label_fixes is None and path.is_file():
        update_project(project.zoo, label_fixes=path)
    return path, added


THUMB_HEIGHT = 128  # pixels: the page of 100 flagged people stays a few MB


def _thumbnail(path: Path) -> str | None:
    """The image at `path` as a small base64 JPEG, or None when it is not there or cannot be
    decoded (the page says so under it; a review page does not stop at one bad file)."""
    import base64
    import io

    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMB_HEIGHT * 2, THUMB_HEIGHT))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=75)
    except (OSError, UnidentifiedImageError):
        return None
    return base64.b64encode(buffer.getvalue()).decode()


def write_audit_html(project: Project, result: LabelAudit, path: Path, limit: int = 100) -> Path:
    """One self-contained page (thumbnails embedded; opens offline): the `limit` flagged people
    most likely wrong, each with its findings (given struck out, suggested) and its seven
    photos, a flagged file framed in red; in a declared competition, the flagged images (and
    groups, with up to `GROUP_PHOTOS` of their images). Written atomically; replaces `path`."""
    from datetime import datetime, timezone

    from jinja2 import Environment, PackageLoader, select_autoescape

    from .. import __version__

    flagged = result.audit.flagged()
    if project.competition.is_preset:
        units, word = _people(project, flagged, limit), "people"
    else:
        units, word = _declared_units(project, flagged, limit, result.train), "images and groups" if project.competition.train.shared else "images"
    env = Environment(loader=PackageLoader("ensembler", "templates"), autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("audit.html.j2").render(
        title="ens audit: train labels likely wrong",
        scope=result.scope,
        shown=len(units),
        flagged=int(_unit_keys(flagged).nunique()),
        units=word,
        notes=result.notes + result.audit.problems,
        people=units,
        version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    path = Path(path)
    with atomic_write(path) as handle:
        handle.write(html.encode())
    return path


def _people(project: Project, flagged: pd.DataFrame, limit: int) -> list[dict[str, Any]]:
    """The page's flagged people (the mask competition): findings and seven photos each."""
    from ..data.dataset import TRAIN_IMAGES
    from ..data.labels import MASK_STEMS

    order = list(dict.fromkeys(flagged["profile"]))
    images = project.data / TRAIN_IMAGES if project.data is not None else None
    mask_names = CLASS_NAMES[Task.MASK]
    people = []
    for profile in order[:limit]:
        rows = flagged[flagged["profile"] == profile]
        findings = rows.to_dict("records")
        marked = {f["image"]: f for f in findings if f["image"]}
        folder = images / profile if images is not None else None
        files = sorted(e.name for e in folder.iterdir() if e.is_file() and not e.name.startswith(".")) if folder is not None and folder.is_dir() else sorted(marked)
        photos = []
        for name in sorted(files, key=lambda n: (MASK_STEMS.get(Path(n).stem, 9), n)):
            stem = Path(name).stem
            label = mask_names[MASK_STEMS[stem]] if stem in MASK_STEMS else ""
            if name in marked:
                label = f"{marked[name]['given']} -> {marked[name]['suggested']}?"
            photos.append({"name": name, "data": _thumbnail(folder / name) if folder is not None else None, "flagged": name in marked, "label": label})
        people.append({"profile": profile, "findings": findings, "photos": photos})
    return people


GROUP_PHOTOS = 12  # a flagged group's images shown on the page, at most


def _unit_keys(flagged: pd.DataFrame) -> pd.Series:
    """What each finding is about: its person (the mask competition), else its image, or
    ``group:<name>`` for a shared task's group."""
    if "profile" in flagged:
        return flagged["profile"]
    return flagged["image"].where(flagged["image"] != "", "group:" + flagged["group"].astype(str))


def _declared_units(project: Project, flagged: pd.DataFrame, limit: int, table: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """The page's flagged images and groups (a declared competition): an image with its
    findings (every task of it flagged), a group of a shared task with up to `GROUP_PHOTOS` of
    its images; `table`: the train labels as the audit read them (None: read here)."""
    if table is None:
        from ..data.declared import read_labelled

        table = read_labelled(project.competition, project.require_data(declared=True))
    path_of = dict(zip(table["ImageID"], table["path"]))
    members = table.groupby("group", sort=False)["ImageID"].agg(list).to_dict()
    keys = _unit_keys(flagged)
    units = []
    for key in list(dict.fromkeys(keys))[:limit]:
        findings = flagged[keys == key].to_dict("records")
        if key.startswith("group:"):
            name = key[len("group:"):]
            shown = members.get(name, [])[:GROUP_PHOTOS]
            label = f"{findings[0]['given']} -> {findings[0]['suggested']}?"
        else:
            name, shown = key, [key]
            label = "; ".join(f"{f['task']}: {f['given']} -> {f['suggested']}?" for f in findings)
        photos = [{"name": image, "data": _thumbnail(Path(path_of[image])) if image in path_of else None, "flagged": True, "label": label} for image in shown]
        units.append({"profile": name, "findings": findings, "photos": photos})
    return units
