"""The `ens` command line: a thin layer over the library functions (this package is the only
place using typer and rich; what the commands print is built in `output`).

Every command exits 0 on success, and 1 with one line ``Error: …`` on stderr otherwise: the
`EnsGroup` below turns `EnsError` and usage errors into that line.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from .. import __version__
from ..data.project import DEFAULT_ZOO, Project, load_project
from ..data.sources import ImportKind
from ..data.store import Split
from ..errors import EnsError
from ..pipeline.calibration import Calibrator
from ..pipeline.persons import GroupSplit
from ..pipeline.steps import Decision, Method, decision_help, method_help
from ..pipeline.voting import Tie
from .output import (
    audit_table,
    compose_summary,
    eval_table,
    learnt_rate,
    priors_table,
    report_table,
    sources_table,
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


INTERRUPTED = 130  # the exit code typer gives Ctrl-C


def _fail(message: str) -> None:
    err.print(f"Error: {message}", markup=False)
    sys.exit(1)


class EnsGroup(TyperGroup):
    """Runs the app and maps every failure to ``Error: …`` + exit 1 (typer's own formatting is bypassed)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        import os

        if os.environ.get("RANK", "0") != "0" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            out.quiet = err.quiet = True  # under torchrun, rank 0 speaks for every rank (errors included: they agree on one)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except EnsError as exc:
            _fail(str(exc))
        except typer.TyperException as exc:  # usage errors: unknown option, bad value, …
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            _fail(exc.format_message().replace("\n", " ") + hint)
        except (typer.Abort, KeyboardInterrupt):
            rv = INTERRUPTED
        code = rv if isinstance(rv, int) else 0
        if code == INTERRUPTED:
            _fail("interrupted; nothing half-written was left behind")
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=EnsGroup,
    name="ens",
    help="Compose a team's predictions into competition submissions, with honest validation scores.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
zoo_app = typer.Typer(cls=EnsGroup, help="The project's models and sources.", invoke_without_command=True, rich_markup_mode=None)
app.add_typer(zoo_app, name="zoo")


class EnsCommand(TyperCommand):
    """A command whose help names each argument by its metavar alone (typer adds its Python
    type, ``PART... <list[str]>``) and ends with an example command line (the epilog)."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                argument = param.param_type_name == "argument"
                sections["Arguments" if argument else "Options"].append((param.metavar or record[0], record[1]) if argument else record)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        if self.epilog:
            with formatter.section("Example"):
                formatter.write_text("\b\n" + self.epilog)  # \b: the line is not re-wrapped


def command(short: str, example: str, **settings: Any) -> dict[str, Any]:
    """A command's settings: the line the command list shows (`short`, never cut) and the
    `example` its help ends with."""
    return {"cls": EnsCommand, "short_help": short, "epilog": example, **settings}


@dataclass(frozen=True)
class GlobalOptions:
    zoo: Path
    data: Path | None

    def project(self) -> Project:
        return load_project(self.zoo, self.data)


def _version(value: bool) -> None:
    if value:
        out.print(f"ens {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    zoo: Annotated[Path, typer.Option("--zoo", help="The project file (models and settings); need not exist yet.")] = DEFAULT_ZOO,
    data: Annotated[Optional[Path], typer.Option("--data", help="The competition's data folder (train/, eval/); overrides project.data.")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    ctx.obj = GlobalOptions(zoo, data)
    _help_without_command(ctx)


def _help_without_command(ctx: typer.Context) -> None:
    """A group called with no command prints its help (and exits 0)."""
    if ctx.invoked_subcommand is None:
        out.print(ctx.get_help(), markup=False)
        raise typer.Exit()


@zoo_app.callback()
def _zoo(ctx: typer.Context) -> None:
    _help_without_command(ctx)


def _project(ctx: typer.Context) -> Project:
    return ctx.find_root().obj.project()


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _ens_from(folder: Path) -> str:
    """How to run this `ens` from `folder`: ``ens`` where the shell finds this one, else its path
    from there (a virtual environment not activated: ``../.venv/bin/ens``)."""
    me = Path(sys.argv[0])
    found = shutil.which("ens")
    if me.name != "ens" or (found and Path(found).resolve() == me.resolve()):
        return "ens"
    return os.path.relpath(me.absolute(), Path(folder).absolute())


def _torch_side(module: str) -> Any:
    """Import `predictors.<module>`, or say how to install torch."""
    import importlib

    try:
        return importlib.import_module(f"predictors.{module}")
    except ImportError as exc:
        raise EnsError(f"this command needs torch: pip install -e \".[predict]\" ({exc})") from None


# --- split -----------------------------------------------------------------------------------


@app.command(**command("Write the team's fold file (people grouped, stratified).", "ens split --folds 5 --seed 42"))
def split(
    ctx: typer.Context,
    folds: Annotated[int, typer.Option("--folds", help="Number of folds.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the shuffle.")] = 42,
    val_fold: Annotated[int, typer.Option("--val-fold", help="The fold held out for validation.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing fold file.")] = False,
) -> None:
    """Write the team's fold file: people (all 7 images) grouped, stratified by gender x age (a
    declared competition: its groups, stratified by the answer class).

    Also names the fold file and the validation fold in model_zoo.yaml (created when absent),
    and the data folder (--data) when the file names none.
    """
    from ..data.dataset import split_project

    project = _project(ctx)
    table = split_project(project, folds, seed, val_fold, force)
    sizes = table["fold"].value_counts().sort_index()
    unit = "people" if project.competition.is_preset else "groups"
    out.print(f"wrote {_rel(project.folds)}: {len(table)} {unit} in {folds} folds ({', '.join(map(str, sizes))} {unit})")
    out.print(f"validation fold: {val_fold} (set in {_rel(project.zoo)})")


# --- zoo -------------------------------------------------------------------------------------


@zoo_app.command("list", **command("List the models and imported sources.", "ens zoo list"))
def zoo_list(ctx: typer.Context) -> None:
    """List the registered models and every source a recipe can name (models, imports, ensembles)."""
    from ..data.store import kind_of

    project = _project(ctx)
    store = project.store
    out.print(f"project file: {_rel(project.zoo)}{'' if project.zoo.is_file() else ' (not created yet)'}")
    out.print(f"data: {_rel(project.data) if project.data else '— (pass --data)'}")
    out.print(f"folds: {_rel(project.folds)}{'' if project.folds.is_file() else ' (none yet: ens split)'}, validation fold {project.val_fold}")
    out.print(project.competition.line(), markup=False)
    names = sorted(set(store.sources()) | set(project.model_names))
    rows = []
    for name in names:
        splits = store.splits(name)
        if not splits:
            rows.append((name, "model", (), "", "— (ens predict)", ""))
            continue
        meta = store.read_meta(name, splits[0])
        counts = " / ".join(str(store.read_meta(name, s).get("rows")) for s in splits)
        rows.append((name, kind_of(meta), meta.get("tasks", []), "yes" if meta.get("joint") else "no", ", ".join(map(str, splits)), counts))
    if names:
        out.print(sources_table(rows, out.width))
    else:
        out.print("no models or sources yet: `ens import FILE --name NAME` brings a teammate's CSV")


@zoo_app.command("check", **command("Check models load and predict on a few images.", "ens zoo check ana-eff ben-heads"))
def zoo_check(
    ctx: typer.Context,
    names: Annotated[Optional[list[str]], typer.Argument(help="Models to check (default: all).", show_default=False, metavar="NAME...")] = None,
) -> None:
    """Check zoo entries before any image is read: checkpoint files exist, sha256 matches when
    given, the architecture builds, the weights load, and one dummy batch gives the output width
    the layout needs. Needs torch (pip install -e ".[predict]")."""
    check_entry = _torch_side("models").check_entry
    project = _project(ctx)
    entries = [project.model(n) for n in names] if names else list(project.models)
    if not entries:
        raise EnsError(f"no models in {_rel(project.zoo)} to check")
    table = Table(title=f"zoo check: {_rel(project.zoo)}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("model", "architecture", "layout", "checkpoints", "params", "input", "result"):
        table.add_column(col, overflow="fold")
    failures = []
    for entry in entries:
        try:
            facts = check_entry(entry)
            table.add_row(entry.name, entry.architecture, entry.layout.label, str(facts["checkpoints"]), f"{facts['params']:,}", facts["input"], "ok")
        except EnsError as exc:
            failures.append(str(exc))
            table.add_row(entry.name, entry.architecture, entry.layout.label, "", "", "", "FAILED")
    out.print(table)
    for failure in failures[1:]:
        err.print(f"  {failure}", markup=False)
    if failures:
        raise EnsError(f"{len(failures)} of {len(entries)} model(s) failed the check: {failures[0]}")


@zoo_app.command("add-baseline", **command("Register a run of the public baseline.", "ens zoo add-baseline model/exp3 --name polar --owner polar"))
def zoo_add_baseline(
    ctx: typer.Context,
    exp_dir: Annotated[Path, typer.Argument(help="The run folder: model/<exp>/ with best.pth and config.json.", show_default=False, metavar="EXP_DIR")],
    name: Annotated[str, typer.Option("--name", help="Model name in the zoo and in recipes.", show_default=False, metavar="NAME")],
    code: Annotated[Optional[Path], typer.Option("--code", help="Folder with the baseline's model.py (default: the folder holding model/).", show_default=False, metavar="DIR")] = None,
    inference_resize: Annotated[Optional[tuple[int, int]], typer.Option("--inference-resize", help="The resize (height width) your inference used, to be told when it differs from training.", show_default=False, metavar="H W")] = None,
    owner: Annotated[str, typer.Option("--owner", metavar="WHO", help="Who trained it.")] = "",
) -> None:
    """Register a run of the public baseline (best.pth + config.json) in model_zoo.yaml,
    with the baseline's normalisation and the run's training resize. Creates model_zoo.yaml
    when there is none; the entry records the code folder, so later commands need no flag."""
    from ..data.baseline import add_baseline

    project = _project(ctx)
    entry, notes = add_baseline(project, exp_dir, name, code, inference_resize, owner)
    out.print(f"added {entry['name']!r} to {_rel(project.zoo)}: {entry['architecture']} from {entry['code']}, checkpoint {entry['checkpoint']}")
    for note in notes:
        out.print(f"note: {note}")


# --- predict ---------------------------------------------------------------------------------


@app.command(**command("Run models with TTA; save per-task probabilities.", "ens predict --model ana-eff --model ben-heads --split val --tta hflip"))
def predict(
    ctx: typer.Context,
    model: Annotated[list[str], typer.Option("--model", help="A zoo model to run (repeatable): all of them share one pass over the images.", show_default=False, metavar="NAME")],
    split: Annotated[Split, typer.Option("--split", help="eval: the info.csv images (a fold group averages its folds); val: the validation fold's train images; oof: every train image, by the fold model that did not see it (fold groups).")] = Split.EVAL,
    tta: Annotated[Optional[str], typer.Option("--tta", metavar="none|hflip|vflip|flip|d4", help="TTA preset for every model: none, hflip, vflip, flip, d4 (default: each entry's tta, else none). Views are merged over probabilities (softmax first) unless the entry says over: logits.", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", metavar="auto|cpu|cuda", help="auto (CUDA when present), cpu or cuda.")] = "auto",
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per batch (each TTA view adds a copy; default 32: a decode worker fills a whole batch, and larger ones left an H200's workers idle).", show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader workers decoding images (default: CPU count, at most 8).", show_default=False)] = None,
    amp: Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="Automatic mixed precision. Default: on for CUDA (float16), off for CPU (float32). --amp on CPU runs bfloat16: about 1.5x faster on CPUs with bfloat16 instructions (AVX512-BF16, AMX), slower on others; probabilities then differ from float32 by up to about 0.03 (on the demo 0-0.6 % of the decisions changed).", show_default=False)] = None,
    no_channels_last: Annotated[bool, typer.Option("--no-channels-last", help="Keep tensors in the contiguous layout (channels_last is faster for convolutions on CPU and GPU alike).")] = False,
    no_freeze: Annotated[bool, typer.Option("--no-freeze", help="On CPU in float32, run the models eagerly instead of as traced, frozen copies (batch norm folded into the convolutions; each copy is checked against the eager model and dropped when it differs).")] = False,
    backend: Annotated[str, typer.Option("--backend", metavar="auto|onnxruntime|torch", help="On CPU in float32: onnxruntime (each model exported once per checkpoint and input shape, cached in predictions-onnx/, checked against the eager model; a model it cannot run goes to torch, and the run says so), torch (the frozen copy, or eager with --no-freeze), or auto: onnxruntime when installed (pip install -e \".[onnx]\").")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Recompute even when a cached set matches.")] = False,
    devices: Annotated[Optional[str], typer.Option("--devices", help="Run on several devices at once, one process each (torch.distributed, launched through torchrun): cuda:0,cuda:1 (NCCL), or cpu,cpu (gloo). The images are sharded across the processes; the first writes each set once. The same as: torchrun --nproc-per-node N -m ensembler predict ….", show_default=False, metavar="DEV,DEV…")] = None,
) -> None:
    """Run zoo models over a split with batched TTA and save per-task probabilities
    (predictions/NAME/SPLIT.csv). A set whose checkpoint, preprocessing, TTA and images are
    unchanged is not recomputed. Needs torch (pip install -e ".[predict]")."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    if devices is not None:
        import subprocess

        launch_command = _torch_side("distributed").launch_command
        names = [d.strip() for d in devices.split(",") if d.strip()]
        options = ctx.find_root().obj
        argv = ["--zoo", str(options.zoo.absolute()), *(["--data", str(options.data.absolute())] if options.data else []), "predict"]
        argv += [a for m in model for a in ("--model", m)] + ["--split", split.value, *(["--batch-size", str(batch_size)] if batch_size is not None else [])]
        argv += ["--device", "cuda" if names and names[0].startswith("cuda") else "cpu"]
        argv += [*(["--tta", tta] if tta else []), *(["--workers", str(workers)] if workers is not None else []), *([] if amp is None else ["--amp" if amp else "--no-amp"])]
        argv += [flag for flag, on in (("--no-channels-last", no_channels_last), ("--no-freeze", no_freeze), ("--force", force)) if on] + ["--backend", backend]
        command, env = launch_command(names, argv)
        if subprocess.run(command, env=env).returncode:
            sys.exit(1)  # rank 0 printed the error line
        return
    runner = _torch_side("runner")

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]} img/s"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(f"predict {split}", total=None, rate="—")
        start = time.perf_counter()

        def progress(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, completed=done, total=total, rate=f"{rate:,.0f}")

        outcomes = runner.predict(_project(ctx), model, split, tta, device, batch_size, workers, force, amp, progress, not no_channels_last, not no_freeze, backend)
    elapsed = time.perf_counter() - start
    for o in outcomes:
        note = "unchanged, not recomputed (--force to redo)" if o.status == "cached" else "written"
        out.print(f"{o.name} {o.split}: {o.rows} images, {note} ({o.precision}{', onnxruntime' if o.backend == 'onnxruntime' else ''})")
        for line in dict.fromkeys(o.notes):
            out.print(f"note: {line}", markup=False)
    if any(o.precision == "bfloat16" for o in outcomes) and not runner.bf16_is_native():
        out.print("note: this CPU has no bfloat16 instructions, so --amp ran emulated and slower than float32; drop --amp")
    written = [o for o in outcomes if o.status == "written"]
    if written:
        waited = written[0].waited
        bound = "" if waited is None else f"; waited for decoded images {waited:.0%} of it" + (  # a short run's share is mostly the workers' start
            " (decode-bound: the models could go faster with more --workers, or on a machine with more cores)" if waited > 0.5 and elapsed > 30 else "")
        out.print(f"{elapsed:.1f} s{bound}")


