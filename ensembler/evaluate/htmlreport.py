"""`ens report --html FILE`: the validation report as one self-contained HTML page.

The page holds the score table, the class priors, confusion matrices (per task and 18 x 18)
for the chosen composition, per-class F1 of the best single source and the chosen
composition, the sources' agreement and error correlation per task, the age-band error rate
by true age in years, a reliability plot per source, and every source's provenance. Figures
are PNGs embedded as ``data:`` URIs (`plots`), the numbers behind them are in tables beside
them, and the page is rendered from a Jinja2 template with autoescaping: it opens offline,
needs no script, and a team can mail it around.

The chosen composition is the best recipe row of the report (or the best row when it scores
no recipe). A declared competition's page (`_declared_sections`) holds its metric per row with
group intervals, per task the chosen composition's confusion matrix and per-class F1, the
agreement and error correlation, calibration and provenance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..data.io import write_bytes
from ..data.labels import CLASS_NAMES, N_CLASSES, N_JOINT, TASKS, Task, decode, split_prediction
from ..errors import EnsError
from ..scoring.metrics import reliability
from . import diagnostics, plots
from .report import Report, ReportRow
from .report import best_single as best_single_row

TEMPLATE = "report.html.j2"
JOINT_NAMES = tuple(
    f"{c} {CLASS_NAMES[Task.MASK][m][:4]}/{CLASS_NAMES[Task.GENDER][g][0].upper()}/{CLASS_NAMES[Task.AGE][a]}"
    for c, (m, g, a) in enumerate((m, g, a) for m in range(3) for g in range(2) for a in range(3))
)


@dataclass(frozen=True)
class Figure:
    """An embedded figure: its caption, alt text and base64 PNG."""

    caption: str
    png: str


@dataclass(frozen=True)
class HtmlTable:
    """A table of the page: a name tests and readers can find it by, headers, and rows of cells."""

    name: str
    headers: list[str]
    rows: list[list[Any]]
    text_columns: int = 1  # the leading columns that hold text (left-aligned); the rest are numbers


def chosen_row(report: Report) -> ReportRow:
    """The composition the page details: the best recipe row, else the best row."""
    recipes = [r for r in report.rows if r.kind == "recipe"]
    return (recipes or report.rows)[0]


def best_single(report: Report) -> ReportRow | None:
    """The best model or import with an 18-class score (`report.best_single`)."""
    index = best_single_row(report.rows)
    return None if index is None else report.rows[index]


def _f(value: float | None, digits: int = 4) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _score_table(report: Report) -> HtmlTable:
    rows = []
    pair = lambda v, fmt: "" if v is None else f"{v[0]:{fmt}} to {v[1]:{fmt}}"  # noqa: E731
    for r in report.rows:
        f1 = _f(r.scores.f1_18) + ("" if r.spread is None else f" ±{r.spread:.3f}")
        gain = "" if r.gain is None else f"{r.gain:+.4f}" + (" (noise)" if r.in_noise else "")
        positive = "" if r.positive is None else f"{r.positive:.0%}"
        rows.append([r.name, r.described, *(_f(r.scores.f1.get(t)) for t in TASKS), f1, pair(r.interval, ".4f"), _f(r.scores.accuracy), gain, pair(r.gain_interval, "+.4f"), positive])
    header = ["source / recipe", "kind", *(str(t) for t in TASKS), "F1 (18)", "90% interval", "accuracy", "gain", "gain 90% interval", "P(gain > 0)"]
    return HtmlTable("scores", header, rows, 2)


def _priors_table(report: Report) -> HtmlTable:
    fmt = lambda p: " ".join(f"{v:.3f}" for v in p)  # noqa: E731
    rows = [["truth (scored images)", str(t), fmt(report.truth_priors[t]), ""] for t in TASKS if t in report.truth_priors]
    rows += [[p.source, str(p.task), fmt(p.labelled), fmt(p.eval) + ("" if p.holds else " (EM fails on labelled: not to be trusted)")] for p in report.priors]
    return HtmlTable("priors", ["source", "task", "labelled images", "eval (EM estimate)"], rows, 2)


def _matrix_table(name: str, matrix: np.ndarray, labels: tuple[str, ...]) -> HtmlTable:
    return HtmlTable(name, ["true \\ predicted", *labels], [[labels[i], *row.tolist()] for i, row in enumerate(matrix)])


def _confusion(report: Report, truth: dict[Task, np.ndarray], chosen: ReportRow) -> tuple[list[Figure], list[HtmlTable]]:
    predicted, joint = split_prediction(chosen.prediction)
    matrices = {str(t): diagnostics.confusion(truth[t], predicted[t], N_CLASSES[t]) for t in TASKS if t in predicted}
    figures = [Figure(f"per-task confusion of {chosen.label} (rows: true class, columns: predicted)", plots.confusion_panels(matrices, {str(t): CLASS_NAMES[t] for t in TASKS}, chosen.label))]
    tables = [_matrix_table(f"confusion-{t}", m, CLASS_NAMES[Task(t)]) for t, m in matrices.items()]
    if joint is not None:
        matrix = diagnostics.confusion(report.labels, joint, N_JOINT)
        figures.append(Figure(f"18 x 18 confusion of {chosen.label}: class = 6 mask + 3 gender + age", plots.confusion_18(matrix, JOINT_NAMES, chosen.label)))
        tables.append(_matrix_table("confusion-18", matrix, JOINT_NAMES))
    return figures, tables


def _per_class(report: Report, chosen: ReportRow, single: ReportRow | None) -> tuple[list[Figure], list[HtmlTable], list[str]]:
    rows = {r.label: r for r in (single, chosen) if r is not None}
    scores = {}
    for label, row in rows.items():
        joint = split_prediction(row.prediction)[1]
        if joint is not None:
            scores[label] = diagnostics.per_class_f1(diagnostics.confusion(report.labels, joint, N_JOINT))
    if not scores:
        return [], [], ["no row predicts all three tasks: no 18-class F1 to show"]
    figure = Figure("F1 of each of the 18 classes: the best single source beside the chosen composition", plots.per_class_bars(scores, JOINT_NAMES, "per-class F1"))
    table = HtmlTable("per-class-f1", ["class", *scores], [[JOINT_NAMES[c], *(_f(v[c]) for v in scores.values())] for c in range(N_JOINT)])
    return [figure], [table], []


def _pairs(report: Report, truth: dict[Task, np.ndarray], tasks: tuple = TASKS) -> tuple[list[Figure], list[HtmlTable], list[str]]:
    agree, corr, tables = {}, {}, []
    for task in tasks:
        preds = {n: s.probs[task].argmax(axis=1) for n, s in report.sets.items() if task in s.tasks}
        if len(preds) < 2:
            continue
        names = list(preds)
        agree[str(task)] = (diagnostics.agreement(list(preds.values())), names)
        corr[str(task)] = (diagnostics.error_correlation([p != truth[task] for p in preds.values()]), names)
        for kind, matrix in (("agreement", agree[str(task)][0]), ("error-correlation", corr[str(task)][0])):
            tables.append(HtmlTable(f"{kind}-{task}", [str(task), *names], [[n, *(_f(v, 3) for v in matrix[i])] for i, n in enumerate(names)]))
    if not agree:
        return [], [], ["fewer than two sources per task: nothing to compare"]
    return [
        Figure("share of images on which two sources predict the same class, per task", plots.pair_panels(agree, "agreement", diverging=False)),
        Figure("correlation of the sources' errors, per task: low or negative pairs are worth combining", plots.pair_panels(corr, "error correlation", diverging=True)),
    ], tables, []


def _age(report: Report, truth: dict[Task, np.ndarray], chosen: ReportRow) -> tuple[list[Figure], list[HtmlTable], list[str]]:
    years = diagnostics.age_years(next(iter(report.sets.values())).image_ids)
    if not (years >= 0).any():
        return [], [], ["no image carries its age in years (train folder names do): nothing to plot"]
    predictions = {n: s.probs[Task.AGE].argmax(axis=1) for n, s in report.sets.items() if Task.AGE in s.tasks}
    chosen_tasks = split_prediction(chosen.prediction)[0]
    if Task.AGE in chosen_tasks and chosen.label not in predictions:
        predictions[chosen.label] = chosen_tasks[Task.AGE]
    if not predictions:
        return [], [], ["no source predicts age"]
    rates = {}
    for name, pred in predictions.items():  # every curve is over the same images, so the same ages and counts
        ages, rates[name], counts = diagnostics.error_by_age(years, pred != truth[Task.AGE])
    rows = [[int(a), int(c), *(_f(r[i], 3) for r in rates.values())] for i, (a, c) in enumerate(zip(ages, counts))]
    table = HtmlTable("error-by-age", ["age", "images", *rates], rows)
    curves = {name: (ages, r) for name, r in rates.items()}
    figure = Figure("age-band error rate by true age in years; the dashed lines are the 30 and 60 boundaries", plots.error_by_age(curves, "age errors by age"))
    return [figure], [table], []


def _calibration(report: Report, truth: dict[Task, np.ndarray], tasks: tuple = TASKS) -> tuple[list[Figure], list[HtmlTable]]:
    """Reliability curves per source, and each source's ECE and log-loss per task before and
    after temperature scaling fitted out of fold (person-grouped folds, a declared competition's
    by group; `calibration.choose`)."""
    from ..pipeline.calibration import Calibrator, choose
    from ..pipeline.folds import Folds

    folds = Folds.of(next(iter(report.sets.values())).image_ids, report.groups)
    panels, rows = {}, []
    for name, pset in report.sets.items():
        curves, ece, loss, temperature = {}, {}, {}, {}
        for task in pset.tasks:
            rel = reliability(pset.probs[task], truth[task])
            curves[str(task)] = (rel.confidence, rel.accuracy)
            choice = choose(pset.probs[task], truth[task], folds, Calibrator.TS)
            (nll_before, ece_before), (nll_after, ece_after) = choice.scores["none"], choice.scores["ts"]
            ece[task], loss[task] = f"{ece_before:.3f} → {ece_after:.3f}", f"{nll_before:.3f} → {nll_after:.3f}"
            temperature[task] = f"{choice.calibration.temperature:.2f}"
        panels[name] = curves
        rows.append([name, *(ece.get(t, "") for t in tasks), *(loss.get(t, "") for t in tasks), " / ".join(temperature.get(t, "-") for t in tasks)])
    figure = Figure("reliability per source: accuracy against the top-class probability, 10 bins; the dotted diagonal is perfect calibration", plots.reliability_grid(panels, "reliability"))
    header = ["source", *(f"ECE {t}" for t in tasks), *(f"log-loss {t}" for t in tasks), "T (m / g / a)" if tasks == TASKS else "T (" + " / ".join(tasks) + ")"]
    return [figure], [HtmlTable("calibration", header, rows)]


def _provenance(report: Report) -> HtmlTable:
    rows = []
    for name, pset in report.sets.items():
        meta, origin = pset.meta, pset.meta.get("origin") or {}
        key = origin.get("cache_key") or {}
        checkpoints = ", ".join(f"{k}: {str(v)[:12]}" if k != "None" else str(v)[:12] for k, v in (key.get("checkpoints") or {}).items())
        if origin.get("type") == "import":
            what = f"{Path(str(origin.get('file', ''))).name} ({origin.get('format', '')}), sha256 {str(origin.get('sha256', ''))[:12]}"
        elif origin.get("type") == "ensemble":
            what = f"{origin.get('method', '')} of {origin.get('recipe', '')}; prior {origin.get('prior', 'none')}"
        else:
            run = " ".join(str(origin[k]) for k in ("device", "precision") if origin.get(k))
            what = f"{key.get('architecture', '')} {key.get('layout', '')}".strip() + (f"; {run}" if run else "")
        rows.append([name, str(meta.get("kind", "")), str(origin.get("type", "")), origin.get("owner", ""), what, checkpoints, str(origin.get("tta", "")), str(meta.get("created", "")), str(meta.get("tool_version", "")), str(meta.get("csv_sha256", ""))[:12]])
    headers = ["source", "kind", "origin", "owner", "what", "checkpoint sha256", "TTA", "created", "tool", "set sha256"]
    return HtmlTable("provenance", headers, rows, len(headers))


@dataclass(frozen=True)
class Section:
    """One part of the page: an id for links, a heading, a lead, figures, tables and notes."""

    id: str
    title: str
    lead: str
    figures: list[Figure]
    tables: list[HtmlTable]
    notes: list[str]


MAX_DRAWN_CLASSES = 40  # a confusion matrix or a bar per class is drawn up to this many classes; past it, tables only


def _declared_sections(report: Report) -> list[Section]:
    """A declared competition's page: its metric per row with group intervals, the chosen
    composition's confusion matrix and per-class F1 per task (drawn up to `MAX_DRAWN_CLASSES`
    classes), the sources' agreement and error correlation, calibration, provenance."""
    space = next(iter(report.sets.values())).space
    truth = space.decode(report.labels)
    chosen = chosen_row(report)
    single = next((r for r in report.rows if r.name == report.reference and r.kind not in ("recipe", "ensemble")), None)
    pair = lambda v, fmt: "" if v is None else f"{v[0]:{fmt}} to {v[1]:{fmt}}"  # noqa: E731
    rows = [[r.name, r.described, _f(r.value) + ("" if r.spread is None else f" ±{r.spread:.3f}"), pair(r.interval, ".4f"), "" if r.gain is None else f"{r.gain:+.4f}" + (" (noise)" if r.in_noise else ""), pair(r.gain_interval, "+.4f"), "" if r.positive is None else f"{r.positive:.0%}"] for r in report.rows]
    scores = HtmlTable("scores", ["source / recipe", "kind", report.metric, "90% interval", "gain", "gain 90% interval", "P(gain > 0)"], rows, 2)
    figures, tables, notes = [], [], []
    for task in space.tasks:
        k, names = space.n_classes[task], space.classes[task]
        per_class = {}
        for row in (single, chosen):
            if row is not None and row.prediction is not None and task in row.prediction:
                matrix = diagnostics.confusion(truth[task], row.prediction[task], k)
                per_class[row.label] = diagnostics.per_class_f1(matrix)
                if row is chosen:
                    tables.append(_matrix_table(f"confusion-{task}", matrix, names) if k <= MAX_DRAWN_CLASSES else HtmlTable(f"confusion-{task}", ["true class", "images", "predicted right"], [[names[c], int(matrix[c].sum()), int(matrix[c, c])] for c in range(k)]))
                    if k <= MAX_DRAWN_CLASSES:
                        figures.append(Figure(f"{task} confusion of {chosen.label} (rows: true class, columns: predicted)", plots.confusion_panels({str(task): matrix}, {str(task): names}, chosen.label)))
        if per_class:
            tables.append(HtmlTable(f"per-class-f1-{task}", ["class", *per_class], [[names[c], *(_f(v[c]) for v in per_class.values())] for c in range(k)]))
            if k <= MAX_DRAWN_CLASSES:
                figures.append(Figure(f"F1 of each {task} class: the best single source beside the chosen composition", plots.per_class_bars(per_class, names, f"per-class F1 ({task})")))
            else:
                notes.append(f"{task} has {k} classes: its confusion and per-class F1 are tables only (drawn up to {MAX_DRAWN_CLASSES})")
    unit = f"{report.people} groups" if report.people else "the images"
    return [
        Section("scores", "Scores", f"{report.metric}, the competition's metric, of every source and recipe on the same labelled images, and the gain over the best single source (above 0 better). CV rows (stack, select, auto) are scored out of fold, folds by group, ± their spread across folds. Intervals are 90 % bootstrap intervals resampling {unit} (a group's images together); the gain's is paired, and P(gain > 0) is the share of resamples in which it is positive. A gain marked (noise) has an interval that holds 0.", [], [scores], report.notes),
        Section("confusion", "Confusion and per-class F1", f"The chosen composition: {chosen.label}; the best single source: {single.label if single else 'none'}.", figures, tables, notes),
        Section("agreement", "Agreement and error correlation", "Which sources disagree, and whether their errors coincide: models worth combining err on different images.", *_pairs(report, truth, space.tasks)),
        Section("calibration", "Calibration", "Soft voting averages probabilities, which assumes they are comparable: an over-confident source outvotes the rest. ECE and log-loss per task, before → after temperature scaling (Guo et al. 2017) fitted on the other groups' images (T > 1: the source was over-confident).", *_calibration(report, truth, space.tasks), []),
        Section("provenance", "Provenance", "Where every source's predictions came from.", [], [_provenance(report)], []),
    ]


