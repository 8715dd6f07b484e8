"""What the commands print: rich tables and summary lines built from the library's results
(part of the command line, the only place that uses rich)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.table import Table

from ..data.labels import TASKS

if TYPE_CHECKING:  # the commands import these lazily; `ens --help` stays light
    import pandas as pd

    from ..evaluate.report import Report
    from ..pipeline.composition import Submission
    from ..scoring.metrics import Scores


NARROW = 100  # below this many columns, tables abbreviate (3 decimals, tasks as m,g,a)


def _f(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def task_letters(tasks: Sequence[str]) -> str:
    """``["mask", "gender", "age"] -> "m,g,a"`` (each task's first letter; they differ)."""
    return ",".join(str(t)[0] for t in tasks)


TASK_LEGEND = "tasks: m mask, g gender, a age"


def learnt_rate(task: str, rate: float, by_class: Mapping[str, float], shown: int = 6) -> str:
    """``"finding0 1.5% (no 1.7%, yes 0.9%)"``: a task's learnt rate of label errors, then each
    given class's (`Audit.class_rates`); past `shown` classes, the class whose labels are wrong
    most often only."""
    if not by_class:
        return f"{task} {rate:.1%}"
    if len(by_class) > shown:
        name = max(by_class, key=by_class.__getitem__)
        return f"{task} {rate:.1%} (most often {name} {by_class[name]:.1%})"
    return f"{task} {rate:.1%} (" + ", ".join(f"{name} {r:.1%}" for name, r in by_class.items()) + ")"


def compose_summary(sub: Submission) -> list[str]:
    """The lines `ens compose` prints after writing `sub`: the tasks the recipe did not name, how
    it composed and what each step says of itself (`Submission.lines`: the steps' own words),
    and the validation score."""
    val = sub.validation or {}
    head, *steps = sub.lines or [""]
    lines = [*(sub.recipe.filled.values() if sub.recipe else ()), f"recipe {sub.recipe} · {head}", *steps]
    metric = val.get("metric")  # a declared competition's; None: the mask competition's 18-class macro F1
    if metric:
        sources = ", ".join(f"{n} {v[metric]:.4f}" for n, v in val["sources"].items())
        groups = "" if " groups" in val["scope"] else f", {val['groups']} groups"
        spread = f" (±{val['cv'][f'{metric}_fold_std']:.3f} across folds)" if "cv" in val else ""
        lines.append(f"validation ({val['scope']}{groups}): {metric} {val['recipe'][metric]:.4f}{spread}; the sources alone: {sources}")
    elif "recipe" in val:
        s = val["recipe"]
        spread = f" (±{val['cv']['f1_18_fold_std']:.3f} across folds)" if "cv" in val else ""
        lines.append(
            f"validation ({val['scope']}): 18-class F1 {_f(s['f1_18'])}{spread}, accuracy {_f(s['accuracy'])}, "
            + ", ".join(f"{t} F1 {_f(s[f'f1_{t}'])}" for t in TASKS)
        )
        evidence = val.get("evidence")
        if evidence:
            low, high = evidence["f1_18_interval"]
            line = f"how sure: 18-class F1 90% interval {low:.4f} to {high:.4f} ({evidence['replicates']} resamples of {evidence['people']} people)"
            gain = evidence.get("gain")
            if gain:
                glow, ghigh = gain["interval"]
                noise = "; inside the noise" if glow <= 0 <= ghigh else ""
                line += f"; gain over {gain['over']} {gain['f1_18']:+.4f} ({glow:+.4f} to {ghigh:+.4f}, positive in {gain['positive']:.0%} of them{noise})"
            lines.append(line)
    elif "skipped" in val:
        lines.append(f"validation: not scored ({val['skipped']})")
    return lines


def report_table(result: Report, labels: dict[str, str] | None = None, width: int = NARROW) -> Table:
    """The report as a table; a recipe too long for its column is shown as R1, R2… with a legend.
    Scores carry 4 decimals, 3 in a terminal narrower than `NARROW` columns (fits 80)."""
    digits = 4 if width >= NARROW else 3
    labels = dict(labels or {})
    legend = []
    for row in result.rows:
        if row.kind == "recipe" and row.name not in labels and len(row.name) > 20:
            labels[row.name] = f"R{len(legend) + 1}"
            legend.append(f"{labels[row.name]} = {row.name}")
    if result.metric is not None:
        return _metric_table(result, digits, labels, legend)
    caption = (
        "macro F1 per task and over the 18 classes (the competition's score); gain: 18-class F1 over the best single source; "
        "CV rows (stack, select, auto) are scored out of fold by person-grouped cross-validation, ± their spread across folds"
    )
    if result.replicates:
        caption += (
            f"; 90% CI: person-bootstrap interval of the 18-class F1 ({result.replicates} resamples of {result.people} people); "
            "P(gain>0) (P>0): share of resamples in which the gain is positive, paired on the same people; ~ marks a gain inside the noise"
            + ("" if digits == 4 else "; accuracy and the CV rows' fold spread are left out at this width")
        )
    table = Table(
        title=f"validation: {result.scope}",
        caption="\n".join([*legend, caption]),
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=digits == 4,
        collapse_padding=digits == 3,
    )
    table.add_column("source / recipe", overflow="fold", min_width=14)
    table.add_column("kind", no_wrap=True)
    evidence = ("90% CI", "P(gain>0)" if digits == 4 else "P>0") if result.replicates else ()
    accuracy = digits == 4 or not evidence  # a narrow terminal drops accuracy for the intervals
    for col in (*(str(t) for t in TASKS), "F1 (18)", *evidence[:1], *(["acc"] if accuracy else []), "gain", *evidence[1:]):
        table.add_column(col, justify="right", no_wrap=True)
    short = lambda v: f"{v:.3f}".replace("0.", ".", 1) if digits == 3 else f"{v:.3f}"  # noqa: E731
    for row in result.rows:
        gain = "" if row.gain is None else f"{'~' if row.in_noise else ''}{row.gain:+.{digits}f}".replace("0.", "." if digits == 3 else "0.", 1)
        f1 = _f(row.scores.f1_18, digits) + ("" if row.spread is None or not accuracy else f" ±{short(row.spread)}")
        scores = (_f(row.scores.f1.get(t), digits) for t in TASKS)
        interval = "" if row.interval is None else f"{short(row.interval[0])}-{short(row.interval[1])}"
        sure = "" if row.positive is None else f"{row.positive:.0%}"
        cells = [*scores, f1, *([interval] if evidence else []), *([_f(row.scores.accuracy, digits)] if accuracy else []), gain, *([sure] if evidence else [])]
        table.add_row(labels.get(row.name, row.name), row.described, *cells)
    return table


def _metric_table(result: Report, digits: int, labels: Mapping[str, str], legend: Sequence[str]) -> Table:
    """A declared competition's report: its metric per row, the group-bootstrap interval, the
    gain over the best single source (signed so that above 0 is better) and P(gain>0); a recipe
    shown by its label (`labels`), explained in the `legend`."""
    caption = f"{result.metric}: the competition's metric (CV rows: stack, select, auto out of fold by group, ± their spread across folds); gain: over the best single source, above 0 better"
    if result.replicates:
        caption += f"; 90% CI: group-bootstrap interval ({result.replicates} resamples of {result.people} groups); P(gain>0): paired on the same groups; ~ marks a gain inside the noise"
    table = Table(title=f"validation: {result.scope}", caption="\n".join([*legend, caption]), title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("source / recipe", overflow="fold", min_width=14)
    table.add_column("kind", no_wrap=True)
    for col in (result.metric, *(["90% CI"] if result.replicates else []), "gain", *(["P(gain>0)"] if result.replicates else [])):
        table.add_column(col, justify="right", no_wrap=True)
    for row in result.rows:
        gain = "" if row.gain is None else f"{'~' if row.in_noise else ''}{row.gain:+.{digits}f}"
        interval = [] if not result.replicates else [f"{row.interval[0]:.{digits}f}-{row.interval[1]:.{digits}f}"]
        sure = [] if not result.replicates else ["" if row.positive is None else f"{row.positive:.0%}"]
        spread = "" if row.spread is None else f" ±{row.spread:.{min(digits, 3)}f}"
        table.add_row(labels.get(row.name, row.name), row.described, _f(row.value, digits) + spread, *interval, gain, *sure)
    return table


def priors_table(result: Report) -> Table:
    """Per source and task: the class mix of the scored labelled images, the source's mean
    probabilities there, and its EM estimate of eval's mix."""
    table = Table(
        title="class priors (share of each class, in class order)",
        caption="truth: the labels of the scored images; labelled: the source's mean probabilities on them; "
        "eval (EM): the eval mix estimated from its eval probabilities, calibrated on the labelled images (Saerens et al. 2002). "
        "A shift suggests compose --prior em, which applies a correction only where the labelled check says it helps; "
        "EM check: 'fails' where EM does not give back the labelled images' own mix from their calibrated probabilities, so its eval estimate is not to be trusted.",
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in ("source", "task", "truth", "labelled", "eval (EM)", "EM check"):
        table.add_column(col, no_wrap=True)
    fmt = lambda p: " ".join(f"{v:.2f}" for v in p)  # noqa: E731
    for row in result.priors:
        table.add_row(row.source, str(row.task), fmt(result.truth_priors[row.task]), fmt(row.labelled), fmt(row.eval), "ok" if row.holds else "fails")
    return table


def eval_table(scores: Mapping[str, Scores | float], metric: str | None = None) -> Table:
    """The demo's hidden-answer scores, best first (a declared competition's: its `metric`)."""
    if metric is not None:
        table = Table(title=f"hidden eval answers (never read by ens): {metric}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("model / submission")
        table.add_column(metric, justify="right")
        for name, value in sorted(scores.items(), key=lambda kv: -kv[1] if metric != "log_loss" else kv[1]):
            table.add_row(name, _f(value))
        return table
    table = Table(title="hidden eval answers (never read by ens): macro F1", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("model / submission")
    for col in (*(str(t) for t in TASKS), "F1 (18)"):
        table.add_column(col, justify="right")
    ranked = sorted(scores.items(), key=lambda kv: -(kv[1].f1_18 if kv[1].f1_18 is not None else -1))
    for name, s in ranked:
        table.add_row(name, *(_f(s.f1.get(t)) for t in TASKS), _f(s.f1_18))
    return table


def sources_table(rows: Sequence[tuple[str, str, Sequence[str], str, str, str]], width: int = NARROW) -> Table:
    """`ens zoo list`: (name, kind, tasks, joint, splits, rows) per source; in a terminal narrower
    than `NARROW` the tasks are written m,g,a with a legend, and long names wrap, never cut."""
    narrow = width < NARROW
    table = Table(title="sources", title_justify="left", caption=TASK_LEGEND if narrow else None, caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", overflow="fold")
    for col in ("kind", "tasks", "joint", "splits", "rows"):
        table.add_column(col, no_wrap=col != "splits", overflow="fold")
    for name, kind, tasks, joint, splits, count in rows:
        table.add_row(name, kind, task_letters(tasks) if narrow else ",".join(tasks), joint, splits, count)
    return table


def audit_table(findings: pd.DataFrame, width: int = NARROW) -> Table:
    """`ens audit`'s top findings: who, which file, given -> suggested, how likely wrong, how
    many sources point the same way; long folder names wrap, never cut."""
    table = Table(title="likely wrong labels (p_wrong: the probability that the given label is wrong)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    who = ("profile", "image") if "profile" in findings else ("image", "group")  # a declared competition: the image, and its group
    for col in (*who, "task", "given", "suggested", "p_wrong", "sources"):
        table.add_column(col, justify="right" if col in ("p_wrong", "sources") else "left", overflow="fold", no_wrap=col == "profile")
    for r in findings.itertuples(index=False):
        table.add_row(*(getattr(r, col) or "-" for col in who), r.task, r.given, r.suggested, f"{r.p_wrong:.3f}", f"{r.sources}/{r.of_sources}")
    return table