# --- group -----------------------------------------------------------------------------------


@app.command(**command("Group a split's images into people.", "ens group --split eval"))
def group(
    ctx: typer.Context,
    split: Annotated[GroupSplit, typer.Option("--split", help="eval: the info.csv images (what --by-person decodes); train: the labelled images, grouped blind to the folder names and then measured against them (what --by-person is checked with).")] = GroupSplit.EVAL,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="The largest descriptor distance at which two images may join one group (default: 1.5 x the median distance to the 6th nearest neighbour). Lower: fewer, surer merges.", show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader workers decoding images (default: CPU count, at most 8).", show_default=False)] = None,
) -> None:
    """The split's images as people: groups of at most 7 (one person's photos), from the images'
    colour layout (background, clothes, face; no labels, no downloaded weights). Writes
    groups/SPLIT.csv (ImageID,group,confidence) and its JSON. On train, prints the agreement
    with the true persons. Uses the eval set's structure: check that your competition's rules
    allow such transductive methods. Needs torch (pip install -e ".[predict]")."""
    from ..api import group as run

    result = run(_project(ctx), split.value, threshold, workers)
    sizes = np.bincount(result.grouping.sizes, minlength=8)[1:8]
    out.print(f"{split}: {len(result.grouping.groups)} images in {len(result.grouping.sizes)} groups; sizes 1..7: {' '.join(map(str, sizes.tolist()))} (threshold {result.grouping.threshold:.3f})")
    if result.agreement is not None:
        out.print(f"against the true persons: {result.agreement.line()}")
    for warning in result.warnings:
        err.print(f"WARNING: {warning}", markup=False)
    out.print(f"wrote {_rel(result.files[0])}")