def build_sections(report: Report) -> list[Section]:
    """Everything on the page, in order (a declared competition's: `_declared_sections`)."""
    if report.labels is None or not report.sets:
        raise EnsError("the report carries no scored predictions to draw (build it with ensembler.evaluate.report.build_report)")
    if report.metric is not None:
        return _declared_sections(report)
    truth = decode(report.labels)
    chosen, single = chosen_row(report), best_single(report)
    confusion_figures, confusion_tables = _confusion(report, truth, chosen)
    per_class = _per_class(report, chosen, single)
    pairs = _pairs(report, truth)
    age = _age(report, truth, chosen)
    calibration = _calibration(report, truth)
    return [
        Section("scores", "Scores", "Macro F1 per task and over the 18 classes (the competition's score), accuracy, and the gain over the best single source. CV rows are scored out of fold by person-grouped cross-validation, ± their spread across folds. Intervals are 90 % person-bootstrap intervals (people resampled, never images: a person's seven photos are not independent); the gain's is paired (both rows on the same resampled people), and P(gain > 0) is the share of resamples in which it is positive. A gain marked (noise) has an interval that holds 0: it is not shown to be real.", [], [_score_table(report)], report.notes),
        Section("priors", "Class priors", "The scored images' true class mix per task, each source's mean probabilities there, and its EM estimate of the eval mix (Saerens et al. 2002): a shift suggests compose --prior em.", [], [_priors_table(report)], []),
        Section("confusion", "Confusion matrices", f"The chosen composition: {chosen.label}.", confusion_figures, confusion_tables, []),
        Section("per-class", "Per-class F1", f"Best single source: {single.label if single else 'none'}; chosen composition: {chosen.label}.", *per_class),
        Section("agreement", "Agreement and error correlation", "Which sources disagree, and whether their errors coincide: models worth combining err on different images.", *pairs),
        Section("age", "Errors by age", "Where teams lose their points: the age band is wrong most often near the 30 and 60 boundaries.", *age),
        Section("calibration", "Calibration", "Soft voting averages probabilities, which assumes they are comparable: an over-confident source outvotes the rest. Expected calibration error (ECE, 15 bins) and log-loss per task, before → after temperature scaling (Guo et al. 2017) fitted on the other people's images (T > 1: the source was over-confident); compose --prior calibrates the composition itself the same way (its manifest records the calibrator and its out-of-fold log-loss and ECE).", *calibration, []),
        Section("provenance", "Provenance", "Where every source's predictions came from.", [], [_provenance(report)], []),
    ]


def render_html(report: Report, title: str = "ens validation report") -> str:
    """The page as a string."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("ensembler", "templates"), autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return env.get_template(TEMPLATE).render(title=title, scope=report.scope, n_images=report.n_images, sections=build_sections(report), created=created, version=__version__)


def write_html_report(report: Report, path: Path, title: str = "ens validation report") -> Path:
    """Write the page to `path` (replaced atomically when it exists)."""
    path = Path(path)
    if path.is_dir():
        raise EnsError(f"--html {path}: is a folder; give a file name such as report.html")
    write_bytes(path, render_html(report, title).encode("utf-8"), overwrite=True)
    return path