# --- import ----------------------------------------------------------------------------------


@app.command("import", **command("Import a teammate's CSV as a source.", "ens import ken_val.csv --name ken --kind proba --oof"))
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The CSV a teammate shared.", show_default=False, metavar="FILE")],
    name: Annotated[str, typer.Option("--name", help="Source name to use in recipes.", show_default=False, metavar="NAME")],
    kind: Annotated[Optional[ImportKind], typer.Option("--kind", help="hard (ImageID,ans), proba (probabilities: ImageID,0..17; a prefix and 0..17 such as ans0 or prob_0; or per-task mask_0..2, gender_0..1, age_0..2; an ans column beside them is ignored), logits (the same columns, softmax applied) or task (ImageID,ans with one task's label). Default: hard when ans is the only column, else proba.", show_default=False)] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="The file holds one task only (mask, gender or age; a declared competition's own tasks): needed by --kind task; with proba/logits the columns are that task's k classes (0..k-1, age_0..2, …, or a declared task's class names).", show_default=False, metavar="TASK")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", help="The probability columns when they are not detected: a template with {} for the class number ('c{}', 'score_{}_p') or the columns in class order, comma-separated.", show_default=False, metavar="TEMPLATE|A,B,…")] = None,
    oof: Annotated[bool, typer.Option("--oof", help="The train rows are out of fold for the team's fold file (a k-fold team's predictions: each image by the model that did not train on its person): scores and learned methods may then use every one of them, not only the validation fold's. The rows must cover whole people.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing source of that name.")] = False,
) -> None:
    """Import a teammate's CSV as a source. Rows are joined on ImageID: eval rows (as in
    info.csv) must cover every eval image; train rows (ImageID = path under train/images/) are
    kept as validation predictions (out-of-fold ones with --oof), labelled from the data folder.
    In a declared competition the id is its sample submission's id column (or ImageID), the
    columns may be a task's class names, hard labels may be class names, and a file in the
    submission's own probability layout is read as it is. Prints the columns it read."""
    from ..data.sources import import_source

    written = import_source(_project(ctx), file, name, kind, task, force, columns, oof)
    out.print(f"read {written[0]['origin']['columns']}", markup=False)
    for meta in written:
        out.print(f"source {name!r}: {meta['rows']} {meta['split']} rows, tasks {', '.join(meta['tasks'])}{' + joint' if meta['joint'] else ''} ({meta['kind']})")


# --- compose ---------------------------------------------------------------------------------

RECIPE_HELP = (
    "TASK:SOURCE[+SOURCE*W…] parts, e.g. --recipe age:peter mask,gender:polar; '*:' covers every "
    "task not named. Several parts may follow one --recipe."
)
METHOD_HELP = (
    method_help() + ". stack, select and auto are fitted on the sources' labelled predictions and scored by person-grouped "
    "(group-wise) cross-validation."
)
TIE_HELP = (
    "How a hard vote breaks a tie between classes with equal vote totals: mass (the tied classes' "
    "weighted probability sums, then the lower class index), lower (the lower class index, as "
    "pandas DataFrame.mode), first (the answer of the recipe's first-named source, e.g. your best "
    "submission, even when it is not among the tied classes). Vote totals are exact for any number "
    "of sources. Default: mass."
)
PRIOR_HELP = (
    "Re-weight the eval probabilities to other class priors, for a test set whose mix differs from "
    "train's: em estimates each task's eval priors by EM (Saerens et al. 2002) on probabilities calibrated on "
    "the labelled images (--calibrate), bbse from the labelled confusion matrix (Lipton et al. 2018); "
    "TASK:P,P,… gives a task's priors in class order (e.g. age:0.3,0.5,0.2). Repeatable: given tasks use the "
    "given priors, the others the estimator. An estimated correction is applied only where it raises the "
    "18-class F1 of the labelled images resampled by person to the estimated mix, in 90% of 200 resamples "
    "(--force-prior to insist). Soft, geo and learned methods."
)


@app.command(**command("Compose sources into a submission CSV.", "ens compose --recipe age:chloe-age mask:dan-mg --method soft --name v1", context_settings={"allow_interspersed_args": True}))
def compose(
    ctx: typer.Context,
    parts: Annotated[Optional[list[str]], typer.Argument(help="More recipe parts (those after the first --recipe value).", show_default=False, metavar="PART...")] = None,
    recipe: Annotated[Optional[list[str]], typer.Option("--recipe", help=RECIPE_HELP, show_default=False, metavar="PART")] = None,
    method: Annotated[Optional[Method], typer.Option("--method", help=METHOD_HELP + " Default: soft.", show_default=False)] = None,
    auto: Annotated[bool, typer.Option("--auto", help="Move from the soft vote toward the compositions (votes, per-task choices, stacks) as far as the evidence carries it: the mean, over 1,000 resamples of the labelled people, of the blend with the best cross-validated 18-class macro F1 (at most half-way toward one unless it wins beyond the noise), and say how far and why (--method auto). Without --recipe, the candidates are every model and import with eval and labelled predictions.")] = False,
    name: Annotated[Optional[str], typer.Option("--name", metavar="NAME", help="Output name: submissions/NAME.csv + NAME.json, and the source NAME. Default: sub-<date>-<time>.", show_default=False)] = None,
    per_task: Annotated[bool, typer.Option("--per-task", help="Vote each task on its marginals even when all sources carry the 18-way joint.")] = False,
    balanced: Annotated[bool, typer.Option("--balanced", help="With --method stack: weight classes inversely to their frequency (for macro F1).")] = False,
    all_task_features: Annotated[bool, typer.Option("--all-task-features", help="With --method stack: each task's meta-model also sees the sources' other tasks (age may depend on mask state).")] = False,
    prior: Annotated[Optional[list[str]], typer.Option("--prior", help=PRIOR_HELP, show_default=False, metavar="em|TASK:P,P,…")] = None,
    tune_f1: Annotated[bool, typer.Option("--tune-f1", help="Tune per-class offsets on the labelled composition to maximise the 18-class macro F1 (coordinate ascent, scored by person-grouped CV) and apply them last.")] = False,
    tie: Annotated[Optional[Tie], typer.Option("--tie", help=TIE_HELP, show_default=False)] = None,
    calibrate: Annotated[Optional[Calibrator], typer.Option("--calibrate", help="With --prior: the calibrator fitted on the labelled composition before the eval priors are estimated (EM assumes calibrated probabilities): ts (temperature), bcts (temperature and class biases), vs (vector scaling), none, or auto (the best by out-of-fold log-loss). Default: auto.", show_default=False)] = None,
    force_prior: Annotated[bool, typer.Option("--force-prior", help="Apply the prior correction even where the labelled check (the labelled images resampled to the estimated eval mix) says it does not help, or where it takes a class below a quarter of its labelled share.")] = False,
    by_person: Annotated[bool, typer.Option("--by-person", help="Decide each person once (groups/eval.csv from ens group): gender and age from the group's combined probabilities, and in a group of 7 exactly one 'incorrect' and one 'not wear'. Applied last, and only where the labelled images decoded with groups/train.csv gain beyond the noise.")] = False,
    force_by_person: Annotated[bool, typer.Option("--force-by-person", help="Decode by person even where the labelled check does not show a gain (or cannot run).")] = False,
    decide: Annotated[Optional[Decision], typer.Option("--decide", help="Decide the answer's classes for the declared metric, fitted out of fold and applied last: " + decision_help() + ".", show_default=False)] = None,
) -> None:
    """Compose sources into a submission. When every task takes the same sources and all carry
    the 18-way joint, the vote is on the joint (as scikit-learn's VotingClassifier); otherwise
    each task is voted on its own probabilities. Never overwrites; validated against info.csv."""
    from ..pipeline.composition import compose_submission
    from ..pipeline.engine import Pipeline
    from ..pipeline.recipe import parse_recipe
    from ..pipeline.steps import combining, refining

    if auto and method not in (None, Method.AUTO):
        raise EnsError(f"--auto is --method auto; drop --method {method}")
    method = Method.AUTO if auto else (method or Method.SOFT)
    texts = [*(recipe or []), *(parts or [])]
    project = _project(ctx)
    parsed = parse_recipe(texts, project.competition.space) if texts else None
    steps = [combining(method, per_task=per_task, tie=tie, balanced=balanced, all_tasks=all_task_features)]  # the flags as a pipeline, in order
    steps += refining(prior or [], calibrate, force_prior, tune_f1, by_person, force_by_person, decide)
    sub = compose_submission(project, parsed, Pipeline(tuple(steps)), name)
    out.print(f"wrote {_rel(sub.csv)} ({sum(sub.class_counts.values())} rows) and {sub.manifest.name}")
    for line in compose_summary(sub):
        out.print(line, markup=False)
    for warning in sub.warnings:
        err.print(f"WARNING: {warning}", markup=False, style="bold red")


# --- report ----------------------------------------------------------------------------------


@app.command(**command("Score sources and recipes side by side, with intervals.", "ens report --recipe '*:ana-eff+ben-heads' --method soft --method auto --html report.html", context_settings={"allow_interspersed_args": True}))
def report(
    ctx: typer.Context,
    parts: Annotated[Optional[list[str]], typer.Argument(help="More parts of the recipe (allowed with a single --recipe).", show_default=False, metavar="PART...")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="A source to score (repeatable). Default: every source with labelled predictions.", show_default=False, metavar="NAME")] = None,
    recipe: Annotated[Optional[list[str]], typer.Option("--recipe", help="A recipe to score (repeatable; quote one with several parts: --recipe 'age:B *:A').", show_default=False, metavar="RECIPE")] = None,
    method: Annotated[Optional[list[Method]], typer.Option("--method", metavar="<" + "|".join(m.value for m in Method) + ">", help="How to compose each recipe (repeatable: a row each; the methods of ens compose --method). Default: soft.", show_default=False)] = None,
    per_task: Annotated[bool, typer.Option("--per-task", help="Vote each task on its marginals.")] = False,
    tie: Annotated[Optional[Tie], typer.Option("--tie", help=TIE_HELP, show_default=False)] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write the report as one self-contained HTML page (figures embedded; opens offline): confusion matrices, per-class F1, agreement and error correlation, errors by age, calibration, provenance. Replaces FILE.", show_default=False, metavar="FILE")] = None,
    pick: Annotated[Optional[int], typer.Option("--pick", help="Propose the final submissions (the competition takes 2): the best row, and among the rows within the noise of it the one whose errors correlate least with it; says why.", show_default=False, metavar="2")] = None,
) -> None:
    """Validation scores of sources and recipes side by side, best first: per-task macro F1,
    the 18-class macro F1 as the competition computes it with its 90% person-bootstrap
    interval, accuracy, and each recipe's gain over the best single source, paired on the same
    people (~ marks a gain inside the noise). All rows are scored on the same images: every
    image that all sources predict out of fold, else the validation fold's. Also the class
    priors: the scored images' mix and each source's EM estimate of the eval mix."""
    from ..evaluate.report import build_report, pick_final
    from ..pipeline.recipe import parse_recipe

    if pick is not None and pick != 2:
        raise EnsError(f"--pick {pick}: the competition takes 2 final submissions (--pick 2)")
    recipes = list(recipe or [])
    if parts:
        if len(recipes) != 1:
            raise EnsError(f"unexpected argument(s) {' '.join(parts)}: with several recipes, quote each one (--recipe 'age:B *:A')")
        recipes = [" ".join([recipes[0], *parts])]
    methods = method or [Method.SOFT]
    project = _project(ctx)
    result = build_report(project, model, [parse_recipe(r, project.competition.space) for r in recipes], methods, per_task, tie)
    out.print(report_table(result, width=out.width))
    if result.priors:
        out.print(priors_table(result))
    for note in result.notes:
        out.print(f"note: {note}")
    for i, chosen in enumerate(pick_final(result) if pick else [], 1):
        out.print(f"pick {i}: {chosen.row.label}: {chosen.why}", markup=False)
    if html is not None:
        from ..evaluate.htmlreport import write_html_report

        out.print(f"wrote {_rel(write_html_report(result, html))}")


# --- audit -----------------------------------------------------------------------------------


@app.command(**command("Find train labels that are likely wrong; accept fixes.", "ens audit --html audit.html --accept 0.9", context_settings={"allow_interspersed_args": True}))
def audit(
    ctx: typer.Context,
    parts: Annotated[Optional[list[str]], typer.Argument(help="More parts of the recipe.", show_default=False, metavar="PART...")] = None,
    recipe: Annotated[Optional[list[str]], typer.Option("--recipe", help="The sources to audit with, and their weights, per task (TASK:SRC+SRC*W …). Default: every model and import with labelled predictions, alike.", show_default=False, metavar="RECIPE")] = None,
    accept: Annotated[Optional[float], typer.Option("--accept", help="Append the findings at least P likely wrong to the label-fix file (project.label_fixes; absent: label_fixes.csv, named in model_zoo.yaml). The team's own lines are kept and win.", show_default=False, metavar="P")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write one self-contained page with each flagged person's seven photos (a declared competition: each flagged image, or group's images) beside the given and suggested labels, to confirm by eye. Replaces FILE.", show_default=False, metavar="FILE")] = None,
    top: Annotated[int, typer.Option("--top", metavar="N", help="Findings to print (0: none).")] = 20,
) -> None:
    """Train labels that are likely wrong, from the sources' calibrated out-of-fold
    predictions. The mask competition person by person: a person's gender and age from the
    seven photos together (the age knowing the folder's years), the seven files' mask states as
    one assignment (five worn, one incorrect, one not worn). A declared competition image by
    image (each finding of a multi-label one), and group by group for a task its groups share
    (competition.train.shared). Writes audit/train.csv (profile, image, task, given, suggested,
    p_wrong, sources, …; a declared competition's image, group, task, …; most likely wrong
    first) and audit/train.json; prints the top. A declared task of two classes judged image by
    image flags no more labels than confident learning counts wrong (its p_wrong moved down to
    that count; the count in audit/train.json). With project.label_fixes set, the fixes are in
    force (an accepted fix is not found again), and every score, fit and split reads the fixed
    labels."""
    from ..evaluate.audit import FLAG, write_audit
    from ..evaluate.audit import accept as accept_findings
    from ..evaluate.audit import audit as run_audit
    from ..pipeline.recipe import parse_recipe

    if top < 0:
        raise EnsError(f"--top {top}: the number of findings to print, 0 or more")
    texts = [*(recipe or []), *(parts or [])]
    project = _project(ctx)
    result = run_audit(project, parse_recipe(texts, project.competition.space) if texts else None)
    path = write_audit(project, result)
    out.print(f"audited {result.scope}", markup=False)
    for note in result.notes + result.audit.problems:
        out.print(f"note: {note}", markup=False)
    if result.audit.rates:
        out.print("label errors learnt from the evidence: " + "; ".join(learnt_rate(task, rate, result.audit.class_rates.get(task, {})) for task, rate in result.audit.rates.items()), markup=False)
    if result.audit.confident:
        out.print("flags at most confident learning's count of wrong labels (two classes): " + "; ".join(f"{task} {count:g}" for task, count in result.audit.confident.items()), markup=False)
    flagged = result.audit.flagged()
    counts = ", ".join(f"{task} {int((flagged['task'] == task).sum())}" for task in result.tasks)
    out.print(f"wrote {_rel(path)}: {len(result.findings)} findings, {len(flagged)} at p_wrong >= {FLAG} ({counts})")
    if top and len(result.findings):
        out.print(audit_table(result.findings.head(top), out.width))
    if html is not None:
        from ..evaluate.audit import write_audit_html

        out.print(f"wrote {_rel(write_audit_html(project, result, html))}")
    if accept is not None:
        fixes, added = accept_findings(project, result, accept)
        out.print(f"{_rel(fixes)}: {added} fix{'es' if added != 1 else ''} added (findings at p_wrong >= {accept}); every score, fit and split now reads them")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise EnsError(f"--image-size {text!r}: expected WIDTHxHEIGHT, e.g. 192x256") from None
    return w, h


class DemoCompetition(str, Enum):
    """The competitions `ens demo` draws: the built-in mask one, or leaves, declared."""

    MASK = "mask"
    LEAVES = "leaves"


@app.command(**command("Run the whole flow on a synthetic competition.", "ens demo --dir my-demo --seed 1"))
def demo(
    dir: Annotated[Optional[Path], typer.Option("--dir", help="Folder to create for the demo (must be empty or absent). Default: the first of ens-demo, ens-demo-2, … that does not exist.", show_default=False)] = None,
    competition: Annotated[DemoCompetition, typer.Option("--competition", help="mask: the face-mask competition (built in). leaves: a second competition declared in model_zoo.yaml (one task, four diseases, photos grouped by plant, scored by accuracy).")] = DemoCompetition.MASK,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the data, the folds and the training.")] = 0,
    people: Annotated[Optional[int], typer.Option("--people", help="Train people (7 images each). Default: 300; with --competition leaves, train plants (3 images each), default 200.", show_default=False)] = None,
    eval_people: Annotated[int, typer.Option("--eval-people", help="Eval people (7 images each); with --competition leaves, eval plants (3 images each).")] = 200,
    image_size: Annotated[Optional[str], typer.Option("--image-size", metavar="WxH", help="Drawn image size WIDTHxHEIGHT. Default: 96x128 for mask (the real data is 384x512; the models see 48x64 and 72x96), 128x128 for leaves.", show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Training epochs per model. Default: 5; with --competition leaves, 6.", show_default=False)] = None,
) -> None:
    """The whole flow on a synthetic competition, on CPU in a few minutes: draws the data in the
    real layout (eval answers kept aside), writes the fold file, trains a small team (mask: an
    18-class model, a three-head fold group, an age-only model at a higher resolution, a
    mask-and-gender model; leaves: three 4-class models), registers them, predicts with TTA,
    composes, reports, and scores each submission on the hidden eval answers. Needs torch
    (pip install -e ".[predict]")."""
    if epochs is not None and epochs < 1:
        raise EnsError(f"--epochs {epochs}: at least 1")
    side = _torch_side("demo")

    if dir is None:
        dir = next(p for p in (Path("ens-demo"), *(Path(f"ens-demo-{i}") for i in range(2, 1000))) if not p.exists())
    start = time.perf_counter()
    log = lambda line: out.print(f"[{time.perf_counter() - start:5.0f}s] {line}", markup=False)  # noqa: E731
    if competition is DemoCompetition.LEAVES:
        result = side.run_leaves_demo(dir, seed, people or 200, 3 * eval_people, _size(image_size or "128x128"), 6 if epochs is None else epochs, log=log)
    else:
        result = side.run_demo(dir, seed, people or 300, eval_people, _size(image_size or "96x128"), 5 if epochs is None else epochs, log=log)
    out.print(report_table(result.report, result.labels, out.width))
    if result.metric is None:
        out.print(priors_table(result.report))
    out.print(eval_table(result.eval_scores, result.metric))
    done = f"done in {time.perf_counter() - start:.0f} s."
    if result.metric is None:
        out.print(f"{done} Open {_rel(result.root / 'report.html')} in a browser; next: cd {_rel(result.root)} && {_ens_from(result.root)} report   (or zoo list, or compose --recipe … --method auto)")
    else:
        recipe = next(iter(result.labels))
        out.print(f"{done} Next: cd {_rel(result.root)} && {_ens_from(result.root)} report --recipe '{recipe}' --method soft --method auto --html report.html   (model_zoo.yaml holds the declaration)")


def main() -> None:
    """Console-script entry point."""
    app()

